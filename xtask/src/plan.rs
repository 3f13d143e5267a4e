//! `plan`: which cells a workflow run builds, each with the reason
//! (`decide`), as a table, as JSON, or as the GitHub matrices the build and
//! index jobs fan out over (`matrix::entry`).

use anyhow::Result;
use serde_json::json;

use crate::decide::{Plan, plan};
use crate::gha;
use crate::matrix::entry::{Entry, MirrorEntry};
use crate::matrix::{CellFilter, Stage};
use crate::project::Project;
use crate::state;
use crate::store::Store;

impl Plan<'_> {
    /// The `strategy.matrix` value for the build job: `{"include": [...]}`.
    pub fn github_matrix(&self, rehearse: bool) -> serde_json::Value {
        let include: Vec<Entry> = self
            .selected()
            .map(|d| Entry::of(&d.cell, rehearse))
            .collect();
        json!({ "include": include })
    }

    /// One entry per mirror the selected cells write: the index job's matrix.
    /// CPU and GPU cells of a toolchain share a mirror, so it is listed once.
    pub fn mirrors(&self, rehearse: bool) -> serde_json::Value {
        let include = MirrorEntry::of(self.selected().map(|d| &d.cell), rehearse);
        json!({ "include": include })
    }

    pub fn to_json(&self, rehearse: bool) -> serde_json::Value {
        let cells: Vec<_> = self
            .decisions
            .iter()
            .map(|d| {
                let mut entry = json!(Entry::of(&d.cell, rehearse));
                entry["build"] = json!(d.build);
                entry["reason"] = json!(d.reason.text());
                entry["fingerprint"] = json!(d.fingerprint);
                entry["state_key"] = json!(state::key(&d.cell));
                entry
            })
            .collect();
        json!({
            "stage": self.stage,
            "selected": self.selected().count(),
            "total": self.decisions.len(),
            "cells": cells,
        })
    }

    pub fn table(&self) -> String {
        let mut out = String::new();
        let rows: Vec<[String; 4]> = self
            .decisions
            .iter()
            .map(|d| {
                [
                    d.cell.id(),
                    d.action().to_string(),
                    d.reason.text(),
                    d.cell.runner().join(","),
                ]
            })
            .collect();
        out.push_str(&crate::text_table(
            &["cell", "action", "reason", "runner"],
            &rows,
        ));
        out.push_str(&format!(
            "{} of {} {} cells selected\n",
            self.selected().count(),
            self.decisions.len(),
            self.stage.as_str()
        ));
        out
    }

    fn summary_markdown(&self) -> String {
        let mut md = format!(
            "### Plan: {} of {} {} cells selected\n\n| cell | action | reason |\n|---|---|---|\n",
            self.selected().count(),
            self.decisions.len(),
            self.stage.as_str()
        );
        for d in &self.decisions {
            md.push_str(&format!(
                "| `{}` | {} | {} |\n",
                d.cell.id(),
                d.action(),
                d.reason.text()
            ));
        }
        md
    }
}

/// `plan`: what to build, for a person (a table), for a program (`json`),
/// or for the workflow (`github_output`: the build and index matrices).
pub struct Job {
    pub stage: Stage,
    pub filter: CellFilter,
    pub force: bool,
    /// The build jobs rehearse: their arguments carry `--rehearse`.
    pub rehearse: bool,
    pub json: bool,
    pub github_output: bool,
    pub store: Box<dyn Store>,
}

pub fn run(project: &Project, job: &Job) -> Result<()> {
    let store = job.store.as_ref();
    let plan = plan(project, job.stage, &job.filter, job.force, store)?;
    if let Some(why) = &plan.unreachable {
        gha::warning(&format!(
            "{} could not be read ({why}): planning every cell",
            store.describe()
        ));
    }
    if job.github_output {
        gha::set_outputs(&[
            ("matrix", plan.github_matrix(job.rehearse).to_string()),
            ("count", plan.selected().count().to_string()),
            ("mirrors", plan.mirrors(job.rehearse).to_string()),
        ])?;
        gha::append_summary(&plan.summary_markdown())?;
    }
    if job.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&plan.to_json(job.rehearse))?
        );
    } else {
        out!("{}", plan.table());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::decide::Reason;
    use crate::store::local::LocalStore;

    fn project() -> Project {
        Project::load(Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()).unwrap()
    }

    fn empty_store() -> (tempfile::TempDir, LocalStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore {
            root: dir.path().to_path_buf(),
        };
        (dir, store)
    }

    #[test]
    fn github_matrix_lists_runner_labels_and_versions() {
        let project = project();
        let m = &project.matrix;
        let (_d, store) = empty_store();
        let f = CellFilter {
            versions: vec!["25.11".into()],
            ..Default::default()
        };
        let p = plan(&project, Stage::Slurm, &f, false, &store).unwrap();
        let include = p.github_matrix(false)["include"]
            .as_array()
            .unwrap()
            .clone();
        assert_eq!(include.len(), 12);
        let gpu = include.iter().find(|e| e["variant"] == "gpu").unwrap();
        assert_eq!(gpu["version"], "25.11");
        assert_eq!(gpu["gpu"], true);
        assert_eq!(gpu["runs-on"], json!(m.runners.gpu));
    }

    #[test]
    fn mirrors_are_listed_once_per_toolchain_and_version() {
        let project = project();
        let (_d, store) = empty_store();
        let deps = plan(&project, Stage::Deps, &CellFilter::default(), false, &store).unwrap();
        assert_eq!(deps.mirrors(false)["include"].as_array().unwrap().len(), 6);
        let slurm = plan(
            &project,
            Stage::Slurm,
            &CellFilter::default(),
            false,
            &store,
        )
        .unwrap();
        assert_eq!(
            slurm.mirrors(false)["include"].as_array().unwrap().len(),
            18
        );
    }

    #[test]
    fn force_is_the_reason_of_every_cell() {
        let project = project();
        let (_d, store) = empty_store();
        let p = plan(&project, Stage::Deps, &CellFilter::default(), true, &store).unwrap();
        assert!(p.decisions.iter().all(|d| d.reason == Reason::Forced));
        assert!(p.table().ends_with("12 of 12 deps cells selected\n"));
    }
}
