/*
 * The batch claim by COPY: a run of requests that are all new is written
 * with COPY, which costs PostgreSQL about half of what the INSERT ...
 * SELECT statements of mw_claim_requests cost for the same rows (per 100,000
 * requests: 2.9 s against 6.8 s, pg_stat_statements).  Only a run the
 * database cannot refuse part of may go this way: each request id once,
 * no domain wanted by two of its requests.  A request id recorded
 * already or a domain a live customer holds fails the COPY with a unique
 * violation; the transaction is then rolled back and the run claimed by
 * mw_claim_requests, which decides each request as before.  A short run
 * keeps the one round trip of the function: COPY needs one for each
 * table.
 *
 * The rows are those mw_claim_requests writes for new requests, in the
 * same order: request ids, then domains, sorted bytewise (the embedded
 * cluster's C collation: replicas racing over the same ones lock them in
 * the function's order; under another collation a rare race may
 * deadlock, and the batch is retried), then customers and the timers of
 * trials in the order of the run.
 */
#include "store_internal.h"

#include "mw.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The tables in the order written, each a COPY of the same query. */
enum copy_table {
    COPY_REQUESTS = 0,
    COPY_DOMAINS,
    COPY_CUSTOMERS,
    COPY_TIMERS,
    COPY_TABLES
};

/* Room for a time as format_time writes it (with what int can print). */
#define TIME_TEXT 64

/* COPY data in PostgreSQL's text format, kept from batch to batch. */
struct copy_data {
    char *buf;
    size_t len, cap;
    bool is_oom;
};

struct store_copy {
    struct copy_data data[COPY_TABLES];
};

/* A domain a valid request of the run wants. */
struct wanted {
    const char *domain;
    size_t position; /* in the run */
    bool is_primary;
};

static bool reserve(struct copy_data *d, size_t more)
{
    return store_reserve(&d->buf, &d->cap, d->len, more, 16384, &d->is_oom);
}

static void put_raw(struct copy_data *d, const char *s, size_t n)
{
    if (!reserve(d, n))
        return;
    memcpy(d->buf + d->len, s, n);
    d->len += n;
}

/* Ends a field with sep, a tab or the row's newline. */
static void end_field(struct copy_data *d, char sep)
{
    put_raw(d, &sep, 1);
}

/* A text field: NULL is SQL null (\N); the rest escaped for COPY. */
static void put_text(struct copy_data *d, const char *s, char sep)
{
    if (s == NULL) {
        put_raw(d, "\\N", 2);
        end_field(d, sep);
        return;
    }
    if (!reserve(d, 2 * strlen(s) + 1))
        return;
    for (; *s; s++) {
        char c = *s;
        char *p = d->buf + d->len;

        if (c == '\\' || c == '\t' || c == '\n' || c == '\r') {
            p[0] = '\\';
            p[1] = c == '\t' ? 't' : c == '\n' ? 'n' : c == '\r' ? 'r' : '\\';
            d->len += 2;
        } else {
            p[0] = c;
            d->len++;
        }
    }
    end_field(d, sep);
}

/*
 * Writes epoch milliseconds as a timestamptz PostgreSQL reads exactly;
 * false when the year is outside 1 to 9999.
 */
static bool format_time(int64_t ms, char out[TIME_TEXT])
{
    int64_t secs = ms / 1000, rem = ms % 1000;
    time_t t;
    struct tm tm;

    if (rem < 0) {
        rem += 1000;
        secs--;
    }
    t = (time_t)secs;
    if (gmtime_r(&t, &tm) == NULL || tm.tm_year < 1 - 1900 ||
        tm.tm_year > 9999 - 1900)
        return false;
    snprintf(out, TIME_TEXT, "%04d-%02d-%02d %02d:%02d:%02d.%03d+00",
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
             tm.tm_min, tm.tm_sec, (int)rem);
    return true;
}

static int compare_ids(const void *a, const void *b, void *items)
{
    const struct store_item *all = items;
    size_t i = *(const size_t *)a, j = *(const size_t *)b;

    return strcmp(all[i].request->request_id, all[j].request->request_id);
}

static int compare_wanted(const void *a, const void *b)
{
    const struct wanted *x = a, *y = b;
    int by_domain = strcmp(x->domain, y->domain);

    if (by_domain != 0)
        return by_domain;
    return x->position < y->position ? -1 : x->position > y->position;
}

