//! Cron schedules as CronJobs take them (upstream parses with robfig/cron's standard parser):
//! five fields (minute, hour, day of month, month, day of week) of `*`, `?`, numbers, names
//! (`JAN`..`DEC`, `SUN`..`SAT`), ranges `a-b`, steps `*/n`, `a/n`, `a-b/n` and lists; the
//! descriptors `@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`, `@midnight`,
//! `@hourly`; an optional `CRON_TZ=<zone>` (or `TZ=`) prefix.
//!
//! As in cron, when both day fields are restricted a day matching either one matches; when
//! one of them is `*` both must match.

use jiff::civil::{date, DateTime};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    #[error("expected exactly 5 fields, found {0}: {1}")]
    FieldCount(usize, String),
    #[error("unrecognized descriptor: {0}")]
    Descriptor(String),
    #[error("failed to parse {field} field {text:?}: {why}")]
    Field {
        field: &'static str,
        text: String,
        why: String,
    },
    #[error("unknown time zone {0}")]
    TimeZone(String),
}

/// One field: which values are allowed, as bits; `star` if written as `*` or `?` (matters for
/// the two day fields).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Field {
    bits: u64,
    star: bool,
}

impl Field {
    fn has(&self, value: i8) -> bool {
        (0..64).contains(&value) && self.bits & (1 << value) != 0
    }
}

struct Bounds {
    name: &'static str,
    min: i8,
    max: i8,
    names: &'static [&'static str],
}

