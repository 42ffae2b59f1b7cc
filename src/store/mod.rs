//! The durable store: what `persistence true` keeps across a restart, in SQLite, and the
//! bodies of queued messages in an append-only log beside it.
//!
//! # What it owns, what it must not do
//! The store owns its file (`midge.db` in `persistence_location`, unless `persistence_file`
//! names another), the body log beside it (`midge.db-bodies/`, see `bodylog.rs`: a queued
//! message's topic, payload and properties, written once and referred to by each session's
//! delivery row) and one helper thread, the *writer*, which owns the SQLite connection and the
//! log. It
//! holds no broker state and makes no decisions: the broker hands it [`Change`]s (plain data,
//! see `model.rs`) and learns back, through [`Store::committed`] and the `notify` callback,
//! which batches are committed. The broker's loop never waits on the disk.
//!
//! # Flow
//! 1. [`Store::open`] runs at start-up on the caller's thread: it opens (or creates) the file,
//!    checks it (`PRAGMA quick_check`), reads it into a [`Snapshot`] (of each session's queue,
//!    only its head: [`QUEUE_HEAD_MESSAGES`]) and starts the writer. A damaged file is moved
//!    aside and salvaged first (see `recover.rs`).
//! 2. Each loop turn, the broker passes everything it accepted in that turn to
//!    [`Store::submit`], which numbers the batch and queues it for the writer. The broker holds
//!    back the acknowledgements (PUBACK/PUBREC...) of that turn.
//! 3. The writer applies queued batches in one transaction (group commit: batches that queued
//!    up while it was busy share a commit): it appends the batch's new bodies to the body log
//!    (`write(2)`), then commits the rows that refer to them; it stores the highest batch
//!    number in an atomic and
//!    calls `notify` (the broker passes a closure that wakes the mio loop with a `mio::Waker`).
//!    The loop then sends the acknowledgements of every batch up to [`Store::committed`].
//! 4. At most every `sync_interval`, when there were commits, the writer fdatasyncs the body
//!    log's segments written since the last sync, then fsyncs the WAL; once
//!    the WAL holds [`CHECKPOINT_BYTES`] it checkpoints it into the main file instead
//!    (which fsyncs both). Then it deletes the log segments no delivery refers to any more, and,
//!    with nothing pending, compacts one that is mostly dead. [`Store::sync_now`] (SIGUSR1)
//!    checkpoints at once; [`Store::close`] (SIGTERM) commits what is queued, checkpoints and
//!    joins the thread.
//! 5. The rest of a long queue is read back a page at a time as it drains:
//!    [`Store::read_messages`] queues a [`PageRequest`] behind the batches already submitted;
//!    the writer commits those, reads the page, and calls `notify`; the loop takes it with
//!    [`Store::take_page`].
//!
//! # Durability bounds
//! SQLite runs in WAL mode with `synchronous=NORMAL`: a commit appends to `midge.db-wal` with
//! `write(2)` and no fsync, so it costs microseconds and the data is in the OS page cache.
//! - Process crash (SIGKILL, panic=abort): every committed batch survives; the OS writes the
//!   pages (the log's records were written before the commit that refers to them), and SQLite
//!   replays the WAL on the next open. Only batches submitted but not yet
//!   committed are lost, and the broker has not acknowledged those.
//! - Power loss / kernel crash: commits since the last sync may be lost, so at most
//!   `sync_interval` (plus the time the fsync itself takes) of acknowledged messages.
//!   SQLite's automatic checkpoints are off (the writer's WAL hook replaces them), so every
//!   fsync comes from the writer's timer, whatever the load: one group per interval at most,
//!   plus start-up and close; docs/store.md shows it with strace.
//! - SIGTERM / [`Store::close`]: everything submitted is committed and fsynced before return.
//!
//! # Mosquitto's file
//! `persistence_file` names the store (default `midge.db`), but midge never changes or deletes
//! a file that starts with Mosquitto's signature. A name that is Mosquitto's (its default
//! `mosquitto.db`, which Debian's stock configuration spells out, or a file that carries the
//! signature) gets `midge.db` beside it instead, with a warning, so one configuration serves
//! both brokers and each keeps its own file. When the store is new, Mosquitto's file, if there
//! is one, is read once and its retained messages and sessions are written into the store
//! (`import.rs`, `mosquitto.rs`).

mod bodylog;
mod compact;
mod import;
mod model;
pub mod mosquitto;
mod recover;
mod schema;

use bodylog::BodyLog;
pub use import::{convert as convert_mosquitto, ImportReport};
pub use model::*;
use schema::SCHEMA_VERSION;

use rusqlite::Connection;
use std::collections::VecDeque;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The store's file name inside `persistence_location` unless `persistence_file` says
/// otherwise.
pub(crate) const STORE_FILE: &str = "midge.db";