/*
 * Sorts the positions of run by request id into *sorted and the domains
 * the valid requests want into *wanted (each once a request).  Returns 1
 * when the run may be copied, 0 when it must go to mw_claim_requests,
 * -1 when out of memory.
 */
static int plan_copy(const struct store_item *items, const size_t *run,
                     size_t count, struct mw_arena *arena, size_t **sorted,
                     struct wanted **wanted, size_t *nwanted)
{
    size_t n = 0, total = 0, kept = 0;
    struct wanted *w;

    *sorted = arena_alloc(arena, count * sizeof(**sorted));
    if (*sorted == NULL)
        return -1;
    memcpy(*sorted, run, count * sizeof(*run));
    qsort_r(*sorted, count, sizeof(**sorted), compare_ids, (void *)items);
    for (size_t i = 1; i < count; i++)
        if (strcmp(items[(*sorted)[i]].request->request_id,
                   items[(*sorted)[i - 1]].request->request_id) == 0)
            return 0; /* a repeat: DUPLICATE or CONFLICT */
    for (size_t i = 0; i < count; i++)
        if (items[run[i]].is_valid)
            total += 1 + items[run[i]].request->additional_domains_count;
    w = arena_alloc(arena, (total > 0 ? total : 1) * sizeof(*w));
    if (w == NULL)
        return -1;
    for (size_t i = 0; i < count; i++) {
        const struct mw_request *r = items[run[i]].request;

        if (!items[run[i]].is_valid)
            continue;
        for (size_t k = 0; k <= r->additional_domains_count; k++)
            w[n++] =
                (struct wanted){.domain = k == 0 ? r->primary_domain
                                                 : r->additional_domains[k - 1],
                                .position = i,
                                .is_primary = k == 0};
    }
    qsort(w, n, sizeof(*w), compare_wanted);
    for (size_t i = 0; i < n; i++) {
        if (kept > 0 && strcmp(w[kept - 1].domain, w[i].domain) == 0) {
            if (w[kept - 1].position != w[i].position)
                return 0; /* two requests want it: one after the other */
            w[kept - 1].is_primary |= w[i].is_primary;
            continue; /* listed twice by one request */
        }
        w[kept++] = w[i];
    }
    *wanted = w;
    *nwanted = kept;
    return 1;
}

/* One requests row; false when a time cannot be written. */
static bool put_request(struct copy_data *d, const struct store_item *item)
{
    char hash[3 + 64 + 1], at[TIME_TEXT];

    if (!format_time(item->occurred_at, at))
        return false;
    hash[0] = '\\';
    hash[1] = '\\';
    hash[2] = 'x';
    mw_hex_encode(item->payload_hash, sizeof(item->payload_hash), hash + 3);
    put_text(d, item->request->request_id, '\t');
    put_raw(d, "customer\t", 9);
    put_text(d, store_safe_text(item->request->msp_id, 4 * MW_MAX_ID), '\t');
    put_raw(d, hash, strlen(hash));
    end_field(d, '\t');
    put_raw(d, item->is_valid ? "CREATED\t" : "REJECTED\t",
            item->is_valid ? 8 : 9);
    put_text(d, item->is_valid ? item->customer_id : NULL, '\t');
    put_text(d, at, '\n');
    return true;
}

static const char *bool_text(bool b)
{
    return b ? "t" : "f";
}

static const char *enum_text(const char *const *names, int count, int value)
{
    return value >= 0 && value < count ? names[value] : NULL;
}

/* One customers row; false when a time cannot be written or no memory. */
static bool put_customer(struct copy_data *d, const struct store_item *item,
                         struct mw_arena *arena)
{
    const struct mw_request *r = item->request;
    bool is_trial = r->account_type == MW_ACCOUNT_TRIAL;
    bool is_buy_now = r->account_type == MW_ACCOUNT_BUY_NOW;
    char created[TIME_TEXT], trial_ends[TIME_TEXT], licenses[16];
    const char *additional = store_text_array_literal(
        arena, r->additional_domains, r->additional_domains_count);

