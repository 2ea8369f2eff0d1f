//! `spark-telemetry-bench`: the telemetry path's figures (issue 3, section 5), each measured in one
//! run against its peer on this machine, printed as a table with ratios.
//!
//! - `ingest-rate`: readings/s into PostgreSQL over mutual TLS from concurrent simulated gateways,
//!   against `psql \copy` of the same rows into the same table.
//! - `idle-conns`: memory per idle mutual-TLS gateway connection in the real `spark-ingest`
//!   process (VmRSS before and after N connections that said Hello and went quiet).
//! - `wire`: bytes on the wire per reading through the real daemons, against MQTT to Mosquitto.
//! - `rss`: resident memory of the real meterd and uplinkd with 2000 meters.
//!
//! Benchmarks run the real binaries from the same target directory as this one (`cargo build
//! --release --workspace` first; `ci/telemetry-bench.sh` does it all).

mod daemons_bench;
mod gateway;
mod ingest_bench;
mod mqtt;
mod procs;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(version, about = "Figures of Spark's telemetry path")]
struct Args {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Readings/s into PostgreSQL through spark-ingest vs `psql \copy` of the same rows.
    IngestRate(ingest_bench::RateArgs),
    /// Memory per idle mutual-TLS connection in spark-ingest.
    IdleConns(ingest_bench::IdleArgs),
    /// Wire bytes per reading through the real daemons vs MQTT to Mosquitto (needs root: netns).
    Wire(daemons_bench::WireArgs),
    /// RSS of spark-meterd and spark-uplinkd with 2000 meters.
    Rss(daemons_bench::RssArgs),
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match args.bench {
            Bench::IngestRate(a) => ingest_bench::rate(a).await,
            Bench::IdleConns(a) => ingest_bench::idle(a).await,
            Bench::Wire(a) => daemons_bench::wire(a).await,
            Bench::Rss(a) => daemons_bench::rss(a).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
