//! The status report the update agent sends to the OTA server on every state transition.
//!
//! This is the shape the OTA server accepts (issue 4 defines the endpoint; this type is the
//! agreement): one JSON object per transition,
//!
//! ```text
//! POST /v1/devices/{device}/update-status      (mutual TLS: the client certificate names the device)
//! Content-Type: application/json
//!
//! {"device":"bbb-0042","seq":17,"at":1767225600,
//!  "from":"verifying","to":"failed","reason":"digest-mismatch",
//!  "current-version":"1.4.0","release-version":"1.5.0",
//!  "detail":"bundle SHA-256 differs from the signed manifest"}
//! ```
//!
//! `seq` increases by one per report and survives restarts (it is kept in the agent's persisted
//! state), so the server can drop duplicates (the agent resends a report whose answer it did not
//! get) and see gaps. Keys are kebab-case; a server must ignore keys it does not know so that
//! agents can add fields. `reason` is a [`Reason`] in its kebab-case form; `detail` is for people
//! and may change between versions.

use crate::UpdateState;

/// One transition of the agent's state machine.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct StatusReport {
    /// The device's serial (the CN of its client certificate).
    pub device: String,
    /// Report sequence number, one more than the previous report of this device.
    pub seq: u64,
    /// When the transition happened, seconds since the Unix epoch (UTC).
    pub at: u64,
    /// State before the transition.
    pub from: UpdateState,
    /// State after the transition.
    pub to: UpdateState,
    /// Why.
    pub reason: Reason,
    /// Version of the running slot.
    pub current_version: String,
    /// Version of the release being handled, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_version: Option<String>,
    /// Human-readable detail (an error message, the slot booted, bytes resumed...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Machine-readable reason codes of a transition. Stable: the OTA server aggregates on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// A poll of the OTA server started (timer or `CheckNow`).
    Poll,
    /// The server or uplink offered a release that passed every manifest check.
    Offered,
    /// Nothing newer is offered.
    UpToDate,
    /// The agent started again and picked up the persisted state (after a crash or power cut).
    Resumed,
    /// The download finished.
    Downloaded,
    /// Size and SHA-256 match the signed manifest.
    Verified,
    /// RAUC installed the bundle into the other slot.
    Installed,
    /// The new slot booted.
    Booted,
    /// The health check passed.
    Healthy,
    /// RAUC marked the booted slot good: the update is complete.
    Committed,
    // ---- failures ----
    /// The signed release was refused (signature, key, compatible, expiry, version): nothing
    /// was downloaded.
    ReleaseRejected,
    /// Not enough free space on `/data` for the bundle.
    NoSpace,
    /// The download failed for good (HTTP error, or retries exhausted).
    DownloadFailed,
    /// The downloaded file's size or SHA-256 differs from the signed manifest.
    DigestMismatch,
    /// RAUC refused or failed the install.
    InstallFailed,
    /// The health check failed on the new slot; it was marked bad and the device reboots into
    /// the old one.
    HealthFailed,
    /// After the reboot the old slot is running (the bootloader fell back: boot attempts ran
    /// out or the new slot was marked bad).
    RolledBack,
    /// A local error (file system, D-Bus) stopped the update; the device runs its old slot.
    Internal,
}

impl Reason {
    /// The kebab-case string form (as in the JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Poll => "poll",
            Reason::Offered => "offered",
            Reason::UpToDate => "up-to-date",
            Reason::Resumed => "resumed",
            Reason::Downloaded => "downloaded",
            Reason::Verified => "verified",
            Reason::Installed => "installed",
            Reason::Booted => "booted",
            Reason::Healthy => "healthy",
            Reason::Committed => "committed",
            Reason::ReleaseRejected => "release-rejected",
            Reason::NoSpace => "no-space",
            Reason::DownloadFailed => "download-failed",
            Reason::DigestMismatch => "digest-mismatch",
            Reason::InstallFailed => "install-failed",
            Reason::HealthFailed => "health-failed",
            Reason::RolledBack => "rolled-back",
            Reason::Internal => "internal",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape_is_the_documented_one() {
        let report = StatusReport {
            device: "bbb-0042".into(),
            seq: 17,
            at: 1_767_225_600,
            from: UpdateState::Verifying,
            to: UpdateState::Failed,
            reason: Reason::DigestMismatch,
            current_version: "1.4.0".into(),
            release_version: Some("1.5.0".into()),
            detail: Some("bundle SHA-256 differs from the signed manifest".into()),
        };
        let json = serde_json::to_string(&report).unwrap();
        assert_eq!(
            json,
            r#"{"device":"bbb-0042","seq":17,"at":1767225600,"from":"verifying","to":"failed","reason":"digest-mismatch","current-version":"1.4.0","release-version":"1.5.0","detail":"bundle SHA-256 differs from the signed manifest"}"#
        );
        assert_eq!(serde_json::from_str::<StatusReport>(&json).unwrap(), report);
        // Servers and older agents ignore fields they do not know.
        let extra = json.replace("\"seq\"", "\"new-field\":1,\"seq\"");
        assert_eq!(
            serde_json::from_str::<StatusReport>(&extra).unwrap(),
            report
        );
    }

    #[test]
    fn reason_strings_match_serde() {
        for reason in [
            Reason::Poll,
            Reason::ReleaseRejected,
            Reason::UpToDate,
            Reason::NoSpace,
        ] {
            assert_eq!(
                serde_json::to_string(&reason).unwrap(),
                format!("\"{}\"", reason.as_str())
            );
        }
    }
}
