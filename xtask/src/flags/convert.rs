//! Each command's flags, checked and turned into the plain values its stage
//! takes. `lib.rs` calls these, then the stage; the stages never see clap.

use std::path::Path;

use anyhow::Result;

use super::*;
use crate::admin_binary;
use crate::bench;
use crate::build;
use crate::error::UsageError;
use crate::image;
use crate::matrix::{Cell, Matrix, Stage};
use crate::package;
use crate::plan;
use crate::project::Project;
use crate::publish;
use crate::report;
use crate::spack_env;
use crate::verify;

impl SpackEnvCmd {
    pub fn cell<'m>(&self, matrix: &'m Matrix) -> Result<Cell<'m>> {
        match (self.stage, &self.slurm) {
            (Stage::Deps, Some(_)) => {
                return Err(UsageError::new(
                    "--slurm does not apply to --stage deps: dependencies are shared by every Slurm version",
                )
                .into());
            }
            (Stage::Slurm, None) => {
                let valid: Vec<&str> = matrix.slurm.iter().map(|s| s.version.as_str()).collect();
                return Err(UsageError::new(format!(
                    "--stage slurm needs --slurm V (valid: {})",
                    valid.join(", ")
                ))
                .into());
            }
            _ => {}
        }
        check_target(self.target.as_deref())?;
        matrix.cell(&self.toolchain, self.slurm.as_deref(), self.gpu)
    }

    pub fn options(&self, matrix: &Matrix) -> Result<spack_env::Options> {
        Ok(spack_env::Options {
            target: self.target.clone().unwrap_or_else(|| matrix.target.clone()),
            store: self.store.mirrors()?,
            deps_mirror: self.deps_mirror.clone(),
            rehearsal: false,
        })
    }
}

/// `--target` names a Spack microarchitecture: letters, digits, underscores.
fn check_target(target: Option<&str>) -> Result<()> {
    match target {
        Some(t) if t.is_empty() || !t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') => {
            Err(UsageError::new(format!(
                "--target '{t}' is not a Spack target name like x86_64_v3"
            ))
            .into())
        }
        _ => Ok(()),
    }
}

impl PackageCmd {
    pub fn job<'m>(&self, matrix: &'m Matrix) -> Result<package::Job<'m>> {
        let cell = matrix.cell(&self.toolchain, Some(&self.slurm), self.gpu)?;
        if let Some(f) = &self.fingerprint
            && (f.is_empty() || !f.bytes().all(|b| b.is_ascii_alphanumeric()))
        {
            return Err(
                UsageError::new(format!("--fingerprint '{f}' must be letters and digits")).into(),
            );
        }
        Ok(package::Job {
            cell,
            view: self.view.clone(),
            lock: self.lock.clone(),
            out: self.out.clone(),
            arch: self.arch.clone().unwrap_or_else(|| matrix.arch.clone()),
            fingerprint: self.fingerprint.clone(),
            split_size: self.split_size,
            threads: self.threads.count(),
            keyring: self.signing.keyring(false)?,
            dry_run: self.dry_run,
        })
    }
}

impl ImageCmd {
    pub fn job(&self, project: &Project) -> Result<image::Job> {
        let toolchain = project.matrix.toolchain(&self.toolchain)?.name.clone();
        let show = match (self.build, self.print) {
            (true, _) => image::Show::Build {
                engine: self.engine.engine,
                sources: self.sources.sources(),
                state_dir: self
                    .state_dir
                    .clone()
                    .unwrap_or_else(|| project.state_dir()),
                dry_run: self.dry_run,
            },
            (false, true) => image::Show::Recipe,
            (false, false) => image::Show::Tag,
        };
        Ok(image::Job { toolchain, show })
    }
}

