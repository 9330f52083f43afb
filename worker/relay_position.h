/*
 * How far the exactly-once relay has published, as it records it in Kafka
 * with each transaction: every outbox id below `next` was published,
 * except the holes (ids that were not visible when the relay went past
 * them: a batch still committing, or a sequence gap that never fills).
 * Pure: no I/O, so the unit tests cover it whole.
 */
#ifndef MW_RELAY_POSITION_H
#define MW_RELAY_POSITION_H

#include "error.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Holes older than this are taken for sequence gaps and forgotten. */
#define RELAY_POSITION_HOLE_KEEP_S 3600

/* Longest text relay_position_format writes (Kafka keeps 4096 bytes). */
#define RELAY_POSITION_TEXT_MAX 3072

/* Ids lo..hi (inclusive) not published, first seen at since_s. */
struct relay_hole {
    int64_t lo;
    int64_t hi;
    int64_t since_s;
};

struct relay_position {
    int64_t next;             /* every id below is published, but holes */
    struct relay_hole *holes; /* sorted by lo, disjoint */
    size_t count;
    size_t cap;
};

/* An empty position: nothing published.  Can't fail. */
void relay_position_init(struct relay_position *pos);

/* Frees the holes; the position is empty again.  Can't fail. */
void relay_position_free(struct relay_position *pos);

/* Makes dst a copy of src.  Returns 0, or -1 out of memory. */
int relay_position_copy(struct relay_position *dst,
                        const struct relay_position *src);

/*
 * Reads a recorded position: offset is `next`, text the holes as
 * relay_position_format wrote them (NULL or "" for none).  Returns 0, or
 * -1 with err when the text is not ours.
 */
int relay_position_parse(struct relay_position *pos, int64_t offset,
                         const char *text, struct mw_error *err) MW_MUSTCHECK;

/* Whether row id was published already. */
bool relay_position_covers(const struct relay_position *pos, int64_t id);

/*
 * Records that the rows ids (ascending, none covered) are published: ids
 * up to the highest are covered afterwards, except those between `next`
 * and it that are not in ids, which become holes seen at now_s.  Returns
 * 0, or -1 out of memory (pos unchanged then only if count was 0).
 */
int relay_position_advance(struct relay_position *pos, const int64_t *ids,
                           size_t count, int64_t now_s);

/*
 * Forgets holes older than RELAY_POSITION_HOLE_KEEP_S at now_s, then the
 * oldest while the text would exceed RELAY_POSITION_TEXT_MAX, and writes
 * the holes into out (len > RELAY_POSITION_TEXT_MAX).  Returns how many
 * holes it forgot.  Can't fail.
 */
size_t relay_position_format(struct relay_position *pos, int64_t now_s,
                             char *out, size_t len);

#endif
