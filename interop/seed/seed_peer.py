"""A PacketFlow peer written from the seed specification alone
(seeds/003-protocol-spec-v1.md): a plain `websockets` client, JSON frames, no
`hello`, heartbeat on open and every 30 s, results answered with `seq: 0`.

    python3 seed_peer.py serve HUB_URL NAME   serve df:echo_NAME, df:fail_NAME, df:slow_NAME
    python3 seed_peer.py submit HUB_URL       JSON requests on stdin, one result per line on stdout
"""
import asyncio
import json
import sys
import time
import uuid

import websockets


class SeedReactor:
    def __init__(self, endpoint):
        self.endpoint = endpoint
        self.handlers = {}
        self.pending = {}
        self.sequence = 0
        self.ws = None

    async def start(self):
        self.ws = await websockets.connect(self.endpoint, compression=None, max_size=None)
        await self.send_heartbeat()
        self.reader = asyncio.create_task(self.read_loop())
        self.beat = asyncio.create_task(self.beat_forever())

    async def beat_forever(self):
        # As the seed's reactor does: a heartbeat every 30 seconds.
        while True:
            await asyncio.sleep(30)
            await self.send_heartbeat()

    async def stop(self):
        await self.ws.close()

    def register(self, group, element, handler):
        self.handlers[f"{group}:{element}"] = handler

    async def submit(self, packet):
        full = {"version": "1.0", "id": str(uuid.uuid4()), "priority": 5, **packet}
        self.sequence += 1
        seq = self.sequence
        future = asyncio.get_running_loop().create_future()
        self.pending[seq] = (future, full["id"])
        await self.ws.send(json.dumps({"type": "submit", "seq": seq, "payload": full}))
        return await future

    async def read_loop(self):
        try:
            async for data in self.ws:
                try:
                    message = json.loads(data)
                except ValueError:
                    print("seed peer: undecodable frame", file=sys.stderr)
                    continue
                kind = message.get("type")
                payload = message.get("payload") or {}
                if kind == "submit":
                    asyncio.create_task(self.process_packet(payload))
                elif kind == "result":
                    self.settle(message.get("seq"), payload.get("packet_id"), payload)
                elif kind == "error":
                    self.settle(message.get("seq"), payload.get("packet_id"),
                                {"status": "error", "error": {"code": payload.get("code"), "message": payload.get("message")}})
        finally:
            for future, _ in self.pending.values():
                if not future.done():
                    future.set_exception(ConnectionError("connection closed"))
            self.pending.clear()

    def settle(self, seq, packet_id, result):
        key = seq if seq in self.pending else next((k for k, (_, i) in self.pending.items() if i == packet_id), None)
        if key is None:
            return
        future, _ = self.pending.pop(key)
        if not future.done():
            future.set_result(result)

    async def process_packet(self, packet):
        key = f"{packet.get('group')}:{packet.get('element')}"
        handler = self.handlers.get(key)
        if handler is None:
            await self.send_result({"packet_id": packet.get("id"), "status": "error",
                                    "error": {"code": "PF001", "message": f"No handler for {key}"}, "duration_ms": 0})
            return
        start = time.monotonic()
        try:
            data = await handler(packet.get("data"))
            result = {"packet_id": packet["id"], "status": "success", "data": data}
        except Exception as e:  # the seed answers every failure with PF500
            result = {"packet_id": packet["id"], "status": "error", "error": {"code": "PF500", "message": str(e)}}
        result["duration_ms"] = int((time.monotonic() - start) * 1000)
        await self.send_result(result)

    async def send_result(self, result):
        await self.ws.send(json.dumps({"type": "result", "seq": 0, "payload": result}))

    async def send_heartbeat(self):
        self.sequence += 1
        await self.ws.send(json.dumps({"type": "heartbeat", "seq": self.sequence, "payload": {"timestamp": int(time.time() * 1000)}}))


async def serve(url, name):
    r = SeedReactor(url)

    async def echo(data):
        return data

    async def fail(_data):
        raise RuntimeError(f"boom from {name}")

    async def slow(ms):
        await asyncio.sleep(ms / 1000)
        return ms

    r.register("df", f"echo_{name}", echo)
    r.register("df", f"fail_{name}", fail)
    r.register("df", f"slow_{name}", slow)
    await r.start()
    print("ready", flush=True)
    await r.reader


async def submit(url):
    r = SeedReactor(url)
    await r.start()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=16 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    work = []

    async def one(req):
        packet = {"group": req["group"], "element": req["element"], "data": req.get("data")}
        if req.get("timeout_ms"):
            packet["timeout_ms"] = req["timeout_ms"]
        if req.get("metadata"):
            packet["metadata"] = req["metadata"]
        try:
            result = await r.submit(packet)
        except ConnectionError as e:
            result = {"status": "error", "error": {"code": "LOST", "message": str(e)}}
        sys.stdout.write(json.dumps({"id": req["id"], "result": result}) + "\n")
        sys.stdout.flush()

    while line := await reader.readline():
        if line.strip():
            work.append(asyncio.create_task(one(json.loads(line))))
    await asyncio.gather(*work)
    await r.stop()


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "serve":
        asyncio.run(serve(sys.argv[2], sys.argv[3]))
    elif len(sys.argv) >= 3 and sys.argv[1] == "submit":
        asyncio.run(submit(sys.argv[2]))
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
