//! Checkpoint layouts: which library wrote a checkpoint, for which task and size,
//! and how its tensor names map onto the canonical ml-cvnets naming.
//!
//! | source | example key |
//! |---|---|
//! | Apple ml-cvnets | `conv_1.block.conv.weight` (`encoder.` prefix in detection and segmentation models) |
//! | timm | `stem.conv.weight` |
//! | Hugging Face transformers | `mobilevit.conv_stem.convolution.weight`, separate query/key/value |
//!
//! Hugging Face's separate `query`, `key` and `value` projections are fused into one
//! `qkv_proj` (rows ordered q, k, v) as in ml-cvnets and timm.

use std::collections::BTreeMap;
use std::fmt;

use vpipe_core::HostTensor;
use vpipe_io::TensorFile;

use crate::config::MobileVitSize;
use crate::error::{BackboneError, Result};

/// The library whose naming a checkpoint uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceLayout {
    /// Apple ml-cvnets (`.pt` state dicts, and safetensors copies of them).
    Cvnets,
    /// timm (`mobilevit_*.cvnets_in1k`).
    Timm,
    /// Hugging Face transformers (`apple/mobilevit-*`, `apple/deeplabv3-mobilevit-*`).
    HuggingFace,
}

impl SourceLayout {
    /// Every layout.
    pub const ALL: [SourceLayout; 3] = [
        SourceLayout::Cvnets,
        SourceLayout::Timm,
        SourceLayout::HuggingFace,
    ];

    /// Short name used in configs and messages.
    pub fn name(self) -> &'static str {
        match self {
            SourceLayout::Cvnets => "cvnets",
            SourceLayout::Timm => "timm",
            SourceLayout::HuggingFace => "huggingface",
        }
    }

    /// The layout called `name` (see [`SourceLayout::name`]).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// The safetensors metadata key under which a file in canonical naming (vpipe's own
/// weights format) records the layout its tensors were converted from. The source's
/// conventions (DeepLab upsampling, default preprocessing) follow that layout, not
/// the naming.
pub const SOURCE_METADATA_KEY: &str = "vpipe.source";

impl fmt::Display for SourceLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The task a checkpoint's head performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CheckpointTask {
    /// Image classification (1x1 expansion, pooling, linear classifier).
    Classification,
    /// SSDLite object detection.
    Detection,
    /// DeepLabv3 semantic segmentation.
    Segmentation,
}

impl fmt::Display for CheckpointTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CheckpointTask::Classification => "classification",
            CheckpointTask::Detection => "detection",
            CheckpointTask::Segmentation => "segmentation",
        })
    }
}

impl CheckpointTask {
    /// Every task, in the order above.
    pub const ALL: [CheckpointTask; 3] = [
        CheckpointTask::Classification,
        CheckpointTask::Detection,
        CheckpointTask::Segmentation,
    ];

    /// The task of a name as [`fmt::Display`] writes it.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.to_string() == name)
    }
}

/// Metadata key under which a vpipe weights file records the task its backbone was
/// trained for; [`CheckpointLayout::detect`] reads it when the file carries no head
/// (a multi-head file, whose heads are stored apart).
pub const TASK_METADATA_KEY: &str = "vpipe.task";

/// What [`CheckpointLayout::detect`] found out about a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointLayout {
    /// Which library's naming it uses.
    pub source: SourceLayout,
    /// Which head it carries.
    pub task: CheckpointTask,
    /// Which backbone size.
    pub size: MobileVitSize,
}

/// Tensors renamed to the canonical naming, with their original names.
#[derive(Debug)]
pub struct CanonicalTensors {
    /// Tensors by canonical name.
    pub tensors: BTreeMap<String, HostTensor>,
    /// Canonical name to original name.
    pub source_names: BTreeMap<String, String>,
    /// The layout the names came from.
    pub source: SourceLayout,
}

/// Canonical-name prefixes of the backbone's tensors (the stem and layers 1-5);
/// everything else belongs to a head.
const BACKBONE_PREFIXES: [&str; 6] = [
    "conv_1.", "layer_1.", "layer_2.", "layer_3.", "layer_4.", "layer_5.",
];

