//! The steps and jobs the workflows share: checkout, the prebuilt toolkit,
//! Rust, AWS credentials, the plan, matrix, index and summary jobs, and the
//! manual-dispatch inputs.

use serde_yaml::Value;

use super::*;

impl Ctx<'_> {
    /// Jobs that are not build cells run on the matrix-wide CPU runner.
    pub(super) fn control_runner(&self) -> Value {
        labels(&self.m.runners.cpu)
    }

    pub(super) fn checkout(&self) -> Step {
        Step::uses("Check out", &self.m.actions.checkout).with("persist-credentials", false)
    }

    pub(super) fn fetch_toolkit(&self) -> Vec<Step> {
        vec![
            Step::uses(
                "Fetch the toolkit binary",
                &self.m.actions.download_artifact,
            )
            .with("name", "xtask")
            .with("path", ".xtask"),
            Step::run(
                "Make the toolkit executable",
                &format!("chmod +x {TOOLKIT}\n{TOOLKIT} --version\n"),
            ),
        ]
    }

    pub(super) fn aws(&self) -> Step {
        Step::uses(
            "AWS credentials (OIDC)",
            &self.m.actions.configure_aws_credentials,
        )
        .with("role-to-assume", expr("secrets.AWS_ROLE_ARN"))
        .with("aws-region", expr("vars.AWS_REGION"))
        .with("role-duration-seconds", 21600)
    }

    pub(super) fn rust(&self, components: Option<&str>) -> Vec<Step> {
        let mut toolchain = Step::uses("Rust toolchain", &self.m.actions.rust_toolchain)
            .with("toolchain", self.m.rust_toolchain.as_str());
        if let Some(c) = components {
            toolchain = toolchain.with("components", c);
        }
        vec![
            toolchain,
            Step::uses("Rust cache", &self.m.actions.rust_cache),
        ]
    }

    /// Builds the toolkit once per run; matrix jobs download it instead of compiling.
    pub(super) fn toolkit_job(&self) -> Job {
        let mut steps = vec![self.checkout()];
        steps.extend(self.rust(None));
        steps.push(Step::run(
            "Build the toolkit",
            "cargo build --release --locked --package xtask\n",
        ));
        steps.push(
            Step::uses(
                "Hand the toolkit to later jobs",
                &self.m.actions.upload_artifact,
            )
            .with("name", "xtask")
            .with("path", "target/release/xtask")
            .with("if-no-files-found", "error")
            .with("retention-days", ARTIFACT_RETENTION_DAYS),
        );
        Job {
            name: "Build the toolkit".into(),
            needs: vec![],
            // A run started by a failed dependency run does nothing.
            condition: Some(
                "github.event_name != 'workflow_run' || github.event.workflow_run.conclusion == 'success'".into(),
            ),
            runs_on: self.control_runner(),
            environment: None,
            permissions: perms(&[("contents", "read")]),
            timeout_minutes: 30,
            concurrency: None,
            strategy: None,
            outputs: IndexMap::new(),
            steps,
        }
    }

    pub(super) fn plan_job(&self, stage: &str, with_versions: bool) -> Job {
        let mut script = format!("args=(--stage {stage} --github-output)\n");
        script.push_str(
            "if [ -n \"$TOOLCHAINS\" ]; then args+=(--toolchain \"${TOOLCHAINS// /}\"); fi\n",
        );
        if with_versions {
            script.push_str(
                "if [ -n \"$VERSIONS\" ]; then args+=(--slurm \"${VERSIONS// /}\"); fi\n",
            );
        }
        script
            .push_str("if [ -n \"$VARIANTS\" ]; then args+=(--variant \"${VARIANTS// /}\"); fi\n");
        script.push_str("if [ \"$FORCE\" = true ]; then args+=(--force); fi\n");
        script.push_str(&format!("{TOOLKIT} plan \"${{args[@]}}\"\n"));
        let mut plan = Step::run("Plan the cells", &script)
            .id("plan")
            .env("TOOLCHAINS", &expr("inputs.toolchains"))
            .env("VARIANTS", &expr("inputs.variants"))
            .env("FORCE", &expr("inputs.force"));
        if with_versions {
            plan = plan.env("VERSIONS", &expr("inputs.versions"));
        }
        // The plan reads what the builds recorded in the bucket.
        let plan = plan.env("SLURM_FACTORY_BUCKET", &expr("vars.SLURM_FACTORY_BUCKET"));
        let mut steps = vec![self.checkout()];
        steps.extend(self.fetch_toolkit());
        steps.push(self.aws());
        steps.push(plan);
        Job {
            name: "Plan".into(),
            needs: vec!["toolkit"],
            condition: None,
            runs_on: self.control_runner(),
            environment: Some(BUILD_ENVIRONMENT),
            permissions: perms(&[("contents", "read"), ("id-token", "write")]),
            timeout_minutes: 10,
            concurrency: None,
            strategy: None,
            outputs: [
                ("matrix", expr("steps.plan.outputs.matrix")),
                ("count", expr("steps.plan.outputs.count")),
                ("mirrors", expr("steps.plan.outputs.mirrors")),
            ]
            .into_iter()
            .collect(),
            steps,
        }
    }

    /// The Spack source and misc caches persist between runs of a cell.
    pub(super) fn spack_cache(&self, key: &str) -> Step {
        Step::uses("Spack download cache", &self.m.actions.cache)
            .with("path", "target/slurm-factory/cache")
            .with("key", format!("spack-{key}-{}", expr("github.run_id")))
            .with("restore-keys", format!("spack-{key}-"))
    }

    pub(super) fn matrix_job(
        &self,
        name: String,
        needs: Vec<&'static str>,
        build: Step,
        after: Vec<Step>,
    ) -> Job {
        let mut steps = vec![self.checkout()];
        steps.extend(self.fetch_toolkit());
        steps.push(self.aws());
        steps.push(build);
        steps.extend(after);
        Job {
            name,
            needs,
            condition: Some("needs.plan.outputs.count != '0'".into()),
            runs_on: Value::from(expr("matrix.runs-on")),
            environment: Some(BUILD_ENVIRONMENT),
            permissions: perms(&[("contents", "read"), ("id-token", "write")]),
            timeout_minutes: 360,
            concurrency: None,
            strategy: Some(Strategy {
                fail_fast: false,
                matrix: expr("fromJSON(needs.plan.outputs.matrix)"),
            }),
            outputs: IndexMap::new(),
            steps,
        }
    }

    /// One writer per mirror: build jobs push without touching the index, this
    /// job rebuilds it once per mirror, serialized by a concurrency group.
    pub(super) fn index_job(
        &self,
        needs: Vec<&'static str>,
        mirror: &str,
        args: &str,
        with_version: bool,
    ) -> Job {
        let mut index = Step::run(
            "Rebuild the buildcache index",
            &format!("args=({args})\n{REHEARSE_ARG}{TOOLKIT} index \"${{args[@]}}\"\n"),
        )
        .env("TOOLCHAIN", &expr("matrix.toolchain"))
        .env("REHEARSE", &expr("inputs.rehearse"))
        .env("SLURM_FACTORY_BUCKET", &expr("vars.SLURM_FACTORY_BUCKET"));
        if with_version {
            index = index.env("VERSION", &expr("matrix.version"));
        }
        let mut steps = vec![self.checkout()];
        steps.extend(self.fetch_toolkit());
        steps.push(self.aws());
        steps.push(index);
        Job {
            name: format!("Index {mirror}"),
            needs,
            condition: Some(
                "!cancelled() && needs.plan.result == 'success' && needs.plan.outputs.count != '0'"
                    .into(),
            ),
            runs_on: self.control_runner(),
            environment: Some(BUILD_ENVIRONMENT),
            permissions: perms(&[("contents", "read"), ("id-token", "write")]),
            timeout_minutes: 60,
            concurrency: Some(Concurrency::queued(format!("slurm-factory-index-{mirror}"))),
            strategy: Some(Strategy {
                fail_fast: false,
                matrix: expr("fromJSON(needs.plan.outputs.mirrors)"),
            }),
            outputs: IndexMap::new(),
            steps,
        }
    }

    /// Always runs; its table is the run's summary and it fails when any job failed.
    pub(super) fn summary_job(&self, title: &str, jobs: &[&'static str]) -> Job {
        let mut step =
            Step::run("Summarise the run", "").env("COUNT", &expr("needs.plan.outputs.count"));
        let mut script = String::from("{\n");
        script.push_str(&format!("  echo \"### {title}\"\n"));
        script.push_str("  echo \"Cells planned: ${COUNT:-0}\"\n  echo\n");
        script.push_str("  echo \"| job | result |\"\n  echo \"|---|---|\"\n");
        let mut failed = Vec::new();
        for job in jobs {
            let var = format!("RESULT_{}", job.replace('-', "_").to_uppercase());
            step = step.env(&var, &expr(&format!("needs.{job}.result")));
            script.push_str(&format!("  echo \"| {job} | ${var} |\"\n"));
            failed.push(format!("[ \"${var}\" != failure ]"));
        }
        script.push_str("} >> \"$GITHUB_STEP_SUMMARY\"\n");
        script.push_str(&failed.join(" && "));
        script.push('\n');
        step.run = Some(script);
        Job {
            name: "Summary".into(),
            needs: jobs.to_vec(),
            condition: Some("always()".into()),
            runs_on: self.control_runner(),
            environment: None,
            permissions: perms(&[]),
            timeout_minutes: 5,
            concurrency: None,
            strategy: None,
            outputs: IndexMap::new(),
            steps: vec![step],
        }
    }

    pub(super) fn dispatch(&self, with_versions: bool) -> Dispatch {
        let list = |items: Vec<&str>| items.join(", ");
        let mut inputs = IndexMap::new();
        inputs.insert(
            "toolchains".to_string(),
            Input {
                description: format!(
                    "Comma-separated toolchains, empty for all ({})",
                    list(self.m.toolchains.iter().map(|t| t.name.as_str()).collect())
                ),
                required: false,
                kind: "string",
                default: Value::from(""),
            },
        );
        if with_versions {
            inputs.insert(
                "versions".to_string(),
                Input {
                    description: format!(
                        "Comma-separated Slurm versions, empty for all ({})",
                        list(self.m.slurm.iter().map(|s| s.version.as_str()).collect())
                    ),
                    required: false,
                    kind: "string",
                    default: Value::from(""),
                },
            );
        }
        inputs.insert(
            "variants".to_string(),
            Input {
                description: format!(
                    "Comma-separated variants, empty for all ({})",
                    list(self.m.variants.iter().map(|v| v.as_str()).collect())
                ),
                required: false,
                kind: "string",
                default: Value::from(""),
            },
        );
        inputs.insert(
            "force".to_string(),
            Input {
                description: "Build the selected cells even if they are already published".into(),
                required: false,
                kind: "boolean",
                default: Value::from(false),
            },
        );
        inputs.insert(
            "rehearse".to_string(),
            Input {
                description: "Rehearse with spack install --fake (real concretization, signed push, index, view) into the store's rehearsal/ mirrors; nothing is recorded or published".into(),
                required: false,
                kind: "boolean",
                default: Value::from(false),
            },
        );
        Dispatch { inputs }
    }
}
