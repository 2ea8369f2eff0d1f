//! A small mutual-TLS HTTPS client: the CLI's calls to the admin API and the server's calls to
//! ingest's push channel. One HTTP/1.1 connection per request (these are rare, small requests;
//! a pool would only hold sockets), only the configured CA trusted, never the system roots.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::{Request, Response, Uri};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::error::ClientError;

/// A request body: small documents in memory, or a streamed file.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// A body from bytes in memory.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A client for one server (`https://host:port`).
#[derive(Clone)]
pub struct HttpsClient {
    connector: TlsConnector,
    base: Uri,
    host: String,
    port: u16,
}

impl std::fmt::Debug for HttpsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl HttpsClient {
    /// A client of `base` (`https://host[:port]`) with this rustls config.
    pub fn new(base: &str, tls: rustls::ClientConfig) -> Result<HttpsClient, ClientError> {
        let bad = |reason| ClientError::Url {
            url: base.to_owned(),
            reason,
        };
        let uri: Uri = base.parse().map_err(|_| bad("not a URL"))?;
        if uri.scheme_str() != Some("https") {
            return Err(bad("only https:// is allowed"));
        }
        let host = uri
            .host()
            .ok_or_else(|| bad("no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(443);
        Ok(HttpsClient {
            connector: TlsConnector::from(Arc::new(tls)),
            base: uri,
            host,
            port,
        })
    }

    fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Sends `method path` with `headers` and `body`; returns the response with its body still
    /// streaming.
    pub async fn send(
        &self,
        method: hyper::Method,
        path: &str,
        headers: &[(&str, String)],
        body: Body,
    ) -> Result<Response<Incoming>, ClientError> {
        let authority = self.authority();
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|source| ClientError::Connect {
                authority: authority.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(self.host.clone()).map_err(|_| ClientError::Url {
            url: self.base.to_string(),
            reason: "host is not a valid server name",
        })?;
        let tls =
            self.connector
                .connect(name, tcp)
                .await
                .map_err(|source| ClientError::Handshake {
                    authority: authority.clone(),
                    source,
                })?;
        let http = |source| ClientError::Http {
            authority: authority.clone(),
            source,
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(http)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "HTTPS client connection ended with an error");
            }
        });
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, authority.as_str());
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        let req = req.body(body).map_err(|_| ClientError::Url {
            url: format!("{}{path}", self.base),
            reason: "cannot build a request for it",
        })?;
        sender.send_request(req).await.map_err(http)
    }

    /// Sends and collects the whole answer (status, body).
    pub async fn call(
        &self,
        method: hyper::Method,
        path: &str,
        headers: &[(&str, String)],
        body: Body,
    ) -> Result<(hyper::StatusCode, Bytes), ClientError> {
        let response = self.send(method, path, headers, body).await?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|source| ClientError::Http {
                authority: self.authority(),
                source,
            })?
            .to_bytes();
        Ok((status, body))
    }

    /// Sends and decodes a JSON answer; a non-2xx status becomes [`ClientError::Status`] with the
    /// server's `error` message.
    pub async fn json<T: serde::de::DeserializeOwned>(
        &self,
        method: hyper::Method,
        path: &str,
        headers: &[(&str, String)],
        body: Body,
    ) -> Result<T, ClientError> {
        let (status, bytes) = self.call(method, path, headers, body).await?;
        if !status.is_success() {
            return Err(status_error(status, &bytes));
        }
        Ok(serde_json::from_slice(&bytes)?)
    }
}

/// The server's `{"error": …}` message, or the body as text.
pub fn status_error(status: hyper::StatusCode, body: &[u8]) -> ClientError {
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    ClientError::Status { status, message }
}
