//! Benchmarks the `spark-image` CLI against `rauc` 1.8 on one realistic root filesystem image.
//!
//! ```text
//! cargo build --release -p spark-image
//! cargo run --release -p spark-image --example bench -- [--size-mib 256] [--runs 3] [--work DIR]
//! ```
//! (`ci/bench.sh` does both and installs the tools it needs.)
//!
//! What it does, in one run and on the same image:
//!
//! 1. makes a development PKI (ECDSA P-256) with `spark_keys::init_dev`;
//! 2. copies real files from this machine (`/usr/bin`, `/usr/lib`, `/usr/share`; sorted, regular
//!    files and symlinks only, each root capped by size, 70% of the image's blocks in total) into a tree
//!    and makes an ext4 image of `--size-mib` from it with `mkfs.ext4 -d`, so compression sees
//!    real binaries and text and the free space is zero blocks, as in a real rootfs image;
//! 3. times, `--runs` times each, taking the best and the median wall time:
//!    - `spark-image bundle --rootfs` (the release binary, as a user runs it) against
//!      `rauc bundle` on a content directory holding the same image and a manifest of the same
//!      format, for `plain` and `verity` (both gzip level 9, 128 KiB blocks: the mksquashfs
//!      defaults `rauc bundle` relies on; rauc's rewritten manifest is restored before each run);
//!    - `spark-image verify` against `rauc info` and against `rauc extract`, on the bundles both
//!      tools built, plus `spark-image extract` against `rauc extract`;
//!    - a breakdown of the bundle step: SHA-256 of the image, our squashfs writer alone (in
//!      process) and `mksquashfs` alone (with rauc's flags), and the verity hash tree.
//!
//! Nothing is dropped from the page cache (that needs privileges and is unreliable in
//! containers): every figure is **warm cache**, with the image read once before the first run.
//! `sync` runs before every timed run (outside the timing), so dirty pages left by earlier steps
//! are not written back during it; `spark-image bundle` fsyncs its output (rauc does not), and
//! that fsync is timed.
//! Peak RSS and CPU time come from GNU `/usr/bin/time` when it is installed.
//!
//! The checks do not do the same work, and the table says so: `rauc info` on a verity bundle only
//! checks the signature (the kernel checks the payload later, through dm-verity), on a plain
//! bundle it hashes the payload; `spark-image verify` checks the signature, the whole payload
//! (the full hash tree for verity) and decompresses every image to check its SHA-256; `rauc
//! extract` checks the bundle and unpacks it with `unsquashfs`.

use std::ffi::OsString;
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Parser;
use sha2::{Digest, Sha256};
use spark_image::{Bundle, Compression};
use spark_keys::{DevPki, DevPkiOptions, KeyAlgorithm};

/// The file name of the image, the same in both tools' bundles.
const IMAGE_NAME: &str = "rootfs.ext4";
const COMPATIBLE: &str = "bench";
/// Roots to copy files from and the share of the content budget each gets.
const SOURCES: [(&str, u64); 3] = [("/usr/bin", 25), ("/usr/lib", 50), ("/usr/share", 25)];
/// Files larger than this are skipped so one huge library cannot fill a root's budget.
const MAX_FILE: u64 = 8 << 20;
/// At most this many directory entries are visited per root (bounds the walk).
const MAX_VISITS: usize = 200_000;
/// The ratio `spark-image bundle` should reach against `rauc bundle`.
const BUNDLE_GOAL: f64 = 0.7;
const GNU_TIME: &str = "/usr/bin/time";

#[derive(Parser)]
#[command(about = "Time spark-image against rauc on one root filesystem image")]
struct Args {
    /// Size of the ext4 root filesystem image in MiB.
    #[arg(long, default_value_t = 256)]
    size_mib: u64,
    /// Bytes of files to copy into the image, in MiB (default: 70% of --size-mib).
    #[arg(long)]
    content_mib: Option<u64>,
    /// Runs per operation; the best and the median are reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=50))]
    runs: u64,
    /// Directory to work in (a temporary directory is made inside it and removed at the end).
    #[arg(long)]
    work: Option<PathBuf>,
    /// Keep the work directory (PKI, image, bundles) instead of removing it, for a closer look.
    #[arg(long)]
    keep: bool,
    /// The spark-image binary (default: `spark-image` next to this example's target directory).
    #[arg(long)]
    spark_image: Option<PathBuf>,
}

