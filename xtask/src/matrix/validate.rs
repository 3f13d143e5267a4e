//! The rules a matrix file must keep, checked once when it is read: every
//! name unique, versions and commits well formed, runners named.

use std::collections::HashSet;

use anyhow::{Result, bail};

use super::{Family, Matrix, Runners};

impl Matrix {
    pub(super) fn validate(&self) -> Result<()> {
        for (key, commit) in [
            ("spack.commit", &self.spack.commit),
            ("spack.packages_commit", &self.spack.packages_commit),
        ] {
            if commit.len() != 40 || !commit.bytes().all(|b| b.is_ascii_hexdigit()) {
                bail!("{key} `{commit}` must be a full commit id (40 hex digits)");
            }
        }
        non_empty("variants", self.variants.len())?;
        non_empty("toolchains", self.toolchains.len())?;
        non_empty("slurm", self.slurm.len())?;
        unique("variant", self.variants.iter().map(|v| v.as_str()))?;
        unique("toolchain", self.toolchains.iter().map(|t| t.name.as_str()))?;
        unique(
            "Slurm version",
            self.slurm.iter().map(|s| s.version.as_str()),
        )?;
        unique(
            "Slurm spack_version",
            self.slurm.iter().map(|s| s.spack_version.as_str()),
        )?;
        for field in [("target", &self.target), ("arch", &self.arch)] {
            if !is_token(field.1) {
                bail!(
                    "`{}: {}` must be a non-empty word of [a-z0-9_]",
                    field.0,
                    field.1
                );
            }
        }
        let r = &self.releases;
        if r.github.split('/').count() != 2 || r.github.split('/').any(|p| p.is_empty()) {
            bail!("`releases.github: {}` must be owner/name", r.github);
        }
        if let Some(fpr) = &r.signing_key_fingerprint
            && (fpr.len() != 40 || !fpr.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            bail!("`releases.signing_key_fingerprint: {fpr}` must be 40 hex digits");
        }
        if !is_version(&self.rust_toolchain) {
            bail!(
                "`rust_toolchain: {}` must be a Rust version like 1.95.0",
                self.rust_toolchain
            );
        }
        check_runners("runners", &self.runners)?;
        for t in &self.toolchains {
            let at = format!("toolchain '{}'", t.name);
            if !is_token(&t.name) {
                bail!("{at}: the name must be lowercase letters, digits or '_'");
            }
            if !is_version(&t.gcc) {
                bail!("{at}: gcc `{}` is not a version like 13.3.0", t.gcc);
            }
            if !is_version(&t.glibc) {
                bail!("{at}: glibc `{}` is not a version like 2.39", t.glibc);
            }
            if t.image.is_empty() || t.image.contains(char::is_whitespace) {
                bail!("{at}: image `{}` is not an image reference", t.image);
            }
            if let Some(r) = &t.runners {
                check_runners(&format!("{at} runners"), r)?;
            }
            if t.family == Family::Apt && !t.dnf_repos.is_empty() {
                bail!("{at}: dnf_repos is for dnf toolchains");
            }
            if let Some(p) = &t.spack_python {
                match (&p.path, &p.uv) {
                    (Some(_), None) | (None, Some(_)) => {}
                    _ => bail!("{at}: spack_python needs exactly one of `path` or `uv`"),
                }
                if p.uv.as_deref().is_some_and(|v| !is_version(v)) {
                    bail!("{at}: spack_python.uv must be a Python version like 3.13");
                }
            }
        }
        for s in &self.slurm {
            let at = format!("Slurm '{}'", s.version);
            if !is_version(&s.version) {
                bail!("{at}: version must look like 25.11");
            }
            let dashed = s.version.replace('.', "-");
            if !s.spack_version.starts_with(&format!("{dashed}-")) {
                bail!(
                    "{at}: spack_version `{}` does not start with `{dashed}-`",
                    s.spack_version
                );
            }
            if !is_hex(&s.sha256, 64) {
                bail!("{at}: sha256 must be 64 hex digits");
            }
        }
        for (name, pin) in self.actions.all() {
            if !is_hex(&pin.sha, 40) {
                bail!(
                    "action '{name}' ({}): sha must be a full 40-hex commit SHA",
                    pin.uses
                );
            }
        }
        Ok(())
    }
}

fn non_empty(what: &str, len: usize) -> Result<()> {
    if len == 0 {
        bail!("`{what}` must list at least one entry");
    }
    Ok(())
}

fn unique<'a>(what: &str, names: impl Iterator<Item = &'a str>) -> Result<()> {
    let mut seen = HashSet::new();
    for n in names {
        if !seen.insert(n) {
            bail!("{what} '{n}' is listed twice");
        }
    }
    Ok(())
}

fn check_runners(at: &str, r: &Runners) -> Result<()> {
    for (variant, labels) in [("cpu", &r.cpu), ("gpu", &r.gpu)] {
        if labels.is_empty() || labels.iter().any(|l| l.trim().is_empty()) {
            bail!("{at}: `{variant}` must list at least one non-empty runner label");
        }
    }
    Ok(())
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn is_version(s: &str) -> bool {
    !s.is_empty()
        && s.split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}
