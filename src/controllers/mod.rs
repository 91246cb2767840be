//! Controllers: level-triggered reconcilers, one per file. They use only the API client.

pub mod common;
pub mod cron;
pub mod cronjob;
pub mod deployment;
pub mod endpointslice;
pub mod gc;
pub mod job;
pub mod namespace;
pub mod replicaset;
pub mod serviceaccount;
pub mod ttl_after_finished;
