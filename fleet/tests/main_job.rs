//! The main job as a person runs it: the `spark-fleet` binary with two gateways on a fast
//! clock finishes with every check passed and leaves no process behind; Ctrl-C in the middle
//! stops everything cleanly.
//!
//! Needs what `ota_e2e.rs` needs (root, rauc, dbus-daemon, sqlite3, mkfs.ext4, the workspace's
//! binaries).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The binary run from `out`'s parent with `--out` relative to it, as `ci/demo.sh` runs it
/// (`--out out/demo/fleet`): configs must not carry paths relative to the wrong folder.
fn fleet_command(out: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_spark-fleet"));
    cmd.current_dir(out.parent().unwrap())
        .arg("--out")
        .arg(out.file_name().unwrap())
        .args([
            "--gateways",
            "2",
            "--meters",
            "10",
            "--clock-factor",
            "14400",
        ])
        .args(["--timeout-secs", "300"])
        .stdin(Stdio::null());
    cmd
}

/// Boards the run printed ("board /tmp/spark-testbed-…").
fn boards(output: &str) -> Vec<PathBuf> {
    output
        .lines()
        .filter_map(|l| l.split(", board ").nth(1))
        .map(|p| PathBuf::from(p.trim()))
        .collect()
}

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(needle) {
                found.push(cmdline);
            }
        }
    }
    found
}

fn assert_nothing_left(out: &Path, output: &str) {
    let boards = boards(output);
    assert!(!boards.is_empty(), "no boards in the output:\n{output}");
    let mut needles = vec![out.display().to_string()];
    needles.extend(boards.iter().map(|b| b.display().to_string()));
    for needle in &needles {
        let left = processes_mentioning(needle);
        assert!(left.is_empty(), "left running ({needle}): {left:#?}");
    }
    for b in &boards {
        assert!(!b.exists(), "board directory {} left behind", b.display());
    }
}

#[test]
fn main_job_runs_a_weekly_rollout_with_one_rollback() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("fleet");
    let result = fleet_command(&out).output().unwrap();
    let stdout = String::from_utf8_lossy(&result.stdout);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        result.status.success(),
        "{}\n{stdout}\n{stderr}",
        result.status
    );
    for expected in [
        "all 2 gateways connected to spark-ingest over mutual TLS",
        "rolled back",
        "0 duplicates",
        "all checks passed",
        "dashboard: https://127.0.0.1:",
        "GW-0001: on-site page https://127.0.0.1:",
        "GW-0002's on-site page: https://127.0.0.1:",
    ] {
        assert!(stdout.contains(expected), "no {expected:?} in:\n{stdout}");
    }
    // One unit on 2.0.0 from slot A, the other back on 1.0.0 from slot B, per the summary.
    let summary = stdout.split("== Summary").nth(1).unwrap();
    assert_eq!(summary.matches(" 2.0.0     A ").count(), 1, "{summary}");
    assert_eq!(summary.matches(" 1.0.0     B ").count(), 1, "{summary}");
    assert!(
        summary.contains("paused"),
        "the failure gate paused it: {summary}"
    );
    assert_nothing_left(&out, &stdout);
}

#[test]
fn ctrl_c_stops_everything() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("fleet");
    let log = work.path().join("stdout.log");
    let mut child = fleet_command(&out)
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("connected to spark-ingest")
    {
        assert!(
            child.try_wait().unwrap().is_none(),
            "spark-fleet ended early: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        assert!(Instant::now() < deadline, "the fleet did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let stopped = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(60),
            "spark-fleet did not stop within 60 s of Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(130), "{status}");
    let stdout = std::fs::read_to_string(&log).unwrap();
    assert_nothing_left(&out, &stdout);
}
