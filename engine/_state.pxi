# Per-subscriber and per-campaign state of the core (included by _core.pyx, one compilation unit):
# the subscriber index, list and area membership, state rows, counters, contacts, the timer
# heap and the holdout hash. Every function here reads or writes EngineC and nothing else.


cdef inline uint32_t candidate_subscriber(EngineC* E, uint64_t msisdn) noexcept nogil:
    """The first row whose fingerprint matches, unconfirmed (reads only the index)."""
    cdef uint64_t x = sm_mix64(msisdn), h = sm_fastrange(x, E.index_cap), slot
    cdef uint64_t fp = x & 0xFFFFFFFFu
    while True:
        slot = E.index_slots[h]
        if slot == 0:
            return NO_INDEX
        if slot >> 32 == fp:
            return <uint32_t>(slot & 0xFFFFFFFFu) - 1
        h += 1
        if h == E.index_cap:
            h = 0


cdef inline uint32_t lookup_subscriber(EngineC* E, uint64_t msisdn) noexcept nogil:
    cdef uint64_t x, h, slot, fp
    cdef uint32_t sub
    if E.index_slots == NULL:
        return NO_INDEX
    x = sm_mix64(msisdn)
    h = sm_fastrange(x, E.index_cap)
    fp = x & 0xFFFFFFFFu
    while True:
        slot = E.index_slots[h]
        if slot == 0:
            return NO_INDEX
        if slot >> 32 == fp:
            sub = <uint32_t>(slot & 0xFFFFFFFFu) - 1
            if (<SubHeadC*>(E.rows + <size_t>sub * E.stride)).msisdn == msisdn:
                return sub
        h += 1
        if h == E.index_cap:
            h = 0


cdef inline bint peer_contains(PeerSetC* s, uint64_t msisdn) noexcept nogil:
    cdef uint64_t h = sm_mix64(msisdn) & s.mask
    cdef uint64_t v
    while True:
        v = s.slots[h]
        if v == msisdn:
            return True
        if v == 0:
            return False
        h = (h + 1) & s.mask


cdef inline uint64_t* area_word_of(EngineC* E, uint32_t cell) noexcept nogil:
    """The area-membership words of a cell, or NULL when the cell is in no area."""
    cdef uint64_t h
    cdef uint32_t v
    if cell == 0 or E.area_cells == NULL:
        return NULL
    h = sm_mix64(cell) & E.area_slot_mask
    while True:
        v = E.area_cells[h]
        if v == cell:
            return E.area_masks + h * E.nr_area_words
        if v == 0:
            return NULL
        h = (h + 1) & E.area_slot_mask


cdef inline bint in_area(EngineC* E, uint32_t cell, CampaignC* c) noexcept nogil:
    cdef uint64_t* w = area_word_of(E, cell)
    return w != NULL and (w[c.area_word] & c.area_mask) != 0


cdef inline uint8_t* row_of(EngineC* E, uint32_t sub) noexcept nogil:
    return E.rows + <size_t>sub * E.stride


cdef inline void note_row(EngineC* E, uint32_t sub, SubHeadC* h) noexcept nogil:
    # The row is in cache already and the list is appended to in order. Without a branch on
    # "already listed", which a Zipf stream makes unpredictable: the slot after the list is
    # always written (the list has room for one more) and counted only for a new entry.
    cdef uint8_t fresh
    if E.tracking:
        fresh = (h.flags & SUB_CHANGED) == 0
        E.changed_subs[E.nr_changed] = sub
        E.nr_changed += fresh
        h.flags |= SUB_CHANGED


cdef inline void note_contact(EngineC* E, ContactC* c) noexcept nogil:
    cdef uint64_t i
    if E.tracking and E.changed_contacts != NULL:
        i = <uint64_t>(c - E.contacts)
        E.changed_contacts[i >> 6] |= 1ULL << (i & 63)


cdef inline bint elig_bit(EngineC* E, uint8_t* row, int32_t word, uint64_t mask) noexcept nogil:
    return ((<uint64_t*>(row + E.elig_off))[word] & mask) != 0


cdef inline uint32_t elig_candidates(EngineC* E, int32_t t, uint8_t* row, uint64_t* cand) noexcept nogil:
    """The campaigns of event type t whose static eligibility (elig_bit) this row has: bit i
    of cand[0 : P] stands for trig_list[by_type_off[t] + i]. Returns P, or 0 when there is
    none, cand then untouched. The type must have campaigns."""
    cdef int32_t w, W = E.cand_nr_words
    cdef uint64_t* elig = <uint64_t*>(row + E.elig_off)
    cdef uint64_t* uni = E.elig_union + <size_t>t * W
    cdef uint32_t* slot = E.elig_slot + <size_t>t * W * 64
    cdef uint32_t P = (E.by_type_off[t + 1] - E.by_type_off[t] + 63) >> 6, p
    cdef uint64_t x, hit = 0, a0 = 0, a1 = 0, a2 = 0, a3 = 0
    cdef uint64_t* m
    for w in range(W):
        hit |= elig[w] & uni[w]
    if hit == 0:
        return 0
    if P <= 4:
        # Up to 256 campaigns of a type: the OR runs in registers. Into cand, each bit's OR
        # waited on the store of the one before (a row of the sweep world has a dozen bits
        # of a type: 9% of process_event at 200 campaigns). pos_pool has 3 words of padding,
        # so a mask of fewer words may be read as 4; the words past P are never stored.
        for w in range(W):
            x = elig[w] & uni[w]
            while x:
                m = E.pos_pool + slot[w * 64 + sm_ctz64(x)]
                a0 |= m[0]
                a1 |= m[1]
                a2 |= m[2]
                a3 |= m[3]
                x &= x - 1
        cand[0] = a0
        if P > 1:
            cand[1] = a1
            if P > 2:
                cand[2] = a2
                if P > 3:
                    cand[3] = a3
        return P
    memset(cand, 0, P * sizeof(uint64_t))
    for w in range(W):
        x = elig[w] & uni[w]
        while x:
            m = E.pos_pool + slot[w * 64 + sm_ctz64(x)]
            for p in range(P):
                cand[p] |= m[p]
            x &= x - 1
    return P


