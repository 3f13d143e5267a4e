//! `cargo xtask spack-env`: every cell's environment renders, deterministically,
//! with what Spack needs; bad input writes nothing. (Real Spack checks these
//! files outside CI: see the README.)

use std::collections::BTreeSet;

use crate::support::xtask;
use serde_yaml::Value;

fn render(args: &[&str]) -> (tempfile::TempDir, Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("env");
    let mut full = vec!["spack-env"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["--out", out.to_str().unwrap()]);
    xtask(&full).success();
    let text = std::fs::read_to_string(out.join("spack.yaml")).unwrap();
    let doc: Value = serde_yaml::from_str(&text).unwrap();
    (dir, doc, text)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn all_48_environments_render_and_are_deterministic() {
    let matrix: Vec<serde_json::Value> =
        serde_json::from_str(&xtask(&["matrix", "--json"]).success().stdout).unwrap();
    let mut seen = BTreeSet::new();
    for cell in &matrix {
        let (tc, version, gpu) = (
            cell["toolchain"].as_str().unwrap(),
            cell["version"].as_str().unwrap(),
            cell["variant"] == "gpu",
        );
        let mut args = vec!["--stage", "slurm", "--slurm", version, "--toolchain", tc];
        if gpu {
            args.push("--gpu");
        }
        let (_d1, _, first) = render(&args);
        let (_d2, _, second) = render(&args);
        assert_eq!(
            first, second,
            "slurm {version}/{tc} gpu={gpu} is not deterministic"
        );
        seen.insert(first);
        if version == "25.11" {
            let mut deps = vec!["--stage", "deps", "--toolchain", tc];
            if gpu {
                deps.push("--gpu");
            }
            let (_d3, _, a) = render(&deps);
            let (_d4, _, b) = render(&deps);
            assert_eq!(a, b, "deps {tc} gpu={gpu} is not deterministic");
            seen.insert(a);
        }
    }
    assert_eq!(seen.len(), 48, "every cell's environment is different");
}

#[test]
fn deps_environment_builds_every_dependency_with_the_os_gcc() {
    let (_d, doc, text) = render(&["--stage", "deps", "--toolchain", "jammy"]);
    assert!(text.starts_with(
        "# Spack environment for cell deps/jammy/cpu (Ubuntu 22.04, ubuntu:jammy).\n"
    ));
    assert!(text.contains(
        "# Rendered by `cargo xtask spack-env --stage deps --toolchain jammy` from spack-env/"
    ));
    let spack = &doc["spack"];
    let specs = strings(&spack["specs"]);
    for dep in [
        "openssl@3",
        "curl +ldap",
        "munge",
        "json-c",
        "libjwt",
        "pmix@5",
        "openmpi@5 schedulers=none",
        "hwloc@2:",
        "linux-pam",
    ] {
        assert!(
            specs.iter().any(|s| s.starts_with(dep)),
            "{dep} missing from {specs:?}"
        );
    }
    assert!(
        !specs.iter().any(|s| s.starts_with("cuda")),
        "CPU cells build no CUDA"
    );
    assert!(!specs.iter().any(|s| s.starts_with("slurm")));
    // Our recipes come from spack-repo/, ahead of the builtin packages.
    assert_eq!(
        spack["repos"]["slurm_factory"],
        "/opt/slurm-factory/spack-repo/spack_repo/slurm_factory"
    );
    let gcc = &spack["packages"]["gcc"];
    assert_eq!(gcc["buildable"], false);
    assert_eq!(
        gcc["externals"][0]["spec"]
            .as_str()
            .unwrap()
            .split(' ')
            .next(),
        Some("gcc@11.4.0")
    );
    assert_eq!(strings(&spack["packages"]["c"]["require"]), ["gcc@11.4.0"]);
    assert_eq!(strings(&spack["packages"]["all"]["target"]), ["x86_64_v3"]);
    assert_eq!(spack["view"], false);
    assert_eq!(spack["config"]["install_tree"]["padded_length"], 128);
    assert_eq!(
        spack["config"]["install_tree"]["root"],
        "/opt/slurm/software"
    );
    assert_eq!(spack["concretizer"]["unify"], true);
    let mirror = &spack["mirrors"]["slurm-factory-deps"];
    assert_eq!(
        mirror["url"],
        "file:///opt/slurm-factory/store/jammy/slurm/deps"
    );
    assert_eq!(mirror["signed"], true);
    assert!(spack["mirrors"].get("slurm-factory-slurm").is_none());
    assert_eq!(
        spack["repos"]["slurm_factory"],
        "/opt/slurm-factory/spack-repo/spack_repo/slurm_factory"
    );
    // A version range ending in ':' must be quoted, or YAML reads a mapping.
    assert!(text.contains("- 'hwloc@2:'"), "{text}");
}

#[test]
fn gpu_deps_add_cuda_and_rocm_smi() {
    let (_d, doc, _) = render(&["--stage", "deps", "--toolchain", "rockylinux8", "--gpu"]);
    let specs = strings(&doc["spack"]["specs"]);
    assert!(specs.iter().any(|s| s.starts_with("cuda")), "{specs:?}");
    assert!(
        specs.iter().any(|s| s.starts_with("rocm-smi-lib")),
        "{specs:?}"
    );
    assert_eq!(
        strings(&doc["spack"]["packages"]["cxx"]["require"]),
        ["gcc@8.5.0"]
    );
}

#[test]
fn slurm_environment_builds_our_recipe_into_a_view_with_its_module() {
    let (dir, doc, text) = render(&[
        "--stage",
        "slurm",
        "--slurm",
        "25.11",
        "--toolchain",
        "noble",
        "--gpu",
        "--bucket",
        "my-bucket",
    ]);
    assert!(text.contains("`cargo xtask spack-env --stage slurm --slurm 25.11 --toolchain noble --gpu --bucket my-bucket`"), "{text}");
    let spack = &doc["spack"];
    let specs = strings(&spack["specs"]);
    assert_eq!(
        specs.len(),
        2,
        "Slurm and what is built against it: {specs:?}"
    );
    // Open MPI is a root of the view, built in stage 1 (it needs no Slurm).
    assert!(
        specs[1].starts_with("openmpi@5 schedulers=none"),
        "{specs:?}"
    );
    let spec = &specs[0];
    assert!(spec.starts_with("slurm@25-11-6-1 "), "{spec}");
    for v in [
        "+pmix",
        "+hwloc",
        "+restd",
        "+nvml",
        "sysconfdir=/etc/slurm",
    ] {
        assert!(spec.split(' ').any(|w| w == v), "{v} missing from {spec}");
    }
    let view = &spack["view"]["default"];
    assert_eq!(view["root"], "/opt/slurm/view");
    // Every link and run dependency of what ships, so the view is self-contained.
    assert_eq!(view["link"], "all");
    let excluded = strings(&view["exclude"]);
    for tool in [
        "cmake",
        "autoconf",
        "automake",
        "pkgconf",
        "bison",
        "flex",
        "gcc",
        "python-venv",
    ] {
        assert!(
            excluded.iter().any(|e| e == tool),
            "{tool} is not kept out of the view"
        );
    }
    assert_eq!(
        spack["mirrors"]["slurm-factory-deps"]["url"],
        "s3://my-bucket/noble/slurm/deps"
    );
    assert_eq!(
        spack["mirrors"]["slurm-factory-slurm"]["url"],
        "s3://my-bucket/noble/slurm/25.11"
    );
    assert_eq!(spack["mirrors"]["slurm-factory-slurm"]["signed"], true);
    assert_eq!(spack["concretizer"]["reuse"], true);
    let lmod = &spack["modules"]["default"]["lmod"];
    assert_eq!(lmod["projections"]["slurm"], "slurm/25.11-noble");
    assert_eq!(lmod["slurm"]["template"], "slurm/25.11-noble.lua");
    let template = dir.path().join("env/templates/slurm/25.11-noble.lua");
    let module = std::fs::read_to_string(template).unwrap();
    assert!(module.contains("whatis(\"Variant: gpu\")"));
}

#[test]
fn cpu_slurm_has_no_gpu_variants() {
    let (_d, doc, _) = render(&[
        "--stage",
        "slurm",
        "--slurm",
        "23.11",
        "--toolchain",
        "rockylinux10",
    ]);
    let spec = strings(&doc["spack"]["specs"]).remove(0);
    assert!(spec.starts_with("slurm@23-11-11-1 "), "{spec}");
    assert!(!spec.contains("+nvml") && !spec.contains("+rsmi"), "{spec}");
}

#[test]
fn target_is_configurable() {
    let (_d, doc, text) = render(&[
        "--stage",
        "deps",
        "--toolchain",
        "noble",
        "--target",
        "zen3",
    ]);
    assert_eq!(
        strings(&doc["spack"]["packages"]["all"]["target"]),
        ["zen3"]
    );
    assert!(text.contains("--toolchain noble --target zen3`"));
}

#[test]
fn bad_input_exits_2_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("env");
    let o = out.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &["--stage", "deps", "--toolchain", "focal"],
            "unknown toolchain 'focal' (valid: resolute, noble",
        ),
        (
            &[
                "--stage",
                "deps",
                "--slurm",
                "25.11",
                "--toolchain",
                "jammy",
            ],
            "--slurm does not apply to --stage deps",
        ),
        (
            &[
                "--stage",
                "slurm",
                "--slurm",
                "22.05",
                "--toolchain",
                "jammy",
            ],
            "unknown Slurm version '22.05' (valid: 25.11, 24.11, 23.11)",
        ),
        (
            &["--stage", "slurm", "--toolchain", "jammy"],
            "--stage slurm needs --slurm V (valid: 25.11, 24.11, 23.11)",
        ),
        (
            &[
                "--stage",
                "slurm",
                "--slurm",
                "25.11",
                "--toolchain",
                "jammy",
                "--bucket",
                "s3://x",
            ],
            "--bucket 's3://x' is not an S3 bucket name",
        ),
        (
            &[
                "--stage",
                "deps",
                "--toolchain",
                "jammy",
                "--bucket-prefix",
                "team",
            ],
            "--bucket-prefix is a key prefix inside --bucket",
        ),
        (
            &["--stage", "lib", "--toolchain", "jammy"],
            "[possible values: deps, slurm]",
        ),
    ];
    for (args, message) in cases {
        let mut full = vec!["spack-env"];
        full.extend_from_slice(args);
        full.extend_from_slice(&["--out", o]);
        let result = xtask(&full).code(2);
        assert!(
            result.stderr.contains(message),
            "{args:?}: {}",
            result.stderr
        );
        assert!(!out.exists(), "{args:?} wrote {}", out.display());
    }
}

#[test]
fn a_bucket_prefix_places_the_mirrors_under_it() {
    let (_dir, doc, text) = render(&[
        "--stage",
        "slurm",
        "--slurm",
        "24.11",
        "--toolchain",
        "jammy",
        "--bucket",
        "my-bucket",
        "--bucket-prefix",
        "/team/slurm-factory/",
    ]);
    assert!(
        text.contains("--bucket my-bucket --bucket-prefix team/slurm-factory`"),
        "{text}"
    );
    let mirrors = &doc["spack"]["mirrors"];
    assert_eq!(
        mirrors["slurm-factory-deps"]["url"],
        "s3://my-bucket/team/slurm-factory/jammy/slurm/deps"
    );
    assert_eq!(
        mirrors["slurm-factory-slurm"]["url"],
        "s3://my-bucket/team/slurm-factory/jammy/slurm/24.11"
    );
}