/// One timed run of a command.
#[derive(Clone, Copy)]
struct Sample {
    wall: Duration,
    /// User + system CPU seconds, from GNU time.
    cpu: Option<f64>,
    /// Peak resident set size in KiB, from GNU time.
    rss_kib: Option<u64>,
}

/// All runs of one operation.
#[derive(Clone)]
struct Stats {
    samples: Vec<Sample>,
}

impl Stats {
    fn walls(&self) -> Vec<f64> {
        let mut w: Vec<f64> = self.samples.iter().map(|s| s.wall.as_secs_f64()).collect();
        w.sort_by(f64::total_cmp);
        w
    }
    fn best(&self) -> f64 {
        self.walls()[0]
    }
    fn median(&self) -> f64 {
        let w = self.walls();
        let n = w.len();
        if n % 2 == 1 {
            w[n / 2]
        } else {
            (w[n / 2 - 1] + w[n / 2]) / 2.0
        }
    }
    fn cpu(&self) -> Option<f64> {
        let mut c: Vec<f64> = self.samples.iter().map(|s| s.cpu).collect::<Option<_>>()?;
        c.sort_by(f64::total_cmp);
        Some(c[c.len() / 2])
    }
    fn rss_mib(&self) -> Option<f64> {
        let max = self
            .samples
            .iter()
            .map(|s| s.rss_kib)
            .collect::<Option<Vec<_>>>()?;
        Some(*max.iter().max()? as f64 / 1024.0)
    }
    fn cell(&self) -> String {
        format!("{:.2} ({:.2})", self.best(), self.median())
    }
}

