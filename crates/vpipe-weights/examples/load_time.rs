//! Load time of a checkpoint against the same weights imported into vpipe's format:
//! `cargo run --release -p vpipe-weights --example load_time -- FILE [REPETITIONS]`.
//! Prints the median of the repetitions of `LoadedModel::load` for the original, the
//! f32 import and the f16 import.

use std::path::Path;
use std::time::Instant;

use vpipe_core::device::default_device;
use vpipe_heads::LoadedModel;
use vpipe_weights::{ImportOptions, import};

fn median_ms(path: &Path, reps: usize) -> Result<f64, Box<dyn std::error::Error>> {
    let device = default_device();
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        LoadedModel::load(path, &device)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[reps / 2])
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let src = args.next().ok_or("usage: load_time FILE [REPETITIONS]")?;
    let reps: usize = args
        .next()
        .map(|r| r.parse())
        .transpose()?
        .unwrap_or(9)
        .max(1);
    let src = Path::new(&src);
    let dir = std::env::temp_dir().join(format!("vpipe-load-time-{}", std::process::id()));
    let f32_out = dir.join("f32.safetensors");
    let f16_out = dir.join("f16.safetensors");
    import(src, &f32_out, &ImportOptions::default())?;
    import(
        src,
        &f16_out,
        &ImportOptions {
            f16: true,
            entry: None,
        },
    )?;
    for (what, path) in [
        ("original", src),
        ("vpipe f32", &f32_out),
        ("vpipe f16", &f16_out),
    ] {
        let size = std::fs::metadata(path)?.len();
        println!(
            "{what:<10} {:>6.1} ms median of {reps}  ({:.1} MB)  {}",
            median_ms(path, reps)?,
            size as f64 / 1e6,
            path.display()
        );
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
