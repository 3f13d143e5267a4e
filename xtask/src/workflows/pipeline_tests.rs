use super::*;
use std::path::Path;

fn slurm_workflow() -> serde_yaml::Value {
    let file = super::tests::rendered()
        .into_iter()
        .find(|f| f.path.ends_with("build-and-publish-slurm.yml"))
        .unwrap();
    serde_yaml::from_str(&file.contents).unwrap()
}

fn step<'a>(job: &'a serde_yaml::Value, name: &str) -> &'a serde_yaml::Value {
    job["steps"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name:?}"))
}

#[test]
fn the_admin_binary_is_built_once_signed_attested_and_released_with_the_packages() {
    let doc = slurm_workflow();
    let job = &doc["jobs"]["admin-binary"];
    // Once per run: no matrix. Least privilege: read the code, nothing else.
    assert!(job.get("strategy").is_none());
    assert_eq!(
        serde_yaml::to_string(&job["permissions"]).unwrap(),
        "contents: read\n"
    );
    assert!(
        job["if"]
            .as_str()
            .unwrap()
            .contains("inputs.rehearse != true")
    );
    // The pinned build tools, and the toolkit's own command (one owner of
    // the target and file names).
    let install = step(job, "Install cargo-zigbuild and zig")["run"]
        .as_str()
        .unwrap();
    for tool in admin_binary::BUILD_TOOLS {
        assert!(install.contains(tool), "{install}");
    }
    let build = step(job, "Build and sign the admins' binary");
    assert_eq!(build["run"], format!("{TOOLKIT} admin-binary --out dist\n"));
    assert!(
        build["env"]["SLURM_FACTORY_GPG_PRIVATE_KEY"]
            .as_str()
            .unwrap()
            .contains("secrets.")
    );
    let handed = step(job, "Hand the binary to the release job");
    let name = handed["with"]["name"].as_str().unwrap();
    // The release job gathers it, attests and publishes it with the packages.
    let release = &doc["jobs"]["release"];
    assert!(
        release["needs"]
            .as_sequence()
            .unwrap()
            .contains(&"admin-binary".into())
    );
    assert!(
        release["if"]
            .as_str()
            .unwrap()
            .contains("needs.admin-binary.result == 'success'")
    );
    assert_eq!(
        step(release, "Gather the admins' binary")["with"]["name"],
        name
    );
    let attested = step(release, "Attest the admins' binary")["with"]["subject-path"]
        .as_str()
        .unwrap();
    assert_eq!(attested, format!("tools/{}", admin_binary::file_name("*")));
    for v in ["25.11", "24.11", "23.11"] {
        let publish = step(release, &format!("Publish Slurm {v} to S3"))["run"]
            .as_str()
            .unwrap();
        assert!(publish.starts_with("cp tools/* dist/\n"), "{publish}");
    }
    assert_eq!(
        admin_binary::file_name("*").replace('*', "x86_64"),
        admin_binary::file_name("x86_64")
    );
}

#[test]
fn ci_installs_the_same_pinned_build_tools() {
    let install =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.ci/install"))
            .unwrap();
    for tool in admin_binary::BUILD_TOOLS {
        assert!(
            install.contains(&format!("'{tool}'")),
            ".ci/install lacks '{tool}'"
        );
    }
}

#[test]
fn every_run_writes_the_report_after_all_other_jobs_whatever_they_did() {
    for file in super::tests::rendered()
        .into_iter()
        .filter(|f| f.path.to_string_lossy().contains("build-and-publish"))
    {
        let doc: serde_yaml::Value = serde_yaml::from_str(&file.contents).unwrap();
        let at = file.path.display();
        let report = &doc["jobs"]["report"];
        let needs: Vec<&str> = report["needs"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap())
            .collect();
        for (name, _) in doc["jobs"].as_mapping().unwrap() {
            let name = name.as_str().unwrap();
            if !["report", "summary"].contains(&name) {
                assert!(
                    needs.contains(&name),
                    "{at}: report does not wait for {name}"
                );
            }
        }
        let condition = report["if"].as_str().unwrap();
        assert!(condition.starts_with("!cancelled()"), "{at}: {condition}");
        assert!(condition.contains("inputs.rehearse != true"), "{at}");
        assert_eq!(
            step(report, "Write the build report to the store")["run"],
            format!("{TOOLKIT} report\n")
        );
        assert_eq!(report["permissions"]["contents"], "read", "{at}");
        let summary = &doc["jobs"]["summary"]["needs"];
        assert!(
            summary.as_sequence().unwrap().contains(&"report".into()),
            "{at}"
        );
    }
}

#[test]
fn artifacts_outlive_any_rerun_and_say_why() {
    let mut uploads = 0;
    for file in super::tests::rendered() {
        let doc: serde_yaml::Value = serde_yaml::from_str(&file.contents).unwrap();
        let Some(jobs) = doc["jobs"].as_mapping() else {
            continue;
        };
        for (_, job) in jobs {
            for s in job["steps"].as_sequence().unwrap() {
                let uses = s["uses"].as_str().unwrap_or("");
                if uses.starts_with("actions/upload-artifact@") {
                    uploads += 1;
                    assert_eq!(s["with"]["retention-days"], 30, "{}", file.path.display());
                }
            }
        }
        for line in file
            .contents
            .lines()
            .filter(|l| l.contains("retention-days"))
        {
            assert!(line.ends_with(RETENTION_COMMENT), "{line}");
        }
    }
    assert_eq!(uploads, 4, "toolkit twice, packages, admins' binary");
}

