//! Classification metrics: top-1 and top-5 accuracy and the confusion matrix of the top-1
//! predictions.
//!
//! A model may know more classes than a dataset holds (an ImageNet model on a few of its
//! classes): a prediction of a class beyond the dataset's is wrong, counted, and left out of
//! the confusion matrix.

use crate::Result;
use crate::confusion::ConfusionMatrix;

/// Top-k accuracy and confusion matrix, filled one prediction at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassificationEval {
    confusion: ConfusionMatrix,
    count: u64,
    top1: u64,
    top5: u64,
    outside: u64,
}

impl ClassificationEval {
    /// An empty evaluation over `classes` classes.
    pub fn new(classes: usize) -> Self {
        Self {
            confusion: ConfusionMatrix::new(classes),
            count: 0,
            top1: 0,
            top5: 0,
            outside: 0,
        }
    }

    /// Counts one image of class `truth` (one of the classes) whose predicted classes, best
    /// first, are `ranked` (at least one; the first five count for top-5).
    pub fn add(&mut self, truth: usize, ranked: &[usize]) -> Result<()> {
        let Some(&best) = ranked.first() else {
            return Err(crate::EvalError::EmptyPrediction);
        };
        let classes = self.confusion.classes();
        if truth >= classes {
            return Err(crate::EvalError::ClassOutOfRange {
                value: truth,
                classes,
            });
        }
        if best < classes {
            self.confusion.add(truth, best)?;
        } else {
            self.outside += 1;
        }
        self.count += 1;
        self.top1 += u64::from(best == truth);
        self.top5 += u64::from(ranked.iter().take(5).any(|&c| c == truth));
        Ok(())
    }

    /// The images counted.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The images whose best prediction is a class beyond the dataset's (left out of the
    /// confusion matrix).
    pub fn outside(&self) -> u64 {
        self.outside
    }

    /// The fraction whose best prediction is right (0 when empty).
    pub fn top1(&self) -> f64 {
        self.fraction(self.top1)
    }

    /// The fraction whose class is among the five best predictions (0 when empty).
    pub fn top5(&self) -> f64 {
        self.fraction(self.top5)
    }

    fn fraction(&self, n: u64) -> f64 {
        match self.count() {
            0 => 0.0,
            total => n as f64 / total as f64,
        }
    }

    /// The confusion matrix of the best predictions (those of the dataset's classes).
    pub fn confusion(&self) -> &ConfusionMatrix {
        &self.confusion
    }
}
