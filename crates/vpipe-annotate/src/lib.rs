//! Drawing results on images, with `imageproc`.
//!
//! - detections: a box per object and a filled tag with its label and score;
//! - segmentation: the mask blended over the image with an alpha, and a legend of
//!   the classes present;
//! - classification: a banner with the top-k classes.
//!
//! Colours are stable per class (the PASCAL VOC palette for segmentation, a fixed
//! high-contrast palette for other heads). Line widths and text sizes follow the
//! image size, and [`Annotator::layout`] places the banner, the legend and the tags
//! so that none covers another, on small and large frames alike. The
//! font (DejaVu Sans Bold, Bitstream Vera licence in `fonts/LICENSE-DejaVu.txt`) is
//! embedded in the binary.

use ab_glyph::{FontRef, PxScale};
use image::{Rgb, RgbImage};
use imageproc::drawing::{draw_filled_rect_mut, draw_text_mut, text_size};
use imageproc::rect::Rect;
use vpipe_core::labels::voc_color;
use vpipe_core::pixel::ChannelOrder;
use vpipe_core::result::{ClassArea, ClassScore, Detection, HeadOutput};

/// The embedded font (DejaVu Sans Bold, TrueType): the annotations' text, and the plots' of
/// vpipe-eval, so that no system font is needed.
pub const FONT_BYTES: &[u8] = include_bytes!("../fonts/DejaVuSans-Bold.ttf");

/// A high-contrast palette for boxes, indexed by class id modulo its length.
const PALETTE: [[u8; 3]; 20] = [
    [230, 25, 75],
    [60, 180, 75],
    [255, 225, 25],
    [0, 130, 200],
    [245, 130, 48],
    [145, 30, 180],
    [70, 240, 240],
    [240, 50, 230],
    [210, 245, 60],
    [250, 190, 212],
    [0, 128, 128],
    [220, 190, 255],
    [170, 110, 40],
    [255, 250, 200],
    [128, 0, 0],
    [170, 255, 195],
    [128, 128, 0],
    [255, 215, 180],
    [0, 0, 128],
    [128, 128, 128],
];

/// The colour of a detection class: stable for a given class id.
pub fn class_color(class_id: usize) -> Rgb<u8> {
    Rgb(PALETTE[class_id % PALETTE.len()])
}

/// The colour of a track: stable for a given track id, and different for
/// neighbouring ids.
pub fn track_color(track_id: u64) -> Rgb<u8> {
    Rgb(PALETTE[(track_id as usize).wrapping_mul(7) % PALETTE.len()])
}

/// A detection's colour: its track's when it has one, else its class's.
fn detection_color(d: &Detection) -> Rgb<u8> {
    d.track_id.map_or(class_color(d.class_id), track_color)
}

/// A track's recent path: box centres, oldest first, in pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct Trail {
    /// The track.
    pub track_id: u64,
    /// Box centres `[x, y]`, oldest first.
    pub points: Vec<[f32; 2]>,
}

/// A zone or line to draw: its outline and what it counts.
#[derive(Debug, Clone, PartialEq)]
pub struct Region {
    /// Corners (a zone, closed) or ends (a line), in pixels.
    pub points: Vec<[f32; 2]>,
    /// Whether the outline closes (a zone).
    pub closed: bool,
    /// Its name and counts, written at its first point.
    pub text: String,
}

/// The colour of zones and lines: one that stands apart from the class palette.
const REGION_COLOR: Rgb<u8> = Rgb([255, 255, 0]);

/// The colour of a segmentation class: the PASCAL VOC palette.
pub fn mask_color(class_id: usize) -> Rgb<u8> {
    Rgb(voc_color(class_id))
}

/// Drawing settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Style {
    /// Opacity of the mask overlay, 0 to 1.
    pub mask_alpha: f32,
    /// Whether to draw the class legend of a mask.
    pub legend: bool,
    /// Channel order of the images drawn on (the `RgbImage` holds BGR pixels when
    /// this is [`ChannelOrder::Bgr`]); colours are swapped to match.
    pub order: ChannelOrder,
}

