# The cold paths (included by _core.pyx): the explanation of watched subscribers (`sigmatch
# explain`, the daemon's /subscriber/{msisdn}/explain) and the contacts a campaign loses to
# another through the policy (`sigmatch diff`). Nothing here runs unless asked for: the hot
# path tests E.watch_bits once per event and per timer, and E.takers once per suppression by
# min_gap, max_per_day or max_in_window.

# What an ExplainC line says (engine.records.EXPLAIN_LINES names them, in this order)
cdef enum:
    X_EVENT = 0         # a good event: ts (effective), other (its own ts), value (type), cell; code 1: inactive
    X_CONVERSION = 1    # seq (conversion seq), other (contact seq), campaign, kind
    X_MATCH = 2         # campaign, code (XC_*: matched or the first condition that failed)
    X_EMIT = 3          # ts (t), campaign, code (emit's outcome); seq and kind of a contact
    X_SCHEDULED = 4     # campaign, other (due)
    X_OVERFLOW = 5      # campaign (max_pending reached: dropped)
    X_TIMER = 6         # ts (due), campaign, other (trigger_ts), cell
    X_STATE = 7         # ts, other (last contact of any campaign, -1: never), value (contacts on
                        # ts's local day), cell, code (SUB_* flags); then its counters, markers, contacts
    X_COUNTER = 8       # campaign (counter index), value (as read at ts; only non-zero ones)
    X_MARKER = 9        # campaign (marker index), other (its time; only set ones)
    X_CONTACT = 10      # campaign, ts (last contact), seq, value (streak), code (CONTACT_* flags)

# SPEC §3 step 6 conditions, in the order the explanation looks at them: the first that fails
# is named (engine.records.MATCH_CONDITIONS). Audience, exclude, blacklist and where are one
# eligibility bit here; the Python layer tells them apart from the lists (only then is the
# bit false because of `where`).
cdef enum:
    XC_MATCHED = 0
    XC_ENABLED = 1
    XC_DATES = 2
    XC_FLAGS = 3
    XC_ARG = 4
    XC_ELIGIBILITY = 5
    XC_PEER_IN = 6
    XC_AREA = 7
    XC_ENTER = 8
    XC_HOURS = 9
    XC_DAYS = 10
    XC_COUNTER = 11
    XC_WHEN = 12
    XC_AFTER = 13
    XC_NOT_AFTER = 14
    XC_ANNIVERSARY = 15
    XC_STOP_AFTER = 16
    XC_ONCE = 17
    XC_COOLDOWN = 18
    XC_PENDING = 19

# emit's outcome: a FN_* suppression slot (a failed recheck adds RECHECK_* << 8, the first
# that failed in the SPEC's order), EMIT_CONTACT, or EMIT_LOST (out of memory)
cdef enum:
    EMIT_CONTACT = 254
    EMIT_LOST = 255

# The policy rules through which a contact is lost to another campaign's contact
cdef enum:
    TK_MIN_GAP = 0
    TK_MAX_PER_DAY = 1
    TK_MAX_IN_WINDOW = 2
    NR_TAKER_RULES = 3


cdef inline bint watch_bit(EngineC* E, uint32_t sub) noexcept nogil:
    return (E.watch_bits[sub >> 6] >> (sub & 63)) & 1


cdef ExplainC* explain_line(EngineC* E, uint16_t what, uint32_t sub, int64_t ts) noexcept nogil:
    """A new, zeroed line; NULL (and E.oom) when the buffer cannot grow."""
    cdef ExplainC* x
    if E.nr_explain == E.cap_explain:
        E.explain = <ExplainC*>grow(E.explain, &E.cap_explain, sizeof(ExplainC), &E.oom)
        if E.oom:
            return NULL
    x = &E.explain[E.nr_explain]
    E.nr_explain += 1
    memset(x, 0, sizeof(ExplainC))
    x.what = what
    x.subscriber = sub
    x.ts = ts
    return x


cdef void explain_event(EngineC* E, EventC* ev, uint32_t sub, int64_t ts, uint16_t code) noexcept nogil:
    cdef ExplainC* x = explain_line(E, X_EVENT, sub, ts)
    if x != NULL:
        x.other = ev.ts
        x.value = <uint32_t>ev.type
        x.cell = ev.cell
        x.code = code


cdef void explain_conversion(EngineC* E, uint32_t sub, ConversionC* conv) noexcept nogil:
    cdef ExplainC* x = explain_line(E, X_CONVERSION, sub, conv.ts)
    if x != NULL:
        x.seq = conv.seq
        x.other = <int64_t>conv.contact_seq
        x.campaign = conv.campaign
        x.kind = conv.kind


