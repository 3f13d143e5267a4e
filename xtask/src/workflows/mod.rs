//! The GitHub Actions workflows, built as typed values from the matrix and
//! serialized with serde_yaml: CI, the dependency build and the Slurm build.

use anyhow::Result;
use indexmap::IndexMap;
use serde::Serialize;
use serde_yaml::Value;

use crate::codegen::{Generated, header};
use crate::matrix::{ActionPin, Matrix};
use crate::schema::admin_binary;

mod jobs;
mod pipelines;

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
    jobs: IndexMap<JobId, Job>,
}

/// Every job's id: the key it has in its workflow, and what `needs`,
/// `if:` conditions and the summary name it by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum JobId {
    Checks,
    Toolkit,
    Plan,
    BuildDeps,
    BuildSlurm,
    Index,
    AdminBinary,
    Release,
    Report,
    Summary,
}

impl JobId {
    const fn as_str(self) -> &'static str {
        match self {
            JobId::Checks => "checks",
            JobId::Toolkit => "toolkit",
            JobId::Plan => "plan",
            JobId::BuildDeps => "build-deps",
            JobId::BuildSlurm => "build-slurm",
            JobId::Index => "index",
            JobId::AdminBinary => "admin-binary",
            JobId::Release => "release",
            JobId::Report => "report",
            JobId::Summary => "summary",
        }
    }

    /// `needs.<id>.<what>` in an expression, e.g. `result` or `outputs.count`.
    fn needs(self, what: &str) -> String {
        format!("needs.{}.{what}", self.as_str())
    }
}

impl Serialize for JobId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A workflow's jobs, in order, by id.
fn jobs(list: impl IntoIterator<Item = (JobId, Job)>) -> IndexMap<JobId, Job> {
    list.into_iter().collect()
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
    needs: Vec<JobId>,
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

impl Job {
    /// A job with what every job must say: its name, runner, time limit
    /// and permissions. The rest comes from the builder methods.
    fn new(
        name: impl Into<String>,
        runs_on: Value,
        timeout_minutes: u32,
        permissions: &[(&'static str, &'static str)],
    ) -> Job {
        Job {
            name: name.into(),
            needs: Vec::new(),
            condition: None,
            runs_on,
            environment: None,
            permissions: perms(permissions),
            timeout_minutes,
            concurrency: None,
            strategy: None,
            outputs: IndexMap::new(),
            steps: Vec::new(),
        }
    }
    fn needs(mut self, ids: &[JobId]) -> Job {
        self.needs = ids.to_vec();
        self
    }
    fn when(mut self, condition: impl Into<String>) -> Job {
        self.condition = Some(condition.into());
        self
    }
    fn environment(mut self, name: &'static str) -> Job {
        self.environment = Some(name);
        self
    }
    fn concurrency(mut self, c: Concurrency) -> Job {
        self.concurrency = Some(c);
        self
    }
    /// A matrix job over `matrix` (an expression), every cell run whatever the others do.
    fn matrix(mut self, matrix: String) -> Job {
        self.strategy = Some(Strategy {
            fail_fast: false,
            matrix,
        });
        self
    }
    fn output(mut self, name: &'static str, value: String) -> Job {
        self.outputs.insert(name, value);
        self
    }
    fn step(mut self, step: Step) -> Job {
        self.steps.push(step);
        self
    }
    fn steps(mut self, steps: impl IntoIterator<Item = Step>) -> Job {
        self.steps.extend(steps);
        self
    }
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
    /// The toolkit's environment variable `name`, from the repository
    /// variable of the same name.
    fn env_from_var(self, name: &str) -> Step {
        self.env(name, &expr(&format!("vars.{name}")))
    }
    /// The toolkit's environment variable `name`, from the secret of the
    /// same name.
    fn env_from_secret(self, name: &str) -> Step {
        self.env(name, &expr(&format!("secrets.{name}")))
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

/// `${{ matrix.<field> }}`: one of the plan's entries' fields (`matrix::entry::field`).
fn cell(field: &str) -> String {
    expr(&format!("matrix.{field}"))
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
/// Where build jobs leave packages and the release job gathers them.
use crate::matrix::entry::DIST;

/// The release job's list of whole-tarball digests (outside `dist/`).
const TARBALL_DIGESTS: &str = "tarball-digests.sha256";
const REHEARSE_ARG: &str = "if [ \"$REHEARSE\" = true ]; then args+=(--rehearse); fi\n";

pub fn render_all(matrix: &Matrix) -> Result<Vec<Generated>> {
    let ctx = Ctx {
        m: matrix,
        checkout_ref: None,
    };
    // Started by the dependencies' run, the Slurm workflow builds the commit
    // that run built, not whatever the default branch is by now.
    let built = Ctx {
        m: matrix,
        checkout_ref: Some(BUILT_COMMIT),
    };
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
            &built.slurm(),
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
    /// What every job checks out; the event's commit when `None`.
    checkout_ref: Option<&'static str>,
}

#[cfg(test)]
mod pipeline_tests;
#[cfg(test)]
mod tests;
