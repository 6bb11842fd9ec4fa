//! Inventory: the item catalogue, what each player holds, consumption and atomic trades.
//!
//! Will own: `inventory.db` (holdings, trade offers, the append-only ledger and idempotency
//! keys), durable group-committed writes acknowledged only after commit, and the rule that items
//! are conserved under any concurrency.
//!
//! Never: lets a player grant items (grants come from trusted callers through the gateway), or
//! touches another domain's shard.
//!
//! Empty until the inventory issue lands; the crate exists so the workspace has its final shape.
