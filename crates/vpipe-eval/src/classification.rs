//! Classification metrics: top-1 and top-5 accuracy and the confusion matrix of the top-1
//! predictions.

use crate::Result;
use crate::confusion::ConfusionMatrix;

/// Top-k accuracy and confusion matrix, filled one prediction at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassificationEval {
    confusion: ConfusionMatrix,
    top1: u64,
    top5: u64,
}

impl ClassificationEval {
    /// An empty evaluation over `classes` classes.
    pub fn new(classes: usize) -> Self {
        Self {
            confusion: ConfusionMatrix::new(classes),
            top1: 0,
            top5: 0,
        }
    }

    /// Counts one image of class `truth` whose predicted classes, best first, are `ranked`
    /// (at least one; the first five count for top-5).
    pub fn add(&mut self, truth: usize, ranked: &[usize]) -> Result<()> {
        let Some(&best) = ranked.first() else {
            return Err(crate::EvalError::EmptyPrediction);
        };
        self.confusion.add(truth, best)?;
        self.top1 += u64::from(best == truth);
        self.top5 += u64::from(ranked.iter().take(5).any(|&c| c == truth));
        Ok(())
    }

    /// The images counted.
    pub fn count(&self) -> u64 {
        self.confusion.total()
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

    /// The confusion matrix of the best predictions.
    pub fn confusion(&self) -> &ConfusionMatrix {
        &self.confusion
    }
}
