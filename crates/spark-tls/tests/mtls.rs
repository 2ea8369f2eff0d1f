//! Real handshakes over loopback with certificates from the dev PKI: who gets in, who does not,
//! what the server learns about the client, and that a second connection resumes the session.

use std::path::Path;
use std::sync::Arc;

use spark_keys::{CertificateAuthority, DevPki, DevPkiOptions, LeafProfile};
use spark_tls::{PeerIdentity, client_config, server_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

fn dev_pki(dir: &Path) -> DevPki {
    let pki = spark_keys::init_dev(dir, &DevPkiOptions::default()).expect("dev PKI");
    spark_keys::issue_device(dir, "GW-0001", false).expect("device cert");
    pki
}

/// What the server saw of one connection attempt.
#[derive(Debug)]
struct Seen {
    identity: Option<PeerIdentity>,
    resumed: bool,
}

/// Accepts one connection, echoes one byte, reports what it saw (or the handshake error).
async fn serve_one(listener: &TcpListener, acceptor: &TlsAcceptor) -> Result<Seen, String> {
    let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
    let mut tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
    let (_, conn) = tls.get_ref();
    let identity = PeerIdentity::of_server_connection(conn).ok();
    let resumed = conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    let mut byte = [0u8; 1];
    tls.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
    tls.write_all(&byte).await.map_err(|e| e.to_string())?;
    tls.shutdown().await.ok();
    Ok(Seen { identity, resumed })
}

async fn dial(addr: std::net::SocketAddr, connector: TlsConnector) -> Result<(), String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    tls.write_all(b"x").await.map_err(|e| e.to_string())?;
    let mut byte = [0u8; 1];
    // TLS 1.3: a rejected client certificate only shows when the client next reads.
    tls.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
    // Read to the end so the session ticket the server sent is taken in.
    let mut rest = Vec::new();
    tls.read_to_end(&mut rest).await.ok();
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn device_gets_in_identified_by_its_certificate_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dev_pki(dir.path());
    let server = server_config(&pki.server_cert(), &pki.server_key(), &pki.device_ca_cert())
        .expect("server config");
    let acceptor = TlsAcceptor::from(Arc::new(server));
    let client = client_config(
        &pki.server_ca_cert(),
        &pki.device_cert("GW-0001"),
        &pki.device_key("GW-0001"),
    )
    .expect("client config");
    let connector = TlsConnector::from(Arc::new(client));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();

    let (seen, dialed) = tokio::join!(
        serve_one(&listener, &acceptor),
        dial(addr, connector.clone())
    );
    dialed.expect("first connection");
    let seen = seen.expect("server side");
    let identity = seen.identity.expect("client identity");
    assert_eq!(identity.common_name, "GW-0001");
    assert!(!identity.serial_hex.is_empty());
    assert!(identity.not_after > 1_700_000_000);
    assert!(!seen.resumed, "first handshake is a full one");

    let (seen, dialed) = tokio::join!(
        serve_one(&listener, &acceptor),
        dial(addr, connector.clone())
    );
    dialed.expect("second connection");
    assert!(
        seen.expect("server side").resumed,
        "same ClientConfig resumes"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn foreign_and_expired_client_certificates_fail_the_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dev_pki(dir.path());
    let server = server_config(&pki.server_cert(), &pki.server_key(), &pki.device_ca_cert())
        .expect("server config");
    let acceptor = TlsAcceptor::from(Arc::new(server));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();

    // A device certificate from another PKI's device CA.
    let other = tempfile::tempdir().unwrap();
    let other_pki = dev_pki(other.path());
    let foreign = client_config(
        &pki.server_ca_cert(),
        &other_pki.device_cert("GW-0001"),
        &other_pki.device_key("GW-0001"),
    )
    .unwrap();
    let (seen, dialed) = tokio::join!(
        serve_one(&listener, &acceptor),
        dial(addr, TlsConnector::from(Arc::new(foreign)))
    );
    assert!(dialed.is_err(), "foreign client must be refused");
    // Both dev PKIs name their device CA alike, so webpki finds the issuer by name and then
    // fails its signature: refused either way.
    let err = seen.expect_err("server refuses");
    assert!(
        err.contains("BadSignature") || err.contains("UnknownIssuer"),
        "{err}"
    );

    // Our own device CA, but the certificate expired yesterday.
    let ca = CertificateAuthority::load(&pki.device_ca_cert(), &pki.device_ca_key()).unwrap();
    let mut profile = LeafProfile::device("GW-OLD");
    profile.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(30);
    profile.not_after = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    let issued = ca.issue(&profile).unwrap();
    let (cert, key) = (
        dir.path().join("old.cert.pem"),
        dir.path().join("old.key.pem"),
    );
    issued.write(&cert, &key, false).unwrap();
    let expired = client_config(&pki.server_ca_cert(), &cert, &key).unwrap();
    let (seen, dialed) = tokio::join!(
        serve_one(&listener, &acceptor),
        dial(addr, TlsConnector::from(Arc::new(expired)))
    );
    assert!(dialed.is_err(), "expired client must be refused");
    let err = seen.expect_err("server refuses");
    assert!(err.contains("expired"), "{err}");
}

#[tokio::test(flavor = "current_thread")]
async fn client_trusts_only_the_pinned_server_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dev_pki(dir.path());
    let other = tempfile::tempdir().unwrap();
    let other_pki = dev_pki(other.path());
    // A server with a certificate from another server CA (a look-alike for our name).
    let server = server_config(
        &other_pki.server_cert(),
        &other_pki.server_key(),
        &pki.device_ca_cert(),
    )
    .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(server));
    let client = client_config(
        &pki.server_ca_cert(),
        &pki.device_cert("GW-0001"),
        &pki.device_key("GW-0001"),
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen, dialed) = tokio::join!(
        serve_one(&listener, &acceptor),
        dial(addr, TlsConnector::from(Arc::new(client)))
    );
    let err = dialed.expect_err("client refuses the look-alike server");
    assert!(
        err.contains("BadSignature") || err.contains("UnknownIssuer"),
        "{err}"
    );
    assert!(seen.is_err());
}
