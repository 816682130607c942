"""The report as pictures (`--plots DIR`: PNGs) and as one self-contained HTML page (`--html
FILE`: the same plots embedded as data URIs, no link outside the file), from the document of
engine.closedloop.report.build_report. Needs matplotlib and Jinja2 (pip install 'sigmatch[report]').

    funnel.png   per campaign: matched, suppressed (every reason), sent, control, converted
    uplift.png   per campaign and the programme: uplift in percentage points with its 95% interval
    daily.png    per local day: contacts (sends, controls), and the conversion rates of the sends of the
                 campaigns that hold out controls, of those controls and of the global controls
"""
from __future__ import annotations

import base64
import io
from pathlib import Path

from engine.closedloop.report import _incremental, _pct, _shown_uplift, legend_text
from engine.closedloop.uplift import MIN_CONTROLS
from engine.errors import SigmatchError

__all__ = ["PLOTS", "require_extras", "write_plots", "write_html", "plot_png", "DIFF_PLOTS", "diff_png", "write_diff_html"]

PLOTS = ("funnel", "uplift", "daily")


def require_extras(command: str, *, plots: bool = False, html: bool = False) -> None:
    """Before any work: raise SigmatchError (one line, naming the option and the extra) when
    `command`'s --plots or --html cannot be written, matplotlib (both) or Jinja2 (--html)
    not being installed. Found without importing them (seconds): a report or a diff ran to its
    end, and --plots made its directory, before the missing package was said."""
    import importlib.util
    wanted = (["matplotlib"] if plots or html else []) + (["jinja2"] if html else [])
    missing = [name for name in wanted if importlib.util.find_spec(name) is None]
    if missing:
        options = " and ".join(o for o, on in (("--plots", plots), ("--html", html)) if on)
        raise SigmatchError(f"{command} {options} need{'s' if options.count('--') == 1 else ''} "
                            f"{' and '.join('Jinja2' if m == 'jinja2' else m for m in missing)}: "
                            "pip install 'sigmatch[report]'")


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise SigmatchError("report --plots and --html need matplotlib and Jinja2: "
                            "pip install 'sigmatch[report]'") from None
    matplotlib.use("Agg")       # no display: files only
    import matplotlib.pyplot as plt
    return plt


def plot_png(report: dict, name: str) -> bytes:
    """One plot of PLOTS as PNG bytes."""
    plt = _pyplot()
    figure = {"funnel": _funnel, "uplift": _uplift, "daily": _daily}[name](plt, report)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def write_plots(report: dict, directory) -> list[Path]:
    """PLOTS as DIRECTORY/<name>.png (the directory is made); the paths written."""
    from engine.sinks import make_private_directories, write_private
    directory = Path(directory)
    make_private_directories(directory)
    written = []
    for name in PLOTS:
        path = directory / f"{name}.png"
        # figures of the operator's campaigns: readable by owner and group only, as every output
        write_private(directory / f".{name}.png.tmp", path, plot_png(report, name))
        written.append(path)
    return written


def _campaign_height(report: dict) -> float:
    return max(3.0, 0.45 * (len(report["campaigns"]) + 2))


def _funnel(plt, report: dict):
    import numpy as np
    ids = list(report["campaigns"])[::-1]       # the first campaign on top
    stages = [
        ("matched", lambda e: e["funnel"].get("matched", 0), "#9aa5b1"),
        ("suppressed", lambda e: sum(v for k, v in e["funnel"].items()
                                     if k.startswith("suppressed_") or k in ("overflow", "recheck_failed")), "#e4a0a0"),
        ("sent", lambda e: e["sends"], "#3b7dd8"),
        ("control", lambda e: e["controls"], "#f2b134"),
        ("converted", lambda e: e["conversions_send"] + e["conversions_control"], "#2e9e5b"),
    ]
    figure, axis = plt.subplots(figsize=(9, _campaign_height(report)))
    y = np.arange(len(ids))
    height = 0.8 / len(stages)
    for i, (label, value, colour) in enumerate(stages):
        axis.barh(y + (len(stages) / 2 - i - 0.5) * height, [value(report["campaigns"][c]) for c in ids],
                  height, label=label, color=colour)
    axis.set_yticks(y, ids)
    axis.set_xlabel("contacts / events (count)")
    axis.set_title("Funnel per campaign: matched, suppressed (any reason: stats.json),\n"
                   "sent, control, converted (the action and conversion files)")
    axis.legend(loc="lower right", fontsize="small")
    axis.grid(axis="x", alpha=0.3)
    return figure


