//! Where published files live, behind one small interface: a local directory
//! (the default, under target/slurm-factory/store), an S3 bucket, or GitHub
//! Releases. Keys are `/`-separated paths (`releases/25.11/noble/cpu/…`).

pub mod github;
pub mod local;
pub mod s3;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::Result;
use sha2::Digest;

use crate::schema::{files, mirrors, paths};

/// Objects that change in place sit behind a CDN: keep their cache short.
pub const SHORT_CACHE: &str = "public, max-age=60";

/// The environment variables the store's options are also read from (the
/// flags declare them; the generated workflows set them).
pub const BUCKET_VAR: &str = "SLURM_FACTORY_BUCKET";
pub const BUCKET_PREFIX_VAR: &str = "SLURM_FACTORY_BUCKET_PREFIX";
/// Where the store is served to admins (`publish`, `report`).
pub const PUBLIC_URL_VAR: &str = "SLURM_FACTORY_PUBLIC_URL";

/// What a store knows of an object: enough to decide whether to upload again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub size: u64,
    /// The SHA-256 recorded with the object, when the store keeps one.
    pub sha256: Option<String>,
}

/// How an object is written.
#[derive(Debug, Clone)]
pub struct Put {
    /// The SHA-256 the file must have. Each store checks it in the same read
    /// that uploads the file and makes nothing visible on a mismatch.
    pub sha256: String,
    pub size: u64,
    pub content_type: &'static str,
    /// Set on objects that change in place (indexes, pointers) behind a CDN.
    pub cache_control: Option<&'static str>,
}

pub trait Store {
    /// How logs name the store: `s3://bucket/prefix`, a directory, a repository.
    fn describe(&self) -> String;
    fn stat(&self, key: &str) -> Result<Option<Stat>>;
    /// Writes `file` under `key`; a reader never sees a partial object.
    fn put(
        &self,
        key: &str,
        file: &Path,
        put: &Put,
        progress: &indicatif::ProgressBar,
    ) -> Result<()>;
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>>;
    /// Read-modify-write of a small object: `change` gets the current bytes
    /// and returns the new ones, or `None` to leave it. Returns whether it
    /// was written. A store that can serialise writers (the local one locks)
    /// overrides this; the default reads and then writes.
    fn update(
        &self,
        key: &str,
        cache_control: Option<&'static str>,
        change: Change<'_>,
    ) -> Result<bool> {
        rewrite(self, key, cache_control, change)
    }
}

/// What `Store::update` applies: the current bytes (if any) in, the new
/// bytes (or `None`: leave it) out.
pub type Change<'a> = &'a mut dyn FnMut(Option<Vec<u8>>) -> Result<Option<Vec<u8>>>;

/// Reads `key`, applies `change`, writes the result if there is one; returns
/// whether it wrote. No concurrency control of its own.
pub fn rewrite(
    store: &(impl Store + ?Sized),
    key: &str,
    cache_control: Option<&'static str>,
    change: Change<'_>,
) -> Result<bool> {
    match change(store.get(key)?)? {
        Some(bytes) => {
            put_bytes(store, key, &bytes, cache_control)?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// A body arriving in pieces: an HTTP response, an S3 object, a file.
pub trait Chunks: Send {
    /// The next piece; `None` at the end.
    fn next_chunk(&mut self) -> Result<Option<bytes::Bytes>>;
}

/// A small body whole (a checksum, a signature, an index, an error message);
/// refused beyond `limit` bytes.
pub fn read_all(body: &mut dyn Chunks, limit: u64, what: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(c) = body.next_chunk()? {
        out.extend_from_slice(&c);
        if out.len() as u64 > limit {
            anyhow::bail!(
                "{what} is larger than {limit} bytes: not a checksum, signature or index"
            );
        }
    }
    Ok(out)
}

/// Reading objects from byte `from` on, for downloads that resume.
pub trait Fetch {
    /// How messages name the source.
    fn describe(&self) -> String;
    /// `None` when there is no such object.
    fn open(&self, key: &str, from: u64) -> Result<Option<Box<dyn Chunks>>>;
}

/// A progress bar for `len` bytes on a terminal; hidden in logs and CI.
pub fn progress(len: u64, label: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg:40!} {bar:30} {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(label.to_string());
    bar
}

pub fn content_type(name: &str) -> &'static str {
    if name.ends_with(".json") {
        "application/json"
    } else if name.ends_with(".html") {
        "text/html; charset=utf-8"
    } else if name.ends_with(files::SIGNATURE_SUFFIX) {
        "application/pgp-signature"
    } else if name.ends_with(files::CHECKSUM_SUFFIX) {
        "text/plain"
    } else if files::is_data(name) {
        "application/gzip"
    } else {
        "application/octet-stream"
    }
}

/// Where the store and its Spack mirrors live: a local directory store
/// (default) or an S3 bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    Local,
    /// A bucket, and a key prefix (no leading or trailing `/`; may be empty).
    Bucket {
        bucket: String,
        prefix: String,
    },
}

impl StoreUrl {
    /// The mirror of a stage (see [`mirrors::key`]) as Spack reaches it.
    pub fn mirror(&self, toolchain: &str, what: &str, rehearsal: bool) -> String {
        let rel = mirrors::key(toolchain, what, rehearsal);
        match self {
            StoreUrl::Local => format!("file://{}/{rel}", paths::LOCAL_STORE),
            StoreUrl::Bucket { bucket, prefix } if prefix.is_empty() => {
                format!("s3://{bucket}/{rel}")
            }
            StoreUrl::Bucket { bucket, prefix } => format!("s3://{bucket}/{prefix}/{rel}"),
        }
    }
}

/// The store a URL names: the bucket's, else the local store in `local`.
pub fn open(url: &StoreUrl, local: PathBuf) -> Result<Box<dyn Store>> {
    Ok(match url {
        StoreUrl::Local => Box::new(local::LocalStore { root: local }),
        StoreUrl::Bucket { bucket, prefix } => Box::new(s3::S3Store::new(bucket, prefix)?),
    })
}

/// The error for a file whose bytes are not the ones its checksum names.
pub fn mismatch(file: &Path, actual: &str, expected: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "{} does not match its checksum: its SHA-256 is {actual}, expected {expected}; nothing was uploaded",
        file.display()
    )
}

/// Writes a small object (a state, an index) through a temporary file.
pub fn put_bytes(
    store: &(impl Store + ?Sized),
    key: &str,
    bytes: &[u8],
    cache_control: Option<&'static str>,
) -> Result<()> {
    let tmp = tempfile::NamedTempFile::new()?;
    std::fs::write(tmp.path(), bytes)?;
    let put = Put {
        sha256: crate::checksum::hex(&sha2::Sha256::digest(bytes)),
        size: bytes.len() as u64,
        content_type: content_type(key),
        cache_control,
    };
    store.put(key, tmp.path(), &put, &indicatif::ProgressBar::hidden())
}
