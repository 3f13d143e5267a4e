//! Spack and its builtin packages at the commits the matrix pins, as the
//! `git archive` tarballs an image build copies in: from a local copy (no
//! network) or from a shallow `git clone`, and always checked by commit.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::error::{Remediable, Remedy};
use crate::matrix::SpackPins;
use crate::process;

/// Where a local copy is looked up when `--spack-sources` is not given.
pub const SOURCES_VAR: &str = "SLURM_FACTORY_SPACK_SOURCES";

/// One pinned repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    /// `spack` or `spack-packages`: the tarball's name before `-<ref>.tar.gz`,
    /// and its name in the image's build context.
    pub name: &'static str,
    pub repository: String,
    pub git_ref: String,
    pub commit: String,
}

impl Pin {
    /// `spack-v1.1.0.tar.gz`: the name a local copy holds it under.
    pub fn file_name(&self) -> String {
        format!("{}-{}.tar.gz", self.name, self.git_ref)
    }
    pub fn clone_url(&self) -> String {
        format!("https://github.com/{}.git", self.repository)
    }
}

pub fn pins(spack: &SpackPins) -> [Pin; 2] {
    [
        Pin {
            name: "spack",
            repository: spack.repository.clone(),
            git_ref: spack.git_ref.clone(),
            commit: spack.commit.clone(),
        },
        Pin {
            name: "spack-packages",
            repository: spack.packages_repository.clone(),
            git_ref: spack.packages_ref.clone(),
            commit: spack.packages_commit.clone(),
        },
    ]
}

/// Where the tarballs come from: a directory that holds them, or a cache
/// directory that a shallow clone fills when they are missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// `--spack-sources DIR` / `$SLURM_FACTORY_SPACK_SOURCES`: must hold both.
    Local(PathBuf),
    /// Filled by `git clone --depth 1 --branch <ref>` when a tarball is missing.
    Clone { cache: PathBuf },
}

impl Origin {
    pub fn new(explicit: Option<&Path>, cache: &Path) -> Origin {
        match explicit {
            Some(dir) => Origin::Local(dir.to_path_buf()),
            None => Origin::Clone {
                cache: cache.to_path_buf(),
            },
        }
    }

    /// One line per tarball for `--dry-run`.
    pub fn describe(&self, pins: &[Pin]) -> Vec<String> {
        pins.iter()
            .map(|p| match self {
                Origin::Local(dir) => format!(
                    "{} from {} (must be commit {})",
                    p.file_name(),
                    dir.display(),
                    p.commit
                ),
                Origin::Clone { cache } => format!(
                    "{} from {} if present, else git clone --depth 1 --branch {} {} (must be commit {})",
                    p.file_name(),
                    cache.display(),
                    p.git_ref,
                    p.clone_url(),
                    p.commit
                ),
            })
            .collect()
    }

    /// The checked tarball of each pin, fetching what a clone origin lacks.
    pub fn tarballs(&self, pins: &[Pin]) -> Result<Vec<PathBuf>> {
        pins.iter()
            .map(|pin| {
                let path = match self {
                    Origin::Local(dir) => {
                        let path = dir.join(pin.file_name());
                        if !path.is_file() {
                            bail!(
                                "{}: no {} (the Spack sources must hold {}; unset {SOURCES_VAR} to clone them from GitHub)",
                                dir.display(),
                                pin.file_name(),
                                pins.iter()
                                    .map(Pin::file_name)
                                    .collect::<Vec<_>>()
                                    .join(" and ")
                            );
                        }
                        path
                    }
                    Origin::Clone { cache } => {
                        let path = cache.join(pin.file_name());
                        if !path.is_file() || commit_of(&path).ok().flatten() != Some(pin.commit.clone()) {
                            clone(pin, &path)?;
                        }
                        path
                    }
                };
                check(pin, &path)?;
                Ok(path)
            })
            .collect()
    }
}

/// Refuses a tarball that is not the pinned commit.
pub fn check(pin: &Pin, tarball: &Path) -> Result<()> {
    match commit_of(tarball)? {
        Some(c) if c == pin.commit => Ok(()),
        Some(c) => bail!(
            "{} is commit {c}, but spack-env/matrix.yaml pins {} {} at {}",
            tarball.display(),
            pin.repository,
            pin.git_ref,
            pin.commit
        ),
        None => bail!(
            "{} names no commit (not a `git archive` tarball), but spack-env/matrix.yaml pins {} at {}",
            tarball.display(),
            pin.git_ref,
            pin.commit
        ),
    }
}

