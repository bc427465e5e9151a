//! `resize_rgb8(.., Filter::Bilinear, ResizeKernel::OpenCv)`, a reimplementation in
//! Rust, against the system OpenCV's own `cv::resize(.., INTER_LINEAR)` (through
//! the `opencv` crate), byte for byte: random sizes and contents, and the edge
//! cases (one pixel, one row or column, extreme aspect ratios, exact 2x, one axis
//! kept, the `cvnets-*` preset sizes).

use opencv::core::{Mat, MatTraitConst, MatTraitConstManual, Size, Vec3b};
use opencv::imgproc;
use vpipe_preprocess::resize::{Filter, ResizeKernel, resize_rgb8};

/// `cv::resize` of the 3-channel image `src` (`w x h`) to `out_w x out_h`, with
/// `INTER_LINEAR`, into a Mat that OpenCV allocates itself.
fn opencv_resize(src: &[u8], w: usize, h: usize, out_w: usize, out_h: usize) -> Vec<u8> {
    let input = Mat::new_rows_cols_with_bytes::<Vec3b>(h as i32, w as i32, src).expect("input");
    let mut output = Mat::default();
    imgproc::resize(
        &input,
        &mut output,
        Size::new(out_w as i32, out_h as i32),
        0.0,
        0.0,
        imgproc::INTER_LINEAR,
    )
    .expect("cv::resize");
    assert_eq!((output.cols(), output.rows()), (out_w as i32, out_h as i32));
    output.data_bytes().expect("continuous output").to_vec()
}

/// Pseudo-random numbers below `n` (xorshift64*, fixed seed).
struct Numbers(u64);

impl Numbers {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }

    /// A size in `1..=max`, small sizes more often.
    fn size(&mut self, max: usize) -> usize {
        let cap = [4, 16, 64, max][self.below(4)].min(max);
        1 + self.below(cap)
    }
}

/// The content of a `w x h` test image: random bytes, or (one case in eight each)
/// all 255 or a smooth ramp, which reach the extremes of the fixed-point sums.
fn content(next: &mut Numbers, w: usize, h: usize) -> Vec<u8> {
    let n = w * h * 3;
    match next.below(8) {
        0 => vec![255; n],
        1 => (0..n).map(|i| (i / 3 % 256) as u8).collect(),
        _ => (0..n).map(|_| next.below(256) as u8).collect(),
    }
}

/// `int(n * long / short)` sides of the `cvnets-cls` resize (shorter side `n`).
fn shorter_side(w: usize, h: usize, n: usize) -> (usize, usize) {
    if w <= h {
        (n, (n as f64 * h as f64 / w as f64) as usize)
    } else {
        ((n as f64 * w as f64 / h as f64) as usize, n)
    }
}

