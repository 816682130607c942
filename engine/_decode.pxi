# Included by _core.pyx: the msgpack decoder. Free functions over (buffer, cursor); no
# allocation, no Python. See the transition table in _core.pyx's docstring.

cdef inline int need(size_t pos, size_t n, size_t end, size_t limit) noexcept nogil:
    if pos + n > limit:
        return DEC_TOO_LARGE
    if pos + n > end:
        return DEC_NEED_MORE
    return DEC_OK


cdef inline uint64_t be16(const uint8_t* p) noexcept nogil:
    return (<uint64_t>p[0] << 8) | p[1]


cdef inline uint64_t be32(const uint8_t* p) noexcept nogil:
    return (<uint64_t>p[0] << 24) | (<uint64_t>p[1] << 16) | (<uint64_t>p[2] << 8) | p[3]


cdef inline uint64_t be64(const uint8_t* p) noexcept nogil:
    return (be32(p) << 32) | be32(p + 4)


cdef int scan_values(const uint8_t* buf, size_t* ppos, size_t end, size_t limit,
                     uint64_t* premaining) noexcept nogil:
    """Skip `*premaining` complete msgpack values, resumably. Iterative: a container adds its
    elements to the count, so arbitrarily deep nesting needs no stack, and the byte limit
    bounds the work. Every value still to be skipped takes at least one byte, so each check
    leaves room for them: an event is too large as soon as its bytes so far prove it cannot
    fit.

    On DEC_NEED_MORE, *ppos and *premaining say where to go on once more bytes are there: the
    start of the value that did not fit, and the values left counting it. Going on from there
    makes exactly the checks a scan of the whole data would make, in the same order, so the
    outcome never depends on where the data was cut, and a value fed a byte at a time costs
    O(1) per byte, not a rescan from its start (msgpack-python's unpacker keeps its place the
    same way). On DEC_OK *ppos is the end of the last value."""
    cdef size_t pos = ppos[0], start = pos
    cdef uint64_t remaining = premaining[0], n
    cdef uint8_t b
    cdef int rc = DEC_OK
    while remaining:
        start = pos
        remaining -= 1
        rc = need(pos, 1, end, limit - remaining)
        if rc:
            break
        b = buf[pos]
        if b <= 0x7f or b >= 0xe0 or b == 0xc0 or b == 0xc2 or b == 0xc3:
            pos += 1
        elif b <= 0x9f:                     # fixmap, fixarray
            n = 2 * <uint64_t>(b & 0x0f) if b <= 0x8f else b & 0x0f
            pos += 1
            if pos + remaining + n > limit:
                rc = DEC_TOO_LARGE
                break
            remaining += n
        elif b <= 0xbf:
            n = 1 + (b & 0x1f)
            rc = need(pos, n, end, limit - remaining)
            if rc:
                break
            pos += n
        elif b == 0xc1:
            rc = DEC_CORRUPT
            break
        elif b == 0xc4 or b == 0xd9:        # bin8, str8
            rc = need(pos, 2, end, limit - remaining)
            if rc:
                break
            n = 2 + buf[pos + 1]
            rc = need(pos, n, end, limit - remaining)
            if rc:
                break
            pos += n
        elif b == 0xc5 or b == 0xda:        # bin16, str16
            rc = need(pos, 3, end, limit - remaining)
            if rc:
                break
            n = 3 + be16(buf + pos + 1)
            rc = need(pos, n, end, limit - remaining)
            if rc:
                break
            pos += n
        elif b == 0xc6 or b == 0xdb:        # bin32, str32
            rc = need(pos, 5, end, limit - remaining)
            if rc:
                break
            n = 5 + be32(buf + pos + 1)
            rc = need(pos, n, end, limit - remaining)
            if rc:
                break
            pos += n
        elif b == 0xc7:                     # ext8
            rc = need(pos, 2, end, limit - remaining)
            if rc:
                break
            n = 3 + buf[pos + 1]
            rc = need(pos, n, end, limit - remaining)
            if rc:
                break
            pos += n
        elif b == 0xc8:                     # ext16
            rc = need(pos, 3, end, limit - remaining)
            if rc:
                break
            n = 4 + be16(buf + pos + 1)
            rc = need(pos, n, end, limit - remaining)
            if rc:
                break
            pos += n
        elif b == 0xc9:                     # ext32
            rc = need(pos, 5, end, limit - remaining)
            if rc:
                break
            n = 6 + be32(buf + pos + 1)
            rc = need(pos, n, end, limit - remaining)
            if rc:
                break
            pos += n
        elif b == 0xdc or b == 0xde:        # array16, map16
            rc = need(pos, 3, end, limit - remaining)
            if rc:
                break
            n = be16(buf + pos + 1) * (1 if b == 0xdc else 2)
            pos += 3
            # every element takes at least a byte: a count that cannot fit is too large now
            if pos + remaining + n > limit:
                rc = DEC_TOO_LARGE
                break
            remaining += n
        elif b == 0xdd or b == 0xdf:        # array32, map32
            rc = need(pos, 5, end, limit - remaining)
            if rc:
                break
            n = be32(buf + pos + 1) * (1 if b == 0xdd else 2)
            pos += 5
            if pos + remaining + n > limit:
                rc = DEC_TOO_LARGE
                break
            remaining += n
        else:
            # fixed-size scalars: float32/64, (u)int8..64, fixext1..16
            if b == 0xca:
                n = 5
            elif b == 0xcb:
                n = 9
            elif b == 0xcc or b == 0xd0:
                n = 2
            elif b == 0xcd or b == 0xd1:
                n = 3
            elif b == 0xce or b == 0xd2:
                n = 5
            elif b == 0xcf or b == 0xd3:
                n = 9
            elif b == 0xd4:
                n = 3
            elif b == 0xd5:
                n = 4
            elif b == 0xd6:
                n = 6
            elif b == 0xd7:
                n = 10
            else:                           # 0xd8 fixext16
                n = 18
            rc = need(pos, n, end, limit - remaining)
            if rc:
                break
            pos += n
    if rc == DEC_OK:
        ppos[0] = pos
        premaining[0] = 0
    elif rc == DEC_NEED_MORE:
        ppos[0] = start
        premaining[0] = remaining + 1
    return rc


