# The semantics of SPEC §3 (included by _core.pyx): an event's steps 2 to 6 (process_event),
# a due timer (fire_timer) and emission with its rechecks, policy and contact (emit, step 7).


cdef int emit(EngineC* E, uint32_t ci, uint32_t sub, int64_t t, int64_t trigger_ts,
             uint32_t cell, bint delayed) noexcept nogil:
    """SPEC §3 step 7: rechecks (delayed actions), policy, then the contact. Returns the
    outcome for the explanation: the FUNNEL slot that suppressed it (a failed recheck adds
    which one, RECHECK_* << 8), EMIT_CONTACT, or EMIT_LOST when memory ran out."""
    cdef CampaignC* c = &E.campaigns[ci]
    cdef uint8_t* row = row_of(E, sub)
    cdef SubHeadC* h = <SubHeadC*>row
    cdef uint64_t* fun = E.funnel + <size_t>ci * NR_FUNNEL
    cdef ContactC* contact
    cdef BudgetC* budget
    cdef BudgetC* channel
    cdef int64_t* times
    cdef int64_t local, day
    cdef int32_t minute
    cdef uint32_t today
    cdef uint8_t kind
    cdef uint32_t failed, prefix
    cdef ActionC* a
    cdef uint64_t camp_day, camp_total, chan_day
    # the campaign's life first: a reload may have disabled it, a delay may outlive its end
    if not c.enabled:
        fun[FN_DISABLED] += 1
        return FN_DISABLED
    local = t + E.utc_offset
    day = day_at(E, t)
    if day < c.start_day or day > c.end_day:
        fun[FN_ENDED] += 1
        return FN_ENDED
    if delayed and c.recheck:
        # the first that fails, in the SPEC's order, is the one the explanation names
        failed = (RECHECK_AREA if c.recheck & RECHECK_AREA and not in_area(E, h.cell, c)
                  else RECHECK_POWERED_ON if c.recheck & RECHECK_POWERED_ON and h.flags & SUB_POWERED_OFF
                  else RECHECK_AUDIENCE if (c.recheck & RECHECK_AUDIENCE
                                            and not elig_bit(E, row, c.recheck_word, c.recheck_mask))
                  else RECHECK_HOURS if c.recheck & RECHECK_HOURS and not in_hours(E, c, t)
                  else 0)
        if failed:
            fun[FN_RECHECK_FAILED] += 1
            return FN_RECHECK_FAILED | (failed << 8)
    # absent: always looked at for a delayed action, after the rechecks, never one of them
    if delayed and c.nr_absent and marked_since(E, row, c, trigger_ts):
        fun[FN_ABSENT] += 1
        return FN_ABSENT
    # From here to the cooldown, the policy: what it reads of the campaign is its exemptions
    # alone, as the matching loop counts on (it reuses a turn-down for a campaign of the same
    # exemptions): a rule that read more would have to be part of that loop's key.
    if not elig_bit(E, row, E.unblocked_word, E.unblocked_mask):
        fun[FN_BLACKLIST] += 1
        return FN_BLACKLIST
    if E.quiet_start >= 0 and not (c.exempt & EXEMPT_QUIET_HOURS):
        minute = <int32_t>((local - day * DAY_MS) / 60000)
        if in_window(minute, E.quiet_start, E.quiet_end):
            fun[FN_QUIET_HOURS] += 1
            return FN_QUIET_HOURS
    if not (c.exempt & EXEMPT_MIN_GAP) and h.last_any_p1 != 0 and t < h.last_any_p1 - 1 + E.min_gap:
        fun[FN_MIN_GAP] += 1
        if E.takers != NULL:
            count_taker(E, sub, ci, TK_MIN_GAP)
        return FN_MIN_GAP
    today = h.day_count if h.day == day else 0
    if not (c.exempt & EXEMPT_MAX_PER_DAY) and today >= E.max_per_day:
        fun[FN_MAX_PER_DAY] += 1
        if E.takers != NULL:
            count_taker(E, sub, ci, TK_MAX_PER_DAY)
        return FN_MAX_PER_DAY
    # Times are kept oldest first and t never goes back: the window holds window_n contacts
    # exactly when window_n are kept and the oldest of them is inside it.
    if E.window_n and not (c.exempt & EXEMPT_MAX_IN_WINDOW):
        # a subscriber never contacted keeps no times: its empty slot is not looked for
        times = find_window(E, sub, False) if h.last_any_p1 else NULL
        if times != NULL and (times[1] & 0xFF) == E.window_n and times[2 + (times[1] >> 8)] > t - E.window_ms:
            fun[FN_MAX_IN_WINDOW] += 1
            if E.takers != NULL:
                count_taker(E, sub, ci, TK_MAX_IN_WINDOW)
            return FN_MAX_IN_WINDOW
    # Looked up here, made only once the contact is made (below): a contact state for every
    # emission a budget turns down filled the table with empty entries (the uniform world of
    # bench.rare: 2.07M contact states for 585k actions), each a miss on a slot of fresh memory.
    contact = contact_lookup(E, sub, ci, h)
    if contact != NULL and contact.flags & CONTACT_CONTACTED and t < contact.last_ts + c.cooldown:
        fun[FN_COOLDOWN] += 1
        return FN_COOLDOWN
    # Budgets are never exempt, and count sends only; they are checked before the kind is
    # decided, so a spent budget stops controls too (SPEC §3 step 7). Found only here: most
    # emissions are turned down before (at 200 campaigns 5.92M of the sweep world's 6.29M,
    # by min_gap mostly), and the pointers made at the top were kept on the stack for each.
    budget = &E.budgets[ci]
    channel = &E.budgets[E.nr_campaigns + c.channel]
    camp_day = budget.day_sends if budget.day == day else 0
    camp_total = budget.total
    chan_day = channel.day_sends if channel.day == day else 0
    if E.shm != NULL and (c.daily_budget != NO_BUDGET or c.total_budget != NO_BUDGET
                          or E.channel_daily[c.channel] != NO_BUDGET):
        # every worker's sends count (_shard.pxi): the counts before this key, over all
        camp_day = camp_total = chan_day = 0
        if shard_budgets(E, ci, day, &camp_day, &camp_total, &chan_day):
            return EMIT_LOST
    if camp_day >= c.daily_budget or camp_total >= c.total_budget:
        fun[FN_CAMPAIGN_BUDGET] += 1
        return FN_CAMPAIGN_BUDGET
    if chan_day >= E.channel_daily[c.channel]:
        fun[FN_CHANNEL_BUDGET] += 1
        return FN_CHANNEL_BUDGET
    if E.nr_actions == E.cap_actions:
        E.actions = <ActionC*>grow(E.actions, &E.cap_actions, sizeof(ActionC), &E.oom)
        if E.oom:
            return EMIT_LOST
    times = NULL
    if E.window_n:
        times = find_window(E, sub, True)
        if times == NULL:
            return EMIT_LOST
    if contact == NULL:
        contact = find_contact(E, sub, ci, True)
        if contact == NULL:
            return EMIT_LOST
    # the programme's control group first: a global control is one whatever the campaign.
    # One CRC32 of f"{msisdn}:" serves the three hashes: made for each, the decimal MSISDN
    # and its CRCs took 5% of the core's instructions on bench.rare's uniform world
    prefix = msisdn_prefix(h.msisdn) if (E.global_holdout or c.holdout or c.nr_variants > 1) else 0
    if E.global_holdout and sm_crc32(prefix, <const uint8_t*>GLOBAL_ID, 6) % 10000 < E.global_holdout:
        kind = 2
    else:
        kind = 1 if (c.holdout and sm_crc32(prefix, <const uint8_t*>c.id, c.id_len) % 10000 < c.holdout) else 0
    E.seq += 1
    contact.last_ts = t
    contact.last_seq = E.seq
    contact.streak += 1
    contact.flags = (CONTACT_CONTACTED
                     | (CONTACT_CONTROL if kind == 1 else CONTACT_GLOBAL_CONTROL if kind == 2 else 0))
    h.last_any_p1 = t + 1
    h.day = <int32_t>day
    h.day_count = today + 1
    if times != NULL:
        window_add(E, times, t)
    note_row(E, sub, h)
    note_contact(E, contact)
    fun[FN_CONTROL if kind == 1 else FN_GLOBAL_CONTROL if kind == 2 else FN_SENT] += 1
    if kind == 0:
        count_send(budget, day)
        count_send(channel, day)
        if E.shm != NULL:
            shard_mirror(E, ci)
    a = &E.actions[E.nr_actions]
    E.nr_actions += 1
    a.seq = E.seq
    a.ts = t
    a.trigger_ts = trigger_ts
    a.msisdn = h.msisdn
    a.cell = cell
    a.campaign = <uint16_t>ci
    a.kind = kind
    a.variant = variant_by(E, c, prefix)
    if E.shm != NULL and shard_note_action(E):
        return EMIT_LOST
    return EMIT_CONTACT


