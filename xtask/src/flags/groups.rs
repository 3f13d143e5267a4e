//! The option groups several commands flatten (store, signing, image
//! sources, threads, the build options), each with its checks and its
//! conversion into the plain values the engine modules take. Flag names
//! appear in messages only here and in the commands' own conversions.
//!
//! (Plain `//` comments on the groups: a flattened struct's doc comment would
//! become its command's description.)

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use clap::Args;

use crate::container::EngineKind;
use crate::error::UsageError;
use crate::image;
use crate::matrix::{CellFilter, Stage, Variant};
use crate::sign::{KEY_VAR, Keyring};
use crate::store::{self, Store, StoreUrl, local, s3};

// Which cells a command is about. Empty lists mean "all".
#[derive(Debug, Clone, Default, Args)]
pub struct FilterArgs {
    /// Only these toolchains (repeat or comma-separate)
    #[arg(long = "toolchain", value_name = "T", value_delimiter = ',')]
    pub toolchains: Vec<String>,
    /// Only these Slurm versions (repeat or comma-separate)
    #[arg(long = "slurm", value_name = "V", value_delimiter = ',')]
    pub versions: Vec<String>,
    /// Only these variants (repeat or comma-separate)
    #[arg(long = "variant", value_name = "VARIANT", value_delimiter = ',')]
    pub variants: Vec<Variant>,
}

impl FilterArgs {
    pub fn cells(&self) -> CellFilter {
        CellFilter {
            toolchains: self.toolchains.clone(),
            versions: self.versions.clone(),
            variants: self.variants.clone(),
        }
    }
}

// How many threads compress a package: for shared nodes and tests. The
// package's bytes are the same whatever the count.
#[derive(Debug, Clone, Args)]
pub struct ThreadsArg {
    /// Compression threads (the package's bytes do not depend on it) [default: one per core]
    #[arg(long, value_name = "N", env = "SLURM_FACTORY_THREADS",
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,
}

impl ThreadsArg {
    pub fn count(&self) -> usize {
        self.threads
            .map_or_else(crate::package::threads, usize::from)
    }
}

// The bucket options of every command that reaches the store or its Spack
// mirrors (builds, `spack-env`, `plan`, `publish`, `download --from s3`),
// checked in one place. (Plain comments: a flattened struct's doc comment
// would become its command's description.)
#[derive(Debug, Clone, Default, clap::Args)]
pub struct BucketArgs {
    /// S3 bucket of the store and its Spack mirrors [default: the local store]
    #[arg(long, value_name = "NAME", env = crate::store::BUCKET_VAR)]
    pub bucket: Option<String>,
    /// Key prefix inside the bucket (every key of the store and its mirrors starts with it)
    #[arg(long, value_name = "PREFIX", env = crate::store::BUCKET_PREFIX_VAR)]
    pub bucket_prefix: Option<String>,
}

impl BucketArgs {
    /// Where the store is: a bucket name, no prefix without a bucket.
    pub fn mirrors(&self) -> Result<StoreUrl> {
        match (&self.bucket, &self.bucket_prefix) {
            (None, None) => Ok(StoreUrl::Local),
            (None, Some(_)) => Err(UsageError::new(
                "--bucket-prefix is a key prefix inside --bucket: give the bucket",
            )
            .into()),
            (Some(b), _) if !is_bucket_name(b) => {
                Err(UsageError::new(format!("--bucket '{b}' is not an S3 bucket name")).into())
            }
            (Some(b), p) => Ok(StoreUrl::Bucket {
                bucket: b.clone(),
                prefix: p.as_deref().unwrap_or("").trim_matches('/').to_string(),
            }),
        }
    }

    /// The bucket's store, else the local store in `local`.
    pub fn open(&self, local: PathBuf) -> Result<Box<dyn Store>> {
        store::open(&self.mirrors()?, local)
    }
}

/// S3's rules: 3-63 characters of lowercase letters, digits, dots and hyphens.
fn is_bucket_name(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
}

