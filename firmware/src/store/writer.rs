//! The writer thread: the only connection that writes, fed over a channel.
//!
//! # Group commit
//!
//! CDRs, the journal of live calls and port states ([`Write`]) are small and come
//! at the call rate; each commit costs an fsync (`synchronous=FULL`). So the thread
//! takes every such request already queued (up to [`MAX_GROUP`]) and applies them in
//! ONE transaction, one commit, one fsync, and only then answers each request
//! ([`Writer::apply_group`]). The semantics, unit-tested in `store::tests`:
//!
//! - Each write runs inside its own savepoint. A write that fails (a duplicate CDR, a
//!   NaN in a quality field, an unknown port) is rolled back alone and gets its own
//!   error; the others of the group commit and get their results. Nothing is applied
//!   twice: a write is either in the one commit or rolled back.
//! - A reply goes out only after the commit returned: an acknowledged CDR is on disk,
//!   exactly as with one transaction per CDR.
//! - When the group's transaction as a whole fails (SQLite rolled it back itself: a
//!   full disk, an I/O error, a trigger's `RAISE(ROLLBACK)`; or `COMMIT` failed),
//!   nothing of the group was written, and every write of the group is applied again
//!   alone, in order, each in its own transaction, as before group commit: one bad
//!   write never costs the others, and each gets the result of its own attempt.
//! - Requests are handled in the order they were queued: a group holds only
//!   consecutive [`Write`]s; any other request (a [`StoreWriter::transact`] job, the
//!   board, a flush) ends the group and runs after its commit. `transact` jobs are not
//!   grouped: their closures run once (`FnOnce`) and so could not be retried alone.

use std::path::Path;
use std::sync::mpsc;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::{oneshot, watch};

use super::{enum_text, sql, Clock, ExtensionRow, PortKind, PortKindStr, Store};
use crate::cdr::{Cdr, JournalUpdate, LiveCall};
use crate::error::{Error, FieldProblem, Result};

/// The most [`Write`]s one group commit takes: bounds the time the first of them
/// waits for its reply (a group of 256 CDRs commits in a few milliseconds).
pub(super) const MAX_GROUP: usize = 256;

/// A request to the writer thread; each carries the sender of its reply.
enum Request {
    /// A write that may share its commit with others (see the module docs).
    Write { write: Write, reply: WriteReply },
    ReplaceBoard {
        ports: Vec<(u8, PortKindStr)>,
        extensions: Vec<ExtensionRow>,
        reply: oneshot::Sender<Result<()>>,
    },
    /// Replies once every request queued before it has been handled.
    Flush { reply: oneshot::Sender<()> },
    /// Runs a job in one immediate transaction (see [`StoreWriter::transact`]); the job
    /// sends its own reply.
    Transact(TransactJob),
}

