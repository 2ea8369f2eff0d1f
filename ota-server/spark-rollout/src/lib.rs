//! `spark-rollout`: the staged-rollout engine of the OTA server, with no storage and no I/O.
//!
//! It decides, for one rollout, which device may update when: a [`Plan`] of waves (cumulative
//! share of the eligible fleet + start offset), stable stratified wave assignment
//! ([`assign`]), per-wave health gates (failure rate over devices that reported, minimum sample,
//! soak, telemetry health), maintenance windows in site-local time ([`window`]), a concurrency
//! cap, a penalty box, manual pause/resume/abort and rollback rollouts. The state is one serde
//! value ([`Rollout`]); every call takes the current time, so the same code runs under the real
//! clock and a time-compressed one ([`clock`]). README.md has the model and a worked example.

pub mod assign;
pub mod clock;
mod error;
pub mod plan;
mod rollout;
pub mod sim;
pub mod target;
pub mod window;

pub use clock::{Clock, CompressedClock, ManualClock, SystemClock};
pub use error::{ControlError, CreateError, PlanError, ReportError, StateError, WindowError};
pub use plan::{Plan, Wave};
pub use rollout::{
    Decision, DeviceState, DeviceStatus, Gates, Outcome, PauseCause, PauseReason, PenaltyPolicy,
    Phase, Rollout, RolloutEvent, RolloutHeader, RolloutSpec, RolloutStatus, StatusReport,
    Telemetry, TelemetryGate, WaitReason, WaveCounts, WaveStage, WaveState, WaveStatus,
};
pub use target::{DeviceInfo, Ineligible, ReleaseTarget, RolloutKind, TargetFilter};
pub use window::{Day, MaintenanceWindow};

/// Re-exported so the server uses the same time types without its own dependency.
pub use jiff;
