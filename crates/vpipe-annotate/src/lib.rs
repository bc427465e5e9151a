//! Drawing results on images, with `imageproc`.
//!
//! - detections: a box per object and a filled tag with its label and score;
//! - segmentation: the mask blended over the image with an alpha, and a legend of
//!   the classes present;
//! - classification: a banner with the top-k classes.
//!
//! Colours are stable per class (the PASCAL VOC palette for segmentation, a fixed
//! high-contrast palette for other heads). Line widths and text sizes follow the
//! image size, so that annotations stay readable on small and large frames. The
//! font (DejaVu Sans Bold, Bitstream Vera licence in `fonts/LICENSE-DejaVu.txt`) is
//! embedded in the binary.

use ab_glyph::{FontRef, PxScale};
use image::{Rgb, RgbImage};
use imageproc::drawing::{draw_filled_rect_mut, draw_text_mut, text_size};
use imageproc::rect::Rect;
use vpipe_core::labels::voc_color;
use vpipe_core::pixel::ChannelOrder;
use vpipe_core::result::{ClassArea, ClassScore, Detection, HeadOutput};

/// The embedded font.
const FONT_BYTES: &[u8] = include_bytes!("../fonts/DejaVuSans-Bold.ttf");

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

    /// Text height in pixels for an image: about 2 % of its shorter side, at least 11.
    fn text_px(img: &RgbImage) -> f32 {
        (img.width().min(img.height()) as f32 * 0.02).max(11.0)
    }

    /// Box line width in pixels: about 0.3 % of the shorter side, at least 2.
    fn line_px(img: &RgbImage) -> u32 {
        ((img.width().min(img.height()) as f32 * 0.003).round() as u32).max(2)
    }

    /// Draws one head's output.
    pub fn draw(&self, img: &mut RgbImage, output: &HeadOutput) {
        match output {
            HeadOutput::Classification { top_k } => self.draw_banner(img, top_k),
            HeadOutput::Detection { detections } => self.draw_detections(img, detections),
            HeadOutput::Segmentation {
                width,
                height,
                mask,
                areas,
            } => self.draw_mask(img, mask, *width, *height, areas),
        }
    }

    /// A filled tag with `text` whose top-left corner is at `(x, y)` (kept inside the image).
    fn tag(&self, img: &mut RgbImage, x: i32, y: i32, text: &str, bg: Rgb<u8>, scale: f32) {
        let (tw, th) = text_size(PxScale::from(scale), &self.font, text);
        let pad = (scale * 0.2).ceil() as i32;
        let (w, h) = (tw as i32 + 2 * pad, th as i32 + 2 * pad);
        let x = x.clamp(0, (img.width() as i32 - w).max(0));
        let y = y.clamp(0, (img.height() as i32 - h).max(0));
        draw_filled_rect_mut(
            img,
            Rect::at(x, y).of_size(w as u32, h as u32),
            self.paint(bg),
        );
        draw_text_mut(
            img,
            self.paint(text_color(bg)),
            x + pad,
            y + pad,
            PxScale::from(scale),
            &self.font,
            text,
        );
    }

    /// Boxes with a tag `label score` above each (inside the box when there is no room).
    pub fn draw_detections(&self, img: &mut RgbImage, detections: &[Detection]) {
        let scale = Self::text_px(img);
        let line = Self::line_px(img) as i32;
        let (iw, ih) = (img.width() as f32, img.height() as f32);
        for d in detections {
            let [x1, y1, x2, y2] = d.bbox.map(|v| if v.is_finite() { v } else { 0.0 });
            let (x1, x2) = (
                x1.clamp(0.0, iw - 1.0) as i32,
                x2.clamp(0.0, iw - 1.0) as i32,
            );
            let (y1, y2) = (
                y1.clamp(0.0, ih - 1.0) as i32,
                y2.clamp(0.0, ih - 1.0) as i32,
            );
            let color = class_color(d.class_id);
            let (w, h) = ((x2 - x1).max(0) as u32 + 1, (y2 - y1).max(0) as u32 + 1);
            for t in 0..line {
                let (rw, rh) = (w as i32 - 2 * t, h as i32 - 2 * t);
                if rw <= 0 || rh <= 0 {
                    break;
                }
                imageproc::drawing::draw_hollow_rect_mut(
                    img,
                    Rect::at(x1 + t, y1 + t).of_size(rw as u32, rh as u32),
                    self.paint(color),
                );
            }
            let text = format!("{} {:.0}%", d.label, d.score * 100.0);
            let (_, th) = text_size(PxScale::from(scale), &self.font, &text);
            let tag_h = th as i32 + 2 * (scale * 0.2).ceil() as i32;
            let ty = if y1 - tag_h >= 0 { y1 - tag_h } else { y1 };
            self.tag(img, x1, ty, &text, color, scale);
        }
    }

    /// Blends the mask over the image (class 0, background, is left clear) and draws
    /// a legend of the classes present in the bottom-left corner.
    pub fn draw_mask(
        &self,
        img: &mut RgbImage,
        mask: &[u8],
        width: usize,
        height: usize,
        areas: &[ClassArea],
    ) {
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
        if !self.style.legend {
            return;
        }
        let scale = Self::text_px(img);
        let row = (scale * 1.4).ceil() as i32;
        let present: Vec<&ClassArea> = areas.iter().filter(|c| c.class_id != 0).collect();
        let mut y = img.height() as i32 - row * present.len() as i32 - row / 2;
        for c in present {
            let text = format!("{} {:.0}%", c.label, c.fraction * 100.0);
            self.tag(img, row / 2, y, &text, mask_color(c.class_id), scale);
            y += row;
        }
    }

    /// A banner along the top with the top-k classes, best first.
    pub fn draw_banner(&self, img: &mut RgbImage, top_k: &[ClassScore]) {
        let scale = Self::text_px(img);
        let row = (scale * 1.4).ceil() as i32;
        let h = (row * top_k.len() as i32 + row / 2).min(img.height() as i32);
        if h <= 0 {
            return;
        }
        // Darken the strip so that white text reads on any photo.
        for y in 0..h as u32 {
            for x in 0..img.width() {
                let p = img.get_pixel_mut(x, y);
                p.0 = p.0.map(|v| (v as f32 * 0.35) as u8);
            }
        }
        for (i, c) in top_k.iter().enumerate() {
            let text = format!("{:.1}%  {}", c.score * 100.0, c.label);
            draw_text_mut(
                img,
                Rgb([255, 255, 255]),
                row / 2,
                row / 4 + i as i32 * row,
                PxScale::from(scale),
                &self.font,
                &text,
            );
        }
    }
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
        }
    }

    #[test]
    fn boxes_get_their_class_colour_and_a_tag() {
        let mut img = RgbImage::from_pixel(200, 150, Rgb([10, 10, 10]));
        Annotator::default().draw_detections(&mut img, &[det([50.0, 60.0, 150.0, 140.0], 3)]);
        let c = class_color(3);
        assert_eq!(*img.get_pixel(100, 139), c, "bottom edge");
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
            a.draw_detections(
                &mut img,
                &[
                    det([-50.0, -50.0, 1e9, 1e9], 0),
                    det([5.0, 5.0, 5.0, 5.0], 1),
                    det([f32::NAN, 0.0, f32::INFINITY, 2.0], 2),
                    det([30.0, 30.0, 10.0, 10.0], 3),
                ],
            );
            a.draw_banner(&mut img, &[]);
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
        a.draw_mask(&mut img, &mask, 4, 2, &[]);
        assert_eq!(*img.get_pixel(0, 0), Rgb([100, 100, 100]));
        let person = voc_color(15);
        let want = Rgb(person.map(|c| ((100.0 + c as f32) / 2.0).round() as u8));
        assert_eq!(*img.get_pixel(1, 0), want);
        // A mask of another size is scaled to the image (nearest).
        let mut big = RgbImage::from_pixel(8, 4, Rgb([100, 100, 100]));
        a.draw_mask(&mut big, &mask, 4, 2, &[]);
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
        Annotator::default().draw_banner(&mut img, &top);
        assert_eq!(*img.get_pixel(299, 2), Rgb([70, 70, 70]));
        let white = (0..20)
            .flat_map(|y| (0..150).map(move |x| (x, y)))
            .filter(|&(x, y)| img.get_pixel(x, y).0[0] > 200)
            .count();
        assert!(white > 20, "no text in the banner");
        assert_eq!(*img.get_pixel(150, 150), Rgb([200, 200, 200]));
    }
}
