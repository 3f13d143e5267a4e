//! The two build stages and the index job: render the cell's Spack
//! environment and the in-container script, ensure the image, then run Spack
//! in a container of the cell's OS. Everything is planned as data first, so
//! `--dry-run` prints exactly what a real run executes.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::container::{self, EngineKind, EnvVar, Mount, Run, Shown, mount};
use crate::error::{Exit, UsageError};
use crate::fingerprint::{self, BuildStatus, CellState, Fingerprint, VerifyRecord};
use crate::flags::{BuildArgs, BuildDepsCmd, BuildSlurmCmd, IndexCmd};
use crate::gha;
use crate::image;
use crate::matrix::{Cell, Matrix};
use crate::mirror;
use crate::module;
use crate::package;
use crate::schema::paths;
use crate::sign::{self, Keyring};
use crate::spack_env::{self, EnvironmentData, StoreUrl};
use crate::verify;

mod script;

use script::Stage;

/// Container paths of the mounts every build gets.
mod mnt {
    pub const WORK: &str = "/opt/slurm-factory/work";
    pub const DEBUG: &str = "/opt/slurm-factory/debug";
    pub const KEYS: &str = "/opt/slurm-factory/keys";
    pub const OUT: &str = "/opt/slurm-factory/out";
    pub const MIRROR: &str = "/opt/slurm-factory/mirror";
    pub const CCACHE: &str = "/opt/slurm-factory/cache/ccache";
}

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
struct Dirs {
    state: PathBuf,
    work: PathBuf,
}

impl Dirs {
    fn new(root: &Path, state: Option<&Path>, slug: &str) -> Dirs {
        let state = state.map_or_else(|| root.join("target/slurm-factory"), Path::to_path_buf);
        let work = state.join("work").join(slug);
        Dirs { state, work }
    }
    fn store(&self) -> PathBuf {
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
    cell: String,
    engine: Option<EngineKind>,
    image: String,
    image_build: Option<image::ImageBuild>,
    /// Stage 2's hand-over directory, emptied of a previous run's view first.
    fresh_out: Option<PathBuf>,
    /// Spack's install log on this host: what was built, what was extracted.
    install_log: PathBuf,
    files: Vec<(PathBuf, String)>,
    dirs: Vec<PathBuf>,
    run: Run,
    script: String,
    signing: Option<String>,
    debug_dir: PathBuf,
    redact: Vec<String>,
    /// The pushed mirror on this host, checked after a successful push.
    local_mirror: Option<PathBuf>,
    expect_index: bool,
}

/// Where a mirror lives and how the container reaches it.
fn mirror_url(url: &str) -> Result<(String, Option<Mount>)> {
    if let Some(path) = url.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(UsageError::new(format!(
                "--mirror {url}: a file:// URL needs an absolute path"
            ))
            .into());
        }
        let m = mount(Path::new(path), mnt::MIRROR, false);
        return Ok((format!("file://{}", mnt::MIRROR), Some(m)));
    }
    if url.starts_with("s3://") && url.len() > 5 {
        return Ok((url.trim_end_matches('/').to_string(), None));
    }
    let scheme = url.split_once("://").map_or(url, |(s, _)| s);
    Err(UsageError::new(format!(
        "unknown mirror URL scheme '{scheme}' in '{url}' (valid: file://, s3://)"
    ))
    .into())
}

struct Inputs<'a> {
    root: &'a Path,
    matrix: &'a Matrix,
    /// spack-env/environment.yaml, read once per command.
    data: &'a EnvironmentData,
    cell: Cell<'a>,
    args: &'a BuildArgs,
    stage: Stage,
    deps_mirror: Option<&'a str>,
    keyring: Option<&'a Keyring>,
    /// `--out` of build-slurm: where the view, lock and module land.
    out: Option<&'a Path>,
}

