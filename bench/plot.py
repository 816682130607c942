"""Throughput against the number of subscribers and of campaigns, as a PNG.

    python -m bench.plot --out docs/throughput.png

Each point is one generated world measured in its own process (bench.run); the figures go
into the plot and into a JSON file beside it.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.run import machine, run_benchmarks

SUBSCRIBERS = (100_000, 1_000_000, 3_000_000, 10_000_000)
CAMPAIGNS = (4, 12, 24, 48, 96)


def sweep(events: int, echo=print) -> dict:
    by_subscribers = []
    for n in SUBSCRIBERS:
        [r] = run_benchmarks(["x"], sizes={"x": (n, events)}, campaigns=12, echo=echo)
        by_subscribers.append(r)
    by_campaigns = []
    for k in CAMPAIGNS:
        [r] = run_benchmarks(["x"], sizes={"x": (1_000_000, events)}, campaigns=k, echo=echo)
        by_campaigns.append(r)
    return {"events": events, "machine": machine(), "subscribers": by_subscribers, "campaigns": by_campaigns}


def plot(data: dict, out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    fixed = data["subscribers"][0]["campaigns"]
    for ax, key, xlabel, xscale in ((left, "subscribers", f"subscribers ({fixed} campaigns)", "log"),
                                    (right, "campaigns", "campaigns (1M subscribers)", "linear")):
        rows = data[key]
        xs = [r[key] for r in rows]
        for stage, label in (("decode_eps", "decoder alone"), ("match_eps", "decode + match + state"),
                             ("end_to_end_eps", "end to end (CSV sinks)")):
            ax.plot(xs, [r[stage] / 1e6 for r in rows], marker="o", label=label)
        ax.set_xscale(xscale)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("million events / s, one core")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
    left.legend(loc="upper right", fontsize=8)
    fig.suptitle(f"sigmatch throughput, {data['events']:,} events per point — {data['machine']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/throughput.png"))
    parser.add_argument("--events", type=int, default=3_000_000)
    args = parser.parse_args()
    data = sweep(args.events)
    args.out.with_suffix(".json").write_text(json.dumps(data, indent=2))
    plot(data, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
