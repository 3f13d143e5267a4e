//! Publishing: the packages in an output directory become a new release of
//! their Slurm series (see `schema::release`) when they differ from the
//! newest one, in a store or on GitHub. Files go up in an order that never
//! shows a reader something incomplete — data first, then checksums and
//! signatures, then manifests, and the release in the index last. Every
//! file's checksum is checked before it leaves, and an object the store
//! already has with the same SHA-256 is skipped, so a rerun uploads nothing.

mod check;
mod github;
pub mod release;
mod to_store;

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Result, bail};
use serde::Serialize;

use crate::gha;
use crate::manifest::Manifest;
use crate::schema::ReleasePolicy;
use crate::schema::release::PackageEntry;
use crate::store::Store;
use check::plan;
pub use to_store::publish;

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
                    [v] if crate::schema::release::is_patch_of(v, series) => {
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

/// Where `publish` sends an output directory's packages.
pub enum Target {
    GitHub,
    Store {
        store: Box<dyn Store>,
        /// Where the store is served over HTTP(S): prints each package's
        /// URL and the admins' `download` command.
        public_url: Option<String>,
    },
}

/// `publish`: the output directory's packages become a release.
pub struct Job {
    pub dir: PathBuf,
    pub target: Target,
    pub allow_unsigned: bool,
    pub dry_run: bool,
}

pub fn run(job: Job, policy: &ReleasePolicy) -> Result<()> {
    let pinned = policy.signing_key_fingerprint.as_deref();
    let (store, public_url) = match job.target {
        Target::GitHub => {
            return github::publish(&job.dir, job.allow_unsigned, policy, job.dry_run);
        }
        Target::Store { store, public_url } => (store, public_url),
    };
    let _g = gha::Group::new(&format!(
        "Publish {} to {}",
        job.dir.display(),
        store.describe()
    ));
    let outcome = publish(
        store.as_ref(),
        &job.dir,
        job.allow_unsigned,
        pinned,
        job.dry_run,
    )?;
    let bytes: u64 = outcome.uploaded.iter().map(|u| u.size).sum();
    outln!(
        "{}{} uploaded ({:.1} MiB), {} already there, to {}",
        if job.dry_run { "dry run: " } else { "" },
        outcome.uploaded.len(),
        bytes as f64 / (1 << 20) as f64,
        outcome.skipped.len(),
        store.describe()
    );
    let installs = public_url
        .as_deref()
        .map(|url| to_store::install_lines(url, &outcome))
        .unwrap_or_default();
    for line in &installs {
        outln!("{line}");
    }
    if !job.dry_run {
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
