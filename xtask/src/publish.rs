//! Publishing: the packages in an output directory go to a store, in an order
//! that never shows a reader something incomplete — data first, then
//! checksums and signatures, then manifests, and the index last. Every file's
//! checksum is checked before it leaves, and an object the store already has
//! with the same SHA-256 is skipped, so a rerun uploads nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::io::Read as _;

use crate::error::UsageError;
use crate::flags::{PublishCmd, PublishTo};
use crate::gha;
use crate::manifest::Manifest;
use crate::package::PUBLIC_KEY_FILE;
use crate::schema::{ReleasePolicy, admin_binary};
use crate::sign::TrustedKey;
use crate::store::github::{AssetFile, GitHub};
use crate::store::local::sha256_file;
use crate::store::{self, Put, Store};

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
}

/// Where the index lives in a store.
pub const INDEX_KEY: &str = "releases/index.json";

/// The index of everything published: `releases/index.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Index {
    pub packages: BTreeMap<String, IndexEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IndexEntry {
    pub slurm: String,
    pub toolchain: String,
    pub variant: String,
    pub arch: String,
    pub fingerprint: Option<String>,
    /// File name → (size, sha256), under the cell's release directory.
    pub files: BTreeMap<String, (u64, String)>,
}

/// A cell's directory in a store: `releases/<version>/<toolchain>/<variant>`.
pub fn release_dir(slurm: &str, toolchain: &str, variant: &str) -> String {
    format!("releases/{slurm}/{toolchain}/{variant}")
}

