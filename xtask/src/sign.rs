//! The signing key: read from the environment (or a key file), imported into a
//! temporary GnuPG home that is destroyed afterwards. The key and passphrase
//! never appear on a command line or in output: the key reaches gpg on stdin,
//! the passphrase as a 0600 file inside that temporary home.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::process;
use anyhow::{Context, Result, bail};
use base64::Engine;

pub const KEY_VAR: &str = "SLURM_FACTORY_GPG_PRIVATE_KEY";
pub const PASSPHRASE_VAR: &str = "SLURM_FACTORY_GPG_PASSPHRASE";

/// An imported signing key, usable until dropped.
pub struct Keyring {
    home: tempfile::TempDir,
    passphrase_file: PathBuf,
    armored: Vec<u8>,
    passphrase: String,
    pub fingerprint: String,
}

impl Keyring {
    /// The key from `--signing-key-file`, else from the environment; `None`
    /// when neither is set.
    pub fn from_env_or_file(key_file: Option<&Path>) -> Result<Option<Keyring>> {
        let armored = match key_file {
            Some(path) => {
                let bytes = std::fs::read(path)
                    .with_context(|| format!("reading the signing key file {}", path.display()))?;
                decode_key(&bytes)
                    .with_context(|| format!("signing key file {}", path.display()))?
            }
            None => match std::env::var_os(KEY_VAR) {
                Some(v) if !v.is_empty() => {
                    decode_key(v.as_encoded_bytes()).with_context(|| format!("${KEY_VAR}"))?
                }
                _ => return Ok(None),
            },
        };
        let passphrase = std::env::var(PASSPHRASE_VAR).unwrap_or_default();
        Keyring::import(&armored, &passphrase).map(Some)
    }

    pub fn import(armored: &[u8], passphrase: &str) -> Result<Keyring> {
        let home = tempfile::Builder::new()
            .prefix("slurm-factory-gnupg-")
            .tempdir()?;
        set_mode(home.path(), 0o700)?;
        let passphrase_file = home.path().join("passphrase");
        {
            let mut f = std::fs::OpenOptions::new();
            f.write(true).create_new(true);
            use std::os::unix::fs::OpenOptionsExt;
            f.mode(0o600);
            f.open(&passphrase_file)?.write_all(passphrase.as_bytes())?;
        }
        let mut ring = Keyring {
            home,
            passphrase_file,
            armored: armored.to_vec(),
            passphrase: passphrase.to_string(),
            fingerprint: String::new(),
        };
        let mut import = ring.gpg()?;
        import.args(["--import"]);
        run_with_stdin(import, armored).context("importing the signing key (gpg --import)")?;
        let listing = ring
            .gpg()?
            .args(["--list-secret-keys", "--with-colons"])
            .stdout(Stdio::piped())
            .output()?;
        let fingerprint = String::from_utf8_lossy(&listing.stdout)
            .lines()
            .skip_while(|l| !l.starts_with("sec:"))
            .find_map(|l| {
                l.strip_prefix("fpr:")
                    .map(|r| r.trim_matches(':').to_string())
            })
            .filter(|f| !f.is_empty());
        let Some(fingerprint) = fingerprint else {
            bail!("the signing key holds no secret key (was a public key given?)");
        };
        ring.fingerprint = fingerprint;
        Ok(ring)
    }

    /// A new key (ed25519, no passphrase, valid for a day) that exists only
    /// in this keyring's temporary home.
    pub fn throwaway() -> Result<Keyring> {
        let home = tempfile::Builder::new()
            .prefix("slurm-factory-throwaway-")
            .tempdir()?;
        set_mode(home.path(), 0o700)?;
        let sh = process::shell()?;
        let _home = sh.push_env("GNUPGHOME", home.path());
        // An empty passphrase: the key is made to be thrown away.
        let gpg = || {
            sh.cmd("gpg")
                .args(["--batch", "--pinentry-mode", "loopback", "--passphrase", ""])
        };
        let made = process::output(gpg().args([
            "--quick-gen-key",
            "Slurm Factory throwaway key <throwaway@slurm-factory.invalid>",
            "ed25519",
            "sign",
            "1d",
        ]))
        .context("making a throwaway key")?;
        if !made.status.success() {
            bail!(
                "gpg could not make a throwaway key: {}",
                String::from_utf8_lossy(&made.stderr).trim()
            );
        }
        let exported = process::output(gpg().args(["--armor", "--export-secret-keys"]))
            .context("exporting the throwaway key")?;
        stop_agent(home.path());
        Keyring::import(&exported.stdout, "")
    }

