//! Benchmarks against the peer tools, measured in the same run on the same
//! data, printed as ratios. `bench package`: our packager vs `tar -czf` and
//! `tar -I pigz -cf` on a generated Slurm-like tree.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::matrix::{Cell, Matrix, Variant};
use crate::package;
use crate::process;
use crate::project::Project;

mod support;

use support::{
    BENCH_LOCK, LoopbackServer, XorShift, cpu_seconds, generate_view, mib, throwaway_key,
    tree_size, verdict, warm_cache,
};

/// What to measure against its peer tools.
#[derive(Debug, Clone, Copy)]
pub enum What {
    Package,
    Upload,
    Download,
}

/// `bench`: one measurement, on generated input of `size_mib`, in `dir`
/// (kept between runs: the input is reused).
pub struct Job {
    pub what: What,
    pub size_mib: u64,
    pub dir: Option<PathBuf>,
}

pub fn run(project: &Project, job: &Job) -> Result<()> {
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: an unoptimized build; for real figures run `cargo xtask-release bench …`"
        );
    }
    match job.what {
        What::Package => bench_package(project, job),
        What::Upload => bench_upload(project, job),
        What::Download => bench_download(project, job),
    }
}

/// How the benchmarks package: one unsplit tarball, every core.
fn package_options<'a>(
    matrix: &Matrix,
    view: &'a Path,
    lock: &'a Path,
    out: &'a Path,
    keyring: Option<&'a crate::sign::Keyring>,
) -> package::Options<'a> {
    package::Options {
        view,
        lock,
        out,
        arch: matrix.arch.clone(),
        fingerprint: None,
        split_size: u64::MAX,
        threads: package::threads(),
        keyring,
        rehearsal: false,
    }
}

struct Measured {
    name: &'static str,
    time: Duration,
    size: u64,
}

fn bench_package(project: &Project, job: &Job) -> Result<()> {
    let matrix = &project.matrix;
    let work = job
        .dir
        .clone()
        .unwrap_or_else(|| project.state_dir().join("bench"));
    let tree = work.join("tree");
    let view = tree.join("view");
    if !view.join(".complete").exists() {
        outln!(
            "generating a {} MiB Slurm-like view in {} …",
            job.size_mib,
            view.display()
        );
        let _ = std::fs::remove_dir_all(&tree);
        generate_view(&view, job.size_mib << 20)?;
        std::fs::write(view.join(".complete"), b"")?;
    }
    let lock = work.join("spack.lock");
    std::fs::write(&lock, BENCH_LOCK)?;
    let out = work.join("out");
    let (bytes, files) = tree_size(&view)?;
    outln!(
        "input: {:.0} MiB in {files} files; {} cores",
        bytes as f64 / (1 << 20) as f64,
        package::threads()
    );
    // Read everything once so every contender starts from a warm page cache.
    warm_cache(&view)?;

    let cell = Cell {
        release: Some(&matrix.slurm[0]),
        toolchain: &matrix.toolchains[0],
        variant: Variant::Cpu,
        matrix,
    };
    let _ = std::fs::remove_dir_all(&out);
    let opts = package_options(matrix, &view, &lock, &out, None);
    let started = Instant::now();
    let pkg = package::package(project, &cell, &opts)?;
    let ours = Measured {
        name: "cargo xtask package",
        time: started.elapsed(),
        size: pkg.size,
    };
    outln!(
        "{:<22} {:>7.2} s  {:>8.1} MiB",
        ours.name,
        ours.time.as_secs_f64(),
        mib(ours.size)
    );

    let tar_out = work.join("peer.tar.gz");
    let mut peers = Vec::new();
    for (name, args) in [
        ("tar -czf", vec!["-czf"]),
        ("tar -I pigz -cf", vec!["-I", "pigz", "-cf"]),
    ] {
        let _ = std::fs::remove_file(&tar_out);
        let started = Instant::now();
        let sh = process::shell()?;
        let tar = sh
            .cmd("tar")
            .args(&args)
            .arg(&tar_out)
            .arg("-C")
            .arg(&tree)
            .arg("view");
        let code = process::status(tar).with_context(|| format!("running {name}"))?;
        if code != 0 {
            bail!("{name} failed (is pigz installed? `apt-get install pigz`)");
        }
        let m = Measured {
            name,
            time: started.elapsed(),
            size: std::fs::metadata(&tar_out)?.len(),
        };
        outln!(
            "{:<22} {:>7.2} s  {:>8.1} MiB",
            m.name,
            m.time.as_secs_f64(),
            mib(m.size)
        );
        peers.push(m);
    }
    let _ = std::fs::remove_file(&tar_out);
    let _ = std::fs::remove_dir_all(&out);

    let (gzip, pigz) = (&peers[0], &peers[1]);
    let vs_gzip = gzip.time.as_secs_f64() / ours.time.as_secs_f64();
    let vs_pigz = pigz.time.as_secs_f64() / ours.time.as_secs_f64();
    let size_ratio = ours.size as f64 / gzip.size as f64;
    outln!();
    outln!(
        "speed vs tar -czf:        {vs_gzip:.2}x  (goal >= 1.80x) {}",
        verdict(vs_gzip >= 1.8)
    );
    outln!(
        "speed vs tar -I pigz:     {vs_pigz:.2}x  (goal >= 1.00x) {}",
        verdict(vs_pigz >= 1.0)
    );
    outln!(
        "size vs tar -czf:         {size_ratio:.3}  (goal <= 1.050) {}",
        verdict(size_ratio <= 1.05)
    );
    outln!(
        "(ours also computes the SHA-256 and the manifest in the same pass; the peers do neither)"
    );
    Ok(())
}

