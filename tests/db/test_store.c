/*
 * The store against a real PostgreSQL (tests/with-postgres.sh provides
 * one in MW_TEST_DATABASE_URL): migrations, the claim of requests and
 * terminations and updates with its idempotency and domain rules,
 * concurrency between
 * connections, the outbox and the relay's queries.  Every test names its
 * rows with a tag of its own, so tests share one database and run in any
 * order; rows are checked with plain SQL, not through the store.
 */
#include "arena.h"
#include "embedded_files.h"
#include "error.h"
#include "ids.h"
#include "mw.h"
#include "rules.h"
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

static const char *db_url;
static PGconn *admin;
/* Runs of at least this many requests are claimed by COPY; 0: the
 * store's default.  The claim tests run twice: as the worker runs, and
 * with every run that may go by COPY going by COPY. */
static size_t copy_min_run;
static char run_tag[24];
static int tag_counter;

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
    if (copy_min_run > 0)
        store_set_copy_min_run(store, copy_min_run);
    return store;
}

/* A fresh lower-case tag, usable in request ids and domain labels. */
static const char *new_tag(struct mw_arena *arena)
{
    return arena_printf(arena, "%s-%d", run_tag, ++tag_counter);
}

/* Runs sql with text parameters and returns the first column of the first
 * row as a number (0 for null). */
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

/* Same, returning the text of the first column into arena (NULL for no
 * row or null). */
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
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        fprintf(stderr, "query failed: %s: %s\n", sql, PQerrorMessage(admin));
    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    if (PQntuples(res) > 0 && !PQgetisnull(res, 0, 0))
        s = arena_strdup(arena, PQgetvalue(res, 0, 0));
    PQclear(res);
    return s;
}

static void admin_exec(const char *sql, int nparams, ...)
{
    const char *values[8];
    va_list ap;
    PGresult *res;

    va_start(ap, nparams);
    for (int i = 0; i < nparams; i++)
        values[i] = va_arg(ap, const char *);
    va_end(ap);
    res = PQexecParams(admin, sql, nparams, NULL, values, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK &&
        PQresultStatus(res) != PGRES_TUPLES_OK)
        fprintf(stderr, "command failed: %s: %s\n", sql, PQerrorMessage(admin));
    assert_true(PQresultStatus(res) == PGRES_COMMAND_OK ||
                PQresultStatus(res) == PGRES_TUPLES_OK);
    PQclear(res);
}

/* A valid BUY_NOW request of msp "msp-<tag>" for primary (and one
 * additional domain when given). */
static struct mw_request *make_request(struct mw_arena *arena,
                                       const char *request_id,
                                       const char *msp_id, const char *primary,
                                       const char *additional)
{
    struct mw_request *r = arena_alloc(arena, sizeof(*r));
    const char **domains = arena_alloc(arena, sizeof(*domains));

    memset(r, 0, sizeof(*r));
    r->request_id = request_id;
    r->requested_at = mw_now_ms();
    r->requested_by = "admin@msp.example";
    r->msp_id = msp_id;
    r->msp_domain = "msp.example";
    r->mail_platform = MW_PLATFORM_MICROSOFT_365;
    r->service = MW_SERVICE_MESH_GATEWAY;
    r->company_name = "Contoso \"Ltd\" \\ Straße";
    r->primary_domain = primary;
    if (additional != NULL) {
        domains[0] = additional;
        r->additional_domains = domains;
        r->additional_domains_count = 1;
    }
    r->delivery_destination = "mail.contoso.example:25";
    r->licenses = 25;
    r->default_admin_email = "postmaster@contoso.example";
    r->apply_global_rules = true;
    r->msp_management = true;
    r->account_type = MW_ACCOUNT_BUY_NOW;
    return r;
}

/* Fills item for request; the payload hash is derived from seed. */
static void make_item(struct mw_arena *arena, struct store_item *item,
                      const struct mw_request *request, int seed)
{
    char *customer_id = arena_alloc(arena, IDS_UUID_LEN + 1);

    memset(item, 0, sizeof(*item));
    ids_customer_id(request->request_id, customer_id);
    item->kind = STORE_ITEM_REQUEST;
    item->request = request;
    item->is_valid = true;
    memset(item->payload_hash, seed, sizeof(item->payload_hash));
    item->customer_id = customer_id;
    item->occurred_at = mw_now_ms();
    item->trial_ends_at = item->occurred_at + 14 * DAY_MS;
    item->traceparent =
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
}

static void make_termination_item(struct mw_arena *arena,
                                  struct store_item *item,
                                  const char *request_id, const char *msp_id,
                                  const char *customer_id,
                                  const int64_t *effective_at)
{
    struct mw_termination_request *t = arena_alloc(arena, sizeof(*t));

    memset(t, 0, sizeof(*t));
    t->request_id = request_id;
    t->requested_at = mw_now_ms();
    t->requested_by = "admin@msp.example";
    t->msp_id = msp_id;
    t->customer_id = customer_id;
    if (effective_at != NULL) {
        t->has_effective_at = true;
        t->effective_at = *effective_at;
    }
    memset(item, 0, sizeof(*item));
    item->kind = STORE_ITEM_TERMINATION;
    item->termination = t;
    memset(item->payload_hash, 0x77, sizeof(item->payload_hash));
    item->occurred_at = mw_now_ms();
}

/* Claims items in one batch and commits it without outbox rows. */
static void claim_and_commit(struct store *store, struct store_item *items,
                             size_t count, struct mw_arena *arena)
{
    struct mw_error err = {0};

    check_ok(store_batch_claim(store, items, count, arena, &err), &err);
    check_ok(store_batch_finish(store, NULL, 0, &err), &err);
}

/* Creates one customer and returns its id. */
static const char *create_customer(struct store *store, struct mw_arena *arena,
                                   const char *msp_id, int account_type)
{
    const char *tag = new_tag(arena);
    struct mw_request *r =
        make_request(arena, arena_printf(arena, "req-%s", tag), msp_id,
                     arena_printf(arena, "%s.example", tag), NULL);
    struct store_item item;

    r->account_type = account_type;
    make_item(arena, &item, r, 1);
    claim_and_commit(store, &item, 1, arena);
    assert_int_equal(item.outcome, STORE_CREATED);
    return item.customer_id;
}

static int count_migrations(void)
{
    int n = 0;

    for (const struct mw_embedded_file *f = mw_embedded_files; f->kind; f++)
        n += strcmp(f->kind, "migration") == 0;
    return n;
}

/* ---- migrations ---- */

static void migrate_twice_is_a_noop(void **state)
{
    struct mw_arena *arena = arena_new();
    struct store *store = open_store();
    struct mw_error err = {0};
    char *before, *after;

    (void)state;
    before = query_text(arena,
                        "SELECT max(applied_at)::text "
                        "FROM schema_migrations",
                        0);
    check_ok(store_migrate(store, &err), &err);
    check_ok(store_migrate(store, &err), &err);
    after = query_text(arena,
                       "SELECT max(applied_at)::text "
                       "FROM schema_migrations",
                       0);
    assert_int_equal(query_num("SELECT count(*) FROM schema_migrations", 0),
                     count_migrations());
    assert_string_equal(before, after);
    store_destroy(store);
    arena_destroy(arena);
}

/*
 * The schema check reads and changes nothing: with the last migration's
 * row gone it names that migration and says the owner may apply it.
 */
static void schema_check_names_the_first_missing_migration(void **state)
{
    struct mw_arena *arena = arena_new();
    struct store *store = open_store();
    struct mw_error err = {0};
    struct store_replication replication;
    bool may_migrate = false;
    char *last, *detail;

    (void)state;
    assert_int_equal(store_schema_check(store, &may_migrate, &err), 0);
    last = query_text(arena,
                      "SELECT name FROM schema_migrations "
                      "ORDER BY version DESC LIMIT 1",
                      0);
    admin_exec("CREATE TABLE saved_migration AS SELECT * FROM "
               "schema_migrations WHERE name = $1",
               1, last);
    admin_exec("DELETE FROM schema_migrations WHERE name = $1", 1, last);

    assert_int_equal(store_schema_check(store, &may_migrate, &err), 1);
    assert_false(err.retriable);
    assert_string_equal(err.msg, "database schema is not up to date");
    detail =
        arena_printf(arena, "1 migration not applied, the first \"%s\"", last);
    assert_non_null(strstr(err.detail, detail));
    assert_true(may_migrate); /* the tests' login owns the schema */

    admin_exec("INSERT INTO schema_migrations SELECT * FROM saved_migration",
               0);
    admin_exec("DROP TABLE saved_migration", 0);
    assert_int_equal(store_schema_check(store, &may_migrate, &err), 0);

    /* A lone server has no standby to wait for. */
    check_ok(store_replication_check(store, &replication, &err), &err);
    assert_int_equal(replication.standbys, 0);
    assert_false(replication.is_synchronous);
    assert_string_equal(replication.standby_names, "");
    store_destroy(store);
    arena_destroy(arena);
}

struct migrate_thread {
    const char *url;
    pthread_barrier_t *barrier;
    int rc;
    struct mw_error err;
};

static void *migrate_main(void *arg)
{
    struct migrate_thread *t = arg;
    struct store *store = store_new(t->url, &t->err);

    pthread_barrier_wait(t->barrier);
    t->rc = store ? store_migrate(store, &t->err) : -1;
    store_destroy(store);
    return NULL;
}

