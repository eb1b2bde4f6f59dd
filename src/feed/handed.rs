//! The copies of jobs (job id and nonce) that streams were told are their own, remembered by the
//! process for longer than any feed lives: a unary AcknowledgeJob with one of those nonces would
//! be accepted again upstream, and two workers would run the job, so it is refused even after
//! the feed that delivered the job retired.

use std::{
    collections::{HashSet, VecDeque},
    hash::{BuildHasher, RandomState},
    sync::Mutex,
};

use crate::domain::JobId;

/// How many copies are remembered: the most recent ones, about 24 bytes each.
pub const REMEMBERED: usize = 262_144;

/// A bounded memory of (job id, nonce) pairs, kept as keyed hashes (a collision would refuse
/// one unary acknowledgement with a 2^-64 chance; nothing secret is kept).
#[derive(Debug)]
pub struct HandedToStreams {
    hasher: RandomState,
    capacity: usize,
    remembered: Mutex<Remembered>,
}

#[derive(Debug, Default)]
struct Remembered {
    order: VecDeque<u64>,
    set: HashSet<u64>,
}

impl HandedToStreams {
    /// An empty memory of `capacity` copies.
    pub fn new(capacity: usize) -> Self {
        Self {
            hasher: RandomState::new(),
            capacity,
            remembered: Mutex::default(),
        }
    }

    fn key(&self, job_id: &JobId, nonce: &str) -> u64 {
        self.hasher.hash_one((job_id, nonce))
    }

    /// Remembers that a stream was told `job_id` with `nonce` is its own; the oldest copy is
    /// forgotten once `capacity` are remembered.
    pub fn insert(&self, job_id: &JobId, nonce: &str) {
        let key = self.key(job_id, nonce);
        let mut remembered = self.remembered.lock().unwrap_or_else(|p| p.into_inner());
        if !remembered.set.insert(key) {
            return;
        }
        remembered.order.push_back(key);
        while remembered.order.len() > self.capacity {
            if let Some(oldest) = remembered.order.pop_front() {
                remembered.set.remove(&oldest);
            }
        }
    }

    /// Whether a stream was told `job_id` with `nonce` is its own.
    pub fn contains(&self, job_id: &JobId, nonce: &str) -> bool {
        let key = self.key(job_id, nonce);
        let remembered = self.remembered.lock().unwrap_or_else(|p| p.into_inner());
        remembered.set.contains(&key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_is_remembered_by_job_and_nonce_until_capacity_pushes_it_out() {
        let [j1, j2, j3] = ["j1", "j2", "j3"].map(crate::feed::job_id_named);
        let handed = HandedToStreams::new(2);
        handed.insert(&j1, "n1");
        assert!(handed.contains(&j1, "n1"));
        assert!(!handed.contains(&j1, "n2"), "another copy of the job");
        assert!(!handed.contains(&j2, "n1"));
        handed.insert(&j1, "n1");
        handed.insert(&j2, "n2");
        assert!(handed.contains(&j1, "n1"), "a repeat is not a new entry");
        handed.insert(&j3, "n3");
        assert!(!handed.contains(&j1, "n1"), "the oldest is forgotten");
        assert!(handed.contains(&j2, "n2") && handed.contains(&j3, "n3"));
    }
}
