//! The body log: the messages queued for sessions, in append-only segment files beside the
//! store (`midge.db-bodies/00000001.log`, ...), out of SQLite.
//!
//! Why not a table: each SQLite commit appends whole 4 KiB pages to the WAL (the last leaf of
//! the table, often an interior page and page 1 too), and a checkpoint copies every page into
//! the main file again, so a payload stored in a table is written at least twice, plus a few
//! pages per commit. Appended to a file that is fsynced only on the sync timer, a body is
//! written once: the OS counts each 4 KiB page of the log once, however many appends fill it.
//!
//! A record is `len` (u32, little-endian), `crc` (CRC-32C of `len` and the body), then the
//! body: qos, flags (1 retain, 2 has expiry), expires_at (u64), the topic's and the
//! properties' lengths (u32 each), the topic, the properties, the payload. A record is never
//! rewritten once something refers to it. A body's *location* is its segment number shifted
//! left by [`SEGMENT_SHIFT`] bits plus its offset in the segment; `deliveries.body` holds it.
//!
//! The writer thread owns the log. It keeps, in memory, every live body's reference count (a
//! delivery adds one, its deletion takes one) and, per segment, how many live bodies and
//! bytes it holds; at open they are counted again from `deliveries`. The broker names bodies
//! by ids of its own ([`Change::MessageBody`](super::model::Change)); the log maps each to its
//! location. A body kept from before a restart has its location as id (the snapshot gives it
//! so), and the broker numbers new bodies above the largest, so the two never collide.
//!
//! Order of writes: a commit appends its new records (`write(2)`) before the SQLite
//! transaction that refers to them; a crash between leaves records nothing refers to, which
//! cost only their bytes. A sync fdatasyncs the segments written since the last one before
//! the WAL's fsync, so no durable delivery points past durable log bytes. A segment whose last
//! live body is released (and that is not being appended to) is deleted after the next sync,
//! once the release is durable. A segment that stays mostly dead (less than a quarter of it
//! live) is compacted when the writer is idle: its live bodies are copied to the head and the
//! deliveries updated in one transaction, then it goes the same way.

use super::model::StoredMessage;
use crate::broker::router::FnvHasher;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::hash::BuildHasherDefault;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

type Map<K, V> = HashMap<K, V, BuildHasherDefault<FnvHasher>>;

/// A location is `segment << SEGMENT_SHIFT | offset`.
const SEGMENT_SHIFT: u32 = 32;

/// A segment is closed (a new one started) once it holds this many bytes; a single batch may
/// pass it by one record.
pub(crate) const SEGMENT_BYTES: u64 = 4 << 20;

/// `len` and `crc`.
const HEADER: usize = 8;

/// qos, flags, expires_at, topic length, properties length.
const FIXED: usize = 18;

/// Larger than any MQTT message can be (256 MiB plus headers): a bigger `len` is damage.
const MAX_RECORD: usize = 270 << 20;

const FLAG_RETAIN: u8 = 1;
const FLAG_EXPIRES: u8 = 2;

/// The directory of the log that belongs to the store file `store`: its name plus `-bodies`.
pub(crate) fn dir_of(store: &Path) -> PathBuf {
    super::recover::with_suffix(store, "-bodies")
}

/// The segment and offset of a location.
fn split(location: u64) -> (u32, u64) {
    let segment = u32::try_from(location >> SEGMENT_SHIFT).unwrap_or(u32::MAX);
    (segment, location & ((1 << SEGMENT_SHIFT) - 1))
}

fn join(segment: u32, offset: u64) -> u64 {
    (u64::from(segment) << SEGMENT_SHIFT) | offset
}

fn segment_name(segment: u32) -> String {
    format!("{segment:08}.log")
}

/// CRC-32C (Castagnoli), bitwise-reflected, table-driven.
fn crc32c(parts: &[&[u8]]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0x82F6_3B78 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let mut crc = !0u32;
    for part in parts {
        for &b in *part {
            crc = TABLE[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8);
        }
    }
    !crc
}

