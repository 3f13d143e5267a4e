//! `cargo xtask verify` with real Podman on the local Debian image, against a
//! view made of Debian's real Slurm 22.05 binaries (`apt-get download`, never
//! installed on this machine). Debian's binaries are not relocatable; verify
//! must say so, and pass once the view is fixed the way Spack's RPATHs do.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::support::{Project, sh};

const DEBS: &[&str] = &[
    "slurm-client",
    "slurmd",
    "slurm-wlm-basic-plugins",
    "libreadline8",
    "libtinfo6",
    "libnuma1",
    "libhwloc15",
    "liblz4-1",
];
const STEM: &str = "slurm-22.05-bookworm-cpu-x86_64";

/// The Debian packages, downloaded and unpacked once per test run.
fn debian_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("slurm-factory-debs-{}", std::process::id()));
        let root = dir.join("root");
        std::fs::create_dir_all(&root).unwrap();
        sh(Command::new("apt-get")
            .arg("download")
            .args(DEBS)
            .current_dir(&dir));
        for deb in std::fs::read_dir(&dir).unwrap() {
            let deb = deb.unwrap().path();
            if deb.extension().is_some_and(|e| e == "deb") {
                sh(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
            }
        }
        root
    })
}

/// A project whose matrix knows Debian 12 (the image the tests can run) and
/// Slurm 22.05 (what Debian ships).
fn project() -> Project {
    let p = Project::copy();
    p.edit("spack-env/matrix.yaml", |m| {
        m.replacen(
            "toolchains:\n",
            "toolchains:\n  - name: bookworm\n    os: Debian 12\n    image: localbase:bookworm\n    family: apt\n    gcc: 12.2.0\n    glibc: \"2.36\"\n",
            1,
        )
        .replacen(
            "slurm:\n",
            "slurm:\n  - version: \"22.05\"\n    status: test\n    spack_version: 22-05-8-1\n    tarball: slurm-22.05.8.tar.bz2\n    sha256: 1111111111111111111111111111111111111111111111111111111111111111\n",
            1,
        )
    });
    p
}

fn copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    sh(Command::new("cp").arg("-P").arg(from).arg(to));
}

/// Debian's binaries laid out as a view, with the libraries they need, but
/// as Debian built them: RUNPATH fixed to /usr/lib/x86_64-linux-gnu/slurm-wlm.
fn debian_view(dir: &Path) -> PathBuf {
    let r = debian_root();
    let v = dir.join("view");
    for b in ["scontrol", "sinfo", "srun"] {
        copy(&r.join("usr/bin").join(b), &v.join("bin").join(b));
    }
    copy(&r.join("usr/sbin/slurmd-wlm"), &v.join("sbin/slurmd"));
    let plugins = r.join("usr/lib/x86_64-linux-gnu/slurm-wlm");
    // srun --version loads these two; both need only libc.
    for p in ["select_linear.so", "switch_none.so"] {
        copy(&plugins.join(p), &v.join("lib/slurm").join(p));
    }
    for lib in [
        "libreadline.so.8",
        "libtinfo.so.6",
        "libnuma.so.1",
        "libhwloc.so.15",
        "liblz4.so.1",
    ] {
        for base in ["lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu"] {
            let found = r.join(base).join(lib);
            if found.exists() {
                let real = std::fs::canonicalize(&found).unwrap();
                copy(&real, &v.join("lib").join(real.file_name().unwrap()));
                if real.file_name() != found.file_name() {
                    std::os::unix::fs::symlink(real.file_name().unwrap(), v.join("lib").join(lib))
                        .unwrap();
                }
            }
        }
    }
    v
}

/// What Spack does for its views: the private library inside, and RPATHs
/// relative to each file ($ORIGIN), so the tree works wherever it lands.
fn fix_view(v: &Path) {
    copy(
        &debian_root().join("usr/lib/x86_64-linux-gnu/slurm-wlm/libslurmfull.so"),
        &v.join("lib/libslurmfull.so"),
    );
    for (dir, rpath) in [
        ("bin", "$ORIGIN/../lib"),
        ("sbin", "$ORIGIN/../lib"),
        ("lib", "$ORIGIN"),
    ] {
        for e in std::fs::read_dir(v.join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.is_file() && !p.is_symlink() {
                let status = Command::new("patchelf")
                    .arg("--set-rpath")
                    .arg(rpath)
                    .arg(&p)
                    .status();
                assert!(
                    status
                        .unwrap_or_else(|_| crate::support::missing("patchelf"))
                        .success()
                );
            }
        }
    }
}

const LOCK: &str = r#"{"_meta":{"file-type":"spack-lockfile","lockfile-version":6,"specfile-version":5},
"roots":[{"hash":"debian","spec":"slurm"}],"concrete_specs":{"debian":{"name":"slurm","version":"22-05-8-1","hash":"debian"}}}"#;

