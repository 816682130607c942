# Shards (issue 14, included by _core.pyx after _state.pxi): one of N worker processes, each
# holding the subscribers shard_of gives it and decoding the whole stream, so that all see the
# same clock and fire timers at the same event positions. What subscribers share is decided
# exactly, without rollback (docs/performance.md, "Every core"):
#
# - Budgets. A send of a campaign with a budget, or on a channel with one, waits until every
#   other worker has done all its work that comes before it in SPEC §3's order (its published
#   progress is at or past this key). No worker can have a budgeted send after the key, since
#   that send would wait for this one: so the sum of every worker's counts is the count before
#   the key, as one process would have it.
# - max_pending. Scheduling a timer is certain while the sum of the others' high-water marks,
#   plus the timers they could still create before this event, is below the bound; a worker
#   past this event left its count at it in a ring indexed by event position (no worker
#   starts an event a ring's length past the slowest, so the entry is still there). The
#   timer is refused for certain once this worker's count and those of the workers past the
#   event reach the bound. Otherwise it waits, asking both again as the others move.
#
# Deadlock-free: a waiting worker publishes its own key first, and the smallest waiting key
# always has every other worker at or past it. The coordinator's abort flag ends every wait.

cdef extern from *:
    """
    #include <sched.h>
    #include <time.h>
    typedef struct {
        uint64_t ver;           /* seqlock: odd while the key is being written */
        uint64_t pos;
        int64_t due;
        uint64_t created;
        uint64_t hw;            /* the most timers this worker has had pending */
        uint64_t bver;          /* seqlock of the budget counts that follow the lane */
        uint64_t pend;          /* timers pending now */
        uint64_t ring_upto;     /* the ring holds the counts of the events below this one */
    } sm_lane;
    static inline void sm_begin(uint64_t *ver) {
        __atomic_store_n(ver, *ver + 1, __ATOMIC_RELAXED);
        __atomic_thread_fence(__ATOMIC_RELEASE);
    }
    static inline void sm_end(uint64_t *ver) { __atomic_store_n(ver, *ver + 1, __ATOMIC_RELEASE); }
    /* Copy n bytes written under the seqlock *ver as one consistent whole. */
    static inline void sm_read_copy(uint64_t *ver, void *dst, const void *src, size_t n) {
        uint64_t v1, v2;
        for (;;) {
            v1 = __atomic_load_n(ver, __ATOMIC_ACQUIRE);
            memcpy(dst, src, n);
            __atomic_thread_fence(__ATOMIC_ACQUIRE);
            v2 = __atomic_load_n(ver, __ATOMIC_RELAXED);
            if (v1 == v2 && !(v1 & 1)) return;
        }
    }

    static inline void sm_publish(sm_lane *l, uint64_t pos, int64_t due, uint64_t created) {
        uint64_t v = l->ver;
        __atomic_store_n(&l->ver, v + 1, __ATOMIC_RELAXED);
        __atomic_thread_fence(__ATOMIC_RELEASE);
        __atomic_store_n(&l->pos, pos, __ATOMIC_RELAXED);
        __atomic_store_n(&l->due, due, __ATOMIC_RELAXED);
        __atomic_store_n(&l->created, created, __ATOMIC_RELAXED);
        __atomic_store_n(&l->ver, v + 2, __ATOMIC_RELEASE);
    }
    /* Whether the lane's published key is at or past (pos, due, created). */
    static inline int sm_reached(sm_lane *l, uint64_t pos, int64_t due, uint64_t created) {
        uint64_t v1, v2, p, c;
        int64_t d;
        for (;;) {
            v1 = __atomic_load_n(&l->ver, __ATOMIC_ACQUIRE);
            p = __atomic_load_n(&l->pos, __ATOMIC_RELAXED);
            d = __atomic_load_n(&l->due, __ATOMIC_RELAXED);
            c = __atomic_load_n(&l->created, __ATOMIC_RELAXED);
            __atomic_thread_fence(__ATOMIC_ACQUIRE);
            v2 = __atomic_load_n(&l->ver, __ATOMIC_RELAXED);
            if (v1 == v2 && !(v1 & 1)) break;
        }
        if (p != pos) return p > pos;
        if (d != due) return d > due;
        return c >= created;
    }
    /* Monotonic nanoseconds: read only when a worker starts or ends a wait. */
    static inline uint64_t sm_now_ns(void) {
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        return (uint64_t)t.tv_sec * 1000000000ULL + (uint64_t)t.tv_nsec;
    }
    static inline uint64_t sm_load(uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
    static inline void sm_store(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
    /* Waiting: the other worker is usually a few events behind, so spin first; then give
       the core away, which costs nothing when no other process wants it and lets the one
       waited for run when there are more workers than cores; sleep only when the wait
       is long (a worker loading, or stopped), so that it costs no CPU. A sleep at every
       wait would cost more than the work: 50 us against the microseconds a wait lasts.
       Workers on several hosts (engine.workers.cluster) wait milliseconds for a copy of the
       others' lanes, and the thread that copies them needs the core: they sleep sooner. */
    static inline void sm_pause(uint32_t round, uint32_t yields) {
        if (round < 512) {
    #if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
    #elif defined(__aarch64__)
            __asm__ volatile("yield");
    #endif
            return;
        }
        if (round < 512 + yields) { sched_yield(); return; }
        struct timespec ts = {0, 50000};
        nanosleep(&ts, NULL);
    }
    """
    ctypedef struct sm_lane:
        uint64_t ver
        uint64_t pos
        int64_t due
        uint64_t created
        uint64_t hw
        uint64_t bver
        uint64_t pend
        uint64_t ring_upto
    void sm_begin(uint64_t* ver) nogil
    void sm_end(uint64_t* ver) nogil
    void sm_read_copy(uint64_t* ver, void* dst, const void* src, size_t n) nogil
    void sm_publish(sm_lane* l, uint64_t pos, int64_t due, uint64_t created) nogil
    int sm_reached(sm_lane* l, uint64_t pos, int64_t due, uint64_t created) nogil
    uint64_t sm_load(uint64_t* p) nogil
    uint64_t sm_now_ns() nogil
    void sm_store(uint64_t* p, uint64_t v) nogil
    void sm_pause(uint32_t round, uint32_t yields) nogil