impl Default for Style {
    fn default() -> Self {
        Self {
            mask_alpha: 0.5,
            legend: true,
            order: ChannelOrder::Rgb,
        }
    }
}

/// Draws results on images.
#[derive(Debug, Clone)]
pub struct Annotator {
    font: FontRef<'static>,
    style: Style,
}

impl Default for Annotator {
    fn default() -> Self {
        Self::new(Style::default())
    }
}

/// Black or white, whichever reads better on `bg`.
fn text_color(bg: Rgb<u8>) -> Rgb<u8> {
    let [r, g, b] = bg.0;
    let luma = 0.299 * r as f32 + 0.587 * g as f32 + 0.114 * b as f32;
    if luma > 150.0 {
        Rgb([0, 0, 0])
    } else {
        Rgb([255, 255, 255])
    }
}

impl Annotator {
    /// An annotator with the embedded font.
    pub fn new(style: Style) -> Self {
        let font = FontRef::try_from_slice(FONT_BYTES)
            .expect("the embedded font is a valid TrueType file");
        Self { font, style }
    }

    /// The drawing settings.
    pub fn style(&self) -> &Style {
        &self.style
    }

    /// `c` in the channel order of the images drawn on.
    fn paint(&self, c: Rgb<u8>) -> Rgb<u8> {
        match self.style.order {
            ChannelOrder::Rgb => c,
            ChannelOrder::Bgr => Rgb([c.0[2], c.0[1], c.0[0]]),
        }
    }

    /// Text height in pixels for an image: about 2 % of its shorter side, at least 8.
    fn text_px(width: u32, height: u32) -> f32 {
        (width.min(height) as f32 * 0.02).max(8.0)
    }

    /// Box line width in pixels: about 0.3 % of the shorter side, at least 1.
    fn line_px(width: u32, height: u32) -> u32 {
        ((width.min(height) as f32 * 0.003).round() as u32).max(1)
    }

    /// Draws one head's output (see [`Annotator::draw_all`]).
    pub fn draw(&self, img: &mut RgbImage, output: &HeadOutput) {
        self.draw_all(img, &[output]);
    }

    /// Draws every output of one frame so that nothing hides anything else: masks
    /// first, then boxes, the top-k banner along the top, the mask legend in the
    /// bottom-left corner, and each box's tag where it covers neither the banner,
    /// the legend nor another tag (see [`Annotator::layout`]).
    pub fn draw_all(&self, img: &mut RgbImage, outputs: &[&HeadOutput]) {
        let layout = self.layout(img.width(), img.height(), outputs);
        for o in outputs {
            if let HeadOutput::Segmentation {
                width,
                height,
                mask,
                ..
            } = o
            {
                self.blend_mask(img, mask, *width, *height);
            }
        }
        let line = Self::line_px(img.width(), img.height());
        for o in outputs {
            if let HeadOutput::Detection { detections } = o {
                for d in detections {
                    self.draw_box(img, d, line);
                }
            }
        }
        if let Some(banner) = &layout.banner {
            // Darken the panel so that white text reads on any photo.
            for y in banner.area.y..banner.area.bottom() {
                for x in banner.area.x..banner.area.right() {
                    let p = img.get_pixel_mut(x as u32, y as u32);
                    p.0 = p.0.map(|v| (v as f32 * 0.35) as u8);
                }
            }
            for (text, at) in &banner.lines {
                self.text(img, text, *at, Rgb([255, 255, 255]), layout.scale);
            }
        }
        for tag in layout
            .legend
            .iter()
            .flat_map(|l| &l.tags)
            .chain(&layout.tags)
        {
            self.tag(img, tag, layout.scale);
        }
    }

