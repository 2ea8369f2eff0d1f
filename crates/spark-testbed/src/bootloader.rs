//! The simulated U-Boot of a testbed: its environment file, the RAUC custom backend that edits it,
//! and the boot script logic that a reboot runs.
//!
//! On the BeagleBone, RAUC's `uboot` backend keeps `BOOT_ORDER` and `BOOT_<x>_LEFT` in the U-Boot
//! environment, and the boot script picks the slot to boot from them. Here the environment is a
//! file in `fw_printenv` format (`KEY=value` a line, no quotes), the backend is a small shell
//! script (`uboot-sim.sh`, nothing to build, so other crates' tests can use a testbed too) and
//! [`Bootloader::boot`] is the boot script.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::TestbedError;

/// One of the two root filesystem slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Slot {
    /// `rootfs.0`, bootname `A`.
    A,
    /// `rootfs.1`, bootname `B`.
    B,
}

impl Slot {
    /// Both slots, in configuration order.
    pub const ALL: [Slot; 2] = [Slot::A, Slot::B];

    /// The `bootname=` of the slot (what U-Boot and `--override-boot-slot` call it).
    pub fn bootname(self) -> &'static str {
        match self {
            Slot::A => "A",
            Slot::B => "B",
        }
    }

    /// RAUC's name for the slot in `system.conf` and `rauc status`.
    pub fn rauc_name(self) -> &'static str {
        match self {
            Slot::A => "rootfs.0",
            Slot::B => "rootfs.1",
        }
    }

    /// The slot an update writes while this one is booted.
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.bootname())
    }
}

impl FromStr for Slot {
    type Err = String;

    /// Accepts a bootname (`A`) or a RAUC slot name (`rootfs.0`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Slot::ALL
            .into_iter()
            .find(|slot| s == slot.bootname() || s == slot.rauc_name())
            .ok_or_else(|| format!("unknown slot {s:?}"))
    }
}

/// A snapshot of the U-Boot environment: variable name to value.
pub type BootEnv = BTreeMap<String, String>;

/// Handle on a testbed's simulated U-Boot environment. Cheap to clone; every call reads or writes
/// the file under the same lock the backend script takes, so tests may edit the environment while
/// `rauc service` runs.
#[derive(Debug, Clone)]
pub struct Bootloader {
    env: PathBuf,
    attempts: u32,
}

impl Bootloader {
    /// A handle on the environment file `env`; `attempts` is the `BOOT_x_LEFT` reset value.
    pub(crate) fn new(env: PathBuf, attempts: u32) -> Self {
        Self { env, attempts }
    }

    /// The environment file (`KEY=value` lines).
    pub fn env_path(&self) -> &Path {
        &self.env
    }

    /// The value that `set-primary`, mark-good and the boot script's reset give `BOOT_x_LEFT`.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The whole environment.
    pub fn env(&self) -> Result<BootEnv, TestbedError> {
        let _lock = self.lock()?;
        self.read()
    }

    /// One variable, `None` if unset.
    pub fn var(&self, key: &str) -> Result<Option<String>, TestbedError> {
        Ok(self.env()?.remove(key))
    }

    /// Sets one variable, like `fw_setenv key value`.
    pub fn set_var(&self, key: &str, value: &str) -> Result<(), TestbedError> {
        self.update(|env| {
            env.insert(key.to_owned(), value.to_owned());
            Ok(())
        })
    }

    /// Removes one variable, like `fw_setenv key`.
    pub fn unset_var(&self, key: &str) -> Result<(), TestbedError> {
        self.update(|env| {
            env.remove(key);
            Ok(())
        })
    }

    /// `BOOT_ORDER` as slots (empty if unset).
    pub fn boot_order(&self) -> Result<Vec<Slot>, TestbedError> {
        let order = self.var("BOOT_ORDER")?.unwrap_or_default();
        order
            .split_whitespace()
            .map(|name| {
                name.parse().map_err(|message| TestbedError::BootEnv {
                    path: self.env.clone(),
                    message: format!("BOOT_ORDER={order:?}: {message}"),
                })
            })
            .collect()
    }

    /// Sets `BOOT_ORDER`.
    pub fn set_boot_order(&self, order: &[Slot]) -> Result<(), TestbedError> {
        self.set_var("BOOT_ORDER", &join_order(order))
    }

