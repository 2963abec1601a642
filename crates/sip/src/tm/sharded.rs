//! A hash map split in shards.

use foldhash::fast::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;

use crate::key::{AsKeyRef, KeyRef, TransactionKey};

/// Maps split in shards so that growing one rehashes a sixteenth of the
/// table: one big rehash (hundreds of thousands of entries) would hold the
/// table lock long enough to stall every thread.
pub(super) const SHARDS: usize = 16;

/// How an entry picks its shard.
pub(super) trait ShardKey: std::hash::Hash + Eq {
    fn shard(&self, pick: &RandomState) -> usize;
}

impl ShardKey for u64 {
    /// A transaction id: its index is already a hash, whose low bits name
    /// the part of the host's table (the same in every id of one part).
    fn shard(&self, _: &RandomState) -> usize {
        ((self >> 32) as usize / super::PARTS) % SHARDS
    }
}

impl ShardKey for TransactionKey {
    fn shard(&self, pick: &RandomState) -> usize {
        (pick.hash_one(self) as usize) % SHARDS
    }
}

pub(super) struct Sharded<K, V> {
    maps: Vec<HashMap<K, V, RandomState>>,
    pick: RandomState,
    len: usize,
}

impl<K: ShardKey, V> Sharded<K, V> {
    pub(super) fn new() -> Self {
        Sharded {
            maps: (0..SHARDS)
                .map(|_| HashMap::with_hasher(RandomState::default()))
                .collect(),
            pick: RandomState::default(),
            len: 0,
        }
    }

    pub(super) fn map(&self, k: &K) -> &HashMap<K, V, RandomState> {
        &self.maps[k.shard(&self.pick)]
    }

    pub(super) fn get(&self, k: &K) -> Option<&V> {
        self.map(k).get(k)
    }

    pub(super) fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        let i = k.shard(&self.pick);
        self.maps[i].get_mut(k)
    }

    pub(super) fn contains_key(&self, k: &K) -> bool {
        self.map(k).contains_key(k)
    }

    pub(super) fn insert(&mut self, k: K, v: V) -> Option<V> {
        let i = k.shard(&self.pick);
        let old = self.maps[i].insert(k, v);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    pub(super) fn remove(&mut self, k: &K) -> Option<V> {
        let i = k.shard(&self.pick);
        let old = self.maps[i].remove(k);
        if old.is_some() {
            self.len -= 1;
        }
        old
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.maps.iter().flat_map(|m| m.iter())
    }

    /// The values of one shard (`shard` below [`SHARDS`]).
    pub(super) fn shard_values(&self, shard: usize) -> impl Iterator<Item = &V> {
        self.maps.get(shard).into_iter().flat_map(|m| m.values())
    }

    #[cfg(test)]
    pub(super) fn values(&self) -> impl Iterator<Item = &V> {
        self.maps.iter().flat_map(|m| m.values())
    }
}

impl<V> Sharded<TransactionKey, V> {
    /// The value under the key `k` names, borrowed from its message (an
    /// owned key with the same parts hashes the same way).
    pub(super) fn get_ref(&self, k: KeyRef<'_>) -> Option<&V> {
        let i = (self.pick.hash_one(k) as usize) % SHARDS;
        self.maps[i].get(&k as &dyn AsKeyRef)
    }
}
