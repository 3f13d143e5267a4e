//! `download`: an admin's one command from a release to a working, verified
//! Slurm. The artifact streams once through everything: each piece is kept
//! on disk (so an interrupted download resumes), hashed, fed to `gpg
//! --verify` and unpacked into a staging directory beside the prefix, at the
//! same time. Only when the checksums and the signature by the trusted key
//! all agree is the staging directory renamed into the prefix; on any
//! failure the prefix is exactly as it was.

pub mod extract;
pub mod source;

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::error::UsageError;
use crate::flags::DownloadCmd;
use crate::package::output::hex;
use crate::schema::ReleasePolicy;
use crate::schema::release::ReleaseTag;
use crate::sign::TrustedKey;
use crate::store;
use source::{Ask, GitHubSource, HttpBase, Offer, Source, StoreSource};

/// Pieces in flight to each consumer (gpg, the unpacker): bounded memory.
const IN_FLIGHT: usize = 64;
/// Attempts per file when the transfer breaks; each resumes where it stopped.
const ATTEMPTS: u32 = 5;

impl DownloadCmd {
    /// `root` is the checkout (`cargo xtask`), or `None` for the admins'
    /// binary, which knows only its built-in `policy`.
    pub fn run(self, root: Option<&Path>, policy: &ReleasePolicy) -> Result<()> {
        self.check_flags()?;
        if !self.list && !self.dry_run {
            interrupts::catch();
        }
        let slurm = self.series()?;
        let source = self.source(root, policy)?;
        self.check_names(policy, source.as_ref())?;
        if self.list {
            return list(
                source.as_ref(),
                &Ask {
                    slurm: slurm.as_deref(),
                    release: self.release.as_deref(),
                    want: None,
                },
                self.toolchain.as_deref(),
            );
        }
        let (Some(slurm), Some(toolchain), Some(prefix)) = (&slurm, &self.toolchain, &self.prefix)
        else {
            return Err(UsageError::new(
                "download needs --slurm V (or --release TAG) --toolchain T --prefix DIR (or --list to see what is offered)",
            )
            .into());
        };
        let want = Offer {
            slurm: slurm.clone(),
            toolchain: toolchain.clone(),
            variant: if self.gpu { "gpu" } else { "cpu" }.into(),
            arch: self.arch.clone().unwrap_or_else(|| policy.arch.clone()),
            files: Default::default(),
            release: String::new(),
            dir: String::new(),
            immutable: false,
        };
        let prefix = absolute(&checked_path("--prefix", prefix)?)?;
        check_prefix(&prefix)?;
        let offers = source.offers(&Ask {
            slurm: Some(slurm),
            release: self.release.as_deref(),
            want: Some(&want),
        })?;
        // Newest first: the newest release that has the package.
        let Some(offer) = offers.iter().find(|o| o.stem() == want.stem()) else {
            let mut have: Vec<String> = offers
                .iter()
                .map(|o| format!("{}/{}/{}", o.toolchain, o.variant, o.arch))
                .collect();
            have.sort();
            have.dedup();
            bail!(
                "{} offers no {} ({} there: {})",
                source.describe(),
                want.stem(),
                match &self.release {
                    Some(tag) => format!("release {tag}"),
                    None => format!("Slurm {slurm}"),
                },
                if have.is_empty() {
                    "nothing".into()
                } else {
                    have.join(", ")
                }
            );
        };
        outln!(
            "release {}{}",
            printable(&offer.release),
            if offer.immutable {
                " (immutable on GitHub: its assets and tag can never change)"
            } else {
                ""
            }
        );
        let modules = match &self.modules {
            Some(m) => Some(absolute(&checked_path("--modules", m)?)?),
            None => None,
        };
        if self.dry_run {
            outln!("dry run: from {}", source.describe());
            for f in offer.data_files() {
                outln!("  fetch  {f} ({})", size_text(offer.files[&f]));
            }
            outln!(
                "  verify SHA-256 ({}.sha256) and the signature ({}.asc)",
                offer.tarball(),
                offer.tarball()
            );
            outln!(
                "  unpack into {} (via a staging directory beside it)",
                prefix.display()
            );
            if let Some(m) = &modules {
                outln!("  module into {}", m.display());
            }
            return Ok(());
        }
        let key = self.trusted_key(policy, source.as_ref(), offer)?;
        let installed = install(source.as_ref(), offer, &key, &prefix, modules.as_deref())?;
        outln!(
            "installed Slurm {slurm} ({toolchain}, {}) in {}: {} files, {:.1} MiB, signed by {}",
            offer.variant,
            prefix.display(),
            installed.files,
            installed.bytes as f64 / (1 << 20) as f64,
            key.fingerprint
        );
        outln!("To use it:");
        outln!("  module use {}", installed.module_root.display());
        outln!("  module load {}", installed.module);
        Ok(())
    }

