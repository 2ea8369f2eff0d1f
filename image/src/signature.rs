//! CMS (PKCS#7) signatures of RAUC bundles: creating them and verifying them against a keyring,
//! the way rauc 1.8 does with OpenSSL's `CMS_verify`.
//!
//! What rauc writes, and so what we write:
//! ```text
//! ContentInfo { signedData:
//!   SignedData v1 {
//!     digestAlgorithms { sha256 }
//!     encapContentInfo { id-data, eContent: manifest (verity) | absent (plain, detached) }
//!     certificates     { signer, intermediates... }
//!     signerInfos { SignerInfo v1 {
//!       sid: issuerAndSerialNumber, digestAlgorithm: sha256,
//!       signedAttrs { contentType id-data, signingTime, messageDigest sha256(content) },
//!       signatureAlgorithm: ecdsa-with-SHA256 | rsaEncryption,
//!       signature over DER(SET OF signedAttrs) } } } }
//! ```
//! Verification checks, in order: the structure, the message digest, the signature, the chain to a
//! keyring certificate (validity at the given time included) and the signer's purpose. RAUC's
//! purposes: OpenSSL's S/MIME-signing purpose by default (EKU, when present, must hold
//! emailProtection; key usage, when present, digitalSignature or nonRepudiation), `codesign`
//! (EKU must hold codeSigning) or `any`.
//!
//! The cryptography is ring (through rustls-webpki for chain building); the ASN.1 structures come
//! from the RustCrypto `cms` and `x509-cert` crates.

use std::path::Path;
use std::time::SystemTime;

use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{
    CertificateSet, EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo, SignerInfos,
};
use const_oid::ObjectIdentifier;
use const_oid::db::{rfc5911, rfc5912};
use der::asn1::{OctetString, SetOfVec};
use der::{Any, Decode, Encode};
use ring::rand::SystemRandom;
use ring::signature::{self as rsig, KeyPair};
use sha2::{Digest, Sha256};
use spki::AlgorithmIdentifierOwned;
use x509_cert::Certificate;
use x509_cert::attr::Attribute;
use x509_cert::ext::pkix::{ExtendedKeyUsage, KeyUsage, KeyUsages};
use x509_cert::time::Time;

use crate::error::SignatureError;

const OID_EKU_CODE_SIGNING: ObjectIdentifier = rfc5912::ID_KP_CODE_SIGNING;
const OID_EKU_EMAIL_PROTECTION: ObjectIdentifier = rfc5912::ID_KP_EMAIL_PROTECTION;
const OID_EKU_ANY: ObjectIdentifier = rfc5912::ANY_EXTENDED_KEY_USAGE;

/// Which signer purpose the keyring check enforces (rauc's `[keyring] check-purpose`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Purpose {
    /// OpenSSL's S/MIME signing purpose, rauc's default.
    #[default]
    SmimeSign,
    /// rauc's `check-purpose=codesign`.
    CodeSign,
    /// `check-purpose=any`: no purpose check.
    Any,
}

impl Purpose {
    /// The name rauc uses for this purpose.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SmimeSign => "smimesign",
            Self::CodeSign => "codesign",
            Self::Any => "any",
        }
    }
}

impl std::str::FromStr for Purpose {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "smimesign" | "default" => Ok(Self::SmimeSign),
            "codesign" => Ok(Self::CodeSign),
            "any" => Ok(Self::Any),
            other => Err(format!(
                "unknown purpose '{other}': use smimesign, codesign or any"
            )),
        }
    }
}

/// How a signature is checked.
#[derive(Clone, Debug)]
pub struct VerifyOptions {
    /// Signer purpose to enforce.
    pub purpose: Purpose,
    /// Accept a non-self-signed keyring certificate (an intermediate) as trust anchor.
    pub allow_partial_chain: bool,
    /// Time at which certificates must be valid (now, like rauc, unless set).
    pub time: Option<SystemTime>,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self {
            purpose: Purpose::SmimeSign,
            allow_partial_chain: false,
            time: None,
        }
    }
}

