//! Running programs, through one seam: xshell. Every program the toolkit
//! runs (the container engine, gpg, git, cargo-zigbuild, the benchmarks'
//! peers) is an `xshell::Cmd` made from a `Shell`, whose directory and
//! environment are scoped (`push_dir`, `push_env`), and it runs through one
//! of the functions here. Dry runs and logs print the same argv a command is
//! made from (`container::Shown` quotes it for a shell).
//!
//! Two things a `Cmd` does not do keep a `std::process::Command`, made from
//! the `Cmd` by [`spawnable`] so program, arguments, directory and
//! environment still come from the seam: streaming a child's stdin (gpg
//! signs and verifies gigabytes as they are read) and holding a child to
//! kill (the benchmarks' loopback servers).

use std::ffi::OsStr;
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result};
pub use xshell::{Cmd, Shell};

/// A shell in the current directory with the process's environment.
pub fn shell() -> Result<Shell> {
    Shell::new().context("reading the current directory")
}

/// A command of `sh` from an argv, the program first.
pub fn cmd<'a, S: AsRef<OsStr>>(sh: &'a Shell, argv: &[S]) -> Cmd<'a> {
    let (program, args) = argv.split_first().expect("an argv names its program");
    sh.cmd(program.as_ref()).args(args)
}

/// Runs with stdout and stderr inherited and stdin closed: its exit code
/// (128 + 9 when a signal ended it).
pub fn status(cmd: Cmd<'_>) -> Result<i32> {
    let shown = program(&cmd);
    let status = spawnable(cmd)
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("running {shown}"))?;
    Ok(status.code().unwrap_or(128 + 9))
}

/// Runs with stdout captured and stderr inherited: its exit code and stdout.
pub fn capture(cmd: Cmd<'_>) -> Result<(Option<i32>, String)> {
    let shown = program(&cmd);
    let out = spawnable(cmd)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {shown}"))?;
    Ok((
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

/// Runs quietly, its output captured, whatever its exit status: the caller
/// reads the status and words the failure. An error only when it cannot start.
pub fn output(cmd: Cmd<'_>) -> Result<Output> {
    let shown = program(&cmd);
    cmd.quiet()
        .ignore_status()
        .output()
        .with_context(|| format!("running {shown}"))
}

/// The `std::process::Command` of a `Cmd`: for a stdin that streams, or a
/// child to kill (see the module's comment).
pub fn spawnable(cmd: Cmd<'_>) -> Command {
    cmd.into()
}

/// The program's name, for errors (never the arguments: they may name a
/// secret's file).
fn program(cmd: &Cmd<'_>) -> String {
    cmd.to_string()
        .split(' ')
        .next()
        .unwrap_or_default()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_runs_in_its_shells_directory_and_environment() {
        let sh = shell().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let _d = sh.push_dir(dir.path());
        let _e = sh.push_env("SLURM_FACTORY_PROCESS_TEST", "scoped");
        let (code, out) = capture(cmd(
            &sh,
            &["sh", "-c", "pwd; echo $SLURM_FACTORY_PROCESS_TEST"],
        ))
        .unwrap();
        assert_eq!(code, Some(0));
        let dir = dir.path().canonicalize().unwrap();
        assert_eq!(out, format!("{}\nscoped\n", dir.display()));
        assert_eq!(status(cmd(&sh, &["sh", "-c", "exit 7"])).unwrap(), 7);
        let err = output(cmd(&sh, &["no-such-program-here", "--secret-arg"])).unwrap_err();
        assert_eq!(format!("{err}"), "running no-such-program-here");
    }
}
