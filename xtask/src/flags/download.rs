//! `download`'s flags, checked and turned into a [`download::Request`]:
//! every flag must mean something for its source and mode.

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::DownloadCmd;
use crate::download::{self, Action, Install, Origin, Request, Trust, printable};
use crate::error::UsageError;
use crate::schema::ReleasePolicy;
use crate::schema::release::ReleaseTag;

impl DownloadCmd {
    /// `root` is the checkout (`cargo xtask`), or `None` for the admins'
    /// binary, which knows only its built-in `policy`.
    pub fn request(&self, root: Option<&Path>, policy: &ReleasePolicy) -> Result<Request> {
        self.check_flags()?;
        let slurm = self.series()?;
        let action = if self.list {
            Action::List
        } else {
            let (Some(_), Some(_), Some(prefix)) = (&slurm, &self.toolchain, &self.prefix) else {
                return Err(UsageError::new(
                    "download needs --slurm V (or --release TAG) --toolchain T --prefix DIR (or --list to see what is offered)",
                )
                .into());
            };
            Action::Install(Install {
                variant: if self.gpu { "gpu" } else { "cpu" }.into(),
                arch: self.arch.clone().unwrap_or_else(|| policy.arch.clone()),
                prefix: absolute(&checked_path("--prefix", prefix)?)?,
                modules: match &self.modules {
                    Some(m) => Some(absolute(&checked_path("--modules", m)?)?),
                    None => None,
                },
                trust: self.trust(policy),
                dry_run: self.dry_run,
            })
        };
        Ok(Request {
            from: self.source(root, policy)?,
            slurm,
            release: self.release.clone(),
            toolchain: self.toolchain.clone(),
            action,
        })
    }

    /// `--trusted-key FILE`, else the published key if it has the
    /// fingerprint `--trusted-fingerprint` names or the policy pins.
    fn trust(&self, policy: &ReleasePolicy) -> Trust {
        if let Some(file) = &self.trusted_key {
            return Trust::KeyFile(file.clone());
        }
        match (&self.trusted_fingerprint, &policy.signing_key_fingerprint) {
            (Some(f), _) | (None, Some(f)) => Trust::Fingerprint(f.clone()),
            (None, None) => Trust::Missing(
                "no release signing key is pinned (releases.signing_key_fingerprint in spack-env/matrix.yaml): \
                 pass --trusted-fingerprint FPR or --trusted-key FILE for the key you trust",
            ),
        }
    }

    /// The Slurm series asked for: `--slurm`, or the one `--release` names
    /// (both must agree).
    fn series(&self) -> Result<Option<String>> {
        let Some(tag) = &self.release else {
            return Ok(self.slurm.clone());
        };
        let Some(parsed) = ReleaseTag::parse(tag) else {
            return Err(UsageError::new(format!(
                "--release {}: expected a release tag, slurm-<version>-<YYYY.MM.DD>[.N] (see: download --list)",
                printable(tag)
            ))
            .into());
        };
        match &self.slurm {
            Some(v) if v != parsed.series() => Err(UsageError::new(format!(
                "--release {tag} is a release of Slurm {}, not --slurm {}",
                parsed.series(),
                printable(v)
            ))
            .into()),
            _ => Ok(Some(parsed.series().to_string())),
        }
    }

    /// Every option given must mean something for this source and mode.
    fn check_flags(&self) -> Result<()> {
        let source_kind = match self.from.as_str() {
            "github" | "s3" | "local" => self.from.as_str(),
            _ => "url",
        };
        let bucket = format!("--bucket (or {})", crate::store::BUCKET_VAR);
        let prefix = format!("--bucket-prefix (or {})", crate::store::BUCKET_PREFIX_VAR);
        let only = [
            ("--repo", self.repo.is_some(), "github"),
            (bucket.as_str(), self.store.bucket.bucket.is_some(), "s3"),
            (
                prefix.as_str(),
                self.store.bucket.bucket_prefix.is_some(),
                "s3",
            ),
            ("--store-dir", self.store.store_dir.is_some(), "local"),
        ];
        if let Some(fpr) = &self.trusted_fingerprint
            && !(fpr.len() == 40 && fpr.chars().all(|c| c.is_ascii_hexdigit()))
        {
            return Err(UsageError::new(format!(
                "--trusted-fingerprint {}: expected the key's full fingerprint, 40 hex digits",
                printable(fpr)
            ))
            .into());
        }
        for (flag, given, kind) in only {
            if given && source_kind != kind {
                return Err(UsageError::new(format!(
                    "{flag} is for --from {kind}, not --from {}",
                    self.from
                ))
                .into());
            }
        }
        if source_kind == "s3" && self.store.bucket.bucket.is_none() {
            return Err(UsageError::new("--from s3 needs --bucket NAME").into());
        }
        if self.list {
            let install_only = [
                ("--prefix", self.prefix.is_some()),
                ("--modules", self.modules.is_some()),
                ("--gpu", self.gpu),
                ("--arch", self.arch.is_some()),
                ("--trusted-key", self.trusted_key.is_some()),
                ("--trusted-fingerprint", self.trusted_fingerprint.is_some()),
                ("--dry-run", self.dry_run),
            ];
            if let Some((flag, _)) = install_only.iter().find(|(_, given)| *given) {
                return Err(UsageError::new(format!(
                    "{flag} has no meaning with --list (it lists every variant and installs nothing)"
                ))
                .into());
            }
        }
        Ok(())
    }

