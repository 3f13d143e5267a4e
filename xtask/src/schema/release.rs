//! Releases: what a release is called and how a store lists them.
//!
//! A release is one build of one Slurm series, never changed once
//! published: tag `slurm-<version>-<YYYY.MM.DD>[.<n>]`, e.g.
//! `slurm-25.11.6-2026.12.01`, where the version is the Slurm patch release
//! built and the date is the day the release was first drafted (`.2`, `.3`
//! for a second and third release of that series on one day). The newest
//! release of a series is the one with the latest build (date, then `n`).
//! The tags of the earlier layout, one release per series (`slurm-25.11`),
//! still parse: older than any dated build.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// Where a store keeps its index of releases.
pub const INDEX_KEY: &str = "releases/index.json";

/// The day and number of a build within its series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Build {
    pub year: u16,
    pub month: u8,
    pub day: u8,
    /// 1 for the day's first release (no suffix), then 2, 3, …
    pub n: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReleaseTag {
    /// The Slurm release built, `25.11.6`; just the series for a tag of
    /// the earlier layout.
    pub version: String,
    /// `None` for a tag of the earlier layout (`slurm-25.11`).
    pub build: Option<Build>,
}

impl ReleaseTag {
    /// The Slurm series, `25.11`.
    pub fn series(&self) -> &str {
        series_of(&self.version)
    }

    pub fn parse(tag: &str) -> Option<ReleaseTag> {
        let rest = tag.strip_prefix("slurm-")?;
        let (version, build) = match rest.split_once('-') {
            Some((v, b)) => (v, Some(parse_build(b)?)),
            None => (rest, None),
        };
        let ok = match build {
            Some(_) => is_patch_of(version, series_of(version)),
            None => version.split('.').count() == 2 && numeric(version),
        };
        ok.then(|| ReleaseTag {
            version: version.to_string(),
            build,
        })
    }

    /// The next release of `version` drafted on `day`: the day's first,
    /// or one after the series' releases of that day already in `taken`.
    pub fn next<'a>(
        version: &str,
        day: (u16, u8, u8),
        taken: impl IntoIterator<Item = &'a ReleaseTag>,
    ) -> ReleaseTag {
        let series = series_of(version);
        let n = taken
            .into_iter()
            .filter(|t| t.series() == series)
            .filter_map(|t| t.build)
            .filter(|b| (b.year, b.month, b.day) == day)
            .map(|b| b.n + 1)
            .max()
            .unwrap_or(1);
        ReleaseTag {
            version: version.to_string(),
            build: Some(Build {
                year: day.0,
                month: day.1,
                day: day.2,
                n,
            }),
        }
    }

    /// Where a store keeps the files first published in this release.
    pub fn store_dir(&self) -> String {
        format!("releases/{self}")
    }

    /// The object that reserves this release's directory in a store
    /// before anything is uploaded into it: it names the files (key and
    /// SHA-256) the release adds, so a rerun that adds the same files
    /// finds its own claim and any other run takes the next tag.
    pub fn claim_key(&self) -> String {
        format!("{}/claim.json", self.store_dir())
    }
}

impl std::fmt::Display for ReleaseTag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "slurm-{}", self.version)?;
        if let Some(b) = self.build {
            write!(f, "-{:04}.{:02}.{:02}", b.year, b.month, b.day)?;
            if b.n > 1 {
                write!(f, ".{}", b.n)?;
            }
        }
        Ok(())
    }
}

fn parse_build(text: &str) -> Option<Build> {
    let parts: Vec<&str> = text.split('.').collect();
    let (date, n) = match parts.as_slice() {
        [y, m, d] => ([*y, *m, *d], 1),
        [y, m, d, n] => ([*y, *m, *d], n.parse().ok().filter(|n| *n >= 2)?),
        _ => return None,
    };
    let digits = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_digit());
    if !(digits(date[0], 4) && digits(date[1], 2) && digits(date[2], 2)) {
        return None;
    }
    let (year, month, day) = (
        date[0].parse().ok()?,
        date[1].parse().ok()?,
        date[2].parse().ok()?,
    );
    ((1..=12).contains(&month) && (1..=31).contains(&day)).then_some(Build {
        year,
        month,
        day,
        n,
    })
}