/// Whether a canonical tensor name belongs to the backbone (rather than a head).
pub fn is_backbone_tensor(name: &str) -> bool {
    BACKBONE_PREFIXES.iter().any(|p| name.starts_with(p))
}

impl CanonicalTensors {
    /// A content hash (sha256) of the backbone's tensors: names, shapes and values,
    /// in canonical naming, so the same weights give the same digest whatever layout
    /// they were stored in. `None` when the file carries no backbone tensor (a file
    /// holding only a head).
    pub fn backbone_digest(&self) -> Option<[u8; 32]> {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        let mut any = false;
        let backbone = self
            .tensors
            .iter()
            .filter(|(name, _)| is_backbone_tensor(name));
        for (name, t) in backbone {
            any = true;
            hasher.update((name.len() as u64).to_le_bytes());
            hasher.update(name.as_bytes());
            hasher.update((t.shape.len() as u64).to_le_bytes());
            for d in &t.shape {
                hasher.update((*d as u64).to_le_bytes());
            }
            let mut bytes = Vec::with_capacity(4 * 4096);
            for chunk in t.data.chunks(4096) {
                bytes.clear();
                bytes.extend(chunk.iter().flat_map(|v| v.to_le_bytes()));
                hasher.update(&bytes);
            }
        }
        any.then(|| hasher.finalize().into())
    }
}

/// Wrapper prefixes some training scripts add around a state dict.
const WRAPPERS: [&str; 4] = ["state_dict.", "model_state_dict.", "model.", "module."];

impl CheckpointLayout {
    /// Recognises the layout, task and size of a checkpoint from its tensor names and shapes.
    pub fn detect(file: &TensorFile) -> Result<Self> {
        let canonical = to_canonical(file)?;
        let source = canonical.source;
        let t = &canonical.tensors;
        let has = |prefix: &str| t.keys().any(|k| k.starts_with(prefix));
        let task = if has("ssd_heads.") {
            CheckpointTask::Detection
        } else if has("seg_head.") {
            CheckpointTask::Segmentation
        } else if has("classifier.") {
            CheckpointTask::Classification
        } else if let Some(task) = file
            .metadata
            .get(TASK_METADATA_KEY)
            .and_then(|t| CheckpointTask::from_name(t))
        {
            task
        } else {
            return Err(BackboneError::Unrecognised {
                file: file.path.display().to_string(),
                reason: format!(
                    "a MobileViT backbone ({source} layout) with no head this version knows \
                     (classifier, ssd_heads or seg_head)"
                ),
            });
        };
        let dim = t
            .get("layer_3.1.local_rep.conv_1x1.block.conv.weight")
            .and_then(|w| w.shape.first().copied());
        let size = match dim {
            Some(64) => MobileVitSize::Xxs,
            Some(96) => MobileVitSize::Xs,
            Some(144) => MobileVitSize::S,
            other => {
                return Err(BackboneError::Unrecognised {
                    file: file.path.display().to_string(),
                    reason: format!(
                        "MobileViT v1 ({source} layout) of unknown size: layer 3 transformer width \
                         is {other:?}, expected 64 (XXS), 96 (XS) or 144 (S)"
                    ),
                });
            }
        };
        Ok(Self { source, task, size })
    }
}

fn unrecognised(file: &TensorFile) -> BackboneError {
    let sample: Vec<&str> = file.tensors.keys().take(3).map(String::as_str).collect();
    BackboneError::Unrecognised {
        file: file.path.display().to_string(),
        reason: format!(
            "not a MobileViT v1 checkpoint of a known layout (ml-cvnets, timm or Hugging Face); \
             its first tensors are {sample:?}"
        ),
    }
}

/// The common wrapper prefix shared by every key, if any.
fn wrapper(file: &TensorFile) -> &'static str {
    WRAPPERS
        .into_iter()
        .find(|w| file.tensors.keys().all(|k| k.starts_with(w)))
        .filter(|w| {
            // "model." is only a wrapper if stripping it reveals a known layout.
            let probe = format!("{w}conv_1.block.conv.weight");
            let probe_enc = format!("{w}encoder.conv_1.block.conv.weight");
            let probe_timm = format!("{w}stem.conv.weight");
            let probe_hf = format!("{w}mobilevit.conv_stem.convolution.weight");
            [probe, probe_enc, probe_timm, probe_hf]
                .iter()
                .any(|p| file.tensors.contains_key(p))
        })
        .unwrap_or("")
}