/// A write the writer thread groups with others into one commit.
#[derive(Debug)]
pub(super) enum Write {
    /// A CDR with its outbox row (see [`StoreWriter::insert_cdr`]).
    /// Boxed: a CDR is far larger than the other writes.
    Cdr(Box<Cdr>),
    /// The journal of live calls.
    Journal(JournalUpdate),
    /// A port's state.
    PortState { port: u8, state: &'static str },
}

/// Where a [`Write`]'s result goes: a CDR's outbox seq, or nothing.
enum WriteReply {
    Seq(oneshot::Sender<Result<i64>>),
    Done(oneshot::Sender<Result<()>>),
}

impl WriteReply {
    fn send(self, result: Result<Option<i64>>) {
        match self {
            WriteReply::Seq(reply) => {
                let _ = reply.send(result.and_then(|seq| seq.ok_or(Error::StoreWriterGone)));
            }
            WriteReply::Done(reply) => {
                let _ = reply.send(result.map(drop));
            }
        }
    }
}

/// A job for [`Request::Transact`]: gets the write connection, the database path and
/// the outbox watch (to publish new outbox rows after its commit, before it replies).
type TransactJob = Box<dyn FnOnce(&mut Connection, &Path, &watch::Sender<i64>) + Send>;

/// Handle to the store's writer thread. Cheap to clone; every method returns after the
/// write committed (durably: see the [module docs](super)).
///
/// Dropping a method's future after it started does not cancel the write, it only
/// discards the reply. When the last handle is dropped the thread finishes the queued
/// writes, checkpoints the WAL and exits.
#[derive(Debug, Clone)]
pub struct StoreWriter {
    /// Requests to the writer thread; unbounded, see the module docs.
    tx: mpsc::Sender<Request>,
    /// The highest outbox seq committed so far, published by the writer thread after
    /// each commit (the sync agent's wake-up; see [`StoreWriter::outbox_watch`]).
    outbox_seq: watch::Receiver<i64>,
    /// Poked after a commit that changed the blacklist (sync apply, the local API):
    /// the daemon reloads call control's list. A `Notify` keeps one permit, so a
    /// change made while the daemon is busy is not lost and bursts coalesce.
    blacklist_changed: std::sync::Arc<tokio::sync::Notify>,
    /// Poked after a change to the call center's queues or agents (users' agent IDs,
    /// skills); the daemon reconfigures the ACD. One permit, like `blacklist_changed`.
    acd_changed: std::sync::Arc<tokio::sync::Notify>,
    /// Poked after a commit that changed HQ's dial routes (sync apply); the daemon
    /// reloads call control's outside-line routes. One permit, like
    /// `blacklist_changed`.
    dial_routes_changed: std::sync::Arc<tokio::sync::Notify>,
}

/// The highest outbox seq ever assigned (0: none), from SQLite's AUTOINCREMENT
/// bookkeeping, so trimmed rows still count.
fn last_outbox_seq(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row(
        "SELECT seq FROM sqlite_sequence WHERE name = 'outbox'",
        [],
        |r| r.get(0),
    )
    .optional()
    .map(Option::unwrap_or_default)
}

/// After a commit that may have written outbox rows, and before its reply goes out:
/// publishes the highest outbox seq, waking the sync agent when it moved. One indexed
/// lookup per write.
fn publish_outbox_seq(conn: &Connection, path: &Path, outbox_seq: &watch::Sender<i64>) {
    match last_outbox_seq(conn) {
        Ok(seq) => {
            outbox_seq.send_if_modified(|current| {
                let newer = seq > *current;
                if newer {
                    *current = seq;
                }
                newer
            });
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the outbox seq")
        }
    }
}

/// The handle and the thread body, for the caller to spawn.
pub(super) fn prepare(store: Store) -> (StoreWriter, impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    let Store { path, conn, clock } = store;
    let first = last_outbox_seq(&conn).unwrap_or_else(|e| {
        tracing::warn!(path = %path.display(), error = %e, "cannot read the outbox seq");
        0
    });
    let (seq_tx, outbox_seq) = watch::channel(first);
    let writer = StoreWriter {
        tx,
        outbox_seq,
        blacklist_changed: std::sync::Arc::default(),
        acd_changed: std::sync::Arc::default(),
        dial_routes_changed: std::sync::Arc::default(),
    };
    (writer, move || run(conn, &path, clock, &rx, &seq_tx))
}

impl StoreWriter {
    /// Queues a request now (before the returned future is first polled), so requests
    /// queued one after another are handled in that order; the future gives the reply.
    fn enqueue<T: Send + 'static>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Request,
    ) -> impl std::future::Future<Output = Result<T>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let sent = self
            .tx
            .send(make(reply))
            .map_err(|_| Error::StoreWriterGone);
        async move {
            sent?;
            answer.await.map_err(|_| Error::StoreWriterGone)
        }
    }

    async fn request<T: Send + 'static>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Request,
    ) -> Result<T> {
        self.enqueue(make).await
    }

    /// Stores a CDR and its outbox row (kind `"cdr"`, key = call id, payload = the CDR as
    /// JSON) in one transaction and returns the outbox seq. A call id already stored is
    /// [`Error::DuplicateCdr`] and writes nothing.
    pub async fn insert_cdr(&self, cdr: Cdr) -> Result<i64> {
        self.queue_cdr(cdr).await
    }

    /// [`StoreWriter::insert_cdr`], queued when this returns: requests queued one after
    /// another commit in that order, without waiting for each other (the daemon's
    /// store task pipelines its writes this way). The future gives the outbox seq once
    /// the CDR committed; dropping it does not cancel the write.
    pub fn queue_cdr(
        &self,
        cdr: Cdr,
    ) -> impl std::future::Future<Output = Result<i64>> + Send + 'static {
        let answer = self.enqueue(move |reply| Request::Write {
            write: Write::Cdr(Box::new(cdr)),
            reply: WriteReply::Seq(reply),
        });
        async move { answer.await? }
    }

    /// Makes the port and extension tables match the board and the config, in one
    /// transaction: upserts `ports` (kind `"fxs"` or `"fxo"`; a known port keeps its
    /// state), deletes extensions not in `extensions` and upserts the rest. Ports missing
    /// from `ports` are kept.
    ///
    /// Extensions HQ masters (`revision > 0`, see [`crate::sync`]) follow the sync rule:
    /// the config decides only their port (an HQ extension the config does not list
    /// keeps its row with no port), HQ decides their name and call waiting. A kind other than `"fxs"`/`"fxo"` is
    /// [`Error::InvalidPortKind`], an extension on a port not in the `ports` table
    /// [`Error::ExtensionOnUnknownPort`]; either changes nothing.
    pub async fn replace_board(
        &self,
        ports: Vec<(u8, PortKindStr)>,
        extensions: Vec<ExtensionRow>,
    ) -> Result<()> {
        self.request(|reply| Request::ReplaceBoard {
            ports,
            extensions,
            reply,
        })
        .await?
    }

    /// Records the current state of a port (`"idle"`, `"off_hook"`, `"ringing"`, ...).
    /// A port that is not in the store is [`Error::UnknownPort`].
    pub async fn set_port_state(&self, port: u8, state: &'static str) -> Result<()> {
        self.queue_port_state(port, state).await
    }

    /// [`StoreWriter::set_port_state`], queued when this returns (see
    /// [`StoreWriter::queue_cdr`]).
    pub fn queue_port_state(
        &self,
        port: u8,
        state: &'static str,
    ) -> impl std::future::Future<Output = Result<()>> + Send + 'static {
        let answer = self.enqueue(move |reply| Request::Write {
            write: Write::PortState { port, state },
            reply: WriteReply::Done(reply),
        });
        async move { answer.await? }
    }

    /// Runs `job` on the writer thread inside one `BEGIN IMMEDIATE` transaction and
    /// returns its result: committed when `job` returns `Ok`, rolled back (nothing
    /// written) when it returns `Err`. `op` names the transaction in SQLite errors.
    ///
    /// This is how the accounts, roles and audit code write: a fact, its audit row and
    /// its outbox rows go into the same transaction. Keep jobs short (no password
    /// hashing inside: hash before calling); every other write waits behind them.
    pub(crate) async fn transact<T, F>(&self, op: &'static str, job: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>, &Path) -> Result<T> + Send + 'static,
    {
        self.queue_transact(op, job).await
    }

    /// [`StoreWriter::transact`], queued when this returns (see
    /// [`StoreWriter::queue_cdr`]).
    pub(crate) fn queue_transact<T, F>(
        &self,
        op: &'static str,
        job: F,
    ) -> impl std::future::Future<Output = Result<T>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>, &Path) -> Result<T> + Send + 'static,
    {
        let answer = self.enqueue(move |reply| {
            Request::Transact(Box::new(move |conn: &mut Connection, path: &Path, seq| {
                let result = run_transaction(conn, path, op, job);
                publish_outbox_seq(conn, path, seq);
                let _ = reply.send(result);
            }))
        });
        async move { answer.await? }
    }

    /// A receiver of the highest outbox seq committed so far. It changes (and wakes
    /// `changed()`) after every commit that wrote an outbox row, whoever wrote it; the
    /// sender is gone (`changed()` fails) once the writer thread has stopped.
    pub fn outbox_watch(&self) -> watch::Receiver<i64> {
        self.outbox_seq.clone()
    }

    /// Tells the blacklist's listener (the daemon) that the list changed; call it
    /// after the commit that changed it.
    pub fn notify_blacklist_changed(&self) {
        self.blacklist_changed.notify_one();
    }

    /// Tells the call center's listener (the daemon) that queues or agents changed;
    /// call it after the commit that changed them.
    pub fn notify_acd_changed(&self) {
        self.acd_changed.notify_one();
    }

    /// Tells the dial routes' listener (the daemon) that HQ's routes changed; call it
    /// after the commit that changed them.
    pub fn notify_dial_routes_changed(&self) {
        self.dial_routes_changed.notify_one();
    }

    /// What [`StoreWriter::notify_dial_routes_changed`] pokes, like
    /// [`StoreWriter::blacklist_changed`]. One listener.
    pub fn dial_routes_changed(&self) -> std::sync::Arc<tokio::sync::Notify> {
        std::sync::Arc::clone(&self.dial_routes_changed)
    }

    /// What [`StoreWriter::notify_acd_changed`] pokes, like
    /// [`StoreWriter::blacklist_changed`]. One listener.
    pub fn acd_changed(&self) -> std::sync::Arc<tokio::sync::Notify> {
        std::sync::Arc::clone(&self.acd_changed)
    }

    /// What [`StoreWriter::notify_blacklist_changed`] pokes: `notified().await`
    /// returns once per change (or burst of changes) since the last wake-up. One
    /// listener.
    pub fn blacklist_changed(&self) -> std::sync::Arc<tokio::sync::Notify> {
        std::sync::Arc::clone(&self.blacklist_changed)
    }

    /// Writes the journal of live calls (see `crate::call` `journal`): the rows of
    /// `update`'s calls, in one transaction.
    pub async fn journal_live_calls(&self, update: JournalUpdate) -> Result<()> {
        self.queue_journal(update).await
    }

    /// [`StoreWriter::journal_live_calls`], queued when this returns (see
    /// [`StoreWriter::queue_cdr`]).
    pub fn queue_journal(
        &self,
        update: JournalUpdate,
    ) -> impl std::future::Future<Output = Result<()>> + Send + 'static {
        let answer = self.enqueue(move |reply| Request::Write {
            write: Write::Journal(update),
            reply: WriteReply::Done(reply),
        });
        async move { answer.await? }
    }

    /// Waits until every write sent through this handle has committed, then drops it.
    /// The thread exits once every clone is gone; join its handle to wait for that.
    pub async fn close(self) {
        // An error means the thread is gone already: nothing left to wait for.
        let _ = self.request(|reply| Request::Flush { reply }).await;
    }
}

