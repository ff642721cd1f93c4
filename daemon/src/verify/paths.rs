//! Which files an exec asks the verify stage to check, and under which image paths.
//!
//! Owns the reading of an exec event's names: the filename as the caller passed it, the
//! kernel's cwd, the executed file's own path for magic links (`/proc/self/exe`,
//! `/dev/fd/N`), the interpreter of a `#!` script and the script a shell was given. Pure:
//! where the event cannot name a file for sure (a name the sensor cut, a cwd that did not
//! fit, a script behind a file descriptor) the answer is [`Claim::Unknown`] with the reason
//! and how `/proc` may still tell while the process lives. It must never guess a path: a
//! truncated name judged as if it were whole is a bypass.

use crate::process::absolute;
use crate::sensor::ExecEvent;

/// Programs that take a script path as their first argument (`sh /tmp/x.sh`).
const SCRIPT_RUNNERS: &[&str] = &[
    "sh", "ash", "bash", "dash", "zsh", "ksh", "mksh", "python", "python2", "python3", "perl",
    "ruby", "node", "php", "lua",
];

/// How a path the event could not give may still be learnt from `/proc` while the
/// process lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recovery {
    /// `/proc/PID/exe`: the executed binary itself (checked against the event's inode).
    Exe,
    /// `/proc/PID/cwd` joined with this relative name.
    Cwd { relative: String },
    /// `/proc/PID/cmdline`: argument `index`, joined with the cwd if relative.
    Argument { index: usize },
    /// `/proc/PID/fd/N`: a script handed to the interpreter as `/dev/fd/N`.
    Fd { fd: u32 },
}

/// A file the exec asks to be checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The path inside the container (absolute, without `.` or empty components).
    Known(String),
    /// The event does not name it for sure.
    Unknown {
        /// What the alert shows as the path: the name as far as it is known.
        shown: String,
        reason: String,
        recovery: Recovery,
    },
}

impl Claim {
    pub fn known(&self) -> Option<&str> {
        match self {
            Claim::Known(p) => Some(p),
            Claim::Unknown { .. } => None,
        }
    }

    /// The path for evidence: the known path, or what is known of it.
    pub fn shown(&self) -> &str {
        match self {
            Claim::Known(p) => p,
            Claim::Unknown { shown, .. } => shown,
        }
    }
}

/// What an exec asks to be checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecPaths {
    /// The executed binary: for a `#!` script, its interpreter.
    pub binary: Claim,
    /// The script: a `#!` script, or the file a shell or interpreter was given.
    pub script: Option<ScriptClaim>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptClaim {
    pub claim: Claim,
    /// A `#!` script certainly ran; an argument of `sh` may be no file at all (`sh -c`),
    /// and counts only if it opens.
    pub certain: bool,
}

/// A name the exec used, made absolute with the kernel's cwd when it is relative.
fn resolve(name: &str, exec: &ExecEvent, what: &str) -> Claim {
    if name.starts_with('/') {
        return Claim::Known(absolute(name, None));
    }
    match &exec.cwd {
        Some(cwd) => Claim::Known(absolute(name, Some(cwd))),
        None => Claim::Unknown {
            shown: name.to_string(),
            reason: format!(
                "{what} {name} is relative and the working directory was longer than the sensor keeps"
            ),
            recovery: Recovery::Cwd {
                relative: name.to_string(),
            },
        },
    }
}

/// The file descriptor a `/dev/fd/N` or `/proc/self/fd/N` name opens, if it is one.
fn fd_of(name: &str) -> Option<u32> {
    let rest = name
        .strip_prefix("/dev/fd/")
        .or_else(|| name.strip_prefix("/proc/self/fd/"))
        .or_else(|| name.strip_prefix("/proc/thread-self/fd/"))?;
    rest.parse().ok()
}

fn binary_claim(exec: &ExecEvent) -> Claim {
    if exec.memfd {
        // Fileless: the name is only evidence; the content decides (runc's self-copy).
        return Claim::Known(exec.filename.clone());
    }
    if let Some(interp) = &exec.interpreter {
        if exec.interpreter_truncated {
            return Claim::Unknown {
                shown: interp.clone(),
                reason: format!("the interpreter name {interp}... is longer than the sensor keeps"),
                recovery: Recovery::Exe,
            };
        }
        return resolve(interp, exec, "the interpreter");
    }
    if let Some(exe) = &exec.exe_path {
        return Claim::Known(exe.clone());
    }
    if exec.exe_path_truncated {
        return Claim::Unknown {
            shown: exec.filename.clone(),
            reason: format!(
                "{} is a link to a file whose path is longer than the sensor keeps",
                exec.filename
            ),
            recovery: Recovery::Exe,
        };
    }
    if exec.filename_truncated {
        return Claim::Unknown {
            shown: format!("{}...", exec.filename),
            reason: format!(
                "the executed name is longer than the {} bytes the sensor keeps",
                exec.filename.len()
            ),
            recovery: Recovery::Exe,
        };
    }
    resolve(&exec.filename, exec, "the executed name")
}

