"""The peer harness (bench/peers): every peer's output equals sigmatch's on a small world.

Behaviour only: nothing here looks at a time, a speed or a ratio.
"""
import numpy as np
import pytest

pytest.importorskip("duckdb")

from bench.peers import duck  # noqa: E402
from bench.peers.run import PeerMismatch, run_peers  # noqa: E402

ROW_KEYS = {"peer", "events", "seconds", "events_per_s", "ratio_to_sigmatch", "equal", "note"}
SIZES = dict(subscribers=2_000, events=20_000, seed=3)


def test_every_peer_equals_sigmatch(tmp_path):
    rows = run_peers(tmp_path, **SIZES, model_events=None, repeat=1, batch=1000)
    peers = [r["peer"] for r in rows]
    assert peers == [
        "sigmatch", "sigmatch, CSV sinks", "sigmatch, 1,000-event chunks", "sigmatch, model slice",
        "reference model", "duckdb, decode msgpack",
        "duckdb, Arrow table, rules as written", "duckdb, Arrow table, compiled rules",
        "duckdb, 1,000-event batches, rules as written", "duckdb, 1,000-event batches, compiled rules",
    ]
    assert all(r["equal"] is True for r in rows)
    assert all(r["events"] == SIZES["events"] for r in rows)      # the model ran on the whole trace
    assert set(rows[0]) == ROW_KEYS
    assert "threads=1" in rows[-1]["note"]


def test_a_rule_left_out_of_the_sql_is_caught(tmp_path, monkeypatch):
    """The comparison is not vacuous: DuckDB without the policy blacklist disagrees."""
    real = duck.matches_sql

    def without_blacklist(config):
        return real(config).replace('AND msisdn NOT IN (SELECT msisdn FROM "l_dnd")', "")

    monkeypatch.setattr(duck, "matches_sql", without_blacklist)
    with pytest.raises(PeerMismatch, match="only in duckdb"):
        run_peers(tmp_path, **SIZES, model_events=0, repeat=1, sinks=False)


def test_where_sql_agrees_with_the_engine_on_nulls_and_tags(tmp_path):
    import duckdb
    import pyarrow as pa

    from engine.language import where
    from loaders.profiles import load_profiles

    (tmp_path / "p.csv").write_text(
        "msisdn,arpu,brand,tags\n"
        "13800000001,70,postpaid,student|vip\n"
        "13800000002,,prepaid,\n"
        "13800000003,10,,student\n"
        "13800000004,55.5,family,vip\n")
    profiles = load_profiles(tmp_path / "p.csv")
    table = pa.table({"msisdn": pa.array(profiles.msisdn.astype(np.int64)), **profiles.columns,
                      "tags": profiles.tags})
    con = duckdb.connect()
    con.register("profiles", table)
    for text in ["arpu >= 50", "not arpu >= 50", "brand != 'prepaid'", "not (brand == 'prepaid')",
                 "brand in ['family', 'postpaid'] or arpu < 20", "brand not in ['family']",
                 "'student' in tags", "'vip' not in tags and arpu * 2 > 100", "arpu / 0 > 1 or arpu - 5 < 10"]:
        want = where.evaluate(where.parse(text), profiles).tolist()
        got = [r[0] for r in con.execute(
            f"SELECT {duck.where_sql(text)} FROM profiles ORDER BY msisdn").fetchall()]
        assert got == want, text
