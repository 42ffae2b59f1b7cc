//! The SQL side of the store: the schema, how a [`Change`] becomes statements, and how rows
//! become a [`Snapshot`] again.
//!
//! Every table is an ordinary rowid table with its natural key as a UNIQUE constraint. The
//! rowid is what recovery walks when a damaged table can no longer be scanned in one go (see
//! `recover.rs`). Nothing read from disk is trusted: each row is decoded into a [`Change`]
//! with its values range-checked, and a row that fails is skipped and counted, never unwrapped.
//! docs/store.md shows the same schema for users of the `sqlite3` CLI.

use super::bodylog::BodyLog;
use super::model::*;
use crate::broker::router::{FnvHasher, TopicMap};
use rusqlite::{params, Connection, OptionalExtension, Row};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::BuildHasherDefault;

/// The schema version this build writes (the single row of `schema_version`).
pub(crate) const SCHEMA_VERSION: i64 = 4;

/// The schema, created on first open.
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS schema_version (
    version     INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS retained (
    topic       TEXT    NOT NULL UNIQUE,
    payload     BLOB    NOT NULL,
    qos         INTEGER NOT NULL,
    retain      INTEGER NOT NULL,
    properties  BLOB    NOT NULL,
    expires_at  INTEGER,
    source_id       TEXT,
    source_username TEXT,
    source_listener INTEGER
);
CREATE TABLE IF NOT EXISTS sessions (
    client_id       TEXT    NOT NULL UNIQUE,
    protocol        INTEGER NOT NULL,
    expiry_interval INTEGER,
    expires_at      INTEGER
);
CREATE TABLE IF NOT EXISTS subscriptions (
    client_id   TEXT    NOT NULL,
    filter      TEXT    NOT NULL,
    options     INTEGER NOT NULL,
    sub_id      INTEGER NOT NULL,
    UNIQUE (client_id, filter)
);
CREATE TABLE IF NOT EXISTS deliveries (
    seq         INTEGER PRIMARY KEY,
    session     INTEGER NOT NULL,
    packet_id   INTEGER NOT NULL,
    state       INTEGER NOT NULL,
    qos         INTEGER NOT NULL,
    retain      INTEGER NOT NULL,
    sub_ids     TEXT    NOT NULL,
    body        INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS qos2_inbound (
    client_id   TEXT    NOT NULL,
    packet_id   INTEGER NOT NULL,
    UNIQUE (client_id, packet_id)
);
CREATE TABLE IF NOT EXISTS wills (
    client_id   TEXT    NOT NULL UNIQUE,
    topic       TEXT    NOT NULL,
    payload     BLOB    NOT NULL,
    qos         INTEGER NOT NULL,
    retain      INTEGER NOT NULL,
    properties  BLOB    NOT NULL,
    due_at      INTEGER NOT NULL
);
";

/// Version 1 to 2: a retained message keeps its publisher (`check_retain_source`); the
/// messages retained before know none.
const MIGRATE_1_TO_2: &str = "
BEGIN;
ALTER TABLE retained ADD COLUMN source_id TEXT;
ALTER TABLE retained ADD COLUMN source_username TEXT;
ALTER TABLE retained ADD COLUMN source_listener INTEGER;
UPDATE schema_version SET version = 2;
COMMIT;
";

/// Version 2 to 3: a message queued for several sessions is stored once (`bodies`), and each
/// session's delivery refers to it (`deliveries`).
///
/// A delivery names its session by the session's rowid, not by its client id, which would be
/// repeated in every row. Its `seq` is unique in the whole store (the broker numbers every
/// stored delivery from one counter) and is the rowid, so the table needs no second index:
/// queueing messages writes the last pages of two b-trees per commit (bodies, deliveries), not
/// three. Only a persistent session's end looks for all its deliveries, with a scan.
///
/// The copies a version 2 store holds become one body each, keeping the old row's rowid as id,
/// and their sequence numbers are renumbered across the store in each session's order; those
/// of sessions that do not exist are dropped, as a start would. (A store made before any
/// message was stored may lack the old table.)
const MIGRATE_2_TO_3: &str = "
BEGIN;
CREATE TABLE IF NOT EXISTS bodies (
    id          INTEGER PRIMARY KEY,
    topic       TEXT    NOT NULL,
    payload     BLOB    NOT NULL,
    qos         INTEGER NOT NULL,
    retain      INTEGER NOT NULL,
    properties  BLOB    NOT NULL,
    expires_at  INTEGER,
    refs        INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    client_id   TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    packet_id   INTEGER NOT NULL,
    state       INTEGER NOT NULL,
    qos         INTEGER NOT NULL,
    retain      INTEGER NOT NULL,
    sub_ids     TEXT    NOT NULL,
    topic       TEXT    NOT NULL,
    payload     BLOB    NOT NULL,
    msg_qos     INTEGER NOT NULL,
    msg_retain  INTEGER NOT NULL,
    properties  BLOB    NOT NULL,
    expires_at  INTEGER,
    UNIQUE (client_id, seq)
);
INSERT INTO bodies (id, topic, payload, qos, retain, properties, expires_at, refs)
    SELECT rowid, topic, payload, msg_qos, msg_retain, properties, expires_at, 1 FROM messages
    WHERE client_id IN (SELECT client_id FROM sessions);
INSERT INTO deliveries (seq, session, packet_id, state, qos, retain, sub_ids, body)
    SELECT row_number() OVER (ORDER BY m.client_id, m.seq), s.rowid, m.packet_id, m.state,
        m.qos, m.retain, m.sub_ids, m.rowid
    FROM messages AS m JOIN sessions AS s ON s.client_id = m.client_id;
DROP TABLE messages;
UPDATE schema_version SET version = 3;
COMMIT;
";

/// Version 3 to 4: the bodies move out of SQLite into the body log (`bodylog.rs`), and each
/// delivery's `body` becomes its body's location in the log. One transaction: the records are
/// appended and made durable first, then `deliveries` is rewritten and `bodies` dropped. A
/// delivery whose body is missing is dropped, as a start would.
fn migrate_3_to_4(conn: &Connection, log: &mut BodyLog) -> rusqlite::Result<()> {
    conn.execute_batch("BEGIN")?;
    let result = (|| {
        log.set_raw_ids(true);
        let mut moved: HashMap<i64, u64> = HashMap::new();
        {
            let mut stmt = conn.prepare(
                "SELECT rowid, id, topic, payload, qos, retain, properties, expires_at
                 FROM bodies ORDER BY id",
            )?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let id: i64 = row.get(1)?;
                match decode_body(row) {
                    Ok(Change::MessageBody { message, .. }) => {
                        let key = u64::try_from(id).unwrap_or(0);
                        log.stage(key, &message).map_err(log_error)?;
                        if let Some(loc) = log.location(key) {
                            moved.insert(id, loc);
                        }
                    }
                    Ok(_) => {}
                    Err(why) => log::warn!("store: bodies row {id} not migrated: {why}"),
                }
            }
        }
        log.flush().and_then(|()| log.sync()).map_err(log_error)?;
        let mut rows: Vec<(i64, i64)> = Vec::new();
        {
            let mut stmt = conn.prepare("SELECT seq, body FROM deliveries")?;
            let mut query = stmt.query([])?;
            while let Some(row) = query.next()? {
                rows.push((row.get(0)?, row.get(1)?));
            }
        }
        for (seq, body) in rows {
            match moved.get(&body) {
                Some(&loc) => conn.execute(
                    "UPDATE deliveries SET body = ?2 WHERE seq = ?1",
                    params![seq, int(loc)],
                )?,
                None => conn.execute("DELETE FROM deliveries WHERE seq = ?1", [seq])?,
            };
        }
        conn.execute_batch("DROP TABLE bodies; UPDATE schema_version SET version = 4;")
    })();
    log.set_raw_ids(false);
    match result {
        Ok(()) => {
            conn.execute_batch("COMMIT")?;
            // The counts come from `deliveries` at open (`BodyLog::rebuild`).
            log.settle([]);
            Ok(())
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            log.rollback();
            Err(e)
        }
    }
}

/// An error of the body log as SQLite reports one, so that a commit fails alike on either: a
/// full disk is `SQLITE_FULL`, anything else `SQLITE_IOERR`.
pub(crate) fn log_error(e: std::io::Error) -> rusqlite::Error {
    let code = if e.raw_os_error() == Some(libc::ENOSPC) {
        rusqlite::ffi::SQLITE_FULL
    } else {
        rusqlite::ffi::SQLITE_IOERR
    };
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(code),
        Some(format!("body log: {e}")),
    )
}

