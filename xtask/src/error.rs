//! The two errors that decide an exit status: a usage error (exit 2, as
//! clap's own) and an `Exit` carrying a status (a container's); and an error
//! whose way out is a flag, which the edge spells (`Remediable`). A leaf:
//! every stage may return them, and only the entry points read them.

use std::fmt;

/// A failure that ends the command with a given exit status (a container's).
#[derive(Debug)]
pub struct Exit {
    pub code: i32,
    pub message: String,
}

impl Exit {
    pub fn new(code: i32, message: String) -> Exit {
        Exit { code, message }
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Exit {}

/// A mistake in what the user asked for (an unknown toolchain, a flag that does
/// not fit the stage). `main` prints it like clap does and exits 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl UsageError {
    pub fn new(message: impl Into<String>) -> Self {
        UsageError(message.into())
    }

    pub fn unknown<T: fmt::Display>(
        what: &str,
        value: &str,
        valid: impl IntoIterator<Item = T>,
    ) -> Self {
        let valid: Vec<String> = valid.into_iter().map(|v| v.to_string()).collect();
        UsageError(format!(
            "unknown {what} '{value}' (valid: {})",
            valid.join(", ")
        ))
    }
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// A way out of an error that the user takes on the command line. An engine
/// names it; only the edge spells it as flags (`flags::remedy`), so that a
/// flag's name is written in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remedy {
    /// Publish unsigned packages, as a local test store may.
    AllowUnsigned,
    /// Name the container engine, or only print the plan.
    ChooseEngine,
    /// Give a local copy of the pinned Spack.
    SpackSources,
}

/// An error whose way out is a [`Remedy`]; the edge adds how to take it.
#[derive(Debug)]
pub struct Remediable {
    pub message: String,
    pub remedy: Remedy,
}

impl Remediable {
    pub fn new(message: impl Into<String>, remedy: Remedy) -> Remediable {
        Remediable {
            message: message.into(),
            remedy,
        }
    }
}

impl fmt::Display for Remediable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Remediable {}
