//! AdamW exactly as `torch.optim.AdamW` (single-tensor form, `amsgrad` off), which
//! ml-cvnets v0.1 wraps (`optim/adamw.py`): decoupled weight decay, bias-corrected
//! moments, `eps` added outside the square root. The state is kept per parameter
//! name (each parameter counts its own steps, as PyTorch does), so that it can be
//! saved and resumed ([`AdamW::to_tensors`], [`AdamW::from_tensors`]).
//!
//! Weight decay applies to every trainable parameter, norms and biases included, as
//! in ml-cvnets v0.1's MobileViT configs (`no_decay_bn_filter_bias: false`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use vpipe_core::HostTensor;

/// AdamW's hyper-parameters; the defaults are ml-cvnets v0.1's MobileViT configs'.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWSettings {
    /// Decay of the first moment.
    pub beta1: f64,
    /// Decay of the second moment.
    pub beta2: f64,
    /// Added to the denominator, outside the square root.
    pub eps: f64,
    /// Decoupled weight decay (multiplies the learning rate).
    pub weight_decay: f64,
}

impl Default for AdamWSettings {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// The state of one parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct Moments {
    /// Updates applied so far.
    pub step: u64,
    /// First moment (running mean of the gradient).
    pub exp_avg: Vec<f32>,
    /// Second moment (running mean of the squared gradient).
    pub exp_avg_sq: Vec<f32>,
}

/// The optimiser: settings and per-parameter state.
#[derive(Debug, Clone, PartialEq)]
pub struct AdamW {
    /// Hyper-parameters.
    pub settings: AdamWSettings,
    state: BTreeMap<String, Moments>,
}

/// PyTorch's `lerp` in `f32`: `a + w (b - a)` for `w < 0.5`, else `b - (b - a)(1 - w)`.
fn lerp(a: f32, b: f32, w: f32) -> f32 {
    if w.abs() < 0.5 {
        a + w * (b - a)
    } else {
        b - (b - a) * (1.0 - w)
    }
}

impl AdamW {
    /// An optimiser with no state yet.
    pub fn new(settings: AdamWSettings) -> Self {
        Self {
            settings,
            state: BTreeMap::new(),
        }
    }

    /// The state of parameter `name`, if it was updated before.
    pub fn moments(&self, name: &str) -> Option<&Moments> {
        self.state.get(name)
    }

    /// Updates `param` (in place) from its gradient `grad` at learning rate `lr`.
    /// `name` keys its state.
    pub fn update(&mut self, name: &str, param: &mut [f32], grad: &[f32], lr: f64) {
        let s = self.settings;
        let m = self
            .state
            .entry(name.to_string())
            .or_insert_with(|| Moments {
                step: 0,
                exp_avg: vec![0.0; param.len()],
                exp_avg_sq: vec![0.0; param.len()],
            });
        m.step += 1;
        let decay = (1.0 - lr * s.weight_decay) as f32;
        let w1 = (1.0 - s.beta1) as f32;
        let beta2 = s.beta2 as f32;
        let w2 = (1.0 - s.beta2) as f32;
        let step = m.step as f64;
        let bias_correction1 = 1.0 - s.beta1.powf(step);
        let bias_correction2 = 1.0 - s.beta2.powf(step);
        let step_size = -(lr / bias_correction1) as f32;
        let bc2_sqrt = bias_correction2.sqrt() as f32;
        let eps = s.eps as f32;
        for (((p, &g), a), v) in param
            .iter_mut()
            .zip(grad)
            .zip(&mut m.exp_avg)
            .zip(&mut m.exp_avg_sq)
        {
            *p *= decay;
            *a = lerp(*a, g, w1);
            *v = *v * beta2 + w2 * g * g;
            let denom = v.sqrt() / bc2_sqrt + eps;
            *p += step_size * (*a / denom);
        }
    }

