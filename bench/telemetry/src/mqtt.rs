//! The peer of the wire benchmark: the same readings published to a real Mosquitto broker over
//! mutual TLS, MQTT 3.1.1, QoS 1 (each PUBLISH answered by a PUBACK). Only the handful of packets
//! a publisher needs are encoded here (CONNECT, PUBLISH, PUBACK), per the MQTT 3.1.1 spec.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

const WAIT: Duration = Duration::from_secs(60);

/// A connected MQTT publisher.
pub struct Publisher {
    stream: TlsStream<TcpStream>,
    next_id: u16,
    in_flight: usize,
    /// Most unacknowledged QoS 1 messages (Mosquitto's default `max_inflight_messages` is 20).
    window: usize,
}

fn remaining_length(mut len: usize, out: &mut Vec<u8>) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
}

fn string(s: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

impl Publisher {
    /// Connects (TCP, TLS, CONNECT with clean session, keep-alive `keepalive_secs`) and waits for
    /// CONNACK.
    pub async fn connect(
        addr: SocketAddr,
        tls: Arc<rustls::ClientConfig>,
        client_id: &str,
        keepalive_secs: u16,
    ) -> anyhow::Result<Publisher> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let name = rustls::pki_types::ServerName::try_from("localhost")?;
        let stream = TlsConnector::from(tls).connect(name, tcp).await?;
        let mut p = Publisher {
            stream,
            next_id: 1,
            in_flight: 0,
            window: 20,
        };
        let mut body = Vec::new();
        string(b"MQTT", &mut body);
        body.push(4); // protocol level 3.1.1
        body.push(0x02); // clean session
        body.extend_from_slice(&keepalive_secs.to_be_bytes());
        string(client_id.as_bytes(), &mut body);
        let mut packet = vec![0x10];
        remaining_length(body.len(), &mut packet);
        packet.extend_from_slice(&body);
        p.stream.write_all(&packet).await?;
        p.stream.flush().await?;
        let mut connack = [0u8; 4];
        tokio::time::timeout(WAIT, p.stream.read_exact(&mut connack))
            .await
            .context("no CONNACK")??;
        if connack[0] != 0x20 || connack[3] != 0 {
            bail!("broker refused the connection: {connack:02x?}");
        }
        Ok(p)
    }

    /// Publishes with QoS 1, keeping at most `window` unacknowledged.
    pub async fn publish(&mut self, topic: &str, payload: &[u8]) -> anyhow::Result<()> {
        while self.in_flight >= self.window {
            self.read_puback().await?;
        }
        let id = self.next_id;
        self.next_id = self.next_id.checked_add(1).unwrap_or(1);
        let mut body = Vec::with_capacity(topic.len() + payload.len() + 4);
        string(topic.as_bytes(), &mut body);
        body.extend_from_slice(&id.to_be_bytes());
        body.extend_from_slice(payload);
        let mut packet = vec![0x32]; // PUBLISH, QoS 1
        remaining_length(body.len(), &mut packet);
        packet.extend_from_slice(&body);
        self.stream.write_all(&packet).await?;
        self.stream.flush().await?;
        self.in_flight += 1;
        Ok(())
    }

    /// Waits for every outstanding PUBACK.
    pub async fn drain(&mut self) -> anyhow::Result<()> {
        while self.in_flight > 0 {
            self.read_puback().await?;
        }
        Ok(())
    }

    async fn read_puback(&mut self) -> anyhow::Result<()> {
        let mut puback = [0u8; 4];
        tokio::time::timeout(WAIT, self.stream.read_exact(&mut puback))
            .await
            .context("no PUBACK")??;
        if puback[0] != 0x40 || puback[1] != 2 {
            bail!("expected PUBACK, got {puback:02x?}");
        }
        self.in_flight -= 1;
        Ok(())
    }
}