/// The writer thread's loop: handles requests until every sender is gone.
fn run(
    mut conn: Connection,
    path: &Path,
    clock: Clock,
    rx: &mpsc::Receiver<Request>,
    outbox_seq: &watch::Sender<i64>,
) {
    tracing::debug!(path = %path.display(), "store writer started");
    // Room for every statement of the CDR path (about twenty with the savepoints and
    // the service record) plus the rarer writes, so none is parsed again per CDR.
    conn.set_prepared_statement_cache_capacity(64);
    let mut writer = Writer {
        conn: &mut conn,
        path,
        clock,
    };
    // A request taken from the queue that ended a group, handled next.
    let mut next: Option<Request> = None;
    let mut writes = Vec::with_capacity(MAX_GROUP);
    let mut replies = Vec::with_capacity(MAX_GROUP);
    loop {
        let request = match next.take() {
            Some(request) => request,
            None => match rx.recv() {
                Ok(request) => request,
                Err(_) => break,
            },
        };
        match request {
            Request::Write { write, reply } => {
                writes.push(write);
                replies.push(reply);
                // Everything already queued behind it, up to the bound: one commit.
                while writes.len() < MAX_GROUP {
                    match rx.try_recv() {
                        Ok(Request::Write { write, reply }) => {
                            writes.push(write);
                            replies.push(reply);
                        }
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let results = writer.apply_group(&writes);
                publish_outbox_seq(writer.conn, path, outbox_seq);
                for ((write, reply), result) in writes.drain(..).zip(replies.drain(..)).zip(results)
                {
                    if let Write::Cdr(cdr) = &write {
                        match &result {
                            Ok(seq) => {
                                tracing::debug!(call_id = %cdr.call_id, ?seq, "cdr committed")
                            }
                            Err(e) => {
                                tracing::warn!(call_id = %cdr.call_id, error = %e, "cdr not stored")
                            }
                        }
                    }
                    reply.send(result);
                }
            }
            Request::ReplaceBoard {
                ports,
                extensions,
                reply,
            } => {
                let _ = reply.send(writer.replace_board(&ports, &extensions));
            }
            Request::Flush { reply } => {
                let _ = reply.send(());
            }
            Request::Transact(job) => job(writer.conn, path, outbox_seq),
        }
    }
    // Every handle is gone and the queue is drained: fold the WAL back into the database.
    match conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
        row.get::<_, i64>(0)
    }) {
        Ok(0) => tracing::debug!(path = %path.display(), "store writer stopped, WAL checkpointed"),
        Ok(_) => {
            tracing::warn!(path = %path.display(), "store writer stopped, WAL checkpoint was blocked by a reader")
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "store writer stopped, WAL checkpoint failed")
        }
    }
    if let Err((_, e)) = conn.close() {
        tracing::warn!(path = %path.display(), error = %e, "closing the store failed");
    }
}

