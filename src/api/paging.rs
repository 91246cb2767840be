//! PLACEHOLDER with the agreed interface; replaced by the real paging.
#![allow(unused_variables)]
#[derive(Debug, thiserror::Error)]
#[error("paging")]
pub struct PagingError;
pub struct ContinueToken {
    pub revision: u64,
    pub start_after: String,
}
impl ContinueToken {
    pub fn encode(&self) -> String {
        todo!()
    }
    pub fn decode(s: &str) -> Result<ContinueToken, PagingError> {
        todo!()
    }
}
