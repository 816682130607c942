# The core's constants and its state, declared once (included by _core.pyx before every other
# part): the decoder's codes and fields, the state's enums and limits, and EngineC, the one
# struct of plain pointers that every nogil function takes whole.

# Decoder return codes
cdef enum:
    DEC_OK = 0
    DEC_BAD = 1
    DEC_NEED_MORE = 2
    DEC_CORRUPT = 3
    DEC_TOO_LARGE = 4

# Kinds of a decoded field value
cdef enum:
    F_MISSING = 0
    F_NIL = 1
    F_UINT = 2
    F_NEG = 3
    F_STR = 4
    F_OTHER = 5

# Dead-letter reasons: indexes into engine.records.BAD_REASONS
cdef enum:
    R_NOT_AN_EVENT = 0
    R_MISSING_FIELD = 1
    R_WRONG_TYPE = 2
    R_OUT_OF_RANGE = 3
    R_BAD_NUMBER = 4
    R_UNKNOWN_TYPE = 5
    R_DUPLICATE_KEY = 6
    NR_REASONS = 7

# Funnel slots: indexes into engine.records.FUNNEL
cdef enum:
    FN_MATCHED = 0
    FN_SCHEDULED = 1
    FN_OVERFLOW = 2
    FN_DISABLED = 3
    FN_ENDED = 4
    FN_RECHECK_FAILED = 5
    FN_ABSENT = 6
    FN_BLACKLIST = 7
    FN_QUIET_HOURS = 8
    FN_MIN_GAP = 9
    FN_MAX_PER_DAY = 10
    FN_MAX_IN_WINDOW = 11
    FN_COOLDOWN = 12
    FN_CAMPAIGN_BUDGET = 13
    FN_CHANNEL_BUDGET = 14
    FN_CONTROL = 15
    FN_GLOBAL_CONTROL = 16
    FN_SENT = 17
    FN_CONVERTED_SEND = 18
    FN_CONVERTED_CONTROL = 19
    FN_CONVERTED_GLOBAL_CONTROL = 20
    NR_FUNNEL = 21

cdef enum:
    SUB_POWERED_OFF = 1
    SUB_INACTIVE = 2
    SUB_HAS_CONTACT = 4         # some (subscriber, campaign) contact state exists: worth a lookup
    SUB_CHANGED = 8             # listed in changed_subs since the last checkpoint; never saved

cdef enum:
    CONTACT_CONTACTED = 1
    CONTACT_CONVERTED = 2
    CONTACT_CONTROL = 4
    CONTACT_PENDING = 8         # in explanations only: the pending set holds it (a checkpoint
                                # written before that may still have it in a contact)
    CONTACT_GLOBAL_CONTROL = 16

cdef enum:
    ADD_COUNT = 0
    ADD_DUR = 1
    ADD_DUR_MINUTES = 2

cdef enum:
    PERIOD_NONE = 0
    PERIOD_DAY = 1
    PERIOD_WEEK = 2
    PERIOD_MONTH = 3

cdef enum:
    RECHECK_AREA = 1
    RECHECK_POWERED_ON = 2
    RECHECK_AUDIENCE = 4
    RECHECK_HOURS = 8

cdef enum:
    EXEMPT_MIN_GAP = 1
    EXEMPT_MAX_PER_DAY = 2
    EXEMPT_QUIET_HOURS = 4
    EXEMPT_MAX_IN_WINDOW = 8

# `when` comparison codes (engine.language.when.OPS order) and program words below 0
cdef enum:
    WHEN_EQ = 0
    WHEN_NE = 1
    WHEN_LT = 2
    WHEN_LE = 3
    WHEN_GT = 4
    WHEN_GE = 5
    WHEN_AND = -1
    WHEN_OR = -2
    WHEN_NOT = -3

# Core status codes returned to Python
cdef enum:
    ST_OK = 0
    ST_CORRUPT = 1
    ST_TOO_LARGE = 2
    ST_TRUNCATED = 3
    ST_NOMEM = 4

