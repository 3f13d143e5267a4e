//! The tar stream of a package: a view plus generated files under one top
//! directory, entries sorted, owner and mtime fixed, symlinks, hard links and
//! permissions kept, so the same input always gives the same bytes.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::schema::archive::link_stays_inside;

use anyhow::{Context, Result, bail};
use tar::{EntryType, Header};

/// One thing that goes into the archive, in archive order.
#[derive(Debug)]
pub enum Entry {
    Dir {
        path: String,
        mode: u32,
    },
    /// `inode` is set for files with several links: all but the first (in
    /// archive order) become hard links to it.
    File {
        path: String,
        mode: u32,
        source: PathBuf,
        size: u64,
        inode: Option<(u64, u64)>,
    },
    Bytes {
        path: String,
        mode: u32,
        data: Vec<u8>,
    },
    Symlink {
        path: String,
        target: String,
    },
    HardLink {
        path: String,
        target: String,
    },
}

impl Entry {
    fn path(&self) -> &str {
        match self {
            Entry::Dir { path, .. }
            | Entry::File { path, .. }
            | Entry::Bytes { path, .. }
            | Entry::Symlink { path, .. }
            | Entry::HardLink { path, .. } => path,
        }
    }
}

/// Walks `view` and lists its entries under `prefix` (e.g. `name/view`),
/// refusing anything that would not survive relocation.
pub fn scan_view(view: &Path, prefix: &str) -> Result<Vec<Entry>> {
    let meta = std::fs::symlink_metadata(view)
        .with_context(|| format!("reading the view {}", view.display()))?;
    if !meta.is_dir() {
        bail!("the view {} is not a directory", view.display());
    }
    let mut entries = vec![Entry::Dir {
        path: format!("{prefix}/"),
        mode: meta.mode() & 0o7777,
    }];
    for item in walkdir::WalkDir::new(view).min_depth(1).sort_by_file_name() {
        let item = item.with_context(|| format!("walking {}", view.display()))?;
        let rel = item.path().strip_prefix(view).expect("under the view");
        let rel_str = rel
            .to_str()
            .with_context(|| format!("{}: the path is not UTF-8", item.path().display()))?;
        let path = format!("{prefix}/{rel_str}");
        let meta = item.path().symlink_metadata()?;
        let mode = meta.mode() & 0o7777;
        if mode & 0o6000 != 0 {
            bail!(
                "{}: setuid/setgid files are not shipped",
                item.path().display()
            );
        }
        let kind = meta.file_type();
        if kind.is_dir() {
            entries.push(Entry::Dir {
                path: format!("{path}/"),
                mode,
            });
        } else if kind.is_symlink() {
            let target = std::fs::read_link(item.path())?;
            check_symlink(rel, &target)
                .with_context(|| format!("{} is not relocatable", item.path().display()))?;
            let target = target
                .to_str()
                .context("symlink target is not UTF-8")?
                .to_string();
            entries.push(Entry::Symlink { path, target });
        } else if kind.is_file() {
            let inode = (meta.nlink() > 1).then(|| (meta.dev(), meta.ino()));
            entries.push(Entry::File {
                path,
                mode,
                source: item.path().to_path_buf(),
                size: meta.len(),
                inode,
            });
        } else {
            bail!(
                "{} is not relocatable: only regular files, directories and links can be packaged",
                item.path().display()
            );
        }
    }
    Ok(entries)
}

/// A symlink must stay inside the view, and be relative so it moves with it.
fn check_symlink(rel: &Path, target: &Path) -> Result<()> {
    if target.is_absolute() {
        bail!(
            "absolute symlink to {} (it would leave the view once relocated)",
            target.display()
        );
    }
    if !link_stays_inside(rel, target) {
        bail!(
            "symlink to {} leaves the view (or climbs with `..` after a name, which download refuses)",
            target.display()
        );
    }
    Ok(())
}

/// Sorts the entries by path and turns every later copy of a hard-linked file
/// into a link to the first, so a link never precedes its target.
pub fn in_archive_order(mut entries: Vec<Entry>) -> Vec<Entry> {
    entries.sort_by(|a, b| a.path().cmp(b.path()));
    let mut first: HashMap<(u64, u64), String> = HashMap::new();
    for entry in &mut entries {
        if let Entry::File {
            path,
            inode: Some(inode),
            ..
        } = entry
        {
            match first.get(inode) {
                Some(target) => {
                    *entry = Entry::HardLink {
                        path: path.clone(),
                        target: target.clone(),
                    }
                }
                None => {
                    first.insert(*inode, path.clone());
                }
            }
        }
    }
    entries
}

/// Writes the entries, in archive order, as a tar stream.
pub fn write_tar<W: Write>(out: W, entries: &[Entry]) -> Result<W> {
    let mut tar = tar::Builder::new(out);
    tar.mode(tar::HeaderMode::Deterministic);
    for entry in entries {
        let mut h = Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        match entry {
            Entry::Dir { path, mode } => {
                h.set_entry_type(EntryType::Directory);
                h.set_mode(*mode);
                h.set_size(0);
                tar.append_data(&mut h, path, std::io::empty())?;
            }
            Entry::File {
                path,
                mode,
                source,
                size,
                ..
            } => {
                h.set_entry_type(EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(*size);
                let file = std::fs::File::open(source)
                    .with_context(|| format!("reading {}", source.display()))?;
                // A file that changes size while we read it would corrupt the stream.
                let mut reader = std::io::Read::take(file, *size);
                tar.append_data(&mut h, path, &mut reader)
                    .with_context(|| format!("archiving {}", source.display()))?;
                // tar pads a short read without a word: the archive would be misaligned.
                if reader.limit() != 0 {
                    bail!(
                        "{} shrank while it was archived: package a view nothing is writing to",
                        source.display()
                    );
                }
            }
            Entry::Bytes { path, mode, data } => {
                h.set_entry_type(EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                tar.append_data(&mut h, path, &data[..])?;
            }
            Entry::Symlink { path, target } => {
                h.set_entry_type(EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                tar.append_link(&mut h, path, target)?;
            }
            Entry::HardLink { path, target } => {
                h.set_entry_type(EntryType::Link);
                h.set_mode(0o644);
                h.set_size(0);
                tar.append_link(&mut h, path, target)?;
            }
        }
    }
    Ok(tar.into_inner()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_inside_the_view_are_fine() {
        check_symlink(Path::new("lib/libfoo.so"), Path::new("libfoo.so.1")).unwrap();
        check_symlink(Path::new("bin/x"), Path::new("../lib/x")).unwrap();
    }

    #[test]
    fn symlinks_leaving_the_view_are_refused() {
        assert!(check_symlink(Path::new("lib/a"), Path::new("/etc/passwd")).is_err());
        let err = check_symlink(Path::new("lib/a"), Path::new("../../outside")).unwrap_err();
        assert!(err.to_string().contains("leaves the view"));
        // What download would refuse is not packaged either.
        assert!(check_symlink(Path::new("lib/a"), Path::new("b/../c")).is_err());
    }
}
