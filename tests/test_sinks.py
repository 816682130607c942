"""The file sinks of SPEC §4: layout, formats, rotation, numbering, atomicity and privacy."""
import csv
import io
import json
import os
import stat
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import engine.sinks as sinks_module
from engine.language.config import CampaignSpec, VariantSpec
from engine.records import (
    ACTION_COLUMNS, ACTION_DTYPE, BAD_FIELDS, BAD_REASONS, CONVERSION_COLUMNS, CONVERSION_DTYPE,
    DEAD_LETTER_COLUMNS, DEAD_LETTER_DTYPE, KIND_CONTROL, KIND_SEND, KINDS,
)
from engine.sinks import SinkSet

CAMPAIGNS = (
    CampaignSpec(id="crbt_school", on=(1,), channel="sms", template="CRBT_OFFER_1"),
    CampaignSpec(id="rebate", on=(3,), channel="boss", template='credit 5, "thanks"'),
    CampaignSpec(id="airport_news", on=(6,), channel="sms", template="报纸 ✈ é"),
)
T0 = 1_767_225_600_000


def actions(rows) -> np.ndarray:
    """rows: (seq, ts, campaign index, msisdn, kind, trigger_ts, cell)."""
    records = np.zeros(len(rows), ACTION_DTYPE)
    for record, (seq, ts, campaign, msisdn, kind, trigger_ts, cell) in zip(records, rows):
        record["seq"], record["ts"], record["campaign"], record["msisdn"] = seq, ts, campaign, msisdn
        record["kind"], record["trigger_ts"], record["cell"] = kind, trigger_ts, cell
    return records


def simple_actions(count, *, campaign=0, ts_step=1000, start_seq=1) -> np.ndarray:
    return actions([(start_seq + i, T0 + i * ts_step, campaign, 13800138000 + i, i % 2, T0 + i * ts_step - 5, 7)
                    for i in range(count)])


def conversions(rows) -> np.ndarray:
    """rows: (seq, ts, campaign index, msisdn, contact_seq, kind)."""
    records = np.zeros(len(rows), CONVERSION_DTYPE)
    for record, (seq, ts, campaign, msisdn, contact_seq, kind) in zip(records, rows):
        record["seq"], record["ts"], record["campaign"] = seq, ts, campaign
        record["msisdn"], record["contact_seq"], record["kind"] = msisdn, contact_seq, kind
    return records


def dead_letters(rows) -> np.ndarray:
    """rows: (offset, reason code, bytes[, field code, count]); by default the value as a
    whole (field 8, "") and a count of 1."""
    records = np.zeros(len(rows), DEAD_LETTER_DTYPE)
    for record, (offset, reason, data, *rest) in zip(records, rows):
        field, count = rest if rest else (8, 1)
        record["offset"], record["reason"], record["nbytes"] = offset, reason, len(data)
        record["field"], record["count"] = field, count
        record["bytes"][:len(data)] = np.frombuffer(data, np.uint8)
    return records


