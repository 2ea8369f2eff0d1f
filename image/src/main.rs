//! `spark-image`: build, sign, inspect, verify, re-sign and extract RAUC bundles.
//! Flags follow `rauc` where the two overlap (`--cert`, `--key`, `--keyring`, `--intermediate`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use spark_image::{
    BuildInput, BuildOptions, Bundle, BundleFormat, BundleInfo, Compression, Keyring, Purpose,
    Signer, VerifyOptions,
};

#[derive(Parser)]
#[command(
    name = "spark-image",
    version,
    about = "Build, sign, inspect and verify RAUC bundles"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build and sign a bundle from a content directory (like `rauc bundle`) or from --rootfs.
    Bundle(BundleArgs),
    /// Show a bundle's manifest and signature; verifies it when --keyring is given.
    Info(InfoArgs),
    /// Verify signature, chain, payload (whole verity tree) and every image checksum.
    Verify(VerifyArgs),
    /// Re-sign a bundle with a new certificate, keeping its payload (key rotation).
    Resign(ResignArgs),
    /// Verify a bundle, then extract its files into a directory.
    Extract(ExtractArgs),
}

#[derive(Args)]
struct SignerArgs {
    /// Signing certificate (PEM).
    #[arg(long)]
    cert: PathBuf,
    /// Private key of the signing certificate (PEM: PKCS#8, SEC1 or PKCS#1).
    #[arg(long)]
    key: PathBuf,
    /// Intermediate certificate to embed (repeatable).
    #[arg(long)]
    intermediate: Vec<PathBuf>,
}

impl SignerArgs {
    fn load(&self) -> anyhow::Result<Signer> {
        let inter: Vec<&Path> = self.intermediate.iter().map(PathBuf::as_path).collect();
        Ok(Signer::load(&self.cert, &self.key, &inter)?)
    }
}

#[derive(Args)]
struct TrustArgs {
    /// Keyring (PEM) holding the firmware CA; what `[keyring] path=` names on the gateway.
    #[arg(long)]
    keyring: Option<PathBuf>,
    /// Signer purpose to enforce, as rauc's `check-purpose`: smimesign (default), codesign, any.
    #[arg(long, default_value = "smimesign")]
    check_purpose: Purpose,
    /// Trust a non-root keyring certificate as anchor (rauc's `allow-partial-chain`).
    #[arg(long)]
    allow_partial_chain: bool,
}

impl TrustArgs {
    fn keyring(&self) -> anyhow::Result<(Keyring, VerifyOptions)> {
        let Some(path) = &self.keyring else {
            bail!(
                "no --keyring given: pass the firmware CA certificate (or --no-verify to skip checks)"
            );
        };
        Ok((
            Keyring::load(path)?,
            VerifyOptions {
                purpose: self.check_purpose,
                allow_partial_chain: self.allow_partial_chain,
                time: None,
            },
        ))
    }
}

#[derive(Args)]
struct BundleArgs {
    /// `CONTENT_DIR OUTPUT` (like `rauc bundle`), or just `OUTPUT` with --rootfs. The content
    /// directory holds manifest.raucm and the images; the output (.raucb) must not exist.
    #[arg(required = true, num_args = 1..=2, value_name = "PATHS")]
    paths: Vec<PathBuf>,
    #[command(flatten)]
    signer: SignerArgs,
    /// Build from one root filesystem image instead of a content directory.
    #[arg(long, requires_all = ["compatible", "version"])]
    rootfs: Option<PathBuf>,
    /// `[update] compatible` (with --rootfs).
    #[arg(long)]
    compatible: Option<String>,
    /// `[update] version` (with --rootfs).
    #[arg(long)]
    version: Option<String>,
    /// `[update] description` (with --rootfs).
    #[arg(long)]
    description: Option<String>,
    /// `[update] build` (with --rootfs).
    #[arg(long)]
    build: Option<String>,
    /// Slot class of the image (with --rootfs).
    #[arg(long, default_value = "rootfs")]
    slot_class: String,
    /// Bundle format (with --rootfs; a content directory's manifest decides its own).
    #[arg(long, default_value = "verity")]
    format: BundleFormat,
    /// gzip level for the squashfs (mksquashfs' default is 9).
    #[arg(long, default_value_t = 9, value_parser = clap::value_parser!(u32).range(1..=9))]
    gzip_level: u32,
}

#[derive(Args)]
struct InfoArgs {
    /// The bundle.
    bundle: PathBuf,
    #[command(flatten)]
    trust: TrustArgs,
    /// Show without verifying anything.
    #[arg(long)]
    no_verify: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct VerifyArgs {
    /// The bundle.
    bundle: PathBuf,
    #[command(flatten)]
    trust: TrustArgs,
    /// Also require this `[update] compatible`.
    #[arg(long)]
    compatible: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ResignArgs {
    /// Bundle to re-sign.
    input: PathBuf,
    /// Output bundle; must not exist.
    output: PathBuf,
    #[command(flatten)]
    signer: SignerArgs,
    #[command(flatten)]
    trust: TrustArgs,
    /// Re-sign without verifying the old signature first.
    #[arg(long)]
    no_verify: bool,
}

#[derive(Args)]
struct ExtractArgs {
    /// The bundle.
    bundle: PathBuf,
    /// Directory to extract into; must not exist.
    output: PathBuf,
    #[command(flatten)]
    trust: TrustArgs,
    /// Extract without verifying.
    #[arg(long)]
    no_verify: bool,
}

fn progress(prefix: &'static str) -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>9} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec}",
        )
        .expect("the template is a valid indicatif template")
        .progress_chars("=> "),
    );
    bar.set_prefix(prefix);
    bar
}

