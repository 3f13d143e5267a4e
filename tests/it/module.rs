//! The shipped Lmod module, rendered by the toolkit and loaded by real Lmod
//! (Debian's `lmod`): relocation, the missing-prefix error, unload, conflicts.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::xtask;

const LMOD_INIT: &str = "/usr/share/lmod/lmod/init/bash";

/// Module files for some cells, rendered by `spack-env`, and a stand-in view.
struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new(cells: &[(&str, &str)]) -> Site {
        let dir = tempfile::tempdir().unwrap();
        for (version, toolchain) in cells {
            let env = dir.path().join(format!("env-{version}-{toolchain}"));
            xtask(&[
                "spack-env",
                "--stage",
                "slurm",
                "--slurm",
                version,
                "--toolchain",
                toolchain,
                "--out",
                env.to_str().unwrap(),
            ])
            .success();
            let rel = format!("slurm/{version}-{toolchain}.lua");
            let dst = dir.path().join("modules").join(&rel);
            std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
            std::fs::copy(env.join("templates").join(&rel), dst).unwrap();
        }
        Site { dir }
    }

    fn modules(&self) -> PathBuf {
        self.dir.path().join("modules")
    }

    /// A view with a stand-in `scontrol` that says where it runs from.
    fn view(&self, name: &str) -> PathBuf {
        let view = self.dir.path().join(name);
        for sub in ["bin", "sbin", "lib", "share/man"] {
            std::fs::create_dir_all(view.join(sub)).unwrap();
        }
        let scontrol = view.join("bin/scontrol");
        std::fs::write(&scontrol, "#!/bin/sh\necho \"scontrol from $0\"\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&scontrol, std::fs::Permissions::from_mode(0o755)).unwrap();
        view
    }

    /// Runs `script` in a clean bash with Lmod initialised and MODULEPATH set.
    fn lmod(&self, script: &str, env: &[(&str, &str)]) -> (bool, String, String) {
        assert!(
            Path::new(LMOD_INIT).exists(),
            "{}",
            crate::support::missing_from("Lmod", &format!("at {LMOD_INIT}"))
        );
        let mut cmd = Command::new("bash");
        cmd.env_clear()
            .env("HOME", self.dir.path())
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .args(["--noprofile", "--norc", "-c"])
            .arg(format!(
                "source {LMOD_INIT}\nexport MODULEPATH={}\nset -e\n{script}",
                self.modules().display()
            ));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

fn value<'a>(stdout: &'a str, key: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in:\n{stdout}"))
}

#[test]
fn relocated_prefix_puts_its_scontrol_first() {
    let site = Site::new(&[("25.11", "noble")]);
    let view = site.view("somewhere/else/view");
    let view_s = view.to_str().unwrap();
    let (ok, out, err) = site.lmod(
        "module load slurm/25.11-noble\necho PATH=$PATH\necho WHICH=$(command -v scontrol)\n\
         echo RUN=$(scontrol)\necho ROOT=$SLURM_ROOT\necho CONF=$SLURM_CONF\necho LD=$LD_LIBRARY_PATH\n\
         echo MAN=$MANPATH\n",
        &[("SLURM_INSTALL_PREFIX", &format!("{view_s}/"))],
    );
    assert!(ok, "{err}");
    assert!(
        value(&out, "PATH").starts_with(&format!("{view_s}/bin:{view_s}/sbin:")),
        "{out}"
    );
    assert_eq!(value(&out, "WHICH"), format!("{view_s}/bin/scontrol"));
    assert_eq!(
        value(&out, "RUN"),
        format!("scontrol from {view_s}/bin/scontrol")
    );
    assert_eq!(value(&out, "ROOT"), view_s);
    assert_eq!(value(&out, "CONF"), "/etc/slurm/slurm.conf");
    // Relocated away from the build-time root: the loader needs the view's lib/.
    assert_eq!(value(&out, "LD"), format!("{view_s}/lib"));
    assert!(
        value(&out, "MAN").starts_with(&format!("{view_s}/share/man")),
        "{out}"
    );
}

#[test]
fn default_prefix_is_opt_slurm_view() {
    let site = Site::new(&[("25.11", "noble")]);
    let (ok, _, err) = site.lmod("module load slurm/25.11-noble\n", &[]);
    if Path::new("/opt/slurm/view/bin/scontrol").exists() {
        assert!(ok, "{err}");
    } else {
        assert!(!ok);
        assert!(
            err.contains("no bin/scontrol\nunder /opt/slurm/view")
                || err.contains("no bin/scontrol under /opt/slurm/view"),
            "{err}"
        );
    }
}

#[test]
fn empty_prefix_fails_with_a_clear_error() {
    let site = Site::new(&[("24.11", "jammy")]);
    let empty = site.dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let (ok, out, err) = site.lmod(
        "module load slurm/24.11-jammy || echo FAILED\necho PATH=$PATH\nmodule -t list 2>&1\n",
        &[("SLURM_INSTALL_PREFIX", empty.to_str().unwrap())],
    );
    assert!(ok, "{err}");
    assert!(out.contains("FAILED"), "{out}");
    let flat = err.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        flat.contains(&format!(
            "slurm/24.11-jammy: no bin/scontrol under {}",
            empty.display()
        )),
        "{err}"
    );
    assert!(
        flat.contains("set SLURM_INSTALL_PREFIX to the view/ directory"),
        "{err}"
    );
    assert!(
        !value(&out, "PATH").contains(empty.to_str().unwrap()),
        "{out}"
    );
    assert!(!out.contains("slurm/"), "nothing is loaded: {out}");
}

