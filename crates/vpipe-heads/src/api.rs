//! The public head API: how a head plugs into the shared backbone.
//!
//! A head reads some of the backbone's feature maps ([`Head::levels`]), runs its own
//! layers ([`Head::forward`], raw tensors), and turns its raw outputs into vpipe's
//! common result type ([`Head::postprocess`], [`HeadOutput`]). Heads are built by a
//! [`HeadFactory`] from a [`HeadContext`], which hands out the head's weights
//! (with shape checks) and its options; a [`HeadRegistry`] maps the names used in
//! pipeline files (`type: ssd`) to factories. A crate of your own adds a head with
//! [`HeadRegistry::register`], without touching vpipe: see `examples/custom_head.rs`.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use serde_json::{Map, Value};
use vpipe_backbone::{BackboneError, Features, MobileVitConfig, Params, Result, SourceLayout};
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

    /// `(layer, output stride)` pairs the head was built for: a pipeline refuses to
    /// put the head on a backbone whose layers have other strides. None by default.
    fn required_strides(&self) -> Vec<(usize, usize)> {
        Vec::new()
    }

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
    options: &'a Map<String, Value>,
    source: SourceLayout,
    read: RefCell<BTreeSet<String>>,
}

impl<'a> HeadContext<'a> {
    /// A context for building a head from `params` on `backbone`, with the head's
    /// options from the pipeline file (`{}` when none). The checkpoint source is
    /// taken from `params`.
    pub fn new(
        params: &'a mut Params,
        backbone: &'a MobileVitConfig,
        options: &'a Map<String, Value>,
    ) -> Self {
        let source = params.source();
        Self {
            params,
            backbone,
            options,
            source,
            read: RefCell::new(BTreeSet::new()),
        }
    }

    /// The layout of the checkpoint the weights come from (conventions such as
    /// DeepLab's upsampling differ between sources).
    pub fn source(&self) -> SourceLayout {
        self.source
    }

    /// Option `key`, if given.
    pub fn option(&self, key: &str) -> Option<&'a Value> {
        self.read.borrow_mut().insert(key.to_string());
        self.options.get(key)
    }

    /// Options that the factory never asked for: misspelt or unsupported keys.
    pub fn unread_options(&self) -> Vec<String> {
        let read = self.read.borrow();
        self.options
            .keys()
            .filter(|k| !read.contains(k.as_str()))
            .cloned()
            .collect()
    }

    /// The option names the factory asked for so far.
    pub fn read_options(&self) -> Vec<String> {
        self.read.borrow().iter().cloned().collect()
    }

    /// Option `key` as a number in `range`, or `default`.
    pub fn f64_option(
        &self,
        key: &str,
        default: f64,
        range: std::ops::RangeInclusive<f64>,
    ) -> Result<f64> {
        let expected = || format!("a number from {} to {}", range.start(), range.end());
        match self.option(key) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .filter(|x| range.contains(x))
                .ok_or_else(|| option_error(key, expected(), v, default)),
        }
    }

    /// Option `key` as a whole number of at least `min`, or `default`.
    pub fn usize_option(&self, key: &str, default: usize, min: usize) -> Result<usize> {
        match self.option(key) {
            None => Ok(default),
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .filter(|&n| n >= min)
                .ok_or_else(|| option_error(key, format!("a whole number ≥ {min}"), v, default)),
        }
    }

    /// Option `key` as one of `allowed`, or `default`.
    pub fn choice_option(&self, key: &str, default: usize, allowed: &[usize]) -> Result<usize> {
        match self.option(key) {
            None => Ok(default),
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .filter(|n| allowed.contains(n))
                .ok_or_else(|| {
                    let names: Vec<String> = allowed.iter().map(usize::to_string).collect();
                    let expected = match names.split_last() {
                        Some((last, rest)) if !rest.is_empty() => {
                            format!("{} or {last}", rest.join(", "))
                        }
                        _ => names.join(""),
                    };
                    option_error(key, expected, v, default)
                }),
        }
    }

    /// Option `key` as true or false, or `default`.
    pub fn bool_option(&self, key: &str, default: bool) -> Result<bool> {
        match self.option(key) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| option_error(key, "true or false".into(), v, default)),
        }
    }
}

/// The error of an option whose value `found` is not what the head accepts.
fn option_error(
    key: &str,
    expected: String,
    found: &Value,
    default: impl fmt::Display,
) -> BackboneError {
    BackboneError::HeadOption {
        key: key.to_string(),
        expected,
        found: found.to_string(),
        default: default.to_string(),
    }
}

