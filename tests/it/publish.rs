//! `cargo xtask publish`: packages made by `package` go to a store in a safe
//! order; a rerun uploads nothing; a corrupt or unsigned package never leaves.

use std::path::Path;

use crate::support::dist::{Dist, STEM, noise};
use crate::support::gpg::TestKey;
use crate::support::{Project, xtask};
use sha2::{Digest, Sha256};

/// The Slurm release the fixture's packages are built from (its manifest's
/// `cell.spack_version`, `24-11-6-1`).
const VERSION: &str = "24.11.6";

/// A signed package of a small view, split into parts when `split` is set.
fn dist(split: Option<&str>) -> Dist {
    Dist::new(
        "Publisher",
        |view| {
            std::fs::create_dir_all(view.join("bin")).unwrap();
            std::fs::write(
                view.join("bin/scontrol"),
                noise(200_000, 0x9e37_79b9_7f4a_7c15),
            )
            .unwrap();
        },
        split,
    )
}

fn publish_local(d: &Dist, extra: &[&str]) -> crate::support::Done {
    d.publish_local(extra).success()
}

/// A publish to a store that found nothing new since release `tag`: no new
/// release, no upload, the index left as it was; `already` files (the public
/// key, the admins' executable) were found in the store with the same SHA-256.
fn assert_nothing_uploaded(done: &crate::support::Done, tag: &str, already: usize) {
    assert!(
        done.stdout
            .contains(&format!("Slurm 24.11: nothing new since release {tag} (")),
        "{}",
        done.stdout
    );
    assert!(
        lines_with(&done.stdout, "put ").is_empty(),
        "{}",
        done.stdout
    );
    assert!(
        done.stdout.contains("skip releases/index.json (unchanged)"),
        "{}",
        done.stdout
    );
    assert!(
        done.stdout
            .contains(&format!("0 uploaded (0.0 MiB), {already} already there")),
        "{}",
        done.stdout
    );
}

fn lines_with<'a>(out: &'a str, prefix: &str) -> Vec<&'a str> {
    out.lines().filter(|l| l.starts_with(prefix)).collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn parse_index(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap()
}

/// The local store's `releases/index.json`.
fn local_index(d: &Dist) -> serde_json::Value {
    parse_index(&std::fs::read(d.store().join("releases/index.json")).unwrap())
}

/// A release tag's build, to order releases of one series: its day and its
/// number within the day (1 without a suffix).
fn build_of(tag: &str) -> (String, u32) {
    let build = tag
        .strip_prefix(&format!("slurm-{VERSION}-"))
        .unwrap_or_else(|| panic!("{tag} is not a release of Slurm {VERSION}"));
    let parts: Vec<&str> = build.split('.').collect();
    match parts.as_slice() {
        [y, m, d] => (format!("{y}.{m}.{d}"), 1),
        [y, m, d, n] => (format!("{y}.{m}.{d}"), n.parse().unwrap()),
        _ => panic!("{tag}: not slurm-<version>-<YYYY.MM.DD>[.<n>]"),
    }
}

/// The tags of the index's releases, newest first.
fn tags_newest_first(index: &serde_json::Value) -> Vec<String> {
    let mut tags: Vec<String> = index["releases"]
        .as_object()
        .unwrap_or_else(|| panic!("no releases in {index}"))
        .keys()
        .cloned()
        .collect();
    tags.sort_by_key(|t| std::cmp::Reverse(build_of(t)));
    tags
}

/// The index's one release.
fn only_tag(index: &serde_json::Value) -> String {
    let tags = tags_newest_first(index);
    assert_eq!(tags.len(), 1, "one release: {index}");
    tags[0].clone()
}

/// The release a publish announced (`release <tag>: new or changed: …`).
fn announced(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("release ")?.split_once(": new or changed: "))
        .map(|(tag, _)| tag.to_string())
        .unwrap_or_else(|| panic!("no new release announced:\n{stdout}"))
}

/// Today in UTC, as a tag gives it: `YYYY.MM.DD`.
fn utc_day() -> String {
    crate::support::sh(std::process::Command::new("date").args(["-u", "+%Y.%m.%d"]))
        .trim()
        .to_string()
}

/// `tag` is the first release of the series dated the day the publish ran
/// (`day_before` was read just before it; the day may have turned since).
fn assert_first_of_the_day(tag: &str, day_before: &str) {
    let days = [day_before.to_string(), utc_day()];
    assert!(
        days.iter().any(|d| tag == format!("slurm-{VERSION}-{d}")),
        "{tag}: not the first release of {days:?}"
    );
}

#[test]
fn data_first_index_last_and_a_rerun_uploads_nothing() {
    let d = dist(None);
    let day = utc_day();
    let first = publish_local(&d, &[]);
    let index = local_index(&d);
    let tag = only_tag(&index);
    assert_first_of_the_day(&tag, &day);
    assert!(
        first
            .stdout
            .contains(&format!("release {tag}: new or changed: {STEM}\n")),
        "{}",
        first.stdout
    );
    let puts: Vec<&str> = lines_with(&first.stdout, "put ");
    let pos = |needle: &str| {
        puts.iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle}: {puts:?}"))
    };
    assert!(pos(".tar.gz (") < pos(".tar.gz.sha256"));
    assert!(pos(".tar.gz.asc") < pos(".manifest.json"));
    assert!(pos(".manifest.json") < pos("keys/slurm-factory-signing-key.asc"));
    assert_eq!(puts.last().unwrap().trim(), "put  releases/index.json");
    // The package's files go to its release's own directory, flat.
    let dir = format!("releases/{tag}");
    for put in &puts {
        assert!(
            put.starts_with(&format!("put  {dir}/{STEM}."))
                || put.starts_with("put  keys/slurm-factory-signing-key.asc (")
                || *put == "put  releases/index.json",
            "{put}"
        );
    }
    let rel = d.store().join(&dir);
    for f in [
        "slurm-24.11-jammy-cpu-x86_64.tar.gz",
        "slurm-24.11-jammy-cpu-x86_64.tar.gz.asc",
        "slurm-24.11-jammy-cpu-x86_64.manifest.json",
    ] {
        assert_eq!(
            std::fs::read(rel.join(f)).unwrap(),
            std::fs::read(d.out().join(f)).unwrap(),
            "{f}"
        );
    }
    // The index names the release, its Slurm, its key and every file.
    let release = &index["releases"][&tag];
    assert_eq!(release["slurm"], "24.11", "{index}");
    assert_eq!(release["version"], VERSION, "{index}");
    let key = std::fs::read(d.out().join("slurm-factory-signing-key.asc")).unwrap();
    assert_eq!(release["key_sha256"], sha256_hex(&key).as_str(), "{index}");
    let package = &release["packages"][STEM];
    assert_eq!(package["dir"], dir.as_str(), "{index}");
    let files = package["files"].as_object().unwrap();
    assert_eq!(files.len(), 7, "{index}");
    for (name, size_sha) in files {
        let bytes = std::fs::read(rel.join(name)).unwrap();
        assert_eq!(size_sha[0], bytes.len() as u64, "{name}");
        assert_eq!(size_sha[1], sha256_hex(&bytes).as_str(), "{name}");
    }
    let index_bytes = std::fs::read(d.store().join("releases/index.json")).unwrap();
    let second = publish_local(&d, &[]);
    assert_nothing_uploaded(&second, &tag, 1);
    assert_eq!(
        std::fs::read(d.store().join("releases/index.json")).unwrap(),
        index_bytes
    );
}