cdef inline int skip_values(const uint8_t* buf, size_t* ppos, size_t end, size_t limit,
                            uint64_t count) noexcept nogil:
    """Skip `count` complete values (scan_values, not resumed)."""
    # through a copy: a caller's cursor whose address never reaches a function that is not
    # inlined stays in a register, where every field's read would otherwise store it and
    # load it back (decode_one's cursor went through the stack once per field)
    cdef size_t pos = ppos[0]
    cdef int rc = scan_values(buf, &pos, end, limit, &count)
    ppos[0] = pos
    return rc


cdef inline int read_str_header(const uint8_t* buf, size_t* ppos, size_t end, size_t limit,
                         uint32_t* length) noexcept nogil:
    """At a str value: consume its header, give its length, leave the cursor on its bytes and
    check that they are all there. Returns DEC_BAD (cursor untouched) if it is not a str."""
    cdef size_t pos = ppos[0]
    cdef uint8_t b = buf[pos]
    cdef size_t h
    cdef uint64_t n
    cdef int rc
    if 0xa0 <= b <= 0xbf:
        h = 1
        n = b & 0x1f
    elif b == 0xd9:
        h = 2
        rc = need(pos, 2, end, limit)
        if rc:
            return rc
        n = buf[pos + 1]
    elif b == 0xda:
        h = 3
        rc = need(pos, 3, end, limit)
        if rc:
            return rc
        n = be16(buf + pos + 1)
    elif b == 0xdb:
        h = 5
        rc = need(pos, 5, end, limit)
        if rc:
            return rc
        n = be32(buf + pos + 1)
    else:
        return DEC_BAD
    rc = need(pos, h + n, end, limit)
    if rc:
        return rc
    ppos[0] = pos + h
    length[0] = <uint32_t>n
    return DEC_OK


