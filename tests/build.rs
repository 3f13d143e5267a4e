//! `build-deps`, `build-slurm` and `index` with real Podman (set up by
//! `.ci/podman`): Spack's place is taken by the test double in
//! `tests/spack-double/`, baked into an image made from the local Debian base.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::gpg::TestKey;
use common::{Project, repo_root, sh, xtask};
use sha2::{Digest, Sha256};

/// Builds the test-double image once per test run; its tag follows its files.
fn double_image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let dir = repo_root().join("tests/spack-double");
        let mut hash = Sha256::new();
        for f in ["Containerfile", "spack"] {
            hash.update(std::fs::read(dir.join(f)).unwrap());
        }
        let digest: String = hash
            .finalize()
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect();
        let tag = format!("localhost/slurm-factory-test-double:{digest}");
        let exists = Command::new("podman")
            .args(["image", "exists", &tag])
            .status();
        let exists = exists
            .expect("podman is not installed: run `sudo bash .ci/install`")
            .success();
        if !exists {
            sh(Command::new("podman")
                .args(["build", "--network=host", "--tag", &tag])
                .arg(&dir));
        }
        tag
    })
}

struct Site {
    state: tempfile::TempDir,
    /// Made when first used: a protected key takes gpg about two seconds.
    key: std::sync::OnceLock<TestKey>,
}

impl Site {
    fn new() -> Site {
        Site {
            state: tempfile::tempdir().unwrap(),
            key: std::sync::OnceLock::new(),
        }
    }

    fn key(&self) -> &TestKey {
        self.key
            .get_or_init(|| TestKey::new("Builder", "pass phrase 42"))
    }

    fn state(&self) -> &Path {
        self.state.path()
    }

    /// The toolkit with the double's image, no network, this site's state and key.
    fn run(&self, project: &Project, args: &[&str]) -> common::Run {
        let mut full: Vec<&str> = args.to_vec();
        full.extend_from_slice(&[
            "--image",
            double_image(),
            "--network",
            "none",
            "--engine",
            "podman",
            "--state-dir",
            self.state().to_str().unwrap(),
        ]);
        project
            .xtask(&full)
            .env("SLURM_FACTORY_GPG_PRIVATE_KEY", &self.key().secret_armored)
            .env("SLURM_FACTORY_GPG_PASSPHRASE", &self.key().passphrase)
            .env_remove("SLURM_FACTORY_BUCKET")
    }

    fn facts(&self, work: &str, what: &str) -> serde_json::Value {
        let path = self
            .state()
            .join("work")
            .join(work)
            .join("debug")
            .join(format!("double-{what}.json"));
        serde_json::from_slice(
            &std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        )
        .unwrap()
    }

    fn deps_mirror(&self) -> PathBuf {
        self.state().join("store/jammy/slurm/deps")
    }
}

fn euid() -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").unwrap().uid() as u64
}

