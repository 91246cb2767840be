//! Validation of a CronJob's `spec.timeZone`, with upstream's messages: a zone the controller
//! could not schedule in is refused at write time rather than failing later in the controller.

use jiff::tz::TimeZone;
use serde_json::Value;

use crate::api::Cause;

const FIELD: &str = "spec.timeZone";

pub fn validate(cron_job: &Value, causes: &mut Vec<Cause>) {
    let Some(zone) = cron_job.pointer("/spec/timeZone") else {
        return;
    };
    let Some(zone) = zone.as_str() else {
        // null is "no zone"; anything else fails decoding before it gets here.
        return;
    };
    if zone.is_empty() {
        causes.push(Cause::invalid(
            FIELD,
            zone,
            "timeZone must be nil or non-empty string",
        ));
        return;
    }
    let unknown = || Cause::invalid(FIELD, zone, &format!("unknown time zone {zone}"));
    // Upstream's character rule keeps names that could reach outside the zone database out.
    if zone.split('/').any(|part| !plausible_part(part)) {
        causes.push(unknown());
        return;
    }
    if zone.eq_ignore_ascii_case("Local") {
        causes.push(Cause::invalid(
            FIELD,
            zone,
            "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones",
        ));
        return;
    }
    if TimeZone::get(zone).is_err() {
        causes.push(unknown());
    }
}

/// `[A-Za-z.\-_0-9+]{1,14}`, not `.`/`..`, not starting with `-`.
fn plausible_part(part: &str) -> bool {
    (1..=14).contains(&part.len())
        && part != "."
        && part != ".."
        && !part.starts_with('-')
        && part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn messages(zone: Value) -> Vec<String> {
        let mut causes = Vec::new();
        validate(
            &json!({"spec": {"schedule": "0 * * * *", "timeZone": zone}}),
            &mut causes,
        );
        causes
            .into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn known_zones_and_no_zone_are_accepted() {
        assert!(messages(json!("Europe/Berlin")).is_empty());
        assert!(messages(json!("UTC")).is_empty());
        assert!(messages(Value::Null).is_empty());
    }

    #[test]
    fn unknown_empty_local_and_path_like_zones_are_refused_with_upstreams_messages() {
        assert_eq!(
            messages(json!("Mars/Olympus")),
            ["spec.timeZone: Invalid value: \"Mars/Olympus\": unknown time zone Mars/Olympus"]
        );
        assert_eq!(
            messages(json!("")),
            ["spec.timeZone: Invalid value: \"\": timeZone must be nil or non-empty string"]
        );
        assert_eq!(
            messages(json!("local")),
            ["spec.timeZone: Invalid value: \"local\": timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones"]
        );
        assert_eq!(
            messages(json!("../etc/passwd")),
            ["spec.timeZone: Invalid value: \"../etc/passwd\": unknown time zone ../etc/passwd"]
        );
    }
}
