//! The agent end to end: the real `rauc service` on a testbed with file-backed A/B slots and a
//! simulated U-Boot, the stand-in OTA server over mutual TLS, real status reports. A "reboot"
//! is the testbed's: RAUC is killed, the simulated boot script picks a slot, RAUC starts again,
//! and a new agent (as after a real boot) resumes from the state it persisted on "/data".

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::{COMPATIBLE, OtaServer, Pki, noise, within};
use rauc_client::{RaucClient, RaucError};
use spark_dbus::report::Reason;
use spark_dbus::{Update1Proxy, UpdateState};
use spark_image::{BuildInput, BuildOptions, BundleFormat, Compression, Signer};
use spark_release::Version;
use spark_testbed::{Slot, Testbed, TestbedOptions};
use spark_updated::download::DownloadOptions;
use spark_updated::system::{HealthCheck, HttpsReporter, Rauc, Reboot, RebootError};
use spark_updated::{Agent, Outcome, Settings};

/// Counts reboot requests; the test then reboots the testbed itself.
#[derive(Clone, Default)]
struct TestReboot(Arc<AtomicU32>);

impl Reboot for TestReboot {
    async fn reboot(&self) -> Result<(), RebootError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

struct TestHealth(Result<(), String>);

impl HealthCheck for TestHealth {
    async fn check(&self) -> Result<(), String> {
        self.0.clone()
    }
}

/// Where a simulated power cut hits the agent's side of a RAUC call: the call reaches the real
/// service and completes there, but the agent never hears back (the test then drops it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CutAt {
    Never,
    /// Right after `Mark(bad)` of the booted slot.
    AfterMarkBad,
}

/// The real RAUC client with an optional cut.
struct CutRauc {
    inner: RaucClient,
    cut: CutAt,
    cut_done: Arc<tokio::sync::Notify>,
}

