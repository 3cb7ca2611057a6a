#!/usr/bin/env python3
"""One table of a sockets A/B (bench/matrix/sockets_ab.sh): for each pair and
topology, the matrix's figures with the Python reactors' `sockets="loop"`
against `"thread"`, medians over the rounds with (min–max), beside the
baselines and the NATS pairs of the same run.

    python3 bench/matrix/ab_table.py RAW.jsonl... [--nats NATS-RAW.jsonl...]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional


def cell(xs: List[float], fmt: str = "{:,.0f}") -> str:
    if not xs:
        return "–"
    return f"{fmt.format(statistics.median(xs))} ({fmt.format(min(xs))}–{fmt.format(max(xs))})"


def med(xs: List[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("raw", nargs="+")
    ap.add_argument("--nats", nargs="*", default=[])
    a = ap.parse_args()
    rows: List[Dict[str, Any]] = []
    for path in a.raw:
        rows += [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    pairs = sorted({(r["topology"], r["submitter"], r["handler"]) for r in rows if r["job"] == "pair"})

    def get(topology: str, sub: str, han: str, mode: str, f: Callable[[Dict[str, Any]], Optional[float]]) -> List[float]:
        out = [f(r) for r in rows if r["job"] == "pair" and r.get("python_sockets") == mode
               and (r["topology"], r["submitter"], r["handler"]) == (topology, sub, han)]
        return [x for x in out if x is not None]

    pps = lambda r: r["pipe"]["pps"]  # noqa: E731
    p50 = lambda r: r["seq"]["p50_us"]  # noqa: E731
    wake = lambda r: sum(v for v in r["wakeups_per_rt"].values() if v is not None)  # noqa: E731
    loads = [r["loadavg_1m"] for r in rows]
    print(f"{len(a.raw)} matrix runs (half `loop`, half `thread`, interleaved); medians (min–max) over the runs. "
          f"Load average (1 min) {min(loads):.1f}–{max(loads):.1f}.\n")
    print("| topology | submitter → handler | pkt/s loop | pkt/s thread | loop / thread | seq p50 µs loop | "
          "seq p50 µs thread | context switches per round trip, all processes: loop / thread |")
    print("|---|---|---|---|---|---|---|---|")
    for topology, sub, han in pairs:
        lp, tp = get(topology, sub, han, "loop", pps), get(topology, sub, han, "thread", pps)
        print(f"| {topology} | {sub} → {han} | {cell(lp)} | {cell(tp)} | {med(lp) / med(tp):.2f} | "
              f"{cell(get(topology, sub, han, 'loop', p50))} | {cell(get(topology, sub, han, 'thread', p50))} | "
              f"{med(get(topology, sub, han, 'loop', wake)):.1f} / {med(get(topology, sub, han, 'thread', wake)):.1f} |")
    print("\nBaselines (every run, both arms):\n")
    print("| pair | pkt/s | seq p50 µs |")
    print("|---|---|---|")
    for lang in sorted({r["lang"] for r in rows if r["job"] == "baseline"}):
        b = [r for r in rows if r["job"] == "baseline" and r["lang"] == lang]
        print(f"| {lang} | {cell([pps(r) for r in b])} | {cell([p50(r) for r in b])} |")
    if a.nats:
        nrows: List[Dict[str, Any]] = []
        for path in a.nats:
            nrows += [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
        nrows = [r for r in nrows if r.get("suite") == "nats" and r.get("variant") == "default"]
        print("\nNATS pairs (../shared/peers/nats, one trial per round):\n")
        print("| pair (requester → responder) | pipe req/s | seq p50 µs |")
        print("|---|---|---|")
        for pair in sorted({r["pair"] for r in nrows}):
            pipe = [r["rps"] for r in nrows if r["pair"] == pair and r["kind"] == "pipe"]
            seq = [r["p50_us"] for r in nrows if r["pair"] == pair and r["kind"] == "seq"]
            print(f"| {pair} | {cell(pipe)} | {cell(seq)} |")


if __name__ == "__main__":
    main()
