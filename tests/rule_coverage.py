"""How often each rule of SPEC §3 passed and failed over random worlds: the measure of whether
the core-vs-model comparison (tests/test_equivalence.py) ever reaches a rule at all.

The reference model is run with its decisions recorded (CountingModel): for each matching
condition, recheck and policy rule that is configured and reached, whether it let the
action through or stopped it; also the timer, counter-window, conversion-window, pending
bound and holdout outcomes. A rule counts only where it can decide: a campaign without
`hours` does not pass "hours", a subscriber never contacted does not pass "min_gap".

    python -m tests.rule_coverage [N]       # the table over N worlds (default 300)

tests/test_equivalence.py fails when a rule is never exercised both ways.
"""
from __future__ import annotations

import heapq
import sys
import zlib
from collections import Counter

from hypothesis import HealthCheck, Phase, given, settings

from engine.language.config import ALL_DAYS
from engine.model import ReferenceModel, _in_window

# Decisions, in SPEC §3 order. Each is counted (name, True) when it let the action through and
# (name, False) when it stopped it (for the timer and window entries: the edge case happened
# or the ordinary one did).
MATCH_RULES = ("enabled", "dates", "flags", "arg", "audience", "blacklist", "where", "peer_in", "area", "enter", "hours", "days", "at_least",
               "when", "after", "not_after", "anniversary", "stop_after", "once", "cooldown", "pending")
LIFE = ("life_enabled", "life_dates")      # step 7, first of all: still enabled, t within start/end
RECHECKS = ("recheck_area", "recheck_audience", "recheck_hours", "recheck_powered_on", "absent")
POLICY = ("policy_blacklist", "policy_quiet_hours", "policy_min_gap", "policy_max_per_day", "policy_max_in_window",
          "policy_cooldown")
BUDGETS = ("budget_campaign_daily", "budget_campaign_total", "budget_channel_daily")
OTHER = ("timer_due_at_event",      # True: a timer fired at exactly an event's ts; False: before it
         "timers_due_together",     # True: a timer fired at the same due time as the one before it
         "window_reset",            # True: a non-zero windowed counter reset (ts >= start + window)
         "period_reset",            # True: a non-zero counter of a period reset (e.ts in another period)
         "convert_within",          # True: a conversion inside the window; False: a response too late
         "max_pending",             # True: scheduled under a bound that overflowed somewhere; False: overflow
         "holdout",                 # True: a send, False: a control, of a campaign with 0 < holdout < 1
         "global_holdout",          # True: not a global control, False: one, under 0 < global_holdout < 1
         "variant")                 # True: the first variant, False: a later one, of a campaign with 2+ variants
RULES = MATCH_RULES + LIFE + RECHECKS + POLICY + BUDGETS + OTHER

# What no world without a reload can reject: the audience, the blacklist and the campaign's
# cooldown are checked when the action matches, and nothing changes them before it is due.
# tests/test_boundaries.py reaches them through a reload on the core.
# Nor can a campaign be disabled between its match and its emission.
ONLY_BY_RELOAD = {("recheck_audience", False), ("policy_blacklist", False), ("policy_cooldown", False),
                  ("life_enabled", False)}


