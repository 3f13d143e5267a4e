//! `admin-binary`: the admins' `slurm-factory` executable, built once per
//! release run for the oldest glibc we support, with its checksum and a
//! detached signature by the release key, ready for `publish`.
//!
//! The build is a plan first (the argv `--dry-run` prints), then executed.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::checksum::checksum_line;
use crate::gha;
use crate::matrix::Matrix;
use crate::process;
use crate::schema::admin_binary::{self, BUILD_TOOLS, TARGET, TARGET_DIR};
use crate::sign::Keyring;
use crate::store::local::sha256_file;

/// The executable's name in the crate (its `[[bin]]`).
const BIN: &str = "slurm-factory";

/// What one build runs and writes.
struct Plan {
    argv: Vec<String>,
    /// Where cargo leaves the executable.
    built: PathBuf,
    /// The released file, and its `.sha256` and `.asc` beside it.
    out: PathBuf,
}

fn plan(root: &Path, arch: &str, out_dir: &Path) -> Result<Plan> {
    if arch != "x86_64" {
        bail!("the admins' binary is built for x86_64 Linux only, not the matrix's arch {arch}");
    }
    let target_dir = root.join(TARGET_DIR);
    // The glibc version is a suffix for zig, not part of the target triple.
    let triple = TARGET.split_once(".2.").map_or(TARGET, |(t, _)| t);
    let argv = [
        "cargo",
        "zigbuild",
        "--release",
        "--locked",
        // Symbols off: a smaller download; panics still name their place.
        "--config",
        "profile.release.strip=true",
        "--package",
        "xtask",
        "--bin",
        BIN,
        "--target",
        TARGET,
        "--target-dir",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([target_dir.display().to_string()])
    .collect();
    Ok(Plan {
        argv,
        built: target_dir.join(triple).join("release").join(BIN),
        out: out_dir.join(admin_binary::file_name(arch)),
    })
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// `admin-binary`: where the executable goes, and how it is signed.
pub struct Job {
    pub out: PathBuf,
    /// The release key; `None` when unsigned, or for a dry run given no key.
    pub keyring: Option<Keyring>,
    pub unsigned: bool,
    pub dry_run: bool,
}

pub fn run(root: &Path, matrix: &Matrix, job: &Job) -> Result<()> {
    let keyring = &job.keyring;
    let plan = plan(root, &matrix.arch, &job.out)?;
    if job.dry_run {
        outln!("dry run: in {}", root.display());
        outln!("  {}", plan.argv.join(" "));
        outln!("  copy {} -> {}", plan.built.display(), plan.out.display());
        outln!("  write {}", sibling(&plan.out, ".sha256").display());
        if keyring.is_some() || !job.unsigned {
            outln!("  sign  {}", sibling(&plan.out, ".asc").display());
        }
        return Ok(());
    }
    let sh = process::shell()?;
    if process::output(process::cmd(&sh, &["cargo-zigbuild", "--version"])).is_err() {
        bail!(
            "cargo-zigbuild is not installed: pip install {} (or run .ci/install)",
            BUILD_TOOLS.join(" ")
        );
    }
    {
        let _g = gha::Group::new(&format!("Build {BIN} for {TARGET}"));
        let _in_root = sh.push_dir(root);
        let code = process::status(process::cmd(&sh, &plan.argv))?;
        if code != 0 {
            bail!("{} failed (exit {code})", plan.argv.join(" "));
        }
    }
    std::fs::create_dir_all(&job.out).with_context(|| format!("creating {}", job.out.display()))?;
    // Into place by rename: a reader never finds half an executable.
    let partial = sibling(&plan.out, ".partial");
    std::fs::copy(&plan.built, &partial)
        .with_context(|| format!("copying {}", plan.built.display()))?;
    std::fs::rename(&partial, &plan.out)?;
    let name = plan.out.file_name().unwrap().to_string_lossy().into_owned();
    let sha = sha256_file(&plan.out)?;
    std::fs::write(sibling(&plan.out, ".sha256"), checksum_line(&sha, &name))?;
    let asc = sibling(&plan.out, ".asc");
    let _ = std::fs::remove_file(&asc);
    if let Some(k) = keyring {
        k.sign_reader(&asc, std::fs::File::open(&plan.out)?)
            .with_context(|| format!("signing {name}"))?;
    }
    let size = std::fs::metadata(&plan.out)?.len();
    outln!(
        "{}: {:.1} MiB, sha256 {sha}{}",
        plan.out.display(),
        size as f64 / (1 << 20) as f64,
        match &keyring {
            Some(k) => format!(", signed by {}", k.fingerprint),
            None => ", unsigned".into(),
        }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_targets_glibc_2_28_in_its_own_target_directory() {
        let p = plan(Path::new("/src"), "x86_64", Path::new("dist")).unwrap();
        assert_eq!(
            p.argv.join(" "),
            "cargo zigbuild --release --locked --config profile.release.strip=true \
             --package xtask --bin slurm-factory \
             --target x86_64-unknown-linux-gnu.2.28 --target-dir /src/target/admin-binary"
        );
        assert_eq!(
            p.built,
            Path::new("/src/target/admin-binary/x86_64-unknown-linux-gnu/release/slurm-factory")
        );
        assert_eq!(p.out, Path::new("dist/slurm-factory-x86_64-linux"));
        assert!(plan(Path::new("/src"), "aarch64", Path::new("dist")).is_err());
    }

    #[test]
    fn only_the_binary_and_its_checksum_and_signature_are_release_files() {
        use admin_binary::is_release_file;
        for yes in [
            "slurm-factory-x86_64-linux",
            "slurm-factory-x86_64-linux.sha256",
            "slurm-factory-x86_64-linux.asc",
        ] {
            assert!(is_release_file(yes), "{yes}");
        }
        for no in [
            "slurm-factory-x86_64-linux.partial",
            "slurm-factory--linux",
            "slurm-24.11-jammy-cpu-x86_64.tar.gz",
            "slurm-factory.pub.asc",
        ] {
            assert!(!is_release_file(no), "{no}");
        }
    }
}
