#!/usr/bin/env python3
"""The VM test (`make vm-test`): layerguard's Debian package under real systemd on Debian's
own kernels, each booted in QEMU.

Host half. It builds once (cached under target/vm/, rebuilt when its inputs change):
- a Debian bookworm root file system by debootstrap (systemd, containerd, runc, nftables),
- each kernel of KERNELS, fetched from deb.debian.org with its signature chain checked
  (InRelease by gpgv against Debian's archive keyring -> Packages.xz's sha256 -> the .deb's
  sha256), unpacked with dpkg-deb, its modules indexed by depmod,
- a small initramfs per kernel (static busybox and the modules that reach an ext4 root on
  virtio: Debian builds them as modules),
- one ext4 disk with the root file system, every kernel's modules, and the test payload:
  the .deb under test, a busybox OCI archive, tests/vm/guest.sh as a one-shot unit.
Then it boots each kernel on that disk (copy-on-write: every boot starts from the same
disk) and reads the guest's result lines from the second serial port. The guest does what
an operator does (tests/vm/guest.sh says what); this side only judges PASS/FAILED and keeps
the console log of each boot in target/vm/<kernel>/.

QEMU runs under software emulation (TCG, `-cpu max`): KVM opens on these machines but its
guests fail, so KVM is used only when a probe boot shows a kernel banner under it.
"""

import argparse
import hashlib
import json
import lzma
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

MIRROR = "http://deb.debian.org/debian"
SECURITY = "http://deb.debian.org/debian-security"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
# Which kernels, and where Debian ships each: bookworm's own 6.1 (its security suite has
# the newest build), bookworm's 6.12 (the kernel trixie ships), and the newest Debian
# offers at all (trixie-backports). Package names must be exact: a glob fetches every build.
KERNELS = {
    "6.1": ("bookworm-security", "linux-image-6.1.0-57-cloud-amd64"),
    "6.12": ("bookworm-security", "linux-image-6.12.117+deb12-cloud-amd64"),
    "7.3": ("trixie-backports", "linux-image-7.3.4+deb13-cloud-amd64"),
}
ROOTFS_PACKAGES = [
    "systemd", "systemd-sysv", "udev", "dbus", "kmod", "containerd", "runc", "iproute2",
    "nftables", "ca-certificates", "procps", "python3-minimal",
]
# Modules an ext4 root on virtio-blk needs where the kernel has them as modules; their
# dependencies come from modules.dep. Also loaded at boot by the guest: overlay (containerd's
# snapshotter), nf_tables (respond isolate), br_netfilter is not needed (no CNI here).
INITRAMFS_MODULES = ["virtio_pci", "virtio_blk", "ext4"]
GUEST_MODULES = ["overlay", "nf_tables"]


# debootstrap, depmod, mkfs.ext4 live in sbin, which a user's PATH may lack.
os.environ["PATH"] = os.environ.get("PATH", "") + ":/usr/local/sbin:/usr/sbin:/sbin"


def log(msg):
    print(f"vm-test: {msg}", flush=True)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(url, dest):
    tmp = Path(str(dest) + ".part")
    with urllib.request.urlopen(url, timeout=120) as r, open(tmp, "wb") as f:
        shutil.copyfileobj(r, f, 1 << 20)
    tmp.rename(dest)


class Suite:
    """One suite's package index, trusted through its signed InRelease."""

    def __init__(self, name, cache):
        base = SECURITY if name.endswith("-security") else MIRROR
        self.base = base
        cache.mkdir(parents=True, exist_ok=True)
        inrelease = cache / f"{name}.InRelease"
        fetch(f"{base}/dists/{name}/InRelease", inrelease)
        # gpgv checks the clearsigned file against Debian's archive keys and prints the
        # signed text only: the hashes below are read from what was verified.
        signed = subprocess.run(
            ["gpgv", "--keyring", KEYRING, "--output", "-", str(inrelease)],
            check=True, capture_output=True,
        ).stdout.decode()
        want = None
        in_sha256 = False
        for line in signed.splitlines():
            if line.startswith("SHA256:"):
                in_sha256 = True
                continue
            if in_sha256 and line.startswith(" "):
                digest, _size, path = line.split()
                if path == "main/binary-amd64/Packages.xz":
                    want = digest
            elif in_sha256:
                in_sha256 = False
        if want is None:
            raise SystemExit(f"{name}: InRelease lists no main/binary-amd64/Packages.xz")
        packages = cache / f"{name}.Packages.xz"
        fetch(f"{base}/dists/{name}/main/binary-amd64/Packages.xz", packages)
        if sha256_file(packages) != want:
            raise SystemExit(f"{name}: Packages.xz does not match the signed InRelease")
        self.packages = {}
        for stanza in lzma.open(packages).read().decode().split("\n\n"):
            fields = dict(
                (m.group(1), m.group(2))
                for m in re.finditer(r"^([A-Za-z0-9-]+): (.*)$", stanza, re.M)
            )
            if "Package" in fields:
                self.packages[fields["Package"]] = fields

    def download(self, name, dest_dir):
        """The .deb of package `name`, its sha256 checked against the signed index."""
        p = self.packages.get(name)
        if p is None:
            raise SystemExit(f"package {name} is not in the suite's index")
        dest = dest_dir / Path(p["Filename"]).name
        if not dest.exists() or sha256_file(dest) != p["SHA256"]:
            log(f"downloading {p['Filename']} ({int(p['Size']) >> 20} MiB)")
            fetch(f"{self.base}/{p['Filename']}", dest)
            if sha256_file(dest) != p["SHA256"]:
                dest.unlink()
                raise SystemExit(f"{name}: downloaded .deb does not match its signed sha256")
        return dest, p


