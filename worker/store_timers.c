/*
 * The lifecycle timers (migrations/0003_lifecycle.sql; since
 * 0007_pending_timers.sql table timers holds the pending ones and
 * timer_history those that fired or were cancelled, and
 * mw_fire_due_timers moves them): the scheduler's claim, which opens a
 * transaction that store_batch_finish ends with the events of the timers
 * that fired, the count and the wait for the next due timer, the
 * cancellation of a customer's pending timers, and the description of a
 * customer, timers included, for operators.  Which timer fires, is
 * cancelled or waits is decided by the database function, not here.
 *
 * Invariant: "now" is always the worker's clock passed as a parameter,
 * never the database's now(), so MESH_WORKER_CLOCK_OFFSET_MS moves time
 * on the same code path.
 */
#include "store_internal.h"

#include "ids.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Notified by the claim functions when they write a timer. */
#define TIMERS_CHANNEL "mw_timers"

static const char *const timer_kind_names[] = {
    "TRIAL_ENDING", "TRIAL_CONVERSION", "TERMINATION"};
static const char *const timer_action_names[] = {"FIRED", "CANCELLED",
                                                 "DEFERRED", "WITHDRAWN"};

/* Copies a text column into arena; NULL for SQL null.  0, or -1 (OOM). */
static int copy_text(struct mw_arena *arena, const PGresult *res, int row,
                     int col, const char **out)
{
    *out = NULL;
    if (PQgetisnull(res, row, col))
        return 0;
    *out = arena_strdup(arena, PQgetvalue(res, row, col));
    return *out != NULL ? 0 : -1;
}

static int64_t get_ms(const PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col)
               ? 0
               : strtoll(PQgetvalue(res, row, col), NULL, 10);
}

/*
 * Reads the rows of mw_fire_due_timers.  Returns 0, 1 when out of memory,
 * or -1 when the rows are not what the function returns.
 */
static int read_timers(const PGresult *res, struct mw_arena *arena,
                       struct store_timer **timers, size_t *count)
{
    int rows = PQntuples(res);
    struct store_timer *out =
        arena_alloc(arena, sizeof(*out) * (size_t)(rows > 0 ? rows : 1));

    if (out == NULL)
        return 1;
    if (PQnfields(res) != 14)
        return -1;
    for (int i = 0; i < rows; i++) {
        struct store_timer *t = &out[i];
        int action =
            mw_enum_lookup(timer_action_names, 4, PQgetvalue(res, i, 1));
        int kind = mw_enum_lookup(timer_kind_names, 3, PQgetvalue(res, i, 2));

        if (action < 0 || kind < 0)
            return -1;
        memset(t, 0, sizeof(*t));
        t->id = strtoll(PQgetvalue(res, i, 0), NULL, 10);
        t->action = (enum store_timer_action)action;
        t->kind = (enum store_timer_kind)kind;
        if (copy_text(arena, res, i, 3, &t->customer_id) != 0 ||
            copy_text(arena, res, i, 4, &t->customer_request_id) != 0 ||
            copy_text(arena, res, i, 5, &t->msp_id) != 0 ||
            copy_text(arena, res, i, 6, &t->requested_by) != 0 ||
            copy_text(arena, res, i, 11, &t->request_id) != 0 ||
            copy_text(arena, res, i, 12, &t->traceparent) != 0)
            return 1;
        if (t->customer_id == NULL || t->msp_id == NULL ||
            t->requested_by == NULL || t->customer_request_id == NULL)
            return -1;
        t->licenses = (int32_t)strtol(PQgetvalue(res, i, 7), NULL, 10);
        t->created_at = get_ms(res, i, 8);
        t->trial_ends_at = get_ms(res, i, 9);
        t->due_at = get_ms(res, i, 10);
        t->was_trial =
            !PQgetisnull(res, i, 13) && PQgetvalue(res, i, 13)[0] == 't';
    }
    *timers = out;
    *count = (size_t)rows;
    return 0;
}

/*
 * One attempt: BEGIN, then the claim.  Sets *is_retry on a deadlock or
 * serialization failure.  On success the transaction stays open.
 */
