//! The store's state objects: beside each mirror, per variant, the
//! fingerprint of the cell's last build and how it ended (built or failed,
//! when, how long, what verify found). Builds write them, `plan` and the
//! report read them.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::fingerprint::Fingerprint;
use crate::matrix::Cell;
use crate::schema::mirrors;
use crate::store::Store;

/// What a mirror's state object records: per variant, the fingerprint of
/// the last build and how it ended.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct MirrorState {
    pub cells: BTreeMap<String, CellState>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CellState {
    pub fingerprint: Fingerprint,
    pub status: BuildStatus,
    pub time: String,
    /// How long the build took, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<u64>,
    /// How the package's verify ended, when it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifyRecord>,
}

/// A verify's outcome as the state records it: the failed checks by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyRecord {
    pub passed: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BuildStatus {
    Built,
    Failed,
}

/// Records one cell's state in its mirror's state object. The CPU and GPU
/// legs of a toolchain share the object and may finish together: the
/// read-modify-write goes through `Store::update` (a lock on the local store,
/// conditional writes with retry on S3), so neither record is lost. An
/// unreadable state object is an error, not silently another cell's loss.
pub fn record(store: &dyn Store, key: &str, variant: &str, state: &CellState) -> Result<()> {
    store.update(key, Some(crate::store::SHORT_CACHE), &mut |current| {
        let mut recorded: MirrorState = match current {
            Some(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("{key} is not a state object"))?,
            None => MirrorState::default(),
        };
        recorded.cells.insert(variant.to_string(), state.clone());
        Ok(Some(
            (serde_json::to_string_pretty(&recorded)? + "\n").into_bytes(),
        ))
    })?;
    Ok(())
}

/// The state object's key in the store: beside the mirror it describes.
pub fn key(cell: &Cell<'_>) -> String {
    let what = cell.release.map_or("deps", |r| r.version.as_str());
    mirrors::state_key(&cell.toolchain.name, what)
}

/// A mirror's state object; `None` when no build has recorded one yet.
pub fn read(store: &dyn Store, key: &str) -> Result<Option<MirrorState>> {
    match store.get(key)? {
        Some(bytes) => Ok(Some(
            serde_json::from_slice(&bytes)
                .with_context(|| format!("{key} is not a state object"))?,
        )),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::local::LocalStore;

    #[test]
    fn writers_finishing_together_lose_no_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore {
            root: dir.path().to_path_buf(),
        };
        let key = "noble/slurm/deps/state.json";
        let state = |i: usize| CellState {
            fingerprint: Fingerprint {
                value: format!("{i:032x}"),
                inputs: BTreeMap::new(),
            },
            status: BuildStatus::Built,
            time: "2026-12-03T00:00:00Z".into(),
            seconds: Some(i as u64),
            verify: None,
        };
        std::thread::scope(|s| {
            for i in 0..16 {
                let (store, state) = (&store, state(i));
                s.spawn(move || record(store, key, &format!("v{i}"), &state).unwrap());
            }
        });
        let recorded: MirrorState =
            serde_json::from_slice(&store.get(key).unwrap().unwrap()).unwrap();
        assert_eq!(recorded.cells.len(), 16, "{:?}", recorded.cells.keys());
    }
}
