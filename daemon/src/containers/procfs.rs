//! The few `/proc` reads the containers stage needs: a process's mount namespace, its
//! parent, and its start time.
//!
//! Owns parsing of `/proc/<pid>/{ns/mnt,status,stat}` and `/proc/stat`. Every read may
//! fail because the process is already gone; callers treat that as "unknown", never as
//! an error worth stopping for.

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, SystemTime};

/// How far up the parent chain the pid fall-back looks. Container processes sit a few
/// levels below their task's init; deeper trees still resolve by mount namespace.
pub const MAX_ANCESTORS: usize = 16;

/// Inode of `/proc/<pid>/ns/mnt`: the number the sensor reports as `mnt_ns` (the kernel's
/// namespace inums fit in 32 bits).
pub fn mnt_ns_of(pid: u32) -> std::io::Result<u32> {
    std::fs::metadata(format!("/proc/{pid}/ns/mnt")).map(|m| m.ino() as u32)
}

/// `PPid:` of `/proc/<pid>/status`.
pub fn ppid_of(pid: u32) -> Option<u32> {
    parse_ppid(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

pub fn parse_ppid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// `first` and its ancestors, nearest first, up to `max` pids, stopping at pid 1 or at a
/// process that is gone. `parent` is injected so that tests need no real process tree.
pub fn ancestry(first: u32, max: usize, parent: impl Fn(u32) -> Option<u32>) -> Vec<u32> {
    let mut out = Vec::new();
    let mut pid = first;
    while pid > 1 && out.len() < max && !out.contains(&pid) {
        out.push(pid);
        match parent(pid) {
            Some(p) => pid = p,
            None => break,
        }
    }
    out
}

/// When `pid` started, from `/proc/<pid>/stat` field 22 and the boot time in `/proc/stat`.
pub fn start_time(pid: u32) -> Option<SystemTime> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ticks = parse_start_ticks(&stat)?;
    let btime = parse_btime(&std::fs::read_to_string("/proc/stat").ok()?)?;
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz <= 0 {
        return None;
    }
    let since_boot = Duration::from_millis(ticks.checked_mul(1000)? / hz as u64);
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(btime) + since_boot)
}

/// Field 22 (starttime). The command name (field 2) may hold spaces and parentheses, so
/// fields are counted from the last `)`.
pub fn parse_start_ticks(stat: &str) -> Option<u64> {
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    rest.split(' ').nth(19)?.parse().ok()
}

pub fn parse_btime(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ppid_is_parsed() {
        assert_eq!(parse_ppid("Name:\tsh\nTgid:\t7\nPPid:\t42\n"), Some(42));
        assert_eq!(parse_ppid("Name:\tsh\n"), None);
    }

    #[test]
    fn ancestry_stops_at_init_gone_or_cycle() {
        let tree = |p: u32| match p {
            50 => Some(40),
            40 => Some(30),
            30 => Some(1),
            _ => None,
        };
        assert_eq!(ancestry(50, 16, tree), vec![50, 40, 30]);
        assert_eq!(ancestry(50, 2, tree), vec![50, 40]);
        assert_eq!(ancestry(77, 16, tree), vec![77]);
        assert_eq!(ancestry(5, 16, |_| Some(5)), vec![5]);
        assert!(ancestry(0, 16, tree).is_empty());
    }

    #[test]
    fn start_ticks_skip_odd_command_names() {
        let stat = "123 (a) b (c) S 1 123 123 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 \
                    1000 10 18446744073709551615";
        assert_eq!(parse_start_ticks(stat), Some(987654));
        assert_eq!(
            parse_btime("cpu 1 2\nbtime 1700000000\nprocesses 5\n"),
            Some(1_700_000_000)
        );
    }

    #[test]
    fn own_process_is_readable() {
        let me = std::process::id();
        assert!(mnt_ns_of(me).is_ok());
        assert!(ppid_of(me).is_some());
        let started = start_time(me).unwrap();
        let age = SystemTime::now()
            .duration_since(started)
            .unwrap_or_default();
        assert!(age < Duration::from_secs(3600), "{age:?}");
    }
}
