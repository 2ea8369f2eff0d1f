//! Renderers: terminal summary, JSON, SARIF 2.1.0, Markdown (release notes) and a self-contained
//! HTML page. All of them print the snapshot's sources, dates, hash and age.

use std::fmt::Write as _;

use serde_json::json;

use super::{Freshness, Report, gates};
use crate::model::{Finding, Status};

/// Output formats of `spark-cve scan --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Terminal,
    Json,
    Sarif,
    Markdown,
    Html,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "terminal" | "text" => Format::Terminal,
            "json" => Format::Json,
            "sarif" => Format::Sarif,
            "markdown" | "md" => Format::Markdown,
            "html" => Format::Html,
            other => {
                return Err(format!(
                    "unknown format {other:?} (terminal, json, sarif, markdown, html)"
                ));
            }
        })
    }
}

/// Renders `report` in `format`.
pub fn render(report: &Report, format: Format) -> String {
    match format {
        Format::Terminal => terminal(report),
        // Serialising our own plain structs cannot fail.
        Format::Json => serde_json::to_string_pretty(report).expect("report serialises") + "\n",
        Format::Sarif => {
            serde_json::to_string_pretty(&sarif(report)).expect("SARIF serialises") + "\n"
        }
        Format::Markdown => markdown(report),
        Format::Html => html(report),
    }
}

fn status_str(s: Status) -> &'static str {
    match s {
        Status::Affected => "affected",
        Status::Undecidable => "undecidable",
        Status::Triaged => "triaged",
        Status::Patched => "patched",
        Status::NotAffected => "not-affected",
    }
}

fn score(f: &Finding) -> String {
    f.cvss.map_or_else(|| "?".into(), |s| format!("{s:.1}"))
}

fn version(f: &Finding) -> &str {
    f.version.as_deref().unwrap_or("?")
}

/// Open findings first, highest score first.
fn ordered(report: &Report) -> Vec<&Finding> {
    let mut v: Vec<&Finding> = report.findings.iter().collect();
    v.sort_by(|a, b| {
        a.status
            .cmp(&b.status)
            .then(b.cvss.unwrap_or(11.0).total_cmp(&a.cvss.unwrap_or(11.0)))
            .then(a.id.cmp(&b.id))
    });
    v
}

fn snapshot_lines(r: &Report) -> Vec<String> {
    let s = &r.snapshot;
    let mut out = vec![format!(
        "snapshot {} ({} advisories, built {}, sha256 {})",
        s.path, s.advisories, s.created, s.sha256
    )];
    for src in &s.sources {
        out.push(format!(
            "  source {:<8} {} ({} records, newest {})",
            src.kind.as_str(),
            src.path,
            src.records,
            src.date.as_deref().unwrap_or("?")
        ));
    }
    let age = match s.freshness {
        Freshness::Fresh => format!("data from {}, {} days old", s.data_date, s.age_days),
        Freshness::Old => format!(
            "WARNING: data from {} is {} days old (warn after {}, fail after {})",
            s.data_date, s.age_days, r.policy.warn_age_days, r.policy.max_age_days
        ),
        Freshness::Stale => format!(
            "STALE: data from {} is {} days old, limit {} days",
            s.data_date, s.age_days, r.policy.max_age_days
        ),
    };
    out.push(age);
    out
}

