/*
 * The events the worker publishes on customer.events, as outbox rows: the
 * outcome of a request (CustomerCreated, CustomerRejected, CustomerUpdated
 * and a trial bought early's TrialConverted) and of a fired
 * timer (TrialEnding, TrialConverted, CustomerTerminated), encoded, keyed
 * and labelled one way whoever writes them.  Each function encodes one
 * event with codec into memory from arena, which the caller resets after
 * the transaction, and returns 0, or -1 with err.
 */
#ifndef MW_EVENTS_H
#define MW_EVENTS_H

#include "arena.h"
#include "codec.h"
#include "error.h"
#include "mw.h"
#include "store.h"

#include <stdint.h>

/*
 * Encodes rec and fills row with it, keyed by key, with the headers of
 * SPEC §3: event_type, event_id, request_id and traceparent when not NULL.
 */
int events_row(struct codec *codec, struct mw_arena *arena,
               const struct mw_record *rec, const char *event_id,
               const char *key, const char *request_id, const char *traceparent,
               struct store_outbox_row *row, struct mw_error *err) MW_MUSTCHECK;

/* The CustomerCreated of a request item the claim made STORE_CREATED. */
int events_created_row(struct codec *codec, struct mw_arena *arena,
                       const struct store_item *item,
                       struct store_outbox_row *row,
                       struct mw_error *err) MW_MUSTCHECK;

/*
 * The CustomerRejected of a request or termination item, with the errors
 * of rej, keyed by its request id.  A STORE_CONFLICT item's event id
 * follows from its request id and payload hash, so that a conflict is told
 * once per distinct content; any other's from its request id.
 */
int events_rejected_row(struct codec *codec, struct mw_arena *arena,
                        const struct store_item *item,
                        const struct mw_rejection *rej,
                        struct store_outbox_row *row,
                        struct mw_error *err) MW_MUSTCHECK;

/*
 * The CustomerUpdated of an update item the claim made STORE_UPDATED:
 * its change list and the resulting state, keyed by the customer.
 */
int events_updated_row(struct codec *codec, struct mw_arena *arena,
                       const struct store_item *item,
                       struct store_outbox_row *row,
                       struct mw_error *err) MW_MUSTCHECK;

/*
 * The TrialConverted of a trial an update bought early (item->is_bought):
 * billing starts at the update, and the event id is the one the
 * automatic conversion would have had.
 */
int events_bought_row(struct codec *codec, struct mw_arena *arena,
                      const struct store_item *item,
                      struct store_outbox_row *row,
                      struct mw_error *err) MW_MUSTCHECK;

/*
 * The event of a timer store_timers_claim returned FIRED, keyed by its
 * customer, noticed at now_ms.  request_id is the request the event
 * follows from (the termination, or the request that created the
 * customer), traceparent that request's.
 */
int events_timer_row(struct codec *codec, struct mw_arena *arena,
                     const struct store_timer *timer, int64_t now_ms,
                     struct store_outbox_row *row,
                     struct mw_error *err) MW_MUSTCHECK;

#endif
