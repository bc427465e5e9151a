//! The public head API: how a head plugs into the shared backbone.
//!
//! A head reads some of the backbone's feature maps ([`Head::levels`]), runs its own
//! layers ([`Head::forward`], raw tensors), and turns its raw outputs into vpipe's
//! common result type ([`Head::postprocess`], [`HeadOutput`]). Heads are built by a
//! [`HeadFactory`] from a [`HeadContext`], which hands out the head's weights
//! (with shape checks) and its options; a [`HeadRegistry`] maps the names used in
//! pipeline files (`type: ssd`) to factories. A crate of your own adds a head with
//! [`HeadRegistry::register`], without touching vpipe: see `examples/custom-head/`.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use vpipe_backbone::layout::CheckpointTask;
use vpipe_backbone::{
    Features, MobileVitConfig, Params, SourceLayout, check_output_stride, default_output_stride,
    output_strides_in_words,
};
use vpipe_core::geometry::InputTransform;
use vpipe_core::result::HeadOutput;
use vpipe_core::suggest::closest;

use crate::classification::ClassificationHead;
use crate::detection::{SsdHead, SsdSettings};
use crate::error::{HeadError, Result};
use crate::model::RawTensor;
use crate::options;
use crate::segmentation::{ASPP_RATES, DeepLabHead, UpsampleConvention};
use crate::training::{
    ASPP_DROPOUT, CLASSIFIER_DROPOUT, Dropout, TrainOutput, TrainableHead, as_trainable,
};

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

    /// How many classes the head tells apart (a detector's background included),
    /// for a head that predicts classes; `None` by default.
    fn num_classes(&self) -> Option<usize> {
        None
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

    /// Draws `output`, a result of this head's own kind ([`HeadOutput::Custom`],
    /// as its [`Head::postprocess`] returned it), on an annotated frame: `image` is
    /// in RGB order, with vpipe's drawings of the other heads' results already on it.
    /// The default draws nothing; vpipe draws the built-in kinds itself.
    fn annotate(&self, output: &HeadOutput, image: &mut image::RgbImage) {
        let _ = (output, image);
    }

    /// The head's training hook, when it can be trained and was loaded in trainable
    /// form ([`crate::LoadOptions::trainable_head`], [`vpipe_backbone::Params::set_trainable`]);
    /// `None` by default. The built-in heads implement it; a head of your own opts in
    /// by implementing [`TrainableHead`].
    fn trainable(&mut self) -> Option<&mut dyn TrainableHead> {
        None
    }
}

/// What a factory gets to build a head.
#[derive(Debug)]
pub struct HeadContext<'a> {
    /// The head's weights: the checkpoint's tensors in the canonical naming, or a
    /// head-only file's under their own names (take each one it has).
    pub params: &'a mut Params,
    /// The backbone the head sits on.
    pub backbone: &'a MobileVitConfig,
    options: &'a Map<String, Value>,
    source: SourceLayout,
    known: RefCell<BTreeSet<String>>,
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
            known: RefCell::new(BTreeSet::new()),
        }
    }

    /// The layout of the checkpoint the weights come from (conventions such as
    /// DeepLab's upsampling differ between sources).
    pub fn source(&self) -> SourceLayout {
        self.source
    }

    /// The head's options, read into its own options type `T` (a serde struct; give
    /// its fields `#[serde(default)]` values for options that may be left out). A
    /// value of the wrong type is a [`HeadError::Option`] naming the option,
    /// which a pipeline reports at its file:line:col; keys that are none of `T`'s
    /// fields are a [`HeadError::UnknownOption`] from [`HeadRegistry::build`], with
    /// the closest field as a hint.
    pub fn options<T: DeserializeOwned>(&self) -> Result<T> {
        self.known
            .borrow_mut()
            .extend(options::field_names::<T>().iter().map(|f| f.to_string()));
        options::read(self.options)
    }

    /// An option whose value has the right type but is out of range: `key`'s value
    /// is not `expected` (in words, `a number from 0 to 1`); left out, it would be
    /// `default`.
    pub fn invalid_option(
        &self,
        key: &str,
        expected: &str,
        default: impl fmt::Display,
    ) -> HeadError {
        let found = self
            .options
            .get(key)
            .map_or_else(|| "nothing".to_string(), Value::to_string);
        HeadError::Option {
            key: key.to_string(),
            message: format!("expected {expected}"),
            help: Some(format!("got {found}; left out, it is {default}")),
        }
    }

    /// [`HeadError::UnknownOption`] for the first option given that the `head`
    /// head's options type does not have (a misspelt or unsupported key), with the
    /// closest option it has as a hint.
    fn check_unknown_options(&self, head: &str) -> Result<()> {
        let known = self.known.borrow();
        let Some(key) = self.options.keys().find(|k| !known.contains(k.as_str())) else {
            return Ok(());
        };
        let hint = if known.is_empty() {
            format!("the {head} head takes no options")
        } else {
            closest(key, known.iter().map(String::as_str)).map_or_else(
                || {
                    let names: Vec<&str> = known.iter().map(String::as_str).collect();
                    format!("options of {head}: {}", names.join(", "))
                },
                |c| format!("did you mean '{c}'?"),
            )
        };
        Err(HeadError::UnknownOption {
            key: key.clone(),
            head: head.to_string(),
            hint,
        })
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
            return Err(HeadError::AlreadyRegistered(name.to_string()));
        }
        self.factories.insert(name.to_string(), Arc::new(factory));
        Ok(())
    }

    /// The registered names.
    pub fn names(&self) -> Vec<&str> {
        self.factories.keys().map(String::as_str).collect()
    }

    /// Builds a head of type `name`; an option in `ctx` that the head's options
    /// type does not have is a [`HeadError::UnknownOption`].
    pub fn build(&self, name: &str, ctx: &mut HeadContext<'_>) -> Result<Box<dyn Head>> {
        let factory = self
            .factories
            .get(name)
            .ok_or_else(|| HeadError::UnknownType {
                name: name.to_string(),
                known: self.names().join(", "),
            })?;
        let head = factory(ctx)?;
        ctx.check_unknown_options(name)?;
        Ok(head)
    }
}

