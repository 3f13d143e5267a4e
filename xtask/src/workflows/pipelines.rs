//! The three workflows, assembled from the shared jobs: CI, the dependency
//! build, and the Slurm build with its admin-binary, report and release jobs.

use serde_yaml::Value;

use super::*;

impl Ctx<'_> {
    pub(super) fn ci(&self) -> Workflow {
        let main = || {
            Some(Branches {
                branches: vec![DEFAULT_BRANCH.into()],
            })
        };
        let mut steps = vec![self.checkout()];
        steps.extend(self.rust(Some("rustfmt, clippy")));
        steps.extend([
            Step::run(
                "Install the test tools (Podman, Lmod, GnuPG, actionlint)",
                "sudo bash .ci/install\n",
            ),
            Step::run("Formatting", "cargo fmt --all --check\n"),
            Step::run(
                "Lints",
                "cargo clippy --locked --all-targets -- -D warnings\n",
            ),
            Step::run("Tests", "cargo test --locked --workspace\n"),
            Step::run(
                "Tests in a fresh clone with nothing beside it",
                "bash .ci/fresh-clone\n",
            ),
            Step::run(
                "Generated files are up to date",
                "cargo xtask workflows --check\n",
            ),
            Step::run("actionlint", "actionlint\n"),
        ]);
        let mut jobs = IndexMap::new();
        jobs.insert(
            "checks".to_string(),
            Job {
                name: "fmt, clippy, tests, generated files, actionlint".into(),
                needs: vec![],
                condition: None,
                runs_on: self.control_runner(),
                environment: None,
                permissions: perms(&[("contents", "read")]),
                timeout_minutes: 90,
                concurrency: None,
                strategy: None,
                outputs: IndexMap::new(),
                steps,
            },
        );
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
            jobs,
        }
    }

    pub(super) fn build_env(step: Step) -> Step {
        Self::signing_env(
            step.env("TOOLCHAIN", &expr("matrix.toolchain"))
                .env("REHEARSE", &expr("inputs.rehearse"))
                .env("GPU", &expr("matrix.gpu"))
                .env("SLURM_FACTORY_BUCKET", &expr("vars.SLURM_FACTORY_BUCKET")),
        )
    }

    /// The release signing key, for the step that signs (never a whole job).
    pub(super) fn signing_env(step: Step) -> Step {
        step.env(
            "SLURM_FACTORY_GPG_PRIVATE_KEY",
            &expr("secrets.SLURM_FACTORY_GPG_PRIVATE_KEY"),
        )
        .env(
            "SLURM_FACTORY_GPG_PASSPHRASE",
            &expr("secrets.SLURM_FACTORY_GPG_PASSPHRASE"),
        )
    }

    pub(super) fn deps(&self) -> Workflow {
        let build = Self::build_env(Step::run(
            "Build and push the dependency buildcache",
            &format!(
                "args=(--toolchain \"$TOOLCHAIN\")\nif [ \"$GPU\" = true ]; then args+=(--gpu); fi\n{REHEARSE_ARG}{TOOLKIT} build-deps \"${{args[@]}}\"\n"
            ),
        ));
        let mut jobs = IndexMap::new();
        jobs.insert("toolkit".to_string(), self.toolkit_job());
        jobs.insert("plan".to_string(), self.plan_job("deps", false));
        jobs.insert(
            "build-deps".to_string(),
            self.matrix_job(
                format!(
                    "Dependencies {} {}",
                    expr("matrix.toolchain"),
                    expr("matrix.variant")
                ),
                vec!["toolkit", "plan"],
                build,
                vec![],
            ),
        );
        jobs["build-deps"].steps.insert(
            4,
            self.spack_cache(&format!("{}-deps", expr("matrix.toolchain"))),
        );
        jobs.insert(
            "index".to_string(),
            self.index_job(
                vec!["toolkit", "plan", "build-deps"],
                &format!("{}-deps", expr("matrix.toolchain")),
                "--toolchain \"$TOOLCHAIN\"",
                false,
            ),
        );
        jobs.insert(
            "report".to_string(),
            self.report_job(vec!["toolkit", "plan", "build-deps", "index"]),
        );
        jobs.insert(
            "summary".to_string(),
            self.summary_job(
                "Build and publish Slurm dependencies",
                &["plan", "build-deps", "index", "report"],
            ),
        );
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
        let cell = format!(
            "{}-{}-{}",
            expr("matrix.version"),
            expr("matrix.toolchain"),
            expr("matrix.variant")
        );
        // Verify runs inside build-slurm (the package relocated in a clean
        // container of its OS), which records its failed checks in the
        // cell's state. A failed verify ends the job here: that cell's
        // package is never handed on. A rehearsal is not verified.
        let build = Self::build_env(Step::run(
            "Build, package, sign and verify Slurm",
            &format!(
                "args=(--slurm \"$VERSION\" --toolchain \"$TOOLCHAIN\" --out dist)\nif [ \"$GPU\" = true ]; then args+=(--gpu --host-gpus); fi\n{REHEARSE_ARG}{TOOLKIT} build-slurm \"${{args[@]}}\"\n"
            ),
        ))
        .env("VERSION", &expr("matrix.version"));
        let upload = Step::uses(
            "Hand the package to the release job",
            &self.m.actions.upload_artifact,
        )
        .with("name", package_artifact(&cell))
        .with("path", "dist/")
        .with("if-no-files-found", "error")
        .with("retention-days", ARTIFACT_RETENTION_DAYS);
        let mut jobs = IndexMap::new();
        jobs.insert("toolkit".to_string(), self.toolkit_job());
        jobs.insert("plan".to_string(), self.plan_job("slurm", true));
        jobs.insert(
            "build-slurm".to_string(),
            self.matrix_job(
                format!("Slurm {}", cell.replace('-', " ")),
                vec!["toolkit", "plan"],
                build,
                vec![upload],
            ),
        );
        jobs["build-slurm"].steps.insert(
            4,
            self.spack_cache(&format!("{}-slurm", expr("matrix.toolchain"))),
        );
        let index = self.index_job(
            vec!["toolkit", "plan", "build-slurm"],
            &format!("{}-{}", expr("matrix.toolchain"), expr("matrix.version")),
            "--toolchain \"$TOOLCHAIN\" --slurm \"$VERSION\"",
            true,
        );
        jobs.insert("index".to_string(), index);
        jobs.insert("admin-binary".to_string(), self.admin_binary_job());
        jobs.insert("release".to_string(), self.release_job());
        jobs.insert(
            "report".to_string(),
            self.report_job(vec![
                "toolkit",
                "plan",
                "build-slurm",
                "index",
                "admin-binary",
                "release",
            ]),
        );
        jobs.insert(
            "summary".to_string(),
            self.summary_job(
                "Build and publish Slurm",
                &[
                    "plan",
                    "build-slurm",
                    "index",
                    "admin-binary",
                    "release",
                    "report",
                ],
            ),
        );
        // Started by the dependencies' run: build the commit that run built,
        // not whatever the default branch is by now.
        for job in jobs.values_mut() {
            for step in job.steps.iter_mut().filter(|s| s.name == "Check out") {
                step.with.insert("ref", Value::from(BUILT_COMMIT));
            }
        }
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
        let mut steps = vec![self.checkout()];
        steps.extend(self.fetch_toolkit());
        steps.extend(self.rust(None));
        steps.push(Step::run(
            "Install cargo-zigbuild and zig",
            &format!(
                "python3 -m venv \"$RUNNER_TEMP/zigbuild\"\n\"$RUNNER_TEMP/zigbuild/bin/pip\" install --quiet {}\necho \"$RUNNER_TEMP/zigbuild/bin\" >> \"$GITHUB_PATH\"\n",
                admin_binary::BUILD_TOOLS.join(" ")
            ),
        ));
        steps.push(Self::signing_env(Step::run(
            "Build and sign the admins' binary",
            &format!("{TOOLKIT} admin-binary --out dist\n"),
        )));
        steps.push(
            Step::uses(
                "Hand the binary to the release job",
                &self.m.actions.upload_artifact,
            )
            .with("name", ADMIN_BINARY_ARTIFACT)
            .with("path", "dist/")
            .with("if-no-files-found", "error")
            .with("retention-days", ARTIFACT_RETENTION_DAYS),
        );
        Job {
            name: "Build the admins' binary".into(),
            needs: vec!["toolkit", "plan"],
            // Released with the packages: only when there are some.
            condition: Some("needs.plan.outputs.count != '0' && inputs.rehearse != true".into()),
            runs_on: self.control_runner(),
            // The signing key's secrets live in this environment.
            environment: Some(BUILD_ENVIRONMENT),
            permissions: perms(&[("contents", "read")]),
            timeout_minutes: 60,
            concurrency: None,
            strategy: None,
            outputs: IndexMap::new(),
            steps,
        }
    }

    /// The build report (`reports/index.html` in the store), after every other
    /// job of the run whatever their outcome, so a failed cell shows. Its
    /// step summary links the page.
    pub(super) fn report_job(&self, needs: Vec<&'static str>) -> Job {
        let mut steps = vec![self.checkout()];
        steps.extend(self.fetch_toolkit());
        steps.push(self.aws());
        steps.push(
            Step::run(
                "Write the build report to the store",
                &format!("{TOOLKIT} report\n"),
            )
            .env("SLURM_FACTORY_BUCKET", &expr("vars.SLURM_FACTORY_BUCKET"))
            .env(
                "SLURM_FACTORY_PUBLIC_URL",
                &expr("vars.SLURM_FACTORY_PUBLIC_URL"),
            ),
        );
        Job {
            name: "Report".into(),
            needs,
            condition: Some(
                "!cancelled() && needs.toolkit.result == 'success' && inputs.rehearse != true"
                    .into(),
            ),
            runs_on: self.control_runner(),
            environment: Some(BUILD_ENVIRONMENT),
            permissions: perms(&[("contents", "read"), ("id-token", "write")]),
            timeout_minutes: 15,
            concurrency: Some(Concurrency::queued("slurm-factory-report")),
            strategy: None,
            outputs: IndexMap::new(),
            steps,
        }
    }

    /// Gathers every cell's package, attests its provenance and publishes it.
    /// The only job with `contents: write`.
    pub(super) fn release_job(&self) -> Job {
        let mut steps = vec![self.checkout()];
        steps.extend(self.fetch_toolkit());
        steps.push(self.aws());
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
                .with("pattern", package_artifact(&format!("{v}-*")))
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
                .env("SLURM_FACTORY_BUCKET", &expr("vars.SLURM_FACTORY_BUCKET"))
                .env(
                    "SLURM_FACTORY_PUBLIC_URL",
                    &expr("vars.SLURM_FACTORY_PUBLIC_URL"),
                ),
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
        Job {
            name: "Release".into(),
            needs: vec!["toolkit", "plan", "build-slurm", "index", "admin-binary"],
            // A rehearsal publishes nothing (publish refuses its packages
            // anyway); every release carries the admins' binary.
            condition: Some(
                "!cancelled() && needs.build-slurm.result != 'skipped' && inputs.rehearse != true \
                 && needs.admin-binary.result == 'success'"
                    .into(),
            ),
            runs_on: self.control_runner(),
            environment: Some(RELEASE_ENVIRONMENT),
            permissions: perms(&[
                ("contents", "write"),
                ("id-token", "write"),
                ("attestations", "write"),
            ]),
            timeout_minutes: 120,
            concurrency: Some(Concurrency::queued("slurm-factory-release")),
            strategy: None,
            outputs: IndexMap::new(),
            steps,
        }
    }
}
