//! Web pages in a real browser: headless Chromium (Debian `chromium`) loads a URL in a fresh
//! profile and hands back the DOM as it built it (`--dump-dom`), what a person would see, with
//! an optional screenshot. Plus two small readers of that DOM for tables whose rows carry an
//! `id` and whose cells carry a `class`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::TestbedError;
use crate::process::{POLL, kill_and_reap};

/// The browser program.
pub const BROWSER: &str = "chromium";

/// Bound on one page load.
const LOAD_LIMIT: Duration = Duration::from_secs(60);

/// An error that says how to install Chromium unless `chromium --version` works.
pub fn present() -> Result<(), TestbedError> {
    match Command::new(BROWSER).arg("--version").output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(TestbedError::Command {
            command: format!("{BROWSER} --version"),
            status: o.status.to_string(),
            message:
                "reinstall it: apt-get install -y --no-install-recommends chromium (ci/deps.sh)"
                    .into(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }),
        Err(source) => Err(TestbedError::Spawn {
            program: format!(
                "{BROWSER} (headless Chromium; install it: apt-get install -y --no-install-recommends chromium, as ci/deps.sh does)"
            ),
            source,
        }),
    }
}

/// One headless Chromium run in a fresh profile under `dir`: loads `url` (letting redirects,
/// refreshes and a few seconds of scripts happen) and returns the DOM; with `screenshot`, also
/// saves a PNG there. Its log is `dir/NAME.log`.
pub fn browse(
    dir: &Path,
    name: &str,
    url: &str,
    screenshot: Option<&Path>,
) -> Result<String, TestbedError> {
    let profile = dir.join(format!("profile-{name}"));
    let dom_path = dir.join(format!("{name}.html"));
    let log_path = dir.join(format!("{name}.log"));
    let io = |action: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| TestbedError::Io {
            action,
            path,
            source,
        }
    };
    let mut cmd = Command::new(BROWSER);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--ignore-certificate-errors",
        "--no-first-run",
        "--disable-extensions",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1000",
        // Lets a sign-in POST, its answer and the refresh to the page happen before the dump.
        "--virtual-time-budget=5000",
        "--dump-dom",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    if let Some(png) = screenshot {
        cmd.arg(format!("--screenshot={}", png.display()));
    }
    cmd.arg(url)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&dom_path).map_err(io("create", &dom_path))?)
        .stderr(std::fs::File::create(&log_path).map_err(io("create", &log_path))?);
    let command = format!("{BROWSER} --headless --dump-dom {url}");
    let mut child = cmd.spawn().map_err(|source| TestbedError::Spawn {
        program: BROWSER.into(),
        source,
    })?;
    let deadline = Instant::now() + LOAD_LIMIT;
    loop {
        if let Some(status) = child
            .try_wait()
            .map_err(io("wait for", Path::new(BROWSER)))?
        {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            if !status.success() {
                return Err(TestbedError::Command {
                    command,
                    status: status.to_string(),
                    message: log.lines().last().unwrap_or_default().to_owned(),
                    stdout: String::new(),
                    stderr: log,
                });
            }
            return std::fs::read_to_string(&dom_path).map_err(io("read", &dom_path));
        }
        if Instant::now() > deadline {
            kill_and_reap(&mut child);
            return Err(TestbedError::Timeout {
                command,
                timeout: LOAD_LIMIT,
                stdout: String::new(),
                stderr: std::fs::read_to_string(&log_path).unwrap_or_default(),
            });
        }
        thread::sleep(POLL);
    }
}

/// A local page (`DIR/post-NAME.html`, returned as a `file://` URL) that posts a form to
/// `action` as soon as it loads, as a person filling it in would (e.g. a sign-in form), so that
/// [`browse`] follows the answer. Values are HTML-escaped.
pub fn post_form_page(
    dir: &Path,
    name: &str,
    action: &str,
    fields: &[(&str, &str)],
) -> Result<String, TestbedError> {
    let path = dir.join(format!("post-{name}.html"));
    let inputs: String = fields
        .iter()
        .map(|(k, v)| format!(r#"<input name="{}" value="{}">"#, escape(k), escape(v)))
        .collect();
    let html = format!(
        "<!DOCTYPE html><html><body>\n<form method=\"post\" action=\"{}\">{inputs}</form>\n<script>document.forms[0].submit()</script></body></html>",
        escape(action)
    );
    std::fs::write(&path, html).map_err(|source| TestbedError::Io {
        action: "write",
        path: path.clone(),
        source,
    })?;
    Ok(format!("file://{}", path.display()))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The `<tr id="ID">…</tr>` row of a DOM, if there is one.
pub fn row<'a>(dom: &'a str, id: &str) -> Option<&'a str> {
    let start = dom.find(&format!("<tr id=\"{id}\">"))?;
    let end = dom[start..].find("</tr>")? + start;
    Some(&dom[start..end])
}

/// The text of the `<td class="CLASS">` cell of a row, tags stripped.
pub fn cell(row: &str, class: &str) -> Option<String> {
    let open = format!("<td class=\"{class}\">");
    let start = row.find(&open)? + open.len();
    let end = row[start..].find("</td>")? + start;
    Some(text(&row[start..end]))
}

/// Markup with its tags stripped.
pub fn text(html: &str) -> String {
    let mut text = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    text
}