    /// The Slurm series asked for: `--slurm`, or the one `--release` names
    /// (both must agree).
    fn series(&self) -> Result<Option<String>> {
        let Some(tag) = &self.release else {
            return Ok(self.slurm.clone());
        };
        let Some(parsed) = ReleaseTag::parse(tag) else {
            return Err(UsageError::new(format!(
                "--release {}: expected a release tag, slurm-<version>-<YYYY.MM.DD>[.N] (see: download --list)",
                printable(tag)
            ))
            .into());
        };
        match &self.slurm {
            Some(v) if v != parsed.series() => Err(UsageError::new(format!(
                "--release {tag} is a release of Slurm {}, not --slurm {}",
                parsed.series(),
                printable(v)
            ))
            .into()),
            _ => Ok(Some(parsed.series().to_string())),
        }
    }

    /// Every option given must mean something for this source and mode.
    fn check_flags(&self) -> Result<()> {
        let source_kind = match self.from.as_str() {
            "github" | "s3" | "local" => self.from.as_str(),
            _ => "url",
        };
        let only = [
            ("--repo", self.repo.is_some(), "github"),
            ("--bucket", self.bucket.is_some(), "s3"),
            ("--bucket-prefix", self.bucket_prefix.is_some(), "s3"),
            ("--store-dir", self.store_dir.is_some(), "local"),
        ];
        if let Some(fpr) = &self.trusted_fingerprint
            && !(fpr.len() == 40 && fpr.chars().all(|c| c.is_ascii_hexdigit()))
        {
            return Err(UsageError::new(format!(
                "--trusted-fingerprint {}: expected the key's full fingerprint, 40 hex digits",
                printable(fpr)
            ))
            .into());
        }
        for (flag, given, kind) in only {
            if given && source_kind != kind {
                return Err(UsageError::new(format!(
                    "{flag} is for --from {kind}, not --from {}",
                    self.from
                ))
                .into());
            }
        }
        if source_kind == "s3" && self.bucket.is_none() {
            return Err(UsageError::new("--from s3 needs --bucket NAME").into());
        }
        if self.list {
            let install_only = [
                ("--prefix", self.prefix.is_some()),
                ("--modules", self.modules.is_some()),
                ("--gpu", self.gpu),
                ("--arch", self.arch.is_some()),
                ("--trusted-key", self.trusted_key.is_some()),
                ("--trusted-fingerprint", self.trusted_fingerprint.is_some()),
                ("--dry-run", self.dry_run),
            ];
            if let Some((flag, _)) = install_only.iter().find(|(_, given)| *given) {
                return Err(UsageError::new(format!(
                    "{flag} has no meaning with --list (it lists every variant and installs nothing)"
                ))
                .into());
            }
        }
        Ok(())
    }

    fn store(&self) -> crate::store::StoreArgs {
        crate::store::StoreArgs {
            bucket: crate::store::BucketArgs {
                bucket: self.bucket.clone(),
                prefix: self.bucket_prefix.clone(),
            },
            store_dir: self.store_dir.clone(),
        }
    }

    /// A `--slurm` or `--toolchain` this build does not know may still be on
    /// offer (a version the matrix has since dropped): the source decides.
    /// A name neither knows is a usage error naming the valid ones.
    fn check_names(&self, policy: &ReleasePolicy, source: &dyn Source) -> Result<()> {
        type Field = fn(&Offer) -> &str;
        let asked: [(&str, Option<&String>, &[String], Field); 2] = [
            (
                "Slurm version",
                self.slurm.as_ref(),
                &policy.slurm_versions,
                |o| &o.slurm,
            ),
            (
                "toolchain",
                self.toolchain.as_ref(),
                &policy.toolchains,
                |o| &o.toolchain,
            ),
        ];
        let unknown: Vec<_> = asked
            .into_iter()
            .filter_map(|(what, value, known, field)| {
                value
                    .filter(|v| !known.contains(v))
                    .map(|v| (what, v, known, field))
            })
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        let offers = source.offers(&Ask::default());
        for (what, value, known, field) in unknown {
            let mut valid: Vec<String> = known.to_vec();
            match &offers {
                Ok(offers) => {
                    if offers.iter().any(|o| field(o) == value.as_str()) {
                        continue;
                    }
                    for o in offers {
                        let name = printable(field(o));
                        if !valid.contains(&name) {
                            valid.push(name);
                        }
                    }
                }
                Err(e) => {
                    return Err(UsageError::new(format!(
                        "{}; {} could not be asked what else it offers: {e:#}",
                        UsageError::unknown(what, &printable(value), &valid),
                        source.describe()
                    ))
                    .into());
                }
            }
            return Err(UsageError::unknown(what, &printable(value), &valid).into());
        }
        Ok(())
    }

