//! The value types a config writes as text, durations (`30s`, `2m`) and call quotas
//! (`500/min`), parsed once so the rest of the program holds a `Duration`, never a string.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

/// A duration written as `30s`, `2m`, `1h`, `30d` or `500ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

/// Text that is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a duration ({reason}); write it like 30s, 2m, 1h or 30d")]
pub struct BadDuration {
    text: String,
    reason: String,
}

impl FromStr for HumanDuration {
    type Err = BadDuration;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(s.trim())
            .map(HumanDuration)
            .map_err(|e| BadDuration {
                text: s.to_owned(),
                reason: e.to_string(),
            })
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A call quota such as `500/min`: at most `calls` calls per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub calls: u32,
    pub per: Duration,
}

impl RateLimit {
    /// The spacing between two calls that keeps to the quota.
    pub fn interval(&self) -> Duration {
        self.per / self.calls
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.calls, humantime::format_duration(self.per))
    }
}

/// Text that is not a call quota.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadRateLimit {
    #[error("rate_limit {0:?} is not a quota; write it like 500/min, 10/s or 1000/1h")]
    NotAQuota(String),
    #[error("rate_limit {0:?} allows no calls at all; give at least 1")]
    NoCalls(String),
    #[error(
        "rate_limit {0:?} counts its calls over more than 366d; give a quota per second, minute, hour or day"
    )]
    TooLong(String),
}

impl FromStr for RateLimit {
    type Err = BadRateLimit;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hint = || BadRateLimit::NotAQuota(s.to_owned());
        let (calls, per) = s.split_once('/').ok_or_else(hint)?;
        let calls: u32 = calls.trim().parse().map_err(|_| hint())?;
        if calls == 0 {
            return Err(BadRateLimit::NoCalls(s.to_owned()));
        }
        let per = match per.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            "d" | "day" => Duration::from_secs(86_400),
            other => humantime::parse_duration(other).map_err(|_| hint())?,
        };
        if per.is_zero() {
            return Err(hint());
        }
        // Spacings are computed from it (`per / calls`, a little wider for headroom): a period of
        // centuries would overflow them.
        if per > POLL_HORIZON {
            return Err(BadRateLimit::TooLong(s.to_owned()));
        }
        Ok(RateLimit { calls, per })
    }
}

impl<'de> Deserialize<'de> for RateLimit {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// How far ahead a shipment's next poll may be. The daemon never schedules one further (the
/// config refuses longer intervals), so a row beyond it was written by hand with a wrong time.
pub const POLL_HORIZON: Duration = Duration::from_secs(366 * 86_400);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_quotas_parse() {
        assert_eq!(
            "30s".parse::<HumanDuration>().unwrap().0,
            Duration::from_secs(30)
        );
        assert_eq!(
            "30d".parse::<HumanDuration>().unwrap().0,
            Duration::from_secs(30 * 86_400)
        );
        assert!("soon".parse::<HumanDuration>().is_err());
        let q: RateLimit = "500/min".parse().unwrap();
        assert_eq!((q.calls, q.per), (500, Duration::from_secs(60)));
        assert_eq!(q.interval(), Duration::from_millis(120));
        // As the reload's log line shows a changed quota.
        assert_eq!(q.to_string(), "500/1m");
        let q: RateLimit = "10/s".parse().unwrap();
        assert_eq!(q.interval(), Duration::from_millis(100));
        let q: RateLimit = "100/5m".parse().unwrap();
        assert_eq!(q.per, Duration::from_secs(300));
        assert_eq!(
            "0/min".parse::<RateLimit>().unwrap_err().to_string(),
            "rate_limit \"0/min\" allows no calls at all; give at least 1"
        );
        assert_eq!(
            "fast".parse::<RateLimit>().unwrap_err(),
            BadRateLimit::NotAQuota("fast".to_owned())
        );
        // A daemon given this one panicked at start, computing the bucket's spacing.
        assert_eq!(
            "1/18446744073709551615s".parse::<RateLimit>().unwrap_err(),
            BadRateLimit::TooLong("1/18446744073709551615s".to_owned())
        );
        assert_eq!("1/366d".parse::<RateLimit>().unwrap().per, POLL_HORIZON);
        assert_eq!(
            "soon".parse::<HumanDuration>().unwrap_err().to_string(),
            "\"soon\" is not a duration (expected number at 0); write it like 30s, 2m, 1h or 30d"
        );
    }
}