/// One data table: how to select its rows and how to decode one (column 0 is the rowid, the
/// table's columns follow from index 1).
pub(crate) struct Table {
    pub(crate) name: &'static str,
    pub(crate) columns: &'static str,
    /// The table and the same columns as a store of an older schema has them (NULL for the
    /// columns added since), for recovering a damaged store that was never migrated.
    pub(crate) old: Option<(&'static str, &'static str)>,
    pub(crate) decode: fn(&Row<'_>) -> Result<Change, String>,
    /// A table only older schemas have: a store without it lacks nothing.
    pub(crate) legacy: bool,
}

/// The data tables, sessions before the tables that hang off them.
pub(crate) const TABLES: &[Table] = &[
    Table {
        name: "retained",
        columns: "topic, payload, qos, retain, properties, expires_at, source_id, \
                  source_username, source_listener",
        old: Some((
            "retained",
            "topic, payload, qos, retain, properties, expires_at, NULL, NULL, NULL",
        )),
        decode: decode_retained,
        legacy: false,
    },
    Table {
        name: "sessions",
        columns: "client_id, protocol, expiry_interval, expires_at",
        old: None,
        decode: decode_session,
        legacy: false,
    },
    Table {
        name: "subscriptions",
        columns: "client_id, filter, options, sub_id",
        old: None,
        decode: decode_subscription,
        legacy: false,
    },
    // Before version 4 only (a store salvaged before its migration): the bodies, which go
    // into the log. Before version 3, `messages` held each session's copy: its rowid serves
    // as body id.
    Table {
        name: "bodies",
        columns: "id, topic, payload, qos, retain, properties, expires_at",
        old: Some((
            "messages",
            "rowid, topic, payload, msg_qos, msg_retain, properties, expires_at",
        )),
        decode: decode_body,
        legacy: true,
    },
    Table {
        name: "deliveries",
        columns: "(SELECT client_id FROM sessions WHERE sessions.rowid = session), seq, \
                  packet_id, state, qos, retain, sub_ids, body",
        old: Some((
            "messages",
            // The old sequence numbers are per session; the rowids are unique, in order.
            "client_id, rowid, packet_id, state, qos, retain, sub_ids, rowid",
        )),
        decode: decode_delivery,
        legacy: false,
    },
    Table {
        name: "qos2_inbound",
        columns: "client_id, packet_id",
        old: None,
        decode: decode_qos2,
        legacy: false,
    },
    Table {
        name: "wills",
        columns: "client_id, topic, payload, qos, retain, properties, due_at",
        old: None,
        decode: decode_will,
        legacy: false,
    },
];

/// Why the schema could not be used.
#[derive(Debug)]
pub(crate) enum SchemaError {
    Sql(rusqlite::Error),
    /// Written by a newer midge: left alone rather than misread.
    Newer(i64),
}

impl From<rusqlite::Error> for SchemaError {
    fn from(e: rusqlite::Error) -> SchemaError {
        SchemaError::Sql(e)
    }
}

/// Creates the tables if they are missing and checks the schema version; an older store is
/// migrated (its bodies go into `log`).
pub(crate) fn create(conn: &Connection, log: &mut BodyLog) -> Result<(), SchemaError> {
    conn.execute_batch(SCHEMA)?;
    let version: Option<i64> = conn
        .query_row("SELECT max(version) FROM schema_version", [], |r| r.get(0))
        .optional()?
        .flatten();
    match version {
        None => {
            conn.execute(
                "INSERT INTO schema_version (version) VALUES (?1)",
                [SCHEMA_VERSION],
            )?;
            Ok(())
        }
        Some(v) if v > SCHEMA_VERSION => Err(SchemaError::Newer(v)),
        Some(v) if v < SCHEMA_VERSION => {
            if v == 1 {
                conn.execute_batch(MIGRATE_1_TO_2)?;
            }
            if v <= 2 {
                conn.execute_batch(MIGRATE_2_TO_3)?;
            }
            migrate_3_to_4(conn, log)?;
            Ok(())
        }
        Some(_) => Ok(()),
    }
}

/// SQLite integers are i64; u64 values beyond that (never produced by a sane broker) are
/// clamped rather than refused, so one odd value cannot make a batch fail.
fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn sub_ids_text(ids: &[u32]) -> String {
    let mut s = String::new();
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&id.to_string());
    }
    s
}

/// What applying changes leaves for the end of the transaction, and what the writer knows
/// across transactions.
#[derive(Default)]
pub(crate) struct Tally {
    /// How each body's reference count (by the broker's id) changes in this transaction:
    /// applied to the body log's counts by [`settle`] once the transaction committed.
    refs: HashMap<i64, i64, BuildHasherDefault<FnvHasher>>,
    /// Sessions' rowids by client id, as looked up: every delivery names its session, and the
    /// lookup in `sessions` by client id would otherwise run with each one. A rowid stays the
    /// same while its row lives (an upsert keeps it); an ending session leaves the map, and a
    /// failed transaction empties it.
    rowids: TopicMap<i64>,
    /// How many deliveries each session (by rowid) has, when known: a session that ends with
    /// none needs no scan of `deliveries` (which has no index by session). Never less than the
    /// truth; `None` (then every ending session is looked for) until [`Tally::count`] reads it,
    /// and again after a transaction that failed.
    queued: Option<HashMap<i64, u64>>,
}

impl Tally {
    /// Reads how many deliveries each session has.
    pub(crate) fn count(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        let mut queued = HashMap::new();
        let mut stmt = conn.prepare("SELECT session, count(*) FROM deliveries GROUP BY session")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            queued.insert(row.get(0)?, row.get::<_, i64>(1)?.max(0) as u64);
        }
        self.queued = Some(queued);
        Ok(())
    }

    /// Whether the counts are known.
    pub(crate) fn counted(&self) -> bool {
        self.queued.is_some()
    }

    /// Forgets the counts (a transaction failed: they may no longer match the store).
    pub(crate) fn forget(&mut self) {
        self.queued = None;
        self.refs.clear();
        self.rowids.clear();
    }

    /// The rowid of `client_id`'s session, if it has one.
    fn rowid(&mut self, conn: &Connection, client_id: &str) -> rusqlite::Result<Option<i64>> {
        if let Some(&rowid) = self.rowids.get(client_id) {
            return Ok(Some(rowid));
        }
        let rowid: Option<i64> = conn
            .prepare_cached("SELECT rowid FROM sessions WHERE client_id = ?1")?
            .query_row([client_id], |r| r.get(0))
            .optional()?;
        if let Some(rowid) = rowid {
            self.rowids.insert(client_id.into(), rowid);
        }
        Ok(rowid)
    }

    /// Body `id` gains (or, negative, loses) `n` references.
    fn refer(&mut self, id: i64, n: i64) {
        *self.refs.entry(id).or_default() += n;
    }

    fn added(&mut self, session: i64) {
        if let Some(q) = self.queued.as_mut() {
            *q.entry(session).or_default() += 1;
        }
    }

    fn deleted(&mut self, session: i64) {
        if let Some(n) = self.queued.as_mut().and_then(|q| q.get_mut(&session)) {
            *n = n.saturating_sub(1);
        }
    }
}