cdef inline int read_field(const uint8_t* buf, size_t* ppos, size_t end, size_t limit,
                    FieldC* f) noexcept nogil:
    """Read one known field's value: an integer, nil or str is classified; anything else is
    skipped whole and classified F_OTHER."""
    cdef size_t pos = ppos[0]
    cdef uint8_t b
    cdef int rc
    cdef uint32_t slen
    cdef int64_t sv
    cdef size_t n
    rc = need(pos, 1, end, limit)
    if rc:
        return rc
    b = buf[pos]
    if b <= 0x7f:
        f.kind = F_UINT
        f.u = b
        ppos[0] = pos + 1
        return DEC_OK
    if b >= 0xe0:
        f.kind = F_NEG
        ppos[0] = pos + 1
        return DEC_OK
    if b == 0xc0:
        f.kind = F_NIL
        ppos[0] = pos + 1
        return DEC_OK
    if b == 0xcc or b == 0xcd or b == 0xce or b == 0xcf:
        n = 2 if b == 0xcc else 3 if b == 0xcd else 5 if b == 0xce else 9
        rc = need(pos, n, end, limit)
        if rc:
            return rc
        f.kind = F_UINT
        if b == 0xcc:
            f.u = buf[pos + 1]
        elif b == 0xcd:
            f.u = be16(buf + pos + 1)
        elif b == 0xce:
            f.u = be32(buf + pos + 1)
        else:
            f.u = be64(buf + pos + 1)
        ppos[0] = pos + n
        return DEC_OK
    if b == 0xd0 or b == 0xd1 or b == 0xd2 or b == 0xd3:
        n = 2 if b == 0xd0 else 3 if b == 0xd1 else 5 if b == 0xd2 else 9
        rc = need(pos, n, end, limit)
        if rc:
            return rc
        if b == 0xd0:
            sv = <int8_t>buf[pos + 1]
        elif b == 0xd1:
            sv = <int16_t>be16(buf + pos + 1)
        elif b == 0xd2:
            sv = <int32_t>be32(buf + pos + 1)
        else:
            sv = <int64_t>be64(buf + pos + 1)
        if sv < 0:
            f.kind = F_NEG
        else:
            f.kind = F_UINT
            f.u = <uint64_t>sv
        ppos[0] = pos + n
        return DEC_OK
    rc = read_str_header(buf, &pos, end, limit, &slen)
    if rc == DEC_OK:
        f.kind = F_STR
        f.str_pos = pos
        f.str_len = slen
        ppos[0] = pos + slen
        return DEC_OK
    if rc != DEC_BAD:
        return rc
    f.kind = F_OTHER
    return skip_values(buf, ppos, end, limit, 1)


cdef inline int parse_digits(const uint8_t* p, uint32_t n, uint64_t* out) noexcept nogil:
    """A digit-string MSISDN: 1..15 ASCII digits, not starting with '0'."""
    cdef uint64_t v = 0
    cdef uint32_t i
    if n == 0 or n > 15 or p[0] == 0x30:
        return 0
    for i in range(n):
        if p[i] < 0x30 or p[i] > 0x39:
            return 0
        v = v * 10 + (p[i] - 0x30)
    out[0] = v
    return 1


ctypedef struct TypeNamesC:
    int nr
    int32_t codes[MAX_TYPE_NAMES]
    uint32_t lens[MAX_TYPE_NAMES]
    uint8_t names[MAX_TYPE_NAMES][MAX_TYPE_NAME_LEN]
    uint64_t valid_codes        # bit per configured code (codes are < 64)


