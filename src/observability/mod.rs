//! One home for what the gateway tells its operators: logs ([`logs`]) and the Prometheus
//! registry ([`metrics`]). The layers and handlers record into it; it imports none of them.

pub mod logs;
pub mod metrics;

pub use metrics::Metrics;
