//! Controllers: level-triggered reconcilers, one per file. They use only the API client.

pub mod namespace;
