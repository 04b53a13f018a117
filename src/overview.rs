//! What operators are shown of the daemon's state (`shipwatch stats`, systemd's status line):
//! the stored counts, summed the ways a reader asks for them, and the state of each configured
//! provider and channel. The sums and the states are pure functions of what was read, so tests
//! (and any other front end) reach them without a terminal.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::clock::Millis;
use crate::config::Config;
use crate::notify::ChannelKind;
use crate::notify::template::QuietHours;
use crate::storage::{
    ChannelState, DaemonRow, Db, NotificationCount, PollCount, ProviderState, ShipmentCount,
    StorageError, UnmappedRow,
};

/// Unmapped provider values shown in the text summary, at most (`--json` has them all).
pub const UNMAPPED_SHOWN: usize = 20;

/// Everything `stats` shows, as read at one time; its JSON is the stable `stats --json`.
#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    pub shipments: Vec<ShipmentCount>,
    pub due_now: i64,
    pub lag_seconds: i64,
    /// Polls in the last hour by provider and result (the daemon writes them every 10 s).
    pub polls_last_hour: Vec<PollCount>,
    pub notifications: Vec<NotificationCount>,
    pub providers: Vec<ProviderState>,
    /// Channels that stopped themselves (SMS out of credit, credentials refused).
    pub channels: Vec<ChannelState>,
    pub unmapped: Vec<UnmappedRow>,
    /// The daemons with a row in the database: those alive and those that stopped answering.
    pub daemons: Vec<DaemonRow>,
}

/// A way to group the shipment counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShipmentKey {
    Status,
    Tier,
    Provider,
}

/// Where a configured provider stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderCondition {
    Ok,
    /// Stopped by us: upstream refused its credentials or configuration.
    Stopped,
    /// Banned by upstream (a rate limit).
    Banned,
}

impl ProviderCondition {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderCondition::Ok => "ok",
            ProviderCondition::Stopped => "STOPPED",
            ProviderCondition::Banned => "BANNED",
        }
    }
}

/// A configured provider as `stats` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderLine<'a> {
    pub name: &'a str,
    /// The adapter kind (`taobao`, `simulator`...).
    pub kind: &'static str,
    pub condition: ProviderCondition,
    /// The configured quota in calls per minute; `None` without a rate limit.
    pub calls_per_minute: Option<f64>,
}

/// A configured channel as `stats` shows it.
#[derive(Debug, Clone)]
pub struct ChannelLine<'a> {
    pub kind: ChannelKind,
    /// Its stop, when it stopped itself.
    pub stopped: Option<&'a ChannelState>,
    /// How many statuses it announces.
    pub triggers: usize,
    pub quiet_hours: Option<QuietHours>,
}

impl Overview {
    /// Reads everything `stats` shows at `now`.
    pub async fn read(db: &Db, now: Millis) -> Result<Overview, StorageError> {
        let stats = db.stats(now).await?;
        Ok(Overview {
            shipments: stats.shipments,
            due_now: stats.due_now,
            lag_seconds: stats.lag_seconds,
            polls_last_hour: db.polls_last_hour(now).await?,
            notifications: stats.notifications,
            providers: db.provider_states(now).await?,
            channels: db.channel_states(now).await?,
            unmapped: db.unmapped().await?,
            daemons: db.daemons(now).await?,
        })
    }

    /// Every shipment tracked.
    pub fn total(&self) -> i64 {
        self.shipments.iter().map(|c| c.count).sum()
    }

    /// The shipments still polled.
    pub fn still_polled(&self) -> i64 {
        self.shipments
            .iter()
            .filter(|c| c.active)
            .map(|c| c.count)
            .sum()
    }

    /// The shipment counts summed by `key`, in its order.
    pub fn shipments_by(&self, key: ShipmentKey) -> Vec<(&str, i64)> {
        let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
        for c in &self.shipments {
            let value = match key {
                ShipmentKey::Status => &c.status,
                ShipmentKey::Tier => &c.tier,
                ShipmentKey::Provider => &c.provider,
            };
            *counts.entry(value).or_default() += c.count;
        }
        counts.into_iter().collect()
    }

    /// The last hour's polls by provider (in name order), each with its results as read.
    pub fn polls_by_provider(&self) -> Vec<(&str, Vec<&PollCount>)> {
        let mut by_provider: BTreeMap<&str, Vec<&PollCount>> = BTreeMap::new();
        for c in &self.polls_last_hour {
            by_provider.entry(&c.provider).or_default().push(c);
        }
        by_provider.into_iter().collect()
    }