/// The layout a canonical-naming file declares in its metadata, if any.
fn declared_source(file: &TensorFile) -> Result<Option<SourceLayout>> {
    match file.metadata.get(SOURCE_METADATA_KEY) {
        None => Ok(None),
        Some(name) => SourceLayout::from_name(name)
            .map(Some)
            .ok_or_else(|| BackboneError::Unrecognised {
                file: file.path.display().to_string(),
                reason: format!(
                    "its metadata names an unknown source layout '{name}' (known: cvnets, timm, huggingface)"
                ),
            }),
    }
}

/// The layout whose naming the tensor names follow.
/// Whether `file` holds a MobileViT backbone in one of the known layouts (else it
/// may still hold a head's own weights).
pub fn has_backbone(file: &TensorFile) -> bool {
    detect_source(file).is_some()
}

fn detect_source(file: &TensorFile) -> Option<SourceLayout> {
    let w = wrapper(file);
    let has = |k: &str| file.tensors.contains_key(&format!("{w}{k}"));
    if has("conv_1.block.conv.weight") || has("encoder.conv_1.block.conv.weight") {
        Some(SourceLayout::Cvnets)
    } else if has("stem.conv.weight") {
        Some(SourceLayout::Timm)
    } else if has("mobilevit.conv_stem.convolution.weight") || has("conv_stem.convolution.weight") {
        Some(SourceLayout::HuggingFace)
    } else {
        None
    }
}

/// Renames every tensor of `file` to the canonical naming.
///
/// Names that no rule matches are kept as they are, so that building a model
/// reports them as unexpected tensors under their own names. The returned
/// [`CanonicalTensors::source`] is the layout the file declares in its metadata
/// ([`SOURCE_METADATA_KEY`]) if it does, else the one its names follow.
pub fn to_canonical(file: &TensorFile) -> Result<CanonicalTensors> {
    let source = detect_source(file).ok_or_else(|| unrecognised(file))?;
    let declared = declared_source(file)?;
    let wrap = wrapper(file);
    let rules = rules(source);
    let mut tensors = BTreeMap::new();
    let mut source_names = BTreeMap::new();
    for (name, t) in &file.tensors {
        let inner = &name[wrap.len()..];
        // A Hugging Face base model (`MobileViTModel`) is saved without `mobilevit.`.
        let inner = if source == SourceLayout::HuggingFace
            && !["mobilevit.", "classifier.", "segmentation_head."]
                .iter()
                .any(|p| inner.starts_with(p))
        {
            format!("mobilevit.{inner}")
        } else {
            inner.to_string()
        };
        let canonical = rules
            .iter()
            .find_map(|r| r.apply(&inner))
            .unwrap_or_else(|| inner.clone());
        source_names.insert(canonical.clone(), name.clone());
        tensors.insert(canonical, t.clone());
    }
    resolve_final_norms(&mut tensors, &mut source_names);
    if source == SourceLayout::HuggingFace {
        fuse_qkv(
            &mut tensors,
            &mut source_names,
            &file.path.display().to_string(),
        )?;
    }
    Ok(CanonicalTensors {
        tensors,
        source_names,
        source: declared.unwrap_or(source),
    })
}

/// Renames `layer_N.1.global_rep.final.*` to `global_rep.{depth}.*`, depth being the
/// number of transformer layers of that stage.
fn resolve_final_norms(
    tensors: &mut BTreeMap<String, HostTensor>,
    names: &mut BTreeMap<String, String>,
) {
    let finals: Vec<String> = tensors
        .keys()
        .filter(|k| k.contains(".global_rep.final."))
        .cloned()
        .collect();
    for key in finals {
        let (stage, rest) = key.split_once(".global_rep.final.").unwrap_or_default();
        let depth = (0..)
            .take_while(|i| {
                let p = format!("{stage}.global_rep.{i}.pre_norm_mha.0.weight");
                tensors.contains_key(&p)
            })
            .count();
        let new_key = format!("{stage}.global_rep.{depth}.{rest}");
        if let Some(t) = tensors.remove(&key) {
            tensors.insert(new_key.clone(), t);
        }
        if let Some(n) = names.remove(&key) {
            names.insert(new_key, n);
        }
    }
}

