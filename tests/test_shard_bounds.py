"""The bound a sharded worker decides a budgeted send on without waiting (engine/_shard.pxi,
shard_budgets), held one unit either side of each budget.

Every other worker not yet past this event (its progress p <= q, the event's position) may
still send before it: each of its timers pending for the campaign at most once (only those
due by this clock, within its horizon), and at each of its own events it has yet to process
(counted by class of event type from the last count at or before p - 1, up to q - 1, plus
one event's worth), one send of the campaign when the event's type is one it triggers on,
or one of every campaign of the channel that triggers on it for the channel's budget. So
the send is certain while

    every lane's count + pending timers + its events (weighed by the campaigns they may trigger) < budget

and waits for the others otherwise, until every other is past it or the bound, asked again
as they move, decides it. Too small a slack lets two workers together overspend a budget
that one process would have kept; too large a one only makes a worker wait. Each test here
feeds one decision to shard 0 of 2 in this process, with lane 1 (the other worker) written
by hand through shard_import, and tells a certain send from a wait by the core's counters:
a wait never ends until the test moves or finishes lane 1, so a feed that returns by itself
did not wait.

Events are numbered from 1: the n-th event of a stream is at position n (E.cur_pos, which
the timers firing at an event share), as core.counts()["events"] counts them.
"""
from __future__ import annotations

import struct
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

from engine._core import shard_block_size, shard_counts_size, shards_of
from engine.api import Engine
from engine.language.compile import World
from engine.language.config import EVENT_TYPES, CampaignSpec, Config, PolicySpec
from engine.workers import RING_BITS, _nr_budgets, _shared_block
from loaders.profiles import Profiles
from tests.backends import CALL, DAY, HOUR, LOC, MINUTE, POWER_ON, SMS, T0, ev

# Two subscribers of worker 0 and one of worker 1, whose events only move worker 0's clock
_NUMBERS = np.arange(13_800_000_001, 13_800_000_101, dtype=np.uint64)
_SHARD = shards_of(_NUMBERS, 2)
S1, S2, S3 = (int(m) for m in _NUMBERS[_SHARD == 0][:3])
FOREIGN = int(_NUMBERS[_SHARD == 1][0])

FINISHED = (2**64 - 1, 2**63 - 1, 0)    # the key of a worker that has done all its work (Core.shard_done)
BUDGET = 10
# Only a safety net, so that a test that would wait forever fails instead of hanging: no
# outcome is ever read from the time a feed takes.
SAFETY_S = 60.0
# How long a wait is given to see that lane 1's move decides it (it asks every few rounds of
# microseconds): a wait still running after it is taken for one the move did not end. Only
# a wait's outcome is read from it, never a speed.
MOVED_S = 5.0

CERTAIN, WAITS = "decided without waiting", "waited for the other worker"
DECIDED = "waited until the other worker's counts decided it"


@dataclass
class Lane:
    """What lane 1 says of the other worker: at event `pos` (before its timers there), with
    `pending` timers of the campaign and `chan_pending` of the channel's campaigns, and
    `sends` today and `total` ever of the campaign, `chan_sends` today on the channel."""
    pos: int
    pending: int = 0
    chan_pending: int = 0
    sends: int = 0
    total: int = 0
    chan_sends: int = 0


