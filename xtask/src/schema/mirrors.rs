//! Where the Spack mirrors live in a store (local directory or bucket).

/// A mirror's key in the store: `<toolchain>/slurm/deps` (stage 1) or
/// `<toolchain>/slurm/<version>` (stage 2). A rehearsal's fake binaries
/// go under `rehearsal/`, never beside the real ones.
pub fn key(toolchain: &str, what: &str, rehearsal: bool) -> String {
    let rel = format!("{toolchain}/slurm/{what}");
    if rehearsal {
        format!("{REHEARSAL_PREFIX}/{rel}")
    } else {
        rel
    }
}

/// The store's directory of everything a rehearsal writes.
pub const REHEARSAL_PREFIX: &str = "rehearsal";

/// The state object of a mirror (see `state`): beside it in the store.
pub fn state_key(toolchain: &str, what: &str) -> String {
    format!("{}/state.json", key(toolchain, what, false))
}
