"""`sigmatch report` (engine.closedloop): on hand-built outputs whose counts, uplift and interval
are known (computed here by hand and by statsmodels), and on the real outputs of a replay of a
generated world in each format; stats.json's configuration, seq range and local days; files
cut short; directories it refuses; the non-responder list and its way back in as an exclude list."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from statsmodels.stats.proportion import confint_proportions_2indep

from engine.api import Engine
from engine.errors import StreamError
from engine.closedloop.nonresponders import non_responders, write_list
from engine.closedloop.outputs import ReportError, read_outputs
from engine.closedloop.report import build_report, format_report
from engine.records import ACTION_COLUMNS, CONVERSION_COLUMNS
from loaders.lists import load_list

DAY = 86_400_000
HOUR = 3_600_000
T0 = 1_793_548_800_000          # 2026-11-02T00:00:00+08:00 (2026-11-01T16:00Z)
SHA = "ab" * 32


def sigmatch(*args, cwd=None):
    proc = subprocess.run([sys.executable, "-m", "engine.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    return proc.returncode, proc.stdout, proc.stderr.strip().splitlines()


def one_line_error(code, stdout, lines, *words):
    assert code != 0
    assert len(lines) == 1 and lines[0].startswith("sigmatch: error: "), lines
    for word in words:
        assert word in lines[0], (word, lines[0])


# --------------------------------------------------------------------------- hand-built outputs

class Output:
    """An output directory written by hand: actions by (campaign, template, kind, ts, msisdn),
    conversions of some of them, stats.json with a given funnel."""

    def __init__(self, sha: str = SHA, utc_offset: str = "+08:00", campaigns=("promo", "other")):
        self.sha, self.utc_offset, self.campaigns = sha, utc_offset, list(campaigns)
        self.actions: list[tuple] = []          # seq, ts, campaign, msisdn, channel, template, kind
        self.conversions: list[tuple] = []      # ts, campaign, msisdn, contact_seq, kind

    def contacts(self, campaign, template, kind, n, *, converted=0, ts=T0, first_msisdn=13_800_000_000,
                 converted_after=HOUR, channel="sms"):
        """n contacts at `ts` to consecutive numbers; the first `converted` of them convert."""
        for i in range(n):
            seq = len(self.actions) + 1
            self.actions.append((seq, ts, campaign, first_msisdn + i, channel, template, kind))
            if i < converted:
                self.conversions.append((ts + converted_after, campaign, first_msisdn + i, seq, kind))
        return self

    def write(self, out: Path, funnel=None) -> Path:
        (out / "sms").mkdir(parents=True)
        (out / "conversions").mkdir()
        lines = [",".join(ACTION_COLUMNS)]
        lines += [f"{s},{t},{c},{m},{ch},{tp},{k},{t},0" for s, t, c, m, ch, tp, k in self.actions]
        (out / "sms" / "actions-00000001.csv").write_text("\n".join(lines) + "\n")
        lines = [",".join(CONVERSION_COLUMNS)]
        lines += [f"{i + 1},{t},{c},{m},{q},{k}" for i, (t, c, m, q, k) in enumerate(self.conversions)]
        (out / "conversions" / "conversions-00000001.csv").write_text("\n".join(lines) + "\n")
        funnel = funnel or {}
        stats = {"configuration": {"sha256": self.sha, "utc_offset": self.utc_offset, "campaigns": self.campaigns},
                 "run": {"first_seq": 1, "last_seq": len(self.actions)},
                 "campaigns": {c: {"matched": 0, "suppressed_min_gap": 0, **funnel.get(c, {})}
                               for c in self.campaigns}}
        (out / "stats.json").write_text(json.dumps(stats))
        return out


def newcombe(x1, n1, x2, n2):
    return confint_proportions_2indep(x1, n1, x2, n2, method="newcomb", compare="diff")


@pytest.fixture
def known(tmp_path):
    """promo: template A 600 sends (120 convert) and 120 controls (12); template B 400 sends
    (40) and 80 controls (8); other: 50 sends (5), 10 controls; 150 global controls (9)."""
    out = (Output()
           .contacts("promo", "A", "send", 600, converted=120)
           .contacts("promo", "A", "control", 120, converted=12, first_msisdn=13_900_000_000)
           .contacts("promo", "B", "send", 400, converted=40, first_msisdn=13_810_000_000)
           .contacts("promo", "B", "control", 80, converted=8, first_msisdn=13_910_000_000)
           .contacts("other", "O", "send", 50, converted=5, first_msisdn=13_820_000_000)
           .contacts("other", "O", "control", 10, first_msisdn=13_920_000_000)
           .contacts("promo", "A", "global_control", 150, converted=9, first_msisdn=13_930_000_000))
    return out.write(tmp_path / "out", funnel={"promo": {"matched": 2_000, "suppressed_min_gap": 250}})


def test_a_conversion_naming_another_subscribers_contact_is_not_joined_to_it(tmp_path, caplog):
    """helper-133: a conversion of another run, copied in, joined the contact its contact_seq
    names (another subscriber, another campaign) and was counted under that contact's
    template, a variant the campaign never had."""
    out = Output().contacts("promo", "A", "send", 3, converted=1).contacts("other", "O", "send", 2)
    out.conversions.append((T0 + HOUR, "promo", 13_999_999_999, 2, "send"))       # seq 2: another subscriber
    out.conversions.append((T0 + HOUR, "promo", 13_800_000_000, 4, "send"))       # seq 4: campaign other
    report = build_report(read_outputs([out.write(tmp_path / "out")]))
    assert "2 conversions name contacts (contact_seq) of another subscriber or campaign" in " ".join(report["warnings"])
    promo = report["campaigns"]["promo"]
    assert promo["conversions_send"] == 3 and sorted(promo["variants"]) == ["A"]
    assert report["campaigns"]["other"]["conversions_send"] == 0
    # one unit short of it: a conversion of its own contact is joined without a word
    out = Output().contacts("promo", "A", "send", 3, converted=3)
    assert not build_report(read_outputs([out.write(tmp_path / "own")]))["warnings"]


def test_contacts_in_two_directories_are_said_to_count_twice(tmp_path):
    """helper-133: a week and a replay of its first half were summed without a word."""
    week = Output().contacts("promo", "A", "send", 10).contacts("promo", "A", "send", 5, ts=T0 + DAY,
                                                                   first_msisdn=13_700_000_000)
    half = Output().contacts("promo", "A", "send", 10)
    other = Output().contacts("promo", "A", "send", 10, ts=T0 + 1)         # 1 ms later: other contacts
    # each with stats of its own: no copy of another's, which is refused before
    paths = [week.write(tmp_path / "week"), half.write(tmp_path / "half", funnel={"promo": {"matched": 7}}),
             other.write(tmp_path / "other")]
    warnings = build_report(read_outputs(paths))["warnings"]
    assert [w for w in warnings if "counted twice" in w] == [
        f"{paths[1]}: 10 contacts (campaign, subscriber and time) also in a directory named before it: two runs over "
        "the same events? They are counted twice"]
    assert not [w for w in build_report(read_outputs([paths[0], paths[2]]))["warnings"] if "twice" in w]


def test_a_campaign_the_configuration_does_not_name_is_warned_of(tmp_path):
    """helper-133: a record of campaign zzz_unknown added a row of zeros to the funnel, without a word."""
    out = Output().contacts("promo", "A", "send", 3).contacts("zzz_unknown", "Z", "send", 1, first_msisdn=13_700_000_000)
    warnings = build_report(read_outputs([out.write(tmp_path / "out")]))["warnings"]
    assert "campaign 'zzz_unknown': in the record files, but not in the configuration that wrote them" in " ".join(warnings)
    out = Output().contacts("promo", "A", "send", 3).contacts("other", "Z", "send", 1, first_msisdn=13_700_000_000)
    assert not build_report(read_outputs([out.write(tmp_path / "named")]))["warnings"]


def test_known_counts_give_known_rates_uplift_and_interval(known):
    report = build_report(read_outputs([known]))
    promo = report["campaigns"]["promo"]
    assert (promo["sends"], promo["controls"], promo["global_controls"]) == (1_000, 200, 150)
    assert (promo["conversions_send"], promo["conversions_control"], promo["conversions_global_control"]) == (160, 20, 9)
    assert promo["rate_send"] == pytest.approx(0.16) and promo["rate_control"] == pytest.approx(0.10)
    assert promo["uplift"] == pytest.approx(0.06)
    low, high = newcombe(160, 1_000, 20, 200)
    assert (promo["ci_low"], promo["ci_high"]) == (pytest.approx(low), pytest.approx(high))
    assert promo["relative_uplift"] == pytest.approx(0.6) and promo["incremental_conversions"] == pytest.approx(60)
    # [-0.0..., +0.1...]: the interval holds 0 at these sizes
    assert (promo["note"] == "not significant") == (low <= 0 <= high)
    assert promo["funnel"] == {"matched": 2_000, "suppressed_min_gap": 250}

    a, b = promo["variants"]["A"], promo["variants"]["B"]
    assert (a["sends"], a["conversions_send"], a["controls"], a["conversions_control"]) == (600, 120, 120, 12)
    assert a["uplift"] == pytest.approx(0.10)
    assert (a["ci_low"], a["ci_high"]) == tuple(map(pytest.approx, newcombe(120, 600, 12, 120)))
    assert a["note"] == ""                       # 0.20 against 0.10 on 120 controls: significant
    assert b["uplift"] is None and b["note"] == "too few controls"        # 80 controls < 100

    other = report["campaigns"]["other"]
    assert other["note"] == "too few controls" and other["rate_send"] == pytest.approx(0.1)

    # the programme: every send (1,050, 165 converted) against the global controls (150, 9)
    p = report["programme"]
    assert (p["sends"], p["conversions_send"], p["global_controls"], p["conversions_global_control"]) == \
        (1_050, 165, 150, 9)
    assert p["uplift"] == pytest.approx(165 / 1_050 - 9 / 150)
    assert (p["ci_low"], p["ci_high"]) == tuple(map(pytest.approx, newcombe(165, 1_050, 9, 150)))
    assert p["note"] == "" and p["ci_low"] > 0


def test_min_controls_is_the_edge_of_a_figure(known):
    outputs = read_outputs([known])
    assert build_report(outputs, min_controls=81)["campaigns"]["promo"]["variants"]["B"]["uplift"] is None
    assert build_report(outputs, min_controls=80)["campaigns"]["promo"]["variants"]["B"]["uplift"] is not None


def test_local_days_and_conversions_on_their_contacts_day(tmp_path):
    # 23:30 local on 2 Nov is 15:30Z; its conversions come 1 h later, on 3 Nov local time
    out = (Output()
           .contacts("promo", "A", "send", 10, converted=4, ts=T0 + 23 * HOUR + 30 * 60_000)
           .contacts("promo", "A", "send", 5, converted=1, ts=T0 + DAY + HOUR, first_msisdn=13_810_000_000)
           .write(tmp_path / "out"))
    report = build_report(read_outputs([out]))
    assert report["days"] == ["2026-11-02", "2026-11-03"]
    days = report["campaigns"]["promo"]["days"]
    assert (days["2026-11-02"]["sends"], days["2026-11-02"]["conversions_send"]) == (10, 4)
    assert (days["2026-11-03"]["sends"], days["2026-11-03"]["conversions_send"]) == (5, 1)
    assert report["programme"]["days"]["2026-11-02"]["sends"] == 10
    text = format_report(report, by="day")
    assert "2026-11-02  promo" in text and "2026-11-03  promo" in text


def test_a_conversion_whose_contact_is_missing_is_counted_and_warned_of(tmp_path):
    out = Output().contacts("promo", "A", "send", 10, converted=2)
    out.conversions.append((T0 + DAY + HOUR, "promo", 13_800_000_099, 999, "send"))
    report = build_report(read_outputs([out.write(tmp_path / "out")]))
    assert report["campaigns"]["promo"]["variants"]["A"]["conversions_send"] == 3
    day = report["campaigns"]["promo"]["days"]["2026-11-03"]     # its own day, where no contact is
    assert (day["conversions_send"], day["sends"], day["uplift"], day["note"]) == (1, 0, None, "contacts missing")
    assert report["warnings"] == [f"{tmp_path / 'out'}: 1 conversion whose contact is not in its action files: "
                                  "counted on the day they happened, under the campaign's only template (or '?')"]


def test_the_json_shape_the_issue_names(known):
    code, stdout, _ = sigmatch("report", known, "--json", "--no-progress")
    assert code == 0
    document = json.loads(stdout)
    variant = document["campaigns"]["promo"]["variants"]["A"]
    for key in ("sends", "controls", "global_controls", "conversions_send", "conversions_control", "rate_send",
                "rate_control", "uplift", "ci_low", "ci_high"):
        assert key in variant
    for key in ("sends", "global_controls", "rate_send", "rate_global_control", "uplift", "ci_low", "ci_high"):
        assert key in document["programme"]


def test_the_legend_states_the_minimum_of_controls_the_report_used(known, tmp_path):
    # it said 100 whatever --min-controls was, in the table and on the page
    from engine.closedloop.render import write_html
    document = build_report(read_outputs([known]), min_controls=5)
    text = " ".join(format_report(document).split())
    assert "'too few controls' below 5 controls" in text and "below 100" not in text
    page = write_html(document, tmp_path / "r.html").read_text()
    assert "below 5 controls" in page and "below 100" not in page


def test_the_page_names_the_source_of_each_figure_and_warns_first(known, tmp_path):
    """helper-133: the page's funnel, uplift and day by day said nothing of where their
    figures came from (stats.json or the record files), and its warnings came last."""
    pytest.importorskip("matplotlib")
    from engine.closedloop.render import write_html
    for path in (known / "sms").iterdir():
        path.unlink()                       # the files disagree with stats.json now: warned
    document = build_report(read_outputs([known]))
    assert document["warnings"]
    page = write_html(document, tmp_path / "r.html").read_text()
    sources = re.findall(r'<p class="small source">(.*?)</p>', page, re.S)
    assert len(sources) == 4 and all(s.startswith("Source: ") for s in sources)
    assert "stats.json's funnel" in sources[2] and "Newcombe" in sources[1]
    assert page.index('id="warnings"') < page.index("<h2>Programme</h2>")


@pytest.mark.parametrize("by", ["campaign", "variant", "day"])
def test_the_table(known, by):
    code, stdout, lines = sigmatch("report", known, "--by", by, "--no-progress")
    assert code == 0 and not lines
    assert "programme: 1,050 sends" in stdout
    if by == "variant":
        assert any(line.split()[:3] == ["promo", "A", "600"] for line in stdout.splitlines())
    if by == "campaign":
        assert "suppr min gap" in stdout and "2,000" in stdout


# --------------------------------------------------------------------------- real outputs

@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from engine.world.gen import generate
    directory = tmp_path_factory.mktemp("world")
    # two trace files, replayed in order as one trace; each alone is a run of its own
    return generate(directory / "w", subscribers=2_000, events=30_000, campaigns=2, days=2, trace_files=2,
                    progress=False)


@pytest.fixture(scope="module")
def replayed(world, tmp_path_factory):
    """The world replayed into one output directory per format."""
    base = tmp_path_factory.mktemp("outs")
    for fmt in ("csv", "jsonl", "parquet"):
        Engine.from_config(world.config).replay(list(world.traces), out=base / fmt, drain=True, format=fmt,
                                                keep=False)
    return base


def test_the_page_list_and_plots_never_land_on_what_the_report_reads(replayed, tmp_path):
    """helper-133: `report out --html out/stats.json` replaced the run's stats.json, `--list
    out/sms/actions-00000001.csv` an action file in a gateway's folder, exit 0."""
    out = tmp_path / "out"
    shutil.copytree(replayed / "csv", out)
    (tmp_path / "link").symlink_to(out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    action = next((out / "sms").glob("actions-*.csv"))
    for args, words in [
            (("--html", out / "stats.json"), ["--html", "name it FILE.html"]),
            (("--html", tmp_path / "profiles.parquet"), ["name it FILE.html"]),
            (("--html", out / "sms" / "page.html"), ["inside", "an output directory this command reads"]),
            (("--html", tmp_path / "link" / "page.HTML"), ["inside", "an output directory this command reads"]),
            (("--plots", out / "plots"), ["--plots", "inside"]),
            (("--non-responders", 1, "--list", action), ["--list", "inside"])]:
        one_line_error(*sigmatch("report", out, *args), *words)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "out"]
    code, _, _ = sigmatch("report", tmp_path / "link", "--html", tmp_path / "page.htm")
    assert code == 0 and (tmp_path / "page.htm").is_file()


def test_stats_json_names_its_configuration_seq_range_and_local_days(world, replayed):
    stats = json.loads((replayed / "csv" / "stats.json").read_text())
    identity = stats["configuration"]
    assert identity["sha256"] == hashlib.sha256(Path(world.config).read_bytes()).hexdigest()
    assert identity["utc_offset"] == "+08:00"
    assert identity["campaigns"] == list(stats["campaigns"])
    assert stats["run"]["actions"] > 0
    assert (stats["run"]["first_seq"], stats["run"]["last_seq"]) == (1, stats["run"]["actions"])
    for funnel in stats["campaigns"].values():
        for key in ("sent", "control", "converted_send", "converted_control"):
            assert sum(day[key] for day in funnel["days"].values()) == funnel[key]
        for key in ("sent", "control", "global_control", "converted_send", "converted_control",
                    "converted_global_control"):
            assert sum(variant[key] for variant in funnel["variants"].values()) == funnel[key]
    # gen's topup_rescue and plan_upgrade split their contacts between two variants
    for cid, templates in (("topup_rescue", ["TOPUP_RESCUE_A", "TOPUP_RESCUE_B"]),
                           ("s02_plan_upgrade", ["PLAN_UPGRADE_A", "PLAN_UPGRADE_B"])):
        variants = stats["campaigns"][cid]["variants"]
        assert list(variants) == templates
        assert all(v["sent"] + v["control"] + v["global_control"] > 0 for v in variants.values()), (cid, variants)
    assert {day for f in stats["campaigns"].values() for day in f["days"]} <= {"2026-11-02", "2026-11-03",
                                                                               "2026-11-04"}


def test_report_of_a_replay_agrees_with_its_stats_in_every_format(replayed):
    stats = json.loads((replayed / "csv" / "stats.json").read_text())
    documents = {}
    for fmt in ("csv", "jsonl", "parquet"):
        document = build_report(read_outputs([replayed / fmt]))
        for cid, funnel in stats["campaigns"].items():
            entry = document["campaigns"][cid]
            assert (entry["sends"], entry["controls"], entry["conversions_send"], entry["conversions_control"]) == \
                (funnel["sent"], funnel["control"], funnel["converted_send"], funnel["converted_control"]), cid
            assert entry["funnel"]["matched"] == funnel["matched"]
            for day, counts in funnel["days"].items():
                assert entry["days"][day]["sends"] == counts["sent"]
            # --by variant: the records' template column, conversions through their contacts
            for template, counts in funnel["variants"].items():
                if counts["sent"] + counts["control"] + counts["global_control"]:
                    v = entry["variants"][template]
                    assert (v["sends"], v["controls"], v["conversions_send"], v["conversions_control"]) == \
                        (counts["sent"], counts["control"], counts["converted_send"], counts["converted_control"])
        document.pop("outputs")
        documents[fmt] = document
    assert documents["csv"] == documents["jsonl"] == documents["parquet"]


def test_two_directories_of_one_configuration_add_up(world, tmp_path):
    # each trace file replayed alone: two runs of one configuration, as two weeks would be
    outs = [tmp_path / "first", tmp_path / "second"]
    for trace, out in zip(world.traces, outs):
        Engine.from_config(world.config).replay([trace], out=out, drain=True, keep=False)
    alone = [build_report(read_outputs([out])) for out in outs]
    both = build_report(read_outputs(outs))
    assert all(a["programme"]["sends"] for a in alone)
    for cid, entry in both["campaigns"].items():
        for key in ("sends", "controls", "conversions_send", "conversions_control"):
            assert entry[key] == sum(a["campaigns"][cid][key] for a in alone), (cid, key)
        assert entry["funnel"]["matched"] == sum(a["campaigns"][cid]["funnel"]["matched"] for a in alone)


def test_a_copy_of_a_directory_is_refused_not_counted_twice(replayed, tmp_path):
    # stats.json is the same on every run of the same input but for its timing block: a
    # directory whose stats.json equals another's except there is a copy of it
    shutil.copytree(replayed / "csv", tmp_path / "copy")
    code, stdout, lines = sigmatch("report", replayed / "csv", tmp_path / "copy", "--no-progress")
    one_line_error(code, stdout, lines, f"{tmp_path / 'copy'}: the same run as {replayed / 'csv'}", "count twice")
    stats = json.loads((tmp_path / "copy" / "stats.json").read_text())
    stats["timing"] = {"elapsed_s": "junk", "events_per_s": [1]}
    (tmp_path / "copy" / "stats.json").write_text(json.dumps(stats))
    with pytest.raises(ReportError, match="the same run as"):
        read_outputs([replayed / "csv", tmp_path / "copy"])


def test_html_and_plots_are_self_contained_and_show_no_number(replayed, tmp_path):
    code, stdout, lines = sigmatch("report", replayed / "csv", "--html", tmp_path / "r.html", "--plots",
                                   tmp_path / "plots", "--json", "--no-progress")
    assert code == 0, lines
    document = json.loads(stdout)          # --json keeps standard output for the document
    for name in ("funnel", "uplift", "daily"):
        assert (tmp_path / "plots" / f"{name}.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    page = (tmp_path / "r.html").read_text()
    assert page.count('src="data:image/png;base64,') == 3
    # the operator's figures, like every output: owner and group only, whatever the umask
    assert {stat.S_IMODE(p.stat().st_mode) for p in [tmp_path / "r.html", *(tmp_path / "plots").iterdir()]} == {0o640}
    assert stat.S_IMODE((tmp_path / "plots").stat().st_mode) == 0o750
    assert "http://" not in page and "https://" not in page and "<script" not in page
    numbers = read_outputs([replayed / "csv"]).directories[0].actions.msisdn
    assert len(numbers)
    for text in (page, stdout):
        assert not any(str(n) in text for n in np.unique(numbers)[:200])
    assert set(document["campaigns"]) <= set(json.loads((replayed / "csv" / "stats.json").read_text())["campaigns"])


# --------------------------------------------------------------------------- files cut short, refusals

@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_partial_last_line_is_skipped_with_a_warning(replayed, tmp_path, fmt):
    out = tmp_path / "out"
    shutil.copytree(replayed / fmt, out)
    whole = build_report(read_outputs([out]))
    victim = sorted(p for p in out.iterdir() if p.is_dir() and p.name != "conversions")[0]
    victim = sorted(victim.iterdir())[-1]
    with victim.open("ab") as f:
        f.write(b"999999,1793" if fmt == "csv" else b'{"seq":999999,"ts":17')
    code, stdout, lines = sigmatch("report", out, "--json", "--no-progress")
    assert code == 0
    assert len(lines) == 1 and "partial last line skipped" in lines[0] and victim.name in lines[0]
    cut = json.loads(stdout)
    assert cut["campaigns"] == whole["campaigns"] and len(cut["warnings"]) == 1


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_small_batches_parsed_ahead_read_the_same(replayed, tmp_path, fmt, monkeypatch):
    """Batches of a few hundred bytes: many are parsed in the thread ahead of the one turned into
    columns; the document, the codes' order and the warnings (in the files' order) are those of
    one batch."""
    from engine.closedloop import outputs as outputs_module
    out = tmp_path / "out"
    shutil.copytree(replayed / fmt, out)
    victims = [sorted(p for p in d.iterdir() if p.is_file())[0]
               for d in sorted(p for p in out.iterdir() if p.is_dir() and p.name != "dead_letters")]
    for victim in victims:
        with victim.open("ab") as f:
            f.write(b"999999,1793" if fmt == "csv" else b'{"seq":999999,"ts":17')
    one = read_outputs([out])
    monkeypatch.setattr(outputs_module, "BATCH_BYTES", 300)
    many = read_outputs([out])
    assert len(many.warnings) == len(victims) >= 2
    assert many.warnings == one.warnings
    assert all(any(f"{v}: partial last line" in w for w in many.warnings) for v in victims)
    assert (many.campaigns, many.templates, many.kinds) == (one.campaigns, one.templates, one.kinds)
    assert build_report(many) == build_report(one)


def test_a_damaged_parquet_file_is_skipped_with_a_warning(replayed, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(replayed / "parquet", out)
    whole = build_report(read_outputs([out]))
    victim = sorted(sorted(p for p in out.iterdir() if p.is_dir() and p.name != "conversions")[0].iterdir())[-1]
    rows = pq.read_table(victim).num_rows
    victim.write_bytes(victim.read_bytes()[:-100])
    cut = build_report(read_outputs([out]))
    assert len(cut["warnings"]) == 2 and victim.name in cut["warnings"][0] and "skipped" in cut["warnings"][0]
    # Arrow's reason names the file again: its name whole, not masked as if it were a number
    assert "*" not in cut["warnings"][0]
    # and what it cost, against the seqs stats.json numbers
    last = json.loads((out / "stats.json").read_text())["run"]["last_seq"]
    assert f"{out}: its action files hold {last - rows:,} of the {last:,} actions" in cut["warnings"][1]
    total = sum(c["sends"] + c["controls"] for c in whole["campaigns"].values())
    assert sum(c["sends"] + c["controls"] for c in cut["campaigns"].values()) == total - rows


def test_arrows_reasons_name_the_file_whole_and_mask_numbers():
    from engine.closedloop.outputs import _reason
    path = Path("/data/20261102/sms/actions-00000005.parquet")
    reason = _reason(OSError(f"Failed to open local file '{path}'. Detail: 13800138000 [errno 13]\nmore"), path)
    assert reason.startswith("Failed to open local file 'actions-00000005.parquet'. Detail: 138")
    assert "13800138000" not in reason and reason.endswith(" [errno 13]")


def test_refusals_are_one_line(known, tmp_path):
    (tmp_path / "empty").mkdir()
    one_line_error(*sigmatch("report", tmp_path / "empty"), "empty", "not a sigmatch output directory (no stats.json)")
    one_line_error(*sigmatch("report", tmp_path / "nowhere"), "nowhere", "no such directory")
    (tmp_path / "file").write_text("x")
    one_line_error(*sigmatch("report", tmp_path / "file"), "file", "not a directory")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "stats.json").write_text("{not json")
    one_line_error(*sigmatch("report", tmp_path / "junk"), "junk/stats.json", "not a sigmatch stats.json")
    (tmp_path / "deep").mkdir()
    (tmp_path / "deep" / "stats.json").write_text("[" * 100_000 + "]" * 100_000)
    one_line_error(*sigmatch("report", tmp_path / "deep"), "deep/stats.json", "not a sigmatch stats.json",
                   "nested too deeply")
    other = Output(sha="cd" * 32).contacts("promo", "A", "send", 3).write(tmp_path / "other")
    one_line_error(*sigmatch("report", known, other), str(other), "another configuration", "sha256")
    one_line_error(*sigmatch("report", known, known), "named twice")
    one_line_error(*sigmatch("report", known, "--since", "7d"), "--since", "--non-responders")
    one_line_error(*sigmatch("report", known, "--non-responders", "2"), "--list")
    one_line_error(*sigmatch("report", known, "--non-responders", "2", "--list", tmp_path / "x.roar", "--since",
                             "7 days"), "--since 7 days")
    one_line_error(*sigmatch("report", known, "--non-responders", "2", "--list", tmp_path / "x.roar",
                             "--campaign", "prom"), "--campaign prom", "did you mean 'promo'")
    bad = Output().contacts("promo", "A", "send", 3).write(tmp_path / "bad")
    csv = bad / "sms" / "actions-00000001.csv"
    csv.write_text(csv.read_text().replace("13800000001,", "x,"))
    one_line_error(*sigmatch("report", bad), "actions-00000001.csv", "not a sigmatch output file")


# the command with a hook run at its exit (atexit runs once non-daemon threads are joined, before
# the interpreter tears down): the threads still alive then, and whether statsmodels is imported
AT_EXIT = """
import atexit, sys, threading
atexit.register(lambda: print("at exit:", sorted(t.name for t in threading.enumerate()
                                                 if t is not threading.main_thread()),
                              "statsmodels.stats.proportion" in sys.modules, file=sys.__stderr__))
from engine.cli import main
sys.argv[0] = "sigmatch"
main()
"""


def test_a_report_leaves_no_thread_importing_at_exit(known, tmp_path):
    """report imported statsmodels on a daemon thread while it read the files: a directory it
    refused at once ended the process with that thread still importing. The import runs in a
    child process that the report stops (engine.closedloop.uplift.intervals_ahead); the figures
    are statsmodels' all the same."""
    for args in ([tmp_path / "nowhere"], [known, "--json"]):
        proc = subprocess.run([sys.executable, "-c", AT_EXIT, "report", *map(str, args)], capture_output=True,
                              text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
        lines = proc.stderr.strip().splitlines()
        assert lines[-1] == "at exit: [] False", proc.stderr
        if args[0] == known:
            assert proc.returncode == 0, proc.stderr
            figures = json.loads(proc.stdout)["campaigns"]["promo"]["variants"]["A"]
            low, high = newcombe(120, 600, 12, 120)
            assert (figures["ci_low"], figures["ci_high"]) == (float(low), float(high))
        else:
            assert proc.returncode == 1 and lines[:-1] == [f"sigmatch: error: {tmp_path / 'nowhere'}: no such "
                                                           "directory (report reads the output directories of "
                                                           "replay or run)"]


@pytest.mark.parametrize("copy", ["actions", "conversions", "jsonl beside csv"])
def test_records_read_twice_are_refused_not_counted_twice(replayed, tmp_path, copy):
    out = tmp_path / "out"
    shutil.copytree(replayed / "csv", out)
    if copy == "conversions":
        first = sorted((out / "conversions").iterdir())[0]
        shutil.copy(first, first.with_name("conversions-00000500.csv"))
        what = "conversion records"
    else:
        channel = sorted(p for p in out.iterdir() if p.is_dir() and p.name != "conversions")[0]
        first = sorted(channel.iterdir())[0]
        if copy == "actions":
            shutil.copy(first, first.with_name("actions-00000500.csv"))
        else:
            twin = sorted((replayed / "jsonl" / channel.name).iterdir())[0]
            shutil.copy(twin, channel / "actions-00009999.jsonl")
        what = "action records"
    code, stdout, lines = sigmatch("report", out, "--json", "--no-progress")
    one_line_error(code, stdout, lines, str(out), what, "more than once", "copied twice")
    with pytest.raises(ReportError, match="more than once"):
        read_outputs([out])


def test_a_directory_named_like_an_output_file_is_not_read(known):
    # a copy tool's leftover, or an operator's mkdir: not a file of the run; said, since a
    # link to nothing or a pipe in its place may stand for records that are not counted
    (known / "sms" / "actions-00000009.csv").mkdir()
    (known / "conversions" / "conversions-00000009.csv").mkdir()
    (known / "sms" / "actions-00000010.csv").symlink_to(known / "nowhere.csv")
    os.mkfifo(known / "sms" / "actions-00000011.csv")
    code, stdout, lines = sigmatch("report", known, "--json", "--no-progress")
    assert code == 0, lines
    assert json.loads(stdout)["campaigns"]["promo"]["sends"] == 1_000
    assert [line.split(" WARNING sigmatch.report: ")[1] for line in lines] == [
        f"{known}/sms/actions-00000009.csv: not a file (a directory): skipped",
        f"{known}/sms/actions-00000010.csv: not a file (a symbolic link to nothing): skipped",
        f"{known}/sms/actions-00000011.csv: not a file (a pipe, socket or device): skipped",
        f"{known}/conversions/conversions-00000009.csv: not a file (a directory): skipped"]


def _damage_csv(path: Path, line: int, column: str, value: str) -> None:
    lines = path.read_text().split("\n")
    fields = lines[line].split(",")
    fields[lines[0].split(",").index(column)] = value
    lines[line] = ",".join(fields)
    path.write_text("\n".join(lines))


def _damage_bytes(path: Path, old: bytes, new: bytes) -> None:
    data = path.read_bytes()
    assert old in data
    path.write_bytes(data.replace(old, new, 1))


def _damage_jsonl(path: Path, line: int, key: str, value) -> None:
    lines = path.read_text().split("\n")
    record = json.loads(lines[line])
    if value is KeyError:
        del record[key]
    else:
        record[key] = value
    lines[line] = json.dumps(record)
    path.write_text("\n".join(lines))


def _damage_parquet(path: Path, column: str, value, kind=None) -> None:
    import pyarrow as pa
    table = pq.read_table(path)
    if value is KeyError:
        table = table.drop_columns([column])
    elif kind is not None:          # a column of another type, as a hand edit writes it
        at = table.schema.get_field_index(column)
        table = table.set_column(at, column, pa.array([value] * table.num_rows, kind))
    else:
        at = table.schema.get_field_index(column)
        table = table.set_column(at, column, pa.array([value] * table.num_rows, table.schema.field(column).type))
    pq.write_table(table, path)


# (format, records, damage, words of the refusal): each a field a run always writes, missing
# or out of what a run writes; before, a missing ts was counted on a day 292 million years
# ago, a missing number as a number, a missing campaign as a campaign "", a JSON campaign
# that is not UTF-8 gave a traceback
_DAMAGES = [
    ("csv", "sms", lambda f: _damage_csv(f, 2, "msisdn", ""), "1 record without msisdn"),
    ("csv", "sms", lambda f: _damage_csv(f, 2, "ts", ""), "1 record without ts"),
    ("csv", "sms", lambda f: _damage_csv(f, 2, "campaign", ""), "a record without campaign"),
    ("csv", "sms", lambda f: _damage_csv(f, 2, "kind", "sned"), "kind 'sned': a run writes send, control"),
    ("csv", "sms", lambda f: _damage_csv(f, 2, "ts", "9223372036854775807"), "a ts out of range"),
    ("csv", "sms", lambda f: _damage_csv(f, 2, "ts", "-1"), "a ts out of range"),
    ("jsonl", "sms", lambda f: _damage_jsonl(f, 1, "msisdn", None), "1 record without msisdn"),
    ("jsonl", "sms", lambda f: _damage_jsonl(f, 1, "kind", KeyError), "1 record without kind"),
    ("jsonl", "sms", lambda f: _damage_jsonl(f, 1, "campaign", None), "1 record without campaign"),
    ("jsonl", "sms", lambda f: _damage_bytes(f, b'"campaign":"', b'"campaign":"\xff'),
     "a campaign that is not UTF-8 text"),
    ("jsonl", "sms", lambda f: _damage_bytes(f, b'"template":"', b'"template":"\xc3'),
     "a template that is not UTF-8 text"),
    # helper-133: named the batch's first file, without a reason
    ("jsonl", "sms", lambda f: f.write_bytes(b"\xef\xbb\xbf" + f.read_bytes()), "starts with a byte order mark of UTF-8"),
    # helper-136: UTF-16's lost its records as partial lines, exit 0
    ("jsonl", "sms", lambda f: f.write_bytes(f.read_text().encode("utf-16")), "a byte order mark of UTF-16"),
    # the mark alone: the bytes after it in the buffer are no file's (helper-137 saw UTF-32)
    ("jsonl", "sms", lambda f: f.write_bytes(b"\xff\xfe"), "a byte order mark of UTF-16"),
    ("jsonl", "conversions", lambda f: _damage_jsonl(f, 0, "contact_seq", None), "1 record without contact_seq"),
    ("jsonl", "conversions", lambda f: _damage_jsonl(f, 0, "ts", KeyError), "1 record without ts"),
    ("parquet", "sms", lambda f: _damage_parquet(f, "msisdn", None), "without msisdn"),
    ("parquet", "sms", lambda f: _damage_parquet(f, "kind", KeyError), "no column kind"),
    ("parquet", "conversions", lambda f: _damage_parquet(f, "contact_seq", KeyError), "no column contact_seq"),
    # helper-133: text columns of numbers gave a traceback (ArrowNotImplementedError, or a
    # campaign of integers that the table's formatting then failed on)
    ("parquet", "sms", lambda f: _damage_parquet(f, "campaign", 5, "int64"), "campaign is int64, not text"),
    ("parquet", "sms", lambda f: _damage_parquet(f, "template", 5, "int32"), "template is int32, not text"),
    ("parquet", "sms", lambda f: _damage_parquet(f, "campaign", True, "bool"), "campaign is bool, not text"),
    ("parquet", "conversions", lambda f: _damage_parquet(f, "kind", 1.5, "double"), "kind is double, not text"),
    ("parquet", "conversions", lambda f: _damage_parquet(f, "campaign", 7, "int64"), "campaign is int64, not text"),
]


@pytest.mark.parametrize("fmt, records, damage, words", _DAMAGES)
def test_a_record_a_run_never_writes_is_refused_naming_its_file(replayed, tmp_path, fmt, records, damage, words):
    out = tmp_path / "out"
    shutil.copytree(replayed / fmt, out)
    if records == "sms":        # the channel with most files: the victim is read with others
        records = max((p for p in out.iterdir() if p.is_dir() and p.name != "conversions"),
                      key=lambda p: len(list(p.iterdir()))).name
    files = sorted((out / records).iterdir())
    assert len(files) >= 2
    victim = files[len(files) // 2]
    damage(victim)
    code, stdout, lines = sigmatch("report", out, "--no-progress")
    one_line_error(code, stdout, lines, f"{victim}: not a sigmatch output file", words)
    with pytest.raises(ReportError, match="not a sigmatch output file"):
        read_outputs([out])


def test_a_file_gone_while_read_is_named(replayed, tmp_path, monkeypatch):
    """Listed, then removed before its batch is read (a run's files are renamed into place,
    but an operator or a gateway may take one away): one line naming it, not an OSError."""
    from engine.closedloop import outputs as outputs_module
    out = tmp_path / "out"
    shutil.copytree(replayed / "csv", out)
    victim = sorted(next(p for p in out.iterdir() if p.is_dir() and p.name != "conversions").iterdir())[-1]
    listed = outputs_module._record_files

    def listed_then_removed(*args):
        files = listed(*args)
        victim.unlink(missing_ok=True)
        return files
    monkeypatch.setattr(outputs_module, "_record_files", listed_then_removed)
    with pytest.raises(ReportError, match=f"^{victim}: cannot be read \\(No such file or directory\\)$"):
        read_outputs([out])


def test_a_header_saved_with_crlf_shows_what_differs(replayed, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(replayed / "csv", out)
    victim = sorted((out / "conversions").iterdir())[-1]
    victim.write_bytes(victim.read_bytes().replace(b"\n", b"\r\n"))
    one_line_error(*sigmatch("report", out), f"{victim}: not a sigmatch output file", "kind\\r'")


def test_files_holding_fewer_actions_than_stats_json_numbers_are_warned_of(known):
    # emptied, as a gateway that takes the files it sends would leave the directory
    (known / "sms" / "actions-00000001.csv").write_text("")
    document = build_report(read_outputs([known]))
    assert document["programme"]["sends"] == 0
    assert document["warnings"][0] == (
        f"{known}: its action files hold 0 of the 1,410 actions stats.json numbers (seq 1 to 1,410): files "
        "missing, emptied or cut short? Their contacts and conversions are not counted")


def test_a_run_that_stopped_part_way_is_warned_of(world, tmp_path):
    """stats.json's run.stopped (a broken stream here): a report of it reads as one of the
    whole trace unless it says the run stopped, and where."""
    first, second = world.traces
    broken = tmp_path / "broken.msgpack"
    broken.write_bytes(first.read_bytes() + b"\xc1" + second.read_bytes())
    at = first.stat().st_size
    with pytest.raises(StreamError):
        Engine.from_config(world.config).replay([broken], out=tmp_path / "out", keep=False)
    document = build_report(read_outputs([tmp_path / "out"]))
    assert document["warnings"] == [
        f"{tmp_path / 'out'}: its run stopped part-way (corrupt at byte {at:,} of {broken}): its figures count the "
        "events before that alone, and the actions still waiting then were never sent"]
    Engine.from_config(world.config).replay([first], out=tmp_path / "whole", keep=False)
    assert build_report(read_outputs([tmp_path / "whole"]))["warnings"] == []


def test_a_conversions_directory_gone_is_warned_of(replayed, tmp_path):
    # without it every rate reads 0 and every uplift a loss, in a report that looks whole
    out = tmp_path / "out"
    shutil.copytree(replayed / "csv", out)
    counted = json.loads((out / "stats.json").read_text())["run"]["conversions"]
    assert counted > 0
    shutil.rmtree(out / "conversions")
    document = build_report(read_outputs([out]))
    assert document["programme"]["conversions_send"] == 0
    assert document["warnings"] == [f"{out}: its conversion files hold 0 of the {counted:,} conversions stats.json "
                                    "counts: files missing, emptied or cut short? Those conversions are not counted"]


@pytest.mark.parametrize("damage", ["13800000001x", "x13800000001", "13800000001.5"])
def test_a_damaged_row_is_refused_without_its_msisdn(tmp_path, damage):
    # Arrow quotes the value it could not read; a number glued to a letter passes the CLI's
    # mask as a name, so report masks it itself
    bad = Output().contacts("promo", "A", "send", 3).write(tmp_path / "bad")
    csv = bad / "sms" / "actions-00000001.csv"
    csv.write_text(csv.read_text().replace("13800000001,", damage + ","))
    code, stdout, lines = sigmatch("report", bad)
    one_line_error(code, stdout, lines, "actions-00000001.csv", "not a sigmatch output file")
    assert "3800000001" not in lines[0] and "138" in lines[0], lines[0]


@pytest.mark.parametrize("edit, words", [
    (lambda s: s["campaigns"].update(promo=1), ("campaigns.promo is not an object",)),
    (lambda s: s["campaigns"]["promo"].update(matched="many"), ("campaigns.promo.matched", "not a count")),
    (lambda s: s["campaigns"]["promo"].update(matched=-3), ("campaigns.promo.matched", "not a count")),
    # a count that is null, not whole or NaN was left out of the funnel as if it were a rate
    (lambda s: s["campaigns"]["promo"].update(matched=None), ("campaigns.promo.matched is null, not a count",)),
    (lambda s: s["campaigns"]["promo"].update(matched=1.5), ("campaigns.promo.matched is 1.5, not a count",)),
    (lambda s: s["campaigns"]["promo"].update(matched=float("nan")), ("campaigns.promo.matched is NaN",)),
    (lambda s: s["campaigns"]["promo"].update(variants="x"), ('campaigns.promo.variants is "x", not an object',)),
    # past what the core counts in: the plots' matplotlib raised OverflowError (helper-115)
    # written with separators: the log's mask of digit runs had hidden it (helper-133)
    (lambda s: s["campaigns"]["promo"].update(matched=2**63),
     ("campaigns.promo.matched is 9,223,372,036,854,775,808, not a count",)),
    (lambda s: s["campaigns"]["promo"].update(matched=10**60), ("campaigns.promo.matched is 1,000,000,000,",
                                                                "…, not a count")),
    (lambda s: s["campaigns"]["promo"].update(days={"2026-11-05": {"sent": "x"}}),
     ('campaigns.promo.days.2026-11-05.sent is "x", not a count',)),
    (lambda s: s["campaigns"]["promo"].update(days={"2026-11-05": 3}), ("campaigns.promo.days.2026-11-05 is 3, not an object",)),
    (lambda s: s["campaigns"]["promo"].update(variants={"A": {"sent": -1}}), ("campaigns.promo.variants.A.sent is -1",)),
    (lambda s: s["campaigns"]["promo"].update(uplift="x"), ('campaigns.promo.uplift is "x", not a number',)),
    # the configuration's own rule: no offset past 14 hours, no 60th minute
    (lambda s: s["configuration"].update(utc_offset="+25:00"), ("configuration.utc_offset",)),
    (lambda s: s["configuration"].update(utc_offset="+08:60"), ("configuration.utc_offset",)),
    # the seq range the files are held against (a traceback past 2^64 before)
    (lambda s: s["run"].update(last_seq=10**30), ("run.last_seq", "is not an action's seq")),
    (lambda s: s["run"].update(first_seq=0), ("run.first_seq 0 is not an action's seq",)),
    (lambda s: s["run"].update(first_seq="1"), ("run.first_seq",)),
    (lambda s: s["run"].update(first_seq=5, last_seq=4), ("run.first_seq 5 is past run.last_seq 4",)),
    (lambda s: s.update(run=[]), ("run is not an object",)),
    # helper-123: null read as no run, a stop that is no object as no stop (no warning)
    (lambda s: s.update(run=None), ("run is not an object",)),
    (lambda s: s["run"].update(stopped="broken"), ('run.stopped "broken" is not an object',)),
    (lambda s: s["run"].update(stopped=5), ("run.stopped 5 is not an object",)),
    (lambda s: s["run"].update(stopped={}), ("run.stopped {} is not an object with a reason",)),
    (lambda s: s["run"].update(conversions=-1), ("run.conversions -1 is not a count",)),
    (lambda s: s["configuration"].update(utc_offset="8"), ("configuration.utc_offset", "+08:00")),
    (lambda s: s["configuration"].update(utc_offset=8), ("configuration.utc_offset",)),
    # helper-133: null read as UTC and shown as "UTCNone", missing as UTC, without a word
    (lambda s: s["configuration"].update(utc_offset=None), ("configuration.utc_offset null is not an offset",)),
    (lambda s: s["configuration"].pop("utc_offset"), ("configuration.utc_offset is missing",)),
    (lambda s: s.update(configuration=[]), ("configuration is not an object",)),
    (lambda s: s.update(configuration=None), ("configuration is not an object",)),       # helper-136
    (lambda s: s["configuration"].update(campaigns=5), ("configuration.campaigns", "not a list of campaign ids")),
    (lambda s: s["configuration"].update(campaigns=["promo", 7]), ("configuration.campaigns",)),
    (lambda s: s["configuration"].update(sha256=["x"]), ("configuration.sha256", "not a digest")),
])
def test_a_stats_json_sigmatch_never_writes_is_one_line(known, tmp_path, edit, words):
    # edited by hand or written by another tool: refused, not a traceback, and never misread
    # (a count silently skipped, local days in the wrong offset)
    bad = tmp_path / "bad"
    shutil.copytree(known, bad)
    stats = json.loads((bad / "stats.json").read_text())
    edit(stats)
    (bad / "stats.json").write_text(json.dumps(stats))
    one_line_error(*sigmatch("report", bad), "bad/stats.json", "not a sigmatch stats.json", *words)


def test_a_stats_json_key_given_twice_is_one_line(known, tmp_path):
    """helper-133: a second "run" appended by hand replaced the first, without a word."""
    bad = tmp_path / "bad"
    shutil.copytree(known, bad)
    text = (bad / "stats.json").read_text().rstrip()
    assert text.endswith("}")
    (bad / "stats.json").write_text(text[:-1] + ', "run": {"actions": 1}}')
    one_line_error(*sigmatch("report", bad), "bad/stats.json", "not a sigmatch stats.json",
                   'the key "run" is given twice')


def test_a_stats_json_integer_past_python_s_digit_limit_is_one_line(known, tmp_path):
    # json.loads raised ValueError (more than 4,300 digits), which went up as a traceback
    bad = tmp_path / "bad"
    shutil.copytree(known, bad)
    text = (bad / "stats.json").read_text()
    (bad / "stats.json").write_text(text.replace('"matched": ', '"matched": 1' + "0" * 5000 + ", \"was\": ", 1))
    one_line_error(*sigmatch("report", bad), "bad/stats.json", "not a sigmatch stats.json", "4300")
    (bad / "stats.json").write_text(text)
    (bad / "stats.json").chmod(0)
    if os.geteuid() != 0:       # root reads it all the same
        one_line_error(*sigmatch("report", bad), "bad/stats.json", "cannot be read")


def test_an_unwritable_destination_is_named_by_its_option(known, tmp_path):
    # a parent that is a file cannot be made or written, even by root
    (tmp_path / "file").write_text("x")
    code, _, lines = sigmatch("report", known, "--non-responders", "1", "--list", tmp_path / "file" / "x.roar")
    one_line_error(code, _, lines, f"--list {tmp_path / 'file' / 'x.roar'}: cannot write the list")
    assert ".tmp" not in lines[0]
    one_line_error(*sigmatch("report", known, "--plots", tmp_path / "file" / "plots"), "--plots", "cannot write")
    one_line_error(*sigmatch("report", known, "--html", tmp_path / "file" / "w.html"), "--html", "cannot write")


def test_outputs_of_an_older_sigmatch_are_read_alone_only(known, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(known, old)
    stats = json.loads((old / "stats.json").read_text())
    del stats["configuration"]
    (old / "stats.json").write_text(json.dumps(stats))
    document = build_report(read_outputs([old]))
    assert document["campaigns"]["promo"]["sends"] == 1_000
    # in the document, so that --json and the page say it, not the log alone (helper-136)
    assert document["warnings"] == [f"{old}/stats.json: no configuration identity (written by an older sigmatch): "
                                    "local days are taken in UTC"]
    with pytest.raises(ReportError, match="no configuration identity"):
        read_outputs([known, old])


# --------------------------------------------------------------------------- non-responders

def test_a_header_that_differs_names_the_file_it_differs_from_in_full(replayed, tmp_path):
    # helper-123: "differs from actions-00000001.csv's", a name every channel's directory has
    out = tmp_path / "csv"
    shutil.copytree(replayed / "csv", out)
    files = sorted(out.glob("*/actions-*.csv"))
    first = [f for f in files if f.parent == files[0].parent]
    if len(first) < 2:
        second = first[0].with_name("actions-99999999.csv")
        second.write_bytes(first[0].read_bytes())
        first.append(second)
    data = first[1].read_bytes()
    head, _, rest = data.partition(b"\n")
    first[1].write_bytes(head + b"\r\n" + rest)
    one_line_error(*sigmatch("report", out), f"differs from {first[0]}'s)")


@pytest.fixture
def senders(tmp_path):
    """Numbers 1..6 of 138000000xx: sends over two days, some conversions."""
    n = 13_800_000_000
    out = Output()
    at = T0 + 10 * DAY
    # 1: 3 promo sends, no conversion                -> a non-responder at K <= 3
    out.contacts("promo", "A", "send", 1, first_msisdn=n + 1, ts=at - 5 * DAY)
    out.contacts("promo", "A", "send", 1, first_msisdn=n + 1, ts=at - DAY)
    out.contacts("promo", "A", "send", 1, first_msisdn=n + 1, ts=at - HOUR)
    # 2: 2 sends (promo, other), the second converted -> never
    out.contacts("promo", "A", "send", 1, first_msisdn=n + 2, ts=at - 2 * DAY)
    out.contacts("other", "O", "send", 1, converted=1, first_msisdn=n + 2, ts=at - DAY)
    # 3: 3 other sends, no conversion                 -> K <= 3 over every campaign, never for promo
    for _ in range(3):
        out.contacts("other", "O", "send", 1, first_msisdn=n + 3, ts=at - 3 * DAY)
    # 4: controls only: they do not count
    out.contacts("promo", "A", "control", 1, first_msisdn=n + 4, ts=at - DAY)
    out.contacts("promo", "A", "control", 1, first_msisdn=n + 4, ts=at - DAY)
    out.contacts("promo", "A", "control", 1, first_msisdn=n + 4, ts=at - DAY)
    # 5: 2 promo sends long ago, converted a control since: a response
    out.contacts("promo", "A", "send", 1, first_msisdn=n + 5, ts=at - 9 * DAY)
    out.contacts("promo", "A", "send", 1, first_msisdn=n + 5, ts=at - 8 * DAY)
    out.contacts("promo", "A", "control", 1, converted=1, first_msisdn=n + 5, ts=at - HOUR)
    # the last action: everything is counted back from here
    out.contacts("other", "O", "send", 1, first_msisdn=n + 6, ts=at)
    return out.write(tmp_path / "out"), n


@pytest.mark.parametrize("k, since, campaign, expected", [
    (1, None, None, {1, 3, 6}),
    (2, None, None, {1, 3}),
    (3, None, None, {1, 3}),
    (4, None, None, set()),
    (2, None, "promo", {1}),                   # 5's promo response was to a control contact
    (2, 4 * DAY, None, {1, 3}),
    (2, 2 * DAY, None, {1}),                   # 1's last 2; 2's conversion falls inside; 3's sends before
    (1, 2 * DAY, "promo", {1, 2}),             # 2 converted on the other campaign only
    (3, DAY, None, set()),
])
def test_non_responders(senders, k, since, campaign, expected):
    out, n = senders
    found = non_responders(read_outputs([out]), k, since_ms=since, campaign=campaign)
    assert {int(m) - n for m in found.msisdns} == expected


def test_the_readmes_list_path_works_where_its_directory_is_missing(senders, tmp_path):
    # README: `--list lists/nonresponders.roar`, run from a checkout that has no lists/
    out, n = senders
    code, stdout, lines = sigmatch("report", out, "--non-responders", "2", "--list", "lists/nonresponders.roar",
                                   "--no-progress", cwd=tmp_path)
    assert code == 0 and not lines, lines
    listed = tmp_path / "lists" / "nonresponders.roar"
    assert set(load_list(listed).tolist()) == {n + 1, n + 3}
    assert stat.S_IMODE(listed.parent.stat().st_mode) == 0o750


def test_the_list_goes_back_in_as_an_exclude_list(senders, tmp_path):
    out, n = senders
    listed = tmp_path / "cfg" / "nonresp.roar"
    listed.parent.mkdir()
    code, stdout, lines = sigmatch("report", out, "--non-responders", "2", "--list", listed, "--no-progress")
    assert code == 0 and not lines
    assert "2 subscribers with at least 2 sends of any campaign and no conversion" in stdout
    assert stat.S_IMODE(listed.stat().st_mode) == 0o640
    assert set(load_list(listed).tolist()) == {n + 1, n + 3}
    profiles = tmp_path / "cfg" / "profiles.csv"
    profiles.write_text("msisdn\n" + "".join(f"{n + i}\n" for i in range(1, 7)))
    config = tmp_path / "cfg" / "campaigns.toml"
    config.write_text('[engine]\nprofiles = "profiles.csv"\n\n[lists]\nnonresp = "nonresp.roar"\n\n'
                      '[[campaign]]\nid = "promo"\non = ["CALL_MO_END"]\nchannel = "sms"\nexclude = ["nonresp"]\n')
    assert Engine.from_config(config).eligible["promo"] == 4


def test_write_list_round_trip_of_large_numbers(tmp_path):
    numbers = np.array([1, 13_800_000_000, 999_999_999_999_999], np.uint64)
    write_list(tmp_path / "l.roar", numbers)
    assert load_list(tmp_path / "l.roar").tolist() == numbers.tolist()


def test_the_list_is_written_in_the_format_its_suffix_names(senders, tmp_path):
    """FILE.txt: one MSISDN a line, as a configuration reads a .txt list; another suffix is
    refused before the outputs are read (it used to get a Roaring bitmap, which a
    configuration naming FILE.txt then read as unreadable text)."""
    out, n = senders
    listed = tmp_path / "nonresp.txt"
    code, stdout, lines = sigmatch("report", out, "--non-responders", "2", "--list", listed, "--no-progress")
    assert code == 0 and not lines, lines
    assert listed.read_text() == f"{n + 1}\n{n + 3}\n"
    assert set(load_list(listed).tolist()) == {n + 1, n + 3}
    assert stat.S_IMODE(listed.stat().st_mode) == 0o640
    as_csv = tmp_path / "nonresp.csv"
    code, stdout, lines = sigmatch("report", out, "--non-responders", "2", "--list", as_csv, "--no-progress")
    assert code == 0 and as_csv.read_text() == f"msisdn\n{n + 1}\n{n + 3}\n"
    assert set(load_list(as_csv).tolist()) == {n + 1, n + 3}
    one_line_error(*sigmatch("report", out, "--non-responders", "2", "--list", tmp_path / "x.json"), "--list",
                   "x.json", "FILE.roar", "FILE.txt", "FILE.csv")
    assert not (tmp_path / "x.json").exists()
    with pytest.raises(ValueError, match="FILE.roar"):
        write_list(tmp_path / "x.json", np.array([13_800_000_000], np.uint64))


@pytest.mark.parametrize("before, counted", [(DAY, True), (DAY + 1, False)])
def test_the_period_starts_exactly_since_before_the_last_action(tmp_path, before, counted):
    # the send `before` ms before the last action counts with --since 1d when it is exactly 1 d before
    n, last = 13_800_000_000, T0 + 5 * DAY
    out = (Output().contacts("promo", "A", "send", 1, first_msisdn=n + 1, ts=last - before)
           .contacts("promo", "A", "send", 1, first_msisdn=n + 1, ts=last - HOUR)
           .contacts("other", "O", "send", 1, first_msisdn=n + 2, ts=last)
           .write(tmp_path / "out"))
    found = non_responders(read_outputs([out]), 2, since_ms=DAY)
    assert found.since_ts == last - DAY
    assert (n + 1 in found.msisdns.tolist()) == counted


@pytest.mark.parametrize("after, responded", [(0, True), (-1, False)])
def test_a_conversion_counts_from_the_start_of_the_period(tmp_path, after, responded):
    n, last = 13_800_000_000, T0 + 5 * DAY
    out = Output()
    out.contacts("promo", "A", "send", 1, first_msisdn=n + 1, ts=last - 3 * DAY)     # before the period
    out.conversions.append((last - DAY + after, "promo", n + 1, 1, "send"))
    out.contacts("promo", "A", "send", 1, first_msisdn=n + 1, ts=last - HOUR)
    out.contacts("promo", "A", "send", 1, first_msisdn=n + 1, ts=last)
    found = non_responders(read_outputs([out.write(tmp_path / "out")]), 2, since_ms=DAY)
    assert (n + 1 in found.msisdns.tolist()) == (not responded)
