//! `RaucClient` against the real `rauc service` (rauc 1.8) on a private bus: installs, their
//! progress and failures, slot status, marking slots, and the properties. No part of RAUC is
//! mocked; bundles are built by spark-image and signed by a spark-keys dev PKI.
//!
//! Needs root, rauc, dbus-daemon and a kernel with loop and squashfs (see spark-testbed).

mod common;

use std::time::Duration;

use common::{COMPATIBLE, Fixture, WAIT, client, flip, image, slot_holds, within};
use futures_util::StreamExt;
use rauc_client::{InstallArgs, MarkState, Operation, Progress, RaucError, SlotState, SlotStatus};
use sha2::{Digest, Sha256};
use spark_testbed::{Slot, TestbedOptions};

fn slot<'a>(slots: &'a [SlotStatus], name: &str) -> &'a SlotStatus {
    slots
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no slot {name} in {slots:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn install_reports_progress_and_writes_the_other_slot() {
    let fx = Fixture::new();
    let rootfs = image(1, 3 << 20);
    let bundle = fx.bundle(COMPATIBLE, "1.0.0", &rootfs);
    let bed = fx.testbed();
    let rauc = client(&bed).await;

    let before = within(rauc.slot_status()).await.unwrap();
    assert_eq!(before.len(), 2);
    let a = slot(&before, "rootfs.0");
    assert!(a.is_booted(), "{a:?}");
    assert_eq!(a.is_primary, Some(true));
    assert_eq!(a.bootname.as_deref(), Some("A"));
    assert_eq!(a.class, "rootfs");
    assert_eq!(a.slot_type, "raw");
    assert_eq!(slot(&before, "rootfs.1").state, SlotState::Inactive);
    assert_eq!(slot(&before, "rootfs.1").bundle_version, None);

    let mut seen: Vec<Progress> = Vec::new();
    rauc.install(&bundle, &InstallArgs::default(), WAIT, |p| {
        seen.push(p.clone())
    })
    .await
    .unwrap();

    assert!(seen.len() >= 5, "too few progress updates: {seen:?}");
    assert!(
        seen.windows(2).all(|w| w[0].percent <= w[1].percent),
        "percent went backwards: {seen:?}"
    );
    let last = seen.last().unwrap();
    assert_eq!((last.percent, last.depth), (100, 1), "{seen:?}");
    assert_eq!(last.message, "Installing done.");
    assert!(
        seen.iter()
            .any(|p| p.message == "Copying image to rootfs.1"),
        "{seen:?}"
    );

    assert!(slot_holds(&bed, Slot::B, &rootfs), "slot B lacks the image");
    assert!(!slot_holds(&bed, Slot::A, &rootfs), "slot A was written");
    assert_eq!(within(rauc.primary()).await.unwrap(), "rootfs.1");
    assert_eq!(bed.bootloader().boot_order().unwrap(), [Slot::B, Slot::A]);

    let after = within(rauc.slot_status()).await.unwrap();
    let b = slot(&after, "rootfs.1");
    assert_eq!(b.bundle_version.as_deref(), Some("1.0.0"));
    assert_eq!(b.bundle_compatible.as_deref(), Some(COMPATIBLE));
    assert_eq!(
        b.bundle_description.as_deref(),
        Some("rauc-client test bundle")
    );
    assert_eq!(b.is_primary, Some(true));
    assert_eq!(b.boot_status.as_deref(), Some("good"));
    assert_eq!(b.status.as_deref(), Some("ok"));
    assert_eq!(b.size, Some(rootfs.len() as u64));
    let digest: [u8; 32] = Sha256::digest(&rootfs).into();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(b.sha256.as_deref(), Some(hex.as_str()));
    assert_eq!(b.installed_count, Some(1));
    assert!(
        b.installed_timestamp
            .as_deref()
            .is_some_and(|t| t.ends_with('Z') && t.contains('T')),
        "{b:?}"
    );
    assert!(b.raw.contains_key("installed.timestamp"));
    assert_eq!(slot(&after, "rootfs.0").is_primary, Some(false));
    assert_eq!(within(rauc.operation()).await.unwrap(), Operation::Idle);
    assert_eq!(within(rauc.last_error()).await.unwrap(), "");
}

#[tokio::test(flavor = "multi_thread")]
async fn install_as_a_stream_ends_after_completed() {
    let fx = Fixture::new();
    let rootfs = image(2, 256 << 10);
    let bundle = fx.bundle(COMPATIBLE, "2.0.0", &rootfs);
    let bed = fx.testbed();
    let rauc = client(&bed).await;

    let mut install = within(rauc.start_install(&bundle, &InstallArgs::default()))
        .await
        .unwrap();
    assert_eq!(install.bundle(), bundle);
    let mut percents = Vec::new();
    while let Some(item) = within(install.next()).await {
        percents.push(item.unwrap().percent);
    }
    assert_eq!(percents.first(), Some(&0));
    assert_eq!(percents.last(), Some(&100));
    // A finished stream stays finished.
    assert!(within(install.next()).await.is_none());
    assert!(slot_holds(&bed, Slot::B, &rootfs));
}

#[tokio::test(flavor = "multi_thread")]
async fn properties_and_info() {
    let fx = Fixture::new();
    let bundle = fx.bundle(COMPATIBLE, "3.1.4", &image(3, 4096));
    let bed = fx.testbed();
    let rauc = client(&bed).await;

    assert_eq!(within(rauc.compatible()).await.unwrap(), COMPATIBLE);
    assert_eq!(within(rauc.boot_slot()).await.unwrap(), "A");
    assert_eq!(within(rauc.variant()).await.unwrap(), "");
    assert_eq!(within(rauc.operation()).await.unwrap(), Operation::Idle);
    assert_eq!(within(rauc.last_error()).await.unwrap(), "");
    assert_eq!(within(rauc.progress()).await.unwrap(), Progress::default());
    assert_eq!(within(rauc.primary()).await.unwrap(), "rootfs.0");

    let info = within(rauc.info(&bundle)).await.unwrap();
    assert_eq!(info.compatible, COMPATIBLE);
    assert_eq!(info.version, "3.1.4");

    // rauc 1.8 says nothing more specific than "rauc info error" for a missing bundle.
    let err = within(rauc.info(fx.dir.path().join("missing.raucb")))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RaucError::Rejected { method: "Info", message } if message == "rauc info error"),
        "{err:?}"
    );
    assert!(err.to_string().contains("see RAUC's journal"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn booted_from_b_reports_b() {
    let fx = Fixture::new();
    let bed = spark_testbed::Testbed::start(TestbedOptions {
        booted: Slot::B,
        ..fx.options()
    })
    .unwrap();
    let rauc = client(&bed).await;
    assert_eq!(within(rauc.boot_slot()).await.unwrap(), "B");
    let slots = within(rauc.slot_status()).await.unwrap();
    assert!(slot(&slots, "rootfs.1").is_booted());
    assert_eq!(slot(&slots, "rootfs.0").state, SlotState::Inactive);
}

#[tokio::test(flavor = "multi_thread")]
async fn mark_good_bad_and_active_reach_the_bootloader() {
    let fx = Fixture::new();
    let bed = fx.testbed();
    let boot = bed.bootloader();
    let rauc = client(&bed).await;

    // As after a boot of A that spent two attempts: the health check gives them back.
    boot.set_attempts_left(Slot::A, 1).unwrap();
    let marked = within(rauc.mark_good_booted()).await.unwrap();
    assert_eq!(marked.slot, "rootfs.0");
    assert_eq!(marked.message, "marked slot rootfs.0 as good");
    assert_eq!(boot.attempts_left(Slot::A).unwrap(), 3);

    let marked = within(rauc.mark_bad_booted()).await.unwrap();
    assert_eq!(marked.slot, "rootfs.0");
    assert_eq!(boot.boot_order().unwrap(), [Slot::B]);
    let slots = within(rauc.slot_status()).await.unwrap();
    assert_eq!(slot(&slots, "rootfs.0").boot_status.as_deref(), Some("bad"));

    let marked = within(rauc.mark_active("rootfs.0")).await.unwrap();
    assert_eq!(marked.slot, "rootfs.0");
    assert_eq!(marked.message, "activated slot rootfs.0");
    assert_eq!(boot.boot_order().unwrap(), [Slot::A, Slot::B]);
    assert_eq!(within(rauc.primary()).await.unwrap(), "rootfs.0");

    let marked = within(rauc.mark_active("other")).await.unwrap();
    assert_eq!(marked.slot, "rootfs.1");
    assert_eq!(boot.boot_order().unwrap(), [Slot::B, Slot::A]);

    let err = within(rauc.mark(MarkState::Good, "nonsense"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RaucError::Rejected { method: "Mark", message } if message.contains("Invalid slot name format")),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_compatible_fails_with_raucs_last_error() {
    let fx = Fixture::new();
    let rootfs = image(4, 64 << 10);
    let bundle = fx.bundle("someone-elses-board", "1.0.0", &rootfs);
    let bed = fx.testbed();
    let rauc = client(&bed).await;

    let mut seen = Vec::new();
    let err = rauc
        .install(&bundle, &InstallArgs::default(), WAIT, |p| {
            seen.push(p.clone())
        })
        .await
        .unwrap_err();
    let RaucError::InstallFailed {
        result, last_error, ..
    } = &err
    else {
        panic!("unexpected error: {err:?}");
    };
    assert_eq!(*result, 1);
    assert_eq!(
        last_error,
        &format!(
            "Installation error: Compatible mismatch: Expected '{COMPATIBLE}' but bundle \
             manifest has 'someone-elses-board'"
        )
    );
    assert!(err.to_string().contains("Compatible mismatch"), "{err}");
    // rauc 1.8 reports 100 % on failure too: only Completed tells.
    assert_eq!(
        seen.last().map(|p| p.message.as_str()),
        Some("Installing failed.")
    );
    assert!(!slot_holds(&bed, Slot::B, &rootfs));
    assert_eq!(within(rauc.last_error()).await.unwrap(), *last_error);
    assert_eq!(bed.bootloader().boot_order().unwrap(), [Slot::A, Slot::B]);

    // The same bundle with ignore-compatible goes in, and the next install clears LastError.
    let args = InstallArgs {
        ignore_compatible: true,
        ..InstallArgs::default()
    };
    rauc.install(&bundle, &args, WAIT, |_| {}).await.unwrap();
    assert!(slot_holds(&bed, Slot::B, &rootfs));
    assert_eq!(within(rauc.last_error()).await.unwrap(), "");
}

#[tokio::test(flavor = "multi_thread")]
async fn tampered_bundle_fails_with_raucs_last_error() {
    let fx = Fixture::new();
    let rootfs = image(5, 64 << 10);
    let bundle = fx.bundle(COMPATIBLE, "1.0.0", &rootfs);
    // Inside the squashfs payload, which the detached signature covers.
    flip(&bundle, 20_000);
    let bed = fx.testbed();
    let rauc = client(&bed).await;

    let err = rauc
        .install(&bundle, &InstallArgs::default(), WAIT, |_| {})
        .await
        .unwrap_err();
    let RaucError::InstallFailed { last_error, .. } = &err else {
        panic!("unexpected error: {err:?}");
    };
    assert!(
        last_error.starts_with("signature verification failed"),
        "{err}"
    );
    assert!(!slot_holds(&bed, Slot::B, &rootfs));
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_during_an_install_are_refused_as_busy() {
    let fx = Fixture::new();
    // Big enough that RAUC is still copying while we call again.
    let rootfs = image(6, 64 << 20);
    let bundle = fx.bundle(COMPATIBLE, "6.0.0", &rootfs);
    let bed = spark_testbed::Testbed::start(TestbedOptions {
        slot_size: 80 << 20,
        ..fx.options()
    })
    .unwrap();
    let rauc = client(&bed).await;

    let first = within(rauc.start_install(&bundle, &InstallArgs::default()))
        .await
        .unwrap();
    let err = rauc
        .install(&bundle, &InstallArgs::default(), WAIT, |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RaucError::Busy {
                method: "InstallBundle"
            }
        ),
        "{err:?}"
    );
    assert!(err.is_transient());
    assert!(err.to_string().contains("wait until"), "{err}");
    let err = within(rauc.mark_good_booted()).await.unwrap_err();
    assert!(matches!(err, RaucError::Busy { method: "Mark" }), "{err:?}");
    let err = within(rauc.slot_status()).await.unwrap_err();
    assert!(
        matches!(
            err,
            RaucError::Busy {
                method: "GetSlotStatus"
            }
        ),
        "{err:?}"
    );

    first.wait(WAIT, |_| {}).await.unwrap();
    assert!(slot_holds(&bed, Slot::B, &rootfs));
    within(rauc.mark_good_booted()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timeout_says_rauc_may_still_be_busy() {
    let fx = Fixture::new();
    let rootfs = image(7, 32 << 20);
    let bundle = fx.bundle(COMPATIBLE, "7.0.0", &rootfs);
    let bed = spark_testbed::Testbed::start(TestbedOptions {
        slot_size: 40 << 20,
        ..fx.options()
    })
    .unwrap();
    let rauc = client(&bed).await;

    let err = rauc
        .install(
            &bundle,
            &InstallArgs::default(),
            Duration::from_millis(1),
            |_| {},
        )
        .await
        .unwrap_err();
    assert!(matches!(err, RaucError::Timeout { .. }), "{err:?}");
    assert!(err.to_string().contains("may still be busy"), "{err}");
    // Whether or not the call got through before the deadline, RAUC ends up idle and consistent.
    within(async {
        loop {
            match rauc.slot_status().await {
                Ok(_) => break,
                Err(RaucError::Busy { .. }) => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(err) => panic!("{err:?}"),
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rauc_leaving_mid_install_is_reported() {
    let fx = Fixture::new();
    let rootfs = image(8, 64 << 20);
    let bundle = fx.bundle(COMPATIBLE, "8.0.0", &rootfs);
    let mut bed = spark_testbed::Testbed::start(TestbedOptions {
        slot_size: 80 << 20,
        ..fx.options()
    })
    .unwrap();
    let rauc = client(&bed).await;

    let install = within(rauc.start_install(&bundle, &InstallArgs::default()))
        .await
        .unwrap();
    // A power cut: the service dies abruptly and comes back after the "reboot".
    tokio::task::block_in_place(|| bed.reboot()).unwrap();
    let err = install.wait(WAIT, |_| {}).await.unwrap_err();
    assert!(matches!(err, RaucError::ServiceLost { .. }), "{err:?}");
    assert!(err.is_transient());
    // The new service answers the same client.
    assert_eq!(within(rauc.operation()).await.unwrap(), Operation::Idle);
}

#[tokio::test(flavor = "multi_thread")]
async fn bundle_open_for_writing_is_refused_until_closed() {
    let fx = Fixture::new();
    let rootfs = image(9, 64 << 10);
    let bundle = fx.bundle(COMPATIBLE, "9.0.0", &rootfs);
    let bed = fx.testbed();
    let rauc = client(&bed).await;

    // Like a downloader that has not closed its file yet.
    let writer = std::fs::OpenOptions::new()
        .append(true)
        .open(&bundle)
        .unwrap();
    let err = rauc
        .install(&bundle, &InstallArgs::default(), WAIT, |_| {})
        .await
        .unwrap_err();
    let RaucError::InstallFailed { last_error, .. } = &err else {
        panic!("unexpected error: {err:?}");
    };
    assert!(last_error.contains("exclusive bundle access"), "{err}");
    assert!(err.to_string().contains("close every handle"), "{err}");
    drop(writer);

    // A reader does not get in RAUC's way.
    let _reader = std::fs::File::open(&bundle).unwrap();
    rauc.install(&bundle, &InstallArgs::default(), WAIT, |_| {})
        .await
        .unwrap();
    assert!(slot_holds(&bed, Slot::B, &rootfs));
}

#[tokio::test(flavor = "multi_thread")]
async fn two_clients_installing_at_once_one_is_busy() {
    let fx = Fixture::new();
    let rootfs = image(10, 8 << 20);
    let bundle = fx.bundle(COMPATIBLE, "10.0.0", &rootfs);
    let bed = fx.testbed();
    let (first, second) = (client(&bed).await, client(&bed).await);

    let args = InstallArgs::default();
    let (a, b) = tokio::join!(
        first.install(&bundle, &args, WAIT, |_| {}),
        second.install(&bundle, &args, WAIT, |_| {}),
    );
    let outcomes = [a, b];
    assert_eq!(
        outcomes.iter().filter(|r| r.is_ok()).count(),
        1,
        "{outcomes:?}"
    );
    assert!(
        outcomes.iter().any(|r| matches!(
            r,
            Err(RaucError::Busy {
                method: "InstallBundle"
            })
        )),
        "{outcomes:?}"
    );
    assert!(slot_holds(&bed, Slot::B, &rootfs));
}

#[tokio::test(flavor = "multi_thread")]
async fn raw_proxy_install_and_completed_signal() {
    let fx = Fixture::new();
    let rootfs = image(11, 64 << 10);
    let bundle = fx.bundle(COMPATIBLE, "11.0.0", &rootfs);
    let bed = fx.testbed();
    let rauc = client(&bed).await;
    let proxy = rauc.proxy();

    let mut completed = within(proxy.receive_completed()).await.unwrap();
    // The deprecated `Install(s)`; RAUC needs an absolute path.
    within(proxy.install(bundle.to_str().unwrap()))
        .await
        .unwrap();
    let signal = within(completed.next()).await.expect("Completed");
    assert_eq!(signal.args().unwrap().result, 0);
    assert!(slot_holds(&bed, Slot::B, &rootfs));
    let (slot, message) = within(proxy.mark("good", "booted")).await.unwrap();
    assert_eq!(
        (slot.as_str(), message.as_str()),
        ("rootfs.0", "marked slot rootfs.0 as good")
    );
}
