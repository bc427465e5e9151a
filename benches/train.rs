//! Criterion benchmarks of one cached training step of each built-in head
//! (`vpipe_train::benchmark`): the head's forward, loss, backward and AdamW update on
//! features computed once, from the reference checkpoints in `weights/reference/`,
//! batch 2 (`vpipe bench train` times batch 8, with or without the cache).
//!
//! `cargo bench --bench train`; threads follow `RAYON_NUM_THREADS`.

use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use vpipe_train::benchmark::BenchCase;

fn cached_steps(c: &mut Criterion) {
    let device = vpipe::core::device::default_device();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let image = vpipe::media::load_image(&root.join("tests/fixtures/image.png")).expect("image");
    for (name, weights) in [
        ("classification", "cvnets_mobilevit_xxs.pt"),
        ("ssd", "cvnets_ssd_mobilevit_xxs.pt"),
        ("deeplabv3", "cvnets_deeplabv3_mobilevit_xxs.pt"),
    ] {
        let path = root.join("weights/reference").join(weights);
        let mut case = BenchCase::new(&path, &image, 2, &device).expect("bench case");
        let features = case.features().expect("features");
        c.bench_function(&format!("train_step_cached_{name}_b2"), |b| {
            b.iter(|| case.step(&features).expect("step"))
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = cached_steps
}
criterion_main!(benches);