cdef inline int64_t floor_div(int64_t a, int64_t b) noexcept nogil:
    cdef int64_t q = a / b
    if (a % b != 0) and ((a < 0) != (b < 0)):
        q -= 1
    return q


cdef inline bint in_window(int32_t minute, int32_t start, int32_t end) noexcept nogil:
    if start < end:
        return start <= minute < end
    return minute >= start or minute < end


cdef inline bint in_hours(EngineC* E, CampaignC* c, int64_t t) noexcept nogil:
    cdef int64_t local = t + E.utc_offset
    cdef int64_t day = floor_div(local, DAY_MS)
    cdef int32_t minute = <int32_t>((local - day * DAY_MS) / 60000)
    cdef int32_t weekday = <int32_t>((day + 3) % 7)
    if weekday < 0:
        weekday += 7
    if c.hours_start >= 0 and not in_window(minute, c.hours_start, c.hours_end):
        return False
    return (c.days >> weekday) & 1


cdef inline void civil_from_days(int64_t day, int64_t* out_year, int64_t* out_month,
                                 int64_t* out_day) noexcept nogil:
    """The civil (proleptic Gregorian) date of a local day number: the inverse of
    days-from-civil (H. Hinnant's civil_from_days), exact for every day an int64 ts reaches,
    before the epoch too. Eras are 400-year cycles of 146,097 days, counted from 0000-03-01
    so that the leap day ends a year."""
    cdef int64_t z = day + 719468
    cdef int64_t era = floor_div(z, 146097)
    cdef int64_t doe = z - era * 146097                                   # [0, 146096]
    cdef int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365   # [0, 399]
    cdef int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100)             # [0, 365], from March 1
    cdef int64_t mp = (5 * doy + 2) / 153                                  # [0, 11], March = 0
    cdef int64_t month = mp + 3 if mp < 10 else mp - 9                     # [1, 12]
    cdef int64_t year = yoe + era * 400 + (1 if month <= 2 else 0)
    out_year[0] = year
    out_month[0] = month
    out_day[0] = doy - (153 * mp + 2) / 5 + 1                              # [1, 31]


cdef inline int64_t month_of_day(int64_t day) noexcept nogil:
    """The local year * 12 + month - 1 of a local day number."""
    cdef int64_t year, month, dom
    civil_from_days(day, &year, &month, &dom)
    return year * 12 + month - 1


cdef inline int64_t period_of(EngineC* E, int32_t period, int64_t t) noexcept nogil:
    """The local calendar period of t (SPEC §3 step 4): the day, the week (Monday first) or
    the month."""
    cdef int64_t day = floor_div(t + E.utc_offset, DAY_MS)
    if period == PERIOD_DAY:
        return day
    if period == PERIOD_WEEK:
        return floor_div(day + 3, 7)
    return month_of_day(day)


cdef inline int32_t days_in_month(int64_t year, int64_t month) noexcept nogil:
    if month == 2:
        return 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28
    return 30 if month == 4 or month == 6 or month == 9 or month == 11 else 31


cdef void period_bounds(EngineC* E, int32_t period, int64_t t) noexcept nogil:
    """Keep in E.period_lo/hi[period] the UTC ms bounds of t's local period (period_of): from
    its first local midnight to the next period's."""
    cdef int64_t p = period_of(E, period, t), first, year, month, dom
    if period == PERIOD_DAY:
        first = p
        E.period_hi[period] = (first + 1) * DAY_MS - E.utc_offset
    elif period == PERIOD_WEEK:
        first = p * 7 - 3        # the Monday: day 0, 1970-01-01, was a Thursday
        E.period_hi[period] = (first + 7) * DAY_MS - E.utc_offset
    else:
        first = floor_div(t + E.utc_offset, DAY_MS)
        civil_from_days(first, &year, &month, &dom)
        first -= dom - 1
        E.period_hi[period] = (first + days_in_month(year, month)) * DAY_MS - E.utc_offset
    E.period_lo[period] = first * DAY_MS - E.utc_offset


cdef inline bint same_period(EngineC* E, int32_t period, int64_t ts, int64_t start) noexcept nogil:
    """period_of(E, period, ts) == period_of(E, period, start). Every event asks it of each
    counter with a period, with ts the clock: the bounds of ts's period are kept, so that it
    takes two comparisons until the clock leaves the period (the calendar's divisions were
    5% of the instructions of a replay; docs/performance.md)."""
    if not (E.period_lo[period] <= ts < E.period_hi[period]):
        period_bounds(E, period, ts)
    return E.period_lo[period] <= start < E.period_hi[period]


cdef inline uint32_t counter_read(EngineC* E, uint8_t* row, int32_t k, int64_t ts) noexcept nogil:
    cdef uint32_t v = (<uint32_t*>(row + E.counter_off))[k]
    cdef CounterC* cnt = &E.counters[k]
    cdef int64_t start
    if v != 0 and cnt.period != PERIOD_NONE:
        # a period other than ts's holds nothing of it
        start = (<int64_t*>(row + E.window_off))[cnt.window_slot]
        return 0 if not same_period(E, cnt.period, ts, start) else v
    if v != 0 and cnt.window_slot >= 0 and ts >= (<int64_t*>(row + E.window_off))[cnt.window_slot] + cnt.window:
        return 0
    return v


