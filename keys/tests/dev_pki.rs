//! The dev PKI on disk: layout, file modes, --force, and the contents of the device, server and
//! release keys, checked with the real `openssl` and the `spark-keys` binary.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::{mode, p, run, run_ok};
use spark_keys::{DevPki, DevPkiOptions, KeyAlgorithm, KeysError, init_dev, issue_device, layout};

const CERTS: &[&str] = &[
    layout::FIRMWARE_CA_CERT,
    layout::SIGNER_CERT,
    layout::KEYRING,
    layout::RELEASE_PUB,
    layout::DEVICE_CA_CERT,
    layout::SERVER_CA_CERT,
    layout::SERVER_CERT,
];
const KEYS: &[&str] = &[
    layout::FIRMWARE_CA_KEY,
    layout::SIGNER_KEY,
    layout::RELEASE_KEY,
    layout::DEVICE_CA_KEY,
    layout::SERVER_CA_KEY,
    layout::SERVER_KEY,
];

fn spark_keys(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_spark-keys"))
        .args(args)
        .output()
        .expect("run spark-keys")
}

fn assert_layout(dir: &Path, intermediate: bool) {
    for name in CERTS {
        assert_eq!(mode(&dir.join(name)), 0o644, "{name}");
    }
    let mut keys = KEYS.to_vec();
    if intermediate {
        assert_eq!(mode(&dir.join(layout::INTERMEDIATE_CERT)), 0o644);
        keys.push(layout::INTERMEDIATE_KEY);
    } else {
        assert!(!dir.join(layout::INTERMEDIATE_CERT).exists());
        assert!(!dir.join(layout::INTERMEDIATE_KEY).exists());
    }
    for name in keys {
        let path = dir.join(name);
        assert_eq!(mode(&path), 0o600, "{name}");
        let pem = fs::read_to_string(&path).unwrap();
        assert!(
            pem.starts_with(concat!("-----BEGIN ", "PRIVATE KEY-----\n")),
            "{name} is not PKCS#8 PEM"
        );
    }
    assert_eq!(
        fs::read_to_string(dir.join(layout::KEYRING)).unwrap(),
        fs::read_to_string(dir.join(layout::FIRMWARE_CA_CERT)).unwrap(),
        "keyring must be the firmware root CA"
    );
    assert!(
        fs::read_to_string(dir.join(".gitignore"))
            .unwrap()
            .lines()
            .any(|l| l == "*"),
        "the dev PKI dir must ignore itself"
    );
}

#[test]
fn cli_init_writes_layout_with_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    let out = spark_keys(&["init", "--dev", p(&dir), "--intermediate"]);
    assert!(out.status.success(), "{}", common::describe(&out));
    assert_layout(&dir, true);
    let pki = DevPki::open(&dir).unwrap();
    assert_eq!(
        pki.intermediate_cert(),
        Some(dir.join(layout::INTERMEDIATE_CERT))
    );
}

#[test]
fn library_init_without_intermediate() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = init_dev(tmp.path(), &DevPkiOptions::default()).unwrap();
    assert_layout(tmp.path(), false);
    assert_eq!(pki.intermediate_cert(), None);
    // Signer issued directly by the root.
    run_ok(
        "openssl",
        &[
            "verify",
            "-CAfile",
            p(&pki.keyring()),
            "-purpose",
            "smimesign",
            p(&pki.signer_cert()),
        ],
    );
    let text = run_ok(
        "openssl",
        &["x509", "-in", p(&pki.signer_cert()), "-noout", "-text"],
    );
    assert!(text.contains("Code Signing, E-mail Protection"), "{text}");
    assert!(text.contains("Digital Signature"), "{text}");
    assert!(text.contains("CA:FALSE"), "{text}");
    assert!(text.contains("ecdsa-with-SHA256"), "{text}");
}

