//! The command line: every subcommand and flag the toolkit accepts.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::matrix::Stage;

mod convert;
mod download;
mod groups;
pub use groups::*;

/// How to take a [`crate::error::Remedy`] on the command line: the words
/// that follow the engine's message.
pub fn remedy(remedy: crate::error::Remedy) -> String {
    use crate::error::Remedy;
    match remedy {
        Remedy::AllowUnsigned => " (--allow-unsigned for a local test store)".into(),
        Remedy::ChooseEngine => ", or pass --engine (add --dry-run to only print the plan)".into(),
        Remedy::SpackSources => format!(
            "; give a local copy of the pinned Spack with --spack-sources DIR or {}",
            crate::spack_sources::SOURCES_VAR
        ),
    }
}

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
    Package(PackageCmd),
    Bench(BenchCmd),
    Image(ImageCmd),
    BuildDeps(BuildDepsCmd),
    BuildSlurm(BuildSlurmCmd),
    Index(IndexCmd),
    Verify(VerifyCmd),
    Publish(PublishCmd),
    Download(DownloadCmd),
    AdminBinary(AdminBinaryCmd),
    Report(ReportCmd),
}

/// Write the build report: every cell's state, staleness, package and history, as a page and JSON in the store
#[derive(Debug, Args)]
#[command(after_help = "\
Reads the store as `plan` does (the builds' state records, releases/index.json),
appends this run's cell states and sizes to reports/history.json, and writes
reports/index.html (self-contained: no script, no request outside the store)
and reports/report.json beside releases/. A text version goes to stdout and,
under GitHub Actions, to the step summary.

Examples:
  cargo xtask report                                 # the local store: open target/slurm-factory/store/reports/index.html
  cargo xtask report --bucket my-bucket --public-url https://cdn.example.org
  cargo xtask report --dry-run")]
pub struct ReportCmd {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Where the store is served over HTTP(S): the log and summary link the page there
    #[arg(long, value_name = "URL", env = crate::store::PUBLIC_URL_VAR)]
    pub public_url: Option<String>,
    /// Print the report and what would be written; write nothing
    #[arg(long)]
    pub dry_run: bool,
}

/// `slurm-factory`: the admins' installer, released with the packages.
#[derive(Debug, Parser)]
#[command(
    name = "slurm-factory",
    bin_name = "slurm-factory",
    version,
    about = "Install Slurm Factory's signed, relocatable Slurm packages: download, verify, unpack, module",
    after_help = "Examples:\n  slurm-factory download --list --slurm 25.11\n  slurm-factory download --slurm 25.11 --toolchain noble --prefix /opt/slurm/25.11"
)]
pub struct AdminCli {
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    Download(DownloadCmd),
}