cdef enum:
    BATCH = 4096                # events decoded before they are matched
    NR_FIELDS = 8
    MAX_TYPE_NAMES = 64
    MAX_TYPE_NAME_LEN = 32
    DEAD_BYTES = 64             # bytes of a bad event kept in its dead letter
    DEAD_SPAN_BITS = 26         # at most max_dead_letters records start in 2**26 stream bytes
    POWER_OFF_TYPE = 8
    PREFETCH_FAR = 16
    PREFETCH_NEAR = 8
    PREFETCH_CONTACT = 4

# Constants the C compiler sees as such (a module-level cdef variable is a global it must load,
# and a division by one is a division instruction): floor_div(ts, DAY_MS), on every event,
# becomes a multiplication.
cdef extern from *:
    """
    #define SM_MSISDN_LIMIT 1000000000000000ULL
    #define SM_TS_LIMIT (1ULL << 53)
    #define SM_DAY_MS ((int64_t)86400000)
    #define SM_OCCUPIED (1ULL << 63)
    #define SM_PENDING_GONE 1ULL
    #define SM_NO_INDEX 0xFFFFFFFFu
    #define SM_NO_MASK 0xFFFFFFFFu
    #define SM_NO_BUDGET 0xFFFFFFFFFFFFFFFFULL
    """
    const uint64_t MSISDN_LIMIT "SM_MSISDN_LIMIT"   # 10**15: at most 15 digits
    const uint64_t TS_LIMIT "SM_TS_LIMIT"
    const int64_t DAY_MS "SM_DAY_MS"
    const uint64_t OCCUPIED "SM_OCCUPIED"
    # a removed pending key: never a key (no OCCUPIED), never empty (not 0)
    const uint64_t PENDING_GONE "SM_PENDING_GONE"
    const uint32_t NO_INDEX "SM_NO_INDEX"
    const uint32_t NO_MASK "SM_NO_MASK"
    const uint64_t NO_BUDGET "SM_NO_BUDGET"
cdef const char* GLOBAL_ID = "global"         # crc32(f"{msisdn}:global"): the global control group
cdef const char* VARIANT_SUFFIX = ":variant"  # crc32(f"{msisdn}:{id}:variant"): a campaign's variant


ctypedef struct FieldC:
    int kind
    uint64_t u
    size_t str_pos          # offset of the string bytes, relative to the buffer
    uint32_t str_len


# ---------------------------------------------------------------------------------------
# Engine state: one struct of plain pointers so that nogil functions can take it whole.

# One counter that campaigns of a type compare with at_least (candidate masks, EngineC).
ctypedef struct CandCounterC:
    int32_t counter
    uint32_t first              # its thresholds: cthr[first : first + n]
    uint32_t n


# Where an action stands in SPEC §3's order of emission (a sharded run's merge key).
ctypedef struct ActionKeyC:
    uint64_t pos                # position of the event at whose start it is made (1 = first)
    int64_t due                 # a timer's due time; SHARD_EVENT_DUE for the event's campaigns
    uint64_t created            # a timer's creation (event position << 16 | order); 0 otherwise


