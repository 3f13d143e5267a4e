//! `cargo xtask package`: the release artifact, checked with the real tools an
//! admin uses (GNU tar, gzip, sha256sum, gpg, Lmod).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::gpg::TestKey;
use crate::support::{fixtures, repo_root, sh};

const STEM: &str = "slurm-25.11-noble-cpu-x86_64";

/// A small Slurm-like view: executables, a versioned library with its
/// symlinks, a hard link (Spack views use them), a long path, modes.
fn make_view(dir: &Path) -> PathBuf {
    let view = dir.join("view");
    let write = |rel: &str, body: &[u8], mode: u32| {
        let p = view.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    write(
        "bin/scontrol",
        b"#!/bin/sh\necho \"slurm 25.11.6 ($0)\"\n",
        0o755,
    );
    write("sbin/slurmd", b"#!/bin/sh\necho slurmd\n", 0o750);
    // Incompressible enough that the tarball spans several 64 KiB parts.
    let mut x: u32 = 2463534242;
    let lib: Vec<u8> = (0..300_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    write("lib/libslurm.so.42.0.0", &lib, 0o755);
    write("lib/slurm/auth_munge.so", b"plugin", 0o644);
    write("share/doc/private-notes", b"0600 survives", 0o600);
    let long = format!("share/{}/{}.txt", "deep".repeat(30), "x".repeat(120));
    write(&long, b"a path longer than ustar's 100 bytes", 0o644);
    std::os::unix::fs::symlink("libslurm.so.42.0.0", view.join("lib/libslurm.so.42")).unwrap();
    std::os::unix::fs::symlink("libslurm.so.42", view.join("lib/libslurm.so")).unwrap();
    std::os::unix::fs::symlink("../lib/libslurm.so", view.join("bin/link-to-lib")).unwrap();
    std::fs::hard_link(view.join("bin/scontrol"), view.join("bin/scontrol-hard")).unwrap();
    view
}

fn lock() -> PathBuf {
    fixtures().join("spack-concretized-slurm-env/spack.lock")
}

struct Packaged {
    _dir: tempfile::TempDir,
    view: PathBuf,
    out: PathBuf,
    key: TestKey,
    stdout: String,
    stderr: String,
}

impl Packaged {
    fn file(&self, suffix: &str) -> PathBuf {
        self.out.join(format!("{STEM}{suffix}"))
    }
}

fn package(extra: &[&str]) -> Packaged {
    package_with_passphrase(extra, "")
}

/// A passphrase makes gpg slow (seconds), so only the secrets test uses one.
fn package_with_passphrase(extra: &[&str], passphrase: &str) -> Packaged {
    let dir = tempfile::tempdir().unwrap();
    let view = make_view(dir.path());
    let out = dir.path().join("dist");
    let key = TestKey::new("Packager", passphrase);
    let lock = lock();
    let mut args = vec!["--fingerprint", "abc123"];
    args.extend_from_slice(extra);
    let done = crate::support::package(&repo_root(), &view, &lock, ("25.11", "noble"), &out, &args)
        .env("SLURM_FACTORY_GPG_PRIVATE_KEY", &key.secret_armored)
        .env("SLURM_FACTORY_GPG_PASSPHRASE", &key.passphrase)
        .env("SOURCE_DATE_EPOCH", "1764000000")
        .success();
    Packaged {
        _dir: dir,
        view,
        out,
        key,
        stdout: done.stdout,
        stderr: done.stderr,
    }
}

fn extract(tarball: &Path, into: &Path) -> PathBuf {
    std::fs::create_dir_all(into).unwrap();
    sh(Command::new("tar")
        .arg("-xzf")
        .arg(tarball)
        .arg("-C")
        .arg(into));
    into.join(STEM)
}

#[test]
fn gnu_tar_extracts_the_same_tree() {
    let p = package(&[]);
    let top = extract(&p.file(".tar.gz"), &p.out.join("x"));
    let view = top.join("view");
    for rel in [
        "bin/scontrol",
        "sbin/slurmd",
        "lib/libslurm.so.42.0.0",
        "lib/slurm/auth_munge.so",
        "share/doc/private-notes",
    ] {
        let (a, b) = (p.view.join(rel), view.join(rel));
        assert_eq!(
            std::fs::read(&a).unwrap(),
            std::fs::read(&b).unwrap(),
            "{rel}"
        );
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&a), mode(&b), "mode of {rel}");
    }
    assert_eq!(
        std::fs::read_link(view.join("lib/libslurm.so")).unwrap(),
        Path::new("libslurm.so.42")
    );
    assert_eq!(
        std::fs::read_link(view.join("bin/link-to-lib")).unwrap(),
        Path::new("../lib/libslurm.so")
    );
    let ino = |rel: &str| std::fs::metadata(view.join(rel)).unwrap().ino();
    assert_eq!(
        ino("bin/scontrol"),
        ino("bin/scontrol-hard"),
        "hard link preserved"
    );
    let long = walkdir_files(&view)
        .into_iter()
        .find(|f| f.ends_with(".txt"))
        .unwrap();
    assert!(long.len() > 200, "{long}");
    // The layout of SPEC section 6.
    assert!(top.join("modules/slurm/25.11-noble.lua").is_file());
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(top.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["name"], STEM);
    assert_eq!(manifest["fingerprint"], "abc123");
    assert_eq!(manifest["cell"]["variant"], "cpu");
    assert_eq!(manifest["build_time"], "2025-11-24T16:00:00Z");
    // Beside the tarball: the same manifest.
    let beside: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.file(".manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest, beside);
    // gzip itself accepts the parallel stream.
    sh(Command::new("gzip").arg("-t").arg(p.file(".tar.gz")));
}

fn walkdir_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path().to_string_lossy().into_owned());
            }
        }
    }
    out
}