#[test]
fn rsa_bits_choose_modulus_size() {
    let tmp = tempfile::tempdir().unwrap();
    let out = spark_keys(&[
        "init",
        "--dev",
        p(tmp.path()),
        "--algorithm",
        "rsa",
        "--rsa-bits",
        "3072",
    ]);
    assert!(out.status.success(), "{}", common::describe(&out));
    let text = run_ok(
        "openssl",
        &[
            "x509",
            "-in",
            p(&tmp.path().join(layout::SIGNER_CERT)),
            "-noout",
            "-text",
        ],
    );
    assert!(text.contains("Public-Key: (3072 bit)"), "{text}");
    assert!(text.contains("sha256WithRSAEncryption"), "{text}");

    let out = spark_keys(&[
        "init",
        "--dev",
        p(&tmp.path().join("x")),
        "--algorithm",
        "rsa",
        "--rsa-bits",
        "1024",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("RSA key size 1024"));
}

#[test]
fn refuses_to_overwrite_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    init_dev(dir, &DevPkiOptions::default()).unwrap();
    let signer_before = fs::read(dir.join(layout::SIGNER_KEY)).unwrap();

    let err = init_dev(dir, &DevPkiOptions::default()).unwrap_err();
    match &err {
        KeysError::WouldOverwrite { path } => assert_eq!(path, &dir.join(layout::FIRMWARE_CA_CERT)),
        other => panic!("unexpected error {other:?}"),
    }
    assert!(err.to_string().contains("--force"), "{err}");
    assert_eq!(
        fs::read(dir.join(layout::SIGNER_KEY)).unwrap(),
        signer_before,
        "refused run changed a key"
    );

    // One leftover key is enough to refuse.
    let tmp2 = tempfile::tempdir().unwrap();
    fs::write(tmp2.path().join(layout::RELEASE_KEY), "old").unwrap();
    let out = spark_keys(&["init", "--dev", p(tmp2.path())]);
    assert_eq!(out.status.code(), Some(2), "{}", common::describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(layout::RELEASE_KEY) && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(
        fs::read_to_string(tmp2.path().join(layout::RELEASE_KEY)).unwrap(),
        "old"
    );
    assert!(
        !tmp2.path().join(layout::FIRMWARE_CA_CERT).exists(),
        "refused run wrote files"
    );
}

#[test]
fn force_replaces_keys_and_drops_stale_intermediate() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    init_dev(
        dir,
        &DevPkiOptions {
            intermediate: true,
            ..DevPkiOptions::default()
        },
    )
    .unwrap();
    let signer_before = fs::read(dir.join(layout::SIGNER_KEY)).unwrap();
    // A key someone loosened by hand comes back 0600: it is a new file, not the old one.
    fs::set_permissions(
        dir.join(layout::SIGNER_KEY),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();

    let out = spark_keys(&["init", "--dev", p(dir), "--force"]);
    assert!(out.status.success(), "{}", common::describe(&out));
    assert_ne!(
        fs::read(dir.join(layout::SIGNER_KEY)).unwrap(),
        signer_before
    );
    assert_layout(dir, false);
    assert_eq!(DevPki::open(dir).unwrap().intermediate_cert(), None);
    let leftovers: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn device_cert_chains_to_device_ca_with_serial_cn() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = init_dev(tmp.path(), &DevPkiOptions::default()).unwrap();
    let (cert, key) = issue_device(tmp.path(), "GW-000123", false).unwrap();
    assert_eq!(cert, tmp.path().join("devices/GW-000123.cert.pem"));
    assert_eq!(key, pki.device_key("GW-000123"));
    assert_eq!(mode(&cert), 0o644);
    assert_eq!(mode(&key), 0o600);

    let out = run_ok(
        "openssl",
        &[
            "verify",
            "-CAfile",
            p(&pki.device_ca_cert()),
            "-purpose",
            "sslclient",
            p(&cert),
        ],
    );
    assert!(out.contains(": OK"), "{out}");
    // Not trusted by the firmware keyring: the device CA is a separate root.
    let out = run(
        "openssl",
        &["verify", "-CAfile", p(&pki.keyring()), p(&cert)],
    );
    assert!(!out.status.success());

    let subject = run_ok(
        "openssl",
        &[
            "x509",
            "-in",
            p(&cert),
            "-noout",
            "-subject",
            "-nameopt",
            "RFC2253",
        ],
    );
    assert_eq!(subject.trim(), "subject=CN=GW-000123");
    let text = run_ok("openssl", &["x509", "-in", p(&cert), "-noout", "-text"]);
    assert!(text.contains("TLS Web Client Authentication"), "{text}");
    assert!(text.contains("prime256v1"), "{text}");
    // The key is the certificate's.
    let cert_pub = run_ok("openssl", &["x509", "-in", p(&cert), "-noout", "-pubkey"]);
    let key_pub = run_ok("openssl", &["pkey", "-in", p(&key), "-pubout"]);
    assert_eq!(cert_pub, key_pub);

    // Again: refused without --force (exit 2 via the CLI), replaced with it.
    let err = issue_device(tmp.path(), "GW-000123", false).unwrap_err();
    assert!(
        matches!(err, KeysError::WouldOverwrite { ref path } if *path == cert),
        "{err:?}"
    );
    let out = spark_keys(&["issue-device", "GW-000123", "--dir", p(tmp.path())]);
    assert_eq!(out.status.code(), Some(2));
    let out = spark_keys(&[
        "issue-device",
        "GW-000123",
        "--dir",
        p(tmp.path()),
        "--force",
    ]);
    assert!(out.status.success(), "{}", common::describe(&out));

    // Serials that would escape devices/ are refused.
    let out = spark_keys(&["issue-device", "../evil", "--dir", p(tmp.path())]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!tmp.path().join("evil.cert.pem").exists());
}

#[test]
fn issue_device_without_pki_says_to_init() {
    let tmp = tempfile::tempdir().unwrap();
    let out = spark_keys(&["issue-device", "GW-1", "--dir", p(tmp.path())]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(layout::DEVICE_CA_CERT) && stderr.contains("spark-keys init"),
        "{stderr}"
    );
    assert!(
        stderr.contains("caused by"),
        "whole chain printed: {stderr}"
    );
}

#[test]
fn server_cert_has_sans_and_chains_to_server_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = init_dev(
        tmp.path(),
        &DevPkiOptions {
            server_names: vec![
                "ota.spark.test".into(),
                "localhost".into(),
                "127.0.0.1".into(),
                "::1".into(),
            ],
            ..DevPkiOptions::default()
        },
    )
    .unwrap();
    let sans = run_ok(
        "openssl",
        &[
            "x509",
            "-in",
            p(&pki.server_cert()),
            "-noout",
            "-ext",
            "subjectAltName",
        ],
    );
    for want in [
        "DNS:ota.spark.test",
        "DNS:localhost",
        "IP Address:127.0.0.1",
        "IP Address:0:0:0:0:0:0:0:1",
    ] {
        assert!(sans.contains(want), "missing {want} in {sans}");
    }
    let out = run_ok(
        "openssl",
        &[
            "verify",
            "-CAfile",
            p(&pki.server_ca_cert()),
            "-purpose",
            "sslserver",
            "-verify_hostname",
            "ota.spark.test",
            p(&pki.server_cert()),
        ],
    );
    assert!(out.contains(": OK"), "{out}");
    let out = run_ok(
        "openssl",
        &[
            "verify",
            "-CAfile",
            p(&pki.server_ca_cert()),
            "-verify_ip",
            "127.0.0.1",
            p(&pki.server_cert()),
        ],
    );
    assert!(out.contains(": OK"), "{out}");
}

