//! The updater's IO edge: the download directory (`<data_dir>/update/`), the install
//! into the inactive slot, and HQ's update endpoints over the sync client.
//!
//! Download files: `<rollout>.part` while bytes arrive (its length is the resume
//! offset, so a restart or a WAN drop continues where it stopped; every chunk is
//! fsynced before the core hears of it), renamed to `<rollout>.bundle` once its sha256
//! matches the offer. Rollout ids become file names only if they are plain
//! (`[A-Za-z0-9._-]`, not starting with a dot, at most 64 bytes); others are refused.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use branchline_image::policy::Identity;
use branchline_image::store::{DirSlots, UbootEnv};
use branchline_image::update::Installed;
use branchline_sync::wire::{self, Offer, UpdateOffer, UpdateReport};
use sha2::{Digest, Sha256};

use super::core::Report;
use crate::config::SlotBackend;

/// The download directory under the data dir.
pub const UPDATE_DIR: &str = "update";

/// A rollout id usable as a file name.
pub fn check_rollout(rollout: &str) -> Result<(), String> {
    let plain = rollout
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if rollout.is_empty() || rollout.len() > 64 || rollout.starts_with('.') || !plain {
        return Err(format!(
            "rollout id {rollout:?} is not plain ([A-Za-z0-9._-], 1..=64 bytes, no leading dot)"
        ));
    }
    Ok(())
}

/// The files of downloads in progress and done.
#[derive(Debug, Clone)]
pub struct Downloads {
    dir: PathBuf,
}

impl Downloads {
    /// `<data_dir>/update`, created if missing.
    pub fn open(data_dir: &Path) -> Result<Downloads, String> {
        let dir = data_dir.join(UPDATE_DIR);
        fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Ok(Downloads { dir })
    }

    /// The download directory (`<data_dir>/update`), which also holds the trial
    /// record ([`super::trial`]).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `<rollout>.part`.
    pub fn part(&self, rollout: &str) -> PathBuf {
        self.dir.join(format!("{rollout}.part"))
    }

    /// `<rollout>.bundle`.
    pub fn bundle(&self, rollout: &str) -> PathBuf {
        self.dir.join(format!("{rollout}.bundle"))
    }

    /// Bytes of the rollout on disk: the whole size once renamed to `.bundle`, else
    /// the `.part` length (0 if none).
    pub fn on_disk(&self, rollout: &str) -> Result<u64, String> {
        check_rollout(rollout)?;
        for p in [self.bundle(rollout), self.part(rollout)] {
            match fs::metadata(&p) {
                Ok(m) => return Ok(m.len()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("cannot stat {}: {e}", p.display())),
            }
        }
        Ok(0)
    }

    /// Appends `bytes` at `offset` of `<rollout>.part` and fsyncs. Refused (nothing
    /// written) if the file's length is not `offset`.
    pub fn append(&self, rollout: &str, offset: u64, bytes: &[u8]) -> Result<(), String> {
        check_rollout(rollout)?;
        let p = self.part(rollout);
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .map_err(|e| format!("cannot open {}: {e}", p.display()))?;
        let len = f
            .metadata()
            .map_err(|e| format!("cannot stat {}: {e}", p.display()))?
            .len();
        if len != offset {
            return Err(format!(
                "{} holds {len} bytes, the chunk starts at byte {offset}",
                p.display()
            ));
        }
        f.write_all(bytes)
            .and_then(|()| f.sync_data())
            .map_err(|e| format!("cannot write {}: {e}", p.display()))
    }

