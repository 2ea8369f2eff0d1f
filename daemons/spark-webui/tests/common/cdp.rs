//! Headless Chromium driven over the DevTools protocol, so a test can do what a person does on
//! the page: type the password into the form and press the button (the browser then sends the
//! real POST with its own `Origin`, which a `file://` page submitting the form could not), read
//! the page as the browser built it, see it change without a reload, and take a screenshot.
//!
//! `spark_testbed::chromium::browse` (`--dump-dom`) cannot do the first and the third: it loads
//! one URL and dumps the DOM when virtual time runs out. This is the smallest client that can:
//! Chromium's `--remote-debugging-port` speaks JSON over a WebSocket, and a WebSocket client for
//! text frames is a handshake and a frame header (RFC 6455), written out below.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use super::WAIT;

/// One Chromium with one page.
pub struct Browser {
    child: Child,
    ws: TcpStream,
    next_id: u64,
    session: String,
}

impl Browser {
    /// Starts Chromium with a fresh profile under `dir` and opens a blank page.
    pub async fn start(dir: &Path) -> Browser {
        spark_testbed::chromium::present().expect("headless Chromium (Debian `chromium`)");
        let profile = dir.join("chromium-profile");
        let mut child = Command::new(spark_testbed::chromium::BROWSER)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                // The daemon's certificate is self-signed; a person accepts it after comparing
                // the fingerprint on the device label.
                "--ignore-certificate-errors",
                "--no-first-run",
                "--disable-extensions",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1200,1400",
                "--remote-debugging-port=0",
                "--remote-debugging-address=127.0.0.1",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromium");
        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID"
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let url = tokio::time::timeout(WAIT, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(at) = line.find("ws://") {
                    return line[at..].trim().to_owned();
                }
            }
            panic!("chromium exited without a DevTools URL");
        })
        .await
        .expect("chromium's DevTools URL in time");
        // Keep draining stderr so Chromium never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let rest = url.trim_start_matches("ws://");
        let (authority, path) = rest.split_at(rest.find('/').unwrap());
        let ws = handshake(authority, path).await;
        let mut browser = Browser {
            child,
            ws,
            next_id: 0,
            session: String::new(),
        };
        let target = browser
            .call("Target.createTarget", json!({"url": "about:blank"}), None)
            .await;
        let target_id = target["targetId"].as_str().unwrap().to_owned();
        let attached = browser
            .call(
                "Target.attachToTarget",
                json!({"targetId": target_id, "flatten": true}),
                None,
            )
            .await;
        browser.session = attached["sessionId"].as_str().unwrap().to_owned();
        browser.page("Page.enable", json!({})).await;
        browser
    }

    /// A command to the page.
    pub async fn page(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.call(method, params, Some(&session)).await
    }

    async fn call(&mut self, method: &str, params: Value, session: Option<&str>) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            message["sessionId"] = json!(s);
        }
        send_text(&mut self.ws, &message.to_string()).await;
        // Events arrive in between; only the answer with our id counts.
        tokio::time::timeout(WAIT, async {
            loop {
                let text = read_text(&mut self.ws).await;
                let v: Value = serde_json::from_str(&text).unwrap();
                if v["id"] == json!(id) {
                    if let Some(e) = v.get("error") {
                        panic!("{method} failed: {e}");
                    }
                    return v["result"].clone();
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no answer to {method}"))
    }

    /// Loads `url` and waits until the document is complete.
    pub async fn navigate(&mut self, url: &str) {
        self.page("Page.navigate", json!({"url": url})).await;
        self.wait_until("document.readyState === 'complete' && location.href !== 'about:blank'")
            .await;
    }

    /// Evaluates `expression` in the page and returns its value.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .page(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        r["result"]["value"].clone()
    }

    /// Polls `expression` until it is `true`; panics after [`WAIT`].
    pub async fn wait_until(&mut self, expression: &str) {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if self.eval(expression).await == json!(true) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the page never satisfied {expression}; it shows:\n{}",
                self.dom().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The page as the browser built it now.
    pub async fn dom(&mut self) -> String {
        self.eval("document.documentElement.outerHTML")
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Types `text` into the focused field, as a keyboard does.
    pub async fn type_text(&mut self, text: &str) {
        self.page("Input.insertText", json!({"text": text})).await;
    }

    /// Saves a PNG of the page.
    pub async fn screenshot(&mut self, path: &Path) {
        let r = self
            .page(
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": true}),
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap();
        std::fs::write(path, png).unwrap();
    }

    pub async fn close(mut self) {
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            send_text(
                &mut self.ws,
                &json!({"id": 0, "method": "Browser.close"}).to_string(),
            ),
        )
        .await;
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// The WebSocket opening handshake (RFC 6455 §4.1) on a new TCP connection.
async fn handshake(authority: &str, path: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(authority).await.unwrap();
    let key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 16]>());
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    // Read the response head byte by byte: frames may follow it directly.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(tcp.read_u8().await.unwrap());
    }
    let head = String::from_utf8_lossy(&head);
    assert!(
        head.starts_with("HTTP/1.1 101"),
        "DevTools refused the WebSocket: {head}"
    );
    tcp
}

/// One masked text frame (clients must mask, §5.3).
async fn send_text(ws: &mut TcpStream, text: &str) {
    let payload = text.as_bytes();
    let mut frame = vec![0x81u8];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let mask: [u8; 4] = rand::random();
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    ws.write_all(&frame).await.unwrap();
}

/// The next whole text message (continuation frames joined; control frames skipped).
async fn read_text(ws: &mut TcpStream) -> String {
    let mut message = Vec::new();
    loop {
        let b0 = ws.read_u8().await.unwrap();
        let b1 = ws.read_u8().await.unwrap();
        let len = match b1 & 0x7F {
            126 => u64::from(ws.read_u16().await.unwrap()),
            127 => ws.read_u64().await.unwrap(),
            n => u64::from(n),
        };
        let mask = if b1 & 0x80 != 0 {
            let mut m = [0u8; 4];
            ws.read_exact(&mut m).await.unwrap();
            Some(m)
        } else {
            None
        };
        let mut payload = vec![0u8; len as usize];
        ws.read_exact(&mut payload).await.unwrap();
        if let Some(m) = mask {
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= m[i % 4];
            }
        }
        let opcode = b0 & 0x0F;
        if opcode >= 0x8 {
            assert_ne!(opcode, 0x8, "DevTools closed the WebSocket");
            continue; // ping/pong
        }
        message.extend_from_slice(&payload);
        if b0 & 0x80 != 0 {
            return String::from_utf8(message).unwrap();
        }
    }
}
