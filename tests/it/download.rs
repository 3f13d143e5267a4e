//! `cargo xtask download`: packages made by `package` and published by
//! `publish` come back verified and unpacked; tampered, unsigned, foreign-key,
//! truncated and hostile artifacts are refused with the prefix untouched.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::dist::{Dist, STEM, noise};
use crate::support::github::GitHubServer;
use crate::support::gpg::TestKey;
use crate::support::s3::S3Server;
use crate::support::server::{Body, Connections, Reply, Server, ok, status};
use crate::support::{Project, Run, StaticServer, admin, repo_root, xtask};

/// The jammy cpu cell's directory in the earlier layout (`signed_store`).
const LEGACY_CELL_DIR: &str = "releases/24.11/jammy/cpu";

/// The store directory of the cell's files, as the store's index says (the
/// newest release that has it).
fn cell_dir(store: &Path) -> String {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.join("releases/index.json")).unwrap()).unwrap();
    if index.get("packages").is_some() {
        return LEGACY_CELL_DIR.into();
    }
    let releases = index["releases"]
        .as_object()
        .expect("releases in the index");
    releases
        .iter()
        .filter_map(|(tag, r)| Some((tag, r["packages"][STEM]["dir"].as_str()?)))
        .max()
        .map(|(_, dir)| dir.to_string())
        .unwrap_or_else(|| panic!("no {STEM} in {index}"))
}

/// A fresh place to install into (its parent exists, it does not).
fn site(d: &Dist, name: &str) -> PathBuf {
    let sites = d.dir.path().join("sites");
    std::fs::create_dir_all(&sites).unwrap();
    sites.join(name)
}

/// A file of the cell in the local store.
fn stored(d: &Dist, name: &str) -> PathBuf {
    d.store().join(cell_dir(&d.store())).join(name)
}

/// A signed package of a small view (a stand-in scontrol, a library with its
/// symlink, a hard link, a read-only directory), published to a local store.
fn dist(split: Option<&str>) -> Dist {
    let d = Dist::new(
        "Releaser",
        |view| {
            for sub in ["bin", "sbin", "lib", "share/man/man1", "share/doc"] {
                std::fs::create_dir_all(view.join(sub)).unwrap();
            }
            let scontrol = view.join("bin/scontrol");
            std::fs::write(&scontrol, "#!/bin/sh\necho \"slurm 24.11.6 from $0\"\n").unwrap();
            std::fs::set_permissions(&scontrol, std::fs::Permissions::from_mode(0o755)).unwrap();
            std::fs::write(view.join("lib/libslurm.so.42"), noise(300_000, 7)).unwrap();
            std::os::unix::fs::symlink("libslurm.so.42", view.join("lib/libslurm.so")).unwrap();
            std::fs::hard_link(&scontrol, view.join("sbin/scontrol-link")).unwrap();
            std::fs::write(view.join("share/doc/README"), "read me\n").unwrap();
            std::fs::set_permissions(
                view.join("share/doc"),
                std::fs::Permissions::from_mode(0o555),
            )
            .unwrap();
        },
        split,
    );
    d.publish_local(&[]).success();
    d
}

/// `download` of the jammy cpu cell into `prefix`, trusting `key`.
fn download_args<'a>(key: &'a TestKey, prefix: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "download",
        "--slurm",
        "24.11",
        "--toolchain",
        "jammy",
        "--prefix",
        prefix.to_str().unwrap(),
        "--trusted-key",
        key.public_file.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    args
}

/// `download` of the jammy cpu cell into `prefix`, trusting the test key.
fn download(d: &Dist, prefix: &Path, from: &[&str]) -> Run {
    xtask(&download_args(&d.key, prefix, from))
}

fn from_local(d: &Dist) -> Vec<String> {
    vec![
        "--from".into(),
        "local".into(),
        "--store-dir".into(),
        d.store().to_str().unwrap().into(),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Every path under `root` with its kind and content (files), target
/// (symlinks) and permission bits.
fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).min_depth(1) {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(root).unwrap().display().to_string();
        let meta = e.path().symlink_metadata().unwrap();
        let mode = meta.permissions().mode() & 0o7777;
        let what = if meta.is_symlink() {
            format!("link {}", std::fs::read_link(e.path()).unwrap().display())
        } else if meta.is_dir() {
            format!("dir {mode:o}")
        } else {
            let bytes = std::fs::read(e.path()).unwrap();
            format!("file {mode:o} {} {:x}", bytes.len(), md5ish(&bytes))
        };
        out.insert(rel, what);
    }
    out
}

fn md5ish(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// Nothing of a failed download is left beside the prefix but the resumable
/// work directory, and the prefix itself does not exist.
fn assert_untouched(prefix: &Path) {
    assert!(!prefix.exists(), "{} was created", prefix.display());
    let parent = prefix.parent().unwrap();
    let left: Vec<String> = std::fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".staging"))
        .collect();
    assert!(left.is_empty(), "staging left behind: {left:?}");
}

const LMOD_INIT: &str = "/usr/share/lmod/lmod/init/bash";

/// Loads the module with real Lmod the way the command's output says to.
fn lmod_load(stdout: &str) -> String {
    let use_line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("module use "))
        .unwrap_or_else(|| panic!("no `module use` line in:\n{stdout}"));
    let load_line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("module load "))
        .unwrap();
    let script = format!(
        "source {LMOD_INIT}\nunset SLURM_INSTALL_PREFIX MODULEPATH\nset -e\n{}\n{}\nscontrol\necho ROOT=$SLURM_ROOT\n",
        use_line.trim(),
        load_line.trim()
    );
    let out = Command::new("bash")
        .args(["--noprofile", "--norc", "-c", &script])
        .env_remove("LMOD_CMD")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn local_store_round_trip_matches_the_view_and_loads_with_lmod() {
    let d = dist(None);
    let prefix = site(&d, "slurm");
    let modules = d.dir.path().join("modulefiles");
    let mut args = from_local(&d);
    args.extend(["--modules".into(), modules.to_str().unwrap().into()]);
    let done = download(&d, &prefix, &strs(&args)).success();
    assert!(
        done.stdout
            .contains(&format!("module use {}", modules.display())),
        "{}",
        done.stdout
    );
    assert!(done.stdout.contains("module load slurm/24.11-jammy"));
    assert_eq!(
        tree(&prefix.join("view")),
        tree(&d.view()),
        "the unpacked view"
    );
    assert!(prefix.join("manifest.json").is_file());
    assert!(prefix.join("modules/slurm/24.11-jammy.lua").is_file());
    let out = lmod_load(&done.stdout);
    let bin = prefix.join("view/bin/scontrol");
    assert!(out.contains(&format!("from {}", bin.display())), "{out}");
    assert!(
        out.contains(&format!("ROOT={}", prefix.join("view").display())),
        "{out}"
    );
    // The work directory is gone; a second install elsewhere works too.
    assert!(!site(&d, ".slurm.download").exists());
    let again = download(&d, &prefix, &strs(&from_local(&d))).failure();
    assert!(
        again.stderr.contains("exists and is not empty"),
        "{}",
        again.stderr
    );
}

#[test]
fn github_release_with_parts_round_trips_without_leaking_the_token() {
    let d = dist(Some("150k"));
    let gh = GitHubServer::start();
    d.publish_github(&gh).success();
    let parts = std::fs::read_dir(d.out())
        .unwrap()
        .filter(|e| {
            let n = e.as_ref().unwrap().file_name();
            let n = n.to_string_lossy();
            n.contains(".part-") && !n.ends_with(".sha256")
        })
        .count();
    assert!(parts >= 2, "the package is split ({parts} parts)");
    // The fake plays a private repository: every API read needs the token.
    let list = xtask(&[
        "download",
        "--list",
        "--slurm",
        "24.11",
        "--repo",
        "owner/repo",
    ])
    .env("GITHUB_API_URL", &gh.api_url)
    .env("GITHUB_TOKEN", &gh.token)
    .success();
    assert!(list.stdout.contains("jammy"), "{}", list.stdout);
    assert!(
        list.stdout.contains(&format!("in {parts} parts")),
        "{}",
        list.stdout
    );

    let prefix = site(&d, "slurm");
    // The token goes to the API only: the CDN refuses a request carrying one.
    let done = download(&d, &prefix, &["--repo", "owner/repo"])
        .env("GITHUB_API_URL", &gh.api_url)
        .env("GITHUB_TOKEN", &gh.token)
        .success();
    assert_eq!(tree(&prefix.join("view")), tree(&d.view()));
    lmod_load(&done.stdout);
    assert!(
        gh.download_requests().len() >= parts,
        "{:?}",
        gh.download_requests()
    );
}

