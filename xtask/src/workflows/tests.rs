use super::*;
use std::path::Path;

pub(super) fn rendered() -> Vec<Generated> {
    let m = Matrix::load(Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()).unwrap();
    render_all(&m).unwrap()
}

fn parsed(file: &Generated) -> serde_yaml::Value {
    serde_yaml::from_str(&file.contents).unwrap()
}

/// A rehearsal is a plan input: the plan adds `--rehearse` to every build
/// and index job's arguments, which the steps run as they are.
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
        let plan = doc["jobs"]["plan"]["steps"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|s| s["id"] == "plan")
            .unwrap();
        assert!(plan["run"].as_str().unwrap().contains(REHEARSE_ARG), "{at}");
        assert_eq!(plan["env"]["REHEARSE"], "${{ inputs.rehearse }}", "{at}");
        let mut toolkit_steps = 0;
        for (name, job) in doc["jobs"].as_mapping().unwrap() {
            for step in job["steps"].as_sequence().unwrap() {
                let run = step["run"].as_str().unwrap_or("");
                let command = ["build-deps", "build-slurm", "index"]
                    .into_iter()
                    .find(|c| run.contains(&format!("{TOOLKIT} {c} ")));
                if let Some(command) = command {
                    toolkit_steps += 1;
                    assert_eq!(
                        run,
                        format!(
                            "read -ra args <<< \"$ARGS\"\n{TOOLKIT} {command} \"${{args[@]}}\"\n"
                        ),
                        "{at} {name:?}"
                    );
                    assert_eq!(step["env"]["ARGS"], "${{ join(matrix.args, ' ') }}");
                    assert!(step["env"].get("REHEARSE").is_none(), "{at} {name:?}");
                }
            }
        }
        assert_eq!(toolkit_steps, 2, "{at}: a build and an index step");
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

/// What a step runs is never assembled from the cell in bash: the build and
/// index steps read the plan's precomputed arguments, and nothing reads the
/// cell's fields into a command line.
#[test]
fn no_step_builds_the_toolkits_arguments_from_the_cell() {
    for file in rendered() {
        for line in file.contents.lines() {
            for old in ["\"$TOOLCHAIN\"", "$GPU", "\"$VERSION\"", "args+=(--gpu"] {
                assert!(!line.contains(old), "{}: {line}", file.path.display());
            }
        }
    }
}

/// Every job a `needs`, an `if:` or the summary names exists in its workflow.
#[test]
fn every_job_reference_names_a_job_of_the_workflow() {
    for file in rendered()
        .iter()
        .filter(|f| f.path.extension().is_some_and(|e| e == "yml"))
    {
        let doc = parsed(file);
        let ids: Vec<&str> = doc["jobs"]
            .as_mapping()
            .unwrap()
            .keys()
            .map(|k| k.as_str().unwrap())
            .collect();
        let text = &file.contents;
        for (at, _) in text.match_indices("needs.") {
            let id: String = text[at + 6..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            assert!(
                ids.contains(&id.as_str()),
                "{}: needs.{id}",
                file.path.display()
            );
        }
        for job in doc["jobs"].as_mapping().unwrap().values() {
            for need in job["needs"].as_sequence().into_iter().flatten() {
                assert!(ids.contains(&need.as_str().unwrap()), "{need:?}");
            }
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

/// The build and index steps, run by bash as Actions runs them (the toolkit
/// replaced by a printer), pass exactly the plan's arguments for every cell.
#[test]
fn the_steps_pass_each_entrys_arguments_exactly() {
    use crate::matrix::entry::{Entry, MirrorEntry};
    use crate::matrix::{CellFilter, Stage};
    let m = Matrix::load(Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()).unwrap();
    let files = rendered();
    let script = |file: &str, job: &str, command: &str| -> String {
        let doc = parsed(files.iter().find(|f| f.path.ends_with(file)).unwrap());
        let steps = doc["jobs"][job]["steps"].as_sequence().unwrap().clone();
        let run = steps
            .iter()
            .filter_map(|s| s["run"].as_str())
            .find(|r| r.contains(&format!("{TOOLKIT} {command} ")))
            .unwrap()
            .to_string();
        // A printer in the toolkit's place: one argument per line.
        format!(
            "set -eo pipefail\nprinter() {{ printf '%s\\n' \"$@\"; }}\n{}",
            run.replace(TOOLKIT, "printer")
        )
    };
    let sh = crate::process::shell().unwrap();
    let ran = |script: &str, args: &[String]| -> Vec<String> {
        let run = crate::process::cmd(&sh, &["bash", "-c", script]).env("ARGS", args.join(" "));
        let (code, out) = crate::process::capture(run).unwrap();
        assert_eq!(code, Some(0), "{script}");
        out.lines().map(String::from).collect()
    };
    for (stage, file, job, command) in [
        (Stage::Deps, DEPS, "build-deps", "build-deps"),
        (Stage::Slurm, SLURM, "build-slurm", "build-slurm"),
    ] {
        let build = script(file, job, command);
        let index = script(file, "index", "index");
        let cells = m.cells(stage, &CellFilter::default()).unwrap();
        for rehearse in [false, true] {
            for cell in &cells {
                let args = Entry::of(cell, rehearse).args;
                let mut want = vec![command.to_string()];
                want.extend(args.iter().cloned());
                assert_eq!(ran(&build, &args), want, "{}", cell.id());
            }
            for mirror in MirrorEntry::of(cells.iter(), rehearse) {
                let mut want = vec!["index".to_string()];
                want.extend(mirror.args.iter().cloned());
                assert_eq!(ran(&index, &mirror.args), want);
            }
        }
    }
}
