//! The Lmod module that ships in every package: `modules/slurm.lua.tmpl`
//! rendered for one cell. Relocation happens at load time, in Lua.

use anyhow::{Context, Result, bail};

use crate::matrix::Cell;

pub const TEMPLATE: &str = "modules/slurm.lua.tmpl";
/// Where the view sits when nothing relocates it (and where Spack builds it).
pub const VIEW_ROOT: &str = "/opt/slurm/view";

/// The module's name for a Slurm cell: `slurm/<version>-<toolchain>`.
pub fn module_name(cell: &Cell<'_>) -> String {
    let release = cell.release.expect("modules exist for slurm cells only");
    format!("slurm/{}-{}", release.version, cell.toolchain.name)
}

/// The file the module lives in, relative to a module root (a `MODULEPATH` entry).
pub fn module_file(cell: &Cell<'_>) -> String {
    format!("{}.lua", module_name(cell))
}

/// The module of a Slurm cell, from the template's text ([`TEMPLATE`]).
pub fn render(template: &str, cell: &Cell<'_>) -> Result<String> {
    let release = cell.release.expect("modules exist for slurm cells only");
    let name = module_name(cell);
    fill(
        template,
        &[
            ("version", &release.version),
            ("toolchain", &cell.toolchain.name),
            ("os", &cell.toolchain.os),
            ("variant", cell.variant.as_str()),
            ("module_name", &name),
            ("default_prefix", VIEW_ROOT),
            ("build_view_root", VIEW_ROOT),
        ],
    )
    .with_context(|| format!("rendering {TEMPLATE} for {}", cell.id()))
}

/// Replaces each `{{name}}` with its value. A placeholder without a value, or a
/// value no placeholder uses, is an error: the template and code must agree.
fn fill(template: &str, values: &[(&str, &str)]) -> Result<String> {
    let mut out = String::with_capacity(template.len() + 256);
    let mut used = vec![false; values.len()];
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            bail!("unclosed `{{{{` in the template");
        };
        let key = after[..end].trim();
        let Some(i) = values.iter().position(|(k, _)| *k == key) else {
            bail!("unknown placeholder `{{{{{key}}}}}`");
        };
        used[i] = true;
        out.push_str(values[i].1);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    if let Some(i) = used.iter().position(|u| !u) {
        bail!("the template never uses `{{{{{}}}}}`", values[i].0);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::{CellFilter, Stage};

    #[test]
    fn fill_replaces_every_placeholder() {
        assert_eq!(
            fill("a {{x}} b {{ y }}", &[("x", "1"), ("y", "2")]).unwrap(),
            "a 1 b 2"
        );
    }

    #[test]
    fn fill_rejects_unknown_and_unused_names() {
        assert!(
            fill("{{z}}", &[])
                .unwrap_err()
                .to_string()
                .contains("unknown placeholder `{{z}}`")
        );
        assert!(
            fill("x", &[("y", "1")])
                .unwrap_err()
                .to_string()
                .contains("never uses `{{y}}`")
        );
    }

    #[test]
    fn rendered_module_is_complete_for_every_cell() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap();
        let project = crate::project::Project::load(root).unwrap();
        let m = &project.matrix;
        for cell in m.cells(Stage::Slurm, &CellFilter::default()).unwrap() {
            let text = render(&project.module_template, &cell).unwrap();
            // Spack uses the rendered file as a Jinja template: nothing may look like markup.
            for markup in ["{{", "{%", "{#"] {
                assert!(!text.contains(markup), "{} contains {markup}", cell.id());
            }
            assert!(text.contains(&format!("local name = \"{}\"", module_name(&cell))));
        }
    }
}
