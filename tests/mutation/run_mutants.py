"""Our own mutation check (`make mutants`): no well-kept mutation tool mutates Cython, so this
script applies a list of small, deliberate bugs to a scratch copy of the repository, one at
a time, rebuilds the core when the bug is in it, runs the test suite the way CI does
(CI=true, `pytest -q`) but stopping at the first failure (-x), and reports which bugs the
suite caught (killed) and which it did not (survived).

    python tests/mutation/run_mutants.py                      # every mutant
    python tests/mutation/run_mutants.py --only NAME,NAME     # a subset (make mutants MUTANTS=...)
    python tests/mutation/run_mutants.py --list               # the list, nothing run

Each mutant names its file, a piece of text that must occur there exactly once, and what
replaces it: most are one character (`<` for `<=`), a few are one token or a swap of two
lines (the order of two policy rules). A mutant whose text no longer occurs is reported
`stale`, never silently skipped: when the code moves, the list moves with it. A mutant that
cannot change any outcome is marked `equivalent` with the reason; it is run and reported
but left out of the score.

The scratch copy lives under the system's temporary directory (never in the working tree,
which other people edit), is built once, checked to pass the fast subset unmutated, and
removed at the end (--keep to look at it). For speed each mutant first runs the fast
subset (FAST below: the boundary and scenario tests, on both engines, and the CLI's
promises); only a mutant that survives it runs the whole suite.

This module's name does not start with `test_`, and tests/conftest.py ignores this folder:
pytest never collects it.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The core is one compilation unit: _core.pyx and the .pxi parts it includes
CORE_SOURCES = {"engine/_core.pyx", "engine/_decode.pxi", "engine/_state.pxi", "engine/_match.pxi",
                "engine/_explain.pxi", "engine/_deadletters.pxi", "engine/_types.pxi", "engine/_persist.pxi", "engine/_core.pxd",
                "engine/_shard.pxi", "engine/_campaigns.pxi", "engine/_lanes.pxi"}
# Everything a scratch copy needs: the working tree without version control, environments,
# build products and caches (the copy builds its own extension).
IGNORED = shutil.ignore_patterns(".git", ".venv", "build", ".hypothesis", ".pytest_cache", ".benchmarks",
                                 "__pycache__", "*.so", "_core.c", "*.egg-info", "out")
# test_explain_scenarios first: two seconds, and the only fast test of the explanation's mutants
FAST = ["tests/test_explain_scenarios.py", "tests/test_boundaries.py", "tests/test_scenarios.py",
        "tests/test_cli_promises.py", "tests/test_equivalence.py"]


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str           # relative to the repository root
    old: str            # occurs exactly once in the file
    new: str
    rule: str           # what SPEC says, that the mutant breaks
    equivalent: str = ""    # non-empty: why no outcome can change (left out of the score)
    fast: tuple = ()        # its own fast subset, instead of FAST (a mutant only some tests reach)


CORE, PXI, MODEL, CLI = "engine/_core.pyx", "engine/_decode.pxi", "engine/model.py", "engine/cli.py"
WHEN = "engine/language/when.py"

MUTANTS: list[Mutant] = [
    # ---- the six survivors of issue 10
    Mutant("core-cooldown-at-match-le", CORE, "(c.once or ts < contact.last_ts + c.cooldown)",
           "(c.once or ts <= contact.last_ts + c.cooldown)", "§3.6 e.ts >= last contact + cooldown"),
    Mutant("core-window-reset-gt", CORE, "if v != 0 and ts >= start[0] + cnt.window:",
           "if v != 0 and ts > start[0] + cnt.window:", "§3.4 reset when e.ts >= start + window"),
    Mutant("core-timers-newest-first", CORE, "(a_due == b_due and a_created < b_created)",
           "(a_due == b_due and a_created > b_created)", "§3.1 (due time, creation order)"),
    Mutant("core-timer-due-at-event-after", CORE, "while E.nr_timers and E.next_due <= ts:",
           "while E.nr_timers and E.next_due < ts:", "§3.1 due time <= e.ts fires first"),
    Mutant("core-policy-max-per-day-before-min-gap", CORE,
           "    if not (c.exempt & EXEMPT_MIN_GAP) and h.last_any_p1 != 0 and t < h.last_any_p1 - 1 + E.min_gap:\n"
           "        fun[FN_MIN_GAP] += 1\n"
           "        if E.takers != NULL:\n"
           "            count_taker(E, sub, ci, TK_MIN_GAP)\n"
           "        return FN_MIN_GAP\n"
           "    today = h.day_count if h.day == day else 0\n"
           "    if not (c.exempt & EXEMPT_MAX_PER_DAY) and today >= E.max_per_day:\n"
           "        fun[FN_MAX_PER_DAY] += 1\n"
           "        if E.takers != NULL:\n"
           "            count_taker(E, sub, ci, TK_MAX_PER_DAY)\n"
           "        return FN_MAX_PER_DAY\n",
           "    today = h.day_count if h.day == day else 0\n"
           "    if not (c.exempt & EXEMPT_MAX_PER_DAY) and today >= E.max_per_day:\n"
           "        fun[FN_MAX_PER_DAY] += 1\n"
           "        if E.takers != NULL:\n"
           "            count_taker(E, sub, ci, TK_MAX_PER_DAY)\n"
           "        return FN_MAX_PER_DAY\n"
           "    if not (c.exempt & EXEMPT_MIN_GAP) and h.last_any_p1 != 0 and t < h.last_any_p1 - 1 + E.min_gap:\n"
           "        fun[FN_MIN_GAP] += 1\n"
           "        if E.takers != NULL:\n"
           "            count_taker(E, sub, ci, TK_MIN_GAP)\n"
           "        return FN_MIN_GAP\n",
           "§3.7 policy order: min_gap before max_per_day"),
    Mutant("cli-replay-no-drain", CLI, "out=out, drain=True, format=fmt, progress=progress",
           "out=out, drain=False, format=fmt, progress=progress", "§3 end of input: replay drains"),

    # ---- the core, step by step (SPEC §3)
    Mutant("core-timer-before-due-le", CORE, "return a_due < b_due or", "return a_due <= b_due or",
           "§3.1 earlier due first, whatever the creation order"),
    Mutant("core-late-le", CORE, "elif ev.ts < E.clock:", "elif ev.ts <= E.clock:",
           "§3 late: ts below the clock (ts == clock is on time)"),
    Mutant("core-drain-clock-ge", CORE, "if self.E.next_due > self.E.clock:",
           "if self.E.next_due < self.E.clock:", "§3 end of input: the clock moves on to each due time"),
    Mutant("core-power-off-ne", CORE, "if ev.type == POWER_OFF_TYPE:", "if ev.type != POWER_OFF_TYPE:",
           "§3.3 off on POWER_OFF, on for any other type"),
    Mutant("core-cell-zero-keeps", CORE, "    if ev.cell != 0:\n        h.cell", "    if ev.cell == 0:\n        h.cell",
           "§3.3 a cell of 0 changes nothing"),
    Mutant("core-counter-flags-all", CORE, "if (ev.flags & cnt.flags) != cnt.flags or",
           "if (ev.flags & cnt.flags) == cnt.flags or", "§3.4 flags all set in e.flags"),
    Mutant("core-minutes-ceil", CORE, "(1 if ev.dur % 60 else 0)", "(0 if ev.dur % 60 else 0)",
           "§3.4 ceil(dur / 60) started minutes"),
    Mutant("core-window-reset-nonzero", CORE, "if v != 0 and ts >= start[0] + cnt.window:",
           "if v == 0 and ts >= start[0] + cnt.window:", "§3.4 a non-zero counter resets"),
    Mutant("core-window-start-at-zero", CORE, "                v = 0\n            if v == 0:",
           "                v = 0\n            if v != 0:", "§3.4 start = e.ts when 0 before adding"),
    Mutant("core-saturate-gt", CORE, "amount >= <uint64_t>(0xFFFFFFFFu - v)", "amount > <uint64_t>(0xFFFFFFFFu - v)",
           "§3.4 saturate at 2^32 - 1",
           equivalent="at amount == 2^32 - 1 - v both branches give 2^32 - 1"),
    Mutant("core-saturate-lt", CORE, "amount >= <uint64_t>(0xFFFFFFFFu - v)", "amount < <uint64_t>(0xFFFFFFFFu - v)",
           "§3.4 saturate at 2^32 - 1"),
    Mutant("core-window-read-gt", CORE, "cnt.window_slot >= 0 and ts >= (<int64_t*>", "cnt.window_slot >= 0 and ts > (<int64_t*>",
           "§3.6 a window that has passed (e.ts >= start + window) reads as 0"),
    Mutant("core-convert-arg-eq", CORE, "if c.has_convert_arg and ev.arg != c.convert_arg:",
           "if c.has_convert_arg and ev.arg == c.convert_arg:", "§3.5 convert_arg equals e.arg"),
    Mutant("core-convert-within-gt", CORE, "ts - contact.last_ts >= c.convert_within", "ts - contact.last_ts > c.convert_within",
           "§3.5 e.ts - contact.ts < convert_within"),
    Mutant("core-peer-zero", CORE, "                if ev.peer == 0:\n                    continue",
           "                if ev.peer != 0:\n                    continue",
           "§3.6 e.peer in peer_in (0 is no peer)"),
    Mutant("core-enter-previous", CORE, "if prev_areas != NULL and prev_areas[c.area_word]", "if prev_areas == NULL and prev_areas[c.area_word]",
           "§3.6 enter: the previous cell is not in the area"),
    Mutant("core-at-least-le", CORE, "if c.counter >= 0 and c.at_least > 0:", "if c.counter >= 0 and c.at_least > 1:",
           "§3.6 counter >= at_least (at_least 1: a counter of 0 does not match; the candidate masks decide it)"),
    Mutant("core-stop-after-gt", CORE, "if (contact.streak >= c.stop_after", "if (contact.streak > c.stop_after",
           "§3.6 no-response streak < stop_after"),
    Mutant("core-pending-blocks-match", CORE, "            if E.pending_by_campaign[ci] and h.pending:\n",
           "            if False and h.pending:\n",
           "§3.6 a pair with an action waiting does not match", fast=("tests/test_pending.py",)),
    Mutant("core-pending-kept-after-firing", CORE, "    pending_remove(E, t.subscriber, t.campaign, t.pending_slot)\n", "\n",
           "§3.6 a pair matches again once its action has fired", fast=("tests/test_pending.py",)),
    Mutant("core-pending-by-campaign-not-counted", CORE, "    E.pending_by_campaign[ci] += 1\n", "\n",
           "§3.6 a pair with an action waiting does not match", fast=("tests/test_pending.py",)),
    Mutant("core-pending-gone-as-empty", CORE, "        E.pending[i] = PENDING_GONE\n", "        E.pending[i] = 0\n",
           "§3.6 the pairs still waiting after one fires still wait", fast=("tests/test_pending.py",)),
    Mutant("core-pending-gone-walk-back-past", CORE, "    while E.pending[j] == PENDING_GONE:\n",
           "    while E.pending[j] != 0:\n",
           "§3.6 the pairs still waiting after one fires still wait", fast=("tests/test_pending.py",)),
    Mutant("core-contact-count-one-short", CORE,
           "            left -= 1\n            if left == 0:\n                return NULL\n",
           "            left -= 1\n            if left <= 1:\n                return NULL\n",
           "§3.6 once, the cooldown and stop_after see the pair's contact however many the subscriber has",
           fast=("tests/test_contact_count.py",)),
    Mutant("core-contact-count-not-kept", CORE, "    if head.contacts < 255:\n        head.contacts += 1\n", "\n",
           "§3.6 once, the cooldown and stop_after see the pair's contact however many the subscriber has",
           fast=("tests/test_contact_count.py",)),
    Mutant("core-pending-count-one-short", CORE,
           "            left -= 1\n            if left == 0:\n                return False\n",
           "            left -= 1\n            if left <= 1:\n                return False\n",
           "§5 lookup: a pair's action waiting is found, however many the subscriber has waiting",
           fast=("tests/test_pending.py",)),
    Mutant("core-pending-index-one-short", CORE,
           "            left -= 1\n            if left == 0:\n                return\n        i = (i + 1) & E.pending_mask\n",
           "            left -= 1\n            if left <= 1:\n                return\n        i = (i + 1) & E.pending_mask\n",
           "§3.6 a pair with an action waiting does not match, however many the subscriber has waiting",
           fast=("tests/test_pending.py",)),
    Mutant("core-pending-index-stale", CORE, "    E.pidx_gen = next_generation(E.pidx_stamp, E.pidx_gen, E.nr_campaigns)\n",
           "    E.pidx_gen = 1\n",
           "§3.6 a pair with no action waiting matches, whatever another event's subscriber had waiting",
           fast=("tests/test_pending.py",)),
    Mutant("core-pending-slot-unchecked", CORE, "    i = slot & E.pending_mask\n    if E.pending[i] != key:\n",
           "    i = slot & E.pending_mask\n    if False:\n",
           "§3.6 the pairs still waiting after one fires still wait, across a rehash of the pending set",
           fast=("tests/test_pending.py",)),
    Mutant("core-pending-slot-in-checkpoint", CORE,
           "        out[j].pending_slot = 0         # where the table put it is no part of the state\n", "\n",
           "§5 a checkpoint's bytes are the state's, whatever batches, workers or tables made it",
           fast=("tests/test_pending.py",)),
    Mutant("core-timer-runs-by-first", CORE, "        if not source_before(E, s, E.src_heap[parent]):",
           "        if source_before(E, s, E.src_heap[parent]):",
           "§3.1 timers fire by (due time, creation order), whatever their delays", fast=("tests/test_pending.py",)),
    Mutant("core-restored-timers-unordered", CORE, "    if n > 1:\n        i = n // 2", "    if n > 1 and False:\n        i = n // 2",
           "§3.1 timers put back from a checkpoint fire by (due time, creation order)", fast=("tests/test_pending.py",)),
    Mutant("core-max-in-window-skip-contacted", CORE, "times = find_window(E, sub, False) if h.last_any_p1 else NULL",
           "times = find_window(E, sub, False) if not h.last_any_p1 else NULL",
           "§3.7 max_in_window counts a contacted subscriber's contacts"),
    Mutant("core-max-pending-gt", CORE, "if (E.nr_timers >= E.max_pending) if E.shm", "if (E.nr_timers > E.max_pending) if E.shm",
           "§3.6 at most max_pending wait at once"),
    Mutant("core-hours-start-exclusive", CORE, "return start <= minute < end", "return start < minute < end",
           "§2 hours: start inclusive"),
    Mutant("core-hours-end-inclusive", CORE, "return start <= minute < end", "return start <= minute <= end",
           "§2 hours: end exclusive"),
    Mutant("core-hours-wrap-start", CORE, "return minute >= start or minute < end", "return minute > start or minute < end",
           "§2 hours wrapping midnight: start inclusive"),
    Mutant("core-hours-wrap-end", CORE, "return minute >= start or minute < end", "return minute >= start or minute <= end",
           "§2 hours wrapping midnight: end exclusive"),
    Mutant("core-weekday-negative", CORE, "if weekday < 0:", "if weekday <= 0:", "§3 weekdays counted from Thursday 1970-01-01"),
    Mutant("core-floor-div", CORE, "if (a % b != 0) and ((a < 0) != (b < 0)):", "if (a % b == 0) and ((a < 0) != (b < 0)):",
           "§3 a local day is floor((ts + utc_offset) / 86,400,000)"),
    Mutant("core-quiet-from-midnight", CORE, "if E.quiet_start >= 0 and not", "if E.quiet_start > 0 and not",
           "§3.7 quiet hours (starting at 00:00 too)"),
    Mutant("core-min-gap-le", CORE, "and t < h.last_any_p1 - 1 + E.min_gap:", "and t <= h.last_any_p1 - 1 + E.min_gap:",
           "§3.7 t >= last contact + min_gap"),
    Mutant("core-min-gap-offset", CORE, "and t < h.last_any_p1 - 1 + E.min_gap:", "and t < h.last_any_p1 - 0 + E.min_gap:",
           "§3.7 t >= last contact + min_gap (last contact stored plus one)"),
    Mutant("core-min-gap-none", CORE, "h.last_any_p1 != 0 and t <", "h.last_any_p1 == 0 and t <",
           "§3.7 min_gap applies after a contact"),
    Mutant("core-max-per-day-gt", CORE, "today >= E.max_per_day:", "today > E.max_per_day:",
           "§3.7 fewer than max_per_day contacts on t's local day"),
    Mutant("core-max-per-day-new-day", CORE, "today = h.day_count if h.day == day else 0",
           "today = h.day_count if h.day != day else 0", "§3.7 the count of t's local day"),
    Mutant("core-cooldown-at-emission-le", CORE,
           "if contact != NULL and contact.flags & CONTACT_CONTACTED and t < contact.last_ts + c.cooldown:",
           "if contact != NULL and contact.flags & CONTACT_CONTACTED and t <= contact.last_ts + c.cooldown:",
           "§3.7 t >= last contact of this campaign + cooldown again"),
    Mutant("core-contact-before-budgets", CORE,
           "contact = contact_lookup(E, sub, ci, h)\n    if contact != NULL and contact.flags & CONTACT_CONTACTED and t <",
           "contact = find_contact(E, sub, ci, True)\n    if contact != NULL and contact.flags & CONTACT_CONTACTED and t <",
           "state O(contacts): a contact state only for a pair contacted, none for an emission turned down",
           fast=("tests/test_pending.py",)),
    Mutant("core-holdout-le", CORE, "% 10000 < c.holdout)", "% 10000 <= c.holdout)",
           "§3.7 control when crc32 % 10000 < threshold"),
    Mutant("core-once", CORE, "and (c.once or ts < contact", "and (c.once and ts < contact",
           "§3.6 never contacted if once"),
    Mutant("core-recheck-area", CORE, "c.recheck & RECHECK_AREA and not in_area(E, h.cell, c)",
           "c.recheck & RECHECK_AREA and in_area(E, h.cell, c)", "§3.7 recheck area: the current cell is in it"),
    Mutant("core-recheck-hours", CORE, "c.recheck & RECHECK_HOURS and not in_hours(E, c, t)",
           "c.recheck & RECHECK_HOURS and not in_hours(E, c, t - 1)", "§3.7 recheck hours evaluated at t"),
    Mutant("core-recheck-audience", CORE, "and not elig_bit(E, row, c.recheck_word, c.recheck_mask))",
           "and elig_bit(E, row, c.recheck_word, c.recheck_mask))", "§3.7 recheck audience: still in it"),
    Mutant("core-blacklist-at-emission", CORE, "if not elig_bit(E, row, E.unblocked_word, E.unblocked_mask):",
           "if elig_bit(E, row, E.unblocked_word, E.unblocked_mask):", "§3.7 not in a policy blacklist"),
    Mutant("core-conversion-streak", CORE, "contact.streak = 0", "contact.streak = 1",
           "§3.5 a conversion sets the no-response streak back to 0"),
    # trigger filters, a campaign's life and counter periods (SPEC §2.1)
    Mutant("core-campaign-flags-all", CORE,
           "        for p in range(P):\n            cand[p] &= ~m[p]\n        x &= x - 1",
           "        x &= x - 1",
           "§3.6 every flag of the campaign's flags set in e.flags (the candidate masks decide it)"),
    Mutant("core-campaign-arg-eq", CORE, "            if c.has_arg and ev.arg != c.arg:\n                continue",
           "            if c.has_arg and ev.arg == c.arg:\n                continue",
           "§3.6 e.arg equal to the campaign's arg"),
    Mutant("core-enabled-at-match", CORE, "if not c.enabled or day < c.start_day", "if False or day < c.start_day",
           "§3.6 a disabled campaign matches nothing (in the minute's mask)"),
    Mutant("core-start-at-match-le", CORE, "or day < c.start_day or day > c.end_day:\n                continue",
           "or day <= c.start_day or day > c.end_day:\n                continue",
           "§3.6 the local date within start (included), in the minute's mask"),
    Mutant("core-end-at-match-ge", CORE, "or day < c.start_day or day > c.end_day:\n                continue",
           "or day < c.start_day or day >= c.end_day:\n                continue",
           "§3.6 the local date within end (included), in the minute's mask"),
    Mutant("core-disabled-at-emission", CORE, "    if not c.enabled:\n        fun[FN_DISABLED]",
           "    if False:\n        fun[FN_DISABLED]", "§3.7 a disabled campaign's due action is counted disabled"),
    Mutant("core-ended-at-emission", CORE, "day > c.end_day:\n        fun[FN_ENDED]",
           "day > c.end_day + 1:\n        fun[FN_ENDED]", "§3.7 t's local date within end, else ended"),
    Mutant("core-period-reset-eq", CORE, "if not same_period(E, cnt.period, ts, start[0]):",
           "if same_period(E, cnt.period, ts, start[0]):",
           "§3.4 a period counter resets when e.ts falls in another period"),
    Mutant("core-period-read-eq", CORE, "return 0 if not same_period(E, cnt.period, ts, start) else v",
           "return 0 if same_period(E, cnt.period, ts, start) else v",
           "§3.6 a counter whose period is not e.ts's reads 0"),
    Mutant("core-period-span-ts-hi", CORE, "if not (E.period_lo[period] <= ts < E.period_hi[period]):",
           "if not (E.period_lo[period] <= ts <= E.period_hi[period]):",
           "§3.4 the clock's period, kept: it ends before the next period's first ms"),
    Mutant("core-period-span-start-lo", CORE, "return E.period_lo[period] <= start < E.period_hi[period]",
           "return E.period_lo[period] < start < E.period_hi[period]",
           "§3.4 the clock's period, kept: it holds its first ms"),
    Mutant("core-period-span-start-hi", CORE, "return E.period_lo[period] <= start < E.period_hi[period]",
           "return E.period_lo[period] <= start <= E.period_hi[period]",
           "§3.6 a counter begun in a later period than the ts it is read at reads 0"),
    Mutant("core-period-span-week", CORE, "first = p * 7 - 3", "first = p * 7 - 4",
           "§3.4 the clock's week, kept: from Monday"),
    Mutant("core-month-days-30", CORE, "month == 4 or month == 6 or month == 9", "month == 4 or month == 9",
           "§3.4 the clock's month, kept: June has 30 days"),
    Mutant("core-month-days-leap-100", CORE, "(year % 100 != 0 or year % 400 == 0)",
           "(year % 100 == 0 or year % 400 == 0)", "§3.4 the clock's month, kept: February has 29 days in 2028, 28 in 2100"),
    Mutant("core-month-days-leap-400", CORE, "(year % 100 != 0 or year % 400 == 0)",
           "(year % 100 != 0 or year % 400 != 0)", "§3.4 the clock's month, kept: February 2000 has 29 days"),
    Mutant("core-today-span-hi", CORE, "if not (E.today_lo <= ts < E.today_hi):",
           "if not (E.today_lo <= ts <= E.today_hi):",
           "§3.6 anniversary: the clock's local day, kept, ends before the next midnight"),
    Mutant("core-day-span-hi", CORE, "if ts < E.today_lo or ts >= E.today_hi:",
           "if ts < E.today_lo or ts > E.today_hi:",
           "§3.7 max_per_day: the day of an emission, kept, ends before the next local midnight"),
    Mutant("core-minute-span-hi", CORE, "if not (E.time_valid and E.time_lo <= ts < E.time_hi):",
           "if not (E.time_valid and E.time_lo <= ts <= E.time_hi):",
           "§3.6 hours: the clock's minute, kept, ends before the next minute"),
    Mutant("core-refusal-any-exemptions", CORE, "if refused and c.exempt == refused_exempt:", "if refused:",
           "§3.7 the policy exempts a campaign from its rules, beside others that it turns down"),
    Mutant("core-refusal-kept-after-contact", CORE,
           "                    else:\n                        refused = 0\n",
           "                    else:\n                        pass\n",
           "§3.7 min_gap and max_per_day count a contact made earlier in the same event"),
    Mutant("core-refusal-takers-uncounted", CORE, "if E.takers != NULL and outcome >= FN_MIN_GAP:",
           "if False:", "§5 report: which campaign took the contacts the policy turned down"),
    Mutant("core-contact-index-grown", CORE, "        E.contacts_mask = newmask\n        E.cidx_valid = 0\n",
           "        E.contacts_mask = newmask\n", "§3.6 a contact looked up after the table grew in the same event",
           fast=("tests/test_contact_count.py",)),
    Mutant("core-week-monday", CORE, "return floor_div(day + 3, 7)", "return floor_div(day + 4, 7)",
           "§3.4 weeks start on Monday: floor((local day + 3) / 7)"),
    Mutant("core-month-march", CORE, "mp + 3 if mp < 10 else mp - 9", "mp + 3 if mp <= 10 else mp - 9",
           "§3.4 month: exact civil dates (January and February)"),
    Mutant("core-month-leap", CORE, "(1 if month <= 2 else 0)", "(1 if month < 2 else 0)",
           "§3.4 month: exact civil dates (the year of January and February)"),
    Mutant("core-counter-arg-eq", CORE, "(cnt.has_arg and ev.arg != cnt.arg)", "(cnt.has_arg and ev.arg == cnt.arg)",
           "§3.4 a counter's arg equals e.arg"),
    # markers (SPEC §3 steps 6, 7 and 8)
    Mutant("core-after-within-gt", CORE, "elif m == 0 or ts - (m - 1) >= k.within:",
           "elif m == 0 or ts - (m - 1) > k.within:", "§3.6 after: e.ts - marker < within"),
    Mutant("core-not-after-within-le", CORE, "if m != 0 and ts - (m - 1) < k.within:",
           "if m != 0 and ts - (m - 1) <= k.within:", "§3.6 not_after: e.ts - marker >= within"),
    Mutant("core-absent-ge", CORE, "if m != 0 and m - 1 > trigger_ts:", "if m != 0 and m - 1 >= trigger_ts:",
           "§3.7 absent: a marker later than the trigger, > trigger_ts"),
    Mutant("core-marker-time", CORE, "marks[j] = ts + 1", "marks[j] = ts", "§3.8 a marker takes e.ts (0 is unset)"),
    Mutant("core-marker-flags-all", CORE, "if (ev.flags & mk.flags) != mk.flags or", "if (ev.flags & mk.flags) == mk.flags or",
           "§3.8 a marker's flags all set in e.flags"),
    Mutant("core-marker-arg-eq", CORE, "(mk.has_arg and ev.arg != mk.arg)", "(mk.has_arg and ev.arg == mk.arg)",
           "§3.8 a marker's arg equals e.arg"),
    Mutant("core-max-in-window-ge", CORE, "times[2 + (times[1] >> 8)] > t - E.window_ms",
           "times[2 + (times[1] >> 8)] >= t - E.window_ms", "§3.7 contacts at times > t - window"),
    Mutant("core-max-in-window-oldest", CORE, "times[2 + (times[1] >> 8)] > t - E.window_ms",
           "times[2 + ((times[1] >> 8) + 1) % E.window_n] > t - E.window_ms",
           "§3.7 fewer than max_in_window.contacts contacts in the window (the oldest kept decides)"),
    Mutant("core-max-in-window-exempt", CORE, "if E.window_n and not (c.exempt & EXEMPT_MAX_IN_WINDOW):",
           "if E.window_n:", "§2.1 exempt accepts max_in_window"),
    Mutant("core-max-in-window-ring", CORE, "        head = (head + 1) % E.window_n", "        head = head % E.window_n",
           "§3.7 the rolling window: the newest contacts are kept"),
    Mutant("core-global-holdout-le", CORE, "% 10000 < E.global_holdout:", "% 10000 <= E.global_holdout:",
           "§3.7 a global control when crc32(f\"{msisdn}:global\") % 10000 < threshold"),
    Mutant("core-global-holdout-kind", CORE, "        kind = 2\n", "        kind = 1\n",
           "§3.7 the kind global_control, before the campaign's holdout"),
    Mutant("core-global-conversion-kind", CORE, "conv.kind = 2 if contact.flags & CONTACT_GLOBAL_CONTROL",
           "conv.kind = 0 if contact.flags & CONTACT_GLOBAL_CONTROL", "§4 a conversion's kind is its contact's"),
    # variants (SPEC §3 step 7)
    Mutant("core-variant-running-sum-gt", CORE, "while v + 1 < c.nr_variants and x >= sums[v]:",
           "while v + 1 < c.nr_variants and x > sums[v]:", "§3.7 the first variant whose running sum exceeds the hash"),
    Mutant("core-variant-w-plus-one", CORE, "% sums[c.nr_variants - 1]", "% (sums[c.nr_variants - 1] + 1)",
           "§3.7 the variant hash modulo W, the sum of the weights"),
    Mutant("core-variant-suffix", CORE, "<const uint8_t*>VARIANT_SUFFIX, 8)", "<const uint8_t*>VARIANT_SUFFIX, 7)",
           "§3.7 crc32(f\"{msisdn}:{campaign_id}:variant\")"),
    Mutant("core-variant-two-skipped", CORE, "    if c.nr_variants <= 1:\n        return 0\n    sums = ",
           "    if c.nr_variants <= 2:\n        return 0\n    sums = ", "§3.7 every variant gets its subscribers"),
    Mutant("core-conversion-variant-two-skipped", CORE, "    if c.nr_variants <= 1:\n        return 0\n    return variant_by(",
           "    if c.nr_variants <= 2:\n        return 0\n    return variant_by(", "§4 stats.json: conversions per variant"),
    Mutant("core-conversion-variant", CORE, "conv.variant = variant_of(E, c, ev.msisdn)", "conv.variant = 0",
           "§4 stats.json: conversions per variant"),
    Mutant("core-campaign-daily-budget-gt", CORE, "if camp_day >= c.daily_budget",
           "if camp_day > c.daily_budget", "§3.7 the campaign's sends on t's local day < daily_budget"),
    Mutant("core-campaign-daily-budget-day", CORE, "camp_day = budget.day_sends if budget.day == day else 0",
           "camp_day = budget.day_sends if budget.day != day else 0", "§3.7 budgets counted per local day of t"),
    Mutant("core-campaign-total-budget-gt", CORE, "camp_total >= c.total_budget", "camp_total > c.total_budget",
           "§3.7 the campaign's sends ever < total_budget"),
    Mutant("core-channel-budget-gt", CORE, "if chan_day >= E.channel_daily[c.channel]", "if chan_day > E.channel_daily[c.channel]",
           "§3.7 the channel's sends on t's local day < its daily_budget"),
    Mutant("core-channel-budget-day", CORE, "chan_day = channel.day_sends if channel.day == day else 0", "chan_day = channel.day_sends",
           "§3.7 the channel's budget counted per local day of t"),
    Mutant("core-budget-counts-controls", CORE, "    if kind == 0:\n        count_send(budget, day)",
           "    if True:\n        count_send(budget, day)", "§3.7 only sends count against budgets"),
    Mutant("core-campaign-daily-budget-off", CORE, "    if camp_day >= c.daily_budget or",
           "    if camp_day >= c.daily_budget and False or",
           "§3.7 a campaign's daily budget is checked at all"),
    # shards (issue 14, replay --workers): what workers share, and the merge's order
    Mutant("core-shard-budget-day", CORE, "camp_day[0] += b[0].day_sends if b[0].day == day else 0",
           "camp_day[0] += b[0].day_sends", "§3.7 a campaign's sends on t's local day, over every worker", fast=("tests/test_workers.py",)),
    Mutant("core-shard-channel-budget-day", CORE, "chan_day[0] += b[1].day_sends if b[1].day == day else 0",
           "chan_day[0] += b[1].day_sends", "§3.7 a channel's sends on t's local day, over every worker", fast=("tests/test_workers.py",)),
    Mutant("core-shard-pending-ring", CORE, "            at = lane_ring(E, j)[q & E.ring_mask]",
           "            at = lane_ring(E, j)[(q - 1) & E.ring_mask]", "§3.6 max_pending over every worker, at this event",
           fast=("tests/test_shard_bounds.py", "tests/test_workers.py")),
    Mutant("core-shard-pending-certain-le", CORE, "    if high < E.max_pending:\n        return 0",
           "    if high <= E.max_pending:\n        return 0", "§3.6 at most max_pending wait, over every worker",
           fast=("tests/test_shard_bounds.py", "tests/test_workers.py")),
    Mutant("core-shard-pending-key-at-event", CORE, "        if p > q or sm_reached(lane, q, SHARD_EVENT_DUE, 0):",
           "        if p > q:",
           "§3.6 max_pending over every worker: a worker whose key is this event has left its count at it",
           fast=("tests/test_shard_bounds.py", "tests/test_workers_service.py")),
    Mutant("core-shard-pending-refused-one-early", CORE, "    if low >= E.max_pending:\n        return 1",
           "    if low + 1 >= E.max_pending:\n        return 1",
           "§3.6 a delayed action is refused only when max_pending wait, over every worker, for certain",
           fast=("tests/test_shard_bounds.py", "tests/test_workers.py")),
    Mutant("core-shard-slack-no-pending", CORE, "    slack = pend + lag", "    slack = lag",
           "§3.7 a campaign's budgets, sent without waiting only when the others' pending timers cannot cross them",
           fast=("tests/test_shard_bounds.py",)),
    Mutant("core-shard-slack-one-short", CORE, "    slack = pend + lag", "    slack = pend + lag - 1",
           "§3.7 a campaign's budgets, sent without waiting only when surely below them",
           fast=("tests/test_shard_bounds.py",),
           equivalent="the lag counts q - p + 1 events where a worker behind can send at q - p of them (event q "
                      "is this worker's subscriber's, and timers at q are in the pending count): one is a margin"),
    Mutant("core-shard-channel-slack-one-campaign", CORE, "        own_chan += d * per[k]", "        own_chan += d",
           "§3.7 a channel's budget: every campaign of the channel that triggers on an event's type may send at it",
           fast=("tests/test_shard_bounds.py",)),
    Mutant("core-shard-wait-never-decides", CORE,
           "        elif round % SHARD_BOUND_EVERY == 0 and shard_bound(E, ci, day, camp_day, camp_total, chan_day):",
           "        elif False:",
           "§3.7 a budgeted send's wait ends once the others' counts decide it",
           fast=("tests/test_shard_bounds.py",)),
    Mutant("core-shard-bound-counts-kept", CORE,
           "    camp_day[0] = camp_total[0] = chan_day[0] = 0\n    for j in range(E.nshards):\n        if j != E.shard:",
           "    for j in range(E.nshards):\n        if j != E.shard:",
           "§3.7 a budgeted send's wait asks the bound on the lanes as they stand, counted afresh",
           fast=("tests/test_shard_bounds.py",)),
    Mutant("core-shard-wait-refusal-ignored", CORE,
           "    if camp_day[0] >= c.daily_budget or camp_total[0] >= c.total_budget:\n        return 1",
           "    if camp_day[0] >= c.daily_budget or camp_total[0] >= c.total_budget:\n        return 0",
           "§3.7 a budget the lanes already reach is spent: the send is refused without waiting",
           fast=("tests/test_shard_bounds.py",)),
    Mutant("core-shard-channel-slack-no-pending", CORE, "chan_slack = chan_pend + chan_lag",
           "chan_slack = chan_lag",
           "§3.7 a channel's budget, sent without waiting only when the others' pending timers cannot cross it",
           fast=("tests/test_shard_bounds.py",)),
    Mutant("core-shard-soon-clock-lt", CORE, "E.clock <= <int64_t>horizon else lane_pend(E, j)",
           "E.clock < <int64_t>horizon else lane_pend(E, j)",
           "§3.7 another worker's timers due by this event's clock can send before it",
           fast=("tests/test_shard_bounds.py",)),
    Mutant("core-shard-soon-always", CORE,
           "pb = lane_soon(E, j) if horizon != 0 and E.clock <= <int64_t>horizon else lane_pend(E, j)",
           "pb = lane_soon(E, j)",
           "§3.7 past another worker's horizon, all its pending timers can send before this key",
           fast=("tests/test_shard_bounds.py",)),
    Mutant("core-shard-tick-due-ge", CORE, "            if t.due > horizon:\n                break",
           "            if t.due >= horizon:\n                break",
           "§3.7 a timer due at a worker's horizon is counted due soon", fast=("tests/test_shard_bounds.py",)),
    Mutant("core-shard-soon-at-creation", CORE, "due_soon = timer.due <= E.horizon_pub",
           "due_soon = timer.due < E.horizon_pub",
           "§3.7 a timer made due within the published horizon is counted due soon at once",
           fast=("tests/test_shard_bounds.py",)),
    Mutant("core-shard-soon-fired", CORE, "shard_note_timers(E, t.campaign, -1, E.popped_soon)",
           "shard_note_timers(E, t.campaign, -1, False)",
           "§3.7 a timer that fired is no longer due soon (its send is in the counts)",
           fast=("tests/test_shard_bounds.py",)),
    Mutant("core-shard-owner-from-p", CORE, "    b = (p - 1) // SHARD_OWNER_EVERY", "    b = p // SHARD_OWNER_EVERY",
           "§3.7 another worker's events to come are counted from before its position",
           fast=("tests/test_shard_bounds.py",)),
    Mutant("core-shard-owner-snapshot-when", CORE, "    if (q - 1) % SHARD_OWNER_EVERY == 0:\n        b = (q - 1)",
           "    if q % SHARD_OWNER_EVERY == 0:\n        b = (q - 1)",
           "§3.7 the events by worker are kept as they stand after every 256th event",
           fast=("tests/test_shard_bounds.py",)),
    Mutant("core-shard-owner-or-all", CORE, "    camp_lag[0] += own + 1 if own + 1 < every else every",
           "    camp_lag[0] += own + 1",
           "§3.7 another worker's events to come are at most every event from its position on",
           fast=("tests/test_shard_bounds.py",)),
    Mutant("core-shard-owner-or-all-channel", CORE,
           "    chan_lag[0] += (own_chan + c.channel_campaigns if own_chan + c.channel_campaigns",
           "    chan_lag[0] += (own_chan + c.channel_campaigns if True or own_chan + c.channel_campaigns",
           "§3.7 another worker's sends on a channel to come are at most every event's from its position on",
           fast=("tests/test_shard_bounds.py",)),
    Mutant("core-shard-class-mask-ignored", CORE, "        if (c.class_mask >> k) & 1:\n            own += d",
           "        own += d",
           "§3.7 only events of a type the campaign triggers on can spend its budget",
           fast=("tests/test_shard_bounds.py",)),
    Mutant("core-shard-unclassed-counted", CORE, "        E.type_class[t] = SHARD_NO_CLASS\n        for i in range",
           "        E.type_class[t] = 0\n        for i in range",
           "§3.7 an event of a type no budgeted campaign triggers on spends no budget",
           fast=("tests/test_shard_bounds.py",)),
    Mutant("core-shard-day-opening-ignored", CORE, "    if (E.budgets[ci].day == day and E.budgets[ch].day == day\n",
           "    if (True\n",
           "§3.7 a send decided on the bound never opens a local day in its worker's lane",
           fast=("tests/test_shard_bounds.py",)),
    Mutant("core-shard-class-cap-ignored", CORE, "    if nr * <uint32_t>nshards > SHARD_CLASS_CAP:",
           "    if False:",
           "§3.7 the counts by class stay bounded: past the cap the classes are merged",
           fast=("tests/test_shard_bounds.py",)),
    Mutant("core-shard-owner-carry", CORE, "    if sub >= FOREIGN_INDEX:\n        k = E.type_class",
           "    if sub == FOREIGN_INDEX:\n        k = E.type_class",
           "§3.7 another worker's event counts for it also when a chunk's end cut it",
           fast=("tests/test_shard_bounds.py",)),
    Mutant("core-shard-owner-whose", CORE, "                E.owner_cnt[j * E.nr_classes + k] += 1",
           "                E.owner_cnt[(0 if j else 1) * E.nr_classes + k] += 1",
           "§3.7 an event counts for the worker whose subscriber it is", fast=("tests/test_shard_bounds.py",)),
    Mutant("core-shard-certain-channel-le", CORE,
           "or chan_day[0] + chan_slack < E.channel_daily[c.channel])",
           "or chan_day[0] + chan_slack <= E.channel_daily[c.channel])",
           "§3.7 a channel's budget, sent without waiting only when surely below it", fast=("tests/test_workers.py",),
           equivalent="with no margin the caller still refuses on the same counts; with a margin it counts one "
                      "event more than the lagging worker can still send, so reaching the budget exactly leaves room"),
    Mutant("workers-merge-timers-by-creation", "engine/workers/__init__.py",
           'np.lexsort((local, worker, keys["created"], keys["due"], keys["pos"]))',
           'np.lexsort((local, worker, keys["due"], keys["created"], keys["pos"]))',
           "§3 timers in (due, creation) order, whichever worker holds them",
           fast=("tests/test_workers.py", "tests/test_workers_service.py")),
    # the service's workers (issue 14, run --workers): the numbers contacts keep (their merge
    # order is replay's, engine.workers.action_order: workers-merge-timers-by-creation)
    Mutant("inprocess-fresh-contact-ge", "engine/workers/inprocess.py",
           "fresh = contact > self._owner.seq", "fresh = contact >= self._owner.seq",
           "§4 a conversion's contact_seq is its action's seq in the files (made in this piece, or before)",
           fast=("tests/test_workers_service.py",)),
    Mutant("core-rewrite-contact-seq", CORE, "if contact != NULL and contact.last_seq == local[i]:",
           "if contact != NULL and contact.last_seq != local[i]:",
           "§4 a contact keeps its action's seq in the files, for the conversions it makes later",
           fast=("tests/test_workers_service.py",)),
    # across hosts (issue 14, replay --ray): what the relay carries between the workers' blocks
    Mutant("cluster-ring-not-shipped", "engine/workers/cluster.py",
           "                if not self.ship_ring:\n                    ring = ring[:0]",
           "                if True:\n                    ring = ring[:0]",
           "§3.6 max_pending over every worker, on workers that share no memory", fast=("tests/test_workers_ray.py",)),
    Mutant("cluster-ring-run-lengths", "engine/workers/cluster.py",
           "lengths = np.diff(np.append(starts, np.uint64(n))).astype(np.int64)",
           "lengths = np.diff(np.append(starts, np.uint64(n + 1))).astype(np.int64)",
           "§3.6 each worker's pending counts by event, as another host reads them",
           fast=("tests/test_workers_ray.py",)),
    # `sigmatch reshard` (issue 14): a state of N workers put together and split for M
    Mutant("reshard-timers-kept-keys", "engine/service/reshard.py", '    timers["created"] = rank',
           "    pass", "§3 timers due together fire in the order they were made, after a reshard",
           fast=("tests/test_reshard.py",)),
    Mutant("reshard-budget-other-day", "engine/service/reshard.py",
           'np.where(stacked["day"] == day, stacked["day_sends"], 0).sum(axis=0)', 'stacked["day_sends"].sum(axis=0)',
           "§3.7 a budget's sends on the latest local day, over every worker, after a reshard",
           fast=("tests/test_reshard.py",)),
    Mutant("reshard-windows-in-place", "engine/service/reshard.py", "            w[:, 0] += offset",
           "            pass", "§3.3 max_in_window's kept contact times stay their subscriber's after a reshard",
           fast=("tests/test_reshard.py",)),
    Mutant("compile-where-in-snapshot-order", "engine/language/compile.py",
           "return len(profile_rows) == nr_rows and bool((profile_rows == np.arange(nr_rows)).all())",
           "return len(profile_rows) == nr_rows",
           "§1.1 a subscriber keeps its index and its own attributes when a snapshot lists them in another order",
           fast=("tests/test_reload.py", "tests/test_reshard.py")),
    # what a forked worker holds (issue 14, memory): nothing of the snapshot once compiled,
    # and the peer sets the coordinator built
    Mutant("workers-world-kept-by-closure", "engine/workers/__init__.py",
           "        _run_shard(inherited.pop, index, workers, traces, block, sender.send)",
           "        _run_shard(lambda: inherited[0], index, workers, traces, block, sender.send)",
           "issue 14: N workers use no more memory than one process (no worker keeps the snapshot)",
           fast=("tests/test_workers.py",)),
    Mutant("workers-peer-tables-per-worker", "engine/workers/__init__.py",
           "    build_peer_tables(config, world[0])\n", "",
           "issue 14: N workers use no more memory than one process (one copy of each peer set)",
           fast=("tests/test_workers.py",)),
    Mutant("workers-world-in-the-forking-frame", "engine/workers/__init__.py",
           "    world = [load_world(config)]\n", "    kept = load_world(config)\n    world = [kept]\n",
           "issue 14: N workers use no more memory than one process (the frames that fork hold no snapshot)",
           fast=("tests/test_workers.py",)),
    Mutant("workers-where-checked-on-a-shard", "engine/workers/__init__.py",
           "        check_wheres(config, world)\n", "",
           "§1.1 a where error names the row of the file, with workers too",
           fast=("tests/test_workers.py",)),
    Mutant("workers-outlive-the-coordinator", "engine/workers/__init__.py",
           "    _die_with(coordinator)\n", "",
           "issue 14: a worker dies with the coordinator that forked it (no orphan holding memory)",
           fast=("tests/test_workers.py",)),
    Mutant("workers-missing-trace-as-part-way", "engine/workers/__init__.py",
           "            if not files:\n", "            if False:\n",
           "a trace gone before the stream is refused as one process refuses it",
           fast=("tests/test_workers.py",)),
    # candidate masks (issue 14): each may only remove a campaign that cannot match
    Mutant("core-cand-counter-ge", CORE, "while j > grp.first and E.cthr[j - 1] <= v:", "while j > grp.first and E.cthr[j - 1] < v:",
           "§3.6 counter >= at_least (a campaign whose counter equals at_least stays a candidate)"),
    Mutant("core-cand-flags-present", CORE, "x = E.flag_union[t] & ~ev.flags", "x = E.flag_union[t] & ev.flags",
           "§3.6 only a campaign missing one of its flags in e.flags is dropped"),

    # ---- the core's decoder (SPEC §1.4)
    Mutant("pxi-ts-limit", PXI, "f[0].u >= TS_LIMIT", "f[0].u > TS_LIMIT", "§1.4 ts below 2^53"),
    Mutant("pxi-msisdn-limit", PXI, "if f[2].u == 0 or f[2].u >= MSISDN_LIMIT:", "if f[2].u == 0 or f[2].u > MSISDN_LIMIT:",
           "§1.4 an MSISDN of at most 15 digits"),
    Mutant("pxi-peer-limit", PXI, "if f[3].u >= MSISDN_LIMIT:", "if f[3].u > MSISDN_LIMIT:", "§1.4 a peer of at most 15 digits"),
    Mutant("pxi-digits-15", PXI, "if n == 0 or n > 15 or", "if n == 0 or n >= 15 or", "§1.4 a string of 1 to 15 digits"),
    Mutant("pxi-cell-limit", PXI, "i == 4 and f[i].u > 0xFFFFFFFFu", "i == 4 and f[i].u >= 0xFFFFFFFFu", "§1.4 a cell below 2^32"),
    # the fast path for an array of 8 unsigned integers (decode_fast): the same limits
    Mutant("pxi-fast-ts-limit", PXI, "if ts >= TS_LIMIT or type >= 64", "if ts > TS_LIMIT or type >= 64",
           "§1.4 ts below 2^53 (fast path)", fast=("tests/test_decoder.py",)),
    Mutant("pxi-fast-type-known", PXI, "or not (types.valid_codes >> type) & 1:", ":",
           "§1.4 a type code the configuration names (fast path)", fast=("tests/test_decoder.py",)),
    Mutant("pxi-fast-type-64", PXI, "if ts >= TS_LIMIT or type >= 64 or", "if ts >= TS_LIMIT or type > 64 or",
           "§1.4 a type code below 64 (fast path)", fast=("tests/test_decoder.py",),
           equivalent="codes are 1..63 (Core.set_event_types), so bit 0 of valid_codes is never set, and x86-64 "
                      "shifts by the count mod 64: type 64 reads bit 0 and is refused either way. The check stays, "
                      "as C leaves a shift by 64 undefined"),
    Mutant("pxi-fast-msisdn-zero", PXI, "if msisdn == 0 or msisdn >= MSISDN_LIMIT", "if msisdn >= MSISDN_LIMIT",
           "§1.4 an MSISDN is not 0 (fast path)", fast=("tests/test_decoder.py",)),
    Mutant("pxi-fast-msisdn-limit", PXI, "msisdn == 0 or msisdn >= MSISDN_LIMIT", "msisdn == 0 or msisdn > MSISDN_LIMIT",
           "§1.4 an MSISDN of at most 15 digits (fast path)", fast=("tests/test_decoder.py",)),
    Mutant("pxi-fast-peer-limit", PXI, "or peer >= MSISDN_LIMIT or", "or peer > MSISDN_LIMIT or",
           "§1.4 a peer of at most 15 digits (fast path)", fast=("tests/test_decoder.py",)),
    # a stricter check only sends more events down the general path, with the same outcome:
    # the fast path's mutants loosen
    Mutant("pxi-fast-cell-limit", PXI, "or cell > 0xFFFFFFFFu:", "or cell > 0x100000000u:",
           "§1.4 a cell below 2^32 (fast path)", fast=("tests/test_decoder.py",)),
    Mutant("pxi-fast-room", PXI, "start + 73 > end or 73 > max_bytes", "start + 64 > end or 64 > max_bytes",
           "§1.4 an event is never read past the buffer or max_event_bytes (fast path)", fast=("tests/test_decoder.py",)),
    Mutant("pxi-fast-uint16", PXI, "            v[i] = be16(buf + pos + 1)\n            pos += 3",
           "            v[i] = be16(buf + pos + 1)\n            pos += 2", "§1.4 uint 16 is 3 bytes (fast path)",
           fast=("tests/test_decoder.py",)),

    # ---- `when` and `anniversary` (issue 11): the core's program, its compilation, its calendar
    Mutant("core-when-lt-le", CORE, "b = s < 0", "b = s <= 0", "§2.1 when: < is strict"),
    Mutant("core-when-le-lt", CORE, "b = s <= 0", "b = s < 0", "§2.1 when: <="),
    Mutant("core-when-gt-ge", CORE, "b = s > 0\n", "b = s >= 0\n", "§2.1 when: > is strict"),
    Mutant("core-when-ge-gt", CORE, "b = s >= 0", "b = s > 0", "§2.1 when: >="),
    Mutant("core-when-eq-ne", CORE, "b = s == 0", "b = s != 0", "§2.1 when: =="),
    Mutant("core-when-and-as-or", CORE, "stack &= ~(<uint64_t>1) | top", "stack |= top", "§2.1 when: and"),
    Mutant("core-when-not-ignored", CORE, "stack ^= 1", "stack ^= 0", "§2.1 when: not"),
    Mutant("core-when-64-bit", CORE, "s += <sm_int128>term.coef * <sm_int128>counter_read(E, row, term.counter, ts)",
           "s += <int64_t>(<uint64_t>term.coef * <uint64_t>counter_read(E, row, term.counter, ts))",
           "§2.1 when is exact on integers: no overflow"),
    Mutant("compile-when-right-side-added", WHEN, "coefs[n] = coefs.get(n, 0) - a", "coefs[n] = coefs.get(n, 0) + a",
           "§2.1 when: the right side moves over with its sign"),
    Mutant("compile-when-right-constant-added", WHEN, "(OPS.index(node.op), lk - rk, terms)",
           "(OPS.index(node.op), lk + rk, terms)", "§2.1 when: the right side's constant"),
    Mutant("core-anniversary-feb28-in-leap-years", CORE, "today == 1024 + 2 * 32 + 28", "(today & 1023) == 2 * 32 + 28",
           "§3.6 February 29 is matched on February 28 only in years without one"),
    Mutant("core-anniversary-utc-date", CORE, "E.today_md = month_day_of(day)",
           "E.today_md = month_day_of(floor_div(ts, DAY_MS))", "§3.6 anniversary: the local date of e.ts"),
    Mutant("core-anniversary-leap-century", CORE, "(y % 4 == 0 and y % 100 != 0) or y % 400 == 0", "y % 4 == 0",
           "§3.6 anniversary: 2100 has no February 29"),
    Mutant("core-anniversary-day-of-month", CORE, "doy - (153 * mp + 2) / 5 + 1", "doy - (153 * mp + 2) / 5 + 2",
           "§3.6 anniversary: the day of the month"),

    # ---- the reference model: the same rules in Python
    Mutant("model-timer-due-at-event-after", MODEL, "self._timers[0][0] <= ts:", "self._timers[0][0] < ts:",
           "§3.1 due time <= e.ts fires first"),
    Mutant("model-timers-newest-first", MODEL, "self._created += 1", "self._created -= 1", "§3.1 creation order"),
    Mutant("model-late-le", MODEL, "if e.ts < self.clock:", "if e.ts <= self.clock:", "§3 late: ts below the clock"),
    Mutant("model-window-reset-gt", MODEL, "value != 0 and ts >= start + k.window_ms", "value != 0 and ts > start + k.window_ms",
           "§3.4 reset when e.ts >= start + window"),
    Mutant("model-window-read-gt", MODEL, "window is not None and ts >= start + window", "window is not None and ts > start + window",
           "§3.6 a passed window reads as 0"),
    Mutant("model-minutes-ceil", MODEL, "-(-e.dur // 60)", "-(-e.dur // 61)", "§3.4 ceil(dur / 60)"),
    Mutant("model-counter-max", MODEL, "COUNTER_MAX = 2**32 - 1", "COUNTER_MAX = 2**32 - 2", "§3.4 saturate at 2^32 - 1"),
    Mutant("model-convert-within-le", MODEL, "ts - contact.ts < c.convert_within_ms", "ts - contact.ts <= c.convert_within_ms",
           "§3.5 e.ts - contact.ts < convert_within"),
    Mutant("model-at-least-le", MODEL, "self._counter_value(i, c.counter, ts) < c.at_least",
           "self._counter_value(i, c.counter, ts) <= c.at_least", "§3.6 counter >= at_least"),
    Mutant("model-stop-after-gt", MODEL, "self._streak.get((i, c.id), 0) >= c.stop_after",
           "self._streak.get((i, c.id), 0) > c.stop_after", "§3.6 streak < stop_after"),
    Mutant("model-cooldown-at-match-le", MODEL, "if contact is not None and ts < contact.ts + c.cooldown_ms:",
           "if contact is not None and ts <= contact.ts + c.cooldown_ms:", "§3.6 e.ts >= last contact + cooldown"),
    Mutant("model-max-pending-gt", MODEL, "len(self._pending) >= self.config.max_pending", "len(self._pending) > self.config.max_pending",
           "§3.6 at most max_pending wait"),
    Mutant("model-hours-start-exclusive", MODEL, "return start <= minute < end if", "return start < minute < end if",
           "§2 hours: start inclusive"),
    Mutant("model-hours-wrap-end", MODEL, "else minute >= start or minute < end", "else minute >= start or minute <= end",
           "§2 hours wrapping midnight: end exclusive"),
    Mutant("model-weekday", MODEL, "(self._day(t) + 3) % 7", "(self._day(t) + 4) % 7", "§3 weekdays from Thursday"),
    Mutant("model-min-gap-le", MODEL, "t < last + policy.min_gap_ms", "t <= last + policy.min_gap_ms",
           "§3.7 t >= last contact + min_gap"),
    Mutant("model-max-per-day-gt", MODEL, "0) >= policy.max_per_day", "0) > policy.max_per_day",
           "§3.7 fewer than max_per_day"),
    Mutant("model-max-in-window-ge", MODEL, "if x > t - window", "if x >= t - window",
           "§3.7 contacts at times > t - window"),
    Mutant("model-max-in-window-gt", MODEL, "if x > t - window) >= contacts:", "if x > t - window) > contacts:",
           "§3.7 fewer than max_in_window.contacts"),
    Mutant("model-global-holdout-le", MODEL, "% 10000 < self.config.policy.global_holdout_threshold",
           "% 10000 <= self.config.policy.global_holdout_threshold", "§3.7 global control when crc32 % 10000 < threshold"),
    Mutant("model-campaign-daily-budget-gt", MODEL, "self._sends_on_day.get((c.id, day), 0) >= c.daily_budget",
           "self._sends_on_day.get((c.id, day), 0) > c.daily_budget", "§3.7 sends on t's local day < daily_budget"),
    Mutant("model-campaign-total-budget-gt", MODEL, "self._sends.get(c.id, 0) >= c.total_budget",
           "self._sends.get(c.id, 0) > c.total_budget", "§3.7 sends ever < total_budget"),
    Mutant("model-channel-budget-gt", MODEL, "self._channel_sends_on_day.get((c.channel, day), 0) >= budget",
           "self._channel_sends_on_day.get((c.channel, day), 0) > budget", "§3.7 channel sends on t's local day < its daily_budget"),
    Mutant("model-budget-counts-controls", MODEL, "        if kind == KIND_SEND:\n            for counts",
           "        if True:\n            for counts", "§3.7 only sends count against budgets"),
    Mutant("model-budget-order", MODEL, "            return \"suppressed_campaign_budget\"\n        budget = ",
           "            return \"suppressed_channel_budget\"\n        budget = ", "§3.7 the campaign's budgets before the channel's"),
    Mutant("model-holdout-le", MODEL, "% 10000 < c.holdout_threshold", "% 10000 <= c.holdout_threshold",
           "§3.7 control when crc32 % 10000 < threshold"),
    Mutant("model-policy-max-per-day-before-min-gap", MODEL,
           "        if \"min_gap\" not in c.exempt and last is not None and t < last + policy.min_gap_ms:\n"
           "            return \"suppressed_min_gap\"\n"
           "        if (policy.max_per_day is not None and \"max_per_day\" not in c.exempt\n"
           "                and self._day_count.get((i, self._day(t)), 0) >= policy.max_per_day):\n"
           "            return \"suppressed_max_per_day\"\n",
           "        if (policy.max_per_day is not None and \"max_per_day\" not in c.exempt\n"
           "                and self._day_count.get((i, self._day(t)), 0) >= policy.max_per_day):\n"
           "            return \"suppressed_max_per_day\"\n"
           "        if \"min_gap\" not in c.exempt and last is not None and t < last + policy.min_gap_ms:\n"
           "            return \"suppressed_min_gap\"\n",
           "§3.7 policy order: min_gap before max_per_day"),

    Mutant("model-campaign-flags-all", MODEL, "if (e.flags & c.flags) != c.flags:\n            return \"flags\"",
           "if (e.flags & c.flags) == c.flags:\n            return \"flags\"", "§3.6 every flag of the campaign's flags set"),
    Mutant("model-campaign-arg-eq", MODEL, "if c.arg is not None and e.arg != c.arg:\n            return \"arg\"",
           "if c.arg is not None and e.arg == c.arg:\n            return \"arg\"", "§3.6 e.arg equal to the campaign's arg"),
    Mutant("model-start-gt", MODEL, "date >= (c.start.year", "date > (c.start.year", "§3.6 start included"),
    Mutant("model-end-lt", MODEL, "date <= (c.end.year", "date < (c.end.year", "§3.6 end included"),
    Mutant("model-week-monday", MODEL, "return (self._day(t) + 3) // 7", "return (self._day(t) + 4) // 7",
           "§3.4 weeks start on Monday"),
    Mutant("model-period-reset-eq", MODEL, "self._period(k.period, ts) != self._period(k.period, start):",
           "self._period(k.period, ts) == self._period(k.period, start):", "§3.4 a period counter resets in another period"),
    Mutant("model-period-read-eq", MODEL, "if period is not None and self._period(period, ts) != self._period(period, start):",
           "if period is not None and self._period(period, ts) == self._period(period, start):",
           "§3.6 a counter whose period is not e.ts's reads 0"),
    Mutant("model-counter-arg-eq", MODEL, "(k.arg is None or e.arg == k.arg)", "(k.arg is None or e.arg != k.arg)",
           "§3.4 a counter's arg equals e.arg"),
    Mutant("model-when-lt-le", WHEN, '"<": lambda a, b: a < b', '"<": lambda a, b: a <= b', "§2.1 when: < is strict"),
    Mutant("model-when-and-as-or", WHEN, "return evaluate(expr.left, read) and evaluate(expr.right, read)",
           "return evaluate(expr.left, read) or evaluate(expr.right, read)", "§2.1 when: and"),
    Mutant("model-when-minus-swapped", WHEN, 'else left - right if expr.op == "-"', 'else right - left if expr.op == "-"',
           "§2.1 when: a - b"),
    Mutant("model-anniversary-feb28-in-leap-years", MODEL, "and not calendar.isleap(today.year)",
           "and calendar.isleap(today.year)", "§3.6 February 29 is matched on February 28 only in years without one"),
    Mutant("model-anniversary-utc-date", MODEL, "days=self._day(t) % GREGORIAN_CYCLE_DAYS",
           "days=t // DAY_MS % GREGORIAN_CYCLE_DAYS", "§3.6 anniversary: the local date of e.ts"),
    Mutant("model-after-within-gt", MODEL, "if t is None or ts - t >= cond.within_ms:", "if t is None or ts - t > cond.within_ms:",
           "§3.6 after: e.ts - marker < within"),
    Mutant("model-not-after-within-le", MODEL, "if t is not None and ts - t < cond.within_ms:",
           "if t is not None and ts - t <= cond.within_ms:", "§3.6 not_after: e.ts - marker >= within"),
    Mutant("model-absent-ge", MODEL, "self._marker[(i, name)] > trigger_ts", "self._marker[(i, name)] >= trigger_ts",
           "§3.7 absent: a marker later than the trigger"),
    Mutant("model-marker-arg-eq", MODEL, "(mk.arg is None or e.arg == mk.arg)", "(mk.arg is None or e.arg != mk.arg)",
           "§3.8 a marker's arg equals e.arg"),
    Mutant("model-variant-running-sum-le", MODEL, "            if x < running:\n                return v.template",
           "            if x <= running:\n                return v.template",
           "§3.7 the first variant whose running sum exceeds the hash"),
    Mutant("model-variant-w-minus-one", MODEL, "% sum(v.weight for v in c.variants)",
           "% (sum(v.weight for v in c.variants) - 1 or 1)", "§3.7 the variant hash modulo W, the sum of the weights"),
    Mutant("model-variant-holdout-hash", MODEL, 'zlib.crc32(f"{msisdn}:{c.id}:variant".encode())',
           'zlib.crc32(f"{msisdn}:{c.id}".encode())', "§3.7 crc32(f\"{msisdn}:{campaign_id}:variant\")"),

    # ---- the cold paths of explain and diff (issue 12)
    Mutant("core-explain-not-after-named-after", CORE, "if k.negate and m != 0 and ts - (m - 1) < k.within:\n"
           "            return XC_NOT_AFTER", "if k.negate and m != 0 and ts - (m - 1) < k.within:\n"
           "            return XC_AFTER", "explain names the first failing condition: not_after"),
    Mutant("core-explain-recheck-unnamed", CORE, "return FN_RECHECK_FAILED | (failed << 8)", "return FN_RECHECK_FAILED",
           "explain names the recheck that failed"),
    Mutant("core-explain-exclude-as-blacklist", "engine/closedloop/explain.py",
           'if any(self._member(name, msisdn) for name in c.exclude):\n            return "exclude"',
           'if any(self._member(name, msisdn) for name in c.exclude):\n            return "blacklist"',
           "explain: exclude before blacklist"),
    Mutant("core-taker-first-contact", CORE, "contact.flags & CONTACT_CONTACTED and contact.last_seq > best:",
           "contact.flags & CONTACT_CONTACTED and best == 0:", "diff: the taker is the campaign of the latest contact"),
    Mutant("model-taker-earliest-contact", MODEL, "latest = max((self._contact", "latest = min((self._contact",
           "diff: the taker is the campaign of the latest contact"),
    Mutant("model-explain-stop-after-named-once", MODEL, 'return "stop_after"', 'return "once"',
           "explain names the first failing condition: stop_after"),
    Mutant("loader-dictionary-not-unified", "loaders/profiles.py", "    column = column.unify_dictionaries()\n",
           "", "a dictionary column's rows take the values of their own row group's dictionary",
           fast=("tests/test_loaders.py",)),
    Mutant("loader-tags-dictionary-null-rows-kept", "loaders/profiles.py",
           "counts = pc.fill_null(pc.list_value_length(lists), 0)", "counts = pc.list_value_length(lists)",
           "a null row of a dictionary tags column has no tags",
           fast=("tests/test_loaders.py",)),
    Mutant("loader-quote-count-wrong-byte", "loaders/tabular.py", "np.uint8, size) == 0x22", "np.uint8, size) == 0x27",
           "a file with an odd number of quotes names the line whose quote never closes",
           fast=("tests/test_field_inputs.py::test_an_unclosed_quote_names_its_line_instead_of_swallowing_the_file",)),

    # ---- the service
    Mutant("daemon-break-before-skips-file", "engine/service/daemon.py",
           "if status != 4 and core.error_offset < file_start:", "if False:",
           "an event begun in an earlier spool file that breaks in this one costs none of this file's events",
           fast=("tests/test_daemon_hostile.py::test_a_fragment_between_files_never_costs_the_next_file",)),
    Mutant("daemon-swallowed-file-lost", "engine/service/daemon.py", "if offset and carried > offset and",
           "if False and", "a spool file read whole as the bytes of a value begun before it, no event's shape, is "
           "read again as a stream",
           fast=("tests/test_daemon_hostile.py::test_a_fragment_between_files_never_costs_the_next_file",)),
    Mutant("daemon-swallow-any-shape", "engine/service/daemon.py",
           " and not event_shaped(self.engine._core.carried_head):", ":",
           "an event cut across three files runs on through the middle one, as replay reads it",
           fast=("tests/test_daemon_hostile.py::test_a_fragment_between_files_never_costs_the_next_file",)),
    Mutant("daemon-event-entries-le", "engine/service/daemon.py",
           'return len(head) < 3 or int.from_bytes(head[1:3], "big") <= EVENT_ENTRIES_MAX',
           'return len(head) < 3 or int.from_bytes(head[1:3], "big") < EVENT_ENTRIES_MAX',
           "an array of 64 entries is an event's shape, of 65 not",
           fast=("tests/test_daemon_hostile.py::test_an_event_shape_is_an_array_or_map_of_at_most_64",)),

    # ---- privacy: what pages show of a number a person typed
    Mutant("privacy-written-seven-digits-kept", "engine/privacy.py", "    if len(digits) < MIN_MASKED_DIGITS:\n        return text\n    return (\"+\"",
           "    if len(digits) <= MIN_MASKED_DIGITS:\n        return text\n    return (\"+\"", "a number of 7 digits or more, written in groups, is masked",
           fast=("tests/test_privacy_logs.py",)),
    Mutant("privacy-written-dates-masked", "engine/privacy.py",
           "parts += [pattern.sub(mask, text[at:kept.start()]), kept[0]]",
           "parts += [pattern.sub(mask, text[at:kept.end()])]",
           "a date or an IPv4 address written in groups is no number to mask", fast=("tests/test_privacy_logs.py",)),
    Mutant("out-missing-parent-made", "engine/sinks.py",
           '    if there is None or there == path or ".." not in path.parts:\n        return path\n',
           '    if True:\n        return path\n',
           "an out through a missing folder and back (`base/missing/../out`) leaves no folder behind",
           fast=("tests/test_api_details.py::test_an_out_through_a_missing_folder_and_back_leaves_no_folder_behind",
                 "tests/test_cli.py::test_an_out_through_a_missing_folder_and_back_leaves_no_folder_behind")),
    Mutant("privacy-typed-spread-one-separator", "engine/privacy.py", "]{1,8}\\d++)*+", "]\\d++)*+",
           "a typed number apart by two spaces or a spaced dash (`138 - 0013 - 8000`) is masked",
           fast=("tests/test_privacy_logs.py",)),
    Mutant("privacy-typed-spread-unmasked", "engine/privacy.py", "    text = _outside_kept(_SPREAD, text, _mask_spread)\n", "",
           "a typed number apart by other spaces and dashes (no-break, en dash, minus) is masked",
           fast=("tests/test_privacy_logs.py",)),
    Mutant("report-writes-inside-its-outputs", "engine/cli.py", "        if any(d == w or d in w.parents for d in inside for w in wheres):",
           "        if any(d == w for d in inside for w in wheres):",
           "a report's page, plots or list never lands inside an output directory it reads",
           fast=("tests/test_report.py::test_the_page_list_and_plots_never_land_on_what_the_report_reads",)),
    Mutant("diff-page-over-its-trace", "engine/cli.py", "        if wheres & {Path(os.path.abspath(read)), Path(os.path.realpath(read))}:",
           "        if False:", "diff's page is none of the files it reads",
           fast=("tests/test_diff.py::test_the_page_never_replaces_a_configuration_trace_or_checkpoint",)),
    Mutant("report-text-column-of-numbers", "engine/closedloop/outputs.py",
           "            if not (pa.types.is_string(given) or pa.types.is_large_string(given)):",
           "            if False:", "a record file's campaign, template or kind of numbers is refused naming the file",
           fast=("tests/test_report.py::test_a_record_a_run_never_writes_is_refused_naming_its_file",)),
    Mutant("report-offset-missing-taken-as-utc", "engine/closedloop/outputs.py",
           '        if "utc_offset" not in identity:\n            return',
           '        if False:\n            return',
           "a stats.json whose configuration has no utc_offset is refused, not read in UTC",
           fast=("tests/test_report.py::test_a_stats_json_sigmatch_never_writes_is_one_line",)),
    Mutant("report-stats-key-twice-kept", "engine/closedloop/outputs.py", "    if len(found) < len(pairs):", "    if False:",
           "a stats.json key given twice in one object is refused",
           fast=("tests/test_report.py::test_a_stats_json_key_given_twice_is_one_line",)),
    Mutant("report-jsonl-bom-in-batch", "engine/closedloop/outputs.py",
           "            if mark is not None:\n", "            if False:\n", "a JSON Lines file that starts with a byte order mark is named with the reason",
           fast=("tests/test_report.py::test_a_record_a_run_never_writes_is_refused_naming_its_file",)),
    Mutant("privacy-typed-two-numbers-joined", "engine/privacy.py",
           "        if following is None or digits >= 11 or (digits >= MIN_MASKED_DIGITS and len(following) >= MIN_MASKED_DIGITS):",
           "        if following is None or (digits >= 99",
           "two typed numbers with a space between are masked as two", fast=("tests/test_privacy_logs.py",)),
    Mutant("privacy-typed-short-tail-shown", "engine/privacy.py",
           "    if len(pieces) > 1 and pieces[-1][2] < MIN_MASKED_DIGITS:", "    if False:",
           "a short number typed before an MSISDN leaves none of its digits shown", fast=("tests/test_privacy_logs.py",)),
    Mutant("privacy-kept-any-four-groups", "engine/privacy.py", "|%s(?:\\.%s){3}(?!\\.\\d))(?!\\d)",
           "|\\d{1,3}(?:\\.\\d{1,3}){3}%s%s)(?!\\d)", "only an IPv4 address (octets of 0-255) is kept, not 13.800.138.000",
           fast=("tests/test_privacy_logs.py",)),
    Mutant("console-version-page-unreadable-live", "engine/console/pages/versions.py",
           "        head = v.head()\n    except VersionError as e:", "        head = v.head()\n    except KeyError as e:",
           "a version's page says a live file it cannot read in one line (409), never a 500",
           fast=("tests/test_console_edit.py::test_a_versions_page_says_a_live_file_it_cannot_read_in_one_line_never_a_500",)),
    Mutant("console-policy-view-shape-unchecked", "engine/console/pages/policy.py",
           '    for cid, c in _field(view, "campaigns", "", "object").items():', '    for cid, c in view.get("campaigns", {}).items():',
           "a lookup answer of another shape is one line (502) on the policy view",
           fast=("tests/test_console_core.py::test_the_policy_view_says_an_answer_of_another_shape_in_one_line",)),
    Mutant("console-forged-base-taken", "engine/console/versions.py", "        self._require_version(base)\n", "",
           "a form whose base names no version is refused, not taken as newer than every save",
           fast=("tests/test_console_edit.py::test_a_base_that_is_no_version_is_refused_not_taken_for_a_form_newer_than_every_save",)),
    Mutant("console-bidi-override-in-value", "engine/console/forms.py", r"\u2028\u2029\u202a-\u202e", r"\u2028\u2029\u202a-\u202d",
           "a one-line value with a right-to-left override is refused as a why is",
           fast=("tests/test_console_edit.py::test_a_one_line_value_with_a_bidirectional_override_or_a_c1_control_is_refused_as_a_why_is",)),
    Mutant("console-note-cut-not-refused", "engine/console/versions.py", "    if len(note) > MAX_NOTE:", "    if len(note) > MAX_NOTE + 1:",
           "a note longer than 2,000 characters is refused, never cut",
           fast=("tests/test_console_edit.py::test_a_note_longer_than_a_why_may_be_is_refused_not_cut",)),
    Mutant("console-live-version-simulated", "engine/console/pages/simulate.py", '    if row[0]["state"] in LIVE_STATES:',
           '    if row[0]["state"] in ():', "the live version is not simulated against itself",
           fast=("tests/test_console_simulate.py::test_the_live_version_is_not_simulated_against_itself",)),
    Mutant("console-cancel-shows-running", "engine/console/simulate.py", "            cancelling = job is not None and job.cancelled",
           "            cancelling = False", "a cancelled simulation shows cancelling until its child stops",
           fast=("tests/test_console_simulate.py::test_a_cancelled_simulation_shows_cancelling_until_its_child_stops",)),
    Mutant("console-missing-list-unsaid", "engine/console/pages/campaigns.py", "    return rows, missing_input(cfg)",
           "    return rows, None", "the campaigns page says a list file the live configuration names is gone",
           fast=("tests/test_console_edit.py::test_a_live_list_file_moved_away_is_said_on_the_campaigns_page",)),
    Mutant("console-missing-list-not-warned", "engine/console/pages/campaigns.py",
           '        log.warning("the live configuration does not load: %s", problem)',
           '        log.info("the live configuration does not load: %s", problem)',
           "the console warns at start of a live file that names a missing list",
           fast=("tests/test_console_core.py::test_console_warns_once_at_start_of_a_live_file_that_does_not_load",)),
    Mutant("report-conversion-joins-another-contact", "engine/closedloop/report.py",
           "            other = found & ((a.msisdn[where] != c.msisdn) | (a.campaign[where] != c.campaign)) if len(a) else found",
           "            other = found & (a.campaign[where] != c.campaign) if len(a) else found",
           "a conversion whose contact_seq names another subscriber's contact is not joined to it",
           fast=("tests/test_report.py::test_a_conversion_naming_another_subscribers_contact_is_not_joined_to_it",)),
    Mutant("report-contacts-twice-unsaid", "engine/closedloop/report.py", "            if both:\n", "            if both > 10:\n",
           "contacts that two directories both hold are said to count twice",
           fast=("tests/test_report.py::test_contacts_in_two_directories_are_said_to_count_twice",)),
    Mutant("report-unknown-campaign-unsaid", "engine/closedloop/report.py", "            if cid not in named:", "            if False:",
           "a campaign of the record files that the configuration does not name is warned of",
           fast=("tests/test_report.py::test_a_campaign_the_configuration_does_not_name_is_warned_of",)),
    Mutant("diff-hides-replays-warnings", "engine/closedloop/diff.py",
           '        _warn_of_run({"run": {**figures, "late_events": 0}}, engine.config)', "        pass",
           "diff warns of a side's events as replay does (no subscriber in the snapshot, a bad value of many events)",
           fast=("tests/test_diff.py::test_no_subscriber_in_the_snapshot_is_warned_of_as_replay_warns",)),
    Mutant("diff-bad-events-unsaid", "engine/closedloop/diff.py", '    if not result.get("bad_events"):\n        return []',
           '    if True:\n        return []', "diff warns of a side's bad events in replay's words",
           fast=("tests/test_diff.py::test_bad_events_are_said_once_when_both_sides_say_the_same",)),
    Mutant("lookup-head-refusal-body-to-head", "engine/service/lookup.py",
           r'                + b"\r\nConnection: close\r\n\r\n" + (b"" if head.startswith(b"HEAD ") else body))',
           r'                + b"\r\nConnection: close\r\n\r\n" + body)',
           "the lookup's 414 and 431 are JSON, bodiless to HEAD",
           fast=("tests/test_lookup_server.py::test_a_request_head_past_the_bound_is_answered_json_too",)),
    Mutant("report-page-funnel-source-unsaid", "engine/closedloop/render.py",
           '<p class="small source">Source: matched and the suppressions, stats.json\'s funnel (added up over the',
           '<p class="small">Matched and the suppressions (added up over the',
           "the report page says where each section's figures come from",
           fast=("tests/test_report.py::test_the_page_names_the_source_of_each_figure_and_warns_first",)),
    Mutant("client-deep-json-uncaught", "engine/service/client.py",
           "        except RecursionError:\n            # JSON nested thousands deep",
           "        except ZeroDivisionError:\n            # JSON nested thousands deep",
           "a lookup's answer nested too deeply is one line, not a traceback",
           fast=("tests/test_console_core.py::test_the_policy_view_says_an_answer_nested_too_deeply_in_one_line",)),
    Mutant("privacy-typed-invisible-marks-kept", "engine/privacy.py", "\\u180e\\u200b-\\u200f", "\\u180e\\u200b-\\u200d",
           "a typed number spread by direction marks (which show nothing) is masked", fast=("tests/test_privacy_logs.py",)),
    Mutant("report-configuration-null-as-none", "engine/closedloop/outputs.py",
           '    if identity is not None or "configuration" in stats:', "    if identity is not None:",
           "a stats.json whose configuration is null is refused, not read as an older sigmatch's",
           fast=("tests/test_report.py::test_a_stats_json_sigmatch_never_writes_is_one_line",)),
    Mutant("console-simulation-live-read-raw", "engine/console/pages/simulate.py",
           "        live_text = Versions(store, get_settings(request).config).read_live()",
           "        live_text = None",
           "a simulation asked while the live file is not UTF-8 says it as every page does",
           fast=("tests/test_console_simulate.py::test_a_live_file_that_is_not_utf8_is_said_as_every_page_says_it",)),
    Mutant("console-zero-width-in-value", "engine/console/forms.py", r"\u180e\u200b-\u200f", r"\u180e\u200c-\u200f",
           "a one-line value with a zero-width space (which shows nothing) is refused",
           fast=("tests/test_console_edit.py::test_a_one_line_value_with_a_bidirectional_override_or_a_c1_control_is_refused_as_a_why_is",)),
    Mutant("privacy-commas-all-kept", "engine/privacy.py", "    if len(groups[-1]) == 3 and middle <=",
           "    if len(groups[-1]) >= 2 and middle <=",
           "groups joined by commas are kept only when grouped as a count is (`138,0013,8000` is masked)",
           fast=("tests/test_privacy_logs.py",)),
    Mutant("privacy-commas-lakhs-masked", "engine/privacy.py", "middle <= {3} | ({2} if middle == {2} else set())",
           "middle <= {3}", "a count in lakhs and crores (`12,34,567`) is kept as 1,234,567 is",
           fast=("tests/test_privacy_logs.py",)),

    Mutant("report-count-unbounded", "engine/closedloop/outputs.py", "and 0 <= value < 1 << 63", "and 0 <= value",
           "a stats.json count is at most 2^63 - 1, as the core counts",
           fast=("tests/test_report.py::test_a_stats_json_sigmatch_never_writes_is_one_line",)),

    Mutant("daemon-tail-after-hole-from-size", "engine/service/daemon.py",
           "start = size + cut if cut and now > size + cut and self._zeros(f, size, cut) else size",
           "start = size", "a second late tail holds only its new bytes, named by its own offset",
           fast=("tests/test_daemon_hostile.py::test_tails_written_on_through_the_same_handle_each_hold_only_their_new_bytes",)),

    Mutant("daemon-broken-rest-kept-in-done", "engine/service/daemon.py",
           "                offset = core.error_offset - file_start\n",
           "                offset = max(offset, os.fstat(f.fileno()).st_size)\n",
           "the bytes after a break go to rejected/NAME.rest-OFFSET; done/NAME keeps what was processed",
           fast=("tests/test_daemon_hostile.py::test_a_corrupt_stream_names_the_file_the_offset_inside_it_and_the_reason",)),

    Mutant("privacy-international-shielded-by-name", "engine/privacy.py", "if not _INTERNATIONAL.search(text, max(0, start - 8), start) and (", "if (",
           "a number after a '+' is masked even when a name follows it", fast=("tests/test_privacy_logs.py",)),

    Mutant("daemon-cut-copied-twice-after-crash", "engine/service/daemon.py",
           "                if self._holds(f, start, now - start, tail):",
           "                if False and self._holds(f, start, now - start, tail):",
           "bytes copied to rejected/ before a crash are cut, not copied twice, by the roll forward",
           fast=("tests/test_daemon_hostile.py::test_a_cut_copied_before_a_crash_is_not_copied_twice",)),

    Mutant("daemon-restart-forgets-done-watch", "engine/service/daemon.py",
           "        self._watch_again(extra.get(\"moved_lately\"))\n", "",
           "a restart watches the files moved to done/ lately for late tails again",
           fast=("tests/test_daemon_hostile.py::test_a_tail_appended_while_the_service_was_down_is_still_cut",)),

    Mutant("daemon-done-watch-older-than-five-minutes", "engine/service/daemon.py",
           "            if not 0 <= age <= DONE_WATCH_S:", "            if not 0 <= age <= DONE_WATCH_S + 2:",
           "a restart watches again only the files moved less than DONE_WATCH_S ago",
           fast=("tests/test_daemon_hostile.py::test_a_restart_watches_the_files_moved_in_the_last_five_minutes_again",)),

    Mutant("daemon-hole-after-restart-from-next", "engine/service/daemon.py",
           "                    if int(offset[0]) >= size:", "                    if int(offset[0]) > size:",
           "after a restart a late tail skips the hole of the bytes set aside from the bytes processed on",
           fast=("tests/test_daemon_hostile.py::test_a_tail_after_a_restart_skips_the_hole_of_the_bytes_set_aside_before",)),

    Mutant("checkpoint-file-by-name-alone", "engine/service/checkpoint.py",
           "    return head == magic or (magic is RECORD_MAGIC and head == b\"\")", "    return True",
           "a file of a checkpoint's name without the store's magic is the user's: neither read nor removed",
           fast=("tests/test_checkpoint_store.py::test_a_users_own_files_of_checkpoint_like_names_are_neither_read_nor_removed",
                 "tests/test_cli.py::test_only_a_services_checkpoint_names_make_a_directory_a_state")),

    Mutant("traces-out-of-order-same-ms", "loaders/sniff.py",
           "if int(h.ts.min()) < int(before.ts[0])]", "if int(h.ts.min()) <= int(before.ts[0])]",
           "a trace is out of order when its events begin before those of the trace before it, not at the same ms",
           fast=("tests/test_not_event_streams.py::test_traces_out_of_time_order_or_given_twice_are_warned_of",)),

    Mutant("serving-414-one-byte-late", "engine/service/serving.py",
           "            line_too_long = b\"\\n\" not in reading.head[:self.max_head_bytes]",
           "            line_too_long = b\"\\n\" not in reading.head[:self.max_head_bytes + 1]",
           "a request line longer than the head's bound is answered 414, one within it 431",
           fast=("tests/test_lookup_server.py::test_idle_sockets_hold_no_thread_and_an_oversized_head_is_refused",)),

    # ---- the language
    Mutant("config-name-longest-one-more", "engine/language/config.py", "        if len(name) > t.longest:",
           "        if len(name) > t.longest + 1:", "a name has at most 128 characters (docs/configuration.md)",
           fast=("tests/test_config.py::test_a_name_has_at_most_128_characters",)),
    Mutant("config-dotted-key-17-parts-let-through", "engine/language/config.py",
           "            if parts > MAX_KEY_DEPTH:", "            if parts > MAX_KEY_DEPTH + 1:",
           "a dotted key of more than 16 parts is refused before tomllib reads it (its cost is quadratic)",
           fast=("tests/test_field_inputs.py::test_a_dotted_key_is_refused_one_part_past_16",)),
    Mutant("config-dots-in-comments-counted", "engine/language/config.py",
           "    (?P<skip>\\#[^\\n]*|[ \\t]+)", "    (?P<skip>[ \\t]+)",
           "the dots of a comment are no dotted key",
           fast=("tests/test_field_inputs.py::test_dots_in_comments_and_strings_are_no_dotted_key",)),
    Mutant("where-overflow-of-minus-one-times-min-missed", "engine/language/where.py",
           "            over = ((a != 0) & (r // np.where(a == 0, 1, a) != b)) | ((a == -1) & (b == _INT64_MIN)) \\",
           "            over = ((a != 0) & (r // np.where(a == 0, 1, a) != b)) \\",
           "a row whose product overflows int64 is computed in float64 (-1 * -2**63 included)",
           fast=("tests/test_where.py::test_an_overflow_in_one_row_leaves_the_others_exact",)),
    Mutant("where-overflow-of-subtraction-missed", "engine/language/where.py",
           "            over = ((a ^ b) & (a ^ r)) < 0", "            over = ((a ^ b) & (a ^ r)) > 0",
           "a row whose difference overflows int64 is computed in float64",
           fast=("tests/test_where.py::test_an_overflow_in_one_row_leaves_the_others_exact",)),
    Mutant("where-msisdn-an-attribute", "engine/language/where.py",
           '            if t.value == "msisdn":', '            if t.value == "msisdn" and False:',
           "msisdn is the profiles' key, not an attribute of where",
           fast=("tests/test_where.py::test_syntax_errors_name_the_position",)),

    # ---- the sinks
    Mutant("api-out-under-a-file-let-through", "engine/sinks.py",
           "    if os.path.lexists(probe) and not probe.is_dir():",
           "    if os.path.lexists(probe) and not probe.is_dir() and probe == out:",
           "an out under a file is refused before any event (its actions were lost after the run)",
           fast=("tests/test_api_details.py::test_an_out_that_is_a_file_or_under_one_is_refused_before_any_event",)),
    Mutant("api-one-engine-twice-at-once", "engine/sinks.py",
           "        if key in _WRITING:", "        if _WRITING.get(key, id(owner)) != id(owner):",
           "one replay at a time writes an out, one engine's two threads included",
           fast=("tests/test_api_details.py::test_two_engines_never_write_one_out_at_once",)),
    Mutant("checkpoint-missing-scalar-let-through", "engine/service/checkpoint.py",
           "        if key not in scalars and key not in _SCALARS_ADDED_LATER:",
           "        if key not in scalars and key not in _SCALARS_ADDED_LATER + (\"seq\",):",
           "a checkpoint missing a scalar every one holds is refused before anything is restored",
           fast=("tests/test_api_details.py::test_a_hand_edited_header_is_refused_and_the_engine_left_as_it_was",)),
    Mutant("replay-half-file-completed-after-sink-error", "engine/api.py",
           "                        if writer is not None and writer.error is not None:\n",
           "                        if False:\n",
           "§5 a file that fails half written is removed, never completed as if whole",
           fast=("tests/test_api.py::test_a_file_that_fails_half_written_is_removed_not_completed",)),
    Mutant("replay-open-files-kept-after-sink-error", "engine/api.py",
           "                            sinks.abort()\n                        elif sinks is not None:",
           "                            pass\n                        elif sinks is not None:",
           "§5 no half-written file is left behind when a file cannot be written",
           fast=("tests/test_api.py::test_a_sink_error_on_the_writing_thread_is_the_replays_error",)),
    Mutant("replay-stats-after-dropped-batches", "engine/api.py",
           "                            and not writer.dropped):", "                            ):",
           "§5 stats.json counts only actions the files hold: none after an interruption dropped the last batches",
           fast=("tests/test_api.py::test_an_interruption_that_drops_the_last_batches_writes_no_stats_json",)),
    Mutant("sinks-close-failed-file-kept", "engine/sinks.py",
           "                except BaseException as error:\n                    file.discard()\n",
           "                except BaseException as error:\n                    pass\n",
           "§5 a file that cannot be completed at the end of a run is not left half made",
           fast=("tests/test_sinks.py::test_a_file_that_cannot_be_completed_at_close_is_removed_and_the_others_completed",)),
    Mutant("sinks-later-files-kept-after-failed-close", "engine/sinks.py",
           "                for _, later in completed[k:]:\n                    later.discard()\n", "",
           "§5 no half-written file is left behind when a file cannot be completed",
           fast=("tests/test_api.py::test_a_file_too_large_ends_replay_in_one_line_naming_it_with_or_without_workers",)),
    Mutant("sinks-interrupt-hides-write-error", "engine/sinks.py",
           "                self._wait_out(None if ended else self._queue)\n                self._raise()\n                raise\n",
           "                self._wait_out(None if ended else self._queue)\n                raise\n",
           "§5 a file that cannot be written is said, also when a second Ctrl-C came while it was written",
           fast=("tests/test_sinks.py::test_a_batch_that_fails_while_finish_is_interrupted_is_the_error_raised",)),
    Mutant("workers-open-files-kept-after-sink-error", "engine/workers/__init__.py",
           "                if writer.error is not None:\n                    sinks.abort()   # as replay() does",
           "                if False:\n                    sinks.abort()   # as replay() does",
           "§5 no half-written file is left behind when a file cannot be written, with workers as without",
           fast=("tests/test_api.py::test_a_sink_error_with_workers_leaves_what_one_process_leaves",)),

    # ---- the bytes inside bad values
    Mutant("core-bad-bytes-one-a-value", "engine/_deadletters.pxi", "    E.bad_bytes += n\n", "    E.bad_bytes += 1\n",
           "§4 the stream's bytes inside bad values (a damaged header's one value of many events)",
           fast=("tests/test_dead_letters.py",)),
    Mutant("core-bad-bytes-not-restored", "engine/_persist.pxi", 'self.E.bad_bytes = scalars.get("bad_bytes", 0)',
           "self.E.bad_bytes = 0", "§4 a checkpoint carries the bytes inside bad values",
           fast=("tests/test_dead_letters.py",)),
    Mutant("core-bad-bytes-not-reloaded", "engine/_persist.pxi", "    self.E.bad_bytes = old.E.bad_bytes\n", "",
           "§4 a reload carries the bytes inside bad values", fast=("tests/test_dead_letters.py",)),
    Mutant("model-bad-bytes-one-a-value", MODEL, "self.bad_bytes += len(value)", "self.bad_bytes += 1",
           "§4 the stream's bytes inside bad values", fast=("tests/test_dead_letters.py",)),
    Mutant("core-largest-bad-value-last-of-its-size", "engine/_deadletters.pxi", "    if n > E.bad_largest:\n",
           "    if n >= E.bad_largest:\n", "§4 the stream's largest bad value is the first of its size",
           fast=("tests/test_dead_letters.py",)),
    Mutant("core-largest-bad-value-kept-by-a-new-stream", CORE,
           "            reset_spans(&self.E.run)\n            self.E.bad_largest = 0\n",
           "            reset_spans(&self.E.run)\n", "§4 a new stream from 0 has its own largest bad value",
           fast=("tests/test_dead_letters.py",)),
    Mutant("model-largest-bad-value-last-of-its-size", MODEL, 'len(value) > self.largest_bad_value["bytes"]',
           'len(value) >= self.largest_bad_value["bytes"]', "§4 the stream's largest bad value is the first of its size",
           fast=("tests/test_dead_letters.py",)),
    Mutant("records-a-bad-value-hides-events-from-more-than-four", "engine/records.py",
           "    if nbytes < HIDDEN_EVENTS_FACTOR * size:\n", "    if nbytes <= HIDDEN_EVENTS_FACTOR * size:\n",
           "§5 replay warns, and check says where, when a bad value holds four events' bytes or more",
           fast=("tests/test_newcomer_trial.py::test_a_bad_value_is_held_to_hide_events_from_four_events_bytes",
                 "tests/test_newcomer_trial.py::test_check_says_where_a_bad_value_of_many_events_lies_in_the_head")),
    Mutant("cli-no-warning-before-a-broken-stream", CLI,
           "        if stats is not None:\n", "        if False:\n", "§5 the bad value that hid events is said also when the stream then breaks",
           fast=("tests/test_newcomer_trial.py::test_a_broken_stream_is_said_after_the_warning_of_the_bad_value_before_it",)),
    Mutant("cli-write-error-behind-ctrl-c-hidden", CLI, "            if hidden is not None:\n",
           "            if False:\n", "§5 a file that cannot be written is said, also when Ctrl-C came on its way out",
           fast=("tests/test_newcomer_trial.py::test_ctrl_c_on_the_way_out_of_a_write_error_says_the_write_error",)),
    Mutant("cli-ctrl-c-in-a-generator-s-cleanup-printed", CLI,
           "            return\n        sys.__unraisablehook__(event)", "            pass\n        sys.__unraisablehook__(event)",
           "§5 one line, never a traceback: not one of Ctrl-C in a generator closed at exit",
           fast=("tests/test_newcomer_trial.py::test_ctrl_c_on_the_way_out_of_a_write_error_says_the_write_error",)),
    Mutant("api-broken-stream-counts-the-bytes-read", "engine/api.py",
           "        return offset, stopped_at(error.reason, offset, traces)\n",
           "        return int(core.next_offset), stopped_at(error.reason, offset, traces)\n",
           "§4 stats.json is as deterministic as the files: a broken run's bytes are those before the break",
           fast=("tests/test_api.py::test_a_broken_stream_s_stats_count_the_bytes_before_the_break",)),
    Mutant("api-interrupted-run-not-said", "engine/api.py",
           "    if broken_off is None:\n        return offset, None\n",
           "    if broken_off is None or isinstance(broken_off, KeyboardInterrupt):\n        return offset, None\n",
           "§4 a stats.json written after an interruption says where the run was stopped",
           fast=("tests/test_api.py::test_an_interrupted_run_s_stats_json_says_so",)),
    Mutant("report-partial-run-not-warned-of", "engine/closedloop/outputs.py",
           "    if not isinstance(stopped, dict):\n        return\n", "    if True:\n        return\n",
           "§4 a report of a run that stopped part-way says so",
           fast=("tests/test_report.py::test_a_run_that_stopped_part_way_is_warned_of",)),
    Mutant("sinks-first-interrupt-in-finish-drops", "engine/sinks.py",
           "                if not (interrupted or first is not None):\n", "                if False:\n",
           "§5 a single Ctrl-C or SIGTERM completes the files of every action made, also while they are written",
           fast=("tests/test_sinks.py::test_a_first_interruption_in_finish_lets_every_batch_be_written",)),
    Mutant("sinks-wait-out-broken-off", "engine/sinks.py",
           "                self._done.wait()\n                return\n            except BaseException:\n                continue\n",
           "                self._done.wait()\n                return\n            except BaseException:\n                raise\n",
           "§5 nothing writes a file beside its close, however often the wait is interrupted",
           fast=("tests/test_sinks.py::test_finish_waits_out_the_batch_being_written_through_more_interrupts",)),
    Mutant("sinks-end-marker-put-broken-off", "engine/sinks.py",
           "                queue = None\n            except BaseException:\n                continue\n",
           "                queue = None\n            except BaseException:\n                raise\n",
           "§5 nothing writes a file beside its close, however often the end marker's put is interrupted",
           fast=("tests/test_sinks.py::test_finish_ends_the_thread_through_interrupts_while_the_queue_is_full",)),
    Mutant("api-output-error-called-unreadable", "engine/api.py",
           "              else \"unreadable\" if isinstance(broken_off, LoadError)\n",
           "              else \"unreadable\" if isinstance(broken_off, (LoadError, OSError))\n",
           "§4 run.stopped names why: a trace that could not be read on, not an output file",
           fast=("tests/test_api.py::test_what_stopped_a_stream_is_named_by_its_kind",)),
    Mutant("api-out-of-memory-at-offset-0", "engine/api.py",
           "        return fed, stopped_at(\"out_of_memory\", fed, traces)\n",
           "        return 0, stopped_at(\"out_of_memory\", 0, traces)\n",
           "§4 a run out of memory says how far it was fed",
           fast=("tests/test_api.py::test_what_stopped_a_stream_is_named_by_its_kind",)),
    Mutant("api-interrupt-between-take-and-hand-over", "engine/api.py",
           "                with interrupts_held():\n                    records = take()\n",
           "                if True:\n                    records = take()\n",
           "§4 stats.json counts what the files hold, whenever Ctrl-C comes",
           fast=("tests/test_api.py::test_an_interrupt_while_records_are_counted_is_acted_on_once_they_are_handed_over",)),
    Mutant("workers-interrupt-between-merge-and-hand-over", "engine/workers/__init__.py",
           "        with interrupts_held():\n            actions, conversions = merge.merged()\n",
           "        if True:\n            actions, conversions = merge.merged()\n",
           "§5 an interrupted run with workers writes every action merged before it",
           fast=("tests/test_workers.py::test_an_interrupt_while_merged_records_are_counted_loses_none",)),
    Mutant("api-held-handler-from-outside-python", "engine/api.py",
           "            if signal.getsignal(number) is None:\n                continue",
           "            if False:\n                continue",
           "§5 never a traceback: a signal handler Python cannot put back is left alone",
           fast=("tests/test_api.py::test_a_handler_installed_outside_python_is_left_alone",)),
    Mutant("workers-interrupt-leaves-files-open", "engine/workers/__init__.py",
           "            if writer.error is None and writer.done:\n                sinks.close()\n",
           "            if False:\n                sinks.close()\n",
           "§5 an interrupted run with workers completes its files, as one process does",
           fast=("tests/test_workers.py::test_an_interrupted_run_completes_the_files_of_what_was_merged",
                 "tests/test_workers.py::test_an_interruption_after_the_stream_completes_the_files")),
    Mutant("workers-interrupt-loses-what-was-merged", "engine/workers/__init__.py",
           "            if interrupted:\n                # what every worker had passed is final",
           "            if False:\n                # what every worker had passed is final",
           "§5 an interrupted run with workers writes every action merged before it",
           fast=("tests/test_workers.py::test_an_interrupted_run_completes_the_files_of_what_was_merged",)),
    Mutant("api-unreadable-trace-without-stats", "engine/api.py",
           "                            broken_off.stats = run.stats\n", "                            pass\n",
           "§5 the bad value that hid events is said also when a trace then cannot be read on",
           fast=("tests/test_newcomer_trial.py::test_a_broken_stream_is_said_after_the_warning_of_the_bad_value_before_it",)),
    Mutant("workers-processed-counts-an-incomplete-event", "engine/workers/__init__.py",
           "            \"processed\": int(core.next_offset) - int(core.carried),\n",
           "            \"processed\": int(core.next_offset),\n",
           "§5 N workers write one process's stats.json: a trace cut part-way counts its whole events' bytes",
           fast=("tests/test_workers.py::test_a_trace_that_cannot_be_read_part_way",)),

    Mutant("daemon-stdin-cut-exit-0", "engine/service/daemon.py",
           "        if self.journal is not None and (self.journal.error or self.journal.cut):\n",
           "        if self.journal is not None and self.journal.error:\n",
           "§5 a non-zero exit on any error: standard input, the one source, ended inside an event",
           fast=("tests/test_daemon.py::test_stdin_that_ends_inside_an_event_leaves_it_out",)),
    Mutant("sharded-cores-carry-unseen", "engine/workers/inprocess.py",
           "        return self._cores[0].carried_head\n", "        return b\"\"\n",
           "§5 N workers judge a spool file read to its end inside an event as one process does",
           fast=("tests/test_daemon_hostile.py::test_a_fragment_between_files_never_costs_the_next_file",)),
    Mutant("daemon-cut-event-gone-bad-unsaid", "engine/service/daemon.py",
           "            cut = self._cut_events.pop(offset, None)\n", "            cut = None\n",
           "§5 a file cut short before another stream is named in a warning",
           fast=("tests/test_daemon_hostile.py::test_a_file_cut_short_before_another_stream_is_warned_of",)),
    Mutant("ray-keeps-its-sigterm", "engine/workers/cluster.py",
           "        signal.signal(signal.SIGTERM, on_sigterm)\n", "        pass\n",
           "§5 replay --ray stopped by SIGTERM completes its files and says so, as without Ray",
           fast=("tests/test_workers_ray.py::test_the_commands_sigterm_handler_is_put_back_after_ray_starts",)),
    Mutant("workers-second-interrupt-let-through", "engine/workers/__init__.py",
           "            saved[number] = signal.signal(number, signal.SIG_IGN)\n", "            pass\n",
           "§5 an interrupted run with workers completes its files, however often it is interrupted",
           fast=("tests/test_workers_break.py::test_a_second_interrupt_waits_for_the_files",)),

    # ---- the command
    Mutant("cli-error-exit-0", CLI, "def _fail(message: str, code: int = 1):", "def _fail(message: str, code: int = 0):",
           "§5 a non-zero exit on any error"),
]


@dataclass
class Result:
    name: str
    status: str             # killed | survived | stale | unviable | timeout | equivalent-survived | equivalent-killed
    stage: str = ""         # what killed it: "fast" (the FAST subset) or "suite"
    detail: str = ""        # the first failing test, or why it did not run
    seconds: float = field(default=0.0, compare=False)


def _run(cmd, cwd, env, timeout=None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _first_failure(output: str, returncode: int = 1) -> str:
    for line in output.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            return line[:200]
    if returncode < 0:      # killed by a signal: the mutant crashed the interpreter (a NULL pointer, say)
        return f"pytest died of signal {-returncode}"
    return output.strip().splitlines()[-1][:200] if output.strip() else ""


def ran_no_test(proc: subprocess.CompletedProcess) -> bool:
    """Whether a pytest run tried nothing: its usage error (exit 4: a test named that does not
    exist) or nothing collected (exit 5). A mutant never tried is not killed. A module that
    fails to import exits 4 as well, with an "ERROR tests/x.py" line, and a conftest.py that
    fails to import with "ImportError while loading conftest" on stderr: those are kills."""
    said = (proc.stdout + "\n" + proc.stderr).splitlines()
    return proc.returncode in (4, 5) and not any(
        line.startswith(("FAILED ", "ERROR ", "ImportError while loading conftest")) for line in said)


class Scratch:
    """A copy of the working tree with its own extension, where one mutant at a time lives."""

    def __init__(self, python: str, keep: bool):
        self.python = python
        self.keep = keep
        self.dir = Path(tempfile.mkdtemp(prefix="sigmatch-mutants-")) / "repo"
        shutil.copytree(ROOT, self.dir, ignore=IGNORED, symlinks=True)
        # The package is installed in editable mode pointing at the working tree; PYTHONPATH
        # puts the copy first, for pytest and for the commands the tests start.
        self.env = dict(os.environ, CI="true", PYTHONPATH=str(self.dir), PYTHONDONTWRITEBYTECODE="1")
        self.env.pop("HYPOTHESIS_PROFILE", None)

    def build(self) -> subprocess.CompletedProcess:
        return _run([self.python, "setup.py", "-q", "build_ext", "--inplace"], self.dir, self.env)

    def check_isolated(self) -> None:
        probe = _run([self.python, "-c", "import engine, engine._core as c; print(engine.__file__); print(c.__file__)"],
                     self.dir, self.env)
        paths = probe.stdout.split()
        if probe.returncode or not paths or not all(Path(p).is_relative_to(self.dir) for p in paths):
            raise SystemExit(f"the scratch copy imports the wrong engine: {probe.stdout}{probe.stderr}")

    def pytest(self, args, timeout) -> subprocess.CompletedProcess:
        return _run([self.python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *args], self.dir, self.env,
                    timeout=timeout)

    def remove(self) -> None:
        if not self.keep:
            shutil.rmtree(self.dir.parent, ignore_errors=True)


def source_of(m: Mutant, root: Path) -> str:
    """The file a mutant changes. A mutant of the core (path CORE) names the core as a whole:
    its text is looked for in every source of that one compilation unit, so that moving a
    function between _core.pyx and its .pxi parts leaves the mutant list as it is."""
    if m.path != CORE:
        return m.path
    holding = [name for name in sorted(CORE_SOURCES) if (root / name).read_text().count(m.old)]
    return holding[0] if len(holding) == 1 else m.path


def run_mutant(scratch: Scratch, m: Mutant, saved: dict, timeout: float, fast_only: bool) -> Result:
    started = time.monotonic()
    source = source_of(m, scratch.dir)
    path = scratch.dir / source
    original = path.read_text()
    if original.count(m.old) != 1:
        return Result(m.name, "stale", detail=f"{source}: the text occurs {original.count(m.old)} times, not once")
    try:
        path.write_text(original.replace(m.old, m.new, 1))
        if source in CORE_SOURCES:
            built = scratch.build()
            if built.returncode:
                return Result(m.name, "unviable", detail=_first_failure(built.stderr))
        status, stage, detail = "survived", "", ""
        try:
            stages = [("fast", list(m.fast) or FAST)] + ([] if fast_only else [("suite", [])])
            for stage_name, args in stages:
                proc = scratch.pytest(args, timeout)
                if ran_no_test(proc):
                    status, stage = "stale", stage_name
                    detail = f"ran no test: {_first_failure(proc.stdout + proc.stderr, 1)}"
                    break
                if proc.returncode:
                    status, stage, detail = "killed", stage_name, _first_failure(proc.stdout, proc.returncode)
                    break
        except subprocess.TimeoutExpired:
            status, detail = "timeout", f"over {timeout:.0f} s (counted as killed)"
        if m.equivalent:
            status = "equivalent-" + ("survived" if status == "survived" else "killed")
        return Result(m.name, status, stage, detail, round(time.monotonic() - started, 1))
    finally:
        path.write_text(original)
        for rel, data in saved.items():         # the unmutated extension back, without a rebuild
            (scratch.dir / rel).write_bytes(data)


def score(results: list[Result]) -> tuple[int, int]:
    """(killed, scored): timeouts count as killed; stale, unviable and equivalent are not scored."""
    killed = sum(r.status in ("killed", "timeout") for r in results)
    scored = killed + sum(r.status == "survived" for r in results)
    return killed, scored


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="comma-separated mutant names (default: all)")
    parser.add_argument("--list", action="store_true", help="print the mutants and exit")
    parser.add_argument("--fast-only", action="store_true", help="run only the fast subset per mutant (a survivor "
                        "there is reported survived without the whole suite)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per test run of one mutant")
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the scratch copy")
    args = parser.parse_args(argv)

    names = [n.strip() for n in args.only.split(",") if n.strip()]
    known = {m.name: m for m in MUTANTS}
    assert len(known) == len(MUTANTS), "mutant names are unique"
    unknown = [n for n in names if n not in known]
    if unknown:
        parser.error(f"unknown mutants: {', '.join(unknown)} (--list shows them)")
    chosen = [known[n] for n in names] if names else MUTANTS
    if args.list:
        # against the working tree: a mutant whose text is not there exactly once is stale
        stale = 0
        for m in chosen:
            source = source_of(m, ROOT)
            found = (ROOT / source).read_text().count(m.old)
            stale += found != 1
            mark = "" if found == 1 else f"  STALE: the text occurs {found} times"
            print(f"{m.name:45} {source:26} {m.rule}" + (f"  [equivalent: {m.equivalent}]" if m.equivalent else "")
                  + mark)
        return 1 if stale else 0

    scratch = Scratch(sys.executable, args.keep)
    try:
        print(f"scratch copy: {scratch.dir}", flush=True)
        built = scratch.build()
        if built.returncode:
            raise SystemExit(f"the unmutated core does not build:\n{built.stderr[-2000:]}")
        scratch.check_isolated()
        baseline = scratch.pytest(FAST, args.timeout)
        if baseline.returncode:
            raise SystemExit(f"the unmutated copy fails the fast subset: {_first_failure(baseline.stdout)}")
        saved = {str(p.relative_to(scratch.dir)): p.read_bytes()
                 for p in [*scratch.dir.glob("engine/_core*.so"), scratch.dir / "engine/_core.c"] if p.exists()}
        results = []
        for k, m in enumerate(chosen, 1):
            r = run_mutant(scratch, m, saved, args.timeout, args.fast_only)
            results.append(r)
            print(f"[{k}/{len(chosen)}] {r.status:20} {m.name:45} {r.stage:5} {r.detail}", flush=True)
    finally:
        scratch.remove()

    killed, scored = score(results)
    print(f"\nmutation score: {killed}/{scored} killed" + (f" ({100 * killed / scored:.0f}%)" if scored else ""))
    for r in results:
        if r.status in ("survived", "stale", "unviable", "equivalent-survived"):
            print(f"  {r.status}: {r.name} ({known[r.name].rule}) {r.detail}")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1) + "\n")
    return 0 if killed == scored and not any(r.status in ("stale", "unviable") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
