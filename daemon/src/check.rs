//! `layerguard check`: what this node offers the daemon, requirement by requirement, each
//! `ok` or `missing` with what to do, for a config exactly as `layerguard run` would read it.
//!
//! Owns the list and the probes. The probes are the real thing where that is cheap: the
//! sensor is loaded and attached (and detached again), containerd is called, the state
//! directory is written (and its format read, as the next start would), the trust keys are
//! read. It must not leave anything behind.

use crate::config::{Config, PolicyAction};
use serde::Serialize;

/// One requirement.
#[derive(Clone, Debug, Serialize)]
pub struct Requirement {
    /// What is checked.
    pub name: String,
    /// Met.
    pub ok: bool,
    /// The daemon cannot run fully without it (else: an optional extra, reported).
    pub required: bool,
    /// What was found.
    pub detail: String,
    /// What to do when it is not met.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

fn req(name: &str, ok: bool, detail: String, fix: &str) -> Requirement {
    Requirement {
        name: name.into(),
        ok,
        required: true,
        detail,
        fix: (!ok).then(|| fix.to_string()),
    }
}

/// (major, minor) of a kernel release string.
fn version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
        || ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
            .iter()
            .any(|d| std::path::Path::new(d).join(tool).is_file())
}

/// Every requirement for `config`, in order.
pub async fn check(config: &Config) -> Vec<Requirement> {
    let mut out = Vec::new();
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    out.push(req(
        "root",
        root,
        if root {
            "running as root".into()
        } else {
            "not root".into()
        },
        "run the daemon (and this check) as root: it loads eBPF programs",
    ));
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let new_enough = version(&release).is_some_and(|v| v >= (5, 8));
    out.push(req(
        "kernel",
        new_enough,
        format!("Linux {release}"),
        "Linux 5.8 or later (BTF tracepoints and BPF ring buffers)",
    ));
    let btf = std::path::Path::new(crate::sensor::preflight::VMLINUX_BTF).exists();
    out.push(req(
        "btf",
        btf,
        format!(
            "{} {}",
            crate::sensor::preflight::VMLINUX_BTF,
            if btf { "present" } else { "absent" }
        ),
        "a kernel built with CONFIG_DEBUG_INFO_BTF=y (Debian's and Ubuntu's are)",
    ));
    match crate::sensor::Sensor::load(&config.sensor, crate::run::file_programs(config).as_ref()) {
        Ok(sensor) => {
            let programs = sensor.programs();
            let points: std::collections::BTreeSet<String> = programs
                .iter()
                .filter_map(|p| {
                    p.split_once('(')
                        .map(|(_, t)| t.trim_end_matches(')').to_string())
                })
                .collect();
            for point in points {
                out.push(req("hook", true, point, ""));
            }
            for tp in &sensor.features().absent_tracepoints {
                out.push(Requirement {
                    name: "hook".into(),
                    ok: false,
                    required: false,
                    detail: format!("tp_btf/{tp} not in this kernel: its program is not attached"),
                    fix: None,
                });
            }
            out.push(req(
                "ring buffer",
                true,
                format!(
                    "{} bytes (sensor.ring_buffer_bytes)",
                    config.sensor.ring_buffer_bytes
                ),
                "",
            ));
            let k = sensor.features();
            out.push(Requirement {
                name: "fentry".into(),
                ok: k.fentry.starts_with("available") || k.fentry.starts_with("attached"),
                required: false,
                detail: k.fentry.clone(),
                fix: None,
            });
            let overlay_unknown = k.overlay.starts_with("unknown");
            out.push(Requirement {
                name: "overlayfs layout".into(),
                ok: !overlay_unknown,
                required: true,
                detail: k.overlay.clone(),
                fix: overlay_unknown.then(|| {
                    "modprobe overlay (the unit does it before the daemon starts); without it \
                     execs in containers are judged on the overlay inode, not the layer file's"
                        .into()
                }),
            });
            out.push(Requirement {
                name: "bpf lsm".into(),
                ok: k.bpf_lsm,
                required: false,
                detail: if k.bpf_lsm {
                    "active".into()
                } else {
                    "not in the active LSM list".into()
                },
                fix: None,
            });
            // Dropping the sensor detaches every program.
        }
        Err(e) => out.push(req(
            "sensor",
            false,
            e.to_string(),
            "see the message: the eBPF sensor must load and attach for the daemon to run",
        )),
    }
    let containerd =
        crate::containerd::Containerd::new(&config.containerd_socket, config.containerd.timeouts());
    let reached = containerd.connect().await;
    out.push(req(
        "containerd",
        reached.is_ok(),
        match &reached {
            Ok(_) => format!("{} answers", config.containerd_socket.display()),
            Err(e) => e.to_string(),
        },
        "start containerd, or point containerd_socket (--containerd-socket) at its socket",
    ));
    let probe = config
        .state_dir
        .join(format!(".layerguard-check-{}", std::process::id()));
    let writable = std::fs::create_dir_all(&config.state_dir)
        .and_then(|()| std::fs::write(&probe, b"check"))
        .and_then(|()| std::fs::remove_file(&probe));
    out.push(req(
        "state dir",
        writable.is_ok(),
        match &writable {
            Ok(()) => format!("{} writable", config.state_dir.display()),
            Err(e) => format!("{}: {e}", config.state_dir.display()),
        },
        "make state_dir (--state-dir) a writable directory on a local disk",
    ));
    // What the next start would do with the stores' formats (nothing is changed here).
    let (ok, detail, fix) = match crate::statedir::plan(&config.state_dir) {
        Ok(plan) => {
            let (ok, detail) = plan.describe();
            let fix = plan
                .refusals()
                .iter()
                .map(|r| r.fix())
                .collect::<Vec<_>>()
                .join("; ");
            (ok, detail, fix)
        }
        Err(e) => {
            let fix = "restore the state dir's FORMAT file (see the message)".to_string();
            (false, e.to_string(), fix)
        }
    };
    out.push(req("state format", ok, detail, &fix));
    match crate::trust::keys::TrustSet::load(&config.trust, 1) {
        Ok(set) => out.push(req(
            "trust keys",
            true,
            format!(
                "{} key(s), {} policy(ies)",
                set.keys.len(),
                set.policies.len()
            ),
            "",
        )),
        Err(e) => out.push(req(
            "trust keys",
            false,
            e.to_string(),
            "fix the [[trust.keys]] public_key path or file",
        )),
    }
    if config
        .respond
        .policy
        .iter()
        .any(|p| p.action == PolicyAction::Isolate)
    {
        let tools = on_path("nft") && on_path("nsenter");
        out.push(req(
            "isolation tools",
            tools,
            if tools {
                "nft and nsenter found".into()
            } else {
                "nft or nsenter not found".into()
            },
            "install nftables and util-linux: a respond.policy isolates",
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn kernel_versions_parse() {
        assert_eq!(super::version("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(super::version("5.4.0-150-generic"), Some((5, 4)));
        assert!(super::version("5.4.0").unwrap() < (5, 8));
        assert_eq!(super::version("x"), None);
    }
}
