//! `spark-cve`: offline CVE scan of a Spark image and the release gate. See README.md.
//!
//! Exit codes: 0 clean, 1 untriaged findings at or above the CVSS threshold, 2 bad input or
//! usage, 3 snapshot older than the configured limit.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use spark_cve::db::{self, BuildInput, SourceKind};
use spark_cve::report::{self, Config, render::Format};
use spark_cve::{ScanRequest, run_scan};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

#[derive(Parser)]
#[command(
    name = "spark-cve",
    version,
    about = "Offline CVE scan of Yocto SBOMs and Cargo.lock files"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Scan the inventory against a snapshot, write reports, exit with the gate's verdict.
    Scan(ScanArgs),
    /// Build or inspect vulnerability snapshots.
    #[command(subcommand)]
    Db(DbCommand),
}

#[derive(Args)]
struct ScanArgs {
    /// The vulnerability snapshot (from `spark-cve db build`).
    #[arg(long)]
    db: PathBuf,
    /// A Cargo.lock of our daemons (repeatable).
    #[arg(long = "cargo-lock")]
    cargo_locks: Vec<PathBuf>,
    /// A Yocto SBOM: SPDX 3 JSON-LD, SPDX 2.2 JSON or cve-check JSON (repeatable).
    #[arg(long = "sbom")]
    sboms: Vec<PathBuf>,
    /// The image's kernel version, when no SBOM names it.
    #[arg(long)]
    kernel_version: Option<String>,
    /// The kernel's .config: kernel CVEs whose source files are not built become "not affected"
    /// (needs --kernel-src).
    #[arg(long, requires = "kernel_src")]
    kernel_config: Option<PathBuf>,
    /// The kernel source tree the .config belongs to (its Makefiles say which CONFIG_ builds a file).
    #[arg(long, requires = "kernel_config")]
    kernel_src: Option<PathBuf>,
    /// Folder of patch files per recipe (DIR/<recipe>/*.patch), read for `CVE:` lines (repeatable).
    #[arg(long = "patch-dir")]
    patch_dirs: Vec<PathBuf>,
    /// Triage file: OpenVEX or CycloneDX VEX (repeatable).
    #[arg(long)]
    vex: Vec<PathBuf>,
    /// The previous release's JSON report: show new, fixed and changed findings.
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// Config file with a [policy] table (fail-cvss, warn-age-days, max-age-days, fail-on-undecidable).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Fail on untriaged findings with CVSS at or above this (overrides the config).
    #[arg(long)]
    fail_cvss: Option<f64>,
    /// Fail when the snapshot's data is older than this many days (overrides the config).
    #[arg(long)]
    max_age_days: Option<i64>,
    /// Warn when the snapshot's data is older than this many days (overrides the config).
    #[arg(long)]
    warn_age_days: Option<i64>,
    /// Undecidable findings fail the gate too.
    #[arg(long)]
    fail_on_undecidable: bool,
    /// Write a report: FORMAT=PATH, FORMAT one of json, sarif, markdown, html, terminal (repeatable).
    #[arg(long = "report", value_name = "FORMAT=PATH")]
    reports: Vec<String>,
    /// What stdout gets.
    #[arg(long, default_value = "terminal")]
    format: Format,
    /// Date to judge snapshot age and triage expiry by (YYYY-MM-DD or RFC 3339; default: now).
    #[arg(long)]
    now: Option<String>,
}

#[derive(Subcommand)]
enum DbCommand {
    /// Build one snapshot from local copies of the sources (files or directories, recursively).
    Build(BuildArgs),
    /// Check a snapshot (format, count, hash) and print its header.
    Info {
        /// The snapshot.
        snapshot: PathBuf,
    },
}

