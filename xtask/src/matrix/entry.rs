//! One cell as a workflow job sees it: the entries of `strategy.matrix`
//! that `plan --github-output` writes and the generated workflows read by
//! name, typed once for both. Each carries its toolkit arguments
//! precomputed, so a step runs the toolkit without assembling argv in bash.
//!
//! The arguments are `build-deps`, `build-slurm` and `index`'s flags; a test
//! in `flags` parses every entry's arguments with the real command line.

use serde::Serialize;

use super::{Cell, Variant};
use crate::schema::{files, release};

/// Where a build job leaves its package for the release job.
pub const DIST: &str = "dist";

/// A build job's cell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub toolchain: String,
    pub variant: Variant,
    pub gpu: bool,
    pub image: String,
    #[serde(rename = "runs-on")]
    pub runs_on: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The package (`schema::release` names it), Slurm cells only: the
    /// artifact the build job hands to the release job.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    /// The package's tarball, Slurm cells only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tarball: Option<String>,
    /// The build command's arguments: `build-deps` for a deps cell,
    /// `build-slurm` (packaging into [`DIST`], verifying with the host's
    /// GPUs on a GPU runner) for a Slurm cell.
    pub args: Vec<String>,
}

/// An index job's mirror: each mirror the selected cells push to, once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MirrorEntry {
    pub toolchain: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `index`'s arguments.
    pub args: Vec<String>,
}

/// The fields of [`Entry`] and [`MirrorEntry`] the workflows read (`matrix.<field>`).
pub mod field {
    pub const TOOLCHAIN: &str = "toolchain";
    pub const VARIANT: &str = "variant";
    pub const VERSION: &str = "version";
    pub const RUNS_ON: &str = "runs-on";
    pub const PACKAGE: &str = "package";
    pub const ARGS: &str = "args";
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

impl Entry {
    /// `rehearse`: the build jobs rehearse (`spack install --fake`).
    pub fn of(cell: &Cell<'_>, rehearse: bool) -> Entry {
        let tc = &cell.toolchain.name;
        let gpu = cell.variant == Variant::Gpu;
        let mut args;
        let (mut package, mut tarball) = (None, None);
        match cell.release {
            None => {
                args = strings(&["--toolchain", tc]);
                if gpu {
                    args.push("--gpu".into());
                }
            }
            Some(r) => {
                args = strings(&["--slurm", &r.version, "--toolchain", tc, "--out", DIST]);
                if gpu {
                    args.extend(strings(&["--gpu", "--host-gpus"]));
                }
                let stem = release::build_stem(
                    &r.version,
                    tc,
                    cell.variant.as_str(),
                    &cell.matrix.arch,
                    rehearse,
                );
                tarball = Some(files::tarball(&stem));
                package = Some(stem);
            }
        }
        if rehearse {
            args.push("--rehearse".into());
        }
        Entry {
            toolchain: tc.clone(),
            variant: cell.variant,
            gpu,
            image: cell.toolchain.image.clone(),
            runs_on: cell.runner().to_vec(),
            version: cell.release.map(|r| r.version.clone()),
            package,
            tarball,
            args,
        }
    }
}

impl MirrorEntry {
    /// The mirrors the cells push to, each once, in the cells' order (CPU
    /// and GPU cells of a toolchain share one).
    pub fn of<'c>(
        cells: impl IntoIterator<Item = &'c Cell<'c>>,
        rehearse: bool,
    ) -> Vec<MirrorEntry> {
        let mut out: Vec<MirrorEntry> = Vec::new();
        for cell in cells {
            let toolchain = cell.toolchain.name.clone();
            let version = cell.release.map(|r| r.version.clone());
            if out
                .iter()
                .any(|m| m.toolchain == toolchain && m.version == version)
            {
                continue;
            }
            let mut args = strings(&["--toolchain", &toolchain]);
            if let Some(v) = &version {
                args.extend(strings(&["--slurm", v]));
            }
            if rehearse {
                args.push("--rehearse".into());
            }
            out.push(MirrorEntry {
                toolchain,
                version,
                args,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::{CellFilter, Matrix, Stage};

    fn matrix() -> Matrix {
        Matrix::load(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn the_fields_the_workflows_read_are_the_entries_own() {
        let m = matrix();
        let cell = m.cell("noble", Some("25.11"), true).unwrap();
        let entry = serde_json::to_value(Entry::of(&cell, false)).unwrap();
        for f in [
            field::TOOLCHAIN,
            field::VARIANT,
            field::VERSION,
            field::RUNS_ON,
            field::PACKAGE,
            field::ARGS,
        ] {
            assert!(entry.get(f).is_some(), "{f} in {entry}");
        }
        let mirror = serde_json::to_value(&MirrorEntry::of([&cell], false)[0]).unwrap();
        for f in [field::TOOLCHAIN, field::VERSION, field::ARGS] {
            assert!(mirror.get(f).is_some(), "{f} in {mirror}");
        }
    }

    #[test]
    fn a_gpu_slurm_cell_verifies_with_the_hosts_gpus_and_names_its_package() {
        let m = matrix();
        let cell = m.cell("rockylinux9", Some("24.11"), true).unwrap();
        let e = Entry::of(&cell, false);
        assert_eq!(
            e.args,
            [
                "--slurm",
                "24.11",
                "--toolchain",
                "rockylinux9",
                "--out",
                "dist",
                "--gpu",
                "--host-gpus"
            ]
        );
        assert_eq!(
            e.package.as_deref(),
            Some("slurm-24.11-rockylinux9-gpu-x86_64")
        );
        assert_eq!(
            e.tarball.as_deref(),
            Some("slurm-24.11-rockylinux9-gpu-x86_64.tar.gz")
        );
        let r = Entry::of(&cell, true);
        assert_eq!(r.args.last().map(String::as_str), Some("--rehearse"));
        assert!(r.package.unwrap().ends_with(release::REHEARSAL_SUFFIX));
    }

    #[test]
    fn cpu_and_gpu_cells_share_their_mirror() {
        let m = matrix();
        let cells = m.cells(Stage::Deps, &CellFilter::default()).unwrap();
        let mirrors = MirrorEntry::of(&cells, false);
        assert_eq!(mirrors.len(), m.toolchains.len());
        assert_eq!(
            mirrors[0].args,
            ["--toolchain", m.toolchains[0].name.as_str()]
        );
    }
}
