//! `cargo xtask report`: the build dashboard, rendered against a local store
//! holding a mix of states (built, failed verify, stale, never built, split)
//! and checked in real headless Chromium: every cell is there, the failed
//! check and the changed input are named, every link resolves to a file of
//! the store, and no request leaves the page's origin.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::dist::{Dist, noise};
use crate::support::{Project, StaticServer, fixtures, repo_root, xtask};
use serde_json::{Value, json};

/// A store as a week of builds leaves it.
struct Store {
    d: Dist,
}

impl Store {
    fn root(&self) -> PathBuf {
        self.d.store()
    }
}

fn fill(view: &Path) {
    std::fs::create_dir_all(view.join("bin")).unwrap();
    std::fs::write(view.join("bin/scontrol"), noise(400_000, 11)).unwrap();
}

/// `plan --json`'s fingerprint of every Slurm cell, by id.
fn fingerprints(store: &Path) -> Vec<(String, String, String, Value)> {
    let out = xtask(&[
        "plan",
        "--stage",
        "slurm",
        "--json",
        "--store-dir",
        store.to_str().unwrap(),
    ])
    .success();
    let plan: Value = serde_json::from_str(&out.stdout).unwrap();
    plan["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["version"].as_str().unwrap().to_string(),
                c["toolchain"].as_str().unwrap().to_string(),
                c["variant"].as_str().unwrap().to_string(),
                c["fingerprint"].clone(),
            )
        })
        .collect()
}

fn record(store: &Path, version: &str, toolchain: &str, cells: Value) {
    let path = store.join(format!("{toolchain}/slurm/{version}/state.json"));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(
        path,
        serde_json::to_string_pretty(&json!({ "cells": cells })).unwrap(),
    )
    .unwrap();
}

fn mixed_store() -> Store {
    // Built and published: 24.11 on jammy (cpu), and 25.11 on noble (cpu),
    // split into parts.
    let d = Dist::new("Releaser", fill, None);
    d.publish_local(&[]).success();
    let split_view = d.dir.path().join("view-noble");
    let split_out = d.dir.path().join("dist-noble");
    fill(&split_view);
    std::fs::write(split_view.join("bin/sinfo"), noise(300_000, 12)).unwrap();
    crate::support::package(
        &repo_root(),
        &split_view,
        &fixtures().join("spack-concretized-slurm-env/spack.lock"),
        ("25.11", "noble"),
        &split_out,
        &["--split-size", "150k"],
    )
    .env("SLURM_FACTORY_GPG_PRIVATE_KEY", &d.key.secret_armored)
    .success();
    crate::support::dist::publish_local(&Project::repo(), &split_out, &d.store(), &[]).success();
    let store = d.store();
    let fp = |v: &str, t: &str, var: &str| {
        fingerprints(&store)
            .into_iter()
            .find(|c| (c.0.as_str(), c.1.as_str(), c.2.as_str()) == (v, t, var))
            .unwrap()
            .3
    };
    let passed = json!({"passed": true});
    // 24.11/jammy: cpu built and verified; gpu built from an older recipe.
    let mut old = fp("24.11", "jammy", "gpu");
    old["inputs"]["recipes"] = json!("0".repeat(64));
    old["value"] = json!("0123456789abcdef0123456789abcdef");
    record(
        &store,
        "24.11",
        "jammy",
        json!({
            "cpu": {"fingerprint": fp("24.11", "jammy", "cpu"), "status": "built",
                    "time": "2026-11-30T08:00:00Z", "seconds": 3725, "verify": passed},
            "gpu": {"fingerprint": old, "status": "built", "time": "2026-11-23T08:00:00Z",
                    "seconds": 4100, "verify": passed},
        }),
    );
    // 25.11/noble: cpu built (split); gpu failed its verify.
    record(
        &store,
        "25.11",
        "noble",
        json!({
            "cpu": {"fingerprint": fp("25.11", "noble", "cpu"), "status": "built",
                    "time": "2026-11-30T08:00:00Z", "seconds": 5400, "verify": passed},
            "gpu": {"fingerprint": fp("25.11", "noble", "gpu"), "status": "failed",
                    "time": "2026-11-30T09:00:00Z", "seconds": 6000,
                    "verify": {"passed": false, "failed": ["relocatable", "gpu-plugins"]}},
        }),
    );
    // A year of weekly history for 24.11/jammy/cpu at about 200 kB; this
    // run's package is twice that, a jump the page must name.
    let runs: Vec<Value> = (0..52)
        .map(|w| {
            let size = 200_000 + w * 100;
            let time = std::time::UNIX_EPOCH
                + std::time::Duration::from_secs(1_733_040_000 + w * 7 * 86_400);
            json!({"time": humantime::format_rfc3339_seconds(time).to_string(),
                   "cells": {"24.11/jammy/cpu": {"state": "built", "size": size}}})
        })
        .collect();
    std::fs::create_dir_all(store.join("reports")).unwrap();
    std::fs::write(
        store.join("reports/history.json"),
        serde_json::to_string(&json!({ "runs": runs })).unwrap(),
    )
    .unwrap();
    Store { d }
}

