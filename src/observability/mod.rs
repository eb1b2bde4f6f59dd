//! One home for what the gateway tells its operators: logs ([`logs`]), the Prometheus registry
//! ([`metrics`]) and OpenTelemetry traces ([`traces`]). The layers and handlers record into it;
//! it imports none of them.

pub mod audit;
pub mod logs;
pub mod metrics;
pub mod traces;

pub use metrics::Metrics;
