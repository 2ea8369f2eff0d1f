//! The A/B boot script in real U-Boot, boot by boot against spark-testbed's simulated U-Boot.
//!
//! Real side: Debian's `u-boot-qemu` (qemu_arm build) under `qemu-system-arm -M virt`, booting a
//! disk image laid out like `wic/spark-bbb-ab.wks` (p1 FAT with boot.scr made by mkimage from the
//! layer's boot.cmd, p2/p3 ext4 root slots with their own /boot/zImage and DTB, p4 data), MBR
//! disk id 0x5350524b as the wks sets it. The qemu_arm build keeps its own environment in flash
//! (ENV_IS_IN_FLASH), so the second pflash bank holds a fixed "board" environment whose boot
//! command imports `uboot.env` from the FAT partition, sources boot.scr, and whose `spark_save`
//! writes the environment back as `uboot.env` (`env export -c` + `fatwrite`): the same file
//! format and place as the BeagleBone's ENV_IS_IN_FAT `saveenv`. Every boot ends in the script's
//! `reset` (the fake kernels do not boot), which `-no-reboot` turns into qemu exiting.
//! Between boots the test reads `uboot.env` with `fw_printenv` through the layer's fw_env.config
//! offsets, and marks slots with the real `rauc service` (bootloader=uboot, RAUC's own U-Boot
//! backend) on a private bus: `rauc status mark-good`, `mark-bad`, and for an install what RAUC
//! does to the bootloader around one (`mark-bad other`, then `mark-active other`). RAUC's
//! fw_printenv/fw_setenv calls go through small wrappers that copy `uboot.env` out of and back
//! into the FAT partition, as the mounted `/uboot` would on the gateway.
//!
//! Simulated side: a spark-testbed [`Testbed`] (real `rauc service`, its custom backend
//! `uboot-sim.sh`, [`Testbed::reboot`] running `Bootloader::boot`), driven by the same steps;
//! mark-good and mark-bad go through the real RAUC.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::time::Instant;

use std::process::{Child, Stdio};
use std::time::Duration;

use spark_testbed::{PrivateBus, Slot, Testbed, TestbedOptions};
use tempfile::TempDir;

use super::*;

const UBOOT_BIN: &str = "/usr/lib/u-boot/qemu_arm/u-boot.bin";
/// qemu_arm's CONFIG_ENV_SIZE (its environment lives at the start of the second flash bank).
const FLASH_ENV_SIZE: &str = "0x40000";
/// qemu's virt machine has 64 MiB flash banks.
const FLASH_BANK_BYTES: u64 = 64 << 20;
/// The MBR disk id of wic/spark-bbb-ab.wks: partition UUIDs are 5350524b-0N.
const DISK_ID: &str = "0x5350524b";
/// Bound on one qemu run (a boot takes about one second).
const QEMU_TIMEOUT_SECS: &str = "30";
const ATTEMPTS: u32 = 3;
/// Sectors of the test disk (512 bytes): p1 FAT 16 MiB, p2/p3 8 MiB, p4 4 MiB.
const FAT_START: u64 = 2048;
const FAT_SECTORS: u64 = 32768;
const SLOT_SECTORS: u64 = 16384;
/// The fake kernels differ in size, so U-Boot's "N bytes read" tells which slot it loaded from.
const KERNEL_BYTES_A: usize = 1111;
const KERNEL_BYTES_B: usize = 2222;

/// The U-Boot variables that make the A/B decision.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AbState {
    order: String,
    a_left: String,
    b_left: String,
}

impl AbState {
    fn new(order: &str, a_left: u32, b_left: u32) -> Self {
        AbState {
            order: order.to_owned(),
            a_left: a_left.to_string(),
            b_left: b_left.to_string(),
        }
    }

    fn from_env(env: &BTreeMap<String, String>) -> Self {
        let get = |k: &str| env.get(k).cloned().unwrap_or_default();
        AbState {
            order: get("BOOT_ORDER"),
            a_left: get("BOOT_A_LEFT"),
            b_left: get("BOOT_B_LEFT"),
        }
    }
}