    /// `BOOT_<slot>_LEFT`, 0 if unset or not a number (the boot script would not pick it either).
    pub fn attempts_left(&self, slot: Slot) -> Result<u32, TestbedError> {
        Ok(parse_left(self.var(&left_key(slot))?.as_deref()))
    }

    /// Sets `BOOT_<slot>_LEFT`.
    pub fn set_attempts_left(&self, slot: Slot, left: u32) -> Result<(), TestbedError> {
        self.set_var(&left_key(slot), &left.to_string())
    }

    /// Every backend call RAUC made so far, one `command args` string each, oldest first.
    pub fn backend_calls(&self) -> Result<Vec<String>, TestbedError> {
        let log = log_path(&self.env);
        match fs::read_to_string(&log) {
            Ok(text) => Ok(text.lines().map(str::to_owned).collect()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(source) => Err(TestbedError::Io {
                action: "read",
                path: log,
                source,
            }),
        }
    }

    /// Runs the BeagleBone boot script once and returns the slot it boots.
    ///
    /// Like the RAUC U-Boot script: unset or empty variables get their defaults (`BOOT_ORDER="A
    /// B"`, `BOOT_x_LEFT` = attempts); the first slot in `BOOT_ORDER` with attempts left is chosen
    /// and its counter decremented; if none has any left, all counters are reset to the attempt
    /// count and the board resets, i.e. the script runs again.
    pub fn boot(&self) -> Result<Slot, TestbedError> {
        self.update(|env| {
            // A second pass sees the reset counters, so it fails only if BOOT_ORDER names no
            // known slot at all (a real board would then reset forever).
            for _reset in 0..2 {
                if let Some(slot) = boot_script(env, self.attempts) {
                    return Ok(slot);
                }
            }
            Err(TestbedError::NoBootableSlot {
                order: env.get("BOOT_ORDER").cloned().unwrap_or_default(),
            })
        })
    }

    /// Writes the initial environment: `booted` first in `BOOT_ORDER`, full counters for both.
    pub(crate) fn init(&self, booted: Slot) -> Result<(), TestbedError> {
        self.update(|env| {
            env.clear();
            env.insert("BOOT_ORDER".into(), join_order(&[booted, booted.other()]));
            for slot in Slot::ALL {
                env.insert(left_key(slot), self.attempts.to_string());
            }
            Ok(())
        })
    }

    /// Read-modify-write under the lock; the file is replaced atomically.
    fn update<T>(
        &self,
        change: impl FnOnce(&mut BootEnv) -> Result<T, TestbedError>,
    ) -> Result<T, TestbedError> {
        let _lock = self.lock()?;
        let mut env = self.read()?;
        let result = change(&mut env)?;
        self.write(&env)?;
        Ok(result)
    }

    /// The same `flock` the backend script takes (std's `File::lock` is `flock(2)` on Linux).
    fn lock(&self) -> Result<File, TestbedError> {
        let path = lock_path(&self.env);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| TestbedError::Io {
                action: "open",
                path: path.clone(),
                source,
            })?;
        file.lock().map_err(|source| TestbedError::Io {
            action: "lock",
            path,
            source,
        })?;
        Ok(file)
    }

    fn read(&self) -> Result<BootEnv, TestbedError> {
        let text = match fs::read_to_string(&self.env) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(TestbedError::Io {
                    action: "read",
                    path: self.env.clone(),
                    source,
                });
            }
        };
        let mut env = BootEnv::new();
        for line in text.lines().filter(|line| !line.trim().is_empty()) {
            let (key, value) = line.split_once('=').ok_or_else(|| TestbedError::BootEnv {
                path: self.env.clone(),
                message: format!("line without '=': {line:?}"),
            })?;
            // Later lines win, as in the script's `tail -n 1`.
            env.insert(key.to_owned(), value.to_owned());
        }
        Ok(env)
    }

    fn write(&self, env: &BootEnv) -> Result<(), TestbedError> {
        let mut text = String::new();
        for (key, value) in env {
            text.push_str(key);
            text.push('=');
            text.push_str(value);
            text.push('\n');
        }
        let tmp = self.env.with_extension("tmp-rs");
        write_file(&tmp, text.as_bytes())?;
        fs::rename(&tmp, &self.env).map_err(|source| TestbedError::Io {
            action: "replace",
            path: self.env.clone(),
            source,
        })
    }
}

