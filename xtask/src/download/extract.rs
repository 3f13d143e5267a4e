//! Unpacking a package tarball into a fresh staging directory, refusing every
//! entry that could reach outside it or that a package never holds: absolute
//! paths, `..`, entries outside the package's top directory, symlinks that
//! point out (or that later entries would be written through), hard links to
//! anything but a file already unpacked, device files and FIFOs, setuid and
//! setgid bits. Each refusal names the entry. Files are created with
//! `O_CREAT | O_EXCL`, which fails on any existing name, a symlink included:
//! nothing is ever written through a link.

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result};
use tar::EntryType;

use crate::schema::archive::link_stays_inside;

/// After the archive's end: only zeros (tar pads to its record size). Bytes
/// after the end are what a second archive or a tampered stream looks like:
/// refused rather than ignored.
pub fn only_padding_left(rest: &mut impl Read) -> Result<()> {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = rest.read(&mut buf).context("reading the tarball's end")?;
        if n == 0 {
            return Ok(());
        }
        if buf[..n].iter().any(|&b| b != 0) {
            anyhow::bail!(
                "refusing the tarball: it has data after the end of the archive (a second archive, or a tampered stream)"
            );
        }
    }
}

/// The module file a manifest names, under the package's `modules/`: plain
/// relative names only (`slurm/25.11-noble`), like the archive's entries.
pub fn module_path(module: &str) -> Result<String> {
    let plain = |c: &str| {
        !c.is_empty()
            && !c.starts_with('.')
            && c.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b))
    };
    if !module.split('/').all(plain) {
        anyhow::bail!(
            "refusing the package: its manifest names the module `{}`, not a plain relative name like `slurm/25.11-noble`",
            module.escape_debug()
        );
    }
    Ok(format!("{module}.lua"))
}

pub struct Unpacked {
    pub files: u64,
    pub bytes: u64,
    /// Directory modes, applied once the package is verified (deepest first),
    /// so that a failed install can still be removed.
    pub dir_modes: Vec<(PathBuf, u32)>,
}

/// Unpacks the tar stream `reader` (already decompressed) whose entries all
/// sit under `top/` into `dest`, an empty directory.
pub fn unpack(reader: impl Read, top: &str, dest: &Path) -> Result<Unpacked> {
    let mut archive = tar::Archive::new(reader);
    let mut out = Unpacked {
        files: 0,
        bytes: 0,
        dir_modes: Vec::new(),
    };
    let mut symlinks: HashSet<PathBuf> = HashSet::new();
    for entry in archive.entries().context("reading the tarball")? {
        let mut entry = entry.context("reading the tarball")?;
        let raw = entry.path().context("an entry's path")?.into_owned();
        let shown = raw.display().to_string();
        let refuse = |why: &str| anyhow::anyhow!("refusing archive entry `{shown}`: {why}");
        let kind = entry.header().entry_type();
        if matches!(kind, EntryType::XGlobalHeader) {
            continue;
        }
        let rel = inside(&raw, top).map_err(|why| refuse(&why))?;
        if let Some(link) = ancestors(&rel).find(|a| symlinks.contains(*a)) {
            return Err(refuse(&format!(
                "it lies under the symlink `{}`",
                link.display()
            )));
        }
        let mode = entry
            .header()
            .mode()
            .map_err(|_| refuse("unreadable mode"))?;
        if mode & 0o6000 != 0 {
            return Err(refuse(&format!("setuid/setgid bits (mode {mode:o})")));
        }
        if rel.as_os_str().is_empty() {
            if kind != EntryType::Directory {
                return Err(refuse("the package's top directory is not a directory"));
            }
            continue;
        }
        let dst = dest.join(&rel);
        let parent = dst.parent().expect("inside dest");
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
        match kind {
            EntryType::Directory => {
                match std::fs::symlink_metadata(&dst) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => return Err(refuse("a directory where another entry already is")),
                    Err(_) => std::fs::create_dir(&dst)
                        .with_context(|| format!("creating {}", dst.display()))?,
                }
                // The sticky bit stays (setuid/setgid were refused above).
                out.dir_modes.push((dst, mode & 0o1777));
            }
            EntryType::Regular | EntryType::Continuous => {
                if let Some(exts) = entry.pax_extensions().ok().flatten()
                    && exts
                        .filter_map(|e| e.ok())
                        .any(|e| e.key_bytes().starts_with(b"GNU.sparse"))
                {
                    return Err(refuse(
                        "a sparse file (PAX GNU.sparse), which is not unpacked as such",
                    ));
                }
                let file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&dst)
                    .map_err(|e| match e.kind() {
                        std::io::ErrorKind::AlreadyExists => refuse("it appears twice"),
                        _ => write_error(e, &dst),
                    })?;
                let mut w = BufWriter::with_capacity(256 << 10, file);
                let n = std::io::copy(&mut entry, &mut w).map_err(|e| write_error(e, &dst))?;
                let file = w
                    .into_inner()
                    .map_err(|e| write_error(e.into_error(), &dst))?;
                file.set_permissions(std::fs::Permissions::from_mode(mode & 0o777))?;
                out.files += 1;
                out.bytes += n;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .ok()
                    .flatten()
                    .ok_or_else(|| refuse("a symlink without a target"))?
                    .into_owned();
                if !link_stays_inside(&rel, &target) {
                    return Err(refuse(&format!(
                        "a symlink to `{}`, outside the package",
                        target.display()
                    )));
                }
                std::os::unix::fs::symlink(&target, &dst).map_err(|e| match e.kind() {
                    std::io::ErrorKind::AlreadyExists => refuse("it appears twice"),
                    _ => anyhow::Error::new(e).context(format!("writing {}", dst.display())),
                })?;
                symlinks.insert(rel);
            }
            EntryType::Link => {
                let target = entry
                    .link_name()
                    .ok()
                    .flatten()
                    .ok_or_else(|| refuse("a hard link without a target"))?
                    .into_owned();
                let target_rel = inside(&target, top).map_err(|why| {
                    refuse(&format!("a hard link to `{}`: {why}", target.display()))
                })?;
                let through_link = ancestors(&target_rel).any(|a| symlinks.contains(a))
                    || symlinks.contains(&target_rel);
                let source = dest.join(&target_rel);
                let is_file = std::fs::symlink_metadata(&source).is_ok_and(|m| m.is_file());
                if through_link || !is_file {
                    return Err(refuse(&format!(
                        "a hard link to `{}`, which is not a file unpacked before it",
                        target.display()
                    )));
                }
                std::fs::hard_link(&source, &dst).map_err(|e| match e.kind() {
                    std::io::ErrorKind::AlreadyExists => refuse("it appears twice"),
                    _ => anyhow::Error::new(e).context(format!("writing {}", dst.display())),
                })?;
                out.files += 1;
            }
            EntryType::Char | EntryType::Block => return Err(refuse("a device file")),
            EntryType::Fifo => return Err(refuse("a FIFO")),
            other => return Err(refuse(&format!("an unsupported entry type {other:?}"))),
        }
    }
    out.dir_modes
        .sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
    Ok(out)
}

