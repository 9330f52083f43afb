/*
 * The lifecycle against a real PostgreSQL (tests/with-postgres.sh provides
 * one in MW_TEST_DATABASE_URL): the timers written with a trial customer
 * and with a termination, and the scheduler firing them through the store
 * with the events it writes to the outbox.  Every test works in a time of
 * its own (a base far from the others', since "now" is a parameter), so
 * tests share one database; rows are checked with plain SQL and events are
 * decoded with the worker's codec.
 */
#include "arena.h"
#include "codec.h"
#include "error.h"
#include "ids.h"
#include "mw.h"
#include "scheduler.h"
#include "store.h"

#include <libpq-fe.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#define DAY_MS (24LL * 60 * 60 * 1000)
#define TRACEPARENT "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
#define TERMINATION_TRACEPARENT                                                \
    "00-11111111111111111111111111111111-2222222222222222-01"

static const char *db_url;
static PGconn *admin;
static char run_tag[24];
static int tag_counter;
/* Each test gets its own stretch of time, later than every earlier one. */
static int64_t next_base;

/* ---- helpers ---- */

static void check_ok(int rc, const struct mw_error *err)
{
    if (rc != 0)
        mw_error_print(err, "store error");
    assert_int_equal(rc, 0);
}

static struct store *open_store(void)
{
    struct mw_error err = {0};
    struct store *store = store_new(db_url, &err);

    if (store == NULL)
        mw_error_print(&err, "store_new");
    assert_non_null(store);
    return store;
}

static struct codec *open_codec(void)
{
    struct mw_error err = {0};
    struct codec *codec = codec_new(&err);

    assert_non_null(codec);
    return codec;
}

static int64_t new_base(void)
{
    next_base += 1000 * DAY_MS;
    return next_base;
}

static const char *new_tag(struct mw_arena *arena)
{
    return arena_printf(arena, "%s-%d", run_tag, ++tag_counter);
}

