//! A fault-injecting TCP proxy for one gateway's cloud link: it forwards to the real ingest and,
//! to order, cuts every open connection (as a cellular link drop does: no TLS close), refuses
//! new ones for a while (no coverage), or delays every chunk (a slow, high-latency link).
//! Plain threads: a handful of connections, each with two pumps. Everything stops on drop.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::FleetError;

#[derive(Debug, Default)]
struct Shared {
    stop: AtomicBool,
    down: AtomicBool,
    latency_ms: AtomicU64,
    cuts: AtomicU64,
    conns: Mutex<Vec<TcpStream>>,
}

/// A running proxy. Dropping it stops it and closes its connections.
#[derive(Debug)]
pub struct LinkProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<thread::JoinHandle<()>>,
}

impl LinkProxy {
    /// Listens on 127.0.0.1 (a free port) and forwards to `target`.
    pub fn start(target: SocketAddr) -> Result<LinkProxy, FleetError> {
        let listener =
            TcpListener::bind("127.0.0.1:0").map_err(FleetError::io("bind", "127.0.0.1:0"))?;
        let addr = listener
            .local_addr()
            .map_err(FleetError::io("read address of", "the link proxy"))?;
        listener
            .set_nonblocking(true)
            .map_err(FleetError::io("configure", "the link proxy"))?;
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let accept = thread::spawn(move || accept_loop(listener, target, s));
        Ok(LinkProxy {
            addr,
            shared,
            accept: Some(accept),
        })
    }

    /// Where clients connect (`127.0.0.1:PORT`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every open connection at once, both directions, without a TLS close.
    pub fn cut(&self) {
        let conns = std::mem::take(&mut *lock(&self.shared.conns));
        for c in conns {
            let _ = c.shutdown(Shutdown::Both);
        }
        self.shared.cuts.fetch_add(1, Ordering::SeqCst);
    }

    /// While down, open connections are cut and new ones closed at once.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
        if down {
            self.cut();
        }
    }

    /// Delay added to every chunk forwarded, each way.
    pub fn set_latency(&self, latency: Duration) {
        self.shared
            .latency_ms
            .store(latency.as_millis() as u64, Ordering::SeqCst);
    }

    /// Cuts so far.
    pub fn cuts(&self) -> u64 {
        self.shared.cuts.load(Ordering::SeqCst)
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.cut();
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A pump that panicked leaves the list usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn accept_loop(listener: TcpListener, target: SocketAddr, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                if shared.down.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let _ = client.set_nonblocking(false);
                let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(5)) else {
                    continue;
                };
                let pair = (client.try_clone(), server.try_clone());
                let (Ok(c2), Ok(s2)) = pair else {
                    continue;
                };
                {
                    let mut conns = lock(&shared.conns);
                    if let (Ok(c), Ok(s)) = (client.try_clone(), server.try_clone()) {
                        conns.push(c);
                        conns.push(s);
                    }
                }
                let s1 = shared.clone();
                let s2_shared = shared.clone();
                thread::spawn(move || pump(client, server, s1));
                thread::spawn(move || pump(s2, c2, s2_shared));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(20));
            }
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Copies `from` → `to` until either side ends, delaying each chunk by the current latency.
fn pump(mut from: TcpStream, mut to: TcpStream, shared: Arc<Shared>) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = vec![0u8; 16 << 10];
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let ms = shared.latency_ms.load(Ordering::SeqCst);
                if ms > 0 {
                    thread::sleep(Duration::from_millis(ms));
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(_) => break,
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
