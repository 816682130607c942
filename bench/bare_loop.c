/* The floor under sigmatch's matcher on this machine: plain C loops over a real trace, run by
   `python -m bench.bare_loop` (which compiles this file). Issue 14 sets its aims against "a
   bare C loop that decodes an event, tests one bit of a 30M-bit set and updates two random
   counters" (67 ns an event where it was measured); this measures that loop here, and the
   loop of sigmatch's own memory layout, so that "how far from the floor" is a ratio of two
   figures from one machine.

   usage: bare_loop TRACE ROW_BYTES ROUNDS
   TRACE holds the probes' shape only (an array of 8 unsigned integers per event, as
   `sigmatch gen` writes it); field 2 is the MSISDN. Prints one JSON object on stdout; on an
   error one line on stderr and exit status 2.

   Loops, each timed ROUNDS times, the fastest kept (ns per event):
     decode   read every event's 8 fields and sum them;
     bare     decode; test the bit of the MSISDN's hash in a 30,000,000-bit set; add one to
              two counters picked by that hash among one per subscriber (the loop);
     layout   decode 4,096 events at a time, then as the core does: the index slot (a 64-bit
              fingerprint and row number, 70% load, linear probing) fetched 16 events ahead,
              the row's lines (ROW_BYTES, with the MSISDN first) and a 2-byte date 8 ahead,
              and at the event the MSISDN checked in the row, a counter of the row and the
              date written. Nothing of matching itself: this is the memory the engine's own
              layout must touch, not what it computes. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define BITS 30000000ULL
#define BATCH 4096
#define FAR 16
#define NEAR 8

static void fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(2);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static inline uint64_t mix64(uint64_t x) {      /* the core's sm_mix64 */
    x ^= x >> 33; x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static inline uint64_t fastrange(uint64_t x, uint64_t n) {
    return (uint64_t)(((unsigned __int128)x * n) >> 64);
}

static inline uint64_t be(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v = v << 8 | p[i];
    return v;
}

/* One event at buf[*pos] into f; 0 when it is not an array of 8 unsigned integers, -1 when
   the trace ends inside one. */
static inline int decode(const uint8_t *buf, size_t end, size_t *pos, uint64_t f[8]) {
    size_t p = *pos;
    if (p + 73 > end) {                 /* the last events: read with bounds */
        if (p >= end) return -1;
        if (buf[p] != 0x98) return 0;
        p++;
        for (int i = 0; i < 8; i++) {
            if (p >= end) return -1;
            uint8_t b = buf[p];
            int n = b <= 0x7f ? 0 : b == 0xcc ? 1 : b == 0xcd ? 2 : b == 0xce ? 4 : b == 0xcf ? 8 : -1;
            if (n < 0) return 0;
            if (p + 1 + n > end) return -1;
            f[i] = n ? be(buf + p + 1, n) : b;
            p += 1 + n;
        }
        *pos = p;
        return 1;
    }
    if (buf[p] != 0x98) return 0;
    p++;
    for (int i = 0; i < 8; i++) {
        uint8_t b = buf[p];
        if (b <= 0x7f) { f[i] = b; p += 1; }
        else if (b == 0xcf) { f[i] = be(buf + p + 1, 8); p += 9; }
        else if (b == 0xce) { f[i] = be(buf + p + 1, 4); p += 5; }
        else if (b == 0xcd) { f[i] = be(buf + p + 1, 2); p += 3; }
        else if (b == 0xcc) { f[i] = buf[p + 1]; p += 2; }
        else return 0;
    }
    *pos = p;
    return 1;
}

