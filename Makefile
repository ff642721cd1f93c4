# layerguard: `sudo make run` and `sudo make test` work on a fresh Debian/Ubuntu host.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
export PATH := $(HOME)/.cargo/bin:/root/.cargo/bin:/usr/local/sbin:/usr/sbin:/sbin:$(PATH)

DEB_PACKAGES := build-essential clang libbpf-dev protobuf-compiler libprotobuf-dev \
	containerd runc busybox-static python3 pkg-config openssl nftables iproute2
HOST_CONTAINERD_SOCK := /run/containerd/containerd.sock
PRIVATE_DIR := /var/lib/layerguard/containerd
PRIVATE_RUN := /run/layerguard/containerd
PRIVATE_SOCK := $(PRIVATE_RUN)/containerd.sock
RELEASE_BIN := target/release/layerguard
DEBUG_BIN := target/debug/layerguard
# Extra arguments for `make run`, e.g. ARGS="--log-format text".
ARGS ?=

.PHONY: all deps test-deps build release run test unit-test integration-test lint bench clean \
	install uninstall deb vm-test demo image validate-manifests

all: build

# $(call apt_install_missing,PACKAGES[,APT_FLAGS]): apt-get install those not installed yet.
apt_install_missing = missing=""; for p in $(1); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -q; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(2) $$missing; \
	fi

## deps: install the Debian packages layerguard needs (only those missing).
deps:
	@if [ "$$(id -u)" != 0 ]; then echo "make deps: run as root (sudo make ...): it installs Debian packages" >&2; exit 1; fi
	@$(call apt_install_missing,$(DEB_PACKAGES))
	@command -v cargo >/dev/null || { echo "make deps: cargo not found; install Rust (rustup) first" >&2; exit 1; }

## test-deps: what only the tests need: Node.js and npm's Sigstore packages (tests/sigstore),
## which make and check real Sigstore bundles, and Debian's Prometheus server.
test-deps: deps
	@command -v npm >/dev/null || { apt-get update -q; DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm; }
	@[ -d tests/sigstore/node_modules/@sigstore/sign ] || npm ci --no-audit --no-fund --prefix tests/sigstore
	@# Prometheus for the metrics test (each test starts its own on loopback; the package's
	@# own service is not wanted).
	@command -v prometheus >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus; \
		systemctl disable --now prometheus >/dev/null 2>&1 || true; }

build: deps
	cargo build --workspace --all-targets

release: deps
	cargo build --release -p layerguard

## run: build, make sure a containerd answers (a private one if needed), run the daemon.
run: release
	@mkdir -p /run/layerguard
	@if ctr --address $(HOST_CONTAINERD_SOCK) version >/dev/null 2>&1; then \
		echo "using the running containerd at $(HOST_CONTAINERD_SOCK)"; \
		exec $(RELEASE_BIN) run --containerd-socket $(HOST_CONTAINERD_SOCK) $(ARGS); \
	fi; \
	mkdir -p $(PRIVATE_DIR) $(PRIVATE_RUN); \
	printf '%s\n' 'version = 2' 'root = "$(PRIVATE_DIR)/root"' 'state = "$(PRIVATE_RUN)/state"' \
		'disabled_plugins = ["io.containerd.grpc.v1.cri"]' \
		'[grpc]' '  address = "$(PRIVATE_SOCK)"' '[ttrpc]' '  address = "$(PRIVATE_SOCK).ttrpc"' \
		'[debug]' '  address = "$(PRIVATE_SOCK).debug"' > $(PRIVATE_DIR)/config.toml; \
	if ! ctr --address $(PRIVATE_SOCK) version >/dev/null 2>&1; then \
		echo "no containerd at $(HOST_CONTAINERD_SOCK): starting a private one at $(PRIVATE_SOCK) (log: $(PRIVATE_DIR)/containerd.log)"; \
		containerd --config $(PRIVATE_DIR)/config.toml >$(PRIVATE_DIR)/containerd.log 2>&1 & cpid=$$!; \
		trap 'kill $$cpid 2>/dev/null; wait $$cpid 2>/dev/null' EXIT; \
		for i in $$(seq 50); do ctr --address $(PRIVATE_SOCK) version >/dev/null 2>&1 && break; sleep 0.1; done; \
		echo "use it with: ctr --address $(PRIVATE_SOCK) ..."; \
	fi; \
	$(RELEASE_BIN) run --containerd-socket $(PRIVATE_SOCK) $(ARGS)

