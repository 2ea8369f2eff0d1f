//! Typed forms of what RAUC's D-Bus API carries as strings, tuples and `a{sv}` maps.

use std::collections::HashMap;

use zbus::zvariant::{OwnedValue, Value};

/// RAUC's `Progress` property `(isi)`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Progress {
    /// Percent of the whole install, 0..=100. rauc 1.8 also reports 100 when an install *fails*
    /// ("Installing failed."): only `Completed` says whether it worked.
    pub percent: i32,
    /// The current step, e.g. "Copying image to rootfs.1".
    pub message: String,
    /// Nesting depth of the step: 1 for the whole install, 2 for its phases, 3 below.
    pub depth: i32,
}

impl From<(i32, String, i32)> for Progress {
    fn from((percent, message, depth): (i32, String, i32)) -> Self {
        Self {
            percent,
            message,
            depth,
        }
    }
}

/// RAUC's `Operation` property.
///
/// rauc 1.8 sets it back to `idle` in the middle of an install (right after checking the
/// bundle, while it goes on to write the slot), so `Idle` does not prove RAUC is free; the
/// `Completed` signal and [`crate::RaucError::Busy`] do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    Idle,
    Installing,
    /// Anything newer RAUC versions may report.
    Other(String),
}

impl From<String> for Operation {
    fn from(text: String) -> Self {
        match text.as_str() {
            "idle" => Self::Idle,
            "installing" => Self::Installing,
            _ => Self::Other(text),
        }
    }
}

/// Manifest fields returned by `Info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleInfo {
    pub compatible: String,
    pub version: String,
}

/// What `Mark` sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkState {
    /// The slot booted fine: reset its boot attempts.
    Good,
    /// The slot is broken: the bootloader must not boot it.
    Bad,
    /// Boot this slot next (and consider it good).
    Active,
}

impl MarkState {
    /// The spelling `Mark` expects.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Good => "good",
            Self::Bad => "bad",
            Self::Active => "active",
        }
    }
}

/// `Mark`'s reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marked {
    /// The slot RAUC marked, e.g. `rootfs.0` for `booted`.
    pub slot: String,
    /// RAUC's message, e.g. "marked slot rootfs.0 as good".
    pub message: String,
}

/// A slot's `state` in `GetSlotStatus`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotState {
    /// The running system booted from it.
    Booted,
    /// Mounted or otherwise in use as part of the booted slot group.
    Active,
    /// Free to be written.
    Inactive,
    Other(String),
}

impl From<&str> for SlotState {
    fn from(text: &str) -> Self {
        match text {
            "booted" => Self::Booted,
            "active" => Self::Active,
            "inactive" => Self::Inactive,
            _ => Self::Other(text.to_owned()),
        }
    }
}

/// One slot from `GetSlotStatus`, with the keys rauc 1.8 sends typed. Keys that only exist once
/// something was installed into the slot are `None` before that.
#[derive(Debug, PartialEq)]
pub struct SlotStatus {
    /// RAUC's slot name, e.g. `rootfs.1`.
    pub name: String,
    /// Slot class, e.g. `rootfs`.
    pub class: String,
    pub device: String,
    /// `type` from `system.conf` (`raw`, `ext4`, …).
    pub slot_type: String,
    /// The bootloader's name for the slot (`A`, `B`).
    pub bootname: Option<String>,
    pub state: SlotState,
    /// `good` or `bad` as the bootloader reports it (`boot-status`).
    pub boot_status: Option<String>,
    /// Whether the bootloader boots this slot next (from `GetPrimary`; `None` when RAUC could
    /// not tell, e.g. the bootloader backend failed).
    pub is_primary: Option<bool>,
    pub parent: Option<String>,
    pub mountpoint: Option<String>,
    /// `bundle.compatible` of the bundle last installed into the slot.
    pub bundle_compatible: Option<String>,
    /// `bundle.version` of that bundle.
    pub bundle_version: Option<String>,
    pub bundle_description: Option<String>,
    pub bundle_build: Option<String>,
    /// SHA-256 (hex) of the image written into the slot (`sha256`).
    pub sha256: Option<String>,
    /// Size in bytes of that image (`size`).
    pub size: Option<u64>,
    /// RAUC's install status of the slot, e.g. `ok` (`status`).
    pub status: Option<String>,
    /// When the slot was last written, ISO 8601 UTC (`installed.timestamp`).
    pub installed_timestamp: Option<String>,
    pub installed_count: Option<u32>,
    /// When the slot was last made primary (`activated.timestamp`).
    pub activated_timestamp: Option<String>,
    pub activated_count: Option<u32>,
    /// Every key RAUC sent, including the ones above, for what newer RAUC versions add.
    pub raw: HashMap<String, OwnedValue>,
}

impl SlotStatus {
    /// Types one `(name, a{sv})` entry of `GetSlotStatus`. A key with an unexpected type is
    /// treated as absent (it stays in [`Self::raw`]).
    pub fn from_dbus(name: String, raw: HashMap<String, OwnedValue>) -> Self {
        let text = |key: &str| {
            raw.get(key)
                .and_then(|v| <&str>::try_from(v).ok())
                .map(str::to_owned)
        };
        let count = |key: &str| raw.get(key).and_then(|v| u32::try_from(v).ok());
        Self {
            class: text("class").unwrap_or_default(),
            device: text("device").unwrap_or_default(),
            slot_type: text("type").unwrap_or_default(),
            bootname: text("bootname"),
            state: SlotState::from(text("state").as_deref().unwrap_or_default()),
            boot_status: text("boot-status"),
            is_primary: None,
            parent: text("parent"),
            mountpoint: text("mountpoint"),
            bundle_compatible: text("bundle.compatible"),
            bundle_version: text("bundle.version"),
            bundle_description: text("bundle.description"),
            bundle_build: text("bundle.build"),
            sha256: text("sha256"),
            size: raw.get("size").and_then(|v| u64::try_from(v).ok()),
            status: text("status"),
            installed_timestamp: text("installed.timestamp"),
            installed_count: count("installed.count"),
            activated_timestamp: text("activated.timestamp"),
            activated_count: count("activated.count"),
            name,
            raw,
        }
    }