#[test]
fn packaging_twice_gives_identical_bytes() {
    let a = package(&[]);
    let b = package(&[]);
    assert!(std::fs::read(a.file(".tar.gz")).unwrap() == std::fs::read(b.file(".tar.gz")).unwrap());
    assert_eq!(
        std::fs::read(a.file(".manifest.json")).unwrap(),
        std::fs::read(b.file(".manifest.json")).unwrap()
    );
}

#[test]
fn signature_verifies_and_a_flipped_byte_breaks_it() {
    let p = package(&[]);
    let tarball = p.file(".tar.gz");
    let public = p.out.join("slurm-factory-signing-key.asc");
    assert!(TestKey::verify(&public, &p.file(".tar.gz.asc"), &tarball));
    assert!(TestKey::verify(
        &p.key.public_file,
        &p.file(".tar.gz.asc"),
        &tarball
    ));
    let mut bytes = std::fs::read(&tarball).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    let tampered = p.out.join("tampered.tar.gz");
    std::fs::write(&tampered, bytes).unwrap();
    assert!(!TestKey::verify(&public, &p.file(".tar.gz.asc"), &tampered));
    // The signature is armored and detached.
    assert!(
        std::fs::read_to_string(p.file(".tar.gz.asc"))
            .unwrap()
            .starts_with("-----BEGIN PGP SIGNATURE-----")
    );
}

#[test]
fn sha256sum_accepts_the_checksum_file() {
    let p = package(&[]);
    let out = sh(Command::new("sha256sum")
        .arg("-c")
        .arg(format!("{STEM}.tar.gz.sha256"))
        .current_dir(&p.out));
    assert_eq!(out.trim(), format!("{STEM}.tar.gz: OK"));
}

#[test]
fn large_tarballs_split_into_parts_that_join_to_the_whole() {
    let p = package(&["--split-size", "64K"]);
    assert!(
        !p.file(".tar.gz").exists(),
        "the whole file is never written when split"
    );
    let mut parts: Vec<PathBuf> = std::fs::read_dir(&p.out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|f| {
            f.to_string_lossy().contains(".tar.gz.part-")
                && !f.to_string_lossy().ends_with(".sha256")
        })
        .collect();
    parts.sort();
    assert!(parts.len() >= 2, "{parts:?}");
    assert!(parts[0].to_string_lossy().ends_with(".tar.gz.part-000"));
    for part in &parts {
        assert!(std::fs::metadata(part).unwrap().len() <= 64 * 1024);
        let name = part.file_name().unwrap().to_str().unwrap();
        let ok = sh(Command::new("sha256sum")
            .arg("-c")
            .arg(format!("{name}.sha256"))
            .current_dir(&p.out));
        assert_eq!(ok.trim(), format!("{name}: OK"));
    }
    let mut whole = Vec::new();
    for part in &parts {
        whole.extend(std::fs::read(part).unwrap());
    }
    let joined = p.out.join(format!("{STEM}.tar.gz"));
    std::fs::write(&joined, &whole).unwrap();
    sh(Command::new("sha256sum")
        .arg("-c")
        .arg(format!("{STEM}.tar.gz.sha256"))
        .current_dir(&p.out));
    assert!(TestKey::verify(
        &p.key.public_file,
        &p.file(".tar.gz.asc"),
        &joined
    ));
    // And it is the same stream an unsplit run makes.
    assert!(whole == std::fs::read(package(&[]).file(".tar.gz")).unwrap());
}

