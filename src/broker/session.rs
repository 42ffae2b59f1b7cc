//! Sessions: what the broker remembers about a client, connected or not.
//!
//! A session outlives its network connection when the client asked for that (Clean Session 0
//! in 3.x, a Session Expiry Interval in 5.0). It holds the client's subscriptions, the QoS 1/2
//! messages sent to it but not yet acknowledged (*in flight*, bounded by
//! `max_inflight_messages`), the messages waiting behind them (*queued*, bounded by
//! `max_queued_messages`/`max_queued_bytes`), and the packet ids of QoS 2 messages it sent us
//! whose PUBREL has not arrived yet (for exactly-once, v311:[MQTT-4.3.3-2]).

use super::ConnId;
use crate::auth::passwd::PasswordHash;
use crate::codec::{Properties, ProtocolVersion, QoS, SubscribeOptions};
pub use crate::store::SubIds;
use crate::store::{QUEUE_HEAD_BYTES, QUEUE_HEAD_MESSAGES};
use std::cell::Cell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Instant;

/// A message accepted by the broker, shared by every queue and in-flight slot that holds it.
#[derive(Debug)]
pub struct Message {
    /// The topic's bytes, then the payload's: one allocation where two boxes took two (an
    /// allocation and a free fewer per message, and the payload is on the cache lines after
    /// the topic when the message is written out).
    body: Box<[u8]>,
    /// How many of `body`'s bytes are the topic.
    topic_len: u32,
    pub qos: QoS,
    pub retain: bool,
    /// MQTT 5 properties to forward (never a topic alias or subscription identifier).
    pub properties: Properties,
    /// When a v5 Message Expiry Interval runs out.
    pub expires_at: Option<Instant>,
    /// The publishing session, for No Local.
    pub origin: Option<super::SessionId>,
    /// Its body in the store, once a persistent session's delivery of it was stored.
    pub stored: Cell<StoredBody>,
}

/// A message's body row in the store: one for every persistent session the message goes to.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoredBody {
    /// The row's id; 0 while the message was never stored.
    pub id: u64,
    /// The last store batch that named the body (see `Persist::body`).
    pub batch: u64,
}

impl Message {
    /// A message on `topic` with `payload`, at `qos`, with no properties, expiry, origin or
    /// store row (set those fields after).
    pub fn new(topic: &str, payload: &[u8], qos: QoS, retain: bool) -> Message {
        let mut body = Vec::with_capacity(topic.len() + payload.len());
        body.extend_from_slice(topic.as_bytes());
        body.extend_from_slice(payload);
        Message {
            body: body.into_boxed_slice(),
            // An MQTT topic is at most 65 535 bytes.
            topic_len: u32::try_from(topic.len()).unwrap_or(u32::MAX),
            qos,
            retain,
            properties: Properties::default(),
            expires_at: None,
            origin: None,
            stored: Cell::default(),
        }
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        // Copied from a `&str` in `Message::new` and never written since: cannot fail.
        std::str::from_utf8(self.topic_bytes()).unwrap_or_default()
    }

    /// The topic's bytes, with no UTF-8 check (what is written out).
    pub fn topic_bytes(&self) -> &[u8] {
        let n = usize::try_from(self.topic_len).unwrap_or(usize::MAX);
        self.body.get(..n).unwrap_or_default()
    }

    /// The payload.
    pub fn payload(&self) -> &[u8] {
        let n = usize::try_from(self.topic_len).unwrap_or(usize::MAX);
        self.body.get(n..).unwrap_or_default()
    }

    /// Bytes this message's data takes, for `max_queued_bytes` accounting.
    pub fn size(&self) -> usize {
        self.body.len()
    }
}

/// Where an outgoing QoS 1/2 message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutState {
    /// QoS 1 sent, waiting for PUBACK.
    AwaitPuback,
    /// QoS 2 sent, waiting for PUBREC.
    AwaitPubrec,
    /// PUBREL sent, waiting for PUBCOMP.
    AwaitPubcomp,
}

impl OutState {
    /// The state of a message just sent at `qos` (1 or 2).
    pub fn sent(qos: QoS) -> OutState {
        if qos == QoS::AtLeastOnce {
            OutState::AwaitPuback
        } else {
            OutState::AwaitPubrec
        }
    }
}

