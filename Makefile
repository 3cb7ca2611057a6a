# PacketFlow: `make test` runs every suite, `make demo` runs the demo,
# `make dist` writes the release artifacts into dist/.
# Everything builds with one cargo profile (release) into one target dir.

SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(CURDIR)/target
export PACKETFLOW_ROOT := $(CURDIR)

SUITES := rust python node elixir interop install

.PHONY: test demo bench dist $(addprefix test-,$(SUITES))

test: $(addprefix test-,$(SUITES))
	@echo "all suites passed"

# The default members: core, cli and the integration tests (the binding
# crates are tested from their own languages). The NATS tests start real
# nats-server processes: the script installs Debian's when it is missing.
test-rust:
	@bash scripts/ensure-nats-server.sh
	@if cargo fmt --version >/dev/null 2>&1; then cargo fmt --all -- --check; \
	else echo "rustfmt is not installed: formatting not checked"; fi
	cargo test --release

# Each language suite lives beside its code, in a script that installs what
# it needs and runs the tests; a suite whose folder does not exist yet is
# reported as absent rather than silently passing.
test-python test-node test-elixir test-interop:
	@bash scripts/run-suite.sh $(patsubst test-%,%,$@)

# The release artifacts (scripts/dist.sh): a wheel and an sdist, an npm
# tarball, a Hex tarball, the packetflow command and SHA256SUMS. After the
# suites, the Node addon, the NIF and the CLI are built already.
dist:
	@bash scripts/dist.sh

# The artifacts in dist/ installed into fresh Python, npm and Mix projects
# with cargo off the PATH, and a round trip between them through a hub.
test-install: dist
	@bash scripts/install-check.sh

demo:
	@bash scripts/demo.sh

bench:
	cargo bench -p packetflow --bench core --features bench-hooks