    fn source(&self, root: Option<&Path>, policy: &ReleasePolicy) -> Result<Box<dyn Source>> {
        let from = self.from.as_str();
        Ok(match from {
            "github" => Box::new(GitHubSource::new(
                self.repo.as_deref().unwrap_or(&policy.github),
            )?),
            "s3" => Box::new(StoreSource {
                fetch: Box::new(self.store().s3()?),
                dir: None,
            }),
            "local" => {
                let store = match (root, &self.store_dir) {
                    (Some(root), _) => self.store().local(root),
                    (None, Some(_)) => self.store().local(Path::new(".")),
                    (None, None) => {
                        return Err(UsageError::new(
                            "--from local needs --store-dir DIR (there is no checkout whose target/slurm-factory/store to use)",
                        )
                        .into());
                    }
                };
                Box::new(StoreSource {
                    fetch: Box::new(store),
                    dir: None,
                })
            }
            url if url.starts_with("http://") || url.starts_with("https://") => {
                let (base, dir) = source::split_url(url);
                let variant = if self.gpu { "gpu" } else { "cpu" };
                match (&dir, &self.slurm, &self.toolchain) {
                    (
                        Some(source::ReleaseDir::Cell {
                            slurm: v,
                            toolchain: t,
                            variant: var,
                        }),
                        Some(slurm),
                        Some(tc),
                    ) if (v, t, var.as_str()) != (slurm, tc, variant) => {
                        return Err(UsageError::new(format!(
                            "--from {url} is the release directory of {v}/{t}/{var}, not {slurm}/{tc}/{variant}"
                        ))
                        .into());
                    }
                    (Some(source::ReleaseDir::Release(tag)), _, _)
                        if self.release.as_ref().is_some_and(|r| *r != tag.to_string())
                            || self.slurm.as_ref().is_some_and(|s| s != tag.series()) =>
                    {
                        return Err(UsageError::new(format!(
                            "--from {url} is the directory of release {tag}, not the one --slurm/--release ask for"
                        ))
                        .into());
                    }
                    _ => {}
                }
                Box::new(StoreSource {
                    fetch: Box::new(HttpBase::new(&base)?),
                    dir,
                })
            }
            other => {
                return Err(UsageError::new(format!(
                    "--from {other}: expected github, s3, local or an http(s):// URL"
                ))
                .into());
            }
        })
    }

    /// `--trusted-key FILE`, else the key published beside the packages if
    /// it is the one `--trusted-fingerprint` names or the policy pins.
    fn trusted_key(
        &self,
        policy: &ReleasePolicy,
        source: &dyn Source,
        offer: &Offer,
    ) -> Result<TrustedKey> {
        if let Some(file) = &self.trusted_key {
            let armored = std::fs::read(file)
                .with_context(|| format!("reading --trusted-key {}", file.display()))?;
            return TrustedKey::import(&armored, &file.display().to_string(), None);
        }
        let Some(pinned) = self
            .trusted_fingerprint
            .as_ref()
            .or(policy.signing_key_fingerprint.as_ref())
        else {
            bail!(
                "no release signing key is pinned (releases.signing_key_fingerprint in spack-env/matrix.yaml): \
                 pass --trusted-fingerprint FPR or --trusted-key FILE for the key you trust"
            );
        };
        let Some(armored) = source.public_key(offer)? else {
            bail!(
                "{} publishes no {}: pass --trusted-key FILE",
                source.describe(),
                crate::package::PUBLIC_KEY_FILE
            );
        };
        TrustedKey::import(
            &armored,
            &format!("the key published by {}", source.describe()),
            Some(pinned),
        )
    }
}

/// Every release on offer, newest first, with its packages; the newest
/// release of each series is what `--slurm` takes.
fn list(source: &dyn Source, ask: &Ask<'_>, toolchain: Option<&str>) -> Result<()> {
    let offers: Vec<Offer> = source
        .offers(ask)?
        .into_iter()
        .filter(|o| toolchain.is_none_or(|t| t == o.toolchain))
        .collect();
    if offers.is_empty() {
        outln!(
            "{} offers no packages{}",
            source.describe(),
            match (ask.release, ask.slurm) {
                (Some(tag), _) => format!(" in release {tag}"),
                (None, Some(v)) => format!(" of Slurm {v}"),
                (None, None) => String::new(),
            }
        );
        return Ok(());
    }
    outln!(
        "{:<30} {:<8} {:<14} {:<8} {:<8} {:>10}  files",
        "release",
        "slurm",
        "toolchain",
        "variant",
        "arch",
        "size"
    );
    for o in &offers {
        let parts = o.data_files().len();
        // Fields come from the source: shown, never interpreted by the terminal.
        outln!(
            "{:<30} {:<8} {:<14} {:<8} {:<8} {:>10}  {}",
            printable(&format!(
                "{}{}",
                o.release,
                if o.immutable { " (immutable)" } else { "" }
            )),
            printable(&o.slurm),
            printable(&o.toolchain),
            printable(&o.variant),
            printable(&o.arch),
            size_text(o.size()),
            printable(&if parts > 1 {
                format!("{} in {parts} parts", o.tarball())
            } else {
                o.tarball()
            })
        );
    }
    Ok(())
}

