//! The compiled pipeline: each backbone loaded once with its heads attached, and
//! the per-frame run in which each backbone runs once for all of its heads.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::tensor::Device;
use serde::Serialize;
use vpipe_backbone::layout::{has_backbone, to_canonical};
use vpipe_backbone::{CheckpointLayout, MobileVit, MobileVitConfig, Params};
use vpipe_core::result::HeadOutput;
use vpipe_heads::{Head, HeadContext, HeadError, HeadRegistry};
use vpipe_io::TensorFile;
use vpipe_media::Frame;
use vpipe_preprocess::{Preprocess, PreprocessPreset, PresetRecipe};

use crate::error::{PipelineError, Result, closest};
use crate::spec::PipelineFile;

pub use vpipe_weights::default_preset;

/// A head attached to a backbone.
#[derive(Debug)]
pub struct AttachedHead {
    /// Name from the pipeline file.
    pub name: String,
    /// The checkpoint its weights came from.
    pub weights: PathBuf,
    /// The head.
    pub head: Box<dyn Head>,
}

/// A backbone with the heads that read it.
#[derive(Debug)]
pub struct Branch {
    /// Name from the pipeline file.
    pub name: String,
    /// The checkpoint its weights came from.
    pub weights: PathBuf,
    /// What the checkpoint was recognised as.
    pub layout: CheckpointLayout,
    /// The architecture, at the chosen output stride.
    pub config: MobileVitConfig,
    /// The network.
    pub backbone: MobileVit,
    /// Preprocessing preset.
    pub preset: PreprocessPreset,
    recipe: Preprocess,
    /// The heads, in file order.
    pub heads: Vec<AttachedHead>,
}

/// One head's result for one frame.
#[derive(Debug, Clone, Serialize)]
pub struct NamedOutput {
    /// The head's name.
    pub head: String,
    /// Its result.
    #[serde(flatten)]
    pub output: HeadOutput,
}

/// Preprocessed network inputs of a batch, one per backbone.
#[derive(Debug)]
pub struct Prepared {
    inputs: Vec<(
        burn::tensor::Tensor<4>,
        Vec<vpipe_core::geometry::InputTransform>,
    )>,
    frames: usize,
}

/// Raw head outputs of a batch, before post-processing.
#[derive(Debug)]
pub struct RawOutputs {
    branches: Vec<(
        Vec<Vec<vpipe_heads::RawTensor>>,
        Vec<vpipe_core::geometry::InputTransform>,
    )>,
    frames: usize,
}

/// A pipeline ready to run.
#[derive(Debug)]
pub struct Pipeline {
    /// Name (from the file, or its stem).
    pub name: String,
    /// The file it was compiled from.
    pub file: PipelineFile,
    /// The device the networks run on.
    pub device: Device,
    /// The backbones with their heads.
    pub branches: Vec<Branch>,
    /// Heads in file order: (branch index, head index in the branch).
    order: Vec<(usize, usize)>,
    backbone_runs: AtomicUsize,
    /// Set when any of its weights are random-initialised reference weights
    /// ([`vpipe_weights::RANDOM_INIT_NOTE`]): shown on the terminal and written into
    /// every results line.
    pub weights_note: Option<&'static str>,
}

