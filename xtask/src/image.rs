//! Build-image recipes: one Containerfile per toolchain, rendered from the
//! matrix. The image tag is a hash of the recipe, so an unchanged recipe is
//! never rebuilt and a changed one never reuses a stale image.

use std::path::Path;

use anyhow::Result;
use sha2::{Digest, Sha256};

use crate::flags::ImageCmd;
use crate::matrix::{DnfRepo, Family, Matrix, Toolchain};
use crate::package::output::hex;

/// Where Spack, its packages and its Python live in the image.
pub const SPACK_ROOT: &str = "/opt/spack";
pub const SPACK_PACKAGES: &str = "/opt/spack-packages";
pub const SPACK_VENV: &str = "/opt/spack-venv";

/// OS build tools that Spack should take from the image instead of building.
const EXTERNAL_TOOLS: &[&str] = &[
    "perl",
    "gmake",
    "tar",
    "git",
    "diffutils",
    "findutils",
    "m4",
];

pub struct Recipe {
    pub text: String,
    pub tag: String,
}

pub fn recipe(matrix: &Matrix, tc: &Toolchain) -> Recipe {
    let mut r = String::new();
    let line = |r: &mut String, s: &str| {
        r.push_str(s);
        r.push('\n');
    };
    line(
        &mut r,
        &format!("# Build image for the {} toolchain ({}).", tc.name, tc.os),
    );
    line(
        &mut r,
        &format!(
            "# Rendered by `cargo xtask image --toolchain {}` from spack-env/matrix.yaml.",
            tc.name
        ),
    );
    line(&mut r, &format!("FROM {}", tc.image));
    line(
        &mut r,
        "SHELL [\"/bin/bash\", \"-o\", \"pipefail\", \"-c\"]",
    );
    match tc.family {
        Family::Apt => {
            let mut pkgs = vec![
                "gcc",
                "g++",
                "gfortran",
                "make",
                "patch",
                "bzip2",
                "xz-utils",
                "unzip",
                "zstd",
                "file",
                "git",
                "curl",
                "ca-certificates",
                "gnupg",
                "lmod",
                "patchelf",
                "python3",
                "python3-venv",
                "ccache",
                "perl",
                "m4",
                "tar",
                "findutils",
                "diffutils",
            ];
            pkgs.extend(python_packages(tc));
            line(&mut r, "RUN export DEBIAN_FRONTEND=noninteractive \\");
            line(&mut r, " && apt-get update \\");
            line(
                &mut r,
                &format!(
                    " && apt-get install -y --no-install-recommends {} \\",
                    pkgs.join(" ")
                ),
            );
            line(&mut r, " && rm -rf /var/lib/apt/lists/*");
        }
        Family::Dnf => {
            let mut setup = vec!["dnf install -y dnf-plugins-core".to_string()];
            for repo in &tc.dnf_repos {
                setup.push(match repo {
                    DnfRepo::Epel => "dnf install -y epel-release".to_string(),
                    DnfRepo::Crb => "dnf config-manager --set-enabled crb".to_string(),
                    DnfRepo::Powertools => {
                        "dnf config-manager --set-enabled powertools".to_string()
                    }
                });
            }
            let mut pkgs = vec![
                "gcc",
                "gcc-c++",
                "gcc-gfortran",
                "make",
                "patch",
                "bzip2",
                "xz",
                "unzip",
                "zstd",
                "file",
                "git",
                "curl",
                "ca-certificates",
                "gnupg2",
                "Lmod",
                "patchelf",
                "python3",
                "ccache",
                "perl",
                "m4",
                "tar",
                "findutils",
                "diffutils",
                "which",
            ];
            pkgs.extend(python_packages(tc));
            line(&mut r, &format!("RUN {} \\", setup.join(" \\\n && ")));
            // --allowerasing: the images ship curl-minimal, which conflicts with curl.
            line(
                &mut r,
                &format!(" && dnf install -y --allowerasing {} \\", pkgs.join(" ")),
            );
            line(&mut r, " && dnf clean all");
        }
    }
    let spack = &matrix.spack;
    line(
        &mut r,
        &format!(
            "RUN git clone --depth 1 --branch {} https://github.com/{}.git {SPACK_ROOT} \\",
            spack.git_ref, spack.repository
        ),
    );
    line(
        &mut r,
        &format!(
            " && git clone --depth 1 --branch {} https://github.com/{}.git {SPACK_PACKAGES}",
            spack.packages_ref, spack.packages_repository
        ),
    );
    // Spack's Python: a venv with the solver and boto3 (for s3:// mirrors).
    let python = tc.spack_python.as_ref();
    match python.and_then(|p| p.uv.as_deref()) {
        Some(version) => {
            line(&mut r, "ENV UV_PYTHON_INSTALL_DIR=/opt/uv-python");
            line(&mut r, "RUN python3 -m venv /opt/uv \\");
            line(
                &mut r,
                " && /opt/uv/bin/pip install --no-cache-dir 'uv>=0.9,<0.10' \\",
            );
            line(
                &mut r,
                &format!(" && /opt/uv/bin/uv venv --python {version} {SPACK_VENV} \\"),
            );
            line(
                &mut r,
                &format!(
                    " && /opt/uv/bin/uv pip install --python {SPACK_VENV}/bin/python 'clingo>=5.8,<5.9' 'boto3>=1.35,<2'"
                ),
            );
        }
        None => {
            let interpreter = python.and_then(|p| p.path.as_deref()).unwrap_or("python3");
            line(
                &mut r,
                &format!("RUN {interpreter} -m venv {SPACK_VENV} \\"),
            );
            line(
                &mut r,
                &format!(
                    " && {SPACK_VENV}/bin/pip install --no-cache-dir 'clingo>=5.8,<5.9' 'boto3>=1.35,<2'"
                ),
            );
        }
    }
    line(
        &mut r,
        &format!(
            "ENV SPACK_ROOT={SPACK_ROOT} SPACK_PYTHON={SPACK_VENV}/bin/python SPACK_DISABLE_LOCAL_CONFIG=1 \\\n    PATH={SPACK_ROOT}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        ),
    );
    // Site scope: the pinned builtin packages, and the OS tools as externals.
    line(
        &mut r,
        &format!(
            "RUN printf 'repos:\\n  builtin: {SPACK_PACKAGES}/repos/spack_repo/builtin\\n' > {SPACK_ROOT}/etc/spack/repos.yaml \\"
        ),
    );
    line(
        &mut r,
        &format!(
            " && spack external find --scope site {} \\",
            EXTERNAL_TOOLS.join(" ")
        ),
    );
    // The build runs as the invoking user: everything it writes is mounted or here.
    line(
        &mut r,
        " && mkdir -p /opt/slurm /opt/slurm-factory && chmod 1777 /opt/slurm /opt/slurm-factory",
    );
    let tag = format!(
        "localhost/slurm-factory-{}:{}",
        tc.name,
        &hex(&Sha256::digest(r.as_bytes()))[..16]
    );
    Recipe { text: r, tag }
}

fn python_packages(tc: &Toolchain) -> Vec<&str> {
    tc.spack_python
        .as_ref()
        .map(|p| p.packages.iter().map(String::as_str).collect())
        .unwrap_or_default()
}

impl ImageCmd {
    pub fn run(self, _root: &Path, matrix: &Matrix) -> Result<()> {
        let tc = matrix.toolchain(&self.toolchain)?;
        let recipe = recipe(matrix, tc);
        if self.print {
            out!("{}", recipe.text);
        } else {
            outln!("{}", recipe.tag);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::MATRIX_FILE;

    fn matrix() -> Matrix {
        Matrix::load(Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()).unwrap()
    }

    #[test]
    fn every_toolchain_has_a_complete_recipe() {
        let m = matrix();
        let mut tags = std::collections::HashSet::new();
        for tc in &m.toolchains {
            let r = recipe(&m, tc);
            assert!(
                r.text.contains(&format!("FROM {}\n", tc.image)),
                "{}",
                tc.name
            );
            for needle in [
                "git clone --depth 1 --branch v1.1.0 https://github.com/spack/spack.git",
                "--branch v2025.11.0 https://github.com/spack/spack-packages.git",
                "patchelf",
                "spack external find --scope site",
                "clingo",
                "boto3",
            ] {
                assert!(r.text.contains(needle), "{}: {needle}", tc.name);
            }
            assert!(r.text.contains(if tc.family == Family::Apt {
                "gfortran"
            } else {
                "gcc-gfortran"
            }));
            assert!(r.text.contains(if tc.family == Family::Apt {
                " lmod "
            } else {
                " Lmod "
            }));
            assert!(tags.insert(r.tag.clone()), "{} shares a tag", tc.name);
            assert_eq!(r.tag, recipe(&m, tc).tag, "the tag is stable");
        }
    }

    #[test]
    fn toolchain_quirks_are_in_the_recipes() {
        let m = matrix();
        let r8 = recipe(&m, m.toolchain("rockylinux8").unwrap()).text;
        assert!(r8.contains("dnf config-manager --set-enabled powertools"));
        assert!(
            r8.contains("python39")
                && r8.contains("RUN /usr/bin/python3.9 -m venv /opt/spack-venv")
        );
        let r9 = recipe(&m, m.toolchain("rockylinux9").unwrap()).text;
        assert!(r9.contains("dnf install -y epel-release") && r9.contains("--set-enabled crb"));
        let resolute = recipe(&m, m.toolchain("resolute").unwrap()).text;
        assert!(resolute.contains("uv venv --python 3.13 /opt/spack-venv"));
        let jammy = recipe(&m, m.toolchain("jammy").unwrap()).text;
        assert!(jammy.contains("RUN python3 -m venv /opt/spack-venv"));
        assert!(!jammy.contains("dnf"));
    }

    #[test]
    fn a_changed_recipe_gets_a_new_tag() {
        let m = matrix();
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join(MATRIX_FILE),
        )
        .unwrap();
        let changed = Matrix::parse(
            &text
                .replace("gcc: 11.4.0", "gcc: 11.4.1")
                .replace("ref: v1.1.0", "ref: v1.1.1"),
        )
        .unwrap();
        let tc = "jammy";
        assert_ne!(
            recipe(&m, m.toolchain(tc).unwrap()).tag,
            recipe(&changed, changed.toolchain(tc).unwrap()).tag
        );
    }
}