#[test]
fn an_interrupted_download_resumes_where_it_stopped() {
    let d = dist(None);
    let gh = GitHubServer::start();
    d.publish_github(&gh).success();
    let prefix = site(&d, "slurm");
    // Every transfer breaks after 20 kB: each of the run's five attempts at
    // the tarball (~300 kB) resumes where the last stopped, then it gives up.
    gh.cut_next_downloads(100, 20_000);
    let failed = download(&d, &prefix, &["--repo", "owner/repo"])
        .env("GITHUB_API_URL", &gh.api_url)
        .env("GITHUB_TOKEN", &gh.token)
        .failure();
    assert!(
        failed.stderr.contains("run the command again to resume"),
        "{}",
        failed.stderr
    );
    assert_untouched(&prefix);
    let kept = prefix
        .with_file_name(".slurm.download")
        .join(format!("{STEM}.tar.gz"));
    assert_eq!(
        std::fs::metadata(&kept).unwrap().len(),
        100_000,
        "the bytes so far are kept"
    );
    gh.clear_faults();
    let before = gh.download_requests().len();
    download(&d, &prefix, &["--repo", "owner/repo"])
        .env("GITHUB_API_URL", &gh.api_url)
        .env("GITHUB_TOKEN", &gh.token)
        .success();
    let tarball_requests: Vec<_> = gh.download_requests()[before..]
        .iter()
        .filter(|r| r.target.split('?').next().unwrap().ends_with(".tar.gz"))
        .map(|r| r.range.clone())
        .collect();
    assert_eq!(
        tarball_requests,
        vec![Some("bytes=100000-".to_string())],
        "the rerun asks only for the rest"
    );
    assert_eq!(tree(&prefix.join("view")), tree(&d.view()));
}

#[test]
fn s3_round_trip() {
    let d = dist(None);
    let s3 = S3Server::start();
    d.publish_s3(s3.env(), &s3.bucket).success();
    let prefix = site(&d, "slurm");
    let done = download(&d, &prefix, &["--from", "s3", "--bucket", &s3.bucket])
        .envs(s3.env())
        .success();
    assert_eq!(tree(&prefix.join("view")), tree(&d.view()));
    lmod_load(&done.stdout);
}

/// Runs a download that must fail, and checks the message and the prefix.
fn refused(d: &Dist, name: &str, expect: &str) {
    let prefix = site(d, name);
    let failed = download(d, &prefix, &strs(&from_local(d))).failure();
    assert!(
        failed.stderr.contains(expect),
        "{name}: wanted `{expect}` in:\n{}",
        failed.stderr
    );
    assert_eq!(
        failed.stderr.trim().lines().count(),
        1,
        "{name}: one line: {}",
        failed.stderr
    );
    assert_untouched(&prefix);
    // Fetched bytes are kept only where a rerun can resume from them.
    let work = prefix.with_file_name(format!(".{name}.download"));
    assert_eq!(
        work.exists(),
        expect.contains("resume"),
        "{name}: {}",
        work.display()
    );
}

fn flip_byte(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    let at = at.min(bytes.len() - 1);
    bytes[at] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn tampered_artifacts_are_refused_and_the_prefix_is_untouched() {
    let d = dist(None);
    let tarball = stored(&d, &format!("{STEM}.tar.gz"));
    let original = std::fs::read(&tarball).unwrap();

    flip_byte(&tarball, original.len() / 2);
    refused(&d, "flipped", "checksum mismatch");
    std::fs::write(&tarball, &original).unwrap();

    let sum = stored(&d, &format!("{STEM}.tar.gz.sha256"));
    let sum_text = std::fs::read_to_string(&sum).unwrap();
    std::fs::write(&sum, format!("{}{}", "0".repeat(64), &sum_text[64..])).unwrap();
    refused(&d, "checksum-file", "checksum mismatch");
    std::fs::write(&sum, &sum_text).unwrap();

    let sig = stored(&d, &format!("{STEM}.tar.gz.asc"));
    let sig_text = std::fs::read(&sig).unwrap();
    let other = TestKey::new("Mallory", "");
    other.detach_sign(&tarball, &sig);
    refused(&d, "other-key", "signed by an unknown key");

    std::fs::remove_file(&sig).unwrap();
    refused(&d, "unsigned", "refusing an unsigned package");
    std::fs::write(&sig, &sig_text).unwrap();

    // Truncated at the source: shorter than the release lists.
    std::fs::write(&tarball, &original[..original.len() / 3]).unwrap();
    refused(&d, "truncated", "run the command again to resume");
    std::fs::write(&tarball, &original).unwrap();

    // After all that, the untouched artifact installs.
    let prefix = site(&d, "good");
    download(&d, &prefix, &strs(&from_local(&d))).success();
    assert_eq!(tree(&prefix.join("view")), tree(&d.view()));
}

#[test]
fn a_flipped_byte_in_one_part_names_the_part() {
    let d = dist(Some("150k"));
    let part = stored(&d, &format!("{STEM}.tar.gz.part-001"));
    flip_byte(&part, 10);
    refused(
        &d,
        "part",
        &format!("checksum mismatch: {STEM}.tar.gz.part-001"),
    );
}

#[test]
fn the_pinned_fingerprint_decides_which_published_key_is_trusted() {
    let d = dist(None);
    let project = Project::copy();
    let fingerprint = d.key.fingerprint();
    let run = |prefix: &Path| {
        let mut args = vec![
            "download",
            "--slurm",
            "24.11",
            "--toolchain",
            "jammy",
            "--prefix",
            prefix.to_str().unwrap(),
        ];
        let from = from_local(&d);
        args.extend(strs(&from));
        project.xtask(&args)
    };
    // Nothing pinned, no --trusted-key: nothing to trust.
    let none = run(&site(&d, "none")).failure();
    assert!(
        none.stderr.contains("--trusted-key FILE"),
        "{}",
        none.stderr
    );
    // Pinned to another key: the published key is refused.
    project.edit("spack-env/matrix.yaml", |t| {
        t.replace(
            "signing_key_fingerprint: null",
            &format!("signing_key_fingerprint: {}", "AB".repeat(20)),
        )
    });
    let wrong = run(&site(&d, "wrong")).failure();
    assert!(
        wrong.stderr.contains("not the project's pinned key"),
        "{}",
        wrong.stderr
    );
    assert_untouched(&site(&d, "wrong"));
    // Pinned to the signing key: the published key is accepted.
    project.edit("spack-env/matrix.yaml", |t| {
        t.replace(&"AB".repeat(20), &fingerprint)
    });
    run(&site(&d, "pinned")).success();
}

#[test]
fn bad_requests_fail_with_one_clear_line() {
    let d = dist(None);
    let prefix = site(&d, "x");
    let mut args = vec![
        "download",
        "--slurm",
        "99.99",
        "--toolchain",
        "jammy",
        "--prefix",
    ];
    args.push(prefix.to_str().unwrap());
    let bad = xtask(&args).code(2);
    assert!(
        bad.stderr.contains("valid: 25.11, 24.11, 23.11"),
        "{}",
        bad.stderr
    );
    let bad = xtask(&[
        "download",
        "--slurm",
        "24.11",
        "--toolchain",
        "focal",
        "--prefix",
        "x",
    ])
    .code(2);
    assert!(
        bad.stderr.contains("unknown toolchain 'focal'"),
        "{}",
        bad.stderr
    );
    let bad = xtask(&["download", "--slurm", "24.11"]).code(2);
    assert!(bad.stderr.contains("--prefix"), "{}", bad.stderr);
    let bad = xtask(&["download", "--list", "--from", "ftp://x"]).code(2);
    assert!(
        bad.stderr.contains("expected github, s3, local"),
        "{}",
        bad.stderr
    );
    // Options that would be ignored are refused.
    // The key prefix is spelled --bucket-prefix (SLURM_FACTORY_BUCKET_PREFIX)
    // in every command; --prefix is only ever the install directory.
    for (args, env, expect) in [
        (
            &["--list", "--repo", "a/b", "--from", "local"][..],
            None,
            "--repo is for --from github",
        ),
        (
            &["--list", "--bucket", "b"][..],
            None,
            "--bucket (or SLURM_FACTORY_BUCKET) is for --from s3",
        ),
        (
            &["--list", "--from", "local"][..],
            Some(("SLURM_FACTORY_BUCKET_PREFIX", "team")),
            "--bucket-prefix (or SLURM_FACTORY_BUCKET_PREFIX) is for --from s3",
        ),
        (
            &["--list", "--from", "s3", "--bucket-prefix", "team"][..],
            None,
            "--from s3 needs --bucket",
        ),
        (
            &["--list", "--from", "s3"][..],
            None,
            "--from s3 needs --bucket",
        ),
        (
            &["--list", "--gpu"][..],
            None,
            "--gpu has no meaning with --list",
        ),
        (
            &["--list", "--prefix", "/x"][..],
            None,
            "--prefix has no meaning with --list",
        ),
    ] {
        let mut all = vec!["download"];
        all.extend_from_slice(args);
        let mut cmd = xtask(&all);
        if let Some((name, value)) = env {
            cmd = cmd.env(name, value);
        }
        let bad = cmd.code(2);
        assert!(bad.stderr.contains(expect), "{args:?}: {}", bad.stderr);
    }

    // The GPU package was never published: say what there is.
    let mut gpu = from_local(&d);
    gpu.push("--gpu".into());
    let missing = download(&d, &prefix, &strs(&gpu)).failure();
    assert!(
        missing
            .stderr
            .contains("offers no slurm-24.11-jammy-gpu-x86_64")
            && missing.stderr.contains("jammy/cpu/x86_64"),
        "{}",
        missing.stderr
    );
    assert_untouched(&prefix);

    // A non-empty prefix is never touched.
    std::fs::create_dir_all(&prefix).unwrap();
    std::fs::write(prefix.join("keep"), "mine").unwrap();
    let busy = download(&d, &prefix, &strs(&from_local(&d))).failure();
    assert!(
        busy.stderr.contains("exists and is not empty"),
        "{}",
        busy.stderr
    );
    assert_eq!(
        std::fs::read_to_string(prefix.join("keep")).unwrap(),
        "mine"
    );

    // --dry-run says what it would do and does nothing.
    let mut dry = from_local(&d);
    dry.push("--dry-run".into());
    let plan = download(&d, &site(&d, "dry"), &strs(&dry)).success();
    assert!(
        plan.stdout.contains(&format!("fetch  {STEM}.tar.gz")),
        "{}",
        plan.stdout
    );
    assert_untouched(&site(&d, "dry"));
    // --list on the local store.
    let list = xtask(&[
        "download",
        "--list",
        "--from",
        "local",
        "--store-dir",
        d.store().to_str().unwrap(),
    ])
    .success();
    assert!(list.stdout.contains("24.11    jammy"), "{}", list.stdout);
}

// ------------------------------------------------------------ hostile archives

/// An entry of a hand-made tarball: path, type, link target, mode.
type Entry<'a> = (&'a str, tar::EntryType, &'a str, u32);

/// A hand-made tarball: `<STEM>/` then the given entries, gzipped, summed,
/// signed and put in a local store with an index.
fn hostile(key: &TestKey, store: &Path, entries: &[Entry<'_>]) {
    let mut raw = Vec::new();
    {
        let mut b = tar::Builder::new(&mut raw);
        let mut top = tar::Header::new_gnu();
        top.set_entry_type(tar::EntryType::Directory);
        top.set_mode(0o755);
        top.set_size(0);
        set_name(&mut top, &format!("{STEM}/"));
        b.append(&top, std::io::empty()).unwrap();
        for (name, kind, link, mode) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(*mode);
            let body: &[u8] = if *kind == tar::EntryType::Regular {
                b"pwned\n"
            } else {
                b""
            };
            h.set_size(body.len() as u64);
            if !link.is_empty() {
                let bytes = link.as_bytes();
                h.as_old_mut().linkname[..bytes.len()].copy_from_slice(bytes);
            }
            if *kind == tar::EntryType::Char {
                h.set_device_major(1).unwrap();
                h.set_device_minor(3).unwrap();
            }
            set_name(&mut h, name);
            b.append(&h, body).unwrap();
        }
        b.finish().unwrap();
    }
    signed_store(key, store, &gzip(&raw));
}

fn gzip(raw: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, raw).unwrap();
    gz.finish().unwrap()
}