fn terminal(r: &Report) -> String {
    let mut o = String::new();
    for l in snapshot_lines(r) {
        let _ = writeln!(o, "{l}");
    }
    let s = &r.summary;
    let _ = writeln!(
        o,
        "{} components: {} affected, {} undecidable, {} triaged, {} patched, {} not affected",
        s.components, s.affected, s.undecidable, s.triaged, s.patched, s.not_affected
    );
    let open: Vec<&Finding> = ordered(r)
        .into_iter()
        .filter(|f| f.status.is_open())
        .collect();
    if !open.is_empty() {
        let _ = writeln!(o);
        for f in open {
            let gate = if gates(f, &r.policy) { "FAIL" } else { "    " };
            let _ = writeln!(
                o,
                "{gate} {:<5} {:<11} {:<20} {}@{}  {}",
                score(f),
                status_str(f.status),
                f.id,
                f.component,
                version(f),
                f.reasons.last().map(String::as_str).unwrap_or("")
            );
        }
    }
    if let Some(d) = &r.diff {
        let _ = writeln!(
            o,
            "\nsince {}: {} new, {} fixed, {} changed",
            d.baseline,
            d.new.len(),
            d.fixed.len(),
            d.changed.len()
        );
        for (what, list) in [
            ("new", &d.new),
            ("fixed", &d.fixed),
            ("changed", &d.changed),
        ] {
            for e in list {
                let _ = writeln!(
                    o,
                    "  {what:<7} {} {} ({} -> {})",
                    e.id,
                    e.component,
                    e.before.as_deref().unwrap_or("-"),
                    e.after.as_deref().unwrap_or("-")
                );
            }
        }
    }
    let _ = writeln!(
        o,
        "\nverdict: exit {}{}",
        r.verdict.exit_code,
        if r.verdict.reasons.is_empty() {
            " (clean)".to_string()
        } else {
            format!(": {}", r.verdict.reasons.join("; "))
        }
    );
    o
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn markdown(r: &Report) -> String {
    let mut o = String::new();
    let s = &r.summary;
    let _ = writeln!(o, "## Security status\n");
    let _ = writeln!(
        o,
        "{} components scanned: **{} affected**, {} undecidable, {} triaged, {} patched, {} not affected.\n",
        s.components, s.affected, s.undecidable, s.triaged, s.patched, s.not_affected
    );
    let _ = writeln!(o, "Vulnerability data:\n");
    for l in snapshot_lines(r) {
        let _ = writeln!(o, "- {}", l.trim());
    }
    let _ = writeln!(o);
    let rows: Vec<&Finding> = ordered(r)
        .into_iter()
        .filter(|f| f.status != Status::Patched && f.status != Status::NotAffected)
        .collect();
    if !rows.is_empty() {
        let _ = writeln!(
            o,
            "| ID | Component | Version | CVSS | Status | Note |\n| --- | --- | --- | --- | --- | --- |"
        );
        for f in rows {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} |",
                f.id,
                md_escape(&f.component),
                md_escape(version(f)),
                score(f),
                status_str(f.status),
                md_escape(f.reasons.last().map(String::as_str).unwrap_or(""))
            );
        }
        let _ = writeln!(o);
    }
    if let Some(d) = &r.diff {
        let _ = writeln!(o, "### Since the last release\n");
        for (what, list) in [
            ("New", &d.new),
            ("Fixed", &d.fixed),
            ("Changed", &d.changed),
        ] {
            let ids: Vec<String> = list
                .iter()
                .map(|e| format!("{} ({})", e.id, md_escape(&e.component)))
                .collect();
            let _ = writeln!(
                o,
                "- {what}: {}",
                if ids.is_empty() {
                    "none".into()
                } else {
                    ids.join(", ")
                }
            );
        }
        let _ = writeln!(o);
    }
    o
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn html(r: &Report) -> String {
    let mut o = String::new();
    let s = &r.summary;
    o.push_str(concat!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<title>spark-cve report</title><style>",
        "body{font-family:system-ui,sans-serif;margin:2em;color:#222}",
        "table{border-collapse:collapse;width:100%}th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}",
        "th{background:#f3f3f3}.affected{background:#fde2e2}.undecidable{background:#fff4cc}",
        ".triaged{background:#e6f0ff}.patched,.not-affected{background:#e7f7e7}.fail{font-weight:bold;color:#b00}",
        "td:first-child{white-space:nowrap}code{font-size:90%}</style></head><body>\n"
    ));
    let _ = writeln!(o, "<h1>spark-cve report</h1>");
    let _ = writeln!(
        o,
        "<p>Generated {} by {}.</p>",
        esc(&r.generated),
        esc(&r.tool)
    );
    let _ = writeln!(
        o,
        "<p class=\"{}\">Verdict: exit {}{}</p>",
        if r.verdict.exit_code == 0 {
            "ok"
        } else {
            "fail"
        },
        r.verdict.exit_code,
        if r.verdict.reasons.is_empty() {
            " (clean)".to_string()
        } else {
            format!(": {}", esc(&r.verdict.reasons.join("; ")))
        }
    );
    let _ = writeln!(
        o,
        "<p>{} components: {} affected, {} undecidable, {} triaged, {} patched, {} not affected.</p>",
        s.components, s.affected, s.undecidable, s.triaged, s.patched, s.not_affected
    );
    let _ = writeln!(o, "<h2>Vulnerability data</h2><ul>");
    for l in snapshot_lines(r) {
        let _ = writeln!(o, "<li><code>{}</code></li>", esc(l.trim()));
    }
    let _ = writeln!(o, "</ul>");
    if let Some(d) = &r.diff {
        let _ = writeln!(o, "<h2>Since {}</h2><ul>", esc(&d.baseline));
        for (what, list) in [
            ("New", &d.new),
            ("Fixed", &d.fixed),
            ("Changed", &d.changed),
        ] {
            let ids: Vec<String> = list
                .iter()
                .map(|e| format!("{} ({})", esc(&e.id), esc(&e.component)))
                .collect();
            let _ = writeln!(
                o,
                "<li>{what}: {}</li>",
                if ids.is_empty() {
                    "none".into()
                } else {
                    ids.join(", ")
                }
            );
        }
        let _ = writeln!(o, "</ul>");
    }
    let _ = writeln!(
        o,
        "<h2>Findings</h2><table><tr><th>ID</th><th>Component</th><th>Version</th><th>CVSS</th><th>Status</th><th>Why</th><th>Triage</th><th>Summary</th></tr>"
    );
    for f in ordered(r) {
        let triage = f.triage.as_ref().map_or(String::new(), |t| {
            format!(
                "{} by {} until {}",
                esc(&t.status),
                esc(&t.owner),
                esc(&t.expires)
            )
        });
        let _ = writeln!(
            o,
            "<tr class=\"{}\"><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            status_str(f.status),
            if gates(f, &r.policy) {
                "<span class=\"fail\">&#9888; </span>"
            } else {
                ""
            },
            esc(&f.id),
            esc(&f.component),
            esc(version(f)),
            score(f),
            status_str(f.status),
            esc(&f.reasons.join("; ")),
            triage,
            esc(&f.summary)
        );
    }
    let _ = writeln!(o, "</table></body></html>");
    o
}

