"""Record layouts shared by the core, the sinks and the reference model.

The core fills C structs with exactly these layouts; Python views them as NumPy structured
arrays without copying field by field. Keep the two in step (`_core.pxd`).
"""
import numpy as np

__all__ = [
    "EVENT_DTYPE", "ACTION_DTYPE", "CONVERSION_DTYPE", "DEAD_LETTER_DTYPE", "DEAD_LETTER_BYTES",
    "DEAD_LETTER_SPAN_BITS", "KIND_SEND", "KIND_CONTROL", "KINDS", "BAD_REASONS", "BAD_FIELDS",
    "STREAM_STATUSES", "FUNNEL", "FUNNEL_UNNAMED", "KIND_GLOBAL_CONTROL", "ACTION_COLUMNS", "CONVERSION_COLUMNS",
    "DEAD_LETTER_COLUMNS", "EXPLAIN_DTYPE", "EXPLAIN_LINES", "MATCH_CONDITIONS", "RECHECKS", "TAKER_RULES",
]

KIND_SEND = 0
KIND_CONTROL = 1
KIND_GLOBAL_CONTROL = 2         # the programme's control group ([policy] global_holdout)
KINDS = ("send", "control", "global_control")

# Dead-letter reasons, by code (SPEC §1.4). The first failing field in the order
# ts, type, msisdn, peer, cell, dur, flags, arg decides the reason; `duplicate_key` comes first.
BAD_REASONS = (
    "not_an_event",     # the value is neither an array nor a map
    "missing_field",    # ts, type or msisdn absent or nil
    "wrong_type",       # a known field holds the wrong msgpack type
    "out_of_range",     # negative, msisdn 0 or >= 10**15, cell >= 2**32, ts >= 2**53
    "bad_number",       # msisdn/peer string that is not 1..15 ASCII digits without a leading 0
    "unknown_type",     # type code or name not configured
    "duplicate_key",    # a map names a known key twice
)

# The field a dead letter names, by code: the event fields in wire order, then "" for a
# value that is wrong as a whole (not an array or map). `duplicate_key` names the first
# known key given twice.
BAD_FIELDS = ("ts", "type", "msisdn", "peer", "cell", "dur", "flags", "arg", "")

# What the core's status codes (Core.feed, Core.end_stream, Core.decode) mean, by code:
# the names operators read in messages (StreamError.reason for 1..3).
STREAM_STATUSES = ("ok", "corrupt", "too_large", "truncated", "out_of_memory")

# Per-campaign funnel counters, in stats.json order.
FUNNEL = (
    "matched",                  # step 6 matched
    "scheduled",                # ... and was put on a timer (delay > 0)
    "overflow",                 # ... but max_pending was reached: dropped
    "disabled",                 # an action due while its campaign is disabled (enabled = false)
    "ended",                    # an action due on a local date outside its campaign's start/end
    "recheck_failed",           # a delayed action whose recheck failed at emission
    "absent",                   # a delayed action whose `absent` marker was set after its trigger
    "suppressed_blacklist",
    "suppressed_quiet_hours",
    "suppressed_min_gap",
    "suppressed_max_per_day",
    "suppressed_max_in_window",     # max_in_window.contacts contacts already at times > t - window
    "suppressed_cooldown",
    "suppressed_campaign_budget",   # the campaign's daily_budget or total_budget was reached
    "suppressed_channel_budget",    # its channel's daily_budget was reached
    "control",                  # contacts kept as hold-out control
    "global_control",           # contacts kept in the programme's global control group
    "sent",                     # contacts sent
    "converted_send",
    "converted_control",
    "converted_global_control",
)

# The funnel of checkpoints that do not name their stages (written before `disabled` and
# `ended`): a restore maps stages by name, so a checkpoint outlives a change of FUNNEL.
FUNNEL_UNNAMED = (
    "matched", "scheduled", "overflow", "recheck_failed", "suppressed_blacklist", "suppressed_quiet_hours",
    "suppressed_min_gap", "suppressed_max_per_day", "suppressed_cooldown", "control", "sent",
    "converted_send", "converted_control",
)

