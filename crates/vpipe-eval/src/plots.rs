//! PNG plots of the metrics, drawn with `plotters` in memory and written atomically:
//! precision-recall curves (detection), a confusion matrix heat map (segmentation,
//! classification) and a loss curve (training). The text uses the font vpipe-annotate embeds,
//! so no system font is needed.

use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::coco_eval::CocoEvalResult;
use crate::confusion::ConfusionMatrix;
use crate::{EvalError, Result};

/// The font family name the plots' text is drawn with (plotters' default family, so its
/// axis labels use it too).
const FAMILY: &str = "sans-serif";
/// Curves with a legend line each up to this many classes.
const LEGEND_CLASSES: usize = 20;
/// Confusion matrices write each cell's value up to this many classes.
const VALUED_CLASSES: usize = 25;
/// Confusion matrices name their classes up to this many.
const NAMED_CLASSES: usize = 40;

/// Registers the embedded font with plotters once.
fn register_font() -> std::result::Result<(), String> {
    static DONE: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        plotters::style::register_font(FAMILY, FontStyle::Normal, vpipe_annotate::FONT_BYTES)
            .map_err(|_| "the embedded font cannot be read".to_string())
    })
    .clone()
}

/// Draws `draw` on a white `size` canvas and writes it as a PNG at `path` atomically.
fn render<F>(path: &Path, size: (u32, u32), draw: F) -> Result<()>
where
    F: FnOnce(
        &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    ) -> std::result::Result<(), String>,
{
    let fail = |message: String| EvalError::Plot {
        path: path.to_path_buf(),
        message,
    };
    register_font().map_err(fail)?;
    let mut buf = vec![255u8; size.0 as usize * size.1 as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
        draw(&root).map_err(fail)?;
        root.present().map_err(|e| fail(e.to_string()))?;
    }
    let image = image::RgbImage::from_raw(size.0, size.1, buf)
        .ok_or_else(|| fail("the canvas has the wrong size".into()))?;
    let mut png = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| fail(e.to_string()))?;
    vpipe_io::output::write_atomic(path, &png).map_err(|e| fail(e.to_string()))
}

/// A chart of `x` by `y` with a caption, its mesh and axis names (`axes`) drawn.
fn xy_chart<'a, 'b>(
    root: &'a DrawingArea<BitMapBackend<'b>, plotters::coord::Shift>,
    caption: &str,
    axes: (&str, &str),
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
) -> std::result::Result<XyChart<'a, 'b>, String> {
    let mut chart = ChartBuilder::on(root)
        .caption(caption, (FAMILY, 24))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(x, y)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc(axes.0)
        .y_desc(axes.1)
        .label_style((FAMILY, 14))
        .axis_desc_style((FAMILY, 16))
        .draw()
        .map_err(|e| e.to_string())?;
    Ok(chart)
}

/// The charts [`xy_chart`] makes.
type XyChart<'a, 'b> = ChartContext<
    'a,
    BitMapBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// A colour for curve `i` (vpipe's class palette).
fn curve_color(i: usize) -> RGBColor {
    let c = vpipe_annotate::class_color(i);
    RGBColor(c[0], c[1], c[2])
}

/// Writes the precision-recall curves at IoU 0.50 of a COCO evaluation: one thin line a
/// class with ground truth, up to the highest recall it reaches (named in a legend up to 20
/// classes), and the mean over classes, thick, named with its mAP@0.5.
pub fn pr_curves(result: &CocoEvalResult, path: &Path) -> Result<()> {
    let overall = result.overall_precision_iou50();
    let recall = &result.recall_points;
    let defined: Vec<_> = result
        .classes
        .iter()
        .filter(|c| c.precision_iou50.iter().any(|&p| p > -1.0))
        .collect();
    let map50 = result.stats[1];
    render(path, (900, 700), |root| {
        let mut chart = xy_chart(
            root,
            "Precision-recall (IoU 0.50)",
            ("Recall", "Precision"),
            0.0..1.0,
            0.0..1.02,
        )?;
        let legend = defined.len() <= LEGEND_CLASSES;
        for (i, class) in defined.iter().enumerate() {
            let color = curve_color(i);
            // Past the recall it reaches, a class's precision is 0: not drawn.
            let reached = class
                .precision_iou50
                .iter()
                .rposition(|&p| p > 0.0)
                .map_or(0, |i| i + 1);
            let series = chart
                .draw_series(LineSeries::new(
                    recall
                        .iter()
                        .zip(&class.precision_iou50)
                        .take(reached)
                        .map(|(&r, &p)| (r, p.max(0.0))),
                    color.stroke_width(1),
                ))
                .map_err(|e| e.to_string())?;
            if legend {
                let ap50 = mean_non_negative(&class.precision_iou50);
                series
                    .label(format!("{} {ap50:.3}", class.name))
                    .legend(move |(x, y)| {
                        PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2))
                    });
            }
        }
        if overall.iter().any(|&p| p > -1.0) {
            chart
                .draw_series(LineSeries::new(
                    recall.iter().zip(&overall).map(|(&r, &p)| (r, p.max(0.0))),
                    BLUE.stroke_width(4),
                ))
                .map_err(|e| e.to_string())?
                .label(format!("all classes {map50:.3} mAP@0.5"))
                .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLUE.stroke_width(4)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerLeft)
            .label_font((FAMILY, 12))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())
    })
}