static long long query_num(const char *sql, int nparams, ...)
{
    const char *values[8];
    va_list ap;
    PGresult *res;
    long long n = 0;

    va_start(ap, nparams);
    for (int i = 0; i < nparams; i++)
        values[i] = va_arg(ap, const char *);
    va_end(ap);
    res = PQexecParams(admin, sql, nparams, NULL, values, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        fprintf(stderr, "query failed: %s: %s\n", sql, PQerrorMessage(admin));
    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    if (PQntuples(res) > 0 && !PQgetisnull(res, 0, 0))
        n = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return n;
}

static char *query_text(struct mw_arena *arena, const char *sql, int nparams,
                        ...)
{
    const char *values[8];
    va_list ap;
    PGresult *res;
    char *s = NULL;

    va_start(ap, nparams);
    for (int i = 0; i < nparams; i++)
        values[i] = va_arg(ap, const char *);
    va_end(ap);
    res = PQexecParams(admin, sql, nparams, NULL, values, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    if (PQntuples(res) > 0 && !PQgetisnull(res, 0, 0))
        s = arena_strdup(arena, PQgetvalue(res, 0, 0));
    PQclear(res);
    return s;
}

/* A valid request of msp_id for primary, TRIAL unless told otherwise. */
static struct mw_request *make_request(struct mw_arena *arena,
                                       const char *request_id,
                                       const char *msp_id, const char *primary,
                                       int account_type)
{
    struct mw_request *r = arena_alloc(arena, sizeof(*r));

    memset(r, 0, sizeof(*r));
    r->request_id = request_id;
    r->requested_by = "admin@msp.example";
    r->msp_id = msp_id;
    r->msp_domain = "msp.example";
    r->mail_platform = MW_PLATFORM_MICROSOFT_365;
    r->service = MW_SERVICE_MESH_GATEWAY;
    r->company_name = "Contoso";
    r->primary_domain = primary;
    r->delivery_destination = "mail.contoso.example:25";
    r->licenses = 25;
    r->default_admin_email = "postmaster@contoso.example";
    r->apply_global_rules = true;
    r->msp_management = true;
    r->account_type = account_type;
    return r;
}

/*
 * Provisions one customer created at created, with a trial of trial_ms
 * and a reminder at reminder_at (0: none).  Returns its id; *domain gets
 * its primary domain when not NULL.
 */
static const char *create_customer(struct store *store, struct mw_arena *arena,
                                   int account_type, int64_t created,
                                   int64_t trial_ms, int64_t reminder_at,
                                   const char **domain)
{
    const char *tag = new_tag(arena);
    const char *primary = arena_printf(arena, "%s.example", tag);
    struct mw_request *r =
        make_request(arena, arena_printf(arena, "req-%s", tag), "msp-l",
                     primary, account_type);
    char *customer_id = arena_alloc(arena, IDS_UUID_LEN + 1);
    struct store_item item;
    struct mw_error err = {0};

    memset(&item, 0, sizeof(item));
    ids_customer_id(r->request_id, customer_id);
    item.kind = STORE_ITEM_REQUEST;
    item.request = r;
    item.is_valid = true;
    memset(item.payload_hash, 1, sizeof(item.payload_hash));
    item.customer_id = customer_id;
    item.occurred_at = created;
    item.trial_ends_at = created + trial_ms;
    item.trial_reminder_at = reminder_at;
    item.traceparent = TRACEPARENT;
    check_ok(store_batch_claim(store, &item, 1, arena, &err), &err);
    check_ok(store_batch_finish(store, NULL, 0, &err), &err);
    assert_int_equal(item.outcome, STORE_CREATED);
    if (domain != NULL)
        *domain = primary;
    return customer_id;
}

/* Claims a termination of customer_id at effective (0: now) made at now. */
static struct store_item terminate(struct store *store, struct mw_arena *arena,
                                   const char *customer_id, int64_t now,
                                   int64_t effective)
{
    struct mw_termination_request *t = arena_alloc(arena, sizeof(*t));
    struct store_item item;
    struct mw_error err = {0};

    memset(t, 0, sizeof(*t));
    t->request_id = arena_printf(arena, "term-%s", new_tag(arena));
    t->requested_by = "admin@msp.example";
    t->msp_id = "msp-l";
    t->customer_id = customer_id;
    t->has_effective_at = effective != 0;
    t->effective_at = effective;
    memset(&item, 0, sizeof(item));
    item.kind = STORE_ITEM_TERMINATION;
    item.termination = t;
    item.is_valid = true;
    memset(item.payload_hash, 0x55, sizeof(item.payload_hash));
    item.occurred_at = now;
    item.traceparent = TERMINATION_TRACEPARENT;
    check_ok(store_batch_claim(store, &item, 1, arena, &err), &err);
    check_ok(store_batch_finish(store, NULL, 0, &err), &err);
    return item;
}

static int64_t fire(struct store *store, struct codec *codec, int64_t now)
{
    struct mw_error err = {0};
    int64_t fired = scheduler_fire_due(store, codec, now, 0, &err);

    if (fired < 0)
        mw_error_print(&err, "scheduler_fire_due");
    assert_true(fired >= 0);
    return fired;
}

/* The events written for a customer, oldest first, decoded. */
struct events {
    size_t count;
    struct mw_record recs[8];
    char headers[8][512]; /* the raw header blob, for a substring test */
    size_t headers_len[8];
};

static void customer_events(struct codec *codec, struct mw_arena *arena,
                            const char *customer_id, struct events *out)
{
    static const char sql[] =
        "SELECT payload, headers FROM outbox "
        "WHERE key = convert_to($1, 'UTF8') AND stream = 0 ORDER BY id";
    const char *values[1] = {customer_id};
    PGresult *res = PQexecParams(admin, sql, 1, NULL, values, NULL, NULL, 1);

    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    memset(out, 0, sizeof(*out));
    out->count = (size_t)PQntuples(res);
    assert_true(out->count <= 8);
    for (size_t i = 0; i < out->count; i++) {
        struct mw_error err = {0};
        size_t len = (size_t)PQgetlength(res, (int)i, 1);
        void *copy = arena_alloc(arena, (size_t)PQgetlength(res, (int)i, 0));

        memcpy(copy, PQgetvalue(res, (int)i, 0),
               (size_t)PQgetlength(res, (int)i, 0));
        assert_int_equal(codec_decode(codec, copy,
                                      (size_t)PQgetlength(res, (int)i, 0),
                                      arena, &out->recs[i], &err),
                         CODEC_OK);
        if (len > sizeof(out->headers[i]))
            len = sizeof(out->headers[i]);
        memcpy(out->headers[i], PQgetvalue(res, (int)i, 1), len);
        out->headers_len[i] = len;
    }
    PQclear(res);
}

static bool headers_have(const struct events *ev, size_t i, const char *text)
{
    return memmem(ev->headers[i], ev->headers_len[i], text, strlen(text)) !=
           NULL;
}

/* ---- timers written at provisioning and termination ---- */

static void trial_gets_conversion_and_reminder_timers(void **state)
{
    struct mw_arena *arena = arena_new();
    struct store *store = open_store();
    int64_t base = new_base();
    const char *with = create_customer(store, arena, MW_ACCOUNT_TRIAL, base,
                                       14 * DAY_MS, base + 11 * DAY_MS, NULL);
    const char *without = create_customer(store, arena, MW_ACCOUNT_TRIAL, base,
                                          14 * DAY_MS, 0, NULL);
    const char *buy_now = create_customer(store, arena, MW_ACCOUNT_BUY_NOW,
                                          base, 14 * DAY_MS, 0, NULL);
    char due[24];

    (void)state;
    snprintf(due, sizeof(due), "%lld", (long long)(base + 14 * DAY_MS));
    assert_int_equal(query_num("SELECT count(*) FROM timers WHERE "
                               "customer_id = $1 AND kind = "
                               "'TRIAL_CONVERSION' AND due_at = "
                               "mw_ms_to_ts($2) AND fired_at IS NULL",
                               2, with, due),
                     1);
    snprintf(due, sizeof(due), "%lld", (long long)(base + 11 * DAY_MS));
    assert_int_equal(query_num("SELECT count(*) FROM timers WHERE "
                               "customer_id = $1 AND kind = 'TRIAL_ENDING' "
                               "AND due_at = mw_ms_to_ts($2)",
                               2, with, due),
                     1);
    assert_int_equal(query_num("SELECT count(*) FROM timers "
                               "WHERE customer_id = $1",
                               1, without),
                     1);
    assert_int_equal(query_num("SELECT count(*) FROM timers "
                               "WHERE customer_id = $1",
                               1, buy_now),
                     0);
    store_destroy(store);
    arena_destroy(arena);
}

static void termination_writes_a_timer_and_notifies(void **state)
{
    struct mw_arena *arena = arena_new();
    struct store *store = open_store();
    struct store *listener = open_store();
    struct mw_error err = {0};
    int64_t base = new_base();
    const char *customer = create_customer(store, arena, MW_ACCOUNT_BUY_NOW,
                                           base, DAY_MS, 0, NULL);
    struct store_item item;

    (void)state;
    /* Subscribe, and drain whatever earlier claims notified. */
    assert_true(store_timers_wait(listener, 0, &err) >= 0);
    item = terminate(store, arena, customer, base + 1000, 0);
    assert_int_equal(item.outcome, STORE_SCHEDULED);
    assert_int_equal(store_timers_wait(listener, 5000, &err), 1);
    assert_int_equal(query_num("SELECT count(*) FROM timers WHERE "
                               "customer_id = $1 AND kind = 'TERMINATION' "
                               "AND request_id = $2 AND fired_at IS NULL",
                               2, customer, item.termination->request_id),
                     1);
    store_destroy(listener);
    store_destroy(store);
    arena_destroy(arena);
}

/* ---- firing ---- */

static void due_trial_sends_reminder_then_converts_from_its_end(void **state)
{
    struct mw_arena *arena = arena_new();
    struct store *store = open_store();
    struct codec *codec = open_codec();
    int64_t base = new_base();
    int64_t ends = base + 14 * DAY_MS;
    const char *customer =
        create_customer(store, arena, MW_ACCOUNT_TRIAL, base, 14 * DAY_MS,
                        base + 11 * DAY_MS, NULL);
    char event_id[IDS_UUID_LEN + 1];
    struct events ev;

    (void)state;
    fire(store, codec, base + 10 * DAY_MS);
    customer_events(codec, arena, customer, &ev);
    assert_int_equal(ev.count, 0);

    fire(store, codec, base + 12 * DAY_MS);
    customer_events(codec, arena, customer, &ev);
    assert_int_equal(ev.count, 1);
    assert_int_equal(ev.recs[0].type, MW_REC_TRIAL_ENDING);
    ids_event_id("TrialEnding", customer, event_id);
    assert_string_equal(ev.recs[0].u.trial_ending.event_id, event_id);
    assert_string_equal(ev.recs[0].u.trial_ending.customer_id, customer);
    assert_int_equal(ev.recs[0].u.trial_ending.trial_ends_at, ends);
    assert_int_equal(ev.recs[0].u.trial_ending.occurred_at, base + 12 * DAY_MS);
    assert_int_equal(ev.recs[0].u.trial_ending.licenses, 25);
    assert_true(headers_have(&ev, 0, TRACEPARENT));
    assert_true(headers_have(&ev, 0, "TrialEnding"));

    /* Noticed a day late: billing still starts at the trial end. */
    fire(store, codec, ends + DAY_MS);
    customer_events(codec, arena, customer, &ev);
    assert_int_equal(ev.count, 2);
    assert_int_equal(ev.recs[1].type, MW_REC_TRIAL_CONVERTED);
    ids_event_id("TrialConverted", customer, event_id);
    assert_string_equal(ev.recs[1].u.trial_converted.event_id, event_id);
    assert_int_equal(ev.recs[1].u.trial_converted.trial_started_at, base);
    assert_int_equal(ev.recs[1].u.trial_converted.trial_ended_at, ends);
    assert_int_equal(ev.recs[1].u.trial_converted.billing_starts_at, ends);
    assert_int_equal(ev.recs[1].u.trial_converted.occurred_at, ends + DAY_MS);
    assert_int_equal(query_num("SELECT count(*) FROM customers WHERE "
                               "customer_id = $1 AND status = 'ACTIVE' "
                               "AND billable AND billing_starts_at = "
                               "trial_ends_at",
                               1, customer),
                     1);

    /* Nothing fires twice. */
    fire(store, codec, ends + 30 * DAY_MS);
    customer_events(codec, arena, customer, &ev);
    assert_int_equal(ev.count, 2);
    codec_destroy(codec);
    store_destroy(store);
    arena_destroy(arena);
}

static void termination_before_trial_end_never_converts(void **state)
{
    struct mw_arena *arena = arena_new();
    struct store *store = open_store();
    struct codec *codec = open_codec();
    int64_t base = new_base();
    const char *domain;
    const char *customer =
        create_customer(store, arena, MW_ACCOUNT_TRIAL, base, 14 * DAY_MS,
                        base + 11 * DAY_MS, &domain);
    struct store_item term =
        terminate(store, arena, customer, base + DAY_MS, base + 2 * DAY_MS);
    char event_id[IDS_UUID_LEN + 1];
    struct events ev;

    (void)state;
    assert_int_equal(term.outcome, STORE_SCHEDULED);
    assert_true(term.was_trial);
    /* Everything overdue at once: the termination comes first. */
    fire(store, codec, base + 30 * DAY_MS);
    customer_events(codec, arena, customer, &ev);
    assert_int_equal(ev.count, 1);
    assert_int_equal(ev.recs[0].type, MW_REC_CUSTOMER_TERMINATED);
    ids_event_id("CustomerTerminated", term.termination->request_id, event_id);
    assert_string_equal(ev.recs[0].u.terminated.event_id, event_id);
    assert_string_equal(ev.recs[0].u.terminated.request_id,
                        term.termination->request_id);
    assert_true(ev.recs[0].u.terminated.was_trial);
    assert_int_equal(ev.recs[0].u.terminated.terminated_at, base + 2 * DAY_MS);
    assert_true(headers_have(&ev, 0, "2222222222222222"));
    assert_true(headers_have(&ev, 0, term.termination->request_id));
    assert_int_equal(query_num("SELECT count(*) FROM timer_history WHERE "
                               "customer_id = $1 AND cancelled",
                               1, customer),
                     2);
    assert_int_equal(query_num("SELECT count(*) FROM customers WHERE "
                               "customer_id = $1 AND status = 'TERMINATED' "
                               "AND NOT billable AND billing_starts_at IS NULL",
                               1, customer),
                     1);
    assert_int_equal(query_num("SELECT count(*) FROM customer_domains WHERE "
                               "customer_id = $1 AND released_at IS NULL",
                               1, customer),
                     0);
    assert_int_equal(query_num("SELECT count(*) FROM terminations WHERE "
                               "request_id = $1 AND applied_at IS NOT NULL",
                               1, term.termination->request_id),
                     1);

    /* The domain is free for a new customer. */
    {
        struct mw_request *r =
            make_request(arena, arena_printf(arena, "req-%s", new_tag(arena)),
                         "msp-other", domain, MW_ACCOUNT_BUY_NOW);
        char *cid = arena_alloc(arena, IDS_UUID_LEN + 1);
        struct store_item item;
        struct mw_error err = {0};

        memset(&item, 0, sizeof(item));
        ids_customer_id(r->request_id, cid);
        item.kind = STORE_ITEM_REQUEST;
        item.request = r;
        item.is_valid = true;
        item.customer_id = cid;
        item.occurred_at = base + 31 * DAY_MS;
        check_ok(store_batch_claim(store, &item, 1, arena, &err), &err);
        check_ok(store_batch_finish(store, NULL, 0, &err), &err);
        assert_int_equal(item.outcome, STORE_CREATED);
    }
    codec_destroy(codec);
    store_destroy(store);
    arena_destroy(arena);
}

static void termination_after_trial_end_lets_conversion_go_first(void **state)
{
    struct mw_arena *arena = arena_new();
    struct store *store = open_store();
    struct codec *codec = open_codec();
    int64_t base = new_base();
    const char *customer =
        create_customer(store, arena, MW_ACCOUNT_TRIAL, base, 14 * DAY_MS,
                        base + 11 * DAY_MS, NULL);
    struct store_item term =
        terminate(store, arena, customer, base + DAY_MS, base + 20 * DAY_MS);
    struct store_item second;
    struct events ev;

    (void)state;
    assert_int_equal(term.outcome, STORE_SCHEDULED);
    /* A second, different termination: the first one stands. */
    second = terminate(store, arena, customer, base + 2 * DAY_MS, 0);
    assert_int_equal(second.outcome, STORE_REJECTED);
    assert_int_equal(second.termination_code, MW_REJ_ALREADY_TERMINATED);

    fire(store, codec, base + 30 * DAY_MS);
    customer_events(codec, arena, customer, &ev);
    assert_int_equal(ev.count, 3);
    assert_int_equal(ev.recs[0].type, MW_REC_TRIAL_ENDING);
    assert_int_equal(ev.recs[1].type, MW_REC_TRIAL_CONVERTED);
    assert_int_equal(ev.recs[2].type, MW_REC_CUSTOMER_TERMINATED);
    assert_false(ev.recs[2].u.terminated.was_trial);
    assert_int_equal(ev.recs[2].u.terminated.terminated_at, base + 20 * DAY_MS);
    codec_destroy(codec);
    store_destroy(store);
    arena_destroy(arena);
}

static void future_termination_fires_at_its_time_not_before(void **state)
{
    struct mw_arena *arena = arena_new();
    struct store *store = open_store();
    struct codec *codec = open_codec();
    int64_t base = new_base();
    const char *customer = create_customer(store, arena, MW_ACCOUNT_BUY_NOW,
                                           base, DAY_MS, 0, NULL);
    struct events ev;

    (void)state;
    terminate(store, arena, customer, base, base + 5 * DAY_MS);
    fire(store, codec, base + 5 * DAY_MS - 1);
    customer_events(codec, arena, customer, &ev);
    assert_int_equal(ev.count, 0);
    fire(store, codec, base + 5 * DAY_MS);
    customer_events(codec, arena, customer, &ev);
    assert_int_equal(ev.count, 1);
    assert_false(ev.recs[0].u.terminated.was_trial);
    codec_destroy(codec);
    store_destroy(store);
    arena_destroy(arena);
}

/* ---- concurrency ---- */

struct fire_thread {
    int64_t now;
    int64_t fired;
};

static void *fire_main(void *arg)
{
    struct fire_thread *t = arg;
    struct mw_error err = {0};
    struct store *store = store_new(db_url, &err);
    struct codec *codec = codec_new(&err);

    /* Small batches, so that the threads interleave. */
    t->fired = store && codec
                   ? scheduler_fire_due(store, codec, t->now, 16, &err)
                   : -1;
    if (t->fired < 0)
        mw_error_print(&err, "fire thread");
    codec_destroy(codec);
    store_destroy(store);
    return NULL;
}

static void three_schedulers_fire_each_timer_once(void **state)
{
    enum { CUSTOMERS = 300, THREADS = 3 };
    struct mw_arena *arena = arena_new();
    struct store *store = open_store();
    int64_t base = new_base();
    struct fire_thread threads[THREADS];
    pthread_t ids[THREADS];
    char from[24], to[24];
    int64_t fired = 0;

    (void)state;
    for (int i = 0; i < CUSTOMERS; i++)
        create_customer(store, arena, MW_ACCOUNT_TRIAL, base, DAY_MS,
                        base + DAY_MS / 2, NULL);
    for (int i = 0; i < THREADS; i++) {
        threads[i].now = base + 2 * DAY_MS;
        pthread_create(&ids[i], NULL, fire_main, &threads[i]);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(ids[i], NULL);
        assert_true(threads[i].fired >= 0);
        fired += threads[i].fired;
    }
    assert_int_equal(fired, 2 * CUSTOMERS);
    snprintf(from, sizeof(from), "%lld", (long long)base);
    snprintf(to, sizeof(to), "%lld", (long long)(base + 2 * DAY_MS));
    assert_int_equal(query_num("SELECT count(*) FROM timer_history t JOIN "
                               "customers "
                               "c USING (customer_id) WHERE c.created_at = "
                               "mw_ms_to_ts($1) AND t.fired_at = "
                               "mw_ms_to_ts($2) AND NOT t.cancelled",
                               2, from, to),
                     2 * CUSTOMERS);
    assert_int_equal(query_num("SELECT count(DISTINCT o.event_id) FROM outbox "
                               "o JOIN customers c ON o.key = convert_to("
                               "c.customer_id::text, 'UTF8') WHERE "
                               "c.created_at = mw_ms_to_ts($1)",
                               1, from),
                     2 * CUSTOMERS);
    assert_int_equal(query_num("SELECT count(*) FROM customers WHERE "
                               "created_at = mw_ms_to_ts($1) AND status = "
                               "'ACTIVE' AND billable",
                               1, from),
                     CUSTOMERS);
    store_destroy(store);
    arena_destroy(arena);
}

static void claimed_timers_are_skipped_then_fired_after_a_crash(void **state)
{
    struct mw_arena *arena = arena_new();
    struct store *crashing = open_store();
    struct store *other = open_store();
    struct codec *codec = open_codec();
    struct store_timer *timers;
    size_t count;
    struct mw_error err = {0};
    int64_t base = new_base();
    const char *customer =
        create_customer(other, arena, MW_ACCOUNT_TRIAL, base, DAY_MS, 0, NULL);
    struct events ev;

    (void)state;
    /* Everything older is fired first, so that the claim below holds our
     * customer's timer. */
    fire(other, codec, base);
    check_ok(store_timers_claim(crashing, base + 2 * DAY_MS, 10, arena, &timers,
                                &count, &err),
             &err);
    assert_int_equal(count, 1);
    assert_string_equal(timers[0].customer_id, customer);
    assert_int_equal(timers[0].action, STORE_TIMER_FIRED);

    /* Held: another replica skips it rather than waiting. */
    assert_int_equal(fire(other, codec, base + 2 * DAY_MS), 0);

    /* The holder dies before its commit: the claim is void.  The server
     * ends the closed session a moment after PQfinish returns, so wait
     * until its lock on the timer is gone. */
    store_destroy(crashing);
    for (int i = 0;
         i < 200 && query_num("SELECT count(*) FROM (SELECT 1 FROM timers "
                              "WHERE customer_id = $1 AND fired_at IS NULL "
                              "FOR UPDATE SKIP LOCKED) AS t",
                              1, customer) == 0;
         i++) {
        struct timespec pause = {0, 50 * 1000 * 1000};

        nanosleep(&pause, NULL);
    }
    assert_int_equal(fire(other, codec, base + 2 * DAY_MS), 1);
    customer_events(codec, arena, customer, &ev);
    assert_int_equal(ev.count, 1);
    assert_int_equal(ev.recs[0].type, MW_REC_TRIAL_CONVERTED);
    codec_destroy(codec);
    store_destroy(other);
    arena_destroy(arena);
}

/* ---- several timers of one customer in one batch ---- */

static const char *ms_text(struct mw_arena *arena, int64_t ms)
{
    return arena_printf(arena, "%lld", (long long)ms);
}

/*
 * Claims the timers due at now in a transaction left open, as the
 * scheduler does before it writes the events.  Returns how many.
 */
static size_t claim_due(struct store *store, struct mw_arena *arena,
                        int64_t now, struct store_timer **timers)
{
    struct mw_error err = {0};
    size_t count = 0;

    check_ok(store_timers_claim(store, now, 10, arena, timers, &count, &err),
             &err);
    return count;
}

/*
 * A 14-day trial created at base, with its reminder at day 11, once
 * everything older has fired (so that a batch holds this customer's
 * timers only), and its termination accepted on day 1, effective at
 * effective (0: at once).  Returns the customer id; *term, when not NULL,
 * gets the termination.
 */
static const char *terminated_trial(struct store *store, struct codec *codec,
                                    struct mw_arena *arena, int64_t base,
                                    int64_t effective, struct store_item *term)
{
    const char *customer;
    struct store_item item;

    fire(store, codec, base);
    customer = create_customer(store, arena, MW_ACCOUNT_TRIAL, base,
                               14 * DAY_MS, base + 11 * DAY_MS, NULL);
    item = terminate(store, arena, customer, base + DAY_MS, effective);
    assert_int_equal(item.outcome, STORE_SCHEDULED);
    if (term != NULL)
        *term = item;
    return customer;
}

static void assert_claimed(const struct store_timer *t, const char *customer,
                           enum store_timer_kind kind,
                           enum store_timer_action action, bool was_trial)
{
    assert_string_equal(t->customer_id, customer);
    assert_int_equal(t->kind, kind);
    assert_int_equal(t->action, action);
    assert_int_equal(t->was_trial, was_trial);
}

static void conversion_then_termination_in_one_batch_both_apply(void **state)
{
    struct mw_arena *arena = arena_new();
    struct store *store = open_store();
    struct codec *codec = open_codec();
    int64_t base = new_base();
    int64_t ends = base + 14 * DAY_MS;
    int64_t effective = base + 20 * DAY_MS;
    const char *customer;
    struct store_item term;
    struct store_timer *timers;

    (void)state;
    customer = terminated_trial(store, codec, arena, base, effective, &term);
    assert_int_equal(claim_due(store, arena, base + 30 * DAY_MS, &timers), 3);
    assert_claimed(&timers[0], customer, STORE_TIMER_TRIAL_ENDING,
                   STORE_TIMER_FIRED, true);
    assert_claimed(&timers[1], customer, STORE_TIMER_TRIAL_CONVERSION,
                   STORE_TIMER_FIRED, true);
    assert_int_equal(timers[1].due_at, ends);
    /* Converted just before: no longer on trial when terminated. */
    assert_claimed(&timers[2], customer, STORE_TIMER_TERMINATION,
                   STORE_TIMER_FIRED, false);
    assert_int_equal(timers[2].due_at, effective);
    assert_string_equal(timers[2].request_id, term.termination->request_id);
    assert_string_equal(timers[2].traceparent, TERMINATION_TRACEPARENT);
    assert_string_equal(timers[1].traceparent, TRACEPARENT);
    store_batch_abort(store);

    assert_int_equal(fire(store, codec, base + 30 * DAY_MS), 3);
    assert_int_equal(query_num("SELECT count(*) FROM customers WHERE "
                               "customer_id = $1 AND status = 'TERMINATED' "
                               "AND NOT billable AND billing_starts_at = "
                               "mw_ms_to_ts($2) AND terminated_at = "
                               "mw_ms_to_ts($3)",
                               3, customer, ms_text(arena, ends),
                               ms_text(arena, effective)),
                     1);
    assert_int_equal(query_num("SELECT count(*) FROM timer_history WHERE "
                               "customer_id = $1 AND fired_at = "
                               "mw_ms_to_ts($2) AND NOT cancelled",
                               2, customer, ms_text(arena, base + 30 * DAY_MS)),
                     3);
    assert_int_equal(query_num("SELECT count(*) FROM terminations WHERE "
                               "request_id = $1 AND applied_at = "
                               "mw_ms_to_ts($2)",
                               2, term.termination->request_id,
                               ms_text(arena, base + 30 * DAY_MS)),
                     1);
    assert_int_equal(query_num("SELECT count(*) FROM customer_domains WHERE "
                               "customer_id = $1 AND released_at IS NULL",
                               1, customer),
                     0);
    codec_destroy(codec);
    store_destroy(store);
    arena_destroy(arena);
}

static void termination_then_conversion_in_one_batch_cancels_it(void **state)
{
    struct mw_arena *arena = arena_new();
    struct store *store = open_store();
    struct codec *codec = open_codec();
    int64_t base = new_base();
    int64_t effective = base + 2 * DAY_MS;
    const char *customer;
    struct store_timer *timers;

    (void)state;
    customer = terminated_trial(store, codec, arena, base, effective, NULL);
    assert_int_equal(claim_due(store, arena, base + 30 * DAY_MS, &timers), 3);
    assert_claimed(&timers[0], customer, STORE_TIMER_TERMINATION,
                   STORE_TIMER_FIRED, true);
    assert_string_equal(timers[0].traceparent, TERMINATION_TRACEPARENT);
    /* Cancelled by the termination earlier in the same batch. */
    assert_claimed(&timers[1], customer, STORE_TIMER_TRIAL_ENDING,
                   STORE_TIMER_CANCELLED, false);
    assert_claimed(&timers[2], customer, STORE_TIMER_TRIAL_CONVERSION,
                   STORE_TIMER_CANCELLED, false);
    store_batch_abort(store);

    assert_int_equal(fire(store, codec, base + 30 * DAY_MS), 1);
    assert_int_equal(query_num("SELECT count(*) FROM customers WHERE "
                               "customer_id = $1 AND status = 'TERMINATED' "
                               "AND NOT billable AND terminated_at = "
                               "mw_ms_to_ts($2)",
                               2, customer, ms_text(arena, effective)),
                     1);
    assert_int_equal(query_num("SELECT count(*) FROM timer_history WHERE "
                               "customer_id = $1 AND kind <> 'TERMINATION' "
                               "AND cancelled AND fired_at = mw_ms_to_ts($2)",
                               2, customer, ms_text(arena, base + 30 * DAY_MS)),
                     2);
    assert_int_equal(query_num("SELECT count(*) FROM timer_history WHERE "
                               "customer_id = $1 AND kind = 'TERMINATION' "
                               "AND NOT cancelled",
                               1, customer),
                     1);
    codec_destroy(codec);
    store_destroy(store);
    arena_destroy(arena);
}

static void termination_cancels_timers_not_due_yet(void **state)
{
    struct mw_arena *arena = arena_new();
    struct store *store = open_store();
    struct codec *codec = open_codec();
    struct mw_error err = {0};
    int64_t base = new_base();
    const char *customer;
    struct store_timer *timers;
    struct events ev;
    char *json = NULL;

    (void)state;
    /* Effective at once: only the termination is due. */
    customer = terminated_trial(store, codec, arena, base, 0, NULL);
    /* The claim tells what the termination withdrew, though not due. */
    assert_int_equal(claim_due(store, arena, base + 2 * DAY_MS, &timers), 3);
    assert_claimed(&timers[0], customer, STORE_TIMER_TERMINATION,
                   STORE_TIMER_FIRED, true);
    assert_claimed(&timers[1], customer, STORE_TIMER_TRIAL_ENDING,
                   STORE_TIMER_WITHDRAWN, false);
    assert_int_equal(timers[1].due_at, base + 11 * DAY_MS);
    assert_claimed(&timers[2], customer, STORE_TIMER_TRIAL_CONVERSION,
                   STORE_TIMER_WITHDRAWN, false);
    assert_int_equal(timers[2].due_at, base + 14 * DAY_MS);
    store_batch_abort(store);

    assert_int_equal(fire(store, codec, base + 2 * DAY_MS), 1);
    assert_int_equal(query_num("SELECT count(*) FROM timer_history WHERE "
                               "customer_id = $1 AND kind <> 'TERMINATION' "
                               "AND cancelled AND fired_at = mw_ms_to_ts($2)",
                               2, customer, ms_text(arena, base + 2 * DAY_MS)),
                     2);
    /* Terminated on trial: billing never started. */
    assert_int_equal(query_num("SELECT count(*) FROM customers WHERE "
                               "customer_id = $1 AND status = 'TERMINATED' "
                               "AND terminated_at = mw_ms_to_ts($2) "
                               "AND billing_starts_at IS NULL "
                               "AND trial_ends_at = mw_ms_to_ts($3)",
                               3, customer, ms_text(arena, base + DAY_MS),
                               ms_text(arena, base + 14 * DAY_MS)),
                     1);
    assert_int_equal(store_customer_describe(store, customer, &json, &err), 1);
    assert_non_null(strstr(json, "\"billing_starts_at\": null"));
    free(json);
    assert_int_equal(fire(store, codec, base + 30 * DAY_MS), 0);
    customer_events(codec, arena, customer, &ev);
    assert_int_equal(ev.count, 1);
    assert_int_equal(ev.recs[0].type, MW_REC_CUSTOMER_TERMINATED);
    assert_true(ev.recs[0].u.terminated.was_trial);
    codec_destroy(codec);
    store_destroy(store);
    arena_destroy(arena);
}

/* Teardown: ends the holder's transaction, so later tests are not held. */
static int close_holder(void **state)
{
    PQfinish(*state);
    *state = NULL;
    return 0;
}

static void timers_behind_a_held_timer_are_deferred(void **state)
{
    static const char sql_hold[] =
        "SELECT id FROM timers WHERE customer_id = $1 "
        "AND kind = 'TRIAL_ENDING' FOR UPDATE";
    struct mw_arena *arena = arena_new();
    struct codec *codec = open_codec();
    PGconn *holder = PQconnectdb(db_url);
    int64_t base = new_base();
    const char *customer;
    const char *values[1];
    struct store *store;
    struct store_timer *timers;
    struct mw_error err = {0};
    struct events ev;
    PGresult *res;

    /* Closed by close_holder even when an assertion fails. */
    *state = holder;
    /* A claim that waited for the holder would be the bug: let it fail in
     * seconds rather than at the test's time limit. */
    store =
        store_new(arena_printf(arena, "%s%coptions=-c%%20lock_timeout%%3D5s",
                               db_url, strchr(db_url, '?') ? '&' : '?'),
                  &err);
    if (store == NULL)
        mw_error_print(&err, "store_new");
    assert_non_null(store);
    assert_int_equal(PQstatus(holder), CONNECTION_OK);
    customer =
        terminated_trial(store, codec, arena, base, base + 20 * DAY_MS, NULL);

    /* Another replica has claimed the reminder and not yet applied it. */
    values[0] = customer;
    res = PQexec(holder, "BEGIN");
    assert_int_equal(PQresultStatus(res), PGRES_COMMAND_OK);
    PQclear(res);
    res = PQexecParams(holder, sql_hold, 1, NULL, values, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    assert_int_equal(PQntuples(res), 1);
    PQclear(res);

    /* The conversion and the termination wait for it, in order. */
    assert_int_equal(claim_due(store, arena, base + 30 * DAY_MS, &timers), 2);
    assert_claimed(&timers[0], customer, STORE_TIMER_TRIAL_CONVERSION,
                   STORE_TIMER_DEFERRED, true);
    assert_claimed(&timers[1], customer, STORE_TIMER_TERMINATION,
                   STORE_TIMER_DEFERRED, true);
    check_ok(store_batch_finish(store, NULL, 0, &err), &err);
    assert_int_equal(query_num("SELECT count(*) FROM timers WHERE "
                               "customer_id = $1 AND fired_at IS NULL",
                               1, customer),
                     3);
    assert_int_equal(query_num("SELECT count(*) FROM customers WHERE "
                               "customer_id = $1 AND status = 'TRIAL' "
                               "AND terminated_at IS NULL",
                               1, customer),
                     1);
    assert_int_equal(query_num("SELECT count(*) FROM customer_domains WHERE "
                               "customer_id = $1 AND released_at IS NULL",
                               1, customer),
                     1);
    assert_int_equal(query_num("SELECT count(*) FROM terminations WHERE "
                               "customer_id = $1 AND applied_at IS NULL",
                               1, customer),
                     1);

    /* The holder gives up: all three fire, oldest first. */
    res = PQexec(holder, "ROLLBACK");
    assert_int_equal(PQresultStatus(res), PGRES_COMMAND_OK);
    PQclear(res);
    assert_int_equal(fire(store, codec, base + 30 * DAY_MS), 3);
    customer_events(codec, arena, customer, &ev);
    assert_int_equal(ev.count, 3);
    assert_int_equal(ev.recs[0].type, MW_REC_TRIAL_ENDING);
    assert_int_equal(ev.recs[1].type, MW_REC_TRIAL_CONVERTED);
    assert_int_equal(ev.recs[2].type, MW_REC_CUSTOMER_TERMINATED);
    assert_false(ev.recs[2].u.terminated.was_trial);
    PQfinish(holder);
    *state = NULL;
    codec_destroy(codec);
    store_destroy(store);
    arena_destroy(arena);
}

/* ---- cancelling a customer's timers ---- */

static void cancelled_trial_timers_never_fire(void **state)
{
    struct mw_arena *arena = arena_new();
    struct store *store = open_store();
    struct codec *codec = open_codec();
    struct mw_error err = {0};
    int64_t base = new_base(), cancelled = -1;
    const char *customer =
        create_customer(store, arena, MW_ACCOUNT_TRIAL, base, 14 * DAY_MS,
                        base + 11 * DAY_MS, NULL);
    struct events ev;

    (void)state;
    terminate(store, arena, customer, base + DAY_MS, base + 30 * DAY_MS);
    check_ok(store_timers_cancel(store, customer, true, base + 2 * DAY_MS,
                                 &cancelled, &err),
             &err);
    assert_int_equal(cancelled, 2);
    /* The reminder and the conversion are history; the termination waits. */
    assert_int_equal(
        query_num("SELECT count(*) FROM timer_history WHERE "
                  "customer_id = $1 AND cancelled AND kind <> "
                  "'TERMINATION' AND fired_at = mw_ms_to_ts($2)",
                  2, customer,
                  arena_printf(arena, "%lld", (long long)(base + 2 * DAY_MS))),
        2);
    assert_int_equal(query_num("SELECT count(*) FROM timers WHERE "
                               "customer_id = $1 AND kind = 'TERMINATION'",
                               1, customer),
                     1);
    /* Past the trial's end nothing fires; the termination at its time. */
    assert_int_equal(fire(store, codec, base + 20 * DAY_MS), 0);
    customer_events(codec, arena, customer, &ev);
    assert_int_equal(ev.count, 0);
    check_ok(store_timers_cancel(store, customer, true, base + 21 * DAY_MS,
                                 &cancelled, &err),
             &err);
    assert_int_equal(cancelled, 0);
    /* Every kind: the termination too. */
    check_ok(store_timers_cancel(store, customer, false, base + 21 * DAY_MS,
                                 &cancelled, &err),
             &err);
    assert_int_equal(cancelled, 1);
    assert_int_equal(fire(store, codec, base + 31 * DAY_MS), 0);
    assert_int_equal(query_num("SELECT count(*) FROM timers WHERE "
                               "customer_id = $1",
                               1, customer),
                     0);
    /* Not a customer id: an error naming it, nothing changed. */
    assert_int_equal(
        store_timers_cancel(store, "not-a-uuid", false, base, &cancelled, &err),
        -1);
    assert_non_null(strstr(err.detail, "not-a-uuid"));
    codec_destroy(codec);
    store_destroy(store);
    arena_destroy(arena);
}

/* ---- operators ---- */

static void pending_and_describe_show_the_timers(void **state)
{
    struct mw_arena *arena = arena_new();
    struct store *store = open_store();
    struct codec *codec = open_codec();
    struct mw_error err = {0};
    int64_t base = new_base();
    const char *domain;
    const char *customer =
        create_customer(store, arena, MW_ACCOUNT_TRIAL, base, 14 * DAY_MS,
                        base + 11 * DAY_MS, &domain);
    int64_t due_count, next_due;
    char *json = NULL, upper[300];

    (void)state;
    fire(store, codec, base);
    check_ok(store_timers_pending(store, base + 12 * DAY_MS, &due_count,
                                  &next_due, &err),
             &err);
    assert_int_equal(due_count, 1);
    assert_int_equal(next_due, base + 11 * DAY_MS);

    assert_int_equal(store_customer_describe(store, customer, &json, &err), 1);
    assert_non_null(strstr(json, "\"TRIAL_ENDING\""));
    assert_non_null(strstr(json, "\"TRIAL_CONVERSION\""));
    assert_non_null(strstr(json, "\"status\": \"TRIAL\""));
    assert_non_null(strstr(json, domain));
    free(json);
    json = NULL;
    /* By domain, as typed by a person. */
    snprintf(upper, sizeof(upper), "%s.", domain);
    for (char *p = upper; *p; p++) {
        if (*p >= 'a' && *p <= 'z')
            *p = (char)(*p - 'a' + 'A');
    }
    assert_int_equal(store_customer_describe(store, upper, &json, &err), 1);
    assert_non_null(strstr(json, customer));
    free(json);
    json = NULL;
    assert_int_equal(
        store_customer_describe(store, "nobody.example", &json, &err), 0);
    assert_null(json);
    (void)query_text;
    codec_destroy(codec);
    store_destroy(store);
    arena_destroy(arena);
}

static int group_setup(void **state)
{
    struct mw_error err = {0};
    struct store *store;
    int rc;

    (void)state;
    db_url = getenv("MW_TEST_DATABASE_URL");
    if (db_url == NULL) {
        fprintf(stderr, "MW_TEST_DATABASE_URL is not set; "
                        "run under tests/with-postgres.sh\n");
        return -1;
    }
    snprintf(run_tag, sizeof(run_tag), "l%lx%x", (long)time(NULL),
             (unsigned)getpid());
    next_base = mw_now_ms();
    admin = PQconnectdb(db_url);
    if (PQstatus(admin) != CONNECTION_OK) {
        fprintf(stderr, "could not connect: %s", PQerrorMessage(admin));
        return -1;
    }
    store = store_new(db_url, &err);
    rc = store ? store_migrate(store, &err) : -1;
    if (rc != 0)
        mw_error_print(&err, "migrate");
    store_destroy(store);
    return rc;
}

static int group_teardown(void **state)
{
    (void)state;
    PQfinish(admin);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(trial_gets_conversion_and_reminder_timers),
        cmocka_unit_test(termination_writes_a_timer_and_notifies),
        cmocka_unit_test(due_trial_sends_reminder_then_converts_from_its_end),
        cmocka_unit_test(termination_before_trial_end_never_converts),
        cmocka_unit_test(termination_after_trial_end_lets_conversion_go_first),
        cmocka_unit_test(future_termination_fires_at_its_time_not_before),
        cmocka_unit_test(three_schedulers_fire_each_timer_once),
        cmocka_unit_test(claimed_timers_are_skipped_then_fired_after_a_crash),
        cmocka_unit_test(conversion_then_termination_in_one_batch_both_apply),
        cmocka_unit_test(termination_then_conversion_in_one_batch_cancels_it),
        cmocka_unit_test(termination_cancels_timers_not_due_yet),
        cmocka_unit_test_teardown(timers_behind_a_held_timer_are_deferred,
                                  close_holder),
        cmocka_unit_test(cancelled_trial_timers_never_fire),
        cmocka_unit_test(pending_and_describe_show_the_timers),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
