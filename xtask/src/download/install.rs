//! Installing one offer: the signed statements checked first, then the data
//! streamed once through the hash, gpg and the unpacker into a staging
//! directory beside the prefix, which becomes the prefix only when all agree.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::fetch::{ChannelReader, Feed, fetch_file};
use super::source::{Offer, Source};
use super::{IN_FLIGHT, extract, interrupts, remove_tree};
use crate::checksum::hex;
use crate::sign::TrustedKey;
use crate::store;

/// The prefix must not exist, or be an empty directory.
pub(super) fn check_prefix(prefix: &Path) -> Result<()> {
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
pub(super) fn open_nofollow(path: &Path, read: bool) -> Result<File> {
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
    crate::checksum::parse_checksum_line(&String::from_utf8_lossy(text), name, file)
}

/// The package's signed statement of sizes and hashes, checked by the
/// trusted key before anything of the package is written.
fn signed_sizes(
    small: &dyn Fn(&str, &str) -> Result<Vec<u8>>,
    offer: &Offer,
    key: &TrustedKey,
) -> Result<crate::manifest::Sizes> {
    let name = crate::schema::files::sizes(&offer.stem());
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
pub(super) struct Transport(pub(super) String);

pub(super) fn install(
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