fn sarif(r: &Report) -> serde_json::Value {
    let mut rules = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut results = Vec::new();
    for f in ordered(r) {
        if f.status == Status::Patched || f.status == Status::NotAffected {
            continue;
        }
        if seen.insert(f.id.clone()) {
            let mut props = json!({ "tags": ["security"] });
            if let Some(s) = f.cvss {
                props["security-severity"] = json!(format!("{s:.1}"));
            }
            rules.push(json!({
                "id": f.id,
                "shortDescription": { "text": if f.summary.is_empty() { f.id.clone() } else { f.summary.chars().take(200).collect() } },
                "helpUri": help_uri(&f.id),
                "properties": props,
            }));
        }
        let level = if gates(f, &r.policy) {
            "error"
        } else if f.status.is_open() {
            "warning"
        } else {
            "note"
        };
        let mut result = json!({
            "ruleId": f.id,
            "level": level,
            "message": { "text": format!("{} {}@{}: {} ({})", f.id, f.component, version(f), status_str(f.status), f.reasons.join("; ")) },
            "locations": [{
                // A recipe read from several SBOM files lists them all; SARIF takes one URI.
                "physicalLocation": { "artifactLocation": { "uri": f.source.split(", ").next().unwrap_or("") } },
                "logicalLocations": [{ "name": format!("{}@{}", f.component, version(f)), "kind": "module" }]
            }],
            "partialFingerprints": { "spark-cve/v1": format!("{}:{}", f.id, f.component) },
        });
        if let Some(t) = f.triage.as_ref().filter(|_| f.status == Status::Triaged) {
            result["suppressions"] = json!([{
                "kind": "external",
                "status": "accepted",
                "justification": format!("{} by {} until {}: {}", t.status, t.owner, t.expires, t.justification),
            }]);
        }
        results.push(result);
    }
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": {
                "name": "spark-cve",
                "version": env!("CARGO_PKG_VERSION"),
                "informationUri": "https://example.invalid/spark/ci/spark-cve",
                "rules": rules,
            }},
            "properties": {
                "snapshot": r.snapshot.path,
                "snapshotSha256": r.snapshot.sha256,
                "snapshotDataDate": r.snapshot.data_date,
                "snapshotAgeDays": r.snapshot.age_days,
            },
            "results": results,
        }]
    })
}

fn help_uri(id: &str) -> String {
    if id.starts_with("CVE-") {
        format!("https://nvd.nist.gov/vuln/detail/{id}")
    } else if id.starts_with("RUSTSEC-") {
        format!("https://rustsec.org/advisories/{id}.html")
    } else {
        format!("https://osv.dev/vulnerability/{id}")
    }
}
