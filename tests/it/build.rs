//! `build-deps`, `build-slurm`, `index` and `image` as commands: their
//! plans (`--dry-run`), their errors, and the image step with real Podman.
//! The stages themselves run real Spack in `tests/it/real_spack.rs`.

use std::path::Path;
use std::process::Command;

use crate::support::{Project, sh, spack, xtask};

struct Site {
    state: tempfile::TempDir,
}

impl Site {
    fn new() -> Site {
        Site {
            state: tempfile::tempdir().unwrap(),
        }
    }

    fn state(&self) -> &Path {
        self.state.path()
    }
}

/// A project whose jammy image cannot be built: its base image is missing.
fn missing_jammy_base() -> Project {
    let project = Project::copy();
    project.edit("spack-env/matrix.yaml", |t| {
        t.replace(
            "image: ubuntu:jammy",
            "image: localhost/slurm-factory-missing-base:none",
        )
    });
    project
}

#[test]
fn an_image_that_cannot_be_built_is_a_clear_error_and_nothing_is_pushed() {
    let site = Site::new();
    let project = missing_jammy_base();
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
        .envs(spack::image_env())
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
    // Any local image stands in for the recipe's: only its tag is looked up.
    sh(Command::new("podman").args(["tag", "localbase:bookworm", &tag]));
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
    // Removes this name only; the base image keeps its own.
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
            .contains("no container engine found: install Podman or Docker, or pass --engine (add --dry-run to only print the plan)"),
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
    // `build-deps --toolchain jammy --dry-run`, with no key and no bucket.
    let deps_dry_run = |extra: &[&str]| {
        let mut args = vec![
            "build-deps",
            "--toolchain",
            "jammy",
            "--dry-run",
            "--state-dir",
            state,
        ];
        args.extend_from_slice(extra);
        xtask(&args)
            .env_remove("SLURM_FACTORY_GPG_PRIVATE_KEY")
            .env_remove("SLURM_FACTORY_BUCKET")
            .env_remove("SLURM_FACTORY_BUCKET_PREFIX")
            .success()
    };
    let deps = deps_dry_run(&[]);
    assert_contains_all(
        &deps.stdout,
        &[
            "# note: no signing key: set SLURM_FACTORY_GPG_PRIVATE_KEY",
            "FROM ubuntu:jammy",
            "--network=host",
            "spack -e \"$WORK/env\" install --fail-fast",
            "buildcache push --key <signing key> --with-build-dependencies slurm-factory-deps",
            "sources/spack-v1.1.0.tar.gz from ",
            "COPY sources/ /tmp/slurm-factory-sources/",
            "/opt/slurm-factory/env:ro",
            "/opt/slurm-factory/spack-repo:ro",
        ],
    );
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
    assert_contains_all(
        &slurm.stdout,
        &[
            "# cell 25.11/noble/gpu",
            "buildcache keys --install --trust",
            "spack -e \"$WORK/env\" install --fail-fast 2>&1 | tee \"$WORK/install.log\"\n",
            "--only package slurm-factory-slurm $built",
            "# then: cargo xtask package --view",
            "--gpu --fingerprint ",
        ],
    );
    let rehearsal = deps_dry_run(&["--rehearse"]);
    assert_contains_all(
        &rehearsal.stdout,
        &[
            "install --fail-fast --fake --only dependencies",
            "# A rehearsal: `spack install --fake`",
        ],
    );
    assert!(
        !site.state().join("work").exists(),
        "a dry run writes nothing"
    );
}

#[test]
fn an_image_build_refuses_spack_sources_of_another_commit() {
    // Tarballs made by `git archive` of a commit that is not the pinned one.
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::write(repo.join("README"), "not spack\n").unwrap();
    let git = |args: &[&str]| {
        sh(Command::new("git")
            .current_dir(&repo)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
            .args(args))
    };
    git(&["init", "-q"]);
    git(&["add", "README"]);
    git(&["commit", "-qm", "x"]);
    let commit = git(&["rev-parse", "HEAD"]).trim().to_string();
    let sources = dir.path().join("sources");
    std::fs::create_dir_all(&sources).unwrap();
    for name in ["spack-v1.1.0.tar.gz", "spack-packages-v2025.11.0.tar.gz"] {
        let out = sources.join(name);
        git(&[
            "archive",
            "--format=tar.gz",
            "-o",
            out.to_str().unwrap(),
            "HEAD",
        ]);
    }
    let site = Site::new();
    let done = xtask(&[
        "image",
        "--toolchain",
        "jammy",
        "--build",
        "--engine",
        "podman",
        "--spack-sources",
        sources.to_str().unwrap(),
        "--state-dir",
        site.state().to_str().unwrap(),
    ])
    .failure();
    assert!(
        done.stderr.contains(&format!(
            "spack-v1.1.0.tar.gz is commit {commit}, but spack-env/matrix.yaml pins spack/spack v1.1.0 at 2e907202bcc8209a6a62243aab50c179b524cc3b"
        )),
        "{}",
        done.stderr
    );
    assert!(!done.stdout.contains("podman build"), "nothing was built");
}

/// Every needle is in `out`; the first one missing is named.
fn assert_contains_all(out: &str, needles: &[&str]) {
    for needle in needles {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
}

/// The CPU and GPU legs of a toolchain record their builds in one state
/// object. Against S3, with every write of it held back so that both legs
/// read before either writes, both records still land (conditional writes,
/// retried); a read-then-write would lose one.
#[test]
fn two_legs_finishing_together_both_stay_recorded_in_s3() {
    use crate::support::s3::{FaultProxy, Faults, S3Server};
    let project = missing_jammy_base();
    let s3 = S3Server::start();
    // The proxy's faults are static: a leaked string, once per test.
    let state_put: &'static str =
        Box::leak(format!("PUT /{}/jammy/slurm/deps/state.json", s3.bucket).into_boxed_str());
    let proxy = FaultProxy::start(
        &s3,
        Faults {
            delay_matching: Some((state_put, std::time::Duration::from_secs(3))),
            ..Faults::default()
        },
    );
    let sites = [Site::new(), Site::new()];
    let legs: Vec<std::process::Child> = sites
        .iter()
        .zip([false, true])
        .map(|(site, gpu)| {
            let mut args = vec![
                "build-deps",
                "--toolchain",
                "jammy",
                "--unsigned",
                "--engine",
                "podman",
                "--network",
                "none",
                "--bucket",
                &s3.bucket,
                "--state-dir",
                site.state().to_str().unwrap(),
            ];
            if gpu {
                args.push("--gpu");
            }
            let mut cmd = project.command(&args);
            cmd.envs(spack::image_env())
                .envs(s3.env_with_endpoint(&proxy.endpoint))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            cmd.spawn().unwrap()
        })
        .collect();
    for mut leg in legs {
        assert!(!leg.wait().unwrap().success(), "the image cannot be built");
    }
    let state: serde_json::Value =
        serde_json::from_slice(&s3.object("jammy/slurm/deps/state.json").unwrap()).unwrap();
    assert_eq!(state["cells"]["cpu"]["status"], "failed", "{state}");
    assert_eq!(state["cells"]["gpu"]["status"], "failed", "{state}");
}
