//! The build stages with real Spack (pinned, from `.ci/spack`) in real Podman,
//! on the tests' Debian 12 toolchain, whose image the toolkit builds from its
//! own recipe. A rehearsal (`spack install --fake`) of the shipped deps
//! environment and of one Slurm cell; a real compile of test-only recipes
//! carried to an admin's `module load`; a real failing build.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::support::gpg::TestKey;
use crate::support::spack::{self, bookworm_project};
use crate::support::{Done, Project, sh};

const TC: &str = "bookworm";

/// Spack's misc cache (its index of the package repository, about 100 s to
/// make on two cores) shared by every build in this binary; Spack locks it.
fn shared_cache() -> &'static Path {
    static CACHE: OnceLock<tempfile::TempDir> = OnceLock::new();
    CACHE.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

/// One build site: a state directory (store, caches, work) and a signing key.
struct Site {
    state: tempfile::TempDir,
    key: TestKey,
}

impl Site {
    fn new() -> Site {
        let state = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(state.path().join("cache")).unwrap();
        std::os::unix::fs::symlink(shared_cache(), state.path().join("cache/misc")).unwrap();
        Site {
            state,
            key: TestKey::new("Builder", "pass phrase 42"),
        }
    }

    fn state(&self) -> &Path {
        self.state.path()
    }

    /// The toolkit in `project` with Podman, this site's state and key, and
    /// the offline Spack sources for the image build.
    fn run(&self, project: &Project, args: &[&str]) -> crate::support::Run {
        let mut full: Vec<&str> = args.to_vec();
        full.extend_from_slice(&["--engine", "podman", "--state-dir"]);
        full.push(self.state().to_str().unwrap());
        project
            .xtask(&full)
            .envs(spack::image_env())
            .env("SLURM_FACTORY_GPG_PRIVATE_KEY", &self.key.secret_armored)
            .env("SLURM_FACTORY_GPG_PASSPHRASE", &self.key.passphrase)
            .env_remove("SLURM_FACTORY_BUCKET")
            .env_remove("SLURM_FACTORY_BUCKET_PREFIX")
    }

    fn store(&self) -> PathBuf {
        self.state().join("store")
    }
}

/// The toolkit's own image for bookworm, built once (tests share its tag).
fn image(project: &Project, site: &Site) {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        site.run(project, &["image", "--toolchain", TC, "--build"])
            .success();
    });
}

