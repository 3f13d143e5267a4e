//! What the next release of a Slurm series holds, decided from what this run
//! built and what the newest release already has. Pure: `publish` gathers
//! the facts from a store or from GitHub and carries out the decision.
//!
//! A published release never changes. A run makes a new release only when it
//! built something new or different; every package it did not rebuild (or
//! rebuilt to the same bytes) is carried over from the newest release, so
//! the new release is whole and its unchanged packages are byte-identical to
//! the ones admins already have.

/// One package's facts.
#[derive(Debug, Clone)]
pub struct Cell {
    pub stem: String,
    /// Built by this run (in the output directory).
    pub local: bool,
    /// In the newest release.
    pub previous: bool,
    /// Both, with the same tarball bytes (or the same parts).
    pub same_data: bool,
}

/// Adds the packages of the newest release that this run did not build.
pub fn add_unbuilt<'a>(cells: &mut Vec<Cell>, newest: impl IntoIterator<Item = &'a String>) {
    for stem in newest {
        if !cells.iter().any(|c| &c.stem == stem) {
            cells.push(Cell {
                stem: stem.clone(),
                local: false,
                previous: true,
                same_data: false,
            });
        }
    }
}

/// What becomes of a package in the next release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Built by this run, new or changed: its files are published.
    Publish,
    /// Built by this run to the same bytes as the newest release's: that
    /// release's files (and signature) are kept.
    Same,
    /// Not built by this run: carried over from the newest release.
    Carry,
    /// Only in the newest release, which is of another Slurm release or
    /// signed by another key: it stays there, not carried into this one.
    Leave,
}

#[derive(Debug, Clone)]
pub struct Decision {
    pub fates: Vec<(String, Fate)>,
    /// Whether anything differs from the newest release: only then is a
    /// new release made.
    pub new_release: bool,
}

impl Decision {
    pub fn stems(&self, fate: Fate) -> Vec<&str> {
        self.fates
            .iter()
            .filter(|(_, f)| *f == fate)
            .map(|(s, _)| s.as_str())
            .collect()
    }

    /// One line for the log: what is published, kept and carried.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        for (fate, what) in [
            (Fate::Publish, "new or changed"),
            (Fate::Same, "rebuilt to the same bytes"),
            (Fate::Carry, "carried over"),
            (Fate::Leave, "left in the older release"),
        ] {
            let stems = self.stems(fate);
            if !stems.is_empty() {
                parts.push(format!("{what}: {}", stems.join(", ")));
            }
        }
        parts.join("; ")
    }

    /// The log line of a run that makes no release of `series` because its
    /// newest release, `newest`, already holds everything.
    pub fn nothing_new(&self, series: &str, newest: &impl std::fmt::Display) -> String {
        format!(
            "Slurm {series}: nothing new since release {newest} ({}): no new release",
            self.summary()
        )
    }
}

/// `compatible`: the newest release is of the same Slurm release and signed
/// by the same key, so its packages may be carried into the next one.
pub fn decide(cells: &[Cell], had_previous: bool, compatible: bool) -> Decision {
    let fates: Vec<(String, Fate)> = cells
        .iter()
        .filter(|c| c.local || c.previous)
        .map(|c| {
            let fate = match (c.local, c.previous) {
                (true, true) if c.same_data && compatible => Fate::Same,
                (true, _) => Fate::Publish,
                (false, _) if compatible => Fate::Carry,
                (false, _) => Fate::Leave,
            };
            (c.stem.clone(), fate)
        })
        .collect();
    let new_release = !had_previous || fates.iter().any(|(_, f)| *f == Fate::Publish);
    Decision { fates, new_release }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(stem: &str, local: bool, previous: bool, same_data: bool) -> Cell {
        Cell {
            stem: stem.into(),
            local,
            previous,
            same_data,
        }
    }

    #[test]
    fn only_new_or_changed_bytes_make_a_release() {
        let first = decide(&[cell("a", true, false, false)], false, true);
        assert!(first.new_release);
        assert_eq!(first.fates, [("a".to_string(), Fate::Publish)]);

        // A rerun with the same bytes, and the others not rebuilt.
        let rerun = [cell("a", true, true, true), cell("b", false, true, false)];
        let d = decide(&rerun, true, true);
        assert!(!d.new_release, "{d:?}");
        assert_eq!(d.stems(Fate::Same), ["a"]);
        assert_eq!(d.stems(Fate::Carry), ["b"]);

        // One cell changed: a release with it and the rest carried over.
        let changed = [cell("a", true, true, false), cell("b", false, true, false)];
        let d = decide(&changed, true, true);
        assert!(d.new_release);
        assert_eq!(d.stems(Fate::Publish), ["a"]);
        assert_eq!(d.stems(Fate::Carry), ["b"]);
        assert_eq!(d.summary(), "new or changed: a; carried over: b");

        // Another Slurm release (or key): nothing is carried, even the same bytes.
        let d = decide(&changed, true, false);
        assert_eq!(d.stems(Fate::Publish), ["a"]);
        assert_eq!(d.stems(Fate::Leave), ["b"]);
        let d = decide(&rerun, true, false);
        assert!(d.new_release);
        assert_eq!(d.stems(Fate::Publish), ["a"]);
    }
}
