//! Publish/subscribe: what a client frame asks for (`classify`), whether its
//! payload is JSON (`json`), the channels an owner shard holds (`registry`)
//! and the frames the owner builds once per message (`envelope`).

pub mod classify;
pub mod envelope;
pub mod json;
pub mod registry;