    /// Checks the `.part`'s sha256 against `sha256` (lowercase hex) and renames it to
    /// `.bundle` (directory fsynced). `Err(Ok(actual))` on a mismatch, `Err(Err(why))`
    /// if the file cannot be read. A `.bundle` already there was checked before.
    pub fn verify(&self, rollout: &str, sha256: &str) -> Result<(), Result<String, String>> {
        check_rollout(rollout).map_err(Err)?;
        if self.bundle(rollout).exists() {
            return Ok(());
        }
        let p = self.part(rollout);
        let mut f = File::open(&p).map_err(|e| Err(format!("cannot open {}: {e}", p.display())))?;
        let mut hash = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = f
                .read(&mut buf)
                .map_err(|e| Err(format!("cannot read {}: {e}", p.display())))?;
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
        }
        let actual = hex::encode(hash.finalize());
        if actual != sha256 {
            return Err(Ok(actual));
        }
        let b = self.bundle(rollout);
        fs::rename(&p, &b).map_err(|e| Err(format!("cannot rename {}: {e}", p.display())))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Err(format!("cannot sync {}: {e}", self.dir.display())))
    }

    /// Deletes the rollout's `.part` and `.bundle`.
    pub fn discard(&self, rollout: &str) -> Result<(), String> {
        check_rollout(rollout)?;
        for p in [self.part(rollout), self.bundle(rollout)] {
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("cannot remove {}: {e}", p.display())),
            }
        }
        Ok(())
    }
}

/// Installs `<rollout>.bundle` into the inactive slot with
/// [`branchline_image::update::install`] (which verifies signature, board, target,
/// version policy and every file before its first write, so a refused bundle leaves
/// both slots as they were). `Ok`: the slot and version now pending, `Err(reason)` for
/// the report.
pub fn install(
    downloads: &Downloads,
    rollout: &str,
    keys: &[PathBuf],
    me: &Identity,
    backend: &SlotBackend,
) -> Result<Installed, String> {
    check_rollout(rollout)?;
    let p = downloads.bundle(rollout);
    let bundle = fs::read(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
    if keys.is_empty() {
        return Err("no pinned update keys".to_owned());
    }
    let keys = keys
        .iter()
        .map(|k| branchline_image::keys::read_verifying_key(k).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    match backend {
        SlotBackend::Dir { root } => {
            let mut store = DirSlots::new(root);
            let mut payload = DirSlots::new(root);
            branchline_image::update::install(&bundle, &keys, me, false, &mut store, &mut payload)
        }
        SlotBackend::Uboot {
            fw_printenv,
            fw_setenv,
            slots,
            ..
        } => {
            let Some(slots) = slots else {
                return Err("[update] slots is not set: nowhere to install".to_owned());
            };
            let mut store = UbootEnv::new(fw_printenv, fw_setenv);
            let mut payload = DirSlots::new(slots);
            branchline_image::update::install(&bundle, &keys, me, false, &mut store, &mut payload)
        }
    }
    .map_err(|e| e.to_string())
}

/// `GET {hq}/sync/v1/update`: the offer for this box, if any.
pub async fn poll_offer(
    client: &reqwest::Client,
    base: &str,
    timeout: Duration,
) -> Result<Option<Offer>, String> {
    let url = format!("{base}{}", wire::UPDATE_PATH);
    let resp = client
        .get(&url)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("GET {url}: HTTP {}", resp.status()));
    }
    let offer: UpdateOffer = resp
        .json()
        .await
        .map_err(|e| format!("GET {url}: bad answer: {e}"))?;
    if let Some(o) = &offer.offer {
        check_rollout(&o.rollout)?;
    }
    Ok(offer.offer)
}

/// `GET {hq}/sync/v1/update/{rollout}/bundle` with `Range: bytes={offset}-`: the next
/// chunk (HQ answers at most [`wire::MAX_BUNDLE_CHUNK`] bytes, `206`).
pub async fn fetch_chunk(
    client: &reqwest::Client,
    base: &str,
    rollout: &str,
    offset: u64,
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    check_rollout(rollout)?;
    let url = format!("{base}{}/{rollout}/bundle", wire::UPDATE_PATH);
    let resp = client
        .get(&url)
        .header(reqwest::header::RANGE, format!("bytes={offset}-"))
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    if resp.status() != reqwest::StatusCode::PARTIAL_CONTENT {
        return Err(format!(
            "GET {url} from byte {offset}: HTTP {}",
            resp.status()
        ));
    }
    let bytes = resp.bytes().await.map_err(|e| format!("GET {url}: {e}"))?;
    if bytes.len() > wire::MAX_BUNDLE_CHUNK {
        return Err(format!(
            "GET {url}: {} bytes in one chunk (at most {})",
            bytes.len(),
            wire::MAX_BUNDLE_CHUNK
        ));
    }
    Ok(bytes.to_vec())
}