impl Pipeline {
    /// Loads the weights and builds every backbone and head of `file` on `device`,
    /// checking that each head fits its backbone: the same size, the feature strides
    /// it reads, and (for a head with its own `weights`) the backbone it was trained
    /// with. A head whose file carries a backbone whose tensors differ (by content
    /// hash) from those of the backbone it is attached to is refused, unless the head
    /// sets `allow_backbone_mismatch`; a file with no backbone tensors is not checked.
    pub fn compile(file: PipelineFile, registry: &HeadRegistry, device: &Device) -> Result<Self> {
        let spec = &file.spec;
        let mut checkpoints: HashMap<PathBuf, OpenCheckpoint> = HashMap::new();
        let mut branches = Vec::new();
        for (name, b) in &spec.backbones {
            let at = format!("backbones.{name}");
            let path = file.weights_path(&b.weights);
            let opened = open_checkpoint(&mut checkpoints, &path, device)
                .map_err(|e| file.error(&format!("{at}.weights"), e.to_string(), None))?;
            let Some(layout) = opened.layout else {
                return Err(file
                    .error(
                        &format!("{at}.weights"),
                        format!(
                            "{} holds no MobileViT backbone (none of its tensors is named as in an ml-cvnets, timm or Hugging Face checkpoint)",
                            path.display()
                        ),
                        Some("a backbone needs a MobileViT checkpoint; a file of a head's own tensors goes under that head's `weights:`".into()),
                    )
                    .into());
            };
            let params = &mut opened.params;
            let config = MobileVitConfig::for_task(layout.size, layout.task, b.output_stride);
            let backbone = MobileVit::load(params, &config)
                .map_err(|e| file.error(&format!("{at}.weights"), e.to_string(), None))?;
            let preset = match &b.preprocess {
                None => default_preset(&layout),
                Some(p) => p.parse::<PreprocessPreset>().map_err(|e| {
                    file.error(
                        &format!("{at}.preprocess"),
                        e.message(),
                        e.suggestion.map(|c| format!("did you mean '{c}'?")),
                    )
                })?,
            };
            branches.push(Branch {
                name: name.clone(),
                weights: path,
                layout,
                config,
                backbone,
                preset,
                recipe: preset.recipe(),
                heads: Vec::new(),
            });
        }
        let mut order = Vec::new();
        for (i, h) in spec.heads.iter().enumerate() {
            let at = format!("heads[{i}]");
            let bname = file.backbone_of(i)?;
            let bi = branches
                .iter()
                .position(|b| b.name == bname)
                .unwrap_or_else(|| unreachable!("backbone_of checked the name"));
            let path = match &h.weights {
                Some(w) => file.weights_path(w),
                None => branches[bi].weights.clone(),
            };
            let branch_backbone = checkpoint_key(&branches[bi].weights);
            let branch_backbone = checkpoints
                .get(&branch_backbone)
                .and_then(|c| c.backbone_digest);
            let opened = open_checkpoint(&mut checkpoints, &path, device)
                .map_err(|e| file.error(&format!("{at}.weights"), e.to_string(), None))?;
            let layout = opened.layout;
            let (params, options) = if opened.heads.is_empty() {
                (&mut opened.params, h.options.clone())
            } else {
                let (entry, params) = stored_head(&file, &at, h, &path, &mut opened.heads)?;
                let mut options = entry.options.clone();
                options.extend(h.options.clone());
                (params, options)
            };
            let branch = &branches[bi];
            if let (Some(head_backbone), Some(branch_backbone)) =
                (opened.backbone_digest, branch_backbone)
                && head_backbone != branch_backbone
                && !h.allow_backbone_mismatch
            {
                return Err(file
                    .error(
                        &format!("{at}.weights"),
                        format!(
                            "head '{}' comes from {}, whose backbone differs from the one it is attached to: backbone '{}' from {} (their backbone tensors hash to {} and {}); every released checkpoint was fine-tuned end to end, so the head would see features it was not trained on",
                            h.name,
                            path.display(),
                            branch.name,
                            branch.weights.display(),
                            short_hex(&head_backbone),
                            short_hex(&branch_backbone),
                        ),
                        Some(format!(
                            "give the head its own backbone (under `backbones:`, a backbone with `weights:` {0} and the head's `backbone:` set to it), or set `allow_backbone_mismatch: true` on the head if you mean it",
                            h.weights.as_deref().unwrap_or_default()
                        )),
                    )
                    .into());
            }
            if let Some(layout) = layout
                && layout.size != branch.layout.size
            {
                return Err(file
                    .error(
                        &format!("{at}.weights"),
                        format!(
                            "the head's weights are for {}, but backbone '{}' is {}",
                            layout.size, branch.name, branch.layout.size
                        ),
                        Some("take the head from a checkpoint of the same size".into()),
                    )
                    .into());
            }
            if !registry.names().contains(&h.kind.as_str()) {
                let names = registry.names();
                return Err(file
                    .error(
                        &format!("{at}.type"),
                        format!(
                            "unknown head type '{}' (known: {})",
                            h.kind,
                            names.join(", ")
                        ),
                        closest(&h.kind, names.iter().copied())
                            .map(|c| format!("did you mean '{c}'?")),
                    )
                    .into());
            }
            let mut ctx = HeadContext::new(params, &branch.config, &options);
            let head = registry.build(&h.kind, &mut ctx).map_err(|e| match e {
                HeadError::Option { key, message, help } => {
                    file.error_at_value(&format!("{at}.options.{key}"), message, help)
                }
                HeadError::UnknownOption { key, head, hint } => file.error(
                    &format!("{at}.options.{key}"),
                    format!("unknown option '{key}' for the {head} head"),
                    Some(hint),
                ),
                e @ HeadError::Weights(
                    vpipe_backbone::BackboneError::MissingTensor { .. }
                    | vpipe_backbone::BackboneError::ShapeMismatch { .. },
                ) if h.weights.is_some() => file.error(
                    &format!("{at}.weights"),
                    format!("cannot build the {} head: {e}", h.kind),
                    None,
                ),
                e => file.error(&at, format!("cannot build the {} head: {e}", h.kind), None),
            })?;
            for (level, stride) in head.required_strides() {
                let have = branch.config.level_stride(level);
                if have != stride {
                    let key = if h.backbone.is_some() {
                        format!("{at}.backbone")
                    } else {
                        at.clone()
                    };
                    return Err(file
                        .error(
                            &key,
                            format!(
                                "head '{}' ({}) reads layer {level} at output stride {stride}, but backbone '{}' gives stride {have} there",
                                h.name, h.kind, branch.name
                            ),
                            Some(format!(
                                "set `output_stride` of backbone '{}' so that layer {level} has stride {stride}, {}or use another backbone",
                                branch.name,
                                if h.kind == "deeplabv3" {
                                    format!("or set the head's `stride` option to {have}, ")
                                } else {
                                    String::new()
                                }
                            )),
                        )
                        .into());
                }
            }
            order.push((bi, branches[bi].heads.len()));
            branches[bi].heads.push(AttachedHead {
                name: h.name.clone(),
                weights: path,
                head,
            });
        }
        check_every_tensor_used(&file, checkpoints)?;
        let mut weights_note = None;
        for path in branches
            .iter()
            .flat_map(|b| std::iter::once(&b.weights).chain(b.heads.iter().map(|h| &h.weights)))
        {
            weights_note = weights_note.or(vpipe_weights::weights_note(path).map_err(|e| {
                PipelineError::Input {
                    input: path.display().to_string(),
                    message: e.to_string(),
                }
            })?);
        }
        Ok(Self {
            name: file.name(),
            file,
            device: device.clone(),
            branches,
            order,
            backbone_runs: AtomicUsize::new(0),
            weights_note,
        })
    }

