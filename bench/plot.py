"""Throughput against the number of subscribers and of campaigns, as a PNG.

    python -m bench.plot --out docs/throughput.png
    python -m bench.plot --campaigns-only --events 2000000     # the right panel only

Each point is one generated world measured in its own process (bench.run); the figures go
into the plot and into a JSON file beside it. With --campaigns-only the left panel (by
subscribers) is kept from the JSON file already there, and the title says so.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from bench._cli import (EVENTS, CommandError, command, folder, given_folder, make_private, parser as command_parser,
                        whole_number)
from bench.run import machine, run_benchmarks

SUBSCRIBERS = (100_000, 1_000_000, 3_000_000, 10_000_000)
CAMPAIGNS = (4, 12, 24, 48, 96, 200)
# what a point of a panel holds for the plot
PANEL = ("subscribers", "campaigns", "decode_eps", "match_eps", "end_to_end_eps")


def sweep(events: int, echo=print, kept: dict | None = None, directory: Path | None = None) -> dict:
    """Measure both sweeps; with `kept` (an earlier sweep), only the campaigns one."""
    by_subscribers = []
    for n in SUBSCRIBERS if kept is None else ():
        [r] = run_benchmarks(["x"], sizes={"x": (n, events)}, campaigns=12, echo=echo, directory=directory)
        by_subscribers.append(r)
    by_campaigns = []
    for k in CAMPAIGNS:
        [r] = run_benchmarks(["x"], sizes={"x": (1_000_000, events)}, campaigns=k, echo=echo, directory=directory)
        by_campaigns.append(r)
    data = {"events": events, "machine": machine(), "subscribers": by_subscribers, "campaigns": by_campaigns}
    if kept is not None:
        data["subscribers"] = kept["subscribers"]
        data["subscribers_events"] = kept.get("subscribers_events", kept["events"])
    return data


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
    title = f"sigmatch throughput, {data['events']:,} events per point — {data['machine']}"
    if data.get("subscribers_events"):
        title = (f"sigmatch throughput — left: {data['subscribers_events']:,} events per point, an earlier "
                 f"run; right: {data['events']:,} events per point — {data['machine']}")
    if data.get("note"):
        title += "\n" + data["note"]
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def _kept(path: Path) -> dict:
    """The earlier sweep that --campaigns-only keeps the left panel of, from its JSON file."""
    try:
        kept = json.loads(path.read_text())
        rows = kept["subscribers"]
        # what plot() reads of the left panel, and the title's events
        if (not isinstance(rows, list) or not rows or not isinstance(kept["events"], int)
                or not all(isinstance(r, dict) and all(isinstance(r.get(k), (int, float)) for k in PANEL) for r in rows)):
            raise ValueError
        return kept
    except FileNotFoundError:
        raise CommandError(f"--campaigns-only: {path}: no such file; it keeps the subscribers sweep of an earlier "
                           f"run written there (run once without --campaigns-only)") from None
    except (ValueError, KeyError, TypeError):
        raise CommandError(f"--campaigns-only: {path}: not a sweep that bench.plot wrote") from None


@command("python -m bench.plot")
def main(argv=None):
    parser = command_parser("python -m bench.plot", __doc__)
    parser.add_argument("--out", type=Path, default=Path("docs/throughput.png"),
                        help="the picture (.png); the figures go beside it, as .json (default: docs/throughput.png)")
    parser.add_argument("--events", type=whole_number(*EVENTS), default=3_000_000)
    parser.add_argument("--campaigns-only", action="store_true",
                        help="measure the campaigns sweep only; keep the subscribers sweep of the JSON file")
    parser.add_argument("--worlds", type=given_folder, help="generate the worlds here and keep them (default: temporary)")
    parser.add_argument("--note", default="", help="a second line for the title (how the machine was loaded ...)")
    args = parser.parse_args(argv)
    # everything the end needs is checked before the minutes of measuring
    if args.out.suffix.lower() != ".png":
        parser.error(f"--out {args.out}: the picture's name must end in .png")
    figures = args.out.with_suffix(".json")
    for path in (args.out, figures):
        if path.is_dir():
            raise CommandError(f"--out {args.out}: {path} is a folder")
    folder(args.out.parent, "--out")
    kept = _kept(figures) if args.campaigns_only else None
    if args.worlds is not None:
        folder(args.worlds, "--worlds", owner="bench.plot")
    data = sweep(args.events, kept=kept, directory=args.worlds, echo=lambda line: print(line, file=sys.stderr))
    if args.note:
        data["note"] = args.note
    # the picture first: a plot that fails leaves the figures it was drawn from as they were
    plot(data, args.out)
    figures.write_text(json.dumps(data, indent=2))
    make_private(figures, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
