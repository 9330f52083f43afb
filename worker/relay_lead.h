/*
 * Who publishes the outbox: the part of the relay's loop both delivery
 * modes share.  It connects to PostgreSQL (backing off while it cannot),
 * takes the relay's advisory lock or waits while another replica holds
 * it, keeps the readiness gauge and runs the outbox maintenance (gauges,
 * purge) every few seconds while leading.  What a leader then publishes,
 * and how, is the caller's (relay.c, relay_txn.c).
 */
#ifndef MW_RELAY_LEAD_H
#define MW_RELAY_LEAD_H

#include "config.h"
#include "error.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct store;

struct relay_lead {
    const struct mw_config *cfg;
    const char *conninfo; /* the caller's; outlives the lead */
    atomic_int *draining; /* publish what is committed, then stop */
    atomic_int *stop_now; /* stop at once */
    struct store *store;  /* NULL while not connected */
    bool is_leader;
    int64_t backoff_ms;
    int64_t next_maintenance_ms;
};

enum relay_lead_state {
    RELAY_LEAD_HELD,   /* leading, as in the step before */
    RELAY_LEAD_TAKEN,  /* leading since this step: start over */
    RELAY_LEAD_WAITED, /* not leading; waited a while, step again */
    RELAY_LEAD_STOP    /* draining while not leading: nothing to publish */
};

/* Sets lead up, not connected.  Can't fail. */
void relay_lead_init(struct relay_lead *lead, const struct mw_config *cfg,
                     const char *conninfo, atomic_int *draining,
                     atomic_int *stop_now);

/*
 * One step at the top of the publishing loop: connects and takes the
 * lock if need be, and runs the maintenance when due.  While leading,
 * lead->store is the connection holding the lock.  Errors are logged
 * and lead to RELAY_LEAD_WAITED.  Can't fail.
 */
enum relay_lead_state relay_lead_step(struct relay_lead *lead);

/*
 * After a database error: logs err, closes the connection (which lets
 * go of the lock) and marks the database not ready.  Can't fail.
 */
void relay_lead_lost(struct relay_lead *lead, const struct mw_error *err);

/* Lets go of the lock and closes the connection.  Can't fail. */
void relay_lead_release(struct relay_lead *lead);

#endif
