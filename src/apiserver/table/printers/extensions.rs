//! Admission configuration, API services, runtime classes, CSI objects and certificate signing
//! requests: the columns upstream's printers (and kube-aggregator's for APIService) show.

use serde_json::Value;

use super::super::duration;
use super::{age, col, list, name, or_none, text, Printer, AGE, NAME};

pub fn printer(group: &str, kind: &str) -> Option<&'static Printer> {
    Some(match (group, kind) {
        ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration")
        | ("admissionregistration.k8s.io", "MutatingWebhookConfiguration") => {
            &WEBHOOK_CONFIGURATION
        }
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy") => &ADMISSION_POLICY,
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicyBinding") => {
            &ADMISSION_POLICY_BINDING
        }
        ("apiregistration.k8s.io", "APIService") => &API_SERVICE,
        ("node.k8s.io", "RuntimeClass") => &RUNTIME_CLASS,
        ("storage.k8s.io", "CSIDriver") => &CSI_DRIVER,
        ("storage.k8s.io", "CSINode") => &CSI_NODE,
        ("storage.k8s.io", "VolumeAttachment") => &VOLUME_ATTACHMENT,
        ("certificates.k8s.io", "CertificateSigningRequest") => &CSR,
        _ => return None,
    })
}

static WEBHOOK_CONFIGURATION: Printer = Printer {
    columns: &[
        NAME,
        col(
            "Webhooks",
            "integer",
            "Webhooks indicates the number of webhooks registered in this configuration",
        ),
        AGE,
    ],
    row: |c, now| {
        vec![
            name(c),
            Value::from(list(c, "/webhooks").len()),
            age(c, now),
        ]
    },
};

static ADMISSION_POLICY: Printer = Printer {
    columns: &[
        NAME,
        col(
            "Validations",
            "integer",
            "Validations indicates the number of validation rules defined in this configuration",
        ),
        col(
            "ParamKind",
            "string",
            "ParamKind specifies the kind of resources used to parameterize this policy",
        ),
        AGE,
    ],
    row: |p, now| {
        let param_kind = match (
            text(p, "/spec/paramKind/apiVersion"),
            text(p, "/spec/paramKind/kind"),
        ) {
            ("", "") => "<unset>".to_string(),
            (api_version, kind) => format!("{api_version}/{kind}"),
        };
        vec![
            name(p),
            Value::from(list(p, "/spec/validations").len()),
            Value::from(param_kind),
            age(p, now),
        ]
    },
};

static ADMISSION_POLICY_BINDING: Printer = Printer {
    columns: &[
        NAME,
        col(
            "PolicyName",
            "string",
            "PolicyName indicates the policy definition which the policy binding binded to",
        ),
        col(
            "ParamRef",
            "string",
            "ParamRef indicates the param resource which sets the configration param",
        ),
        AGE,
    ],
    row: |b, now| {
        let param_ref = match (
            text(b, "/spec/paramRef/namespace"),
            text(b, "/spec/paramRef/name"),
        ) {
            (_, "") => "<unset>".to_string(),
            ("", name) => format!("*/{name}"),
            (ns, name) => format!("{ns}/{name}"),
        };
        vec![
            name(b),
            Value::from(text(b, "/spec/policyName")),
            Value::from(param_ref),
            age(b, now),
        ]
    },
};

static API_SERVICE: Printer = Printer {
    columns: &[
        NAME,
        col(
            "Service",
            "string",
            "The reference to the service that hosts this API endpoint.",
        ),
        col("Available", "string", "Whether this service is available."),
        AGE,
    ],
    row: |s, now| {
        let service = match (
            text(s, "/spec/service/namespace"),
            text(s, "/spec/service/name"),
        ) {
            (_, "") => "Local".to_string(),
            (ns, name) => format!("{ns}/{name}"),
        };
        let available = list(s, "/status/conditions")
            .iter()
            .find(|c| c["type"] == "Available")
            .map(|c| match (text(c, "/status"), text(c, "/reason")) {
                ("True", _) | (_, "") => text(c, "/status").to_string(),
                (status, reason) => format!("{status} ({reason})"),
            })
            .unwrap_or_else(|| "Unknown".to_string());
        vec![
            name(s),
            Value::from(service),
            Value::from(available),
            age(s, now),
        ]
    },
};

static RUNTIME_CLASS: Printer = Printer {
    columns: &[
        NAME,
        col("Handler", "string", "Handler specifies the underlying runtime and configuration that the CRI implementation will use to handle pods of this class."),
        AGE,
    ],
    row: |rc, now| vec![name(rc), Value::from(text(rc, "/handler")), age(rc, now)],
};

