//! Cloud commands: each goes to the daemon that owns it, and its outcome goes back to the cloud
//! as a `CommandResult` with the same id.
//!
//! | command | owner | result |
//! | --- | --- | --- |
//! | `UpdateAvailable(manifest)` | `spark-updated`: `Update1.UpdateAvailable` | `Accepted` once the agent queued it (it verifies and reports the install itself) |
//! | `Reboot(delay)` | `spark-updated`: `Update1.Reboot` | `Succeeded` once the agent scheduled it |
//! | `SetConfig(version, toml)` | uplinkd: the `[uplinkd]` table, persisted on `/data` | `Succeeded` once applied |
//!
//! Failures carry a [`code`](codes) and a detail for people. Commands run in their own tasks, so
//! a slow D-Bus call never holds up the link; results produced while the link is down are sent
//! on the next session. A repeated id (the cloud resends after a reconnect) is not executed
//! again: its stored result is sent again.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use spark_proto::{Command, CommandKind, CommandResult, CommandStatus};
use tokio::sync::{mpsc, watch};

use crate::config::{CloudSet, Tunables, apply_cloud_config};

/// `CommandResult.code` values (0: none).
pub mod codes {
    /// The daemon that owns the command is not on the bus.
    pub const OWNER_NOT_ON_BUS: u16 = 1;
    /// The owner is busy (an update in progress); try later.
    pub const OWNER_BUSY: u16 = 2;
    /// The owner refused or failed (the detail carries its D-Bus error).
    pub const OWNER_FAILED: u16 = 3;
    /// The owner did not answer in time.
    pub const OWNER_TIMEOUT: u16 = 4;
    /// A SetConfig document is not valid for uplinkd.
    pub const BAD_CONFIG: u16 = 5;
    /// The new configuration could not be written to /data.
    pub const STORE_FAILED: u16 = 6;
    /// The update agent refused the release (bad signature, rollback, expired, …; the detail
    /// carries its `release-rejected: <check>: <message>`).
    pub const RELEASE_REJECTED: u16 = 7;
}

/// Commands remembered for duplicate detection.
const REMEMBERED: usize = 64;
/// Bound on a D-Bus call to the owner.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Executes commands; results go to `results` (read by the link).
#[derive(Debug)]
pub struct Commands {
    conn: zbus::Connection,
    data_dir: PathBuf,
    tunables: watch::Sender<Tunables>,
    results: mpsc::Sender<CommandResult>,
    // (id, result once known).
    seen: Mutex<VecDeque<(u64, Option<CommandResult>)>>,
}

impl Commands {
    pub fn new(
        conn: zbus::Connection,
        data_dir: PathBuf,
        tunables: watch::Sender<Tunables>,
        results: mpsc::Sender<CommandResult>,
    ) -> Arc<Commands> {
        Arc::new(Commands {
            conn,
            data_dir,
            tunables,
            results,
            seen: Mutex::new(VecDeque::new()),
        })
    }

