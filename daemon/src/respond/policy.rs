//! Which `[[respond.policy]]` answers an alert, and whether `respond.never` protects its
//! container: a pure function of the alert and the config.
//!
//! Owns the matching only. Response alerts never trigger a response; alerts about no
//! container (the host, lost events) never do either: the host is never a target.

use crate::alert::{Alert, AlertKind};
use crate::config::{RespondConfig, ResponsePolicyConfig};
use crate::trust::policy::glob_matches;

/// A policy that answers an alert.
#[derive(Debug, PartialEq, Eq)]
pub struct Decision<'a> {
    pub policy: &'a ResponsePolicyConfig,
    /// Why the container is left alone (`respond.never`, the daemon's own), if it is.
    pub protected: Option<String>,
}

fn listed(list: &[String], value: Option<&str>) -> bool {
    list.is_empty() || value.is_some_and(|v| list.iter().any(|x| x == v))
}

fn image_matches(globs: &[String], image: Option<&str>) -> bool {
    globs.is_empty() || image.is_some_and(|i| globs.iter().any(|g| glob_matches(g, i)))
}

/// The first policy that answers `alert`, with its protection. `own_container`: the id of
/// the container the daemon runs in, if it does.
pub fn decide<'a>(
    alert: &Alert,
    config: &'a RespondConfig,
    own_container: Option<&str>,
) -> Option<Decision<'a>> {
    if matches!(
        alert.kind,
        AlertKind::ResponseTaken | AlertKind::ResponseFailed
    ) {
        return None;
    }
    let c = alert.container.as_ref()?;
    if c.id.is_empty() {
        return None;
    }
    let policy = config.policy.iter().find(|p| {
        let kinds = p.kinds();
        (kinds.is_empty() || kinds.contains(&alert.kind))
            && p.min_severity.is_none_or(|m| alert.severity >= m)
            && listed(&p.namespaces, Some(&c.namespace))
            && listed(&p.pod_namespaces, c.pod_namespace.as_deref())
            && listed(&p.workloads, c.container_name.as_deref())
            && image_matches(&p.images, c.image.as_deref())
    })?;
    let never = &config.never;
    let protected = if c.image.is_none() && c.pod_namespace.is_none() {
        // The container's identity was not read (containerd did not answer in time): it
        // could be a protected one, so it is left alone.
        Some(
            "its identity (image, pod) is not known, so respond.never cannot be checked"
                .to_string(),
        )
    } else if own_container == Some(c.id.as_str()) {
        Some("it is the container layerguard runs in".to_string())
    } else if c
        .pod_namespace
        .as_deref()
        .is_some_and(|ns| never.pod_namespaces.iter().any(|n| n == ns))
    {
        Some(format!(
            "pod namespace {} is in respond.never",
            c.pod_namespace.as_deref().unwrap_or_default()
        ))
    } else if never.namespaces.contains(&c.namespace) {
        Some(format!(
            "containerd namespace {} is in respond.never",
            c.namespace
        ))
    } else if !never.images.is_empty() && image_matches(&never.images, c.image.as_deref()) {
        Some(format!(
            "image {} matches respond.never",
            c.image.as_deref().unwrap_or_default()
        ))
    } else {
        None
    };
    Some(Decision { policy, protected })
}

/// The id of the container this process runs in, from its cgroup path (containerd and
/// CRI put the container id in it), when it runs in one.
pub fn own_container_id() -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    // The last path component that looks like a container id (64 hex, possibly with a
    // `cri-containerd-` prefix and `.scope` suffix).
    text.lines()
        .filter_map(|l| l.rsplit('/').next())
        .map(|last| {
            last.trim_start_matches("cri-containerd-")
                .trim_end_matches(".scope")
                .to_string()
        })
        .find(|id| id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{AlertContainer, Severity};
    use crate::config::{PolicyAction, PolicyMode};

    fn policy(name: &str, kinds: &[&str]) -> ResponsePolicyConfig {
        ResponsePolicyConfig {
            name: name.into(),
            kinds: kinds.iter().map(|s| s.to_string()).collect(),
            min_severity: None,
            namespaces: vec![],
            pod_namespaces: vec![],
            images: vec![],
            workloads: vec![],
            action: PolicyAction::Pause,
            mode: PolicyMode::Enforce,
        }
    }

    fn alert(kind: AlertKind, ns: &str, pod_ns: Option<&str>) -> Alert {
        let mut a = crate::fixtures::full_alert(1);
        a.kind = kind;
        a.severity = kind.severity();
        a.container = Some(AlertContainer {
            namespace: ns.into(),
            id: "c1".into(),
            image: Some("reg.io/prod/app:1".into()),
            pod_namespace: pod_ns.map(str::to_string),
            ..AlertContainer::default()
        });
        a
    }

    #[test]
    fn policies_match_by_kind_severity_and_selectors_first_match_wins() {
        let mut config = RespondConfig {
            policy: vec![
                policy("freeze", &["exec_modified"]),
                policy("any-critical", &[]),
            ],
            ..RespondConfig::default()
        };
        config.policy[1].min_severity = Some(Severity::Critical);
        config.policy[1].action = PolicyAction::Kill;
        let d = decide(
            &alert(AlertKind::ExecModified, "k8s.io", None),
            &config,
            None,
        )
        .unwrap();
        assert_eq!(d.policy.name, "freeze");
        assert_eq!(d.protected, None);
        let d = decide(
            &alert(AlertKind::LibraryModified, "k8s.io", None),
            &config,
            None,
        )
        .unwrap();
        assert_eq!(d.policy.name, "any-critical");
        assert!(decide(
            &alert(AlertKind::ExecNotInImage, "k8s.io", None),
            &config,
            None
        )
        .is_none());
        config.policy[0].namespaces = vec!["other".into()];
        config.policy[1].images = vec!["reg.io/dev/*".into()];
        assert!(decide(
            &alert(AlertKind::ExecModified, "k8s.io", None),
            &config,
            None
        )
        .is_none());
        // Responses and container-less alerts never trigger one.
        config.policy.push(policy("all", &[]));
        config.policy[2].min_severity = Some(Severity::Info);
        assert!(decide(
            &alert(AlertKind::ResponseFailed, "k8s.io", None),
            &config,
            None
        )
        .is_none());
        let mut host = alert(AlertKind::SensorEventsLost, "k8s.io", None);
        host.container = None;
        assert!(decide(&host, &config, None).is_none());
    }

    #[test]
    fn never_protects_kube_system_and_the_daemons_own_container() {
        let config = RespondConfig {
            policy: vec![policy("freeze", &["exec_modified"])],
            ..RespondConfig::default()
        };
        let d = decide(
            &alert(AlertKind::ExecModified, "k8s.io", Some("kube-system")),
            &config,
            None,
        )
        .unwrap();
        assert!(d.protected.unwrap().contains("kube-system"));
        let d = decide(
            &alert(AlertKind::ExecModified, "k8s.io", Some("web")),
            &config,
            Some("c1"),
        )
        .unwrap();
        assert!(d.protected.unwrap().contains("layerguard runs in"));
        let d = decide(
            &alert(AlertKind::ExecModified, "k8s.io", Some("web")),
            &config,
            Some("c2"),
        )
        .unwrap();
        assert_eq!(d.protected, None);
    }
}