    /// Where the banner, the legend and the box tags of `outputs` go on a
    /// `width x height` image, without overlaps:
    ///
    /// - the banner (top left) lists the top-k classes, using at most a quarter of
    ///   the height; classes that do not fit become a last line `+N more`;
    /// - the legend (bottom left) lists the mask's classes, largest first, below
    ///   the banner and in at most a third of the height, with `+N more` likewise;
    /// - each box's tag goes above the box, else inside its top, below it, or
    ///   inside its bottom, at the first place that covers neither the banner, the
    ///   legend nor a tag placed before (higher scores first); a tag with no such
    ///   place is left out, its box still drawn.
    ///
    /// The text size follows the image (2 % of its shorter side, at least 8 px).
    pub fn layout(&self, width: u32, height: u32, outputs: &[&HeadOutput]) -> Layout {
        let scale = Self::text_px(width, height);
        let row = (scale * 1.4).ceil() as i32;
        let pad = (scale * 0.2).ceil() as i32;
        let (w, h) = (width as i32, height as i32);
        let mut layout = Layout {
            scale,
            ..Layout::default()
        };
        let top_k: Vec<&ClassScore> = outputs
            .iter()
            .flat_map(|o| match o {
                HeadOutput::Classification { top_k } => top_k.as_slice(),
                _ => &[],
            })
            .collect();
        if !top_k.is_empty() {
            let fit = ((h / 4 - row / 2) / row).max(1) as usize;
            let lines = fit_lines(
                top_k
                    .iter()
                    .map(|c| format!("{:.1}%  {}", c.score * 100.0, c.label))
                    .collect(),
                fit,
            );
            let widest = lines
                .iter()
                .map(|l| self.text_width(l, scale))
                .max()
                .unwrap_or(0);
            let area = Area {
                x: 0,
                y: 0,
                w: (widest + row).min(w),
                h: (row * lines.len() as i32 + row / 2).min(h),
            };
            layout.banner = Some(Banner {
                lines: lines
                    .into_iter()
                    .enumerate()
                    .map(|(i, text)| (text, (row / 2, row / 4 + i as i32 * row)))
                    .collect(),
                area,
            });
        }
        let classes: Vec<&ClassArea> = outputs
            .iter()
            .flat_map(|o| match o {
                HeadOutput::Segmentation { areas, .. } if self.style.legend => areas.as_slice(),
                _ => &[],
            })
            .filter(|c| c.class_id != 0)
            .collect();
        if !classes.is_empty() {
            let mut classes = classes;
            classes.sort_by(|a, b| b.fraction.total_cmp(&a.fraction));
            let below_banner = layout.banner.as_ref().map_or(0, |b| b.area.bottom());
            // One filled tag per line, a pixel or more apart.
            let line_h = self.tag_area("Agy", 0, 0, scale, pad, w, h).h + (pad / 2).max(1);
            let room = (h / 3).min(h - below_banner - row / 2);
            let fit = (room / line_h).max(0) as usize;
            let texts: Vec<(String, Rgb<u8>)> = classes
                .iter()
                .map(|c| {
                    (
                        format!("{} {:.0}%", c.label, c.fraction * 100.0),
                        mask_color(c.class_id),
                    )
                })
                .collect();
            let lines = fit_lines(texts.iter().map(|(t, _)| t.clone()).collect(), fit);
            let mut tags = Vec::with_capacity(lines.len());
            let mut y = h - line_h * lines.len() as i32 - row / 2;
            for (i, text) in lines.into_iter().enumerate() {
                let bg = match texts.get(i) {
                    Some((t, c)) if *t == text => *c,
                    _ => Rgb([60, 60, 60]),
                };
                let area = self.tag_area(&text, row / 2, y, scale, pad, w, h);
                tags.push(Tag { text, area, bg });
                y += line_h;
            }
            if let Some(area) = bounding(tags.iter().map(|t| t.area)) {
                layout.legend = Some(Legend { tags, area });
            }
        }
        let mut detections: Vec<&Detection> = outputs
            .iter()
            .flat_map(|o| match o {
                HeadOutput::Detection { detections } => detections.as_slice(),
                _ => &[],
            })
            .collect();
        detections.sort_by(|a, b| b.score.total_cmp(&a.score));
        let mut taken: Vec<Area> = layout
            .banner
            .iter()
            .map(|b| b.area)
            .chain(layout.legend.iter().map(|l| l.area))
            .collect();
        let line = Self::line_px(width, height) as i32;
        for d in detections {
            let [x1, y1, _, y2] = box_pixels(d.bbox, width, height);
            let text = match d.track_id {
                Some(id) => format!("#{id} {} {:.0}%", d.label, d.score * 100.0),
                None => format!("{} {:.0}%", d.label, d.score * 100.0),
            };
            let probe = self.tag_area(&text, x1, 0, scale, pad, w, h);
            let th = probe.h;
            let candidates = [y1 - th, y1 + line, y2 + 1, y2 - th - line];
            let free = candidates.iter().find_map(|&ty| {
                let area = self.tag_area(&text, x1, ty, scale, pad, w, h);
                taken.iter().all(|t| !t.overlaps(&area)).then_some(area)
            });
            if let Some(area) = free {
                taken.push(area);
                layout.tags.push(Tag {
                    text,
                    area,
                    bg: detection_color(d),
                });
            } else {
                layout.hidden_tags += 1;
            }
        }
        layout
    }

