#!/usr/bin/env python3
"""Builds the layerguard DaemonSet image, reproducibly, without Docker or a registry.

The image holds exactly: the daemon binary at /usr/bin/layerguard (the config's
Entrypoint), the shared libraries `ldd` lists for it and the dynamic loader (each at the
path ldd gives, as a regular file), and the CA bundle /etc/ssl/certs/ca-certificates.crt.
It is written as an OCI image layout directory (OUT/oci/) and as the same layout in one
tar (OUT/layerguard-image.tar), which `ctr images import` takes; OUT/image.json
summarises it (name, digests, files).

Reproducible: the same binary (and libraries, CA bundle) give the same digests. Every tar
entry is sorted by path, owned by 0:0 with empty user/group names, has a fixed mode and
the mtime SOURCE_DATE_EPOCH (0 when unset), the layer is gzip without a name or
timestamp, the config's `created` is that same time, and every JSON is serialised with
sorted keys and no spaces.

    python3 deploy/image/build.py [--binary target/release/layerguard] [--out target/image]

Python 3.11+ (tomllib), standard library only.
"""

import argparse
import datetime
import gzip
import hashlib
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# What the DaemonSet manifest must agree with (deploy/image/manifest.py checks it).
REGISTRY_REPOSITORY = "docker.io/library/layerguard"
ENTRYPOINT = "/usr/bin/layerguard"
DEFAULT_CMD = ["run"]
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
ENV = [
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    f"SSL_CERT_FILE={CA_BUNDLE}",
]

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
# `ctr images import` names the image after this index annotation.
ANNOTATION_CONTAINERD_NAME = "io.containerd.image.name"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
GZIP_LEVEL = 6
CHUNK = 1 << 20


def fail(msg):
    print(f"deploy/image/build.py: {msg}", file=sys.stderr)
    sys.exit(1)


def version_from_cargo(repo=REPO):
    """The daemon's version: daemon/Cargo.toml's, or the workspace's it inherits."""
    with open(os.path.join(repo, "daemon", "Cargo.toml"), "rb") as f:
        package = tomllib.load(f)["package"]
    version = package.get("version")
    if isinstance(version, dict) and version.get("workspace"):
        with open(os.path.join(repo, "Cargo.toml"), "rb") as f:
            version = tomllib.load(f)["workspace"]["package"]["version"]
    if not isinstance(version, str):
        fail(f"no version in daemon/Cargo.toml: {version!r}")
    return version


def image_name(version):
    return f"{REGISTRY_REPOSITORY}:{version}"