/// Names of the specs in a mirror (`v3/manifests/spec/<name>/`).
fn spec_names(mirror: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(mirror.join("v3/manifests/spec"))
        .unwrap_or_else(|e| panic!("{}: {e}", mirror.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

// ---------------------------------------------------------------------------
// The rehearsal: the shipped environments, `spack install --fake`.

struct Rehearsal {
    project: Project,
    site: Site,
    stage1: Done,
    keys_before_index: bool,
    stage2: Done,
}

impl Rehearsal {
    fn mirror(&self, what: &str) -> PathBuf {
        self.site
            .store()
            .join(format!("rehearsal/{TC}/slurm/{what}"))
    }
}

/// Stage 1, the index job, stage 2: in that order, as the workflows run them.
fn rehearsal() -> &'static Rehearsal {
    static R: OnceLock<Rehearsal> = OnceLock::new();
    R.get_or_init(|| {
        let project = bookworm_project();
        let site = Site::new();
        image(&project, &site);
        let net = ["--network", "none", "--rehearse"];
        let stage1 = site
            .run(
                &project,
                &[&["build-deps", "--toolchain", TC][..], &net].concat(),
            )
            .success();
        let keys = site.store().join(format!(
            "rehearsal/{TC}/slurm/deps/v3/manifests/key/keys.manifest.json"
        ));
        let keys_before_index = keys.exists();
        site.run(
            &project,
            &[&["index", "--toolchain", TC][..], &net].concat(),
        )
        .success();
        let stage2 = site
            .run(
                &project,
                &[
                    &["build-slurm", "--slurm", "25.11", "--toolchain", TC][..],
                    &net,
                ]
                .concat(),
            )
            .success();
        Rehearsal {
            project,
            site,
            stage1,
            keys_before_index,
            stage2,
        }
    })
}

#[test]
fn stage_one_rehearsal_pushes_a_signed_mirror_a_fresh_spack_can_read() {
    let r = rehearsal();
    let fpr = r.site.key.fingerprint();
    // The toolkit's own mirror checker passed on what real Spack pushed.
    assert!(
        r.stage1
            .stdout
            .contains(&format!("specs, signed by {fpr}, blobs intact")),
        "{}",
        r.stage1.stdout
    );
    assert!(
        r.stage1
            .stdout
            .contains("not recorded in the store's state: a rehearsal"),
        "{}",
        r.stage1.stdout
    );
    let mirror = r.mirror("deps");
    let names = spec_names(&mirror);
    for shipped in [
        "curl", "munge", "openmpi", "pmix", "prrte", "hwloc", "json-c",
    ] {
        assert!(names.iter().any(|n| n == shipped), "{shipped} in {names:?}");
    }
    // Only the rehearsal's mirrors were written.
    assert!(
        !r.site.store().join(TC).exists(),
        "the real mirrors are untouched"
    );
    // Build jobs leave the key index to the index job.
    assert!(!r.keys_before_index);
    assert!(mirror.join("v3/manifests/key/keys.manifest.json").is_file());

    // A second Spack, empty GPG home: trusts the published key, lists every spec.
    let scratch = tempfile::tempdir().unwrap();
    let scope = scratch.path().join("scope");
    std::fs::create_dir_all(&scope).unwrap();
    std::fs::write(
        scope.join("mirrors.yaml"),
        format!(
            "mirrors:\n  rehearsal:\n    url: file://{}\n    signed: true\n",
            mirror.display()
        ),
    )
    .unwrap();
    let spack = |args: &[&str]| {
        sh(spack::spack(scratch.path())
            .arg("-C")
            .arg(&scope)
            .args(args))
    };
    spack(&["buildcache", "keys", "--install", "--trust"]);
    let trusted = spack(&["gpg", "list", "--trusted"]);
    assert!(trusted.contains(&fpr), "{trusted}");
    let listed = spack(&["buildcache", "list", "--allarch"]);
    for name in &names {
        assert!(
            listed.contains(&format!("{name}@")),
            "{name} not listed:\n{listed}"
        );
    }
}

#[test]
fn stage_two_rehearsal_builds_only_slurm_from_source() {
    let r = rehearsal();
    let out = &r.stage2.stdout;
    assert!(
        out.contains("25.11/bookworm/cpu: built from source: 1 (slurm)"),
        "{out}"
    );
    let extracted: usize = out
        .lines()
        .find_map(|l| l.strip_prefix("25.11/bookworm/cpu: extracted from the buildcache: "))
        .expect("the install report")
        .parse()
        .unwrap();
    assert!(extracted > 50, "{extracted} packages from stage 1's cache");
    // The slurm mirror holds what stage 2 built, signed.
    let slurm = r.mirror("25.11");
    assert_eq!(spec_names(&slurm), ["slurm"]);
    assert!(out.contains(&format!(
        "{}: 1 specs, signed by {}, blobs intact",
        slurm.display(),
        r.site.key.fingerprint()
    )));
    // The view and its module were handed over, packaged under a rehearsal's name.
    let dist = r.site.state().join("dist");
    let stem = "slurm-25.11-bookworm-cpu-x86_64-rehearsal";
    assert!(dist.join(format!("{stem}.tar.gz")).is_file(), "{out}");
    let listing = sh(std::process::Command::new("tar")
        .arg("-tzf")
        .arg(dist.join(format!("{stem}.tar.gz"))));
    for entry in [
        "view/bin/slurm",
        "view/lib/libmunge.so",
        "modules/slurm/25.11-bookworm.lua",
    ] {
        assert!(
            listing.contains(&format!("{stem}/{entry}")),
            "{entry}:\n{listing}"
        );
    }
    // publish refuses it by name.
    let store = tempfile::tempdir().unwrap();
    let refused = r
        .project
        .xtask(&[
            "publish",
            "--to",
            "local",
            "--dir",
            dist.to_str().unwrap(),
            "--store-dir",
            store.path().to_str().unwrap(),
        ])
        .failure();
    assert!(
        refused
            .stderr
            .contains(&format!("{stem} is a rehearsal's package")),
        "{}",
        refused.stderr
    );
    assert!(std::fs::read_dir(store.path()).unwrap().next().is_none());
}

#[test]
fn the_two_mirrors_together_install_the_cell_from_binaries_only() {
    let r = rehearsal();
    // The environment stage 2 used, with the container's paths mapped to this host's.
    let work = r.site.state().join("work/slurm-25.11-bookworm-cpu");
    let scratch = tempfile::tempdir().unwrap();
    let env = scratch.path().join("env");
    std::fs::create_dir_all(&env).unwrap();
    let host = spack::OnHost {
        repo: &r.project.root.join("spack-repo"),
        scratch: scratch.path(),
        templates: &work.join("env/templates"),
        store: Some(&r.site.store()),
    };
    let yaml = host
        .map(&std::fs::read_to_string(work.join("env/spack.yaml")).unwrap())
        // No modules: a fake Python (from the rehearsal) cannot answer
        // the questions module generation asks it.
        .replace("      enable:\n      - lmod\n", "      enable: []\n");
    std::fs::write(env.join("spack.yaml"), yaml).unwrap();
    std::fs::copy(work.join("spack/env/spack.lock"), env.join("spack.lock")).unwrap();
    let spack = |args: &[&str]| sh(spack::spack(scratch.path()).arg("-e").arg(&env).args(args));
    spack(&["buildcache", "keys", "--install", "--trust"]);
    let out = spack(&["install", "--cache-only", "--fail-fast"]);
    assert!(!out.contains("installing from source"), "{out}");
    assert!(out.contains("Extracting slurm-25-11-6-1-"), "{out}");
}

// ---------------------------------------------------------------------------
// A real compile: program -> liba -> libb, from sources on this machine.

/// What the real-compile project builds: liba (and with it libb) in stage 1,
/// the Slurm stand-in in stage 2.
const COMPILE_ENV: &str = "deps:\n  specs: [liba]\n  gpu_specs: []\nslurm:\n  package: slurm\n  with: []\n  variants: []\n  gpu_variants: []\npackages: {}\nbuild_only: [compiler-wrapper, gcc, gmake]\n";

/// The bookworm project with the test-only recipes of
/// `tests/fixtures/real-compile/`, each with its sources packed beside it as
/// a `file://` tarball and that tarball's checksum written into the recipe.
fn compile_project() -> Project {
    let project = bookworm_project();
    let fixtures = crate::support::repo_root().join("tests/fixtures/real-compile");
    let packages = project
        .root
        .join("spack-repo/spack_repo/slurm_factory/packages");
    let scratch = tempfile::tempdir().unwrap();
    for (name, version) in [("libb", "1.0"), ("liba", "1.0"), ("slurm", "25-11-6-1")] {
        let dir = packages.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let top = format!("{name}-{version}");
        let src = scratch.path().join(&top);
        crate::support::copy_tree(&fixtures.join(name), &src);
        std::fs::remove_file(src.join("package.py")).unwrap();
        let tarball = dir.join(format!("{top}.tar.gz"));
        sh(std::process::Command::new("tar")
            .args([
                "--sort=name",
                "--mtime=@0",
                "--owner=0",
                "--group=0",
                "-czf",
            ])
            .arg(&tarball)
            .arg("-C")
            .arg(scratch.path())
            .arg(&top));
        let sha = sha2_hex(&std::fs::read(&tarball).unwrap());
        let recipe = std::fs::read_to_string(fixtures.join(name).join("package.py"))
            .unwrap()
            .replace("@SHA256@", &sha);
        std::fs::write(dir.join("package.py"), recipe).unwrap();
    }
    project.edit("spack-env/environment.yaml", |_| COMPILE_ENV.to_string());
    project
}

fn sha2_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn a_real_compile_goes_from_spack_to_an_admins_module_load() {
    let project = compile_project();
    let site = Site::new();
    image(&project, &site);
    let offline = ["--network", "none"];
    let deps = site
        .run(
            &project,
            &[&["build-deps", "--toolchain", TC][..], &offline].concat(),
        )
        .success();
    let built = deps
        .stdout
        .lines()
        .find(|l| l.starts_with("deps/bookworm/cpu: built from source: "))
        .unwrap_or_else(|| panic!("no install report:\n{}", deps.stdout));
    assert!(built.contains("liba") && built.contains("libb"), "{built}");
    site.run(
        &project,
        &[&["index", "--toolchain", TC][..], &offline].concat(),
    )
    .success();
    let dist = site.state().join("dist");
    // Verified inside, as the workflow runs it; offline, the clean
    // container cannot install Lmod, so the module check fails, and the
    // cell's record names it.
    let slurm = site
        .run(
            &project,
            &[
                &["build-slurm", "--slurm", "25.11", "--toolchain", TC][..],
                &offline,
            ]
            .concat(),
        )
        .failure();
    assert!(
        slurm
            .stdout
            .contains("25.11/bookworm/cpu: built from source: 1 (slurm)"),
        "{}",
        slurm.stdout
    );
    assert!(
        slurm
            .stderr
            .contains("slurm-25.11-bookworm-cpu-x86_64.tar.gz failed verification (module)"),
        "{}",
        slurm.stderr
    );
    let stem = "slurm-25.11-bookworm-cpu-x86_64";
    let tarball = dist.join(format!("{stem}.tar.gz"));
    assert!(tarball.is_file(), "{}", slurm.stdout);
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            site.state()
                .join(format!("store/{TC}/slurm/25.11/state.json")),
        )
        .unwrap(),
    )
    .unwrap();
    let cpu = &state["cells"]["cpu"];
    assert_eq!(cpu["status"], "failed", "{state}");
    assert_eq!(
        cpu["verify"],
        serde_json::json!({"passed": false, "failed": ["module"]}),
        "{state}"
    );
    assert!(cpu["seconds"].as_u64().is_some(), "{state}");

    // verify: relocated in a clean container, every ELF file resolves with
    // no LD_LIBRARY_PATH (liba finds libb through $ORIGIN).
    let verified = project
        .xtask(&[
            "verify",
            "--tarball",
            tarball.to_str().unwrap(),
            "--engine",
            "podman",
            "--network",
            "host",
        ])
        .success();
    assert!(
        verified.stdout.contains("relocatable") && !verified.stdout.contains("FAIL"),
        "{}",
        verified.stdout
    );

    // publish to S3, download to a new prefix as an admin would.
    let s3 = crate::support::s3::S3Server::start();
    project
        .xtask(&[
            "publish",
            "--to",
            "s3",
            "--bucket",
            &s3.bucket,
            "--dir",
            dist.to_str().unwrap(),
        ])
        .envs(s3.env())
        .success();
    let admin = tempfile::tempdir().unwrap();
    let prefix = admin.path().join("slurm-25.11");
    let done = project
        .xtask(&[
            "download",
            "--from",
            "s3",
            "--bucket",
            &s3.bucket,
            "--slurm",
            "25.11",
            "--toolchain",
            TC,
            "--prefix",
            prefix.to_str().unwrap(),
            "--trusted-key",
            site.key.public_file.to_str().unwrap(),
        ])
        .envs(s3.env())
        .success();
    assert!(
        done.stdout.contains("module load slurm/25.11-bookworm"),
        "{}",
        done.stdout
    );

    // Real Lmod loads the module from the new prefix; the program runs.
    let script = format!(
        "source /usr/share/lmod/lmod/init/bash\nunset SLURM_INSTALL_PREFIX LD_LIBRARY_PATH\nset -e\nmodule use {}\nmodule load slurm/25.11-bookworm\ncommand -v scontrol\nscontrol --version\n",
        prefix.join("modules").display()
    );
    let loaded = sh(std::process::Command::new("bash").arg("-c").arg(&script));
    assert!(
        loaded.contains(&format!("{}/view/bin/scontrol", prefix.display())),
        "{loaded}"
    );
    assert!(loaded.contains("slurm 25.11.6 (liba says 43)"), "{loaded}");
    // And without any module: slurmd under systemd loads none.
    let direct = sh(std::process::Command::new(prefix.join("view/sbin/slurmd"))
        .arg("-C")
        .env_remove("LD_LIBRARY_PATH"));
    assert!(direct.starts_with("NodeName=localhost"), "{direct}");
    let direct =
        sh(std::process::Command::new(prefix.join("view/bin/srun")).env_remove("LD_LIBRARY_PATH"));
    assert!(direct.contains("liba says 43"), "{direct}");
    let dynamic = sh(std::process::Command::new("readelf")
        .arg("-d")
        .arg(prefix.join("view/lib/liba.so")));
    assert!(
        dynamic.contains("[$ORIGIN"),
        "liba's RUNPATH is relative:\n{dynamic}"
    );
}