    if (additional == NULL || !format_time(item->occurred_at, created) ||
        (is_trial && !format_time(item->trial_ends_at, trial_ends)))
        return false;
    snprintf(licenses, sizeof(licenses), "%ld", (long)r->licenses);
    put_text(d, item->customer_id, '\t');
    put_text(d, r->request_id, '\t');
    put_text(d, r->msp_id, '\t');
    put_text(d, r->msp_domain, '\t');
    put_text(d, r->requested_by, '\t');
    put_text(d, r->company_name, '\t');
    put_text(d, r->primary_domain, '\t');
    put_text(d, additional, '\t');
    put_text(
        d,
        enum_text(mw_mail_platform_names, MW_PLATFORM_COUNT, r->mail_platform),
        '\t');
    put_text(d, enum_text(mw_service_names, MW_SERVICE_COUNT, r->service),
             '\t');
    put_text(
        d, enum_text(mw_account_type_names, MW_ACCOUNT_COUNT, r->account_type),
        '\t');
    put_text(d, licenses, '\t');
    put_text(d, r->default_admin_email, '\t');
    put_text(d, r->delivery_destination, '\t');
    put_text(d, r->policy_template_id, '\t');
    put_text(d, bool_text(r->apply_global_rules), '\t');
    put_text(d, bool_text(r->msp_management), '\t');
    put_text(d, bool_text(r->two_factor_required), '\t');
    put_text(d, bool_text(r->monitor_mode), '\t');
    put_text(d, bool_text(is_buy_now), '\t');
    put_text(d, is_trial ? "TRIAL" : "ACTIVE", '\t');
    put_text(d, created, '\t');
    put_text(d, is_buy_now ? created : is_trial ? trial_ends : NULL, '\t');
    put_text(d, is_trial ? trial_ends : NULL, '\t');
    put_text(d, store_safe_text(item->traceparent, MW_MAX_TRACEPARENT), '\n');
    return true;
}

/* A trial's timers: its conversion, and its reminder when set. */
static bool put_timers(struct copy_data *d, const struct store_item *item)
{
    char created[TIME_TEXT], due[TIME_TEXT];

    if (!format_time(item->occurred_at, created) ||
        !format_time(item->trial_ends_at, due))
        return false;
    put_text(d, item->customer_id, '\t');
    put_raw(d, "TRIAL_CONVERSION\t", 17);
    put_text(d, due, '\t');
    put_text(d, created, '\n');
    if (item->trial_reminder_at == 0)
        return true;
    if (!format_time(item->trial_reminder_at, due))
        return false;
    put_text(d, item->customer_id, '\t');
    put_raw(d, "TRIAL_ENDING\t", 13);
    put_text(d, due, '\t');
    put_text(d, created, '\n');
    return true;
}

/*
 * Writes the COPY data of the four tables.  Returns 1 when written, 0
 * when a time is out of range (the function decides), -1 when out of
 * memory.
 */
static int write_tables(struct store_copy *copy, const struct store_item *items,
                        const size_t *run, size_t count, const size_t *sorted,
                        const struct wanted *wanted, size_t nwanted,
                        struct mw_arena *arena)
{
    struct copy_data *d = copy->data;

    for (int t = 0; t < COPY_TABLES; t++) {
        d[t].len = 0;
        d[t].is_oom = false;
    }
    for (size_t i = 0; i < count; i++)
        if (!put_request(&d[COPY_REQUESTS], &items[sorted[i]]))
            return 0;
    for (size_t i = 0; i < nwanted; i++) {
        put_text(&d[COPY_DOMAINS], wanted[i].domain, '\t');
        put_text(&d[COPY_DOMAINS], items[run[wanted[i].position]].customer_id,
                 '\t');
        put_text(&d[COPY_DOMAINS], bool_text(wanted[i].is_primary), '\n');
    }
    for (size_t i = 0; i < count; i++) {
        const struct store_item *item = &items[run[i]];

        if (!item->is_valid)
            continue;
        if (!put_customer(&d[COPY_CUSTOMERS], item, arena))
            return d[COPY_CUSTOMERS].is_oom ? -1 : 0;
        if (item->request->account_type == MW_ACCOUNT_TRIAL &&
            !put_timers(&d[COPY_TIMERS], item))
            return 0;
    }
    for (int t = 0; t < COPY_TABLES; t++)
        if (d[t].is_oom)
            return -1;
    return 1;
}

/* BEGIN and the COPY of each table, then the trials' timers and NOTIFY. */
#define SQL_COPY_CREATED                                                       \
    "BEGIN;"                                                                   \
    "COPY requests (request_id, kind, msp_id, payload_hash, outcome, "         \
    "customer_id, processed_at) FROM STDIN;"                                   \
    "COPY customer_domains (domain, customer_id, is_primary) FROM STDIN;"      \
    "COPY customers (customer_id, request_id, msp_id, msp_domain, "            \
    "requested_by, company_name, primary_domain, additional_domains, "         \
    "mail_platform, service, account_type, licenses, default_admin_email, "    \
    "delivery_destination, policy_template_id, apply_global_rules, "           \
    "msp_management, two_factor_required, monitor_mode, billable, status, "    \
    "created_at, billing_starts_at, trial_ends_at, traceparent) FROM STDIN"
