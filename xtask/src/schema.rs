//! What we publish and what an installer may rely on: the release policy and
//! the admins' binary's names. The producer (`admin-binary`, `publish`) and
//! the consumers (`download`, the workflows, the README) name these here.

use anyhow::{Context, Result};

use crate::matrix::Matrix;

/// The matrix this executable was built from: the admins' binary carries it,
/// so it needs no checkout to know where releases are and who signs them.
const BUILT_IN_MATRIX: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../spack-env/matrix.yaml"
));

/// Where releases are, which key must sign them, and the names this build
/// knows. A release may offer more (a Slurm version the matrix has since
/// dropped): `download` asks the source before calling a name unknown.
#[derive(Debug, Clone)]
pub struct ReleasePolicy {
    /// `owner/name` of the repository whose GitHub Releases carry the packages.
    pub github: String,
    /// The release signing key's fingerprint, once one is pinned.
    pub signing_key_fingerprint: Option<String>,
    /// The architecture packages are built for.
    pub arch: String,
    pub toolchains: Vec<String>,
    pub slurm_versions: Vec<String>,
}

impl ReleasePolicy {
    pub fn of(matrix: &Matrix) -> ReleasePolicy {
        ReleasePolicy {
            github: matrix.releases.github.clone(),
            signing_key_fingerprint: matrix.releases.signing_key_fingerprint.clone(),
            arch: matrix.arch.clone(),
            toolchains: matrix.toolchains.iter().map(|t| t.name.clone()).collect(),
            slurm_versions: matrix.slurm.iter().map(|s| s.version.clone()).collect(),
        }
    }

    /// The policy of the matrix compiled into this executable.
    pub fn built_in() -> Result<ReleasePolicy> {
        let matrix = Matrix::parse(BUILT_IN_MATRIX)
            .context("the matrix built into this executable is invalid")?;
        Ok(ReleasePolicy::of(&matrix))
    }
}

/// The admins' executable.
pub mod admin_binary {
    /// The Rust target it is built for: glibc 2.28 is Rocky Linux 8's, the
    /// oldest toolchain, so it runs on every supported OS as it comes.
    pub const TARGET: &str = "x86_64-unknown-linux-gnu.2.28";
    /// The `cargo build` target directory (under the project's `target/`).
    pub const TARGET_DIR: &str = "target/admin-binary";
    /// The tools that build it, from PyPI, pinned (`.ci/install` and the
    /// release workflow install exactly these).
    pub const BUILD_TOOLS: [&str; 2] = ["cargo-zigbuild==0.24.0", "ziglang==0.17.0"];
    /// Where the store keeps the newest one: a stable location for admins
    /// (`<public URL>/tools/<name>`), replaced by every release.
    pub const STORE_DIR: &str = "tools";

    /// The released file's name: stable across releases, so
    /// `releases/latest/download/<name>` always finds the newest.
    pub fn file_name(arch: &str) -> String {
        format!("slurm-factory-{arch}-linux")
    }

    /// Whether a file in an output directory is the binary (of any arch) or
    /// its checksum or signature.
    pub fn is_release_file(name: &str) -> bool {
        let base = name
            .strip_suffix(".sha256")
            .or_else(|| name.strip_suffix(".asc"))
            .unwrap_or(name);
        base.strip_prefix("slurm-factory-")
            .and_then(|rest| rest.strip_suffix("-linux"))
            .is_some_and(|arch| !arch.is_empty() && !arch.contains(['/', '.']))
    }
}

/// Paths inside the build container. The container run mounts the host
/// directories here, so the rendered files are the same on every host.
pub mod paths {
    /// The rendered environment directory (read-only).
    pub const ENV: &str = "/opt/slurm-factory/env";
    /// This repository's `spack-repo/` (read-only).
    pub const SPACK_REPO: &str = "/opt/slurm-factory/spack-repo";
    /// Persistent caches: downloaded sources and Spack's misc cache.
    pub const SOURCE_CACHE: &str = "/opt/slurm-factory/cache/source";
    pub const MISC_CACHE: &str = "/opt/slurm-factory/cache/misc";
    /// The local directory store (`target/slurm-factory/store` on the host).
    pub const LOCAL_STORE: &str = "/opt/slurm-factory/store";
    /// Where Spack unpacks and builds (the debug bundle is collected from here).
    pub const BUILD_STAGE: &str = "/tmp/spack-stage";
    /// Where Spack installs, padded so binaries can be relocated.
    pub const INSTALL_ROOT: &str = "/opt/slurm/software";
    /// Where Spack writes the slurm stage's modules.
    pub const MODULES_ROOT: &str = "/opt/slurm/modules";

    /// The mounts every build gets (work, debug bundle, keys, hand-over, mirror, ccache).
    pub mod mnt {
        pub const WORK: &str = "/opt/slurm-factory/work";
        pub const DEBUG: &str = "/opt/slurm-factory/debug";
        pub const KEYS: &str = "/opt/slurm-factory/keys";
        pub const OUT: &str = "/opt/slurm-factory/out";
        pub const MIRROR: &str = "/opt/slurm-factory/mirror";
        pub const CCACHE: &str = "/opt/slurm-factory/cache/ccache";
    }
}

/// The name of the public key file published beside the packages.
pub const PUBLIC_KEY_FILE: &str = "slurm-factory-signing-key.asc";

/// Where a store keeps the public key of its newest release.
pub fn public_key_key() -> String {
    format!("keys/{PUBLIC_KEY_FILE}")
}

