#!/usr/bin/env python3
"""Writes the hand-made seed inputs of the fuzz targets (one file each under
seeds/<target>/). Run from anywhere; the files are checked in, so this only
needs running again when the seeds change."""

import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
SEP = b"\n--\n"


def mp(v):
    """A small MessagePack encoder (maps, arrays, strings, ints, floats)."""
    if v is None:
        return b"\xc0"
    if v is True:
        return b"\xc3"
    if v is False:
        return b"\xc2"
    if isinstance(v, int):
        if 0 <= v < 128:
            return bytes([v])
        if -32 <= v < 0:
            return struct.pack("b", v)
        if 0 <= v < 2**64:
            return b"\xcf" + struct.pack(">Q", v)
        return b"\xd3" + struct.pack(">q", v)
    if isinstance(v, float):
        return b"\xcb" + struct.pack(">d", v)
    if isinstance(v, str):
        b = v.encode()
        if len(b) < 32:
            return bytes([0xA0 | len(b)]) + b
        return b"\xd9" + bytes([len(b)]) + b if len(b) < 256 else b"\xda" + struct.pack(">H", len(b)) + b
    if isinstance(v, list):
        head = bytes([0x90 | len(v)]) if len(v) < 16 else b"\xdc" + struct.pack(">H", len(v))
        return head + b"".join(mp(x) for x in v)
    if isinstance(v, dict):
        head = bytes([0x80 | len(v)]) if len(v) < 16 else b"\xde" + struct.pack(">H", len(v))
        return head + b"".join(mp(k) + mp(x) for k, x in v.items())
    raise TypeError(type(v))


def submit(seq, pid, element, data, **extra):
    payload = {"version": "1.0", "id": pid, "group": "df", "element": element, "data": data, "priority": 5}
    payload.update(extra)
    return {"type": "submit", "seq": seq, "payload": payload}


def compact_submit(seq, pid, element, data, **extra):
    payload = {"v": "1.0", "id": pid, "g": "df", "e": element, "d": data, "p": 5}
    payload.update(extra)
    return {"type": "submit", "seq": seq, "payload": payload}


HELLO = {"type": "hello", "seq": 0, "payload": {
    "node_id": "n1", "name": "fuzz", "runtime": "python", "protocol": "1.0",
    "handlers": ["df:remote", "co:vote"], "features": ["batch", "msgpack"], "max_inflight": 8}}
RESULT = {"type": "result", "seq": 1, "payload": {
    "packet_id": "p1", "status": "success", "data": {"a": [1, 2.5, None, True]}, "duration_ms": 3}}
FAILED = {"type": "result", "seq": 2, "payload": {
    "packet_id": "p2", "status": "error", "error": {"code": "PF500", "message": "boom"}, "duration_ms": 0}}
ERROR = {"type": "error", "seq": 3, "payload": {"code": "PF400", "message": "bad", "packet_id": "p3"}}
BEAT = {"type": "heartbeat", "seq": 0, "payload": {"timestamp": 1700000000000}}
FULL = submit(7, "p7", "echo", {"k": "v", "n": -12, "f": 0.1, "big": 18446744073709551615},
              timeout_ms=30000, dependencies=["p1", "p2"], metadata={"pf.route_key": "r", "pf.hops": 1, "x": [1]})
BAD = submit(8, "p8", "echo", 1, priority=11)

MESSAGES = [submit(1, "p1", "echo", "hello"), compact_submit(2, "p2", "echo", [1, 2]), FULL, BAD,
            HELLO, RESULT, FAILED, ERROR, BEAT]


def js(v):
    return json.dumps(v, separators=(",", ":")).encode()


def write(target, name, data):
    os.makedirs(os.path.join(HERE, target), exist_ok=True)
    with open(os.path.join(HERE, target, name), "wb") as f:
        f.write(data)


