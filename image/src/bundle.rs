//! Bundle encoding (a canonical tar) and verification.
//!
//! Layout, in this order: `manifest.json`, `manifest.sig`, then every payload file in
//! manifest order (sorted by path). Every entry is a plain ustar regular file with
//! uid/gid 0, no user/group names, mtime = `build_time`, mode 0644 or 0755. The encoding
//! is a pure function of (manifest bytes, signature, file contents), so builds are
//! reproducible and a verifier can demand the exact canonical bytes.
//!
//! Verification order ([`open`] then [`SignedManifest::verify_files`]):
//! 1. size limit; read the headers of entries 0 and 1 only, which must be
//!    `manifest.json` (at most [`MAX_MANIFEST_LEN`]) and `manifest.sig` (64 bytes);
//! 2. ed25519 (`verify_strict`) over the exact manifest bytes against each pinned key,
//!    any one matching — **before** the JSON is parsed;
//! 3. parse and validate the manifest (format, product, sorted safe paths);
//! 4. (caller) board, target and version policy: [`crate::policy::check`];
//! 5. every further entry: regular file (no symlinks, links, devices, directories),
//!    safe path, exactly the next manifest file, size, mode, sha256; no extra or
//!    missing entries;
//! 6. the whole bundle must equal the canonical re-encoding byte for byte, which
//!    catches changes in tar padding, header fields and trailing data that steps 1-5
//!    do not look at.

use std::io::{self, Write};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::keys::fingerprint;
pub use crate::manifest::MAX_MANIFEST_LEN;
use crate::manifest::{
    check_path, FileEntry, Manifest, FORMAT, MANIFEST_NAME, PRODUCT, SIGNATURE_NAME,
};
use crate::version::Version;

/// Largest bundle accepted (the box verifies in memory).
pub const MAX_BUNDLE_LEN: u64 = 256 << 20;

/// A file to put into a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleFile {
    /// Relative path inside the slot.
    pub path: String,
    /// Contents.
    pub contents: Vec<u8>,
    /// `0o644` or `0o755`.
    pub mode: u32,
}

/// Everything a bundle is built from.
#[derive(Debug, Clone)]
pub struct BuildSpec {
    /// Board profile name.
    pub board: String,
    /// Target triple.
    pub target: String,
    /// Release version.
    pub version: Version,
    /// Anti-rollback floor set by this release.
    pub min_version: Version,
    /// `SOURCE_DATE_EPOCH`.
    pub build_time: u64,
    /// Payload files (any order; sorted by the build).
    pub files: Vec<BundleFile>,
}

/// sha256 as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Reads `SOURCE_DATE_EPOCH` (required: builds must be reproducible).
pub fn source_date_epoch() -> Result<u64> {
    let v = std::env::var("SOURCE_DATE_EPOCH")
        .map_err(|_| Error::SourceDateEpoch("not set (required for reproducible builds)".into()))?;
    v.trim()
        .parse()
        .map_err(|_| Error::SourceDateEpoch(format!("{v:?} is not a whole number of seconds")))
}

/// Builds and signs a bundle. Deterministic: the same spec and key give the same bytes.
pub fn build(spec: &BuildSpec, key: &SigningKey) -> Result<Vec<u8>> {
    let mut files: Vec<&BundleFile> = spec.files.iter().collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let manifest = Manifest {
        format: FORMAT,
        product: PRODUCT.to_owned(),
        board: spec.board.clone(),
        target: spec.target.clone(),
        version: spec.version,
        min_version: spec.min_version,
        build_time: spec.build_time,
        files: files
            .iter()
            .map(|f| FileEntry {
                path: f.path.clone(),
                sha256: sha256_hex(&f.contents),
                size: f.contents.len() as u64,
                mode: f.mode,
            })
            .collect(),
    };
    manifest.validate()?;
    let mut manifest_bytes = serde_json::to_vec_pretty(&manifest).map_err(Error::ManifestJson)?;
    manifest_bytes.push(b'\n');
    let signature = key.sign(&manifest_bytes).to_bytes();
    let payload = manifest
        .files
        .iter()
        .zip(&files)
        .map(|(e, f)| (e, f.contents.as_slice()));
    encode(
        Vec::new(),
        manifest.build_time,
        &manifest_bytes,
        &signature,
        payload,
    )
    .map_err(|source| Error::Archive {
        context: "writing",
        source,
    })
}

fn header(path: &str, size: u64, mode: u32, mtime: u64) -> io::Result<tar::Header> {
    let mut h = tar::Header::new_ustar();
    h.set_path(path)?;
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(mtime);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    Ok(h)
}

