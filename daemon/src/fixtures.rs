//! Test fixtures shared by the unit tests of every stage: sensor events as the sensor hands
//! them on, and alerts as the alert stage stamps them. One place, so that a field added to
//! an event or an alert changes one builder, not every test module.

use crate::alert::{
    Alert, AlertContainer, AlertDraft, AlertKind, AlertProcess, Ancestor, Evidence, Loss, Severity,
};
use crate::clock::MonoNs;
use crate::sensor::event::{
    ExecEvent, ExitEvent, FileEvent, FileIdentity, FileOp, ForkEvent, Observation, ProcessEvent,
    ProcessRef, SensorEvent,
};
use std::sync::Arc;

/// A process `tgid` (its only thread) in mount namespace `mnt_ns`, at `ktime_ns`.
pub fn process(tgid: u32, mnt_ns: u32, ktime_ns: MonoNs) -> ProcessRef {
    ProcessRef {
        pid: tgid,
        tgid,
        mnt_ns,
        pid_ns: 0,
        ktime_ns,
    }
}

/// An exec of `argv` (argv[0] is the filename) by pid 1 in mount namespace 1, on an
/// overlay file with one link: a plain exec in a container. Edit the fields a test needs.
pub fn exec_event(argv: &[&str]) -> ExecEvent {
    ExecEvent {
        process: ProcessRef {
            pid_ns: 1,
            ..process(1, 1, 0)
        },
        comm: argv
            .first()
            .map(|a| a.rsplit('/').next().unwrap_or(a))
            .unwrap_or_default()
            .chars()
            .take(15)
            .collect(),
        filename: argv.first().copied().unwrap_or_default().into(),
        argv: argv.iter().map(|s| s.to_string()).collect(),
        argc: argv.len() as u32,
        cwd: Some("/".into()),
        nlink: 1,
        overlay: true,
        ..ExecEvent::default()
    }
}

/// A write by process `tgid` (comm `sh`) of a regular file at `host_path`.
pub fn file_write(tgid: u32, host_path: &str) -> FileEvent {
    FileEvent {
        process: process(tgid, 1, 0),
        op: FileOp::Write,
        uid: 0,
        gid: 0,
        comm: "sh".into(),
        file: FileIdentity { dev: 1, ino: 2 },
        kernel_dev: 1,
        host_path: Some(host_path.into()),
        container_path: None,
        path_from_kernel: false,
        path_truncated: false,
        mode: 0o100644,
        size: 1,
        nlink: 1,
        ctime_sec: 0,
        ctime_nsec: 0,
        memfd: false,
        deleted: false,
        data_dir: true,
    }
}

pub fn observed(e: ProcessEvent) -> SensorEvent {
    SensorEvent::Observed(Observation::Process(e))
}

/// An exec of `/bin/<tgid>` by `tgid` (child of `ppid`) in `mnt_ns` at `at`.
pub fn exec_at(tgid: u32, ppid: u32, mnt_ns: u32, at: MonoNs) -> SensorEvent {
    let mut e = exec_event(&[&format!("/bin/{tgid}")]);
    e.process = process(tgid, mnt_ns, at);
    e.ppid = ppid;
    observed(ProcessEvent::Exec(Arc::new(e)))
}

pub fn fork_at(child: u32, parent: u32, mnt_ns: u32, at: MonoNs) -> SensorEvent {
    observed(ProcessEvent::Fork(ForkEvent {
        process: process(child, mnt_ns, at),
        parent_tgid: parent,
    }))
}

pub fn exit_at(tgid: u32, mnt_ns: u32, at: MonoNs) -> SensorEvent {
    observed(ProcessEvent::Exit(ExitEvent {
        process: process(tgid, mnt_ns, at),
        exit_code: 0,
    }))
}

/// A draft of kind `kind` with a summary and nothing else.
pub fn draft(kind: AlertKind) -> AlertDraft {
    AlertDraft {
        severity: None,
        kind,
        summary: format!("{} for a test", kind.as_str()),
        container: None,
        process: None,
        evidence: None,
        loss: None,
    }
}

/// A stamped alert numbered `seq`, in one of three containers, of a realistic size.
pub fn alert(seq: u64) -> Alert {
    Alert {
        seq,
        id: format!("n-x-{seq}"),
        time: "2026-01-01T00:00:00.000001Z".into(),
        node: "n".into(),
        severity: Severity::High,
        kind: AlertKind::ExecNotInImage,
        summary: format!("alert number {seq} with some padding to give it a realistic size"),
        container: Some(AlertContainer {
            namespace: "default".into(),
            id: format!("c{}", seq % 3),
            image: Some("docker.io/library/busybox:1.36".into()),
            ..AlertContainer::default()
        }),
        process: None,
        evidence: None,
        loss: None,
    }
}

/// An alert with every field set, as a real exec alert would have it.
pub fn full_alert(seq: u64) -> Alert {
    Alert {
        seq,
        id: format!("node-1-abcd1234-{seq}"),
        time: "2026-03-01T12:34:56.123456Z".into(),
        node: "node-1".into(),
        severity: Severity::Critical,
        kind: AlertKind::ExecModified,
        summary: "/bin/ls in default/web differs from its image".into(),
        container: Some(AlertContainer {
            namespace: "k8s.io".into(),
            id: "0123456789abcdef".into(),
            image: Some("docker.io/library/nginx:1.27".into()),
            manifest_digest: Some("sha256:aa".into()),
            pod_name: Some("web-0".into()),
            pod_namespace: Some("shop".into()),
            pod_uid: Some("uid-1".into()),
            container_name: Some("nginx".into()),
        }),
        process: Some(AlertProcess {
            pid: 4242,
            ppid: 4200,
            uid: 0,
            gid: 0,
            exe: "/bin/ls".into(),
            argv: vec!["ls".into(), "-l".into()],
            argv_truncated: true,
            ancestry: vec![
                Ancestor {
                    pid: 4200,
                    exe: Some("/bin/sh".into()),
                },
                Ancestor { pid: 1, exe: None },
            ],
            exec_time: Some("2026-03-01T12:34:56.120001Z".into()),
        }),
        evidence: Some(Evidence {
            path: Some("/bin/ls".into()),
            expected_sha256: Some("11".into()),
            expected_layer: Some("sha256:bb".into()),
            actual_sha256: Some("22".into()),
            upper_layer: true,
            interpreter: Some("/bin/sh".into()),
            interpreter_verdict: Some("verified".into()),
            reason: "content differs".into(),
            ..Default::default()
        }),
        loss: Some(Loss {
            kernel: [("exec".to_string(), 1), ("fork".to_string(), 2)]
                .into_iter()
                .collect(),
            undecodable: 4,
            queues: vec![("verify".into(), 5)],
        }),
    }
}
