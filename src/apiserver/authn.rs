//! PLACEHOLDER with the agreed interface; replaced by the real authenticator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
}
impl UserInfo {
    pub fn anonymous() -> UserInfo {
        UserInfo {
            name: "system:anonymous".into(),
            uid: String::new(),
            groups: vec!["system:unauthenticated".into()],
        }
    }
    pub fn is_anonymous(&self) -> bool {
        self.name == "system:anonymous"
    }
}
pub struct Authenticator;
impl Authenticator {
    pub fn new(token_file: Option<&std::path::Path>) -> Result<Authenticator, std::io::Error> {
        todo!()
    }
}
