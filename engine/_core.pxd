# C structs of the core. The record structs (ActionC, ConversionC, DeadLetterC) have exactly
# the layouts of engine/records.py's NumPy dtypes: Python views the buffers without copying
# field by field.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t, int64_t

ctypedef struct EventC:
    int64_t ts
    uint64_t msisdn
    uint64_t peer
    uint64_t dur
    uint64_t flags
    uint64_t arg
    uint32_t cell
    int32_t type

ctypedef struct ActionC:
    uint64_t seq
    int64_t ts
    int64_t trigger_ts
    uint64_t msisdn
    uint32_t cell
    uint16_t campaign
    uint8_t kind
    uint8_t variant         # index into the campaign's variants (0 without variants)

ctypedef struct ConversionC:
    uint64_t seq
    int64_t ts
    uint64_t msisdn
    uint64_t contact_seq
    uint16_t campaign
    uint8_t kind
    uint8_t variant         # the converted contact's variant, as its action record has it
    uint8_t pad[4]

ctypedef struct DeadLetterC:
    uint64_t offset         # of the first value of the run
    uint64_t count          # identical bad values in the run
    uint16_t reason
    uint16_t field          # index into records.BAD_FIELDS; 8: the value as a whole
    uint16_t nbytes
    uint16_t pad
    uint8_t bytes[64]

# The run of identical bad values not yet written (SPEC §4): it becomes one DeadLetterC when a
# different value ends it, or the stream ends. It is state, carried by checkpoints and reloads,
# so that the records never depend on where the stream was cut.
ctypedef struct DeadRunC:
    uint8_t* bytes          # the whole first value (capacity max_event_bytes, owned by the Core)
    uint64_t offset
    uint64_t count          # 0: no run open
    uint32_t len
    uint16_t reason
    uint16_t field
    uint64_t span           # offset >> DEAD_SPAN_BITS of the last record counted
    uint64_t span_records   # records that started in that span

# A source's first timer's order, kept beside the heap of sources (EngineC.src_first), and
# its subscriber, whose row is fetched while the timer waits to fire
ctypedef struct TimerKeyC:
    int64_t due
    uint64_t created
    uint32_t subscriber
    uint32_t pad

# A delayed action waiting for its due time; the heap orders by (due, created).
ctypedef struct TimerC:
    int64_t due
    uint64_t created
    int64_t trigger_ts
    uint32_t subscriber
    uint32_t cell
    uint32_t campaign
    uint32_t pending_slot   # where its key was put in the pending set (a hint: see
                            # pending_remove); 0 in a checkpoint, whose bytes it must not change

# The timers of one delay, as they were created: their (due, created) only grow, so a ring
# buffer kept in that order pops them in order, without the heap's misses (_state.pxi).
ctypedef struct TimerRunC:
    TimerC* buf
    uint64_t head           # index of the first, in a ring of cap (a power of two)
    uint64_t n
    uint64_t cap
    uint64_t soon           # a sharded worker's: its first timers, counted as due soon in
                            # the worker's lane (_shard.pxi, shard_tick)

# Sparse per-(subscriber, campaign) contact state; only pairs that were ever contacted have
# one, so memory follows contacts, not subscribers x campaigns. A pair with an action waiting
# is in the pending set (EngineC.pending), which its timer keeps, not here.
ctypedef struct ContactC:
    uint64_t key            # subscriber << 16 | campaign, with bit 63 set when the slot is used
    int64_t last_ts         # last contact (send or control)
    uint64_t last_seq       # its action seq, for conversion records
    uint32_t streak         # contacts without a response
    uint32_t flags          # CONTACT_* bits

# The fixed head of a subscriber's state row. The row continues with the eligibility words
# (uint64 x nr_elig_words), the counter values (uint32 x nr_counters) and the window starts of
# windowed counters (int64 x nr_windows), so that one or two cache lines hold everything the
# matcher reads for one event. A row that fits in 64 bytes is padded to exactly one line.
ctypedef struct SubHeadC:
    uint64_t msisdn         # here rather than in an array of its own: verifying an index hit
                            # then reads the cache line the event needs anyway
    int64_t last_any_p1     # last contact of any campaign + 1; 0 = never (zeroed memory means "never")
    int32_t day             # local day of day_count
    uint32_t day_count      # contacts on that local day
    uint32_t cell           # current cell, 0 = unknown
    uint8_t flags           # SUB_* bits
    uint8_t contacts        # its contact states, 255 meaning 255 or more: a lookup stops once
                            # it has passed them all rather than at the cluster's empty slot
    uint16_t pending        # its timers waiting: only then is the pending set worth a probe

ctypedef struct CounterC:
    uint64_t types          # bit per event type code
    uint64_t flags          # event flag bits that must all be set
    uint64_t arg            # e.arg must equal it, when has_arg
    int32_t add             # ADD_* mode
    int32_t window_slot     # index of its start in the row (window or period), -1 without either
    int64_t window          # ms; 0 with a period
    int32_t period          # PERIOD_* (local calendar), PERIOD_NONE without one
    uint8_t has_arg
    uint8_t pad[3]

# A marker (SPEC §3 step 8): which events set it. Its value, per subscriber, is in the row:
# the last such event's ts + 1, 0 = unset (so an event at ts 0 still sets it).
ctypedef struct MarkerC:
    uint64_t types          # bit per event type code
    uint64_t flags          # event flag bits that must all be set
    uint64_t arg            # e.arg must equal it, when has_arg
    uint8_t has_arg
    uint8_t pad[7]

# One `after` (negate 0) or `not_after` (negate 1) entry of a campaign.
ctypedef struct MarkCondC:
    int64_t within          # ms, > 0
    int32_t marker
    int32_t negate

