#!/usr/bin/env python3
"""Reads deploy/layerguard-daemonset.yaml the way the kubelet would run it, and checks it
agrees with the image deploy/image/build.py makes.

    manifest.py spec  [MANIFEST]                    # JSON: how the kubelet runs the daemon
    manifest.py check [MANIFEST] [--image-json F]   # exit 1 naming every disagreement

`spec` is what tests/tests/daemonset.rs runs under a real containerd: image, argv
(Entrypoint + args, `$(VAR)` left for the caller), env, privileged, hostPID, and every
volume mount with the host path (or ConfigMap files) behind it and the role it plays for
the daemon: `config` (holds the --config file), `containerd` (holds containerd_socket),
`state` (state_dir), `api` (the API socket's directory) or `host` (used as it is).

`check` holds the manifest to the image and to the daemon's config: the image is
build.py's name for daemon/Cargo.toml's version and carries the same version label, no
`command` overrides the image's Entrypoint, the args start with `run` and name a --config
file that a ConfigMap mount provides, every directory the config (after the args'
overrides) makes the daemon use is a hostPath mount, /sys/kernel/btf is mounted,
privileged and hostPID are set, and every port the config listens on is declared.

Needs PyYAML (the venv `make validate-manifests` makes has it).
"""

import argparse
import json
import os
import posixpath
import re
import sys
import tomllib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import build  # noqa: E402

try:
    import yaml
except ImportError:
    print(
        "deploy/image/manifest.py: PyYAML is missing: run `make validate-manifests` "
        "(it makes target/manifest-venv) and use target/manifest-venv/bin/python",
        file=sys.stderr,
    )
    sys.exit(2)

MANIFEST = os.path.join(build.REPO, "deploy", "layerguard-daemonset.yaml")
CONTAINER = "layerguard"
# The daemon's defaults for what the config may leave out (daemon/src/config).
DEFAULT_CONFIG = "/etc/layerguard/layerguard.toml"
DEFAULTS = {
    "containerd_socket": "/run/containerd/containerd.sock",
    "state_dir": "/var/lib/layerguard",
    "api.socket": "/run/layerguard/layerguard.sock",
}
BTF_DIR = "/sys/kernel/btf"
# Flags of `layerguard run` that set one of the keys above.
FLAG_KEYS = {"--containerd-socket": "containerd_socket", "--state-dir": "state_dir"}


class Problem(Exception):
    pass


def load(path):
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    daemonsets = [d for d in docs if d.get("kind") == "DaemonSet"]
    if len(daemonsets) != 1:
        raise Problem(f"{path}: {len(daemonsets)} DaemonSets, expected one")
    ds = daemonsets[0]
    pod = ds["spec"]["template"]["spec"]
    containers = [c for c in pod.get("containers", []) if c.get("name") == CONTAINER]
    if len(containers) != 1:
        raise Problem(f"{path}: no container named {CONTAINER!r} in the DaemonSet")
    namespace = ds["metadata"].get("namespace", "default")
    configmaps = {
        d["metadata"]["name"]: d.get("data", {})
        for d in docs
        if d.get("kind") == "ConfigMap" and d["metadata"].get("namespace", "default") == namespace
    }
    return ds, pod, containers[0], configmaps


def lookup(config, dotted):
    value = config
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def effective(args, config):
    """containerd_socket, state_dir, api.socket as the daemon would use them: the
    config's values, the defaults, then the args' flags and `--set`s."""
    out = {k: lookup(config, k) or v for k, v in DEFAULTS.items()}
    for i, a in enumerate(args):
        nxt = args[i + 1] if i + 1 < len(args) else None
        if a in FLAG_KEYS and nxt:
            out[FLAG_KEYS[a]] = nxt
        if a == "--set" and nxt and "=" in nxt:
            k, v = nxt.split("=", 1)
            if k in out:
                out[k] = v.strip('"')
    return out


def flag_value(args, flag):
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def under(path, mount_path):
    return path == mount_path or path.startswith(mount_path.rstrip("/") + "/")


