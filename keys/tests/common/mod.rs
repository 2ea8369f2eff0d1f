//! Helpers shared by the spark-keys integration tests: running the real `openssl` and `rauc`
//! tools, and building a tiny plain bundle.

#![allow(dead_code)] // each test binary uses a different subset

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs `program` with `args`; panics (with the tool's output) if it cannot be started.
pub fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {program}: {e} (install the Debian package providing it: rauc, openssl, squashfs-tools)")
        })
}

/// Runs a tool and asserts it succeeded, returning stdout.
pub fn run_ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} failed with {}:\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn mode(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

pub fn p(path: &Path) -> &str {
    // Temp dirs made by the tests are always UTF-8.
    path.to_str().expect("test paths are UTF-8")
}

/// Builds a plain-format bundle from a one-image content dir with the real `rauc bundle`.
pub fn build_bundle(work: &Path, cert: &Path, key: &Path, intermediate: Option<&Path>) -> PathBuf {
    let content = work.join("content");
    fs::create_dir_all(&content).unwrap();
    fs::write(
        content.join("manifest.raucm"),
        "[update]\ncompatible=test\nversion=1\n\n[bundle]\nformat=plain\n\n[image.rootfs]\nfilename=rootfs.img\n",
    )
    .unwrap();
    fs::write(content.join("rootfs.img"), vec![0x5a; 8192]).unwrap();
    let bundle = work.join("update.raucb");
    let mut args = vec!["bundle", "--cert", p(cert), "--key", p(key)];
    if let Some(intermediate) = intermediate {
        args.extend(["--intermediate", p(intermediate)]);
    }
    args.extend([p(&content), p(&bundle)]);
    run_ok("rauc", &args);
    bundle
}

/// A system.conf for `rauc info`, with or without `check-purpose=codesign`.
pub fn system_conf(work: &Path, keyring: &Path, check_purpose: Option<&str>) -> PathBuf {
    let slot = work.join("slot-a.img");
    fs::write(&slot, b"").unwrap();
    let keyring_section = match check_purpose {
        Some(purpose) => format!(
            "[keyring]\npath={}\ncheck-purpose={purpose}\n\n",
            keyring.display()
        ),
        None => String::new(),
    };
    let conf = work.join(match check_purpose {
        Some(purpose) => format!("system-{purpose}.conf"),
        None => "system-default.conf".to_owned(),
    });
    fs::write(
        &conf,
        format!(
            "[system]\ncompatible=test\nbootloader=noop\n\n{keyring_section}[slot.rootfs.0]\ndevice={}\ntype=raw\nbootname=A\n",
            slot.display()
        ),
    )
    .unwrap();
    conf
}

/// `rauc --conf=CONF info --keyring=KEYRING BUNDLE`.
pub fn rauc_info(conf: &Path, keyring: &Path, bundle: &Path) -> Output {
    run(
        "rauc",
        &[
            &format!("--conf={}", conf.display()),
            "info",
            &format!("--keyring={}", keyring.display()),
            p(bundle),
        ],
    )
}

pub fn describe(out: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
