//! The project's inputs, read once per command: the matrix
//! (`spack-env/matrix.yaml`), the Spack environment data
//! (`spack-env/environment.yaml`) and the Lmod module template
//! (`modules/slurm.lua.tmpl`). Every stage takes them from here; none reads
//! them again.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::matrix::Matrix;
use crate::module;
use crate::spack_env::EnvironmentData;

/// Where caches, the local store and work directories live, under the
/// checkout, unless a command is given another place.
pub const STATE_DIR: &str = "target/slurm-factory";

pub struct Project {
    /// The checkout's root: the recipes (`spack-repo/`) and the default
    /// state directory (`target/slurm-factory`) are found from it.
    pub root: PathBuf,
    pub matrix: Matrix,
    pub env: EnvironmentData,
    pub module_template: String,
}

impl Project {
    pub fn load(root: &Path) -> Result<Project> {
        let template = root.join(module::TEMPLATE);
        Ok(Project {
            root: root.to_path_buf(),
            matrix: Matrix::load(root)?,
            env: EnvironmentData::load(root)?,
            module_template: std::fs::read_to_string(&template)
                .with_context(|| format!("reading {}", template.display()))?,
        })
    }

    /// Where caches, the local store and work directories live by default.
    pub fn state_dir(&self) -> PathBuf {
        self.root.join(STATE_DIR)
    }
}
