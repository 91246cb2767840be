//! Shared pieces of the integration tests. Each test module uses what it needs.
#![allow(dead_code)]

pub mod netns;
