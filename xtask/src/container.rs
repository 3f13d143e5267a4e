//! The container engine (Podman or Docker) behind one seam: image builds and
//! runs are values first (printed by `--dry-run`), then executed. Engine
//! options for restricted hosts (runtime, cgroups, ulimits, storage) belong in
//! the engine's own configuration, not here.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use crate::error::{Remediable, Remedy, UsageError};
use crate::process;

pub const ENGINE_VAR: &str = "SLURM_FACTORY_ENGINE";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    Podman,
    Docker,
}

impl EngineKind {
    pub fn program(self) -> &'static str {
        match self {
            EngineKind::Podman => "podman",
            EngineKind::Docker => "docker",
        }
    }
}

/// `--engine`, else `$SLURM_FACTORY_ENGINE`, else the first of podman and
/// docker on PATH. `None` only when `allow_missing` (dry runs need no engine).
pub fn detect(explicit: Option<EngineKind>, allow_missing: bool) -> Result<Option<EngineKind>> {
    let chosen = match explicit {
        Some(e) => Some(e),
        None => match std::env::var(ENGINE_VAR) {
            Ok(v) if !v.is_empty() => Some(match v.as_str() {
                "podman" => EngineKind::Podman,
                "docker" => EngineKind::Docker,
                other => {
                    return Err(UsageError::new(format!(
                        "{ENGINE_VAR}={other} is not an engine (valid: podman, docker)"
                    ))
                    .into());
                }
            }),
            _ => [EngineKind::Podman, EngineKind::Docker]
                .into_iter()
                .find(|e| on_path(e.program())),
        },
    };
    match chosen {
        Some(e) if on_path(e.program()) || allow_missing => Ok(Some(e)),
        Some(e) => bail!(
            "the container engine `{}` is not installed (or not on PATH)",
            e.program()
        ),
        None if allow_missing => Ok(None),
        None => Err(Remediable::new(
            "no container engine found: install Podman or Docker",
            Remedy::ChooseEngine,
        )
        .into()),
    }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

/// A bind mount.
#[derive(Debug, Clone)]
pub struct Mount {
    pub host: PathBuf,
    pub container: String,
    pub read_only: bool,
}

/// An environment variable for the container. Secrets are passed by name
/// only (`-e NAME`): the engine copies the value from its own environment,
/// so it never appears on a command line.
#[derive(Debug, Clone)]
pub enum EnvVar {
    Set(String, String),
    PassThrough(String),
}

/// One `engine run`.
#[derive(Debug, Clone)]
pub struct Run {
    pub image: String,
    /// Pass the host's GPUs in (devices and driver libraries, through the
    /// engine's CDI or GPU support): a GPU runner's own check.
    pub host_gpus: bool,
    pub user: Option<(u32, u32)>,
    pub network: String,
    pub mounts: Vec<Mount>,
    pub env: Vec<EnvVar>,
    pub command: Vec<String>,
}

/// One `engine build`.
#[derive(Debug, Clone)]
pub struct Build {
    pub tag: String,
    pub containerfile: PathBuf,
    pub context: PathBuf,
}

impl Run {
    pub fn argv(&self, engine: EngineKind) -> Vec<String> {
        let mut a: Vec<String> = vec![engine.program().into(), "run".into(), "--rm".into()];
        if self.host_gpus {
            a.push(
                match engine {
                    EngineKind::Podman => "--device=nvidia.com/gpu=all",
                    EngineKind::Docker => "--gpus=all",
                }
                .into(),
            );
        }
        a.push(format!("--network={}", self.network));
        if let Some((uid, gid)) = self.user {
            a.push(format!("--user={uid}:{gid}"));
            // Rootless Podman maps the container's uid to the invoking user's.
            if engine == EngineKind::Podman && uid != 0 {
                a.push("--userns=keep-id".into());
            }
        }
        for m in &self.mounts {
            let ro = if m.read_only { ":ro" } else { "" };
            a.push(format!("--volume={}:{}{ro}", m.host.display(), m.container));
        }
        for e in &self.env {
            match e {
                EnvVar::Set(k, v) => a.push(format!("--env={k}={v}")),
                EnvVar::PassThrough(k) => a.push(format!("--env={k}")),
            }
        }
        a.push(self.image.clone());
        a.extend(self.command.iter().cloned());
        a
    }
}

impl Build {
    pub fn argv(&self, engine: EngineKind) -> Vec<String> {
        let mut a: Vec<String> = vec![engine.program().into(), "build".into()];
        if engine == EngineKind::Podman {
            // Podman's default OCI format ignores SHELL (and with it the
            // recipe's `pipefail`); Docker's format keeps it.
            a.push("--format=docker".into());
        }
        a.extend([
            // Package managers in the recipe need the network; host avoids the bridge.
            "--network=host".into(),
            format!("--tag={}", self.tag),
            format!("--file={}", self.containerfile.display()),
            self.context.display().to_string(),
        ]);
        a
    }
}

/// Shell-quotes an argv for printing (dry runs, logs).
pub struct Shown<'a>(pub &'a [String]);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words: Vec<String> = self
            .0
            .iter()
            .map(|w| {
                if !w.is_empty()
                    && w.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@,+%".contains(&b))
                {
                    w.clone()
                } else {
                    format!("'{}'", w.replace('\'', "'\\''"))
                }
            })
            .collect();
        f.write_str(&words.join(" "))
    }
}

