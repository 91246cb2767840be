//! The cluster PKI.
