//! A head of your own on vpipe's shared backbone, from your own crate, all the way to
//! `vpipe run`: the `embedding` head.
//!
//! The head turns each frame into a compact embedding (for near-duplicate search,
//! shot-change detection or re-identification): it averages one backbone layer's
//! feature map over the image, projects it with a matrix of its own weights file
//! (`projection.weight`, `[dims, channels]`, the only tensor of a safetensors file)
//! and scales the result to unit length. Its result is a kind of its own,
//! `{"task": "embedding", "dims": D, "vector": [...]}` in `results.jsonl`, and its
//! annotation hook draws the vector as a strip of coloured cells along the bottom of
//! each annotated frame (red for positive components, blue for negative).
//!
//! [`write_random_projection`] makes the shipped weights: a seeded Gaussian random
//! projection, which keeps distances between pooled features up to a small
//! distortion (Johnson–Lindenstrauss); a projection learned on your data goes in the
//! same file format.
//!
//! [`registry`] is vpipe's head registry plus this head; `src/main.rs` hands it to
//! [`vpipe_cli::main_with`] and so gets the whole `vpipe` command line, and
//! `pipeline.yaml` uses the head next to vpipe's own `ssd` head on one backbone.
//!
//! [`sink::SqliteSink`] is a sink of this crate's own: a library run
//! ([`vpipe_pipeline::run_with_sinks`]) writes every frame's results into a SQLite
//! database next to the files the pipeline asks for.

pub mod sink;

use std::collections::HashMap;
use std::path::Path;

use burn::tensor::Tensor;
use image::{Rgb, RgbImage};
use imageproc::drawing::draw_filled_rect_mut;
use imageproc::rect::Rect;
use serde::{Deserialize, Serialize};
use vpipe_backbone::Features;
use vpipe_core::geometry::InputTransform;
use vpipe_core::result::{CustomOutput, HeadOutput};
use vpipe_heads::model::{RawTensor, to_raw};
use vpipe_heads::{Head, HeadContext, HeadError, HeadRegistry, Result, output, row};

/// The name of the projection tensor in the head's weights file.
pub const PROJECTION: &str = "projection.weight";

/// The head's options in a pipeline file (`options:` of a head of type `embedding`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct EmbeddingOptions {
    /// The backbone layer to pool, 1 to 5 (default 5, the deepest).
    pub layer: usize,
    /// Size of the embedding; the projection must be `[dims, channels of the layer]`.
    pub dims: usize,
    /// Side of one drawn cell in pixels (at least 2); `0` draws nothing.
    pub cell_px: u32,
}

impl Default for EmbeddingOptions {
    fn default() -> Self {
        Self {
            layer: 5,
            dims: 32,
            cell_px: 12,
        }
    }
}

/// The `embedding` result of one image.
#[derive(Debug, Clone, Serialize)]
pub struct Embedding {
    /// Size of the vector.
    pub dims: usize,
    /// The unit-length embedding.
    pub vector: Vec<f32>,
}

/// Average-pooled, projected, unit-length features of one backbone layer.
#[derive(Debug)]
pub struct EmbeddingHead {
    /// `[channels, dims]` (the file's `[dims, channels]`, transposed).
    projection: Tensor<2>,
    levels: [usize; 1],
    cell_px: u32,
}

impl EmbeddingHead {
    /// Builds the head from its options and its weights (the factory registered as
    /// `embedding`).
    pub fn build(ctx: &mut HeadContext<'_>) -> Result<Self> {
        let o: EmbeddingOptions = ctx.options()?;
        let d = EmbeddingOptions::default();
        if !(1..=5).contains(&o.layer) {
            return Err(ctx.invalid_option("layer", "a layer from 1 to 5", d.layer));
        }
        if o.dims < 1 {
            return Err(ctx.invalid_option("dims", "a whole number ≥ 1", d.dims));
        }
        if o.cell_px == 1 {
            return Err(ctx.invalid_option("cell_px", "0 or a whole number ≥ 2", d.cell_px));
        }
        let channels = ctx.backbone.feature_channels()[o.layer - 1];
        let w = ctx.params.take(PROJECTION, &[o.dims, channels])?;
        let projection: Tensor<2> = ctx.params.upload(w);
        Ok(Self {
            projection: projection.transpose(),
            levels: [o.layer],
            cell_px: o.cell_px,
        })
    }
}

impl Head for EmbeddingHead {
    fn kind(&self) -> &str {
        "embedding"
    }

    fn levels(&self) -> &[usize] {
        &self.levels
    }