/// Rounds per contender in the transfer benchmarks.
const ROUNDS: usize = 3;

/// `bench upload`: one file to a loopback S3 server (s3s-fs, SigV4) with the
/// toolkit's S3 store and with `aws s3 cp`, same file, same server, same run.
fn bench_upload(project: &Project, job: &Job) -> Result<()> {
    let sh = process::shell()?;
    use crate::store::{Put, Store, s3::S3Store};
    let work = job
        .dir
        .clone()
        .unwrap_or_else(|| project.state_dir().join("bench-upload"));
    std::fs::create_dir_all(&work)?;
    let payload = work.join(format!("payload-{}m.bin", job.size_mib));
    // What `package` writes beside a tarball and `publish` reads: its SHA-256.
    let sum_file = work.join(format!("payload-{}m.bin.sha256", job.size_mib));
    if std::fs::metadata(&payload).map(|m| m.len()).ok() != Some(job.size_mib << 20)
        || !sum_file.exists()
    {
        // Compressed tarballs do not compress further: random-like bytes.
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let mut f = std::io::BufWriter::new(std::fs::File::create(&payload)?);
        let mut block = vec![0u8; 1 << 20];
        for _ in 0..job.size_mib {
            for chunk in block.chunks_mut(8) {
                chunk.copy_from_slice(&rng.next().to_le_bytes()[..chunk.len()]);
            }
            f.write_all(&block)?;
        }
        f.flush()?;
        drop(f);
        std::fs::write(&sum_file, crate::store::local::sha256_file(&payload)?)?;
    }
    let sha256 = std::fs::read_to_string(&sum_file)?.trim().to_string();
    let data = work.join("server");
    let _ = std::fs::remove_dir_all(&data);
    let bucket = "bench";
    std::fs::create_dir_all(data.join(bucket))?;
    let (access, secret) = ("AKIABENCH", "bench-secret");
    let server = LoopbackServer::start(
        "s3s-fs (install it: cargo install --locked s3s-fs@0.14.1 --features binary)",
        |port| {
            let server = sh.cmd("s3s-fs");
            let server = server.args(["--host", "127.0.0.1", "--port", &port.to_string()]);
            let server = server.args(["--access-key", access, "--secret-key", secret]);
            process::spawnable(server.arg(&data))
        },
    )?;
    let endpoint = server.url();
    let result = (|| -> Result<()> {
        let size = std::fs::metadata(&payload)?.len();
        // Both contenders read the file from a warm page cache.
        std::io::copy(&mut std::fs::File::open(&payload)?, &mut std::io::sink())?;
        outln!(
            "uploading {:.0} MiB to s3s-fs at {endpoint}; {} cores",
            mib(size),
            package::threads()
        );
        let store = S3Store::for_endpoint(bucket, &endpoint, access, secret)?;
        let pid = server.child.id();
        let put = Put {
            sha256: sha256.clone(),
            size,
            content_type: "application/gzip",
            cache_control: None,
        };
        let ours_run = || -> Result<()> {
            store.put(
                "ours.bin",
                &payload,
                &put,
                &indicatif::ProgressBar::hidden(),
            )
        };
        let peer_run = || -> Result<()> {
            let aws = sh
                .cmd("aws")
                .args([
                    "s3",
                    "cp",
                    "--only-show-errors",
                    "--endpoint-url",
                    &endpoint,
                ])
                .arg(&payload)
                .arg(format!("s3://{bucket}/peer.bin"))
                .env("AWS_ACCESS_KEY_ID", access)
                .env("AWS_SECRET_ACCESS_KEY", secret)
                .env("AWS_DEFAULT_REGION", "us-east-1")
                .env("AWS_EC2_METADATA_DISABLED", "true");
            let code = process::status(aws).context("install it: pip install awscli")?;
            if code != 0 {
                bail!("aws s3 cp failed");
            }
            Ok(())
        };
        // Rounds in alternating order; before each upload the server's
        // earlier writes are flushed (`sync`), so neither pays for the
        // other's writeback. The best of each is compared.
        let mut best = [Duration::MAX; 2];
        for round in 0..ROUNDS {
            for which in [round % 2, 1 - round % 2] {
                let _ =
                    std::fs::remove_file(data.join(bucket).join(["ours.bin", "peer.bin"][which]));
                let _ = process::status(sh.cmd("sync"));
                let cpu = cpu_seconds(pid);
                let started = Instant::now();
                if which == 0 {
                    ours_run()?
                } else {
                    peer_run()?
                }
                let took = started.elapsed();
                outln!(
                    "{:<22} {:>7.2} s  {:>8.1} MiB/s  server CPU {:.2} s",
                    ["cargo xtask publish", "aws s3 cp"][which],
                    took.as_secs_f64(),
                    mib(size) / took.as_secs_f64(),
                    cpu_seconds(pid) - cpu
                );
                best[which] = best[which].min(took);
            }
        }
        let [ours, peer] = best;
        for key in ["ours.bin", "peer.bin"] {
            let stat = store
                .stat(key)?
                .with_context(|| format!("{key} is not on the server"))?;
            if stat.size != size {
                bail!("{key} has {} bytes on the server, not {size}", stat.size);
            }
        }
        outln!(
            "best of {ROUNDS}: ours {:.2} s (its SHA-256 check in the same read), aws s3 cp {:.2} s",
            ours.as_secs_f64(),
            peer.as_secs_f64()
        );
        let ratio = peer.as_secs_f64() / ours.as_secs_f64();
        outln!();
        outln!(
            "speed vs aws s3 cp:       {ratio:.2}x  (goal >= 1.20x) {}",
            verdict(ratio >= 1.2)
        );
        Ok(())
    })();
    drop(server);
    let _ = std::fs::remove_dir_all(&data);
    result
}