/// What happens between boots; the same for both sides.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// Power on: the boot script picks a slot.
    Boot,
    /// `rauc status mark-good` on the booted slot.
    MarkGood,
    /// `rauc status mark-bad` on the booted slot.
    MarkBad,
    /// What RAUC does to the bootloader around an install into `Slot`: mark it bad, write it,
    /// make it primary.
    Install(Slot),
    /// Both counters at 0 (e.g. power lost during several boots in a row).
    Exhaust,
}

/// The board in qemu.
struct RealBoard {
    dir: TempDir,
    disk: PathBuf,
    flash: PathBuf,
    env_file: PathBuf,
    fw_config: PathBuf,
    booted: Option<Slot>,
    /// Resets the script did because no slot was left, over the whole run.
    counter_resets: u32,
    /// The private system bus RAUC runs on, its configuration and the fw_* wrappers.
    bus: PrivateBus,
    rauc_conf: PathBuf,
    wrappers: PathBuf,
}

impl RealBoard {
    fn new(keyring: &Path) -> RealBoard {
        for tool in [
            "qemu-system-arm",
            "mkimage",
            "mkenvimage",
            "fw_printenv",
            "fw_setenv",
            "mcopy",
            "mkfs.vfat",
            "mkfs.ext4",
            "sfdisk",
            "timeout",
        ] {
            run_ok(Command::new("sh").args(["-c", &format!("command -v {tool}")]));
        }
        assert!(
            Path::new(UBOOT_BIN).is_file(),
            "{UBOOT_BIN} missing: apt-get install u-boot-qemu (ci/deps.sh)"
        );
        let dir = tempfile::Builder::new()
            .prefix("spark-uboot-")
            .tempdir()
            .unwrap();
        let p = |name: &str| dir.path().join(name);

        // fw_env.config of the layer: same offset and size, device = our copy of uboot.env.
        let layer_config =
            fs::read_to_string(meta_spark().join("recipes-bsp/u-boot/files/fw_env.config"))
                .unwrap();
        let line = layer_config
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .expect("fw_env.config has a device line");
        let fields: Vec<_> = line.split_whitespace().collect();
        assert_eq!(fields.len(), 3, "fw_env.config: device offset size: {line}");
        assert_eq!(fields[0], "/uboot/uboot.env");
        let (offset, env_size) = (fields[1], fields[2]);
        let env_file = p("uboot.env");
        fs::write(
            p("fw_env.config"),
            format!("{} {offset} {env_size}\n", env_file.display()),
        )
        .unwrap();

        // boot.scr from the layer's boot.cmd, as u-boot.inc builds it.
        run_ok(
            Command::new("mkimage")
                .args([
                    "-A",
                    "arm",
                    "-T",
                    "script",
                    "-C",
                    "none",
                    "-n",
                    "spark-boot",
                    "-d",
                ])
                .arg(meta_spark().join("recipes-bsp/u-boot/files/boot.cmd"))
                .arg(p("boot.scr")),
        );

        // The board's built-in environment (what CONFIG_BOOTCOMMAND and ENV_IS_IN_FAT are on
        // the BeagleBone): load uboot.env from FAT, source boot.scr; save = export + fatwrite.
        let glue = format!(
            "bootdelay=0\n\
             scriptaddr=0x40200000\n\
             kernel_addr_r=0x40400000\n\
             fdt_addr_r=0x43000000\n\
             spark_envaddr=0x44000000\n\
             spark_iface=virtio\n\
             spark_dev=0\n\
             fdtfile=spark-test.dtb\n\
             console=ttyAMA0\n\
             spark_save=env export -c -s {env_size} ${{spark_envaddr}} && fatwrite virtio 0:1 ${{spark_envaddr}} uboot.env {env_size}\n\
             bootcmd=virtio scan; if load virtio 0:1 ${{spark_envaddr}} uboot.env; then env import -c ${{spark_envaddr}} {env_size}; fi; \
             load virtio 0:1 ${{scriptaddr}} boot.scr && source ${{scriptaddr}}; echo spark-test: boot.scr returned; poweroff\n"
        );
        fs::write(p("board-env.txt"), glue).unwrap();
        let flash = p("flash1.img");
        run_ok(
            Command::new("mkenvimage")
                .args(["-s", FLASH_ENV_SIZE, "-o"])
                .arg(&flash)
                .arg(p("board-env.txt")),
        );
        OpenOptions::new()
            .write(true)
            .open(&flash)
            .unwrap()
            .set_len(FLASH_BANK_BYTES)
            .unwrap();

        // The disk: partition table, FAT with boot.scr only (first boot: no uboot.env yet),
        // two ext4 slots with their own kernel and DTB, a data partition.
        let disk = p("disk.img");
        let slot_b_start = FAT_START + FAT_SECTORS + SLOT_SECTORS;
        let total = slot_b_start + SLOT_SECTORS + 8192;
        File::create(&disk).unwrap().set_len(total * 512).unwrap();
        let table = format!(
            "label: dos\nlabel-id: {DISK_ID}\n\
             start={FAT_START}, size={FAT_SECTORS}, type=c, bootable\n\
             size={SLOT_SECTORS}, type=83\nsize={SLOT_SECTORS}, type=83\nsize=8192, type=83\n"
        );
        let mut sfdisk = Command::new("sfdisk")
            .arg("-q")
            .arg(&disk)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        sfdisk
            .stdin
            .take()
            .unwrap()
            .write_all(table.as_bytes())
            .unwrap();
        assert!(sfdisk.wait().unwrap().success(), "sfdisk failed");

        let fat = p("fat.img");
        run_ok(
            Command::new("mkfs.vfat")
                .args(["-n", "BOOT", "-C"])
                .arg(&fat)
                .arg((FAT_SECTORS / 2).to_string()),
        );
        run_ok(
            Command::new("mcopy")
                .arg("-i")
                .arg(&fat)
                .arg(p("boot.scr"))
                .arg("::boot.scr"),
        );
        copy_into(&fat, &disk, FAT_START * 512);
        for (slot, start, bytes) in [
            ("A", FAT_START + FAT_SECTORS, KERNEL_BYTES_A),
            ("B", slot_b_start, KERNEL_BYTES_B),
        ] {
            let tree = p(&format!("root{slot}"));
            fs::create_dir_all(tree.join("boot")).unwrap();
            fs::write(tree.join("boot/zImage"), slot.repeat(bytes)).unwrap();
            fs::write(tree.join("boot/spark-test.dtb"), "not a dtb").unwrap();
            let image = p(&format!("root{slot}.ext4"));
            run_ok(
                Command::new("mkfs.ext4")
                    .args(["-q", "-F", "-d"])
                    .arg(&tree)
                    .arg(&image)
                    .arg("8M"),
            );
            copy_into(&image, &disk, start * 512);
        }

        // RAUC with its uboot backend; fw_printenv/fw_setenv wrappers work on uboot.env in the
        // FAT partition of the disk image (mtools), like /uboot/uboot.env on the gateway.
        let wrappers = p("bin");
        fs::create_dir_all(&wrappers).unwrap();
        let fat = format!("{}@@{}", disk.display(), FAT_START * 512);
        let pull = format!(
            "mcopy -o -n -i '{fat}' ::uboot.env '{}' || exit 1",
            env_file.display()
        );
        for (tool, tail) in [
            ("fw_printenv", String::new()),
            (
                "fw_setenv",
                format!(
                    " || exit 1\nexec mcopy -o -i '{fat}' '{}' ::uboot.env",
                    env_file.display()
                ),
            ),
        ] {
            let exec = if tail.is_empty() { "exec " } else { "" };
            let script = format!(
                "#!/bin/sh\n{pull}\n{exec}/usr/bin/{tool} -c '{}' \"$@\"{tail}\n",
                p("fw_env.config").display()
            );
            let path = wrappers.join(tool);
            fs::write(&path, script).unwrap();
            run_ok(Command::new("chmod").arg("755").arg(&path));
        }
        for slot in ["a", "b"] {
            File::create(p(&format!("slot-{slot}.img")))
                .unwrap()
                .set_len(8 << 20)
                .unwrap();
        }
        let rauc_conf = p("system.conf");
        fs::write(
            &rauc_conf,
            format!(
                "[system]\ncompatible=spark-bbb\nbootloader=uboot\nboot-attempts={ATTEMPTS}\n\
                 boot-attempts-primary={ATTEMPTS}\nmountprefix={}\ndata-directory={}\n\
                 [keyring]\npath={}\n\
                 [slot.rootfs.0]\ndevice={}\ntype=raw\nbootname=A\n\
                 [slot.rootfs.1]\ndevice={}\ntype=raw\nbootname=B\n",
                p("mnt").display(),
                p("rauc-data").display(),
                keyring.display(),
                p("slot-a.img").display(),
                p("slot-b.img").display(),
            ),
        )
        .unwrap();
        let bus = PrivateBus::start_in(dir.path(), Duration::from_secs(30)).unwrap();

        RealBoard {
            bus,
            rauc_conf,
            wrappers,
            fw_config: p("fw_env.config"),
            dir,
            disk,
            flash,
            env_file,
            booted: None,
            counter_resets: 0,
        }
    }