/// `path` relative to the package's top directory, or why it is not inside.
fn inside(path: &Path, top: &str) -> std::result::Result<PathBuf, String> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::Prefix(_) => return Err("an absolute path".into()),
            Component::ParentDir => return Err("a `..` path".into()),
            Component::CurDir => {}
            Component::Normal(p) => parts.push(p),
        }
    }
    match parts.split_first() {
        Some((first, rest)) if *first == top => Ok(rest.iter().collect()),
        _ => Err(format!("outside the package's directory `{top}/`")),
    }
}

/// Every proper ancestor of a relative path (`a`, `a/b` for `a/b/c`).
fn ancestors(rel: &Path) -> impl Iterator<Item = &Path> {
    rel.ancestors()
        .skip(1)
        .filter(|a| !a.as_os_str().is_empty())
}

/// An error writing the staged tree; a full disk says so first.
fn write_error(e: std::io::Error, path: &Path) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::StorageFull {
        anyhow::anyhow!("disk full: writing {}: {e}", path.display())
    } else {
        anyhow::Error::new(e).context(format!("writing {}", path.display()))
    }
}

/// Applies the directory modes recorded while unpacking.
pub fn apply_dir_modes(modes: &[(PathBuf, u32)]) -> Result<()> {
    for (dir, mode) in modes {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(*mode))
            .with_context(|| format!("setting the mode of {}", dir.display()))?;
    }
    Ok(())
}

/// Writes `bytes` as `path` through a temporary file beside it.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().context("a file path")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("writing in {}", dir.display()))?;
    tmp.write_all(bytes)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_must_stay_in_the_top_directory() {
        assert_eq!(
            inside(Path::new("p/view/bin"), "p").unwrap(),
            Path::new("view/bin")
        );
        assert_eq!(inside(Path::new("./p/x"), "p").unwrap(), Path::new("x"));
        assert_eq!(inside(Path::new("p"), "p").unwrap(), Path::new(""));
        assert!(
            inside(Path::new("/etc/passwd"), "p")
                .unwrap_err()
                .contains("absolute")
        );
        assert!(inside(Path::new("p/../x"), "p").unwrap_err().contains(".."));
        assert!(
            inside(Path::new("q/x"), "p")
                .unwrap_err()
                .contains("outside")
        );
    }

    #[test]
    fn symlinks_must_resolve_inside() {
        assert!(link_stays_inside(
            Path::new("view/lib/libx.so"),
            Path::new("libx.so.1")
        ));
        assert!(link_stays_inside(Path::new("view/lib64"), Path::new("lib")));
        assert!(link_stays_inside(Path::new("a/b/c"), Path::new("../../d")));
        // `s -> .` then `x -> s/..` would climb out: no `..` after a name.
        assert!(!link_stays_inside(Path::new("x"), Path::new("s/..")));
        assert!(!link_stays_inside(
            Path::new("a/b/c"),
            Path::new("../../../d")
        ));
        assert!(!link_stays_inside(Path::new("etc"), Path::new("/etc")));
        assert!(!link_stays_inside(Path::new("x"), Path::new("..")));
    }
}