impl AdminCli {
    /// Parses the command line; `download --help` shows this executable's
    /// name in its examples.
    pub fn parse_with_examples() -> AdminCli {
        use clap::{CommandFactory, FromArgMatches};
        let help = DOWNLOAD_HELP.replace("cargo xtask download", "slurm-factory download");
        let command = AdminCli::command().mut_subcommand("download", |c| c.after_help(help));
        let matches = command.get_matches();
        AdminCli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
}

/// List the build cells (Slurm version × toolchain × variant) with image, compiler and runner
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  cargo xtask matrix\n  cargo xtask matrix --json --toolchain noble,jammy --variant gpu"
)]
pub struct MatrixCmd {
    #[command(flatten)]
    pub filter: FilterArgs,
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

/// Decide which cells need building: fingerprints against the store's recorded state, each with its reason
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  cargo xtask plan --stage deps\n  cargo xtask plan --stage slurm --slurm 25.11 --variant gpu --json\n  cargo xtask plan --stage slurm --github-output   # in Actions: writes matrix=, count=, mirrors="
)]
pub struct PlanCmd {
    /// Which stage's cells to plan
    #[arg(long, value_enum)]
    pub stage: Stage,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Select the cells even when the store records them built with the same fingerprint
    #[arg(long)]
    pub force: bool,
    /// The build jobs rehearse: their arguments in the matrix carry --rehearse
    #[arg(long)]
    pub rehearse: bool,
    /// Print the plan as JSON instead of a table
    #[arg(long)]
    pub json: bool,
    /// Write the plan to $GITHUB_OUTPUT (matrix, count, mirrors) and a table to $GITHUB_STEP_SUMMARY
    #[arg(long)]
    pub github_output: bool,
    /// Where the builds recorded their state
    #[command(flatten)]
    pub store: StoreArgs,
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
    #[command(flatten)]
    pub store: BucketArgs,
    /// The deps mirror URL as the build container sees it (file:// or s3://) [default: in the store]
    #[arg(long, value_name = "URL")]
    pub deps_mirror: Option<String>,
    /// Directory to write spack.yaml and templates/ into (created if missing)
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// Turn a built Slurm view into the release artifact: tarball, checksum, signature, manifest, SBOM
#[derive(Debug, Args)]
#[command(
    after_help = "The signing key comes from SLURM_FACTORY_GPG_PRIVATE_KEY (armored, or base64 of armored)\n\
and SLURM_FACTORY_GPG_PASSPHRASE, or from --signing-key-file.\n\n\
Examples:\n  cargo xtask package --view out/view --lock out/spack.lock --slurm 25.11 --toolchain noble --out dist\n  \
cargo xtask package --view v --lock spack.lock --slurm 24.11 --toolchain jammy --gpu --out dist --unsigned --split-size 64M"
)]
pub struct PackageCmd {
    /// The Spack view to ship (its bin, sbin, lib, ...)
    #[arg(long, value_name = "DIR")]
    pub view: PathBuf,
    /// The slurm stage's spack.lock (the manifest lists its packages)
    #[arg(long, value_name = "FILE")]
    pub lock: PathBuf,
    /// Slurm version of the cell
    #[arg(long, value_name = "V")]
    pub slurm: String,
    /// Toolchain of the cell
    #[arg(long, value_name = "T")]
    pub toolchain: String,
    /// The GPU variant
    #[arg(long)]
    pub gpu: bool,
    /// Machine architecture in the file name [default: the matrix's `arch`]
    #[arg(long, value_name = "ARCH")]
    pub arch: Option<String>,
    /// Directory for the outputs (created if missing)
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The cell's input fingerprint, recorded in the manifest
    #[arg(long, value_name = "HEX")]
    pub fingerprint: Option<String>,
    /// Split the tarball into ordered parts of at most this size (GitHub's asset limit is 2 GiB)
    #[arg(long, value_name = "SIZE", default_value_t = crate::package::DEFAULT_SPLIT, value_parser = crate::package::parse_size)]
    pub split_size: u64,
    #[command(flatten)]
    pub threads: ThreadsArg,
    #[command(flatten)]
    pub signing: SigningArgs,
    /// Check the inputs and print what would be written, without writing
    #[arg(long)]
    pub dry_run: bool,
}

/// Measure the toolkit against the peer tools on the same data, in one run
#[derive(Debug, Args)]
#[command(after_help = "Run optimized: `cargo xtask-release bench package`.\n\n\
Examples:\n  cargo xtask-release bench package\n  cargo xtask-release bench package --size-mib 256 --dir /tmp/bench\n  \
cargo xtask-release bench upload   # needs s3s-fs and awscli on PATH")]
pub struct BenchCmd {
    /// What to measure
    #[arg(value_enum)]
    pub what: BenchWhat,
    /// Size of the generated input
    #[arg(long, value_name = "MIB", default_value_t = 1024)]
    pub size_mib: u64,
    /// Work directory (kept between runs: the generated input is reused) [default: target/slurm-factory/bench]
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum BenchWhat {
    /// `package` vs `tar -czf` and `tar -I pigz -cf` on a Slurm-like view
    Package,
    /// `publish`'s S3 upload vs `aws s3 cp` to a loopback s3s-fs server
    Upload,
    /// `download` vs `curl && sha256sum -c && gpg --verify && tar -xzf` from a loopback HTTP server
    Download,
}

/// Show a toolchain's build-image recipe (Containerfile) or its content-derived tag
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  cargo xtask image --toolchain jammy --print\n  cargo xtask image --toolchain rockylinux8   # prints the tag\n  cargo xtask image --toolchain noble --build --spack-sources /srv/spack-tarballs",
    mut_arg("engine", |a| a.requires("build").help("Container engine (with --build) [default: $SLURM_FACTORY_ENGINE, else podman or docker]"))
)]
pub struct ImageCmd {
    /// The toolchain
    #[arg(long, value_name = "T")]
    pub toolchain: String,
    /// Print the recipe instead of the tag
    #[arg(long, conflicts_with = "build")]
    pub print: bool,
    /// Build the image unless the engine has its tag already
    #[arg(long)]
    pub build: bool,
    #[command(flatten)]
    pub engine: EngineArg,
    #[command(flatten)]
    pub sources: SourceArgs,
    /// Where the build context lives (with --build) [default: target/slurm-factory]
    #[arg(long, value_name = "DIR", requires = "build")]
    pub state_dir: Option<PathBuf>,
    /// Print the context and the engine command; build nothing
    #[arg(long, requires = "build")]
    pub dry_run: bool,
}

