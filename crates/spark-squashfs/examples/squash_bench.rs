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

    let mut ours = Duration::MAX;
    let mut ours_size = 0;
    for _ in 0..runs {
        let start = Instant::now();
        let mut out = BufWriter::new(File::create(&ours_out)?);
        let summary = write_dir(&dir, &mut out, &WriterOptions::default())?;
        drop(out);
        ours = ours.min(start.elapsed());
        ours_size = summary.image_size;
    }
    let mut theirs = Duration::MAX;
    for _ in 0..runs {
        theirs = theirs.min(mksquashfs(&dir, &theirs_out)?);
    }
    let theirs_size = std::fs::metadata(&theirs_out)?.len();
    println!(
        "spark-squashfs: {:>8.3} s  {ours_size} bytes",
        ours.as_secs_f64()
    );
    println!(
        "mksquashfs:     {:>8.3} s  {theirs_size} bytes",
        theirs.as_secs_f64()
    );
    println!(
        "ratio ours/mksquashfs: {:.3} ({:.1}% less wall time)",
        ours.as_secs_f64() / theirs.as_secs_f64(),
        100.0 * (1.0 - ours.as_secs_f64() / theirs.as_secs_f64())
    );
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
