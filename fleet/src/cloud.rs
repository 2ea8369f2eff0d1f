//! The cloud end of a fleet: a development PKI, `spark-ingest` (telemetry, push channel, the data
//! pipeline in-process), `spark-ota` (releases, rollouts, dashboard) and optionally `spark-api`
//! (the HTTP API for internal systems) as real processes on SQLite and local files, wired to each
//! other the way production wires them (ingest's internal API over mutual TLS, admitting only the
//! OTA server's and the API's service certificates).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use spark_keys::{DevPki, DevPkiOptions};
use spark_ota::catalog::Uploaded;
use spark_ota::client::{AdminClient, Credentials};
use spark_ota::rollouts::{CreateRollout, RolloutStatus};

use crate::process::{Daemon, free_port, listening, wait_for};
use crate::{Binaries, FleetError, Release};

/// How the cloud is run.
#[derive(Debug, Clone)]
pub struct CloudOptions {
    /// Where the PKI, configs, databases and logs go.
    pub dir: PathBuf,
    /// Rollouts run on real time × this factor (`[rollouts] clock-factor`); `None`: real time.
    pub clock_factor: Option<u32>,
    /// How often (real seconds) the OTA server evaluates gates and looks for gateways to push to.
    pub tick_secs: f64,
    /// `RUST_LOG` of the services.
    pub log: String,
    /// Also run `spark-api`, with an `ops` client certificate and a read+command token.
    pub api: bool,
}

impl CloudOptions {
    pub fn new(dir: impl Into<PathBuf>) -> CloudOptions {
        CloudOptions {
            dir: dir.into(),
            clock_factor: None,
            tick_secs: 1.0,
            log: "info".into(),
            api: false,
        }
    }
}

/// What a gateway needs to know of the cloud: where it is and which keys to trust.
#[derive(Debug, Clone)]
pub struct CloudLink {
    /// The PKI directory (device certificates are issued into it).
    pub pki_dir: PathBuf,
    /// `127.0.0.1:PORT` of ingest's telemetry listener.
    pub ingest: String,
    /// `https://127.0.0.1:PORT` of the OTA server's device API.
    pub ota: String,
    pub server_ca: PathBuf,
    pub keyring: PathBuf,
    pub release_pub: PathBuf,
}

/// The running cloud services. Dropping it kills them.
pub struct Cloud {
    dir: PathBuf,
    pki: DevPki,
    ingest: Daemon,
    ingest_spec: Service,
    ota: Daemon,
    ota_spec: Service,
    api: Option<ApiService>,
    ota_config: PathBuf,
    ingest_port: u16,
    device_port: u16,
    admin_port: u16,
    token: String,
    rt: tokio::runtime::Runtime,
    admin: AdminClient,
}

impl std::fmt::Debug for Cloud {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cloud")
            .field("dir", &self.dir)
            .field("admin", &self.admin_url())
            .finish_non_exhaustive()
    }
}

/// How a service is started (again, after a crash).
#[derive(Debug, Clone)]
struct Service {
    name: &'static str,
    bin: PathBuf,
    args: Vec<std::ffi::OsString>,
    log: PathBuf,
    level: String,
    /// Ready once all of these accept connections.
    ports: Vec<u16>,
}

impl Service {
    fn launch(&self) -> Result<Daemon, FleetError> {
        let mut cmd = Command::new(&self.bin);
        cmd.args(&self.args).env("RUST_LOG", &self.level);
        let mut d = Daemon::spawn(self.name, cmd, &self.log)?;
        wait_for(
            &format!("{} to listen", self.name),
            START,
            || d.check_running("starting"),
            || self.ports.iter().all(|p| listening(*p)).then_some(()),
        )?;
        Ok(d)
    }
}

