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
