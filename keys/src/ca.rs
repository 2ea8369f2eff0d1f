//! Certificate authorities: creating roots and intermediates, loading them back from PEM files
//! and issuing leaf certificates from a [`LeafProfile`].

use std::path::Path;

use der::DecodePem as _;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

use crate::files::{self, Output};
use crate::key;
use crate::profile::BACKDATE;
use crate::{CertParseError, KeyAlgorithm, KeysError, LeafProfile};

/// Organization name in every development certificate, so nobody mistakes one for production.
pub const DEV_ORGANIZATION: &str = "Spark development PKI (not for production)";

/// Validity of development root CAs.
pub const ROOT_VALIDITY: Duration = Duration::days(20 * 365);
/// Validity of the development firmware intermediate CA.
pub const INTERMEDIATE_VALIDITY: Duration = Duration::days(10 * 365);

/// A certificate and its freshly generated private key, both PEM.
#[derive(Clone)]
pub struct IssuedCert {
    pub cert_pem: String,
    /// PKCS#8 PEM, a "PRIVATE KEY" block.
    pub key_pem: String,
}

impl std::fmt::Debug for IssuedCert {
    // Keeps private keys out of logs and test failure output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCert")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

impl IssuedCert {
    /// Writes the certificate (0644) and key (0600); refuses to replace either unless `force`.
    pub fn write(&self, cert: &Path, key: &Path, force: bool) -> Result<(), KeysError> {
        files::write_all(
            &[
                Output::public(cert.to_owned(), self.cert_pem.clone()),
                Output::secret(key.to_owned(), self.key_pem.clone()),
            ],
            force,
        )
    }
}

/// A CA able to issue certificates: its certificate and private key.
pub struct CertificateAuthority {
    /// The certificate exactly as issued (or as read from disk).
    cert_pem: String,
    /// rcgen's view of the CA, used only as the issuer (subject name, key identifier) of what
    /// it signs. For a loaded CA this is rebuilt from the parsed certificate, so its own DER is
    /// not the file's: always hand out `cert_pem`, never `issuer.pem()`.
    issuer: Certificate,
    key: KeyPair,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Creates a self-signed root CA with a fresh key.
    pub fn generate_root(
        common_name: &str,
        algorithm: KeyAlgorithm,
    ) -> Result<CertificateAuthority, KeysError> {
        let key = key::generate(algorithm)?;
        let params = ca_params(common_name, ROOT_VALIDITY, BasicConstraints::Unconstrained);
        let issuer = params
            .self_signed(&key)
            .map_err(|source| KeysError::Issue {
                common_name: common_name.to_owned(),
                source,
            })?;
        Ok(CertificateAuthority {
            cert_pem: issuer.pem(),
            issuer,
            key,
        })
    }

    /// Issues a subordinate CA that may only issue leaves (path length 0).
    pub fn issue_intermediate(
        &self,
        common_name: &str,
        algorithm: KeyAlgorithm,
    ) -> Result<CertificateAuthority, KeysError> {
        let key = key::generate(algorithm)?;
        let mut params = ca_params(
            common_name,
            INTERMEDIATE_VALIDITY,
            BasicConstraints::Constrained(0),
        );
        params.use_authority_key_identifier_extension = true;
        let issuer = params
            .signed_by(&key, &self.issuer, &self.key)
            .map_err(|source| KeysError::Issue {
                common_name: common_name.to_owned(),
                source,
            })?;
        Ok(CertificateAuthority {
            cert_pem: issuer.pem(),
            issuer,
            key,
        })
    }

