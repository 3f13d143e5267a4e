//! SHA-256 as text: lowercase hex, and the `sha256sum` lines every `.sha256`
//! file holds. Written by `package` and `admin-binary`, read by `publish` and
//! `download`: the one place the format is spelled.

use anyhow::{Context, Result, bail};

/// Lowercase hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `sha256sum` format: what `sha256sum -c` reads.
pub fn checksum_line(sha: &str, name: &str) -> String {
    format!("{sha}  {name}\n")
}

/// The SHA-256 a `sha256sum` line (`checksum_line`) gives for `name`; `what`
/// names the checksum file in errors.
pub fn parse_checksum_line(text: &str, name: &str, what: &str) -> Result<String> {
    let (sum, file) = text
        .trim()
        .split_once("  ")
        .with_context(|| format!("{what} is not in sha256sum format"))?;
    if file != name {
        bail!("{what} names {file}, not {name}");
    }
    if sum.len() != 64 || !sum.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("{what} holds no SHA-256");
    }
    Ok(sum.to_ascii_lowercase())
}