/// Builds a head. A closure, so a factory can carry state of its own (a model
/// path, a lookup table, a counter shared with the caller).
pub type HeadFactory = Arc<dyn Fn(&mut HeadContext<'_>) -> Result<Box<dyn Head>> + Send + Sync>;

/// Head types by name.
#[derive(Clone)]
pub struct HeadRegistry {
    factories: BTreeMap<String, HeadFactory>,
}

impl fmt::Debug for HeadRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeadRegistry")
            .field("types", &self.names())
            .finish()
    }
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
            .insert("classification".into(), Arc::new(build_classification));
        r.factories.insert("ssd".into(), Arc::new(build_ssd));
        r.factories
            .insert("deeplabv3".into(), Arc::new(build_deeplab));
        r
    }

    /// Registers a head type built by `factory`; fails if the name is taken.
    pub fn register(
        &mut self,
        name: &str,
        factory: impl Fn(&mut HeadContext<'_>) -> Result<Box<dyn Head>> + Send + Sync + 'static,
    ) -> Result<()> {
        if self.factories.contains_key(name) {
            return Err(BackboneError::Input(format!(
                "head type '{name}' is already registered"
            )));
        }
        self.factories.insert(name.to_string(), Arc::new(factory));
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

/// The raw output named `name` among a head's outputs (what its
/// [`Head::forward`] returned), for its [`Head::postprocess`].
pub fn output<'a>(raw: &'a [RawTensor], name: &str) -> Result<&'a RawTensor> {
    raw.iter()
        .find(|t| t.name == name)
        .ok_or_else(|| BackboneError::Input(format!("raw output '{name}' is missing")))
}

/// Image `index`'s part of a batched raw output (everything after the batch axis).
pub fn row(t: &RawTensor, index: usize) -> Result<&[f32]> {
    let per: usize = t.shape.iter().skip(1).product();
    t.data.get(index * per..(index + 1) * per).ok_or_else(|| {
        BackboneError::Input(format!("batch index {index} out of range for '{}'", t.name))
    })
}

fn build_classification(ctx: &mut HeadContext<'_>) -> Result<Box<dyn Head>> {
    let top_k = ctx.usize_option("top_k", 5, 1)?;
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

    fn required_strides(&self) -> Vec<(usize, usize)> {
        vec![(5, 32)]
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
        conf_threshold: ctx.f64_option("conf_threshold", d.conf_threshold as f64, 0.0..=1.0)?
            as f32,
        nms_iou: ctx.f64_option("nms_iou", d.nms_iou as f64, 0.0..=1.0)? as f32,
        top_k: ctx.usize_option("top_k", d.top_k, 1)?,
        max_detections: ctx.usize_option("max_detections", d.max_detections, 1)?,
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

    fn required_strides(&self) -> Vec<(usize, usize)> {
        vec![(4, 16), (5, 32)]
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
    // Hugging Face upsamples with align_corners = false, ml-cvnets with true.
    let default_align = ctx.source() != SourceLayout::HuggingFace;
    let upsample = if ctx.bool_option("align_corners", default_align)? {
        UpsampleConvention::AlignCorners
    } else {
        UpsampleConvention::HalfPixel
    };
    let stride = ctx.choice_option("stride", 16, &vpipe_backbone::OUTPUT_STRIDES)?;
    let in_ch = ctx.backbone.vit_stages[2].out_channels;
    Ok(Box::new(DeepLab {
        head: DeepLabHead::load(ctx.params, in_ch, ASPP_RATES, upsample)?,
        stride,
    }))
}

/// [`DeepLabHead`] as a [`Head`], with the backbone stride it expects.
#[derive(Debug)]
struct DeepLab {
    head: DeepLabHead,
    stride: usize,
}

impl Head for DeepLab {
    fn kind(&self) -> &str {
        "deeplabv3"
    }

    fn levels(&self) -> &[usize] {
        &[5]
    }

    fn required_strides(&self) -> Vec<(usize, usize)> {
        vec![(5, self.stride)]
    }

    fn forward(&self, features: &Features, input_size: [usize; 2]) -> Result<Vec<RawTensor>> {
        self.head.forward(features, input_size)
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
        let mask = self.head.mask_at(logits, index, [ih, iw], [h, w])?;
        Ok(self.head.postprocess(mask, w, h))
    }
}
