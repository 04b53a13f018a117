//! The `[maintenance]` section: the wall-clock schedules of the housekeeping jobs and the spans
//! they judge shipments by, checked through the scheduler itself.

use std::time::Duration;

use serde::Deserialize;
use tokio_cron_scheduler::Job;

use super::{ConfigError, HumanDuration, invalid};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMaintenance {
    timezone: Option<String>,
    expire_after: Option<HumanDuration>,
    no_info_after: Option<HumanDuration>,
    stuck_after: Option<HumanDuration>,
    retain: Option<HumanDuration>,
    #[serde(default)]
    schedules: RawSchedules,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSchedules {
    expire: Option<String>,
    stuck: Option<String>,
    prune: Option<String>,
    checkpoint: Option<String>,
}

pub(super) fn resolve_maintenance(raw: RawMaintenance) -> Result<MaintenanceConfig, ConfigError> {
    let d = MaintenanceConfig::default();
    let config = MaintenanceConfig {
        timezone: match raw.timezone {
            None => d.timezone,
            Some(zone) => zone.parse().map_err(|_| {
                invalid(format!(
                    "[maintenance] timezone {zone:?} is not a time zone name such as Asia/Shanghai"
                ))
            })?,
        },
        expire_after: raw.expire_after.map_or(d.expire_after, |v| v.0),
        no_info_after: raw.no_info_after.map_or(d.no_info_after, |v| v.0),
        stuck_after: raw.stuck_after.map_or(d.stuck_after, |v| v.0),
        retain: raw.retain.map_or(d.retain, |v| v.0),
        schedules: Schedules {
            expire: raw.schedules.expire.unwrap_or(d.schedules.expire),
            stuck: raw.schedules.stuck.unwrap_or(d.schedules.stuck),
            prune: raw.schedules.prune.unwrap_or(d.schedules.prune),
            checkpoint: raw.schedules.checkpoint.unwrap_or(d.schedules.checkpoint),
        },
    };
    config.validate().map_err(|e| invalid(e.to_string()))?;
    Ok(config)
}

const DAY: Duration = Duration::from_secs(86_400);

/// Cron expressions in tokio-cron-scheduler's six-field form, seconds first
/// (`sec min hour day-of-month month day-of-week`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedules {
    /// Expiry and the missing-carrier-information check.
    pub expire: String,
    pub stuck: String,
    pub prune: String,
    pub checkpoint: String,
}

