//! Criterion benchmarks of the MobileViT networks (synthetic weights).
//!
//! `cargo bench --bench mobilevit`; threads follow `RAYON_NUM_THREADS`.

use burn::tensor::{Tensor, TensorData};
use criterion::{Criterion, criterion_group, criterion_main};
use vpipe::backbone::{MobileVit, MobileVitConfig, MobileVitSize, Params};
use vpipe::heads::ClassificationHead;

fn classification(c: &mut Criterion) {
    let device = vpipe::core::device::default_device();
    for size in MobileVitSize::ALL {
        let config = MobileVitConfig::new(size);
        let mut params = Params::synthetic(7, &device);
        let backbone = MobileVit::load(&mut params, &config).expect("synthetic backbone");
        let head = ClassificationHead::load(&mut params, &config).expect("synthetic head");
        let n = 3 * 256 * 256;
        let data: Vec<f32> = (0..n).map(|i| (i % 255) as f32 / 255.0).collect();
        let input = Tensor::<4>::from_data(TensorData::new(data, [1, 3, 256, 256]), &device);
        c.bench_function(&format!("{}_cls_256_b1", size.arch_name()), |b| {
            b.iter(|| {
                let f = backbone.forward(input.clone()).expect("forward");
                head.forward(&f).into_data()
            })
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = classification
}
criterion_main!(benches);