# `variant`: the index of the record's template among its campaign's variants (0 for a
# campaign without them); the sinks name the template from (campaign, variant). A conversion
# carries the variant its subscriber gets when it converts.
ACTION_DTYPE = np.dtype([
    ("seq", "<u8"), ("ts", "<i8"), ("trigger_ts", "<i8"), ("msisdn", "<u8"),
    ("cell", "<u4"), ("campaign", "<u2"), ("kind", "u1"), ("variant", "u1"),
])
CONVERSION_DTYPE = np.dtype([
    ("seq", "<u8"), ("ts", "<i8"), ("msisdn", "<u8"), ("contact_seq", "<u8"),
    ("campaign", "<u2"), ("kind", "u1"), ("variant", "u1"), ("_pad", "u1", (4,)),
])
EVENT_DTYPE = np.dtype([
    ("ts", "<i8"), ("msisdn", "<u8"), ("peer", "<u8"), ("dur", "<u8"), ("flags", "<u8"),
    ("arg", "<u8"), ("cell", "<u4"), ("type", "<i4"),
])
# A dead letter is one run of identical bad values (SPEC §4): `offset` of the first, `count`
# of them, the first DEAD_LETTER_BYTES bytes of the value (`nbytes` of them used). At most
# max_dead_letters records start in one span of 2**DEAD_LETTER_SPAN_BITS stream bytes.
DEAD_LETTER_BYTES = 64
DEAD_LETTER_SPAN_BITS = 26
DEAD_LETTER_DTYPE = np.dtype([
    ("offset", "<u8"), ("count", "<u8"), ("reason", "<u2"), ("field", "<u2"), ("nbytes", "<u2"),
    ("_pad", "<u2"), ("bytes", "u1", (DEAD_LETTER_BYTES,)),
])
# A bad value is held to hide events (replay warns, check says where) when it holds this many
# good events' bytes or more: a wrong field leaves an event's size, and a map's keys beside an
# array's make it about double; a damaged header takes in the events after it
HIDDEN_EVENTS_FACTOR = 4


def events_in_bad_value(nbytes: int, good: int, good_bytes: int) -> int:
    """About how many events a bad value of `nbytes` bytes would make at the average size of
    `good` good events that took `good_bytes` bytes; 0 unless that is HIDDEN_EVENTS_FACTOR or
    more, or when no good event gives a size. Replay's warning and check's line both ask."""
    if good <= 0 or good_bytes <= 0:
        return 0
    size = good_bytes / good
    if nbytes < HIDDEN_EVENTS_FACTOR * size:
        return 0
    return round(nbytes / size)
assert EVENT_DTYPE.itemsize == 56
assert ACTION_DTYPE.itemsize == 40 and CONVERSION_DTYPE.itemsize == 40
assert DEAD_LETTER_DTYPE.itemsize == 88

# Output columns (SPEC §4), in file order.
ACTION_COLUMNS = ("seq", "ts", "campaign", "msisdn", "channel", "template", "kind", "trigger_ts", "cell")
CONVERSION_COLUMNS = ("seq", "ts", "campaign", "msisdn", "contact_seq", "kind")
DEAD_LETTER_COLUMNS = ("offset", "reason", "field", "count", "bytes_hex")


# The explanation of a watched subscriber (engine/_explain.pxi, ExplainC): one line per record,
# `what` indexes EXPLAIN_LINES; engine/closedloop/explain.py reads them back.
EXPLAIN_DTYPE = np.dtype([
    ("ts", "<i8"), ("other", "<i8"), ("seq", "<u8"), ("subscriber", "<u4"), ("value", "<u4"),
    ("cell", "<u4"), ("what", "<u2"), ("campaign", "<u2"), ("code", "<u2"), ("kind", "<u2"), ("_pad", "<u4"),
])
EXPLAIN_LINES = ("event", "conversion", "match", "emit", "scheduled", "overflow", "timer", "state",
                 "counter", "marker", "contact")

# What `explain` says of a campaign of an event's type: "matched", or the first condition of
# SPEC §3 step 6 that failed, in this order. The core gives "eligibility" for audience,
# exclude, blacklist and where together (one bit); the explanation tells them apart.
MATCH_CONDITIONS = (
    "matched", "enabled", "dates", "flags", "arg", "eligibility", "peer_in", "area", "enter", "hours",
    "days", "counter", "when", "after", "not_after", "anniversary", "stop_after", "once", "cooldown",
    "pending",
)
CONDITIONS = ("enabled", "dates", "flags", "arg", "audience", "exclude", "blacklist", "where", "peer_in",
              "area", "enter", "hours", "days", "counter", "when", "after", "not_after", "anniversary",
              "stop_after", "once", "cooldown", "pending")

# recheck rules in the SPEC's order, by the core's bit (RECHECK_AREA = 1 << 0, ...)
RECHECKS = ("area", "powered_on", "audience", "hours")

# The policy rules through which a campaign loses a contact to another's (`diff`), by code.
TAKER_RULES = ("min_gap", "max_per_day", "max_in_window")