#[test]
fn parts_are_published_each_with_its_checksum() {
    let d = dist(Some("64K"));
    publish_local(&d, &[]);
    let index = local_index(&d);
    let tag = only_tag(&index);
    let rel = d.store().join("releases").join(&tag);
    assert!(
        rel.join("slurm-24.11-jammy-cpu-x86_64.tar.gz.part-000")
            .is_file()
    );
    assert!(
        rel.join("slurm-24.11-jammy-cpu-x86_64.tar.gz.part-000.sha256")
            .is_file()
    );
    let files = &index["releases"][&tag]["packages"][STEM]["files"];
    assert!(
        files
            .get("slurm-24.11-jammy-cpu-x86_64.tar.gz.part-001")
            .is_some(),
        "{index}"
    );
}

#[test]
fn a_corrupt_package_is_refused_and_nothing_is_uploaded() {
    let d = dist(None);
    let tarball = d.out().join("slurm-24.11-jammy-cpu-x86_64.tar.gz");
    let mut bytes = std::fs::read(&tarball).unwrap();
    bytes[1000] ^= 0xff;
    std::fs::write(&tarball, bytes).unwrap();
    let done = d.publish_local(&[]).failure();
    assert!(
        done.stderr
            .contains("slurm-24.11-jammy-cpu-x86_64.tar.gz does not match"),
        "{}",
        done.stderr
    );
    // The tag stays claimed for these files (a rerun with them reuses it);
    // nothing else is there, and no release.
    let stored: Vec<String> = walkdir::WalkDir::new(d.store())
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let rel = e.path().strip_prefix(d.store()).unwrap();
            rel.to_string_lossy().into_owned()
        })
        .filter(|k| k != ".lock" && !is_claim(k))
        .collect();
    assert!(stored.is_empty(), "nothing was uploaded: {stored:?}");
}

/// A release tag's claim (`releases/<tag>/claim.json`): taken before any
/// upload, so a failed publish leaves it, and no package file.
fn is_claim(key: &str) -> bool {
    key.strip_prefix("releases/")
        .and_then(|k| k.strip_suffix("/claim.json"))
        .is_some_and(|tag| !tag.contains('/'))
}

#[test]
fn an_unsigned_package_is_refused() {
    let d = dist(None);
    std::fs::remove_file(d.out().join("slurm-24.11-jammy-cpu-x86_64.tar.gz.asc")).unwrap();
    let done = d.publish_local(&[]).failure();
    assert!(
        done.stderr
            .contains(".tar.gz.asc is missing: unsigned packages are not published (--allow-unsigned for a local test store)"),
        "{}",
        done.stderr
    );
    assert!(!d.store().exists());
}

#[test]
fn dry_run_lists_and_uploads_nothing() {
    let d = dist(None);
    let day = utc_day();
    let done = publish_local(&d, &["--dry-run"]);
    let tag = announced(&done.stdout);
    assert_first_of_the_day(&tag, &day);
    assert!(
        done.stdout.contains(&format!(
            "-> releases/{tag}/slurm-24.11-jammy-cpu-x86_64.tar.gz ("
        )),
        "{}",
        done.stdout
    );
    assert!(
        done.stdout.contains("dry run: 8 uploaded"),
        "{}",
        done.stdout
    );
    assert!(!Path::new(&d.store()).exists());
}

#[test]
fn s3_without_a_bucket_is_a_usage_error() {
    let d = dist(None);
    let done = xtask(&["publish", "--to", "s3", "--dir", d.out().to_str().unwrap()])
        .env_remove("SLURM_FACTORY_BUCKET")
        .env_remove("SLURM_FACTORY_BUCKET_PREFIX")
        .code(2);
    assert!(
        done.stderr.contains("--to s3 needs --bucket NAME"),
        "{}",
        done.stderr
    );
}

// ---------------------------------------------------------------------------
// GitHub Releases, through octocrab, against the stateful fake in tests/it/support/github.rs.

use crate::support::github::GitHubServer;

fn publish_github(d: &Dist, gh: &GitHubServer) -> crate::support::Run {
    d.publish_github(gh)
}

const ASSETS: [&str; 8] = [
    "slurm-24.11-jammy-cpu-x86_64.tar.gz",
    "slurm-24.11-jammy-cpu-x86_64.tar.gz.sha256",
    "slurm-24.11-jammy-cpu-x86_64.tar.gz.asc",
    "slurm-24.11-jammy-cpu-x86_64.manifest.json",
    "slurm-24.11-jammy-cpu-x86_64.spdx.json",
    "slurm-factory-signing-key.asc",
    "slurm-24.11-jammy-cpu-x86_64.sizes.json",
    "slurm-24.11-jammy-cpu-x86_64.sizes.json.asc",
];