/// Stage 1: build a toolchain's Slurm dependencies with Spack in a container and push them, signed
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  cargo xtask build-deps --toolchain jammy --dry-run\n  cargo xtask build-deps --toolchain noble --gpu --mirror s3://my-bucket/noble/slurm/deps"
)]
pub struct BuildDepsCmd {
    /// The toolchain
    #[arg(long, value_name = "T")]
    pub toolchain: String,
    /// The GPU variant (adds CUDA and ROCm SMI)
    #[arg(long)]
    pub gpu: bool,
    /// The deps mirror (file:///ABS/PATH or s3://BUCKET/PATH) [default: <store>/<toolchain>/slurm/deps]
    #[arg(long, value_name = "URL")]
    pub mirror: Option<String>,
    /// Also rebuild the mirror's index (only where no other job writes the mirror)
    #[arg(long)]
    pub update_index: bool,
    #[command(flatten)]
    pub build: BuildArgs,
}

/// Stage 2: build Slurm for one cell from the signed deps cache, push it, and package it
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  cargo xtask build-slurm --slurm 25.11 --toolchain noble --gpu --dry-run\n  cargo xtask build-slurm --slurm 24.11 --toolchain jammy --out dist"
)]
pub struct BuildSlurmCmd {
    /// The Slurm version
    #[arg(long, value_name = "V")]
    pub slurm: String,
    /// The toolchain
    #[arg(long, value_name = "T")]
    pub toolchain: String,
    /// The GPU variant (NVML and ROCm SMI plugins)
    #[arg(long)]
    pub gpu: bool,
    /// Where the package goes [default: target/slurm-factory/dist]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Do not run `verify` on the package (its state records no verify then)
    #[arg(long)]
    pub skip_verify: bool,
    /// Pass the host's GPUs into the verify container (a GPU runner's own check)
    #[arg(long, conflicts_with = "skip_verify")]
    pub host_gpus: bool,
    #[command(flatten)]
    pub threads: ThreadsArg,
    #[command(flatten)]
    pub build: BuildArgs,
}

/// Rebuild a mirror's buildcache index: the single writer that runs after the build jobs
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  cargo xtask index --toolchain jammy            # the deps mirror\n  cargo xtask index --toolchain jammy --slurm 25.11"
)]
pub struct IndexCmd {
    /// The toolchain
    #[arg(long, value_name = "T")]
    pub toolchain: String,
    /// The Slurm version's mirror instead of the deps mirror
    #[arg(long, value_name = "V")]
    pub slurm: Option<String>,
    #[command(flatten)]
    pub build: BuildArgs,
}

/// Smoke-test a package relocated in a clean container of its OS: versions, libraries, module, slurmd -C
#[derive(Debug, Args)]
#[command(
    after_help = "Writes <tarball>.verify.json beside the tarball; exits 1 when a check fails.\n\n\
Examples:\n  cargo xtask verify --tarball dist/slurm-25.11-noble-cpu-x86_64.tar.gz\n  \
cargo xtask verify --tarball dist/slurm-25.11-noble-gpu-x86_64.tar.gz --host-gpus   # on a GPU runner",
    mut_arg("image", |a| a.help("Use this image instead of the toolchain's OS base image")),
    mut_arg("network", |a| a.help("The container's network (it installs Lmod from the OS repositories)"))
)]
pub struct VerifyCmd {
    /// The package (or the name its .part-NNN files share)
    #[arg(long, value_name = "FILE")]
    pub tarball: PathBuf,
    #[command(flatten)]
    pub engine: EngineArg,
    #[command(flatten)]
    pub image: ImageArg,
    #[command(flatten)]
    pub network: NetworkArg,
    /// Pass the host's GPUs in and check nvidia-smi and NVML autodetection (GPU runners)
    #[arg(long)]
    pub host_gpus: bool,
}

/// Upload the packages in a directory to a store: data, then checksums and signatures, then manifests, index last
#[derive(Debug, Args)]
#[command(
    after_help = "A rerun uploads nothing that is already there (same SHA-256).\n\n\
Examples:\n  cargo xtask publish --to local --dir target/slurm-factory/dist\n  \
cargo xtask publish --to s3 --bucket my-bucket --dir dist --dry-run"
)]
pub struct PublishCmd {
    /// Where to
    #[arg(long, value_enum)]
    pub to: PublishTo,
    /// The output directory of `package` / `build-slurm`
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Where the store is served over HTTP(S) (a CDN in front of the bucket): prints each
    /// package's URL and the admins' `download` command
    #[arg(long, value_name = "URL", env = crate::store::PUBLIC_URL_VAR)]
    pub public_url: Option<String>,
    /// Publish packages without a signature (local test stores only)
    #[arg(long)]
    pub allow_unsigned: bool,
    /// Print what would be uploaded where (and what is already there)
    #[arg(long)]
    pub dry_run: bool,
}

