//! The plan: which cells a workflow run builds, each with the reason, as a
//! table, as JSON, or as the GitHub matrix that the build jobs fan out over.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Result;
use serde_json::json;

use crate::fingerprint::{self, Fingerprint};
use crate::flags::PlanCmd;
use crate::gha;
use crate::matrix::{Cell, CellFilter, Matrix, Stage, Variant};
use crate::state::{self, BuildStatus, CellState, MirrorState};
use crate::store::Store;

/// Why a cell is (or is not) in the plan. Every decision carries one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// Nothing is recorded for it in the store.
    New,
    /// Recorded with other inputs; the names of those that changed.
    InputsChanged(Vec<String>),
    /// Only its toolchain's dependencies changed.
    DepsChanged,
    /// The last recorded build of it failed.
    PreviousFailed,
    /// `--force`: built whatever is recorded.
    Forced,
    /// Recorded with the same fingerprint: skipped.
    UpToDate,
    /// The store could not be read: built rather than skipped.
    StoreUnreachable,
}

impl Reason {
    pub fn text(&self) -> String {
        match self {
            Reason::New => "new".into(),
            Reason::InputsChanged(names) => format!("inputs changed: {}", names.join(", ")),
            Reason::DepsChanged => "deps changed".into(),
            Reason::PreviousFailed => "previous build failed".into(),
            Reason::Forced => "forced".into(),
            Reason::UpToDate => "up to date".into(),
            Reason::StoreUnreachable => "store unreachable".into(),
        }
    }
}

#[derive(Debug)]
pub struct Decision<'m> {
    pub cell: Cell<'m>,
    pub build: bool,
    pub reason: Reason,
    pub fingerprint: Fingerprint,
    /// What the store records of the cell's last build.
    pub recorded: Option<CellState>,
}

#[derive(Debug)]
pub struct Plan<'m> {
    pub stage: Stage,
    pub decisions: Vec<Decision<'m>>,
    /// Set when the store could not be read: why.
    pub unreachable: Option<String>,
}

/// Compares each cell's fingerprint with what the store recorded.
pub fn plan<'m>(
    root: &Path,
    matrix: &'m Matrix,
    stage: Stage,
    filter: &CellFilter,
    force: bool,
    store: &dyn Store,
) -> Result<Plan<'m>> {
    let project = crate::project::Project::load(root)?;
    let mut states: HashMap<String, Option<MirrorState>> = HashMap::new();
    let mut unreachable = None;
    let mut decisions = Vec::new();
    let mut fingerprints = fingerprint::Fingerprints::new(&project);
    for cell in matrix.cells(stage, filter)? {
        let fingerprint = fingerprints.of(&cell)?;
        let key = state::key(&cell);
        if !states.contains_key(&key) && unreachable.is_none() {
            match state::read(store, &key) {
                Ok(state) => {
                    states.insert(key.clone(), state);
                }
                Err(e) => unreachable = Some(format!("{e:#}")),
            }
        }
        let recorded = states
            .get(&key)
            .and_then(|s| s.as_ref())
            .and_then(|s| s.cells.get(cell.variant.as_str()))
            .cloned();
        let (build, reason) = if force {
            (true, Reason::Forced)
        } else if unreachable.is_some() {
            (true, Reason::StoreUnreachable)
        } else {
            match &recorded {
                None => (true, Reason::New),
                Some(r) if r.status == BuildStatus::Failed => (true, Reason::PreviousFailed),
                Some(r) if r.fingerprint.value == fingerprint.value => (false, Reason::UpToDate),
                Some(r) => {
                    let changed = fingerprint.changed(&r.fingerprint);
                    if changed == ["deps"] {
                        (true, Reason::DepsChanged)
                    } else {
                        (true, Reason::InputsChanged(changed))
                    }
                }
            }
        };
        decisions.push(Decision {
            cell,
            build,
            reason,
            fingerprint,
            recorded,
        });
    }
    Ok(Plan {
        stage,
        decisions,
        unreachable,
    })
}

