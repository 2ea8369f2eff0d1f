//! `ServerStream` (rustls' unbuffered API) against tokio-rustls clients over loopback: mutual
//! TLS, identity, large and small messages both ways, resumption, refusals with an alert, clean
//! close, and the reason it exists: no buffer held while idle.

use std::path::Path;
use std::sync::Arc;

use bytes::BytesMut;
use spark_keys::{DevPki, DevPkiOptions};
use spark_tls::{PeerIdentity, ServerStream, client_config, gateway_server_config, server_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

fn dev_pki(dir: &Path) -> DevPki {
    let pki = spark_keys::init_dev(dir, &DevPkiOptions::default()).expect("dev PKI");
    spark_keys::issue_device(dir, "GW-0042", false).expect("device cert");
    pki
}

fn setup(pki: &DevPki) -> (Arc<rustls::ServerConfig>, TlsConnector) {
    let server = server_config(&pki.server_cert(), &pki.server_key(), &pki.device_ca_cert())
        .expect("server config");
    let client = client_config(
        &pki.server_ca_cert(),
        &pki.device_cert("GW-0042"),
        &pki.device_key("GW-0042"),
    )
    .expect("client config");
    (Arc::new(server), TlsConnector::from(Arc::new(client)))
}

async fn connect(
    addr: std::net::SocketAddr,
    connector: &TlsConnector,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await
}

/// Reads from `stream` until `dst` holds `n` bytes.
async fn read_n(stream: &mut ServerStream, dst: &mut BytesMut, n: usize) {
    while dst.len() < n {
        let got = stream.read_buf(dst, 4096).await.expect("server read");
        assert!(got > 0, "end of stream after {} of {n} bytes", dst.len());
    }
}

#[tokio::test(flavor = "current_thread")]
async fn exchanges_data_identifies_the_client_and_holds_nothing_when_idle() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dev_pki(dir.path());
    let (server, connector) = setup(&pki);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();

    // 100 KiB: several TLS records each way, and records split across socket reads.
    let big: Vec<u8> = (0..100 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    let client_big = big.clone();
    let client = tokio::spawn(async move {
        let mut tls = connect(addr, &connector).await.expect("client handshake");
        tls.write_all(b"hello").await.unwrap();
        tls.write_all(&client_big).await.unwrap();
        let mut echo = vec![0u8; client_big.len()];
        tls.read_exact(&mut echo).await.unwrap();
        assert_eq!(echo, client_big, "echo of the big message");
        let mut small = [0u8; 3];
        tls.read_exact(&mut small).await.unwrap();
        assert_eq!(&small, b"bye");
        // Wait for the server's close_notify, then close ours.
        let mut rest = Vec::new();
        tls.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        tls.shutdown().await.unwrap();
    });

    let (tcp, _) = listener.accept().await.unwrap();
    let mut stream = ServerStream::accept(tcp, server.clone())
        .await
        .expect("accept");
    let id = PeerIdentity::of_server_connection(stream.common_state()).expect("identity");
    assert_eq!(id.common_name, "GW-0042");
    let mut buf = BytesMut::new();
    read_n(&mut stream, &mut buf, 5 + big.len()).await;
    assert_eq!(&buf[..5], b"hello");
    assert_eq!(&buf[5..], &big[..]);
    // Everything received was handed out: no ciphertext or plaintext buffer is kept.
    assert_eq!(stream.buffered_capacity(), 0);
    // Nor while waiting for more from a quiet peer (an idle connection's state for minutes: a
    // read pending in a select!, here cancelled by the timeout). The socket's readiness is
    // stale after the reads above, so the wait starts with a read that finds nothing.
    let idle = tokio::time::timeout(
        std::time::Duration::from_millis(200),
        stream.read_buf(&mut buf, 4096),
    )
    .await;
    assert!(
        idle.is_err(),
        "the client sends nothing until it has its echo"
    );
    assert_eq!(stream.buffered_capacity(), 0);
    stream.write_all(&big).await.unwrap();
    stream.write_all(b"bye").await.unwrap();
    assert_eq!(stream.buffered_capacity(), 0);
    stream.shutdown().await.unwrap();
    // The client's close_notify: a clean end of stream.
    let mut end = BytesMut::new();
    assert_eq!(stream.read_buf(&mut end, 4096).await.unwrap(), 0);
    client.await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn second_connection_resumes_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dev_pki(dir.path());
    let (server, connector) = setup(&pki);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut kinds = Vec::new();
    for _ in 0..2 {
        let connector = connector.clone();
        let client = tokio::spawn(async move {
            let mut tls = connect(addr, &connector).await.expect("client handshake");
            tls.write_all(b"x").await.unwrap();
            // Read to the end so the session ticket is taken in.
            let mut rest = Vec::new();
            tls.read_to_end(&mut rest).await.ok();
            rest
        });
        let (tcp, _) = listener.accept().await.unwrap();
        let mut stream = ServerStream::accept(tcp, server.clone()).await.unwrap();
        let mut buf = BytesMut::new();
        read_n(&mut stream, &mut buf, 1).await;
        stream.write_all(b"y").await.unwrap();
        kinds.push(stream.common_state().handshake_kind());
        stream.shutdown().await.unwrap();
        assert_eq!(client.await.unwrap(), b"y");
    }
    assert_eq!(kinds[0], Some(rustls::HandshakeKind::Full));
    assert_eq!(kinds[1], Some(rustls::HandshakeKind::Resumed));
}

#[tokio::test(flavor = "current_thread")]
async fn foreign_client_is_refused_with_an_alert() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dev_pki(dir.path());
    let (server, _) = setup(&pki);
    // A client whose certificate comes from another PKI's device CA.
    let other = tempfile::tempdir().unwrap();
    let foreign = dev_pki(other.path());
    let client = client_config(
        &pki.server_ca_cert(),
        &foreign.device_cert("GW-0042"),
        &foreign.device_key("GW-0042"),
    )
    .unwrap();
    let connector = TlsConnector::from(Arc::new(client));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = tokio::spawn(async move {
        let mut tls = connect(addr, &connector).await?;
        tls.write_all(b"x").await?;
        let mut byte = [0u8; 1];
        // TLS 1.3: the refusal arrives when the client next reads.
        tls.read_exact(&mut byte).await.map(|_| ())
    });
    let (tcp, _) = listener.accept().await.unwrap();
    let err = ServerStream::accept(tcp, server).await.unwrap_err();
    // Same CA name, other key: BadSignature (an unrelated CA name would be UnknownIssuer).
    assert!(
        err.to_string().contains("invalid peer certificate"),
        "{err}"
    );
    let client_err = client.await.unwrap().unwrap_err().to_string();
    // The alert reached the client: it names the reason, not just a reset connection.
    // (rustls' alert for a bad CA signature is decrypt_error.)
    assert!(client_err.contains("received fatal alert"), "{client_err}");
}

