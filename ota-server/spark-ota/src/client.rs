//! The CLI's client of the admin API: token (`Authorization: Bearer`) or admin client
//! certificate, the server CA pinned. Release uploads stream the bundle from disk with a
//! progress bar; nothing is read whole into memory.

use std::path::Path;

use base64::Engine as _;
use bytes::Bytes;
use futures_util::TryStreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::Method;
use hyper::body::Frame;
use indicatif::ProgressBar;
use serde::de::DeserializeOwned;

use crate::api::RELEASE_HEADER;
use crate::catalog::{ManifestReplaced, Uploaded};
use crate::error::ClientError;
use crate::https::{HttpsClient, full};

/// How the CLI proves it is an admin.
#[derive(Debug, Clone)]
pub enum Credentials<'a> {
    Token(String),
    Certificate { cert: &'a Path, key: &'a Path },
}

/// A connection to the admin API.
#[derive(Debug, Clone)]
pub struct AdminClient {
    http: HttpsClient,
    token: Option<String>,
}

impl AdminClient {
    /// `server` is `https://host:port` of the admin listener; `ca` the CA of its certificate.
    pub fn new(
        server: &str,
        ca: &Path,
        creds: Credentials<'_>,
    ) -> Result<AdminClient, ClientError> {
        let (tls, token) = match creds {
            Credentials::Token(t) => (
                rustls::ClientConfig::builder_with_provider(spark_tls::provider())
                    .with_safe_default_protocol_versions()
                    .map_err(spark_tls::TlsError::from)?
                    .with_root_certificates(spark_tls::load_roots(ca)?)
                    .with_no_client_auth(),
                Some(t),
            ),
            Credentials::Certificate { cert, key } => {
                (spark_tls::client_config(ca, cert, key)?, None)
            }
        };
        Ok(AdminClient {
            http: HttpsClient::new(server, tls)?,
            token,
        })
    }

    fn headers(&self) -> Vec<(&'static str, String)> {
        let mut h = vec![("content-type", "application/json".to_owned())];
        if let Some(t) = &self.token {
            h.push(("authorization", format!("Bearer {t}")));
        }
        h
    }

    /// GET `path`, decoded.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.http
            .json(Method::GET, path, &self.headers(), full(""))
            .await
    }

    /// POST `body` as JSON to `path`, decoded.
    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<T, ClientError> {
        self.http
            .json(Method::POST, path, &self.headers(), full(body.to_string()))
            .await
    }

    /// PUT `body` as JSON to `path`, decoded.
    pub async fn put<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<T, ClientError> {
        self.http
            .json(Method::PUT, path, &self.headers(), full(body.to_string()))
            .await
    }

    /// Replaces the signed manifest of release `id` with the file `manifest` (the
    /// `.release.json` of `spark-keys sign-release`, or the wire form), sent as the body.
    pub async fn replace_manifest(
        &self,
        id: i64,
        manifest: &Path,
    ) -> Result<ManifestReplaced, ClientError> {
        let doc = std::fs::read(manifest).map_err(|source| ClientError::File {
            path: manifest.to_owned(),
            source,
        })?;
        let mut headers = self.headers();
        headers[0] = ("content-type", "application/octet-stream".to_owned());
        self.http
            .json(
                Method::PUT,
                &format!("/v1/releases/{id}/manifest"),
                &headers,
                full(doc),
            )
            .await
    }

    /// Uploads `bundle` with its signed release manifest `release` (the `.release.json` of
    /// `spark-keys sign-release`), advancing `progress` by the bytes sent.
    pub async fn upload(
        &self,
        bundle: &Path,
        release: &Path,
        progress: &ProgressBar,
    ) -> Result<Uploaded, ClientError> {
        self.upload_maybe_signed(bundle, Some(release), progress)
            .await
    }

    /// Uploads `bundle` with its signed release manifest, or without one (`None`): only a
    /// server in dev mode accepts that, and signs the manifest itself.
    pub async fn upload_maybe_signed(
        &self,
        bundle: &Path,
        release: Option<&Path>,
        progress: &ProgressBar,
    ) -> Result<Uploaded, ClientError> {
        let file_err = |path: &Path| {
            let path = path.to_owned();
            move |source| ClientError::File { path, source }
        };
        let doc = match release {
            Some(release) => Some(std::fs::read(release).map_err(file_err(release))?),
            None => None,
        };
        let file = tokio::fs::File::open(bundle)
            .await
            .map_err(file_err(bundle))?;
        let size = file.metadata().await.map_err(file_err(bundle))?.len();
        progress.set_length(size);
        let bar = progress.clone();
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024)
            .inspect_ok(move |chunk: &Bytes| bar.inc(chunk.len() as u64))
            .map_ok(Frame::data);
        let body = StreamBody::new(stream).boxed();
        let mut headers = self.headers();
        headers[0] = ("content-type", "application/octet-stream".to_owned());
        headers.push(("content-length", size.to_string()));
        if let Some(doc) = doc {
            headers.push((
                RELEASE_HEADER,
                base64::engine::general_purpose::STANDARD.encode(doc),
            ));
        }
        let result = self
            .http
            .json(Method::POST, "/v1/releases", &headers, body)
            .await;
        progress.finish_and_clear();
        result
    }
}
