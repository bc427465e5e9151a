//! `vpipe submit` and `vpipe worker` on a real `nats-server` (JetStream) on loopback:
//! three workers, twelve short videos, one worker killed (SIGKILL) in the middle of a
//! job, and a malformed job message. Every job completes, every frame's result is
//! stored exactly once, and the malformed message leaves the queue.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port()
}

fn worker(url: &str, dir: &Path, name: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_vpipe"))
        .args(["worker", "--nats", url, "--queue", "JOBS", "--pipeline"])
        .arg(root().join("pipelines/multitask.yaml"))
        .args([
            "--ack-wait",
            "3",
            "--idle-exit",
            "8",
            "--threads",
            "1",
            "--out",
        ])
        .arg(dir.join(name))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("{name}.log"))).unwrap())
        .spawn()
        .expect("vpipe worker")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Puts a message that is no job on the queue.
fn put_malformed_job(url: &str) {
    runtime().block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
        js.publish("vpipe.jobs.JOBS", "not a job".into())
            .await
            .unwrap()
            .await
            .unwrap();
    });
}

/// Jobs waiting on the queue.
fn jobs_waiting(url: &str) -> u64 {
    runtime().block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
        let mut s = js.get_stream("JOBS").await.unwrap();
        s.info().await.unwrap().state.messages
    })
}

/// The de-duplication ids of the results stream's messages.
fn result_ids(url: &str) -> Vec<String> {
    runtime().block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
        let mut s = js.get_stream("VPIPE_RESULTS").await.unwrap();
        let n = s.info().await.unwrap().state.last_sequence;
        let mut ids = Vec::new();
        for seq in 1..=n {
            let m = s.get_raw_message(seq).await.unwrap();
            ids.push(
                m.headers
                    .get("Nats-Msg-Id")
                    .map(|v| v.to_string())
                    .unwrap_or_default(),
            );
        }
        ids
    })
}

#[test]
fn three_workers_one_killed_every_job_done_every_frame_once() {
    let tmp = tempfile::Builder::new()
        .prefix("vpipe-workers-")
        .tempdir()
        .unwrap();
    let dir = tmp.path();
    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let mut server = Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir.join("store"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server (scripts/setup.sh installs it)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nats-server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Twelve clips of 8 frames.
    let frames = 8;
    let clips: Vec<String> = (0..12)
        .map(|i| {
            let p = dir.join(format!("clip{i}.mp4"));
            let ok = Command::new("ffmpeg")
                .args(["-loglevel", "error", "-y", "-f", "lavfi", "-i"])
                .arg(format!(
                    "testsrc=size=160x120:rate=10:duration={}",
                    frames as f64 / 10.0
                ))
                .args(["-c:v", "mpeg4"])
                .arg(&p)
                .status()
                .expect("ffmpeg");
            assert!(ok.success());
            p.display().to_string()
        })
        .collect();
    let mut submit = Command::new(env!("CARGO_BIN_EXE_vpipe"));
    submit
        .args(["submit", "--nats", &url, "--queue", "JOBS"])
        .args(&clips);
    let out = submit.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let jobs: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    assert_eq!(jobs.len(), 12);
    put_malformed_job(&url);

    let mut victim = worker(&url, dir, "a");
    let mut others = [worker(&url, dir, "b"), worker(&url, dir, "c")];
    // Kill worker a once it has started a job, before it finishes it.
    let log = dir.join("a.log");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let started = text
            .lines()
            .filter(|l| l.starts_with("worker: job ") && !l.contains(" done "))
            .count();
        let done = text.lines().filter(|l| l.contains(" done (")).count();
        if started > done {
            break;
        }
        assert!(Instant::now() < deadline, "worker a took no job: {text}");
        std::thread::sleep(Duration::from_millis(20));
    }
    victim.kill().unwrap();
    victim.wait().unwrap();
    for w in &mut others {
        assert!(w.wait().unwrap().success());
    }
    let logs: String = ["a", "b", "c"]
        .iter()
        .map(|n| std::fs::read_to_string(dir.join(format!("{n}.log"))).unwrap())
        .collect();
    assert!(
        logs.contains("again, delivery 2"),
        "the killed worker's job was not redelivered: {logs}"
    );
    assert!(
        logs.contains("a malformed job message: acknowledged as failed"),
        "{logs}"
    );
    assert_eq!(
        jobs_waiting(&url),
        0,
        "every job, the malformed one too, left the queue"
    );
    let ids = result_ids(&url);
    let mut want: Vec<String> = jobs
        .iter()
        .flat_map(|j| (0..frames).map(move |f| format!("{j}:{f}")))
        .collect();
    let mut got = ids.clone();
    want.sort();
    got.sort();
    assert_eq!(got, want, "each frame of each job once");
    let _ = server.kill();
    let _ = server.wait();
}