/// The trusted certificates (rauc's `[keyring] path`).
pub struct Keyring {
    certs: Vec<Vec<u8>>,
}

impl Keyring {
    /// Loads every certificate of a PEM file.
    pub fn load(path: &Path) -> Result<Self, SignatureError> {
        let certs = load_certs(path)?;
        if certs.is_empty() {
            return Err(SignatureError::EmptyKeyring {
                path: path.to_owned(),
            });
        }
        Ok(Self {
            certs: certs
                .iter()
                .map(|c| c.to_der().expect("parsed certificates re-encode"))
                .collect(),
        })
    }
}

fn load_certs(path: &Path) -> Result<Vec<Certificate>, SignatureError> {
    let err = |reason: String| SignatureError::Cert {
        path: path.to_owned(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    if bytes.first() == Some(&0x30) {
        return Ok(vec![
            Certificate::from_der(&bytes).map_err(|e| err(e.to_string()))?,
        ]);
    }
    Certificate::load_pem_chain(&bytes).map_err(|e| err(format!("not a PEM certificate: {e}")))
}

enum SigningKey {
    Ecdsa(rsig::EcdsaKeyPair),
    Rsa(rsig::RsaKeyPair),
}

/// A signing certificate, its private key and the intermediates to embed.
pub struct Signer {
    /// Signer certificate first, then intermediates.
    chain: Vec<Certificate>,
    key: SigningKey,
    rng: SystemRandom,
}

/// SEC1 `ECPrivateKey` (OpenSSL's "EC PRIVATE KEY"), parsed only to take the private scalar.
#[derive(der::Sequence)]
struct EcPrivateKey<'a> {
    version: u8,
    private_key: der::asn1::OctetStringRef<'a>,
    #[asn1(context_specific = "0", optional = "true")]
    parameters: Option<ObjectIdentifier>,
    #[asn1(context_specific = "1", optional = "true")]
    public_key: Option<der::asn1::BitStringRef<'a>>,
}

impl Signer {
    /// Loads `--cert`, `--key` and any `--intermediate` files (PEM). Keys may be PKCS#8, SEC1
    /// (ECDSA P-256) or PKCS#1 (RSA).
    pub fn load(cert: &Path, key: &Path, intermediates: &[&Path]) -> Result<Self, SignatureError> {
        let mut chain = load_certs(cert)?;
        if chain.is_empty() {
            return Err(SignatureError::Cert {
                path: cert.to_owned(),
                reason: "no certificate in file".into(),
            });
        }
        // A cert file may itself carry the chain; keep only the leaf from it and the explicit
        // intermediates, in the order rauc embeds them.
        chain.truncate(1);
        for path in intermediates {
            chain.extend(load_certs(path)?);
        }
        let key = load_key(key, &chain[0])?;
        Ok(Self {
            chain,
            key,
            rng: SystemRandom::new(),
        })
    }

    /// The signer certificate's subject.
    pub fn subject(&self) -> String {
        self.chain[0].tbs_certificate.subject.to_string()
    }

    /// Signs a detached SHA-256 digest (plain bundles: the digest of the squashfs).
    pub fn sign_detached(&self, digest: &[u8; 32]) -> Result<Vec<u8>, SignatureError> {
        self.sign(digest, None)
    }

    /// Signs and encapsulates `content` (verity bundles: the manifest).
    pub fn sign_encapsulated(&self, content: &[u8]) -> Result<Vec<u8>, SignatureError> {
        let digest: [u8; 32] = Sha256::digest(content).into();
        self.sign(&digest, Some(content))
    }

    fn sign(&self, digest: &[u8; 32], content: Option<&[u8]>) -> Result<Vec<u8>, SignatureError> {
        let enc = |e: der::Error| SignatureError::Sign(e.to_string());
        let now = SystemTime::now();
        let signing_time = der::asn1::UtcTime::from_system_time(now)
            .map(Time::UtcTime)
            .or_else(|_| der::asn1::GeneralizedTime::from_system_time(now).map(Time::GeneralTime))
            .map_err(enc)?;
        let attrs = SetOfVec::try_from(vec![
            attribute(
                rfc5911::ID_CONTENT_TYPE,
                Any::encode_from(&rfc5911::ID_DATA).map_err(enc)?,
            )?,
            attribute(
                rfc5911::ID_SIGNING_TIME,
                Any::encode_from(&signing_time).map_err(enc)?,
            )?,
            attribute(
                rfc5911::ID_MESSAGE_DIGEST,
                Any::encode_from(&OctetString::new(digest.to_vec()).map_err(enc)?).map_err(enc)?,
            )?,
        ])
        .map_err(enc)?;
        // The signature covers the attributes encoded as a SET (tag 0x31), not as the [0] field.
        let to_sign = attrs.to_der().map_err(enc)?;
        let (signature, signature_algorithm) = match &self.key {
            SigningKey::Ecdsa(k) => (
                k.sign(&self.rng, &to_sign)
                    .map_err(|_| SignatureError::Sign("ECDSA signing failed".into()))?
                    .as_ref()
                    .to_vec(),
                alg(rfc5912::ECDSA_WITH_SHA_256, None),
            ),
            SigningKey::Rsa(k) => {
                let mut sig = vec![0u8; k.public().modulus_len()];
                k.sign(&rsig::RSA_PKCS1_SHA256, &self.rng, &to_sign, &mut sig)
                    .map_err(|_| SignatureError::Sign("RSA signing failed".into()))?;
                (
                    sig,
                    alg(rfc5912::RSA_ENCRYPTION, Some(der::asn1::Null.into())),
                )
            }
        };
        let signer = &self.chain[0].tbs_certificate;
        let signer_info = SignerInfo {
            version: CmsVersion::V1,
            sid: SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
                issuer: signer.issuer.clone(),
                serial_number: signer.serial_number.clone(),
            }),
            digest_alg: alg(rfc5912::ID_SHA_256, None),
            signed_attrs: Some(attrs),
            signature_algorithm,
            signature: OctetString::new(signature).map_err(enc)?,
            unsigned_attrs: None,
        };
        let certs = self
            .chain
            .iter()
            .map(|c| CertificateChoices::Certificate(c.clone()))
            .collect::<Vec<_>>();
        let econtent = content
            .map(|c| Any::encode_from(&OctetString::new(c.to_vec()).map_err(enc)?).map_err(enc))
            .transpose()?;
        let signed = SignedData {
            version: CmsVersion::V1,
            digest_algorithms: SetOfVec::try_from(vec![alg(rfc5912::ID_SHA_256, None)])
                .map_err(enc)?,
            encap_content_info: EncapsulatedContentInfo {
                econtent_type: rfc5911::ID_DATA,
                econtent,
            },
            certificates: Some(CertificateSet(SetOfVec::try_from(certs).map_err(enc)?)),
            crls: None,
            signer_infos: SignerInfos(SetOfVec::try_from(vec![signer_info]).map_err(enc)?),
        };
        ContentInfo {
            content_type: rfc5911::ID_SIGNED_DATA,
            content: Any::encode_from(&signed).map_err(enc)?,
        }
        .to_der()
        .map_err(enc)
    }
}

