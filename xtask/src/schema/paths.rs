//! Paths inside the build container. The container run mounts the host
//! directories here, so the rendered files are the same on every host.

/// The rendered environment directory (read-only).
pub const ENV: &str = "/opt/slurm-factory/env";
/// This repository's `spack-repo/` (read-only).
pub const SPACK_REPO: &str = "/opt/slurm-factory/spack-repo";
/// Persistent caches: downloaded sources and Spack's misc cache.
pub const SOURCE_CACHE: &str = "/opt/slurm-factory/cache/source";
pub const MISC_CACHE: &str = "/opt/slurm-factory/cache/misc";
/// The local directory store (`target/slurm-factory/store` on the host).
pub const LOCAL_STORE: &str = "/opt/slurm-factory/store";
/// Where Spack unpacks and builds (the debug bundle is collected from here).
pub const BUILD_STAGE: &str = "/tmp/spack-stage";
/// Where Spack installs, padded so binaries can be relocated.
pub const INSTALL_ROOT: &str = "/opt/slurm/software";
/// Where Spack writes the slurm stage's modules.
pub const MODULES_ROOT: &str = "/opt/slurm/modules";

/// The mounts every build gets (work, debug bundle, keys, hand-over, mirror, ccache).
pub mod mnt {
    pub const WORK: &str = "/opt/slurm-factory/work";
    pub const DEBUG: &str = "/opt/slurm-factory/debug";
    pub const KEYS: &str = "/opt/slurm-factory/keys";
    pub const OUT: &str = "/opt/slurm-factory/out";
    pub const MIRROR: &str = "/opt/slurm-factory/mirror";
    pub const CCACHE: &str = "/opt/slurm-factory/cache/ccache";
}
