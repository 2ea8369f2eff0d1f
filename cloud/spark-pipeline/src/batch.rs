//! One batch of one gateway: read the messages after its cursor, turn their readings into
//! consumption and events, and write all of it with the cursor in one transaction.
//!
//! Messages (ingest's `received` rows, one per readings batch or event a gateway sent) are the
//! unit of order: they are applied in sequence order, and everything that depends on order
//! (meter state, zero-usage runs, outages) is evaluated per message, so the result does not
//! depend on where batches start and end, nor on crashes between them.
//!
//! Within a message, a meter's readings newer than its last consumed reading extend its series
//! (the fast path). Older ones are **late**: the stretch of the series around them is read back
//! from `readings` (rows of earlier messages), its old intervals are taken out of the hourly and
//! daily sums and the intervals with the late readings put in. Consumption therefore always
//! equals what the meter's whole series, sorted by time, gives ([`crate::consumption`]); late
//! readings raise no meter events of their own.

use std::collections::HashMap;

use serde_json::json;

use crate::config::PipelineConfig;
use crate::consumption::{Step, apportion, day_of, delta};
use crate::error::StoreError;
use crate::store::{BatchWrite, CursorRow, EventRow, MeterRow, RawReading, Store};

/// Most messages one batch reads from `received` at a time.
const MAX_MESSAGES: i64 = 10_000;

/// What one batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Messages consumed (0: nothing pending, or another node took the batch).
    pub messages: usize,
    pub readings: u64,
    /// Late readings that re-apportioned part of a series.
    pub late: u64,
    /// Cursor after the batch.
    pub seq: i64,
    /// The cursor had moved under us (another node); nothing written.
    pub lost_race: bool,
}

/// An event referred to before it has an id: stored already, or new in this batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventRef {
    Stored(i64),
    New(usize),
}

#[derive(Debug, Clone)]
struct Meter {
    id: String,
    /// The last reading consumed (in (ts, wh) order); None: no reading yet.
    last: Option<(i64, i64)>,
    zero_since: Option<i64>,
    zero_event: Option<EventRef>,
    dirty: bool,
}

struct Outage {
    event: EventRef,
    start: i64,
    meters: i64,
}

/// The state of one gateway while a batch runs, and what the batch has to write.
struct Work<'a> {
    config: &'a PipelineConfig,
    gateway: &'a str,
    meters: Vec<Meter>,
    index: HashMap<String, usize>,
    clock: i64,
    outage: Option<Outage>,
    hourly: HashMap<(usize, i64), i64>,
    new_events: Vec<EventRow>,
    closed: Vec<(i64, i64)>,
    late: u64,
}