/// Fuses Hugging Face's `q_proj`, `k_proj`, `v_proj` into one `qkv_proj`.
fn fuse_qkv(
    tensors: &mut BTreeMap<String, HostTensor>,
    names: &mut BTreeMap<String, String>,
    file: &str,
) -> Result<()> {
    let q_keys: Vec<String> = tensors
        .keys()
        .filter(|k| k.contains(".q_proj."))
        .cloned()
        .collect();
    for q_key in q_keys {
        let k_key = q_key.replace(".q_proj.", ".k_proj.");
        let v_key = q_key.replace(".q_proj.", ".v_proj.");
        let fused_key = q_key.replace(".q_proj.", ".qkv_proj.");
        let mut parts = Vec::with_capacity(3);
        for key in [&q_key, &k_key, &v_key] {
            let t = tensors
                .remove(key)
                .ok_or_else(|| BackboneError::MissingTensor {
                    file: file.to_string(),
                    key: names
                        .get(&q_key)
                        .map(|n| {
                            n.replace(".query.", if key == &k_key { ".key." } else { ".value." })
                        })
                        .unwrap_or_else(|| key.clone()),
                    expected: tensors
                        .get(&q_key)
                        .map(|t| t.shape.clone())
                        .unwrap_or_default(),
                })?;
            parts.push((key.clone(), t));
        }
        let shape0 = parts[0].1.shape.clone();
        for (key, t) in &parts[1..] {
            if t.shape != shape0 {
                return Err(BackboneError::ShapeMismatch {
                    file: file.to_string(),
                    key: names.get(key).cloned().unwrap_or_else(|| key.clone()),
                    expected: shape0.clone(),
                    found: t.shape.clone(),
                });
            }
        }
        // The three are stacked along the first axis, which a scalar lacks.
        let rows = shape0
            .first()
            .and_then(|r| r.checked_mul(3))
            .ok_or_else(|| BackboneError::Unrecognised {
                file: file.to_string(),
                reason: format!(
                    "tensor '{}' has shape {shape0:?}, which is not a query/key/value projection",
                    names.get(&q_key).unwrap_or(&q_key)
                ),
            })?;
        let mut shape = shape0;
        shape[0] = rows;
        let data = parts
            .iter()
            .flat_map(|(_, t)| t.data.iter().copied())
            .collect();
        let q_name = names.remove(&q_key).unwrap_or_else(|| q_key.clone());
        names.remove(&k_key);
        names.remove(&v_key);
        names.insert(
            fused_key.clone(),
            q_name.replace(".query.", ".{query,key,value}."),
        );
        tensors.insert(fused_key, HostTensor::new(shape, data));
    }
    Ok(())
}

/// One renaming rule: dotted segments where `{a}`, `{b}`, `{c}` capture a number,
/// `{a+1}` in the target adds one, and a trailing `**` carries the rest of the name.
struct Rule {
    from: String,
    to: String,
}

impl Rule {
    fn new(from: impl Into<String>, to: impl Into<String>) -> Self {
        Self {
            from: from.into(),
            to: to.into(),
        }
    }