static CSI_DRIVER: Printer = Printer {
    columns: &[
        NAME,
        col("AttachRequired", "boolean", "Indicates this CSI volume driver requires an attach operation, and that Kubernetes should call attach and wait for any attach operation to complete before proceeding to mounting."),
        col("PodInfoOnMount", "boolean", "Indicates this CSI volume driver requires additional pod information (like podName, podUID, etc.) during mount operations."),
        col("StorageCapacity", "boolean", "Indicates that the CSI volume driver wants pod scheduling to consider the storage capacity that the driver deployment will report by creating CSIStorageCapacity objects with capacity information."),
        col("TokenRequests", "string", "Indicates the CSI driver needs pods' service account tokens it is mounting volume for to do necessary authentication."),
        col("RequiresRepublish", "boolean", "RequiresRepublish indicates the CSI driver wants `NodePublishVolume` being periodically called to reflect any possible change in the mounted volume."),
        col("Modes", "string", "Defines the supported volume lifecycle modes."),
        AGE,
    ],
    row: |d, now| {
        let flag = |pointer: &str| d.pointer(pointer).and_then(Value::as_bool).unwrap_or(false);
        let audiences: Vec<&str> = list(d, "/spec/tokenRequests")
            .iter()
            .map(|t| text(t, "/audience"))
            .collect();
        let modes: Vec<&str> = list(d, "/spec/volumeLifecycleModes")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        vec![
            name(d),
            // Both default to true upstream; a stored object always has them set.
            Value::from(d.pointer("/spec/attachRequired").and_then(Value::as_bool).unwrap_or(true)),
            Value::from(flag("/spec/podInfoOnMount")),
            Value::from(flag("/spec/storageCapacity")),
            Value::from(or_none(&audiences.join(","))),
            Value::from(flag("/spec/requiresRepublish")),
            Value::from(or_none(&modes.join(","))),
            age(d, now),
        ]
    },
};

static CSI_NODE: Printer = Printer {
    columns: &[
        NAME,
        col(
            "Drivers",
            "integer",
            "Drivers indicates the number of CSI drivers registered on the node",
        ),
        AGE,
    ],
    row: |n, now| {
        vec![
            name(n),
            Value::from(list(n, "/spec/drivers").len()),
            age(n, now),
        ]
    },
};

static VOLUME_ATTACHMENT: Printer = Printer {
    columns: &[
        NAME,
        col(
            "Attacher",
            "string",
            "Attacher indicates the name of the volume driver that MUST handle this request.",
        ),
        col("PV", "string", "Name of the persistent volume to attach."),
        col(
            "Node",
            "string",
            "The node that the volume should be attached to.",
        ),
        col(
            "Attached",
            "boolean",
            "Indicates the volume is successfully attached.",
        ),
        AGE,
    ],
    row: |v, now| {
        vec![
            name(v),
            Value::from(text(v, "/spec/attacher")),
            Value::from(text(v, "/spec/source/persistentVolumeName")),
            Value::from(text(v, "/spec/nodeName")),
            Value::from(
                v.pointer("/status/attached")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            ),
            age(v, now),
        ]
    },
};

static CSR: Printer = Printer {
    columns: &[
        NAME,
        AGE,
        col(
            "SignerName",
            "string",
            "Name of the signer that will sign this request.",
        ),
        col(
            "Requestor",
            "string",
            "Name of the user that requested this CSR.",
        ),
        col(
            "RequestedDuration",
            "string",
            "The requested duration of the certificate.",
        ),
        col("Condition", "string", "The status of this CSR."),
    ],
    row: |c, now| {
        let duration = match c.pointer("/spec/expirationSeconds").and_then(Value::as_i64) {
            Some(seconds) => duration::human(seconds),
            None => "<none>".to_string(),
        };
        vec![
            name(c),
            age(c, now),
            Value::from(text(c, "/spec/signerName")),
            Value::from(text(c, "/spec/username")),
            Value::from(duration),
            Value::from(csr_condition(c)),
        ]
    },
};

/// `Approved,Issued`, `Denied`, `Pending`, ... as upstream's printer: the condition types in order,
/// `Issued` once a certificate is present.
fn csr_condition(csr: &Value) -> String {
    let mut parts: Vec<&str> = list(csr, "/status/conditions")
        .iter()
        .map(|c| text(c, "/type"))
        .filter(|t| !t.is_empty())
        .collect();
    if !text(csr, "/status/certificate").is_empty() {
        parts.push("Issued");
    }
    if parts.is_empty() {
        "Pending".to_string()
    } else {
        parts.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_now;
    use super::*;
    use serde_json::json;

    #[test]
    fn a_csr_reads_pending_until_approved_and_issued_once_signed() {
        let mut csr = json!({"metadata": {"name": "c"}, "spec": {"signerName": "s", "username": "u", "expirationSeconds": 3600}});
        let row = (CSR.row)(&csr, test_now());
        assert_eq!(
            row[2..],
            [json!("s"), json!("u"), json!("60m"), json!("Pending")]
        );
        csr["status"] =
            json!({"conditions": [{"type": "Approved", "status": "True"}], "certificate": "Zm9v"});
        assert_eq!((CSR.row)(&csr, test_now())[5], "Approved,Issued");
    }

    #[test]
    fn an_api_service_shows_its_service_and_why_it_is_unavailable() {
        let local = json!({"metadata": {"name": "v1."}, "spec": {}});
        assert_eq!(
            (API_SERVICE.row)(&local, test_now())[1..3],
            [json!("Local"), json!("Unknown")]
        );
        let remote = json!({"metadata": {"name": "v1.x"}, "spec": {"service": {"namespace": "ns", "name": "api"}},
            "status": {"conditions": [{"type": "Available", "status": "False", "reason": "FailedDiscoveryCheck"}]}});
        assert_eq!(
            (API_SERVICE.row)(&remote, test_now())[1..3],
            [json!("ns/api"), json!("False (FailedDiscoveryCheck)")]
        );
    }

    #[test]
    fn webhook_configurations_count_their_webhooks() {
        let c = json!({"metadata": {"name": "w"}, "webhooks": [{"name": "a"}, {"name": "b"}]});
        assert_eq!((WEBHOOK_CONFIGURATION.row)(&c, test_now())[1], 2);
    }
}