def spec(path):
    ds, pod, c, configmaps = load(path)
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    args = list(c.get("args", []))
    command = c.get("command")
    argv = list(command) if command else [build.ENTRYPOINT]
    argv += args
    config_path = flag_value(args, "--config") or DEFAULT_CONFIG
    mounts = []
    config_text = None
    for m in c.get("volumeMounts", []):
        v = volumes.get(m["name"])
        if v is None:
            raise Problem(f"volumeMount {m['name']!r} has no volume")
        entry = {
            "name": m["name"],
            "mountPath": m["mountPath"],
            "readOnly": bool(m.get("readOnly", False)),
            "hostPath": None,
            "configMap": None,
            "role": "host",
        }
        if "hostPath" in v:
            entry["hostPath"] = v["hostPath"]["path"]
            entry["hostPathType"] = v["hostPath"].get("type", "")
        elif "configMap" in v:
            name = v["configMap"]["name"]
            if name not in configmaps:
                raise Problem(f"volume {m['name']!r} names ConfigMap {name!r}, not in the manifest")
            data = configmaps[name]
            items = v["configMap"].get("items")
            files = {i["path"]: data[i["key"]] for i in items} if items else dict(data)
            entry["configMap"] = {"name": name, "files": files}
            rel = posixpath.relpath(config_path, m["mountPath"]) if under(config_path, m["mountPath"]) else None
            if rel in files:
                entry["role"] = "config"
                config_text = files[rel]
        else:
            raise Problem(f"volume {m['name']!r} is neither hostPath nor configMap")
        mounts.append(entry)
    config = tomllib.loads(config_text) if config_text is not None else {}
    paths = effective(args, config)
    roles = {
        "containerd": posixpath.dirname(paths["containerd_socket"]),
        "state": paths["state_dir"],
        "api": posixpath.dirname(paths["api.socket"]),
    }
    for entry in mounts:
        for role, wanted in roles.items():
            if entry["hostPath"] is not None and entry["mountPath"] == wanted:
                entry["role"] = role
    sc = c.get("securityContext", {})
    return {
        "image": c.get("image"),
        "imagePullPolicy": c.get("imagePullPolicy"),
        "command": command,
        "args": args,
        "argv": argv,
        "env": c.get("env", []),
        "privileged": bool(sc.get("privileged", False)),
        "hostPID": bool(pod.get("hostPID", False)),
        "mounts": mounts,
        "configPath": config_path,
        "config": config,
        "paths": paths,
        "labels": {
            "daemonset": ds["metadata"].get("labels", {}),
            "pod": ds["spec"]["template"]["metadata"].get("labels", {}),
        },
        "ports": [p.get("containerPort") for p in c.get("ports", [])],
    }


def check(path, image_json=None):
    problems = []
    s = spec(path)
    version = build.version_from_cargo()
    want = build.image_name(version)
    if s["image"] != want:
        problems.append(f"image is {s['image']!r}, `make image` builds {want!r}")
    if image_json:
        with open(image_json) as f:
            built = json.load(f)
        if s["image"] != built["name"]:
            problems.append(f"image is {s['image']!r}, {image_json} names {built['name']!r}")
        if built["entrypoint"] != [build.ENTRYPOINT]:
            problems.append(f"{image_json} has Entrypoint {built['entrypoint']}")
    for where, labels in s["labels"].items():
        if labels.get("app.kubernetes.io/version") != version:
            problems.append(
                f"{where} label app.kubernetes.io/version is "
                f"{labels.get('app.kubernetes.io/version')!r}, the image's version is {version!r}"
            )
    if s["command"] not in (None, [build.ENTRYPOINT]):
        problems.append(f"command {s['command']} overrides the image's Entrypoint {build.ENTRYPOINT}")
    if not s["args"] or s["args"][0] != "run":
        problems.append(f"args {s['args']} do not start with the `run` subcommand")
    if not s["privileged"]:
        problems.append("securityContext.privileged is not true: the daemon loads eBPF")
    if not s["hostPID"]:
        problems.append("hostPID is not true: the daemon reads every container's /proc/PID")
    if not any(m["role"] == "config" for m in s["mounts"]):
        problems.append(f"no ConfigMap mount provides the --config file {s['configPath']}")
    by_role = {m["role"]: m for m in s["mounts"]}
    for role, key in (("containerd", "containerd_socket"), ("state", "state_dir"), ("api", "api.socket")):
        m = by_role.get(role)
        if m is None:
            problems.append(f"{key} {s['paths'][key]} is in no hostPath mount of its directory")
        elif m["hostPath"] != m["mountPath"]:
            problems.append(
                f"{key}'s mount {m['name']!r} maps host {m['hostPath']} to {m['mountPath']}: "
                "the same path on both sides keeps the node's paths the daemon's"
            )
        elif m["readOnly"]:
            problems.append(f"{key}'s mount {m['name']!r} is read-only")
    if not any(m["hostPath"] == BTF_DIR and m["mountPath"] == BTF_DIR for m in s["mounts"]):
        problems.append(f"{BTF_DIR} is not mounted from the host (the sensor needs vmlinux BTF)")
    env = {e["name"] for e in s["env"]}
    for a in s["args"]:
        for ref in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", a):
            if ref not in env:
                problems.append(f"args reference $({ref}), which env does not define")
    listens = [lookup(s["config"], k) for k in ("metrics.listen", "api.tcp_listen")]
    wanted_ports = sorted(int(v.rsplit(":", 1)[1]) for v in listens if v)
    if sorted(p for p in s["ports"] if p) != wanted_ports:
        problems.append(f"containerPorts {s['ports']} differ from the ports the config listens on {wanted_ports}")
    return problems


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=["spec", "check"])
    p.add_argument("manifest", nargs="?", default=MANIFEST)
    p.add_argument("--image-json", help="also compare with this image.json from build.py")
    a = p.parse_args()
    try:
        if a.command == "spec":
            json.dump(spec(a.manifest), sys.stdout, indent=2, sort_keys=True)
            print()
            return
        problems = check(a.manifest, a.image_json)
    except Problem as e:
        print(f"{a.manifest}: {e}", file=sys.stderr)
        sys.exit(1)
    for problem in problems:
        print(f"{a.manifest}: {problem}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"{a.manifest}: agrees with {build.image_name(build.version_from_cargo())} (entrypoint {build.ENTRYPOINT})")


if __name__ == "__main__":
    main()
