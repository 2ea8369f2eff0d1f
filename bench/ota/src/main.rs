//! `spark-ota-bench`: spark-ota's figures (issue 5) in one run — check-ins/s of 1000 concurrent
//! devices on keep-alive mutual TLS, bundle download throughput against nginx serving the same
//! file (goal ≥ 0.9×), and the server's memory with 10 000 devices registered. The servers run
//! as child processes (`cargo build --release -p spark-ota -p spark-ota-bench` first) and are
//! stopped when the bench ends, fails or is interrupted.

mod bench;
mod checkins;
mod download;
mod fixture;
mod http;
mod procs;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let args = bench::Args::parse();
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
    // On Ctrl-C the run is dropped, and with it the child servers (SIGTERM, then SIGKILL).
    let result = runtime.block_on(async {
        tokio::select! {
            r = bench::run(args) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
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
