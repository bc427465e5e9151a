//! Criterion benchmarks of the preprocessing presets on a 768x576 frame (the size of
//! the bundled sample video): the preset's resize (OpenCV's for `cvnets-*`, the exact
//! Pillow reimplementation for `timm`) and crop, then the planar float conversion.
//!
//! `cargo bench --bench preprocess`.

use criterion::{Criterion, criterion_group, criterion_main};
use vpipe::media::Frame;
use vpipe::preprocess::{PreprocessPreset, PresetRecipe};

fn presets(c: &mut Criterion) {
    let (width, height) = (768, 576);
    let data: Vec<u8> = (0..width * height * 3)
        .map(|i| ((i * 7919) % 251) as u8)
        .collect();
    let frame = Frame::new(width, height, data).expect("frame");
    for preset in [
        PreprocessPreset::CvnetsSsd,
        PreprocessPreset::Timm,
        PreprocessPreset::CvnetsSeg,
    ] {
        let recipe = preset.recipe();
        c.bench_function(&format!("preprocess_{}_768x576", preset.name()), |b| {
            b.iter(|| recipe.apply(&frame).expect("preprocess"))
        });
    }
}

criterion_group!(benches, presets);
criterion_main!(benches);
