//! What the `spark-ota` subcommands do, apart from `serve`: calls to the admin API through
//! [`AdminClient`] and their output for people (tables, progress bars) or, with `--json`, for
//! scripts. `main.rs` only parses flags and calls these.

use std::path::Path;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::catalog::{ManifestReplaced, Uploaded};
use crate::client::AdminClient;
use crate::error::ClientError;
use crate::rollouts::{CreateRollout, RolloutStatus, WaveStatus};
use crate::store::{DataCost, DeviceRecord, ReleaseRecord};

fn when(t: Option<i64>) -> String {
    match t {
        None => "-".into(),
        Some(t) => time_text(t),
    }
}

/// A unix time as RFC 3339 (UTC), or the number itself if out of range.
pub(crate) fn time_text(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t.to_string())
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<(), ClientError> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// `release upload BUNDLE RELEASE`.
pub async fn release_upload(
    c: &AdminClient,
    bundle: &Path,
    release: Option<&Path>,
    json: bool,
) -> Result<Uploaded, ClientError> {
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message("uploading");
    let up = c.upload_maybe_signed(bundle, release, &bar).await?;
    if json {
        print_json(&up)?;
    } else {
        println!(
            "release {} stored: {} {} ({} bytes, sha256 {}{}), signed by {}",
            up.release,
            up.compatible,
            up.version,
            up.size,
            up.sha256,
            if up.duplicate_bundle {
                ", bundle already stored"
            } else {
                ""
            },
            up.signer
        );
        if up.dev_signed {
            println!("release manifest signed by the server (dev mode)");
        }
    }
    Ok(up)
}

/// `release manifest ID MANIFEST`: replaces the release's signed manifest and shows what
/// changed.
pub async fn release_manifest(
    c: &AdminClient,
    id: i64,
    manifest: &Path,
    json: bool,
) -> Result<ManifestReplaced, ClientError> {
    let r = c.replace_manifest(id, manifest).await?;
    if json {
        print_json(&r)?;
        return Ok(r);
    }
    if r.unchanged {
        println!(
            "release {} ({} {}): this manifest is stored already; nothing changed",
            r.release, r.compatible, r.version
        );
        return Ok(r);
    }
    println!(
        "release {} ({} {}): signed manifest replaced; devices checking in get the new one",
        r.release, r.compatible, r.version
    );
    let (new, old) = (&r.manifest, &r.previous);
    let line = |what: &str, new: String, old: String| {
        if new == old {
            println!("  {what:<11} {new}");
        } else {
            println!("  {what:<11} {new} (was {old})");
        }
    };
    let downgrade = |allowed: bool| if allowed { "allowed" } else { "not allowed" }.to_owned();
    let min = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    line("issued", time_text(new.issued_at), time_text(old.issued_at));
    line(
        "expires",
        time_text(new.expires_at),
        time_text(old.expires_at),
    );
    line(
        "downgrade",
        downgrade(new.allow_downgrade),
        downgrade(old.allow_downgrade),
    );
    line("min version", min(&new.min_version), min(&old.min_version));
    line("signed by", new.key_id.clone(), old.key_id.clone());
    Ok(r)
}

/// `release list`.
pub async fn release_list(c: &AdminClient, json: bool) -> Result<(), ClientError> {
    let list: Vec<ReleaseRecord> = c.get("/v1/releases").await?;
    if json {
        return print_json(&list);
    }
    println!(
        "{:>4}  {:<14} {:<12} {:>12}  {:<16} {:<21} STATE",
        "ID", "COMPATIBLE", "VERSION", "SIZE", "SHA256", "EXPIRES"
    );
    for r in list {
        let state = match (&r.yanked_at, &r.yank_reason) {
            (Some(_), Some(why)) => format!("yanked: {why}"),
            (Some(_), None) => "yanked".into(),
            _ => "available".into(),
        };
        println!(
            "{:>4}  {:<14} {:<12} {:>12}  {:<16} {:<21} {}",
            r.id,
            r.compatible,
            r.version,
            r.bundle_size,
            &r.bundle_sha256[..16.min(r.bundle_sha256.len())],
            time_text(r.expires_at),
            state
        );
    }
    Ok(())
}

/// `release show ID`.
pub async fn release_show(c: &AdminClient, id: i64) -> Result<(), ClientError> {
    let r: ReleaseRecord = c.get(&format!("/v1/releases/{id}")).await?;
    print_json(&r)
}

