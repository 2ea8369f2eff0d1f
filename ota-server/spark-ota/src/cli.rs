//! What the `spark-ota` subcommands do, apart from `serve`: calls to the admin API through
//! [`AdminClient`] and their output for people (tables, progress bars) or, with `--json`, for
//! scripts. `main.rs` only parses flags and calls these.

use std::path::Path;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::catalog::Uploaded;
use crate::client::AdminClient;
use crate::error::ClientError;
use crate::rollouts::RolloutStatus;
use crate::store::{DataCost, DeviceRecord, ReleaseRecord};

fn when(t: Option<i64>) -> String {
    match t {
        None => "-".into(),
        Some(t) => time_text(t),
    }
}

fn time_text(t: i64) -> String {
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
    release: &Path,
    json: bool,
) -> Result<Uploaded, ClientError> {
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message("uploading");
    let up = c.upload(bundle, release, &bar).await?;
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
    }
    Ok(up)
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

/// `device list`.
pub async fn device_list(c: &AdminClient, json: bool) -> Result<(), ClientError> {
    let list: Vec<DeviceRecord> = c.get("/v1/devices").await?;
    if json {
        return print_json(&list);
    }
    println!(
        "{:<16} {:<10} {:<5} {:<16} {:<16} {:<21}",
        "DEVICE", "VERSION", "SLOT", "STATE", "LAST REASON", "LAST SEEN"
    );
    for d in list {
        println!(
            "{:<16} {:<10} {:<5} {:<16} {:<16} {:<21}",
            d.device,
            d.current_version.as_deref().unwrap_or("-"),
            d.booted_slot.as_deref().unwrap_or("-"),
            d.agent_state.as_deref().unwrap_or("-"),
            d.last_reason.as_deref().unwrap_or("-"),
            time_text(d.last_seen)
        );
    }
    Ok(())
}

/// `rollout create`.
pub async fn rollout_create(
    c: &AdminClient,
    release: i64,
    id: Option<&str>,
    json: bool,
) -> Result<RolloutStatus, ClientError> {
    let s: RolloutStatus = c
        .post(
            "/v1/rollouts",
            &serde_json::json!({ "release": release, "id": id }),
        )
        .await?;
    if json {
        print_json(&s)?;
    } else {
        println!(
            "rollout {} of {} {} created ({})",
            s.id, s.compatible, s.version, s.state
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

fn show_rollout(multi: &MultiProgress, s: &RolloutStatus) {
    let style = ProgressStyle::with_template("{prefix:<28} [{bar:30}] {pos}/{len} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let head = multi.add(ProgressBar::new(0));
    head.set_style(
        ProgressStyle::with_template("{msg}").unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    head.finish_with_message(format!(
        "rollout {} — {} {} — {}{} — {} bytes served",
        s.id,
        s.compatible,
        s.version,
        s.state,
        s.reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default(),
        s.bytes_served
    ));
    for (i, w) in s.waves.iter().enumerate() {
        let bar = multi.add(ProgressBar::new(w.devices));
        bar.set_style(style.clone());
        bar.set_prefix(format!("  wave {} ({} %)", i + 1, w.share));
        bar.set_position(w.updated);
        bar.finish_with_message(format!(
            "updated, {} offered, {} failed",
            w.offered, w.failed
        ));
    }
}

/// `rollout status [ID]`: one progress bar per wave (updated / devices).
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
            println!(
                "rollout {} {} {} {}{} bytes-served={}",
                s.id,
                s.compatible,
                s.version,
                s.state,
                s.reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default(),
                s.bytes_served
            );
            for (i, w) in s.waves.iter().enumerate() {
                println!(
                    "  wave {} ({} %): {}/{} updated, {} offered, {} failed",
                    i + 1,
                    w.share,
                    w.updated,
                    w.devices,
                    w.offered,
                    w.failed
                );
            }
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