    /// How many backbone forward passes have run (each serves all of its heads).
    pub fn backbone_runs(&self) -> usize {
        self.backbone_runs.load(Ordering::Relaxed)
    }

    /// Head names in file order.
    pub fn head_names(&self) -> Vec<&str> {
        self.order
            .iter()
            .map(|&(b, h)| self.branches[b].heads[h].name.as_str())
            .collect()
    }

    /// Runs every backbone once on the batch and every head on its backbone's
    /// features. Returns, per frame, the heads' results in file order.
    pub fn run(&self, frames: &[&Frame]) -> Result<Vec<Vec<NamedOutput>>> {
        let prepared = self.prepare(frames)?;
        let raw = self.infer(prepared)?;
        self.postprocess(&raw)
    }

    /// Stage 1: preprocesses a batch for each backbone.
    pub fn prepare(&self, frames: &[&Frame]) -> Result<Prepared> {
        let inputs = self
            .branches
            .iter()
            .map(|b| {
                b.recipe
                    .batch(frames, &self.device)
                    .map_err(PipelineError::from)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Prepared {
            inputs,
            frames: frames.len(),
        })
    }

    /// Stage 2: each backbone once, then its heads' layers.
    pub fn infer(&self, prepared: Prepared) -> Result<RawOutputs> {
        let mut branches = Vec::with_capacity(self.branches.len());
        for (branch, (input, geometry)) in self.branches.iter().zip(prepared.inputs) {
            let [_, _, h, w] = input.dims();
            let features = branch.backbone.forward(input)?;
            self.backbone_runs.fetch_add(1, Ordering::Relaxed);
            let raw = branch
                .heads
                .iter()
                .map(|a| a.head.forward(&features, [h, w]))
                .collect::<vpipe_heads::Result<Vec<_>>>()?;
            branches.push((raw, geometry));
        }
        Ok(RawOutputs {
            branches,
            frames: prepared.frames,
        })
    }

    /// Stage 3: the heads' post-processing. Returns, per frame, the heads' results
    /// in file order.
    pub fn postprocess(&self, raw: &RawOutputs) -> Result<Vec<Vec<NamedOutput>>> {
        (0..raw.frames)
            .map(|i| {
                self.order
                    .iter()
                    .map(|&(b, h)| {
                        let (heads_raw, geometry) = &raw.branches[b];
                        let attached = &self.branches[b].heads[h];
                        Ok(NamedOutput {
                            head: attached.name.clone(),
                            output: attached.head.postprocess(&heads_raw[h], i, &geometry[i])?,
                        })
                    })
                    .collect()
            })
            .collect()
    }

    /// Lets each head draw its results of a kind of its own ([`HeadOutput::Custom`])
    /// on `image` (RGB), through its [`Head::annotate`] hook. `outputs` are one
    /// frame's results, as [`Pipeline::postprocess`] gave them.
    pub fn annotate_custom(&self, image: &mut image::RgbImage, outputs: &[NamedOutput]) {
        for (&(b, h), out) in self.order.iter().zip(outputs) {
            if matches!(out.output, HeadOutput::Custom(_)) {
                self.branches[b].heads[h].head.annotate(&out.output, image);
            }
        }
    }

    /// A readable description of the compiled graph, for `vpipe inspect`.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "pipeline '{}' ({})", self.name, self.file.path.display());
        let _ = writeln!(s, "device: {}", self.file.device());
        let _ = writeln!(
            s,
            "backbone passes per frame: {} (one per backbone, each feeding all of its heads)",
            self.branches.len()
        );
        for b in &self.branches {
            let strides: Vec<String> = (1..=5)
                .map(|l| format!("L{l}/{}", b.config.level_stride(l)))
                .collect();
            let _ = writeln!(
                s,
                "backbone '{}': {} from {} ({} {} checkpoint), output stride {}, preprocess {}",
                b.name,
                b.layout.size,
                b.weights.display(),
                b.layout.source,
                b.layout.task,
                b.config.output_stride,
                b.preset.name()
            );
            let _ = writeln!(s, "  layers (layer/stride): {}", strides.join(" "));
            let _ = writeln!(
                s,
                "  runs once per frame, feeding {} head(s):",
                b.heads.len()
            );
            for h in &b.heads {
                let levels: Vec<String> = h.head.levels().iter().map(|l| format!("L{l}")).collect();
                let _ = writeln!(
                    s,
                    "  -> head '{}': {} on {} (weights {})",
                    h.name,
                    h.head.kind(),
                    levels.join(", "),
                    h.weights.display()
                );
            }
        }
        s
    }
}