    /// The armored private key, for a build container's secret mount.
    pub fn armored(&self) -> &[u8] {
        &self.armored
    }

    pub fn passphrase(&self) -> &str {
        &self.passphrase
    }

    /// gpg in batch mode on the temporary home, the passphrase from its file.
    ///
    /// A `std::process::Command` from the seam: signing streams the package
    /// through gpg's stdin as it is written (see `process`).
    pub fn gpg(&self) -> Result<Command> {
        let sh = process::shell()?;
        let mut cmd = process::spawnable(
            sh.cmd("gpg")
                .env("GNUPGHOME", self.home.path())
                .args([
                    "--batch",
                    "--no-tty",
                    "--quiet",
                    "--pinentry-mode",
                    "loopback",
                    "--passphrase-file",
                ])
                .arg(&self.passphrase_file),
        );
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        Ok(cmd)
    }

    /// A detached armored signature of what is written to the child's stdin.
    pub fn detached_sign(&self, output: &Path) -> Result<Command> {
        let mut cmd = self.gpg()?;
        cmd.args([
            "--armor",
            "--detach-sign",
            "--local-user",
            &self.fingerprint,
            "--output",
        ])
        .arg(output)
        .arg("-")
        .stdin(Stdio::piped());
        Ok(cmd)
    }

    /// A detached armored signature of `bytes` into `output`.
    pub fn sign_bytes(&self, output: &Path, bytes: &[u8]) -> Result<()> {
        self.sign_reader(output, bytes)
    }