ctypedef struct EngineC:
    # subscriber index: msisdn -> dense index, open addressing with linear probing. A slot
    # carries 32 bits of the hash as a fingerprint, so that a probe touches only the row of
    # the right subscriber (whose MSISDN, in the row, confirms the hit)
    uint64_t* index_slots       # fingerprint << 32 | (row + 1); 0 = empty
    uint64_t index_cap           # slots; subscribers fill at most INDEX_LOAD of them
    uint32_t nr_subscribers
    uint32_t cap_subscribers
    # state rows
    uint8_t* rows
    size_t stride
    size_t elig_off
    size_t counter_off
    size_t window_off
    size_t marker_off
    int32_t nr_elig_words
    int32_t nr_counters
    int32_t nr_windows
    int32_t nr_markers
    # lists and areas
    PeerSetC* peer_sets
    int32_t nr_peer_sets
    uint32_t* area_cells        # cell -> slot, open addressing, 0 = empty
    uint64_t* area_masks        # [slot * nr_area_words]
    uint64_t area_slot_mask
    int32_t nr_area_words
    int32_t peer_prefetch[64][4]    # per event type: the peer sets its campaigns test, -1 ends
    # configuration
    CounterC* counters
    CampaignC* campaigns
    WhenCmpC* when_cmps         # every campaign's `when` comparisons, one table
    WhenTermC* when_terms
    int32_t* when_prog
    # anniversaries: per subscriber, nr_dates uint16 (month * 32 + day, 0 = never matches),
    # one per anniversary attribute some campaign names. Compiled from the profiles like the
    # eligibility words, so not state: a checkpoint or a reload never carries it
    uint16_t* dates             # [subscriber * nr_dates + slot]
    int32_t nr_dates
    int32_t nr_campaigns
    uint32_t* by_type_off       # [65] offsets into by_type_list, per event type code
    uint16_t* trig_list
    # Candidate masks (issue 14), so that matching visits only the campaigns an event may
    # match. A type's campaigns are the positions of its trig_list, P = ceil(n / 64) words of
    # bits; every mask lives in pos_pool. Per event the candidates are the campaigns whose
    # eligibility bit the row has (elig_*), less those disabled or outside their dates, hours
    # or days at the event's local minute (time_off, rebuilt when the minute changes), those
    # missing a trigger flag (flag_*), those whose counter is below at_least (cgrp_*) and
    # those whose area the cell is not in (area_*). Matching tests none of these again: the
    # masks decide them, exactly. All per type and campaign, never per subscriber.
    uint64_t* pos_pool
    int32_t cand_nr_words       # eligibility words when the masks were built
    uint64_t* elig_union        # [64 * cand_nr_words]: the bits some campaign of the type uses
    uint32_t* elig_slot         # [(type * cand_nr_words + word) * 64 + bit]: its mask in pos_pool
    uint32_t time_off[64]       # the type's mask of campaigns live in the local minute of
    int64_t time_lo             # UTC ms bounds [lo, hi): a ts inside needs no division
    int64_t time_hi
    int time_valid              # 0: rebuild before use (campaigns or utc_offset changed)
    uint64_t flag_union[64]     # the trigger flags some campaign of the type needs
    uint32_t* flag_slot         # [type * 64 + flag]: mask of the campaigns needing that flag
    uint32_t cgrp_off[65]       # per type, its counter groups cgrps[cgrp_off[t] : cgrp_off[t + 1]]
    CandCounterC* cgrps
    uint32_t* cthr              # each group's distinct at_least, largest first
    uint32_t* cthr_slot         # mask of the group's campaigns with at_least >= that one
    uint32_t area_off[64]       # mask of the type's campaigns with an area; NO_MASK: none
    int32_t cand_area_words
    uint64_t* area_union        # [64 * cand_area_words]
    uint32_t* area_slot         # [(type * cand_area_words + word) * 64 + bit]
    uint64_t* cand              # scratch, 2 x the largest P: the candidates, then areas
    uint32_t cand_max_words     # the largest P
    uint32_t* counter_type_off
    uint16_t* counter_list
    uint32_t* convert_type_off
    uint16_t* convert_list
    MarkerC* markers
    uint32_t* marker_type_off   # [65] offsets into marker_list, per event type code
    uint16_t* marker_list
    MarkCondC* conds            # every campaign's after/not_after entries
    int32_t* absent_list        # every campaign's absent markers
    uint32_t* variant_sums      # every campaign's running sums of variant weights (the last is W)
    # The contacts of the event's subscriber, by campaign (index_contacts): its contact with
    # campaign ci is in slot cidx_slot[ci] when cidx_stamp[ci] == cidx_gen. Built once an
    # event for a subscriber with several contacts; cidx_valid is 0 from a growth of the
    # contact table on (slots moved) to the next build.
    uint32_t* cidx_stamp        # [nr_campaigns]
    uint64_t* cidx_slot         # [nr_campaigns]
    uint32_t cidx_gen
    int cidx_valid
    # The campaigns the event's subscriber has an action waiting for (index_pending): ci
    # when pidx_stamp[ci] == pidx_gen. Built once an event for a subscriber with several
    # waiting; a timer made meanwhile is one of a campaign the loop has passed.
    uint32_t* pidx_stamp        # [nr_campaigns]
    uint32_t pidx_gen
    int64_t utc_offset
    int64_t period_lo[4]        # by PERIOD_*: the UTC ms bounds [lo, hi) of the local period
    int64_t period_hi[4]        # same_period last found a ts in; lo == hi: none (set_policy)
    int64_t today_lo            # the UTC ms bounds [lo, hi) of the local day that today_at
    int64_t today_hi            # last found a ts in, its day number and month_day_of;
    int64_t today_day           # lo == hi: none
    uint32_t today_md
    int32_t quiet_start         # -1: no quiet hours
    int32_t quiet_end
    int64_t min_gap
    uint32_t max_per_day        # 0xFFFFFFFF: no cap
    int32_t unblocked_word      # eligibility bit of "in no policy blacklist"
    uint64_t unblocked_mask
    uint64_t max_pending
    uint32_t global_holdout     # global control when crc32(f"{msisdn}:global") % 10000 < this
    # budgets: campaigns' counts, then channels' (BudgetC), and each channel's daily budget
    BudgetC* budgets            # [nr_campaigns + nr_channels]
    uint64_t* channel_daily     # [nr_channels], NO_BUDGET: none
    int32_t nr_channels
    # max_in_window: the last window_n contact times of each contacted subscriber (never of
    # the others), in a table keyed by subscriber; an entry is window_n + 2 int64 words:
    # subscriber + 1 (0: empty slot), times kept | ring head << 8, then the ring of times
    int32_t window_n            # max_in_window.contacts; 0: no max_in_window
    int64_t window_ms
    int64_t* windows
    uint64_t windows_mask
    uint64_t nr_windows_used
    # contacts
    ContactC* contacts
    uint64_t contacts_mask
    uint64_t nr_contacts
    # (subscriber, campaign) pairs with a timer waiting: keys as in contacts, a multiset
    uint64_t* pending
    uint64_t pending_mask
    uint64_t nr_pending
    uint64_t pending_gone   # slots holding PENDING_GONE
    uint32_t* pending_by_campaign   # keys per campaign: a campaign with none (one that sends
                                    # at once) needs no lookup
    # timers: one run per distinct delay, and a heap for those that come out of order (put
    # back from a checkpoint or a reload); the sources with timers are ordered by their first
    # in a small heap of their own
    uint64_t nr_timers          # every timer waiting, in the runs and the heap
    int64_t next_due            # the first one's due; INT64_MAX when none waits
    TimerC* heap
    uint64_t heap_n
    uint64_t heap_cap
    TimerRunC* runs
    int32_t nr_runs             # the heap is source nr_runs
    int32_t src_n
    int32_t* src_heap           # sources with timers, a min-heap by their first timer
    int32_t* src_pos            # a source's place in src_heap, -1 when it has none
    TimerKeyC* src_first        # each source's first timer's (due, created, subscriber), if any
    uint64_t timers_created
    # clock and sequences
    int64_t clock
    int has_clock
    uint64_t seq
    uint64_t conversion_seq
    # output buffers
    ActionC* actions
    uint64_t nr_actions
    uint64_t cap_actions
    ConversionC* conversions
    uint64_t nr_conversions
    uint64_t cap_conversions
    DeadLetterC* dead
    uint64_t nr_dead
    uint64_t cap_dead
    DeadRunC run                # the stream's open run of identical bad values
    uint64_t max_dead_letters   # records per span of 2**DEAD_SPAN_BITS stream bytes
    # statistics
    uint64_t* funnel            # [campaign * NR_FUNNEL]
    uint64_t bad[NR_REASONS]
    uint64_t bad_field[NR_REASONS][NR_FIELDS + 1]   # the same by field; NR_FIELDS: the whole value
    uint64_t bad_bytes          # the stream's bytes inside bad values: a damaged header can make
                                # one bad value of many events, which the count alone hides
    uint64_t bad_largest        # the stream's largest bad value (bytes; 0: none) and where it
    uint64_t bad_largest_offset # starts, the first of that size: where a damaged header is
    uint64_t events
    uint64_t unknown
    uint64_t late               # good events whose ts was below the clock (they take the clock)
    uint64_t by_type[64]
    int oom
    # changes since the last checkpoint, kept only while tracking: an incremental checkpoint
    # then writes what changed, not every row. A subscriber is listed once (SUB_CHANGED in its
    # row says so); contact slots have a bit each, all set after the table moved (it grew).
    int tracking
    uint32_t* changed_subs      # [nr_subscribers + 1]
    uint64_t nr_changed
    uint64_t* changed_contacts  # bit per contact slot
    int all_contacts_changed
    # the cold paths (_explain.pxi): what happens to watched subscribers, for `explain`, and
    # the contacts one campaign loses to another through the policy, for `diff`. Both NULL
    # unless asked for, so the hot path pays one test of a pointer per event, timer or
    # policy suppression.
    uint64_t* watch_bits        # bit per subscriber index
    ExplainC* explain
    uint64_t nr_explain
    uint64_t cap_explain
    uint64_t* takers            # [(campaign * (nr_campaigns + 1) + taker) * NR_TAKER_RULES + rule]
    # Shards (issue 14, _shard.pxi): one of nshards workers, each with the state of the
    # subscribers shard_of gives it, all decoding the whole stream. NULL shm: one process.
    # The key of the work being done (cur_*) orders every action of every worker (SPEC §3:
    # the event's position, then timers by due and creation, then the event's campaigns).
    uint8_t* shm                # the workers' shared block: header, then one lane each
    int32_t nshards
    int32_t shard
    size_t lane_stride
    uint64_t ring_mask          # ring of pending counts by event position, per lane
    uint64_t delayed_campaigns  # the most timers one event can create
    int64_t horizon_pub         # every pending timer due by then is in the lane's soon counts
    uint32_t* owner_cnt         # [nshards * nr_classes]: the events of each worker's subscribers so
                                # far, by class of event type (mod 2^32)
    uint32_t* owner_ring        # [SHARD_OWNER_SLOTS * nshards * nr_classes]: owner_cnt after every 256th event
    uint32_t nr_classes         # classes of event types counted (shard_classes), at least 1
    uint8_t type_class[64]      # the class of each event type, SHARD_NO_CLASS: not counted
    uint32_t* chan_class        # [nr_channels * nr_classes]: a channel's campaigns that trigger on a class
    uint64_t owner_from         # the first snapshot written since the worker attached
    uint64_t owner_next         # the next snapshot to write (snapshot b is owner_cnt after event 256 * b)
    uint8_t popped_soon         # timer_pop's timer was counted soon (a run's front, or the heap)
    uint64_t skew_until         # events below this position may start without looking
    uint64_t shard_fired        # the last event whose timers have fired (0: none yet)
    uint64_t pub_pos            # the key this worker last published in its lane
    int64_t pub_due
    uint64_t pub_created
    uint32_t yield_rounds       # a wait gives its core away this many rounds before it sleeps
    uint64_t cur_pos
    int64_t cur_due
    uint64_t cur_created
    uint64_t created_event      # the event position the timers of created_idx belong to
    uint64_t created_idx
    ActionKeyC* akeys           # the key of each action in the buffer, while sharded
    uint64_t cap_akeys
    uint64_t* cpos              # the event position of each conversion, while sharded
    uint64_t cap_cpos
    int aborted                 # the coordinator stopped the run (a worker failed)
    uint64_t shard_waits        # decisions that waited for the other workers (budgets, max_pending)
    uint64_t shard_waited       # of them, those where another worker was not there yet
    uint64_t shard_certain      # budgeted sends allowed without waiting
    uint64_t shard_decided      # budgeted decisions whose wait the bound ended before the others got there
    uint64_t shard_held         # events that waited for the slowest worker (the ring's length)
    uint64_t shard_wait_ns      # time spent in every kind of wait for the others