/// The header of a record whose body is `body`.
fn header_for(body: &[u8]) -> [u8; HEADER] {
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX).to_le_bytes();
    let crc = crc32c(&[&len, body]);
    let mut header = [0u8; HEADER];
    header[..4].copy_from_slice(&len);
    header[4..].copy_from_slice(&crc.to_le_bytes());
    header
}

/// Appends `m`'s record to `buf`.
fn encode(m: &StoredMessage, buf: &mut Vec<u8>) {
    let start = buf.len();
    let topic = m.topic.as_bytes();
    buf.extend_from_slice(&[0; HEADER]);
    let mut flags = 0;
    if m.retain {
        flags |= FLAG_RETAIN;
    }
    if m.expires_at.is_some() {
        flags |= FLAG_EXPIRES;
    }
    buf.push(m.qos);
    buf.push(flags);
    buf.extend_from_slice(&m.expires_at.unwrap_or(0).to_le_bytes());
    let topic_len = u32::try_from(topic.len()).unwrap_or(u32::MAX);
    let props_len = u32::try_from(m.properties.len()).unwrap_or(u32::MAX);
    buf.extend_from_slice(&topic_len.to_le_bytes());
    buf.extend_from_slice(&props_len.to_le_bytes());
    buf.extend_from_slice(topic);
    buf.extend_from_slice(&m.properties);
    buf.extend_from_slice(&m.payload);
    let header = header_for(&buf[start + HEADER..]);
    buf[start..start + HEADER].copy_from_slice(&header);
}

fn le32(b: &[u8], at: usize) -> usize {
    let mut v = [0u8; 4];
    v.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(v) as usize
}

/// The body length in the header of the record at `offset` of a segment `seg_len` bytes long,
/// checked: a length no record can have, or one that runs past the segment's end (a torn
/// tail), is an error naming the place.
fn record_len(header: &[u8], segment: u32, offset: u64, seg_len: u64) -> Result<usize, String> {
    let len = le32(header, 0);
    if !(FIXED..=MAX_RECORD).contains(&len) || offset + (HEADER + len) as u64 > seg_len {
        return Err(format!(
            "segment {segment} offset {offset}: no record of {len} bytes fits"
        ));
    }
    Ok(len)
}

/// The topic and payload size a record's fixed part (`body[..FIXED]`) gives, checked against
/// the body's length.
fn sizes(body_len: usize, fixed: &[u8]) -> Result<(usize, usize), String> {
    let (topic, props) = (le32(fixed, 10), le32(fixed, 14));
    let rest = body_len.checked_sub(FIXED + topic);
    match rest.and_then(|r| r.checked_sub(props)) {
        Some(payload) => Ok((topic, payload)),
        None => Err(format!(
            "lengths {topic} + {props} do not fit a body of {body_len}"
        )),
    }
}

fn decode(body: &[u8]) -> Result<StoredMessage, String> {
    let (topic_len, _) = sizes(body.len(), &body[..FIXED])?;
    let props_len = le32(body, 14);
    let qos = body[0];
    if qos > 2 {
        return Err(format!("qos {qos}"));
    }
    let flags = body[1];
    let mut at = [0u8; 8];
    at.copy_from_slice(&body[2..10]);
    let topic_end = FIXED + topic_len;
    let props_end = topic_end + props_len;
    let topic = std::str::from_utf8(&body[FIXED..topic_end])
        .map_err(|_| "topic is not UTF-8".to_string())?;
    Ok(StoredMessage {
        topic: topic.into(),
        payload: body[props_end..].to_vec(),
        qos,
        retain: flags & FLAG_RETAIN != 0,
        properties: body[topic_end..props_end].to_vec(),
        expires_at: (flags & FLAG_EXPIRES != 0).then(|| u64::from_le_bytes(at)),
        source: None,
    })
}

/// One segment file.
#[derive(Debug, Default, Clone, Copy)]
struct Segment {
    /// Bytes appended (or found at open).
    len: u64,
    /// Bodies with references.
    live: u64,
    /// Their record bytes.
    live_bytes: u64,
}

