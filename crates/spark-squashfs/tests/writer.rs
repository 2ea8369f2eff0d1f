//! Our writer's images, checked with the real `unsquashfs` 4.5 (and the kernel, when allowed).

mod common;

use std::fs;
use std::io::{Cursor, Seek, Write};
use std::process::Command;

use common::*;
use spark_squashfs::{Archive, Entry, EntryKind, Source, WriterOptions, write_dir, write_entries};

#[test]
fn unsquashfs_extracts_our_image_byte_exact() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    make_tree(&src);
    let img = tmp.path().join("img.sqfs");
    let summary = build_ours(&src, &img, &WriterOptions::default());
    assert_eq!(summary.image_size % 4096, 0);
    assert_eq!(fs::metadata(&img).expect("stat").len(), summary.image_size);
    assert!(summary.bytes_used <= summary.image_size);

    let out = tmp.path().join("out");
    unsquashfs_extract(&img, &out);
    assert_same_tree(&src, &out);

    // -lls: every entry listed, owned by root, with its size.
    let listing = run(Command::new("unsquashfs").args(["-lls", "-n"]).arg(&img));
    for line in [
        "root/root",
        "squashfs-root/many/entry-with-a-longish-name-0299",
        "squashfs-root/bin/deep-link -> ../a/b/c/d/deep.txt",
    ] {
        assert!(listing.contains(line), "{line:?} missing from:\n{listing}");
    }
    let sizes = listing
        .lines()
        .find(|l| l.ends_with("squashfs-root/exact-2-blocks"))
        .expect("exact-2-blocks listed");
    assert!(sizes.contains(&(2 * BLOCK).to_string()), "{sizes}");
    assert!(!listing.contains("1000/"), "not all-root:\n{listing}");

    // Our own reader agrees too.
    let ar = Archive::open(fs::File::open(&img).expect("open")).expect("Archive::open");
    let ours = tmp.path().join("ours");
    ar.extract_all(&ours).expect("extract_all");
    assert_same_tree(&src, &ours);
}

#[test]
fn small_block_size_and_sparse_stats() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    make_tree(&src);
    let img = tmp.path().join("img.sqfs");
    let opts = WriterOptions {
        block_size: 4096,
        ..WriterOptions::default()
    };
    build_ours(&src, &img, &opts);
    let stats = run(Command::new("unsquashfs").arg("-s").arg(&img));
    assert!(stats.contains("Block size 4096"), "{stats}");
    assert!(stats.contains("Compression gzip"), "{stats}");
    let out = tmp.path().join("out");
    unsquashfs_extract(&img, &out);
    assert_same_tree(&src, &out);
}

#[test]
fn deterministic_for_any_thread_count_and_honours_mtime() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    make_tree(&src);
    let opts = WriterOptions {
        mtime: Some(1_700_000_000),
        ..WriterOptions::default()
    };
    let build = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("pool");
        pool.install(|| {
            let mut out = Cursor::new(Vec::new());
            write_dir(&src, &mut out, &opts).expect("write_dir");
            out.into_inner()
        })
    };
    let one = build(1);
    let two = build(2);
    let three = build(3);
    assert!(
        one == two && two == three,
        "output depends on the thread count"
    );

    let ar = Archive::open(Cursor::new(one)).expect("open");
    assert_eq!(ar.superblock().mtime, 1_700_000_000);
    for e in ar.entries().expect("entries") {
        assert_eq!(e.mtime, 1_700_000_000, "{}", e.path);
        assert_eq!((e.uid, e.gid), (0, 0));
    }
}

#[test]
fn progress_reports_all_input() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    write(&src.join("f"), &bytes(9, 5 * BLOCK + 3, true), 0o644);
    write(&src.join("g"), b"small", 0o644);
    let last = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let seen = last.clone();
    let opts = WriterOptions {
        progress: Some(Box::new(move |n| {
            seen.fetch_max(n, std::sync::atomic::Ordering::Relaxed);
        })),
        ..WriterOptions::default()
    };
    let mut out = Cursor::new(Vec::new());
    write_dir(&src, &mut out, &opts).expect("write_dir");
    assert_eq!(
        last.load(std::sync::atomic::Ordering::Relaxed),
        5 * BLOCK as u64 + 3 + 5
    );
}