impl BuildArgs {
    /// The build options; `signs` when the stage signs what it pushes (the
    /// index job signs nothing).
    pub fn options(&self, signs: bool) -> Result<build::Options> {
        let network = self.network.checked()?;
        check_target(self.target.as_deref())?;
        let keyring = if signs {
            self.signing
                .keyring_or_throwaway(self.dry_run, self.rehearse)?
        } else {
            None
        };
        Ok(build::Options {
            engine: self.engine.engine,
            image: self.image.image.clone(),
            network,
            store: self.store.mirrors()?,
            target: self.target.clone(),
            state_dir: self.state_dir.clone(),
            unsigned: self.signing.unsigned,
            keyring,
            rehearse: self.rehearse,
            sources: self.sources.sources(),
            dry_run: self.dry_run,
        })
    }
}

impl BuildDepsCmd {
    pub fn job<'m>(&self, matrix: &'m Matrix) -> Result<build::DepsJob<'m>> {
        let cell = matrix.cell(&self.toolchain, None, self.gpu)?;
        if let Some(m) = &self.mirror {
            build::mirror_url(m).map_err(|e| UsageError::new(format!("--mirror {m}: {e}")))?;
        }
        Ok(build::DepsJob {
            cell,
            mirror: self.mirror.clone(),
            update_index: self.update_index,
        })
    }
}

impl BuildSlurmCmd {
    pub fn job<'m>(&self, matrix: &'m Matrix) -> Result<build::SlurmJob<'m>> {
        Ok(build::SlurmJob {
            cell: matrix.cell(&self.toolchain, Some(&self.slurm), self.gpu)?,
            out: self.out.clone(),
            skip_verify: self.skip_verify,
            host_gpus: self.host_gpus,
            threads: self.threads.count(),
            threads_given: self.threads.threads,
        })
    }
}

impl IndexCmd {
    pub fn cell<'m>(&self, matrix: &'m Matrix) -> Result<Cell<'m>> {
        matrix.cell(&self.toolchain, self.slurm.as_deref(), false)
    }
}

impl PublishCmd {
    pub fn job(&self, root: &Path) -> Result<publish::Job> {
        if let Some(url) = &self.public_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(UsageError::new(format!(
                "--public-url {url}: expected an http(s):// URL where the store is served"
            ))
            .into());
        }
        let target = match self.to {
            PublishTo::Github if self.public_url.is_some() => {
                return Err(UsageError::new(
                    "--public-url is where an S3 or local store is served; GitHub releases have their own URLs",
                )
                .into());
            }
            PublishTo::Github => publish::Target::GitHub,
            PublishTo::Local => publish::Target::Store {
                store: Box::new(self.store.local(root)),
                public_url: self.public_url.clone(),
            },
            PublishTo::S3 => publish::Target::Store {
                store: Box::new(self.store.s3()?),
                public_url: self.public_url.clone(),
            },
        };
        Ok(publish::Job {
            dir: self.dir.clone(),
            target,
            allow_unsigned: self.allow_unsigned,
            dry_run: self.dry_run,
        })
    }
}

impl PlanCmd {
    pub fn job(&self, root: &Path) -> Result<plan::Job> {
        Ok(plan::Job {
            stage: self.stage,
            filter: self.filter.cells(),
            force: self.force,
            rehearse: self.rehearse,
            json: self.json,
            github_output: self.github_output,
            store: self.store.open(root)?,
        })
    }
}

impl ReportCmd {
    pub fn job(&self, root: &Path) -> Result<report::Job> {
        Ok(report::Job {
            store: self.store.open(root)?,
            public_url: self.public_url.clone(),
            dry_run: self.dry_run,
        })
    }
}

impl VerifyCmd {
    pub fn job(&self) -> Result<verify::Job> {
        Ok(verify::Job {
            tarball: self.tarball.clone(),
            engine: self.engine.engine,
            image: self.image.image.clone(),
            network: self.network.checked()?,
            host_gpus: self.host_gpus,
        })
    }
}