// ---------------------------------------------------------------------------
// A build that fails for real.

#[test]
fn a_failing_build_exits_with_spacks_status_and_a_redacted_debug_bundle() {
    let project = bookworm_project();
    let dir = project
        .root
        .join("spack-repo/spack_repo/slurm_factory/packages/broken");
    std::fs::create_dir_all(&dir).unwrap();
    // A recipe whose build step fails, with its source beside it.
    let scratch = tempfile::tempdir().unwrap();
    let src = scratch.path().join("broken-1.0");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(
        src.join("Makefile"),
        "all:\n\t@echo 'broken on purpose: this build fails'; exit 3\ninstall:\n",
    )
    .unwrap();
    let tarball = dir.join("broken-1.0.tar.gz");
    sh(std::process::Command::new("tar")
        .arg("-czf")
        .arg(&tarball)
        .arg("-C")
        .arg(scratch.path())
        .arg("broken-1.0"));
    std::fs::write(
        dir.join("package.py"),
        format!(
            "import os\n\nfrom spack_repo.builtin.build_systems.makefile import MakefilePackage\n\nfrom spack.package import *\n\n\n\
             class Broken(MakefilePackage):\n    \"\"\"Test-only: fails to build.\"\"\"\n\n    homepage = \"https://example.invalid\"\n    \
             url = \"file://\" + os.path.join(os.path.dirname(__file__), \"broken-1.0.tar.gz\")\n\n    \
             version(\"1.0\", sha256=\"{}\")\n\n    depends_on(\"c\", type=\"build\")\n",
            sha2_hex(&std::fs::read(&tarball).unwrap())
        ),
    )
    .unwrap();
    // Only the broken package (and what it needs, which builds offline): the
    // shipped specs' sources cannot be fetched here.
    project.edit("spack-env/environment.yaml", |_| {
        COMPILE_ENV.replace("specs: [liba]", "specs: [broken]")
    });
    let site = Site::new();
    image(&project, &site);
    // The store is a real S3 server on loopback, which Spack (boto3) in the
    // container reaches through the host's network: the container gets the
    // AWS variables, so Spack's build environment file holds the secret.
    let s3 = crate::support::s3::S3Server::start();
    let secret: &str = &s3.secret_key;
    let done = site
        .run(
            &project,
            &["build-deps", "--toolchain", TC, "--network", "host"],
        )
        .envs(s3.env())
        .env("SLURM_FACTORY_BUCKET", &s3.bucket)
        .failure();
    assert!(
        done.stderr
            .contains("deps/bookworm/cpu: Spack failed in phase 'install' (exit 1); debug bundle:"),
        "{}\n{}",
        done.stdout,
        done.stderr
    );
    // The failure is recorded in the bucket, so the next plan builds the cell again.
    let state: serde_json::Value = serde_json::from_slice(
        &s3.object("bookworm/slurm/deps/state.json")
            .expect("the failure is recorded in the bucket"),
    )
    .unwrap();
    assert_eq!(state["cells"]["cpu"]["status"], "failed", "{state}");
    let debug = site.state().join("work/deps-bookworm-cpu/debug");
    assert!(debug.join("spack.yaml").is_file());
    let files = walk(&debug.join("stage"));
    // Spack's build output (per phase while a build runs) is in the bundle.
    let logs: Vec<&PathBuf> = files
        .iter()
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("spack-build-") && name.ends_with("-out.txt")
        })
        .collect();
    assert!(
        logs.iter().any(|p| std::fs::read_to_string(p)
            .unwrap()
            .contains("broken on purpose: this build fails")),
        "no build log with the failure among {files:?}"
    );
    let env = std::fs::read_to_string(
        files
            .iter()
            .find(|p| p.ends_with("spack-build-env.txt"))
            .expect("Spack's build environment in the bundle"),
    )
    .unwrap();
    assert!(
        env.contains("AWS_SECRET_ACCESS_KEY=***") || env.contains("AWS_SECRET_ACCESS_KEY='***'"),
        "the secret is redacted, the name kept:\n{env}"
    );
    for p in walk(&debug) {
        let text = String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned();
        assert!(
            !text.contains(secret) && !text.contains(&site.key.passphrase),
            "{} leaks a secret",
            p.display()
        );
    }
    assert!(
        done.stdout.contains("--env=AWS_SECRET_ACCESS_KEY "),
        "{}",
        done.stdout
    );
    assert!(!format!("{}{}", done.stdout, done.stderr).contains(secret));
    assert!(!site.state().join("work/deps-bookworm-cpu/keys").exists());
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect()
}