## test: everything CI checks: format, lints, unit tests, real-kernel/real-containerd tests.
# The integration tests run the debug daemon: a release build would double CI's compile
# time, and no test asserts speed (that is `make bench`).
# `deb` is built first: tests/tests/operations.rs reads the package, and the VM test
# (last, the longest: about 70 s per kernel under TCG) installs it.
test: deps test-deps lint validate-manifests deb
	cargo build --workspace --all-targets
	LAYERGUARD_BIN=$(CURDIR)/$(DEBUG_BIN) cargo test --workspace --all-targets -- --test-threads=1
	$(MAKE) vm-test

unit-test: deps
	cargo test -p layerguard

integration-test: build test-deps validate-manifests deb
	LAYERGUARD_BIN=$(CURDIR)/$(DEBUG_BIN) cargo test -p layerguard-tests -- --test-threads=1

lint: deps
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

## bench: overhead and throughput, each as a ratio against a baseline in the same run.
bench: release
	cargo run --release -p layerguard-bench -- --layerguard $(CURDIR)/$(RELEASE_BIN)
	# The gRPC path: alerts/s to 10 subscribers with the journal on, and the latency it
	# adds after the log line (in-process server on the daemon's runtime shape).
	cargo test --release -p layerguard --lib api::bench -- --ignored --nocapture --test-threads=1
	# The baseline analyzer in process: RSS of 1,000 baselines of 100 entries, lookups/s.
	cargo test --release -p layerguard --lib baseline::bench -- --ignored --nocapture --test-threads=1

## demo: a first look in one command: a private containerd, an image built here, a container,
## a dropped and a tampered program, the alerts as `layerguard watch` prints them; then all removed.
demo: deps
	cargo build -p layerguard -p layerguard-tests --bin layerguard --bin layerguard-demo
	target/debug/layerguard-demo --layerguard $(CURDIR)/$(DEBUG_BIN)

## install: the release binary in $(PREFIX)/bin, the hardened unit, a commented default
## config in /etc/layerguard (kept if present), the `layerguard` group for the API socket.
## DESTDIR stages the files elsewhere (no group, no systemctl then).
PREFIX ?= /usr/local
DESTDIR ?=
UNIT_DIR := /etc/systemd/system
install: release
	install -D -m 0755 $(RELEASE_BIN) $(DESTDIR)$(PREFIX)/bin/layerguard
	install -d -m 0755 $(DESTDIR)$(UNIT_DIR)
	sed 's|/usr/bin/layerguard|$(PREFIX)/bin/layerguard|g' systemd/layerguard.service \
		> $(DESTDIR)$(UNIT_DIR)/layerguard.service
	chmod 0644 $(DESTDIR)$(UNIT_DIR)/layerguard.service
	@if [ -e $(DESTDIR)/etc/layerguard/layerguard.toml ]; then \
		echo "keeping $(DESTDIR)/etc/layerguard/layerguard.toml (the default is packaging/layerguard.toml)"; \
	else install -D -m 0644 packaging/layerguard.toml $(DESTDIR)/etc/layerguard/layerguard.toml; fi
	@if [ -z "$(DESTDIR)" ]; then \
		getent group layerguard >/dev/null || groupadd --system layerguard; \
		if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi; \
		echo "installed; start with: systemctl enable --now layerguard"; \
	fi

## uninstall: the binary and the unit; the config and /var/lib/layerguard stay.
uninstall:
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then \
		systemctl disable --now layerguard.service 2>/dev/null || true; fi
	rm -f $(DESTDIR)$(PREFIX)/bin/layerguard $(DESTDIR)$(UNIT_DIR)/layerguard.service
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
	@echo "kept /etc/layerguard and /var/lib/layerguard (remove them by hand if unwanted)"