/// Runs `job` in an immediate transaction on `conn`, committing only on `Ok`.
pub(crate) fn run_transaction<T>(
    conn: &mut Connection,
    path: &Path,
    op: &'static str,
    job: impl FnOnce(&rusqlite::Transaction<'_>, &Path) -> Result<T>,
) -> Result<T> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql(path, op))?;
    // On error `tx` is dropped, which rolls back.
    let value = job(&tx, path)?;
    tx.commit().map_err(sql(path, op))?;
    Ok(value)
}

/// The write connection with what its operations need.
struct Writer<'a> {
    conn: &'a mut Connection,
    path: &'a Path,
    clock: Clock,
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
    )
}

/// Rolls back the connection's open transaction, if any (SQLite may have rolled it
/// back itself already).
fn rollback(conn: &Connection) {
    if !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
}

/// Runs `f` inside a savepoint `name` of the open transaction: its writes are kept when
/// it returns `Ok` and undone alone when it returns `Err`. A failing savepoint
/// statement is the outer error.
fn in_savepoint<T>(
    conn: &Connection,
    path: &Path,
    name: &'static str,
    f: impl FnOnce(&Connection) -> Result<T>,
) -> Result<Result<T>> {
    // Savepoint statements are prepared once (cached): a CDR takes three.
    run_cached(conn, &format!("SAVEPOINT {name}")).map_err(sql(path, "savepoint"))?;
    let result = f(conn);
    if conn.is_autocommit() {
        // SQLite rolled back the whole transaction: the savepoint is gone with it.
        return Err(Error::StoreTransactionLost {
            path: path.to_owned(),
        });
    }
    let ended = if result.is_ok() {
        run_cached(conn, &format!("RELEASE {name}"))
    } else {
        conn.execute_batch(&format!("ROLLBACK TO {name}; RELEASE {name}"))
    };
    ended.map_err(sql(path, "release savepoint"))?;
    Ok(result)
}

/// Runs one statement without parameters or rows (transaction control), prepared
/// once per connection.
fn run_cached(conn: &Connection, statement: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(statement)?.execute([]).map(|_| ())
}

