//! The bench's device-side client: one HTTP/1.1 connection (hyper) over mutual TLS (rustls, the
//! device's own certificate), kept alive across requests. The same client talks to spark-ota and
//! to nginx.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

pub type Sender = SendRequest<Full<Bytes>>;

/// An open connection and what TLS it negotiated (for the output).
pub struct Conn {
    pub sender: Sender,
    /// e.g. `TLSv1_3 TLS13_AES_256_GCM_SHA384`.
    pub tls: String,
}

/// Connects to `addr` (server name `localhost`, as in the dev PKI's server certificate).
pub async fn connect(addr: SocketAddr, tls: Arc<rustls::ClientConfig>) -> anyhow::Result<Conn> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let stream = TlsConnector::from(tls)
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?;
    let (_, session) = stream.get_ref();
    let tls = format!(
        "{:?} {:?}",
        session
            .protocol_version()
            .unwrap_or(rustls::ProtocolVersion::Unknown(0)),
        session
            .negotiated_cipher_suite()
            .map(|s| s.suite())
            .unwrap_or(rustls::CipherSuite::Unknown(0))
    );
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(Conn { sender, tls })
}

/// A request to `localhost`.
pub fn request(method: hyper::Method, path: &str, body: Bytes) -> hyper::Request<Full<Bytes>> {
    let mut req = hyper::Request::new(Full::new(body));
    *req.method_mut() = method;
    *req.uri_mut() = path.parse().unwrap_or_default();
    req.headers_mut().insert(
        hyper::header::HOST,
        hyper::header::HeaderValue::from_static("localhost"),
    );
    req
}

/// Sends `req` and reads the body to its end, counting (and dropping) its bytes.
pub async fn send_drain(
    sender: &mut Sender,
    req: hyper::Request<Full<Bytes>>,
) -> anyhow::Result<(hyper::StatusCode, u64)> {
    sender.ready().await?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let mut body = resp.into_body();
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            n += data.len() as u64;
        }
    }
    Ok((status, n))
}