    /// The width of `text` at `scale`, in pixels.
    fn text_width(&self, text: &str, scale: f32) -> i32 {
        text_size(PxScale::from(scale), &self.font, text).0 as i32
    }

    /// The area of a tag with `text` whose top-left corner is wanted at `(x, y)`,
    /// moved inside the `w x h` image.
    #[allow(clippy::too_many_arguments)]
    fn tag_area(&self, text: &str, x: i32, y: i32, scale: f32, pad: i32, w: i32, h: i32) -> Area {
        let (tw, th) = text_size(PxScale::from(scale), &self.font, text);
        let (tw, th) = ((tw as i32 + 2 * pad).min(w), (th as i32 + 2 * pad).min(h));
        Area {
            x: x.clamp(0, (w - tw).max(0)),
            y: y.clamp(0, (h - th).max(0)),
            w: tw,
            h: th,
        }
    }

    /// Draws `text` with its top-left corner at `at`.
    fn text(&self, img: &mut RgbImage, text: &str, at: (i32, i32), color: Rgb<u8>, scale: f32) {
        draw_text_mut(
            img,
            self.paint(color),
            at.0,
            at.1,
            PxScale::from(scale),
            &self.font,
            text,
        );
    }

    /// Draws a filled tag.
    fn tag(&self, img: &mut RgbImage, tag: &Tag, scale: f32) {
        let a = tag.area;
        if a.w <= 0 || a.h <= 0 {
            return;
        }
        draw_filled_rect_mut(
            img,
            Rect::at(a.x, a.y).of_size(a.w as u32, a.h as u32),
            self.paint(tag.bg),
        );
        let pad = (scale * 0.2).ceil() as i32;
        self.text(
            img,
            &tag.text,
            (a.x + pad, a.y + pad),
            text_color(tag.bg),
            scale,
        );
    }

    /// Each track's trail: its recent box centres joined by lines in the track's
    /// colour, as wide as box outlines.
    pub fn draw_trails(&self, img: &mut RgbImage, trails: &[Trail]) {
        for trail in trails {
            let color = self.paint(track_color(trail.track_id));
            self.polyline(img, &trail.points, false, color);
        }
    }

    /// Zones and lines: their outlines, and a tag with their counts at their first
    /// point.
    pub fn draw_regions(&self, img: &mut RgbImage, regions: &[Region]) {
        let color = self.paint(REGION_COLOR);
        let scale = Self::text_px(img.width(), img.height());
        let (w, h) = (img.width() as i32, img.height() as i32);
        let pad = (scale * 0.2).ceil() as i32;
        for r in regions {
            self.polyline(img, &r.points, r.closed, color);
            if let Some(first) = r.points.first() {
                let area =
                    self.tag_area(&r.text, first[0] as i32, first[1] as i32, scale, pad, w, h);
                self.tag(
                    img,
                    &Tag {
                        text: r.text.clone(),
                        area,
                        bg: REGION_COLOR,
                    },
                    scale,
                );
            }
        }
    }