/// A body with references.
#[derive(Debug, Clone, Copy)]
struct Live {
    /// The broker's id for it.
    id: u64,
    refs: u32,
    /// Its record's bytes, header included.
    bytes: u32,
    /// Topic plus payload, as the queue limits count them.
    size: u32,
}

/// See the module documentation.
pub(crate) struct BodyLog {
    dir: PathBuf,
    segments: BTreeMap<u32, Segment>,
    /// The segment being appended to, once there is one this run.
    head: Option<u32>,
    /// Open files: the head for writing and reading, others for reading.
    files: Map<u32, File>,
    /// Live bodies by location.
    live: Map<u64, Live>,
    /// The location of each live body whose id is not its location.
    ids: Map<u64, u64>,
    /// Bodies appended in the transaction under way: id -> (location, bytes, size).
    staged: Map<u64, (u64, u32, u32)>,
    /// Records appended in the transaction under way and not written yet: they start at
    /// `pending_at` (segment, offset).
    pending: Vec<u8>,
    pending_at: (u32, u64),
    /// The length of each segment the transaction under way appended to, before it did.
    marks: Map<u32, u64>,
    /// Segments written since the last sync.
    unsynced: Vec<u32>,
    /// A segment was created since the last sync: its directory entry needs an fsync.
    dir_unsynced: bool,
    /// Segments with no live body left, deleted after the next sync.
    dead: Vec<u32>,
    /// While a store is migrated or salvaged: an id not staged is a location as it is.
    raw_ids: bool,
}

impl BodyLog {
    /// Opens (creating it if missing) the log in `dir` and lists its segments. Counts come
    /// from [`BodyLog::rebuild`].
    pub(crate) fn open(dir: &Path) -> io::Result<BodyLog> {
        let named = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", dir.display()));
        BodyLog::list(dir).map_err(named)
    }

