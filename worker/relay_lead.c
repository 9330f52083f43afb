/*
 * Connecting and leading for the relay, in both delivery modes.  One
 * replica's relay leads: the one whose connection holds the relay's
 * session advisory lock (store_relay_lead).  A crash closes the
 * connection and frees the lock, so a follower, asking again every
 * second, takes over within about a second.
 *
 * Invariant: lead->is_leader is true only while lead->store is the
 * connection that took the lock; any database error closes it and
 * clears both.
 */
#include "relay_lead.h"

#include "log.h"
#include "metrics.h"
#include "mw.h"
#include "store.h"

#define FIRST_BACKOFF_MS 100
#define MAX_BACKOFF_MS 5000
#define FOLLOWER_WAIT_MS 1000
#define MAINTENANCE_EVERY_MS 5000

void relay_lead_init(struct relay_lead *lead, const struct mw_config *cfg,
                     const char *conninfo, atomic_int *draining,
                     atomic_int *stop_now)
{
    *lead = (struct relay_lead){.cfg = cfg,
                                .conninfo = conninfo,
                                .draining = draining,
                                .stop_now = stop_now,
                                .backoff_ms = FIRST_BACKOFF_MS};
}

/*
 * Updates the outbox gauges and purges published rows past the
 * retention.  Logs errors.
 */
static void maintain(const struct mw_config *cfg, struct store *store)
{
    struct mw_error err;
    int64_t count, age;

    if (store_outbox_backlog(store, &count, &age, &err) == 0) {
        atomic_store(&mw_metrics.outbox_backlog, count);
        atomic_store(&mw_metrics.outbox_oldest_age_ms, age);
    }
    if (store_outbox_purge(store, cfg->outbox_retention_ms, &err) < 0)
        log_warn("relay", "could not purge the outbox",
                 LF_STR("error", err.msg));
}

/* Connects; returns false (the caller backs off) when it could not. */
static bool lead_connect(struct relay_lead *lead)
{
    struct mw_error err;

    lead->store = store_new(lead->conninfo, &err);
    if (lead->store == NULL) {
        atomic_store(&mw_metrics.db_ready, 0);
        log_warn("relay", "could not connect to PostgreSQL",
                 LF_STR("error", err.msg));
        return false;
    }
    lead->backoff_ms = FIRST_BACKOFF_MS;
    lead->is_leader = false;
    return true;
}

enum relay_lead_state relay_lead_step(struct relay_lead *lead)
{
    bool is_taken = false;

    if (lead->store == NULL && !lead_connect(lead)) {
        if (atomic_load(lead->draining))
            return RELAY_LEAD_STOP;
        mw_sleep_ms_unless(lead->backoff_ms, lead->stop_now);
        lead->backoff_ms = lead->backoff_ms * 2 > MAX_BACKOFF_MS
                               ? MAX_BACKOFF_MS
                               : lead->backoff_ms * 2;
        return RELAY_LEAD_WAITED;
    }
    if (!lead->is_leader) {
        struct mw_error err;

        if (store_relay_lead(lead->store, &lead->is_leader, &err) < 0) {
            relay_lead_lost(lead, &err);
            return RELAY_LEAD_WAITED;
        }
        atomic_store(&mw_metrics.db_ready, 1);
        if (!lead->is_leader) {
            if (atomic_load(lead->draining))
                return RELAY_LEAD_STOP;
            mw_sleep_ms_unless(FOLLOWER_WAIT_MS, lead->stop_now);
            return RELAY_LEAD_WAITED;
        }
        is_taken = true;
    }
    if (mw_monotonic_ms() >= lead->next_maintenance_ms) {
        maintain(lead->cfg, lead->store);
        lead->next_maintenance_ms = mw_monotonic_ms() + MAINTENANCE_EVERY_MS;
    }
    return is_taken ? RELAY_LEAD_TAKEN : RELAY_LEAD_HELD;
}

void relay_lead_lost(struct relay_lead *lead, const struct mw_error *err)
{
    atomic_store(&mw_metrics.db_ready, 0);
    log_warn("relay", "database error; reconnecting", LF_STR("error", err->msg),
             LF_STR("detail", err->detail));
    relay_lead_release(lead);
}

void relay_lead_release(struct relay_lead *lead)
{
    store_destroy(lead->store);
    lead->store = NULL;
    lead->is_leader = false;
}