#[test]
fn build_deps_pushes_a_signed_mirror_from_a_container() {
    let site = Site::new();
    let project = Project::repo();
    let done = site
        .run(
            &project,
            &["build-deps", "--toolchain", "jammy", "--update-index"],
        )
        .success();
    let fpr = site.key().fingerprint();
    assert!(
        done.stdout.contains("podman run --rm --network=none"),
        "{}",
        done.stdout
    );
    assert!(
        done.stdout
            .contains(&format!("specs, signed by {fpr}, blobs intact")),
        "the toolkit checks what it pushed:\n{}",
        done.stdout
    );
    // The container ran as the invoking user, without network, env mounted read-only.
    let facts = site.facts("deps-jammy-cpu", "push");
    assert_eq!(facts["uid"], euid());
    assert_eq!(facts["networks"], serde_json::json!(["lo"]));
    assert_eq!(facts["env_readonly"], true);
    // Real Spack's v3 layout, with the index (single-writer path).
    let mirror = site.deps_mirror();
    assert!(mirror.join("v3/layout.json").is_file());
    assert!(
        mirror
            .join("v3/manifests/index/index.manifest.json")
            .is_file()
    );
    assert!(
        mirror
            .join(format!("v3/manifests/key/{fpr}.key.manifest.json"))
            .is_file()
    );
    let munge = std::fs::read_dir(mirror.join("v3/manifests/spec/munge"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(TestKey::verify_clearsigned(&site.key().public_file, &munge));
    // The secret files are gone; the secrets were never printed.
    assert!(!site.state().join("work/deps-jammy-cpu/keys").exists());
    let all = format!("{}{}", done.stdout, done.stderr);
    assert!(!all.contains(&site.key().passphrase));
    assert!(!all.contains("PRIVATE KEY BLOCK"));
}

#[test]
fn build_slurm_uses_the_deps_cache_and_packages_the_view() {
    let site = Site::new();
    let project = Project::repo();
    site.run(&project, &["build-deps", "--toolchain", "jammy"])
        .success();
    let dist = site.state().join("dist");
    let done = site
        .run(
            &project,
            &[
                "build-slurm",
                "--slurm",
                "25.11",
                "--toolchain",
                "jammy",
                "--out",
                dist.to_str().unwrap(),
                // ubuntu:jammy cannot be pulled here; tests/verify.rs covers verify.
                "--skip-verify",
            ],
        )
        .success();
    assert!(
        done.stdout.contains("packaged 25.11/jammy/cpu"),
        "{}",
        done.stdout
    );
    let tarball = dist.join("slurm-25.11-jammy-cpu-x86_64.tar.gz");
    assert!(TestKey::verify(
        &site.key().public_file,
        &dist.join("slurm-25.11-jammy-cpu-x86_64.tar.gz.asc"),
        &tarball
    ));
    let listing = sh(Command::new("tar").arg("-tzf").arg(&tarball));
    for entry in [
        "view/bin/scontrol",
        "modules/slurm/25.11-jammy.lua",
        "manifest.json",
    ] {
        assert!(
            listing.contains(&format!("slurm-25.11-jammy-cpu-x86_64/{entry}")),
            "{entry}:\n{listing}"
        );
    }
    // The slurm mirror holds Slurm alone, signed.
    let slurm_mirror = site
        .state()
        .join("store/jammy/slurm/25.11/v3/manifests/spec");
    let names: Vec<String> = std::fs::read_dir(&slurm_mirror)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut names = names;
    names.sort();
    assert_eq!(names, ["openmpi", "slurm"], "stage 2's roots only");
}

#[test]
fn index_is_rebuilt_by_its_own_command() {
    let site = Site::new();
    let project = Project::repo();
    site.run(&project, &["build-deps", "--toolchain", "jammy"])
        .success();
    let index = site
        .deps_mirror()
        .join("v3/manifests/index/index.manifest.json");
    assert!(!index.exists(), "build jobs do not write the index");
    site.run(&project, &["index", "--toolchain", "jammy"])
        .success();
    assert!(index.is_file());
}

#[test]
fn a_failing_build_exits_with_spacks_status_and_a_redacted_debug_bundle() {
    let site = Site::new();
    let project = Project::copy();
    project.edit("spack-env/environment.yaml", |t| {
        t.replace("    - munge\n", "    - munge\n    - fail-me\n")
    });
    let secret = "aws-secret-value-that-must-not-leak";
    let done = site
        .run(&project, &["build-deps", "--toolchain", "noble"])
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_ACCESS_KEY_ID", "AKIATESTTESTTEST")
        .env("SLURM_FACTORY_BUCKET", "test-bucket")
        // Recording the failure in the bucket must fail here, on loopback only.
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .code(3);
    assert!(
        done.stderr
            .contains("deps/noble/cpu: Spack failed in phase 'install' (exit 3); debug bundle:"),
        "{}",
        done.stderr
    );
    let debug = site.state().join("work/deps-noble-cpu/debug");
    assert!(debug.join("spack.yaml").is_file());
    let stage: Vec<PathBuf> = walk(&debug.join("stage"));
    let out = stage
        .iter()
        .find(|p| p.ends_with("spack-build-out.txt"))
        .expect("build log in the bundle");
    assert!(
        std::fs::read_to_string(out)
            .unwrap()
            .contains("the double was told to fail")
    );
    let env = std::fs::read_to_string(
        stage
            .iter()
            .find(|p| p.ends_with("spack-build-env.txt"))
            .unwrap(),
    )
    .unwrap();
    assert!(
        env.contains("AWS_SECRET_ACCESS_KEY=***"),
        "the secret is redacted, the name kept:\n{env}"
    );
    for p in walk(&debug) {
        let text = String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned();
        assert!(
            !text.contains(secret) && !text.contains(&site.key().passphrase),
            "{} leaks a secret",
            p.display()
        );
    }
    // Passed to the container by name only, never printed.
    assert!(
        done.stdout.contains("--env=AWS_SECRET_ACCESS_KEY "),
        "{}",
        done.stdout
    );
    assert!(!format!("{}{}", done.stdout, done.stderr).contains(secret));
    assert!(!site.state().join("work/deps-noble-cpu/keys").exists());
    // With a bucket configured the state goes there (unreachable here), not to the local store.
    assert!(!site.state().join("store").exists(), "nothing pushed");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn an_image_that_cannot_be_built_is_a_clear_error_and_nothing_is_pushed() {
    let site = Site::new();
    let project = Project::copy();
    project.edit("spack-env/matrix.yaml", |t| {
        t.replace(
            "image: ubuntu:jammy",
            "image: localhost/slurm-factory-missing-base:none",
        )
    });
    let done = project
        .xtask(&[
            "build-deps",
            "--toolchain",
            "jammy",
            "--unsigned",
            "--engine",
            "podman",
            "--network",
            "none",
            "--state-dir",
            site.state().to_str().unwrap(),
        ])
        .failure();
    assert!(
        done.stderr
            .contains("building the image localhost/slurm-factory-jammy:"),
        "{}",
        done.stderr
    );
    assert!(
        done.stderr.contains("failed (podman exited"),
        "{}",
        done.stderr
    );
    assert_nothing_pushed_and_failure_recorded(&site, "jammy");
}

/// No mirror content; the state object says the build failed, so the next
/// plan selects the cell again.
fn assert_nothing_pushed_and_failure_recorded(site: &Site, toolchain: &str) {
    let mirror = site.state().join(format!("store/{toolchain}/slurm/deps"));
    assert!(!mirror.join("v3").exists(), "nothing pushed");
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(mirror.join("state.json")).expect("the failure is recorded"),
    )
    .unwrap();
    assert_eq!(state["cells"]["cpu"]["status"], "failed", "{state}");
}

#[test]
fn an_unchanged_recipe_is_not_rebuilt() {
    let tag = xtask(&["image", "--toolchain", "rockylinux9"])
        .success()
        .stdout
        .trim()
        .to_string();
    sh(Command::new("podman").args(["tag", double_image(), &tag]));
    let site = Site::new();
    let done = xtask(&[
        "build-deps",
        "--toolchain",
        "rockylinux9",
        "--dry-run",
        "--engine",
        "podman",
        "--unsigned",
        "--state-dir",
        site.state().to_str().unwrap(),
    ])
    .success();
    // Removes this name only; the double keeps its own.
    let _ = Command::new("podman").args(["untag", &tag, &tag]).status();
    assert!(
        done.stdout
            .contains(&format!("# image {tag} is present: not rebuilt")),
        "{}",
        done.stdout
    );
    assert!(!done.stdout.contains("podman build"));
}

#[test]
fn no_engine_is_a_clear_error() {
    let site = Site::new();
    let empty = tempfile::tempdir().unwrap();
    let done = xtask(&[
        "build-deps",
        "--toolchain",
        "jammy",
        "--unsigned",
        "--state-dir",
        site.state().to_str().unwrap(),
    ])
    .env("PATH", empty.path())
    .env_remove("SLURM_FACTORY_ENGINE")
    .failure();
    assert!(
        done.stderr
            .contains("no container engine found: install Podman or Docker"),
        "{}",
        done.stderr
    );
}

#[test]
fn bad_input_exits_2() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["build-deps", "--toolchain", "focal", "--dry-run"],
            "unknown toolchain 'focal'",
        ),
        (
            &[
                "build-deps",
                "--toolchain",
                "jammy",
                "--mirror",
                "http://x/y",
                "--dry-run",
            ],
            "unknown mirror URL scheme 'http'",
        ),
        (
            &[
                "build-slurm",
                "--slurm",
                "20.02",
                "--toolchain",
                "jammy",
                "--dry-run",
            ],
            "unknown Slurm version '20.02'",
        ),
        (
            &[
                "build-deps",
                "--toolchain",
                "jammy",
                "--network",
                "bridge0",
                "--dry-run",
            ],
            "--network bridge0 is not a network mode",
        ),
    ];
    for (args, message) in cases {
        let done = xtask(args).code(2);
        assert!(done.stderr.contains(message), "{args:?}: {}", done.stderr);
    }
}

