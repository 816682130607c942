# Campaigns into the core's tables (included by _core.pyx after the Core class, whose
# set_campaigns, set_layout, set_areas, set_counters and set_markers call these): each
# campaign's CampaignC, the lists of campaigns, counters and markers by event type, the
# candidate masks of EngineC, and the `when` programs. Run at load and at a reload, never per
# event; out of the class so that _core.pyx stays readable.


cdef _set_campaigns(Core self, list campaigns):
    # Core.set_campaigns
    cdef int n = len(campaigns), ci
    cdef CampaignC* c
    cdef const char* base
    cdef size_t offset = 0
    if n >= 65536:
        raise ValueError("at most 65535 campaigns")
    if self.E.nr_timers:
        raise RuntimeError("campaigns are set before any timer waits")
    if self.E.nr_channels == 0:
        self.set_channels([""], [None])
    # every check first: a core whose arrays were freed before a check that raised would
    # hold arrays for the new campaigns and the count of the old ones
    marks = [m for d in campaigns for m in d.get("marks", ())]
    absent = [k for d in campaigns for k in d.get("absent", ())]
    if any(not 0 <= k < self.E.nr_markers for k in [m[0] for m in marks] + absent) \
            or any(m[1] <= 0 for m in marks):
        raise ValueError("a campaign names a marker out of range or a within that is not positive")
    # variants: weights 1..10,000, at most 16 (the record's byte and the sums' uint32 hold them)
    weights = [list(d.get("variants", ())) for d in campaigns]
    if any(len(w) > 16 or any(not 1 <= x <= 10000 for x in w) for w in weights):
        raise ValueError("a campaign has more than 16 variants or a weight outside 1..10,000")
    for d in campaigns:
        if not 0 <= d.get("channel", 0) < self.E.nr_channels:
            raise ValueError(f"campaign {d['id']!r}: channel index out of range")
    free(self.E.campaigns)
    free(self.E.funnel)
    free(self.E.budgets)
    free(self.E.pending_by_campaign)
    # none until every array is in place (a MemoryError below leaves a core of none)
    self.E.nr_campaigns = self.nr_campaigns = 0
    self.E.campaigns = <CampaignC*>sm_line_calloc(n, sizeof(CampaignC))
    self.E.funnel = <uint64_t*>calloc(max(n, 1) * NR_FUNNEL, sizeof(uint64_t))
    self.E.budgets = <BudgetC*>calloc(n + self.E.nr_channels, sizeof(BudgetC))
    # no timer waits (above): every campaign's count starts at 0
    self.E.pending_by_campaign = <uint32_t*>calloc(max(n, 1), sizeof(uint32_t))
    if (self.E.campaigns == NULL or self.E.funnel == NULL or self.E.budgets == NULL
            or self.E.pending_by_campaign == NULL):
        raise MemoryError()
    self.campaign_ids = b"".join(d["id"].encode() for d in campaigns)
    base = self.campaign_ids
    free(self.E.conds)
    free(self.E.absent_list)
    self.E.conds = <MarkCondC*>calloc(max(len(marks), 1), sizeof(MarkCondC))
    self.E.absent_list = <int32_t*>calloc(max(len(absent), 1), sizeof(int32_t))
    if self.E.conds == NULL or self.E.absent_list == NULL:
        raise MemoryError()
    for ci, (marker, within, negate) in enumerate(marks):
        self.E.conds[ci].marker = marker
        self.E.conds[ci].within = within
        self.E.conds[ci].negate = 1 if negate else 0
    for ci, marker in enumerate(absent):
        self.E.absent_list[ci] = marker
    free(self.E.variant_sums)
    self.E.variant_sums = <uint32_t*>calloc(max(sum(map(len, weights)), 1), sizeof(uint32_t))
    if self.E.variant_sums == NULL:
        raise MemoryError()
    free(self.E.cidx_stamp)
    free(self.E.cidx_slot)
    self.E.cidx_stamp = <uint32_t*>calloc(max(n, 1), sizeof(uint32_t))
    self.E.cidx_slot = <uint64_t*>calloc(max(n, 1), sizeof(uint64_t))
    self.E.cidx_gen = 0
    self.E.cidx_valid = 0
    free(self.E.pidx_stamp)
    self.E.pidx_stamp = <uint32_t*>calloc(max(n, 1), sizeof(uint32_t))
    self.E.pidx_gen = 0
    if self.E.cidx_stamp == NULL or self.E.cidx_slot == NULL or self.E.pidx_stamp == NULL:
        raise MemoryError()
    nr_sums = 0
    for w in weights:
        running = 0
        for x in w:
            running += x
            self.E.variant_sums[nr_sums] = running
            nr_sums += 1
    nr_sums = 0
    nr_marks = 0
    nr_absent = 0
    for ci, d in enumerate(campaigns):
        c = &self.E.campaigns[ci]
        c.convert_types = d["convert_types"]
        c.convert_arg = d["convert_arg"] if d["convert_arg"] is not None else 0
        c.has_convert_arg = d["convert_arg"] is not None
        c.elig_word, c.elig_mask = d["elig"]
        c.recheck_word, c.recheck_mask = d["recheck_elig"]
        c.area_word, c.area_mask = d["area"] if d["area"] is not None else (-1, 0)
        c.peer_set = d["peer_set"]
        c.cooldown = d["cooldown_ms"]
        c.delay = d["delay_ms"]
        c.convert_within = d["convert_within_ms"] if d["convert_within_ms"] is not None else -1
        c.hours_start, c.hours_end = d["hours"] if d["hours"] is not None else (-1, -1)
        c.days = d["days"]
        c.counter = d["counter"]
        c.at_least = d["at_least"]
        c.date_slot = d.get("date_slot", -1)
        if not -1 <= c.date_slot < self.E.nr_dates:
            raise ValueError("date_slot out of range")
        c.stop_after = d["stop_after"] if d["stop_after"] is not None else 0xFFFFFFFFu
        c.holdout = d["holdout"]
        c.recheck = d["recheck"]
        c.exempt = d["exempt"]
        c.enter = d["enter"] and c.area_word >= 0
        c.once = d["once"]
        c.flags = d.get("flags", 0)
        c.arg = d.get("arg") or 0
        c.has_arg = d.get("arg") is not None
        c.enabled = d.get("enabled", True)
        c.cond_off = nr_marks
        c.nr_conds = len(d.get("marks", ()))
        nr_marks += c.nr_conds
        c.absent_off = nr_absent
        c.nr_absent = len(d.get("absent", ()))
        nr_absent += c.nr_absent
        c.start_day = d.get("start_day", -2**31)
        c.end_day = d.get("end_day", 2**31 - 1)
        c.daily_budget = NO_BUDGET if d.get("daily_budget") is None else d["daily_budget"]
        c.total_budget = NO_BUDGET if d.get("total_budget") is None else d["total_budget"]
        c.channel = d.get("channel", 0)
        c.nr_variants = len(weights[ci])
        c.variant_off = nr_sums
        nr_sums += c.nr_variants
        raw = d["id"].encode()
        c.id = base + offset
        c.id_len = len(raw)
        offset += len(raw)
    per_channel = Counter(d.get("channel", 0) for d in campaigns)
    for ci, d in enumerate(campaigns):
        self.E.campaigns[ci].channel_campaigns = per_channel[d.get("channel", 0)]
    # a timer run per distinct delay, in order of first use
    runs = {}
    for ci, d in enumerate(campaigns):
        self.E.campaigns[ci].run = runs.setdefault(d["delay_ms"], len(runs)) if d["delay_ms"] > 0 else -1
    if timers_init(&self.E, len(runs)):
        raise MemoryError()
    _set_when(self, campaigns)
    self.E.nr_campaigns = n
    self.nr_campaigns = n
    _build_type_lists(
        [[ci for ci, d in enumerate(campaigns) if (d["types"] >> t) & 1] for t in range(64)],
        &self.E.by_type_off, &self.E.trig_list)
    _build_candidate_masks(self)
    for t in range(64):
        sets = sorted({d["peer_set"] for d in campaigns if (d["types"] >> t) & 1 and d["peer_set"] >= 0})
        for j in range(4):
            self.E.peer_prefetch[t][j] = sets[j] if j < len(sets) else -1
    _build_type_lists(
        [[ci for ci, d in enumerate(campaigns) if (d["convert_types"] >> t) & 1] for t in range(64)],
        &self.E.convert_type_off, &self.E.convert_list)