cdef bint when_true(EngineC* E, uint8_t* row, CampaignC* c, int64_t ts) noexcept nogil:
    """A campaign's `when` over this subscriber's counters read at `ts` (counter_read), exact:
    each comparison's sum is a 128-bit integer that cannot overflow (engine.language.when).
    The stack is one bit per level; compile_program keeps it within 64."""
    cdef uint64_t stack = 0, top
    cdef int32_t i, word
    cdef uint32_t j
    cdef WhenCmpC* cmp
    cdef WhenTermC* term
    cdef sm_int128 s
    cdef bint b
    for i in range(c.when_start, c.when_start + c.when_len):
        word = E.when_prog[i]
        if word >= 0:
            cmp = &E.when_cmps[word]
            s = <sm_int128>cmp.constant
            for j in range(cmp.first_term, cmp.first_term + cmp.nr_terms):
                term = &E.when_terms[j]
                s += <sm_int128>term.coef * <sm_int128>counter_read(E, row, term.counter, ts)
            if cmp.op == WHEN_EQ:
                b = s == 0
            elif cmp.op == WHEN_NE:
                b = s != 0
            elif cmp.op == WHEN_LT:
                b = s < 0
            elif cmp.op == WHEN_LE:
                b = s <= 0
            elif cmp.op == WHEN_GT:
                b = s > 0
            else:
                b = s >= 0
            stack = (stack << 1) | b
        elif word == WHEN_NOT:
            stack ^= 1
        else:
            top = stack & 1
            stack >>= 1
            if word == WHEN_AND:
                stack &= ~(<uint64_t>1) | top
            else:
                stack |= top
    return stack & 1


cdef inline uint32_t month_day_of(int64_t day) noexcept nogil:
    """month * 32 + day of a local day number's date, plus 1024 when its year is not a leap
    year (what anniversary_today needs to place February 29)."""
    cdef int64_t y, m, d
    cdef bint leap
    civil_from_days(day, &y, &m, &d)
    leap = (y % 4 == 0 and y % 100 != 0) or y % 400 == 0
    return <uint32_t>(m * 32 + d) | (0 if leap else 1024)


cdef void find_today(EngineC* E, int64_t ts) noexcept nogil:
    """Keep ts's local day: its UTC bounds, its number and its month_day_of (today_at,
    day_at). Apart from them, so that their common path stays two comparisons."""
    cdef int64_t day = floor_div(ts + E.utc_offset, DAY_MS)
    E.today_lo = day * DAY_MS - E.utc_offset
    E.today_hi = E.today_lo + DAY_MS
    E.today_day = day
    E.today_md = month_day_of(day)


cdef inline uint32_t today_at(EngineC* E, int64_t ts) noexcept nogil:
    """month_day_of ts's local day, kept for the day last asked for: every event that reaches
    a campaign with an anniversary asks it of the clock."""
    if not (E.today_lo <= ts < E.today_hi):
        find_today(E, ts)
    return E.today_md


cdef inline int64_t day_at(EngineC* E, int64_t ts) noexcept nogil:
    """floor_div(ts + utc_offset, DAY_MS), kept as today_at keeps its date: emit asks it of
    every action, at 200 campaigns some 5M times in 3M events, nearly all of one day."""
    if ts < E.today_lo or ts >= E.today_hi:
        find_today(E, ts)
    return E.today_day


cdef inline bint anniversary_today(uint32_t today, uint16_t date) noexcept nogil:
    """`date` (month * 32 + day, 0 = never) falls on `today` (month_day_of): the same month
    and day, or February 29 on February 28 of a year without one."""
    if date == 0:
        return False
    if date == (today & 1023):
        return True
    return date == 2 * 32 + 29 and today == 1024 + 2 * 32 + 28


cdef inline bint marks_hold(EngineC* E, uint8_t* row, CampaignC* c, int64_t ts) noexcept nogil:
    """Every `after` entry: the marker is set and ts - marker < within; every `not_after`
    entry: the marker is unset or ts - marker >= within. Markers hold ts + 1, 0 = unset."""
    cdef int64_t* marks = <int64_t*>(row + E.marker_off)
    cdef MarkCondC* k
    cdef int64_t m
    cdef int32_t i
    for i in range(c.cond_off, c.cond_off + c.nr_conds):
        k = &E.conds[i]
        m = marks[k.marker]
        if k.negate:
            if m != 0 and ts - (m - 1) < k.within:
                return False
        elif m == 0 or ts - (m - 1) >= k.within:
            return False
    return True


cdef inline bint marked_since(EngineC* E, uint8_t* row, CampaignC* c, int64_t trigger_ts) noexcept nogil:
    """Some marker of the campaign's `absent` holds a time later than the trigger's."""
    cdef int64_t* marks = <int64_t*>(row + E.marker_off)
    cdef int64_t m
    cdef int32_t i
    for i in range(c.absent_off, c.absent_off + c.nr_absent):
        m = marks[E.absent_list[i]]
        if m != 0 and m - 1 > trigger_ts:
            return True
    return False


cdef inline uint64_t contact_home(uint32_t sub, uint64_t mask) noexcept nogil:
    """The slot where the probes for every contact of one subscriber start. Hashing the
    subscriber alone, not (subscriber, campaign), keeps a subscriber's contacts in adjacent
    slots: the one or two cache lines the batch prefetches hold every campaign's contact of
    the event's subscriber, where a hash per pair cost a miss per campaign looked up."""
    return sm_mix64(sub) & mask


cdef inline ContactC* contact_lookup(EngineC* E, uint32_t sub, uint32_t ci, SubHeadC* head) noexcept nogil:
    """The contact state of (subscriber, campaign), NULL when there is none; `head` is sub's
    row head. Inlined into matching, where find_contact's creating path is never taken.

    Every contact of sub lies between its home and the first empty slot. The row counts them
    (exactly below 255), so a lookup of a campaign without one stops after the last of them:
    at 200 campaigns a busy subscriber's contacts and its neighbours' make long clusters, and
    a lookup walked 8.2 slots on average to the empty one, 5.1 now (the sweep world)."""
    cdef uint64_t key = (<uint64_t>sub << 16) | ci | OCCUPIED
    cdef uint64_t h
    cdef ContactC* c
    cdef uint32_t left = head.contacts
    if E.contacts == NULL or left == 0:
        return NULL
    h = contact_home(sub, E.contacts_mask)
    while True:
        c = &E.contacts[h]
        if c.key == key:
            return c
        if c.key == 0:
            return NULL
        if left != 255 and (c.key ^ key) >> 16 == 0:
            left -= 1
            if left == 0:
                return NULL
        h = (h + 1) & E.contacts_mask