cdef inline int validate(const uint8_t* buf, FieldC* f, TypeNamesC* types, EventC* ev,
                         int* field) noexcept nogil:
    """Fields in order ts, type, msisdn, peer, cell, dur, flags, arg; the first failure names
    the reason, and *field the field (0..7). Returns -1 for a good event."""
    cdef int i, k
    cdef uint64_t v
    # ts
    field[0] = 0
    if f[0].kind <= F_NIL:
        return R_MISSING_FIELD
    if f[0].kind != F_UINT and f[0].kind != F_NEG:
        return R_WRONG_TYPE
    if f[0].kind == F_NEG or f[0].u >= TS_LIMIT:
        return R_OUT_OF_RANGE
    ev.ts = <int64_t>f[0].u
    # type
    field[0] = 1
    if f[1].kind <= F_NIL:
        return R_MISSING_FIELD
    if f[1].kind == F_OTHER:
        return R_WRONG_TYPE
    if f[1].kind == F_NEG:
        return R_OUT_OF_RANGE
    if f[1].kind == F_UINT:
        if f[1].u >= 64 or not (types.valid_codes >> f[1].u) & 1:
            return R_UNKNOWN_TYPE
        ev.type = <int32_t>f[1].u
    else:
        k = -1
        for i in range(types.nr):
            if types.lens[i] == f[1].str_len and memcmp(types.names[i], buf + f[1].str_pos, f[1].str_len) == 0:
                k = i
                break
        if k < 0:
            return R_UNKNOWN_TYPE
        ev.type = types.codes[k]
    # msisdn
    field[0] = 2
    if f[2].kind <= F_NIL:
        return R_MISSING_FIELD
    if f[2].kind == F_OTHER:
        return R_WRONG_TYPE
    if f[2].kind == F_NEG:
        return R_OUT_OF_RANGE
    if f[2].kind == F_UINT:
        if f[2].u == 0 or f[2].u >= MSISDN_LIMIT:
            return R_OUT_OF_RANGE
        ev.msisdn = f[2].u
    elif not parse_digits(buf + f[2].str_pos, f[2].str_len, &ev.msisdn):
        return R_BAD_NUMBER
    # peer
    field[0] = 3
    ev.peer = 0
    if f[3].kind == F_OTHER:
        return R_WRONG_TYPE
    if f[3].kind == F_NEG:
        return R_OUT_OF_RANGE
    if f[3].kind == F_UINT:
        if f[3].u >= MSISDN_LIMIT:
            return R_OUT_OF_RANGE
        ev.peer = f[3].u
    elif f[3].kind == F_STR and not parse_digits(buf + f[3].str_pos, f[3].str_len, &ev.peer):
        return R_BAD_NUMBER
    # cell, dur, flags, arg: optional unsigned integers
    for i in range(4, 8):
        field[0] = i
        if f[i].kind == F_OTHER or f[i].kind == F_STR:
            return R_WRONG_TYPE
        if f[i].kind == F_NEG:
            return R_OUT_OF_RANGE
        if f[i].kind == F_UINT and i == 4 and f[i].u > 0xFFFFFFFFu:
            return R_OUT_OF_RANGE
    ev.cell = <uint32_t>f[4].u if f[4].kind == F_UINT else 0
    ev.dur = f[5].u if f[5].kind == F_UINT else 0
    ev.flags = f[6].u if f[6].kind == F_UINT else 0
    ev.arg = f[7].u if f[7].kind == F_UINT else 0
    return -1


cdef inline int known_key_c(const uint8_t* p, uint32_t n) noexcept nogil:
    # Keys are at most 6 bytes: dispatch on length, then compare.
    if n == 2:
        if p[0] == b't' and p[1] == b's':
            return 0
    elif n == 3:
        if memcmp(p, b"arg", 3) == 0:
            return 7
        if memcmp(p, b"dur", 3) == 0:
            return 5
    elif n == 4:
        if memcmp(p, b"type", 4) == 0:
            return 1
        if memcmp(p, b"peer", 4) == 0:
            return 3
        if memcmp(p, b"cell", 4) == 0:
            return 4
    elif n == 5:
        if memcmp(p, b"flags", 5) == 0:
            return 6
    elif n == 6:
        if memcmp(p, b"msisdn", 6) == 0:
            return 2
    return -1


cdef inline bint decode_fast(const uint8_t* buf, size_t start, size_t end, size_t max_bytes,
                             TypeNamesC* types, EventC* ev, size_t* pend) noexcept nogil:
    """The probes' own shape, nearly every event: an array of the 8 fields, each an unsigned
    integer within its range. Then the event is good, and decode_one's checks would all pass:
    8 integers take at most 1 + 8 * 9 = 73 bytes, so with 73 bytes in the buffer and within
    max_bytes no bound can be crossed. Anything else (a map, a str, a nil, a value out of
    range, a short buffer) returns 0 and takes the general path, which alone names what is
    wrong, so the outcome is the general path's in every case. Skipping the field table and
    the per-field bounds checks takes about a third off the decoder (bench/RESULTS.md)."""
    cdef size_t pos = start + 1
    cdef uint64_t v[8]
    cdef uint64_t ts, type, msisdn, peer, cell
    cdef uint8_t b
    cdef int i
    if buf[start] != 0x98 or start + 73 > end or 73 > max_bytes:
        return 0
    # unchecked reads: 73 bytes are there
    for i in range(8):
        b = buf[pos]
        if b <= 0x7f:
            v[i] = b
            pos += 1
        elif b == 0xcf:
            v[i] = be64(buf + pos + 1)
            pos += 9
        elif b == 0xce:
            v[i] = be32(buf + pos + 1)
            pos += 5
        elif b == 0xcd:
            v[i] = be16(buf + pos + 1)
            pos += 3
        elif b == 0xcc:
            v[i] = buf[pos + 1]
            pos += 2
        else:
            return 0
    ts, type, msisdn, peer, cell = v[0], v[1], v[2], v[3], v[4]
    if ts >= TS_LIMIT or type >= 64 or not (types.valid_codes >> type) & 1:
        return 0
    if msisdn == 0 or msisdn >= MSISDN_LIMIT or peer >= MSISDN_LIMIT or cell > 0xFFFFFFFFu:
        return 0
    ev.ts = <int64_t>ts
    ev.type = <int32_t>type
    ev.msisdn = msisdn
    ev.peer = peer
    ev.cell = <uint32_t>cell
    ev.dur = v[5]
    ev.flags = v[6]
    ev.arg = v[7]
    pend[0] = pos
    return 1