/// One pass of the boot script over `env`; `None` means "no slot left, reset the counters and the
/// board" (which this function already did to `env`).
fn boot_script(env: &mut BootEnv, attempts: u32) -> Option<Slot> {
    // `test -n "${BOOT_ORDER}" || setenv BOOT_ORDER "A B"` and the same for each counter.
    if env
        .get("BOOT_ORDER")
        .is_none_or(|order| order.trim().is_empty())
    {
        env.insert("BOOT_ORDER".into(), join_order(&Slot::ALL));
    }
    for slot in Slot::ALL {
        if env.get(&left_key(slot)).is_none_or(|left| left.is_empty()) {
            env.insert(left_key(slot), attempts.to_string());
        }
    }
    let order = env.get("BOOT_ORDER").cloned().unwrap_or_default();
    // The script's `for BOOT_SLOT in ...; elif test "x${BOOT_SLOT}" = "xA"`: unknown names are
    // skipped, the first known one with attempts left wins.
    for name in order.split_whitespace() {
        let Ok(slot) = name.parse::<Slot>() else {
            continue;
        };
        if slot.bootname() != name {
            continue;
        }
        let left = parse_left(env.get(&left_key(slot)).map(String::as_str));
        if left > 0 {
            env.insert(left_key(slot), (left - 1).to_string());
            return Some(slot);
        }
    }
    // "No valid slot found, resetting tries to 3", saveenv, reset.
    for slot in Slot::ALL {
        env.insert(left_key(slot), attempts.to_string());
    }
    None
}

fn parse_left(value: Option<&str>) -> u32 {
    value.and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

fn left_key(slot: Slot) -> String {
    format!("BOOT_{}_LEFT", slot.bootname())
}

fn join_order(order: &[Slot]) -> String {
    order
        .iter()
        .map(|slot| slot.bootname())
        .collect::<Vec<_>>()
        .join(" ")
}

fn lock_path(env: &Path) -> PathBuf {
    let mut path = env.as_os_str().to_owned();
    path.push(".lock");
    PathBuf::from(path)
}

fn log_path(env: &Path) -> PathBuf {
    env.with_file_name("uboot-sim.log")
}

pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> Result<(), TestbedError> {
    let io = |source| TestbedError::Io {
        action: "write",
        path: path.to_owned(),
        source,
    };
    let mut file = File::create(path).map_err(io)?;
    file.write_all(bytes).map_err(io)
}

/// Writes the custom backend script for the environment `env` into `dir` and returns its path.
pub(crate) fn write_backend(
    dir: &Path,
    env: &Path,
    booted_file: &Path,
    attempts: u32,
) -> Result<PathBuf, TestbedError> {
    let bootnames = join_order(&Slot::ALL);
    let script = include_str!("uboot-sim.sh")
        .replace("@ENV_FILE@", &shell_quote(&env.to_string_lossy()))
        .replace("@ATTEMPTS@", &attempts.to_string())
        .replace("@BOOTNAMES@", &shell_quote(&bootnames))
        .replace(
            "@BOOTED_FILE@",
            &shell_quote(&booted_file.to_string_lossy()),
        )
        .replace("@LOG_FILE@", &shell_quote(&log_path(env).to_string_lossy()));
    let path = dir.join("spark-uboot-sim");
    write_file(&path, script.as_bytes())?;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).map_err(|source| {
        TestbedError::Io {
            action: "make executable",
            path: path.clone(),
            source,
        }
    })?;
    Ok(path)
}

