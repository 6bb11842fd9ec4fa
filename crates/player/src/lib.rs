//! Player state: position, rotation, health and small attributes, written at high frequency.
//!
//! Will own: `player.db`, the write buffer in Redis (through the `kv` crate) that absorbs
//! frequent small updates, and the flusher that writes them to SQLite in batched transactions so
//! reads see their own writes at once while SQLite sees one row write per player per flush.
//!
//! Never: touches another domain's shard, or writes to SQLite once per update in its buffered
//! mode.
//!
//! Empty until the player-state issue lands; the crate exists so the workspace has its final shape.
