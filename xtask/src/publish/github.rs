//! `publish --to github`: the next release of each Slurm series as a GitHub
//! release, when this run built something the newest release does not have.
//! The release is filled as a draft (a draft an interrupted run left is
//! completed) and published once; the packages this run did not change are
//! copied into it from the newest release, byte for byte.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use octocrab::models::repos::{Asset, Release};

use super::release::{self, Cell, Fate};
use super::{Found, Planned, Upload};
use crate::gha;
use crate::schema::admin_binary;
use crate::schema::release::{ReleaseTag, is_data_file};
use crate::schema::{PUBLIC_KEY_FILE, ReleasePolicy};
use crate::store::github::{GitHub, Origin, Target, Wanted};

pub fn publish(
    dir: &Path,
    allow_unsigned: bool,
    policy: &ReleasePolicy,
    dry_run: bool,
) -> Result<()> {
    let pinned = policy.signing_key_fingerprint.as_deref();
    let planned = super::plan(dir, allow_unsigned, pinned)?;
    let gh = GitHub::from_env()?;
    if gh.repository() != policy.github {
        gha::warning(&format!(
            "publishing to {}, not to {} (releases.github in spack-env/matrix.yaml) where `download` looks by default: admins need `download --repo {}`",
            gh.repository(),
            policy.github,
            gh.repository()
        ));
    }
    let all = gh.releases()?;
    let tagged: Vec<(ReleaseTag, &Release)> = all
        .iter()
        .filter_map(|r| ReleaseTag::parse(&r.tag_name).map(|t| (t, r)))
        .collect();
    let mut md = String::from(
        "### Published to GitHub Releases\n\n| Slurm | release | uploaded | carried over | already there |\n|---|---|---:|---:|---:|\n",
    );
    for (series, version, found) in planned.series()? {
        let newest = tagged
            .iter()
            .filter(|(t, r)| t.series() == series && !r.draft)
            .max_by(|(a, _), (b, _)| a.build.cmp(&b.build));
        let previous = newest.map(|(_, r)| gh.with_all_assets(r)).transpose()?;
        let previous = previous.as_ref();
        let cells = cells(&gh, &found, previous)?;
        let same_key = match (previous, &planned.key) {
            (Some(r), Some(key)) => match r.assets.iter().find(|a| a.name == PUBLIC_KEY_FILE) {
                Some(a) => gh.holds_file(a, key.size, &key.sha256)?,
                None => false,
            },
            (_, None) => {
                previous.is_some_and(|r| !r.assets.iter().any(|a| a.name == PUBLIC_KEY_FILE))
            }
            (None, Some(_)) => false,
        };
        let compatible = newest.is_some_and(|(t, _)| t.version == version) && same_key;
        let decision = release::decide(&cells, newest.is_some(), compatible);
        if !decision.new_release {
            let (tag, _) = newest.expect("no new release only after one");
            outln!("{}", decision.nothing_new(&series, &tag));
            md.push_str(&format!("| {series} | {tag} (unchanged) | 0 | 0 | 0 |\n"));
            continue;
        }
        // A draft an interrupted run left for this Slurm release is completed.
        let draft = tagged
            .iter()
            .filter(|(t, r)| t.series() == series && r.draft && t.version == version)
            .max_by(|(a, _), (b, _)| a.build.cmp(&b.build));
        let (tag, target) = match draft {
            Some((t, r)) => (t.clone(), Target::Draft(Box::new((*r).clone()))),
            None => {
                let taken = tagged.iter().map(|(t, _)| t);
                let tag = ReleaseTag::next(&version, crate::schema::release::today(), taken);
                let new = Target::New {
                    tag: tag.to_string(),
                };
                (tag, new)
            }
        };
        let from = newest.map(|(t, _)| t.to_string()).unwrap_or_default();
        let wanted = wanted(&planned, &found, &decision.fates, previous, &from, dir);
        let _g = gha::Group::new(&format!(
            "Release {tag} on {}/{}{}",
            gh.owner,
            gh.repo,
            if matches!(target, Target::Draft(_)) {
                " (completing its draft)"
            } else {
                ""
            }
        ));
        outln!("release {tag}: {}", decision.summary());
        let notes = carried_note(&decision.fates, &from)
            + &format!(
                "\nWhere releases are immutable, GitHub's release attestation proves this release and its files:\n\n```sh\ngh release verify {tag} --repo {owner}/{repo}\ngh release verify-asset {tag} NAME --repo {owner}/{repo}\n```\n",
                owner = gh.owner,
                repo = gh.repo
            );
        let out = gh.publish(
            target,
            &format!("Slurm {version} (build {tag})"),
            &notes,
            &wanted,
            dry_run,
        )?;
        outln!(
            "{}release {tag}: {} uploaded, {} carried over, {} already there{}",
            if dry_run { "dry run: " } else { "" },
            out.uploaded.len(),
            out.carried.len(),
            out.skipped.len(),
            if out.html_url.is_empty() {
                String::new()
            } else {
                format!(", published at {}", out.html_url)
            }
        );
        md.push_str(&format!(
            "| {series} | {tag} | {} | {} | {} |\n",
            out.uploaded.len(),
            out.carried.len(),
            out.skipped.len()
        ));
    }
    if !dry_run {
        gha::append_summary(&md)?;
    }
    Ok(())
}