    /// `points` joined by lines as wide as box outlines (and the last to the first
    /// when `closed`).
    fn polyline(&self, img: &mut RgbImage, points: &[[f32; 2]], closed: bool, color: Rgb<u8>) {
        let line = Self::line_px(img.width(), img.height()) as i32;
        let closing = closed.then(|| [points[points.len() - 1], points[0]]);
        let segments = points.windows(2).map(|p| [p[0], p[1]]).chain(closing);
        for [a, b] in segments {
            for dy in -(line / 2)..=(line - 1) / 2 {
                for dx in -(line / 2)..=(line - 1) / 2 {
                    let (ox, oy) = (dx as f32, dy as f32);
                    imageproc::drawing::draw_line_segment_mut(
                        img,
                        (a[0] + ox, a[1] + oy),
                        (b[0] + ox, b[1] + oy),
                        color,
                    );
                }
            }
        }
    }

    /// A box's outline, `line` pixels wide, in its track's or class's colour.
    fn draw_box(&self, img: &mut RgbImage, d: &Detection, line: u32) {
        let [x1, y1, x2, y2] = box_pixels(d.bbox, img.width(), img.height());
        let color = self.paint(detection_color(d));
        let (w, h) = ((x2 - x1).max(0) as u32 + 1, (y2 - y1).max(0) as u32 + 1);
        for t in 0..line as i32 {
            let (rw, rh) = (w as i32 - 2 * t, h as i32 - 2 * t);
            if rw <= 0 || rh <= 0 {
                break;
            }
            imageproc::drawing::draw_hollow_rect_mut(
                img,
                Rect::at(x1 + t, y1 + t).of_size(rw as u32, rh as u32),
                color,
            );
        }
    }

    /// Blends the mask over the image (class 0, background, is left clear); a mask
    /// of another size is scaled to the image (nearest).
    fn blend_mask(&self, img: &mut RgbImage, mask: &[u8], width: usize, height: usize) {
        let (iw, ih) = (img.width() as usize, img.height() as usize);
        if width == 0 || height == 0 || mask.len() != width * height {
            return;
        }
        let a = self.style.mask_alpha.clamp(0.0, 1.0);
        for y in 0..ih {
            let my = y * height / ih;
            for x in 0..iw {
                let class = mask[my * width + x * width / iw] as usize;
                if class == 0 {
                    continue;
                }
                let c = self.paint(mask_color(class)).0;
                let p = img.get_pixel_mut(x as u32, y as u32);
                for (v, &m) in p.0.iter_mut().zip(&c) {
                    *v = (*v as f32 * (1.0 - a) + m as f32 * a).round() as u8;
                }
            }
        }
    }
}

/// A rectangle of pixels: `w x h` from `(x, y)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Area {
    /// Left column.
    pub x: i32,
    /// Top row.
    pub y: i32,
    /// Width.
    pub w: i32,
    /// Height.
    pub h: i32,
}

impl Area {
    /// One past the right column.
    pub fn right(&self) -> i32 {
        self.x + self.w
    }

    /// One past the bottom row.
    pub fn bottom(&self) -> i32 {
        self.y + self.h
    }

    /// Whether the two share a pixel.
    pub fn overlaps(&self, other: &Area) -> bool {
        self.x < other.right()
            && other.x < self.right()
            && self.y < other.bottom()
            && other.y < self.bottom()
    }
}

/// A filled label: its text, where it goes, and its colour.
#[derive(Debug, Clone, PartialEq)]
pub struct Tag {
    /// The text.
    pub text: String,
    /// Where the tag (text and padding) goes.
    pub area: Area,
    /// The fill colour (RGB).
    pub bg: Rgb<u8>,
}