pub fn image_exists(engine: EngineKind, tag: &str) -> Result<bool> {
    let sh = process::shell()?;
    let out = process::output(process::cmd(
        &sh,
        &[engine.program(), "image", "inspect", tag],
    ))?;
    Ok(out.status.success())
}

/// Pulls an image the engine does not have; the engine's last line of
/// complaint when it cannot.
pub fn pull(engine: EngineKind, image: &str) -> Result<()> {
    let sh = process::shell()?;
    let out = process::output(process::cmd(
        &sh,
        &[engine.program(), "pull", "--quiet", image],
    ))?;
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr);
        bail!("{}", why.lines().last().unwrap_or("").trim());
    }
    Ok(())
}

/// Runs a container and captures what it prints on stdout (its stderr goes
/// to ours): the run's exit code and its output.
pub fn capture(run: &Run, engine: EngineKind) -> Result<(Option<i32>, String)> {
    let argv = run.argv(engine);
    outln!("{}", Shown(&argv));
    let sh = process::shell()?;
    process::capture(process::cmd(&sh, &argv))
}

/// Runs an argv with inherited output; returns its exit code.
pub fn execute(argv: &[String]) -> Result<i32> {
    let sh = process::shell()?;
    process::status(process::cmd(&sh, argv))
}

/// The invoking user's uid and gid: the build runs as them, so everything it
/// writes into the mounts belongs to them.
pub fn invoking_user() -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    // A process's own /proc entry is owned by its effective uid and gid.
    std::fs::metadata("/proc/self")
        .map(|m| (m.uid(), m.gid()))
        .unwrap_or((0, 0))
}

pub fn mount(host: &Path, container: &str, read_only: bool) -> Mount {
    Mount {
        host: host.to_path_buf(),
        container: container.into(),
        read_only,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_argv_passes_secrets_by_name_only() {
        let run = Run {
            image: "img:1".into(),
            host_gpus: false,
            user: Some((1000, 1000)),
            network: "none".into(),
            mounts: vec![mount(Path::new("/h/env"), "/opt/env", true)],
            env: vec![
                EnvVar::Set("A".into(), "b".into()),
                EnvVar::PassThrough("AWS_SECRET_ACCESS_KEY".into()),
            ],
            command: vec!["bash".into(), "/opt/env/build.sh".into()],
        };
        let argv = run.argv(EngineKind::Podman);
        assert_eq!(
            Shown(&argv).to_string(),
            "podman run --rm --network=none --user=1000:1000 --userns=keep-id --volume=/h/env:/opt/env:ro --env=A=b --env=AWS_SECRET_ACCESS_KEY img:1 bash /opt/env/build.sh"
        );
        let docker = run.argv(EngineKind::Docker);
        assert!(!docker.contains(&"--userns=keep-id".to_string()));
    }

    #[test]
    fn the_hosts_gpus_come_in_through_each_engines_own_flag() {
        let run = Run {
            image: "img:1".into(),
            host_gpus: true,
            user: None,
            network: "host".into(),
            mounts: vec![],
            env: vec![],
            command: vec!["nvidia-smi".into()],
        };
        assert_eq!(
            Shown(&run.argv(EngineKind::Podman)).to_string(),
            "podman run --rm --device=nvidia.com/gpu=all --network=host img:1 nvidia-smi"
        );
        assert_eq!(
            Shown(&run.argv(EngineKind::Docker)).to_string(),
            "docker run --rm --gpus=all --network=host img:1 nvidia-smi"
        );
    }

    #[test]
    fn shown_quotes_what_the_shell_would_split() {
        let argv = vec!["echo".to_string(), "a b".to_string(), "it's".to_string()];
        assert_eq!(Shown(&argv).to_string(), "echo 'a b' 'it'\\''s'");
    }
}