class CountingModel(ReferenceModel):
    """The reference model, recording each decision in `counts` (a Counter of (rule, passed)).
    The recorded matching verdict is checked against the model's own, so the record cannot
    drift from what the model decides."""

    def __init__(self, *args, counts: Counter, **kw):
        super().__init__(*args, **kw)
        self.counts = counts
        self._last_due = None

    # step 1, fired here first (as the model would) to see the edge; then the event as usual
    def _event(self, e) -> None:
        ts = max(e.ts, self.clock)
        while self._timers and self._timers[0][0] <= ts:
            self.counts["timer_due_at_event", self._timers[0][0] == ts] += 1
            self._fire(heapq.heappop(self._timers))
        i = self.subscriber.get(e.msisdn)
        if i is not None:
            self._count_windows(i, e, ts)
            self._count_conversions(i, e, ts)
        super()._event(e)

    def _fire(self, timer) -> None:
        self.counts["timers_due_together", timer[0] == self._last_due] += 1
        self._last_due = timer[0]
        super()._fire(timer)

    def _count_windows(self, i, e, ts) -> None:
        for k in self.config.counters:
            if e.type not in k.on or (e.flags & k.flags) != k.flags or (k.arg is not None and e.arg != k.arg):
                continue
            value, start = self._counter.get((i, k.name), (0, 0))
            if value and k.window_ms is not None:
                self.counts["window_reset", ts >= start + k.window_ms] += 1
            if value and k.period is not None:
                self.counts["period_reset", self._period(k.period, ts) != self._period(k.period, start)] += 1

    def _count_conversions(self, i, e, ts) -> None:
        for c in self.campaigns:
            if c.convert_within_ms is None or e.type not in c.convert_on:
                continue
            if c.convert_arg is not None and c.convert_arg != e.arg:
                continue
            contact = self._contact.get((i, c.id))
            if contact is not None and not contact.converted:
                self.counts["convert_within", ts - contact.ts < c.convert_within_ms] += 1

    def _match_decisions(self, c, i, e, ts, previous_cell):
        """(rule, passed) in the model's order, up to the first that fails."""
        msisdn, contact = e.msisdn, self._contact.get((i, c.id))
        weekday = (self._day(ts) + 3) % 7
        checks = [
            ("enabled", True, lambda: c.enabled),
            ("dates", c.start is not None or c.end is not None, lambda: self._live_on(c, ts)),
            ("flags", c.flags != 0, lambda: (e.flags & c.flags) == c.flags),
            ("arg", c.arg is not None, lambda: e.arg == c.arg),
            ("audience", c.audience is not None or bool(c.exclude), lambda: self._in_audience(c, msisdn)),
            ("blacklist", bool(self.config.policy.blacklist),
             lambda: not any(msisdn in self.lists[n] for n in self.config.policy.blacklist)),
            ("where", c.id in self.where, lambda: bool(self.where[c.id][i])),
            ("peer_in", c.peer_in is not None, lambda: e.peer != 0 and e.peer in self.lists[c.peer_in]),
            ("area", c.area is not None, lambda: self._in_area(e.cell, c.area)),
            ("enter", c.area is not None and c.enter, lambda: not self._in_area(previous_cell, c.area)),
            ("hours", c.hours is not None, lambda: _in_window(self._minute(ts), c.hours)),
            ("days", c.days != ALL_DAYS, lambda: bool(c.days >> weekday & 1)),
            ("at_least", c.counter is not None and c.at_least > 0,
             lambda: self._counter_value(i, c.counter, ts) >= c.at_least),
            ("when", c.when is not None, lambda: self._when(c, i, ts)),
            ("after", bool(c.after), lambda: all(
                (i, k.marker) in self._marker and ts - self._marker[(i, k.marker)] < k.within_ms for k in c.after)),
            ("not_after", bool(c.not_after), lambda: all(
                (i, k.marker) not in self._marker or ts - self._marker[(i, k.marker)] >= k.within_ms
                for k in c.not_after)),
            ("anniversary", c.anniversary is not None, lambda: self._anniversary(c, i, ts)),
            ("stop_after", c.stop_after is not None, lambda: self._streak.get((i, c.id), 0) < c.stop_after),
            ("once", c.once, lambda: contact is None),
            ("cooldown", c.cooldown_ms > 0 and contact is not None, lambda: ts >= contact.ts + c.cooldown_ms),
            ("pending", c.delay_ms > 0, lambda: (i, c.id) not in self._pending),
        ]
        decided = []
        for rule, active, passes in checks:
            if active:
                decided.append((rule, passes()))
                if not decided[-1][1]:
                    break
        return decided

    def _matches(self, c, i, e, ts, previous_cell) -> bool:
        verdict = super()._matches(c, i, e, ts, previous_cell)
        decided = self._match_decisions(c, i, e, ts, previous_cell)
        assert all(ok for _, ok in decided) == verdict, (c.id, decided, verdict)
        self.counts.update(decided)
        if verdict and c.delay_ms and self.config.max_pending < 10_000_000:
            self.counts["max_pending", len(self._pending) < self.config.max_pending] += 1
        return verdict


    def _recheck(self, rule, c, i, t) -> bool:
        ok = super()._recheck(rule, c, i, t)
        if rule != "hours" or c.hours is not None or c.days != ALL_DAYS:    # else it cannot fail
            self.counts["recheck_" + rule, ok] += 1
        return ok

    def _marked_since(self, c, i, trigger_ts) -> bool:
        marked = super()._marked_since(c, i, trigger_ts)
        if c.absent:
            self.counts["absent", not marked] += 1
        return marked

    def _policy(self, c, i, t):
        reason = super()._policy(c, i, t)
        policy, contact = self.config.policy, self._contact.get((i, c.id))
        active = {
            "blacklist": bool(policy.blacklist),
            "quiet_hours": policy.quiet_hours is not None and "quiet_hours" not in c.exempt,
            "min_gap": policy.min_gap_ms > 0 and "min_gap" not in c.exempt and i in self._last_contact,
            "max_per_day": policy.max_per_day is not None and "max_per_day" not in c.exempt,
            "max_in_window": (policy.max_in_window is not None and "max_in_window" not in c.exempt
                              and i in self._contact_times),
            "cooldown": c.cooldown_ms > 0 and contact is not None,
        }
        for rule in ("blacklist", "quiet_hours", "min_gap", "max_per_day", "max_in_window", "cooldown"):
            if reason == "suppressed_" + rule:
                assert active[rule], (rule, c.id)
                self.counts["policy_" + rule, False] += 1
                break
            if active[rule]:
                self.counts["policy_" + rule, True] += 1
        return reason

    def _emit(self, c, i, t, trigger_ts, cell, *, delayed) -> None:
        self.counts["life_enabled", c.enabled] += 1
        if c.enabled and (c.start is not None or c.end is not None):
            self.counts["life_dates", self._live_on(c, t)] += 1
        # the holdouts decide among contacts that pass every rule: counted on the action made
        before = len(self.actions)
        super()._emit(c, i, t, trigger_ts, cell, delayed=delayed)
        if len(self.actions) == before:
            return
        kind = self.actions[-1][6]
        if len(c.variants) > 1:
            # the model's pick, checked against the running sums computed here
            x = zlib.crc32(f"{self.msisdns[i]}:{c.id}:variant".encode()) % sum(v.weight for v in c.variants)
            first = x < c.variants[0].weight
            assert (self.actions[-1][5] == c.variants[0].template) == first, (c.id, x)
            self.counts["variant", first] += 1
        if 0 < self.config.policy.global_holdout_threshold < 10_000:
            self.counts["global_holdout", kind != "global_control"] += 1
        if kind != "global_control" and 0 < c.holdout_threshold < 10_000:
            assert (kind == "control") == self._is_control(c, i)
            self.counts["holdout", kind == "send"] += 1

    def _budget(self, c, t):
        reason = super()._budget(c, t)
        day = self._day(t)
        channel = self.config.channel_budgets.get(c.channel)
        checks = (
            ("budget_campaign_daily", c.daily_budget is not None,
             lambda: self._sends_on_day.get((c.id, day), 0) < c.daily_budget),
            ("budget_campaign_total", c.total_budget is not None, lambda: self._sends.get(c.id, 0) < c.total_budget),
            ("budget_channel_daily", channel is not None,
             lambda: self._channel_sends_on_day.get((c.channel, day), 0) < channel),
        )
        passed = True
        for rule, active, passes in checks:
            if active:
                passed = passes()
                self.counts[rule, passed] += 1
                if not passed:
                    break
        assert passed == (reason is None), (c.id, reason)
        return reason

    def _is_control(self, c, i) -> bool:
        return zlib.crc32(f"{self.msisdns[i]}:{c.id}".encode()) % 10000 < c.holdout_threshold


