//! `spark-keys sign-release` / `verify-release` run as the real binary against a dev PKI made by
//! `init_dev` and a dummy bundle file.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use spark_keys::{DevPkiOptions, init_dev};
use spark_release::{KeyId, SignedRelease, Timestamp, digest_reader};

const ISSUED: &str = "2026-11-26T00:00:00Z";
/// One day after ISSUED: inside the default 30-day validity.
const NOW: &str = "2026-11-27T00:00:00Z";

struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    key: PathBuf,
    pubkey: PathBuf,
    bundle: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_owned();
        let pki = init_dev(&dir.join("pki"), &DevPkiOptions::default()).unwrap();
        let bundle = dir.join("update.raucb");
        // Not a real bundle: signing only hashes the file. 300 KiB spans several read buffers.
        fs::write(
            &bundle,
            (0..300 * 1024)
                .map(|i| (i % 251) as u8)
                .collect::<Vec<u8>>(),
        )
        .unwrap();
        Fixture {
            _tmp: tmp,
            dir,
            key: pki.release_key(),
            pubkey: pki.release_pub(),
            bundle,
        }
    }

    fn out(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// `sign-release` with the usual flags plus `extra`, writing `name`; asserts success.
    fn sign(&self, name: &str, extra: &[&str]) -> PathBuf {
        let out = self.out(name);
        let mut args = vec![
            "sign-release",
            "--key",
            p(&self.key),
            "--bundle",
            p(&self.bundle),
            "--compatible",
            "spark-bbb",
            "--version",
            "1.4.0",
            "--min-version",
            "1.2.0",
            "--issued-at",
            ISSUED,
            "--url",
            "https://ota.spark.test/b/1.4.0.raucb",
            "--rollout",
            "2026-w48",
            "-o",
            p(&out),
        ];
        args.extend_from_slice(extra);
        ok(&args);
        out
    }

    /// `verify-release FILE --pub release.pub.pem` plus `extra`, at `--now NOW` unless `extra`
    /// names another time.
    fn verify(&self, file: &Path, extra: &[&str]) -> Output {
        let mut args = vec!["verify-release", p(file), "--pub", p(&self.pubkey)];
        if !extra.contains(&"--now") {
            args.extend(["--now", NOW]);
        }
        args.extend_from_slice(extra);
        run(&args)
    }
}

fn p(path: &Path) -> &str {
    // Temp dirs made by the tests are always UTF-8.
    path.to_str().expect("test paths are UTF-8")
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spark-keys"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "spark-keys {args:?} failed with {}:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Asserts the command failed with `code` and that stderr mentions each of `needles`.
fn fails(out: &Output, code: i32, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "{needle:?} not in stderr: {stderr}"
        );
    }
}