/// Text from a source as a terminal may show it: control characters (ANSI
/// escapes, CR, LF) escaped.
fn printable(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

/// A path flag's value: UTF-8 (it is written into a Lua module), without
/// control characters, and without `.`/`..` (a `new/..` would create `new`).
fn checked_path(flag: &str, path: &Path) -> Result<PathBuf> {
    let Some(text) = path.to_str() else {
        return Err(UsageError::new(format!(
            "{flag} {}: not UTF-8 (the module file names it)",
            path.display()
        ))
        .into());
    };
    if text.chars().any(char::is_control) {
        return Err(UsageError::new(format!(
            "{flag} {}: control characters (a newline, say) are not allowed in it",
            printable(text)
        ))
        .into());
    }
    if path.components().any(|c| {
        matches!(
            c,
            std::path::Component::ParentDir | std::path::Component::CurDir
        )
    }) {
        return Err(UsageError::new(format!(
            "{flag} {text}: give it without `.` or `..` components"
        ))
        .into());
    }
    Ok(path.to_path_buf())
}

fn size_text(size: Option<u64>) -> String {
    match size {
        Some(s) if s >= 1 << 20 => format!("{:.1} MiB", s as f64 / (1 << 20) as f64),
        Some(s) => format!("{s} B"),
        None => "?".into(),
    }
}

fn absolute(p: &Path) -> Result<PathBuf> {
    if p.as_os_str().is_empty() {
        return Err(UsageError::new("an empty path").into());
    }
    Ok(std::path::absolute(p)?)
}

/// The prefix must not exist, or be an empty directory.
fn check_prefix(prefix: &Path) -> Result<()> {
    match std::fs::symlink_metadata(prefix) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("--prefix {}", prefix.display())),
        Ok(m) if m.is_dir() => {
            if std::fs::read_dir(prefix)?.next().is_some() {
                bail!(
                    "--prefix {} exists and is not empty: install into a new directory (or remove it first)",
                    prefix.display()
                );
            }
            Ok(())
        }
        Ok(m) if m.file_type().is_symlink() => bail!(
            "--prefix {} is a symlink (to {}): give the directory itself",
            prefix.display(),
            std::fs::read_link(prefix)
                .map(|t| t.display().to_string())
                .unwrap_or_default()
        ),
        Ok(_) => bail!(
            "--prefix {} exists and is not a directory",
            prefix.display()
        ),
    }
}

pub struct Installed {
    pub files: u64,
    pub bytes: u64,
    pub module: String,
    pub module_root: PathBuf,
}

/// The work directory beside the prefix: resumable pieces and a lock.
struct Work {
    dir: PathBuf,
    _lock: File,
}

impl Work {
    /// Creates the work directory (0700), or reuses one only when this user
    /// made it: a directory someone else can write could hold links to
    /// files a root download would then overwrite. Nothing in it is ever
    /// opened through a link. Staging directories that an interrupted run
    /// left beside the prefix are removed (under the lock).
    fn open(prefix: &Path) -> Result<Work> {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt};
        let parent = prefix
            .parent()
            .context("--prefix has no parent directory")?;
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
        let name = prefix.file_name().context("--prefix has no name")?;
        let dir = parent.join(format!(".{}.download", name.to_string_lossy()));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let m = std::fs::symlink_metadata(&dir)?;
                let me = unsafe { libc::geteuid() };
                if !m.is_dir() || m.uid() != me || m.mode() & 0o077 != 0 {
                    bail!(
                        "refusing the work directory {}: it is {}; remove it, or install with another --prefix",
                        dir.display(),
                        if m.file_type().is_symlink() {
                            "a symlink".to_string()
                        } else if !m.is_dir() {
                            "not a directory".to_string()
                        } else {
                            format!(
                                "owned by uid {} with mode {:o}, not by uid {me} with mode 700",
                                m.uid(),
                                m.mode() & 0o7777
                            )
                        }
                    );
                }
            }
            Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
        }
        let lock_path = dir.join("lock");
        let lock = open_nofollow(&lock_path, false)?;
        if lock.try_lock().is_err() {
            bail!(
                "another download into {} is running (lock {})",
                prefix.display(),
                lock_path.display()
            );
        }
        remove_stale_staging(parent, &name.to_string_lossy());
        Ok(Work { dir, _lock: lock })
    }
}

/// Opens (creating) a file of the work directory, never through a symlink.
fn open_nofollow(path: &Path, read: bool) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(read)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                anyhow!("refusing {}: it is a symlink", path.display())
            } else {
                anyhow::Error::new(e).context(format!("opening {}", path.display()))
            }
        })
}

/// Removes `.<name>.staging-*` directories of this user beside the prefix:
/// unverified data of a run that was killed.
fn remove_stale_staging(parent: &Path, name: &str) {
    use std::os::unix::fs::MetadataExt;
    let prefix = format!(".{name}.staging-");
    let me = unsafe { libc::geteuid() };
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let stale = e.file_name().to_string_lossy().starts_with(&prefix)
            && std::fs::symlink_metadata(e.path()).is_ok_and(|m| m.is_dir() && m.uid() == me);
        if stale && remove_tree(&e.path()) {
            eprintln!("removed {}, left by an interrupted run", e.path().display());
        }
    }
}