    /// A detached armored signature of what `input` reads into `output`,
    /// streamed through gpg.
    pub fn sign_reader(&self, output: &Path, mut input: impl std::io::Read) -> Result<()> {
        let mut child = self
            .detached_sign(output)?
            .spawn()
            .context("starting gpg to sign")?;
        let mut stdin = child.stdin.take().expect("piped");
        std::io::copy(&mut input, &mut stdin)?;
        drop(stdin);
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "gpg could not sign: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// The public half, armored.
    pub fn export_public(&self) -> Result<String> {
        let out = self
            .gpg()?
            .args(["--armor", "--export", &self.fingerprint])
            .stdout(Stdio::piped())
            .output()
            .context("exporting the public key")?;
        if !out.status.success() || out.stdout.is_empty() {
            bail!(
                "gpg --export failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8(out.stdout)?)
    }
}

impl Drop for Keyring {
    fn drop(&mut self) {
        // The agent keeps the unlocked key in memory: stop it before the home goes.
        stop_agent(self.home.path());
    }
}

/// Stops the gpg agent of a GnuPG home, if one runs.
fn stop_agent(home: &Path) {
    if let Ok(sh) = process::shell() {
        let kill = sh.cmd("gpgconf").args(["--kill", "gpg-agent"]);
        let _ = process::output(kill.env("GNUPGHOME", home));
    }
}

/// Accepts an armored key or the base64 of one (how CI secrets often carry it).
fn decode_key(raw: &[u8]) -> Result<Vec<u8>> {
    let trimmed = raw.trim_ascii();
    if trimmed.starts_with(b"-----BEGIN PGP") {
        return Ok(trimmed.to_vec());
    }
    let compact: Vec<u8> = trimmed
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(&compact)
        .map_err(|_| anyhow::anyhow!("not an armored PGP key, nor base64 of one"))?;
    if !decoded.trim_ascii().starts_with(b"-----BEGIN PGP") {
        bail!("base64 decodes to something that is not an armored PGP key");
    }
    Ok(decoded)
}

fn run_with_stdin(mut cmd: Command, input: &[u8]) -> Result<()> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .spawn()
        .context("running gpg (is GnuPG installed?)")?;
    child.stdin.take().expect("piped").write_all(input)?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// A public key that downloads are checked against, alone in a temporary
/// GnuPG home: a signature counts only when gpg says it is good *and* made by
/// this key (its primary fingerprint), whatever else a key file carried.
pub struct TrustedKey {
    home: tempfile::TempDir,
    pub fingerprint: String,
}

impl TrustedKey {
    /// Imports an armored public key; the file must hold exactly one primary
    /// key, and when `pinned` is given, the key with that fingerprint.
    pub fn import(armored: &[u8], what: &str, pinned: Option<&str>) -> Result<TrustedKey> {
        let home = tempfile::Builder::new()
            .prefix("slurm-factory-trust-")
            .tempdir()?;
        set_mode(home.path(), 0o700)?;
        let key = TrustedKey {
            home,
            fingerprint: String::new(),
        };
        let mut import = key.gpg()?;
        import.args(["--import"]);
        run_with_stdin(import, armored)
            .with_context(|| format!("{what} is not a PGP public key"))?;
        let listing = key
            .gpg()?
            .args(["--list-keys", "--with-colons", "--fixed-list-mode"])
            .stdout(Stdio::piped())
            .output()?;
        let text = String::from_utf8_lossy(&listing.stdout);
        let primaries = primary_fingerprints(&text);
        let fingerprint = match primaries.as_slice() {
            [one] => one.clone(),
            [] => bail!("{what} holds no public key"),
            many => bail!(
                "{what} holds {} keys ({}): a trusted key file holds one",
                many.len(),
                many.join(", ")
            ),
        };
        if let Some(pinned) = pinned
            && !pinned.eq_ignore_ascii_case(&fingerprint)
        {
            bail!(
                "{what} is key {fingerprint}, not the project's pinned key {pinned}: refusing it"
            );
        }
        Ok(TrustedKey { fingerprint, ..key })
    }

    /// gpg on this key's home. Public keys only: it never needs gpg-agent,
    /// so it starts none (an admin's machine may have gpg without the agent,
    /// Debian's `gpg` package alone, and a public-key import would fail
    /// trying to start it).
    ///
    /// A `std::process::Command` from the seam: a download streams through
    /// gpg's stdin as it arrives (see `process`).
    fn gpg(&self) -> Result<Command> {
        let sh = process::shell()?;
        let mut cmd = process::spawnable(sh.cmd("gpg").env("GNUPGHOME", self.home.path()).args([
            "--batch",
            "--no-tty",
            "--quiet",
            "--no-autostart",
            "--trust-model",
            "always",
        ]));
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        Ok(cmd)
    }

    /// Starts `gpg --verify SIGNATURE -`; the signed bytes go to `stdin`.
    pub fn start_verify(&self, signature: &Path) -> Result<Verification> {
        let mut child = self
            .gpg()?
            .args(["--status-fd", "1", "--verify"])
            .arg(signature)
            .arg("-")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("running gpg (is GnuPG installed?)")?;
        Ok(Verification {
            stdin: child.stdin.take(),
            child,
            fingerprint: self.fingerprint.clone(),
        })
    }
}

impl TrustedKey {
    /// Checks a detached `signature` over everything `data` reads: Ok only
    /// for a good signature by this key.
    pub fn verify(&self, signature: &[u8], data: &mut dyn std::io::Read, what: &str) -> Result<()> {
        let sig = tempfile::NamedTempFile::new()?;
        std::fs::write(sig.path(), signature)?;
        let mut check = self.start_verify(sig.path())?;
        let mut stdin = check.stdin.take().expect("piped");
        let fed = std::io::copy(data, &mut stdin);
        drop(stdin);
        // gpg's verdict first: a gpg that stopped reading explains a broken pipe.
        check.finish(what)?;
        fed.with_context(|| format!("reading {what} to check its signature"))?;
        Ok(())
    }
}

/// The primary keys' fingerprints in `gpg --with-colons` output.
fn primary_fingerprints(colons: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut after_pub = false;
    for line in colons.lines() {
        if line.starts_with("pub:") {
            after_pub = true;
        } else if after_pub && let Some(rest) = line.strip_prefix("fpr:") {
            out.push(rest.trim_matches(':').to_string());
            after_pub = false;
        } else if !line.starts_with("fpr:") {
            after_pub = after_pub && !line.starts_with("sub:");
        }
    }
    out
}

/// A running `gpg --verify`: write the data to `stdin`, drop it, `finish`.
pub struct Verification {
    pub stdin: Option<std::process::ChildStdin>,
    child: std::process::Child,
    fingerprint: String,
}

impl Verification {
    /// Ok only for a good signature by the trusted key.
    pub fn finish(mut self, what: &str) -> Result<()> {
        drop(self.stdin.take());
        let out = self.child.wait_with_output()?;
        let status = String::from_utf8_lossy(&out.stdout);
        signature_verdict(&status, &self.fingerprint, what)
    }
}

/// What gpg's `--status-fd` lines say of one detached signature.
fn signature_verdict(status: &str, trusted: &str, what: &str) -> Result<()> {
    let mut good = false;
    let mut valid_by = None;
    for line in status.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.get(1).copied() {
            Some("GOODSIG") => good = true,
            // VALIDSIG <fpr> … <primary-key-fpr> (the 10th argument)
            Some("VALIDSIG") => {
                valid_by = words.get(11).or(words.get(2)).map(|s| s.to_string());
            }
            Some("BADSIG") => bail!(
                "bad signature: {what} is not what key {trusted} signed (changed or corrupted)"
            ),
            Some("EXPKEYSIG") => bail!("{what} is signed by an expired key"),
            Some("EXPSIG") => bail!(
                "{what}: its signature has expired (a signature made with an expiry date that has passed)"
            ),
            Some("REVKEYSIG") => bail!("{what} is signed by a revoked key"),
            Some("NO_PUBKEY") => bail!(
                "{what} is signed by an unknown key {} (trusted: {trusted})",
                words.get(2).unwrap_or(&"?")
            ),
            _ => {}
        }
    }
    match valid_by {
        Some(by) if good && by.eq_ignore_ascii_case(trusted) => Ok(()),
        Some(by) if good => bail!("{what} is signed by key {by}, not the trusted key {trusted}"),
        _ => bail!("{what}: its signature file holds no signature gpg could check"),
    }
}

#[cfg(test)]
mod verdict_tests {
    use super::*;

    const T: &str = "AAAABBBBCCCCDDDDEEEEFFFF0000111122223333";

    #[test]
    fn only_a_good_signature_by_the_trusted_primary_key_passes() {
        let good = format!(
            "[GNUPG:] NEWSIG\n[GNUPG:] GOODSIG 2222333344445555 t\n[GNUPG:] VALIDSIG 9999 2026-01-01 1 0 4 0 22 10 00 {T}\n"
        );
        assert!(signature_verdict(&good, T, "x").is_ok());
        let other = good.replace(T, "1234");
        let e = signature_verdict(&other, T, "x").unwrap_err().to_string();
        assert!(e.contains("signed by key 1234, not the trusted key"), "{e}");
        let e = signature_verdict("[GNUPG:] BADSIG 22 t\n", T, "x").unwrap_err();
        assert!(e.to_string().starts_with("bad signature"));
        let e = signature_verdict(
            "[GNUPG:] ERRSIG 77 22 10 00 1 9\n[GNUPG:] NO_PUBKEY 77\n",
            T,
            "x",
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown key 77"));
        assert!(signature_verdict("[GNUPG:] NODATA 1\n", T, "x").is_err());
        let expired = good.replace("GOODSIG", "EXPSIG");
        let e = signature_verdict(&expired, T, "x").unwrap_err().to_string();
        assert!(e.contains("its signature has expired"), "{e}");
    }

    #[test]
    fn primary_fingerprints_skip_subkeys() {
        let colons = "tru::1:0\npub:-:255:22:AA:1:::-:::scSC::::::23::0:\nfpr:::::::::PRIMARY1:\nuid:-::::1::H::t <t@x>::::::::::0:\nsub:-:255:18:BB:1::::::e::::::23:\nfpr:::::::::SUB1:\npub:-:255:22:CC:1:::-:::scSC::::::23::0:\nfpr:::::::::PRIMARY2:\n";
        assert_eq!(primary_fingerprints(colons), vec!["PRIMARY1", "PRIMARY2"]);
    }
}
