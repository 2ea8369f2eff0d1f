//! A device key held in a PKCS#11 token: the gateway's secure element in the field, SoftHSM2 in
//! tests. The private key never leaves the token; rustls asks [`Pkcs11Key`] for a signature
//! during the TLS handshake, and the token computes it.
//!
//! Only ECDSA P-256 is supported, the device key algorithm of DESIGN.md. The message is hashed
//! here with SHA-256 and the token signs the digest with `CKM_ECDSA` (secure elements implement
//! the raw mechanism; few offer `CKM_ECDSA_SHA256`, and hashing a handshake transcript on the
//! host costs nothing). PKCS#11 returns the signature as raw `r ‖ s`; TLS wants the DER
//! `ECDSA-Sig-Value`, so it is converted ([`raw_to_der`]).
//!
//! Use it with [`crate::client_config_with_key`]:
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::path::Path;
//! use std::sync::Arc;
//! let key = spark_tls::pkcs11::Pkcs11Key::open(&spark_tls::pkcs11::Pkcs11KeyConfig {
//!     module: Path::new("/usr/lib/softhsm/libsofthsm2.so"),
//!     token_label: "spark",
//!     key_label: "device",
//!     pin: spark_tls::pkcs11::read_pin_file(Path::new("/data/spark/pkcs11.pin"))?,
//! })?;
//! let config = spark_tls::client_config_with_key(
//!     Path::new("/etc/spark/server-ca.cert.pem"),
//!     Path::new("/data/spark/device.cert.pem"),
//!     Arc::new(key),
//! )?;
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cryptoki::context::{CInitializeArgs, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use rustls::sign::{Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};

/// DER of the named-curve OID prime256v1 (1.2.840.10045.3.1.7), as `CKA_EC_PARAMS` holds it.
const P256_EC_PARAMS: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// Where the key is and how to log in.
#[derive(Clone)]
pub struct Pkcs11KeyConfig<'a> {
    /// The token's PKCS#11 module (shared library).
    pub module: &'a Path,
    /// Label of the token (`CK_TOKEN_INFO.label`, without the padding spaces).
    pub token_label: &'a str,
    /// `CKA_LABEL` of the private key object.
    pub key_label: &'a str,
    /// The user PIN.
    pub pin: String,
}

impl std::fmt::Debug for Pkcs11KeyConfig<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11KeyConfig")
            .field("module", &self.module)
            .field("token_label", &self.token_label)
            .field("key_label", &self.key_label)
            .finish_non_exhaustive()
    }
}

/// Why the token key could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum Pkcs11Error {
    #[error(
        "cannot load PKCS#11 module {}: {source}; check pkcs11.module in the config",
        path.display()
    )]
    Module { path: PathBuf, source: CkError },
    #[error("PKCS#11 {op}: {source}")]
    Token { op: &'static str, source: CkError },
    #[error(
        "no PKCS#11 token labelled {label:?} (tokens present: {present}); check pkcs11.token-label or initialise the token"
    )]
    NoToken { label: String, present: String },
    #[error(
        "token {token:?} has no private key labelled {label:?}; check pkcs11.key-label or import the device key"
    )]
    NoKey { token: String, label: String },
    #[error("token {token:?} holds {count} private keys labelled {label:?}; labels must be unique")]
    AmbiguousKey {
        token: String,
        label: String,
        count: usize,
    },
    #[error("key {label:?} is not an ECDSA P-256 key; the device key must be P-256")]
    WrongKeyType { label: String },
    #[error("cannot read the PIN file {}: {source}", path.display())]
    PinFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the PIN file {} is empty", path.display())]
    EmptyPin { path: PathBuf },
}

fn token_err(op: &'static str) -> impl FnOnce(CkError) -> Pkcs11Error {
    move |source| Pkcs11Error::Token { op, source }
}

/// Reads a PIN from a file (first line; surrounding whitespace ignored).
pub fn read_pin_file(path: &Path) -> Result<String, Pkcs11Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Pkcs11Error::PinFile {
        path: path.to_owned(),
        source,
    })?;
    let pin = text.lines().next().unwrap_or("").trim().to_owned();
    if pin.is_empty() {
        return Err(Pkcs11Error::EmptyPin {
            path: path.to_owned(),
        });
    }
    Ok(pin)
}

/// An ECDSA P-256 private key in a PKCS#11 token, usable as a rustls [`SigningKey`].
///
/// One logged-in session is kept open and reused; if the token drops it (a secure element
/// reset, a session limit), the next signature opens and logs in a new one.
#[derive(Debug, Clone)]
pub struct Pkcs11Key {
    inner: Arc<Inner>,
}

