//! The meta-spark checks CI runs (no Yocto build fits on a CI box, so each part is proven by the
//! real tool that judges it):
//! - `workspace`: the crates list matches Cargo.lock; every daemon has a recipe, a hardened unit
//!   and a least-privilege D-Bus policy (and a new daemon without them is caught);
//! - `oelint`: oelint-adv is clean over every recipe with the committed `meta-spark/.oelint.cfg`;
//! - `kas`: `kas/spark-bbb.yml` validates against the JSON schema shipped in the kas package, and
//!   its repositories are pinned;
//! - `uboot`: the A/B boot script runs in real U-Boot (Debian's u-boot-qemu under
//!   qemu-system-arm) on a disk image whose FAT partition holds boot.scr and uboot.env; boot by
//!   boot, the slot and counters (read with fw_printenv) are compared with spark-testbed's
//!   simulated U-Boot driven by the real `rauc service`.
//!
//! Tools come from `ci/deps.sh`: Debian packages, and kas + oelint-adv in a venv at
//! `/opt/spark-yocto-tools` (`SPARK_YOCTO_TOOLS` overrides it).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

fn meta_spark() -> PathBuf {
    repo_root().join("meta-spark")
}

/// A program of the Python venv that `ci/deps.sh` sets up.
fn venv_tool(name: &str) -> PathBuf {
    let dir = std::env::var_os("SPARK_YOCTO_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/spark-yocto-tools"));
    let path = dir.join("bin").join(name);
    assert!(
        path.is_file(),
        "{} is missing: run ci/deps.sh (it installs kas and oelint-adv into {})",
        path.display(),
        dir.display()
    );
    path
}

/// Runs a command to completion, panicking with its output when it cannot start.
fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|err| panic!("cannot run {cmd:?}: {err}; run ci/deps.sh"))
}

fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

mod workspace {
    use std::fs;

    use super::*;

    #[test]
    fn crates_inc_matches_cargo_lock() {
        let root = repo_root();
        let expected = spark_layer::expected_crates_inc(&root).unwrap();
        let current = fs::read_to_string(root.join(spark_layer::CRATES_INC)).unwrap();
        assert!(
            current == expected,
            "{} is stale: run `cargo run -p spark-layer -- crates --write` and commit it",
            spark_layer::CRATES_INC
        );
        // Every crates.io package of the lock file is fetched, with its checksum.
        let lock = fs::read_to_string(root.join("Cargo.lock")).unwrap();
        let registry_packages = lock
            .matches("source = \"registry+https://github.com/rust-lang/crates.io-index\"")
            .count();
        assert_eq!(
            current.matches("crate://crates.io/").count(),
            registry_packages
        );
        assert_eq!(
            current.matches(".sha256sum] = \"").count(),
            registry_packages
        );
    }

    #[test]
    fn every_daemon_has_a_recipe_a_hardened_unit_and_a_policy() {
        let root = repo_root();
        let daemons = spark_layer::workspace_daemons(&root).unwrap();
        let names: Vec<_> = daemons.iter().map(|d| d.name.as_str()).collect();
        for expected in ["spark-meterd", "spark-uplinkd", "spark-updated"] {
            assert!(
                names.contains(&expected),
                "{expected} not found in {names:?}"
            );
        }
        assert!(!names.contains(&"rauc-client"), "a library is not a daemon");
        let problems = spark_layer::check_layer(&root).unwrap();
        assert!(
            problems.is_empty(),
            "layer problems:\n{}",
            problems.join("\n")
        );
    }