/// The argument a shell or interpreter was asked to run (`sh /tmp/x.sh`), if argv names
/// one; `complete` is false when argv was cut inside it. An argument the sensor did not
/// get at all (argv0 alone filled what it keeps, or argv could not be read: the exec has
/// more arguments than the event carries) is `("", false)`: unknown, never "no script".
pub fn script_argument(exec: &ExecEvent) -> Option<(&str, bool)> {
    // Without argv, the executed file's name says whether it is a shell or interpreter.
    let argv0 = exec.argv.first().unwrap_or(&exec.filename);
    let argv0 = argv0.rsplit('/').next().unwrap_or(argv0);
    let runner = SCRIPT_RUNNERS.iter().any(|r| {
        argv0 == *r
            || (argv0.starts_with(r)
                && argv0[r.len()..]
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == '.'))
    });
    if !runner {
        return None;
    }
    let Some(arg) = exec.argv.get(1) else {
        let unseen = exec.argc >= 2 && (exec.argv_truncated || exec.argv.is_empty());
        return unseen.then_some(("", false));
    };
    let arg = Some(arg.as_str()).filter(|a| !a.is_empty() && !a.starts_with('-'))?;
    // The sensor keeps the first bytes of argv: the last argument it kept may be cut.
    let complete = !(exec.argv_truncated && exec.argv.len() == 2);
    Some((arg, complete))
}

fn script_claim(exec: &ExecEvent) -> Option<ScriptClaim> {
    if exec.interpreter.is_some() {
        // A `#!` script: the filename is the script, the binary its interpreter.
        let claim = if let Some(fd) = fd_of(&exec.filename) {
            Claim::Unknown {
                shown: exec.filename.clone(),
                reason: format!(
                    "the script was run through a file descriptor ({})",
                    exec.filename
                ),
                recovery: Recovery::Fd { fd },
            }
        } else if exec.filename_truncated {
            Claim::Unknown {
                shown: format!("{}...", exec.filename),
                reason: "the script's name is longer than the sensor keeps".into(),
                recovery: Recovery::Argument { index: 1 },
            }
        } else {
            resolve(&exec.filename, exec, "the script name")
        };
        return Some(ScriptClaim {
            claim,
            certain: true,
        });
    }
    let (arg, complete) = script_argument(exec)?;
    let claim = if arg.is_empty() {
        Claim::Unknown {
            shown: "argument 1".into(),
            reason: format!(
                "argv of {} reached the daemon without its first argument (cut or unreadable \
                 in the kernel), so the script it may run is unknown",
                exec.filename
            ),
            recovery: Recovery::Argument { index: 1 },
        }
    } else if !complete {
        Claim::Unknown {
            shown: format!("{arg}..."),
            reason: format!(
                "the script argument is cut: argv is longer than the {} bytes the sensor keeps",
                crate::sensor::wire::ARGV_MAX
            ),
            recovery: Recovery::Argument { index: 1 },
        }
    } else {
        resolve(arg, exec, "the script argument")
    };
    Some(ScriptClaim {
        claim,
        certain: false,
    })
}

