//! `spark-keys` command line: parses flags, starts logging, calls the library, maps errors to
//! exit codes (1 = failure, 2 = usage; clap also exits 2 on bad flags).

mod release_cmd;

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use spark_keys::{DevPkiOptions, KeyAlgorithm, KeysError};

/// Spark PKI tool: development CAs, bundle signer, release key, device and server certificates.
///
/// Only development keys are generated here; production keys live offline or in an HSM
/// (see keys/README.md).
#[derive(Debug, Parser)]
#[command(name = "spark-keys", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a development PKI: firmware CA, bundle signer, keyring, release key, device and
    /// server CAs and a server certificate.
    Init {
        /// Directory to create the PKI in (keep it out of git; a `.gitignore` is written into it).
        #[arg(long = "dev", value_name = "DIR")]
        dir: PathBuf,
        /// Issue the bundle signer from a firmware intermediate CA instead of the root.
        #[arg(long)]
        intermediate: bool,
        /// Key algorithm of the firmware CA chain and the bundle signer.
        #[arg(long, value_enum, default_value_t = Algorithm::Ecdsa)]
        algorithm: Algorithm,
        /// RSA modulus size in bits (2048, 3072 or 4096), with `--algorithm rsa`.
        #[arg(long, default_value_t = 2048)]
        rsa_bits: usize,
        /// DNS name or IP address for the server certificate (repeatable).
        #[arg(long = "server-name", value_name = "NAME", default_values_t = ["localhost".to_owned(), "127.0.0.1".to_owned()])]
        server_names: Vec<String>,
        /// Replace existing keys and certificates.
        #[arg(long)]
        force: bool,
    },
    /// Issue a device certificate (CN = SERIAL) from the dev PKI's device CA into DIR/devices/.
    IssueDevice {
        /// The gateway's serial number.
        serial: String,
        /// The dev PKI directory made by `spark-keys init --dev DIR`.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Replace an existing certificate and key for this serial.
        #[arg(long)]
        force: bool,
    },
    /// Issue a client certificate (CN = NAME) for a cloud service from the dev PKI's server CA
    /// into DIR/services/, e.g. `spark-ota` to call spark-ingest's internal API.
    IssueService {
        /// The service name, e.g. spark-ota or spark-api.
        name: String,
        /// The dev PKI directory made by `spark-keys init --dev DIR`.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Replace an existing certificate and key for this service.
        #[arg(long)]
        force: bool,
    },
    /// Sign a release manifest for a RAUC bundle with the Ed25519 release key (offline; the
    /// OTA server only receives the signed file).
    SignRelease(release_cmd::SignReleaseArgs),
    /// Verify a signed release manifest as a gateway would: trusted key, signature, compatible,
    /// validity period, minimum version and anti-rollback.
    VerifyRelease(release_cmd::VerifyReleaseArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Algorithm {
    /// ECDSA P-256.
    Ecdsa,
    /// RSA (size from --rsa-bits).
    Rsa,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();

    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            let usage = err
                .downcast_ref::<KeysError>()
                .is_some_and(KeysError::is_usage)
                || err
                    .downcast_ref::<release_cmd::ReleaseCmdError>()
                    .is_some_and(release_cmd::ReleaseCmdError::is_usage);
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Init {
            dir,
            intermediate,
            algorithm,
            rsa_bits,
            server_names,
            force,
        } => {
            let algorithm = match algorithm {
                Algorithm::Ecdsa => KeyAlgorithm::EcdsaP256,
                Algorithm::Rsa => KeyAlgorithm::Rsa { bits: rsa_bits },
            };
            let opts = DevPkiOptions {
                algorithm,
                intermediate,
                server_names,
                force,
            };
            let pki = spark_keys::init_dev(&dir, &opts)?;
            println!("development PKI written to {}", pki.dir.display());
            println!("  RAUC keyring:   {}", pki.keyring().display());
            println!(
                "  bundle signer:  {} {}",
                pki.signer_cert().display(),
                pki.signer_key().display()
            );
            if let Some(intermediate) = pki.intermediate_cert() {
                println!("  intermediate:   {}", intermediate.display());
            }
            println!(
                "  release key:    {} {}",
                pki.release_key().display(),
                pki.release_pub().display()
            );
        }
        Command::IssueDevice { serial, dir, force } => {
            let (cert, key) = spark_keys::issue_device(&dir, &serial, force)?;
            println!("{}", cert.display());
            println!("{}", key.display());
        }
        Command::IssueService { name, dir, force } => {
            let (cert, key) = spark_keys::issue_service(&dir, &name, force)?;
            println!("{}", cert.display());
            println!("{}", key.display());
        }
        Command::SignRelease(args) => release_cmd::sign_release(args)?,
        Command::VerifyRelease(args) => release_cmd::verify_release(args)?,
    }
    Ok(())
}
