//! The bash script a build container runs, rendered as a pure function of
//! the cell and the stage: one phase per Spack step, each logged (a group
//! under Actions). On failure the phase and Spack's logs are left in the
//! debug mount and the script exits with Spack's status.

use crate::schema::paths::{self, mnt};

/// What a stage does inside the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Deps { update_index: bool },
    Slurm,
    Index,
}

/// Everything the script depends on.
#[derive(Debug)]
pub struct Script<'a> {
    pub cell: String,
    pub stage: Stage,
    /// The signing key's fingerprint; `None` pushes unsigned.
    pub signing: Option<&'a str>,
    /// The environment's name of the mirror this stage pushes to.
    pub mirror: &'a str,
    /// The URL the index job rebuilds.
    pub index_url: &'a str,
    /// `spack install --fake`: the whole machinery, nothing compiled.
    pub rehearsal: bool,
    /// Stage 2: the module file Spack writes for the cell (`<version>-<toolchain>.lua`).
    pub module_file: &'a str,
}

/// The install log, in the work mount: the toolkit reads from it which
/// packages were built from source and which came from a buildcache.
pub const INSTALL_LOG: &str = "install.log";
/// Where Spack builds the stage-2 view before the hand-over copies it out.
const VIEW_IN_CONTAINER: &str = crate::module::VIEW_ROOT;