/// The parsed `sha256sum` line for `name`.
fn expected_sum(text: &[u8], name: &str, file: &str) -> Result<String> {
    crate::package::output::parse_checksum_line(&String::from_utf8_lossy(text), name, file)
}

/// The package's signed statement of sizes and hashes, checked by the
/// trusted key before anything of the package is written.
fn signed_sizes(
    small: &dyn Fn(&str, &str) -> Result<Vec<u8>>,
    offer: &Offer,
    key: &TrustedKey,
) -> Result<crate::manifest::Sizes> {
    let name = crate::manifest::sizes_file(&offer.stem());
    let text = small(&name, "refusing a package without its signed sizes")?;
    let sig = small(
        &format!("{name}.asc"),
        "refusing a package without its signed sizes",
    )?;
    key.verify(&sig, &mut &text[..], &name)?;
    let sizes: crate::manifest::Sizes = serde_json::from_slice(&text)
        .with_context(|| format!("{name} is not a statement of sizes"))?;
    if sizes.tarball != offer.tarball() {
        bail!(
            "{name} describes {}, not {}",
            sizes.tarball,
            offer.tarball()
        );
    }
    Ok(sizes)
}

/// A reader that refuses to give more than `left` bytes, and remembers
/// that it did.
struct Bounded<R> {
    inner: R,
    left: u64,
    exceeded: bool,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.left {
            self.exceeded = true;
            return Err(std::io::Error::other(OverSize.to_string()));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// The tarball unpacked past its signed size: a refusal whatever else went
/// wrong (the source that sent it also sent a file shorter than stated).
#[derive(Debug)]
struct OverSize;

impl std::fmt::Display for OverSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the tarball unpacks to more than its signed size: refusing it")
    }
}

impl std::error::Error for OverSize {}

/// A failure worth a rerun: the bytes so far are kept, the next run resumes.
#[derive(Debug)]
struct Transport(String);

