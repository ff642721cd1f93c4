//! An alert as Falco's JSON output: the body Falcosidekick accepts unchanged (one object
//! per POST) and the `falco` format of the JSONL file.
//!
//! Owns the mapping only (pure): `priority` in Falco's names, `rule` a title per kind,
//! Falco's field names in `output_fields` where Falco has one and `layerguard.*` for the
//! rest. Falcosidekick answers 400 unless `priority` is one of Falco's eight names, `rule`
//! is not empty, `time` parses and `output_fields` is not empty; it replaces `uuid`, so the
//! alert's id travels in `output_fields` too.

use super::{Alert, AlertKind, Severity};
use serde_json::{json, Map, Value};

/// Falco's priority for a severity.
pub fn priority(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "Critical",
        Severity::High => "Error",
        Severity::Medium => "Warning",
        Severity::Info => "Informational",
    }
}

/// The rule name a Falco user reads for a kind.
pub fn rule(kind: AlertKind) -> &'static str {
    match kind {
        AlertKind::ExecModified => "Executed file differs from its verified image",
        AlertKind::ExecNotInImage => "Executed file not in the container image",
        AlertKind::ExecFileless => "Fileless execution in container",
        AlertKind::ExecDeleted => "Executed file deleted in container",
        AlertKind::ExecUnverifiable => "Executed file could not be verified",
        AlertKind::ImageUntrusted => "Container image failed verification",
        AlertKind::SensorEventsLost => "layerguard sensor events lost",
        AlertKind::FileImageModified => "Image file modified in container",
        AlertKind::FileExecutableCreated => "New executable created in container",
        AlertKind::FileSensitiveWrite => "Sensitive file written in container",
        AlertKind::LibraryModified => "Modified library mapped executable in container",
        AlertKind::LibraryNotInImage => "Library not in the image mapped executable in container",
        AlertKind::LibraryFileless => "Fileless code mapped executable in container",
        AlertKind::BaselineUnexpectedExec => "Process never seen in the workload's baseline",
        AlertKind::BaselineUnexpectedParent => "Parent never seen in the workload's baseline",
        AlertKind::BaselineUnexpectedWrite => "Write never seen in the workload's baseline",
        AlertKind::ImageUnsigned => "Container image not signed by a trusted key",
        AlertKind::ImageSignatureInvalid => "Container image signature invalid",
        AlertKind::ImageKeyRevoked => "Container image signed by a revoked key",
        AlertKind::ImageKeyExpired => "Container image signed by an expired key",
        AlertKind::ResponseTaken => "layerguard response taken on a container",
        AlertKind::ResponseFailed => "layerguard response on a container did not happen",
    }
}

