//! The HTML: server-rendered pages, every value escaped, every value in an element with a stable
//! `id` (or, in tables, a row `id` and a cell `class`) that tests and people's scripts can rely on.
//!
//! The status page is four sections (`link`, `update`, `slots`, `meters`); the live stream sends
//! a section's new HTML whenever it changes and a small inline script swaps it in. Without
//! JavaScript the page refreshes itself every 10 s. The only script and style are inline and
//! allowed by their SHA-256 in the Content-Security-Policy ([`csp`]); nothing else may run.

use std::fmt::Write;
use std::sync::LazyLock;

use base64::Engine;
use sha2::{Digest, Sha256};

use crate::state::{Meters, Part, Slot, Snapshot, Update, Uplink};

/// The live page's sections, in page order. Each is `<section id="NAME">`; the SSE event of the
/// same name carries its new HTML.
pub const SECTIONS: [&str; 4] = ["link", "update", "slots", "meters"];

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0 auto;max-width:60rem;padding:1rem;color:#1b1b1b}\
header{display:flex;justify-content:space-between;align-items:center;border-bottom:2px solid #2a6f97}\
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:1.5rem}\
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.25rem .5rem;border-bottom:1px solid #ddd}\
td.wh,td.time{font-variant-numeric:tabular-nums}\
dl{display:grid;grid-template-columns:max-content auto;gap:.25rem 1rem}dt{font-weight:600}dd{margin:0}\
.bad,.down{color:#b00020;font-weight:600}.good,.up{color:#1b7f3b;font-weight:600}.unknown{color:#777}\
progress{width:12rem}#live{color:#777;font-size:.9rem}\
form.inline{margin:0}input[type=password]{font-size:1.1rem;padding:.3rem}button{font-size:1rem;padding:.3rem .8rem}\
p.error{color:#b00020;font-weight:600}";

const SCRIPT: &str = "(function(){var live=document.getElementById('live');if(!window.EventSource){return;}\
var es=new EventSource('/events');\
['link','update','slots','meters'].forEach(function(name){es.addEventListener(name,function(e){\
var el=document.getElementById(name);if(el){el.outerHTML=e.data;}});});\
es.onopen=function(){live.textContent='Live';};\
es.onerror=function(){if(es.readyState===2){live.textContent='Session ended; reloading';setTimeout(function(){location.reload();},3000);}\
else{live.textContent='Reconnecting';}};})();";

fn sha256_source(text: &str) -> String {
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(text.as_bytes()))
    )
}

/// The Content-Security-Policy of every page: nothing but our inline style and script, the
/// event stream, and forms posting to ourselves; no framing.
pub fn csp() -> &'static str {
    static CSP: LazyLock<String> = LazyLock::new(|| {
        format!(
            "default-src 'none'; style-src {}; script-src {}; connect-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            sha256_source(STYLE),
            sha256_source(SCRIPT)
        )
    });
    &CSP
}

/// Text safe inside an element or a quoted attribute.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn head(out: &mut String, title: &str, refresh: bool) {
    let _ = write!(
        out,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style>",
        escape(title)
    );
    if refresh {
        out.push_str("<noscript><meta http-equiv=\"refresh\" content=\"10\"></noscript>");
    }
    out.push_str("</head><body>");
}

/// The login form; `error` is shown above it.
pub fn login_page(host: &str, error: Option<&str>) -> String {
    let mut out = String::new();
    head(&mut out, &format!("Log in: Spark gateway {host}"), false);
    let _ = write!(
        out,
        "<header><h1>Spark gateway <span id=\"host\">{}</span></h1></header><main>",
        escape(host)
    );
    if let Some(e) = error {
        let _ = write!(
            out,
            "<p class=\"error\" id=\"login-error\">{}</p>",
            escape(e)
        );
    }
    out.push_str(
        "<form method=\"post\" action=\"/login\" id=\"login\">\
         <p><label>Site password <input type=\"password\" name=\"password\" \
         autocomplete=\"current-password\" required autofocus></label></p>\
         <p><button type=\"submit\">Log in</button></p></form></main></body></html>",
    );
    out
}

