//! Registering recordings, the upload queue, local file checks, WAV headers and the
//! status, against a real store in a temp dir (the real migrations and writer thread).

use std::path::{Path, PathBuf};

use branchline_sync::wire::{FilePolicy, RecordingMeta};
use rusqlite::Connection;

use super::*;
use crate::error::Error;
use crate::store::Store;
use crate::sync::store::SyncStore;

struct Env {
    dir: tempfile::TempDir,
    db: PathBuf,
    sync: SyncStore,
}

fn env() -> Env {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("data").join("branchline.db");
    let store = Store::open(&db).expect("open");
    let (writer, _thread) = store.spawn_writer();
    Env {
        sync: SyncStore::new(writer, db.clone()),
        db,
        dir,
    }
}

impl Env {
    fn conn(&self) -> Connection {
        Connection::open(&self.db).expect("open db")
    }

    fn count(&self, query: &str) -> i64 {
        self.conn()
            .query_row(query, [], |r| r.get(0))
            .expect("count")
    }

    /// A file of `len` bytes (a pattern depending on `seed`) and its metadata.
    fn recording(&self, name: &str, len: usize, seed: u8) -> (PathBuf, RecordingMeta) {
        let path = self.dir.path().join(name);
        let bytes: Vec<u8> = (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect();
        std::fs::write(&path, &bytes).expect("write recording");
        let (sha256, size) = file_sha256(&path).expect("hash");
        (
            path,
            RecordingMeta {
                call_id: format!("call-{name}"),
                sha256,
                size,
                started_at_ms: 1_700_000_000_000,
                duration_ms: 12_000,
                format: "wav/pcm16/stereo".into(),
            },
        )
    }

    async fn register(&self, path: &Path, meta: &RecordingMeta) -> Result<Registered> {
        register_recording(self.sync.writer(), meta.clone(), path.to_owned()).await
    }

    async fn ack(&self, seq: i64, policy: FilePolicy) {
        self.sync
            .commit_ack(Vec::new(), Some(seq), Some(policy), 1_700_000_000_500)
            .await
            .expect("ack");
    }

    fn pending(&self) -> Vec<RecordingRow> {
        let state = self.sync.state().expect("state");
        pending_uploads(&self.conn(), &self.db, state.acked_seq).expect("pending")
    }
}

fn problems_of(e: Error) -> Vec<String> {
    match e {
        Error::Invalid {
            entity: "recording",
            problems,
            ..
        } => problems.into_iter().map(|p| p.field).collect(),
        other => panic!("not a recording validation error: {other}"),
    }
}

#[tokio::test]
async fn a_recording_is_a_row_and_an_outbox_row_and_waits_for_its_metadatas_ack() {
    let env = env();
    let (path, meta) = env.recording("a.wav", 5000, 1);
    let reg = env.register(&path, &meta).await.expect("register");
    let conn = env.conn();
    let (kind, key, payload): (String, String, String) = conn
        .query_row(
            "SELECT kind, record_key, payload FROM outbox WHERE seq = ?1",
            [reg.outbox_seq],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("outbox row");
    assert_eq!(
        (kind.as_str(), key.as_str()),
        ("recording", meta.sha256.as_str())
    );
    let sent: RecordingMeta = serde_json::from_str(&payload).expect("payload");
    assert_eq!(sent, meta);
    let row = recording_by_sha(&conn, &env.db, &meta.sha256)
        .expect("read")
        .expect("row");
    assert_eq!(
        (row.id, row.path.as_path(), row.size),
        (reg.id, path.as_path(), 5000)
    );
    assert_eq!(row.outbox_seq, reg.outbox_seq);

    // Not before HQ acknowledged the metadata.
    assert!(env.pending().is_empty());
    let s = summary(&conn, &env.db, 0).expect("summary");
    assert_eq!(
        (s.pending, s.pending_bytes, s.awaiting_metadata),
        (1, 5000, 1)
    );
    env.ack(reg.outbox_seq, FilePolicy::All).await;
    let pending = env.pending();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].sha256, meta.sha256);
    assert_eq!(env.count("SELECT COUNT(*) FROM outbox"), 0, "trimmed");

