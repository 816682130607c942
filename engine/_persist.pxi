# Checkpoints and reloads (included by _core.pyx after the Core class, whose methods of the same
# names call these): the changes noted for an incremental checkpoint, the state's sections and
# scalars as a checkpoint writes them, the state put back from a checkpoint (restore_state) and
# the state taken over from the engine a reload replaces (transfer_from).


cdef void forget_changes(EngineC* E) noexcept nogil:
    cdef uint64_t i
    if E.nr_changed * 8 > E.nr_subscribers:
        # many: a sweep in memory order beats a cache miss per listed row
        for i in range(E.nr_subscribers):
            (<SubHeadC*>row_of(E, <uint32_t>i)).flags &= ~SUB_CHANGED
    else:
        for i in range(E.nr_changed):
            (<SubHeadC*>row_of(E, E.changed_subs[i])).flags &= ~SUB_CHANGED
    E.nr_changed = 0
    if E.changed_contacts != NULL:
        memset(E.changed_contacts, 0, ((E.contacts_mask + 1) // 64 + 1) * sizeof(uint64_t))
    E.all_contacts_changed = 0


cdef _track_changes(Core self):
    # Core.track_changes
    if not self.E.tracking:
        self.E.changed_subs = <uint32_t*>sm_zalloc((<size_t>self.E.nr_subscribers + 1) * sizeof(uint32_t))
        if self.E.changed_subs == NULL:
            raise MemoryError()
        if self.E.contacts != NULL:
            self.E.changed_contacts = <uint64_t*>calloc((self.E.contacts_mask + 1) // 64 + 1, sizeof(uint64_t))
            if self.E.changed_contacts == NULL:
                raise MemoryError()
        self.E.tracking = 1
    forget_changes(&self.E)


cdef _take_changes(Core self):
    # Core.take_changes
    cdef uint64_t i, n = self.E.nr_changed, j = 0
    cdef uint32_t[::1] subs_view
    if not self.E.tracking:
        raise RuntimeError("take_changes needs track_changes first")
    if self.E.nr_actions or self.E.nr_conversions or self.E.nr_dead:
        raise RuntimeError("take the pending records before a checkpoint")
    subs = np.empty(n, dtype=np.uint32)
    subs_view = subs
    cdef SubHeadC* h
    if n * 8 > self.E.nr_subscribers:
        # many: found by a sweep in memory order, ascending already
        with nogil:
            for i in range(self.E.nr_subscribers):
                h = <SubHeadC*>row_of(&self.E, <uint32_t>i)
                if h.flags & SUB_CHANGED:
                    h.flags &= ~SUB_CHANGED
                    subs_view[j] = <uint32_t>i
                    j += 1
        j = 0
    else:
        with nogil:
            for i in range(n):
                subs_view[i] = self.E.changed_subs[i]
                (<SubHeadC*>row_of(&self.E, subs_view[i])).flags &= ~SUB_CHANGED
        subs.sort()     # ascending: the rows are then gathered, and later applied, in order
    self.E.nr_changed = 0
    contacts = _contact_states(self, not (self.E.all_contacts_changed or self.E.changed_contacts == NULL))
    forget_changes(&self.E)
    return subs, contacts


cdef _contact_states(Core self, bint changed_only):
    """The used contact slots (or only those noted as changed), packed, as bytes."""
    cdef uint64_t i, j = 0, used = 0
    cdef uint64_t nslots = self.E.contacts_mask + 1 if self.E.contacts != NULL else 0
    cdef uint8_t[::1] dst
    for i in range(nslots):
        if self.E.contacts[i].key and (not changed_only or self.E.changed_contacts[i >> 6] >> (i & 63) & 1):
            used += 1
    contacts = np.empty(used * sizeof(ContactC), dtype=np.uint8)
    if used:
        dst = contacts
        for i in range(nslots):
            if self.E.contacts[i].key and (not changed_only or self.E.changed_contacts[i >> 6] >> (i & 63) & 1):
                memcpy(&dst[j * sizeof(ContactC)], &self.E.contacts[i], sizeof(ContactC))
                j += 1
    return contacts


cdef _state_sections(Core self):
    # Core.state_sections
    if self.E.nr_actions or self.E.nr_conversions or self.E.nr_dead:
        raise RuntimeError("take the pending records before a checkpoint")
    forget_changes(&self.E)
    return ([("rows", self._rows_array()), ("contacts", _contact_states(self, False)),
             ("windows", self.window_entries())] + self.small_sections())


cdef _window_entries(Core self, subs):
    # Core.window_entries
    cdef uint64_t i, j = 0
    cdef uint32_t sub
    cdef int64_t* w
    cdef size_t words = self.E.window_n + 2
    if self.E.windows == NULL:
        return np.zeros(0, np.int64)
    if subs is None:
        out = np.empty(self.E.nr_windows_used * words, np.int64)
        for i in range(self.E.windows_mask + 1):
            w = self.E.windows + i * words
            if w[0]:
                out[j * words:(j + 1) * words] = <int64_t[:words]> w
                j += 1
        return out
    found = []
    for sub in subs:
        w = find_window(&self.E, sub, False)
        if w != NULL:
            found.append(np.array(<int64_t[:words]> w, dtype=np.int64))
    return np.concatenate(found) if found else np.zeros(0, np.int64)


cdef _small_sections(Core self):
    # Core.small_sections
    cdef uint8_t[::1] dst
    cdef TimerC* waiting = timers_gather(&self.E)
    if waiting == NULL and self.E.oom:
        self.E.oom = 0
        raise MemoryError()
    # in firing order: the same bytes whatever runs and heap held them
    timers = np.empty(self.E.nr_timers * sizeof(TimerC), dtype=np.uint8)
    if self.E.nr_timers:
        dst = timers
        memcpy(&dst[0], waiting, self.E.nr_timers * sizeof(TimerC))
    free(waiting)
    funnel = self.funnel().reshape(-1)
    counts = np.array([self.E.bad[r] for r in range(NR_REASONS)]
                      + [self.E.events, self.E.unknown] + [self.E.by_type[t] for t in range(64)],
                      dtype=np.uint64)
    carry = np.frombuffer(bytes(<uint8_t[:self.carry_len]> self.carry) if self.carry_len else b"",
                          dtype=np.uint8)
    dead_run = np.frombuffer(bytes(<uint8_t[:self.E.run.len]> self.E.run.bytes)
                             if self.E.run.count and self.E.run.len else b"", dtype=np.uint8)
    bad_fields = np.array(<uint64_t[:NR_REASONS * (NR_FIELDS + 1)]> &self.E.bad_field[0][0], dtype=np.uint64)
    budgets = np.frombuffer(bytes(<uint8_t[:(self.E.nr_campaigns + self.E.nr_channels) * sizeof(BudgetC)]>
                                  <uint8_t*>self.E.budgets), dtype=np.uint8)
    return [("timers", timers), ("funnel", funnel), ("counts", counts), ("carry", carry),
            ("dead_run", dead_run), ("bad_fields", bad_fields), ("budgets", budgets)]


cdef _state_scalars(Core self):
    # Core.state_scalars
    return {
        "clock": self.E.clock, "has_clock": self.E.has_clock, "seq": self.E.seq,
        "conversion_seq": self.E.conversion_seq, "timers_created": self.E.timers_created,
        "carry_offset": self.carry_offset, "stream_offset": self.stream_offset,
        # a scalar, not in the counts section: that section's length is checked on restore,
        # and checkpoints written before the count existed restore it as 0
        "late_events": self.E.late,
        "bad_bytes": self.E.bad_bytes,
        "largest_bad_value": [self.E.bad_largest, self.E.bad_largest_offset],
        # the open run (its value is the dead_run section) and the record cap's place
        "dead_run": {"offset": self.E.run.offset, "count": self.E.run.count, "reason": self.E.run.reason,
                     "field": self.E.run.field, "span": self.E.run.span,
                     "span_records": self.E.run.span_records},
        "layout": [self.E.stride, self.E.nr_elig_words, self.E.nr_counters, self.E.nr_windows,
                   self.E.nr_subscribers, self.E.nr_campaigns, self.E.nr_markers],
        # the funnel section's stages, in order (records.FUNNEL when written)
        "funnel_stages": list(FUNNEL),
        # the budgets section holds the campaigns' counts, then these channels'
        "channels": list(self.channel_names),
        # the size of a windows entry (max_in_window.contacts times kept)
        "window_contacts": self.E.window_n,
    }


def _restore_state(Core self, dict scalars, dict sections):
    # Core.restore_state, out of the class so that _core.pyx stays readable
    cdef const uint8_t[::1] rows = sections["rows"]
    cdef const uint8_t[::1] contacts = sections["contacts"]
    cdef const uint8_t[::1] timers = sections["timers"]
    cdef const uint64_t[::1] funnel = sections["funnel"]
    cdef const uint64_t[::1] counts = sections["counts"]
    cdef const uint8_t[::1] carry = sections["carry"]
    cdef const uint8_t[::1] dead_run
    cdef const uint64_t[::1] bad_fields
    cdef const uint8_t[::1] budgets
    cdef const int64_t[::1] windows
    cdef int64_t* w
    cdef size_t words = self.E.window_n + 2
    cdef uint64_t i, n, h
    cdef ContactC* c
    cdef ContactC entry
    cdef TimerC* grown
    cdef int rc
    cdef SubHeadC* head
    cdef uint64_t* elig
    cdef uint8_t inactive
    cdef int elig_words
    layout = [self.E.stride, self.E.nr_elig_words, self.E.nr_counters, self.E.nr_windows,
              self.E.nr_subscribers, self.E.nr_campaigns, self.E.nr_markers]
    # a checkpoint written before markers has six entries: no markers
    if list(scalars["layout"]) + [0] * (7 - len(scalars["layout"])) != layout:
        raise ValueError(f"checkpoint layout {list(scalars['layout'])} does not match this engine's {layout}")
    # funnel stages by name: a checkpoint written before a stage was added restores with it at 0
    stages = list(scalars.get("funnel_stages", FUNNEL_UNNAMED))
    if any(stage not in FUNNEL for stage in stages) or len(set(stages)) != len(stages):
        raise ValueError(f"checkpoint funnel stages {stages} are not this engine's")
    if (rows.shape[0] != <size_t>self.E.nr_subscribers * self.E.stride
            or contacts.shape[0] % sizeof(ContactC) or timers.shape[0] % sizeof(TimerC)
            or funnel.shape[0] != <size_t>self.E.nr_campaigns * len(stages)
            or counts.shape[0] != NR_REASONS + 2 + 64 or carry.shape[0] > self.max_event_bytes):
        raise ValueError("checkpoint sections do not fit this engine")
    # A checkpoint of a sigmatch before dead-letter runs has neither: no run open, and
    # its bad events are not known by field.
    run = scalars.get("dead_run") or {"offset": 0, "count": 0, "reason": 0, "field": 0, "span": 0,
                                      "span_records": 0}
    dead_run = sections.get("dead_run", np.zeros(0, np.uint8))
    bad_fields = sections.get("bad_fields", np.zeros(NR_REASONS * (NR_FIELDS + 1), np.uint64))
    if (bad_fields.shape[0] != NR_REASONS * (NR_FIELDS + 1) or dead_run.shape[0] > self.max_event_bytes
            or not 0 <= run["reason"] < NR_REASONS or not 0 <= run["field"] <= NR_FIELDS
            or (run["count"] != 0) != (dead_run.shape[0] != 0)):
        raise ValueError("checkpoint dead-letter state does not fit this engine")
    # A checkpoint of a sigmatch before budgets has none: nothing was counted against them.
    budgets = sections.get("budgets", np.zeros((self.E.nr_campaigns + self.E.nr_channels) * sizeof(BudgetC), np.uint8))
    if (list(scalars.get("channels", self.channel_names)) != self.channel_names
            or budgets.shape[0] != (self.E.nr_campaigns + self.E.nr_channels) * sizeof(BudgetC)):
        raise ValueError(f"checkpoint channels {scalars.get('channels')} do not match this engine's {self.channel_names}")
    # A checkpoint of a sigmatch before max_in_window kept no contact times: none are known.
    windows = sections.get("windows", np.zeros(0, np.int64))
    if windows.shape[0] and (scalars.get("window_contacts") != self.E.window_n or windows.shape[0] % words):
        raise ValueError(f"checkpoint keeps {scalars.get('window_contacts')} contact times per subscriber, "
                         f"this engine {self.E.window_n}")
    for i in range(0, windows.shape[0], words):
        if not 0 < windows[i] <= self.E.nr_subscribers:
            raise ValueError("checkpoint contact times out of range")
    n = timers.shape[0] // sizeof(TimerC)
    for i in range(n):
        if (<TimerC*>&timers[i * sizeof(TimerC)]).campaign >= <uint32_t>self.E.nr_campaigns or \
                (<TimerC*>&timers[i * sizeof(TimerC)]).subscriber >= self.E.nr_subscribers:
            raise ValueError("checkpoint timer out of range")
    # Everything that can be refused is refused before anything is changed: a core that
    # refused a checkpoint goes on as it was.
    if n and np.bincount(np.asarray(timers).view(TIMER_DTYPE)["subscriber"]).max() > 0xFFFF:
        raise ValueError("checkpoint timers out of range: more than 65,535 for one subscriber")
    for i in range(contacts.shape[0] // sizeof(ContactC)):
        memcpy(&entry, &contacts[i * sizeof(ContactC)], sizeof(ContactC))
        if not entry.key & OCCUPIED or (entry.key & 0xFFFF) >= <uint64_t>self.E.nr_campaigns \
                or ((entry.key & ~OCCUPIED) >> 16) >= self.E.nr_subscribers:
            raise ValueError("checkpoint contact out of range")
    forget_changes(&self.E)
    if rows.shape[0]:
        # What the compile made of the configuration, profiles and lists as they are now (the
        # eligibility words; whether the subscriber is still in the snapshot) stays: a
        # checkpoint holds only what the events did. A `where` or a list edited while the
        # service was stopped applies from the next event on, as after a reload.
        elig_words = self.E.nr_elig_words
        elig = <uint64_t*>malloc(max(elig_words, 1) * sizeof(uint64_t))
        if elig == NULL:
            raise MemoryError()
        try:
            for i in range(self.E.nr_subscribers):
                head = <SubHeadC*>row_of(&self.E, <uint32_t>i)
                inactive = head.flags & SUB_INACTIVE
                memcpy(elig, row_of(&self.E, <uint32_t>i) + self.E.elig_off, elig_words * sizeof(uint64_t))
                memcpy(head, &rows[i * self.E.stride], self.E.stride)
                memcpy(row_of(&self.E, <uint32_t>i) + self.E.elig_off, elig, elig_words * sizeof(uint64_t))
                head.flags = (head.flags & ~(SUB_CHANGED | SUB_INACTIVE)) | inactive
                # counted again from the timers below: until then (and if what follows fails)
                # no row claims a key in the pending set
                head.pending = 0
                # counted again as the contacts are put back below (an older checkpoint's
                # byte here was padding)
                head.contacts = 0
        finally:
            free(elig)
    # contacts: re-inserted, so the table is sized for them whatever it was before
    if self.E.contacts != NULL:
        sm_free(self.E.contacts, (self.E.contacts_mask + 1) * sizeof(ContactC))
        self.E.contacts = NULL
        self.E.contacts_mask = 0
    self.E.nr_contacts = 0
    for i in range(contacts.shape[0] // sizeof(ContactC)):
        memcpy(&entry, &contacts[i * sizeof(ContactC)], sizeof(ContactC))
        c = find_contact(&self.E, <uint32_t>((entry.key & ~OCCUPIED) >> 16), <uint32_t>(entry.key & 0xFFFF), True)
        if c == NULL:
            raise MemoryError()
        c[0] = entry
        # a checkpoint written before the pending set marks a waiting action here too: the
        # timers below say it now
        c.flags &= ~CONTACT_PENDING
    if self.E.windows != NULL:
        sm_free(self.E.windows, (self.E.windows_mask + 1) * words * sizeof(int64_t))
        self.E.windows = NULL
        self.E.windows_mask = 0
    self.E.nr_windows_used = 0
    for i in range(0, windows.shape[0], words):
        w = find_window(&self.E, <uint32_t>(windows[i] - 1), True)
        if w == NULL:
            raise MemoryError()
        memcpy(w, &windows[i], words * sizeof(int64_t))
    # timers: all in the heap, in whatever order they were saved (a heap's before 2026-12,
    # firing order since), and none in the runs
    if timers_init(&self.E, self.E.nr_runs):
        raise MemoryError()
    if n > self.E.heap_cap:
        grown = <TimerC*>realloc(self.E.heap, n * sizeof(TimerC))
        if grown == NULL:
            raise MemoryError()
        self.E.heap = grown
        self.E.heap_cap = n
    if n:
        memcpy(self.E.heap, &timers[0], n * sizeof(TimerC))
    self.E.heap_n = n
    heap_fix(&self.E)
    if pending_rebuild(&self.E):
        raise MemoryError()
    where = [FUNNEL.index(stage) for stage in stages]
    memset(self.E.funnel, 0, <size_t>self.E.nr_campaigns * NR_FUNNEL * sizeof(uint64_t))
    for i in range(funnel.shape[0]):
        self.E.funnel[(i // len(stages)) * NR_FUNNEL + where[i % len(stages)]] = funnel[i]
    if budgets.shape[0]:
        memcpy(self.E.budgets, &budgets[0], budgets.shape[0])
    for i in range(NR_REASONS):
        self.E.bad[i] = counts[i]
    self.E.events = counts[NR_REASONS]
    self.E.unknown = counts[NR_REASONS + 1]
    for i in range(64):
        self.E.by_type[i] = counts[NR_REASONS + 2 + i]
    self.E.clock = scalars["clock"]
    self.E.has_clock = scalars["has_clock"]
    self.E.late = scalars.get("late_events", 0)
    self.E.bad_bytes = scalars.get("bad_bytes", 0)
    self.E.bad_largest, self.E.bad_largest_offset = scalars.get("largest_bad_value", (0, 0))
    self.E.seq = scalars["seq"]
    self.E.conversion_seq = scalars["conversion_seq"]
    self.E.timers_created = scalars["timers_created"]
    self.carry_len = carry.shape[0]
    if self.carry_len:
        memcpy(self.carry, &carry[0], self.carry_len)
    self.carry_offset = scalars["carry_offset"]
    self.carry_scan_pos = 0
    self.carry_scan_left = 1
    self.stream_offset = scalars["stream_offset"]
    memcpy(&self.E.bad_field[0][0], &bad_fields[0], sizeof(self.E.bad_field))
    self.E.run.len = dead_run.shape[0]
    if self.E.run.len:
        memcpy(self.E.run.bytes, &dead_run[0], self.E.run.len)
    self.E.run.offset = run["offset"]
    self.E.run.count = run["count"]
    self.E.run.reason = run["reason"]
    self.E.run.field = run["field"]
    self.E.run.span = run["span"]
    self.E.run.span_records = run["span_records"]
    forget_changes(&self.E)      # re-inserting the contacts noted them


def _transfer_from(Core self, Core old, list campaign_map, list counter_map, uint32_t nr_old, list marker_map=None):
    # Core.transfer_from, out of the class so that _core.pyx stays readable
    cdef uint32_t i
    cdef int k, nk
    cdef uint64_t j, key
    cdef SubHeadC* oh
    cdef SubHeadC* nh
    cdef ContactC* c
    cdef ContactC* src
    cdef TimerC t
    cdef TimerC* waiting
    cdef int32_t cmap[65536]
    cdef int32_t kmap[256]
    cdef int32_t* marker_to = NULL
    cdef int nr_old_markers = old.E.nr_markers
    cdef int64_t* src_w
    cdef int64_t* dst_w
    cdef int64_t kept, head
    cdef uint64_t dropped = 0
    if nr_old > self.E.nr_subscribers or nr_old > old.E.nr_subscribers:
        raise ValueError("the new engine must keep every old subscriber")
    if len(campaign_map) != old.E.nr_campaigns or len(counter_map) != old.E.nr_counters or old.E.nr_counters > 256:
        raise ValueError("maps do not match the old engine")
    for k in range(old.E.nr_campaigns):
        cmap[k] = campaign_map[k]
        if not -1 <= cmap[k] < self.E.nr_campaigns:
            raise ValueError("campaign map out of range")
    for k in range(old.E.nr_counters):
        kmap[k] = counter_map[k]
        if not -1 <= kmap[k] < self.E.nr_counters:
            raise ValueError("counter map out of range")
    marker_map = marker_map if marker_map is not None else [-1] * old.E.nr_markers
    if len(marker_map) != old.E.nr_markers or any(not -1 <= m < self.E.nr_markers for m in marker_map):
        raise ValueError("marker map does not match the old engine")
    marker_to = <int32_t*>malloc(max(nr_old_markers, 1) * sizeof(int32_t))
    if marker_to == NULL:
        raise MemoryError()
    for k in range(nr_old_markers):
        marker_to[k] = marker_map[k]
    try:
        for i in range(nr_old):
            oh = <SubHeadC*>row_of(&old.E, i)
            nh = <SubHeadC*>row_of(&self.E, i)
            if oh.msisdn != nh.msisdn:
                raise ValueError("subscriber order differs from the old engine's")
            nh.last_any_p1 = oh.last_any_p1
            nh.day = oh.day
            nh.day_count = oh.day_count
            nh.cell = oh.cell
            nh.flags = (nh.flags & SUB_INACTIVE) | (oh.flags & SUB_POWERED_OFF)
            for k in range(old.E.nr_counters):
                nk = kmap[k]
                if nk < 0:
                    continue
                (<uint32_t*>(row_of(&self.E, i) + self.E.counter_off))[nk] = \
                    (<uint32_t*>(row_of(&old.E, i) + old.E.counter_off))[k]
                if old.E.counters[k].window_slot >= 0 and self.E.counters[nk].window_slot >= 0:
                    (<int64_t*>(row_of(&self.E, i) + self.E.window_off))[self.E.counters[nk].window_slot] = \
                        (<int64_t*>(row_of(&old.E, i) + old.E.window_off))[old.E.counters[k].window_slot]
            for k in range(nr_old_markers):
                if marker_to[k] >= 0:
                    (<int64_t*>(row_of(&self.E, i) + self.E.marker_off))[marker_to[k]] = \
                        (<int64_t*>(row_of(&old.E, i) + old.E.marker_off))[k]
    finally:
        free(marker_to)
    if old.E.contacts != NULL:
        for j in range(old.E.contacts_mask + 1):
            src = &old.E.contacts[j]
            if not src.key:
                continue
            key = src.key & ~OCCUPIED
            if (key >> 16) >= nr_old or cmap[key & 0xFFFF] < 0:
                continue
            c = find_contact(&self.E, <uint32_t>(key >> 16), <uint32_t>cmap[key & 0xFFFF], True)
            if c == NULL:
                raise MemoryError()
            c.last_ts = src.last_ts
            c.last_seq = src.last_seq
            c.streak = src.streak
            c.flags = src.flags & ~CONTACT_PENDING
    # kept contact times by subscriber, the newest ones: a new max_in_window.contacts above
    # the old one knows only the times the old engine kept
    if self.E.window_n and old.E.window_n and old.E.windows != NULL:
        for j in range(old.E.windows_mask + 1):
            src_w = old.E.windows + j * (old.E.window_n + 2)
            if src_w[0] == 0 or <uint64_t>(src_w[0] - 1) >= nr_old:
                continue
            dst_w = find_window(&self.E, <uint32_t>(src_w[0] - 1), True)
            if dst_w == NULL:
                raise MemoryError()
            kept = src_w[1] & 0xFF
            head = src_w[1] >> 8
            for k in range(max(0, kept - self.E.window_n), kept):
                window_add(&self.E, dst_w, src_w[2 + (head + k) % old.E.window_n])
    waiting = timers_gather(&old.E)
    if waiting == NULL and old.E.oom:
        old.E.oom = 0
        raise MemoryError()
    try:
        for j in range(old.E.nr_timers):
            t = waiting[j]
            if cmap[t.campaign] < 0 or t.subscriber >= nr_old:
                dropped += 1
                continue
            t.campaign = <uint32_t>cmap[t.campaign]
            if timer_add(&self.E, &t, -1):
                raise MemoryError()
    finally:
        free(waiting)
    if pending_rebuild(&self.E):
        raise MemoryError()
    for k in range(old.E.nr_campaigns):
        if cmap[k] >= 0:
            memcpy(&self.E.funnel[<size_t>cmap[k] * NR_FUNNEL], &old.E.funnel[<size_t>k * NR_FUNNEL],
                   NR_FUNNEL * sizeof(uint64_t))
            self.E.budgets[cmap[k]] = old.E.budgets[k]
    # budgets by campaign id (above) and by channel name
    for k, name in enumerate(old.channel_names):
        if name in self.channel_names:
            self.E.budgets[self.E.nr_campaigns + self.channel_names.index(name)] = \
                old.E.budgets[old.E.nr_campaigns + k]
    memcpy(self.E.bad, old.E.bad, sizeof(self.E.bad))
    memcpy(self.E.bad_field, old.E.bad_field, sizeof(self.E.bad_field))
    memcpy(self.E.by_type, old.E.by_type, sizeof(self.E.by_type))
    self.E.events = old.E.events
    self.E.unknown = old.E.unknown
    self.E.late = old.E.late
    self.E.bad_bytes = old.E.bad_bytes
    self.E.bad_largest = old.E.bad_largest
    self.E.bad_largest_offset = old.E.bad_largest_offset
    self.E.clock = old.E.clock
    self.E.has_clock = old.E.has_clock
    self.E.seq = old.E.seq
    self.E.conversion_seq = old.E.conversion_seq
    self.E.timers_created = old.E.timers_created
    if old.carry_len > self.max_event_bytes or (old.E.run.count and old.E.run.len > self.max_event_bytes):
        raise ValueError("the old engine carries a longer event than this one accepts")
    memcpy(self.carry, old.carry, old.carry_len)
    self.carry_len = old.carry_len
    self.carry_offset = old.carry_offset
    self.carry_scan_pos = old.carry_scan_pos
    self.carry_scan_left = old.carry_scan_left
    self.stream_offset = old.stream_offset
    # the open run goes on in the new engine: a run of bad values split by a reload is
    # still one record (it may end differently if the event types changed)
    memcpy(self.E.run.bytes, old.E.run.bytes, old.E.run.len if old.E.run.count else 0)
    self.E.run.len = old.E.run.len
    self.E.run.offset = old.E.run.offset
    self.E.run.count = old.E.run.count
    self.E.run.reason = old.E.run.reason
    self.E.run.field = old.E.run.field
    self.E.run.span = old.E.run.span
    self.E.run.span_records = old.E.run.span_records
    return dropped
