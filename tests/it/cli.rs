//! The toolkit's command line, run as a user runs it: matrix listing, filters,
//! usage errors, plan output for GitHub Actions, and generated-file drift.

use crate::support::{Project, xtask};
use serde_json::Value;

#[test]
fn matrix_json_lists_36_distinct_cells() {
    let out = xtask(&["matrix", "--json"]).success();
    let cells: Vec<Value> = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(cells.len(), 36);
    let mut ids: Vec<String> = cells
        .iter()
        .map(|c| format!("{}/{}/{}", c["version"], c["toolchain"], c["variant"]))
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 36);
    let gpu = cells.iter().find(|c| c["variant"] == "gpu").unwrap();
    assert!(
        gpu["runs-on"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l == "gpu")
    );
}

#[test]
fn matrix_filters_narrow_the_table() {
    let out = xtask(&[
        "matrix",
        "--toolchain",
        "noble,jammy",
        "--slurm",
        "24.11",
        "--variant",
        "cpu",
    ])
    .success();
    let rows: Vec<&str> = out
        .stdout
        .lines()
        .skip(1)
        .filter(|l| l.starts_with("24.11"))
        .collect();
    assert_eq!(rows.len(), 2, "{}", out.stdout);
    assert!(
        rows[0].contains("noble")
            && rows[0].contains("ubuntu:noble")
            && rows[0].contains("gcc@13.3.0")
    );
    assert!(rows[1].contains("jammy") && rows[1].contains("gcc@11.4.0"));
    assert!(out.stdout.ends_with("2 cells\n"));
}

#[test]
fn unknown_toolchain_exits_2_naming_the_valid_ones() {
    let out = xtask(&["matrix", "--toolchain", "focal"]).code(2);
    assert_eq!(
        out.stderr.trim(),
        "error: unknown toolchain 'focal' (valid: resolute, noble, jammy, rockylinux10, rockylinux9, rockylinux8)"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn unknown_version_and_variant_exit_2() {
    let out = xtask(&["matrix", "--slurm", "22.05"]).code(2);
    assert!(
        out.stderr
            .contains("unknown Slurm version '22.05' (valid: 25.11, 24.11, 23.11)"),
        "{}",
        out.stderr
    );
    let out = xtask(&["plan", "--stage", "slurm", "--variant", "tpu"]).code(2);
    assert!(
        out.stderr.contains("[possible values: cpu, gpu]"),
        "{}",
        out.stderr
    );
}

#[test]
fn deps_plan_refuses_a_slurm_filter() {
    let out = xtask(&["plan", "--stage", "deps", "--slurm", "25.11"]).code(2);
    assert!(
        out.stderr.contains("--slurm selects slurm-stage cells"),
        "{}",
        out.stderr
    );
}

#[test]
fn plan_writes_the_github_matrix_and_summary() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("output");
    let summary = dir.path().join("summary");
    let out = crate::support::xtask(&[
        "plan",
        "--stage",
        "slurm",
        "--slurm",
        "25.11",
        "--variant",
        "gpu",
        "--github-output",
        "--store-dir",
        dir.path().join("store").to_str().unwrap(),
    ])
    .envs([
        ("GITHUB_OUTPUT", &output),
        ("GITHUB_STEP_SUMMARY", &summary),
    ])
    .success();
    assert!(
        out.stdout.contains("6 of 6 slurm cells selected"),
        "{}",
        out.stdout
    );
    let text = std::fs::read_to_string(&output).unwrap();
    let get = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap()
            .to_string()
    };
    assert_eq!(get("count"), "6");
    let matrix: Value = serde_json::from_str(&get("matrix")).unwrap();
    let include = matrix["include"].as_array().unwrap();
    assert_eq!(include.len(), 6);
    assert!(
        include
            .iter()
            .all(|e| e["version"] == "25.11" && e["gpu"] == true)
    );
    let mirrors: Value = serde_json::from_str(&get("mirrors")).unwrap();
    assert_eq!(mirrors["include"].as_array().unwrap().len(), 6);
    let summary = std::fs::read_to_string(&summary).unwrap();
    assert!(
        summary.contains("| `25.11/rockylinux8/gpu` | build | new |"),
        "{summary}"
    );
}

