//! `cargo xtask plan`: fingerprints against the state the builds record in
//! the store; only what changed is built, each with its reason.

use std::collections::BTreeMap;
use std::path::Path;

use crate::support::Project;
use crate::support::s3::S3Server;
use serde_json::{Value, json};

fn plan_json(project: &Project, args: &[&str]) -> Value {
    let mut full = vec!["plan", "--json"];
    full.extend_from_slice(args);
    let out = project
        .xtask(&full)
        .env_remove("SLURM_FACTORY_BUCKET")
        .env_remove("SLURM_FACTORY_BUCKET_PREFIX")
        .success();
    serde_json::from_str(&out.stdout).unwrap()
}

/// What the builds record: one state object per mirror, per variant the
/// fingerprint of the last build.
fn states_of(plan: &Value, status: &str) -> BTreeMap<String, Value> {
    let mut states: BTreeMap<String, Value> = BTreeMap::new();
    for cell in plan["cells"].as_array().unwrap() {
        let key = cell["state_key"].as_str().unwrap().to_string();
        let entry = states.entry(key).or_insert_with(|| json!({"cells": {}}));
        entry["cells"][cell["variant"].as_str().unwrap()] = json!({"fingerprint": cell["fingerprint"], "status": status, "time": "2026-11-25T00:00:00Z"});
    }
    states
}

fn record_locally(store: &Path, states: &BTreeMap<String, Value>) {
    for (key, state) in states {
        let path = store.join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, serde_json::to_vec_pretty(state).unwrap()).unwrap();
    }
}

/// Every cell of both stages recorded as built with the current inputs.
fn published(project: &Project, store: &Path) {
    for stage in ["deps", "slurm"] {
        let plan = plan_json(
            project,
            &["--stage", stage, "--store-dir", store.to_str().unwrap()],
        );
        record_locally(store, &states_of(&plan, "built"));
    }
}

/// A scratch copy of the project whose every cell is recorded built in a
/// fresh local store.
fn published_copy() -> (Project, tempfile::TempDir) {
    let project = Project::copy();
    let store = tempfile::tempdir().unwrap();
    published(&project, store.path());
    (project, store)
}

/// (cell id, reason) of each selected cell.
type Selected = Vec<(String, String)>;

fn selected(plan: &Value) -> Selected {
    plan["cells"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["build"] == true)
        .map(|c| {
            let id = format!(
                "{}/{}/{}",
                c["version"].as_str().unwrap_or("deps"),
                c["toolchain"].as_str().unwrap(),
                c["variant"].as_str().unwrap()
            );
            (id, c["reason"].as_str().unwrap().to_string())
        })
        .collect()
}

fn both(project: &Project, store: &Path) -> (Selected, Selected) {
    let s = store.to_str().unwrap();
    (
        selected(&plan_json(project, &["--stage", "deps", "--store-dir", s])),
        selected(&plan_json(project, &["--stage", "slurm", "--store-dir", s])),
    )
}

#[test]
fn nothing_published_selects_every_cell_as_new() {
    let project = Project::copy();
    let store = tempfile::tempdir().unwrap();
    let (deps, slurm) = both(&project, store.path());
    assert_eq!(deps.len(), 12);
    assert_eq!(slurm.len(), 36);
    assert!(deps.iter().chain(&slurm).all(|(_, r)| r == "new"));
}

#[test]
fn everything_published_selects_nothing() {
    let (project, store) = published_copy();
    let (deps, slurm) = both(&project, store.path());
    assert!(deps.is_empty() && slurm.is_empty(), "{deps:?} {slurm:?}");
    let table = project
        .xtask(&[
            "plan",
            "--stage",
            "slurm",
            "--store-dir",
            store.path().to_str().unwrap(),
        ])
        .success();
    assert!(
        table.stdout.ends_with("0 of 36 slurm cells selected\n"),
        "{}",
        table.stdout
    );
    assert!(
        table.stdout.contains("25.11/noble/gpu") && table.stdout.contains("skip    up to date"),
        "{}",
        table.stdout
    );
}

#[test]
fn a_changed_slurm_version_string_selects_exactly_its_12_cells() {
    let (project, store) = published_copy();
    project.edit("spack-env/matrix.yaml", |m| {
        m.replace("spack_version: 24-11-6-1", "spack_version: 24-11-6-2")
    });
    let (deps, slurm) = both(&project, store.path());
    assert!(deps.is_empty(), "{deps:?}");
    assert_eq!(slurm.len(), 12, "{slurm:?}");
    assert!(
        slurm
            .iter()
            .all(|(id, r)| id.starts_with("24.11/") && r == "inputs changed: environment"),
        "{slurm:?}"
    );
}