    // Uploaded: out of the queue, counted as uploaded, error cleared.
    record_upload_error(&conn, &env.db, reg.id, "HQ refused it", 5).expect("error");
    let s = summary(&conn, &env.db, reg.outbox_seq).expect("summary");
    assert_eq!((s.failed, s.awaiting_metadata), (1, 0));
    assert_eq!(
        s.last_error.as_ref().map(|e| e.message.as_str()),
        Some("HQ refused it")
    );
    assert!(mark_uploaded(&conn, &env.db, reg.id, 6).expect("mark"));
    assert!(!mark_uploaded(&conn, &env.db, 999, 6).expect("mark"));
    assert!(env.pending().is_empty());
    let s = summary(&conn, &env.db, reg.outbox_seq).expect("summary");
    assert_eq!(
        (s.pending, s.pending_bytes, s.uploaded, s.failed),
        (0, 0, 1, 0)
    );
    assert_eq!(s.last_error, None);
}

#[tokio::test]
async fn bad_recordings_are_refused_naming_every_field_and_write_nothing() {
    let env = env();
    let (path, meta) = env.recording("a.wav", 100, 2);
    let cases: Vec<(RecordingMeta, PathBuf, Vec<&str>)> = vec![
        (meta.clone(), PathBuf::from("a.wav"), vec!["path"]),
        (
            meta.clone(),
            env.dir.path().join("missing.wav"),
            vec!["path"],
        ),
        (meta.clone(), env.dir.path().to_owned(), vec!["path"]),
        (
            RecordingMeta {
                size: 99,
                ..meta.clone()
            },
            path.clone(),
            vec!["size"],
        ),
        (
            RecordingMeta {
                call_id: String::new(),
                sha256: "ABC".into(),
                duration_ms: -1,
                started_at_ms: -5,
                format: "wav\n".into(),
                ..meta.clone()
            },
            path.clone(),
            vec![
                "call_id",
                "format",
                "sha256",
                "duration_ms",
                "started_at_ms",
            ],
        ),
        (
            RecordingMeta {
                call_id: "x".repeat(257),
                ..meta.clone()
            },
            path.clone(),
            vec!["call_id"],
        ),
    ];
    for (bad, file, fields) in cases {
        let e = env.register(&file, &bad).await.expect_err("refused");
        assert_eq!(problems_of(e), fields, "{bad:?} {}", file.display());
    }
    assert_eq!(env.count("SELECT COUNT(*) FROM outbox"), 0);
    assert_eq!(env.count("SELECT COUNT(*) FROM recordings"), 0);

    // The same file twice: the second is refused and writes nothing.
    env.register(&path, &meta).await.expect("first");
    let e = env.register(&path, &meta).await.expect_err("duplicate");
    assert_eq!(problems_of(e), ["sha256"]);
    assert_eq!(env.count("SELECT COUNT(*) FROM outbox"), 1);
    assert_eq!(env.count("SELECT COUNT(*) FROM recordings"), 1);
}

#[test]
fn local_files_are_checked_against_their_registration() {
    let env = env();
    let (path, meta) = env.recording("a.wav", 200_000, 3);
    let checked = check_file(&path, meta.size, &meta.sha256).expect("checks");
    let (bytes, again) =
        read_chunk(&path, meta.size, &meta.sha256, Some(checked), 65_536, 1000).expect("chunk");
    let all = std::fs::read(&path).expect("read");
    assert_eq!(bytes, all[65_536..66_536]);
    assert_eq!(again, checked);

    // Another sha256 registered: refused.
    let other = "0".repeat(64);
    assert!(matches!(
        check_file(&path, meta.size, &other),
        Err(LocalFileError::HashChanged { .. })
    ));
    // Same size, other content, written later: the chunk read checks again and refuses.
    let mut changed = all.clone();
    changed[10] ^= 0xff;
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&path, &changed).expect("rewrite");
    let set_mtime = std::fs::File::options()
        .write(true)
        .open(&path)
        .and_then(|f| {
            f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
        });
    set_mtime.expect("touch");
    assert!(matches!(
        read_chunk(&path, meta.size, &meta.sha256, Some(checked), 0, 10),
        Err(LocalFileError::HashChanged { .. })
    ));
    // Truncated: the size changed.
    std::fs::write(&path, &all[..1000]).expect("truncate");
    assert!(matches!(
        read_chunk(&path, meta.size, &meta.sha256, Some(checked), 0, 10),
        Err(LocalFileError::SizeChanged {
            expected: 200_000,
            actual: 1000,
            ..
        })
    ));
    // Gone.
    std::fs::remove_file(&path).expect("remove");
    let e = check_file(&path, meta.size, &meta.sha256).expect_err("missing");
    assert!(matches!(e, LocalFileError::Missing { .. }), "{e}");
    assert!(e.to_string().contains("a.wav"), "{e}");
}