fn alg(oid: ObjectIdentifier, parameters: Option<Any>) -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned { oid, parameters }
}

fn attribute(oid: ObjectIdentifier, value: Any) -> Result<Attribute, SignatureError> {
    Ok(Attribute {
        oid,
        values: SetOfVec::try_from(vec![value]).map_err(|e| SignatureError::Sign(e.to_string()))?,
    })
}

fn load_key(path: &Path, cert: &Certificate) -> Result<SigningKey, SignatureError> {
    let err = |reason: &str| SignatureError::Key {
        path: path.to_owned(),
        reason: reason.to_string(),
    };
    let text = std::fs::read(path).map_err(|e| err(&e.to_string()))?;
    let (label, der) = der::pem::decode_vec(&text).map_err(|_| err("not a PEM private key"))?;
    let cert_public = cert
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes();
    let rng = SystemRandom::new();
    let key = match label {
        "PRIVATE KEY" => {
            if let Ok(k) =
                rsig::EcdsaKeyPair::from_pkcs8(&rsig::ECDSA_P256_SHA256_ASN1_SIGNING, &der, &rng)
            {
                SigningKey::Ecdsa(k)
            } else if let Ok(k) = rsig::RsaKeyPair::from_pkcs8(&der) {
                SigningKey::Rsa(k)
            } else {
                return Err(err(
                    "PKCS#8 key is neither ECDSA P-256 nor RSA (2048+ bits)",
                ));
            }
        }
        "EC PRIVATE KEY" => {
            let sec1 = EcPrivateKey::from_der(&der).map_err(|_| err("malformed SEC1 EC key"))?;
            // The public point comes from the certificate: a key that does not match it is
            // rejected by ring's consistency check below.
            SigningKey::Ecdsa(
                rsig::EcdsaKeyPair::from_private_key_and_public_key(
                    &rsig::ECDSA_P256_SHA256_ASN1_SIGNING,
                    sec1.private_key.as_bytes(),
                    cert_public,
                    &rng,
                )
                .map_err(|_| SignatureError::KeyMismatch)?,
            )
        }
        "RSA PRIVATE KEY" => SigningKey::Rsa(
            rsig::RsaKeyPair::from_der(&der).map_err(|_| err("malformed PKCS#1 RSA key"))?,
        ),
        "ENCRYPTED PRIVATE KEY" => {
            return Err(err(
                "encrypted keys are not supported: decrypt it first or use an HSM",
            ));
        }
        _ => return Err(err("unknown PEM label: expected a private key")),
    };
    let public = match &key {
        SigningKey::Ecdsa(k) => k.public_key().as_ref(),
        SigningKey::Rsa(k) => k.public().as_ref(),
    };
    if public != cert_public {
        return Err(SignatureError::KeyMismatch);
    }
    Ok(key)
}