cdef enum:
    SHARD_HEADER = 64           # the block's header: the abort flag
    SHARD_LANE_HEAD = 64        # sm_lane, one cache line
    SHARD_MAX = 256
    SHARD_PUBLISH_EVERY = 32    # events between two publications of a worker's progress
    SHARD_SOON_MS = 60000       # how far past the clock a worker counts its timers as due soon
    SHARD_OWNER_EVERY = 256     # events between two snapshots of the events by worker
    SHARD_OWNER_SLOTS = 8192    # snapshots kept: 2^21 events, past the ring's 2^20 of skew
    SHARD_BOUND_EVERY = 8       # rounds of a budgeted send's wait between two askings of the bound
    SHARD_NO_CLASS = 255        # an event type no budgeted campaign triggers on: not counted
    SHARD_CLASS_CAP = 512       # classes * workers past which the classes are merged into one
                                # (the counts' ring: 4 bytes * 8,192 * this, 16 MiB per worker)

cdef extern from *:
    """
    #define SM_SHARD_EVENT_DUE 0x7FFFFFFFFFFFFFFFLL
    #define SM_SHARD_END 0xFFFFFFFFFFFFFFFFULL
    #define SM_FOREIGN_INDEX 0xFFFFFFFEu
    """
    const int64_t SHARD_EVENT_DUE "SM_SHARD_EVENT_DUE"  # an event's campaigns come after its timers
    const uint64_t SHARD_END "SM_SHARD_END"             # a lane that has finished
    const uint32_t FOREIGN_INDEX "SM_FOREIGN_INDEX"     # another worker's subscriber (NO_INDEX - 1)


cdef inline size_t shard_ring_off(uint64_t nr_budgets) noexcept nogil:
    # the lane's head, its budget counts, the timers pending by budget, of them those due
    # soon, the horizon of "soon", then the ring
    return (SHARD_LANE_HEAD + nr_budgets * (sizeof(BudgetC) + 2 * sizeof(uint64_t)) + sizeof(uint64_t)
            + 63) & ~(<size_t>63)


cdef inline size_t shard_lane_stride(uint64_t nr_budgets, uint64_t ring) noexcept nogil:
    return (shard_ring_off(nr_budgets) + ring * sizeof(uint64_t) + 63) & ~(<size_t>63)


cdef inline sm_lane* lane_of(EngineC* E, int j) noexcept nogil:
    return <sm_lane*>(E.shm + SHARD_HEADER + <size_t>j * E.lane_stride)


