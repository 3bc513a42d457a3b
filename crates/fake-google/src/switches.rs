//! Behaviour switches: where Google's behaviour is UNCONFIRMED or varies, the fake lets a test
//! choose. Every switch has a documented default.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::errors::ErrorShape;
use crate::quota::QuotaConfig;

/// What PUT (update) and PATCH do to an event whose status is `cancelled` (deleted by the API or
/// by a human in the Google UI). Google's behaviour is UNCONFIRMED (fact sheet §2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CancelledWritePolicy {
    /// Default. The write is applied and the event comes back to life: status becomes
    /// `confirmed` (or `tentative` if the body asks for it), whatever the body says.
    #[default]
    Restore,
    /// The write is applied like on a live event and status follows the resulting resource:
    /// PUT sets the body's `status` (absent = `confirmed`); PATCH keeps `cancelled` unless the
    /// body sends a `status`.
    FollowBody,
    /// The fields are updated but the event stays `cancelled`.
    KeepCancelled,
    /// 403 `forbidden` "Forbidden"; nothing changes.
    Forbidden,
    /// 404 `notFound`; nothing changes.
    NotFound,
}

/// How several `privateExtendedProperty` (or several `sharedExtendedProperty`) constraints on
/// one list call combine. The discovery document says "all", the extended-properties guide says
/// "OR'ed" (fact sheet §1). Private vs shared constraints are always AND'ed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExtPropMatch {
    /// Default (discovery document): an event must match every constraint.
    #[default]
    All,
    /// Extended-properties guide: an event must match at least one constraint of each kind.
    Any,
}

/// How events.list cuts pages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PagingMode {
    /// Default: every page but the last holds exactly `maxResults` items.
    #[default]
    Exact,
    /// Pages are short or empty while `nextPageToken` is still returned, cycling (per page
    /// number) through 0, 1, max(1, maxResults/2) and maxResults items; the last non-empty
    /// page still carries a `nextPageToken`, which leads to an empty final page. Deterministic.
    Erratic,
}

/// All switches and timings, as one value (see [`crate::FakeGoogle::settings`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Default [`CancelledWritePolicy::Restore`].
    pub cancelled_write: CancelledWritePolicy,
    /// Default [`ExtPropMatch::All`].
    pub ext_prop_match: ExtPropMatch,
    /// Default [`PagingMode::Exact`].
    pub paging: PagingMode,
    /// Default [`ErrorShape::Legacy`]; a fault may override it per error.
    pub error_shape: ErrorShape,
    /// Status of a successful delete (empty body). Default 204.
    pub delete_status: u16,
    /// Lifetime of issued access tokens, reported as `expires_in`. Default 3599 s.
    pub access_token_lifetime: Duration,
    /// Delay added before answering any request. Default zero.
    pub latency: Duration,
    /// Per HTTP method (upper case, e.g. `"POST"`) delay that replaces `latency`.
    pub method_latency: HashMap<String, Duration>,
    /// Quota enforcement; `None` (default) = no quota.
    pub quota: Option<QuotaConfig>,
    /// Most items an events.list page holds, whatever `maxResults` asks (Google may answer
    /// fewer than `maxResults`): a client that asks for 2,500 still pages. Default `None`.
    pub max_page_size: Option<usize>,
    /// Whether `POST /batch/calendar/v3` exists. Default `true`; `false` answers it 404 with
    /// an HTML body, as Google answers an unknown path (a retired batch endpoint).
    pub batch_endpoint: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            cancelled_write: CancelledWritePolicy::default(),
            ext_prop_match: ExtPropMatch::default(),
            paging: PagingMode::default(),
            error_shape: ErrorShape::default(),
            delete_status: 204,
            access_token_lifetime: Duration::from_secs(3599),
            latency: Duration::ZERO,
            method_latency: HashMap::new(),
            quota: None,
            max_page_size: None,
            batch_endpoint: true,
        }
    }
}

impl Settings {
    /// The delay for a request with this HTTP method.
    pub fn latency_for(&self, method: &str) -> Duration {
        self.method_latency
            .get(&method.to_ascii_uppercase())
            .copied()
            .unwrap_or(self.latency)
    }
}