def canonical_json(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def oci_platform():
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    return {"architecture": arch, "os": "linux"}


def shared_libraries(binary):
    """(image path, host file) of every library ldd resolves for `binary`, loader included.

    A static binary has none. A library ldd cannot find is an error: the image would not
    start."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True)
    text = out.stdout + out.stderr
    if out.returncode != 0:
        if "not a dynamic executable" in text or "statically linked" in text:
            return []
        fail(f"ldd {binary} failed: {text.strip()}")
    libs = []
    for line in out.stdout.splitlines():
        line = line.strip()
        if not line or line.startswith("linux-vdso") or line.startswith("linux-gate"):
            continue
        if "not found" in line:
            fail(f"ldd {binary}: {line}")
        m = re.match(r"^(?:\S+ => )?(/\S+) \(0x[0-9a-f]+\)$", line)
        if not m:
            fail(f"ldd {binary}: cannot parse {line!r}")
        libs.append(m.group(1))
    interp = elf_interpreter(binary)
    if interp and interp not in libs:
        libs.append(interp)
    return sorted(set(libs))


def elf_interpreter(binary):
    """PT_INTERP of a 64-bit little-endian ELF, or None."""
    with open(binary, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
            fail(f"{binary} is not a 64-bit little-endian ELF")
        phoff = int.from_bytes(head[32:40], "little")
        phentsize = int.from_bytes(head[54:56], "little")
        phnum = int.from_bytes(head[56:58], "little")
        f.seek(phoff)
        table = f.read(phentsize * phnum)
        for i in range(phnum):
            ph = table[i * phentsize:(i + 1) * phentsize]
            if int.from_bytes(ph[0:4], "little") == 3:  # PT_INTERP
                offset = int.from_bytes(ph[8:16], "little")
                size = int.from_bytes(ph[32:40], "little")
                f.seek(offset)
                return f.read(size).rstrip(b"\0").decode()
    return None


def image_files(binary, ca_bundle):
    """{image path: (host file, mode)}: everything in the image's one layer."""
    files = {ENTRYPOINT: (binary, 0o755)}
    for lib in shared_libraries(binary):
        files[lib] = (os.path.realpath(lib), 0o755)
    files[CA_BUNDLE] = (os.path.realpath(ca_bundle), 0o644)
    for path, (host, _) in files.items():
        if not os.path.isfile(host):
            fail(f"{host} (for {path} in the image) is not a file")
    return files


def check_binary_version(binary, version):
    """The tag must be the binary's own version: a stale binary would be mislabelled."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True)
    said = out.stdout.strip()
    if out.returncode != 0 or said != f"layerguard {version}":
        fail(f"{binary} --version says {said!r}, expected 'layerguard {version}': rebuild it")


def tar_info(name, mtime, mode, kind=tarfile.REGTYPE, size=0):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_layer_tar(files, mtime, out):
    """The layer: every parent dir (0755) and file, sorted by path."""
    dirs = set()
    for path in files:
        parent = os.path.dirname(path)
        while parent != "/":
            dirs.add(parent)
            parent = os.path.dirname(parent)
    entries = sorted([(d, None) for d in dirs] + [(p, files[p]) for p in files])
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for path, spec in entries:
            name = path.lstrip("/")
            if spec is None:
                tar.addfile(tar_info(name + "/", mtime, 0o755, tarfile.DIRTYPE))
                continue
            host, mode = spec
            size = os.path.getsize(host)
            with open(host, "rb") as f:
                tar.addfile(tar_info(name, mtime, mode, size=size), f)
    return [p for p, _ in entries]


def build(binary, out_dir, version, ca_bundle=CA_BUNDLE, source_date_epoch=None):
    if source_date_epoch is None:
        source_date_epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0") or "0")
    mtime = int(source_date_epoch)
    created = datetime.datetime.fromtimestamp(mtime, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    binary = os.path.abspath(binary)
    if not os.path.isfile(binary):
        fail(f"no daemon binary at {binary}: build it with `cargo build --release -p layerguard`")
    check_binary_version(binary, version)
    files = image_files(binary, ca_bundle)
    name = image_name(version)

    os.makedirs(out_dir, exist_ok=True)
    layout = os.path.join(out_dir, "oci")
    if os.path.exists(layout):
        shutil.rmtree(layout)
    blob_dir = os.path.join(layout, "blobs", "sha256")
    os.makedirs(blob_dir)

    def add_blob(data):
        digest = hashlib.sha256(data).hexdigest()
        with open(os.path.join(blob_dir, digest), "wb") as f:
            f.write(data)
        return f"sha256:{digest}", len(data)

    # The layer: uncompressed tar (its digest is the diff_id), then gzip with no name and
    # mtime 0 (the gzip header's own timestamp), streamed through temp files.
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        tar_path = os.path.join(tmp, "layer.tar")
        with open(tar_path, "wb") as f:
            paths = write_layer_tar(files, mtime, f)
        diff_id = "sha256:" + sha256_file(tar_path)
        gz_path = os.path.join(tmp, "layer.tar.gz")
        with open(tar_path, "rb") as src, open(gz_path, "wb") as raw:
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=GZIP_LEVEL, mtime=0) as gz:
                shutil.copyfileobj(src, gz, CHUNK)
        layer_hex = sha256_file(gz_path)
        layer_size = os.path.getsize(gz_path)
        os.replace(gz_path, os.path.join(blob_dir, layer_hex))

    config = {
        "architecture": oci_platform()["architecture"],
        "os": "linux",
        "created": created,
        "config": {
            "Entrypoint": [ENTRYPOINT],
            "Cmd": DEFAULT_CMD,
            "Env": ENV,
            "Labels": {
                "org.opencontainers.image.title": "layerguard",
                "org.opencontainers.image.description": "Runtime integrity daemon for container hosts",
                "org.opencontainers.image.version": version,
                "org.opencontainers.image.licenses": "Apache-2.0",
            },
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": created, "created_by": "deploy/image/build.py"}],
    }
    config_digest, config_size = add_blob(canonical_json(config))
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {"mediaType": MEDIA_CONFIG, "digest": config_digest, "size": config_size},
        "layers": [
            {"mediaType": MEDIA_LAYER_GZIP, "digest": f"sha256:{layer_hex}", "size": layer_size}
        ],
    }
    manifest_digest, manifest_size = add_blob(canonical_json(manifest))
    index = {
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [
            {
                "mediaType": MEDIA_MANIFEST,
                "digest": manifest_digest,
                "size": manifest_size,
                "platform": oci_platform(),
                "annotations": {ANNOTATION_CONTAINERD_NAME: name, ANNOTATION_REF_NAME: version},
            }
        ],
    }
    with open(os.path.join(layout, "index.json"), "wb") as f:
        f.write(canonical_json(index))
    with open(os.path.join(layout, "oci-layout"), "wb") as f:
        f.write(canonical_json({"imageLayoutVersion": "1.0.0"}))

    archive = os.path.join(out_dir, "layerguard-image.tar")
    write_archive(layout, archive + ".tmp", mtime)
    os.replace(archive + ".tmp", archive)

    summary = {
        "name": name,
        "version": version,
        "manifest_digest": manifest_digest,
        "config_digest": config_digest,
        "layer_digest": f"sha256:{layer_hex}",
        "diff_id": diff_id,
        "entrypoint": [ENTRYPOINT],
        "created": created,
        "layout": layout,
        "archive": archive,
        "archive_sha256": sha256_file(archive),
        "files": paths,
        "binary": binary,
    }
    with open(os.path.join(out_dir, "image.json"), "w") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
        f.write("\n")
    return summary


def write_archive(layout, path, mtime):
    """The layout dir as one tar: sorted entries, 0:0, fixed mtime and modes."""
    entries = []
    for root, dirs, names in os.walk(layout):
        rel = os.path.relpath(root, layout)
        if rel != ".":
            entries.append((rel + "/", None))
        for n in names:
            entries.append((os.path.normpath(os.path.join(rel, n)), os.path.join(root, n)))
    entries.sort()
    with open(path, "wb") as out:
        with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for name, host in entries:
                if host is None:
                    tar.addfile(tar_info(name, mtime, 0o755, tarfile.DIRTYPE))
                else:
                    with open(host, "rb") as f:
                        tar.addfile(tar_info(name, mtime, 0o644, size=os.path.getsize(host)), f)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--binary", default=os.path.join(REPO, "target", "release", "layerguard"))
    p.add_argument("--out", default=os.path.join(REPO, "target", "image"))
    p.add_argument("--version", help="image tag (default: daemon/Cargo.toml's version)")
    p.add_argument("--print-name", action="store_true", help="print the image name and exit")
    args = p.parse_args()
    version = args.version or version_from_cargo()
    if args.print_name:
        print(image_name(version))
        return
    s = build(args.binary, args.out, version)
    print(f"built {s['name']} {s['manifest_digest']}")
    print(f"  layout  {s['layout']}")
    print(f"  archive {s['archive']} (sha256 {s['archive_sha256']})")
    for path in s["files"]:
        print(f"  {path}")


if __name__ == "__main__":
    main()
