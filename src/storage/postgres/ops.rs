//! PostgreSQL: the operations of `storage/ops.rs`.

#![allow(unused_variables, unused_mut)]

use super::*;

impl Pg {
    pub async fn ban_provider(
        &self,
        provider: &str,
        until: Millis,
        reason: &str,
        now: Millis,
    ) -> Result<()> {
        Err(not_yet("ban_provider"))
    }

    pub async fn cap_provider_bans(&self, latest: Millis) -> Result<()> {
        Err(not_yet("cap_provider_bans"))
    }

    pub async fn provider_bans(&self, now: Millis) -> Result<Vec<(String, Millis)>> {
        Err(not_yet("provider_bans"))
    }

    pub async fn pause_provider(
        &self,
        provider: &str,
        until: Millis,
        reason: &str,
        now: Millis,
    ) -> Result<()> {
        Err(not_yet("pause_provider"))
    }

    pub async fn clear_provider_pauses(&self) -> Result<()> {
        Err(not_yet("clear_provider_pauses"))
    }

    pub async fn provider_states(&self, now: Millis) -> Result<Vec<ProviderState>> {
        Err(not_yet("provider_states"))
    }

    pub async fn pause_channel(
        &self,
        channel: &str,
        until: Millis,
        reason: &str,
        now: Millis,
    ) -> Result<()> {
        Err(not_yet("pause_channel"))
    }

    pub async fn resume_channel(&self, channel: &str, reason: &str, at: Millis) -> Result<u64> {
        Err(not_yet("resume_channel"))
    }

    pub async fn clear_channel_pauses(&self) -> Result<()> {
        Err(not_yet("clear_channel_pauses"))
    }

    pub async fn channel_states(&self, now: Millis) -> Result<Vec<ChannelState>> {
        Err(not_yet("channel_states"))
    }

    pub async fn stats(&self, now: Millis) -> Result<Stats> {
        Err(not_yet("stats"))
    }

    pub async fn ping(&self) -> Result<()> {
        Err(not_yet("ping"))
    }

    pub async fn gauge_counts(&self, now: Millis) -> Result<GaugeCounts> {
        Err(not_yet("gauge_counts"))
    }

    pub async fn counts(&self) -> Result<Counts> {
        Err(not_yet("counts"))
    }
}
