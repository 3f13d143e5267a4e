//! Where the compressed stream goes, in the same pass that makes it: part
//! files of at most `limit` bytes, the SHA-256 of each part and of the whole,
//! and gpg's detached signature. Every file is written under a temporary name
//! and renamed only when the whole package is complete.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin};

use crate::checksum::hex;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

/// Files written under temporary names, renamed together by `commit`. Dropped
/// uncommitted, it deletes them: a failed run leaves nothing that looks done.
#[derive(Default)]
pub struct Staged {
    files: Vec<(PathBuf, PathBuf)>,
    committed: bool,
}

impl Staged {
    /// A temporary path in `dir` for the file that will be `dir/name`.
    pub fn path(&mut self, dir: &Path, name: &str) -> PathBuf {
        let tmp = dir.join(format!(".{name}.partial"));
        self.files.push((tmp.clone(), dir.join(name)));
        tmp
    }

    pub fn write(&mut self, dir: &Path, name: &str, contents: &[u8]) -> Result<()> {
        let tmp = self.path(dir, name);
        std::fs::write(&tmp, contents).with_context(|| format!("writing {}", tmp.display()))
    }

    /// Renames under `dir/name` a staged file that was staged for another name.
    fn rename_staged(&mut self, from: &str, dir: &Path, to: &str) {
        for (_, fin) in &mut self.files {
            if fin.file_name().and_then(|n| n.to_str()) == Some(from) {
                *fin = dir.join(to);
            }
        }
    }

    pub fn commit(mut self) -> Result<Vec<PathBuf>> {
        for (tmp, fin) in &self.files {
            std::fs::rename(tmp, fin)
                .with_context(|| format!("moving {} into place", fin.display()))?;
        }
        self.committed = true;
        Ok(self.files.iter().map(|(_, f)| f.clone()).collect())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            for (tmp, _) in &self.files {
                let _ = std::fs::remove_file(tmp);
            }
        }
    }
}

pub struct Sink {
    dir: PathBuf,
    name: String,
    limit: u64,
    /// The part being written, its own hash (none for the first part: its
    /// bytes are the whole's so far) and its size.
    current: Option<(BufWriter<File>, Option<Sha256>, u64)>,
    parts: Vec<(String, String, u64)>,
    whole: Sha256,
    total: u64,
    /// gpg and the pipe to it; the pipe is dropped if gpg stops reading, and
    /// `finish` then reports gpg's own error.
    signer: Option<(Child, Option<ChildStdin>)>,
    staged: Staged,
}

/// What the stream turned into.
pub struct Stream {
    pub sha256: String,
    pub size: u64,
    /// `(file name, sha256, size)` of each part; one part means no split.
    pub parts: Vec<(String, String, u64)>,
}

impl Sink {
    /// Writes the parts into `dir`, staged in `staged` with the package's other files.
    pub fn new(
        dir: &Path,
        name: &str,
        limit: u64,
        signer: Option<Child>,
        staged: Staged,
    ) -> Result<Sink> {
        if limit == 0 {
            bail!("the split size must be at least one byte");
        }
        let signer = match signer {
            Some(mut child) => {
                let stdin = child.stdin.take().context("gpg has no stdin")?;
                Some((child, Some(stdin)))
            }
            None => None,
        };
        Ok(Sink {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            limit,
            current: None,
            parts: Vec::new(),
            whole: Sha256::new(),
            total: 0,
            signer,
            staged,
        })
    }

    fn part_name(&self, index: usize) -> String {
        crate::schema::files::part(&self.name, index)
    }

    fn close_part(&mut self) -> std::io::Result<()> {
        if let Some((mut file, hash, size)) = self.current.take() {
            file.flush()?;
            let name = self.part_name(self.parts.len());
            let sha = match hash {
                Some(h) => h.finalize(),
                None => self.whole.clone().finalize(),
            };
            self.parts.push((name, hex(&sha), size));
        }
        Ok(())
    }

    /// Closes the stream: the last part, the checksums, and gpg's signature.
    pub fn finish(mut self) -> Result<(Stream, Staged)> {
        self.close_part()?;
        if self.parts.is_empty() {
            // An empty stream still makes one (empty) file.
            let name = self.part_name(0);
            let tmp = self.staged.path(&self.dir, &name);
            File::create(tmp)?;
            self.parts.push((name, hex(&Sha256::new().finalize()), 0));
        }
        let sha256 = hex(&std::mem::take(&mut self.whole).finalize());
        if let Some((mut child, stdin)) = self.signer.take() {
            drop(stdin);
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            let status = child.wait()?;
            if !status.success() {
                bail!("gpg could not sign the package: {}", err.trim());
            }
        }
        if self.parts.len() == 1 {
            let part = self.parts[0].0.clone();
            let name = self.name.clone();
            self.staged.rename_staged(&part, &self.dir, &name);
            self.parts[0].0 = name;
        }
        let stream = Stream {
            sha256,
            size: self.total,
            parts: std::mem::take(&mut self.parts),
        };
        Ok((stream, std::mem::take(&mut self.staged)))
    }
}

impl Write for Sink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self
            .current
            .as_ref()
            .is_some_and(|(_, _, size)| *size == self.limit)
        {
            self.close_part()?;
        }
        if self.current.is_none() {
            let name = self.part_name(self.parts.len());
            let tmp = self.staged.path(&self.dir, &name);
            self.current = Some((
                BufWriter::with_capacity(1 << 20, File::create(tmp)?),
                (!self.parts.is_empty()).then(Sha256::new),
                0,
            ));
        }
        let (file, hash, size) = self.current.as_mut().expect("opened above");
        let n = data.len().min((self.limit - *size) as usize);
        let chunk = &data[..n];
        file.write_all(chunk)?;
        if let Some(hash) = hash {
            hash.update(chunk);
        }
        *size += n as u64;
        self.whole.update(chunk);
        self.total += n as u64;
        if let Some((_, pipe)) = self.signer.as_mut()
            && let Some(stdin) = pipe.as_mut()
            && stdin.write_all(chunk).is_err()
        {
            *pipe = None;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
