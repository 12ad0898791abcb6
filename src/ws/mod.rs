//! WebSocket framing (RFC 6455): a sans-IO decoder of client frames on
//! tungstenite's frame types (`codec`) and the server frames we send
//! (`frame`), and permessage-deflate (`deflate`). The handshake itself is
//! in `http`.

pub mod codec;
pub mod deflate;
pub mod frame;