def tree(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def names(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())


def write_all(out, records_by_kind, **options):
    with SinkSet(out, campaigns=CAMPAIGNS, **options) as sinks:
        for kind, records in records_by_kind:
            getattr(sinks, "write_" + kind)(records)
    return sinks


# --------------------------------------------------------------------------- CSV

def test_action_csv_exact_bytes(tmp_path):
    sinks = write_all(tmp_path, [("actions", actions([
        (1, T0, 0, 13800138000, KIND_SEND, T0 - 300_000, 4242),
        (2, T0 + 1, 0, 8613800138001, KIND_CONTROL, T0 - 2, 0),
        (3, T0 + 2, 2, 999999999999999, KIND_SEND, T0 + 2, 4294967295),
    ]))])
    assert sinks.files == [tmp_path / "sms" / "actions-00000001.csv"]
    assert sinks.files[0].read_bytes() == (
        "seq,ts,campaign,msisdn,channel,template,kind,trigger_ts,cell\n"
        f"1,{T0},crbt_school,13800138000,sms,CRBT_OFFER_1,send,{T0 - 300_000},4242\n"
        f"2,{T0 + 1},crbt_school,8613800138001,sms,CRBT_OFFER_1,control,{T0 - 2},0\n"
        f"3,{T0 + 2},airport_news,999999999999999,sms,报纸 ✈ é,send,{T0 + 2},4294967295\n"
    ).encode("utf-8")


def test_headers_follow_records_columns(tmp_path):
    sinks = write_all(tmp_path, [
        ("actions", simple_actions(1)),
        ("conversions", conversions([(1, T0, 0, 13800138000, 1, KIND_SEND)])),
        ("dead_letters", dead_letters([(0, 0, b"\xc0")])),
    ])
    headers = {path.parent.name: path.read_text().split("\n")[0] for path in sinks.files}
    assert headers == {
        "sms": ",".join(ACTION_COLUMNS),
        "conversions": ",".join(CONVERSION_COLUMNS),
        "dead_letters": ",".join(DEAD_LETTER_COLUMNS),
    }
    assert ACTION_COLUMNS == ("seq", "ts", "campaign", "msisdn", "channel", "template", "kind",
                              "trigger_ts", "cell")


def test_csv_quotes_only_values_that_need_it(tmp_path):
    campaigns = (
        CampaignSpec(id="a", on=(1,), channel="sms", template='credit 5, "thanks"'),
        CampaignSpec(id="b", on=(1,), channel="sms", template="line\nbreak"),
        CampaignSpec(id="c", on=(1,), channel="sms", template="cr\rhere"),
        CampaignSpec(id="d", on=(1,), channel="sms", template=""),
        CampaignSpec(id="e", on=(1,), channel="sms", template="  spaced 'single' ;|"),
    )
    with SinkSet(tmp_path, campaigns=campaigns) as sinks:
        sinks.write_actions(actions([(i + 1, T0, i, 13800138000, 0, T0, 1) for i in range(5)]))
    text = sinks.files[0].read_bytes().decode()
    assert text.split("\n", 1)[1] == (
        f'1,{T0},a,13800138000,sms,"credit 5, ""thanks""",send,{T0},1\n'
        f'2,{T0},b,13800138000,sms,"line\nbreak",send,{T0},1\n'
        f'3,{T0},c,13800138000,sms,"cr\rhere",send,{T0},1\n'
        f"4,{T0},d,13800138000,sms,,send,{T0},1\n"
        f"5,{T0},e,13800138000,sms,  spaced 'single' ;|,send,{T0},1\n"
    )
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert [row[5] for row in rows[1:]] == [c.template for c in campaigns]


def test_kinds_and_channel_directories(tmp_path):
    sinks = write_all(tmp_path, [("actions", actions([
        (1, T0, 0, 1, KIND_SEND, T0, 1),
        (2, T0, 1, 2, KIND_CONTROL, T0, 1),
        (3, T0, 2, 3, KIND_CONTROL, T0, 1),
        (4, T0, 1, 4, KIND_SEND, T0, 1),
    ]))])
    assert names(tmp_path) == ["boss/actions-00000001.csv", "sms/actions-00000001.csv"]
    rows = {path.parent.name: list(csv.DictReader(path.open(newline=""))) for path in sinks.files}
    assert [(r["seq"], r["campaign"], r["channel"], r["kind"]) for r in rows["sms"]] == [
        ("1", "crbt_school", "sms", "send"), ("3", "airport_news", "sms", "control")]
    assert [(r["seq"], r["campaign"], r["channel"], r["template"], r["kind"]) for r in rows["boss"]] == [
        ("2", "rebate", "boss", 'credit 5, "thanks"', "control"),
        ("4", "rebate", "boss", 'credit 5, "thanks"', "send")]


def test_conversions_and_dead_letters_exact_bytes(tmp_path):
    write_all(tmp_path, [
        ("conversions", conversions([
            (1, T0 + 10, 0, 13800138000, 1, KIND_SEND),
            (2, T0 + 20, 1, 13800138001, 7, KIND_CONTROL),
        ])),
        ("dead_letters", dead_letters([
            (0, 0, b"\xa3abc"),
            (17, 6, b"", 0, 3),
            (2 ** 64 - 1, 4, bytes(range(64)), 2, 2 ** 64 - 1),
        ])),
    ])
    assert (tmp_path / "conversions" / "conversions-00000001.csv").read_text() == (
        "seq,ts,campaign,msisdn,contact_seq,kind\n"
        f"1,{T0 + 10},crbt_school,13800138000,1,send\n"
        f"2,{T0 + 20},rebate,13800138001,7,control\n"
    )
    assert (tmp_path / "dead_letters" / "dead_letters-00000001.csv").read_text() == (
        "offset,reason,field,count,bytes_hex\n"
        "0,not_an_event,,1,a3616263\n"
        "17,duplicate_key,ts,3,\n"
        f"18446744073709551615,bad_number,msisdn,18446744073709551615,{bytes(range(64)).hex()}\n"
    )
    assert BAD_REASONS[6] == "duplicate_key" and BAD_REASONS[4] == "bad_number"
    assert BAD_FIELDS[0] == "ts" and BAD_FIELDS[2] == "msisdn" and BAD_FIELDS[8] == ""


def test_dead_letter_hex_is_cut_to_nbytes(tmp_path):
    records = dead_letters([(5, 2, b"\x01\x02\x03")])
    records["bytes"][0, 3:] = 0xEE  # garbage past nbytes must not show
    write_all(tmp_path, [("dead_letters", records)])
    text = (tmp_path / "dead_letters" / "dead_letters-00000001.csv").read_text()
    assert text.endswith("\n5,wrong_type,,1,010203\n")


# --------------------------------------------------------------------------- rotation

def test_rotation_by_count(tmp_path):
    sinks = write_all(tmp_path, [("actions", simple_actions(10))], max_records=3, max_age_ms=None)
    assert [p.name for p in sinks.files] == [f"actions-0000000{i}.csv" for i in (1, 2, 3, 4)]
    seqs = [[int(row["seq"]) for row in csv.DictReader(p.open(newline=""))] for p in sinks.files]
    assert seqs == [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10]]
    assert all(p.read_text().count("seq,ts,") == 1 for p in sinks.files)


def test_file_is_finished_as_soon_as_it_is_full(tmp_path):
    with SinkSet(tmp_path, campaigns=CAMPAIGNS, max_records=3) as sinks:
        sinks.write_actions(simple_actions(3))
        assert names(tmp_path) == ["sms/actions-00000001.csv"]
        assert sinks.files == [tmp_path / "sms" / "actions-00000001.csv"]