// The store options `plan`, `publish` and `download` share.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct StoreArgs {
    #[command(flatten)]
    pub bucket: BucketArgs,
    /// The local store's directory [default: target/slurm-factory/store]
    #[arg(long, value_name = "DIR")]
    pub store_dir: Option<PathBuf>,
}

impl StoreArgs {
    pub fn local(&self, root: &Path) -> local::LocalStore {
        local::LocalStore {
            root: self
                .store_dir
                .clone()
                .unwrap_or_else(|| root.join(crate::project::STATE_DIR).join("store")),
        }
    }

    /// The bucket's store; a usage error without `--bucket`.
    pub fn s3(&self) -> Result<s3::S3Store> {
        match self.bucket.mirrors()? {
            StoreUrl::Bucket { bucket, prefix } => s3::S3Store::new(&bucket, &prefix),
            StoreUrl::Local => {
                Err(UsageError::new("--to s3 needs --bucket NAME (or SLURM_FACTORY_BUCKET)").into())
            }
        }
    }

    /// The bucket when one is given, else the local store.
    pub fn open(&self, root: &Path) -> Result<Box<dyn Store>> {
        if self.bucket.bucket.is_some() && self.store_dir.is_some() {
            return Err(
                UsageError::new("--bucket and --store-dir name two stores: give one").into(),
            );
        }
        self.bucket.open(self.local(root).root)
    }
}

/// How to say "there is no key" so the user knows what to do.
pub const NO_KEY_HELP: &str = "no signing key: set SLURM_FACTORY_GPG_PRIVATE_KEY (armored, or base64 of armored) \
     and SLURM_FACTORY_GPG_PASSPHRASE, or pass --signing-key-file PATH; \
     --unsigned makes an unsigned package for local testing";

// How a command gets its signing key: the environment or `--signing-key-file`,
// or none at all with `--unsigned`.
#[derive(Debug, Clone, clap::Args)]
pub struct SigningArgs {
    /// Armored private key file (instead of SLURM_FACTORY_GPG_PRIVATE_KEY)
    #[arg(long, value_name = "PATH")]
    pub signing_key_file: Option<PathBuf>,
    /// Sign nothing (local testing only: download refuses unsigned packages)
    #[arg(long)]
    pub unsigned: bool,
}

impl SigningArgs {
    /// The key, or `None` for `--unsigned`. Without a key: an error, or a
    /// printed note when `missing_is_a_note` (a dry run shows the plan anyway).
    pub fn keyring(&self, missing_is_a_note: bool) -> Result<Option<Keyring>> {
        if self.unsigned && self.signing_key_file.is_some() {
            return Err(
                UsageError::new("--unsigned and --signing-key-file contradict each other").into(),
            );
        }
        if self.unsigned {
            return Ok(None);
        }
        let key = Keyring::from_env_or_file(self.signing_key_file.as_deref())?;
        if key.is_none() {
            if !missing_is_a_note {
                bail!("{NO_KEY_HELP}");
            }
            outln!("# note: {NO_KEY_HELP}");
        }
        Ok(key)
    }

    /// The key as [`SigningArgs::keyring`] gives it, except that a run that
    /// publishes nothing (a rehearsal) and was given no key signs with a
    /// throwaway key made for it, so its mirror is signed like a real one.
    pub fn keyring_or_throwaway(&self, dry_run: bool, throwaway: bool) -> Result<Option<Keyring>> {
        let given = self.signing_key_file.is_some()
            || std::env::var_os(KEY_VAR).is_some_and(|v| !v.is_empty());
        if throwaway && !given && !self.unsigned && !dry_run {
            outln!("note: no signing key given: this run signs with a throwaway key made for it");
            return Keyring::throwaway().map(Some);
        }
        self.keyring(dry_run)
    }
}