def _uplift(plt, report: dict):
    rows = [("programme (vs global control)", report["programme"])] + list(report["campaigns"].items())
    rows = rows[::-1]
    figure, axis = plt.subplots(figsize=(9, _campaign_height(report)))
    labels = []
    for y, (name, f) in enumerate(rows):
        labels.append(name)
        if f["uplift"] is None:
            axis.text(0, y, f"  {f['note']}", va="center", fontsize="small", color="#777777")
            continue
        colour = "#777777" if f["note"] else ("#2e9e5b" if f["uplift"] > 0 else "#c0392b")
        value = f["uplift"] * 100
        axis.errorbar(value, y, xerr=[[value - f["ci_low"] * 100], [f["ci_high"] * 100 - value]],
                      fmt="o", color=colour, capsize=4)
    axis.axvline(0, color="black", linewidth=0.8)
    axis.set_yticks(range(len(rows)), labels)
    axis.set_ylim(-0.7, len(rows) - 0.3)
    axis.set_xlabel("uplift: conversion rate of sends minus controls (percentage points)")
    axis.set_title("Uplift per campaign with its 95% interval (grey: not significant)")
    axis.grid(axis="x", alpha=0.3)
    return figure


def _daily(plt, report: dict):
    days = list(report["programme"]["days"])
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    p = [report["programme"]["days"][d] for d in days]
    x = range(len(days))
    controls = [f["controls"] + f["global_controls"] for f in p]
    top.bar(x, [f["sends"] for f in p], color="#3b7dd8", label="sent")
    top.bar(x, controls, bottom=[f["sends"] for f in p], color="#f2b134", label="control (campaign and global)")
    top.set_ylabel("contacts (count)")
    top.set_title(f"Contacts and conversion rates per local day (UTC{report['utc_offset']})")
    top.legend(fontsize="small")
    top.grid(axis="y", alpha=0.3)

    def rate(conversions, contacts):
        return [100 * a / b if b else float("nan") for a, b in zip(conversions, contacts)]

    # like with like: the sends of the campaigns that hold out a control group, against those controls
    held = [e for e in report["campaigns"].values() if e["controls"]]

    def summed(key):
        return [sum(e["days"].get(d, {}).get(key, 0) for e in held) for d in days]

    bottom.plot(x, rate(summed("conversions_send"), summed("sends")), "o-", color="#3b7dd8",
                label="sends of the campaigns with a control group")
    bottom.plot(x, rate(summed("conversions_control"), summed("controls")), "s--", color="#f2b134",
                label="their controls")
    if report["programme"]["global_controls"]:
        bottom.plot(x, rate([f["conversions_global_control"] for f in p], [f["global_controls"] for f in p]), "^:",
                    color="#777777", label="global controls")
    bottom.set_ylabel("conversion rate (%)")
    bottom.set_xlabel("local day")
    bottom.set_xticks(list(x), days, rotation=45 if len(days) > 7 else 0, ha="right" if len(days) > 7 else "center")
    bottom.legend(fontsize="small")
    bottom.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    return figure