// ---------------------------------------------------------------------------
// Every rendered environment, checked by real Spack.

/// Renders every cell's environment of the real matrix into `dir`.
fn render_all(dir: &Path) -> Vec<PathBuf> {
    let cells: serde_json::Value = serde_json::from_str(
        &crate::support::xtask(&["matrix", "--json"])
            .success()
            .stdout,
    )
    .unwrap();
    let mut out = Vec::new();
    let toolchains: Vec<String> = cells
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["toolchain"].as_str().unwrap().to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut args: Vec<Vec<String>> = Vec::new();
    for tc in &toolchains {
        for gpu in [false, true] {
            let mut a = vec![
                "--stage".into(),
                "deps".into(),
                "--toolchain".into(),
                tc.clone(),
            ];
            if gpu {
                a.push("--gpu".into());
            }
            args.push(a);
        }
    }
    for c in cells.as_array().unwrap() {
        let mut a = vec![
            "--stage".to_string(),
            "slurm".into(),
            "--slurm".into(),
            c["version"].as_str().unwrap().into(),
            "--toolchain".into(),
            c["toolchain"].as_str().unwrap().into(),
        ];
        if c["variant"] == "gpu" {
            a.push("--gpu".into());
        }
        args.push(a);
    }
    for (i, a) in args.iter().enumerate() {
        let env = dir.join(format!("env-{i:02}"));
        let mut full = vec!["spack-env"];
        full.extend(a.iter().map(String::as_str));
        full.extend(["--out", env.to_str().unwrap()]);
        crate::support::xtask(&full).success();
        out.push(env);
    }
    out
}

