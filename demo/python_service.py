"""The demo's Python service: sentiment scoring, served over PacketFlow."""
import asyncio
import sys

import packetflow

POSITIVE = {"love", "great", "good", "excellent", "happy", "fast"}
NEGATIVE = {"hate", "bad", "slow", "awful", "sad", "broken"}


async def main(hub: str) -> None:
    async with packetflow.Reactor(name="python-service") as r:

        @r.handler("df", "sentiment")
        def sentiment(text, ctx):
            if not isinstance(text, str):
                raise TypeError(f"sentiment needs a string, got {type(text).__name__}")
            words = {w.strip(".,!?").lower() for w in text.split()}
            score = len(words & POSITIVE) - len(words & NEGATIVE)
            label = "positive" if score > 0 else "negative" if score < 0 else "neutral"
            return {"label": label, "score": score, "served_by": "python"}

        await r.connect(hub)
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