/// One outgoing message between PUBLISH and its final acknowledgement.
#[derive(Debug)]
pub struct Inflight {
    pub packet_id: u16,
    pub state: OutState,
    pub delivery: Delivery,
}

/// A message on its way to one session: the shared message plus what is particular to this
/// subscriber.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub msg: Rc<Message>,
    pub qos: QoS,
    pub retain: bool,
    /// MQTT 5 subscription identifiers of the matching subscriptions.
    pub sub_ids: SubIds,
    /// Counted against the queue limits (live traffic); retained messages sent on subscribe
    /// are not, so that a new subscriber gets all of them (flow controlled, not truncated).
    pub counted: bool,
    /// The shared subscription (`$share/...`) it came through, if any: if this session ends
    /// before acknowledging it, another member of the group gets it.
    pub group: Option<GroupKey>,
    /// Its number in the store (0 = not stored).
    pub seq: u64,
}

/// The key of a shared subscription group (`$share/{name}/{filter}`), shared by the router and
/// every delivery made through the group. An `Rc<String>` rather than an `Rc<str>`: a thin
/// pointer keeps each queued delivery 8 bytes lighter.
pub type GroupKey = Rc<String>;

/// A `VecDeque` that allocates nothing until first used: most sessions of a big fleet of idle
/// devices never hold a QoS 1/2 message, and this keeps them 24 bytes lighter per queue.
#[derive(Debug)]
// Boxed on purpose: the point is an 8-byte field until the first element arrives.
#[allow(clippy::box_collection)]
pub struct LazyDeque<T>(Option<Box<VecDeque<T>>>);

impl<T> Default for LazyDeque<T> {
    fn default() -> Self {
        LazyDeque(None)
    }
}

impl<T> LazyDeque<T> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |d| d.len())
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends at the back.
    pub fn push_back(&mut self, v: T) {
        self.0.get_or_insert_with(Box::default).push_back(v);
    }

    /// The front element.
    pub fn front(&self) -> Option<&T> {
        self.0.as_ref()?.front()
    }

    /// Removes the element at `i`.
    pub fn remove(&mut self, i: usize) -> Option<T> {
        self.0.as_mut()?.remove(i)
    }

    /// Iterates front to back.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.0.iter().flat_map(|d| d.iter())
    }

    /// The element at `i`.
    pub fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        self.0.as_mut()?.get_mut(i)
    }

    /// The element at `i`.
    pub fn get(&self, i: usize) -> Option<&T> {
        self.0.as_ref()?.get(i)
    }

    /// Takes every element, leaving the queue empty (and unallocated).
    pub fn drain_all(&mut self) -> impl Iterator<Item = T> {
        self.0.take().into_iter().flat_map(|d| d.into_iter())
    }
}

/// Identifies a session across slab reuse: index plus generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId {
    pub idx: u32,
    pub gen: u32,
}

/// Session expiry: when the broker may forget a session after its client leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Clean session (3.x) or expiry 0 (5.0): ends with the connection.
    OnDisconnect,
    /// 5.0 Session Expiry Interval in seconds.
    After(u32),
    /// 3.x Clean Session 0: kept until `persistent_client_expiration`, if any.
    Never,
}

/// A `Vec` that allocates nothing until first used (8 bytes instead of 24 while empty): most
/// of a fleet's sessions hold few subscriptions or none.
#[derive(Debug)]
// Boxed on purpose, as `LazyDeque`.
#[allow(clippy::box_collection)]
pub struct LazyVec<T>(Option<Box<Vec<T>>>);

impl<T> Default for LazyVec<T> {
    fn default() -> Self {
        LazyVec(None)
    }
}

impl<T> LazyVec<T> {
    /// Appends an element.
    pub fn push(&mut self, v: T) {
        self.0.get_or_insert_with(Box::default).push(v);
    }

    /// Iterates in order.
    pub fn iter(&self) -> std::slice::Iter<'_, T> {
        self.0.as_deref().map_or(&[][..], |v| &v[..]).iter()
    }

    /// Iterates in order, to change elements.
    pub fn iter_mut(&mut self) -> std::slice::IterMut<'_, T> {
        self.0
            .as_deref_mut()
            .map_or(&mut [][..], |v| &mut v[..])
            .iter_mut()
    }

    /// Keeps the elements `keep` accepts (and frees the storage when none is left).
    pub fn retain(&mut self, keep: impl FnMut(&T) -> bool) {
        if let Some(v) = self.0.as_mut() {
            v.retain(keep);
            if v.is_empty() {
                self.0 = None;
            }
        }
    }
}