cdef int decode_one(const uint8_t* buf, size_t start, size_t end, size_t max_bytes,
                    TypeNamesC* types, EventC* ev, size_t* pend, int* reason, int* field) noexcept nogil:
    """Decode the value at buf[start:]; on DEC_OK / DEC_BAD *pend is the end of the value, and
    on DEC_BAD *reason and *field say what is wrong (field NR_FIELDS: the value as a whole)."""
    cdef size_t pos = start, limit = start + max_bytes
    cdef uint8_t b
    cdef uint64_t n, i, nf, after
    cdef int rc, k, dup = -1
    cdef uint32_t klen
    cdef FieldC f[8]
    cdef FieldC scratch
    if decode_fast(buf, start, end, max_bytes, types, ev, pend):
        return DEC_OK
    for k in range(NR_FIELDS):
        f[k].kind = F_MISSING
        f[k].u = 0
    rc = need(pos, 1, end, limit)
    if rc:
        return rc
    b = buf[pos]
    if 0x90 <= b <= 0x9f or b == 0xdc or b == 0xdd:
        if b <= 0x9f:
            n = b & 0x0f
            pos += 1
        elif b == 0xdc:
            rc = need(pos, 3, end, limit)
            if rc:
                return rc
            n = be16(buf + pos + 1)
            pos += 3
        else:
            rc = need(pos, 5, end, limit)
            if rc:
                return rc
            n = be32(buf + pos + 1)
            pos += 5
        if pos + n > limit:
            return DEC_TOO_LARGE
        nf = n if n < NR_FIELDS else NR_FIELDS
        for i in range(nf):
            rc = read_field(buf, &pos, end, limit - (n - i - 1), &f[i])
            if rc:
                return rc
        if n > nf:
            rc = skip_values(buf, &pos, end, limit, n - nf)
            if rc:
                return rc
    elif 0x80 <= b <= 0x8f or b == 0xde or b == 0xdf:
        if b <= 0x8f:
            n = b & 0x0f
            pos += 1
        elif b == 0xde:
            rc = need(pos, 3, end, limit)
            if rc:
                return rc
            n = be16(buf + pos + 1)
            pos += 3
        else:
            rc = need(pos, 5, end, limit)
            if rc:
                return rc
            n = be32(buf + pos + 1)
            pos += 5
        if pos + 2 * n > limit:
            return DEC_TOO_LARGE
        for i in range(n):
            # room for the values after this key: its own value and the later pairs
            after = 2 * (n - i - 1)
            rc = need(pos, 1, end, limit - after - 1)
            if rc:
                return rc
            rc = read_str_header(buf, &pos, end, limit - after - 1, &klen)
            if rc == DEC_BAD:
                # not a str key: an unknown key, skipped with its value
                rc = skip_values(buf, &pos, end, limit - after, 2)
                if rc:
                    return rc
                continue
            if rc:
                return rc
            k = known_key_c(buf + pos, klen)
            pos += klen
            if k < 0:
                rc = skip_values(buf, &pos, end, limit - after, 1)
            elif f[k].kind != F_MISSING:
                if dup < 0:
                    dup = k         # the first key given twice names the field
                rc = read_field(buf, &pos, end, limit - after, &scratch)
            else:
                rc = read_field(buf, &pos, end, limit - after, &f[k])
            if rc:
                return rc
    else:
        rc = skip_values(buf, &pos, end, limit, 1)
        if rc:
            return rc
        pend[0] = pos
        reason[0] = R_NOT_AN_EVENT
        field[0] = NR_FIELDS
        return DEC_BAD
    pend[0] = pos
    if dup >= 0:
        reason[0] = R_DUPLICATE_KEY
        field[0] = dup
        return DEC_BAD
    k = validate(buf, f, types, ev, field)
    if k >= 0:
        reason[0] = k
        return DEC_BAD
    return DEC_OK
