//! A confusion matrix over a dataset: rows are the true classes, columns the predicted ones.

use crate::{EvalError, Result};

/// Counts of (true class, predicted class) pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfusionMatrix {
    classes: usize,
    counts: Vec<u64>,
}

impl ConfusionMatrix {
    /// An empty matrix of `classes` classes.
    pub fn new(classes: usize) -> Self {
        Self {
            classes,
            counts: vec![0; classes * classes],
        }
    }

    /// The number of classes.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// How often class `truth` was predicted as `predicted`.
    pub fn get(&self, truth: usize, predicted: usize) -> u64 {
        self.counts[truth * self.classes + predicted]
    }

    /// Counts one pair.
    pub fn add(&mut self, truth: usize, predicted: usize) -> Result<()> {
        for value in [truth, predicted] {
            if value >= self.classes {
                return Err(EvalError::ClassOutOfRange {
                    value,
                    classes: self.classes,
                });
            }
        }
        self.counts[truth * self.classes + predicted] += 1;
        Ok(())
    }

    /// Counts each pixel of a class-index mask pair, leaving out the pixels whose truth is
    /// `ignore`.
    pub fn add_masks(&mut self, truth: &[u8], predicted: &[u8], ignore: Option<u8>) -> Result<()> {
        if truth.len() != predicted.len() {
            return Err(EvalError::SizeMismatch {
                prediction: predicted.len(),
                truth: truth.len(),
            });
        }
        for (&t, &p) in truth.iter().zip(predicted) {
            if Some(t) != ignore {
                self.add(usize::from(t), usize::from(p))?;
            }
        }
        Ok(())
    }

    /// The pairs counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The pairs whose prediction is right.
    pub fn correct(&self) -> u64 {
        (0..self.classes).map(|c| self.get(c, c)).sum()
    }

    /// How many pairs have true class `class`.
    pub fn row_sum(&self, class: usize) -> u64 {
        (0..self.classes).map(|p| self.get(class, p)).sum()
    }

    /// How many pairs have predicted class `class`.
    pub fn column_sum(&self, class: usize) -> u64 {
        (0..self.classes).map(|t| self.get(t, class)).sum()
    }

    /// The rows, true class by true class.
    pub fn rows(&self) -> Vec<Vec<u64>> {
        self.counts
            .chunks(self.classes.max(1))
            .map(<[u64]>::to_vec)
            .collect()
    }
}
