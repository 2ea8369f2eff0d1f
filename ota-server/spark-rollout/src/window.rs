//! Maintenance windows, evaluated in each site's local time.
//!
//! A window is a start and end wall-clock time (`02:00`–`05:00`) on some weekdays (all when none
//! are given). A window whose end is not after its start wraps past midnight (`22:00`–`04:00`
//! opens on the listed day and closes the next morning). A device is inside a window when the
//! wall-clock time at its site (IANA zone from [`DeviceInfo::time_zone`], UTC when absent) is
//! inside it. With no windows configured, any time is allowed.
//!
//! Daylight-saving changes follow from using wall-clock time, and are tested:
//! - on the spring-forward day, wall-clock times in the gap never occur, so a window lying wholly
//!   in the gap (Europe/Berlin `02:00`–`02:30` on the last Sunday of March) does not open that
//!   day, and `01:00`–`04:00` lasts two real hours;
//! - on the fall-back day the repeated hour occurs twice, so `02:00`–`03:00` is open for two
//!   real hours.
//!
//! The tz database is the one bundled in `jiff` (`tzdb-bundle-always`), so the result does not
//! depend on the server host's `/usr/share/zoneinfo`.
//!
//! [`DeviceInfo::time_zone`]: crate::DeviceInfo::time_zone

use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use serde::{Deserialize, Serialize};

use crate::error::WindowError;

/// A day of the week (serialized `mon` … `sun`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum Day {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Day {
    fn of(w: Weekday) -> Day {
        match w {
            Weekday::Monday => Day::Mon,
            Weekday::Tuesday => Day::Tue,
            Weekday::Wednesday => Day::Wed,
            Weekday::Thursday => Day::Thu,
            Weekday::Friday => Day::Fri,
            Weekday::Saturday => Day::Sat,
            Weekday::Sunday => Day::Sun,
        }
    }
}

/// One recurring maintenance window in site-local wall-clock time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceWindow {
    /// Days the window opens on (empty: every day).
    #[serde(default)]
    pub days: Vec<Day>,
    /// Opening wall-clock time (e.g. `02:00`).
    pub start: Time,
    /// Closing wall-clock time; not after `start` means the next day.
    pub end: Time,
}

impl MaintenanceWindow {
    /// An every-day window.
    pub fn daily(start: Time, end: Time) -> Result<MaintenanceWindow, WindowError> {
        let w = MaintenanceWindow {
            days: Vec::new(),
            start,
            end,
        };
        w.validate()?;
        Ok(w)
    }

    /// Checks the window is not empty.
    pub fn validate(&self) -> Result<(), WindowError> {
        if self.start == self.end {
            return Err(WindowError::Empty {
                at: self.start.to_string(),
            });
        }
        Ok(())
    }

    fn opens_on(&self, date: Date) -> bool {
        self.days.is_empty() || self.days.contains(&Day::of(date.weekday()))
    }

    fn contains(&self, date: Date, time: Time) -> bool {
        if self.start < self.end {
            self.opens_on(date) && self.start <= time && time < self.end
        } else {
            // Wraps midnight: the evening part belongs to today, the morning part to yesterday.
            (self.opens_on(date) && time >= self.start)
                || (time < self.end && date.yesterday().is_ok_and(|y| self.opens_on(y)))
        }
    }
}

/// Resolves an IANA time-zone name (UTC when `None`).
pub fn time_zone(name: Option<&str>) -> Result<TimeZone, WindowError> {
    match name {
        None => Ok(TimeZone::UTC),
        Some(n) => TimeZone::get(n).map_err(|_| WindowError::UnknownTimeZone {
            name: n.to_string(),
        }),
    }
}

/// Whether `now` is inside any of `windows` at a site in `tz`. No windows: always.
pub fn in_window(windows: &[MaintenanceWindow], tz: &TimeZone, now: Timestamp) -> bool {
    if windows.is_empty() {
        return true;
    }
    let local = now.to_zoned(tz.clone());
    windows
        .iter()
        .any(|w| w.contains(local.date(), local.time()))
}

