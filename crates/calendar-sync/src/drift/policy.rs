//! What a deployment does about drift: the three policies and their names.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// What a drift check does about an event edited or deleted by hand in
/// Google ([`DrainerConfig::drift_policy`](crate::DrainerConfig::drift_policy),
/// the worker's `CALENDAR_SYNC_DRIFT_POLICY`). Every policy also records the
/// drift, with what it did, in `calendar_sync_drift`.
///
/// ```
/// use calendar_sync::DriftPolicy;
///
/// let policy: DriftPolicy = "report".parse()?;
/// assert_eq!(policy, DriftPolicy::Report);
/// assert_eq!(DriftPolicy::default().to_string(), "repair");
/// assert!("heal".parse::<DriftPolicy>().is_err());
/// # Ok::<(), calendar_sync::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum DriftPolicy {
    /// Re-assert our content through the queue: one UPSERT_EVENT per drift
    /// (a deleted event comes back under a fresh id). The default: the
    /// application is the source of truth, and turning the check on is the
    /// opt-in to heal calendars; `report` shows first what it would repair.
    #[default]
    Repair,
    /// Only record it (and count it in `calendar_sync_drift_detected_total`).
    Report,
    /// Accept the user's version: an edit becomes the last synced content
    /// (binding content, hash and etag), so an upsert of the source writes
    /// only when its content differs from the user's; a deletion marks the
    /// binding CANCELLED, so the source's next upsert creates a new event.
    Adopt,
}

impl DriftPolicy {
    /// The name used in configuration (`CALENDAR_SYNC_DRIFT_POLICY`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Repair => "repair",
            Self::Report => "report",
            Self::Adopt => "adopt",
        }
    }
}

impl fmt::Display for DriftPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DriftPolicy {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "repair" => Ok(Self::Repair),
            "report" => Ok(Self::Report),
            "adopt" => Ok(Self::Adopt),
            other => Err(Error::Config(format!(
                "drift policy {other:?} is not one of repair, report, adopt"
            ))),
        }
    }
}
