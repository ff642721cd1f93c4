//! What the daemon reads about live processes from `/proc`: mount namespace, parent,
//! executable, working directory, arguments, start time.
//!
//! Owns the reading and parsing of `/proc/<pid>/{ns/mnt,stat,exe,cwd,cmdline}` and
//! `/proc/stat`, for every stage. Every read may fail because the process is already gone;
//! callers treat that as "unknown", never as an error worth stopping for. Opening a
//! process's files (its exe, its root) is not here: that is `verify::target`'s, which
//! checks what it opens. A leaf: it depends on no other module of the daemon.

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, SystemTime};

/// What `/proc/PID/exe` and `/proc/PID/fd/N` append to the path of a deleted file.
pub const DELETED_SUFFIX: &str = " (deleted)";

/// How far up the parent chain the pid fall-back looks. Container processes sit a few
/// levels below their task's init; deeper trees still resolve by mount namespace.
pub const MAX_ANCESTORS: usize = 16;

/// Inode of `/proc/<pid>/ns/mnt`: the number the sensor reports as `mnt_ns` (the kernel's
/// namespace inums fit in 32 bits).
pub fn mnt_ns_of(pid: u32) -> std::io::Result<u32> {
    std::fs::metadata(format!("/proc/{pid}/ns/mnt")).map(|m| m.ino() as u32)
}

/// The parent of a live process, from `/proc/PID/stat` (one line; the kernel takes
/// longer to generate `status`: 23 us vs 13 us per read on the project VM).
pub fn ppid_of(pid: u32) -> Option<u32> {
    ppid_from_stat(&std::fs::read(format!("/proc/{pid}/stat")).ok()?)
}

/// The ppid field of a `/proc/PID/stat` line: the second field after the comm, which is
/// in parentheses and may itself contain spaces and parentheses (hence the last `)`).
pub fn ppid_from_stat(stat: &[u8]) -> Option<u32> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    rest.split_ascii_whitespace().nth(1)?.parse().ok()
}

/// The path of a live process's executable inside its container (`/proc/PID/exe`'s
/// target), without the " (deleted)" the kernel appends.
pub fn exe_path(pid: u32) -> Option<String> {
    let target = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let s = target.to_string_lossy();
    Some(s.strip_suffix(DELETED_SUFFIX).unwrap_or(&s).to_string())
}

/// The inode number of a live process's executable (`stat` through `/proc/PID/exe`; on
/// overlayfs the overlay keeps the real file's inode number).
pub fn exe_ino(pid: u32) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/exe"))
        .ok()
        .map(|m| m.ino())
}

/// The working directory of a live process, inside its container.
pub fn cwd(pid: u32) -> Option<String> {
    let target = std::fs::read_link(format!("/proc/{pid}/cwd")).ok()?;
    Some(target.to_string_lossy().into_owned())
}

/// Argument `index` of a live process, from `/proc/PID/cmdline` (whole, however long).
pub fn argument(pid: u32, index: usize) -> Option<String> {
    argv(pid)?.into_iter().nth(index).filter(|a| !a.is_empty())
}

/// Every argument of a live process, from `/proc/PID/cmdline`.
pub fn argv(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let raw = raw.strip_suffix(&[0]).unwrap_or(&raw);
    Some(
        raw.split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

/// One line of `/proc/PID/maps`: the address range, whether it is executable, the inode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapsLine {
    /// `start-end` as `/proc/PID/map_files/` names it.
    pub range: String,
    pub exec: bool,
    pub ino: u64,
}

/// The file mappings of a maps file (anonymous ones, inode 0, left out).
pub fn parse_maps(maps: &str) -> Vec<MapsLine> {
    maps.lines()
        .filter_map(|l| {
            let mut f = l.split_ascii_whitespace();
            let range = f.next()?;
            let perms = f.next()?;
            let ino: u64 = f.nth(2)?.parse().ok()?;
            (ino != 0).then(|| MapsLine {
                range: range.to_string(),
                exec: perms.as_bytes().get(2) == Some(&b'x'),
                ino,
            })
        })
        .collect()
}

/// The file mappings of a live process; `None` when it is gone.
pub fn maps(pid: u32) -> Option<Vec<MapsLine>> {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .ok()
        .map(|m| parse_maps(&m))
}

/// Every live process's pid, ascending.
pub fn pids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    pids
}

/// Live processes in mount namespace `mnt_ns`, at most `max`, from a scan of `/proc`.
pub fn pids_in_namespace(mnt_ns: u32, max: usize) -> Vec<u32> {
    pids()
        .into_iter()
        .filter(|&pid| mnt_ns_of(pid).ok() == Some(mnt_ns))
        .take(max)
        .collect()
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
    fn maps_lines_give_range_exec_and_inode() {
        let m = "55d0-55d2 r--p 00000000 00:4d 1311 /usr/bin/ls\n\
                 55d2-55d8 r-xp 00002000 00:4d 1311 /usr/bin/ls\n\
                 7f00-7f01 rw-p 00000000 00:00 0 \n\
                 7f10-7f20 r-xs 00000000 00:01 2048 /memfd:x (deleted)\n";
        let lines = parse_maps(m);
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[1],
            MapsLine {
                range: "55d2-55d8".into(),
                exec: true,
                ino: 1311
            }
        );
        assert!(!lines[0].exec);
        assert_eq!(lines[2].ino, 2048);
    }

    #[test]
    fn ppid_is_read_past_any_comm() {
        assert_eq!(ppid_from_stat(b"42 (sh) S 7 42 42 0 -1"), Some(7));
        assert_eq!(ppid_from_stat(b"42 (a) b) (c) R 9 1 1"), Some(9));
        assert_eq!(ppid_from_stat(b"42 (x"), None);
        // SAFETY: getppid(2) has no preconditions.
        assert_eq!(
            ppid_of(std::process::id()),
            Some(unsafe { libc::getppid() } as u32)
        );
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