    fn fat_image(&self) -> String {
        format!("{}@@{}", self.disk.display(), FAT_START * 512)
    }

    /// Powers the board on until the script boots a slot (at most one counter reset first).
    fn boot(&mut self) -> Slot {
        for _power_on in 0..2 {
            let started = Instant::now();
            let out = run(Command::new("timeout")
                .args(["-k", "5", QEMU_TIMEOUT_SECS, "qemu-system-arm"])
                .args([
                    "-M",
                    "virt",
                    "-cpu",
                    "cortex-a15",
                    "-m",
                    "128",
                    "-nographic",
                ])
                .args(["-no-reboot", "-nic", "none", "-bios", UBOOT_BIN])
                .arg("-drive")
                .arg(format!(
                    "if=pflash,format=raw,index=1,file={}",
                    self.flash.display()
                ))
                .arg("-drive")
                .arg(format!(
                    "if=none,file={},format=raw,id=disk",
                    self.disk.display()
                ))
                .args(["-device", "virtio-blk-device,drive=disk"])
                .stdin(std::process::Stdio::null()));
            let console = String::from_utf8_lossy(&out.stdout).replace('\r', "");
            assert!(
                out.status.success(),
                "qemu failed or timed out ({}) after {:?}:\n{console}",
                out.status,
                started.elapsed()
            );
            assert!(
                !console.contains("spark-test: boot.scr returned"),
                "boot.scr returned instead of booting or resetting:\n{console}"
            );
            if console.contains("spark-boot: no slot left") {
                assert!(console.contains("resetting ..."), "{console}");
                self.counter_resets += 1;
                continue;
            }
            let slot_line = console
                .lines()
                .find(|l| l.starts_with("spark-boot: slot="))
                .unwrap_or_else(|| panic!("no slot decision in the console:\n{console}"));
            let slot: Slot = slot_line["spark-boot: slot=".len()..]
                .split_whitespace()
                .next()
                .unwrap()
                .parse()
                .unwrap();
            // The kernel came from the chosen slot's partition, and Linux would be told so.
            let (mine, other) = match slot {
                Slot::A => (KERNEL_BYTES_A, KERNEL_BYTES_B),
                Slot::B => (KERNEL_BYTES_B, KERNEL_BYTES_A),
            };
            assert!(
                console.contains(&format!("\n{mine} bytes read")),
                "{console}"
            );
            assert!(
                !console.contains(&format!("\n{other} bytes read")),
                "{console}"
            );
            let part = match slot {
                Slot::A => 2,
                Slot::B => 3,
            };
            let bootargs = format!(
                "root=PARTUUID={}-0{part} ro rootfstype=ext4 rootwait fixrtc rauc.slot={slot}",
                &DISK_ID[2..]
            );
            assert!(console.contains(&bootargs), "want {bootargs}:\n{console}");
            assert!(console.contains("resetting"), "{console}");
            self.booted = Some(slot);
            return slot;
        }
        panic!("two power-ons without a bootable slot");
    }