/// Every tensor of every checkpoint the pipeline read must have a use, as
/// [`vpipe_heads::LoadedModel`] requires of a single checkpoint: a tensor that is
/// neither taken by the pipeline's backbones and heads nor part of the checkpoint's
/// own network (its backbone and its head, which a pipeline may leave unattached)
/// is an error located at the `weights` key naming the file.
fn check_every_tensor_used(
    file: &PipelineFile,
    checkpoints: HashMap<PathBuf, OpenCheckpoint>,
) -> Result<()> {
    for (key, mut opened) in checkpoints {
        // A head of a multi-head file that the pipeline leaves unattached is fine; an
        // attached one must have used every tensor it holds.
        for FileHead { entry, params, .. } in opened.heads.into_iter().filter(|h| h.attached) {
            params.finish().map_err(|e| {
                file.error(
                    &weights_key(file, &key),
                    e.to_string(),
                    Some(format!(
                        "head '{}' of the file did not use these tensors",
                        entry.name
                    )),
                )
            })?;
        }
        let hint = match &opened.layout {
            Some(layout) => {
                if opened.params.untaken() > 0 {
                    // Marks the rest of the checkpoint's own network as used.
                    vpipe_heads::Model::build(
                        &mut opened.params,
                        layout,
                        &vpipe_heads::LoadOptions::default(),
                    )
                    .map_err(|e| file.error(&weights_key(file, &key), e.to_string(), None))?;
                }
                "the file holds tensors no MobileViT network of its kind has; is it the right checkpoint?"
            }
            None => {
                "the head did not use these tensors: a head's own weights file holds exactly the tensors the head takes"
            }
        };
        opened
            .params
            .finish()
            .map_err(|e| file.error(&weights_key(file, &key), e.to_string(), Some(hint.into())))?;
    }
    Ok(())
}

/// The head named like `head` in a multi-head file, checked to be of its type:
/// its entry and tensors.
fn stored_head<'a>(
    file: &PipelineFile,
    at: &str,
    head: &crate::spec::HeadSpec,
    path: &Path,
    heads: &'a mut [FileHead],
) -> Result<(&'a vpipe_weights::HeadEntry, &'a mut Params)> {
    let names: Vec<String> = heads.iter().map(|h| h.entry.name.clone()).collect();
    let Some(FileHead {
        entry,
        params,
        attached,
    }) = heads.iter_mut().find(|h| h.entry.name == head.name)
    else {
        return Err(file
            .error(
                &format!("{at}.name"),
                format!(
                    "{} is a multi-head file with heads {}; none is named '{}'",
                    path.display(),
                    names.join(", "),
                    head.name
                ),
                Some(
                    closest(&head.name, names.iter().map(String::as_str)).map_or_else(
                        || "a head reads the file's head of the same name".to_string(),
                        |c| format!("did you mean '{c}'?"),
                    ),
                ),
            )
            .into());
    };
    if entry.kind != head.kind {
        return Err(file
            .error(
                &format!("{at}.type"),
                format!(
                    "head '{}' of {} is a {} head, not {}",
                    entry.name,
                    path.display(),
                    entry.kind,
                    head.kind
                ),
                Some(format!("set `type: {}`", entry.kind)),
            )
            .into());
    }
    if *attached {
        return Err(file
            .error(
                &format!("{at}.name"),
                format!(
                    "head '{}' of {} is attached twice",
                    entry.name,
                    path.display()
                ),
                Some("each head of a multi-head file can be attached once".into()),
            )
            .into());
    }
    *attached = true;
    Ok((entry, params))
}

