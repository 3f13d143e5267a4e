//! The signing key: read from the environment (or a key file), imported into a
//! temporary GnuPG home that is destroyed afterwards. The key and passphrase
//! never appear on a command line or in output: the key reaches gpg on stdin,
//! the passphrase as a 0600 file inside that temporary home.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use base64::Engine;

pub const KEY_VAR: &str = "SLURM_FACTORY_GPG_PRIVATE_KEY";
pub const PASSPHRASE_VAR: &str = "SLURM_FACTORY_GPG_PASSPHRASE";

/// How to say "there is no key" so the user knows what to do.
pub const NO_KEY_HELP: &str = "no signing key: set SLURM_FACTORY_GPG_PRIVATE_KEY (armored, or base64 of armored) \
     and SLURM_FACTORY_GPG_PASSPHRASE, or pass --signing-key-file PATH; \
     --unsigned makes an unsigned package for local testing";

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
        let mut import = ring.gpg();
        import.args(["--import"]);
        run_with_stdin(import, armored).context("importing the signing key (gpg --import)")?;
        let listing = ring
            .gpg()
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

    /// The armored private key, for a build container's secret mount.
    pub fn armored(&self) -> &[u8] {
        &self.armored
    }

    pub fn passphrase(&self) -> &str {
        &self.passphrase
    }

    /// gpg in batch mode on the temporary home, the passphrase from its file.
    pub fn gpg(&self) -> Command {
        let mut cmd = Command::new("gpg");
        cmd.env("GNUPGHOME", self.home.path())
            .args([
                "--batch",
                "--no-tty",
                "--quiet",
                "--pinentry-mode",
                "loopback",
                "--passphrase-file",
            ])
            .arg(&self.passphrase_file)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd
    }

    /// A detached armored signature of what is written to the child's stdin.
    pub fn detached_sign(&self, output: &Path) -> Command {
        let mut cmd = self.gpg();
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
        cmd
    }

    /// The public half, armored.
    pub fn export_public(&self) -> Result<String> {
        let out = self
            .gpg()
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
        let _ = Command::new("gpgconf")
            .args(["--kill", "gpg-agent"])
            .env("GNUPGHOME", self.home.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
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
