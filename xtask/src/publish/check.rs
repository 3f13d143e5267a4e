//! What an output directory holds, checked before anything leaves it: each
//! package's files against their checksum files, its signature against the
//! pinned release key, and the admins' executable beside them.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::{Class, Found, Planned, Upload};
use crate::error::{Remediable, Remedy};
use crate::manifest::Manifest;
use crate::schema::admin_binary;
use crate::schema::{PUBLIC_KEY_FILE, files};
use crate::sign::TrustedKey;
use crate::store::local::sha256_file;

fn find_packages(dir: &Path) -> Result<Vec<Found>> {
    let mut found = Vec::new();
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    names.sort();
    for name in names
        .iter()
        .filter(|n| n.ends_with(files::MANIFEST_SUFFIX) && n.starts_with("slurm-"))
    {
        let stem = name.trim_end_matches(files::MANIFEST_SUFFIX);
        if crate::schema::release::is_rehearsal(stem) {
            bail!(
                "{stem} is a rehearsal's package (a rehearsal build: `spack install --fake` placeholders, not Slurm); it is never published"
            );
        }
        let manifest: Manifest = serde_json::from_slice(&std::fs::read(dir.join(name))?)
            .with_context(|| format!("{name} is not a package manifest"))?;
        if manifest.name != stem {
            bail!("{name} describes {}, not {stem}", manifest.name);
        }
        let c = &manifest.cell;
        let cell_stem = crate::schema::release::stem(&c.slurm, &c.toolchain, &c.variant, &c.arch);
        if cell_stem != stem {
            bail!(
                "{name}: its cell (Slurm {}, {}, {}, {}) is named {cell_stem}, not {stem}: refusing a package whose files and manifest disagree",
                c.slurm,
                c.toolchain,
                c.variant,
                c.arch
            );
        }
        let files = names
            .iter()
            .filter(|n| n.starts_with(&format!("{stem}.")))
            .map(|n| dir.join(n))
            .collect();
        found.push(Found {
            manifest,
            files,
            uploads: Vec::new(),
        });
    }
    if found.is_empty() {
        bail!(
            "no packages in {} (looked for slurm-*.manifest.json)",
            dir.display()
        );
    }
    Ok(found)
}

/// Checks one package's files against its checksum files and signature, and
/// lists what to upload.
fn plan_package(
    found: &Found,
    dir: &Path,
    allow_unsigned: bool,
    signer: Option<&TrustedKey>,
) -> Result<Vec<Upload>> {
    let stem = &found.manifest.name;
    let tarball = files::tarball(stem);
    let name_of = |p: &Path| p.file_name().unwrap().to_string_lossy().into_owned();
    let data: Vec<&PathBuf> = found
        .files
        .iter()
        .filter(|p| {
            let n = name_of(p);
            n == tarball || files::is_part_of(&tarball, &n)
        })
        .collect();
    if data.is_empty() {
        bail!("{stem}: no {tarball} (nor its parts) beside the manifest");
    }
    let signature = dir.join(files::signature(&tarball));
    if !signature.is_file() && !allow_unsigned {
        return Err(Remediable::new(
            format!(
                "{stem}: {} is missing: unsigned packages are not published",
                files::signature(&tarball)
            ),
            Remedy::AllowUnsigned,
        )
        .into());
    }
    let mut uploads = Vec::new();
    let whole_file = dir.join(files::checksum(&tarball));
    let whole_sha = if let [file] = data.as_slice() {
        // The store checks the bytes against this in the read that uploads
        // them, and makes nothing visible on a mismatch: one read, not two.
        let sha = claimed_sum(&whole_file, &tarball)?;
        uploads.push(upload(file, Class::Data, sha.clone())?);
        sha
    } else {
        // Parts: one read gives each part's SHA-256 and the whole's, so the
        // whole's checksum (what `download` checks) is proven before upload.
        let paths: Vec<&Path> = data.iter().map(|p| p.as_path()).collect();
        let (part_shas, whole_sha) = crate::store::local::sha256_parts(&paths)?;
        for (file, sha) in data.iter().zip(part_shas) {
            let n = name_of(file);
            check_sum_file(&dir.join(files::checksum(&n)), &n, &sha)?;
            uploads.push(upload(file, Class::Data, sha)?);
        }
        check_sum_file(&whole_file, &tarball, &whole_sha)?;
        whole_sha
    };
    if let Some(key) = signer {
        check_signer(stem, &tarball, &whole_sha, dir, key)?;
    }
    for file in &found.files {
        let n = name_of(file);
        let class = if n.ends_with(files::CHECKSUM_SUFFIX)
            || n.ends_with(files::SIGNATURE_SUFFIX)
            || n == files::sizes(stem)
        {
            Class::Integrity
        } else if n == files::manifest(stem) || n == files::sbom(stem) {
            Class::Manifest
        } else {
            continue;
        };
        let sha = sha256_file(file)?;
        uploads.push(upload(file, class, sha)?);
    }
    Ok(uploads)
}