cdef inline BudgetC* lane_budgets(EngineC* E, int j) noexcept nogil:
    return <BudgetC*>((<uint8_t*>lane_of(E, j)) + SHARD_LANE_HEAD)


cdef inline uint64_t* lane_pend(EngineC* E, int j) noexcept nogil:
    """Worker j's timers pending by budget: [campaign] its own, [nr_campaigns + channel] its
    channel's campaigns'."""
    return <uint64_t*>((<uint8_t*>lane_budgets(E, j))
                       + <size_t>(E.nr_campaigns + E.nr_channels) * sizeof(BudgetC))


cdef inline uint64_t* lane_soon(EngineC* E, int j) noexcept nogil:
    """Worker j's timers pending by budget that are due by its horizon (lane_horizon)."""
    return lane_pend(E, j) + <size_t>(E.nr_campaigns + E.nr_channels)


cdef inline uint64_t* lane_horizon(EngineC* E, int j) noexcept nogil:
    """Worker j's horizon (an int64 time, ms): every timer of its pending then and due by it
    is in lane_soon. 0: none published (a lane copied from another host, shard_import)."""
    return lane_soon(E, j) + <size_t>(E.nr_campaigns + E.nr_channels)


cdef inline uint64_t* lane_ring(EngineC* E, int j) noexcept nogil:
    return <uint64_t*>((<uint8_t*>lane_of(E, j)) + shard_ring_off(<uint64_t>(E.nr_campaigns + E.nr_channels)))


cdef inline uint32_t shard_of(uint64_t msisdn, uint32_t n) noexcept nogil:
    """The worker of a subscriber: stable, and independent of the index's hash (whose high
    bits place it), so a worker's index stays evenly filled. engine._core.shards_of gives it
    for an array (compile_core picks a worker's subscribers with it)."""
    return <uint32_t>sm_fastrange(sm_mix64(msisdn ^ 0x5bd1e9955bd1e995ULL), n)


cdef inline bint foreign(EngineC* E, uint64_t msisdn) noexcept nogil:
    """Another worker's subscriber (never, in one process)."""
    return E.shm != NULL and shard_of(msisdn, <uint32_t>E.nshards) != <uint32_t>E.shard


cdef inline bint shard_abort_set(EngineC* E) noexcept nogil:
    return sm_load(<uint64_t*>E.shm) != 0


cdef inline void shard_publish(EngineC* E, uint64_t pos, int64_t due, uint64_t created) noexcept nogil:
    """Say in this worker's lane that its work before (pos, due, created) is done, unless it
    said more already: a key never goes back, or a worker that saw it past its own could
    find it behind again and wait for one that waits for it."""
    if pos < E.pub_pos or (pos == E.pub_pos and (due < E.pub_due or (due == E.pub_due
                                                                     and created <= E.pub_created))):
        return
    E.pub_pos = pos
    E.pub_due = due
    E.pub_created = created
    sm_store(&lane_of(E, E.shard).ring_upto, E.shard_fired + 1)
    sm_publish(lane_of(E, E.shard), pos, due, created)


cdef inline void shard_publish_fired(EngineC* E) noexcept nogil:
    """Publish the progress held back since the last publication (shard_event_timers_done):
    before this worker waits for another, and when a chunk of the stream is done."""
    if E.shard_fired:
        shard_publish(E, E.shard_fired, SHARD_EVENT_DUE, 0)


cdef int shard_wait(EngineC* E, uint64_t pos, int64_t due, uint64_t created) noexcept nogil:
    """Publish this worker's key, then wait until every other worker is at or past it.
    Returns 1 (and stops the run) when the coordinator aborted."""
    cdef int j
    cdef uint32_t round
    cdef bint waited = False
    cdef uint64_t since = 0
    shard_publish(E, pos, due, created)
    E.shard_waits += 1
    for j in range(E.nshards):
        if j == E.shard:
            continue
        round = 0
        while not sm_reached(lane_of(E, j), pos, due, created):
            if not waited:
                waited = True
                E.shard_waited += 1
                since = sm_now_ns()
            if shard_abort_set(E):
                E.aborted = 1
                E.oom = 1
                return 1
            sm_pause(round, E.yield_rounds)
            round += 1
    if waited:
        E.shard_wait_ns += sm_now_ns() - since
    return 0


