"""DuckDB as a peer: the stateless rules of a configuration as one SQL query over an events table.

Tables (loaded once, outside any timing, as sigmatch's compile is):
  subscribers(msisdn BIGINT)           the profile snapshot's numbers (step 2: unknown numbers match nothing)
  profiles(msisdn BIGINT, <attributes>, tags VARCHAR[])   for `where`
  l_<list>(msisdn BIGINT)              one table per list
  a_<area>(cell UINTEGER)              one table per area (cells go up to 2^32 - 1, past INTEGER)
The events are an Arrow table `ev(idx, ts, type, msisdn, peer, cell)` (idx: the event's position
in the stream) registered as a view. The query returns (idx, campaign) for every match, campaign
being the index in Config.campaigns (priority descending, then id), as sigmatch's actions carry it.

Two formulations of the same rules:
* `matches_sql` — the rules as written: per campaign one SELECT with a semi-join per list, area
  and `where` (`msisdn IN (SELECT msisdn FROM l_targets)` ...), all campaigns UNION ALL.
* `compiled_sql` — the rules compiled ahead, as sigmatch compiles them (`compile_tables`, outside
  the timing): `subs(msisdn, e_0, e_1, ...)` holds each campaign's eligibility per subscriber
  (audience, excludes, blacklist, where), `peer_lists(msisdn, p_<list>...)` and
  `cell_areas(cell, c_<area>...)` the memberships; the query is three joins and one CASE per
  campaign, unnested. Faster per small batch (three joins instead of one per rule and campaign).

Only stateless campaigns can be expressed: `campaign_sql` raises ValueError for any stateful rule.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from engine.language import where as where_lang
from engine.language.config import ALL_DAYS, Config

__all__ = ["connect", "matches_sql", "compiled_sql", "compile_tables", "where_sql", "events_table", "StatefulRule"]

MINUTE_MS = 60_000
DAY_MS = 86_400_000


class StatefulRule(ValueError):
    """A campaign or policy rule that needs state, which one SQL query per batch cannot hold."""


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(v) -> str:
    if isinstance(v, str):
        return "'" + v.replace("'", "''") + "'"
    if isinstance(v, float):
        return f"CAST({v!r} AS DOUBLE)"
    return str(int(v))


def where_sql(expr) -> str:
    """A `where` expression as a SQL boolean with the engine's two-valued logic: a comparison
    or `in` involving a null is false (COALESCE(..., false)), and/or/not are plain."""
    W = where_lang
    if isinstance(expr, str):
        expr = W.parse(expr)
    if isinstance(expr, W.And):
        return f"({where_sql(expr.left)} AND {where_sql(expr.right)})"
    if isinstance(expr, W.Or):
        return f"({where_sql(expr.left)} OR {where_sql(expr.right)})"
    if isinstance(expr, W.Not):
        return f"(NOT {where_sql(expr.operand)})"
    if isinstance(expr, W.Compare):
        op = "=" if expr.op == "==" else expr.op
        return f"COALESCE({_value_sql(expr.left)} {op} {_value_sql(expr.right)}, false)"
    if isinstance(expr, W.InList):
        values = ", ".join(_literal(v) for v in expr.values) or "NULL"
        operand = _value_sql(expr.operand)
        found = f"COALESCE({operand} IN ({values}), false)"
        return f"({operand} IS NOT NULL AND NOT {found})" if expr.negated else found
    if isinstance(expr, W.InTags):
        has = f"COALESCE(list_contains(tags, {_literal(expr.tag)}), false)"
        return f"(NOT {has})" if expr.negated else has
    raise TypeError(f"not a condition: {expr!r}")


def _value_sql(expr) -> str:
    W = where_lang
    if isinstance(expr, (W.Number, W.String)):
        return _literal(expr.value)
    if isinstance(expr, W.Attribute):
        return _ident(expr.name)
    if isinstance(expr, W.Negate):
        return f"(-{_value_sql(expr.operand)})"
    if isinstance(expr, W.Arithmetic):
        left, right = _value_sql(expr.left), _value_sql(expr.right)
        if expr.op == "/":
            return f"(CAST({left} AS DOUBLE) / NULLIF(CAST({right} AS DOUBLE), 0))"
        return f"({left} {expr.op} {right})"
    raise TypeError(f"not a value: {expr!r}")


def _window_sql(column: str, window: tuple[int, int]) -> str:
    start, end = window
    if start < end:
        return f"{column} >= {start} AND {column} < {end}"
    return f"({column} >= {start} OR {column} < {end})"


def _check_stateless(config: Config) -> None:
    p = config.policy
    if p.quiet_hours is not None or p.min_gap_ms or p.max_per_day is not None:
        raise StatefulRule("policy: quiet_hours, min_gap and max_per_day need state")
    for c in config.campaigns:
        stateful = [name for name, used in (
            ("delay", c.delay_ms), ("cooldown", c.cooldown_ms), ("once", c.once), ("enter", c.enter),
            ("counter", c.counter), ("stop_after", c.stop_after is not None),
            ("holdout", c.holdout_threshold)) if used]
        if stateful:
            raise StatefulRule(f"campaign {c.id}: {', '.join(stateful)} need state")


def campaign_sql(config: Config, index: int) -> str:
    """SELECT idx, <index> for the events that campaign `index` matches."""
    c = config.campaigns[index]
    off = config.utc_offset_ms
    conds = [f"type IN ({', '.join(map(str, sorted(c.on)))})",
             "msisdn IN (SELECT msisdn FROM subscribers)"]
    if c.audience is not None:
        conds.append(f"msisdn IN (SELECT msisdn FROM {_ident('l_' + c.audience)})")
    for name in (*c.exclude, *config.policy.blacklist):
        conds.append(f"msisdn NOT IN (SELECT msisdn FROM {_ident('l_' + name)})")
    if c.where is not None:
        conds.append(f"msisdn IN (SELECT msisdn FROM profiles WHERE {where_sql(c.where)})")
    if c.peer_in is not None:
        conds.append(f"peer <> 0 AND peer IN (SELECT msisdn FROM {_ident('l_' + c.peer_in)})")
    if c.area is not None:
        conds.append(f"cell IN (SELECT cell FROM {_ident('a_' + c.area)})")
    # local minute of the day; weekday with mon = 0 (1970-01-01, day 0, was a Thursday)
    conds += _time_sql(c, f"(((ts + {off}) // {MINUTE_MS}) % 1440)",
                       f"CAST(((ts + {off}) // {DAY_MS} + 3) % 7 AS INTEGER)")
    return f"SELECT idx, {index} AS campaign FROM ev WHERE " + "\n    AND ".join(conds)


def matches_sql(config: Config) -> str:
    """One query: (idx, campaign) of every match, all campaigns (UNION ALL)."""
    _check_stateless(config)
    return "\nUNION ALL\n".join(campaign_sql(config, i) for i in range(len(config.campaigns)))


def _time_sql(c, minute: str, weekday: str) -> list[str]:
    conds = []
    if c.hours is not None:
        conds.append(_window_sql(minute, c.hours))
    if c.days != ALL_DAYS:
        conds.append(f"(({c.days} >> {weekday}) & 1) = 1")
    return conds


def _peer_lists(config: Config) -> list[str]:
    return sorted({c.peer_in for c in config.campaigns if c.peer_in is not None})


def _areas(config: Config) -> list[str]:
    return sorted({c.area for c in config.campaigns if c.area is not None})


def compile_tables(con, config: Config) -> None:
    """subs, peer_lists and cell_areas for `compiled_sql`, from the tables `connect` made."""
    _check_stateless(config)
    blacklist = config.policy.blacklist

    def eligible(c) -> str:
        conds = ["true"]
        if c.audience is not None:
            conds.append(f"msisdn IN (SELECT msisdn FROM {_ident('l_' + c.audience)})")
        conds += [f"msisdn NOT IN (SELECT msisdn FROM {_ident('l_' + name)})" for name in (*c.exclude, *blacklist)]
        if c.where is not None:
            conds.append(f"msisdn IN (SELECT msisdn FROM profiles WHERE {where_sql(c.where)})")
        return " AND ".join(conds)

    columns = "".join(f", {eligible(c)} AS e_{i}" for i, c in enumerate(config.campaigns))
    con.execute(f"CREATE OR REPLACE TABLE subs AS SELECT msisdn{columns} FROM subscribers")
    if _peer_lists(config):
        names = _peer_lists(config)
        columns = "".join(f", msisdn IN (SELECT msisdn FROM {_ident('l_' + n)}) AS {_ident('p_' + n)}" for n in names)
        union = " UNION ".join(f"SELECT msisdn FROM {_ident('l_' + n)}" for n in names)
        con.execute(f"CREATE OR REPLACE TABLE peer_lists AS SELECT msisdn{columns} FROM ({union})")
    if _areas(config):
        names = _areas(config)
        columns = "".join(f", cell IN (SELECT cell FROM {_ident('a_' + n)}) AS {_ident('c_' + n)}" for n in names)
        union = " UNION ".join(f"SELECT cell FROM {_ident('a_' + n)}" for n in names)
        con.execute(f"CREATE OR REPLACE TABLE cell_areas AS SELECT cell{columns} FROM ({union})")


def compiled_sql(config: Config) -> str:
    """The same matches as `matches_sql`, over the tables of `compile_tables`."""
    _check_stateless(config)
    off = config.utc_offset_ms
    cases = []
    for i, c in enumerate(config.campaigns):
        conds = [f"ev.type IN ({', '.join(map(str, sorted(c.on)))})", f"s.e_{i}"]
        if c.peer_in is not None:
            conds.append(f"p.{_ident('p_' + c.peer_in)}")       # NULL (no row) for 0 and numbers in no list
        if c.area is not None:
            conds.append(f"a.{_ident('c_' + c.area)}")          # NULL for cell 0 and cells in no area
        conds += _time_sql(c, f"(((ev.ts + {off}) // {MINUTE_MS}) % 1440)",
                           f"CAST(((ev.ts + {off}) // {DAY_MS} + 3) % 7 AS INTEGER)")
        cases.append(f"CASE WHEN {' AND '.join(conds)} THEN {i} END")
    joins = "JOIN subs s ON s.msisdn = ev.msisdn"
    if _peer_lists(config):
        joins += " LEFT JOIN peer_lists p ON p.msisdn = ev.peer"
    if _areas(config):
        joins += " LEFT JOIN cell_areas a ON a.cell = ev.cell"
    types = sorted({t for c in config.campaigns for t in c.on}) or [-1]
    return (f"SELECT idx, campaign FROM (\n  SELECT ev.idx, unnest([{', '.join(cases)}]) AS campaign\n"
            f"  FROM ev {joins}\n  WHERE ev.type IN ({', '.join(map(str, types))})\n) WHERE campaign IS NOT NULL")


def connect(config: Config, world, *, threads: int = 1):
    """A DuckDB connection with the world's tables. `threads=1`: one core, as sigmatch uses."""
    import duckdb

    con = duckdb.connect()
    con.execute(f"SET threads={int(threads)}")
    profiles = world.profiles
    msisdn = pa.array(np.asarray(profiles.msisdn, dtype=np.uint64).astype(np.int64))
    columns = {"msisdn": msisdn, **{k: v for k, v in profiles.columns.items() if k not in ("msisdn", "tags")}}
    if profiles.tags is not None:
        columns["tags"] = profiles.tags
    profile_table = pa.table(columns)
    subscribers = pa.table({"msisdn": msisdn})
    con.register("_profiles", profile_table)
    con.execute("CREATE TABLE profiles AS SELECT * FROM _profiles")
    con.unregister("_profiles")
    con.register("_subscribers", subscribers)
    con.execute("CREATE TABLE subscribers AS SELECT * FROM _subscribers")
    con.unregister("_subscribers")
    for name, members in world.lists.items():
        table = _ident("l_" + name)
        con.register("_list", pa.table({"msisdn": pa.array(np.asarray(members, np.uint64).astype(np.int64))}))
        con.execute(f"CREATE TABLE {table} AS SELECT msisdn::BIGINT AS msisdn FROM _list")
        con.unregister("_list")
    for name, cells in world.areas.items():
        table = _ident("a_" + name)
        con.register("_area", pa.table({"cell": pa.array(np.asarray(cells, np.uint32))}))
        con.execute(f"CREATE TABLE {table} AS SELECT cell::UINTEGER AS cell FROM _area")
        con.unregister("_area")
    compile_tables(con, config)
    return con


def events_table(idx, ts, type_, msisdn, peer, cell) -> pa.Table:
    """The events as the query reads them (numbers as int64: they are < 10^15)."""
    return pa.table({
        "idx": pa.array(idx, pa.int64()),
        "ts": pa.array(ts, pa.int64()),
        "type": pa.array(type_, pa.int32()),
        "msisdn": pa.array(msisdn, pa.int64()),
        "peer": pa.array(peer, pa.int64()),
        "cell": pa.array(cell, pa.uint32()),
    })
