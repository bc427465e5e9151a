//! The public head API: how a head plugs into the shared backbone.
//!
//! A head reads some of the backbone's feature maps ([`Head::levels`]), runs its own
//! layers ([`Head::forward`], raw tensors), and turns its raw outputs into vpipe's
//! common result type ([`Head::postprocess`], [`HeadOutput`]). Heads are built by a
//! [`HeadFactory`] from a [`HeadContext`], which hands out the head's weights
//! (with shape checks) and its options; a [`HeadRegistry`] maps the names used in
//! pipeline files (`type: ssd`) to factories. A crate of your own adds a head with
//! [`HeadRegistry::register`], without touching vpipe: see `examples/custom_head.rs`.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};
use vpipe_backbone::{BackboneError, Features, MobileVitConfig, Params, Result};
use vpipe_core::geometry::InputTransform;
use vpipe_core::result::HeadOutput;

use crate::classification::ClassificationHead;
use crate::detection::{SsdHead, SsdSettings};
use crate::model::RawTensor;
use crate::segmentation::{ASPP_RATES, DeepLabHead, UpsampleConvention};

/// A task head over the MobileViT feature maps.
pub trait Head: Send + Sync + fmt::Debug {
    /// The head type, as registered (e.g. `ssd`).
    fn kind(&self) -> &str;

    /// The backbone layers (1 to 5, i.e. output strides 2 to 32) the head reads.
    fn levels(&self) -> &[usize];

    /// Runs the head's layers on a batch; `input_size` is `[height, width]` of the
    /// network input.
    fn forward(&self, features: &Features, input_size: [usize; 2]) -> Result<Vec<RawTensor>>;

    /// Post-processes image `index` of the batch; `geometry` maps network-input pixels
    /// back to the original image.
    fn postprocess(
        &self,
        raw: &[RawTensor],
        index: usize,
        geometry: &InputTransform,
    ) -> Result<HeadOutput>;
}

/// What a factory gets to build a head.
#[derive(Debug)]
pub struct HeadContext<'a> {
    /// The head's weights, in the canonical naming (take each one exactly once).
    pub params: &'a mut Params,
    /// The backbone the head sits on.
    pub backbone: &'a MobileVitConfig,
    /// The head's options from the pipeline file (`{}` when none).
    pub options: &'a Map<String, Value>,
}

impl HeadContext<'_> {
    /// Option `key` as a number, or `default`.
    pub fn f64_option(&self, key: &str, default: f64) -> Result<f64> {
        match self.options.get(key) {
            None => Ok(default),
            Some(v) => v.as_f64().ok_or_else(|| {
                BackboneError::Input(format!("head option '{key}' must be a number, got {v}"))
            }),
        }
    }

    /// Option `key` as a non-negative integer, or `default`.
    pub fn usize_option(&self, key: &str, default: usize) -> Result<usize> {
        match self.options.get(key) {
            None => Ok(default),
            Some(v) => v.as_u64().map(|n| n as usize).ok_or_else(|| {
                BackboneError::Input(format!(
                    "head option '{key}' must be a whole number, got {v}"
                ))
            }),
        }
    }
}

/// Builds a head.
pub type HeadFactory = fn(&mut HeadContext<'_>) -> Result<Box<dyn Head>>;

/// Head types by name.
#[derive(Debug, Clone)]
pub struct HeadRegistry {
    factories: BTreeMap<String, HeadFactory>,
}

impl Default for HeadRegistry {
    fn default() -> Self {
        Self::with_builtins()
    }
}

impl HeadRegistry {
    /// A registry with no heads.
    pub fn empty() -> Self {
        Self {
            factories: BTreeMap::new(),
        }
    }

    /// A registry with vpipe's heads: `classification`, `ssd`, `deeplabv3`.
    pub fn with_builtins() -> Self {
        let mut r = Self::empty();
        r.factories
            .insert("classification".into(), build_classification);
        r.factories.insert("ssd".into(), build_ssd);
        r.factories.insert("deeplabv3".into(), build_deeplab);
        r
    }

    /// Registers a head type; fails if the name is taken.
    pub fn register(&mut self, name: &str, factory: HeadFactory) -> Result<()> {
        if self.factories.contains_key(name) {
            return Err(BackboneError::Input(format!(
                "head type '{name}' is already registered"
            )));
        }
        self.factories.insert(name.to_string(), factory);
        Ok(())
    }

    /// The registered names.
    pub fn names(&self) -> Vec<&str> {
        self.factories.keys().map(String::as_str).collect()
    }

    /// Builds a head of type `name`.
    pub fn build(&self, name: &str, ctx: &mut HeadContext<'_>) -> Result<Box<dyn Head>> {
        let factory = self.factories.get(name).ok_or_else(|| {
            BackboneError::Input(format!(
                "unknown head type '{name}' (known: {})",
                self.names().join(", ")
            ))
        })?;
        factory(ctx)
    }
}

fn output<'a>(raw: &'a [RawTensor], name: &str) -> Result<&'a RawTensor> {
    raw.iter()
        .find(|t| t.name == name)
        .ok_or_else(|| BackboneError::Input(format!("raw output '{name}' is missing")))
}