    /// The state as named tensors, `exp_avg.{name}` and `exp_avg_sq.{name}`, and the
    /// step counts and settings as string metadata (`vpipe.adamw`, JSON), for a
    /// safetensors file.
    pub fn to_tensors(&self) -> (BTreeMap<String, HostTensor>, BTreeMap<String, String>) {
        let mut tensors = BTreeMap::new();
        let mut steps = BTreeMap::new();
        for (name, m) in &self.state {
            let n = m.exp_avg.len();
            tensors.insert(
                format!("exp_avg.{name}"),
                HostTensor::new(vec![n], m.exp_avg.clone()),
            );
            tensors.insert(
                format!("exp_avg_sq.{name}"),
                HostTensor::new(vec![n], m.exp_avg_sq.clone()),
            );
            steps.insert(name.clone(), m.step);
        }
        let meta = serde_json::json!({ "settings": self.settings, "steps": steps });
        (
            tensors,
            BTreeMap::from([(ADAMW_METADATA_KEY.to_string(), meta.to_string())]),
        )
    }

    /// The optimiser [`AdamW::to_tensors`] described; `Err` says what is missing or
    /// inconsistent.
    pub fn from_tensors(
        tensors: &BTreeMap<String, HostTensor>,
        metadata: &BTreeMap<String, String>,
    ) -> std::result::Result<Self, String> {
        #[derive(Deserialize)]
        struct Meta {
            settings: AdamWSettings,
            steps: BTreeMap<String, u64>,
        }
        let raw = metadata
            .get(ADAMW_METADATA_KEY)
            .ok_or_else(|| format!("no '{ADAMW_METADATA_KEY}' metadata"))?;
        let meta: Meta =
            serde_json::from_str(raw).map_err(|e| format!("'{ADAMW_METADATA_KEY}': {e}"))?;
        let mut state = BTreeMap::new();
        for (name, step) in meta.steps {
            let get = |kind: &str| {
                tensors
                    .get(&format!("{kind}.{name}"))
                    .map(|t| t.data.clone())
                    .ok_or_else(|| format!("missing tensor '{kind}.{name}'"))
            };
            let (exp_avg, exp_avg_sq) = (get("exp_avg")?, get("exp_avg_sq")?);
            if exp_avg.len() != exp_avg_sq.len() {
                return Err(format!("moments of '{name}' differ in length"));
            }
            state.insert(
                name,
                Moments {
                    step,
                    exp_avg,
                    exp_avg_sq,
                },
            );
        }
        Ok(Self {
            settings: meta.settings,
            state,
        })
    }
}

/// The metadata key of the optimiser's step counts and settings.
pub const ADAMW_METADATA_KEY: &str = "vpipe.adamw";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_step_by_hand() {
        // Step 1: m = 0.1 g, v = 0.001 g², m̂ = g, v̂ = g²: p ← p (1 - lr wd) - lr g / (|g| + eps).
        let mut opt = AdamW::new(AdamWSettings::default());
        let mut p = [1.0f32, -2.0];
        opt.update("w", &mut p, &[0.5, -4.0], 0.1);
        let want = [1.0 * (1.0 - 0.001) - 0.1, -2.0 * (1.0 - 0.001) + 0.1];
        for (a, b) in p.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{p:?} vs {want:?}");
        }
        let m = opt.moments("w").expect("state");
        assert_eq!(m.step, 1);
        assert!((m.exp_avg[1] + 0.4).abs() < 1e-7);
        assert!((m.exp_avg_sq[1] - 0.016).abs() < 1e-7);
    }

    #[test]
    fn state_round_trips() {
        let mut opt = AdamW::new(AdamWSettings::default());
        let mut p = [1.0f32, 2.0, 3.0];
        opt.update("a.weight", &mut p, &[0.1, 0.2, -0.3], 0.01);
        opt.update("a.weight", &mut p, &[0.3, -0.2, 0.1], 0.01);
        let (tensors, meta) = opt.to_tensors();
        let back = AdamW::from_tensors(&tensors, &meta).expect("read back");
        assert_eq!(back, opt);
        let err = AdamW::from_tensors(&BTreeMap::new(), &meta).expect_err("no tensors");
        assert!(err.contains("exp_avg.a.weight"), "{err}");
    }
}
