//! Publishing: the packages in an output directory become a new release of
//! their Slurm series (see `schema::release`) when they differ from the
//! newest one, in a store or on GitHub. Files go up in an order that never
//! shows a reader something incomplete — data first, then checksums and
//! signatures, then manifests, and the release in the index last. Every
//! file's checksum is checked before it leaves, and an object the store
//! already has with the same SHA-256 is skipped, so a rerun uploads nothing.

mod github;
pub mod release;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::error::UsageError;
use crate::flags::{PublishCmd, PublishTo};
use crate::gha;
use crate::manifest::Manifest;
use crate::package::PUBLIC_KEY_FILE;
use crate::schema::release::{INDEX_KEY, Index, PackageEntry, ReleaseEntry, ReleaseTag};
use crate::schema::{ReleasePolicy, admin_binary};
use crate::sign::TrustedKey;
use crate::store::local::sha256_file;
use crate::store::{self, Put, Store};
use release::{Cell, Fate};

/// Upload order: a reader who sees a later class can rely on the earlier ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    Data,
    Integrity,
    Manifest,
    Pointer,
}

#[derive(Debug, Clone, Serialize)]
pub struct Upload {
    pub file: PathBuf,
    /// The store key; a package's files are named by file name alone until
    /// their release (and so their directory) is decided.
    pub key: String,
    pub class: Class,
    pub size: u64,
    pub sha256: String,
}

/// One cell's package as found in the output directory.
#[derive(Debug)]
struct Found {
    manifest: Manifest,
    files: Vec<PathBuf>,
    /// Its files, checked, keyed by file name.
    uploads: Vec<Upload>,
}

impl Found {
    fn stem(&self) -> &str {
        &self.manifest.name
    }

    /// The SHA-256s of its tarball, or of its parts in order.
    fn data_sha256(&self) -> Vec<&str> {
        self.uploads
            .iter()
            .filter(|u| u.class == Class::Data)
            .map(|u| u.sha256.as_str())
            .collect()
    }

    /// Its entry in a release whose files are in `dir`.
    fn entry(&self, dir: &str) -> PackageEntry {
        let c = &self.manifest.cell;
        PackageEntry {
            slurm: c.slurm.clone(),
            toolchain: c.toolchain.clone(),
            variant: c.variant.clone(),
            arch: c.arch.clone(),
            fingerprint: self.manifest.fingerprint.clone(),
            dir: dir.to_string(),
            files: self
                .uploads
                .iter()
                .map(|u| (u.key.clone(), (u.size, u.sha256.clone())))
                .collect(),
        }
    }
}

/// Everything in an output directory, checked: the packages, the public key
/// beside them, and the admins' executable.
struct Planned {
    found: Vec<Found>,
    key: Option<Upload>,
    tools: Vec<Upload>,
}

impl Planned {
    /// The Slurm series present, each with its packages and the one Slurm
    /// release they are built from.
    fn series(&self) -> Result<Vec<(String, String, Vec<&Found>)>> {
        let mut by: BTreeMap<&str, Vec<&Found>> = BTreeMap::new();
        for f in &self.found {
            by.entry(f.manifest.cell.slurm.as_str())
                .or_default()
                .push(f);
        }
        by.into_iter()
            .map(|(series, found)| {
                let mut versions: Vec<String> = found
                    .iter()
                    .map(|f| crate::schema::release::slurm_version(&f.manifest.cell.spack_version))
                    .collect();
                versions.sort();
                versions.dedup();
                match versions.as_slice() {
                    [v] if ReleaseTag::parse(&format!("slurm-{v}-2000.01.01"))
                        .is_some_and(|t| t.series() == series) =>
                    {
                        Ok((series.to_string(), v.clone(), found))
                    }
                    [v] => bail!(
                        "Slurm {series}: its packages are built from Spack version {v}, which is not a {series}.N release"
                    ),
                    _ => bail!(
                        "Slurm {series}: the packages are built from different Slurm releases ({}): one release holds one",
                        versions.join(", ")
                    ),
                }
            })
            .collect()
    }
}

