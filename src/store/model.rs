//! What the store keeps, as plain data: the [`Change`]s the broker submits and the [`Snapshot`]
//! it gets back at start.
//!
//! These types deliberately know nothing of the broker (no `Rc`, no `Instant`, no codec types):
//! they cross to the store's helper thread, and times are Unix seconds because an `Instant`
//! means nothing after a restart. The broker converts both ways.

use std::sync::Arc;

/// Where one message to a session stands (the `state` column of `deliveries`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageState {
    /// Waiting behind the in-flight window; not sent yet (packet id 0).
    Queued,
    /// QoS 1 sent, waiting for PUBACK.
    AwaitPuback,
    /// QoS 2 sent, waiting for PUBREC.
    AwaitPubrec,
    /// PUBREL sent, waiting for PUBCOMP.
    AwaitPubcomp,
}

impl MessageState {
    /// The value stored in the `state` column.
    pub fn code(self) -> u8 {
        match self {
            MessageState::Queued => 0,
            MessageState::AwaitPuback => 1,
            MessageState::AwaitPubrec => 2,
            MessageState::AwaitPubcomp => 3,
        }
    }

    /// The state a `state` column value stands for, if it is a valid one.
    pub fn from_code(code: i64) -> Option<MessageState> {
        match code {
            0 => Some(MessageState::Queued),
            1 => Some(MessageState::AwaitPuback),
            2 => Some(MessageState::AwaitPubrec),
            3 => Some(MessageState::AwaitPubcomp),
            _ => None,
        }
    }
}

/// An application message as the broker accepted it: a retained value, or the message inside
/// a queued / in-flight delivery.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoredMessage {
    pub topic: String,
    pub payload: Vec<u8>,
    /// 0, 1 or 2.
    pub qos: u8,
    pub retain: bool,
    /// MQTT 5 properties to forward, encoded as the broker likes (opaque to the store; empty
    /// when there are none).
    pub properties: Vec<u8>,
    /// When a v5 Message Expiry Interval runs out, in Unix seconds.
    pub expires_at: Option<u64>,
    /// Who published it, for a retained message (`check_retain_source`); the table of message
    /// bodies does not keep it.
    pub source: Option<MessageSource>,
}

/// The client that published a retained message, so that `check_retain_source` can ask the
/// ACL of the day whether it still may.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessageSource {
    pub client_id: String,
    pub username: Option<String>,
    /// The configured listener it was connected to (whose ACL applies with
    /// `per_listener_settings`).
    pub listener: u16,
}

/// How long an offline session is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionExpiry {
    /// 3.x Clean Session 0 (or v5 0xFFFFFFFF): until `persistent_client_expiration`, if any.
    Never,
    /// v5 Session Expiry Interval, in seconds.
    After(u32),
}

/// One session the broker keeps across a restart (clean-session-false / session-expiry
/// clients; sessions that end with their connection are never stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub client_id: String,
    /// Protocol level of the client's latest connection: 3 (3.1), 4 (3.1.1) or 5.
    pub protocol: u8,
    pub expiry: SessionExpiry,
    /// When the session expires, in Unix seconds, while its client is offline; `None` while
    /// it is connected (or when it never expires).
    pub expires_at: Option<u64>,
}

/// One subscription of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub filter: String,
    /// The SUBSCRIBE options byte (QoS in bits 0-1; v5 No Local, Retain As Published and
    /// Retain Handling above it).
    pub options: u8,
    /// MQTT 5 subscription identifier, 0 for none.
    pub sub_id: u32,
}

/// The subscription identifiers of one delivery: none for almost every delivery (they are an
/// MQTT 5 option few clients use), so they live behind one thin pointer, allocated only when
/// there are some. A queued delivery in the broker and its change to the store each take 16
/// bytes less than with a `Vec`: a million queued messages are 16 MB lighter, twice.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
// Boxed on purpose: the point is an 8-byte field, where a `Vec` takes 24 and a boxed slice 16.
#[allow(clippy::box_collection)]
pub struct SubIds(Option<Box<Vec<u32>>>);

impl SubIds {
    /// The identifiers, in the order given.
    pub fn as_slice(&self) -> &[u32] {
        self.0.as_deref().map_or(&[], |v| v.as_slice())
    }
}