# the look of both pages (report and diff), so that they read as one product
_STYLE = """<style>
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3em 0.7em; text-align: right; }
th { background: #f3f5f7; } td.name, th.name { text-align: left; }
td.note { color: #777; text-align: left; } img { max-width: 100%; }
p.small { font-size: 0.85em; color: #555; max-width: 60em; }
</style></head><body>
"""

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>sigmatch report {{ period }}</title>
""" + _STYLE + """<h1>Campaign report</h1>
<p>{{ period }}. Outputs: {{ outputs }}.{% if sha %} Configuration sha256 {{ sha }}.{% endif %}</p>
{% if warnings %}<h2>Warnings</h2><ul id="warnings">{% for w in warnings %}<li>{{ w }}</li>{% endfor %}</ul>{% endif %}
<h2>Programme</h2>
<p>{{ programme }}</p>
<p class="small source">Source: the action and conversion files (every send against the global controls).</p>
<h2>Uplift per campaign</h2>
<p class="small source">Source: the action and conversion files, each conversion joined to its contact by
contact_seq; the 95% interval is Newcombe's for a difference of two proportions (statsmodels,
<code>confint_proportions_2indep(method="newcomb")</code>).</p>
<img alt="uplift per campaign" src="data:image/png;base64,{{ plots.uplift }}">
<table><tr><th class="name">campaign</th><th class="name">template</th>
{% for c in columns %}<th>{{ c }}</th>{% endfor %}</tr>
{% for row in variant_rows %}<tr><td class="name">{{ row[0] }}</td><td class="name">{{ row[1] }}</td>
{% for v in row[2:-1] %}<td>{{ v }}</td>{% endfor %}<td class="note">{{ row[-1] }}</td></tr>
{% endfor %}</table>
<h2>Funnel</h2>
<p class="small source">Source: matched and the suppressions, stats.json's funnel (added up over the
directories); sent, control and converted, the action and conversion files. Where files are
missing the two disagree: see the warnings.</p>
<img alt="funnel per campaign" src="data:image/png;base64,{{ plots.funnel }}">
<table><tr><th class="name">campaign</th>{% for k in funnel_keys %}<th>{{ k }}</th>{% endfor %}</tr>
{% for row in funnel_rows %}<tr><td class="name">{{ row[0] }}</td>{% for v in row[1:] %}<td>{{ v }}</td>{% endfor %}</tr>
{% endfor %}</table>
<h2>Day by day</h2>
<p class="small source">Source: the action and conversion files, each conversion on its contact's local day.</p>
<img alt="contacts and conversion rates per day" src="data:image/png;base64,{{ plots.daily }}">
<p class="small">{{ legend }}</p>
</body></html>
"""


def write_html(report: dict, path) -> Path:
    """One self-contained page at `path`: tables and the plots as data URIs."""
    _pyplot()
    try:
        import jinja2
    except ImportError:
        raise SigmatchError("report --html needs Jinja2: pip install 'sigmatch[report]'") from None
    plots = {name: base64.b64encode(plot_png(report, name)).decode("ascii") for name in PLOTS}
    funnel_keys: list[str] = []
    for entry in report["campaigns"].values():
        funnel_keys += [k for k in entry["funnel"] if k not in funnel_keys]
    days = report["days"]
    p = report["programme"]
    page = jinja2.Environment(autoescape=True).from_string(_PAGE).render(
        period=f"{days[0]} to {days[-1]}, local days at UTC{report['utc_offset']}" if days else "no actions",
        outputs=", ".join(report["outputs"]),
        sha=(report.get("configuration") or {}).get("sha256"),
        programme=(f"{p['sends']:,} sends converted at {_pct(p['rate_send'])}; {p['global_controls']:,} global "
                   f"controls at {_pct(p['rate_global_control'])}; uplift {_shown_uplift(p)}; incremental "
                   f"conversions {_incremental(p)}."),
        plots=plots,
        columns=["sent", "control", "global", "conv send", "conv ctrl", "rate send", "rate ctrl", "incr",
                 "uplift [95% CI]"],
        variant_rows=[[cid, t, f"{v['sends']:,}", f"{v['controls']:,}", f"{v['global_controls']:,}",
                       f"{v['conversions_send']:,}",
                       f"{v['conversions_control']:,}", _pct(v["rate_send"]), _pct(v["rate_control"]),
                       _incremental(v), _shown_uplift(v)]
                      for cid, e in report["campaigns"].items() for t, v in e["variants"].items()],
        funnel_keys=funnel_keys,
        funnel_rows=[[cid] + [f"{e['funnel'].get(k, 0):,}" for k in funnel_keys]
                     for cid, e in report["campaigns"].items()],
        warnings=report["warnings"],
        legend=legend_text(report.get("min_controls", MIN_CONTROLS)))
    from engine.sinks import make_private_directories, write_private
    path = Path(path)
    if path.parent != Path(""):
        make_private_directories(path.parent)
    write_private(path.parent / f".{path.name}.tmp", path, page.encode("utf-8"))
    return path


# --------------------------------------------------------------------------- sigmatch diff

DIFF_PLOTS = ("campaigns", "days")


def diff_png(document: dict, name: str) -> bytes:
    """One plot of DIFF_PLOTS of a diff document (engine.closedloop.diff) as PNG bytes."""
    plt = _pyplot()
    figure = {"campaigns": _diff_campaigns, "days": _diff_days}[name](plt, document)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


_A_COLOUR, _B_COLOUR = "#9aa5b1", "#3b7dd8"


def _diff_campaigns(plt, document: dict):
    import numpy as np
    ids = list(document["campaigns"])[::-1]         # the first campaign on top
    figure, axis = plt.subplots(figsize=(9, max(3.0, 0.45 * (len(ids) + 2))))
    y = np.arange(len(ids))
    entries = [document["campaigns"][c] for c in ids]
    axis.barh(y + 0.2, [e["contacts_a"] for e in entries], 0.4, label="A", color=_A_COLOUR)
    axis.barh(y - 0.2, [e["contacts_b"] for e in entries], 0.4, label="B", color=_B_COLOUR)
    axis.set_yticks(y, [f"{c} (new in B)" if e["in"] == "b" else f"{c} (only in A)" if e["in"] == "a" else c
                        for c, e in zip(ids, entries)])
    axis.set_xlabel("contacts (count, every kind)")
    axis.set_title("Contacts per campaign in A and in B")
    axis.legend(loc="lower right", fontsize="small")
    axis.grid(axis="x", alpha=0.3)
    return figure


def _diff_days(plt, document: dict):
    days = document["days"]
    figure, axis = plt.subplots(figsize=(9, 4))
    x = list(range(len(days)))
    for name, entry in document["channels"].items():
        a = [entry["days"].get(d, {}).get("contacts_a", 0) for d in days]
        b = [entry["days"].get(d, {}).get("contacts_b", 0) for d in days]
        line, = axis.plot(x, b, "o-", label=f"{name}: B")
        axis.plot(x, a, "s--", color=line.get_color(), alpha=0.6, label=f"{name}: A")
    axis.set_ylabel("contacts (count, every kind)")
    axis.set_xlabel("local day")
    axis.set_title(f"Contacts per channel and local day (UTC{document['utc_offset']}): A dashed, B solid")
    axis.set_xticks(x, days, rotation=45 if len(days) > 7 else 0, ha="right" if len(days) > 7 else "center")
    axis.legend(fontsize="small", ncol=2)
    axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    return figure


_DIFF_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>sigmatch diff {{ period }}</title>
""" + _STYLE + """<h1>What B changes</h1>
<p>A: {{ a }}<br>B: {{ b }}<br>Traces: {{ traces }}. {{ period }}.{% if state %} Both from the state of {{ state }}.{% endif %}</p>
<ul>{% for line in summary %}<li>{{ line }}</li>{% endfor %}</ul>
<h2>Contacts per campaign</h2>
<img alt="contacts per campaign in A and in B" src="data:image/png;base64,{{ plots.campaigns }}">
<table><tr><th class="name">campaign</th><th class="name">channel</th>{% for c in columns %}<th>{{ c }}</th>{% endfor %}<th></th></tr>
{% for row in campaign_rows %}<tr><td class="name">{{ row[0] }}</td><td class="name">{{ row[1] }}</td>
{% for v in row[2:-1] %}<td>{{ v }}</td>{% endfor %}<td class="note">{{ row[-1] }}</td></tr>
{% endfor %}</table>
<h2>Per channel and local day</h2>
<img alt="contacts per channel and day in A and in B" src="data:image/png;base64,{{ plots.days }}">
<table><tr><th class="name">channel</th><th class="name">day</th>{% for c in columns %}<th>{{ c }}</th>{% endfor %}</tr>
{% for row in channel_rows %}<tr><td class="name">{{ row[0] }}</td><td class="name">{{ row[1] }}</td>
{% for v in row[2:] %}<td>{{ v }}</td>{% endfor %}</tr>
{% endfor %}</table>
{% if budget_rows %}<h2>Budgets reached</h2>
<p>The local time (UTC{{ offset }}) of the send that brought each budget's use to its limit.</p>
<table><tr>{% for c in budget_columns %}<th class="name">{{ c }}</th>{% endfor %}</tr>
{% for row in budget_rows %}<tr>{% for v in row %}<td class="name">{{ v }}</td>{% endfor %}</tr>
{% endfor %}</table>{% endif %}
{% if taken_rows %}<h2>Actions lost to another campaign</h2>
<p>Actions suppressed by the contact policy (min_gap, max_per_day, max_in_window), counted against the
campaign of the subscriber's latest contact, which made the rule fail.</p>
<table><tr>{% for c in taken_columns %}<th class="name">{{ c }}</th>{% endfor %}</tr>
{% for row in taken_rows %}<tr>{% for v in row[:3] %}<td class="name">{{ v }}</td>{% endfor %}
{% for v in row[3:] %}<td>{{ v }}</td>{% endfor %}</tr>
{% endfor %}</table>{% endif %}
{% if warnings %}<h2>Warnings</h2><ul>{% for w in warnings %}<li>{{ w }}</li>{% endfor %}</ul>{% endif %}
<p class="small">{{ legend }}</p>
</body></html>
"""


