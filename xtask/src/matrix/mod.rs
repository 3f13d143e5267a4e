//! The build matrix: `spack-env/matrix.yaml` read, validated and expanded into cells.
//! Everything downstream (plan, workflows, Spack environments) starts from a `Matrix`.
//! The rules a matrix file must keep are in `validate`.

pub mod entry;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::error::UsageError;

/// Where the matrix lives, relative to the project root.
pub const MATRIX_FILE: &str = "spack-env/matrix.yaml";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Matrix {
    pub spack: SpackPins,
    pub target: String,
    pub arch: String,
    pub variants: Vec<Variant>,
    pub rust_toolchain: String,
    pub runners: Runners,
    pub toolchains: Vec<Toolchain>,
    pub slurm: Vec<SlurmRelease>,
    pub releases: Releases,
    pub actions: Actions,
}

/// Where releases are downloaded from and the key their signatures must have.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Releases {
    /// `owner/name` of the repository whose GitHub Releases carry the packages.
    pub github: String,
    /// The release signing key's fingerprint (40 hex digits), once there is one.
    pub signing_key_fingerprint: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SpackPins {
    pub repository: String,
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// The commit `git_ref` names: a copy of the sources must be this commit.
    pub commit: String,
    pub packages_repository: String,
    pub packages_ref: String,
    pub packages_commit: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Runners {
    pub cpu: Vec<String>,
    pub gpu: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    Cpu,
    Gpu,
}

impl Variant {
    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Cpu => "cpu",
            Variant::Gpu => "gpu",
        }
    }
    pub fn from_gpu(gpu: bool) -> Self {
        if gpu { Variant::Gpu } else { Variant::Cpu }
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Apt,
    Dnf,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Toolchain {
    pub name: String,
    pub os: String,
    pub image: String,
    pub family: Family,
    pub gcc: String,
    pub glibc: String,
    /// Overrides the matrix-wide `runners` for this toolchain's cells.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runners: Option<Runners>,
    /// Extra dnf repositories the build needs (`epel`, `crb`, `powertools`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dnf_repos: Vec<DnfRepo>,
    /// Where Spack's Python comes from, when the OS python3 does not suit it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spack_python: Option<SpackPython>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DnfRepo {
    Epel,
    Crb,
    Powertools,
}

/// Spack's Python: OS packages providing an interpreter at `path`, or a
/// CPython version that `uv` provisions (checksummed downloads).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SpackPython {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uv: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SlurmRelease {
    pub version: String,
    pub status: String,
    pub spack_version: String,
    pub tarball: String,
    pub sha256: String,
}

/// Every third-party action the generated workflows use. A named field each, so
/// a workflow cannot reference an action that is not pinned here.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Actions {
    pub checkout: ActionPin,
    pub upload_artifact: ActionPin,
    pub download_artifact: ActionPin,
    pub cache: ActionPin,
    pub configure_aws_credentials: ActionPin,
    pub rust_cache: ActionPin,
    pub attest_build_provenance: ActionPin,
    pub rust_toolchain: ActionPin,
}

impl Actions {
    pub fn all(&self) -> [(&'static str, &ActionPin); 8] {
        [
            ("checkout", &self.checkout),
            ("upload-artifact", &self.upload_artifact),
            ("download-artifact", &self.download_artifact),
            ("cache", &self.cache),
            ("configure-aws-credentials", &self.configure_aws_credentials),
            ("rust-cache", &self.rust_cache),
            ("attest-build-provenance", &self.attest_build_provenance),
            ("rust-toolchain", &self.rust_toolchain),
        ]
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionPin {
    pub uses: String,
    pub tag: String,
    pub sha: String,
}

impl ActionPin {
    /// The `uses:` value: repository at the full commit SHA.
    pub fn reference(&self) -> String {
        format!("{}@{}", self.uses, self.sha)
    }
}

/// What a cell builds: the shared dependency cache of a toolchain, or Slurm itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Deps,
    Slurm,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Deps => "deps",
            Stage::Slurm => "slurm",
        }
    }
}

/// One unit of work: a toolchain and variant, plus a Slurm release for the slurm stage.
#[derive(Debug, Clone, Copy)]
pub struct Cell<'m> {
    pub release: Option<&'m SlurmRelease>,
    pub toolchain: &'m Toolchain,
    pub variant: Variant,
    pub matrix: &'m Matrix,
}

