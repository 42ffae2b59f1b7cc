//! Finding a session by client id.
//!
//! CONNECT names a client id, and the broker must find that client's session to resume it
//! or take it over (v311:[MQTT-3.1.2-4], v311:[MQTT-3.1.4-2]). The obvious tool is a
//! `HashMap<client id, SessionId>`, but each of its buckets holds a copy of the key pointer
//! and the id, about 40 bytes per connection once the table's spare room is counted: more
//! than a fifth of what an idle connection costs. The client id already lives in the session,
//! so this table stores only the session's slab index (4 bytes) in an open-addressing array
//! and looks the id up in the session when it compares keys.
//!
//! Collisions are resolved by linear probing; a removal shifts the following entries back, so
//! there are no tombstones. The hash is std's keyed SipHash: client ids are chosen by
//! clients, and a predictable hash would let them pile every key into one probe run.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

/// Where the index finds the client id of a session index.
pub trait ClientIds {
    /// The client id of the session at `idx`.
    fn client_id(&self, idx: u32) -> &str;
}

impl ClientIds for slab::Slab<super::Session> {
    fn client_id(&self, idx: u32) -> &str {
        self.get(idx as usize).map_or("", |s| &s.client_id)
    }
}

/// Marks a free slot.
const EMPTY: u32 = u32::MAX;

/// Session indices by client id.
pub struct ClientIndex {
    slots: Box<[u32]>,
    len: usize,
    hasher: RandomState,
}

impl Default for ClientIndex {
    fn default() -> Self {
        ClientIndex {
            slots: Box::default(),
            len: 0,
            hasher: RandomState::new(),
        }
    }
}

impl ClientIndex {
    /// Number of entries.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    fn home(&self, id: &str) -> usize {
        self.hasher.hash_one(id) as usize & (self.slots.len() - 1)
    }

    /// The slot holding `id`, if it is present.
    fn find(&self, id: &str, ids: &impl ClientIds) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut i = self.home(id);
        loop {
            match self.slots[i] {
                EMPTY => return None,
                idx if ids.client_id(idx) == id => return Some(i),
                _ => i = (i + 1) & mask,
            }
        }
    }

    /// The session index of client `id`.
    pub fn get(&self, id: &str, ids: &impl ClientIds) -> Option<u32> {
        self.find(id, ids).map(|i| self.slots[i])
    }

    /// Adds session `idx` under its client id, replacing any entry with the same id.
    pub fn insert(&mut self, idx: u32, ids: &impl ClientIds) {
        let id = ids.client_id(idx);
        if let Some(i) = self.find(id, ids) {
            self.slots[i] = idx;
            return;
        }
        // Keep the table at most three quarters full so probe runs stay short.
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.grow(ids);
        }
        let mask = self.slots.len() - 1;
        let mut i = self.home(id);
        while self.slots[i] != EMPTY {
            i = (i + 1) & mask;
        }
        self.slots[i] = idx;
        self.len += 1;
    }

    /// Removes session `idx` (looked up by its client id, so call this before the session
    /// itself goes). Returns whether it was present.
    pub fn remove(&mut self, idx: u32, ids: &impl ClientIds) -> bool {
        let Some(mut hole) = self.find(ids.client_id(idx), ids) else {
            return false;
        };
        if self.slots[hole] != idx {
            return false;
        }
        // Backward shift: move later entries of the run into the hole when their home slot
        // does not lie (cyclically) between the hole and where they are now.
        let mask = self.slots.len() - 1;
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let entry = self.slots[j];
            if entry == EMPTY {
                break;
            }
            let home = self.home(ids.client_id(entry));
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                self.slots[hole] = entry;
                hole = j;
            }
        }
        self.slots[hole] = EMPTY;
        self.len -= 1;
        true
    }

    fn grow(&mut self, ids: &impl ClientIds) {
        let cap = (self.slots.len() * 2).max(16);
        let old = std::mem::replace(&mut self.slots, vec![EMPTY; cap].into_boxed_slice());
        let mask = cap - 1;
        for idx in old.iter().copied().filter(|&e| e != EMPTY) {
            let mut i = self.home(ids.client_id(idx));
            while self.slots[i] != EMPTY {
                i = (i + 1) & mask;
            }
            self.slots[i] = idx;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Ids(Vec<String>);

    impl ClientIds for Ids {
        fn client_id(&self, idx: u32) -> &str {
            &self.0[idx as usize]
        }
    }

    #[test]
    fn finds_what_was_inserted_and_forgets_what_was_removed() {
        let ids = Ids((0..2000).map(|i| format!("client-{i}")).collect());
        let mut index = ClientIndex::default();
        assert_eq!(index.get("client-1", &ids), None);
        for i in 0..2000 {
            index.insert(i, &ids);
        }
        assert_eq!(index.len(), 2000);
        for i in 0..2000 {
            assert_eq!(index.get(&format!("client-{i}"), &ids), Some(i));
        }
        assert_eq!(index.get("client-2000", &ids), None);
        // Remove every third entry: the rest must stay reachable (backward shift).
        for i in (0..2000).step_by(3) {
            assert!(index.remove(i, &ids));
            assert!(!index.remove(i, &ids), "removed twice");
        }
        for i in 0..2000 {
            let expect = (i % 3 != 0).then_some(i);
            assert_eq!(
                index.get(&format!("client-{i}"), &ids),
                expect,
                "client-{i}"
            );
        }
        assert_eq!(index.len(), 2000 - 667);
    }

    #[test]
    fn inserting_an_existing_id_replaces_its_entry() {
        let ids = Ids(vec!["a".into(), "b".into(), "a".into()]);
        let mut index = ClientIndex::default();
        index.insert(0, &ids);
        index.insert(1, &ids);
        index.insert(2, &ids);
        assert_eq!(index.len(), 2);
        assert_eq!(index.get("a", &ids), Some(2));
        // Removing the replaced session leaves its successor alone.
        assert!(!index.remove(0, &ids));
        assert_eq!(index.get("a", &ids), Some(2));
    }

    #[test]
    fn removal_survives_wrap_around_and_long_runs() {
        // A constant hasher is not available, so force collisions by filling a small
        // table densely and removing in many orders.
        let ids = Ids((0..12).map(|i| format!("{i}")).collect());
        for skip in 0..12 {
            let mut index = ClientIndex::default();
            for i in 0..12 {
                index.insert(i, &ids);
            }
            let order: Vec<u32> = (0..12).map(|k| (k * 5 + skip) % 12).collect();
            for (n, &gone) in order.iter().enumerate() {
                assert!(index.remove(gone, &ids));
                for &left in &order[n + 1..] {
                    assert_eq!(index.get(&left.to_string(), &ids), Some(left));
                }
            }
            assert_eq!(index.len(), 0);
        }
    }
}
