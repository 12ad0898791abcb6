//! The HTTP/1.1 side of the relay: parsing a request head, deciding what it
//! asks for (a WebSocket join, an HTTP push, an info endpoint, or a refusal),
//! and writing the responses. Pure functions over bytes; the caller owns the
//! sockets, the timers and the limits.

pub mod body;
pub mod client_ip;
pub mod head;
pub mod request;
pub mod response;

pub use head::{parse_head, HeadError, HeadLimits, RequestHead};
pub use request::{endpoint, Endpoint, JoinOptions, Refusal};
pub use response::{response, switching_protocols, Response};
