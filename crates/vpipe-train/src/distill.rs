//! Distillation: a head learns to reproduce a teacher's outputs on unlabelled
//! images, so that heads fine-tuned with their own backbones (every released
//! checkpoint) can be moved onto one shared backbone.
//!
//! - Class logits (classification, each pixel of a segmentation, each SSD anchor):
//!   the KL divergence from the teacher's softened distribution to the student's,
//!   `T² · KL(softmax(t / T) ‖ softmax(s / T))`, averaged over images, pixels or
//!   anchors (Hinton et al.'s scaling, so the gradient's size does not depend on `T`).
//! - SSD box regressions: L1 between the student's and the teacher's encoded boxes
//!   on the anchors where the teacher is confident (its highest object-class
//!   probability above [`DistillSettings::confidence`]), summed over the four
//!   coordinates and averaged over those anchors (none: no box term).
//!
//! The teacher runs on the same augmented image as the student (through its own
//! preprocessing); its segmentation logits are resized to the student's input size
//! (bilinear, with the teacher's corner convention) before the per-pixel KL.

use burn::tensor::Tensor;
use burn::tensor::activation::{log_softmax, softmax};
use vpipe_core::HostTensor;
use vpipe_heads::TrainOutput;

/// Distillation settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DistillSettings {
    /// Softmax temperature of the KL divergence.
    pub temperature: f64,
    /// Teacher probability above which an anchor's box is learnt.
    pub confidence: f32,
}

impl Default for DistillSettings {
    fn default() -> Self {
        Self {
            temperature: 2.0,
            confidence: 0.5,
        }
    }
}

/// A teacher's outputs for one batch, in the layout of the student's
/// [`TrainOutput`].
#[derive(Debug, Clone, PartialEq)]
pub enum TeacherOutputs {
    /// Class logits `[batch, classes]`.
    Classification(HostTensor),
    /// SSD class logits `[batch, anchors, classes]` and box regressions
    /// `[batch, anchors, 4]`, on the student's anchors.
    Detection {
        /// Class logits.
        conf_logits: HostTensor,
        /// Box regressions.
        loc: HostTensor,
    },
    /// Segmentation logits at the student's input size, `[batch, classes, h, w]`.
    Segmentation(HostTensor),
}

/// `T² · mean over rows of KL(softmax(teacher / T) ‖ softmax(student / T))`, the
/// class axis being `dim` of `D`-dimensional logits.
fn kl<const D: usize>(student: Tensor<D>, teacher: Tensor<D>, dim: usize, t: f64) -> Tensor<1> {
    let dims = student.dims();
    let rows = dims.iter().product::<usize>() / dims[dim];
    let p_t = softmax(teacher.clone() / t, dim);
    let log_p_t = log_softmax(teacher / t, dim);
    let log_p_s = log_softmax(student / t, dim);
    (p_t * (log_p_t - log_p_s)).sum() * (t * t / rows as f64)
}

/// The teacher's tensor on the student's device, checked to have the student's
/// shape.
fn like<const D: usize>(
    student: &Tensor<D>,
    teacher: &HostTensor,
    what: &str,
) -> std::result::Result<Tensor<D>, String> {
    let dims = student.dims();
    if teacher.shape != dims {
        return Err(format!(
            "the teacher's {what} are {:?}, the student's {dims:?}",
            teacher.shape
        ));
    }
    let device = student.device();
    Ok(Tensor::from_data(
        burn::tensor::TensorData::new(teacher.data.clone(), dims),
        &device,
    ))
}

