//! The pipeline's one time base: CLOCK_MONOTONIC in nanoseconds, the clock the sensor
//! stamps events with (`ktime_ns`, from `bpf_ktime_get_ns`).
//!
//! Owns reading that clock and converting wall-clock timestamps (containerd's, alerts')
//! to and from it, so that "did this event happen before that task exited?" is one
//! comparison. Pure parts of the stages take times as arguments and never call [`now`]
//! themselves. A leaf: it depends on no other module of the daemon.

use std::time::{Duration, SystemTime};

/// Nanoseconds of CLOCK_MONOTONIC.
pub type MonoNs = u64;

fn read(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; both clocks always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

pub fn now() -> MonoNs {
    read(libc::CLOCK_MONOTONIC).as_nanos() as MonoNs
}

/// A wall-clock time (containerd's `exited_at`) on the monotonic clock, by the current
/// offset between the two. Clock slewing makes this off by micro-, not milliseconds.
pub fn from_wall(t: SystemTime) -> MonoNs {
    let mono = read(libc::CLOCK_MONOTONIC).as_nanos() as i128;
    let wall = read(libc::CLOCK_REALTIME).as_nanos() as i128;
    let at = match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(_) => 0,
    };
    (at - wall + mono).max(0) as MonoNs
}

/// The other way: a monotonic time (a sensor event's) on the wall clock.
pub fn to_wall(at: MonoNs) -> SystemTime {
    let ago = Duration::from_nanos(now().saturating_sub(at));
    SystemTime::now()
        .checked_sub(ago)
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

pub fn nanos(d: Duration) -> MonoNs {
    d.as_nanos().min(u128::from(u64::MAX)) as MonoNs
}

/// The tokio instant at monotonic time `at` (both count CLOCK_MONOTONIC on Linux, but
/// neither exposes the raw value, so go through "now").
pub fn to_instant(at: MonoNs) -> tokio::time::Instant {
    let now_ns = now();
    let now = tokio::time::Instant::now();
    if at >= now_ns {
        now + Duration::from_nanos(at - now_ns)
    } else {
        now.checked_sub(Duration::from_nanos(now_ns - at))
            .unwrap_or(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_times_map_onto_the_monotonic_clock() {
        let before = now();
        let converted = from_wall(SystemTime::now());
        let after = now();
        // Generous: two clock reads apart, on a loaded machine.
        assert!(converted + 50_000_000 >= before && converted <= after + 50_000_000);
        let earlier = from_wall(SystemTime::now() - Duration::from_secs(2));
        assert!(
            converted - earlier >= 1_900_000_000,
            "{converted} {earlier}"
        );
    }
}