/// `tgz` as the jammy cpu cell's tarball in a fresh local store at `store`:
/// summed, signed by `key`, and in the index.
fn signed_store(key: &TestKey, store: &Path, tgz: &[u8]) {
    let dir = store.join(LEGACY_CELL_DIR);
    let _ = std::fs::remove_dir_all(store);
    std::fs::create_dir_all(&dir).unwrap();
    let tarball = dir.join(format!("{STEM}.tar.gz"));
    std::fs::write(&tarball, tgz).unwrap();
    let sha = {
        use sha2::Digest;
        sha2::Sha256::digest(tgz)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    std::fs::write(
        dir.join(format!("{STEM}.tar.gz.sha256")),
        format!("{sha}  {STEM}.tar.gz\n"),
    )
    .unwrap();
    key.detach_sign(&tarball, &dir.join(format!("{STEM}.tar.gz.asc")));
    // The signed statement of sizes, true to these bytes.
    let mut unpacked = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(tgz), &mut unpacked).unwrap();
    let sizes = serde_json::json!({
        "schema": 1, "tarball": format!("{STEM}.tar.gz"), "size": tgz.len(),
        "sha256": sha, "parts": [], "unpacked": unpacked.len(),
    })
    .to_string();
    let sizes_file = dir.join(format!("{STEM}.sizes.json"));
    std::fs::write(&sizes_file, &sizes).unwrap();
    key.detach_sign(&sizes_file, &dir.join(format!("{STEM}.sizes.json.asc")));
    let index = serde_json::json!({"packages": {STEM: {
        "slurm": "24.11", "toolchain": "jammy", "variant": "cpu", "arch": "x86_64",
        "fingerprint": null,
        "files": {
            format!("{STEM}.tar.gz"): [tgz.len(), sha],
            format!("{STEM}.sizes.json"): [sizes.len(), "-"],
            format!("{STEM}.sizes.json.asc"): [0, "-"],
        }
    }}});
    std::fs::write(store.join("releases/index.json"), index.to_string()).unwrap();
}

/// Writes a name into the header's raw field: the tar crate refuses to set
/// absolute and `..` paths, which is the point here.
fn set_name(h: &mut tar::Header, name: &str) {
    let field = &mut h.as_old_mut().name;
    field.fill(0);
    field[..name.len()].copy_from_slice(name.as_bytes());
    h.set_cksum();
}