fn install(
    source: &dyn Source,
    offer: &Offer,
    key: &TrustedKey,
    prefix: &Path,
    modules: Option<&Path>,
) -> Result<Installed> {
    let tarball = offer.tarball();
    let data = offer.data_files();
    if data.is_empty() {
        bail!(
            "{} lists no data file of {} (neither {tarball} nor its parts)",
            source.describe(),
            offer.stem()
        );
    }
    let small = |name: &str, what: &str| -> Result<Vec<u8>> {
        source
            .small(offer, name)?
            .with_context(|| format!("{} has no {name}: {what}", source.describe()))
    };
    let whole_sum = expected_sum(
        &small(&format!("{tarball}.sha256"), "cannot check the download")?,
        &tarball,
        &format!("{tarball}.sha256"),
    )?;
    let mut part_sums = Vec::new();
    if data.len() > 1 {
        for d in &data {
            let f = format!("{d}.sha256");
            part_sums.push(expected_sum(&small(&f, "cannot check the part")?, d, &f)?);
        }
    }
    let signature = small(&format!("{tarball}.asc"), "refusing an unsigned package")?;
    let sizes = signed_sizes(&small, offer, key)?;
    // The signed statement and the checksum files must tell one story.
    let stated: Vec<(String, u64, String)> = if sizes.parts.is_empty() {
        vec![(tarball.clone(), sizes.size, sizes.sha256.clone())]
    } else {
        sizes
            .parts
            .iter()
            .map(|p| (p.name.clone(), p.size, p.sha256.clone()))
            .collect()
    };
    let sums: Vec<&String> = if part_sums.is_empty() {
        vec![&whole_sum]
    } else {
        part_sums.iter().collect()
    };
    let names: Vec<&String> = stated.iter().map(|s| &s.0).collect();
    if names != data.iter().collect::<Vec<_>>() {
        bail!(
            "{} lists {} but the signed statement of sizes names {}: refusing it",
            source.describe(),
            data.join(", "),
            stated
                .iter()
                .map(|s| s.0.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if sizes.sha256 != whole_sum {
        bail!(
            "checksum mismatch: {tarball}.sha256 says {whole_sum}, the signed statement of sizes says {}",
            sizes.sha256
        );
    }
    if let Some((s, sum)) = stated.iter().zip(&sums).find(|(s, sum)| &s.2 != **sum) {
        bail!(
            "checksum mismatch: {}.sha256 says {sum}, the signed statement of sizes says {}",
            s.0,
            s.2
        );
    }

    let expected = Expected {
        data,
        sizes: stated.iter().map(|s| s.1).collect(),
        unpacked: sizes.unpacked,
        whole: whole_sum,
        parts: part_sums,
        signature,
    };
    let work = Work::open(prefix)?;
    let result = install_with(source, offer, key, prefix, modules, &work, &expected);
    // Keep what was fetched only when a rerun can resume from it.
    if result.as_ref().is_err_and(|e| !e.is::<Transport>()) {
        let _ = std::fs::remove_dir_all(&work.dir);
    }
    result
}

/// What the release says the download must be.
struct Expected {
    /// The tarball, or its parts in order.
    data: Vec<String>,
    /// Their signed sizes: never more is fetched.
    sizes: Vec<u64>,
    /// The signed length of the uncompressed tar stream: never more is unpacked.
    unpacked: u64,
    whole: String,
    /// Each part's SHA-256 (empty for a single file).
    parts: Vec<String>,
    signature: Vec<u8>,
}

fn install_with(
    source: &dyn Source,
    offer: &Offer,
    key: &TrustedKey,
    prefix: &Path,
    modules: Option<&Path>,
    work: &Work,
    expected: &Expected,
) -> Result<Installed> {
    let tarball = offer.tarball();
    let data = &expected.data;
    let sig_path = work.dir.join(format!("{tarball}.asc"));
    {
        let mut sig = open_nofollow(&sig_path, false)?;
        sig.set_len(0)?;
        sig.write_all(&expected.signature)?;
    }
    let parent = prefix.parent().expect("checked by Work::open");
    let staging = tempfile::Builder::new()
        .prefix(&format!(
            ".{}.staging-",
            prefix.file_name().unwrap().to_string_lossy()
        ))
        .tempdir_in(parent)
        .with_context(|| format!("creating a staging directory in {}", parent.display()))?;
    let _cleanup = interrupts::remove_on_interrupt(staging.path());
    let tree = staging.path().join("tree");
    std::fs::create_dir(&tree)?;

    let stem = offer.stem();
    let (tar_tx, tar_rx) = sync_channel::<Bytes>(IN_FLIGHT);
    let unpacked_limit = expected.unpacked;
    let unpacker = {
        let tree = tree.clone();
        let stem = stem.clone();
        std::thread::spawn(move || -> Result<extract::Unpacked> {
            // Every gzip member, as GNU tar reads them (`cat a.gz b.gz`).
            let gz = flate2::read::MultiGzDecoder::new(ChannelReader::new(tar_rx));
            let mut gz = Bounded {
                inner: gz,
                left: unpacked_limit,
                exceeded: false,
            };
            let unpacked = extract::unpack(&mut gz, &stem, &tree).and_then(|unpacked| {
                // The rest of the stream (the gzip trailers' CRCs are checked
                // while reading it) may only be tar's zero padding.
                extract::only_padding_left(&mut gz)?;
                Ok(unpacked)
            });
            if gz.exceeded {
                return Err(OverSize.into());
            }
            unpacked
        })
    };
    let mut verification = key.start_verify(&sig_path)?;
    let (gpg_tx, gpg_rx) = sync_channel::<Bytes>(IN_FLIGHT);
    let gpg_stdin = verification.stdin.take().expect("piped");
    let gpg_writer = std::thread::spawn(move || {
        let mut stdin = gpg_stdin;
        for chunk in gpg_rx {
            if stdin.write_all(&chunk).is_err() {
                break;
            }
        }
    });

    let total = offer.size();
    let bar = store::progress(total.unwrap_or(0), &tarball);
    let started = Instant::now();
    let mut whole = Sha256::new();
    let mut fed = Feed {
        to: [tar_tx, gpg_tx],
        whole: &mut whole,
        bar: &bar,
    };
    let mut fetched = Ok(());
    for (i, name) in data.iter().enumerate() {
        let hash_part = !expected.parts.is_empty();
        let size = expected.sizes[i];
        match fetch_file(source, offer, name, size, &work.dir, hash_part, &mut fed) {
            Ok(Some(sha)) if sha != expected.parts[i] => {
                fetched = Err(anyhow!(
                    "checksum mismatch: {name} has SHA-256 {sha}, its .sha256 says {}",
                    expected.parts[i]
                ));
                break;
            }
            Ok(_) => {}
            Err(e) => {
                fetched = Err(e);
                break;
            }
        }
    }
    drop(fed);
    bar.finish_and_clear();
    let unpacked = unpacker
        .join()
        .map_err(|_| anyhow!("the unpacker panicked"))?;
    let _ = gpg_writer.join();
    let signed = verification.finish(&tarball);
    if let Err(e) = &unpacked
        && e.is::<OverSize>()
    {
        bail!("{tarball}: {e}");
    }
    fetched?;
    let sha = hex(&whole.finalize());
    if sha != expected.whole {
        bail!(
            "checksum mismatch: {tarball} has SHA-256 {sha}, {tarball}.sha256 says {}",
            expected.whole
        );
    }
    signed?;
    let unpacked = unpacked?;
    eprintln!(
        "fetched and verified {tarball} in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    // Verified. Point the module at where the package now lives.
    let manifest: crate::manifest::Manifest = serde_json::from_slice(
        &std::fs::read(tree.join("manifest.json")).context("the package has no manifest.json")?,
    )
    .context("the package's manifest.json")?;
    let module_rel = extract::module_path(&manifest.module)?;
    let module_file = tree.join("modules").join(&module_rel);
    let text = std::fs::read_to_string(&module_file)
        .with_context(|| format!("the package has no modules/{module_rel}"))?;
    let module_text = point_module(&text, &prefix.join("view"))
        .with_context(|| format!("modules/{module_rel}"))?;
    extract::write_atomically(&module_file, module_text.as_bytes())?;
    extract::apply_dir_modes(&unpacked.dir_modes)?;
    let external = match modules {
        Some(m) => {
            let target = m.join(&module_rel);
            let dir = target.parent().expect("a module file");
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
            tmp.write_all(module_text.as_bytes())?;
            Some((tmp, target))
        }
        None => None,
    };
    if let Ok(m) = std::fs::symlink_metadata(prefix)
        && m.is_dir()
    {
        // An empty directory made for the install keeps its mode.
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        std::fs::set_permissions(&tree, std::fs::Permissions::from_mode(m.mode() & 0o7777))?;
        std::fs::remove_dir(prefix)
            .with_context(|| format!("--prefix {} is no longer empty", prefix.display()))?;
    }
    std::fs::rename(&tree, prefix)
        .with_context(|| format!("moving the package into {}", prefix.display()))?;
    let module_root = match external {
        Some((tmp, target)) => {
            use std::os::unix::fs::PermissionsExt;
            tmp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o644))?;
            tmp.persist(&target)
                .with_context(|| format!("writing {}", target.display()))?;
            modules.expect("given").to_path_buf()
        }
        None => prefix.join("modules"),
    };
    drop(staging);
    let _ = std::fs::remove_dir_all(&work.dir);
    Ok(Installed {
        files: unpacked.files,
        bytes: unpacked.bytes,
        module: manifest.module,
        module_root,
    })
}

/// Sets the module's built-in prefix (used when `SLURM_INSTALL_PREFIX` is
/// unset) to where the view was installed.
fn point_module(text: &str, view: &Path) -> Result<String> {
    let view = view.to_str().context("the prefix is not UTF-8")?;
    let quoted = format!("\"{}\"", view.replace('\\', "\\\\").replace('"', "\\\""));
    let mut found = false;
    let out: Vec<String> = text
        .lines()
        .map(|l| {
            if !found && l.starts_with("local default_prefix = ") {
                found = true;
                format!("local default_prefix = {quoted}")
            } else {
                l.to_string()
            }
        })
        .collect();
    if !found {
        bail!("no `local default_prefix = …` line to point at the install");
    }
    Ok(out.join("\n") + "\n")
}

/// Where every piece goes: both consumers and the whole's hash.
struct Feed<'a> {
    to: [SyncSender<Bytes>; 2],
    whole: &'a mut Sha256,
    bar: &'a indicatif::ProgressBar,
}

impl Feed<'_> {
    fn piece(&mut self, chunk: Bytes) {
        self.whole.update(&chunk);
        self.bar.inc(chunk.len() as u64);
        // A consumer that stopped has its error to tell; keep hashing.
        let _ = self.to[1].send(chunk.clone());
        let _ = self.to[0].send(chunk);
    }
}

