//! The parts of `rauc status --detailed --output-format=json` tests assert on.
//!
//! rauc 1.8 prints `{"compatible", "variant", "booted", "boot_primary", "slots": [{"<name>": {...}}]}`
//! where each slot object has `class`, `device`, `type`, `bootname`, `state`, `boot_status` and,
//! with `--detailed`, `slot_status.bundle.{compatible,version}`. Reading through `serde_json::Value`
//! keeps us tolerant of the keys newer RAUC versions add.

use serde_json::Value;

use crate::{Slot, TestbedError};

/// What `rauc status` says about the system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemStatus {
    pub compatible: String,
    /// Bootname of the booted slot (`A`/`B`).
    pub booted: Option<String>,
    /// RAUC name of the slot the bootloader will boot next (`rootfs.1`).
    pub boot_primary: Option<String>,
    pub slots: Vec<SlotStatus>,
}

/// What `rauc status` says about one slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotStatus {
    /// `rootfs.0`, `rootfs.1`.
    pub name: String,
    pub class: String,
    pub device: String,
    pub bootname: Option<String>,
    /// `booted`, `active` or `inactive`.
    pub state: String,
    /// `good` or `bad` as the bootloader backend reports it.
    pub boot_status: Option<String>,
    /// Compatible of the bundle last installed into the slot.
    pub bundle_compatible: Option<String>,
    /// Version of the bundle last installed into the slot.
    pub bundle_version: Option<String>,
}

impl SystemStatus {
    /// Parses RAUC's JSON status.
    pub fn parse(json: &str) -> Result<Self, TestbedError> {
        let value: Value =
            serde_json::from_str(json).map_err(|source| TestbedError::StatusJson {
                source,
                json: json.to_owned(),
            })?;
        let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
        let mut slots = Vec::new();
        for entry in value
            .get("slots")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for (name, slot) in entry.as_object().into_iter().flatten() {
                let bundle = slot.get("slot_status").and_then(|s| s.get("bundle"));
                slots.push(SlotStatus {
                    name: name.clone(),
                    class: text(slot, "class").unwrap_or_default(),
                    device: text(slot, "device").unwrap_or_default(),
                    bootname: text(slot, "bootname"),
                    state: text(slot, "state").unwrap_or_default(),
                    boot_status: text(slot, "boot_status"),
                    bundle_compatible: bundle.and_then(|b| text(b, "compatible")),
                    bundle_version: bundle.and_then(|b| text(b, "version")),
                });
            }
        }
        slots.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Self {
            compatible: text(&value, "compatible").unwrap_or_default(),
            booted: text(&value, "booted"),
            boot_primary: text(&value, "boot_primary"),
            slots,
        })
    }

    /// The status of one of the two root slots.
    pub fn slot(&self, slot: Slot) -> Option<&SlotStatus> {
        self.slots.iter().find(|s| s.name == slot.rauc_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Printed by rauc 1.8 on a fresh testbed.
    const FRESH: &str = r#"{"compatible":"spark-test","variant":"","booted":"A","boot_primary":"rootfs.0","slots":[{"rootfs.1":{"class":"rootfs","device":"/t/slot-b.img","type":"raw","bootname":"B","state":"inactive","parent":null,"mountpoint":null,"boot_status":"good","slot_status":{"bundle":{"compatible":null}}}},{"rootfs.0":{"class":"rootfs","device":"/t/slot-a.img","type":"raw","bootname":"A","state":"booted","parent":null,"mountpoint":null,"boot_status":"good","slot_status":{"bundle":{"compatible":null}}}}]}"#;

    #[test]
    fn parses_rauc_1_8_status() {
        let status = SystemStatus::parse(FRESH).unwrap();
        assert_eq!(status.booted.as_deref(), Some("A"));
        assert_eq!(status.boot_primary.as_deref(), Some("rootfs.0"));
        let b = status.slot(Slot::B).unwrap();
        assert_eq!(b.bootname.as_deref(), Some("B"));
        assert_eq!(b.state, "inactive");
        assert_eq!(b.boot_status.as_deref(), Some("good"));
        assert_eq!(b.bundle_compatible, None);
        assert_eq!(status.slot(Slot::A).unwrap().state, "booted");
    }

    #[test]
    fn rejects_non_json() {
        assert!(matches!(
            SystemStatus::parse("rauc-Message: hi"),
            Err(TestbedError::StatusJson { .. })
        ));
    }
}
