//! spark-image against the real rauc 1.8: our bundles pass `rauc info --keyring` and install
//! through `rauc service`; rauc's bundles pass our `verify` and show the same fields.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use spark_image::{Bundle, BundleFormat};
use spark_keys::KeyAlgorithm;
use spark_testbed::{Slot, Testbed, TestbedOptions};

#[test]
fn our_bundles_pass_rauc_info_for_every_algorithm_chain_and_format() {
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("rootfs.ext4");
    rootfs_image(&image, 700 * 1024);
    for algorithm in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::Rsa { bits: 2048 }] {
        for intermediate in [false, true] {
            let pki = Pki::new(algorithm, intermediate);
            let keyring = pki.pki.keyring();
            for format in [BundleFormat::Plain, BundleFormat::Verity] {
                let name = format!("{algorithm:?}-{intermediate}-{}", format.as_str());
                let bundle = work.path().join(format!("{name}.raucb"));
                build(&pki, format, &image, "1.0.0", &bundle);
                for purpose in [None, Some("codesign")] {
                    let conf = rauc_conf(work.path(), &keyring, purpose);
                    let json = rauc_info(&conf, &keyring, &bundle)
                        .unwrap_or_else(|e| panic!("rauc rejected {name} ({purpose:?}): {e}"));
                    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
                    assert_eq!(v["compatible"], COMPATIBLE, "{name}");
                    assert_eq!(v["version"], "1.0.0", "{name}");
                }
                let info = verify(&pki, &bundle).unwrap();
                assert!(info.verified);
                assert_eq!(info.format, format);
                assert_eq!(
                    info.signature.certificates.len(),
                    1 + intermediate as usize,
                    "{name}: signer and intermediates are embedded"
                );
            }
        }
    }
}

#[test]
fn plain_bundle_installs_through_rauc_service_byte_exact() {
    let pki = Pki::ecdsa();
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("rootfs.ext4");
    rootfs_image(&image, 3 * 1024 * 1024 + 12345);
    let bundle = work.path().join("update.raucb");
    build(&pki, BundleFormat::Plain, &image, "2.0.0", &bundle);

    let testbed = Testbed::start(TestbedOptions::new(COMPATIBLE, pki.pki.keyring())).unwrap();
    testbed.install(&bundle).unwrap();

    let expected = std::fs::read(&image).unwrap();
    let slot = std::fs::read(testbed.slot_path(Slot::B)).unwrap();
    assert_eq!(
        &slot[..expected.len()],
        &expected[..],
        "slot B holds the image byte for byte"
    );
    let status = testbed.status().unwrap();
    let b = status.slot(Slot::B).unwrap();
    assert_eq!(b.bundle_version.as_deref(), Some("2.0.0"));
    assert_eq!(
        testbed.bootloader().boot_order().unwrap()[0],
        Slot::B,
        "B is primary after install"
    );
}