#[test]
fn a_changed_toolchain_gcc_selects_its_deps_and_slurm_cells() {
    let (project, store) = published_copy();
    project.edit("spack-env/matrix.yaml", |m| {
        m.replace("gcc: 11.4.0", "gcc: 11.4.1")
    });
    let (deps, slurm) = both(&project, store.path());
    assert_eq!(
        deps.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
        ["deps/jammy/cpu", "deps/jammy/gpu"]
    );
    assert!(
        deps.iter().all(|(_, r)| r == "inputs changed: environment"),
        "{deps:?}"
    );
    assert_eq!(slurm.len(), 6, "{slurm:?}");
    assert!(
        slurm.iter().all(|(id, _)| id.contains("/jammy/")),
        "{slurm:?}"
    );
    assert!(
        slurm
            .iter()
            .all(|(_, r)| r.starts_with("inputs changed: deps")),
        "{slurm:?}"
    );
}

#[test]
fn a_changed_slurm_recipe_selects_every_slurm_cell_and_no_deps_cell() {
    let (project, store) = published_copy();
    project.edit(
        "spack-repo/spack_repo/slurm_factory/packages/slurm/package.py",
        |t| format!("{t}\n# a change\n"),
    );
    let (deps, slurm) = both(&project, store.path());
    assert!(deps.is_empty(), "{deps:?}");
    assert_eq!(slurm.len(), 36);
    assert!(
        slurm.iter().all(|(_, r)| r == "inputs changed: recipes"),
        "{slurm:?}"
    );
}

#[test]
fn only_deps_changing_says_so_and_a_failed_build_is_retried() {
    let (project, store) = published_copy();
    // A dependency's spec changes: the deps cells' environment, and through
    // the deps fingerprint every slurm cell, whose own environment is the same.
    project.edit("spack-env/environment.yaml", |t| {
        t.replace("    - lua@5.4\n", "    - lua@5.4.6\n")
    });
    let (deps, slurm) = both(&project, store.path());
    assert_eq!(deps.len(), 12);
    assert_eq!(slurm.len(), 36);
    assert!(slurm.iter().all(|(_, r)| r == "deps changed"), "{slurm:?}");
    // A build recorded as failed is selected again with that reason.
    let plan = plan_json(
        &project,
        &[
            "--stage",
            "deps",
            "--toolchain",
            "noble",
            "--store-dir",
            store.path().to_str().unwrap(),
        ],
    );
    record_locally(store.path(), &states_of(&plan, "failed"));
    let again = selected(&plan_json(
        &project,
        &[
            "--stage",
            "deps",
            "--toolchain",
            "noble",
            "--store-dir",
            store.path().to_str().unwrap(),
        ],
    ));
    assert_eq!(again.len(), 2);
    assert!(
        again.iter().all(|(_, r)| r == "previous build failed"),
        "{again:?}"
    );
}

#[test]
fn force_and_filters() {
    let (project, store) = published_copy();
    let s = store.path().to_str().unwrap();
    let forced = selected(&plan_json(
        &project,
        &[
            "--stage",
            "slurm",
            "--slurm",
            "25.11",
            "--variant",
            "gpu",
            "--force",
            "--store-dir",
            s,
        ],
    ));
    assert_eq!(forced.len(), 6);
    assert!(
        forced
            .iter()
            .all(|(id, r)| id.starts_with("25.11/") && id.ends_with("/gpu") && r == "forced")
    );
    let plan = plan_json(
        &project,
        &[
            "--stage",
            "deps",
            "--toolchain",
            "rockylinux8",
            "--store-dir",
            s,
        ],
    );
    assert_eq!(plan["total"], 2);
    assert_eq!(plan["selected"], 0);
}

#[test]
fn state_in_s3_is_read_and_an_unreachable_store_selects_everything() {
    let project = Project::copy();
    let s3 = S3Server::start();
    let local = tempfile::tempdir().unwrap();
    published(&project, local.path());
    for stage in ["deps", "slurm"] {
        let plan = plan_json(
            &project,
            &[
                "--stage",
                stage,
                "--store-dir",
                local.path().to_str().unwrap(),
            ],
        );
        assert_eq!(plan["selected"], 0);
        for (key, state) in states_of(&plan, "built") {
            s3.put(&key, &serde_json::to_vec(&state).unwrap());
        }
    }
    let out = project
        .xtask(&["plan", "--stage", "slurm", "--bucket", &s3.bucket])
        .envs(s3.env())
        .success();
    assert!(
        out.stdout.ends_with("0 of 36 slurm cells selected\n"),
        "{}",
        out.stdout
    );

    let out = project
        .xtask(&["plan", "--stage", "deps", "--bucket", &s3.bucket])
        .envs(s3.env_with_endpoint("http://127.0.0.1:9"))
        .success();
    assert!(
        out.stderr.contains("could not be read") && out.stderr.contains("planning every cell"),
        "{}",
        out.stderr
    );
    assert!(
        out.stdout.ends_with("12 of 12 deps cells selected\n"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("store unreachable"), "{}", out.stdout);
}
