//! HTTPS to the OTA server: one HTTP/1.1 request per connection over rustls with mutual TLS.
//!
//! The agent does one thing at a time over a link that drops often, so a connection pool would
//! only hold sockets that are already dead; each request dials anew. The server is
//! authenticated against a pinned CA (the server CA from `spark-keys`), never the system roots;
//! the device authenticates with its own certificate (`spark-keys issue-device`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, Uri};
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Failure to set up TLS from the configured files.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("cannot load {what} from {}: {reason}; check the path in the config", path.display())]
    Pem {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    /// rustls refused the material (e.g. key does not match certificate).
    #[error("TLS configuration refused: {0}; check that the device key belongs to its certificate")]
    Rustls(#[from] rustls::Error),
}

/// A failed HTTP exchange. Every variant but [`HttpError::Url`] may be transient.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The URL is not `https://host[:port]/path`.
    #[error("bad URL {url:?}: {reason}")]
    Url { url: String, reason: &'static str },
    /// TCP connect failed.
    #[error("cannot connect to {authority}: {source}")]
    Connect {
        authority: String,
        source: std::io::Error,
    },
    /// The TLS handshake failed (wrong server CA, rejected device certificate, link cut).
    #[error("TLS handshake with {authority} failed: {source}")]
    Handshake {
        authority: String,
        source: std::io::Error,
    },
    /// HTTP-level failure (connection closed mid-response, malformed response).
    #[error("HTTP exchange with {authority} failed: {source}")]
    Http {
        authority: String,
        source: hyper::Error,
    },
    /// The server closed the connection before the whole body arrived (a link cut).
    #[error("{authority} closed the connection before the body was complete")]
    Truncated { authority: String },
    /// No answer within the deadline.
    #[error("no answer from {authority} within {timeout:?}")]
    Timeout {
        authority: String,
        timeout: Duration,
    },
}

/// A mutual-TLS HTTPS client.
#[derive(Clone)]
pub struct HttpsClient {
    connector: TlsConnector,
    /// Bound on connect + handshake + response headers, and on each wait for body bytes.
    pub timeout: Duration,
}

impl std::fmt::Debug for HttpsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsClient")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

fn pem_error(what: &'static str, path: &Path, reason: impl ToString) -> TlsSetupError {
    TlsSetupError::Pem {
        what,
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

impl HttpsClient {
    /// Trusts only the CA certificates in `server_ca` and presents `device_cert` / `device_key`.
    pub fn from_pem_files(
        server_ca: &Path,
        device_cert: &Path,
        device_key: &Path,
    ) -> Result<Self, TlsSetupError> {
        let mut roots = RootCertStore::empty();
        let cas = CertificateDer::pem_file_iter(server_ca)
            .map_err(|e| pem_error("server CA", server_ca, e))?;
        for ca in cas {
            let ca = ca.map_err(|e| pem_error("server CA", server_ca, e))?;
            roots
                .add(ca)
                .map_err(|e| pem_error("server CA", server_ca, e))?;
        }
        if roots.is_empty() {
            return Err(pem_error("server CA", server_ca, "no certificate in file"));
        }
        let chain = CertificateDer::pem_file_iter(device_cert)
            .map_err(|e| pem_error("device certificate", device_cert, e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_error("device certificate", device_cert, e))?;
        if chain.is_empty() {
            return Err(pem_error(
                "device certificate",
                device_cert,
                "no certificate in file",
            ));
        }
        let key = PrivateKeyDer::from_pem_file(device_key)
            .map_err(|e| pem_error("device key", device_key, e))?;
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            timeout: Duration::from_secs(30),
        })
    }

    /// Sends one request (`uri` must be absolute `https://`) and returns the response with its
    /// body still streaming; the connection lives as long as the body.
    pub async fn send(
        &self,
        uri: &Uri,
        build: impl FnOnce(hyper::http::request::Builder) -> hyper::http::request::Builder,
        body: Bytes,
    ) -> Result<Response<Incoming>, HttpError> {
        let bad = |reason| HttpError::Url {
            url: uri.to_string(),
            reason,
        };
        if uri.scheme_str() != Some("https") {
            return Err(bad("only https:// is allowed"));
        }
        let host = uri.host().ok_or_else(|| bad("no host"))?.to_owned();
        let port = uri.port_u16().unwrap_or(443);
        let authority = format!("{host}:{port}");
        let timeout = self.timeout;
        let timed_out = || HttpError::Timeout {
            authority: authority.clone(),
            timeout,
        };
        // IPv6 literals come bracketed in URIs; server names and connect want them bare.
        let bare = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let server_name =
            ServerName::try_from(bare.clone()).map_err(|_| bad("host is not a valid name"))?;

        let exchange = async {
            let tcp = TcpStream::connect((bare.as_str(), port))
                .await
                .map_err(|source| HttpError::Connect {
                    authority: authority.clone(),
                    source,
                })?;
            // Small requests and small reads: latency matters more than coalescing.
            let _ = tcp.set_nodelay(true);
            let tls = self
                .connector
                .connect(server_name, tcp)
                .await
                .map_err(|source| HttpError::Handshake {
                    authority: authority.clone(),
                    source,
                })?;
            let http = |source| HttpError::Http {
                authority: authority.clone(),
                source,
            };
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .map_err(http)?;
            // The connection task ends when the response body is dropped or the peer closes.
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "HTTPS connection ended with an error");
                }
            });
            let path = uri.path_and_query().map_or("/", |p| p.as_str());
            let request = build(Request::builder().uri(path))
                .header(hyper::header::HOST, authority.as_str())
                .body(Full::new(body))
                .map_err(|_| bad("cannot build a request for it"))?;
            sender.send_request(request).await.map_err(http)
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| timed_out())?
    }

    /// GET `uri` and collect the whole body (for small documents such as release manifests),
    /// refusing bodies over `limit` bytes.
    pub async fn get_small(
        &self,
        uri: &Uri,
        limit: usize,
    ) -> Result<(hyper::StatusCode, Vec<u8>), HttpError> {
        let response = self.send(uri, |b| b.method("GET"), Bytes::new()).await?;
        let status = response.status();
        let authority = uri.authority().map_or_else(String::new, |a| a.to_string());
        let body = http_body_util::Limited::new(response.into_body(), limit);
        let bytes = tokio::time::timeout(self.timeout, body.collect())
            .await
            .map_err(|_| HttpError::Timeout {
                authority: authority.clone(),
                timeout: self.timeout,
            })?
            .map_err(|_| HttpError::Url {
                url: uri.to_string(),
                reason: "response body too large or cut",
            })?
            .to_bytes();
        Ok((status, bytes.to_vec()))
    }

    /// POST a JSON document; returns the status code.
    pub async fn post_json(
        &self,
        uri: &Uri,
        json: Vec<u8>,
    ) -> Result<hyper::StatusCode, HttpError> {
        let response = self
            .send(
                uri,
                |b| {
                    b.method("POST")
                        .header(hyper::header::CONTENT_TYPE, "application/json")
                },
                Bytes::from(json),
            )
            .await?;
        Ok(response.status())
    }
}
