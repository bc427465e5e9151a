//! Semantic segmentation metrics from one confusion matrix over the whole dataset.

use crate::confusion::ConfusionMatrix;

/// Per-class IoU, mIoU and pixel accuracy.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentationMetrics {
    /// Each class's IoU (intersection over union of its true and predicted pixels); `None`
    /// for a class with an empty union (neither true nor predicted anywhere).
    pub iou: Vec<Option<f64>>,
    /// The mean IoU over the classes whose union is not empty (0 when none is).
    pub miou: f64,
    /// The fraction of pixels (not ignored) predicted right (0 when there are none).
    pub pixel_accuracy: f64,
}

/// The metrics of `matrix` (rows: ground truth, columns: prediction; ignored pixels left out
/// when it was filled).
pub fn segmentation_metrics(matrix: &ConfusionMatrix) -> SegmentationMetrics {
    let iou: Vec<Option<f64>> = (0..matrix.classes())
        .map(|c| {
            let inter = matrix.get(c, c);
            let union = matrix.row_sum(c) + matrix.column_sum(c) - inter;
            (union > 0).then(|| inter as f64 / union as f64)
        })
        .collect();
    let defined: Vec<f64> = iou.iter().flatten().copied().collect();
    let miou = if defined.is_empty() {
        0.0
    } else {
        defined.iter().sum::<f64>() / defined.len() as f64
    };
    let total = matrix.total();
    let pixel_accuracy = if total == 0 {
        0.0
    } else {
        matrix.correct() as f64 / total as f64
    };
    SegmentationMetrics {
        iou,
        miou,
        pixel_accuracy,
    }
}
