//! Spack environments: the `spack.yaml` for one cell (deps or slurm stage),
//! rendered from the matrix and `spack-env/environment.yaml` as typed values.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::matrix::{Cell, Variant};
use crate::module;
use crate::project::Project;
use crate::schema::paths;
use crate::store::StoreUrl;

/// The data file beside the matrix that says what each stage builds.
pub const ENVIRONMENT_FILE: &str = "spack-env/environment.yaml";

/// Spack always caps build jobs at the cores it finds, so a high constant
/// means "every core" while keeping the rendered file machine-independent.
const BUILD_JOBS: u32 = 64;

// ---------------------------------------------------------------------------
// The data file.

/// A spec's package name: `slurm_factory.curl +ldap` → `slurm_factory.curl`.
pub fn spec_name(spec: &str) -> &str {
    spec.split(['@', ' ', '+', '~']).next().unwrap_or(spec)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentData {
    pub deps: DepsData,
    pub slurm: SlurmData,
    #[serde(default)]
    pub packages: IndexMap<String, PackageConfig>,
    pub build_only: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepsData {
    pub specs: Vec<String>,
    pub gpu_specs: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlurmData {
    pub package: String,
    /// Other root specs of stage 2 (built against this Slurm), pushed with it.
    #[serde(default)]
    pub with: Vec<String>,
    pub variants: Vec<String>,
    pub gpu_variants: Vec<String>,
}

impl EnvironmentData {
    pub fn load(root: &Path) -> Result<EnvironmentData> {
        let path = root.join(ENVIRONMENT_FILE);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let data: EnvironmentData =
            serde_yaml::from_str(&text).with_context(|| format!("invalid {}", path.display()))?;
        anyhow::ensure!(
            !data.deps.specs.is_empty(),
            "{ENVIRONMENT_FILE}: deps.specs is empty"
        );
        Ok(data)
    }
}

// ---------------------------------------------------------------------------
// The spack.yaml model: the part of Spack's environment schema we use.

#[derive(Debug, Serialize)]
struct SpackYaml {
    spack: Environment,
}

#[derive(Debug, Serialize)]
struct Environment {
    specs: Vec<String>,
    view: View,
    concretizer: Concretizer,
    config: Config,
    packages: IndexMap<String, PackageConfig>,
    repos: IndexMap<String, String>,
    mirrors: IndexMap<String, Mirror>,
    #[serde(skip_serializing_if = "Option::is_none")]
    modules: Option<Modules>,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
enum View {
    /// `view: false`: stage 1 only fills a buildcache.
    Disabled(bool),
    Views(IndexMap<String, ViewDescriptor>),
}

#[derive(Debug, Serialize)]
struct ViewDescriptor {
    root: String,
    exclude: Vec<String>,
    /// What the roots link and run: their whole closure minus build tools
    /// (`run` would drop every library that is only a link dependency).
    link: &'static str,
    /// Copies are relocated by Spack; links would point into the install tree.
    link_type: &'static str,
}

#[derive(Debug, Serialize)]
struct Concretizer {
    unify: bool,
    reuse: bool,
}

#[derive(Debug, Serialize)]
struct Config {
    install_tree: InstallTree,
    shared_linking: SharedLinking,
    build_jobs: u32,
    source_cache: String,
    misc_cache: String,
    build_stage: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    template_dirs: Vec<String>,
}

#[derive(Debug, Serialize)]
struct InstallTree {
    root: String,
    padded_length: u32,
}

#[derive(Debug, Serialize)]
struct SharedLinking {
    #[serde(rename = "type")]
    kind: &'static str,
    bind: bool,
}

/// Spack's per-package settings (`packages:`), typed for the keys we use.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageConfig {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub require: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefer: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buildable: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub externals: Vec<External>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct External {
    pub spec: String,
    pub prefix: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_attributes: Option<ExtraAttributes>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraAttributes {
    pub compilers: IndexMap<String, String>,
}

#[derive(Debug, Serialize)]
struct Mirror {
    url: String,
    signed: bool,
}

#[derive(Debug, Serialize)]
struct Modules {
    default: ModuleSet,
}

#[derive(Debug, Serialize)]
struct ModuleSet {
    roots: IndexMap<&'static str, String>,
    enable: Vec<&'static str>,
    lmod: LmodConfig,
}

#[derive(Debug, Serialize)]
struct LmodConfig {
    core_compilers: Vec<String>,
    hierarchy: Vec<String>,
    hash_length: u32,
    exclude_implicits: bool,
    projections: IndexMap<String, String>,
    #[serde(flatten)]
    per_package: IndexMap<String, ModuleTemplate>,
}

#[derive(Debug, Serialize)]
struct ModuleTemplate {
    template: String,
}

// ---------------------------------------------------------------------------
// Rendering.

/// Everything a cell's environment depends on besides the matrix.
#[derive(Debug)]
pub struct Options {
    pub target: String,
    pub store: StoreUrl,
    /// The deps mirror's URL as the container sees it, instead of the store's.
    pub deps_mirror: Option<String>,
    /// A rehearsal's environment uses the store's rehearsal mirrors.
    pub rehearsal: bool,
}

impl Options {
    pub fn deps_mirror(&self, toolchain: &str) -> String {
        self.deps_mirror
            .clone()
            .unwrap_or_else(|| self.store.mirror(toolchain, "deps", self.rehearsal))
    }
}

/// The rendered files of one environment, relative to its directory.
#[derive(Debug)]
pub struct Rendered {
    pub files: Vec<(PathBuf, String)>,
}

pub fn render(project: &Project, cell: &Cell<'_>, opts: &Options) -> Result<Rendered> {
    let data = &project.env;
    let gcc = &cell.toolchain.gcc;
    let tc = &cell.toolchain.name;
    let mut packages = IndexMap::new();
    packages.insert(
        "all".to_string(),
        PackageConfig {
            target: vec![opts.target.clone()],
            ..Default::default()
        },
    );
    // The OS compiler, as an external: the packages link against the OS's own
    // libstdc++/libgfortran generation, so they run on that OS as shipped.
    packages.insert(
        "gcc".to_string(),
        PackageConfig {
            buildable: Some(false),
            externals: vec![External {
                spec: format!("gcc@{gcc} languages:='c,c++,fortran'"),
                prefix: "/usr".into(),
                extra_attributes: Some(ExtraAttributes {
                    compilers: [
                        ("c", "/usr/bin/gcc"),
                        ("cxx", "/usr/bin/g++"),
                        ("fortran", "/usr/bin/gfortran"),
                    ]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                }),
            }],
            ..Default::default()
        },
    );
    for lang in ["c", "cxx", "fortran"] {
        packages.insert(
            lang.to_string(),
            PackageConfig {
                require: vec![format!("gcc@{gcc}")],
                ..Default::default()
            },
        );
    }
    for (name, config) in &data.packages {
        packages.insert(name.clone(), config.clone());
    }

    let mut mirrors = IndexMap::new();
    mirrors.insert(
        "slurm-factory-deps".to_string(),
        Mirror {
            url: opts.deps_mirror(tc),
            signed: true,
        },
    );
    let mut repos = IndexMap::new();
    repos.insert(
        "slurm_factory".to_string(),
        format!("{}/spack_repo/slurm_factory", paths::SPACK_REPO),
    );

    let mut files = Vec::new();
    let (specs, view, modules, template_dirs) = match cell.release {
        None => {
            let mut specs = data.deps.specs.clone();
            if cell.variant == Variant::Gpu {
                specs.extend(data.deps.gpu_specs.iter().cloned());
            }
            (specs, View::Disabled(false), None, vec![])
        }
        Some(release) => {
            mirrors.insert(
                "slurm-factory-slurm".to_string(),
                Mirror {
                    url: opts.store.mirror(tc, &release.version, opts.rehearsal),
                    signed: true,
                },
            );
            let mut spec = format!("{}@{}", data.slurm.package, release.spack_version);
            let gpu = if cell.variant == Variant::Gpu {
                &data.slurm.gpu_variants[..]
            } else {
                &[]
            };
            for v in data.slurm.variants.iter().chain(gpu) {
                spec.push(' ');
                spec.push_str(v);
            }
            let mut views = IndexMap::new();
            views.insert(
                "default".to_string(),
                ViewDescriptor {
                    root: module::VIEW_ROOT.into(),
                    exclude: data.build_only.clone(),
                    link: "all",
                    link_type: "copy",
                },
            );
            // Spack writes the module from the toolkit's rendering of the
            // template in modules/, so both ways of making it agree.
            let module_file = module::module_file(cell);
            files.push((
                PathBuf::from("templates").join(&module_file),
                module::render(&project.module_template, cell)?,
            ));
            let short = data
                .slurm
                .package
                .rsplit('.')
                .next()
                .unwrap_or(&data.slurm.package)
                .to_string();
            let modules = Modules {
                default: ModuleSet {
                    roots: [("lmod", paths::MODULES_ROOT.to_string())]
                        .into_iter()
                        .collect(),
                    enable: vec!["lmod"],
                    lmod: LmodConfig {
                        core_compilers: vec![format!("gcc@{gcc}")],
                        hierarchy: vec![],
                        hash_length: 0,
                        exclude_implicits: true,
                        projections: [(short.clone(), module::module_name(cell))]
                            .into_iter()
                            .collect(),
                        per_package: [(
                            short,
                            ModuleTemplate {
                                template: module_file,
                            },
                        )]
                        .into_iter()
                        .collect(),
                    },
                },
            };
            let mut specs = vec![spec];
            specs.extend(data.slurm.with.iter().cloned());
            (
                specs,
                View::Views(views),
                Some(modules),
                vec![format!("{}/templates", paths::ENV)],
            )
        }
    };

    let env = SpackYaml {
        spack: Environment {
            specs,
            view,
            concretizer: Concretizer {
                unify: true,
                reuse: true,
            },
            config: Config {
                install_tree: InstallTree {
                    root: paths::INSTALL_ROOT.into(),
                    padded_length: 128,
                },
                shared_linking: SharedLinking {
                    kind: "rpath",
                    bind: false,
                },
                build_jobs: BUILD_JOBS,
                source_cache: paths::SOURCE_CACHE.into(),
                misc_cache: paths::MISC_CACHE.into(),
                build_stage: vec![paths::BUILD_STAGE.into()],
                template_dirs,
            },
            packages,
            repos,
            mirrors,
            modules,
        },
    };
    let header = format!(
        "# Spack environment for cell {} ({}, {}).\n# Rendered by `{}` from spack-env/: do not edit by hand.\n",
        cell.id(),
        cell.toolchain.os,
        cell.toolchain.image,
        command_line(cell, opts),
    );
    files.insert(
        0,
        (
            PathBuf::from("spack.yaml"),
            header + &serde_yaml::to_string(&env)?,
        ),
    );
    Ok(Rendered { files })
}

/// The command that renders this environment, as the header names it.
fn command_line(cell: &Cell<'_>, opts: &Options) -> String {
    let mut cmd = format!("cargo xtask spack-env --stage {}", cell.stage().as_str());
    if let Some(r) = cell.release {
        cmd.push_str(&format!(" --slurm {}", r.version));
    }
    cmd.push_str(&format!(" --toolchain {}", cell.toolchain.name));
    if cell.variant == Variant::Gpu {
        cmd.push_str(" --gpu");
    }
    if opts.target != cell.matrix.target {
        cmd.push_str(&format!(" --target {}", opts.target));
    }
    if let StoreUrl::Bucket { bucket, prefix } = &opts.store {
        cmd.push_str(&format!(" --bucket {bucket}"));
        if !prefix.is_empty() {
            cmd.push_str(&format!(" --bucket-prefix {prefix}"));
        }
    }
    if let Some(m) = &opts.deps_mirror {
        cmd.push_str(&format!(" --deps-mirror {m}"));
    }
    cmd
}

impl Rendered {
    /// Writes the files under `out`. Everything was rendered before this, so
    /// bad input never leaves a half-written environment behind.
    pub fn write(&self, out: &Path) -> Result<()> {
        for (rel, text) in &self.files {
            let path = out.join(rel);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }
}

/// `spack-env`: renders a cell's environment and writes it under `out`.
pub fn write(project: &Project, cell: &Cell<'_>, opts: &Options, out: &Path) -> Result<()> {
    let rendered = render(project, cell, opts)
        .with_context(|| format!("rendering the Spack environment for {}", cell.id()))?;
    rendered.write(out)?;
    for (rel, _) in &rendered.files {
        outln!("wrote {}", out.join(rel).display());
    }
    Ok(())
}