/// Applies one change. Runs inside the caller's transaction; statements are cached. A body
/// goes to `log` (written by [`BodyLog::flush`] before the transaction commits).
pub(crate) fn apply(
    conn: &Connection,
    change: &Change,
    t: &mut Tally,
    log: &mut BodyLog,
) -> rusqlite::Result<()> {
    match change {
        Change::RetainedSet { message: m } => {
            conn.prepare_cached(
                "INSERT INTO retained (topic, payload, qos, retain, properties, expires_at,
                   source_id, source_username, source_listener)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (topic) DO UPDATE SET payload = excluded.payload,
                   qos = excluded.qos, retain = excluded.retain,
                   properties = excluded.properties, expires_at = excluded.expires_at,
                   source_id = excluded.source_id, source_username = excluded.source_username,
                   source_listener = excluded.source_listener",
            )?
            .execute(params![
                m.topic,
                m.payload,
                m.qos,
                m.retain,
                m.properties,
                m.expires_at.map(int),
                m.source.as_ref().map(|s| &s.client_id),
                m.source.as_ref().and_then(|s| s.username.as_ref()),
                m.source.as_ref().map(|s| s.listener),
            ])?;
        }
        Change::RetainedClear { topic } => {
            conn.prepare_cached("DELETE FROM retained WHERE topic = ?1")?
                .execute([topic])?;
        }
        Change::SessionUpsert { session: s } => {
            let interval = match s.expiry {
                SessionExpiry::Never => None,
                SessionExpiry::After(secs) => Some(secs),
            };
            conn.prepare_cached(
                "INSERT INTO sessions (client_id, protocol, expiry_interval, expires_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (client_id) DO UPDATE SET protocol = excluded.protocol,
                   expiry_interval = excluded.expiry_interval, expires_at = excluded.expires_at",
            )?
            .execute(params![
                s.client_id,
                s.protocol,
                interval,
                s.expires_at.map(int)
            ])?;
        }
        Change::SessionDelete { client_id } => {
            // Its deliveries go first, while the session's row says which they are, and
            // release their bodies.
            let session = t.rowid(conn, client_id)?;
            t.rowids.remove(&**client_id);
            let none = |q: &HashMap<i64, u64>, s| q.get(&s).is_none_or(|n| *n == 0);
            let scan = session.filter(|&s| !t.queued.as_ref().is_some_and(|q| none(q, s)));
            if let Some(session) = scan {
                let mut lost: BTreeMap<i64, i64> = BTreeMap::new();
                {
                    let mut stmt = conn.prepare_cached(
                        "DELETE FROM deliveries WHERE session = ?1 RETURNING body",
                    )?;
                    let mut rows = stmt.query([session])?;
                    while let Some(row) = rows.next()? {
                        *lost.entry(row.get(0)?).or_default() += 1;
                    }
                }
                for (body, n) in lost {
                    released(t, log, body, n);
                }
            }
            if let (Some(q), Some(session)) = (t.queued.as_mut(), session) {
                q.remove(&session);
            }
            for sql in [
                "DELETE FROM sessions WHERE client_id = ?1",
                "DELETE FROM subscriptions WHERE client_id = ?1",
                "DELETE FROM qos2_inbound WHERE client_id = ?1",
                "DELETE FROM wills WHERE client_id = ?1",
            ] {
                conn.prepare_cached(sql)?.execute([client_id])?;
            }
        }
        Change::SubscriptionSet {
            client_id,
            subscription: s,
        } => {
            conn.prepare_cached(
                "INSERT INTO subscriptions (client_id, filter, options, sub_id)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (client_id, filter) DO UPDATE SET options = excluded.options,
                   sub_id = excluded.sub_id",
            )?
            .execute(params![client_id, s.filter, s.options, s.sub_id])?;
        }
        Change::SubscriptionDelete { client_id, filter } => {
            conn.prepare_cached("DELETE FROM subscriptions WHERE client_id = ?1 AND filter = ?2")?
                .execute(params![client_id, filter])?;
        }
        Change::MessageBody { id, message: m } => {
            log.stage(*id, m).map_err(log_error)?;
        }
        Change::MessageAdd {
            client_id,
            message: q,
        } => {
            // No such session (it ended earlier in this transaction): the message goes with it.
            let Some(session) = t.rowid(conn, client_id)? else {
                return Ok(());
            };
            let Some(location) = log.location(q.body) else {
                log::error!(
                    "store: a queued message refers to body {}, which the store does not hold; \
                     not stored",
                    q.body
                );
                return Ok(());
            };
            let insert = || {
                conn.prepare_cached(
                    "INSERT INTO deliveries (seq, session, packet_id, state, qos, retain,
                       sub_ids, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?
                .execute(params![
                    int(q.seq),
                    session,
                    q.packet_id,
                    q.state.code(),
                    q.qos,
                    q.retain,
                    sub_ids_text(q.sub_ids.as_slice()),
                    int(location)
                ])
            };
            match insert() {
                // One with the same `seq` is replaced (its body loses a reference); rare
                // enough to be found by the failed insert rather than looked for every time.
                Err(e)
                    if e.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation) =>
                {
                    delete_delivery(conn, client_id, q.seq, t, log)?;
                    insert()?
                }
                other => other?,
            };
            t.added(session);
            t.refer(int(q.body), 1);
        }
        Change::MessageState {
            client_id,
            seq,
            packet_id,
            state,
        } => {
            if let Some(session) = t.rowid(conn, client_id)? {
                conn.prepare_cached(
                    "UPDATE deliveries SET packet_id = ?3, state = ?4
                     WHERE seq = ?2 AND session = ?1",
                )?
                .execute(params![session, int(*seq), packet_id, state.code()])?;
            }
        }
        Change::MessageDelete { client_id, seq } => {
            delete_delivery(conn, client_id, *seq, t, log)?;
        }
        Change::Qos2Add {
            client_id,
            packet_id,
        } => {
            conn.prepare_cached(
                "INSERT OR IGNORE INTO qos2_inbound (client_id, packet_id) VALUES (?1, ?2)",
            )?
            .execute(params![client_id, packet_id])?;
        }
        Change::Qos2Delete {
            client_id,
            packet_id,
        } => {
            conn.prepare_cached(
                "DELETE FROM qos2_inbound WHERE client_id = ?1 AND packet_id = ?2",
            )?
            .execute(params![client_id, packet_id])?;
        }
        Change::WillSet { will: w } => {
            conn.prepare_cached(
                "INSERT OR REPLACE INTO wills (client_id, topic, payload, qos, retain,
                   properties, due_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                w.client_id,
                w.topic,
                w.payload,
                w.qos,
                w.retain,
                w.properties,
                int(w.due_at)
            ])?;
        }
        Change::WillDelete { client_id } => {
            conn.prepare_cached("DELETE FROM wills WHERE client_id = ?1")?
                .execute([client_id])?;
        }
    }
    Ok(())
}

/// Deletes one delivery; its body loses a reference.
///
/// The body log counts references in memory rather than looking bodies up in `deliveries` when
/// one goes: that lookup would need an index of `deliveries` by body, which every delivery
/// written would write too.
fn delete_delivery(
    conn: &Connection,
    client_id: &str,
    seq: u64,
    t: &mut Tally,
    log: &BodyLog,
) -> rusqlite::Result<()> {
    let Some(session) = t.rowid(conn, client_id)? else {
        return Ok(());
    };
    let body: Option<i64> = conn
        .prepare_cached("DELETE FROM deliveries WHERE seq = ?2 AND session = ?1 RETURNING body")?
        .query_row(params![session, int(seq)], |r| r.get(0))
        .optional()?;
    if let Some(body) = body {
        t.deleted(session);
        released(t, log, body, 1);
    }
    Ok(())
}

