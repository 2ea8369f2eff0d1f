//! Shared test helpers: a database with ingest's real schema (migrated by spark-ingest itself),
//! a feeder that stores messages the way ingest does (a `received` row, its readings rows with
//! `seq`, `gateways.last_committed_seq`), a seeded data set with resets, rollovers, gaps and late
//! readings, and an independent reference computation of the aggregates.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::str::FromStr;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::Connection;

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "spark_pipeline=info".into()),
        )
        .with_test_writer()
        .try_init();
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

pub fn pg_base() -> String {
    std::env::var("SPARK_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A database with ingest's schema: a SQLite file in a tempdir or a PostgreSQL schema of its own
/// (dropped on drop).
pub struct TestDb {
    pub url: String,
    pub kind: Kind,
    _dir: Option<tempfile::TempDir>,
    schema: Option<String>,
}

impl TestDb {
    pub async fn new(kind: Kind) -> TestDb {
        let db = match kind {
            Kind::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!(
                    "sqlite://{}?mode=rwc",
                    dir.path().join("ingest.db").display()
                );
                TestDb {
                    url,
                    kind,
                    _dir: Some(dir),
                    schema: None,
                }
            }
            Kind::Postgres => {
                let schema = format!("pipe_{}_{}", std::process::id(), rand::random::<u32>());
                let mut admin = sqlx::PgConnection::connect(&pg_base()).await.unwrap();
                sqlx::query(&format!("CREATE SCHEMA {schema}"))
                    .execute(&mut admin)
                    .await
                    .unwrap();
                let sep = if pg_base().contains('?') { '&' } else { '?' };
                TestDb {
                    url: format!("{}{sep}options[search_path]={schema}", pg_base()),
                    kind,
                    _dir: None,
                    schema: Some(schema),
                }
            }
        };
        // Ingest's own migrations, applied by ingest's own code.
        let ingest = spark_ingest::Store::connect(&db.url).await.unwrap();
        ingest.close().await;
        db
    }

    pub async fn pipeline(&self) -> spark_pipeline::Store {
        spark_pipeline::Store::connect(&self.url, 8).await.unwrap()
    }

    pub async fn feeder(&self) -> Feeder {
        Feeder::connect(&self.url, self.kind).await
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(schema) = self.schema.take() {
            let base = pg_base();
            // Drop from a thread of its own: Drop may run inside a runtime.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    if let Ok(mut c) = sqlx::PgConnection::connect(&base).await {
                        let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                            .execute(&mut c)
                            .await;
                    }
                });
            })
            .join();
        }
    }
}

/// One reading: (meter, ts, wh).
pub type R = (String, i64, i64);

/// Stores messages as ingest does, through a connection of its own.
pub enum Feeder {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl Feeder {
    pub async fn connect(url: &str, kind: Kind) -> Feeder {
        match kind {
            Kind::Sqlite => {
                let opts = sqlx::sqlite::SqliteConnectOptions::from_str(url)
                    .unwrap()
                    .busy_timeout(std::time::Duration::from_secs(60));
                Feeder::Sqlite(sqlx::SqliteConnection::connect_with(&opts).await.unwrap())
            }
            Kind::Postgres => Feeder::Postgres(sqlx::PgConnection::connect(url).await.unwrap()),
        }
    }

    /// Sets a gateway's `last_seen` (unix seconds), creating the gateway if needed.
    pub async fn last_seen(&mut self, gateway: &str, at: i64) {
        match self {
            Feeder::Sqlite(c) => {
                sqlx::query(
                    "INSERT INTO gateways (gateway, first_seen, last_seen) VALUES ($1, $2, $2) \
                     ON CONFLICT (gateway) DO UPDATE SET last_seen = excluded.last_seen",
                )
                .bind(gateway)
                .bind(at)
                .execute(c)
                .await
                .unwrap();
            }
            Feeder::Postgres(c) => {
                sqlx::query(
                    "INSERT INTO gateways (gateway, first_seen, last_seen) VALUES ($1, to_timestamp($2), to_timestamp($2)) \
                     ON CONFLICT (gateway) DO UPDATE SET last_seen = excluded.last_seen",
                )
                .bind(gateway)
                .bind(at)
                .execute(c)
                .await
                .unwrap();
            }
        }
    }