static void concurrent_migrations_apply_each_once(void **state)
{
    struct mw_arena *arena = arena_new();
    const char *db = arena_printf(arena, "mw_migrate_%d", (int)getpid());
    const char *url;
    char *slash, *base = arena_strdup(arena, db_url);
    pthread_barrier_t barrier;
    struct migrate_thread threads[4];
    pthread_t ids[4];
    PGconn *conn;
    PGresult *res;

    (void)state;
    /* CREATE DATABASE takes no parameters; the name is ours. */
    res = PQexec(admin, arena_printf(arena, "CREATE DATABASE %s", db));
    assert_int_equal(PQresultStatus(res), PGRES_COMMAND_OK);
    PQclear(res);
    slash = strrchr(base, '/');
    assert_non_null(slash);
    *slash = '\0';
    url = arena_printf(arena, "%s/%s", base, db);

    pthread_barrier_init(&barrier, NULL, 4);
    for (int i = 0; i < 4; i++) {
        memset(&threads[i], 0, sizeof(threads[i]));
        threads[i].url = url;
        threads[i].barrier = &barrier;
        assert_int_equal(
            pthread_create(&ids[i], NULL, migrate_main, &threads[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(ids[i], NULL);
        check_ok(threads[i].rc, &threads[i].err);
    }
    pthread_barrier_destroy(&barrier);

    conn = PQconnectdb(url);
    assert_int_equal(PQstatus(conn), CONNECTION_OK);
    res = PQexec(conn, "SELECT count(*), count(DISTINCT version) "
                       "FROM schema_migrations");
    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    assert_int_equal(atoi(PQgetvalue(res, 0, 0)), count_migrations());
    assert_int_equal(atoi(PQgetvalue(res, 0, 1)), count_migrations());
    PQclear(res);
    PQfinish(conn);
    res = PQexec(admin, arena_printf(arena, "DROP DATABASE %s", db));
    PQclear(res);
    arena_destroy(arena);
}

/* ---- claims ---- */

static void valid_request_is_created(void **state)
{
    struct mw_arena *arena = arena_new();
    struct store *store = open_store();
    const char *tag = new_tag(arena);
    const char *id = arena_printf(arena, "req-%s", tag);
    const char *primary = arena_printf(arena, "%s.example", tag);
    const char *extra = arena_printf(arena, "mail.%s.example", tag);
    struct mw_request *r = make_request(arena, id, "msp-a", primary, extra);
    struct store_item item;

    (void)state;
    make_item(arena, &item, r, 1);
    claim_and_commit(store, &item, 1, arena);
    assert_int_equal(item.outcome, STORE_CREATED);

    assert_int_equal(query_num("SELECT count(*) FROM customers "
                               "WHERE request_id = $1 AND customer_id = $2 "
                               "AND status = 'ACTIVE' AND billable "
                               "AND billing_starts_at = created_at "
                               "AND trial_ends_at IS NULL "
                               "AND additional_domains = ARRAY[$3] "
                               "AND company_name = $4 "
                               "AND mail_platform = 'MICROSOFT_365' "
                               "AND service = 'MESH_GATEWAY' "
                               "AND account_type = 'BUY_NOW' "
                               "AND licenses = 25 AND traceparent LIKE '00-%'",
                               4, id, item.customer_id, extra, r->company_name),
                     1);
    assert_int_equal(query_num("SELECT count(*) FROM customer_domains "
                               "WHERE customer_id = $1 "
                               "AND released_at IS NULL "
                               "AND is_primary = (domain = $2)",
                               2, item.customer_id, primary),
                     2);
    assert_int_equal(query_num("SELECT count(*) FROM requests "
                               "WHERE request_id = $1 AND kind = 'customer' "
                               "AND outcome = 'CREATED' AND customer_id = $2 "
                               "AND length(payload_hash) = 32",
                               2, id, item.customer_id),
                     1);
    store_destroy(store);
    arena_destroy(arena);
}

static void account_types_set_status_and_billing(void **state)
{
    struct mw_arena *arena = arena_new();
    struct store *store = open_store();
    const char *trial =
        create_customer(store, arena, "msp-a", MW_ACCOUNT_TRIAL);
    const char *nfr = create_customer(store, arena, "msp-a", MW_ACCOUNT_NFR);

    (void)state;
    assert_int_equal(query_num("SELECT count(*) FROM customers "
                               "WHERE customer_id = $1 AND status = 'TRIAL' "
                               "AND NOT billable "
                               "AND trial_ends_at = billing_starts_at "
                               "AND trial_ends_at - created_at "
                               "= interval '14 days'",
                               1, trial),
                     1);
    assert_int_equal(query_num("SELECT count(*) FROM customers "
                               "WHERE customer_id = $1 AND status = 'ACTIVE' "
                               "AND NOT billable "
                               "AND billing_starts_at IS NULL "
                               "AND trial_ends_at IS NULL",
                               1, nfr),
                     1);
    store_destroy(store);
    arena_destroy(arena);
}

static void redelivered_request_is_duplicate(void **state)
{
    struct mw_arena *arena = arena_new();
    struct store *store = open_store();
    const char *tag = new_tag(arena);
    const char *id = arena_printf(arena, "req-%s", tag);
    struct mw_request *r = make_request(
        arena, id, "msp-a", arena_printf(arena, "%s.example", tag), NULL);
    struct store_item item;

    (void)state;
    make_item(arena, &item, r, 1);
    claim_and_commit(store, &item, 1, arena);
    assert_int_equal(item.outcome, STORE_CREATED);
    make_item(arena, &item, r, 1);
    claim_and_commit(store, &item, 1, arena);
    assert_int_equal(item.outcome, STORE_DUPLICATE);
    assert_int_equal(query_num("SELECT count(*) FROM customers "
                               "WHERE request_id = $1",
                               1, id),
                     1);
    assert_int_equal(query_num("SELECT conflicts FROM requests "
                               "WHERE request_id = $1",
                               1, id),
                     0);
    store_destroy(store);
    arena_destroy(arena);
}

static void same_id_other_content_is_conflict(void **state)
{
    struct mw_arena *arena = arena_new();
    struct store *store = open_store();
    const char *tag = new_tag(arena);
    const char *id = arena_printf(arena, "req-%s", tag);
    const char *primary = arena_printf(arena, "%s.example", tag);
    struct mw_request *r = make_request(arena, id, "msp-a", primary, NULL);
    struct mw_request *other = make_request(
        arena, id, "msp-a", arena_printf(arena, "other.%s.example", tag), NULL);
    struct store_item item;

    (void)state;
    make_item(arena, &item, r, 1);
    claim_and_commit(store, &item, 1, arena);
    assert_int_equal(item.outcome, STORE_CREATED);
    other->company_name = "Someone Else";
    make_item(arena, &item, other, 2);
    claim_and_commit(store, &item, 1, arena);
    assert_int_equal(item.outcome, STORE_CONFLICT);

    assert_int_equal(query_num("SELECT conflicts FROM requests "
                               "WHERE request_id = $1 AND outcome = 'CREATED' "
                               "AND payload_hash = "
                               "decode(repeat('01', 32), 'hex')",
                               1, id),
                     1);
    assert_int_equal(query_num("SELECT count(*) FROM customers "
                               "WHERE request_id = $1 AND primary_domain = $2 "
                               "AND company_name <> 'Someone Else'",
                               2, id, primary),
                     1);
    assert_int_equal(query_num("SELECT count(*) FROM customer_domains "
                               "WHERE domain LIKE $1",
                               1, arena_printf(arena, "%%%s.example", tag)),
                     1);
    store_destroy(store);
    arena_destroy(arena);
}

static void second_request_in_batch_for_taken_domain_is_rejected(void **state)
{
    struct mw_arena *arena = arena_new();
    struct store *store = open_store();
    const char *tag = new_tag(arena);
    const char *shared = arena_printf(arena, "shared.%s.example", tag);
    const char *own = arena_printf(arena, "own.%s.example", tag);
    struct mw_request *first = make_request(
        arena, arena_printf(arena, "req-%s-1", tag), "msp-a", shared, NULL);
    struct mw_request *second = make_request(
        arena, arena_printf(arena, "req-%s-2", tag), "msp-b", own, shared);
    struct store_item items[2];

    (void)state;
    make_item(arena, &items[0], first, 1);
    make_item(arena, &items[1], second, 1);
    claim_and_commit(store, items, 2, arena);
    assert_int_equal(items[0].outcome, STORE_CREATED);
    assert_int_equal(items[1].outcome, STORE_REJECTED);
    assert_int_equal(items[1].taken_domains_count, 1);
    assert_string_equal(items[1].taken_domains[0], shared);

    assert_int_equal(query_num("SELECT count(*) FROM customers "
                               "WHERE request_id = $1",
                               1, second->request_id),
                     0);
    assert_int_equal(query_num("SELECT count(*) FROM customer_domains "
                               "WHERE domain = $1",
                               1, own),
                     0);
    assert_int_equal(query_num("SELECT count(*) FROM requests "
                               "WHERE request_id = $1 "
                               "AND outcome = 'REJECTED' "
                               "AND customer_id IS NULL",
                               1, second->request_id),
                     1);
    /* The untaken domain is free for the next request. */
    make_item(arena, &items[0],
              make_request(arena, arena_printf(arena, "req-%s-3", tag), "msp-b",
                           own, NULL),
              1);
    claim_and_commit(store, items, 1, arena);
    assert_int_equal(items[0].outcome, STORE_CREATED);
    store_destroy(store);
    arena_destroy(arena);
}

/*
 * Requests of one batch that want the same domain are claimed in order:
 * one rejected for another domain leaves the shared one to the next.
 */
static void shared_domain_of_rejected_request_goes_to_next(void **state)
{
    struct mw_arena *arena = arena_new();
    struct store *store = open_store();
    const char *tag = new_tag(arena);
    const char *held = arena_printf(arena, "held.%s.example", tag);
    const char *shared = arena_printf(arena, "shared.%s.example", tag);
    const char *own = arena_printf(arena, "own.%s.example", tag);
    struct store_item items[4];

    (void)state;
    make_item(arena, &items[0],
              make_request(arena, arena_printf(arena, "req-%s-0", tag), "msp-a",
                           held, NULL),
              1);
    claim_and_commit(store, items, 1, arena);
    assert_int_equal(items[0].outcome, STORE_CREATED);

    /* 1 wants held (taken) and shared; 2 wants shared; 3 wants shared and
     * its own domain, after 2 took shared; 0 is a bystander again. */
    make_item(arena, &items[0],
              make_request(arena, arena_printf(arena, "req-%s-1", tag), "msp-b",
                           shared, held),
              1);
    make_item(arena, &items[1],
              make_request(arena, arena_printf(arena, "req-%s-2", tag), "msp-b",
                           shared, NULL),
              1);
    make_item(arena, &items[2],
              make_request(arena, arena_printf(arena, "req-%s-3", tag), "msp-b",
                           own, shared),
              1);
    make_item(arena, &items[3],
              make_request(arena, arena_printf(arena, "req-%s-4", tag), "msp-b",
                           arena_printf(arena, "x.%s.example", tag), NULL),
              1);
    claim_and_commit(store, items, 4, arena);

    assert_int_equal(items[0].outcome, STORE_REJECTED);
    assert_int_equal(items[0].taken_domains_count, 1);
    assert_string_equal(items[0].taken_domains[0], held);
    assert_int_equal(items[1].outcome, STORE_CREATED);
    assert_int_equal(items[2].outcome, STORE_REJECTED);
    assert_int_equal(items[2].taken_domains_count, 1);
    assert_string_equal(items[2].taken_domains[0], shared);
    assert_int_equal(items[3].outcome, STORE_CREATED);
    assert_int_equal(query_num("SELECT count(*) FROM customer_domains "
                               "WHERE domain = $1 AND customer_id = $2",
                               2, shared, items[1].customer_id),
                     1);
    assert_int_equal(query_num("SELECT count(*) FROM customer_domains "
                               "WHERE domain = $1",
                               1, own),
                     0);
    store_destroy(store);
    arena_destroy(arena);
}

/* Every taken domain is listed, primary first, then in request order. */
static void taken_domains_are_listed_in_request_order(void **state)
{
    struct mw_arena *arena = arena_new();
    struct store *store = open_store();
    const char *tag = new_tag(arena);
    const char *a = arena_printf(arena, "a.%s.example", tag);
    const char *b = arena_printf(arena, "b.%s.example", tag);
    const char *c = arena_printf(arena, "c.%s.example", tag);
    const char *d = arena_printf(arena, "d.%s.example", tag);
    struct mw_request *r;
    struct store_item items[2];
    const char **extra = arena_alloc(arena, 3 * sizeof(*extra));

    (void)state;
    make_item(arena, &items[0],
              make_request(arena, arena_printf(arena, "req-%s-1", tag), "msp-a",
                           d, b),
              1);
    claim_and_commit(store, items, 1, arena);
    assert_int_equal(items[0].outcome, STORE_CREATED);

    r = make_request(arena, arena_printf(arena, "req-%s-2", tag), "msp-b", d,
                     NULL);
    extra[0] = c;
    extra[1] = b;
    extra[2] = d; /* the primary again: listed once */
    r->additional_domains = extra;
    r->additional_domains_count = 3;
    make_item(arena, &items[0], r, 1);
    make_item(arena, &items[1],
              make_request(arena, arena_printf(arena, "req-%s-3", tag), "msp-b",
                           a, NULL),
              1);
    claim_and_commit(store, items, 2, arena);

    assert_int_equal(items[0].outcome, STORE_REJECTED);
    assert_int_equal(items[0].taken_domains_count, 2);
    assert_string_equal(items[0].taken_domains[0], d);
    assert_string_equal(items[0].taken_domains[1], b);
    assert_int_equal(items[1].outcome, STORE_CREATED);
    assert_int_equal(query_num("SELECT count(*) FROM customer_domains "
                               "WHERE domain = $1",
                               1, c),
                     0);
    store_destroy(store);
    arena_destroy(arena);
}

/* Repeats of a request id within one batch, with and without changes. */
static void repeats_in_one_batch_are_duplicate_or_conflict(void **state)
{
    struct mw_arena *arena = arena_new();
    struct store *store = open_store();
    const char *tag = new_tag(arena);
    const char *id = arena_printf(arena, "req-%s", tag);
    const char *primary = arena_printf(arena, "%s.example", tag);
    struct mw_request *r = make_request(arena, id, "msp-a", primary, NULL);
    struct mw_request *other = make_request(
        arena, id, "msp-a", arena_printf(arena, "o.%s.example", tag), NULL);
    struct store_item items[4];

    (void)state;
    make_item(arena, &items[0], r, 1);
    make_item(arena, &items[1], other, 2);
    make_item(arena, &items[2], r, 1);
    make_item(arena, &items[3], other, 2);
    claim_and_commit(store, items, 4, arena);

    assert_int_equal(items[0].outcome, STORE_CREATED);
    assert_int_equal(items[1].outcome, STORE_CONFLICT);
    assert_int_equal(items[2].outcome, STORE_DUPLICATE);
    assert_int_equal(items[3].outcome, STORE_CONFLICT);
    assert_int_equal(query_num("SELECT conflicts FROM requests "
                               "WHERE request_id = $1",
                               1, id),
                     2);
    assert_int_equal(query_num("SELECT count(*) FROM customer_domains "
                               "WHERE customer_id = $1",
                               1, items[0].customer_id),
                     1);
    store_destroy(store);
    arena_destroy(arena);
}

/*
 * A termination in a batch sees exactly the customers created before it
 * in the batch, as when the batch's messages are claimed one by one.
 */
static void termination_sees_customers_created_before_it(void **state)
{
    struct mw_arena *arena = arena_new();
    struct store *store = open_store();
    const char *tag = new_tag(arena);
    struct mw_request *r =
        make_request(arena, arena_printf(arena, "req-%s", tag), "msp-t",
                     arena_printf(arena, "%s.example", tag), NULL);
    char customer[IDS_UUID_LEN + 1];
    struct store_item items[4];

    (void)state;
    ids_customer_id(r->request_id, customer);
    make_termination_item(arena, &items[0],
                          arena_printf(arena, "term-%s-1", tag), "msp-t",
                          customer, NULL);
    make_item(arena, &items[1], r, 1);
    memset(&items[2], 0, sizeof(items[2]));
    items[2].kind = STORE_ITEM_DLQ;
    make_termination_item(arena, &items[3],
                          arena_printf(arena, "term-%s-2", tag), "msp-t",
                          customer, NULL);
    claim_and_commit(store, items, 4, arena);

    assert_int_equal(items[0].outcome, STORE_REJECTED);
    assert_int_equal(items[0].termination_code, MW_REJ_UNKNOWN_CUSTOMER);
    assert_int_equal(items[1].outcome, STORE_CREATED);
    assert_int_equal(items[2].outcome, STORE_DLQ);
    assert_int_equal(items[3].outcome, STORE_SCHEDULED);
    store_destroy(store);
    arena_destroy(arena);
}

static void released_domain_can_be_taken_again(void **state)
{
    struct mw_arena *arena = arena_new();
    struct store *store = open_store();
    const char *tag = new_tag(arena);
    const char *domain = arena_printf(arena, "%s.example", tag);
    struct store_item item;

    (void)state;
    make_item(arena, &item,
              make_request(arena, arena_printf(arena, "req-%s-1", tag), "msp-a",
                           domain, NULL),
              1);
    claim_and_commit(store, &item, 1, arena);
    assert_int_equal(item.outcome, STORE_CREATED);

    /* What the lifecycle does when the termination takes effect. */
    admin_exec("UPDATE customers SET status = 'TERMINATED', "
               "terminated_at = now() WHERE customer_id = $1",
               1, item.customer_id);
    admin_exec("UPDATE customer_domains SET released_at = now() "
               "WHERE customer_id = $1",
               1, item.customer_id);

    make_item(arena, &item,
              make_request(arena, arena_printf(arena, "req-%s-2", tag), "msp-b",
                           domain, NULL),
              1);
    claim_and_commit(store, &item, 1, arena);
    assert_int_equal(item.outcome, STORE_CREATED);
    assert_int_equal(query_num("SELECT count(*) FROM customer_domains "
                               "WHERE domain = $1",
                               1, domain),
                     2);
    store_destroy(store);
    arena_destroy(arena);
}

static void rule_rejected_request_is_recorded_without_customer(void **state)
{
    struct mw_arena *arena = arena_new();
    struct store *store = open_store();
    const char *tag = new_tag(arena);
    const char *id = arena_printf(arena, "req-%s", tag);
    struct mw_request *r = make_request(
        arena, id, "msp-a", arena_printf(arena, "%s.example", tag), NULL);
    struct store_item items[3];

    (void)state;
    r->mail_platform = 99; /* invalid requests may hold anything */
    r->msp_id = "\xff\xfe not utf-8";
    make_item(arena, &items[0], r, 1);
    items[0].is_valid = false;
    items[0].traceparent = "\xc3\x28";
    memset(&items[1], 0, sizeof(items[1]));
    items[1].kind = STORE_ITEM_DLQ;
    make_item(arena, &items[2],
              make_request(arena, "bad-\xc3\x28-id", "msp-a",
                           arena_printf(arena, "x.%s.example", tag), NULL),
              1);
    items[2].is_valid = false;
    claim_and_commit(store, items, 3, arena);
    assert_int_equal(items[0].outcome, STORE_REJECTED);
    assert_int_equal(items[0].taken_domains_count, 0);
    assert_int_equal(items[1].outcome, STORE_DLQ);
    assert_int_equal(items[2].outcome, STORE_REJECTED);
    assert_int_equal(query_num("SELECT count(*) FROM customers "
                               "WHERE request_id = $1",
                               1, id),
                     0);
    assert_int_equal(query_num("SELECT count(*) FROM requests "
                               "WHERE request_id = $1 "
                               "AND outcome = 'REJECTED' AND msp_id IS NULL",
                               1, id),
                     1);
    /* A redelivery is a duplicate of the rejection. */
    make_item(arena, &items[0], r, 1);
    items[0].is_valid = false;
    claim_and_commit(store, items, 1, arena);
    assert_int_equal(items[0].outcome, STORE_DUPLICATE);
    store_destroy(store);
    arena_destroy(arena);
}

static void aborted_batch_leaves_nothing(void **state)
{
    struct mw_arena *arena = arena_new();
    struct store *store = open_store();
    const char *tag = new_tag(arena);
    const char *id = arena_printf(arena, "req-%s", tag);
    struct mw_request *r = make_request(
        arena, id, "msp-a", arena_printf(arena, "%s.example", tag), NULL);
    struct store_item item;
    struct mw_error err = {0};

    (void)state;
    make_item(arena, &item, r, 1);
    check_ok(store_batch_claim(store, &item, 1, arena, &err), &err);
    assert_int_equal(item.outcome, STORE_CREATED);
    store_batch_abort(store);
    assert_int_equal(query_num("SELECT count(*) FROM requests "
                               "WHERE request_id = $1",
                               1, id),
                     0);
    claim_and_commit(store, &item, 1, arena);
    assert_int_equal(item.outcome, STORE_CREATED);
    store_destroy(store);
    arena_destroy(arena);
}

/* ---- updates ---- */

/* What an update item needs beside the request: its judge's outputs. */
struct update_slot {
    struct mw_update_request update;
    struct mw_rejection rejection;
    struct mw_changes changes;
};

/*
 * Fills item with the update of slot (request id, MSP and customer set,
 * nothing to change yet); the payload hash is derived from seed.
 */
static void make_update_item(struct store_item *item, struct update_slot *slot,
                             const char *request_id, const char *msp_id,
                             const char *customer_id, int seed)
{
    memset(&slot->update, 0, sizeof(slot->update));
    slot->update.request_id = request_id;
    slot->update.requested_at = mw_now_ms();
    slot->update.requested_by = "admin@msp.example";
    slot->update.msp_id = msp_id;
    slot->update.customer_id = customer_id;
    slot->update.observed_at = mw_now_ms();
    memset(item, 0, sizeof(*item));
    item->kind = STORE_ITEM_UPDATE;
    item->update = &slot->update;
    item->judge = rules_apply_update;
    item->update_rejection = &slot->rejection;
    item->changes = &slot->changes;
    memset(item->payload_hash, seed, sizeof(item->payload_hash));
    item->occurred_at = mw_now_ms();
}

struct claim_thread {
    const char *url;
    pthread_barrier_t *barrier;
    struct store_item item;
    struct update_slot slot; /* an update item's */
    int rc;
    struct mw_error err;
    /* item.taken_domains lives in the thread's arena: a copy of it */
    size_t taken_count;
    char taken[MW_MAX_DOMAIN + 1];
};

/* Claims, holds the transaction open a moment so that the other thread
 * runs into it, then commits. */
static void *claim_main(void *arg)
{
    struct claim_thread *t = arg;
    struct store *store = store_new(t->url, &t->err);
    struct mw_arena *arena = arena_new();
    struct timespec hold = {0, 200 * 1000 * 1000};

    pthread_barrier_wait(t->barrier);
    t->rc = -1;
    if (store != NULL &&
        store_batch_claim(store, &t->item, 1, arena, &t->err) == 0) {
        t->taken_count = t->item.taken_domains_count;
        if (t->taken_count > 0)
            snprintf(t->taken, sizeof(t->taken), "%s",
                     t->item.taken_domains[0]);
        t->item.taken_domains = NULL;
        nanosleep(&hold, NULL);
        t->rc = store_batch_finish(store, NULL, 0, &t->err);
    }
    store_destroy(store);
    arena_destroy(arena);
    return NULL;
}

static void run_claim_threads(struct claim_thread threads[2])
{
    pthread_barrier_t barrier;
    pthread_t ids[2];

    pthread_barrier_init(&barrier, NULL, 2);
    for (int i = 0; i < 2; i++) {
        threads[i].url = db_url;
        threads[i].barrier = &barrier;
        assert_int_equal(pthread_create(&ids[i], NULL, claim_main, &threads[i]),
                         0);
    }
    for (int i = 0; i < 2; i++) {
        pthread_join(ids[i], NULL);
        check_ok(threads[i].rc, &threads[i].err);
    }
    pthread_barrier_destroy(&barrier);
}

static void concurrent_claims_of_one_request_create_once(void **state)
{
    struct mw_arena *arena = arena_new();
    const char *tag = new_tag(arena);
    const char *id = arena_printf(arena, "req-%s", tag);
    struct mw_request *r = make_request(
        arena, id, "msp-a", arena_printf(arena, "%s.example", tag), NULL);
    struct claim_thread threads[2];
    int created = 0, duplicate = 0;

    (void)state;
    memset(threads, 0, sizeof(threads));
    make_item(arena, &threads[0].item, r, 1);
    make_item(arena, &threads[1].item, r, 1);
    run_claim_threads(threads);
    for (int i = 0; i < 2; i++) {
        created += threads[i].item.outcome == STORE_CREATED;
        duplicate += threads[i].item.outcome == STORE_DUPLICATE;
    }
    assert_int_equal(created, 1);
    assert_int_equal(duplicate, 1);
    assert_int_equal(query_num("SELECT count(*) FROM customers "
                               "WHERE request_id = $1",
                               1, id),
                     1);
    arena_destroy(arena);
}

static void concurrent_claims_of_one_domain_create_once(void **state)
{
    struct mw_arena *arena = arena_new();
    const char *tag = new_tag(arena);
    const char *domain = arena_printf(arena, "%s.example", tag);
    struct claim_thread threads[2];
    int created = 0, rejected = 0;

    (void)state;
    memset(threads, 0, sizeof(threads));
    for (int i = 0; i < 2; i++)
        make_item(arena, &threads[i].item,
                  make_request(arena, arena_printf(arena, "req-%s-%d", tag, i),
                               "msp-a", domain, NULL),
                  1);
    run_claim_threads(threads);
    for (int i = 0; i < 2; i++) {
        const struct store_item *item = &threads[i].item;

        created += item->outcome == STORE_CREATED;
        if (item->outcome == STORE_REJECTED) {
            rejected++;
            assert_int_equal(threads[i].taken_count, 1);
            assert_string_equal(threads[i].taken, domain);
        }
    }
    assert_int_equal(created, 1);
    assert_int_equal(rejected, 1);
    assert_int_equal(query_num("SELECT count(*) FROM customer_domains "
                               "WHERE domain = $1",
                               1, domain),
                     1);
    arena_destroy(arena);
}

/* Two replicas add one domain to two customers: exactly one wins. */
static void concurrent_updates_adding_one_domain_apply_once(void **state)
{
    struct mw_arena *arena = arena_new();
    struct store *store = open_store();
    const char *tag = new_tag(arena);
    const char *domain = arena_printf(arena, "race-%s.example", tag);
    struct claim_thread threads[2];
    int updated = 0, rejected = 0;

    (void)state;
    memset(threads, 0, sizeof(threads));
    for (int i = 0; i < 2; i++) {
        const char *customer =
            create_customer(store, arena, "msp-r", MW_ACCOUNT_BUY_NOW);

        make_update_item(&threads[i].item, &threads[i].slot,
                         arena_printf(arena, "race-%s-%d", tag, i), "msp-r",
                         customer, 1);
        threads[i].slot.update.add_domains = &domain;
        threads[i].slot.update.add_domains_count = 1;
    }
    run_claim_threads(threads);
    for (int i = 0; i < 2; i++) {
        updated += threads[i].item.outcome == STORE_UPDATED;
        if (threads[i].item.outcome == STORE_REJECTED) {
            rejected++;
            assert_int_equal(threads[i].slot.rejection.errors[0].code,
                             MW_REJ_DOMAIN_ALREADY_PROVISIONED);
        }
    }
    assert_int_equal(updated, 1);
    assert_int_equal(rejected, 1);
    assert_int_equal(query_num("SELECT count(*) FROM customer_domains "
                               "WHERE domain = $1",
                               1, domain),
                     1);
    store_destroy(store);
    arena_destroy(arena);
}

static void termination_outcomes(void **state)
{
    struct mw_arena *arena = arena_new();
    struct store *store = open_store();
    const char *tag = new_tag(arena);
    const char *customer =
        create_customer(store, arena, "msp-t", MW_ACCOUNT_TRIAL);
    const char *active =
        create_customer(store, arena, "msp-t", MW_ACCOUNT_BUY_NOW);
    char unknown[IDS_UUID_LEN + 1];
    int64_t future = mw_now_ms() + 30 * DAY_MS;
    int64_t past = mw_now_ms() - DAY_MS;
    struct store_item items[6];

    (void)state;
    ids_uuid_v5(tag, strlen(tag), unknown);
    make_termination_item(arena, &items[0],
                          arena_printf(arena, "term-%s-1", tag), "msp-t",
                          unknown, NULL);
    make_termination_item(arena, &items[1],
                          arena_printf(arena, "term-%s-2", tag), "msp-t",
                          "not-a-uuid", NULL);
    make_termination_item(arena, &items[2],
                          arena_printf(arena, "term-%s-3", tag), "msp-other",
                          customer, NULL);
    make_termination_item(arena, &items[3],
                          arena_printf(arena, "term-%s-4", tag), "msp-t",
                          customer, &past);
    make_termination_item(arena, &items[4],
                          arena_printf(arena, "term-%s-5", tag), "msp-t",
                          customer, NULL);
    make_termination_item(arena, &items[5],
                          arena_printf(arena, "term-%s-6", tag), "msp-t",
                          active, &future);
    claim_and_commit(store, items, 6, arena);

    assert_int_equal(items[0].outcome, STORE_REJECTED);
    assert_int_equal(items[0].termination_code, MW_REJ_UNKNOWN_CUSTOMER);
    assert_int_equal(items[1].outcome, STORE_REJECTED);
    assert_int_equal(items[1].termination_code, MW_REJ_UNKNOWN_CUSTOMER);
    assert_int_equal(items[2].outcome, STORE_REJECTED);
    assert_int_equal(items[2].termination_code, MW_REJ_NOT_CUSTOMER_OWNER);
    assert_int_equal(items[3].outcome, STORE_SCHEDULED);
    /* A past effective time means now. */
    assert_int_equal(items[3].effective_at, items[3].occurred_at);
    assert_true(items[3].was_trial);
    assert_int_equal(items[4].outcome, STORE_REJECTED);
    assert_int_equal(items[4].termination_code, MW_REJ_ALREADY_TERMINATED);
    assert_int_equal(items[5].outcome, STORE_SCHEDULED);
    assert_int_equal(items[5].effective_at, future);
    assert_false(items[5].was_trial);

    assert_int_equal(query_num("SELECT count(*) FROM terminations "
                               "WHERE customer_id = $1 AND msp_id = 'msp-t' "
                               "AND applied_at IS NULL",
                               1, customer),
                     1);
    assert_int_equal(query_num("SELECT count(*) FROM requests "
                               "WHERE request_id LIKE $1 "
                               "AND kind = 'termination'",
                               1, arena_printf(arena, "term-%s-%%", tag)),
                     6);

    /* Redelivered: duplicate; same id other content: conflict. */
    make_termination_item(arena, &items[0],
                          arena_printf(arena, "term-%s-4", tag), "msp-t",
                          customer, &past);
    make_termination_item(arena, &items[1],
                          arena_printf(arena, "term-%s-6", tag), "msp-t",
                          active, NULL);
    memset(items[1].payload_hash, 0x78, sizeof(items[1].payload_hash));
    claim_and_commit(store, items, 2, arena);
    assert_int_equal(items[0].outcome, STORE_DUPLICATE);
    assert_int_equal(items[1].outcome, STORE_CONFLICT);

    /* A customer already terminated by the lifecycle. */
    admin_exec("UPDATE customers SET status = 'TERMINATED' "
               "WHERE customer_id = $1",
               1, active);
    admin_exec("DELETE FROM terminations WHERE customer_id = $1", 1, active);
    make_termination_item(arena, &items[0],
                          arena_printf(arena, "term-%s-7", tag), "msp-t",
                          active, NULL);
    claim_and_commit(store, items, 1, arena);
    assert_int_equal(items[0].outcome, STORE_REJECTED);
    assert_int_equal(items[0].termination_code, MW_REJ_ALREADY_TERMINATED);
    store_destroy(store);
    arena_destroy(arena);
}

struct batch_thread {
    const char *url;
    struct store_item *items;
    size_t count;
    int rc;
    struct mw_error err;
};

static void *batch_main(void *arg)
{
    struct batch_thread *t = arg;
    struct store *store = store_new(t->url, &t->err);
    struct mw_arena *arena = arena_new();

    t->rc = -1;
    if (store != NULL &&
        store_batch_claim(store, t->items, t->count, arena, &t->err) == 0)
        t->rc = store_batch_finish(store, NULL, 0, &t->err);
    store_destroy(store);
    arena_destroy(arena);
    return NULL;
}

/*
 * A batch that deadlocks with another transaction is rolled back by the
 * server (40P01) and run again by the store.  The other transaction holds
 * domain y and then asks for x while the batch holds x and waits for y.
 */
static void a_creation_then_its_update_in_one_batch_is_applied(void **state)
{
    struct mw_arena *arena = arena_new();
    struct store *store = open_store();
    const char *tag = new_tag(arena);
    const char *id = arena_printf(arena, "upd-%s", tag);
    const char *added = arena_printf(arena, "more-%s.example", tag);
    struct mw_request *r =
        make_request(arena, arena_printf(arena, "req-%s", tag), "msp-u",
                     arena_printf(arena, "%s.example", tag), NULL);
    struct update_slot slots[3];
    struct store_item items[4];

    (void)state;
    make_item(arena, &items[0], r, 1);
    make_update_item(&items[1], &slots[0], id, "msp-u", items[0].customer_id,
                     2);
    slots[0].update.has_licenses = true;
    slots[0].update.licenses = 30;
    slots[0].update.add_domains = &added;
    slots[0].update.add_domains_count = 1;
    make_update_item(&items[2], &slots[1], id, "msp-u", items[0].customer_id,
                     2);
    make_update_item(&items[3], &slots[2], id, "msp-u", items[0].customer_id,
                     3);
    claim_and_commit(store, items, 4, arena);
    assert_int_equal(items[0].outcome, STORE_CREATED);
    assert_int_equal(items[1].outcome, STORE_UPDATED);
    assert_int_equal(items[1].updated.licenses, 30);
    assert_int_equal(slots[0].changes.count, 2);
    assert_int_equal(items[2].outcome, STORE_DUPLICATE);
    assert_int_equal(items[3].outcome, STORE_CONFLICT);
    assert_int_equal(query_num("SELECT licenses FROM customers "
                               "WHERE customer_id = $1",
                               1, items[0].customer_id),
                     30);
    assert_int_equal(query_num("SELECT count(*) FROM customer_domains "
                               "WHERE domain = $1 AND customer_id = $2 "
                               "AND released_at IS NULL",
                               2, added, items[0].customer_id),
                     1);
    assert_int_equal(query_num("SELECT count(*) FROM requests "
                               "WHERE request_id = $1 AND kind = 'update' "
                               "AND outcome = 'UPDATED' AND conflicts = 1",
                               1, id),
                     1);
    assert_int_equal(query_num("SELECT jsonb_array_length(changes) FROM "
                               "customer_changes WHERE request_id = $1",
                               1, id),
                     2);
    store_destroy(store);
    arena_destroy(arena);
}

/* Claims one update in a batch of its own; returns its outcome. */
static enum store_outcome update_once(struct store *store,
                                      struct mw_arena *arena,
                                      struct store_item *item)
{
    claim_and_commit(store, item, 1, arena);
    return item->outcome;
}

static void an_older_sync_is_stale_and_changes_nothing(void **state)
{
    struct mw_arena *arena = arena_new();
    struct store *store = open_store();
    const char *tag = new_tag(arena);
    const char *customer =
        create_customer(store, arena, "msp-s", MW_ACCOUNT_BUY_NOW);
    int64_t now = mw_now_ms();
    struct update_slot slot;
    struct store_item item;

    (void)state;
    make_update_item(&item, &slot, arena_printf(arena, "sync-%s-1", tag),
                     "msp-s", customer, 1);
    slot.update.source = MW_SOURCE_M365_SYNC;
    slot.update.has_licenses = true;
    slot.update.licenses = 40;
    slot.update.observed_at = now;
    assert_int_equal(update_once(store, arena, &item), STORE_UPDATED);
    make_update_item(&item, &slot, arena_printf(arena, "sync-%s-2", tag),
                     "msp-s", customer, 2);
    slot.update.source = MW_SOURCE_M365_SYNC;
    slot.update.has_licenses = true;
    slot.update.licenses = 20;
    slot.update.observed_at = now - 60000;
    assert_int_equal(update_once(store, arena, &item), STORE_REJECTED);
    assert_int_equal(slot.rejection.count, 1);
    assert_int_equal(slot.rejection.errors[0].code, MW_REJ_STALE_UPDATE);
    assert_int_equal(query_num("SELECT licenses FROM customers "
                               "WHERE customer_id = $1",
                               1, customer),
                     40);
    store_destroy(store);
    arena_destroy(arena);
}

static void a_trial_bought_early_loses_its_timers(void **state)
{
    struct mw_arena *arena = arena_new();
    struct store *store = open_store();
    const char *tag = new_tag(arena);
    const char *customer =
        create_customer(store, arena, "msp-b", MW_ACCOUNT_TRIAL);
    struct update_slot slot;
    struct store_item item;

    (void)state;
    assert_true(query_num("SELECT count(*) FROM timers WHERE customer_id = $1",
                          1, customer) > 0);
    make_update_item(&item, &slot, arena_printf(arena, "buy-%s", tag), "msp-b",
                     customer, 1);
    slot.update.has_account_type = true;
    slot.update.account_type = MW_ACCOUNT_BUY_NOW;
    assert_int_equal(update_once(store, arena, &item), STORE_UPDATED);
    assert_true(item.is_bought);
    assert_int_equal(
        query_num("SELECT count(*) FROM timers WHERE customer_id = $1", 1,
                  customer),
        0);
    assert_int_equal(query_num("SELECT count(*) FROM customers "
                               "WHERE customer_id = $1 AND status = 'ACTIVE' "
                               "AND billable AND account_type = 'BUY_NOW'",
                               1, customer),
                     1);
    store_destroy(store);
    arena_destroy(arena);
}

static void an_update_sees_a_termination_before_it_only(void **state)
{
    struct mw_arena *arena = arena_new();
    struct store *store = open_store();
    const char *tag = new_tag(arena);
    const char *first =
        create_customer(store, arena, "msp-x", MW_ACCOUNT_BUY_NOW);
    const char *second =
        create_customer(store, arena, "msp-x", MW_ACCOUNT_BUY_NOW);
    struct update_slot slots[2];
    struct store_item items[4];

    (void)state;
    make_update_item(&items[0], &slots[0], arena_printf(arena, "u-%s-1", tag),
                     "msp-x", first, 1);
    slots[0].update.has_two_factor_required = true;
    slots[0].update.two_factor_required = true;
    make_termination_item(arena, &items[1], arena_printf(arena, "t-%s-1", tag),
                          "msp-x", first, NULL);
    make_termination_item(arena, &items[2], arena_printf(arena, "t-%s-2", tag),
                          "msp-x", second, NULL);
    make_update_item(&items[3], &slots[1], arena_printf(arena, "u-%s-2", tag),
                     "msp-x", second, 2);
    claim_and_commit(store, items, 4, arena);
    assert_int_equal(items[0].outcome, STORE_UPDATED);
    assert_int_equal(items[1].outcome, STORE_SCHEDULED);
    assert_int_equal(items[2].outcome, STORE_SCHEDULED);
    assert_int_equal(items[3].outcome, STORE_REJECTED);
    assert_int_equal(slots[1].rejection.errors[0].code,
                     MW_REJ_ALREADY_TERMINATED);
    store_destroy(store);
    arena_destroy(arena);
}

static void deadlocked_batch_is_retried(void **state)
{
    struct mw_arena *arena = arena_new();
    const char *tag = new_tag(arena);
    const char *x = arena_printf(arena, "x.%s.example", tag);
    const char *y = arena_printf(arena, "y.%s.example", tag);
    static const char sql_hold[] =
        "INSERT INTO customer_domains (domain, customer_id, is_primary) "
        "VALUES ($1, gen_random_uuid(), true)";
    struct timespec pause = {0, 300 * 1000 * 1000};
    struct store_item items[2];
    struct batch_thread thread = {0};
    pthread_t id;
    PGconn *other = PQconnectdb(db_url);
    PGresult *res;
    const char *values[1];

    (void)state;
    assert_int_equal(PQstatus(other), CONNECTION_OK);
    /* The batch's backend must be the one to detect the deadlock. */
    res = PQexec(other, "SET deadlock_timeout = '10s'");
    PQclear(res);
    res = PQexec(other, "BEGIN");
    PQclear(res);
    values[0] = y;
    res = PQexecParams(other, sql_hold, 1, NULL, values, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(res), PGRES_COMMAND_OK);
    PQclear(res);

    make_item(arena, &items[0],
              make_request(arena, arena_printf(arena, "req-%s-x", tag), "msp-a",
                           x, NULL),
              1);
    make_item(arena, &items[1],
              make_request(arena, arena_printf(arena, "req-%s-y", tag), "msp-a",
                           y, NULL),
              1);
    thread.url = db_url;
    thread.items = items;
    thread.count = 2;
    assert_int_equal(pthread_create(&id, NULL, batch_main, &thread), 0);
    nanosleep(&pause, NULL); /* the batch holds x and waits for y */

    values[0] = x;
    res = PQexecParams(other, sql_hold, 1, NULL, values, NULL, NULL, 0);
    /* Succeeds only once the batch has been rolled back. */
    assert_int_equal(PQresultStatus(res), PGRES_COMMAND_OK);
    PQclear(res);
    nanosleep(&pause, NULL);
    res = PQexec(other, "ROLLBACK");
    PQclear(res);
    PQfinish(other);

    pthread_join(id, NULL);
    check_ok(thread.rc, &thread.err);
    assert_int_equal(items[0].outcome, STORE_CREATED);
    assert_int_equal(items[1].outcome, STORE_CREATED);
    arena_destroy(arena);
}

/* Ends every other session of this database, as a failover would. */
static void terminate_other_sessions(void)
{
    admin_exec("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
               "WHERE pid <> pg_backend_pid() "
               "AND datname = current_database() "
               "AND backend_type = 'client backend'",
               0);
}

static void lost_connection_is_retriable_and_reconnects(void **state)
{
    struct mw_arena *arena = arena_new();
    struct store *store = open_store();
    const char *tag = new_tag(arena);
    const char *id = arena_printf(arena, "req-%s", tag);
    struct store_item item;
    struct mw_error err = {0};
    struct timespec pause = {0, 100 * 1000 * 1000};

    (void)state;
    check_ok(store_ping(store, &err), &err);
    terminate_other_sessions();
    nanosleep(&pause, NULL);
    assert_int_equal(store_ping(store, &err), -1);
    assert_true(err.retriable);
    check_ok(store_ping(store, &err), &err);

    /* A batch whose connection dies before the commit commits nothing,
     * and the store does not continue it on a new connection. */
    make_item(arena, &item,
              make_request(arena, id, "msp-a",
                           arena_printf(arena, "%s.example", tag), NULL),
              1);
    check_ok(store_batch_claim(store, &item, 1, arena, &err), &err);
    terminate_other_sessions();
    nanosleep(&pause, NULL);
    assert_int_equal(store_batch_finish(store, NULL, 0, &err), -1);
    assert_true(err.retriable);
    assert_int_equal(query_num("SELECT count(*) FROM requests "
                               "WHERE request_id = $1",
                               1, id),
                     0);
    claim_and_commit(store, &item, 1, arena);
    assert_int_equal(item.outcome, STORE_CREATED);
    store_destroy(store);
    arena_destroy(arena);
}

/* ---- outbox and relay ---- */

static struct store_outbox_row event_row(struct mw_arena *arena,
                                         const char *name)
{
    char *event_id = arena_alloc(arena, IDS_UUID_LEN + 1);
    struct store_outbox_row row = {0};

    ids_uuid_v5(name, strlen(name), event_id);
    row.stream = STORE_STREAM_EVENTS;
    row.event_id = event_id;
    row.key = name;
    row.key_len = strlen(name);
    row.headers = "h\0x";
    row.headers_len = 3;
    row.payload = arena_printf(arena, "payload of %s", name);
    row.payload_len = strlen(row.payload);
    return row;
}

static void finish_writes_outbox_rows_once(void **state)
{
    struct mw_arena *arena = arena_new();
    struct store *store = open_store();
    const char *tag = new_tag(arena);
    struct store_outbox_row rows[3];
    struct store_item item;
    struct mw_error err = {0};

    (void)state;
    make_item(arena, &item,
              make_request(arena, arena_printf(arena, "req-%s", tag), "msp-a",
                           arena_printf(arena, "%s.example", tag), NULL),
              1);
    rows[0] = event_row(arena, arena_printf(arena, "ev-%s-1", tag));
    rows[1] = event_row(arena, arena_printf(arena, "ev-%s-2", tag));
    memset(&rows[2], 0, sizeof(rows[2]));
    rows[2].stream = STORE_STREAM_DLQ;
    check_ok(store_batch_claim(store, &item, 1, arena, &err), &err);
    check_ok(store_batch_finish(store, rows, 3, &err), &err);
    assert_int_equal(query_num("SELECT count(*) FROM outbox "
                               "WHERE key = convert_to($1, 'UTF8') "
                               "AND stream = 0 AND headers = '\\x680078' "
                               "AND published_at IS NULL",
                               1, rows[0].key),
                     1);

    /* The batch again (a redelivery after a crash): events skipped, the
     * DLQ row has no event id and is written again. */
    check_ok(store_batch_claim(store, &item, 1, arena, &err), &err);
    assert_int_equal(item.outcome, STORE_DUPLICATE);
    check_ok(store_batch_finish(store, rows, 2, &err), &err);
    assert_int_equal(query_num("SELECT count(*) FROM outbox "
                               "WHERE event_id = ANY (ARRAY[$1, $2]::uuid[])",
                               2, rows[0].event_id, rows[1].event_id),
                     2);

    /* Outbox rows without a claim open their own transaction. */
    rows[0] = event_row(arena, arena_printf(arena, "ev-%s-3", tag));
    check_ok(store_batch_finish(store, rows, 1, &err), &err);
    assert_int_equal(query_num("SELECT count(*) FROM outbox "
                               "WHERE event_id = $1",
                               1, rows[0].event_id),
                     1);
    store_destroy(store);
    arena_destroy(arena);
}

static void fetch_returns_oldest_first_and_mark_hides_them(void **state)
{
    struct mw_arena *arena = arena_new();
    struct store *store = open_store();
    const char *tag = new_tag(arena);
    struct store_outbox_row rows[3];
    struct store_outbox_msg *msgs;
    size_t count;
    int64_t ids[2], backlog, age;
    struct mw_error err = {0};
    static const unsigned char dlq_payload[] = {0xC3, 0x01, 0x00, 0xFF};

    (void)state;
    /* Only this test's rows are unpublished from here on. */
    admin_exec("UPDATE outbox SET published_at = now() "
               "WHERE published_at IS NULL",
               0);
    check_ok(store_outbox_backlog(store, &backlog, &age, &err), &err);
    assert_int_equal(backlog, 0);
    assert_int_equal(age, 0);

    rows[0] = event_row(arena, arena_printf(arena, "ev-%s-1", tag));
    memset(&rows[1], 0, sizeof(rows[1]));
    rows[1].stream = STORE_STREAM_DLQ;
    rows[1].payload = dlq_payload;
    rows[1].payload_len = sizeof(dlq_payload);
    rows[1].headers = "";
    rows[1].headers_len = 0;
    rows[2] = event_row(arena, arena_printf(arena, "ev-%s-3", tag));
    check_ok(store_batch_finish(store, rows, 3, &err), &err);

    check_ok(store_outbox_backlog(store, &backlog, &age, &err), &err);
    assert_int_equal(backlog, 3);
    assert_true(age >= 0);

    check_ok(store_outbox_fetch(store, 10, arena, &msgs, &count, &err), &err);
    assert_int_equal(count, 3);
    assert_true(msgs[0].id < msgs[1].id && msgs[1].id < msgs[2].id);
    assert_int_equal(msgs[0].stream, STORE_STREAM_EVENTS);
    assert_int_equal(msgs[0].key_len, rows[0].key_len);
    assert_memory_equal(msgs[0].key, rows[0].key, rows[0].key_len);
    assert_int_equal(msgs[0].headers_len, 3);
    assert_memory_equal(msgs[0].headers, "h\0x", 3);
    assert_int_equal(msgs[0].payload_len, rows[0].payload_len);
    assert_memory_equal(msgs[0].payload, rows[0].payload, rows[0].payload_len);
    assert_int_equal(msgs[1].stream, STORE_STREAM_DLQ);
    assert_null(msgs[1].key);
    assert_non_null(msgs[1].headers);
    assert_int_equal(msgs[1].headers_len, 0);
    assert_int_equal(msgs[1].payload_len, sizeof(dlq_payload));
    assert_memory_equal(msgs[1].payload, dlq_payload, sizeof(dlq_payload));

    check_ok(store_outbox_fetch(store, 2, arena, &msgs, &count, &err), &err);
    assert_int_equal(count, 2);
    ids[0] = msgs[0].id;
    ids[1] = msgs[1].id;
    check_ok(store_outbox_mark_published(store, ids, 2, true, &err), &err);
    check_ok(store_outbox_fetch(store, 10, arena, &msgs, &count, &err), &err);
    assert_int_equal(count, 1);
    assert_true(msgs[0].id > ids[1]);
    check_ok(store_outbox_backlog(store, &backlog, &age, &err), &err);
    assert_int_equal(backlog, 1);
    assert_int_equal(
        query_num("SELECT count(*) FROM outbox WHERE id IN ($1, $2) "
                  "AND published_at IS NOT NULL",
                  2, arena_printf(arena, "%lld", (long long)ids[0]),
                  arena_printf(arena, "%lld", (long long)ids[1])),
        2);

    /* Published rows older than the retention go; unpublished stay. */
    assert_int_equal(store_outbox_purge(store, 3600 * 1000, &err), 0);
    assert_true(store_outbox_purge(store, 0, &err) >= 2);
    assert_int_equal(query_num("SELECT count(*) FROM outbox "
                               "WHERE published_at IS NOT NULL",
                               0),
                     0);
    check_ok(store_outbox_backlog(store, &backlog, &age, &err), &err);
    assert_int_equal(backlog, 1);

    /* Without a retention a published row is deleted at once. */
    check_ok(store_outbox_fetch(store, 10, arena, &msgs, &count, &err), &err);
    assert_int_equal(count, 1);
    ids[0] = msgs[0].id;
    check_ok(store_outbox_mark_published(store, ids, 1, false, &err), &err);
    assert_int_equal(query_num("SELECT count(*) FROM outbox WHERE id = $1", 1,
                               arena_printf(arena, "%lld", (long long)ids[0])),
                     0);
    check_ok(store_outbox_backlog(store, &backlog, &age, &err), &err);
    assert_int_equal(backlog, 0);
    store_destroy(store);
    arena_destroy(arena);
}

static void relay_lead_is_exclusive_until_disconnect(void **state)
{
    struct store *first = open_store();
    struct store *second = open_store();
    struct mw_error err = {0};
    bool is_leader = false;
    struct timespec pause = {0, 50 * 1000 * 1000};

    (void)state;
    check_ok(store_relay_lead(first, &is_leader, &err), &err);
    assert_true(is_leader);
    check_ok(store_relay_lead(first, &is_leader, &err), &err);
    assert_true(is_leader);
    check_ok(store_relay_lead(second, &is_leader, &err), &err);
    assert_false(is_leader);

    store_destroy(first);
    /* The server releases the lock when the backend has exited. */
    for (int i = 0; i < 100 && !is_leader; i++) {
        check_ok(store_relay_lead(second, &is_leader, &err), &err);
        if (!is_leader)
            nanosleep(&pause, NULL);
    }
    assert_true(is_leader);
    store_destroy(second);
}

static void wait_returns_after_notify(void **state)
{
    struct mw_arena *arena = arena_new();
    struct store *relay = open_store();
    struct store *worker = open_store();
    struct store_outbox_row row =
        event_row(arena, arena_printf(arena, "ev-%s", new_tag(arena)));
    struct mw_error err = {0};

    (void)state;
    assert_int_equal(store_outbox_wait(relay, 50, &err), 0);
    check_ok(store_batch_finish(worker, &row, 1, &err), &err);
    assert_int_equal(store_outbox_wait(relay, 5000, &err), 1);
    assert_int_equal(store_outbox_wait(relay, 50, &err), 0);
    store_destroy(worker);
    store_destroy(relay);
    arena_destroy(arena);
}

static double seconds_since(int64_t start_ns)
{
    return (double)(mw_monotonic_ns() - start_ns) / 1e9;
}

static void thousand_requests_claim_in_one_call(void **state)
{
    enum { N = 1000 };
    struct mw_arena *arena = arena_new();
    struct store *store = open_store();
    const char *tag = new_tag(arena);
    struct store_item *items = calloc(N, sizeof(*items));
    struct store_outbox_row *rows = calloc(N, sizeof(*rows));
    struct mw_error err = {0};
    int64_t start;
    double claim_s, finish_s;

    (void)state;
    assert_non_null(items);
    assert_non_null(rows);
    for (int i = 0; i < N; i++) {
        const char *id = arena_printf(arena, "req-%s-%d", tag, i);

        make_item(arena, &items[i],
                  make_request(arena, id, "msp-bulk",
                               arena_printf(arena, "d%d.%s.example", i, tag),
                               arena_printf(arena, "m.d%d.%s.example", i, tag)),
                  1);
        rows[i] = event_row(arena, id);
    }
    start = mw_monotonic_ns();
    check_ok(store_batch_claim(store, items, N, arena, &err), &err);
    claim_s = seconds_since(start);
    start = mw_monotonic_ns();
    check_ok(store_batch_finish(store, rows, N, &err), &err);
    finish_s = seconds_since(start);
    printf("claim of %d requests: %.1f ms; finish with %d outbox rows: "
           "%.1f ms\n",
           N, claim_s * 1000, N, finish_s * 1000);
    for (int i = 0; i < N; i++)
        assert_int_equal(items[i].outcome, STORE_CREATED);
    assert_int_equal(query_num("SELECT count(*) FROM customers "
                               "WHERE msp_id = 'msp-bulk' "
                               "AND request_id LIKE $1",
                               1, arena_printf(arena, "req-%s-%%", tag)),
                     N);
    free(rows);
    free(items);
    store_destroy(store);
    arena_destroy(arena);
}

/*
 * One run of requests of every kind the claim by COPY writes (each
 * account type, a trial with and without its reminder, text COPY must
 * escape, a domain listed twice by one request, optional fields absent,
 * a request the rules rejected), for batch_rows_are_the_same_either_way.
 */
static void mixed_run(struct mw_arena *arena, const char *tag,
                      struct store_item *items, int count)
{
    for (int i = 0; i < count; i++) {
        const char *primary = arena_printf(arena, "d%d.%s.example", i, tag);
        struct mw_request *r = make_request(
            arena, arena_printf(arena, "req-%s-%02d", tag, i), "msp-copy",
            primary,
            i % 5 == 4 ? primary
                       : arena_printf(arena, "m.d%d.%s.example", i, tag));

        r->account_type = i % 3 == 0   ? MW_ACCOUNT_BUY_NOW
                          : i % 3 == 1 ? MW_ACCOUNT_TRIAL
                                       : MW_ACCOUNT_NFR;
        r->company_name =
            i % 4 == 0 ? "Tab\there \\ \"q\" \r\n{x,y}" : "Contoso";
        r->policy_template_id = i % 2 == 0 ? "strict" : NULL;
        r->delivery_destination = i % 6 == 0 ? NULL : "mx.example:25";
        r->two_factor_required = i % 2 == 1;
        r->licenses = 1 + i;
        make_item(arena, &items[i], r, i + 1);
        items[i].occurred_at = 1764000000123LL + i;
        items[i].trial_ends_at = items[i].occurred_at + 14 * DAY_MS;
        items[i].trial_reminder_at =
            i % 2 == 0 ? items[i].trial_ends_at - 3 * DAY_MS : 0;
        items[i].traceparent = i % 7 == 0 ? NULL : items[i].traceparent;
        items[i].is_valid = i != 11;
    }
}

/* The rows of a run of mixed_run, with its tag and ids taken out. */
static char *run_rows(struct mw_arena *arena, const char *tag)
{
    return query_text(
        arena,
        "WITH r AS (SELECT * FROM requests WHERE request_id LIKE $1) "
        "SELECT concat_ws(E'\\n', "
        " (SELECT string_agg(concat_ws('|', r.request_id, r.kind, r.msp_id, "
        "   encode(r.payload_hash, 'hex'), r.outcome, r.customer_id IS NULL, "
        "   r.processed_at, r.conflicts), ';' ORDER BY r.request_id) FROM r), "
        " (SELECT string_agg((to_jsonb(c) - 'customer_id')::text, ';' "
        "   ORDER BY c.request_id) FROM customers c JOIN r USING "
        "(request_id)), "
        " (SELECT string_agg(concat_ws('|', c.request_id, d.domain, "
        "   d.is_primary, d.released_at), ';' ORDER BY d.domain) "
        "   FROM customer_domains d JOIN customers c USING (customer_id) "
        "   JOIN r ON r.request_id = c.request_id), "
        " (SELECT string_agg(concat_ws('|', c.request_id, t.kind, t.due_at, "
        "   t.created_at, t.request_id), ';' ORDER BY c.request_id, t.kind) "
        "   FROM timers t JOIN customers c USING (customer_id) "
        "   JOIN r ON r.request_id = c.request_id))",
        1, arena_printf(arena, "req-%s-%%", tag));
}

static void batch_rows_are_the_same_either_way(void **state)
{
    enum { N = 40 };
    struct mw_arena *arena = arena_new();
    struct store *store = open_store();
    const char *tags[2] = {new_tag(arena), new_tag(arena)};
    struct store_item items[2][N];
    char *rows[2];

    (void)state;
    for (int way = 0; way < 2; way++) {
        mixed_run(arena, tags[way], items[way], N);
        /* The first way is mw_claim_requests', the second COPY's. */
        store_set_copy_min_run(store, way == 0 ? SIZE_MAX : 1);
        claim_and_commit(store, items[way], N, arena);
        assert_int_equal(store_copied_runs(store), way);
        for (int i = 0; i < N; i++)
            assert_int_equal(items[way][i].outcome,
                             i == 11 ? STORE_REJECTED : STORE_CREATED);
        rows[way] = run_rows(arena, tags[way]);
        assert_non_null(rows[way]);
    }
    /* Nothing differs but the tag. */
    assert_true(strlen(rows[0]) > 10000);
    assert_non_null(strstr(rows[0], "TRIAL_ENDING"));
    assert_string_equal(
        query_text(arena, "SELECT replace($1, $2, 'TAG')", 2, rows[0], tags[0]),
        query_text(arena, "SELECT replace($1, $2, 'TAG')", 2, rows[1],
                   tags[1]));
    store_destroy(store);
    arena_destroy(arena);
}

/* A run the database refuses part of goes to mw_claim_requests. */
static void copy_falls_back_when_an_id_or_domain_is_taken(void **state)
{
    enum { N = 40 };
    struct mw_arena *arena = arena_new();
    struct store *store = open_store();
    const char *tag = new_tag(arena);
    struct store_item items[N];

    (void)state;
    store_set_copy_min_run(store, 1);
    mixed_run(arena, tag, items, N);
    claim_and_commit(store, items, 1, arena); /* the first, alone */
    assert_int_equal(store_copied_runs(store), 1);
    /* Request 0 again, and request 1 wanting request 0's domain. */
    mixed_run(arena, tag, items, N);
    items[1].request =
        make_request(arena, items[1].request->request_id, "msp-copy",
                     arena_printf(arena, "d0.%s.example", tag), NULL);
    claim_and_commit(store, items, N, arena);
    assert_int_equal(store_copied_runs(store), 1);
    assert_int_equal(items[0].outcome, STORE_DUPLICATE);
    assert_int_equal(items[1].outcome, STORE_REJECTED);
    assert_int_equal(items[1].taken_domains_count, 1);
    for (int i = 2; i < N; i++)
        assert_int_equal(items[i].outcome,
                         i == 11 ? STORE_REJECTED : STORE_CREATED);
    assert_int_equal(query_num("SELECT count(*) FROM customers "
                               "WHERE request_id LIKE $1",
                               1, arena_printf(arena, "req-%s-%%", tag)),
                     N - 2);
    store_destroy(store);
    arena_destroy(arena);
}

static void unreachable_server_is_retriable(void **state)
{
    struct mw_error err = {0};
    struct store *store =
        store_new("postgresql://nobody:secret@127.0.0.1:1/none"
                  "?connect_timeout=2",
                  &err);

    (void)state;
    assert_null(store);
    assert_int_equal(err.code, MW_ERR_DATABASE);
    assert_true(err.retriable);
    assert_null(strstr(err.msg, "secret"));
    assert_null(strstr(err.detail, "secret"));
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
    snprintf(run_tag, sizeof(run_tag), "t%lx%x", (long)time(NULL),
             (unsigned)getpid());
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

/* The tests of the claim, run twice (see copy_min_run). */
#define CLAIM_TESTS                                                            \
    cmocka_unit_test(valid_request_is_created),                                \
        cmocka_unit_test(account_types_set_status_and_billing),                \
        cmocka_unit_test(redelivered_request_is_duplicate),                    \
        cmocka_unit_test(same_id_other_content_is_conflict),                   \
        cmocka_unit_test(                                                      \
            second_request_in_batch_for_taken_domain_is_rejected),             \
        cmocka_unit_test(released_domain_can_be_taken_again),                  \
        cmocka_unit_test(shared_domain_of_rejected_request_goes_to_next),      \
        cmocka_unit_test(taken_domains_are_listed_in_request_order),           \
        cmocka_unit_test(repeats_in_one_batch_are_duplicate_or_conflict),      \
        cmocka_unit_test(termination_sees_customers_created_before_it),        \
        cmocka_unit_test(rule_rejected_request_is_recorded_without_customer),  \
        cmocka_unit_test(aborted_batch_leaves_nothing),                        \
        cmocka_unit_test(concurrent_claims_of_one_request_create_once),        \
        cmocka_unit_test(concurrent_claims_of_one_domain_create_once),         \
        cmocka_unit_test(a_creation_then_its_update_in_one_batch_is_applied),  \
        cmocka_unit_test(deadlocked_batch_is_retried),                         \
        cmocka_unit_test(lost_connection_is_retriable_and_reconnects),         \
        cmocka_unit_test(thousand_requests_claim_in_one_call),

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(migrate_twice_is_a_noop),
        cmocka_unit_test(schema_check_names_the_first_missing_migration),
        cmocka_unit_test(concurrent_migrations_apply_each_once),
        CLAIM_TESTS cmocka_unit_test(termination_outcomes),
        cmocka_unit_test(an_older_sync_is_stale_and_changes_nothing),
        cmocka_unit_test(a_trial_bought_early_loses_its_timers),
        cmocka_unit_test(an_update_sees_a_termination_before_it_only),
        cmocka_unit_test(concurrent_updates_adding_one_domain_apply_once),
        cmocka_unit_test(finish_writes_outbox_rows_once),
        cmocka_unit_test(fetch_returns_oldest_first_and_mark_hides_them),
        cmocka_unit_test(relay_lead_is_exclusive_until_disconnect),
        cmocka_unit_test(wait_returns_after_notify),
        cmocka_unit_test(batch_rows_are_the_same_either_way),
        cmocka_unit_test(copy_falls_back_when_an_id_or_domain_is_taken),
        cmocka_unit_test(unreachable_server_is_retriable),
    };

    /* The claim again, every run that may go by COPY going by COPY. */
    const struct CMUnitTest copy_tests[] = {CLAIM_TESTS};
    int failed = cmocka_run_group_tests(tests, group_setup, group_teardown);

    copy_min_run = 1;
    return failed + cmocka_run_group_tests_name("claims by COPY", copy_tests,
                                                group_setup, group_teardown);
}
