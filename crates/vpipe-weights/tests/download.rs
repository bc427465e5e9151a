//! The real download code against a local HTTP server serving a reference checkpoint:
//! pinned hash, recorded hash, corrupted download, interrupted download resumed, 404,
//! mirror, offline.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use vpipe_weights::cache::partial_path;
use vpipe_weights::{CacheConfig, Entry, Registry, WeightsError, fetch, sha256_file};

/// A request the server saw: path and `Range` header.
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

struct Server {
    port: u16,
    seen: Seen,
}

/// Serves `body` at `*/ok/model.pt`, a corrupted copy at `*/corrupt/model.pt`, a
/// connection that breaks off half-way on the first request at `*/drop/model.pt`,
/// and 404 elsewhere. `Range: bytes=N-` gets a 206.
fn serve(body: Vec<u8>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Seen = Arc::default();
    let log = Arc::clone(&seen);
    std::thread::spawn(move || {
        let mut dropped = false;
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let (path, range) = read_request(&stream);
            log.lock().unwrap().push((path.clone(), range.clone()));
            let mut data = body.clone();
            if path.ends_with("/corrupt/model.pt") {
                data[1000] ^= 0xff;
            } else if path.ends_with("/drop/model.pt") && !dropped {
                dropped = true;
                respond(stream, &data, None, Some(data.len() / 2));
                continue;
            } else if !path.ends_with("/ok/model.pt") && !path.ends_with("/drop/model.pt") {
                let mut s = stream;
                let _ = s.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                continue;
            }
            let start = range
                .as_deref()
                .and_then(|r| r.strip_prefix("bytes="))
                .and_then(|r| r.trim_end_matches('-').parse::<usize>().ok());
            respond(stream, &data, start, None);
        }
    });
    Server { port, seen }
}

fn read_request(stream: &TcpStream) -> (String, Option<String>) {
    let mut reader = BufReader::new(stream);
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    let path = first.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut range = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("range")
        {
            range = Some(v.trim().to_string());
        }
    }
    (path, range)
}

/// Sends `data` from `start` (206 when given), stopping after `cut` body bytes.
fn respond(mut stream: TcpStream, data: &[u8], start: Option<usize>, cut: Option<usize>) {
    let from = start.unwrap_or(0);
    let head = match start {
        Some(s) => format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {s}-{}/{}\r\nConnection: close\r\n\r\n",
            data.len() - s,
            data.len() - 1,
            data.len()
        ),
        None => format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            data.len()
        ),
    };
    let end = cut.unwrap_or(data.len());
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&data[from..end]);
    let _ = stream.flush();
}

fn reference() -> (PathBuf, Vec<u8>, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../weights/reference/cvnets_mobilevit_xxs.pt");
    let bytes = std::fs::read(&path).unwrap();
    let hash = sha256_file(&path).unwrap();
    (path, bytes, hash)
}

/// A registry entry for `url`, pinned to `sha256` if given.
fn entry(name: &str, url: String, sha256: Option<String>) -> Entry {
    let mut description = Registry::builtin()
        .get("cvnets/mobilevit_xxs")
        .unwrap()
        .description
        .clone();
    description.sha256 = sha256;
    Entry {
        name: name.to_string(),
        url,
        description,
    }
}

/// A cache in a fresh temporary folder (a subfolder the cache creates itself), and
/// the guard that removes the folder when it drops.
fn cache(test: &str) -> (CacheConfig, tempfile::TempDir) {
    let tmp = tempfile::Builder::new()
        .prefix(&format!("vpipe-cache-{test}-"))
        .tempdir()
        .expect("temp dir");
    (CacheConfig::in_dir(tmp.path().join("cache")), tmp)
}

#[test]
fn pinned_download_is_verified_and_cached() {
    let (_, bytes, hash) = reference();
    let server = serve(bytes.clone());
    let (config, _tmp) = cache("pinned");
    let e = entry(
        "test/pinned",
        format!("http://127.0.0.1:{}/ok/model.pt", server.port),
        Some(hash),
    );
    let path = fetch(&e, &config).unwrap();
    assert_eq!(path, config.dir.join("test/pinned/model.pt"));
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    assert!(!partial_path(&path).exists());
    // The second use is served from the cache, without a request.
    assert_eq!(fetch(&e, &config).unwrap(), path);
    assert_eq!(server.seen.lock().unwrap().len(), 1);
}