#[test]
fn every_rendered_environment_passes_spacks_schema_and_two_concretize() {
    let scratch = tempfile::tempdir().unwrap();
    let envs = render_all(scratch.path());
    assert_eq!(envs.len(), 48, "12 deps and 36 slurm environments");
    // Spack's own validation of each file against its environment schema,
    // in one Spack process.
    let script = scratch.path().join("validate.py");
    std::fs::write(
        &script,
        "import sys\nimport spack.config, spack.schema.env, spack.util.spack_yaml as syaml\n\
         for d in sys.argv[1:]:\n    with open(d + '/spack.yaml') as f:\n        data = syaml.load(f)\n    \
         spack.config.validate(data, spack.schema.env.schema, d + '/spack.yaml')\n    print('valid', d)\n",
    )
    .unwrap();
    let out = sh(spack::spack(scratch.path())
        .arg("python")
        .arg(&script)
        .args(&envs));
    assert_eq!(
        out.lines().filter(|l| l.starts_with("valid ")).count(),
        48,
        "{out}"
    );
    // The check can fail: an unknown key is refused.
    let bad = scratch.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(
        bad.join("spack.yaml"),
        std::fs::read_to_string(envs[0].join("spack.yaml"))
            .unwrap()
            .replace("  concretizer:", "  concretiser:"),
    )
    .unwrap();
    let refused = spack::spack(scratch.path())
        .arg("python")
        .arg(&script)
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!refused.status.success());

    // Two concretize for real on this Debian 12 host: a deps environment and
    // a GPU Slurm cell, with the container's paths mapped to scratch ones.
    let repo = crate::support::repo_root().join("spack-repo");
    for (name, env) in [
        ("deps noble cpu", &envs[2]),
        ("slurm gpu", envs.last().unwrap()),
    ] {
        let host = spack::OnHost {
            repo: &repo,
            scratch: scratch.path(),
            templates: &env.join("templates"),
            store: None,
        };
        let mapped = host.map(&std::fs::read_to_string(env.join("spack.yaml")).unwrap());
        std::fs::write(env.join("spack.yaml"), mapped).unwrap();
        let out = sh(spack::spack(scratch.path())
            .arg("-e")
            .arg(env)
            .args(["concretize", "--fresh"]));
        assert!(env.join("spack.lock").is_file(), "{name}: {out}");
    }
}