struct Inner {
    ctx: Pkcs11,
    slot: Slot,
    token_label: String,
    key_label: String,
    pin: AuthPin,
    // A PKCS#11 session is Send but not Sync: one signature at a time.
    session: Mutex<Option<(Session, ObjectHandle)>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Key")
            .field("token", &self.token_label)
            .field("key", &self.key_label)
            .finish_non_exhaustive()
    }
}

impl Pkcs11Key {
    /// Loads the module, finds the token and the key, logs in and checks the key is P-256.
    pub fn open(config: &Pkcs11KeyConfig<'_>) -> Result<Pkcs11Key, Pkcs11Error> {
        let ctx = Pkcs11::new(config.module).map_err(|source| Pkcs11Error::Module {
            path: config.module.to_owned(),
            source,
        })?;
        match ctx.initialize(CInitializeArgs::OsThreads) {
            // Another user in this process initialised the module already: fine, it is shared.
            Ok(()) | Err(CkError::AlreadyInitialized) => {}
            Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => return Err(token_err("C_Initialize")(e)),
        }
        let slots = ctx
            .get_slots_with_token()
            .map_err(token_err("C_GetSlotList"))?;
        let mut present = Vec::new();
        let mut found = None;
        for slot in slots {
            let info = ctx
                .get_token_info(slot)
                .map_err(token_err("C_GetTokenInfo"))?;
            let label = info.label().trim_end().to_owned();
            if label == config.token_label {
                found = Some(slot);
                break;
            }
            present.push(format!("{label:?}"));
        }
        let slot = found.ok_or_else(|| Pkcs11Error::NoToken {
            label: config.token_label.to_owned(),
            present: if present.is_empty() {
                "none".into()
            } else {
                present.join(", ")
            },
        })?;
        let inner = Inner {
            ctx,
            slot,
            token_label: config.token_label.to_owned(),
            key_label: config.key_label.to_owned(),
            pin: AuthPin::new(config.pin.clone()),
            session: Mutex::new(None),
        };
        let opened = inner.open_session()?;
        *inner.session.lock().unwrap_or_else(|p| p.into_inner()) = Some(opened);
        Ok(Pkcs11Key {
            inner: Arc::new(inner),
        })
    }
}

impl Inner {
    /// A new logged-in session and the key's handle in it.
    fn open_session(&self) -> Result<(Session, ObjectHandle), Pkcs11Error> {
        let session = self
            .ctx
            .open_ro_session(self.slot)
            .map_err(token_err("C_OpenSession"))?;
        match session.login(UserType::User, Some(&self.pin)) {
            // Login is per application and token: a second session is already logged in.
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(e) => return Err(token_err("C_Login")(e)),
        }
        let handles = session
            .find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Label(self.key_label.as_bytes().to_vec()),
            ])
            .map_err(token_err("C_FindObjects"))?;
        let key = match handles.as_slice() {
            [] => {
                return Err(Pkcs11Error::NoKey {
                    token: self.token_label.clone(),
                    label: self.key_label.clone(),
                });
            }
            [one] => *one,
            more => {
                return Err(Pkcs11Error::AmbiguousKey {
                    token: self.token_label.clone(),
                    label: self.key_label.clone(),
                    count: more.len(),
                });
            }
        };
        let attrs = session
            .get_attributes(key, &[AttributeType::KeyType, AttributeType::EcParams])
            .map_err(token_err("C_GetAttributeValue"))?;
        let is_ec = attrs
            .iter()
            .any(|a| matches!(a, Attribute::KeyType(t) if *t == KeyType::EC));
        let is_p256 = attrs
            .iter()
            .any(|a| matches!(a, Attribute::EcParams(p) if p.as_slice() == P256_EC_PARAMS));
        if !(is_ec && is_p256) {
            return Err(Pkcs11Error::WrongKeyType {
                label: self.key_label.clone(),
            });
        }
        Ok((session, key))
    }

    /// Signs a SHA-256 digest with CKM_ECDSA; returns raw `r ‖ s`. Retries once on a new session
    /// when the token lost the old one.
    fn sign_digest(&self, digest: &[u8]) -> Result<Vec<u8>, Pkcs11Error> {
        let mut guard = self.session.lock().unwrap_or_else(|p| p.into_inner());
        for attempt in 0..2 {
            if guard.is_none() {
                *guard = Some(self.open_session()?);
            }
            let (session, key) = guard.as_ref().expect("session opened just above");
            match session.sign(&Mechanism::Ecdsa, *key, digest) {
                Ok(sig) => return Ok(sig),
                // The retry is silent (spark-tls does not log); a second failure is returned.
                Err(e) if attempt == 0 && session_lost(&e) => *guard = None,
                Err(e) => return Err(token_err("C_Sign")(e)),
            }
        }
        unreachable!("the second attempt returns")
    }
}