impl<'m> Cell<'m> {
    pub fn stage(&self) -> Stage {
        if self.release.is_some() {
            Stage::Slurm
        } else {
            Stage::Deps
        }
    }

    pub fn runner(&self) -> &'m [String] {
        let runners = self
            .toolchain
            .runners
            .as_ref()
            .unwrap_or(&self.matrix.runners);
        match self.variant {
            Variant::Cpu => &runners.cpu,
            Variant::Gpu => &runners.gpu,
        }
    }

    /// `25.11/noble/gpu` or `deps/noble/gpu`: how logs and errors name the cell.
    pub fn id(&self) -> String {
        let first = self.release.map_or("deps", |r| r.version.as_str());
        format!("{first}/{}/{}", self.toolchain.name, self.variant)
    }
}

/// Which cells a command is about. Empty lists mean "all".
#[derive(Debug, Clone, Default)]
pub struct CellFilter {
    pub toolchains: Vec<String>,
    pub versions: Vec<String>,
    pub variants: Vec<Variant>,
}

impl Matrix {
    /// Reads and validates the matrix file of the project at `root`.
    pub fn load(root: &Path) -> Result<Matrix> {
        Self::load_file(&root.join(MATRIX_FILE))
    }

    pub fn load_file(path: &Path) -> Result<Matrix> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("invalid matrix file {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Matrix> {
        let matrix: Matrix = serde_yaml::from_str(text)?;
        matrix.validate()?;
        Ok(matrix)
    }

    pub fn toolchain(&self, name: &str) -> Result<&Toolchain> {
        self.toolchains
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| {
                UsageError::unknown("toolchain", name, self.toolchains.iter().map(|t| &t.name))
                    .into()
            })
    }

    pub fn release(&self, version: &str) -> Result<&SlurmRelease> {
        self.slurm
            .iter()
            .find(|s| s.version == version)
            .ok_or_else(|| {
                UsageError::unknown(
                    "Slurm version",
                    version,
                    self.slurm.iter().map(|s| &s.version),
                )
                .into()
            })
    }

    /// One cell by name: a usage error for an unknown toolchain, Slurm
    /// version or variant (in that order), naming the valid ones.
    pub fn cell(&self, toolchain: &str, slurm: Option<&str>, gpu: bool) -> Result<Cell<'_>> {
        let toolchain = self.toolchain(toolchain)?;
        let release = slurm.map(|v| self.release(v)).transpose()?;
        let variant = self.variant(Variant::from_gpu(gpu))?;
        Ok(Cell {
            release,
            toolchain,
            variant,
            matrix: self,
        })
    }

    pub fn variant(&self, variant: Variant) -> Result<Variant> {
        if self.variants.contains(&variant) {
            Ok(variant)
        } else {
            Err(UsageError::unknown("variant", variant.as_str(), self.variants.iter()).into())
        }
    }

    /// The cells of a stage in matrix order (versions, then toolchains, then
    /// variants), restricted by `filter`. Unknown filter values are usage errors.
    pub fn cells(&self, stage: Stage, filter: &CellFilter) -> Result<Vec<Cell<'_>>> {
        for t in &filter.toolchains {
            self.toolchain(t)?;
        }
        for v in &filter.versions {
            self.release(v)?;
        }
        for &v in &filter.variants {
            self.variant(v)?;
        }
        if stage == Stage::Deps && !filter.versions.is_empty() {
            return Err(UsageError::new(
                "--slurm selects slurm-stage cells; the deps stage is per toolchain and variant",
            )
            .into());
        }
        let keep = |list: &[String], x: &str| list.is_empty() || list.iter().any(|l| l == x);
        let releases: Vec<Option<&SlurmRelease>> = match stage {
            Stage::Deps => vec![None],
            Stage::Slurm => self
                .slurm
                .iter()
                .filter(|s| keep(&filter.versions, &s.version))
                .map(Some)
                .collect(),
        };
        let mut cells = Vec::new();
        for release in releases {
            for toolchain in self
                .toolchains
                .iter()
                .filter(|t| keep(&filter.toolchains, &t.name))
            {
                for &variant in &self.variants {
                    if filter.variants.is_empty() || filter.variants.contains(&variant) {
                        cells.push(Cell {
                            release,
                            toolchain,
                            variant,
                            matrix: self,
                        });
                    }
                }
            }
        }
        Ok(cells)
    }
}

