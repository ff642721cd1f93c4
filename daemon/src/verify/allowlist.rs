//! The scoped allowlist: whether a verdict matches a `[[verify.allow]]` rule (the rule
//! itself, and why a rule is refused, are `config`'s). Pure string matching.

use crate::alert::AlertKind;
pub use crate::config::AllowRule;

/// What a rule is matched against.
pub struct Subject<'a> {
    pub image: Option<&'a str>,
    pub manifest_digest: Option<&'a str>,
    pub namespace: &'a str,
    pub pod_namespace: Option<&'a str>,
    pub container_id: &'a str,
    pub container_name: Option<&'a str>,
    pub path: &'a str,
    pub kind: AlertKind,
}

impl<'a> Subject<'a> {
    /// `kind` at `path` in container `c`, whose image the verdict used is `manifest`.
    pub fn of(
        c: &'a crate::identity::ContainerInfo,
        manifest: Option<&'a str>,
        path: &'a str,
        kind: AlertKind,
    ) -> Self {
        Subject {
            image: c.image.as_deref(),
            manifest_digest: manifest,
            namespace: &c.namespace,
            pod_namespace: c.pod_namespace.as_deref(),
            container_id: &c.id,
            container_name: c.container_name.as_deref(),
            path,
            kind,
        }
    }
}

impl AllowRule {
    /// True when every field the rule sets matches the subject.
    pub fn matches(&self, s: &Subject<'_>) -> bool {
        let any = |pats: &[String], v: Option<&str>| {
            pats.is_empty() || v.is_some_and(|v| pats.iter().any(|p| glob(p, v)))
        };
        any(&self.images, s.image)
            && (self.image_digests.is_empty()
                || s.manifest_digest
                    .is_some_and(|d| self.image_digests.iter().any(|x| x == d)))
            && any(&self.namespaces, Some(s.namespace))
            && any(&self.pod_namespaces, s.pod_namespace)
            && (self.containers.is_empty()
                || any(&self.containers, Some(s.container_id))
                || any(&self.containers, s.container_name))
            && any(&self.paths, Some(s.path))
            && (self.kinds.is_empty() || self.kinds.iter().any(|k| k == s.kind.as_str()))
    }
}

/// `*` matches any run of characters (including `/`), `?` one character; all else literal.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject<'a>(path: &'a str, pod_ns: Option<&'a str>) -> Subject<'a> {
        Subject {
            image: Some("registry.local/ci/builder:7"),
            manifest_digest: Some("sha256:aa"),
            namespace: "k8s.io",
            pod_namespace: pod_ns,
            container_id: "abc123",
            container_name: Some("build"),
            path,
            kind: AlertKind::ExecNotInImage,
        }
    }

    #[test]
    fn globs() {
        assert!(glob("/tmp/*", "/tmp/a/b"));
        assert!(glob("ci-*", "ci-runner"));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "ac"));
        assert!(glob("*", ""));
        assert!(!glob("/usr/*", "/tmp/x"));
    }

    #[test]
    fn rules_are_scoped_and_all_fields_must_match() {
        let rule = AllowRule {
            pod_namespaces: vec!["ci-*".into()],
            paths: vec!["/workspace/*".into()],
            ..Default::default()
        };
        assert!(rule.problem().is_none());
        assert!(rule.matches(&subject("/workspace/out/tool", Some("ci-builds"))));
        assert!(!rule.matches(&subject("/usr/bin/tool", Some("ci-builds"))));
        assert!(!rule.matches(&subject("/workspace/out/tool", Some("prod"))));
        assert!(!rule.matches(&subject("/workspace/out/tool", None)));
    }

    #[test]
    fn unscoped_or_misspelled_rules_are_refused() {
        let global = AllowRule {
            paths: vec!["/tmp/*".into()],
            ..Default::default()
        };
        assert!(global.problem().unwrap().contains("at least one"));
        let bad = AllowRule {
            namespaces: vec!["x".into()],
            kinds: vec!["exec_drift".into()],
            ..Default::default()
        };
        assert!(bad.problem().unwrap().contains("exec_drift"));
        for wildcard in ["*", "*:*", "*/*", "?*", ""] {
            let rule = AllowRule {
                images: vec![wildcard.into()],
                ..Default::default()
            };
            let problem = rule
                .problem()
                .unwrap_or_else(|| panic!("{wildcard:?} accepted"));
            assert!(problem.contains("every workload"), "{problem}");
        }
        let scoped = AllowRule {
            images: vec!["registry.local/ci/*".into()],
            containers: vec!["*-builder".into()],
            ..Default::default()
        };
        assert!(scoped.problem().is_none());
    }
}