impl Work<'_> {
    fn meter(&mut self, id: &str) -> usize {
        if let Some(&i) = self.index.get(id) {
            return i;
        }
        let i = self.meters.len();
        self.meters.push(Meter {
            id: id.to_owned(),
            last: None,
            zero_since: None,
            zero_event: None,
            dirty: true,
        });
        self.index.insert(id.to_owned(), i);
        i
    }

    fn add_interval(&mut self, meter: usize, t0: i64, t1: i64, d: i64, sign: i64) {
        let hourly = &mut self.hourly;
        apportion(t0, t1, d, &self.config.consumption, |h, wh| {
            *hourly.entry((meter, h)).or_insert(0) += sign * wh;
        });
    }

    fn event(
        &mut self,
        meter: Option<usize>,
        kind: &'static str,
        start: i64,
        end: Option<i64>,
        data: serde_json::Value,
    ) -> EventRef {
        self.new_events.push(EventRow {
            meter_id: meter.map(|m| self.meters[m].id.clone()),
            kind,
            start,
            end,
            data,
        });
        EventRef::New(self.new_events.len() - 1)
    }

    fn close(&mut self, event: EventRef, end: i64) {
        match event {
            EventRef::Stored(id) => self.closed.push((id, end)),
            EventRef::New(i) => self.new_events[i].end = Some(end),
        }
    }

    /// Extends a meter's series by one newer reading.
    fn step(&mut self, m: usize, ts: i64, wh: i64) {
        let meter = &mut self.meters[m];
        meter.dirty = true;
        let Some((t0, w0)) = meter.last.replace((ts, wh)) else {
            return;
        };
        let (d, step) = delta(t0, w0, ts, wh, &self.config.consumption);
        self.add_interval(m, t0, ts, d, 1);
        let kind = match step {
            Step::Normal => None,
            Step::Reset => Some("meter_reset"),
            Step::Rollover => Some("meter_rollover"),
            Step::Back => Some("meter_negative_delta"),
        };
        if let Some(kind) = kind {
            self.event(
                Some(m),
                kind,
                ts,
                Some(ts),
                json!({ "previous_wh": w0, "wh": wh, "previous_ts": t0, "counted_wh": d }),
            );
        }
        let zero_usage = self.config.events.zero_usage_secs;
        let meter = &mut self.meters[m];
        if step == Step::Normal && d == 0 {
            let since = *meter.zero_since.get_or_insert(t0);
            if meter.zero_event.is_none() && ts - since >= zero_usage {
                let e = self.event(
                    Some(m),
                    "meter_zero_usage",
                    since,
                    None,
                    json!({ "wh": wh }),
                );
                self.meters[m].zero_event = Some(e);
            }
        } else {
            meter.zero_since = None;
            if let Some(e) = meter.zero_event.take() {
                self.close(e, ts);
            }
        }
    }

    /// Outages: are many of the gateway's meters silent at once at the gateway's clock?
    fn check_outage(&mut self) {
        let rules = &self.config.events;
        let t = self.clock;
        if let Some(o) = &self.outage {
            // Open: it ends when at least half of the meters it took are heard again.
            let still = self
                .meters
                .iter()
                .filter_map(|m| m.last)
                .filter(|&(ts, _)| ts <= o.start && ts > o.start - rules.outage_spread_secs)
                .count() as i64;
            if still * 2 <= o.meters {
                let event = o.event;
                self.outage = None;
                self.close(event, t);
            }
            return;
        }
        let mut silent = Vec::new();
        let mut active = 0usize;
        for m in &self.meters {
            let Some((ts, _)) = m.last else { continue };
            if ts > t - rules.meter_forget_secs {
                active += 1;
                if ts <= t - rules.meter_silent_secs {
                    silent.push(ts);
                }
            }
        }
        let need = (rules.outage_min_meters as usize)
            .max((rules.outage_fraction * active as f64).ceil() as usize);
        if silent.len() < need.max(1) {
            return;
        }
        silent.sort_unstable();
        // The largest group of silent meters whose last readings lie within the spread.
        let (mut best, mut best_end, mut lo) = (0, 0, 0);
        for hi in 0..silent.len() {
            while silent[hi] - silent[lo] > rules.outage_spread_secs {
                lo += 1;
            }
            if hi - lo + 1 >= best {
                best = hi - lo + 1;
                best_end = silent[hi];
            }
        }
        if best >= need {
            let event = self.event(
                None,
                "outage",
                best_end,
                None,
                json!({ "meters": best, "active_meters": active, "detected_at_gateway_time": t }),
            );
            self.outage = Some(Outage {
                event,
                start: best_end,
                meters: best as i64,
            });
        }
    }
}

/// Reads, computes and commits the next batch of `gateway`.
pub async fn run_batch(
    store: &Store,
    gateway: &str,
    config: &PipelineConfig,
    now: i64,
) -> Result<BatchOutcome, StoreError> {
    let cursor = store.cursor(gateway, now).await?;
    let messages = store
        .next_messages(gateway, cursor.seq, config.batch_readings, MAX_MESSAGES)
        .await?;
    let Some(last) = messages.last() else {
        return Ok(BatchOutcome {
            seq: cursor.seq,
            ..BatchOutcome::default()
        });
    };
    let to = last.seq;
    let mut rows = store.readings(gateway, cursor.seq, to).await?;
    let expected: i64 = messages
        .iter()
        .filter(|m| m.readings)
        .map(|m| m.items)
        .sum();
    if rows.len() as i64 != expected {
        // Rows stored before ingest numbered them (seq 0) are not consumed; anything else
        // would be a bug in ingest. Either way, consume what is there and say so.
        tracing::warn!(
            gateway,
            from = cursor.seq,
            to,
            expected,
            found = rows.len(),
            "readings rows differ from the counts in `received`"
        );
    }
    let stored = store.meters(gateway).await?;

    let mut work = Work {
        config,
        gateway,
        meters: Vec::with_capacity(stored.len() + 64),
        index: HashMap::with_capacity(stored.len() + 64),
        clock: cursor.clock,
        outage: cursor.outage_event.map(|id| Outage {
            event: EventRef::Stored(id),
            start: cursor.outage_start.unwrap_or(0),
            meters: cursor.outage_meters.unwrap_or(0),
        }),
        hourly: HashMap::new(),
        new_events: Vec::new(),
        closed: Vec::new(),
        late: 0,
    };
    for m in stored {
        work.index.insert(m.meter_id.clone(), work.meters.len());
        work.meters.push(Meter {
            id: m.meter_id,
            last: Some((m.last_ts, m.last_wh)),
            zero_since: m.zero_since,
            zero_event: m.zero_event.map(EventRef::Stored),
            dirty: false,
        });
    }

    // Message order, then meter, then time: each message's meter runs in time order.
    rows.sort_unstable_by(|a, b| {
        (a.seq, &a.meter_id, a.ts, a.wh).cmp(&(b.seq, &b.meter_id, b.ts, b.wh))
    });
    let mut i = 0;
    while i < rows.len() {
        let seq = rows[i].seq;
        let end = i + rows[i..].partition_point(|r| r.seq == seq);
        let mut j = i;
        while j < end {
            let meter_end = j + rows[j..end].partition_point(|r| r.meter_id == rows[j].meter_id);
            apply_meter(store, &mut work, &rows[j..meter_end], seq).await?;
            j = meter_end;
        }
        let newest = rows[i..end]
            .iter()
            .map(|r| r.ts)
            .max()
            .unwrap_or(work.clock);
        if newest > work.clock {
            work.clock = newest;
            work.check_outage();
        }
        i = end;
    }

    let readings = rows.len() as u64;
    let late = work.late;
    let write = finish(work, &cursor, to, readings);
    if !store.commit(gateway, write, now).await? {
        tracing::info!(
            gateway,
            from = cursor.seq,
            "cursor moved under this batch (another pipeline node?); nothing written"
        );
        return Ok(BatchOutcome {
            seq: cursor.seq,
            lost_race: true,
            ..BatchOutcome::default()
        });
    }
    Ok(BatchOutcome {
        messages: messages.len(),
        readings,
        late,
        seq: to,
        lost_race: false,
    })
}