/// Deletes the deliveries numbered `seqs` (acknowledged, dropped or expired), and empties it:
/// a run of consecutive numbers is one statement. A number names one delivery in the whole
/// store, so the range deletes exactly those.
///
/// The rows are read, then deleted, in two statements: `DELETE … RETURNING` gathers its rows
/// in a temporary table before handing back the first, and took 71 % of the writer's time
/// while a thousand sessions drained their queues; a read and a plain delete of the same
/// range do the same in about half the time.
pub(crate) fn delete_deliveries(
    conn: &Connection,
    seqs: &mut Vec<u64>,
    t: &mut Tally,
    log: &BodyLog,
) -> rusqlite::Result<()> {
    seqs.sort_unstable();
    seqs.dedup();
    let mut read =
        conn.prepare_cached("SELECT session, body FROM deliveries WHERE seq BETWEEN ?1 AND ?2")?;
    let mut delete = conn.prepare_cached("DELETE FROM deliveries WHERE seq BETWEEN ?1 AND ?2")?;
    for run in seqs.chunk_by(|a, b| a + 1 == *b) {
        let (Some(first), Some(last)) = (run.first(), run.last()) else {
            continue;
        };
        let range = params![int(*first), int(*last)];
        let mut rows = read.query(range)?;
        while let Some(row) = rows.next()? {
            let session: i64 = row.get(0)?;
            let body: i64 = row.get(1)?;
            t.deleted(session);
            released(t, log, body, 1);
        }
        delete.execute(range)?;
    }
    seqs.clear();
    Ok(())
}

/// `n` deliveries of the body at `location` went.
fn released(t: &mut Tally, log: &BodyLog, location: i64, n: i64) {
    if let Some(id) = u64::try_from(location).ok().and_then(|l| log.id_at(l)) {
        t.refer(int(id), -n);
    }
}

/// Ends a committed transaction's changes to the bodies: each body's reference count changes
/// once, by what the transaction's deliveries added and took, and a body left with no
/// reference is released. Done after the commit, so that a body whose deliveries went, and
/// which a later change of the same transaction refers to again (a message handed on to
/// another member of a shared subscription), is kept, and a failed transaction changes no
/// count.
pub(crate) fn settle(t: &mut Tally, log: &mut BodyLog) {
    let refs = t
        .refs
        .drain()
        .filter_map(|(id, n)| u64::try_from(id).ok().map(|id| (id, n)));
    log.settle(refs);
}

// ---- decoding rows: every value range-checked, every failure a message, never a panic ----

fn text(row: &Row<'_>, i: usize) -> Result<String, String> {
    row.get::<_, String>(i)
        .map_err(|e| format!("column {i}: {e}"))
}

fn opt_text(row: &Row<'_>, i: usize) -> Result<Option<String>, String> {
    row.get::<_, Option<String>>(i)
        .map_err(|e| format!("column {i}: {e}"))
}

fn blob(row: &Row<'_>, i: usize) -> Result<Vec<u8>, String> {
    row.get::<_, Vec<u8>>(i)
        .map_err(|e| format!("column {i}: {e}"))
}

fn integer(row: &Row<'_>, i: usize) -> Result<i64, String> {
    row.get::<_, i64>(i).map_err(|e| format!("column {i}: {e}"))
}

fn opt_integer(row: &Row<'_>, i: usize) -> Result<Option<i64>, String> {
    row.get::<_, Option<i64>>(i)
        .map_err(|e| format!("column {i}: {e}"))
}

fn ranged<T: TryFrom<i64>>(row: &Row<'_>, i: usize, max: i64) -> Result<T, String> {
    let v = integer(row, i)?;
    if !(0..=max).contains(&v) {
        return Err(format!("column {i}: {v} out of range 0..={max}"));
    }
    T::try_from(v).map_err(|_| format!("column {i}: {v} out of range"))
}

fn unix_time(v: Option<i64>) -> Result<Option<u64>, String> {
    match v {
        None => Ok(None),
        Some(t) => u64::try_from(t)
            .map(Some)
            .map_err(|_| format!("negative time {t}")),
    }
}

fn qos(row: &Row<'_>, i: usize) -> Result<u8, String> {
    ranged(row, i, 2)
}

fn flag(row: &Row<'_>, i: usize) -> Result<bool, String> {
    Ok(ranged::<u8>(row, i, 1)? == 1)
}

fn parse_sub_ids(s: &str) -> Result<Vec<u32>, String> {
    if s.is_empty() {
        return Ok(Vec::new());
    }
    s.split(',')
        .map(|p| {
            p.parse::<u32>()
                .ok()
                .filter(|id| *id <= MAX_SUB_ID)
                .ok_or_else(|| format!("bad subscription identifier list {s:?}"))
        })
        .collect()
}

/// Largest MQTT 5 subscription identifier (a variable byte integer).
const MAX_SUB_ID: u32 = crate::codec::MAX_VARINT;

/// The six message columns (topic, payload, qos, retain, properties, expires_at) that start
/// at column `first`: the retained table and the table of bodies store them alike.
fn stored_message(row: &Row<'_>, first: usize) -> Result<StoredMessage, String> {
    Ok(StoredMessage {
        topic: text(row, first)?,
        payload: blob(row, first + 1)?,
        qos: qos(row, first + 2)?,
        retain: flag(row, first + 3)?,
        properties: blob(row, first + 4)?,
        expires_at: unix_time(opt_integer(row, first + 5)?)?,
        source: None,
    })
}

fn decode_retained(row: &Row<'_>) -> Result<Change, String> {
    let mut message = stored_message(row, 1)?;
    message.source = match opt_text(row, 7)? {
        Some(client_id) => Some(MessageSource {
            client_id,
            username: opt_text(row, 8)?,
            listener: ranged(row, 9, u16::MAX.into())?,
        }),
        None => None,
    };
    Ok(Change::RetainedSet {
        message: Box::new(message),
    })
}

fn decode_session(row: &Row<'_>) -> Result<Change, String> {
    let protocol: u8 = ranged(row, 2, 5)?;
    if protocol < 3 {
        return Err(format!("protocol level {protocol}"));
    }
    let expiry = match opt_integer(row, 3)? {
        None => SessionExpiry::Never,
        Some(secs) => SessionExpiry::After(
            u32::try_from(secs).map_err(|_| format!("expiry interval {secs}"))?,
        ),
    };
    Ok(Change::SessionUpsert {
        session: SessionRecord {
            client_id: text(row, 1)?,
            protocol,
            expiry,
            expires_at: unix_time(opt_integer(row, 4)?)?,
        },
    })
}

fn decode_subscription(row: &Row<'_>) -> Result<Change, String> {
    Ok(Change::SubscriptionSet {
        client_id: text(row, 1)?.into(),
        subscription: Subscription {
            filter: text(row, 2)?,
            options: ranged(row, 3, 255)?,
            sub_id: ranged(row, 4, i64::from(MAX_SUB_ID))?,
        },
    })
}

fn decode_body(row: &Row<'_>) -> Result<Change, String> {
    Ok(Change::MessageBody {
        id: ranged(row, 1, i64::MAX)?,
        message: Box::new(stored_message(row, 2)?),
    })
}

fn decode_delivery(row: &Row<'_>) -> Result<Change, String> {
    Ok(Change::MessageAdd {
        client_id: text(row, 1)?.into(),
        message: queued_message(row, 2)?,
    })
}

/// The seven delivery columns (seq, packet_id, state, qos, retain, sub_ids, body) that start at
/// column `first`.
fn queued_message(row: &Row<'_>, first: usize) -> Result<QueuedMessage, String> {
    let state_code = integer(row, first + 2)?;
    let state =
        MessageState::from_code(state_code).ok_or_else(|| format!("message state {state_code}"))?;
    Ok(QueuedMessage {
        seq: ranged(row, first, i64::MAX)?,
        packet_id: ranged(row, first + 1, 65535)?,
        state,
        qos: qos(row, first + 3)?,
        retain: flag(row, first + 4)?,
        sub_ids: parse_sub_ids(&text(row, first + 5)?)?.into(),
        body: ranged(row, first + 6, i64::MAX)?,
    })
}

fn decode_qos2(row: &Row<'_>) -> Result<Change, String> {
    Ok(Change::Qos2Add {
        client_id: text(row, 1)?.into(),
        packet_id: ranged(row, 2, 65535)?,
    })
}

fn decode_will(row: &Row<'_>) -> Result<Change, String> {
    Ok(Change::WillSet {
        will: Box::new(WillRecord {
            client_id: text(row, 1)?,
            topic: text(row, 2)?,
            payload: blob(row, 3)?,
            qos: qos(row, 4)?,
            retain: flag(row, 5)?,
            properties: blob(row, 6)?,
            due_at: ranged(row, 7, i64::MAX)?,
        }),
    })
}