/// A package's files, named from its stem (`schema::release::stem`): the one
/// place each suffix is written. `package` writes these names, `publish`,
/// `verify`, the report and `download` find files by them.
pub mod files {
    pub const TARBALL_SUFFIX: &str = ".tar.gz";
    pub const CHECKSUM_SUFFIX: &str = ".sha256";
    pub const SIGNATURE_SUFFIX: &str = ".asc";
    pub const MANIFEST_SUFFIX: &str = ".manifest.json";
    const PART_INFIX: &str = ".part-";

    /// `<stem>.tar.gz`
    pub fn tarball(stem: &str) -> String {
        format!("{stem}{TARBALL_SUFFIX}")
    }
    /// The stem of `<stem>.tar.gz`.
    pub fn tarball_stem(name: &str) -> Option<&str> {
        name.strip_suffix(TARBALL_SUFFIX)
    }
    /// `<tarball>.part-NNN`: the parts of a split package, in order.
    pub fn part(tarball: &str, index: usize) -> String {
        format!("{tarball}{PART_INFIX}{index:03}")
    }
    /// The number of one of `tarball`'s parts (`007`), `None` for any other name.
    pub fn part_number<'n>(tarball: &str, name: &'n str) -> Option<&'n str> {
        name.strip_prefix(tarball)
            .and_then(|r| r.strip_prefix(PART_INFIX))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    }
    /// Whether `name` is one of `tarball`'s parts.
    pub fn is_part_of(tarball: &str, name: &str) -> bool {
        part_number(tarball, name).is_some()
    }
    /// Whether `name` is a package's data: a tarball or one of its parts.
    pub fn is_data(name: &str) -> bool {
        let whole = whole_of(name);
        tarball_stem(whole).is_some() && (whole == name || is_part_of(whole, name))
    }
    /// The tarball a part belongs to, or the name itself.
    pub fn whole_of(name: &str) -> &str {
        name.split(PART_INFIX).next().unwrap_or(name)
    }
    /// `<name>.sha256`: a file's checksum line.
    pub fn checksum(name: &str) -> String {
        format!("{name}{CHECKSUM_SUFFIX}")
    }
    /// `<name>.asc`: a file's detached signature.
    pub fn signature(name: &str) -> String {
        format!("{name}{SIGNATURE_SUFFIX}")
    }
    /// `<stem>.manifest.json`
    pub fn manifest(stem: &str) -> String {
        format!("{stem}{MANIFEST_SUFFIX}")
    }
    /// `<stem>.sizes.json`: the signed sizes and SHA-256 of the data.
    pub fn sizes(stem: &str) -> String {
        format!("{stem}.sizes.json")
    }
    /// `<stem>.spdx.json`: the SBOM.
    pub fn sbom(stem: &str) -> String {
        format!("{stem}.spdx.json")
    }
    /// `<tarball>.verify.json`: what `verify` found (never published).
    pub fn verify_report(tarball: &str) -> String {
        format!("{tarball}.verify.json")
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn parts_are_numbered_and_recognized() {
            let t = tarball("slurm-25.11-noble-cpu-x86_64");
            assert_eq!(part(&t, 7), "slurm-25.11-noble-cpu-x86_64.tar.gz.part-007");
            assert!(is_part_of(&t, &part(&t, 123)));
            assert!(!is_part_of(&t, &checksum(&part(&t, 1))));
            assert!(!is_part_of(&t, &format!("{t}.part-")));
            assert_eq!(whole_of(&part(&t, 2)), t);
            assert_eq!(tarball_stem(&t), Some("slurm-25.11-noble-cpu-x86_64"));
        }
    }
}

/// Where the Spack mirrors live in a store (local directory or bucket).
pub mod mirrors {
    /// A mirror's key in the store: `<toolchain>/slurm/deps` (stage 1) or
    /// `<toolchain>/slurm/<version>` (stage 2). A rehearsal's fake binaries
    /// go under `rehearsal/`, never beside the real ones.
    pub fn key(toolchain: &str, what: &str, rehearsal: bool) -> String {
        let rel = format!("{toolchain}/slurm/{what}");
        if rehearsal {
            format!("{REHEARSAL_PREFIX}/{rel}")
        } else {
            rel
        }
    }

    /// The store's directory of everything a rehearsal writes.
    pub const REHEARSAL_PREFIX: &str = "rehearsal";
}

/// What a package's tar stream may hold, one rule for `package` (that writes
/// it) and `download` (that unpacks it).
pub mod archive {
    use std::path::{Component, Path};

    /// A symlink at `link` (relative to a root: the view when packaging, the
    /// package when unpacking) pointing at `target` resolves inside that root.
    /// The one rule `package` and `download` share. `..` may only lead the target: it then walks
    /// up real directories (no entry lies under a symlink), while a `..` after a
    /// name could climb out of wherever another symlink led.
    pub fn link_stays_inside(link: &Path, target: &Path) -> bool {
        let mut depth: usize = link.components().count().saturating_sub(1);
        let mut named = false;
        for c in target.components() {
            match c {
                Component::Normal(_) => named = true,
                Component::CurDir => {}
                Component::ParentDir if !named => match depth.checked_sub(1) {
                    Some(d) => depth = d,
                    None => return false,
                },
                Component::ParentDir | Component::RootDir | Component::Prefix(_) => return false,
            }
        }
        true
    }
}

/// Releases: what a release is called and how a store lists them.
///
/// A release is one build of one Slurm series, never changed once
/// published: tag `slurm-<version>-<YYYY.MM.DD>[.<n>]`, e.g.
/// `slurm-25.11.6-2026.12.01`, where the version is the Slurm patch release
/// built and the date is the day the release was first drafted (`.2`, `.3`
/// for a second and third release of that series on one day). The newest
/// release of a series is the one with the latest build (date, then `n`).
/// The tags of the earlier layout, one release per series (`slurm-25.11`),
/// still parse: older than any dated build.
pub mod release {
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
}