    /// The check is driven by the workspace: a daemon that lands without packaging fails it, and
    /// so do a unit that loses its hardening and a reader's policy that lets it own a name.
    #[test]
    fn a_new_daemon_without_packaging_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let write = |rel: &str, text: &str| {
            let path = root.join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        };
        write(
            "Cargo.toml",
            "[workspace]\nmembers = [\"daemons/rauc-client\", \"daemons/spark-meterd\", \"daemons/spark-webui\", \"daemons/spark-newd\"]\n",
        );
        write("Cargo.lock", "version = 4\n");
        write(
            "daemons/rauc-client/Cargo.toml",
            "[package]\nname = \"rauc-client\"\n",
        );
        write("daemons/rauc-client/src/lib.rs", "");
        write(
            "daemons/spark-webui/Cargo.toml",
            "[package]\nname = \"spark-webui\"\n",
        );
        write("daemons/spark-webui/src/main.rs", "fn main() {}");
        write(
            "daemons/spark-newd/Cargo.toml",
            "[package]\nname = \"spark-newd\"\n",
        );
        write("daemons/spark-newd/src/main.rs", "fn main() {}");
        // meterd is packaged, but its unit may run as root and write anywhere.
        write(
            "daemons/spark-meterd/Cargo.toml",
            "[package]\nname = \"spark-meterd\"\n[[bin]]\nname = \"spark-meterd\"\n",
        );
        let real_unit =
            fs::read_to_string(repo_root().join("daemons/spark-meterd/spark-meterd.service"))
                .unwrap();
        write(
            "daemons/spark-meterd/spark-meterd.service",
            &real_unit
                .replace("ProtectSystem=strict", "ProtectSystem=full")
                .replace(
                    "ReadWritePaths=/data/spark-meterd",
                    "ReadWritePaths=/var/lib",
                ),
        );
        write(
            "daemons/spark-meterd/io.spark.Meters1.conf",
            &fs::read_to_string(repo_root().join("daemons/spark-meterd/io.spark.Meters1.conf"))
                .unwrap(),
        );
        write(
            &format!("{}/spark-meterd.bb", spark_layer::RECIPES_DIR),
            "SPARK_DBUS_NAME = \"io.spark.Meters1\"\nrequire spark-daemon.inc\n",
        );
        // Packaged as a reader (no bus name), but its policy lets it own one and its unit
        // keeps a capability beyond binding port 443.
        write(
            &format!("{}/spark-webui.bb", spark_layer::RECIPES_DIR),
            "SPARK_DBUS_POLICY = \"spark-webui\"\nrequire spark-daemon.inc\n",
        );
        write(
            "daemons/spark-webui/spark-webui.conf",
            "<busconfig><policy user=\"spark-webui\"><allow own=\"io.spark.Meters1\"/></policy></busconfig>\n",
        );
        write(
            "daemons/spark-webui/spark-webui.service",
            &fs::read_to_string(repo_root().join("daemons/spark-webui/spark-webui.service"))
                .unwrap()
                .replace(
                    "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
                    "CapabilityBoundingSet=CAP_NET_BIND_SERVICE CAP_NET_RAW",
                ),
        );
        write(spark_layer::CRATES_INC, "stale\n");

        let problems = spark_layer::check_layer(root).unwrap().join("\n");
        assert!(
            problems.contains("spark-crates.inc does not match Cargo.lock"),
            "{problems}"
        );
        assert!(problems.contains("daemon spark-newd"), "{problems}");
        assert!(problems.contains("has no recipe"), "{problems}");
        assert!(problems.contains("has no systemd unit daemons/spark-newd/spark-newd.service"));
        assert!(
            problems.contains("a daemon without SPARK_DBUS_NAME may not own a name"),
            "{problems}"
        );
        assert!(
            problems.contains("CapabilityBoundingSet=CAP_NET_BIND_SERVICE CAP_NET_RAW, want none"),
            "{problems}"
        );
        assert!(
            problems.contains("ProtectSystem=full, want ProtectSystem=strict"),
            "{problems}"
        );
        assert!(
            problems.contains("ReadWritePaths=/var/lib is outside /data"),
            "{problems}"
        );
        assert!(!problems.contains("rauc-client"), "{problems}");

        spark_layer::write_crates_inc(root).unwrap();
        let problems = spark_layer::check_layer(root).unwrap().join("\n");
        assert!(!problems.contains("spark-crates.inc"), "{problems}");
    }
}

