//! Typed async bindings for RAUC's D-Bus API (`de.pengutronix.rauc.Installer` at `/` on the
//! system bus, as rauc 1.8 defines it), for the update agent and anything else on the gateway
//! that talks to RAUC.
//!
//! - [`RaucClient`] wraps every call with typed results and [`RaucError`]s that say what to do.
//!   [`RaucClient::install`] subscribes to RAUC's signals *before* it calls `InstallBundle`,
//!   reports every `Progress` change, waits for `Completed` with a deadline, and turns a failed
//!   install into [`RaucError::InstallFailed`] carrying RAUC's `LastError`.
//!   [`RaucClient::start_install`] gives the same as a [`futures_util::Stream`].
//! - [`proxy::InstallerProxy`] is the raw zbus proxy, one function per method, signal and
//!   property of the 1.8 interface.
//!
//! ```no_run
//! # async fn demo() -> Result<(), rauc_client::RaucError> {
//! use std::time::Duration;
//! use rauc_client::{InstallArgs, RaucClient};
//!
//! let rauc = RaucClient::connect_system().await?;
//! rauc.install("/data/update.raucb", &InstallArgs::default(), Duration::from_secs(900), |p| {
//!     println!("{:3}% {}", p.percent, p.message);
//! })
//! .await?;
//! println!("next boot: {}", rauc.primary().await?);
//! # Ok(()) }
//! ```
//!
//! How rauc 1.8 behaves on the bus, as observed through the tests in `tests/` against the real
//! `rauc service` (see also `shared/RAUC-FACTS.md`):
//! - While an install runs, `InstallBundle`, `Mark` and `GetSlotStatus` fail with "Already
//!   processing a different method" (capitalised differently per method), which becomes
//!   [`RaucError::Busy`]; `Info` fails with only "rauc info error", as it does for a missing or
//!   badly signed bundle.
//! - Every error reply has the same GDBus name (`org.gtk.GDBus.UnmappedGError…Code30`); only
//!   the message tells errors apart.
//! - `Operation` goes back to `idle` half-way through an install (after the bundle check), so
//!   only `Completed` marks the end.
//! - A failed install also ends with `Progress` at 100 % ("Installing failed."), then a
//!   `LastError` change, then `Completed(1)`. `LastError` is reset to "" when the next install
//!   starts, not when one succeeds.
//! - RAUC takes a read lease (`F_SETLEASE`) on a plain bundle: while any process has the file
//!   open *for writing* the install fails with "could not ensure exclusive bundle access";
//!   readers do not matter. Close the downloader's handle first.
//! - Relative bundle paths are resolved by RAUC against its own working directory, so this
//!   crate always sends absolute ones.

mod client;
mod error;
pub mod proxy;
mod types;

pub use crate::client::{Installation, RaucClient};
pub use crate::error::RaucError;
pub use crate::types::{
    BundleInfo, InstallArgs, MarkState, Marked, Operation, Progress, SlotState, SlotStatus,
};