class Worker:
    """Shard 0 of 2 over a shared block, fed event by event, with lane 1 written by the test."""

    def __init__(self, campaigns, channel_budgets=None, workers: int = 2, max_pending: int | None = None):
        """With `workers` other than 2, this worker's subscribers are self.s1, self.s2 and
        self.s3, the other's self.foreign (S1, S2, S3 and FOREIGN with 2), and every lane past 1
        is finished."""
        self.s1, self.s2, self.s3, self.foreign = S1, S2, S3, FOREIGN
        if workers != 2:
            numbers = np.arange(13_800_000_001, 13_800_100_001, dtype=np.uint64)
            shard = shards_of(numbers, workers)
            self.s1, self.s2, self.s3 = (int(m) for m in numbers[shard == 0][:3])
            self.foreign = int(numbers[shard == 1][0])
        ordered = tuple(sorted(campaigns, key=lambda c: (-c.priority, c.id)))     # as a loaded file orders them
        self.config = Config(path=Path("test.toml"), utc_offset_ms=0, policy=PolicySpec(), counters=(), markers=(),
                             channel_budgets=dict(channel_budgets or {}), campaigns=ordered,
                             event_types=dict(EVENT_TYPES))
        if max_pending is not None:
            self.config = replace(self.config, max_pending=max_pending)
        profiles = Profiles(Path("profiles.csv"), np.array([self.s1, self.s2, self.s3, self.foreign],
                                                           dtype=np.uint64), {}, None, 0)
        self.engine = Engine(self.config, World(profiles), shard=(0, workers))
        self.core = self.engine._core
        self.nb = _nr_budgets(self.config)
        self.ids = [c.id for c in self.config.campaigns]
        self.block = _shared_block(shard_block_size(workers, self.nb, RING_BITS))
        self.core.attach_shard(self.block, 0, workers, RING_BITS, sum(1 for c in campaigns if c.delay_ms))
        self.day = None         # the local day as the core numbers it: set from the first send
        self.finish_lane(Lane(0))
        for lane in range(2, workers):
            self.core.shard_import(lane, FINISHED, 0, 0, bytes(shard_counts_size(self.nb)), 0, np.zeros(0, np.uint64))
        self.core.begin_stream()

    def feed(self, *events: bytes) -> None:
        """Events lane 1 never holds back: the other worker is finished while they run."""
        assert self.core.feed(b"".join(events)) == 0

    @property
    def events(self) -> int:
        return int(self.core.counts()["events"])

    def own_counts(self, campaign: str) -> tuple[int, int, int]:
        """(local day, sends that day, sends ever) of `campaign` in this worker's own lane."""
        counts = self.core.shard_export(0)[3]
        return struct.unpack_from("<qQQ", counts, 8 * self.nb + 24 * self.ids.index(campaign))

    def counts(self, campaign: str, lane: Lane) -> bytes:
        """shard_import's bytes: the pending timers by budget, then the budgets' counts (a
        campaign's at its index, a channel's after every campaign's), all of `self.day`."""
        ci, ch = self.ids.index(campaign), len(self.ids) + self.config.channels.index(
            self.config.campaigns[self.ids.index(campaign)].channel)
        pending, budgets = [0] * self.nb, [(0, 0, 0)] * self.nb
        pending[ci], pending[ch] = lane.pending, lane.chan_pending
        budgets[ci] = (self.day, lane.sends, lane.total)
        budgets[ch] = (self.day, lane.chan_sends, lane.chan_sends)
        return struct.pack(f"<{self.nb}Q", *pending) + b"".join(struct.pack("<qQQ", *b) for b in budgets)

    def set_lane(self, campaign: str, lane: Lane, key) -> None:
        # every timer of the other worker's is one of the channel's: its total and high-water mark
        empty = np.zeros(0, np.uint64)
        self.core.shard_import(1, key, lane.chan_pending, lane.chan_pending, self.counts(campaign, lane), 0, empty)

    def finish_lane(self, lane: Lane, campaign: str | None = None) -> None:
        """Lane 1 past every key, keeping the sends `lane` counted: a wait then recounts below
        the budget, so the send it decided is still made."""
        if campaign is None:
            self.core.shard_import(1, FINISHED, 0, 0, bytes(shard_counts_size(self.nb)), 0, np.zeros(0, np.uint64))
        else:
            self.set_lane(campaign, Lane(FINISHED[0], sends=lane.sends, total=lane.total,
                                         chan_sends=lane.chan_sends), FINISHED)

    def decide(self, campaign: str, lane: Lane, event: bytes, then: Lane | None = None, sends: bool = True) -> str:
        """Feed `event`, whose processing decides one send of `campaign`, with lane 1 as `lane`
        says: CERTAIN or WAITS. A wait is let go by finishing lane 1, and must then send.
        With `then`, a wait first sees lane 1 move to `then` (still before this key): DECIDED
        when that alone ends it, the send decided on the counts. `sends`: whether the send is
        made (else refused, lane 1 having spent the budget)."""
        self.set_lane(campaign, lane, (lane.pos, 0, 0))
        waits, waited, certain, decided = self.core.shard_waits
        before = self.own_counts(campaign)[2]     # sends ever: the send may open a new day
        status = []
        # core.feed releases the GIL: this thread watches the counters while it runs
        thread = threading.Thread(target=lambda: status.append(self.core.feed(event)), daemon=True)
        thread.start()
        outcome = ended_or_waits(self.core, thread, waits)
        if outcome == WAITS and then is not None:
            self.set_lane(campaign, then, (then.pos, 0, 0))
            thread.join(MOVED_S)
            if not thread.is_alive():
                outcome = DECIDED
        if thread.is_alive():
            self.finish_lane(then or lane, campaign)
            thread.join(SAFETY_S)
            if thread.is_alive():
                self.core.shard_abort()
                thread.join(SAFETY_S)
                pytest.fail("the wait did not end when the other worker finished")
        assert status == [0]
        moved = tuple(b - a for a, b in zip((waits, waited, certain, decided), self.core.shard_waits))
        # a wait let go by finishing lane 1 may end either way: the lane's key, or its
        # position past this key, which takes it out of the bound, may be seen first
        assert moved in {CERTAIN: [(0, 0, 1, 0)], WAITS: [(1, 1, 0, 0), (1, 1, 0, 1)],
                         DECIDED: [(1, 1, 0, 1)]}[outcome], \
            f"{outcome}, but shard_waits moved by {moved}: the event did not make exactly one budgeted decision"
        if sends:
            assert self.own_counts(campaign)[2] == before + 1, "the send was refused: the case tests no bound"
        else:
            assert self.own_counts(campaign)[2] == before, "the send was made past a budget spent"
        return outcome


def certain_or_waits(total: int, budget: int = BUDGET) -> str:
    return CERTAIN if total < budget else WAITS