#[test]
fn github_output_outside_actions_is_a_clear_error() {
    let out = crate::support::xtask(&["plan", "--stage", "deps", "--github-output"])
        .env_remove("GITHUB_OUTPUT")
        .failure();
    assert!(
        out.stderr.contains("$GITHUB_OUTPUT is not set"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_fourth_slurm_version_is_a_data_change_only() {
    let project = Project::copy();
    project.edit("spack-env/matrix.yaml", |m| {
        m.replace(
            "slurm:\n",
            "slurm:\n  - version: \"26.05\"\n    status: preview\n    spack_version: 26-05-0-1\n    tarball: slurm-26.05.0.tar.bz2\n    sha256: 1111111111111111111111111111111111111111111111111111111111111111\n",
        )
    });
    let out = project.xtask(&["matrix", "--json"]).success();
    let cells: Vec<Value> = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(cells.len(), 48);
    assert_eq!(cells.iter().filter(|c| c["version"] == "26.05").count(), 12);

    // The committed workflows are now stale; --check says so and changes nothing.
    let slurm_yml = ".github/workflows/build-and-publish-slurm.yml";
    let before = project.read(slurm_yml);
    let out = project.xtask(&["workflows", "--check"]).code(1);
    assert!(out.stdout.contains("+        description: Comma-separated Slurm versions, empty for all (26.05, 25.11, 24.11, 23.11)"), "{}", out.stdout);
    assert!(
        out.stderr.contains(&format!(
            "{slurm_yml} is stale: run `cargo xtask workflows`"
        )),
        "{}",
        out.stderr
    );
    assert_eq!(project.read(slurm_yml), before);

    // Regenerating picks the version up everywhere, and the result lints clean.
    project.xtask(&["workflows"]).success();
    assert!(project.read(slurm_yml).contains("26.05"));
    assert!(
        project
            .read("README.md")
            .contains("| 26.05 | preview | `26-05-0-1` |")
    );
    assert!(
        project
            .read("README.md")
            .contains("4 Slurm versions × 6 toolchains × 2 variants (cpu, gpu) = 48 cells.")
    );
    project.xtask(&["workflows", "--check"]).success();
    project.actionlint();
}

#[test]
fn a_hand_edited_workflow_fails_the_check_with_a_diff() {
    let project = Project::copy();
    let ci = ".github/workflows/ci.yml";
    project.edit(ci, |t| {
        t.replace("timeout-minutes: 90", "timeout-minutes: 5")
    });
    let out = project.xtask(&["workflows", "--check"]).code(1);
    assert!(
        out.stdout
            .contains("-    timeout-minutes: 5\n+    timeout-minutes: 90"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("--- a/.github/workflows/ci.yml (committed)"),
        "{}",
        out.stdout
    );
}

#[test]
fn invalid_matrix_names_the_file_and_entry() {
    let project = Project::copy();
    project.edit("spack-env/matrix.yaml", |m| {
        m.replacen("name: noble", "name: jammy", 1)
    });
    let out = project.xtask(&["matrix"]).failure();
    assert!(
        out.stderr.contains("spack-env/matrix.yaml"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("toolchain 'jammy' is listed twice"),
        "{}",
        out.stderr
    );
}

#[test]
fn committed_workflows_pass_actionlint_with_shellcheck() {
    Project::repo().actionlint();
}

#[test]
fn a_closed_stdout_is_not_a_crash() {
    // `cargo xtask matrix | head -0`: the reader is gone before anything is written.
    for args in [&["matrix"][..], &["workflows", "--check"][..]] {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(args)
            .current_dir(crate::support::repo_root())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
    }
}

/// The admins' `slurm-factory`: `download` alone, and no checkout needed.
#[test]
fn the_admins_executable_is_download_alone_and_reads_no_checkout() {
    let nowhere = tempfile::tempdir().unwrap();
    let at = nowhere.path();
    let help = crate::support::admin(at, &["--help"]).success();
    assert!(help.stdout.contains("download"), "{}", help.stdout);
    assert!(!help.stdout.contains("publish"), "{}", help.stdout);
    // Every command says what it does (a flattened option group once took
    // download's description away).
    assert!(
        help.stdout.contains("download  Fetch a released Slurm"),
        "{}",
        help.stdout
    );
    let help = crate::support::admin(at, &["download", "--help"]).success();
    assert!(
        help.stdout
            .contains("slurm-factory download --slurm 25.11 --toolchain noble"),
        "its examples name itself: {}",
        help.stdout
    );
    assert!(!help.stdout.contains("cargo xtask"), "{}", help.stdout);
    crate::support::admin(at, &["publish"]).code(2);
    let bad = crate::support::admin(at, &["download", "--list", "--from", "local"]).code(2);
    assert!(
        bad.stderr.contains("--from local needs --store-dir DIR"),
        "{}",
        bad.stderr
    );
    let bad = crate::support::admin(
        at,
        &[
            "download",
            "--slurm",
            "25.11",
            "--toolchain",
            "noble",
            "--prefix",
            "x",
            "--trusted-fingerprint",
            "ABCD",
        ],
    )
    .code(2);
    assert!(bad.stderr.contains("40 hex digits"), "{}", bad.stderr);
    // A release is named by its tag, of the series --slurm names if given.
    let bad = crate::support::admin(at, &["download", "--list", "--release", "v25.11"]).code(2);
    assert!(
        bad.stderr
            .contains("--release v25.11: expected a release tag, slurm-<version>-<YYYY.MM.DD>[.N]"),
        "{}",
        bad.stderr
    );
    let bad = crate::support::admin(
        at,
        &[
            "download",
            "--list",
            "--slurm",
            "25.11",
            "--release",
            "slurm-24.11.6-2026.12.01",
        ],
    )
    .code(2);
    assert!(
        bad.stderr.contains(
            "--release slurm-24.11.6-2026.12.01 is a release of Slurm 24.11, not --slurm 25.11"
        ),
        "{}",
        bad.stderr
    );
    let help = crate::support::admin(at, &["download", "--help"]).success();
    assert!(
        help.stdout.contains("--release slurm-25.11.6-2026.12.01"),
        "{}",
        help.stdout
    );
    // It wrote nothing where it ran.
    assert_eq!(std::fs::read_dir(at).unwrap().count(), 0);
}
