//! The admins' executable.

/// The Rust target it is built for: glibc 2.28 is Rocky Linux 8's, the
/// oldest toolchain, so it runs on every supported OS as it comes.
pub const TARGET: &str = "x86_64-unknown-linux-gnu.2.28";
/// The `cargo build` target directory (under the project's `target/`).
pub const TARGET_DIR: &str = "target/admin-binary";
/// The tools that build it, from PyPI, pinned (`.ci/install` and the
/// release workflow install exactly these).
pub const BUILD_TOOLS: [&str; 2] = ["cargo-zigbuild==0.24.0", "ziglang==0.17.0"];
/// Where the store keeps the newest one: a stable location for admins
/// (`<public URL>/tools/<name>`), replaced by every release.
pub const STORE_DIR: &str = "tools";

/// The released file's name: stable across releases, so
/// `releases/latest/download/<name>` always finds the newest.
pub fn file_name(arch: &str) -> String {
    format!("slurm-factory-{arch}-linux")
}

/// Whether a file in an output directory is the binary (of any arch) or
/// its checksum or signature.
pub fn is_release_file(name: &str) -> bool {
    let base = name
        .strip_suffix(".sha256")
        .or_else(|| name.strip_suffix(".asc"))
        .unwrap_or(name);
    base.strip_prefix("slurm-factory-")
        .and_then(|rest| rest.strip_suffix("-linux"))
        .is_some_and(|arch| !arch.is_empty() && !arch.contains(['/', '.']))
}
