"""Compile a configuration and its world (profiles, lists, areas) into the core's flat tables.

Everything static about a subscriber — audience, exclude lists, the policy blacklist and
`where` — is folded into eligibility bits, one bit per distinct combination, so the matcher
answers "may this campaign consider this subscriber?" with one memory read. Campaigns that
share a combination share its bit, which keeps the row narrow when there are many campaigns.
"""
from __future__ import annotations

import datetime
import difflib
import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Optional
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine._core import Core, PeerTable, shards_of
from engine.language.config import Config
from engine.errors import ConfigError, LoadError
from engine.wording import plural
from loaders import usable_cores
from loaders.areas import load_area
from loaders.lists import load_list
from loaders.profiles import Profiles, format_problem, load_profiles
from loaders.tabular import TextFormat

# `where` expressions evaluated at once while compiling: each holds a few columns' worth of
# intermediate results
WHERE_THREADS = 4

__all__ = ["World", "load_world", "compile_core", "Compiled", "anniversary_codes"]

log = logging.getLogger("sigmatch.compile")

_ADD_MODES = {"count": 0, "dur": 1, "dur_minutes": 2}
_RECHECK_BITS = {"area": 1, "powered_on": 2, "audience": 4, "hours": 8}
_EXEMPT_BITS = {"min_gap": 1, "max_per_day": 2, "quiet_hours": 4, "max_in_window": 8}
_PERIODS = {None: 0, "day": 1, "week": 2, "month": 3}
_EPOCH = datetime.date(1970, 1, 1)
# start/end as local day numbers (floor((ts + utc_offset) / 86,400,000)), so that the core
# compares integers; an open end is the widest int32
DAY_MIN, DAY_MAX = -2**31, 2**31 - 1


def local_day(date: datetime.date) -> int:
    """A local date -> its local day number (1970-01-01 is 0)."""
    return (date - _EPOCH).days


@dataclass
class World:
    """What a configuration refers to, loaded: profiles, lists by name, areas by name."""
    profiles: Profiles
    lists: dict[str, np.ndarray] = field(default_factory=dict)
    areas: dict[str, np.ndarray] = field(default_factory=dict)
    # list name -> its peer set as the core's table, built once for every engine compiled
    # from this world (the workers' shards share it: at L a table is hundreds of MB)
    peer_tables: dict[str, PeerTable] = field(default_factory=dict)
    # (i, n): the profiles hold only worker i of n's rows (shard_world)
    shard: Optional[tuple[int, int]] = None
    # the attribute columns were dropped once compiled (release_columns): a later compile
    # that reads an attribute must say so, not call it unknown
    released: bool = False

    def peer_table(self, name: str) -> PeerTable:
        """List `name` as a peer set (engine._core.PeerTable), built at the first call and
        shared after. Raises KeyError for a list the world does not hold."""
        if name not in self.peer_tables:
            self.peer_tables[name] = PeerTable(np.ascontiguousarray(self.lists[name], dtype=np.uint64))
        return self.peer_tables[name]


def shard_world(world: World, shard: tuple[int, int]) -> World:
    """`world` with only the profile rows of worker i of n (`shard` (i, n)), for a worker that
    owns its copy of the world: once the caller drops `world`, the other workers' rows are
    freed before it compiles, rather than held until its compile ends. The lists, areas and
    peer tables are the same objects."""
    from loaders.profiles import take_rows
    profiles = world.profiles
    mine = shards_of(np.ascontiguousarray(profiles.msisdn, dtype=np.uint64), shard[1]) == shard[0]
    return World(take_rows(profiles, np.flatnonzero(mine)), world.lists, world.areas, world.peer_tables,
                 shard=shard, released=world.released)


def release_columns(world: World) -> None:
    """Drop a loaded snapshot's attribute columns once engines are compiled from it: they
    served `where`, evaluated once at compile, and they are most of a snapshot's memory
    (gigabytes at 30M subscribers). The MSISDNs stay."""
    world.profiles.columns = {}
    world.profiles.tags = None
    world.profiles.not_numbers = {}
    world.released = True


def build_peer_tables(config: Config, world: World) -> None:
    """Build now the peer sets the configuration's campaigns use (World.peer_table), so that
    workers forked after share them."""
    for c in config.campaigns:
        if c.peer_in is not None:
            world.peer_table(c.peer_in)


