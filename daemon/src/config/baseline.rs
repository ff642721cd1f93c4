//! `[baseline]`: the behaviour baseline per workload (what it runs, from which parents,
//! where it writes). The keys, their defaults and what a value must be; learning and
//! judging are `baseline/`'s.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `[baseline]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BaselineConfig {
    /// Learn baselines and alert on what a workload never did once they are monitoring.
    pub enabled: bool,
    /// A baseline learns until a container of its workload ran this long (seconds)...
    pub learn_seconds: u64,
    /// ...and until no new entry appeared for this long.
    pub quiet_seconds: u64,
    /// The same (baseline, kind, entry) alerts once per this long; repeats are counted
    /// into the next alert.
    pub cooldown_seconds: u64,
    /// A baseline whose workload has not been seen for this long is deleted.
    pub retain_hours: u64,
    /// Baselines kept; past it the one seen longest ago goes.
    pub max_baselines: usize,
    /// Entries (execs and write directories together) one baseline keeps; past it nothing
    /// new is learned and the baseline is marked partial.
    pub max_entries: usize,
    /// A directory with more learned children than this is learned as one pattern
    /// (`/var/cache/app/*`): dynamic names (sessions, uploads) are not news.
    pub collapse_children: usize,
}

impl Default for BaselineConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            learn_seconds: 1800,
            quiet_seconds: 600,
            cooldown_seconds: 3600,
            retain_hours: 24 * 7,
            max_baselines: 4096,
            max_entries: 1024,
            collapse_children: 8,
        }
    }
}

impl BaselineConfig {
    /// `cooldown_seconds` as a duration.
    pub fn cooldown(&self) -> Duration {
        Duration::from_secs(self.cooldown_seconds)
    }

    /// `retain_hours` as a duration.
    pub fn retain(&self) -> Duration {
        Duration::from_secs(self.retain_hours * 3600)
    }

    pub(super) fn validate(&self) -> Result<(), (String, String)> {
        let bad = |key: &str, problem: String| Err((format!("baseline.{key}"), problem));
        if self.max_baselines == 0 {
            return bad("max_baselines", "must be at least 1".into());
        }
        if self.max_entries == 0 || self.max_entries > 1_000_000 {
            return bad(
                "max_entries",
                format!("must be between 1 and 1000000, not {}", self.max_entries),
            );
        }
        if self.collapse_children < 2 {
            return bad(
                "collapse_children",
                format!("must be at least 2, not {}", self.collapse_children),
            );
        }
        if self.retain_hours == 0 {
            return bad("retain_hours", "must be at least 1".into());
        }
        Ok(())
    }
}
