//! Times our writer against `mksquashfs` on the same directory, same settings (gzip level 9,
//! 128 KiB blocks, `-all-root -noappend -no-progress -no-xattrs` as `rauc bundle` runs it).
//!
//! ```text
//! cargo run --release -p spark-squashfs --example squash_bench -- DIR [RUNS]
//! ```

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use spark_squashfs::{WriterOptions, write_dir};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().ok_or("usage: squash_bench DIR [RUNS]")?);
    let runs: usize = args.next().map(|r| r.parse()).transpose()?.unwrap_or(3);
    let tmp = std::env::temp_dir();
    let ours_out = tmp.join("squash_bench.ours.sqfs");
    let theirs_out = tmp.join("squash_bench.mksquashfs.sqfs");
    println!(
        "input {} ; {} threads ; best of {runs}",
        dir.display(),
        rayon::current_num_threads()
    );

    // Runs alternate so that load from other processes hits both sides alike; CPU time
    // (from /proc/self/stat, children included once waited for) is reported as well because it
    // does not depend on that load.
    let (mut ours, mut theirs) = (Duration::MAX, Duration::MAX);
    let (mut ours_cpu, mut theirs_cpu) = (f64::MAX, f64::MAX);
    let mut ours_size = 0;
    for _ in 0..runs {
        let cpu0 = cpu_times()?;
        let start = Instant::now();
        let mut out = BufWriter::new(File::create(&ours_out)?);
        let summary = write_dir(&dir, &mut out, &WriterOptions::default())?;
        drop(out);
        ours = ours.min(start.elapsed());
        let cpu1 = cpu_times()?;
        ours_cpu = ours_cpu.min(cpu1.0 - cpu0.0);
        ours_size = summary.image_size;

        theirs = theirs.min(mksquashfs(&dir, &theirs_out)?);
        theirs_cpu = theirs_cpu.min(cpu_times()?.1 - cpu1.1);
    }
    let theirs_size = std::fs::metadata(&theirs_out)?.len();
    println!(
        "spark-squashfs: {:>8.3} s wall {:>7.2} s cpu  {ours_size} bytes",
        ours.as_secs_f64(),
        ours_cpu
    );
    println!(
        "mksquashfs:     {:>8.3} s wall {:>7.2} s cpu  {theirs_size} bytes",
        theirs.as_secs_f64(),
        theirs_cpu
    );
    println!(
        "ratio ours/mksquashfs: wall {:.3} ({:.1}% less), cpu {:.3}",
        ours.as_secs_f64() / theirs.as_secs_f64(),
        100.0 * (1.0 - ours.as_secs_f64() / theirs.as_secs_f64()),
        ours_cpu / theirs_cpu
    );
    // Reading back: our parallel extraction against unsquashfs, both on mksquashfs' image.
    let extract_ours = tmp.join("squash_bench.extract.ours");
    let extract_theirs = tmp.join("squash_bench.extract.unsquashfs");
    let (mut ours_x, mut theirs_x) = (Duration::MAX, Duration::MAX);
    for _ in 0..runs {
        let _ = std::fs::remove_dir_all(&extract_ours);
        let start = Instant::now();
        spark_squashfs::Archive::open(File::open(&theirs_out)?)?.extract_all(&extract_ours)?;
        ours_x = ours_x.min(start.elapsed());
        let _ = std::fs::remove_dir_all(&extract_theirs);
        let start = Instant::now();
        let status = Command::new("unsquashfs")
            .args(["-no-progress", "-q", "-d"])
            .arg(&extract_theirs)
            .arg(&theirs_out)
            .status()?;
        if !status.success() {
            return Err(format!("unsquashfs failed: {status}").into());
        }
        theirs_x = theirs_x.min(start.elapsed());
    }
    println!(
        "extract: spark-squashfs {:.3} s, unsquashfs {:.3} s",
        ours_x.as_secs_f64(),
        theirs_x.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&extract_ours);
    let _ = std::fs::remove_dir_all(&extract_theirs);
    // Children are separate processes: this is the writer's own peak memory.
    if let Ok(status) = std::fs::read_to_string("/proc/self/status")
        && let Some(line) = status.lines().find(|l| l.starts_with("VmHWM"))
    {
        println!(
            "peak RSS of the benchmark process (our writer): {}",
            line[6..].trim()
        );
    }
    let _ = std::fs::remove_file(&ours_out);
    let _ = std::fs::remove_file(&theirs_out);
    Ok(())
}

fn mksquashfs(dir: &Path, out: &Path) -> Result<Duration, Box<dyn std::error::Error>> {
    let start = Instant::now();
    let status = Command::new("mksquashfs")
        .arg(dir)
        .arg(out)
        .args([
            "-all-root",
            "-noappend",
            "-no-progress",
            "-no-xattrs",
            "-quiet",
        ])
        .status()?;
    if !status.success() {
        return Err(format!("mksquashfs failed: {status}").into());
    }
    Ok(start.elapsed())
}

/// (own user+system seconds, waited-for children's user+system seconds).
fn cpu_times() -> Result<(f64, f64), Box<dyn std::error::Error>> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the parenthesised command name; utime is field 14 overall.
    let rest = stat.rsplit_once(')').ok_or("odd /proc/self/stat")?.1;
    let f: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(|v| v.parse::<f64>())
        .collect::<Result<_, _>>()?;
    // Linux reports clock ticks of 1/100 s on every architecture we build for.
    Ok(((f[0] + f[1]) / 100.0, (f[2] + f[3]) / 100.0))
}
