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

    /// The GitHub API both `publish` and `download` talk to:
    /// `GITHUB_API_URL` as Actions sets it (GitHub Enterprise), where unset
    /// or empty means api.github.com.
    pub fn github_api() -> String {
        std::env::var("GITHUB_API_URL")
            .ok()
            .filter(|a| !a.trim().is_empty())
            .unwrap_or_else(|| "https://api.github.com".into())
            .trim_end_matches('/')
            .to_string()
    }

    /// The policy of the matrix compiled into this executable.
    pub fn built_in() -> Result<ReleasePolicy> {
        let matrix = Matrix::parse(BUILT_IN_MATRIX)
            .context("the matrix built into this executable is invalid")?;
        Ok(ReleasePolicy::of(&matrix))
    }
}

pub mod admin_binary;

pub mod paths;

/// The name of the public key file published beside the packages.
pub const PUBLIC_KEY_FILE: &str = "slurm-factory-signing-key.asc";

/// Where a store keeps the public key of its newest release.
pub fn public_key_key() -> String {
    format!("keys/{PUBLIC_KEY_FILE}")
}

pub mod files;

pub mod mirrors;

pub mod archive;

pub mod release;
