//! What the benchmarks stand on: the generated Slurm-like tree and its
//! lockfile, a throwaway signing key, a loopback server for the peers, and
//! the measuring helpers (CPU seconds, sizes, a warm page cache).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::process;

/// A passphrase-less signing key in a temporary GnuPG home: (secret, public), armored.
pub(super) fn throwaway_key(work: &Path) -> Result<(Vec<u8>, Vec<u8>)> {
    let home = tempfile::Builder::new().prefix("gnupg-").tempdir_in(work)?;
    let sh = process::shell()?;
    let _home = sh.push_env("GNUPGHOME", home.path());
    let gpg = |args: &[&str]| -> Result<Vec<u8>> {
        let gpg = sh
            .cmd("gpg")
            .args(["--batch", "--quiet", "--passphrase", ""]);
        let out = process::output(gpg.args(args))?;
        if !out.status.success() {
            bail!(
                "gpg {args:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(out.stdout)
    };
    gpg(&[
        "--quick-gen-key",
        "Slurm Factory bench <bench@example.invalid>",
        "ed25519",
        "sign",
        "1d",
    ])?;
    let secret = gpg(&[
        "--armor",
        "--pinentry-mode",
        "loopback",
        "--export-secret-keys",
    ])?;
    let public = gpg(&["--armor", "--export"])?;
    let _ = process::output(sh.cmd("gpgconf").args(["--kill", "gpg-agent"]));
    Ok((secret, public))
}

/// A server on a free loopback port, stopped when dropped.
pub(super) struct LoopbackServer {
    pub(super) child: std::process::Child,
    port: u16,
}

impl LoopbackServer {
    /// Starts the command `command(port)` builds and waits until it listens.
    pub(super) fn start(
        what: &str,
        command: impl FnOnce(u16) -> Command,
    ) -> Result<LoopbackServer> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = command(port)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        let server = LoopbackServer { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("{what} did not start listening on port {port}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }

    pub(super) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for LoopbackServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// User plus system CPU seconds a process has used so far (Linux /proc).
pub(super) fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
        .sum();
    ticks / 100.0
}

pub(super) fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "MISS" }
}

pub(super) fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

pub(super) fn tree_size(dir: &Path) -> Result<(u64, usize)> {
    let mut bytes = 0;
    let mut files = 0;
    for e in walkdir::WalkDir::new(dir) {
        let e = e?;
        if e.file_type().is_file() {
            bytes += e.metadata()?.len();
            files += 1;
        }
    }
    Ok((bytes, files))
}

pub(super) fn warm_cache(dir: &Path) -> Result<()> {
    for e in walkdir::WalkDir::new(dir) {
        let e = e?;
        if e.file_type().is_file() {
            std::io::copy(&mut std::fs::File::open(e.path())?, &mut std::io::sink())?;
        }
    }
    Ok(())
}

/// A view shaped like Slurm's: a few thousand small text files (headers, man
/// pages, scripts) and large shared libraries. The libraries are real ELF
/// files from this machine where there are any, so they compress like real
/// code does; otherwise a mix of text and noise.
pub(super) fn generate_view(view: &Path, target: u64) -> Result<()> {
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    let words = [
        "slurm",
        "job",
        "node",
        "partition",
        "srun",
        "sbatch",
        "cpus",
        "gres",
        "plugin",
        "the",
        "of",
        "and",
        "to",
        "is",
        "int",
        "char",
        "struct",
        "return",
        "if",
        "NULL",
        "uint32_t",
        "const",
        "void",
        "static",
    ];
    let mut written = 0u64;
    let write = |rel: PathBuf, data: &[u8], mode: u32| -> Result<()> {
        let path = view.join(rel);
        std::fs::create_dir_all(path.parent().unwrap())?;
        std::fs::File::create(&path)?.write_all(data)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
        Ok(())
    };
    // About a tenth of the bytes in 4000 small text files.
    for i in 0..4000 {
        let len = 2_000 + rng.next() as usize % (target as usize / 20_000).max(2_000);
        let mut text = String::with_capacity(len + 16);
        while text.len() < len {
            text.push_str(words[rng.next() as usize % words.len()]);
            text.push(if rng.next().is_multiple_of(12) {
                '\n'
            } else {
                ' '
            });
        }
        let dir = [
            "include/slurm",
            "share/man/man1",
            "share/man/man5",
            "share/doc/slurm",
            "etc",
        ][i % 5];
        write(
            PathBuf::from(format!("{dir}/file{i:04}.txt")),
            text.as_bytes(),
            0o644,
        )?;
        written += text.len() as u64;
    }
    let elves: Vec<PathBuf> = walkdir::WalkDir::new("/usr/lib/x86_64-linux-gnu")
        .max_depth(1)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file() && e.file_name().to_string_lossy().contains(".so"))
        .filter(|e| e.metadata().is_ok_and(|m| m.len() > 200_000))
        .map(|e| e.into_path())
        .collect();
    let mut n = 0;
    while written < target {
        let data = match elves.get(n % elves.len().max(1)) {
            Some(p) if !elves.is_empty() => {
                let mut d = std::fs::read(p)?;
                // Copies differ a little, as builds of different plugins do.
                for _ in 0..16 {
                    let at = rng.next() as usize % d.len();
                    d[at] = rng.next() as u8;
                }
                d
            }
            _ => {
                let mut d = vec![0u8; 4 << 20];
                for (i, b) in d.iter_mut().enumerate() {
                    *b = if (i / 8192) % 3 == 0 {
                        rng.next() as u8
                    } else {
                        words[i % words.len()].as_bytes()[0]
                    };
                }
                d
            }
        };
        let name = if n % 4 == 0 {
            format!("lib/libslurm_{n:04}.so")
        } else {
            format!("lib/slurm/plugin_{n:04}.so")
        };
        write(PathBuf::from(name), &data, 0o755)?;
        written += data.len() as u64;
        n += 1;
    }
    Ok(())
}

pub(super) struct XorShift(pub(super) u64);

impl XorShift {
    pub(super) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A minimal lockfile naming one slurm package, for the manifest.
pub(super) const BENCH_LOCK: &str = r#"{"_meta":{"file-type":"spack-lockfile","lockfile-version":6,"specfile-version":5},
"spack":{"version":"1.1.0"},"roots":[{"hash":"benchbenchbenchbenchbenchbench00","spec":"slurm"}],
"concrete_specs":{"benchbenchbenchbenchbenchbench00":{"name":"slurm","version":"25-11-6-1",
"arch":{"platform":"linux","platform_os":"ubuntu24.04","target":"x86_64_v3"},"namespace":"slurm_factory",
"parameters":{"pmix":true},"hash":"benchbenchbenchbenchbenchbench00"}}}"#;