/// What a signature says about itself, before or after verification.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SignatureInfo {
    /// Subject of the signer certificate.
    pub signer: String,
    /// Issuer of the signer certificate.
    pub issuer: String,
    /// Subjects of every embedded certificate, signer first.
    pub certificates: Vec<String>,
    /// The signingTime attribute, if any (RFC 3339).
    pub signing_time: Option<String>,
    /// Whether the content is encapsulated (verity) or detached (plain).
    pub encapsulated: bool,
}

/// A parsed CMS signature.
pub struct Cms {
    signed: SignedData,
    signer_index: usize,
    certs: Vec<Certificate>,
}

impl Cms {
    /// Parses the DER signature of a bundle.
    pub fn parse(der_bytes: &[u8]) -> Result<Self, SignatureError> {
        let bad = |e: der::Error| SignatureError::Malformed(e.to_string());
        let ci = ContentInfo::from_der(der_bytes).map_err(bad)?;
        if ci.content_type != rfc5911::ID_SIGNED_DATA {
            return Err(SignatureError::Malformed(format!(
                "content type {} is not signedData",
                ci.content_type
            )));
        }
        let signed: SignedData = ci.content.decode_as().map_err(bad)?;
        let n = signed.signer_infos.0.len();
        if n != 1 {
            return Err(SignatureError::SignerCount(n));
        }
        let certs: Vec<Certificate> = signed
            .certificates
            .iter()
            .flat_map(|set| set.0.iter())
            .filter_map(|c| match c {
                CertificateChoices::Certificate(c) => Some(c.clone()),
                _ => None,
            })
            .collect();
        let info = signed
            .signer_infos
            .0
            .get(0)
            .expect("exactly one signer checked above");
        let signer_index = certs
            .iter()
            .position(|c| match &info.sid {
                SignerIdentifier::IssuerAndSerialNumber(ias) => {
                    c.tbs_certificate.issuer == ias.issuer
                        && c.tbs_certificate.serial_number == ias.serial_number
                }
                SignerIdentifier::SubjectKeyIdentifier(ski) => {
                    subject_key_id(c).is_some_and(|id| id == ski.0.as_bytes())
                }
            })
            .ok_or(SignatureError::SignerCertMissing)?;
        Ok(Self {
            signed,
            signer_index,
            certs,
        })
    }

