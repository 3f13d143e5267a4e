//! Where published files live, behind one small interface: a local directory
//! (the default, under target/slurm-factory/store), an S3 bucket, or GitHub
//! Releases. Keys are `/`-separated paths (`releases/25.11/noble/cpu/…`).

pub mod github;
pub mod local;
pub mod s3;

use std::io::IsTerminal;
use std::path::Path;

use anyhow::Result;

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