/// Errors after which a fresh session may succeed.
fn session_lost(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::UserNotLoggedIn
                | RvError::KeyHandleInvalid
                | RvError::DeviceRemoved
                | RvError::TokenNotPresent,
            _
        )
    )
}

impl SigningKey for Pkcs11Key {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        offered
            .contains(&SignatureScheme::ECDSA_NISTP256_SHA256)
            .then(|| Box::new(Pkcs11Signer(self.inner.clone())) as Box<dyn Signer>)
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::ECDSA
    }
}

#[derive(Debug)]
struct Pkcs11Signer(Arc<Inner>);

impl Signer for Pkcs11Signer {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        let digest = sha256(message);
        let raw = self
            .0
            .sign_digest(&digest)
            .map_err(|e| rustls::Error::General(format!("PKCS#11 signature failed: {e}")))?;
        raw_to_der(&raw).ok_or_else(|| {
            rustls::Error::General(format!(
                "PKCS#11 token returned a {}-byte ECDSA signature; P-256 needs 64",
                raw.len()
            ))
        })
    }

    fn scheme(&self) -> SignatureScheme {
        SignatureScheme::ECDSA_NISTP256_SHA256
    }
}

/// SHA-256 through the ring provider rustls already carries (no second hash implementation).
fn sha256(message: &[u8]) -> Vec<u8> {
    let suite = rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256;
    // A TLS 1.3 suite by definition; its hash is SHA-256.
    let hash = suite
        .tls13()
        .expect("TLS13_AES_128_GCM_SHA256 is a TLS 1.3 suite")
        .common
        .hash_provider;
    hash.hash(message).as_ref().to_vec()
}

/// Converts a raw P-256 ECDSA signature `r ‖ s` (32 + 32 bytes, big-endian) to the DER
/// `ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }` TLS carries. `None` if the input is
/// not 64 bytes or r or s is zero.
pub fn raw_to_der(raw: &[u8]) -> Option<Vec<u8>> {
    if raw.len() != 64 {
        return None;
    }
    let (r, s) = raw.split_at(32);
    let (r, s) = (der_uint(r)?, der_uint(s)?);
    // Each INTEGER is at most 2 + 33 bytes, so the SEQUENCE length fits the short form.
    let mut out = Vec::with_capacity(2 + r.len() + s.len());
    out.push(0x30);
    out.push((r.len() + s.len()) as u8);
    out.extend_from_slice(&r);
    out.extend_from_slice(&s);
    Some(out)
}