#[test]
fn unload_restores_the_environment() {
    let site = Site::new(&[("23.11", "rockylinux9")]);
    let view = site.view("view");
    let script = "snap() { env | grep -E '^(PATH|MANPATH|LD_LIBRARY_PATH|CPATH|LIBRARY_PATH|PKG_CONFIG_PATH|SLURM_[A-Z_]+)=' | sort; }\n\
        snap > before\nmodule load slurm/23.11-rockylinux9\nsnap > loaded\nmodule unload slurm/23.11-rockylinux9\nsnap > after\n\
        echo LOADED_CONF=$(grep ^SLURM_CONF= loaded)\ndiff before after && echo SAME\n";
    let (ok, out, err) = site.lmod(
        &format!("cd {}\n{script}", site.dir.path().display()),
        &[
            ("SLURM_INSTALL_PREFIX", view.to_str().unwrap()),
            ("SLURM_CONF", "/site/slurm.conf"),
            ("LD_LIBRARY_PATH", "/site/lib"),
        ],
    );
    assert!(ok, "{out}\n{err}");
    // A SLURM_CONF set by the site wins over the default, and survives unload.
    assert_eq!(value(&out, "LOADED_CONF"), "SLURM_CONF=/site/slurm.conf");
    assert!(out.contains("SAME"), "{out}");
}

#[test]
fn two_slurm_modules_are_never_loaded_together() {
    let site = Site::new(&[("25.11", "noble"), ("24.11", "noble")]);
    let view = site.view("view");
    let other = site.modules().join("pbs");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("1.lua"), "family(\"workloadmanager\")\n").unwrap();
    let (ok, out, err) = site.lmod(
        "module load slurm/25.11-noble\nmodule load slurm/24.11-noble\necho LIST1=$(module -t list 2>&1 | tr '\\n' ' ')\n\
         echo PATH=$PATH\nmodule load pbs/1\necho LIST2=$(module -t list 2>&1 | tr '\\n' ' ')\n",
        &[("SLURM_INSTALL_PREFIX", view.to_str().unwrap())],
    );
    assert!(ok, "{err}");
    assert_eq!(value(&out, "LIST1").trim(), "slurm/24.11-noble");
    let bin = format!("{}/bin", view.display());
    assert_eq!(
        value(&out, "PATH").split(':').filter(|p| *p == bin).count(),
        1,
        "{out}"
    );
    // Another workload manager of the same family replaces Slurm.
    assert_eq!(value(&out, "LIST2").trim(), "pbs/1");
}

#[test]
fn rendered_module_is_valid_lua() {
    let site = Site::new(&[("25.11", "resolute")]);
    let file = site.modules().join("slurm/25.11-resolute.lua");
    let out = Command::new("luac5.3").arg("-p").arg(&file).output();
    match out {
        Ok(out) => assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(_) => crate::support::missing("luac5.3 (Debian lua5.3)"),
    }
    let text = std::fs::read_to_string(&file).unwrap();
    for needle in [
        "whatis(\"Version: 25.11\")",
        "whatis(\"Toolchain: resolute (Ubuntu 26.04)\")",
        "whatis(\"Variant: cpu\")",
        "family(\"workloadmanager\")",
        "conflict(\"slurm\")",
    ] {
        assert!(text.contains(needle), "missing {needle}");
    }
}
