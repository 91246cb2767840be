//! Controllers: level-triggered reconcilers, one per file. They use only the API client.

pub mod common;
pub mod cron;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpointslice;
pub mod endpointslicemirroring;
pub mod event_ttl;
pub mod gc;
pub mod hpa;
pub mod job;
pub mod job_index;
pub mod localpath;
pub mod namespace;
pub mod nodelifecycle;
pub mod ownership;
pub mod podgc;
pub mod replicaset;
pub mod resourcequota;
pub mod revision;
pub mod serviceaccount;
pub mod statefulset;
pub mod ttl_after_finished;