#[test]
fn hostile_archives_are_refused_with_the_entry_named() {
    let key = TestKey::new("Signer", "");
    let site = tempfile::tempdir().unwrap();
    let outside = site.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret"), "keep").unwrap();
    let store = site.path().join("store");
    let o = outside.to_str().unwrap();
    use tar::EntryType::{Char, Directory, Link, Regular, Symlink};
    let escape = format!("{STEM}/../../outside/pwned");
    let abs = format!("{o}/pwned");
    let cases: Vec<(&str, Vec<Entry<'_>>, String)> = vec![
        (
            "absolute",
            vec![(abs.as_str(), Regular, "", 0o644)],
            format!("`{abs}`: an absolute path"),
        ),
        (
            "dotdot",
            vec![(escape.as_str(), Regular, "", 0o644)],
            "a `..` path".into(),
        ),
        (
            "symlink-out",
            vec![
                (&*format!("{STEM}/etc").leak(), Symlink, o, 0o777),
                (&*format!("{STEM}/etc/pwned").leak(), Regular, "", 0o644),
            ],
            format!("`{STEM}/etc`: a symlink to `{o}`, outside the package"),
        ),
        (
            "symlink-to-etc",
            vec![
                (&*format!("{STEM}/etc").leak(), Symlink, "/etc", 0o777),
                (
                    &*format!("{STEM}/etc/slurm-factory-test-pwned").leak(),
                    Regular,
                    "",
                    0o644,
                ),
            ],
            format!("`{STEM}/etc`: a symlink to `/etc`, outside the package"),
        ),
        (
            "through-inner-symlink",
            vec![
                (&*format!("{STEM}/view").leak(), Directory, "", 0o755),
                (&*format!("{STEM}/s").leak(), Symlink, "view", 0o777),
                (&*format!("{STEM}/s/pwned").leak(), Regular, "", 0o644),
            ],
            "lies under the symlink `s`".into(),
        ),
        (
            "hardlink-out",
            vec![(
                &*format!("{STEM}/secret").leak(),
                Link,
                &*format!("{o}/secret").leak(),
                0o644,
            )],
            "a hard link to".into(),
        ),
        (
            "device",
            vec![(&*format!("{STEM}/null").leak(), Char, "", 0o666)],
            format!("`{STEM}/null`: a device file"),
        ),
        (
            "setuid",
            vec![(&*format!("{STEM}/su").leak(), Regular, "", 0o4755)],
            "setuid/setgid bits".into(),
        ),
    ];
    for (name, entries, expect) in cases {
        hostile(&key, &store, &entries);
        let prefix = site.path().join(format!("sites/{name}"));
        std::fs::create_dir_all(prefix.parent().unwrap()).unwrap();
        let failed = download_from(&key, &store, &prefix, &[]).failure();
        assert!(
            failed.stderr.contains("refusing archive entry") && failed.stderr.contains(&expect),
            "{name}: wanted `{expect}` in:\n{}",
            failed.stderr
        );
        assert_untouched(&prefix);
        let outside_now: Vec<_> = std::fs::read_dir(&outside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(outside_now, vec!["secret"], "{name}: wrote outside");
        assert_eq!(
            std::fs::read_to_string(outside.join("secret")).unwrap(),
            "keep"
        );
        assert!(!site.path().join("pwned").exists(), "{name}");
        assert!(
            !Path::new("/etc/slurm-factory-test-pwned").exists(),
            "{name}"
        );
    }
}

// ------------------------------------------------------------ plain HTTP

#[test]
fn a_public_base_url_and_a_release_directory_url_both_work() {
    let d = dist(Some("150k"));
    let server = StaticServer::start(&d.store());
    // The store's base URL, as `publish --public-url` prints it for admins:
    // the index lists the package and its parts.
    let published = d.publish_local(&["--public-url", &server.url]).success();
    let install = published
        .stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("install: slurm-factory "))
        .unwrap_or_else(|| panic!("no install line in:\n{}", published.stdout));
    let dir = cell_dir(&d.store());
    assert!(dir.starts_with("releases/slurm-24.11."), "{dir}");
    assert!(
        published.stdout.contains(&format!(
            "public: {}/{dir}/{STEM}.tar.gz.part-000",
            server.url
        )),
        "{}",
        published.stdout
    );
    let prefix = site(&d, "from-base");
    let mut args: Vec<String> = install.split(' ').map(String::from).collect();
    let at = args.iter().position(|a| a == "--prefix").unwrap();
    args[at + 1] = prefix.to_str().unwrap().into();
    args.extend(["--trusted-fingerprint".into(), d.key.fingerprint()]);
    // The admins' executable, from a directory that is no checkout.
    admin(d.dir.path(), &strs(&args)).success();
    assert_eq!(tree(&prefix.join("view")), tree(&d.view()));
    // One release directory with no index beside it: the parts are probed.
    std::fs::remove_file(d.store().join("releases/index.json")).unwrap();
    let prefix = site(&d, "from-dir");
    let dir_url = format!("{}/{dir}/", server.url);
    download(&d, &prefix, &["--from", &dir_url]).success();
    assert_eq!(tree(&prefix.join("view")), tree(&d.view()));
    // A release directory of another cell is a usage error.
    let other = format!("{}/releases/25.11/noble/cpu/", server.url);
    let bad = download(&d, &site(&d, "x"), &["--from", &other]).code(2);
    assert!(
        bad.stderr
            .contains("is the release directory of 25.11/noble/cpu"),
        "{}",
        bad.stderr
    );
}

#[test]
fn a_full_disk_fails_in_one_line_and_leaves_nothing() {
    let d = dist(None);
    let size = std::fs::metadata(stored(&d, &format!("{STEM}.tar.gz")))
        .unwrap()
        .len();
    // A tmpfs that holds the download but not the unpacked tree besides it,
    // mounted in a private mount namespace: the machine never sees it.
    let disk = d.dir.path().join("small-disk");
    std::fs::create_dir_all(&disk).unwrap();
    let prefix = disk.join("slurm");
    let mut args: Vec<String> = vec![
        "--root".into(),
        repo_root().to_str().unwrap().into(),
        "download".into(),
        "--slurm".into(),
        "24.11".into(),
        "--toolchain".into(),
        "jammy".into(),
        "--prefix".into(),
        prefix.to_str().unwrap().into(),
        "--trusted-key".into(),
        d.key.public_file.to_str().unwrap().into(),
    ];
    args.extend(from_local(&d));
    let script = format!(
        "mount -t tmpfs -o size={}k tmpfs \"$DISK\" || exit 99\n\"$@\"\nrc=$?\necho LEFT=$(ls -A \"$DISK\")\nexit $rc",
        size * 3 / 2 / 1024
    );
    // Root (CI) needs only a private mount namespace; others also map
    // themselves to root in a user namespace to be allowed to mount.
    let root = crate::support::sh(Command::new("id").arg("-u")).trim() == "0";
    let namespaces: &[&str] = if root {
        &["--mount"]
    } else {
        &["--user", "--map-root-user", "--mount"]
    };
    let out = Command::new("unshare")
        .args(namespaces)
        .args(["sh", "-c", &script, "sh"])
        .arg(env!("CARGO_BIN_EXE_xtask"))
        .args(&args)
        .env("DISK", &disk)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(99), "mounting a tmpfs: {stderr}");
    assert!(!out.status.success(), "{stdout}{stderr}");
    let error: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(error.len(), 1, "{stderr}");
    assert!(
        error[0].contains("disk full: ") && error[0].contains("No space left on device"),
        "{stderr}"
    );
    assert!(
        stdout.contains("LEFT=\n") || stdout.trim_end().ends_with("LEFT="),
        "{stdout}"
    );
}

// ------------------------------------------------- signed but malformed

/// `download` of the jammy cpu cell from a local store, trusting `key`.
fn download_from(key: &TestKey, store: &Path, prefix: &Path, extra: &[&str]) -> Run {
    let mut args = vec!["--from", "local", "--store-dir", store.to_str().unwrap()];
    args.extend_from_slice(extra);
    xtask(&download_args(key, prefix, &args))
}

/// The real package's uncompressed tar stream.
fn raw_tar(d: &Dist) -> Vec<u8> {
    let file = std::fs::File::open(d.out().join(format!("{STEM}.tar.gz"))).unwrap();
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(file), &mut raw).unwrap();
    raw
}

/// The same entries, each passed to `edit` (path, header, data) on the way.
fn retar(raw: &[u8], edit: impl Fn(&Path, &mut tar::Header, &mut Vec<u8>)) -> Vec<u8> {
    let mut archive = tar::Archive::new(raw);
    let mut out = tar::Builder::new(Vec::new());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut header = entry.header().clone();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
        edit(&entry.path().unwrap(), &mut header, &mut data);
        header.set_size(data.len() as u64);
        header.set_cksum();
        out.append(&header, &data[..]).unwrap();
    }
    out.into_inner().unwrap()
}

/// The same entries, with `manifest.json` changed by `edit`.
fn with_manifest(raw: &[u8], edit: impl Fn(&str) -> String) -> Vec<u8> {
    let manifest = format!("{STEM}/manifest.json");
    retar(raw, |path, _, data| {
        if path == Path::new(&manifest) {
            *data = edit(std::str::from_utf8(data).unwrap()).into_bytes();
        }
    })
}

#[test]
fn a_tarball_of_two_gzip_members_installs_whole() {
    let d = dist(None);
    let normal = site(&d, "normal");
    download(&d, &normal, &strs(&from_local(&d))).success();
    let raw = raw_tar(&d);
    let mut two = gzip(&raw[..raw.len() / 2]);
    two.extend(gzip(&raw[raw.len() / 2..]));
    let store = d.dir.path().join("two-members");
    signed_store(&d.key, &store, &two);
    let prefix = site(&d, "two");
    download_from(&d.key, &store, &prefix, &[]).success();
    let (a, b) = (tree(&normal), tree(&prefix));
    assert!(a.len() > 10, "{a:?}");
    // Only the module's prefix line differs: it names each install.
    let differing: Vec<&String> = a.keys().filter(|k| a.get(*k) != b.get(*k)).collect();
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    assert!(
        differing.iter().all(|k| k.starts_with("modules/")),
        "{differing:?}"
    );
}

