//! How the CLI prints: one line per alert (a table on a terminal), the container table,
//! the status summary, and the JSON forms (`--json`).
//!
//! Owns layout only; pure functions from values to strings, so tests pin the output.

use layerguard::alert::Alert;
use layerguard_proto::v1 as pb;

pub const ALERT_HEADER: &str =
    "    SEQ TIME                 SEVERITY KIND               CONTAINER                        PID EXE / SUMMARY";

/// One alert as a table row: seq, time (UTC, to the second), severity, kind,
/// namespace/container, pid, executable, summary.
pub fn alert_line(a: &Alert) -> String {
    let time = a.time.get(..19).map_or(a.time.clone(), |t| format!("{t}Z"));
    let container = a
        .container
        .as_ref()
        .map(|c| {
            let name = c
                .pod_name
                .as_ref()
                .map(|p| format!("{}/{p}", c.pod_namespace.as_deref().unwrap_or("")))
                .unwrap_or_else(|| format!("{}/{}", c.namespace, short_id(&c.id)));
            truncate(&name, 28)
        })
        .unwrap_or_else(|| "-".into());
    let (pid, exe) = a
        .process
        .as_ref()
        .map(|p| (p.pid.to_string(), p.exe.clone()))
        .unwrap_or_else(|| ("-".into(), "-".into()));
    format!(
        "{:>7} {:<20} {:<8} {:<18} {:<28} {:>7} {} - {}",
        a.seq,
        time,
        a.severity.as_str(),
        a.kind.as_str(),
        container,
        pid,
        exe,
        a.summary
    )
}

/// Container ids are usually 64 hex characters; 12 identify one on a node.
fn short_id(id: &str) -> &str {
    if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        &id[..12]
    } else {
        id
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('~');
        t
    }
}

pub fn gap_line(g: &pb::Gap) -> String {
    format!(
        "layerguard: {} alert(s) lost (seq {}..{}): {}",
        g.missed, g.first_seq, g.last_seq, g.reason
    )
}

pub fn lag_line(l: &pb::Lag) -> String {
    format!(
        "layerguard: this client fell {} alert(s) behind; catching up from the journal at seq {}",
        l.missed, l.resume_from_seq
    )
}

pub fn gap_json(g: &pb::Gap) -> serde_json::Value {
    serde_json::json!({"gap": {"first_seq": g.first_seq, "last_seq": g.last_seq,
        "missed": g.missed, "reason": g.reason}})
}

pub fn lag_json(l: &pb::Lag) -> serde_json::Value {
    serde_json::json!({"lag": {"missed": l.missed, "resume_from_seq": l.resume_from_seq}})
}

pub const CONTAINER_HEADER: &str =
    "NAMESPACE    CONTAINER                POD                        IMAGE                                 PID STATE    IMAGE-CHECK  SIGNATURE          VERIFIED ALERTED UNVERIF";

pub fn container_line(c: &pb::Container) -> String {
    let v = c.verdicts.unwrap_or_default();
    let pod = match (&c.pod_namespace, &c.pod_name) {
        (Some(ns), Some(p)) => format!("{ns}/{p}"),
        _ => "-".into(),
    };
    format!(
        "{:<12} {:<24} {:<26} {:<36} {:>4} {:<8} {:<12} {:<18} {:>8} {:>7} {:>7}",
        truncate(&c.namespace, 12),
        truncate(short_id(&c.id), 24),
        truncate(&pod, 26),
        truncate(c.image.as_deref().unwrap_or("-"), 36),
        c.task_pid,
        if c.running { "running" } else { "stopped" },
        c.image_verdict.as_deref().unwrap_or("-"),
        truncate(c.signature.as_deref().unwrap_or("-"), 18),
        v.verified,
        v.alerted,
        v.unverifiable
    )
}

pub fn container_json(c: &pb::Container) -> serde_json::Value {
    let v = c.verdicts.unwrap_or_default();
    serde_json::json!({
        "namespace": c.namespace, "id": c.id, "image": c.image,
        "manifest_digest": c.manifest_digest, "pod_name": c.pod_name,
        "pod_namespace": c.pod_namespace, "container_name": c.container_name,
        "task_pid": c.task_pid, "running": c.running,
        "started_at": c.started_at.as_ref().and_then(layerguard::api::system_time)
            .map(|t| humantime::format_rfc3339_seconds(t).to_string()),
        "image_verdict": c.image_verdict,
        "signature": c.signature, "signature_key": c.signature_key,
        "verdicts": {"verified": v.verified, "alerted": v.alerted,
            "unverifiable": v.unverifiable, "skipped": v.skipped},
    })
}

