//! The update agent's externally visible state.

use std::fmt;
use std::str::FromStr;

/// Where the update agent is. The string form (kebab-case) is what the `State` property and the
/// status report carry; it is stable, so monitoring may match on it.
///
/// ```text
///  idle ──> checking ──> downloading ──> verifying ──> installing ──> rebooting
///   ^           │             │               │             │             │ (new slot boots)
///   │           v             v               v             v             v
///   └──────── failed <────────┴───────────────┴─────────────┴──── checking-health ──> committing ──> idle
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateState {
    /// Nothing to do; waiting for an offer or the next poll.
    Idle,
    /// Asking the OTA server whether a release is available.
    Checking,
    /// Fetching the bundle to `/data`.
    Downloading,
    /// Checking the downloaded bundle's size and SHA-256 against the signed manifest.
    Verifying,
    /// RAUC is writing the other slot.
    Installing,
    /// Installed; the agent asked for a reboot into the new slot.
    Rebooting,
    /// Booted the new slot; running the health check.
    CheckingHealth,
    /// Health check passed; marking the slot good with RAUC.
    Committing,
    /// The last update failed (see `LastError`); the device runs a good slot.
    Failed,
}

impl UpdateState {
    /// Every state, in the order of a successful update (then `Failed`).
    pub const ALL: [UpdateState; 9] = [
        UpdateState::Idle,
        UpdateState::Checking,
        UpdateState::Downloading,
        UpdateState::Verifying,
        UpdateState::Installing,
        UpdateState::Rebooting,
        UpdateState::CheckingHealth,
        UpdateState::Committing,
        UpdateState::Failed,
    ];

    /// The stable string form.
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateState::Idle => "idle",
            UpdateState::Checking => "checking",
            UpdateState::Downloading => "downloading",
            UpdateState::Verifying => "verifying",
            UpdateState::Installing => "installing",
            UpdateState::Rebooting => "rebooting",
            UpdateState::CheckingHealth => "checking-health",
            UpdateState::Committing => "committing",
            UpdateState::Failed => "failed",
        }
    }
}

impl fmt::Display for UpdateState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no [`UpdateState`] (an agent newer than this client, or a typo).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownState(pub String);

impl fmt::Display for UnknownState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown update state {:?}: the agent may be newer than this client",
            self.0
        )
    }
}

impl std::error::Error for UnknownState {}

impl FromStr for UpdateState {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        UpdateState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_form_round_trips_and_matches_serde() {
        for state in UpdateState::ALL {
            assert_eq!(state.as_str().parse::<UpdateState>(), Ok(state));
            assert_eq!(
                serde_json::to_string(&state).unwrap(),
                format!("\"{}\"", state.as_str())
            );
        }
        assert!("Idle".parse::<UpdateState>().is_err());
    }
}