/// A canonical 44-byte WAV header followed by `data` bytes.
fn wav(channels: u16, rate: u32, bits: u16, data: usize) -> Vec<u8> {
    let block = channels * bits / 8;
    let mut out = Vec::new();
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data as u32).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&channels.to_le_bytes());
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * u32::from(block)).to_le_bytes());
    out.extend_from_slice(&block.to_le_bytes());
    out.extend_from_slice(&bits.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&(data as u32).to_le_bytes());
    out.extend((0..data).map(|i| (i % 251) as u8));
    out
}

#[test]
fn wav_headers_give_format_and_duration_and_garbage_is_refused() {
    let info = parse_wav(&wav(2, 8000, 16, 32_000 * 3)).expect("wav");
    assert_eq!(info.format(), "wav/pcm16/stereo");
    assert_eq!(info.duration_ms(), 3000);
    let mono = parse_wav(&wav(1, 8000, 8, 4000)).expect("wav");
    assert_eq!(
        (mono.format(), mono.duration_ms()),
        ("wav/pcm8/mono".into(), 500)
    );
    // An unfinished header (length 0) counts the rest of the file.
    let mut open = wav(1, 8000, 16, 1600);
    open[40..44].copy_from_slice(&0u32.to_le_bytes());
    assert_eq!(parse_wav(&open).expect("wav").duration_ms(), 100);
    for bad in [
        &b""[..],
        &b"RIFF\0\0\0\0AVI LIST"[..],
        &wav(2, 8000, 16, 0)[..30],
        &b"RIFF\0\0\0\0WAVEdata\x04\0\0\0abcd"[..],
    ] {
        assert!(parse_wav(bad).is_err(), "{bad:?}");
    }
    let mut zero = wav(2, 8000, 16, 10);
    zero[22..24].copy_from_slice(&0u16.to_le_bytes());
    assert!(parse_wav(&zero).is_err());
}

#[test]
fn recording_add_copies_into_the_recordings_directory_and_registers_once() {
    let env = env();
    let recordings = env.dir.path().join("data").join("recordings");
    let source = env.dir.path().join("usb-call.wav");
    std::fs::write(&source, wav(2, 8000, 16, 64_000)).expect("write");
    let mut store = Store::open(&env.db).expect("open");
    let add = AddRecording {
        file: source.clone(),
        call_id: "call-7".into(),
        started_at_ms: Some(1_700_000_000_000),
        duration_ms: None,
        format: None,
    };
    let added = add_recording(&mut store, &recordings, &add).expect("added");
    assert!(added.copied);
    assert_eq!(added.meta.format, "wav/pcm16/stereo");
    assert_eq!(added.meta.duration_ms, 2000);
    assert_eq!(added.meta.size, 64_044);
    let kept = std::fs::canonicalize(&recordings)
        .expect("dir")
        .join(format!("{}.wav", added.meta.sha256));
    assert_eq!(added.path, kept);
    assert_eq!(
        std::fs::read(&kept).expect("copy"),
        std::fs::read(&source).expect("source")
    );
    assert_eq!(env.count("SELECT COUNT(*) FROM recordings"), 1);

    // Again: refused, the first copy stays, nothing more written.
    let e = add_recording(&mut store, &recordings, &add).expect_err("duplicate");
    assert!(e.to_string().contains("already registered"), "{e}");
    assert!(kept.exists());
    assert_eq!(env.count("SELECT COUNT(*) FROM recordings"), 1);
    assert_eq!(env.count("SELECT COUNT(*) FROM outbox"), 1);

    // A file already inside the directory is registered where it is.
    let inside = recordings.join("call-8.wav");
    std::fs::write(&inside, wav(1, 8000, 16, 16_000)).expect("write");
    let added = add_recording(
        &mut store,
        &recordings,
        &AddRecording {
            file: inside.clone(),
            call_id: "call-8".into(),
            ..add.clone()
        },
    )
    .expect("added");
    assert!(!added.copied);
    assert_eq!(added.path, std::fs::canonicalize(&inside).expect("path"));

    // Not a WAV and no metadata given: refused, nothing copied.
    let junk = env.dir.path().join("notes.txt");
    std::fs::write(&junk, "not audio").expect("write");
    let e = add_recording(
        &mut store,
        &recordings,
        &AddRecording {
            file: junk,
            call_id: "call-9".into(),
            ..add.clone()
        },
    )
    .expect_err("not wav");
    assert!(matches!(e, AddError::NotWav { .. }), "{e}");
    assert_eq!(std::fs::read_dir(&recordings).expect("dir").count(), 2);
}