#[test]
fn bilinear_equals_opencv_cv_resize_byte_for_byte() {
    let mut next = Numbers(0x9e37_79b9_7f4a_7c15);
    let mut cases: Vec<(usize, usize, usize, usize)> = vec![
        (1, 1, 1, 1),
        (1, 1, 7, 5),
        (1, 1, 1, 300),
        (1, 9, 4, 1),
        (9, 1, 1, 4),
        (1, 300, 3, 17),
        (300, 1, 17, 3),
        (300, 7, 288, 288),
        (300, 7, 11, 2),
        (7, 300, 2, 11),
        (300, 7, 1234, 288),
        (7, 300, 288, 12_342),
        (2, 2, 1, 1),
        (40, 30, 20, 15),
        (41, 31, 20, 15),
        (20, 15, 40, 30),
        (64, 48, 32, 48),
        (64, 48, 64, 24),
        (64, 48, 64, 100),
        (64, 48, 13, 48),
        (600, 760, 288, 364),
        (517, 389, 382, 288),
        (768, 576, 320, 320),
        (768, 576, 512, 512),
        (1920, 1080, 512, 288),
        (1080, 1920, 288, 512),
    ];
    // The preset sizes from random sources.
    for _ in 0..60 {
        let (w, h) = (next.size(900), next.size(900));
        let (sw, sh) = shorter_side(w, h, 288);
        cases.push((w, h, sw, sh));
        cases.push((w, h, 320, 320));
        cases.push((w, h, 512, 512));
    }
    // Exact ratios: 2x down (INTER_AREA's path in OpenCV), 2x up, 3x, one axis kept.
    for _ in 0..40 {
        let (w, h) = (next.size(200), next.size(200));
        cases.push((2 * w, 2 * h, w, h));
        cases.push((w, h, 2 * w, 2 * h));
        cases.push((3 * w, 3 * h, w, h));
        cases.push((w, h, w, next.size(300)));
        cases.push((w, h, next.size(300), h));
    }
    // Random sizes, each axis up or down independently; thin strips.
    for _ in 0..400 {
        let (w, h) = (next.size(400), next.size(400));
        cases.push((w, h, next.size(400), next.size(400)));
    }
    for _ in 0..60 {
        let long = 1 + next.below(2000);
        let thin = 1 + next.below(3);
        let out_long = 1 + next.below(700);
        let out_thin = 1 + next.below(9);
        if next.below(2) == 0 {
            cases.push((long, thin, out_long, out_thin));
        } else {
            cases.push((thin, long, out_thin, out_long));
        }
    }

    let mut compared = 0;
    let mut worst = 0u8;
    let mut failures = Vec::new();
    for &(w, h, out_w, out_h) in &cases {
        let src = content(&mut next, w, h);
        let want = opencv_resize(&src, w, h, out_w, out_h);
        let got = resize_rgb8(
            &src,
            w,
            h,
            out_w,
            out_h,
            Filter::Bilinear,
            ResizeKernel::OpenCv,
        );
        assert_eq!(got.len(), want.len(), "{w}x{h} -> {out_w}x{out_h}");
        let diff = got
            .iter()
            .zip(&want)
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap_or(0);
        if diff != 0 {
            let first = got.iter().zip(&want).position(|(a, b)| a != b);
            failures.push(format!(
                "{w}x{h} -> {out_w}x{out_h}: max diff {diff}, first at byte {first:?}"
            ));
        }
        worst = worst.max(diff);
        compared += 1;
    }
    println!(
        "{compared} resizes compared with cv::resize, max |diff| {worst}, {} differ",
        failures.len()
    );
    assert!(compared >= 500);
    assert!(
        failures.is_empty(),
        "{} of {compared} differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Median milliseconds of `n` runs of `f`.
fn median_ms(n: usize, mut f: impl FnMut()) -> f64 {
    let mut times: Vec<f64> = (0..n)
        .map(|_| {
            let start = std::time::Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[n / 2]
}

/// The reimplementation's speed against `cv::resize` on the preset sizes (not a
/// check: `cargo test --release -p vpipe-media --test opencv_linear -- --ignored
/// --nocapture`).
#[test]
#[ignore = "timing, run by hand"]
fn bilinear_speed_against_opencv() {
    let threads = opencv::core::get_num_threads().expect("threads");
    for (w, h, out_w, out_h) in [
        (1920, 1080, 512, 288),
        (768, 576, 320, 320),
        (500, 375, 512, 512),
    ] {
        let src: Vec<u8> = (0..w * h * 3).map(|i| (i * 7919 % 251) as u8).collect();
        let ours = median_ms(500, || {
            let out = resize_rgb8(
                &src,
                w,
                h,
                out_w,
                out_h,
                Filter::Bilinear,
                ResizeKernel::OpenCv,
            );
            std::hint::black_box(out);
        });
        let theirs = median_ms(500, || {
            std::hint::black_box(opencv_resize(&src, w, h, out_w, out_h));
        });
        println!(
            "{w}x{h} -> {out_w}x{out_h}: vpipe {ours:.3} ms (1 thread), cv::resize {theirs:.3} ms ({threads} threads)"
        );
    }
}
