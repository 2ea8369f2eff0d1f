//! Client of ingest's internal push API (the only way spark-api reaches a gateway): HTTP/1.1 over
//! mutual TLS with our service certificate from the server CA (CN `spark-api`; ingest's
//! `internal-clients` must list it). One connection per call: commands are rare, and a fresh
//! connection never inherits a broken one.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::config::IngestFiles;
use crate::error::{IngestCallError, ServiceError};

/// Longest a call may take: ingest waits up to 60 s for a gateway's result, plus slack.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(75);

/// Where and how to call ingest.
#[derive(Debug, Clone)]
pub struct IngestClient {
    /// `host:port`.
    addr: String,
    server_name: ServerName<'static>,
    tls: Arc<rustls::ClientConfig>,
}

/// An answer from ingest.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
}

impl IngestClient {
    /// From the `[ingest]` section of the config.
    pub fn from_files(files: &IngestFiles) -> Result<IngestClient, ServiceError> {
        let tls = spark_tls::client_config(&files.ca, &files.cert, &files.key)?;
        IngestClient::new(&files.url, Arc::new(tls))
    }

    /// `url` is `https://HOST:PORT`.
    pub fn new(url: &str, tls: Arc<rustls::ClientConfig>) -> Result<IngestClient, ServiceError> {
        let bad = || ServiceError::IngestUrl {
            url: url.to_owned(),
        };
        let addr = url
            .strip_prefix("https://")
            .ok_or_else(bad)?
            .trim_end_matches('/');
        let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
        port.parse::<u16>().map_err(|_| bad())?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let server_name = ServerName::try_from(host.to_owned()).map_err(|_| bad())?;
        Ok(IngestClient {
            addr: addr.to_owned(),
            server_name,
            tls,
        })
    }

    /// One request; `body` is JSON.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, IngestCallError> {
        tokio::time::timeout(CALL_TIMEOUT, self.call_inner(method, path, body))
            .await
            .map_err(|_| IngestCallError::Timeout {
                addr: self.addr.clone(),
                secs: CALL_TIMEOUT.as_secs(),
            })?
    }

    async fn call_inner(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, IngestCallError> {
        let addr = || self.addr.clone();
        let tcp =
            TcpStream::connect(&self.addr)
                .await
                .map_err(|source| IngestCallError::Connect {
                    addr: addr(),
                    source,
                })?;
        let tls = TlsConnector::from(self.tls.clone())
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|source| IngestCallError::Tls {
                addr: addr(),
                source,
            })?;
        let http = |source| IngestCallError::Http {
            addr: addr(),
            source,
        };
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .map_err(http)?;
        let conn = tokio::spawn(conn);
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, self.server_name.to_str().as_ref())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())));
        // Method and path come from our own code, header values are static: the builder accepts them.
        let request = request.map_err(|e| IngestCallError::BadAnswer {
            addr: addr(),
            status: 0,
            body: format!("cannot build request: {e}"),
        })?;
        let response = sender.send_request(request).await.map_err(http)?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(http)?
            .to_bytes();
        conn.abort();
        Ok(Answer { status, body })
    }
}
