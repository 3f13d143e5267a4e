//! Throwaway GnuPG keys made with the real gpg, for signing tests.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct TestKey {
    pub home: tempfile::TempDir,
    pub secret_armored: String,
    pub public_file: PathBuf,
    pub passphrase: String,
}

impl TestKey {
    /// An ed25519 signing key protected by `passphrase` ("" for none).
    pub fn new(name: &str, passphrase: &str) -> TestKey {
        // Under load gpg-agent occasionally fails a protected key's first
        // signature ("Corrupted protection"): start again in a fresh home.
        let mut attempt = 0;
        let home = loop {
            attempt += 1;
            let home = tempfile::tempdir().unwrap();
            let out = gpg_in(
                home.path(),
                passphrase,
                &[
                    "--quick-gen-key",
                    &format!("{name} <{name}@example.invalid>"),
                    "ed25519",
                    "sign",
                    "1y",
                ],
            );
            if out.status.success() {
                break home;
            }
            kill_agent(home.path());
            assert!(
                attempt < 3,
                "gpg --quick-gen-key: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let gpg = |args: &[&str]| {
            let out = gpg_in(home.path(), passphrase, args);
            assert!(
                out.status.success(),
                "gpg {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            out.stdout
        };
        let secret_armored = String::from_utf8(gpg(&["--armor", "--export-secret-keys"])).unwrap();
        let public = gpg(&["--armor", "--export"]);
        let public_file = home.path().join("public.asc");
        std::fs::write(&public_file, public).unwrap();
        TestKey {
            home,
            secret_armored,
            public_file,
            passphrase: passphrase.into(),
        }
    }

    /// The primary key's fingerprint (40 hex digits).
    pub fn fingerprint(&self) -> String {
        let out = Command::new("gpg")
            .env("GNUPGHOME", self.home.path())
            .args(["--batch", "--with-colons", "--fingerprint"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.starts_with("fpr:"))
            .and_then(|l| l.split(':').nth(9))
            .expect("gpg lists the key's fingerprint")
            .to_string()
    }

    /// Writes an armored detached signature of `file` made with this key.
    pub fn detach_sign(&self, file: &Path, signature: &Path) {
        let status = Command::new("gpg")
            .env("GNUPGHOME", self.home.path())
            .args([
                "--batch",
                "--yes",
                "--no-permission-warning",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                &self.passphrase,
                "--armor",
                "--detach-sign",
                "--output",
            ])
            .arg(signature)
            .arg(file)
            .status()
            .unwrap();
        assert!(status.success(), "gpg --detach-sign {}", file.display());
    }

    /// `gpg --verify` of a detached signature in a fresh keyring holding only
    /// `public` (an armored key file).
    pub fn verify(public: &Path, signature: &Path, data: &Path) -> bool {
        verify_with(public, &[signature.as_os_str(), data.as_os_str()])
    }
}

fn verify_with(public: &Path, files: &[&std::ffi::OsStr]) -> bool {
    let home = tempfile::tempdir().unwrap();
    let gpg = || {
        let mut cmd = Command::new("gpg");
        cmd.env("GNUPGHOME", home.path()).arg("--batch");
        cmd
    };
    assert!(
        gpg()
            .arg("--import")
            .arg(public)
            .output()
            .unwrap()
            .status
            .success()
    );
    let ok = gpg()
        .arg("--verify")
        .args(files)
        .output()
        .unwrap()
        .status
        .success();
    kill_agent(home.path());
    ok
}

fn gpg_in(home: &Path, passphrase: &str, args: &[&str]) -> std::process::Output {
    Command::new("gpg")
        .env("GNUPGHOME", home)
        .args([
            "--batch",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            passphrase,
        ])
        .args(args)
        .output()
        .unwrap_or_else(|_| super::missing("gpg"))
}

pub fn kill_agent(home: &Path) {
    let _ = Command::new("gpgconf")
        .env("GNUPGHOME", home)
        .args(["--kill", "gpg-agent"])
        .status();
}

impl Drop for TestKey {
    fn drop(&mut self) {
        kill_agent(self.home.path());
    }
}
