//! A test `io.spark.Update1`: the real interface (names and members as `spark-dbus` defines them,
//! the properties the agent serves, `PropertiesChanged` on every change) on the test's bus, with
//! its values set by the test. The real agent (`spark-updated`) needs an OTA server, a release
//! key and a download to move through its states; what the web UI reads is only these
//! properties, so a test object that can be put into any state is the better test of the page.

use zbus::object_server::InterfaceRef;

/// The agent's published properties.
#[derive(Debug, Clone)]
pub struct AgentState {
    pub state: String,
    pub progress: u32,
    pub current_version: String,
    pub pending_version: String,
    pub last_error: String,
}

impl Default for AgentState {
    fn default() -> Self {
        Self {
            state: "idle".into(),
            progress: 0,
            current_version: "2026.11.0".into(),
            pending_version: String::new(),
            last_error: String::new(),
        }
    }
}

struct Update1Iface {
    s: AgentState,
}

#[zbus::interface(name = "io.spark.Update1")]
impl Update1Iface {
    async fn check_now(&self) {}

    async fn reboot(&self, _delay_secs: u32) {}

    async fn update_available(&self, _signed_release: Vec<u8>) {}

    #[zbus(property)]
    fn state(&self) -> String {
        self.s.state.clone()
    }
    #[zbus(property)]
    fn progress(&self) -> u32 {
        self.s.progress
    }
    #[zbus(property)]
    fn current_version(&self) -> String {
        self.s.current_version.clone()
    }
    #[zbus(property)]
    fn pending_version(&self) -> String {
        self.s.pending_version.clone()
    }
    #[zbus(property)]
    fn last_error(&self) -> String {
        self.s.last_error.clone()
    }
}

/// The test agent on the bus; dropping it leaves the bus (the name goes away).
pub struct TestUpdate1 {
    iface: InterfaceRef<Update1Iface>,
    _conn: zbus::Connection,
}

impl TestUpdate1 {
    pub async fn start(bus: &str, state: AgentState) -> TestUpdate1 {
        let conn = zbus::connection::Builder::address(bus)
            .unwrap()
            .serve_at(spark_dbus::UPDATE1_PATH, Update1Iface { s: state })
            .unwrap()
            .name(spark_dbus::UPDATE1_NAME)
            .unwrap()
            .build()
            .await
            .unwrap();
        let iface = conn
            .object_server()
            .interface::<_, Update1Iface>(spark_dbus::UPDATE1_PATH)
            .await
            .unwrap();
        TestUpdate1 { iface, _conn: conn }
    }

    /// Changes the properties and emits `PropertiesChanged` for each, as the agent does.
    pub async fn set(&self, change: impl FnOnce(&mut AgentState)) {
        let emitter = self.iface.signal_emitter();
        let mut object = self.iface.get_mut().await;
        change(&mut object.s);
        object.state_changed(emitter).await.unwrap();
        object.progress_changed(emitter).await.unwrap();
        object.pending_version_changed(emitter).await.unwrap();
        object.last_error_changed(emitter).await.unwrap();
    }
}
