#!/usr/bin/env bash
# Makes sure a nats-server binary is there for the NATS tests (tests/nats.rs,
# cli/tests/nats.rs), which start real servers on loopback ports: Debian's
# package (2.9.10), installed with apt-get when missing. NATS_SERVER_BIN, when
# set, names the binary to use instead.
set -euo pipefail
if [[ -n "${NATS_SERVER_BIN:-}" ]]; then
  [[ -x "$NATS_SERVER_BIN" ]] || { echo "NATS_SERVER_BIN=$NATS_SERVER_BIN is not an executable" >&2; exit 1; }
  exit 0
fi
if command -v nats-server >/dev/null 2>&1 || [[ -x /usr/sbin/nats-server ]]; then
  exit 0
fi
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
  echo "nats-server is missing: install Debian's nats-server package (or set NATS_SERVER_BIN)" >&2
  exit 1
fi
echo "== installing nats-server"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nats-server >/dev/null