/// A line of the results table.
struct Row {
    /// `spark-image` subcommand.
    spark_cmd: &'static str,
    /// `rauc` subcommand.
    rauc_cmd: &'static str,
    bundle: &'static str,
    spark: Stats,
    rauc: Stats,
    note: &'static str,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let spark = match &args.spark_image {
        Some(p) => p.clone(),
        None => default_spark_image()?,
    };
    ensure!(
        spark.is_file(),
        "{} not found: build it first with `cargo build --release -p spark-image`",
        spark.display()
    );
    for tool in ["rauc", "mksquashfs", "unsquashfs", "mkfs.ext4"] {
        ensure!(
            which(tool).is_some(),
            "`{tool}` is not on PATH (ci/bench.sh installs rauc squashfs-tools e2fsprogs time)"
        );
    }
    let gnu_time = Path::new(GNU_TIME).is_file();
    let work = match &args.work {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
            tempfile::Builder::new()
                .prefix("spark-bench-")
                .tempdir_in(dir)?
        }
        None => tempfile::Builder::new().prefix("spark-bench-").tempdir()?,
    };
    let w = work.path();
    let runs = args.runs as usize;
    // Other work on the machine skews wall times; the report shows how busy it was.
    let load_before = loadavg();

    // 1. PKI.
    let pki = spark_keys::init_dev(
        &w.join("pki"),
        &DevPkiOptions {
            algorithm: KeyAlgorithm::EcdsaP256,
            ..DevPkiOptions::default()
        },
    )?;

    // 2. Root filesystem image.
    let content_budget = args.content_mib.unwrap_or(args.size_mib * 7 / 10) << 20;
    let tree = w.join("tree");
    let started = Instant::now();
    let copied = copy_sources(&tree, content_budget)?;
    let image = w.join(IMAGE_NAME);
    make_ext4(&tree, &image, args.size_mib, copied.inodes)?;
    std::fs::remove_dir_all(&tree)?;
    eprintln!(
        "image: {} MiB ext4 from {} files, {:.1} MiB ({:.1} s to make)",
        args.size_mib,
        copied.files,
        copied.bytes as f64 / (1 << 20) as f64,
        started.elapsed().as_secs_f64()
    );
    // Warm the cache: both tools then read the image from memory.
    let image_sha = sha256_file(&image)?;

    let conf = rauc_conf(w, &pki)?;
    let mut rows = Vec::new();
    let mut bundles = Vec::new();
    for format in ["plain", "verity"] {
        // 3a. Bundle.
        let content = w.join(format!("content-{format}"));
        std::fs::create_dir(&content)?;
        std::fs::hard_link(&image, content.join(IMAGE_NAME))
            .or_else(|_| std::fs::copy(&image, content.join(IMAGE_NAME)).map(|_| ()))?;
        let manifest = format!(
            "[update]\ncompatible={COMPATIBLE}\nversion=1\n\n[bundle]\nformat={format}\n\n\
             [image.rootfs]\nfilename={IMAGE_NAME}\n"
        );
        let manifest_path = content.join("manifest.raucm");
        let spark_out = w.join(format!("spark-{format}.raucb"));
        let rauc_out = w.join(format!("rauc-{format}.raucb"));
        eprintln!("timing bundle ({format}) ...");
        let spark_stats = measure(
            &format!("spark-image bundle {format}"),
            runs,
            gnu_time,
            w,
            || {
                remove_if_exists(&spark_out)?;
                let mut c = Command::new(&spark);
                c.arg("bundle")
                    .arg("--rootfs")
                    .arg(&image)
                    .args([
                        "--compatible",
                        COMPATIBLE,
                        "--version",
                        "1",
                        "--format",
                        format,
                    ])
                    .arg("--cert")
                    .arg(pki.signer_cert())
                    .arg("--key")
                    .arg(pki.signer_key())
                    .arg(&spark_out);
                Ok(c)
            },
        )?;
        let rauc_stats = measure(&format!("rauc bundle {format}"), runs, gnu_time, w, || {
            remove_if_exists(&rauc_out)?;
            // rauc writes the checksums into the content directory's manifest: restore it.
            std::fs::write(&manifest_path, &manifest)?;
            let mut c = Command::new("rauc");
            c.arg("bundle")
                .arg(format!("--cert={}", pki.signer_cert().display()))
                .arg(format!("--key={}", pki.signer_key().display()))
                .arg(&content)
                .arg(&rauc_out);
            Ok(c)
        })?;
        rows.push(Row {
            spark_cmd: "bundle",
            rauc_cmd: "bundle",
            bundle: if format == "plain" { "plain" } else { "verity" },
            spark: spark_stats,
            rauc: rauc_stats,
            note: "`spark-image bundle --rootfs` vs `rauc bundle`",
        });
        for (tool, path) in [("spark-image", &spark_out), ("rauc", &rauc_out)] {
            let info = Bundle::open(path)
                .and_then(|b| b.inspect())
                .with_context(|| format!("inspect {}", path.display()))?;
            ensure!(
                info.images.len() == 1 && info.images[0].sha256 == Some(image_sha),
                "the {tool} {format} bundle does not hold the image"
            );
            bundles.push(BuiltBundle {
                tool,
                format,
                path: path.clone(),
                size: std::fs::metadata(path)?.len(),
                squashfs: info.squashfs_size,
            });
        }
        std::fs::remove_dir_all(&content)?;
    }

    // 3b. Check and extract, on each tool's bundles.
    let labels = [
        ("spark-image", "plain", "plain, spark-built"),
        ("spark-image", "verity", "verity, spark-built"),
        ("rauc", "plain", "plain, rauc-built"),
        ("rauc", "verity", "verity, rauc-built"),
    ];
    for (tool, format, label) in labels {
        let b = bundles
            .iter()
            .find(|b| b.tool == tool && b.format == format)
            .expect("every tool built every format above");
        eprintln!("timing verify / info / extract ({label}) ...");
        let verify = measure(
            &format!("spark-image verify ({label})"),
            runs,
            gnu_time,
            w,
            || {
                let mut c = Command::new(&spark);
                c.arg("verify")
                    .arg(&b.path)
                    .arg("--keyring")
                    .arg(pki.keyring());
                Ok(c)
            },
        )?;
        let info = measure(&format!("rauc info ({label})"), runs, gnu_time, w, || {
            let mut c = Command::new("rauc");
            c.arg(format!("--conf={}", conf.display()))
                .arg("info")
                .arg(format!("--keyring={}", pki.keyring().display()))
                .arg(&b.path);
            Ok(c)
        })?;
        let out = w.join("extracted");
        let rauc_extract = measure(
            &format!("rauc extract ({label})"),
            runs,
            gnu_time,
            w,
            || {
                remove_if_exists(&out)?;
                let mut c = Command::new("rauc");
                c.arg(format!("--conf={}", conf.display()))
                    .arg("extract")
                    .arg(format!("--keyring={}", pki.keyring().display()))
                    .arg(&b.path)
                    .arg(&out);
                Ok(c)
            },
        )?;
        ensure!(
            sha256_file(&out.join(IMAGE_NAME))? == image_sha,
            "rauc extract gave back a different image"
        );
        let spark_extract = measure(
            &format!("spark-image extract ({label})"),
            runs,
            gnu_time,
            w,
            || {
                remove_if_exists(&out)?;
                let mut c = Command::new(&spark);
                c.arg("extract")
                    .arg(&b.path)
                    .arg(&out)
                    .arg("--keyring")
                    .arg(pki.keyring());
                Ok(c)
            },
        )?;
        ensure!(
            sha256_file(&out.join(IMAGE_NAME))? == image_sha,
            "spark-image extract gave back a different image"
        );
        rows.push(Row {
            spark_cmd: "verify",
            rauc_cmd: "info",
            bundle: label,
            spark: verify.clone(),
            rauc: info,
            note: if format == "verity" {
                "rauc info checks the signature only"
            } else {
                "rauc info hashes the payload"
            },
        });
        rows.push(Row {
            spark_cmd: "verify",
            rauc_cmd: "extract",
            bundle: label,
            spark: verify,
            rauc: rauc_extract.clone(),
            note: "",
        });
        rows.push(Row {
            spark_cmd: "extract",
            rauc_cmd: "extract",
            bundle: label,
            spark: spark_extract,
            rauc: rauc_extract,
            note: "",
        });
        remove_if_exists(&out)?;
    }

    // 3c. Where the bundle time goes.
    eprintln!("timing the breakdown ...");
    let breakdown = breakdown(w, &image, runs)?;

    print_report(
        &args,
        &copied,
        gnu_time,
        &rows,
        &bundles,
        &breakdown,
        &load_before,
    );
    if args.keep {
        eprintln!("kept {}", work.keep().display());
    }
    Ok(())
}