fn manifest_dir(m: &Manifest) -> String {
    release_dir(&m.cell.slurm, &m.cell.toolchain, &m.cell.variant)
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
        found.push(Found { manifest, files });
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
        uploads.push(upload(file, &found.manifest, Class::Data, sha.clone())?);
        sha
    } else {
        // Parts: one read gives each part's SHA-256 and the whole's, so the
        // whole's checksum (what `download` checks) is proven before upload.
        let paths: Vec<&Path> = data.iter().map(|p| p.as_path()).collect();
        let (part_shas, whole_sha) = crate::store::local::sha256_parts(&paths)?;
        for (file, sha) in data.iter().zip(part_shas) {
            let n = name_of(file);
            check_sum_file(&dir.join(format!("{n}.sha256")), &n, &sha)?;
            uploads.push(upload(file, &found.manifest, Class::Data, sha)?);
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
        uploads.push(upload(file, &found.manifest, class, sha)?);
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

fn upload(file: &Path, m: &Manifest, class: Class, sha256: String) -> Result<Upload> {
    let name = file.file_name().unwrap().to_string_lossy();
    Ok(Upload {
        file: file.to_path_buf(),
        key: format!("{}/{name}", manifest_dir(m)),
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
}

/// Uploads in class order; the index is read, merged and written last.
pub fn publish(
    store: &dyn Store,
    dir: &Path,
    allow_unsigned: bool,
    pinned: Option<&str>,
    dry_run: bool,
) -> Result<Outcome> {
    let (found, uploads) = plan(dir, allow_unsigned, pinned)?;
    publish_planned(store, &found, uploads, dry_run)
}

/// Every upload of every package in `dir`, checked, in upload order.
fn plan(
    dir: &Path,
    allow_unsigned: bool,
    pinned: Option<&str>,
) -> Result<(Vec<Found>, Vec<Upload>)> {
    let found = find_packages(dir)?;
    let signer = release_signer(dir, allow_unsigned, pinned)?;
    let mut uploads = Vec::new();
    for f in &found {
        uploads.extend(plan_package(f, dir, allow_unsigned, signer.as_ref())?);
    }
    uploads.extend(plan_admin_binary(dir, allow_unsigned)?);
    let key_file = dir.join(PUBLIC_KEY_FILE);
    if key_file.is_file() {
        uploads.push(Upload {
            key: format!("keys/{PUBLIC_KEY_FILE}"),
            class: Class::Pointer,
            size: std::fs::metadata(&key_file)?.len(),
            sha256: sha256_file(&key_file)?,
            file: key_file,
        });
    }
    uploads.sort_by(|a, b| (a.class, &a.key).cmp(&(b.class, &b.key)));
    Ok((found, uploads))
}

fn publish_planned(
    store: &dyn Store,
    found: &[Found],
    uploads: Vec<Upload>,
    dry_run: bool,
) -> Result<Outcome> {
    let mut outcome = Outcome {
        uploaded: Vec::new(),
        skipped: Vec::new(),
    };
    // What each signature signs, by key: a tarball's data files (the whole,
    // or its parts in order), or one file.
    let mut data_of: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for u in uploads.iter().filter(|u| !u.key.ends_with(".asc")) {
        data_of
            .entry(signed_key(u).to_string())
            .or_default()
            .push(u.file.clone());
    }
    // Signed objects some of whose bytes the store does not have yet.
    let mut changed = std::collections::BTreeSet::new();
    let mut public_key = None;
    for mut u in uploads {
        let present = store.stat(&u.key)?;
        let same = present
            .as_ref()
            .is_some_and(|s| s.size == u.size && s.sha256.as_deref() == Some(u.sha256.as_str()));
        if !same {
            changed.insert(signed_key(&u).to_string());
        }
        // A re-pack of the same view gives the same files but signatures
        // made at another time. The store's signatures still sign those
        // bytes; keep them rather than replace files admins may have checked.
        if !same
            && present.is_some()
            && let Some(tarball) = u.key.strip_suffix(".asc")
            && let Some(data) = data_of.get(tarball)
            && !changed.contains(tarball)
        {
            let dir = u.file.parent().unwrap_or(Path::new("."));
            if let Some(kept) = stored_signature(store, &u.key, data, dir, &mut public_key)? {
                outln!(
                    "keep {} (a good signature of the same bytes by the same key)",
                    u.key
                );
                (u.size, u.sha256) = kept;
                outcome.skipped.push(u);
                continue;
            }
        }
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
            outcome.skipped.push(u)
        } else {
            outcome.uploaded.push(u)
        }
    }
    // The index last: whoever reads it finds every file it names. Merged
    // into what the store holds at that moment (under the local store's
    // lock), so a concurrent publish's entries stay.
    let entries: Vec<(String, IndexEntry)> = found
        .iter()
        .map(|f| {
            let m = &f.manifest;
            let mut files = BTreeMap::new();
            // Its own files only: another arch of the cell shares the directory.
            let dir = format!("{}/", manifest_dir(m));
            let own = format!("{}.", m.name);
            for u in outcome.uploaded.iter().chain(&outcome.skipped) {
                if let Some(name) = u.key.strip_prefix(&dir).filter(|n| n.starts_with(&own)) {
                    files.insert(name.to_string(), (u.size, u.sha256.clone()));
                }
            }
            let entry = IndexEntry {
                slurm: m.cell.slurm.clone(),
                toolchain: m.cell.toolchain.clone(),
                variant: m.cell.variant.clone(),
                arch: m.cell.arch.clone(),
                fingerprint: m.fingerprint.clone(),
                files,
            };
            (m.name.clone(), entry)
        })
        .collect();
    let mut merge = |current: Option<Vec<u8>>| -> Result<Option<Vec<u8>>> {
        let mut index: Index = match current {
            Some(bytes) => serde_json::from_slice(&bytes)
                .context("the store's releases/index.json is not an index")?,
            None => Index::default(),
        };
        let before = serde_json::to_string(&index)?;
        index.packages.extend(entries.iter().cloned());
        if before == serde_json::to_string(&index)? {
            return Ok(None);
        }
        Ok(Some(
            (serde_json::to_string_pretty(&index)? + "\n").into_bytes(),
        ))
    };
    let changed = if dry_run {
        merge(store.get(INDEX_KEY)?)?.is_some()
    } else {
        store.update(INDEX_KEY, Some(store::SHORT_CACHE), &mut merge)?
    };
    match (dry_run, changed) {
        (true, true) => outln!("put  {INDEX_KEY}"),
        (true, false) => outln!("skip {INDEX_KEY}"),
        (false, true) => outln!("put  {INDEX_KEY}"),
        (false, false) => outln!("skip {INDEX_KEY} (unchanged)"),
    }
    Ok(outcome)
}

/// The key of what a signature beside this upload signs: a part's tarball
/// (its key without `.part-NNN`), or the upload itself.
fn signed_key(u: &Upload) -> &str {
    match u.key.rfind(".part-") {
        Some(i) if u.class == Class::Data => &u.key[..i],
        _ => &u.key,
    }
}

/// The store's signature at `key`, when it is a good signature over the local
/// `data` (which the store holds byte-identical) by the key that signed the
/// package (its public key beside it in `dir`): the stored file's size and
/// SHA-256, to list in the index. `None` means the new signature goes up.
fn stored_signature(
    store: &dyn Store,
    key: &str,
    data: &[PathBuf],
    dir: &Path,
    public_key: &mut Option<TrustedKey>,
) -> Result<Option<(u64, String)>> {
    let key_file = dir.join(PUBLIC_KEY_FILE);
    if public_key.is_none() && key_file.is_file() {
        let armored = std::fs::read(&key_file)?;
        *public_key = Some(TrustedKey::import(
            &armored,
            &key_file.display().to_string(),
            None,
        )?);
    }
    let (Some(trusted), Some(stored)) = (public_key.as_ref(), store.get(key)?) else {
        return Ok(None);
    };
    let mut signed: Box<dyn std::io::Read> = Box::new(std::io::empty());
    for file in data {
        let f = std::fs::File::open(file).with_context(|| format!("reading {}", file.display()))?;
        signed = Box::new(signed.chain(f));
    }
    let verdict = trusted.verify(&stored, &mut signed, key);
    Ok(verdict.ok().map(|()| {
        let sha = crate::package::output::hex(&sha2::Sha256::digest(&stored));
        (stored.len() as u64, sha)
    }))
}

/// One release per Slurm version: its cells' files and the public key.
fn publish_github(
    dir: &Path,
    allow_unsigned: bool,
    pinned: Option<&str>,
    dry_run: bool,
) -> Result<()> {
    let (found, uploads) = plan(dir, allow_unsigned, pinned)?;
    let gh = GitHub::from_env()?;
    let mut versions: Vec<&str> = found
        .iter()
        .map(|f| f.manifest.cell.slurm.as_str())
        .collect();
    versions.sort();
    versions.dedup();
    let mut md = String::from(
        "### Published to GitHub Releases\n\n| release | uploaded | already there |\n|---|---:|---:|\n",
    );
    for version in versions {
        let tag = format!("slurm-{version}");
        let files: Vec<AssetFile<'_>> = uploads
            .iter()
            .filter(|u| {
                u.key.starts_with(&format!("releases/{version}/"))
                    || u.key.starts_with("keys/")
                    || u.key.starts_with(&format!("{}/", admin_binary::STORE_DIR))
            })
            .map(|u| AssetFile {
                name: u.file.file_name().unwrap().to_string_lossy().into_owned(),
                path: &u.file,
                size: u.size,
                sha256: u.sha256.clone(),
            })
            .collect();
        let _g = gha::Group::new(&format!("Release {tag} on {}/{}", gh.owner, gh.repo));
        let out = gh.publish(&tag, &format!("Slurm {version}"), &files, dry_run)?;
        outln!(
            "{}release {tag}: {} uploaded, {} already there{}",
            if dry_run { "dry run: " } else { "" },
            out.uploaded.len(),
            out.skipped.len(),
            if out.html_url.is_empty() {
                String::new()
            } else {
                format!(", published at {}", out.html_url)
            }
        );
        md.push_str(&format!(
            "| {tag} | {} | {} |\n",
            out.uploaded.len(),
            out.skipped.len()
        ));
    }
    if !dry_run {
        gha::append_summary(&md)?;
    }
    Ok(())
}

/// Where each published package is served from, and the admin's command
/// that installs it from there.
fn install_lines(public_url: &str, outcome: &Outcome) -> Vec<String> {
    let base = public_url.trim_end_matches('/');
    let mut lines = Vec::new();
    for u in outcome.uploaded.iter().chain(&outcome.skipped) {
        let first_data = u.class == Class::Data
            && (u.key.ends_with(".tar.gz") || u.key.ends_with(".tar.gz.part-000"));
        let parts: Vec<&str> = u.key.split('/').collect();
        if let (true, ["releases", version, toolchain, variant, _]) = (first_data, parts.as_slice())
        {
            lines.push(format!("public: {base}/{}", u.key));
            lines.push(format!(
                "  install: slurm-factory download --slurm {version} --toolchain {toolchain}{} --prefix /opt/slurm/{version} --from {base}/",
                if *variant == "gpu" { " --gpu" } else { "" }
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
            return publish_github(&self.dir, self.allow_unsigned, pinned, self.dry_run);
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
