/*
 * A second database session for the consumer, on a thread of its own:
 * it claims and commits one half of a split batch (split.h) while the
 * consumer's own session does the other.  One job at a time: start it,
 * then wait for it; between jobs the caller may roll the session back.
 */
#ifndef MW_OFFLOAD_H
#define MW_OFFLOAD_H

#include "error.h"
#include "mw.h"
#include "store.h"

#include <stddef.h>

struct offload;

/*
 * Starts the thread; it connects to conninfo at its first job (and again
 * after a lost connection).  NULL with err when memory or threads ran out.
 */
struct offload *offload_new(const char *conninfo,
                            struct mw_error *err) MW_MUSTCHECK;

/* Stops the thread and closes the session; NULL does nothing. */
void offload_destroy(struct offload *offload);

/*
 * Starts store_batch_claim of items[0..count) on the second session; the
 * items are the caller's again once offload_wait returned.
 */
void offload_claim(struct offload *offload, struct store_item *items,
                   size_t count);

/* Starts store_batch_finish of rows[0..count) on the second session. */
void offload_finish(struct offload *offload,
                    const struct store_outbox_row *rows, size_t count);

/* Waits for the job started last: 0, or -1 with err. */
int offload_wait(struct offload *offload, struct mw_error *err) MW_MUSTCHECK;

/* Rolls back the second session's open batch, if any; between jobs. */
void offload_abort(struct offload *offload);

#endif