static int timers_claim_once(struct store *store, const char *const *values,
                             struct mw_arena *arena,
                             struct store_timer **timers, size_t *count,
                             bool *is_retry, struct mw_error *err)
{
    static const char sql_fire[] =
        "SELECT * FROM mw_fire_due_timers($1::bigint, $2::integer)";
    static const char what[] = "could not claim due timers";
    PGresult *res;
    int rc;

    *is_retry = false;
    /* store_batch_finish writes the outbox with a prepared statement. */
    if (store_ensure_connected(store, err) != 0 ||
        store_prepare_statements(store, err) != 0 ||
        store_exec(store, "BEGIN", 0, NULL, what, err) != 0)
        return -1;
    res = PQexecParams(store->conn, sql_fire, 2, NULL, values, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        *is_retry = store_is_serialization_state(
            PQresultErrorField(res, PG_DIAG_SQLSTATE));
        store_set_error(store, err, what, res);
        PQclear(res);
        store_rollback(store);
        return -1;
    }
    rc = read_timers(res, arena, timers, count);
    if (rc != 0) {
        PQclear(res);
        store_rollback(store);
        if (rc > 0) {
            mw_error_set(err, MW_ERR_SYSTEM, true, "%s", what);
            mw_error_detail(err, "out of memory");
        } else {
            mw_error_set(err, MW_ERR_DATABASE, false, "%s", what);
            mw_error_detail(err, "unexpected result of mw_fire_due_timers");
        }
        return -1;
    }
    PQclear(res);
    store->in_batch = true;
    return 0;
}

/*
 * The scheduler's transaction makes atomic: the timers claimed and marked
 * fired or cancelled, the customers' state changes (here) and the events
 * of the fired ones (store_batch_finish).  A crash before the commit
 * leaves every timer pending, to be claimed again by any replica.
 */
int store_timers_claim(struct store *store, int64_t now_ms, size_t max,
                       struct mw_arena *arena, struct store_timer **timers,
                       size_t *count, struct mw_error *err)
{
    char now[24], limit[24];
    const char *values[2] = {now, limit};
    bool is_retry = false;

    *timers = NULL;
    *count = 0;
    if (store->in_batch)
        store_rollback(store);
    snprintf(now, sizeof(now), "%lld", (long long)now_ms);
    snprintf(limit, sizeof(limit), "%zu", max > INT32_MAX ? INT32_MAX : max);
    for (int attempt = 1;; attempt++) {
        if (timers_claim_once(store, values, arena, timers, count, &is_retry,
                              err) == 0)
            return 0;
        if (!store_may_retry(store, attempt, is_retry, "claim", err))
            return -1;
    }
}

int store_timers_pending(struct store *store, int64_t now_ms,
                         int64_t *due_count, int64_t *next_due_ms,
                         struct mw_error *err)
{
    static const char sql_pending[] =
        "SELECT (SELECT count(*) FROM timers "
        "         WHERE due_at <= mw_ms_to_ts($1)), "
        "       (SELECT mw_ts_to_ms(min(due_at)) FROM timers)";
    char now[24];
    const char *values[1] = {now};
    PGresult *res;

    *due_count = 0;
    *next_due_ms = -1;
    if (store_ensure_connected(store, err) != 0)
        return -1;
    snprintf(now, sizeof(now), "%lld", (long long)now_ms);
    res =
        PQexecParams(store->conn, sql_pending, 1, NULL, values, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        store_set_error(store, err, "could not count pending timers", res);
        PQclear(res);
        return -1;
    }
    *due_count = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    if (!PQgetisnull(res, 0, 1))
        *next_due_ms = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
    PQclear(res);
    return 0;
}

int store_timers_wait(struct store *store, int timeout_ms, struct mw_error *err)
{
    static const char sql_listen[] = "LISTEN " TIMERS_CHANNEL;

    return store_wait_notify(store, sql_listen, &store->is_listening_timers,
                             timeout_ms,
                             "could not wait for timer notifications", err);
}

int store_timers_cancel(struct store *store, const char *customer_id,
                        bool is_trial_only, int64_t now_ms, int64_t *cancelled,
                        struct mw_error *err)
{
    static const char sql_cancel[] =
        "SELECT mw_cancel_pending_timers($1::uuid, $2::text[], $3::bigint)";
    static const char trial_kinds[] = "{TRIAL_ENDING,TRIAL_CONVERSION}";
    char now[24];
    const char *values[3] = {customer_id, is_trial_only ? trial_kinds : NULL,
                             now};
    PGresult *res;

