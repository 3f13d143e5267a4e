//! `publish --to local|s3`: the next release of each Slurm series into a
//! store, its files under `releases/<tag>/` and the release into the index
//! last. The tag is claimed in the store before anything is uploaded into
//! its directory, so concurrent runs never write into each other's release.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};

use super::check::plan;
use super::release::{self, Cell, Fate};
use super::{Class, Found, Upload};
use crate::schema::admin_binary;
use crate::schema::release::{INDEX_KEY, Index, ReleaseEntry, ReleaseTag};
use crate::store::{self, Put, Store};

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
    super::release::add_unbuilt(&mut cells, newest.iter().flat_map(|e| e.packages.keys()));
    cells
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
pub(super) fn install_lines(public_url: &str, outcome: &Outcome) -> Vec<String> {
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