/// The top-k banner: its lines with where each starts, and the panel behind them.
#[derive(Debug, Clone, PartialEq)]
pub struct Banner {
    /// Each line and its top-left corner.
    pub lines: Vec<(String, (i32, i32))>,
    /// The darkened panel.
    pub area: Area,
}

/// The mask legend: one tag per class, and the area they cover together.
#[derive(Debug, Clone, PartialEq)]
pub struct Legend {
    /// The entries, top to bottom.
    pub tags: Vec<Tag>,
    /// Their bounding box.
    pub area: Area,
}

/// Where everything drawn over a frame goes ([`Annotator::layout`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Layout {
    /// Text height in pixels.
    pub scale: f32,
    /// The top-k banner, if a head gave classes.
    pub banner: Option<Banner>,
    /// The mask legend, if a mask has classes other than background.
    pub legend: Option<Legend>,
    /// The box tags that have a free place.
    pub tags: Vec<Tag>,
    /// Box tags left out for want of a free place.
    pub hidden_tags: usize,
}

/// `lines` cut to at most `fit` (at least one): when they do not all fit, the last
/// shown says how many more there are.
fn fit_lines(mut lines: Vec<String>, fit: usize) -> Vec<String> {
    if lines.len() <= fit {
        return lines;
    }
    let shown = fit.saturating_sub(1);
    let more = lines.len() - shown;
    lines.truncate(shown);
    lines.push(format!("+{more} more"));
    lines
}

/// The smallest area holding all of `areas`.
fn bounding(areas: impl Iterator<Item = Area>) -> Option<Area> {
    areas.reduce(|a, b| {
        let (x, y) = (a.x.min(b.x), a.y.min(b.y));
        Area {
            x,
            y,
            w: a.right().max(b.right()) - x,
            h: a.bottom().max(b.bottom()) - y,
        }
    })
}