    fn list(dir: &Path) -> io::Result<BodyLog> {
        use std::os::unix::fs::DirBuilderExt;
        if !dir.is_dir() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        let mut segments = BTreeMap::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(number) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".log"))
                .and_then(|n| n.parse::<u32>().ok())
                .filter(|n| *n > 0)
            else {
                continue;
            };
            let len = entry.metadata()?.len();
            segments.insert(
                number,
                Segment {
                    len,
                    ..Segment::default()
                },
            );
        }
        Ok(BodyLog {
            dir: dir.to_path_buf(),
            segments,
            head: None,
            files: Map::default(),
            live: Map::default(),
            ids: Map::default(),
            staged: Map::default(),
            pending: Vec::new(),
            pending_at: (0, 0),
            marks: Map::default(),
            unsynced: Vec::new(),
            dir_unsynced: false,
            dead: Vec::new(),
            raw_ids: false,
        })
    }

    /// While set, an id that was not staged is taken as a location (a migration or salvage
    /// copies `deliveries.body` as it is).
    pub(crate) fn set_raw_ids(&mut self, raw: bool) {
        self.raw_ids = raw;
    }

    /// Counts every body's references from `deliveries` again (at open, after a salvage).
    /// A delivery whose body cannot be found in the log is deleted with a warning; returns
    /// how many. Segments with no live body are marked dead.
    pub(crate) fn rebuild(&mut self, conn: &rusqlite::Connection) -> rusqlite::Result<usize> {
        self.live.clear();
        self.ids.clear();
        self.staged.clear();
        for s in self.segments.values_mut() {
            s.live = 0;
            s.live_bytes = 0;
        }
        let mut counts: Vec<(i64, i64)> = Vec::new();
        {
            let mut stmt = conn.prepare("SELECT body, count(*) FROM deliveries GROUP BY body")?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                counts.push((row.get(0)?, row.get(1)?));
            }
        }
        let mut unreadable = Vec::new();
        for (location, n) in counts {
            let Ok(loc) = u64::try_from(location) else {
                unreadable.push((location, "a negative location".to_string()));
                continue;
            };
            match self.peek(loc) {
                Ok((bytes, size)) => {
                    let refs = u32::try_from(n.max(1)).unwrap_or(u32::MAX);
                    self.add_live(loc, loc, refs, bytes, size);
                }
                Err(why) => unreadable.push((location, why)),
            }
        }
        let mut dropped = 0;
        for (location, why) in unreadable {
            let n = conn.execute("DELETE FROM deliveries WHERE body = ?1", [location])?;
            log::warn!("store: {n} queued message(s) dropped: body {location} unreadable: {why}");
            dropped += n;
        }
        self.mark_dead();
        Ok(dropped)
    }

    fn add_live(&mut self, loc: u64, id: u64, refs: u32, bytes: u32, size: u32) {
        self.live.insert(
            loc,
            Live {
                id,
                refs,
                bytes,
                size,
            },
        );
        if id != loc {
            self.ids.insert(id, loc);
        }
        let segment = self.segments.entry(split(loc).0).or_default();
        segment.live += 1;
        segment.live_bytes += u64::from(bytes);
    }

    /// The largest id or location of a live body (0 when there is none): the broker numbers
    /// new bodies above it, so that a new id is never the location a body kept from before
    /// the restart has as its id.
    pub(crate) fn last_id(&self) -> u64 {
        self.live
            .iter()
            .map(|(loc, l)| l.id.max(*loc))
            .max()
            .unwrap_or(0)
    }

    /// Topic plus payload of the live body at `loc`.
    pub(crate) fn size(&self, loc: u64) -> Option<usize> {
        self.live.get(&loc).map(|l| l.size as usize)
    }

    /// The broker's id of the live body at `loc`.
    pub(crate) fn id_at(&self, loc: u64) -> Option<u64> {
        self.live.get(&loc).map(|l| l.id).or_else(|| {
            self.staged
                .iter()
                .find_map(|(id, (l, _, _))| (*l == loc).then_some(*id))
        })
    }

    /// Where the body the broker calls `id` is: appended in this transaction, live, or (while
    /// migrating or salvaging) the id itself.
    pub(crate) fn location(&self, id: u64) -> Option<u64> {
        if let Some((loc, _, _)) = self.staged.get(&id) {
            return Some(*loc);
        }
        if let Some(loc) = self.ids.get(&id) {
            return Some(*loc);
        }
        if self.raw_ids || self.live.get(&id).is_some_and(|l| l.id == id) {
            return Some(id);
        }
        None
    }

    /// Appends the body `id` unless it is live or appended already in this transaction. The
    /// record goes to the file at [`BodyLog::flush`].
    pub(crate) fn stage(&mut self, id: u64, m: &StoredMessage) -> io::Result<()> {
        if self.staged.contains_key(&id) || (!self.raw_ids && self.location(id).is_some()) {
            return Ok(());
        }
        let mut record = Vec::new();
        encode(m, &mut record);
        let size = u32::try_from(m.topic.len() + m.payload.len()).unwrap_or(u32::MAX);
        let loc = self.append(&record)?;
        let bytes = u32::try_from(record.len()).unwrap_or(u32::MAX);
        self.staged.insert(id, (loc, bytes, size));
        Ok(())
    }

    /// Queues `record` for the head (starting a new segment when the head is full) and
    /// returns its location.
    fn append(&mut self, record: &[u8]) -> io::Result<u64> {
        let end = |log: &BodyLog, head: u32| {
            let len = log.segments.get(&head).map_or(0, |s| s.len);
            if log.pending.is_empty() || log.pending_at.0 != head {
                len
            } else {
                log.pending_at.1 + log.pending.len() as u64
            }
        };
        let full = |log: &BodyLog, head: u32| {
            let at = end(log, head);
            at > 0 && at + record.len() as u64 > SEGMENT_BYTES.min(u64::from(u32::MAX))
        };
        let head = match self.head {
            Some(head) if !full(self, head) => head,
            _ => self.new_segment()?,
        };
        let at = end(self, head);
        if self.pending.is_empty() {
            self.pending_at = (head, at);
        }
        self.pending.extend_from_slice(record);
        Ok(join(head, at))
    }

    /// Writes what is pending and starts the next segment.
    fn new_segment(&mut self) -> io::Result<u32> {
        self.flush()?;
        let number = self.segments.keys().next_back().map_or(1, |n| n + 1);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(self.dir.join(segment_name(number)))?;
        self.files.insert(number, file);
        self.segments.insert(number, Segment::default());
        self.marks.entry(number).or_insert(0);
        self.dir_unsynced = true;
        self.head = Some(number);
        Ok(number)
    }

    /// Writes the records appended in this transaction (one `write(2)` per segment they span).
    /// Must succeed before the transaction that refers to them commits.
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let (segment, at) = self.pending_at;
        let pending = std::mem::take(&mut self.pending);
        let written = self
            .file(segment)
            .and_then(|f| f.write_all_at(&pending, at));
        self.pending = pending;
        written?;
        let len = at + self.pending.len() as u64;
        self.pending.clear();
        let s = self.segments.entry(segment).or_default();
        let before = s.len;
        s.len = len;
        self.marks.entry(segment).or_insert(before);
        if !self.unsynced.contains(&segment) {
            self.unsynced.push(segment);
        }
        Ok(())
    }

    fn file(&mut self, segment: u32) -> io::Result<&File> {
        if !self.files.contains_key(&segment) {
            let file = File::open(self.dir.join(segment_name(segment)))?;
            self.files.insert(segment, file);
        }
        self.files
            .get(&segment)
            .ok_or_else(|| io::Error::other("segment file"))
    }

    /// The transaction that followed the appends committed: the staged bodies become live
    /// with the reference counts `refs` (id -> change) brings, and bodies left without
    /// references are released.
    pub(crate) fn settle(&mut self, refs: impl IntoIterator<Item = (u64, i64)>) {
        self.marks.clear();
        let staged = std::mem::take(&mut self.staged);
        for (id, n) in refs {
            if let Some(&(loc, bytes, size)) = staged.get(&id) {
                // New this transaction: live if something refers to it, else dead bytes.
                if n > 0 {
                    let refs = u32::try_from(n).unwrap_or(u32::MAX);
                    self.add_live(loc, id, refs, bytes, size);
                }
                continue;
            }
            let Some(loc) = self.location(id) else {
                continue;
            };
            if let Some(l) = self.live.get_mut(&loc) {
                let refs = i64::from(l.refs) + n;
                if refs > 0 {
                    l.refs = u32::try_from(refs).unwrap_or(u32::MAX);
                } else {
                    self.release(loc);
                }
            }
        }
        self.mark_dead();
    }

    fn release(&mut self, loc: u64) {
        if let Some(l) = self.live.remove(&loc) {
            if l.id != loc {
                self.ids.remove(&l.id);
            }
            if let Some(s) = self.segments.get_mut(&split(loc).0) {
                s.live = s.live.saturating_sub(1);
                s.live_bytes = s.live_bytes.saturating_sub(u64::from(l.bytes));
            }
        }
    }

    /// The transaction failed: its records are forgotten (the next ones overwrite them; no
    /// durable row refers to them).
    pub(crate) fn rollback(&mut self) {
        self.pending.clear();
        self.staged.clear();
        for (segment, len) in self.marks.drain() {
            if let Some(s) = self.segments.get_mut(&segment) {
                s.len = len;
            }
        }
    }

    fn mark_dead(&mut self) {
        for (&n, s) in &self.segments {
            if s.live == 0 && Some(n) != self.head && !self.dead.contains(&n) {
                self.dead.push(n);
            }
        }
    }

    /// Whether segments wait for deletion.
    pub(crate) fn has_dead(&self) -> bool {
        !self.dead.is_empty()
    }

    /// Makes every append so far durable: an fdatasync of each segment written since the last
    /// sync, and of the directory when a segment was created. Runs before the WAL's sync.
    pub(crate) fn sync(&mut self) -> io::Result<()> {
        for segment in std::mem::take(&mut self.unsynced) {
            let synced = self.file(segment).and_then(File::sync_data);
            if let Err(e) = synced {
                self.unsynced.push(segment);
                return Err(e);
            }
        }
        if self.dir_unsynced {
            File::open(&self.dir)?.sync_all()?;
            self.dir_unsynced = false;
        }
        Ok(())
    }

    /// Deletes the dead segments: call once the releases that killed them are durable.
    pub(crate) fn remove_dead(&mut self) {
        for segment in std::mem::take(&mut self.dead) {
            if self.segments.get(&segment).is_some_and(|s| s.live > 0) {
                continue;
            }
            self.files.remove(&segment);
            self.segments.remove(&segment);
            self.unsynced.retain(|s| *s != segment);
            let path = self.dir.join(segment_name(segment));
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => log::warn!("store: cannot delete {}: {e}", path.display()),
            }
        }
    }

    /// The record at `loc`: its bytes checked (length, CRC) and decoded.
    pub(crate) fn read(&mut self, loc: u64) -> Result<StoredMessage, String> {
        let body = self.read_body(loc)?;
        decode(&body)
    }

    /// The body bytes of the record at `loc`, with its length and CRC checked.
    fn read_body(&mut self, loc: u64) -> Result<Vec<u8>, String> {
        let (segment, offset) = split(loc);
        let len = self.segments.get(&segment).map(|s| s.len);
        let Some(seg_len) = len else {
            return Err(format!("segment {segment} does not exist"));
        };
        let file = self.file(segment).map_err(|e| e.to_string())?;
        let mut header = [0u8; HEADER];
        file.read_exact_at(&mut header, offset)
            .map_err(|e| format!("segment {segment} offset {offset}: {e}"))?;
        let len = record_len(&header, segment, offset, seg_len)?;
        let mut body = vec![0u8; len];
        file.read_exact_at(&mut body, offset + HEADER as u64)
            .map_err(|e| format!("segment {segment} offset {offset}: {e}"))?;
        if crc32c(&[&header[..4], &body]) != le32(&header, 4) as u32 {
            return Err(format!("segment {segment} offset {offset}: CRC mismatch"));
        }
        sizes(len, &body[..FIXED])?;
        Ok(body)
    }

    /// The record length and topic plus payload size at `loc`, from its header (the CRC is
    /// checked when the body is read).
    fn peek(&mut self, loc: u64) -> Result<(u32, u32), String> {
        let (segment, offset) = split(loc);
        let Some(seg_len) = self.segments.get(&segment).map(|s| s.len) else {
            return Err(format!("segment {segment} does not exist"));
        };
        let mut head = [0u8; HEADER + FIXED];
        if offset + head.len() as u64 > seg_len {
            return Err(format!("segment {segment} ends before offset {offset}"));
        }
        let file = self.file(segment).map_err(|e| e.to_string())?;
        file.read_exact_at(&mut head, offset)
            .map_err(|e| format!("segment {segment} offset {offset}: {e}"))?;
        let len = record_len(&head, segment, offset, seg_len)?;
        let (topic, payload) = sizes(len, &head[HEADER..])?;
        let bytes = u32::try_from(HEADER + len).unwrap_or(u32::MAX);
        Ok((bytes, u32::try_from(topic + payload).unwrap_or(u32::MAX)))
    }

    /// A segment worth compacting: not the head, and less than a quarter of it live.
    pub(crate) fn compaction_candidate(&self) -> Option<u32> {
        self.segments
            .iter()
            .find(|(n, s)| {
                Some(**n) != self.head && s.live > 0 && s.live_bytes.saturating_mul(4) < s.len
            })
            .map(|(n, _)| *n)
    }

    /// The range of locations in `segment`.
    pub(crate) fn range(segment: u32) -> (u64, u64) {
        (join(segment, 0), join(segment, (1 << SEGMENT_SHIFT) - 1))
    }

    /// Copies the live bodies of `segment` to the head (staged, like new bodies): returns
    /// (old location, new location) for each copied and the locations that could not be
    /// read, whose deliveries must go.
    pub(crate) fn copy_live(&mut self, segment: u32) -> (Vec<(u64, u64)>, Vec<u64>) {
        let (lo, hi) = BodyLog::range(segment);
        let mut locs: Vec<u64> = self
            .live
            .keys()
            .copied()
            .filter(|l| (lo..=hi).contains(l))
            .collect();
        locs.sort_unstable();
        let mut moved = Vec::new();
        let mut lost = Vec::new();
        for loc in locs {
            let body = match self.read_body(loc) {
                Ok(body) => body,
                Err(why) => {
                    log::warn!("store: a queued message's body is unreadable: {why}");
                    lost.push(loc);
                    continue;
                }
            };
            let mut record = Vec::with_capacity(HEADER + body.len());
            record.extend_from_slice(&header_for(&body));
            record.extend_from_slice(&body);
            match self.append(&record) {
                Ok(new) => moved.push((loc, new)),
                Err(e) => {
                    log::warn!("store: compacting segment {segment}: {e}");
                    break;
                }
            }
        }
        (moved, lost)
    }

    /// The compaction's transaction committed: the moved bodies live at their new locations
    /// (same ids, counts and sizes), the lost ones are released.
    pub(crate) fn moved(&mut self, moved: &[(u64, u64)], lost: &[u64]) {
        self.marks.clear();
        for &(old, new) in moved {
            if let Some(l) = self.live.get(&old).copied() {
                self.release(old);
                self.add_live(new, l.id, l.refs, l.bytes, l.size);
            }
        }
        for &loc in lost {
            self.release(loc);
        }
        self.mark_dead();
    }

    /// Live bodies and segments, for tests.
    #[cfg(test)]
    pub(crate) fn counts(&self) -> (usize, usize) {
        (self.live.len(), self.segments.len())
    }

    /// (id, references) of every live body, by id, for tests.
    #[cfg(test)]
    pub(crate) fn refs(&self) -> Vec<(u64, u32)> {
        let mut refs: Vec<(u64, u32)> = self.live.values().map(|l| (l.id, l.refs)).collect();
        refs.sort_unstable();
        refs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Dir {
            let dir = std::env::temp_dir().join(format!(
                "midge-bodylog-{name}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            Dir(dir)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn message(topic: &str, payload: &[u8]) -> StoredMessage {
        StoredMessage {
            topic: topic.into(),
            payload: payload.to_vec(),
            qos: 1,
            retain: true,
            properties: vec![1, 2, 3],
            expires_at: Some(77),
            source: None,
        }
    }

    /// Stages, flushes and settles bodies `ids` with one reference each.
    fn commit(log: &mut BodyLog, bodies: &[(u64, StoredMessage)]) {
        for (id, m) in bodies {
            log.stage(*id, m).unwrap();
        }
        log.flush().unwrap();
        log.settle(bodies.iter().map(|(id, _)| (*id, 1)));
    }

    #[test]
    fn records_round_trip_and_ids_map_to_locations() {
        let dir = Dir::new("round");
        let mut log = BodyLog::open(&dir.0).unwrap();
        let a = message("a/b", b"hello");
        let b = StoredMessage {
            expires_at: None,
            retain: false,
            properties: Vec::new(),
            ..message("c", &[0; 1000])
        };
        commit(&mut log, &[(1, a.clone()), (2, b.clone())]);
        let (la, lb) = (log.location(1).unwrap(), log.location(2).unwrap());
        assert_eq!(split(la), (1, 0));
        assert!(lb > la);
        assert_eq!(log.read(la).unwrap(), a);
        assert_eq!(log.read(lb).unwrap(), b);
        assert_eq!((log.id_at(la), log.size(lb)), (Some(1), Some(1001)));
        // A body live already is not appended again.
        let len = log.segments[&1].len;
        log.stage(1, &a).unwrap();
        log.flush().unwrap();
        assert_eq!(log.segments[&1].len, len);
    }

    #[test]
    fn a_torn_tail_and_a_crc_mismatch_are_detected() {
        let dir = Dir::new("torn");
        let mut log = BodyLog::open(&dir.0).unwrap();
        commit(
            &mut log,
            &[(1, message("t", b"one")), (2, message("t", b"two"))],
        );
        let (l1, l2) = (log.location(1).unwrap(), log.location(2).unwrap());
        let path = dir.0.join(segment_name(1));
        let full = std::fs::metadata(&path).unwrap().len();
        // A crash cut the last record short.
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(full - 3).unwrap();
        let mut log = BodyLog::open(&dir.0).unwrap();
        assert_eq!(log.read(l1).unwrap().payload, b"one");
        assert!(log.read(l2).unwrap_err().contains("fits"));
        assert!(log.peek(l2).is_err());
        // A flipped byte in the first.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEADER + FIXED + 1] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let mut log = BodyLog::open(&dir.0).unwrap();
        assert!(log.read(l1).unwrap_err().contains("CRC"));
    }

    #[test]
    fn a_failed_transaction_leaves_no_live_record_and_is_overwritten() {
        let dir = Dir::new("rollback");
        let mut log = BodyLog::open(&dir.0).unwrap();
        log.stage(1, &message("t", b"lost")).unwrap();
        log.flush().unwrap();
        log.rollback();
        assert_eq!(log.location(1), None);
        commit(&mut log, &[(2, message("t", b"kept"))]);
        assert_eq!(log.location(2), Some(join(1, 0)));
        assert_eq!(log.read(join(1, 0)).unwrap().payload, b"kept");
    }

    #[test]
    fn segments_roll_over_and_a_dead_one_goes_after_the_sync() {
        let dir = Dir::new("dead");
        let mut log = BodyLog::open(&dir.0).unwrap();
        let big = message("t", &vec![7; (SEGMENT_BYTES / 3) as usize]);
        commit(&mut log, &[(1, big.clone()), (2, big.clone())]);
        commit(&mut log, &[(3, big.clone())]);
        assert_eq!(split(log.location(2).unwrap()).0, 1);
        assert_eq!(split(log.location(3).unwrap()).0, 2);
        assert_eq!(log.counts(), (3, 2));
        log.settle([(1, -1), (2, -1)]);
        assert!(log.has_dead());
        assert!(dir.0.join(segment_name(1)).exists(), "not before the sync");
        log.sync().unwrap();
        log.remove_dead();
        assert!(!dir.0.join(segment_name(1)).exists());
        assert_eq!(log.counts(), (1, 1));
        // The head is never deleted, even with nothing live.
        log.settle([(3, -1)]);
        log.remove_dead();
        assert!(dir.0.join(segment_name(2)).exists());
    }

    #[test]
    fn a_mostly_dead_segment_is_compacted_to_the_head() {
        let dir = Dir::new("compact");
        let mut log = BodyLog::open(&dir.0).unwrap();
        let bodies: Vec<(u64, StoredMessage)> = (1..=100)
            .map(|id| (id, message("t", &vec![id as u8; 50_000])))
            .collect();
        commit(&mut log, &bodies);
        assert!(log.segments.len() >= 2);
        assert_eq!(log.compaction_candidate(), None);
        log.settle((2..=100).map(|id| (id, -1)));
        let old = split(log.location(1).unwrap()).0;
        assert_eq!(log.compaction_candidate(), Some(old));
        let (moved, lost) = log.copy_live(old);
        assert_eq!((moved.len(), lost.len()), (1, 0));
        log.flush().unwrap();
        log.moved(&moved, &lost);
        let new = log.location(1).unwrap();
        assert_ne!(split(new).0, old);
        assert_eq!(log.read(new).unwrap().payload, vec![1; 50_000]);
        assert_eq!(log.id_at(new), Some(1));
        log.sync().unwrap();
        log.remove_dead();
        assert!(!dir.0.join(segment_name(old)).exists());
    }

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(crc32c(&[b"123456789"]), 0xE306_9283);
        assert_eq!(crc32c(&[b"1234", b"56789"]), 0xE306_9283);
    }
}