pub fn status_json(s: &pb::GetStatusResponse) -> serde_json::Value {
    let e = s.events.clone().unwrap_or_default();
    let h = s.hash_cache.unwrap_or_default();
    let k = s.kernel.clone().unwrap_or_default();
    let j = s.journal.clone().unwrap_or_default();
    serde_json::json!({
        "version": s.version, "node": s.node,
        "started_at": s.started_at.as_ref().and_then(layerguard::api::system_time)
            .map(|t| humantime::format_rfc3339_seconds(t).to_string()),
        "kernel": {"release": k.kernel_release, "btf": k.btf, "bpf_lsm": k.bpf_lsm,
            "lockdown": k.lockdown, "fentry": k.fentry},
        "programs": s.programs,
        "events": {"seen": e.seen, "per_second": e.per_second,
            "seen_by_kind": e.seen_by_kind, "lost_kernel": e.lost_kernel,
            "undecodable": e.undecodable, "lost_queue": e.lost_queue},
        "hash_cache": {"hits": h.hits, "misses": h.misses, "hit_rate": h.hit_rate},
        "containers": s.containers, "running_containers": s.running_containers,
        "subscribers": s.subscribers, "subscriber_lags": s.subscriber_lags,
        "alerts": s.alerts, "last_alert_seq": s.last_alert_seq,
        "journal": {"enabled": j.enabled, "dir": j.dir, "bytes": j.bytes,
            "segments": j.segments, "first_seq": j.first_seq, "last_seq": j.last_seq},
        "files": s.files.as_ref().map(|f| serde_json::json!({
            "hooks": f.hooks, "kernel_seen": f.kernel_seen, "kernel_repeats": f.kernel_repeats,
            "kernel_clean_hits": f.kernel_clean_hits, "io_uring_requests": f.io_uring_requests,
            "writes": f.writes, "mappings": f.mappings, "inspected": f.inspected,
            "marked_clean": f.marked_clean, "unjudged": f.unjudged,
            "outside_layers": f.outside_layers, "kernel_data_writes": f.kernel_data_writes,
            "kernel_syscalls": f.kernel_syscalls, "names": f.names,
            "kernel_hook_calls": f.kernel_hook_calls,
            "roles": f.roles.iter().map(|r| (r.role.clone(), serde_json::json!(r.hooks)))
                .collect::<serde_json::Map<_, _>>(),
            "kernel_hooks_refused": f.kernel_hooks_refused,
            "io_uring_by_container": f.io_uring_by_container.iter().map(|c| serde_json::json!({
                "container_id": c.container_id, "namespace": c.namespace, "requests": c.requests,
            })).collect::<Vec<_>>(),
        })),
        "signatures": s.signatures,
        "webhooks": s.webhooks.iter().map(|w| serde_json::json!({
            "url": w.url, "delivered": w.delivered, "failures": w.failures,
            "rejected": w.rejected, "filtered": w.filtered, "lost": w.lost,
            "next_seq": w.next_seq, "lag": w.lag, "last_error": w.last_error,
        })).collect::<Vec<_>>(),
    })
}