/// The canonical encoding, written to `w`.
fn encode<'a, W: Write>(
    w: W,
    mtime: u64,
    manifest: &[u8],
    signature: &[u8],
    files: impl Iterator<Item = (&'a FileEntry, &'a [u8])>,
) -> io::Result<W> {
    let mut b = tar::Builder::new(w);
    b.append(
        &header(MANIFEST_NAME, manifest.len() as u64, 0o644, mtime)?,
        manifest,
    )?;
    b.append(
        &header(SIGNATURE_NAME, signature.len() as u64, 0o644, mtime)?,
        signature,
    )?;
    for (entry, contents) in files {
        b.append(
            &header(&entry.path, contents.len() as u64, entry.mode, mtime)?,
            contents,
        )?;
    }
    b.into_inner()
}

/// A `Write` that compares everything written with `expected`.
struct Compare<'a> {
    expected: &'a [u8],
    pos: usize,
    first_diff: Option<usize>,
}

impl Write for Compare<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.first_diff.is_none() {
            let have = self.expected.get(self.pos..).unwrap_or(&[]);
            let n = buf.len().min(have.len());
            if let Some(i) = (0..n).find(|&i| buf[i] != have[i]) {
                self.first_diff = Some(self.pos + i);
            } else if n < buf.len() {
                self.first_diff = Some(self.pos + n);
            }
        }
        self.pos += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One tar entry as located in the bundle bytes.
struct RawEntry<'a> {
    path: String,
    kind: tar::EntryType,
    mode: u32,
    data: &'a [u8],
}

/// Walks the tar headers, handing out entries with their data as slices of `bytes`.
fn entries(bytes: &[u8]) -> Result<Vec<RawEntry<'_>>> {
    let mut archive = tar::Archive::new(bytes);
    let arch_err = |source| Error::Archive {
        context: "reading entries",
        source,
    };
    let mut out = Vec::new();
    for entry in archive.entries().map_err(arch_err)? {
        let entry = entry.map_err(arch_err)?;
        let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let start = usize::try_from(entry.raw_file_position()).unwrap_or(usize::MAX);
        let size = usize::try_from(entry.size()).unwrap_or(usize::MAX);
        let data = start
            .checked_add(size)
            .and_then(|end| bytes.get(start..end))
            .ok_or_else(|| {
                Error::Truncated(format!("entry {path:?} ends past the end of the bundle"))
            })?;
        let header = entry.header();
        out.push(RawEntry {
            kind: header.entry_type(),
            mode: header.mode().map_err(arch_err)?,
            path,
            data,
        });
    }
    Ok(out)
}

/// The first two entries, read without looking at anything else.
fn head(bytes: &[u8]) -> Result<(&[u8], &[u8])> {
    let mut archive = tar::Archive::new(bytes);
    let arch_err = |source| Error::Archive {
        context: "reading manifest",
        source,
    };
    let mut it = archive.entries().map_err(arch_err)?;
    let mut take = |index: usize, name: &str, max: u64| -> Result<&[u8]> {
        let entry = it
            .next()
            .ok_or_else(|| Error::Truncated(format!("no {name} entry")))?
            .map_err(arch_err)?;
        let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        if path != name || entry.header().entry_type() != tar::EntryType::Regular {
            return Err(Error::Layout {
                index,
                expected: name.to_owned(),
                found: path,
            });
        }
        if entry.size() > max {
            return Err(Error::Manifest {
                field: "size",
                reason: format!("{name} is {} bytes, limit {max}", entry.size()),
            });
        }
        let start = usize::try_from(entry.raw_file_position()).unwrap_or(usize::MAX);
        let size = usize::try_from(entry.size()).unwrap_or(usize::MAX);
        start
            .checked_add(size)
            .and_then(|end| bytes.get(start..end))
            .ok_or_else(|| Error::Truncated(format!("{name} ends past the end of the bundle")))
    };
    let manifest = take(0, MANIFEST_NAME, MAX_MANIFEST_LEN)?;
    let sig = take(1, SIGNATURE_NAME, 64)?;
    Ok((manifest, sig))
}

/// A bundle whose manifest signature verified against a pinned key; files not yet
/// checked.
#[derive(Debug)]
pub struct SignedManifest<'a> {
    /// The parsed, signature-checked manifest.
    pub manifest: Manifest,
    /// The key that verified it.
    pub key: VerifyingKey,
    manifest_bytes: &'a [u8],
    signature: [u8; 64],
    bundle: &'a [u8],
}