/// The mean of the values at least 0 (a curve's area, as AP averages it), 0 when none.
fn mean_non_negative(values: &[f64]) -> f64 {
    let kept: Vec<f64> = values.iter().copied().filter(|&v| v >= 0.0).collect();
    if kept.is_empty() {
        0.0
    } else {
        kept.iter().sum::<f64>() / kept.len() as f64
    }
}

/// Writes a confusion matrix as a heat map, each row (true class) normalised to sum 1,
/// the classes named (`names`) up to 40 of them, the values written up to 25.
pub fn confusion_matrix(matrix: &ConfusionMatrix, names: &[String], path: &Path) -> Result<()> {
    let n = matrix.classes() as i32;
    // Each row as shares of its total.
    let shares: Vec<Vec<f64>> = matrix
        .rows()
        .into_iter()
        .map(|row| {
            let total: u64 = row.iter().sum();
            row.iter()
                .map(|&c| {
                    if total == 0 {
                        0.0
                    } else {
                        c as f64 / total as f64
                    }
                })
                .collect()
        })
        .collect();
    let named = (n as usize) <= NAMED_CLASSES;
    let label = |v: &SegmentValue<i32>, flip: bool| match v {
        SegmentValue::CenterOf(i) if named => {
            let i = if flip { n - 1 - i } else { *i };
            names
                .get(i as usize)
                .cloned()
                .unwrap_or_else(|| i.to_string())
        }
        SegmentValue::CenterOf(i) => (if flip { n - 1 - i } else { *i }).to_string(),
        _ => String::new(),
    };
    let side = (600 + 18 * n.min(60)) as u32;
    render(path, (side + 120, side), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                "Confusion matrix (rows: true class, normalised)",
                (FAMILY, 22),
            )
            .margin(16)
            .x_label_area_size(110)
            .y_label_area_size(110)
            // A segmented range includes its end: n - 1 gives n cells.
            .build_cartesian_2d((0..n - 1).into_segmented(), (0..n - 1).into_segmented())
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("Predicted")
            .y_desc("True")
            .x_labels(n as usize)
            .y_labels(n as usize)
            // The x labels are drawn below, rotated: plotters centres a rotated label on its
            // tick, half of it outside the label area.
            .x_label_formatter(&|_| String::new())
            .y_label_formatter(&|v| label(v, true))
            .y_label_style((FAMILY, 11))
            .axis_desc_style((FAMILY, 16))
            .draw()
            .map_err(|e| e.to_string())?;
        let cells = shares.iter().enumerate().flat_map(|(t, row)| {
            row.iter().enumerate().map(move |(p, &v)| {
                let shade = |full: u8| (255.0 - (255.0 - f64::from(full)) * v).round() as u8;
                let color = RGBColor(shade(8), shade(48), shade(107));
                let (x, y) = (p as i32, n - 1 - t as i32);
                Rectangle::new(
                    [
                        (SegmentValue::Exact(x), SegmentValue::Exact(y)),
                        (SegmentValue::Exact(x + 1), SegmentValue::Exact(y + 1)),
                    ],
                    color.filled(),
                )
            })
        });
        chart.draw_series(cells).map_err(|e| e.to_string())?;
        if n as usize <= VALUED_CLASSES {
            let values = shares.iter().enumerate().flat_map(|(t, row)| {
                row.iter().enumerate().map(move |(p, &v)| {
                    let color: &'static RGBColor = if v > 0.5 { &WHITE } else { &BLACK };
                    let style = TextStyle::from((FAMILY, 13).into_font())
                        .color(color)
                        .pos(Pos::new(HPos::Center, VPos::Center));
                    Text::new(
                        format!("{v:.2}"),
                        (
                            SegmentValue::CenterOf(p as i32),
                            SegmentValue::CenterOf(n - 1 - t as i32),
                        ),
                        style,
                    )
                })
            });
            chart.draw_series(values).map_err(|e| e.to_string())?;
        }
        for i in 0..n {
            let (x, y) = chart.backend_coord(&(SegmentValue::CenterOf(i), SegmentValue::Exact(0)));
            // Read downwards from just below the axis.
            let style =
                TextStyle::from((FAMILY, 11).into_font().transform(FontTransform::Rotate90))
                    .pos(Pos::new(HPos::Left, VPos::Center));
            root.draw(&Text::new(
                label(&SegmentValue::CenterOf(i), false),
                (x, y + 8),
                style,
            ))
            .map_err(|e| e.to_string())?;
        }
        Ok(())
    })
}

/// Writes a training loss curve: `points` are (step, loss) pairs in step order.
pub fn loss_curve(points: &[(f64, f64)], path: &Path) -> Result<()> {
    let finite: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|(s, l)| s.is_finite() && l.is_finite())
        .collect();
    if finite.is_empty() {
        return Err(EvalError::Plot {
            path: path.to_path_buf(),
            message: "no (step, loss) points with finite values".into(),
        });
    }
    let (x0, x1) = finite
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (y0, y1) = finite
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let pad = ((y1 - y0) * 0.05).max(1e-6);
    let x1 = if x1 > x0 { x1 } else { x0 + 1.0 };
    render(path, (900, 600), |root| {
        let mut chart = xy_chart(
            root,
            "Training loss",
            ("Step", "Loss"),
            x0..x1,
            (y0 - pad)..(y1 + pad),
        )?;
        chart
            .draw_series(LineSeries::new(
                finite.iter().copied(),
                BLUE.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?;
        Ok(())
    })
}
