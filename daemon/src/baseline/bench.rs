//! Benchmarks of the baseline analyzer in process (ignored tests; run in release):
//!
//! ```text
//! cargo test --release -p layerguard --lib baseline::bench -- --ignored --nocapture --test-threads=1
//! ```
//!
//! - `thousand_baselines`: the resident memory of 1,000 baselines of 100 entries each (90
//!   execs, 10 write directories), their documents' size on disk, and how many exec
//!   lookups per second `learn::observe_exec` answers against them (known execs of
//!   monitoring baselines: the steady state), on one core.

use super::key::{NameSource, WorkloadKey};
use super::learn::{self, ExecFact, WriteFact};
use super::model::Baseline;
use crate::config::BaselineConfig;
use std::time::Instant;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
#[ignore = "benchmark: run in release with --ignored"]
fn thousand_baselines() {
    let config = BaselineConfig::default();
    let before = rss_kib();
    let mut all: Vec<Baseline> = (0..1000)
        .map(|w| {
            let key = WorkloadKey {
                containerd_namespace: "k8s.io".into(),
                pod_namespace: format!("team-{}", w % 20),
                workload: format!("service-{w}"),
                container: "app".into(),
                manifest: format!("sha256:{:064x}", w),
            };
            let mut b = Baseline::new(key, NameSource::PodOwner, 1);
            for e in 0..90 {
                let exe = format!("/usr/bin/tool-{e}");
                let parent = format!("/usr/bin/tool-{}", e / 10);
                let digest = crate::image::digest::Digest::of(exe.as_bytes());
                learn::observe_exec(
                    &mut b,
                    &ExecFact {
                        exe: &exe,
                        parent: &parent,
                        digest: Some(digest),
                        verified: true,
                        container: "c1",
                        now: 2,
                    },
                    &config,
                );
            }
            for d in 0..10 {
                let dir = format!("/var/lib/app-{d}/data");
                learn::observe_write(
                    &mut b,
                    &WriteFact {
                        dir: &dir,
                        clean: true,
                        container: "c1",
                        now: 2,
                    },
                    &config,
                );
            }
            learn::lock(&mut b, 3);
            b
        })
        .collect();
    let after = rss_kib();
    assert!(all.iter().all(|b| b.entries() == 100));
    let doc_bytes: usize = all
        .iter()
        .map(|b| serde_json::to_vec_pretty(b).unwrap().len())
        .sum();
    let lookups = 2_000_000u64;
    let started = Instant::now();
    let mut known = 0u64;
    for i in 0..lookups {
        let b = &mut all[(i % 1000) as usize];
        let e = i % 90;
        let exe = format!("/usr/bin/tool-{e}");
        let parent = format!("/usr/bin/tool-{}", e / 10);
        let fact = ExecFact {
            exe: &exe,
            parent: &parent,
            digest: None,
            verified: true,
            container: "c1",
            now: 4,
        };
        if learn::observe_exec(b, &fact, &config) == learn::ExecOutcome::Known {
            known += 1;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(known, lookups);
    println!(
        "1,000 baselines of 100 entries: RSS +{:.1} MiB ({:.1} KiB each), documents {:.1} MiB on disk ({:.1} KiB each); {:.2} M exec lookups/s (known execs, monitoring, one core, with the two strings of each lookup formatted)",
        (after.saturating_sub(before)) as f64 / 1024.0,
        (after.saturating_sub(before)) as f64 / 1000.0,
        doc_bytes as f64 / 1024.0 / 1024.0,
        doc_bytes as f64 / 1024.0 / 1000.0,
        lookups as f64 / secs / 1e6
    );
}