    fn signer_info(&self) -> &SignerInfo {
        self.signed
            .signer_infos
            .0
            .get(0)
            .expect("parse checked one signer")
    }

    /// The encapsulated content (the signed manifest of a verity bundle).
    pub fn content(&self) -> Result<Option<Vec<u8>>, SignatureError> {
        self.signed
            .encap_content_info
            .econtent
            .as_ref()
            .map(|any| {
                any.decode_as::<OctetString>()
                    .map(OctetString::into_bytes)
                    .map_err(|e| SignatureError::Malformed(e.to_string()))
            })
            .transpose()
    }

    /// What the signature says about itself (nothing here is verified).
    pub fn info(&self) -> SignatureInfo {
        let signer = &self.certs[self.signer_index].tbs_certificate;
        let mut certificates = vec![signer.subject.to_string()];
        certificates.extend(
            self.certs
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != self.signer_index)
                .map(|(_, c)| c.tbs_certificate.subject.to_string()),
        );
        SignatureInfo {
            signer: signer.subject.to_string(),
            issuer: signer.issuer.to_string(),
            certificates,
            signing_time: self.signed_attr(rfc5911::ID_SIGNING_TIME).and_then(|a| {
                let t = Time::from_der(&a.to_der().ok()?).ok()?;
                Some(rfc3339(t.to_system_time()))
            }),
            encapsulated: self.signed.encap_content_info.econtent.is_some(),
        }
    }

    fn signed_attr(&self, oid: ObjectIdentifier) -> Option<&Any> {
        self.signer_info()
            .signed_attrs
            .as_ref()?
            .iter()
            .find(|a| a.oid == oid)?
            .values
            .get(0)
    }

    /// Verifies the signature over `digest` (detached content) or over the encapsulated
    /// content, then the signer's chain to `keyring` and its purpose.
    pub fn verify(
        &self,
        detached_digest: Option<&[u8; 32]>,
        keyring: &Keyring,
        opts: &VerifyOptions,
    ) -> Result<SignatureInfo, SignatureError> {
        let si = self.signer_info();
        if si.digest_alg.oid != rfc5912::ID_SHA_256 {
            return Err(SignatureError::UnsupportedAlgorithm(format!(
                "digest {}",
                si.digest_alg.oid
            )));
        }
        let content = self.content()?;
        let digest: [u8; 32] = match (detached_digest, &content) {
            (Some(_), Some(_)) => return Err(SignatureError::UnexpectedContent),
            (Some(d), None) => *d,
            (None, Some(c)) => Sha256::digest(c).into(),
            (None, None) => return Err(SignatureError::ContentMissing("verity")),
        };
        let attrs = si.signed_attrs.as_ref().ok_or_else(|| {
            SignatureError::Malformed(
                "signer has no signed attributes (rauc always adds them)".into(),
            )
        })?;
        let content_type: ObjectIdentifier = self
            .signed_attr(rfc5911::ID_CONTENT_TYPE)
            .ok_or_else(|| SignatureError::Malformed("no contentType attribute".into()))?
            .decode_as()
            .map_err(|e| SignatureError::Malformed(e.to_string()))?;
        if content_type != self.signed.encap_content_info.econtent_type {
            return Err(SignatureError::Malformed(
                "contentType attribute differs from the encapsulated content type".into(),
            ));
        }
        let md: OctetString = self
            .signed_attr(rfc5911::ID_MESSAGE_DIGEST)
            .ok_or_else(|| SignatureError::Malformed("no messageDigest attribute".into()))?
            .decode_as()
            .map_err(|e| SignatureError::Malformed(e.to_string()))?;
        if md.as_bytes() != digest {
            return Err(SignatureError::DigestMismatch);
        }

        let signer_cert = &self.certs[self.signer_index];
        let signer_der = signer_cert
            .to_der()
            .map_err(|e| SignatureError::Malformed(e.to_string()))?;
        let subject = signer_cert.tbs_certificate.subject.to_string();
        let signer_der = rustls_pki_types::CertificateDer::from(signer_der.as_slice());
        let ee = webpki::EndEntityCert::try_from(&signer_der).map_err(|e| {
            SignatureError::Untrusted {
                subject: subject.clone(),
                reason: format!("signer certificate rejected: {e:?}"),
            }
        })?;
        let spki = &signer_cert.tbs_certificate.subject_public_key_info;
        let verify_alg = if spki.algorithm.oid == rfc5912::RSA_ENCRYPTION {
            webpki::ring::RSA_PKCS1_2048_8192_SHA256
        } else if spki.algorithm.oid == rfc5912::ID_EC_PUBLIC_KEY {
            let curve: Option<ObjectIdentifier> = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.decode_as().ok());
            match curve {
                Some(c) if c == rfc5912::SECP_256_R_1 => webpki::ring::ECDSA_P256_SHA256,
                Some(c) if c == rfc5912::SECP_384_R_1 => webpki::ring::ECDSA_P384_SHA256,
                other => {
                    return Err(SignatureError::UnsupportedAlgorithm(format!(
                        "EC curve {other:?}"
                    )));
                }
            }
        } else {
            return Err(SignatureError::UnsupportedAlgorithm(format!(
                "signer key type {}",
                spki.algorithm.oid
            )));
        };
        let signed_bytes = attrs
            .to_der()
            .map_err(|e| SignatureError::Malformed(e.to_string()))?;
        ee.verify_signature(verify_alg, &signed_bytes, si.signature.as_bytes())
            .map_err(|_| SignatureError::BadSignature)?;

        self.verify_chain(&ee, &subject, keyring, opts)?;
        check_purpose(signer_cert, &subject, opts.purpose)?;
        Ok(self.info())
    }

    fn verify_chain(
        &self,
        ee: &webpki::EndEntityCert<'_>,
        subject: &str,
        keyring: &Keyring,
        opts: &VerifyOptions,
    ) -> Result<(), SignatureError> {
        let untrusted = |reason: String| SignatureError::Untrusted {
            subject: subject.to_string(),
            reason,
        };
        let anchor_ders: Vec<rustls_pki_types::CertificateDer<'_>> = keyring
            .certs
            .iter()
            // Without allow-partial-chain OpenSSL only trusts self-issued roots.
            .filter(|der| opts.allow_partial_chain || is_self_issued(der))
            .map(|der| rustls_pki_types::CertificateDer::from(der.as_slice()))
            .collect();
        let anchors = anchor_ders
            .iter()
            .filter_map(|c| webpki::anchor_from_trusted_cert(c).ok())
            .collect::<Vec<_>>();
        if anchors.is_empty() {
            return Err(untrusted(
                "the keyring has no usable root certificate (an intermediate needs allow-partial-chain)".into(),
            ));
        }
        let intermediates_der: Vec<Vec<u8>> = self
            .certs
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != self.signer_index)
            .filter_map(|(_, c)| c.to_der().ok())
            .collect();
        let intermediates: Vec<rustls_pki_types::CertificateDer<'_>> = intermediates_der
            .iter()
            .map(|d| rustls_pki_types::CertificateDer::from(d.as_slice()))
            .collect();
        let now = opts.time.unwrap_or_else(SystemTime::now);
        let unix = rustls_pki_types::UnixTime::since_unix_epoch(
            now.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default(),
        );
        let algs = [
            webpki::ring::ECDSA_P256_SHA256,
            webpki::ring::ECDSA_P256_SHA384,
            webpki::ring::ECDSA_P384_SHA256,
            webpki::ring::ECDSA_P384_SHA384,
            webpki::ring::RSA_PKCS1_2048_8192_SHA256,
            webpki::ring::RSA_PKCS1_2048_8192_SHA384,
            webpki::ring::RSA_PKCS1_2048_8192_SHA512,
            webpki::ring::ED25519,
        ];
        ee.verify_for_usage(&algs, &anchors, &intermediates, unix, AnyEku, None, None)
            .map(|_| ())
            .map_err(|e| match e {
                webpki::Error::CertExpired { .. } | webpki::Error::CertNotValidYet { .. } => {
                    SignatureError::Expired {
                        subject: subject.to_string(),
                        not_after: self.certs[self.signer_index]
                            .tbs_certificate
                            .validity
                            .not_after
                            .to_string(),
                    }
                }
                webpki::Error::UnknownIssuer => {
                    untrusted("no path to a keyring certificate".into())
                }
                other => untrusted(format!("{other:?}")),
            })
    }
}