    /// Commits one readings message `seq` of `gateway` (one transaction, like ingest).
    pub async fn message(&mut self, gateway: &str, seq: i64, readings: &[R]) {
        let now = chrono_now();
        match self {
            Feeder::Sqlite(c) => {
                let mut tx = c.begin().await.unwrap();
                sqlx::query(
                    "INSERT INTO gateways (gateway, first_seen, last_seen) VALUES ($1, $2, $2) \
                     ON CONFLICT (gateway) DO NOTHING",
                )
                .bind(gateway)
                .bind(now)
                .execute(&mut *tx)
                .await
                .unwrap();
                sqlx::query(
                    "INSERT INTO received (gateway, seq, kind, items, received_at) VALUES ($1, $2, 'readings', $3, $4)",
                )
                .bind(gateway)
                .bind(seq)
                .bind(readings.len() as i64)
                .bind(now)
                .execute(&mut *tx)
                .await
                .unwrap();
                for chunk in readings.chunks(500) {
                    let mut qb = sqlx::QueryBuilder::new(
                        "INSERT INTO readings (gateway, meter_id, ts, wh, seq) ",
                    );
                    qb.push_values(chunk, |mut b, (m, ts, wh)| {
                        b.push_bind(gateway)
                            .push_bind(m)
                            .push_bind(ts)
                            .push_bind(wh)
                            .push_bind(seq);
                    });
                    qb.build().execute(&mut *tx).await.unwrap();
                }
                sqlx::query(
                    "UPDATE gateways SET last_committed_seq = MAX(last_committed_seq, $1), last_seen = $2 WHERE gateway = $3",
                )
                .bind(seq)
                .bind(now)
                .bind(gateway)
                .execute(&mut *tx)
                .await
                .unwrap();
                tx.commit().await.unwrap();
            }
            Feeder::Postgres(c) => {
                let mut tx = c.begin().await.unwrap();
                sqlx::query(
                    "INSERT INTO gateways (gateway, first_seen, last_seen) VALUES ($1, to_timestamp($2), to_timestamp($2)) \
                     ON CONFLICT (gateway) DO NOTHING",
                )
                .bind(gateway)
                .bind(now)
                .execute(&mut *tx)
                .await
                .unwrap();
                sqlx::query(
                    "INSERT INTO received (gateway, seq, kind, items, received_at) VALUES ($1, $2, 'readings', $3, to_timestamp($4))",
                )
                .bind(gateway)
                .bind(seq)
                .bind(readings.len() as i32)
                .bind(now)
                .execute(&mut *tx)
                .await
                .unwrap();
                let meters: Vec<&str> = readings.iter().map(|r| r.0.as_str()).collect();
                let ts: Vec<i64> = readings.iter().map(|r| r.1).collect();
                let wh: Vec<i64> = readings.iter().map(|r| r.2).collect();
                sqlx::query(
                    "INSERT INTO readings (gateway, meter_id, ts, wh, seq) \
                     SELECT $1, m, to_timestamp(t), w, $5 FROM UNNEST($2::text[], $3::bigint[], $4::bigint[]) AS u(m, t, w)",
                )
                .bind(gateway)
                .bind(&meters)
                .bind(&ts)
                .bind(&wh)
                .bind(seq)
                .execute(&mut *tx)
                .await
                .unwrap();
                sqlx::query(
                    "UPDATE gateways SET last_committed_seq = GREATEST(last_committed_seq, $1), last_seen = to_timestamp($2) WHERE gateway = $3",
                )
                .bind(seq)
                .bind(now)
                .bind(gateway)
                .execute(&mut *tx)
                .await
                .unwrap();
                tx.commit().await.unwrap();
            }
        }
    }
}

pub fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// 2026-01-05T00:00:00Z.
pub const T0: i64 = 1_767_571_200;

/// A seeded data set: per gateway, the messages in sequence order.
pub struct DataSet {
    pub gateways: Vec<(String, Vec<Vec<R>>)>,
}

impl DataSet {
    /// About `readings` readings over `gateways` gateways of `meters` meters read every 15
    /// minutes, with missed reads (gaps of a few hours too), register resets, 7-digit rollovers,
    /// a meter that stops using energy, and readings held back and delivered several messages
    /// later (late data).
    pub fn generate(seed: u64, readings: usize, gateways: usize, meters: usize) -> DataSet {
        let mut rng = StdRng::seed_from_u64(seed);
        let intervals = readings.div_ceil(gateways * meters).max(2);
        let mut out = Vec::new();
        for g in 0..gateways {
            let name = format!("GW-{g:04}");
            let mut registers: Vec<i64> = (0..meters)
                .map(|m| {
                    if m % 17 == 3 {
                        9_990_000 + rng.gen_range(0..5000) // rolls over its 7 digits soon
                    } else {
                        rng.gen_range(0..8_000_000)
                    }
                })
                .collect();
            let mut silent_until = vec![0usize; meters];
            let mut held: Vec<(usize, R)> = Vec::new();
            let mut messages = Vec::with_capacity(intervals);
            for i in 0..intervals {
                let t = T0 + i as i64 * 900;
                let mut msg = Vec::with_capacity(meters);
                for (m, reg) in registers.iter_mut().enumerate() {
                    let used = if m % 23 == 5 {
                        0
                    } else {
                        rng.gen_range(0..400)
                    };
                    *reg += used;
                    if m % 17 == 3 {
                        *reg %= 10_000_000;
                    }
                    if rng.gen_bool(0.0008) {
                        *reg = rng.gen_range(0..50); // meter swap / firmware reset
                    }
                    if silent_until[m] > i {
                        continue;
                    }
                    if rng.gen_bool(0.001) {
                        silent_until[m] = i + rng.gen_range(4..24); // a gap of 1 to 6 hours
                        continue;
                    }
                    if rng.gen_bool(0.01) {
                        continue; // a missed read
                    }
                    let late = rng.gen_range(0..13u64) as i64; // seconds off schedule
                    let r = (format!("MTR-{g:04}-{m:05}"), t + late, *reg);
                    if rng.gen_bool(0.005) {
                        held.push((i + rng.gen_range(2..12), r));
                    } else {
                        msg.push(r);
                    }
                }
                held.retain(|(due, r)| {
                    if *due <= i {
                        msg.push(r.clone());
                        false
                    } else {
                        true
                    }
                });
                messages.push(msg);
            }
            // What is still held arrives with the last message.
            if let Some(last) = messages.last_mut() {
                last.extend(held.drain(..).map(|(_, r)| r));
            }
            out.push((name, messages));
        }
        DataSet { gateways: out }
    }