/// Applies one meter's readings of one message (sorted by (ts, wh)).
async fn apply_meter(
    store: &Store,
    work: &mut Work<'_>,
    rows: &[RawReading],
    seq: i64,
) -> Result<(), StoreError> {
    let m = work.meter(&rows[0].meter_id);
    let split = match work.meters[m].last {
        Some(last) => rows.partition_point(|r| (r.ts, r.wh) <= last),
        None => 0,
    };
    if split > 0 {
        apply_late(store, work, m, &rows[..split], seq).await?;
    }
    for r in &rows[split..] {
        work.step(m, r.ts, r.wh);
    }
    Ok(())
}

/// Late readings: swaps the intervals of the affected stretch for the ones with them in.
async fn apply_late(
    store: &Store,
    work: &mut Work<'_>,
    m: usize,
    late: &[RawReading],
    seq: i64,
) -> Result<(), StoreError> {
    work.late += late.len() as u64;
    let (lo, hi) = (late[0].ts, late[late.len() - 1].ts);
    let old = store
        .meter_window(work.gateway, &work.meters[m].id, seq, lo, hi)
        .await?;
    let mut new: Vec<(i64, i64)> = old
        .iter()
        .copied()
        .chain(late.iter().map(|r| (r.ts, r.wh)))
        .collect();
    new.sort_unstable();
    let rules = work.config.consumption;
    for (series, sign) in [(&old, -1), (&new, 1)] {
        for pair in series.windows(2) {
            let ((t0, w0), (t1, w1)) = (pair[0], pair[1]);
            let (d, _) = delta(t0, w0, t1, w1, &rules);
            work.add_interval(m, t0, t1, d, sign);
        }
    }
    Ok(())
}

/// Turns the finished work into what the transaction writes.
fn finish(work: Work<'_>, cursor: &CursorRow, to: i64, readings: u64) -> BatchWrite {
    let mut daily: HashMap<(usize, i64), i64> = HashMap::new();
    let mut hourly = Vec::with_capacity(work.hourly.len());
    for (&(m, h), &wh) in &work.hourly {
        if wh != 0 {
            *daily.entry((m, day_of(h))).or_insert(0) += wh;
            hourly.push((work.meters[m].id.clone(), h, wh));
        }
    }
    let daily = daily
        .into_iter()
        .filter(|&(_, wh)| wh != 0)
        .map(|((m, d), wh)| (work.meters[m].id.clone(), d, wh))
        .collect();
    let meters = work
        .meters
        .iter()
        .filter(|m| m.dirty)
        .filter_map(|m| {
            let (last_ts, last_wh) = m.last?;
            let (stored, new) = match m.zero_event {
                Some(EventRef::Stored(id)) => (Some(id), None),
                Some(EventRef::New(i)) => (None, Some(i)),
                None => (None, None),
            };
            Some((
                MeterRow {
                    meter_id: m.id.clone(),
                    last_ts,
                    last_wh,
                    zero_since: m.zero_since,
                    zero_event: stored,
                },
                new,
            ))
        })
        .collect();
    let (outage_event, outage_new, outage_start, outage_meters) = match &work.outage {
        Some(o) => match o.event {
            EventRef::Stored(id) => (Some(id), None, Some(o.start), Some(o.meters)),
            EventRef::New(i) => (None, Some(i), Some(o.start), Some(o.meters)),
        },
        None => (None, None, None, None),
    };
    BatchWrite {
        from_seq: cursor.seq,
        cursor: CursorRow {
            seq: to,
            clock: work.clock,
            readings: cursor.readings + readings as i64,
            outage_event,
            outage_start,
            outage_meters,
        },
        outage_new,
        hourly,
        daily,
        new_events: work.new_events,
        closed: work.closed,
        meters,
    }
}