/// Single-quotes `text` for sh.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    struct Sim {
        _dir: tempfile::TempDir,
        backend: PathBuf,
        boot: Bootloader,
    }

    fn sim(booted: Slot) -> Sim {
        let dir = tempfile::Builder::new()
            .prefix("spark-uboot-sim-")
            .tempdir()
            .unwrap();
        let env = dir.path().join("uboot.env");
        let booted_file = dir.path().join("booted");
        fs::write(&booted_file, booted.bootname()).unwrap();
        let backend = write_backend(dir.path(), &env, &booted_file, 3).unwrap();
        let boot = Bootloader::new(env, 3);
        boot.init(booted).unwrap();
        Sim {
            _dir: dir,
            backend,
            boot,
        }
    }

    impl Sim {
        fn call(&self, args: &[&str]) -> (bool, String) {
            let out = Command::new(&self.backend).args(args).output().unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            )
        }
    }

    #[test]
    fn initial_env_boots_the_booted_slot_first() {
        let sim = sim(Slot::B);
        assert_eq!(sim.boot.boot_order().unwrap(), [Slot::B, Slot::A]);
        assert_eq!(sim.call(&["get-primary"]), (true, "B".into()));
        assert_eq!(sim.call(&["get-state", "A"]), (true, "good".into()));
        assert_eq!(sim.call(&["get-current"]), (true, "B".into()));
    }

    #[test]
    fn backend_follows_rauc_uboot_semantics() {
        let sim = sim(Slot::A);
        // What RAUC does around an install into B: mark it bad, write, make it primary.
        assert!(sim.call(&["set-state", "B", "bad"]).0);
        assert_eq!(sim.boot.boot_order().unwrap(), [Slot::A]);
        assert_eq!(sim.boot.attempts_left(Slot::B).unwrap(), 0);
        assert_eq!(sim.call(&["get-state", "B"]), (true, "bad".into()));
        assert!(sim.call(&["set-primary", "B"]).0);
        assert_eq!(sim.boot.boot_order().unwrap(), [Slot::B, Slot::A]);
        assert_eq!(sim.boot.attempts_left(Slot::B).unwrap(), 3);
        assert_eq!(sim.call(&["get-state", "B"]), (true, "good".into()));
        // Mark good only resets the counter.
        sim.boot.set_attempts_left(Slot::A, 1).unwrap();
        assert!(sim.call(&["set-state", "A", "good"]).0);
        assert_eq!(sim.boot.attempts_left(Slot::A).unwrap(), 3);
        assert_eq!(
            sim.boot.backend_calls().unwrap(),
            [
                "set-state B bad",
                "get-state B",
                "set-primary B",
                "get-state B",
                "set-state A good"
            ]
        );
    }

    #[test]
    fn backend_rejects_bad_calls() {
        let sim = sim(Slot::A);
        assert!(!sim.call(&["set-state", "C", "good"]).0);
        assert!(!sim.call(&["set-state", "A", "meh"]).0);
        assert!(!sim.call(&["frobnicate"]).0);
        sim.boot.set_attempts_left(Slot::A, 0).unwrap();
        sim.boot.set_attempts_left(Slot::B, 0).unwrap();
        assert!(!sim.call(&["get-primary"]).0);
        assert_eq!(sim.call(&["get-state", "A"]), (true, "bad".into()));
    }

    #[test]
    fn boot_script_counts_down_and_falls_back() {
        let sim = sim(Slot::A);
        sim.boot.set_boot_order(&[Slot::B, Slot::A]).unwrap();
        for left in [2, 1, 0] {
            assert_eq!(sim.boot.boot().unwrap(), Slot::B);
            assert_eq!(sim.boot.attempts_left(Slot::B).unwrap(), left);
        }
        assert_eq!(sim.boot.boot().unwrap(), Slot::A);
        assert_eq!(sim.boot.attempts_left(Slot::A).unwrap(), 2);
    }

    #[test]
    fn boot_script_resets_counters_when_nothing_is_left() {
        let sim = sim(Slot::A);
        sim.boot.set_attempts_left(Slot::A, 0).unwrap();
        sim.boot.set_attempts_left(Slot::B, 0).unwrap();
        assert_eq!(sim.boot.boot().unwrap(), Slot::A);
        assert_eq!(sim.boot.attempts_left(Slot::A).unwrap(), 2);
        assert_eq!(sim.boot.attempts_left(Slot::B).unwrap(), 3);
    }

    #[test]
    fn boot_script_defaults_an_empty_order() {
        let sim = sim(Slot::B);
        sim.boot.set_var("BOOT_ORDER", "").unwrap();
        sim.boot.unset_var("BOOT_B_LEFT").unwrap();
        assert_eq!(sim.boot.boot().unwrap(), Slot::A);
        assert_eq!(sim.boot.var("BOOT_ORDER").unwrap().as_deref(), Some("A B"));
        assert_eq!(sim.boot.attempts_left(Slot::B).unwrap(), 3);
    }

    #[test]
    fn slot_names_round_trip() {
        for slot in Slot::ALL {
            assert_eq!(slot.bootname().parse::<Slot>().unwrap(), slot);
            assert_eq!(slot.rauc_name().parse::<Slot>().unwrap(), slot);
            assert_eq!(slot.other().other(), slot);
        }
        assert!("C".parse::<Slot>().is_err());
    }
}