#[test]
fn sign_then_verify() {
    let f = Fixture::new();
    let file = f.sign("r.release.json", &[]);

    let release = SignedRelease::from_json(&fs::read_to_string(&file).unwrap()).unwrap();
    let m = release.manifest();
    let digest = digest_reader(&fs::read(&f.bundle).unwrap()[..]).unwrap();
    assert_eq!(
        (m.bundle_sha256, m.bundle_size),
        (digest.sha256, digest.size)
    );
    assert_eq!(m.version.to_string(), "1.4.0");
    assert_eq!(m.min_version.as_ref().unwrap().to_string(), "1.2.0");
    assert_eq!(m.issued_at, ISSUED.parse::<Timestamp>().unwrap());
    assert_eq!(
        m.expires_at.to_string(),
        "2026-12-26T00:00:00Z",
        "default 30 days"
    );
    assert_eq!(m.locations, ["https://ota.spark.test/b/1.4.0.raucb"]);
    assert_eq!(m.rollout.as_deref(), Some("2026-w48"));
    assert!(!m.allow_downgrade);
    let public = spark_release::load_verifying_key(&f.pubkey).unwrap();
    assert_eq!(release.key_id(), KeyId::of(&public));

    let out = f.verify(
        &file,
        &[
            "--compatible",
            "spark-bbb",
            "--installed",
            "1.3.0",
            "--bundle",
            p(&f.bundle),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("signature and policy OK"), "{stdout}");
    assert!(stdout.contains(&release.key_id().to_string()), "{stdout}");
}

#[test]
fn signing_is_reproducible_and_binary_form_verifies() {
    let f = Fixture::new();
    let a = f.sign("a.release.json", &[]);
    let b = f.sign("b.release.json", &[]);
    assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap());

    let bin = f.sign("c.release.bin", &["--format", "binary"]);
    let from_json = SignedRelease::from_json(&fs::read_to_string(&a).unwrap()).unwrap();
    assert_eq!(fs::read(&bin).unwrap(), from_json.to_bytes());
    let out = f.verify(&bin, &["--compatible", "spark-bbb", "--installed", "1.3.0"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn expiry_flags() {
    let f = Fixture::new();
    let file = f.sign("r.release.json", &["--expires-in", "12h"]);
    let m = SignedRelease::from_json(&fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(m.manifest().expires_at.to_string(), "2026-11-26T12:00:00Z");
    let file = f.sign(
        "s.release.json",
        &["--expires-at", "2027-01-31T00:00:00+01:00"],
    );
    let m = SignedRelease::from_json(&fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(m.manifest().expires_at.to_string(), "2027-01-30T23:00:00Z");
    // Expired one day after issue; verifying at NOW (one day after) fails.
    let file = f.sign("t.release.json", &["--expires-in", "1d"]);
    fails(
        &f.verify(&file, &[]),
        1,
        &["(expired)", "sign a fresh release manifest"],
    );
}

#[test]
fn every_verification_failure_is_reported_with_its_code() {
    let f = Fixture::new();
    let file = f.sign("r.release.json", &[]);
    let check = |extra: &[&str], needles: &[&str]| fails(&f.verify(&file, extra), 1, needles);

    check(
        &["--compatible", "spark-rpi"],
        &["(wrong-compatible)", "\"spark-rpi\""],
    );
    check(
        &["--installed", "1.4.0"],
        &["(not-newer)", "--allow-downgrade"],
    );
    check(
        &["--installed", "1.1.0"],
        &["(below-minimum)", "intermediate release"],
    );
    check(
        &["--now", "2026-11-25T23:00:00Z"],
        &["(not-yet-valid)", "clock"],
    );
    check(&["--now", "2026-12-26T00:00:00Z"], &["(expired)"]);

    // Another dev PKI's key: unknown.
    let other = init_dev(&f.dir.join("other"), &DevPkiOptions::default()).unwrap();
    let out = run(&[
        "verify-release",
        p(&file),
        "--pub",
        p(&other.release_pub()),
        "--now",
        NOW,
    ]);
    fails(&out, 1, &["(unknown-key)", "trusted keys"]);
    // Trusting both keys (rotation) accepts it.
    ok(&[
        "verify-release",
        p(&file),
        "--pub",
        p(&other.release_pub()),
        "--pub",
        p(&f.pubkey),
        "--now",
        NOW,
    ]);

    // Edited after signing: bad signature.
    let tampered = f.out("tampered.release.json");
    let text = fs::read_to_string(&file)
        .unwrap()
        .replace("\"1.4.0\"", "\"1.5.0\"");
    fs::write(&tampered, text).unwrap();
    fails(
        &f.verify(&tampered, &[]),
        1,
        &["(bad-signature)", "altered after signing"],
    );

    // Not a release at all.
    fails(&f.verify(&f.bundle, &[]), 1, &["is not a signed release"]);

    // The wrong bundle.
    let other_bundle = f.out("other.raucb");
    fs::write(&other_bundle, b"not it").unwrap();
    fails(
        &f.verify(&file, &["--bundle", p(&other_bundle)]),
        1,
        &["is not the one", "download it again"],
    );
}

#[test]
fn allow_downgrade_is_signed_in() {
    let f = Fixture::new();
    let file = f.sign("r.release.json", &["--allow-downgrade"]);
    let out = f.verify(&file, &["--installed", "2.0.0"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .contains("downgrade:   allowed")
    );
}

#[test]
fn usage_errors_exit_2_and_say_what_to_do() {
    let f = Fixture::new();
    let file = f.sign("r.release.json", &[]);

    // Existing output without --force; with it, replaced.
    let again = run(&[
        "sign-release",
        "--key",
        p(&f.key),
        "--bundle",
        p(&f.bundle),
        "--compatible",
        "spark-bbb",
        "--version",
        "1.4.0",
        "-o",
        p(&file),
    ]);
    fails(&again, 2, &["refusing to overwrite", "--force"]);
    f.sign("r.release.json", &["--force"]);

    let base = |version: &'static str, extra: &[&'static str]| {
        let out = f.out("u.release.json");
        let mut args: Vec<String> = [
            "sign-release",
            "--key",
            p(&f.key),
            "--bundle",
            p(&f.bundle),
            "--compatible",
            "spark-bbb",
            "--version",
            version,
            "-o",
            p(&out),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&args)
    };
    fails(&base("v1.4", &[]), 2, &["semantic versions like 1.4.2"]);
    fails(
        &base("1.4.0", &["--min-version", "1.5.0"]),
        2,
        &["above the release version"],
    );
    fails(&base("1.4.0", &["--expires-in", "30"]), 2, &["like 30d"]);
    fails(
        &base(
            "1.4.0",
            &["--expires-in", "1d", "--expires-at", "2027-01-01T00:00:00Z"],
        ),
        2,
        &["cannot be used with"],
    );
    fails(
        &base(
            "1.4.0",
            &[
                "--issued-at",
                ISSUED,
                "--expires-at",
                "2026-11-25T00:00:00Z",
            ],
        ),
        2,
        &["not after issued_at"],
    );
    fails(
        &base("1.4.0", &["--url", "https://a.test/x y"]),
        2,
        &["whitespace"],
    );
    assert!(
        !f.out("u.release.json").exists(),
        "nothing written on failure"
    );

    // The public key given as the signing key.
    let out = run(&[
        "sign-release",
        "--key",
        p(&f.pubkey),
        "--bundle",
        p(&f.bundle),
        "--compatible",
        "spark-bbb",
        "--version",
        "1.4.0",
        "-o",
        p(&f.out("w.json")),
    ]);
    fails(
        &out,
        1,
        &["not an Ed25519 private key", "\"PRIVATE KEY\" block"],
    );
    // A missing bundle.
    let out = run(&[
        "sign-release",
        "--key",
        p(&f.key),
        "--bundle",
        p(&f.out("missing.raucb")),
        "--compatible",
        "spark-bbb",
        "--version",
        "1.4.0",
        "-o",
        p(&f.out("w.json")),
    ]);
    fails(&out, 1, &["cannot read bundle"]);
}