def write_diff_html(document: dict, path) -> Path:
    """One self-contained page of a diff document at `path` (0640): what B adds, the tables
    and the plots as data URIs."""
    from engine.closedloop import diff as d
    _pyplot()
    try:
        import jinja2
    except ImportError:
        raise SigmatchError("diff --html needs Jinja2: pip install 'sigmatch[report]'") from None
    plots = {name: base64.b64encode(diff_png(document, name)).decode("ascii") for name in DIFF_PLOTS}
    days = document["days"]
    campaign_rows = [[cid, e["channel_b"] or e["channel_a"]] + d._count_cells(e) + [d._NOTES[e["in"]]]
                     for cid, e in document["campaigns"].items()]
    campaign_rows.append(["(all)", ""] + d._count_cells(document["total"]) + [""])
    channel_rows = []
    for name, e in document["channels"].items():
        channel_rows.append([name, "(all)"] + d._count_cells(e))
        channel_rows += [[name, day] + d._count_cells(counts) for day, counts in e["days"].items()]
    page = jinja2.Environment(autoescape=True).from_string(_DIFF_PAGE).render(
        period=f"{days[0]} to {days[-1]}, local days at UTC{document['utc_offset']}" if days else "no contacts",
        a=document["a"]["config"], b=document["b"]["config"], traces=", ".join(document["traces"]),
        state=document["state"], summary=d.summary(document), plots=plots, columns=d._COUNT_COLUMNS,
        campaign_rows=campaign_rows, channel_rows=channel_rows, offset=document["utc_offset"],
        budget_columns=d._BUDGET_COLUMNS, budget_rows=d.budget_rows(document),
        taken_columns=d._TAKEN_COLUMNS, taken_rows=d.taken_rows(document),
        warnings=document["warnings"], legend=d.LEGEND)
    from engine.sinks import make_private_directories, write_private
    path = Path(path)
    if path.parent != Path(""):
        make_private_directories(path.parent)
    write_private(path.parent / f".{path.name}.tmp", path, page.encode("utf-8"))
    return path
