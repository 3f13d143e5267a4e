//! The admins' `slurm-factory` executable as it is released: built by
//! `cargo xtask admin-binary` (cargo-zigbuild, glibc 2.28), checksummed and
//! signed; it runs where nothing of ours is installed: a bare Debian
//! container with only gpg and ca-certificates lists and installs a release
//! served over HTTP, and Lmod (installed for that check only) loads it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::support::dist::Dist;
use crate::support::gpg::TestKey;
use crate::support::{Run, StaticServer, admin_at, sh, xtask};

const NAME: &str = "slurm-factory-x86_64-linux";

struct Released {
    _dir: tempfile::TempDir,
    out: PathBuf,
    key: TestKey,
}

impl Released {
    fn exe(&self) -> PathBuf {
        self.out.join(NAME)
    }
}

/// Built once per test run (a release build of the whole tree: minutes).
fn released() -> &'static Released {
    static RELEASED: OnceLock<Released> = OnceLock::new();
    RELEASED.get_or_init(|| {
        assert!(
            Command::new("cargo-zigbuild")
                .arg("--version")
                .output()
                .is_ok(),
            "{}",
            crate::support::missing_line("cargo-zigbuild")
        );
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("dist");
        let key = TestKey::new("Releaser", "");
        let built = xtask(&["admin-binary", "--out", out.to_str().unwrap()])
            .env("SLURM_FACTORY_GPG_PRIVATE_KEY", &key.secret_armored)
            .success();
        eprintln!("{}", built.stdout.trim());
        Released {
            _dir: dir,
            out,
            key,
        }
    })
}

/// The GLIBC_x.y[.z] versions a binary's dynamic symbols need.
fn glibc_versions(exe: &Path) -> Vec<(u32, u32)> {
    let table = sh(Command::new("objdump").arg("-T").arg(exe));
    let mut versions: Vec<(u32, u32)> = table
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter_map(|w| w.strip_prefix("GLIBC_"))
        .filter_map(|v| {
            let mut n = v.split('.').map(|p| p.parse::<u32>().ok());
            Some((n.next()??, n.next()??))
        })
        .collect();
    versions.sort();
    versions.dedup();
    versions
}

#[test]
fn the_release_runs_on_glibc_2_28_and_is_checksummed_and_signed() {
    let r = released();
    let exe = r.exe();
    let versions = glibc_versions(&exe);
    assert!(!versions.is_empty(), "objdump found no GLIBC_ symbols");
    let newest = *versions.last().unwrap();
    assert!(
        newest <= (2, 28),
        "{NAME} needs GLIBC_{}.{}, newer than Rocky Linux 8's 2.28 (all: {versions:?})",
        newest.0,
        newest.1
    );
    let dynamic = sh(Command::new("readelf").arg("-d").arg(&exe));
    assert!(
        !dynamic.contains("RUNPATH") && !dynamic.contains("RPATH"),
        "{dynamic}"
    );
    // Only the base system's libraries: in every OS image as it comes.
    let base = [
        "libc.so.6",
        "libm.so.6",
        "libdl.so.2",
        "libpthread.so.0",
        "librt.so.1",
        "libgcc_s.so.1",
        "ld-linux-x86-64.so.2",
    ];
    for line in dynamic.lines().filter(|l| l.contains("(NEEDED)")) {
        let lib = line.rsplit('[').next().unwrap().trim_end_matches(']');
        assert!(base.contains(&lib), "{NAME} needs {lib}: {line}");
    }
    // The checksum file names the file, as `sha256sum -c` wants.
    sh(Command::new("sha256sum")
        .args(["-c", &format!("{NAME}.sha256")])
        .current_dir(&r.out));
    assert!(TestKey::verify(
        &r.key.public_file,
        &r.out.join(format!("{NAME}.asc")),
        &exe
    ));
    let size = std::fs::metadata(&exe).unwrap().len();
    let start = std::time::Instant::now();
    let help = Run::from_command(admin_at(&exe, r.out.as_path(), &["--help"])).success();
    eprintln!(
        "{NAME}: {:.1} MiB, `--help` in {:.1} ms, newest glibc symbol {}.{}",
        size as f64 / (1 << 20) as f64,
        start.elapsed().as_secs_f64() * 1e3,
        newest.0,
        newest.1
    );
    assert!(help.stdout.contains("download"), "{}", help.stdout);
}