/// Mosquitto's default `persistence_file`: a name that always means Mosquitto's own file.
const MOSQUITTO_FILE: &str = "mosquitto.db";

/// The first bytes of a Mosquitto persistence file (`mosquitto.db`).
pub const MOSQUITTO_SIGNATURE: &[u8] = b"\x00\xB5\x00mosquitto db";

/// The WAL is truncated back to this size after a checkpoint that emptied it, so one burst of
/// traffic does not leave a large file behind.
const WAL_SIZE_LIMIT: i64 = 64 << 20;

/// WAL bytes from which a sync checkpoints the WAL into the main file rather than only
/// fsyncing it: SQLite's own automatic threshold (1000 pages of its default 4 KiB). Below it a
/// sync is one `fdatasync` of the WAL, and a page changed again and again is copied into the
/// main file once per checkpoint, not once per interval.
const CHECKPOINT_BYTES: u64 = 4000 * 1024;

/// SQLite's page size for the store: 1 KiB rather than SQLite's default 4 KiB. Each commit
/// appends every page it changed to the WAL, whole; the usual commit (messages queued for a
/// session, a message acknowledged) changes a row or a few in the last leaf page of
/// `deliveries`, so a commit writes a quarter of what it would with 4 KiB pages. Rows are
/// small (the bodies are in the body log), and a retained message of up to about 1 KB still
/// fits in one page.
const PAGE_SIZE: i64 = 1024;

/// How long the writer gathers batches before it commits them. The acknowledgements of a
/// batch wait for its commit, so this is added to their latency; in exchange, a QoS 1 message
/// whose subscribers all acknowledge it within that time is queued, sent and deleted in one
/// transaction, which `compact` turns into no page write at all.
const GATHER: Duration = Duration::from_millis(1);

/// How long a failed commit waits before it is tried again (a full disk, an I/O error).
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// Why the store could not be opened or closed cleanly.
#[derive(Debug)]
pub enum StoreError {
    /// Creating the directory, renaming a damaged file, starting the writer thread...
    Io(std::io::Error),
    /// SQLite refused something that is not damage (permissions, a full disk, a file that is
    /// not midge's).
    Sql(rusqlite::Error),
    /// The store's own file carries Mosquitto's signature: midge will not touch it.
    MosquittoFile(PathBuf),
    /// The store was written by a newer midge with a schema this one does not know.
    NewerSchema { found: i64, supported: i64 },
    /// Even a freshly created store reads as damaged.
    Corrupt(String),
    /// The writer thread ended abnormally.
    WriterGone,
    /// At close, some submitted batches could not be committed.
    Unsaved { committed: u64, submitted: u64 },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Io(e) => write!(f, "store: {e}"),
            StoreError::Sql(e) => write!(f, "store: {e}"),
            StoreError::MosquittoFile(p) => write!(
                f,
                "store: {} is a Mosquitto database; midge does not use it as its store",
                p.display()
            ),
            StoreError::NewerSchema { found, supported } => write!(
                f,
                "store: schema version {found} is newer than this midge supports ({supported})"
            ),
            StoreError::Corrupt(why) => write!(f, "store: damaged: {why}"),
            StoreError::WriterGone => write!(f, "store: the writer thread ended abnormally"),
            StoreError::Unsaved {
                committed,
                submitted,
            } => write!(
                f,
                "store: only batches up to {committed} of {submitted} could be committed"
            ),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> StoreError {
        StoreError::Io(e)
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        StoreError::Sql(e)
    }
}

/// What the writer and the broker's side share.
#[derive(Default)]
struct Shared {
    /// Highest batch number committed.
    committed: AtomicU64,
    /// False while commits are failing (they are retried).
    healthy: AtomicBool,
    /// Number of completed syncs (WAL fsyncs and checkpoints), for tests and `$SYS`.
    syncs: AtomicU64,
    /// Pages in the WAL after the last commit, as SQLite's WAL hook reports them.
    wal_pages: AtomicU32,
    /// Microseconds from the arrival of the oldest batch of the last commit to that commit:
    /// how long the acknowledgements it held waited for the store.
    last_commit_us: AtomicU64,
}

/// The store's health and work so far, as `$SYS/broker/store/...` shows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStatus {
    /// False while commits are failing (a full disk): acknowledgements wait.
    pub healthy: bool,
    /// Syncs (fsyncs of the WAL, checkpoints) completed since the store was opened.
    pub syncs: u64,
    /// Batches (one per loop turn with changes) committed since the store was opened.
    pub batches_committed: u64,
    /// Microseconds from the arrival of the oldest batch of the last commit to that commit.
    pub last_commit_us: u64,
}

enum Command {
    Batch(u64, Vec<Change>),
    Read(PageRequest),
    Sync,
    Close,
}

