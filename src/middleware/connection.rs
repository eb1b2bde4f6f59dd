//! What a connection and the calls on it share: how many calls are open and the earliest deadline
//! among them. The outermost layer ([`super::instrument`]) records each call here; the
//! connection itself (`app::connections`) reads it to close connections that start no call in
//! time, sit idle, or hold a call long past its deadline (a peer that never reads its answers).

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Instant,
};

use http::Request;
use tonic::transport::server::TlsConnectInfo;

/// What tonic puts in every request's extensions for a connection the gateway accepted
/// (wrapped in `TlsConnectInfo` on a TLS port).
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// The peer's address.
    pub remote_addr: Option<SocketAddr>,
    /// When the connection was accepted.
    pub accepted: Instant,
    /// When it reaches its maximum age (jittered): it says GOAWAY then.
    pub ages_at: Instant,
    /// When the job streams on it end with a status of their own: a moment after the GOAWAY,
    /// so that a worker reopening at once does so on a new connection, and well within the
    /// grace.
    pub job_streams_end_at: Instant,
    /// The connection's calls.
    pub calls: Arc<ConnectionCalls>,
}

impl ConnectionInfo {
    /// The connection a request came on, plaintext or TLS.
    pub fn of<B>(request: &Request<B>) -> Option<&Self> {
        Self::in_extensions(request.extensions())
    }

    /// The connection of a request with these extensions (a tonic request's, say).
    pub fn in_extensions(extensions: &http::Extensions) -> Option<&Self> {
        extensions.get::<Self>().or_else(|| {
            extensions
                .get::<TlsConnectInfo<Self>>()
                .map(TlsConnectInfo::get_ref)
        })
    }
}

/// The calls open on one connection.
#[derive(Debug)]
pub struct ConnectionCalls {
    state: Mutex<CallsState>,
}

#[derive(Debug)]
struct CallsState {
    open: usize,
    /// Deadlines of the open calls that have one, with how many calls share each.
    deadlines: BTreeMap<Instant, usize>,
    /// When the last call ended, or when the connection was accepted.
    idle_since: Instant,
    /// Whether a call was ever started.
    started_any: bool,
}

/// What a connection's calls say about it right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallsNow {
    /// No call has started since the connection was accepted at this instant.
    NoneYet(Instant),
    /// No call is open; the last one ended at this instant.
    IdleSince(Instant),
    /// Calls are open; the earliest deadline among them, if any has one.
    Open(Option<Instant>),
}

impl ConnectionCalls {
    /// A connection accepted at `accepted`, with no call yet.
    pub fn new(accepted: Instant) -> Self {
        Self {
            state: Mutex::new(CallsState {
                open: 0,
                deadlines: BTreeMap::new(),
                idle_since: accepted,
                started_any: false,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CallsState> {
        // The state is a few counters, consistent after every update.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A call started; `deadline` is when it must be over by, if it has one.
    pub fn started(&self, deadline: Option<Instant>) {
        let mut state = self.lock();
        state.open += 1;
        state.started_any = true;
        if let Some(deadline) = deadline {
            *state.deadlines.entry(deadline).or_default() += 1;
        }
    }

    /// A call that [`Self::started`] with `deadline` ended (answered, cancelled or reset).
    pub fn ended(&self, deadline: Option<Instant>) {
        let mut state = self.lock();
        state.open = state.open.saturating_sub(1);
        if let Some(deadline) = deadline
            && let Some(count) = state.deadlines.get_mut(&deadline)
        {
            *count -= 1;
            if *count == 0 {
                state.deadlines.remove(&deadline);
            }
        }
        if state.open == 0 {
            state.idle_since = Instant::now();
        }
    }

    /// The connection's calls as of now.
    pub fn now(&self) -> CallsNow {
        let state = self.lock();
        match (state.started_any, state.open) {
            (false, _) => CallsNow::NoneYet(state.idle_since),
            (true, 0) => CallsNow::IdleSince(state.idle_since),
            (true, _) => CallsNow::Open(state.deadlines.keys().next().copied()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn calls_move_a_connection_from_new_to_open_to_idle() {
        let accepted = Instant::now();
        let calls = ConnectionCalls::new(accepted);
        assert_eq!(calls.now(), CallsNow::NoneYet(accepted));
        let soon = accepted + Duration::from_secs(1);
        let later = accepted + Duration::from_secs(2);
        calls.started(Some(later));
        calls.started(Some(soon));
        calls.started(None);
        assert_eq!(calls.now(), CallsNow::Open(Some(soon)));
        calls.ended(Some(soon));
        assert_eq!(calls.now(), CallsNow::Open(Some(later)));
        calls.ended(Some(later));
        assert_eq!(calls.now(), CallsNow::Open(None));
        calls.ended(None);
        assert!(matches!(calls.now(), CallsNow::IdleSince(at) if at >= accepted));
    }
}