#[test]
fn slurm_runs_only_after_the_default_branch_deps_and_build_their_commit() {
    let doc = slurm_workflow();
    let run = &doc["on"]["workflow_run"];
    assert_eq!(
        serde_yaml::to_string(&run["branches"]).unwrap(),
        format!("- {DEFAULT_BRANCH}\n")
    );
    for (name, job) in doc["jobs"].as_mapping().unwrap() {
        for s in job["steps"].as_sequence().unwrap() {
            if s["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with("actions/checkout@"))
            {
                assert_eq!(s["with"]["ref"], BUILT_COMMIT, "{name:?}");
            }
        }
    }
}

#[test]
fn a_split_packages_joined_tarball_is_attested_by_its_digest() {
    let doc = slurm_workflow();
    let release = &doc["jobs"]["release"];
    let list = step(release, "List Slurm 25.11's whole tarballs")["run"]
        .as_str()
        .unwrap();
    // Whole tarballs' checksum files only: a part's is *.part-NNN.sha256.
    assert!(
        list.starts_with(&format!("cat dist/*.tar.gz.sha256 > {TARBALL_DIGESTS}")),
        "{list}"
    );
    assert!(!"x.tar.gz.part-000.sha256".ends_with(".tar.gz.sha256"));
    let attest = step(
        release,
        "Attest Slurm 25.11's whole tarballs (split packages joined)",
    );
    assert_eq!(attest["with"]["subject-checksums"], TARBALL_DIGESTS);
    assert!(
        attest["uses"]
            .as_str()
            .unwrap()
            .starts_with("actions/attest-build-provenance@")
    );
}

/// The release job holds one Slurm version's packages at a time: each
/// version is gathered, attested, published, then deleted, whatever
/// happened, before the next is gathered.
#[test]
fn the_release_jobs_disk_holds_one_slurm_version_at_a_time() {
    let doc = slurm_workflow();
    let steps = doc["jobs"]["release"]["steps"].as_sequence().unwrap();
    let names: Vec<&str> = steps.iter().map(|s| s["name"].as_str().unwrap()).collect();
    let mut versions = 0;
    for (i, s) in steps.iter().enumerate() {
        let Some(pattern) = s["with"]["pattern"].as_str() else {
            continue;
        };
        versions += 1;
        let v = pattern
            .strip_prefix("slurm-")
            .and_then(|p| p.strip_suffix("-*-*-*"))
            .unwrap();
        // The pattern is the package name's (schema::release::stem).
        assert_eq!(
            pattern,
            crate::schema::release::stem(v, "*", "*", "*"),
            "{pattern}"
        );
        assert_eq!(s["with"]["path"], DIST);
        // The next gather comes only after this version's dist is freed.
        let free = names
            .iter()
            .position(|n| *n == format!("Free Slurm {v}'s disk"))
            .unwrap();
        assert!(free > i);
        assert_eq!(steps[free]["if"], "always()");
        assert!(
            steps[free]["run"]
                .as_str()
                .unwrap()
                .starts_with("rm -rf dist ")
        );
        let next_gather = steps[i + 1..]
            .iter()
            .position(|s| s["with"]["pattern"].is_string())
            .map(|p| p + i + 1);
        assert!(next_gather.is_none_or(|g| g > free), "{names:?}");
        for n in &names[i + 1..free] {
            assert!(n.contains(v), "{n} between {v}'s gather and free");
        }
    }
    assert_eq!(versions, 3);
}

#[test]
fn deps_and_slurm_runs_exclude_each_other_and_no_waiting_run_is_dropped() {
    let mut groups = Vec::new();
    for file in super::tests::rendered() {
        let doc: serde_yaml::Value = serde_yaml::from_str(&file.contents).unwrap();
        let at = file.path.display().to_string();
        let Some(jobs) = doc["jobs"].as_mapping() else {
            continue;
        };
        let blocks = std::iter::once(("workflow".to_string(), &doc["concurrency"])).chain(
            jobs.iter()
                .map(|(n, j)| (n.as_str().unwrap().to_string(), &j["concurrency"])),
        );
        for (name, c) in blocks.filter(|(_, c)| !c.is_null()) {
            if c["cancel-in-progress"] == false {
                // GitHub's default keeps one pending run and cancels it
                // for the next: a forced dispatch could be dropped.
                assert_eq!(c["queue"], "max", "{at} {name}");
            }
        }
        if at.contains("build-and-publish") {
            groups.push(doc["concurrency"]["group"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(groups.len(), 2);
    assert_eq!(groups[0], groups[1], "deps and slurm share one group");
    assert_eq!(groups[0], PIPELINE_GROUP);
}