/// Handle to the durable store, owned by the broker's loop.
pub struct Store {
    sender: Option<Sender<Command>>,
    /// Pages of queued messages the writer read ([`Store::read_messages`]).
    pages: Receiver<MessagePage>,
    writer: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
    submitted: u64,
    /// Batches submitted and maybe not yet committed, with their number of changes, oldest
    /// first ([`Store::backlog`]).
    uncommitted: VecDeque<(u64, usize)>,
    /// The changes in `uncommitted`.
    uncommitted_changes: usize,
    path: PathBuf,
}

impl Store {
    /// Opens the store in `dir` (created if missing), reads it into a [`Snapshot`] and starts
    /// the writer thread.
    ///
    /// `configured_file` is the `persistence_file` option, the store's name (default
    /// `midge.db`); a name that is Mosquitto's file gets `midge.db` beside it (see
    /// `store_path`). A damaged store is moved aside and salvaged; the snapshot then says so
    /// in [`Snapshot::recovery`]. A store created now gets the data of Mosquitto's database in
    /// `dir`, if there is one (`import.rs`). `notify` runs on the writer thread after each
    /// commit.
    pub fn open(
        dir: &Path,
        configured_file: Option<&str>,
        sync_interval: Duration,
        notify: Box<dyn Fn() + Send>,
    ) -> Result<(Store, Snapshot), StoreError> {
        std::fs::create_dir_all(dir)?;
        let path = store_path(dir, configured_file)?;
        let new_store = std::fs::metadata(&path).map_or(true, |m| m.len() == 0);
        let mut log = BodyLog::open(&bodylog::dir_of(&path))?;
        let (mut conn, mut snapshot) = open_or_recover(&path, &mut log)?;
        if new_store {
            (conn, snapshot) =
                import::into_new_store(conn, snapshot, &mut log, dir, configured_file, &path)?;
        }
        if log.has_dead() {
            // Segments nothing refers to any more: deleted once that is durable.
            let wal = recover::with_suffix(&path, "-wal");
            match std::fs::File::open(&wal).and_then(|f| f.sync_data()) {
                Ok(()) => log.remove_dead(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => log.remove_dead(),
                Err(e) => log::warn!("store: {}: {e}", wal.display()),
            }
        }
        let shared = Arc::new(Shared::default());
        shared.healthy.store(true, Ordering::Relaxed);
        let pages = Arc::clone(&shared);
        // Replaces SQLite's automatic checkpoint, which is itself a WAL hook.
        conn.wal_hook(Some(
            move |_: &mut rusqlite::hooks::Wal, n: std::ffi::c_int| {
                let n = u32::try_from(n).unwrap_or(0);
                pages.wal_pages.store(n, Ordering::Relaxed);
                Ok(())
            },
        ))?;
        let wal_mode = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get::<_, String>(0))?
            .eq_ignore_ascii_case("wal");
        let page_size = conn.query_row("PRAGMA page_size", [], |r| r.get::<_, i64>(0))?;
        // An empty WAL gets its header (and the fsync SQLite gives it) now, not at the first
        // commit, between two ticks of the timer.
        restart_wal(&conn);
        let (sender, receiver) = mpsc::channel();
        let (page_sender, pages) = mpsc::channel();
        let writer = Writer {
            conn,
            log,
            receiver,
            pages: page_sender,
            reads: Vec::new(),
            tally: schema::Tally::default(),
            shared: Arc::clone(&shared),
            notify,
            interval: sync_interval,
            wal_path: recover::with_suffix(&path, "-wal"),
            wal_mode,
            page_size: u64::try_from(page_size).unwrap_or(4096),
            pending: Vec::new(),
            pending_since: None,
            dirty_since: None,
            retry_at: None,
            failures: 0,
        };
        let writer = std::thread::Builder::new()
            .name("midge-store".into())
            .spawn(move || writer.run())?;
        let store = Store {
            sender: Some(sender),
            pages,
            writer: Some(writer),
            shared,
            submitted: 0,
            uncommitted: VecDeque::new(),
            uncommitted_changes: 0,
            path,
        };
        Ok((store, snapshot))
    }

    /// Queues one batch (everything accepted in one loop turn) for the writer and returns its
    /// number; the batch is committed once [`Store::committed`] reaches that number. An empty
    /// batch is not queued: the number of the last batch is returned.
    pub fn submit(&mut self, mut changes: Vec<Change>) -> u64 {
        if changes.is_empty() {
            return self.submitted;
        }
        // The batch waits for the writer, behind a million others in a large fan-out: without
        // the room its vector grew by (up to as much again), which shrinks it in place.
        changes.shrink_to_fit();
        self.submitted += 1;
        let n = self.submitted;
        self.uncommitted.push_back((n, changes.len()));
        self.uncommitted_changes += changes.len();
        let sent = self
            .sender
            .as_ref()
            .map(|s| s.send(Command::Batch(n, changes)).is_ok())
            .unwrap_or(false);
        if !sent {
            log::error!("store: the writer thread is gone; batch {n} is not stored");
        }
        n
    }