#[test]
fn cli_default_server_names_are_localhost() {
    let tmp = tempfile::tempdir().unwrap();
    let out = spark_keys(&["init", "--dev", p(tmp.path())]);
    assert!(out.status.success(), "{}", common::describe(&out));
    let sans = run_ok(
        "openssl",
        &[
            "x509",
            "-in",
            p(&tmp.path().join(layout::SERVER_CERT)),
            "-noout",
            "-ext",
            "subjectAltName",
        ],
    );
    assert!(
        sans.contains("DNS:localhost") && sans.contains("IP Address:127.0.0.1"),
        "{sans}"
    );

    let out = spark_keys(&[
        "init",
        "--dev",
        p(&tmp.path().join("x")),
        "--server-name",
        "https://bad/",
    ]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn release_key_is_ed25519_and_public_matches() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = init_dev(
        tmp.path(),
        &DevPkiOptions {
            algorithm: KeyAlgorithm::EcdsaP256,
            ..Default::default()
        },
    )
    .unwrap();
    let text = run_ok(
        "openssl",
        &["pkey", "-in", p(&pki.release_key()), "-noout", "-text"],
    );
    assert!(text.starts_with("ED25519 Private-Key"), "{text}");
    let derived = run_ok(
        "openssl",
        &["pkey", "-in", p(&pki.release_key()), "-pubout"],
    );
    assert_eq!(derived, fs::read_to_string(pki.release_pub()).unwrap());
    assert!(derived.starts_with("-----BEGIN PUBLIC KEY-----"));

    // And it really signs: sign with the private key, verify with the public one.
    let msg = tmp.path().join("manifest");
    let sig = tmp.path().join("manifest.sig");
    fs::write(&msg, b"release 1.2.3").unwrap();
    run_ok(
        "openssl",
        &[
            "pkeyutl",
            "-sign",
            "-rawin",
            "-inkey",
            p(&pki.release_key()),
            "-in",
            p(&msg),
            "-out",
            p(&sig),
        ],
    );
    let out = run_ok(
        "openssl",
        &[
            "pkeyutl",
            "-verify",
            "-rawin",
            "-pubin",
            "-inkey",
            p(&pki.release_pub()),
            "-in",
            p(&msg),
            "-sigfile",
            p(&sig),
        ],
    );
    assert!(out.contains("Signature Verified Successfully"), "{out}");
}

#[test]
fn service_cert_chains_to_server_ca_not_device_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = init_dev(tmp.path(), &DevPkiOptions::default()).unwrap();
    let out = spark_keys(&["issue-service", "spark-ota", "--dir", p(tmp.path())]);
    assert!(out.status.success(), "{}", common::describe(&out));
    let (cert, key) = (pki.service_cert("spark-ota"), pki.service_key("spark-ota"));
    assert_eq!(cert, tmp.path().join("services/spark-ota.cert.pem"));
    assert_eq!(mode(&key), 0o600);

    let out = run_ok(
        "openssl",
        &[
            "verify",
            "-CAfile",
            p(&pki.server_ca_cert()),
            "-purpose",
            "sslclient",
            p(&cert),
        ],
    );
    assert!(out.contains(": OK"), "{out}");
    // A service is not a gateway: the device CA does not vouch for it.
    let out = run(
        "openssl",
        &["verify", "-CAfile", p(&pki.device_ca_cert()), p(&cert)],
    );
    assert!(!out.status.success());
    let subject = run_ok(
        "openssl",
        &[
            "x509",
            "-in",
            p(&cert),
            "-noout",
            "-subject",
            "-nameopt",
            "RFC2253",
        ],
    );
    assert_eq!(subject.trim(), "subject=CN=spark-ota");

    // Refused again without --force; a name that would escape services/ is refused.
    let out = spark_keys(&["issue-service", "spark-ota", "--dir", p(tmp.path())]);
    assert_eq!(out.status.code(), Some(2));
    let out = spark_keys(&["issue-service", "../evil", "--dir", p(tmp.path())]);
    assert_eq!(out.status.code(), Some(2));
}