const DOWNLOAD_HELP: &str = "\
Nothing unverified reaches the prefix: the package is unpacked beside it and
moved in only after its SHA-256 and its signature by the trusted key (the
fingerprint pinned in spack-env/matrix.yaml, or --trusted-key) both check out.
An interrupted download resumes when the command is run again.

Examples:
  cargo xtask download --list --slurm 25.11
  cargo xtask download --slurm 25.11 --toolchain noble --prefix /opt/slurm/25.11
  cargo xtask download --release slurm-25.11.6-2026.12.01 --toolchain noble --prefix /opt/slurm/25.11
  cargo xtask download --slurm 25.11 --toolchain rockylinux9 --gpu --prefix /opt/slurm/25.11-gpu \\
      --modules /etc/modulefiles --from https://cdn.example.org/slurm-factory";

/// Fetch a released Slurm, verify its checksum and signature, unpack it safely and install its module
#[derive(Debug, Args)]
#[command(
    after_help = DOWNLOAD_HELP,
    mut_arg("bucket", |a| a.help("S3 bucket for --from s3")),
    mut_arg("store_dir", |a| a.help("The local store's directory for --from local [default: target/slurm-factory/store]")),
)]
pub struct DownloadCmd {
    /// The Slurm version: the newest release of it that has the package
    #[arg(long, value_name = "V")]
    pub slurm: Option<String>,
    /// One release exactly, by its tag (`download --list` shows them)
    #[arg(long, value_name = "TAG")]
    pub release: Option<String>,
    /// The toolchain (the OS the package was built for)
    #[arg(long, value_name = "T")]
    pub toolchain: Option<String>,
    /// The GPU variant
    #[arg(long)]
    pub gpu: bool,
    /// The machine architecture [default: the matrix's, x86_64]
    #[arg(long, value_name = "A")]
    pub arch: Option<String>,
    /// Where Slurm goes: a new or empty directory (the module finds view/ there)
    #[arg(long, value_name = "DIR")]
    pub prefix: Option<PathBuf>,
    /// Also install the module file here (a MODULEPATH root) [default: PREFIX/modules only]
    #[arg(long, value_name = "DIR")]
    pub modules: Option<PathBuf>,
    /// `github` (the repository's releases), `s3` (--bucket), `local` (the local store), or
    /// an http(s) URL: a store's public base URL or one release directory
    #[arg(long, value_name = "SOURCE", default_value = "github")]
    pub from: String,
    /// The GitHub repository [default: releases.github in the matrix]
    #[arg(long, value_name = "OWNER/NAME")]
    pub repo: Option<String>,
    /// The store for --from s3 (--bucket, --bucket-prefix; credentials from the
    /// standard AWS chain) or --from local (--store-dir)
    #[command(flatten)]
    pub store: StoreArgs,
    /// Trust this armored public key instead of the project's pinned one
    #[arg(long, value_name = "FILE")]
    pub trusted_key: Option<PathBuf>,
    /// Trust the key published beside the packages if its fingerprint is this
    /// one (40 hex digits) [default: the fingerprint pinned in the matrix]
    #[arg(long, value_name = "FPR", conflicts_with = "trusted_key")]
    pub trusted_fingerprint: Option<String>,
    /// List what the source offers (releases, toolchains, variants, sizes), newest first, and exit
    #[arg(long)]
    pub list: bool,
    /// Print what would be fetched and where it would go
    #[arg(long)]
    pub dry_run: bool,
}

/// Build the admins' `slurm-factory` executable (glibc 2.28, with cargo-zigbuild), its checksum and signature
#[derive(Debug, Args)]
#[command(after_help = "\
The executable is `download` alone, with the release policy of this
checkout's matrix built in: it needs no checkout and no Rust on the admin's
machine, only gpg. It runs on every supported OS (x86_64, glibc 2.28 or newer).
Needs cargo-zigbuild and ziglang (pip install cargo-zigbuild==0.24.0 ziglang==0.17.0).

Examples:
  cargo xtask admin-binary --out dist
  cargo xtask admin-binary --out dist --dry-run")]
pub struct AdminBinaryCmd {
    /// Directory for slurm-factory-<arch>-linux, its .sha256 and .asc (created if missing)
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    #[command(flatten)]
    pub signing: SigningArgs,
    /// Print the build command and the files it would write; build nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PublishTo {
    /// The local directory store
    Local,
    /// An S3 bucket (standard AWS credential chain; AWS_ENDPOINT_URL for S3-compatible servers)
    S3,
    /// GitHub Releases, one per build of a Slurm version, never changed once published (GITHUB_TOKEN, GITHUB_REPOSITORY, GITHUB_API_URL)
    Github,
}