cdef _build_candidate_masks(Core self):
    """The candidate masks of EngineC (see there), from the campaigns and the type lists.
    Memory: P words per mask, one mask per eligibility bit, trigger flag, counter threshold
    and area a type's campaigns use, plus two; for n campaigns of a type at most about
    4n masks of ceil(n / 64) words (200 campaigns of one type: under 26 kB). Nothing per
    subscriber."""
    cdef int t, b, i, W = self.E.nr_elig_words, A = self.E.nr_area_words
    cdef uint32_t n, P, lo
    cdef CampaignC* c
    cdef list pool = []
    one = <object>1         # masks are Python ints while built: a type may have > 64 campaigns
    elig_slot, elig_union = {}, [0] * (64 * W)
    area_slot, area_union = {}, [0] * (64 * max(A, 1))
    flag_slot, flag_union = {}, [0] * 64
    time_off, area_off, cgrp_off = [0] * 64, [NO_MASK] * 64, [0] * 65
    groups, thresholds, thr_slot = [], [], []
    max_p = 1
    for ci in range(self.E.nr_campaigns):
        c = &self.E.campaigns[ci]
        if c.elig_mask and not 0 <= c.elig_word < W:
            raise ValueError(f"campaign {ci}: eligibility word {c.elig_word} out of range")

    def add(mask, P):
        pool.extend((mask >> (64 * p)) & 0xFFFFFFFFFFFFFFFF for p in range(P))
        return len(pool) - P

    for t in range(64):
        lo = self.E.by_type_off[t]
        n = self.E.by_type_off[t + 1] - lo
        P = (n + 63) >> 6
        max_p = max(max_p, P)
        elig, flags, areas, counters, with_area = {}, {}, {}, {}, 0
        for i in range(<int>n):
            c = &self.E.campaigns[self.E.trig_list[lo + i]]
            bit = one << i
            for b in range(64):
                if (c.elig_mask >> b) & 1:
                    elig[c.elig_word * 64 + b] = elig.get(c.elig_word * 64 + b, 0) | bit
                if (c.flags >> b) & 1:
                    flags[b] = flags.get(b, 0) | bit
                if 0 <= c.area_word < A and (c.area_mask >> b) & 1:     # else in no area: never
                    areas[c.area_word * 64 + b] = areas.get(c.area_word * 64 + b, 0) | bit
            if c.area_word >= 0:
                with_area |= bit
            if c.counter >= 0 and c.at_least > 0:
                counters.setdefault(c.counter, {})
                counters[c.counter][c.at_least] = counters[c.counter].get(c.at_least, 0) | bit
        for key, mask in elig.items():
            elig_union[t * W + key // 64] |= one << (key % 64)
            elig_slot[(t * W + key // 64) * 64 + key % 64] = add(mask, P)
        for b, mask in flags.items():
            flag_union[t] |= one << b
            flag_slot[t * 64 + b] = add(mask, P)
        if with_area:
            area_off[t] = add(with_area, P)
            for key, mask in areas.items():
                area_union[t * A + key // 64] |= one << (key % 64)
                area_slot[(t * A + key // 64) * 64 + key % 64] = add(mask, P)
        time_off[t] = add(0, P)
        cgrp_off[t] = len(groups)
        for k in sorted(counters):
            groups.append((k, len(thresholds), len(counters[k])))
            above = 0
            for at_least in sorted(counters[k], reverse=True):
                above |= counters[k][at_least]
                thresholds.append(at_least)
                thr_slot.append(add(above, P))
    cgrp_off[64] = len(groups)
    free_candidates(&self.E)
    # 3 words of padding: elig_candidates reads every mask as 4 words (zeros past the end)
    self.E.pos_pool = <uint64_t*>calloc(len(pool) + 3, sizeof(uint64_t))
    self.E.elig_union = <uint64_t*>calloc(64 * W, sizeof(uint64_t))
    self.E.elig_slot = <uint32_t*>calloc(64 * W * 64, sizeof(uint32_t))
    self.E.flag_slot = <uint32_t*>calloc(64 * 64, sizeof(uint32_t))
    self.E.cgrps = <CandCounterC*>calloc(max(len(groups), 1), sizeof(CandCounterC))
    self.E.cthr = <uint32_t*>calloc(max(len(thresholds), 1), sizeof(uint32_t))
    self.E.cthr_slot = <uint32_t*>calloc(max(len(thresholds), 1), sizeof(uint32_t))
    self.E.area_union = <uint64_t*>calloc(64 * max(A, 1), sizeof(uint64_t))
    self.E.area_slot = <uint32_t*>calloc(64 * max(A, 1) * 64, sizeof(uint32_t))
    self.E.cand = <uint64_t*>calloc(2 * max_p, sizeof(uint64_t))
    if (self.E.pos_pool == NULL or self.E.elig_union == NULL or self.E.elig_slot == NULL
            or self.E.flag_slot == NULL or self.E.cgrps == NULL or self.E.cthr == NULL
            or self.E.cthr_slot == NULL or self.E.area_union == NULL or self.E.area_slot == NULL
            or self.E.cand == NULL):
        raise MemoryError()
    for i, x in enumerate(pool):
        self.E.pos_pool[i] = x
    for i, x in enumerate(elig_union):
        self.E.elig_union[i] = x
    for i, x in elig_slot.items():
        self.E.elig_slot[i] = x
    for i, x in flag_slot.items():
        self.E.flag_slot[i] = x
    for i, (k, first, nr) in enumerate(groups):
        self.E.cgrps[i].counter = k
        self.E.cgrps[i].first = first
        self.E.cgrps[i].n = nr
    for i, x in enumerate(thresholds):
        self.E.cthr[i] = x
    for i, x in enumerate(thr_slot):
        self.E.cthr_slot[i] = x
    for i, x in enumerate(area_union):
        self.E.area_union[i] = x
    for i, x in area_slot.items():
        self.E.area_slot[i] = x
    for t in range(64):
        self.E.flag_union[t] = flag_union[t]
        self.E.time_off[t] = time_off[t]
        self.E.area_off[t] = area_off[t]
        self.E.cgrp_off[t] = cgrp_off[t]
    self.E.cgrp_off[64] = cgrp_off[64]
    self.E.cand_nr_words = W
    self.E.cand_area_words = A
    self.E.cand_max_words = max_p
    self.E.time_valid = 0


cdef _set_when(Core self, list campaigns):
    """The `when` tables: d["when"] is None or (comparisons, words, stack) as
    engine.language.when.Program holds them; counters must exist (set_counters first)."""
    cdef int ci
    cdef CampaignC* c
    cmps, terms, words = [], [], []
    for ci, d in enumerate(campaigns):
        c = &self.E.campaigns[ci]
        when = d.get("when")
        c.when_start = len(words)
        c.when_len = 0
        if when is None:
            continue
        comparisons, program, stack = when
        if stack > 64 or not program:
            raise ValueError("a when program needs a stack of at most 64")
        for word in program:
            if not (WHEN_NOT <= word < len(comparisons)):
                raise ValueError("bad when program word")
            words.append(word + len(cmps) if word >= 0 else word)
        for op, constant, cterms in comparisons:
            if not 0 <= op <= WHEN_GE or len(cterms) > 32 or not -(1 << 62) < constant < (1 << 62):
                raise ValueError("bad when comparison")
            cmps.append((op, constant, len(terms), len(cterms)))
            for k, coef in cterms:
                if not 0 <= k < self.E.nr_counters or not -(1 << 62) < coef < (1 << 62):
                    raise ValueError("bad when term")
                terms.append((k, coef))
        c.when_len = len(program)
    free(self.E.when_cmps)
    free(self.E.when_terms)
    free(self.E.when_prog)
    self.E.when_cmps = <WhenCmpC*>calloc(max(len(cmps), 1), sizeof(WhenCmpC))
    self.E.when_terms = <WhenTermC*>calloc(max(len(terms), 1), sizeof(WhenTermC))
    self.E.when_prog = <int32_t*>calloc(max(len(words), 1), sizeof(int32_t))
    if self.E.when_cmps == NULL or self.E.when_terms == NULL or self.E.when_prog == NULL:
        raise MemoryError()
    for ci, (op, constant, first, nr) in enumerate(cmps):
        self.E.when_cmps[ci].op = op
        self.E.when_cmps[ci].constant = constant
        self.E.when_cmps[ci].first_term = first
        self.E.when_cmps[ci].nr_terms = nr
    for ci, (k, coef) in enumerate(terms):
        self.E.when_terms[ci].counter = k
        self.E.when_terms[ci].coef = coef
    for ci, word in enumerate(words):
        self.E.when_prog[ci] = word


cdef _build_type_lists(list per_type, uint32_t** off, uint16_t** lst):
    cdef int t, total = sum(len(x) for x in per_type), j = 0
    free(lst[0])
    lst[0] = <uint16_t*>calloc(max(total, 1), sizeof(uint16_t))
    if lst[0] == NULL:
        raise MemoryError()
    for t in range(64):
        off[0][t] = j
        for k in per_type[t]:
            lst[0][j] = k
            j += 1
    off[0][64] = j
