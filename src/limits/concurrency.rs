//! How many calls each client may have in flight at once, so one client (a stuck worker fleet,
//! or a hostile one) cannot fill the gateway-wide concurrency limit that every client shares. A
//! call holds its place until its answer is delivered or dropped.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
};

use tonic::Status;

use crate::{api::Refusal, observability::Metrics};

/// The per-client counts of calls in flight, shared by every connection.
pub struct ClientConcurrency {
    limit: u32,
    clients: Mutex<HashMap<Arc<str>, Arc<AtomicU32>>>,
    metrics: Arc<Metrics>,
}

/// A call's place among its client's calls in flight, given back when dropped.
#[derive(Debug)]
pub struct InFlight(Arc<AtomicU32>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ClientConcurrency {
    /// At most `limit` calls in flight per client.
    pub fn new(limit: u32, metrics: Arc<Metrics>) -> Self {
        Self {
            limit,
            clients: Mutex::default(),
            metrics,
        }
    }

    /// The most each client may have at once.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// A place for one more call of `client_id`, or RESOURCE_EXHAUSTED when it has `limit`.
    pub fn enter(&self, client_id: &Arc<str>) -> Result<InFlight, Status> {
        let count = {
            let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
            clients.entry(client_id.clone()).or_default().clone()
        };
        let admitted = count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .is_ok();
        if admitted {
            return Ok(InFlight(count));
        }
        self.metrics.client_concurrency_limited.inc();
        Err(Refusal::ClientConcurrencyLimit {
            client_id: client_id.to_string(),
            limit: self.limit,
        }
        .into())
    }
}

#[cfg(test)]
mod tests {
    use tonic_types::StatusExt;

    use super::*;

    #[test]
    fn a_client_at_its_limit_is_refused_until_a_call_ends() {
        let limits = ClientConcurrency::new(2, Metrics::new());
        let a: Arc<str> = Arc::from("a");
        let first = limits.enter(&a).unwrap();
        let _second = limits.enter(&a).unwrap();
        let status = limits.enter(&a).unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            status.get_details_quota_failure().unwrap().violations[0].subject,
            "client:a"
        );
        limits
            .enter(&Arc::from("b"))
            .expect("another client has places of its own");
        drop(first);
        limits
            .enter(&a)
            .expect("an ended call gives its place back");
    }
}
