//! The state one fake instance shares between its handle and its server task.

use std::sync::{Mutex, MutexGuard};

use tokio::sync::watch;

use crate::faults::Faults;
use crate::log::RequestLog;
use crate::oauth::OAuth;
use crate::quota::Quota;
use crate::store::Store;
use crate::switches::Settings;

/// Everything mutable, behind one lock (never held across an `.await`).
#[derive(Debug, Default)]
pub(crate) struct State {
    pub store: Store,
    pub oauth: OAuth,
    pub faults: Faults,
    pub quota: Quota,
    pub log: RequestLog,
    pub settings: Settings,
}

/// State plus the shutdown signal.
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
    pub shutdown: watch::Receiver<bool>,
    /// TCP connections accepted so far.
    pub connections: std::sync::atomic::AtomicU64,
}

impl Shared {
    pub(crate) fn new(shutdown: watch::Receiver<bool>) -> Self {
        Shared {
            state: Mutex::new(State::default()),
            shutdown,
            connections: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Locks the state (a poisoned lock is recovered: the state stays usable after a panic
    /// in a test closure).
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Resolves when the fake shuts down.
    pub(crate) async fn shut_down(&self) {
        let mut rx = self.shutdown.clone();
        let _ = rx.wait_for(|v| *v).await;
    }
}