/// EKU is checked by [`check_purpose`] on the signer only, as rauc does; webpki would apply one
/// EKU rule to every certificate of the chain.
struct AnyEku;

impl webpki::ExtendedKeyUsageValidator for AnyEku {
    fn validate(&self, iter: webpki::KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        for id in iter {
            id?;
        }
        Ok(())
    }
}

fn is_self_issued(der_bytes: &[u8]) -> bool {
    Certificate::from_der(der_bytes)
        .is_ok_and(|c| c.tbs_certificate.issuer == c.tbs_certificate.subject)
}

fn subject_key_id(c: &Certificate) -> Option<Vec<u8>> {
    let ext = c
        .tbs_certificate
        .extensions
        .as_ref()?
        .iter()
        .find(|e| e.extn_id == rfc5912::ID_CE_SUBJECT_KEY_IDENTIFIER)?;
    let ski =
        x509_cert::ext::pkix::SubjectKeyIdentifier::from_der(ext.extn_value.as_bytes()).ok()?;
    Some(ski.0.as_bytes().to_vec())
}

fn check_purpose(
    cert: &Certificate,
    subject: &str,
    purpose: Purpose,
) -> Result<(), SignatureError> {
    let wrong = |reason: &str| SignatureError::WrongPurpose {
        subject: subject.to_string(),
        purpose: purpose.as_str(),
        reason: reason.to_string(),
    };
    if purpose == Purpose::Any {
        return Ok(());
    }
    let mut eku: Option<Vec<ObjectIdentifier>> = None;
    let mut ku = None;
    for ext in cert.tbs_certificate.extensions.iter().flatten() {
        if ext.extn_id == rfc5912::ID_CE_EXT_KEY_USAGE {
            let v = ExtendedKeyUsage::from_der(ext.extn_value.as_bytes())
                .map_err(|_| wrong("malformed extended key usage"))?;
            eku = Some(v.0);
        } else if ext.extn_id == rfc5912::ID_CE_KEY_USAGE {
            let v = KeyUsage::from_der(ext.extn_value.as_bytes())
                .map_err(|_| wrong("malformed key usage"))?;
            ku = Some(v);
        }
    }
    match purpose {
        Purpose::SmimeSign => {
            if let Some(eku) = &eku
                && !eku.contains(&OID_EKU_EMAIL_PROTECTION)
                && !eku.contains(&OID_EKU_ANY)
            {
                return Err(wrong(
                    "its extended key usage lacks emailProtection (a codeSigning-only signer needs check-purpose=codesign)",
                ));
            }
            if let Some(ku) = ku
                && !ku.0.contains(KeyUsages::DigitalSignature)
                && !ku.0.contains(KeyUsages::NonRepudiation)
            {
                return Err(wrong(
                    "its key usage allows neither digitalSignature nor nonRepudiation",
                ));
            }
        }
        Purpose::CodeSign => {
            if !eku
                .as_ref()
                .is_some_and(|e| e.contains(&OID_EKU_CODE_SIGNING))
            {
                return Err(wrong("its extended key usage lacks codeSigning"));
            }
            if let Some(ku) = ku
                && !ku.0.contains(KeyUsages::DigitalSignature)
            {
                return Err(wrong("its key usage lacks digitalSignature"));
            }
        }
        Purpose::Any => {}
    }
    Ok(())
}

/// Formats a time as RFC 3339 UTC (`2026-11-25T23:43:20Z`).
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    der::DateTime::from_unix_duration(std::time::Duration::from_secs(secs.max(0) as u64))
        .map(|d| {
            format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
                d.year(),
                d.month(),
                d.day(),
                d.hour(),
                d.minutes(),
                d.seconds()
            )
        })
        .unwrap_or_else(|_| secs.to_string())
}