#[test]
fn lmod_loads_the_module_from_the_extracted_tarball() {
    let p = package(&[]);
    let top = extract(&p.file(".tar.gz"), &p.out.join("srv"));
    let view = top.join("view");
    let out = sh(Command::new("bash")
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", &p.out)
        .env("SLURM_INSTALL_PREFIX", &view)
        .args(["--noprofile", "--norc", "-c"])
        .arg(format!(
            "set -e; source /usr/share/lmod/lmod/init/bash; module use {}; module load slurm/25.11-noble; command -v scontrol; scontrol",
            top.join("modules").display()
        )));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], view.join("bin/scontrol").to_str().unwrap());
    assert!(lines[1].starts_with("slurm 25.11.6"), "{out}");
}

#[test]
fn manifest_lists_the_lock_packages_with_versions_and_hashes() {
    let p = package(&[]);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.file(".manifest.json")).unwrap()).unwrap();
    let lock: serde_json::Value = serde_json::from_slice(&std::fs::read(lock()).unwrap()).unwrap();
    let packages = manifest["packages"].as_array().unwrap();
    for name in ["slurm", "openmpi", "pmix", "hwloc", "json-c", "munge"] {
        let (hash, spec) = lock["concrete_specs"]
            .as_object()
            .unwrap()
            .iter()
            .find(|(_, s)| s["name"] == name)
            .unwrap();
        let entry = packages
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(entry["version"], spec["version"], "{name}");
        assert_eq!(entry["hash"], hash.as_str(), "{name}");
    }
    let sbom: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.file(".spdx.json")).unwrap()).unwrap();
    assert_eq!(sbom["spdxVersion"], "SPDX-2.3");
    assert_eq!(
        sbom["packages"].as_array().unwrap().len(),
        packages.len() + 1
    );
}

#[test]
fn secrets_stay_out_of_the_output() {
    let p = package_with_passphrase(&[], "correct horse battery");
    let all = format!("{}{}", p.stdout, p.stderr);
    assert!(!all.contains(&p.key.passphrase));
    assert!(!all.contains("PRIVATE KEY"));
    assert!(
        p.stdout.contains("packaged 25.11/noble/cpu"),
        "{}",
        p.stdout
    );
    // Nothing but the outputs is left in the output directory.
    let names: Vec<String> = std::fs::read_dir(&p.out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.starts_with('.')), "{names:?}");
    assert_eq!(names.len(), 8, "{names:?}");
}

fn refused(setup: impl FnOnce(&Path), expected: &str) {
    let dir = tempfile::tempdir().unwrap();
    let view = make_view(dir.path());
    setup(&view);
    let out = dir.path().join("dist");
    let lock = lock();
    let done = crate::support::package(
        &repo_root(),
        &view,
        &lock,
        ("25.11", "noble"),
        &out,
        &["--unsigned"],
    )
    .failure();
    assert!(done.stderr.contains(expected), "{}", done.stderr);
    assert!(
        !out.exists() || std::fs::read_dir(&out).unwrap().next().is_none(),
        "something was written"
    );
}

#[test]
fn absolute_symlink_is_refused_with_its_path() {
    refused(
        |v| std::os::unix::fs::symlink("/etc/passwd", v.join("lib/passwd")).unwrap(),
        "lib/passwd is not relocatable: absolute symlink to /etc/passwd",
    );
}

#[test]
fn symlink_leaving_the_view_is_refused() {
    refused(
        |v| std::os::unix::fs::symlink("../../../outside", v.join("lib/slurm/escape")).unwrap(),
        "lib/slurm/escape is not relocatable: symlink to ../../../outside leaves the view",
    );
}

#[test]
fn fifo_is_refused() {
    refused(
        |v| sh(Command::new("mkfifo").arg(v.join("bin/pipe"))).truncate(0),
        "bin/pipe is not relocatable: only regular files, directories and links can be packaged",
    );
}

