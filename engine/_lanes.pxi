# A worker's lane (included by _core.pyx after the Core class, whose attach_shard, shard_export
# and shard_import call these): attaching to the block the workers share, and a lane copied out
# for the workers of other hosts and back in (engine.workers.cluster). The nogil side, the waits
# and the publications of every event, is _shard.pxi.


cdef _attach_shard(Core self, block, int shard, int nshards, int ring_bits, uint64_t delayed_campaigns,
                   bint copied, bint resume):
    # Core.attach_shard
    cdef uint8_t[::1] view = block
    cdef uint64_t nb = <uint64_t>(self.E.nr_campaigns + self.E.nr_channels)
    cdef uint32_t i
    if not (2 <= nshards <= SHARD_MAX and 0 <= shard < nshards and 4 <= ring_bits <= 24):
        raise ValueError(f"shard {shard} of {nshards} (ring 2**{ring_bits}) is out of range")
    if view.shape[0] < shard_block_size(nshards, nb, ring_bits):
        raise ValueError("the shared block is too small for this configuration")
    if not resume and (self.E.events or self.E.nr_timers or self.E.seq):
        raise ValueError("a worker must start from a fresh state")
    self._block = block
    self.E.lane_stride = shard_lane_stride(nb, 1ULL << ring_bits)
    self.E.ring_mask = (1ULL << ring_bits) - 1
    self.E.nshards = nshards
    self.E.shard = shard
    self.E.delayed_campaigns = max(delayed_campaigns, 1)
    self.E.skew_until = 0
    self.E.shard_fired = 0
    self.E.pub_pos = 0
    self.E.pub_due = 0
    self.E.pub_created = 0
    self.E.yield_rounds = 64 if copied else 20000
    self.E.shm = &view[0]
    # each worker's events from here on: the slots written before cannot be told apart
    free(self.E.owner_cnt)
    free(self.E.owner_ring)
    self.E.owner_cnt = self.E.owner_ring = NULL
    if shard_classes(&self.E, nshards):
        self.E.shm = NULL
        raise MemoryError()
    self.E.owner_cnt = <uint32_t*>calloc(<size_t>nshards * self.E.nr_classes, sizeof(uint32_t))
    self.E.owner_ring = <uint32_t*>calloc(<size_t>SHARD_OWNER_SLOTS * nshards * self.E.nr_classes,
                                          sizeof(uint32_t))
    if self.E.owner_cnt == NULL or self.E.owner_ring == NULL:
        self.E.shm = NULL
        raise MemoryError()
    self.E.owner_from = (self.E.events + SHARD_OWNER_EVERY - 1) // SHARD_OWNER_EVERY
    self.E.owner_next = self.E.owner_from
    # timers due soon: none counted yet, but the heap's (a checkpoint's, a reload's, in no
    # order), which count as soon for as long as they wait; the first event ticks
    self.E.horizon_pub = INT64_MIN
    for i in range(<uint32_t>self.E.nr_runs):
        self.E.runs[i].soon = 0
    for i in range(<uint32_t>self.E.heap_n):
        # a heap's timer (a checkpoint's, a reload's) counts as due soon while it waits
        lane_add(&self.E, lane_soon(&self.E, shard), self.E.heap[i].campaign, 1)
    if resume:
        # What the others read of this worker, as it stands: its budget counts, its
        # timers, and that its work up to the last event is done (a key published lower
        # than the truth only makes them wait longer). In the order of every other
        # write to a lane: a reader takes the key, then the timers, then the counts, so
        # a key must never be seen before what it covers
        self.E.shard_fired = self.E.events
        sm_begin(&lane_of(&self.E, shard).bver)
        for i in range(<uint32_t>nb):
            lane_budgets(&self.E, shard)[i] = self.E.budgets[i]
        sm_end(&lane_of(&self.E, shard).bver)
        for i in range(<uint32_t>self.E.nr_campaigns):
            lane_pend(&self.E, shard)[i] = self.E.pending_by_campaign[i]
            lane_pend(&self.E, shard)[self.E.nr_campaigns + self.E.campaigns[i].channel] += \
                self.E.pending_by_campaign[i]
        shard_note_pending(&self.E)
        shard_publish(&self.E, self.E.events, SHARD_EVENT_DUE, 0)


