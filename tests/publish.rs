//! `cargo xtask publish`: packages made by `package` go to a store in a safe
//! order; a rerun uploads nothing; a corrupt or unsigned package never leaves.

mod common;

use std::path::{Path, PathBuf};

use common::gpg::TestKey;
use common::{fixtures, xtask};

struct Dist {
    dir: tempfile::TempDir,
    _key: TestKey,
}

impl Dist {
    fn out(&self) -> PathBuf {
        self.dir.path().join("dist")
    }
    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }
}

/// A signed package of a small view, split into parts when `split` is set.
fn dist(split: Option<&str>) -> Dist {
    let dir = tempfile::tempdir().unwrap();
    let view = dir.path().join("view/bin");
    std::fs::create_dir_all(&view).unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let noise: Vec<u8> = (0..200_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(view.join("scontrol"), noise).unwrap();
    let key = TestKey::new("Publisher", "");
    let lock = fixtures().join("spack-concretized-slurm-env/spack.lock");
    let out = dir.path().join("dist");
    let mut args = vec![
        "package",
        "--view",
        dir.path().join("view").to_str().unwrap().to_string().leak(),
        "--lock",
        lock.to_str().unwrap().to_string().leak(),
        "--slurm",
        "24.11",
        "--toolchain",
        "jammy",
        "--out",
        out.to_str().unwrap().to_string().leak(),
    ];
    if let Some(size) = split {
        args.extend(["--split-size", size]);
    }
    xtask(&args)
        .env("SLURM_FACTORY_GPG_PRIVATE_KEY", &key.secret_armored)
        .success();
    Dist { dir, _key: key }
}

fn publish_local(d: &Dist, extra: &[&str]) -> common::Done {
    let mut args = vec![
        "publish",
        "--to",
        "local",
        "--dir",
        d.out().to_str().unwrap().to_string().leak(),
        "--store-dir",
        d.store().to_str().unwrap().to_string().leak(),
    ];
    args.extend_from_slice(extra);
    xtask(&args).success()
}

fn lines_with<'a>(out: &'a str, prefix: &str) -> Vec<&'a str> {
    out.lines().filter(|l| l.starts_with(prefix)).collect()
}

#[test]
fn data_first_index_last_and_a_rerun_uploads_nothing() {
    let d = dist(None);
    let first = publish_local(&d, &[]);
    let puts: Vec<&str> = lines_with(&first.stdout, "put ");
    let pos = |needle: &str| {
        puts.iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle}: {puts:?}"))
    };
    assert!(pos(".tar.gz (") < pos(".tar.gz.sha256"));
    assert!(pos(".tar.gz.asc") < pos(".manifest.json"));
    assert!(pos(".manifest.json") < pos("keys/slurm-factory-signing-key.asc"));
    assert_eq!(puts.last().unwrap().trim(), "put  releases/index.json");
    let rel = d.store().join("releases/24.11/jammy/cpu");
    for f in [
        "slurm-24.11-jammy-cpu-x86_64.tar.gz",
        "slurm-24.11-jammy-cpu-x86_64.tar.gz.asc",
        "slurm-24.11-jammy-cpu-x86_64.manifest.json",
    ] {
        assert_eq!(
            std::fs::read(rel.join(f)).unwrap(),
            std::fs::read(d.out().join(f)).unwrap(),
            "{f}"
        );
    }
    let second = publish_local(&d, &[]);
    assert!(
        lines_with(&second.stdout, "put ").is_empty(),
        "{}",
        second.stdout
    );
    assert!(
        second
            .stdout
            .contains("0 uploaded (0.0 MiB), 6 already there"),
        "{}",
        second.stdout
    );
}

#[test]
fn parts_are_published_each_with_its_checksum() {
    let d = dist(Some("64K"));
    publish_local(&d, &[]);
    let rel = d.store().join("releases/24.11/jammy/cpu");
    assert!(
        rel.join("slurm-24.11-jammy-cpu-x86_64.tar.gz.part-000")
            .is_file()
    );
    assert!(
        rel.join("slurm-24.11-jammy-cpu-x86_64.tar.gz.part-000.sha256")
            .is_file()
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.store().join("releases/index.json")).unwrap())
            .unwrap();
    let files = &index["packages"]["slurm-24.11-jammy-cpu-x86_64"]["files"];
    assert!(
        files
            .get("slurm-24.11-jammy-cpu-x86_64.tar.gz.part-001")
            .is_some(),
        "{index}"
    );
}

#[test]
fn a_corrupt_package_is_refused_and_nothing_is_uploaded() {
    let d = dist(None);
    let tarball = d.out().join("slurm-24.11-jammy-cpu-x86_64.tar.gz");
    let mut bytes = std::fs::read(&tarball).unwrap();
    bytes[1000] ^= 0xff;
    std::fs::write(&tarball, bytes).unwrap();
    let done = xtask(&[
        "publish",
        "--to",
        "local",
        "--dir",
        d.out().to_str().unwrap(),
        "--store-dir",
        d.store().to_str().unwrap(),
    ])
    .failure();
    assert!(
        done.stderr
            .contains("slurm-24.11-jammy-cpu-x86_64.tar.gz does not match"),
        "{}",
        done.stderr
    );
    assert!(!d.store().exists(), "nothing was uploaded");
}

#[test]
fn an_unsigned_package_is_refused() {
    let d = dist(None);
    std::fs::remove_file(d.out().join("slurm-24.11-jammy-cpu-x86_64.tar.gz.asc")).unwrap();
    let done = xtask(&[
        "publish",
        "--to",
        "local",
        "--dir",
        d.out().to_str().unwrap(),
        "--store-dir",
        d.store().to_str().unwrap(),
    ])
    .failure();
    assert!(
        done.stderr
            .contains(".tar.gz.asc is missing: unsigned packages are not published"),
        "{}",
        done.stderr
    );
    assert!(!d.store().exists());
}

#[test]
fn dry_run_lists_and_uploads_nothing() {
    let d = dist(None);
    let done = publish_local(&d, &["--dry-run"]);
    assert!(
        done.stdout
            .contains("-> releases/24.11/jammy/cpu/slurm-24.11-jammy-cpu-x86_64.tar.gz ("),
        "{}",
        done.stdout
    );
    assert!(
        done.stdout.contains("dry run: 6 uploaded"),
        "{}",
        done.stdout
    );
    assert!(!Path::new(&d.store()).exists());
}

#[test]
fn s3_without_a_bucket_is_a_usage_error() {
    let d = dist(None);
    let done = xtask(&["publish", "--to", "s3", "--dir", d.out().to_str().unwrap()])
        .env_remove("SLURM_FACTORY_BUCKET")
        .code(2);
    assert!(
        done.stderr.contains("--to s3 needs --bucket NAME"),
        "{}",
        done.stderr
    );
}
