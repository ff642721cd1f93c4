//! Image signatures at run time, end to end: the real daemon judging, offline, the image of
//! every real container against keys in the operator's `[trust]` section, with signatures
//! in real cosign formats (openssl keys and signatures in cosign's `.sig` image imported
//! into containerd; Sigstore v0.3 bundles made by npm `@sigstore/sign` and accepted by
//! `@sigstore/verify`), in containerd's content store and in a signature directory.
//!
//! User story: an operator signs production images with cosign; a container whose image
//! is unsigned, signed by someone else, tampered with, or signed by a revoked or expired
//! key is reported at its first exec, with what was found and which keys were tried; a
//! key is added without a restart.

use std::path::Path;
use std::time::{Duration, Instant};

use layerguard_tests::container::{unique_id, Container};
use layerguard_tests::cosign::{self, Artifact, Key};
use layerguard_tests::node::TestNode;
use layerguard_tests::oci::busybox_image;
use serde_json::Value;

const NS: &str = "lg-trust";

/// The `[trust]` section; `with_new` adds the key `new` and lets the policy accept it.
fn trust_section(dir: &Path, with_new: bool) -> String {
    let key = |id: &str, extra: &str| {
        format!(
            "[[trust.keys]]\nid = \"{id}\"\npublic_key = \"{}\"\n{extra}\n",
            dir.join(format!("{id}.pub")).display()
        )
    };
    let mut text = format!(
        "[trust]\nsignature_dirs = [\"{}\"]\nallow_no_tlog = true\n\n",
        dir.join("signatures").display()
    );
    text += &key("release", "status = \"active\"");
    text += &key("second", "");
    text += &key("old", "status = \"revoked\"");
    text += &key(
        "expired",
        "not_before = \"2020-01-01T00:00:00Z\"\nnot_after = \"2021-01-01T00:00:00Z\"",
    );
    let mut keys = "\"release\", \"second\", \"old\", \"expired\"".to_string();
    if with_new {
        text += &key("new", "");
        keys += ", \"new\"";
    }
    text += &format!(
        "[[trust.policy]]\nimages = [\"layerguard.test/trust/**\"]\nkeys = [{keys}]\nmode = \"enforce\"\n\n\
         [[trust.policy]]\nimages = [\"layerguard.test/audit/*\"]\nkeys = [\"release\"]\nmode = \"audit\"\n"
    );
    text
}

struct Setup {
    node: TestNode,
    dir: tempfile::TempDir,
    config: std::path::PathBuf,
    release: Key,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("signatures")).unwrap();
    let release = Key::generate(dir.path(), "release").unwrap();
    for name in ["second", "old", "expired", "other", "new"] {
        Key::generate(dir.path(), name).unwrap();
    }
    let config = dir.path().join("layerguard.toml");
    std::fs::write(&config, trust_section(dir.path(), false)).unwrap();
    let node = TestNode::builder(NS)
        .args(&["--config", config.to_str().unwrap()])
        .build();
    Setup {
        node,
        dir,
        config,
        release,
    }
}

impl Setup {
    fn key(&self, name: &str) -> Key {
        Key {
            private: self.dir.path().join(format!("{name}.key")),
            public: self.dir.path().join(format!("{name}.pub")),
        }
    }

    /// A distinct busybox image named `reference` (its label makes its digest its own).
    fn image(&self, reference: &str) -> layerguard_tests::oci::BuiltImage {
        self.node.import(
            busybox_image(reference)
                .unwrap()
                .label("test.image", reference),
            NS,
        )
    }

    /// cosign's `.sig` image for `digest` in `repository`, its payload naming `names` and
    /// signed by `key`; `flip` damages one byte of the signature.
    fn cosign_sign(&self, repository: &str, digest: &str, names: &str, key: &Key, flip: bool) {
        let payload = cosign::simple_signing_payload(repository, names);
        let mut signature = key.sign(&payload).unwrap();
        if flip {
            let at = signature.len() - 5;
            signature[at] ^= 0x01;
        }
        Artifact::cosign_sig(repository, digest, payload, &cosign::base64(&signature))
            .import(&self.node.containerd, NS)
            .unwrap();
    }