/// `target/release/spark-image`, found from this example's own path
/// (`target/release/examples/bench`).
fn default_spark_image() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("this example is not inside a cargo target directory; pass --spark-image")?;
    Ok(dir.join(format!("spark-image{}", std::env::consts::EXE_SUFFIX)))
}

/// Runs `sync` before a timed run, so no run pays for writing back what earlier steps wrote
/// (the image, the previous bundle): `spark-image`'s own fsync would otherwise wait for it.
fn flush_writeback() {
    // Best effort: without `sync` the figures are only noisier.
    let _ = Command::new("sync").status();
}

/// The first three fields of `/proc/loadavg`.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
}

fn remove_if_exists(path: &Path) -> std::io::Result<()> {
    let r = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match r {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Runs the command `prepare` returns `runs` times (preparing before each run, outside the
/// timing), under GNU time when available, and fails on the first unsuccessful run.
fn measure(
    label: &str,
    runs: usize,
    gnu_time: bool,
    work: &Path,
    mut prepare: impl FnMut() -> anyhow::Result<Command>,
) -> anyhow::Result<Stats> {
    let time_file = work.join("time.out");
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let cmd = prepare()?;
        flush_writeback();
        let mut run = if gnu_time {
            let mut t = Command::new(GNU_TIME);
            t.arg("-f")
                .arg("%U %S %M")
                .arg("-o")
                .arg(&time_file)
                .arg("--")
                .arg(cmd.get_program())
                .args(cmd.get_args());
            t
        } else {
            cmd
        };
        let shown: Vec<OsString> = std::iter::once(run.get_program().to_owned())
            .chain(run.get_args().map(ToOwned::to_owned))
            .collect();
        let start = Instant::now();
        let out = run.output().with_context(|| format!("run {shown:?}"))?;
        let wall = start.elapsed();
        if !out.status.success() {
            bail!(
                "{shown:?} failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let (cpu, rss_kib) = if gnu_time {
            parse_gnu_time(&std::fs::read_to_string(&time_file)?)
        } else {
            (None, None)
        };
        samples.push(Sample { wall, cpu, rss_kib });
    }
    let walls: Vec<String> = samples
        .iter()
        .map(|s| format!("{:.2}", s.wall.as_secs_f64()))
        .collect();
    eprintln!("  {label}: {} s", walls.join(" "));
    Ok(Stats { samples })
}

/// Reads the last line of `/usr/bin/time -f "%U %S %M"` output (earlier lines may hold a
/// "Command exited with non-zero status" notice).
fn parse_gnu_time(text: &str) -> (Option<f64>, Option<u64>) {
    let Some(line) = text.lines().rev().find(|l| !l.trim().is_empty()) else {
        return (None, None);
    };
    let f: Vec<&str> = line.split_whitespace().collect();
    match f.as_slice() {
        [u, s, m] => (
            u.parse::<f64>()
                .ok()
                .zip(s.parse::<f64>().ok())
                .map(|(u, s)| u + s),
            m.parse().ok(),
        ),
        _ => (None, None),
    }
}

/// Times a closure run in this process.
fn measure_in_process(
    label: &str,
    runs: usize,
    mut f: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Stats> {
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        flush_writeback();
        let start = Instant::now();
        f()?;
        samples.push(Sample {
            wall: start.elapsed(),
            cpu: None,
            rss_kib: None,
        });
    }
    let walls: Vec<String> = samples
        .iter()
        .map(|s| format!("{:.2}", s.wall.as_secs_f64()))
        .collect();
    eprintln!("  {label}: {} s", walls.join(" "));
    Ok(Stats { samples })
}

/// How much was copied into the tree.
struct Copied {
    files: u64,
    bytes: u64,
    /// Files, directories and symlinks: the inodes the image needs.
    inodes: u64,
}

/// Copies regular files (and symlinks, as symlinks) from [`SOURCES`] into `tree`, each root
/// walked in sorted order until its share of `budget` is used (counted in 4 KiB blocks, as the
/// files will take them in the image).
fn copy_sources(tree: &Path, budget: u64) -> anyhow::Result<Copied> {
    let mut copied = Copied {
        files: 0,
        bytes: 0,
        inodes: 0,
    };
    for (root, share) in SOURCES {
        let mut left = budget * share / 100;
        let mut visits = 0usize;
        let dest = tree.join(root.trim_start_matches('/'));
        std::fs::create_dir_all(&dest)?;
        copy_dir(Path::new(root), &dest, &mut left, &mut visits, &mut copied)?;
    }
    Ok(copied)
}

fn copy_dir(
    src: &Path,
    dest: &Path,
    left: &mut u64,
    visits: &mut usize,
    copied: &mut Copied,
) -> anyhow::Result<()> {
    // Unreadable directories are skipped, like unreadable files.
    let Ok(dir) = std::fs::read_dir(src) else {
        return Ok(());
    };
    let mut entries: Vec<_> = dir.filter_map(Result::ok).map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        *visits += 1;
        if *left == 0 || *visits > MAX_VISITS {
            return Ok(());
        }
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let target = dest.join(path.file_name().expect("read_dir entries have a file name"));
        if meta.is_symlink() {
            if let Ok(link) = std::fs::read_link(&path) {
                std::os::unix::fs::symlink(link, &target)?;
                copied.inodes += 1;
            }
        } else if meta.is_dir() {
            std::fs::create_dir(&target)?;
            copied.inodes += 1;
            *left = left.saturating_sub(4096);
            copy_dir(&path, &target, left, visits, copied)?;
        } else if meta.is_file() && meta.len() <= MAX_FILE && blocks(meta.len()) <= *left {
            // A file we cannot read (permissions, races) is simply left out.
            if std::fs::copy(&path, &target).is_ok() {
                *left -= blocks(meta.len());
                copied.files += 1;
                copied.inodes += 1;
                copied.bytes += meta.len();
            }
        }
    }
    Ok(())
}

/// What a file takes in the image: whole 4 KiB blocks.
fn blocks(len: u64) -> u64 {
    len.div_ceil(4096) * 4096
}

/// `mkfs.ext4 -d`, with a fixed UUID, hash seed and time so the image is reproducible enough,
/// and room for `inodes` inodes plus a margin (mkfs' default ratio may be too few for /usr/share).
fn make_ext4(tree: &Path, image: &Path, size_mib: u64, inodes: u64) -> anyhow::Result<()> {
    let inodes = (inodes + inodes / 4 + 1024).to_string();
    let out = Command::new("mkfs.ext4")
        .env("E2FSPROGS_FAKE_TIME", "1700000000")
        .args(["-q", "-F", "-m", "0", "-N", &inodes])
        .args(["-U", "5a1f7c3e-8b2d-4e6f-9a0b-1c2d3e4f5a6b"])
        .args([
            "-E",
            "root_owner=0:0,hash_seed=0b1c2d3e-4f5a-6b7c-8d9e-0f1a2b3c4d5e",
        ])
        .arg("-d")
        .arg(tree)
        .arg(image)
        .arg(format!("{size_mib}M"))
        .output()
        .context("run mkfs.ext4")?;
    ensure!(
        out.status.success(),
        "mkfs.ext4 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn sha256_file(path: &Path) -> anyhow::Result<[u8; 32]> {
    let mut r = BufReader::with_capacity(1 << 20, File::open(path)?);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(h.finalize().into());
        }
        h.update(&buf[..n]);
    }
}

/// A minimal `system.conf` for `rauc info` and `rauc extract` (no service needed).
fn rauc_conf(dir: &Path, pki: &DevPki) -> anyhow::Result<PathBuf> {
    let conf = dir.join("system.conf");
    let mut f = File::create(&conf)?;
    write!(
        f,
        "[system]\ncompatible={COMPATIBLE}\nbootloader=noop\n\n[keyring]\npath={}\n\n\
         [slot.rootfs.0]\ndevice={}\ntype=raw\nbootname=A\n",
        pki.keyring().display(),
        dir.join("slot-a").display()
    )?;
    Ok(conf)
}

/// A bundle one of the tools built.
struct BuiltBundle {
    tool: &'static str,
    format: &'static str,
    path: PathBuf,
    size: u64,
    squashfs: u64,
}

/// Stages of the bundle step, timed alone.
struct Breakdown {
    sha256: Stats,
    ours: Stats,
    ours_size: u64,
    mksquashfs: Stats,
    mksquashfs_size: u64,
    verity: Stats,
}

fn breakdown(w: &Path, image: &Path, runs: usize) -> anyhow::Result<Breakdown> {
    let sha256 = measure_in_process("sha256 of the image", runs, || sha256_file(image).map(drop))?;

    let manifest = format!(
        "[update]\ncompatible={COMPATIBLE}\nversion=1\n\n[bundle]\nformat=plain\n\n\
         [image.rootfs]\nfilename={IMAGE_NAME}\nsha256={}\nsize={}\n",
        hex::encode(sha256_file(image)?),
        std::fs::metadata(image)?.len()
    );
    let entries = [
        spark_squashfs::Entry {
            name: IMAGE_NAME.into(),
            source: spark_squashfs::Source::Path(image.to_owned()),
            mode: 0o644,
        },
        spark_squashfs::Entry {
            name: "manifest.raucm".into(),
            source: spark_squashfs::Source::Bytes(manifest.clone().into_bytes()),
            mode: 0o644,
        },
    ];
    let ours_out = w.join("ours.sqfs");
    let mut ours_size = 0;
    let ours = measure_in_process("spark-squashfs writer", runs, || {
        remove_if_exists(&ours_out)?;
        let mut f = std::fs::OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .open(&ours_out)?;
        let opts = spark_squashfs::WriterOptions {
            compression: Compression::Gzip { level: 9 },
            ..spark_squashfs::WriterOptions::default()
        };
        ours_size = spark_squashfs::write_entries(&entries, &mut f, &opts)?.image_size;
        Ok(())
    })?;

    let content = w.join("content-squashfs");
    std::fs::create_dir(&content)?;
    std::fs::hard_link(image, content.join(IMAGE_NAME))
        .or_else(|_| std::fs::copy(image, content.join(IMAGE_NAME)).map(|_| ()))?;
    std::fs::write(content.join("manifest.raucm"), &manifest)?;
    let theirs_out = w.join("mksquashfs.sqfs");
    let mksquashfs = measure("mksquashfs", runs, false, w, || {
        remove_if_exists(&theirs_out)?;
        let mut c = Command::new("mksquashfs");
        // The flags rauc 1.8 passes (src/bundle.c), plus -quiet.
        c.arg(&content).arg(&theirs_out).args([
            "-all-root",
            "-noappend",
            "-no-progress",
            "-no-xattrs",
            "-quiet",
        ]);
        Ok(c)
    })?;
    let mksquashfs_size = std::fs::metadata(&theirs_out)?.len();

    // The verity tree over our squashfs (what `bundle --format verity` adds to plain).
    let verity = measure_in_process("verity tree", runs, || {
        let r = BufReader::with_capacity(1 << 20, File::open(&ours_out)?);
        spark_image::verity::compute(r, ours_size, &[0x5a; 32], &|_| {})?;
        Ok(())
    })?;

    remove_if_exists(&content)?;
    remove_if_exists(&ours_out)?;
    remove_if_exists(&theirs_out)?;
    Ok(Breakdown {
        sha256,
        ours,
        ours_size,
        mksquashfs,
        mksquashfs_size,
        verity,
    })
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.digits$}"))
}