/// The raw output named `name` among a head's outputs (what its
/// [`Head::forward`] returned), for its [`Head::postprocess`].
pub fn output<'a>(raw: &'a [RawTensor], name: &str) -> Result<&'a RawTensor> {
    raw.iter()
        .find(|t| t.name == name)
        .ok_or_else(|| HeadError::RawOutput {
            name: name.to_string(),
            problem: "missing".into(),
        })
}

/// Image `index`'s part of a batched raw output (everything after the batch axis).
pub fn row(t: &RawTensor, index: usize) -> Result<&[f32]> {
    let per: usize = t.shape.iter().skip(1).product();
    t.data
        .get(index * per..(index + 1) * per)
        .ok_or_else(|| HeadError::RawOutput {
            name: t.name.clone(),
            problem: format!("no image {index} in the batch"),
        })
}

/// Options of the `classification` head.
#[derive(Debug, Deserialize)]
#[serde(default)]
struct ClassifyOptions {
    /// How many classes to report (at least 1).
    top_k: usize,
    /// Class names, one per class (default: ImageNet-1k's).
    labels: Option<Vec<String>>,
}

impl Default for ClassifyOptions {
    fn default() -> Self {
        Self {
            top_k: 5,
            labels: None,
        }
    }
}

/// Renames a head's classes with its `labels` option (`given`), which must name
/// each of them once.
fn relabel(
    ctx: &HeadContext<'_>,
    given: Option<Vec<String>>,
    labels: &mut Vec<String>,
) -> Result<()> {
    if let Some(given) = given {
        if given.len() != labels.len() {
            return Err(ctx.invalid_option(
                "labels",
                &format!("a list of {} class names, one per class", labels.len()),
                "the names of the checkpoint task's label set",
            ));
        }
        *labels = given;
    }
    Ok(())
}

fn build_classification(ctx: &mut HeadContext<'_>) -> Result<Box<dyn Head>> {
    let o: ClassifyOptions = ctx.options()?;
    if o.top_k < 1 {
        return Err(ctx.invalid_option(
            "top_k",
            "a whole number ≥ 1",
            ClassifyOptions::default().top_k,
        ));
    }
    let mut head = ClassificationHead::load(ctx.params, ctx.backbone)?;
    relabel(ctx, o.labels, head.labels_mut())?;
    Ok(Box::new(Classify {
        head,
        top_k: o.top_k,
    }))
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

    fn num_classes(&self) -> Option<usize> {
        Some(self.head.num_classes())
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
        out.pop().ok_or_else(|| HeadError::RawOutput {
            name: "logits".into(),
            problem: "no classes".into(),
        })
    }

    fn trainable(&mut self) -> Option<&mut dyn TrainableHead> {
        as_trainable(self)
    }
}

impl TrainableHead for Classify {
    fn params(&self) -> Vec<&vpipe_backbone::Param> {
        self.head.params()
    }

    fn params_mut(&mut self) -> Vec<&mut vpipe_backbone::Param> {
        self.head.params_mut()
    }

    fn train_forward(
        &self,
        features: &Features,
        _input_size: [usize; 2],
        dropout: &mut Dropout,
    ) -> Result<TrainOutput> {
        let pooled = dropout.elements(self.head.pooled(features), CLASSIFIER_DROPOUT);
        Ok(TrainOutput::Classification {
            logits: self.head.classify(pooled),
        })
    }
}

/// Options of the `ssd` head.
#[derive(Debug, Deserialize)]
#[serde(default)]
struct SsdOptions {
    /// Minimum class score of a detection, 0 to 1.
    conf_threshold: f32,
    /// IoU above which non-maximum suppression drops the lower-scored box, 0 to 1.
    nms_iou: f32,
    /// Candidates per class before suppression (at least 1).
    top_k: usize,
    /// Detections kept per image (at least 1).
    max_detections: usize,
    /// Class names, background first (default: COCO's 80 and the background).
    labels: Option<Vec<String>>,
}

