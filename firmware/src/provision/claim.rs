//! The box's claim secret: [`SECRET_LEN`] random bytes made once and kept in
//! `<data_dir>/`[`SECRET_FILE`] with mode 0600, from which the claim code on the
//! provisioning page is derived (`branchline_provisioning::claim`: HMAC-SHA256 of the
//! serial, so the same box shows the same code at every start).
//!
//! Why a file of its own in the data directory: the code must exist before the box is
//! provisioned or enrolled (it is how HQ learns which box to make a token for), stay
//! the same across restarts, renewals and re-enrollments (the device key changes at
//! each), and go away with a factory reset, which wipes the data directory: a reset
//! box gets a new code, so whoever knew the old one cannot claim it again. Mode 0600
//! because the code is what proves an operator saw the box's page.
//!
//! The file is written atomically (a temp file created exclusively with mode 0600,
//! fsync, rename, fsync of the directory), so a power cut leaves either no secret (a
//! new one is made at the next start) or the whole one. A file of the wrong size is
//! an error, not replaced: replacing it would silently change the code.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use branchline_provisioning::claim::{ClaimCode, SECRET_LEN};
use branchline_provisioning::payload::BoxSerial;

/// Name of the claim secret's file in the data directory.
pub const SECRET_FILE: &str = "claim-secret";

/// Reads the claim secret in `data_dir`, making it first if there is none.
pub fn load_or_create(data_dir: &Path) -> Result<[u8; SECRET_LEN], String> {
    let path = data_dir.join(SECRET_FILE);
    match File::open(&path) {
        Ok(f) => {
            let mut bytes = Vec::with_capacity(SECRET_LEN);
            f.take(SECRET_LEN as u64 + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| format!("claim secret {}: {e}", path.display()))?;
            bytes.try_into().map_err(|b: Vec<u8>| {
                format!(
                    "claim secret {}: {} bytes, must be {SECRET_LEN} (remove it to make a new code)",
                    path.display(),
                    b.len()
                )
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut secret = [0u8; SECRET_LEN];
            getrandom::fill(&mut secret)
                .map_err(|e| format!("claim secret: no OS randomness: {e}"))?;
            write_new(&path, &secret)
                .map_err(|e| format!("claim secret {}: {e}", path.display()))?;
            tracing::info!(path = %path.display(), "claim secret made");
            Ok(secret)
        }
        Err(e) => Err(format!("claim secret {}: {e}", path.display())),
    }
}

/// The claim code of the box with `serial` whose data directory is `data_dir`.
pub fn code(data_dir: &Path, serial: &BoxSerial) -> Result<ClaimCode, String> {
    Ok(ClaimCode::derive(&load_or_create(data_dir)?, serial))
}

fn write_new(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{SECRET_FILE}.tmp"));
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn made_once_with_mode_0600_and_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let serial: BoxSerial = "BL2418-00042".parse().expect("serial");
        let first = code(dir.path(), &serial).expect("made");
        let mode = fs::metadata(dir.path().join(SECRET_FILE))
            .expect("file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(code(dir.path(), &serial).expect("kept"), first);
        // A factory reset wipes the data directory: a new secret, a new code.
        fs::remove_file(dir.path().join(SECRET_FILE)).expect("rm");
        assert_ne!(code(dir.path(), &serial).expect("new"), first);
    }

    #[test]
    fn a_damaged_secret_is_an_error_not_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join(SECRET_FILE), b"short").expect("write");
        let e = load_or_create(dir.path()).expect_err("short file");
        assert!(e.contains("5 bytes, must be 32"), "{e}");
        assert_eq!(
            fs::read(dir.path().join(SECRET_FILE)).expect("kept"),
            b"short"
        );
    }
}
