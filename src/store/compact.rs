//! Changes that cancel within one commit are not written.
//!
//! The writer commits every batch that queued up while it was busy in one transaction (group
//! commit). Under load that group often holds a message's whole life: queued for a subscriber,
//! sent, acknowledged. Writing its row only to delete it in the same transaction costs the SD
//! card a page write per message for nothing. [`compact`] drops every change a later change of
//! the same group makes pointless:
//!
//! - a session's message (added, or moved along its QoS flow) that a later change deletes;
//! - an earlier state of the same message, which a later state replaces;
//! - a subscription set, an inbound QoS 2 id added, a will set, a retained message set, when a
//!   later change of the group deletes or replaces it;
//! - everything of a client before its session is deleted (the delete takes it all);
//! - a message body that no message kept in the group refers to, and a body stored again
//!   (the broker names a body in each batch that refers to it; the first one stores it).
//!
//! The deleting change itself is always kept: the row may predate the group. A delete that
//! finds nothing writes no page.

use super::model::Change;
use crate::broker::router::FnvHasher;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasherDefault;

/// The maps below are keyed by client ids and numbers the broker chose, and rebuilt for every
/// commit: FNV hashes them at a fraction of SipHash's cost.
type Map<K, V> = HashMap<K, V, BuildHasherDefault<FnvHasher>>;

/// The changes of a group still kept for one of a session's messages: the add that writes its
/// row, and its latest state.
#[derive(Default)]
struct Kept {
    add: Option<usize>,
    state: Option<usize>,
}

/// The client id a change to a session's message names.
fn client_of(change: &Change) -> Option<&str> {
    match change {
        Change::MessageAdd { client_id, .. }
        | Change::MessageState { client_id, .. }
        | Change::MessageDelete { client_id, .. } => Some(client_id),
        _ => None,
    }
}

/// Notes change `i` as one of `client`'s, when the group needs that (see `compact`).
fn of_client<'a>(by_client: &mut Option<Map<&'a str, Vec<usize>>>, client: &'a str, i: usize) {
    if let Some(map) = by_client {
        map.entry(client).or_default().push(i);
    }
}

/// Drops what the changes of one message (`run`: those of one `seq`, in group order) make
/// pointless: an add replaces the row of the same `seq` (see `schema::apply`) and a delete
/// removes it, so both supersede what earlier changes wrote to it; a state supersedes the state
/// before it, not the row the add wrote.
fn settle(run: &[(u64, usize)], all: &[(u64, &Change)], keep: &mut [bool]) {
    let mut unkeep = |index: Option<usize>| {
        if let Some(i) = index {
            keep[i] = false;
        }
    };
    // Sequence numbers are unique in the store, so a run is one session's; should two
    // sessions share one all the same, each is settled on its own, from its first change.
    for (first, &(_, i)) in run.iter().enumerate() {
        let client = client_of(all[i].1);
        if run[..first]
            .iter()
            .any(|&(_, j)| client_of(all[j].1) == client)
        {
            continue;
        }
        let mut kept = Kept::default();
        for &(_, j) in &run[first..] {
            if client_of(all[j].1) != client {
                continue;
            }
            match all[j].1 {
                Change::MessageAdd { .. } => {
                    unkeep(kept.add.replace(j));
                    unkeep(kept.state.take());
                }
                Change::MessageState { .. } => unkeep(kept.state.replace(j)),
                _ => {
                    unkeep(kept.add.take());
                    unkeep(kept.state.take());
                }
            }
        }
    }
}