impl Default for SsdOptions {
    fn default() -> Self {
        let d = SsdSettings::default();
        Self {
            conf_threshold: d.conf_threshold,
            nms_iou: d.nms_iou,
            top_k: d.top_k,
            max_detections: d.max_detections,
            labels: None,
        }
    }
}

fn build_ssd(ctx: &mut HeadContext<'_>) -> Result<Box<dyn Head>> {
    let o: SsdOptions = ctx.options()?;
    let d = SsdOptions::default();
    for (key, value, default) in [
        ("conf_threshold", o.conf_threshold, d.conf_threshold),
        ("nms_iou", o.nms_iou, d.nms_iou),
    ] {
        if !(0.0..=1.0).contains(&value) {
            return Err(ctx.invalid_option(key, "a number from 0 to 1", default));
        }
    }
    for (key, value, default) in [
        ("top_k", o.top_k, d.top_k),
        ("max_detections", o.max_detections, d.max_detections),
    ] {
        if value < 1 {
            return Err(ctx.invalid_option(key, "a whole number ≥ 1", default));
        }
    }
    let settings = SsdSettings {
        conf_threshold: o.conf_threshold,
        nms_iou: o.nms_iou,
        top_k: o.top_k,
        max_detections: o.max_detections,
        ..SsdSettings::default()
    };
    let mut head = SsdHead::load(ctx.params, ctx.backbone.feature_channels(), settings)?;
    relabel(ctx, o.labels, head.labels_mut())?;
    Ok(Box::new(head))
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

    fn num_classes(&self) -> Option<usize> {
        Some(SsdHead::num_classes(self))
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

    fn trainable(&mut self) -> Option<&mut dyn TrainableHead> {
        as_trainable(self)
    }
}

impl TrainableHead for SsdHead {
    fn params(&self) -> Vec<&vpipe_backbone::Param> {
        SsdHead::params(self)
    }

    fn params_mut(&mut self) -> Vec<&mut vpipe_backbone::Param> {
        SsdHead::params_mut(self)
    }

    fn train_forward(
        &self,
        features: &Features,
        _input_size: [usize; 2],
        _dropout: &mut Dropout,
    ) -> Result<TrainOutput> {
        let (conf_logits, loc, sizes) = self.outputs(features);
        Ok(TrainOutput::Detection {
            conf_logits,
            loc,
            anchors: self.anchors(&sizes),
        })
    }
}

/// Options of the `deeplabv3` head.
#[derive(Debug, Deserialize)]
#[serde(default)]
struct DeepLabOptions {
    /// Upsample the logits with align_corners = true (default: as the checkpoint's
    /// source does).
    align_corners: Option<bool>,
    /// The output stride of the backbone layer the head reads (default: the one
    /// segmentation checkpoints were trained at).
    stride: usize,
    /// Class names, one per class (default: PASCAL VOC's 21).
    labels: Option<Vec<String>>,
}

impl Default for DeepLabOptions {
    fn default() -> Self {
        Self {
            align_corners: None,
            stride: default_output_stride(CheckpointTask::Segmentation),
            labels: None,
        }
    }
}

fn build_deeplab(ctx: &mut HeadContext<'_>) -> Result<Box<dyn Head>> {
    let o: DeepLabOptions = ctx.options()?;
    // Hugging Face upsamples with align_corners = false, ml-cvnets with true.
    let default_align = ctx.source() != SourceLayout::HuggingFace;
    let upsample = if o.align_corners.unwrap_or(default_align) {
        UpsampleConvention::AlignCorners
    } else {
        UpsampleConvention::HalfPixel
    };
    if check_output_stride(o.stride).is_err() {
        return Err(ctx.invalid_option(
            "stride",
            &output_strides_in_words(),
            DeepLabOptions::default().stride,
        ));
    }
    let stride = o.stride;
    let in_ch = ctx.backbone.vit_stages[2].out_channels;
    let mut head = DeepLabHead::load(ctx.params, in_ch, ASPP_RATES, upsample)?;
    relabel(ctx, o.labels, head.labels_mut())?;
    Ok(Box::new(DeepLab { head, stride }))
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

    fn num_classes(&self) -> Option<usize> {
        Some(self.head.num_classes())
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

    fn trainable(&mut self) -> Option<&mut dyn TrainableHead> {
        as_trainable(self)
    }
}

impl TrainableHead for DeepLab {
    fn params(&self) -> Vec<&vpipe_backbone::Param> {
        self.head.params()
    }

    fn params_mut(&mut self) -> Vec<&mut vpipe_backbone::Param> {
        self.head.params_mut()
    }

    fn train_forward(
        &self,
        features: &Features,
        input_size: [usize; 2],
        dropout: &mut Dropout,
    ) -> Result<TrainOutput> {
        let aspp = dropout.channels(self.head.aspp(features), ASPP_DROPOUT);
        Ok(TrainOutput::Segmentation {
            logits: self.head.upsample(self.head.classify(aspp), input_size),
        })
    }
}