    *cancelled = 0;
    if (!ids_is_uuid(customer_id)) {
        mw_error_set(err, MW_ERR_INPUT, false,
                     "could not cancel the customer's timers");
        mw_error_detail(err, "The customer id \"%s\" is not a UUID.",
                        customer_id);
        return -1;
    }
    if (store_ensure_connected(store, err) != 0)
        return -1;
    snprintf(now, sizeof(now), "%lld", (long long)now_ms);
    res = PQexecParams(store->conn, sql_cancel, 3, NULL, values, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        store_set_error(store, err, "could not cancel the customer's timers",
                        res);
        PQclear(res);
        return -1;
    }
    *cancelled = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return 0;
}

/* ---- for operators ---- */

int store_customer_describe(struct store *store, const char *key, char **json,
                            struct mw_error *err)
{
    static const char what[] = "could not read the customer";
    /* $1: a customer id or null; $2: a domain. */
    static const char sql_describe[] =
        "WITH c AS ("
        "  SELECT * FROM ("
        "    SELECT cu.*, 0 AS rank FROM customers cu"
        "     WHERE cu.customer_id = $1::uuid"
        "    UNION ALL"
        "    SELECT cu.*, CASE WHEN d.released_at IS NULL THEN 1 ELSE 2 END"
        "      FROM customer_domains d JOIN customers cu USING (customer_id)"
        "     WHERE d.domain = $2"
        "  ) AS found ORDER BY rank, terminated_at DESC NULLS FIRST LIMIT 1)"
        "SELECT jsonb_pretty(jsonb_build_object("
        "  'customer', (SELECT to_jsonb(c) - 'rank' FROM c),"
        "  'domains', (SELECT coalesce(jsonb_agg(jsonb_build_object("
        "       'domain', d.domain, 'is_primary', d.is_primary,"
        "       'released_at', d.released_at)"
        "       ORDER BY NOT d.is_primary, d.domain), '[]')"
        "     FROM customer_domains d, c WHERE d.customer_id = c.customer_id),"
        "  'termination', (SELECT to_jsonb(t) FROM terminations t, c"
        "     WHERE t.customer_id = c.customer_id"
        "     ORDER BY t.created_at DESC LIMIT 1),"
        "  'pending_timers', (SELECT coalesce(jsonb_agg(jsonb_build_object("
        "       'id', tm.id, 'kind', tm.kind, 'due_at', tm.due_at,"
        "       'request_id', tm.request_id) ORDER BY tm.due_at, tm.id),"
        "       '[]')"
        "     FROM timers tm, c"
        "     WHERE tm.customer_id = c.customer_id),"
        "  'changes', (SELECT coalesce(jsonb_agg(jsonb_build_object("
        "       'request_id', ch.request_id, 'source', ch.source,"
        "       'requested_by', ch.requested_by,"
        "       'occurred_at', ch.occurred_at,"
        "       'observed_at', ch.observed_at, 'changes', ch.changes)"
        "       ORDER BY ch.id), '[]')"
        "     FROM customer_changes ch, c"
        "     WHERE ch.customer_id = c.customer_id)"
        ")) FROM c";
    char domain[4 * MW_MAX_DOMAIN + 1];
    const char *values[2] = {NULL, domain};
    size_t len;
    PGresult *res;

    *json = NULL;
    if (store_ensure_connected(store, err) != 0 ||
        store_exec(store, "SET TIME ZONE 'UTC'", 0, NULL, what, err) != 0)
        return -1;
    if (ids_is_uuid(key))
        values[0] = key;
    /* Domains are stored lower-case without a trailing dot. */
    snprintf(domain, sizeof(domain), "%s", key);
    for (char *p = domain; *p; p++) {
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    }
    len = strlen(domain);
    if (len > 0 && domain[len - 1] == '.')
        domain[len - 1] = '\0';
    if (store_safe_text(domain, sizeof(domain) - 1) == NULL)
        values[1] = NULL;
    res =
        PQexecParams(store->conn, sql_describe, 2, NULL, values, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        store_set_error(store, err, what, res);
        PQclear(res);
        return -1;
    }
    if (PQntuples(res) == 0) {
        PQclear(res);
        return 0;
    }
    *json = strdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    if (*json == NULL) {
        mw_error_set(err, MW_ERR_SYSTEM, true, "%s", what);
        mw_error_detail(err, "out of memory");
        return -1;
    }
    return 1;
}