def test_rotation_by_age(tmp_path):
    ts = [0, 50, 99, 100, 150, 120, 250, 251]
    records = actions([(i + 1, T0 + t, 0, 1, 0, T0, 1) for i, t in enumerate(ts)])
    sinks = write_all(tmp_path, [("actions", records)], max_age_ms=100)
    seqs = [[int(row["seq"]) for row in csv.DictReader(p.open(newline=""))] for p in sinks.files]
    # A record at >= first ts + 100 opens a new file; 120 < 100 + 100 stays with 100.
    assert seqs == [[1, 2, 3], [4, 5, 6], [7, 8]]


def test_age_zero_puts_every_record_in_its_own_file(tmp_path):
    sinks = write_all(tmp_path, [("actions", simple_actions(3, ts_step=0))], max_age_ms=0)
    assert len(sinks.files) == 3


def test_no_age_rotation_when_disabled(tmp_path):
    sinks = write_all(tmp_path, [("actions", simple_actions(5, ts_step=10 ** 9))], max_age_ms=None)
    assert len(sinks.files) == 1


def test_dead_letters_rotate_by_count_only(tmp_path):
    records = dead_letters([(i * 10 ** 9, 0, b"x") for i in range(5)])
    sinks = write_all(tmp_path, [("dead_letters", records)], max_records=2, max_age_ms=0)
    assert [p.name for p in sinks.files] == [f"dead_letters-0000000{i}.csv" for i in (1, 2, 3)]


def test_conversions_rotate_by_age(tmp_path):
    records = conversions([(1, T0, 0, 1, 1, 0), (2, T0 + 5, 0, 1, 1, 0), (3, T0 + 10, 0, 1, 1, 0)])
    sinks = write_all(tmp_path, [("conversions", records)], max_age_ms=10)
    assert [p.read_text().count("\n") - 1 for p in sinks.files] == [2, 1]


def test_rotation_continues_across_batches(tmp_path):
    with SinkSet(tmp_path, campaigns=CAMPAIGNS, max_records=4, max_age_ms=None) as sinks:
        for start in range(1, 11, 3):
            sinks.write_actions(simple_actions(min(3, 11 - start), start_seq=start))
    seqs = [[int(row["seq"]) for row in csv.DictReader(p.open(newline=""))] for p in sinks.files]
    assert seqs == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10]]


# --------------------------------------------------------------------------- batching

@st.composite
def batched_streams(draw):
    nr_actions = draw(st.integers(1, 60))
    steps = draw(st.lists(st.sampled_from([0, 1, 7, 40, 100, 1000]), min_size=nr_actions, max_size=nr_actions))
    campaigns = draw(st.lists(st.integers(0, 2), min_size=nr_actions, max_size=nr_actions))
    ts = T0 + np.cumsum(steps)
    records = actions([(i + 1, int(ts[i]), campaigns[i], 13800138000 + 7 * i, i % 3 == 0, int(ts[i]) - i, i)
                       for i in range(nr_actions)])
    cuts = sorted(draw(st.sets(st.integers(1, nr_actions - 1), max_size=8))) if nr_actions > 1 else []
    options = dict(
        format=draw(st.sampled_from(["csv", "jsonl", "parquet"])),
        max_records=draw(st.integers(1, 12)),
        max_age_ms=draw(st.sampled_from([None, 0, 50, 250, 5000])),
    )
    return records, cuts, options


@settings(deadline=None)
@given(batched_streams())
def test_bytes_do_not_depend_on_batching(stream):
    records, cuts, options = stream
    conversion_records = conversions([(i + 1, int(t), i % 3, 1, i + 1, 0) for i, t in enumerate(records["ts"])])
    dead_letter_records = dead_letters([(i, i % len(BAD_REASONS), bytes([i]) * (i % 65)) for i in range(len(records))])
    # Tiny chunks and row groups so that the batch splits cross their boundaries too.
    with mock.patch.object(sinks_module, "CHUNK_RECORDS", 5), \
            mock.patch.object(sinks_module, "PARQUET_ROW_GROUP", 4), \
            tempfile.TemporaryDirectory() as whole_dir, tempfile.TemporaryDirectory() as split_dir:
        whole, split = Path(whole_dir), Path(split_dir)
        whole_sinks = write_all(whole, [("actions", records), ("conversions", conversion_records),
                                        ("dead_letters", dead_letter_records)], **options)
        batches = []
        for part in np.split(np.arange(len(records)), cuts):
            batches += [("actions", records[part]), ("conversions", conversion_records[part]),
                        ("dead_letters", dead_letter_records[part])]
        split_sinks = write_all(split, batches, **options)
        assert tree(whole) == tree(split)
        # Completion order interleaves record kinds as the caller's calls do; within one kind
        # (actions of every channel together) it follows the records alone.
        for prefix in ("actions", "conversions", "dead_letters"):
            assert [p.relative_to(whole) for p in whole_sinks.files if p.name.startswith(prefix)] == \
                [p.relative_to(split) for p in split_sinks.files if p.name.startswith(prefix)]


