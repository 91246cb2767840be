//! Controllers: level-triggered reconcilers, one per file. They use only the API client.

pub mod common;
pub mod cron;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod endpointslice;
pub mod gc;
pub mod job;
pub mod localpath;
pub mod namespace;
pub mod ownership;
pub mod replicaset;
pub mod revision;
pub mod serviceaccount;
pub mod statefulset;
pub mod ttl_after_finished;
