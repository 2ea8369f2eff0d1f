//! Our reader on images made by the real `mksquashfs` 4.5, and on damaged images.

mod common;

use std::fs;
use std::io::Cursor;
use std::path::Path;

use common::*;
use spark_squashfs::{Archive, EntryKind, WriterOptions, write_dir};

/// Reads every file through `copy_file` and `read_file` and compares with the source tree.
fn check_reader(src: &Path, img: &Path, scratch: &Path) {
    let ar = Archive::open(fs::File::open(img).expect("open")).expect("Archive::open");
    let entries = ar.entries().expect("entries");
    let expected = snapshot(src);
    assert_eq!(entries.len(), expected.len());
    for e in &entries {
        let node = expected
            .get(Path::new(&e.path))
            .unwrap_or_else(|| panic!("unexpected {}", e.path));
        match (node, e.kind) {
            (Node::File { mode, data }, EntryKind::File) => {
                assert_eq!(u32::from(e.mode), *mode, "{}", e.path);
                assert_eq!(e.size, data.len() as u64, "{}", e.path);
                let mut out = Vec::new();
                ar.copy_file(&e.path, &mut out, None).expect("copy_file");
                assert!(out == *data, "{} differs", e.path);
                if data.len() < 1 << 20 {
                    assert!(ar.read_file(&e.path).expect("read_file") == *data);
                }
            }
            (Node::Dir { mode }, EntryKind::Dir) => assert_eq!(u32::from(e.mode), *mode),
            (Node::Symlink(t), EntryKind::Symlink) => {
                assert_eq!(e.symlink_target.as_deref(), t.to_str(), "{}", e.path)
            }
            (n, k) => panic!("{}: {n:?} vs {k:?}", e.path),
        }
    }
    let out = scratch.join(format!(
        "extract-{}",
        img.file_name().expect("name").to_string_lossy()
    ));
    ar.extract_all(&out).expect("extract_all");
    assert_same_tree(src, &out);
}

#[test]
fn reads_mksquashfs_images_byte_exact() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    make_tree(&src);
    // A hard link and a duplicate file: mksquashfs shares the inode / the blocks.
    fs::hard_link(src.join("bin/big-tool"), src.join("bin/big-tool-hardlink")).expect("link");
    fs::copy(src.join("exact-2-blocks"), src.join("exact-2-blocks-copy")).expect("copy");
    let variants: &[(&str, &[&str])] = &[
        ("default", &[]),
        ("always-fragments", &["-always-use-fragments"]),
        ("uncompressed", &["-noI", "-noD", "-noF"]),
        ("small-blocks", &["-b", "4096"]),
        ("no-fragments", &["-no-fragments", "-no-exports"]),
        ("xz", &["-comp", "xz"]),
        ("zstd", &["-comp", "zstd"]),
        ("xz-small-blocks", &["-comp", "xz", "-b", "4096"]),
    ];
    for (name, args) in variants {
        let img = tmp.path().join(format!("{name}.sqfs"));
        mksquashfs(&src, &img, args);
        check_reader(&src, &img, tmp.path());
    }
}

#[test]
fn reports_missing_paths_and_wrong_kinds() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    make_tree(&src);
    let img = tmp.path().join("img.sqfs");
    mksquashfs(&src, &img, &[]);
    let ar = Archive::open(fs::File::open(&img).expect("open")).expect("open");
    assert!(matches!(
        ar.read_file("nope"),
        Err(spark_squashfs::SquashfsError::NotFound { .. })
    ));
    assert!(matches!(
        ar.read_file("a/b"),
        Err(spark_squashfs::SquashfsError::WrongKind { .. })
    ));
    assert!(matches!(
        ar.read_file("empty/x"),
        Err(spark_squashfs::SquashfsError::NotFound { .. })
    ));
    assert_eq!(ar.read_file("a/b/c/d/deep.txt").expect("read"), b"deep\n");
    assert!(Archive::open(Cursor::new(vec![0u8; 4096])).is_err());
    assert!(Archive::open(Cursor::new(Vec::new())).is_err());
}

/// A small tree with a bit of everything (fragments, several blocks, sparse, symlink, dirs).
fn small_tree(src: &Path) {
    write(
        &src.join("manifest.raucm"),
        b"[update]\ncompatible=spark\nversion=1\n",
        0o644,
    );
    let mut blocks = bytes(1, 9000, true);
    blocks.extend(vec![0u8; 4096]);
    blocks.extend(bytes(2, 3000, false));
    write(&src.join("d/blocks"), &blocks, 0o755);
    write(&src.join("d/small"), b"tiny", 0o600);
    std::os::unix::fs::symlink("blocks", src.join("d/link")).expect("symlink");
}

fn small_image() -> Vec<u8> {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path();
    small_tree(src);
    let opts = WriterOptions {
        block_size: 4096,
        mtime: Some(0),
        ..WriterOptions::default()
    };
    let mut out = Cursor::new(Vec::new());
    write_dir(src, &mut out, &opts).expect("write_dir");
    out.into_inner()
}

/// Everything a consumer would do with an archive; errors are fine, panics are not.
fn exercise(image: Vec<u8>) {
    let Ok(ar) = Archive::open(Cursor::new(image)) else {
        return;
    };
    if let Ok(entries) = ar.entries() {
        for e in entries.iter().filter(|e| e.kind == EntryKind::File) {
            let _ = ar.read_file(&e.path);
        }
    }
    let _ = ar.read_file("manifest.raucm");
    let _ = ar.copy_file("d/blocks", &mut std::io::sink(), None);
}

#[test]
fn damaged_images_give_errors_not_panics() {
    damage(small_image());
}

#[test]
fn damaged_xz_and_zstd_images_give_errors_not_panics() {
    for comp in ["xz", "zstd"] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let src = tmp.path().join("src");
        small_tree(&src);
        let img = tmp.path().join("img");
        mksquashfs(&src, &img, &["-comp", comp, "-b", "4096"]);
        damage(fs::read(&img).expect("read"));
    }
}

fn damage(image: Vec<u8>) {
    let used = {
        let ar = Archive::open(Cursor::new(image.clone())).expect("open");
        assert_eq!(ar.read_file("d/small").expect("read"), b"tiny");
        ar.superblock().bytes_used as usize
    };
    // Every byte of the used part, three different corruptions each.
    for i in 0..used {
        for mask in [0xff_u8, 0x01, 0x80] {
            let mut bad = image.clone();
            bad[i] ^= mask;
            exercise(bad);
        }
    }
    // Truncations.
    for len in (0..used).step_by(7) {
        exercise(image[..len].to_vec());
    }
}

#[test]
fn hostile_superblock_values_are_refused() {
    let image = small_image();
    let patch = |offset: usize, value: &[u8]| {
        let mut bad = image.clone();
        bad[offset..offset + value.len()].copy_from_slice(value);
        Archive::open(Cursor::new(bad))
    };
    assert!(patch(0, b"sqsh").is_err(), "magic");
    assert!(patch(12, &3u32.to_le_bytes()).is_err(), "block size");
    assert!(patch(20, &3u16.to_le_bytes()).is_err(), "lzo");
    assert!(patch(28, &3u16.to_le_bytes()).is_err(), "version");
    assert!(patch(40, &u64::MAX.to_le_bytes()).is_err(), "bytes_used");
    // A huge fragment count only fails when a fragment is used, without allocating for it.
    if let Ok(ar) = patch(16, &u32::MAX.to_le_bytes()) {
        let _ = ar.read_file("d/small");
    }
}