#[test]
fn data_after_the_archive_and_sparse_files_are_refused() {
    let d = dist(None);
    let raw = raw_tar(&d);
    // A second archive after the first one's end.
    let mut second = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(6);
    h.set_mode(0o644);
    second
        .append_data(&mut h, format!("{STEM}/extra"), &b"extra\n"[..])
        .unwrap();
    let mut doubled = raw.clone();
    doubled.extend(second.into_inner().unwrap());
    // A PAX 1.0 sparse file: what it holds is a map, not the file.
    let mut sparse = tar::Builder::new(Vec::new());
    sparse
        .append_pax_extensions([
            ("GNU.sparse.major", &b"1"[..]),
            ("GNU.sparse.minor", &b"0"[..]),
            ("GNU.sparse.name", format!("{STEM}/view/holes").as_bytes()),
            ("GNU.sparse.realsize", &b"1048576"[..]),
        ])
        .unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_size(512);
    h.set_mode(0o644);
    sparse
        .append_data(
            &mut h,
            format!("{STEM}/GNUSparseFile.0/holes"),
            &[b'1'; 512][..],
        )
        .unwrap();
    let sparse = sparse.into_inner().unwrap();
    let with_sparse = {
        // Insert it before the end of the real archive.
        let end = raw.len() - 1024;
        let mut v = raw[..end].to_vec();
        v.extend(&sparse[..sparse.len() - 1024]);
        v.extend(&raw[end..]);
        v
    };
    for (name, stream, expect) in [
        ("doubled", doubled, "data after the end of the archive"),
        ("sparse", with_sparse, "a sparse file"),
    ] {
        let store = d.dir.path().join(name);
        signed_store(&d.key, &store, &gzip(&stream));
        let prefix = site(&d, name);
        let failed = download_from(&d.key, &store, &prefix, &[]).failure();
        assert!(failed.stderr.contains(expect), "{name}: {}", failed.stderr);
        assert_untouched(&prefix);
    }
}

#[test]
fn a_module_path_from_the_manifest_stays_inside() {
    let d = dist(None);
    let raw = raw_tar(&d);
    let victim_dir = d.dir.path().join("other");
    std::fs::create_dir_all(&victim_dir).unwrap();
    std::fs::write(victim_dir.join("m.lua"), "keep\n").unwrap();
    let modules = d.dir.path().join("modules");
    for (name, module) in [
        ("dotdot", "../../../other/m".to_string()),
        ("absolute", format!("{}/m", victim_dir.display())),
        ("hidden", "slurm/.x".to_string()),
    ] {
        let evil = with_manifest(&raw, |text| {
            let m: serde_json::Value = serde_json::from_str(text).unwrap();
            let original = m["module"].as_str().unwrap().to_string();
            text.replace(
                &format!("\"module\": \"{original}\""),
                &format!("\"module\": \"{module}\""),
            )
        });
        let store = d.dir.path().join(name);
        signed_store(&d.key, &store, &gzip(&evil));
        let prefix = site(&d, name);
        let failed = download_from(
            &d.key,
            &store,
            &prefix,
            &["--modules", modules.to_str().unwrap()],
        )
        .failure();
        assert!(
            failed.stderr.contains("its manifest names the module"),
            "{name}: {}",
            failed.stderr
        );
        assert_untouched(&prefix);
        assert_eq!(
            std::fs::read_to_string(victim_dir.join("m.lua")).unwrap(),
            "keep\n"
        );
        assert!(!modules.exists(), "{name}: wrote into --modules");
    }
}

// ------------------------------------------------- the work directory

/// The work directory `download` keeps beside `prefix`.
fn work_dir(prefix: &Path) -> PathBuf {
    prefix.with_file_name(format!(
        ".{}.download",
        prefix.file_name().unwrap().to_string_lossy()
    ))
}

#[test]
fn a_planted_work_directory_or_link_in_it_is_refused_and_nothing_is_written_through_it() {
    let d = dist(None);
    let victim = d.dir.path().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    let from = from_local(&d);
    // A neighbour's directory: another owner, writable by all.
    let prefix = site(&d, "theirs");
    let work = work_dir(&prefix);
    std::fs::create_dir(&work).unwrap();
    std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::os::unix::fs::symlink(&victim, work.join("lock")).unwrap();
    let failed = download(&d, &prefix, &strs(&from)).failure();
    assert!(
        failed.stderr.contains("refusing the work directory") && failed.stderr.contains("mode 777"),
        "{}",
        failed.stderr
    );
    // A symlink as the work directory itself.
    let prefix = site(&d, "linked");
    let elsewhere = d.dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, work_dir(&prefix)).unwrap();
    let failed = download(&d, &prefix, &strs(&from)).failure();
    assert!(failed.stderr.contains("a symlink"), "{}", failed.stderr);
    // Our own directory (0700) with links planted in it before it was locked
    // down: the lock, the signature and the tarball are never opened through them.
    for planted in [
        "lock".to_string(),
        format!("{STEM}.tar.gz.asc"),
        format!("{STEM}.tar.gz"),
    ] {
        let prefix = site(&d, &format!("planted-{planted}"));
        let work = work_dir(&prefix);
        std::fs::create_dir(&work).unwrap();
        std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::symlink(&victim, work.join(&planted)).unwrap();
        let failed = download(&d, &prefix, &strs(&from)).failure();
        assert!(
            failed.stderr.contains("it is a symlink"),
            "{planted}: {}",
            failed.stderr
        );
        assert!(!prefix.exists());
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
}

#[test]
fn staging_left_by_a_killed_run_is_removed_by_the_next() {
    let d = dist(None);
    let prefix = site(&d, "slurm");
    let stale = prefix.with_file_name(".slurm.staging-AbC123");
    std::fs::create_dir_all(stale.join("tree/view")).unwrap();
    std::fs::write(stale.join("tree/view/unverified"), "x").unwrap();
    std::fs::set_permissions(
        stale.join("tree/view"),
        std::fs::Permissions::from_mode(0o555),
    )
    .unwrap();
    let done = download(&d, &prefix, &strs(&from_local(&d))).success();
    assert!(!stale.exists(), "{}", done.stderr);
    assert!(
        done.stderr.contains("left by an interrupted run"),
        "{}",
        done.stderr
    );
    assert!(prefix.join("view/bin/scontrol").exists());
}

#[test]
fn sigterm_and_ctrl_c_remove_the_unverified_staging_directory() {
    let d = dist(None);
    // Serves the store, but only the first half of a tarball, then holds on.
    let files = d.store();
    let server = TinyServer::start(move |path| {
        match std::fs::read(files.join(path.trim_start_matches('/'))) {
            Ok(body) if path.ends_with(".tar.gz") => {
                let half = body.len() as u64 / 2;
                Reply::Send(
                    hyper::Response::builder()
                        .header("content-length", body.len())
                        .body(Body::stall(body, half))
                        .unwrap(),
                )
            }
            Ok(body) => ok(body),
            Err(_) => not_found(),
        }
    });
    let url = server.url.clone();
    for (name, signal, code) in [("TERM", libc::SIGTERM, 143), ("INT", libc::SIGINT, 130)] {
        let prefix = site(&d, &format!("sig{name}"));
        let from = format!("{url}/");
        let mut child =
            crate::support::xtask_command(&download_args(&d.key, &prefix, &["--from", &from]))
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
        let parent = prefix.parent().unwrap().to_path_buf();
        let staging = || {
            std::fs::read_dir(&parent)
                .unwrap()
                .flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(&format!(".sig{name}.staging-"))
                })
                .count()
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while staging() == 0 {
            if child.try_wait().unwrap().is_some() {
                let out = child.wait_with_output().unwrap();
                panic!("download ended: {}", String::from_utf8_lossy(&out.stderr));
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the download never started"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // Half the tarball arrives at once; then the server stalls.
        std::thread::sleep(std::time::Duration::from_millis(1500));
        assert_eq!(staging(), 1);
        // SAFETY: a signal to our own child process, which is still running.
        assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, signal) }, 0);
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(code),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(staging(), 0, "staging left after SIG{name}");
        assert!(!prefix.exists());
        assert!(
            work_dir(&prefix).join("lock").exists(),
            "the work directory stays for a resume"
        );
    }
}

// ------------------------------------------ hostile sources, clear errors

/// One request as a `TinyServer` saw it.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    authorization: bool,
}

/// A loopback server answering each request with what `answer` returns for
/// its target, recording every request.
struct TinyServer {
    url: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<Seen>>>,
    _server: Server,
}

