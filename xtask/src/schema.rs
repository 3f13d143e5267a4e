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
