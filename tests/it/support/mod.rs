//! Helpers shared by the integration tests: run the toolkit binary, and make
//! scratch copies of the project to change without touching the checkout.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub struct Run {
    cmd: Command,
}

pub struct Done {
    pub stdout: String,
    pub stderr: String,
    pub code: Option<i32>,
}

impl Run {
    pub fn env_remove(mut self, key: &str) -> Run {
        self.cmd.env_remove(key);
        self
    }
    /// Runs it whatever the outcome.
    pub fn output(mut self) -> Done {
        let Output {
            status,
            stdout,
            stderr,
        } = self.cmd.output().expect("running xtask");
        Done {
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
            code: status.code(),
        }
    }
    pub fn success(self) -> Done {
        self.code(0)
    }
    pub fn code(self, expected: i32) -> Done {
        let out = self.output();
        assert_eq!(
            out.code,
            Some(expected),
            "stdout:\n{}\nstderr:\n{}",
            out.stdout,
            out.stderr
        );
        out
    }
    pub fn failure(self) -> Done {
        let out = self.output();
        assert!(
            out.code.is_some_and(|c| c != 0),
            "expected failure; stdout:\n{}",
            out.stdout
        );
        out
    }
}

fn command(root: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.arg("--root").arg(root).args(args).current_dir(root);
    // Tests see plain output whatever the environment they run in.
    cmd.env_remove("GITHUB_ACTIONS")
        .env_remove("GITHUB_OUTPUT")
        .env_remove("GITHUB_STEP_SUMMARY");
    cmd
}

/// The toolkit's command, to spawn and signal.
pub fn xtask_command(args: &[&str]) -> Command {
    command(&repo_root(), args)
}

/// Runs `cmd` (its output discarded) and gives its exit code and its peak
/// resident memory in MiB, from the kernel's accounting (`RUSAGE_CHILDREN`).
///
/// A small parent (python3) starts it: a process spawned straight from this
/// test binary inherits the binary's own high-water mark, and every test
/// shares this one process.
pub fn peak_rss_mib(cmd: Command) -> (i32, f64) {
    const MEASURE: &str = "import resource, subprocess, sys\n\
r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n\
print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n";
    let mut measured = Command::new("python3");
    measured
        .arg("-c")
        .arg(MEASURE)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(v) => measured.env(key, v),
            None => measured.env_remove(key),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        measured.current_dir(dir);
    }
    let out = measured.output().unwrap_or_else(|_| missing("python3"));
    let text = String::from_utf8_lossy(&out.stdout);
    let mut fields = text.split_whitespace();
    let code = fields
        .next()
        .and_then(|c| c.parse().ok())
        .expect("an exit code");
    let kib: f64 = fields
        .next()
        .and_then(|k| k.parse().ok())
        .expect("a peak RSS");
    (code, kib / 1024.0)
}

pub fn xtask(args: &[&str]) -> Run {
    Run {
        cmd: command(&repo_root(), args),
    }
}

/// The admins' `slurm-factory` executable (the debug build of this checkout),
/// run from `cwd`: it reads no checkout, so `cwd` may be anywhere.
pub fn admin(cwd: &Path, args: &[&str]) -> Run {
    Run {
        cmd: admin_at(Path::new(env!("CARGO_BIN_EXE_slurm-factory")), cwd, args),
    }
}

/// An admins' executable at `exe` (the debug build, or the released one).
pub fn admin_at(exe: &Path, cwd: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .current_dir(cwd)
        .env_remove("GITHUB_ACTIONS")
        .env_remove("GITHUB_OUTPUT")
        .env_remove("GITHUB_STEP_SUMMARY");
    cmd
}

impl Run {
    pub fn from_command(cmd: Command) -> Run {
        Run { cmd }
    }

    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Run {
        self.cmd.env(key, value);
        self
    }

    /// Several variables at once (e.g. `S3Server::env()`).
    pub fn envs<K: AsRef<OsStr>, V: AsRef<OsStr>>(
        mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Run {
        self.cmd.envs(vars);
        self
    }
}

/// A project tree: the checkout itself, or a scratch copy of the files the
/// toolkit reads and generates.
pub struct Project {
    pub root: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl Project {
    pub fn repo() -> Project {
        Project {
            root: repo_root(),
            _dir: None,
        }
    }

    pub fn copy() -> Project {
        let dir = tempfile::tempdir().unwrap();
        let src = repo_root();
        for rel in ["spack-env", "spack-repo", "modules", ".github", "README.md"] {
            copy_tree(&src.join(rel), &dir.path().join(rel));
        }
        Project {
            root: dir.path().to_path_buf(),
            _dir: Some(dir),
        }
    }

    pub fn xtask(&self, args: &[&str]) -> Run {
        Run {
            cmd: command(&self.root, args),
        }
    }

    /// The toolkit's command on this tree, to spawn.
    pub fn command(&self, args: &[&str]) -> Command {
        command(&self.root, args)
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.root.join(rel)).unwrap()
    }