    /// Loads a CA from its certificate and PKCS#8 key PEM files, checking that the certificate
    /// is a CA and that the key belongs to it.
    pub fn load(cert: &Path, key: &Path) -> Result<CertificateAuthority, KeysError> {
        let cert_pem = files::read(cert)?;
        let key_pem = files::read(key)?;
        let parse_error = |source: CertParseError| KeysError::ParseCertificate {
            path: cert.to_owned(),
            source,
        };
        let params =
            CertificateParams::from_ca_cert_pem(&cert_pem).map_err(|e| parse_error(e.into()))?;
        if !matches!(params.is_ca, IsCa::Ca(_)) {
            return Err(KeysError::NotACa {
                path: cert.to_owned(),
            });
        }
        let key_pair = KeyPair::from_pem(&key_pem).map_err(|source| KeysError::ParseKey {
            path: key.to_owned(),
            source,
        })?;

        // rcgen trusts the caller here; a mismatched key would sign certificates that chain to
        // nothing, which only shows up much later as a confusing verification failure.
        let parsed = x509_cert::Certificate::from_pem(cert_pem.as_bytes())
            .map_err(|e| parse_error(e.into()))?;
        let cert_public_key = parsed
            .tbs_certificate
            .subject_public_key_info
            .subject_public_key
            .raw_bytes();
        if cert_public_key != key_pair.public_key_raw() {
            return Err(KeysError::KeyMismatch {
                cert: cert.to_owned(),
                key: key.to_owned(),
            });
        }

        let common_name = common_name_of(&params.distinguished_name);
        // Re-signing the parsed parameters gives rcgen an issuer object; the subject name and the
        // pre-specified subject key identifier carried over from the file are all it takes from it.
        let issuer = params
            .self_signed(&key_pair)
            .map_err(|source| KeysError::Issue {
                common_name,
                source,
            })?;
        Ok(CertificateAuthority {
            cert_pem,
            issuer,
            key: key_pair,
        })
    }

    /// The CA's certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key, PKCS#8 PEM.
    pub(crate) fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// Writes the CA certificate (0644) and key (0600); refuses to replace either unless `force`.
    pub fn write(&self, cert: &Path, key: &Path, force: bool) -> Result<(), KeysError> {
        files::write_all(&self.outputs(cert, key), force)
    }

    pub(crate) fn outputs(&self, cert: &Path, key: &Path) -> [Output; 2] {
        [
            Output::public(cert.to_owned(), self.cert_pem.clone()),
            Output::secret(key.to_owned(), self.key_pem()),
        ]
    }

    /// Issues a leaf certificate with a fresh key pair as described by `profile`.
    pub fn issue(&self, profile: &LeafProfile) -> Result<IssuedCert, KeysError> {
        if profile.not_after <= profile.not_before {
            return Err(KeysError::InvalidValidity {
                common_name: profile.common_name.clone(),
            });
        }
        let issue_error = |source| KeysError::Issue {
            common_name: profile.common_name.clone(),
            source,
        };
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, profile.common_name.as_str());
        params.not_before = profile.not_before;
        params.not_after = profile.not_after;
        // Explicit CA:FALSE: a leaf that could act as a CA is a leaf nobody should trust.
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = profile.key_usages.iter().map(|&u| u.into()).collect();
        params.extended_key_usages = profile
            .extended_key_usages
            .iter()
            .map(|&u| u.into())
            .collect();
        for name in &profile.dns_names {
            let dns = rcgen::Ia5String::try_from(name.as_str())
                .map_err(|_| KeysError::InvalidServerName { name: name.clone() })?;
            params.subject_alt_names.push(SanType::DnsName(dns));
        }
        params.subject_alt_names.extend(
            profile
                .ip_addresses
                .iter()
                .map(|&ip| SanType::IpAddress(ip)),
        );
        // OpenSSL finds the issuer by name, but the AKI makes the link unambiguous once a CA is
        // rotated and two CAs share a subject name.
        params.use_authority_key_identifier_extension = true;

        let key = key::generate(profile.algorithm)?;
        let cert = params
            .signed_by(&key, &self.issuer, &self.key)
            .map_err(issue_error)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn ca_params(
    common_name: &str,
    validity: Duration,
    constraints: BasicConstraints,
) -> CertificateParams {
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, DEV_ORGANIZATION);
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.not_before = now - BACKDATE;
    params.not_after = now + validity;
    params.is_ca = IsCa::Ca(constraints);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

fn common_name_of(dn: &DistinguishedName) -> String {
    match dn.get(&DnType::CommonName) {
        Some(rcgen::DnValue::Utf8String(s)) => s.clone(),
        Some(rcgen::DnValue::PrintableString(s)) => s.as_str().to_owned(),
        Some(other) => format!("{other:?}"),
        None => String::from("(no common name)"),
    }
}