    /// Asks the writer for a page of one session's stored messages. The writer reads it once
    /// every batch submitted before is committed (so the page holds what the broker recorded),
    /// then calls `notify`; the page is then ready for [`Store::take_page`]. Reading is the
    /// writer's work, never the loop's.
    pub fn read_messages(&self, request: PageRequest) {
        let sent = self
            .sender
            .as_ref()
            .is_some_and(|s| s.send(Command::Read(request)).is_ok());
        if !sent {
            log::error!("store: the writer thread is gone; queued messages cannot be read");
        }
    }

    /// A page the writer has read, if one is ready.
    pub fn take_page(&self) -> Option<MessagePage> {
        self.pages.try_recv().ok()
    }

    /// The highest batch number committed (every batch up to it is committed).
    pub fn committed(&self) -> u64 {
        self.shared.committed.load(Ordering::Acquire)
    }

    /// How many changes were submitted and are not committed yet: the writer's backlog, which
    /// holds that many changes in memory. The broker stops taking PUBLISHes that may be stored
    /// while it is long (TCP back-pressure instead of growing without bound).
    pub fn backlog(&mut self) -> usize {
        let committed = self.committed();
        while let Some(&(n, len)) = self.uncommitted.front() {
            if n > committed {
                break;
            }
            self.uncommitted.pop_front();
            self.uncommitted_changes -= len;
        }
        self.uncommitted_changes
    }

    /// The number of the last batch submitted.
    pub fn submitted(&self) -> u64 {
        self.submitted
    }

    /// False while commits are failing (a full disk, an I/O error); they are retried every
    /// second, and the broker's acknowledgements wait meanwhile.
    pub fn healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Relaxed)
    }

    /// How many times the store has been made durable (fsynced) since it was opened.
    pub fn syncs(&self) -> u64 {
        self.shared.syncs.load(Ordering::Relaxed)
    }

    /// The figures `$SYS` publishes about the store.
    pub fn status(&self) -> StoreStatus {
        StoreStatus {
            healthy: self.healthy(),
            syncs: self.syncs(),
            batches_committed: self.committed(),
            last_commit_us: self.shared.last_commit_us.load(Ordering::Relaxed),
        }
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Asks the writer to make every commit durable now and checkpoint the WAL into the main
    /// file (SIGUSR1, Mosquitto's "save now"); does not wait.
    pub fn sync_now(&self) {
        if let Some(s) = &self.sender {
            let _ = s.send(Command::Sync);
        }
    }

    /// Commits everything submitted, makes it durable and stops the writer (SIGTERM).
    pub fn close(mut self) -> Result<(), StoreError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), StoreError> {
        if let Some(sender) = self.sender.take() {
            let _ = sender.send(Command::Close);
        }
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                return Err(StoreError::WriterGone);
            }
        }
        let committed = self.committed();
        if committed < self.submitted {
            return Err(StoreError::Unsaved {
                committed,
                submitted: self.submitted,
            });
        }
        Ok(())
    }
}

impl Drop for Store {
    /// Dropping the store closes it as [`Store::close`] does, logging a failure.
    fn drop(&mut self) {
        if self.writer.is_some() {
            if let Err(e) = self.shutdown() {
                log::error!("{e}");
            }
        }
    }
}

/// The store's path: `configured_file` (a relative name inside `dir`, as Mosquitto's
/// `persistence_location` + `persistence_file`; an absolute one as it is), or `midge.db` in
/// `dir` when none is configured. A name that is Mosquitto's file, by its name `mosquitto.db` (Mosquitto may
/// create it later) or by its signature, is left to Mosquitto: the store is `midge.db` beside
/// it, and a warning says so. A store file that is Mosquitto's all the same is refused.
fn store_path(dir: &Path, configured_file: Option<&str>) -> Result<PathBuf, StoreError> {
    let path = match configured_file {
        None => dir.join(STORE_FILE),
        Some(name) => {
            let named = dir.join(name);
            let mosquittos = if named.file_name() == Some(MOSQUITTO_FILE.as_ref()) {
                Some("Mosquitto's own file name")
            } else if is_mosquitto_db(&named) {
                Some("a Mosquitto database")
            } else {
                None
            };
            match mosquittos {
                Some(why) if named.file_name() != Some(STORE_FILE.as_ref()) => {
                    let beside = named.with_file_name(STORE_FILE);
                    log::warn!(
                        "persistence_file {} is {why}: midge never changes or deletes it and \
                         keeps its store in {} instead",
                        named.display(),
                        beside.display()
                    );
                    beside
                }
                _ => named,
            }
        }
    };
    if is_mosquitto_db(&path) {
        return Err(StoreError::MosquittoFile(path));
    }
    Ok(path)
}