    /// Starts executing `cmd` (or re-sends the result of an id seen before).
    pub fn dispatch(self: &Arc<Self>, cmd: Command) {
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((_, result)) = seen.iter().find(|(id, _)| *id == cmd.id) {
                tracing::info!(id = cmd.id, "command seen before; not executing it again");
                if let Some(r) = result.clone() {
                    let _ = self.results.try_send(r);
                }
                return;
            }
            if seen.len() >= REMEMBERED {
                seen.pop_front();
            }
            seen.push_back((cmd.id, None));
        }
        let this = self.clone();
        tokio::spawn(async move {
            let id = cmd.id;
            let result = this.execute(cmd).await;
            tracing::info!(id, status = ?result.status, code = result.code, detail = %result.detail, "command done");
            if let Some(slot) = this
                .seen
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter_mut()
                .find(|(i, _)| *i == id)
            {
                slot.1 = Some(result.clone());
            }
            // The link may be down: the result waits in the channel for the next session.
            let _ = this.results.send(result).await;
        });
    }

    async fn execute(&self, cmd: Command) -> CommandResult {
        let reply = |status, code, detail: String| CommandResult {
            id: cmd.id,
            status,
            code,
            detail: truncate(detail),
        };
        match cmd.kind {
            CommandKind::UpdateAvailable { manifest } => {
                tracing::info!(
                    id = cmd.id,
                    bytes = manifest.len(),
                    "forwarding UpdateAvailable to io.spark.Update1"
                );
                match self
                    .call_update1(|p| async move { p.update_available(&manifest).await })
                    .await
                {
                    Ok(()) => reply(
                        CommandStatus::Accepted,
                        0,
                        "queued by the update agent".into(),
                    ),
                    Err((status, code, detail)) => reply(status, code, detail),
                }
            }
            CommandKind::Reboot { delay_secs } => {
                tracing::info!(
                    id = cmd.id,
                    delay_secs,
                    "forwarding Reboot to io.spark.Update1"
                );
                match self
                    .call_update1(|p| async move { p.reboot(delay_secs).await })
                    .await
                {
                    Ok(()) => reply(
                        CommandStatus::Succeeded,
                        0,
                        format!("reboot in {delay_secs} s"),
                    ),
                    Err((status, code, detail)) => reply(status, code, detail),
                }
            }
            CommandKind::SetConfig {
                config_version,
                config,
            } => {
                let current = self.tunables.borrow().clone();
                let new = match apply_cloud_config(&current, &config) {
                    Ok(t) => t,
                    Err(e) => return reply(CommandStatus::Rejected, codes::BAD_CONFIG, e),
                };
                let set = CloudSet {
                    config_version,
                    tunables: new.clone(),
                };
                if let Err(e) = set.save(&self.data_dir) {
                    return reply(CommandStatus::Failed, codes::STORE_FAILED, e.to_string());
                }
                tracing::info!(config_version, ?new, "cloud set the configuration");
                self.tunables.send_replace(new);
                reply(
                    CommandStatus::Succeeded,
                    0,
                    format!("config version {config_version} applied"),
                )
            }
        }
    }

    async fn call_update1<F, Fut>(&self, call: F) -> Result<(), (CommandStatus, u16, String)>
    where
        F: FnOnce(spark_dbus::Update1Proxy<'static>) -> Fut,
        Fut: std::future::Future<Output = zbus::Result<()>>,
    {
        let proxy = spark_dbus::Update1Proxy::builder(&self.conn)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .map_err(|e| (CommandStatus::Failed, codes::OWNER_FAILED, e.to_string()))?;
        match tokio::time::timeout(CALL_TIMEOUT, call(proxy)).await {
            Err(_) => Err((
                CommandStatus::Failed,
                codes::OWNER_TIMEOUT,
                format!(
                    "{} did not answer within {} s",
                    spark_dbus::UPDATE1_NAME,
                    CALL_TIMEOUT.as_secs()
                ),
            )),
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(classify(&e)),
        }
    }
}

/// Maps a D-Bus failure of the owner to a result.
fn classify(e: &zbus::Error) -> (CommandStatus, u16, String) {
    let name = match e {
        zbus::Error::MethodError(name, _, _) => name.as_str().to_owned(),
        zbus::Error::FDO(fdo) => match **fdo {
            zbus::fdo::Error::ServiceUnknown(_) => {
                "org.freedesktop.DBus.Error.ServiceUnknown".into()
            }
            zbus::fdo::Error::NameHasNoOwner(_) => {
                "org.freedesktop.DBus.Error.NameHasNoOwner".into()
            }
            zbus::fdo::Error::LimitsExceeded(_) => {
                "org.freedesktop.DBus.Error.LimitsExceeded".into()
            }
            _ => String::new(),
        },
        _ => String::new(),
    };
    match name.as_str() {
        "org.freedesktop.DBus.Error.ServiceUnknown"
        | "org.freedesktop.DBus.Error.NameHasNoOwner" => (
            CommandStatus::Failed,
            codes::OWNER_NOT_ON_BUS,
            format!("{} is not on the bus: {e}", spark_dbus::UPDATE1_NAME),
        ),
        "org.freedesktop.DBus.Error.LimitsExceeded" | "io.spark.Update1.Error.Busy" => (
            CommandStatus::Rejected,
            codes::OWNER_BUSY,
            format!("the update agent is busy: {e}"),
        ),
        "io.spark.Update1.Error.ReleaseRejected" => (
            CommandStatus::Rejected,
            codes::RELEASE_REJECTED,
            match e {
                zbus::Error::MethodError(_, Some(msg), _) => msg.clone(),
                _ => e.to_string(),
            },
        ),
        _ => (CommandStatus::Failed, codes::OWNER_FAILED, e.to_string()),
    }
}

fn truncate(mut s: String) -> String {
    if s.len() > spark_proto::MAX_DETAIL_LEN {
        let mut cut = spark_proto::MAX_DETAIL_LEN;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_fit_the_protocol_cap() {
        let s = truncate("é".repeat(200));
        assert!(s.len() <= spark_proto::MAX_DETAIL_LEN);
        assert!(s.chars().all(|c| c == 'é'));
    }
}
