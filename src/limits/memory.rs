//! The memory artifact transfers may hold: each upload buffers up to one part before sending
//! it, each download queues a few chunks ahead of its reader. A transfer reserves what it may
//! hold before its first S3 request, from its client's share and from the process's, so that
//! stalled peers (an upload that stops mid-part, a download never read) cost at most their
//! reservation and one client cannot take the memory of everyone's transfers.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;

use crate::api::Refusal;

/// Reservations are counted in KiB, so a semaphore's `u32` permits cover terabytes.
const UNIT: usize = 1024;

/// Past this many clients with a share, shares not in use are forgotten.
const REMEMBERED_CLIENTS: usize = 1024;

/// The artifact transfers' memory budget, per client and for the process.
pub struct ArtifactMemory {
    process: Arc<Semaphore>,
    process_limit: usize,
    per_client_limit: usize,
    clients: Mutex<HashMap<Arc<str>, Arc<Semaphore>>>,
}

/// Memory a transfer holds, given back when dropped.
#[derive(Debug)]
pub struct Reserved {
    _process: OwnedSemaphorePermit,
    _client: OwnedSemaphorePermit,
}

impl ArtifactMemory {
    /// At most `process` bytes over all transfers and `per_client` bytes for one client's.
    pub fn new(process: usize, per_client: usize) -> Self {
        let process_units = process.div_ceil(UNIT);
        Self {
            process: Arc::new(Semaphore::new(process_units)),
            process_limit: process,
            per_client_limit: per_client,
            clients: Mutex::default(),
        }
    }

    /// `bytes` for a transfer of `client_id`, or RESOURCE_EXHAUSTED (retry later) when its
    /// share, or the process's, has no room.
    pub fn reserve(&self, client_id: &Arc<str>, bytes: usize) -> Result<Reserved, Status> {
        let units = u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX);
        let share = self.share(client_id);
        let client = share.try_acquire_many_owned(units).map_err(|_| {
            Status::from(Refusal::ArtifactMemory {
                client_id: Some(client_id.to_string()),
                limit: self.per_client_limit,
            })
        })?;
        let process = self
            .process
            .clone()
            .try_acquire_many_owned(units)
            .map_err(|_| {
                Status::from(Refusal::ArtifactMemory {
                    client_id: None,
                    limit: self.process_limit,
                })
            })?;
        Ok(Reserved {
            _process: process,
            _client: client,
        })
    }

    fn share(&self, client_id: &Arc<str>) -> Arc<Semaphore> {
        let per_client_units = self.per_client_limit.div_ceil(UNIT);
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if clients.len() >= REMEMBERED_CLIENTS && !clients.contains_key(client_id) {
            // A share is in use while anyone holds it: a reservation (its permit holds the
            // semaphore) or a caller between `share` and its acquire.
            clients.retain(|_, share| Arc::strong_count(share) > 1);
        }
        clients
            .entry(client_id.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(per_client_units)))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn a_client_is_held_to_its_share_and_every_client_to_the_process_budget() {
        let memory = ArtifactMemory::new(3 * MIB, 2 * MIB);
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        let first = memory.reserve(&a, MIB).unwrap();
        let _second = memory.reserve(&a, MIB).unwrap();
        let refused = memory.reserve(&a, 1).unwrap_err();
        assert_eq!(refused.code(), Code::ResourceExhausted);
        let _b = memory.reserve(&b, MIB).unwrap();
        assert_eq!(
            memory.reserve(&b, MIB).unwrap_err().code(),
            Code::ResourceExhausted,
            "b has room in its share, but the process has none"
        );
        drop(first);
        memory
            .reserve(&b, MIB)
            .expect("given back when a's transfer ended");
    }
}
