//! Helpers shared by the integration tests: deterministic test trees, running the real
//! squashfs-tools, and comparing extracted trees.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use spark_squashfs::{WriteSummary, WriterOptions, write_dir};

pub const BLOCK: usize = 128 * 1024;

/// Deterministic bytes: `text` compressible lines or incompressible xorshift noise.
pub fn bytes(seed: u64, len: usize, text: bool) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if text {
            v.extend_from_slice(
                format!("line {} of the test file {}\n", x % 1000, seed).as_bytes(),
            );
        } else {
            v.extend_from_slice(&x.to_le_bytes());
        }
    }
    v.truncate(len);
    v
}

pub fn write(path: &Path, data: &[u8], mode: u32) {
    fs::create_dir_all(path.parent().expect("test paths have parents")).expect("mkdir");
    fs::write(path, data).expect("write test file");
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A tree covering what the format has to handle: empty files, exact multiples of the block
/// size, sparse regions, big files, small files in fragments, deep dirs, symlinks, modes, a
/// directory large enough for several listing headers and inode blocks.
pub fn make_tree(root: &Path) {
    write(&root.join("empty"), b"", 0o644);
    write(
        &root.join("exact-2-blocks"),
        &bytes(1, 2 * BLOCK, true),
        0o644,
    );
    let mut sparse = bytes(2, BLOCK, true);
    sparse.extend(std::iter::repeat_n(0u8, 3 * BLOCK));
    sparse.extend(bytes(3, 1000, true));
    write(&root.join("sparse"), &sparse, 0o600);
    write(&root.join("all-zero"), &vec![0u8; 2 * BLOCK + 5], 0o644);
    let mut big = bytes(4, 3 * BLOCK, true);
    big.extend(bytes(5, 2 * BLOCK + 777, false)); // incompressible: stored raw
    write(&root.join("bin/big-tool"), &big, 0o755);
    for i in 0..60 {
        write(
            &root.join(format!("etc/conf.d/file-{i:03}.conf")),
            &bytes(100 + i, 3000 + 97 * i as usize, i % 7 != 0),
            0o644,
        );
    }
    write(&root.join("a/b/c/d/deep.txt"), b"deep\n", 0o640);
    fs::create_dir_all(root.join("a/empty-dir")).expect("mkdir");
    std::os::unix::fs::symlink("../a/b/c/d/deep.txt", root.join("bin/deep-link")).expect("symlink");
    std::os::unix::fs::symlink("/nonexistent/absolute", root.join("dangling")).expect("symlink");
    for i in 0..300 {
        let p = root.join(format!("many/entry-with-a-longish-name-{i:04}"));
        write(&p, format!("{i}\n").as_bytes(), 0o644);
    }
    fs::set_permissions(root.join("a/b"), fs::Permissions::from_mode(0o750)).expect("chmod");
}

#[derive(Debug, PartialEq, Eq)]
pub enum Node {
    File { mode: u32, data: Vec<u8> },
    Dir { mode: u32 },
    Symlink(PathBuf),
}

/// Snapshot of a tree (below `root`, root excluded).
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).expect("read_dir") {
            let e = e.expect("dirent");
            let p = e.path();
            let rel = p.strip_prefix(root).expect("below root").to_path_buf();
            let m = fs::symlink_metadata(&p).expect("lstat");
            let mode = m.permissions().mode() & 0o7777;
            let node = if m.file_type().is_symlink() {
                Node::Symlink(fs::read_link(&p).expect("readlink"))
            } else if m.is_dir() {
                stack.push(p.clone());
                Node::Dir { mode }
            } else {
                Node::File {
                    mode,
                    data: fs::read(&p).expect("read"),
                }
            };
            out.insert(rel, node);
        }
    }
    out
}

pub fn assert_same_tree(expected: &Path, actual: &Path) {
    let a = snapshot(expected);
    let b = snapshot(actual);
    assert_eq!(
        a.len(),
        b.len(),
        "different entry counts: {:?} vs {:?}",
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>()
    );
    for (path, node) in &a {
        let other = b
            .get(path)
            .unwrap_or_else(|| panic!("{} missing", path.display()));
        assert!(node == other, "{} differs", path.display());
    }
}

pub fn build_ours(src: &Path, img: &Path, opts: &WriterOptions) -> WriteSummary {
    let mut f = fs::File::create(img).expect("create image");
    write_dir(src, &mut f, opts).expect("write_dir")
}

pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .expect("run squashfs-tools (apt-get install squashfs-tools)");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn unsquashfs_extract(img: &Path, dest: &Path) {
    run(Command::new("unsquashfs")
        .args(["-no-progress", "-d"])
        .arg(dest)
        .arg(img));
}

pub fn mksquashfs(src: &Path, img: &Path, extra: &[&str]) {
    run(Command::new("mksquashfs")
        .arg(src)
        .arg(img)
        .args([
            "-all-root",
            "-noappend",
            "-no-progress",
            "-no-xattrs",
            "-quiet",
        ])
        .args(extra));
}
