//! The plan: which cells a workflow run builds, each with the reason, as a
//! table, as JSON, or as the GitHub matrix that the build jobs fan out over.

use anyhow::Result;
use serde::Serialize;
use serde_json::json;

use crate::flags::PlanCmd;
use crate::gha;
use crate::matrix::{Cell, CellFilter, Matrix, Stage, Variant};

/// Why a cell is (or is not) in the plan. Every decision carries one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// Named by the filters (all cells when none are given).
    Requested,
    /// `--force`: built whatever is published.
    Forced,
}

impl Reason {
    fn text(&self) -> &'static str {
        match self {
            Reason::Requested => "requested",
            Reason::Forced => "forced",
        }
    }
}

#[derive(Debug)]
pub struct Decision<'m> {
    pub cell: Cell<'m>,
    pub build: bool,
    pub reason: Reason,
}

#[derive(Debug)]
pub struct Plan<'m> {
    pub stage: Stage,
    pub decisions: Vec<Decision<'m>>,
}

pub fn plan<'m>(
    matrix: &'m Matrix,
    stage: Stage,
    filter: &CellFilter,
    force: bool,
) -> Result<Plan<'m>> {
    let reason = if force {
        Reason::Forced
    } else {
        Reason::Requested
    };
    let decisions = matrix
        .cells(stage, filter)?
        .into_iter()
        .map(|cell| Decision {
            cell,
            build: true,
            reason: reason.clone(),
        })
        .collect();
    Ok(Plan { stage, decisions })
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
                entry["reason"] = json!(d.reason);
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
                    d.reason.text().to_string(),
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
    pub fn run(self, matrix: &Matrix) -> Result<()> {
        let plan = plan(matrix, self.stage, &self.filter, self.force)?;
        if self.github_output {
            gha::set_outputs(&[
                ("matrix", plan.github_matrix().to_string()),
                ("count", plan.selected().count().to_string()),
                ("mirrors", plan.mirrors().to_string()),
            ])?;
            gha::append_summary(&plan.summary_markdown())?;
        }
        if self.json {
            println!("{}", serde_json::to_string_pretty(&plan.to_json())?);
        } else {
            print!("{}", plan.table());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn matrix() -> Matrix {
        Matrix::load(Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()).unwrap()
    }

    #[test]
    fn github_matrix_lists_runner_labels_and_versions() {
        let m = matrix();
        let f = CellFilter {
            versions: vec!["25.11".into()],
            ..Default::default()
        };
        let p = plan(&m, Stage::Slurm, &f, false).unwrap();
        let include = p.github_matrix()["include"].as_array().unwrap().clone();
        assert_eq!(include.len(), 12);
        let gpu = include.iter().find(|e| e["variant"] == "gpu").unwrap();
        assert_eq!(gpu["version"], "25.11");
        assert_eq!(gpu["gpu"], true);
        assert_eq!(gpu["runs-on"], json!(m.runners.gpu));
    }

    #[test]
    fn mirrors_are_listed_once_per_toolchain_and_version() {
        let m = matrix();
        let deps = plan(&m, Stage::Deps, &CellFilter::default(), false).unwrap();
        assert_eq!(deps.mirrors()["include"].as_array().unwrap().len(), 6);
        let slurm = plan(&m, Stage::Slurm, &CellFilter::default(), false).unwrap();
        assert_eq!(slurm.mirrors()["include"].as_array().unwrap().len(), 18);
    }

    #[test]
    fn force_is_the_reason_of_every_cell() {
        let m = matrix();
        let p = plan(&m, Stage::Deps, &CellFilter::default(), true).unwrap();
        assert!(p.decisions.iter().all(|d| d.reason == Reason::Forced));
        assert!(p.table().ends_with("12 of 12 deps cells selected\n"));
    }
}
