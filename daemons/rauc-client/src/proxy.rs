//! The raw `de.pengutronix.rauc.Installer` interface exactly as rauc 1.8 defines it
//! (`src/de.pengutronix.rauc.Installer.xml`): every method, the `Completed` signal and every
//! property, with D-Bus names spelled out so a rename on our side can never change the wire.
//!
//! Use [`crate::RaucClient`] unless you need something it does not offer: this proxy returns
//! untyped tuples and maps, and [`InstallerProxy::install_bundle`] returns as soon as RAUC has
//! *started* installing (the outcome arrives later as [`InstallerProxy::receive_completed`]).
//!
//! Newer RAUC versions add methods (`InspectBundle`, 1.9) and properties; they are deliberately
//! absent here because the gateway's rootfs is what we test against, and calling them on 1.8 fails.

use std::collections::HashMap;

use zbus::zvariant::{OwnedValue, Value};

/// The well-known bus name RAUC owns.
pub const SERVICE: &str = "de.pengutronix.rauc";
/// The object RAUC exports its installer on.
pub const PATH: &str = "/";
/// The installer interface.
pub const INTERFACE: &str = "de.pengutronix.rauc.Installer";

/// One slot as `GetSlotStatus` returns it: `(name, a{sv})`.
pub type RawSlotStatus = (String, HashMap<String, OwnedValue>);

/// `de.pengutronix.rauc.Installer` (rauc 1.8).
#[zbus::proxy(
    interface = "de.pengutronix.rauc.Installer",
    default_service = "de.pengutronix.rauc",
    default_path = "/"
)]
pub trait Installer {
    /// `InstallBundle(s source, a{sv} args)`: starts installing `source` (a path or, with
    /// streaming support, a URL). Returns once the install has started; the result comes as the
    /// `Completed` signal. Fails with "Already processing a different method" while busy.
    #[zbus(name = "InstallBundle")]
    fn install_bundle(&self, source: &str, args: HashMap<&str, Value<'_>>) -> zbus::Result<()>;

    /// `Install(s source)`: deprecated form of `InstallBundle` without arguments.
    #[zbus(name = "Install")]
    fn install(&self, source: &str) -> zbus::Result<()>;

    /// `Info(s bundle) -> (s compatible, s version)`: checks the bundle's signature and returns
    /// two fields of its manifest.
    #[zbus(name = "Info")]
    fn info(&self, bundle: &str) -> zbus::Result<(String, String)>;

    /// `Mark(s state, s slot_identifier) -> (s slot_name, s message)`; `state` is `good`, `bad`
    /// or `active`, `slot_identifier` is `booted`, `other` or a slot name such as `rootfs.1`.
    #[zbus(name = "Mark")]
    fn mark(&self, state: &str, slot_identifier: &str) -> zbus::Result<(String, String)>;

    /// `GetSlotStatus() -> a(sa{sv})`: every slot with its configuration and recorded status.
    #[zbus(name = "GetSlotStatus")]
    fn get_slot_status(&self) -> zbus::Result<Vec<RawSlotStatus>>;

    /// `GetPrimary() -> s`: the slot the bootloader will boot next.
    #[zbus(name = "GetPrimary")]
    fn get_primary(&self) -> zbus::Result<String>;

    /// `Completed(i result)`: an install finished; 0 is success.
    #[zbus(signal, name = "Completed")]
    fn completed(&self, result: i32) -> zbus::Result<()>;

    /// `Operation` (s): `idle` or `installing`.
    #[zbus(property, name = "Operation")]
    fn operation(&self) -> zbus::Result<String>;

    /// `LastError` (s): the message of the last failed install.
    #[zbus(property, name = "LastError")]
    fn last_error(&self) -> zbus::Result<String>;

    /// `Progress` (isi): percent done, the current step's message, its nesting depth.
    #[zbus(property, name = "Progress")]
    fn progress(&self) -> zbus::Result<(i32, String, i32)>;

    /// `Compatible` (s): the system's compatible string from `system.conf`.
    #[zbus(property, name = "Compatible")]
    fn compatible(&self) -> zbus::Result<String>;

    /// `Variant` (s): the system's variant, empty when none is configured.
    #[zbus(property, name = "Variant")]
    fn variant(&self) -> zbus::Result<String>;

    /// `BootSlot` (s): bootname of the slot the system booted from.
    #[zbus(property, name = "BootSlot")]
    fn boot_slot(&self) -> zbus::Result<String>;
}
