//! The two build stages and the index job: render the cell's Spack
//! environment and the in-container script, ensure the image, then run Spack
//! in a container of the cell's OS. Everything is planned as data first, so
//! `--dry-run` prints exactly what a real run executes.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::container::{self, EngineKind, Shown};
use crate::error::Exit;
use crate::fingerprint::{self, Fingerprint};
use crate::gha;
use crate::matrix::{Cell, Variant};
use crate::mirror;
use crate::module;
use crate::package;
use crate::project::Project;
use crate::schema::paths;
use crate::sign::Keyring;
use crate::state::{self, BuildStatus, CellState, VerifyRecord};
use crate::store;
use crate::verify;

mod plan;
mod script;

use crate::schema::paths::mnt;
use plan::{Dirs, Inputs, Plan, plan};
pub use plan::{Options, mirror_url};
use script::Stage;

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
            (Some(_), None) => bail!("{}: no signing key was loaded", self.cell),
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

/// Records how the cell's build ended in its mirror's state object, which
/// `plan` reads: the store's bucket, or the local store.
fn record(
    root: &Path,
    args: &Options,
    cell: &Cell<'_>,
    fingerprint: &Fingerprint,
    status: BuildStatus,
    outcome: Outcome,
) -> Result<()> {
    let store = store::open(
        &args.store,
        Dirs::new(root, args.state_dir.as_deref(), "unused").store(),
    )?;
    let key = state::key(cell);
    let state = CellState {
        fingerprint: fingerprint.clone(),
        status,
        time: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        seconds: Some(outcome.seconds),
        verify: outcome.verify,
    };
    state::record(store.as_ref(), &key, cell.variant.as_str(), &state)?;
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
        Some("it pushes to a mirror other than the store's")
    } else if inputs
        .args
        .target
        .as_ref()
        .is_some_and(|t| *t != inputs.project.matrix.target)
    {
        Some("its target differs from the matrix's target the fingerprint names")
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
    inputs: Inputs<'_>,
    fingerprint: &Fingerprint,
    then: impl FnOnce() -> Result<Option<VerifyRecord>>,
) -> Result<()> {
    let (args, cell, root) = (inputs.args, inputs.cell, &inputs.project.root);
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
    plan.execute(inputs.args.keyring.as_ref())
}

/// `build-deps`: which cell, and where its deps go.
pub struct DepsJob<'m> {
    pub cell: Cell<'m>,
    /// A deps mirror URL instead of the store's (file:// or s3://).
    pub mirror: Option<String>,
    /// Also rebuild the mirror's index.
    pub update_index: bool,
}

/// `build-slurm`: which cell, where its package goes, and how it is checked.
pub struct SlurmJob<'m> {
    pub cell: Cell<'m>,
    /// Where the package goes; `None` is `<state>/dist`.
    pub out: Option<PathBuf>,
    pub skip_verify: bool,
    pub host_gpus: bool,
    pub threads: usize,
    /// The thread count the user gave, if any (for the dry run's printout).
    pub threads_given: Option<u16>,
}

pub fn deps(project: &Project, job: &DepsJob<'_>, opts: &Options) -> Result<()> {
    let inputs = Inputs {
        project,
        cell: job.cell,
        args: opts,
        stage: Stage::Deps {
            update_index: job.update_index,
        },
        deps_mirror: job.mirror.as_deref(),
        out: None,
    };
    let fingerprint = fingerprint::of(project, &job.cell)?;
    run_recorded(inputs, &fingerprint, || Ok(None))
}

pub fn slurm(project: &Project, job: &SlurmJob<'_>, opts: &Options) -> Result<()> {
    let (root, matrix, cell) = (&project.root, &project.matrix, job.cell);
    let release = cell.release.expect("a slurm cell");
    let dirs = Dirs::new(root, opts.state_dir.as_deref(), "unused");
    let stem = package::package_stem(&cell, &matrix.arch, opts.rehearse);
    let built = dirs.state.join("built").join(&stem);
    let inputs = Inputs {
        project,
        cell,
        args: opts,
        stage: Stage::Slurm,
        deps_mirror: None,
        out: Some(&built),
    };
    let dist = job.out.clone().unwrap_or_else(|| dirs.state.join("dist"));
    let fingerprint = fingerprint::of(project, &cell)?;
    let after = || -> Result<Option<VerifyRecord>> {
        if opts.dry_run {
            outln!(
                "# then: cargo xtask package --view {} --lock {} --slurm {} --toolchain {}{}{} --fingerprint {} --out {}, then cargo xtask verify on the tarball",
                built.join("view").display(),
                built.join("spack.lock").display(),
                release.version,
                cell.toolchain.name,
                if cell.variant == Variant::Gpu {
                    " --gpu"
                } else {
                    ""
                },
                job.threads_given
                    .map(|n| format!(" --threads {n}"))
                    .unwrap_or_default(),
                fingerprint.value,
                dist.display()
            );
            return Ok(None);
        }
        package_and_verify(project, job, opts, &built, &dist, &fingerprint)
    };
    run_recorded(inputs, &fingerprint, after)
}

fn package_and_verify(
    project: &Project,
    job: &SlurmJob<'_>,
    opts: &Options,
    built: &Path,
    dist: &Path,
    fingerprint: &Fingerprint,
) -> Result<Option<VerifyRecord>> {
    let cell = &job.cell;
    // The module Spack wrote from our template must be the one we ship.
    let shipped = module::render(&project.module_template, cell)?;
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
        project,
        cell,
        &package::Options {
            view: &built.join("view"),
            lock: &built.join("spack.lock"),
            out: dist,
            arch: project.matrix.arch.clone(),
            fingerprint: Some(fingerprint.value.clone()),
            split_size: package::DEFAULT_SPLIT,
            threads: job.threads,
            keyring: opts.keyring.as_ref(),
            rehearsal: opts.rehearse,
        },
    )?;
    outln!(
        "packaged {} into {}: {}",
        cell.id(),
        dist.display(),
        pkg.tarball
    );
    if job.skip_verify {
        return Ok(None);
    }
    if opts.rehearse {
        outln!(
            "not verified: a rehearsal's view holds placeholders, nothing that runs ({} is never published)",
            pkg.tarball
        );
        return Ok(None);
    }
    let engine = container::detect(opts.engine, false)?.expect("an engine");
    let tarball = dist.join(&pkg.tarball);
    let verify_opts = verify::Options {
        engine,
        image: None,
        network: &opts.network,
        host_gpus: job.host_gpus,
    };
    let report = verify::verify(&project.matrix, &tarball, &verify_opts)?;
    verify::finish(&report, &tarball)?;
    Ok(Some(VerifyRecord {
        passed: true,
        failed: Vec::new(),
    }))
}

/// `index`: rebuild the buildcache index of a cell's mirror.
pub fn index(project: &Project, cell: Cell<'_>, opts: &Options) -> Result<()> {
    run_stage(Inputs {
        project,
        cell,
        args: opts,
        stage: Stage::Index,
        deps_mirror: None,
        out: None,
    })
}
