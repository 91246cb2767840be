//! The admission plugins berth always runs, in upstream's order.

use std::sync::Arc;

use crate::registry::generic::Registry;

pub fn register(registry: &Registry) {
    let chain = registry.admission();
    chain.register(Arc::new(super::priority::Priority::new(registry.clone())));
    chain.register(Arc::new(
        super::default_toleration_seconds::DefaultTolerationSeconds,
    ));
    chain.register(Arc::new(super::limit_range::LimitRanger::new(
        registry.clone(),
    )));
    chain.register(Arc::new(super::service_account::ServiceAccount::new(
        registry.clone(),
    )));
    chain.register(Arc::new(super::resource_quota::ResourceQuota::new(
        registry.clone(),
    )));
}