mod oelint {
    use super::*;

    /// Every recipe, bbappend (and the includes they require) is clean under the committed
    /// configuration; a recipe with a known mistake is not, so the run is a real check.
    #[test]
    fn recipes_are_oelint_clean() {
        let layer = meta_spark();
        let mut files = Vec::new();
        collect_recipes(&layer, &mut files);
        files.sort();
        assert!(files.len() >= 10, "recipes found: {files:?}");
        let out = run(Command::new(venv_tool("oelint-adv"))
            .current_dir(&layer)
            .args(&files));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && text.trim().is_empty(),
            "oelint-adv findings:\n{text}"
        );

        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad_1.0.bb");
        std::fs::write(
            &bad,
            "LICENSE = \"MIT\"\nDEPENDS = \"zlib\"\ndo_install() {\n    cp a ${D}/b\n}\n",
        )
        .unwrap();
        let out = run(Command::new(venv_tool("oelint-adv"))
            .current_dir(&layer)
            .arg(&bad));
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "a bad recipe passed: {text}");
        assert!(text.contains("oelint.task.nocopy"), "{text}");
    }

    fn collect_recipes(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n == "tools") {
                    continue;
                }
                collect_recipes(&path, out);
            } else if path
                .extension()
                .is_some_and(|e| e == "bb" || e == "bbappend")
            {
                out.push(path.strip_prefix(meta_spark()).unwrap().to_owned());
            }
        }
    }
}

mod kas {
    use super::*;

    /// Validates a kas file with kas's own JSON schema (`kas/schema-kas.json` in the installed
    /// kas package) and prints its repos as JSON.
    const VALIDATE: &str = r#"
import importlib.resources, json, sys
import jsonschema, yaml
schema = json.loads(importlib.resources.files("kas").joinpath("schema-kas.json").read_text())
with open(sys.argv[1]) as f:
    config = yaml.safe_load(f)
jsonschema.validate(config, schema)
print(json.dumps(config))
"#;

    /// Repositories that follow a branch until `kas lock` pins their commit on a networked build
    /// host (see meta-spark/README.md, "Pins").
    const BRANCH_ONLY_UNTIL_LOCKED: &[&str] = &["meta-openembedded", "meta-rauc"];

    fn validate(path: &Path) -> Output {
        run(Command::new(venv_tool("python3"))
            .args(["-c", VALIDATE])
            .arg(path))
    }

    #[test]
    fn kas_file_validates_against_kas_schema_and_is_pinned() {
        let path = meta_spark().join("kas/spark-bbb.yml");
        let out = validate(&path);
        assert!(
            out.status.success(),
            "{} does not match kas's schema:\n{}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let config: serde_json::Value =
            serde_json::from_str(&text).expect("validator prints the config as JSON");
        assert_eq!(config["machine"].as_str(), Some("beaglebone-yocto"));
        assert_eq!(config["distro"].as_str(), Some("spark"));
        let targets: Vec<_> = config["target"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t.as_str())
            .collect();
        assert_eq!(targets, ["spark-gateway-image", "spark-gateway-bundle"]);

        // Once committed, `kas lock`'s file pins every remote repository by commit.
        let lock_path = meta_spark().join("kas/spark-bbb.lock.yml");
        let locked: Option<serde_json::Value> = lock_path.exists().then(|| {
            let out = validate(&lock_path);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            serde_json::from_slice(&out.stdout).unwrap()
        });

        let repos = config["repos"].as_object().unwrap();
        assert!(repos.contains_key("spark"), "the layer's own repository");
        for (name, repo) in repos {
            let Some(repo) = repo.as_object() else {
                continue;
            };
            if !repo.contains_key("url") {
                continue;
            }
            // kas refuses a tag together with a branch (the schema does not say so).
            assert!(
                !(repo.contains_key("tag") && repo.contains_key("branch")),
                "repository {name}: kas does not accept tag and branch together"
            );
            match &locked {
                Some(lock) => assert!(
                    lock["overrides"]["repos"][name]["commit"].is_string(),
                    "{} does not pin {name} by commit",
                    lock_path.display()
                ),
                None => assert!(
                    repo.contains_key("commit")
                        || repo.contains_key("tag")
                        || BRANCH_ONLY_UNTIL_LOCKED.contains(&name.as_str()),
                    "repository {name} is not pinned by commit or tag"
                ),
            }
        }
    }

    #[test]
    fn schema_validation_rejects_a_broken_kas_file() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.yml");
        std::fs::write(
            &bad,
            "header:\n  version: 99\nmachine: beaglebone-yocto\nrepos:\n  x:\n    url: 3\n    layerz: {}\n",
        )
        .unwrap();
        let out = validate(&bad);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("ValidationError"));
    }
}