cdef void shard_tick(EngineC* E) noexcept nogil:
    """Count in the lane the timers due by a new horizon, SHARD_SOON_MS past the clock, then
    publish it: a worker bounding what this one may still send before its own key counts only
    the timers due by its clock, those in lane_soon, when its clock is within the horizon.
    A run's timers are in due order, so each run's counted ones are its first `soon`; a
    heap's (a checkpoint's, a reload's) were all counted when the worker attached."""
    cdef int32_t s
    cdef TimerRunC* r
    cdef TimerC* t
    cdef uint64_t* soon = lane_soon(E, E.shard)
    cdef int64_t horizon = E.clock + SHARD_SOON_MS if E.clock < INT64_MAX - SHARD_SOON_MS else INT64_MAX
    for s in range(E.nr_runs):
        r = &E.runs[s]
        while r.soon < r.n:
            t = run_at(r, r.soon)
            if t.due > horizon:
                break
            lane_add(E, soon, t.campaign, 1)
            r.soon += 1
    E.horizon_pub = horizon
    # 0 says "none published": a horizon of 0 is said as -1, which claims less, not more
    sm_store(lane_horizon(E, E.shard), <uint64_t>horizon if horizon != 0 else <uint64_t>(-1))


cdef int shard_classes(EngineC* E, int nshards) noexcept nogil:
    """Number the event types a budgeted campaign triggers on (type_class), and say which
    classes each campaign triggers on (class_mask) and how many campaigns of each channel
    trigger on each class (chan_class): a worker counts the other workers' events by class,
    and an event of a class no campaign of a budget triggers on cannot spend it. Past
    SHARD_CLASS_CAP classes times workers, the classes are merged into one (the bound counts
    every event of a counted type, as before classes). Called when a worker attaches; the
    campaigns and channels are set. Returns 1 when memory ran out."""
    cdef uint32_t t, i, k, nr = 0
    cdef uint32_t ci
    cdef uint64_t m
    cdef CampaignC* c
    for t in range(64):
        E.type_class[t] = SHARD_NO_CLASS
        for i in range(E.by_type_off[t], E.by_type_off[t + 1]):
            c = &E.campaigns[E.trig_list[i]]
            if (c.daily_budget != NO_BUDGET or c.total_budget != NO_BUDGET
                    or E.channel_daily[c.channel] != NO_BUDGET):
                E.type_class[t] = <uint8_t>nr
                nr += 1
                break
    if nr * <uint32_t>nshards > SHARD_CLASS_CAP:
        for t in range(64):
            if E.type_class[t] != SHARD_NO_CLASS:
                E.type_class[t] = 0
        nr = 1
    E.nr_classes = nr if nr else 1
    free(E.chan_class)
    E.chan_class = <uint32_t*>calloc(<size_t>(E.nr_channels if E.nr_channels else 1) * E.nr_classes,
                                     sizeof(uint32_t))
    if E.chan_class == NULL:
        return 1
    for ci in range(<uint32_t>E.nr_campaigns):
        E.campaigns[ci].class_mask = 0
    for t in range(64):
        if E.type_class[t] != SHARD_NO_CLASS:
            for i in range(E.by_type_off[t], E.by_type_off[t + 1]):
                E.campaigns[E.trig_list[i]].class_mask |= 1ULL << E.type_class[t]
    for ci in range(<uint32_t>E.nr_campaigns):
        c = &E.campaigns[ci]
        m = c.class_mask
        while m:
            k = sm_ctz64(m)
            m &= m - 1
            E.chan_class[<size_t>c.channel * E.nr_classes + k] += 1
    return 0


cdef inline void shard_owner_snapshot(EngineC* E, uint64_t q) noexcept nogil:
    """At the start of event q, before its timers: when q - 1 is a multiple of
    SHARD_OWNER_EVERY, keep the events by worker and class as they stand after event q - 1."""
    cdef uint64_t b
    cdef size_t width = <size_t>E.nshards * E.nr_classes
    if (q - 1) % SHARD_OWNER_EVERY == 0:
        b = (q - 1) // SHARD_OWNER_EVERY
        memcpy(E.owner_ring + (b % SHARD_OWNER_SLOTS) * width, E.owner_cnt, width * sizeof(uint32_t))
        E.owner_next = b + 1