fn plan(inp: &Inputs<'_>) -> Result<Plan> {
    let Inputs {
        root,
        matrix,
        data,
        cell,
        args,
        stage,
        ..
    } = *inp;
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
    let store = args.store.mirrors()?;
    let mut mounts = Vec::new();
    let rehearsal = args.rehearse;
    let what = cell.release.map_or("deps", |r| r.version.as_str());
    let mut local_mirror = match (stage, &store) {
        (Stage::Index, _) => None,
        (_, StoreUrl::Local) => Some(
            dirs.store()
                .join(spack_env::mirror_key(&tc.name, what, rehearsal)),
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
    let rendered = spack_env::render(root, data, &cell, &opts)
        .with_context(|| format!("rendering the Spack environment for {}", cell.id()))?;

    let signing = match stage {
        Stage::Index => None,
        _ if args.signing.unsigned => None,
        _ => Some(
            inp.keyring
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

impl Plan {
    fn print(&self) {
        outln!("# cell {}", self.cell);
        let engine = self.engine.unwrap_or_else(|| {
            outln!("# no container engine found: showing the podman commands");
            EngineKind::Podman
        });
        match &self.image_build {
            Some(ib) => ib.print(engine),
            None => outln!("# image {} is present: not rebuilt", self.image),
        }
        match &self.signing {
            Some(key) => outln!(
                "# signing key {key}: written to {} (0600) for the run and removed afterwards",
                self.run
                    .mounts
                    .iter()
                    .find(|m| m.container == mnt::KEYS)
                    .map_or(String::new(), |m| m.host.display().to_string())
            ),
            None => outln!("# unsigned: nothing is signed"),
        }
        outln!("{}", Shown(&self.run.argv(engine)));
        outln!("# {}/build.sh:", paths::ENV);
        for l in self.script.lines() {
            outln!("#   {l}");
        }
    }

    fn execute(&self, keyring: Option<&Keyring>) -> Result<()> {
        let engine = self.engine.context("no container engine")?;
        // The image first: if it cannot be had, nothing else is written.
        match &self.image_build {
            Some(ib) => ib.execute(engine)?,
            None => {
                if !container::image_exists(engine, &self.image)? {
                    bail!(
                        "the image {} is not available to {}",
                        self.image,
                        engine.program()
                    );
                }
            }
        }
        for (path, text) in &self.files {
            std::fs::create_dir_all(path.parent().unwrap())?;
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        }
        for d in &self.dirs {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let _ = std::fs::remove_dir_all(&self.debug_dir);
        std::fs::create_dir_all(&self.debug_dir)?;
        if let Some(out) = &self.fresh_out {
            // What a previous run handed over must not mix with this one's.
            for stale in ["view", "module.lua", "spack.lock"] {
                let p = out.join(stale);
                let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
            }
            std::fs::create_dir_all(out.join("view"))?;
        }
        let keys = match (&self.signing, keyring) {
            (Some(_), Some(k)) => Some(SecretFiles::write(
                self.run
                    .mounts
                    .iter()
                    .find(|m| m.container == mnt::KEYS)
                    .unwrap()
                    .host
                    .clone(),
                k,
            )?),
            (Some(_), None) => bail!("{}", sign::NO_KEY_HELP),
            _ => None,
        };
        let argv = self.run.argv(engine);
        outln!("{}", Shown(&argv));
        let code = container::execute(&argv);
        drop(keys);
        let code = code?;
        if code == 125 {
            bail!(
                "{}: {} could not start the container (exit 125; see its message above)",
                self.cell,
                engine.program()
            );
        }
        if code != 0 {
            let phase = std::fs::read_to_string(self.debug_dir.join("phase"))
                .unwrap_or_else(|_| "start".into());
            redact_tree(&self.debug_dir, &self.redact)?;
            return Err(Exit::new(
                code,
                format!(
                    "{}: Spack failed in phase '{}' (exit {code}); debug bundle: {}",
                    self.cell,
                    phase.trim(),
                    self.debug_dir.display()
                ),
            )
            .into());
        }
        if let Ok(log) = std::fs::read_to_string(&self.install_log) {
            let report = script::InstallReport::parse(&log);
            let lines = report.lines(&self.cell);
            for l in &lines {
                outln!("{l}");
            }
            if gha::in_actions() {
                gha::append_summary(&format!("- {}\n- {}\n", lines[0], lines[1]))?;
            }
        }
        if let Some(dir) = &self.local_mirror {
            let signer = keyring
                .filter(|_| self.signing.is_some())
                .map(|k| k.fingerprint.as_str());
            let report = mirror::verify(dir, signer)
                .with_context(|| format!("checking the pushed mirror {}", dir.display()))?;
            if self.expect_index && !report.has_index {
                bail!(
                    "{}: --update-index was given but the mirror has no index",
                    dir.display()
                );
            }
            outln!(
                "mirror {}: {} specs, {}, blobs intact",
                dir.display(),
                report.specs.len(),
                if report.signers.is_empty() {
                    "unsigned".to_string()
                } else {
                    format!(
                        "signed by {}",
                        report
                            .signers
                            .iter()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            );
        }
        Ok(())
    }
}

/// The key and passphrase as files in a 0700 directory, for the container's
/// read-only mount; removed when dropped, whatever happened in between.
struct SecretFiles {
    dir: PathBuf,
}

impl SecretFiles {
    fn write(dir: PathBuf, keyring: &Keyring) -> Result<SecretFiles> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        let guard = SecretFiles { dir };
        for (name, bytes) in [
            ("signing-key.asc", keyring.armored()),
            ("passphrase", keyring.passphrase().as_bytes()),
        ] {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(guard.dir.join(name))?;
            std::io::Write::write_all(&mut f, bytes)?;
        }
        Ok(guard)
    }
}

impl Drop for SecretFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Replaces every secret value in the debug bundle's files with `***`.
fn redact_tree(dir: &Path, secrets: &[String]) -> Result<()> {
    if secrets.is_empty() {
        return Ok(());
    }
    for e in walkdir::WalkDir::new(dir) {
        let e = e?;
        if !e.file_type().is_file() {
            continue;
        }
        let bytes = std::fs::read(e.path())?;
        let mut text = String::from_utf8_lossy(&bytes).into_owned();
        let before = text.len();
        for s in secrets {
            text = text.replace(s.as_str(), "***");
        }
        if text.len() != before
            || secrets
                .iter()
                .any(|s| bytes.windows(s.len()).any(|w| w == s.as_bytes()))
        {
            std::fs::write(e.path(), text)?;
        }
    }
    Ok(())
}

fn check_args(args: &BuildArgs) -> Result<()> {
    if !["none", "host", "bridge", "default", "slirp4netns", "pasta"]
        .contains(&args.network.as_str())
    {
        return Err(UsageError::new(format!(
            "--network {} is not a network mode (valid: host, none, bridge, default, slirp4netns, pasta)",
            args.network
        ))
        .into());
    }
    Ok(())
}

/// Records how the cell's build ended in its mirror's state object, which
/// `plan` reads: the store's bucket, or the local store.
fn record(
    root: &Path,
    args: &BuildArgs,
    cell: &Cell<'_>,
    fingerprint: &Fingerprint,
    status: BuildStatus,
    outcome: Outcome,
) -> Result<()> {
    let store = args
        .store
        .open(Dirs::new(root, args.state_dir.as_deref(), "unused").store())?;
    let key = fingerprint::state_key(cell);
    let state = CellState {
        fingerprint: fingerprint.clone(),
        status,
        time: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        seconds: Some(outcome.seconds),
        verify: outcome.verify,
    };
    fingerprint::record_state(store.as_ref(), &key, cell.variant.as_str(), &state)?;
    outln!(
        "recorded {} as {status:?} in {} ({key})",
        cell.id(),
        store.describe()
    );
    Ok(())
}

/// Why a run must not be recorded as the cell's build: the fingerprint
/// describes the store's mirror built for the matrix's target. (`--image`
/// stands in for the recipe's image where it cannot be built, offline and in
/// the tests, and is recorded.)
fn unrecorded_because(inputs: &Inputs<'_>) -> Option<&'static str> {
    if inputs.args.rehearse {
        Some("a rehearsal builds nothing real (spack install --fake)")
    } else if inputs.deps_mirror.is_some() {
        Some("--mirror pushes somewhere other than the store's mirror")
    } else if inputs
        .args
        .target
        .as_ref()
        .is_some_and(|t| *t != inputs.matrix.target)
    {
        Some("--target differs from the matrix's target the fingerprint names")
    } else {
        None
    }
}

/// What a build's record says besides built or failed.
struct Outcome {
    seconds: u64,
    verify: Option<VerifyRecord>,
}

/// Runs a stage and records its outcome (not for dry runs): how it ended,
/// how long it took, and the verify's failed checks by name. `then` runs
/// after the stage (package and verify) and tells how verify went, if it ran.
fn run_recorded(
    root: &Path,
    inputs: Inputs<'_>,
    fingerprint: &Fingerprint,
    then: impl FnOnce() -> Result<Option<VerifyRecord>>,
) -> Result<()> {
    let (args, cell) = (inputs.args, inputs.cell);
    let unrecorded = unrecorded_because(&inputs);
    if args.dry_run || unrecorded.is_some() {
        run_stage(inputs)?;
        if let (Some(why), false) = (unrecorded, args.dry_run) {
            outln!("not recorded in the store's state: {why}");
        }
        return then().map(|_| ());
    }
    let start = std::time::Instant::now();
    let result = run_stage(inputs).and_then(|()| then());
    let (status, verify) = match &result {
        Ok(verify) => (BuildStatus::Built, verify.clone()),
        Err(e) => (
            BuildStatus::Failed,
            e.downcast_ref::<verify::Failed>().map(|f| VerifyRecord {
                passed: false,
                failed: f.failed.clone(),
            }),
        ),
    };
    let outcome = Outcome {
        seconds: start.elapsed().as_secs(),
        verify,
    };
    let recorded = record(root, args, &cell, fingerprint, status, outcome);
    result?;
    recorded
}

fn run_stage(inputs: Inputs<'_>) -> Result<()> {
    let plan = plan(&inputs)?;
    if inputs.args.dry_run {
        plan.print();
        return Ok(());
    }
    plan.execute(inputs.keyring)
}

/// The signing key of a build: a rehearsal given none signs with a throwaway key.
fn keyring(args: &BuildArgs) -> Result<Option<Keyring>> {
    args.signing
        .keyring_or_throwaway(args.dry_run, args.rehearse)
}

impl BuildDepsCmd {
    pub fn run(self, root: &Path, matrix: &Matrix) -> Result<()> {
        check_args(&self.build)?;
        let cell = matrix.cell(&self.toolchain, None, self.gpu)?;
        if let Some(m) = &self.mirror {
            mirror_url(m)?;
        }
        let keyring = keyring(&self.build)?;
        let data = EnvironmentData::load(root)?;
        let inputs = Inputs {
            root,
            matrix,
            data: &data,
            cell,
            args: &self.build,
            stage: Stage::Deps {
                update_index: self.update_index,
            },
            deps_mirror: self.mirror.as_deref(),
            keyring: keyring.as_ref(),
            out: None,
        };
        let fingerprint = fingerprint::of(root, &data, &cell)?;
        run_recorded(root, inputs, &fingerprint, || Ok(None))
    }
}

impl BuildSlurmCmd {
    pub fn run(self, root: &Path, matrix: &Matrix) -> Result<()> {
        check_args(&self.build)?;
        let cell = matrix.cell(&self.toolchain, Some(&self.slurm), self.gpu)?;
        let keyring = keyring(&self.build)?;
        let dirs = Dirs::new(root, self.build.state_dir.as_deref(), "unused");
        let stem = package::package_stem(&cell, &matrix.arch, self.build.rehearse);
        let built = dirs.state.join("built").join(&stem);
        let data = EnvironmentData::load(root)?;
        let inputs = Inputs {
            root,
            matrix,
            data: &data,
            cell,
            args: &self.build,
            stage: Stage::Slurm,
            deps_mirror: None,
            keyring: keyring.as_ref(),
            out: Some(&built),
        };
        let dist = self.out.clone().unwrap_or_else(|| dirs.state.join("dist"));
        let fingerprint = fingerprint::of(root, &data, &cell)?;
        let after = || -> Result<Option<VerifyRecord>> {
            if self.build.dry_run {
                outln!(
                    "# then: cargo xtask package --view {} --lock {} --slurm {} --toolchain {}{}{} --fingerprint {} --out {}, then cargo xtask verify on the tarball",
                    built.join("view").display(),
                    built.join("spack.lock").display(),
                    self.slurm,
                    self.toolchain,
                    if self.gpu { " --gpu" } else { "" },
                    self.threads
                        .threads
                        .map(|n| format!(" --threads {n}"))
                        .unwrap_or_default(),
                    fingerprint.value,
                    dist.display()
                );
                return Ok(None);
            }
            self.package_and_verify(
                root,
                matrix,
                &cell,
                &data,
                &built,
                &dist,
                &fingerprint,
                keyring.as_ref(),
            )
        };
        run_recorded(root, inputs, &fingerprint, after)
    }

    #[allow(clippy::too_many_arguments)]
    fn package_and_verify(
        &self,
        root: &Path,
        matrix: &Matrix,
        cell: &Cell<'_>,
        data: &EnvironmentData,
        built: &Path,
        dist: &Path,
        fingerprint: &Fingerprint,
        keyring: Option<&Keyring>,
    ) -> Result<Option<VerifyRecord>> {
        // The module Spack wrote from our template must be the one we ship.
        let shipped = module::render(root, cell)?;
        let from_spack = std::fs::read_to_string(built.join("module.lua")).unwrap_or_default();
        // Spack's template engine drops the file's final newline.
        if from_spack.trim_end() != shipped.trim_end() {
            bail!(
                "{}: the module Spack generated differs from modules/slurm.lua.tmpl's rendering",
                cell.id()
            );
        }
        let _g = gha::Group::new(&format!("package {}", cell.id()));
        let pkg = package::package(
            root,
            data,
            cell,
            &package::Options {
                view: &built.join("view"),
                lock: &built.join("spack.lock"),
                out: dist,
                arch: matrix.arch.clone(),
                fingerprint: Some(fingerprint.value.clone()),
                split_size: package::DEFAULT_SPLIT,
                threads: self.threads.count(),
                keyring,
                rehearsal: self.build.rehearse,
            },
        )?;
        outln!(
            "packaged {} into {}: {}",
            cell.id(),
            dist.display(),
            pkg.tarball
        );
        if self.skip_verify {
            return Ok(None);
        }
        if self.build.rehearse {
            outln!(
                "not verified: a rehearsal's view holds placeholders, nothing that runs ({} is never published)",
                pkg.tarball
            );
            return Ok(None);
        }
        let engine = container::detect(self.build.engine, false)?.expect("an engine");
        let tarball = dist.join(&pkg.tarball);
        let opts = verify::Options {
            engine,
            image: None,
            network: &self.build.network,
            host_gpus: self.host_gpus,
        };
        let report = verify::verify(matrix, &tarball, &opts)?;
        verify::finish(&report, &tarball)?;
        Ok(Some(VerifyRecord {
            passed: true,
            failed: Vec::new(),
        }))
    }
}

impl IndexCmd {
    pub fn run(self, root: &Path, matrix: &Matrix) -> Result<()> {
        check_args(&self.build)?;
        let cell = matrix.cell(&self.toolchain, self.slurm.as_deref(), false)?;
        let data = EnvironmentData::load(root)?;
        let inputs = Inputs {
            root,
            matrix,
            data: &data,
            cell,
            args: &self.build,
            stage: Stage::Index,
            deps_mirror: None,
            keyring: None,
            out: None,
        };
        run_stage(inputs)
    }
}