/// The package is signed by the release key: its signed statement of sizes
/// (what `download` checks first) verifies with that key and names these
/// exact bytes. Checking it costs one small file, not another read of the
/// tarball: the upload itself checks the bytes against `sha256`.
fn check_signer(
    stem: &str,
    tarball: &str,
    sha256: &str,
    dir: &Path,
    key: &TrustedKey,
) -> Result<()> {
    let name = crate::schema::files::sizes(stem);
    let read = |n: &str| {
        std::fs::read(dir.join(n))
            .with_context(|| format!("{stem}: {n} is missing: cannot prove who signed the package"))
    };
    let (text, sig) = (read(&name)?, read(&files::signature(&name))?);
    key.verify(&sig, &mut &text[..], &name).with_context(|| {
        format!(
            "{stem}: not signed by the pinned release key {} (releases.signing_key_fingerprint): refusing to publish it",
            key.fingerprint
        )
    })?;
    let sizes: crate::manifest::Sizes = serde_json::from_slice(&text)
        .with_context(|| format!("{name} is not a statement of sizes"))?;
    if sizes.tarball != tarball || sizes.sha256 != sha256 {
        bail!(
            "{stem}: its signed {name} describes {} with SHA-256 {}, not these bytes ({sha256}): refusing to publish it",
            sizes.tarball,
            sizes.sha256
        );
    }
    Ok(())
}

/// The key every package must be signed by: the one pinned in the release
/// policy, found beside the packages. `None` when nothing is pinned (or for
/// an unsigned local test store).
fn release_signer(
    dir: &Path,
    allow_unsigned: bool,
    pinned: Option<&str>,
) -> Result<Option<TrustedKey>> {
    let Some(pinned) = pinned.filter(|_| !allow_unsigned) else {
        return Ok(None);
    };
    let file = dir.join(PUBLIC_KEY_FILE);
    let armored = std::fs::read(&file).with_context(|| {
        format!(
            "no {PUBLIC_KEY_FILE} in {}: cannot prove the packages are signed by the pinned release key {pinned}",
            dir.display()
        )
    })?;
    TrustedKey::import(&armored, &file.display().to_string(), Some(pinned)).map(Some)
}

/// The admins' executable (`admin-binary`), when the directory holds it:
/// checked against its `.sha256` and signed, to the store's stable `tools/`
/// location (and into every GitHub release).
fn plan_admin_binary(dir: &Path, allow_unsigned: bool) -> Result<Vec<Upload>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| admin_binary::is_release_file(n))
        .collect();
    names.sort();
    let mut uploads = Vec::new();
    for name in &names {
        let (class, sha) = if let Some(base) = name
            .strip_suffix(files::CHECKSUM_SUFFIX)
            .or_else(|| name.strip_suffix(files::SIGNATURE_SUFFIX))
        {
            if !dir.join(base).is_file() {
                bail!("{name} is in {} without {base}", dir.display());
            }
            (Class::Integrity, sha256_file(&dir.join(name))?)
        } else {
            let sha = sha256_file(&dir.join(name))?;
            check_sum_file(&dir.join(files::checksum(name)), name, &sha)?;
            if !dir.join(files::signature(name)).is_file() && !allow_unsigned {
                return Err(Remediable::new(
                    format!(
                        "{} is missing: an unsigned executable is not published",
                        files::signature(name)
                    ),
                    Remedy::AllowUnsigned,
                )
                .into());
            }
            (Class::Data, sha)
        };
        let file = dir.join(name);
        uploads.push(Upload {
            key: format!("{}/{name}", admin_binary::STORE_DIR),
            class,
            size: std::fs::metadata(&file)?.len(),
            sha256: sha,
            file,
        });
    }
    Ok(uploads)
}

fn upload(file: &Path, class: Class, sha256: String) -> Result<Upload> {
    let name = file.file_name().unwrap().to_string_lossy();
    Ok(Upload {
        file: file.to_path_buf(),
        key: name.into_owned(),
        class,
        size: std::fs::metadata(file)?.len(),
        sha256,
    })
}

/// The SHA-256 a `sha256sum` line gives for `name`.
fn claimed_sum(path: &Path, name: &str) -> Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("{} is missing", path.display()))?;
    crate::checksum::parse_checksum_line(&text, name, &path.display().to_string())
}

/// A `sha256sum` line must name the file and match what is on disk.
fn check_sum_file(path: &Path, name: &str, actual: &str) -> Result<()> {
    let sum = claimed_sum(path, name)?;
    if sum != actual {
        bail!(
            "{name} does not match {}: its SHA-256 is {actual}, the file says {sum}",
            path.display()
        );
    }
    Ok(())
}

/// Every package, the key and the admins' executable in `dir`, checked.
pub(super) fn plan(dir: &Path, allow_unsigned: bool, pinned: Option<&str>) -> Result<Planned> {
    let mut found = find_packages(dir)?;
    let signer = release_signer(dir, allow_unsigned, pinned)?;
    for f in &mut found {
        f.uploads = plan_package(f, dir, allow_unsigned, signer.as_ref())?;
    }
    let key_file = dir.join(PUBLIC_KEY_FILE);
    let key = if key_file.is_file() {
        Some(Upload {
            key: crate::schema::public_key_key(),
            class: Class::Pointer,
            size: std::fs::metadata(&key_file)?.len(),
            sha256: sha256_file(&key_file)?,
            file: key_file,
        })
    } else {
        None
    };
    Ok(Planned {
        found,
        key,
        tools: plan_admin_binary(dir, allow_unsigned)?,
    })
}
