//! Errors of the rollout engine, one enum per operation family.

use thiserror::Error;

/// A wave plan that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PlanError {
    /// No waves at all.
    #[error("the plan has no waves; give at least one, e.g. 100%@0d")]
    NoWaves,
    /// More waves than supported.
    #[error("the plan has {count} waves; at most 16 are allowed")]
    TooManyWaves {
        /// Waves given.
        count: usize,
    },
    /// A share is 0 or above 100 %.
    #[error("wave {wave}: share {share_bp} bp is outside 0.01%..=100%")]
    ShareOutOfRange {
        /// Wave index (0-based).
        wave: usize,
        /// The share given.
        share_bp: u32,
    },
    /// Shares must strictly increase (they are cumulative).
    #[error(
        "wave {wave}: share {share_bp} bp is not above the previous wave's {previous_bp} bp; shares are cumulative and must increase"
    )]
    SharesNotIncreasing {
        /// Wave index.
        wave: usize,
        /// The share given.
        share_bp: u32,
        /// The previous wave's share.
        previous_bp: u32,
    },
    /// Offsets must not decrease.
    #[error(
        "wave {wave}: start offset is earlier than the previous wave's; offsets must not decrease"
    )]
    OffsetsDecreasing {
        /// Wave index.
        wave: usize,
    },
    /// A negative offset.
    #[error("wave {wave}: start offset is negative")]
    NegativeOffset {
        /// Wave index.
        wave: usize,
    },
    /// The last wave must cover the whole fleet.
    #[error("the last wave's share is {share_bp} bp; the last wave must be 100%")]
    LastWaveNotFull {
        /// The last share given.
        share_bp: u32,
    },
    /// Unparseable text.
    #[error("cannot parse plan part {part:?}: {why}")]
    Syntax {
        /// The offending part.
        part: String,
        /// What was expected.
        why: &'static str,
    },
}

/// A maintenance window that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WindowError {
    /// Start equals end.
    #[error("maintenance window starts and ends at the same time {at}; give a non-empty window")]
    Empty {
        /// The time given.
        at: String,
    },
    /// Unknown IANA time zone.
    #[error("unknown time zone {name:?}; use an IANA name such as Europe/Berlin")]
    UnknownTimeZone {
        /// The name given.
        name: String,
    },
}

/// Creating a rollout failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CreateError {
    /// The plan is invalid.
    #[error("invalid plan: {0}")]
    Plan(#[from] PlanError),
    /// A maintenance window is invalid.
    #[error("invalid maintenance window: {0}")]
    Window(#[from] WindowError),
    /// A rollback rollout for a release whose manifest is not signed as an allowed downgrade.
    #[error(
        "rollback to release {release_id} ({version}) refused: its manifest is not signed as an allowed downgrade; sign a manifest with allow_downgrade for this version and upload it"
    )]
    DowngradeNotSigned {
        /// The release.
        release_id: String,
        /// Its version.
        version: String,
    },
    /// Gate settings that contradict each other.
    #[error("invalid gates: {why}")]
    Gates {
        /// What is wrong and how to fix it.
        why: String,
    },
    /// Empty rollout id.
    #[error("rollout id must not be empty")]
    EmptyId,
}

/// A control action (pause, resume, abort) that does not apply in the rollout's phase.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ControlError {
    /// Resume of a rollout that is not paused.
    #[error("rollout {id} is not paused (it is {phase}); nothing to resume")]
    NotPaused {
        /// Rollout id.
        id: String,
        /// Its phase.
        phase: &'static str,
    },
    /// Any action on an aborted rollout.
    #[error("rollout {id} was aborted; create a new rollout instead")]
    Aborted {
        /// Rollout id.
        id: String,
    },
    /// Pause of a rollout that is already paused.
    #[error("rollout {id} is already paused")]
    AlreadyPaused {
        /// Rollout id.
        id: String,
    },
}

/// A status report that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReportError {
    /// The device was never offered this rollout's release.
    #[error(
        "device {device} has no update in progress in rollout {rollout}; it must check in first"
    )]
    NotOffered {
        /// Device id.
        device: String,
        /// Rollout id.
        rollout: String,
    },
}

/// Stored rollout parts that do not fit together.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StateError {
    /// The header's wave states do not match its plan.
    #[error(
        "stored rollout {rollout} has {waves} wave states for a plan of {plan} waves; the stored header is corrupt"
    )]
    WaveCount {
        /// Rollout id.
        rollout: String,
        /// Wave states stored.
        waves: usize,
        /// Waves in the plan.
        plan: usize,
    },
    /// A device row names a wave the plan does not have.
    #[error(
        "stored rollout {rollout}: device {device} is in wave {wave}, which the plan does not have; the stored device row is corrupt"
    )]
    DeviceWave {
        /// Rollout id.
        rollout: String,
        /// Device id.
        device: String,
        /// The wave stored.
        wave: usize,
    },
}
