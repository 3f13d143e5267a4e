//! The local directory store: the default, so everything runs without a cloud
//! account. Objects are written under a temporary name and renamed.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use super::{Put, Stat, Store};
use crate::checksum::hex;

pub struct LocalStore {
    pub root: PathBuf,
}

impl LocalStore {
    fn path(&self, key: &str) -> Result<PathBuf> {
        if key
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        {
            bail!("invalid key {key}");
        }
        Ok(self.root.join(key))
    }
}

pub fn sha256_file(path: &Path) -> Result<String> {
    Ok(sha256_parts(&[path])?.1)
}

/// Each file's SHA-256 and that of their concatenation, in one read of
/// 1 MiB blocks.
pub fn sha256_parts(paths: &[&Path]) -> Result<(Vec<String>, String)> {
    let mut whole = Sha256::new();
    let mut parts = Vec::with_capacity(paths.len());
    let mut buf = vec![0u8; 1 << 20];
    for path in paths {
        let mut part = Sha256::new();
        let mut f =
            std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            part.update(&buf[..n]);
            if paths.len() > 1 {
                whole.update(&buf[..n]);
            }
        }
        parts.push(hex(&part.finalize()));
    }
    // One file: its own hash is the whole's.
    let whole = if paths.len() > 1 {
        hex(&whole.finalize())
    } else {
        parts
            .first()
            .cloned()
            .unwrap_or_else(|| hex(&whole.finalize()))
    };
    Ok((parts, whole))
}

impl Store for LocalStore {
    fn describe(&self) -> String {
        format!("local store {}", self.root.display())
    }

    fn stat(&self, key: &str) -> Result<Option<Stat>> {
        let path = self.path(key)?;
        match std::fs::metadata(&path) {
            Ok(m) => Ok(Some(Stat {
                size: m.len(),
                sha256: Some(sha256_file(&path)?),
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| path.display().to_string()),
        }
    }

    fn put(
        &self,
        key: &str,
        file: &Path,
        put: &Put,
        progress: &indicatif::ProgressBar,
    ) -> Result<()> {
        let path = self.path(key)?;
        let dir = path.parent().unwrap();
        std::fs::create_dir_all(dir)?;
        // A name of its own: two publishes at once never share a partial file.
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!(
                ".{}.",
                path.file_name().unwrap().to_string_lossy()
            ))
            .suffix(".partial")
            .tempfile_in(dir)
            .with_context(|| format!("writing in {}", dir.display()))?;
        let mut src =
            std::fs::File::open(file).with_context(|| format!("reading {}", file.display()))?;
        let mut buf = vec![0u8; 1 << 20];
        let mut sha = Sha256::new();
        loop {
            let n = src.read(&mut buf)?;
            if n == 0 {
                break;
            }
            sha.update(&buf[..n]);
            tmp.write_all(&buf[..n])
                .with_context(|| format!("writing {}", tmp.path().display()))?;
            progress.inc(n as u64);
        }
        let actual = hex(&sha.finalize());
        if actual != put.sha256 {
            // Dropping `tmp` removes it.
            return Err(super::mismatch(file, &actual, &put.sha256));
        }
        tmp.as_file().sync_all()?;
        {
            use std::os::unix::fs::PermissionsExt;
            tmp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o644))?;
        }
        tmp.persist(&path)
            .with_context(|| format!("moving {} into place", path.display()))?;
        Ok(())
    }

    /// Under an exclusive lock on `<root>/.lock`: concurrent publishes into
    /// one directory each see the other's entries.
    fn update(
        &self,
        key: &str,
        cache_control: Option<&'static str>,
        change: super::Change<'_>,
    ) -> Result<bool> {
        std::fs::create_dir_all(&self.root)
            .with_context(|| format!("creating {}", self.root.display()))?;
        let lock_path = self.root.join(".lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("opening {}", lock_path.display()))?;
        lock.lock()
            .with_context(|| format!("locking {}", lock_path.display()))?;
        let changed = super::rewrite(self, key, cache_control, change);
        drop(lock);
        changed
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        match std::fs::read(self.path(key)?) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// A file read in 1 MiB pieces.
pub struct FileChunks(pub std::fs::File);

impl super::Chunks for FileChunks {
    fn next_chunk(&mut self) -> Result<Option<bytes::Bytes>> {
        let mut buf = vec![0u8; 1 << 20];
        let n = self.0.read(&mut buf)?;
        if n == 0 {
            return Ok(None);
        }
        buf.truncate(n);
        Ok(Some(buf.into()))
    }
}

impl super::Fetch for LocalStore {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn open(&self, key: &str, from: u64) -> Result<Option<Box<dyn super::Chunks>>> {
        use std::io::Seek;
        let path = self.path(key)?;
        let mut f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        f.seek(std::io::SeekFrom::Start(from))?;
        Ok(Some(Box::new(FileChunks(f))))
    }
}
