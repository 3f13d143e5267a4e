//! The three workflows, assembled from the shared jobs: CI, the dependency
//! build, and the Slurm build with its admin-binary, report and release jobs.

use super::*;
use crate::matrix::entry::field;
use crate::schema::release;
use crate::{sign, store};

impl Ctx<'_> {
    pub(super) fn ci(&self) -> Workflow {
        let main = || {
            Some(Branches {
                branches: vec![DEFAULT_BRANCH.into()],
            })
        };
        // The same script CI runs on a fresh machine, as root (it installs
        // packages and runs rootful Podman), with the runner's Rust.
        let checks = Job::new(
            "fmt, clippy, tests, generated files, actionlint (.ci/run)",
            self.control_runner(),
            90,
            &[("contents", "read")],
        )
        .step(self.checkout())
        .steps(self.rust(Some("rustfmt, clippy")))
        .step(Step::run(
            "Everything CI checks, as on a fresh machine",
            "sudo -E env \"PATH=$PATH\" bash .ci/run\n",
        ));
        Workflow {
            name: "CI".into(),
            triggers: Triggers {
                pull_request: main(),
                push: main(),
                ..Default::default()
            },
            permissions: perms(&[]),
            concurrency: Concurrency {
                group: format!("ci-{}", expr("github.ref")),
                cancel_in_progress: true,
                queue: None,
            },
            env: [("CARGO_TERM_COLOR".to_string(), "always".to_string())]
                .into_iter()
                .collect(),
            jobs: jobs([(JobId::Checks, checks)]),
        }
    }

    /// A build step: the toolkit with the plan's arguments for the cell,
    /// the bucket, and the signing key.
    pub(super) fn build_step(name: &str, command: &str) -> Step {
        Self::signing_env(Self::toolkit_step(name, command).env_from_var(store::BUCKET_VAR))
    }

    /// The release signing key, for the step that signs (never a whole job).
    pub(super) fn signing_env(step: Step) -> Step {
        step.env_from_secret(sign::KEY_VAR)
            .env_from_secret(sign::PASSPHRASE_VAR)
    }

    pub(super) fn deps(&self) -> Workflow {
        let toolchain = cell(field::TOOLCHAIN);
        let build = self.matrix_job(
            format!("Dependencies {toolchain} {}", cell(field::VARIANT)),
            &[JobId::Toolkit, JobId::Plan],
            self.spack_cache(&format!("{toolchain}-deps")),
            Self::build_step("Build and push the dependency buildcache", "build-deps"),
            vec![],
        );
        let index = self.index_job(
            &[JobId::Toolkit, JobId::Plan, JobId::BuildDeps],
            &format!("{toolchain}-deps"),
        );
        let report =
            self.report_job(&[JobId::Toolkit, JobId::Plan, JobId::BuildDeps, JobId::Index]);
        let summary = self.summary_job(
            "Build and publish Slurm dependencies",
            &[JobId::Plan, JobId::BuildDeps, JobId::Index, JobId::Report],
        );
        let jobs = jobs([
            (JobId::Toolkit, self.toolkit_job()),
            (JobId::Plan, self.plan_job("deps", false)),
            (JobId::BuildDeps, build),
            (JobId::Index, index),
            (JobId::Report, report),
            (JobId::Summary, summary),
        ]);
        Workflow {
            name: DEPS_WORKFLOW_NAME.into(),
            triggers: Triggers {
                schedule: vec![Cron {
                    cron: "17 2 * * 1".into(),
                }],
                workflow_dispatch: Some(self.dispatch(false)),
                ..Default::default()
            },
            permissions: perms(&[]),
            // Deps and Slurm runs exclude each other: a Slurm build never
            // reads a deps mirror while it is pushed or its index rewritten.
            concurrency: Concurrency::queued(PIPELINE_GROUP),
            env: IndexMap::new(),
            jobs,
        }
    }

    pub(super) fn slurm(&self) -> Workflow {
        let (version, toolchain) = (cell(field::VERSION), cell(field::TOOLCHAIN));
        // Verify runs inside build-slurm (the package relocated in a clean
        // container of its OS), which records its failed checks in the
        // cell's state. A failed verify ends the job here: that cell's
        // package is never handed on. A rehearsal is not verified.
        let upload = Step::uses(
            "Hand the package to the release job",
            &self.m.actions.upload_artifact,
        )
        .with("name", cell(field::PACKAGE))
        .with("path", format!("{DIST}/"))
        .with("if-no-files-found", "error")
        .with("retention-days", ARTIFACT_RETENTION_DAYS);
        let build = self.matrix_job(
            format!("Slurm {version} {toolchain} {}", cell(field::VARIANT)),
            &[JobId::Toolkit, JobId::Plan],
            self.spack_cache(&format!("{toolchain}-slurm")),
            Self::build_step("Build, package, sign and verify Slurm", "build-slurm"),
            vec![upload],
        );
        let index = self.index_job(
            &[JobId::Toolkit, JobId::Plan, JobId::BuildSlurm],
            &format!("{toolchain}-{version}"),
        );
        let report = self.report_job(&[
            JobId::Toolkit,
            JobId::Plan,
            JobId::BuildSlurm,
            JobId::Index,
            JobId::AdminBinary,
            JobId::Release,
        ]);
        let summary = self.summary_job(
            "Build and publish Slurm",
            &[
                JobId::Plan,
                JobId::BuildSlurm,
                JobId::Index,
                JobId::AdminBinary,
                JobId::Release,
                JobId::Report,
            ],
        );
        let jobs = jobs([
            (JobId::Toolkit, self.toolkit_job()),
            (JobId::Plan, self.plan_job("slurm", true)),
            (JobId::BuildSlurm, build),
            (JobId::Index, index),
            (JobId::AdminBinary, self.admin_binary_job()),
            (JobId::Release, self.release_job()),
            (JobId::Report, report),
            (JobId::Summary, summary),
        ]);
        Workflow {
            name: "Build and publish Slurm".into(),
            triggers: Triggers {
                schedule: vec![Cron {
                    cron: "17 8 * * 1".into(),
                }],
                workflow_dispatch: Some(self.dispatch(true)),
                // After the dependencies: the plan rebuilds the cells whose deps changed.
                // Only after the default branch's dependencies were built.
                workflow_run: Some(WorkflowRun {
                    workflows: vec![DEPS_WORKFLOW_NAME.into()],
                    types: vec!["completed"],
                    branches: vec![DEFAULT_BRANCH.into()],
                }),
                ..Default::default()
            },
            permissions: perms(&[]),
            concurrency: Concurrency::queued(PIPELINE_GROUP),
            env: IndexMap::new(),
            jobs,
        }
    }

    /// The admins' `slurm-factory` executable, once per run: built for glibc
    /// 2.28 with cargo-zigbuild (pinned, from PyPI) and signed; the release
    /// job attests and publishes it with the packages.
    pub(super) fn admin_binary_job(&self) -> Job {
        Job::new(
            "Build the admins' binary",
            self.control_runner(),
            60,
            &[("contents", "read")],
        )
        .needs(&[JobId::Toolkit, JobId::Plan])
        // Released with the packages: only when there are some.
        .when(format!(
            "{} != '0' && inputs.rehearse != true",
            JobId::Plan.needs("outputs.count")
        ))
        // The signing key's secrets live in this environment.
        .environment(BUILD_ENVIRONMENT)
        .step(self.checkout())
        .steps(self.fetch_toolkit())
        .steps(self.rust(None))
        .step(Step::run(
            "Install cargo-zigbuild and zig",
            &format!(
                "python3 -m venv \"$RUNNER_TEMP/zigbuild\"\n\"$RUNNER_TEMP/zigbuild/bin/pip\" install --quiet {}\necho \"$RUNNER_TEMP/zigbuild/bin\" >> \"$GITHUB_PATH\"\n",
                admin_binary::BUILD_TOOLS.join(" ")
            ),
        ))
        .step(Self::signing_env(Step::run(
            "Build and sign the admins' binary",
            &format!("{TOOLKIT} admin-binary --out {DIST}\n"),
        )))
        .step(
            Step::uses(
                "Hand the binary to the release job",
                &self.m.actions.upload_artifact,
            )
            .with("name", ADMIN_BINARY_ARTIFACT)
            .with("path", format!("{DIST}/"))
            .with("if-no-files-found", "error")
            .with("retention-days", ARTIFACT_RETENTION_DAYS),
        )
    }

    /// The build report (`reports/index.html` in the store), after every other
    /// job of the run whatever their outcome, so a failed cell shows. Its
    /// step summary links the page.
    pub(super) fn report_job(&self, needs: &[JobId]) -> Job {
        Job::new(
            "Report",
            self.control_runner(),
            15,
            &[("contents", "read"), ("id-token", "write")],
        )
        .needs(needs)
        .when(format!(
            "!cancelled() && {} == 'success' && inputs.rehearse != true",
            JobId::Toolkit.needs("result")
        ))
        .environment(BUILD_ENVIRONMENT)
        .concurrency(Concurrency::queued("slurm-factory-report"))
        .steps(self.toolkit_with_aws())
        .step(
            Step::run(
                "Write the build report to the store",
                &format!("{TOOLKIT} report\n"),
            )
            .env_from_var(store::BUCKET_VAR)
            .env_from_var(store::PUBLIC_URL_VAR),
        )
    }

    /// Gathers every cell's package, attests its provenance and publishes it.
    /// The only job with `contents: write`.
    pub(super) fn release_job(&self) -> Job {
        let mut steps = self.toolkit_with_aws();
        steps.push(
            Step::uses(
                "Gather the admins' binary",
                &self.m.actions.download_artifact,
            )
            .with("name", ADMIN_BINARY_ARTIFACT)
            .with("path", "tools"),
        );
        steps.push(
            Step::uses(
                "Attest the admins' binary",
                &self.m.actions.attest_build_provenance,
            )
            .with(
                "subject-path",
                format!("tools/{}", admin_binary::file_name("*")),
            ),
        );
        // One Slurm version at a time, its packages deleted before the next:
        // the runner's disk holds one version's packages, not the run's.
        for v in &self.m.slurm {
            let v = v.version.as_str();
            let some = Some(format!("hashFiles('{DIST}/*.manifest.json') != ''"));
            let when = |step: Step| Step {
                condition: some.clone(),
                ..step
            };
            steps.push(
                Step::uses(
                    &format!("Gather Slurm {v}'s packages"),
                    &self.m.actions.download_artifact,
                )
                .with("pattern", release::stem(v, "*", "*", "*"))
                .with("path", DIST)
                .with("merge-multiple", true),
            );
            steps.push(when(
                Step::uses(
                    &format!("Attest Slurm {v}'s packages"),
                    &self.m.actions.attest_build_provenance,
                )
                .with("subject-path", format!("{DIST}/*.tar.gz*")),
            ));
            // A split package's parts are attested above; the tarball an
            // admin joins from them is attested by its digest, from its
            // checksum file (`*.tar.gz.sha256`: whole tarballs', not parts').
            steps.push(when(Step::run(
                &format!("List Slurm {v}'s whole tarballs"),
                &format!("cat {DIST}/*.tar.gz.sha256 > {TARBALL_DIGESTS}\ncat {TARBALL_DIGESTS}\n"),
            )));
            steps.push(when(
                Step::uses(
                    &format!("Attest Slurm {v}'s whole tarballs (split packages joined)"),
                    &self.m.actions.attest_build_provenance,
                )
                .with("subject-checksums", TARBALL_DIGESTS),
            ));
            steps.push(when(
                Step::run(
                    &format!("Publish Slurm {v} to S3"),
                    &format!("cp tools/* {DIST}/\n{TOOLKIT} publish --to s3 --dir {DIST}\n"),
                )
                .env_from_var(store::BUCKET_VAR)
                .env_from_var(store::PUBLIC_URL_VAR),
            ));
            steps.push(when(
                Step::run(
                    &format!("Publish Slurm {v} to GitHub Releases"),
                    &format!("{TOOLKIT} publish --to github --dir {DIST}\n"),
                )
                .env("GITHUB_TOKEN", &expr("github.token")),
            ));
            steps.push(Step {
                condition: Some("always()".into()),
                ..Step::run(
                    &format!("Free Slurm {v}'s disk"),
                    &format!("rm -rf {DIST} {TARBALL_DIGESTS}\n"),
                )
            });
        }
        Job::new(
            "Release",
            self.control_runner(),
            120,
            &[
                ("contents", "write"),
                ("id-token", "write"),
                ("attestations", "write"),
            ],
        )
        .needs(&[
            JobId::Toolkit,
            JobId::Plan,
            JobId::BuildSlurm,
            JobId::Index,
            JobId::AdminBinary,
        ])
        // A rehearsal publishes nothing (publish refuses its packages
        // anyway); every release carries the admins' binary.
        .when(format!(
            "!cancelled() && {} != 'skipped' && inputs.rehearse != true && {} == 'success'",
            JobId::BuildSlurm.needs("result"),
            JobId::AdminBinary.needs("result")
        ))
        .environment(RELEASE_ENVIRONMENT)
        .concurrency(Concurrency::queued("slurm-factory-release"))
        .steps(steps)
    }
}