/// `release yank ID`.
pub async fn release_yank(
    c: &AdminClient,
    id: i64,
    reason: Option<&str>,
) -> Result<(), ClientError> {
    let r: ReleaseRecord = c
        .post(
            &format!("/v1/releases/{id}/yank"),
            &serde_json::json!({ "reason": reason }),
        )
        .await?;
    println!(
        "release {} ({} {}) yanked at {}: it is offered to no device any more",
        r.id,
        r.compatible,
        r.version,
        when(r.yanked_at)
    );
    Ok(())
}

/// `device set ID`: hardware revision, tags, site time zone.
pub async fn device_set(
    c: &AdminClient,
    id: &str,
    attrs: &crate::store::DeviceAttributes,
    json: bool,
) -> Result<DeviceRecord, ClientError> {
    let d: DeviceRecord = c
        .put(
            &format!("/v1/devices/{id}/attributes"),
            &serde_json::to_value(attrs)?,
        )
        .await?;
    if json {
        print_json(&d)?;
    } else {
        println!(
            "device {}: hardware {}, tags {}, time zone {}",
            d.device,
            d.hardware_rev.as_deref().unwrap_or("-"),
            if d.tags.is_empty() {
                "-".to_owned()
            } else {
                d.tags
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            },
            d.time_zone.as_deref().unwrap_or("UTC")
        );
    }
    Ok(d)
}

/// `device list`.
pub async fn device_list(c: &AdminClient, json: bool) -> Result<(), ClientError> {
    let list: Vec<DeviceRecord> = c.get("/v1/devices").await?;
    if json {
        return print_json(&list);
    }
    println!(
        "{:<16} {:<10} {:<5} {:<16} {:<16} {:<21} {:<8} {:<20} TAGS",
        "DEVICE", "VERSION", "SLOT", "STATE", "LAST REASON", "LAST SEEN", "HW", "TIME ZONE"
    );
    for d in list {
        let tags = d
            .tags
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        println!(
            "{:<16} {:<10} {:<5} {:<16} {:<16} {:<21} {:<8} {:<20} {}",
            d.device,
            d.current_version.as_deref().unwrap_or("-"),
            d.booted_slot.as_deref().unwrap_or("-"),
            d.agent_state.as_deref().unwrap_or("-"),
            d.last_reason.as_deref().unwrap_or("-"),
            time_text(d.last_seen),
            d.hardware_rev.as_deref().unwrap_or("-"),
            d.time_zone.as_deref().unwrap_or("-"),
            if tags.is_empty() { "-" } else { &tags }
        );
    }
    Ok(())
}

/// `rollout create` with the defaults (`immediate` plan, `fast` gates).
pub async fn rollout_create(
    c: &AdminClient,
    release: i64,
    id: Option<&str>,
    json: bool,
) -> Result<RolloutStatus, ClientError> {
    let req = CreateRollout {
        release,
        id: id.map(str::to_owned),
        ..CreateRollout::default()
    };
    rollout_create_with(c, &req, json).await
}

/// `rollout create` with a plan, filter, gates, windows, cap and penalty policy.
pub async fn rollout_create_with(
    c: &AdminClient,
    req: &CreateRollout,
    json: bool,
) -> Result<RolloutStatus, ClientError> {
    let body = serde_json::to_value(req)?;
    let s: RolloutStatus = c.post("/v1/rollouts", &body).await?;
    if json {
        print_json(&s)?;
    } else {
        println!(
            "rollout {} of {} {} created ({}): plan {}, {} devices targeted",
            s.id,
            s.compatible,
            s.version,
            s.state,
            s.plan,
            s.waves.iter().map(|w| w.devices).sum::<u64>()
        );
    }
    Ok(s)
}

/// `rollout pause|resume|abort ID`.
pub async fn rollout_action(
    c: &AdminClient,
    id: &str,
    action: &str,
    reason: Option<&str>,
) -> Result<RolloutStatus, ClientError> {
    let s: RolloutStatus = c
        .post(
            &format!("/v1/rollouts/{id}/{action}"),
            &serde_json::json!({ "reason": reason }),
        )
        .await?;
    println!("rollout {} is {}", s.id, s.state);
    Ok(s)
}