/// The messages waiting behind a session's in-flight window, with the counters the queue
/// limits use; nothing is allocated while it is empty.
///
/// A stored session's queue keeps at most [`QUEUE_HEAD_MESSAGES`] deliveries and
/// [`QUEUE_HEAD_BYTES`] bytes in memory, its head. The deliveries behind it are *spilled*: in
/// the store only, counted here, and read back a page at a time, in order, once the head has
/// drained below half of either bound (see `persist.rs`). While any are spilled, every new
/// stored delivery is spilled too, so the order holds.
#[derive(Debug, Default)]
pub struct Queue(Option<Box<QueueInner>>);

#[derive(Debug, Default)]
struct QueueInner {
    items: VecDeque<Delivery>,
    /// Deliveries in memory counted against the limits, and their bytes.
    count: usize,
    bytes: usize,
    spilled: Spilled,
}

/// The deliveries of a queue that are in the store only.
#[derive(Debug, Default)]
struct Spilled {
    /// How many, and their bytes; all are counted against the limits.
    count: usize,
    bytes: usize,
    /// Every one has a higher sequence number than this.
    after: u64,
    /// A page of them has been asked for and has not come yet.
    asked: bool,
}

/// How much of a queue to read from the store: the deliveries after `after`, at most
/// `max_messages` and `max_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageWanted {
    pub after: u64,
    pub max_messages: usize,
    pub max_bytes: usize,
}