    /// Each provider `config` defines, with where it stands.
    pub fn provider_lines<'a>(&self, config: &'a Config) -> Vec<ProviderLine<'a>> {
        config
            .providers
            .iter()
            .map(|(name, provider)| ProviderLine {
                name,
                kind: provider.adapter.kind(),
                condition: self.providers.iter().find(|s| &s.provider == name).map_or(
                    ProviderCondition::Ok,
                    |s| {
                        if s.paused_until.is_some() {
                            ProviderCondition::Stopped
                        } else {
                            ProviderCondition::Banned
                        }
                    },
                ),
                calls_per_minute: provider
                    .rate_limit
                    .map(|r| f64::from(r.calls) * 60.0 / r.per.as_secs_f64()),
            })
            .collect()
    }

    /// Each channel `config` enables, with its stop if it stopped itself.
    pub fn channel_lines(&self, config: &Config) -> Vec<ChannelLine<'_>> {
        config
            .channels
            .rules()
            .into_iter()
            .map(|rule| ChannelLine {
                kind: rule.kind,
                stopped: self
                    .channels
                    .iter()
                    .find(|c| c.channel == rule.kind.as_str()),
                triggers: rule.triggers.len(),
                quiet_hours: rule.quiet_hours,
            })
            .collect()
    }

    /// The unmapped provider values the text summary shows.
    pub fn unmapped_shown(&self) -> &[UnmappedRow] {
        &self.unmapped[..self.unmapped.len().min(UNMAPPED_SHOWN)]
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn shipments(rows: &[(&str, &str, &str, bool, i64)]) -> Vec<ShipmentCount> {
        rows.iter()
            .map(|&(provider, tier, status, active, count)| ShipmentCount {
                provider: provider.to_owned(),
                tier: tier.to_owned(),
                status: status.to_owned(),
                active,
                count,
            })
            .collect()
    }

    fn overview() -> Overview {
        Overview {
            shipments: shipments(&[
                ("kd", "high", "in_transit", true, 3),
                ("taobao", "high", "delivered", false, 5),
                ("taobao", "normal", "in_transit", true, 2),
            ]),
            due_now: 1,
            lag_seconds: 4,
            polls_last_hour: [
                ("taobao", "ok", 7),
                ("kd", "ok", 2),
                ("taobao", "transient", 1),
            ]
            .iter()
            .map(|&(provider, result, count)| PollCount {
                provider: provider.to_owned(),
                result: result.to_owned(),
                count,
            })
            .collect(),
            notifications: [("sms", "pending", 2), ("webhook", "pending", 1)]
                .iter()
                .map(|&(channel, state, count)| NotificationCount {
                    channel: channel.to_owned(),
                    state: state.to_owned(),
                    count,
                })
                .collect(),
            providers: vec![ProviderState {
                provider: "kd".to_owned(),
                banned_until: Some(2_000),
                ban_reason: Some("rate limited".to_owned()),
                paused_until: None,
                pause_reason: None,
            }],
            channels: vec![ChannelState {
                channel: "webhook".to_owned(),
                paused_until: 3_000,
                reason: "gone".to_owned(),
            }],
            unmapped: (0..25)
                .map(|i| UnmappedRow {
                    provider: "taobao".to_owned(),
                    value: format!("CODE{i}"),
                    count: 1,
                    first_seen: 0,
                    last_seen: 0,
                })
                .collect(),
            daemons: Vec::new(),
        }
    }

    #[test]
    fn shipments_are_summed_in_all_and_by_each_key() {
        let o = overview();
        assert_eq!((o.total(), o.still_polled()), (10, 5));
        assert_eq!(
            o.shipments_by(ShipmentKey::Status),
            [("delivered", 5), ("in_transit", 5)]
        );
        assert_eq!(
            o.shipments_by(ShipmentKey::Tier),
            [("high", 8), ("normal", 2)]
        );
        assert_eq!(
            o.shipments_by(ShipmentKey::Provider),
            [("kd", 3), ("taobao", 7)]
        );
    }

    #[test]
    fn polls_are_grouped_by_provider_with_their_results_in_order() {
        let o = overview();
        let grouped: Vec<(&str, Vec<(&str, i64)>)> = o
            .polls_by_provider()
            .into_iter()
            .map(|(p, counts)| {
                (
                    p,
                    counts
                        .iter()
                        .map(|c| (c.result.as_str(), c.count))
                        .collect(),
                )
            })
            .collect();
        assert_eq!(
            grouped,
            [
                ("kd", vec![("ok", 2)]),
                ("taobao", vec![("ok", 7), ("transient", 1)])
            ]
        );
    }

    #[test]
    fn each_configured_provider_and_channel_says_where_it_stands() {
        let config = Config::parse(
            r#"
[providers.kd]
kind = "simulator"
rate_limit = "30/h"
[providers.sim]
kind = "simulator"
[channels.webhook]
url = "https://shop.example/hook"
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
"#,
            None,
            Path::new("/nonexistent"),
        )
        .expect("a valid config");
        let o = overview();
        let providers = o.provider_lines(&config);
        assert_eq!(
            providers,
            [
                ProviderLine {
                    name: "kd",
                    kind: "simulator",
                    condition: ProviderCondition::Banned,
                    calls_per_minute: Some(0.5),
                },
                ProviderLine {
                    name: "sim",
                    kind: "simulator",
                    condition: ProviderCondition::Ok,
                    calls_per_minute: None,
                },
            ]
        );
        let channels = o.channel_lines(&config);
        assert_eq!(channels.len(), 1);
        assert_eq!(channels[0].kind, ChannelKind::Webhook);
        assert_eq!(channels[0].stopped.map(|s| s.reason.as_str()), Some("gone"));
    }

    #[test]
    fn a_provider_stopped_by_us_reads_stopped_even_when_banned_too() {
        let mut o = overview();
        o.providers[0].paused_until = Some(5_000);
        let config = Config::parse(
            "[providers.kd]\nkind = \"simulator\"\n",
            None,
            Path::new("/nonexistent"),
        )
        .expect("a valid config");
        assert_eq!(o.provider_lines(&config)[0].condition.as_str(), "STOPPED");
    }

    #[test]
    fn the_summary_shows_the_first_unmapped_values_only() {
        let o = overview();
        assert_eq!(o.unmapped_shown().len(), UNMAPPED_SHOWN);
        assert_eq!(o.unmapped_shown()[0].value, "CODE0");
    }
}