def require_profiles(config: Config) -> None:
    """ConfigError unless the configuration names its profile snapshot (every engine needs one)."""
    if config.profiles is None:
        raise ConfigError(f"{config.named}: engine.profiles: a profile snapshot is required")


def load_world(config: Config) -> World:
    # Only the attributes some `where` or `anniversary` reads are loaded: the rest of a
    # snapshot would cost gigabytes at province scale and serve nothing.
    fmt = TextFormat(encoding=config.encoding, null_values=config.null_values)
    require_inputs(config)
    profiles = load_profiles(config.profiles, columns=_where_columns(config), fmt=fmt)
    lists = {name: load_list(path, fmt) for name, path in config.lists.items()}
    areas = {name: load_area(path, fmt) for name, path in config.areas.items()}
    return World(profiles, lists, areas)


def require_inputs(config: Config) -> None:
    """LoadError naming the configuration and its key for the first profile snapshot, list or
    area file that is missing, a link to nothing or a directory: what a service checks
    before it makes its folders, and load_world before it loads. The files' contents are
    the loaders' to judge."""
    require_profiles(config)
    _require_input(config, "engine.profiles", config.profiles, "profile", format_problem)
    for name, path in config.lists.items():
        _require_input(config, f"lists.{name}", path, "list")
    for name, path in config.areas.items():
        _require_input(config, f"areas.{name}", path, "area")


def _require_input(config: Config, key: str, path, kind: str,
                   problem_of: Optional[Callable[[Any], Optional[str]]] = None) -> None:
    """LoadError naming the configuration and its key when the file a key names is missing,
    a link to nothing or a directory, or what `problem_of(path)` finds by its name (a
    profile snapshot's suffix): the path alone (resolved against the configuration's
    folder) does not say which key to correct. Any other problem is the loader's to say."""
    from engine.sinks import dangling_link
    text = str(path)
    # a line break would cut the one-line error before its reason (cli._fail keeps one line)
    shown = repr(text) if any(ord(ch) < 32 or ord(ch) == 127 for ch in text) else text
    if dangling := dangling_link(path):
        reason = dangling.replace(text, shown, 1) if shown != text else dangling
    elif not os.path.lexists(path):
        reason = f"{shown}: no such {kind} file"
    elif os.path.isdir(path):
        reason = f"{shown}: a directory, not {'an' if kind[0] in 'aeiou' else 'a'} {kind} file"
    elif problem_of is not None and (problem := problem_of(path)):
        reason = f"{shown}: {problem}"
    else:
        return
    raise LoadError(f"{config.named}: {key}: {reason}")


@dataclass
class Compiled:
    core: Core
    nr_elig_bits: int
    subscribers: np.ndarray     # uint64 MSISDN of each subscriber index
    # campaign id -> subscribers of the snapshot that its audience, exclude lists, blacklist
    # and where let through (what `check` reports; events decide the rest)
    eligible: dict[str, int] = field(default_factory=dict)
    # anniversary attribute -> subscribers of the snapshot whose value is not null and not a
    # real ISO date: they never match an anniversary (what `check` reports)
    malformed_dates: dict[str, int] = field(default_factory=dict)


def _types_mask(codes) -> int:
    mask = 0
    for code in codes:
        mask |= 1 << code
    return mask


def _in_snapshot_order(profile_rows: np.ndarray, nr_rows: int) -> bool:
    """Whether subscriber index i is profile row i for every i. Not always so when every row
    is present: a running engine's subscribers (`keep`) may hold every row of a new snapshot
    in another order (a snapshot exported sorted anew, or the workers' states put together
    by `sigmatch reshard`)."""
    return len(profile_rows) == nr_rows and bool((profile_rows == np.arange(nr_rows)).all())


def _by_subscriber(mask: np.ndarray, profile_rows: np.ndarray, present: np.ndarray, in_order: bool) -> np.ndarray:
    """A mask by profile row as a mask by subscriber index (`in_order`: _in_snapshot_order)."""
    if in_order:
        return mask
    out = np.zeros(len(profile_rows), dtype=bool)
    out[present] = mask[profile_rows[present]]
    return out


