//! What a build will do, decided before anything runs: the host directories,
//! the mounts, the container run, the in-container script and the secrets'
//! names. Pure planning (it reads the project and checks the image, it
//! changes nothing), so `--dry-run` prints exactly this plan.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::script::{self, Stage};
use crate::container::{self, EngineKind, EnvVar, Mount, Run, mount};
use crate::gha;
use crate::image;
use crate::matrix::Cell;
use crate::module;
use crate::project::Project;
use crate::schema::paths::{self, mnt};
use crate::sign::Keyring;
use crate::spack_env;
use crate::store::StoreUrl;

/// Secrets that may reach the container, by name only, when an s3:// mirror is used.
const AWS_VARS: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
];
/// Of those, the ones whose values are redacted from the debug bundle.
const AWS_SECRETS: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
];

/// The host directories a run uses, all under `target/slurm-factory/` by default.
pub(super) struct Dirs {
    pub(super) state: PathBuf,
    pub(super) work: PathBuf,
}

impl Dirs {
    pub(super) fn new(root: &Path, state: Option<&Path>, slug: &str) -> Dirs {
        let state = state.map_or_else(|| root.join(crate::project::STATE_DIR), Path::to_path_buf);
        let work = state.join("work").join(slug);
        Dirs { state, work }
    }
    pub(super) fn store(&self) -> PathBuf {
        self.state.join("store")
    }
    fn cache(&self, what: &str) -> PathBuf {
        self.state.join("cache").join(what)
    }
    fn env(&self) -> PathBuf {
        self.work.join("env")
    }
    fn debug(&self) -> PathBuf {
        self.work.join("debug")
    }
    fn keys(&self) -> PathBuf {
        self.work.join("keys")
    }
}

/// A fully planned build: nothing has run yet.
pub struct Plan {
    pub(super) cell: String,
    pub(super) engine: Option<EngineKind>,
    pub(super) image: String,
    pub(super) image_build: Option<image::ImageBuild>,
    /// Stage 2's hand-over directory, emptied of a previous run's view first.
    pub(super) fresh_out: Option<PathBuf>,
    /// Spack's install log on this host: what was built, what was extracted.
    pub(super) install_log: PathBuf,
    pub(super) files: Vec<(PathBuf, String)>,
    pub(super) dirs: Vec<PathBuf>,
    pub(super) run: Run,
    pub(super) script: String,
    pub(super) signing: Option<String>,
    pub(super) debug_dir: PathBuf,
    pub(super) redact: Vec<String>,
    /// The pushed mirror on this host, checked after a successful push.
    pub(super) local_mirror: Option<PathBuf>,
    pub(super) expect_index: bool,
}

/// Where a mirror lives and how the container reaches it.
pub fn mirror_url(url: &str) -> Result<(String, Option<Mount>)> {
    if let Some(path) = url.strip_prefix("file://") {
        if !path.starts_with('/') {
            bail!("a file:// URL needs an absolute path");
        }
        let m = mount(Path::new(path), mnt::MIRROR, false);
        return Ok((format!("file://{}", mnt::MIRROR), Some(m)));
    }
    if url.starts_with("s3://") && url.len() > 5 {
        return Ok((url.trim_end_matches('/').to_string(), None));
    }
    let scheme = url.split_once("://").map_or(url, |(s, _)| s);
    bail!("unknown mirror URL scheme '{scheme}' (valid: file://, s3://)")
}

/// How a build runs: the build options of the command line, checked
/// (`flags::BuildArgs::options`).
pub struct Options {
    pub engine: Option<EngineKind>,
    /// An image to use instead of building the toolchain's recipe.
    pub image: Option<String>,
    pub network: String,
    pub store: StoreUrl,
    /// Spack's target; `None` is the matrix's.
    pub target: Option<String>,
    /// Where caches, the local store and work directories live; `None` is
    /// `target/slurm-factory` in the checkout.
    pub state_dir: Option<PathBuf>,
    pub unsigned: bool,
    /// The signing key: `None` when unsigned, for the index job, and for a
    /// dry run given no key.
    pub keyring: Option<Keyring>,
    pub rehearse: bool,
    pub sources: image::Sources,
    pub dry_run: bool,
}