#[test]
fn github_release_is_published_once_with_every_asset() {
    let d = dist(None);
    let gh = GitHubServer::start();
    let day = utc_day();
    let done = publish_github(&d, &gh).success();
    // The fake's repository is not the one the matrix names: said, not silent.
    assert!(
        done.stderr.contains(
            "warning: publishing to owner/repo, not to vantagecompute/slurm-factory (releases.github in spack-env/matrix.yaml)"
        ),
        "{}",
        done.stderr
    );
    let releases = gh.releases();
    assert_eq!(releases.len(), 1);
    let r = &releases[0];
    let tag = r.tag_name.clone();
    assert_first_of_the_day(&tag, &day);
    assert!(
        done.stdout.contains(&format!(
            "release {tag}: 8 uploaded, 0 carried over, 0 already there, published at"
        )),
        "{}",
        done.stdout
    );
    assert_eq!(
        r.name.as_deref(),
        Some(format!("Slurm {VERSION} (build {tag})").as_str())
    );
    assert!(!r.draft);
    let mut names: Vec<&str> = r.assets.iter().map(|a| a.name.as_str()).collect();
    names.sort();
    let mut expected = ASSETS.to_vec();
    expected.sort();
    assert_eq!(names, expected);
    for name in ASSETS {
        let on_disk = std::fs::read(d.out().join(name)).unwrap();
        assert_eq!(r.asset(name).unwrap().bytes, on_disk, "{name}");
    }
    // The notes list every asset with its SHA-256 and how to verify.
    let body = r.body.clone().unwrap();
    let tar_sha = std::fs::read_to_string(d.out().join(ASSETS[1])).unwrap();
    assert!(
        body.contains(tar_sha.split_whitespace().next().unwrap()),
        "{body}"
    );
    assert!(
        body.contains("gpg --verify NAME.asc NAME") && body.contains("sha256sum -c NAME.sha256"),
        "{body}"
    );

    // A second publish finds nothing new: no release, nothing uploaded.
    let uploads_before = gh.upload_requests().len();
    let again = publish_github(&d, &gh).success();
    assert!(
        again
            .stdout
            .contains(&format!("Slurm 24.11: nothing new since release {tag} (")),
        "{}",
        again.stdout
    );
    assert_eq!(gh.upload_requests().len(), uploads_before);
    assert_eq!(gh.releases(), releases, "the release is unchanged");
}

/// The only release on the fake GitHub, draft or not.
fn only_release(gh: &GitHubServer) -> crate::support::github::ReleaseState {
    let mut releases = gh.releases();
    assert_eq!(releases.len(), 1, "{releases:?}");
    releases.remove(0)
}

#[test]
fn a_failed_publish_stays_a_draft_and_a_rerun_completes_it() {
    let d = dist(None);
    let gh = GitHubServer::start();
    // More server errors than any retry budget: the first run fails midway.
    gh.fail_next_uploads(50, 503);
    let first = publish_github(&d, &gh).failure();
    assert!(
        first
            .stderr
            .contains("uploading slurm-24.11-jammy-cpu-x86_64.tar.gz"),
        "{}",
        first.stderr
    );
    let draft = only_release(&gh);
    assert!(
        draft.draft,
        "nothing is visible as published while assets are missing"
    );
    gh.clear_faults();
    let rerun = publish_github(&d, &gh).success();
    // The draft is completed, not a second release made.
    let r = only_release(&gh);
    assert_eq!((r.id, &r.tag_name), (draft.id, &draft.tag_name));
    assert!(
        rerun
            .stdout
            .contains(&format!("release {}: ", draft.tag_name)),
        "{}",
        rerun.stdout
    );
    assert!(!r.draft);
    assert_eq!(r.assets.len(), 8, "one copy of each asset");
    assert!(r.assets.iter().all(|a| a.state == "uploaded"));
}

#[test]
fn a_broken_upload_is_cleaned_up_and_changed_content_is_a_new_release() {
    let d = dist(None);
    let gh = GitHubServer::start();
    gh.break_next_upload();
    publish_github(&d, &gh).success();
    let old = only_release(&gh);
    assert!(!old.draft);
    assert_eq!(old.assets.len(), 8);
    assert!(
        old.assets.iter().all(|a| a.state == "uploaded"),
        "no starter asset is left"
    );
    for name in ASSETS {
        let on_disk = std::fs::read(d.out().join(name)).unwrap();
        assert_eq!(old.asset(name).unwrap().bytes, on_disk, "{name}");
    }
    // Changed content (other tarball bytes) is a new release; the published
    // one never changes.
    std::fs::write(d.view().join("bin/sinfo"), noise(1000, 3)).unwrap();
    d.repackage(None);
    let tarball = std::fs::read(d.out().join(ASSETS[0])).unwrap();
    assert_ne!(tarball, old.asset(ASSETS[0]).unwrap().bytes);
    let done = publish_github(&d, &gh).success();
    let releases = gh.releases();
    assert_eq!(releases.len(), 2, "{releases:?}");
    let (new, was) = (&releases[0], &releases[1]);
    assert_ne!(new.tag_name, old.tag_name);
    assert_eq!(was, &old, "the older release is untouched, byte for byte");
    assert!(
        done.stdout.contains(&format!(
            "release {}: 8 uploaded, 0 carried over, 0 already there, published at",
            new.tag_name
        )),
        "{}",
        done.stdout
    );
    assert!(!new.draft);
    assert_eq!(new.assets.len(), 8);
    assert!(new.assets.iter().all(|a| a.state == "uploaded"));
    for name in ASSETS {
        let on_disk = std::fs::read(d.out().join(name)).unwrap();
        assert_eq!(new.asset(name).unwrap().bytes, on_disk, "{name}");
    }
}

#[test]
fn github_a_corrupt_tarball_is_never_an_asset() {
    let d = dist(None);
    let tarball = d.out().join(ASSETS[0]);
    let mut bytes = std::fs::read(&tarball).unwrap();
    bytes[500] ^= 0xff;
    std::fs::write(&tarball, bytes).unwrap();
    let gh = GitHubServer::start();
    let done = publish_github(&d, &gh).failure();
    assert!(
        done.stderr.contains("does not match its checksum"),
        "{}",
        done.stderr
    );
    // The upload ends in an error instead of its last piece. GitHub may
    // keep such an upload as an empty "starter" asset: the toolkit deletes
    // the ones it sees at once, but one may appear after it looked (the
    // client gave up before the server got to the request; the fake is as
    // late under load). It holds no bytes, keeps the release a draft, and
    // the next attempt on that draft replaces it.
    for r in gh.releases() {
        assert!(r.draft, "nothing is published");
        assert!(
            r.assets
                .iter()
                .filter(|a| a.name == ASSETS[0])
                .all(|a| a.state == "starter" && a.bytes.is_empty()),
            "no tarball asset: {:?}",
            r.assets
                .iter()
                .map(|a| (&a.name, &a.state, a.bytes.len()))
                .collect::<Vec<_>>()
        );
    }
}

#[test]
fn github_needs_a_token() {
    let d = dist(None);
    let done = xtask(&[
        "publish",
        "--to",
        "github",
        "--dir",
        d.out().to_str().unwrap(),
    ])
    .env_remove("GITHUB_TOKEN")
    .env("GITHUB_REPOSITORY", "owner/repo")
    .failure();
    assert!(
        done.stderr.contains("GITHUB_TOKEN is not set"),
        "{}",
        done.stderr
    );
}

// ---------------------------------------------------------------------------
// S3, through aws-sdk-s3, against a real S3 server on loopback (s3s-fs, SigV4).

use crate::support::s3::{FaultProxy, Faults, S3Server};