cdef void explain_emit(EngineC* E, uint32_t sub, uint32_t ci, int64_t t, int outcome) noexcept nogil:
    cdef ExplainC* x
    if outcome == EMIT_LOST:
        return
    x = explain_line(E, X_EMIT, sub, t)
    if x != NULL:
        x.campaign = <uint16_t>ci
        x.code = <uint16_t>outcome
        if outcome == EMIT_CONTACT:
            x.seq = E.seq
            x.kind = E.actions[E.nr_actions - 1].kind


cdef void explain_campaign(EngineC* E, uint16_t what, uint32_t sub, uint32_t ci, int64_t ts,
                           int64_t other) noexcept nogil:
    cdef ExplainC* x = explain_line(E, what, sub, ts)
    if x != NULL:
        x.campaign = <uint16_t>ci
        x.other = other


cdef void explain_timer(EngineC* E, TimerC* t) noexcept nogil:
    cdef ExplainC* x = explain_line(E, X_TIMER, t.subscriber, t.due)
    if x != NULL:
        x.campaign = <uint16_t>t.campaign
        x.other = t.trigger_ts
        x.cell = t.cell


cdef uint16_t first_failure(EngineC* E, EventC* ev, uint32_t sub, uint32_t ci, int64_t ts,
                            uint32_t prev) noexcept nogil:
    """The first condition of SPEC §3 step 6, in MATCH_CONDITIONS order, that campaign ci
    fails for this event (XC_MATCHED when none). The same tests as process_event's, one by
    one: campaigns of one event never change each other's matching (only their own contact,
    pending pair and the policy's counts), so asking before the matching loop is exact. (Written
    apart from process_event's text on purpose: the mutation check finds each of its mutants'
    text once in the core's sources.)"""
    cdef CampaignC* c = &E.campaigns[ci]
    cdef uint8_t* row = row_of(E, sub)
    cdef SubHeadC* h = <SubHeadC*>row
    cdef uint64_t* cur_areas
    cdef uint64_t* prev_areas
    cdef int64_t local = ts + E.utc_offset
    cdef int64_t day = floor_div(local, DAY_MS)
    cdef int32_t minute = <int32_t>((local - day * DAY_MS) / 60000)
    cdef int32_t weekday = <int32_t>(day + 3 - floor_div(day + 3, 7) * 7)     # Monday 0
    cdef int64_t* marks = <int64_t*>(row + E.marker_off)
    cdef MarkCondC* k
    cdef int64_t m
    cdef int32_t i
    cdef ContactC* contact
    if not c.enabled:
        return XC_ENABLED
    if day < c.start_day or day > c.end_day:
        return XC_DATES
    if (ev.flags & c.flags) != c.flags:
        return XC_FLAGS
    if c.has_arg and ev.arg != c.arg:
        return XC_ARG
    if not elig_bit(E, row, c.elig_word, c.elig_mask):
        return XC_ELIGIBILITY
    if c.peer_set >= 0 and (not ev.peer or not peer_contains(&E.peer_sets[c.peer_set], ev.peer)):
        return XC_PEER_IN
    if c.area_word >= 0:
        cur_areas = area_word_of(E, ev.cell) if E.nr_area_words else NULL
        prev_areas = area_word_of(E, prev) if E.nr_area_words else NULL
        if cur_areas == NULL or not (cur_areas[c.area_word] & c.area_mask):
            return XC_AREA
        if c.enter and NULL != prev_areas and prev_areas[c.area_word] & c.area_mask:
            return XC_ENTER
    if c.hours_start >= 0 and not in_window(minute, c.hours_start, c.hours_end):
        return XC_HOURS
    if not ((c.days >> weekday) & 1):
        return XC_DAYS
    if c.counter >= 0 and c.at_least > counter_read(E, row, c.counter, ts):
        return XC_COUNTER
    if c.when_len and not when_true(E, row, c, ts):
        return XC_WHEN
    for i in range(c.cond_off, c.cond_off + c.nr_conds):
        k = &E.conds[i]
        m = marks[k.marker]
        if not k.negate and (m == 0 or ts - (m - 1) >= k.within):
            return XC_AFTER
    for i in range(c.cond_off, c.cond_off + c.nr_conds):
        k = &E.conds[i]
        m = marks[k.marker]
        if k.negate and m != 0 and ts - (m - 1) < k.within:
            return XC_NOT_AFTER
    if c.date_slot >= 0 and not anniversary_today(month_day_of(day), E.dates[<size_t>sub * E.nr_dates + c.date_slot]):
        return XC_ANNIVERSARY
    contact = find_contact(E, sub, ci, False) if h.flags & SUB_HAS_CONTACT else NULL
    if contact != NULL:
        if contact.streak >= c.stop_after:
            return XC_STOP_AFTER
        if contact.flags & CONTACT_CONTACTED and c.once:
            return XC_ONCE
        if contact.flags & CONTACT_CONTACTED and ts < contact.last_ts + c.cooldown:
            return XC_COOLDOWN
    if is_pending(E, sub, ci, h):
        return XC_PENDING
    return XC_MATCHED