fn header_line(s: &RolloutStatus) -> String {
    format!(
        "rollout {} — {} {} — plan {} — {}{} — {} bytes served{}",
        s.id,
        s.compatible,
        s.version,
        s.plan,
        s.state,
        s.reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default(),
        s.bytes_served,
        s.now.map(|n| format!(" — now {n}")).unwrap_or_default()
    )
}

/// The figures after a wave's bar: stage, failures and their rate, the gate's state.
fn wave_line(w: &WaveStatus) -> String {
    let rate = w
        .failure_rate_bp
        .map(|bp| format!("{}.{:02}%", bp / 100, bp % 100))
        .unwrap_or_else(|| "-".into());
    let mut extra = String::new();
    if w.in_progress > 0 {
        extra.push_str(&format!(", {} updating", w.in_progress));
    }
    if w.penalty_box > 0 {
        extra.push_str(&format!(", {} in penalty box", w.penalty_box));
    }
    if w.silent > 0 {
        extra.push_str(&format!(", {} silent of {}", w.silent, w.silent_judged));
    }
    format!(
        "updated [{}] {} offered, {} failed (rate {rate}), {} reachable{extra} — gate: {}",
        w.stage, w.offered, w.failed, w.reachable, w.gate
    )
}

fn wave_prefix(i: usize, w: &WaveStatus) -> String {
    format!(
        "  wave {} ({})",
        i + 1,
        spark_rollout::plan::format_share(w.share_bp.max(w.share * 100))
    )
}