/// Builds a [`Snapshot`] from decoded rows, in any order.
#[derive(Default)]
pub(crate) struct Assembly {
    retained: BTreeMap<String, StoredMessage>,
    sessions: BTreeMap<String, SessionRecord>,
    subscriptions: BTreeMap<String, BTreeMap<String, Subscription>>,
    bodies: BTreeMap<u64, StoredMessage>,
    /// What each session's queue holds beyond the messages read.
    rest: BTreeMap<String, QueueRest>,
    messages: BTreeMap<String, BTreeMap<u64, QueuedMessage>>,
    qos2: BTreeMap<String, Vec<u16>>,
    wills: BTreeMap<String, WillRecord>,
}

impl Assembly {
    /// Adds one decoded row (a `*Set`/`*Add`/`SessionUpsert` change).
    pub(crate) fn add(&mut self, change: Change) {
        match change {
            Change::RetainedSet { message } => {
                self.retained.insert(message.topic.clone(), *message);
            }
            Change::SessionUpsert { session } => {
                self.sessions.insert(session.client_id.clone(), session);
            }
            Change::SubscriptionSet {
                client_id,
                subscription,
            } => {
                self.subscriptions
                    .entry(client_id.to_string())
                    .or_default()
                    .insert(subscription.filter.clone(), subscription);
            }
            Change::MessageBody { id, message } => {
                self.bodies.insert(id, *message);
            }
            Change::MessageAdd { client_id, message } => {
                self.messages
                    .entry(client_id.to_string())
                    .or_default()
                    .insert(message.seq, message);
            }
            Change::Qos2Add {
                client_id,
                packet_id,
            } => self
                .qos2
                .entry(client_id.to_string())
                .or_default()
                .push(packet_id),
            Change::WillSet { will } => {
                self.wills.insert(will.client_id.clone(), *will);
            }
            // Rows decode only to the variants above.
            _ => {}
        }
    }

    /// The snapshot, and how many rows hung off sessions or bodies that do not exist (left
    /// out). Bodies no message refers to are left out too.
    pub(crate) fn finish(mut self) -> (Snapshot, u64) {
        let mut bodies = BTreeMap::new();
        let mut bodiless = 0;
        for queue in self.messages.values_mut() {
            queue.retain(|_, m| match self.bodies.get(&m.body) {
                Some(body) => {
                    bodies.entry(m.body).or_insert_with(|| body.clone());
                    true
                }
                None => {
                    bodiless += 1;
                    false
                }
            });
        }
        let mut sessions = Vec::with_capacity(self.sessions.len());
        for (client_id, session) in std::mem::take(&mut self.sessions) {
            let subscriptions = self
                .subscriptions
                .remove(&client_id)
                .map(|m| m.into_values().collect())
                .unwrap_or_default();
            let messages = self
                .messages
                .remove(&client_id)
                .map(|m| m.into_values().collect())
                .unwrap_or_default();
            let mut qos2_inbound = self.qos2.remove(&client_id).unwrap_or_default();
            qos2_inbound.sort_unstable();
            qos2_inbound.dedup();
            sessions.push(SessionState {
                session,
                subscriptions,
                messages,
                more: self.rest.remove(&client_id).unwrap_or_default(),
                qos2_inbound,
            });
        }
        let orphans = self.subscriptions.values().map(|m| m.len()).sum::<usize>()
            + self.messages.values().map(|m| m.len()).sum::<usize>()
            + self.qos2.values().map(|v| v.len()).sum::<usize>()
            + bodiless;
        let snapshot = Snapshot {
            retained: self.retained.into_values().collect(),
            last_body: bodies.keys().next_back().copied().unwrap_or(0),
            bodies,
            sessions,
            wills: self.wills.into_values().collect(),
            recovery: None,
        };
        (snapshot, orphans as u64)
    }
}

/// Deletes subscriptions, deliveries and QoS 2 ids of sessions that do not exist (the broker
/// could not use them, and a later session with the same id must not inherit them). Returns
/// how many rows went. (Deliveries whose body the log cannot find go in
/// [`BodyLog::rebuild`].)
pub(crate) fn delete_orphans(conn: &Connection) -> rusqlite::Result<usize> {
    let mut n = conn.execute(
        "DELETE FROM deliveries WHERE session NOT IN (SELECT rowid FROM sessions)",
        [],
    )?;
    for table in ["subscriptions", "qos2_inbound"] {
        n += conn.execute(
            &format!("DELETE FROM {table} WHERE client_id NOT IN (SELECT client_id FROM sessions)"),
            [],
        )?;
    }
    Ok(n)
}

/// Reads the messages of `client_id` after `after` in `seq` order, with the bodies they refer
/// to: at most `max_messages`, and no more than `max_bytes` (topic plus payload) beyond the
/// first. Rows with invalid values are skipped, logged and deleted. This is how the rest of a
/// long queue comes back while it drains; `seq` being the rowid, the page is a range of the
/// table from `after` (other sessions' rows in it are passed over).
pub(crate) fn read_messages_page(
    conn: &Connection,
    log: &mut BodyLog,
    client_id: &str,
    after: u64,
    max_messages: usize,
    max_bytes: usize,
) -> rusqlite::Result<(Vec<QueuedMessage>, BTreeMap<u64, StoredMessage>)> {
    let mut messages = Vec::new();
    let mut bodies = BTreeMap::new();
    let session: Option<i64> = conn
        .prepare_cached("SELECT rowid FROM sessions WHERE client_id = ?1")?
        .query_row([client_id], |r| r.get(0))
        .optional()?;
    let Some(session) = session else {
        return Ok((messages, bodies));
    };
    let mut invalid: Vec<i64> = Vec::new();
    let mut bytes = 0usize;
    {
        let mut stmt = conn.prepare_cached(
            "SELECT session, seq, packet_id, state, qos, retain, sub_ids, body
             FROM deliveries WHERE seq > ?2 AND session = ?1 ORDER BY seq",
        )?;
        // Rows are stepped through one at a time: the page stops where its bounds say.
        let mut rows = stmt.query(params![session, int(after)])?;
        while messages.len() < max_messages {
            let Some(row) = rows.next()? else {
                break;
            };
            let read = queued_message(row, 1).and_then(|mut q| {
                let body = log.read(q.body)?;
                // The broker knows the body by its own id.
                q.body = log.id_at(q.body).unwrap_or(q.body);
                Ok((q, body))
            });
            match read {
                Ok((q, body)) => {
                    let size = body.topic.len() + body.payload.len();
                    if !messages.is_empty() && bytes + size > max_bytes {
                        break;
                    }
                    bytes += size;
                    bodies.insert(q.body, body);
                    messages.push(q);
                }
                Err(why) => {
                    let seq = row.get::<_, i64>(1)?;
                    log::warn!("store: deliveries row {seq} skipped and deleted: {why}");
                    invalid.push(seq);
                }
            }
        }
    }
    drop_deliveries(conn, log, &invalid)?;
    Ok((messages, bodies))
}

/// Points the deliveries of bodies in log segment `segment` to where the compaction copied
/// them (`moved`: old and new location), and deletes those of bodies it could not read
/// (`lost`), in one transaction. One scan of `deliveries` (it has no index by body).
pub(crate) fn relocate(
    conn: &mut Connection,
    segment: u32,
    moved: &[(u64, u64)],
    lost: &[u64],
) -> rusqlite::Result<()> {
    let (lo, hi) = BodyLog::range(segment);
    let moved: HashMap<u64, u64> = moved.iter().copied().collect();
    let tx = conn.transaction()?;
    let mut rows: Vec<(i64, u64)> = Vec::new();
    {
        let mut stmt =
            tx.prepare("SELECT seq, body FROM deliveries WHERE body BETWEEN ?1 AND ?2")?;
        let mut query = stmt.query([int(lo), int(hi)])?;
        while let Some(row) = query.next()? {
            let body: i64 = row.get(1)?;
            rows.push((row.get(0)?, u64::try_from(body).unwrap_or(0)));
        }
    }
    for (seq, body) in rows {
        if let Some(&new) = moved.get(&body) {
            tx.execute(
                "UPDATE deliveries SET body = ?2 WHERE seq = ?1",
                params![seq, int(new)],
            )?;
        } else if lost.contains(&body) {
            tx.execute("DELETE FROM deliveries WHERE seq = ?1", [seq])?;
        }
    }
    tx.commit()
}