# ---- (a) the pending timers of the campaign ---------------------------------------------

@pytest.mark.parametrize("budget", ["daily_budget", "total_budget"])
@pytest.mark.parametrize("pending", [4, 5])
def test_a_campaigns_budget_bounds_the_others_pending_timers(budget, pending):
    """Each timer another worker holds for the campaign can still send into its budgets
    before this one: with lane 1 at this very event (1 event to come: fewer than its events
    since the count after event 0, 1 + 1, which is then not taken) and 1 + 3 sends counted,
    4 pending timers make 1 + 3 + 4 + 1 = 9 < 10 (certain), 5 make 10 (wait). The campaign
    has a delay, as it must to leave timers pending, so the send decided is a timer's, at the
    position of the event it fires at."""
    later = CampaignSpec(id="later", on=(SMS,), channel="sms", delay_ms=MINUTE, **{budget: BUDGET})
    w = Worker([later])
    # this worker's first send of the day always waits: lane 1 is finished, so it returns
    w.feed(ev(T0 + HOUR, SMS, msisdn=S1), ev(T0 + HOUR + 2 * MINUTE, LOC, msisdn=FOREIGN))
    w.day, sends, _ = w.own_counts("later")
    assert sends == 1
    w.feed(ev(T0 + 2 * HOUR, SMS, msisdn=S2))
    q = w.events + 1                    # the timer fires at the next event
    lane = Lane(q, pending=pending, chan_pending=pending, sends=3, total=3)
    bound = 1 + 3 + pending + 1
    assert w.decide("later", lane, ev(T0 + 2 * HOUR + 2 * MINUTE, LOC, msisdn=FOREIGN)) \
        == certain_or_waits(bound), f"counts and slack {bound}, against a {budget} of {BUDGET}"


# ---- (b) the other worker's events it has yet to process --------------------------------