// Where an image build takes Spack's sources from (and pip's CA bundle).
#[derive(Debug, Clone, clap::Args)]
pub struct SourceArgs {
    /// A directory holding the pinned Spack as `spack-<ref>.tar.gz` and
    /// `spack-packages-<ref>.tar.gz` for the image build (no network needed)
    /// [default: cloned from GitHub into <state-dir>/cache/spack-sources]
    #[arg(long, value_name = "DIR", env = crate::spack_sources::SOURCES_VAR)]
    pub spack_sources: Option<PathBuf>,
    /// A CA bundle that the image build's pip trusts (behind a TLS-intercepting proxy); not kept in the image
    #[arg(long, value_name = "FILE", env = "SLURM_FACTORY_CA_BUNDLE")]
    pub ca_bundle: Option<PathBuf>,
}

impl SourceArgs {
    pub fn sources(&self) -> image::Sources {
        image::Sources {
            spack_sources: self.spack_sources.clone(),
            ca_bundle: self.ca_bundle.clone(),
        }
    }
}

// The container engine, for every command that runs one.
#[derive(Debug, Clone, Args)]
pub struct EngineArg {
    /// Container engine [default: $SLURM_FACTORY_ENGINE, else podman or docker, whichever is installed]
    #[arg(long, value_enum, value_name = "ENGINE")]
    pub engine: Option<EngineKind>,
}

// The image a container runs instead of the toolchain's own.
#[derive(Debug, Clone, Args)]
pub struct ImageArg {
    /// Use this image instead of building the toolchain's recipe
    #[arg(long, value_name = "TAG")]
    pub image: Option<String>,
}

// The container's network, one of the modes the engines know.
#[derive(Debug, Clone, Args)]
pub struct NetworkArg {
    /// The container's network (`host` lets Spack fetch sources; `none` for offline runs)
    #[arg(long, value_name = "MODE", default_value = "host")]
    pub network: String,
}

impl NetworkArg {
    pub fn checked(&self) -> Result<String> {
        const NETWORKS: [&str; 6] = ["none", "host", "bridge", "default", "slirp4netns", "pasta"];
        if !NETWORKS.contains(&self.network.as_str()) {
            return Err(UsageError::new(format!(
                "--network {} is not a network mode (valid: {})",
                self.network,
                NETWORKS.join(", ")
            ))
            .into());
        }
        Ok(self.network.clone())
    }
}

// Options shared by the commands that run Spack in a container.
#[derive(Debug, Args)]
pub struct BuildArgs {
    #[command(flatten)]
    pub engine: EngineArg,
    #[command(flatten)]
    pub image: ImageArg,
    #[command(flatten)]
    pub network: NetworkArg,
    #[command(flatten)]
    pub store: BucketArgs,
    /// Spack target microarchitecture [default: the matrix's `target`]
    #[arg(long, value_name = "TARGET")]
    pub target: Option<String>,
    /// Where caches, the local store and work directories live [default: target/slurm-factory]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    #[command(flatten)]
    pub signing: SigningArgs,
    /// Rehearse: real concretization, install order, signed push, index and
    /// view with `spack install --fake` (nothing compiled), into the store's
    /// `rehearsal/` mirrors; never recorded, never publishable
    #[arg(long)]
    pub rehearse: bool,
    #[command(flatten)]
    pub sources: SourceArgs,
    /// Print the image build, the engine command and the in-container script; run nothing
    #[arg(long)]
    pub dry_run: bool,
}

// The engine modules' enums as flag values: their spellings are the ones the
// engine modules use (`as_str`, `program`), so a flag and a file or a matrix
// entry never disagree.

impl clap::ValueEnum for Variant {
    fn value_variants<'a>() -> &'a [Self] {
        &[Variant::Cpu, Variant::Gpu]
    }
    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.as_str()))
    }
}

impl clap::ValueEnum for Stage {
    fn value_variants<'a>() -> &'a [Self] {
        &[Stage::Deps, Stage::Slurm]
    }
    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.as_str()))
    }
}

impl clap::ValueEnum for EngineKind {
    fn value_variants<'a>() -> &'a [Self] {
        &[EngineKind::Podman, EngineKind::Docker]
    }
    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.program()))
    }
}