impl Writer<'_> {
    /// Applies `writes` in one transaction with one commit and returns each one's
    /// result, in order (the semantics are in the [module docs](self)): a write that
    /// fails is undone alone; if the transaction as a whole fails, every write is
    /// applied again alone.
    pub(super) fn apply_group(&mut self, writes: &[Write]) -> Vec<Result<Option<i64>>> {
        if let [one] = writes {
            return vec![self.apply_alone(one)];
        }
        match self.try_group(writes) {
            Ok(results) => results,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), writes = writes.len(), error = %e, "group commit failed: each write is applied alone");
                writes.iter().map(|w| self.apply_alone(w)).collect()
            }
        }
    }

    /// One transaction for all of `writes`, a savepoint each; `Err` when the
    /// transaction itself failed (then nothing was written).
    fn try_group(&mut self, writes: &[Write]) -> Result<Vec<Result<Option<i64>>>> {
        let path = self.path;
        run_cached(self.conn, "BEGIN IMMEDIATE").map_err(sql(path, "begin group commit"))?;
        let mut results = Vec::with_capacity(writes.len());
        for write in writes {
            let conn: &Connection = self.conn;
            let outcome = in_savepoint(conn, path, "write", |_| self.apply(write));
            match outcome {
                Ok(result) => results.push(result),
                Err(e) => {
                    rollback(self.conn);
                    return Err(e);
                }
            }
        }
        if let Err(e) = run_cached(self.conn, "COMMIT") {
            rollback(self.conn);
            return Err(sql(path, "commit group")(e));
        }
        Ok(results)
    }

    /// `write` in a transaction of its own, committed only on `Ok`.
    fn apply_alone(&mut self, write: &Write) -> Result<Option<i64>> {
        let path = self.path;
        run_cached(self.conn, "BEGIN IMMEDIATE").map_err(sql(path, "begin"))?;
        let result = self.apply(write).and_then(|value| {
            run_cached(self.conn, "COMMIT").map_err(sql(path, "commit"))?;
            Ok(value)
        });
        if result.is_err() {
            rollback(self.conn);
        }
        result
    }

    /// Applies `write` inside the open transaction; a CDR gives its outbox seq.
    fn apply(&self, write: &Write) -> Result<Option<i64>> {
        match write {
            Write::Cdr(cdr) => self.insert_cdr_rows(cdr).map(Some),
            Write::Journal(update) => self.journal_rows(update).map(|()| None),
            Write::PortState { port, state } => self.set_port_state(*port, state).map(|()| None),
        }
    }

    /// Writes `update` to `live_calls`, inside the open transaction.
    fn journal_rows(&self, update: &JournalUpdate) -> Result<()> {
        let path = self.path;
        let now = (self.clock)();
        let (calls, replace) = match update {
            JournalUpdate::Upsert(calls) => (calls, false),
            JournalUpdate::Replace(calls) => (calls, true),
        };
        let rows = calls
            .iter()
            .map(|c| {
                serde_json::to_string(&c.cdr)
                    .map(|json| (c, json))
                    .map_err(|source| Error::Json {
                        kind: "live call",
                        key: c.cdr.call_id.clone(),
                        source,
                    })
            })
            .collect::<Result<Vec<(&LiveCall, String)>>>()?;
        let tx: &Connection = self.conn;
        if replace {
            tx.execute("DELETE FROM live_calls", [])
                .map_err(sql(path, "clear live calls"))?;
        }
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO live_calls (call_id, cdr, ended, recordings, updated_at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (call_id) DO UPDATE SET
                         cdr = excluded.cdr, ended = excluded.ended,
                         recordings = excluded.recordings,
                         updated_at_ms = excluded.updated_at_ms",
                )
                .map_err(sql(path, "write live call"))?;
            for (call, json) in &rows {
                insert
                    .execute(params![
                        call.cdr.call_id,
                        json,
                        call.ended,
                        call.recordings.join(","),
                        now
                    ])
                    .map_err(sql(path, "write live call"))?;
            }
        }
        Ok(())
    }

    /// Stores `cdr` in a transaction of its own (start-up recovery).
    fn insert_cdr(&mut self, cdr: &Cdr) -> Result<i64> {
        let write = Write::Cdr(Box::new(cdr.clone()));
        self.apply_alone(&write)
            .and_then(|seq| seq.ok_or(Error::StoreWriterGone))
    }

    /// Writes the CDR, its outbox row and what goes with it, inside the open
    /// transaction; a duplicate call id is [`Error::DuplicateCdr`].
    fn insert_cdr_rows(&self, cdr: &Cdr) -> Result<i64> {
        let path = self.path;
        let now = (self.clock)();
        let call_id = cdr.call_id.as_str();
        let payload = serde_json::to_string(cdr).map_err(|source| Error::Json {
            kind: "cdr",
            key: cdr.call_id.clone(),
            source,
        })?;
        // A NaN would be written as JSON `null`, which HQ refuses: such a record
        // would block the outbox. Refuse it here, before anything is written.
        let problems: Vec<FieldProblem> = [
            ("caller_quality", cdr.caller_quality),
            ("callee_quality", cdr.callee_quality),
        ]
        .into_iter()
        .filter_map(|(field, q)| {
            q.and_then(|q| q.invalid_reason()).map(|m| FieldProblem {
                field: field.to_owned(),
                message: m.to_owned(),
            })
        })
        .collect();
        if !problems.is_empty() {
            return Err(Error::Invalid {
                entity: "cdr",
                key: cdr.call_id.clone(),
                problems,
            });
        }
        let transfer_chain = if cdr.transfer_chain.is_empty() {
            None
        } else {
            Some(
                serde_json::to_string(&cdr.transfer_chain).map_err(|source| Error::Json {
                    kind: "cdr",
                    key: cdr.call_id.clone(),
                    source,
                })?,
            )
        };
        let direction = enum_text(&cdr.direction, call_id)?;
        let disposition = enum_text(&cdr.disposition, call_id)?;
        let hangup_side = enum_text(&cdr.hangup_side, call_id)?;
        let blocked_mode = cdr
            .blocked
            .as_ref()
            .map(|b| enum_text(&b.mode, call_id))
            .transpose()?;
        let blocked_action = cdr
            .blocked
            .as_ref()
            .map(|b| enum_text(&b.action, call_id))
            .transpose()?;

        let tx: &Connection = self.conn;
        // Every statement of this path is prepared once per connection (the cache):
        // parsing them again for every CDR cost more than running them.
        let inserted = tx
            .prepare_cached(
                "INSERT INTO cdrs (call_id, direction, caller, caller_port, callee, callee_port,
                               started_at_ms, answered_at_ms, ended_at_ms, duration_ms,
                               billable_ms, disposition, hangup_side,
                               caller_sip_call_id, callee_sip_call_id,
                               caller_loss_percent, caller_jitter_ms, caller_mos,
                               callee_loss_percent, callee_jitter_ms, callee_mos,
                               transfer_chain, queue, agent_id, queue_wait_ms,
                               blocked_mode, blocked_action, blocked_pattern, survey_score,
                               hold_ms, queue_overflow, interrupted, hangup_cause)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,
                     ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29,
                     ?30, ?31, ?32, ?33)",
            )
            .and_then(|mut insert| {
                insert.execute(params![
                    call_id,
                    direction,
                    cdr.caller,
                    cdr.caller_port,
                    cdr.callee,
                    cdr.callee_port,
                    cdr.started_at_ms,
                    cdr.answered_at_ms,
                    cdr.ended_at_ms,
                    cdr.duration_ms(),
                    cdr.billable_ms(),
                    disposition,
                    hangup_side,
                    cdr.caller_sip_call_id,
                    cdr.callee_sip_call_id,
                    cdr.caller_quality.map(|q| q.loss_percent),
                    cdr.caller_quality.map(|q| q.jitter_ms),
                    cdr.caller_quality.map(|q| q.mos),
                    cdr.callee_quality.map(|q| q.loss_percent),
                    cdr.callee_quality.map(|q| q.jitter_ms),
                    cdr.callee_quality.map(|q| q.mos),
                    transfer_chain,
                    cdr.queue.as_ref().map(|q| q.queue.as_str()),
                    cdr.queue.as_ref().and_then(|q| q.agent.as_deref()),
                    cdr.queue.as_ref().map(|q| q.wait_ms),
                    blocked_mode,
                    blocked_action,
                    cdr.blocked.as_ref().and_then(|b| b.pattern.as_deref()),
                    cdr.survey_score,
                    cdr.hold_ms,
                    cdr.queue_overflow.map(|o| o.as_str()),
                    cdr.interrupted,
                    cdr.hangup_cause.map(|c| c.as_str()),
                ])
            });
        match inserted {
            Ok(_) => {}
            // The caller rolls back (the savepoint or the transaction): nothing was
            // written.
            Err(e) if is_unique_violation(&e) => {
                return Err(Error::DuplicateCdr {
                    call_id: cdr.call_id.clone(),
                })
            }
            Err(e) => return Err(sql(path, "insert cdr")(e)),
        }
        tx.prepare_cached(
            "INSERT INTO outbox (kind, record_key, payload, created_at_ms)
             VALUES ('cdr', ?1, ?2, ?3)",
        )
        .and_then(|mut insert| insert.execute(params![call_id, payload, now]))
        .map_err(sql(path, "insert cdr outbox row"))?;
        let seq = tx.last_insert_rowid();
        // The call is no longer live: its journal row goes with the same commit, so a
        // crash leaves either the row (rebuilt at start-up) or the CDR, never both.
        tx.prepare_cached("DELETE FROM live_calls WHERE call_id = ?1")
            .and_then(|mut delete| delete.execute(params![call_id]))
            .map_err(sql(path, "delete live call"))?;
        // The customer's service record goes with the CDR; a failure there is logged
        // and never costs the CDR (its savepoint is rolled back alone).
        let recorded = in_savepoint(tx, path, "service_record", |conn| {
            crate::customers::service::record_call(conn, path, cdr)
        })?;
        if let Err(e) = recorded {
            tracing::warn!(call_id, error = %e, "service record not written");
        }
        // A preview campaign attempt on this call takes its outcome from it; as with
        // the service record, a failure is logged and never costs the CDR.
        let lead_dialled = cdr.callee_port.is_some() || cdr.callee_sip_call_id.is_some();
        let closed = in_savepoint(tx, path, "preview_attempt", |conn| {
            crate::campaign::store::finish_from_cdr(
                conn,
                path,
                &cdr.call_id,
                cdr.disposition.as_str(),
                lead_dialled,
                cdr.ended_at_ms,
            )
        })?;
        match closed {
            Ok(Some((attempt, outcome, _))) => tracing::info!(
                call_id,
                attempt,
                outcome = outcome.as_str(),
                "preview attempt closed from its call"
            ),
            Ok(None) => {}
            Err(e) => tracing::warn!(call_id, error = %e, "preview attempt not closed"),
        }
        Ok(seq)
    }

    fn replace_board(
        &mut self,
        ports: &[(u8, PortKindStr)],
        extensions: &[ExtensionRow],
    ) -> Result<()> {
        let path = self.path;
        let now = (self.clock)();
        let ports = ports
            .iter()
            .map(|&(port, kind)| {
                PortKind::from_db(kind)
                    .map(|kind| (port, kind))
                    .ok_or_else(|| Error::InvalidPortKind {
                        port,
                        kind: kind.to_owned(),
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql(path, "begin"))?;
        {
            let mut upsert_port = tx
                .prepare_cached(
                    "INSERT INTO ports (number, kind, state, updated_at_ms)
                     VALUES (?1, ?2, 'idle', ?3)
                     ON CONFLICT (number) DO UPDATE
                        SET kind = excluded.kind, updated_at_ms = excluded.updated_at_ms
                      WHERE kind IS NOT excluded.kind",
                )
                .map_err(sql(path, "prepare port upsert"))?;
            for (number, kind) in &ports {
                upsert_port
                    .execute(params![number, kind.as_str(), now])
                    .map_err(sql(path, "upsert port"))?;
            }

            let mut port_exists = tx
                .prepare_cached("SELECT EXISTS (SELECT 1 FROM ports WHERE number = ?1)")
                .map_err(sql(path, "prepare port lookup"))?;
            for ext in extensions {
                if let Some(port) = ext.port {
                    let exists: bool = port_exists
                        .query_row([port], |row| row.get(0))
                        .map_err(sql(path, "look up port"))?;
                    if !exists {
                        // Dropping `tx` rolls back the port upserts too.
                        return Err(Error::ExtensionOnUnknownPort {
                            extension: ext.number.clone(),
                            port,
                        });
                    }
                }
            }

            let existing: Vec<String> = tx
                .prepare_cached("SELECT number FROM extensions")
                .and_then(|mut stmt| {
                    stmt.query_map([], |row| row.get(0))?
                        .collect::<rusqlite::Result<_>>()
                })
                .map_err(sql(path, "list extensions"))?;
            // Rows only the config defined (revision 0) go with it; rows HQ masters
            // stay, without an analog port.
            let mut delete = tx
                .prepare_cached("DELETE FROM extensions WHERE number = ?1 AND revision = 0")
                .map_err(sql(path, "prepare extension delete"))?;
            let mut unplug = tx
                .prepare_cached(
                    "UPDATE extensions SET port = NULL, updated_at_ms = ?2
                      WHERE number = ?1 AND revision > 0 AND port IS NOT NULL",
                )
                .map_err(sql(path, "prepare extension unplug"))?;
            for number in existing
                .iter()
                .filter(|n| !extensions.iter().any(|e| &e.number == *n))
            {
                delete
                    .execute([number])
                    .map_err(sql(path, "delete extension"))?;
                unplug
                    .execute(params![number, now])
                    .map_err(sql(path, "unplug extension"))?;
            }

            // The port always comes from the config; name and call waiting only while
            // HQ has not synced the row (revision 0), after that HQ's win.
            let mut upsert_ext = tx
                .prepare_cached(
                    "INSERT INTO extensions (number, name, port, call_waiting, updated_at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (number) DO UPDATE
                        SET name = CASE WHEN revision = 0 THEN excluded.name ELSE name END,
                            port = excluded.port,
                            call_waiting = CASE WHEN revision = 0 THEN excluded.call_waiting
                                                ELSE call_waiting END,
                            updated_at_ms = excluded.updated_at_ms
                      WHERE port IS NOT excluded.port
                         OR (revision = 0 AND (name IS NOT excluded.name
                                               OR call_waiting IS NOT excluded.call_waiting))",
                )
                .map_err(sql(path, "prepare extension upsert"))?;
            for ext in extensions {
                upsert_ext
                    .execute(params![
                        ext.number,
                        ext.name,
                        ext.port,
                        ext.call_waiting,
                        now
                    ])
                    .map_err(sql(path, "upsert extension"))?;
            }
        }
        tx.commit().map_err(sql(path, "commit board"))
    }

    fn set_port_state(&self, port: u8, state: &str) -> Result<()> {
        let changed = self
            .conn
            .execute(
                "UPDATE ports SET state = ?1, updated_at_ms = ?2 WHERE number = ?3",
                params![state, (self.clock)(), port],
            )
            .map_err(sql(self.path, "set port state"))?;
        if changed == 0 {
            return Err(Error::UnknownPort { port });
        }
        Ok(())
    }
}

/// What [`Store::recover_live_calls`](super::Store::recover_live_calls) did with the
/// journal of live calls a stop left behind.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveredCalls {
    /// Calls that were up when the box stopped: their CDRs, marked `interrupted`.
    pub interrupted: Vec<String>,
    /// Calls that had ended, whose CDRs waited for quality reports: stored as they
    /// stood.
    pub finished: Vec<String>,
    /// Rows whose CDR was stored already: dropped.
    pub duplicates: Vec<String>,
    /// Rows that are no CDR this firmware can store (unreadable JSON, another call's
    /// id, impossible values): dropped, each logged with its text.
    pub unreadable: Vec<String>,
    /// The recordings the stored calls had running, by recording key (`p1`, `l3`)
    /// to call id: [`crate::recorder::recover`] registers each cut file under its
    /// call.
    pub recordings: std::collections::BTreeMap<String, String>,
}

/// Turns every row of `live_calls` into its call's CDR (with its outbox row, the
/// row's deletion in the same transaction): see the [`crate::call`] journal.
pub(super) fn recover_live_calls(
    conn: &mut Connection,
    path: &Path,
    clock: Clock,
) -> Result<RecoveredCalls> {
    let rows = conn
        .prepare("SELECT call_id, cdr, ended, recordings FROM live_calls ORDER BY rowid")
        .and_then(|mut s| {
            s.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, bool>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(sql(path, "read live calls"))?;
    let mut done = RecoveredCalls::default();
    let mut writer = Writer { conn, path, clock };
    for (call_id, json, ended, recordings) in rows {
        let parsed = serde_json::from_str::<Cdr>(&json)
            .map_err(|e| e.to_string())
            .and_then(|cdr| {
                if cdr.call_id == call_id {
                    Ok(cdr)
                } else {
                    Err(format!("the CDR is call {}'s", cdr.call_id))
                }
            });
        let why = match parsed {
            Ok(mut cdr) => {
                if !ended {
                    // Up when the box stopped: the box ended it.
                    cdr.interrupted = true;
                    cdr.hangup_side = crate::cdr::HangupSide::System;
                }
                match writer.insert_cdr(&cdr) {
                    Ok(seq) => {
                        tracing::warn!(
                            call_id,
                            outbox_seq = seq,
                            interrupted = !ended,
                            "CDR of a live call stored at start-up"
                        );
                        for key in recordings.split(',').filter(|k| !k.is_empty()) {
                            done.recordings.insert(key.to_owned(), call_id.clone());
                        }
                        if ended {
                            done.finished.push(call_id);
                        } else {
                            done.interrupted.push(call_id);
                        }
                        continue;
                    }
                    Err(Error::DuplicateCdr { .. }) => {
                        delete_live_call(writer.conn, path, &call_id)?;
                        done.duplicates.push(call_id);
                        continue;
                    }
                    // Values no CDR may hold: this row can never be stored.
                    Err(e @ (Error::Invalid { .. } | Error::Json { .. })) => e.to_string(),
                    // The database failed: the rows stay for the next start.
                    Err(e) => return Err(e),
                }
            }
            Err(why) => why,
        };
        tracing::error!(
            call_id,
            row = json,
            error = why,
            "journal row of a live call is no CDR: dropped"
        );
        delete_live_call(writer.conn, path, &call_id)?;
        done.unreadable.push(call_id);
    }
    Ok(done)
}

fn delete_live_call(conn: &Connection, path: &Path, call_id: &str) -> Result<()> {
    conn.execute(
        "DELETE FROM live_calls WHERE call_id = ?1",
        params![call_id],
    )
    .map(drop)
    .map_err(sql(path, "delete live call"))
}

/// [`Writer::apply_group`] on a store whose writer thread has not started, for the
/// group commit's unit tests.
#[cfg(test)]
pub(super) fn apply_group(store: &mut Store, writes: &[Write]) -> Vec<Result<Option<i64>>> {
    let mut writer = Writer {
        conn: &mut store.conn,
        path: &store.path,
        clock: store.clock,
    };
    writer.apply_group(writes)
}
