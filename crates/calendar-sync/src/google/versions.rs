//! Connection versions, read before every Google call so that a reconnect
//! committed before the call is always seen (issue 13 §3).
//!
//! One read at a time per process, as before, but each read serves every
//! caller that asked before it started: it fetches the versions of all the
//! workspaces asked for meanwhile by primary key (`= ANY`). A pooled session
//! per call in flight would grow every pool to its maximum; one read per call,
//! one after another, made every call wait for the others' reads (a single
//! worker at 100 ms a call used 88 % of the project quota instead of 95 %).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use crate::db::Database;
use crate::store;

/// How many rounds a version stays in `read` for callers that asked before
/// the round and come to look late.
const KEPT_ROUNDS: u64 = 64;

#[derive(Default)]
struct Rounds {
    /// Workspaces asked for since the last round started.
    wanted: HashSet<String>,
    /// Rounds started so far.
    started: u64,
    /// Versions by workspace, with the round that read them.
    read: HashMap<String, (u64, i64)>,
}

/// Reads connection versions in batched rounds, one round at a time.
pub(crate) struct VersionReader {
    rounds: Mutex<Rounds>,
    turn: tokio::sync::Mutex<()>,
}

impl VersionReader {
    pub(crate) fn new() -> Self {
        Self {
            rounds: Mutex::new(Rounds::default()),
            turn: tokio::sync::Mutex::new(()),
        }
    }

    fn rounds(&self) -> std::sync::MutexGuard<'_, Rounds> {
        self.rounds.lock().expect("version rounds")
    }

    /// The workspace's connection version (0 without a connection), from a
    /// read that started after this call.
    pub(crate) async fn version(
        &self,
        db: &Database,
        workspace_id: &str,
    ) -> Result<i64, crate::Error> {
        loop {
            let asked_at = {
                let mut rounds = self.rounds();
                rounds.wanted.insert(workspace_id.to_owned());
                rounds.started
            };
            let _turn = self.turn.lock().await;
            if let Some(version) = self.served(workspace_id, asked_at) {
                return Ok(version);
            }
            // This caller reads, for itself and everyone waiting.
            let (round, wanted) = {
                let mut rounds = self.rounds();
                rounds.started += 1;
                (rounds.started, std::mem::take(&mut rounds.wanted))
            };
            let wanted: Vec<String> = wanted.into_iter().collect();
            let client = db.client().await?;
            let statement = client.prepare_cached(store::CONNECTION_VERSIONS).await?;
            let rows = client.query(&statement, &[&wanted]).await?;
            let found: HashMap<String, i64> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
            let mut rounds = self.rounds();
            for workspace in wanted {
                let version = found.get(&workspace).copied().unwrap_or(0);
                rounds.read.insert(workspace, (round, version));
            }
            rounds.read.retain(|_, (r, _)| *r + KEPT_ROUNDS > round);
            drop(rounds);
            if let Some(version) = self.served(workspace_id, asked_at) {
                return Ok(version);
            }
        }
    }

    /// A version read by a round that started after `asked_at`.
    fn served(&self, workspace_id: &str, asked_at: u64) -> Option<i64> {
        let rounds = self.rounds();
        match rounds.read.get(workspace_id) {
            Some(&(round, version)) if round > asked_at => Some(version),
            _ => None,
        }
    }
}
