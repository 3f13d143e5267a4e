//! Signed packages made by the real `package` command, for the publish and
//! download tests: one cell (Slurm 24.11 on jammy, cpu) of a small view.

use std::path::{Path, PathBuf};

use super::github::GitHubServer;
use super::gpg::TestKey;
use super::{Project, Run, fixtures, repo_root, xtask};

pub const STEM: &str = "slurm-24.11-jammy-cpu-x86_64";

pub struct Dist {
    pub dir: tempfile::TempDir,
    pub key: TestKey,
}

impl Dist {
    /// A view filled by `fill`, packaged and signed (split into parts of
    /// `split` when given) into `out()`.
    pub fn new(key_name: &str, fill: impl FnOnce(&Path), split: Option<&str>) -> Dist {
        let dir = tempfile::tempdir().unwrap();
        let d = Dist {
            key: TestKey::new(key_name, ""),
            dir,
        };
        std::fs::create_dir_all(d.view()).unwrap();
        fill(&d.view());
        d.repackage(split);
        d
    }

    /// Packages the view again (after a test changed it), replacing `out()`.
    pub fn repackage(&self, split: Option<&str>) {
        let _ = std::fs::remove_dir_all(self.out());
        let lock = fixtures().join("spack-concretized-slurm-env/spack.lock");
        let split: Vec<&str> = split.map(|s| vec!["--split-size", s]).unwrap_or_default();
        super::package(
            &repo_root(),
            &self.view(),
            &lock,
            ("24.11", "jammy"),
            &self.out(),
            &split,
        )
        .env("SLURM_FACTORY_GPG_PRIVATE_KEY", &self.key.secret_armored)
        .success();
    }

    pub fn view(&self) -> PathBuf {
        self.dir.path().join("view")
    }

    pub fn out(&self) -> PathBuf {
        self.dir.path().join("dist")
    }

    pub fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// `publish --to local` into `store()`.
    pub fn publish_local(&self, extra: &[&str]) -> Run {
        publish_local(&Project::repo(), &self.out(), &self.store(), extra)
    }

    /// `publish --to s3` into `bucket`, with the server's variables `env`.
    pub fn publish_s3(&self, env: Vec<(&'static str, String)>, bucket: &str) -> Run {
        let out = self.out();
        xtask(&[
            "publish",
            "--to",
            "s3",
            "--bucket",
            bucket,
            "--dir",
            out.to_str().unwrap(),
        ])
        .envs(env)
    }

    /// `publish --to github` into the fake, as Actions would run it.
    pub fn publish_github(&self, gh: &GitHubServer) -> Run {
        xtask(&[
            "publish",
            "--to",
            "github",
            "--dir",
            self.out().to_str().unwrap(),
        ])
        .env("GITHUB_TOKEN", &gh.token)
        .env("GITHUB_REPOSITORY", "owner/repo")
        .env("GITHUB_API_URL", &gh.api_url)
    }
}

/// `publish --to local` of the packages in `out` into the store `store`, by
/// the toolkit of `project`, with `extra` flags.
pub fn publish_local(project: &Project, out: &Path, store: &Path, extra: &[&str]) -> Run {
    let mut args = vec![
        "publish",
        "--to",
        "local",
        "--dir",
        out.to_str().unwrap(),
        "--store-dir",
        store.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    project.xtask(&args)
}

/// `len` incompressible bytes, the same for the same seed.
pub fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}