impl BenchCmd {
    pub fn job(&self) -> bench::Job {
        bench::Job {
            what: match self.what {
                BenchWhat::Package => bench::What::Package,
                BenchWhat::Upload => bench::What::Upload,
                BenchWhat::Download => bench::What::Download,
            },
            size_mib: self.size_mib,
            dir: self.dir.clone(),
        }
    }
}

impl AdminBinaryCmd {
    pub fn job(&self) -> Result<admin_binary::Job> {
        Ok(admin_binary::Job {
            out: self.out.clone(),
            keyring: self.signing.keyring(self.dry_run)?,
            unsigned: self.signing.unsigned,
            dry_run: self.dry_run,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::matrix::CellFilter;
    use crate::matrix::entry::{Entry, MirrorEntry};

    fn parse(command: &str, args: &[String]) -> Command {
        let argv = ["xtask", command].into_iter().map(String::from);
        Cli::try_parse_from(argv.chain(args.iter().cloned()))
            .unwrap_or_else(|e| panic!("{command} {args:?}: {e}"))
            .command
    }

    /// The plan's precomputed arguments are what the real command line
    /// accepts, and mean the cell they were made for.
    #[test]
    fn every_matrix_entrys_arguments_parse_as_its_cell() {
        let m = Matrix::load(Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()).unwrap();
        for rehearse in [false, true] {
            let deps = m.cells(Stage::Deps, &CellFilter::default()).unwrap();
            for cell in &deps {
                let Command::BuildDeps(cmd) = parse("build-deps", &Entry::of(cell, rehearse).args)
                else {
                    unreachable!()
                };
                assert_eq!(cmd.job(&m).unwrap().cell.id(), cell.id());
                assert_eq!(cmd.build.rehearse, rehearse);
            }
            let slurm = m.cells(Stage::Slurm, &CellFilter::default()).unwrap();
            for cell in &slurm {
                let entry = Entry::of(cell, rehearse);
                let Command::BuildSlurm(cmd) = parse("build-slurm", &entry.args) else {
                    unreachable!()
                };
                assert_eq!(cmd.job(&m).unwrap().cell.id(), cell.id());
                assert_eq!(cmd.host_gpus, entry.gpu, "GPU cells verify on their GPUs");
                assert_eq!(cmd.build.rehearse, rehearse);
            }
            for (cells, n) in [(&deps, m.toolchains.len()), (&slurm, 18)] {
                let mirrors = MirrorEntry::of(cells.iter(), rehearse);
                assert_eq!(mirrors.len(), n);
                for mirror in mirrors {
                    let Command::Index(cmd) = parse("index", &mirror.args) else {
                        unreachable!()
                    };
                    assert_eq!(cmd.toolchain, mirror.toolchain);
                    assert_eq!(cmd.slurm, mirror.version);
                    assert_eq!(cmd.build.rehearse, rehearse);
                }
            }
        }
    }

    /// Clap types stay at the edge: only `flags/` and the dispatch in
    /// `lib.rs` (and the executables' `main`s) know the command line.
    #[test]
    fn only_the_edge_knows_the_command_line() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut checked = 0;
        for entry in walkdir::WalkDir::new(&src) {
            let path = entry.unwrap().into_path();
            let rel = path.strip_prefix(&src).unwrap();
            let edge = rel.starts_with("flags")
                || rel.starts_with("bin")
                || rel == Path::new("lib.rs")
                || rel == Path::new("main.rs");
            if edge || path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            checked += 1;
            let text = std::fs::read_to_string(&path).unwrap();
            for line in text.lines().map(str::trim_start) {
                if line.starts_with("//") {
                    continue;
                }
                for clap in ["clap::", "use clap", "crate::flags"] {
                    assert!(!line.contains(clap), "{}: {line}", rel.display());
                }
                // A flag offered as a way out is spelled by `flags::remedy`.
                for flag in ["--allow-unsigned", "--engine", "--spack-sources"] {
                    assert!(!line.contains(flag), "{}: {line}", rel.display());
                }
            }
        }
        assert!(checked > 40, "{checked} files");
    }
}