/// Deletes the deliveries `seqs` (invalid or bodiless rows), their bodies losing a reference
/// each.
fn drop_deliveries(conn: &Connection, log: &mut BodyLog, seqs: &[i64]) -> rusqlite::Result<()> {
    let mut t = Tally::default();
    for &seq in seqs {
        let body: Option<i64> = conn
            .prepare_cached("DELETE FROM deliveries WHERE seq = ?1 RETURNING body")?
            .query_row([seq], |r| r.get(0))
            .optional()?;
        if let Some(body) = body {
            released(&mut t, log, body, 1);
        }
    }
    settle(&mut t, log);
    Ok(())
}

/// Reads every session's deliveries in one pass, in `seq` order: the head of each queue
/// ([`QUEUE_HEAD_MESSAGES`], [`QUEUE_HEAD_BYTES`]) goes into `assembly` with the bodies it
/// refers to; the rest is only counted, and stays in the store. Rows with invalid values are
/// skipped, logged and deleted.
fn read_queues(
    conn: &Connection,
    log: &mut BodyLog,
    assembly: &mut Assembly,
) -> rusqlite::Result<()> {
    let mut clients: HashMap<i64, String> = HashMap::new();
    {
        let mut stmt = conn.prepare("SELECT rowid, client_id FROM sessions")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            if let (Ok(rowid), Ok(client_id)) = (row.get(0), row.get(1)) {
                clients.insert(rowid, client_id);
            }
        }
    }
    // Per session: messages and bytes in the head, and whether it is full.
    let mut heads: HashMap<i64, (usize, usize, bool)> = HashMap::new();
    let mut wanted: BTreeSet<u64> = BTreeSet::new();
    let mut invalid: Vec<i64> = Vec::new();
    {
        let mut stmt = conn.prepare(
            "SELECT session, seq, packet_id, state, qos, retain, sub_ids, body
             FROM deliveries ORDER BY seq",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let session: i64 = row.get(0)?;
            // A delivery of no session: `delete_orphans` took it at the start already.
            let Some(client_id) = clients.get(&session) else {
                continue;
            };
            let sized = queued_message(row, 1).and_then(|q| match log.size(q.body) {
                Some(size) => Ok((q, size)),
                None => Err(format!("body {} is not in the log", q.body)),
            });
            let (q, size) = match sized {
                Ok(sized) => sized,
                Err(why) => {
                    let seq = row.get::<_, i64>(1)?;
                    log::warn!("store: deliveries row {seq} skipped and deleted: {why}");
                    invalid.push(seq);
                    continue;
                }
            };
            let (count, bytes, full) = heads.entry(session).or_default();
            if !*full
                && *count < QUEUE_HEAD_MESSAGES
                && (*count == 0 || bytes.saturating_add(size) <= QUEUE_HEAD_BYTES)
            {
                *count += 1;
                *bytes = bytes.saturating_add(size);
                wanted.insert(q.body);
                let mut q = q;
                // The broker knows the body by its own id.
                q.body = log.id_at(q.body).unwrap_or(q.body);
                assembly.add(Change::MessageAdd {
                    client_id: client_id.as_str().into(),
                    message: q,
                });
            } else {
                *full = true;
                let rest = assembly.rest.entry(client_id.clone()).or_default();
                rest.count += 1;
                rest.bytes = rest.bytes.saturating_add(size as u64);
                rest.last_seq = q.seq;
            }
        }
    }
    drop_deliveries(conn, log, &invalid)?;
    let mut unreadable = Vec::new();
    for location in wanted {
        match log.read(location) {
            Ok(message) => assembly.add(Change::MessageBody {
                id: log.id_at(location).unwrap_or(location),
                message: Box::new(message),
            }),
            // Its deliveries are left out (no body) and deleted.
            Err(why) => {
                log::warn!("store: a queued message's body is unreadable: {why}");
                unreadable.push(location);
            }
        }
    }
    for location in unreadable {
        let seqs: Vec<i64> = conn
            .prepare("SELECT seq FROM deliveries WHERE body = ?1")?
            .query_map([int(location)], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        drop_deliveries(conn, log, &seqs)?;
    }
    Ok(())
}

