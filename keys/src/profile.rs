//! Leaf certificate profiles: what a bundle signer, a device and a server certificate contain.
//!
//! The fields are public so that tests can start from a correct profile and break one property
//! on purpose (an expired signer, a codeSigning-only signer, a signer without digitalSignature)
//! to prove that RAUC or spark-image rejects it.

use std::net::IpAddr;

use time::{Duration, OffsetDateTime};

use crate::KeyAlgorithm;

/// Clock skew allowed between the machine issuing a certificate and the one checking it: a
/// certificate issued "now" must not be "not yet valid" on a gateway whose clock is a bit behind.
pub(crate) const BACKDATE: Duration = Duration::hours(1);

/// Validity of the development bundle signer. Short enough to exercise rotation, long enough
/// that a dev PKI in a checkout does not expire under a developer's feet.
pub const SIGNER_VALIDITY: Duration = Duration::days(3 * 365);
/// Validity of device certificates: the service life of a gateway.
pub const DEVICE_VALIDITY: Duration = Duration::days(15 * 365);
/// Validity of server certificates.
pub const SERVER_VALIDITY: Duration = Duration::days(2 * 365);

/// An extended key usage (RFC 5280 4.2.1.12) a leaf may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtendedKeyUsage {
    /// TLS server (`id-kp-serverAuth`).
    ServerAuth,
    /// TLS client (`id-kp-clientAuth`).
    ClientAuth,
    /// Code signing (`id-kp-codeSigning`), what RAUC's `check-purpose=codesign` requires.
    CodeSigning,
    /// S/MIME (`id-kp-emailProtection`), what OpenSSL's default S/MIME-signing purpose requires.
    EmailProtection,
}

/// A key usage bit (RFC 5280 4.2.1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUsage {
    DigitalSignature,
    ContentCommitment,
    KeyEncipherment,
    DataEncipherment,
    KeyAgreement,
    KeyCertSign,
    CrlSign,
}

impl From<ExtendedKeyUsage> for rcgen::ExtendedKeyUsagePurpose {
    fn from(eku: ExtendedKeyUsage) -> Self {
        match eku {
            ExtendedKeyUsage::ServerAuth => rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsage::ClientAuth => rcgen::ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsage::CodeSigning => rcgen::ExtendedKeyUsagePurpose::CodeSigning,
            ExtendedKeyUsage::EmailProtection => rcgen::ExtendedKeyUsagePurpose::EmailProtection,
        }
    }
}

impl From<KeyUsage> for rcgen::KeyUsagePurpose {
    fn from(ku: KeyUsage) -> Self {
        match ku {
            KeyUsage::DigitalSignature => rcgen::KeyUsagePurpose::DigitalSignature,
            KeyUsage::ContentCommitment => rcgen::KeyUsagePurpose::ContentCommitment,
            KeyUsage::KeyEncipherment => rcgen::KeyUsagePurpose::KeyEncipherment,
            KeyUsage::DataEncipherment => rcgen::KeyUsagePurpose::DataEncipherment,
            KeyUsage::KeyAgreement => rcgen::KeyUsagePurpose::KeyAgreement,
            KeyUsage::KeyCertSign => rcgen::KeyUsagePurpose::KeyCertSign,
            KeyUsage::CrlSign => rcgen::KeyUsagePurpose::CrlSign,
        }
    }
}

/// Everything that varies between the end-entity certificates we issue. Leaves are always
/// marked `CA:FALSE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafProfile {
    /// Subject common name (the device serial for device certificates).
    pub common_name: String,
    /// Algorithm of the freshly generated leaf key.
    pub algorithm: KeyAlgorithm,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// Empty means no extendedKeyUsage extension at all.
    pub extended_key_usages: Vec<ExtendedKeyUsage>,
    /// Empty means no keyUsage extension at all.
    pub key_usages: Vec<KeyUsage>,
    /// subjectAltName DNS names.
    pub dns_names: Vec<String>,
    /// subjectAltName IP addresses.
    pub ip_addresses: Vec<IpAddr>,
}

impl LeafProfile {
    /// A RAUC bundle signer that both the default S/MIME-signing purpose check and
    /// `check-purpose=codesign` accept: EKU codeSigning + emailProtection, key usage
    /// digitalSignature only.
    pub fn bundle_signer(common_name: impl Into<String>) -> Self {
        Self::base(
            common_name.into(),
            SIGNER_VALIDITY,
            vec![
                ExtendedKeyUsage::CodeSigning,
                ExtendedKeyUsage::EmailProtection,
            ],
        )
    }

    /// A gateway's mTLS client certificate: CN = serial, ECDSA P-256, EKU clientAuth.
    pub fn device(serial: impl Into<String>) -> Self {
        Self::base(
            serial.into(),
            DEVICE_VALIDITY,
            vec![ExtendedKeyUsage::ClientAuth],
        )
    }

    /// A TLS server certificate. Each name that parses as an IP address becomes an IP SAN, every
    /// other one a DNS SAN; the first name is also the common name.
    pub fn server<S: AsRef<str>>(names: &[S]) -> Self {
        let common_name = names
            .first()
            .map(|n| n.as_ref().to_owned())
            .unwrap_or_default();
        let mut profile = Self::base(
            common_name,
            SERVER_VALIDITY,
            vec![ExtendedKeyUsage::ServerAuth],
        );
        for name in names {
            match name.as_ref().parse::<IpAddr>() {
                Ok(ip) => profile.ip_addresses.push(ip),
                Err(_) => profile.dns_names.push(name.as_ref().to_owned()),
            }
        }
        profile
    }

    fn base(
        common_name: String,
        validity: Duration,
        extended_key_usages: Vec<ExtendedKeyUsage>,
    ) -> Self {
        let now = OffsetDateTime::now_utc();
        LeafProfile {
            common_name,
            algorithm: KeyAlgorithm::EcdsaP256,
            not_before: now - BACKDATE,
            not_after: now + validity,
            extended_key_usages,
            key_usages: vec![KeyUsage::DigitalSignature],
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
        }
    }
}
