//! Real Spack for the tests, as `.ci/spack` (run by `.ci/install`) provides
//! it: the pinned sources as tarballs for the toolkit's image builds, and an
//! unpacked Spack with its solver for checks on the host. Also the tests'
//! Debian 12 toolchain, whose base image `.ci/podman` makes.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::Project;

/// Where `.ci/spack` put everything (`SLURM_FACTORY_SPACK_HOME` overrides).
pub fn home() -> PathBuf {
    let home = std::env::var_os("SLURM_FACTORY_SPACK_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/slurm-factory/spack"));
    assert!(
        home.join("env").is_file(),
        "real Spack is not set up in {}: run `sudo bash .ci/install`",
        home.display()
    );
    home
}

/// The directory of pinned tarballs the toolkit's image build takes.
pub fn sources() -> PathBuf {
    home().join("sources")
}

/// The CA bundle pip trusts inside the image build: the one this machine's
/// pip is configured with, else its system bundle (which holds the CA of a
/// TLS-intercepting proxy where a site installed one).
pub fn ca_bundle() -> Option<PathBuf> {
    ["PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"]
        .iter()
        .filter_map(std::env::var_os)
        .map(PathBuf::from)
        .chain([PathBuf::from("/etc/ssl/certs/ca-certificates.crt")])
        .find(|p| p.is_file())
}

/// The environment every toolkit run that may build an image needs.
pub fn image_env() -> Vec<(&'static str, String)> {
    let mut env = vec![(
        "SLURM_FACTORY_SPACK_SOURCES",
        sources().to_string_lossy().into_owned(),
    )];
    if let Some(ca) = ca_bundle() {
        env.push(("SLURM_FACTORY_CA_BUNDLE", ca.to_string_lossy().into_owned()));
    }
    env
}

/// Spack's misc cache on the host, where `.ci/spack` indexed the package
/// repository once (Spack locks it for concurrent use).
pub fn misc_cache() -> PathBuf {
    home().join("user-cache/cache")
}

/// `spack` on the host, with the shared user cache and its own GPG home.
pub fn spack(scratch: &Path) -> Command {
    let home = home();
    let mut cmd = Command::new(home.join("spack/bin/spack"));
    cmd.env("SPACK_ROOT", home.join("spack"))
        .env("SPACK_PYTHON", home.join("venv/bin/python"))
        .env("SPACK_DISABLE_LOCAL_CONFIG", "1")
        .env("SPACK_USER_CACHE_PATH", home.join("user-cache"))
        .env("SPACK_GNUPGHOME", scratch.join("gnupg"))
        .env_remove("SPACK_ENV");
    cmd
}

/// The tests' toolchain: Debian 12 from the local base image `.ci/podman`
/// builds (no registry can be pulled from here).
pub const BOOKWORM: &str = "  - name: bookworm\n    os: Debian 12\n    image: localbase:bookworm\n    family: apt\n    gcc: 12.2.0\n    glibc: \"2.36\"\n";

/// A scratch copy of the project with the bookworm toolchain added.
pub fn bookworm_project() -> Project {
    let project = Project::copy();
    project.edit("spack-env/matrix.yaml", |t| {
        t.replacen("toolchains:\n", &format!("toolchains:\n{BOOKWORM}"), 1)
    });
    project
}

/// Where a rendered environment's container paths lie on this host, for
/// running Spack on the host with an environment a build container used.
pub struct OnHost<'a> {
    pub repo: &'a Path,
    pub scratch: &'a Path,
    pub templates: &'a Path,
    /// The local store the container mounted, when the environment reads it.
    pub store: Option<&'a Path>,
}

impl OnHost<'_> {
    /// `yaml` with each container path replaced by its host path (the shared
    /// misc cache, so the package repository is not indexed again).
    pub fn map(&self, yaml: &str) -> String {
        let s = |p: PathBuf| p.to_string_lossy().into_owned();
        let mut pairs = vec![
            ("/opt/slurm-factory/spack-repo", s(self.repo.to_path_buf())),
            ("/opt/slurm/software", s(self.scratch.join("software"))),
            ("/opt/slurm-factory/cache/misc", s(misc_cache())),
            ("/opt/slurm-factory/cache", s(self.scratch.join("cache"))),
            ("/opt/slurm/view", s(self.scratch.join("view"))),
            ("/opt/slurm/modules", s(self.scratch.join("modules"))),
            (
                "/opt/slurm-factory/env/templates",
                s(self.templates.to_path_buf()),
            ),
        ];
        if let Some(store) = self.store {
            pairs.push(("/opt/slurm-factory/store", s(store.to_path_buf())));
        }
        pairs
            .into_iter()
            .fold(yaml.to_string(), |y, (from, to)| y.replace(from, &to))
    }
}