#[tokio::test(flavor = "current_thread")]
async fn garbage_and_early_close_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dev_pki(dir.path());
    let (server, _) = setup(&pki);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();

    let garbage = tokio::spawn(async move {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut rest = Vec::new();
        tcp.read_to_end(&mut rest).await.ok();
    });
    let (tcp, _) = listener.accept().await.unwrap();
    let err = ServerStream::accept(tcp, server.clone()).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");
    garbage.await.unwrap();

    let early = tokio::spawn(async move {
        let tcp = TcpStream::connect(addr).await.unwrap();
        drop(tcp);
    });
    let (tcp, _) = listener.accept().await.unwrap();
    let err = ServerStream::accept(tcp, server).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "{err}");
    early.await.unwrap();
}

/// The gateway-facing config picks ChaCha20-Poly1305 even from a client that lists AES first
/// (rustls' default order, which uplinkd uses).
#[tokio::test(flavor = "current_thread")]
async fn gateway_config_picks_chacha20() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dev_pki(dir.path());
    let (_, connector) = setup(&pki);
    let gateway =
        gateway_server_config(&pki.server_cert(), &pki.server_key(), &pki.device_ca_cert())
            .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = tokio::spawn(async move {
        let mut tls = connect(addr, &connector).await.expect("client handshake");
        tls.write_all(b"x").await.unwrap();
        let suite = tls.get_ref().1.negotiated_cipher_suite().unwrap().suite();
        let mut rest = Vec::new();
        tls.read_to_end(&mut rest).await.ok();
        suite
    });
    let (tcp, _) = listener.accept().await.unwrap();
    let mut stream = ServerStream::accept(tcp, Arc::new(gateway)).await.unwrap();
    let mut buf = BytesMut::new();
    read_n(&mut stream, &mut buf, 1).await;
    stream.shutdown().await.unwrap();
    let want = rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256;
    assert_eq!(client.await.unwrap(), want);
    assert_eq!(
        stream
            .common_state()
            .negotiated_cipher_suite()
            .unwrap()
            .suite(),
        want
    );
}
