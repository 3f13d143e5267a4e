//! `report`: the whole matrix at a glance. It reads the store as `plan` and
//! `download` do (the builds' state records, the release index) and writes a
//! self-contained page, `reports/index.html`, with the same data as
//! `reports/report.json`, beside `releases/`. Each run appends its cells'
//! states and sizes to `reports/history.json`, which the page charts.
//!
//! Gathering and rendering are pure; the command reads the store, renders,
//! then writes.

mod page;

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::decide::{self, Reason};
use crate::matrix::{CellFilter, Stage};
use crate::project::Project;
use crate::schema::files;
use crate::schema::release::{INDEX_KEY, Index, PackageEntry};
use crate::state::{BuildStatus, VerifyRecord};
use crate::store::{self, Store};
use crate::{gha, text_table};

/// Where the report lives in a store: links from it are relative to it.
pub const PAGE_KEY: &str = "reports/index.html";
pub const JSON_KEY: &str = "reports/report.json";
pub const HISTORY_KEY: &str = "reports/history.json";
/// Runs kept in the history: ten years of weekly runs.
const HISTORY_RUNS: usize = 520;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    Built,
    Failed,
    /// The store records no build of it.
    NeverBuilt,
    /// The store could not be read: nothing is known.
    Unknown,
}

impl State {
    pub fn text(self) -> &'static str {
        match self {
            State::Built => "built",
            State::Failed => "failed",
            State::NeverBuilt => "never built",
            State::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub generated: String,
    pub store: String,
    /// Why the store could not be read, when it could not.
    pub unreachable: Option<String>,
    pub slurm_versions: Vec<String>,
    pub toolchains: Vec<String>,
    pub cells: Vec<CellReport>,
    pub history_runs: usize,
}

#[derive(Debug, Serialize)]
pub struct CellReport {
    /// `25.11/noble/cpu`, or `deps/noble/cpu`.
    pub id: String,
    pub slurm: Option<String>,
    pub toolchain: String,
    pub variant: String,
    pub state: State,
    /// Recorded with other inputs than the checkout's: rebuilt by the next run.
    pub stale: bool,
    /// `plan`'s reason for it, in words.
    pub reason: String,
    /// The inputs that changed since its recorded build.
    pub changed: Vec<String>,
    pub recorded_at: Option<String>,
    pub seconds: Option<u64>,
    pub verify: Option<VerifyRecord>,
    pub package: Option<PackageReport>,
    /// Its package size at each recorded run that had one, oldest first.
    pub size_history: Vec<(String, u64)>,
}

#[derive(Debug, Serialize)]
pub struct PackageReport {
    /// The newest release that holds it.
    pub release: String,
    pub tarball: String,
    pub size: u64,
    /// The whole tarball's SHA-256 (of the joined parts for a split one).
    pub sha256: Option<String>,
    pub parts: usize,
    /// Label and store key of each file an admin may want.
    pub links: Vec<(String, String)>,
}

/// The recorded runs: what each cell was, run after run.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct History {
    pub runs: Vec<HistoryRun>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryRun {
    pub time: String,
    pub cells: BTreeMap<String, HistoryCell>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryCell {
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// What the store says of every cell of the matrix, before the history.
pub fn gather(project: &Project, store: &dyn Store, generated: &str) -> Result<Report> {
    let matrix = &project.matrix;
    let mut cells = Vec::new();
    let mut unreachable = None;
    let index = match read_index(store) {
        Ok(index) => index,
        Err(e) => {
            unreachable = Some(format!("{e:#}"));
            Index::default()
        }
    };
    for stage in [Stage::Deps, Stage::Slurm] {
        let plan = decide::plan(project, stage, &CellFilter::default(), false, store)?;
        if unreachable.is_none() {
            unreachable = plan.unreachable.clone();
        }
        for d in plan.decisions {
            let state = if plan.unreachable.is_some() {
                State::Unknown
            } else {
                match d.recorded.as_ref().map(|r| r.status) {
                    None => State::NeverBuilt,
                    Some(BuildStatus::Built) => State::Built,
                    Some(BuildStatus::Failed) => State::Failed,
                }
            };
            let changed = match &d.reason {
                Reason::InputsChanged(names) => names.clone(),
                Reason::DepsChanged => vec!["deps".into()],
                _ => Vec::new(),
            };
            let package =
                d.cell
                    .release
                    .and_then(|r| {
                        // The newest release that has it.
                        index.newest_first(Some(&r.version)).into_iter().find_map(
                            |(tag, release)| {
                                release
                                    .packages
                                    .values()
                                    .find(|e| {
                                        e.toolchain == d.cell.toolchain.name
                                            && e.variant == d.cell.variant.as_str()
                                            && e.arch == matrix.arch
                                    })
                                    .map(|e| (tag, e.clone()))
                            },
                        )
                    })
                    .map(|(tag, e)| package_report(store, &tag.to_string(), &e))
                    .transpose()?;
            cells.push(CellReport {
                id: d.cell.id(),
                slurm: d.cell.release.map(|r| r.version.clone()),
                toolchain: d.cell.toolchain.name.clone(),
                variant: d.cell.variant.to_string(),
                state,
                stale: !changed.is_empty(),
                reason: match &d.reason {
                    Reason::New => "the store has no record of it".into(),
                    r => r.text(),
                },
                changed,
                recorded_at: d.recorded.as_ref().map(|r| r.time.clone()),
                seconds: d.recorded.as_ref().and_then(|r| r.seconds),
                verify: d.recorded.and_then(|r| r.verify),
                package,
                size_history: Vec::new(),
            });
        }
    }
    Ok(Report {
        generated: generated.to_string(),
        store: store.describe(),
        unreachable,
        slurm_versions: matrix.slurm.iter().map(|s| s.version.clone()).collect(),
        toolchains: matrix.toolchains.iter().map(|t| t.name.clone()).collect(),
        cells,
        history_runs: 0,
    })
}

fn read_index(store: &dyn Store) -> Result<Index> {
    match store.get(INDEX_KEY)? {
        Some(bytes) => Index::parse(&bytes, &format!("the store's {INDEX_KEY}")),
        None => Ok(Index::default()),
    }
}

fn package_report(store: &dyn Store, release: &str, e: &PackageEntry) -> Result<PackageReport> {
    let dir = &e.dir;
    let data: Vec<(&String, &(u64, String))> =
        e.files.iter().filter(|(n, _)| files::is_data(n)).collect();
    let tarball = data
        .first()
        .map(|(n, _)| files::whole_of(n).to_string())
        .unwrap_or_default();
    let sha256 = if let [(_, (_, sha))] = data.as_slice() {
        Some(sha.clone())
    } else {
        // Split: the whole's SHA-256 is in its checksum file, not the index.
        store
            .get(&format!("{dir}/{}", files::checksum(&tarball)))?
            .and_then(|b| {
                String::from_utf8_lossy(&b)
                    .split_whitespace()
                    .next()
                    .map(str::to_string)
            })
    };
    let stem = files::tarball_stem(&tarball).unwrap_or(&tarball);
    let mut links: Vec<(String, String)> = data
        .iter()
        .map(|(n, _)| {
            let label = match files::part_number(&tarball, n) {
                Some(part) => format!("part {part}"),
                None => "tarball".into(),
            };
            (label, format!("{dir}/{n}"))
        })
        .collect();
    for (label, name) in [
        ("checksum", files::checksum(&tarball)),
        ("signature", files::signature(&tarball)),
        ("manifest", files::manifest(stem)),
        ("SBOM", files::sbom(stem)),
    ] {
        if e.files.contains_key(&name) {
            links.push((label.into(), format!("{dir}/{name}")));
        }
    }
    Ok(PackageReport {
        release: release.to_string(),
        size: data.iter().map(|(_, (size, _))| size).sum(),
        parts: if data.len() > 1 { data.len() } else { 0 },
        tarball,
        sha256,
        links,
    })
}

/// This run as the history records it.
fn history_run(report: &Report) -> HistoryRun {
    HistoryRun {
        time: report.generated.clone(),
        cells: report
            .cells
            .iter()
            .map(|c| {
                let cell = HistoryCell {
                    state: c.state.text().into(),
                    size: c.package.as_ref().map(|p| p.size),
                };
                (c.id.clone(), cell)
            })
            .collect(),
    }
}

/// The history with this run appended (a run at the same time replaces it),
/// the oldest runs dropped past the limit.
pub fn with_run(mut history: History, run: HistoryRun) -> History {
    history.runs.retain(|r| r.time != run.time);
    history.runs.push(run);
    history.runs.sort_by(|a, b| a.time.cmp(&b.time));
    let excess = history.runs.len().saturating_sub(HISTORY_RUNS);
    history.runs.drain(..excess);
    history
}

/// Fills each cell's size history from the recorded runs.
pub fn attach_history(report: &mut Report, history: &History) {
    report.history_runs = history.runs.len();
    for c in &mut report.cells {
        c.size_history = history
            .runs
            .iter()
            .filter_map(|r| {
                r.cells
                    .get(&c.id)
                    .and_then(|h| h.size)
                    .map(|s| (r.time.clone(), s))
            })
            .collect();
    }
}

pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

pub fn duration(seconds: u64) -> String {
    match seconds {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min {:02} s", s / 60, s % 60),
        s => format!("{} h {:02} min", s / 3600, s % 3600 / 60),
    }
}

/// How a cell's state reads in text: the state, the failed checks, staleness.
pub fn state_line(c: &CellReport) -> String {
    let mut line = c.state.text().to_string();
    if let Some(v) = &c.verify
        && !v.passed
    {
        line.push_str(&format!(" (verify failed: {})", v.failed.join(", ")));
    }
    if c.stale {
        line.push_str(&format!("; stale: {}", c.reason));
    }
    line
}

/// The terminal-width text version, for logs and the step summary.
pub fn text(report: &Report) -> String {
    let rows: Vec<[String; 4]> = report
        .cells
        .iter()
        .map(|c| {
            [
                c.id.clone(),
                state_line(c),
                c.package.as_ref().map_or(String::new(), |p| mib(p.size)),
                c.seconds.map_or(String::new(), duration),
            ]
        })
        .collect();
    let mut out = text_table(&["cell", "state", "package", "build time"], &rows);
    if let Some(why) = &report.unreachable {
        out.push_str(&format!("the store could not be read: {why}\n"));
    }
    out
}

/// `report`: gathers, renders and writes the report (or, for a dry run,
/// prints it and what would be written).
pub struct Job {
    pub store: Box<dyn Store>,
    /// Where the store is served over HTTP(S): the log and summary link the page there.
    pub public_url: Option<String>,
    pub dry_run: bool,
}

pub fn run(project: &Project, job: Job) -> Result<()> {
    let store = job.store;
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let mut report = gather(project, store.as_ref(), &now)?;
    let run = history_run(&report);
    let history = if job.dry_run || report.unreachable.is_some() {
        // Nothing is written; a store that could not be read gets no
        // guessed run in its history.
        let recorded = match store.get(HISTORY_KEY) {
            Ok(Some(bytes)) => serde_json::from_slice(&bytes).unwrap_or_default(),
            _ => History::default(),
        };
        with_run(recorded, run)
    } else {
        let mut updated = History::default();
        store.update(HISTORY_KEY, Some(store::SHORT_CACHE), &mut |current| {
            let recorded: History = match current {
                Some(bytes) => serde_json::from_slice(&bytes)
                    .with_context(|| format!("the store's {HISTORY_KEY} is not a history"))?,
                None => History::default(),
            };
            updated = with_run(recorded, run.clone());
            Ok(Some(serde_json::to_vec_pretty(&updated)?))
        })?;
        updated
    };
    attach_history(&mut report, &history);
    let html = page::render(&report);
    let json = serde_json::to_string_pretty(&report)? + "\n";
    let summary = text(&report);
    if job.dry_run {
        out!("{summary}");
        outln!(
            "dry run: would write {PAGE_KEY} ({} bytes), {JSON_KEY} ({} bytes) and add this run to {HISTORY_KEY} in {}",
            html.len(),
            json.len(),
            store.describe()
        );
        return Ok(());
    }
    for (key, bytes) in [(PAGE_KEY, html.as_bytes()), (JSON_KEY, json.as_bytes())] {
        store::put_bytes(store.as_ref(), key, bytes, Some(store::SHORT_CACHE))?;
    }
    out!("{summary}");
    let at = match &job.public_url {
        Some(url) => format!("{}/{PAGE_KEY}", url.trim_end_matches('/')),
        None => format!("{} ({PAGE_KEY})", store.describe()),
    };
    outln!("wrote the report for {} cells: {at}", report.cells.len());
    gha::append_summary(&format!(
        "### Build report\n\n{at}\n\n```text\n{summary}```\n"
    ))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 48 cells and a year of weekly runs, each cell with a package.
    fn a_year_of_48_cells() -> (Report, History) {
        let mut cells = Vec::new();
        for v in ["25.11", "24.11", "23.11", "deps"] {
            for t in [
                "resolute",
                "noble",
                "jammy",
                "rockylinux10",
                "rockylinux9",
                "rockylinux8",
            ] {
                for var in ["cpu", "gpu"] {
                    cells.push(CellReport {
                        id: format!("{v}/{t}/{var}"),
                        slurm: (v != "deps").then(|| v.to_string()),
                        toolchain: t.into(),
                        variant: var.into(),
                        state: State::Built,
                        stale: false,
                        reason: "up to date".into(),
                        changed: Vec::new(),
                        recorded_at: Some("2026-11-30T08:00:00Z".into()),
                        seconds: Some(4000),
                        verify: Some(VerifyRecord {
                            passed: true,
                            failed: Vec::new(),
                        }),
                        package: (v != "deps").then(|| PackageReport {
                            release: format!("slurm-{v}.6-2026.11.30"),
                            tarball: format!("slurm-{v}-{t}-{var}-x86_64.tar.gz"),
                            size: 300 << 20,
                            sha256: Some("ab".repeat(32)),
                            parts: 0,
                            links: vec![("tarball".into(), "releases/x".into())],
                        }),
                        size_history: Vec::new(),
                    });
                }
            }
        }
        let mut history = History::default();
        for week in 0..52u64 {
            let run = HistoryRun {
                time: format!("2026-W{week:02}"),
                cells: cells
                    .iter()
                    .map(|c| {
                        let cell = HistoryCell {
                            state: "built".into(),
                            size: Some((300 << 20) + week * 4096),
                        };
                        (c.id.clone(), cell)
                    })
                    .collect(),
            };
            history = with_run(history, run);
        }
        let report = Report {
            generated: "2026-12-03T08:00:00Z".into(),
            store: "s3://bucket".into(),
            unreachable: None,
            slurm_versions: vec!["25.11".into(), "24.11".into(), "23.11".into()],
            toolchains: cells[..12]
                .iter()
                .step_by(2)
                .map(|c| c.toolchain.clone())
                .collect(),
            cells,
            history_runs: 0,
        };
        (report, history)
    }

    #[test]
    fn rendering_48_cells_with_a_year_of_history() {
        let (mut report, history) = a_year_of_48_cells();
        let start = std::time::Instant::now();
        attach_history(&mut report, &history);
        let html = page::render(&report);
        let json = serde_json::to_string_pretty(&report).unwrap();
        let took = start.elapsed();
        assert_eq!(report.cells.len(), 48);
        assert_eq!(html.matches("<polyline").count(), 36);
        assert!(html.contains("52 runs"));
        eprintln!(
            "rendered 48 cells with 52 weekly runs in {:.2} ms ({} bytes of HTML, {} of JSON)",
            took.as_secs_f64() * 1e3,
            html.len(),
            json.len()
        );
    }

    #[test]
    fn the_history_keeps_one_run_per_time_and_at_most_ten_years() {
        let run = |t: &str| HistoryRun {
            time: t.into(),
            cells: BTreeMap::new(),
        };
        let mut h = History::default();
        for i in 0..600 {
            h = with_run(h, run(&format!("{i:04}")));
        }
        h = with_run(h, run("0599"));
        assert_eq!(h.runs.len(), HISTORY_RUNS);
        assert_eq!(h.runs[0].time, "0080");
        assert_eq!(h.runs.last().unwrap().time, "0599");
    }
}