    fn source(&self, root: Option<&Path>, policy: &ReleasePolicy) -> Result<Origin> {
        let from = self.from.as_str();
        Ok(match from {
            "github" => Origin::GitHub {
                repo: self.repo.clone().unwrap_or_else(|| policy.github.clone()),
            },
            "s3" => Origin::Store(self.store.bucket.mirrors()?),
            "local" => {
                let store = match (root, &self.store.store_dir) {
                    (Some(root), _) => self.store.local(root).root,
                    (None, Some(_)) => self.store.local(Path::new(".")).root,
                    (None, None) => {
                        return Err(UsageError::new(
                            "--from local needs --store-dir DIR (there is no checkout whose target/slurm-factory/store to use)",
                        )
                        .into());
                    }
                };
                Origin::LocalStore(store)
            }
            url if url.starts_with("http://") || url.starts_with("https://") => {
                let (base, dir) = download::source::split_url(url);
                let variant = if self.gpu { "gpu" } else { "cpu" };
                match (&dir, &self.slurm, &self.toolchain) {
                    (
                        Some(download::source::ReleaseDir::Cell {
                            slurm: v,
                            toolchain: t,
                            variant: var,
                        }),
                        Some(slurm),
                        Some(tc),
                    ) if (v, t, var.as_str()) != (slurm, tc, variant) => {
                        return Err(UsageError::new(format!(
                            "--from {url} is the release directory of {v}/{t}/{var}, not {slurm}/{tc}/{variant}"
                        ))
                        .into());
                    }
                    (Some(download::source::ReleaseDir::Release(tag)), _, _)
                        if self.release.as_ref().is_some_and(|r| *r != tag.to_string())
                            || self.slurm.as_ref().is_some_and(|s| s != tag.series()) =>
                    {
                        return Err(UsageError::new(format!(
                            "--from {url} is the directory of release {tag}, not the one --slurm/--release ask for"
                        ))
                        .into());
                    }
                    _ => {}
                }
                Origin::Url { base, dir }
            }
            other => {
                return Err(UsageError::new(format!(
                    "--from {other}: expected github, s3, local or an http(s):// URL"
                ))
                .into());
            }
        })
    }
}

/// A path flag's value: UTF-8 (it is written into a Lua module), without
/// control characters, and without `.`/`..` (a `new/..` would create `new`).
fn checked_path(flag: &str, path: &Path) -> Result<PathBuf> {
    let Some(text) = path.to_str() else {
        return Err(UsageError::new(format!(
            "{flag} {}: not UTF-8 (the module file names it)",
            path.display()
        ))
        .into());
    };
    if text.chars().any(char::is_control) {
        return Err(UsageError::new(format!(
            "{flag} {}: control characters (a newline, say) are not allowed in it",
            printable(text)
        ))
        .into());
    }
    if path.components().any(|c| {
        matches!(
            c,
            std::path::Component::ParentDir | std::path::Component::CurDir
        )
    }) {
        return Err(UsageError::new(format!(
            "{flag} {text}: give it without `.` or `..` components"
        ))
        .into());
    }
    Ok(path.to_path_buf())
}

fn absolute(p: &Path) -> Result<PathBuf> {
    if p.as_os_str().is_empty() {
        return Err(UsageError::new("an empty path").into());
    }
    Ok(std::path::absolute(p)?)
}
