//! `spark-layer`: keeps meta-spark in step with the Cargo workspace (see the library docs).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    version,
    about = "meta-spark tooling: the crates list and the layer checks"
)]
struct Cli {
    /// Repository root (the folder with Cargo.toml, Cargo.lock and meta-spark/).
    #[arg(long, default_value = ".", global = true)]
    root: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate meta-spark/recipes-spark/spark-daemons/spark-crates.inc from Cargo.lock.
    Crates {
        /// Write the file (default: only report whether it is current; exit 1 if not).
        #[arg(long)]
        write: bool,
    },
    /// Check that every daemon of the workspace has a recipe, a hardened unit and a D-Bus policy,
    /// and that the crates list is current.
    Check,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("spark-layer: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<bool> {
    match cli.command {
        Command::Crates { write: true } => {
            let changed =
                spark_layer::write_crates_inc(&cli.root).context("generating the crates list")?;
            let state = if changed {
                "written"
            } else {
                "already current"
            };
            println!("{}: {state}", spark_layer::CRATES_INC);
            Ok(true)
        }
        Command::Crates { write: false } => {
            let expected = spark_layer::expected_crates_inc(&cli.root)?;
            let current = std::fs::read_to_string(cli.root.join(spark_layer::CRATES_INC)).ok();
            if current.as_deref() == Some(expected.as_str()) {
                println!("{}: current", spark_layer::CRATES_INC);
                Ok(true)
            } else {
                eprintln!(
                    "{} does not match Cargo.lock: run `cargo run -p spark-layer -- crates --write`",
                    spark_layer::CRATES_INC
                );
                Ok(false)
            }
        }
        Command::Check => {
            let problems = spark_layer::check_layer(&cli.root)?;
            for problem in &problems {
                eprintln!("{problem}");
            }
            if problems.is_empty() {
                println!("meta-spark: layer matches the workspace");
            }
            Ok(problems.is_empty())
        }
    }
}