    /// True for the slot the running system booted from.
    pub fn is_booted(&self) -> bool {
        self.state == SlotState::Booted
    }
}

/// Arguments of `InstallBundle` (its `a{sv}`), as far as rauc 1.8 knows them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstallArgs {
    /// `ignore-compatible`: install even if the bundle's compatible differs from the system's.
    pub ignore_compatible: bool,
    /// `tls-cert`, `tls-key`, `tls-ca`: client certificate, key and CA for streaming over HTTPS.
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    pub tls_ca: Option<String>,
    /// `tls-no-verify`: do not verify the streaming server's certificate.
    pub tls_no_verify: bool,
    /// `http-headers`: extra headers for streaming, as `Name: value`.
    pub http_headers: Vec<String>,
}

impl InstallArgs {
    /// The `a{sv}` RAUC receives; keys left at their default are not sent at all, so a plain
    /// install sends an empty dictionary like `rauc install` does.
    pub fn to_dbus(&self) -> HashMap<&'static str, Value<'_>> {
        let mut map = HashMap::new();
        if self.ignore_compatible {
            map.insert("ignore-compatible", Value::from(true));
        }
        for (key, value) in [
            ("tls-cert", &self.tls_cert),
            ("tls-key", &self.tls_key),
            ("tls-ca", &self.tls_ca),
        ] {
            if let Some(value) = value {
                map.insert(key, Value::from(value.as_str()));
            }
        }
        if self.tls_no_verify {
            map.insert("tls-no-verify", Value::from(true));
        }
        if !self.http_headers.is_empty() {
            map.insert("http-headers", Value::from(self.http_headers.clone()));
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(v: Value<'_>) -> OwnedValue {
        v.try_to_owned().unwrap()
    }

    #[test]
    fn slot_status_types_the_keys_rauc_1_8_sends() {
        let raw: HashMap<String, OwnedValue> = [
            ("class", value(Value::from("rootfs"))),
            ("device", value(Value::from("/dev/mmcblk1p3"))),
            ("type", value(Value::from("ext4"))),
            ("bootname", value(Value::from("B"))),
            ("state", value(Value::from("inactive"))),
            ("boot-status", value(Value::from("good"))),
            ("bundle.compatible", value(Value::from("spark-bbb"))),
            ("bundle.version", value(Value::from("1.2.0"))),
            ("sha256", value(Value::from("ab"))),
            ("size", value(Value::from(4096u64))),
            ("installed.count", value(Value::from(2u32))),
            (
                "installed.timestamp",
                value(Value::from("2026-01-01T00:00:00Z")),
            ),
            // Wrong type: left out of the typed field, kept in raw.
            ("activated.count", value(Value::from("three"))),
            ("future.key", value(Value::from(true))),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let slot = SlotStatus::from_dbus("rootfs.1".into(), raw);
        assert_eq!(slot.name, "rootfs.1");
        assert_eq!(slot.slot_type, "ext4");
        assert_eq!(slot.state, SlotState::Inactive);
        assert!(!slot.is_booted());
        assert_eq!(slot.boot_status.as_deref(), Some("good"));
        assert_eq!(slot.bundle_version.as_deref(), Some("1.2.0"));
        assert_eq!(slot.size, Some(4096));
        assert_eq!(slot.installed_count, Some(2));
        assert_eq!(slot.activated_count, None);
        assert_eq!(slot.parent, None);
        assert_eq!(slot.is_primary, None);
        assert_eq!(slot.raw.len(), 14);
    }

    #[test]
    fn install_args_send_only_what_is_set() {
        assert!(InstallArgs::default().to_dbus().is_empty());
        let args = InstallArgs {
            ignore_compatible: true,
            tls_ca: Some("/etc/ca.pem".into()),
            http_headers: vec!["X-Serial: 42".into()],
            ..InstallArgs::default()
        };
        let map = args.to_dbus();
        assert_eq!(map.len(), 3);
        assert_eq!(map["ignore-compatible"], Value::from(true));
        assert_eq!(map["tls-ca"], Value::from("/etc/ca.pem"));
        assert_eq!(
            map["http-headers"],
            Value::from(vec!["X-Serial: 42".to_owned()])
        );
    }

    #[test]
    fn operation_and_slot_state_keep_unknown_words() {
        assert_eq!(Operation::from("idle".to_owned()), Operation::Idle);
        assert_eq!(
            Operation::from("installing".to_owned()),
            Operation::Installing
        );
        assert_eq!(
            Operation::from("adaptive".to_owned()),
            Operation::Other("adaptive".into())
        );
        assert_eq!(SlotState::from("booted"), SlotState::Booted);
        assert_eq!(SlotState::from("active"), SlotState::Active);
        assert_eq!(SlotState::from("odd"), SlotState::Other("odd".into()));
        assert_eq!(MarkState::Active.as_str(), "active");
    }
}