#[test]
fn write_entries_bytes_and_paths_inside_a_bundle_window() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let rootfs = tmp.path().join("rootfs.ext4");
    let mut image = bytes(7, 3 * BLOCK, true);
    image.extend(vec![0u8; 2 * BLOCK]);
    fs::write(&rootfs, &image).expect("write");
    let manifest = b"[update]\ncompatible=spark\n".to_vec();
    let entries = vec![
        Entry {
            name: "rootfs.ext4".into(),
            source: Source::Path(rootfs.clone()),
            mode: 0o644,
        },
        Entry {
            name: "manifest.raucm".into(),
            source: Source::Bytes(manifest.clone()),
            mode: 0o644,
        },
    ];
    // Like a bundle: some bytes before (to test the window), the image, then a "signature".
    let bundle = tmp.path().join("bundle");
    let mut f = fs::File::create(&bundle).expect("create");
    f.write_all(b"prefix").expect("write");
    let summary =
        write_entries(&entries, &mut f, &WriterOptions::default()).expect("write_entries");
    assert_eq!(f.stream_position().expect("pos"), 6 + summary.image_size);
    f.write_all(b"SIGNATURE").expect("write");
    drop(f);

    let ar = Archive::open_at(
        fs::File::open(&bundle).expect("open"),
        6,
        summary.image_size,
    )
    .expect("open_at");
    assert_eq!(ar.superblock().bytes_used, summary.bytes_used);
    assert_eq!(ar.read_file("manifest.raucm").expect("read_file"), manifest);
    assert_eq!(
        ar.read_file("/manifest.raucm").expect("read_file"),
        manifest
    );
    let mut copied = Vec::new();
    let n = ar
        .copy_file("rootfs.ext4", &mut copied, None)
        .expect("copy_file");
    assert_eq!(n, image.len() as u64);
    assert!(copied == image);
    let names: Vec<_> = ar
        .entries()
        .expect("entries")
        .into_iter()
        .map(|e| (e.path, e.kind))
        .collect();
    assert_eq!(
        names,
        [
            ("manifest.raucm".to_string(), EntryKind::File),
            ("rootfs.ext4".to_string(), EntryKind::File)
        ]
    );

    // And unsquashfs reads the bare image.
    let img = tmp.path().join("img");
    let mut data = fs::read(&bundle).expect("read");
    data.drain(..6);
    data.truncate(summary.image_size as usize);
    fs::write(&img, data).expect("write");
    let out = tmp.path().join("out");
    unsquashfs_extract(&img, &out);
    assert!(fs::read(out.join("rootfs.ext4")).expect("read") == image);
    assert_eq!(
        fs::read(out.join("manifest.raucm")).expect("read"),
        manifest
    );
}

#[test]
fn rejects_bad_names_and_special_files() {
    let mut out = Cursor::new(Vec::new());
    let dup = vec![
        Entry {
            name: "a".into(),
            source: Source::Bytes(vec![]),
            mode: 0o644,
        },
        Entry {
            name: "a".into(),
            source: Source::Bytes(vec![]),
            mode: 0o644,
        },
    ];
    assert!(write_entries(&dup, &mut out, &WriterOptions::default()).is_err());
    let slash = vec![Entry {
        name: "a/b".into(),
        source: Source::Bytes(vec![]),
        mode: 0o644,
    }];
    assert!(write_entries(&slash, &mut out, &WriterOptions::default()).is_err());

    let tmp = tempfile::tempdir().expect("tempdir");
    let fifo = tmp.path().join("fifo");
    run(Command::new("mkfifo").arg(&fifo));
    let err = write_dir(tmp.path(), &mut out, &WriterOptions::default()).expect_err("fifo refused");
    assert!(err.to_string().contains("FIFO"), "{err}");
}

#[test]
fn kernel_mounts_our_image() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    make_tree(&src);
    let img = tmp.path().join("img.sqfs");
    build_ours(&src, &img, &WriterOptions::default());
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).expect("mkdir");
    let mounted = Command::new("mount")
        .args(["-t", "squashfs", "-o", "loop,ro"])
        .arg(&img)
        .arg(&mnt)
        .output();
    match mounted {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            println!(
                "skipping: mount not permitted here: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            return;
        }
        Err(e) => {
            println!("skipping: cannot run mount: {e}");
            return;
        }
    }
    let result = std::panic::catch_unwind(|| assert_same_tree(&src, &mnt));
    run(Command::new("umount").arg(&mnt));
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn empty_root_is_valid() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let img = tmp.path().join("empty.sqfs");
    let mut f = fs::File::create(&img).expect("create");
    let summary = write_entries(&[], &mut f, &WriterOptions::default()).expect("write_entries");
    drop(f);
    assert_eq!(summary.image_size, 4096);
    let out = tmp.path().join("out");
    unsquashfs_extract(&img, &out);
    assert!(snapshot(&out).is_empty());
    let ar = Archive::open(fs::File::open(&img).expect("open")).expect("open");
    assert!(ar.entries().expect("entries").is_empty());
}

/// A listing over 64 KiB needs an extended directory inode; unsquashfs and the kernel must
/// still find every entry (we write no lookup index, so the kernel scans linearly).
#[test]
fn huge_directory_uses_extended_inode() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("src");
    for i in 0..2500 {
        let name = format!("d/file-with-a-fairly-long-name-to-grow-the-listing-{i:05}");
        write(&src.join(name), format!("{i}\n").as_bytes(), 0o644);
    }
    let img = tmp.path().join("img.sqfs");
    build_ours(&src, &img, &WriterOptions::default());
    let ar = Archive::open(fs::File::open(&img).expect("open")).expect("open");
    let dir = ar
        .entries()
        .expect("entries")
        .into_iter()
        .find(|e| e.path == "d")
        .expect("d listed");
    assert!(dir.size > 65535, "listing of {} bytes is not big", dir.size);
    assert_eq!(
        ar.read_file("d/file-with-a-fairly-long-name-to-grow-the-listing-02499")
            .expect("read"),
        b"2499\n"
    );
    let out = tmp.path().join("out");
    unsquashfs_extract(&img, &out);
    assert_same_tree(&src, &out);

    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).expect("mkdir");
    let mounted = Command::new("mount")
        .args(["-t", "squashfs", "-o", "loop,ro"])
        .arg(&img)
        .arg(&mnt)
        .output();
    if !mounted.is_ok_and(|o| o.status.success()) {
        println!("skipping the kernel half: mount not permitted here");
        return;
    }
    let looked_up = fs::read(mnt.join("d/file-with-a-fairly-long-name-to-grow-the-listing-01777"));
    let listed = fs::read_dir(mnt.join("d")).map(|d| d.count());
    run(Command::new("umount").arg(&mnt));
    assert_eq!(looked_up.expect("kernel lookup"), b"1777\n");
    assert_eq!(listed.expect("kernel readdir"), 2500);
}