/// One data file: the bytes kept from an earlier run first, then the rest
/// from the source, resumed after a broken transfer. Returns its own SHA-256
/// when `hash_part` (a part of several; a single file's is the whole's).
fn fetch_file(
    source: &dyn Source,
    offer: &Offer,
    name: &str,
    size: u64,
    work: &Path,
    hash_part: bool,
    feed: &mut Feed<'_>,
) -> Result<Option<String>> {
    let path = work.join(name);
    let mut have = std::fs::symlink_metadata(&path)
        .map(|m| m.len())
        .unwrap_or(0);
    if have > size {
        have = 0;
    }
    let mut part = hash_part.then(Sha256::new);
    let file = open_nofollow(&path, true)?;
    file.set_len(have)?;
    let mut kept = &file;
    let mut left = have;
    while left > 0 {
        let mut buf = vec![0u8; (1usize << 20).min(left as usize)];
        kept.read_exact(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        left -= buf.len() as u64;
        if let Some(p) = &mut part {
            p.update(&buf);
        }
        feed.piece(buf.into());
    }
    let mut out = BufWriter::with_capacity(1 << 20, &file);
    let mut attempt = 0;
    loop {
        if size == have {
            break;
        }
        attempt += 1;
        let outcome = (|| -> Result<()> {
            let Some(mut body) = source.open(offer, name, have)? else {
                return Err(Missing(format!("{} has no {name}", source.describe())).into());
            };
            while let Some(chunk) = body.next_chunk()? {
                if have + chunk.len() as u64 > size {
                    return Err(crate::http::Refused(format!(
                        "{} sends more of {name} than the {size} bytes of its signed statement: refusing it",
                        source.describe()
                    ))
                    .into());
                }
                out.write_all(&chunk).map_err(|e| disk_error(e, &path))?;
                have += chunk.len() as u64;
                if let Some(p) = &mut part {
                    p.update(&chunk);
                }
                feed.piece(chunk);
            }
            Ok(())
        })();
        match outcome {
            Ok(()) if size == have => break,
            Ok(()) => {
                if attempt >= ATTEMPTS {
                    out.flush().ok();
                    return Err(Transport(format!(
                        "download of {name} stopped at {have} of {} bytes, {ATTEMPTS} times: run the command again to resume",
                        size
                    ))
                    .into());
                }
            }
            Err(e)
                if e.is::<DiskError>() || e.is::<Missing>() || e.is::<crate::http::Refused>() =>
            {
                return Err(e);
            }
            Err(e) if attempt >= ATTEMPTS => {
                out.flush().ok();
                return Err(e.context(Transport(format!(
                    "download of {name} failed at byte {have}; run the command again to resume"
                ))));
            }
            Err(_) => {}
        }
        std::thread::sleep(Duration::from_millis(200 * u64::from(attempt)));
    }
    out.flush().map_err(|e| disk_error(e, &path))?;
    if have != size {
        bail!("{name} is {have} bytes, its signed statement says {size}");
    }
    Ok(part.map(|p| hex(&p.finalize())))
}

/// Failures that another attempt would not mend.
#[derive(Debug)]
struct DiskError(String);

#[derive(Debug)]
struct Missing(String);

macro_rules! message_error {
    ($($t:ty),*) => {$(
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl std::error::Error for $t {}
    )*};
}
message_error!(DiskError, Missing, Transport);

fn disk_error(e: std::io::Error, path: &Path) -> anyhow::Error {
    let what = if e.kind() == std::io::ErrorKind::StorageFull {
        "disk full"
    } else {
        "cannot write"
    };
    DiskError(format!("{what}: {}: {e}", path.display())).into()
}

/// The pieces as a byte stream, for the gzip decoder.
struct ChannelReader {
    rx: Receiver<Bytes>,
    current: Bytes,
}

impl ChannelReader {
    fn new(rx: Receiver<Bytes>) -> ChannelReader {
        ChannelReader {
            rx,
            current: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.recv() {
                Ok(next) => self.current = next,
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_module_points_at_the_installed_view() {
        let text =
            "local name = \"slurm/25.11-noble\"\nlocal default_prefix = \"/opt/slurm/view\"\nx\n";
        let out = point_module(text, Path::new("/srv/a \"b\"/view")).unwrap();
        assert!(
            out.contains("local default_prefix = \"/srv/a \\\"b\\\"/view\"\n"),
            "{out}"
        );
        assert!(point_module("nothing", Path::new("/x")).is_err());
    }

    #[test]
    fn checksum_lines_must_name_the_file() {
        let sum = "a".repeat(64);
        assert_eq!(
            expected_sum(
                format!("{sum}  f.tar.gz\n").as_bytes(),
                "f.tar.gz",
                "f.sha256"
            )
            .unwrap(),
            sum
        );
        assert!(expected_sum(format!("{sum}  other\n").as_bytes(), "f.tar.gz", "x").is_err());
        assert!(expected_sum(b"garbage", "f.tar.gz", "x").is_err());
    }
}

/// Ctrl-C and SIGTERM during a download remove the staging directory of
/// unverified data (the resumable pieces stay for the next run), then exit
/// as the signal would: 130 or 143. The signals are blocked in every thread
/// and taken by one thread with `sigwait`, so no handler runs at an unsafe
/// moment.
mod interrupts {
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    static STAGING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

    /// Call before any other thread starts (threads inherit the mask).
    pub fn catch() {
        // SAFETY: plain libc calls on a local, initialised signal set.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGTERM);
            if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
                return;
            }
            std::thread::spawn(move || {
                let mut sig: libc::c_int = 0;
                if libc::sigwait(&set, &mut sig) == 0 {
                    let dirs = STAGING.lock().map(|d| d.clone()).unwrap_or_default();
                    let removed = dirs.iter().filter(|d| super::remove_tree(d)).count();
                    eprintln!(
                        "interrupted{}; run the command again to resume",
                        if removed > 0 {
                            ": unverified data removed"
                        } else {
                            ""
                        }
                    );
                    std::process::exit(128 + sig);
                }
            });
        }
    }

    /// Registers `dir` for removal on an interrupt, until the guard drops.
    pub fn remove_on_interrupt(dir: &Path) -> Guard {
        if let Ok(mut d) = STAGING.lock() {
            d.push(dir.to_path_buf());
        }
        Guard(dir.to_path_buf())
    }

    pub struct Guard(PathBuf);

    impl Drop for Guard {
        fn drop(&mut self) {
            if let Ok(mut d) = STAGING.lock() {
                d.retain(|p| p != &self.0);
            }
        }
    }
}

/// Removes a tree whose directories may be read-only (an unpacked package's).
fn remove_tree(dir: &Path) -> bool {
    for d in walkdir::WalkDir::new(dir).into_iter().flatten() {
        if d.file_type().is_dir() {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700));
        }
    }
    std::fs::remove_dir_all(dir).is_ok()
}