mod system {
    use std::fs;

    use super::*;

    /// Lines of `systemd-analyze verify` that only say the unit's world is not installed here.
    fn environment_only(line: &str) -> bool {
        line.contains("is not executable: No such file or directory")
            || (line.contains("Failed to create") && line.contains("not found"))
    }

    fn verify(dir: &Path, units: &[&str]) -> Vec<String> {
        let out = run(Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .args(units.iter().map(|u| format!("./{u}")))
            .current_dir(dir));
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .chain(String::from_utf8_lossy(&out.stdout).lines())
            .filter(|l| !l.trim().is_empty() && !environment_only(l))
            .map(str::to_owned)
            .collect()
    }

    /// The daemons' units and the layer's own units parse without an unknown or bad setting
    /// (systemd-analyze verify; missing binaries and units of the image are expected here).
    #[test]
    fn units_pass_systemd_analyze_verify() {
        let dir = tempfile::tempdir().unwrap();
        let root = repo_root();
        let mut units = Vec::new();
        for daemon in spark_layer::workspace_daemons(&root).unwrap() {
            let name = format!("{}.service", daemon.name);
            fs::copy(root.join(&daemon.dir).join(&name), dir.path().join(&name)).unwrap();
            units.push(name);
        }
        let files = meta_spark().join("recipes-spark/spark-system/files");
        for name in ["spark-health.service", "data.mount", "uboot.mount"] {
            fs::copy(files.join(name), dir.path().join(name)).unwrap();
            units.push(name.to_owned());
        }
        let units: Vec<&str> = units.iter().map(String::as_str).collect();
        let findings = verify(dir.path(), &units);
        assert!(
            findings.is_empty(),
            "systemd-analyze verify:\n{}",
            findings.join("\n")
        );

        // A misspelt hardening key is reported, so the check above can fail.
        let unit = dir.path().join(units[0]);
        let text = fs::read_to_string(&unit).unwrap();
        fs::write(&unit, text.replace("ProtectHome=", "ProtectHom=")).unwrap();
        let findings = verify(dir.path(), &units[..1]).join("\n");
        assert!(findings.contains("Unknown key 'ProtectHom'"), "{findings}");
    }

    /// The value of `VAR ??= "value"` in the distro configuration.
    fn distro_default(var: &str) -> String {
        let conf = fs::read_to_string(meta_spark().join("conf/distro/spark.conf")).unwrap();
        conf.lines()
            .find_map(|l| {
                let (k, v) = l.split_once("??=")?;
                (k.trim() == var).then(|| v.trim().trim_matches('"').to_owned())
            })
            .unwrap_or_else(|| panic!("{var} has no default in spark.conf"))
    }