/// A package big enough for a multipart upload (the tarball is over 16 MiB).
fn big_dist() -> Dist {
    let d = dist(None);
    std::fs::create_dir_all(d.view().join("lib")).unwrap();
    std::fs::write(
        d.view().join("lib/libbig.so"),
        noise(20 << 20, 0x2545_f491_4f6c_dd1d),
    )
    .unwrap();
    d.repackage(None);
    d
}

const TARBALL: &str = "slurm-24.11-jammy-cpu-x86_64.tar.gz";

/// The bucket's one release (from its index), and the key of its tarball.
fn s3_release(s3: &S3Server) -> (String, String) {
    let index = parse_index(&s3.object("releases/index.json").expect("an index"));
    let tag = only_tag(&index);
    let key = format!("releases/{tag}/{TARBALL}");
    (tag, key)
}

/// No object of the bucket is a package's file.
fn assert_no_package_file(s3: &S3Server) {
    let keys = s3.keys();
    assert!(
        keys.iter()
            .all(|k| (!k.starts_with("releases/") || is_claim(k)) && !k.contains(STEM)),
        "{keys:?}"
    );
}

#[test]
fn s3_small_and_multipart_uploads_round_trip_and_a_rerun_uploads_nothing() {
    let d = big_dist();
    let s3 = S3Server::start();
    let first = d.publish_s3(s3.env(), &s3.bucket).success();
    assert!(first.stdout.contains("8 uploaded"), "{}", first.stdout);
    let (tag, tarball_key) = s3_release(&s3);
    let tarball = std::fs::read(d.out().join(TARBALL)).unwrap();
    assert!(tarball.len() > 16 << 20, "multipart needs more than 16 MiB");
    assert!(
        s3.object(&tarball_key).unwrap() == tarball,
        "byte-identical after a multipart upload"
    );
    for name in [
        "slurm-24.11-jammy-cpu-x86_64.tar.gz.asc",
        "slurm-24.11-jammy-cpu-x86_64.manifest.json",
    ] {
        let key = format!("releases/{tag}/{name}");
        assert_eq!(
            s3.object(&key).unwrap(),
            std::fs::read(d.out().join(name)).unwrap(),
            "{name}"
        );
    }
    assert!(s3.object("releases/index.json").is_some());
    assert!(s3.object("keys/slurm-factory-signing-key.asc").is_some());
    assert_eq!(s3.incomplete_uploads(), 0);
    let index = s3.object("releases/index.json").unwrap();
    let again = d.publish_s3(s3.env(), &s3.bucket).success();
    assert_nothing_uploaded(&again, &tag, 1);
    assert_eq!(s3.object("releases/index.json").unwrap(), index);
}

