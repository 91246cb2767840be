//! The node agent (our kubelet): registers the node and runs its pods.

pub mod node;