cdef inline uint32_t next_generation(uint32_t* stamps, uint32_t gen, int32_t n) noexcept nogil:
    """The generation after `gen` of a per-event index (index_contacts, index_pending), whose
    `n` stamps equal to it say "noted in this build": gen + 1, or 1 with the stamps cleared
    when it wraps to 0, so that no stamp of 2^32 builds ago passes for a new one."""
    gen += 1
    if gen == 0:
        memset(stamps, 0, max(n, 1) * sizeof(uint32_t))
        gen = 1
    return gen


cdef void index_contacts(EngineC* E, uint32_t sub, SubHeadC* head) noexcept nogil:
    """Note where each contact of `sub` lies, by campaign (EngineC.cidx_*): one walk of its
    cluster, as long as one lookup of a campaign it has no contact with. The matching loop
    looks up every campaign an event matches: at 200 campaigns a busy subscriber's dozens
    of contacts were walked again for each (the sweep world: 5 slots a lookup)."""
    cdef uint64_t base = (<uint64_t>sub << 16) | OCCUPIED, h, key
    cdef uint32_t left = head.contacts, ci
    E.cidx_gen = next_generation(E.cidx_stamp, E.cidx_gen, E.nr_campaigns)
    E.cidx_valid = 1
    h = contact_home(sub, E.contacts_mask)
    while True:
        key = E.contacts[h].key
        if key == 0:
            return
        if (key ^ base) >> 16 == 0:
            ci = <uint32_t>(key & 0xFFFF)
            if ci < <uint32_t>E.nr_campaigns:
                E.cidx_stamp[ci] = E.cidx_gen
                E.cidx_slot[ci] = h
            if left != 255:
                left -= 1
                if left == 0:
                    return
        h = (h + 1) & E.contacts_mask


cdef inline ContactC* indexed_contact(EngineC* E, uint32_t sub, uint32_t ci, SubHeadC* head) noexcept nogil:
    """contact_lookup, from the index the event's matching loop built with index_contacts:
    exact while the table has not grown since (a contact made meanwhile is one of a
    campaign the loop has visited already, whose lookup is behind it)."""
    if not E.cidx_valid:
        return contact_lookup(E, sub, ci, head)
    return &E.contacts[E.cidx_slot[ci]] if E.cidx_stamp[ci] == E.cidx_gen else NULL