impl TinyServer {
    fn start(answer: impl Fn(&str) -> Reply + Send + Sync + 'static) -> TinyServer {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let server = Server::start("tiny", Connections::Close, move |ex| {
            log.lock().unwrap().push(Seen {
                path: ex.target().to_string(),
                authorization: ex.header("authorization").is_some(),
            });
            answer(ex.target())
        });
        TinyServer {
            url: server.url.clone(),
            seen,
            _server: server,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn not_found() -> Reply {
    status(404)
}

#[test]
fn the_token_goes_to_the_api_origin_only() {
    let d = dist(None);
    let files = d.out();
    // The asset host: another origin, serving the package's files.
    let assets = TinyServer::start(move |path| {
        match std::fs::read(files.join(path.trim_start_matches("/a/"))) {
            Ok(body) => ok(body),
            Err(_) => not_found(),
        }
    });
    let mut list: Vec<serde_json::Value> = Vec::new();
    for e in std::fs::read_dir(d.out()).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        list.push(serde_json::json!({
            "name": name, "size": e.metadata().unwrap().len(),
            "url": format!("{}/a/{name}", assets.url), "state": "uploaded",
        }));
    }
    let release =
        serde_json::json!({"tag_name": "slurm-24.11", "draft": false, "assets": list}).to_string();
    let api = TinyServer::start(move |path| {
        if path == "/repos/owner/repo/releases/tags/slurm-24.11" {
            ok(release.clone())
        } else if path.starts_with("/repos/owner/repo/releases?") {
            ok(format!("[{release}]"))
        } else {
            not_found()
        }
    });
    let prefix = site(&d, "slurm");
    download(&d, &prefix, &["--repo", "owner/repo"])
        .env("GITHUB_API_URL", &api.url)
        .env("GITHUB_TOKEN", "secret-token")
        .success();
    assert!(
        api.seen().iter().all(|s| s.authorization),
        "{:?}",
        api.seen()
    );
    let to_assets = assets.seen();
    assert!(to_assets.len() >= 3, "{to_assets:?}");
    assert!(
        to_assets.iter().all(|s| !s.authorization),
        "the token went to the asset host: {to_assets:?}"
    );
}

#[test]
fn misleading_failures_are_reported_as_what_they_are() {
    let d = dist(None);
    let index_path = d.store().join("releases/index.json");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    let tarball = format!("{STEM}.tar.gz");
    let edited_store = |name: &str, edit: &dyn Fn(&mut serde_json::Value)| {
        let store = d.dir.path().join(name);
        crate::support::copy_tree(&d.store(), &store);
        let mut i = index.clone();
        edit(&mut i);
        std::fs::write(store.join("releases/index.json"), i.to_string()).unwrap();
        store
    };
    // A file longer than its signed size: refused, not "resume" forever.
    let store = edited_store("long", &|_| {});
    let stored_tarball = store.join(cell_dir(&store)).join(&tarball);
    let mut bytes = std::fs::read(&stored_tarball).unwrap();
    let signed_size = bytes.len();
    bytes.extend(noise(50_000, 3));
    std::fs::write(&stored_tarball, bytes).unwrap();
    let prefix = site(&d, "long");
    let failed = download_from(&d.key, &store, &prefix, &[]).failure();
    assert!(
        failed.stderr.contains(&format!(
            "than the {signed_size} bytes of its signed statement"
        )),
        "{}",
        failed.stderr
    );
    assert!(!failed.stderr.contains("resume"), "{}", failed.stderr);
    assert!(
        !work_dir(&prefix).exists(),
        "nothing kept for a resume that cannot work"
    );
    // An index that lists no data file.
    let store = edited_store("nodata", &|i| {
        for (_, release) in i["releases"].as_object_mut().unwrap() {
            release["packages"][STEM]["files"]
                .as_object_mut()
                .unwrap()
                .remove(&tarball);
        }
    });
    let failed = download_from(&d.key, &store, &site(&d, "nodata"), &[]).failure();
    assert!(
        failed.stderr.contains("lists no data file"),
        "{}",
        failed.stderr
    );
    assert!(!failed.stderr.contains("checksum"), "{}", failed.stderr);
    // A prefix that is a symlink to an empty directory.
    let empty = d.dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let link = site(&d, "link");
    std::os::unix::fs::symlink(&empty, &link).unwrap();
    let failed = download(&d, &link, &strs(&from_local(&d))).failure();
    assert!(
        failed.stderr.contains("is a symlink (to"),
        "{}",
        failed.stderr
    );
    // A redirect to file:// is refused at once, not retried as a network error.
    let dir = cell_dir(&d.store());
    let files = d.store().join(&dir);
    let redirect = TinyServer::start(move |path| {
        if path.ends_with(".tar.gz") {
            return Reply::Send(
                hyper::Response::builder()
                    .status(302)
                    .header("location", "file:///etc/passwd")
                    .body(Body::empty())
                    .unwrap(),
            );
        }
        match std::fs::read(files.join(path.rsplit('/').next().unwrap())) {
            Ok(body) => ok(body),
            Err(_) => not_found(),
        }
    });
    let from = format!("{}/{dir}/", redirect.url);
    let started = std::time::Instant::now();
    let failed = download(&d, &site(&d, "redirect"), &["--from", &from]).failure();
    let asked = redirect
        .seen()
        .iter()
        .filter(|s| s.path.ends_with(".tar.gz"))
        .count();
    assert!(
        failed
            .stderr
            .contains("a file:// URL, which is not http(s)"),
        "{}",
        failed.stderr
    );
    assert_eq!(asked, 1, "{:?}", redirect.seen());
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
}

/// The same entries, with the directory `dir` (under the package) given `mode`.
fn with_dir_mode(raw: &[u8], dir: &str, mode: u32) -> Vec<u8> {
    let target = format!("{STEM}/{dir}");
    retar(raw, |path, header, _| {
        if path == Path::new(&target) {
            header.set_mode(mode);
        }
    })
}

#[test]
fn names_and_paths_are_checked_before_they_are_used() {
    use std::os::unix::ffi::OsStrExt;
    let d = dist(None);
    let from = from_local(&d);
    // --list shows a source's fields; it never lets them drive the terminal.
    let index_path = d.store().join("releases/index.json");
    let text = std::fs::read_to_string(&index_path).unwrap();
    let evil = d.dir.path().join("evil-store");
    crate::support::copy_tree(&d.store(), &evil);
    std::fs::write(
        evil.join("releases/index.json"),
        text.replace(
            "\"toolchain\": \"jammy\"",
            "\"toolchain\": \"jam\\u001b[2J\\r\\nmy\"",
        ),
    )
    .unwrap();
    let list = xtask(&[
        "download",
        "--list",
        "--from",
        "local",
        "--store-dir",
        evil.to_str().unwrap(),
    ])
    .success();
    assert!(
        !list.stdout.contains('\u{1b}') && !list.stdout.contains('\r'),
        "{:?}",
        list.stdout
    );
    assert!(
        list.stdout.contains("jam\\u{1b}[2J\\r\\nmy"),
        "{}",
        list.stdout
    );
    // Prefixes: a newline, non-UTF-8 bytes, `..`: usage errors, before any download.
    let sites = d.dir.path().join("sites");
    std::fs::create_dir_all(&sites).unwrap();
    let newline = sites.join("a\nb");
    let not_utf8 = sites.join(std::ffi::OsStr::from_bytes(b"caf\xe9"));
    let dotdot = sites.join("newdir/..");
    for (prefix, expect) in [
        (newline.as_os_str(), "control characters"),
        (not_utf8.as_os_str(), "not UTF-8"),
        (dotdot.as_os_str(), "without `.` or `..`"),
    ] {
        let mut cmd = crate::support::xtask_command(&[
            "download",
            "--slurm",
            "24.11",
            "--toolchain",
            "jammy",
        ]);
        cmd.arg("--prefix").arg(prefix).args(strs(&from));
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(expect), "{stderr}");
    }
    assert!(!sites.join("newdir").exists());
    assert_eq!(std::fs::read_dir(&sites).unwrap().count(), 0);
    // A sticky directory stays sticky; a pre-created empty prefix keeps its mode.
    let sticky = d.dir.path().join("sticky-store");
    signed_store(
        &d.key,
        &sticky,
        &gzip(&with_dir_mode(&raw_tar(&d), "view/share/doc", 0o1777)),
    );
    let prefix = site(&d, "made-by-admin");
    std::fs::create_dir(&prefix).unwrap();
    std::fs::set_permissions(&prefix, std::fs::Permissions::from_mode(0o750)).unwrap();
    download_from(&d.key, &sticky, &prefix, &[]).success();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&prefix.join("view/share/doc")), 0o1777);
    assert_eq!(mode(&prefix), 0o750);
}

