//! From a binding's last synced content back to the upsert that wrote it, so
//! that a repair goes through the normal queue like any producer's write.

use chrono::Days;

use crate::calendar::{EventBody, EventTime};
use crate::operation::{EventDetails, EventTiming, SourceKey, UpsertEvent};

/// The UPSERT_EVENT whose event body is `body`; `None` when the body cannot
/// have come from one (an all-day start with a timed end, a stored content
/// that no longer decodes).
pub(crate) fn upsert_from_content(
    source: &SourceKey,
    event_type: &str,
    body: &EventBody,
) -> Option<UpsertEvent> {
    let (timing, time_zone) = match (&body.start, &body.end) {
        (EventTime::Date(first_day), EventTime::Date(end)) => (
            EventTiming::AllDay {
                first_day: *first_day,
                // Google's end is exclusive, ours inclusive.
                last_day: end.checked_sub_days(Days::new(1))?,
            },
            None,
        ),
        (
            EventTime::DateTime {
                date_time: start,
                time_zone,
            },
            EventTime::DateTime { date_time: end, .. },
        ) => (
            EventTiming::Timed {
                start: *start,
                end: *end,
            },
            time_zone.clone(),
        ),
        _ => return None,
    };
    Some(UpsertEvent {
        source: source.clone(),
        event_type: event_type.to_owned(),
        event: EventDetails {
            title: body.summary.clone(),
            description: body.description.clone(),
            timing,
            time_zone,
            options: body.options.clone(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::event_body;
    use crate::operation::CalendarKey;

    fn source() -> SourceKey {
        SourceKey {
            calendar: CalendarKey {
                workspace_id: "acme".into(),
                calendar_id: "cal".into(),
            },
            source_type: "task".into(),
            source_id: "42".into(),
        }
    }

    fn round_trip(timing: EventTiming, time_zone: Option<&str>) {
        let upsert = UpsertEvent {
            source: source(),
            event_type: "DEADLINE".into(),
            event: EventDetails {
                title: "Ship".into(),
                description: Some("it".into()),
                timing,
                time_zone: time_zone.map(str::to_owned),
                options: crate::EventOptions::default(),
            },
        };
        let body = event_body(&upsert);
        let back = upsert_from_content(&upsert.source, "DEADLINE", &body).expect("converts");
        assert_eq!(event_body(&back), body, "the repair writes the same body");
    }

    #[test]
    fn the_content_of_an_upsert_gives_back_an_upsert_of_the_same_body() {
        let day = chrono::NaiveDate::from_ymd_opt(2025, 1, 15).unwrap();
        round_trip(
            EventTiming::AllDay {
                first_day: day,
                last_day: day,
            },
            None,
        );
        let start = chrono::DateTime::parse_from_rfc3339("2025-01-15T14:00:00+01:00").unwrap();
        let end = start + chrono::Duration::hours(1);
        round_trip(EventTiming::Timed { start, end }, Some("Europe/Paris"));
    }
}