/// Packages the view and verifies it; returns (success, stdout+stderr, report).
fn package_and_verify(
    project: &Project,
    dir: &Path,
    view: &Path,
) -> (bool, String, serde_json::Value) {
    let lock = dir.join("spack.lock");
    std::fs::write(&lock, LOCK).unwrap();
    let out = dir.join("dist");
    crate::support::package(
        &project.root,
        view,
        &lock,
        ("22.05", "bookworm"),
        &out,
        &["--unsigned"],
    )
    .success();
    let tarball = out.join(format!("{STEM}.tar.gz"));
    // Through the tests' command: plain output, never Actions' step summary.
    let out = project
        .xtask(&[
            "verify",
            "--engine",
            "podman",
            "--tarball",
            tarball.to_str().unwrap(),
        ])
        .output();
    let text = format!("{}{}", out.stdout, out.stderr);
    let report_path = PathBuf::from(format!("{}.verify.json", tarball.display()));
    let report = serde_json::from_slice(
        &std::fs::read(&report_path).unwrap_or_else(|_| panic!("no report:\n{text}")),
    )
    .unwrap();
    (out.code == Some(0), text, report)
}

fn check<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name}: {report}"))
}

#[test]
fn debian_binaries_are_refused_until_made_relocatable() {
    let project = project();
    let dir = tempfile::tempdir().unwrap();
    let view = debian_view(dir.path());
    let (ok, text, report) = package_and_verify(&project, dir.path(), &view);
    assert!(!ok, "{text}");
    let reloc = check(&report, "relocatable");
    assert_eq!(reloc["status"], "fail");
    let detail = reloc["detail"].as_str().unwrap();
    assert!(
        detail.contains("bin/scontrol: libslurmfull.so not found"),
        "{detail}"
    );
    assert!(text.contains("failed verification (relocatable"), "{text}");
    // With the module's LD_LIBRARY_PATH the binaries still cannot find
    // libslurmfull: it is not in the view at all.
    assert_eq!(check(&report, "slurmd -C")["status"], "fail");

    fix_view(&view);
    let (ok, text, report) = package_and_verify(&project, dir.path(), &view);
    assert!(ok, "{text}");
    assert_eq!(report["passed"], true);
    for cmd in [
        "scontrol --version",
        "sinfo --version",
        "srun --version",
        "slurmd -V",
    ] {
        let c = check(&report, &format!("version: {cmd}"));
        assert_eq!(c["status"], "pass", "{c}");
        assert!(c["detail"].as_str().unwrap().contains("22.05"), "{c}");
    }
    assert!(
        check(&report, "slurmd -C")["detail"]
            .as_str()
            .unwrap()
            .starts_with("NodeName=")
    );
    assert_eq!(check(&report, "module")["status"], "pass");
    assert!(text.contains("PASS relocatable:"), "{text}");
}

#[test]
fn a_deleted_library_is_named() {
    let project = project();
    let dir = tempfile::tempdir().unwrap();
    let view = debian_view(dir.path());
    fix_view(&view);
    for e in std::fs::read_dir(view.join("lib")).unwrap() {
        let p = e.unwrap().path();
        if p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("libnuma.so")
        {
            std::fs::remove_file(p).unwrap();
        }
    }
    let (ok, _, report) = package_and_verify(&project, dir.path(), &view);
    assert!(!ok);
    let detail = check(&report, "relocatable")["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        detail.contains("sbin/slurmd: libnuma.so.1 not found"),
        "{detail}"
    );
}

#[test]
fn the_build_root_left_in_a_text_file_is_named() {
    let project = project();
    let dir = tempfile::tempdir().unwrap();
    let view = debian_view(dir.path());
    fix_view(&view);
    std::fs::create_dir_all(view.join("share/doc")).unwrap();
    std::fs::write(
        view.join("share/doc/paths.txt"),
        "prefix=/opt/slurm/software/__spack_path_placeholder__/__spack_path_placeholder__/slurm\n",
    )
    .unwrap();
    let (ok, _, report) = package_and_verify(&project, dir.path(), &view);
    assert!(!ok);
    let c = check(&report, "build-root");
    assert_eq!(c["status"], "fail");
    assert!(
        c["detail"]
            .as_str()
            .unwrap()
            .contains("share/doc/paths.txt"),
        "{c}"
    );
}

#[test]
fn an_os_image_that_is_not_available_is_a_clear_error() {
    let project = project();
    let dir = tempfile::tempdir().unwrap();
    let view = debian_view(dir.path());
    let lock = dir.path().join("spack.lock");
    std::fs::write(&lock, LOCK).unwrap();
    let out = dir.path().join("dist");
    crate::support::package(
        &project.root,
        &view,
        &lock,
        ("22.05", "jammy"),
        &out,
        &["--unsigned"],
    )
    .success();
    let done = project
        .xtask(&[
            "verify",
            "--engine",
            "podman",
            "--tarball",
            out.join("slurm-22.05-jammy-cpu-x86_64.tar.gz")
                .to_str()
                .unwrap(),
        ])
        .failure();
    assert!(
        done.stderr
            .contains("the OS image ubuntu:jammy for jammy is not available to podman"),
        "{}",
        done.stderr
    );
}
