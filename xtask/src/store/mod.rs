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

use crate::error::UsageError;
use crate::spack_env::StoreUrl;

/// Objects that change in place sit behind a CDN: keep their cache short.
pub const SHORT_CACHE: &str = "public, max-age=60";

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
    } else if name.ends_with(".asc") {
        "application/pgp-signature"
    } else if name.ends_with(".sha256") {
        "text/plain"
    } else if name.contains(".tar.gz") {
        "application/gzip"
    } else {
        "application/octet-stream"
    }
}

// The bucket options of every command that reaches the store or its Spack
// mirrors (builds, `spack-env`, `plan`, `publish`, `download --from s3`),
// checked in one place. (Plain comments: a flattened struct's doc comment
// would become its command's description.)
#[derive(Debug, Clone, Default, clap::Args)]
pub struct BucketArgs {
    /// S3 bucket of the store and its Spack mirrors [default: the local store]
    #[arg(long, value_name = "NAME", env = "SLURM_FACTORY_BUCKET")]
    pub bucket: Option<String>,
    /// Key prefix inside the bucket (every key of the store and its mirrors starts with it)
    #[arg(long, value_name = "PREFIX", env = "SLURM_FACTORY_BUCKET_PREFIX")]
    pub bucket_prefix: Option<String>,
}

impl BucketArgs {
    /// Where the store is: a bucket name, no prefix without a bucket.
    pub fn mirrors(&self) -> Result<StoreUrl> {
        StoreUrl::new(self.bucket.as_deref(), self.bucket_prefix.as_deref())
    }

    /// The bucket's store, else the local store in `local`.
    pub fn open(&self, local: PathBuf) -> Result<Box<dyn Store>> {
        Ok(match self.mirrors()? {
            StoreUrl::Local => Box::new(local::LocalStore { root: local }),
            StoreUrl::Bucket { bucket, prefix } => Box::new(s3::S3Store::new(&bucket, &prefix)?),
        })
    }
}

// The store options `plan`, `publish` and `download` share.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct StoreArgs {
    #[command(flatten)]
    pub bucket: BucketArgs,
    /// The local store's directory [default: target/slurm-factory/store]
    #[arg(long, value_name = "DIR")]
    pub store_dir: Option<PathBuf>,
}

impl StoreArgs {
    pub fn local(&self, root: &Path) -> local::LocalStore {
        local::LocalStore {
            root: self
                .store_dir
                .clone()
                .unwrap_or_else(|| root.join("target/slurm-factory/store")),
        }
    }

    /// The bucket's store; a usage error without `--bucket`.
    pub fn s3(&self) -> Result<s3::S3Store> {
        match self.bucket.mirrors()? {
            StoreUrl::Bucket { bucket, prefix } => s3::S3Store::new(&bucket, &prefix),
            StoreUrl::Local => {
                Err(UsageError::new("--to s3 needs --bucket NAME (or SLURM_FACTORY_BUCKET)").into())
            }
        }
    }

    /// The bucket when one is given, else the local store.
    pub fn open(&self, root: &Path) -> Result<Box<dyn Store>> {
        if self.bucket.bucket.is_some() && self.store_dir.is_some() {
            return Err(
                UsageError::new("--bucket and --store-dir name two stores: give one").into(),
            );
        }
        self.bucket.open(self.local(root).root)
    }
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