static int by_value(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void *big(size_t n, const char *what) {
    void *p = mmap(NULL, n ? n : 1, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) fail("cannot allocate %s: %llu bytes", what, (unsigned long long)n);
#ifdef MADV_HUGEPAGE
    madvise(p, n ? n : 1, MADV_HUGEPAGE);     /* as the core's state arrays */
#endif
    memset(p, 0, n);                          /* touched now, not inside a timed loop */
    return p;
}

typedef struct { uint64_t msisdn; uint32_t sub; } ev_t;

int main(int argc, char **argv) {
    if (argc != 4) fail("usage: %s TRACE ROW_BYTES ROUNDS", argv[0]);
    const char *path = argv[1];
    size_t row = strtoull(argv[2], NULL, 10);
    int rounds = atoi(argv[3]);
    if (row < 8 || row > 4096 || rounds < 1) fail("ROW_BYTES must be 8 to 4096 and ROUNDS at least 1");

    FILE *fp = fopen(path, "rb");
    if (!fp) fail("%s: %s", path, strerror(errno));
    fseek(fp, 0, SEEK_END);
    long size = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    if (size <= 0) fail("%s: an empty trace", path);
    uint8_t *buf = malloc((size_t)size);
    if (!buf || fread(buf, 1, (size_t)size, fp) != (size_t)size) fail("%s: cannot read it (%llu bytes)", path, (unsigned long long)size);
    fclose(fp);

    /* The events' MSISDNs, the subscribers (distinct MSISDNs) and their index. */
    /* an event takes at least 9 bytes: 0x98 and 8 one-byte integers */
    size_t cap_events = (size_t)size / 9 + 1, events = 0, pos = 0;
    uint64_t *msisdn = malloc(cap_events * sizeof(uint64_t)), f[8];
    if (!msisdn) fail("cannot allocate %s: %llu events", "the MSISDNs", (unsigned long long)cap_events);
    while (pos < (size_t)size) {
        int got = decode(buf, (size_t)size, &pos, f);
        if (got < 0)
            fail("%s: the trace ends inside the event at byte %llu", path, (unsigned long long)pos);
        if (got == 0)
            fail("%s: byte %llu is not an array of 8 unsigned integers (this loop reads only the probes' shape)",
                 path, (unsigned long long)pos);
        if (events == cap_events) fail("%s: more events than %llu bytes can hold", path, (unsigned long long)size);
        msisdn[events++] = f[2];
    }
    /* The subscribers: the distinct MSISDNs, counted exactly (sorted), so that every array
       below is sized for all of them whatever their hashes share. */
    uint64_t *sorted = malloc((events ? events : 1) * sizeof(uint64_t));
    if (!sorted) fail("cannot allocate %s: %llu events", "the MSISDNs", (unsigned long long)events);
    memcpy(sorted, msisdn, events * sizeof(uint64_t));
    qsort(sorted, events, sizeof(uint64_t), by_value);
    uint32_t subscribers = 0;
    for (size_t i = 0; i < events; i++)
        if (i == 0 || sorted[i] != sorted[i - 1]) subscribers++;
    free(sorted);
    /* The index at the subscribers' own 70% load, and their rows. */
    uint64_t slots_n = (uint64_t)subscribers * 10 / 7 + 1;
    uint64_t *slots;
    slots = big(slots_n * sizeof(uint64_t), "the index");
    uint8_t *rows = big((size_t)subscribers * row, "the rows");
    uint16_t *dates = big((size_t)subscribers * sizeof(uint16_t), "the dates");
    uint8_t *bits = big(BITS / 8 + 1, "the bit set");
    uint32_t *counters = big((size_t)subscribers * sizeof(uint32_t), "the counters");
    uint32_t next = 0;
    for (size_t i = 0; i < events; i++) {
        uint64_t h = mix64(msisdn[i]), s = fastrange(h, slots_n);
        for (;;) {
            uint64_t v = slots[s];
            if (v == 0) {
                slots[s] = (h >> 32) << 32 | (uint64_t)(next + 1);
                memcpy(rows + (size_t)next * row, &msisdn[i], 8);
                next++;
                break;
            }
            if (v >> 32 == h >> 32 && !memcmp(rows + (size_t)((uint32_t)v - 1) * row, &msisdn[i], 8)) break;
            s = s + 1 == slots_n ? 0 : s + 1;
        }
    }
    subscribers = next;
    for (size_t i = 0; i < events; i += 3) {
        uint64_t b = mix64(msisdn[i] ^ 0x9e3779b97f4a7c15ULL) % BITS;
        bits[b >> 3] |= (uint8_t)(1u << (b & 7));
    }
    free(msisdn);

    double best[3] = {1e99, 1e99, 1e99};
    uint64_t check = 0;
    ev_t *batch = malloc(BATCH * sizeof(ev_t));
    for (int r = 0; r < rounds; r++) {
        /* decode */
        double t = now();
        uint64_t sum = 0;
        for (pos = 0; pos < (size_t)size; ) {
            decode(buf, (size_t)size, &pos, f);
            sum += f[0] + f[1] + f[2] + f[3] + f[4] + f[5] + f[6] + f[7];
        }
        t = now() - t;
        if (t < best[0]) best[0] = t;
        check += sum;

        /* bare: the loop */
        t = now();
        for (pos = 0; pos < (size_t)size; ) {
            decode(buf, (size_t)size, &pos, f);
            uint64_t h = mix64(f[2]);
            uint64_t b = mix64(f[2] ^ 0x9e3779b97f4a7c15ULL) % BITS;
            if (bits[b >> 3] >> (b & 7) & 1) {
                counters[fastrange(h, subscribers)]++;
                counters[fastrange(h << 32 | h >> 32, subscribers)]++;
            }
        }
        t = now() - t;
        if (t < best[1]) best[1] = t;

        /* layout: the core's pipeline over its index, rows and dates */
        t = now();
        uint64_t found = 0;
        for (pos = 0; pos < (size_t)size; ) {
            int nb = 0;
            while (nb < BATCH && pos < (size_t)size) {
                decode(buf, (size_t)size, &pos, f);
                batch[nb].msisdn = f[2];
                batch[nb].sub = 0;
                nb++;
            }
            for (int i = 0; i < nb; i++) {
                int k = i + FAR;
                if (k < nb) __builtin_prefetch(&slots[fastrange(mix64(batch[k].msisdn), slots_n)], 0, 1);
                k = i + NEAR;
                if (k < nb || i == 0) {
                    for (int j = i == 0 ? 0 : k; j <= k && j < nb; j++) {
                        uint64_t h = mix64(batch[j].msisdn), s = fastrange(h, slots_n);
                        uint32_t sub = 0;
                        for (;;) {
                            uint64_t v = slots[s];
                            if (v == 0) break;
                            if (v >> 32 == h >> 32) { sub = (uint32_t)v; break; }
                            s = s + 1 == slots_n ? 0 : s + 1;
                        }
                        batch[j].sub = sub;
                        if (sub) {
                            uint8_t *p = rows + (size_t)(sub - 1) * row;
                            for (size_t off = 0; off < row; off += 64) __builtin_prefetch(p + off, 1, 3);
                            __builtin_prefetch(p + row - 1, 1, 3);
                            __builtin_prefetch(&dates[sub - 1], 1, 3);
                        }
                    }
                }
                uint32_t sub = batch[i].sub;
                if (sub) {
                    uint8_t *p = rows + (size_t)(sub - 1) * row;
                    uint64_t m;
                    memcpy(&m, p, 8);
                    if (m == batch[i].msisdn) {
                        found++;
                        p[row - 1]++;
                        dates[sub - 1] = (uint16_t)batch[i].msisdn;
                    }
                }
            }
        }
        t = now() - t;
        if (t < best[2]) best[2] = t;
        check += found;
    }
    printf("{\"events\": %zu, \"subscribers\": %u, \"row_bytes\": %zu, \"rounds\": %d, "
           "\"ns_per_event\": {\"decode\": %.2f, \"bare\": %.2f, \"layout\": %.2f}, \"check\": %llu}\n",
           events, subscribers, row, rounds, best[0] / events * 1e9, best[1] / events * 1e9,
           best[2] / events * 1e9, (unsigned long long)(check & 0xFFFF));
    return 0;
}