/// Finds the project root: `--root`, else the nearest ancestor of the current
/// directory holding the matrix file, else the directory this crate was built in.
pub fn project_root(explicit: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(root) = explicit {
        if !root.join(MATRIX_FILE).is_file() {
            bail!("--root {}: no {MATRIX_FILE} there", root.display());
        }
        return Ok(root);
    }
    let cwd = std::env::current_dir()?;
    if let Some(found) = cwd.ancestors().find(|d| d.join(MATRIX_FILE).is_file()) {
        return Ok(found.to_path_buf());
    }
    let built_in = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    if built_in.join(MATRIX_FILE).is_file() {
        return Ok(built_in);
    }
    bail!(
        "no {MATRIX_FILE} in {} or its parents: run inside a Slurm Factory checkout or pass --root",
        cwd.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn committed() -> String {
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join(MATRIX_FILE),
        )
        .unwrap()
    }

    fn error_of(text: &str) -> String {
        format!("{:#}", Matrix::parse(text).unwrap_err())
    }

    #[test]
    fn committed_matrix_has_36_slurm_and_12_deps_cells() {
        let m = Matrix::parse(&committed()).unwrap();
        let all = CellFilter::default();
        let slurm = m.cells(Stage::Slurm, &all).unwrap();
        assert_eq!(slurm.len(), 36);
        let ids: HashSet<String> = slurm.iter().map(Cell::id).collect();
        assert_eq!(ids.len(), 36, "cell ids are distinct");
        assert_eq!(m.cells(Stage::Deps, &all).unwrap().len(), 12);
    }

    #[test]
    fn duplicate_toolchain_is_named() {
        let text = committed().replacen("name: noble", "name: jammy", 1);
        assert!(
            error_of(&text).contains("toolchain 'jammy' is listed twice"),
            "{}",
            error_of(&text)
        );
    }

    #[test]
    fn unknown_variant_is_rejected() {
        let text = committed().replace("variants: [cpu, gpu]", "variants: [cpu, tpu]");
        assert!(
            error_of(&text).contains("unknown variant `tpu`"),
            "{}",
            error_of(&text)
        );
    }

    #[test]
    fn empty_list_is_rejected() {
        let text = committed().replace("variants: [cpu, gpu]", "variants: []");
        assert!(error_of(&text).contains("`variants` must list at least one entry"));
    }

    #[test]
    fn unknown_key_is_rejected_with_its_name() {
        let text = committed().replace("    family: apt\n", "    family: apt\n    flavour: x\n");
        assert!(
            error_of(&text).contains("unknown field `flavour`"),
            "{}",
            error_of(&text)
        );
    }

    #[test]
    fn short_action_sha_is_rejected() {
        let text = committed().replace(
            "sha: 3d3c42e5aac5ba805825da76410c181273ba90b1",
            "sha: 3d3c42e",
        );
        assert!(
            error_of(&text).contains("action 'checkout'"),
            "{}",
            error_of(&text)
        );
    }

    #[test]
    fn filters_combine() {
        let m = Matrix::parse(&committed()).unwrap();
        let f = CellFilter {
            toolchains: vec!["noble".into(), "jammy".into()],
            versions: vec!["24.11".into()],
            variants: vec![Variant::Gpu],
        };
        let ids: Vec<String> = m
            .cells(Stage::Slurm, &f)
            .unwrap()
            .iter()
            .map(Cell::id)
            .collect();
        assert_eq!(ids, ["24.11/noble/gpu", "24.11/jammy/gpu"]);
    }

    #[test]
    fn unknown_filter_value_lists_valid_ones() {
        let m = Matrix::parse(&committed()).unwrap();
        let f = CellFilter {
            toolchains: vec!["focal".into()],
            ..Default::default()
        };
        let err = m.cells(Stage::Slurm, &f).unwrap_err();
        assert!(err.downcast_ref::<UsageError>().is_some());
        assert_eq!(
            err.to_string(),
            "unknown toolchain 'focal' (valid: resolute, noble, jammy, rockylinux10, rockylinux9, rockylinux8)"
        );
    }
}