#[test]
fn missing_key_says_how_to_provide_one() {
    let dir = tempfile::tempdir().unwrap();
    let view = make_view(dir.path());
    let lock = lock();
    let done = crate::support::package(
        &repo_root(),
        &view,
        &lock,
        ("25.11", "noble"),
        &dir.path().join("d"),
        &[],
    )
    .env_remove("SLURM_FACTORY_GPG_PRIVATE_KEY")
    .failure();
    assert!(
        done.stderr
            .contains("no signing key: set SLURM_FACTORY_GPG_PRIVATE_KEY"),
        "{}",
        done.stderr
    );
    assert!(!dir.path().join("d").exists());
}

#[test]
fn base64_key_and_unsigned_package() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let view = make_view(dir.path());
    let key = TestKey::new("B64", "");
    let lock = lock();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&key.secret_armored);
    let out = dir.path().join("signed");
    crate::support::package(
        &repo_root(),
        &view,
        &lock,
        ("25.11", "noble"),
        &out,
        &["--gpu"],
    )
    .env("SLURM_FACTORY_GPG_PRIVATE_KEY", b64)
    .env_remove("SLURM_FACTORY_GPG_PASSPHRASE")
    .success();
    let gpu = out.join("slurm-25.11-noble-gpu-x86_64.tar.gz");
    assert!(TestKey::verify(
        &key.public_file,
        &out.join("slurm-25.11-noble-gpu-x86_64.tar.gz.asc"),
        &gpu
    ));
    let unsigned = dir.path().join("unsigned");
    crate::support::package(
        &repo_root(),
        &view,
        &lock,
        ("25.11", "noble"),
        &unsigned,
        &["--unsigned"],
    )
    .env_remove("SLURM_FACTORY_GPG_PRIVATE_KEY")
    .success();
    assert!(unsigned.join(format!("{STEM}.tar.gz")).is_file());
    assert!(!unsigned.join(format!("{STEM}.tar.gz.asc")).exists());
}

// Reproducibility: the same view gives the same bytes whatever the thread
// count, on an input of many compression blocks.

/// The compressor's block size (`package::pgzip`).
const BLOCK: u64 = 1 << 20;