fn rauc_bundle(pki: &Pki, content: &Path, out: &Path) {
    let mut cmd = Command::new("rauc");
    cmd.arg("bundle")
        .arg(format!("--cert={}", pki.pki.signer_cert().display()))
        .arg(format!("--key={}", pki.pki.signer_key().display()));
    if let Some(i) = pki.pki.intermediate_cert() {
        cmd.arg(format!("--intermediate={}", i.display()));
    }
    let o = cmd.arg(content).arg(out).output().unwrap();
    assert!(
        o.status.success(),
        "rauc bundle: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn rauc_built_bundles_verify_and_show_the_same_fields() {
    let pki = Pki::new(KeyAlgorithm::EcdsaP256, true);
    let work = tempfile::tempdir().unwrap();
    for format in ["plain", "verity"] {
        let content = work.path().join(format!("content-{format}"));
        std::fs::create_dir(&content).unwrap();
        rootfs_image(&content.join("rootfs.ext4"), 1024 * 1024 + 777);
        std::fs::write(content.join("small.txt"), b"fragment-sized file\n").unwrap();
        std::fs::write(
            content.join("manifest.raucm"),
            format!(
                "[update]\ncompatible={COMPATIBLE}\nversion=3.1.4\ndescription=made by rauc\n\n\
                 [bundle]\nformat={format}\n\n[image.rootfs]\nfilename=rootfs.ext4\n\n\
                 [image.appfs]\nfilename=small.txt\n\n[meta.spark]\nchannel=weekly\n"
            ),
        )
        .unwrap();
        let bundle = work.path().join(format!("rauc-{format}.raucb"));
        rauc_bundle(&pki, &content, &bundle);

        let ours = verify(&pki, &bundle).unwrap();
        let conf = rauc_conf(work.path(), &pki.pki.keyring(), None);
        let theirs: serde_json::Value =
            serde_json::from_str(&rauc_info(&conf, &pki.pki.keyring(), &bundle).unwrap()).unwrap();
        assert_eq!(ours.format.as_str(), format);
        assert_eq!(theirs["compatible"], ours.compatible);
        assert_eq!(theirs["version"], ours.version.clone().unwrap());
        assert_eq!(theirs["description"], ours.description.clone().unwrap());
        let images = theirs["images"].as_array().unwrap();
        assert_eq!(images.len(), ours.images.len());
        for image in &ours.images {
            let t = images
                .iter()
                .find_map(|i| i.get(&image.slot_class))
                .unwrap_or_else(|| panic!("rauc lists {}", image.slot_class));
            assert_eq!(t["filename"], image.filename);
            assert_eq!(t["checksum"], hex::encode(image.sha256.unwrap()));
            assert_eq!(t["size"], image.size.unwrap());
        }
        // rauc 1.8 drops [meta.*] (and a plain [bundle] group) when it rewrites the manifest.
        assert!(ours.meta.is_empty());
        if format == "verity" {
            let v = ours.verity.clone().unwrap();
            // rauc 1.8's JSON has no verity fields; compare with its text output instead.
            let text = rauc(&[
                &format!("--conf={}", conf.display()),
                "info",
                &format!("--keyring={}", pki.pki.keyring().display()),
                &bundle.display().to_string(),
            ]);
            let text = String::from_utf8_lossy(&text.stdout);
            assert!(text.contains(&v.hash), "{text}");
            assert!(text.contains(&v.salt), "{text}");
        }
        assert_eq!(
            Bundle::open(&bundle).unwrap().inspect().unwrap().compatible,
            COMPATIBLE
        );
    }
}

#[test]
fn resign_keeps_payload_and_moves_trust_to_the_new_signer() {
    let old = Pki::ecdsa();
    let new = Pki::new(KeyAlgorithm::Rsa { bits: 2048 }, true);
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("rootfs.ext4");
    rootfs_image(&image, 600 * 1024);
    for format in [BundleFormat::Plain, BundleFormat::Verity] {
        let a = work.path().join(format!("a-{}.raucb", format.as_str()));
        let b = work.path().join(format!("b-{}.raucb", format.as_str()));
        build(&old, format, &image, "1.0.0", &a);
        let bundle = Bundle::open(&a).unwrap();
        bundle.resign(&new.signer(), &b).unwrap();
        let (ba, bb) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        let payload = ba.len() - 8 - bundle.signature().len();
        assert_eq!(&ba[..payload], &bb[..payload], "payload kept byte for byte");
        assert!(verify(&new, &b).unwrap().verified);
        assert!(
            verify(&old, &b).is_err(),
            "the old keyring no longer trusts it"
        );
        let conf = rauc_conf(work.path(), &new.pki.keyring(), None);
        rauc_info(&conf, &new.pki.keyring(), &b).unwrap();
    }
}

#[test]
fn extract_gives_back_the_files() {
    let pki = Pki::ecdsa();
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("rootfs.ext4");
    rootfs_image(&image, 900 * 1024 + 3);
    let bundle = work.path().join("b.raucb");
    build(&pki, BundleFormat::Verity, &image, "1.0.0", &bundle);
    let out = work.path().join("out");
    let info = Bundle::open(&bundle)
        .unwrap()
        .verify_and_extract(
            &pki.keyring(),
            &Default::default(),
            &out,
            &indicatif::ProgressBar::hidden(),
        )
        .unwrap();
    assert!(info.verified);
    // An existing directory is never written into (nor removed on failure).
    let again = Bundle::open(&bundle).unwrap().extract(&out);
    assert!(matches!(
        again,
        Err(spark_image::BundleError::OutputExists(_))
    ));
    assert_eq!(
        std::fs::read(out.join("rootfs.ext4")).unwrap(),
        std::fs::read(&image).unwrap()
    );
    let manifest = std::fs::read_to_string(out.join("manifest.raucm")).unwrap();
    assert!(manifest.contains("compatible=spark-test"));
    assert!(
        !manifest.contains("verity-hash"),
        "squashfs manifest carries no verity keys"
    );
}

#[test]
fn source_date_epoch_makes_the_payload_reproducible() {
    let pki = Pki::ecdsa();
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("rootfs.ext4");
    rootfs_image(&image, 2 * 1024 * 1024);
    for format in [BundleFormat::Plain, BundleFormat::Verity] {
        let a = work.path().join(format!("1-{}.raucb", format.as_str()));
        let b = work.path().join(format!("2-{}.raucb", format.as_str()));
        build(&pki, format, &image, "1.0.0", &a);
        build(&pki, format, &image, "1.0.0", &b);
        let sig_a = Bundle::open(&a).unwrap().signature().len();
        let sig_b = Bundle::open(&b).unwrap().signature().len();
        let (ba, bb) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        assert_eq!(
            &ba[..ba.len() - 8 - sig_a],
            &bb[..bb.len() - 8 - sig_b],
            "{format:?}: squashfs (and verity tree) identical"
        );
    }
}