/// `bench download`: one signed package of about `--size-mib` served over
/// loopback HTTP (python3's http.server), installed by `cargo xtask download`
/// and, in the same run, by `curl -o && sha256sum -c && gpg --verify && tar
/// -xzf`: the four passes an admin would otherwise make.
fn bench_download(project: &Project, job: &Job) -> Result<()> {
    let (root, matrix) = (project.root.as_path(), &project.matrix);
    let sh = process::shell()?;
    // Its own subdirectory: regenerating the input removes it, and only it.
    let work = match &job.dir {
        Some(dir) => dir.join("download"),
        None => project.state_dir().join("bench-download"),
    };
    let cell = Cell {
        release: Some(&matrix.slurm[0]),
        toolchain: &matrix.toolchains[0],
        variant: Variant::Cpu,
        matrix,
    };
    let stem = package::package_stem(&cell, &matrix.arch, false);
    let tarball_name = format!("{stem}.tar.gz");
    let store = work.join("store");
    let public_key = work.join("public.asc");
    // Slurm-like views compress about 3:1: three times the artifact's size.
    let marker = work.join(format!(".complete-{}m", job.size_mib));
    if !marker.exists() {
        let _ = std::fs::remove_dir_all(&work);
        let view = work.join("tree/view");
        outln!(
            "generating a {} MiB Slurm-like view and its signed package in {} …",
            job.size_mib * 3,
            work.display()
        );
        generate_view(&view, (job.size_mib * 3) << 20)?;
        let lock = work.join("spack.lock");
        std::fs::write(&lock, BENCH_LOCK)?;
        let (armored, public) = throwaway_key(&work)?;
        std::fs::write(&public_key, public)?;
        let keyring = crate::sign::Keyring::import(&armored, "")?;
        let out = work.join("out");
        let opts = package_options(matrix, &view, &lock, &out, Some(&keyring));
        package::package(project, &cell, &opts)?;
        let local = crate::store::local::LocalStore {
            root: store.clone(),
        };
        crate::publish::publish(&local, &out, false, None, false)?;
        std::fs::remove_dir_all(&out)?;
        std::fs::remove_dir_all(work.join("tree"))?;
        std::fs::write(&marker, b"")?;
    }
    // Where the store's index says the package's files are.
    let index_file = store.join(crate::schema::release::INDEX_KEY);
    let index = crate::schema::release::Index::parse(
        &std::fs::read(&index_file).with_context(|| format!("reading {}", index_file.display()))?,
        &index_file.display().to_string(),
    )?;
    let cell_dir = index
        .newest_first(Some(&matrix.slurm[0].version))
        .first()
        .and_then(|(_, e)| e.packages.get(&stem))
        .map(|p| store.join(&p.dir))
        .with_context(|| format!("{} lists no {stem}", index_file.display()))?;
    let tarball = cell_dir.join(&tarball_name);
    let size = std::fs::metadata(&tarball)?.len();
    let server = LoopbackServer::start("python3 -m http.server", |port| {
        let server = sh
            .cmd("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1"]);
        process::spawnable(server.arg(port.to_string()).arg("--directory").arg(&store))
    })?;
    let url = server.url();
    let result = (|| -> Result<()> {
        // Both contenders read the served file from a warm page cache.
        std::io::copy(&mut std::fs::File::open(&tarball)?, &mut std::io::sink())?;
        outln!(
            "installing a {:.0} MiB package from {url}; {} cores",
            mib(size),
            package::threads()
        );
        let ours_prefix = work.join("ours");
        let peer_dir = work.join("peer");
        for d in [&ours_prefix, &peer_dir] {
            let _ = std::fs::remove_dir_all(d);
        }
        std::fs::create_dir_all(&peer_dir)?;

        let gnupg = tempfile::tempdir()?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(gnupg.path(), std::fs::Permissions::from_mode(0o700))?;
        }
        let _home = sh.push_env("GNUPGHOME", gnupg.path());
        let import = sh.cmd("gpg").args(["--batch", "--quiet", "--import"]);
        if process::status(import.arg(&public_key))? != 0 {
            bail!("gpg --import of the bench key failed");
        }
        let rel = cell_dir.strip_prefix(&store)?.display().to_string();
        let script = format!(
            "set -e
cd {peer}
             curl -fsS -o {t} {url}/{rel}/{t}
             curl -fsS -o {t}.sha256 {url}/{rel}/{t}.sha256
             curl -fsS -o {t}.asc {url}/{rel}/{t}.asc
             sha256sum --quiet -c {t}.sha256
             gpg --batch --quiet --verify {t}.asc {t} 2>/dev/null
             mkdir -p root
tar -xzf {t} -C root
",
            peer = peer_dir.display(),
            t = tarball_name,
        );
        let _ = process::status(sh.cmd("sync"));
        let started = Instant::now();
        let code = process::status(sh.cmd("bash").args(["-c", &script]))
            .context("the curl/sha256sum/gpg/tar pipeline")?;
        let peer = started.elapsed();
        if code != 0 {
            bail!("curl && sha256sum -c && gpg --verify && tar -xzf failed");
        }
        outln!(
            "{:<34} {:>7.2} s  {:>8.1} MiB/s",
            "curl, sha256sum, gpg, tar -xzf",
            peer.as_secs_f64(),
            mib(size) / peer.as_secs_f64()
        );

        let _ = process::status(sh.cmd("sync"));
        let started = Instant::now();
        let ours_run = sh
            .cmd(std::env::current_exe()?)
            .arg("--root")
            .arg(root)
            .args(["download", "--slurm", &matrix.slurm[0].version])
            .args(["--toolchain", &matrix.toolchains[0].name])
            .arg("--prefix")
            .arg(&ours_prefix)
            .args(["--from", &url])
            .arg("--trusted-key")
            .arg(&public_key)
            .ignore_stdout();
        let code = process::status(ours_run)?;
        let ours = started.elapsed();
        if code != 0 {
            bail!("cargo xtask download failed");
        }
        outln!(
            "{:<34} {:>7.2} s  {:>8.1} MiB/s",
            "cargo xtask download",
            ours.as_secs_f64(),
            mib(size) / ours.as_secs_f64()
        );
        let (a, fa) = tree_size(&ours_prefix.join("view"))?;
        let (b, fb) = tree_size(&peer_dir.join(format!("root/{stem}/view")))?;
        if (a, fa) != (b, fb) {
            bail!("the two installs differ: {fa} files / {a} bytes vs {fb} files / {b} bytes");
        }
        let ratio = peer.as_secs_f64() / ours.as_secs_f64();
        outln!();
        outln!(
            "speed vs curl+sha256sum+gpg+tar:  {ratio:.2}x  (goal >= 1.50x) {}",
            verdict(ratio >= 1.5)
        );
        for d in [&ours_prefix, &peer_dir] {
            let _ = std::fs::remove_dir_all(d);
        }
        Ok(())
    })();
    drop(server);
    result
}
