//! A server-side TLS stream over rustls' *unbuffered* API that holds no buffer while idle.
//!
//! Why not tokio-rustls: its stream wraps a buffered `rustls::ServerConnection`, whose record
//! reader keeps at least a 4 KiB buffer for the rest of the connection once it has read
//! anything. spark-ingest holds up to 10 000 gateway connections that are idle nearly all the
//! time (one Ping every few minutes), and that buffer was the largest single part of an idle
//! connection's memory. Here ciphertext is read into a buffer that exists only while a record is
//! incomplete: once every whole record in it has been decrypted and handed out, the buffer is
//! freed. An idle connection keeps only rustls' connection state (keys, sequence numbers, the
//! peer's certificate) and the socket.
//!
//! The TLS work itself (handshake, client-certificate verification, record protection, alerts,
//! session tickets, key updates) is rustls'; this module only moves bytes between the socket and
//! [`UnbufferedServerConnection::process_tls_records`].
//!
//! Cancel safety: [`ServerStream::read_buf`] may be used as a `tokio::select!` branch. All state
//! changes happen synchronously after an await point returns; a dropped read loses nothing
//! (received ciphertext and decrypted plaintext stay in the stream) and bytes still to be sent
//! are kept and sent first by the next call.

use std::io;
use std::sync::Arc;

