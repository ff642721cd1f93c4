//! Parsing, overrides, validation and error locations of the whole configuration.

mod general {
    use crate::config::*;
    use std::path::Path;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("/etc/lg.toml"))
    }

    #[test]
    fn empty_file_means_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.sensor, SensorConfig::default());
        assert_eq!(c.log_format, LogFormat::Json);
    }

    #[test]
    fn the_readme_example_parses_and_shows_the_sensor_defaults() {
        let readme = include_str!("../../../README.md");
        let start = readme
            .find("```toml\nnode_name")
            .expect("README.md has the config example");
        let body = &readme[start + "```toml\n".len()..];
        let example = &body[..body.find("```").expect("the example ends")];
        let c = parse(example).unwrap_or_else(|e| panic!("README.md's config example: {e}"));
        assert_eq!(c.sensor, SensorConfig::default());
    }

    /// The file the package installs as /etc/layerguard/layerguard.toml: every key commented
    /// at its default, so it must mean the defaults, plus the one line the package sets.
    #[test]
    fn the_packaged_config_is_the_defaults_with_the_socket_group() {
        let text = include_str!("../../../packaging/layerguard.toml");
        let c = parse(text).unwrap_or_else(|e| panic!("packaging/layerguard.toml: {e}"));
        let mut expected = Config::default();
        expected.api.socket_group = Some("layerguard".into());
        assert_eq!(c, expected);
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let err = parse("log_format = \"text\"\n\n[sensor]\nmonitor_hots = true\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("line 4"), "{msg}");
        assert!(msg.contains("monitor_hots"), "{msg}");
        assert!(msg.contains("/etc/lg.toml"), "{msg}");
        assert!(!msg.contains('\n'), "one line: {msg}");
    }

    #[test]
    fn bad_value_names_key_and_line() {
        let err = parse("[sensor]\ndrain_interval_ms = \"fast\"\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("line 2"), "{msg}");
        assert!(msg.contains("sensor.drain_interval_ms"), "{msg}");
        let err = parse("log_format = \"xml\"\n").unwrap_err().to_string();
        assert!(
            err.contains("line 1") && err.contains("log_format"),
            "{err}"
        );
    }

    #[test]
    fn semantic_errors_point_at_the_file_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "# x\n[sensor]\nring_buffer_bytes = 5000\n").unwrap();
        let err = Config::load(&path, true, &[]).unwrap_err().to_string();
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("sensor.ring_buffer_bytes"), "{err}");
        assert!(err.contains("power of two"), "{err}");
    }

    #[test]
    fn overrides_apply_and_errors_name_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.toml");
        let c = Config::load(
            &missing,
            false,
            &[
                Override::parse_set("sensor.monitor_host=true").unwrap(),
                Override::new("--state-dir", "state_dir", "/tmp/x"),
            ],
        )
        .unwrap();
        assert!(c.sensor.monitor_host);
        assert_eq!(c.state_dir, PathBuf::from("/tmp/x"));

        let err = Config::load(
            &missing,
            false,
            &[Override::parse_set("sensor.nope=1").unwrap()],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("--set sensor.nope=1"), "{err}");
        let err = Config::load(
            &missing,
            false,
            &[Override::parse_set("sensor.drain_interval_ms=0").unwrap()],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("--set sensor.drain_interval_ms=0"), "{err}");
    }

    #[test]
    fn containers_section_parses_and_defaults() {
        let c = parse("[containers]\npending_timeout_ms = 250\n").unwrap();
        assert_eq!(c.containers.pending_timeout(), Duration::from_millis(250));
        assert_eq!(
            c.containers.exited_grace_ms,
            ContainersConfig::default().exited_grace_ms
        );
        assert_eq!(parse("").unwrap().containers, ContainersConfig::default());
    }

    #[test]
    fn containers_unknown_key_names_key_and_line() {
        let err = parse("[containers]\npending_timeout = 5\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 2") && err.contains("pending_timeout"),
            "{err}"
        );
    }

    #[test]
    fn containers_semantic_errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[containers]\nreconnect_min_ms = 500\nreconnect_max_ms = 100\n",
        )
        .unwrap();
        let err = Config::load(&path, true, &[]).unwrap_err().to_string();
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("containers.reconnect_max_ms"), "{err}");

        let missing = dir.path().join("none.toml");
        for (set, key) in [
            (
                "containers.pending_timeout_ms=0",
                "containers.pending_timeout_ms",
            ),
            (
                "containers.pending_capacity=0",
                "containers.pending_capacity",
            ),
            (
                "containers.exited_grace_ms=99999999",
                "containers.exited_grace_ms",
            ),
            (
                "containers.stats_interval_ms=0",
                "containers.stats_interval_ms",
            ),
        ] {
            let err = Config::load(&missing, false, &[Override::parse_set(set).unwrap()])
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!("--set {set}")) && err.contains(key),
                "{err}"
            );
        }
        let c = Config::load(
            &missing,
            false,
            &[Override::parse_set("containers.exited_grace_ms=0").unwrap()],
        )
        .unwrap();
        assert_eq!(c.containers.exited_grace(), Duration::ZERO);
    }

    #[test]
    fn files_errors_name_the_key_and_defaults_cover_the_sensitive_paths() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.toml");
        for (set, key) in [
            ("files.settle_ms=5000", "files.settle_ms"),
            ("files.max_wait_ms=0", "files.max_wait_ms"),
        ] {
            let err = Config::load(&missing, false, &[Override::parse_set(set).unwrap()])
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!("--set {set}")) && err.contains(key),
                "{err}"
            );
        }
        let path = dir.path().join("f.toml");
        std::fs::write(&path, "[files]\nprotect = [\"app/config\"]\n").unwrap();
        let err = Config::load(&path, true, &[]).unwrap_err().to_string();
        assert!(
            err.contains("files.protect[0]") && err.contains("absolute"),
            "{err}"
        );
        let c = Config::load(&missing, false, &[]).unwrap();
        for p in [
            "/etc/ld.so.preload",
            "/etc/shadow",
            "/etc/sudoers.d/*",
            "/root/.ssh/*",
        ] {
            assert!(c.files.sensitive.iter().any(|s| s == p), "{p}");
        }
        assert!(c.files.enabled);
    }

    #[test]
    fn errors_in_tables_and_arrays_of_tables_name_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[verify]\nlog_execs = true\n\n[[verify.allow]]\nnamespaces = [\"ci\"]\n\n\
             [[verify.allow]]\npaths = [\"/tmp/*\"]\n",
        )
        .unwrap();
        let err = Config::load(&path, true, &[]).unwrap_err().to_string();
        assert!(
            err.contains("line 7") && err.contains("verify.allow[1]"),
            "{err}"
        );
        std::fs::write(
            &path,
            "[api]\nsocket_mode = 0o660\ntcp_listen = \"0.0.0.0:5\"\n",
        )
        .unwrap();
        let err = Config::load(&path, true, &[]).unwrap_err().to_string();
        assert!(
            err.contains("line 3") && err.contains("api.tls_cert"),
            "{err}"
        );
    }

    #[test]
    fn syntax_errors_are_one_line() {
        let err = parse("[sensor\nx = 1\n").unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn explicit_missing_file_is_an_error() {
        let err = Config::load(Path::new("/nonexistent/lg.toml"), true, &[]).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }));
    }
}

