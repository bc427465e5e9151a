//! The real download code against a local HTTP server serving reference checkpoints:
//! pinned hash, recorded hash, corrupted download, interrupted download resumed, 404,
//! mirror, offline, and the read-back of every download and cached file as a
//! checkpoint of its entry (a file cut short, a checkpoint of another task, a broken
//! file put in the cache by hand).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use vpipe_backbone::BackboneError;
use vpipe_backbone::layout::CheckpointTask;
use vpipe_heads::HeadError;
use vpipe_weights::cache::partial_path;
use vpipe_weights::download::Verified;
use vpipe_weights::{
    CacheConfig, Entry, ReadBackError, Registry, WeightsError, fetch, sha256_file, verify_cached,
};

/// A request the server saw: path and `Range` header.
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

struct Server {
    port: u16,
    seen: Seen,
}

/// How the server answers one request.
#[derive(Clone)]
enum Reply {
    /// The body with its own length as Content-Length; `Range: bytes=N-` gets a 206.
    Body(Vec<u8>),
    /// Headers announcing the whole body, then only its first half, then the
    /// connection closes.
    HalfThenClose(Vec<u8>),
    /// The whole body with a 200, whatever `Range` was asked for.
    IgnoreRange(Vec<u8>),
}

/// A path suffix and the replies to the requests for it, in order (the last one
/// answers every request after it).
type Route = (&'static str, Vec<Reply>);

/// Serves `body` at `*/ok/model.pt`, a corrupted copy at `*/corrupt/model.pt`, a
/// connection that breaks off half-way on the first request at `*/drop/model.pt`,
/// and 404 elsewhere.
fn serve(body: Vec<u8>) -> Server {
    let mut corrupt = body.clone();
    corrupt[1000] ^= 0xff;
    serve_routes(vec![
        ("/ok/model.pt", vec![Reply::Body(body.clone())]),
        ("/corrupt/model.pt", vec![Reply::Body(corrupt)]),
        (
            "/drop/model.pt",
            vec![Reply::HalfThenClose(body.clone()), Reply::Body(body)],
        ),
    ])
}

/// Serves each route's replies at the paths ending in its suffix, 404 elsewhere.
fn serve_routes(routes: Vec<Route>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Seen = Arc::default();
    let log = Arc::clone(&seen);
    std::thread::spawn(move || {
        let mut served = vec![0usize; routes.len()];
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let (path, range) = read_request(&stream);
            log.lock().unwrap().push((path.clone(), range.clone()));
            let Some(i) = routes.iter().position(|(suffix, _)| path.ends_with(suffix)) else {
                let mut s = stream;
                let _ = s.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                continue;
            };
            let replies = &routes[i].1;
            let reply = &replies[served[i].min(replies.len() - 1)];
            served[i] += 1;
            match reply {
                Reply::HalfThenClose(data) => respond(stream, data, None, Some(data.len() / 2)),
                Reply::IgnoreRange(data) => respond(stream, data, None, None),
                Reply::Body(data) => {
                    let start = range
                        .as_deref()
                        .and_then(|r| r.strip_prefix("bytes="))
                        .and_then(|r| r.trim_end_matches('-').parse::<usize>().ok());
                    respond(stream, data, start, None);
                }
            }
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

/// A file of weights/reference/.
fn reference_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../weights/reference")
        .join(name)
}

/// The reference classification checkpoint (random MobileViT-XXS, ml-cvnets layout):
/// path, bytes and sha256.
fn reference() -> (PathBuf, Vec<u8>, String) {
    let path = reference_file("cvnets_mobilevit_xxs.pt");
    let bytes = std::fs::read(&path).unwrap();
    let hash = sha256_file(&path).unwrap();
    (path, bytes, hash)
}

/// The builtin entry `cvnets/mobilevit_xxs` (whose file the reference checkpoint
/// stands in for), renamed `name`, published at `url`, pinned to `sha256` if given.
fn entry(name: &str, url: String, sha256: Option<String>) -> Entry {
    let mut e = builtin("cvnets/mobilevit_xxs").clone();
    e.name = name.to_string();
    e.url = url;
    e.description.sha256 = sha256;
    e
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

/// A server that answers a resumed request with the whole file (200, not 206):
/// the download starts over instead of appending the file to its first half.
#[test]
fn a_server_that_ignores_range_gets_the_file_downloaded_afresh() {
    let (_, bytes, hash) = reference();
    let server = serve_routes(vec![(
        "/norange/model.pt",
        vec![
            Reply::HalfThenClose(bytes.clone()),
            Reply::IgnoreRange(bytes.clone()),
        ],
    )]);
    let (config, _tmp) = cache("no-range");
    let e = entry(
        "test/norange",
        format!("http://127.0.0.1:{}/norange/model.pt", server.port),
        Some(hash),
    );
    let path = fetch(&e, &config).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    let seen = server.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(
        seen[1].1.as_deref(),
        Some(format!("bytes={}-", bytes.len() / 2).as_str()),
        "the second request asked to resume"
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

/// The builtin registry entry `name`.
fn builtin(name: &str) -> &'static Entry {
    Registry::builtin().get(name).unwrap()
}

/// Points `config`'s mirror at `server`: an entry's URL `https://host/path` is then
/// fetched from `/mirror/host/path`, so builtin entries are downloaded unchanged.
fn mirror_to(config: &mut CacheConfig, server: &Server) {
    config.mirror = Some(format!("http://127.0.0.1:{}/mirror", server.port));
}

/// Asserts that nothing of `e` is in the cache: no file, no partial file, no hash.
fn assert_nothing_kept(e: &Entry, config: &CacheConfig) {
    let path = config.path_of(e);
    assert!(!path.exists(), "{} kept", path.display());
    assert!(
        !partial_path(&path).exists(),
        "partial file of {} kept",
        e.name
    );
    assert!(
        !config.recorded().unwrap().contains_key(&e.name),
        "a hash was recorded for {}",
        e.name
    );
}

#[test]
fn download_cut_short_with_a_matching_length_is_refused_and_fetched_afresh() {
    let (_, bytes, hash) = reference();
    let e = builtin("cvnets/mobilevit_xxs");
    assert_eq!(
        e.description.sha256, None,
        "the test needs an unpinned entry"
    );
    // The first answer is the first three quarters of the file, with a Content-Length
    // saying so: the transfer itself looks complete.
    let cut = bytes[..bytes.len() * 3 / 4].to_vec();
    let server = serve_routes(vec![(
        "/classification/mobilevit_xxs.pt",
        vec![Reply::Body(cut), Reply::Body(bytes.clone())],
    )]);
    let (mut config, _tmp) = cache("cut-short");
    mirror_to(&mut config, &server);
    let err = fetch(e, &config).unwrap_err();
    let msg = err.to_string();
    match &err {
        WeightsError::NotACheckpoint {
            name,
            url,
            path,
            expected,
            reason,
            downloaded: true,
        } if matches!(
            **reason,
            ReadBackError::Unreadable(HeadError::Weights(BackboneError::Core(_)))
        ) =>
        {
            assert_eq!(name, "cvnets/mobilevit_xxs");
            assert_eq!(url, &config.url_of(e));
            assert_eq!(path, &config.path_of(e));
            assert_eq!(expected, &e.description.checkpoint_layout());
        }
        other => panic!("expected an unreadable download, got {other:?}"),
    }
    for part in [
        "cvnets/mobilevit_xxs",
        "mobilevit_xxs classification (cvnets layout)",
        &config.url_of(e),
        "deleted",
    ] {
        assert!(msg.contains(part), "'{part}' not in: {msg}");
    }
    assert_nothing_kept(e, &config);

    // The next fetch downloads the whole file from the start and keeps it.
    let path = fetch(e, &config).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    assert_eq!(config.recorded().unwrap()[&e.name].sha256, hash);
    let seen = server.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[1].1, None, "the second download resumed: {seen:?}");
}

#[test]
fn checkpoint_of_another_task_is_refused() {
    let (_, cls, _) = reference();
    let ssd_path = reference_file("cvnets_ssd_mobilevit_xxs.pt");
    let ssd = std::fs::read(&ssd_path).unwrap();
    // Each URL serves the other entry's file.
    let server = serve_routes(vec![
        (
            "/classification/mobilevit_xxs.pt",
            vec![Reply::Body(ssd.clone())],
        ),
        (
            "/detection/ssd_mobilevit_xxs_320.pt",
            vec![Reply::Body(cls)],
        ),
    ]);
    let (mut config, _tmp) = cache("other-task");
    mirror_to(&mut config, &server);
    for (name, found_task) in [
        ("cvnets/mobilevit_xxs", CheckpointTask::Detection),
        (
            "cvnets/ssd_mobilevit_xxs_320",
            CheckpointTask::Classification,
        ),
    ] {
        let e = builtin(name);
        assert_eq!(e.description.sha256, None, "{name} must be unpinned here");
        let err = fetch(e, &config).unwrap_err();
        let WeightsError::NotACheckpoint {
            reason,
            downloaded: true,
            ..
        } = &err
        else {
            panic!("{name}: expected a refused download, got {err:?}");
        };
        match **reason {
            ReadBackError::OtherCheckpoint { found } => {
                assert_eq!(found.task, found_task, "{name}");
                assert_eq!(found.size, e.description.arch, "{name}");
            }
            ref other => panic!("{name}: expected another checkpoint, got {other:?}"),
        }
        assert_nothing_kept(e, &config);
    }

    // The detection file is accepted as the detection entry.
    let server = serve_routes(vec![(
        "/detection/ssd_mobilevit_xxs_320.pt",
        vec![Reply::Body(ssd.clone())],
    )]);
    mirror_to(&mut config, &server);
    let e = builtin("cvnets/ssd_mobilevit_xxs_320");
    assert_eq!(std::fs::read(fetch(e, &config).unwrap()).unwrap(), ssd);
    assert_eq!(
        config.recorded().unwrap()[&e.name].sha256,
        sha256_file(&ssd_path).unwrap()
    );
}

#[test]
fn pinned_entry_refuses_another_file_before_reading_it_back() {
    // hf/apple/mobilevit-xx-small is pinned to the published file's hash: the random
    // reference file in the same layout has another one.
    let bytes = std::fs::read(reference_file("hf_mobilevit_xxs_cls.bin")).unwrap();
    let server = serve_routes(vec![(
        "/apple/mobilevit-xx-small/resolve/main/pytorch_model.bin",
        vec![Reply::Body(bytes)],
    )]);
    let (mut config, _tmp) = cache("pinned-hf");
    mirror_to(&mut config, &server);
    let e = builtin("hf/apple/mobilevit-xx-small");
    let pinned = e.description.sha256.clone().expect("pinned");
    match fetch(e, &config).unwrap_err() {
        WeightsError::Checksum {
            expected, origin, ..
        } => {
            assert_eq!(expected, pinned);
            assert_eq!(origin, "pinned in the registry");
        }
        other => panic!("expected a checksum error, got {other:?}"),
    }
    assert_nothing_kept(e, &config);
}

#[test]
fn broken_file_put_in_the_cache_by_hand_is_not_called_ok() {
    let (path_ok, bytes, hash) = reference();
    let e = builtin("cvnets/mobilevit_xxs");
    let (mut config, _tmp) = cache("by-hand");
    config.offline = true;
    let path = config.path_of(e);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let cut = &bytes[..bytes.len() / 2];
    std::fs::write(&path, cut).unwrap();

    let err = verify_cached(e, &config).unwrap_err();
    assert!(
        matches!(
            &err,
            WeightsError::NotACheckpoint {
                reason,
                downloaded: false,
                ..
            } if matches!(**reason, ReadBackError::Unreadable(_))
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("no hash is recorded"), "{err}");
    assert!(!config.recorded().unwrap().contains_key(&e.name));
    assert_eq!(std::fs::read(&path).unwrap(), cut, "the file was changed");
    // fetch verifies the cached copy the same way, and neither uses nor records it.
    assert!(matches!(
        fetch(e, &config).unwrap_err(),
        WeightsError::NotACheckpoint {
            downloaded: false,
            ..
        }
    ));
    assert!(!config.recorded().unwrap().contains_key(&e.name));

    // A hash recorded for the broken file (as vpipe did before it read files back) is
    // dropped, so that a good copy can be recorded.
    config
        .record(
            &e.name,
            vpipe_weights::cache::Recorded {
                sha256: sha256_file(&path).unwrap(),
                size: cut.len() as u64,
                url: e.url.clone(),
            },
        )
        .unwrap();
    assert!(matches!(
        verify_cached(e, &config).unwrap_err(),
        WeightsError::NotACheckpoint { .. }
    ));
    assert!(!config.recorded().unwrap().contains_key(&e.name));

    // A good copy put there instead is recorded on first use, then checked.
    std::fs::copy(&path_ok, &path).unwrap();
    assert_eq!(
        verify_cached(e, &config).unwrap(),
        Verified::FirstUse(hash.clone())
    );
    assert_eq!(config.recorded().unwrap()[&e.name].sha256, hash);
    assert_eq!(verify_cached(e, &config).unwrap(), Verified::Recorded);
}