/// What every page shows until a password is set: how to set one.
pub fn setup_page(host: &str) -> String {
    let mut out = String::new();
    head(
        &mut out,
        &format!("Spark gateway {host}: no password set"),
        false,
    );
    let _ = write!(
        out,
        "<header><h1>Spark gateway <span id=\"host\">{}</span></h1></header><main>\
         <p id=\"setup\">No site password is set on this gateway, so nobody can log in yet. \
         On the gateway's console, run <code>spark-webui set-password</code> \
         (with <code>--config</code> if its config is not <code>/etc/spark/webui.toml</code>) \
         and type the password; then reload this page.</p></main></body></html>",
        escape(host)
    );
    out
}

/// A short page for errors (404, 400, 403, 429).
pub fn message_page(title: &str, message: &str) -> String {
    let mut out = String::new();
    head(&mut out, title, false);
    let _ = write!(
        out,
        "<main><h1>{}</h1><p id=\"message\">{}</p><p><a href=\"/\">Back to the status page</a></p></main></body></html>",
        escape(title),
        escape(message)
    );
    out
}

/// The status page.
pub fn status_page(host: &str, snapshot: &Snapshot) -> String {
    let mut out = String::new();
    head(&mut out, &format!("Spark gateway {host}"), true);
    let _ = write!(
        out,
        "<header><h1>Spark gateway <span id=\"host\">{}</span></h1>\
         <form class=\"inline\" method=\"post\" action=\"/logout\"><button type=\"submit\" id=\"logout\">Log out</button></form></header><main>",
        escape(host)
    );
    if let Some(e) = &snapshot.bus_error {
        let _ = write!(
            out,
            "<p class=\"bad\" id=\"bus-error\">D-Bus is not reachable ({}); nothing below is current.</p>",
            escape(e)
        );
    }
    for name in SECTIONS {
        out.push_str(&section(name, snapshot));
    }
    let _ = write!(
        out,
        "</main><p id=\"live\">Updates every few seconds</p><script>{SCRIPT}</script></body></html>"
    );
    out
}

/// One section's HTML by name (see [`SECTIONS`]).
pub fn section(name: &str, snapshot: &Snapshot) -> String {
    match name {
        "link" => link(&snapshot.uplink),
        "update" => update(&snapshot.update),
        "slots" => slots(&snapshot.slots),
        _ => meters(&snapshot.meters),
    }
}

/// The text for a part that could not be read, in a `span` of class `unknown`.
fn unavailable<T>(part: &Part<T>, daemon: &str) -> String {
    let text = match part {
        Part::Unknown => "unknown (not read yet)".to_owned(),
        Part::NotRunning => format!("unknown: {daemon} is not running"),
        Part::Failed(e) => format!("unknown: {daemon} did not answer ({e})"),
        Part::Ok(_) => String::new(),
    };
    format!(
        "<p class=\"unknown\" id=\"{daemon}-status\">{}</p>",
        escape(&text)
    )
}

fn yes_no(value: bool, yes: &str, no: &str) -> String {
    if value {
        format!("<span class=\"up\">{yes}</span>")
    } else {
        format!("<span class=\"down\">{no}</span>")
    }
}

/// `12 345 B` below 10 KiB, else KiB/MiB/GiB with one decimal.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 3] = ["KiB", "MiB", "GiB"];
    if n < 10 * 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Unix seconds as `2026-01-05 14:15:00 UTC`.
pub fn time_text(unix: u64) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    i64::try_from(unix)
        .ok()
        .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| format!("{unix} (unix time)"))
}

fn value(id: &str, raw: impl std::fmt::Display, text: &str) -> String {
    format!(
        "<dd id=\"{id}\" data-value=\"{}\">{}</dd>",
        escape(&raw.to_string()),
        escape(text)
    )
}

