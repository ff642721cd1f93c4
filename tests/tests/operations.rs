//! Operations: the systemd unit's hardening score, the Debian package's layout and
//! `make install`. The unit running under real systemd on Debian's kernels is proven by
//! `make vm-test` (tests/vm), which installs the very `.deb` these tests read.
//!
//! The `.deb` is built by `make deb` (a prerequisite of `make test`); a test that finds
//! none fails with what to run rather than passing on nothing.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the repository")
        .to_path_buf()
}

fn output(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The score systemd gives the unit offline (no running systemd needed), the line it
/// prints last: `→ Overall exposure level for layerguard.service: 3.6 OK 🙂`.
fn exposure(unit: &Path) -> (f64, String) {
    let (_, stdout, stderr) = output(
        Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(unit),
    );
    let line = stdout
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no score from systemd-analyze:\n{stdout}\n{stderr}"));
    let score = line
        .rsplit(": ")
        .next()
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("unparsable score line {line:?}"));
    (score, stderr)
}

#[test]
fn unit_exposure_is_at_most_4() {
    let unit = repo().join("systemd/layerguard.service");
    let (score, stderr) = exposure(&unit);
    // A misspelt directive is ignored with a warning and would score as if absent; every
    // line of the unit must be one systemd knows.
    assert!(
        !stderr.contains("Unknown") && !stderr.contains("Failed to parse"),
        "systemd-analyze complains about the unit:\n{stderr}"
    );
    assert!(
        score <= 4.0,
        "exposure {score} > 4.0 for {}",
        unit.display()
    );
}

#[test]
fn the_score_reflects_the_hardening_it_claims() {
    // The test above would pass on a parser that always read 0: the unit without its
    // hardening block must score worse than 4.
    let text = fs::read_to_string(repo().join("systemd/layerguard.service")).unwrap();
    let cut = text
        .find("# --- Hardening.")
        .expect("the unit has a hardening block");
    let install = text.find("[Install]").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bare = dir.path().join("layerguard.service");
    fs::write(&bare, format!("{}{}", &text[..cut], &text[install..])).unwrap();
    let (score, _) = exposure(&bare);
    assert!(score > 4.0, "unhardened unit scored {score}");
}

fn built_deb() -> PathBuf {
    let dir = repo().join("target/debian");
    let version = env!("CARGO_PKG_VERSION");
    let found = fs::read_dir(&dir)
        .ok()
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with(&format!("layerguard_{version}_")) && n.ends_with(".deb")
            })
        });
    found.unwrap_or_else(|| {
        panic!(
            "no layerguard_{version}_*.deb in {}: run `make deb`",
            dir.display()
        )
    })
}

#[test]
fn the_deb_has_the_layout_and_scripts_the_readme_describes() {
    let deb = built_deb();
    let (ok, listing, stderr) = output(Command::new("dpkg-deb").arg("-c").arg(&deb));
    assert!(ok, "dpkg-deb -c: {stderr}");
    for path in [
        "./usr/bin/layerguard",
        "./lib/systemd/system/layerguard.service",
        "./etc/layerguard/layerguard.toml",
        "./usr/share/doc/layerguard/README.md",
    ] {
        assert!(
            listing.lines().any(|l| l.ends_with(path)),
            "{path} missing from {}:\n{listing}",
            deb.display()
        );
    }
    assert!(
        listing.lines().all(|l| l.contains(" root/root ")),
        "files not owned by root:\n{listing}"
    );

    let dir = tempfile::tempdir().unwrap();
    let (ok, _, stderr) = output(Command::new("dpkg-deb").arg("-R").arg(&deb).arg(dir.path()));
    assert!(ok, "dpkg-deb -R: {stderr}");
    let root = dir.path();
    let read = |p: &str| fs::read_to_string(root.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    assert_eq!(
        read("DEBIAN/conffiles").trim(),
        "/etc/layerguard/layerguard.toml"
    );
    // The packaged unit and config are the repository's, byte for byte.
    assert_eq!(
        read("lib/systemd/system/layerguard.service"),
        fs::read_to_string(repo().join("systemd/layerguard.service")).unwrap()
    );
    assert_eq!(
        read("etc/layerguard/layerguard.toml"),
        fs::read_to_string(repo().join("packaging/layerguard.toml")).unwrap()
    );
    let control = read("DEBIAN/control");
    assert!(
        control.contains(&format!("Version: {}", env!("CARGO_PKG_VERSION"))),
        "{control}"
    );
    assert!(control.contains("Depends: libc6 (>= "), "{control}");
    // The service stays stopped until the admin enables it: no script enables or starts
    // it on a first install.
    let postinst = read("DEBIAN/postinst");
    let commands: Vec<&str> = postinst
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();
    assert!(
        !commands
            .iter()
            .any(|l| l.contains("systemctl enable") || l.contains("deb-systemd-helper enable")),
        "{postinst}"
    );
    assert!(
        postinst.contains("layerguard check"),
        "postinst runs the preflight"
    );
    for script in ["postinst", "prerm", "postrm"] {
        let (ok, _, stderr) = output(
            Command::new("sh")
                .arg("-n")
                .arg(root.join("DEBIAN").join(script)),
        );
        assert!(ok, "{script} is not valid sh: {stderr}");
    }
    // The binary in the package is the one that runs: it answers --version.
    let (ok, version, _) = output(Command::new(root.join("usr/bin/layerguard")).arg("--version"));
    assert!(
        ok && version.contains(env!("CARGO_PKG_VERSION")),
        "{version}"
    );
}

#[test]
fn make_install_stages_binary_unit_and_config_and_keeps_an_edited_config() {
    let dest = tempfile::tempdir().unwrap();
    let make = |target: &str| {
        output(
            Command::new("make")
                .arg("-C")
                .arg(repo())
                // The release binary `make deb` built; no cargo build inside a test.
                .args(["-o", "release"])
                .arg(target)
                .arg(format!("DESTDIR={}", dest.path().display()))
                .arg("PREFIX=/usr/local"),
        )
    };
    let (ok, stdout, stderr) = make("install");
    assert!(ok, "make install:\n{stdout}\n{stderr}");
    let d = dest.path();
    assert!(d.join("usr/local/bin/layerguard").is_file());
    let unit = fs::read_to_string(d.join("etc/systemd/system/layerguard.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/layerguard run"),
        "the unit runs the installed binary:\n{unit}"
    );
    assert!(!unit.contains("/usr/bin/layerguard"), "{unit}");
    // The staged unit keeps the hardening the score test checks.
    let (score, _) = exposure(&d.join("etc/systemd/system/layerguard.service"));
    assert!(score <= 4.0, "installed unit scored {score}");

    let config = d.join("etc/layerguard/layerguard.toml");
    fs::write(&config, "log_format = \"text\"\n").unwrap();
    let (ok, stdout, stderr) = make("install");
    assert!(ok, "second make install:\n{stdout}\n{stderr}");
    assert_eq!(
        fs::read_to_string(&config).unwrap(),
        "log_format = \"text\"\n"
    );
    assert!(stdout.contains("keeping"), "{stdout}");

    let (ok, stdout, stderr) = make("uninstall");
    assert!(ok, "make uninstall:\n{stdout}\n{stderr}");
    assert!(!d.join("usr/local/bin/layerguard").exists());
    assert!(!d.join("etc/systemd/system/layerguard.service").exists());
    assert!(config.exists(), "uninstall keeps the config");
}
