//! A tiny `io.spark.Meters1` for unit-level link tests (no radio, no simulator): it keeps
//! readings in memory and follows the cursor protocol of `spark_dbus::Meters1Proxy`. The
//! end-to-end tests use the real spark-meterd instead.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use spark_dbus::MeterReading;
use zbus::object_server::SignalEmitter;

#[derive(Debug, Default)]
struct State {
    meters: Vec<String>,
    buffer: VecDeque<MeterReading>,
    next_position: u64,
    interval: u64,
    wh: Vec<u64>,
    generated: Vec<(String, u64, u64)>,
    fetches: u64,
}

struct Iface {
    state: Arc<Mutex<State>>,
}

#[zbus::interface(name = "io.spark.Meters1")]
impl Iface {
    async fn fetch(&self, cursor: u64, max: u32) -> Vec<MeterReading> {
        let mut s = self.state.lock().unwrap();
        s.fetches += 1;
        while s.buffer.front().is_some_and(|r| r.position <= cursor) {
            s.buffer.pop_front();
        }
        let max = max.min(spark_dbus::METERS1_FETCH_MAX) as usize;
        s.buffer.iter().take(max).cloned().collect()
    }

    #[zbus(signal)]
    async fn readings_available(emitter: &SignalEmitter<'_>, position: u64) -> zbus::Result<()>;

    #[zbus(property)]
    fn meters(&self) -> Vec<String> {
        self.state.lock().unwrap().meters.clone()
    }

    #[zbus(property)]
    fn head(&self) -> u64 {
        self.state.lock().unwrap().next_position
    }

    #[zbus(property)]
    fn buffered(&self) -> u64 {
        self.state.lock().unwrap().buffer.len() as u64
    }

    #[zbus(property)]
    fn radio_online(&self) -> bool {
        true
    }
}

/// The fake meter daemon.
pub struct FakeMeters {
    state: Arc<Mutex<State>>,
    conn: zbus::Connection,
}

/// First scheduled reading: 2026-01-05 00:00 UTC.
pub const START: u64 = 1_767_571_200;

impl FakeMeters {
    pub async fn start(bus: &str, meters: usize) -> FakeMeters {
        let state = Arc::new(Mutex::new(State {
            meters: (0..meters).map(|i| format!("FAKE-{i:05}")).collect(),
            wh: (0..meters as u64).map(|i| 1_000_000 + i * 7).collect(),
            ..State::default()
        }));
        let conn = zbus::connection::Builder::address(bus)
            .unwrap()
            .name(spark_dbus::METERS1_NAME)
            .unwrap()
            .serve_at(
                spark_dbus::METERS1_PATH,
                Iface {
                    state: state.clone(),
                },
            )
            .unwrap()
            .build()
            .await
            .unwrap();
        FakeMeters { state, conn }
    }

    /// One scheduled interval: every meter reads (a few seconds late now and then), and
    /// `ReadingsAvailable` goes out.
    pub async fn interval(&self) {
        let head = {
            let mut s = self.state.lock().unwrap();
            let i = s.interval;
            s.interval += 1;
            let n = s.meters.len();
            for m in 0..n {
                // Every seventh reading is a few seconds late.
                let late = if (m as u64 + i).is_multiple_of(7) {
                    3
                } else {
                    0
                };
                let ts = START + i * 900 + late;
                s.wh[m] += 50 + ((m as u64 * 31 + i * 17) % 400);
                let wh = s.wh[m];
                s.next_position += 1;
                let position = s.next_position;
                let meter_id = s.meters[m].clone();
                s.generated.push((meter_id.clone(), ts, wh));
                s.buffer.push_back(MeterReading {
                    position,
                    meter_id,
                    timestamp: ts,
                    wh,
                });
            }
            s.next_position
        };
        let emitter = SignalEmitter::new(&self.conn, spark_dbus::METERS1_PATH).unwrap();
        Iface::readings_available(&emitter, head).await.unwrap();
    }

    pub fn generated(&self) -> Vec<(String, u64, u64)> {
        self.state.lock().unwrap().generated.clone()
    }

    /// Readings not yet released by the reader's cursor.
    pub fn buffered(&self) -> usize {
        self.state.lock().unwrap().buffer.len()
    }

    pub fn fetches(&self) -> u64 {
        self.state.lock().unwrap().fetches
    }
}