cdef inline void count_send(BudgetC* b, int64_t day) noexcept nogil:
    if b.day != day:
        b.day = day
        b.day_sends = 0
    b.day_sends += 1
    b.total += 1


cdef void fire_timer(EngineC* E) noexcept nogil:
    cdef TimerC t
    cdef int outcome
    cdef bint watched
    timer_pop(E, &t)
    watched = E.watch_bits != NULL and watch_bit(E, t.subscriber)
    if watched:
        explain_timer(E, &t)
    pending_remove(E, t.subscriber, t.campaign, t.pending_slot)
    note_row(E, t.subscriber, <SubHeadC*>row_of(E, t.subscriber))
    E.cur_due = t.due
    E.cur_created = t.created
    outcome = emit(E, t.campaign, t.subscriber, t.due, t.trigger_ts, t.cell, True)
    if E.shm != NULL:
        # only now that its send, if any, is in this lane's counts: another worker bounding
        # what this one may still send (shard_budgets) reads the pending counts, then the
        # counts, and would otherwise find this timer in neither
        shard_note_timers(E, t.campaign, -1, E.popped_soon)
        shard_note_pending(E)
    if watched:
        explain_emit(E, t.subscriber, t.campaign, t.due, outcome)
        explain_state(E, t.subscriber, t.due)


