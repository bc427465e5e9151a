//! The learning-rate schedule: linear warm-up, then a cosine decay, as ml-cvnets
//! v0.1's `optim/scheduler/cosine.py` (`CosineScheduler.get_lr`).

use serde::{Deserialize, Serialize};

/// Linear warm-up from `warmup_init_lr` to `max_lr` over `warmup_iterations`, then
/// a cosine from `max_lr` down to `min_lr` over `period` (iterations, or epochs when
/// the schedule is epoch-based).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CosineSchedule {
    /// Iterations of linear warm-up (0: none).
    pub warmup_iterations: u64,
    /// Learning rate at iteration 0 of the warm-up.
    pub warmup_init_lr: f64,
    /// Peak learning rate (end of warm-up, start of the cosine).
    pub max_lr: f64,
    /// Learning rate at the end of the cosine.
    pub min_lr: f64,
    /// Length of the cosine: iterations after the warm-up (ml-cvnets:
    /// `max_iterations - warmup_iterations + 1`), or epochs when `by_epoch`.
    pub period: u64,
    /// Whether the cosine follows the epoch (ml-cvnets' `is_iteration_based:
    /// false`, the MobileViT configs) rather than the iteration.
    pub by_epoch: bool,
}

impl CosineSchedule {
    /// An iteration-based schedule over `max_iterations` in all, as ml-cvnets builds it.
    pub fn iteration_based(
        warmup_iterations: u64,
        warmup_init_lr: f64,
        max_lr: f64,
        min_lr: f64,
        max_iterations: u64,
    ) -> Self {
        Self {
            warmup_iterations,
            warmup_init_lr,
            max_lr,
            min_lr,
            period: (max_iterations + 1).saturating_sub(warmup_iterations),
            by_epoch: false,
        }
    }

    /// The learning rate at `iteration` (counted from 0 over the whole run) of
    /// `epoch`.
    pub fn lr(&self, epoch: u64, iteration: u64) -> f64 {
        let lr = if iteration < self.warmup_iterations {
            let step = (self.max_lr - self.warmup_init_lr) / self.warmup_iterations as f64;
            self.warmup_init_lr + iteration as f64 * step
        } else {
            let t = if self.by_epoch {
                epoch
            } else {
                iteration - self.warmup_iterations
            };
            self.min_lr
                + 0.5
                    * (self.max_lr - self.min_lr)
                    * (1.0 + (std::f64::consts::PI * t as f64 / self.period as f64).cos())
        };
        lr.max(0.0)
    }
}
