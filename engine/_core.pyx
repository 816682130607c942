# cython: language_level=3
"""The core: msgpack decoding, the subscriber index, state, compiled campaigns and matching.

Python compiles configuration, profiles and lists into flat tables (engine/compile.py) and
hands them to a `Core`; from then on every event is decoded and matched here, without the GIL
and without touching a Python object. Results go into growable C buffers (actions,
conversions, dead letters) that Python takes once per fed chunk.

Decoder transitions (one top-level msgpack value = one event):

    start of value --array n--> up to 8 positional fields, the rest skipped unread
                   --map n----> n (key, value) pairs; known str keys read, others skipped
                   --other----> skipped whole; dead letter "not_an_event"
    any byte 0xc1             -> DEC_CORRUPT  (stream error)
    a byte needed past the end of the fed data -> DEC_NEED_MORE (resume when more arrives)
    a byte needed past start + max_event_bytes -> DEC_TOO_LARGE (stream error)

TOO_LARGE is checked before NEED_MORE so that the outcome depends only on the bytes of the
stream, never on where it was split into chunks.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int8_t, int16_t, int32_t, int64_t, INT64_MAX, INT64_MIN
from libc.stdlib cimport malloc, calloc, realloc, free, qsort
from libc.string cimport memcpy, memset, memcmp
cimport cython

from collections import Counter
import numpy as np

from engine.records import (
    EVENT_DTYPE, ACTION_DTYPE, CONVERSION_DTYPE, DEAD_LETTER_DTYPE, DEAD_LETTER_BYTES, DEAD_LETTER_SPAN_BITS,
    FUNNEL, FUNNEL_UNNAMED, BAD_REASONS, BAD_FIELDS, STREAM_STATUSES, EXPLAIN_DTYPE, EXPLAIN_LINES,
    MATCH_CONDITIONS, RECHECKS, TAKER_RULES,
)

cdef extern from *:
    """
    #include <stdlib.h>
    #include <string.h>
    #include <sys/mman.h>

    /* Big state arrays come from mmap: zeroed lazily by the kernel, page aligned, and
       eligible for transparent huge pages, which halve the TLB misses of random
       per-subscriber access. Small blocks come from calloc. */
    #define SM_BIG (1u << 20)
    static void *sm_zalloc(size_t n) {
        if (n == 0) n = 1;
        if (n < SM_BIG) return calloc(1, n);
        void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) return NULL;
    #ifdef MADV_HUGEPAGE
        madvise(p, n, MADV_HUGEPAGE);
    #endif
        return p;
    }
    static void sm_free(void *p, size_t n) {
        if (p == NULL) return;
        if (n == 0) n = 1;
        if (n < SM_BIG) free(p); else munmap(p, n);
    }

    /* Zeroed, on a cache-line boundary, freed with free(): arrays whose items are a whole
       number of lines (CampaignC). NULL when memory ran out or n * size overflows. */
    static void *sm_line_calloc(size_t n, size_t size) {
        void *p = NULL;
        if (n == 0) n = 1;
        if (size != 0 && n > (size_t)-1 / size) return NULL;
        if (posix_memalign(&p, 64, n * size) != 0) return NULL;
        memset(p, 0, n * size);
        return p;
    }

    static uint32_t sm_crc_table[256];
    static void sm_crc_init(void) {
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            sm_crc_table[i] = c;
        }
    }
    /* zlib.crc32, resumable: pass the previous result as crc. */
    static uint32_t sm_crc32(uint32_t crc, const uint8_t *p, size_t n) {
        crc = ~crc;
        while (n--) crc = sm_crc_table[(crc ^ *p++) & 0xFF] ^ (crc >> 8);
        return ~crc;
    }
    /* A hash into [0, n) without a power-of-two n: the index can be sized to a fixed load. */
    static inline uint64_t sm_fastrange(uint64_t x, uint64_t n) {
        return (uint64_t)(((unsigned __int128)x * n) >> 64);
    }
    static inline uint64_t sm_mix64(uint64_t x) {
        x ^= x >> 33; x *= 0xff51afd7ed558ccdULL;
        x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ULL;
        x ^= x >> 33;
        return x;
    }
    """
    void* sm_zalloc(size_t n) nogil
    void* sm_line_calloc(size_t n, size_t size) nogil
    void sm_free(void* p, size_t n) nogil
    void sm_crc_init()
    uint32_t sm_crc32(uint32_t crc, const uint8_t* p, size_t n) nogil
    uint64_t sm_mix64(uint64_t x) nogil
    uint64_t sm_fastrange(uint64_t x, uint64_t n) nogil

cdef extern from *:
    """
    #define sm_prefetch(p) __builtin_prefetch((const void *)(p), 1, 3)
    #define sm_prefetch_l2(p) __builtin_prefetch((const void *)(p), 0, 1)
    #define sm_ctz64(x) ((uint32_t)__builtin_ctzll(x))
    """
    void sm_prefetch(const void* p) nogil
    void sm_prefetch_l2(const void* p) nogil
    uint32_t sm_ctz64(uint64_t x) nogil     # x != 0

# `when` sums: at most 32 terms of |coef| < 2^33 times a counter < 2^32, plus a constant, need
# about 71 bits; GCC and Clang have a 128-bit integer on every 64-bit target we build for.
cdef extern from *:
    """
    typedef __int128 sm_int128;
    """
    ctypedef long long sm_int128

sm_crc_init()
# A build defect, caught at import: the matching loop reads line 0 of a CampaignC only when
# the struct is a whole number of lines (engine/_core.pxd)
if sizeof(CampaignC) != 256:
    raise ImportError(f"engine._core: CampaignC is {sizeof(CampaignC)} bytes, not 256")

include "_types.pxi"
include "_decode.pxi"
include "_state.pxi"
include "_shard.pxi"
include "_explain.pxi"
include "_match.pxi"
include "_deadletters.pxi"


cdef object _records(const void* src, uint64_t n, object dtype):
    """A NumPy copy of n C records whose layout is `dtype`."""
    out = np.empty(n, dtype=dtype)
    cdef uint8_t[::1] dst
    if n:
        dst = out.view(np.uint8)
        memcpy(&dst[0], src, n * dtype.itemsize)
    return out


cdef int status_of(int rc) noexcept nogil:
    return ST_CORRUPT if rc == DEC_CORRUPT else ST_TOO_LARGE


cdef void free_candidates(EngineC* E) noexcept nogil:
    """Frees the candidate masks (set_campaigns builds them again, dealloc drops them)."""
    free(E.pos_pool)
    E.pos_pool = NULL
    free(E.elig_union)
    E.elig_union = NULL
    free(E.elig_slot)
    E.elig_slot = NULL
    free(E.flag_slot)
    E.flag_slot = NULL
    free(E.cgrps)
    E.cgrps = NULL
    free(E.cthr)
    E.cthr = NULL
    free(E.cthr_slot)
    E.cthr_slot = NULL
    free(E.area_union)
    E.area_union = NULL
    free(E.area_slot)
    E.area_slot = NULL
    free(E.cand)
    E.cand = NULL


cdef inline void reset_spans(DeadRunC* r) noexcept nogil:
    r.span = 0
    r.span_records = 0


ACTION_KEY_DTYPE = np.dtype([("pos", "<u8"), ("due", "<i8"), ("created", "<u8")])
# TimerC and ContactC, as a checkpoint's timers and contacts sections hold them
TIMER_DTYPE = np.dtype([("due", "<i8"), ("created", "<u8"), ("trigger_ts", "<i8"), ("subscriber", "<u4"),
                        ("cell", "<u4"), ("campaign", "<u4"), ("pending_slot", "<u4")])
CONTACT_DTYPE = np.dtype([("key", "<u8"), ("last_ts", "<i8"), ("last_seq", "<u8"), ("streak", "<u4"),
                          ("flags", "<u4")])
assert TIMER_DTYPE.itemsize == sizeof(TimerC) and CONTACT_DTYPE.itemsize == sizeof(ContactC)


def shards_of(const uint64_t[::1] msisdn, uint32_t nshards):
    """The worker (0 .. nshards - 1) of each MSISDN in a sharded run: uint32 array."""
    out = np.empty(msisdn.shape[0], dtype=np.uint32)
    cdef uint32_t[::1] dst = out
    cdef Py_ssize_t i
    if nshards == 0:
        raise ValueError("nshards must be at least 1")
    with nogil:
        for i in range(msisdn.shape[0]):
            dst[i] = shard_of(msisdn[i], nshards)
    return out


def shard_counts_size(uint64_t nr_budgets):
    """Bytes of one lane's budget counts and timers pending by budget (Core.shard_export,
    Core.shard_import)."""
    return nr_budgets * (sizeof(BudgetC) + sizeof(uint64_t))


def shard_block_size(int nshards, uint64_t nr_budgets, int ring_bits):
    """Bytes of the block that `nshards` workers share (Core.attach_shard)."""
    return SHARD_HEADER + nshards * shard_lane_stride(nr_budgets, 1ULL << ring_bits)


cdef class PeerTable:
    """A peer set (`peer_in`: the numbers a subscriber talks to) as the core's open-addressing
    table of MSISDNs, 16-32 bytes per member (power-of-two slots at most half full). Read-only
    once built, so one table serves every engine compiled from the same lists: the shards of
    `run --workers` (threads) and the forked workers of `replay --workers`, which share its
    pages with the coordinator that built it. At province scale a peer list of 13M numbers
    is a 256 MB table; built per worker, 16 workers held 16 copies (issue 14, memory)."""

    cdef uint64_t* slots
    cdef uint64_t mask
    cdef readonly uint64_t nbytes

    def __cinit__(self, const uint64_t[::1] msisdn not None):
        cdef uint64_t n = msisdn.shape[0], cap = 16, i, h, v
        while cap < 2 * n:
            cap *= 2
        self.nbytes = cap * sizeof(uint64_t)
        self.slots = <uint64_t*>sm_zalloc(self.nbytes)
        if self.slots == NULL:
            raise MemoryError()
        self.mask = cap - 1
        with nogil:
            for i in range(n):
                v = msisdn[i]
                if v == 0:
                    continue
                h = sm_mix64(v) & self.mask
                while self.slots[h] != 0 and self.slots[h] != v:
                    h = (h + 1) & self.mask
                self.slots[h] = v

    def __dealloc__(self):
        if self.slots != NULL:
            sm_free(self.slots, self.nbytes)

    def __contains__(self, uint64_t msisdn):
        cdef PeerSetC s
        s.slots = self.slots
        s.mask = self.mask
        return msisdn != 0 and peer_contains(&s, msisdn)


# The GC's clear would drop the PeerTables (and the shared block) while E still points into
# them; nothing reads them after today, but a finalizer that did would read freed memory.
@cython.no_gc_clear
cdef class Core:
    """Owns every block of engine state. Set-up order: set_layout, set_subscribers,
    set_eligibility, set_areas, add_peer_set, set_event_types, set_counters, set_policy,
    set_campaigns; then feed / end_stream / drain, and take_* after each call."""

    cdef EngineC E
    cdef TypeNamesC types
    cdef size_t max_event_bytes
    cdef uint8_t* carry            # the bytes of an event that began in an earlier chunk
    cdef size_t carry_len
    cdef uint64_t carry_offset
    # How far framing the carried event got (scan_values' place): the bytes of a later chunk
    # go on from there rather than from the event's start, so an event fed a byte at a time
    # costs linear time. Not state: a restored carry is framed again from its start, once.
    cdef size_t carry_scan_pos
    cdef uint64_t carry_scan_left
    cdef uint64_t stream_offset    # offset of the next byte to be fed
    cdef EventC* batch
    cdef uint32_t* subs            # the subscriber of each batch event, resolved ahead
    cdef bytes campaign_ids        # backing store of CampaignC.id
    cdef size_t rows_bytes
    cdef size_t index_bytes
    cdef public uint64_t error_offset
    cdef readonly int nr_campaigns
    cdef readonly list channel_names   # by channel index; budgets carry over a reload by name
    cdef object _block                 # the shared block of a sharded worker, kept alive
    cdef list _peer_tables             # the PeerTables E.peer_sets point into, kept alive

    def __cinit__(self, size_t max_event_bytes=65536):
        memset(&self.E, 0, sizeof(EngineC))
        memset(&self.types, 0, sizeof(TypeNamesC))
        if max_event_bytes < 16 or max_event_bytes > (1 << 30):
            raise ValueError("max_event_bytes must be between 16 and 2**30")
        self.max_event_bytes = max_event_bytes
        self.carry = <uint8_t*>malloc(max_event_bytes + 1)
        self.E.run.bytes = <uint8_t*>malloc(max_event_bytes)
        self.E.max_dead_letters = 100_000
        self.carry_scan_left = 1
        self.batch = <EventC*>malloc(BATCH * sizeof(EventC))
        self.subs = <uint32_t*>malloc(BATCH * sizeof(uint32_t))
        self.E.by_type_off = <uint32_t*>calloc(65, sizeof(uint32_t))
        self.E.counter_type_off = <uint32_t*>calloc(65, sizeof(uint32_t))
        self.E.convert_type_off = <uint32_t*>calloc(65, sizeof(uint32_t))
        self.E.marker_type_off = <uint32_t*>calloc(65, sizeof(uint32_t))
        if (self.E.marker_type_off == NULL or self.carry == NULL or self.E.run.bytes == NULL or self.batch == NULL or self.subs == NULL or self.E.by_type_off == NULL
                or self.E.counter_type_off == NULL or self.E.convert_type_off == NULL):
            raise MemoryError()
        self.E.quiet_start = -1
        self.E.max_per_day = 0xFFFFFFFFu
        self.E.max_pending = 10_000_000
        self.E.nr_elig_words = 1
        if timers_init(&self.E, 0):
            raise MemoryError()
        memset(self.E.peer_prefetch, 0xFF, sizeof(self.E.peer_prefetch))
        self.E.unblocked_word = 0
        self.E.unblocked_mask = 0
        self.channel_names = []
        self._peer_tables = []

    def __dealloc__(self):
        free(self.carry)
        free(self.E.run.bytes)
        free(self.batch)
        free(self.subs)
        sm_free(self.E.index_slots, self.index_bytes)
        sm_free(self.E.rows, self.rows_bytes)
        free(self.E.peer_sets)          # their slots are the PeerTables'
        if self.E.area_cells != NULL:
            sm_free(self.E.area_cells, (self.E.area_slot_mask + 1) * sizeof(uint32_t))
            sm_free(self.E.area_masks, (self.E.area_slot_mask + 1) * self.E.nr_area_words * sizeof(uint64_t))
        free(self.E.counters)
        free(self.E.campaigns)
        free(self.E.when_cmps)
        free(self.E.when_terms)
        free(self.E.when_prog)
        sm_free(self.E.dates, <size_t>self.E.nr_subscribers * self.E.nr_dates * sizeof(uint16_t))
        free(self.E.by_type_off)
        free(self.E.trig_list)
        free_candidates(&self.E)
        free(self.E.counter_type_off)
        free(self.E.counter_list)
        free(self.E.convert_type_off)
        free(self.E.convert_list)
        free(self.E.markers)
        free(self.E.marker_type_off)
        free(self.E.marker_list)
        free(self.E.conds)
        free(self.E.absent_list)
        free(self.E.variant_sums)
        free(self.E.cidx_stamp)
        free(self.E.cidx_slot)
        free(self.E.pidx_stamp)
        if self.E.contacts != NULL:
            sm_free(self.E.contacts, (self.E.contacts_mask + 1) * sizeof(ContactC))
        sm_free(self.E.changed_subs, (<size_t>self.E.nr_subscribers + 1) * sizeof(uint32_t))
        free(self.E.changed_contacts)
        free(self.E.pending)
        free(self.E.pending_by_campaign)
        timers_free(&self.E)
        free(self.E.heap)
        free(self.E.actions)
        free(self.E.conversions)
        free(self.E.dead)
        free(self.E.funnel)
        free(self.E.watch_bits)
        free(self.E.explain)
        free(self.E.takers)
        free(self.E.budgets)
        free(self.E.channel_daily)
        free(self.E.akeys)
        free(self.E.cpos)
        free(self.E.owner_cnt)
        free(self.E.owner_ring)
        free(self.E.chan_class)
        if self.E.windows != NULL:
            sm_free(self.E.windows, (self.E.windows_mask + 1) * (self.E.window_n + 2) * sizeof(int64_t))

    # ---- set-up ------------------------------------------------------------------------

    def set_layout(self, int nr_elig_words, int nr_counters, int nr_windows, int nr_markers=0):
        """Fix the shape of a subscriber's state row. Must come before set_subscribers. Markers
        take 8 bytes each, only when configured."""
        if self.E.rows != NULL:
            raise RuntimeError("layout is fixed once subscribers are loaded")
        if (nr_elig_words < 1 or nr_counters < 0 or nr_windows < 0 or nr_windows > nr_counters
                or not 0 <= nr_markers < 65536):
            raise ValueError("bad layout")
        self.E.nr_elig_words = nr_elig_words
        self.E.nr_counters = nr_counters
        self.E.nr_windows = nr_windows
        self.E.nr_markers = nr_markers
        self.E.elig_off = sizeof(SubHeadC)
        self.E.counter_off = self.E.elig_off + 8 * nr_elig_words
        self.E.window_off = (self.E.counter_off + 4 * nr_counters + 7) & ~(<size_t>7)
        self.E.marker_off = self.E.window_off + 8 * nr_windows
        self.E.stride = self.E.marker_off + 8 * nr_markers
        if self.E.stride <= 64:
            self.E.stride = 64
        if self.E.nr_campaigns:
            _build_candidate_masks(self)

    @property
    def bytes_per_subscriber(self):
        """State bytes per subscriber: the row (with the MSISDN), the index slots and the
        anniversary dates (2 bytes per attribute)."""
        if self.E.nr_subscribers == 0:
            return self.E.stride + 8 + 2 * self.E.nr_dates
        return (self.rows_bytes + self.index_bytes) / self.E.nr_subscribers + 2 * self.E.nr_dates

    @property
    def nr_subscribers(self):
        return self.E.nr_subscribers

    def set_subscribers(self, const uint64_t[::1] msisdn):
        """Give every MSISDN its dense index (its position here). Numbers must be unique."""
        cdef uint64_t n = msisdn.shape[0], cap = 16, i, h, x
        if self.E.rows != NULL:
            raise RuntimeError("subscribers are already loaded")
        if self.E.stride == 0:
            self.set_layout(1, 0, 0)
        if n >= NO_INDEX:
            raise ValueError("too many subscribers")
        # 70% full: the fingerprints keep probes off the rows, and at 8 bytes a slot the index
        # costs ~11 bytes per subscriber
        cap = max(16, (n * 10 + 6) // 7)
        self.index_bytes = cap * sizeof(uint64_t)
        self.rows_bytes = max(n, 1) * self.E.stride
        self.E.index_slots = <uint64_t*>sm_zalloc(self.index_bytes)
        self.E.rows = <uint8_t*>sm_zalloc(self.rows_bytes)
        if self.E.index_slots == NULL or self.E.rows == NULL:
            raise MemoryError()
        self.E.index_cap = cap
        with nogil:
            for i in range(n):
                # the slots are random in an index of tens of MB: one miss at a time was
                # 0.3 s of a 2M-subscriber start (issue 14)
                if i + PREFETCH_FAR < n:
                    sm_prefetch(&self.E.index_slots[sm_fastrange(sm_mix64(msisdn[i + PREFETCH_FAR]), cap)])
                (<SubHeadC*>row_of(&self.E, <uint32_t>i)).msisdn = msisdn[i]
                x = sm_mix64(msisdn[i])
                h = sm_fastrange(x, cap)
                while self.E.index_slots[h]:
                    h = 0 if h + 1 == cap else h + 1
                self.E.index_slots[h] = ((x & 0xFFFFFFFFu) << 32) | (i + 1)
        self.E.nr_subscribers = <uint32_t>n
        self.E.cap_subscribers = <uint32_t>n

    def members(self, const uint64_t[::1] msisdn):
        """Which subscribers are in a list of MSISDNs (numbers that are not subscribers are
        ignored): a bool mask by subscriber index. O(list), not O(subscribers)."""
        out = np.zeros(self.E.nr_subscribers, dtype=np.uint8)
        cdef uint8_t[::1] mask = out
        cdef uint64_t i, n = msisdn.shape[0]
        cdef uint32_t sub
        if self.E.index_slots == NULL or self.E.nr_subscribers == 0:
            return out.view(bool)
        with nogil:
            for i in range(n):
                if i + PREFETCH_FAR < n:
                    sm_prefetch(&self.E.index_slots[sm_fastrange(sm_mix64(msisdn[i + PREFETCH_FAR]), self.E.index_cap)])
                if i + PREFETCH_NEAR < n:
                    sub = candidate_subscriber(&self.E, msisdn[i + PREFETCH_NEAR])
                    if sub != NO_INDEX:
                        sm_prefetch(row_of(&self.E, sub))
                sub = lookup_subscriber(&self.E, msisdn[i])
                if sub != NO_INDEX:
                    mask[sub] = 1
        return out.view(bool)

    def subscriber_index(self, uint64_t msisdn):
        """Dense index of an MSISDN, or -1."""
        cdef uint32_t i = lookup_subscriber(&self.E, msisdn)
        return -1 if i == NO_INDEX else i

    def set_eligibility(self, const uint64_t[:, ::1] words):
        """Per-subscriber eligibility words [nr_subscribers, nr_elig_words]."""
        cdef uint64_t i
        cdef int w
        if words.shape[0] != self.E.nr_subscribers or words.shape[1] != self.E.nr_elig_words:
            raise ValueError("eligibility shape does not match subscribers x words")
        with nogil:
            for i in range(self.E.nr_subscribers):
                for w in range(self.E.nr_elig_words):
                    (<uint64_t*>(row_of(&self.E, <uint32_t>i) + self.E.elig_off))[w] = words[i, w]

    def set_inactive(self, const uint8_t[::1] inactive):
        """Subscribers that match nothing (gone from the latest profile snapshot)."""
        cdef uint64_t i
        cdef SubHeadC* h
        if inactive.shape[0] != self.E.nr_subscribers:
            raise ValueError("inactive mask does not match subscribers")
        for i in range(self.E.nr_subscribers):
            h = <SubHeadC*>row_of(&self.E, <uint32_t>i)
            if inactive[i]:
                h.flags |= SUB_INACTIVE
            else:
                h.flags &= ~SUB_INACTIVE

    def set_dates(self, const uint16_t[:, ::1] codes):
        """Anniversary dates [nr_subscribers, attributes]: month * 32 + day, 0 = never matches.
        A campaign names its column by `date_slot`."""
        cdef size_t n
        if codes.shape[0] != self.E.nr_subscribers:
            raise ValueError("dates do not match subscribers")
        if self.E.dates != NULL:
            raise RuntimeError("dates are already set")
        n = <size_t>codes.shape[0] * codes.shape[1]
        # the campaigns' date slots are checked against nr_dates even without subscribers (a
        # worker of a sharded run may hold none)
        self.E.nr_dates = codes.shape[1]
        if n == 0:
            return
        self.E.dates = <uint16_t*>sm_zalloc(n * sizeof(uint16_t))
        if self.E.dates == NULL:
            raise MemoryError()
        memcpy(self.E.dates, &codes[0, 0], n * sizeof(uint16_t))
        self.E.nr_dates = codes.shape[1]

    def add_peer_set(self, table):
        """A peer set: a PeerTable (shared, not copied: it is kept alive with this core), or
        an array of MSISDNs (uint64; 0 is never a member) made into one. Returns its id for
        set_campaigns."""
        cdef PeerTable t = table if isinstance(table, PeerTable) else PeerTable(table)
        cdef PeerSetC* grown = <PeerSetC*>realloc(self.E.peer_sets, (self.E.nr_peer_sets + 1) * sizeof(PeerSetC))
        if grown == NULL:
            raise MemoryError()
        self.E.peer_sets = grown
        self._peer_tables.append(t)
        self.E.peer_sets[self.E.nr_peer_sets].slots = t.slots
        self.E.peer_sets[self.E.nr_peer_sets].mask = t.mask
        self.E.nr_peer_sets += 1
        return self.E.nr_peer_sets - 1

    def set_areas(self, const uint32_t[::1] cells, const uint64_t[:, ::1] masks):
        """Cell -> area-membership words; cells unique and non-zero."""
        cdef uint64_t n = cells.shape[0], cap = 16, i, h
        cdef int w, nw = masks.shape[1]
        if masks.shape[0] != n:
            raise ValueError("one mask row per cell")
        if n == 0:
            return
        if self.E.area_cells != NULL:
            raise RuntimeError("areas are already set")
        while cap < 2 * n:
            cap *= 2
        self.E.area_cells = <uint32_t*>sm_zalloc(cap * sizeof(uint32_t))
        self.E.area_masks = <uint64_t*>sm_zalloc(cap * nw * sizeof(uint64_t))
        if self.E.area_cells == NULL or self.E.area_masks == NULL:
            raise MemoryError()
        self.E.area_slot_mask = cap - 1
        self.E.nr_area_words = nw
        for i in range(n):
            if cells[i] == 0:
                raise ValueError("cell 0 is in no area")
            h = sm_mix64(cells[i]) & self.E.area_slot_mask
            while self.E.area_cells[h] != 0:
                h = (h + 1) & self.E.area_slot_mask
            self.E.area_cells[h] = cells[i]
            for w in range(nw):
                self.E.area_masks[h * nw + w] = masks[i, w]
        if self.E.nr_campaigns:
            _build_candidate_masks(self)

    def set_event_types(self, dict names):
        """name (str) -> code (1..63): the types the decoder accepts, by code or by name."""
        cdef int i = 0
        if len(names) > MAX_TYPE_NAMES:
            raise ValueError("too many event types")
        self.types.valid_codes = 0
        for name, code in names.items():
            raw = name.encode("ascii")
            if not 0 < code < 64 or len(raw) > MAX_TYPE_NAME_LEN:
                raise ValueError(f"bad event type {name}={code}")
            memcpy(self.types.names[i], <const char*>raw, len(raw))
            self.types.lens[i] = len(raw)
            self.types.codes[i] = code
            self.types.valid_codes |= 1ULL << code
            i += 1
        self.types.nr = i

    def set_counters(self, list counters):
        """counters: [(types_mask, flags_mask, add, window_ms or 0[, period, arg or None])] in row
        order; those with a window or a period take start slots in order."""
        cdef int k, slot = 0
        if len(counters) != self.E.nr_counters:
            raise ValueError("counter count does not match the layout")
        free(self.E.counters)
        self.E.counters = <CounterC*>calloc(max(len(counters), 1), sizeof(CounterC))
        if self.E.counters == NULL:
            raise MemoryError()
        for k, spec in enumerate(counters):
            types, flags, add, window = spec[:4]
            period = spec[4] if len(spec) > 4 else PERIOD_NONE
            arg = spec[5] if len(spec) > 5 else None
            if not PERIOD_NONE <= period <= PERIOD_MONTH or (period and window):
                raise ValueError("a counter has a window or a period, not both")
            self.E.counters[k].types = types
            self.E.counters[k].flags = flags
            self.E.counters[k].add = add
            self.E.counters[k].window = window
            self.E.counters[k].period = period
            self.E.counters[k].has_arg = arg is not None
            self.E.counters[k].arg = arg if arg is not None else 0
            if window or period:
                self.E.counters[k].window_slot = slot
                slot += 1
            else:
                self.E.counters[k].window_slot = -1
        if slot != self.E.nr_windows:
            raise ValueError("window count does not match the layout")
        _build_type_lists(
            [[k for k, c in enumerate(counters) if (c[0] >> t) & 1] for t in range(64)],
            &self.E.counter_type_off, &self.E.counter_list)

    def set_markers(self, list markers):
        """markers: [(types_mask, flags_mask, arg or None)] in row order (SPEC §3 step 8)."""
        cdef int k
        if len(markers) != self.E.nr_markers:
            raise ValueError("marker count does not match the layout")
        free(self.E.markers)
        self.E.markers = <MarkerC*>calloc(max(len(markers), 1), sizeof(MarkerC))
        if self.E.markers == NULL:
            raise MemoryError()
        for k, (types, flags, arg) in enumerate(markers):
            self.E.markers[k].types = types
            self.E.markers[k].flags = flags
            self.E.markers[k].has_arg = arg is not None
            self.E.markers[k].arg = arg if arg is not None else 0
        _build_type_lists(
            [[k for k, m in enumerate(markers) if (m[0] >> t) & 1] for t in range(64)],
            &self.E.marker_type_off, &self.E.marker_list)

    def set_policy(self, int64_t utc_offset_ms, int quiet_start, int quiet_end, int64_t min_gap_ms,
                   uint32_t max_per_day, int unblocked_word, uint64_t unblocked_mask,
                   uint64_t max_pending):
        self.E.utc_offset = utc_offset_ms
        self.E.time_valid = 0
        memset(self.E.period_lo, 0, sizeof(self.E.period_lo))
        memset(self.E.period_hi, 0, sizeof(self.E.period_hi))
        self.E.today_lo = self.E.today_hi = 0
        self.E.quiet_start = quiet_start
        self.E.quiet_end = quiet_end
        self.E.min_gap = min_gap_ms
        self.E.max_per_day = max_per_day
        self.E.unblocked_word = unblocked_word
        self.E.unblocked_mask = unblocked_mask
        self.E.max_pending = max_pending

    def set_max_in_window(self, int contacts, int64_t window_ms):
        """`[policy] max_in_window`: fewer than `contacts` (1..16) contacts at times
        > t - window_ms; 0 contacts: no such rule. Before any contact is made."""
        if not 0 <= contacts <= 16 or (contacts and window_ms <= 0):
            raise ValueError("max_in_window needs 1 to 16 contacts and a positive window")
        if self.E.windows != NULL:
            raise RuntimeError("max_in_window is fixed once contacts are kept")
        self.E.window_n = contacts
        self.E.window_ms = window_ms

    @property
    def window_contacts(self):
        return self.E.window_n

    def set_global_holdout(self, uint32_t threshold):
        """`[policy] global_holdout` as its threshold: floor(global_holdout * 10000 + 0.5)."""
        if threshold > 10000:
            raise ValueError("the global holdout threshold is at most 10000")
        self.E.global_holdout = threshold

    def set_max_dead_letters(self, uint32_t max_dead_letters):
        """At most this many dead-letter records start in one span of 2**26 stream bytes
        (SPEC §4, `[engine] max_dead_letters`); past it bad events are only counted."""
        self.E.max_dead_letters = max_dead_letters

    def set_channels(self, list names, list daily_budgets):
        """The channels campaigns use (set_campaigns refers to them by index) and each one's
        daily budget (None: none). Must come before set_campaigns."""
        cdef int k
        if len(names) != len(daily_budgets) or len(names) >= 65536:
            raise ValueError("one daily budget per channel, at most 65535 channels")
        free(self.E.channel_daily)
        self.E.channel_daily = <uint64_t*>calloc(max(len(names), 1), sizeof(uint64_t))
        if self.E.channel_daily == NULL:
            raise MemoryError()
        for k, budget in enumerate(daily_budgets):
            self.E.channel_daily[k] = NO_BUDGET if budget is None else budget
        self.E.nr_channels = len(names)
        self.channel_names = list(names)

    def set_campaigns(self, list campaigns):
        """campaigns: dicts with the CampaignC fields, already in priority order; `channel`
        is an index into set_channels' names (a core without channels gets one)."""
        return _set_campaigns(self, campaigns)

    # ---- the stream ---------------------------------------------------------------------

    def begin_stream(self, uint64_t offset=0):
        """A new stream: nothing is carried over, and offsets count from `offset`. A run of
        bad values left open by a stream that was abandoned is written first. From 0 the
        dead-letter spans start afresh; from a later offset (the service after a corrupt file,
        whose bytes still count) offsets stay unique and the spans, and with them the
        max_dead_letters cap, go on as if the stream had not been broken; so does the
        stream's largest bad value."""
        flush_run(&self.E, &self.E.run)
        if offset == 0:
            reset_spans(&self.E.run)
            self.E.bad_largest = 0
            self.E.bad_largest_offset = 0
        self.carry_len = 0
        self.carry_scan_pos = 0
        self.carry_scan_left = 1
        self.stream_offset = offset
        self.error_offset = 0

    cdef int _process_batch(self, int nb) noexcept nogil:
        """Match a decoded batch. Random access to millions of rows would stall once per event;
        instead the subscribers of later events are brought into cache while earlier ones are
        processed, in three stages: the index slot PREFETCH_FAR events ahead; the row (and the
        peer-set slot) PREFETCH_NEAR ahead, found by fingerprint; then, PREFETCH_CONTACT
        ahead, the row is in cache: the hit is confirmed and, for a subscriber with contact
        state, the first two lines of its contacts (contact_home) are fetched, and for one with
        an action waiting the line of its pending pairs. The anniversary dates, kept apart from
        the row, come with the row. Prefetching
        only reads; the outcome is unchanged."""
        cdef int i, k
        cdef EngineC* E = &self.E
        cdef EventC* ev
        cdef uint32_t sub, j
        cdef int32_t ps
        cdef uint64_t key
        cdef uint8_t* row
        cdef size_t off
        if E.index_slots == NULL:
            for i in range(nb):
                process_event(E, &self.batch[i], NO_INDEX)
            return ST_NOMEM if E.oom else ST_OK
        # A sharded worker skips the index for another worker's subscribers (FOREIGN_INDEX):
        # their events only move the clock here.
        for i in range(min(nb, PREFETCH_NEAR)):
            self.subs[i] = FOREIGN_INDEX if foreign(E, self.batch[i].msisdn) else lookup_subscriber(E, self.batch[i].msisdn)
        for i in range(PREFETCH_NEAR, min(nb, PREFETCH_FAR)):
            self.subs[i] = FOREIGN_INDEX if foreign(E, self.batch[i].msisdn) else candidate_subscriber(E, self.batch[i].msisdn)
        for i in range(nb):
            k = i + PREFETCH_FAR
            if k < nb:
                if foreign(E, self.batch[k].msisdn):
                    self.subs[k] = FOREIGN_INDEX
                else:
                    self.subs[k] = NO_INDEX
                    sm_prefetch_l2(&E.index_slots[sm_fastrange(sm_mix64(self.batch[k].msisdn), E.index_cap)])
            k = i + PREFETCH_NEAR
            if k < nb:
                ev = &self.batch[k]
                sub = self.subs[k]
                if sub != FOREIGN_INDEX:
                    sub = candidate_subscriber(E, ev.msisdn)
                self.subs[k] = sub
                if sub < FOREIGN_INDEX:
                    # every line of the row: a row of 144 bytes spans three, and its first
                    # and last byte alone left the counters' line to a miss
                    row = E.rows + <size_t>sub * E.stride
                    for off in range(0, E.stride, 64):
                        sm_prefetch(row + off)
                    if E.stride > 64:
                        sm_prefetch(row + E.stride - 1)
                    if E.nr_dates:
                        sm_prefetch(&E.dates[<size_t>sub * E.nr_dates])
                    # only for a subscriber of this process: a sharded worker that fetched
                    # the peer sets' slots of every event would fetch N times what it uses,
                    # from tables larger than the cache at 30M subscribers
                    if ev.peer:
                        for j in range(4):
                            ps = E.peer_prefetch[ev.type][j]
                            if ps < 0:
                                break
                            sm_prefetch(&E.peer_sets[ps].slots[sm_mix64(ev.peer) & E.peer_sets[ps].mask])
            k = i + PREFETCH_CONTACT
            if k < nb and k >= PREFETCH_NEAR:
                ev = &self.batch[k]
                sub = self.subs[k]
                if sub < FOREIGN_INDEX and (<SubHeadC*>row_of(E, sub)).msisdn != ev.msisdn:
                    sub = lookup_subscriber(E, ev.msisdn)     # a fingerprint collision: rare
                    self.subs[k] = sub
                if sub < FOREIGN_INDEX and E.contacts != NULL and (<SubHeadC*>row_of(E, sub)).flags & SUB_HAS_CONTACT:
                    # a subscriber's contacts start at one slot (contact_home): two lines
                    # hold the first four
                    key = contact_home(sub, E.contacts_mask)
                    sm_prefetch(&E.contacts[key])
                    sm_prefetch(&E.contacts[((key | 1) + 1) & E.contacts_mask])
                if sub < FOREIGN_INDEX and E.window_n and E.windows != NULL and (<SubHeadC*>row_of(E, sub)).last_any_p1:
                    # a contacted subscriber's kept contact times, which emit reads
                    sm_prefetch(&E.windows[window_home(<int64_t>sub + 1, E.windows_mask) * (E.window_n + 2)])
                if sub < FOREIGN_INDEX and (<SubHeadC*>row_of(E, sub)).pending:
                    sm_prefetch(&E.pending[pending_home(pending_key(sub, 0), E.pending_mask)])
            if event_start(E, &self.batch[i], self.subs[i]):
                subscriber_event(E, &self.batch[i], self.subs[i])
            if E.oom:
                return ST_NOMEM
        return ST_OK

    cdef int _stream_error(self, int rc, uint64_t offset) noexcept nogil:
        # The stream ends here: the run before the broken value is complete.
        self.error_offset = offset
        flush_run(&self.E, &self.E.run)
        return status_of(rc)

    cdef int _feed(self, const uint8_t* data, size_t n) noexcept nogil:
        cdef size_t pos = 0, end_pos, take, have
        cdef int rc, framed, reason, field, nb = 0, st
        cdef uint64_t base = self.stream_offset
        cdef EngineC* E = &self.E
        self.stream_offset += n
        if self.carry_len:
            # Finish the event that began in an earlier chunk; it needs at most max_event_bytes.
            # Framing goes on where it stopped; the event is decoded once, when it is whole.
            take = self.max_event_bytes + 1 - self.carry_len
            if take > n:
                take = n
            memcpy(self.carry + self.carry_len, data, take)
            have = self.carry_len + take
            framed = scan_values(self.carry, &self.carry_scan_pos, have, self.max_event_bytes,
                                 &self.carry_scan_left)
            if framed == DEC_NEED_MORE:
                self.carry_len = have
                return ST_OK
            # Whole (or broken): decode_one gives the verdict, as it would on unsplit data.
            rc = decode_one(self.carry, 0, have, self.max_event_bytes,
                            &self.types, &self.batch[0], &end_pos, &reason, &field)
            self.carry_scan_pos = 0
            self.carry_scan_left = 1
            if rc == DEC_NEED_MORE:
                # decode_one makes the checks that framing made; it cannot need more bytes
                # than framing did, but should it ever, the framing's verdict stands
                rc = framed if framed != DEC_OK else DEC_CORRUPT
            if rc == DEC_CORRUPT or rc == DEC_TOO_LARGE:
                self.carry_len = 0
                return self._stream_error(rc, self.carry_offset)
            if rc == DEC_BAD:
                add_dead_letter(E, &E.run, self.carry, 0, end_pos, self.carry_offset, reason, field)
            else:
                flush_run(E, &E.run)
                process_event(E, &self.batch[0], lookup_subscriber(E, self.batch[0].msisdn))
            if E.oom:
                return ST_NOMEM
            pos = end_pos - self.carry_len
            self.carry_len = 0
        while True:
            nb = 0
            rc = DEC_OK
            while nb < BATCH and pos < n:
                # the probes' shape inline, the call only for anything else (decode_one tries
                # the same fast path first, so the outcome is decode_one's either way)
                if decode_fast(data, pos, n, self.max_event_bytes, &self.types, &self.batch[nb], &end_pos):
                    rc = DEC_OK
                else:
                    rc = decode_one(data, pos, n, self.max_event_bytes, &self.types,
                                    &self.batch[nb], &end_pos, &reason, &field)
                if rc == DEC_OK:
                    if E.run.count:
                        flush_run(E, &E.run)
                    nb += 1
                elif rc == DEC_BAD:
                    add_dead_letter(E, &E.run, data, pos, end_pos, base + pos, reason, field)
                else:
                    break
                pos = end_pos
            st = self._process_batch(nb)
            if st:
                return st
            if rc == DEC_NEED_MORE:
                memcpy(self.carry, data + pos, n - pos)
                self.carry_len = n - pos
                self.carry_offset = base + pos
                self.carry_scan_pos = 0
                self.carry_scan_left = 1
                return ST_OK
            if rc == DEC_CORRUPT or rc == DEC_TOO_LARGE:
                return self._stream_error(rc, base + pos)
            if pos >= n:
                return ST_NOMEM if E.oom else ST_OK

    def feed(self, data):
        """Decode and process the next bytes of the stream. Returns a status code:
        0 ok, 1 corrupt, 2 too large (error_offset names the event), 4 out of memory
        (somewhere in what was fed: no event is named); records.STREAM_STATUSES names them."""
        cdef const uint8_t[::1] view = data
        cdef size_t n = view.shape[0]
        cdef int st
        if n == 0:
            return ST_OK
        with nogil:
            st = self._feed(&view[0], n)
            if self.E.shm != NULL:
                shard_publish_fired(&self.E)    # the others may wait on the chunk's last events
        return st

    def decode(self, data, bint keep=True):
        """Decode a complete stream without matching (tests, the decoder benchmark, the TCP
        journal's check). Returns (events, status, offset): the events as EVENT_DTYPE
        records (with `keep`) or their count; status 0, or that of the error at `offset` (3:
        the data ends inside the event at `offset`). Bad events go to the dead letters as in
        a stream of their own (offsets from the start of `data`, runs and the cap applied),
        leaving the fed stream's open run alone."""
        cdef const uint8_t[::1] view = data
        cdef size_t n = view.shape[0], pos = 0, end_pos
        cdef int rc = DEC_OK, reason, field
        cdef uint64_t nr = 0, cap = 0
        cdef EventC ev
        cdef EventC* kept = NULL
        cdef EventC* grown
        cdef DeadRunC run
        memset(&run, 0, sizeof(DeadRunC))
        run.bytes = <uint8_t*>malloc(self.max_event_bytes)
        if run.bytes == NULL:
            raise MemoryError()
        with nogil:
            while pos < n:
                rc = decode_one(&view[0], pos, n, self.max_event_bytes, &self.types, &ev, &end_pos,
                                &reason, &field)
                if rc == DEC_OK:
                    if run.count:
                        flush_run(&self.E, &run)
                    if keep:
                        if nr == cap:
                            cap = 1024 if cap == 0 else cap * 2
                            grown = <EventC*>realloc(kept, cap * sizeof(EventC))
                            if grown == NULL:
                                break
                            kept = grown
                        kept[nr] = ev
                    nr += 1
                elif rc == DEC_BAD:
                    add_dead_letter(&self.E, &run, &view[0], pos, end_pos, pos, reason, field)
                else:
                    break
                pos = end_pos
            flush_run(&self.E, &run)
        free(run.bytes)
        try:
            if self.E.oom:
                self.E.oom = 0
                raise MemoryError()
            if keep and pos < n and rc == DEC_OK:
                raise MemoryError()
            out = _records(kept, nr, EVENT_DTYPE) if keep else nr
        finally:
            free(kept)
        if rc == DEC_NEED_MORE:
            return out, ST_TRUNCATED, pos
        if rc == DEC_CORRUPT or rc == DEC_TOO_LARGE:
            return out, status_of(rc), pos
        return out, ST_OK, None

    def sniff(self, data, uint64_t max_values):
        """Judge the head of a stream without processing it (loaders.sniff): the values of
        `data`, up to `max_values` of them, decoded with the stream's verdicts but not matched,
        counted or written as dead letters; nothing of the engine changes. Returns (values, ts,
        bad, status, end, inside): the complete values examined, the ts of the good events among
        them (int64, in order), {(reason, field): n} of the bad ones, the status where it
        stopped (0; 3 when `data` ends inside a value; 1 or 2 for a broken value), the offset
        it stopped at (the end of the last value examined, or the start of the broken one) and
        (bytes inside the bad values, bytes of the largest, its offset; 0, 0, 0 without one)."""
        cdef const uint8_t[::1] view = data
        cdef size_t n = view.shape[0], pos = 0, end_pos
        cdef int rc = DEC_OK, reason = 0, field = 0
        cdef uint64_t values = 0, good = 0, inside = 0, largest = 0, largest_at = 0
        cdef uint64_t bad[NR_REASONS][NR_FIELDS + 1]
        cdef EventC ev
        ts = np.empty(max_values, dtype=np.int64)
        cdef int64_t[::1] good_ts = ts
        memset(&bad[0][0], 0, sizeof(bad))
        with nogil:
            while pos < n and values < max_values:
                rc = decode_one(&view[0], pos, n, self.max_event_bytes, &self.types, &ev, &end_pos,
                                &reason, &field)
                if rc == DEC_OK:
                    good_ts[good] = ev.ts
                    good += 1
                elif rc == DEC_BAD:
                    bad[reason][field] += 1
                    inside += end_pos - pos
                    if end_pos - pos > largest:
                        largest = end_pos - pos
                        largest_at = pos
                else:
                    break
                values += 1
                pos = end_pos
        found = {(BAD_REASONS[r], BAD_FIELDS[k]): bad[r][k]
                 for r in range(NR_REASONS) for k in range(NR_FIELDS + 1) if bad[r][k]}
        sizes = (inside, largest, largest_at)
        if rc == DEC_NEED_MORE:
            return values, ts[:good], found, ST_TRUNCATED, pos, sizes
        if rc == DEC_CORRUPT or rc == DEC_TOO_LARGE:
            return values, ts[:good], found, status_of(rc), pos, sizes
        return values, ts[:good], found, ST_OK, pos, sizes

    def flush_dead_letters(self):
        """The stream ends here as far as dead letters go: the open run of identical bad
        values is written (take_dead_letters gives it). end_stream does this; the API also
        calls it when a replay stops for any other reason."""
        flush_run(&self.E, &self.E.run)
        if self.E.oom:
            self.E.oom = 0
            raise MemoryError("out of memory while writing a dead letter")

    def end_stream(self):
        """The stream is complete: a partly received event is an error (3 = truncated). The
        open run of bad values is written, and the next stream's spans start afresh."""
        cdef int st = ST_OK
        if self.carry_len:
            self.error_offset = self.carry_offset
            self.carry_len = 0
            self.carry_scan_pos = 0
            self.carry_scan_left = 1
            st = ST_TRUNCATED
        self.flush_dead_letters()
        reset_spans(&self.E.run)
        return st

    def drain(self):
        """Emit every pending action at its due time, as if the clock had moved on."""
        # after the last event, at the same position in every worker of a sharded run
        self.E.cur_pos = self.E.events + 1
        with nogil:
            while self.E.nr_timers:
                if self.E.next_due > self.E.clock:
                    self.E.clock = self.E.next_due
                fire_timer(&self.E)
                if self.E.oom:
                    break
        if self.E.oom:
            self.E.oom = 0
            if self.E.aborted:
                return      # another worker failed: that is the run's error (Core.aborted)
            raise MemoryError("out of memory while draining")

    # ---- one subscriber, for the policy lookup -----------------------------------------

    def subscriber_view(self, uint64_t msisdn):
        """A subscriber's state as plain Python values, or None for an unknown number. Must
        not run while the core is being fed (the caller holds the engine's lock)."""
        cdef uint32_t sub = lookup_subscriber(&self.E, msisdn)
        cdef uint8_t* row
        cdef SubHeadC* h
        cdef ContactC* contact
        cdef CampaignC* c
        cdef int k, ci
        cdef uint64_t i
        cdef int64_t now = self.E.clock if self.E.has_clock else 0
        cdef TimerRunC* run
        if sub == NO_INDEX:
            return None
        row = row_of(&self.E, sub)
        h = <SubHeadC*>row
        campaigns = []
        for ci in range(self.E.nr_campaigns):
            c = &self.E.campaigns[ci]
            contact = find_contact(&self.E, sub, ci, False) if h.flags & SUB_HAS_CONTACT else NULL
            campaigns.append({
                "static": bool(elig_bit(&self.E, row, c.elig_word, c.elig_mask)),
                "audience": bool(elig_bit(&self.E, row, c.recheck_word, c.recheck_mask)),
                "counter": counter_read(&self.E, row, c.counter, now) if c.counter >= 0 else None,
                "contacted": bool(contact != NULL and contact.flags & CONTACT_CONTACTED),
                "last_ts": contact.last_ts if contact != NULL and contact.flags & CONTACT_CONTACTED else None,
                "last_seq": contact.last_seq if contact != NULL and contact.flags & CONTACT_CONTACTED else None,
                "kind": ("global_control" if contact.flags & CONTACT_GLOBAL_CONTROL else
                         "control" if contact.flags & CONTACT_CONTROL else "send")
                        if contact != NULL and contact.flags & CONTACT_CONTACTED else None,
                "converted": bool(contact != NULL and contact.flags & CONTACT_CONVERTED),
                "streak": contact.streak if contact != NULL else 0,
                "pending": bool(is_pending(&self.E, sub, ci, h)),
            })
        # Only this subscriber's timers, found by a scan without a copy (the lookup server
        # asks under the engine's lock), and none at all for one with nothing waiting.
        pending = []
        if h.pending:
            for i in range(self.E.heap_n):
                if self.E.heap[i].subscriber == sub:
                    pending.append(self.E.heap[i])
            for k in range(self.E.nr_runs):
                run = &self.E.runs[k]
                for i in range(run.n):
                    if run_at(run, i).subscriber == sub:
                        pending.append(run_at(run, i)[0])
            pending.sort(key=lambda t: (t["due"], t["created"]))
            pending = [{"campaign": t["campaign"], "due": t["due"], "trigger_ts": t["trigger_ts"]} for t in pending]
        return {
            "index": sub,
            "cell": h.cell,
            "powered_on": not (h.flags & SUB_POWERED_OFF),
            "active": not (h.flags & SUB_INACTIVE),
            "blacklisted": not elig_bit(&self.E, row, self.E.unblocked_word, self.E.unblocked_mask),
            "last_contact": h.last_any_p1 - 1 if h.last_any_p1 else None,
            "contacts_today": h.day_count if h.day == floor_div(now + self.E.utc_offset, DAY_MS) else 0,
            "window_times": self._window_times(sub),
            "counters": [counter_read(&self.E, row, k, now) for k in range(self.E.nr_counters)],
            # each marker's last time, None when unset
            "markers": [(<int64_t*>(row + self.E.marker_off))[k] - 1 if (<int64_t*>(row + self.E.marker_off))[k] else None
                        for k in range(self.E.nr_markers)],
            "campaigns": campaigns,
            "pending": pending,
        }

    def _window_times(self, uint32_t sub):
        """The contact times kept for max_in_window, oldest first."""
        cdef int64_t* w = find_window(&self.E, sub, False) if self.E.window_n else NULL
        if w == NULL:
            return []
        return [w[2 + ((w[1] >> 8) + k) % self.E.window_n] for k in range(w[1] & 0xFF)]

    def budgets_used(self):
        """Sends counted against the budgets, as of the clock's local day: ({campaign index:
        (today, ever)}, {channel name: today}). Must not run while the core is being fed."""
        cdef int64_t day = floor_div((self.E.clock if self.E.has_clock else 0) + self.E.utc_offset, DAY_MS)
        cdef int k
        cdef BudgetC* b
        campaigns = {}
        for k in range(self.E.nr_campaigns):
            b = &self.E.budgets[k]
            campaigns[k] = (b.day_sends if b.day == day else 0, b.total)
        channels = {}
        for k in range(self.E.nr_channels):
            b = &self.E.budgets[self.E.nr_campaigns + k]
            channels[self.channel_names[k]] = b.day_sends if b.day == day else 0
        return campaigns, channels

    # ---- checkpoints -----------------------------------------------------------------

    def track_changes(self):
        """From now on, note the subscribers and contacts that change, for take_changes. What
        was noted before is forgotten: call it right before a full checkpoint."""
        return _track_changes(self)

    @property
    def tracking(self):
        return bool(self.E.tracking)

    @property
    def nr_changed(self):
        """Subscribers whose row changed since the changes were last taken."""
        return self.E.nr_changed

    def take_changes(self):
        """What changed since track_changes or the last take_changes, state_sections or
        restore_state: (subscriber indexes ascending as uint32, the changed contact states as
        bytes). The marks are cleared: the rows of those subscribers (`rows()`) are as they
        are to be saved, until the core is fed again. Outputs must have been taken."""
        return _take_changes(self)

    def rows(self):
        """The state rows, a view of the core's memory (nr_subscribers x stride bytes)."""
        return self._rows_array()

    def _rows_array(self):
        return np.asarray(<uint8_t[:max(self.rows_bytes, 1)]> self.E.rows)[:<size_t>self.E.nr_subscribers * self.E.stride]

    def state_sections(self):
        """The engine's mutable state for a checkpoint, as (name, NumPy array) pairs. Rows are
        views of the core's own memory (no copy, valid while the core lives and is not fed);
        contact states, timers and counts are copies. Outputs must have been taken. Changes
        noted so far are forgotten: the snapshot holds them."""
        return _state_sections(self)

    def window_entries(self, subs=None):
        """The kept contact times (max_in_window) as packed int64 entries of window_contacts + 2
        words: all of them, or those of the subscribers in `subs` (an incremental checkpoint's
        changed subscribers: a subscriber whose times change has its row noted too)."""
        return _window_entries(self, subs)

    def small_sections(self):
        """Timers, funnel, counts, the carried bytes, the open dead-letter run's value and the
        bad events by reason and field: copies, written whole by every checkpoint,
        incremental ones included."""
        return _small_sections(self)

    def state_scalars(self):
        """Clock, sequences and stream position, with the layout they belong to."""
        return _state_scalars(self)

    def restore_state(self, dict scalars, dict sections):
        """Put back what state_sections / state_scalars gave, into a core compiled from the same
        configuration and subscribers (same layout); ValueError when it does not fit."""
        return _restore_state(self, scalars, sections)

    def transfer_from(self, Core old, list campaign_map, list counter_map, uint32_t nr_old, list marker_map=None):
        """Take over `old`'s state after a reload. This core was compiled with old's subscribers
        first, in old's order (`nr_old` of them); `campaign_map[old index]`,
        `counter_map[old index]` and `marker_map[old index]` give the new index or -1 (gone).
        State of a campaign that is gone is dropped; returns the number of its pending actions
        dropped. A marker that is gone drops its times; a new one starts unset."""
        return _transfer_from(self, old, campaign_map, counter_map, nr_old, marker_map)

    def advance(self, int64_t ts):
        """Move the clock to `ts` (never back) and emit every action due by then, as an event
        at `ts` would. The one place where wall-clock time may enter: the daemon's
        --idle-advance, documented as such."""
        with nogil:
            if not self.E.has_clock or ts > self.E.clock:
                self.E.clock = ts
                self.E.has_clock = 1
            # a sharded worker's timers fire at the next event's position, before its
            # timers (due later than this clock) and its campaigns, as in drain
            self.E.cur_pos = self.E.events + 1
            while self.E.nr_timers and self.E.next_due <= self.E.clock:
                fire_timer(&self.E)
                if self.E.oom:
                    break
            if self.E.shm != NULL and not self.E.oom:
                # every timer due by the clock has fired: no other worker waits for this one
                # on a key up to it (the next event's timers are due later)
                shard_publish(&self.E, self.E.events + 1, self.E.clock, SHARD_END)
        if self.E.oom:
            self.E.oom = 0
            if self.E.aborted:
                return      # another worker failed: that is the run's error (Core.aborted)
            raise MemoryError("out of memory while advancing the clock")

    # ---- shards (_shard.pxi, engine.workers) -------------------------------------------

    def attach_shard(self, block, int shard, int nshards, int ring_bits, uint64_t delayed_campaigns,
                     bint copied=False, bint resume=False):
        """Become worker `shard` of `nshards`, over `block`: a writable buffer of
        shard_block_size(nshards, nr_campaigns + nr_channels, ring_bits) zeroed bytes shared by
        every worker (an anonymous shared mapping, engine.workers), or with `copied` this
        worker's own, into which a relay copies the others' lanes (shard_import; a wait then
        sleeps sooner). Call after the configuration is set and before the first event; the
        subscribers must be this worker's alone (shard_of). With `resume`, a worker that holds
        state already (restored from its checkpoint, or carried over by a reload) attaches to a
        fresh block: every worker must then stand at the same event, none inside a feed
        (engine.workers.inprocess, between two pieces).
        `delayed_campaigns`: the campaigns with a delay. Raises ValueError when it does not fit."""
        return _attach_shard(self, block, shard, nshards, ring_bits, delayed_campaigns, copied, resume)

    def shard_done(self):
        """This worker has no more work: no other waits for it again."""
        if self.E.shm != NULL:
            sm_publish(lane_of(&self.E, self.E.shard), SHARD_END, SHARD_EVENT_DUE, 0)

    def shard_export(self, uint64_t ring_from):
        """This worker's lane, for workers on other hosts (engine.workers.cluster, which copies
        it into their blocks with shard_import): (key as (pos, due, created), timers pending,
        their high-water mark, the timers pending by budget and the budget counts as bytes
        (shard_counts_size), first event of the ring part, the
        pending counts of the events from there up to the last one whose timers fired, as a
        uint64 array; at most a ring's length, and none below ring_from).
        Read in the order the others read a lane, the key first: whatever follows is then at
        least as new as the key, as when they read it from a shared block."""
        return _shard_export(self, ring_from)

    def shard_import(self, int j, key, uint64_t pend, uint64_t hw, const uint8_t[::1] counts, uint64_t ring_from,
                     const uint64_t[::1] ring):
        """Worker j's lane as its shard_export gave it, on another host: written in the reverse
        order of reading, the key last, so that a worker reading this block sees what it would
        see in a block shared with j, only later. Raises ValueError for a lane out of range."""
        return _shard_import(self, j, key, pend, hw, counts, ring_from, ring)

    def shard_abort(self):
        """Stop this worker's waits, as the coordinator's flag in a shared block does."""
        if self.E.shm != NULL:
            sm_store(<uint64_t*>self.E.shm, 1)

    @property
    def shard_waits(self):
        """(decisions that waited for the other workers, of them those that found one behind,
        budgeted sends allowed without waiting, budgeted decisions whose wait ended when the
        others' counts decided them, before every other was past the key)."""
        return self.E.shard_waits, self.E.shard_waited, self.E.shard_certain, self.E.shard_decided

    @property
    def shard_held(self):
        """(events at which this worker waited for the slowest to come within the ring's
        length, seconds spent in every wait for the others: those and shard_waits')."""
        return self.E.shard_held, self.E.shard_wait_ns / 1e9

    @property
    def aborted(self):
        """The coordinator stopped the run while this worker waited (a worker failed)."""
        return bool(self.E.aborted)

    def take_sharded(self):
        """A worker's records with their place in SPEC §3's order: (actions, their keys as
        ACTION_KEY_DTYPE, conversions, the event position of each conversion). Sequence
        numbers are this worker's own until engine.workers merges them."""
        keys = _records(self.E.akeys, self.E.nr_actions, ACTION_KEY_DTYPE)
        positions = np.frombuffer(bytes(<uint8_t[:self.E.nr_conversions * 8]><uint8_t*>self.E.cpos)
                                  if self.E.nr_conversions else b"", dtype=np.uint64)
        return self.take_actions(), keys, self.take_conversions(), positions

    def clear_oom(self):
        self.E.oom = 0

    # ---- results ------------------------------------------------------------------------

    def take_actions(self):
        out = _records(self.E.actions, self.E.nr_actions, ACTION_DTYPE)
        self.E.nr_actions = 0
        return out

    def take_conversions(self):
        out = _records(self.E.conversions, self.E.nr_conversions, CONVERSION_DTYPE)
        self.E.nr_conversions = 0
        return out

    def take_dead_letters(self):
        out = _records(self.E.dead, self.E.nr_dead, DEAD_LETTER_DTYPE)
        self.E.nr_dead = 0
        return out

    @property
    def clock(self):
        return self.E.clock if self.E.has_clock else None

    @property
    def next_offset(self):
        """The stream offset of the next byte to be fed: begin_stream's offset plus every
        byte fed since, those of a partly received event (`carried`) included."""
        return self.stream_offset

    @property
    def carried(self):
        """Bytes of an event begun in the chunks fed so far and not yet complete (0: the next
        byte fed starts a value). The service judges a spool file on its own only then."""
        return self.carry_len

    @property
    def carried_head(self):
        """The first bytes (at most 9: a msgpack header's) of the event `carried` counts, as
        bytes; b"" when none. The service asks whether that value is shaped as an event."""
        return bytes(<uint8_t[:min(self.carry_len, 9)]> self.carry) if self.carry_len else b""

    @property
    def pending(self):
        return self.E.nr_timers

    @property
    def seq(self):
        return self.E.seq

    def set_seq(self, uint64_t seq, uint64_t conversion_seq):
        """Number this worker's next actions from seq + 1 and conversions from
        conversion_seq + 1 (engine.workers.inprocess: the merged numbering after each piece,
        so that a contact's seq not yet rewritten by rewrite_contact_seqs is above it, and a
        worker's checkpoint holds the service's numbering)."""
        self.E.seq = seq
        self.E.conversion_seq = conversion_seq

    def rewrite_contact_seqs(self, const uint64_t[::1] msisdns, const uint16_t[::1] campaigns,
                             const uint64_t[::1] local, const uint64_t[::1] merged):
        """The merged seq of each action this worker numbered `local`: the contact of
        (msisdns[i], campaigns[i]) whose last seq is local[i] takes merged[i], so that the
        conversions it makes later, the lookup and the checkpoint name the action by the
        number it has in the files. A contact that has moved on (a later action of the same
        pair) is left for that action's own entry. Returns the contacts rewritten. Raises
        ValueError for arrays of different lengths."""
        cdef Py_ssize_t i, n = msisdns.shape[0]
        cdef uint32_t sub
        cdef ContactC* contact
        cdef uint64_t done = 0
        if campaigns.shape[0] != n or local.shape[0] != n or merged.shape[0] != n:
            raise ValueError("msisdns, campaigns, local and merged differ in length")
        with nogil:
            for i in range(n):
                sub = lookup_subscriber(&self.E, msisdns[i])
                if sub >= FOREIGN_INDEX or campaigns[i] >= self.E.nr_campaigns:
                    continue
                contact = find_contact(&self.E, sub, campaigns[i], False)
                if contact != NULL and contact.last_seq == local[i]:
                    contact.last_seq = merged[i]
                    note_contact(&self.E, contact)
                    done += 1
        return done

    @property
    def nr_contacts(self):
        return self.E.nr_contacts

    def funnel(self):
        """[nr_campaigns, len(FUNNEL)] uint64 copy."""
        out = np.zeros((self.E.nr_campaigns, NR_FUNNEL), dtype=np.uint64)
        cdef uint64_t[:, ::1] dst = out
        cdef int ci, k
        for ci in range(self.E.nr_campaigns):
            for k in range(NR_FUNNEL):
                dst[ci, k] = self.E.funnel[ci * NR_FUNNEL + k]
        return out

    def counts(self):
        """Run figures: good events, unknown subscribers, late events, bad events by reason
        and field, the bytes inside bad values (bad_bytes), events by type; and the stream's
        largest bad value, {"offset", "bytes"} or None, since the stream began at offset 0
        (begin_stream)."""
        return {
            "events": self.E.events,
            "unknown_subscribers": self.E.unknown,
            "late_events": self.E.late,
            "bad_events": {BAD_REASONS[r]: self.E.bad[r] for r in range(NR_REASONS)},
            "bad_bytes": self.E.bad_bytes,
            "largest_bad_value": ({"offset": self.E.bad_largest_offset, "bytes": self.E.bad_largest}
                                  if self.E.bad_largest else None),
            # {reason: {field: n}} for the pairs seen; field "" is the value as a whole
            "bad_events_by_field": {BAD_REASONS[r]: {BAD_FIELDS[k]: self.E.bad_field[r][k]
                                                     for k in range(NR_FIELDS + 1) if self.E.bad_field[r][k]}
                                    for r in range(NR_REASONS)
                                    if any(self.E.bad_field[r][k] for k in range(NR_FIELDS + 1))},
            "events_by_type": {t: self.E.by_type[t] for t in range(64) if self.E.by_type[t]},
        }

    # ---- the cold paths: explain and the takers of diff (_explain.pxi) ---------------------

    def watch(self, subscribers):
        """Explain these subscriber indexes from now on (an iterable of int; empty: none,
        and the hot path is back to one test of a NULL pointer). Lines wait in the core
        until take_explain. IndexError for an index that is no subscriber."""
        cdef uint64_t words = (<uint64_t>self.E.nr_subscribers + 63) // 64
        cdef uint64_t* bits = NULL
        cdef uint32_t k
        subs = sorted({int(s) for s in subscribers})
        # min/max, not subs[-1]: the module is compiled without wraparound
        if subs and (min(subs) < 0 or max(subs) >= self.E.nr_subscribers):
            raise IndexError("no such subscriber index")
        if subs:
            bits = <uint64_t*>calloc(words, sizeof(uint64_t))
            if bits == NULL:
                raise MemoryError()
            for s in subs:
                k = s
                bits[k >> 6] |= (<uint64_t>1) << (k & 63)
        free(self.E.watch_bits)
        self.E.watch_bits = bits

    def watched(self):
        """The subscriber indexes watched, in order."""
        if self.E.watch_bits == NULL:
            return []
        return [s for s in range(self.E.nr_subscribers) if (self.E.watch_bits[s >> 6] >> (s & 63)) & 1]

    def take_explain(self):
        """The explanation lines since the last call: EXPLAIN_DTYPE records, in the order the
        events, timers and emissions happened."""
        out = _records(self.E.explain, self.E.nr_explain, EXPLAIN_DTYPE)
        self.E.nr_explain = 0
        return out

    def record_takers(self, bint on=True):
        """Count, from now on, each contact that a campaign loses through min_gap,
        max_per_day or max_in_window against the campaign of the latest contact that made
        the rule fail (takers()). Off: the counts are dropped."""
        cdef size_t n = <size_t>self.E.nr_campaigns * (self.E.nr_campaigns + 1) * NR_TAKER_RULES
        free(self.E.takers)
        self.E.takers = NULL
        if on:
            self.E.takers = <uint64_t*>calloc(max(n, 1), sizeof(uint64_t))
            if self.E.takers == NULL:
                raise MemoryError()

    def takers(self):
        """[campaign, taker, rule] uint64 counts (taker nr_campaigns: a campaign a reload
        removed; rule: TAKER_RULES), or None when not recording."""
        cdef int n = self.E.nr_campaigns
        if self.E.takers == NULL:
            return None
        out = np.empty((n, n + 1, NR_TAKER_RULES), dtype=np.uint64)
        cdef uint64_t[:, :, ::1] dst = out
        if n:
            memcpy(&dst[0, 0, 0], self.E.takers, <size_t>n * (n + 1) * NR_TAKER_RULES * sizeof(uint64_t))
        return out

    def counter_value(self, uint32_t sub, int k, int64_t ts):
        """A subscriber's counter as the matcher would read it at ts."""
        if sub >= self.E.nr_subscribers or not 0 <= k < self.E.nr_counters:
            raise IndexError("no such subscriber or counter")
        return counter_read(&self.E, row_of(&self.E, sub), k, ts)