#define SQL_COPY_TIMERS                                                        \
    ";COPY timers (customer_id, kind, due_at, created_at) FROM STDIN;"         \
    "NOTIFY mw_timers"

static const char *copy_sql(const struct store_copy *copy)
{
    static const char sql_created[] = SQL_COPY_CREATED;
    static const char sql_trials[] = SQL_COPY_CREATED SQL_COPY_TIMERS;

    return copy->data[COPY_TIMERS].len > 0 ? sql_trials : sql_created;
}

/*
 * Sends the statement and the tables' data as the server asks for them.
 * Returns 0 with *failed NULL when every COPY succeeded, 0 with *failed
 * the first error, -1 when the connection failed.
 */
static int run_copy(struct store *store, const struct store_copy *copy,
                    PGresult **failed)
{
    PGconn *conn = store->conn;
    int next = COPY_REQUESTS;
    PGresult *res;

    *failed = NULL;
    if (PQsendQuery(conn, copy_sql(copy)) != 1)
        return -1;
    while ((res = PQgetResult(conn)) != NULL) {
        ExecStatusType status = PQresultStatus(res);

        if (status == PGRES_COPY_IN) {
            const struct copy_data *d =
                next < COPY_TABLES ? &copy->data[next] : NULL;

            PQclear(res);
            if (d == NULL) {
                if (PQputCopyEnd(conn, "unexpected COPY") != 1)
                    return -1;
                continue;
            }
            next++;
            if ((d->len > 0 && PQputCopyData(conn, d->buf, (int)d->len) != 1) ||
                PQputCopyEnd(conn, NULL) != 1)
                return -1;
        } else if (status == PGRES_COMMAND_OK) {
            PQclear(res);
        } else if (*failed == NULL) {
            *failed = res;
        } else {
            PQclear(res);
        }
    }
    return PQstatus(conn) == CONNECTION_OK ? 0 : -1;
}

/* See store_internal.h. */
int store_copy_claim(struct store *store, struct store_item *items,
                     const size_t *run, size_t count, struct mw_arena *arena,
                     bool *is_retry, struct mw_error *err)
{
    static const char what[] = "could not claim requests";
    size_t *sorted, nwanted = 0;
    struct wanted *wanted = NULL;
    PGresult *failed;
    int planned;
    const char *sqlstate;

    if (count < store->copy_min_run)
        return 1;
    planned = plan_copy(items, run, count, arena, &sorted, &wanted, &nwanted);
    if (planned == 1 && store->copy == NULL) {
        store->copy = calloc(1, sizeof(*store->copy));
        if (store->copy == NULL)
            planned = -1;
    }
    if (planned == 1)
        planned = write_tables(store->copy, items, run, count, sorted, wanted,
                               nwanted, arena);
    if (planned < 0) {
        mw_error_set(err, MW_ERR_SYSTEM, true, "%s", what);
        mw_error_detail(err, "out of memory");
        return -1;
    }
    if (planned == 0)
        return 1;
    if (run_copy(store, store->copy, &failed) != 0) {
        PQclear(failed);
        store_set_error(store, err, what, NULL);
        err->retriable = true;
        store_drop_connection(store);
        return -1;
    }
    if (failed == NULL) {
        store->copied_runs++;
        for (size_t i = 0; i < count; i++)
            items[run[i]].outcome =
                items[run[i]].is_valid ? STORE_CREATED : STORE_REJECTED;
        return 0;
    }
    sqlstate = PQresultErrorField(failed, PG_DIAG_SQLSTATE);
    store_rollback(store);
    if (sqlstate != NULL && strcmp(sqlstate, "23505") == 0) {
        PQclear(failed);
        return 1; /* recorded already, or taken: the function decides */
    }
    *is_retry = store_is_serialization_state(sqlstate);
    store_set_error(store, err, what, failed);
    PQclear(failed);
    return 2;
}

/* See store_internal.h. */
void store_copy_free(struct store *store)
{
    if (store->copy == NULL)
        return;
    for (int t = 0; t < COPY_TABLES; t++)
        free(store->copy->data[t].buf);
    free(store->copy);
    store->copy = NULL;
}