#[test]
fn outside_a_checkout_a_toolchain_typo_exits_2_naming_the_valid_ones() {
    let r = released();
    let nowhere = tempfile::tempdir().unwrap();
    let done = Run::from_command(admin_at(
        &r.exe(),
        nowhere.path(),
        &[
            "download",
            "--slurm",
            "25.11",
            "--toolchain",
            "nobel",
            "--prefix",
            "/tmp/x",
            // No GitHub here: the source cannot be asked, the built-in
            // matrix still names the valid toolchains.
            "--from",
            "http://127.0.0.1:9/",
        ],
    ))
    .code(2);
    assert!(
        done.stderr.contains(
            "unknown toolchain 'nobel' (valid: resolute, noble, jammy, rockylinux10, rockylinux9, rockylinux8"
        ),
        "{}",
        done.stderr
    );
}

/// A release served over plain HTTP from a local store, and a bare Debian
/// container that gets only the executable.
#[test]
fn a_bare_debian_container_lists_installs_and_loads_a_release() {
    let r = released();
    let d = Dist::new(
        "Releaser",
        |view| {
            std::fs::create_dir_all(view.join("bin")).unwrap();
            let scontrol = view.join("bin/scontrol");
            std::fs::write(&scontrol, "#!/bin/sh\necho \"slurm 24.11.6 from $0\"\n").unwrap();
            std::fs::set_permissions(&scontrol, std::fs::Permissions::from_mode(0o755)).unwrap();
            std::fs::create_dir_all(view.join("lib")).unwrap();
            std::fs::write(
                view.join("lib/libslurm.so.42"),
                crate::support::dist::noise(2 << 20, 3),
            )
            .unwrap();
        },
        None,
    );
    d.publish_local(&[]).success();
    let server = StaticServer::start(&d.store());
    let script = format!(
        r#"set -eu
apt-get update -qq
apt-get install -y -qq --no-install-recommends gpg ca-certificates >/dev/null 2>&1
if command -v gpg-agent; then echo "gpg-agent is installed: not a bare gpg" >&2; exit 1; fi
mkdir -p /opt/slurm
slurm-factory download --list --from {url}/
slurm-factory download --slurm 24.11 --toolchain jammy --prefix /opt/slurm/24.11 \
  --from {url}/ --trusted-fingerprint {fpr} | tee /tmp/installed
use=$(sed -n 's/^  module use //p' /tmp/installed)
load=$(sed -n 's/^  module load //p' /tmp/installed)
# Lmod for this check only: the executable itself needed none of it.
apt-get install -y -qq --no-install-recommends lmod >/dev/null 2>&1
set +u  # Lmod's profile script reads unset variables
. /etc/profile.d/lmod.sh
module use "$use"
module load "$load"
echo "scontrol: $(command -v scontrol)"
scontrol
"#,
        url = server.url,
        fpr = d.key.fingerprint(),
    );
    let out = Command::new("podman")
        .args(["run", "--rm", "--network", "host", "-v"])
        .arg(format!(
            "{}:/usr/local/bin/slurm-factory:ro",
            r.exe().display()
        ))
        .args(["localbase:bookworm", "bash", "-c", &script])
        .output()
        .unwrap_or_else(|_| crate::support::missing("podman"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("slurm-24.11-jammy-cpu-x86_64.tar.gz"),
        "the list shows the package: {stdout}"
    );
    assert!(
        stdout.contains("installed Slurm 24.11 (jammy, cpu) in /opt/slurm/24.11"),
        "{stdout}"
    );
    assert!(
        stdout.contains("scontrol: /opt/slurm/24.11/view/bin/scontrol")
            && stdout.contains("slurm 24.11.6 from /opt/slurm/24.11/view/bin/scontrol"),
        "module load put the installed Slurm first on PATH: {stdout}"
    );
}