cdef inline void shard_note_owner(EngineC* E, uint64_t msisdn, uint32_t sub, int32_t type) noexcept nogil:
    """Count this event for the worker whose subscriber it is, by the class of its type, when
    another's (this worker's own are never asked for) and a budgeted campaign triggers on
    its type: a worker bounding what another may still send counts that one's events since
    its position (shard_budgets). Not only FOREIGN_INDEX: an event cut by a chunk's end is
    looked up in this worker's index alone (Core.feed's carry), and another worker's
    subscriber then comes as NO_INDEX; a count missed would be a bound too low."""
    cdef uint32_t j
    cdef uint8_t k
    if sub >= FOREIGN_INDEX:
        k = E.type_class[type & 63]
        if k != SHARD_NO_CLASS:
            j = shard_of(msisdn, <uint32_t>E.nshards)
            if j != <uint32_t>E.shard:
                E.owner_cnt[j * E.nr_classes + k] += 1


cdef inline void shard_lags(EngineC* E, int j, uint64_t p, uint64_t q, CampaignC* c, uint64_t* camp_lag,
                            uint64_t* chan_lag) noexcept nogil:
    """Add to camp_lag at most how many sends of campaign c worker j (at position p <= q)
    can still make at its own events before this key, at event q, and to chan_lag at most
    how many of c's channel: its events from the last snapshot at or before p - 1 up to
    q - 1 (event q's campaigns come after every key of q that decides a send: its own
    worker's, or timers before them), of the classes c triggers on (of each class, times
    the channel's campaigns that trigger on it), plus one event's worth. Where no snapshot
    covers p - 1 (p at the start, or past the slots kept), every event up to q counts, each
    for one send of c and one of each campaign of the channel: q - p + 1, which is also
    taken when it is smaller (a worker close behind, whose events since the count run up
    to 255 more)."""
    cdef uint64_t b, own = 0, own_chan = 0, d, every = q - p + 1
    cdef uint32_t k, nr = E.nr_classes
    cdef uint32_t* now
    cdef uint32_t* then
    cdef uint32_t* per
    if p == 0:
        camp_lag[0] += every
        chan_lag[0] += every * c.channel_campaigns
        return
    b = (p - 1) // SHARD_OWNER_EVERY
    if b < E.owner_from or b >= E.owner_next or E.owner_next - b >= SHARD_OWNER_SLOTS:
        camp_lag[0] += every
        chan_lag[0] += every * c.channel_campaigns
        return
    now = E.owner_cnt + <size_t>j * nr
    then = E.owner_ring + ((b % SHARD_OWNER_SLOTS) * <uint64_t>E.nshards + <uint64_t>j) * nr
    per = E.chan_class + <size_t>c.channel * nr
    for k in range(nr):
        d = <uint64_t>(<uint32_t>(now[k] - then[k]))
        if (c.class_mask >> k) & 1:
            own += d
        own_chan += d * per[k]
    camp_lag[0] += own + 1 if own + 1 < every else every
    chan_lag[0] += (own_chan + c.channel_campaigns if own_chan + c.channel_campaigns < every * c.channel_campaigns
                    else every * c.channel_campaigns)


cdef void shard_event_start(EngineC* E, uint64_t q) noexcept nogil:
    """Before event q: never more than a ring's length ahead of the slowest worker, so that
    the pending count this worker leaves for q is still in its ring when another reads it."""
    cdef int j
    cdef uint64_t low, p
    cdef uint32_t round = 0
    cdef uint64_t since = 0
    shard_owner_snapshot(E, q)
    if E.horizon_pub == INT64_MIN or E.clock > E.horizon_pub - SHARD_SOON_MS // 2:
        shard_tick(E)
    if q < E.skew_until:
        return
    while True:
        low = SHARD_END
        for j in range(E.nshards):
            if j != E.shard:
                p = sm_load(&lane_of(E, j).pos)
                if p < low:
                    low = p
        if low == SHARD_END or q < low + E.ring_mask:
            E.skew_until = SHARD_END if low == SHARD_END else low + E.ring_mask
            if round:
                E.shard_wait_ns += sm_now_ns() - since
            return
        if round == 0:
            shard_publish_fired(E)      # the slowest may be waiting for this worker
            E.shard_held += 1
            since = sm_now_ns()
        if shard_abort_set(E):
            E.aborted = 1
            E.oom = 1
            return
        sm_pause(round, E.yield_rounds)
        round += 1