    fn apply(&self, key: &str) -> Option<String> {
        let mut caps: Vec<(char, usize)> = Vec::new();
        let pat: Vec<&str> = self.from.split('.').collect();
        let segs: Vec<&str> = key.split('.').collect();
        let mut rest = String::new();
        for (i, p) in pat.iter().enumerate() {
            if *p == "**" {
                if i >= segs.len() {
                    return None;
                }
                rest = segs[i..].join(".");
                break;
            }
            let s = segs.get(i)?;
            if let Some(name) = p.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                let v = s.parse::<usize>().ok()?;
                caps.push((name.chars().next()?, v));
            } else if p != s {
                return None;
            }
            if i == pat.len() - 1 && segs.len() != pat.len() {
                return None;
            }
        }
        fill(&self.to, &caps, &rest)
    }
    /// The inverse of [`Rule::apply`]: the source name that would map to `canonical`.
    fn invert(&self, canonical: &str) -> Option<String> {
        let mut caps: Vec<(char, usize)> = Vec::new();
        let mut rest = String::new();
        let pat = self.to.as_bytes();
        let key = canonical.as_bytes();
        let (mut i, mut j) = (0, 0);
        while i < pat.len() {
            if pat[i..].starts_with(b"**") {
                rest = canonical.get(j..)?.to_string();
                if rest.is_empty() {
                    return None;
                }
                j = key.len();
                i += 2;
            } else if pat[i] == b'{' {
                let close = self.to[i..].find('}')? + i;
                let expr = &self.to[i + 1..close];
                let (name, add) = match expr.split_once('+') {
                    Some((n, a)) => (n, a.parse::<usize>().ok()?),
                    None => (expr, 0),
                };
                let digits = key[j..].iter().take_while(|c| c.is_ascii_digit()).count();
                let v: usize = canonical.get(j..j + digits)?.parse().ok()?;
                caps.push((name.chars().next()?, v.checked_sub(add)?));
                j += digits;
                i = close + 1;
            } else {
                if key.get(j) != Some(&pat[i]) {
                    return None;
                }
                i += 1;
                j += 1;
            }
        }
        if j != key.len() {
            return None;
        }
        fill(&self.from, &caps, &rest)
    }
}

/// Fills a rule template: `{x}` becomes capture `x`, `{x+k}` capture `x` plus `k`,
/// and `**` the carried rest of the name.
fn fill(template: &str, caps: &[(char, usize)], rest: &str) -> Option<String> {
    let mut out = String::with_capacity(template.len() + rest.len());
    let mut chars = template.chars();
    while let Some(ch) = chars.next() {
        if ch != '{' {
            out.push(ch);
            continue;
        }
        let expr: String = chars.by_ref().take_while(|&c| c != '}').collect();
        let (name, add) = match expr.split_once('+') {
            Some((n, a)) => (n, a.parse::<usize>().ok()?),
            None => (expr.as_str(), 0),
        };
        let c = name.chars().next()?;
        let (_, v) = caps.iter().find(|(n, _)| *n == c)?;
        out.push_str(&(v + add).to_string());
    }
    Some(out.replace("**", rest))
}

/// The name a canonical tensor has in a checkpoint of `source` layout, for messages
/// about tensors that are missing from it.
pub fn source_name(source: SourceLayout, canonical: &str) -> String {
    if source == SourceLayout::HuggingFace && canonical.contains(".qkv_proj.") {
        let q = source_name(source, &canonical.replace(".qkv_proj.", ".q_proj."));
        return q.replace(".query.", ".{query,key,value}.");
    }
    if source == SourceLayout::Cvnets {
        // Canonical names are ml-cvnets' own (the `encoder.` prefix of detection and
        // segmentation models is added by `Params`, which knows the file).
        return canonical.to_string();
    }
    rules(source)
        .iter()
        .find_map(|r| r.invert(canonical))
        .unwrap_or_else(|| canonical.to_string())
}

/// A convolution with batch norm: `{src}.{conv}.**` and `{src}.{norm}.**`.
fn conv_norm(rules: &mut Vec<Rule>, src: &str, dst: &str, conv: &str, norm: &str) {
    rules.push(Rule::new(
        format!("{src}.{conv}.**"),
        format!("{dst}.block.conv.**"),
    ));
    rules.push(Rule::new(
        format!("{src}.{norm}.**"),
        format!("{dst}.block.norm.**"),
    ));
}

