//! The GitHub Actions workflows, built as typed values from the matrix and
//! serialized with serde_yaml: CI, the dependency build and the Slurm build.

use anyhow::Result;
use indexmap::IndexMap;
use serde::Serialize;
use serde_yaml::Value;

use crate::codegen::{Generated, header};
use crate::matrix::{ActionPin, Matrix};
use crate::schema::admin_binary;

// ---------------------------------------------------------------------------
// The model: the subset of GitHub's workflow syntax these workflows use.

#[derive(Debug, Serialize)]
struct Workflow {
    name: String,
    #[serde(rename = "on")]
    triggers: Triggers,
    permissions: Permissions,
    concurrency: Concurrency,
    #[serde(skip_serializing_if = "IndexMap::is_empty")]
    env: IndexMap<String, String>,
    jobs: IndexMap<String, Job>,
}

#[derive(Debug, Default, Serialize)]
struct Triggers {
    #[serde(skip_serializing_if = "Option::is_none")]
    pull_request: Option<Branches>,
    #[serde(skip_serializing_if = "Option::is_none")]
    push: Option<Branches>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    schedule: Vec<Cron>,
    #[serde(skip_serializing_if = "Option::is_none")]
    workflow_dispatch: Option<Dispatch>,
    #[serde(skip_serializing_if = "Option::is_none")]
    workflow_run: Option<WorkflowRun>,
}