impl Queue {
    /// Number of deliveries queued in memory, counted or not.
    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |q| q.items.len())
    }

    /// True when nothing waits, in memory or in the store.
    pub fn is_empty(&self) -> bool {
        self.len() == 0 && self.spilled() == 0
    }

    /// Deliveries counted against `max_queued_messages`, spilled ones included.
    pub fn count(&self) -> usize {
        self.0.as_ref().map_or(0, |q| q.count + q.spilled.count)
    }

    /// Bytes counted against `max_queued_bytes`, spilled ones included.
    pub fn bytes(&self) -> usize {
        self.0.as_ref().map_or(0, |q| q.bytes + q.spilled.bytes)
    }

    /// Bytes of the counted deliveries in memory (against `memory_limit`).
    pub fn held_bytes(&self) -> usize {
        self.0.as_ref().map_or(0, |q| q.bytes)
    }

    /// Deliveries in the store only.
    pub fn spilled(&self) -> usize {
        self.0.as_ref().map_or(0, |q| q.spilled.count)
    }

    /// True when a stored delivery must go to the store only: some are there already (it
    /// goes behind them), or the head in memory is at its bound.
    pub(super) fn spills(&self) -> bool {
        self.0.as_ref().is_some_and(|q| {
            q.spilled.count > 0
                || q.items.len() >= QUEUE_HEAD_MESSAGES
                || q.bytes >= QUEUE_HEAD_BYTES
        })
    }

    /// Counts a stored delivery (`d.seq` > 0) that stays in the store only, and drops it.
    pub(super) fn spill(&mut self, d: Delivery) {
        let q = self.0.get_or_insert_with(Box::default);
        if q.spilled.count == 0 {
            q.spilled.after = d.seq.saturating_sub(1);
        }
        q.spilled.count += 1;
        q.spilled.bytes += d.msg.size();
    }

    /// Counts the deliveries the store holds after the restored head, all after `after`.
    pub(super) fn restore_spilled(&mut self, count: usize, bytes: usize, after: u64) {
        if count > 0 {
            let q = self.0.get_or_insert_with(Box::default);
            q.spilled = Spilled {
                count,
                bytes,
                after,
                asked: false,
            };
        }
    }

    /// The page to ask the store for, once the head has drained below half its bounds and
    /// no page is on its way; marks it asked.
    pub(super) fn ask_page(&mut self) -> Option<PageWanted> {
        let q = self.0.as_mut()?;
        if q.spilled.count == 0
            || q.spilled.asked
            || q.items.len() >= QUEUE_HEAD_MESSAGES / 2
            || q.bytes >= QUEUE_HEAD_BYTES / 2
        {
            return None;
        }
        q.spilled.asked = true;
        Some(PageWanted {
            after: q.spilled.after,
            max_messages: QUEUE_HEAD_MESSAGES - q.items.len(),
            max_bytes: QUEUE_HEAD_BYTES - q.bytes,
        })
    }

    /// A page came: `count` deliveries of `bytes`, the last with sequence number `last`, now
    /// in memory. A page with nothing while some are counted as spilled means the store lost
    /// them (rows it could not keep): they are no longer counted.
    pub(super) fn page_read(&mut self, count: usize, bytes: usize, last: u64) -> bool {
        let Some(q) = self.0.as_mut() else {
            return true;
        };
        let s = &mut q.spilled;
        s.asked = false;
        if count == 0 {
            let had = s.count;
            *s = Spilled::default();
            return had == 0;
        }
        s.count = s.count.saturating_sub(count);
        s.bytes = s.bytes.saturating_sub(bytes);
        s.after = s.after.max(last);
        if s.count == 0 {
            s.bytes = 0;
        }
        true
    }

    /// The delivery at the front.
    pub fn front(&self) -> Option<&Delivery> {
        self.0.as_ref()?.items.front()
    }

    /// Iterates front to back.
    pub fn iter(&self) -> impl Iterator<Item = &Delivery> {
        self.0.iter().flat_map(|q| q.items.iter())
    }

    /// Adds a delivery at the back, counting it if it counts.
    fn push_back(&mut self, d: Delivery) {
        let q = self.0.get_or_insert_with(Box::default);
        if d.counted {
            q.count += 1;
            q.bytes += d.msg.size();
        }
        q.items.push_back(d);
    }

    /// Puts a delivery back at the front, counting it if it counts.
    fn push_front(&mut self, d: Delivery) {
        let q = self.0.get_or_insert_with(Box::default);
        if d.counted {
            q.count += 1;
            q.bytes += d.msg.size();
        }
        q.items.push_front(d);
    }

    /// Takes the delivery at the front. A queue that held a burst gives its memory back once
    /// it has drained.
    fn pop_front(&mut self) -> Option<Delivery> {
        let q = self.0.as_mut()?;
        let d = q.items.pop_front()?;
        if d.counted {
            q.count -= 1;
            q.bytes -= d.msg.size();
        }
        if q.items.is_empty() && q.items.capacity() > 64 && q.spilled.count == 0 {
            self.0 = None;
        }
        Some(d)
    }

    /// Keeps only the deliveries `keep` accepts, in order, updating the counters.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&Delivery) -> bool) {
        let Some(q) = self.0.as_mut() else {
            return;
        };
        q.items.retain(|d| keep(d));
        let counted = q.items.iter().filter(|d| d.counted);
        q.count = counted.clone().count();
        q.bytes = counted.map(|d| d.msg.size()).sum();
    }

    /// Takes every delivery in memory, leaving the queue empty (and unallocated; the
    /// spilled ones are forgotten).
    pub fn drain_all(&mut self) -> impl Iterator<Item = Delivery> {
        self.0.take().into_iter().flat_map(|q| q.items.into_iter())
    }
}

/// How a bridge's local session is kept, beyond what a client's is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BridgeLocal {
    /// Stored like a client's session (`local_cleansession false`), so its queue for the
    /// remote survives a restart.
    pub stored: bool,
    /// QoS 0 messages wait in the queue while offline too, whatever `queue_qos0_messages`
    /// says: a lazy bridge's, which counts them towards its threshold (as Mosquitto).
    pub keeps_qos0: bool,
}

impl Session {
    /// True if QoS 0 messages wait for this session while it is offline regardless of
    /// `queue_qos0_messages` (see [`BridgeLocal::keeps_qos0`]).
    pub fn keeps_qos0(&self) -> bool {
        self.bridge.is_some_and(|b| b.keeps_qos0)
    }
}

/// Marks a session with no connection (`Session::conn`).
const NO_CONN: u32 = u32::MAX;

/// What the broker keeps about one client.
///
/// Thousands of idle clients each have one, so the fields a quiet session never uses live in
/// a separately allocated `Cold` part that exists only once something needs it, and the
/// collections allocate on first use.
#[derive(Debug)]
pub struct Session {
    pub gen: u32,
    /// Listener of the latest connection: its ACL applies, also while offline.
    pub listener: u16,
    /// Version of the client's latest connection (decides how messages are encoded).
    pub version: ProtocolVersion,
    /// Set while messages for this session are being dropped, so the log says it once.
    pub dropping: bool,
    /// Set for the local side of one of midge's bridges (never expired).
    pub bridge: Option<BridgeLocal>,
    next_packet_id: u16,
    pub expiry: Expiry,
    pub client_id: Box<str>,
    /// The connection, `NO_CONN` while offline (see [`Session::conn`]).
    conn: u32,
    pub subscriptions: LazyVec<(Box<str>, SubscribeOptions, u32)>,
    pub inflight: LazyDeque<Inflight>,
    pub queue: Queue,
    cold: Option<Box<Cold>>,
}

