//! Build-image recipes: one Containerfile per toolchain, rendered from the
//! matrix. The image tag is a hash of the recipe, so an unchanged recipe is
//! never rebuilt and a changed one never reuses a stale image.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use crate::checksum::hex;
use crate::container::{self, Build, EngineKind, Shown};
use crate::gha;
use crate::matrix::{DnfRepo, Family, Matrix, Toolchain};
use crate::spack_sources;

/// Where Spack, its packages and its Python live in the image.
pub const SPACK_ROOT: &str = "/opt/spack";
pub const SPACK_PACKAGES: &str = "/opt/spack-packages";
pub const SPACK_VENV: &str = "/opt/spack-venv";

/// The build context's directory of Spack sources (and the optional CA
/// bundle), and where the recipe copies it in the image.
pub const CONTEXT_SOURCES: &str = "sources";
const SOURCES_IN_IMAGE: &str = "/tmp/slurm-factory-sources";
/// A site's CA bundle for pip behind a TLS-intercepting proxy, if given.
pub const CA_BUNDLE: &str = "ca-bundle.crt";

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

/// An image to build, with the build context its recipe copies from.
pub struct ImageBuild {
    pub build: Build,
    pub recipe: String,
    pins: [spack_sources::Pin; 2],
    origin: spack_sources::Origin,
    ca_bundle: Option<PathBuf>,
}

impl ImageBuild {
    /// The toolchain's image tag, and its build unless the engine has it
    /// already. The context lives under `<state>/images/<toolchain>`.
    pub fn plan(
        matrix: &Matrix,
        tc: &Toolchain,
        engine: Option<EngineKind>,
        dry_run: bool,
        sources: &Sources,
        state: &Path,
    ) -> Result<(String, Option<ImageBuild>)> {
        let recipe = recipe(matrix, tc);
        let present = match engine {
            // A dry run whose engine cannot answer plans the build.
            Some(e) if dry_run => container::image_exists(e, &recipe.tag).unwrap_or(false),
            Some(e) => container::image_exists(e, &recipe.tag)?,
            None => false,
        };
        if present {
            return Ok((recipe.tag, None));
        }
        let ctx = state.join("images").join(&tc.name);
        let build = ImageBuild {
            build: Build {
                tag: recipe.tag.clone(),
                containerfile: ctx.join("Containerfile"),
                context: ctx,
            },
            recipe: recipe.text,
            pins: spack_sources::pins(&matrix.spack),
            origin: spack_sources::Origin::new(
                sources.spack_sources.as_deref(),
                &state.join("cache/spack-sources"),
            ),
            ca_bundle: sources.ca_bundle.clone(),
        };
        Ok((recipe.tag, Some(build)))
    }

    /// What `execute` does, for `--dry-run`.
    pub fn print(&self, engine: EngineKind) {
        outln!(
            "# build image {} from {}:",
            self.build.tag,
            self.build.containerfile.display()
        );
        for l in self.recipe.lines() {
            outln!("#   {l}");
        }
        outln!("# build context {}:", self.build.context.display());
        for l in self.origin.describe(&self.pins) {
            outln!("#   {CONTEXT_SOURCES}/{l}");
        }
        if let Some(ca) = &self.ca_bundle {
            outln!("#   {CONTEXT_SOURCES}/{CA_BUNDLE} from {}", ca.display());
        }
        outln!("{}", Shown(&self.build.argv(engine)));
    }

    /// Fills the context (the checked Spack tarballs, the CA bundle if
    /// given) and builds; nothing else is written if this fails.
    pub fn execute(&self, engine: EngineKind) -> Result<()> {
        let _g = gha::Group::new(&format!("Build image {}", self.build.tag));
        let sources = self.build.context.join(CONTEXT_SOURCES);
        let _ = std::fs::remove_dir_all(&sources);
        std::fs::create_dir_all(&sources)
            .with_context(|| format!("creating {}", sources.display()))?;
        let tarballs = self.origin.tarballs(&self.pins)?;
        for (pin, tarball) in self.pins.iter().zip(&tarballs) {
            let to = sources.join(pin.file_name());
            if std::fs::hard_link(tarball, &to).is_err() {
                std::fs::copy(tarball, &to).with_context(|| {
                    format!("copying {} into the build context", tarball.display())
                })?;
            }
        }
        if let Some(ca) = &self.ca_bundle {
            std::fs::copy(ca, sources.join(CA_BUNDLE))
                .with_context(|| format!("copying the CA bundle {}", ca.display()))?;
        }
        std::fs::write(&self.build.containerfile, &self.recipe)?;
        let argv = self.build.argv(engine);
        outln!("{}", Shown(&argv));
        let code = container::execute(&argv)?;
        if code != 0 {
            bail!(
                "building the image {} failed ({} exited {code}); recipe: {}",
                self.build.tag,
                engine.program(),
                self.build.containerfile.display()
            );
        }
        Ok(())
    }
}

