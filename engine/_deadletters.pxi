# Dead letters (SPEC §4, included by _core.pyx): runs of identical bad values become one record,
# at most max_dead_letters records per 64 MiB span of stream offsets.


cdef void flush_run(EngineC* E, DeadRunC* r) noexcept nogil:
    """End the open run: it becomes one record, unless max_dead_letters records already
    started in its span. Runs end in stream order, so the span only ever moves on."""
    cdef DeadLetterC* d
    cdef uint64_t span
    if r.count == 0:
        return
    span = r.offset >> DEAD_SPAN_BITS
    if span != r.span:
        r.span = span
        r.span_records = 0
    if r.span_records < E.max_dead_letters:
        if E.nr_dead == E.cap_dead:
            E.dead = <DeadLetterC*>grow(E.dead, &E.cap_dead, sizeof(DeadLetterC), &E.oom)
            if E.oom:
                return
        d = &E.dead[E.nr_dead]
        E.nr_dead += 1
        r.span_records += 1
        memset(d, 0, sizeof(DeadLetterC))
        d.offset = r.offset
        d.count = r.count
        d.reason = r.reason
        d.field = r.field
        d.nbytes = <uint16_t>(r.len if r.len < DEAD_BYTES else DEAD_BYTES)
        memcpy(d.bytes, r.bytes, d.nbytes)
    r.count = 0


cdef void add_dead_letter(EngineC* E, DeadRunC* r, const uint8_t* buf, size_t start, size_t end,
                          uint64_t offset, int reason, int field) noexcept nogil:
    """A bad value at `offset`, buf[start:end] (at most max_event_bytes): counted, and joined
    to the open run when it is the same value for the same reason, else the run it ends is
    written and a new one opens. The bytes are compared whole, so a run is exactly the
    identical values, and only offsets decide the records."""
    cdef size_t n = end - start
    E.bad[reason] += 1
    E.bad_field[reason][field] += 1
    E.bad_bytes += n
    if n > E.bad_largest:
        E.bad_largest = n
        E.bad_largest_offset = offset
    if (r.count and r.reason == reason and r.field == field and r.len == n
            and memcmp(r.bytes, buf + start, n) == 0 and r.count != <uint64_t>-1):
        r.count += 1
        return
    flush_run(E, r)
    memcpy(r.bytes, buf + start, n)
    r.len = <uint32_t>n
    r.offset = offset
    r.reason = <uint16_t>reason
    r.field = <uint16_t>field
    r.count = 1