cdef _shard_export(Core self, uint64_t ring_from):
    # Core.shard_export
    if self.E.shm == NULL:
        raise ValueError("not a worker of a sharded run")
    cdef sm_lane* l = lane_of(&self.E, self.E.shard)
    cdef uint64_t key[3]
    cdef uint64_t pend, hw, upto, upto_after, lo, ring_len = self.E.ring_mask + 1, q
    cdef size_t nb = <size_t>(self.E.nr_campaigns + self.E.nr_channels)
    cdef size_t n = nb * sizeof(BudgetC)
    # the timers pending by budget (nb words), then the budget counts: read in that order
    cdef bytearray counts = bytearray(nb * sizeof(uint64_t) + n)
    cdef uint64_t* pend_by = <uint64_t*><uint8_t*>counts
    cdef uint64_t* ring = lane_ring(&self.E, self.E.shard)
    cdef size_t b
    sm_read_copy(&l.ver, key, &l.pos, sizeof(key))
    pend = sm_load(&l.pend)
    hw = sm_load(&l.hw)
    for b in range(nb):
        pend_by[b] = sm_load(&lane_pend(&self.E, self.E.shard)[b])
    if n:
        sm_read_copy(&l.bver, (<uint8_t*>counts) + nb * sizeof(uint64_t),
                     lane_budgets(&self.E, self.E.shard), n)
    upto = sm_load(&l.ring_upto)
    lo = max(ring_from, upto - ring_len if upto > ring_len else 0)
    values = np.empty(upto - lo if upto > lo else 0, np.uint64)
    cdef uint64_t[::1] v = values
    for q in range(lo, lo + <uint64_t>v.shape[0]):
        v[q - lo] = ring[q & self.E.ring_mask]
    # the worker may have lapped the ring meanwhile: drop the slots it may have
    # overwritten, as far as ring_upto tells (it lags the ring's writes by up to
    # SHARD_PUBLISH_EVERY events; a slot kept that holds a newer count lies below every
    # reader's position, and is written again in order by a later export)
    upto_after = sm_load(&l.ring_upto)
    if upto_after > ring_len and upto_after - ring_len > lo:
        cut = min(<uint64_t>v.shape[0], upto_after - ring_len - lo)
        values = values[cut:]
        lo += cut
    return ((key[0], <int64_t>key[1], key[2]), pend, hw, bytes(counts), lo, values)


cdef _shard_import(Core self, int j, key, uint64_t pend, uint64_t hw, const uint8_t[::1] counts,
                   uint64_t ring_from, const uint64_t[::1] ring):
    # Core.shard_import
    if self.E.shm == NULL:
        raise ValueError("not a worker of a sharded run")
    if not (0 <= j < self.E.nshards) or j == self.E.shard:
        raise ValueError(f"lane {j} is not another worker's")
    cdef size_t nb = <size_t>(self.E.nr_campaigns + self.E.nr_channels)
    cdef size_t n = nb * sizeof(BudgetC)
    if <size_t>counts.shape[0] != nb * sizeof(uint64_t) + n:
        raise ValueError(f"lane {j}: {counts.shape[0]} bytes of budget counts, "
                         f"not {nb * sizeof(uint64_t) + n}")
    cdef sm_lane* l = lane_of(&self.E, j)
    cdef uint64_t* dst = lane_ring(&self.E, j)
    cdef Py_ssize_t i
    cdef uint64_t word
    for i in range(ring.shape[0]):
        dst[(ring_from + <uint64_t>i) & self.E.ring_mask] = ring[i]
    if ring.shape[0]:
        sm_store(&l.ring_upto, ring_from + <uint64_t>ring.shape[0])
    if n:
        sm_begin(&l.bver)
        memcpy(lane_budgets(&self.E, j), &counts[nb * sizeof(uint64_t)], n)
        sm_end(&l.bver)
    for i in range(<Py_ssize_t>nb):
        memcpy(&word, &counts[i * sizeof(uint64_t)], sizeof(uint64_t))
        sm_store(&lane_pend(&self.E, j)[i], word)
    sm_store(&l.hw, hw)
    sm_store(&l.pend, pend)
    sm_publish(l, <uint64_t>key[0], <int64_t>key[1], <uint64_t>key[2])