def _where_columns(config: Config) -> set[str]:
    from engine.language import where as where_lang
    needed: set[str] = set()
    for c in config.campaigns:
        if c.where is not None:
            expr = where_lang.parse(c.where)
            needed |= where_lang.attributes(expr)
            if where_lang.uses_tags(expr):
                needed.add("tags")
        if c.anniversary is not None:
            needed.add(c.anniversary)
    return needed


_ISO_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})", re.ASCII)


def _date_code(text: str) -> int:
    """`"1990-01-05"` -> 1 * 32 + 5; 0 for anything that is not YYYY-MM-DD naming a real day
    (years 0001 to 9999). White space around it is ignored, as the CSV loader trims every value."""
    m = _ISO_DATE.fullmatch(text.strip())
    if m is None:
        return 0
    year, month, day = map(int, m.groups())
    try:
        datetime.date(year, month, day)
    except ValueError:
        return 0
    return month * 32 + day


def anniversary_codes(column) -> tuple[np.ndarray, int]:
    """A profile column of ISO dates -> (uint16 month * 32 + day per row, 0 = never matches;
    the number of non-null values that are not dates). Each distinct value is parsed once.
    Raises TypeError for a column of numbers (one holding nothing but nulls is no date at all)."""
    n = len(column)
    if column.null_count == n:
        return np.zeros(n, dtype=np.uint16), 0
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise TypeError(str(column.type))
    distinct = pc.unique(column).drop_null()
    codes = np.array([_date_code(v) for v in distinct.to_pylist()] + [0], dtype=np.uint16)
    found = pc.fill_null(pc.index_in(column, value_set=distinct), -1)
    found = np.asarray(found.to_numpy() if hasattr(found, "to_numpy") else found, dtype=np.int64)
    out = codes[found]          # -1 (null) takes the 0 appended last
    return out, int(np.count_nonzero((found >= 0) & (out == 0)))


def _anniversary_dates(config: Config, profiles: Profiles) -> tuple[list[str], list[np.ndarray], dict[str, int]]:
    """(attributes in order of first use, their codes by profile row, malformed counts)."""
    attributes = list(dict.fromkeys(c.anniversary for c in config.campaigns if c.anniversary is not None))
    codes, malformed = [], {}
    for name in attributes:
        first = next(c for c in config.campaigns if c.anniversary == name)
        key = f"{first.key}.anniversary"
        column = profiles.columns.get(name)
        if column is None:
            header = sorted(h for h in getattr(profiles, "header", ()) or profiles.columns if h not in ("msisdn", "tags"))
            hint = difflib.get_close_matches(name.lower(), header, n=1)
            guess = f"; did you mean '{hint[0]}'?" if hint else ""
            known = ", ".join(header) or "none"
            raise ConfigError(f"{config.named}: {key}: unknown attribute '{name}' "
                              f"(profile columns: {known[:200]}){guess}")
        try:
            row_codes, bad = anniversary_codes(column)
        except TypeError as e:
            raise ConfigError(f"{config.named}: {key}: attribute '{name}' holds numbers ({e}), "
                              "not ISO dates (YYYY-MM-DD)") from None
        codes.append(row_codes)
        malformed[name] = bad
    return attributes, codes, malformed


def _checked_wheres(config: Config, profiles: Profiles) -> dict:
    """Each distinct `where` text of the configuration -> its parsed expression, checked
    against the snapshot's columns. Raises ConfigError naming the campaign's key, and for a
    text column compared with a number, the row of the file that made it text."""
    from engine.language import where as where_lang
    exprs = {}
    for c in config.campaigns:
        if c.where is None or c.where in exprs:
            continue
        key = f"{c.key}.where"
        try:
            expr = where_lang.parse(c.where)
            where_lang.check(expr, profiles)
        except ConfigError as e:
            raise ConfigError(f"{config.named}: {key}: {e}") from None
        exprs[c.where] = expr
    return exprs


def check_wheres(config: Config, world: World) -> None:
    """Check every `where` against the whole snapshot, without evaluating any: what a worker
    does before it keeps only its own rows (shard_world), whose errors could no longer
    name the row of the file that made a column text. Raises as _checked_wheres."""
    _checked_wheres(config, world.profiles)


