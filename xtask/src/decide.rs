//! Which cells need building, and why: each cell's fingerprint against the
//! state its last build recorded in the store. `plan` prints and hands this
//! to the workflow; the report shows it.

use std::collections::HashMap;

use anyhow::Result;

use crate::fingerprint::{self, Fingerprint};
use crate::matrix::{Cell, CellFilter, Stage};
use crate::project::Project;
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
    project: &'m Project,
    stage: Stage,
    filter: &CellFilter,
    force: bool,
    store: &dyn Store,
) -> Result<Plan<'m>> {
    let matrix = &project.matrix;
    let mut states: HashMap<String, Option<MirrorState>> = HashMap::new();
    let mut unreachable = None;
    let mut decisions = Vec::new();
    let mut fingerprints = fingerprint::Fingerprints::new(project);
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

impl Decision<'_> {
    /// What the plan does with the cell, in a word.
    pub fn action(&self) -> &'static str {
        if self.build { "build" } else { "skip" }
    }
}

impl Plan<'_> {
    /// The cells to build.
    pub fn selected(&self) -> impl Iterator<Item = &Decision<'_>> {
        self.decisions.iter().filter(|d| d.build)
    }
}