/// The packages of a release, by stem: assets named `<stem>.…` whose stem
/// has data (a tarball or its parts).
fn packages(r: &Release) -> BTreeMap<String, Vec<&Asset>> {
    let mut by: BTreeMap<String, Vec<&Asset>> = BTreeMap::new();
    for a in &r.assets {
        if let Some(stem) = crate::schema::release::package_stem(&a.name) {
            by.entry(stem).or_default().push(a);
        }
    }
    by.retain(|stem, assets| assets.iter().any(|a| is_data_file(stem, &a.name)));
    by
}

/// Each local package against the newest release: in it, with the same data?
fn cells(gh: &GitHub, found: &[&Found], previous: Option<&Release>) -> Result<Vec<Cell>> {
    let before = previous.map(packages).unwrap_or_default();
    let mut cells = Vec::new();
    for f in found {
        let old = before.get(f.stem());
        let mut same = old.is_some();
        if let Some(old) = old {
            let old_data: Vec<&&Asset> = old
                .iter()
                .filter(|a| is_data_file(f.stem(), &a.name))
                .collect();
            let new_data: Vec<&Upload> = f
                .uploads
                .iter()
                .filter(|u| u.class == super::Class::Data)
                .collect();
            same = old_data.len() == new_data.len();
            for u in &new_data {
                if !same {
                    break;
                }
                same = match old_data.iter().find(|a| a.name == u.key) {
                    Some(a) => gh.holds_file(a, u.size, &u.sha256)?,
                    None => false,
                };
            }
        }
        cells.push(Cell {
            stem: f.stem().to_string(),
            local: true,
            previous: old.is_some(),
            same_data: same,
        });
    }
    super::release::add_unbuilt(&mut cells, before.keys());
    Ok(cells)
}

/// Every asset of the new release and where it comes from: this run's
/// files for what it built new or changed; the newest release's for the
/// rest; the public key and the admins' executable from this run when it
/// has them, else carried over.
fn wanted<'a>(
    planned: &'a Planned,
    found: &[&'a Found],
    fates: &[(String, Fate)],
    previous: Option<&Release>,
    from: &str,
    spool: &'a Path,
) -> Vec<Wanted<'a>> {
    let local = |u: &'a Upload| Wanted {
        name: u.file.file_name().unwrap().to_string_lossy().into_owned(),
        size: u.size,
        origin: Origin::Local {
            path: &u.file,
            sha256: u.sha256.clone(),
        },
    };
    let carried = |a: &Asset| Wanted {
        name: a.name.clone(),
        size: a.size as u64,
        origin: Origin::Carried {
            asset: Box::new(a.clone()),
            from: from.to_string(),
            spool,
        },
    };
    let before = previous.map(packages).unwrap_or_default();
    let mut out = Vec::new();
    for (stem, fate) in fates {
        match fate {
            Fate::Publish => {
                let f = found
                    .iter()
                    .find(|f| f.stem() == stem)
                    .expect("a local package");
                out.extend(f.uploads.iter().map(local));
            }
            Fate::Same | Fate::Carry => out.extend(before[stem].iter().map(|a| carried(a))),
            Fate::Leave => {}
        }
    }
    let previous_assets = previous.map(|r| r.assets.as_slice()).unwrap_or_default();
    match &planned.key {
        Some(k) => out.push(local(k)),
        None => out.extend(
            previous_assets
                .iter()
                .filter(|a| a.name == PUBLIC_KEY_FILE)
                .map(carried),
        ),
    }
    if planned.tools.is_empty() {
        out.extend(
            previous_assets
                .iter()
                .filter(|a| admin_binary::is_release_file(&a.name))
                .map(carried),
        );
    } else {
        out.extend(planned.tools.iter().map(local));
    }
    out
}

/// What the release notes say of the packages carried over.
fn carried_note(fates: &[(String, Fate)], from: &str) -> String {
    let carried: Vec<&str> = fates
        .iter()
        .filter(|(_, f)| matches!(f, Fate::Same | Fate::Carry))
        .map(|(s, _)| s.as_str())
        .collect();
    if carried.is_empty() {
        return String::new();
    }
    format!(
        "\nCarried over unchanged (byte-identical) from {from}: {}.\n",
        carried.join(", ")
    )
}
