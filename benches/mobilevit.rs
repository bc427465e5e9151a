//! Criterion benchmarks of the MobileViT networks (synthetic weights): classification
//! at 256, SSDLite detection at 320 and DeepLabv3 segmentation at 512, batch 1.
//!
//! `cargo bench --bench mobilevit`; threads follow `RAYON_NUM_THREADS`.

use burn::tensor::{Tensor, TensorData};
use criterion::{Criterion, criterion_group, criterion_main};
use vpipe::backbone::MobileVitSize;
use vpipe::backbone::layout::CheckpointTask;
use vpipe::heads::Model;

fn networks(c: &mut Criterion) {
    let device = vpipe::core::device::default_device();
    for (task, size, name) in [
        (CheckpointTask::Classification, 256, "cls"),
        (CheckpointTask::Detection, 320, "ssd"),
        (CheckpointTask::Segmentation, 512, "deeplabv3"),
    ] {
        for arch in [MobileVitSize::Xxs, MobileVitSize::S] {
            let model = Model::synthetic(task, arch, &device).expect("synthetic model");
            let n = 3 * size * size;
            let data: Vec<f32> = (0..n).map(|i| (i % 255) as f32 / 255.0).collect();
            let input = Tensor::<4>::from_data(TensorData::new(data, [1, 3, size, size]), &device);
            c.bench_function(&format!("{}_{name}_{size}_b1", arch.arch_name()), |b| {
                b.iter(|| model.forward_raw(input.clone()).expect("forward"))
            });
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = networks
}
criterion_main!(benches);
