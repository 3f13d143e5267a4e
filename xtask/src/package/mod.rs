//! Packaging: a built Slurm view becomes the release artifact admins download
//! (tarball with view, module and manifest; checksum; signature; SBOM), read,
//! compressed, hashed and signed in one streaming pass.

pub mod output;
pub mod pgzip;
pub mod tarball;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::checksum::checksum_line;
use crate::manifest::{self, CellInfo, Manifest, ToolInfo};
use crate::matrix::Cell;
use crate::project::Project;
use crate::schema::{PUBLIC_KEY_FILE, files};
use crate::sign::Keyring;
use crate::spack_env::EnvironmentData;
use crate::{gha, module};
use output::{Sink, Staged};
use tarball::Entry;

/// GitHub refuses release assets of 2 GiB and more; parts stay well under.
pub const DEFAULT_SPLIT: u64 = 2_000_000_000;

/// Compression threads by default: one per core.
pub fn threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// The stem of a cell's package (`schema::release::build_stem`).
pub fn package_stem(cell: &Cell<'_>, arch: &str, rehearsal: bool) -> String {
    let release = cell.release.expect("packages exist for slurm cells");
    crate::schema::release::build_stem(
        &release.version,
        &cell.toolchain.name,
        cell.variant.as_str(),
        arch,
        rehearsal,
    )
}

pub struct Options<'a> {
    pub view: &'a Path,
    pub lock: &'a Path,
    pub out: &'a Path,
    pub arch: String,
    pub fingerprint: Option<String>,
    pub split_size: u64,
    pub threads: usize,
    pub keyring: Option<&'a Keyring>,
    /// A rehearsal's fake view: the package is named as one (never published).
    pub rehearsal: bool,
}

/// What a package run wrote, by role.
pub struct Package {
    pub tarball: String,
    pub sha256: String,
    pub size: u64,
    pub parts: Vec<(String, String, u64)>,
    pub files: Vec<PathBuf>,
}

/// Everything that goes into the archive besides the view's own files.
fn plan_entries(
    project: &Project,
    cell: &Cell<'_>,
    stem: &str,
    manifest: &Manifest,
    view: &Path,
) -> Result<Vec<Entry>> {
    let mut entries = vec![
        Entry::Dir {
            path: format!("{stem}/"),
            mode: 0o755,
        },
        Entry::Dir {
            path: format!("{stem}/modules/"),
            mode: 0o755,
        },
        Entry::Dir {
            path: format!("{stem}/modules/slurm/"),
            mode: 0o755,
        },
        Entry::Bytes {
            path: format!("{stem}/modules/{}", module::module_file(cell)),
            mode: 0o644,
            data: module::render(&project.module_template, cell)?.into_bytes(),
        },
        Entry::Bytes {
            path: format!("{stem}/manifest.json"),
            mode: 0o644,
            data: (serde_json::to_string_pretty(manifest)? + "\n").into_bytes(),
        },
    ];
    entries.extend(tarball::scan_view(view, &format!("{stem}/view"))?);
    Ok(tarball::in_archive_order(entries))
}

pub fn build_manifest(
    data: &EnvironmentData,
    cell: &Cell<'_>,
    opts: &Options<'_>,
) -> Result<Manifest> {
    let release = cell.release.expect("packages exist for slurm cells");
    let contents = manifest::read_lock(opts.lock, &data.build_only)?;
    if !contents.packages.iter().any(|p| p.name == "slurm") {
        bail!(
            "{} has no slurm package: is it the slurm stage's lock?",
            opts.lock.display()
        );
    }
    Ok(Manifest {
        schema: 1,
        name: package_stem(cell, &opts.arch, opts.rehearsal),
        cell: CellInfo {
            slurm: release.version.clone(),
            spack_version: release.spack_version.clone(),
            toolchain: cell.toolchain.name.clone(),
            os: cell.toolchain.os.clone(),
            variant: cell.variant.to_string(),
            arch: opts.arch.clone(),
        },
        module: module::module_name(cell),
        fingerprint: opts.fingerprint.clone(),
        build_time: build_time(opts.lock)?,
        tool: ToolInfo {
            name: "slurm-factory".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        },
        packages: contents.packages,
        externals: contents.externals,
    })
}

/// `SOURCE_DATE_EPOCH` if set, else when Spack wrote the lock: the same input
/// always gives the same manifest.
fn build_time(lock: &Path) -> Result<String> {
    let time = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => {
            let secs: u64 = v
                .trim()
                .parse()
                .context("SOURCE_DATE_EPOCH is not a number of seconds")?;
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs)
        }
        Err(_) => std::fs::metadata(lock)?.modified()?,
    };
    Ok(humantime::format_rfc3339_seconds(time).to_string())
}