cdef void explain_matching(EngineC* E, EventC* ev, uint32_t sub, int64_t ts, uint32_t prev) noexcept nogil:
    """An X_MATCH line for every campaign of the event's type, in priority order."""
    cdef uint32_t i, ci
    cdef ExplainC* x
    for i in range(E.by_type_off[ev.type], E.by_type_off[ev.type + 1]):
        ci = E.trig_list[i]
        x = explain_line(E, X_MATCH, sub, ts)
        if x == NULL:
            return
        x.campaign = <uint16_t>ci
        x.code = first_failure(E, ev, sub, ci, ts, prev)


cdef void explain_state(EngineC* E, uint32_t sub, int64_t ts) noexcept nogil:
    """The subscriber's state after an event or a timer: an X_STATE line, then its non-zero
    counters (as read at ts), its set markers and its contact state, campaign by campaign."""
    cdef uint8_t* row = row_of(E, sub)
    cdef SubHeadC* h = <SubHeadC*>row
    cdef int64_t* marks = <int64_t*>(row + E.marker_off)
    cdef ExplainC* x = explain_line(E, X_STATE, sub, ts)
    cdef ContactC* contact
    cdef uint32_t v
    cdef int32_t k
    cdef bint pending
    if x == NULL:
        return
    x.other = h.last_any_p1 - 1 if h.last_any_p1 else -1
    x.value = h.day_count if h.day == floor_div(ts + E.utc_offset, DAY_MS) else 0
    x.cell = h.cell
    x.code = h.flags
    for k in range(E.nr_counters):
        v = counter_read(E, row, k, ts)
        if v:
            x = explain_line(E, X_COUNTER, sub, ts)
            if x == NULL:
                return
            x.campaign = <uint16_t>k
            x.value = v
    for k in range(E.nr_markers):
        if marks[k]:
            x = explain_line(E, X_MARKER, sub, ts)
            if x == NULL:
                return
            x.campaign = <uint16_t>k
            x.other = marks[k] - 1
    if not (h.flags & SUB_HAS_CONTACT) and h.pending == 0:
        return
    for k in range(E.nr_campaigns):
        contact = find_contact(E, sub, <uint32_t>k, False) if h.flags & SUB_HAS_CONTACT else NULL
        pending = is_pending(E, sub, <uint32_t>k, h)
        if contact == NULL and not pending:
            continue
        x = explain_line(E, X_CONTACT, sub, contact.last_ts if contact != NULL else 0)
        if x == NULL:
            return
        x.campaign = <uint16_t>k
        x.seq = contact.last_seq if contact != NULL else 0
        x.value = contact.streak if contact != NULL else 0
        x.code = <uint16_t>((contact.flags if contact != NULL else 0) | (CONTACT_PENDING if pending else 0))


cdef void count_taker(EngineC* E, uint32_t sub, uint32_t ci, int rule) noexcept nogil:
    """Campaign ci lost a contact through `rule`: count it against the campaign of the
    subscriber's latest contact (the largest seq). Emission times never go back, so that
    contact is the latest in the gap, the day and the window alike: the one that made the
    rule fail. A contact whose campaign a reload removed counts against nr_campaigns."""
    cdef uint32_t k, taker = <uint32_t>E.nr_campaigns
    cdef uint64_t best = 0
    cdef ContactC* contact
    for k in range(<uint32_t>E.nr_campaigns):
        contact = find_contact(E, sub, k, False)
        if contact != NULL and contact.flags & CONTACT_CONTACTED and contact.last_seq > best:
            best = contact.last_seq
            taker = k
    E.takers[(<size_t>ci * (E.nr_campaigns + 1) + taker) * NR_TAKER_RULES + rule] += 1