def events_to(w: Worker, foreign, own: int, split: bool = False) -> int:
    """After the first send (event 1): `foreign` events of the other worker's subscriber (a
    number of calls, or the types in turn) and `own` of this worker's (S1 moving),
    interleaved; returns the next event's position. With `split`, each of the other's
    events is fed in two pieces, as a chunk's end cuts one."""
    kinds = [CALL] * foreign if isinstance(foreign, int) else list(foreign)
    t = T0 + HOUR
    for k in range(max(len(kinds), own)):
        if k < len(kinds):
            t += MINUTE
            event = ev(t, kinds[k], msisdn=FOREIGN)
            if split:
                w.feed(event[:len(event) // 2])
                w.feed(event[len(event) // 2:])
            else:
                w.feed(event)
        if k < own:
            t += MINUTE
            w.feed(ev(t, LOC, msisdn=S1))
    return w.events + 1


@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize("foreign", [4, 5])
def test_a_campaigns_budget_bounds_one_send_per_event_of_the_others_yet_to_process(foreign, split):
    """A worker at event p may send the campaign once at each of its own events it has yet
    to process before this key: every worker counts the events of each other's subscribers
    (every 256th event it keeps the counts), and takes those from the last count at or before
    p - 1 up to q - 1, plus one. Lane 1 at event 1, with 1 + 3 sends counted: 4 of its events
    give 1 + 3 + 4 + 1 = 9 < 10 (certain), 5 give 10 (wait). This worker's own 2 events in
    between never count: with them, 4 would wait too. The other's events count also when a
    chunk's end cuts them (`split`), where they are looked up apart from the batch."""
    now = CampaignSpec(id="now", on=(CALL,), channel="sms", daily_budget=BUDGET)
    w = Worker([now])
    w.feed(ev(T0 + HOUR, CALL, msisdn=S1))
    w.day, sends, _ = w.own_counts("now")
    assert sends == 1
    q = events_to(w, foreign, 2, split)
    assert q == 2 + foreign + 2
    bound = 1 + 3 + foreign + 1
    assert w.decide("now", Lane(1, sends=3, total=3), ev(T0 + 3 * HOUR, CALL, msisdn=S2)) \
        == certain_or_waits(bound), f"counts and slack {bound}, against a daily_budget of {BUDGET}"


@pytest.mark.parametrize("lane_pos, budget, expected", [(257, 51, CERTAIN), (256, 51, WAITS), (2, 52, WAITS)])
def test_the_others_events_are_counted_from_the_last_count_before_its_position(lane_pos, budget, expected):
    """The counts are kept after every 256th event: a worker at event p has processed up to
    p - 1, so the count after event 256 covers p = 257 (the events from 257 on are the
    other's to come) but not p = 256, which is taken from the count after event 0. 300 of
    the other's events at positions 2-301, the decision at 302: from position 257, 300 - 255
    + 1 = 46, and 1 + 3 + 46 = 50 < 51 (certain); from 256, 301 more (wait). From position 2
    every one of the 300 counts: were the count after event 255 taken for the one after 0,
    1 + 3 + 47 = 51 < 52 would send."""
    now = CampaignSpec(id="now", on=(CALL,), channel="sms", daily_budget=budget)
    w = Worker([now])
    w.feed(ev(T0 + HOUR, CALL, msisdn=S1))
    w.day, _, _ = w.own_counts("now")
    w.feed(*(ev(T0 + HOUR + k * 1000, CALL, msisdn=FOREIGN) for k in range(1, 301)))
    assert w.events + 1 == 302
    assert w.decide("now", Lane(lane_pos, sends=3, total=3), ev(T0 + 2 * HOUR, CALL, msisdn=S2)) \
        == expected, f"lane 1 at event {lane_pos}"


# ---- (c) the channel's budget, over two campaigns ----------------------------------------

@pytest.mark.parametrize("calls, texts, chan_pending, chan_sends, close", [
    (1, 1, 0, 1, False),    # 1 + 1 + 0 + (1 * 1 + 1 * 2 + 3) = 8, certain
    (1, 2, 0, 1, False),    # a text more weighs 2 campaigns: 10, wait
    (2, 1, 0, 1, False),    # a call more weighs 1: 9, certain
    (3, 1, 0, 1, False),    # 10, wait
    (1, 1, 1, 1, False),    # a pending timer of the channel's: 9, certain
    (1, 1, 2, 1, False),    # 10, wait
    (1, 1, 1, 2, False),    # one more send on the channel: 10, wait
    (1, 1, 0, 5, True),     # lane 1 at this event: 1 event * 3 campaigns, fewer than 1 * 1 + 1 * 2 + 3: 9
    (1, 1, 0, 6, True),     # 10, wait
])
def test_a_channels_budget_bounds_a_send_per_campaign_of_the_channel_triggered_per_event(calls, texts, chan_pending,
                                                                                           chan_sends, close):
    """At each of the other worker's events still to process, every campaign of the channel
    that triggers on the event's type may send once into its budget, and every pending
    timer of any of them once more: the slack is pending + the campaigns of the channel
    each of its events may trigger + one event's worth of every campaign of the channel.
    The channel holds three campaigns: `now` on calls, which decides, and `later` and
    `also` on texts, delayed, never triggered here (the texts are the other worker's), so a
    call weighs 1 and a text 2. The other worker's 2 location updates, which no campaign
    triggers on, never count. 1 send of this worker's is counted, lane 1 is at event 1, or
    (`close`) at this very event, where at most one event's worth can come. A count of
    events rather than of sends per campaign, or pending timers left out, would let this
    worker send where the other could reach the budget first."""
    now = CampaignSpec(id="now", on=(CALL,), channel="sms")
    later = CampaignSpec(id="later", on=(SMS,), channel="sms", delay_ms=MINUTE)
    also = CampaignSpec(id="also", on=(SMS,), channel="sms", delay_ms=MINUTE)
    w = Worker([now, later, also], channel_budgets={"sms": BUDGET})
    w.feed(ev(T0 + HOUR, CALL, msisdn=S1))
    w.day, sends, _ = w.own_counts("now")
    assert sends == 1
    q = events_to(w, [CALL] * calls + [SMS] * texts + [LOC] * 2, 1)
    bound = 1 + chan_sends + chan_pending + (3 if close else calls + 2 * texts + 3)
    lane = Lane(q if close else 1, chan_pending=chan_pending, chan_sends=chan_sends)
    assert w.decide("now", lane, ev(T0 + 3 * HOUR, CALL, msisdn=S2)) \
        == certain_or_waits(bound), f"counts and slack {bound}, against the channel's budget of {BUDGET}"


@pytest.mark.parametrize("budgeted_elsewhere", [False, True])
@pytest.mark.parametrize("calls, others, expected", [(4, 1, CERTAIN), (5, 0, WAITS)])
def test_the_others_events_of_a_type_the_campaign_does_not_trigger_on_never_count(calls, others, expected,
                                                                                  budgeted_elsewhere):
    """Only events of a type the campaign triggers on can spend its budget: every worker
    counts the other workers' events by class of type. With lane 1 at event 1 and 1 + 3
    sends counted, 4 calls and a power-on make 1 + 3 + 4 + 1 = 9 (certain), 5 calls 10
    (wait). The power-on is not counted whether another budgeted campaign triggers on it
    (a class of its own, not the campaign's) or none does (no class at all)."""
    now = CampaignSpec(id="now", on=(CALL,), channel="sms", daily_budget=BUDGET)
    campaigns = [now]
    if budgeted_elsewhere:
        campaigns.append(CampaignSpec(id="elsewhere", on=(POWER_ON,), channel="mms", daily_budget=BUDGET))
    w = Worker(campaigns)
    w.feed(ev(T0 + HOUR, CALL, msisdn=S1))
    w.day, sends, _ = w.own_counts("now")
    assert sends == 1
    events_to(w, [CALL] * calls + [POWER_ON] * others, 2)
    assert w.decide("now", Lane(1, sends=3, total=3), ev(T0 + 3 * HOUR, CALL, msisdn=S2)) == expected, \
        f"{calls} calls and {others} power-ons of the other worker's to come"


# ---- (d) only the timers due by this clock, within the other's horizon -------------------

SOON_MS = MINUTE        # engine/_shard.pxi SHARD_SOON_MS: how far past its clock a worker counts


def lane_words(w: Worker, lane: int) -> tuple[int, int]:
    """Byte offsets in the block of lane `lane`'s timers due soon (one word per budget) and of
    its horizon (engine/_shard.pxi: the lane's head, its budget counts, its pending timers by
    budget, those due soon, the horizon)."""
    stride = (shard_block_size(2, w.nb, RING_BITS) - 64) // 2
    soon = 64 + lane * stride + 64 + w.nb * (24 + 8)
    return soon, soon + 8 * w.nb


@pytest.mark.parametrize("behind_clock, expected", [(0, CERTAIN), (1, WAITS)])
def test_within_the_others_horizon_only_its_timers_due_soon_count(behind_clock, expected):
    """A timer fires before this key only if it is due by this event's clock, and every
    worker publishes how many of its timers are due by its horizon (SHARD_SOON_MS past its
    clock when it counted them). With lane 1 at this event, 1 + 3 sends counted, 5 timers
    pending of which 4 are due by its horizon: a horizon at this clock counts the 4 (9 < 10,
    certain), one a millisecond before it counts all 5 (10, wait)."""
    now = CampaignSpec(id="now", on=(CALL,), channel="sms", daily_budget=BUDGET)
    w = Worker([now])
    w.feed(ev(T0 + HOUR, CALL, msisdn=S1))
    w.day, sends, _ = w.own_counts("now")
    assert sends == 1
    clock = T0 + 2 * HOUR
    soon_at, horizon_at = lane_words(w, 1)
    ci = w.ids.index("now")
    struct.pack_into("<Q", w.block, soon_at + 8 * ci, 4)
    struct.pack_into("<q", w.block, horizon_at, clock - behind_clock)
    q = w.events + 1
    assert w.decide("now", Lane(q, pending=5, chan_pending=5, sends=3, total=3), ev(clock, CALL, msisdn=S2)) \
        == expected, f"lane 1's horizon {behind_clock} ms before this event's clock"


@pytest.mark.parametrize("before_due", [0, 1])
def test_a_worker_counts_its_timers_due_by_its_horizon(before_due):
    """What a worker publishes: a timer is counted due soon once the clock comes within
    SHARD_SOON_MS of its due time (the horizon is recounted when the clock has moved half of
    it), at creation when its delay is shorter, and no longer once it has fired. A 1-hour
    timer made at T0 + 1 h is due at T0 + 2 h; an event at T0 + 2 h - SOON_MS puts the horizon
    at its due time (counted), one a millisecond earlier 1 ms short of it (not yet). A timer
    due exactly at the horizon is counted, made then (`minute`) or reached by it (`long`)."""
    short = CampaignSpec(id="short", on=(SMS,), channel="sms", delay_ms=30_000)
    minute = CampaignSpec(id="minute", on=(SMS,), channel="sms", delay_ms=SOON_MS)
    long = CampaignSpec(id="long", on=(SMS,), channel="sms", delay_ms=HOUR)
    w = Worker([short, minute, long])
    soon_at, horizon_at = lane_words(w, 0)
    pend_at = soon_at - 8 * w.nb
    ids = {c: w.ids.index(c) for c in ("short", "minute", "long")}
    sms = len(w.ids) + w.config.channels.index("sms")

    def word(at, i):
        return struct.unpack_from("<Q", w.block, at + 8 * i)[0]

    w.feed(ev(T0 + HOUR, SMS, msisdn=S1))
    assert struct.unpack_from("<q", w.block, horizon_at)[0] == T0 + HOUR + SOON_MS
    assert (word(pend_at, ids["short"]), word(pend_at, ids["long"]), word(pend_at, sms)) == (1, 1, 3)
    assert (word(soon_at, ids["short"]), word(soon_at, ids["minute"]), word(soon_at, ids["long"]),
            word(soon_at, sms)) == (1, 1, 0, 2), \
        "timers of 30 s and 1 min are due within the horizon made at this event, one of 1 h is not"
    w.feed(ev(T0 + HOUR + 31_000, LOC, msisdn=FOREIGN))
    assert (word(pend_at, ids["short"]), word(soon_at, ids["short"]), word(soon_at, sms)) == (0, 0, 1), \
        "a timer that fired is neither pending nor due soon (the channel keeps the 1-minute one)"
    w.feed(ev(T0 + 2 * HOUR - SOON_MS - before_due, LOC, msisdn=FOREIGN))
    assert struct.unpack_from("<q", w.block, horizon_at)[0] == T0 + 2 * HOUR - before_due
    assert (word(soon_at, ids["long"]), word(soon_at, sms)) == ((1, 1) if before_due == 0 else (0, 0)), \
        "the 1-minute timer has fired (no longer due soon), the 1-hour one is counted from its due time on"
    assert (word(pend_at, ids["minute"]), word(soon_at, ids["minute"]), word(pend_at, ids["long"])) == (0, 0, 1)


# ---- (e) a wait ends once the others' counts decide it ----------------------------------

def five_calls_to_come() -> Worker:
    """A worker whose campaign `now` (calls, a daily budget of 10) sent once, then saw 5 calls
    of the other worker's and 2 events of its own: the next event is at 9."""
    w = Worker([CampaignSpec(id="now", on=(CALL,), channel="sms", daily_budget=BUDGET)])
    w.feed(ev(T0 + HOUR, CALL, msisdn=S1))
    w.day, _, _ = w.own_counts("now")
    assert events_to(w, 5, 2) == 9
    return w


@pytest.mark.parametrize("moved_to, expected", [(4, WAITS), (5, DECIDED)])
def test_a_wait_ends_when_the_other_worker_moves_close_enough(moved_to, expected):
    """A worker waiting at its key asks the bound again as the others move: once it decides
    the send, the wait ends, before the other worker is past the key. Lane 1 at event 1, 1 +
    3 sends counted, 5 of its events to come before the key at 9: 10, a wait. Lane 1 then
    moves on: at event 5, no more than 9 - 5 + 1 = 5 of its events can come, and 1 + 3 + 5 =
    9 < 10 decides the send; at event 4, 6 more can (10), and the wait goes on until lane 1
    finishes."""
    w = five_calls_to_come()
    assert w.decide("now", Lane(1, sends=3, total=3), ev(T0 + 3 * HOUR, CALL, msisdn=S2),
                    then=Lane(moved_to, sends=3, total=3)) == expected, f"lane 1 moved to event {moved_to}"


@pytest.mark.parametrize("their_sends, expected", [(8, WAITS), (9, DECIDED)])
def test_a_wait_ends_when_the_other_worker_spends_the_budget(their_sends, expected):
    """The lanes' counts are a lower bound of the counts before the key, as far as they can
    refuse: when the other worker's sends, made while this one waits, bring them to the
    budget, the send is refused at once. 1 of this worker's and 9 of the other's reach 10;
    8 leave 9, which the other's 5 events to come could still take past it: the wait goes
    on, and once lane 1 is finished with 8 sends, the send is made."""
    w = five_calls_to_come()
    assert w.decide("now", Lane(1, sends=3, total=3), ev(T0 + 3 * HOUR, CALL, msisdn=S2),
                    then=Lane(1, sends=their_sends, total=their_sends), sends=expected == WAITS) == expected, \
        f"lane 1 with {their_sends} sends"


def test_past_the_cap_the_classes_are_merged_into_one():
    """The counts by worker and class take 4 bytes * 8,192 slots each: past 512 classes times
    workers (engine/_shard.pxi SHARD_CLASS_CAP) the classes are merged into one, and every
    event of a counted type counts for every campaign of a budget. With 256 workers and 3
    classes (calls, texts, power-ons, each with a budgeted campaign), the other worker's
    power-on counts for the campaign on calls: 4 calls and a power-on make 1 + 3 + 5 + 1 =
    10 (wait), where 2 workers keep them apart (9, certain)."""
    outcomes = []
    for workers in (2, 256):
        now = CampaignSpec(id="now", on=(CALL,), channel="sms", daily_budget=BUDGET)
        texts = CampaignSpec(id="texts", on=(SMS,), channel="mms", daily_budget=BUDGET)
        power = CampaignSpec(id="power", on=(POWER_ON,), channel="boss", daily_budget=BUDGET)
        w = Worker([now, texts, power], workers=workers)
        w.feed(ev(T0 + HOUR, CALL, msisdn=w.s1))
        w.day, sends, _ = w.own_counts("now")
        assert sends == 1
        t = T0 + HOUR
        for kind in [CALL] * 4 + [POWER_ON]:
            t += MINUTE
            w.feed(ev(t, kind, msisdn=w.foreign))
        outcomes.append(w.decide("now", Lane(1, sends=3, total=3), ev(T0 + 3 * HOUR, CALL, msisdn=w.s2)))
    assert outcomes == [CERTAIN, WAITS], "2 workers keep the classes apart, 256 merge them"


@pytest.mark.parametrize("next_day, moves, expected", [
    (False, False, CERTAIN), (True, False, WAITS), (True, True, WAITS)])
def test_a_send_that_opens_a_local_day_in_this_workers_lane_waits(next_day, moves, expected):
    """A send decided on the bound may not open a new local day in this worker's lane: a
    worker still deciding a key of the day before would read that lane as 0 sends of its
    day, a bound too low (2 to 5 workers on gen's worlds overspent a channel's budget by one
    without it). With lane 1 at this very event and 1 + 3 sends counted, the send of the
    same day is certain (1 + 3 + 1 = 5); the first of the next day waits, and goes on
    waiting while lane 1 moves (`moves`), until it is past."""
    now = CampaignSpec(id="now", on=(CALL,), channel="sms", daily_budget=BUDGET)
    w = Worker([now])
    w.feed(ev(T0 + HOUR, CALL, msisdn=S1))
    w.day, sends, _ = w.own_counts("now")
    assert sends == 1
    q = w.events + 1
    t = T0 + DAY + HOUR if next_day else T0 + 2 * HOUR
    assert w.decide("now", Lane(q, sends=3, total=3), ev(t, CALL, msisdn=S2),
                    then=Lane(q, sends=1, total=3) if moves else None) == expected, \
        "the first send of a new local day" if next_day else "a send of the same day"


# ---- (f) max_pending: one bound on every worker's delayed actions -------------------------
#
# A delayed action is scheduled only while all workers together hold fewer than max_pending
# timers at the event's campaigns (SPEC §3 step 6). A worker past the event left its count
# there in its ring (exact); one not yet there holds at most its high-water mark plus one
# timer per delayed campaign and event it has yet to process before this one, and at least
# none. The lanes decide while these tell the answer; otherwise the worker waits, asking
# them again as the others move (until 2026-12-05 such a wait ran until every other was past).

REFUSED = "refused without waiting"


def pending_worker(max_pending: int, workers: int = 2) -> Worker:
    """A worker whose one campaign, `later`, answers each SMS with an action an hour later."""
    return Worker([CampaignSpec(id="later", on=(SMS,), channel="sms", delay_ms=HOUR)], workers=workers,
                  max_pending=max_pending)


EVENT_DUE = 2**63 - 1       # a key's due time once the event's timers have fired (SHARD_EVENT_DUE)


def pending_lane(w: Worker, j: int, pos: int, hw: int = 0, at: tuple[int, int] | None = None,
                 due: int = 0) -> None:
    """Lane j at event `pos` (before its timers there; with `due` EVENT_DUE, after them), its
    high-water mark `hw` timers; with `at` = (q, n), its count after event q's timers fired
    was n, which it leaves once its timers there fired."""
    ring = np.array([at[1]], np.uint64) if at else np.zeros(0, np.uint64)
    w.core.shard_import(j, (pos, due, 0), hw, hw, bytes(shard_counts_size(w.nb)), at[0] if at else 0, ring)


def ended_or_waits(core, thread: threading.Thread, waits: int) -> str:
    """CERTAIN when the feed on `thread` ended without a wait, WAITS once `core` counts a wait
    past `waits`; the test fails (the feed aborted) when neither comes within SAFETY_S."""
    deadline = time.monotonic() + SAFETY_S
    while thread.is_alive() and core.shard_waits[0] == waits:
        if time.monotonic() > deadline:
            core.shard_abort()
            thread.join(SAFETY_S)
            pytest.fail(f"the feed neither ended nor waited within {SAFETY_S:.0f} s")
        time.sleep(0.001)
    return CERTAIN if not thread.is_alive() else WAITS


def decide_pending(w: Worker, event: bytes, then=None, finish=None) -> tuple[str, bool]:
    """Feed `event`, at which `later` asks max_pending once: (how it was decided, whether
    its action was scheduled). CERTAIN or REFUSED without a wait; WAITS when only `finish()`
    (the other lanes past the event, their counts there exact) ended the wait; DECIDED when
    `then()` (a move of the lanes, still before the event) ended it by itself."""
    waits = w.core.shard_waits
    pending, overflow = w.core.pending, int(w.core.funnel()[0, 2])
    status = []
    thread = threading.Thread(target=lambda: status.append(w.core.feed(event)), daemon=True)
    thread.start()
    outcome = ended_or_waits(w.core, thread, waits[0])
    if outcome == WAITS and then is not None:
        then()
        thread.join(MOVED_S)
        if not thread.is_alive():
            outcome = DECIDED
    if thread.is_alive():
        finish()
        thread.join(SAFETY_S)
        if thread.is_alive():
            w.core.shard_abort()
            thread.join(SAFETY_S)
            pytest.fail("the wait did not end when the other workers were past the event")
    assert status == [0]
    moved = tuple(b - a for a, b in zip(waits, w.core.shard_waits))
    assert moved == ((0, 0, 0, 0) if outcome == CERTAIN else (1, 1, 0, 0)), \
        f"{outcome}, but shard_waits moved by {moved}: the event did not ask max_pending exactly once"
    scheduled = w.core.pending == pending + 1
    assert int(w.core.funnel()[0, 2]) == overflow + (not scheduled), "neither scheduled nor refused"
    if outcome == CERTAIN and not scheduled:
        outcome = REFUSED
    return outcome, scheduled


@pytest.mark.parametrize("behind, hw, expected", [
    (0, 4, CERTAIN), (0, 5, WAITS), (2, 2, CERTAIN), (2, 3, WAITS)])
def test_max_pending_bounds_the_others_high_water_mark_and_events_to_come(behind, hw, expected):
    """max_pending 5, no timer of this worker's: lane 1 `behind` events before this one, with
    a high-water mark of `hw` timers, may hold hw + behind at it (one delayed campaign). 4 and
    2 + 2 leave room: scheduled at once. 5 and 3 + 2 may not: the worker waits, and schedules
    once lane 1 is past with none."""
    w = pending_worker(5)
    t = T0 + HOUR
    for _ in range(3):
        t += MINUTE
        w.feed(ev(t, LOC, msisdn=FOREIGN))
    q = w.events + 1
    pending_lane(w, 1, q - behind, hw)
    outcome, scheduled = decide_pending(w, ev(t + MINUTE, SMS, msisdn=S1),
                                        finish=lambda: pending_lane(w, 1, FINISHED[0], at=(q, 0)))
    assert (outcome, scheduled) == (expected, True), f"lane 1 {behind} events behind, high-water mark {hw}"


@pytest.mark.parametrize("own, expected", [(1, (WAITS, True)), (2, (REFUSED, False))])
def test_max_pending_reached_by_this_workers_own_timers_is_refused_without_waiting(own, expected):
    """max_pending 2: with 2 timers of its own, this worker's next delayed action is refused
    whatever the others hold; with 1, lane 1 (at this event, a high-water mark of 1) may
    hold the second, so it waits, and schedules once lane 1 is past with none."""
    w = pending_worker(2)
    for k, msisdn in enumerate((S1, S2)[:own]):
        w.feed(ev(T0 + HOUR + k * MINUTE, SMS, msisdn=msisdn))
    assert w.core.pending == own
    q = w.events + 1
    pending_lane(w, 1, q, hw=1)
    assert decide_pending(w, ev(T0 + HOUR + 10 * MINUTE, SMS, msisdn=S3),      # before the first fires
                          finish=lambda: pending_lane(w, 1, FINISHED[0], at=(q, 0))) == expected, \
        f"{own} timers of this worker's"


@pytest.mark.parametrize("then_hw, expected", [(1, DECIDED), (2, WAITS)])
def test_a_max_pending_wait_ends_when_the_other_worker_moves_close_enough(then_hw, expected):
    """max_pending 3: lane 1 two events behind with a high-water mark of 1 may hold 3 at this
    event, so the worker waits. Lane 1 then moves one event on: with a high-water mark of 1
    it may hold 2, and the wait ends by itself, scheduled; with 2, it may hold 3, and the wait
    goes on until lane 1 is past."""
    w = pending_worker(3)
    t = T0 + HOUR
    for _ in range(3):
        t += MINUTE
        w.feed(ev(t, LOC, msisdn=FOREIGN))
    q = w.events + 1
    pending_lane(w, 1, q - 2, hw=1)
    assert decide_pending(w, ev(t + MINUTE, SMS, msisdn=S1), then=lambda: pending_lane(w, 1, q - 1, hw=then_hw),
                          finish=lambda: pending_lane(w, 1, FINISHED[0], at=(q, 0))) == (expected, True), \
        f"lane 1 moved to one event behind, high-water mark {then_hw}"


@pytest.mark.parametrize("their_count, behind_hw, expected", [
    (1, 0, (CERTAIN, True)), (1, 1, (WAITS, True)), (2, 0, (REFUSED, False))])
def test_a_worker_past_the_event_tells_its_count_there(their_count, behind_hw, expected):
    """Three workers, max_pending 2, none of this worker's timers: lane 1 is past this event,
    where it held `their_count` timers; lane 2 is at it with a high-water mark of
    `behind_hw`. 1 + 0 leaves room; 1 + 1 may not, so the worker waits, and schedules once
    lane 2 is past with none; 2 reach the bound whatever lane 2 holds: refused at once."""
    w = pending_worker(2, workers=3)
    w.feed(ev(T0 + HOUR, LOC, msisdn=w.foreign))
    q = w.events + 1
    pending_lane(w, 1, q + 1, hw=their_count, at=(q, their_count))
    pending_lane(w, 2, q, hw=behind_hw)
    assert decide_pending(w, ev(T0 + 2 * HOUR, SMS, msisdn=w.s1),
                          finish=lambda: pending_lane(w, 2, FINISHED[0], at=(q, 0))) == expected, \
        f"lane 1 past with {their_count}, lane 2 at the event with a high-water mark of {behind_hw}"


@pytest.mark.parametrize("due, expected", [(EVENT_DUE - 1, WAITS), (EVENT_DUE, CERTAIN)])
def test_a_worker_whose_key_is_this_events_tells_its_count_there(due, expected):
    """A worker whose key is this very event, its timers there fired (as the service's
    workers stop at the end of a piece, until every worker has done it), has left its count
    at the event: 0 of max_pending 2 decides at once, whatever its high-water mark (5). One
    step before that key it may still fire or create timers: it waits, until lane 1 is past.
    (A wait for lane 1 to pass this event here would never end in the service: lane 1 stays
    at its key until this worker finishes the piece.)"""
    w = pending_worker(2)
    w.feed(ev(T0 + HOUR, LOC, msisdn=FOREIGN))
    q = w.events + 1
    pending_lane(w, 1, q, hw=5, at=(q, 0), due=due)
    assert decide_pending(w, ev(T0 + 2 * HOUR, SMS, msisdn=S1),
                          finish=lambda: pending_lane(w, 1, FINISHED[0], at=(q, 0))) == (expected, True), \
        f"lane 1's key at this event, due {due}"
