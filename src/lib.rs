//! shipwatch: polls logistics trace APIs for every shipped order, remembers each parcel's status
//! in SQLite, and tells buyers and shops when it changes.

pub mod api;
pub mod callbacks;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod dispatch;
pub mod domain;
pub mod events;
pub mod exposure;
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
pub mod http_body;
pub mod intake;
pub mod limiter;
pub mod maintenance;
pub mod notify;
pub mod outage;
pub mod overview;
pub mod providers;
pub mod service;
pub mod shown;
pub mod storage;
#[cfg(test)]
mod test_logs;
pub mod throttle;
pub mod track;
pub mod upstream;
pub mod workers;