## deb: target/debian/layerguard_<version>_<arch>.deb (packaging/build-deb.sh says how).
deb: release
	packaging/build-deb.sh

## vm-test: the .deb under real systemd on Debian's own kernels in QEMU (tests/vm).
## VM_KERNELS picks some of: 6.1 (bookworm), 6.12 (bookworm, trixie), 7.3 (trixie-backports).
VM_PACKAGES := qemu-system-x86 debootstrap kmod gpgv e2fsprogs
VM_KERNELS ?= 6.1,6.12,7.3
vm-test: deb
	@$(call apt_install_missing,$(VM_PACKAGES),--no-install-recommends)
	cargo build -p layerguard-tests --bin busybox-oci-archive
	mkdir -p target/vm
	target/debug/busybox-oci-archive docker.io/library/vmtest:1 target/vm/busybox.tar
	python3 tests/vm/vmtest.py --deb $$(ls -t target/debian/layerguard_*.deb | head -1) \
		--image-archive target/vm/busybox.tar --kernels $(VM_KERNELS)

clean:
	cargo clean

## image: the DaemonSet image (deploy/image/build.py) of the release binary:
## target/image/oci/ (OCI layout), target/image/layerguard-image.tar (the same as an OCI
## archive), target/image/image.json; imported into the host's containerd (namespace
## k8s.io, where the kubelet looks) when one answers. SOURCE_DATE_EPOCH sets every
## timestamp (default 0): the same binary always gives the same digest.
IMAGE_DIR := target/image
IMAGE_NAMESPACE := k8s.io
.PHONY: image validate-manifests
image: release
	python3 deploy/image/build.py --binary $(RELEASE_BIN) --out $(IMAGE_DIR)
	@if ctr --address $(HOST_CONTAINERD_SOCK) version >/dev/null 2>&1; then \
		ctr --address $(HOST_CONTAINERD_SOCK) -n $(IMAGE_NAMESPACE) images import $(IMAGE_DIR)/layerguard-image.tar; \
		echo "imported $$(python3 deploy/image/build.py --print-name) into the containerd at $(HOST_CONTAINERD_SOCK) (namespace $(IMAGE_NAMESPACE))"; \
	else \
		echo "no containerd answers at $(HOST_CONTAINERD_SOCK): not imported; import $(IMAGE_DIR)/layerguard-image.tar on each node with: ctr -n $(IMAGE_NAMESPACE) images import FILE"; \
	fi

## validate-manifests: deploy/layerguard-daemonset.yaml against Kubernetes' own schemas,
## offline and strict (unknown fields fail), with PyPI's kubernetes-validate in a venv
## under target/; then that it agrees with the image (deploy/image/manifest.py check).
MANIFEST_VENV := target/manifest-venv
KUBERNETES_VALIDATE_VERSION := 1.37.0
KUBERNETES_VERSION := 1.37.0
validate-manifests: $(MANIFEST_VENV)/.installed-$(KUBERNETES_VALIDATE_VERSION)
	$(MANIFEST_VENV)/bin/kubernetes-validate --strict --kubernetes-version $(KUBERNETES_VERSION) deploy/layerguard-daemonset.yaml
	$(MANIFEST_VENV)/bin/python deploy/image/manifest.py check

$(MANIFEST_VENV)/.installed-$(KUBERNETES_VALIDATE_VERSION):
	@python3 -m venv --help >/dev/null 2>&1 && python3 -m ensurepip --version >/dev/null 2>&1 || \
		{ apt-get update -q; DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv; }
	rm -rf $(MANIFEST_VENV)
	python3 -m venv $(MANIFEST_VENV)
	$(MANIFEST_VENV)/bin/pip install --quiet --disable-pip-version-check kubernetes-validate==$(KUBERNETES_VALIDATE_VERSION)
	touch $@
