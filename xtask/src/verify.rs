//! Verification of a package before it is published: extract it to an unusual
//! prefix in a fresh container of its OS's base image (nothing from the build
//! image), then prove it runs there: versions, library resolution (the
//! relocatability proof), no build root left in text files, `slurmd -C`, and
//! the GPU plugin for GPU cells.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::container::{self, EngineKind, EnvVar, Run, mount};
use crate::error::UsageError;
use crate::gha;
use crate::manifest::Manifest;
use crate::matrix::{Family, Matrix, Variant};
use crate::schema::files;
use crate::schema::paths;

/// Where the package is extracted in the container: not where it was built.
pub const PREFIX: &str = "/srv/relocated/slurm";

/// Libraries a package may take from the OS: the C library and loader, the
/// GCC support library, and the system interfaces that must be the host's
/// own (PAM with its audit helpers, udev/systemd). Everything else must
/// resolve inside the prefix.
fn os_allow_list(family: Family) -> Vec<&'static str> {
    const COMMON: &[&str] = &[
        "linux-vdso.so",
        "ld-linux-x86-64.so",
        "ld-linux-aarch64.so",
        "libc.so",
        "libm.so",
        "libpthread.so",
        "libdl.so",
        "librt.so",
        "libresolv.so",
        "libutil.so",
        "libnss_",
        "libanl.so",
        "libmvec.so",
        "libgcc_s.so",
        "libpam.so",
        "libpam_misc.so",
        "libaudit.so",
        "libcap-ng.so",
        "libudev.so",
        "libsystemd.so",
    ];
    // The families share glibc's sonames; they differ in libxcrypt's.
    let crypt: &[&str] = match family {
        Family::Apt => &["libcrypt.so.1"],
        Family::Dnf => &["libcrypt.so.1", "libcrypt.so.2"],
    };
    COMMON.iter().chain(crypt).copied().collect()
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    Skip,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub tarball: String,
    pub cell: String,
    pub image: String,
    pub prefix: String,
    pub passed: bool,
    pub checks: Vec<Check>,
}

/// The package's manifest, read from the start of its tar stream (it sorts
/// first), joining parts when the tarball was split.
pub fn read_manifest(tarball: &Path) -> Result<Manifest> {
    let reader = open_joined(tarball)?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(reader));
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.to_string_lossy().into_owned();
        if path.ends_with("/manifest.json") && path.matches('/').count() == 1 {
            let mut text = String::new();
            entry.read_to_string(&mut text)?;
            return serde_json::from_str(&text)
                .with_context(|| format!("{path} in {}", tarball.display()));
        }
    }
    bail!(
        "{} has no manifest.json: is it a Slurm Factory package?",
        tarball.display()
    )
}

/// The tarball, or its `.part-NNN` files in order, as one stream.
fn open_joined(tarball: &Path) -> Result<Box<dyn Read>> {
    if tarball.is_file() {
        return Ok(Box::new(std::fs::File::open(tarball)?));
    }
    let parts = parts_of(tarball)?;
    if parts.is_empty() {
        bail!("{} does not exist (nor its .part-000)", tarball.display());
    }
    let mut reader: Box<dyn Read> = Box::new(std::io::empty());
    for p in parts {
        reader = Box::new(reader.chain(std::fs::File::open(p)?));
    }
    Ok(reader)
}

fn parts_of(tarball: &Path) -> Result<Vec<PathBuf>> {
    let mut parts = Vec::new();
    for i in 0.. {
        let p = PathBuf::from(files::part(&tarball.display().to_string(), i));
        if !p.is_file() {
            break;
        }
        parts.push(p);
    }
    Ok(parts)
}