/// Whether the file exists and starts with Mosquitto's signature (read-only peek).
pub(crate) fn is_mosquitto_db(path: &Path) -> bool {
    let mut head = [0u8; MOSQUITTO_SIGNATURE.len()];
    match std::fs::File::open(path) {
        Ok(mut f) => f.read_exact(&mut head).is_ok() && head == MOSQUITTO_SIGNATURE,
        Err(_) => false,
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Why opening failed: damage (recoverable by salvage) or anything else.
enum Fault {
    Damaged(String),
    Fatal(StoreError),
}

fn classify(e: rusqlite::Error) -> Fault {
    if recover::is_corruption(&e) {
        Fault::Damaged(e.to_string())
    } else {
        Fault::Fatal(StoreError::Sql(e))
    }
}

/// Connection settings; see the module documentation for why.
fn configure(conn: &Connection) -> rusqlite::Result<()> {
    // Another reader (the sqlite3 CLI) may hold a lock for a moment.
    conn.busy_timeout(Duration::from_secs(5))?;
    // Only a new, empty file takes it; an older store is rewritten by `repage`.
    conn.pragma_update(None, "page_size", PAGE_SIZE)?;
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        log::warn!("store: SQLite refused WAL mode (journal_mode={mode}); commits will be slower");
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(())
}

/// Rewrites a store made with another page size (by an older midge) with [`PAGE_SIZE`], once:
/// SQLite changes the page size only by a `VACUUM` outside WAL mode. A failure (a full disk)
/// leaves the store as it was, with its pages, and is only logged.
fn repage(conn: &Connection) {
    let size = conn.query_row("PRAGMA page_size", [], |r| r.get::<_, i64>(0));
    if size.is_ok_and(|size| size == PAGE_SIZE) {
        return;
    }
    let rewritten = conn
        .query_row("PRAGMA journal_mode=DELETE", [], |_| Ok(()))
        .and_then(|()| conn.pragma_update(None, "page_size", PAGE_SIZE))
        .and_then(|()| conn.execute_batch("VACUUM"));
    if let Err(e) = rewritten {
        log::warn!("store: rewriting the store with pages of {PAGE_SIZE} bytes failed: {e}");
    }
    if let Err(e) = conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(())) {
        log::warn!("store: SQLite refused WAL mode again: {e}");
    }
}

/// Opens and fully reads a store, telling damage apart from other failures.
fn open_checked(path: &Path, log: &mut BodyLog) -> Result<(Connection, Snapshot), Fault> {
    owner_only(path).map_err(|e| Fault::Fatal(StoreError::Io(e)))?;
    let conn = Connection::open(path).map_err(classify)?;
    configure(&conn).map_err(classify)?;
    if let Some(problem) = recover::quick_check(&conn).map_err(classify)? {
        return Err(Fault::Damaged(format!("integrity check: {problem}")));
    }
    match schema::create(&conn, log) {
        Ok(()) => {}
        Err(schema::SchemaError::Newer(found)) => {
            return Err(Fault::Fatal(StoreError::NewerSchema {
                found,
                supported: SCHEMA_VERSION,
            }))
        }
        Err(schema::SchemaError::Sql(e)) => return Err(classify(e)),
    }
    repage(&conn);
    let orphans = schema::delete_orphans(&conn).map_err(classify)?;
    if orphans > 0 {
        log::warn!("store: deleted {orphans} rows that belonged to no session");
    }
    log.rebuild(&conn).map_err(classify)?;
    let snapshot = schema::load(&conn, log).map_err(classify)?;
    Ok((conn, snapshot))
}

/// The store holds every retained payload and queued message: it is created mode 0600, and
/// one left readable by others (by an older midge) is made 0600 too, with its `-wal` and
/// `-shm` (SQLite gives the files it creates later the mode of the database).
fn owner_only(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    for suffix in ["", "-wal", "-shm"] {
        let file = recover::with_suffix(path, suffix);
        match std::fs::metadata(&file) {
            Ok(meta) if meta.permissions().mode() & 0o077 != 0 => {
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn open_or_recover(path: &Path, log: &mut BodyLog) -> Result<(Connection, Snapshot), StoreError> {
    match open_checked(path, log) {
        Ok(opened) => Ok(opened),
        Err(Fault::Fatal(e)) => Err(e),
        Err(Fault::Damaged(reason)) => rebuild(path, log, reason),
    }
}

/// Moves a damaged store aside and salvages it into a fresh one.
fn rebuild(
    path: &Path,
    log: &mut BodyLog,
    reason: String,
) -> Result<(Connection, Snapshot), StoreError> {
    let aside = recover::move_aside(path, unix_now())?;
    log::error!(
        "store: {} is damaged ({reason}); moved to {} and recovering what can be read",
        path.display(),
        aside.display()
    );
    let (mut conn, _) = match open_checked(path, log) {
        Ok(opened) => opened,
        Err(Fault::Damaged(why)) => return Err(StoreError::Corrupt(why)),
        Err(Fault::Fatal(e)) => return Err(e),
    };
    let tables = recover::salvage(&aside, &mut conn, log)?;
    for t in &tables {
        let lost = if t.lost_is_exact {
            t.lost.to_string()
        } else {
            format!("at least {}", t.lost)
        };
        if t.lost == 0 && t.lost_is_exact {
            log::warn!(
                "store: {}: {} rows recovered, none lost",
                t.table,
                t.recovered
            );
        } else {
            log::error!(
                "store: {}: {} rows recovered, {lost} lost",
                t.table,
                t.recovered
            );
        }
    }
    let orphans = schema::delete_orphans(&conn)?;
    if orphans > 0 {
        log::error!("store: {orphans} recovered rows belonged to a lost session and were dropped");
    }
    log.rebuild(&conn)?;
    let mut snapshot = schema::load(&conn, log)?;
    // The salvage is the only copy of this state now: make it durable before starting.
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    snapshot.recovery = Some(RecoveryReport {
        moved_to: aside,
        reason,
        tables,
    });
    Ok((conn, snapshot))
}

/// The helper thread: owns the connection, applies batches, syncs on schedule.
struct Writer {
    conn: Connection,
    /// The bodies of queued messages (`bodylog.rs`).
    log: BodyLog,
    receiver: Receiver<Command>,
    /// Where pages of queued messages go.
    pages: Sender<MessagePage>,
    /// Page requests waiting for the batches submitted before them to be committed.
    reads: Vec<PageRequest>,
    /// What the transactions keep track of (see `schema::Tally`).
    tally: schema::Tally,
    shared: Arc<Shared>,
    notify: Box<dyn Fn() + Send>,
    interval: Duration,
    wal_path: PathBuf,
    /// False when SQLite refused WAL mode: then every commit is synced already.
    wal_mode: bool,
    /// The store's page size (the WAL hook counts pages).
    page_size: u64,
    /// Batches received and not committed yet.
    pending: Vec<(u64, Vec<Change>)>,
    /// When the oldest pending batch arrived (see [`GATHER`]).
    pending_since: Option<Instant>,
    /// When the oldest commit not yet made durable happened.
    dirty_since: Option<Instant>,
    /// After a failed commit: when to try again.
    retry_at: Option<Instant>,
    failures: u32,
}

impl Writer {
    fn run(mut self) {
        let mut closing = false;
        while !closing {
            let mut sync_requested = false;
            // A closed channel means the Store was dropped without a Close: close all the same.
            let mut next = match self.deadline() {
                None => Some(self.receiver.recv().unwrap_or(Command::Close)),
                Some(at) => {
                    let wait = at.saturating_duration_since(Instant::now());
                    match self.receiver.recv_timeout(wait) {
                        Ok(cmd) => Some(cmd),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => Some(Command::Close),
                    }
                }
            };
            // Group commit: take everything that queued up while we were busy.
            while let Some(cmd) = next {
                match cmd {
                    Command::Batch(n, changes) => {
                        self.pending_since.get_or_insert_with(Instant::now);
                        self.pending.push((n, changes));
                    }
                    Command::Read(request) => self.reads.push(request),
                    Command::Sync => sync_requested = true,
                    Command::Close => closing = true,
                }
                next = self.receiver.try_recv().ok();
            }
            let now = Instant::now();
            // A read waits for nothing but the commit of what came before it.
            let gathered =
                self.pending_since.is_none_or(|t| now >= t + GATHER) || !self.reads.is_empty();
            let retry_due = self.retry_at.is_none_or(|t| now >= t);
            if !self.pending.is_empty() && (closing || ((gathered || sync_requested) && retry_due))
            {
                self.commit_pending();
            }
            if self.pending.is_empty() && !self.reads.is_empty() && retry_due && !closing {
                self.serve_reads();
            }
            let sync_due = self.dirty_since.is_some_and(|t| now >= t + self.interval);
            if self.dirty_since.is_some() && (sync_requested || sync_due) && !closing {
                self.sync(sync_requested);
            }
        }
        self.finish();
    }

    /// The next moment the writer must wake without a command.
    fn deadline(&self) -> Option<Instant> {
        let sync = self.dirty_since.map(|t| t + self.interval);
        let commit = match self.retry_at {
            Some(retry) => {
                Some(retry).filter(|_| !self.pending.is_empty() || !self.reads.is_empty())
            }
            None => self.pending_since.map(|t| t + GATHER),
        };
        match (sync, commit) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Applies every pending batch in one transaction and publishes the new commit number.
    fn commit_pending(&mut self) {
        let since = self.pending_since.take();
        let batches = std::mem::take(&mut self.pending);
        let Some(last) = batches.last().map(|b| b.0) else {
            return;
        };
        match apply_batches(&mut self.conn, &batches, &mut self.tally, &mut self.log) {
            Ok(()) => {
                self.shared.committed.store(last, Ordering::Release);
                if let Some(since) = since {
                    let us = u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX);
                    self.shared.last_commit_us.store(us, Ordering::Relaxed);
                }
                self.dirty_since.get_or_insert_with(Instant::now);
                if self.failures > 0 {
                    log::warn!("store: commits work again after {} failures", self.failures);
                }
                self.failures = 0;
                self.retry_at = None;
                self.shared.healthy.store(true, Ordering::Relaxed);
                (self.notify)();
            }
            Err(e) => {
                self.failures += 1;
                if self.failures == 1 || self.failures.is_multiple_of(60) {
                    log::error!(
                        "store: commit of {} batches failed ({e}); retrying every {}s",
                        batches.len(),
                        RETRY_DELAY.as_secs()
                    );
                }
                self.pending = batches;
                // The retry's latency counts from the first arrival, outage included.
                self.pending_since = since;
                self.retry_at = Some(Instant::now() + RETRY_DELAY);
                self.shared.healthy.store(false, Ordering::Relaxed);
            }
        }
    }

    /// Reads the pages asked for, all batches before them being committed, and sends them to
    /// the broker's side. A read that fails (an I/O error) is tried again after
    /// [`RETRY_DELAY`], like a commit.
    fn serve_reads(&mut self) {
        // Nothing is pending: a retry planned can only be for these reads.
        self.retry_at = None;
        let mut sent = false;
        for request in std::mem::take(&mut self.reads) {
            let page = schema::read_messages_page(
                &self.conn,
                &mut self.log,
                &request.client_id,
                request.after,
                request.max_messages,
                request.max_bytes,
            );
            match page {
                Ok((messages, bodies)) => {
                    let page = MessagePage {
                        tag: request.tag,
                        messages,
                        bodies,
                    };
                    sent |= self.pages.send(page).is_ok();
                }
                Err(e) => {
                    log::error!(
                        "store: reading queued messages of {} failed ({e}); retrying every {}s",
                        request.client_id,
                        RETRY_DELAY.as_secs()
                    );
                    self.reads.push(request);
                    self.retry_at = Some(Instant::now() + RETRY_DELAY);
                }
            }
        }
        if sent {
            (self.notify)();
        }
    }

    /// Makes every commit so far durable. Usually one `fdatasync` of the WAL, which is all
    /// SQLite needs to replay the commits after a power loss. When the WAL has grown to
    /// [`CHECKPOINT_BYTES`], or on `checkpoint` (SIGUSR1), the WAL is checkpointed into the
    /// main file instead (fsyncing both) and started again from its beginning at once, so that
    /// the fsync SQLite gives a restarted WAL's header belongs to this sync, not to the next
    /// commit. If a reader (the sqlite3 CLI) keeps the checkpoint from finishing, the WAL is
    /// fsynced directly, which is enough for durability.
    fn sync(&mut self, checkpoint: bool) {
        let pages = self.shared.wal_pages.load(Ordering::Relaxed);
        // The log first: no durable delivery may point past durable log bytes.
        let synced = self.log.sync().and_then(|()| {
            if !self.wal_mode {
                Ok(())
            } else if checkpoint || u64::from(pages) * self.page_size >= CHECKPOINT_BYTES {
                self.checkpoint()
            } else {
                self.sync_wal()
            }
        });
        match synced {
            Ok(()) => {
                self.dirty_since = None;
                self.shared.syncs.fetch_add(1, Ordering::Relaxed);
                self.log.remove_dead();
                if self.pending.is_empty() && self.reads.is_empty() {
                    self.compact_log();
                }
            }
            Err(e) => {
                log::error!("store: sync failed: {e}; retrying at the next interval");
                // Not at once: a failing disk must not make the writer spin.
                self.dirty_since = Some(Instant::now());
            }
        }
    }

    /// Compacts one segment of the body log that is mostly dead (see `bodylog.rs`): its live
    /// bodies are copied to the head and their deliveries pointed there in one transaction;
    /// the segment is deleted after the next sync. Runs after a sync with nothing pending, so
    /// at most once per interval and never ahead of a batch.
    fn compact_log(&mut self) {
        let Some(segment) = self.log.compaction_candidate() else {
            return;
        };
        let (moved, lost) = self.log.copy_live(segment);
        let result = self
            .log
            .flush()
            .map_err(schema::log_error)
            .and_then(|()| schema::relocate(&mut self.conn, segment, &moved, &lost));
        match result {
            Ok(()) => {
                self.log.moved(&moved, &lost);
                self.dirty_since.get_or_insert_with(Instant::now);
            }
            Err(e) => {
                self.log.rollback();
                log::warn!("store: compacting the body log failed: {e}");
            }
        }
    }

    fn sync_wal(&self) -> std::io::Result<()> {
        std::fs::File::open(&self.wal_path).and_then(|f| f.sync_data())
    }

    /// A PASSIVE checkpoint (it never waits for readers), then the WAL's restart.
    fn checkpoint(&mut self) -> std::io::Result<()> {
        let result = self
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            });
        match result {
            Ok((0, log, done)) if log == done => {
                self.shared.wal_pages.store(0, Ordering::Relaxed);
                restart_wal(&self.conn);
                Ok(())
            }
            Ok(_) => self.sync_wal(),
            Err(e) => Err(std::io::Error::other(e)),
        }
    }

    /// At close: whatever could not be committed is retried a few times, then everything
    /// is checkpointed into the main file (which also empties the WAL).
    fn finish(mut self) {
        for _ in 0..3 {
            if self.pending.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
            self.commit_pending();
        }
        if !self.pending.is_empty() {
            log::error!(
                "store: {} batches could not be committed before exit",
                self.pending.len()
            );
        }
        if let Err(e) = self.log.sync() {
            log::error!("store: final sync of the body log failed: {e}");
            return;
        }
        match self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        {
            Ok(()) => {
                self.shared.syncs.fetch_add(1, Ordering::Relaxed);
                self.log.remove_dead();
            }
            Err(e) => log::error!("store: final checkpoint failed: {e}"),
        }
    }
}

/// Makes SQLite start a WAL that holds nothing unsaved again from its beginning, now: a
/// one-row write that changes nothing. SQLite writes and fsyncs the new WAL header first (so
/// that no frame left from before the restart can be replayed after a power loss). If it
/// fails (a full disk), the next commit restarts the WAL instead.
fn restart_wal(conn: &Connection) {
    let _ = conn.execute("UPDATE schema_version SET version = version", []);
}

/// Applies batches in one transaction, without the changes a later one of the group supersedes
/// ([`compact`]). A change that fails for a reason that retrying cannot
/// cure (a constraint, a value too big) is logged and skipped, so one bad change cannot block
/// every later commit; any other failure rolls the whole transaction back for a retry (and
/// `tally` forgets what it counted, which the rollback may have undone).
fn apply_batches(
    conn: &mut Connection,
    batches: &[(u64, Vec<Change>)],
    tally: &mut schema::Tally,
    log: &mut BodyLog,
) -> rusqlite::Result<()> {
    if !tally.counted() {
        // Without the counts every session that ends is looked for: slower, never wrong.
        if let Err(e) = tally.count(conn) {
            log::warn!("store: counting the queued messages failed: {e}");
        }
    }
    let result = apply_group(conn, batches, tally, log);
    match &result {
        Ok(()) => schema::settle(tally, log),
        Err(_) => {
            log.rollback();
            tally.forget();
        }
    }
    result
}

/// The new bodies are appended to the log as the changes come, and written to it before the
/// transaction that refers to them commits.
fn apply_group(
    conn: &mut Connection,
    batches: &[(u64, Vec<Change>)],
    tally: &mut schema::Tally,
    log: &mut BodyLog,
) -> rusqlite::Result<()> {
    use rusqlite::ErrorCode::{ConstraintViolation, TooBig, TypeMismatch};
    let tx = conn.transaction()?;
    // Deletions wait and go by runs of consecutive numbers (a drain acknowledges message after
    // message), until the end or until an add, which might reuse a number.
    let mut deletes: Vec<u64> = Vec::new();
    for (n, change) in compact::compact(batches) {
        match change {
            Change::MessageDelete { seq, .. } => {
                deletes.push(*seq);
                continue;
            }
            Change::MessageAdd { .. } if !deletes.is_empty() => {
                schema::delete_deliveries(&tx, &mut deletes, tally, log)?;
            }
            _ => {}
        }
        if let Err(e) = schema::apply(&tx, change, tally, log) {
            match e.sqlite_error_code() {
                Some(ConstraintViolation | TooBig | TypeMismatch) => {
                    log::error!("store: a change in batch {n} is not stored: {e}");
                }
                _ => return Err(e),
            }
        }
    }
    schema::delete_deliveries(&tx, &mut deletes, tally, log)?;
    log.flush().map_err(schema::log_error)?;
    tx.commit()
}
