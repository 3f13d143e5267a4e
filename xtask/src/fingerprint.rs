//! Cell fingerprints: a stable hash of everything that decides a cell's
//! output, computed without running anything, kept input by input so a plan
//! can say which one changed. Builds record them in the store's state
//! objects; `plan` compares.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::checksum::hex;
use crate::image;
use crate::matrix::{Cell, Variant};
use crate::project::Project;
use crate::spack_env;
use crate::store::StoreUrl;

/// Bump when the in-container steps change what a stage produces.
/// 2: real Spack 1.1 (signed pushes with --key, link-all views, $ORIGIN hand-over).
pub const STAGE_LOGIC_VERSION: &str = "2";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub value: String,
    /// Input name → its hash.
    pub inputs: BTreeMap<String, String>,
}

fn sha(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// The hash of the recipe files of some packages of `spack-repo/`.
fn recipes(root: &Path, packages: &[&str]) -> Result<String> {
    let repo = root.join("spack-repo/spack_repo/slurm_factory");
    let mut h = Sha256::new();
    h.update(std::fs::read(repo.join("repo.yaml")).context("reading spack-repo's repo.yaml")?);
    for pkg in packages {
        let dir = repo.join("packages").join(pkg);
        let mut files: Vec<_> = walkdir::WalkDir::new(&dir)
            .sort_by_file_name()
            .into_iter()
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_type().is_file()
                    && !e
                        .path()
                        .components()
                        .any(|c| c.as_os_str() == "__pycache__")
            })
            .map(|e| e.into_path())
            .collect();
        files.sort();
        for f in files {
            h.update(
                f.strip_prefix(&repo)
                    .unwrap_or(&f)
                    .to_string_lossy()
                    .as_bytes(),
            );
            h.update(std::fs::read(&f)?);
        }
    }
    Ok(hex(&h.finalize()))
}

impl Fingerprint {
    fn seal(inputs: BTreeMap<String, String>) -> Fingerprint {
        let text: String = inputs.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        Fingerprint {
            value: sha(text.as_bytes())[..32].to_string(),
            inputs,
        }
    }

    /// The names of the inputs that differ from `other`'s.
    pub fn changed(&self, other: &Fingerprint) -> Vec<String> {
        let mut names: Vec<String> = self
            .inputs
            .keys()
            .chain(other.inputs.keys())
            .cloned()
            .collect();
        names.sort();
        names.dedup();
        names
            .into_iter()
            .filter(|n| self.inputs.get(n) != other.inputs.get(n))
            .collect()
    }
}

/// A deps cell's fingerprint, or a slurm cell's (which includes its
/// toolchain's deps fingerprint of the same variant).
pub fn of(project: &Project, cell: &Cell<'_>) -> Result<Fingerprint> {
    Fingerprints::new(project).of(cell)
}

/// Fingerprints of many cells (a plan): what cells share, each toolchain's
/// deps fingerprint and the recipe hashes, is computed once.
pub struct Fingerprints<'a> {
    project: &'a Project,
    deps: BTreeMap<(String, String), String>,
    recipes: BTreeMap<Vec<String>, String>,
}

impl<'a> Fingerprints<'a> {
    pub fn new(project: &'a Project) -> Fingerprints<'a> {
        Fingerprints {
            project,
            deps: BTreeMap::new(),
            recipes: BTreeMap::new(),
        }
    }

    /// The hash of this project's recipes (those in `spack-repo/`) the cell's
    /// environment names: the deps specs (and GPU specs), or Slurm and what
    /// is built with it.
    fn recipes(&mut self, cell: &Cell<'_>) -> Result<String> {
        let d = &self.project.env;
        let specs: Vec<&String> = match (cell.release, cell.variant) {
            (Some(_), _) => std::iter::once(&d.slurm.package)
                .chain(&d.slurm.with)
                .collect(),
            (None, Variant::Gpu) => d.deps.specs.iter().chain(&d.deps.gpu_specs).collect(),
            (None, _) => d.deps.specs.iter().collect(),
        };
        let mut names: Vec<String> = specs
            .into_iter()
            .map(|s| {
                let name = spack_env::spec_name(s);
                name.strip_prefix("slurm_factory.").unwrap_or(name)
            })
            .filter(|name| {
                self.project
                    .root
                    .join("spack-repo/spack_repo/slurm_factory/packages")
                    .join(name.replace('-', "_"))
                    .is_dir()
            })
            .map(String::from)
            .collect();
        names.sort();
        names.dedup();
        if let Some(v) = self.recipes.get(&names) {
            return Ok(v.clone());
        }
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let v = recipes(&self.project.root, &refs)?;
        self.recipes.insert(names, v.clone());
        Ok(v)
    }

    pub fn of(&mut self, cell: &Cell<'_>) -> Result<Fingerprint> {
        let m = cell.matrix;
        // Where mirrors live does not change what is built: fingerprint the local layout.
        let opts = spack_env::Options {
            target: m.target.clone(),
            store: StoreUrl::Local,
            deps_mirror: None,
            rehearsal: false,
        };
        let rendered = spack_env::render(self.project, cell, &opts)?;
        let mut env = Sha256::new();
        for (path, text) in &rendered.files {
            env.update(path.to_string_lossy().as_bytes());
            env.update(text.as_bytes());
        }
        let mut inputs = BTreeMap::new();
        inputs.insert("environment".to_string(), hex(&env.finalize()));
        inputs.insert(
            "image".to_string(),
            sha(image::recipe(m, cell.toolchain).text.as_bytes()),
        );
        inputs.insert(
            "spack".to_string(),
            sha(format!(
                "{}@{} {}@{}",
                m.spack.repository,
                m.spack.git_ref,
                m.spack.packages_repository,
                m.spack.packages_ref
            )
            .as_bytes()),
        );
        inputs.insert("toolkit".to_string(), STAGE_LOGIC_VERSION.to_string());
        match cell.release {
            None => {
                inputs.insert("recipes".to_string(), self.recipes(cell)?);
            }
            Some(_) => {
                inputs.insert("recipes".to_string(), self.recipes(cell)?);
                // The module as the environment ships it (rendered above).
                let module = rendered
                    .files
                    .iter()
                    .find(|(path, _)| path.extension().is_some_and(|e| e == "lua"))
                    .map(|(_, text)| text.as_str())
                    .context("the slurm environment renders no module")?;
                inputs.insert("module".to_string(), sha(module.as_bytes()));
                let key = (cell.toolchain.name.clone(), cell.variant.to_string());
                let deps = match self.deps.get(&key) {
                    Some(v) => v.clone(),
                    None => {
                        let deps_cell = Cell {
                            release: None,
                            ..*cell
                        };
                        let v = self.of(&deps_cell)?.value;
                        self.deps.insert(key, v.clone());
                        v
                    }
                };
                inputs.insert("deps".to_string(), deps);
            }
        }
        Ok(Fingerprint::seal(inputs))
    }
}