use bytes::BytesMut;
use rustls::ServerConfig;
use rustls::pki_types::CertificateDer;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Socket read size when no record header is buffered. A whole record (up to 16 KiB plus
/// overhead) is read when its header says it is larger.
const READ_CHUNK: usize = 4096;
/// TLS record header: type, version, length.
const RECORD_HEADER: usize = 5;
/// Upper bound of `process_tls_records` rounds for one call: each round consumes input or
/// produces output, so this is never reached by a well-behaved connection.
const MAX_ROUNDS: usize = 10_000;

/// A mutual-TLS server connection whose idle memory is rustls' connection state only.
pub struct ServerStream {
    tcp: TcpStream,
    conn: UnbufferedServerConnection,
    /// Ciphertext received and not yet processed: empty, and unallocated, between records.
    incoming: Vec<u8>,
    /// TLS bytes encoded and not yet written to the socket.
    outgoing: Vec<u8>,
    /// Plaintext decrypted but not yet handed out (records that arrived with the handshake or
    /// while writing).
    plain: Vec<u8>,
    /// The peer sent close_notify: reads return end of stream once `plain` is drained.
    peer_closed: bool,
    /// The last socket read filled all the space it was given.
    read_filled: bool,
}

/// Where `process` stopped.
enum Stop {
    /// The handshake needs more bytes from the peer.
    NeedData,
    /// Handshake done; application data may be written (and read, when it arrives).
    Ready,
    /// Both sides sent close_notify.
    Closed,
}

impl std::fmt::Debug for ServerStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerStream")
            .field("tcp", &self.tcp)
            .field("incoming", &self.incoming.len())
            .field("outgoing", &self.outgoing.len())
            .field("plain", &self.plain.len())
            .field("peer_closed", &self.peer_closed)
            .finish_non_exhaustive()
    }
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl ServerStream {
    /// Runs the TLS handshake on `tcp` with `config` (which decides about client certificates).
    /// A refused handshake sends rustls' alert to the peer (best effort) and returns rustls'
    /// error, e.g. `invalid peer certificate: UnknownIssuer`. Bound it with a timeout: a peer
    /// that stops sending mid-handshake is waited for.
    pub async fn accept(tcp: TcpStream, config: Arc<ServerConfig>) -> io::Result<ServerStream> {
        let conn = UnbufferedServerConnection::new(config).map_err(tls_error)?;
        let mut stream = ServerStream {
            tcp,
            conn,
            incoming: Vec::new(),
            outgoing: Vec::new(),
            plain: Vec::new(),
            peer_closed: false,
            read_filled: false,
        };
        loop {
            let stop = stream.process(None);
            stream.flush_outgoing().await?;
            match stop? {
                Stop::Ready if !stream.conn.is_handshaking() => return Ok(stream),
                Stop::Closed => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "peer closed the connection during the TLS handshake",
                    ));
                }
                Stop::Ready | Stop::NeedData => {
                    if stream.receive(READ_CHUNK).await? == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "peer closed the connection during the TLS handshake",
                        ));
                    }
                }
            }
        }
    }

    /// The peer's certificate chain, leaf first (verified by the handshake).
    pub fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        self.conn.peer_certificates()
    }

    /// The rustls connection state (negotiated version, cipher suite, handshake kind).
    pub fn common_state(&self) -> &rustls::CommonState {
        &self.conn
    }

    /// Appends received plaintext to `dst` and returns how many bytes; 0 at a clean end of the
    /// stream (the peer sent close_notify). Waits until at least one byte is available, then
    /// reads at most about `read_size` bytes of ciphertext from the socket (at least a whole
    /// record). Cancel safe.
    pub async fn read_buf(&mut self, dst: &mut BytesMut, read_size: usize) -> io::Result<usize> {
        for _ in 0..MAX_ROUNDS {
            if !self.plain.is_empty() {
                dst.extend_from_slice(&self.plain);
                let n = self.plain.len();
                self.plain = Vec::new();
                return Ok(n);
            }
            if self.peer_closed {
                return Ok(0);
            }
            let stop = self.process(None);
            self.flush_outgoing().await?;
            if let Stop::Closed = stop? {
                self.peer_closed = true;
            }
            if !self.plain.is_empty() || self.peer_closed {
                continue;
            }
            if self.receive(read_size).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    if self.incoming.is_empty() {
                        "peer closed connection without sending TLS close_notify"
                    } else {
                        "peer closed connection inside a TLS record"
                    },
                ));
            }
        }
        Err(io::Error::other("TLS read made no progress"))
    }

    /// Bytes of buffer memory the stream holds besides rustls' own state: 0 when idle (no
    /// partial record received, nothing unsent, no plaintext waiting).
    pub fn buffered_capacity(&self) -> usize {
        self.incoming.capacity() + self.outgoing.capacity() + self.plain.capacity()
    }

    /// Whether the last socket read filled all the space it had: more is probably waiting, so
    /// a larger `read_size` next time saves rounds.
    pub fn read_filled(&self) -> bool {
        self.read_filled
    }

    /// Encrypts `data` and writes it to the socket.
    pub async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        // Bytes a cancelled call left behind go first, so records stay in order.
        self.flush_outgoing().await?;
        let stop = self.process(Some(data));
        self.flush_outgoing().await?;
        match stop? {
            Stop::Ready => Ok(()),
            Stop::NeedData => Err(io::Error::other("TLS handshake not complete")),
            Stop::Closed => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "TLS connection already closed",
            )),
        }
    }

    /// Sends close_notify and shuts down the socket's write side.
    pub async fn shutdown(&mut self) -> io::Result<()> {
        self.flush_outgoing().await?;
        if let Ok(Stop::Ready) = self.process(None) {
            let UnbufferedStatus { discard, state } =
                self.conn.process_tls_records(&mut self.incoming);
            if let Ok(ConnectionState::WriteTraffic(mut w)) = state {
                let at = self.outgoing.len();
                self.outgoing.resize(at + 64, 0);
                match w.queue_close_notify(&mut self.outgoing[at..]) {
                    Ok(n) => self.outgoing.truncate(at + n),
                    Err(_) => self.outgoing.truncate(at),
                }
            }
            self.incoming.drain(..discard);
        }
        self.flush_outgoing().await?;
        self.tcp.shutdown().await
    }

    /// Feeds buffered ciphertext to rustls until it needs more input or is ready for
    /// application data; encodes what it wants to send into `outgoing`, decrypted application
    /// data into `plain`, and `data` (if any) once application data may be sent. On a TLS error
    /// the alert rustls queued is encoded too, so the caller's flush sends it.
    fn process(&mut self, mut data: Option<&[u8]>) -> io::Result<Stop> {
        let Self {
            conn,
            incoming,
            outgoing,
            plain,
            peer_closed,
            ..
        } = self;
        // A TLS error ends processing, but only after the alert rustls queued for it has been
        // encoded (the next round hands it out before touching input again), so the peer
        // learns why.
        let mut failed = None;
        let mut result = Err(io::Error::other("TLS processing made no progress"));
        for _ in 0..MAX_ROUNDS {
            let UnbufferedStatus { discard, state } = conn.process_tls_records(incoming);
            let state = match state {
                Ok(state) => state,
                Err(e) => {
                    incoming.drain(..discard);
                    if failed.is_some() {
                        break;
                    }
                    // One more round encodes the alert rustls queued for this error.
                    failed = Some(e);
                    continue;
                }
            };
            let stop = match state {
                ConnectionState::ReadTraffic(mut r) => {
                    while let Some(record) = r.next_record() {
                        match record {
                            Ok(record) => plain.extend_from_slice(record.payload),
                            Err(e) => {
                                failed.get_or_insert(e);
                                break;
                            }
                        }
                    }
                    None
                }
                ConnectionState::EncodeTlsData(mut e) => {
                    let at = outgoing.len();
                    let mut want = READ_CHUNK;
                    loop {
                        outgoing.resize(at + want, 0);
                        match e.encode(&mut outgoing[at..]) {
                            Ok(n) => {
                                outgoing.truncate(at + n);
                                break;
                            }
                            Err(EncodeError::InsufficientSize(s)) if s.required_size > want => {
                                want = s.required_size;
                            }
                            Err(err) => {
                                outgoing.truncate(at);
                                incoming.drain(..discard);
                                return Err(io::Error::other(format!("TLS encode: {err}")));
                            }
                        }
                    }
                    None
                }
                // What was encoded is in `outgoing`; the caller sends it before waiting for
                // anything, so it counts as transmitted.
                ConnectionState::TransmitTlsData(t) => {
                    t.done();
                    None
                }
                ConnectionState::BlockedHandshake => Some(Stop::NeedData),
                ConnectionState::PeerClosed => {
                    *peer_closed = true;
                    None
                }
                ConnectionState::Closed => Some(Stop::Closed),
                ConnectionState::WriteTraffic(mut w) => {
                    if let Some(data) = data.take() {
                        let at = outgoing.len();
                        // TLS 1.3 adds 22 bytes per record of at most 16 KiB.
                        let mut want = data.len() + (data.len() / 16_384 + 1) * 64;
                        loop {
                            outgoing.resize(at + want, 0);
                            match w.encrypt(data, &mut outgoing[at..]) {
                                Ok(n) => {
                                    outgoing.truncate(at + n);
                                    break;
                                }
                                Err(EncryptError::InsufficientSize(s))
                                    if s.required_size > want =>
                                {
                                    want = s.required_size;
                                }
                                Err(err) => {
                                    outgoing.truncate(at);
                                    incoming.drain(..discard);
                                    return Err(io::Error::other(format!("TLS encrypt: {err}")));
                                }
                            }
                        }
                    }
                    Some(Stop::Ready)
                }
                // Early data is never enabled in our server configs.
                _ => {
                    incoming.drain(..discard);
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "unexpected TLS state (early data is not accepted)",
                    ));
                }
            };
            incoming.drain(..discard);
            // After an error only the round that encodes its alert runs: another would make
            // rustls process the offending bytes (and raise its alert) a second time.
            if failed.is_some() {
                break;
            }
            if let Some(stop) = stop {
                result = Ok(stop);
                break;
            }
        }
        if incoming.is_empty() && incoming.capacity() > 0 {
            *incoming = Vec::new(); // the point of this module: no buffer while idle
        }
        match failed {
            Some(e) => Err(tls_error(e)),
            None => result,
        }
    }

    /// Writes `outgoing` to the socket. Cancel safe: what was written is removed, the rest
    /// stays for the next call.
    async fn flush_outgoing(&mut self) -> io::Result<()> {
        while !self.outgoing.is_empty() {
            let n = self.tcp.write(&self.outgoing).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.outgoing.drain(..n);
        }
        if self.outgoing.capacity() > 0 {
            self.outgoing = Vec::new();
        }
        Ok(())
    }

    /// Waits for the socket to be readable and appends what it has to `incoming`: up to
    /// `read_size` bytes, or the rest of the record whose header is buffered if that is more.
    /// Returns 0 at end of stream. Cancel safe.
    async fn receive(&mut self, read_size: usize) -> io::Result<usize> {
        loop {
            self.tcp.readable().await?;
            let rest_of_record = match self.incoming.get(..RECORD_HEADER) {
                Some(h) => (RECORD_HEADER + usize::from(u16::from_be_bytes([h[3], h[4]])))
                    .saturating_sub(self.incoming.len()),
                None => 0,
            };
            let want = read_size.max(rest_of_record).max(RECORD_HEADER);
            self.incoming.reserve_exact(want);
            let spare = self.incoming.capacity() - self.incoming.len();
            match self.tcp.try_read_buf(&mut self.incoming) {
                Ok(n) => {
                    self.read_filled = n >= spare;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // The readiness was stale (tokio clears it only on WouldBlock), so this is
                    // where an idle connection goes back to waiting, possibly for minutes: give
                    // the room just reserved back first, or every idle connection keeps 4 KiB.
                    if self.incoming.is_empty() {
                        self.incoming = Vec::new();
                    }
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
    }
}
