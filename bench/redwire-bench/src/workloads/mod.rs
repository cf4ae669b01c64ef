//! One module per workload family; `crate::run` picks the function.

pub(crate) mod cache;
pub(crate) mod direct;
pub(crate) mod floor;
pub(crate) mod idle;
pub(crate) mod lock;
pub(crate) mod operator;
pub(crate) mod pubsub;
pub(crate) mod queue;
pub(crate) mod stream;