cdef inline void shard_event_timers_done(EngineC* E, uint64_t q) noexcept nogil:
    """Event q's timers have fired: leave the pending count for q, and say so every
    SHARD_PUBLISH_EVERY events rather than at each: while another worker reads the lane (a
    wait spins on it), each store must fetch its cache line back. (On 16 cores this did not
    change a worker's stream, 24.6 against 23.9 s: that floor lies elsewhere; it spares the
    event's path two fenced stores.) An older key only makes the others wait longer or
    decide on safer bounds; every wait publishes first, so no wait waits on a key held back."""
    lane_ring(E, E.shard)[q & E.ring_mask] = E.nr_timers
    E.shard_fired = q
    if (q & (SHARD_PUBLISH_EVERY - 1)) == 0:
        shard_publish(E, q, SHARD_EVENT_DUE, 0)


cdef inline void shard_note_pending(EngineC* E) noexcept nogil:
    """A timer was created or fired: the others bound what this worker may still do with it."""
    cdef sm_lane* me = lane_of(E, E.shard)
    sm_store(&me.pend, E.nr_timers)
    if E.nr_timers > me.hw:
        sm_store(&me.hw, E.nr_timers)


cdef inline void lane_add(EngineC* E, uint64_t* counts, uint32_t ci, int delta) noexcept nogil:
    """Add delta to a timer count of this worker's lane by budget: campaign ci's and its
    channel's (the only writer of its lane, so a plain read of the old value is the value)."""
    cdef uint32_t ch = <uint32_t>E.nr_campaigns + E.campaigns[ci].channel
    sm_store(&counts[ci], counts[ci] + <uint64_t>delta)
    sm_store(&counts[ch], counts[ch] + <uint64_t>delta)


cdef inline void shard_note_timers(EngineC* E, uint32_t ci, int delta, bint soon) noexcept nogil:
    """Campaign ci made a timer (delta 1), or one fired and its send, if any, is counted
    (delta -1); `soon`: it is (was) counted due soon too. The others bound what this worker
    may still send into ci's budgets and its channel's with these counts (shard_budgets)."""
    if soon:
        lane_add(E, lane_soon(E, E.shard), ci, delta)
    lane_add(E, lane_pend(E, E.shard), ci, delta)


cdef int pending_bound(EngineC* E, uint64_t q) noexcept nogil:
    """What the lanes say now of all workers' timers waiting at event q's campaigns against
    max_pending: 0 below it for certain, 1 at or over it for certain, 2 not known yet. A
    worker at or past q's campaigns left its count at q in its ring (exact); one not yet there
    has at most its high-water mark, plus what the events it has yet to process before q could
    create, and at least none. Every reading holds at any moment, so a wait may end on any."""
    cdef int j
    cdef uint64_t high = E.nr_timers, low = E.nr_timers, p, hw, at
    cdef sm_lane* lane
    for j in range(E.nshards):
        if j == E.shard:
            continue
        lane = lane_of(E, j)
        p = sm_load(&lane.pos)          # before hw: hw is then at least what it was at p
        # a lane whose key is this event's (its timers here fired, as at the end of a
        # service's piece) has left its count too, and may stay there until this one moves
        if p > q or sm_reached(lane, q, SHARD_EVENT_DUE, 0):
            at = lane_ring(E, j)[q & E.ring_mask]
            high += at
            low += at
            continue
        hw = sm_load(&lane.hw)
        high += hw + (q - p) * E.delayed_campaigns
    if high < E.max_pending:
        return 0
    if low >= E.max_pending:
        return 1
    return 2


cdef int shard_over_pending(EngineC* E) noexcept nogil:
    """Whether all workers together have max_pending timers waiting at this event's campaigns
    (SPEC §3 step 6): 1 yes, 0 no, -1 aborted. Decided by the lanes when they can tell;
    otherwise the worker publishes its key and waits, asking them again every few rounds,
    until they tell (at the latest once every other worker is past the event, when each
    count is exact). (Until 2026-12-05 such a wait always ran until every other was past.)"""
    cdef uint64_t q = E.cur_pos, since = 0
    cdef uint32_t round = 0
    cdef int decided = pending_bound(E, q)
    if decided != 2:
        return decided
    shard_publish(E, q, SHARD_EVENT_DUE, 0)
    E.shard_waits += 1
    E.shard_waited += 1
    since = sm_now_ns()
    while True:
        round += 1
        if shard_abort_set(E):
            E.aborted = 1
            E.oom = 1
            return -1
        sm_pause(round, E.yield_rounds)
        # asked only every few rounds: each read pulls lines the others are writing
        if round % SHARD_BOUND_EVERY == 0:
            decided = pending_bound(E, q)
            if decided != 2:
                E.shard_wait_ns += sm_now_ns() - since
                return decided


