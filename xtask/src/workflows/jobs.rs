//! The steps and jobs the workflows share: checkout, the prebuilt toolkit,
//! Rust, AWS credentials, the plan, matrix, index and summary jobs, and the
//! manual-dispatch inputs.

use serde_yaml::Value;

use super::*;
use crate::matrix::entry::field;
use crate::store;

/// What the plan job hands on: the build matrix, its size, the index matrix.
const PLAN_OUTPUTS: [&str; 3] = ["matrix", "count", "mirrors"];

impl Ctx<'_> {
    /// Jobs that are not build cells run on the matrix-wide CPU runner.
    pub(super) fn control_runner(&self) -> Value {
        labels(&self.m.runners.cpu)
    }

    pub(super) fn checkout(&self) -> Step {
        let step =
            Step::uses("Check out", &self.m.actions.checkout).with("persist-credentials", false);
        match self.checkout_ref {
            Some(r) => step.with("ref", r),
            None => step,
        }
    }

    /// The first steps of a job that runs the toolkit against the bucket:
    /// check out, fetch the toolkit binary, take AWS credentials.
    pub(super) fn toolkit_with_aws(&self) -> Vec<Step> {
        let mut steps = vec![self.checkout()];
        steps.extend(self.fetch_toolkit());
        steps.push(self.aws());
        steps
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
        Job::new(
            "Build the toolkit",
            self.control_runner(),
            30,
            &[("contents", "read")],
        )
        // A run started by a failed dependency run does nothing.
        .when("github.event_name != 'workflow_run' || github.event.workflow_run.conclusion == 'success'")
        .step(self.checkout())
        .steps(self.rust(None))
        .step(Step::run(
            "Build the toolkit",
            "cargo build --release --locked --package xtask\n",
        ))
        .step(
            Step::uses(
                "Hand the toolkit to later jobs",
                &self.m.actions.upload_artifact,
            )
            .with("name", "xtask")
            .with("path", "target/release/xtask")
            .with("if-no-files-found", "error")
            .with("retention-days", ARTIFACT_RETENTION_DAYS),
        )
    }

    /// The plan: which cells to build, as the build and index jobs'
    /// matrices, their toolkit arguments included. The dispatch inputs
    /// become `plan`'s flags here, and only here.
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
        script.push_str(REHEARSE_ARG);
        script.push_str(&format!("{TOOLKIT} plan \"${{args[@]}}\"\n"));
        let mut plan = Step::run("Plan the cells", &script)
            .id("plan")
            .env("TOOLCHAINS", &expr("inputs.toolchains"))
            .env("VARIANTS", &expr("inputs.variants"))
            .env("FORCE", &expr("inputs.force"))
            .env("REHEARSE", &expr("inputs.rehearse"));
        if with_versions {
            plan = plan.env("VERSIONS", &expr("inputs.versions"));
        }
        // The plan reads what the builds recorded in the bucket.
        let plan = plan.env_from_var(store::BUCKET_VAR);
        let mut job = Job::new(
            "Plan",
            self.control_runner(),
            10,
            &[("contents", "read"), ("id-token", "write")],
        )
        .needs(&[JobId::Toolkit])
        .environment(BUILD_ENVIRONMENT)
        .steps(self.toolkit_with_aws())
        .step(plan);
        for output in PLAN_OUTPUTS {
            job = job.output(output, expr(&format!("steps.plan.outputs.{output}")));
        }
        job
    }

    /// The Spack source and misc caches persist between runs of a cell.
    pub(super) fn spack_cache(&self, key: &str) -> Step {
        Step::uses("Spack download cache", &self.m.actions.cache)
            .with("path", format!("{}/cache", crate::project::STATE_DIR))
            .with("key", format!("spack-{key}-{}", expr("github.run_id")))
            .with("restore-keys", format!("spack-{key}-"))
    }

    /// A build job: one per cell the plan selected. The Spack cache is
    /// restored before the build step, the steps in `after` follow it.
    pub(super) fn matrix_job(
        &self,
        name: String,
        needs: &[JobId],
        cache: Step,
        build: Step,
        after: Vec<Step>,
    ) -> Job {
        Job::new(
            name,
            Value::from(cell(field::RUNS_ON)),
            360,
            &[("contents", "read"), ("id-token", "write")],
        )
        .needs(needs)
        .when(format!("{} != '0'", JobId::Plan.needs("outputs.count")))
        .environment(BUILD_ENVIRONMENT)
        .matrix(expr(&format!(
            "fromJSON({})",
            JobId::Plan.needs("outputs.matrix")
        )))
        .steps(self.toolkit_with_aws())
        .step(cache)
        .step(build)
        .steps(after)
    }

    /// A step that runs the toolkit's `command` with the arguments the plan
    /// computed for the job's matrix entry (`matrix.args`).
    pub(super) fn toolkit_step(name: &str, command: &str) -> Step {
        Step::run(
            name,
            &format!("read -ra args <<< \"$ARGS\"\n{TOOLKIT} {command} \"${{args[@]}}\"\n"),
        )
        .env("ARGS", &expr(&format!("join(matrix.{}, ' ')", field::ARGS)))
    }

    /// One writer per mirror: build jobs push without touching the index, this
    /// job rebuilds it once per mirror, serialized by a concurrency group.
    pub(super) fn index_job(&self, needs: &[JobId], mirror: &str) -> Job {
        let index = Self::toolkit_step("Rebuild the buildcache index", "index")
            .env_from_var(store::BUCKET_VAR);
        Job::new(
            format!("Index {mirror}"),
            self.control_runner(),
            60,
            &[("contents", "read"), ("id-token", "write")],
        )
        .needs(needs)
        .when(format!(
            "!cancelled() && {} == 'success' && {} != '0'",
            JobId::Plan.needs("result"),
            JobId::Plan.needs("outputs.count")
        ))
        .environment(BUILD_ENVIRONMENT)
        .concurrency(Concurrency::queued(format!("slurm-factory-index-{mirror}")))
        .matrix(expr(&format!(
            "fromJSON({})",
            JobId::Plan.needs("outputs.mirrors")
        )))
        .steps(self.toolkit_with_aws())
        .step(index)
    }

    /// Always runs; its table is the run's summary and it fails when any job failed.
    pub(super) fn summary_job(&self, title: &str, jobs: &[JobId]) -> Job {
        let mut step = Step::run("Summarise the run", "")
            .env("COUNT", &expr(&JobId::Plan.needs("outputs.count")));
        let mut script = String::from("{\n");
        script.push_str(&format!("  echo \"### {title}\"\n"));
        script.push_str("  echo \"Cells planned: ${COUNT:-0}\"\n  echo\n");
        script.push_str("  echo \"| job | result |\"\n  echo \"|---|---|\"\n");
        let mut failed = Vec::new();
        for job in jobs {
            let name = job.as_str();
            let var = format!("RESULT_{}", name.replace('-', "_").to_uppercase());
            step = step.env(&var, &expr(&job.needs("result")));
            script.push_str(&format!("  echo \"| {name} | ${var} |\"\n"));
            failed.push(format!("[ \"${var}\" != failure ]"));
        }
        script.push_str("} >> \"$GITHUB_STEP_SUMMARY\"\n");
        script.push_str(&failed.join(" && "));
        script.push('\n');
        step.run = Some(script);
        Job::new("Summary", self.control_runner(), 5, &[])
            .needs(jobs)
            .when("always()")
            .step(step)
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