/// The files an exec asks to be checked. Pure.
pub fn exec_paths(exec: &ExecEvent) -> ExecPaths {
    ExecPaths {
        binary: binary_claim(exec),
        script: script_claim(exec),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(filename: &str, argv: &[&str]) -> ExecEvent {
        ExecEvent {
            filename: filename.into(),
            ..crate::fixtures::exec_event(argv)
        }
    }

    #[test]
    fn script_arguments_of_shells_and_interpreters() {
        let arg = |argv: &[&str]| {
            script_argument(&exec(argv[0], argv)).map(|(a, complete)| {
                assert!(complete);
                a.to_string()
            })
        };
        assert_eq!(arg(&["sh", "/tmp/x.sh"]).as_deref(), Some("/tmp/x.sh"));
        assert_eq!(arg(&["/bin/bash", "x.sh", "a"]).as_deref(), Some("x.sh"));
        assert_eq!(arg(&["python3.11", "run.py"]).as_deref(), Some("run.py"));
        assert_eq!(arg(&["sh", "-c", "echo"]), None);
        assert_eq!(arg(&["ls", "/tmp"]), None);
        assert_eq!(arg(&["shred", "x"]), None);
    }

    #[test]
    fn plain_execs_and_scripts() {
        let p = exec_paths(&exec("/bin/ls", &["ls"]));
        assert_eq!(p.binary, Claim::Known("/bin/ls".into()));
        assert_eq!(p.script, None);

        let mut e = exec("./x.sh", &["/bin/sh", "./x.sh"]);
        e.interpreter = Some("/bin/sh".into());
        e.cwd = Some("/tmp".into());
        let p = exec_paths(&e);
        assert_eq!(p.binary, Claim::Known("/bin/sh".into()));
        let s = p.script.unwrap();
        assert_eq!(s.claim, Claim::Known("/tmp/x.sh".into()));
        assert!(s.certain);

        let mut e = exec("/bin/sh", &["sh", "x.sh"]);
        e.cwd = Some("/app".into());
        let s = exec_paths(&e).script.unwrap();
        assert_eq!(s.claim, Claim::Known("/app/x.sh".into()));
        assert!(!s.certain);
    }

    #[test]
    fn long_names_are_whole_and_normalised() {
        // The bypass: 255 bytes of `//./././...` before a dropped script.
        let p = format!("//{}bin/busyboxX/evil.sh", "./".repeat(121));
        assert!(p.len() > 255);
        let mut e = exec(&p, &["/bin/sh", &p]);
        e.interpreter = Some("/bin/sh".into());
        let s = exec_paths(&e).script.unwrap();
        assert_eq!(s.claim, Claim::Known("/bin/busyboxX/evil.sh".into()));
    }

    #[test]
    fn cut_names_are_never_judged_as_whole() {
        let mut e = exec("/bin/busybox", &["/bin/busybox"]);
        e.filename_truncated = true;
        assert!(matches!(
            exec_paths(&e).binary,
            Claim::Unknown {
                recovery: Recovery::Exe,
                ..
            }
        ));

        // `sh <long path>` with argv cut inside the path.
        let mut e = exec("/bin/sh", &["sh", "/bin/busybox"]);
        e.argv_truncated = true;
        let s = exec_paths(&e).script.unwrap();
        assert!(matches!(
            s.claim,
            Claim::Unknown {
                recovery: Recovery::Argument { index: 1 },
                ..
            }
        ));
        // argv0 alone filled what the sensor keeps, or argv could not be read: the
        // argument is unknown (recovered from /proc, or unverifiable), not absent.
        let mut e = exec("/bin/sh", &["/././././bin/sh"]);
        e.argv_truncated = true;
        e.argc = 2;
        assert!(matches!(
            exec_paths(&e).script.unwrap().claim,
            Claim::Unknown {
                recovery: Recovery::Argument { index: 1 },
                ..
            }
        ));
        let mut e = exec("/bin/sh", &[]);
        e.argc = 2;
        assert!(matches!(
            exec_paths(&e).script.unwrap().claim,
            Claim::Unknown { .. }
        ));
        // A shell with no argument at all is no script.
        let mut e = exec("/bin/sh", &[]);
        e.argc = 1;
        assert!(exec_paths(&e).script.is_none());
        // Cut after a complete argument: the argument itself is whole.
        let mut e = exec("/bin/sh", &["sh", "/tmp/x.sh", "arg"]);
        e.argv_truncated = true;
        assert_eq!(
            exec_paths(&e).script.unwrap().claim,
            Claim::Known("/tmp/x.sh".into())
        );

        // A relative name without the cwd.
        let mut e = exec("./tool", &["./tool"]);
        e.cwd = None;
        e.cwd_truncated = true;
        assert!(matches!(
            exec_paths(&e).binary,
            Claim::Unknown {
                recovery: Recovery::Cwd { .. },
                ..
            }
        ));
    }

    #[test]
    fn magic_links_are_judged_by_the_file_they_point_to() {
        let mut e = exec("/proc/self/exe", &["sh", "-c", "true"]);
        e.exe_path = Some("/bin/busybox".into());
        assert_eq!(exec_paths(&e).binary, Claim::Known("/bin/busybox".into()));
        let mut e = exec("/proc/self/exe", &["x"]);
        e.exe_path_truncated = true;
        assert!(matches!(exec_paths(&e).binary, Claim::Unknown { .. }));
        // A memfd stays a memfd, whatever its name.
        let mut e = exec("/dev/fd/3", &["x"]);
        e.memfd = true;
        e.exe_path = Some("/memfd:x (deleted)".into());
        assert_eq!(exec_paths(&e).binary, Claim::Known("/dev/fd/3".into()));
        // A script behind a descriptor.
        let mut e = exec("/dev/fd/4", &["/bin/sh", "/dev/fd/4"]);
        e.interpreter = Some("/bin/sh".into());
        assert!(matches!(
            exec_paths(&e).script.unwrap().claim,
            Claim::Unknown {
                recovery: Recovery::Fd { fd: 4 },
                ..
            }
        ));
    }
}