    pub fn readings(&self) -> usize {
        self.gateways
            .iter()
            .map(|(_, m)| m.iter().map(Vec::len).sum::<usize>())
            .sum()
    }

    /// Stores every message, in order per gateway.
    pub async fn store_all(&self, feeder: &mut Feeder) {
        for (g, messages) in &self.gateways {
            for (i, m) in messages.iter().enumerate() {
                feeder.message(g, i as i64 + 1, m).await;
            }
        }
    }
}

/// (gateway, meter, period start) → Wh.
pub type Sums = BTreeMap<(String, String, i64), i64>;

/// The aggregates computed offline from the raw rows, written without the pipeline's code:
/// each meter's readings sorted by (time, register); for each consecutive pair the consumption
/// (delta, 7-or-more-digit rollover, reset, or 0 for an unexplained drop, as the README states),
/// spread over hours by walking the cumulative share at every hour boundary.
pub fn reference(
    rows: &[(String, String, i64, i64)],
    max_power_w: i64,
    max_gap: i64,
) -> (Sums, Sums) {
    let mut series: BTreeMap<(String, String), Vec<(i64, i64)>> = BTreeMap::new();
    for (g, m, ts, wh) in rows {
        series
            .entry((g.clone(), m.clone()))
            .or_default()
            .push((*ts, *wh));
    }
    let mut hourly = Sums::new();
    for ((g, m), mut s) in series {
        s.sort();
        for w in s.windows(2) {
            let ((t0, a), (t1, b)) = (w[0], w[1]);
            let consumed = if b >= a {
                b - a
            } else {
                let plausible = max_power_w * std::cmp::max(t1 - t0, 900) / 3600;
                let digits = a.to_string().len() as u32;
                let top = 10i64.pow(digits);
                if a >= top / 10 * 9 && top - a + b <= plausible {
                    top - a + b
                } else if b <= plausible {
                    b
                } else {
                    0
                }
            };
            if consumed == 0 {
                continue;
            }
            if t1 == t0 || t1 - t0 > max_gap {
                *hourly
                    .entry((g.clone(), m.clone(), (t1 - 1).div_euclid(3600) * 3600))
                    .or_default() += consumed;
                continue;
            }
            // Cumulative share up to each hour boundary inside (t0, t1), then t1.
            let mut prev_cum = 0i64;
            let mut hour = t0.div_euclid(3600) * 3600;
            loop {
                let boundary = (hour + 3600).min(t1);
                let cum = ((consumed as i128 * (boundary - t0) as i128) / (t1 - t0) as i128) as i64;
                if cum != prev_cum {
                    *hourly.entry((g.clone(), m.clone(), hour)).or_default() += cum - prev_cum;
                }
                prev_cum = cum;
                if boundary == t1 {
                    break;
                }
                hour += 3600;
            }
        }
    }
    let mut daily = Sums::new();
    for ((g, m, h), wh) in &hourly {
        *daily
            .entry((g.clone(), m.clone(), h.div_euclid(86_400) * 86_400))
            .or_default() += wh;
    }
    hourly.retain(|_, v| *v != 0);
    daily.retain(|_, v| *v != 0);
    (hourly, daily)
}

/// The raw rows of a data set as (gateway, meter, ts, wh).
pub fn raw_rows(data: &DataSet) -> Vec<(String, String, i64, i64)> {
    let mut out = Vec::with_capacity(data.readings());
    for (g, messages) in &data.gateways {
        for m in messages {
            for (meter, ts, wh) in m {
                out.push((g.clone(), meter.clone(), *ts, *wh));
            }
        }
    }
    out
}

pub fn as_sums(rows: Vec<(String, String, i64, i64)>) -> Sums {
    rows.into_iter()
        .map(|(g, m, t, wh)| ((g, m, t), wh))
        .collect()
}

/// Asserts two aggregate maps are equal, showing the first differences.
pub fn assert_sums_eq(got: &Sums, want: &Sums, what: &str) {
    if got != want {
        let mut diffs = Vec::new();
        for (k, v) in want {
            if got.get(k) != Some(v) {
                diffs.push(format!("{k:?}: got {:?}, want {v}", got.get(k)));
            }
        }
        for (k, v) in got {
            if !want.contains_key(k) {
                diffs.push(format!("{k:?}: got {v}, want nothing"));
            }
        }
        diffs.truncate(10);
        panic!(
            "{what}: {} rows vs {} expected; first differences:\n{}",
            got.len(),
            want.len(),
            diffs.join("\n")
        );
    }
}
