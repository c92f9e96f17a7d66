//! Timetables for `txpipe schedule`: daily at a UTC time, or every interval.

use std::time::Duration;

use chrono::{DateTime, NaiveTime, Utc};

use crate::error::{Error, Result};

/// When runs happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timetable {
    /// Every day at this UTC time.
    DailyAt(NaiveTime),
    /// At this interval, the first run at once.
    Every(Duration),
}

/// Parses `HH:MM` (UTC).
///
/// # Errors
/// Not a time of day.
pub fn parse_at(s: &str) -> Result<Timetable> {
    NaiveTime::parse_from_str(s, "%H:%M")
        .map(Timetable::DailyAt)
        .map_err(|_| Error::Config(format!("'{s}' is not HH:MM (24-hour, UTC)")))
}

/// Parses an interval such as `90s`, `15m`, `6h`, `1d`.
///
/// # Errors
/// Not a positive number followed by s, m, h or d.
pub fn parse_every(s: &str) -> Result<Timetable> {
    let bad = || Error::Config(format!("'{s}' is not an interval like 90s, 15m, 6h or 1d"));
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(bad()),
    };
    if secs == 0 {
        return Err(bad());
    }
    Ok(Timetable::Every(Duration::from_secs(secs)))
}

impl Timetable {
    /// [`wait`](Self::wait) from the current time.
    pub fn wait_from_now(&self, first: bool) -> Duration {
        self.wait(Utc::now(), first)
    }

    /// How long to wait from `now` until the next run; `first` is true before
    /// the first run (an interval timetable runs at once).
    pub fn wait(&self, now: DateTime<Utc>, first: bool) -> Duration {
        match *self {
            Timetable::Every(d) => {
                if first {
                    Duration::ZERO
                } else {
                    d
                }
            }
            Timetable::DailyAt(t) => {
                let today = now.date_naive().and_time(t).and_utc();
                let next = if today > now {
                    today
                } else {
                    today + chrono::Duration::days(1)
                };
                (next - now).to_std().unwrap_or_default()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_waits() {
        assert_eq!(
            parse_every("90s").unwrap(),
            Timetable::Every(Duration::from_secs(90))
        );
        assert_eq!(
            parse_every("2h").unwrap(),
            Timetable::Every(Duration::from_secs(7200))
        );
        for bad in ["", "0m", "5", "m", "5w", "-1h"] {
            assert!(parse_every(bad).is_err(), "{bad}");
        }
        assert!(parse_at("25:00").is_err());
        let at = parse_at("02:30").unwrap();
        let now: DateTime<Utc> = "2026-11-24T01:00:00Z".parse().unwrap();
        assert_eq!(at.wait(now, true), Duration::from_secs(90 * 60));
        let later: DateTime<Utc> = "2026-11-24T03:00:00Z".parse().unwrap();
        assert_eq!(
            at.wait(later, false),
            Duration::from_secs(23 * 3600 + 30 * 60)
        );
        let every = parse_every("15m").unwrap();
        assert_eq!(every.wait(now, true), Duration::ZERO);
        assert_eq!(every.wait(now, false), Duration::from_secs(900));
    }
}