fn find_packages(dir: &Path) -> Result<Vec<Found>> {
    let mut found = Vec::new();
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    names.sort();
    for name in names
        .iter()
        .filter(|n| n.ends_with(".manifest.json") && n.starts_with("slurm-"))
    {
        let stem = name.trim_end_matches(".manifest.json");
        if crate::package::is_rehearsal(stem) {
            bail!(
                "{stem} is a rehearsal's package (`build-slurm --rehearse`: `spack install --fake` placeholders, not Slurm); it is never published"
            );
        }
        let manifest: Manifest = serde_json::from_slice(&std::fs::read(dir.join(name))?)
            .with_context(|| format!("{name} is not a package manifest"))?;
        if manifest.name != stem {
            bail!("{name} describes {}, not {stem}", manifest.name);
        }
        let c = &manifest.cell;
        let cell_stem = format!("slurm-{}-{}-{}-{}", c.slurm, c.toolchain, c.variant, c.arch);
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
    let tarball = format!("{stem}.tar.gz");
    let name_of = |p: &Path| p.file_name().unwrap().to_string_lossy().into_owned();
    let data: Vec<&PathBuf> = found
        .files
        .iter()
        .filter(|p| {
            let n = name_of(p);
            n == tarball || (n.starts_with(&format!("{tarball}.part-")) && !n.ends_with(".sha256"))
        })
        .collect();
    if data.is_empty() {
        bail!("{stem}: no {tarball} (nor its parts) beside the manifest");
    }
    let signature = dir.join(format!("{tarball}.asc"));
    if !signature.is_file() && !allow_unsigned {
        bail!(
            "{stem}: {tarball}.asc is missing: unsigned packages are not published (--allow-unsigned for a local test store)"
        );
    }
    let mut uploads = Vec::new();
    let whole_file = dir.join(format!("{tarball}.sha256"));
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
            check_sum_file(&dir.join(format!("{n}.sha256")), &n, &sha)?;
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
        let class = if n.ends_with(".sha256") || n.ends_with(".asc") || n.ends_with(".sizes.json") {
            Class::Integrity
        } else if n.ends_with(".json") && !n.ends_with(".verify.json") {
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
    let name = crate::manifest::sizes_file(stem);
    let read = |n: &str| {
        std::fs::read(dir.join(n))
            .with_context(|| format!("{stem}: {n} is missing: cannot prove who signed the package"))
    };
    let (text, sig) = (read(&name)?, read(&format!("{name}.asc"))?);
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
            .strip_suffix(".sha256")
            .or_else(|| name.strip_suffix(".asc"))
        {
            if !dir.join(base).is_file() {
                bail!("{name} is in {} without {base}", dir.display());
            }
            (Class::Integrity, sha256_file(&dir.join(name))?)
        } else {
            let sha = sha256_file(&dir.join(name))?;
            check_sum_file(&dir.join(format!("{name}.sha256")), name, &sha)?;
            if !dir.join(format!("{name}.asc")).is_file() && !allow_unsigned {
                bail!(
                    "{name}.asc is missing: an unsigned executable is not published (--allow-unsigned for a local test store)"
                );
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
    crate::package::output::parse_checksum_line(&text, name, &path.display().to_string())
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

pub struct Outcome {
    pub uploaded: Vec<Upload>,
    pub skipped: Vec<Upload>,
    /// The releases made (or, in a dry run, that would be), with the
    /// store's entry of each.
    pub releases: Vec<(ReleaseTag, ReleaseEntry)>,
    /// The newest releases that already held everything.
    pub unchanged: Vec<(ReleaseTag, ReleaseEntry)>,
}

/// Makes the next release of each Slurm series in `dir` when it differs
/// from the newest in the store: uploads in class order, the release into
/// the index last.
pub fn publish(
    store: &dyn Store,
    dir: &Path,
    allow_unsigned: bool,
    pinned: Option<&str>,
    dry_run: bool,
) -> Result<Outcome> {
    let planned = plan(dir, allow_unsigned, pinned)?;
    let index = match store.get(INDEX_KEY)? {
        Some(bytes) => Index::parse(&bytes, &format!("the store's {INDEX_KEY}"))?,
        None => Index::default(),
    };
    let key_sha = planned.key.as_ref().map(|k| k.sha256.clone());
    let mut taken: Vec<ReleaseTag> = index
        .releases
        .keys()
        .filter_map(|t| ReleaseTag::parse(t))
        .collect();
    let mut uploads = Vec::new();
    let mut releases = Vec::new();
    let mut unchanged = Vec::new();
    for (series, version, found) in planned.series()? {
        let newest = index.newest_first(Some(&series)).into_iter().next();
        let cells = cells(&found, newest.as_ref().map(|(_, e)| *e));
        let compatible = newest
            .as_ref()
            .is_some_and(|(t, e)| t.version == version && e.key_sha256 == key_sha);
        let decision = release::decide(&cells, newest.is_some(), compatible);
        if !decision.new_release {
            let (tag, entry) = newest.expect("no new release only after one");
            outln!("{}", decision.nothing_new(&series, &tag));
            unchanged.push((tag, entry.clone()));
            continue;
        }
        let local = |stem: &str| {
            *found
                .iter()
                .find(|f| f.stem() == stem)
                .expect("a local package")
        };
        let new_files: BTreeMap<String, String> = decision
            .fates
            .iter()
            .filter(|(_, fate)| matches!(fate, Fate::Publish))
            .flat_map(|(stem, _)| local(stem).uploads.iter())
            .map(|u| (u.key.clone(), u.sha256.clone()))
            .collect();
        let tag = claim_tag(store, &version, &mut taken, &new_files, dry_run)?;
        outln!("release {tag}: {}", decision.summary());
        let release_dir = tag.store_dir();
        let mut entry = ReleaseEntry {
            slurm: series.clone(),
            version: version.clone(),
            key_sha256: key_sha.clone(),
            packages: BTreeMap::new(),
        };
        for (stem, fate) in &decision.fates {
            match fate {
                Fate::Publish => {
                    let f = local(stem);
                    entry.packages.insert(stem.clone(), f.entry(&release_dir));
                    uploads.extend(f.uploads.iter().map(|u| Upload {
                        key: format!("{release_dir}/{}", u.key),
                        ..u.clone()
                    }));
                }
                Fate::Same | Fate::Carry => {
                    let (_, previous) = newest.as_ref().expect("carried from a release");
                    entry
                        .packages
                        .insert(stem.clone(), previous.packages[stem].clone());
                }
                Fate::Leave => {}
            }
        }
        releases.push((tag, entry, newest.map(|(t, _)| t)));
    }
    uploads.extend(planned.key.iter().cloned());
    uploads.extend(planned.tools.iter().cloned());
    uploads.sort_by(|a, b| (a.class, &a.key).cmp(&(b.class, &b.key)));
    let (uploaded, skipped) = put_all(store, uploads, dry_run)?;
    add_releases(store, &releases, dry_run)?;
    Ok(Outcome {
        uploaded,
        skipped,
        releases: releases.into_iter().map(|(t, e, _)| (t, e)).collect(),
        unchanged,
    })
}

/// The next free tag of `version` today, reserved in the store for the files
/// the release adds (see `ReleaseTag::claim_key`): a tag claimed for other
/// files, by another run, is passed over, so no run ever writes into a
/// directory another run's release names; a claim for the same files is this
/// run's own from an earlier attempt. A dry run only reads the claims.
fn claim_tag(
    store: &dyn Store,
    version: &str,
    taken: &mut Vec<ReleaseTag>,
    files: &BTreeMap<String, String>,
    dry_run: bool,
) -> Result<ReleaseTag> {
    let claim = serde_json::to_vec_pretty(&serde_json::json!({ "files": files }))?;
    loop {
        let tag = ReleaseTag::next(version, crate::schema::release::today(), taken.iter());
        let key = tag.claim_key();
        let mut ours = false;
        let mut reserve = |current: Option<Vec<u8>>| -> Result<Option<Vec<u8>>> {
            ours = current.as_ref().is_none_or(|c| *c == claim);
            Ok(current.is_none().then(|| claim.clone()))
        };
        if dry_run {
            reserve(store.get(&key)?)?;
        } else {
            store.update(&key, None, &mut reserve)?;
        }
        if ours {
            return Ok(tag);
        }
        taken.push(tag);
    }
}

/// Each local package against the newest release: in it, with the same data?
fn cells(found: &[&Found], newest: Option<&ReleaseEntry>) -> Vec<Cell> {
    let mut cells: Vec<Cell> = found
        .iter()
        .map(|f| {
            let previous = newest.and_then(|e| e.packages.get(f.stem()));
            Cell {
                stem: f.stem().to_string(),
                local: true,
                previous: previous.is_some(),
                same_data: previous.is_some_and(|p| p.data_sha256(f.stem()) == f.data_sha256()),
            }
        })
        .collect();
    for stem in newest.iter().flat_map(|e| e.packages.keys()) {
        if !cells.iter().any(|c| &c.stem == stem) {
            cells.push(Cell {
                stem: stem.clone(),
                local: false,
                previous: true,
                same_data: false,
            });
        }
    }
    cells
}

/// Every package, the key and the admins' executable in `dir`, checked.
fn plan(dir: &Path, allow_unsigned: bool, pinned: Option<&str>) -> Result<Planned> {
    let mut found = find_packages(dir)?;
    let signer = release_signer(dir, allow_unsigned, pinned)?;
    for f in &mut found {
        f.uploads = plan_package(f, dir, allow_unsigned, signer.as_ref())?;
    }
    let key_file = dir.join(PUBLIC_KEY_FILE);
    let key = if key_file.is_file() {
        Some(Upload {
            key: format!("keys/{PUBLIC_KEY_FILE}"),
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

/// Uploads each file the store does not already hold with the same SHA-256;
/// returns (uploaded, skipped).
fn put_all(
    store: &dyn Store,
    uploads: Vec<Upload>,
    dry_run: bool,
) -> Result<(Vec<Upload>, Vec<Upload>)> {
    let (mut uploaded, mut skipped) = (Vec::new(), Vec::new());
    for u in uploads {
        let present = store.stat(&u.key)?;
        let same = present
            .as_ref()
            .is_some_and(|s| s.size == u.size && s.sha256.as_deref() == Some(u.sha256.as_str()));
        if dry_run {
            outln!(
                "{} {} -> {} ({} bytes)",
                if same { "skip" } else { "put " },
                u.file.display(),
                u.key,
                u.size
            );
        } else if !same {
            let bar = store::progress(u.size, &u.key);
            let put = Put {
                sha256: u.sha256.clone(),
                size: u.size,
                content_type: store::content_type(&u.key),
                // Replaced by later releases: the key, the admins' binary.
                cache_control: (u.class == Class::Pointer
                    || u.key.starts_with(&format!("{}/", admin_binary::STORE_DIR)))
                .then_some(store::SHORT_CACHE),
            };
            store
                .put(&u.key, &u.file, &put, &bar)
                .with_context(|| format!("uploading {}", u.file.display()))?;
            bar.finish_and_clear();
            outln!("put  {} ({} bytes)", u.key, u.size);
        } else {
            outln!("skip {} (same SHA-256)", u.key);
        }
        if same {
            skipped.push(u)
        } else {
            uploaded.push(u)
        }
    }
    Ok((uploaded, skipped))
}

/// Adds the new releases to the index, last: whoever reads it finds every
/// file it names. Merged into what the store holds at that moment (under the
/// local store's lock, or a conditional write on S3), so a concurrent
/// publish's releases stay. Each release was planned against the series'
/// newest release then (`based_on`); if another release of the series became
/// the newest meanwhile with other packages, adding this one would drop what
/// that one brought: an error (publish again to carry it over). The same
/// packages are no change.
fn add_releases(
    store: &dyn Store,
    releases: &[(ReleaseTag, ReleaseEntry, Option<ReleaseTag>)],
    dry_run: bool,
) -> Result<()> {
    let mut merge = |current: Option<Vec<u8>>| -> Result<Option<Vec<u8>>> {
        let mut index = match current {
            Some(bytes) => Index::parse(&bytes, &format!("the store's {INDEX_KEY}"))?,
            None => Index::default(),
        };
        let mut changed = false;
        for (tag, entry, based_on) in releases {
            let newest = index.newest_first(Some(tag.series())).into_iter().next();
            match newest {
                Some((_, e)) if e.packages == entry.packages => continue,
                Some((t, _)) if Some(&t) != based_on.as_ref() => bail!(
                    "release {t} of Slurm {} was published meanwhile by another run, with other packages than {tag}: publish again",
                    tag.series()
                ),
                _ => {}
            }
            index.releases.insert(tag.to_string(), entry.clone());
            changed = true;
        }
        changed.then(|| index.to_bytes()).transpose()
    };
    let changed = if dry_run {
        merge(store.get(INDEX_KEY)?)?.is_some()
    } else {
        store.update(INDEX_KEY, Some(store::SHORT_CACHE), &mut merge)?
    };
    match (dry_run, changed) {
        (_, true) => outln!("put  {INDEX_KEY}"),
        (true, false) => outln!("skip {INDEX_KEY}"),
        (false, false) => outln!("skip {INDEX_KEY} (unchanged)"),
    }
    Ok(())
}

/// Where each package of the newest releases is served from, and the
/// admin's command that installs it from there.
fn install_lines(public_url: &str, outcome: &Outcome) -> Vec<String> {
    let base = public_url.trim_end_matches('/');
    let mut lines = Vec::new();
    for (tag, entry) in outcome.releases.iter().chain(&outcome.unchanged) {
        for (stem, p) in &entry.packages {
            let Some(first) = p
                .files
                .keys()
                .find(|n| crate::schema::release::is_data_file(stem, n))
            else {
                continue;
            };
            lines.push(format!("public: {base}/{}/{first}", p.dir));
            lines.push(format!(
                "  install: slurm-factory download --slurm {} --toolchain {}{} --release {tag} --prefix /opt/slurm/{} --from {base}/",
                p.slurm,
                p.toolchain,
                if p.variant == "gpu" { " --gpu" } else { "" },
                p.slurm
            ));
        }
    }
    lines
}

impl PublishCmd {
    pub fn run(self, root: &Path, policy: &ReleasePolicy) -> Result<()> {
        let pinned = policy.signing_key_fingerprint.as_deref();
        if let Some(url) = &self.public_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(UsageError::new(format!(
                "--public-url {url}: expected an http(s):// URL where the store is served"
            ))
            .into());
        }
        if self.to == PublishTo::Github {
            if self.public_url.is_some() {
                return Err(UsageError::new(
                    "--public-url is where an S3 or local store is served; GitHub releases have their own URLs",
                )
                .into());
            }
            return github::publish(&self.dir, self.allow_unsigned, pinned, self.dry_run);
        }
        let store: Box<dyn Store> = match self.to {
            PublishTo::Github => unreachable!("handled above"),
            PublishTo::Local => Box::new(self.store.local(root)),
            PublishTo::S3 => Box::new(self.store.s3()?),
        };
        let _g = gha::Group::new(&format!(
            "Publish {} to {}",
            self.dir.display(),
            store.describe()
        ));
        let outcome = publish(
            store.as_ref(),
            &self.dir,
            self.allow_unsigned,
            pinned,
            self.dry_run,
        )?;
        let bytes: u64 = outcome.uploaded.iter().map(|u| u.size).sum();
        outln!(
            "{}{} uploaded ({:.1} MiB), {} already there, to {}",
            if self.dry_run { "dry run: " } else { "" },
            outcome.uploaded.len(),
            bytes as f64 / (1 << 20) as f64,
            outcome.skipped.len(),
            store.describe()
        );
        let installs = self
            .public_url
            .as_deref()
            .map(|url| install_lines(url, &outcome))
            .unwrap_or_default();
        for line in &installs {
            outln!("{line}");
        }
        if !self.dry_run {
            let mut md = format!(
                "### Published to {}\n\n| object | size | action |\n|---|---|---|\n",
                store.describe()
            );
            for (u, action) in outcome
                .uploaded
                .iter()
                .map(|u| (u, "uploaded"))
                .chain(outcome.skipped.iter().map(|u| (u, "already there")))
            {
                md.push_str(&format!("| `{}` | {} | {action} |\n", u.key, u.size));
            }
            if !installs.is_empty() {
                md.push_str("\nFor admins:\n\n```sh\n");
                for line in &installs {
                    md.push_str(&format!("{}\n", line.trim_start()));
                }
                md.push_str("```\n");
            }
            gha::append_summary(&md)?;
        }
        Ok(())
    }
}