_SUITES = {}


def suite_index(name, cache):
    """One Suite per suite name per run: kernels of the same suite share its index."""
    if name not in _SUITES:
        _SUITES[name] = Suite(name, cache)
    return _SUITES[name]


def prepare_kernel(label, work):
    """Unpacks one kernel: vmlinuz, its release string, /lib/modules/<release>."""
    suite_name, package = KERNELS[label]
    kdir = work / "kernels" / label
    done = kdir / ".complete"
    if done.exists() and done.read_text() == package:
        return kdir
    shutil.rmtree(kdir, ignore_errors=True)
    (kdir / "debs").mkdir(parents=True)
    suite = suite_index(suite_name, work / "index")
    deb, fields = suite.download(package, kdir / "debs")
    debs = [deb]
    # Newer Debian kernels split the image package: the kernel and its modules are in
    # packages it depends on at the same version (linux-binary-*, linux-modules-*).
    for dep in re.split(r",\s*", fields.get("Depends", "")):
        name = dep.split()[0]
        if name.startswith(("linux-binary-", "linux-modules-", "linux-base-")) and name in suite.packages:
            debs.append(suite.download(name, kdir / "debs")[0])
    tree = kdir / "tree"
    for d in debs:
        run(["dpkg-deb", "-x", str(d), str(tree)])
    # /boot/vmlinuz-<release> (bookworm) or /usr/lib/modules/<release>/vmlinuz (newer).
    found = [(p, p.name[len("vmlinuz-"):]) for p in tree.glob("boot/vmlinuz-*")]
    found += [(p, p.parent.name) for p in tree.glob("usr/lib/modules/*/vmlinuz")]
    if not found:
        raise SystemExit(f"{package}: no vmlinuz in {[d.name for d in debs]}")
    vmlinuz, release = found[0]
    moddir = next(p for p in [tree / "lib/modules" / release, tree / "usr/lib/modules" / release] if p.exists())
    shutil.copy(vmlinuz, kdir / "vmlinuz")
    (kdir / "release").write_text(release)
    (kdir / "modules-path").write_text(str(moddir.relative_to(tree)))
    # depmod -b BASE reads BASE/lib/modules/<release>; merged-/usr packages ship usr/lib.
    run(["depmod", "-b", str(moddir.parent.parent.parent), release])
    build_initramfs(kdir, moddir, release)
    done.write_text(package)
    return kdir


def module_closure(moddir, names):
    """Module files (relative to moddir) for `names` and their dependencies, deps first;
    names the kernel has built in are skipped."""
    deps = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        mod, _, rest = line.partition(":")
        deps[mod] = rest.split()
    by_name = {}
    for mod in deps:
        base = Path(mod).name.split(".ko")[0].replace("-", "_")
        by_name[base] = mod
    order, seen = [], set()

    def visit(mod):
        if mod in seen:
            return
        seen.add(mod)
        for d in deps.get(mod, []):
            visit(d)
        order.append(mod)

    for n in names:
        if n in by_name:
            visit(by_name[n])
    return order


def decompressed(path):
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".zst"):
        return subprocess.run(["zstd", "-dc", str(path)], check=True, capture_output=True).stdout
    return data


