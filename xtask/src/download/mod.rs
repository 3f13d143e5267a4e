//! `download`: an admin's one command from a release to a working, verified
//! Slurm. The artifact streams once through everything: each piece is kept
//! on disk (so an interrupted download resumes), hashed, fed to `gpg
//! --verify` and unpacked into a staging directory beside the prefix, at the
//! same time. Only when the checksums and the signature by the trusted key
//! all agree is the staging directory renamed into the prefix; on any
//! failure the prefix is exactly as it was.

pub mod extract;
mod fetch;
mod github;
mod install;
pub mod source;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::error::UsageError;
use crate::flags::DownloadCmd;
use crate::schema::ReleasePolicy;
use crate::schema::release::ReleaseTag;
use crate::sign::TrustedKey;
use github::GitHubSource;
use source::{Ask, HttpBase, Offer, Source, StoreSource};

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
        install::check_prefix(&prefix)?;
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
        let installed =
            install::install(source.as_ref(), offer, &key, &prefix, modules.as_deref())?;
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
            (
                "--bucket (or SLURM_FACTORY_BUCKET)",
                self.store.bucket.bucket.is_some(),
                "s3",
            ),
            (
                "--bucket-prefix (or SLURM_FACTORY_BUCKET_PREFIX)",
                self.store.bucket.bucket_prefix.is_some(),
                "s3",
            ),
            ("--store-dir", self.store.store_dir.is_some(), "local"),
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
        if source_kind == "s3" && self.store.bucket.bucket.is_none() {
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
                fetch: Box::new(self.store.s3()?),
                dir: None,
            }),
            "local" => {
                let store = match (root, &self.store.store_dir) {
                    (Some(root), _) => self.store.local(root),
                    (None, Some(_)) => self.store.local(Path::new(".")),
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
                crate::schema::PUBLIC_KEY_FILE
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
