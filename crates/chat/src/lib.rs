//! Chat: public rooms, private groups and direct messages, with history in one SQLite shard per
//! year (`chat-2026.db`, `chat-2027.db`, ...).
//!
//! Will own: the yearly chat shards and their lifecycle (provision ahead of the year boundary,
//! retire into an archive), message validation and per-player send limits, group-committed
//! writes, and cursor-paged history that crosses year boundaries.
//!
//! Never: reads or writes another domain's shard, or knows how a message reaches a socket: it
//! returns who should receive what, and the gateway delivers it.
//!
//! Empty until the chat issue lands; the crate exists so the workspace has its final shape.