mod api_journal {
    use crate::config::*;
    use std::path::Path;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("/etc/lg.toml"))
    }

    fn load(text: &str) -> Result<Config, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(&path, true, &[]).map_err(|e| e.to_string())
    }

    #[test]
    fn api_and_journal_default_to_a_local_socket_and_an_on_disk_journal() {
        let c = parse("").unwrap();
        assert_eq!(c.api, ApiConfig::default());
        assert_eq!(c.api.socket, PathBuf::from(DEFAULT_API_SOCKET));
        assert_eq!(c.api.socket_mode, 0o660);
        assert!(c.api.tcp_listen.is_none(), "no TCP unless configured");
        assert_eq!(c.journal, JournalConfig::default());
        assert_eq!(c.journal.fsync, FsyncMode::Batched);
        assert!(c.api.validate().is_ok() && c.journal.validate().is_ok());
    }

    #[test]
    fn api_section_parses_octal_modes_roles_and_tls() {
        let c = load(
            "[api]\nsocket_mode = 0o640\nsocket_group = \"layerguard\"\n\
             tcp_listen = \"127.0.0.1:50051\"\ntls_cert = \"/etc/lg/server.crt\"\n\
             tls_key = \"/etc/lg/server.key\"\ntls_client_ca = \"/etc/lg/ca.crt\"\n\
             [api.roles]\n\"siem.example\" = \"viewer\"\n\"spiffe://c/ns/sec/sa/ir\" = \"responder\"\n",
        )
        .unwrap();
        assert_eq!(c.api.socket_mode, 0o640);
        assert_eq!(c.api.socket_group.as_deref(), Some("layerguard"));
        assert_eq!(c.api.tcp_listen.unwrap().port(), 50051);
        assert_eq!(c.api.roles["siem.example"], Role::Viewer);
        assert_eq!(c.api.roles["spiffe://c/ns/sec/sa/ir"], Role::Responder);
        assert!(Role::Responder > Role::Viewer);
    }

    #[test]
    fn tcp_without_tls_is_refused_naming_the_missing_key() {
        let err = load("[api]\ntcp_listen = \"0.0.0.0:50051\"\n").unwrap_err();
        assert!(err.contains("api.tls_cert"), "{err}");
        assert!(err.contains("mutual TLS"), "{err}");
        let err =
            load("[api]\ntcp_listen = \"0.0.0.0:50051\"\ntls_cert = \"/a\"\ntls_key = \"/b\"\n")
                .unwrap_err();
        assert!(err.contains("api.tls_client_ca"), "{err}");
    }

    #[test]
    fn api_semantic_errors_name_key_and_line() {
        let err = load("[api]\n\nsocket_mode = 0o1777\n").unwrap_err();
        assert!(
            err.contains("line 3") && err.contains("api.socket_mode"),
            "{err}"
        );
        let err = load("[api]\nsocket_mode = 0o060\n").unwrap_err();
        assert!(err.contains("owner"), "{err}");
        let err = load("[api]\nsocket = \"relative.sock\"\n").unwrap_err();
        assert!(
            err.contains("api.socket") && err.contains("absolute"),
            "{err}"
        );
        let err = load("[api]\nsubscriber_queue = 1\n").unwrap_err();
        assert!(err.contains("api.subscriber_queue"), "{err}");
        let err = load("[api]\nmax_subscribers = 0\n").unwrap_err();
        assert!(err.contains("api.max_subscribers"), "{err}");
        let err = load("[api.roles]\n\"x\" = \"admin\"\n").unwrap_err();
        assert!(err.contains("line 2") && err.contains("admin"), "{err}");
        let err = load("[api]\ntcp_listen = \"nonsense\"\n").unwrap_err();
        assert!(
            err.contains("line 2") && err.contains("tcp_listen"),
            "{err}"
        );
    }

    #[test]
    fn journal_section_parses_and_validates() {
        let c = load(
            "[journal]\nsegment_bytes = 4194304\nmax_bytes = 67108864\nmax_age_hours = 24\n\
             fsync = \"always\"\n",
        )
        .unwrap();
        assert_eq!(c.journal.segment_bytes, 4 << 20);
        assert_eq!(c.journal.max_age(), Duration::from_secs(86_400));
        assert_eq!(c.journal.fsync, FsyncMode::Always);
        let err = load("[journal]\nsegment_bytes = 1024\n").unwrap_err();
        assert!(err.contains("journal.segment_bytes"), "{err}");
        let err = load("[journal]\nmax_bytes = 1048576\n").unwrap_err();
        assert!(
            err.contains("journal.max_bytes") && err.contains("twice"),
            "{err}"
        );
        let err = load("[journal]\nmax_age_hours = 0\n").unwrap_err();
        assert!(err.contains("journal.max_age_hours"), "{err}");
        let err = load("[journal]\nfsync = \"sometimes\"\n").unwrap_err();
        assert!(err.contains("line 2") && err.contains("fsync"), "{err}");
        let err = load("[journal]\nfsync_interval_ms = 0\n").unwrap_err();
        assert!(err.contains("journal.fsync_interval_ms"), "{err}");
    }

    #[test]
    fn api_and_journal_keys_can_be_set_from_flags() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.toml");
        let c = Config::load(
            &missing,
            false,
            &[
                Override::parse_set("api.socket=/tmp/lg.sock").unwrap(),
                Override::parse_set("journal.enabled=false").unwrap(),
            ],
        )
        .unwrap();
        assert_eq!(c.api.socket, PathBuf::from("/tmp/lg.sock"));
        assert!(!c.journal.enabled);
        let err = Config::load(
            &missing,
            false,
            &[Override::parse_set("api.subscriber_queue=2").unwrap()],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("--set api.subscriber_queue=2"), "{err}");
    }
}
