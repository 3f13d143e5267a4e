use super::*;
use std::path::Path;

pub(super) fn rendered() -> Vec<Generated> {
    let m = Matrix::load(Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()).unwrap();
    render_all(&m).unwrap()
}

fn parsed(file: &Generated) -> serde_yaml::Value {
    serde_yaml::from_str(&file.contents).unwrap()
}

#[test]
fn a_dispatched_rehearsal_reaches_every_build_and_index_step_and_publishes_nothing() {
    for file in rendered()
        .into_iter()
        .filter(|f| !f.path.ends_with("ci.yml") && f.path.extension().is_some_and(|e| e == "yml"))
    {
        let doc = parsed(&file);
        let at = file.path.display();
        let input = &doc["on"]["workflow_dispatch"]["inputs"]["rehearse"];
        assert_eq!(input["type"], "boolean", "{at}");
        assert_eq!(input["default"], false, "{at}");
        for (name, job) in doc["jobs"].as_mapping().unwrap() {
            for step in job["steps"].as_sequence().unwrap() {
                let run = step["run"].as_str().unwrap_or("");
                let toolkit_step = ["build-deps", "build-slurm", " index "]
                    .iter()
                    .any(|c| run.contains(&format!("{TOOLKIT} {}", c.trim())));
                if toolkit_step {
                    assert!(run.contains(REHEARSE_ARG), "{at} {name:?}: {run}");
                    assert_eq!(step["env"]["REHEARSE"], "${{ inputs.rehearse }}");
                }
            }
        }
        if let Some(release) = doc["jobs"].get("release") {
            assert!(
                release["if"]
                    .as_str()
                    .unwrap()
                    .contains("inputs.rehearse != true"),
                "{at}: a rehearsal never reaches the release job"
            );
        }
    }
}

#[test]
fn every_job_has_permissions_and_timeout() {
    for file in rendered() {
        let doc = parsed(&file);
        assert_eq!(
            doc["permissions"],
            serde_yaml::from_str::<Value>("{}").unwrap(),
            "{}",
            file.path.display()
        );
        for (name, job) in doc["jobs"].as_mapping().unwrap() {
            let at = format!("{} job {:?}", file.path.display(), name);
            assert!(job["permissions"].is_mapping(), "{at} has no permissions");
            assert!(
                job["timeout-minutes"].as_u64().is_some_and(|t| t > 0),
                "{at} has no timeout"
            );
        }
    }
}

#[test]
fn every_uses_is_pinned_by_full_sha_with_its_tag() {
    for file in rendered() {
        for line in file.contents.lines().filter(|l| l.contains("uses: ")) {
            let after = line.split("uses: ").nth(1).unwrap();
            let (reference, comment) = after.split_once(" # ").expect("tag comment");
            let sha = reference.split('@').nth(1).unwrap();
            assert!(
                sha.len() == 40 && sha.bytes().all(|b| b.is_ascii_hexdigit()),
                "{line}"
            );
            assert!(!comment.is_empty(), "{line}");
        }
    }
}

#[test]
fn only_the_release_job_may_write_contents_and_id_token_only_where_aws_is_used() {
    for file in rendered() {
        let doc = parsed(&file);
        for (name, job) in doc["jobs"].as_mapping().unwrap() {
            let name = name.as_str().unwrap();
            let perms = &job["permissions"];
            let uses_aws = serde_yaml::to_string(job)
                .unwrap()
                .contains("configure-aws-credentials");
            assert_eq!(perms["contents"] == "write", name == "release", "{name}");
            if name != "release" {
                assert_eq!(perms["id-token"] == "write", uses_aws, "{name}");
            }
        }
    }
}

#[test]
fn secrets_reach_only_jobs_in_an_environment_and_only_the_release_job_needs_approval() {
    let mut releases = 0;
    for file in rendered() {
        let doc = parsed(&file);
        for (name, job) in doc["jobs"].as_mapping().unwrap() {
            let text = serde_yaml::to_string(job).unwrap();
            if text.contains("secrets.") || text.contains("aws-actions/") {
                let want = if name == "release" {
                    RELEASE_ENVIRONMENT
                } else {
                    BUILD_ENVIRONMENT
                };
                assert_eq!(
                    job["environment"],
                    want,
                    "{name:?} in {}",
                    file.path.display()
                );
            }
            if job["environment"] == RELEASE_ENVIRONMENT {
                releases += 1;
                assert_eq!(name, "release", "{}", file.path.display());
            }
        }
    }
    assert_eq!(releases, 1, "one job, one approval per run");
}

#[test]
fn matrix_jobs_do_not_compile_the_toolkit() {
    for file in rendered().iter().skip(1) {
        let doc = parsed(file);
        for (name, job) in doc["jobs"].as_mapping().unwrap() {
            let text = serde_yaml::to_string(job).unwrap();
            if name.as_str() != Some("toolkit") {
                assert!(!text.contains("cargo "), "{name:?} runs cargo");
            }
        }
        let build = ["build-deps", "build-slurm"]
            .iter()
            .find_map(|j| doc["jobs"].get(*j))
            .unwrap();
        assert_eq!(build["strategy"]["fail-fast"], false);
        assert_eq!(build["if"], "needs.plan.outputs.count != '0'");
    }
}