/// The changes of `batches` (batch number, changes) in order, without those a later change
/// of the same group supersedes. Each keeps its batch number, for error messages.
pub(crate) fn compact(batches: &[(u64, Vec<Change>)]) -> Vec<(u64, &Change)> {
    let all: Vec<(u64, &Change)> = batches
        .iter()
        .flat_map(|(n, changes)| changes.iter().map(move |c| (*n, c)))
        .collect();
    let mut keep = vec![true; all.len()];
    // The changes to sessions' messages, as (seq, index): a fan-out to offline sessions puts a
    // million in one group, which sorting settles in a fraction of the time and memory of a
    // map by message.
    let mut flow: Vec<(u64, usize)> = Vec::new();
    // Index of the latest change still kept for each key.
    let mut subscription: Map<(&str, &str), usize> = Map::default();
    let mut qos2: Map<(&str, u16), usize> = Map::default();
    let mut will: Map<&str, usize> = Map::default();
    let mut retained: Map<&str, usize> = Map::default();
    // Each client's changes, for a session delete to drop: gathered only when the group
    // deletes a session (a fan-out to offline sessions would otherwise hash a client id and
    // grow a list for each of its million adds).
    let ends_sessions = all
        .iter()
        .any(|(_, c)| matches!(c, Change::SessionDelete { .. }));
    let mut by_client: Option<Map<&str, Vec<usize>>> = ends_sessions.then(Map::default);
    // The first body of each id.
    let mut bodies: Map<u64, usize> = Map::default();
    let unkeep = |keep: &mut Vec<bool>, index: Option<usize>| {
        if let Some(i) = index {
            keep[i] = false;
        }
    };
    for (i, (_, change)) in all.iter().enumerate() {
        match change {
            Change::RetainedSet { message: m } => {
                unkeep(&mut keep, retained.insert(m.topic.as_str(), i));
            }
            Change::RetainedClear { topic } => {
                unkeep(&mut keep, retained.remove(topic.as_str()));
            }
            Change::SessionUpsert { session } => of_client(&mut by_client, &session.client_id, i),
            Change::SessionDelete { client_id } => {
                // The delete takes the session's subscriptions, messages, QoS 2 ids and will.
                let mine = by_client.as_mut().and_then(|m| m.remove(&**client_id));
                for j in mine.unwrap_or_default() {
                    keep[j] = false;
                }
                subscription.retain(|(c, _), _| *c != &**client_id);
                qos2.retain(|(c, _), _| *c != &**client_id);
                will.remove(&**client_id);
            }
            Change::SubscriptionSet {
                client_id,
                subscription: s,
            } => {
                let key = (&**client_id, s.filter.as_str());
                unkeep(&mut keep, subscription.insert(key, i));
                of_client(&mut by_client, client_id, i);
            }
            Change::SubscriptionDelete { client_id, filter } => {
                unkeep(
                    &mut keep,
                    subscription.remove(&(&**client_id, filter.as_str())),
                );
            }
            Change::MessageBody { id, .. } => {
                if bodies.contains_key(id) {
                    keep[i] = false;
                } else {
                    bodies.insert(*id, i);
                }
            }
            Change::MessageAdd {
                client_id,
                message: m,
            } => {
                flow.push((m.seq, i));
                of_client(&mut by_client, client_id, i);
            }
            Change::MessageState { client_id, seq, .. } => {
                flow.push((*seq, i));
                of_client(&mut by_client, client_id, i);
            }
            Change::MessageDelete { seq, .. } => flow.push((*seq, i)),
            Change::Qos2Add {
                client_id,
                packet_id,
            } => {
                unkeep(&mut keep, qos2.insert((&**client_id, *packet_id), i));
                of_client(&mut by_client, client_id, i);
            }
            Change::Qos2Delete {
                client_id,
                packet_id,
            } => {
                unkeep(&mut keep, qos2.remove(&(&**client_id, *packet_id)));
            }
            Change::WillSet { will: w } => {
                unkeep(&mut keep, will.insert(w.client_id.as_str(), i));
                of_client(&mut by_client, &w.client_id, i);
            }
            Change::WillDelete { client_id } => {
                unkeep(&mut keep, will.remove(&**client_id));
            }
        }
    }
    // In seq order, and in group order within a message. A session deleted meanwhile needs no
    // care: everything of it before its delete is dropped already.
    flow.sort_unstable();
    for run in flow.chunk_by(|a, b| a.0 == b.0) {
        settle(run, &all, &mut keep);
    }
    // A body is kept if a kept add of the group refers to it.
    let mut referred: HashSet<u64, BuildHasherDefault<FnvHasher>> = HashSet::default();
    for ((_, change), &kept) in all.iter().zip(&keep) {
        if let (Change::MessageAdd { message: m, .. }, true) = (change, kept) {
            referred.insert(m.body);
        }
    }
    for (id, i) in bodies {
        if !referred.contains(&id) {
            keep[i] = false;
        }
    }
    all.into_iter()
        .zip(keep)
        .filter_map(|(change, kept)| kept.then_some(change))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::model::{
        MessageState, SessionExpiry, SessionRecord, StoredMessage, Subscription,
    };

    fn msg(seq: u64) -> Change {
        add("c", seq, 1)
    }

    fn add(client_id: &str, seq: u64, body: u64) -> Change {
        crate::store::model::queued_add(client_id, seq, body)
    }

    fn body(id: u64) -> Change {
        Change::MessageBody {
            id,
            message: Box::new(stored("t")),
        }
    }

    fn stored(topic: &str) -> StoredMessage {
        StoredMessage {
            topic: topic.into(),
            payload: b"p".to_vec(),
            qos: 1,
            retain: false,
            ..StoredMessage::default()
        }
    }

    fn state(seq: u64, state: MessageState) -> Change {
        Change::MessageState {
            client_id: "c".into(),
            seq,
            packet_id: 1,
            state,
        }
    }

    fn delete(seq: u64) -> Change {
        Change::MessageDelete {
            client_id: "c".into(),
            seq,
        }
    }

    fn kept(batches: &[(u64, Vec<Change>)]) -> Vec<Change> {
        compact(batches)
            .into_iter()
            .map(|(_, c)| c.clone())
            .collect()
    }

    #[test]
    fn a_message_acknowledged_in_the_same_group_leaves_only_its_delete() {
        let batches = vec![
            (1, vec![msg(1), msg(2), state(1, MessageState::AwaitPuback)]),
            (2, vec![delete(1)]),
        ];
        assert_eq!(kept(&batches), vec![msg(2), delete(1)]);
    }

    #[test]
    fn a_later_state_replaces_an_earlier_one_but_not_the_add() {
        let batches = vec![(
            1,
            vec![
                msg(1),
                state(1, MessageState::AwaitPubrec),
                state(1, MessageState::AwaitPubcomp),
            ],
        )];
        assert_eq!(
            kept(&batches),
            vec![msg(1), state(1, MessageState::AwaitPubcomp)]
        );
    }

    #[test]
    fn a_session_deleted_takes_its_earlier_changes_and_not_later_ones() {
        let session = Change::SessionUpsert {
            session: SessionRecord {
                client_id: "c".into(),
                protocol: 4,
                expiry: SessionExpiry::Never,
                expires_at: None,
            },
        };
        let sub = Change::SubscriptionSet {
            client_id: "c".into(),
            subscription: Subscription {
                filter: "a/#".into(),
                options: 1,
                sub_id: 0,
            },
        };
        let gone = Change::SessionDelete {
            client_id: "c".into(),
        };
        let other = Change::Qos2Add {
            client_id: "d".into(),
            packet_id: 3,
        };
        let batches = vec![
            (1, vec![session.clone(), sub.clone(), msg(1), other.clone()]),
            (2, vec![gone.clone(), session.clone()]),
        ];
        assert_eq!(kept(&batches), vec![other, gone, session]);
    }

    #[test]
    fn sets_followed_by_deletes_keep_only_the_deletes() {
        let qos2_add = Change::Qos2Add {
            client_id: "c".into(),
            packet_id: 9,
        };
        let qos2_delete = Change::Qos2Delete {
            client_id: "c".into(),
            packet_id: 9,
        };
        let set = Change::RetainedSet {
            message: Box::new(stored("r")),
        };
        let clear = Change::RetainedClear { topic: "r".into() };
        let batches = vec![(
            1,
            vec![
                qos2_add,
                set.clone(),
                set.clone(),
                qos2_delete.clone(),
                clear.clone(),
                set.clone(),
            ],
        )];
        assert_eq!(kept(&batches), vec![qos2_delete, clear, set]);
    }

    #[test]
    fn an_add_again_replaces_what_the_group_wrote_of_that_message() {
        let again = add("c", 1, 2);
        let batches = vec![
            (
                1,
                vec![body(1), msg(1), state(1, MessageState::AwaitPuback)],
            ),
            (2, vec![body(2), again.clone()]),
        ];
        assert_eq!(kept(&batches), vec![body(2), again]);
    }

    #[test]
    fn messages_of_two_sessions_with_one_seq_are_settled_apart() {
        let (a, b) = (add("a", 1, 7), add("b", 1, 7));
        let gone = Change::MessageDelete {
            client_id: "a".into(),
            seq: 1,
        };
        let batches = vec![(1, vec![a, b.clone(), gone.clone()])];
        assert_eq!(kept(&batches), vec![b, gone]);
    }

    #[test]
    fn a_delete_before_the_add_cancels_nothing() {
        let batches = vec![(1, vec![delete(1), msg(1)])];
        assert_eq!(kept(&batches), vec![delete(1), msg(1)]);
    }

    #[test]
    fn a_body_nobody_keeps_is_not_written() {
        // QoS 1 to an online subscriber, acknowledged within the group: nothing but the delete.
        let batches = vec![(1, vec![body(7), msg(1)]), (2, vec![delete(1)])];
        assert_eq!(kept(&batches), vec![delete(1)]);
    }

    #[test]
    fn a_body_is_stored_once_for_every_session_and_batch() {
        let (a, b, c) = (add("a", 1, 7), add("b", 1, 7), add("c", 4, 7));
        let gone = Change::MessageDelete {
            client_id: "a".into(),
            seq: 1,
        };
        let batches = vec![
            (1, vec![body(7), a, b.clone()]),
            (2, vec![gone.clone(), body(7), c.clone()]),
        ];
        assert_eq!(kept(&batches), vec![body(7), b, gone, c]);
    }

    #[test]
    fn a_body_whose_session_ends_in_the_group_is_not_written() {
        let gone = Change::SessionDelete {
            client_id: "c".into(),
        };
        let batches = vec![(1, vec![body(7), msg(1), msg(2)]), (2, vec![gone.clone()])];
        assert_eq!(kept(&batches), vec![gone]);
    }
}
