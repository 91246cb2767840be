//! Validation of a CronJob's `spec.timeZone`, with upstream's messages: a zone the controller
//! could not schedule in is refused at write time rather than failing later in the controller.
//! A zone in the schedule itself (`CRON_TZ=` / `TZ=`) is refused on new objects, as upstream;
//! objects that already had one keep it, but not together with `spec.timeZone`.

use jiff::tz::TimeZone;
use serde_json::Value;

use crate::api::Cause;

const FIELD: &str = "spec.timeZone";
const SCHEDULE_FIELD: &str = "spec.schedule";

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

/// Upstream's `validateScheduleFormat` rule on zones in `spec.schedule`: a schedule naming a
/// zone is allowed only when the stored object's (`old`) already did, and then never together
/// with `spec.timeZone`. Upstream looks for "TZ" anywhere in the text, and so does this.
pub fn validate_schedule_zone(cron_job: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    let schedule_of = |obj: &Value| {
        obj.pointer("/spec/schedule")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let schedule = schedule_of(cron_job);
    if !schedule.contains("TZ") {
        return;
    }
    let grandfathered = old.is_some_and(|o| schedule_of(o).contains("TZ"));
    let has_zone = cron_job
        .pointer("/spec/timeZone")
        .is_some_and(|z| !z.is_null());
    let message = match (grandfathered, has_zone) {
        (false, _) => "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
        (true, true) => "cannot use both timeZone field and TZ or CRON_TZ in schedule",
        (true, false) => return,
    };
    causes.push(Cause::invalid(SCHEDULE_FIELD, &schedule, message));
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

    fn schedule_messages(schedule: &str, zone: Value, old_schedule: Option<&str>) -> Vec<String> {
        let cron_job = json!({"spec": {"schedule": schedule, "timeZone": zone}});
        let old = old_schedule.map(|s| json!({"spec": {"schedule": s}}));
        let mut causes = Vec::new();
        validate_schedule_zone(&cron_job, old.as_ref(), &mut causes);
        causes
            .into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn a_new_schedule_may_not_name_a_zone_and_an_old_one_not_together_with_time_zone() {
        assert_eq!(
            schedule_messages("CRON_TZ=UTC 0 * * * *", Value::Null, None),
            ["spec.schedule: Invalid value: \"CRON_TZ=UTC 0 * * * *\": cannot use TZ or CRON_TZ in schedule, use timeZone field instead"]
        );
        assert_eq!(
            schedule_messages("TZ=UTC 0 * * * *", json!("UTC"), Some("0 * * * *")),
            ["spec.schedule: Invalid value: \"TZ=UTC 0 * * * *\": cannot use TZ or CRON_TZ in schedule, use timeZone field instead"],
            "an update may not add a zone to a schedule that had none"
        );
        assert_eq!(
            schedule_messages("TZ=UTC 0 * * * *", json!("UTC"), Some("TZ=UTC 0 * * * *")),
            ["spec.schedule: Invalid value: \"TZ=UTC 0 * * * *\": cannot use both timeZone field and TZ or CRON_TZ in schedule"]
        );
        assert!(
            schedule_messages("TZ=UTC 5 * * * *", Value::Null, Some("TZ=UTC 0 * * * *")).is_empty(),
            "a stored schedule with a zone may stay so"
        );
        assert!(schedule_messages("0 * * * *", json!("UTC"), None).is_empty());
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