def test_text_chunks_join_seamlessly(tmp_path, monkeypatch):
    monkeypatch.setattr(sinks_module, "CHUNK_RECORDS", 3)
    write_all(tmp_path / "chunked", [("actions", simple_actions(10))])
    monkeypatch.setattr(sinks_module, "CHUNK_RECORDS", 1 << 16)
    write_all(tmp_path / "whole", [("actions", simple_actions(10))])
    assert tree(tmp_path / "chunked") == tree(tmp_path / "whole")


# --------------------------------------------------------------------------- numbering, atomicity

def test_numbering_continues_after_existing_files(tmp_path):
    (tmp_path / "sms").mkdir()
    (tmp_path / "sms" / "actions-00000007.csv").write_text("old\n")
    (tmp_path / "sms" / ".actions-00000009.jsonl.tmp").write_text("crashed\n")
    (tmp_path / "sms" / "notes-00000050.txt").write_text("not ours\n")
    sinks = write_all(tmp_path, [("actions", simple_actions(2))], max_records=1)
    assert [p.name for p in sinks.files] == ["actions-00000010.csv", "actions-00000011.csv"]
    assert (tmp_path / "sms" / "actions-00000007.csv").read_text() == "old\n"


def test_second_run_does_not_overwrite(tmp_path):
    first = write_all(tmp_path, [("actions", simple_actions(2)), ("dead_letters", dead_letters([(0, 0, b"")]))])
    before = tree(tmp_path)
    second = write_all(tmp_path, [("actions", simple_actions(2)), ("dead_letters", dead_letters([(0, 0, b"")]))])
    assert [p.name for p in first.files] == ["actions-00000001.csv", "dead_letters-00000001.csv"]
    assert [p.name for p in second.files] == ["actions-00000002.csv", "dead_letters-00000002.csv"]
    after = tree(tmp_path)
    assert {k: after[k] for k in before} == before


def test_open_file_is_a_temp_file_until_finished(tmp_path):
    for format in ("csv", "jsonl", "parquet"):
        out = tmp_path / format
        with SinkSet(out, campaigns=CAMPAIGNS, format=format, max_records=3) as sinks:
            sinks.write_actions(simple_actions(2))
            assert names(out) == [f"sms/.actions-00000001.{format}.tmp"]
            assert sinks.files == []
            sinks.write_actions(simple_actions(2, start_seq=3))
            assert names(out) == [f"sms/.actions-00000002.{format}.tmp", f"sms/actions-00000001.{format}"]
        assert names(out) == [f"sms/actions-00000001.{format}", f"sms/actions-00000002.{format}"]


def test_nothing_written_creates_no_file(tmp_path):
    with SinkSet(tmp_path / "out", campaigns=CAMPAIGNS) as sinks:
        sinks.write_actions(simple_actions(0))
        sinks.write_conversions(np.zeros(0, CONVERSION_DTYPE))
        sinks.write_dead_letters(np.zeros(0, DEAD_LETTER_DTYPE))
    assert sinks.files == []
    assert not (tmp_path / "out").exists() or names(tmp_path / "out") == []


def test_abort_removes_open_files_and_keeps_finished_ones(tmp_path):
    sinks = SinkSet(tmp_path, campaigns=CAMPAIGNS, max_records=2)
    sinks.write_actions(simple_actions(3))
    sinks.write_dead_letters(dead_letters([(0, 0, b"")]))
    sinks.abort()
    assert names(tmp_path) == ["sms/actions-00000001.csv"]
    with pytest.raises(ValueError):
        sinks.write_actions(simple_actions(1))


def test_close_is_idempotent_and_later_writes_fail(tmp_path):
    sinks = SinkSet(tmp_path, campaigns=CAMPAIGNS)
    sinks.write_actions(simple_actions(1))
    sinks.close()
    sinks.close()
    assert len(sinks.files) == 1
    with pytest.raises(ValueError, match="closed"):
        sinks.write_actions(simple_actions(1))


def test_context_manager_finishes_files_on_error(tmp_path):
    with pytest.raises(RuntimeError):
        with SinkSet(tmp_path, campaigns=CAMPAIGNS) as sinks:
            sinks.write_actions(simple_actions(2))
            raise RuntimeError("stream corrupt")
    assert names(tmp_path) == ["sms/actions-00000001.csv"]


def test_durable_mode_writes_the_same_files(tmp_path):
    plain = write_all(tmp_path / "plain", [("actions", simple_actions(5))], max_records=2)
    durable = write_all(tmp_path / "durable", [("actions", simple_actions(5))], max_records=2, durable=True)
    durable.write_stats({"events": 1})
    assert tree(tmp_path / "plain") == {k: v for k, v in tree(tmp_path / "durable").items() if k != "stats.json"}
    assert len(plain.files) == len(durable.files) == 3


# --------------------------------------------------------------------------- privacy