#[test]
fn unauthenticated_bytes_are_bounded_by_the_signed_statement() {
    let d = dist(None);
    let cell = d.store().join(cell_dir(&d.store()));
    let signed: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cell.join(format!("{STEM}.sizes.json"))).unwrap())
            .unwrap();
    let unpacked = signed["unpacked"].as_u64().unwrap();
    assert!(unpacked > 300_000, "{signed}");
    // A mirror without the key swaps in a small tarball that unpacks to
    // 64 MiB of zeros: the download stops at the signed unpacked size.
    let mut bomb = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    bomb.append_data(&mut h, format!("{STEM}/"), std::io::empty())
        .unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(64 << 20);
    bomb.append_data(
        &mut h,
        format!("{STEM}/zeros"),
        std::io::repeat(0).take(64 << 20),
    )
    .unwrap();
    let bomb = {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut gz, &bomb.into_inner().unwrap()).unwrap();
        gz.finish().unwrap()
    };
    assert!(bomb.len() < signed["size"].as_u64().unwrap() as usize);
    let store = d.dir.path().join("bomb");
    crate::support::copy_tree(&d.store(), &store);
    std::fs::write(
        store.join(cell_dir(&store)).join(format!("{STEM}.tar.gz")),
        &bomb,
    )
    .unwrap();
    let prefix = site(&d, "bomb");
    let failed = download_from(&d.key, &store, &prefix, &[]).failure();
    assert!(
        failed
            .stderr
            .contains("unpacks to more than its signed size"),
        "{}",
        failed.stderr
    );
    assert_untouched(&prefix);
    // The statement itself cannot be changed without the key, nor left out.
    let store = d.dir.path().join("forged");
    crate::support::copy_tree(&d.store(), &store);
    let sizes = store
        .join(cell_dir(&store))
        .join(format!("{STEM}.sizes.json"));
    let mut forged = signed.clone();
    forged["unpacked"] = (1u64 << 40).into();
    std::fs::write(&sizes, forged.to_string()).unwrap();
    let failed = download_from(&d.key, &store, &site(&d, "forged"), &[]).failure();
    assert!(failed.stderr.contains("bad signature"), "{}", failed.stderr);
    std::fs::remove_file(&sizes).unwrap();
    let failed = download_from(&d.key, &store, &site(&d, "missing"), &[]).failure();
    assert!(
        failed.stderr.contains("without its signed sizes"),
        "{}",
        failed.stderr
    );
}

// ------------------------------------------------- the admins' executable

/// The admins' `slurm-factory` knows the matrix it was built from, but takes
/// what a release offers from the release: a Slurm version a newer matrix
/// dropped stays installable, and a name neither knows exits 2 naming both.
#[test]
fn a_version_the_matrix_no_longer_lists_stays_downloadable() {
    // Published when the matrix still listed Slurm 22.05.
    let then = Project::copy();
    then.edit("spack-env/matrix.yaml", |m| {
        m.replace("version: \"23.11\"", "version: \"22.05\"")
            .replace("spack_version: 23-11-", "spack_version: 22-05-")
    });
    let key = TestKey::new("Releaser", "");
    let dir = tempfile::tempdir().unwrap();
    let (view, out, store) = (
        dir.path().join("view"),
        dir.path().join("dist"),
        dir.path().join("store"),
    );
    std::fs::create_dir_all(view.join("bin")).unwrap();
    std::fs::write(view.join("bin/scontrol"), "#!/bin/sh\necho 22.05\n").unwrap();
    crate::support::package(
        &then.root,
        &view,
        &crate::support::fixtures().join("spack-concretized-slurm-env/spack.lock"),
        ("22.05", "jammy"),
        &out,
        &[],
    )
    .env("SLURM_FACTORY_GPG_PRIVATE_KEY", &key.secret_armored)
    .success();
    crate::support::dist::publish_local(&then, &out, &store, &[]).success();
    let server = StaticServer::start(&store);
    let from = format!("{}/", server.url);
    let prefix = dir.path().join("slurm-22.05");
    let fpr = key.fingerprint();
    let args = |slurm: &'static str, prefix: &Path| -> Vec<String> {
        [
            "download",
            "--slurm",
            slurm,
            "--toolchain",
            "jammy",
            "--from",
            &from,
            "--trusted-fingerprint",
            &fpr,
            "--prefix",
            prefix.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec()
    };
    // Today's matrix lists 25.11, 24.11 and 23.11 only.
    let done = admin(dir.path(), &strs(&args("22.05", &prefix))).success();
    assert!(
        done.stdout.contains("installed Slurm 22.05 (jammy, cpu)"),
        "{}",
        done.stdout
    );
    assert!(prefix.join("view/bin/scontrol").is_file());
    let bad = admin(
        dir.path(),
        &strs(&args("21.08", &dir.path().join("slurm-21.08"))),
    )
    .code(2);
    assert!(
        bad.stderr
            .contains("unknown Slurm version '21.08' (valid: 25.11, 24.11, 23.11, 22.05)"),
        "{}",
        bad.stderr
    );
    assert!(!dir.path().join("slurm-21.08").exists());
}

// ------------------------------------------------------------ the weekly cycle

/// Where a cycle publishes: GitHub (immutable releases on or off) or a store.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Target {
    GitHub { immutable: bool },
    Store,
}

