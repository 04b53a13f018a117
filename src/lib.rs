//! shipwatch: polls logistics trace APIs for every shipped order, remembers each parcel's status
//! in SQLite, and tells buyers and shops when it changes.

pub mod domain;
pub mod notify;
pub mod providers;
