//! The tower layers every gRPC call passes through. The stack is assembled in one place,
//! [`crate::app::stack`], outermost first: instrument -> gRPC only -> load shedding ->
//! authenticate -> client concurrency -> rate limit -> deadline -> message size -> panic guard ->
//! the services. [`connection`] is what the instrument layer shares with the connection a call
//! came on; [`audit_admin`] wraps the emulator's admin service itself.
//!
//! The layers that only decide at once whether a call may go on (gRPC only, authenticate) are
//! validators for tower-http's `ValidateRequestHeaderLayer`. The rate limit is a layer of its
//! own ([`rate_limit`]), because a verdict may need a round trip to Redis: it answers at once
//! when the verdict is at hand and waits only for that round trip. Every refusal is answered
//! before the call reaches the services (for gRPC, a trailers-only status), so it never reaches
//! the upstream. The panic guard is tower-http's `CatchPanicLayer` with the gateway's answer.

#[cfg(feature = "emulator")]
pub mod audit_admin;
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