/// The distillation loss of a student's `output` against its teacher's.
pub fn distill_loss(
    output: &TrainOutput,
    teacher: &TeacherOutputs,
    settings: &DistillSettings,
) -> std::result::Result<Tensor<1>, String> {
    let t = settings.temperature;
    match (output, teacher) {
        (TrainOutput::Classification { logits }, TeacherOutputs::Classification(tl)) => {
            let tl = like(logits, tl, "logits")?;
            Ok(kl(logits.clone(), tl, 1, t))
        }
        (TrainOutput::Segmentation { logits }, TeacherOutputs::Segmentation(tl)) => {
            let tl = like(logits, tl, "logits")?;
            Ok(kl(logits.clone(), tl, 1, t))
        }
        (
            TrainOutput::Detection {
                conf_logits, loc, ..
            },
            TeacherOutputs::Detection {
                conf_logits: tc,
                loc: tloc,
            },
        ) => {
            let [_, _, classes] = conf_logits.dims();
            let class_term = kl(
                conf_logits.clone(),
                like(conf_logits, tc, "class logits")?,
                2,
                t,
            );
            // The teacher's confident anchors (highest object-class probability).
            let confident: Vec<f32> = tc
                .data
                .chunks_exact(classes)
                .map(|row| {
                    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let sum: f32 = row.iter().map(|&v| (v - max).exp()).sum();
                    let best = row[1..].iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    f32::from(u8::from((best - max).exp() / sum > settings.confidence))
                })
                .collect();
            let n = confident.iter().filter(|&&c| c > 0.0).count();
            if n == 0 {
                return Ok(class_term);
            }
            let [b, a, _] = loc.dims();
            let weight = Tensor::<3>::from_data(
                burn::tensor::TensorData::new(confident, [b, a, 1]),
                &loc.device(),
            );
            let l1 = ((loc.clone() - like(loc, tloc, "box regressions")?).abs() * weight).sum();
            Ok(class_term + l1 / n as f64)
        }
        _ => Err("the teacher's outputs are of another task than the head's".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    fn value(t: Tensor<1>) -> f64 {
        t.into_data().convert::<f64>().try_to_vec::<f64>().unwrap()[0]
    }

    #[test]
    fn kl_is_zero_for_the_teacher_itself_and_matches_a_hand_computation() {
        let device = vpipe_core::device::default_device();
        let logits = vec![1.0f32, 2.0, 0.5, -1.0, 0.0, 3.0];
        let t = HostTensor::new(vec![2, 3], logits.clone());
        let student = Tensor::<2>::from_data(TensorData::new(logits, [2, 3]), &device);
        let out = TrainOutput::Classification { logits: student };
        let s = DistillSettings::default();
        let same = value(distill_loss(&out, &TeacherOutputs::Classification(t), &s).unwrap());
        assert!(same.abs() < 1e-6, "{same}");
        // Student uniform, teacher [0, ln 3] at T = 1: KL = Σ p (ln p - ln 1/2).
        let student = Tensor::<2>::from_data(TensorData::new(vec![0.0f32, 0.0], [1, 2]), &device);
        let teacher = HostTensor::new(vec![1, 2], vec![0.0, 3f32.ln()]);
        let out = TrainOutput::Classification { logits: student };
        let s1 = DistillSettings {
            temperature: 1.0,
            ..s
        };
        let got = value(distill_loss(&out, &TeacherOutputs::Classification(teacher), &s1).unwrap());
        let want = 0.25 * (0.25f64 / 0.5).ln() + 0.75 * (0.75f64 / 0.5).ln();
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }

    #[test]
    fn boxes_are_learnt_on_confident_anchors_only() {
        let device = vpipe_core::device::default_device();
        // Two anchors, two classes (background, object): the first confident.
        let conf = vec![0.0f32, 5.0, 5.0, 0.0];
        let tc = HostTensor::new(vec![1, 2, 2], conf.clone());
        let tloc = HostTensor::new(vec![1, 2, 4], vec![1.0; 8]);
        let out = TrainOutput::Detection {
            conf_logits: Tensor::from_data(TensorData::new(conf, [1, 2, 2]), &device),
            loc: Tensor::from_data(TensorData::new(vec![0.0f32; 8], [1, 2, 4]), &device),
            anchors: vec![[0.5; 4]; 2],
        };
        let teacher = TeacherOutputs::Detection {
            conf_logits: tc,
            loc: tloc,
        };
        let got = value(distill_loss(&out, &teacher, &DistillSettings::default()).unwrap());
        // KL 0 (same logits); L1 over the confident anchor's 4 coordinates: 4.
        assert!((got - 4.0).abs() < 1e-5, "{got}");
    }

    #[test]
    fn shapes_and_tasks_must_fit() {
        let device = vpipe_core::device::default_device();
        let student = Tensor::<2>::from_data(TensorData::new(vec![0.0f32; 4], [2, 2]), &device);
        let out = TrainOutput::Classification { logits: student };
        let t = HostTensor::new(vec![2, 3], vec![0.0; 6]);
        let e = distill_loss(
            &out,
            &TeacherOutputs::Classification(t.clone()),
            &DistillSettings::default(),
        )
        .unwrap_err();
        assert!(e.contains("[2, 3]"), "{e}");
        let e = distill_loss(
            &out,
            &TeacherOutputs::Segmentation(t),
            &DistillSettings::default(),
        )
        .unwrap_err();
        assert!(e.contains("another task"), "{e}");
    }
}