/// Debian's Chromium, headless, as root, with nothing reaching out on its own.
fn chromium(profile: &Path, args: &[&str]) -> String {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-features=MediaRouter,OptimizationHints",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .unwrap_or_else(|_| crate::support::missing("chromium"));
    assert!(
        out.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The text inside the element with this id (tags dropped).
fn element_text(dom: &str, id: &str) -> String {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no element {id}"));
    let start = dom[at..].find('>').unwrap() + at + 1;
    let end = dom[start..].find("</td>").unwrap() + start;
    let mut text = String::new();
    let mut in_tag = false;
    for c in dom[start..end].chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    text
}

/// The URLs the page itself requested, from Chromium's net log: requests
/// with an initiator (the page's origin, `null` from a file). The browser's
/// own background requests carry "not an origin" and are not the page's.
fn page_requests(netlog: &Path) -> Vec<String> {
    let log: Value = serde_json::from_slice(&std::fs::read(netlog).unwrap()).unwrap();
    let start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"].clone();
    log["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == start)
        .filter(|e| {
            e["params"]["initiator"]
                .as_str()
                .is_some_and(|i| i != "not an origin")
        })
        .map(|e| e["params"]["url"].as_str().unwrap().to_string())
        .collect()
}

fn hrefs(dom: &str) -> Vec<String> {
    dom.split("href=\"")
        .skip(1)
        .map(|rest| rest[..rest.find('"').unwrap()].replace("&amp;", "&"))
        .collect()
}

#[test]
fn the_report_shows_every_cell_honestly_in_a_real_browser() {
    let s = mixed_store();
    let store = s.root();
    let done = xtask(&["report", "--store-dir", store.to_str().unwrap()]).success();
    // The text version names the same states.
    assert!(
        done.stdout
            .contains("failed (verify failed: relocatable, gpu-plugins)"),
        "{}",
        done.stdout
    );
    let page = store.join("reports/index.html");
    let json: Value =
        serde_json::from_slice(&std::fs::read(store.join("reports/report.json")).unwrap()).unwrap();
    assert_eq!(json["cells"].as_array().unwrap().len(), 48);

    let profile = tempfile::tempdir().unwrap();
    let netlog = profile.path().join("net.json");
    let dom = chromium(
        &profile.path().join("p1"),
        &[
            &format!("--log-net-log={}", netlog.display()),
            "--dump-dom",
            &format!("file://{}", page.display()),
        ],
    );
    // Every cell of the matrix: 3 Slurm versions x 6 toolchains x 2
    // variants, and each toolchain's deps in both variants.
    let matrix: Value =
        serde_json::from_str(&xtask(&["matrix", "--json"]).success().stdout).unwrap();
    let cells = matrix.as_array().unwrap();
    assert_eq!(cells.len(), 36);
    for c in cells {
        for id in [
            format!(
                "{}/{}/{}",
                c["version"].as_str().unwrap(),
                c["toolchain"].as_str().unwrap(),
                c["variant"].as_str().unwrap()
            ),
            format!(
                "deps/{}/{}",
                c["toolchain"].as_str().unwrap(),
                c["variant"].as_str().unwrap()
            ),
        ] {
            assert!(dom.contains(&format!("id=\"cell-{id}\"")), "no cell {id}");
        }
    }
    assert_eq!(element_text(&dom, "cell-24.11/jammy/cpu"), "built");
    let failed = element_text(&dom, "cell-25.11/noble/gpu");
    assert!(
        failed.starts_with("failed")
            && failed.contains("relocatable")
            && failed.contains("gpu-plugins"),
        "{failed}"
    );
    let stale = element_text(&dom, "cell-24.11/jammy/gpu");
    assert!(stale.contains("stale: inputs changed: recipes"), "{stale}");
    let never = element_text(&dom, "cell-23.11/rockylinux8/cpu");
    assert!(
        never.contains("never built") && never.contains("no record"),
        "{never}"
    );
    // The split package: its parts, each a link.
    let split = json["cells"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "25.11/noble/cpu")
        .unwrap();
    let parts = split["package"]["parts"].as_u64().unwrap();
    assert!(parts > 1, "{split}");
    assert!(
        dom.contains(&format!(" in {parts} parts</td>")),
        "split package"
    );
    // The jump in last week's size is named.
    assert!(dom.contains("since the run before"), "the size jump");
    // Every link resolves to a file of the store, relative to the page.
    let links = hrefs(&dom);
    assert!(links.len() >= 10, "{links:?}");
    for link in &links {
        assert!(!link.contains("://"), "{link} leaves the store");
        let target = store.join("reports").join(link);
        assert!(target.is_file(), "{link}: no {}", target.display());
    }
    for want in ["part 000", "signature", "manifest", "SBOM", "tarball"] {
        assert!(dom.contains(&format!(">{want}</a>")), "no {want} link");
    }
    // Opened from disk, the page requested nothing over the network.
    let requested = page_requests(&netlog);
    assert!(
        requested.iter().all(|u| u.starts_with("file://")),
        "{requested:?}"
    );
    // (The check sees a page's request when there is one.)
    let leaky = profile.path().join("leaky.html");
    std::fs::write(&leaky, "<img src=\"http://127.0.0.1:9/x.png\">").unwrap();
    let leak_log = profile.path().join("net-leaky.json");
    chromium(
        &profile.path().join("p0"),
        &[
            &format!("--log-net-log={}", leak_log.display()),
            "--dump-dom",
            &format!("file://{}", leaky.display()),
        ],
    );
    assert_eq!(page_requests(&leak_log), ["http://127.0.0.1:9/x.png"]);

    // Served over HTTP, as from S3 or a CDN: every request stays on its origin.
    let server = StaticServer::start(&store);
    let netlog = profile.path().join("net-http.json");
    let url = format!("{}/reports/index.html", server.url);
    let served = chromium(
        &profile.path().join("p2"),
        &[
            &format!("--log-net-log={}", netlog.display()),
            "--dump-dom",
            &url,
        ],
    );
    assert!(served.contains("id=\"cell-25.11/noble/gpu\""));
    for requested in page_requests(&netlog) {
        assert!(
            requested.starts_with(&server.url),
            "a request outside the page's origin: {requested}"
        );
    }

    // A screenshot for people.
    let shot = repo_root().join("target/slurm-factory/report-screenshot.png");
    std::fs::create_dir_all(shot.parent().unwrap()).unwrap();
    chromium(
        &profile.path().join("p3"),
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1400,2400",
            "--hide-scrollbars",
            &format!("file://{}", page.display()),
        ],
    );
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);
    eprintln!("report screenshot: {}", shot.display());
}

#[test]
fn each_run_adds_to_the_history_and_a_rerun_replaces_nothing_twice() {
    let d = Dist::new("Releaser", fill, None);
    d.publish_local(&[]).success();
    let store = d.store();
    let dir = store.to_str().unwrap();
    xtask(&["report", "--store-dir", dir]).success();
    let history = || -> Value {
        serde_json::from_slice(&std::fs::read(store.join("reports/history.json")).unwrap()).unwrap()
    };
    let first = history();
    assert_eq!(first["runs"].as_array().unwrap().len(), 1);
    let run = &first["runs"][0]["cells"];
    assert_eq!(run["24.11/jammy/cpu"]["state"], "never built");
    assert!(run["24.11/jammy/cpu"]["size"].as_u64().unwrap() > 0);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    xtask(&["report", "--store-dir", dir]).success();
    assert_eq!(history()["runs"].as_array().unwrap().len(), 2);
    // A dry run writes nothing.
    let dry = xtask(&["report", "--store-dir", dir, "--dry-run"]).success();
    assert!(
        dry.stdout
            .contains("dry run: would write reports/index.html")
    );
    assert_eq!(history()["runs"].as_array().unwrap().len(), 2);
}