fn link(part: &Part<Uplink>) -> String {
    let mut out = String::from("<section id=\"link\"><h2>Cloud link</h2>");
    match part {
        Part::Ok(u) => {
            let _ = write!(
                out,
                "<dl><dt>Connected</dt><dd id=\"link-connected\" data-value=\"{}\">{}</dd>",
                u.connected,
                yes_no(u.connected, "connected", "not connected")
            );
            out.push_str("<dt>Queue</dt>");
            out.push_str(&value(
                "queue-depth",
                u.queue_depth,
                &format!(
                    "{} {} waiting for the cloud",
                    u.queue_depth,
                    if u.queue_depth == 1 {
                        "entry"
                    } else {
                        "entries"
                    }
                ),
            ));
            out.push_str("<dt>Bytes used today (UTC)</dt>");
            match u.bytes_used_today {
                Some(b) => out.push_str(&value("bytes-today", b, &bytes(b))),
                None => out.push_str(
                    "<dd id=\"bytes-today\" class=\"unknown\">unknown (uplinkd too old)</dd>",
                ),
            }
            out.push_str("<dt>Sent since start</dt>");
            out.push_str(&value("bytes-sent", u.bytes_sent, &bytes(u.bytes_sent)));
            out.push_str("<dt>Received since start</dt>");
            out.push_str(&value(
                "bytes-received",
                u.bytes_received,
                &bytes(u.bytes_received),
            ));
            out.push_str("<dt>Last acknowledged</dt>");
            out.push_str(&value(
                "last-ack",
                u.last_ack_seq,
                &u.last_ack_seq.to_string(),
            ));
            out.push_str("</dl>");
        }
        other => out.push_str(&unavailable(other, "spark-uplinkd")),
    }
    out.push_str("</section>");
    out
}

fn update(part: &Part<Update>) -> String {
    let mut out = String::from("<section id=\"update\"><h2>Firmware update</h2>");
    match part {
        Part::Ok(u) => {
            out.push_str("<dl><dt>State</dt>");
            out.push_str(&value("update-state", &u.state, &u.state));
            out.push_str("<dt>Progress</dt>");
            let progress = u.progress.min(100);
            let _ = write!(
                out,
                "<dd id=\"update-progress\" data-value=\"{progress}\"><progress max=\"100\" value=\"{progress}\"></progress> {progress} %</dd>"
            );
            out.push_str("<dt>Running version</dt>");
            out.push_str(&value(
                "current-version",
                &u.current_version,
                &u.current_version,
            ));
            out.push_str("<dt>Pending version</dt>");
            let pending = if u.pending_version.is_empty() {
                "none"
            } else {
                &u.pending_version
            };
            out.push_str(&value("pending-version", &u.pending_version, pending));
            out.push_str("<dt>Last error</dt>");
            let error = if u.last_error.is_empty() {
                "none"
            } else {
                &u.last_error
            };
            out.push_str(&value("last-error", &u.last_error, error));
            out.push_str("</dl>");
        }
        other => out.push_str(&unavailable(other, "spark-updated")),
    }
    out.push_str("</section>");
    out
}

fn slots(part: &Part<Vec<Slot>>) -> String {
    let mut out = String::from("<section id=\"slots\"><h2>A/B slots</h2>");
    match part {
        Part::Ok(slots) => {
            out.push_str(
                "<table><thead><tr><th>Slot</th><th>Version</th><th>Booted</th><th>Boot status</th><th>Boots next</th></tr></thead><tbody>",
            );
            for s in slots {
                let label = s.bootname.as_deref().unwrap_or(&s.name);
                let status = s.boot_status.as_deref().unwrap_or("unknown");
                let class = match status {
                    "good" => "good",
                    "bad" => "bad",
                    _ => "unknown",
                };
                let _ = write!(
                    out,
                    "<tr id=\"slot-{}\"><td class=\"slot\">{} ({})</td><td class=\"version\">{}</td>\
                     <td class=\"booted\">{}</td><td class=\"boot-status\"><span class=\"{class}\">{}</span></td><td class=\"primary\">{}</td></tr>",
                    escape(label),
                    escape(label),
                    escape(&s.name),
                    escape(s.version.as_deref().unwrap_or("unknown")),
                    if s.booted { "booted" } else { "no" },
                    escape(status),
                    match s.primary {
                        Some(true) => "yes",
                        Some(false) => "no",
                        None => "unknown",
                    },
                );
            }
            out.push_str("</tbody></table>");
        }
        other => out.push_str(&unavailable(other, "rauc")),
    }
    out.push_str("</section>");
    out
}