pub(super) struct Inputs<'a> {
    pub(super) project: &'a Project,
    pub(super) cell: Cell<'a>,
    pub(super) args: &'a Options,
    pub(super) stage: Stage,
    pub(super) deps_mirror: Option<&'a str>,
    /// `--out` of build-slurm: where the view, lock and module land.
    pub(super) out: Option<&'a Path>,
}

pub(super) fn plan(inp: &Inputs<'_>) -> Result<Plan> {
    let Inputs {
        project,
        cell,
        args,
        stage,
        ..
    } = *inp;
    let (root, matrix) = (&project.root, &project.matrix);
    let tc = cell.toolchain;
    let slug = match (stage, cell.release) {
        (Stage::Index, Some(r)) => format!("index-{}-{}", tc.name, r.version),
        (Stage::Index, None) => format!("index-{}-deps", tc.name),
        (_, Some(r)) => format!("slurm-{}-{}-{}", r.version, tc.name, cell.variant),
        (_, None) => format!("deps-{}-{}", tc.name, cell.variant),
    };
    let dirs = Dirs::new(root, args.state_dir.as_deref(), &slug);
    let engine = container::detect(args.engine, args.dry_run)?;

    // Mirrors: the store (local directory or S3 bucket), or an explicit deps mirror.
    let store = args.store.clone();
    let mut mounts = Vec::new();
    let rehearsal = args.rehearse;
    let what = cell.release.map_or("deps", |r| r.version.as_str());
    let mut local_mirror = match (stage, &store) {
        (Stage::Index, _) => None,
        (_, StoreUrl::Local) => Some(
            dirs.store()
                .join(crate::schema::mirrors::key(&tc.name, what, rehearsal)),
        ),
        _ => None,
    };
    let deps_override = match inp.deps_mirror {
        Some(url) => {
            let (seen, m) = mirror_url(url)?;
            local_mirror = m.as_ref().map(|m| m.host.clone());
            mounts.extend(m);
            Some(seen)
        }
        None => None,
    };
    let uses_s3 = matches!(store, StoreUrl::Bucket { .. })
        || deps_override
            .as_deref()
            .is_some_and(|u| u.starts_with("s3://"));
    if store == StoreUrl::Local {
        mounts.push(mount(&dirs.store(), paths::LOCAL_STORE, false));
    }
    let opts = spack_env::Options {
        target: args.target.clone().unwrap_or_else(|| matrix.target.clone()),
        store: store.clone(),
        deps_mirror: deps_override,
        rehearsal,
    };
    let rendered = spack_env::render(project, &cell, &opts)
        .with_context(|| format!("rendering the Spack environment for {}", cell.id()))?;

    let signing = match stage {
        Stage::Index => None,
        _ if args.unsigned => None,
        _ => Some(
            args.keyring
                .as_ref()
                .map_or_else(|| "<signing key>".to_string(), |k| k.fingerprint.clone()),
        ),
    };
    let mirror_name = if cell.release.is_some() {
        "slurm-factory-slurm"
    } else {
        "slurm-factory-deps"
    };
    let index_url = match cell.release {
        Some(r) => store.mirror(&tc.name, &r.version, rehearsal),
        None => opts.deps_mirror(&tc.name),
    };
    // Stage 2 hands over the module Spack wrote for the cell.
    let module_file = cell
        .release
        .map(|_| module::module_file(&cell))
        .unwrap_or_default();
    let script = script::render(&script::Script {
        cell: cell.id(),
        stage,
        signing: signing.as_deref(),
        mirror: mirror_name,
        index_url: &index_url,
        rehearsal,
        module_file: &module_file,
    });

    let env_dir = dirs.env();
    let mut files: Vec<(PathBuf, String)> = rendered
        .files
        .into_iter()
        .map(|(rel, text)| (env_dir.join(rel), text))
        .collect();
    files.push((env_dir.join("build.sh"), script.clone()));

    // The image: given, present already, or built from the rendered recipe.
    let (image, image_build) = match &args.image {
        Some(tag) => (tag.clone(), None),
        None => {
            image::ImageBuild::plan(matrix, tc, engine, args.dry_run, &args.sources, &dirs.state)?
        }
    };

    mounts.extend([
        mount(&env_dir, paths::ENV, true),
        mount(&root.join("spack-repo"), paths::SPACK_REPO, true),
        mount(&dirs.cache("source"), paths::SOURCE_CACHE, false),
        mount(&dirs.cache("misc"), paths::MISC_CACHE, false),
        mount(&dirs.cache("ccache"), mnt::CCACHE, false),
        mount(&dirs.work.join("software"), paths::INSTALL_ROOT, false),
        mount(&dirs.work.join("spack"), mnt::WORK, false),
        mount(&dirs.debug(), mnt::DEBUG, false),
    ]);
    let mut dirs_to_make: Vec<PathBuf> = mounts
        .iter()
        .filter(|m| !m.read_only)
        .map(|m| m.host.clone())
        .collect();
    if signing.is_some() {
        mounts.push(mount(&dirs.keys(), mnt::KEYS, true));
    }
    let mut fresh_out = None;
    if stage == Stage::Slurm {
        let out = inp
            .out
            .map_or_else(|| dirs.work.join("out"), Path::to_path_buf);
        dirs_to_make.push(out.clone());
        mounts.push(mount(&out, mnt::OUT, false));
        fresh_out = Some(out);
    }

    let mut env = vec![
        EnvVar::Set("HOME".into(), "/tmp/home".into()),
        EnvVar::Set(
            "SPACK_USER_CACHE_PATH".into(),
            format!("{}/user-cache", mnt::WORK),
        ),
        EnvVar::Set("CCACHE_DIR".into(), mnt::CCACHE.into()),
    ];
    if gha::in_actions() {
        env.push(EnvVar::Set("GITHUB_ACTIONS".into(), "true".into()));
    }
    let mut redact = Vec::new();
    if uses_s3 {
        for var in AWS_VARS {
            if std::env::var_os(var).is_some() {
                env.push(EnvVar::PassThrough((*var).into()));
            }
        }
        for var in AWS_SECRETS {
            if let Ok(v) = std::env::var(var)
                && !v.is_empty()
            {
                redact.push(v);
            }
        }
    }
    let run = Run {
        image: image.clone(),
        host_gpus: false,
        user: Some(container::invoking_user()),
        network: args.network.clone(),
        mounts,
        env,
        command: vec!["bash".into(), format!("{}/build.sh", paths::ENV)],
    };
    Ok(Plan {
        cell: cell.id(),
        engine,
        image,
        image_build,
        files,
        dirs: dirs_to_make,
        run,
        script,
        signing,
        debug_dir: dirs.debug(),
        fresh_out,
        install_log: dirs.work.join("spack").join(script::INSTALL_LOG),
        redact,
        local_mirror,
        expect_index: stage == Stage::Deps { update_index: true },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::Variant;

    fn project() -> Project {
        Project::load(Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()).unwrap()
    }

    fn options(state: &Path) -> Options {
        Options {
            engine: Some(EngineKind::Podman),
            image: Some("localhost/test:tag".into()),
            network: "none".into(),
            store: StoreUrl::Local,
            target: None,
            state_dir: Some(state.to_path_buf()),
            unsigned: true,
            keyring: None,
            rehearse: false,
            sources: image::Sources::default(),
            dry_run: true,
        }
    }

    fn planned(
        p: &Project,
        cell: Cell<'_>,
        opts: &Options,
        stage: Stage,
        out: Option<&Path>,
    ) -> Plan {
        plan(&Inputs {
            project: p,
            cell,
            args: opts,
            stage,
            deps_mirror: None,
            out,
        })
        .unwrap()
    }

    fn mount_of<'p>(plan: &'p Plan, container: &str) -> Option<&'p Mount> {
        plan.run.mounts.iter().find(|m| m.container == container)
    }

    #[test]
    fn a_deps_plan_mounts_the_local_store_and_writes_the_environment_and_script() {
        let (p, state) = (project(), tempfile::tempdir().unwrap());
        let opts = options(state.path());
        let cell = p.matrix.cell("noble", None, false).unwrap();
        let plan = planned(&p, cell, &opts, Stage::Deps { update_index: true }, None);
        let store = mount_of(&plan, paths::LOCAL_STORE).expect("the local store is mounted");
        assert_eq!(store.host, state.path().join("store"));
        assert!(!store.read_only, "the build pushes into it");
        assert_eq!(
            plan.local_mirror.as_deref(),
            Some(state.path().join("store/noble/slurm/deps").as_path())
        );
        let env = state.path().join("work/deps-noble-cpu/env");
        for name in ["spack.yaml", "build.sh"] {
            assert!(
                plan.files.iter().any(|(f, _)| *f == env.join(name)),
                "{name}"
            );
        }
        assert_eq!(plan.image, "localhost/test:tag");
        assert!(plan.image_build.is_none(), "a given image is not built");
        assert_eq!(plan.run.network, "none");
        assert!(plan.signing.is_none() && mount_of(&plan, mnt::KEYS).is_none());
        assert!(plan.fresh_out.is_none() && plan.expect_index);
    }

    #[test]
    fn a_signed_slurm_plan_mounts_the_key_read_only_and_hands_over_into_out() {
        let (p, state) = (project(), tempfile::tempdir().unwrap());
        let opts = Options {
            unsigned: false,
            ..options(state.path())
        };
        let cell = p.matrix.cell("jammy", Some("24.11"), true).unwrap();
        assert_eq!(cell.variant, Variant::Gpu);
        let out = state.path().join("handover");
        let plan = planned(&p, cell, &opts, Stage::Slurm, Some(&out));
        // A dry run given no key names the key it would use.
        assert_eq!(plan.signing.as_deref(), Some("<signing key>"));
        assert!(mount_of(&plan, mnt::KEYS).expect("keys mounted").read_only);
        assert_eq!(plan.fresh_out.as_deref(), Some(out.as_path()));
        assert_eq!(mount_of(&plan, mnt::OUT).unwrap().host, out);
        assert!(
            plan.script.contains("slurm-factory-slurm"),
            "{}",
            plan.script
        );
    }

    #[test]
    fn a_rehearsal_pushes_under_rehearsal_never_beside_real_mirrors() {
        let (p, state) = (project(), tempfile::tempdir().unwrap());
        let opts = Options {
            rehearse: true,
            ..options(state.path())
        };
        let cell = p.matrix.cell("rockylinux9", Some("25.11"), false).unwrap();
        let plan = planned(&p, cell, &opts, Stage::Slurm, None);
        assert_eq!(
            plan.local_mirror.as_deref(),
            Some(
                state
                    .path()
                    .join("store/rehearsal/rockylinux9/slurm/25.11")
                    .as_path()
            )
        );
    }

    #[test]
    fn mirror_urls_are_absolute_files_or_buckets() {
        let (seen, m) = mirror_url("file:///srv/mirror").unwrap();
        assert_eq!(seen, format!("file://{}", mnt::MIRROR));
        assert_eq!(m.unwrap().host, Path::new("/srv/mirror"));
        let (seen, m) = mirror_url("s3://b/p/").unwrap();
        assert_eq!(seen, "s3://b/p");
        assert!(m.is_none(), "a bucket is not mounted");
        let relative = mirror_url("file://srv").unwrap_err().to_string();
        assert!(relative.contains("absolute path"), "{relative}");
        let http = mirror_url("http://x/y").unwrap_err().to_string();
        assert!(http.contains("unknown mirror URL scheme 'http'"), "{http}");
    }
}