cdef inline void shard_add_counts(EngineC* E, int j, uint32_t ci, uint32_t ch, int64_t day, uint64_t* camp_day,
                                  uint64_t* camp_total, uint64_t* chan_day) noexcept nogil:
    cdef BudgetC b[2]
    if j == E.shard:
        b[0] = E.budgets[ci]
        b[1] = E.budgets[ch]
    else:
        sm_read_copy(&lane_of(E, j).bver, &b[0], &lane_budgets(E, j)[ci], sizeof(BudgetC))
        sm_read_copy(&lane_of(E, j).bver, &b[1], &lane_budgets(E, j)[ch], sizeof(BudgetC))
    camp_day[0] += b[0].day_sends if b[0].day == day else 0
    camp_total[0] += b[0].total
    chan_day[0] += b[1].day_sends if b[1].day == day else 0


cdef int shard_bound(EngineC* E, uint32_t ci, int64_t day, uint64_t* camp_day, uint64_t* camp_total,
                     uint64_t* chan_day) noexcept nogil:
    """Whether the lanes as they stand now decide campaign ci's send at this key, the
    counts set so that the caller decides it: 1 a refusal (on counts below the true ones),
    2 a send (on bounds that stay below every budget), 0 not yet. Sound at any moment of this worker's
    wait at the key, so a wait asks it again as the others move (shard_budgets).

    What the lanes hold now is a lower bound of the counts before this key, as far as it can
    decide a refusal: a worker sends only after every other is past its send, or when it
    cannot cross a budget whatever comes before it (below), and then this key's send, were
    it allowed, was counted in its bound. So a budget the lanes already reach is spent here.
    An upper bound adds what each worker not yet past this event could still send before it:
    its pending timers of this campaign (of its channel's campaigns), and for each event it
    has yet to process one send of this campaign (of each campaign of its channel). When
    even that stays below every budget, the send is allowed without waiting; it may not
    start a new local day in this worker's lane, so that a lane never shows a day later
    than that of a key some worker is still deciding."""
    cdef int j
    cdef CampaignC* c = &E.campaigns[ci]
    cdef uint32_t ch = <uint32_t>E.nr_campaigns + c.channel
    cdef uint64_t q = E.cur_pos, p, pend = 0, chan_pend = 0, lag = 0, chan_lag = 0, slack, chan_slack, horizon
    cdef uint64_t* pb
    camp_day[0] = camp_total[0] = chan_day[0] = 0
    for j in range(E.nshards):
        if j != E.shard:
            # progress, then pending, then the counts: anything done between two reads is
            # then counted at least once
            p = sm_load(&lane_of(E, j).pos)
            if p <= q:
                # a timer that fires before this key is due by this clock: within the
                # other's horizon, only its timers due soon can
                horizon = sm_load(lane_horizon(E, j))
                pb = lane_soon(E, j) if horizon != 0 and E.clock <= <int64_t>horizon else lane_pend(E, j)
                pend += sm_load(&pb[ci])
                chan_pend += sm_load(&pb[ch])
                shard_lags(E, j, p, q, c, &lag, &chan_lag)
        shard_add_counts(E, j, ci, ch, day, camp_day, camp_total, chan_day)
    # A pending timer sends at most once, into its own campaign's and channel's budgets, and
    # at each event of a type it triggers on a campaign either sends or makes one timer: so
    # the events still to process can add one send each to this campaign's counts when of a
    # type it triggers on, and one per campaign of its channel that triggers on the type to
    # the channel's (shard_lags). (Until 2026-12-04 every budget took every campaign's share
    # and every timer: on L with 16 workers a worker waited at 16,000 sends, 8 of its 21 s
    # of stream; on M with 2, 88% of the waits were for timers of other campaigns. Until
    # 2026-12-04, evening, every event counted, whatever its type.)
    slack = pend + lag
    chan_slack = chan_pend + chan_lag
    if camp_day[0] >= c.daily_budget or camp_total[0] >= c.total_budget:
        return 1
    if (c.daily_budget == NO_BUDGET and c.total_budget == NO_BUDGET
            and chan_day[0] >= E.channel_daily[c.channel]):
        return 1
    if (E.budgets[ci].day == day and E.budgets[ch].day == day
            and (c.daily_budget == NO_BUDGET or camp_day[0] + slack < c.daily_budget)
            and (c.total_budget == NO_BUDGET or camp_total[0] + slack < c.total_budget)
            and (E.channel_daily[c.channel] == NO_BUDGET
                 or chan_day[0] + chan_slack < E.channel_daily[c.channel])):
        return 2
    return 0