@pytest.mark.parametrize("umask", [0o077, 0o000, 0o022])
def test_files_are_private_whatever_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        with SinkSet(tmp_path / "out", campaigns=CAMPAIGNS, max_records=2) as sinks:
            sinks.write_actions(simple_actions(3))
            temp = tmp_path / "out" / "sms" / ".actions-00000002.csv.tmp"
            assert stat.S_IMODE(temp.stat().st_mode) == 0o640
            sinks.write_conversions(conversions([(1, T0, 0, 1, 1, 0)]))
            sinks.write_dead_letters(dead_letters([(0, 0, b"")]))
            sinks.write_stats({"events": 3})
    finally:
        os.umask(old)
    paths = list((tmp_path / "out").rglob("*"))
    assert {stat.S_IMODE(p.stat().st_mode) for p in paths if p.is_file()} == {0o640}
    assert {stat.S_IMODE(p.stat().st_mode) for p in paths if p.is_dir()} == {0o750}
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o750
    assert len([p for p in paths if p.is_file()]) == 5


# --------------------------------------------------------------------------- JSON Lines, Parquet

def expected_action_rows(records):
    return [{
        "seq": int(r["seq"]), "ts": int(r["ts"]), "campaign": CAMPAIGNS[r["campaign"]].id,
        "msisdn": int(r["msisdn"]), "channel": CAMPAIGNS[r["campaign"]].channel,
        "template": CAMPAIGNS[r["campaign"]].template, "kind": ("send", "control")[r["kind"]],
        "trigger_ts": int(r["trigger_ts"]), "cell": int(r["cell"]),
    } for r in records]


MIXED = actions([
    (1, T0, 0, 13800138000, 0, T0 - 9, 1),
    (2, T0 + 3, 1, 999999999999999, 1, T0, 4294967295),
    (3, T0 + 4, 2, 8613800138000, 0, T0 + 4, 0),
    (4, T0 + 5, 1, 1, 0, T0 + 5, 12),
])