fn print_report(
    args: &Args,
    copied: &Copied,
    gnu_time: bool,
    rows: &[Row],
    bundles: &[BuiltBundle],
    b: &Breakdown,
    load_before: &str,
) {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!();
    println!(
        "Spark bundle benchmark: {} MiB ext4 rootfs ({} files, {} from /usr), gzip level 9, \
         128 KiB blocks, {cpus} CPUs, warm cache, {} runs each; times in seconds as best (median).",
        args.size_mib,
        copied.files,
        mib(copied.bytes),
        args.runs
    );
    println!(
        "Load average (1, 5, 15 min) before: {load_before}; after: {}. CPU s is user + system \
         time of the process and the children it waited for; peak RSS is the largest single \
         process (rauc bundle: mksquashfs).",
        loadavg()
    );
    if !gnu_time {
        println!("(no {GNU_TIME}: CPU time and peak RSS not measured)");
    }
    println!();
    println!(
        "| operation | bundle | spark-image s | rauc s | ratio best (median) | CPU s spark / rauc | \
         peak RSS MiB spark / rauc | note |"
    );
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |");
    for r in rows {
        let ratio = r.spark.best() / r.rauc.best();
        let goal = if r.spark_cmd == "bundle" {
            if ratio <= BUNDLE_GOAL {
                " ✓ ≤ 0.7"
            } else {
                " ✗ > 0.7"
            }
        } else {
            ""
        };
        println!(
            "| {} vs {} | {} | {} | {} | {:.2} ({:.2}){goal} | {} / {} | {} / {} | {} |",
            r.spark_cmd,
            r.rauc_cmd,
            r.bundle,
            r.spark.cell(),
            r.rauc.cell(),
            ratio,
            r.spark.median() / r.rauc.median(),
            opt(r.spark.cpu(), 2),
            opt(r.rauc.cpu(), 2),
            opt(r.spark.rss_mib(), 0),
            opt(r.rauc.rss_mib(), 0),
            r.note
        );
    }
    println!();
    println!("| bundle size | spark-image | rauc | spark/rauc |");
    println!("| --- | ---: | ---: | ---: |");
    for format in ["plain", "verity"] {
        let find = |tool: &str| {
            bundles
                .iter()
                .find(|b| b.tool == tool && b.format == format)
        };
        if let (Some(s), Some(r)) = (find("spark-image"), find("rauc")) {
            println!(
                "| {format} bundle | {} B ({}) | {} B ({}) | {:.4} |",
                s.size,
                mib(s.size),
                r.size,
                mib(r.size),
                s.size as f64 / r.size as f64
            );
            println!(
                "| {format} squashfs | {} B | {} B | {:.4} |",
                s.squashfs,
                r.squashfs,
                s.squashfs as f64 / r.squashfs as f64
            );
        }
    }
    println!();
    println!("Breakdown of the bundle step (same image, best (median) s):");
    println!();
    println!("| stage | spark | other | ratio |");
    println!("| --- | ---: | ---: | ---: |");
    println!(
        "| SHA-256 of the image (both tools do this first) | {} | | |",
        b.sha256.cell()
    );
    println!(
        "| squashfs alone: spark-squashfs (in process) vs mksquashfs | {} | {} | {:.2} |",
        b.ours.cell(),
        b.mksquashfs.cell(),
        b.ours.best() / b.mksquashfs.best()
    );
    println!(
        "| squashfs size: spark-squashfs vs mksquashfs | {} B | {} B | {:.4} |",
        b.ours_size,
        b.mksquashfs_size,
        b.ours_size as f64 / b.mksquashfs_size as f64
    );
    println!(
        "| verity hash tree over the squashfs | {} | | |",
        b.verity.cell()
    );
}