cdef int shard_budgets(EngineC* E, uint32_t ci, int64_t day, uint64_t* camp_day, uint64_t* camp_total,
                       uint64_t* chan_day) noexcept nogil:
    """A budgeted send's counts before it, over every worker (SPEC §3 step 7), or bounds of
    them that decide it as surely (shard_bound). Returns 1 when the coordinator aborted.
    Otherwise the worker waits at its key until every other is past it, and sums the lanes;
    or until the bound decides the send as the others move, which is as exact: a worker
    waits for another's last events only when they can change the outcome. (Until
    2026-12-04 a wait always ran until every other was past the key.)"""
    cdef int j, first = 0, decided
    cdef uint32_t round = 0
    cdef uint64_t since = 0
    decided = shard_bound(E, ci, day, camp_day, camp_total, chan_day)
    if decided:
        E.shard_certain += decided == 2
        return 0
    shard_publish(E, E.cur_pos, E.cur_due, E.cur_created)
    E.shard_waits += 1
    while True:
        # the others' keys never go back: one found past this key stays past it
        while first < E.nshards and (first == E.shard
                                     or sm_reached(lane_of(E, first), E.cur_pos, E.cur_due, E.cur_created)):
            first += 1
        if first == E.nshards:
            break
        if round == 0:
            E.shard_waited += 1
            since = sm_now_ns()
        elif round % SHARD_BOUND_EVERY == 0 and shard_bound(E, ci, day, camp_day, camp_total, chan_day):
            # asked only every few rounds: each read pulls lines the others are writing
            E.shard_decided += 1
            E.shard_wait_ns += sm_now_ns() - since
            return 0
        if shard_abort_set(E):
            E.aborted = 1
            E.oom = 1
            return 1
        sm_pause(round, E.yield_rounds)
        round += 1
    if round:
        E.shard_wait_ns += sm_now_ns() - since
    camp_day[0] = camp_total[0] = chan_day[0] = 0
    for j in range(E.nshards):
        shard_add_counts(E, j, ci, <uint32_t>E.nr_campaigns + E.campaigns[ci].channel, day, camp_day,
                         camp_total, chan_day)
    return 0


cdef inline void shard_mirror(EngineC* E, uint32_t ci) noexcept nogil:
    """A send counted: the others read this worker's counts of the budgets it touches from
    its lane (shard_budgets)."""
    cdef CampaignC* c = &E.campaigns[ci]
    cdef uint32_t ch = <uint32_t>E.nr_campaigns + c.channel
    cdef sm_lane* me = lane_of(E, E.shard)
    if c.daily_budget == NO_BUDGET and c.total_budget == NO_BUDGET and E.channel_daily[c.channel] == NO_BUDGET:
        return
    sm_begin(&me.bver)
    lane_budgets(E, E.shard)[ci] = E.budgets[ci]
    lane_budgets(E, E.shard)[ch] = E.budgets[ch]
    sm_end(&me.bver)


cdef inline uint64_t shard_timer_created(EngineC* E) noexcept nogil:
    """A timer's creation, comparable across workers: its event's position, then the order
    of its campaign in that event (one process orders them the same way, by a counter)."""
    if E.created_event != E.cur_pos:
        E.created_event = E.cur_pos
        E.created_idx = 0
    E.created_idx += 1
    return (E.cur_pos << 16) | E.created_idx


cdef int shard_note_action(EngineC* E) noexcept nogil:
    """The key of the action just added to the buffer. Returns 1 when memory ran out."""
    cdef ActionKeyC* k
    if E.nr_actions > E.cap_akeys:
        E.akeys = <ActionKeyC*>grow(E.akeys, &E.cap_akeys, sizeof(ActionKeyC), &E.oom)
        if E.oom:
            return 1
    k = &E.akeys[E.nr_actions - 1]
    k.pos = E.cur_pos
    k.due = E.cur_due
    k.created = E.cur_created
    return 0


cdef int shard_note_conversion(EngineC* E) noexcept nogil:
    if E.nr_conversions > E.cap_cpos:
        E.cpos = <uint64_t*>grow(E.cpos, &E.cap_cpos, sizeof(uint64_t), &E.oom)
        if E.oom:
            return 1
    E.cpos[E.nr_conversions - 1] = E.cur_pos
    return 0