#[test]
fn unpinned_hash_is_recorded_and_checked_on_later_use() {
    let (_, bytes, hash) = reference();
    let server = serve(bytes);
    let (config, _tmp) = cache("recorded");
    let e = entry(
        "test/unpinned",
        format!("http://127.0.0.1:{}/ok/model.pt", server.port),
        None,
    );
    let path = fetch(&e, &config).unwrap();
    assert_eq!(config.recorded().unwrap()["test/unpinned"].sha256, hash);
    // A cached file changed afterwards is refused.
    let mut data = std::fs::read(&path).unwrap();
    data[10] ^= 1;
    std::fs::write(&path, data).unwrap();
    let err = fetch(&e, &config).unwrap_err();
    assert!(
        matches!(
            err,
            WeightsError::Checksum {
                origin: "recorded on its first download",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn corrupted_download_is_refused_and_not_kept() {
    let (_, bytes, hash) = reference();
    let server = serve(bytes);
    let (config, _tmp) = cache("corrupt");
    let e = entry(
        "test/corrupt",
        format!("http://127.0.0.1:{}/corrupt/model.pt", server.port),
        Some(hash.clone()),
    );
    let err = fetch(&e, &config).unwrap_err();
    let path = config.path_of(&e);
    match &err {
        WeightsError::Checksum {
            expected, found, ..
        } => {
            assert_eq!(expected, &hash);
            assert_ne!(found, &hash);
        }
        other => panic!("expected a checksum error, got {other}"),
    }
    assert!(err.to_string().contains(&path.display().to_string()));
    assert!(!path.exists());
    assert!(!partial_path(&path).exists());
}

#[test]
fn interrupted_download_resumes() {
    let (_, bytes, hash) = reference();
    let server = serve(bytes.clone());
    let (config, _tmp) = cache("resume");
    let e = entry(
        "test/resume",
        format!("http://127.0.0.1:{}/drop/model.pt", server.port),
        Some(hash),
    );
    let path = fetch(&e, &config).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    let seen = server.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].1, None);
    assert_eq!(
        seen[1].1.as_deref(),
        Some(format!("bytes={}-", bytes.len() / 2).as_str())
    );
}

#[test]
fn interrupted_download_is_resumed_by_the_next_fetch() {
    let (_, bytes, hash) = reference();
    let server = serve(bytes.clone());
    let (mut config, _tmp) = cache("resume-later");
    config.attempts = 1;
    let e = entry(
        "test/later",
        format!("http://127.0.0.1:{}/drop/model.pt", server.port),
        Some(hash),
    );
    let err = fetch(&e, &config).unwrap_err();
    assert!(matches!(err, WeightsError::Unavailable { .. }), "{err}");
    let path = config.path_of(&e);
    assert_eq!(
        std::fs::metadata(partial_path(&path)).unwrap().len() as usize,
        bytes.len() / 2
    );
    assert_eq!(std::fs::read(fetch(&e, &config).unwrap()).unwrap(), bytes);
}

#[test]
fn not_found_is_a_clear_error() {
    let (_, bytes, _) = reference();
    let server = serve(bytes);
    let (config, _tmp) = cache("404");
    let url = format!("http://127.0.0.1:{}/missing/model.pt", server.port);
    let e = entry("test/missing", url.clone(), None);
    let err = fetch(&e, &config).unwrap_err();
    assert!(
        matches!(err, WeightsError::Http { status: 404, .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(msg.contains("HTTP 404") && msg.contains(&url), "{msg}");
    assert!(
        msg.contains(&config.path_of(&e).display().to_string()),
        "{msg}"
    );
    assert!(!partial_path(&config.path_of(&e)).exists());
}

#[test]
fn mirror_serves_the_published_path() {
    let (_, bytes, hash) = reference();
    let server = serve(bytes.clone());
    let (mut config, _tmp) = cache("mirror");
    config.mirror = Some(format!("http://127.0.0.1:{}/mirror/", server.port));
    let e = entry(
        "test/mirror",
        "https://weights.example.org/ok/model.pt".into(),
        Some(hash),
    );
    assert_eq!(std::fs::read(fetch(&e, &config).unwrap()).unwrap(), bytes);
    assert_eq!(
        server.seen.lock().unwrap()[0].0,
        "/mirror/weights.example.org/ok/model.pt"
    );
}

#[test]
fn offline_without_a_cached_copy_names_the_file_and_its_place() {
    let (mut config, _tmp) = cache("offline");
    config.offline = true;
    let e = Registry::builtin().get("cvnets/mobilevit_s").unwrap();
    let msg = fetch(e, &config).unwrap_err().to_string();
    assert!(msg.contains(&e.url), "{msg}");
    assert!(
        msg.contains(
            &config
                .dir
                .join("cvnets/mobilevit_s/mobilevit_s.pt")
                .display()
                .to_string()
        ),
        "{msg}"
    );
}
