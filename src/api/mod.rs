//! What a caller of the gateway meets: the served RPCs ([`methods`]) and the one table that
//! turns every failure and refusal into the gRPC status the caller sees ([`status`]).
//!
//! Both are vocabulary shared by the layers, the handlers and the observability code, so this
//! module imports none of them.

pub mod methods;
pub mod status;

pub use methods::{Api, Method, RpcKind};
pub use status::{LimitScope, Reached, Refusal, StreamViolation};