/// `POST {hq}/sync/v1/update/{rollout}/outcome`.
pub async fn send_report(
    client: &reqwest::Client,
    base: &str,
    report: &Report,
    timeout: Duration,
) -> Result<(), String> {
    check_rollout(&report.rollout)?;
    let url = format!("{base}{}/{}/outcome", wire::UPDATE_PATH, report.rollout);
    let body = UpdateReport {
        protocol: wire::PROTOCOL_VERSION,
        state: report.state,
        version: report.version.clone(),
        reason: report.reason.clone(),
    };
    let resp = client
        .post(&url)
        .json(&body)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| format!("POST {url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("POST {url}: HTTP {}", resp.status()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }

    #[test]
    fn resumable_download_then_verify_and_rename() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let d = Downloads::open(tmp.path()).expect("open");
        let data: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
        assert_eq!(d.on_disk("spring-1.3").expect("on disk"), 0);
        d.append("spring-1.3", 0, &data[..1000])
            .expect("first chunk");
        // A restart: a fresh handle sees the same offset.
        let d = Downloads::open(tmp.path()).expect("reopen");
        assert_eq!(d.on_disk("spring-1.3").expect("on disk"), 1000);
        // A chunk at the wrong offset is refused and writes nothing.
        let e = d
            .append("spring-1.3", 500, &data[500..])
            .expect_err("wrong offset");
        assert!(e.contains("holds 1000 bytes"), "{e}");
        assert_eq!(d.on_disk("spring-1.3").expect("on disk"), 1000);
        d.append("spring-1.3", 1000, &data[1000..]).expect("rest");
        d.verify("spring-1.3", &sha(&data)).expect("sha256 matches");
        assert!(!d.part("spring-1.3").exists());
        assert_eq!(fs::read(d.bundle("spring-1.3")).expect("bundle"), data);
        assert_eq!(d.on_disk("spring-1.3").expect("on disk"), 3000);
        d.discard("spring-1.3").expect("discard");
        assert_eq!(d.on_disk("spring-1.3").expect("on disk"), 0);
    }

    #[test]
    fn sha256_mismatch_keeps_the_part_unrenamed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let d = Downloads::open(tmp.path()).expect("open");
        d.append("r1", 0, b"hello").expect("append");
        let actual = d.verify("r1", &sha(b"other")).expect_err("mismatch");
        assert_eq!(actual, Ok(sha(b"hello")));
        assert!(d.part("r1").exists() && !d.bundle("r1").exists());
    }

    #[test]
    fn unsafe_rollout_ids_are_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let d = Downloads::open(tmp.path()).expect("open");
        for id in ["", "../etc", ".hidden", "a/b", &"x".repeat(65)] {
            let e = d.append(id, 0, b"x").expect_err(id);
            assert!(e.contains("not plain"), "{id}: {e}");
        }
        assert_eq!(
            fs::read_dir(tmp.path().join(UPDATE_DIR))
                .expect("dir")
                .count(),
            0
        );
    }

    #[test]
    fn a_bundle_that_fails_verification_leaves_the_slots_untouched() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let d = Downloads::open(tmp.path()).expect("open");
        let key = tmp.path().join("keys");
        branchline_image::keys::keygen(&key).expect("keygen");
        let pubfile = key.join(branchline_image::keys::PUBLIC_KEY_FILE);
        d.append("bad", 0, b"not a bundle at all").expect("append");
        d.verify("bad", &sha(b"not a bundle at all"))
            .expect("sha ok");
        let root = tmp.path().join("slots");
        fs::create_dir_all(&root).expect("mkdir");
        let me = Identity {
            board: "gw4".into(),
            target: "x86_64-unknown-linux-gnu".into(),
        };
        let before: Vec<_> = fs::read_dir(&root).expect("dir").collect();
        let reason = install(
            &d,
            "bad",
            &[pubfile],
            &me,
            &SlotBackend::Dir { root: root.clone() },
        )
        .expect_err("refused");
        assert!(!reason.is_empty());
        assert_eq!(
            fs::read_dir(&root).expect("dir").count(),
            before.len(),
            "{reason}"
        );
    }
}