fn show_rollout(multi: &MultiProgress, s: &RolloutStatus) {
    let style = ProgressStyle::with_template("{prefix:<16} [{bar:30}] {pos}/{len} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let head = multi.add(ProgressBar::new(0));
    head.set_style(
        ProgressStyle::with_template("{msg}").unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    head.finish_with_message(header_line(s));
    for (i, w) in s.waves.iter().enumerate() {
        let bar = multi.add(ProgressBar::new(w.devices));
        bar.set_style(style.clone());
        bar.set_prefix(wave_prefix(i, w));
        bar.set_position(w.updated);
        bar.finish_with_message(wave_line(w));
    }
}

/// `rollout status [ID]`: one progress bar per wave (updated / devices) with its failure rate
/// and gate state.
pub async fn rollout_status(
    c: &AdminClient,
    id: Option<&str>,
    json: bool,
) -> Result<Vec<RolloutStatus>, ClientError> {
    let list: Vec<RolloutStatus> = match id {
        Some(id) => vec![c.get(&format!("/v1/rollouts/{id}")).await?],
        None => c.get("/v1/rollouts").await?,
    };
    if json {
        print_json(&list)?;
        return Ok(list);
    }
    let multi = MultiProgress::new();
    if multi.is_hidden() {
        // Not a terminal: the same figures as text lines.
        for s in &list {
            print!("{}", status_text(s));
        }
    } else {
        for s in &list {
            show_rollout(&multi, s);
        }
        // Let the final frame draw before the program exits.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(list)
}

/// A rollout's status as text lines (what `rollout status` prints when not on a terminal).
pub fn status_text(s: &RolloutStatus) -> String {
    let mut out = format!("{}\n", header_line(s));
    for (i, w) in s.waves.iter().enumerate() {
        out.push_str(&format!(
            "{}: {}/{} {}\n",
            wave_prefix(i, w),
            w.updated,
            w.devices,
            wave_line(w)
        ));
    }
    out
}

/// `data-cost [--by-device]`.
pub async fn data_cost(c: &AdminClient, by_device: bool, json: bool) -> Result<(), ClientError> {
    let path = if by_device {
        "/v1/data-cost?by=device"
    } else {
        "/v1/data-cost?by=rollout"
    };
    let list: Vec<DataCost> = c.get(path).await?;
    if json {
        return print_json(&list);
    }
    println!(
        "{:<28} {:>14} {:>9} {:>8}",
        if by_device { "DEVICE" } else { "ROLLOUT" },
        "BYTES",
        "REQUESTS",
        "DEVICES"
    );
    for d in list {
        let key = if d.key.is_empty() { "(none)" } else { &d.key };
        println!(
            "{:<28} {:>14} {:>9} {:>8}",
            key, d.bytes, d.requests, d.devices
        );
    }
    Ok(())
}

/// Parses a maintenance window `[DAYS ]HH:MM-HH:MM`, e.g. `02:00-05:00` or `sat,sun 22:00-04:00`
/// (site-local wall-clock time; an end not after the start wraps past midnight).
pub fn parse_window(text: &str) -> Result<spark_rollout::MaintenanceWindow, String> {
    let text = text.trim();
    let (days, span) = match text.rsplit_once(' ') {
        Some((d, s)) => (Some(d.trim()), s),
        None => (None, text),
    };
    let (start, end) = span.split_once('-').ok_or_else(|| {
        format!("window {text:?}: expected [DAYS ]HH:MM-HH:MM, e.g. sat,sun 02:00-05:00")
    })?;
    let time = |t: &str| -> Result<spark_rollout::jiff::civil::Time, String> {
        t.trim()
            .parse()
            .map_err(|e| format!("window {text:?}: time {t:?}: {e}"))
    };
    let days = match days {
        None => Vec::new(),
        Some(d) => d
            .split(',')
            .map(|day| {
                serde_json::from_value(serde_json::Value::String(day.trim().to_lowercase()))
                    .map_err(|_| {
                        format!(
                            "window {text:?}: day {day:?}: use mon, tue, wed, thu, fri, sat or sun"
                        )
                    })
            })
            .collect::<Result<Vec<spark_rollout::Day>, String>>()?,
    };
    let w = spark_rollout::MaintenanceWindow {
        days,
        start: time(start)?,
        end: time(end)?,
    };
    w.validate().map_err(|e| format!("window {text:?}: {e}"))?;
    Ok(w)
}

/// Parses a percentage (`5`, `2.5`, `5%`) into basis points.
pub fn parse_percent_bp(text: &str) -> Result<u32, String> {
    let t = text.trim().trim_end_matches('%');
    let v: f64 = t
        .parse()
        .map_err(|_| format!("{text:?} is not a percentage (e.g. 5 or 2.5)"))?;
    if !(0.0..=100.0).contains(&v) {
        return Err(format!("{text:?}: a percentage must be between 0 and 100"));
    }
    Ok((v * 100.0).round() as u32)
}

/// Parses a duration: `4h`, `45m`, `1h30m`, `2d`, `90s` or ISO 8601 (`PT4H`).
pub fn parse_duration(text: &str) -> Result<spark_rollout::jiff::SignedDuration, String> {
    let t = text.trim();
    // Days are 24 hours here (the friendly format of SignedDuration has no days).
    if let Some(d) = t.strip_suffix('d')
        && let Ok(n) = d.parse::<i64>()
    {
        return Ok(spark_rollout::jiff::SignedDuration::from_hours(n * 24));
    }
    t.parse()
        .map_err(|e| format!("duration {text:?}: {e}; use e.g. 4h, 45m, 1h30m, 2d"))
}

/// Parses `KEY=VALUE`.
pub fn parse_tag(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() && !v.trim().is_empty() => {
            Ok((k.trim().to_owned(), v.trim().to_owned()))
        }
        _ => Err(format!("tag {text:?}: expected KEY=VALUE, e.g. region=eu")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_percentages_durations_tags() {
        let w = parse_window("sat,sun 22:00-04:00").unwrap();
        assert_eq!(
            w.days,
            vec![spark_rollout::Day::Sat, spark_rollout::Day::Sun]
        );
        assert_eq!(w.start.to_string(), "22:00:00");
        assert!(parse_window("02:00-05:00").unwrap().days.is_empty());
        assert!(
            parse_window("02:00-02:00")
                .unwrap_err()
                .contains("same time")
        );
        assert!(
            parse_window("funday 02:00-05:00")
                .unwrap_err()
                .contains("day")
        );
        assert!(parse_window("2-5").is_err());
        assert_eq!(parse_percent_bp("2.5").unwrap(), 250);
        assert_eq!(parse_percent_bp("5%").unwrap(), 500);
        assert!(parse_percent_bp("150").is_err());
        assert_eq!(parse_duration("4h").unwrap().as_secs(), 4 * 3600);
        assert_eq!(parse_duration("1h30m").unwrap().as_secs(), 5400);
        assert_eq!(parse_duration("2d").unwrap().as_secs(), 2 * 86400);
        assert_eq!(parse_duration("PT45M").unwrap().as_secs(), 45 * 60);
        assert!(parse_duration("soon").is_err());
        assert_eq!(
            parse_tag("region=eu").unwrap(),
            ("region".into(), "eu".into())
        );
        assert!(parse_tag("region").is_err());
    }
}