    /// `uboot.env` from the FAT partition, read with fw_printenv.
    fn env(&self) -> BTreeMap<String, String> {
        self.pull_env();
        let text = run_ok(
            Command::new("fw_printenv")
                .arg("-c")
                .arg(&self.fw_config)
                .current_dir(self.dir.path()),
        );
        text.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    fn state(&self) -> AbState {
        AbState::from_env(&self.env())
    }

    /// Sets variables with fw_setenv on uboot.env and writes it back to the FAT partition.
    fn set(&self, vars: &[(&str, String)]) {
        self.pull_env();
        for (key, value) in vars {
            run_ok(
                Command::new("fw_setenv")
                    .arg("-c")
                    .arg(&self.fw_config)
                    .arg(key)
                    .arg(value)
                    .current_dir(self.dir.path()),
            );
        }
        run_ok(
            Command::new("mcopy")
                .args(["-o", "-i", &self.fat_image()])
                .arg(&self.env_file)
                .arg("::uboot.env"),
        );
    }

    fn pull_env(&self) {
        run_ok(
            Command::new("mcopy")
                .args(["-o", "-n", "-i", &self.fat_image(), "::uboot.env"])
                .arg(&self.env_file),
        );
    }

    /// Runs `rauc status ARGS` against a `rauc service` booted from the slot U-Boot chose.
    fn rauc_status(&self, args: &[&str]) {
        let booted = self.booted.expect("a slot was booted");
        let path = format!(
            "{}:{}",
            self.wrappers.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let log = File::create(self.dir.path().join("rauc-service.log")).unwrap();
        let mut service = Command::new("rauc")
            .arg(format!("--conf={}", self.rauc_conf.display()))
            .arg("service")
            .arg(format!("--override-boot-slot={}", booted.bootname()))
            .env("PATH", &path)
            .env("DBUS_SYSTEM_BUS_ADDRESS", self.bus.address())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("rauc service starts");
        let result = self.wait_for_rauc(&mut service).and_then(|()| {
            let out = run(Command::new("timeout")
                .args(["30", "rauc", "status"])
                .args(args)
                .env("DBUS_SYSTEM_BUS_ADDRESS", self.bus.address()));
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "rauc status {args:?} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
        });
        let _ = service.kill();
        let _ = service.wait();
        if let Err(message) = result {
            let log =
                fs::read_to_string(self.dir.path().join("rauc-service.log")).unwrap_or_default();
            panic!("{message}\nrauc service log:\n{log}");
        }
    }

    /// Polls the bus until RAUC owns its name (bounded).
    fn wait_for_rauc(&self, service: &mut Child) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = service.try_wait().unwrap() {
                return Err(format!("rauc service exited with {status}"));
            }
            let reply = run(Command::new("dbus-send")
                .arg(format!("--bus={}", self.bus.address()))
                .args(["--print-reply", "--dest=org.freedesktop.DBus", "/"])
                .arg("org.freedesktop.DBus.NameHasOwner")
                .arg("string:de.pengutronix.rauc"));
            if String::from_utf8_lossy(&reply.stdout).contains("boolean true") {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err("de.pengutronix.rauc not on the bus within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The step on the real board: RAUC for everything RAUC does, fw_setenv for the rest.
    fn apply(&mut self, step: Step) {
        match step {
            Step::Boot => {
                self.boot();
            }
            Step::MarkGood => self.rauc_status(&["mark-good"]),
            Step::MarkBad => self.rauc_status(&["mark-bad"]),
            Step::Install(slot) => {
                assert_ne!(self.booted, Some(slot), "RAUC installs into the other slot");
                self.rauc_status(&["mark-bad", "other"]);
                self.rauc_status(&["mark-active", "other"]);
            }
            Step::Exhaust => self.set(&[("BOOT_A_LEFT", "0".into()), ("BOOT_B_LEFT", "0".into())]),
        }
    }
}

/// The simulated board: real `rauc service` over spark-testbed's simulated U-Boot.
struct SimBoard {
    bed: Testbed,
}

impl SimBoard {
    fn new(keyring: &Path) -> SimBoard {
        let mut opts = TestbedOptions::new("spark-bbb", keyring);
        opts.boot_attempts = ATTEMPTS;
        opts.booted = Slot::A;
        let bed = Testbed::start(opts).unwrap();
        SimBoard { bed }
    }

    fn state(&self) -> AbState {
        AbState::from_env(&self.bed.bootloader().env().unwrap())
    }

    fn backend(&self, args: &[&str]) {
        run_ok(Command::new(self.bed.root().join("spark-uboot-sim")).args(args));
    }

    fn apply(&mut self, step: Step) -> Option<Slot> {
        match step {
            Step::Boot => return Some(self.bed.reboot().unwrap()),
            Step::MarkGood => self.bed.mark_good().unwrap(),
            Step::MarkBad => self.bed.mark_bad().unwrap(),
            Step::Install(slot) => {
                self.backend(&["set-state", slot.bootname(), "bad"]);
                self.backend(&["set-primary", slot.bootname()]);
            }
            Step::Exhaust => {
                let boot = self.bed.bootloader();
                boot.set_attempts_left(Slot::A, 0).unwrap();
                boot.set_attempts_left(Slot::B, 0).unwrap();
            }
        }
        None
    }
}

/// The boot script's contract, step by step: (step, slot booted if the step boots, state after).
fn scenario() -> Vec<(Step, Option<Slot>, AbState)> {
    use Slot::{A, B};
    use Step::*;
    let s = AbState::new;
    vec![
        // First boot: no uboot.env yet, defaults, A boots.
        (Boot, Some(A), s("A B", 2, 3)),
        (MarkGood, None, s("A B", 3, 3)),
        // Update into B, never marked good: three tries, then back to A (fallback).
        (Install(B), None, s("B A", 3, 3)),
        (Boot, Some(B), s("B A", 3, 2)),
        (Boot, Some(B), s("B A", 3, 1)),
        (Boot, Some(B), s("B A", 3, 0)),
        (Boot, Some(A), s("B A", 2, 0)),
        (MarkGood, None, s("B A", 3, 0)),
        (Boot, Some(A), s("B A", 2, 0)),
        // Update into B again, marked good after each boot: it stays.
        (Install(B), None, s("B A", 2, 3)),
        (Boot, Some(B), s("B A", 2, 2)),
        (MarkGood, None, s("B A", 2, 3)),
        (Boot, Some(B), s("B A", 2, 2)),
        (MarkGood, None, s("B A", 2, 3)),
        (Boot, Some(B), s("B A", 2, 2)),
        // Both exhausted: the script resets every counter (and the board), then B boots.
        (Exhaust, None, s("B A", 0, 0)),
        (Boot, Some(B), s("B A", 3, 2)),
        // Marked bad: B leaves BOOT_ORDER, A boots.
        (MarkBad, None, s("A", 3, 0)),
        (Boot, Some(A), s("A", 2, 0)),
    ]
}

#[test]
fn boot_script_in_real_uboot_matches_the_simulator() {
    let started = Instant::now();
    let pki = tempfile::tempdir().unwrap();
    let dev = spark_keys::init_dev(pki.path(), &spark_keys::DevPkiOptions::default()).unwrap();
    let mut real = RealBoard::new(&dev.keyring());
    let mut sim = SimBoard::new(&dev.keyring());
    for (i, (step, want_slot, want_state)) in scenario().into_iter().enumerate() {
        let real_slot = match step {
            Step::Boot => Some(real.boot()),
            _ => {
                real.apply(step);
                None
            }
        };
        let sim_slot = sim.apply(step);
        let (real_state, sim_state) = (real.state(), sim.state());
        let at = format!("step {i} ({step:?})");
        assert_eq!(
            real_slot, want_slot,
            "{at}: real U-Boot booted another slot"
        );
        assert_eq!(real_state, want_state, "{at}: real U-Boot environment");
        assert_eq!(
            sim_slot, real_slot,
            "{at}: the simulator disagrees with real U-Boot on the slot"
        );
        assert_eq!(
            sim_state, real_state,
            "{at}: the simulator disagrees with real U-Boot on the counters"
        );
    }
    assert_eq!(real.counter_resets, 1, "exactly the exhausted step resets");
    // The environment U-Boot wrote is a full one: its own variables survive next to ours.
    let env = real.env();
    assert_eq!(env.get("spark_iface").map(String::as_str), Some("virtio"));
    eprintln!("boot scenario: {:?}", started.elapsed());
}

/// Copies `src` into `dst` at byte `offset` (a partition into a disk image).
fn copy_into(src: &Path, dst: &Path, offset: u64) {
    let mut bytes = Vec::new();
    File::open(src).unwrap().read_to_end(&mut bytes).unwrap();
    let mut out = OpenOptions::new().write(true).open(dst).unwrap();
    out.seek(SeekFrom::Start(offset)).unwrap();
    out.write_all(&bytes).unwrap();
}
