//! `vpipe submit` and `vpipe worker`: many workers fed by a NATS JetStream work queue.
//!
//! `submit` puts one job per input on the queue. Each `worker` takes jobs one at a
//! time, runs its pipeline on the job's input, publishes every frame's results to
//! JetStream with the de-duplication id `<job id>:<frame>`, and acknowledges the job
//! only once its outputs are complete. A worker that dies mid-job leaves the job
//! unacknowledged: JetStream delivers it again after the ack wait, another worker
//! runs it again, and its frames' results, published under the same ids, are stored
//! once.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Result, bail};
use clap::Args;
use serde_json::json;
use vpipe_core::token::safe_token;
use vpipe_heads::HeadRegistry;
use vpipe_nats::JobQueue;
use vpipe_pipeline::{NatsResults, NatsSpec, RunOptions, resolve_input};

/// The ack wait of a queue's workers when the first `vpipe worker` makes it.
const DEFAULT_ACK_WAIT_S: u64 = 600;

/// Arguments of `vpipe submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The NATS server, for example nats://127.0.0.1:4222.
    #[arg(long)]
    nats: String,
    /// The queue (a JetStream work-queue stream of that name).
    #[arg(long)]
    queue: String,
    /// Inputs: video files, stream URLs, images or folders, one job each.
    #[arg(required = true)]
    inputs: Vec<String>,
}

/// Arguments of `vpipe worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The NATS server, for example nats://127.0.0.1:4222.
    #[arg(long)]
    nats: String,
    /// The queue to take jobs from.
    #[arg(long)]
    queue: String,
    /// The pipeline each job runs.
    #[arg(long)]
    pipeline: PathBuf,
    /// Folder of the jobs' own outputs (one subfolder per job).
    #[arg(long, default_value = "out/worker")]
    out: PathBuf,
    /// Seconds after which a job not acknowledged goes to another worker (when the
    /// queue is made; longer than the longest job).
    #[arg(long, default_value_t = DEFAULT_ACK_WAIT_S)]
    ack_wait: u64,
    /// Exit after this many seconds without a job (default: wait for jobs forever).
    #[arg(long)]
    idle_exit: Option<u64>,
    /// CPU threads (default: the pipeline's, else one per core).
    #[arg(long)]
    threads: Option<usize>,
}

/// `vpipe submit`: one job per input; prints each job's id.
pub fn submit(args: SubmitArgs) -> Result<()> {
    check_queue(&args.queue)?;
    let queue = JobQueue::open(&args.nats, &args.queue, None)?;
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    for (i, input) in args.inputs.iter().enumerate() {
        let id = format!("{stamp:x}-{i}");
        let body = json!({"id": id, "input": input});
        queue.submit(&id, serde_json::to_vec(&body)?)?;
        println!("{id} {input}");
    }
    Ok(())
}

/// `vpipe worker`: takes jobs until stopped (or idle for `--idle-exit` seconds).
pub fn worker(args: WorkerArgs, registry: &HeadRegistry) -> Result<()> {
    check_queue(&args.queue)?;
    let queue = JobQueue::open(
        &args.nats,
        &args.queue,
        Some(Duration::from_secs(args.ack_wait)),
    )?;
    let pipeline = crate::pipeline::compile(&args.pipeline, args.threads, None, None, registry)?;
    let results = NatsSpec {
        url: args.nats.clone(),
        stream: "VPIPE_RESULTS".into(),
        subject: "vpipe.results".into(),
    };
    let stop = crate::stop_on_ctrl_c("finishing the job in hand")?;
    let mut idle_since = Instant::now();
    eprintln!(
        "worker: queue {} on {}, pipeline {}",
        args.queue,
        args.nats,
        args.pipeline.display()
    );
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let Some(job) = queue.next(Duration::from_secs(1))? else {
            if args
                .idle_exit
                .is_some_and(|s| idle_since.elapsed() >= Duration::from_secs(s))
            {
                eprintln!(
                    "worker: no job for {} s, exiting",
                    args.idle_exit.unwrap_or(0)
                );
                return Ok(());
            }
            continue;
        };
        idle_since = Instant::now();
        let parsed = serde_json::from_slice::<serde_json::Value>(&job.payload)
            .ok()
            .and_then(|v| {
                Some((
                    v["id"].as_str()?.to_string(),
                    v["input"].as_str()?.to_string(),
                ))
            });
        let Some((id, input)) = parsed else {
            eprintln!("worker: a malformed job message: acknowledged as failed");
            queue.fail(
                job,
                "malformed job: expected JSON {\"id\": ..., \"input\": ...}",
            )?;
            continue;
        };
        let input_resolved = match resolve_input(&input, false) {
            Ok(i) => i,
            Err(e) => {
                eprintln!("worker: job {id}: {e}");
                queue.fail(job, &format!("job {id}: {e}"))?;
                continue;
            }
        };
        if job.deliveries > 1 {
            eprintln!(
                "worker: job {id} ({input}) again, delivery {}: a worker before did not finish it",
                job.deliveries
            );
        } else {
            eprintln!("worker: job {id} ({input})");
        }
        let sink = NatsResults::new(
            &results,
            &pipeline.name,
            Some(id.clone()),
            pipeline.file.spec.output.masks,
            pipeline.weights_note,
        )?;
        let options = RunOptions {
            out_dir: args.out.join(safe_token(&id)),
            progress: false,
            stop: Arc::new(AtomicBool::new(false)),
            max_frames: None,
            overwrite: true,
        };
        match vpipe_pipeline::run_with_sinks(
            &pipeline,
            &input_resolved,
            &options,
            vec![Box::new(sink)],
        ) {
            Ok(summary) if summary.failed.is_empty() => {
                queue.done(job)?;
                eprintln!("worker: job {id} done ({} frames)", summary.frames);
            }
            Ok(summary) => {
                let (input, message) = &summary.failed[0];
                queue.fail(job, &format!("job {id}: {input}: {message}"))?;
            }
            Err(e) if e.to_string().contains("could not be delivered") => {
                eprintln!("worker: job {id}: {e}; giving it back");
                queue.retry(job)?;
            }
            Err(e) => {
                eprintln!("worker: job {id}: {e}");
                queue.fail(job, &format!("job {id}: {e}"))?;
            }
        }
    }
    Ok(())
}

/// Checks that a queue name is one JetStream stream name.
fn check_queue(name: &str) -> Result<()> {
    if name.is_empty() || safe_token(name) != name {
        bail!("queue name '{name}': use letters, digits, '-' and '_' only");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_are_single_tokens() {
        assert!(check_queue("JOBS_1").is_ok());
        assert!(check_queue("a.b").is_err() && check_queue("").is_err());
    }
}