/// A 24 MiB view shaped like a real one: the small view plus two large
/// libraries of binary-like bytes.
fn big_view(dir: &Path) -> PathBuf {
    let view = make_view(dir);
    for (rel, len, seed) in [
        ("lib/libslurmfull.so", 16 << 20, 1),
        ("lib/slurm/select_cons_tres.so", 8 << 20, 2),
    ] {
        let path = view.join(rel);
        std::fs::write(&path, crate::support::binary_like(len, seed)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    view
}

/// Each regular file of the view with its data's offset in the package's
/// uncompressed tar stream.
fn stream_offsets(tarball: &Path) -> Vec<(String, u64, u64)> {
    let gz = flate2::read::GzDecoder::new(std::fs::File::open(tarball).unwrap());
    let mut archive = tar::Archive::new(gz);
    let prefix = format!("{STEM}/view/");
    let mut out = Vec::new();
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        if entry.header().entry_type().is_file()
            && let Some(rel) = path.strip_prefix(&prefix)
        {
            out.push((rel.to_string(), entry.raw_file_position(), entry.size()));
        }
    }
    out
}

/// Puts a pointer table (as in a library's relocation data) across every
/// compression-block boundary of the tar stream that lies inside a view
/// file, covering the 32 KiB before it too. That is where a reused deflate
/// state once made the bytes depend on which worker took which block; the
/// sizes, and so the stream's layout, stay the same.
fn plant_pointer_tables(view: &Path, tarball: &Path) -> usize {
    let mut planted = 0;
    for (rel, offset, size) in stream_offsets(tarball) {
        let path = view.join(&rel);
        let mut bytes = std::fs::read(&path).unwrap();
        let mut boundary = offset.div_ceil(BLOCK) * BLOCK;
        while boundary + 2_000 <= offset + size {
            if boundary >= offset + 40_000 {
                let at = (boundary - offset) as usize;
                let pointer = [0xd0, 0x27, 0x04, planted as u8, 0, 0, 0, 0];
                // Offsets in the stream and in the file agree modulo 8 (512).
                for p in at - 40_000..at + 2_000 {
                    bytes[p] = pointer[p % 8];
                }
                planted += 1;
            }
            boundary += BLOCK;
        }
        std::fs::write(&path, bytes).unwrap();
    }
    planted
}

/// `package --unsigned` of `view` into `dir/<name>` with `extra` flags.
fn pack(dir: &Path, view: &Path, name: &str, extra: &[&str], env: &[(&str, &str)]) -> PathBuf {
    let out = dir.join(name);
    let mut args = vec!["--unsigned", "--fingerprint", "abc123"];
    args.extend_from_slice(extra);
    let mut run =
        crate::support::package(&repo_root(), view, &lock(), ("25.11", "noble"), &out, &args)
            .env_remove("SLURM_FACTORY_THREADS")
            .env("SOURCE_DATE_EPOCH", "1764000000");
    for (k, v) in env {
        run = run.env(k, v);
    }
    run.success();
    out
}

/// Every file of a package's output directory, by name.
fn outputs(out: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(out)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// A view whose stream has pointer tables across its block boundaries.
fn reproducibility_view(dir: &Path) -> PathBuf {
    let view = big_view(dir);
    let probe = pack(dir, &view, "probe", &["--threads", "1"], &[]);
    let planted = plant_pointer_tables(&view, &probe.join(format!("{STEM}.tar.gz")));
    assert!(
        planted >= 20,
        "only {planted} block boundaries inside files"
    );
    view
}

#[test]
fn the_same_view_gives_the_same_bytes_at_any_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let view = reproducibility_view(dir.path());
    let reference = outputs(&pack(dir.path(), &view, "t1", &["--threads", "1"], &[]));
    let names: Vec<&str> = reference.keys().map(|k| k.as_str()).collect();
    for suffix in [".tar.gz", ".tar.gz.sha256", ".manifest.json", ".spdx.json"] {
        assert!(
            names.contains(&format!("{STEM}{suffix}").as_str()),
            "{names:?}"
        );
    }
    let tarball = &reference[&format!("{STEM}.tar.gz")];
    assert!(tarball.len() > 4 << 20, "{} bytes", tarball.len());
    type Run<'a> = (&'a str, &'a [&'a str], &'a [(&'a str, &'a str)]);
    let runs: [Run; 6] = [
        ("t2", &["--threads", "2"], &[]),
        ("t3", &["--threads", "3"], &[]),
        ("t8", &["--threads", "8"], &[]),
        ("default-a", &[], &[]),
        ("default-b", &[], &[]),
        ("env-3", &[], &[("SLURM_FACTORY_THREADS", "3")]),
    ];
    for (name, flags, env) in runs {
        let got = outputs(&pack(dir.path(), &view, name, flags, env));
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            reference.keys().collect::<Vec<_>>(),
            "{name}"
        );
        for (file, bytes) in &reference {
            assert!(
                got[file] == *bytes,
                "{name}: {file} differs from the 1-thread pack"
            );
        }
    }
    // And it is a gzip file GNU gzip accepts whole.
    sh(Command::new("gzip")
        .arg("-t")
        .arg(dir.path().join("t8").join(format!("{STEM}.tar.gz"))));
}

#[test]
fn split_parts_are_the_same_at_any_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let view = reproducibility_view(dir.path());
    let one = outputs(&pack(
        dir.path(),
        &view,
        "t1",
        &["--threads", "1", "--split-size", "2M"],
        &[],
    ));
    let parts = one
        .keys()
        .filter(|k| k.ends_with(".sha256") && k.contains(".part-"))
        .count();
    assert!(parts >= 3, "{:?}", one.keys());
    let eight = outputs(&pack(
        dir.path(),
        &view,
        "t8",
        &["--threads", "8", "--split-size", "2M"],
        &[],
    ));
    assert_eq!(
        one.keys().collect::<Vec<_>>(),
        eight.keys().collect::<Vec<_>>()
    );
    for (file, bytes) in &one {
        assert!(
            eight[file] == *bytes,
            "{file} differs between 1 and 8 threads"
        );
    }
}

#[test]
fn a_thread_count_of_zero_or_not_a_number_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let view = make_view(dir.path());
    let out = dir.path().join("out");
    let zero = crate::support::package(
        &repo_root(),
        &view,
        &lock(),
        ("25.11", "noble"),
        &out,
        &["--threads", "0", "--unsigned"],
    )
    .code(2);
    assert!(
        zero.stderr.contains("--threads") && zero.stderr.contains("1..=1024"),
        "{}",
        zero.stderr
    );
    let word = crate::support::package(
        &repo_root(),
        &view,
        &lock(),
        ("25.11", "noble"),
        &out,
        &["--unsigned"],
    )
    .env("SLURM_FACTORY_THREADS", "many")
    .code(2);
    assert!(word.stderr.contains("many"), "{}", word.stderr);
    assert!(!out.exists(), "nothing is written on a usage error");
}