#[tokio::test]
async fn the_status_report_counts_recordings_from_the_store() {
    let env = env();
    let (path, meta) = env.recording("a.wav", 3000, 4);
    let reg = env.register(&path, &meta).await.expect("register");
    let reader = env.sync.reader().expect("reader");
    let report =
        super::super::status::report_from_store(&reader, None, 1_700_000_001_000).expect("report");
    let json = serde_json::to_value(&report).expect("json");
    assert_eq!(json["files"]["pending"], 1, "{json}");
    assert_eq!(json["files"]["pending_bytes"], 3000);
    assert_eq!(json["files"]["awaiting_metadata"], 1);
    assert_eq!(json["files"]["live"], serde_json::Value::Null);
    env.ack(reg.outbox_seq, FilePolicy::None).await;
    let report =
        super::super::status::report_from_store(&reader, None, 1_700_000_002_000).expect("report");
    let json = serde_json::to_value(&report).expect("json");
    assert_eq!(json["files"]["awaiting_metadata"], 0, "{json}");
    assert_eq!(json["file_policy"]["mode"], "none");
}

const HQ: &str = "[hq]\nurl = \"https://hq.example\"\nca_cert = \"/ca.pem\"\n\
                  client_cert = \"/box.pem\"\nclient_key = \"/box.key\"\nbox_id = \"box-1\"\n\
                  request_timeout_ms = 7000\n";

fn load(text: &str) -> crate::error::Result<crate::config::Config> {
    crate::config::Config::from_toml_str(text, Path::new("/etc/branchline/branchd.toml"))
}

#[test]
fn the_recordings_directory_and_the_bandwidth_cap_come_from_the_config() {
    let config = load(&format!("[paths]\ndata_dir = \"/data\"\n{HQ}")).expect("config");
    assert_eq!(config.paths.recordings, Path::new("/data/recordings"));
    let hq = config.hq.expect("hq");
    assert_eq!(hq.upload_bandwidth_kbps, 0, "no cap by default");
    assert_eq!(uploader_config(&hq).bandwidth_bytes_per_sec, 0);

    let config = load(&format!(
        "[paths]\ndata_dir = \"/data\"\nrecordings = \"/rec\"\n{HQ}upload_bandwidth_kbps = 800\n"
    ))
    .expect("config");
    assert_eq!(config.paths.recordings, Path::new("/rec"));
    let c = uploader_config(&config.hq.expect("hq"));
    assert_eq!(c.bandwidth_bytes_per_sec, 100_000);
    assert_eq!(c.effective_chunk(), 100_000);
    assert_eq!(c.request_timeout, std::time::Duration::from_secs(7));
    assert!(branchline_sync::agent::FileUploader::new(c, 1).is_ok());

    for (text, field) in [
        (
            format!("{HQ}upload_bandwidth_kbps = -1\n"),
            "hq.upload_bandwidth_kbps",
        ),
        (
            format!("{HQ}upload_bandwidth_kbps = 10000001\n"),
            "hq.upload_bandwidth_kbps",
        ),
        (
            "[paths]\nrecordings = \" \"\n".to_owned(),
            "paths.recordings",
        ),
    ] {
        let e = load(&text).expect_err("refused").to_string();
        assert!(e.contains(&format!(": {field}: ")), "{e}");
    }
}
