//! `vpipe weights list|fetch|import|verify`: the weights registry and cache.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use vpipe_pipeline::closest;
use vpipe_weights::download::Verified;
use vpipe_weights::readback::layout_name;
use vpipe_weights::{CacheConfig, Entry, ImportOptions, Registry, WeightsError};

/// Arguments of `vpipe weights`.
#[derive(Debug, Args)]
pub struct WeightsArgs {
    #[command(subcommand)]
    command: WeightsCommand,
}

#[derive(Debug, Subcommand)]
enum WeightsCommand {
    /// List the registry: every official checkpoint, and whether it is cached.
    List {
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Download registry entries into the cache (resuming, checking sha256, reading each back
    /// as a checkpoint of its entry) and print their paths.
    Fetch {
        /// Registry names (see `vpipe weights list`).
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Convert a checkpoint (any supported layout, or a registry name) into vpipe's own
    /// weights format, which carries its metadata and loads fastest.
    Import {
        /// Checkpoint file, or a registry name (fetched first).
        input: String,
        /// The vpipe weights file to write (.safetensors).
        #[arg(long)]
        out: PathBuf,
        /// Store the tensors in f16 (half the size).
        #[arg(long)]
        f16: bool,
    },
    /// Check every cached file (or the named ones) and the files shipped in weights/: its
    /// sha256, and that it reads back as a checkpoint of its entry's architecture, task and
    /// class count (every tensor present with its shape, none left over).
    Verify {
        /// Registry names to check (default: every cached entry).
        names: Vec<String>,
        /// The folder of shipped weights to check against the registry (default:
        /// `weights`, when there is such a folder here).
        #[arg(long)]
        shipped: Option<PathBuf>,
    },
}

/// Runs the command.
pub fn run(args: WeightsArgs) -> Result<()> {
    let config = CacheConfig::from_env();
    match args.command {
        WeightsCommand::List { json } => list(&config, json),
        WeightsCommand::Fetch { names } => {
            for name in names {
                let path = vpipe_weights::fetch(entry(&name)?, &config)?;
                println!("{name}\t{}", path.display());
            }
            Ok(())
        }
        WeightsCommand::Import { input, out, f16 } => import(&config, &input, &out, f16),
        WeightsCommand::Verify { names, shipped } => verify(&config, &names, shipped),
    }
}

/// The registry entry `name`, or an error with a "did you mean".
fn entry(name: &str) -> Result<&'static Entry> {
    let registry = Registry::builtin();
    registry.get(name).with_context(|| {
        let names = registry.names();
        match closest(name, names.iter().copied()) {
            Some(c) => format!("unknown weights name '{name}' (did you mean '{c}'?)"),
            None => format!("unknown weights name '{name}' (see `vpipe weights list`)"),
        }
    })
}

fn list(config: &CacheConfig, json: bool) -> Result<()> {
    let registry = Registry::builtin();
    let recorded = config.recorded()?;
    if !json {
        println!(
            "{:<36} {:<14} {:<14} {:<11} {:<11} {:<10} {:<8} {:<7} licence",
            "name", "task", "arch", "layout", "format", "sha256", "cached", "legacy"
        );
    }
    for e in &registry.entries {
        let d = &e.description;
        let cached = config.path_of(e).is_file();
        let hash = match (&d.sha256, recorded.get(&e.name)) {
            (Some(_), _) => "pinned",
            (None, Some(_)) => "recorded",
            (None, None) => "-",
        };
        if json {
            let line = serde_json::json!({
                "name": e.name, "url": e.url, "format": d.format.to_string(),
                "layout": d.layout.name(), "task": d.task.to_string(), "arch": d.arch.arch_name(),
                "labels": d.labels.name(), "preprocess": d.preprocess.name(), "size": d.size,
                "sha256": d.sha256.clone().or_else(|| recorded.get(&e.name).map(|r| r.sha256.clone())),
                "licence": e.description.licence, "cached": cached,
                "path": config.path_of(e).display().to_string(),
                "source": e.source, "legacy": e.legacy,
            });
            println!("{line}");
        } else {
            println!(
                "{:<36} {:<14} {:<14} {:<11} {:<11} {:<10} {:<8} {:<7} {}",
                e.name,
                d.task.to_string(),
                d.arch.arch_name(),
                d.layout.name(),
                d.format.to_string(),
                hash,
                if cached { "yes" } else { "no" },
                if e.legacy { "yes" } else { "-" },
                d.licence
            );
        }
    }
    if !json {
        let mut legacy: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for e in registry.entries.iter().filter(|e| e.legacy) {
            legacy.entry(&e.source).or_default().push(&e.name);
        }
        for (source, names) in legacy {
            println!(
                "\nlegacy: the URLs of {} are documented only in {source}; they may stop working",
                names.join(", ")
            );
        }
        println!("\ncache: {}", config.dir.display());
        if let Some(m) = &config.mirror {
            println!("mirror: {m}");
        }
        println!("licences:");
        for (k, v) in &registry.licences {
            println!("  {k}: {v}");
        }
    }
    Ok(())
}

fn import(config: &CacheConfig, input: &str, out: &Path, f16: bool) -> Result<()> {
    let registry = Registry::builtin();
    let (src, entry) = if Path::new(input).is_file() {
        (PathBuf::from(input), None)
    } else if let Some(e) = registry.get(input) {
        (vpipe_weights::fetch(e, config)?, Some(e.clone()))
    } else {
        entry(input)?;
        bail!("{input}: no such file");
    };
    let meta = vpipe_weights::import(&src, out, &ImportOptions { f16, entry })?;
    println!(
        "{} -> {}: {} {} ({} layout), labels {}, preprocess {}, {}{}",
        src.display(),
        out.display(),
        meta.arch,
        meta.task,
        meta.source,
        meta.labels.name(),
        meta.preprocess.name(),
        if meta.f16 { "f16" } else { "f32" },
        if meta.random_init {
            format!(" — {}", vpipe_weights::RANDOM_INIT_NOTE)
        } else {
            String::new()
        }
    );
    Ok(())
}

fn verify(config: &CacheConfig, names: &[String], shipped: Option<PathBuf>) -> Result<()> {
    let registry = Registry::builtin();
    let shipped = match shipped {
        Some(dir) if !dir.is_dir() => bail!("--shipped {}: no such folder", dir.display()),
        Some(dir) => Some(dir),
        None => Some(PathBuf::from("weights")).filter(|d| d.is_dir()),
    };
    let entries: Vec<&Entry> = if names.is_empty() {
        registry
            .entries
            .iter()
            .filter(|e| config.path_of(e).is_file())
            .collect()
    } else {
        names.iter().map(|n| entry(n)).collect::<Result<_>>()?
    };
    if entries.is_empty() {
        println!(
            "no registry weights in the cache ({}); `vpipe weights fetch NAME` downloads one",
            config.dir.display()
        );
    }
    let mut bad = 0;
    for e in entries {
        let readback = format!(
            "reads back as {}",
            layout_name(&e.description.checkpoint_layout())
        );
        let status = if !config.path_of(e).is_file() {
            bad += 1;
            format!("missing (expected at {})", config.path_of(e).display())
        } else {
            match vpipe_weights::verify_cached(e, config) {
                Ok(Verified::Pinned) => format!("ok (pinned sha256, {readback})"),
                Ok(Verified::Recorded) => format!("ok (recorded sha256, {readback})"),
                Ok(Verified::FirstUse(h)) => {
                    format!("ok ({readback}; no hash was known: recorded {h})")
                }
                Err(err @ WeightsError::Checksum { .. }) => {
                    bad += 1;
                    format!("MISMATCH: {err}")
                }
                Err(err @ WeightsError::NotACheckpoint { .. }) => {
                    bad += 1;
                    format!("NOT USABLE: {err}")
                }
                Err(err) => return Err(err.into()),
            }
        };
        println!("{}\t{status}", e.name);
    }
    match &shipped {
        None => println!(
            "no shipped weights checked: no `weights` folder here (run from vpipe's folder, or give --shipped DIR)"
        ),
        Some(shipped) => {
            for s in &registry.shipped {
                let path = shipped.join(&s.path);
                let status = if !path.is_file() {
                    bad += 1;
                    "missing".to_string()
                } else {
                    let found = vpipe_weights::sha256_file(&path)?;
                    if Some(found.as_str()) != s.description.sha256.as_deref() {
                        bad += 1;
                        format!("MISMATCH: sha256 {found}")
                    } else {
                        match vpipe_weights::read_back(&path, &s.description) {
                            Ok(layout) => format!(
                                "ok (sha256 in the registry, reads back as {})",
                                layout_name(&layout)
                            ),
                            Err(err) => {
                                bad += 1;
                                format!(
                                    "NOT USABLE: not a {} checkpoint: {err}",
                                    layout_name(&s.description.checkpoint_layout())
                                )
                            }
                        }
                    }
                };
                let note = if s.random_init {
                    format!(" [{}]", vpipe_weights::RANDOM_INIT_NOTE)
                } else {
                    String::new()
                };
                println!("{}\t{status}{note}", path.display());
            }
        }
    }
    if bad > 0 {
        bail!("{bad} file(s) missing, with a wrong sha256 or not usable checkpoints");
    }
    Ok(())
}
