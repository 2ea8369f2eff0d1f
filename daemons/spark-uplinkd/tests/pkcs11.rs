//! The device key in a PKCS#11 token (SoftHSM2 standing in for the secure element): the real
//! spark-uplinkd binary, configured with `[cloud.pkcs11]` and no key file, completes mutual TLS
//! with the real spark-ingest, which files the readings under the certificate's serial.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::meters::FakeMeters;
use common::*;
use spark_testbed::PrivateBus;

const SERIAL: &str = "GW-HSM-7";
const PIN: &str = "2468";

fn softhsm_module() -> PathBuf {
    [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .expect("SoftHSM2 is not installed: run ci/deps.sh (Debian package softhsm2)")
}

fn softhsm_util(conf: &Path, args: &[&str]) {
    let out = Command::new("softhsm2-util")
        .env("SOFTHSM2_CONF", conf)
        .args(args)
        .output()
        .expect("softhsm2-util runs (Debian package softhsm2)");
    assert!(
        out.status.success(),
        "softhsm2-util {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_key_in_a_pkcs11_token() {
    init_tracing();
    let bus = PrivateBus::start().unwrap();
    let pki = Pki::new(SERIAL);
    let cloud = Cloud::start(&pki).await;
    let meters = FakeMeters::start(bus.address(), 10).await;
    let dir = tempfile::tempdir().unwrap();

    // A token in a directory of our own, holding the device key spark-keys issued.
    let tokens = dir.path().join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    let conf = dir.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    softhsm_util(
        &conf,
        &[
            "--init-token",
            "--free",
            "--label",
            "spark",
            "--pin",
            PIN,
            "--so-pin",
            "1357",
        ],
    );
    let key = pki.device_key.to_str().unwrap();
    softhsm_util(
        &conf,
        &[
            "--import", key, "--token", "spark", "--label", "device", "--id", "01", "--pin", PIN,
        ],
    );
    // From here on the key exists only inside the token.
    std::fs::remove_file(&pki.device_key).unwrap();
    let pin_file = dir.path().join("pin");
    std::fs::write(&pin_file, format!("{PIN}\n")).unwrap();

    let data = dir.path().join("data");
    let setup = Setup {
        pki: &pki,
        bus: bus.address(),
        cloud: cloud.addr,
        data_dir: &data,
    };
    let toml = format!(
        "{}\n[cloud.pkcs11]\nmodule = \"{}\"\ntoken-label = \"spark\"\nkey-label = \"device\"\npin-file = \"{}\"\n",
        setup.toml_without_key(),
        softhsm_module().display(),
        pin_file.display()
    );
    let config = dir.path().join("uplinkd.toml");
    std::fs::write(&config, &toml).unwrap();
    let log_path = dir.path().join("uplinkd.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_spark-uplinkd"))
        .arg("--config")
        .arg(&config)
        .env("SOFTHSM2_CONF", &conf)
        .env("RUST_LOG", "spark_uplinkd=debug")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();

    for _ in 0..3 {
        meters.interval().await;
    }
    let want = meters.generated().len() as u64;
    let deadline = Instant::now() + WAIT;
    while cloud.store.reading_count(Some(SERIAL)).await.unwrap() < want {
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            panic!(
                "readings did not arrive; uplinkd log:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_exactly_once(&meters.generated(), &cloud.readings(SERIAL).await);
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("device key in PKCS#11 token"), "{log}");
}
