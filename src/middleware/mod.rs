//! The tower layers every gRPC call passes through. The stack is assembled in one place,
//! [`crate::app::stack`], outermost first: instrument -> gRPC only -> load shedding ->
//! authenticate -> client concurrency -> rate limit -> deadline -> message size -> panic guard ->
//! the services. [`connection`] is what the instrument layer shares with the connection a call
//! came on.
//!
//! The layers that only decide whether a call may go on (gRPC only, authenticate, rate limit)
//! are validators for tower-http's `ValidateRequestHeaderLayer`: a refusal is answered
//! at once (for gRPC, a trailers-only status), so the call never reaches the services or the
//! upstream. The panic guard is tower-http's `CatchPanicLayer` with the gateway's answer.

pub mod authenticate;
pub mod client_concurrency;
pub mod connection;
pub mod deadline;
pub mod grpc_only;
pub mod instrument;
pub mod load_shed;
pub mod message_size;
pub mod panic;
pub mod rate_limit;