impl From<Vec<u32>> for SubIds {
    fn from(ids: Vec<u32>) -> SubIds {
        SubIds((!ids.is_empty()).then(|| Box::new(ids)))
    }
}

/// One message on its way to a session: queued, or in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedMessage {
    /// Orders a session's messages; chosen by the broker, unique in the whole store (one
    /// counter numbers every session's messages, so that the store needs no second index).
    pub seq: u64,
    /// 0 while queued.
    pub packet_id: u16,
    pub state: MessageState,
    /// QoS of this delivery (the minimum of the message's and the subscription's).
    pub qos: u8,
    /// Retain flag of this delivery.
    pub retain: bool,
    /// MQTT 5 subscription identifiers of the matching subscriptions.
    pub sub_ids: SubIds,
    /// The id of its message's body ([`Change::MessageBody`]): a message queued for several
    /// sessions is stored once.
    pub body: u64,
}

/// An MQTT 5 will waiting for its Will Delay Interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WillRecord {
    pub client_id: String,
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
    /// Will properties, opaque to the store.
    pub properties: Vec<u8>,
    /// When it must be published, in Unix seconds.
    pub due_at: u64,
}

/// One change to the durable state. The broker collects every change of one loop turn and
/// submits them as one batch, applied in order in one transaction.
///
/// A fan-out to offline sessions makes a change per session per message, and they wait in
/// memory while the writer catches up: the common variants are kept small (a client id is
/// shared, not copied into each change; the large records are boxed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Sets the retained message of `message.topic`.
    RetainedSet { message: Box<StoredMessage> },
    /// Removes the retained message of a topic.
    RetainedClear { topic: String },
    /// Creates a session or replaces its record (its subscriptions, messages, QoS 2 ids and
    /// will are kept).
    SessionUpsert { session: SessionRecord },
    /// Deletes a session with its subscriptions, messages, inbound QoS 2 ids and will.
    SessionDelete { client_id: Arc<str> },
    /// Adds a subscription or replaces the one with the same filter.
    SubscriptionSet {
        client_id: Arc<str>,
        subscription: Subscription,
    },
    /// Removes a subscription.
    SubscriptionDelete { client_id: Arc<str>, filter: String },
    /// Stores the body of a message that [`Change::MessageAdd`]s then refer to by `id` (chosen
    /// by the broker, unique in the store). A body already stored is kept as it is; one is
    /// deleted with the last delivery that refers to it.
    MessageBody {
        id: u64,
        message: Box<StoredMessage>,
    },
    /// Adds a message to a session (replacing one with the same `seq`); its body must be
    /// stored already, or in the same batch before it.
    MessageAdd {
        client_id: Arc<str>,
        message: QueuedMessage,
    },
    /// A message was sent or advanced in the QoS 1/2 flow.
    MessageState {
        client_id: Arc<str>,
        seq: u64,
        packet_id: u16,
        state: MessageState,
    },
    /// A message was acknowledged, dropped or expired.
    MessageDelete { client_id: Arc<str>, seq: u64 },
    /// An inbound QoS 2 PUBLISH was received; its PUBREL has not come yet.
    Qos2Add { client_id: Arc<str>, packet_id: u16 },
    /// The PUBREL of an inbound QoS 2 message came.
    Qos2Delete { client_id: Arc<str>, packet_id: u16 },
    /// Sets the pending delayed will of a client (replacing any).
    WillSet { will: Box<WillRecord> },
    /// The delayed will was published or cancelled.
    WillDelete { client_id: Arc<str> },
}

/// Everything of one stored session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionState {
    pub session: SessionRecord,
    /// In filter order.
    pub subscriptions: Vec<Subscription>,
    /// Queued and in-flight messages, in `seq` order: the head of the queue, at most
    /// [`QUEUE_HEAD_MESSAGES`] messages and [`QUEUE_HEAD_BYTES`] bytes (at least one).
    pub messages: Vec<QueuedMessage>,
    /// The messages the store holds for the session after `messages`, read later a page at a
    /// time ([`Store::read_messages`](super::Store::read_messages)).
    pub more: QueueRest,
    /// Inbound QoS 2 packet ids awaiting PUBREL, ascending.
    pub qos2_inbound: Vec<u16>,
}