/// (repository, tag) of an image reference (`reg/app:1` -> `reg/app`, `1`; a digest
/// reference keeps its digest as the tag).
fn split_image(reference: &str) -> (&str, &str) {
    if let Some((repo, digest)) = reference.split_once('@') {
        return (repo, digest);
    }
    match reference.rfind(':') {
        Some(i) if !reference[i..].contains('/') => (&reference[..i], &reference[i + 1..]),
        _ => (reference, "latest"),
    }
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The Falco JSON of `alert`.
pub fn to_falco(alert: &Alert) -> Value {
    let mut f = Map::new();
    let mut put = |k: &str, v: Value| {
        f.insert(k.to_string(), v);
    };
    put("layerguard.alert_id", json!(alert.id));
    put("layerguard.seq", json!(alert.seq));
    put("layerguard.kind", json!(alert.kind.as_str()));
    put("layerguard.severity", json!(alert.severity.as_str()));
    if let Some(c) = &alert.container {
        put("container.id", json!(c.id));
        put(
            "container.name",
            json!(c.container_name.as_deref().unwrap_or(&c.id)),
        );
        put("layerguard.containerd_namespace", json!(c.namespace));
        if let Some(image) = &c.image {
            let (repo, tag) = split_image(image);
            put("container.image.repository", json!(repo));
            put("container.image.tag", json!(tag));
        }
        if let Some(d) = &c.manifest_digest {
            put("container.image.digest", json!(d));
        }
        if let Some(ns) = &c.pod_namespace {
            put("k8s.ns.name", json!(ns));
        }
        if let Some(pod) = &c.pod_name {
            put("k8s.pod.name", json!(pod));
        }
    }
    if let Some(p) = &alert.process {
        put("proc.exepath", json!(p.exe));
        put("proc.name", json!(basename(&p.exe)));
        put("proc.cmdline", json!(p.argv.join(" ")));
        put("proc.pid", json!(p.pid));
        put("proc.ppid", json!(p.ppid));
        if let Some(parent) = p.ancestry.first().and_then(|a| a.exe.as_deref()) {
            put("proc.pname", json!(basename(parent)));
        }
        put("user.uid", json!(p.uid));
    }
    if let Some(e) = &alert.evidence {
        if let Some(path) = &e.path {
            put("fd.name", json!(path));
        }
        if let Some(v) = &e.expected_sha256 {
            put("layerguard.expected_sha256", json!(v));
        }
        if let Some(v) = &e.actual_sha256 {
            put("layerguard.actual_sha256", json!(v));
        }
        if let Some(v) = &e.expected_layer {
            put("layerguard.layer", json!(v));
        }
        if let Some(v) = &e.file_op {
            put("layerguard.file_op", json!(v));
        }
        if let Some(v) = &e.path_source {
            put("layerguard.path_source", json!(v));
        }
        if let Some(b) = &e.baseline {
            put("layerguard.baseline", json!(b.id));
            put("layerguard.baseline_entry", json!(b.entry));
        }
        if let Some(s) = &e.signature {
            put("layerguard.signature_state", json!(s.state));
            put("layerguard.signature_policy", json!(s.policy));
        }
        if let Some(r) = &e.response {
            put("layerguard.response_action", json!(r.action));
            put("layerguard.response_result", json!(r.result));
            if let Some(rule) = &r.rule {
                put("layerguard.response_rule", json!(rule));
            }
            if let Some(seq) = r.trigger_seq {
                put("layerguard.trigger_seq", json!(seq));
            }
        }
        put("layerguard.reason", json!(e.reason));
    }
    let time = humantime::parse_rfc3339(&alert.time)
        .map(|t| humantime::format_rfc3339_nanos(t).to_string())
        .unwrap_or_else(|_| alert.time.clone());
    let priority = priority(alert.severity);
    let mut output = format!("{time}: {priority} {}", alert.summary);
    if let Some(c) = &alert.container {
        output.push_str(&format!(
            " (container_id={} image={})",
            c.id,
            c.image.as_deref().unwrap_or("-")
        ));
    }
    let mut tags = vec!["layerguard", alert.kind.as_str()];
    tags.push(match alert.kind {
        AlertKind::ImageUntrusted
        | AlertKind::ImageUnsigned
        | AlertKind::ImageSignatureInvalid
        | AlertKind::ImageKeyRevoked
        | AlertKind::ImageKeyExpired => "supply_chain",
        AlertKind::SensorEventsLost => "health",
        AlertKind::ResponseTaken | AlertKind::ResponseFailed => "response",
        _ => "container_drift",
    });
    json!({
        "uuid": alert.id,
        "time": time,
        "rule": rule(alert.kind),
        "priority": priority,
        "source": "layerguard",
        "hostname": alert.node,
        "output": output,
        "tags": tags,
        "output_fields": f,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::full_alert;

    /// Falcosidekick's own checks of a POST body (its `newFalcoPayload` and handler).
    pub fn falcosidekick_accepts(v: &Value) -> Result<(), String> {
        const PRIORITIES: [&str; 8] = [
            "Emergency",
            "Alert",
            "Critical",
            "Error",
            "Warning",
            "Notice",
            "Informational",
            "Debug",
        ];
        let p = v["priority"].as_str().unwrap_or_default();
        if !PRIORITIES.contains(&p) {
            return Err(format!("priority {p:?}"));
        }
        if v["rule"].as_str().unwrap_or_default().is_empty() {
            return Err("empty rule".into());
        }
        if v["output_fields"].as_object().is_none_or(|o| o.is_empty()) {
            return Err("empty output_fields".into());
        }
        humantime::parse_rfc3339(v["time"].as_str().unwrap_or_default())
            .map_err(|e| format!("time: {e}"))?;
        Ok(())
    }

    #[test]
    fn every_kind_and_severity_makes_a_body_falcosidekick_accepts() {
        for kind in AlertKind::ALL {
            for severity in [
                Severity::Info,
                Severity::Medium,
                Severity::High,
                Severity::Critical,
            ] {
                let mut a = full_alert(3);
                a.kind = kind;
                a.severity = severity;
                let v = to_falco(&a);
                falcosidekick_accepts(&v).unwrap_or_else(|e| panic!("{kind:?}: {e}: {v}"));
            }
        }
        let mut bare = full_alert(4);
        bare.container = None;
        bare.process = None;
        bare.evidence = None;
        falcosidekick_accepts(&to_falco(&bare)).unwrap();
    }

    #[test]
    fn fields_use_falcos_names() {
        let a = full_alert(7);
        let v = to_falco(&a);
        let f = &v["output_fields"];
        assert_eq!(f["layerguard.alert_id"], a.id.as_str());
        assert_eq!(f["layerguard.seq"], 7);
        assert_eq!(f["layerguard.kind"], "exec_modified");
        assert_eq!(v["priority"], "Critical");
        assert_eq!(v["source"], "layerguard");
        let c = a.container.as_ref().unwrap();
        assert_eq!(f["container.id"], c.id.as_str());
        let p = a.process.as_ref().unwrap();
        assert_eq!(f["proc.exepath"], p.exe.as_str());
        assert_eq!(f["proc.pid"], p.pid);
        let e = a.evidence.as_ref().unwrap();
        assert_eq!(
            f["layerguard.expected_sha256"],
            e.expected_sha256.as_deref().unwrap()
        );
        // Nanoseconds, UTC.
        assert!(v["time"].as_str().unwrap().ends_with("000Z"), "{v}");
        assert_eq!(split_image("reg.io:5000/app:1"), ("reg.io:5000/app", "1"));
        assert_eq!(split_image("app"), ("app", "latest"));
        assert_eq!(split_image("app@sha256:ab"), ("app", "sha256:ab"));
    }
}
