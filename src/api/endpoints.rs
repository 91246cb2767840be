//! Reading EndpointSlices stored as JSON, for the API server's own calls to Services
//! (admission webhooks, aggregated APIs), which go straight to a ready endpoint.

use serde_json::Value;

/// The first ready endpoint address of `slice` with the port named `port_name` (`""` for an
/// unnamed port). An endpoint counts as ready unless its `ready` condition is `false`, as
/// upstream's readers treat an unset condition.
pub fn first_ready<'a>(slice: &'a Value, port_name: &str) -> Option<(&'a str, u16)> {
    ready(slice, port_name).into_iter().next()
}

/// Every ready endpoint address of `slice` with the port named `port_name`, in order (see
/// [`first_ready`]).
pub fn ready<'a>(slice: &'a Value, port_name: &str) -> Vec<(&'a str, u16)> {
    let port = slice
        .get("ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|p| p["name"].as_str().unwrap_or("") == port_name)
        .and_then(|p| p["port"].as_u64())
        .and_then(|p| u16::try_from(p).ok());
    let Some(port) = port else {
        return Vec::new();
    };
    slice
        .get("endpoints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|e| e.pointer("/conditions/ready") != Some(&Value::Bool(false)))
        .filter_map(|e| e.pointer("/addresses/0").and_then(Value::as_str))
        .map(|address| (address, port))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_first_endpoint_not_marked_unready_with_the_named_port_is_chosen() {
        let slice = json!({
            "ports": [{"name": "metrics", "port": 9090}, {"name": "https", "port": 8443}],
            "endpoints": [
                {"addresses": ["10.42.0.5"], "conditions": {"ready": false}},
                {"addresses": ["10.42.0.6"], "conditions": {}},
            ],
        });
        assert_eq!(first_ready(&slice, "https"), Some(("10.42.0.6", 8443)));
        assert_eq!(first_ready(&slice, ""), None);
        assert_eq!(first_ready(&json!({"ports": []}), "https"), None);
        assert_eq!(ready(&slice, "https"), [("10.42.0.6", 8443)]);
    }
}