/// The script run in the clean container. It prints one `CHECK` line per
/// check; the toolkit turns them into the report.
fn script(m: &Manifest, family: Family, tarball_name: &str, split: bool, gpus: bool) -> String {
    let allow: Vec<String> = os_allow_list(family)
        .iter()
        .map(|l| l.replace('.', "\\."))
        .collect();
    let allow = allow.join("|");
    let extract = if split {
        format!("cat /verify/in/{tarball_name}.part-* | tar -xzf - -C \"$P\" --strip-components=1")
    } else {
        format!("tar -xzf /verify/in/{tarball_name} -C \"$P\" --strip-components=1")
    };
    let install_lmod = match family {
        Family::Apt => {
            "export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq --no-install-recommends lmod"
        }
        Family::Dnf => "(dnf install -y -q epel-release || true) && dnf install -y -q Lmod",
    };
    let gpu = m.cell.variant == Variant::Gpu.as_str();
    let version = &m.cell.slurm;
    let module = &m.module;
    let build_root = paths::INSTALL_ROOT;
    let mut s = format!(
        r#"#!/bin/bash
# Verify {name} relocated to {PREFIX}, in a clean container of its OS.
set -uo pipefail
P={PREFIX}
VIEW=$P/view
check() {{ printf 'CHECK\t%s\t%s\t%s\n' "$1" "$2" "$3"; }}
mkdir -p "$P"
if ! {extract}; then check extract fail "the tarball does not extract"; exit 0; fi
check extract pass "extracted to $P"

# Relocatability: every ELF file resolves its libraries inside the prefix or
# to the OS's own base libraries. Checked before anything else is installed,
# with a clean loader environment.
problems=()
count=0
while IFS= read -r -d '' f; do
  [ "$(head -c 4 "$f" | od -An -c | tr -d ' \n')" = '177ELF' ] || continue
  count=$((count + 1))
  rel=${{f#"$VIEW"/}}
  while IFS= read -r line; do
    lib=$(printf '%s' "$line" | awk '{{print $1}}')
    case "$line" in
      *"=> not found"*)
        if [ {gpu} = true ] && [[ "$lib" == libnvidia-ml.so* ]]; then continue; fi
        problems+=("$rel: $lib not found") ;;
      *"=> /"*)
        path=$(printf '%s' "$line" | sed -E 's/.*=> ([^ ]+).*/\1/')
        case "$path" in "$VIEW"/*) continue ;; esac
        if [[ "$lib" =~ ^({allow}) ]]; then continue; fi
        if [ {gpu} = true ] && [[ "$lib" == libnvidia-ml.so* ]]; then continue; fi
        problems+=("$rel: $lib resolved from $path") ;;
    esac
  done < <(env -u LD_LIBRARY_PATH ldd "$f" 2>/dev/null)
done < <(find "$VIEW/bin" "$VIEW/sbin" "$VIEW/lib" "$VIEW/lib64" -type f -print0 2>/dev/null)
if [ ${{#problems[@]}} -eq 0 ]; then
  check relocatable pass "$count ELF files resolve inside the prefix or to OS base libraries"
else
  check relocatable fail "$(printf '%s; ' "${{problems[@]:0:20}}")"
fi

# No text file may still name the build-time install root.
left=$(grep -rIl -- '{build_root}' "$VIEW" 2>/dev/null | sed "s|^$VIEW/||" | head -20 | tr '\n' ' ')
if [ -z "$left" ]; then check build-root pass "no text file names {build_root}"; else check build-root fail "{build_root} in: $left"; fi

if ! ( {install_lmod} ) >/tmp/lmod-install.log 2>&1; then
  check module fail "could not install Lmod in the clean container: $(tail -1 /tmp/lmod-install.log)"
  exit 0
fi
# A minimal configuration: the commands read it before printing a version.
cat > /tmp/verify-slurm.conf <<EOF
ClusterName=verify
SlurmctldHost=localhost
PluginDir=$VIEW/lib/slurm
NodeName=localhost CPUs=1 State=UNKNOWN
PartitionName=verify Nodes=localhost Default=YES
EOF
export SLURM_CONF=/tmp/verify-slurm.conf SLURM_INSTALL_PREFIX=$VIEW MODULEPATH=$P/modules
# shellcheck disable=SC1091
source /usr/share/lmod/lmod/init/bash
if module load {module} 2>/tmp/module.err && [ "$(command -v scontrol)" = "$VIEW/bin/scontrol" ]; then
  check module pass "module load {module}: scontrol is $VIEW/bin/scontrol"
else
  check module fail "module load {module}: $(tr '\n' ' ' < /tmp/module.err | cut -c1-300)"
fi
for cmd in "scontrol --version" "sinfo --version" "srun --version" "slurmd -V"; do
  out=$($cmd 2>&1 | head -3 | tr '\n' ' ')
  if printf '%s' "$out" | grep -Eq '(^|[^0-9.]){version_re}([^0-9]|$)'; then
    check "version: $cmd" pass "$out"
  else
    check "version: $cmd" fail "expected {version}: $out"
  fi
done
node=$(slurmd -C 2>&1 | head -1)
case "$node" in NodeName=*) check "slurmd -C" pass "$node" ;; *) check "slurmd -C" fail "$node" ;; esac
"#,
        name = m.name,
        version_re = version.replace('.', "\\."),
    );
    if gpu {
        s.push_str(
            r#"plugin=$VIEW/lib/slurm/gpu_nvml.so
if [ ! -f "$plugin" ]; then
  check gpu-plugin fail "lib/slurm/gpu_nvml.so is missing"
else
  missing=$(env -u LD_LIBRARY_PATH ldd "$plugin" | grep 'not found' | grep -v libnvidia-ml | awk '{print $1}' | tr '\n' ' ')
  if [ -z "$missing" ]; then check gpu-plugin pass "gpu_nvml.so resolves (libnvidia-ml comes from the host driver)"; else check gpu-plugin fail "gpu_nvml.so: $missing not found"; fi
fi
"#,
        );
    }
    if gpus {
        s.push_str(
            r#"if smi=$(nvidia-smi -L 2>&1); then check nvidia-smi pass "$(printf '%s' "$smi" | head -1)"; else check nvidia-smi fail "$smi"; fi
mkdir -p /tmp/gres && printf 'AutoDetect=nvml\n' > /tmp/gres/gres.conf
sed 's/^NodeName=localhost CPUs=1/NodeName=localhost CPUs=1 Gres=gpu:1/' /tmp/verify-slurm.conf > /tmp/gres/slurm.conf
echo 'GresTypes=gpu' >> /tmp/gres/slurm.conf
gres=$(SLURM_CONF=/tmp/gres/slurm.conf slurmd -C 2>&1 | head -1)
case "$gres" in *Gres=gpu*) check "slurmd -C gres" pass "$gres" ;; *) check "slurmd -C gres" fail "no GPU in Gres: $gres" ;; esac
"#,
        );
    }
    s
}

fn parse_checks(output: &str) -> Vec<Check> {
    output
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(4, '\t');
            (f.next()? == "CHECK").then_some(())?;
            let name = f.next()?.to_string();
            let status = match f.next()? {
                "pass" => Status::Pass,
                "skip" => Status::Skip,
                _ => Status::Fail,
            };
            Some(Check {
                name,
                status,
                detail: f.next().unwrap_or("").trim().to_string(),
            })
        })
        .collect()
}

pub struct Options<'a> {
    pub engine: EngineKind,
    pub image: Option<&'a str>,
    pub network: &'a str,
    pub host_gpus: bool,
}

pub fn verify(matrix: &Matrix, tarball: &Path, opts: &Options<'_>) -> Result<Report> {
    let manifest = read_manifest(tarball)?;
    let tc = matrix
        .toolchain(&manifest.cell.toolchain)
        .with_context(|| {
            format!(
                "{}: its toolchain '{}' is not in the matrix",
                tarball.display(),
                manifest.cell.toolchain
            )
        })?;
    let image = opts.image.unwrap_or(&tc.image).to_string();
    if !container::image_exists(opts.engine, &image)?
        && let Err(why) = container::pull(opts.engine, &image)
    {
        bail!(
            "the OS image {image} for {} is not available to {} (pull failed: {why})",
            tc.name,
            opts.engine.program(),
        );
    }
    let name = tarball
        .file_name()
        .context("tarball has no file name")?
        .to_string_lossy()
        .into_owned();
    let dir = tarball
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dir = dir
        .canonicalize()
        .with_context(|| format!("{}", dir.display()))?;
    let split = !tarball.is_file();
    let work = tempfile::tempdir()?;
    let script_path = work.path().join("verify.sh");
    std::fs::write(
        &script_path,
        script(&manifest, tc.family, &name, split, opts.host_gpus),
    )?;
    let run = Run {
        image: image.clone(),
        // GPU runners: the devices and driver libraries come from the host.
        host_gpus: opts.host_gpus,
        user: None,
        network: opts.network.to_string(),
        mounts: vec![
            mount(&dir, "/verify/in", true),
            mount(&script_path, "/verify/verify.sh", true),
        ],
        env: vec![EnvVar::Set("LC_ALL".into(), "C".into())],
        command: vec!["bash".into(), "/verify/verify.sh".into()],
    };
    let (code, stdout) = container::capture(&run, opts.engine)?;
    if code != Some(0) {
        bail!(
            "the verify container failed ({} exited {code:?}): {}",
            opts.engine.program(),
            stdout.trim()
        );
    }
    let checks = parse_checks(&stdout);
    if checks.is_empty() {
        bail!("the verify container reported no checks: {}", stdout.trim());
    }
    let passed = checks.iter().all(|c| c.status != Status::Fail);
    Ok(Report {
        tarball: name,
        cell: format!(
            "{}/{}/{}",
            manifest.cell.slurm, manifest.cell.toolchain, manifest.cell.variant
        ),
        image,
        prefix: PREFIX.to_string(),
        passed,
        checks,
    })
}

impl Report {
    pub fn print(&self) {
        outln!(
            "verify {} ({}) in {} at {}:",
            self.tarball,
            self.cell,
            self.image,
            self.prefix
        );
        for c in &self.checks {
            let mark = match c.status {
                Status::Pass => "PASS",
                Status::Fail => "FAIL",
                Status::Skip => "SKIP",
            };
            outln!("  {mark} {}: {}", c.name, c.detail);
        }
        outln!(
            "{}",
            if self.passed {
                "verified"
            } else {
                "NOT verified"
            }
        );
    }

    fn markdown(&self) -> String {
        let mut md = format!(
            "### Verify `{}` — {}\n\n| check | result | detail |\n|---|---|---|\n",
            self.tarball,
            if self.passed { "passed" } else { "FAILED" }
        );
        for c in &self.checks {
            let detail = c.detail.replace('|', "\\|");
            md.push_str(&format!("| {} | {:?} | {} |\n", c.name, c.status, detail));
        }
        md
    }
}

/// `verify`: one package, in a clean container of its OS.
pub struct Job {
    pub tarball: PathBuf,
    pub engine: Option<EngineKind>,
    /// An image instead of the toolchain's OS base image.
    pub image: Option<String>,
    pub network: String,
    pub host_gpus: bool,
}

pub fn run(matrix: &Matrix, job: &Job) -> Result<()> {
    let engine = container::detect(job.engine, false)?.expect("an engine");
    if !job.tarball.is_file() && parts_of(&job.tarball)?.is_empty() {
        return Err(UsageError::new(format!(
            "{}: no such package (nor its parts)",
            job.tarball.display()
        ))
        .into());
    }
    let report = verify(
        matrix,
        &job.tarball,
        &Options {
            engine,
            image: job.image.as_deref(),
            network: &job.network,
            host_gpus: job.host_gpus,
        },
    )?;
    finish(&report, &job.tarball)
}

/// A package failed verify: these checks, by name.
#[derive(Debug)]
pub struct Failed {
    pub tarball: String,
    pub failed: Vec<String>,
    pub report_file: PathBuf,
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} failed verification ({}); report: {}",
            self.tarball,
            self.failed.join(", "),
            self.report_file.display()
        )
    }
}

impl std::error::Error for Failed {}

/// Prints the report, writes it beside the tarball (`<tarball>.verify.json`)
/// and into the step summary; a failed verify is a [`Failed`] error.
pub fn finish(report: &Report, tarball: &Path) -> Result<()> {
    report.print();
    let json = PathBuf::from(files::verify_report(&tarball.display().to_string()));
    std::fs::write(&json, serde_json::to_string_pretty(report)? + "\n")
        .with_context(|| format!("writing {}", json.display()))?;
    gha::append_summary(&report.markdown())?;
    if !report.passed {
        return Err(Failed {
            tarball: report.tarball.clone(),
            failed: report
                .checks
                .iter()
                .filter(|c| c.status == Status::Fail)
                .map(|c| c.name.clone())
                .collect(),
            report_file: json,
        }
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_lines_become_checks() {
        let out = "noise\nCHECK\trelocatable\tfail\tbin/x: libfoo.so not found; \nCHECK\tmodule\tpass\tok\n";
        let checks = parse_checks(out);
        assert_eq!(checks.len(), 2);
        assert_eq!(checks[0].status, Status::Fail);
        assert_eq!(checks[0].detail, "bin/x: libfoo.so not found;");
        assert_eq!(checks[1].name, "module");
    }

    #[test]
    fn allow_lists_differ_by_family_only_in_libxcrypt() {
        assert!(os_allow_list(Family::Dnf).contains(&"libcrypt.so.2"));
        assert!(!os_allow_list(Family::Apt).contains(&"libcrypt.so.2"));
        assert!(os_allow_list(Family::Apt).contains(&"libc.so"));
    }
}