    fn container(&self, image: &layerguard_tests::oci::BuiltImage) -> Container {
        Container::run_detached(
            &self.node.containerd,
            NS,
            &image.reference,
            &unique_id("t"),
            &["sleep", "600"],
            &[],
        )
        .expect("run container")
    }

    /// The container's signature state once the daemon judged it (`layerguard containers`).
    fn signature_of(&self, c: &Container) -> Value {
        let start = Instant::now();
        loop {
            let listed = self.node.containers();
            if let Some(mine) = listed
                .into_iter()
                .find(|x| x["id"] == c.id() && !x["signature"].is_null())
            {
                return mine;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{} never got a signature state:\n{}",
                c.id(),
                self.node.daemon().dump_string(30)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn signature_alerts(&self, c: &Container) -> Vec<Value> {
        self.node
            .alerts_for(c)
            .into_iter()
            .filter(|a| a["kind"].as_str().unwrap().starts_with("image_"))
            .collect()
    }

    /// Asserts the container's image is `signed` by `key` and raised no signature alert.
    fn assert_signed(&self, c: &Container, key: &str) {
        let listed = self.signature_of(c);
        assert_eq!(listed["signature"], "signed", "{listed}");
        assert_eq!(listed["signature_key"], key, "{listed}");
        let alerts = self.signature_alerts(c);
        assert!(alerts.is_empty(), "a signed image alerted: {alerts:?}");
    }

    /// Waits for the container's `kind` alert and checks the evidence every one carries.
    fn alert(&self, c: &Container, image: &layerguard_tests::oci::BuiltImage, kind: &str) -> Value {
        let a = self.node.wait_alert(c, |a| a["kind"] == kind);
        let sig = &a["evidence"]["signature"];
        assert_eq!(sig["image"], image.reference.as_str(), "{a}");
        assert!(
            sig["digests"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d == image.manifest_digest.as_str()),
            "{a}"
        );
        assert!(!sig["keys_tried"].as_array().unwrap().is_empty(), "{a}");
        assert!(!a["evidence"]["reason"].as_str().unwrap().is_empty(), "{a}");
        assert!(a["process"]["pid"].as_u64().unwrap() > 0, "{a}");
        assert_eq!(self.signature_of(c)["signature"], sig["state"], "{a}");
        a
    }

    /// `layerguard image verify REF --config FILE --json`: (exit code, summary).
    fn image_verify(&self, reference: &str) -> (i32, Value) {
        let out = self.node.cli(&[
            "image",
            "verify",
            reference,
            "--namespace",
            NS,
            "--config",
            self.config.to_str().unwrap(),
            "--containerd-socket",
            self.node.containerd.socket_path().to_str().unwrap(),
            "--state-dir",
            self.node.state_dir().to_str().unwrap(),
            "--json",
        ]);
        let summary: Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
        (out.status.code().unwrap(), summary)
    }
}

#[test]
fn each_signature_state_is_judged_at_the_first_exec_of_a_real_container() {
    let s = setup();

    // Signed with cosign's `.sig` image in containerd: no alert, and `image verify` names
    // the key.
    let signed = s.image("layerguard.test/trust/simple:1");
    let repo = "layerguard.test/trust/simple";
    s.cosign_sign(
        repo,
        &signed.manifest_digest,
        &signed.manifest_digest,
        &s.release,
        false,
    );
    let c = s.container(&signed);
    s.assert_signed(&c, "release");
    let (code, summary) = s.image_verify(&signed.reference);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["signature"]["state"], "signed", "{summary}");
    assert_eq!(summary["signature"]["key"], "release", "{summary}");

    // A Sigstore v0.3 bundle in the signature directory, by another active key; the
    // reference verifier accepts the same bundle.
    let bundled = s.image("layerguard.test/trust/bundle:1");
    let bundle = cosign::sigstore_bundle(
        &s.key("second"),
        &bundled.manifest_digest,
        &bundled.reference,
    )
    .unwrap();
    let bundle_path = s.dir.path().join("signatures/bundle.sigstore.json");
    std::fs::write(&bundle_path, &bundle).unwrap();
    assert!(
        cosign::sigstore_verifies(&s.key("second"), &bundle_path, &bundled.manifest_digest)
            .unwrap()
    );
    s.assert_signed(&s.container(&bundled), "second");

    // `cosign save`'s layout of the image and its signature, in the signature directory.
    let saved = s.image("layerguard.test/trust/saved:1");
    let payload =
        cosign::simple_signing_payload("layerguard.test/trust/saved", &saved.manifest_digest);
    let signature = cosign::base64(&s.release.sign(&payload).unwrap());
    let size = saved.blob(&saved.manifest_digest).unwrap().len();
    Artifact::cosign_sig(
        "layerguard.test/trust/saved",
        &saved.manifest_digest,
        payload,
        &signature,
    )
    .save_layout(
        &s.dir.path().join("signatures/saved"),
        &saved.manifest_digest,
        size,
    )
    .unwrap();
    s.assert_signed(&s.container(&saved), "release");

    // A bundle attached as an OCI 1.1 referrer in containerd.
    let referred = s.image("layerguard.test/trust/referrer:1");
    let bundle =
        cosign::sigstore_bundle(&s.release, &referred.manifest_digest, &referred.reference)
            .unwrap();
    let size = referred.blob(&referred.manifest_digest).unwrap().len();
    Artifact::bundle_referrer(
        "layerguard.test/trust/referrer:bundle",
        &referred.manifest_digest,
        size,
        bundle,
    )
    .import(&s.node.containerd, NS)
    .unwrap();
    s.assert_signed(&s.container(&referred), "release");

    // A multi-platform image: `cosign sign` signs the index, the container runs the
    // platform manifest; the signature of the index covers it.
    let multi = busybox_image("layerguard.test/trust/multi:1")
        .unwrap()
        .label("test.image", "multi")
        .build()
        .unwrap();
    let index = layerguard_tests::oci::import_as_index(&s.node.containerd, NS, &multi);
    s.cosign_sign(
        "layerguard.test/trust/multi",
        &index,
        &index,
        &s.release,
        false,
    );
    s.assert_signed(&s.container(&multi), "release");
    let (code, summary) = s.image_verify(&multi.reference);
    assert_eq!(code, 0, "{summary}");
    let digests = summary["signature"]["digests"].as_array().unwrap();
    assert_eq!(digests[0], index.as_str(), "{summary}");
    assert_eq!(digests[1], multi.manifest_digest.as_str(), "{summary}");

    // Unsigned under an enforce policy.
    let unsigned = s.image("layerguard.test/trust/unsigned:1");
    let c = s.container(&unsigned);
    let a = s.alert(&c, &unsigned, "image_unsigned");
    assert_eq!(a["severity"], "high", "{a}");
    assert_eq!(
        a["evidence"]["signature"]["policy"], "trust.policy[0]",
        "{a}"
    );
    let (code, summary) = s.image_verify(&unsigned.reference);
    assert_eq!(code, 1, "{summary}");
    assert_eq!(summary["signature"]["state"], "unsigned", "{summary}");

    // Signed by a key the node does not trust.
    let other = s.image("layerguard.test/trust/other:1");
    s.cosign_sign(
        "layerguard.test/trust/other",
        &other.manifest_digest,
        &other.manifest_digest,
        &s.key("other"),
        false,
    );
    let a = s.alert(&s.container(&other), &other, "image_signature_invalid");
    assert_eq!(a["severity"], "critical", "{a}");
    let found = &a["evidence"]["signature"]["signatures"][0];
    assert_eq!(found["format"], "cosign-simple-signing", "{a}");
    assert!(
        found["source"].as_str().unwrap().ends_with(".sig layer 0"),
        "{a}"
    );
    assert!(
        found["result"]
            .as_str()
            .unwrap()
            .contains("none of the configured keys"),
        "{a}"
    );

    // A trusted key's signature whose payload names another image's digest.
    let moved = s.image("layerguard.test/trust/moved:1");
    s.cosign_sign(
        "layerguard.test/trust/moved",
        &moved.manifest_digest,
        &signed.manifest_digest,
        &s.release,
        false,
    );
    let a = s.alert(&s.container(&moved), &moved, "image_signature_invalid");
    let reason = a["evidence"]["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("names {}", signed.manifest_digest)),
        "{a}"
    );

    // One flipped byte in the signature.
    let flipped = s.image("layerguard.test/trust/flipped:1");
    s.cosign_sign(
        "layerguard.test/trust/flipped",
        &flipped.manifest_digest,
        &flipped.manifest_digest,
        &s.release,
        true,
    );
    s.alert(&s.container(&flipped), &flipped, "image_signature_invalid");

    // A revoked key, and a key past its not_after.
    let revoked = s.image("layerguard.test/trust/revoked:1");
    s.cosign_sign(
        "layerguard.test/trust/revoked",
        &revoked.manifest_digest,
        &revoked.manifest_digest,
        &s.key("old"),
        false,
    );
    let a = s.alert(&s.container(&revoked), &revoked, "image_key_revoked");
    assert_eq!(a["severity"], "critical", "{a}");
    assert_eq!(
        a["evidence"]["signature"]["signatures"][0]["key"], "old",
        "{a}"
    );
    let expired = s.image("layerguard.test/trust/expired:1");
    s.cosign_sign(
        "layerguard.test/trust/expired",
        &expired.manifest_digest,
        &expired.manifest_digest,
        &s.key("expired"),
        false,
    );
    let a = s.alert(&s.container(&expired), &expired, "image_key_expired");
    assert_eq!(a["severity"], "high", "{a}");
    assert!(
        a["evidence"]["reason"]
            .as_str()
            .unwrap()
            .contains("2021-01-01"),
        "{a}"
    );

    // An audit policy: the same kind, as an info record.
    let audited = s.image("layerguard.test/audit/app:1");
    let a = s.alert(&s.container(&audited), &audited, "image_unsigned");
    assert_eq!(a["severity"], "info", "{a}");
    assert_eq!(a["evidence"]["signature"]["mode"], "audit", "{a}");

    // An image no policy covers (the node's own): not required, nothing alerts.
    let plain = s.node.container();
    assert_eq!(s.signature_of(&plain)["signature"], "not_required");
    assert!(s.signature_alerts(&plain).is_empty());

    // Once per container: a second exec in the unsigned one raises nothing new.
    let c2 = s.container(&unsigned);
    s.alert(&c2, &unsigned, "image_unsigned");
    layerguard_tests::node::run_ok(&c2, &["/bin/true"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        s.signature_alerts(&c2).len(),
        1,
        "{:?}",
        s.signature_alerts(&c2)
    );

    // Status counts the containers in the table by state: the ones still running here.
    let status = s.node.status();
    let counts = &status["signatures"];
    assert!(counts["signed"].as_u64().unwrap() >= 1, "{status}");
    assert!(counts["unsigned"].as_u64().unwrap() >= 2, "{status}");
    assert!(counts["not_required"].as_u64().unwrap() >= 1, "{status}");
}

#[test]
fn a_key_added_by_sighup_makes_the_next_container_signed_without_a_restart() {
    let mut s = setup();
    let image = s.image("layerguard.test/trust/rotated:1");
    s.cosign_sign(
        "layerguard.test/trust/rotated",
        &image.manifest_digest,
        &image.manifest_digest,
        &s.key("new"),
        false,
    );
    let first = s.container(&image);
    s.alert(&first, &image, "image_signature_invalid");

    // A broken config is refused and the running trust set stays.
    let pid = s.node.daemon().pid();
    std::fs::write(&s.config, "[trust\n").unwrap();
    let cursor = s.node.daemon().cursor();
    // SAFETY: kill(2) on the daemon's pid.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGHUP) }, 0);
    s.node.wait_message_after(
        cursor,
        "SIGHUP: the config does not load; the trust section in use stays",
        Duration::from_secs(10),
    );

    std::fs::write(&s.config, trust_section(s.dir.path(), true)).unwrap();
    let cursor = s.node.daemon().cursor();
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGHUP) }, 0);
    let line = s.node.wait_message_after(
        cursor,
        "SIGHUP: trust section reloaded; every image is judged again at its next container",
        Duration::from_secs(10),
    );
    assert!(
        line["changes"].as_str().unwrap().contains("key new added"),
        "{line}"
    );

    let next = s.container(&image);
    s.assert_signed(&next, "new");
    assert_eq!(s.node.daemon().pid(), pid, "no restart");
    s.node.assert_daemon_alive();
}