def cpio_newc(entries):
    """An uncompressed newc cpio archive from (name, mode, data-or-None) entries."""
    out = bytearray()
    ino = 1

    def pad(n):
        return b"\0" * ((4 - n % 4) % 4)

    for name, mode, data in entries + [("TRAILER!!!", 0, b"")]:
        data = data or b""
        nb = name.encode() + b"\0"
        hdr = "070701" + "".join(f"{v:08x}" for v in [
            ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(nb), 0])
        out += hdr.encode() + nb + pad(110 + len(nb)) + data + pad(len(data))
        ino += 1
    return bytes(out)


def build_initramfs(kdir, moddir, release):
    mods = module_closure(moddir, INITRAMFS_MODULES)
    busybox = Path("/bin/busybox")
    init = "\n".join([
        "#!/bin/busybox sh",
        "/bin/busybox --install -s /bin",
        "mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev",
        *[f"insmod /m/{Path(m).name.split('.ko')[0]}.ko" for m in mods],
        "n=0; while [ ! -b /dev/vda ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n+1)); done",
        "mount -t ext4 -o rw /dev/vda /root || { echo 'initramfs: cannot mount /dev/vda'; exec sh; }",
        "umount /proc /sys; mount --move /dev /root/dev",
        "exec switch_root /root /sbin/init",
        "",
    ])
    entries = [("bin", 0o40755, None), ("proc", 0o40755, None), ("sys", 0o40755, None),
               ("dev", 0o40755, None), ("root", 0o40755, None), ("m", 0o40755, None),
               ("bin/busybox", 0o100755, busybox.read_bytes()),
               ("init", 0o100755, init.encode())]
    for m in mods:
        entries.append((f"m/{Path(m).name.split('.ko')[0]}.ko", 0o100644, decompressed(moddir / m)))
    (kdir / "initrd").write_bytes(cpio_newc(entries))
    log(f"kernel {release}: initramfs with {len(mods)} modules")


def prepare_rootfs(work):
    root = work / "rootfs"
    stamp = ",".join(ROOTFS_PACKAGES)
    if (root / ".complete").exists() and (root / ".complete").read_text() == stamp:
        return root
    shutil.rmtree(root, ignore_errors=True)
    tmp = work / "rootfs.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    log("debootstrap bookworm (about a minute)")
    with open(work / "debootstrap.log", "w") as out:
        run(["debootstrap", "--variant=minbase", "--include=" + ",".join(ROOTFS_PACKAGES),
             "bookworm", str(tmp), MIRROR], stdout=out, stderr=subprocess.STDOUT)
    (tmp / "etc/hostname").write_text("layerguard-vm\n")
    (tmp / "etc/fstab").write_text("# root is mounted by the test's initramfs\n")
    # Nothing of the boot the test does not need (apt timers, a getty on the console).
    for unit in ["apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer",
                 "fstrim.timer", "serial-getty@ttyS0.service", "getty@tty1.service",
                 "systemd-timesyncd.service"]:
        link = tmp / "etc/systemd/system" / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    (tmp / "etc/systemd/system/vmtest.service").write_text(
        "[Unit]\nDescription=layerguard VM test (tests/vm/guest.sh)\n"
        "After=containerd.service systemd-modules-load.service\n\n"
        "[Service]\nType=oneshot\nExecStart=/root/vmtest/guest.sh\n"
        "StandardOutput=journal+console\nStandardError=journal+console\n\n"
        "[Install]\nWantedBy=multi-user.target\n")
    wants = tmp / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    (wants / "vmtest.service").unlink(missing_ok=True)
    (wants / "vmtest.service").symlink_to("/etc/systemd/system/vmtest.service")
    (tmp / "etc/modules-load.d/vmtest.conf").write_text("\n".join(GUEST_MODULES) + "\n")
    run(["chroot", str(tmp), "apt-get", "clean"])
    (tmp / ".complete").write_text(stamp)
    tmp.rename(root)
    return root