impl Default for Schedules {
    fn default() -> Self {
        Schedules {
            expire: "0 */10 * * * *".to_owned(),
            stuck: "0 */10 * * * *".to_owned(),
            // At night, when the shops are quiet.
            prune: "0 30 3 * * *".to_owned(),
            checkpoint: "0 0 * * * *".to_owned(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct MaintenanceConfig {
    /// The zone the schedules' wall-clock times are read in.
    pub timezone: chrono_tz::Tz,
    /// No news for this long: the shipment expires and polling stops.
    pub expire_after: Duration,
    /// Still no carrier information this long after tracking began: flagged as an exception.
    pub no_info_after: Duration,
    /// A moving parcel quiet for this long is reported stuck to the shop.
    pub stuck_after: Duration,
    /// How long delivered notifications and the history of finished shipments are kept.
    pub retain: Duration,
    pub schedules: Schedules,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        MaintenanceConfig {
            timezone: chrono_tz::Asia::Shanghai,
            expire_after: 30 * DAY,
            no_info_after: 3 * DAY,
            stuck_after: 3 * DAY,
            retain: 90 * DAY,
            schedules: Schedules::default(),
        }
    }
}

/// A `[maintenance]` setting the jobs cannot run with, named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidMaintenance {
    #[error(
        "[maintenance.schedules] {name} = {expr:?} is not a cron expression \
         (six fields: sec min hour day-of-month month day-of-week, e.g. \"0 */10 * * * *\")"
    )]
    Schedule { name: &'static str, expr: String },
    #[error("[maintenance] {name} must be longer than zero")]
    ZeroSpan { name: &'static str },
}

impl MaintenanceConfig {
    /// Checks every schedule parses and every span is positive; the error names the culprit.
    pub fn validate(&self) -> Result<(), InvalidMaintenance> {
        for (name, expr) in self.schedules.named() {
            parse_schedule(name, expr, self.timezone)?;
        }
        for (name, span) in [
            ("expire_after", self.expire_after),
            ("no_info_after", self.no_info_after),
            ("stuck_after", self.stuck_after),
            ("retain", self.retain),
        ] {
            if span.is_zero() {
                return Err(InvalidMaintenance::ZeroSpan { name });
            }
        }
        Ok(())
    }
}

impl Schedules {
    pub(crate) fn named(&self) -> [(&'static str, &str); 4] {
        [
            ("expire", &self.expire),
            ("stuck", &self.stuck),
            ("prune", &self.prune),
            ("checkpoint", &self.checkpoint),
        ]
    }
}

/// Parsing through the scheduler itself means `validate` accepts exactly what `start` will.
fn parse_schedule(
    name: &'static str,
    expr: &str,
    tz: chrono_tz::Tz,
) -> Result<Job, InvalidMaintenance> {
    Job::new_async_tz(expr, tz, |_, _| Box::pin(async {})).map_err(|_| {
        InvalidMaintenance::Schedule {
            name,
            expr: expr.to_owned(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::parse;
    use super::*;

    #[test]
    fn the_section_sets_the_zone_the_spans_and_the_schedules_and_the_rest_stay_default() {
        let config = parse(
            "[maintenance]\ntimezone = \"Europe/Berlin\"\nexpire_after = \"7d\"\n\
             no_info_after = \"2d\"\nstuck_after = \"36h\"\nretain = \"14d\"\n\
             [maintenance.schedules]\nprune = \"0 0 4 * * *\"\ncheckpoint = \"0 15 * * * *\"\n",
        )
        .unwrap();
        let m = &config.maintenance;
        assert_eq!(m.timezone, chrono_tz::Europe::Berlin);
        assert_eq!(m.expire_after, 7 * DAY);
        assert_eq!(m.no_info_after, 2 * DAY);
        assert_eq!(m.stuck_after, Duration::from_secs(36 * 3600));
        assert_eq!(m.retain, 14 * DAY);
        let d = Schedules::default();
        assert_eq!(
            m.schedules,
            Schedules {
                prune: "0 0 4 * * *".to_owned(),
                checkpoint: "0 15 * * * *".to_owned(),
                ..d
            }
        );
        // The polls' "no trace yet" window follows the maintenance one.
        assert_eq!(config.polling.no_info_after, 2 * DAY);

        let m = parse("").unwrap().maintenance;
        assert_eq!(m.timezone, chrono_tz::Asia::Shanghai);
        assert_eq!(m.expire_after, 30 * DAY);
        assert_eq!(m.schedules, Schedules::default());
    }

    #[test]
    fn each_mistake_in_the_section_is_named_in_one_line() {
        let err = |text: &str| parse(text).unwrap_err().to_string();
        assert_eq!(
            err("[maintenance]\ntimezone = \"Mars/Olympus\""),
            "[maintenance] timezone \"Mars/Olympus\" is not a time zone name such as Asia/Shanghai"
        );
        for key in ["expire_after", "no_info_after", "stuck_after", "retain"] {
            assert_eq!(
                err(&format!("[maintenance]\n{key} = \"0s\"")),
                format!("[maintenance] {key} must be longer than zero")
            );
        }
        let five_fields = err("[maintenance.schedules]\nstuck = \"*/10 * * * *\"");
        assert!(
            five_fields.starts_with(
                "[maintenance.schedules] stuck = \"*/10 * * * *\" is not a cron expression (six fields"
            ),
            "{five_fields}"
        );
    }
}