/// What a client proved at CONNECT, kept to check it again when the rules change.
#[derive(Debug, Clone)]
pub enum Credential {
    /// Its password matched this password file entry.
    File(Rc<PasswordHash>),
    /// Dynamic security admitted it: its username is one of dynsec's clients.
    Dynsec,
}

/// The rarely used part of a session.
#[derive(Debug, Default)]
struct Cold {
    username: Option<Rc<str>>,
    /// What the latest connection logged in with (never the password).
    login: Option<Credential>,
    expires_at: Option<Instant>,
    pending_will: Option<(Box<crate::codec::LastWill>, Instant)>,
    incoming_qos2: Vec<u16>,
    /// Retained replays of new subscriptions, not all sent yet, oldest first.
    replays: VecDeque<Replay>,
    /// Messages dropped for this client since the last log line about it, and when that was.
    drops: (u64, Option<Instant>),
}

/// The retained messages that matched a new subscription, sent one at a time as the
/// subscriber's window and output buffer allow (`retain.rs`), so that a large retained set
/// costs 8 bytes per message while it waits, and none is dropped for the output bound.
#[derive(Debug)]
pub struct Replay {
    /// The retained messages as they were at the SUBSCRIBE, in topic order when there are up
    /// to 10 000. One republished or cleared since is not sent: the subscriber got the newer
    /// value live.
    pub messages: Vec<Rc<super::retain::Kept>>,
    /// The next one to send.
    pub next: usize,
    /// The QoS granted to the subscription.
    pub granted: QoS,
    /// Its subscription identifier (0: none).
    pub sub_id: u32,
}

impl Session {
    /// A fresh, empty session.
    pub fn new(gen: u32, client_id: Box<str>, version: ProtocolVersion, expiry: Expiry) -> Session {
        Session {
            gen,
            listener: 0,
            version,
            dropping: false,
            bridge: None,
            next_packet_id: 0,
            expiry,
            client_id,
            conn: NO_CONN,
            subscriptions: LazyVec::default(),
            inflight: LazyDeque::default(),
            queue: Queue::default(),
            cold: None,
        }
    }

    /// The connection of an online session.
    pub fn conn(&self) -> Option<ConnId> {
        (self.conn != NO_CONN).then_some(self.conn as ConnId)
    }

    /// Binds the session to a connection, or marks it offline.
    pub fn set_conn(&mut self, conn: Option<ConnId>) {
        self.conn = conn.map_or(NO_CONN, |c| c as u32);
    }

    fn cold(&mut self) -> &mut Cold {
        self.cold.get_or_insert_with(Box::default)
    }

    /// Counts a message dropped for this client; returns how many were dropped since the
    /// last log line, and that line's time.
    pub fn count_drop(&mut self) -> (u64, Option<Instant>) {
        let d = &mut self.cold().drops;
        d.0 += 1;
        *d
    }

    /// A log line about this client's drops is written at `now`: returns how many were
    /// dropped since the last one, and starts counting again.
    pub fn drops_logged(&mut self, now: Instant) -> u64 {
        std::mem::replace(&mut self.cold().drops, (0, Some(now))).0
    }

    /// Starts a retained replay behind any in progress.
    pub fn add_replay(&mut self, r: Replay) {
        self.cold().replays.push_back(r);
    }

    /// Whether retained messages of a replay wait to be sent.
    pub fn replaying(&self) -> bool {
        self.cold.as_ref().is_some_and(|c| !c.replays.is_empty())
    }

    /// The next message of the oldest replay, with the replay's granted QoS and subscription
    /// identifier; replays that are done are forgotten.
    pub fn next_replayed(&mut self) -> Option<(Rc<super::retain::Kept>, QoS, u32)> {
        let replays = &mut self.cold.as_mut()?.replays;
        loop {
            let r = replays.front_mut()?;
            if let Some(m) = r.messages.get(r.next) {
                r.next += 1;
                return Some((m.clone(), r.granted, r.sub_id));
            }
            replays.pop_front();
        }
    }

