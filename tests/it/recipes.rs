//! The `slurm_factory` Spack package repository: every recipe byte-compiles
//! with Python, and the slurm recipe declares each matrix version with its
//! upstream checksum. Python's own parser reads the recipes (no Spack needed).

use std::process::Command;

use crate::support::repo_root;
use serde_json::Value;

const REPO: &str = "spack-repo/spack_repo/slurm_factory";

/// Byte-compiles every recipe (in memory) and lists the `version(...)` calls
/// of each: `{package: {version: sha256}}`.
const INSPECT: &str = r#"
import ast, json, pathlib, sys
out = {}
for path in sorted(pathlib.Path(sys.argv[1]).glob("packages/*/package.py")):
    source = path.read_text()
    compile(source, str(path), "exec")
    versions = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "version":
            args = {k.arg: k.value.value for k in node.keywords if isinstance(k.value, ast.Constant)}
            versions[node.args[0].value] = args.get("sha256")
    out[path.parent.name] = versions
print(json.dumps(out))
"#;

fn inspect() -> Value {
    let out = Command::new("python3")
        .arg("-c")
        .arg(INSPECT)
        .arg(repo_root().join(REPO))
        .output()
        .expect("python3 is needed to compile the Spack recipes");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn every_recipe_compiles_and_slurm_and_curl_exist() {
    let recipes = inspect();
    for name in ["slurm", "curl"] {
        assert!(
            recipes.get(name).is_some(),
            "no {name} recipe in {REPO}: {recipes}"
        );
        assert!(
            !recipes[name].as_object().unwrap().is_empty(),
            "{name} declares no version"
        );
    }
}

#[test]
fn slurm_recipe_declares_every_matrix_version_with_its_sha256() {
    let recipes = inspect();
    let matrix = std::fs::read_to_string(repo_root().join("spack-env/matrix.yaml")).unwrap();
    let matrix: serde_yaml::Value = serde_yaml::from_str(&matrix).unwrap();
    for release in matrix["slurm"].as_sequence().unwrap() {
        let v = release["spack_version"].as_str().unwrap();
        let declared = &recipes["slurm"][v];
        assert_eq!(
            declared,
            &release["sha256"].as_str().map(Value::from).unwrap(),
            "slurm@{v}"
        );
    }
}

#[test]
fn every_checksum_is_a_sha256() {
    for (name, versions) in inspect().as_object().unwrap() {
        for (v, sha) in versions.as_object().unwrap() {
            let sha = sha
                .as_str()
                .unwrap_or_else(|| panic!("{name}@{v} has no sha256"));
            assert!(
                sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()),
                "{name}@{v}: {sha}"
            );
        }
    }
}

#[test]
fn repo_namespace_matches_its_directory() {
    let text = std::fs::read_to_string(repo_root().join(REPO).join("repo.yaml")).unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(doc["repo"]["namespace"], "slurm_factory");
}