fn row(t: &RawTensor, index: usize) -> Result<&[f32]> {
    let per: usize = t.shape.iter().skip(1).product();
    t.data.get(index * per..(index + 1) * per).ok_or_else(|| {
        BackboneError::Input(format!("batch index {index} out of range for '{}'", t.name))
    })
}

fn build_classification(ctx: &mut HeadContext<'_>) -> Result<Box<dyn Head>> {
    let top_k = ctx.usize_option("top_k", 5)?;
    let head = ClassificationHead::load(ctx.params, ctx.backbone)?;
    Ok(Box::new(Classify { head, top_k }))
}

/// [`ClassificationHead`] as a [`Head`], with its top-k setting.
#[derive(Debug)]
struct Classify {
    head: ClassificationHead,
    top_k: usize,
}

impl Head for Classify {
    fn kind(&self) -> &str {
        "classification"
    }

    fn levels(&self) -> &[usize] {
        &[5]
    }

    fn forward(&self, features: &Features, _input_size: [usize; 2]) -> Result<Vec<RawTensor>> {
        Ok(vec![crate::model::to_raw(
            "logits",
            self.head.forward(features),
        )?])
    }

    fn postprocess(
        &self,
        raw: &[RawTensor],
        index: usize,
        _g: &InputTransform,
    ) -> Result<HeadOutput> {
        let logits = row(output(raw, "logits")?, index)?;
        let mut out = self.head.postprocess(logits, self.top_k);
        out.pop()
            .ok_or_else(|| BackboneError::Input("empty classification output".into()))
    }
}

fn build_ssd(ctx: &mut HeadContext<'_>) -> Result<Box<dyn Head>> {
    let d = SsdSettings::default();
    let settings = SsdSettings {
        conf_threshold: ctx.f64_option("conf_threshold", d.conf_threshold as f64)? as f32,
        nms_iou: ctx.f64_option("nms_iou", d.nms_iou as f64)? as f32,
        top_k: ctx.usize_option("top_k", d.top_k)?,
        max_detections: ctx.usize_option("max_detections", d.max_detections)?,
        ..d
    };
    Ok(Box::new(SsdHead::load(
        ctx.params,
        ctx.backbone.feature_channels(),
        settings,
    )?))
}

impl Head for SsdHead {
    fn kind(&self) -> &str {
        "ssd"
    }

    fn levels(&self) -> &[usize] {
        &[4, 5]
    }

    fn forward(&self, features: &Features, _input_size: [usize; 2]) -> Result<Vec<RawTensor>> {
        SsdHead::forward(self, features)
    }

    fn postprocess(
        &self,
        raw: &[RawTensor],
        index: usize,
        g: &InputTransform,
    ) -> Result<HeadOutput> {
        let conf = row(output(raw, "conf_logits")?, index)?;
        let loc = row(output(raw, "loc")?, index)?;
        let anchors: Vec<[f32; 4]> = output(raw, "anchors")?
            .data
            .chunks_exact(4)
            .map(|b| [b[0], b[1], b[2], b[3]])
            .collect();
        let (w, h) = g.input_size;
        let mut out = SsdHead::postprocess(self, conf, loc, &anchors, (w as f32, h as f32));
        if let HeadOutput::Detection { detections } = &mut out {
            for d in detections.iter_mut() {
                d.bbox = g.box_to_source(d.bbox);
            }
        }
        Ok(out)
    }
}

fn build_deeplab(ctx: &mut HeadContext<'_>) -> Result<Box<dyn Head>> {
    let upsample = match ctx.options.get("align_corners").and_then(Value::as_bool) {
        Some(false) => UpsampleConvention::HalfPixel,
        _ => UpsampleConvention::AlignCorners,
    };
    let in_ch = ctx.backbone.vit_stages[2].out_channels;
    Ok(Box::new(DeepLabHead::load(
        ctx.params, in_ch, ASPP_RATES, upsample,
    )?))
}

impl Head for DeepLabHead {
    fn kind(&self) -> &str {
        "deeplabv3"
    }

    fn levels(&self) -> &[usize] {
        &[5]
    }

    fn forward(&self, features: &Features, input_size: [usize; 2]) -> Result<Vec<RawTensor>> {
        DeepLabHead::forward(self, features, input_size)
    }

    fn postprocess(
        &self,
        raw: &[RawTensor],
        index: usize,
        g: &InputTransform,
    ) -> Result<HeadOutput> {
        let logits = output(raw, "logits")?;
        let (iw, ih) = g.input_size;
        let (w, h) = (g.src_width, g.src_height);
        let mask = self.mask_at(logits, index, [ih, iw], [h, w])?;
        Ok(DeepLabHead::postprocess(self, mask, w, h))
    }
}