    /// The granted QoS of the oldest replay and the QoS of its next message, if any.
    pub fn next_replay_qos(&self) -> Option<(QoS, QoS)> {
        let r = self
            .cold
            .as_ref()?
            .replays
            .iter()
            .find(|r| r.next < r.messages.len())?;
        r.messages.get(r.next).map(|m| (r.granted, m.qos()))
    }

    /// Username of the latest connection, for ACL checks.
    pub fn username(&self) -> Option<&str> {
        self.cold.as_ref().and_then(|c| c.username.as_deref())
    }

    /// Sets the username and what it was verified against, if anything (at CONNECT).
    pub fn set_username(&mut self, username: Option<&str>, login: Option<Credential>) {
        match username {
            Some(u) => {
                let cold = self.cold();
                cold.username = Some(Rc::from(u));
                cold.login = login;
            }
            None => {
                if let Some(c) = self.cold.as_mut() {
                    c.username = None;
                    c.login = None;
                }
            }
        }
    }

    /// What the latest connection logged in with; `None` when it did not log in with a
    /// password (anonymous, certificate, no password file).
    pub fn login(&self) -> Option<&Credential> {
        self.cold.as_ref().and_then(|c| c.login.as_ref())
    }

    /// When an offline session expires (set when its client leaves).
    pub fn expires_at(&self) -> Option<Instant> {
        self.cold.as_ref().and_then(|c| c.expires_at)
    }

    /// Sets or clears the expiry time.
    pub fn set_expires_at(&mut self, at: Option<Instant>) {
        if at.is_some() || self.cold.is_some() {
            self.cold().expires_at = at;
        }
    }

    /// An MQTT 5 will waiting for its Will Delay Interval, and when it is due.
    pub fn pending_will(&self) -> Option<&(Box<crate::codec::LastWill>, Instant)> {
        self.cold.as_ref().and_then(|c| c.pending_will.as_ref())
    }

    /// Sets the delayed will.
    pub fn set_pending_will(&mut self, will: Box<crate::codec::LastWill>, due: Instant) {
        self.cold().pending_will = Some((will, due));
    }

    /// Takes the delayed will away.
    pub fn take_pending_will(&mut self) -> Option<(Box<crate::codec::LastWill>, Instant)> {
        self.cold.as_mut().and_then(|c| c.pending_will.take())
    }

    /// Inbound QoS 2 packet ids received but not yet released.
    pub fn incoming_qos2(&self) -> &[u16] {
        self.cold.as_ref().map_or(&[], |c| &c.incoming_qos2)
    }

    /// Records an inbound QoS 2 id as received.
    pub fn add_incoming_qos2(&mut self, packet_id: u16) {
        self.cold().incoming_qos2.push(packet_id);
    }

    /// Releases an inbound QoS 2 id; false if it was not held.
    pub fn release_incoming_qos2(&mut self, packet_id: u16) -> bool {
        let Some(c) = self.cold.as_mut() else {
            return false;
        };
        match c.incoming_qos2.iter().position(|&p| p == packet_id) {
            Some(i) => {
                c.incoming_qos2.swap_remove(i);
                true
            }
            None => false,
        }
    }

    /// Replaces the inbound QoS 2 ids (restore from the store).
    pub fn set_incoming_qos2(&mut self, ids: Vec<u16>) {
        if !ids.is_empty() {
            self.cold().incoming_qos2 = ids;
        }
    }

    /// Allocates a packet id not used by any message in flight (v311:[MQTT-2.3.1-2]).
    /// The caller keeps the in-flight window below 65535, so a free id always exists.
    pub fn alloc_packet_id(&mut self) -> u16 {
        loop {
            self.next_packet_id = self.next_packet_id.wrapping_add(1);
            if self.next_packet_id == 0 {
                self.next_packet_id = 1;
            }
            let id = self.next_packet_id;
            if !self.inflight.iter().any(|m| m.packet_id == id) {
                return id;
            }
        }
    }

    /// Adds a delivery to the back of the queue, updating the counters. The broker goes
    /// through its `Outlet` (`deliver.rs`), which also keeps the memory of all queues.
    pub(super) fn enqueue(&mut self, d: Delivery) {
        self.queue.push_back(d);
    }