/// The part of a session's queue a [`Snapshot`] leaves in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueRest {
    /// How many messages.
    pub count: u64,
    /// Their bytes, topic plus payload (as the queue limits count them).
    pub bytes: u64,
    /// The highest `seq` among them (0 when there are none).
    pub last_seq: u64,
}

/// Messages of one session a [`Snapshot`] holds at most (the head of its queue); the rest stay
/// in the store until the session's queue drains. The broker keeps no more than this of a
/// stored session's queue in memory, so that a queue of any length costs bounded memory.
pub const QUEUE_HEAD_MESSAGES: usize = 1000;

/// Bytes (topic plus payload) of one session's messages a [`Snapshot`] holds at most, beyond
/// its first message; see [`QUEUE_HEAD_MESSAGES`].
pub const QUEUE_HEAD_BYTES: usize = 1 << 20;

/// Asks the store for the next messages of one session's queue, those after `after` in
/// `seq` order: the part of a long queue that is in the store only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// The broker's number for this request, given back with the page.
    pub tag: u64,
    pub client_id: String,
    /// The highest `seq` the broker already holds (or held).
    pub after: u64,
    /// At most this many messages...
    pub max_messages: usize,
    /// ...and at most this many bytes (topic plus payload), beyond the first message.
    pub max_bytes: usize,
}

/// The answer to a [`PageRequest`], read after every batch submitted before the request was
/// committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessagePage {
    /// The request's `tag`.
    pub tag: u64,
    /// In `seq` order; fewer than asked when the store holds no more.
    pub messages: Vec<QueuedMessage>,
    /// The bodies they refer to, by id.
    pub bodies: std::collections::BTreeMap<u64, StoredMessage>,
}

/// Everything needed to rebuild the broker at start.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// In topic order.
    pub retained: Vec<StoredMessage>,
    /// The bodies the sessions' messages refer to ([`QueuedMessage::body`]), by id.
    pub bodies: std::collections::BTreeMap<u64, StoredMessage>,
    /// The highest body id in the store (those of messages left in it included), so that new
    /// ids go on above it.
    pub last_body: u64,
    /// In client id order.
    pub sessions: Vec<SessionState>,
    /// Pending delayed wills, in client id order.
    pub wills: Vec<WillRecord>,
    /// Set when the store was found damaged and rebuilt from what could be read.
    pub recovery: Option<RecoveryReport>,
}

/// What became of a damaged store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Where the damaged file was moved (`midge.db.corrupt-<unix time>`).
    pub moved_to: std::path::PathBuf,
    /// Why the store was judged damaged.
    pub reason: String,
    /// One entry per table of the schema.
    pub tables: Vec<TableRecovery>,
}

/// Rows of one table saved from a damaged store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRecovery {
    pub table: &'static str,
    /// Rows copied into the fresh store.
    pub recovered: u64,
    /// Rows known lost: rows that failed to read or held invalid values, or, when the
    /// damaged table could still count its rows, that count minus `recovered`.
    pub lost: u64,
    /// False when the damaged table could not even count its rows: more than `lost` rows
    /// may be gone (a destroyed page takes rows nobody can count).
    pub lost_is_exact: bool,
}

impl TableRecovery {
    /// A table of which nothing could be read.
    pub(crate) fn unreadable(table: &'static str) -> TableRecovery {
        TableRecovery {
            table,
            recovered: 0,
            lost: 0,
            lost_is_exact: false,
        }
    }
}

/// A queued QoS 1 delivery of body `body` to `client_id` as its message `seq`, for tests.
#[cfg(test)]
pub(crate) fn queued_add(client_id: &str, seq: u64, body: u64) -> Change {
    Change::MessageAdd {
        client_id: client_id.into(),
        message: QueuedMessage {
            seq,
            packet_id: 0,
            state: MessageState::Queued,
            qos: 1,
            retain: false,
            sub_ids: SubIds::default(),
            body,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fan-out to offline sessions queues a change per session and message while the writer
    /// catches up: the common changes stay within a cache line, whatever the rare ones hold.
    /// (56 bytes since the subscription identifiers went behind a thin pointer.)
    #[test]
    fn a_change_is_small() {
        assert!(
            std::mem::size_of::<Change>() <= 56,
            "{}",
            std::mem::size_of::<Change>()
        );
    }
}