fn verify(bundle: &Bundle, trust: &TrustArgs) -> anyhow::Result<BundleInfo> {
    let (keyring, opts) = trust.keyring()?;
    Ok(bundle.verify(&keyring, &opts, &progress("verifying"))?)
}

fn print_info(info: &BundleInfo, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(info)?);
        return Ok(());
    }
    let q = |o: &Option<String>| format!("'{}'", o.as_deref().unwrap_or(""));
    println!("Compatible:  \t'{}'", info.compatible);
    println!("Version:     \t{}", q(&info.version));
    println!("Description: \t{}", q(&info.description));
    println!("Build:       \t{}", q(&info.build));
    println!("Bundle Format: \t{}", info.format.as_str());
    if let Some(v) = &info.verity {
        println!("  Verity Salt: \t'{}'", v.salt);
        println!("  Verity Hash: \t'{}'", v.hash);
        println!("  Verity Size: \t{}", v.size);
    }
    println!("Squashfs Size: \t{}", info.squashfs_size);
    println!();
    println!(
        "{} Image{}:",
        info.images.len(),
        if info.images.len() == 1 { "" } else { "s" }
    );
    for image in &info.images {
        match &image.variant {
            Some(v) => println!("  [{}.{}]", image.slot_class, v),
            None => println!("  [{}]", image.slot_class),
        }
        println!("\tFilename:  {}", image.filename);
        if let Some(d) = image.sha256 {
            println!("\tChecksum:  {}", hex::encode(d));
        }
        if let Some(s) = image.size {
            println!("\tSize:      {s}");
        }
    }
    println!();
    println!("Signer:      \t{}", info.signature.signer);
    println!("Certificate Chain:");
    for (i, c) in info.signature.certificates.iter().enumerate() {
        println!("  {i} Subject: {c}");
    }
    if let Some(t) = &info.signature.signing_time {
        println!("Signing Time: \t{t}");
    }
    println!(
        "Verified:    \t{}",
        if info.verified {
            "yes (signature, chain, payload, images)"
        } else {
            "NO (--no-verify)"
        }
    );
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Bundle(a) => {
            let signer = a.signer.load()?;
            let (input, output) = match (a.paths.as_slice(), &a.rootfs) {
                ([dir, output], None) => (BuildInput::Dir(dir.clone()), output),
                ([output], Some(image)) => (
                    BuildInput::Rootfs {
                        image: image.clone(),
                        slot_class: a.slot_class.clone(),
                        compatible: a
                            .compatible
                            .clone()
                            .context("--compatible is required with --rootfs")?,
                        version: a
                            .version
                            .clone()
                            .context("--version is required with --rootfs")?,
                        description: a.description.clone(),
                        build: a.build.clone(),
                        format: a.format,
                    },
                    output,
                ),
                _ => bail!("give `CONTENT_DIR OUTPUT`, or `--rootfs IMAGE OUTPUT`"),
            };
            let summary = spark_image::build(
                &input,
                output,
                &BuildOptions {
                    signer: &signer,
                    compression: Compression::Gzip {
                        level: a.gzip_level,
                    },
                    mtime: spark_image::source_date_epoch()?,
                    progress: progress("bundling"),
                },
            )?;
            println!(
                "Bundle {} ({} bytes, {}, sha256 {}) signed by {}",
                output.display(),
                summary.size,
                summary.manifest.format.as_str(),
                summary.sha256,
                signer.subject()
            );
        }
        Command::Info(a) => {
            let bundle = Bundle::open(&a.bundle)?;
            let info = if a.no_verify {
                bundle.inspect()?
            } else {
                verify(&bundle, &a.trust)?
            };
            print_info(&info, a.json)?;
        }
        Command::Verify(a) => {
            let bundle = Bundle::open(&a.bundle)?;
            let info = verify(&bundle, &a.trust)?;
            if let Some(c) = &a.compatible
                && *c != info.compatible
            {
                return Err(spark_image::BundleError::Compatible {
                    expected: c.clone(),
                    actual: info.compatible,
                }
                .into());
            }
            if a.json {
                print_info(&info, true)?;
            } else {
                println!(
                    "{}: OK ({} '{}' {}, signed by {})",
                    a.bundle.display(),
                    info.format.as_str(),
                    info.compatible,
                    info.version.as_deref().unwrap_or("-"),
                    info.signature.signer
                );
            }
        }
        Command::Resign(a) => {
            let bundle = Bundle::open(&a.input)?;
            if !a.no_verify {
                verify(&bundle, &a.trust)?;
            }
            let signer = a.signer.load()?;
            bundle.resign(&signer, &a.output)?;
            println!(
                "Re-signed {} as {} by {}",
                a.input.display(),
                a.output.display(),
                signer.subject()
            );
        }
        Command::Extract(a) => {
            let bundle = Bundle::open(&a.bundle)?;
            if a.no_verify {
                bundle.extract(&a.output)?;
            } else {
                let (keyring, opts) = a.trust.keyring()?;
                bundle.verify_and_extract(&keyring, &opts, &a.output, &progress("extracting"))?;
            }
            println!(
                "Extracted {} into {}",
                a.bundle.display(),
                a.output.display()
            );
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line on stderr is the log line of a CLI; tracing carries the library's own.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