pub fn package(project: &Project, cell: &Cell<'_>, opts: &Options<'_>) -> Result<Package> {
    let data = &project.env;
    let stem = package_stem(cell, &opts.arch, opts.rehearsal);
    let tarball_name = files::tarball(&stem);
    let manifest = build_manifest(data, cell, opts)?;
    let entries = plan_entries(project, cell, &stem, &manifest, opts.view)?;

    std::fs::create_dir_all(opts.out)
        .with_context(|| format!("creating {}", opts.out.display()))?;
    // Every file of the package, staged together and renamed together.
    let mut staged = Staged::default();
    let signer = match opts.keyring {
        Some(k) => {
            let asc = staged.path(opts.out, &files::signature(&tarball_name));
            Some(
                k.detached_sign(&asc)?
                    .spawn()
                    .context("starting gpg to sign")?,
            )
        }
        None => None,
    };
    let sink = Sink::new(opts.out, &tarball_name, opts.split_size, signer, staged)?;
    let gz = pgzip::ParGzWriter::new(sink, 6, opts.threads);
    let counted = tarball::write_tar(Counted { inner: gz, len: 0 }, &entries)?;
    let unpacked = counted.len;
    let sink = counted.inner.finish().context("compressing the package")?;
    let (stream, mut staged) = sink.finish()?;
    let sizes = manifest::Sizes {
        schema: 1,
        tarball: tarball_name.clone(),
        size: stream.size,
        sha256: stream.sha256.clone(),
        parts: if stream.parts.len() > 1 {
            stream
                .parts
                .iter()
                .map(|(name, sha256, size)| manifest::PartSize {
                    name: name.clone(),
                    size: *size,
                    sha256: sha256.clone(),
                })
                .collect()
        } else {
            Vec::new()
        },
        unpacked,
    };
    let sizes_name = files::sizes(&stem);
    let sizes_text = serde_json::to_string_pretty(&sizes)? + "\n";
    staged.write(opts.out, &sizes_name, sizes_text.as_bytes())?;
    if let Some(k) = opts.keyring {
        let asc = staged.path(opts.out, &files::signature(&sizes_name));
        k.sign_bytes(&asc, sizes_text.as_bytes())?;
    }

    staged.write(
        opts.out,
        &files::checksum(&tarball_name),
        checksum_line(&stream.sha256, &tarball_name).as_bytes(),
    )?;
    if stream.parts.len() > 1 {
        for (part, sha, _) in &stream.parts {
            staged.write(
                opts.out,
                &files::checksum(part),
                checksum_line(sha, part).as_bytes(),
            )?;
        }
    }
    staged.write(
        opts.out,
        &files::manifest(&stem),
        (serde_json::to_string_pretty(&manifest)? + "\n").as_bytes(),
    )?;
    staged.write(
        opts.out,
        &files::sbom(&stem),
        (serde_json::to_string_pretty(&manifest.spdx())? + "\n").as_bytes(),
    )?;
    if let Some(k) = opts.keyring {
        staged.write(opts.out, PUBLIC_KEY_FILE, k.export_public()?.as_bytes())?;
    }
    let mut files = staged.commit()?;
    files.sort();
    Ok(Package {
        tarball: tarball_name,
        sha256: stream.sha256,
        size: stream.size,
        parts: stream.parts,
        files,
    })
}

/// A writer that counts what goes through it.
struct Counted<W> {
    inner: W,
    len: u64,
}

impl<W: std::io::Write> std::io::Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Parses `2000000000`, `512K`, `64M`, `2G` (binary multiples).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let (digits, mult) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("'{s}' is not a size like 2000000000, 512K, 64M or 2G"))?;
    match n.checked_mul(mult) {
        Some(0) | None => Err(format!("'{s}' must be between 1 byte and 16 EiB")),
        Some(v) => Ok(v),
    }
}

/// `package`: one cell's view packaged (or, for a dry run, what would be).
pub struct Job<'m> {
    pub cell: Cell<'m>,
    pub view: PathBuf,
    pub lock: PathBuf,
    pub out: PathBuf,
    pub arch: String,
    pub fingerprint: Option<String>,
    pub split_size: u64,
    pub threads: usize,
    pub keyring: Option<Keyring>,
    pub dry_run: bool,
}

pub fn run(project: &Project, job: &Job<'_>) -> Result<()> {
    let (cell, keyring) = (job.cell, &job.keyring);
    let opts = Options {
        view: &job.view,
        lock: &job.lock,
        out: &job.out,
        arch: job.arch.clone(),
        fingerprint: job.fingerprint.clone(),
        split_size: job.split_size,
        threads: job.threads,
        keyring: keyring.as_ref(),
        rehearsal: false,
    };
    if job.dry_run {
        let manifest = build_manifest(&project.env, &cell, &opts)?;
        let entries = plan_entries(project, &cell, &manifest.name, &manifest, &job.view)?;
        outln!(
            "would package {} ({} archive entries, {} packages from {})",
            cell.id(),
            entries.len(),
            manifest.packages.len(),
            job.lock.display()
        );
        outln!("would write into {}:", job.out.display());
        let stem = &manifest.name;
        let tarball = files::tarball(stem);
        outln!(
            "  {tarball} (split into parts above {} bytes)",
            job.split_size
        );
        for name in [
            files::checksum(&tarball),
            files::sizes(stem),
            files::manifest(stem),
            files::sbom(stem),
        ] {
            outln!("  {name}");
        }
        if let Some(k) = &keyring {
            for signed in [tarball, files::sizes(stem)] {
                outln!(
                    "  {}  (gpg --armor --detach-sign --local-user {})",
                    files::signature(&signed),
                    k.fingerprint
                );
            }
            outln!("  {PUBLIC_KEY_FILE}");
        }
        return Ok(());
    }
    let _group = gha::Group::new(&format!("Package {}", cell.id()));
    let started = std::time::Instant::now();
    let pkg = package(project, &cell, &opts).with_context(|| format!("packaging {}", cell.id()))?;
    outln!(
        "packaged {} in {:.1}s: {} ({:.1} MiB, sha256 {}){}",
        cell.id(),
        started.elapsed().as_secs_f64(),
        pkg.tarball,
        pkg.size as f64 / (1 << 20) as f64,
        pkg.sha256,
        if pkg.parts.len() > 1 {
            format!(", {} parts", pkg.parts.len())
        } else {
            String::new()
        }
    );
    for f in &pkg.files {
        outln!("  {}", f.display());
    }
    gha::append_summary(&format!(
        "| `{}` | {} | {:.1} MiB | `{}` |\n",
        cell.id(),
        pkg.tarball,
        pkg.size as f64 / (1 << 20) as f64,
        pkg.sha256
    ))?;
    Ok(())
}