impl Plan<'_> {
    pub fn selected(&self) -> impl Iterator<Item = &Decision<'_>> {
        self.decisions.iter().filter(|d| d.build)
    }

    /// The `strategy.matrix` value for the build job: `{"include": [...]}`.
    pub fn github_matrix(&self) -> serde_json::Value {
        let include: Vec<_> = self.selected().map(|d| matrix_entry(&d.cell)).collect();
        json!({ "include": include })
    }

    /// One entry per mirror the selected cells write: the index job's matrix.
    /// CPU and GPU cells of a toolchain share a mirror, so it is listed once.
    pub fn mirrors(&self) -> serde_json::Value {
        let mut seen: Vec<(Option<&str>, &str)> = Vec::new();
        for d in self.selected() {
            let key = (
                d.cell.release.map(|r| r.version.as_str()),
                d.cell.toolchain.name.as_str(),
            );
            if !seen.contains(&key) {
                seen.push(key);
            }
        }
        let include: Vec<_> = seen
            .into_iter()
            .map(|(version, toolchain)| match version {
                Some(v) => json!({ "toolchain": toolchain, "version": v }),
                None => json!({ "toolchain": toolchain }),
            })
            .collect();
        json!({ "include": include })
    }

    pub fn to_json(&self) -> serde_json::Value {
        let cells: Vec<_> = self
            .decisions
            .iter()
            .map(|d| {
                let mut entry = matrix_entry(&d.cell);
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
                    if d.build { "build" } else { "skip" }.to_string(),
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
            let action = if d.build { "build" } else { "skip" };
            md.push_str(&format!(
                "| `{}` | {action} | {} |\n",
                d.cell.id(),
                d.reason.text()
            ));
        }
        md
    }
}

fn matrix_entry(cell: &Cell<'_>) -> serde_json::Value {
    let mut entry = json!({
        "toolchain": cell.toolchain.name,
        "variant": cell.variant,
        "gpu": cell.variant == Variant::Gpu,
        "image": cell.toolchain.image,
        "runs-on": cell.runner(),
    });
    if let Some(r) = cell.release {
        entry["version"] = json!(r.version);
    }
    entry
}

impl PlanCmd {
    pub fn run(self, root: &Path, matrix: &Matrix) -> Result<()> {
        let store = self.store.open(root)?;
        let plan = plan(
            root,
            matrix,
            self.stage,
            &self.filter,
            self.force,
            store.as_ref(),
        )?;
        if let Some(why) = &plan.unreachable {
            let msg = format!(
                "{} could not be read ({why}): planning every cell",
                store.describe()
            );
            eprintln!("warning: {msg}");
            if gha::in_actions() {
                outln!("::warning::{msg}");
            }
        }
        if self.github_output {
            gha::set_outputs(&[
                ("matrix", plan.github_matrix().to_string()),
                ("count", plan.selected().count().to_string()),
                ("mirrors", plan.mirrors().to_string()),
            ])?;
            gha::append_summary(&plan.summary_markdown())?;
        }
        if self.json {
            outln!("{}", serde_json::to_string_pretty(&plan.to_json())?);
        } else {
            out!("{}", plan.table());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::local::LocalStore;

    fn root() -> &'static Path {
        Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
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
        let m = Matrix::load(root()).unwrap();
        let (_d, store) = empty_store();
        let f = CellFilter {
            versions: vec!["25.11".into()],
            ..Default::default()
        };
        let p = plan(root(), &m, Stage::Slurm, &f, false, &store).unwrap();
        let include = p.github_matrix()["include"].as_array().unwrap().clone();
        assert_eq!(include.len(), 12);
        let gpu = include.iter().find(|e| e["variant"] == "gpu").unwrap();
        assert_eq!(gpu["version"], "25.11");
        assert_eq!(gpu["gpu"], true);
        assert_eq!(gpu["runs-on"], json!(m.runners.gpu));
    }

    #[test]
    fn mirrors_are_listed_once_per_toolchain_and_version() {
        let m = Matrix::load(root()).unwrap();
        let (_d, store) = empty_store();
        let deps = plan(
            root(),
            &m,
            Stage::Deps,
            &CellFilter::default(),
            false,
            &store,
        )
        .unwrap();
        assert_eq!(deps.mirrors()["include"].as_array().unwrap().len(), 6);
        let slurm = plan(
            root(),
            &m,
            Stage::Slurm,
            &CellFilter::default(),
            false,
            &store,
        )
        .unwrap();
        assert_eq!(slurm.mirrors()["include"].as_array().unwrap().len(), 18);
    }

    #[test]
    fn force_is_the_reason_of_every_cell() {
        let m = Matrix::load(root()).unwrap();
        let (_d, store) = empty_store();
        let p = plan(
            root(),
            &m,
            Stage::Deps,
            &CellFilter::default(),
            true,
            &store,
        )
        .unwrap();
        assert!(p.decisions.iter().all(|d| d.reason == Reason::Forced));
        assert!(p.table().ends_with("12 of 12 deps cells selected\n"));
    }
}