#[derive(Debug, Serialize)]
struct WorkflowRun {
    workflows: Vec<String>,
    types: Vec<&'static str>,
    branches: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Branches {
    branches: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Cron {
    cron: String,
}

#[derive(Debug, Serialize)]
struct Dispatch {
    inputs: IndexMap<String, Input>,
}

#[derive(Debug, Serialize)]
struct Input {
    description: String,
    required: bool,
    #[serde(rename = "type")]
    kind: &'static str,
    default: Value,
}

/// `permissions:`; empty serializes as `{}` (no access at all).
type Permissions = IndexMap<&'static str, &'static str>;

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
struct Concurrency {
    group: String,
    cancel_in_progress: bool,
    /// `max`: up to 100 runs wait in the group, in order, instead of each
    /// newcomer cancelling the one pending run (GitHub's default).
    #[serde(skip_serializing_if = "Option::is_none")]
    queue: Option<&'static str>,
}

impl Concurrency {
    /// One at a time, and nothing that waits is ever dropped.
    fn queued(group: impl Into<String>) -> Concurrency {
        Concurrency {
            group: group.into(),
            cancel_in_progress: false,
            queue: Some("max"),
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
struct Job {
    name: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    needs: Vec<&'static str>,
    #[serde(rename = "if", skip_serializing_if = "Option::is_none")]
    condition: Option<String>,
    runs_on: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    environment: Option<&'static str>,
    permissions: Permissions,
    timeout_minutes: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    concurrency: Option<Concurrency>,
    #[serde(skip_serializing_if = "Option::is_none")]
    strategy: Option<Strategy>,
    #[serde(skip_serializing_if = "IndexMap::is_empty")]
    outputs: IndexMap<&'static str, String>,
    steps: Vec<Step>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
struct Strategy {
    fail_fast: bool,
    matrix: String,
}

#[derive(Debug, Default, Serialize)]
struct Step {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'static str>,
    #[serde(rename = "if", skip_serializing_if = "Option::is_none")]
    condition: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uses: Option<String>,
    #[serde(skip_serializing_if = "IndexMap::is_empty")]
    with: IndexMap<&'static str, Value>,
    #[serde(skip_serializing_if = "IndexMap::is_empty")]
    env: IndexMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    run: Option<String>,
}

impl Step {
    fn run(name: &str, script: &str) -> Step {
        Step {
            name: name.into(),
            run: Some(script.into()),
            ..Default::default()
        }
    }
    fn uses(name: &str, pin: &ActionPin) -> Step {
        Step {
            name: name.into(),
            uses: Some(pin.reference()),
            ..Default::default()
        }
    }
    fn with(mut self, key: &'static str, value: impl Into<Value>) -> Step {
        self.with.insert(key, value.into());
        self
    }
    fn env(mut self, key: &str, value: &str) -> Step {
        self.env.insert(key.into(), value.into());
        self
    }
    fn id(mut self, id: &'static str) -> Step {
        self.id = Some(id);
        self
    }
}

fn perms(list: &[(&'static str, &'static str)]) -> Permissions {
    list.iter().copied().collect()
}

fn expr(s: &str) -> String {
    format!("${{{{ {s} }}}}")
}

fn labels(list: &[String]) -> Value {
    match list {
        [one] => Value::from(one.as_str()),
        many => Value::Sequence(many.iter().map(|l| Value::from(l.as_str())).collect()),
    }
}

// ---------------------------------------------------------------------------
// Rendering.

pub const CI: &str = ".github/workflows/ci.yml";
pub const DEPS: &str = ".github/workflows/build-and-publish-slurm-dependencies.yml";
pub const SLURM: &str = ".github/workflows/build-and-publish-slurm.yml";

const DEPS_WORKFLOW_NAME: &str = "Build and publish Slurm dependencies";

/// Where the toolkit binary lands in jobs that download it.
const TOOLKIT: &str = ".xtask/xtask";
/// Adds `--rehearse` to a step's `args` when the dispatch asked for a rehearsal.
/// How long a run's artifacts (the toolkit, the packages, the admins'
/// binary) live. The longest realistic run decides: GitHub lets anyone
/// re-run a run's failed jobs for up to 30 days after it started, and a run
/// may wait days for approvals and GPU runners before its release job reads
/// them. Shorter, and such a run fails with "artifact not found".
const ARTIFACT_RETENTION_DAYS: u32 = 30;
const RETENTION_COMMENT: &str =
    "# a run's jobs can be re-run for 30 days: its artifacts live as long";
/// The workflow-level group of both build workflows: one run at a time,
/// deps or Slurm, the others waiting in order (none dropped).
const PIPELINE_GROUP: &str = "slurm-factory-pipeline";
/// The GitHub Environments the jobs name. Build jobs (plan, builds, index,
/// the admins' binary, the report) use one without required reviewers,
/// limited to the default branch; only the release job uses the one with
/// reviewers, so a run asks for one approval. Each holds its own secrets
/// (AWS_ROLE_ARN, the signing key) and its own OIDC `sub` claim.
const BUILD_ENVIRONMENT: &str = "build";
const RELEASE_ENVIRONMENT: &str = "release";
/// The default branch: the only one whose runs build and release.
const DEFAULT_BRANCH: &str = "main";

/// The artifact that carries the admins' binary to the release job; it
/// matches the release job's `slurm-*` pattern.
const ADMIN_BINARY_ARTIFACT: &str = "slurm-factory-admin-binary";
/// The commit a Slurm run builds: the one its dependencies' run built when
/// that run started it, else the run's own.
const BUILT_COMMIT: &str = "${{ github.event.workflow_run.head_sha || github.sha }}";
/// Where the release job gathers one Slurm version's packages.
const DIST: &str = "dist";

/// The artifact of one cell's package, `cell` being its
/// `<version>-<toolchain>-<variant>` (or a pattern of those).
fn package_artifact(cell: &str) -> String {
    format!("slurm-{cell}")
}

/// The release job's list of whole-tarball digests (outside `dist/`).
const TARBALL_DIGESTS: &str = "tarball-digests.sha256";
const REHEARSE_ARG: &str = "if [ \"$REHEARSE\" = true ]; then args+=(--rehearse); fi\n";

pub fn render_all(matrix: &Matrix) -> Result<Vec<Generated>> {
    let ctx = Ctx { m: matrix };
    Ok(vec![
        render(
            matrix,
            CI,
            "Continuous integration: formatting, lints, tests, generated files, actionlint.",
            &ctx.ci(),
        )?,
        render(
            matrix,
            DEPS,
            "Stage 1: build each toolchain's Slurm dependencies with Spack and push them to its signed buildcache.",
            &ctx.deps(),
        )?,
        render(
            matrix,
            SLURM,
            "Stage 2: build Slurm for every version x toolchain x variant, package, sign and release it.",
            &ctx.slurm(),
        )?,
    ])
}

fn render(matrix: &Matrix, path: &str, what: &str, workflow: &Workflow) -> Result<Generated> {
    let yaml = serde_yaml::to_string(workflow)?;
    Ok(Generated {
        path: path.into(),
        contents: header(what) + &annotate_pins(matrix, &yaml),
    })
}

/// YAML comments cannot be serialized, so the tag each pinned SHA stands for is
/// appended to its `uses:` line afterwards, where reviewers and Dependabot look.
fn annotate_pins(matrix: &Matrix, yaml: &str) -> String {
    let mut out = String::with_capacity(yaml.len() + 512);
    for line in yaml.lines() {
        out.push_str(line);
        if let Some(pin) = matrix
            .actions
            .all()
            .into_iter()
            .map(|(_, p)| p)
            .find(|p| line.ends_with(&format!("uses: {}", p.reference())))
        {
            out.push_str(&format!(" # {}", pin.tag));
        }
        if line.trim_start() == format!("retention-days: {ARTIFACT_RETENTION_DAYS}") {
            out.push(' ');
            out.push_str(RETENTION_COMMENT);
        }
        out.push('\n');
    }
    out
}

struct Ctx<'m> {
    m: &'m Matrix,
}

impl Ctx<'_> {
    /// Jobs that are not build cells run on the matrix-wide CPU runner.
    fn control_runner(&self) -> Value {
        labels(&self.m.runners.cpu)
    }

    fn checkout(&self) -> Step {
        Step::uses("Check out", &self.m.actions.checkout).with("persist-credentials", false)
    }

    fn fetch_toolkit(&self) -> Vec<Step> {
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

    fn aws(&self) -> Step {
        Step::uses(
            "AWS credentials (OIDC)",
            &self.m.actions.configure_aws_credentials,
        )
        .with("role-to-assume", expr("secrets.AWS_ROLE_ARN"))
        .with("aws-region", expr("vars.AWS_REGION"))
        .with("role-duration-seconds", 21600)
    }

    fn rust(&self, components: Option<&str>) -> Vec<Step> {
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
    fn toolkit_job(&self) -> Job {
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

    fn plan_job(&self, stage: &str, with_versions: bool) -> Job {
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
    fn spack_cache(&self, key: &str) -> Step {
        Step::uses("Spack download cache", &self.m.actions.cache)
            .with("path", "target/slurm-factory/cache")
            .with("key", format!("spack-{key}-{}", expr("github.run_id")))
            .with("restore-keys", format!("spack-{key}-"))
    }

    fn matrix_job(
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
    fn index_job(
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
    fn summary_job(&self, title: &str, jobs: &[&'static str]) -> Job {
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

    fn dispatch(&self, with_versions: bool) -> Dispatch {
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

    fn ci(&self) -> Workflow {
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

    fn build_env(step: Step) -> Step {
        Self::signing_env(
            step.env("TOOLCHAIN", &expr("matrix.toolchain"))
                .env("REHEARSE", &expr("inputs.rehearse"))
                .env("GPU", &expr("matrix.gpu"))
                .env("SLURM_FACTORY_BUCKET", &expr("vars.SLURM_FACTORY_BUCKET")),
        )
    }

    /// The release signing key, for the step that signs (never a whole job).
    fn signing_env(step: Step) -> Step {
        step.env(
            "SLURM_FACTORY_GPG_PRIVATE_KEY",
            &expr("secrets.SLURM_FACTORY_GPG_PRIVATE_KEY"),
        )
        .env(
            "SLURM_FACTORY_GPG_PASSPHRASE",
            &expr("secrets.SLURM_FACTORY_GPG_PASSPHRASE"),
        )
    }

    fn deps(&self) -> Workflow {
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

    fn slurm(&self) -> Workflow {
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
    fn admin_binary_job(&self) -> Job {
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
    fn report_job(&self, needs: Vec<&'static str>) -> Job {
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
    fn release_job(&self) -> Job {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    pub(super) fn rendered() -> Vec<Generated> {
        let m = Matrix::load(Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()).unwrap();
        render_all(&m).unwrap()
    }

    fn parsed(file: &Generated) -> serde_yaml::Value {
        serde_yaml::from_str(&file.contents).unwrap()
    }

    #[test]
    fn a_dispatched_rehearsal_reaches_every_build_and_index_step_and_publishes_nothing() {
        for file in rendered().into_iter().filter(|f| {
            !f.path.ends_with("ci.yml") && f.path.extension().is_some_and(|e| e == "yml")
        }) {
            let doc = parsed(&file);
            let at = file.path.display();
            let input = &doc["on"]["workflow_dispatch"]["inputs"]["rehearse"];
            assert_eq!(input["type"], "boolean", "{at}");
            assert_eq!(input["default"], false, "{at}");
            for (name, job) in doc["jobs"].as_mapping().unwrap() {
                for step in job["steps"].as_sequence().unwrap() {
                    let run = step["run"].as_str().unwrap_or("");
                    let toolkit_step = ["build-deps", "build-slurm", " index "]
                        .iter()
                        .any(|c| run.contains(&format!("{TOOLKIT} {}", c.trim())));
                    if toolkit_step {
                        assert!(run.contains(REHEARSE_ARG), "{at} {name:?}: {run}");
                        assert_eq!(step["env"]["REHEARSE"], "${{ inputs.rehearse }}");
                    }
                }
            }
            if let Some(release) = doc["jobs"].get("release") {
                assert!(
                    release["if"]
                        .as_str()
                        .unwrap()
                        .contains("inputs.rehearse != true"),
                    "{at}: a rehearsal never reaches the release job"
                );
            }
        }
    }

    #[test]
    fn every_job_has_permissions_and_timeout() {
        for file in rendered() {
            let doc = parsed(&file);
            assert_eq!(
                doc["permissions"],
                serde_yaml::from_str::<Value>("{}").unwrap(),
                "{}",
                file.path.display()
            );
            for (name, job) in doc["jobs"].as_mapping().unwrap() {
                let at = format!("{} job {:?}", file.path.display(), name);
                assert!(job["permissions"].is_mapping(), "{at} has no permissions");
                assert!(
                    job["timeout-minutes"].as_u64().is_some_and(|t| t > 0),
                    "{at} has no timeout"
                );
            }
        }
    }

    #[test]
    fn every_uses_is_pinned_by_full_sha_with_its_tag() {
        for file in rendered() {
            for line in file.contents.lines().filter(|l| l.contains("uses: ")) {
                let after = line.split("uses: ").nth(1).unwrap();
                let (reference, comment) = after.split_once(" # ").expect("tag comment");
                let sha = reference.split('@').nth(1).unwrap();
                assert!(
                    sha.len() == 40 && sha.bytes().all(|b| b.is_ascii_hexdigit()),
                    "{line}"
                );
                assert!(!comment.is_empty(), "{line}");
            }
        }
    }

    #[test]
    fn only_the_release_job_may_write_contents_and_id_token_only_where_aws_is_used() {
        for file in rendered() {
            let doc = parsed(&file);
            for (name, job) in doc["jobs"].as_mapping().unwrap() {
                let name = name.as_str().unwrap();
                let perms = &job["permissions"];
                let uses_aws = serde_yaml::to_string(job)
                    .unwrap()
                    .contains("configure-aws-credentials");
                assert_eq!(perms["contents"] == "write", name == "release", "{name}");
                if name != "release" {
                    assert_eq!(perms["id-token"] == "write", uses_aws, "{name}");
                }
            }
        }
    }

    #[test]
    fn secrets_reach_only_jobs_in_an_environment_and_only_the_release_job_needs_approval() {
        let mut releases = 0;
        for file in rendered() {
            let doc = parsed(&file);
            for (name, job) in doc["jobs"].as_mapping().unwrap() {
                let text = serde_yaml::to_string(job).unwrap();
                if text.contains("secrets.") || text.contains("aws-actions/") {
                    let want = if name == "release" {
                        RELEASE_ENVIRONMENT
                    } else {
                        BUILD_ENVIRONMENT
                    };
                    assert_eq!(
                        job["environment"],
                        want,
                        "{name:?} in {}",
                        file.path.display()
                    );
                }
                if job["environment"] == RELEASE_ENVIRONMENT {
                    releases += 1;
                    assert_eq!(name, "release", "{}", file.path.display());
                }
            }
        }
        assert_eq!(releases, 1, "one job, one approval per run");
    }

    #[test]
    fn matrix_jobs_do_not_compile_the_toolkit() {
        for file in rendered().iter().skip(1) {
            let doc = parsed(file);
            for (name, job) in doc["jobs"].as_mapping().unwrap() {
                let text = serde_yaml::to_string(job).unwrap();
                if name.as_str() != Some("toolkit") {
                    assert!(!text.contains("cargo "), "{name:?} runs cargo");
                }
            }
            let build = ["build-deps", "build-slurm"]
                .iter()
                .find_map(|j| doc["jobs"].get(*j))
                .unwrap();
            assert_eq!(build["strategy"]["fail-fast"], false);
            assert_eq!(build["if"], "needs.plan.outputs.count != '0'");
        }
    }
}

#[cfg(test)]
mod pipeline_tests {
    use super::*;
    use std::path::Path;

    fn slurm_workflow() -> serde_yaml::Value {
        let file = super::tests::rendered()
            .into_iter()
            .find(|f| f.path.ends_with("build-and-publish-slurm.yml"))
            .unwrap();
        serde_yaml::from_str(&file.contents).unwrap()
    }

    fn step<'a>(job: &'a serde_yaml::Value, name: &str) -> &'a serde_yaml::Value {
        job["steps"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no step {name:?}"))
    }

    #[test]
    fn the_admin_binary_is_built_once_signed_attested_and_released_with_the_packages() {
        let doc = slurm_workflow();
        let job = &doc["jobs"]["admin-binary"];
        // Once per run: no matrix. Least privilege: read the code, nothing else.
        assert!(job.get("strategy").is_none());
        assert_eq!(
            serde_yaml::to_string(&job["permissions"]).unwrap(),
            "contents: read\n"
        );
        assert!(
            job["if"]
                .as_str()
                .unwrap()
                .contains("inputs.rehearse != true")
        );
        // The pinned build tools, and the toolkit's own command (one owner of
        // the target and file names).
        let install = step(job, "Install cargo-zigbuild and zig")["run"]
            .as_str()
            .unwrap();
        for tool in admin_binary::BUILD_TOOLS {
            assert!(install.contains(tool), "{install}");
        }
        let build = step(job, "Build and sign the admins' binary");
        assert_eq!(build["run"], format!("{TOOLKIT} admin-binary --out dist\n"));
        assert!(
            build["env"]["SLURM_FACTORY_GPG_PRIVATE_KEY"]
                .as_str()
                .unwrap()
                .contains("secrets.")
        );
        let handed = step(job, "Hand the binary to the release job");
        let name = handed["with"]["name"].as_str().unwrap();
        // The release job gathers it, attests and publishes it with the packages.
        let release = &doc["jobs"]["release"];
        assert!(
            release["needs"]
                .as_sequence()
                .unwrap()
                .contains(&"admin-binary".into())
        );
        assert!(
            release["if"]
                .as_str()
                .unwrap()
                .contains("needs.admin-binary.result == 'success'")
        );
        assert_eq!(
            step(release, "Gather the admins' binary")["with"]["name"],
            name
        );
        let attested = step(release, "Attest the admins' binary")["with"]["subject-path"]
            .as_str()
            .unwrap();
        assert_eq!(attested, format!("tools/{}", admin_binary::file_name("*")));
        for v in ["25.11", "24.11", "23.11"] {
            let publish = step(release, &format!("Publish Slurm {v} to S3"))["run"]
                .as_str()
                .unwrap();
            assert!(publish.starts_with("cp tools/* dist/\n"), "{publish}");
        }
        assert_eq!(
            admin_binary::file_name("*").replace('*', "x86_64"),
            admin_binary::file_name("x86_64")
        );
    }

    #[test]
    fn ci_installs_the_same_pinned_build_tools() {
        let install =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.ci/install"))
                .unwrap();
        for tool in admin_binary::BUILD_TOOLS {
            assert!(
                install.contains(&format!("'{tool}'")),
                ".ci/install lacks '{tool}'"
            );
        }
    }

    #[test]
    fn every_run_writes_the_report_after_all_other_jobs_whatever_they_did() {
        for file in super::tests::rendered()
            .into_iter()
            .filter(|f| f.path.to_string_lossy().contains("build-and-publish"))
        {
            let doc: serde_yaml::Value = serde_yaml::from_str(&file.contents).unwrap();
            let at = file.path.display();
            let report = &doc["jobs"]["report"];
            let needs: Vec<&str> = report["needs"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|n| n.as_str().unwrap())
                .collect();
            for (name, _) in doc["jobs"].as_mapping().unwrap() {
                let name = name.as_str().unwrap();
                if !["report", "summary"].contains(&name) {
                    assert!(
                        needs.contains(&name),
                        "{at}: report does not wait for {name}"
                    );
                }
            }
            let condition = report["if"].as_str().unwrap();
            assert!(condition.starts_with("!cancelled()"), "{at}: {condition}");
            assert!(condition.contains("inputs.rehearse != true"), "{at}");
            assert_eq!(
                step(report, "Write the build report to the store")["run"],
                format!("{TOOLKIT} report\n")
            );
            assert_eq!(report["permissions"]["contents"], "read", "{at}");
            let summary = &doc["jobs"]["summary"]["needs"];
            assert!(
                summary.as_sequence().unwrap().contains(&"report".into()),
                "{at}"
            );
        }
    }

    #[test]
    fn artifacts_outlive_any_rerun_and_say_why() {
        let mut uploads = 0;
        for file in super::tests::rendered() {
            let doc: serde_yaml::Value = serde_yaml::from_str(&file.contents).unwrap();
            let Some(jobs) = doc["jobs"].as_mapping() else {
                continue;
            };
            for (_, job) in jobs {
                for s in job["steps"].as_sequence().unwrap() {
                    let uses = s["uses"].as_str().unwrap_or("");
                    if uses.starts_with("actions/upload-artifact@") {
                        uploads += 1;
                        assert_eq!(s["with"]["retention-days"], 30, "{}", file.path.display());
                    }
                }
            }
            for line in file
                .contents
                .lines()
                .filter(|l| l.contains("retention-days"))
            {
                assert!(line.ends_with(RETENTION_COMMENT), "{line}");
            }
        }
        assert_eq!(uploads, 4, "toolkit twice, packages, admins' binary");
    }

    #[test]
    fn slurm_runs_only_after_the_default_branch_deps_and_build_their_commit() {
        let doc = slurm_workflow();
        let run = &doc["on"]["workflow_run"];
        assert_eq!(
            serde_yaml::to_string(&run["branches"]).unwrap(),
            format!("- {DEFAULT_BRANCH}\n")
        );
        for (name, job) in doc["jobs"].as_mapping().unwrap() {
            for s in job["steps"].as_sequence().unwrap() {
                if s["uses"]
                    .as_str()
                    .is_some_and(|u| u.starts_with("actions/checkout@"))
                {
                    assert_eq!(s["with"]["ref"], BUILT_COMMIT, "{name:?}");
                }
            }
        }
    }

    #[test]
    fn a_split_packages_joined_tarball_is_attested_by_its_digest() {
        let doc = slurm_workflow();
        let release = &doc["jobs"]["release"];
        let list = step(release, "List Slurm 25.11's whole tarballs")["run"]
            .as_str()
            .unwrap();
        // Whole tarballs' checksum files only: a part's is *.part-NNN.sha256.
        assert!(
            list.starts_with(&format!("cat dist/*.tar.gz.sha256 > {TARBALL_DIGESTS}")),
            "{list}"
        );
        assert!(!"x.tar.gz.part-000.sha256".ends_with(".tar.gz.sha256"));
        let attest = step(
            release,
            "Attest Slurm 25.11's whole tarballs (split packages joined)",
        );
        assert_eq!(attest["with"]["subject-checksums"], TARBALL_DIGESTS);
        assert!(
            attest["uses"]
                .as_str()
                .unwrap()
                .starts_with("actions/attest-build-provenance@")
        );
    }

    /// The release job holds one Slurm version's packages at a time: each
    /// version is gathered, attested, published, then deleted, whatever
    /// happened, before the next is gathered.
    #[test]
    fn the_release_jobs_disk_holds_one_slurm_version_at_a_time() {
        let doc = slurm_workflow();
        let steps = doc["jobs"]["release"]["steps"].as_sequence().unwrap();
        let names: Vec<&str> = steps.iter().map(|s| s["name"].as_str().unwrap()).collect();
        let mut versions = 0;
        for (i, s) in steps.iter().enumerate() {
            let Some(pattern) = s["with"]["pattern"].as_str() else {
                continue;
            };
            versions += 1;
            let v = pattern
                .strip_prefix("slurm-")
                .and_then(|p| p.strip_suffix("-*"))
                .unwrap();
            assert_eq!(s["with"]["path"], DIST);
            // The next gather comes only after this version's dist is freed.
            let free = names
                .iter()
                .position(|n| *n == format!("Free Slurm {v}'s disk"))
                .unwrap();
            assert!(free > i);
            assert_eq!(steps[free]["if"], "always()");
            assert!(
                steps[free]["run"]
                    .as_str()
                    .unwrap()
                    .starts_with("rm -rf dist ")
            );
            let next_gather = steps[i + 1..]
                .iter()
                .position(|s| s["with"]["pattern"].is_string())
                .map(|p| p + i + 1);
            assert!(next_gather.is_none_or(|g| g > free), "{names:?}");
            for n in &names[i + 1..free] {
                assert!(n.contains(v), "{n} between {v}'s gather and free");
            }
        }
        assert_eq!(versions, 3);
    }

    #[test]
    fn deps_and_slurm_runs_exclude_each_other_and_no_waiting_run_is_dropped() {
        let mut groups = Vec::new();
        for file in super::tests::rendered() {
            let doc: serde_yaml::Value = serde_yaml::from_str(&file.contents).unwrap();
            let at = file.path.display().to_string();
            let Some(jobs) = doc["jobs"].as_mapping() else {
                continue;
            };
            let blocks = std::iter::once(("workflow".to_string(), &doc["concurrency"])).chain(
                jobs.iter()
                    .map(|(n, j)| (n.as_str().unwrap().to_string(), &j["concurrency"])),
            );
            for (name, c) in blocks.filter(|(_, c)| !c.is_null()) {
                if c["cancel-in-progress"] == false {
                    // GitHub's default keeps one pending run and cancels it
                    // for the next: a forced dispatch could be dropped.
                    assert_eq!(c["queue"], "max", "{at} {name}");
                }
            }
            if at.contains("build-and-publish") {
                groups.push(doc["concurrency"]["group"].as_str().unwrap().to_string());
            }
        }
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0], groups[1], "deps and slurm share one group");
        assert_eq!(groups[0], PIPELINE_GROUP);
    }
}