fn rules(source: SourceLayout) -> Vec<Rule> {
    let mut r = Vec::new();
    match source {
        SourceLayout::Cvnets => {
            // Detection and segmentation models wrap the backbone in `encoder.`.
            r.push(Rule::new("encoder.**", "**"));
        }
        SourceLayout::Timm => {
            let cn = |r: &mut Vec<Rule>, s: &str, d: &str| conv_norm(r, s, d, "conv", "bn");
            cn(&mut r, "stem", "conv_1");
            let st = "stages.{a}.{b}";
            let ly = "layer_{a+1}.{b}";
            cn(
                &mut r,
                &format!("{st}.conv1_1x1"),
                &format!("{ly}.block.exp_1x1"),
            );
            cn(
                &mut r,
                &format!("{st}.conv2_kxk"),
                &format!("{ly}.block.conv_3x3"),
            );
            cn(
                &mut r,
                &format!("{st}.conv3_1x1"),
                &format!("{ly}.block.red_1x1"),
            );
            cn(
                &mut r,
                &format!("{st}.conv_kxk"),
                &format!("{ly}.local_rep.conv_3x3"),
            );
            r.push(Rule::new(
                format!("{st}.conv_1x1.**"),
                format!("{ly}.local_rep.conv_1x1.block.conv.**"),
            ));
            let tr = format!("{st}.transformer.{{c}}");
            let gr = format!("{ly}.global_rep.{{c}}");
            for (s, d) in [
                ("norm1", "pre_norm_mha.0"),
                ("attn.qkv", "pre_norm_mha.1.qkv_proj"),
                ("attn.proj", "pre_norm_mha.1.out_proj"),
                ("norm2", "pre_norm_ffn.0"),
                ("mlp.fc1", "pre_norm_ffn.1"),
                ("mlp.fc2", "pre_norm_ffn.4"),
            ] {
                r.push(Rule::new(format!("{tr}.{s}.**"), format!("{gr}.{d}.**")));
            }
            r.push(Rule::new(
                format!("{st}.norm.**"),
                format!("{ly}.global_rep.final.**"),
            ));
            cn(
                &mut r,
                &format!("{st}.conv_proj"),
                &format!("{ly}.conv_proj"),
            );
            cn(
                &mut r,
                &format!("{st}.conv_fusion"),
                &format!("{ly}.fusion"),
            );
            cn(&mut r, "final_conv", "conv_1x1_exp");
            r.push(Rule::new("head.fc.**", "classifier.fc.**"));
        }
        SourceLayout::HuggingFace => {
            let cn = |r: &mut Vec<Rule>, s: &str, d: &str| {
                conv_norm(r, s, d, "convolution", "normalization")
            };
            cn(&mut r, "mobilevit.conv_stem", "conv_1");
            let enc = "mobilevit.encoder.layer.{a}";
            for (s, d) in [
                ("expand_1x1", "exp_1x1"),
                ("conv_3x3", "conv_3x3"),
                ("reduce_1x1", "red_1x1"),
            ] {
                cn(
                    &mut r,
                    &format!("{enc}.layer.{{b}}.{s}"),
                    &format!("layer_{{a+1}}.{{b}}.block.{d}"),
                );
                cn(
                    &mut r,
                    &format!("{enc}.downsampling_layer.{s}"),
                    &format!("layer_{{a+1}}.0.block.{d}"),
                );
            }
            let ly = "layer_{a+1}.1";
            cn(
                &mut r,
                &format!("{enc}.conv_kxk"),
                &format!("{ly}.local_rep.conv_3x3"),
            );
            r.push(Rule::new(
                format!("{enc}.conv_1x1.convolution.**"),
                format!("{ly}.local_rep.conv_1x1.block.conv.**"),
            ));
            let tr = format!("{enc}.transformer.layer.{{c}}");
            let gr = format!("{ly}.global_rep.{{c}}");
            for (s, d) in [
                ("layernorm_before", "pre_norm_mha.0"),
                ("attention.attention.query", "pre_norm_mha.1.q_proj"),
                ("attention.attention.key", "pre_norm_mha.1.k_proj"),
                ("attention.attention.value", "pre_norm_mha.1.v_proj"),
                ("attention.output.dense", "pre_norm_mha.1.out_proj"),
                ("layernorm_after", "pre_norm_ffn.0"),
                ("intermediate.dense", "pre_norm_ffn.1"),
                ("output.dense", "pre_norm_ffn.4"),
            ] {
                r.push(Rule::new(format!("{tr}.{s}.**"), format!("{gr}.{d}.**")));
            }
            r.push(Rule::new(
                format!("{enc}.layernorm.**"),
                format!("{ly}.global_rep.final.**"),
            ));
            cn(
                &mut r,
                &format!("{enc}.conv_projection"),
                &format!("{ly}.conv_proj"),
            );
            cn(&mut r, &format!("{enc}.fusion"), &format!("{ly}.fusion"));
            cn(&mut r, "mobilevit.conv_1x1_exp", "conv_1x1_exp");
            r.push(Rule::new("classifier.**", "classifier.fc.**"));
            // DeepLabv3 head.
            let aspp = "seg_head.aspp.aspp_layer";
            cn(
                &mut r,
                "segmentation_head.aspp.convs.4.conv_1x1",
                &format!("{aspp}.convs.4.aspp_pool.conv_1x1"),
            );
            cn(
                &mut r,
                "segmentation_head.aspp.convs.{a}",
                &format!("{aspp}.convs.{{a}}"),
            );
            cn(
                &mut r,
                "segmentation_head.aspp.project",
                &format!("{aspp}.project"),
            );
            cn(
                &mut r,
                "segmentation_head.classifier",
                "seg_head.classifier",
            );
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use vpipe_io::checkpoint::FileFormat;

    /// A checkpoint holding `tensors` (name and shape), every element zero.
    fn file_of(tensors: &[(&str, &[usize])]) -> TensorFile {
        TensorFile {
            path: "fuzz.safetensors".into(),
            format: FileFormat::Safetensors,
            tensors: tensors
                .iter()
                .map(|(name, shape)| {
                    let n = shape.iter().product();
                    (
                        name.to_string(),
                        HostTensor::new(shape.to_vec(), vec![0.0; n]),
                    )
                })
                .collect(),
            metadata: BTreeMap::new(),
        }
    }

    /// Found by review while adding the fuzz targets, and confirmed as a panic
    /// with the `checkpoint` target: a scalar where the layer-3 transformer width
    /// is read indexed an empty shape.
    #[test]
    fn a_scalar_layer_3_width_is_an_unknown_size() {
        let file = file_of(&[
            ("conv_1.block.conv.weight", &[1]),
            ("classifier.fc.bias", &[1]),
            ("layer_3.1.local_rep.conv_1x1.block.conv.weight", &[]),
        ]);
        let err = CheckpointLayout::detect(&file).unwrap_err().to_string();
        assert!(err.contains("of unknown size"), "{err}");
    }

    /// As above: Hugging Face query/key/value projections are fused along their
    /// first axis, which scalars lack, and whose length times three can overflow.
    #[test]
    fn scalar_or_huge_query_key_value_projections_are_refused() {
        for shape in [&[][..], &[usize::MAX / 2, 0]] {
            let file = file_of(&[
                ("mobilevit.conv_stem.convolution.weight", &[1]),
                ("a.q_proj.weight", shape),
                ("a.k_proj.weight", shape),
                ("a.v_proj.weight", shape),
            ]);
            let err = to_canonical(&file).unwrap_err().to_string();
            assert!(err.contains("is not a query/key/value projection"), "{err}");
        }
    }

    #[test]
    fn rules_rename_with_captures_and_offsets() {
        let r = Rule::new(
            "stages.{a}.{b}.transformer.{c}.attn.qkv.**",
            "layer_{a+1}.{b}.global_rep.{c}.pre_norm_mha.1.qkv_proj.**",
        );
        assert_eq!(
            r.apply("stages.2.1.transformer.3.attn.qkv.weight")
                .as_deref(),
            Some("layer_3.1.global_rep.3.pre_norm_mha.1.qkv_proj.weight")
        );
        assert_eq!(r.apply("stages.x.1.transformer.3.attn.qkv.weight"), None);
        assert_eq!(r.apply("stages.2.1.transformer.3.attn.qkv"), None);
        let exact = Rule::new("head.fc.weight", "classifier.fc.weight");
        assert_eq!(exact.apply("head.fc.weight.extra"), None);
    }

    #[test]
    fn missing_tensors_are_named_in_the_source_naming() {
        let n = |s, k| source_name(s, k);
        let k = "layer_3.1.global_rep.0.pre_norm_mha.1.qkv_proj.weight";
        assert_eq!(
            n(SourceLayout::Timm, k),
            "stages.2.1.transformer.0.attn.qkv.weight"
        );
        assert_eq!(
            n(SourceLayout::HuggingFace, k),
            "mobilevit.encoder.layer.2.transformer.layer.0.attention.attention.{query,key,value}.weight"
        );
        assert_eq!(n(SourceLayout::Cvnets, k), k);
        assert_eq!(
            n(SourceLayout::Timm, "conv_1.block.norm.running_var"),
            "stem.bn.running_var"
        );
    }
}