/// The first `weights` key of the pipeline that names the checkpoint kept under `key`.
fn weights_key(file: &PipelineFile, key: &Path) -> String {
    let spec = &file.spec;
    spec.backbones
        .iter()
        .map(|(name, b)| (format!("backbones.{name}.weights"), &b.weights))
        .chain(spec.heads.iter().enumerate().filter_map(|(i, h)| {
            h.weights
                .as_ref()
                .map(|w| (format!("heads[{i}].weights"), w))
        }))
        .find(|(_, w)| checkpoint_key(&file.weights_path(w)) == key)
        .map_or_else(|| "backbones".to_string(), |(k, _)| k)
}

/// A checkpoint read for a pipeline: what it is, its remaining tensors, and the
/// content hash of its backbone.
struct OpenCheckpoint {
    /// `None` for a file with no MobileViT backbone: a head's own weights, under
    /// their own names.
    layout: Option<CheckpointLayout>,
    params: Params,
    /// [`vpipe_backbone::CanonicalTensors::backbone_digest`] of the file.
    backbone_digest: Option<[u8; 32]>,
    /// The heads of a multi-head file ([`vpipe_weights::multihead`]); empty for any
    /// other checkpoint.
    heads: Vec<FileHead>,
}

/// A head of a multi-head file: its entry, its tensors, and whether the pipeline
/// attached it.
struct FileHead {
    entry: vpipe_weights::HeadEntry,
    params: Params,
    attached: bool,
}

/// The key a checkpoint is kept under: its canonical path, so that two spellings
/// of one file share it.
fn checkpoint_key(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| path.to_path_buf())
}

/// The first 12 hex digits of a digest, enough to tell two apart in a message.
fn short_hex(digest: &[u8; 32]) -> String {
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads a checkpoint once per pipeline; later uses share its remaining tensors.
fn open_checkpoint<'a>(
    cache: &'a mut HashMap<PathBuf, OpenCheckpoint>,
    path: &Path,
    device: &Device,
) -> std::result::Result<&'a mut OpenCheckpoint, PipelineError> {
    let key = checkpoint_key(path);
    if !cache.contains_key(&key) {
        let mut file = TensorFile::read(path).map_err(vpipe_backbone::BackboneError::from)?;
        let stored = vpipe_weights::split_heads(&mut file).map_err(|e| PipelineError::Input {
            input: path.display().to_string(),
            message: e.to_string(),
        })?;
        let (layout, params, backbone_digest) = if has_backbone(&file) {
            let layout = CheckpointLayout::detect(&file)?;
            let canonical = to_canonical(&file)?;
            let digest = canonical.backbone_digest();
            tracing::info!(file = %path.display(), source = %layout.source, task = %layout.task, arch = %layout.size, "loaded checkpoint");
            let params = Params::new(path.display().to_string(), canonical, device);
            (Some(layout), params, digest)
        } else {
            tracing::info!(file = %path.display(), tensors = file.tensors.len(), "loaded a head's own weights");
            let params = Params::from_named(path.display().to_string(), file.tensors, device);
            (None, params, None)
        };
        let source = layout.map_or(vpipe_backbone::SourceLayout::Cvnets, |l| l.source);
        let heads = stored
            .into_iter()
            .flatten()
            .map(|h| {
                let name = format!("{} (head '{}')", path.display(), h.entry.name);
                let canonical = vpipe_backbone::layout::CanonicalTensors {
                    tensors: h.tensors,
                    source_names: Default::default(),
                    source,
                };
                FileHead {
                    entry: h.entry,
                    params: Params::new(name, canonical, device),
                    attached: false,
                }
            })
            .collect();
        cache.insert(
            key.clone(),
            OpenCheckpoint {
                layout,
                params,
                backbone_digest,
                heads,
            },
        );
    }
    Ok(cache
        .get_mut(&key)
        .unwrap_or_else(|| unreachable!("inserted above")))
}
