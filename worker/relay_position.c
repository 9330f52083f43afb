/*
 * The exactly-once relay's recorded position: the id below which every
 * outbox row was published, and the holes under it.
 *
 * Why holes: outbox ids are taken at insert and rows become visible at
 * commit, so a round may publish id 100 while the batch holding id 99 is
 * still committing.  A bare high-water mark would then take 99 for
 * published.  The relay records every id it passed without seeing as a
 * hole; a later round that sees the row publishes it and fills the hole.
 * The position covers exactly the rows published, so a new leader marks
 * those and publishes the others, and a mark lost to a database crash
 * cannot publish a row twice either.
 *
 * Known limits: a hole that never fills (a batch rolled back after taking
 * its ids) stays RELAY_POSITION_HOLE_KEEP_S; Kafka keeps at most 4096
 * bytes of text with an offset, so when more holes are open than fit in
 * RELAY_POSITION_TEXT_MAX the oldest are forgotten first.  A row arriving
 * in a forgotten hole would be taken for published: that needs a batch
 * transaction open for an hour, or about a hundred open at once.
 */
#include "relay_position.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char text_tag[] = "mw1";

void relay_position_init(struct relay_position *pos)
{
    memset(pos, 0, sizeof(*pos));
    pos->next = 1;
}

void relay_position_free(struct relay_position *pos)
{
    free(pos->holes);
    relay_position_init(pos);
}

/* Makes room for one more hole.  Returns 0, or -1 out of memory. */
static int reserve(struct relay_position *pos)
{
    struct relay_hole *holes;
    size_t cap;

    if (pos->count < pos->cap)
        return 0;
    cap = pos->cap > 0 ? pos->cap * 2 : 16;
    holes = realloc(pos->holes, cap * sizeof(*holes));
    if (holes == NULL)
        return -1;
    pos->holes = holes;
    pos->cap = cap;
    return 0;
}

int relay_position_copy(struct relay_position *dst,
                        const struct relay_position *src)
{
    relay_position_free(dst);
    dst->next = src->next;
    if (src->count == 0)
        return 0;
    dst->holes = malloc(src->count * sizeof(*dst->holes));
    if (dst->holes == NULL)
        return -1;
    memcpy(dst->holes, src->holes, src->count * sizeof(*dst->holes));
    dst->count = dst->cap = src->count;
    return 0;
}

int relay_position_parse(struct relay_position *pos, int64_t offset,
                         const char *text, struct mw_error *err)
{
    const char *p;

    relay_position_free(pos);
    pos->next = offset > 1 ? offset : 1;
    if (text == NULL || text[0] == '\0')
        return 0;
    if (strncmp(text, text_tag, sizeof(text_tag) - 1) != 0)
        goto bad;
    p = text + sizeof(text_tag) - 1;
    while (*p == ';') {
        struct relay_hole h;
        int used = 0;

        if (sscanf(p, ";%" SCNd64 "-%" SCNd64 "@%" SCNd64 "%n", &h.lo, &h.hi,
                   &h.since_s, &used) != 3 ||
            used == 0 || h.lo < 1 || h.hi < h.lo || h.hi >= pos->next ||
            (pos->count > 0 && h.lo <= pos->holes[pos->count - 1].hi))
            goto bad;
        if (reserve(pos) < 0) {
            mw_error_no_memory(err);
            return -1;
        }
        pos->holes[pos->count++] = h;
        p += used;
    }
    if (*p == '\0')
        return 0;
bad:
    mw_error_set(err, MW_ERR_KAFKA, false,
                 "the relay's recorded position is not one this worker wrote");
    mw_error_detail(err, "offset %" PRId64 ", metadata \"%.200s\"", offset,
                    text);
    mw_error_hint(err, "Another client commits offsets for the relay's "
                       "group: give MESH_WORKER_GROUP_ID a name of its own.");
    relay_position_free(pos);
    return -1;
}

/* Index of the hole holding id, or pos->count. */
static size_t find_hole(const struct relay_position *pos, int64_t id)
{
    size_t lo = 0, hi = pos->count;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (pos->holes[mid].hi < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < pos->count && pos->holes[lo].lo <= id)
        return lo;
    return pos->count;
}

bool relay_position_covers(const struct relay_position *pos, int64_t id)
{
    return id < pos->next && find_hole(pos, id) == pos->count;
}

/* Takes id out of its hole.  Returns 0, or -1 out of memory. */
static int fill(struct relay_position *pos, int64_t id)
{
    size_t i = find_hole(pos, id);
    struct relay_hole *h;

    if (i == pos->count)
        return 0;
    h = &pos->holes[i];
    if (h->lo == h->hi) {
        memmove(h, h + 1, (pos->count - i - 1) * sizeof(*h));
        pos->count--;
    } else if (id == h->lo) {
        h->lo++;
    } else if (id == h->hi) {
        h->hi--;
    } else {
        if (reserve(pos) < 0)
            return -1;
        h = &pos->holes[i];
        memmove(h + 1, h, (pos->count - i) * sizeof(*h));
        pos->count++;
        h[0].hi = id - 1;
        h[1].lo = id + 1;
    }
    return 0;
}

int relay_position_advance(struct relay_position *pos, const int64_t *ids,
                           size_t count, int64_t now_s)
{
    for (size_t i = 0; i < count; i++) {
        int64_t id = ids[i];

        if (id < pos->next) {
            if (fill(pos, id) < 0)
                return -1;
            continue;
        }
        if (id > pos->next) {
            if (reserve(pos) < 0)
                return -1;
            pos->holes[pos->count++] =
                (struct relay_hole){pos->next, id - 1, now_s};
        }
        pos->next = id + 1;
    }
    return 0;
}

/* Writes the holes into out; returns the length it needed. */
static size_t write_text(const struct relay_position *pos, char *out,
                         size_t len)
{
    size_t used = (size_t)snprintf(out, len, "%s", text_tag);

    for (size_t i = 0; i < pos->count; i++) {
        const struct relay_hole *h = &pos->holes[i];

        used += (size_t)snprintf(
            out + (used < len ? used : len), used < len ? len - used : 0,
            ";%" PRId64 "-%" PRId64 "@%" PRId64, h->lo, h->hi, h->since_s);
    }
    return used;
}

static void forget(struct relay_position *pos, size_t i)
{
    memmove(&pos->holes[i], &pos->holes[i + 1],
            (pos->count - i - 1) * sizeof(*pos->holes));
    pos->count--;
}

size_t relay_position_format(struct relay_position *pos, int64_t now_s,
                             char *out, size_t len)
{
    size_t forgotten = 0;

    for (size_t i = 0; i < pos->count;) {
        if (pos->holes[i].since_s < now_s - RELAY_POSITION_HOLE_KEEP_S) {
            forget(pos, i);
            forgotten++;
        } else {
            i++;
        }
    }
    while (write_text(pos, out, len) > RELAY_POSITION_TEXT_MAX) {
        size_t oldest = 0;

        for (size_t i = 1; i < pos->count; i++) {
            if (pos->holes[i].since_s < pos->holes[oldest].since_s)
                oldest = i;
        }
        forget(pos, oldest);
        forgotten++;
    }
    return forgotten;
}
