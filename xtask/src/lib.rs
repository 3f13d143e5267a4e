//! The Slurm Factory toolkit. Two executables share it: `cargo xtask` (every
//! stage of the pipeline, for release engineers, in a checkout) and
//! `slurm-factory` (the admins' installer: `download` alone, with the release
//! policy it was built with, no checkout needed). This file only parses the
//! command line and dispatches; each stage lives in its own module.

/// `println!`/`print!` for results on stdout: a reader that went away (`cargo
/// xtask matrix | head -1`) is not an error, where std's macros would panic.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        $crate::stdout_result(writeln!(std::io::stdout(), $($arg)*));
    }};
}

macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        $crate::stdout_result(write!(std::io::stdout(), $($arg)*));
    }};
}

/// Writing to stdout failed: a closed pipe is ignored, anything else is fatal.
#[doc(hidden)]
pub fn stdout_result(result: std::io::Result<()>) {
    if let Err(e) = result
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        panic!("writing to stdout: {e}");
    }
}

mod admin_binary;
mod bench;
mod build;
mod checksum;
mod codegen;
mod container;
mod decide;
mod download;
mod error;
mod fingerprint;
mod flags;
mod gha;
mod http;
mod image;
mod manifest;
mod matrix;
mod mirror;
mod module;
mod package;
mod plan;
mod process;
mod project;
mod publish;
mod report;
mod schema;
mod sign;
mod spack_env;
mod spack_sources;
mod state;
mod store;
mod verify;
mod workflows;

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser as _;

use error::UsageError;
use flags::{AdminCli, AdminCommand, Cli, Command, MatrixCmd};
use matrix::{Matrix, Stage};

/// `cargo xtask`: every command, in a checkout.
pub fn xtask_main() -> ExitCode {
    exit_code(run(Cli::parse()))
}

/// `slurm-factory`: the admins' installer. It reads no checkout: the release
/// policy (repository, pinned key, known names) is the one it was built with.
pub fn admin_main() -> ExitCode {
    let cli = AdminCli::parse_with_examples();
    let policy = match schema::ReleasePolicy::built_in() {
        Ok(p) => p,
        Err(e) => return exit_code(Err(e)),
    };
    exit_code(match cli.command {
        AdminCommand::Download(cmd) => cmd
            .request(None, &policy)
            .and_then(|req| download::run(req, &policy))
            .map(|()| ExitCode::SUCCESS),
    })
}

/// A command's result as the process's exit status: 2 for usage errors (as
/// clap's own), the code an `Exit` carries, 1 for anything else; errors are
/// one line on stderr (and an annotation under GitHub Actions).
fn exit_code(result: Result<ExitCode>) -> ExitCode {
    let err = match result {
        Ok(code) => return code,
        Err(err) => err,
    };
    if let Some(usage) = err.downcast_ref::<UsageError>() {
        eprintln!("error: {usage}");
        return ExitCode::from(2);
    }
    if let Some(exit) = err.downcast_ref::<error::Exit>() {
        gha::error_annotation(&exit.message);
        eprintln!("error: {}", exit.message);
        return ExitCode::from(u8::try_from(exit.code).unwrap_or(1).max(1));
    }
    let mut message = format!("{err:#}");
    if let Some(r) = err
        .chain()
        .find_map(|e| e.downcast_ref::<error::Remediable>())
    {
        message.push_str(&flags::remedy(r.remedy));
    }
    gha::error_annotation(&message);
    eprintln!("error: {message}");
    ExitCode::FAILURE
}