#[test]
fn dry_runs_print_complete_plans_without_a_key_or_cloud_account() {
    let site = Site::new();
    let state = site.state().to_str().unwrap();
    let deps = xtask(&[
        "build-deps",
        "--toolchain",
        "jammy",
        "--dry-run",
        "--state-dir",
        state,
    ])
    .env_remove("SLURM_FACTORY_GPG_PRIVATE_KEY")
    .env_remove("SLURM_FACTORY_BUCKET")
    .success();
    for needle in [
        "# note: no signing key: set SLURM_FACTORY_GPG_PRIVATE_KEY",
        "FROM ubuntu:jammy",
        "--network=host",
        "spack -e \"$WORK/env\" install --fail-fast",
        "buildcache push --signed --key <signing key> --with-build-dependencies slurm-factory-deps",
        "/opt/slurm-factory/env:ro",
        "/opt/slurm-factory/spack-repo:ro",
    ] {
        assert!(
            deps.stdout.contains(needle),
            "missing {needle:?} in:\n{}",
            deps.stdout
        );
    }
    let slurm = xtask(&[
        "build-slurm",
        "--slurm",
        "25.11",
        "--toolchain",
        "noble",
        "--gpu",
        "--dry-run",
        "--state-dir",
        state,
    ])
    .env_remove("SLURM_FACTORY_GPG_PRIVATE_KEY")
    .success();
    for needle in [
        "# cell 25.11/noble/gpu",
        "buildcache keys --install --trust",
        "spack -e \"$WORK/env\" install --fail-fast\n",
        "--only package slurm-factory-slurm slurm_factory.slurm openmpi",
        "# then: cargo xtask package --view",
        "--gpu --fingerprint ",
    ] {
        assert!(
            slurm.stdout.contains(needle),
            "missing {needle:?} in:\n{}",
            slurm.stdout
        );
    }
    assert!(
        !site.state().join("work").exists(),
        "a dry run writes nothing"
    );
}