def _where_masks(config: Config, profiles: Profiles) -> dict[str, np.ndarray]:
    """Each distinct `where` text -> one bool per profile row. The expressions are evaluated
    side by side, a few at a time: Arrow's kernels run without the interpreter's lock (L's
    13 wheres over 30M rows, on 2 cores: 5.3-7.0 s one at a time, 4.1-5.6 s four at a time).
    Raises as _checked_wheres."""
    from engine.language import where as where_lang
    wheres = _checked_wheres(config, profiles)
    if len(wheres) < 2:
        return {text: np.asarray(where_lang.evaluate(expr, profiles), dtype=bool) for text, expr in wheres.items()}
    with ThreadPoolExecutor(max_workers=max(1, min(len(wheres), WHERE_THREADS, usable_cores())),
                            thread_name_prefix="sigmatch-where") as pool:
        jobs = {text: pool.submit(where_lang.evaluate, expr, profiles) for text, expr in wheres.items()}
        return {text: np.asarray(job.result(), dtype=bool) for text, job in jobs.items()}


def _subscriber_order(numbers: np.ndarray, keep: Optional[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Subscriber index -> MSISDN, and -> profile row (-1: not in this snapshot). With `keep`
    (a running engine's subscribers), those keep their indexes and the snapshot's new numbers
    are appended: an index never changes while the engine runs (SPEC §1.1)."""
    if keep is None:
        return numbers, np.arange(len(numbers))
    numbers = np.ascontiguousarray(numbers, dtype=np.uint64)
    order = np.concatenate([keep, numbers[~np.isin(numbers, keep)]])
    sorter = np.argsort(numbers, kind="stable")
    found = np.searchsorted(numbers, order, sorter=sorter)
    found[found == len(numbers)] = 0
    if not len(numbers):
        return order, np.full(len(order), -1)
    rows = sorter[found]
    rows[numbers[rows] != order] = -1
    return order, rows


def compile_core(config: Config, world: World, *, max_event_bytes: int = 65536,
                 keep: Optional[np.ndarray] = None, shard: Optional[tuple[int, int]] = None,
                 release: bool = False) -> Compiled:
    """Compile; with `keep` (the MSISDNs of a running engine, by index) those subscribers come
    first in the same order, and numbers gone from the snapshot are inactive. With `shard`
    (i, n), only the subscribers of worker i of n (engine.workers) get state. `release`:
    the world is the caller's to spend, and its snapshot's columns are dropped
    (release_columns) once read, before the state is allocated. Raises ConfigError for a
    `where` or an anniversary the snapshot cannot serve, ValueError for a world sharded
    for another worker, or one without a column this configuration reads that its file has
    (dropped by an earlier compile, release_columns, or not loaded: load_world reads what
    its own configuration reads)."""
    if world.shard is not None and world.shard != shard:
        raise ValueError(f"a world of worker {world.shard[0]} of {world.shard[1]} compiled as shard {shard}")
    # A column the file has but the world lacks would be called an unknown attribute, beside
    # a list of the file's columns that names it: say why it is missing instead.
    needed = _where_columns(config)
    if needed and world.released:
        raise ValueError(f"this world's profile columns ({', '.join(sorted(needed))}) were dropped "
                         "once an engine was compiled from it (give_world=True, or an Engine that loaded its own "
                         "world): load it again with load_world")
    if needed:
        loaded = set(world.profiles.columns) | ({"tags"} if world.profiles.tags is not None else set())
        # a snapshot made in memory may name no file header: its columns are all it has
        unloaded = sorted((needed - loaded) & set(getattr(world.profiles, "header", ())))
        if unloaded:
            # load_world reads only what its configuration's where and anniversary read
            raise ValueError(f"this world was loaded without the profile columns {', '.join(unloaded)} that this "
                             "configuration reads: load it with load_world(this configuration)")
    if shard is not None and world.shard is None:
        # a worker of a sharded run: its subscribers only, and `where` and the dates read
        # only their rows; `keep` (a worker's checkpoint or its engine before a reload) holds
        # that worker's subscribers alone. The copy is this compile's own to spend.
        world = shard_world(world, shard)
        release = True
    profiles = world.profiles
    subscribers, profile_rows = _subscriber_order(profiles.msisdn, keep)
    present = profile_rows >= 0
    n = len(subscribers)
    core = Core(max_event_bytes)

    # Distinct eligibility classes -> bit numbers. Their masks are built once the core has
    # the subscriber index, which resolves list members in O(list size).
    classes: dict[tuple, int] = {}
    builders: list = []

    def class_bit(key: tuple, build) -> tuple[int, int]:
        if key not in classes:
            classes[key] = len(builders)
            builders.append(build)
        bit = classes[key]
        return bit // 64, 1 << (bit % 64)

    membership: dict[str, np.ndarray] = {}

    def member(name: str) -> np.ndarray:
        if name not in membership:
            numbers = np.ascontiguousarray(world.lists[name], dtype=np.uint64)
            if shard is not None:
                # a worker looks up its own members only: every worker probing every list
                # repeated the whole lists' random probes N times (at L, 2.6 s of a shard's 6 s)
                numbers = numbers[shards_of(numbers, shard[1]) == shard[0]]
            membership[name] = core.members(numbers)
        return membership[name]

    def blocked() -> np.ndarray:
        mask = np.zeros(n, dtype=bool)
        for name in config.policy.blacklist:
            mask |= member(name)
        return mask

    def audience_mask(c) -> np.ndarray:
        mask = member(c.audience).copy() if c.audience else np.ones(n, dtype=bool)
        for name in c.exclude:
            mask &= ~member(name)
        return mask

    in_order = _in_snapshot_order(profile_rows, len(profiles.msisdn))
    where_masks = {text: _by_subscriber(mask, profile_rows, present, in_order)
                   for text, mask in _where_masks(config, profiles).items()}
    unblocked = class_bit(("unblocked",), lambda: ~blocked())

    # Areas: one bit per area name, words per cell.
    area_names = sorted(world.areas)
    area_bit = {name: i for i, name in enumerate(area_names)}
    nr_area_words = (len(area_names) + 63) // 64
    all_cells = np.unique(np.concatenate([world.areas[a] for a in area_names])).astype(np.uint32) \
        if area_names else np.zeros(0, dtype=np.uint32)
    cell_masks = np.zeros((len(all_cells), max(nr_area_words, 1)), dtype=np.uint64)
    for name in area_names:
        rows = np.searchsorted(all_cells, world.areas[name])
        b = area_bit[name]
        cell_masks[rows, b // 64] |= np.uint64(1 << (b % 64))

    peer_sets: dict[str, int] = {}
    counter_index = {c.name: k for k, c in enumerate(config.counters)}
    date_attributes, date_codes, malformed_dates = _anniversary_dates(config, profiles)
    del profiles
    if release:
        # read for the last time above: freed before the rows are allocated, which at L
        # lowered one process's peak by about 1.9 GB; Arrow's allocator keeps freed pages
        # until asked
        release_columns(world)
        pa.default_memory_pool().release_unused()
    date_slot = {name: k for k, name in enumerate(date_attributes)}
    marker_index = {m.name: k for k, m in enumerate(config.markers)}
    campaigns = []
    # the property walks every campaign: read once, not once per campaign (10,000 campaigns: 46 s)
    channel_index = {name: k for k, name in enumerate(config.channels)}
    for c in config.campaigns:
        elig = class_bit(
            ("match", c.audience, tuple(sorted(c.exclude)), c.where),
            lambda c=c: audience_mask(c) & ~blocked() & (where_masks[c.where] if c.where else True))
        recheck_elig = (class_bit(("audience", c.audience, tuple(sorted(c.exclude))),
                                  lambda c=c: audience_mask(c))
                        if "audience" in c.recheck else unblocked)
        if c.peer_in is not None:
            peer_sets[c.peer_in] = -1      # ids come once the core has its layout
        campaigns.append(dict(
            id=c.id,
            types=_types_mask(c.on),
            convert_types=_types_mask(c.convert_on),
            convert_arg=c.convert_arg,
            convert_within_ms=c.convert_within_ms,
            elig=elig,
            recheck_elig=recheck_elig,
            area=(area_bit[c.area] // 64, 1 << (area_bit[c.area] % 64)) if c.area else None,
            peer_in=c.peer_in,
            cooldown_ms=c.cooldown_ms,
            delay_ms=c.delay_ms,
            hours=c.hours,
            days=c.days,
            counter=counter_index[c.counter] if c.counter else -1,
            at_least=min(c.at_least, 0xFFFFFFFF),
            when=_when_program(c.when, counter_index),
            date_slot=date_slot[c.anniversary] if c.anniversary is not None else -1,
            stop_after=c.stop_after,
            holdout=c.holdout_threshold,
            recheck=sum(_RECHECK_BITS[r] for r in c.recheck),
            exempt=sum(_EXEMPT_BITS[r] for r in c.exempt),
            enter=bool(c.enter),
            once=bool(c.once),
            flags=c.flags,
            arg=c.arg,
            enabled=bool(c.enabled),
            marks=[(marker_index[a.marker], a.within_ms, False) for a in c.after]
            + [(marker_index[a.marker], a.within_ms, True) for a in c.not_after],
            absent=[marker_index[name] for name in c.absent],
            start_day=local_day(c.start) if c.start is not None else DAY_MIN,
            end_day=local_day(c.end) if c.end is not None else DAY_MAX,
            daily_budget=c.daily_budget,
            total_budget=c.total_budget,
            channel=channel_index[c.channel],
            variants=[v.weight for v in c.variants],
        ))

    nr_bits = len(builders)
    nr_words = max(1, (nr_bits + 63) // 64)
    windowed = [c for c in config.counters if c.starts]
    core.set_layout(nr_words, len(config.counters), len(windowed), len(config.markers))
    core.set_subscribers(np.ascontiguousarray(subscribers, dtype=np.uint64))
    if not present.all():
        core.set_inactive((~present).astype(np.uint8))
    words = np.zeros((n, nr_words), dtype=np.uint64)
    members = []        # subscribers of the snapshot in each eligibility class
    for bit, build in enumerate(builders):
        mask = build()
        members.append(int(np.count_nonzero(mask & present)))
        words[:, bit // 64] |= mask.astype(np.uint64) << np.uint64(bit % 64)
    core.set_eligibility(words)
    del words
    if date_attributes:
        dates = np.zeros((n, len(date_attributes)), dtype=np.uint16)
        for k, row_codes in enumerate(date_codes):
            dates[present, k] = row_codes[profile_rows[present]]
        core.set_dates(dates)
    if len(all_cells):
        core.set_areas(all_cells, np.ascontiguousarray(cell_masks))
    for name in peer_sets:
        peer_sets[name] = core.add_peer_set(world.peer_table(name))
    for d in campaigns:
        name = d.pop("peer_in")
        d["peer_set"] = peer_sets[name] if name is not None else -1
    core.set_event_types(dict(config.event_types))
    core.set_counters([
        (_types_mask(c.on), c.flags, _ADD_MODES[c.add], c.window_ms or 0, _PERIODS[c.period], c.arg)
        for c in config.counters
    ])
    core.set_markers([(_types_mask(m.on), m.flags, m.arg) for m in config.markers])
    quiet = config.policy.quiet_hours or (-1, -1)
    core.set_policy(
        config.utc_offset_ms, quiet[0], quiet[1], config.policy.min_gap_ms,
        config.policy.max_per_day if config.policy.max_per_day is not None else 0xFFFFFFFF,
        unblocked[0], unblocked[1], config.max_pending,
    )
    core.set_max_in_window(*(config.policy.max_in_window or (0, 0)))
    core.set_global_holdout(config.policy.global_holdout_threshold)
    core.set_max_dead_letters(config.max_dead_letters)
    core.set_channels(list(config.channels), [config.channel_budgets.get(name) for name in config.channels])
    core.set_campaigns(campaigns)
    # a worker logs its own share (worker 0 alone says it, engine.workers): named as such,
    # or a third of a province reads as a third loaded
    share = f" (worker {shard[0]} of {shard[1]}'s share)" if shard is not None else ""
    log.info("compiled %s over %s%s: %s, %s, %s", plural(len(campaigns), "campaign"), plural(n, "subscriber"), share,
             plural(nr_bits, "eligibility class", "eligibility classes"), plural(len(area_names), "area"),
             plural(len(peer_sets), "peer set"))
    eligible = {d["id"]: members[d["elig"][0] * 64 + d["elig"][1].bit_length() - 1] for d in campaigns}
    return Compiled(core, nr_bits, np.ascontiguousarray(subscribers, dtype=np.uint64), eligible, malformed_dates)


def _when_program(text: Optional[str], counter_index: dict[str, int]):
    """(comparisons, words, stack) of a campaign's `when` for Core.set_campaigns, or None."""
    if text is None:
        return None
    from engine.language import when as when_lang
    program = when_lang.compile_program(when_lang.parse(text, counter_index), counter_index)
    return program.comparisons, program.words, program.stack
