//! The state directory's format versions (`<state_dir>/FORMAT`), end to end with the real
//! daemon.
//!
//! User story: an operator upgrades (or downgrades) layerguard on a node. A state dir from
//! before format versions starts as it is and keeps its journal and baselines; one written
//! by a newer layerguard stops the start with one sentence naming the store, the formats
//! and what to do, touching nothing; a layer cache it cannot read is dropped with a
//! warning and rebuilt. `layerguard check` says the same before the start.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use layerguard_tests::node::{run_ok, TestNode, WAIT};
use layerguard_tests::util::run_with_timeout;
use layerguard_tests::{daemon_binary, require_root, run_refused_start};
use serde_json::Value;

const NS: &str = "lg-statedir";

fn format_file(state: &Path) -> String {
    std::fs::read_to_string(state.join("FORMAT")).expect("a FORMAT file")
}

/// `store = N` of a FORMAT text.
fn recorded(text: &str, store: &str) -> Option<u32> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == store).then(|| v.trim().parse().ok())?
    })
}

/// `check`'s state-format line is ok and its detail says `want`.
fn assert_check_ok_saying(state: &Path, want: &str) {
    let (_, line) = check_state_format(state);
    assert_eq!(line["ok"], true, "{line}");
    assert!(line["detail"].as_str().unwrap().contains(want), "{line}");
}

/// `layerguard check --json` on `state`: its exit code and the "state format" line.
fn check_state_format(state: &Path) -> (i32, Value) {
    let out = run_with_timeout(
        Command::new(daemon_binary()).args([
            "check",
            "--json",
            "--state-dir",
            state.to_str().unwrap(),
            "--containerd-socket",
            "/nonexistent/containerd.sock",
        ]),
        WAIT,
    )
    .expect("layerguard check");
    let line = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("a JSON line"))
        .find(|v| v["name"] == "state format")
        .unwrap_or_else(|| panic!("no state format line: {out:?}"));
    (out.status.code().unwrap_or(-1), line)
}

/// `layerguard watch --json ARGS` until it exits.
fn watch_until_exit(node: &TestNode, args: &[&str]) -> Vec<Value> {
    let socket = node.api_socket();
    let mut all = vec!["watch", "--json", "--socket", socket.to_str().unwrap()];
    all.extend_from_slice(args);
    let out =
        run_with_timeout(Command::new(daemon_binary()).args(&all), WAIT).expect("layerguard watch");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// A journal written by a newer layerguard: the start is refused (exit 1, one line on
/// stderr naming the path, both formats and what to do) before anything is written, and
/// `check` reports it as missing with the same advice. Moved aside, the daemon starts.
#[test]
fn a_newer_journal_format_refuses_the_start_and_touches_nothing() {
    require_root();
    let state = tempfile::tempdir().unwrap();
    let journal = state.path().join("journal");
    std::fs::create_dir_all(&journal).unwrap();
    let segment = journal.join("00000000000000000001.seg");
    std::fs::write(&segment, b"a format this layerguard does not know").unwrap();
    let format = "written_by = \"9.9.9\"\njournal = 7\nbaselines = 1\nwebhooks = 1\nlayers = 1\n";
    std::fs::write(state.path().join("FORMAT"), format).unwrap();

    let out = run_refused_start(state.path(), &[], WAIT).expect("layerguard run");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(stderr.lines().count(), 1, "one line expected:\n{stderr}");
    for want in [
        "layerguard: state dir ",
        &format!("the alert journal {} is in format 7", journal.display()),
        "written by layerguard 9.9.9",
        "newer than the format 1 this layerguard",
        "run layerguard 9.9.9 or newer on this state dir",
        &format!("or move {} aside", journal.display()),
    ] {
        assert!(stderr.contains(want), "{want:?} not in: {stderr}");
    }
    // Nothing was written: no marker rewritten, no store created, no socket, no ready.
    assert_eq!(format_file(state.path()), format);
    assert_eq!(
        std::fs::read(&segment).unwrap(),
        b"a format this layerguard does not know"
    );
    let mut names: Vec<String> = std::fs::read_dir(state.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["FORMAT", "journal"]);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("layerguard ready"),
        "{out:?}"
    );

    let (code, line) = check_state_format(state.path());
    assert_eq!(code, 1, "{line}");
    assert_eq!(line["ok"], false, "{line}");
    assert_eq!(line["required"], true, "{line}");
    assert!(
        line["detail"].as_str().unwrap().contains("format 7"),
        "{line}"
    );
    assert!(line["fix"].as_str().unwrap().contains("aside"), "{line}");

    // The advice works: with the journal moved aside `check` would start on it.
    std::fs::rename(&journal, state.path().join("journal.from-9.9.9")).unwrap();
    let (_, line) = check_state_format(state.path());
    assert_eq!(line["ok"], true, "{line}");
}

