//! `layerguard run` refuses bad starts with one sentence that names the problem.
//!
//! User story: an operator with a typo in the config, or who forgot sudo, reads one line
//! in the journal and knows what to fix.

use std::process::Command;

use layerguard_tests::{daemon_binary, require_root};

fn run(args: &[&str], as_nobody: bool) -> (i32, String) {
    let bin = daemon_binary();
    let out = if as_nobody {
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
            ])
            .arg(&bin)
            .args(args)
            .output()
            .expect("run setpriv")
    } else {
        Command::new(&bin).args(args).output().expect("run daemon")
    };
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

fn one_sentence(stderr: &str) {
    assert_eq!(
        stderr.lines().count(),
        1,
        "one line expected, got:\n{stderr}"
    );
    assert!(stderr.starts_with("layerguard: "), "{stderr}");
}

#[test]
fn non_root_exits_with_one_sentence() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = run(&["run", "--state-dir", dir.path().to_str().unwrap()], true);
    assert_ne!(code, 0);
    one_sentence(&stderr);
    assert!(stderr.contains("must run as root"), "{stderr}");
}

#[test]
fn unknown_config_key_names_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("layerguard.toml");
    std::fs::write(
        &cfg,
        "log_format = \"json\"\n\n[sensor]\nmonitor_hots = true\n",
    )
    .unwrap();
    let (code, stderr) = run(&["run", "--config", cfg.to_str().unwrap()], false);
    assert_ne!(code, 0);
    one_sentence(&stderr);
    assert!(stderr.contains("monitor_hots"), "{stderr}");
    assert!(stderr.contains("line 4"), "{stderr}");
    assert!(stderr.contains(cfg.to_str().unwrap()), "{stderr}");
}

#[test]
fn bad_config_value_names_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("layerguard.toml");
    std::fs::write(&cfg, "[sensor]\nring_buffer_bytes = \"big\"\n").unwrap();
    let (code, stderr) = run(&["run", "--config", cfg.to_str().unwrap()], false);
    assert_ne!(code, 0);
    one_sentence(&stderr);
    assert!(stderr.contains("sensor.ring_buffer_bytes"), "{stderr}");
    assert!(stderr.contains("line 2"), "{stderr}");

    std::fs::write(&cfg, "[sensor]\nring_buffer_bytes = 1000\n").unwrap();
    let (code, stderr) = run(&["run", "--config", cfg.to_str().unwrap()], false);
    assert_ne!(code, 0);
    one_sentence(&stderr);
    assert!(
        stderr.contains("sensor.ring_buffer_bytes") && stderr.contains("line 2"),
        "{stderr}"
    );
}

#[test]
fn bad_flag_value_names_the_flag() {
    let (code, stderr) = run(&["run", "--set", "sensor.drain_interval_ms=0"], false);
    assert_ne!(code, 0);
    one_sentence(&stderr);
    assert!(
        stderr.contains("--set sensor.drain_interval_ms=0"),
        "{stderr}"
    );
}

#[test]
fn semantic_config_errors_name_their_line_and_syntax_errors_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("layerguard.toml");
    let check = |text: &str, wants: &[&str]| {
        std::fs::write(&cfg, text).unwrap();
        let (code, stderr) = run(&["run", "--config", cfg.to_str().unwrap()], false);
        assert_ne!(code, 0, "{text}");
        one_sentence(&stderr);
        for want in wants {
            assert!(stderr.contains(want), "{want:?} not in: {stderr}");
        }
    };
    // An allow rule without a selector, in the second [[verify.allow]].
    check(
        "[verify]\nlog_execs = true\n\n[[verify.allow]]\nnamespaces = [\"ci\"]\n\n[[verify.allow]]\npaths = [\"/tmp/*\"]\n",
        &["line 7", "verify.allow[1]", "no global allow"],
    );
    // A wildcard selector is the global allow by another name.
    check(
        "[[verify.allow]]\nimages = [\"*\"]\n",
        &["line 1", "every workload"],
    );
    // TCP without TLS points at the tcp_listen line.
    check(
        "[api]\nsocket_mode = 0o660\ntcp_listen = \"0.0.0.0:50051\"\n",
        &["line 3", "api.tls_cert", "mutual TLS"],
    );
    // A TOML syntax error: one line, with its line number.
    check("[sensor\nmonitor_host = true\n", &["line 1"]);
}

/// `layerguard check` on this node: every requirement ok (exit 0) against a real
/// containerd, and a missing containerd or an unreadable trust key named with what to do
/// (exit 1). The sensor is really loaded and attached by the check, then detached.
#[test]
fn check_reports_each_requirement_and_exits_0_only_when_the_daemon_would_run() {
    require_root();
    let containerd = layerguard_tests::PrivateContainerd::start().expect("containerd");
    let state = tempfile::tempdir().unwrap();
    let check = |extra: &[&str]| {
        let mut args = vec![
            "check".to_string(),
            "--state-dir".into(),
            state.path().display().to_string(),
            "--json".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let out = Command::new(daemon_binary()).args(&args).output().unwrap();
        let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (out.status.code().unwrap(), lines)
    };
    let socket = containerd.socket_path().display().to_string();
    let (code, lines) = check(&["--containerd-socket", &socket]);
    assert_eq!(code, 0, "{lines:?}");
    for name in [
        "config",
        "root",
        "kernel",
        "btf",
        "hook",
        "ring buffer",
        "containerd",
        "state dir",
        "trust keys",
    ] {
        let found = lines
            .iter()
            .find(|l| l["name"] == name)
            .unwrap_or_else(|| panic!("{name}: {lines:?}"));
        assert_eq!(found["ok"], true, "{found}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l["name"] == "hook" && l["detail"] == "tp_btf/sched_process_exec"),
        "{lines:?}"
    );

    let (code, lines) = check(&["--containerd-socket", "/nonexistent/containerd.sock"]);
    assert_eq!(code, 1, "{lines:?}");
    let c = lines.iter().find(|l| l["name"] == "containerd").unwrap();
    assert_eq!(c["ok"], false);
    assert!(
        c["fix"].as_str().unwrap().contains("--containerd-socket"),
        "{c}"
    );

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("layerguard.toml");
    std::fs::write(
        &config,
        "[[trust.keys]]\nid = \"gone\"\npublic_key = \"/nonexistent/gone.pub\"\n",
    )
    .unwrap();
    let (code, lines) = check(&[
        "--containerd-socket",
        &socket,
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{lines:?}");
    let k = lines.iter().find(|l| l["name"] == "trust keys").unwrap();
    assert!(
        k["detail"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/gone.pub"),
        "{k}"
    );
}