cdef void refresh_times(EngineC* E, int64_t ts, int64_t minute) noexcept nogil:
    """Every type's mask of the campaigns that are enabled and whose dates, hours and days
    hold at ts's local minute; O(campaigns of all types), once a minute. Matching tests
    these in this mask only."""
    cdef int32_t t
    cdef uint32_t i, lo, n
    cdef uint64_t* m
    cdef CampaignC* c
    cdef int64_t day = floor_div(ts + E.utc_offset, DAY_MS)
    for t in range(64):
        lo = E.by_type_off[t]
        n = E.by_type_off[t + 1] - lo
        if n == 0:
            continue
        m = E.pos_pool + E.time_off[t]
        memset(m, 0, ((n + 63) >> 6) * sizeof(uint64_t))
        for i in range(n):
            c = &E.campaigns[E.trig_list[lo + i]]
            if not c.enabled or day < c.start_day or day > c.end_day:
                continue
            if (c.hours_start >= 0 or c.days != 0x7F) and not in_hours(E, c, ts):
                continue
            m[i >> 6] |= 1ULL << (i & 63)
    E.time_lo = minute * 60000 - E.utc_offset
    E.time_hi = E.time_lo + 60000
    E.time_valid = 1


cdef uint32_t match_candidates(EngineC* E, EventC* ev, uint8_t* row, int64_t ts,
                               uint64_t* cand) noexcept nogil:
    """The campaigns of the event's type that it may match, as elig_candidates gives them
    (cand[0 : P], P returned, 0 for none), less those disabled and those that the event's
    minute, flags, the row's counters or the cell's areas rule out: exactly, as matching
    tests none of these again. The type must have campaigns."""
    cdef int32_t t = ev.type, w, A = E.cand_area_words
    cdef uint32_t P = elig_candidates(E, t, row, cand), p, g, j
    cdef uint64_t x, hit = 0
    cdef uint64_t* m
    cdef uint64_t* areas
    cdef uint64_t* allowed
    cdef CandCounterC* grp
    cdef uint32_t v
    if P == 0:
        return 0
    # the minute's bounds kept: its division, for every event with candidates, was 1% of
    # the sweep world's instructions at 200 campaigns
    if not (E.time_valid and E.time_lo <= ts < E.time_hi):
        refresh_times(E, ts, floor_div(ts + E.utc_offset, 60000))
    m = E.pos_pool + E.time_off[t]
    for p in range(P):
        cand[p] &= m[p]
    x = E.flag_union[t] & ~ev.flags
    while x:
        m = E.pos_pool + E.flag_slot[t * 64 + sm_ctz64(x)]
        for p in range(P):
            cand[p] &= ~m[p]
        x &= x - 1
    for g in range(E.cgrp_off[t], E.cgrp_off[t + 1]):
        grp = &E.cgrps[g]
        v = counter_read(E, row, grp.counter, ts)
        # The thresholds fall from cthr[first]: j ends past those above v. Counted from the
        # lowest, a counter below every threshold (the common case: most counters are
        # small) costs one comparison, where counted from the highest it cost n.
        j = grp.first + grp.n
        while j > grp.first and E.cthr[j - 1] <= v:
            j -= 1
        if j > grp.first:
            m = E.pos_pool + E.cthr_slot[j - 1]
            for p in range(P):
                cand[p] &= ~m[p]
    if E.area_off[t] != NO_MASK:
        m = E.pos_pool + E.area_off[t]
        allowed = E.cand + E.cand_max_words          # the second scratch
        for p in range(P):
            allowed[p] = ~m[p]
        areas = area_word_of(E, ev.cell) if A else NULL
        if areas != NULL:
            for w in range(A):
                x = areas[w] & E.area_union[t * A + w]
                while x:
                    m = E.pos_pool + E.area_slot[(t * A + w) * 64 + sm_ctz64(x)]
                    for p in range(P):
                        allowed[p] |= m[p]
                    x &= x - 1
        for p in range(P):
            cand[p] &= allowed[p]
    for p in range(P):
        hit |= cand[p]
    return P if hit else 0