/// The running `spark-api` and what a client needs to call it.
#[derive(Debug)]
pub struct ApiService {
    daemon: Daemon,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// Bearer token with scopes read and command.
    pub token: String,
    /// The `ops` client certificate and key (mutual TLS), from the server CA.
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Bound on a service coming up.
const START: Duration = Duration::from_secs(60);

impl Cloud {
    /// Creates the PKI and starts ingest, then the OTA server with push through ingest, and
    /// makes an admin token.
    pub fn start(bins: &Binaries, opts: &CloudOptions) -> Result<Cloud, FleetError> {
        std::fs::create_dir_all(&opts.dir).map_err(FleetError::io("create", &opts.dir))?;
        // Absolute: the services resolve relative paths in their configs from the config's
        // folder, and a gateway's configs name this PKI too.
        let dir = std::fs::canonicalize(&opts.dir).map_err(FleetError::io("resolve", &opts.dir))?;
        let pki_dir = dir.join("pki");
        let pki = spark_keys::init_dev(&pki_dir, &DevPkiOptions::default())?;
        let (ota_cert, ota_key) = spark_keys::issue_service(&pki_dir, "spark-ota", true)?;

        let ingest_port = free_port()?;
        let internal_port = free_port()?;
        let device_port = free_port()?;
        let admin_port = free_port()?;

        // Ingest on SQLite; `last_seen` written every second so the rollouts' telemetry gate
        // sees gateways on a compressed clock; the data pipeline runs in-process.
        let ingest_config = dir.join("ingest.toml");
        write(
            &ingest_config,
            &format!(
                r#"listen = "127.0.0.1:{ingest_port}"
internal-listen = "127.0.0.1:{internal_port}"
data-dir = "{data}"
internal-clients = ["spark-ota", "spark-api"]
last-seen-interval-secs = 1
[tls]
cert = "{cert}"
key = "{key}"
device-ca = "{device_ca}"
server-ca = "{server_ca}"
"#,
                data = dir.join("ingest").display(),
                cert = pki.server_cert().display(),
                key = pki.server_key().display(),
                device_ca = pki.device_ca_cert().display(),
                server_ca = pki.server_ca_cert().display(),
            ),
        )?;
        let ingest_spec = Service {
            name: "spark-ingest",
            bin: bins.ingest.clone(),
            args: vec!["--config".into(), ingest_config.clone().into()],
            log: dir.join("ingest.log"),
            level: opts.log.clone(),
            ports: vec![ingest_port, internal_port],
        };
        let ingest = ingest_spec.launch()?;

        let ota_config = dir.join("ota.toml");
        let rollouts = match opts.clock_factor {
            Some(f) => format!("tick-secs = {}\nclock-factor = {f}\n", opts.tick_secs),
            None => format!("tick-secs = {}\n", opts.tick_secs),
        };
        write(
            &ota_config,
            &format!(
                r#"listen = "127.0.0.1:{device_port}"
admin-listen = "127.0.0.1:{admin_port}"
data-dir = "{data}"
keyring = "{keyring}"
release-keys = ["{release}"]
[tls]
cert = "{cert}"
key = "{key}"
device-ca = "{device_ca}"
[push]
ingest-url = "https://127.0.0.1:{internal_port}"
ca = "{server_ca}"
cert = "{ota_cert}"
key = "{ota_key}"
interval-secs = 1
[rollouts]
{rollouts}"#,
                data = dir.join("ota").display(),
                keyring = pki.keyring().display(),
                release = pki.release_pub().display(),
                cert = pki.server_cert().display(),
                key = pki.server_key().display(),
                device_ca = pki.device_ca_cert().display(),
                server_ca = pki.server_ca_cert().display(),
                ota_cert = ota_cert.display(),
                ota_key = ota_key.display(),
            ),
        )?;
        let ota_spec = Service {
            name: "spark-ota",
            bin: bins.ota.clone(),
            args: vec!["serve".into(), "--config".into(), ota_config.clone().into()],
            log: dir.join("ota.log"),
            level: opts.log.clone(),
            ports: vec![device_port, admin_port],
        };
        let ota = ota_spec.launch()?;

        // The token a person would make with `spark-ota token create`.
        let mut cmd = Command::new(&bins.ota);
        cmd.args(["token", "create", "--name", "fleet", "--config"])
            .arg(&ota_config);
        let token = run_stdout(cmd, "spark-ota token create")?;

        let api = if opts.api {
            Some(start_api(bins, opts, &pki, &pki_dir, &dir, internal_port)?)
        } else {
            None
        };

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(FleetError::io("start a runtime for", "the admin client"))?;
        let admin = AdminClient::new(
            &format!("https://127.0.0.1:{admin_port}"),
            &pki.server_ca_cert(),
            Credentials::Token(token.clone()),
        )?;
        Ok(Cloud {
            dir,
            pki,
            ingest,
            ingest_spec,
            ota,
            ota_spec,
            api,
            ota_config,
            ingest_port,
            device_port,
            admin_port,
            token,
            rt,
            admin,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn pki(&self) -> &DevPki {
        &self.pki
    }

    /// What gateways are configured with.
    pub fn link(&self) -> CloudLink {
        CloudLink {
            pki_dir: self.dir.join("pki"),
            ingest: format!("127.0.0.1:{}", self.ingest_port),
            ota: format!("https://127.0.0.1:{}", self.device_port),
            server_ca: self.pki.server_ca_cert(),
            keyring: self.pki.keyring(),
            release_pub: self.pki.release_pub(),
        }
    }

    /// `https://127.0.0.1:PORT` of the admin API and dashboard (`/ui`).
    pub fn admin_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.admin_port)
    }

    /// The admin token (for the CLI's `--token` or the dashboard's sign-in).
    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn ota_config(&self) -> &Path {
        &self.ota_config
    }

    /// ingest's SQLite database (readings, gateways, commands).
    pub fn ingest_db(&self) -> PathBuf {
        self.dir.join("ingest").join("ingest.db")
    }

    /// One value from ingest's SQLite database (read-only, through the `sqlite3` shell), e.g.
    /// `SELECT count(*) FROM readings`.
    pub fn ingest_query(&self, sql: &str) -> Result<String, FleetError> {
        let db = format!("file:{}?mode=ro", self.ingest_db().display());
        let out = Command::new("sqlite3")
            .args([db.as_str(), sql])
            .output()
            .map_err(|source| FleetError::Spawn {
                name: "sqlite3 (apt-get install sqlite3)".into(),
                source,
            })?;
        if !out.status.success() {
            return Err(FleetError::Command {
                command: format!("sqlite3 {db} {sql:?}"),
                detail: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// `kill -9` of spark-ingest, then a start on the same database and ports (a crash and
    /// systemd's restart); returns once it listens again.
    pub fn crash_ingest(&mut self) -> Result<(), FleetError> {
        self.ingest.kill();
        self.ingest = self.ingest_spec.launch()?;
        Ok(())
    }

    /// `kill -9` of spark-ota, then a start on the same database and ports.
    pub fn crash_ota(&mut self) -> Result<(), FleetError> {
        self.ota.kill();
        self.ota = self.ota_spec.launch()?;
        Ok(())
    }

    /// `spark-api`, when it runs.
    pub fn api(&self) -> Option<&ApiService> {
        self.api.as_ref()
    }

    /// An error naming the service and its log if one of them died.
    pub fn check_running(&mut self) -> Result<(), FleetError> {
        self.ingest.check_running("the fleet ran")?;
        self.ota.check_running("the fleet ran")?;
        if let Some(api) = &mut self.api {
            api.daemon.check_running("the fleet ran")?;
        }
        Ok(())
    }

    /// Uploads a release through the admin API (streamed, verified by the server).
    pub fn upload(&self, release: &Release) -> Result<Uploaded, FleetError> {
        let progress = indicatif::ProgressBar::hidden();
        Ok(self.rt.block_on(
            self.admin
                .upload(&release.bundle, &release.manifest, &progress),
        )?)
    }

    /// `PUT /v1/devices/{id}/attributes`: what rollouts target and stratify by.
    pub fn set_device(&self, id: &str, attributes: &serde_json::Value) -> Result<(), FleetError> {
        let _: serde_json::Value = self.rt.block_on(
            self.admin
                .put(&format!("/v1/devices/{id}/attributes"), attributes),
        )?;
        Ok(())
    }

    pub fn create_rollout(&self, req: &CreateRollout) -> Result<RolloutStatus, FleetError> {
        let body = serde_json::to_value(req)
            .map_err(|e| FleetError::Release(format!("rollout request: {e}")))?;
        Ok(self.rt.block_on(self.admin.post("/v1/rollouts", &body))?)
    }

    pub fn rollout(&self, id: &str) -> Result<RolloutStatus, FleetError> {
        Ok(self
            .rt
            .block_on(self.admin.get(&format!("/v1/rollouts/{id}")))?)
    }

    /// `GET /v1/devices`: every device with its version, slot and agent state.
    pub fn devices(&self) -> Result<Vec<serde_json::Value>, FleetError> {
        Ok(self.rt.block_on(self.admin.get("/v1/devices"))?)
    }

    /// Any admin GET, as JSON.
    pub fn get(&self, path: &str) -> Result<serde_json::Value, FleetError> {
        Ok(self.rt.block_on(self.admin.get(path))?)
    }

    /// SIGTERM to the services (ingest last: the others call it).
    pub fn stop(&mut self) {
        if let Some(api) = &mut self.api {
            api.daemon.stop(Duration::from_secs(10));
        }
        self.ota.stop(Duration::from_secs(10));
        self.ingest.stop(Duration::from_secs(10));
    }
}

/// `spark-api` on ingest's database, with its own token database, calling ingest's internal API
/// as `spark-api`; an `ops` client certificate and a token for people to call it with.
fn start_api(
    bins: &Binaries,
    opts: &CloudOptions,
    pki: &DevPki,
    pki_dir: &Path,
    dir: &Path,
    internal_port: u16,
) -> Result<ApiService, FleetError> {
    let (api_cert, api_key) = spark_keys::issue_service(pki_dir, "spark-api", true)?;
    let (cert, key) = spark_keys::issue_service(pki_dir, "ops", true)?;
    let port = free_port()?;
    let config = dir.join("api.toml");
    write(
        &config,
        &format!(
            r#"listen = "127.0.0.1:{port}"
database = "sqlite://{db}"
data-dir = "{data}"
[tls]
cert = "{server_cert}"
key = "{server_key}"
client-ca = "{server_ca}"
[ingest]
url = "https://127.0.0.1:{internal_port}"
cert = "{api_cert}"
key = "{api_key}"
ca = "{server_ca}"
"#,
            db = dir.join("ingest").join("ingest.db").display(),
            data = dir.join("api").display(),
            server_cert = pki.server_cert().display(),
            server_key = pki.server_key().display(),
            server_ca = pki.server_ca_cert().display(),
            api_cert = api_cert.display(),
            api_key = api_key.display(),
        ),
    )?;
    let data = dir.join("api");
    std::fs::create_dir_all(&data).map_err(FleetError::io("create", &data))?;
    let mut cmd = Command::new(&bins.api);
    cmd.arg("--config").arg(&config).args([
        "token", "create", "ops", "--scope", "read", "--scope", "command",
    ]);
    let token = run_stdout(cmd, "spark-api token create")?;
    let mut cmd = Command::new(&bins.api);
    cmd.arg("--config")
        .arg(&config)
        .arg("serve")
        .env("RUST_LOG", &opts.log);
    let mut daemon = Daemon::spawn("spark-api", cmd, &dir.join("api.log"))?;
    wait_for(
        "spark-api to listen",
        START,
        || daemon.check_running("starting"),
        || listening(port).then_some(()),
    )?;
    Ok(ApiService {
        daemon,
        url: format!("https://127.0.0.1:{port}"),
        token,
        cert,
        key,
    })
}

/// Runs a command to completion and returns its stdout, trimmed; failure carries its stderr.
fn run_stdout(mut cmd: Command, what: &str) -> Result<String, FleetError> {
    let out = cmd.output().map_err(|source| FleetError::Spawn {
        name: what.into(),
        source,
    })?;
    if !out.status.success() {
        return Err(FleetError::Command {
            command: what.into(),
            detail: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

pub(crate) fn write(path: &Path, text: &str) -> Result<(), FleetError> {
    std::fs::write(path, text).map_err(FleetError::io("write", path))
}
