//! Logins: the session table and the per-client backoff on wrong passwords.
//!
//! A session is a random 256-bit token in the `__Host-spark-webui` cookie (`Secure`, `HttpOnly`,
//! `SameSite=Strict`, `Path=/`, `Max-Age` = the session lifetime). The server keeps only the
//! tokens' SHA-256, in memory: a restart logs everyone out, which on a device that restarts for
//! an update is what one expects. The lifetime is absolute (from the login), not sliding.
//!
//! Wrong passwords make the client (its IP address) wait before the next try: 1 s after the
//! first, doubling per further failure up to [`MAX_BACKOFF`]; a success forgets the count. While
//! it waits, a login is answered 429 without checking the password, so guessing costs at least
//! a minute a try after a few misses and nothing on the device. Both tables are bounded.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

/// Name of the session cookie. `__Host-` makes browsers insist on `Secure`, `Path=/` and no
/// `Domain`, so no other host can set or read it.
pub const COOKIE: &str = "__Host-spark-webui";
/// Most sessions at once; a new login beyond it ends the one closest to expiring.
pub const MAX_SESSIONS: usize = 32;
/// Longest wait imposed after wrong passwords.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Clients remembered for backoff at most (the oldest is forgotten first).
const MAX_CLIENTS: usize = 1024;
/// A client's failures are forgotten this long after its last one.
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);

type TokenHash = [u8; 32];

fn hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// The session table.
#[derive(Debug)]
pub struct Sessions {
    lifetime: Duration,
    table: Mutex<HashMap<TokenHash, Instant>>,
}

impl Sessions {
    pub fn new(lifetime: Duration) -> Self {
        Self {
            lifetime,
            table: Mutex::default(),
        }
    }

    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TokenHash, Instant>> {
        // A panic while holding it leaves a valid map (every change is one insert or remove).
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new session; returns its token (the cookie value).
    pub fn create(&self) -> String {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let now = Instant::now();
        let mut table = self.lock();
        table.retain(|_, expires| *expires > now);
        while table.len() >= MAX_SESSIONS {
            let Some(oldest) = table.iter().min_by_key(|(_, e)| **e).map(|(k, _)| *k) else {
                break;
            };
            table.remove(&oldest);
        }
        table.insert(hash(&token), now + self.lifetime);
        token
    }

    /// Whether `token` names a live session.
    pub fn check(&self, token: &str) -> bool {
        let key = hash(token);
        let mut table = self.lock();
        match table.get(&key) {
            Some(expires) if *expires > Instant::now() => true,
            Some(_) => {
                table.remove(&key);
                false
            }
            None => false,
        }
    }

    /// Ends a session (logout).
    pub fn remove(&self, token: &str) {
        self.lock().remove(&hash(token));
    }
}

/// What the backoff says about a login attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Check the password.
    Open,
    /// Refuse without checking; try again after this long.
    Wait(Duration),
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    until: Instant,
}

/// Per-client backoff after wrong passwords.
#[derive(Debug, Default)]
pub struct Backoff {
    clients: Mutex<HashMap<IpAddr, Failures>>,
}

impl Backoff {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Failures>> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// May `client` try a password now?
    pub fn gate(&self, client: IpAddr) -> Gate {
        let now = Instant::now();
        match self.lock().get(&client) {
            Some(f) if f.until > now => Gate::Wait(f.until - now),
            _ => Gate::Open,
        }
    }

    /// Records a wrong password; returns how long the client must now wait.
    pub fn failed(&self, client: IpAddr) -> Duration {
        let now = Instant::now();
        let mut clients = self.lock();
        clients.retain(|_, f| now.duration_since(f.last) < FORGET_AFTER);
        if clients.len() >= MAX_CLIENTS
            && !clients.contains_key(&client)
            && let Some(oldest) = clients.iter().min_by_key(|(_, f)| f.last).map(|(k, _)| *k)
        {
            clients.remove(&oldest);
        }
        let entry = clients.entry(client).or_insert(Failures {
            count: 0,
            last: now,
            until: now,
        });
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
        let wait =
            Duration::from_secs(1u64 << entry.count.saturating_sub(1).min(6)).min(MAX_BACKOFF);
        entry.until = now + wait;
        wait
    }

    /// A correct password: the client's failures are forgotten.
    pub fn succeeded(&self, client: IpAddr) {
        self.lock().remove(&client);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn sessions_expire_and_end() {
        let sessions = Sessions::new(Duration::from_secs(600));
        let a = sessions.create();
        let b = sessions.create();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(sessions.check(&a) && sessions.check(&b));
        assert!(!sessions.check("not-a-token"));
        sessions.remove(&b);
        assert!(!sessions.check(&b));
        tokio::time::advance(Duration::from_secs(599)).await;
        assert!(sessions.check(&a));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(!sessions.check(&a));
    }

    #[tokio::test(start_paused = true)]
    async fn table_is_bounded() {
        let sessions = Sessions::new(Duration::from_secs(600));
        let first = sessions.create();
        tokio::time::advance(Duration::from_secs(1)).await;
        let rest: Vec<String> = (0..MAX_SESSIONS).map(|_| sessions.create()).collect();
        assert!(!sessions.check(&first), "the oldest session made room");
        assert!(rest.iter().all(|t| sessions.check(t)));
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_up_to_the_bound_and_resets() {
        let backoff = Backoff::default();
        let client: IpAddr = "192.168.4.20".parse().unwrap();
        let other: IpAddr = "192.168.4.21".parse().unwrap();
        assert_eq!(backoff.gate(client), Gate::Open);
        let waits: Vec<u64> = (0..9).map(|_| backoff.failed(client).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff.gate(client), Gate::Wait(MAX_BACKOFF));
        assert_eq!(backoff.gate(other), Gate::Open, "per client");
        tokio::time::advance(MAX_BACKOFF).await;
        assert_eq!(backoff.gate(client), Gate::Open);
        backoff.succeeded(client);
        assert_eq!(backoff.failed(client), Duration::from_secs(1));
    }
}