def main():
    for i, m in enumerate(MESSAGES):
        write("decode_json", f"message-{i}.json", js(m))
        write("decode_msgpack", f"message-{i}.mp", mp(m))
    write("decode_json", "batch.json", js(MESSAGES))
    write("decode_json", "garbage.json", b'{"type":"submit","seq":5,"payload":')
    write("decode_msgpack", "batch.mp", mp(MESSAGES))
    write("decode_batch", "mixed", SEP.join([js(MESSAGES[0]), mp(MESSAGES[1]), js(MESSAGES[2:5]), mp(MESSAGES[5:])]))

    session = "node_session"
    # flags: 1 msgpack, 2 auth, 4/8/12 header token good/narrow/wrong, 16 tight limits
    plain = [js(submit(i, f"s{i}", e, d)) for i, (e, d) in enumerate(
        [("echo", "x"), ("yield", [1]), ("fail", None), ("sleep", 5), ("nothing", 1),
         ("call", {"g": "df", "e": "echo", "d": "y"}), ("call", {"g": "co", "e": "vote", "d": 1})], start=1)]
    write(session, "plain", b"\x00" + SEP.join(plain))
    write(session, "hello-then-submits", b"\x00" + SEP.join([js(HELLO)] + plain))
    write(session, "batch", b"\x00" + SEP.join([js(HELLO), b"[" + b",".join(plain) + b"]"]))
    write(session, "msgpack", b"\x01" + SEP.join([mp(json.loads(p)) for p in plain]))
    write(session, "bad-frames", b"\x00" + SEP.join([b"{", b"[1,2]", js(BAD), b"\xff\xfe", js(ERROR)] * 2))
    write(session, "deps-and-timeouts", b"\x00" + SEP.join([
        js(submit(1, "a", "sleep", 50, timeout_ms=10)),
        js(submit(2, "b", "echo", 1, dependencies=["a"])),
        js(submit(3, "c", "echo", 1, dependencies=["never"], timeout_ms=1000)),
        js(submit(4, "a", "echo", "dup")),
    ]))
    hello_good = dict(HELLO, payload=dict(HELLO["payload"], token="fuzz-good-token-0123456789"))
    hello_narrow = dict(HELLO, payload=dict(HELLO["payload"], token="fuzz-narrow-token-0123456789"))
    write(session, "auth-hello", b"\x02" + SEP.join([js(hello_good)] + plain))
    write(session, "auth-narrow-hello", b"\x02" + SEP.join([js(hello_narrow)] + plain))
    write(session, "auth-header", b"\x06" + SEP.join(plain))
    write(session, "auth-narrow-header", b"\x0a" + SEP.join(plain))
    write(session, "auth-wrong-header", b"\x0e" + SEP.join(plain))
    write(session, "auth-no-token", b"\x02" + SEP.join(plain))
    write(session, "tight", b"\x10" + SEP.join([b"[" + b",".join(plain * 4) + b"]"] + plain))
    # Raw mode (flag 32): bytes straight to the port.
    write(session, "raw-health", b"\x20GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    write(session, "raw-metrics-auth", b"\x22GET /metrics HTTP/1.1\r\nAuthorization: Bearer fuzz-good-token-0123456789\r\n\r\n")
    write(session, "raw-post", b"\x20POST /packetflow/v1 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc")
    write(session, "raw-truncated", b"\x20GET /packetflow/v1 HTTP/1.1\r\nUpgrade: websocket\r\n")
    upgrade = (b"GET /packetflow/v1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    frame = js(submit(1, "r1", "echo", "raw"))
    masked = bytes([0x81, 0x80 | len(frame), 0, 0, 0, 0]) + frame  # zero mask key: payload as is
    write(session, "raw-upgrade-only", b"\x20" + upgrade)
    # A frame sent before the 101 (RFC 6455 4.1 forbids it): the upgrade is
    # refused and the connection dropped.
    write(session, "raw-upgrade-pipelined-frame", b"\x20" + upgrade + masked)


if __name__ == "__main__":
    main()
