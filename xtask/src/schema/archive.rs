//! What a package's tar stream may hold, one rule for `package` (that writes
//! it) and `download` (that unpacks it).

use std::path::{Component, Path};

/// A symlink at `link` (relative to a root: the view when packaging, the
/// package when unpacking) pointing at `target` resolves inside that root.
/// The one rule `package` and `download` share. `..` may only lead the target: it then walks
/// up real directories (no entry lies under a symlink), while a `..` after a
/// name could climb out of wherever another symlink led.
pub fn link_stays_inside(link: &Path, target: &Path) -> bool {
    let mut depth: usize = link.components().count().saturating_sub(1);
    let mut named = false;
    for c in target.components() {
        match c {
            Component::Normal(_) => named = true,
            Component::CurDir => {}
            Component::ParentDir if !named => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return false,
            },
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}