/// The next instant after `now` at which a window opens at a site in `tz` (searched over the
/// next 8 days), or `None` without windows or when none opens in that time.
pub fn next_open(
    windows: &[MaintenanceWindow],
    tz: &TimeZone,
    now: Timestamp,
) -> Option<Timestamp> {
    let today = now.to_zoned(tz.clone()).date();
    let mut best: Option<Timestamp> = None;
    for days in 0..=8i64 {
        let Ok(date) = today.checked_add(days.days()) else {
            continue;
        };
        for w in windows {
            if !w.opens_on(date) {
                continue;
            }
            // A start inside a DST gap resolves to the instant after the gap; keep it only if that
            // instant is really inside a window (a window wholly in the gap does not open).
            let Ok(zoned) = date.to_datetime(w.start).to_zoned(tz.clone()) else {
                continue;
            };
            let at = zoned.timestamp();
            if at > now && in_window(windows, tz, at) && best.is_none_or(|b| at < b) {
                best = Some(at);
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::time;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn open_minutes(w: &[MaintenanceWindow], tz: &TimeZone, from: &str, to: &str) -> i64 {
        let (mut t, end) = (ts(from), ts(to));
        let mut n = 0;
        while t < end {
            if in_window(w, tz, t) {
                n += 1;
            }
            t = t.checked_add(1.minute()).unwrap();
        }
        n
    }

    #[test]
    fn local_time_not_utc() {
        let w = [MaintenanceWindow::daily(time(2, 0, 0, 0), time(5, 0, 0, 0)).unwrap()];
        let berlin = time_zone(Some("Europe/Berlin")).unwrap();
        let tokyo = time_zone(Some("Asia/Tokyo")).unwrap();
        // 01:30 UTC in November = 02:30 Berlin (CET) = 10:30 Tokyo.
        let t = ts("2026-11-26T01:30:00Z");
        assert!(in_window(&w, &berlin, t));
        assert!(!in_window(&w, &tokyo, t));
        assert_eq!(
            next_open(&w, &tokyo, t),
            Some(ts("2026-11-26T17:00:00Z")) // 02:00 JST on the 27th
        );
        assert!(in_window(&[], &tokyo, t));
        assert_eq!(next_open(&[], &tokyo, t), None);
    }

    #[test]
    fn spring_forward() {
        let berlin = time_zone(Some("Europe/Berlin")).unwrap();
        // 2026-03-29: 02:00 CET jumps to 03:00 CEST.
        let gap = [MaintenanceWindow::daily(time(2, 0, 0, 0), time(2, 30, 0, 0)).unwrap()];
        let day = ("2026-03-28T23:00:00Z", "2026-03-29T22:00:00Z");
        assert_eq!(open_minutes(&gap, &berlin, day.0, day.1), 0);
        // next_open skips the day the window does not exist.
        assert_eq!(
            next_open(&gap, &berlin, ts("2026-03-28T23:00:00Z")),
            Some(ts("2026-03-30T00:00:00Z")) // 02:00 CEST on the 30th
        );
        let wide = [MaintenanceWindow::daily(time(1, 0, 0, 0), time(4, 0, 0, 0)).unwrap()];
        assert_eq!(open_minutes(&wide, &berlin, day.0, day.1), 120);
        // Any other day: three hours.
        assert_eq!(
            open_minutes(
                &wide,
                &berlin,
                "2026-03-27T23:00:00Z",
                "2026-03-28T23:00:00Z"
            ),
            180
        );
    }

    #[test]
    fn fall_back() {
        let berlin = time_zone(Some("Europe/Berlin")).unwrap();
        // 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:00–03:00 happens twice.
        let w = [MaintenanceWindow::daily(time(2, 0, 0, 0), time(3, 0, 0, 0)).unwrap()];
        assert_eq!(
            open_minutes(&w, &berlin, "2026-10-24T22:00:00Z", "2026-10-25T23:00:00Z"),
            120
        );
        // US zones change on other dates: New York falls back on 2026-11-01.
        let ny = time_zone(Some("America/New_York")).unwrap();
        assert_eq!(
            open_minutes(&w, &ny, "2026-10-25T04:00:00Z", "2026-10-26T04:00:00Z"),
            60
        );
        assert_eq!(
            open_minutes(&w, &ny, "2026-11-01T04:00:00Z", "2026-11-02T05:00:00Z"),
            60 // 01:00–02:00 repeats in New York, not 02:00–03:00
        );
    }

    #[test]
    fn wraps_midnight_and_weekdays() {
        let w = [MaintenanceWindow {
            days: vec![Day::Sat],
            start: time(22, 0, 0, 0),
            end: time(4, 0, 0, 0),
        }];
        let utc = TimeZone::UTC;
        // 2026-11-28 is a Saturday: open 22:00 Sat to 04:00 Sun.
        assert!(in_window(&w, &utc, ts("2026-11-28T23:00:00Z")));
        assert!(in_window(&w, &utc, ts("2026-11-29T03:59:00Z")));
        assert!(!in_window(&w, &utc, ts("2026-11-29T04:00:00Z")));
        assert!(!in_window(&w, &utc, ts("2026-11-29T23:00:00Z")));
        assert!(!in_window(&w, &utc, ts("2026-11-28T03:00:00Z")));
        assert_eq!(
            next_open(&w, &utc, ts("2026-11-26T12:00:00Z")),
            Some(ts("2026-11-28T22:00:00Z"))
        );
    }

    #[test]
    fn bad_input() {
        assert!(matches!(
            MaintenanceWindow::daily(time(2, 0, 0, 0), time(2, 0, 0, 0)),
            Err(WindowError::Empty { .. })
        ));
        assert!(matches!(
            time_zone(Some("Mars/Olympus")),
            Err(WindowError::UnknownTimeZone { .. })
        ));
        let w: MaintenanceWindow =
            serde_json::from_str(r#"{"days":["mon","fri"],"start":"02:00","end":"05:00"}"#)
                .unwrap();
        assert_eq!(w.days, vec![Day::Mon, Day::Fri]);
        assert!(
            serde_json::from_str::<MaintenanceWindow>(
                r#"{"days":["funday"],"start":"02:00","end":"05:00"}"#
            )
            .is_err()
        );
    }
}
