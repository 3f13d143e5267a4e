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
use crate::schema::ReleasePolicy;
use crate::sign::TrustedKey;
use crate::store::StoreUrl;
use crate::store::local::LocalStore;
use crate::store::s3::S3Store;
use github::GitHubSource;
use source::{Ask, HttpBase, Offer, Source, StoreSource};

/// Pieces in flight to each consumer (gpg, the unpacker): bounded memory.
const IN_FLIGHT: usize = 64;
/// Attempts per file when the transfer breaks; each resumes where it stopped.
const ATTEMPTS: u32 = 5;

/// What `download` is asked: where from, which package, and what to do.
pub struct Request {
    pub from: Origin,
    /// The Slurm series (`--release` names one too).
    pub slurm: Option<String>,
    pub release: Option<String>,
    pub toolchain: Option<String>,
    pub action: Action,
}

/// Where packages come from.
pub enum Origin {
    /// A repository's GitHub Releases (`owner/name`).
    GitHub { repo: String },
    /// A store in a bucket (never `StoreUrl::Local`: that is `LocalStore`).
    Store(StoreUrl),
    /// A local directory store.
    LocalStore(PathBuf),
    /// A store served over HTTP(S), or one release directory of it.
    Url {
        base: String,
        dir: Option<source::ReleaseDir>,
    },
}

impl Origin {
    /// The source, made only when the download runs (a GitHub client starts
    /// threads, which must inherit the interrupt handling's signal mask).
    fn open(&self) -> Result<Box<dyn Source>> {
        Ok(match self {
            Origin::GitHub { repo } => Box::new(GitHubSource::new(repo)?),
            Origin::Store(StoreUrl::Bucket { bucket, prefix }) => Box::new(StoreSource {
                fetch: Box::new(S3Store::new(bucket, prefix)?),
                dir: None,
            }),
            Origin::Store(StoreUrl::Local) => bail!("a bucket store needs a bucket"),
            Origin::LocalStore(root) => Box::new(StoreSource {
                fetch: Box::new(LocalStore { root: root.clone() }),
                dir: None,
            }),
            Origin::Url { base, dir } => Box::new(StoreSource {
                fetch: Box::new(HttpBase::new(base)?),
                dir: dir.clone(),
            }),
        })
    }
}

pub enum Action {
    /// List what the source offers (of the toolchain, if one is given).
    List,
    Install(Install),
}

/// One package into a prefix. Its Slurm series and toolchain are known.
pub struct Install {
    pub variant: String,
    pub arch: String,
    /// Absolute, checked: UTF-8, no control characters, no `.`/`..`.
    pub prefix: PathBuf,
    /// Where the module goes besides the prefix's own `modules/`.
    pub modules: Option<PathBuf>,
    /// The key the package must be signed by.
    pub trust: Trust,
    pub dry_run: bool,
}

/// Which key a package must be signed by.
pub enum Trust {
    /// An armored public key file the admin trusts.
    KeyFile(PathBuf),
    /// The key published beside the packages, if it has this fingerprint.
    Fingerprint(String),
    /// None is pinned or given: an install fails with this message (a dry
    /// run needs no key).
    Missing(&'static str),
}

/// `download`: lists what a source offers, or installs one package from it.
/// `policy` is the release policy of the checkout or of the admins' binary.
pub fn run(req: Request, policy: &ReleasePolicy) -> Result<()> {
    if matches!(&req.action, Action::Install(i) if !i.dry_run) {
        interrupts::catch();
    }
    let source = req.from.open()?;
    let source = source.as_ref();
    check_names(&req, source, policy)?;
    let ask = |want| Ask {
        slurm: req.slurm.as_deref(),
        release: req.release.as_deref(),
        want,
    };
    let inst = match &req.action {
        Action::List => return list(source, &ask(None), req.toolchain.as_deref()),
        Action::Install(inst) => inst,
    };
    let (Some(slurm), Some(toolchain)) = (&req.slurm, &req.toolchain) else {
        bail!("an install names its Slurm series and toolchain");
    };
    let want = Offer {
        slurm: slurm.clone(),
        toolchain: toolchain.clone(),
        variant: inst.variant.clone(),
        arch: inst.arch.clone(),
        files: Default::default(),
        release: String::new(),
        dir: String::new(),
        immutable: false,
    };
    let prefix = &inst.prefix;
    install::check_prefix(prefix)?;
    let offers = source.offers(&ask(Some(&want)))?;
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
            match &req.release {
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
    let modules = inst.modules.as_deref();
    if inst.dry_run {
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
        if let Some(m) = modules {
            outln!("  module into {}", m.display());
        }
        return Ok(());
    }
    let key = trusted_key(&inst.trust, source, offer)?;
    let installed = install::install(source, offer, &key, prefix, modules)?;
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

/// A `--slurm` or `--toolchain` this build does not know may still be on
/// offer (a version the matrix has since dropped): the source decides.
/// A name neither knows is a usage error naming the valid ones.
fn check_names(req: &Request, source: &dyn Source, policy: &ReleasePolicy) -> Result<()> {
    type Field = fn(&Offer) -> &str;
    let asked: [(&str, Option<&String>, &[String], Field); 2] = [
        (
            "Slurm version",
            req.slurm.as_ref(),
            &policy.slurm_versions,
            |o| &o.slurm,
        ),
        (
            "toolchain",
            req.toolchain.as_ref(),
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

/// The trusted key: a file the admin gave, else the key published beside the
/// packages if it is the one pinned.
fn trusted_key(trust: &Trust, source: &dyn Source, offer: &Offer) -> Result<TrustedKey> {
    let pinned = match trust {
        Trust::KeyFile(file) => {
            let armored = std::fs::read(file)
                .with_context(|| format!("reading the trusted key {}", file.display()))?;
            return TrustedKey::import(&armored, &file.display().to_string(), None);
        }
        Trust::Fingerprint(f) => f,
        Trust::Missing(why) => bail!("{why}"),
    };
    let Some(armored) = source.public_key(offer)? else {
        bail!(
            "{} publishes no {}: give the key you trust as a file",
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
pub fn printable(text: &str) -> String {
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

fn size_text(size: Option<u64>) -> String {
    match size {
        Some(s) if s >= 1 << 20 => format!("{:.1} MiB", s as f64 / (1 << 20) as f64),
        Some(s) => format!("{s} B"),
        None => "?".into(),
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