/// Reads every table of a healthy store, but of each session's messages only the head of its
/// queue ([`QUEUE_HEAD_MESSAGES`], [`QUEUE_HEAD_BYTES`]) and the count of the rest. A read
/// error (a damaged page) is returned, so the caller can recover; rows with invalid values
/// are skipped, logged and deleted.
pub(crate) fn load(conn: &Connection, log: &mut BodyLog) -> rusqlite::Result<Snapshot> {
    let mut assembly = Assembly::default();
    for table in TABLES
        .iter()
        .filter(|t| !matches!(t.name, "bodies" | "deliveries"))
    {
        let mut invalid: Vec<i64> = Vec::new();
        {
            let mut stmt = conn.prepare(&format!(
                "SELECT rowid, {} FROM {} ORDER BY rowid",
                table.columns, table.name
            ))?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                match (table.decode)(row) {
                    Ok(change) => assembly.add(change),
                    Err(why) => {
                        let rowid = row.get::<_, i64>(0)?;
                        log::warn!(
                            "store: {} row {rowid} skipped and deleted: {why}",
                            table.name
                        );
                        invalid.push(rowid);
                    }
                }
            }
        }
        for rowid in invalid {
            conn.execute(
                &format!("DELETE FROM {} WHERE rowid = ?1", table.name),
                [rowid],
            )?;
        }
    }
    read_queues(conn, log, &mut assembly)?;
    let (mut snapshot, orphans) = assembly.finish();
    if orphans > 0 {
        log::warn!("store: {orphans} rows of unknown sessions left out");
    }
    snapshot.last_body = log.last_id();
    Ok(snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log's directory, removed at the end of the test.
    struct TempDir(std::path::PathBuf);

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn temp_log() -> (BodyLog, TempDir) {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("midge-schema-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        (BodyLog::open(&dir).unwrap(), TempDir(dir))
    }

    fn memory() -> (Connection, BodyLog, TempDir) {
        let conn = Connection::open_in_memory().unwrap();
        let (mut log, dir) = temp_log();
        create(&conn, &mut log).unwrap();
        (conn, log, dir)
    }

    #[test]
    fn sub_ids_round_trip_as_text() {
        for ids in [vec![], vec![1], vec![1, 268_435_455, 7]] {
            assert_eq!(parse_sub_ids(&sub_ids_text(&ids)).unwrap(), ids);
        }
        assert!(parse_sub_ids("1,,2").is_err());
        assert!(parse_sub_ids("268435456").is_err());
        assert!(parse_sub_ids("-1").is_err());
    }

    #[test]
    fn create_twice_keeps_one_version_row() {
        let (conn, mut log, _dir) = memory();
        create(&conn, &mut log).unwrap();
        let n: i64 = conn
            .query_row("SELECT count(*) FROM schema_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn newer_schema_is_refused() {
        let (conn, mut log, _dir) = memory();
        conn.execute("UPDATE schema_version SET version = 99", [])
            .unwrap();
        assert!(matches!(
            create(&conn, &mut log),
            Err(SchemaError::Newer(99))
        ));
    }

    #[test]
    fn out_of_range_values_are_invalid_rows() {
        let (conn, mut log, _dir) = memory();
        conn.execute_batch(
            "INSERT INTO sessions VALUES ('ok', 4, NULL, NULL);
             INSERT INTO sessions VALUES ('proto', 2, NULL, NULL);
             INSERT INTO sessions VALUES ('interval', 5, 4294967296, NULL);
             INSERT INTO sessions VALUES ('time', 5, 10, -5);
             INSERT INTO sessions VALUES (x'00ff', 5, 10, 5);
             INSERT INTO qos2_inbound VALUES ('ok', 65536);
             INSERT INTO qos2_inbound VALUES ('ok', 'text');
             INSERT INTO qos2_inbound VALUES ('ok', 3);",
        )
        .unwrap();
        let snapshot = load(&conn, &mut log).unwrap();
        assert_eq!(snapshot.sessions.len(), 1);
        assert_eq!(snapshot.sessions[0].session.client_id, "ok");
        assert_eq!(snapshot.sessions[0].qos2_inbound, vec![3]);
        // The invalid rows were deleted.
        let n: i64 = conn
            .query_row("SELECT count(*) FROM sessions", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn a_page_skips_and_deletes_invalid_rows() {
        let (conn, mut log, _dir) = memory();
        apply_all(
            &conn,
            &mut log,
            &[
                session("c"),
                session("d"),
                body(1),
                body(2),
                add("c", 1, 1),
                add("c", 2, 1),
                add("d", 3, 1),
                add("c", 4, 2),
                add("c", 5, 2),
            ],
        );
        conn.execute("UPDATE deliveries SET state = 9 WHERE seq = 2", [])
            .unwrap();
        let (page, bodies) = read_messages_page(&conn, &mut log, "c", 0, 2, usize::MAX).unwrap();
        let seqs: Vec<u64> = page.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, [1, 4], "state 9 is invalid, 3 is d's");
        assert_eq!(bodies.keys().copied().collect::<Vec<_>>(), [1, 2]);
        let n: i64 = conn
            .query_row("SELECT count(*) FROM deliveries", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 4, "the invalid row was deleted");
        let (page, _) = read_messages_page(&conn, &mut log, "c", 4, 10, usize::MAX).unwrap();
        assert_eq!(page.iter().map(|m| m.seq).collect::<Vec<_>>(), [5]);
    }

    #[test]
    fn a_start_reads_the_head_of_each_queue_and_counts_the_rest() {
        let (conn, mut log, _dir) = memory();
        let big = Change::MessageBody {
            id: 7,
            message: Box::new(StoredMessage {
                topic: "big".into(),
                payload: vec![0; 600_000],
                qos: 1,
                ..StoredMessage::default()
            }),
        };
        apply_all(
            &conn,
            &mut log,
            &[
                session("c"),
                session("d"),
                big,
                body(8),
                add("c", 1, 7),
                add("d", 2, 8),
                add("c", 3, 7),
                add("c", 4, 8),
            ],
        );
        let snapshot = load(&conn, &mut log).unwrap();
        let c = &snapshot.sessions[0];
        // The first message always; the second would pass QUEUE_HEAD_BYTES, and the rest stays
        // behind it, however small.
        assert_eq!(c.messages.iter().map(|m| m.seq).collect::<Vec<_>>(), [1]);
        assert_eq!(
            (c.more.count, c.more.bytes, c.more.last_seq),
            (2, 600_003 + 2, 4)
        );
        assert_eq!(snapshot.sessions[1].messages[0].seq, 2);
        assert_eq!(snapshot.bodies.keys().copied().collect::<Vec<_>>(), [7, 8]);
        // Above every id and every location in the log.
        assert!(snapshot.last_body > 8, "{}", snapshot.last_body);
    }

    #[test]
    fn rows_of_unknown_sessions_are_orphans() {
        let mut a = Assembly::default();
        a.add(Change::Qos2Add {
            client_id: "ghost".into(),
            packet_id: 1,
        });
        let (snapshot, orphans) = a.finish();
        assert!(snapshot.sessions.is_empty());
        assert_eq!(orphans, 1);
    }

    #[test]
    fn message_state_codes_round_trip() {
        for s in [
            MessageState::Queued,
            MessageState::AwaitPuback,
            MessageState::AwaitPubrec,
            MessageState::AwaitPubcomp,
        ] {
            assert_eq!(MessageState::from_code(i64::from(s.code())), Some(s));
        }
        assert_eq!(MessageState::from_code(4), None);
    }

    fn session(client_id: &str) -> Change {
        Change::SessionUpsert {
            session: SessionRecord {
                client_id: client_id.into(),
                protocol: 4,
                expiry: SessionExpiry::Never,
                expires_at: None,
            },
        }
    }

    fn body(id: u64) -> Change {
        Change::MessageBody {
            id,
            message: Box::new(StoredMessage {
                topic: "t".into(),
                payload: vec![id as u8],
                qos: 1,
                ..StoredMessage::default()
            }),
        }
    }

    fn add(client_id: &str, seq: u64, body: u64) -> Change {
        crate::store::model::queued_add(client_id, seq, body)
    }

    fn delete(client_id: &str, seq: u64) -> Change {
        Change::MessageDelete {
            client_id: client_id.into(),
            seq,
        }
    }

    /// Applies `changes` as one transaction does.
    fn apply_all(conn: &Connection, log: &mut BodyLog, changes: &[Change]) {
        let mut t = Tally::default();
        for c in changes {
            apply(conn, c, &mut t, log).unwrap();
        }
        log.flush().unwrap();
        settle(&mut t, log);
    }

    /// (id, refs) of every live body.
    fn bodies(log: &BodyLog) -> Vec<(u64, u32)> {
        log.refs()
    }

    #[test]
    fn a_body_goes_with_its_last_delivery() {
        let (conn, mut log, _dir) = memory();
        apply_all(
            &conn,
            &mut log,
            &[
                session("a"),
                session("b"),
                body(1),
                add("a", 1, 1),
                add("b", 2, 1),
            ],
        );
        assert_eq!(bodies(&log), [(1, 2)]);
        apply_all(&conn, &mut log, &[delete("a", 1), delete("b", 1)]);
        assert_eq!(bodies(&log), [(1, 1)], "b's seq 1 is not b's delivery");
        // Replacing a delivery takes the old body's reference.
        apply_all(&conn, &mut log, &[body(2), add("b", 2, 2)]);
        assert_eq!(bodies(&log), [(2, 1)]);
        apply_all(
            &conn,
            &mut log,
            &[Change::SessionDelete {
                client_id: "b".into(),
            }],
        );
        assert_eq!(bodies(&log), []);
    }

    #[test]
    fn deletions_go_by_runs_of_numbers_and_release_their_bodies() {
        let (conn, mut log, _dir) = memory();
        apply_all(
            &conn,
            &mut log,
            &[
                session("a"),
                session("b"),
                body(1),
                body(2),
                add("a", 1, 1),
                add("b", 2, 1),
                add("a", 3, 2),
                add("b", 5, 2),
            ],
        );
        let mut t = Tally::default();
        let mut seqs = vec![5, 1, 2, 5];
        delete_deliveries(&conn, &mut seqs, &mut t, &log).unwrap();
        log.flush().unwrap();
        settle(&mut t, &mut log);
        assert!(seqs.is_empty());
        let left: Vec<i64> = conn
            .prepare("SELECT seq FROM deliveries ORDER BY seq")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(left, [3], "1 and 2 in one run, 5 alone, 3 kept");
        assert_eq!(bodies(&log), [(2, 1)], "body 1 lost both deliveries");
    }

    /// The writer's counts of deliveries per session follow adds, deletes, replacements and
    /// ends, so that a session known to have none is not looked for, and one that has some is
    /// emptied.
    #[test]
    fn counted_deliveries_follow_the_changes() {
        let (conn, mut log, _dir) = memory();
        let mut t = Tally::default();
        t.count(&conn).unwrap();
        let end = |c: &str| Change::SessionDelete {
            client_id: c.into(),
        };
        for c in [
            session("a"),
            session("b"),
            session("c"),
            body(1),
            add("a", 1, 1),
            add("b", 2, 1),
            add("a", 3, 1),
            add("a", 3, 1),
            delete("a", 1),
            delete("c", 2),
            end("c"),
            add("c", 4, 1),
            end("b"),
        ] {
            apply(&conn, &c, &mut t, &mut log).unwrap();
        }
        log.flush().unwrap();
        settle(&mut t, &mut log);
        let kept = t.queued.clone().unwrap();
        let mut recount = Tally::default();
        recount.count(&conn).unwrap();
        let nonzero = |q: HashMap<i64, u64>| -> BTreeMap<i64, u64> {
            q.into_iter().filter(|(_, n)| *n > 0).collect()
        };
        assert_eq!(nonzero(kept), nonzero(recount.queued.unwrap()));
        apply(&conn, &end("a"), &mut t, &mut log).unwrap();
        log.flush().unwrap();
        settle(&mut t, &mut log);
        let n: i64 = conn
            .query_row("SELECT count(*) FROM deliveries", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0);
        assert_eq!(bodies(&log), []);
    }

    /// A fan-out and its acknowledgements in one transaction leave the body's count right
    /// (the count changes once, at the end); a delivery naming a body the store does not hold
    /// is not kept; a session that ends and is created again gets a new rowid, not a stale one.
    #[test]
    fn reference_counts_change_once_per_transaction() {
        let (conn, mut log, _dir) = memory();
        let mut t = Tally::default();
        let mut changes = vec![body(1)];
        for s in ["a", "b", "c", "d"] {
            changes.push(session(s));
            changes.push(add(s, 0, 1));
        }
        for (i, change) in changes.iter_mut().enumerate() {
            if let Change::MessageAdd { message, .. } = change {
                message.seq = i as u64;
            }
        }
        changes.push(delete("a", 2));
        changes.push(delete("b", 4));
        changes.push(add("a", 100, 7));
        for c in &changes {
            apply(&conn, c, &mut t, &mut log).unwrap();
        }
        log.flush().unwrap();
        settle(&mut t, &mut log);
        assert_eq!(bodies(&log), [(1, 2)]);
        let seqs: Vec<i64> = conn
            .prepare("SELECT seq FROM deliveries ORDER BY seq")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            seqs,
            [6, 8],
            "c's and d's stay; the one naming body 7 is gone"
        );
        let end = Change::SessionDelete {
            client_id: "c".into(),
        };
        for c in [end, session("c"), add("c", 200, 1), delete("d", 8)] {
            apply(&conn, &c, &mut t, &mut log).unwrap();
        }
        log.flush().unwrap();
        settle(&mut t, &mut log);
        assert_eq!(bodies(&log), [(1, 1)]);
        let c_rowid: i64 = conn
            .query_row(
                "SELECT rowid FROM sessions WHERE client_id = 'c'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let owner: i64 = conn
            .query_row("SELECT session FROM deliveries WHERE seq = 200", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(owner, c_rowid);
    }

    #[test]
    fn a_body_released_and_referred_to_again_in_one_transaction_stays() {
        let (conn, mut log, _dir) = memory();
        apply_all(
            &conn,
            &mut log,
            &[session("a"), session("b"), body(1), add("a", 1, 1)],
        );
        // A shared subscription hands the message on to b as a ends.
        apply_all(
            &conn,
            &mut log,
            &[
                Change::SessionDelete {
                    client_id: "a".into(),
                },
                add("b", 2, 1),
            ],
        );
        assert_eq!(bodies(&log), [(1, 1)]);
        let snapshot = load(&conn, &mut log).unwrap();
        assert_eq!(snapshot.sessions[0].messages[0].body, 1);
        assert_eq!(snapshot.bodies.len(), 1);
    }

    /// At open: deliveries of no session go, and so do those whose body the log cannot read
    /// (a location past a segment's end, in no segment); the counts are those of the rows
    /// left, and a body nothing refers to is not live.
    #[test]
    fn orphan_and_bodiless_deliveries_are_deleted_and_counts_rebuilt() {
        let (conn, mut log, _dir) = memory();
        apply_all(
            &conn,
            &mut log,
            &[session("a"), body(1), body(2), add("a", 1, 1)],
        );
        let one = log.location(1).unwrap() as i64;
        conn.execute_batch(&format!(
            "INSERT INTO deliveries VALUES (6, (SELECT rowid FROM sessions), 0, 0, 1, 0, '', {one});
             INSERT INTO deliveries VALUES (7, 99, 0, 0, 1, 0, '', {one});
             INSERT INTO deliveries VALUES (8, (SELECT rowid FROM sessions), 0, 0, 1, 0, '', {});
             INSERT INTO deliveries VALUES (9, (SELECT rowid FROM sessions), 0, 0, 1, 0, '', 5);",
            one + 100_000
        ))
        .unwrap();
        assert_eq!(delete_orphans(&conn).unwrap(), 1);
        assert_eq!(log.rebuild(&conn).unwrap(), 2);
        assert_eq!(bodies(&log), [(one as u64, 2)]);
        let snapshot = load(&conn, &mut log).unwrap();
        let seqs: Vec<u64> = snapshot.sessions[0]
            .messages
            .iter()
            .map(|m| m.seq)
            .collect();
        assert_eq!(seqs, [1, 6]);
        assert_eq!(snapshot.last_body, one as u64);
    }

    #[test]
    fn a_version_2_store_is_migrated() {
        let conn = Connection::open_in_memory().unwrap();
        let (mut log, _dir) = temp_log();
        conn.execute_batch(
            "CREATE TABLE schema_version (version INTEGER NOT NULL);
             INSERT INTO schema_version VALUES (2);
             CREATE TABLE sessions (client_id TEXT NOT NULL UNIQUE, protocol INTEGER NOT NULL,
                 expiry_interval INTEGER, expires_at INTEGER);
             CREATE TABLE messages (client_id TEXT NOT NULL, seq INTEGER NOT NULL,
                 packet_id INTEGER NOT NULL, state INTEGER NOT NULL, qos INTEGER NOT NULL,
                 retain INTEGER NOT NULL, sub_ids TEXT NOT NULL, topic TEXT NOT NULL,
                 payload BLOB NOT NULL, msg_qos INTEGER NOT NULL, msg_retain INTEGER NOT NULL,
                 properties BLOB NOT NULL, expires_at INTEGER, UNIQUE (client_id, seq));
             INSERT INTO sessions VALUES ('b', 4, NULL, NULL), ('a', 5, 60, NULL);
             INSERT INTO messages VALUES ('a', 9, 3, 1, 1, 0, '4', 't/1', x'01', 2, 0, x'', 7);
             INSERT INTO messages VALUES ('b', 1, 0, 0, 1, 1, '', 't/2', x'02', 1, 1, x'', NULL);
             INSERT INTO messages VALUES ('a', 2, 0, 0, 1, 0, '', 't/3', x'03', 1, 0, x'', NULL);
             INSERT INTO messages VALUES ('x', 1, 0, 0, 1, 0, '', 't/4', x'04', 1, 0, x'', NULL);",
        )
        .unwrap();
        create(&conn, &mut log).unwrap();
        let version: i64 = conn
            .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, 4);
        log.rebuild(&conn).unwrap();
        let snapshot = load(&conn, &mut log).unwrap();
        let queue = |i: usize| -> Vec<(u64, u16, String, Vec<u8>)> {
            snapshot.sessions[i]
                .messages
                .iter()
                .map(|m| {
                    let b = &snapshot.bodies[&m.body];
                    (m.seq, m.packet_id, b.topic.clone(), b.payload.clone())
                })
                .collect()
        };
        // Renumbered across the store, each session's order kept; x had no session.
        assert_eq!(
            queue(0),
            [(1, 0, "t/3".into(), vec![3]), (2, 3, "t/1".into(), vec![1])]
        );
        assert_eq!(queue(1), [(3, 0, "t/2".into(), vec![2])]);
        let inflight = &snapshot.sessions[0].messages[1];
        assert_eq!(
            (inflight.state, inflight.qos, inflight.sub_ids.as_slice()),
            (MessageState::AwaitPuback, 1, &[4][..])
        );
        let b = &snapshot.bodies[&inflight.body];
        assert_eq!((b.qos, b.expires_at), (2, Some(7)));
        assert_eq!(bodies(&log).len(), 3);
    }
}