    /// The configurations the image ships (with the distro's defaults filled in, as the recipe
    /// does) and the per-device one the README tells provisioning to write are accepted by the
    /// daemons' own config parsers.
    #[test]
    fn daemon_configs_parse_with_the_daemons_parsers() {
        let dir = tempfile::tempdir().unwrap();
        let files = meta_spark().join("recipes-spark/spark-system/files");
        let fill = |name: &str| {
            let text = fs::read_to_string(files.join(name))
                .unwrap()
                .replace("@SPARK_RADIO@", &distro_default("SPARK_RADIO"))
                .replace(
                    "@SPARK_INGEST_ADDRESS@",
                    &distro_default("SPARK_INGEST_ADDRESS"),
                );
            assert!(!text.contains('@'), "{name}: unfilled placeholder");
            let path = dir.path().join(name);
            fs::write(&path, text).unwrap();
            path
        };
        let meterd = spark_meterd::Config::load(&fill("meterd.toml")).unwrap();
        assert_eq!(meterd.data_dir, Path::new("/data/spark-meterd"));
        spark_uplinkd::Config::load(&fill("uplinkd.toml")).unwrap();
        let webui = spark_webui::Config::load(&fill("webui.toml")).unwrap();
        assert_eq!(webui.data_dir, Path::new("/data/spark-webui"));
        assert_eq!(webui.listen.port(), 443);

        let readme = fs::read_to_string(meta_spark().join("README.md")).unwrap();
        let start = readme
            .find("cat > /data/spark/updated.toml <<'EOF'\n")
            .expect("README shows updated.toml");
        let body = &readme[start..];
        let body = &body[body.find('\n').unwrap() + 1..body.find("   EOF").unwrap()];
        let text: String = body
            .lines()
            .map(|l| format!("{}\n", l.trim_start()))
            .collect();
        let path = dir.path().join("updated.toml");
        fs::write(&path, text).unwrap();
        let updated = spark_updated::Config::load(&path).unwrap();
        assert_eq!(updated.device, "bbb-0042");
    }

    /// Writes a system-bus configuration that includes `policies` and listens in `dir`.
    fn bus_config(dir: &Path, policies: &[PathBuf]) -> PathBuf {
        let includes: String = policies
            .iter()
            .map(|p| format!("  <include>{}</include>\n", p.display()))
            .collect();
        let path = dir.join("bus.conf");
        fs::write(
            &path,
            format!(
                "<busconfig>\n  <type>system</type>\n  <listen>unix:path={}</listen>\n  \
                 <policy context=\"default\"><allow user=\"*\"/></policy>\n{includes}</busconfig>\n",
                dir.join("bus.sock").display()
            ),
        )
        .unwrap();
        path
    }

    /// Starts dbus-daemon on the config for at most 2 s: Ok(address) if it came up.
    fn start_bus(config: &Path) -> Result<String, String> {
        let out = run(Command::new("timeout")
            .args(["2", "dbus-daemon", "--nofork", "--print-address"])
            .arg(format!("--config-file={}", config.display())));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        // 124: still running when the timeout stopped it, i.e. the configuration loaded.
        if out.status.code() == Some(124) && stdout.starts_with("unix:path=") {
            Ok(stdout)
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Every daemon's D-Bus policy loads into a real dbus-daemon (system bus type); a broken one
    /// does not.
    #[test]
    fn dbus_policies_load_into_a_real_dbus_daemon() {
        let dir = tempfile::tempdir().unwrap();
        let root = repo_root();
        let policies: Vec<PathBuf> = spark_layer::workspace_daemons(&root)
            .unwrap()
            .iter()
            .flat_map(|d| fs::read_dir(root.join(&d.dir)).unwrap())
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.extension().is_some_and(|e| e == "conf")
                    && p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("io.spark."))
            })
            .collect();
        assert_eq!(policies.len(), 3, "{policies:?}");
        start_bus(&bus_config(dir.path(), &policies)).expect("dbus-daemon loads the policies");

        let bad = dir.path().join("io.spark.Broken1.conf");
        fs::write(
            &bad,
            "<busconfig><policy user=\"x\"><allow own=\"a\"/></polic></busconfig>",
        )
        .unwrap();
        let err = start_bus(&bus_config(dir.path(), &[bad])).unwrap_err();
        assert!(err.contains("mismatched tag"), "{err}");
    }
}

#[path = "layer/uboot.rs"]
mod uboot;