cdef inline bint event_start(EngineC* E, EventC* ev, uint32_t sub) noexcept nogil:
    """SPEC §3 steps 1-2 for one good event: the clock, the timers due by it and, in a sharded
    worker, the lanes. Returns 1 when `sub` is a subscriber of this process, whose event goes on
    (subscriber_event). Inline and apart: a sharded worker's events are mostly another's,
    which end here, and the call into the whole of step 3-7 cost them more than this."""
    cdef int64_t ts
    # Event time: the clock only moves forward; a late event takes the clock. Counted, as it
    # is processed at a time other than its own (ts == clock is on time, not late).
    if not E.has_clock or ev.ts > E.clock:
        E.clock = ev.ts
        E.has_clock = 1
    elif ev.ts < E.clock:
        E.late += 1
    ts = E.clock
    E.events += 1
    E.by_type[ev.type] += 1
    E.cur_pos = E.events
    if E.shm != NULL:
        shard_event_start(E, E.events)
        if E.aborted:
            return 0
    # 1. timers due by now
    while E.nr_timers and E.next_due <= ts:
        fire_timer(E)
    if E.shm != NULL:
        shard_event_timers_done(E, E.events)
    # 2. subscriber (a sharded worker holds its own; another's event only moved the clock)
    if E.shm != NULL:
        shard_note_owner(E, ev.msisdn, sub, ev.type)
    if sub >= FOREIGN_INDEX:
        if sub == NO_INDEX and not foreign(E, ev.msisdn):
            E.unknown += 1
        return 0
    return 1