/// A positive DER INTEGER: minimal big-endian bytes, with a 0x00 in front when the top bit is set.
fn der_uint(bytes: &[u8]) -> Option<Vec<u8>> {
    let start = bytes.iter().position(|b| *b != 0)?;
    let v = &bytes[start..];
    let pad = v[0] & 0x80 != 0;
    let len = v.len() + usize::from(pad);
    let mut out = Vec::with_capacity(2 + len);
    out.push(0x02);
    out.push(len as u8);
    if pad {
        out.push(0);
    }
    out.extend_from_slice(v);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_of_raw_signatures() {
        // r with the top bit set gets a 0x00; s with leading zeros is shortened.
        let mut raw = [0u8; 64];
        raw[0] = 0x80;
        raw[31] = 1;
        raw[62] = 0x01;
        raw[63] = 0x02;
        let der = raw_to_der(&raw).unwrap();
        assert_eq!(&der[..4], &[0x30, 2 + 33 + 2 + 2, 0x02, 33]);
        assert_eq!(der[4], 0x00);
        assert_eq!(&der[5..37], &raw[..32]);
        assert_eq!(&der[37..], &[0x02, 0x02, 0x01, 0x02]);
        assert_eq!(raw_to_der(&[1u8; 63]), None);
        assert_eq!(raw_to_der(&[0u8; 64]), None);
    }

    #[test]
    fn sha256_is_sha256() {
        // FIPS 180-2 test vector for "abc".
        assert_eq!(
            sha256(b"abc")[..8],
            [0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea]
        );
    }

    /// The SoftHSM2 module, where Debian installs it.
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

    fn run(cmd: &mut std::process::Command) {
        let out = cmd.output().expect("softhsm2-util runs (package softhsm2)");
        assert!(
            out.status.success(),
            "{cmd:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    const PIN: &str = "4321";

    /// SoftHSM2 reads its token directory from `SOFTHSM2_CONF`, which must be set before the
    /// module loads, and setting the environment of a running test process is unsafe. So this
    /// test prepares a token in a tempdir, then runs [`softhsm_handshake_inner`] in a child
    /// process of this test binary with the variable set.
    #[test]
    fn softhsm_key_does_mutual_tls() {
        let dir = tempfile::tempdir().unwrap();
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
        let pki_dir = dir.path().join("pki");
        spark_keys::init_dev(&pki_dir, &spark_keys::DevPkiOptions::default()).unwrap();
        let (_, key) = spark_keys::issue_device(&pki_dir, "GW-HSM-1", false).unwrap();
        let util = |args: &[&str]| {
            let mut c = std::process::Command::new("softhsm2-util");
            c.env("SOFTHSM2_CONF", &conf).args(args);
            run(&mut c);
        };
        util(&[
            "--init-token",
            "--free",
            "--label",
            "spark",
            "--pin",
            PIN,
            "--so-pin",
            "8765",
        ]);
        let key = key.to_str().unwrap();
        util(&[
            "--import", key, "--token", "spark", "--label", "device", "--id", "01", "--pin", PIN,
        ]);
        // The key now lives in the token; the PEM copy is not needed by the handshake.
        std::fs::remove_file(key).unwrap();

        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "pkcs11::tests::softhsm_handshake_inner",
                "--exact",
                "--ignored",
                "--nocapture",
            ])
            .env("SOFTHSM2_CONF", &conf)
            .env("SPARK_TLS_PKCS11_TEST_DIR", dir.path())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        assert!(
            text.contains("1 passed"),
            "the inner test did not run: {text}"
        );
    }

    #[test]
    #[ignore = "run by softhsm_key_does_mutual_tls in a child process with SOFTHSM2_CONF set"]
    fn softhsm_handshake_inner() {
        let dir = PathBuf::from(std::env::var_os("SPARK_TLS_PKCS11_TEST_DIR").unwrap());
        let pki = spark_keys::DevPki::open(&dir.join("pki")).unwrap();
        let module = softhsm_module();
        let config = |token_label, key_label, pin: &str| Pkcs11KeyConfig {
            module: &module,
            token_label,
            key_label,
            pin: pin.to_owned(),
        };
        // Wrong labels and PIN are refused with errors that say what to fix.
        let e = Pkcs11Key::open(&config("nope", "device", PIN)).unwrap_err();
        assert!(matches!(e, Pkcs11Error::NoToken { .. }), "{e}");
        assert!(e.to_string().contains("\"spark\""), "{e}");
        let e = Pkcs11Key::open(&config("spark", "other", PIN)).unwrap_err();
        assert!(matches!(e, Pkcs11Error::NoKey { .. }), "{e}");
        let e = Pkcs11Key::open(&config("spark", "device", "0000")).unwrap_err();
        assert!(e.to_string().contains("C_Login"), "{e}");

        let key = Pkcs11Key::open(&config("spark", "device", PIN)).unwrap();
        let client = crate::client_config_with_key(
            &pki.server_ca_cert(),
            &pki.device_cert("GW-HSM-1"),
            Arc::new(key),
        )
        .unwrap();
        let server =
            crate::server_config(&pki.server_cert(), &pki.server_key(), &pki.device_ca_cert())
                .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let cn = rt.block_on(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
            let server = tokio::spawn(async move {
                let (tcp, _) = listener.accept().await.unwrap();
                let mut tls = acceptor.accept(tcp).await.unwrap();
                let id = crate::PeerIdentity::of_server_connection(tls.get_ref().1).unwrap();
                let mut b = [0u8; 4];
                tls.read_exact(&mut b).await.unwrap();
                tls.write_all(&b).await.unwrap();
                tls.shutdown().await.unwrap();
                id.common_name
            });
            let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let mut tls = connector.connect(name, tcp).await.unwrap();
            tls.write_all(b"ping").await.unwrap();
            let mut b = [0u8; 4];
            tls.read_exact(&mut b).await.unwrap();
            assert_eq!(&b, b"ping");
            server.await.unwrap()
        });
        assert_eq!(cn, "GW-HSM-1");
    }
}