def measure(world, counts: Counter) -> CountingModel:
    """Run one world (tests.worlds.RandomWorld) through the counting model, drained."""
    model = CountingModel(world.config, world.profiles, world.lists, world.areas, counts=counts)
    model.feed(world.trace)
    model.finish()
    model.drain()
    return model


def coverage(n: int, strategy=None) -> tuple[Counter, dict]:
    """(counts of (rule, passed), figures) over n worlds drawn deterministically (derandomized
    hypothesis, so the same n gives the same worlds on every run)."""
    if strategy is None:
        from tests.worlds import worlds
        strategy = worlds()
    counts: Counter = Counter()
    figures = {"worlds": 0, "with_actions": 0, "actions": 0}

    @settings(max_examples=n, database=None, derandomize=True, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def one(world):
        model = measure(world, counts)
        figures["worlds"] += 1
        figures["with_actions"] += bool(model.actions)
        figures["actions"] += len(model.actions)

    one()
    return counts, figures


def missing(counts: Counter) -> list[tuple[str, bool]]:
    """The (rule, passed) pairs never seen, less those only a reload can reach."""
    return [(rule, ok) for rule in RULES for ok in (True, False)
            if not counts[rule, ok] and (rule, ok) not in ONLY_BY_RELOAD]


def report(counts: Counter, figures: dict) -> str:
    lines = [f"{figures['worlds']} worlds, {figures['with_actions']} with actions "
             f"({100 * figures['with_actions'] / max(1, figures['worlds']):.0f}%), {figures['actions']} actions",
             f"{'rule':22} {'passed':>8} {'failed':>8}"]
    for rule in RULES:
        note = ""
        if not counts[rule, True] or not counts[rule, False]:
            note = "  (failing only by a reload)" if (rule, False) in ONLY_BY_RELOAD else "  <- never both ways"
        lines.append(f"{rule:22} {counts[rule, True]:8} {counts[rule, False]:8}{note}")
    return "\n".join(lines)


if __name__ == "__main__":
    counts, figures = coverage(int(sys.argv[1]) if len(sys.argv) > 1 else 300)
    print(report(counts, figures))