cdef void process_event(EngineC* E, EventC* ev, uint32_t sub) noexcept nogil:
    """SPEC §3 for one good event; `sub` is its subscriber (NO_INDEX when unknown)."""
    if event_start(E, ev, sub):
        subscriber_event(E, ev, sub)


cdef void subscriber_event(EngineC* E, EventC* ev, uint32_t sub) noexcept nogil:
    """SPEC §3 steps 3-7 for a good event of subscriber `sub`, after event_start."""
    cdef int64_t ts
    cdef uint32_t prev, i, j, add, v, ci
    cdef uint8_t* row
    cdef SubHeadC* h
    cdef CounterC* cnt
    cdef CampaignC* c
    cdef ContactC* contact
    cdef ConversionC* conv
    cdef uint64_t amount
    cdef int64_t* start
    cdef uint32_t* values
    cdef uint64_t* prev_areas
    cdef TimerC timer
    cdef uint32_t today = 0     # month_day_of the event's local day, once a campaign asks
    cdef MarkerC* mk
    cdef int64_t* marks
    cdef bint watched, prev_looked, due_soon, indexed = False, pindexed = False
    cdef int outcome, refused = 0        # a policy turn-down of this event's (FN_*), 0: none
    cdef uint32_t first, nr_words, p, refused_exempt = 0
    cdef uint64_t bits, pb, peer_looked = 0, peer_found = 0
    ts = E.clock
    row = row_of(E, sub)
    h = <SubHeadC*>row
    if h.flags & SUB_INACTIVE:
        E.unknown += 1
        if E.watch_bits != NULL and watch_bit(E, sub):
            explain_event(E, ev, sub, ts, 1)
        return
    note_row(E, sub, h)
    watched = E.watch_bits != NULL and watch_bit(E, sub)
    if watched:
        explain_event(E, ev, sub, ts, 0)
    # 3. cell and power
    prev = h.cell
    if ev.cell != 0:
        h.cell = ev.cell
    if ev.type == POWER_OFF_TYPE:
        h.flags |= SUB_POWERED_OFF
    else:
        h.flags &= ~SUB_POWERED_OFF
    # 4. counters
    values = <uint32_t*>(row + E.counter_off)
    for i in range(E.counter_type_off[ev.type], E.counter_type_off[ev.type + 1]):
        j = E.counter_list[i]
        cnt = &E.counters[j]
        if (ev.flags & cnt.flags) != cnt.flags or (cnt.has_arg and ev.arg != cnt.arg):
            continue
        if cnt.add == ADD_COUNT:
            amount = 1
        elif cnt.add == ADD_DUR:
            amount = ev.dur
        else:
            amount = ev.dur / 60 + (1 if ev.dur % 60 else 0)
        v = values[j]
        if cnt.window_slot >= 0:
            start = (<int64_t*>(row + E.window_off)) + cnt.window_slot
            if v != 0 and cnt.period != PERIOD_NONE:
                if not same_period(E, cnt.period, ts, start[0]):
                    v = 0
            elif v != 0 and ts >= start[0] + cnt.window:
                v = 0
            if v == 0:
                start[0] = ts
        values[j] = 0xFFFFFFFFu if amount >= <uint64_t>(0xFFFFFFFFu - v) else v + <uint32_t>amount
    # 5. conversions (only a subscriber with contact state can convert)
    for i in range(E.convert_type_off[ev.type],
                   E.convert_type_off[ev.type + 1] if h.flags & SUB_HAS_CONTACT else 0):
        ci = E.convert_list[i]
        c = &E.campaigns[ci]
        if c.has_convert_arg and ev.arg != c.convert_arg:
            continue
        contact = contact_lookup(E, sub, ci, h)
        if (contact == NULL or not (contact.flags & CONTACT_CONTACTED)
                or contact.flags & CONTACT_CONVERTED
                or (c.convert_within >= 0 and ts - contact.last_ts >= c.convert_within)):
            continue
        contact.flags |= CONTACT_CONVERTED
        contact.streak = 0
        note_contact(E, contact)
        if E.nr_conversions == E.cap_conversions:
            E.conversions = <ConversionC*>grow(E.conversions, &E.cap_conversions, sizeof(ConversionC), &E.oom)
            if E.oom:
                return
        E.conversion_seq += 1
        conv = &E.conversions[E.nr_conversions]
        E.nr_conversions += 1
        conv.seq = E.conversion_seq
        conv.ts = ts
        conv.msisdn = ev.msisdn
        conv.contact_seq = contact.last_seq
        conv.campaign = <uint16_t>ci
        conv.kind = 2 if contact.flags & CONTACT_GLOBAL_CONTROL else 1 if contact.flags & CONTACT_CONTROL else 0
        conv.variant = variant_of(E, c, ev.msisdn)
        memset(conv.pad, 0, 4)
        E.funnel[<size_t>ci * NR_FUNNEL + FN_CONVERTED_SEND + conv.kind] += 1
        if E.shm != NULL and shard_note_conversion(E):
            return
        if watched:
            explain_conversion(E, sub, conv)
    # 6. matching, in priority order. Only the campaigns the event may match are visited
    # (match_candidates): an event whose subscriber is eligible for none of its type's stops
    # after its row, whatever the number of campaigns. The explanation (the cold path) still
    # names every campaign.
    if watched:
        explain_matching(E, ev, sub, ts, prev)
    first = E.by_type_off[ev.type]
    nr_words = match_candidates(E, ev, row, ts, E.cand) if first != E.by_type_off[ev.type + 1] else 0
    prev_areas = NULL
    prev_looked = False
    E.cur_due = SHARD_EVENT_DUE
    E.cur_created = 0
    for p in range(nr_words):
        bits = E.cand[p]
        while bits:
            i = first + (p << 6) + sm_ctz64(bits)
            bits &= bits - 1
            ci = E.trig_list[i]
            c = &E.campaigns[ci]
            # The candidate masks held the campaign's enabled flag, dates, hours and days,
            # flags, counter and area: the tests left read line 0 of the campaign (and, for
            # a `when`, an `after` or a delay, one field on another line).
            if c.has_arg and ev.arg != c.arg:
                continue
            if c.peer_set >= 0:
                if ev.peer == 0:
                    continue
                # one probe per peer set and event: campaigns that share a list (gen's
                # programmes repeated with other thresholds) asked it again each
                if c.peer_set < 64:
                    pb = 1ULL << c.peer_set
                    if not peer_looked & pb:
                        peer_looked |= pb
                        if peer_contains(&E.peer_sets[c.peer_set], ev.peer):
                            peer_found |= pb
                    if not peer_found & pb:
                        continue
                elif not peer_contains(&E.peer_sets[c.peer_set], ev.peer):
                    continue
            if c.enter:
                # the previous cell's areas, looked up for the first campaign that asks (enter
                # is set only with an area: set_campaigns)
                if not prev_looked:
                    prev_areas = area_word_of(E, prev) if E.nr_area_words else NULL
                    prev_looked = True
                if prev_areas != NULL and prev_areas[c.area_word] & c.area_mask:
                    continue
            if c.when_len and not when_true(E, row, c, ts):
                continue
            if c.nr_conds and not marks_hold(E, row, c, ts):
                continue
            if c.date_slot >= 0:
                if today == 0:
                    today = today_at(E, ts)
                if not anniversary_today(today, E.dates[<size_t>sub * E.nr_dates + c.date_slot]):
                    continue
            if h.contacts < 2:
                contact = contact_lookup(E, sub, ci, h)
            else:
                # the subscriber's contacts are walked once for the event's campaigns
                if not indexed:
                    index_contacts(E, sub, h)
                    indexed = True
                contact = indexed_contact(E, sub, ci, h)
            if contact != NULL:
                if (contact.streak >= c.stop_after
                        or (contact.flags & CONTACT_CONTACTED
                            and (c.once or ts < contact.last_ts + c.cooldown))):
                    continue
            # a campaign with no action waiting (every one that sends at once) skips the
            # walk over the subscriber's waiting keys (about 15 of them a lookup at 200
            # campaigns)
            if E.pending_by_campaign[ci] and h.pending:
                if h.pending < 2:
                    if is_pending(E, sub, ci, h):
                        continue
                else:
                    # the subscriber's waiting keys are walked once for the event's campaigns
                    if not pindexed:
                        index_pending(E, sub, h)
                        pindexed = True
                    if E.pidx_stamp[ci] == E.pidx_gen:
                        continue
            E.funnel[<size_t>ci * NR_FUNNEL + FN_MATCHED] += 1
            if c.delay == 0:
                # The policy's turn-downs (blacklist to max_in_window) depend on the row, the
                # clock and the campaign's exemptions alone, and the row changes only when a
                # contact is made: a campaign with the exemptions of one the policy turned
                # down in this event, no contact made since, is turned down alike without
                # the call (the sweep world at 200 campaigns: 5.92M of its 6.29M emissions
                # turned down, those made at once mostly in events that had one already).
                # The candidate masks held `enabled` and the dates, which emit tests first.
                if refused and c.exempt == refused_exempt:
                    outcome = refused
                    E.funnel[<size_t>ci * NR_FUNNEL + outcome] += 1
                    if E.takers != NULL and outcome >= FN_MIN_GAP:
                        count_taker(E, sub, ci, TK_MIN_GAP if outcome == FN_MIN_GAP
                                    else TK_MAX_PER_DAY if outcome == FN_MAX_PER_DAY else TK_MAX_IN_WINDOW)
                else:
                    outcome = emit(E, ci, sub, ts, ts, ev.cell, False)
                    if FN_BLACKLIST <= outcome <= FN_MAX_IN_WINDOW:
                        refused = outcome
                        refused_exempt = c.exempt
                    else:
                        refused = 0
                if watched:
                    explain_emit(E, sub, ci, ts, outcome)
                continue
            if (E.nr_timers >= E.max_pending) if E.shm == NULL else shard_over_pending(E) != 0:
                if E.aborted:
                    return
                E.funnel[<size_t>ci * NR_FUNNEL + FN_OVERFLOW] += 1
                if watched:
                    explain_campaign(E, X_OVERFLOW, sub, ci, ts, 0)
                continue
            if pending_add(E, sub, ci, &timer.pending_slot):
                return
            E.timers_created += 1
            timer.due = ts + c.delay
            timer.created = E.timers_created if E.shm == NULL else shard_timer_created(E)
            timer.trigger_ts = ts
            timer.subscriber = sub
            timer.cell = ev.cell
            timer.campaign = ci
            if timer_add(E, &timer, c.run):
                return
            if E.shm != NULL:
                # due within the horizon already published (a delay shorter than it): the
                # run's earlier timers are due sooner, so all are counted, and so is this one
                # (one test for the run and the lane, which must agree)
                due_soon = timer.due <= E.horizon_pub
                if due_soon:
                    E.runs[c.run].soon += 1
                shard_note_timers(E, ci, 1, due_soon)
                shard_note_pending(E)
            E.funnel[<size_t>ci * NR_FUNNEL + FN_SCHEDULED] += 1
            if watched:
                explain_campaign(E, X_SCHEDULED, sub, ci, ts, timer.due)
    # 8. markers, after matching: an event never sees itself in after, not_after or absent,
    # and a timer that fired at its start (step 1) did not see it either
    marks = <int64_t*>(row + E.marker_off)
    for i in range(E.marker_type_off[ev.type], E.marker_type_off[ev.type + 1]):
        j = E.marker_list[i]
        mk = &E.markers[j]
        if (ev.flags & mk.flags) != mk.flags or (mk.has_arg and ev.arg != mk.arg):
            continue
        marks[j] = ts + 1
    if watched:
        explain_state(E, sub, ts)