/// Dot-separated numbers.
fn numeric(version: &str) -> bool {
    version
        .split('.')
        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether `version` is a Slurm patch release (`25.11.6`) of `series`
/// (`25.11`).
pub fn is_patch_of(version: &str, series: &str) -> bool {
    version.split('.').count() >= 3 && numeric(version) && series_of(version) == series
}

fn series_of(version: &str) -> &str {
    match version.match_indices('.').nth(1) {
        Some((i, _)) => &version[..i],
        None => version,
    }
}

/// The Slurm release a package is built from, from its Spack version:
/// `25-11-6-1` (SchedMD's 25.11.6, packaging 1) is `25.11.6`.
pub fn slurm_version(spack_version: &str) -> String {
    spack_version
        .split('-')
        .take(3)
        .collect::<Vec<_>>()
        .join(".")
}

/// Today in UTC, as a build's day.
pub fn today() -> (u16, u8, u8) {
    let text = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let num = |r: std::ops::Range<usize>| text[r].parse().unwrap_or(0);
    (num(0..4) as u16, num(5..7) as u8, num(8..10) as u8)
}

/// The index of everything a store has published: `releases/index.json`.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub struct Index {
    /// Every release by tag.
    #[serde(default)]
    pub releases: BTreeMap<String, ReleaseEntry>,
    /// The earlier layout's index (a package per cell, in
    /// `releases/<version>/<toolchain>/<variant>/`): read into
    /// `releases` as `slurm-<version>` releases, never written.
    #[serde(default, skip_serializing)]
    packages: BTreeMap<String, PackageEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReleaseEntry {
    /// The Slurm series.
    pub slurm: String,
    /// The Slurm release built.
    pub version: String,
    /// The SHA-256 of the public key its packages are signed with.
    #[serde(default)]
    pub key_sha256: Option<String>,
    /// Every package of the release, by stem.
    pub packages: BTreeMap<String, PackageEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PackageEntry {
    pub slurm: String,
    pub toolchain: String,
    pub variant: String,
    pub arch: String,
    pub fingerprint: Option<String>,
    /// The store directory that holds its files: its release's own, or
    /// that of the earlier release it was carried over from unchanged.
    #[serde(default)]
    pub dir: String,
    /// File name → (size, SHA-256).
    pub files: BTreeMap<String, (u64, String)>,
}

impl PackageEntry {
    /// The SHA-256s of its data: the tarball's, or its parts' in order.
    pub fn data_sha256(&self, stem: &str) -> Vec<&str> {
        self.files
            .iter()
            .filter(|(n, _)| is_data_file(stem, n))
            .map(|(_, (_, sha))| sha.as_str())
            .collect()
    }
}

/// A package's name, the stem of each of its files:
/// `slurm-<version>-<toolchain>-<variant>-<arch>`, unique per cell, so CPU
/// and GPU packages (and every toolchain's) can share one release.
pub fn stem(slurm: &str, toolchain: &str, variant: &str, arch: &str) -> String {
    format!("slurm-{slurm}-{toolchain}-{variant}-{arch}")
}

/// A build's package name: [`stem`], and a rehearsal's carries
/// [`REHEARSAL_SUFFIX`] (it is never published).
pub fn build_stem(
    slurm: &str,
    toolchain: &str,
    variant: &str,
    arch: &str,
    rehearsal: bool,
) -> String {
    let stem = stem(slurm, toolchain, variant, arch);
    if rehearsal {
        stem + REHEARSAL_SUFFIX
    } else {
        stem
    }
}

/// The package a release file belongs to: the stem
/// `slurm-<version>-<toolchain>-<variant>-<arch>` of any
/// `<stem>.<suffix>` (tarball, parts, checksums, signatures, manifest,
/// SBOM, signed sizes). The admins' executable and the public key are no
/// package's.
pub fn package_stem(name: &str) -> Option<String> {
    let rest = name.strip_prefix("slurm-")?;
    let fields: Vec<&str> = rest.splitn(4, '-').collect();
    let [version, toolchain, variant, tail] = fields.as_slice() else {
        return None;
    };
    let (arch, suffix) = tail.split_once('.')?;
    let parts = [*version, *toolchain, *variant, arch];
    (parts.iter().all(|p| !p.is_empty()) && !suffix.is_empty())
        .then(|| stem(version, toolchain, variant, arch))
}

/// What ends a rehearsal's package name: its view holds `spack install
/// --fake` placeholders, so `publish` refuses it by this name.
pub const REHEARSAL_SUFFIX: &str = "-rehearsal";

/// Whether a package stem is a rehearsal's.
pub fn is_rehearsal(stem: &str) -> bool {
    stem.ends_with(REHEARSAL_SUFFIX)
}

/// Whether `name` is the package `stem`'s data: its tarball or a part.
pub fn is_data_file(stem: &str, name: &str) -> bool {
    let tarball = super::files::tarball(stem);
    name == tarball || super::files::is_part_of(&tarball, name)
}

impl Index {
    pub fn parse(bytes: &[u8], what: &str) -> Result<Index> {
        let mut index: Index = serde_json::from_slice(bytes)
            .with_context(|| format!("{what} is not a release index"))?;
        for (stem, mut p) in std::mem::take(&mut index.packages) {
            let tag = format!("slurm-{}", p.slurm);
            if ReleaseTag::parse(&tag).is_none() {
                bail!("{what}: package {stem} names no Slurm series");
            }
            p.dir = format!("releases/{}/{}/{}", p.slurm, p.toolchain, p.variant);
            index
                .releases
                .entry(tag)
                .or_insert_with(|| ReleaseEntry {
                    slurm: p.slurm.clone(),
                    version: p.slurm.clone(),
                    key_sha256: None,
                    packages: BTreeMap::new(),
                })
                .packages
                .insert(stem, p);
        }
        Ok(index)
    }

    /// The releases of `series` (every series with `None`), newest first.
    pub fn newest_first(&self, series: Option<&str>) -> Vec<(ReleaseTag, &ReleaseEntry)> {
        let mut out: Vec<(ReleaseTag, &ReleaseEntry)> = self
            .releases
            .iter()
            .filter_map(|(tag, e)| ReleaseTag::parse(tag).map(|t| (t, e)))
            .filter(|(t, _)| series.is_none_or(|s| t.series() == s))
            .collect();
        out.sort_by(|(a, _), (b, _)| {
            (b.series(), b.build, &b.version).cmp(&(a.series(), a.build, &a.version))
        });
        out
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        Ok((serde_json::to_string_pretty(self)? + "\n").into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip_and_order_by_build() {
        for text in [
            "slurm-25.11.6-2026.12.01",
            "slurm-25.11.6-2026.12.01.2",
            "slurm-25.11",
        ] {
            assert_eq!(ReleaseTag::parse(text).unwrap().to_string(), text);
        }
        for bad in [
            "slurm-25.11.6-2026.12.01.1",
            "slurm-25.11.6-2026.13.01",
            "slurm-25.11.6-26.12.01",
            "slurm-25.11-2026.12.01",
            "slurm-25",
            "slurm-25.x",
            "v25.11",
            "slurm-25.11.6-2026.12.01.2.3",
        ] {
            assert_eq!(ReleaseTag::parse(bad), None, "{bad}");
        }
        let legacy = ReleaseTag::parse("slurm-25.11").unwrap();
        let first = ReleaseTag::next("25.11.6", (2026, 12, 1), [&legacy]);
        assert_eq!(first.to_string(), "slurm-25.11.6-2026.12.01");
        let second = ReleaseTag::next("25.11.7", (2026, 12, 1), [&legacy, &first]);
        assert_eq!(second.to_string(), "slurm-25.11.7-2026.12.01.2");
        // Newer builds order after older ones; a legacy tag is the oldest.
        assert!(second.build > first.build && first.build > legacy.build);
        let other_series = ReleaseTag::parse("slurm-24.11.6-2026.12.01").unwrap();
        assert_eq!(
            ReleaseTag::next("25.11.6", (2026, 12, 1), [&other_series]).to_string(),
            "slurm-25.11.6-2026.12.01"
        );
        assert_eq!(slurm_version("25-11-6-1"), "25.11.6");
        assert!(is_patch_of("25.11.6", "25.11") && is_patch_of("25.11.10", "25.11"));
        for (v, series) in [
            ("25.11", "25.11"),
            ("25.11.6", "24.11"),
            ("25.11.x", "25.11"),
        ] {
            assert!(!is_patch_of(v, series), "{v} of {series}");
        }
        let stem = "slurm-25.11-noble-cpu-x86_64";
        for name in [
            "slurm-25.11-noble-cpu-x86_64.tar.gz",
            "slurm-25.11-noble-cpu-x86_64.tar.gz.part-001.sha256",
            "slurm-25.11-noble-cpu-x86_64.sizes.json.asc",
            "slurm-25.11-noble-cpu-x86_64.spdx.json",
        ] {
            assert_eq!(package_stem(name).as_deref(), Some(stem), "{name}");
        }
        for name in [
            "slurm-factory-x86_64-linux",
            "slurm-factory-x86_64-linux.asc",
            "slurm-factory-signing-key.asc",
            "slurm-25.11-noble-cpu-x86_64",
        ] {
            assert_eq!(package_stem(name), None, "{name}");
        }
        let day = today();
        assert!(day.0 >= 2025 && (1..=12).contains(&day.1));
    }

    #[test]
    fn an_index_of_the_earlier_layout_reads_as_series_releases() {
        let old = br#"{"packages":{"slurm-24.11-jammy-cpu-x86_64":{"slurm":"24.11","toolchain":"jammy","variant":"cpu","arch":"x86_64","fingerprint":null,"files":{"slurm-24.11-jammy-cpu-x86_64.tar.gz":[3,"abc"]}}}}"#;
        let index = Index::parse(old, "old").unwrap();
        let [(ref tag, entry)] = index.newest_first(Some("24.11"))[..] else {
            panic!("one release expected");
        };
        assert_eq!(tag.to_string(), "slurm-24.11");
        let p = &entry.packages["slurm-24.11-jammy-cpu-x86_64"];
        assert_eq!(p.dir, "releases/24.11/jammy/cpu");
        assert_eq!(p.data_sha256("slurm-24.11-jammy-cpu-x86_64"), ["abc"]);
        let written = index.to_bytes().unwrap();
        assert_eq!(Index::parse(&written, "new").unwrap(), index);
    }
}
