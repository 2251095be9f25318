//! [`SyncStore`]: the sync agent's handle on the store. Writes go through the writer
//! thread, each in one transaction; reads use a read connection of their own.

use std::path::{Path, PathBuf};

use branchline_sync::wire;

use super::apply::{self, Applied};
use super::state::{self, AckApplied, Backlog, SyncState};
use crate::error::{Error, Result};
use crate::store::{Store, StoreReader, StoreWriter};

/// The sync agent's handle on the store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SyncStore {
    writer: StoreWriter,
    db_path: PathBuf,
}

/// One bounded page of the outbox, as wire records, with the backlog around it.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxPage {
    /// Up to the asked number of records after the asked seq, in seq order.
    pub records: Vec<wire::UpRecord>,
    /// The whole outbox.
    pub backlog: Backlog,
}

impl SyncStore {
    /// A handle writing through `writer` to the store at `db_path`.
    pub fn new(writer: StoreWriter, db_path: PathBuf) -> SyncStore {
        SyncStore { writer, db_path }
    }

    /// The database file.
    pub fn db_path(&self) -> &Path {
        &self.db_path
    }

    /// The store writer (for its outbox watch).
    pub fn writer(&self) -> &StoreWriter {
        &self.writer
    }

    /// A new read connection.
    pub fn reader(&self) -> Result<StoreReader> {
        Store::reader(&self.db_path)
    }

    /// The persisted sync state.
    pub fn state(&self) -> Result<SyncState> {
        let reader = self.reader()?;
        state::load(reader.connection(), reader.path())
    }

    /// Up to `limit` outbox rows after `after_seq` and the backlog, read in one read
    /// transaction (so the count matches the rows). Memory is bounded by `limit`, never
    /// by the backlog.
    pub fn outbox_page(&self, after_seq: i64, limit: usize) -> Result<OutboxPage> {
        self.outbox_page_with(&self.reader()?, after_seq, limit)
    }

    /// [`SyncStore::outbox_page`] on an open read connection: the uploader keeps one
    /// for every page of a drain (opening a connection and checking its schema for
    /// every batch is work a catch-up does thousands of times), and the outbox query
    /// stays prepared in that connection's statement cache.
    pub fn outbox_page_with(
        &self,
        reader: &StoreReader,
        after_seq: i64,
        limit: usize,
    ) -> Result<OutboxPage> {
        let tx = reader
            .connection()
            .unchecked_transaction()
            .map_err(|source| Error::Sqlite {
                path: self.db_path.clone(),
                op: "begin outbox read",
                source,
            })?;
        let rows = reader.outbox(after_seq, limit)?;
        let backlog = state::backlog(&tx, reader.path())?;
        drop(tx);
        Ok(OutboxPage {
            records: state::to_records(reader.path(), rows)?,
            backlog,
        })
    }

    /// Applies a page or snapshot and its cursor in one transaction (and pokes the
    /// blacklist's, the call center's and the dial routes' listeners when it changed
    /// them). A refused one changes nothing and its error is recorded for the status (in a transaction of
    /// its own) before it is returned.
    pub async fn apply_down(&self, response: wire::DownResponse, now_ms: i64) -> Result<Applied> {
        let result = self
            .writer
            .transact("apply change feed", move |tx, path| {
                apply::apply_down(tx, path, &response, now_ms)
            })
            .await;
        match &result {
            Ok(applied) => {
                if applied.blacklist_changed {
                    self.writer.notify_blacklist_changed();
                }
                if applied.acd_changed {
                    self.writer.notify_acd_changed();
                }
                if applied.dial_routes_changed {
                    self.writer.notify_dial_routes_changed();
                }
            }
            Err(e) => self.record_error(&e.to_string(), now_ms).await,
        }
        result
    }

    /// Carries out the uploader core's decisions on an acknowledgement in one
    /// transaction ([`state::commit_ack`]): conflicts resolved and audited, the
    /// outbox trimmed through `trim_through`, HQ's file policy stored.
    pub async fn commit_ack(
        &self,
        conflicts: Vec<wire::Conflict>,
        trim_through: Option<i64>,
        file_policy: Option<wire::FilePolicy>,
        now_ms: i64,
    ) -> Result<AckApplied> {
        self.writer
            .transact("commit upload ack", move |tx, path| {
                state::commit_ack(
                    tx,
                    path,
                    &conflicts,
                    trim_through,
                    file_policy.as_ref(),
                    now_ms,
                )
            })
            .await
    }

    /// Records an error for the status; a failure to record it is only logged.
    pub async fn record_error(&self, message: &str, now_ms: i64) {
        let message = message.to_owned();
        let result = self
            .writer
            .transact("record sync error", move |tx, path| {
                state::record_error(tx, path, &message, now_ms)
            })
            .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "sync error not recorded");
        }
    }

    /// Records the WAN monitor's states; a failure is only logged.
    pub async fn record_wan(&self, wan: serde_json::Value) {
        let result = self
            .writer
            .transact("record wan state", move |tx, path| {
                state::record_wan(tx, path, &wan)
            })
            .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "wan state not recorded");
        }
    }
}