pub fn status_text(s: &pb::GetStatusResponse) -> String {
    let e = s.events.clone().unwrap_or_default();
    let h = s.hash_cache.unwrap_or_default();
    let k = s.kernel.clone().unwrap_or_default();
    let j = s.journal.clone().unwrap_or_default();
    let lost = e.lost_kernel.values().sum::<u64>() + e.lost_queue;
    let by_kind: Vec<String> = e
        .lost_kernel
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    let mut out = String::new();
    let mut line = |label: &str, value: String| {
        out.push_str(&format!("{label:<12} {value}\n"));
    };
    line("node", format!("{} (layerguard {})", s.node, s.version));
    line(
        "kernel",
        format!(
            "{} btf={} lockdown={} bpf_lsm={} fentry={}",
            k.kernel_release,
            k.btf,
            k.lockdown.as_deref().unwrap_or("none"),
            if k.bpf_lsm { "active" } else { "inactive" },
            k.fentry
        ),
    );
    line("programs", s.programs.join(", "));
    line(
        "events",
        format!(
            "{} seen, {:.1}/s, {} lost (kernel {}, queues {}), {} undecodable",
            e.seen,
            e.per_second,
            lost,
            by_kind.join(" "),
            e.lost_queue,
            e.undecodable
        ),
    );
    line(
        "hash cache",
        format!(
            "{:.1}% hits ({} hits, {} misses)",
            h.hit_rate * 100.0,
            h.hits,
            h.misses
        ),
    );
    line(
        "containers",
        format!("{} ({} running)", s.containers, s.running_containers),
    );
    for w in &s.webhooks {
        line(
            "webhook",
            format!(
                "{}: {} delivered, {} behind (next seq {}), {} failed POSTs, {} refused, {} filtered{}",
                w.url,
                w.delivered,
                w.lag,
                w.next_seq,
                w.failures,
                w.rejected,
                w.filtered,
                w.last_error
                    .as_deref()
                    .map(|e| format!("; last error: {e}"))
                    .unwrap_or_default()
            ),
        );
    }
    let mut signatures: Vec<(&String, &u64)> = s.signatures.iter().collect();
    signatures.sort();
    line(
        "signatures",
        if signatures.is_empty() {
            "no container judged yet".to_string()
        } else {
            signatures
                .iter()
                .map(|(state, n)| format!("{n} {state}"))
                .collect::<Vec<_>>()
                .join(", ")
        },
    );
    line(
        "alerts",
        format!("{} since start, last seq {}", s.alerts, s.last_alert_seq),
    );
    line(
        "subscribers",
        format!(
            "{} ({} lagged since start)",
            s.subscribers, s.subscriber_lags
        ),
    );
    line(
        "files",
        match &s.files {
            Some(f) => format!(
                "{} hooks: {} writes, {} mappings and {} renames/links/unlinks received, \
                 {} files read, {} inodes marked clean; kernel: {} seen, {} data writes, \
                 {} repeats and {} clean mappings not sent, {} io_uring requests not \
                 inspected, {} hooked syscalls, {} kernel hook calls",
                f.hooks,
                f.writes,
                f.mappings,
                f.names,
                f.inspected,
                f.marked_clean,
                f.kernel_seen,
                f.kernel_data_writes,
                f.kernel_repeats,
                f.kernel_clean_hits,
                f.io_uring_requests,
                f.kernel_syscalls,
                f.kernel_hook_calls
            ),
            None => "off (files.enabled = false)".into(),
        },
    );
    line(
        "journal",
        if j.enabled {
            format!(
                "{} bytes in {} segment(s), seq {}..{} ({})",
                j.bytes, j.segments, j.first_seq, j.last_seq, j.dir
            )
        } else {
            "disabled".into()
        },
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An exec alert with the fields a line shows.
    fn full_alert(seq: u64) -> Alert {
        serde_json::from_value(serde_json::json!({
            "seq": seq, "id": format!("node-1-abcd1234-{seq}"),
            "time": "2026-03-01T12:34:56.123456Z", "node": "node-1",
            "severity": "critical", "kind": "exec_modified",
            "summary": "/bin/ls in default/web differs from its image",
            "container": {"namespace": "k8s.io", "id": "0123456789abcdef",
                "image": "docker.io/library/nginx:1.27", "pod_name": "web-0",
                "pod_namespace": "shop"},
            "process": {"pid": 4242, "ppid": 4200, "uid": 0, "gid": 0, "exe": "/bin/ls",
                "argv": ["ls", "-l"], "argv_truncated": true, "ancestry": []},
        }))
        .expect("an alert")
    }

    #[test]
    fn an_alert_is_one_readable_line() {
        let line = alert_line(&full_alert(42));
        assert!(!line.contains('\n'));
        assert!(
            line.starts_with("     42 2026-03-01T12:34:56Z critical exec_modified"),
            "{line}"
        );
        assert!(line.contains("shop/web-0"), "{line}");
        assert!(
            line.contains("4242 /bin/ls - /bin/ls in default/web differs"),
            "{line}"
        );
        let mut bare = full_alert(1);
        bare.container = None;
        bare.process = None;
        assert!(alert_line(&bare).contains(" - "));
        assert_eq!(short_id(&"a".repeat(64)), "a".repeat(12));
        assert_eq!(short_id("web"), "web");
    }

    #[test]
    fn notices_say_how_many_and_where() {
        let g = pb::Gap {
            first_seq: 5,
            last_seq: 9,
            missed: 5,
            reason: "retention".into(),
        };
        assert!(gap_line(&g).contains("5 alert(s) lost (seq 5..9)"));
        assert_eq!(gap_json(&g)["gap"]["missed"], 5);
        let l = pb::Lag {
            missed: 3,
            resume_from_seq: 7,
        };
        assert!(lag_line(&l).contains("3 alert(s) behind"));
        assert_eq!(lag_json(&l)["lag"]["resume_from_seq"], 7);
    }
}