fn run(cli: Cli) -> Result<ExitCode> {
    let root = matrix::project_root(cli.root)?;
    let project = project::Project::load(&root)?;
    let matrix = &project.matrix;
    match cli.command {
        Command::Matrix(cmd) => cmd.run(matrix).map(|()| ExitCode::SUCCESS),
        Command::Workflows(cmd) => codegen::run(&root, matrix, cmd.check),
        Command::Plan(cmd) => plan::run(&project, &cmd.job(&root)?).map(|()| ExitCode::SUCCESS),
        Command::SpackEnv(cmd) => {
            let (cell, opts) = (cmd.cell(matrix)?, cmd.options(matrix)?);
            spack_env::write(&project, &cell, &opts, &cmd.out).map(|()| ExitCode::SUCCESS)
        }
        Command::Package(cmd) => {
            package::run(&project, &cmd.job(matrix)?).map(|()| ExitCode::SUCCESS)
        }
        Command::Bench(cmd) => bench::run(&project, &cmd.job()).map(|()| ExitCode::SUCCESS),
        Command::Image(cmd) => image::run(matrix, &cmd.job(&project)?).map(|()| ExitCode::SUCCESS),
        Command::BuildDeps(cmd) => {
            let job = cmd.job(matrix)?;
            build::deps(&project, &job, &cmd.build.options(true)?).map(|()| ExitCode::SUCCESS)
        }
        Command::BuildSlurm(cmd) => {
            let job = cmd.job(matrix)?;
            build::slurm(&project, &job, &cmd.build.options(true)?).map(|()| ExitCode::SUCCESS)
        }
        Command::Index(cmd) => {
            let cell = cmd.cell(matrix)?;
            build::index(&project, cell, &cmd.build.options(false)?).map(|()| ExitCode::SUCCESS)
        }
        Command::Verify(cmd) => verify::run(matrix, &cmd.job()?).map(|()| ExitCode::SUCCESS),
        Command::Publish(cmd) => publish::run(cmd.job(&root)?, &schema::ReleasePolicy::of(matrix))
            .map(|()| ExitCode::SUCCESS),
        Command::Download(cmd) => {
            let policy = schema::ReleasePolicy::of(matrix);
            let req = cmd.request(Some(&root), &policy)?;
            download::run(req, &policy).map(|()| ExitCode::SUCCESS)
        }
        Command::AdminBinary(cmd) => {
            admin_binary::run(&root, matrix, &cmd.job()?).map(|()| ExitCode::SUCCESS)
        }
        Command::Report(cmd) => report::run(&project, cmd.job(&root)?).map(|()| ExitCode::SUCCESS),
    }
}

impl MatrixCmd {
    fn run(self, matrix: &Matrix) -> Result<()> {
        let cells = matrix.cells(Stage::Slurm, &self.filter.cells())?;
        if self.json {
            let list: Vec<_> = cells
                .iter()
                .map(|c| {
                    serde_json::json!({
                        "version": c.release.map(|r| &r.version),
                        "spack_version": c.release.map(|r| &r.spack_version),
                        "toolchain": c.toolchain.name,
                        "variant": c.variant,
                        "os": c.toolchain.os,
                        "image": c.toolchain.image,
                        "gcc": c.toolchain.gcc,
                        "glibc": c.toolchain.glibc,
                        "runs-on": c.runner(),
                    })
                })
                .collect();
            outln!("{}", serde_json::to_string_pretty(&list)?);
        } else {
            let rows: Vec<[String; 6]> = cells
                .iter()
                .map(|c| {
                    [
                        c.release.map_or(String::new(), |r| r.version.clone()),
                        c.toolchain.name.clone(),
                        c.variant.to_string(),
                        c.toolchain.image.clone(),
                        format!("gcc@{}", c.toolchain.gcc),
                        c.runner().join(","),
                    ]
                })
                .collect();
            out!(
                "{}",
                text_table(
                    &[
                        "version",
                        "toolchain",
                        "variant",
                        "image",
                        "compiler",
                        "runner"
                    ],
                    &rows
                )
            );
            outln!("{} cells", cells.len());
        }
        Ok(())
    }
}

/// A plain left-aligned text table, columns two spaces apart.
pub fn text_table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let joined: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(joined.join("  ").trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}
