/*
 * Whether a batch can be claimed on two database sessions at once, and
 * which items go to which.
 *
 * Two sessions claiming at once must never want the same row: a request
 * id, a customer (its id comes from the request id) or a domain.  Items
 * that share any of these are joined (union-find) and a group goes whole
 * to one half, so neither session ever waits for the other and the
 * outbox order of each customer is that of one transaction.  Only
 * creation requests are split (undecodable messages, which claim
 * nothing, go to the first half); a batch holding any other kind of item
 * stays on one session.
 */
#ifndef MW_SPLIT_H
#define MW_SPLIT_H

#include "arena.h"
#include "mw.h"
#include "store.h"

#include <stddef.h>

/* Fewer creations than this are not worth a second session. */
#define SPLIT_MIN_CREATIONS 64

/*
 * Decides the halves of items[0..count), records[i] being item i's
 * decoded message.  Returns 2 with half[i] set to 0 or 1 for every item
 * when the batch holds at least min_creations creation requests, nothing
 * but those and undecodable messages, and groups that fill both halves
 * to at least a quarter each; else 1 (half[] untouched), also when arena
 * memory ran out.
 */
int split_batch(const struct store_item *items, const struct mw_record *records,
                size_t count, size_t min_creations, struct mw_arena *arena,
                unsigned char *half);

#endif