fn meters(part: &Part<Meters>) -> String {
    let mut out = String::from("<section id=\"meters\"><h2>Meters</h2>");
    match part {
        Part::Ok(m) => {
            out.push_str("<dl><dt>Radio</dt>");
            let _ = write!(
                out,
                "<dd id=\"radio-online\" data-value=\"{}\">{}</dd>",
                m.radio_online,
                yes_no(m.radio_online, "online", "offline")
            );
            out.push_str("<dt>Meters seen</dt>");
            out.push_str(&value(
                "meters-count",
                m.meters.len(),
                &m.meters.len().to_string(),
            ));
            out.push_str("<dt>Readings not yet taken by the uplink</dt>");
            out.push_str(&value("buffered", m.buffered, &m.buffered.to_string()));
            out.push_str("</dl>");
            if let Some(e) = &m.last_readings_error {
                let _ = write!(
                    out,
                    "<p class=\"unknown\" id=\"last-readings-error\">Last readings unknown: {}</p>",
                    escape(e)
                );
            }
            out.push_str(
                "<table><thead><tr><th>Meter</th><th>Last reading</th><th>Energy (Wh)</th></tr></thead><tbody>",
            );
            for row in &m.meters {
                let (time, wh) = match row.last {
                    Some((ts, wh)) => (time_text(ts), wh.to_string()),
                    None => ("no reading yet".to_owned(), String::new()),
                };
                let _ = write!(
                    out,
                    "<tr id=\"meter-{}\"><td class=\"meter\">{}</td><td class=\"time\">{}</td><td class=\"wh\">{}</td></tr>",
                    escape(&row.id),
                    escape(&row.id),
                    escape(&time),
                    escape(&wh)
                );
            }
            out.push_str("</tbody></table>");
        }
        other => out.push_str(&unavailable(other, "spark-meterd")),
    }
    out.push_str("</section>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MeterRow;

    fn snapshot() -> Snapshot {
        Snapshot {
            generation: 1,
            bus_error: None,
            meters: Part::Ok(Meters {
                radio_online: true,
                buffered: 3,
                meters: vec![
                    MeterRow {
                        id: "MTR-<b>&1".into(),
                        last: Some((1_767_571_200, 12_345)),
                    },
                    MeterRow {
                        id: "MTR-2".into(),
                        last: None,
                    },
                ],
                last_readings_error: None,
            }),
            uplink: Part::NotRunning,
            update: Part::Failed("timeout <x>".into()),
            slots: Part::Unknown,
        }
    }

    #[test]
    fn escapes_every_value() {
        let page = status_page("gw\"<1>", &snapshot());
        assert!(!page.contains("<b>&1"));
        assert!(page.contains("<tr id=\"meter-MTR-&lt;b&gt;&amp;1\"><td class=\"meter\">MTR-&lt;b&gt;&amp;1</td><td class=\"time\">2026-01-05 00:00:00 UTC</td><td class=\"wh\">12345</td></tr>"));
        assert!(page.contains("<span id=\"host\">gw&quot;&lt;1&gt;</span>"));
        assert!(page.contains("did not answer (timeout &lt;x&gt;)"));
        assert!(page.contains("spark-uplinkd is not running"));
        assert!(page.contains("<td class=\"time\">no reading yet</td>"));
        assert_eq!(escape("'a'"), "&#39;a&#39;");
    }

    #[test]
    fn sections_are_whole_and_named() {
        let s = snapshot();
        for name in SECTIONS {
            let html = section(name, &s);
            assert!(
                html.starts_with(&format!("<section id=\"{name}\">")),
                "{html}"
            );
            assert!(html.ends_with("</section>"));
            assert!(status_page("gw", &s).contains(&html));
        }
    }

    #[test]
    fn csp_allows_exactly_the_inline_script_and_style() {
        let csp = csp();
        assert!(csp.contains(&sha256_source(SCRIPT)));
        assert!(csp.contains(&sha256_source(STYLE)));
        assert!(!csp.contains("unsafe-inline"));
        // The script names the sections the server sends.
        for name in SECTIONS {
            assert!(SCRIPT.contains(&format!("'{name}'")));
        }
    }

    #[test]
    fn figures_read_like_a_person_expects() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(10 * 1024), "10.0 KiB");
        assert_eq!(bytes(5 * 1024 * 1024 + 512 * 1024), "5.5 MiB");
        assert_eq!(time_text(0), "1970-01-01 00:00:00 UTC");
    }
}