def test_jsonl_reads_back(tmp_path):
    write_all(tmp_path, [
        ("actions", MIXED),
        ("conversions", conversions([(1, T0 + 9, 1, 1, 4, KIND_SEND)])),
        ("dead_letters", dead_letters([(3, 2, b'"\\\n')])),
    ], format="jsonl")
    lines = [json.loads(line) for path in ("sms", "boss")
             for line in (tmp_path / path / "actions-00000001.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sorted(lines, key=lambda row: row["seq"]) == expected_action_rows(MIXED)
    assert all(list(line) == list(ACTION_COLUMNS) for line in lines)
    raw = (tmp_path / "sms" / "actions-00000001.jsonl").read_bytes()
    assert raw.startswith(b'{"seq":1,"ts":' + str(T0).encode() + b',"campaign":"crbt_school",')
    assert "报纸 ✈ é".encode() in raw and raw.endswith(b"}\n") and raw.count(b"\n") == 2
    assert json.loads((tmp_path / "boss" / "actions-00000001.jsonl").read_text().splitlines()[0])["template"] \
        == 'credit 5, "thanks"'
    assert (tmp_path / "conversions" / "conversions-00000001.jsonl").read_text() == (
        f'{{"seq":1,"ts":{T0 + 9},"campaign":"rebate","msisdn":1,"contact_seq":4,"kind":"send"}}\n')
    assert (tmp_path / "dead_letters" / "dead_letters-00000001.jsonl").read_text() == (
        '{"offset":3,"reason":"wrong_type","field":"","count":1,"bytes_hex":"225c0a"}\n')


def test_jsonl_escapes_strings(tmp_path):
    campaigns = (CampaignSpec(id='q"uote\\', on=(1,), channel="sms", template="tab\there\nnl\x01"),)
    with SinkSet(tmp_path, campaigns=campaigns, format="jsonl") as sinks:
        sinks.write_actions(simple_actions(2))
    rows = [json.loads(line) for line in sinks.files[0].read_text().splitlines()]
    assert [(row["campaign"], row["template"]) for row in rows] == [('q"uote\\', "tab\there\nnl\x01")] * 2


def test_parquet_reads_back_typed(tmp_path):
    write_all(tmp_path, [
        ("actions", MIXED),
        ("conversions", conversions([(1, T0 + 9, 1, 1, 4, KIND_CONTROL)])),
        ("dead_letters", dead_letters([(3, 2, b"\x00\xff", 7, 5)])),
    ], format="parquet")
    tables = {d: pq.read_table(tmp_path / d / f"{name}-00000001.parquet")
              for d, name in [("sms", "actions"), ("boss", "actions"), ("conversions", "conversions"),
                              ("dead_letters", "dead_letters")]}
    assert tables["sms"].schema == pa.schema([
        ("seq", pa.uint64()), ("ts", pa.timestamp("ms", tz="UTC")), ("campaign", pa.string()),
        ("msisdn", pa.uint64()), ("channel", pa.string()), ("template", pa.string()), ("kind", pa.string()),
        ("trigger_ts", pa.timestamp("ms", tz="UTC")), ("cell", pa.uint32()),
    ])
    as_ms = {"ts": pa.int64(), "trigger_ts": pa.int64()}     # the times, back to integers to compare
    rows = [t.cast(pa.schema([(f.name, as_ms.get(f.name, f.type)) for f in t.schema])).to_pylist()
            for t in (tables["sms"], tables["boss"])]
    assert sorted(rows[0] + rows[1], key=lambda row: row["seq"]) == expected_action_rows(MIXED)
    assert tables["conversions"].schema.types == [pa.uint64(), pa.timestamp("ms", tz="UTC"), pa.string(), pa.uint64(),
                                                  pa.uint64(), pa.string()]
    conversions_ms = tables["conversions"].set_column(1, "ts", tables["conversions"].column("ts").cast(pa.int64()))
    assert conversions_ms.to_pylist() == [{"seq": 1, "ts": T0 + 9, "campaign": "rebate", "msisdn": 1,
                                           "contact_seq": 4, "kind": "control"}]
    assert tables["dead_letters"].schema.types == [pa.uint64(), pa.string(), pa.string(), pa.uint64(), pa.string()]
    assert tables["dead_letters"].to_pylist() == [{"offset": 3, "reason": "wrong_type", "field": "arg", "count": 5,
                                                   "bytes_hex": "00ff"}]


def test_parquet_large_file_spans_row_groups(tmp_path, monkeypatch):
    monkeypatch.setattr(sinks_module, "PARQUET_ROW_GROUP", 4)
    with SinkSet(tmp_path, campaigns=CAMPAIGNS, format="parquet", max_age_ms=None) as sinks:
        for start in range(1, 11, 3):
            sinks.write_actions(simple_actions(min(3, 11 - start), start_seq=start))
    metadata = pq.ParquetFile(sinks.files[0]).metadata
    assert [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)] == [4, 4, 2]
    assert pq.read_table(sinks.files[0]).column("seq").to_pylist() == list(range(1, 11))


# --------------------------------------------------------------------------- stats.json

def test_stats_json_is_written_atomically(tmp_path):
    sinks = SinkSet(tmp_path / "out", campaigns=CAMPAIGNS)
    stats = {"run": {"events": np.int64(12), "bad_events": {}}, "campaigns": {"crbt_school": {"sent": 3}}}
    sinks.write_stats(stats)
    path = tmp_path / "out" / "stats.json"
    assert path.read_text() == json.dumps(
        {"run": {"events": 12, "bad_events": {}}, "campaigns": {"crbt_school": {"sent": 3}}}, indent=2) + "\n"
    with mock.patch.object(sinks_module.os, "replace", side_effect=OSError("disk gone")):
        with pytest.raises(OSError):
            sinks.write_stats({"run": {"events": 99}})
    assert json.loads(path.read_text())["run"]["events"] == 12  # the old file is whole
    sinks.write_stats({"z": 1, "a": 2})
    assert list(json.loads(path.read_text())) == ["z", "a"]
    assert names(tmp_path / "out") == ["stats.json"]
    sinks.close()


# --------------------------------------------------------------------------- misuse

def test_rejects_wrong_dtype_and_bad_indices(tmp_path):
    with SinkSet(tmp_path, campaigns=CAMPAIGNS) as sinks:
        with pytest.raises(TypeError):
            sinks.write_actions(np.zeros(2, CONVERSION_DTYPE))
        with pytest.raises(ValueError, match="campaign"):
            sinks.write_actions(actions([(1, T0, 3, 1, 0, T0, 1)]))
        with pytest.raises(ValueError, match="kind"):
            sinks.write_actions(actions([(1, T0, 0, 1, len(KINDS), T0, 1)]))
        with pytest.raises(ValueError, match="reason"):
            sinks.write_dead_letters(dead_letters([(0, len(BAD_REASONS), b"")]))
        with pytest.raises(ValueError, match="field"):
            sinks.write_dead_letters(dead_letters([(0, 0, b"", len(BAD_FIELDS), 1)]))
    assert sinks.files == []


@pytest.mark.parametrize("options", [{"format": "xml"}, {"max_records": 0}, {"max_age_ms": -1}])
def test_rejects_bad_options(tmp_path, options):
    with pytest.raises(ValueError):
        SinkSet(tmp_path, campaigns=CAMPAIGNS, **options)


@pytest.mark.parametrize("channel", ["", "..", "a/b", "."])
def test_rejects_channels_that_escape_out(tmp_path, channel):
    with pytest.raises(ValueError, match="channel"):
        SinkSet(tmp_path, campaigns=(CampaignSpec(id="x", on=(1,), channel=channel),))


# --------------------------------------------------------------------------- property: CSV round trip

@settings(deadline=None)
@given(st.lists(st.text(st.characters(blacklist_categories=("Cs",)), max_size=12), min_size=1, max_size=4))
def test_csv_round_trips_any_template(templates):
    campaigns = tuple(CampaignSpec(id=f"c{i}", on=(1,), channel="sms", template=t) for i, t in enumerate(templates))
    with tempfile.TemporaryDirectory() as out:
        with SinkSet(Path(out), campaigns=campaigns) as sinks:
            sinks.write_actions(actions([(i + 1, T0, i, 1, 0, T0, 1) for i in range(len(templates))]))
        text = sinks.files[0].read_bytes().decode("utf-8")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert [row[5] for row in rows[1:]] == templates
    for template in templates:
        quoted = any(c in template for c in ',"\r\n')
        assert (f',"{template.replace(chr(34), 2 * chr(34))}",' in text) if quoted else (f",{template},send," in text)


# ---------------------------------------------------------------------------- variants
VARIANT_CAMPAIGNS = (
    CampaignSpec(id="plain", on=(1,), channel="sms", template="ONE"),
    CampaignSpec(id="ab", on=(1,), channel="sms", variants=(VariantSpec("A", 1), VariantSpec("B,\"b\"", 3))),
    CampaignSpec(id="none", on=(1,), channel="sms"),
)


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_the_template_is_the_records_variant_of_its_campaign(tmp_path, fmt):
    records = actions([(1, T0, 0, 13800138000, 0, T0, 0), (2, T0, 1, 13800138001, 1, T0, 0),
                       (3, T0, 1, 13800138002, 2, T0, 0), (4, T0, 2, 13800138003, 0, T0, 0)])
    records["variant"] = [0, 1, 0, 0]
    with SinkSet(tmp_path, campaigns=VARIANT_CAMPAIGNS, format=fmt) as sinks:
        sinks.write_actions(records)
    path = next((tmp_path / "sms").glob(f"actions-*.{fmt}"))
    if fmt == "parquet":
        templates = pq.read_table(path).column("template").to_pylist()
    elif fmt == "jsonl":
        templates = [json.loads(line)["template"] for line in path.read_text().splitlines()]
    else:
        templates = [row["template"] for row in csv.DictReader(io.StringIO(path.read_text()))]
    assert templates == ["ONE", 'B,"b"', "A", ""]


@pytest.mark.parametrize("campaign, variant", [(1, 2), (0, 1), (2, 1)])
def test_a_variant_its_campaign_does_not_have_is_refused(tmp_path, campaign, variant):
    records = actions([(1, T0, campaign, 13800138000, 0, T0, 0)])
    records["variant"] = variant
    with SinkSet(tmp_path, campaigns=VARIANT_CAMPAIGNS) as sinks:
        with pytest.raises(ValueError, match="variant"):
            sinks.write_actions(records)


class _HeldWrites:
    """Sinks whose write_actions waits, once begun, until `go` is set; then `done(records)`."""

    def __init__(self):
        import threading
        self.written, self.writing, self.go = [], threading.Event(), threading.Event()

    def write_actions(self, records):
        self.writing.set()
        self.go.wait()
        self.done(records)


def _interrupt_finish(writer, sinks, times: int = 1) -> None:
    """The next writer.finish() is interrupted (Ctrl-C) as it waits, `times` times over, and
    the held write then goes on."""
    wait = writer._done.wait
    left = [times]

    def interrupted(*args, **kwargs):
        if not left[0]:
            return wait(*args, **kwargs)
        left[0] -= 1
        sinks.go.set()
        raise KeyboardInterrupt

    writer._done.wait = interrupted


class _Slow(_HeldWrites):
    def done(self, records):
        self.written.append(len(records))


def _writer_holding(*sizes):
    """A SinkThread writing batches of `sizes` records into _Slow sinks: the first held once
    begun, the others waiting behind it."""
    from engine.sinks import SinkThread
    sinks = _Slow()
    writer = SinkThread(sinks, depth=2)
    writer.write_actions(np.zeros(sizes[0], ACTION_DTYPE))
    sinks.writing.wait()
    for n in sizes[1:]:
        writer.write_actions(np.zeros(n, ACTION_DTYPE))
    return writer, sinks


def test_an_interrupted_finish_waits_for_the_batch_being_written():
    """A second Ctrl-C while replay waits for its files: the thread ends the batch it is
    writing and drops the rest before finish() re-raises, so that stats.json and close()
    never run beside its writes to the same files."""
    writer, sinks = _writer_holding(1, 2)          # the second waits behind the first
    _interrupt_finish(writer, sinks)
    with pytest.raises(KeyboardInterrupt):
        writer.finish(interrupted=True)
    assert writer._done.is_set() and writer.dropped
    assert sinks.written == [1]


def test_a_first_interruption_in_finish_lets_every_batch_be_written():
    """A single Ctrl-C or SIGTERM that lands while replay waits for its last files (the stream
    had ended): every batch is written, as after a first interruption anywhere else, and the
    interruption is raised once they are. It dropped them, and left the files unfinished."""
    writer, sinks = _writer_holding(1, 2)
    _interrupt_finish(writer, sinks)
    with pytest.raises(KeyboardInterrupt):
        writer.finish()
    assert writer._done.is_set() and not writer.dropped
    assert sinks.written == [1, 2]


def test_finish_waits_out_the_batch_being_written_through_more_interrupts():
    """Interrupted again while it waits for the batch being written after a second Ctrl-C:
    it still waits, as close() must not run beside that write. Thread.join, which finish()
    waited on until 2026-12-07, marks the thread stopped when an interrupt breaks it on
    Python 3.11 (the running thread's lock released on the way out): the next join then
    returned at once, and close() ran while the thread wrote (files left as .tmp)."""
    writer, sinks = _writer_holding(1)
    _interrupt_finish(writer, sinks, times=3)
    with pytest.raises(KeyboardInterrupt):
        writer.finish(interrupted=True)
    assert writer._done.is_set() and sinks.written == [1]


def test_finish_ends_the_thread_through_interrupts_while_the_queue_is_full():
    """The writer behind (its queue full) and Ctrl-C pressed again and again: an interrupt
    that broke the end marker's put, blocked while the queue was full, let finish() return
    while the thread still wrote, and close() ran beside it."""
    writer, sinks = _writer_holding(1, 2, 3)        # one being written, two waiting
    put = writer._queue.put
    left = [3]

    def interrupted(item, *args, **kwargs):
        if item is None and left[0]:
            left[0] -= 1
            sinks.go.set()
            raise KeyboardInterrupt
        return put(item, *args, **kwargs)

    writer._queue.put = interrupted
    with pytest.raises(KeyboardInterrupt):
        writer.finish(interrupted=True)
    assert writer.done and sinks.written == [1]


def test_a_batch_that_fails_while_finish_is_interrupted_is_the_error_raised():
    """A second Ctrl-C while the batch being written meets a full disk: finish() raised the
    interruption, and replay said "aborted" with the files removed but the disk not named.
    The write's error is raised now, the interruption its context; without an error the
    interruption goes on (above)."""
    from engine.sinks import SinkThread

    class Full(_HeldWrites):
        def done(self, records):
            raise OSError(28, "No space left on device", "out/sms/.actions-00000001.csv.tmp")

    sinks = Full()
    writer = SinkThread(sinks, depth=2)
    writer.write_actions(np.zeros(1, ACTION_DTYPE))
    sinks.writing.wait()
    _interrupt_finish(writer, sinks)
    raised = None
    try:
        writer.finish(interrupted=True)
    except BaseException as e:          # the interruption too: pytest would stop at it
        raised = e
    assert isinstance(raised, OSError) and raised.errno == 28, repr(raised)
    assert isinstance(raised.__context__, KeyboardInterrupt)
    assert writer.dropped and not writer._thread.is_alive()
    writer.finish()                     # said once: the caller has it


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_a_batch_that_completes_many_files_holds_few_descriptors(tmp_path, fmt):
    """max_records = 1 and one batch of 600 actions on two channels, in a process allowed 64
    open files: every file is written, in order. A completed file's temp is closed at once
    and renamed at the batch's end (each took a descriptor until then: EMFILE at the usual
    limit of 1024 from a batch of 65,536 actions with max_records = 50)."""
    import subprocess
    import sys
    script = f"""
import resource
from pathlib import Path
import numpy as np
from engine.language.config import CampaignSpec
from engine.records import ACTION_DTYPE
from engine.sinks import SinkSet
campaigns = (CampaignSpec(id="a", on=(1,), channel="sms", template="A"),
             CampaignSpec(id="b", on=(1,), channel="boss", template="B"))
records = np.zeros(600, ACTION_DTYPE)
records["seq"] = np.arange(1, 601)
records["ts"] = records["trigger_ts"] = 1_790_000_000_000 + np.arange(600)
records["campaign"] = np.arange(600) % 2
records["msisdn"] = 13800138000 + np.arange(600)
resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
with SinkSet(Path({str(tmp_path / 'out')!r}), campaigns=campaigns, format={fmt!r}, max_records=1) as sinks:
    sinks.write_actions(records)
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[1],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    for channel in ("sms", "boss"):
        names = sorted(p.name for p in (tmp_path / "out" / channel).iterdir())
        assert names == [f"actions-{n:08d}.{fmt}" for n in range(1, 301)]


def test_a_file_that_cannot_be_completed_at_close_is_removed_and_the_others_completed(tmp_path, monkeypatch):
    """close() at the end of a run: a file whose last flush fails (the disk fills then) is
    removed rather than left as a temporary file; the other open files are completed; the
    first error is raised."""
    from engine import sinks as sink_module
    sinks = SinkSet(tmp_path, campaigns=CAMPAIGNS)
    sinks.write_actions(simple_actions(2, campaign=0))                 # sms
    sinks.write_actions(simple_actions(2, campaign=1, start_seq=3))    # boss
    real = sink_module._SinkFile.close_temp

    def full_disk_for_sms(self, durable):
        if self.path.parent.name == "sms":
            raise OSError(28, "No space left on device", str(self.temp))
        real(self, durable)

    monkeypatch.setattr(sink_module._SinkFile, "close_temp", full_disk_for_sms)
    with pytest.raises(OSError, match="No space left"):
        sinks.close()
    assert names(tmp_path) == ["boss/actions-00000001.csv"]


def test_a_page_path_is_judged_before_the_work(tmp_path, monkeypatch):
    """unwritable_output_file (report's and diff's --html, report's --list): what is in the
    way, named; None where the page can be written, its missing folders made then."""
    from engine.sinks import unwritable_output_file
    (tmp_path / "file").write_text("")
    assert unwritable_output_file(tmp_path / "file" / "a" / "p.html") == f"{tmp_path / 'file'} is not a directory"
    assert unwritable_output_file(tmp_path) == f"{tmp_path} is a directory"
    assert unwritable_output_file(tmp_path / "new" / "deeper" / "p.html") is None
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")
    assert "which does not exist" in unwritable_output_file(tmp_path / "gone" / "p.html")
    # another user's page in a sticky folder (/tmp): renamed over only by its owner
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    (sticky / "p.html").write_text("")
    assert unwritable_output_file(sticky / "p.html") is None            # root may
    monkeypatch.setattr(os, "geteuid", lambda: os.getuid() + 1000)
    assert unwritable_output_file(sticky / "p.html") == (f"{sticky / 'p.html'} is another user's file in a "
                                                         "sticky directory")
    assert unwritable_output_file(sticky / "q.html") is None            # a new page may be made there