    pub fn edit(&self, rel: &str, f: impl FnOnce(&str) -> String) {
        let path = self.root.join(rel);
        let old = std::fs::read_to_string(&path).unwrap();
        let new = f(&old);
        assert_ne!(old, new, "the edit of {rel} changed nothing");
        std::fs::write(path, new).unwrap();
    }

    /// Real actionlint (with shellcheck) over the tree's workflows: zero findings.
    pub fn actionlint(&self) {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.root.join(".github/workflows"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert_eq!(files.len(), 3, "{files:?}");
        let out = Command::new("actionlint")
            .current_dir(&self.root)
            .args(["-shellcheck", "shellcheck"])
            .args(&files)
            .output()
            .unwrap_or_else(|_| missing("actionlint"));
        assert!(
            out.status.success(),
            "actionlint findings:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

pub fn copy_tree(src: &Path, dst: &Path) {
    if src.is_file() {
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(src, dst).unwrap();
        return;
    }
    if !src.exists() {
        return;
    }
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        copy_tree(&entry.path(), &dst.join(entry.file_name()));
    }
}

/// The one line a test fails with when a real component it needs (Podman,
/// gpg, Lmod, actionlint, ...) is missing: CI installs them all and never
/// skips a test.
pub fn missing_line(tool: &str) -> String {
    missing_from(tool, "on PATH")
}

/// [`missing_line`] for a component found by a file rather than on PATH:
/// `where_` says where it was looked for.
pub fn missing_from(tool: &str, where_: &str) -> String {
    format!("{tool} not found {where_}: run `sudo bash .ci/install`")
}

/// Fails the test with [`missing_line`].
pub fn missing(tool: &str) -> ! {
    panic!("{}", missing_line(tool))
}

pub mod dist;
pub mod github;
pub mod gpg;
pub mod s3;
pub mod server;
pub mod spack;

/// Runs a command, asserting success; returns stdout.
pub fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Data made by real Spack (see `tests/fixtures/README.md`), inside the
/// repository so that a fresh clone holds everything the tests read.
pub fn fixtures() -> PathBuf {
    repo_root().join("tests/fixtures")
}

/// `package` for one cell (`slurm`, `toolchain`) of the project at `root`,
/// with `extra` flags after the common ones.
pub fn package(
    root: &Path,
    view: &Path,
    lock: &Path,
    cell: (&str, &str),
    out: &Path,
    extra: &[&str],
) -> Run {
    let mut cmd = command(root, &["package"]);
    cmd.arg("--view").arg(view).arg("--lock").arg(lock);
    cmd.args(["--slurm", cell.0, "--toolchain", cell.1])
        .arg("--out")
        .arg(out)
        .args(extra);
    Run { cmd }
}

/// Bytes shaped like a shared library, deterministic for a seed: machine
/// code, string tables, relocation and pointer tables, zero padding and
/// already-compressed data, in runs of 1–65 KiB. Compresses about 3:1, as
/// real binaries do.
pub fn binary_like(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let words: [&[u8]; 12] = [
        b"slurm_",
        b"job_",
        b"node",
        b"partition",
        b"_init",
        b"plugin",
        b"gres",
        b"cpus",
        b"\0",
        b"step",
        b"acct",
        b"conf",
    ];
    let ops: [&[u8]; 8] = [
        b"\x48\x89\xe5",
        b"\x48\x83\xec",
        b"\xe8",
        b"\x48\x8b\x45",
        b"\x89\x45",
        b"\xc3",
        b"\x0f\x1f\x44\x00\x00",
        b"\x41\x57",
    ];
    let mut out = Vec::with_capacity(len + 70_000);
    while out.len() < len {
        let kind = next() % 6;
        let end = out.len() + 1024 + (next() % 65536) as usize;
        match kind {
            0 => out.resize_with(end, || next() as u8),
            1 => {
                while out.len() < end {
                    out.extend_from_slice(ops[next() as usize % ops.len()]);
                    out.push(next() as u8 & 0x3f);
                }
            }
            2 => {
                while out.len() < end {
                    out.extend_from_slice(words[next() as usize % words.len()]);
                }
            }
            3 => out.resize(end, 0),
            4 => {
                let pointer = (next() & 0xff_ffff).to_le_bytes();
                while out.len() < end {
                    out.extend_from_slice(&pointer);
                }
            }
            _ => {
                // Elf64_Rela: offset, info, addend.
                let mut offset = next() & 0xff_fff0;
                while out.len() < end {
                    out.extend_from_slice(&offset.to_le_bytes());
                    out.extend_from_slice(&8u64.to_le_bytes());
                    out.extend_from_slice(&(next() & 0xffff).to_le_bytes());
                    offset += 8;
                }
            }
        }
    }
    out.truncate(len);
    out
}

/// `python3 -m http.server` over a directory: a static server that knows
/// nothing of ranges or S3, as a CDN origin or a plain web server would be.
pub struct StaticServer {
    child: std::process::Child,
    pub url: String,
}

impl StaticServer {
    pub fn start(dir: &Path) -> StaticServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("python3")
            .args([
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                &port.to_string(),
            ])
            .arg("--directory")
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|_| missing("python3"));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "http.server did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        StaticServer {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
