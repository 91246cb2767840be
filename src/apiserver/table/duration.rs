//! Ages as people read them: `5s`, `3m2s`, `5h`, `3d4h`, `2y` — the shape kubectl users know.

use jiff::Timestamp;

/// Formats a span of whole seconds the way upstream's `HumanDuration` does: precise when short,
/// coarser as it grows. A small negative span (clock skew) reads as `0s`.
pub fn human(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        return with_rest(minutes, "m", seconds % 60, "s");
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        return with_rest(hours, "h", minutes % 60, "m");
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        return with_rest(hours / 24, "d", hours % 24, "h");
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        return with_rest(hours / 24 / 365, "y", (hours / 24) % 365, "d");
    }
    format!("{}y", hours / 24 / 365)
}

fn with_rest(big: i64, big_unit: &str, rest: i64, rest_unit: &str) -> String {
    if rest == 0 {
        format!("{big}{big_unit}")
    } else {
        format!("{big}{big_unit}{rest}{rest_unit}")
    }
}

/// The age of an RFC 3339 timestamp at `now`; `<unknown>` when it is missing or unreadable.
pub fn since(timestamp: &str, now: Timestamp) -> String {
    match timestamp.parse::<Timestamp>() {
        Ok(t) => human(now.as_second() - t.as_second()),
        Err(_) => "<unknown>".into(),
    }
}

/// Seconds between two RFC 3339 timestamps, when both can be read.
pub fn between(start: &str, end: &str) -> Option<i64> {
    let start = start.parse::<Timestamp>().ok()?;
    let end = end.parse::<Timestamp>().ok()?;
    Some(end.as_second() - start.as_second())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_spans_are_exact_and_long_ones_get_coarser() {
        let cases = [
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (5, "5s"),
            (119, "119s"),
            (120, "2m"),
            (182, "3m2s"),
            (600, "10m"),
            (179 * 60, "179m"),
            (3 * 3600, "3h"),
            (5 * 3600 + 20 * 60, "5h20m"),
            (10 * 3600 + 59 * 60, "10h"),
            (47 * 3600, "47h"),
            (3 * 86400 + 4 * 3600, "3d4h"),
            (5 * 86400, "5d"),
            (30 * 86400 + 7 * 3600, "30d"),
            (3 * 365 * 86400 + 12 * 86400, "3y12d"),
            (10 * 365 * 86400, "10y"),
        ];
        for (seconds, want) in cases {
            assert_eq!(human(seconds), want, "{seconds}s");
        }
    }

    #[test]
    fn ages_are_measured_from_the_timestamp_and_missing_ones_are_unknown() {
        let now: Timestamp = "2026-01-01T00:10:00Z".parse().unwrap();
        assert_eq!(since("2026-01-01T00:00:00Z", now), "10m");
        assert_eq!(since("", now), "<unknown>");
        assert_eq!(
            between("2026-01-01T00:00:00Z", "2026-01-01T00:00:42Z"),
            Some(42)
        );
    }
}