cdef ContactC* find_contact(EngineC* E, uint32_t sub, uint32_t ci, bint create) noexcept nogil:
    """The contact state of (subscriber, campaign); with `create`, made when absent. Creating
    may grow the table: pointers from earlier calls are then stale."""
    cdef uint64_t key = (<uint64_t>sub << 16) | ci | OCCUPIED
    cdef uint64_t h, i, newcap, newmask
    cdef ContactC* table
    cdef SubHeadC* head = <SubHeadC*>row_of(E, sub)
    cdef ContactC* c = contact_lookup(E, sub, ci, head)
    if c != NULL:
        return c
    if not create:
        return NULL
    if E.contacts == NULL or (E.nr_contacts + 1) * 2 > E.contacts_mask + 1:
        newcap = 1024 if E.contacts == NULL else (E.contacts_mask + 1) * 2
        table = <ContactC*>sm_zalloc(newcap * sizeof(ContactC))
        if table == NULL:
            E.oom = 1
            return NULL
        newmask = newcap - 1
        if E.contacts != NULL:
            for i in range(E.contacts_mask + 1):
                if E.contacts[i].key:
                    h = contact_home(<uint32_t>((E.contacts[i].key & ~OCCUPIED) >> 16), newmask)
                    while table[h].key:
                        h = (h + 1) & newmask
                    table[h] = E.contacts[i]
            sm_free(E.contacts, (E.contacts_mask + 1) * sizeof(ContactC))
        E.contacts = table
        E.contacts_mask = newmask
        E.cidx_valid = 0
        if E.tracking:
            # slots moved: the next checkpoint takes every contact
            free(E.changed_contacts)
            E.changed_contacts = <uint64_t*>calloc(newcap // 64 + 1, sizeof(uint64_t))
            E.all_contacts_changed = 1
    h = contact_home(sub, E.contacts_mask)
    while E.contacts[h].key:
        h = (h + 1) & E.contacts_mask
    c = &E.contacts[h]
    c.key = key
    E.nr_contacts += 1
    head.flags |= SUB_HAS_CONTACT
    if head.contacts < 255:
        head.contacts += 1
    note_row(E, sub, head)
    note_contact(E, c)
    return c


# The pending set: the (subscriber, campaign) pairs whose delayed action waits, one entry per
# timer. Kept apart from the contacts so that a scheduled action the policy then turns down
# leaves nothing behind: most delayed actions are turned down, and a contact made for each
# grew the contact table (and its first touch of fresh memory) with empty entries. It holds
# at most max_pending keys, so it stays in cache; the row's `pending` count spares the probe
# for the subscribers with none.

cdef inline uint64_t pending_key(uint32_t sub, uint32_t ci) noexcept nogil:
    return (<uint64_t>sub << 16) | ci | OCCUPIED


cdef inline uint64_t pending_home(uint64_t key, uint64_t mask) noexcept nogil:
    """Where the probes for a key start: by subscriber, as contact_home, so that a
    subscriber's waiting pairs share a line, which the batch fetches ahead. (A hash of the
    pair was tried: lookups passed 0.4 keys instead of 15 on the 200-campaign sweep world,
    but the first probe became a miss, 11-17% of process_event's samples, prefetched or not.)"""
    return sm_mix64((key & ~OCCUPIED) >> 16) & mask


cdef inline bint is_pending(EngineC* E, uint32_t sub, uint32_t ci, SubHeadC* h) noexcept nogil:
    """Whether (sub, ci) has an action waiting; `h` is sub's row head."""
    cdef uint64_t key, i, v
    cdef uint32_t left = h.pending
    if left == 0:
        return False
    key = pending_key(sub, ci)
    i = pending_home(key, E.pending_mask)
    while True:
        v = E.pending[i]
        if v == key:
            return True
        if v == 0:
            return False
        # Every key of sub lies between its home and the first empty slot: once all of them
        # (h.pending, exact) were passed, the rest of the cluster is other subscribers'.
        if (v ^ key) >> 16 == 0:
            left -= 1
            if left == 0:
                return False
        i = (i + 1) & E.pending_mask


cdef void index_pending(EngineC* E, uint32_t sub, SubHeadC* h) noexcept nogil:
    """Note the campaigns `sub` has an action waiting for (EngineC.pidx_*): one walk of its
    cluster, as long as one lookup of a campaign it has none for. At 200 campaigns the
    matching loop asked is_pending of a busy subscriber again for every delayed campaign an
    event matched, each walk passing some 15 keys (the sweep world)."""
    cdef uint64_t base = pending_key(sub, 0), i, v
    cdef uint32_t left = h.pending, ci
    E.pidx_gen = next_generation(E.pidx_stamp, E.pidx_gen, E.nr_campaigns)
    if left == 0:
        return
    i = pending_home(base, E.pending_mask)
    while True:
        v = E.pending[i]
        if v == 0:
            return
        if (v ^ base) >> 16 == 0:
            ci = <uint32_t>(v & 0xFFFF)
            if ci < <uint32_t>E.nr_campaigns:
                E.pidx_stamp[ci] = E.pidx_gen
            left -= 1
            if left == 0:
                return
        i = (i + 1) & E.pending_mask


cdef int pending_add(EngineC* E, uint32_t sub, uint32_t ci, uint32_t* slot) noexcept nogil:
    """Note a timer of (sub, ci), and where its key went in `slot` (the timer keeps it for
    pending_remove). Returns 1 (and sets oom) when memory ran out. A subscriber
    has at most one timer per campaign, so at most 65,535, the row's count's limit (a restore
    refuses a checkpoint with more). The key takes the first free slot from its home, empty
    or gone; when keys and gone slots fill half the table it is rehashed without the gone
    ones, at twice the size when the keys alone fill a quarter."""
    cdef uint64_t key = pending_key(sub, ci), i, j, newcap, newmask
    cdef uint64_t* table
    cdef SubHeadC* h = <SubHeadC*>row_of(E, sub)
    if E.pending == NULL or (E.nr_pending + E.pending_gone + 1) * 2 > E.pending_mask + 1:
        newcap = (1024 if E.pending == NULL
                  else (E.pending_mask + 1) * 2 if (E.nr_pending + 1) * 4 > E.pending_mask + 1
                  else E.pending_mask + 1)
        table = <uint64_t*>calloc(newcap, sizeof(uint64_t))
        if table == NULL:
            E.oom = 1
            return 1
        newmask = newcap - 1
        if E.pending != NULL:
            for j in range(E.pending_mask + 1):
                if E.pending[j] > PENDING_GONE:
                    i = pending_home(E.pending[j], newmask)
                    while table[i]:
                        i = (i + 1) & newmask
                    table[i] = E.pending[j]
            free(E.pending)
        E.pending = table
        E.pending_mask = newmask
        E.pending_gone = 0
    i = pending_home(key, E.pending_mask)
    while E.pending[i] > PENDING_GONE:
        i = (i + 1) & E.pending_mask
    if E.pending[i] == PENDING_GONE:
        E.pending_gone -= 1
    E.pending[i] = key
    slot[0] = <uint32_t>i
    E.nr_pending += 1
    E.pending_by_campaign[ci] += 1
    h.pending += 1
    return 0


cdef void pending_remove(EngineC* E, uint32_t sub, uint32_t ci, uint32_t slot) noexcept nogil:
    """Forget one timer of (sub, ci), as it fires; `slot` is where pending_add put its key,
    looked at first: a key is in the table once, so a slot that holds it is its slot, and
    one that does not (the table was rehashed since) is passed for the walk from the key's
    home, as long as one lookup (at 200 campaigns the sweep world's walks read some 10
    slots). The slot is marked gone, which probes
    pass over as over another subscriber's key, unless it ends its cluster: then it and the
    gone slots just before it become empty. (Shifting the cluster's later keys back into the
    hole, as until 2026-12-03, read some 30 slots a removal at 200 campaigns, where clusters
    of busy subscribers run together: a third of fire_timer's instructions.)"""
    cdef uint64_t key = pending_key(sub, ci), i, j
    cdef SubHeadC* h = <SubHeadC*>row_of(E, sub)
    if h.pending == 0:
        return
    i = slot & E.pending_mask
    if E.pending[i] != key:
        i = pending_home(key, E.pending_mask)
        while E.pending[i] != key:
            if E.pending[i] == 0:
                return
            i = (i + 1) & E.pending_mask
    h.pending -= 1
    E.nr_pending -= 1
    E.pending_by_campaign[ci] -= 1
    if E.pending[(i + 1) & E.pending_mask] != 0:
        E.pending[i] = PENDING_GONE
        E.pending_gone += 1
        return
    # at least half the table is empty, so this walk back stops
    E.pending[i] = 0
    j = (i - 1) & E.pending_mask
    while E.pending[j] == PENDING_GONE:
        E.pending[j] = 0
        E.pending_gone -= 1
        j = (j - 1) & E.pending_mask


cdef int pending_rebuild(EngineC* E) noexcept nogil:
    """The pending set and every row's count, from the timers (after a restore or a
    transfer). Returns 1 (and sets oom) when memory ran out."""
    cdef uint64_t j
    cdef int32_t s
    cdef int rc = 0
    cdef TimerC* t
    for j in range(E.nr_subscribers):
        (<SubHeadC*>row_of(E, <uint32_t>j)).pending = 0
    free(E.pending)
    E.pending = NULL
    E.pending_mask = 0
    E.nr_pending = 0
    E.pending_gone = 0
    if E.pending_by_campaign != NULL:       # NULL only before any campaigns: then no timers
        memset(E.pending_by_campaign, 0, max(E.nr_campaigns, 1) * sizeof(uint32_t))
    for s in range(E.nr_runs + 1):
        for j in range(E.heap_n if s == E.nr_runs else E.runs[s].n):
            t = &E.heap[j] if s == E.nr_runs else run_at(&E.runs[s], j)
            rc = pending_add(E, t.subscriber, t.campaign, &t.pending_slot)
            if rc:
                return rc
    return 0


# max_in_window: the last window_n contact times of each contacted subscriber.

cdef inline uint64_t window_home(int64_t key, uint64_t mask) noexcept nogil:
    """Where the probes for a subscriber's entry (key sub + 1) start."""
    return sm_mix64(<uint64_t>key) & mask


cdef int64_t* find_window(EngineC* E, uint32_t sub, bint create) noexcept nogil:
    """The kept contact times of a subscriber (an entry of window_n + 2 words); with `create`,
    made when absent. Creating may grow the table: pointers from earlier calls are then stale."""
    cdef int64_t key = <int64_t>sub + 1
    cdef size_t words = E.window_n + 2
    cdef uint64_t h, i, newcap, newmask
    cdef int64_t* table
    cdef int64_t* w
    if E.windows != NULL:
        h = window_home(key, E.windows_mask)
        while True:
            w = E.windows + h * words
            if w[0] == key:
                return w
            if w[0] == 0:
                break
            h = (h + 1) & E.windows_mask
    if not create:
        return NULL
    if E.windows == NULL or (E.nr_windows_used + 1) * 2 > E.windows_mask + 1:
        newcap = 1024 if E.windows == NULL else (E.windows_mask + 1) * 2
        table = <int64_t*>sm_zalloc(newcap * words * sizeof(int64_t))
        if table == NULL:
            E.oom = 1
            return NULL
        newmask = newcap - 1
        if E.windows != NULL:
            for i in range(E.windows_mask + 1):
                w = E.windows + i * words
                if w[0]:
                    h = window_home(w[0], newmask)
                    while table[h * words]:
                        h = (h + 1) & newmask
                    memcpy(table + h * words, w, words * sizeof(int64_t))
            sm_free(E.windows, (E.windows_mask + 1) * words * sizeof(int64_t))
        E.windows = table
        E.windows_mask = newmask
    h = window_home(key, E.windows_mask)
    while E.windows[h * words]:
        h = (h + 1) & E.windows_mask
    w = E.windows + h * words
    w[0] = key
    E.nr_windows_used += 1
    return w


cdef inline void window_add(EngineC* E, int64_t* w, int64_t t) noexcept nogil:
    """Keep t as the newest contact time, forgetting the oldest when window_n are kept."""
    cdef int64_t kept = w[1] & 0xFF, head = w[1] >> 8
    if kept < E.window_n:
        w[2 + (head + kept) % E.window_n] = t
        kept += 1
    else:
        w[2 + head] = t
        head = (head + 1) % E.window_n
    w[1] = kept | (head << 8)


# Timers, fired in (due, created) order (SPEC §3). A campaign's timer is due its delay after
# the clock, which never goes back, and is created after every earlier one: the timers of one
# delay are created in the order they fire. So each distinct delay has a run, a ring buffer
# appended at its end and popped at its front, and only the first timer of each run is
# compared, in a heap of the runs (the sources). A binary heap of all timers, as before,
# missed the cache on most of its levels once tens of thousands waited. Timers that come out
# of that order (a checkpoint's, a reload's) go to one binary heap, a source like a run.

cdef inline bint key_before(int64_t a_due, uint64_t a_created,
                            int64_t b_due, uint64_t b_created) noexcept nogil:
    return a_due < b_due or (a_due == b_due and a_created < b_created)


cdef inline bint timer_before(TimerC* a, TimerC* b) noexcept nogil:
    return key_before(a.due, a.created, b.due, b.created)


cdef int timer_cmp(const void* a, const void* b) noexcept nogil:
    if timer_before(<TimerC*>a, <TimerC*>b):
        return -1
    return 1 if timer_before(<TimerC*>b, <TimerC*>a) else 0


cdef inline TimerC* run_at(TimerRunC* r, uint64_t k) noexcept nogil:
    """The k-th timer of a run, 0 its first (k < r.n)."""
    return &r.buf[(r.head + k) & (r.cap - 1)]


cdef inline TimerC* source_first(EngineC* E, int32_t s) noexcept nogil:
    if s == E.nr_runs:
        return &E.heap[0]
    return run_at(&E.runs[s], 0)


cdef inline bint source_before(EngineC* E, int32_t a, int32_t b) noexcept nogil:
    """Whether source a's first timer fires before source b's. The heap of sources compares
    the copies of their keys in src_first, 1.1 kB at 45 runs (24 bytes each), which stay in cache
    between the events: the runs' own first timers, one line each, did not (a sixth of
    fire_timer's samples at 200 campaigns)."""
    return key_before(E.src_first[a].due, E.src_first[a].created,
                      E.src_first[b].due, E.src_first[b].created)


cdef inline void source_refresh(EngineC* E, int32_t s) noexcept nogil:
    """Source s's first timer changed: its key in src_first follows."""
    cdef TimerC* f = source_first(E, s)
    E.src_first[s].due = f.due
    E.src_first[s].created = f.created
    E.src_first[s].subscriber = f.subscriber


cdef inline void source_set(EngineC* E, int32_t i, int32_t s) noexcept nogil:
    E.src_heap[i] = s
    E.src_pos[s] = i


cdef void source_up(EngineC* E, int32_t i) noexcept nogil:
    cdef int32_t s = E.src_heap[i], parent
    while i > 0:
        parent = (i - 1) >> 1
        if not source_before(E, s, E.src_heap[parent]):
            break
        source_set(E, i, E.src_heap[parent])
        i = parent
    source_set(E, i, s)


cdef void source_down(EngineC* E, int32_t i) noexcept nogil:
    cdef int32_t s = E.src_heap[i], child
    while True:
        child = 2 * i + 1
        if child >= E.src_n:
            break
        if child + 1 < E.src_n and source_before(E, E.src_heap[child + 1], E.src_heap[child]):
            child += 1
        if not source_before(E, E.src_heap[child], s):
            break
        source_set(E, i, E.src_heap[child])
        i = child
    source_set(E, i, s)


cdef inline void source_changed(EngineC* E, int32_t s) noexcept nogil:
    """Source s gained a timer (it may now come first); keeps next_due."""
    source_refresh(E, s)
    if E.src_pos[s] < 0:
        E.src_n += 1
        source_set(E, E.src_n - 1, s)
    source_up(E, E.src_pos[s])
    E.next_due = E.src_first[E.src_heap[0]].due


cdef int timers_init(EngineC* E, int32_t nr_runs) noexcept nogil:
    """nr_runs empty runs and an empty heap; what waited before is forgotten. Returns 1 (and
    sets oom) when memory ran out."""
    cdef int32_t s
    timers_free(E)
    E.runs = <TimerRunC*>calloc(max(nr_runs, 1), sizeof(TimerRunC))
    E.src_heap = <int32_t*>malloc((nr_runs + 1) * sizeof(int32_t))
    E.src_pos = <int32_t*>malloc((nr_runs + 1) * sizeof(int32_t))
    E.src_first = <TimerKeyC*>malloc((nr_runs + 1) * sizeof(TimerKeyC))
    if E.runs == NULL or E.src_heap == NULL or E.src_pos == NULL or E.src_first == NULL:
        E.oom = 1
        return 1
    E.nr_runs = nr_runs
    for s in range(nr_runs + 1):
        E.src_pos[s] = -1
    return 0


cdef void timers_free(EngineC* E) noexcept nogil:
    cdef int32_t s
    if E.runs != NULL:
        for s in range(E.nr_runs):
            free(E.runs[s].buf)
    free(E.runs)
    free(E.src_heap)
    free(E.src_pos)
    free(E.src_first)
    E.runs = NULL
    E.src_heap = NULL
    E.src_pos = NULL
    E.src_first = NULL
    E.nr_runs = 0
    E.src_n = 0
    E.heap_n = 0
    E.nr_timers = 0
    E.next_due = INT64_MAX


cdef int timer_add(EngineC* E, TimerC* t, int32_t run) noexcept nogil:
    """A new timer, into `run` (its campaign's, created now) or, with run -1, into the heap
    (a timer from elsewhere, in no particular order). Returns -1 (and sets oom) when memory
    ran out."""
    cdef TimerRunC* r
    cdef TimerC* grown
    cdef uint64_t k, newcap
    if run < 0:
        if heap_push(E, t):
            return -1
        run = E.nr_runs
    else:
        r = &E.runs[run]
        if r.n == r.cap:
            newcap = 256 if r.cap == 0 else r.cap * 2
            grown = <TimerC*>malloc(newcap * sizeof(TimerC))
            if grown == NULL:
                E.oom = 1
                return -1
            for k in range(r.n):
                grown[k] = run_at(r, k)[0]
            free(r.buf)
            r.buf = grown
            r.head = 0
            r.cap = newcap
        run_at(r, r.n)[0] = t[0]
        r.n += 1
        if r.n > 1:
            E.nr_timers += 1
            return 0        # behind the run's first: nothing else changes
    E.nr_timers += 1
    source_changed(E, run)
    return 0


cdef void timer_pop(EngineC* E, TimerC* out) noexcept nogil:
    """Take the first timer (there must be one)."""
    cdef int32_t s = E.src_heap[0]
    cdef TimerRunC* r
    cdef uint32_t sub
    cdef bint left
    if s == E.nr_runs:
        heap_pop(E, out)
        left = E.heap_n != 0
        E.popped_soon = 1
    else:
        r = &E.runs[s]
        E.popped_soon = r.soon != 0
        if r.soon:
            r.soon -= 1
        out[0] = r.buf[r.head]
        r.head = (r.head + 1) & (r.cap - 1)
        r.n -= 1
        left = r.n != 0
        # two hundred runs read front to back are more streams than the hardware follows
        sm_prefetch(run_at(r, 3))
    E.nr_timers -= 1
    if left:
        source_refresh(E, s)
    else:
        E.src_pos[s] = -1
        E.src_n -= 1
        if E.src_n == 0:
            E.next_due = INT64_MAX
            return
        source_set(E, 0, E.src_heap[E.src_n])
    source_down(E, 0)
    s = E.src_heap[0]
    E.next_due = E.src_first[s].due
    # The next to fire most often fires within a few events: the timer itself, its row (which
    # emit reads) and its pending line come into cache meanwhile, as the batch does for
    # events. Its subscriber is read from the copy in src_first: reading the timer here,
    # often first in another run, was a miss (a third of fire_timer's samples at 200
    # campaigns).
    sub = E.src_first[s].subscriber
    sm_prefetch(source_first(E, s))
    sm_prefetch(E.rows + <size_t>sub * E.stride)
    if E.pending != NULL:
        sm_prefetch(&E.pending[pending_home(pending_key(sub, 0), E.pending_mask)])


cdef inline TimerC* gather_head(EngineC* E, TimerC* heap_sorted, uint64_t* taken, int32_t s) noexcept nogil:
    if s == E.nr_runs:
        return &heap_sorted[taken[s]]
    return run_at(&E.runs[s], taken[s])


cdef TimerC* timers_gather(EngineC* E) noexcept nogil:
    """Every waiting timer, copied in (due, created) order into a new buffer of nr_timers
    (the caller frees it); NULL (with oom set) when memory ran out, or when none waits.
    The runs are in order already: only the heap's timers are sorted, then every source is
    merged, a pass over each (a checkpoint takes them all, under the engine's lock)."""
    cdef TimerC* out
    cdef TimerC* heap_sorted = NULL
    cdef uint64_t* taken
    cdef int32_t* order
    cdef uint64_t j, size
    cdef int32_t s, n = 0, i, child, top
    if E.nr_timers == 0:
        return NULL
    out = <TimerC*>malloc(E.nr_timers * sizeof(TimerC))
    taken = <uint64_t*>calloc(E.nr_runs + 1, sizeof(uint64_t))
    order = <int32_t*>malloc((E.nr_runs + 1) * sizeof(int32_t))
    if E.heap_n:
        heap_sorted = <TimerC*>malloc(E.heap_n * sizeof(TimerC))
    if out == NULL or taken == NULL or order == NULL or (E.heap_n and heap_sorted == NULL):
        free(out)
        free(taken)
        free(order)
        free(heap_sorted)
        E.oom = 1
        return NULL
    if E.heap_n:
        memcpy(heap_sorted, E.heap, E.heap_n * sizeof(TimerC))
        qsort(heap_sorted, E.heap_n, sizeof(TimerC), timer_cmp)
    # a min-heap of the sources that have timers left, by their next one
    for s in range(E.nr_runs + 1):
        if (E.heap_n if s == E.nr_runs else E.runs[s].n) == 0:
            continue
        i = n
        n += 1
        while i > 0 and timer_before(gather_head(E, heap_sorted, taken, s),
                                     gather_head(E, heap_sorted, taken, order[(i - 1) >> 1])):
            order[i] = order[(i - 1) >> 1]
            i = (i - 1) >> 1
        order[i] = s
    for j in range(E.nr_timers):
        top = order[0]
        out[j] = gather_head(E, heap_sorted, taken, top)[0]
        out[j].pending_slot = 0         # where the table put it is no part of the state
        taken[top] += 1
        size = E.heap_n if top == E.nr_runs else E.runs[top].n
        if taken[top] == size:
            n -= 1
            top = order[n]
        i = 0
        while True:
            child = 2 * i + 1
            if child >= n:
                break
            if child + 1 < n and timer_before(gather_head(E, heap_sorted, taken, order[child + 1]),
                                              gather_head(E, heap_sorted, taken, order[child])):
                child += 1
            if not timer_before(gather_head(E, heap_sorted, taken, order[child]),
                                gather_head(E, heap_sorted, taken, top)):
                break
            order[i] = order[child]
            i = child
        if n:
            order[i] = top
    free(taken)
    free(order)
    free(heap_sorted)
    return out


cdef void heap_fix(EngineC* E) noexcept nogil:
    """Order the heap's array as a heap, whatever order it came in, and make it the only
    source (after a restore put timers there)."""
    cdef uint64_t i, n = E.heap_n
    if n > 1:
        i = n // 2
        while i > 0:
            i -= 1
            heap_sift_down(E, i, E.heap[i])
    E.nr_timers = n
    if n:
        source_changed(E, E.nr_runs)


cdef int heap_push(EngineC* E, TimerC* t) noexcept nogil:
    cdef uint64_t i, parent, newcap
    cdef TimerC* grown
    if E.heap_n == E.heap_cap:
        newcap = 1024 if E.heap_cap == 0 else E.heap_cap * 2
        grown = <TimerC*>realloc(E.heap, newcap * sizeof(TimerC))
        if grown == NULL:
            E.oom = 1
            return -1
        E.heap = grown
        E.heap_cap = newcap
    i = E.heap_n
    E.heap_n += 1
    while i > 0:
        parent = (i - 1) >> 1
        if not timer_before(t, &E.heap[parent]):
            break
        E.heap[i] = E.heap[parent]
        i = parent
    E.heap[i] = t[0]
    return 0


cdef void heap_sift_down(EngineC* E, uint64_t i, TimerC t) noexcept nogil:
    """Put t in the hole at i of the heap's heap_n timers, moving the smaller child up until
    t goes before both."""
    cdef uint64_t child, n = E.heap_n
    while True:
        child = 2 * i + 1
        if child >= n:
            break
        if child + 1 < n and timer_before(&E.heap[child + 1], &E.heap[child]):
            child += 1
        if not timer_before(&E.heap[child], &t):
            break
        E.heap[i] = E.heap[child]
        i = child
    E.heap[i] = t


cdef void heap_pop(EngineC* E, TimerC* out) noexcept nogil:
    out[0] = E.heap[0]
    E.heap_n -= 1
    if E.heap_n:
        heap_sift_down(E, 0, E.heap[E.heap_n])


cdef void* grow(void* p, uint64_t* cap, size_t item, int* oom) noexcept nogil:
    cdef uint64_t newcap = 4096 if cap[0] == 0 else cap[0] * 2
    cdef void* q = realloc(p, newcap * item)
    if q == NULL:
        oom[0] = 1
        return p
    cap[0] = newcap
    return q


cdef inline uint8_t variant_of(EngineC* E, CampaignC* c, uint64_t msisdn) noexcept nogil:
    """SPEC §3 step 7: the first variant whose running sum of weights exceeds
    crc32(f"{msisdn}:{id}:variant") % W, W the last running sum; 0 with one variant or none."""
    if c.nr_variants <= 1:
        return 0
    return variant_by(E, c, msisdn_prefix(msisdn))


cdef inline uint8_t variant_by(EngineC* E, CampaignC* c, uint32_t prefix) noexcept nogil:
    """variant_of, from `prefix`, the CRC32 of f"{msisdn}:" (msisdn_prefix)."""
    cdef const uint32_t* sums
    cdef uint32_t x
    cdef uint8_t v = 0
    if c.nr_variants <= 1:
        return 0
    sums = E.variant_sums + c.variant_off
    # the holdout's crc of f"{msisdn}:{id}" goes on over ":variant"
    x = sm_crc32(sm_crc32(prefix, <const uint8_t*>c.id, c.id_len), <const uint8_t*>VARIANT_SUFFIX, 8) % sums[c.nr_variants - 1]
    while v + 1 < c.nr_variants and x >= sums[v]:
        v += 1
    return v


cdef inline uint32_t msisdn_prefix(uint64_t msisdn) noexcept nogil:
    """zlib.crc32(f"{msisdn}:".encode()), the MSISDN in decimal: CRC32 goes on from it over
    any suffix, so one emission's global control, control and variant share it."""
    cdef uint8_t digits[24]
    cdef int n = 0, i
    cdef uint8_t tmp
    while True:
        digits[n] = <uint8_t>(0x30 + msisdn % 10)
        n += 1
        msisdn //= 10
        if msisdn == 0:
            break
    for i in range(n // 2):
        tmp = digits[i]
        digits[i] = digits[n - 1 - i]
        digits[n - 1 - i] = tmp
    digits[n] = 0x3a    # ':'
    return sm_crc32(0, digits, n + 1)
