//! The command line: every subcommand and flag the toolkit accepts, and the
//! usage-error type that makes bad values exit 2 like clap's own errors.

use std::fmt;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::matrix::{CellFilter, Stage};

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    version,
    about = "Slurm Factory: build, package and publish relocatable Slurm with Spack",
    after_help = "Examples:\n  cargo xtask matrix --toolchain noble\n  cargo xtask workflows --check\n  cargo xtask plan --stage slurm --slurm 25.11 --json\n  cargo xtask spack-env --stage slurm --slurm 25.11 --toolchain noble --gpu --out /tmp/env"
)]
pub struct Cli {
    /// Project root (default: the nearest parent directory holding spack-env/matrix.yaml)
    #[arg(long, global = true, value_name = "DIR")]
    pub root: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Matrix(MatrixCmd),
    Workflows(WorkflowsCmd),
    Plan(PlanCmd),
    SpackEnv(SpackEnvCmd),
}

/// List the build cells (Slurm version × toolchain × variant) with image, compiler and runner
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  cargo xtask matrix\n  cargo xtask matrix --json --toolchain noble,jammy --variant gpu"
)]
pub struct MatrixCmd {
    #[command(flatten)]
    pub filter: CellFilter,
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

/// Regenerate the GitHub workflows, actionlint config and README matrix table from the matrix
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  cargo xtask workflows\n  cargo xtask workflows --check   # exit 1 with a diff if a generated file is stale"
)]
pub struct WorkflowsCmd {
    /// Change nothing; print a diff of each stale file and exit 1 if any is stale
    #[arg(long)]
    pub check: bool,
}

/// Decide which cells a workflow run builds, with the reason for each
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  cargo xtask plan --stage deps\n  cargo xtask plan --stage slurm --slurm 25.11 --variant gpu --json\n  cargo xtask plan --stage slurm --github-output   # in Actions: writes matrix=, count=, mirrors="
)]
pub struct PlanCmd {
    /// Which stage's cells to plan
    #[arg(long, value_enum)]
    pub stage: Stage,
    #[command(flatten)]
    pub filter: CellFilter,
    /// Mark every selected cell as forced (rebuild even what is already published)
    #[arg(long)]
    pub force: bool,
    /// Print the plan as JSON instead of a table
    #[arg(long)]
    pub json: bool,
    /// Write the plan to $GITHUB_OUTPUT (matrix, count, mirrors) and a table to $GITHUB_STEP_SUMMARY
    #[arg(long)]
    pub github_output: bool,
}

/// Render the Spack environment (spack.yaml, module template) of one cell into a directory
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  cargo xtask spack-env --stage deps --toolchain jammy --out /tmp/env\n  cargo xtask spack-env --stage slurm --slurm 25.11 --toolchain noble --gpu --out /tmp/env"
)]
pub struct SpackEnvCmd {
    /// Which stage's environment
    #[arg(long, value_enum)]
    pub stage: Stage,
    /// The toolchain (OS) the environment builds for
    #[arg(long, value_name = "T")]
    pub toolchain: String,
    /// The Slurm version (slurm stage only)
    #[arg(long, value_name = "V")]
    pub slurm: Option<String>,
    /// The GPU variant (adds CUDA/NVML and ROCm SMI)
    #[arg(long)]
    pub gpu: bool,
    /// Spack target microarchitecture [default: the matrix's `target`]
    #[arg(long, value_name = "TARGET")]
    pub target: Option<String>,
    /// S3 bucket holding the mirrors [default: the local directory store]
    #[arg(long, value_name = "NAME", env = "SLURM_FACTORY_BUCKET")]
    pub bucket: Option<String>,
    /// Directory to write spack.yaml and templates/ into (created if missing)
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// A mistake in what the user asked for (an unknown toolchain, a flag that does
/// not fit the stage). `main` prints it like clap does and exits 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl UsageError {
    pub fn new(message: impl Into<String>) -> Self {
        UsageError(message.into())
    }

    pub fn unknown<T: fmt::Display>(
        what: &str,
        value: &str,
        valid: impl IntoIterator<Item = T>,
    ) -> Self {
        let valid: Vec<String> = valid.into_iter().map(|v| v.to_string()).collect();
        UsageError(format!(
            "unknown {what} '{value}' (valid: {})",
            valid.join(", ")
        ))
    }
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}