    fn forward(&self, features: &Features, _input_size: [usize; 2]) -> Result<Vec<RawTensor>> {
        let x = features
            .layer(self.levels[0])
            .ok_or_else(|| {
                HeadError::Head(format!("the backbone has no layer {}", self.levels[0]))
            })?
            .clone();
        let [b, c, _, _] = x.dims();
        let pooled = x.mean_dim(3).mean_dim(2).reshape([b, c]);
        let v = pooled.matmul(self.projection.clone());
        let norm = v
            .clone()
            .powf_scalar(2.0)
            .sum_dim(1)
            .sqrt()
            .clamp_min(1e-12);
        Ok(vec![to_raw("embedding", v / norm)?])
    }

    fn postprocess(
        &self,
        raw: &[RawTensor],
        index: usize,
        _geometry: &InputTransform,
    ) -> Result<HeadOutput> {
        let vector = row(output(raw, "embedding")?, index)?.to_vec();
        let result = Embedding {
            dims: vector.len(),
            vector,
        };
        CustomOutput::new("embedding", &result)
            .map(HeadOutput::Custom)
            .map_err(HeadError::Head)
    }

    fn annotate(&self, output: &HeadOutput, image: &mut RgbImage) {
        let HeadOutput::Custom(out) = output else {
            return;
        };
        let Some(vector) = out.fields.get("vector").and_then(|v| v.as_array()) else {
            return;
        };
        let values: Vec<f32> = vector
            .iter()
            .filter_map(|v| v.as_f64())
            .map(|v| v as f32)
            .collect();
        for (rect, color) in strip(&values, self.cell_px, image.width(), image.height()) {
            draw_filled_rect_mut(image, rect, color);
        }
    }
}

/// The cells that draw `vector` along the bottom right of a `width x height`
/// image: one `cell` x `cell` square per component, left to right, wrapping into
/// rows above when the image is narrow; components of a unit vector are scaled by
/// `sqrt(dims)`, so that a typical one shows clearly.
pub fn strip(vector: &[f32], cell: u32, width: u32, height: u32) -> Vec<(Rect, Rgb<u8>)> {
    if cell == 0 || vector.is_empty() {
        return Vec::new();
    }
    let per_row = (width / cell).max(1) as usize;
    let rows = vector.len().div_ceil(per_row);
    let scale = (vector.len() as f32).sqrt() / 2.5;
    let used = per_row.min(vector.len()) as u32 * cell;
    let x0 = width.saturating_sub(used) as i32;
    let y0 = height as i32 - (rows as u32 * cell) as i32;
    vector
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let (r, c) = (i / per_row, i % per_row);
            let rect = Rect::at(x0 + (c as u32 * cell) as i32, y0 + (r as u32 * cell) as i32)
                .of_size(cell, cell);
            (rect, diverging(v * scale))
        })
        .collect()
}

/// White at 0, red towards +1, blue towards -1 (clamped).
pub fn diverging(t: f32) -> Rgb<u8> {
    let t = t.clamp(-1.0, 1.0);
    let fade = (255.0 * (1.0 - t.abs())).round() as u8;
    if t >= 0.0 {
        Rgb([255, fade, fade])
    } else {
        Rgb([fade, fade, 255])
    }
}

/// vpipe's head registry with the `embedding` head added.
pub fn registry() -> HeadRegistry {
    let mut r = HeadRegistry::with_builtins();
    r.register("embedding", |ctx| {
        Ok(Box::new(EmbeddingHead::build(ctx)?) as Box<dyn Head>)
    })
    .unwrap_or_else(|e| unreachable!("'embedding' is not a built-in head: {e}"));
    r
}

/// Writes a head weights file holding a `[dims, channels]` Gaussian random
/// projection (entries N(0, 1/dims), from `seed`) as [`PROJECTION`].
pub fn write_random_projection(
    path: &Path,
    dims: usize,
    channels: usize,
    seed: u64,
) -> std::io::Result<()> {
    let mut state = seed;
    let mut uniform = move || {
        // SplitMix64, then the top 53 bits as a number in (0, 1].
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    };
    let sigma = 1.0 / (dims as f64).sqrt();
    let data: Vec<f32> = (0..dims * channels)
        .map(|_| {
            // Box–Muller.
            let (u1, u2) = (uniform(), uniform());
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos() * sigma) as f32
        })
        .collect();
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![dims, channels], &bytes)
            .map_err(std::io::Error::other)?;
    let metadata = HashMap::from([(
        "description".to_string(),
        format!(
            "Gaussian random projection [{dims}, {channels}], seed {seed}, for the embedding head of examples/custom-head"
        ),
    )]);
    safetensors::serialize_to_file([(PROJECTION, view)], Some(metadata), path)
        .map_err(std::io::Error::other)
}
