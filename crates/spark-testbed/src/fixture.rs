//! Throwaway signing material and bundles made with the real tools, for tests that need a bundle
//! the real RAUC accepts without depending on our own bundle writer.
//!
//! The PKI follows RAUC-FACTS: an EC P-256 CA and a leaf with key usage digitalSignature and EKU
//! codeSigning + emailProtection, which rauc 1.8 accepts both with and without
//! `check-purpose=codesign`. Bundles are built by `rauc bundle` (plain format, which installs on
//! machines without device-mapper).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::TestbedError;
use crate::bootloader::write_file;
use crate::process::run_checked;

/// Bound on each `openssl` / `rauc bundle` call; both take well under a second normally.
const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

/// A CA and a bundle signer, as PEM files in a directory of the caller's choice.
#[derive(Debug, Clone)]
pub struct TestPki {
    /// The CA certificate: use it as the testbed's keyring.
    pub ca_cert: PathBuf,
    /// The signer certificate (`rauc bundle --cert`).
    pub signer_cert: PathBuf,
    /// The signer's private key (`rauc bundle --key`).
    pub signer_key: PathBuf,
}

impl TestPki {
    /// Generates a fresh CA and signer with `openssl` into `dir` (which must exist).
    pub fn generate(dir: &Path) -> Result<Self, TestbedError> {
        let ca_key = dir.join("ca.key.pem");
        let ca_cert = dir.join("ca.cert.pem");
        let signer_key = dir.join("signer.key.pem");
        let signer_csr = dir.join("signer.csr.pem");
        let signer_cert = dir.join("signer.cert.pem");
        let signer_ext = dir.join("signer.ext");

        for key in [&ca_key, &signer_key] {
            openssl(&["genpkey", "-algorithm", "EC", "-pkeyopt"])
                .args(["ec_paramgen_curve:P-256", "-out"])
                .arg(key)
                .run()?;
        }
        openssl(&[
            "req",
            "-x509",
            "-new",
            "-days",
            "30",
            "-subj",
            "/CN=Spark Test CA",
        ])
        .args(["-addext", "basicConstraints=critical,CA:TRUE"])
        .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        .arg("-key")
        .arg(&ca_key)
        .arg("-out")
        .arg(&ca_cert)
        .run()?;
        openssl(&[
            "req",
            "-new",
            "-subj",
            "/CN=Spark Test Bundle Signer",
            "-key",
        ])
        .arg(&signer_key)
        .arg("-out")
        .arg(&signer_csr)
        .run()?;
        write_file(
            &signer_ext,
            b"basicConstraints=critical,CA:FALSE\n\
              keyUsage=critical,digitalSignature\n\
              extendedKeyUsage=codeSigning,emailProtection\n",
        )?;
        openssl(&["x509", "-req", "-days", "30", "-set_serial", "2", "-in"])
            .arg(&signer_csr)
            .arg("-CA")
            .arg(&ca_cert)
            .arg("-CAkey")
            .arg(&ca_key)
            .arg("-extfile")
            .arg(&signer_ext)
            .arg("-out")
            .arg(&signer_cert)
            .run()?;
        Ok(Self {
            ca_cert,
            signer_cert,
            signer_key,
        })
    }

    /// Builds a plain bundle at `out` with one `rootfs` image holding `image`, signed by this
    /// signer. `work` is a scratch directory (the bundle's input folder is made inside it).
    pub fn plain_bundle(
        &self,
        work: &Path,
        compatible: &str,
        version: &str,
        image: &[u8],
        out: &Path,
    ) -> Result<(), TestbedError> {
        let input = work.join(format!("bundle-input-{compatible}-{version}"));
        std::fs::create_dir_all(&input).map_err(|source| TestbedError::Io {
            action: "create directory",
            path: input.clone(),
            source,
        })?;
        write_file(&input.join("rootfs.img"), image)?;
        let manifest = format!(
            "[update]\ncompatible={compatible}\nversion={version}\n\n\
             [bundle]\nformat=plain\n\n\
             [image.rootfs]\nfilename=rootfs.img\n"
        );
        write_file(&input.join("manifest.raucm"), manifest.as_bytes())?;
        // `rauc bundle` refuses to overwrite; a stale output from an earlier run is ours to drop.
        let _ = std::fs::remove_file(out);
        let mut cmd = Command::new("rauc");
        cmd.arg("--cert")
            .arg(&self.signer_cert)
            .arg("--key")
            .arg(&self.signer_key)
            .arg("bundle")
            .arg(&input)
            .arg(out);
        run_checked(&mut cmd, TOOL_TIMEOUT)?;
        Ok(())
    }
}

/// `openssl` with its first arguments, run with [`Run::run`].
fn openssl(args: &[&str]) -> Command {
    let mut cmd = Command::new("openssl");
    cmd.args(args);
    cmd
}

trait Run {
    fn run(&mut self) -> Result<(), TestbedError>;
}

impl Run for Command {
    fn run(&mut self) -> Result<(), TestbedError> {
        run_checked(self, TOOL_TIMEOUT).map(drop)
    }
}