impl Rauc for CutRauc {
    async fn booted_slot(&self) -> Result<String, RaucError> {
        self.inner.booted_slot().await
    }
    async fn booted_version(&self) -> Result<Option<String>, RaucError> {
        Rauc::booted_version(&self.inner).await
    }
    async fn compatible(&self) -> Result<String, RaucError> {
        Rauc::compatible(&self.inner).await
    }
    async fn install(
        &self,
        bundle: &std::path::Path,
        progress: &mut dyn FnMut(u32),
    ) -> Result<(), RaucError> {
        Rauc::install(&self.inner, bundle, progress).await
    }
    async fn mark_booted(&self, good: bool) -> Result<(), RaucError> {
        Rauc::mark_booted(&self.inner, good).await?;
        if !good && self.cut == CutAt::AfterMarkBad {
            self.cut_done.notify_one();
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}

type TestAgent = Agent<CutRauc, TestReboot, TestHealth, HttpsReporter>;

struct Fixture {
    pki: Pki,
    server: OtaServer,
    bed: Testbed,
    data: PathBuf,
    reboots: TestReboot,
    download: DownloadOptions,
    cut_done: Arc<tokio::sync::Notify>,
}

impl Fixture {
    async fn new() -> Self {
        Self::with_conf(|_| String::new()).await
    }

    /// A fixture whose RAUC holds inside its `handler` (`pre-install`: before it writes the
    /// slot; `post-install`: after it wrote the slot and switched the boot order, before
    /// `Completed`) until [`Fixture::release_handler`]: a deterministic point to kill it at.
    async fn holding(handler: &'static str) -> Self {
        Self::with_conf(move |dir| {
            let script = dir.join(format!("{handler}.sh"));
            let entered = dir.join(format!("{handler}-entered"));
            let release = dir.join("release");
            std::fs::write(
                &script,
                format!(
                    "#!/bin/sh\ntouch '{}'\ni=0\nwhile [ ! -e '{}' ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done\n",
                    entered.display(),
                    release.display()
                ),
            )
            .unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
            format!("[handlers]\n{handler}={}\n", script.display())
        })
        .await
    }

    async fn with_conf(conf: impl FnOnce(&std::path::Path) -> String) -> Self {
        let pki = Pki::new();
        let server = OtaServer::start(&pki).await;
        let mut opts = TestbedOptions::new(COMPATIBLE, pki.pki.keyring());
        opts.extra_system_conf = conf(pki.dir.path());
        let bed = Testbed::start(opts).expect("testbed");
        let data = pki.dir.path().join("data");
        Self {
            pki,
            server,
            bed,
            data,
            reboots: TestReboot::default(),
            cut_done: Arc::default(),
            download: DownloadOptions {
                backoff: Duration::from_millis(5),
                max_backoff: Duration::from_millis(20),
                max_attempts: 5,
                reserve: 0,
                ..DownloadOptions::default()
            },
        }
    }

    /// A plain bundle with `image` as rootfs, signed by the PKI the testbed trusts.
    fn bundle(&self, compatible: &str, version: &str, image: &[u8]) -> Vec<u8> {
        let dir = self.pki.dir.path();
        let image_path = dir.join(format!("{compatible}-{version}.img"));
        std::fs::write(&image_path, image).unwrap();
        let out = dir.join(format!("{compatible}-{version}.raucb"));
        let _ = std::fs::remove_file(&out);
        let signer =
            Signer::load(&self.pki.pki.signer_cert(), &self.pki.pki.signer_key(), &[]).unwrap();
        spark_image::build(
            &BuildInput::Rootfs {
                image: image_path,
                slot_class: "rootfs".into(),
                compatible: compatible.into(),
                version: version.into(),
                description: None,
                build: None,
                format: BundleFormat::Plain,
            },
            &out,
            &BuildOptions {
                signer: &signer,
                compression: Compression::Gzip { level: 1 },
                mtime: Some(1_700_000_000),
                progress: indicatif::ProgressBar::hidden(),
            },
        )
        .expect("build bundle");
        std::fs::read(out).unwrap()
    }

    /// Builds, signs and publishes release `version` whose rootfs is `image`.
    fn publish(&self, version: &str, image: &[u8]) -> spark_release::SignedRelease {
        let (release, bundle) = self.release(version, image);
        self.server.publish(&release, bundle);
        release
    }

    /// Builds and signs release `version`; only its bundle goes on the server (by hash).
    fn release(&self, version: &str, image: &[u8]) -> (spark_release::SignedRelease, Vec<u8>) {
        let bundle = self.bundle(COMPATIBLE, version, image);
        let release = self
            .pki
            .sign(|m| m.version = Version::parse(version).unwrap(), &bundle);
        self.server
            .put(&OtaServer::bundle_path(&bundle), bundle.clone());
        (release, bundle)
    }

    /// Waits until RAUC sits in the holding handler.
    async fn handler_entered(&self, handler: &str) {
        let marker = self.pki.dir.path().join(format!("{handler}-entered"));
        within(async {
            while !marker.exists() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        std::fs::remove_file(marker).unwrap();
    }

    /// Lets held (and future) handler runs through.
    fn release_handler(&self) {
        std::fs::write(self.pki.dir.path().join("release"), b"").unwrap();
    }

    /// A fresh agent, as started by systemd after a boot.
    async fn agent(&self, health: Result<(), String>) -> TestAgent {
        self.agent_with(health, CutAt::Never, &self.server.base())
            .await
    }

    /// A fresh agent with a cut and the OTA server (for reports) at `reports`.
    async fn agent_with(&self, health: Result<(), String>, cut: CutAt, reports: &str) -> TestAgent {
        let conn = within(async {
            zbus::connection::Builder::address(self.bed.bus_address())
                .unwrap()
                .build()
                .await
                .unwrap()
        })
        .await;
        let rauc = CutRauc {
            inner: within(RaucClient::from_connection(conn)).await.unwrap(),
            cut,
            cut_done: self.cut_done.clone(),
        };
        Agent::open(
            Settings {
                device: common::DEVICE.into(),
                data_dir: self.data.clone(),
                server: self.server.base(),
                factory_version: "1.0.0".into(),
                download: self.download.clone(),
            },
            self.pki.client(),
            self.pki.trusted_keys(),
            rauc,
            self.reboots.clone(),
            TestHealth(health),
            HttpsReporter {
                client: self.pki.client(),
                server: reports.to_owned(),
            },
        )
        .unwrap()
    }

    fn reboot(&mut self) -> Slot {
        tokio::task::block_in_place(|| self.bed.reboot()).expect("testbed reboot")
    }

    fn slot_holds(&self, slot: Slot, image: &[u8]) -> bool {
        std::fs::read(self.bed.slot_path(slot))
            .unwrap()
            .starts_with(image)
    }

    /// Boots into the new slot, resumes a fresh agent and expects a commit of `version`.
    async fn reboot_and_commit(&mut self, expect: Slot, version: &str) {
        assert_eq!(self.reboot(), expect);
        let mut agent = self.agent(Ok(())).await;
        assert_eq!(
            within(agent.resume()).await.unwrap(),
            Outcome::Committed {
                version: version.into()
            }
        );
        let status = tokio::task::block_in_place(|| self.bed.status()).unwrap();
        let booted = status.slot(expect).unwrap();
        assert_eq!(booted.boot_status.as_deref(), Some("good"), "{status:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn happy_path_a_to_b_then_b_to_a() {
    let mut fx = Fixture::new().await;
    let v2 = noise(20, 1 << 20);
    fx.publish("2.0.0", &v2);
    let mut agent = fx.agent(Ok(())).await;
    assert_eq!(within(agent.resume()).await.unwrap(), Outcome::Idle);
    assert_eq!(
        within(agent.check_now()).await.unwrap(),
        Outcome::RebootRequested
    );
    assert_eq!(fx.reboots.0.load(Ordering::SeqCst), 1);
    assert!(fx.slot_holds(Slot::B, &v2));
    drop(agent);
    fx.reboot_and_commit(Slot::B, "2.0.0").await;

    // Nothing newer: up to date, nothing fetched.
    let mut agent = fx.agent(Ok(())).await;
    within(agent.resume()).await.unwrap();
    assert_eq!(within(agent.check_now()).await.unwrap(), Outcome::UpToDate);
    assert_eq!(within(agent.current_version()).await.unwrap(), "2.0.0");

    let v3 = noise(30, 1 << 20);
    fx.publish("3.0.0", &v3);
    assert_eq!(
        within(agent.check_now()).await.unwrap(),
        Outcome::RebootRequested
    );
    assert!(fx.slot_holds(Slot::A, &v3));
    drop(agent);
    fx.reboot_and_commit(Slot::A, "3.0.0").await;
    let reasons = fx.server.reasons();
    assert_eq!(
        reasons.iter().filter(|r| *r == "committed").count(),
        2,
        "{reasons:?}"
    );
    // The data directory holds only the state file: bundles are removed after install.
    let left: Vec<_> = std::fs::read_dir(&fx.data)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["state.json"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_health_check_marks_bad_and_goes_back_to_a() {
    let mut fx = Fixture::new().await;
    let v2 = noise(21, 512 << 10);
    fx.publish("2.0.0", &v2);
    let mut agent = fx.agent(Ok(())).await;
    assert_eq!(
        within(agent.check_now()).await.unwrap(),
        Outcome::RebootRequested
    );
    drop(agent);
    assert_eq!(fx.reboot(), Slot::B);
    let mut agent = fx
        .agent(Err("spark-uplinkd.service is not active".into()))
        .await;
    assert_eq!(
        within(agent.resume()).await.unwrap(),
        Outcome::RebootRequested
    );
    drop(agent);
    assert_eq!(fx.reboot(), Slot::A);
    let mut agent = fx.agent(Ok(())).await;
    assert_eq!(within(agent.resume()).await.unwrap(), Outcome::Idle);
    assert!(
        agent
            .persisted()
            .last_error
            .as_deref()
            .unwrap()
            .starts_with("health-failed")
    );
    assert_eq!(within(agent.current_version()).await.unwrap(), "1.0.0");
    // The refused release is not fetched again.
    assert_eq!(within(agent.check_now()).await.unwrap(), Outcome::UpToDate);
    assert!(fx.server.reasons().contains(&"health-failed".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boot_attempts_running_out_ends_back_on_a() {
    let mut fx = Fixture::new().await;
    fx.publish("2.0.0", &noise(22, 256 << 10));
    let mut agent = fx.agent(Ok(())).await;
    assert_eq!(
        within(agent.check_now()).await.unwrap(),
        Outcome::RebootRequested
    );
    drop(agent);
    // The new slot never gets as far as the agent: every boot of B is a failed attempt.
    let mut boots = Vec::new();
    for _ in 0..6 {
        let slot = fx.reboot();
        boots.push(slot);
        if slot == Slot::A {
            break;
        }
    }
    assert_eq!(boots.last(), Some(&Slot::A), "{boots:?}");
    let mut agent = fx.agent(Ok(())).await;
    match within(agent.resume()).await.unwrap() {
        Outcome::Failed { reason, .. } => assert_eq!(reason, Reason::RolledBack),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_releases_are_rejected_and_nothing_is_installed() {
    let fx = Fixture::new().await;
    let image = noise(23, 256 << 10);
    let bundle = fx.bundle(COMPATIBLE, "2.0.0", &image);
    let other_pki = Pki::new();
    let now = spark_release::Timestamp::now().unix();
    let at = |secs| spark_release::Timestamp::from_unix(secs).unwrap();
    let mut tampered = bundle.clone();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 1;
    let truncated = bundle[..bundle.len() / 2].to_vec();
    let same = Some(bundle.clone());
    let cases = vec![
        (
            "wrong compatible",
            fx.pki
                .sign(|m| m.compatible = "other-board".into(), &bundle),
            same.clone(),
            Reason::ReleaseRejected,
            "wrong-compatible",
        ),
        (
            "expired",
            fx.pki.sign(
                |m| {
                    m.issued_at = at(now - 7200);
                    m.expires_at = at(now - 3600);
                },
                &bundle,
            ),
            same.clone(),
            Reason::ReleaseRejected,
            "expired",
        ),
        (
            "older version",
            fx.pki.sign(|m| m.version = Version::new(0, 9, 0), &bundle),
            same.clone(),
            Reason::ReleaseRejected,
            "not-newer",
        ),
        (
            "unknown key",
            other_pki.sign(|_| {}, &bundle),
            same.clone(),
            Reason::ReleaseRejected,
            "unknown-key",
        ),
        (
            "tampered bundle",
            fx.pki.sign(|_| {}, &bundle),
            Some(tampered),
            Reason::DigestMismatch,
            "SHA-256",
        ),
        (
            "truncated bundle",
            fx.pki.sign(|_| {}, &bundle),
            Some(truncated),
            Reason::DigestMismatch,
            "truncated",
        ),
    ];
    for (name, release, served, reason, text) in cases {
        // A fresh data directory per case so an earlier refusal does not hide this one.
        let _ = std::fs::remove_dir_all(&fx.data);
        fx.server
            .put(&OtaServer::bundle_path(&bundle), served.unwrap_or_default());
        let mut agent = fx.agent(Ok(())).await;
        // Pushed by uplinkd, in the wire form.
        let outcome = within(agent.offer(&release.to_bytes())).await.unwrap();
        match outcome {
            Outcome::Failed { reason: r, message } => {
                assert_eq!(r, reason, "{name}: {message}");
                assert!(message.contains(text), "{name}: {message}");
            }
            other => panic!("{name}: {other:?}"),
        }
        assert_eq!(
            agent.subscribe().borrow().state,
            UpdateState::Failed,
            "{name}"
        );
        assert!(!agent.subscribe().borrow().last_error.is_empty(), "{name}");
    }
    assert!(!fx.slot_holds(Slot::B, &image[..4096]));
    assert_eq!(
        fx.bed.bootloader().boot_order().unwrap(),
        [Slot::A, Slot::B]
    );
    assert_eq!(fx.reboots.0.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cuts_always_leave_a_good_slot() {
    let mut fx = Fixture::new().await;
    let v2 = noise(24, 2 << 20);
    fx.publish("2.0.0", &v2);
    let bundle_len = {
        let files = fx.server.state.files.lock().unwrap();
        files.values().map(Vec::len).max().unwrap() as u64
    };

    // 1. Power cut during the download (the agent is killed; the rate cap keeps it mid-way).
    fx.download.rate_limit = Some(4 << 20);
    let mut agent = fx.agent(Ok(())).await;
    let cut = tokio::time::timeout(Duration::from_millis(250), agent.check_now()).await;
    assert!(cut.is_err(), "download finished before the cut");
    drop(agent);
    let before = fx.server.served();
    // What the agent kept on disk is the resume point; bytes the server had pushed into socket
    // buffers beyond it are lost with the power, as on a real link.
    let part = std::fs::read_dir(&fx.data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "part"))
        .expect("a partial download");
    let kept = std::fs::metadata(&part).unwrap().len();
    assert!(kept > 0 && kept < bundle_len, "kept {kept} of {bundle_len}");
    assert_eq!(fx.reboot(), Slot::A);
    fx.download.rate_limit = None;

    // 2. Resumed after "boot"; power cut while RAUC installs (RAUC itself is killed too).
    {
        let mut agent = fx.agent(Ok(())).await;
        let mut status = agent.subscribe();
        let resumed = agent.resume();
        tokio::pin!(resumed);
        tokio::select! {
            _ = status.wait_for(|s| s.state == UpdateState::Installing && s.progress > 0) => {}
            r = &mut resumed => panic!("finished before installing: {r:?}"),
        }
        // Leaving the block drops the agent mid-install: the process is gone.
    }
    // The resumed download asked only for the bytes not on disk.
    assert_eq!(fx.server.served() - before, bundle_len - kept);
    // RAUC is killed with the power. It switches slots only after a complete write, so the
    // device boots A (cut mid-write) or B (the write had just finished): a good slot either way.
    let slot = fx.reboot();
    if slot == Slot::A {
        // 3. Resumed again: the install is redone; then a power cut after the install, before
        //    the agent's reboot (the reboot double does not reboot).
        let mut agent = fx.agent(Ok(())).await;
        assert_eq!(
            within(agent.resume()).await.unwrap(),
            Outcome::RebootRequested
        );
        drop(agent);
        assert_eq!(fx.reboot(), Slot::B);
    }

    // 4. B runs; power cut before the agent marks it good; boots B again and commits.
    fx.reboot_and_commit(Slot::B, "2.0.0").await;
    assert!(fx.slot_holds(Slot::B, &v2));
    assert!(fx.server.reasons().contains(&"resumed".to_string()));
}

async fn bus(bed: &Testbed) -> zbus::Connection {
    within(async {
        zbus::connection::Builder::address(bed.bus_address())
            .unwrap()
            .build()
            .await
            .unwrap()
    })
    .await
}

/// A proxy without a property cache: the agent may not own its name yet when the proxy is
/// made, and a cache would then wait for a population that never comes.
async fn proxy(conn: &zbus::Connection) -> Update1Proxy<'static> {
    Update1Proxy::builder(conn)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .unwrap()
}

/// Polls a D-Bus property until it has the wanted value.
async fn wait_state(proxy: &Update1Proxy<'_>, want: &str) {
    within(async {
        let mut seen = String::new();
        loop {
            let state = proxy.state().await.unwrap_or_default();
            if state == want {
                return;
            }
            if state != seen {
                eprintln!("state {state}, waiting for {want}");
                seen = state;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dbus_check_now_drives_an_update() {
    let fx = Fixture::new().await;
    fx.publish("2.0.0", &noise(25, 256 << 10));
    let agent = fx.agent(Ok(())).await;
    let service_conn = bus(&fx.bed).await;
    let client_conn = bus(&fx.bed).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = spark_updated::daemon::run_agent(
        agent,
        &service_conn,
        Duration::from_secs(3600),
        async {
            let _ = stopped.await;
        },
        || {},
    );
    let test = async {
        let proxy = proxy(&client_conn).await;
        wait_state(&proxy, "idle").await;
        assert_eq!(proxy.current_version().await.unwrap(), "1.0.0");
        proxy.check_now().await.unwrap();
        wait_state(&proxy, "rebooting").await;
        assert_eq!(proxy.pending_version().await.unwrap(), "2.0.0");
        assert_eq!(proxy.last_error().await.unwrap(), "");
        wait_reboots(&fx, 1).await;
        stop.send(()).unwrap();
    };
    let (result, ()) = tokio::join!(run, within(test));
    result.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dbus_update_available_refusal_shows_in_last_error() {
    let fx = Fixture::new().await;
    let bundle = fx.bundle(COMPATIBLE, "2.0.0", &noise(26, 64 << 10));
    let expired = fx.pki.sign(
        |m| {
            let now = spark_release::Timestamp::now().unix();
            m.issued_at = spark_release::Timestamp::from_unix(now - 7200).unwrap();
            m.expires_at = spark_release::Timestamp::from_unix(now - 3600).unwrap();
        },
        &bundle,
    );
    let agent = fx.agent(Ok(())).await;
    let service_conn = bus(&fx.bed).await;
    let client_conn = bus(&fx.bed).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = spark_updated::daemon::run_agent(
        agent,
        &service_conn,
        Duration::from_secs(3600),
        async {
            let _ = stopped.await;
        },
        || {},
    );
    let test = async {
        let proxy = proxy(&client_conn).await;
        wait_state(&proxy, "idle").await;
        // The answer is the verification result: an error naming the reason and the check.
        let err = proxy
            .update_available(&expired.to_bytes())
            .await
            .unwrap_err();
        match &err {
            zbus::Error::MethodError(name, Some(message), _) => {
                assert_eq!(name.as_str(), "io.spark.Update1.Error.ReleaseRejected");
                assert!(
                    message.starts_with("release-rejected: expired: "),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
        wait_state(&proxy, "failed").await;
        let error = proxy.last_error().await.unwrap();
        assert!(error.starts_with("release-rejected: expired"), "{error}");
        // Reports go out after the state is published; stopping the agent before then would
        // be a power cut that keeps the report for the next start, so wait for it first.
        while !fx
            .server
            .reasons()
            .contains(&"release-rejected".to_string())
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.send(()).unwrap();
    };
    let (result, ()) = tokio::join!(run, within(test));
    result.unwrap();
}

/// Resident memory of a process in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Figure: RSS of the real binary, idle and while downloading. The release it is offered is
/// deliberately served tampered, so the run ends in a digest mismatch and never reaches RAUC or
/// `systemctl reboot` on the test machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_rss_idle_and_downloading() {
    let fx = Fixture::new().await;
    let bundle = noise(27, 2 << 20);
    let release = fx.pki.sign(|_| {}, &bundle);
    let mut tampered = bundle.clone();
    tampered[0] ^= 1;
    fx.server.publish(&release, bundle.clone());
    fx.server.put(&OtaServer::bundle_path(&bundle), tampered);

    let config = fx.pki.dir.path().join("updated.toml");
    let p = &fx.pki.pki;
    std::fs::write(
        &config,
        format!(
            r#"
device = "{device}"
data-dir = "{data}"
server = "{server}"
server-ca = "{ca}"
device-cert = "{cert}"
device-key = "{key}"
release-keys = ["{release}"]
factory-version = "1.0.0"
poll-interval-secs = 3600
rate-limit = 262144
reserve-bytes = 0
"#,
            device = common::DEVICE,
            data = fx.data.display(),
            server = fx.server.base(),
            ca = p.server_ca_cert().display(),
            cert = fx.pki.device_cert.display(),
            key = fx.pki.device_key.display(),
            release = p.release_pub().display(),
        ),
    )
    .unwrap();
    // SPARK_UPDATED_BIN=target/release/spark-updated measures the release build instead.
    let bin = std::env::var_os("SPARK_UPDATED_BIN")
        .map_or_else(|| env!("CARGO_BIN_EXE_spark-updated").into(), PathBuf::from);
    let mut child = tokio::process::Command::new(&bin)
        .arg("--config")
        .arg(&config)
        .env("DBUS_SYSTEM_BUS_ADDRESS", fx.bed.bus_address())
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let conn = bus(&fx.bed).await;
    let proxy = proxy(&conn).await;
    wait_state(&proxy, "idle").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let idle = rss_kib(pid);
    proxy.check_now().await.unwrap();
    wait_state(&proxy, "downloading").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let downloading = rss_kib(pid);
    eprintln!(
        "{}: RSS idle {idle} KiB, downloading {downloading} KiB",
        bin.display()
    );
    // SIGTERM: the unit's stop; the agent resumes the download on its next start.
    std::process::Command::new("kill")
        .arg(pid.to_string())
        .status()
        .unwrap();
    let status = within(child.wait()).await.unwrap();
    assert!(status.success(), "{status}");
    // Loose bounds for a test build; the release build's figures are in the README.
    assert!(
        idle < 32 << 10 && downloading < 48 << 10,
        "{idle} {downloading}"
    );
}

/// Runs `future` until `marker` says the cut point is reached; the future (the agent's step)
/// is then dropped by the caller like a process at power-off.
async fn until<T: std::fmt::Debug>(
    future: impl std::future::Future<Output = T>,
    point: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(future);
    within(async {
        tokio::select! {
            r = &mut future => panic!("finished before the cut point: {r:?}"),
            () = point => {}
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cut_while_rauc_writes_boots_the_old_slot_and_reinstalls() {
    let mut fx = Fixture::holding("pre-install").await;
    let v2 = noise(40, 512 << 10);
    fx.publish("2.0.0", &v2);
    {
        let mut agent = fx.agent(Ok(())).await;
        // RAUC accepted the bundle and is inside its install, before any slot write.
        until(agent.check_now(), fx.handler_entered("pre-install")).await;
        assert_eq!(agent.subscribe().borrow().state, UpdateState::Installing);
    }
    // Power cut: agent and RAUC die together. Nothing was switched, so A boots.
    assert_eq!(
        fx.bed.bootloader().boot_order().unwrap(),
        [Slot::A, Slot::B]
    );
    assert_eq!(fx.reboot(), Slot::A);
    assert!(!fx.slot_holds(Slot::B, &v2[..4096]));
    fx.release_handler();
    // The agent resumes `installing`: verifies the kept file again and reinstalls.
    let served = fx.server.served();
    let mut agent = fx.agent(Ok(())).await;
    assert_eq!(
        within(agent.resume()).await.unwrap(),
        Outcome::RebootRequested
    );
    assert_eq!(fx.server.served(), served, "the bundle was fetched again");
    assert!(fx.slot_holds(Slot::B, &v2));
    drop(agent);
    fx.reboot_and_commit(Slot::B, "2.0.0").await;
    assert!(fx.server.reasons().contains(&"resumed".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cut_after_rauc_switched_boots_the_new_slot_and_commits() {
    let mut fx = Fixture::holding("post-install").await;
    let v2 = noise(41, 512 << 10);
    fx.publish("2.0.0", &v2);
    {
        let mut agent = fx.agent(Ok(())).await;
        // RAUC wrote B and made it primary, but has not sent `Completed` yet.
        until(agent.check_now(), fx.handler_entered("post-install")).await;
        assert_eq!(agent.persisted().phase.state(), UpdateState::Installing);
    }
    assert_eq!(
        fx.bed.bootloader().boot_order().unwrap(),
        [Slot::B, Slot::A]
    );
    fx.release_handler();
    // Power cut: B boots; the agent finds its release running and commits without reinstalling.
    fx.reboot_and_commit(Slot::B, "2.0.0").await;
    assert!(fx.slot_holds(Slot::B, &v2));
    let reasons = fx.server.reasons();
    assert!(!reasons.contains(&"installed".to_string()), "{reasons:?}");
    assert!(reasons.contains(&"committed".to_string()), "{reasons:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_between_mark_bad_and_the_reboot_still_rolls_back() {
    let mut fx = Fixture::new().await;
    fx.publish("2.0.0", &noise(42, 256 << 10));
    let mut agent = fx.agent(Ok(())).await;
    assert_eq!(
        within(agent.check_now()).await.unwrap(),
        Outcome::RebootRequested
    );
    drop(agent);
    assert_eq!(fx.reboot(), Slot::B);
    {
        let mut agent = fx
            .agent_with(
                Err("selftest failed".into()),
                CutAt::AfterMarkBad,
                &fx.server.base(),
            )
            .await;
        let cut = fx.cut_done.clone();
        until(agent.resume(), async move { cut.notified().await }).await;
    }
    let status = tokio::task::block_in_place(|| fx.bed.status()).unwrap();
    assert_eq!(
        status.slot(Slot::B).unwrap().boot_status.as_deref(),
        Some("bad")
    );
    // The agent restarts on B before any reboot (a crash, not a power cut), and B would even
    // pass its check now: it must not commit the slot it gave up on, but finish the rollback.
    let mut agent = fx.agent(Ok(())).await;
    assert_eq!(
        within(agent.resume()).await.unwrap(),
        Outcome::RebootRequested
    );
    assert_eq!(fx.reboots.0.load(Ordering::SeqCst), 2);
    drop(agent);
    assert_eq!(fx.reboot(), Slot::A);
    let mut agent = fx.agent(Ok(())).await;
    assert_eq!(within(agent.resume()).await.unwrap(), Outcome::Idle);
    assert_eq!(agent.subscribe().borrow().state, UpdateState::Idle);
    assert!(
        agent
            .persisted()
            .last_error
            .as_deref()
            .unwrap()
            .starts_with("health-failed: selftest failed")
    );
    assert_eq!(within(agent.current_version()).await.unwrap(), "1.0.0");
    let reasons = fx.server.reasons();
    assert!(!reasons.contains(&"committed".to_string()), "{reasons:?}");
    assert_eq!(reasons.last().map(String::as_str), Some("rolled-back"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_wait_on_data_while_the_server_is_unreachable() {
    let mut fx = Fixture::new().await;
    fx.publish("2.0.0", &noise(43, 256 << 10));
    // The status endpoint is unreachable (nothing listens there); bundles still come.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("https://localhost:{}", l.local_addr().unwrap().port())
    };
    let mut agent = fx.agent_with(Ok(()), CutAt::Never, &dead).await;
    assert_eq!(
        within(agent.check_now()).await.unwrap(),
        Outcome::RebootRequested
    );
    let queued = agent.persisted().unsent.len();
    assert!(queued >= 4, "{queued}");
    assert!(fx.server.reasons().is_empty());
    drop(agent);
    // The queue survives the reboot; once the server answers, it goes out in order.
    assert_eq!(fx.reboot(), Slot::B);
    let mut agent = fx.agent(Ok(())).await;
    assert_eq!(
        within(agent.resume()).await.unwrap(),
        Outcome::Committed {
            version: "2.0.0".into()
        }
    );
    assert!(agent.persisted().unsent.is_empty());
    let reports = fx.server.state.reports.lock().unwrap().clone();
    let seqs: Vec<u64> = reports.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    let reasons: Vec<String> = reports.iter().map(|r| r.reason.to_string()).collect();
    assert_eq!(
        reasons,
        [
            "offered",
            "downloaded",
            "verified",
            "installed",
            "booted",
            "healthy",
            "committed"
        ]
    );
}

/// Runs the daemon loop on the testbed's bus around `test`, then stops it.
async fn serve_while<F: std::future::Future<Output = ()>>(
    fx: &Fixture,
    agent: TestAgent,
    test: impl FnOnce(Update1Proxy<'static>) -> F,
) {
    let service_conn = bus(&fx.bed).await;
    let client_conn = bus(&fx.bed).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = spark_updated::daemon::run_agent(
        agent,
        &service_conn,
        Duration::from_secs(3600),
        async {
            let _ = stopped.await;
        },
        || {},
    );
    let proxy = proxy(&client_conn).await;
    let test = async {
        // The service is up once its properties answer.
        while proxy.state().await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        test(proxy).await;
        stop.send(()).unwrap();
    };
    let (result, ()) = tokio::join!(run, within(test));
    result.unwrap();
}

/// Waits until the reboot seam was asked `n` times (the state shows "rebooting" a little
/// before the agent asks, while it sends the `installed` report).
async fn wait_reboots(fx: &Fixture, n: u32) {
    within(async {
        while fx.reboots.0.load(Ordering::SeqCst) < n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// The D-Bus error name of a failed call.
fn error_name(err: &zbus::Error) -> String {
    match err {
        zbus::Error::MethodError(name, _, _) => name.to_string(),
        other => panic!("not a method error: {other:?}"),
    }
}

/// The version of the offer queued on "/data", if any.
fn queued_version(fx: &Fixture) -> Option<String> {
    let json = spark_updated::store::Store::new(&fx.data)
        .queued_offer()
        .unwrap()?;
    let release = spark_release::SignedRelease::from_json(&json).unwrap();
    Some(release.manifest().version.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dbus_offers_while_busy_queue_the_newest_which_follows_the_update() {
    let mut fx = Fixture::new().await;
    // 1 MiB at 256 KiB/s: the agent is busy downloading for about four seconds.
    fx.download.rate_limit = Some(256 << 10);
    let v2 = fx.publish("2.0.0", &noise(50, 1 << 20));
    let (v25, _) = fx.release("2.5.0", &noise(51, 128 << 10));
    let v3_image = noise(52, 128 << 10);
    let (v3, v3_bundle) = fx.release("3.0.0", &v3_image);
    let expired = fx.pki.sign(
        |m| {
            let now = spark_release::Timestamp::now().unix();
            m.version = Version::new(4, 0, 0);
            m.issued_at = spark_release::Timestamp::from_unix(now - 7200).unwrap();
            m.expires_at = spark_release::Timestamp::from_unix(now - 3600).unwrap();
        },
        &v3_bundle,
    );
    let agent = fx.agent(Ok(())).await;
    let f = &fx;
    serve_while(f, agent, |proxy| async move {
        proxy.check_now().await.unwrap();
        wait_state(&proxy, "downloading").await;
        // Refused at once, while the download goes on untouched.
        let err = proxy
            .update_available(&expired.to_bytes())
            .await
            .unwrap_err();
        assert_eq!(error_name(&err), "io.spark.Update1.Error.ReleaseRejected");
        assert!(err.to_string().contains("expired"), "{err}");
        assert_eq!(proxy.state().await.unwrap(), "downloading");
        assert_eq!(proxy.last_error().await.unwrap(), "");
        // Accepted and queued; the newer offer replaces the older one.
        proxy.update_available(&v25.to_bytes()).await.unwrap();
        assert_eq!(queued_version(f).as_deref(), Some("2.5.0"));
        proxy.update_available(&v3.to_bytes()).await.unwrap();
        assert_eq!(queued_version(f).as_deref(), Some("3.0.0"));
        // The release in progress, offered again: accepted, nothing queued.
        proxy.update_available(&v2.to_bytes()).await.unwrap();
        assert_eq!(queued_version(f).as_deref(), Some("3.0.0"));
        wait_reboots(f, 1).await;
        assert_eq!(proxy.pending_version().await.unwrap(), "2.0.0");
    })
    .await;
    assert_eq!(fx.reboots.0.load(Ordering::SeqCst), 1);
    assert_eq!(queued_version(&fx).as_deref(), Some("3.0.0"));

    // After the reboot: 2.0.0 is committed, then the queued 3.0.0 follows.
    assert_eq!(fx.reboot(), Slot::B);
    let agent = fx.agent(Ok(())).await;
    let f = &fx;
    serve_while(f, agent, |proxy| async move {
        wait_reboots(f, 2).await;
        assert_eq!(proxy.pending_version().await.unwrap(), "3.0.0");
        assert_eq!(proxy.current_version().await.unwrap(), "2.0.0");
    })
    .await;
    assert_eq!(queued_version(&fx), None);
    assert!(fx.slot_holds(Slot::A, &v3_image));
    fx.reboot_and_commit(Slot::A, "3.0.0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dbus_reboot_is_refused_while_rauc_installs() {
    let fx = Fixture::holding("pre-install").await;
    fx.publish("2.0.0", &noise(53, 256 << 10));
    let agent = fx.agent(Ok(())).await;
    let f = &fx;
    serve_while(f, agent, |proxy| async move {
        proxy.check_now().await.unwrap();
        f.handler_entered("pre-install").await;
        assert_eq!(proxy.state().await.unwrap(), "installing");
        let err = proxy.reboot(0).await.unwrap_err();
        assert_eq!(
            error_name(&err),
            "org.freedesktop.DBus.Error.LimitsExceeded"
        );
        assert!(err.to_string().contains("installed"), "{err}");
        f.release_handler();
        wait_reboots(f, 1).await;
        // A reboot is already under way: accepted, not doubled.
        proxy.reboot(0).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    })
    .await;
    assert_eq!(fx.reboots.0.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dbus_reboot_when_idle_waits_its_delay_and_queues_offers() {
    let fx = Fixture::new().await;
    let (v2, _) = fx.release("2.0.0", &noise(54, 64 << 10));
    let agent = fx.agent(Ok(())).await;
    let f = &fx;
    serve_while(f, agent, |proxy| async move {
        wait_state(&proxy, "idle").await;
        let asked = std::time::Instant::now();
        proxy.reboot(1).await.unwrap();
        assert_eq!(f.reboots.0.load(Ordering::SeqCst), 0);
        // An offer while the reboot is due is checked and kept for after it.
        proxy.update_available(&v2.to_bytes()).await.unwrap();
        assert_eq!(queued_version(f).as_deref(), Some("2.0.0"));
        wait_state(&proxy, "rebooting").await;
        assert!(asked.elapsed() >= Duration::from_secs(1));
        assert_eq!(f.reboots.0.load(Ordering::SeqCst), 1);
    })
    .await;
}