/// The commit `git archive` records in a tarball's pax global header
/// (what `git get-tar-commit-id` prints), if it has one.
pub fn commit_of(tarball: &Path) -> Result<Option<String>> {
    let file =
        std::fs::File::open(tarball).with_context(|| format!("opening {}", tarball.display()))?;
    let mut gz = flate2::read::GzDecoder::new(file);
    let mut header = [0u8; 512];
    if gz.read_exact(&mut header).is_err() {
        return Ok(None);
    }
    // A pax global header: type 'g', its records follow in the next blocks.
    if header[156] != b'g' {
        return Ok(None);
    }
    let size_field = std::str::from_utf8(&header[124..136])
        .unwrap_or("")
        .trim_matches(|c: char| c == '\0' || c == ' ');
    let size = usize::from_str_radix(size_field, 8).unwrap_or(0);
    if size == 0 || size > 4096 {
        return Ok(None);
    }
    let mut records = vec![0u8; size];
    if gz.read_exact(&mut records).is_err() {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&records);
    Ok(text.lines().find_map(|rec| {
        let (_, kv) = rec.split_once(' ')?;
        let commit = kv.strip_prefix("comment=")?;
        (commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| commit.to_string())
    }))
}

/// `git clone --depth 1 --branch <ref>` into a scratch directory beside
/// `out`, then `git archive` of it into `out` (renamed into place whole).
fn clone(pin: &Pin, out: &Path) -> Result<()> {
    let dir = out.parent().context("the cache has no parent")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let scratch = tempfile::Builder::new()
        .prefix(".clone-")
        .tempdir_in(dir)
        .with_context(|| format!("creating a scratch directory in {}", dir.display()))?;
    let repo = scratch.path().join("repo");
    let tmp = scratch.path().join("archive.tar.gz");
    outln!(
        "git clone --depth 1 --branch {} {} (no local copy: set {SOURCES_VAR} to use one)",
        pin.git_ref,
        pin.clone_url()
    );
    let git = |args: &[&std::ffi::OsStr]| -> Result<()> {
        let sh = process::shell()?;
        let code = process::status(sh.cmd("git").args(args))
            .context("git is needed to fetch Spack when no local copy is given")?;
        if code != 0 {
            let what = args
                .first()
                .map_or(String::new(), |a| a.to_string_lossy().into_owned());
            return Err(Remediable::new(format!("git {what} failed"), Remedy::SpackSources).into());
        }
        Ok(())
    };
    git(&[
        "clone".as_ref(),
        "--quiet".as_ref(),
        "--depth".as_ref(),
        "1".as_ref(),
        "--branch".as_ref(),
        pin.git_ref.as_ref(),
        pin.clone_url().as_ref(),
        repo.as_os_str(),
    ])?;
    let prefix = format!("--prefix={}/", pin.name);
    git(&[
        "-C".as_ref(),
        repo.as_os_str(),
        "archive".as_ref(),
        "--format=tar.gz".as_ref(),
        prefix.as_ref(),
        "-o".as_ref(),
        tmp.as_os_str(),
        "HEAD".as_ref(),
    ])?;
    check(pin, &tmp)?;
    std::fs::rename(&tmp, out).with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git_archive_like(commit: &str) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let record = format!("comment={commit}\n");
        let rec = format!("{} {record}", record.len() + 3);
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XGlobalHeader);
        h.set_path("pax_global_header").unwrap();
        h.set_size(rec.len() as u64);
        h.set_mode(0o666);
        h.set_cksum();
        builder.append(&h, rec.as_bytes()).unwrap();
        let mut f = tar::Header::new_ustar();
        f.set_path("spack/README.md").unwrap();
        f.set_size(2);
        f.set_mode(0o644);
        f.set_cksum();
        builder.append(&f, &b"hi"[..]).unwrap();
        let tar = builder.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        gz.finish().unwrap()
    }

    fn pin(commit: &str) -> Pin {
        Pin {
            name: "spack",
            repository: "spack/spack".into(),
            git_ref: "v1.1.0".into(),
            commit: commit.into(),
        }
    }

    #[test]
    fn a_copy_of_another_commit_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let good = "2e907202bcc8209a6a62243aab50c179b524cc3b";
        let other = "1111111111111111111111111111111111111111";
        std::fs::write(
            dir.path().join("spack-v1.1.0.tar.gz"),
            git_archive_like(other),
        )
        .unwrap();
        let origin = Origin::Local(dir.path().to_path_buf());
        let err = origin.tarballs(&[pin(good)]).unwrap_err().to_string();
        assert!(err.contains(&format!("is commit {other}")), "{err}");
        assert!(
            err.contains(&format!("pins spack/spack v1.1.0 at {good}")),
            "{err}"
        );

        std::fs::write(
            dir.path().join("spack-v1.1.0.tar.gz"),
            git_archive_like(good),
        )
        .unwrap();
        let got = origin.tarballs(&[pin(good)]).unwrap();
        assert_eq!(got, [dir.path().join("spack-v1.1.0.tar.gz")]);
    }

    #[test]
    fn a_tarball_without_a_commit_and_a_missing_copy_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let origin = Origin::Local(dir.path().to_path_buf());
        let good = "2e907202bcc8209a6a62243aab50c179b524cc3b";
        let err = origin.tarballs(&[pin(good)]).unwrap_err().to_string();
        assert!(err.contains("no spack-v1.1.0.tar.gz"), "{err}");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &[0u8; 1024]).unwrap();
        std::fs::write(dir.path().join("spack-v1.1.0.tar.gz"), gz.finish().unwrap()).unwrap();
        let err = origin.tarballs(&[pin(good)]).unwrap_err().to_string();
        assert!(err.contains("names no commit"), "{err}");
    }
}