/// The weekly cycle of one Slurm series, three toolchains, as the pipeline
/// runs it: a first run where one cell fails; a rerun that completes it; a
/// rerun with nothing new; a later run where one toolchain's deps changed,
/// interrupted mid-upload and run again. Every published release stays as
/// it was; unchanged packages are carried byte for byte; `download` takes
/// the newest release, or the one `--release` names.
fn weekly_cycle(target: Target) {
    let key = TestKey::new("Releaser", "");
    let work = tempfile::tempdir().unwrap();
    let lock = crate::support::fixtures().join("spack-concretized-slurm-env/spack.lock");
    let gh = match target {
        Target::GitHub { immutable: true } => Some(GitHubServer::with_immutable_releases()),
        Target::GitHub { immutable: false } => Some(GitHubServer::start()),
        Target::Store => None,
    };
    let store = work.path().join("store");
    // A cell's package of a view whose bytes depend on `deps`.
    let build = |out: &Path, toolchain: &str, deps: u64| {
        let view = work.path().join(format!("view-{toolchain}-{deps}"));
        let _ = std::fs::remove_dir_all(&view);
        std::fs::create_dir_all(view.join("lib")).unwrap();
        std::fs::create_dir_all(view.join("bin")).unwrap();
        std::fs::write(view.join("bin/scontrol"), "#!/bin/sh\necho scontrol\n").unwrap();
        std::fs::write(
            view.join("lib/libdeps.so"),
            crate::support::binary_like(200_000, deps * 31 + toolchain.len() as u64),
        )
        .unwrap();
        crate::support::package(&repo_root(), &view, &lock, ("24.11", toolchain), out, &[])
            .env("SLURM_FACTORY_GPG_PRIVATE_KEY", &key.secret_armored)
            .success();
    };
    let publish = |out: &Path| -> Run {
        match &gh {
            Some(gh) => xtask(&["publish", "--to", "github", "--dir", out.to_str().unwrap()])
                .env("GITHUB_TOKEN", &gh.token)
                .env("GITHUB_REPOSITORY", "owner/repo")
                .env("GITHUB_API_URL", &gh.api_url),
            None => crate::support::dist::publish_local(
                &crate::support::Project::repo(),
                out,
                &store,
                &[],
            ),
        }
    };
    // Every release, newest first: tag → file name → bytes.
    let releases = || -> Vec<(String, BTreeMap<String, Vec<u8>>)> {
        match &gh {
            Some(gh) => gh
                .releases()
                .into_iter()
                .map(|r| {
                    assert!(!r.draft, "{} is still a draft", r.tag_name);
                    let files = r.assets.into_iter().map(|a| (a.name, a.bytes)).collect();
                    (r.tag_name, files)
                })
                .collect(),
            None => {
                let index: serde_json::Value = serde_json::from_slice(
                    &std::fs::read(store.join("releases/index.json")).unwrap(),
                )
                .unwrap();
                let mut out: Vec<(String, BTreeMap<String, Vec<u8>>)> = index["releases"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(tag, r)| {
                        let mut files = BTreeMap::new();
                        for p in r["packages"].as_object().unwrap().values() {
                            let dir = store.join(p["dir"].as_str().unwrap());
                            for name in p["files"].as_object().unwrap().keys() {
                                files.insert(name.clone(), std::fs::read(dir.join(name)).unwrap());
                            }
                        }
                        (tag.clone(), files)
                    })
                    .collect();
                out.reverse();
                out
            }
        }
    };
    let cells = |files: &BTreeMap<String, Vec<u8>>| -> Vec<String> {
        let mut c: Vec<String> = files
            .keys()
            .filter(|n| n.ends_with(".tar.gz"))
            .map(|n| n.split('-').nth(2).unwrap().to_string())
            .collect();
        c.sort();
        c
    };
    // A package's files, each with its SHA-256.
    let package = |files: &BTreeMap<String, Vec<u8>>, tc: &str| -> Vec<(String, String)> {
        use sha2::Digest;
        let stem = format!("slurm-24.11-{tc}-cpu-x86_64.");
        files
            .iter()
            .filter(|(n, _)| n.starts_with(&stem))
            .map(|(n, b)| {
                let sha: String = sha2::Sha256::digest(b)
                    .iter()
                    .map(|x| format!("{x:02x}"))
                    .collect();
                (n.clone(), sha[..16].to_string())
            })
            .collect()
    };

    // Run 1: jammy and noble build, rockylinux9 fails (no package).
    let run1 = work.path().join("run1");
    build(&run1, "jammy", 1);
    build(&run1, "noble", 1);
    let first = publish(&run1).success();
    let after1 = releases();
    assert_eq!(after1.len(), 1, "{}", first.stdout);
    let (tag1, r1) = after1[0].clone();
    assert!(
        tag1.starts_with("slurm-24.11.") && tag1.len() >= "slurm-24.11.6-2026.12.03".len(),
        "{tag1}"
    );
    assert_eq!(cells(&r1), ["jammy", "noble"]);

    // The rerun that completes it: the same artifacts, and rockylinux9.
    build(&run1, "rockylinux9", 1);
    let rerun = publish(&run1).success();
    let after2 = releases();
    assert_eq!(
        after2.len(),
        2,
        "a new release, the first untouched: {}",
        rerun.stdout
    );
    assert_eq!(
        after2[1],
        (tag1.clone(), r1.clone()),
        "release 1 is unchanged"
    );
    let (tag2, r2) = after2[0].clone();
    assert_ne!(tag2, tag1);
    assert_eq!(cells(&r2), ["jammy", "noble", "rockylinux9"]);
    for tc in ["jammy", "noble"] {
        assert_eq!(
            package(&r2, tc),
            package(&r1, tc),
            "{tc} is carried byte for byte"
        );
    }
    assert!(
        rerun
            .stdout
            .contains("new or changed: slurm-24.11-rockylinux9-cpu-x86_64"),
        "{}",
        rerun.stdout
    );

    // The same run again: nothing new, no release, nothing uploaded.
    if let Some(gh) = &gh {
        gh.clear_requests();
    }
    let again = publish(&run1).success();
    assert!(again.stdout.contains("no new release"), "{}", again.stdout);
    assert_eq!(releases(), after2);
    if let Some(gh) = &gh {
        assert!(
            gh.upload_requests().is_empty(),
            "{:?}",
            gh.upload_requests()
        );
    }

    // A later run: noble's deps changed. Its upload breaks; the rerun of the
    // same run completes the same draft.
    let run3 = work.path().join("run3");
    build(&run3, "noble", 2);
    if let Some(gh) = &gh {
        gh.fail_next_uploads(20, 502);
        let broken = publish(&run3).failure();
        assert_eq!(releases_including_drafts(gh), 3, "{}", broken.stderr);
        gh.clear_faults();
    }
    let third = publish(&run3).success();
    let after3 = releases();
    assert_eq!(after3.len(), 3, "{}", third.stdout);
    assert_eq!(
        after3[1..],
        after2[..],
        "the earlier releases are unchanged"
    );
    let (tag3, r3) = after3[0].clone();
    assert_eq!(cells(&r3), ["jammy", "noble", "rockylinux9"]);
    assert_ne!(
        package(&r3, "noble"),
        package(&r2, "noble"),
        "noble is rebuilt"
    );
    for tc in ["jammy", "rockylinux9"] {
        assert_eq!(
            package(&r3, tc),
            package(&r2, tc),
            "{tc} is carried byte for byte"
        );
    }
    if let Some(gh) = &gh {
        let immutable = target == Target::GitHub { immutable: true };
        // The notes name what was carried over and how to verify the release.
        let body = gh.release(&tag3).unwrap().body.unwrap_or_default();
        assert!(
            body.contains(&format!("gh release verify {tag3} --repo owner/repo"))
                && body.contains(&format!(
                    "Carried over unchanged (byte-identical) from {tag2}"
                ))
                && body.contains("slurm-24.11-jammy-cpu-x86_64"),
            "{body}"
        );
        assert!(gh.releases().iter().all(|r| r.immutable == immutable));
        // Nothing ever asked GitHub to change a published release.
        let refused: Vec<_> = gh
            .request_log()
            .into_iter()
            .filter(|r| r.status == 422)
            .collect();
        assert!(refused.is_empty(), "{refused:?}");
    }

    // Admins: the newest release, a pinned one, and the list of builds.
    let from: Vec<String> = match &gh {
        Some(_) => vec!["--repo".into(), "owner/repo".into()],
        None => vec![
            "--from".into(),
            "local".into(),
            "--store-dir".into(),
            store.to_str().unwrap().into(),
        ],
    };
    let admin_run = |extra: &[&str]| -> Run {
        let mut args: Vec<String> = vec!["download".into()];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend(from.iter().cloned());
        args.extend(["--trusted-fingerprint".into(), key.fingerprint()]);
        let run = admin(work.path(), &strs(&args));
        match &gh {
            Some(gh) => run
                .env("GITHUB_API_URL", &gh.api_url)
                .env("GITHUB_TOKEN", &gh.token),
            None => run,
        }
    };
    let list = {
        let mut args: Vec<String> = vec![
            "download".into(),
            "--list".into(),
            "--slurm".into(),
            "24.11".into(),
        ];
        args.extend(from.iter().cloned());
        let run = admin(work.path(), &strs(&args));
        match &gh {
            Some(gh) => run
                .env("GITHUB_API_URL", &gh.api_url)
                .env("GITHUB_TOKEN", &gh.token),
            None => run,
        }
    }
    .success();
    let order: Vec<usize> = [&tag3, &tag2, &tag1]
        .iter()
        .map(|t| {
            list.stdout
                .find(&format!("{t} "))
                .unwrap_or_else(|| panic!("{t} not in {}", list.stdout))
        })
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "newest first:\n{}",
        list.stdout
    );
    let newest = work.path().join("newest");
    let done = admin_run(&[
        "--slurm",
        "24.11",
        "--toolchain",
        "noble",
        "--prefix",
        newest.to_str().unwrap(),
    ])
    .success();
    assert!(
        done.stdout.contains(&format!("release {tag3}")),
        "{}",
        done.stdout
    );
    assert_eq!(
        done.stdout.contains("immutable on GitHub"),
        target == Target::GitHub { immutable: true },
        "{}",
        done.stdout
    );
    assert_eq!(
        std::fs::read(newest.join("view/lib/libdeps.so")).unwrap(),
        crate::support::binary_like(200_000, 2 * 31 + "noble".len() as u64)
    );
    let pinned = work.path().join("pinned");
    admin_run(&[
        "--release",
        &tag1,
        "--toolchain",
        "noble",
        "--prefix",
        pinned.to_str().unwrap(),
    ])
    .success();
    assert_eq!(
        std::fs::read(pinned.join("view/lib/libdeps.so")).unwrap(),
        crate::support::binary_like(200_000, 31 + "noble".len() as u64),
        "the pinned release's noble, from before its deps changed"
    );
    // Release 1 never had rockylinux9: --release pins, it does not fall back.
    let missing = admin_run(&[
        "--release",
        &tag1,
        "--toolchain",
        "rockylinux9",
        "--prefix",
        work.path().join("none").to_str().unwrap(),
    ])
    .failure();
    assert!(
        missing.stderr.contains(&format!(
            "release {tag1} there: jammy/cpu/x86_64, noble/cpu/x86_64"
        )),
        "{}",
        missing.stderr
    );
}

/// Releases of the fake, drafts included.
fn releases_including_drafts(gh: &GitHubServer) -> usize {
    gh.releases().len()
}

#[test]
fn weekly_cycle_on_github_with_immutable_releases() {
    weekly_cycle(Target::GitHub { immutable: true });
}

#[test]
fn weekly_cycle_on_github_without_immutable_releases() {
    weekly_cycle(Target::GitHub { immutable: false });
}

#[test]
fn weekly_cycle_on_a_store() {
    weekly_cycle(Target::Store);
}