/// Where an image build takes Spack's sources from (and pip's CA bundle):
/// a directory of the pinned tarballs, else a clone from GitHub.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub spack_sources: Option<PathBuf>,
    pub ca_bundle: Option<PathBuf>,
}

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
    // Spack, its packages and the pip trust anchor come from the build
    // context, which the toolkit fills (see `context`): the recipe is the same
    // whether they came from a local copy or a clone, so is the tag.
    let pins = spack_sources::pins(&matrix.spack);
    for p in &pins {
        line(
            &mut r,
            &format!(
                "# {}: {} {} at commit {}",
                p.file_name(),
                p.repository,
                p.git_ref,
                p.commit
            ),
        );
    }
    line(
        &mut r,
        &format!("COPY {CONTEXT_SOURCES}/ {SOURCES_IN_IMAGE}/"),
    );
    let mut steps = vec![format!(
        "ca={SOURCES_IN_IMAGE}/{CA_BUNDLE}; if [ -f \"$ca\" ]; then export PIP_CERT=\"$ca\" SSL_CERT_FILE=\"$ca\"; fi"
    )];
    // Spack's Python: a venv with the solver and boto3 (for s3:// mirrors).
    let python = tc.spack_python.as_ref();
    match python.and_then(|p| p.uv.as_deref()) {
        Some(version) => {
            steps.push("python3 -m venv /opt/uv".into());
            steps.push("/opt/uv/bin/pip install --no-cache-dir 'uv>=0.9,<0.10'".into());
            steps.push(format!(
                "UV_PYTHON_INSTALL_DIR=/opt/uv-python /opt/uv/bin/uv venv --python {version} {SPACK_VENV}"
            ));
            steps.push(format!(
                "/opt/uv/bin/uv pip install --python {SPACK_VENV}/bin/python 'clingo>=5.8,<5.9' 'boto3>=1.35,<2'"
            ));
        }
        None => {
            let interpreter = python.and_then(|p| p.path.as_deref()).unwrap_or("python3");
            steps.push(format!("{interpreter} -m venv {SPACK_VENV}"));
            steps.push(format!(
                "{SPACK_VENV}/bin/pip install --no-cache-dir 'clingo>=5.8,<5.9' 'boto3>=1.35,<2'"
            ));
        }
    }
    for (p, dest) in pins.iter().zip([SPACK_ROOT, SPACK_PACKAGES]) {
        steps.push(format!(
            "mkdir -p {dest} && tar -xzf {SOURCES_IN_IMAGE}/{} -C {dest} --strip-components=1",
            p.file_name()
        ));
    }
    steps.push(format!("rm -rf {SOURCES_IN_IMAGE}"));
    line(&mut r, &format!("RUN {}", steps.join(" \\\n && ")));
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

/// `image`: a toolchain's image tag, its recipe, or its build.
pub struct Job {
    pub toolchain: String,
    pub show: Show,
}

pub enum Show {
    Tag,
    Recipe,
    /// Build the image unless the engine has its tag already.
    Build {
        engine: Option<EngineKind>,
        sources: Sources,
        /// The build context lives under `<state_dir>/images/<toolchain>`.
        state_dir: PathBuf,
        dry_run: bool,
    },
}

pub fn run(matrix: &Matrix, job: &Job) -> Result<()> {
    let tc = matrix.toolchain(&job.toolchain)?;
    let (engine, sources, state, dry_run) = match &job.show {
        Show::Tag => {
            outln!("{}", recipe(matrix, tc).tag);
            return Ok(());
        }
        Show::Recipe => {
            out!("{}", recipe(matrix, tc).text);
            return Ok(());
        }
        Show::Build {
            engine,
            sources,
            state_dir,
            dry_run,
        } => (*engine, sources, state_dir, *dry_run),
    };
    let engine = container::detect(engine, dry_run)?;
    match ImageBuild::plan(matrix, tc, engine, dry_run, sources, state)? {
        (tag, None) => outln!("# image {tag} is present: not rebuilt"),
        (_, Some(build)) if dry_run => build.print(engine.unwrap_or(EngineKind::Podman)),
        (tag, Some(build)) => {
            build.execute(engine.context("no container engine")?)?;
            outln!("built {tag}");
        }
    }
    Ok(())
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
                "# spack-v1.1.0.tar.gz: spack/spack v1.1.0 at commit 2e907202bcc8209a6a62243aab50c179b524cc3b",
                "# spack-packages-v2025.11.0.tar.gz: spack/spack-packages v2025.11.0 at commit 119680aeee8ea802c6111b7167583bddef97e82f",
                "COPY sources/ /tmp/slurm-factory-sources/",
                "tar -xzf /tmp/slurm-factory-sources/spack-v1.1.0.tar.gz -C /opt/spack --strip-components=1",
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
                && r8.contains(" && /usr/bin/python3.9 -m venv /opt/spack-venv")
        );
        let r9 = recipe(&m, m.toolchain("rockylinux9").unwrap()).text;
        assert!(r9.contains("dnf install -y epel-release") && r9.contains("--set-enabled crb"));
        let resolute = recipe(&m, m.toolchain("resolute").unwrap()).text;
        assert!(resolute.contains("uv venv --python 3.13 /opt/spack-venv"));
        let jammy = recipe(&m, m.toolchain("jammy").unwrap()).text;
        assert!(jammy.contains(" && python3 -m venv /opt/spack-venv"));
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
        // The same ref at another commit (a moved tag) is another image too.
        let moved = Matrix::parse(&text.replace(
            "commit: 2e907202bcc8209a6a62243aab50c179b524cc3b",
            "commit: 2e907202bcc8209a6a62243aab50c179b524cc3c",
        ))
        .unwrap();
        assert_ne!(
            recipe(&m, m.toolchain("noble").unwrap()).tag,
            recipe(&moved, moved.toolchain("noble").unwrap()).tag
        );
        let tc = "jammy";
        assert_ne!(
            recipe(&m, m.toolchain(tc).unwrap()).tag,
            recipe(&changed, changed.toolchain(tc).unwrap()).tag
        );
    }
}