assert FUNNEL.index("converted_global_control") - FUNNEL.index("converted_send") == 2 \
    and FUNNEL.index("converted_control") - FUNNEL.index("converted_send") == 1
assert len(FUNNEL) == NR_FUNNEL and len(BAD_REASONS) == NR_REASONS and len(BAD_FIELDS) == NR_FIELDS + 1
assert DEAD_LETTER_BYTES == DEAD_BYTES and DEAD_LETTER_SPAN_BITS == DEAD_SPAN_BITS
assert DEAD_LETTER_DTYPE.itemsize == sizeof(DeadLetterC) and EXPLAIN_DTYPE.itemsize == sizeof(ExplainC)
assert len(EXPLAIN_LINES) == X_CONTACT + 1 and len(MATCH_CONDITIONS) == XC_PENDING + 1
assert len(TAKER_RULES) == NR_TAKER_RULES and len(RECHECKS) == 4 and RECHECK_HOURS == 1 << 3
assert NR_FUNNEL < EMIT_CONTACT < EMIT_LOST < 256
# the matching loop takes FN_BLACKLIST..FN_MAX_IN_WINDOW as the policy's turn-downs, in emit's order
assert FN_BLACKLIST + 1 == FN_QUIET_HOURS and FN_QUIET_HOURS + 1 == FN_MIN_GAP and FN_MIN_GAP + 1 == FN_MAX_PER_DAY \
    and FN_MAX_PER_DAY + 1 == FN_MAX_IN_WINDOW and FN_MAX_IN_WINDOW + 1 == FN_COOLDOWN
assert STREAM_STATUSES[ST_CORRUPT] == "corrupt" and STREAM_STATUSES[ST_TOO_LARGE] == "too_large" \
    and STREAM_STATUSES[ST_TRUNCATED] == "truncated" and STREAM_STATUSES[ST_NOMEM] == "out_of_memory"


include "_campaigns.pxi"
include "_persist.pxi"
include "_lanes.pxi"