    /// Puts back the delivery just taken from the front of the queue, updating the counters.
    pub(super) fn requeue_front(&mut self, d: Delivery) {
        self.queue.push_front(d);
    }

    /// Takes the delivery at the front of the queue, updating the counters (through the
    /// broker's `Outlet`, as [`Session::enqueue`]).
    pub(super) fn dequeue(&mut self) -> Option<Delivery> {
        self.queue.pop_front()
    }

    /// Position in `inflight` of the message with this packet id.
    pub fn find_inflight(&self, packet_id: u16) -> Option<usize> {
        self.inflight.iter().position(|m| m.packet_id == packet_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery() -> Delivery {
        Delivery {
            msg: Rc::new(Message::new("t", &[1, 2, 3], QoS::AtLeastOnce, false)),
            qos: QoS::AtLeastOnce,
            retain: false,
            sub_ids: SubIds::default(),
            counted: true,
            group: None,
            seq: 0,
        }
    }

    #[test]
    fn a_queued_delivery_and_an_inflight_slot_keep_to_their_size() {
        // A million queued QoS 1 messages are a million of these: grow them only on purpose.
        assert!(
            size_of::<Delivery>() <= 40,
            "Delivery {}",
            size_of::<Delivery>()
        );
        assert!(
            size_of::<Inflight>() <= 48,
            "Inflight {}",
            size_of::<Inflight>()
        );
        assert_eq!(SubIds::from(Vec::new()), SubIds::default());
        assert_eq!(SubIds::from(vec![7, 9]).as_slice(), &[7, 9]);
    }

    #[test]
    fn a_message_keeps_its_topic_and_payload_apart_in_one_allocation() {
        let m = Message::new("a/é", b"xyz", QoS::AtMostOnce, false);
        assert_eq!((m.topic(), m.payload(), m.size()), ("a/é", &b"xyz"[..], 7));
        let empty = Message::new("t", b"", QoS::AtMostOnce, true);
        assert_eq!((empty.topic(), empty.payload()), ("t", &b""[..]));
    }

    #[test]
    fn packet_ids_skip_ids_in_flight_mqtt_2_3_1_2() {
        let mut s = Session::new(0, "c".into(), ProtocolVersion::V311, Expiry::Never);
        assert_eq!(s.alloc_packet_id(), 1);
        s.inflight.push_back(Inflight {
            packet_id: 2,
            state: OutState::AwaitPuback,
            delivery: delivery(),
        });
        assert_eq!(s.alloc_packet_id(), 3);
        s.next_packet_id = 65534;
        assert_eq!(s.alloc_packet_id(), 65535);
        // wraps past 0 and skips 2, still in flight
        s.inflight.push_back(Inflight {
            packet_id: 1,
            state: OutState::AwaitPuback,
            delivery: delivery(),
        });
        assert_eq!(s.alloc_packet_id(), 3);
    }

    #[test]
    fn queue_counts_only_counted_deliveries() {
        let mut s = Session::new(0, "c".into(), ProtocolVersion::V311, Expiry::Never);
        s.enqueue(delivery());
        let mut d = delivery();
        d.counted = false;
        s.enqueue(d);
        assert_eq!((s.queue.count(), s.queue.bytes()), (1, 4));
        s.dequeue();
        s.dequeue();
        assert_eq!((s.queue.count(), s.queue.bytes()), (0, 0));
    }

    #[test]
    fn a_drained_burst_gives_its_queue_memory_back() {
        let mut s = Session::new(0, "c".into(), ProtocolVersion::V311, Expiry::Never);
        for _ in 0..100 {
            s.enqueue(delivery());
        }
        while s.dequeue().is_some() {}
        assert!(s.queue.0.is_none());
        assert_eq!(s.queue.bytes(), 0);
    }

    #[test]
    fn subscriptions_allocate_only_while_there_are_some() {
        let mut v: LazyVec<u8> = LazyVec::default();
        assert_eq!(v.iter().count(), 0);
        v.push(1);
        v.push(2);
        v.iter_mut().for_each(|x| *x += 1);
        assert_eq!(v.iter().copied().collect::<Vec<_>>(), vec![2, 3]);
        v.retain(|&x| x != 2);
        assert_eq!(v.iter().copied().collect::<Vec<_>>(), vec![3]);
        v.retain(|_| false);
        assert!(v.0.is_none());
    }
}
