//! Operations that split their own work across the worker pool ([`crate::pool`]): matrix products
//! (blocks of output rows per task) and attention (query heads by KV-head group per task). The
//! model crate calls these and says nothing about threads.

pub mod attention;
pub mod matmul;