/// A box's corners in whole pixels inside a `width x height` image (non-finite
/// values as 0).
fn box_pixels(bbox: [f32; 4], width: u32, height: u32) -> [i32; 4] {
    let [x1, y1, x2, y2] = bbox.map(|v| if v.is_finite() { v } else { 0.0 });
    let (iw, ih) = (
        (width as f32 - 1.0).max(0.0),
        (height as f32 - 1.0).max(0.0),
    );
    [
        x1.clamp(0.0, iw) as i32,
        y1.clamp(0.0, ih) as i32,
        x2.clamp(0.0, iw) as i32,
        y2.clamp(0.0, ih) as i32,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(bbox: [f32; 4], class_id: usize) -> Detection {
        Detection {
            bbox,
            score: 0.87,
            class_id,
            label: "person".into(),
            track_id: None,
        }
    }

    #[test]
    fn boxes_get_their_class_colour_and_a_tag() {
        let mut img = RgbImage::from_pixel(200, 150, Rgb([10, 10, 10]));
        let boxes = HeadOutput::Detection {
            detections: vec![det([50.0, 60.0, 150.0, 140.0], 3)],
        };
        Annotator::default().draw(&mut img, &boxes);
        let c = class_color(3);
        assert_eq!(*img.get_pixel(100, 140), c, "bottom edge");
        assert_eq!(*img.get_pixel(50, 100), c, "left edge");
        assert_eq!(
            *img.get_pixel(100, 100),
            Rgb([10, 10, 10]),
            "inside stays clear"
        );
        // The tag sits above the box: filled with the class colour around the text.
        let tagged = (0..60)
            .filter(|&y| (50..90).any(|x| *img.get_pixel(x, y) == c))
            .count();
        assert!(tagged > 5, "no tag drawn above the box");
    }

    /// Drawing on BGR pixels with `order: Bgr` gives the RGB drawing, swapped.
    #[test]
    fn bgr_images_get_the_same_colours() {
        let swap = |img: &RgbImage| {
            let mut out = img.clone();
            out.pixels_mut().for_each(|p| p.0.reverse());
            out
        };
        let mut rgb = RgbImage::from_fn(120, 90, |x, y| Rgb([x as u8, y as u8, 200]));
        let mut bgr = swap(&rgb);
        let outputs = [
            HeadOutput::Segmentation {
                width: 4,
                height: 3,
                mask: vec![0, 15, 15, 0, 1, 1, 0, 0, 20, 20, 20, 0],
                areas: vec![ClassArea {
                    class_id: 15,
                    label: "person".into(),
                    pixels: 2,
                    fraction: 0.17,
                }],
            },
            HeadOutput::Detection {
                detections: vec![
                    det([10.0, 20.0, 80.0, 70.0], 3),
                    det([5.0, 5.0, 40.0, 30.0], 7),
                ],
            },
        ];
        let bgr_style = Style {
            order: ChannelOrder::Bgr,
            ..Style::default()
        };
        for o in &outputs {
            Annotator::default().draw(&mut rgb, o);
            Annotator::new(bgr_style.clone()).draw(&mut bgr, o);
        }
        assert_eq!(swap(&bgr), rgb);
    }

    #[test]
    fn odd_boxes_and_sizes_do_not_panic() {
        let a = Annotator::default();
        for (w, h) in [(1, 1), (16, 9), (3000, 2000)] {
            let mut img = RgbImage::new(w, h);
            a.draw(
                &mut img,
                &HeadOutput::Detection {
                    detections: vec![
                        det([-50.0, -50.0, 1e9, 1e9], 0),
                        det([5.0, 5.0, 5.0, 5.0], 1),
                        det([f32::NAN, 0.0, f32::INFINITY, 2.0], 2),
                        det([30.0, 30.0, 10.0, 10.0], 3),
                    ],
                },
            );
            a.draw(&mut img, &HeadOutput::Classification { top_k: vec![] });
        }
    }

    #[test]
    fn mask_is_blended_with_alpha_and_background_left_clear() {
        let mut img = RgbImage::from_pixel(4, 2, Rgb([100, 100, 100]));
        let mask = vec![0, 15, 15, 0, 0, 0, 1, 1];
        let a = Annotator::new(Style {
            legend: false,
            ..Style::default()
        });
        let seg = |mask: &Vec<u8>| HeadOutput::Segmentation {
            width: 4,
            height: 2,
            mask: mask.clone(),
            areas: vec![],
        };
        a.draw(&mut img, &seg(&mask));
        assert_eq!(*img.get_pixel(0, 0), Rgb([100, 100, 100]));
        let person = voc_color(15);
        let want = Rgb(person.map(|c| ((100.0 + c as f32) / 2.0).round() as u8));
        assert_eq!(*img.get_pixel(1, 0), want);
        // A mask of another size is scaled to the image (nearest).
        let mut big = RgbImage::from_pixel(8, 4, Rgb([100, 100, 100]));
        a.draw(&mut big, &seg(&mask));
        assert_eq!(*big.get_pixel(2, 1), want);
        assert_eq!(*big.get_pixel(0, 3), Rgb([100, 100, 100]));
    }

    #[test]
    fn banner_darkens_the_top_and_writes_text() {
        let mut img = RgbImage::from_pixel(300, 200, Rgb([200, 200, 200]));
        let top = vec![ClassScore {
            class_id: 1,
            label: "goldfish".into(),
            score: 0.9,
            logit: 3.0,
        }];
        Annotator::default().draw(&mut img, &HeadOutput::Classification { top_k: top });
        assert_eq!(*img.get_pixel(2, 2), Rgb([70, 70, 70]));
        // The panel is as wide as its text, not the whole image.
        assert_eq!(*img.get_pixel(299, 2), Rgb([200, 200, 200]));
        let white = (0..20)
            .flat_map(|y| (0..150).map(move |x| (x, y)))
            .filter(|&(x, y)| img.get_pixel(x, y).0[0] > 200)
            .count();
        assert!(white > 20, "no text in the banner");
        assert_eq!(*img.get_pixel(150, 150), Rgb([200, 200, 200]));
    }
}
