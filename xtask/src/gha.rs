//! GitHub Actions integration: log groups, errors, step outputs and the job
//! summary, active only when `GITHUB_ACTIONS=true`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};

pub fn in_actions() -> bool {
    std::env::var_os("GITHUB_ACTIONS").is_some_and(|v| v == "true")
}

/// Prints `::error::` under Actions so the failure is annotated on the run.
pub fn error_annotation(message: &str) {
    if in_actions() {
        outln!("::error::{}", encode(message));
    }
}

/// A warning: `warning: …` on stderr, and annotated on the run under Actions.
pub fn warning(message: &str) {
    if in_actions() {
        outln!("::warning::{}", encode(message));
    }
    eprintln!("warning: {message}");
}

/// Workflow commands end at a newline; encode the ones inside the message.
fn encode(message: &str) -> String {
    message
        .replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Appends `name=value` lines to `$GITHUB_OUTPUT`. Values must be one line.
pub fn set_outputs(pairs: &[(&str, String)]) -> Result<()> {
    let path = env_file("GITHUB_OUTPUT")?;
    let mut text = String::new();
    for (name, value) in pairs {
        if value.contains('\n') {
            bail!("output `{name}` spans several lines");
        }
        text.push_str(&format!("{name}={value}\n"));
    }
    append(path, &text)
}

/// Appends Markdown to `$GITHUB_STEP_SUMMARY`, if the variable is set.
pub fn append_summary(markdown: &str) -> Result<()> {
    match std::env::var_os("GITHUB_STEP_SUMMARY") {
        Some(path) => append(PathBuf::from(path), markdown),
        None => Ok(()),
    }
}

fn env_file(name: &str) -> Result<PathBuf> {
    match std::env::var_os(name) {
        Some(p) if !p.is_empty() => Ok(PathBuf::from(p)),
        _ => bail!("${name} is not set: --github-output works inside a GitHub Actions step"),
    }
}

fn append(path: PathBuf, text: &str) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// A collapsible log group under Actions (a plain heading elsewhere), closed on drop.
pub struct Group {
    active: bool,
}

impl Group {
    pub fn new(title: &str) -> Group {
        let active = in_actions();
        if active {
            outln!("::group::{title}");
        }
        Group { active }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if self.active {
            outln!("::endgroup::");
        }
    }
}