#[derive(Args)]
struct BuildArgs {
    /// NVD CVE API 2.0 JSON (response pages or 2.0 feed files).
    #[arg(long)]
    nvd: Vec<PathBuf>,
    /// CVE JSON 5 records (e.g. a cvelistV5 checkout).
    #[arg(long)]
    cve5: Vec<PathBuf>,
    /// OSV records (crates.io and Linux ecosystems are used).
    #[arg(long)]
    osv: Vec<PathBuf>,
    /// RustSec advisory-db checkout (crates/<name>/RUSTSEC-*.md).
    #[arg(long)]
    rustsec: Vec<PathBuf>,
    /// Where to write the snapshot.
    #[arg(long, short)]
    output: PathBuf,
    /// Build date recorded in the header (RFC 3339; default: SOURCE_DATE_EPOCH, else now).
    #[arg(long)]
    date: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SPARK_CVE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("spark-cve: error: {e:#}");
            ExitCode::from(report::EXIT_BAD_INPUT)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Scan(a) => scan(a),
        Command::Db(DbCommand::Build(a)) => build(a),
        Command::Db(DbCommand::Info { snapshot }) => {
            let s = db::load(&snapshot, |_| false)?;
            println!("{}", serde_json::to_string_pretty(&s.header)?);
            Ok(0)
        }
    }
}

fn parse_time(s: &str) -> anyhow::Result<OffsetDateTime> {
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(t);
    }
    let d = spark_cve::triage::parse_date(s)
        .filter(|_| s.len() == 10)
        .with_context(|| format!("{s:?} is neither YYYY-MM-DD nor RFC 3339"))?;
    Ok(d.midnight().assume_utc())
}

fn scan(a: ScanArgs) -> anyhow::Result<u8> {
    if a.cargo_locks.is_empty() && a.sboms.is_empty() && a.kernel_version.is_none() {
        anyhow::bail!("nothing to scan: give --cargo-lock, --sbom or --kernel-version");
    }
    let mut policy = match &a.config {
        Some(p) => Config::load(p)?.policy,
        None => report::Policy::default(),
    };
    if let Some(v) = a.fail_cvss {
        policy.fail_cvss = v;
    }
    if let Some(v) = a.max_age_days {
        policy.max_age_days = v;
    }
    if let Some(v) = a.warn_age_days {
        policy.warn_age_days = v;
    }
    policy.fail_on_undecidable |= a.fail_on_undecidable;
    let mut outputs = Vec::new();
    for r in &a.reports {
        let (f, p) = r
            .split_once('=')
            .with_context(|| format!("--report {r:?}: expected FORMAT=PATH"))?;
        let f: Format = f.parse().map_err(anyhow::Error::msg)?;
        outputs.push((f, PathBuf::from(p)));
    }
    let now = match &a.now {
        Some(s) => parse_time(s).context("--now")?,
        None => OffsetDateTime::now_utc(),
    };
    let req = ScanRequest {
        snapshot: a.db,
        cargo_locks: a.cargo_locks,
        sboms: a.sboms,
        kernel_version: a.kernel_version,
        patch_dirs: a.patch_dirs,
        kernel_config: a.kernel_config.zip(a.kernel_src),
        vex: a.vex,
        baseline: a.baseline,
        policy,
        now,
    };
    let rep = run_scan(&req)?;
    for (f, p) in outputs {
        std::fs::write(&p, report::render::render(&rep, f))
            .with_context(|| format!("cannot write report {}", p.display()))?;
    }
    print!("{}", report::render::render(&rep, a.format));
    Ok(rep.verdict.exit_code)
}

fn build(a: BuildArgs) -> anyhow::Result<u8> {
    let created = match (&a.date, std::env::var("SOURCE_DATE_EPOCH")) {
        (Some(d), _) => parse_time(d).context("--date")?,
        (None, Ok(epoch)) => {
            let secs: i64 = epoch.parse().context("SOURCE_DATE_EPOCH")?;
            OffsetDateTime::from_unix_timestamp(secs).context("SOURCE_DATE_EPOCH")?
        }
        (None, Err(_)) => OffsetDateTime::now_utc().replace_nanosecond(0)?,
    };
    let mut sources = Vec::new();
    for (kind, paths) in [
        (SourceKind::Nvd, &a.nvd),
        (SourceKind::Cve5, &a.cve5),
        (SourceKind::Osv, &a.osv),
        (SourceKind::Rustsec, &a.rustsec),
    ] {
        sources.extend(paths.iter().map(|p| (kind, p.clone())));
    }
    if sources.is_empty() {
        anyhow::bail!("no sources: give --nvd, --cve5, --osv or --rustsec");
    }
    let input = BuildInput {
        sources,
        created: created.format(&Rfc3339)?,
    };
    let h = db::build(&input, &a.output)?;
    eprintln!(
        "spark-cve: wrote {} ({} advisories, sha256 {})",
        a.output.display(),
        h.advisories,
        h.sha256
    );
    Ok(0)
}