/// Steps 1-3 of the verification order: signature first, then the manifest.
pub fn open<'a>(bundle: &'a [u8], keys: &[VerifyingKey]) -> Result<SignedManifest<'a>> {
    if keys.is_empty() {
        return Err(Error::NoKeys);
    }
    if bundle.len() as u64 > MAX_BUNDLE_LEN {
        return Err(Error::TooLarge {
            size: bundle.len() as u64,
            limit: MAX_BUNDLE_LEN,
        });
    }
    let (manifest_bytes, sig) = head(bundle)?;
    let signature: [u8; 64] = sig
        .try_into()
        .map_err(|_| Error::SignatureSize { len: sig.len() })?;
    let sig = Signature::from_bytes(&signature);
    let key = keys
        .iter()
        .find(|k| k.verify_strict(manifest_bytes, &sig).is_ok())
        .copied()
        .ok_or_else(|| Error::BadSignature {
            key_count: keys.len(),
            fingerprints: keys.iter().map(fingerprint).collect::<Vec<_>>().join(", "),
        })?;
    let manifest = Manifest::from_verified_bytes(manifest_bytes)?;
    Ok(SignedManifest {
        manifest,
        key,
        manifest_bytes,
        signature,
        bundle,
    })
}

/// A fully verified bundle: every file matches the signed manifest.
#[derive(Debug)]
pub struct VerifiedBundle<'a> {
    /// The signed manifest.
    pub manifest: Manifest,
    /// The exact signed manifest bytes (copied into the slot).
    pub manifest_bytes: &'a [u8],
    /// The detached signature (copied into the slot).
    pub signature: [u8; 64],
    contents: Vec<&'a [u8]>,
}

impl<'a> VerifiedBundle<'a> {
    /// Each manifest entry with its verified contents, in manifest order.
    pub fn files(&self) -> impl Iterator<Item = (&FileEntry, &'a [u8])> + '_ {
        self.manifest
            .files
            .iter()
            .zip(self.contents.iter().copied())
    }
}

impl<'a> SignedManifest<'a> {
    /// Step 5 and 6 of the verification order: structure, every file, canonical form.
    pub fn verify_files(self) -> Result<VerifiedBundle<'a>> {
        let all = entries(self.bundle)?;
        let mut rest = all.into_iter().skip(2);
        let mut contents = Vec::with_capacity(self.manifest.files.len());
        for expected in &self.manifest.files {
            let Some(e) = rest.next() else {
                return Err(Error::Truncated(format!(
                    "missing file {:?}",
                    expected.path
                )));
            };
            check_entry(&e)?;
            if e.path != expected.path {
                return Err(Error::UnexpectedEntry {
                    found: e.path,
                    expected: Some(expected.path.clone()),
                });
            }
            verify_file(expected, e.data)?;
            if e.mode != expected.mode {
                return Err(Error::ModeMismatch {
                    path: e.path,
                    expected: expected.mode,
                    actual: e.mode,
                });
            }
            contents.push(e.data);
        }
        if let Some(e) = rest.next() {
            check_entry(&e)?;
            return Err(Error::UnexpectedEntry {
                found: e.path,
                expected: None,
            });
        }
        let mut cmp = Compare {
            expected: self.bundle,
            pos: 0,
            first_diff: None,
        };
        let files = self.manifest.files.iter().zip(contents.iter().copied());
        cmp = encode(
            cmp,
            self.manifest.build_time,
            self.manifest_bytes,
            &self.signature,
            files,
        )
        .map_err(|source| Error::Archive {
            context: "re-encoding",
            source,
        })?;
        let len = self.bundle.len();
        let diff = cmp
            .first_diff
            .or((cmp.pos != len).then_some(cmp.pos.min(len)));
        if let Some(offset) = diff {
            return Err(Error::NotCanonical {
                offset: offset as u64,
                len: len as u64,
            });
        }
        Ok(VerifiedBundle {
            manifest: self.manifest,
            manifest_bytes: self.manifest_bytes,
            signature: self.signature,
            contents,
        })
    }
}

fn check_entry(e: &RawEntry<'_>) -> Result<()> {
    if e.kind != tar::EntryType::Regular {
        return Err(Error::NotRegularFile {
            path: e.path.clone(),
            kind: format!("{:?}", e.kind),
        });
    }
    check_path(&e.path)
}

/// Checks one file's size and sha256 against its manifest entry.
pub fn verify_file(expected: &FileEntry, contents: &[u8]) -> Result<()> {
    if contents.len() as u64 != expected.size {
        return Err(Error::SizeMismatch {
            path: expected.path.clone(),
            expected: expected.size,
            actual: contents.len() as u64,
        });
    }
    let actual = sha256_hex(contents);
    if actual != expected.sha256 {
        return Err(Error::HashMismatch {
            path: expected.path.clone(),
            expected: expected.sha256.clone(),
            actual,
        });
    }
    Ok(())
}