/// Today's state dirs have no FORMAT: one the daemon used before is read as format 1. It
/// starts, says so, writes the marker, and its journal and baselines are still there:
/// `watch --from-start` replays the alerts of the run before, the baseline is listed.
#[test]
fn a_state_dir_from_before_format_versions_starts_and_keeps_its_data() {
    let mut node = TestNode::builder(NS).build();
    // A new state dir gets its marker at the first start.
    node.wait_message_after(0, "state dir: new, FORMAT written", WAIT);
    let text = format_file(node.state_dir());
    for store in ["journal", "baselines", "webhooks", "layers"] {
        assert_eq!(recorded(&text, store), Some(1), "{store} in:\n{text}");
    }

    let c = node.container();
    run_ok(&c, &["cp", "/bin/busybox", "/tmp/echo"]);
    for i in 0..3 {
        run_ok(&c, &["/tmp/echo", &format!("run {i}")]);
    }
    for i in 0..3 {
        let want = format!("run {i}");
        node.wait_alert(&c, |a| {
            a["kind"] == "exec_not_in_image"
                && a["process"]["argv"]
                    .as_array()
                    .is_some_and(|v| v.iter().any(|x| x == want.as_str()))
        });
    }
    // Every alert of that run (the copy is a new executable too).
    let before: Vec<Value> = node
        .stop_daemon()
        .json_lines()
        .into_iter()
        .filter(|v| v["message"] == "alert")
        .map(|v| v["alert"].clone())
        .collect();
    let baselines: Vec<_> = std::fs::read_dir(node.state_dir().join("baselines"))
        .expect("a baselines dir")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    assert!(!baselines.is_empty(), "the baseline was saved at the stop");

    // What the code before format versions left: the same stores, no FORMAT.
    std::fs::remove_file(node.state_dir().join("FORMAT")).unwrap();
    // (`check`'s exit code also counts the containerd it cannot reach here.)
    assert_check_ok_saying(node.state_dir(), "before format versions");

    node.start_daemon();
    node.wait_message_after(
        0,
        "state dir from before format versions: its stores are read as format 1, and FORMAT now says so",
        WAIT,
    );
    let text = format_file(node.state_dir());
    for store in ["journal", "baselines", "webhooks", "layers"] {
        assert_eq!(recorded(&text, store), Some(1), "{store} in:\n{text}");
    }
    assert!(text.contains("written_by = \""), "{text}");

    // The journal: every alert of the run before, replayed with its seq and id.
    let count = before.len().to_string();
    let replayed = watch_until_exit(&node, &["--from-start", "--count", &count]);
    let ids = |v: &[Value]| -> Vec<(u64, String)> {
        v.iter()
            .filter_map(|a| Some((a["seq"].as_u64()?, a["id"].as_str()?.to_string())))
            .collect()
    };
    assert_eq!(ids(&replayed), ids(&before), "{replayed:#?}");
    let dropped = replayed
        .iter()
        .filter(|a| a["kind"] == "exec_not_in_image")
        .count();
    assert_eq!(dropped, 3, "{replayed:#?}");

    // The baselines: loaded, with the ids they were saved under.
    let socket = node.api_socket();
    let out = node.cli(&[
        "baseline",
        "list",
        "--json",
        "--socket",
        socket.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let listed = String::from_utf8_lossy(&out.stdout);
    for file in &baselines {
        let id = file.trim_end_matches(".json");
        assert!(listed.contains(id), "baseline {id} not listed:\n{listed}");
    }
}

/// A layer cache in a format this binary does not read is only a cache: the start drops
/// it with a warning, records the current format, and rebuilds it at the next image.
#[test]
fn a_layer_cache_of_another_format_is_dropped_and_rebuilt() {
    let mut node = TestNode::builder(NS).log_execs().without_daemon().build();
    let layers = node.state_dir().join("layers");
    std::fs::create_dir_all(&layers).unwrap();
    std::fs::write(layers.join("0123.layer"), b"a layer of format 3").unwrap();
    std::fs::write(
        node.state_dir().join("FORMAT"),
        "written_by = \"9.9.9\"\nlayers = 3\n",
    )
    .unwrap();
    assert_check_ok_saying(node.state_dir(), "would drop the layer cache (format 3");

    node.start_daemon();
    let warned = node.wait_line_after(0, "the layer cache dropped", |v| {
        v["level"] == "WARN"
            && v["store"] == "layers"
            && v["found"] == 3
            && v["message"]
                .as_str()
                .is_some_and(|m| m.contains("dropped, it is rebuilt"))
    });
    assert_eq!(warned["current"], 1, "{warned}");
    assert!(!layers.join("0123.layer").exists());
    assert_eq!(recorded(&format_file(node.state_dir()), "layers"), Some(1));

    // Rebuilt: the image is indexed again and an image binary is verified.
    let c = node.container();
    run_ok(&c, &["/bin/busybox", "true"]);
    let v = node.verdict_of(&c, &["/bin/busybox", "true"]);
    assert_eq!(v["verdict"]["verdict"], "verified", "{v}");
    let deadline = std::time::Instant::now() + WAIT;
    while std::fs::read_dir(&layers).map_or(0, |d| d.count()) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no layer cached again"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
