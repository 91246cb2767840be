//! The `authorizer` of policy expressions, answered by berth's RBAC authorizer.

use std::sync::Arc;

use crate::apiserver::authn::UserInfo;
use crate::apiserver::rbac::{Attributes, Rbac, ResourceAttributes};
use crate::cel::{Authorizer, AuthzCheck, AuthzDecision};

pub struct RbacAuthorizer(pub Arc<Rbac>);

impl Authorizer for RbacAuthorizer {
    fn authorize(&self, check: &AuthzCheck) -> AuthzDecision {
        let user = UserInfo {
            name: check.subject.user.clone(),
            uid: check.subject.uid.clone(),
            groups: check.subject.groups.clone(),
        };
        let attributes = match &check.path {
            Some(path) => Attributes {
                verb: check.verb.clone(),
                path: path.clone(),
                resource: None,
            },
            None => Attributes {
                verb: check.verb.clone(),
                path: String::new(),
                resource: Some(ResourceAttributes {
                    api_group: check.group.clone(),
                    api_version: check.version.clone(),
                    resource: check.resource.clone(),
                    subresource: check.subresource.clone(),
                    namespace: check.namespace.clone(),
                    name: check.name.clone(),
                }),
            },
        };
        let decision = self.0.authorize(&user, &attributes);
        AuthzDecision {
            allowed: decision.allowed,
            reason: decision.reason,
            error: None,
        }
    }
}