# One compiled campaign. Line 0, its first 64 bytes, holds what the matching loop reads of
# every candidate (what the candidate masks do not already decide: arg, peer_in, enter,
# whether it has a `when`, `after` or anniversary, the contact rules, the delay); a campaign
# with `when`, `after` or a delay reads one more field for it on lines 2-3 (when_start,
# cond_off, run). emit reads mostly line 1. Before, 200 campaigns
# of 224 bytes (45 kB, more than L1) had a candidate read three of its lines. The array is
# allocated 64-byte aligned and the struct is 256 bytes, so that each part is whole lines.
ctypedef struct CampaignC:
    # -- line 0: the matching loop
    uint64_t arg            # the trigger's arg, when has_arg
    uint64_t area_mask
    int64_t cooldown
    int64_t delay
    int32_t peer_set        # -1: no peer_in
    int32_t area_word       # -1: no area
    int32_t when_len        # 0: no `when`
    int32_t nr_conds
    int32_t date_slot       # its anniversary attribute's column in EngineC.dates, -1: none
    uint32_t stop_after     # 0xFFFFFFFF: never stop
    uint8_t has_arg
    uint8_t enabled
    uint8_t enter           # set only with an area
    uint8_t once
    uint8_t days            # weekday bits, mon = bit 0
    uint8_t has_convert_arg
    uint8_t nr_variants     # 0 or 1: every contact gets variant 0, no hash computed
    uint8_t pad_hot
    # -- line 1: emission (emit: the campaign's life, rechecks, policy, budgets, holdout)
    int32_t start_day       # local days it acts on, both included (INT32_MIN / MAX: open)
    int32_t end_day
    uint32_t recheck        # RECHECK_* bits
    int32_t nr_absent
    uint32_t exempt         # EXEMPT_* bits
    uint32_t channel        # index into the channel budgets
    uint32_t holdout        # control when crc % 10000 < holdout
    uint32_t id_len
    uint64_t daily_budget   # sends per local day; NO_BUDGET: none
    uint64_t total_budget   # sends ever; NO_BUDGET: none
    const char* id          # campaign id bytes (owned by the Core), for the holdout hash
    uint32_t variant_off    # its running sums of weights: EngineC.variant_sums[variant_off : + nr_variants]
    int32_t absent_off      # its absent markers: absent_list[absent_off : absent_off + nr_absent]
    # -- lines 2 and 3: conversions, rechecks, the masks' compile, explanations
    uint64_t convert_arg
    int64_t convert_within  # -1: no limit
    uint64_t flags          # event flag bits that must all be set in the trigger's flags
    uint64_t convert_types
    uint64_t elig_mask      # static eligibility: audience, exclude, blacklist, where
    uint64_t recheck_mask   # audience and exclude, for recheck "audience"
    int32_t cond_off        # its after/not_after entries: conds[cond_off : cond_off + nr_conds]
    int32_t elig_word
    int32_t recheck_word
    int32_t hours_start     # minute of the local day, -1: no hours
    int32_t hours_end
    int32_t counter         # -1: no counter condition
    uint32_t at_least
    int32_t when_start      # first word of its `when` program in EngineC.when_prog
    int32_t run             # its delay's timer run (EngineC.runs), -1 without a delay
    uint32_t channel_campaigns  # campaigns of its channel (itself included): the most sends
                                # or timers of that channel one event can make (_shard.pxi)
    uint64_t class_mask     # the classes of event types it triggers on, while sharded (_shard.pxi)
    uint8_t pad_tail[32]    # to 256 bytes

# Sends counted against a budget (SPEC §3 step 7): one per campaign, then one per channel.
# Engine state, not configuration: checkpointed, and carried over a reload by campaign id and
# channel name. A channel's `total` stays 0 (channels have daily budgets only).
ctypedef struct BudgetC:
    int64_t day             # local day of day_sends
    uint64_t day_sends      # sends on that local day
    uint64_t total          # sends ever

# `when` (SPEC §2.1), compiled by engine.language.when.compile_program: each comparison is
# sum(coef * counter) + constant OP 0 over the terms [first_term, first_term + nr_terms) of
# EngineC.when_terms, computed on 128-bit integers (|coef| < 2^33, at most 32 terms, counters
# < 2^32: no overflow). The program (EngineC.when_prog) is postfix: a word >= 0 pushes that
# comparison's truth, WHEN_AND / WHEN_OR / WHEN_NOT combine.
ctypedef struct WhenTermC:
    int64_t coef
    int32_t counter
    int32_t pad

ctypedef struct WhenCmpC:
    int64_t constant
    uint32_t first_term
    uint32_t nr_terms
    int32_t op              # WHEN_EQ ... WHEN_GE, in engine.language.when.OPS order
    int32_t pad

# A set of 64-bit MSISDNs (peer lists hold off-net numbers), open addressing, 0 = empty slot.
ctypedef struct PeerSetC:
    uint64_t* slots
    uint64_t mask

# One line of a watched subscriber's explanation (the cold path of `sigmatch explain`): what
# a record means depends on `what` (X_* in _explain.pxi; engine.records.EXPLAIN_DTYPE has the
# same layout and engine/closedloop/explain.py reads them back).
ctypedef struct ExplainC:
    int64_t ts              # effective event time, a timer's due time, an emission's t
    int64_t other           # trigger_ts (timer), due (scheduled), contact_seq (conversion), ...
    uint64_t seq            # action seq, conversion seq, a contact's last seq
    uint32_t subscriber
    uint32_t value          # event type, counter value, streak, ...
    uint32_t cell
    uint16_t what
    uint16_t campaign       # campaign, counter or marker index
    uint16_t code           # a condition (XC_*), an emission's outcome (emit's result), flags
    uint16_t kind
    uint32_t pad
