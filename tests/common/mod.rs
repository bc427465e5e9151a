//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use vpipe::backbone::kernels::{Kernels, set_cpu_kernels};
use vpipe::core::HostTensor;
use vpipe::core::device::DeviceSpec;
use vpipe::io::npy;
use vpipe::preprocess::resize::{Filter, ResizeKernel};
use vpipe::preprocess::{ChannelOrder, Preprocess, PreprocessPreset, PresetRecipe};

/// The device the parity tests run on: `VPIPE_TEST_DEVICE` (`cpu`, `vulkan`,
/// `cuda:0`, ...; the backend's cargo feature must be on), else the CPU. On the CPU,
/// `VPIPE_TEST_KERNELS=generic` makes the layers take burn's generic ops instead of
/// the fused CPU kernels (see [`rerun_through_generic_kernels`]); on any other
/// device they always do, so the same tests check that path against the references.
pub fn test_device() -> Device {
    if let Ok(kernels) = std::env::var("VPIPE_TEST_KERNELS") {
        let kernels: Kernels = kernels
            .parse()
            .unwrap_or_else(|e| panic!("VPIPE_TEST_KERNELS: {e}"));
        set_cpu_kernels(kernels);
    }
    let name = std::env::var("VPIPE_TEST_DEVICE").unwrap_or_else(|_| "cpu".into());
    name.parse::<DeviceSpec>()
        .and_then(DeviceSpec::device)
        .unwrap_or_else(|e| panic!("VPIPE_TEST_DEVICE: {e}"))
}

/// Runs this test binary's other tests again in a child process whose models take
/// burn's generic ops on the CPU (`VPIPE_TEST_KERNELS=generic`): the path every GPU
/// backend takes, checked against the same references without a GPU. `this_test`
/// is the calling test's name, skipped in the child. Does nothing inside that child.
pub fn rerun_through_generic_kernels(this_test: &str) {
    if std::env::var_os("VPIPE_TEST_KERNELS").is_some() {
        return;
    }
    let exe = std::env::current_exe().expect("test binary path");
    let out = std::process::Command::new(exe)
        .args(["--skip", this_test, "--test-threads", "1", "--nocapture"])
        .env("VPIPE_TEST_KERNELS", "generic")
        .output()
        .expect("rerun the test binary");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(
        out.status.success(),
        "the tests fail through burn's generic ops"
    );
    assert!(
        text.contains("test result: ok") && !text.contains(" 0 passed"),
        "no test ran through burn's generic ops"
    );
}

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A file under `tests/fixtures/`.
pub fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures").join(name)
}

/// A file under `weights/reference/`.
pub fn weights(name: &str) -> PathBuf {
    root().join("weights/reference").join(name)
}

/// Reads a float32 .npy fixture.
pub fn read_f32(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let a = npy::read(path).expect("fixture");
    let d = a.to_f32("fixture").expect("f32 fixture");
    (a.shape, d)
}

/// Reads an NCHW input fixture as a tensor.
pub fn input_tensor(name: &str) -> Tensor<4> {
    let (s, d) = read_f32(&fixture(name));
    Tensor::from_data(TensorData::new(d, [s[0], s[1], s[2], s[3]]), &test_device())
}

/// The preprocessing that made the cvnets fixtures' inputs (`image.png` through
/// ml-cvnets v0.2's PIL pipeline: RGB, Pillow bilinear, bicubic for SSD). The
/// fixtures test the networks on those tensors; the `cvnets-*` presets follow v0.1
/// (OpenCV, BGR) instead, as the released weights were trained.
pub fn cvnets_fixture_recipe(preset: PreprocessPreset) -> Preprocess {
    Preprocess {
        kernel: ResizeKernel::Pillow,
        channels: ChannelOrder::Rgb,
        filter: if preset == PreprocessPreset::CvnetsSsd {
            Filter::Bicubic
        } else {
            Filter::Bilinear
        },
        ..preset.recipe()
    }
}

/// Largest absolute difference; fails on a length mismatch or a non-finite value.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    vpipe::io::compare::max_abs_diff(a, b).unwrap_or_else(|e| panic!("{e}"))
}

/// Writes tensors as a safetensors file (F32 only).
pub fn write_safetensors(path: &Path, tensors: &BTreeMap<String, HostTensor>) {
    let mut header = String::from("{");
    let mut body = Vec::new();
    for (i, (name, t)) in tensors.iter().enumerate() {
        let start = body.len();
        for v in &t.data {
            body.extend_from_slice(&v.to_le_bytes());
        }
        if i > 0 {
            header.push(',');
        }
        header.push_str(&format!(
            "\"{name}\":{{\"dtype\":\"F32\",\"shape\":{:?},\"data_offsets\":[{start},{}]}}",
            t.shape,
            body.len()
        ));
    }
    header.push('}');
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&body);
    std::fs::write(path, out).expect("write safetensors");
}

/// A fresh temporary folder for one test, removed when the guard drops.
pub fn temp_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("vpipe-test-{name}-"))
        .tempdir()
        .expect("temp dir")
}
