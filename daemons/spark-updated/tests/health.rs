//! The health rule "uplink connected within N seconds" against a real `io.spark.Uplink1` object
//! (a small zbus object in the test, standing in for spark-uplinkd) on a private dbus-daemon.

use std::time::Duration;

use spark_dbus::{UPLINK1_NAME, UPLINK1_PATH};
use spark_testbed::PrivateBus;
use spark_updated::HealthConfig;
use spark_updated::system::{ConfiguredHealth, HealthCheck, uplink_connected};
use tokio::time::Instant;

/// The part of `io.spark.Uplink1` the agent reads.
struct Uplink {
    connected: bool,
}

#[zbus::interface(name = "io.spark.Uplink1")]
impl Uplink {
    #[zbus(property)]
    fn connected(&self) -> bool {
        self.connected
    }
}

async fn connect(bus: &PrivateBus) -> zbus::Connection {
    tokio::time::timeout(Duration::from_secs(10), async {
        zbus::connection::Builder::address(bus.address())
            .unwrap()
            .build()
            .await
            .unwrap()
    })
    .await
    .expect("bus connection within 10 s")
}

/// Serves `Uplink { connected }` under uplinkd's name on its own connection.
async fn serve_uplink(bus: &PrivateBus, connected: bool) -> zbus::Connection {
    let conn = connect(bus).await;
    conn.object_server()
        .at(UPLINK1_PATH, Uplink { connected })
        .await
        .unwrap();
    conn.request_name(UPLINK1_NAME).await.unwrap();
    conn
}

/// Flips `Connected` to true and emits `PropertiesChanged`, as uplinkd does after its handshake.
async fn set_connected(conn: &zbus::Connection) {
    let iface = conn
        .object_server()
        .interface::<_, Uplink>(UPLINK1_PATH)
        .await
        .unwrap();
    iface.get_mut().await.connected = true;
    iface
        .get()
        .await
        .connected_changed(iface.signal_emitter())
        .await
        .unwrap();
}

#[tokio::test]
async fn uplink_that_connects_later_passes_as_soon_as_it_says_so() {
    let bus = PrivateBus::start().unwrap();
    let agent = connect(&bus).await;
    let uplink = serve_uplink(&bus, false).await;
    let started = Instant::now();
    let flip = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        set_connected(&uplink).await;
    };
    let (result, ()) = tokio::join!(
        uplink_connected(&agent, started + Duration::from_secs(20)),
        flip
    );
    result.unwrap();
    // Woken by PropertiesChanged (flip at 300 ms), not by the once-a-second re-read.
    let took = started.elapsed();
    eprintln!("passed {took:?} after the start, 300 ms after the flip");
    assert!(took < Duration::from_millis(950), "{took:?}");
}

#[tokio::test]
async fn uplink_that_stays_disconnected_fails_at_the_bound() {
    let bus = PrivateBus::start().unwrap();
    let agent = connect(&bus).await;
    let _uplink = serve_uplink(&bus, false).await;
    let started = Instant::now();
    let err = uplink_connected(&agent, started + Duration::from_millis(1500))
        .await
        .unwrap_err();
    assert!(err.contains("stayed false"), "{err}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[tokio::test]
async fn missing_uplinkd_fails_and_a_late_one_passes() {
    let bus = PrivateBus::start().unwrap();
    let agent = connect(&bus).await;
    let started = Instant::now();
    let err = uplink_connected(&agent, started + Duration::from_millis(1200))
        .await
        .unwrap_err();
    assert!(err.contains("spark-uplinkd"), "{err}");

    // uplinkd starts (already connected) while the rule waits.
    let started = Instant::now();
    let late = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        serve_uplink(&bus, true).await
    };
    let (result, _uplink) = tokio::join!(
        uplink_connected(&agent, started + Duration::from_secs(20)),
        late
    );
    result.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn configured_health_applies_the_uplink_rule_after_units_and_commands() {
    let bus = PrivateBus::start().unwrap();
    let agent = connect(&bus).await;
    let uplink = serve_uplink(&bus, false).await;
    let health = |within| ConfiguredHealth {
        config: HealthConfig {
            required_units: Vec::new(),
            commands: vec![vec!["true".into()]],
            timeout_secs: 0,
            uplink_connected_within_secs: Some(within),
        },
        bus: Some(agent.clone()),
    };
    let err = health(1).check().await.unwrap_err();
    assert!(err.contains("uplink not connected"), "{err}");
    set_connected(&uplink).await;
    health(1).check().await.unwrap();
    // A failing command fails the check before the uplink is asked.
    let mut failing = health(1);
    failing.config.commands = vec![vec!["false".into()]];
    assert!(failing.check().await.unwrap_err().contains("false"));
    // Configured but no bus: a clear failure, not a pass.
    let mut no_bus = health(1);
    no_bus.bus = None;
    assert!(no_bus.check().await.unwrap_err().contains("system bus"));
}