def build_disk(work, root, kernels, deb, image_archive, guest):
    """One ext4 disk: the root file system, each kernel's modules, the payload."""
    stage = work / "disk.tree"
    shutil.rmtree(stage, ignore_errors=True)
    run(["cp", "-a", str(root.resolve()), str(stage)])
    (stage / ".complete").unlink()
    for kdir in kernels:
        release = (kdir / "release").read_text()
        rel = (kdir / "modules-path").read_text()
        dest = stage / "lib/modules" / release
        shutil.rmtree(dest, ignore_errors=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        run(["cp", "-a", str(kdir / "tree" / rel), str(dest)])
    payload = stage / "root/vmtest"
    payload.mkdir(parents=True)
    shutil.copy(deb, payload / "layerguard.deb")
    shutil.copy(image_archive, payload / "busybox.tar")
    shutil.copy(guest, payload / "guest.sh")
    os.chmod(payload / "guest.sh", 0o755)
    disk = work / "disk.img"
    disk.unlink(missing_ok=True)
    run(["mkfs.ext4", "-q", "-F", "-L", "root", "-d", str(stage), str(disk), "4G"])
    shutil.rmtree(stage)
    return disk


def kvm_works(kdir, out):
    """A probe boot under KVM: usable only if the kernel gets as far as its banner."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    console = out / "kvm-probe.log"
    try:
        subprocess.run(
            ["qemu-system-x86_64", "-accel", "kvm", "-cpu", "host", "-m", "512", "-nographic",
             "-no-reboot", "-kernel", str(kdir / "vmlinuz"), "-append", "console=ttyS0 panic=-1",
             "-serial", f"file:{console}", "-monitor", "none", "-display", "none"],
            timeout=30, capture_output=True)
    except subprocess.TimeoutExpired:
        pass
    text = console.read_text(errors="replace") if console.exists() else ""
    return "Kernel panic" in text or "VFS:" in text


def boot(label, kdir, disk, work, accel, timeout):
    out = work / label
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    console, result = out / "console.log", out / "result.log"
    cpu = ["-accel", "kvm", "-cpu", "host"] if accel == "kvm" else ["-accel", "tcg,thread=multi", "-cpu", "max"]
    cmd = ["qemu-system-x86_64", *cpu, "-smp", "2", "-m", "2048", "-nographic", "-no-reboot",
           "-kernel", str(kdir / "vmlinuz"), "-initrd", str(kdir / "initrd"),
           "-append", "console=ttyS0 panic=-1 systemd.show_status=0 quiet",
           "-drive", f"file={disk},if=virtio,format=raw,snapshot=on",
           "-serial", f"file:{console}", "-serial", f"file:{result}",
           "-monitor", "none", "-display", "none", "-nic", "none"]
    log(f"{label}: booting {(kdir / 'release').read_text()} ({accel}); console: {console}")
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(out / "qemu.err", "w"))
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        with open(result, "a") as f:
            f.write(f"FAIL timeout: the VM did not finish in {timeout} s\nFAILED\n")
    elapsed = time.monotonic() - start
    text = result.read_text(errors="replace") if result.exists() else ""
    lines = text.splitlines()
    passed = bool(lines) and lines[-1].strip() == "PASS"
    return passed, elapsed, text


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--deb", required=True, type=Path)
    ap.add_argument("--image-archive", required=True, type=Path)
    ap.add_argument("--kernels", default=",".join(KERNELS))
    ap.add_argument("--work", default=Path("target/vm"), type=Path)
    ap.add_argument("--timeout", default=1500, type=int, help="seconds per VM")
    ap.add_argument("--accel", default="auto", choices=["auto", "tcg", "kvm"])
    ap.add_argument("--guest", default=Path(__file__).parent / "guest.sh", type=Path,
                    help="the guest's script (another one for a diagnosis)")
    args = ap.parse_args()
    labels = [k for k in args.kernels.split(",") if k]
    for k in labels:
        if k not in KERNELS:
            raise SystemExit(f"unknown kernel {k}; known: {', '.join(KERNELS)}")
    args.work.mkdir(parents=True, exist_ok=True)
    root = prepare_rootfs(args.work)
    kdirs = {k: prepare_kernel(k, args.work) for k in labels}
    disk = build_disk(args.work, root, list(kdirs.values()), args.deb, args.image_archive, args.guest)
    accel = args.accel
    if accel == "auto":
        accel = "kvm" if kvm_works(next(iter(kdirs.values())), args.work) else "tcg"
        log(f"KVM probe: {'works' if accel == 'kvm' else 'no kernel banner under KVM; using TCG'}")
    summary, failed = {}, []
    for k in labels:
        passed, elapsed, text = boot(k, kdirs[k], disk, args.work, accel, args.timeout)
        summary[k] = {"release": (kdirs[k] / "release").read_text(), "passed": passed,
                      "seconds": round(elapsed), "accel": accel}
        print(f"---- {k} ({summary[k]['release']}): {'PASS' if passed else 'FAILED'} in {elapsed:.0f} s")
        print(text, flush=True)
        if not passed:
            failed.append(k)
    (args.work / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    disk.unlink(missing_ok=True)
    if failed:
        raise SystemExit(f"vm-test: FAILED on {', '.join(failed)} (consoles in {args.work}/<kernel>/console.log)")
    passed_on = ", ".join(f"{k} ({v['release']})" for k, v in summary.items())
    log(f"passed on {passed_on}")


if __name__ == "__main__":
    main()