pub fn render(s: &Script<'_>) -> String {
    let mut out = String::new();
    let what = match s.stage {
        Stage::Deps { .. } => "stage 1: build and push the dependencies",
        Stage::Slurm => "stage 2: build and push Slurm, then hand over its view",
        Stage::Index => "rebuild the buildcache index (the single writer)",
    };
    out.push_str(&format!(
        "#!/bin/bash\n# Cell {}: {what}.\n# Rendered by the toolkit; a dry run prints it.\n",
        s.cell
    ));
    if s.rehearsal {
        out.push_str(
            "# A rehearsal: `spack install --fake` runs the install machinery and\n\
             # writes placeholder files; nothing is compiled.\n",
        );
    }
    out.push_str(&format!(
        r#"set -Eeuo pipefail
readonly DEBUG={debug} WORK={work}
phase=start
begin() {{
  if [ "${{GITHUB_ACTIONS:-}}" = true ]; then
    [ "$phase" = start ] || echo "::endgroup::"
    echo "::group::$1"
  else
    echo "==> $1"
  fi
  phase=$1
}}
on_error() {{
  local status=$?
  echo "$phase" > "$DEBUG/phase"
  cp {env}/spack.yaml "$DEBUG/" 2>/dev/null || true
  cp "$WORK/{log}" "$DEBUG/" 2>/dev/null || true
  if [ -d {stage} ]; then
    # The build's output (per phase while it runs: spack-build-NN-<phase>-out.txt),
    # its environment and configure's log.
    find {stage} \( -name 'spack-build-*.txt' -o -name config.log \) -print0 |
      while IFS= read -r -d '' f; do
        rel=${{f#{stage}/}}
        mkdir -p "$DEBUG/stage/$(dirname "$rel")"
        cp "$f" "$DEBUG/stage/$rel"
      done
  fi
  exit "$status"
}}
trap on_error ERR
mkdir -p "$HOME"
rm -f "$DEBUG/phase" "$WORK/{log}"
"#,
        debug = mnt::DEBUG,
        work = mnt::WORK,
        env = paths::ENV,
        stage = paths::BUILD_STAGE,
        log = INSTALL_LOG,
    ));
    if s.stage == Stage::Index {
        out.push_str(&format!(
            "begin update-index\nspack buildcache update-index --keys {}\n",
            s.index_url
        ));
        return out;
    }
    // Every Spack command runs inside the environment: its misc cache is
    // persistent, so the package repository is indexed once per host, not
    // once per cell.
    let e = "spack -e \"$WORK/env\"";
    out.push_str(&format!(
        "begin environment\nrm -rf \"$WORK/env\"\nmkdir -p \"$WORK/env\"\ncp {}/spack.yaml \"$WORK/env/spack.yaml\"\n",
        paths::ENV
    ));
    if s.signing.is_some() {
        out.push_str(&format!(
            "begin keys\nexport SPACK_GNUPGHOME=/tmp/spack-gnupg\nmkdir -p -m 700 \"$SPACK_GNUPGHOME\"\n\
             printf 'pinentry-mode loopback\\npassphrase-file {keys}/passphrase\\n' > \"$SPACK_GNUPGHOME/gpg.conf\"\n\
             echo allow-loopback-pinentry > \"$SPACK_GNUPGHOME/gpg-agent.conf\"\n\
             {e} gpg trust {keys}/signing-key.asc\n",
            keys = mnt::KEYS
        ));
    }
    if s.stage == Stage::Slurm {
        // Stage 1's key, from the deps mirror's key index (which the index
        // job writes): without it every binary would be refused.
        if s.signing.is_none() {
            out.push_str("begin keys\n");
        }
        out.push_str(&format!("{e} buildcache keys --install --trust\n"));
    }
    out.push_str(&format!("begin concretize\n{e} concretize\n"));
    // Stage 2 takes stage 1's signed binaries (the concretizer reuses them,
    // the install extracts them); only what is missing is built.
    out.push_str("begin install\n");
    if s.rehearsal {
        // A fake python-venv has no bin/python3, which the build environment
        // of its dependents runs (and asks for paths inside the prefix): the
        // dependencies first, then a real venv over each fake Python prefix,
        // then the roots.
        out.push_str(&format!(
            "{e} install --fail-fast --fake --only dependencies 2>&1 | tee \"$WORK/{INSTALL_LOG}\"\n\
             for p in $({e} find --format '{{prefix}}' python python-venv 2>/dev/null || true); do\n  \
             [ -e \"$p/bin/python3\" ] || python3 -m venv --without-pip \"$p\"\n\
             done\n\
             {e} install --fail-fast --fake 2>&1 | tee -a \"$WORK/{INSTALL_LOG}\"\n"
        ));
    } else {
        out.push_str(&format!(
            "{e} install --fail-fast 2>&1 | tee \"$WORK/{INSTALL_LOG}\"\n"
        ));
    }
    let key = match s.signing {
        Some(fpr) => format!("--key {fpr}"),
        None => "--unsigned".to_string(),
    };
    out.push_str("begin push\n");
    match s.stage {
        Stage::Deps { update_index } => {
            let idx = if update_index { " --update-index" } else { "" };
            out.push_str(&format!(
                "{e} buildcache push {key} --with-build-dependencies{idx} {}\n",
                s.mirror
            ));
        }
        Stage::Slurm => {
            // What this run built from source, and only that: everything
            // else is in the deps mirror already, so the two mirrors
            // together install the cell with `--cache-only`.
            out.push_str(&format!(
                "built=$(sed -n 's/.*No binary for \\(.*\\) found: installing from source.*/\\1/p' \"$WORK/{INSTALL_LOG}\" | sed 's/.*-/\\//')\n\
                 if [ -n \"$built\" ]; then\n  \
                 # shellcheck disable=SC2086\n  \
                 {e} buildcache push {key} --only package {} $built\n\
                 else\n  echo \"nothing was built from source: nothing to push\"\nfi\n",
                s.mirror
            ));
            out.push_str(&hand_over(s, e));
        }
        Stage::Index => unreachable!(),
    }
    out.push_str(
        "if [ \"${GITHUB_ACTIONS:-}\" = true ]; then echo \"::endgroup::\"; fi\necho \"==> done\"\n",
    );
    out
}

/// What an install did, read from Spack's own lines in its log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct InstallReport {
    /// `name-version-hash` of each package built from source (or faked).
    pub built: Vec<String>,
    /// Those extracted from a buildcache.
    pub extracted: Vec<String>,
}

impl InstallReport {
    pub fn parse(log: &str) -> InstallReport {
        let mut r = InstallReport::default();
        for line in log.lines() {
            let line = line.trim_start_matches("==> ");
            if let Some(rest) = line.strip_prefix("No binary for ")
                && let Some(id) = rest.strip_suffix(" found: installing from source")
            {
                r.built.push(id.to_string());
            } else if let Some(rest) = line.strip_prefix("Extracting ")
                && let Some(id) = rest.strip_suffix(" from binary cache")
            {
                r.extracted.push(id.to_string());
            }
        }
        r
    }

    /// The package names of `ids` (`slurm-25-11-6-1-<hash>` → `slurm`).
    pub fn names(ids: &[String]) -> Vec<String> {
        ids.iter()
            .map(|id| {
                // `<name>-<version>-<hash>`: the hash has no '-', a name or a
                // version may; drop the hash, then cut before the first '-'
                // that starts the version (a digit).
                let no_hash = id.rsplit_once('-').map_or(id.as_str(), |(a, _)| a);
                let cut = no_hash
                    .match_indices('-')
                    .find(|(i, _)| no_hash[i + 1..].starts_with(|c: char| c.is_ascii_digit()))
                    .map_or(no_hash.len(), |(i, _)| i);
                no_hash[..cut].to_string()
            })
            .collect()
    }

    /// The report as one Markdown section (step summary) and one line each.
    pub fn lines(&self, cell: &str) -> Vec<String> {
        let mut names = Self::names(&self.built);
        names.sort();
        vec![
            format!(
                "{cell}: built from source: {} ({})",
                self.built.len(),
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ),
            format!(
                "{cell}: extracted from the buildcache: {}",
                self.extracted.len()
            ),
        ]
    }
}

/// Stage 2's hand-over: the view copied out of the container with every
/// RUNPATH that names the view made relative to `$ORIGIN` (a copy view's
/// libraries otherwise name the build-time view root, and once relocated
/// would find each other only through LD_LIBRARY_PATH), the lock, the module.
fn hand_over(s: &Script<'_>, e: &str) -> String {
    // A fake Slurm has only `bin/slurm`; a real one has scontrol.
    let probe = if s.rehearsal {
        "bin/slurm"
    } else {
        "bin/scontrol"
    };
    format!(
        r#"begin hand-over
{e} module lmod refresh --delete-tree -y
real=$(readlink -f {view})
cp -a "$real"/. {out}/view/
# Spack's per-package metadata (build logs and environment, install
# manifests) names the build-time install tree and is not needed to run;
# the package's manifest.json carries the provenance.
rm -rf {out}/view/.spack
# RUNPATHs into the view become $ORIGIN-relative; others are kept. A library
# with none (gcc-runtime's copies of the compiler's libraries) gets $ORIGIN,
# so it finds its neighbours in the view before the OS's older ones.
find {out}/view -type f -print0 | while IFS= read -r -d '' f; do
  [ "$(head -c 4 "$f" | tr -d '\0')" = $'\x7fELF' ] || continue
  rpath=$(patchelf --print-rpath "$f" 2>/dev/null) || continue
  dir=$(dirname "${{f#{out}/view}}")
  if [ -z "$rpath" ]; then
    case "$dir" in /lib|/lib64) patchelf --set-rpath '$ORIGIN' "$f" ;; esac
    continue
  fi
  new=()
  IFS=: read -ra entries <<< "$rpath"
  for p in "${{entries[@]}}"; do
    # Spack pads relocated paths with leading slashes to keep their length.
    n=$(printf '%s' "$p" | tr -s /)
    case "$n" in
      "$real"|"$real"/*|{view}|{view}/*)
        inside=${{n#"$real"}}; inside=${{inside#{view}}}
        p="\$ORIGIN/$(realpath -m --relative-to="/view$dir" "/view$inside")" ;;
    esac
    case ":${{new[*]+$(IFS=:; echo "${{new[*]}}")}}:" in *":$p:"*) ;; *) new+=("$p") ;; esac
  done
  joined=$(IFS=:; echo "${{new[*]}}")
  [ "$joined" = "$rpath" ] || patchelf --set-rpath "$joined" "$f"
done
cp "$WORK/env/spack.lock" {out}/spack.lock
test -e {out}/view/{probe}
find {modules} -path '*/{module}' -exec cp {{}} {out}/module.lua \;
test -s {out}/module.lua
"#,
        view = VIEW_IN_CONTAINER,
        out = mnt::OUT,
        modules = paths::MODULES_ROOT,
        module = s.module_file,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(stage: Stage, signing: Option<&str>, rehearsal: bool) -> String {
        render(&Script {
            cell: "25.11/noble/cpu".into(),
            stage,
            signing,
            mirror: "slurm-factory-slurm",
            index_url: "s3://b/noble/slurm/25.11",
            rehearsal,
            module_file: "25.11-noble.lua",
        })
    }

    #[test]
    fn a_signed_push_names_the_key_alone() {
        // Spack 1.1 refuses `--signed` together with `--key` (exit 2).
        let fpr = "0123456789ABCDEF0123456789ABCDEF01234567";
        for stage in [Stage::Deps { update_index: true }, Stage::Slurm] {
            let s = script(stage, Some(fpr), false);
            assert!(s.contains(&format!("buildcache push --key {fpr} ")), "{s}");
            assert!(!s.contains("--signed"), "{s}");
        }
        let unsigned = script(Stage::Slurm, None, false);
        assert!(unsigned.contains("buildcache push --unsigned --only package"));
    }

    #[test]
    fn every_spack_command_runs_inside_the_environment() {
        let s = script(Stage::Slurm, Some("F"), false);
        for line in s.lines().filter(|l| l.trim_start().starts_with("spack ")) {
            assert!(
                line.trim_start().starts_with("spack -e \"$WORK/env\""),
                "{line}"
            );
        }
        assert!(s.contains("spack -e \"$WORK/env\" gpg trust"));
    }

    #[test]
    fn stage_two_trusts_stage_ones_keys_and_pushes_what_it_built() {
        let s = script(Stage::Slurm, Some("F"), false);
        let keys = s.find("buildcache keys --install --trust").unwrap();
        let concretize = s.find(" concretize\n").unwrap();
        assert!(keys < concretize);
        assert!(s.contains("No binary for"));
        assert!(s.contains("test -e /opt/slurm-factory/out/view/bin/scontrol"));
    }

    #[test]
    fn a_rehearsal_installs_fake_and_probes_the_fake_slurm() {
        let s = script(Stage::Slurm, Some("F"), true);
        assert!(s.contains("install --fail-fast --fake --only dependencies 2>&1"));
        assert!(s.contains("install --fail-fast --fake 2>&1 | tee -a"));
        assert!(s.contains("test -e /opt/slurm-factory/out/view/bin/slurm\n"));
        let d = script(
            Stage::Deps {
                update_index: false,
            },
            Some("F"),
            true,
        );
        assert!(d.contains("--fake"));
        assert!(!d.contains("--update-index"));
    }

    #[test]
    fn the_install_report_reads_spacks_lines() {
        let log = "==> Installing zlib-ng-2.2.4-abc [3/91]\n\
==> Extracting zlib-ng-2.2.4-abcdefabcdefabcdefabcdefabcdefab from binary cache\n\
==> No binary for slurm-25-11-6-1-szfsb6ogbwchela56r3mk34dvr6hpp7c found: installing from source\n\
==> No binary for compiler-wrapper-1.0-q2 found: installing from source\n\
[+] /opt/slurm/software/x/slurm\n";
        let r = InstallReport::parse(log);
        assert_eq!(
            r.built,
            [
                "slurm-25-11-6-1-szfsb6ogbwchela56r3mk34dvr6hpp7c",
                "compiler-wrapper-1.0-q2"
            ]
        );
        assert_eq!(
            r.extracted,
            ["zlib-ng-2.2.4-abcdefabcdefabcdefabcdefabcdefab"]
        );
        assert_eq!(
            InstallReport::names(&r.built),
            ["slurm", "compiler-wrapper"]
        );
        assert_eq!(
            r.lines("c")[0],
            "c: built from source: 2 (compiler-wrapper, slurm)"
        );
    }

    #[test]
    fn the_script_is_valid_bash() {
        for stage in [
            Stage::Deps { update_index: true },
            Stage::Slurm,
            Stage::Index,
        ] {
            for rehearsal in [false, true] {
                let s = script(stage, Some("F"), rehearsal);
                let sh = crate::process::shell().unwrap();
                let out =
                    crate::process::output(crate::process::cmd(&sh, &["bash", "-n", "-c", &s]))
                        .unwrap();
                assert!(
                    out.status.success(),
                    "{}\n{s}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}