const MINUTE: Bounds = Bounds {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: Bounds = Bounds {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DAY_OF_MONTH: Bounds = Bounds {
    name: "day of month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: Bounds = Bounds {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
};
const DAY_OF_WEEK: Bounds = Bounds {
    name: "day of week",
    min: 0,
    max: 6,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
};

#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    minute: Field,
    hour: Field,
    day_of_month: Field,
    month: Field,
    day_of_week: Field,
    /// From a `CRON_TZ=` prefix.
    pub time_zone: Option<String>,
}

impl Schedule {
    pub fn parse(text: &str) -> Result<Schedule, Error> {
        let mut text = text.trim();
        let mut time_zone = None;
        for prefix in ["CRON_TZ=", "TZ="] {
            if let Some(rest) = text.strip_prefix(prefix) {
                let (zone, rest) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
                time_zone = Some(zone.to_string());
                text = rest.trim();
            }
        }
        let expanded = match text {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            d if d.starts_with('@') => return Err(Error::Descriptor(d.to_string())),
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let [minute, hour, dom, month, dow] = fields[..] else {
            return Err(Error::FieldCount(fields.len(), text.to_string()));
        };
        Ok(Schedule {
            minute: parse_field(minute, &MINUTE)?,
            hour: parse_field(hour, &HOUR)?,
            day_of_month: parse_field(dom, &DAY_OF_MONTH)?,
            month: parse_field(month, &MONTH)?,
            day_of_week: parse_field(dow, &DAY_OF_WEEK)?,
            time_zone,
        })
    }

    fn day_matches(&self, dt: DateTime) -> bool {
        let dom = self.day_of_month.has(dt.day());
        let dow = self.day_of_week.has(dt.weekday().to_sunday_zero_offset());
        if self.day_of_month.star || self.day_of_week.star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The first scheduled time strictly after `after`, in `tz`; None if there is none in
    /// the next five years (e.g. `0 0 30 2 *`).
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let start = after.to_zoned(tz.clone()).datetime();
        let limit = start.year() + 5;
        let mut dt = start
            .date()
            .at(start.hour(), start.minute(), 0, 0)
            .checked_add(1.minute())
            .ok()?;
        while dt.year() <= limit {
            if !self.month.has(dt.month()) {
                dt = dt
                    .date()
                    .first_of_month()
                    .checked_add(1.month())
                    .ok()?
                    .at(0, 0, 0, 0);
                continue;
            }
            if !self.day_matches(dt) {
                dt = dt.date().tomorrow().ok()?.at(0, 0, 0, 0);
                continue;
            }
            if !self.hour.has(dt.hour()) {
                dt = dt
                    .date()
                    .at(dt.hour(), 0, 0, 0)
                    .checked_add(1.hour())
                    .ok()?;
                continue;
            }
            if !self.minute.has(dt.minute()) {
                dt = dt.checked_add(1.minute()).ok()?;
                continue;
            }
            // A time skipped by a DST change runs shifted by the skipped span.
            let at = tz.to_ambiguous_timestamp(dt).compatible().ok()?;
            if at > after {
                return Some(at);
            }
            dt = dt.checked_add(1.minute()).ok()?;
        }
        None
    }
}

/// The zone a CronJob's schedule runs in: `spec.timeZone`, else the schedule's `CRON_TZ=`,
/// else the local zone of this host (as upstream's controller manager does).
pub fn time_zone(spec_zone: Option<&str>, schedule: &Schedule) -> Result<TimeZone, Error> {
    match spec_zone.or(schedule.time_zone.as_deref()) {
        Some(name) => TimeZone::get(name).map_err(|_| Error::TimeZone(name.to_string())),
        None => Ok(TimeZone::system()),
    }
}

fn parse_field(text: &str, bounds: &Bounds) -> Result<Field, Error> {
    let mut field = Field {
        bits: 0,
        star: false,
    };
    for part in text.split(',') {
        let (bits, star) = parse_range(part, bounds).map_err(|why| Error::Field {
            field: bounds.name,
            text: text.to_string(),
            why,
        })?;
        field.bits |= bits;
        field.star |= star;
    }
    Ok(field)
}

/// One list element: `*`, `?`, `n`, `a-b`, each optionally `/step`.
fn parse_range(part: &str, bounds: &Bounds) -> Result<(u64, bool), String> {
    let (range, step) = match part.split_once('/') {
        Some((r, s)) => (
            r,
            Some(s.parse::<i8>().map_err(|_| format!("bad step {s:?}"))?),
        ),
        None => (part, None),
    };
    let (mut star, start, mut end) = if range == "*" || range == "?" {
        (true, bounds.min, bounds.max)
    } else {
        match range.split_once('-') {
            Some((a, b)) => (false, value(a, bounds)?, value(b, bounds)?),
            None => {
                let v = value(range, bounds)?;
                (false, v, v)
            }
        }
    };
    if let Some(step) = step {
        if step <= 0 {
            return Err(format!("step must be positive, got {step}"));
        }
        // "n/step" means "n-max/step".
        if !range.contains('-') && !star {
            end = bounds.max;
        }
        if step > 1 {
            star = false;
        }
    }
    if start < bounds.min || end > bounds.max || start > end {
        return Err(format!(
            "{start}-{end} is outside {}-{}",
            bounds.min, bounds.max
        ));
    }
    let step = step.unwrap_or(1);
    let mut bits = 0u64;
    let mut v = start;
    while v <= end {
        bits |= 1 << v;
        v = match v.checked_add(step) {
            Some(next) => next,
            None => break,
        };
    }
    Ok((bits, star))
}

fn value(text: &str, bounds: &Bounds) -> Result<i8, String> {
    let lower = text.to_ascii_lowercase();
    if let Some(i) = bounds.names.iter().position(|n| *n == lower) {
        return Ok(i as i8 + bounds.min);
    }
    text.parse::<i8>()
        .map_err(|_| format!("bad value {text:?}"))
}

/// For tests and callers that want a fixed civil time in a zone.
pub fn at(tz: &TimeZone, y: i16, mo: i8, d: i8, h: i8, mi: i8) -> Option<Timestamp> {
    tz.to_ambiguous_timestamp(date(y, mo, d).at(h, mi, 0, 0))
        .compatible()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(y: i16, mo: i8, d: i8, h: i8, mi: i8) -> Timestamp {
        at(&TimeZone::UTC, y, mo, d, h, mi).unwrap()
    }

    fn next(schedule: &str, after: Timestamp) -> Option<Timestamp> {
        Schedule::parse(schedule)
            .unwrap()
            .next_after(after, &TimeZone::UTC)
    }

    #[test]
    fn every_minute_runs_at_the_next_whole_minute() {
        let t = utc(2026, 3, 1, 10, 0) + jiff::SignedDuration::from_secs(30);
        assert_eq!(next("* * * * *", t), Some(utc(2026, 3, 1, 10, 1)));
        assert_eq!(
            next("*/1 * * * *", utc(2026, 3, 1, 10, 1)),
            Some(utc(2026, 3, 1, 10, 2))
        );
    }

    #[test]
    fn steps_ranges_and_lists_select_the_right_minutes() {
        let t = utc(2026, 3, 1, 10, 7);
        assert_eq!(next("*/15 * * * *", t), Some(utc(2026, 3, 1, 10, 15)));
        assert_eq!(next("5,40 * * * *", t), Some(utc(2026, 3, 1, 10, 40)));
        assert_eq!(next("10-20/5 * * * *", t), Some(utc(2026, 3, 1, 10, 10)));
        assert_eq!(
            next("50/5 * * * *", utc(2026, 3, 1, 10, 56)),
            Some(utc(2026, 3, 1, 11, 50))
        );
    }

    #[test]
    fn descriptors_and_names_expand_like_cron() {
        let t = utc(2026, 3, 1, 10, 7); // a Sunday
        assert_eq!(next("@hourly", t), Some(utc(2026, 3, 1, 11, 0)));
        assert_eq!(next("@daily", t), Some(utc(2026, 3, 2, 0, 0)));
        assert_eq!(next("@weekly", t), Some(utc(2026, 3, 8, 0, 0)));
        assert_eq!(next("@monthly", t), Some(utc(2026, 4, 1, 0, 0)));
        assert_eq!(next("@yearly", t), Some(utc(2027, 1, 1, 0, 0)));
        assert_eq!(
            next("0 9 * JAN-MAR mon-fri", t),
            Some(utc(2026, 3, 2, 9, 0))
        );
    }

    #[test]
    fn restricted_day_fields_match_either_day() {
        // The 15th or any Friday, whichever comes first.
        let t = utc(2026, 3, 1, 0, 0);
        assert_eq!(next("0 0 15 * 5", t), Some(utc(2026, 3, 6, 0, 0)));
        // With a star day of month only Fridays count.
        assert_eq!(
            next("0 0 * * 5", utc(2026, 3, 6, 0, 0)),
            Some(utc(2026, 3, 13, 0, 0))
        );
    }

    #[test]
    fn an_impossible_date_never_comes() {
        assert_eq!(next("0 0 30 2 *", utc(2026, 1, 1, 0, 0)), None);
    }

    #[test]
    fn bad_schedules_are_refused_with_the_field_named() {
        assert!(matches!(
            Schedule::parse("* * * *"),
            Err(Error::FieldCount(4, _))
        ));
        assert!(matches!(
            Schedule::parse("61 * * * *"),
            Err(Error::Field {
                field: "minute",
                ..
            })
        ));
        assert!(matches!(
            Schedule::parse("* * * * 7"),
            Err(Error::Field {
                field: "day of week",
                ..
            })
        ));
        assert!(matches!(
            Schedule::parse("*/0 * * * *"),
            Err(Error::Field { .. })
        ));
        assert!(matches!(
            Schedule::parse("@fortnightly"),
            Err(Error::Descriptor(_))
        ));
    }

    #[test]
    fn a_time_zone_shifts_the_schedule() {
        let Ok(berlin) = TimeZone::get("Europe/Berlin") else {
            // No time zone database on this host: nothing to check.
            return;
        };
        let schedule = Schedule::parse("CRON_TZ=Europe/Berlin 0 9 * * *").unwrap();
        assert_eq!(schedule.time_zone.as_deref(), Some("Europe/Berlin"));
        let tz = time_zone(None, &schedule).unwrap();
        // 09:00 in Berlin in winter is 08:00 UTC.
        assert_eq!(
            schedule.next_after(utc(2026, 1, 10, 0, 0), &tz),
            Some(utc(2026, 1, 10, 8, 0))
        );
        // 02:30 does not exist on 2026-03-29 in Berlin (clocks jump 02:00 -> 03:00): it runs at
        // 03:30 CEST, 02:30 shifted by the skipped hour.
        let gap = Schedule::parse("30 2 * * *").unwrap();
        let at_gap = gap.next_after(utc(2026, 3, 28, 12, 0), &berlin).unwrap();
        assert_eq!(at_gap, utc(2026, 3, 29, 1, 30));
        assert!(matches!(
            time_zone(Some("Mars/Olympus"), &schedule),
            Err(Error::TimeZone(_))
        ));
    }
}
