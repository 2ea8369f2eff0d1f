//! The real `rauc service` installs real bundles into a testbed, and the simulated U-Boot boots,
//! counts attempts and falls back like the BeagleBone's boot script.
//!
//! Needs root, rauc, dbus-daemon, openssl and squashfs-tools (see the crate docs).

mod common;

use std::thread;

use common::{COMPATIBLE, Fixture, image, processes_mentioning, slot_holds};
use spark_testbed::{Slot, Testbed, TestbedError, TestbedOptions};

#[test]
fn install_writes_the_other_slot_and_makes_it_primary() {
    let fx = Fixture::new();
    let rootfs = image(1, 300 * 1024);
    let bundle = fx.bundle(COMPATIBLE, "1.0.0", &rootfs);
    let mut bed = Testbed::start(fx.options()).unwrap();
    let boot = bed.bootloader();

    let before = bed.status().unwrap();
    assert_eq!(before.booted.as_deref(), Some("A"));
    assert_eq!(before.slot(Slot::A).unwrap().state, "booted");

    let info = bed.info(&bundle).unwrap();
    assert!(
        info.contains(r#""compatible":"spark-testbed-test""#),
        "{info}"
    );
    assert!(info.contains(r#""version":"1.0.0""#), "{info}");

    bed.install(&bundle).unwrap();
    assert!(
        slot_holds(&bed, Slot::B, &rootfs),
        "slot B does not hold the image"
    );
    assert!(!slot_holds(&bed, Slot::A, &rootfs), "slot A was written");
    assert_eq!(boot.boot_order().unwrap(), [Slot::B, Slot::A]);
    assert_eq!(boot.attempts_left(Slot::B).unwrap(), 3);
    // RAUC marks the target bad before writing and primary after: the order a power cut needs.
    let calls = boot.backend_calls().unwrap();
    let bad = calls
        .iter()
        .position(|c| c == "set-state B bad")
        .expect("mark bad");
    let primary = calls
        .iter()
        .position(|c| c == "set-primary B")
        .expect("set primary");
    assert!(bad < primary, "{calls:?}");

    let after = bed.status().unwrap();
    assert_eq!(after.boot_primary.as_deref(), Some("rootfs.1"));
    let b = after.slot(Slot::B).unwrap();
    assert_eq!(b.bundle_version.as_deref(), Some("1.0.0"));
    assert_eq!(b.boot_status.as_deref(), Some("good"));

    // Boot the new slot; the boot script spends one attempt, the health check gives it back.
    assert_eq!(bed.reboot().unwrap(), Slot::B);
    assert_eq!(bed.booted(), Slot::B);
    assert_eq!(bed.status().unwrap().booted.as_deref(), Some("B"));
    assert_eq!(boot.attempts_left(Slot::B).unwrap(), 2);
    bed.mark_good().unwrap();
    assert_eq!(boot.attempts_left(Slot::B).unwrap(), 3);
    assert_eq!(boot.boot_order().unwrap(), [Slot::B, Slot::A]);

    // A good slot stays booted across reboots.
    assert_eq!(bed.reboot().unwrap(), Slot::B);
}

#[test]
fn failing_new_slot_falls_back_to_the_old_one() {
    let fx = Fixture::new();
    let rootfs = image(2, 64 * 1024);
    let bundle = fx.bundle(COMPATIBLE, "2.0.0", &rootfs);
    let mut bed = Testbed::start(fx.options()).unwrap();
    let boot = bed.bootloader();
    bed.install(&bundle).unwrap();

    // B gets its three attempts and never calls mark-good; U-Boot then boots A.
    for left in [2, 1, 0] {
        assert_eq!(bed.reboot().unwrap(), Slot::B);
        assert_eq!(boot.attempts_left(Slot::B).unwrap(), left);
    }
    assert_eq!(bed.reboot().unwrap(), Slot::A);
    assert_eq!(boot.attempts_left(Slot::A).unwrap(), 2);

    // RAUC sees what happened: A booted, B no longer bootable.
    let status = bed.status().unwrap();
    assert_eq!(status.booted.as_deref(), Some("A"));
    assert_eq!(
        status.slot(Slot::B).unwrap().boot_status.as_deref(),
        Some("bad")
    );
    assert_eq!(status.boot_primary.as_deref(), Some("rootfs.0"));
    bed.mark_good().unwrap();
    assert_eq!(boot.attempts_left(Slot::A).unwrap(), 3);
}

#[test]
fn health_check_marking_bad_falls_back_at_once() {
    let fx = Fixture::new();
    let bundle = fx.bundle(COMPATIBLE, "3.0.0", &image(3, 4096));
    let mut bed = Testbed::start(fx.options()).unwrap();
    bed.install(&bundle).unwrap();
    assert_eq!(bed.reboot().unwrap(), Slot::B);
    bed.mark_bad().unwrap();
    assert_eq!(bed.bootloader().boot_order().unwrap(), [Slot::A]);
    assert_eq!(bed.reboot().unwrap(), Slot::A);
}

#[test]
fn wrong_compatible_is_refused_with_raucs_message() {
    let fx = Fixture::new();
    let rootfs = image(4, 8192);
    let bundle = fx.bundle("someone-elses-board", "1.0.0", &rootfs);
    let bed = Testbed::start(fx.options()).unwrap();

    let err = bed.install(&bundle).unwrap_err();
    let TestbedError::Command { ref message, .. } = err else {
        panic!("unexpected error: {err}");
    };
    assert!(message.contains("Compatible mismatch"), "{err}");
    assert!(err.to_string().contains("someone-elses-board"), "{err}");
    assert!(!slot_holds(&bed, Slot::B, &rootfs));
    assert_eq!(bed.bootloader().boot_order().unwrap(), [Slot::A, Slot::B]);
}

#[test]
fn starting_from_b_updates_a() {
    let fx = Fixture::new();
    let rootfs = image(5, 20_000);
    let bundle = fx.bundle(COMPATIBLE, "1.1.0", &rootfs);
    let opts = TestbedOptions {
        booted: Slot::B,
        boot_attempts: 5,
        check_purpose: Some("codesign".into()),
        ..fx.options()
    };
    let mut bed = Testbed::start(opts).unwrap();
    assert_eq!(bed.bootloader().boot_order().unwrap(), [Slot::B, Slot::A]);
    bed.install(&bundle).unwrap();
    assert!(slot_holds(&bed, Slot::A, &rootfs));
    assert_eq!(bed.bootloader().attempts_left(Slot::A).unwrap(), 5);
    assert_eq!(bed.reboot().unwrap(), Slot::A);
    assert_eq!(bed.bootloader().attempts_left(Slot::A).unwrap(), 4);
}

#[test]
fn two_testbeds_run_side_by_side() {
    let fx = Fixture::new();
    let images = [image(6, 100_000), image(7, 100_000)];
    let bundles = [
        fx.bundle(COMPATIBLE, "6.0.0", &images[0]),
        fx.bundle(COMPATIBLE, "7.0.0", &images[1]),
    ];
    let beds: Vec<Testbed> = thread::scope(|scope| {
        let handles: Vec<_> = bundles
            .iter()
            .map(|bundle| {
                let opts = fx.options();
                scope.spawn(move || {
                    let bed = Testbed::start(opts).unwrap();
                    bed.install(bundle).unwrap();
                    bed
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_ne!(beds[0].bus_address(), beds[1].bus_address());
    for (bed, image) in beds.iter().zip(&images) {
        assert!(slot_holds(bed, Slot::B, image));
    }
    assert!(!slot_holds(&beds[0], Slot::B, &images[1]));
}

#[test]
fn drop_leaves_no_processes_behind() {
    let fx = Fixture::new();
    let mut bed = Testbed::start(fx.options()).unwrap();
    bed.reboot().unwrap();
    let root = bed.root().to_owned();
    let running = processes_mentioning(&root);
    assert_eq!(
        running.len(),
        2,
        "expected rauc and dbus-daemon: {running:?}"
    );
    drop(bed);
    assert_eq!(processes_mentioning(&root), Vec::<String>::new());
    assert!(!root.exists(), "testbed directory left behind");
}

#[test]
fn broken_system_conf_reports_raucs_error() {
    let fx = Fixture::new();
    let opts = TestbedOptions {
        extra_system_conf: "[slot.rootfs.0]\nparent=nonexistent\n".into(),
        ..fx.options()
    };
    let err = Testbed::start(opts).unwrap_err();
    assert!(matches!(err, TestbedError::ServiceStart { .. }), "{err}");
    assert!(
        err.stderr()
            .is_some_and(|s| s.contains("Parent slot 'nonexistent' not found")),
        "{err}"
    );
}
