//! WebSocket framing (RFC 6455): a sans-IO codec on tungstenite's frame
//! types. The handshake itself is in `http`.

pub mod codec;
