//! Checks of a Spack buildcache (mirror layout v3) on disk: every spec
//! manifest is clear-signed by the expected key and every blob it names is
//! present with the right size and SHA-256. Run after each local push, and in
//! the tests against a buildcache made by real Spack.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::checksum::hex;
use crate::process;

#[derive(Debug, Deserialize)]
struct Manifest {
    version: u32,
    data: Vec<Blob>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Blob {
    content_length: u64,
    media_type: String,
    checksum_algorithm: String,
    checksum: String,
}

#[derive(Debug)]
pub struct Report {
    /// `name-version-hash` of every spec in the mirror.
    pub specs: BTreeSet<String>,
    /// Fingerprints of the keys that signed them.
    pub signers: BTreeSet<String>,
    pub has_index: bool,
}

/// Verifies the mirror at `dir`. The signatures are checked against the
/// mirror's own published keys; `expected_signer` (a fingerprint), when
/// given, must be the key that signed every spec.
pub fn verify(dir: &Path, expected_signer: Option<&str>) -> Result<Report> {
    let v3 = dir.join("v3");
    let layout: serde_json::Value = serde_json::from_slice(
        &std::fs::read(v3.join("layout.json"))
            .with_context(|| format!("{} is not a v3 buildcache", dir.display()))?,
    )?;
    let signed = layout.get("signing").and_then(|s| s.as_str()) == Some("gpg");

    let home = tempfile::tempdir()?;
    let mut key_count = 0;
    for path in files_in(&v3.join("manifests/key"), ".key.manifest.json")? {
        let m: Manifest = read_manifest(&path, false)?;
        for blob in &m.data {
            let key =
                read_blob(dir, blob).with_context(|| format!("key manifest {}", path.display()))?;
            gpg(home.path(), &["--import"], Some(&key))?;
            key_count += 1;
        }
    }
    if signed && key_count == 0 {
        bail!("{}: signed mirror without any published key", dir.display());
    }

    let mut specs = BTreeSet::new();
    let mut signers = BTreeSet::new();
    let spec_dir = v3.join("manifests/spec");
    let mut manifests = Vec::new();
    if spec_dir.is_dir() {
        for pkg in std::fs::read_dir(&spec_dir)? {
            manifests.extend(files_in(&pkg?.path(), ".spec.manifest.json")?);
        }
    }
    manifests.sort();
    for path in manifests {
        let name = path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .trim_end_matches(".spec.manifest.json")
            .to_string();
        let text = std::fs::read(&path)?;
        if signed {
            let status = gpg(
                home.path(),
                &["--status-fd", "1", "--verify", &path.to_string_lossy()],
                None,
            )
            .with_context(|| format!("{name}: the signature does not verify"))?;
            let signer = String::from_utf8_lossy(&status)
                .lines()
                .find_map(|l| {
                    l.strip_prefix("[GNUPG:] VALIDSIG ")
                        .and_then(|r| r.split(' ').next())
                        .map(str::to_string)
                })
                .with_context(|| format!("{name}: no valid signature"))?;
            if let Some(expected) = expected_signer
                && !signer.eq_ignore_ascii_case(expected)
            {
                bail!("{name}: signed by {signer}, expected {expected}");
            }
            signers.insert(signer);
        }
        let m: Manifest =
            serde_json::from_str(&clear_signed_body(&text, signed).with_context(|| name.clone())?)
                .with_context(|| format!("{name}: not a manifest"))?;
        if m.version != 3 {
            bail!("{name}: manifest version {} (expected 3)", m.version);
        }
        for blob in &m.data {
            read_blob(dir, blob).with_context(|| format!("{name}: {}", blob.media_type))?;
        }
        specs.insert(name);
    }
    let index = v3.join("manifests/index/index.manifest.json");
    let has_index = index.is_file();
    if has_index {
        let m = read_manifest(&index, false)?;
        for blob in &m.data {
            read_blob(dir, blob).context("the index")?;
        }
    }
    let sh = process::shell()?;
    let _ = process::output(
        sh.cmd("gpgconf")
            .env("GNUPGHOME", home.path())
            .args(["--kill", "gpg-agent"]),
    );
    Ok(Report {
        specs,
        signers,
        has_index,
    })
}

fn files_in(dir: &Path, suffix: &str) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Ok(vec![]);
    }
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.to_string_lossy().ends_with(suffix) && !p.ends_with("keys.manifest.json") {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

fn read_manifest(path: &Path, signed: bool) -> Result<Manifest> {
    let text = std::fs::read(path)?;
    serde_json::from_str(&clear_signed_body(&text, signed)?)
        .with_context(|| format!("{}", path.display()))
}

/// The text of a clear-signed message (dash-escaping undone), or the file as is.
fn clear_signed_body(text: &[u8], signed: bool) -> Result<String> {
    let text = std::str::from_utf8(text)?;
    if !text.starts_with("-----BEGIN PGP SIGNED MESSAGE-----") {
        if signed {
            bail!("not clear-signed");
        }
        return Ok(text.to_string());
    }
    let after_headers = text
        .split_once("\n\n")
        .map(|(_, b)| b)
        .context("no blank line after the headers")?;
    let body = after_headers
        .split("\n-----BEGIN PGP SIGNATURE-----")
        .next()
        .unwrap_or("");
    Ok(body
        .lines()
        .map(|l| l.strip_prefix("- ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n"))
}

fn read_blob(dir: &Path, blob: &Blob) -> Result<Vec<u8>> {
    if blob.checksum_algorithm != "sha256" || blob.checksum.len() != 64 {
        bail!(
            "unsupported checksum {}:{}",
            blob.checksum_algorithm,
            blob.checksum
        );
    }
    let path = dir
        .join("blobs/sha256")
        .join(&blob.checksum[..2])
        .join(&blob.checksum);
    let bytes = std::fs::read(&path).with_context(|| format!("missing blob {}", path.display()))?;
    if bytes.len() as u64 != blob.content_length {
        bail!(
            "blob {} has {} bytes, the manifest says {}",
            blob.checksum,
            bytes.len(),
            blob.content_length
        );
    }
    let actual = hex(&Sha256::digest(&bytes));
    if actual != blob.checksum {
        bail!("blob {} has SHA-256 {actual}", blob.checksum);
    }
    Ok(bytes)
}

fn gpg(home: &Path, args: &[&str], stdin: Option<&[u8]>) -> Result<Vec<u8>> {
    let sh = process::shell()?;
    let mut gpg = sh
        .cmd("gpg")
        .env("GNUPGHOME", home)
        .args(["--batch", "--no-tty"])
        .args(args);
    if let Some(data) = stdin {
        gpg = gpg.stdin(data);
    }
    let out = process::output(gpg)?;
    if !out.status.success() {
        bail!(
            "gpg {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/spack-v3-signed-mirror")
    }

    const FIXTURE_KEY: &str = "42831D2AFE105277DD5593D4F1424E0DC8EB6358";

    #[test]
    fn real_spack_mirror_verifies() {
        let report = verify(&fixture(), Some(FIXTURE_KEY)).unwrap();
        assert_eq!(report.specs.len(), 3, "{:?}", report.specs);
        assert!(report.specs.iter().any(|s| s.starts_with("hello-1.0-")));
        assert_eq!(report.signers.iter().collect::<Vec<_>>(), [FIXTURE_KEY]);
        assert!(report.has_index);
    }

    #[test]
    fn wrong_expected_signer_is_refused() {
        let err = verify(&fixture(), Some("0000000000000000000000000000000000000000")).unwrap_err();
        assert!(
            format!("{err:#}").contains(&format!("signed by {FIXTURE_KEY}")),
            "{err:#}"
        );
    }

    fn copy() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let sh = process::shell().unwrap();
        let copied = process::status(
            sh.cmd("cp")
                .arg("-r")
                .arg(fixture().join("."))
                .arg(dir.path()),
        );
        assert_eq!(copied.unwrap(), 0);
        let _ = process::output(sh.cmd("chmod").args(["-R", "u+w"]).arg(dir.path()));
        dir
    }

    #[test]
    fn one_changed_byte_in_a_spec_manifest_breaks_its_signature() {
        let dir = copy();
        let m = dir.path().join("v3/manifests/spec/hello");
        let file = std::fs::read_dir(&m)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let text = std::fs::read_to_string(&file).unwrap().replacen(
            "\"contentLength\":6751",
            "\"contentLength\":6752",
            1,
        );
        std::fs::write(&file, text).unwrap();
        let err = verify(dir.path(), None).unwrap_err();
        assert!(
            format!("{err:#}").contains("the signature does not verify"),
            "{err:#}"
        );
    }

    #[test]
    fn a_corrupt_blob_is_named() {
        let dir = copy();
        let blob = dir.path().join(
            "blobs/sha256/8b/8bd9d0d90c82e0425d58854d9db8e6e0253ad45c96579234969bb738f989a02b",
        );
        let mut bytes = std::fs::read(&blob).unwrap();
        bytes[100] ^= 1;
        std::fs::write(&blob, bytes).unwrap();
        let err = format!("{:#}", verify(dir.path(), None).unwrap_err());
        assert!(
            err.contains("blob 8bd9d0d9") && err.contains("has SHA-256"),
            "{err}"
        );
    }
}