#[test]
fn s3_wrong_secret_fails_clearly() {
    let d = dist(None);
    let s3 = S3Server::start();
    let env: Vec<(&'static str, String)> = s3
        .env()
        .into_iter()
        .map(|(k, v)| {
            if k == "AWS_SECRET_ACCESS_KEY" {
                (k, "not-the-secret".to_string())
            } else {
                (k, v)
            }
        })
        .collect();
    let done = d.publish_s3(env, &s3.bucket).failure();
    assert!(
        done.stderr.contains("check the AWS credentials"),
        "{}",
        done.stderr
    );
    assert!(
        !done.stderr.contains("not-the-secret") && !done.stderr.contains(&s3.secret_key),
        "no secret in errors"
    );
    assert!(s3.keys().is_empty(), "{:?}", s3.keys());
}

#[test]
fn s3_errors_and_dropped_connections_are_retried() {
    let d = big_dist();
    let s3 = S3Server::start();
    let proxy = FaultProxy::start(
        &s3,
        Faults {
            error_every: 3,
            drop_every: 5,
            ..Faults::default()
        },
    );
    d.publish_s3(s3.env_with_endpoint(&proxy.endpoint), &s3.bucket)
        .success();
    assert!(
        proxy.errors() > 0 && proxy.drops() > 0,
        "the faults happened"
    );
    let tarball = std::fs::read(d.out().join(TARBALL)).unwrap();
    let (_, tarball_key) = s3_release(&s3);
    assert!(s3.object(&tarball_key).unwrap() == tarball);
    assert_eq!(s3.incomplete_uploads(), 0);
}

#[test]
fn s3_refusing_every_part_fails_clearly_and_leaves_no_incomplete_upload() {
    let d = big_dist();
    let s3 = S3Server::start();
    let proxy = FaultProxy::start(
        &s3,
        Faults {
            fail_matching: Some("partNumber="),
            ..Faults::default()
        },
    );
    let done = d
        .publish_s3(s3.env_with_endpoint(&proxy.endpoint), &s3.bucket)
        .failure();
    let tag = announced(&done.stdout);
    assert!(
        done.stderr.contains(&format!(
            "uploading s3://{}/releases/{tag}/{TARBALL}",
            s3.bucket
        )),
        "{}",
        done.stderr
    );
    assert_eq!(
        s3.incomplete_uploads(),
        0,
        "the multipart upload was aborted"
    );
    assert!(s3.object(&format!("releases/{tag}/{TARBALL}")).is_none());
    assert!(
        s3.object("releases/index.json").is_none(),
        "no index names a missing file"
    );
}

#[test]
fn s3_a_corrupt_multipart_upload_is_aborted_before_it_is_visible() {
    let d = big_dist();
    let tarball = d.out().join(TARBALL);
    let mut bytes = std::fs::read(&tarball).unwrap();
    let last = bytes.len() - 100;
    bytes[last] ^= 0xff;
    std::fs::write(&tarball, bytes).unwrap();
    let s3 = S3Server::start();
    let done = d.publish_s3(s3.env(), &s3.bucket).failure();
    assert!(
        done.stderr.contains("does not match its checksum"),
        "{}",
        done.stderr
    );
    assert_no_package_file(&s3);
    assert_eq!(
        s3.incomplete_uploads(),
        0,
        "the multipart upload was aborted"
    );
    assert!(s3.object("releases/index.json").is_none());
}

#[test]
fn public_url_is_checked_and_not_for_github() {
    let d = dist(None);
    let bad = d
        .publish_local(&["--public-url", "cdn.example.org"])
        .code(2);
    assert!(
        bad.stderr.contains("expected an http(s):// URL"),
        "{}",
        bad.stderr
    );
    let gh = xtask(&[
        "publish",
        "--to",
        "github",
        "--dir",
        d.out().to_str().unwrap(),
        "--public-url",
        "https://cdn.example.org",
    ])
    .code(2);
    assert!(
        gh.stderr.contains("GitHub releases have their own URLs"),
        "{}",
        gh.stderr
    );
}

const SIGNATURE: &str = "slurm-24.11-jammy-cpu-x86_64.tar.gz.asc";

/// Every object of the bucket, with its bytes' SHA-256.
fn s3_snapshot(s3: &S3Server) -> Vec<(String, String)> {
    s3.keys()
        .into_iter()
        .map(|k| {
            let sha = sha256_hex(&s3.object(&k).unwrap());
            (k, sha)
        })
        .collect()
}

#[test]
fn s3_a_repack_of_the_same_view_uploads_nothing() {
    let d = big_dist();
    let s3 = S3Server::start();
    d.publish_s3(s3.env(), &s3.bucket).success();
    let (tag, _) = s3_release(&s3);
    let tarball = d.out().join(TARBALL);
    let signature = d.out().join(SIGNATURE);
    let (bytes, first_signature) = (
        std::fs::read(&tarball).unwrap(),
        std::fs::read(&signature).unwrap(),
    );
    let before = s3_snapshot(&s3);
    // A signature records its time in seconds: the re-pack's is another one.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    d.repackage(None);
    assert!(
        std::fs::read(&tarball).unwrap() == bytes,
        "the re-pack is byte-identical"
    );
    assert_ne!(std::fs::read(&signature).unwrap(), first_signature);
    let again = d.publish_s3(s3.env(), &s3.bucket).success();
    // The same bytes: no new release, and the release keeps its files and
    // its signature.
    assert_nothing_uploaded(&again, &tag, 1);
    assert!(
        again
            .stdout
            .contains(&format!("rebuilt to the same bytes: {STEM}")),
        "{}",
        again.stdout
    );
    assert_eq!(
        s3.object(&format!("releases/{tag}/{SIGNATURE}")).unwrap(),
        first_signature
    );
    assert_eq!(s3_snapshot(&s3), before, "the bucket is unchanged");
}

/// Every file under `dir`, by path relative to it, with its bytes.
fn files_under(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let rel = e.path().strip_prefix(dir).unwrap();
            (
                rel.to_str().unwrap().to_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn the_same_bytes_signed_by_another_key_get_the_new_signature() {
    let first = dist(None);
    publish_local(&first, &[]);
    let old_index = local_index(&first);
    let old_tag = only_tag(&old_index);
    // The same view (same bytes), packaged with another key.
    let second = dist(None);
    let new_key = std::fs::read(&second.key.public_file).unwrap();
    assert_ne!(std::fs::read(&first.key.public_file).unwrap(), new_key);
    assert_eq!(
        std::fs::read(second.out().join(TARBALL)).unwrap(),
        std::fs::read(first.out().join(TARBALL)).unwrap(),
        "the same bytes"
    );
    crate::support::copy_tree(&first.store(), &second.store());
    let old_dir = second.store().join("releases").join(&old_tag);
    let old_files = files_under(&old_dir);
    let out = publish_local(&second, &[]);
    // Nothing is carried across keys: a new release with the new signature.
    let index = local_index(&second);
    let tags = tags_newest_first(&index);
    assert_eq!(tags.len(), 2, "{index}");
    let new_tag = &tags[0];
    assert_eq!(tags[1], old_tag);
    assert!(
        out.stdout
            .contains(&format!("release {new_tag}: new or changed: {STEM}\n")),
        "{}",
        out.stdout
    );
    let new_dir = format!("releases/{new_tag}");
    let puts = lines_with(&out.stdout, "put ");
    assert!(
        puts.iter()
            .any(|l| l.starts_with(&format!("put  {new_dir}/{SIGNATURE} ("))),
        "{}",
        out.stdout
    );
    assert_eq!(
        std::fs::read(second.store().join(&new_dir).join(SIGNATURE)).unwrap(),
        std::fs::read(second.out().join(SIGNATURE)).unwrap()
    );
    let release = &index["releases"][new_tag];
    assert_eq!(release["key_sha256"], sha256_hex(&new_key).as_str());
    assert_eq!(release["packages"][STEM]["dir"], new_dir.as_str());
    // The older release is untouched: its entry, its files, its signature.
    assert_eq!(
        index["releases"][&old_tag], old_index["releases"][&old_tag],
        "{index}"
    );
    assert_eq!(files_under(&old_dir), old_files);
    assert_eq!(
        std::fs::read(old_dir.join(SIGNATURE)).unwrap(),
        std::fs::read(first.out().join(SIGNATURE)).unwrap()
    );
}

#[test]
fn a_manifest_whose_cell_disagrees_with_its_name_is_refused() {
    let d = dist(None);
    d.publish_local(&[]).success();
    let index = std::fs::read(d.store().join("releases/index.json")).unwrap();
    let manifest = d.out().join("slurm-24.11-jammy-cpu-x86_64.manifest.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    assert!(text.contains("\"toolchain\": \"jammy\""), "{text}");
    std::fs::write(
        &manifest,
        text.replace("\"toolchain\": \"jammy\"", "\"toolchain\": \"noble\""),
    )
    .unwrap();
    let done = d.publish_local(&[]).failure();
    assert!(
        done.stderr
            .contains("is named slurm-24.11-noble-cpu-x86_64, not slurm-24.11-jammy-cpu-x86_64"),
        "{}",
        done.stderr
    );
    assert_eq!(
        std::fs::read(d.store().join("releases/index.json")).unwrap(),
        index
    );
    let noble: Vec<String> = files_under(&d.store())
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| name.contains("noble"))
        .collect();
    assert!(noble.is_empty(), "nothing of it was uploaded: {noble:?}");
}

/// Eight packages of one cell (one per arch name) of `d`'s view, each in its
/// own output directory.
fn eight_packages(d: &Dist) -> Vec<std::path::PathBuf> {
    let lock = crate::support::fixtures().join("spack-concretized-slurm-env/spack.lock");
    (0..8)
        .map(|i| {
            let out = d.dir.path().join(format!("dist-{i}"));
            let arch = format!("arch{i}");
            crate::support::package(
                &crate::support::repo_root(),
                &d.view(),
                &lock,
                ("24.11", "jammy"),
                &out,
                &["--arch", &arch],
            )
            .env("SLURM_FACTORY_GPG_PRIVATE_KEY", &d.key.secret_armored)
            .success();
            out
        })
        .collect()
}

/// `publish --dir OUT extra…` with `env`.
fn publish_one(out: &Path, extra: &[&str], env: &[(&'static str, String)]) -> crate::support::Done {
    let mut args = vec!["publish", "--dir", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    let mut run = xtask(&args);
    for (k, v) in env {
        run = run.env(k, v);
    }
    run.output()
}

/// Runs `publish --dir OUT extra…` for every output directory at once. Each
/// makes a release of the same series: one that finds another run's release
/// made meanwhile fails, saying so, and is run again (alone) until it is
/// published. Returns how many releases the runs made.
fn publish_all_at_once(
    outs: &[std::path::PathBuf],
    extra: &[&str],
    env: Vec<(&'static str, String)>,
) -> usize {
    let runs: Vec<_> = outs
        .iter()
        .map(|out| {
            let out = out.clone();
            let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
            let env = env.clone();
            std::thread::spawn(move || {
                let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
                publish_one(&out, &extra, &env)
            })
        })
        .collect();
    let mut made = 0;
    for (out, run) in outs.iter().zip(runs) {
        let mut done = run.join().unwrap();
        for attempt in 1.. {
            if done.code == Some(0) {
                break;
            }
            assert!(attempt <= outs.len(), "{}", done.stderr);
            assert!(
                done.stderr
                    .contains("was published meanwhile by another run, with other packages than")
                    && done.stderr.contains("publish again"),
                "only a lost race for the next release fails: {}",
                done.stderr
            );
            done = publish_one(out, extra, &env);
        }
        assert!(done.stdout.contains("new or changed: "), "{}", done.stdout);
        made += 1;
    }
    made
}

/// The store's index after the eight packages were published (`read` gives
/// an object of the store): every release names only files the store holds
/// with those bytes, the newest holds all eight packages, each in the
/// release that first published it, and every run made one release.
fn assert_nothing_lost(read: impl Fn(&str) -> Option<Vec<u8>>, releases_made: usize) {
    let (index, tags) = assert_releases_intact(&read, releases_made);
    let newest = &index["releases"][&tags[0]]["packages"];
    let names: Vec<&String> = newest.as_object().unwrap().keys().collect();
    let expected: Vec<String> = (0..8)
        .map(|i| format!("slurm-24.11-jammy-cpu-arch{i}"))
        .collect();
    assert_eq!(names, expected.iter().collect::<Vec<_>>(), "{index}");
    // Each package stays in the directory of the release that first had it.
    for (stem, p) in newest.as_object().unwrap() {
        let first = tags
            .iter()
            .rev()
            .find(|t| {
                index["releases"][t.as_str()]["packages"]
                    .get(stem)
                    .is_some()
            })
            .unwrap();
        assert_eq!(p["dir"], format!("releases/{first}").as_str(), "{index}");
    }
}

/// The store's index (`read` gives an object of the store) holds one
/// release per run, and every release names only files the store holds
/// with those bytes. Returns the index and its tags, newest first.
fn assert_releases_intact(
    read: impl Fn(&str) -> Option<Vec<u8>>,
    releases_made: usize,
) -> (serde_json::Value, Vec<String>) {
    let index = parse_index(&read("releases/index.json").expect("an index"));
    let tags = tags_newest_first(&index);
    assert_eq!(tags.len(), releases_made, "{index}");
    for tag in &tags {
        let packages = index["releases"][tag]["packages"].as_object().unwrap();
        for (stem, p) in packages {
            let dir = p["dir"].as_str().unwrap();
            for (name, size_sha) in p["files"].as_object().unwrap() {
                let key = format!("{dir}/{name}");
                let bytes = read(&key).unwrap_or_else(|| panic!("{tag}: {stem}: no {key}"));
                assert_eq!(size_sha[0], bytes.len() as u64, "{key}");
                assert_eq!(size_sha[1], sha256_hex(&bytes).as_str(), "{key}");
            }
        }
    }
    (index, tags)
}

/// Eight builds of the one cell of `d`, each with other bytes (the view
/// gains a file naming the build), each in its own output directory: runs
/// that publish them at once all want the same file names.
fn eight_builds_of_one_cell(d: &Dist) -> Vec<std::path::PathBuf> {
    (0..8)
        .map(|i| {
            std::fs::write(d.view().join("build-id"), format!("build {i}\n")).unwrap();
            d.repackage(None);
            let out = d.dir.path().join(format!("build-{i}"));
            std::fs::rename(d.out(), &out).unwrap();
            out
        })
        .collect()
}

/// Every release of the eight builds holds the one cell with the bytes its
/// index entry names, in its own directory: no run wrote into a directory
/// another run's release names, whichever won the race for a tag.
fn assert_one_cell_per_release(read: impl Fn(&str) -> Option<Vec<u8>>, releases_made: usize) {
    let (index, tags) = assert_releases_intact(&read, releases_made);
    let mut tarballs = std::collections::BTreeSet::new();
    for tag in &tags {
        let packages = index["releases"][tag]["packages"].as_object().unwrap();
        let p = &packages[STEM];
        assert_eq!(packages.len(), 1, "{index}");
        assert_eq!(p["dir"], format!("releases/{tag}").as_str(), "{index}");
        tarballs.insert(p["files"][format!("{STEM}.tar.gz")][1].to_string());
    }
    assert_eq!(
        tarballs.len(),
        releases_made,
        "each release has its own build: {index}"
    );
}

#[test]
fn concurrent_local_publishes_of_one_cell_keep_every_release_intact() {
    let d = dist(None);
    let outs = eight_builds_of_one_cell(&d);
    let store = d.store();
    let made = publish_all_at_once(
        &outs,
        &["--to", "local", "--store-dir", store.to_str().unwrap()],
        Vec::new(),
    );
    assert_one_cell_per_release(|key| std::fs::read(store.join(key)).ok(), made);
}

#[test]
fn concurrent_s3_publishes_of_one_cell_keep_every_release_intact() {
    let d = dist(None);
    let outs = eight_builds_of_one_cell(&d);
    let s3 = S3Server::start();
    let bucket = s3.bucket.clone();
    let made = publish_all_at_once(&outs, &["--to", "s3", "--bucket", &bucket], s3.env());
    assert_one_cell_per_release(|key| s3.object(key), made);
}

#[test]
fn concurrent_local_publishes_lose_nothing() {
    let d = dist(None);
    let outs = eight_packages(&d);
    let store = d.store();
    let made = publish_all_at_once(
        &outs,
        &["--to", "local", "--store-dir", store.to_str().unwrap()],
        Vec::new(),
    );
    assert_nothing_lost(|key| std::fs::read(store.join(key)).ok(), made);
    let partial: Vec<_> = walkdir::WalkDir::new(&store)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
        .collect();
    assert!(partial.is_empty(), "{partial:?}");
}

#[test]
fn concurrent_s3_publishes_lose_no_index_entry() {
    let d = dist(None);
    let outs = eight_packages(&d);
    let s3 = S3Server::start();
    let bucket = s3.bucket.clone();
    let made = publish_all_at_once(&outs, &["--to", "s3", "--bucket", &bucket], s3.env());
    assert_nothing_lost(|key| s3.object(key), made);
}

// ------------------------------------------------- the admins' executable

const ADMIN: &str = "slurm-factory-x86_64-linux";

/// What `admin-binary --out` leaves beside the packages (a stand-in
/// executable: publish checks and moves bytes, it runs nothing).
fn with_admin_binary(d: &Dist, sign: bool) -> Vec<u8> {
    let exe = noise(3 << 20, 42);
    let path = d.out().join(ADMIN);
    std::fs::write(&path, &exe).unwrap();
    let sha = crate::support::sh(
        std::process::Command::new("sha256sum")
            .arg(ADMIN)
            .current_dir(d.out()),
    );
    std::fs::write(d.out().join(format!("{ADMIN}.sha256")), sha).unwrap();
    if sign {
        d.key
            .detach_sign(&path, &d.out().join(format!("{ADMIN}.asc")));
    }
    exe
}

#[test]
fn the_admins_executable_goes_to_the_stores_tools_and_into_every_release() {
    let d = dist(None);
    let exe = with_admin_binary(&d, true);
    let done = publish_local(&d, &[]);
    let tools = d.store().join("tools");
    for name in [
        ADMIN.to_string(),
        format!("{ADMIN}.sha256"),
        format!("{ADMIN}.asc"),
    ] {
        assert_eq!(
            std::fs::read(tools.join(&name)).unwrap(),
            std::fs::read(d.out().join(&name)).unwrap(),
            "{name}"
        );
    }
    // Data before its checksum and signature, as for packages.
    let puts = lines_with(&done.stdout, "put ");
    let at = |n: &str| puts.iter().position(|l| l.contains(n)).unwrap();
    assert!(at(&format!("tools/{ADMIN} (")) < at(&format!("tools/{ADMIN}.asc")));
    // A rerun: no new release; the key and the executable are already there.
    let tag = only_tag(&local_index(&d));
    assert_nothing_uploaded(&publish_local(&d, &[]), &tag, 4);
    let gh = GitHubServer::start();
    publish_github(&d, &gh).success();
    let release = only_release(&gh);
    assert_eq!(release.asset(ADMIN).unwrap().bytes, exe);
    assert!(release.asset(&format!("{ADMIN}.asc")).is_some());
    assert!(release.asset(&format!("{ADMIN}.sha256")).is_some());
}

#[test]
fn an_unsigned_or_corrupt_admins_executable_is_refused_before_any_upload() {
    let d = dist(None);
    with_admin_binary(&d, false);
    let bad = d.publish_local(&[]).failure();
    assert!(
        bad.stderr.contains(&format!(
            "{ADMIN}.asc is missing: an unsigned executable is not published (--allow-unsigned for a local test store)"
        )),
        "{}",
        bad.stderr
    );
    with_admin_binary(&d, true);
    std::fs::write(d.out().join(ADMIN), b"not what was signed").unwrap();
    let bad = d.publish_local(&[]).failure();
    assert!(
        bad.stderr.contains(&format!("{ADMIN} does not match")),
        "{}",
        bad.stderr
    );
    assert!(!d.store().exists(), "nothing was uploaded");
}

// ------------------------------------------------- the pinned release key

/// A checkout whose matrix pins `fingerprint` as the release signing key.
fn pinning(fingerprint: &str) -> Project {
    let p = Project::copy();
    p.edit("spack-env/matrix.yaml", |m| {
        m.replace(
            "signing_key_fingerprint: null",
            &format!("signing_key_fingerprint: \"{fingerprint}\""),
        )
    });
    p
}

fn publish_from(p: &Project, d: &Dist) -> crate::support::Run {
    p.xtask(&[
        "publish",
        "--to",
        "local",
        "--dir",
        d.out().to_str().unwrap(),
        "--store-dir",
        d.store().to_str().unwrap(),
    ])
}

/// `download` refuses a package not signed by the pinned key, so `publish`
/// must refuse it first: one clear line, nothing uploaded.
#[test]
fn a_package_not_signed_by_the_pinned_key_is_refused_before_any_upload() {
    let d = dist(None);
    let impostor = TestKey::new("Impostor", "");
    // The key beside the packages is not the pinned one.
    let bad = publish_from(&pinning(&impostor.fingerprint()), &d).failure();
    assert!(
        bad.stderr.contains(&format!(
            "not the project's pinned key {}: refusing it",
            impostor.fingerprint()
        )),
        "{}",
        bad.stderr
    );
    assert_eq!(bad.stderr.trim().lines().count(), 1, "{}", bad.stderr);
    assert!(!d.store().exists(), "nothing was uploaded");
    // The pinned key is beside the packages, but another key signed them.
    std::fs::copy(
        &impostor.public_file,
        d.out().join("slurm-factory-signing-key.asc"),
    )
    .unwrap();
    let bad = publish_from(&pinning(&impostor.fingerprint()), &d).failure();
    assert!(
        bad.stderr.contains(&format!(
            "slurm-24.11-jammy-cpu-x86_64: not signed by the pinned release key {}",
            impostor.fingerprint()
        )),
        "{}",
        bad.stderr
    );
    assert!(!d.store().exists(), "nothing was uploaded");
    // Signed by the pinned key: published.
    d.repackage(None);
    publish_from(&pinning(&d.key.fingerprint()), &d).success();
    assert!(d.store().join("releases/index.json").is_file());
}

/// A GitHub that reports no asset digests (older GitHub Enterprise Server):
/// each asset is read back and hashed, so the release is still proven
/// complete, published, and a rerun uploads nothing.
#[test]
fn github_without_asset_digests_reads_assets_back() {
    let d = dist(None);
    let gh = GitHubServer::without_digests();
    // An interrupted run's draft of this Slurm release holds an asset of the
    // same name and size but other bytes.
    let draft_tag = format!("slurm-{VERSION}-2026.01.01");
    let id = gh.add_release(&draft_tag, true);
    let tarball = d.out().join(ASSETS[0]);
    let len = std::fs::metadata(&tarball).unwrap().len() as usize;
    gh.add_asset(id, ASSETS[0], &vec![0u8; len]);
    let done = publish_github(&d, &gh).success();
    assert!(
        done.stdout
            .contains("GitHub reports no digest for it: reading it back to check its SHA-256"),
        "{}",
        done.stdout
    );
    // The draft is completed and published, not a second release made.
    let r = only_release(&gh);
    assert_eq!((r.id, r.tag_name.as_str()), (id, draft_tag.as_str()));
    assert!(!r.draft, "published");
    assert_eq!(
        r.asset(ASSETS[0]).unwrap().bytes,
        std::fs::read(&tarball).unwrap(),
        "the wrong bytes were replaced"
    );
    assert_eq!(r.assets.len(), 8);
    // The notes still give every asset's SHA-256.
    let sha = std::fs::read_to_string(d.out().join(ASSETS[1])).unwrap();
    let sha = sha.split_whitespace().next().unwrap();
    assert!(r.body.clone().unwrap().contains(sha));
    let uploads = gh.upload_requests().len();
    let again = publish_github(&d, &gh).success();
    assert!(
        again.stdout.contains(&format!(
            "Slurm 24.11: nothing new since release {draft_tag} ("
        )),
        "{}",
        again.stdout
    );
    assert_eq!(gh.upload_requests().len(), uploads);
    let after = only_release(&gh);
    assert_eq!(after.id, r.id);
    let bytes = |r: &crate::support::github::ReleaseState| -> Vec<(String, Vec<u8>)> {
        r.assets
            .iter()
            .map(|a| (a.name.clone(), a.bytes.clone()))
            .collect()
    };
    assert_eq!(bytes(&after), bytes(&r), "the release is unchanged");
}

/// A signed 1 GiB admins' executable beside the package: it stands in for any
/// big asset (multipart on S3, a long upload to GitHub).
fn with_big_admin_binary(d: &Dist) {
    use std::io::Write as _;
    let path = d.out().join(ADMIN);
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let block = noise(1 << 20, 7);
    for i in 0..1024u32 {
        file.write_all(&i.to_le_bytes()).unwrap();
        file.write_all(&block[4..]).unwrap();
    }
    file.flush().unwrap();
    drop(file);
    let sha = crate::support::sh(
        std::process::Command::new("sha256sum")
            .arg(ADMIN)
            .current_dir(d.out()),
    );
    std::fs::write(d.out().join(format!("{ADMIN}.sha256")), sha).unwrap();
    d.key
        .detach_sign(&path, &d.out().join(format!("{ADMIN}.asc")));
}

/// Starts `publish` with `env`, waits until `midway` says it is in the middle
/// of the upload, and kills it with SIGKILL.
fn kill_midway(args: &[&str], env: Vec<(&str, String)>, midway: impl Fn() -> bool) {
    let mut child = crate::support::xtask_command(args)
        .envs(env)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !midway() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "publish ended before the upload was midway"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the upload never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) },
        0
    );
    child.wait().unwrap();
}

/// A publish killed in the middle of a multipart upload leaves nothing
/// visible; the rerun aborts the orphaned upload and completes the release.
#[test]
fn s3_a_publish_killed_mid_multipart_upload_recovers_on_rerun() {
    let d = dist(None);
    with_big_admin_binary(&d);
    let s3 = S3Server::start();
    let dir = d.out();
    let args = [
        "publish",
        "--to",
        "s3",
        "--bucket",
        &s3.bucket,
        "--dir",
        dir.to_str().unwrap(),
    ];
    let big = format!("tools/{ADMIN}");
    kill_midway(&args, s3.env(), || s3.uploaded_parts() > 0);
    assert_eq!(
        s3.incomplete_uploads(),
        1,
        "the killed upload is left in the bucket"
    );
    assert!(s3.object(&big).is_none(), "nothing half-written is visible");
    assert!(s3.object("releases/index.json").is_none());
    let rerun = d.publish_s3(s3.env(), &s3.bucket).success();
    assert!(
        rerun.stdout.contains(&format!(
            "aborted an interrupted upload of s3://{}/{big}",
            s3.bucket
        )),
        "{}",
        rerun.stdout
    );
    assert_eq!(s3.incomplete_uploads(), 0);
    assert_eq!(
        s3.object(&big).unwrap(),
        std::fs::read(d.out().join(ADMIN)).unwrap()
    );
    assert!(s3.object("releases/index.json").is_some());
}

/// A publish killed in the middle of a GitHub asset upload leaves a draft
/// (nothing published) with a broken asset; the rerun replaces it and
/// publishes one release with one copy of every asset.
#[test]
fn github_a_publish_killed_mid_asset_upload_recovers_on_rerun() {
    let d = dist(None);
    with_big_admin_binary(&d);
    let gh = GitHubServer::start();
    let dir = d.out();
    let env = vec![
        ("GITHUB_TOKEN", gh.token.clone()),
        ("GITHUB_REPOSITORY", "owner/repo".to_string()),
        ("GITHUB_API_URL", gh.api_url.clone()),
    ];
    let uploading = || {
        gh.releases().iter().any(|r| {
            r.assets
                .iter()
                .any(|a| a.name == ADMIN && a.state == "starter")
        })
    };
    kill_midway(
        &["publish", "--to", "github", "--dir", dir.to_str().unwrap()],
        env,
        uploading,
    );
    let draft = only_release(&gh);
    assert!(draft.draft, "nothing is visible before it is complete");
    publish_github(&d, &gh).success();
    let releases = gh.releases();
    assert_eq!(releases.len(), 1, "one release");
    let r = &releases[0];
    assert_eq!(r.tag_name, draft.tag_name, "the draft was completed");
    assert!(!r.draft);
    let mut names: Vec<&str> = r.assets.iter().map(|a| a.name.as_str()).collect();
    names.sort();
    let before = names.len();
    names.dedup();
    assert_eq!(names.len(), before, "one copy of every asset: {names:?}");
    assert_eq!(names.len(), ASSETS.len() + 3);
    assert!(r.assets.iter().all(|a| a.state == "uploaded"));
    assert_eq!(r.asset(ADMIN).unwrap().bytes.len(), 1 << 30);
}

/// The GitHub upload streams from the file: a 1 GiB asset goes up with the
/// toolkit's memory far below the asset's size (peak RSS, from the kernel's
/// accounting of the child, see `peak_rss_mib`).
#[test]
fn a_one_gib_github_asset_streams_in_bounded_memory() {
    let d = dist(None);
    with_big_admin_binary(&d);
    let gh = GitHubServer::start();
    let mut cmd = crate::support::xtask_command(&[
        "publish",
        "--to",
        "github",
        "--dir",
        d.out().to_str().unwrap(),
    ]);
    cmd.env("GITHUB_TOKEN", &gh.token)
        .env("GITHUB_REPOSITORY", "owner/repo")
        .env("GITHUB_API_URL", &gh.api_url);
    let (code, peak_mib) = crate::support::peak_rss_mib(cmd);
    assert_eq!(code, 0, "publish failed");

    eprintln!("peak RSS of publish --to github with a 1 GiB asset: {peak_mib:.1} MiB");
    let asset = only_release(&gh);
    assert_eq!(asset.asset(ADMIN).unwrap().bytes.len(), 1 << 30);
    assert!(peak_mib < 100.0, "peak RSS {peak_mib:.1} MiB");
}
