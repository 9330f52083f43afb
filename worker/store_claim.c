/*
 * The batch claim: opens a batch's transaction and claims its requests and
 * terminations in one round trip, a run of consecutive requests a call of
 * mw_claim_requests (migrations/0004_batch_claim.sql) and each termination
 * a call of mw_claim_termination.  It decides nothing the database
 * decides: it sends the items in the order of the batch and reads back
 * what became of each.  store_batch_finish (store_outbox.c) ends the
 * transaction with the batch's outbox rows.
 *
 * Invariant: a batch is one transaction, opened here and ended by
 * store_batch_finish (commit) or store_batch_abort; nothing of a batch is
 * ever committed without its outbox rows.  An item PostgreSQL would refuse
 * (text that is not UTF-8, a key longer than a B-tree page allows) is
 * settled here without SQL, so that one bad message cannot fail every
 * batch it is retried in.
 */
#include "store_internal.h"

#include "mw.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Longest request id sent to the database, in bytes.  Valid ids have at
 * most MW_MAX_ID code points; an invalid one may be anything, and a key
 * beyond a B-tree page would fail the whole batch.
 */
#define MAX_KEY_BYTES (4 * MW_MAX_ID)

/*
 * The parameters of mw_claim_requests, in the order of its arguments: one
 * array per request column (element i of each belongs to request i of the
 * run), then the domains wanted as (request, domain) pairs and the
 * requests that share a domain with another of the run.
 */
enum claim_param {
    CLAIM_REQUEST_ID = 0,
    CLAIM_PAYLOAD_HASH,
    CLAIM_IS_VALID,
    CLAIM_CUSTOMER_ID,
    CLAIM_MSP_ID,
    CLAIM_MSP_DOMAIN,
    CLAIM_REQUESTED_BY,
    CLAIM_COMPANY_NAME,
    CLAIM_PRIMARY_DOMAIN,
    CLAIM_ADDITIONAL_DOMAINS,
    CLAIM_MAIL_PLATFORM,
    CLAIM_SERVICE,
    CLAIM_ACCOUNT_TYPE,
    CLAIM_LICENSES,
    CLAIM_DEFAULT_ADMIN_EMAIL,
    CLAIM_DELIVERY_DESTINATION,
    CLAIM_POLICY_TEMPLATE_ID,
    CLAIM_APPLY_GLOBAL_RULES,
    CLAIM_MSP_MANAGEMENT,
    CLAIM_TWO_FACTOR_REQUIRED,
    CLAIM_MONITOR_MODE,
    CLAIM_OCCURRED_AT,
    CLAIM_TRIAL_ENDS_AT,
    CLAIM_TRACEPARENT,
    CLAIM_REMINDER_AT,
    /* One value a request above, one value a domain below. */
    CLAIM_REQUEST_COLUMNS,
    CLAIM_DOMAIN_ITEM = CLAIM_REQUEST_COLUMNS,
    CLAIM_DOMAIN,
    CLAIM_SHARED,
    CLAIM_PARAMS
};

/* The parameters of mw_claim_termination, in the order of its arguments. */
enum termination_param {
    TERMINATION_REQUEST_ID = 0,
    TERMINATION_PAYLOAD_HASH,
    TERMINATION_MSP_ID,
    TERMINATION_CUSTOMER_ID,
    TERMINATION_EFFECTIVE_AT,
    TERMINATION_OCCURRED_AT,
    TERMINATION_TRACEPARENT,
    TERMINATION_PARAMS
};

/*
 * A text[] parameter in PostgreSQL's text format, built element by
 * element.  A store keeps its buffers from batch to batch.
 */
struct text_array {
    char *buf;
    size_t len, cap;
    size_t count;
    bool is_oom;
};

struct claim_columns {
    struct text_array params[CLAIM_PARAMS];
};

/*
 * A run of consecutive requests of a batch in one statement: the claim is
 * set-based (migrations/0004_batch_claim.sql), so its cost hardly grows
 * with the number of requests.
 */
static const char stmt_claim_requests[] = "mw_claim_requests";
static const char sql_claim_requests[] =
    "SELECT item_no, item_outcome, item_taken FROM mw_claim_requests("
    "$1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, "
    "$16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28)";
_Static_assert(CLAIM_PARAMS == 28, "sql_claim_requests has 28 parameters");

static const char stmt_claim_termination[] = "mw_claim_termination";
static const char sql_claim_termination[] =
    "SELECT outcome, code, effective_at, was_trial "
    "FROM mw_claim_termination($1, $2, $3, $4, $5, $6, $7)";
_Static_assert(TERMINATION_PARAMS == 7,
               "sql_claim_termination has 7 parameters");

const struct store_statement store_claim_statements[] = {
    {stmt_claim_requests, sql_claim_requests, CLAIM_PARAMS},
    {stmt_claim_termination, sql_claim_termination, TERMINATION_PARAMS},
};
const size_t store_claim_statement_count =
    sizeof(store_claim_statements) / sizeof(store_claim_statements[0]);

static const char *enum_name(const char *const *names, int count, int value)
{
    return value >= 0 && value < count ? names[value] : NULL;
}

/*
 * Writes s at p as a quoted element of a text[] literal (at most
 * 2 * strlen(s) + 2 bytes); returns the end.
 */
static char *put_quoted(char *p, const char *s)
{
    *p++ = '"';
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            *p++ = '\\';
        *p++ = *s;
    }
    *p++ = '"';
    return p;
}

/* See store_internal.h. */
char *store_text_array_literal(struct mw_arena *arena, const char *const *strs,
                               size_t count)
{
    size_t len = 3;
    char *buf, *p;

    for (size_t i = 0; i < count; i++)
        len += 2 * strlen(strs[i]) + 3;
    buf = arena_alloc(arena, len);
    if (buf == NULL)
        return NULL;
    p = buf;
    *p++ = '{';
    for (size_t i = 0; i < count; i++) {
        if (i > 0)
            *p++ = ',';
        p = put_quoted(p, strs[i]);
    }
    *p++ = '}';
    *p = '\0';
    return buf;
}

/* See store_internal.h. */
int store_parse_text_array(struct mw_arena *arena, const char *text,
                           const char ***strs, size_t *count)
{
    size_t max = 1, n = 0, len = strlen(text);
    const char **out;
    char *buf;
    const char *p = text;

    *strs = NULL;
    *count = 0;
    if (len < 2 || text[0] != '{' || text[len - 1] != '}')
        return -1;
    if (len == 2)
        return 0;
    for (const char *q = text; *q; q++)
        max += *q == ',';
    out = arena_alloc(arena, max * sizeof(*out));
    buf = arena_alloc(arena, len);
    if (out == NULL || buf == NULL)
        return -1;
    p++;
    while (*p != '}' && *p != '\0') {
        char *start = buf;
        bool is_quoted = *p == '"';

        if (is_quoted) {
            for (p++; *p != '"'; p++) {
                if (*p == '\\')
                    p++;
                if (*p == '\0')
                    return -1;
                *buf++ = *p;
            }
            p++;
        } else {
            while (*p != ',' && *p != '}' && *p != '\0')
                *buf++ = *p++;
        }
        *buf++ = '\0';
        if (is_quoted || strcmp(start, "NULL") != 0)
            out[n++] = start;
        if (*p == ',')
            p++;
    }
    *strs = out;
    *count = n;
    return 0;
}

/* The request id of a claimed item, or NULL for DLQ items. */
static const char *item_request_id(const struct store_item *item)
{
    if (item->kind == STORE_ITEM_REQUEST && item->request != NULL)
        return item->request->request_id;
    if (item->kind == STORE_ITEM_TERMINATION && item->termination != NULL)
        return item->termination->request_id;
    if (item->kind == STORE_ITEM_UPDATE && item->update != NULL)
        return item->update->request_id;
    return NULL;
}

/* Empties a; the next element is the first of a new array. */
static void text_array_reset(struct text_array *a)
{
    a->len = 0;
    a->count = 0;
    a->is_oom = false;
}

/* See store_internal.h. */
bool store_reserve(char **buf, size_t *cap, size_t len, size_t more,
                   size_t first, bool *is_oom)
{
    size_t want = *cap > 0 ? *cap : first;
    char *grown;

    if (*is_oom)
        return false;
    if (len + more <= *cap)
        return true;
    while (want < len + more)
        want *= 2;
    grown = realloc(*buf, want);
    if (grown == NULL) {
        *is_oom = true;
        return false;
    }
    *buf = grown;
    *cap = want;
    return true;
}

static bool text_array_reserve(struct text_array *a, size_t more)
{
    return store_reserve(&a->buf, &a->cap, a->len, more, 4096, &a->is_oom);
}

/* Appends one element: NULL is SQL null, anything else is quoted. */
static void text_array_put(struct text_array *a, const char *s)
{
    size_t n = s != NULL ? strlen(s) : 0;

    if (!text_array_reserve(a, 2 * n + 8))
        return;
    a->buf[a->len++] = a->count++ == 0 ? '{' : ',';
    if (s == NULL) {
        memcpy(a->buf + a->len, "NULL", 4);
        a->len += 4;
        return;
    }
    a->len = (size_t)(put_quoted(a->buf + a->len, s) - a->buf);
}

/* Closes a and returns its text, or NULL when out of memory. */
static const char *text_array_end(struct text_array *a)
{
    if (!text_array_reserve(a, 3))
        return NULL;
    if (a->count == 0)
        a->buf[a->len++] = '{';
    a->buf[a->len++] = '}';
    a->buf[a->len] = '\0';
    return a->buf;
}

/* Text of the numbers and the hash of one request's parameters. */
struct request_scratch {
    char hash[2 + 64 + 1];
    char licenses[16], occurred[24], trial_ends[24], reminder[24];
};

/*
 * The parameters of one request, in the order of mw_claim_requests.
 * Returns 0, or -1 when out of memory.
 */
static int claim_request_values(const struct store_item *item,
                                struct mw_arena *arena,
                                const char *values[CLAIM_REQUEST_COLUMNS],
                                struct request_scratch *scratch)
{
    const struct mw_request *r = item->request;

    for (int i = 0; i < CLAIM_REQUEST_COLUMNS; i++)
        values[i] = NULL;
    scratch->hash[0] = '\\';
    scratch->hash[1] = 'x';
    mw_hex_encode(item->payload_hash, sizeof(item->payload_hash),
                  scratch->hash + 2);
    snprintf(scratch->occurred, sizeof(scratch->occurred), "%lld",
             (long long)item->occurred_at);
    values[CLAIM_REQUEST_ID] = r->request_id;
    values[CLAIM_PAYLOAD_HASH] = scratch->hash;
    values[CLAIM_IS_VALID] = item->is_valid ? "t" : "f";
    /* An invalid request may carry anything: keep what cannot fail. */
    values[CLAIM_MSP_ID] = store_safe_text(r->msp_id, 4 * MW_MAX_ID);
    values[CLAIM_OCCURRED_AT] = scratch->occurred;
    if (!item->is_valid)
        return 0;
    values[CLAIM_CUSTOMER_ID] = item->customer_id;
    values[CLAIM_MSP_DOMAIN] = r->msp_domain;
    values[CLAIM_REQUESTED_BY] = r->requested_by;
    values[CLAIM_COMPANY_NAME] = r->company_name;
    values[CLAIM_PRIMARY_DOMAIN] = r->primary_domain;
    values[CLAIM_ADDITIONAL_DOMAINS] = store_text_array_literal(
        arena, r->additional_domains, r->additional_domains_count);
    if (values[CLAIM_ADDITIONAL_DOMAINS] == NULL)
        return -1;
    values[CLAIM_MAIL_PLATFORM] =
        enum_name(mw_mail_platform_names, MW_PLATFORM_COUNT, r->mail_platform);
    values[CLAIM_SERVICE] =
        enum_name(mw_service_names, MW_SERVICE_COUNT, r->service);
    values[CLAIM_ACCOUNT_TYPE] =
        enum_name(mw_account_type_names, MW_ACCOUNT_COUNT, r->account_type);
    snprintf(scratch->licenses, sizeof(scratch->licenses), "%ld",
             (long)r->licenses);
    values[CLAIM_LICENSES] = scratch->licenses;
    values[CLAIM_DEFAULT_ADMIN_EMAIL] = r->default_admin_email;
    values[CLAIM_DELIVERY_DESTINATION] = r->delivery_destination;
    values[CLAIM_POLICY_TEMPLATE_ID] = r->policy_template_id;
    values[CLAIM_APPLY_GLOBAL_RULES] = r->apply_global_rules ? "t" : "f";
    values[CLAIM_MSP_MANAGEMENT] = r->msp_management ? "t" : "f";
    values[CLAIM_TWO_FACTOR_REQUIRED] = r->two_factor_required ? "t" : "f";
    values[CLAIM_MONITOR_MODE] = r->monitor_mode ? "t" : "f";
    if (r->account_type == MW_ACCOUNT_TRIAL) {
        snprintf(scratch->trial_ends, sizeof(scratch->trial_ends), "%lld",
                 (long long)item->trial_ends_at);
        values[CLAIM_TRIAL_ENDS_AT] = scratch->trial_ends;
        if (item->trial_reminder_at != 0) {
            snprintf(scratch->reminder, sizeof(scratch->reminder), "%lld",
                     (long long)item->trial_reminder_at);
            values[CLAIM_REMINDER_AT] = scratch->reminder;
        }
    }
    values[CLAIM_TRACEPARENT] =
        store_safe_text(item->traceparent, MW_MAX_TRACEPARENT);
    return 0;
}

/* A domain wanted by a request of a run, for finding shared ones. */
struct domain_slot {
    const char *domain; /* NULL: empty slot */
    size_t position;    /* of the first request wanting it, from 1 */
};

/*
 * Appends the domains each valid request of run wants (primary first,
 * each once) to the domain columns, and the positions of the requests
 * that want a domain another request of run also wants to the shared
 * column.  Returns 0, or -1 when out of memory.
 */
static int put_domains(struct store *store, const struct store_item *items,
                       const size_t *run, size_t count, struct mw_arena *arena)
{
    struct text_array *item_col = &store->columns->params[CLAIM_DOMAIN_ITEM];
    struct text_array *domain_col = &store->columns->params[CLAIM_DOMAIN];
    struct text_array *shared_col = &store->columns->params[CLAIM_SHARED];
    size_t wanted = 0, size = 16;
    struct domain_slot *slots;
    bool *is_shared = arena_alloc(arena, count * sizeof(*is_shared));

    for (size_t i = 0; i < count; i++) {
        const struct store_item *item = &items[run[i]];

        if (item->is_valid)
            wanted += 1 + item->request->additional_domains_count;
    }
    while (size < 2 * wanted)
        size *= 2;
    slots = arena_alloc(arena, size * sizeof(*slots));
    if (is_shared == NULL || slots == NULL)
        return -1;
    memset(is_shared, 0, count * sizeof(*is_shared));
    memset(slots, 0, size * sizeof(*slots));

    for (size_t i = 0; i < count; i++) {
        const struct mw_request *r = items[run[i]].request;
        char position[24];

        if (!items[run[i]].is_valid)
            continue;
        snprintf(position, sizeof(position), "%zu", i + 1);
        for (size_t k = 0; k <= r->additional_domains_count; k++) {
            const char *d =
                k == 0 ? r->primary_domain : r->additional_domains[k - 1];
            size_t at = (size_t)mw_hash_text(d) & (size - 1);

            while (slots[at].domain != NULL && strcmp(slots[at].domain, d) != 0)
                at = (at + 1) & (size - 1);
            if (slots[at].domain == NULL) {
                slots[at].domain = d;
                slots[at].position = i + 1;
            } else if (slots[at].position == i + 1) {
                continue; /* listed twice by this request */
            } else {
                is_shared[slots[at].position - 1] = true;
                is_shared[i] = true;
            }
            text_array_put(item_col, position);
            text_array_put(domain_col, d);
        }
    }
    for (size_t i = 0; i < count; i++) {
        char position[24];

        if (!is_shared[i])
            continue;
        snprintf(position, sizeof(position), "%zu", i + 1);
        text_array_put(shared_col, position);
    }
    return 0;
}

/*
 * Queues one mw_claim_requests call for the count items whose indexes
 * are in run.  Returns 0 when sent, 1 when out of memory, -1 when libpq
 * failed.
 */
static int send_claim_requests(struct store *store,
                               const struct store_item *items,
                               const size_t *run, size_t count,
                               struct mw_arena *arena)
{
    const char *params[CLAIM_PARAMS];

    if (store->columns == NULL) {
        store->columns = calloc(1, sizeof(*store->columns));
        if (store->columns == NULL)
            return 1;
    }
    for (int c = 0; c < CLAIM_PARAMS; c++)
        text_array_reset(&store->columns->params[c]);
    for (size_t i = 0; i < count; i++) {
        const char *values[CLAIM_REQUEST_COLUMNS];
        struct request_scratch scratch;

        if (claim_request_values(&items[run[i]], arena, values, &scratch) != 0)
            return 1;
        for (int c = 0; c < CLAIM_REQUEST_COLUMNS; c++)
            text_array_put(&store->columns->params[c], values[c]);
    }
    if (put_domains(store, items, run, count, arena) != 0)
        return 1;
    for (int c = 0; c < CLAIM_PARAMS; c++) {
        params[c] = text_array_end(&store->columns->params[c]);
        if (params[c] == NULL)
            return 1;
    }
    /* libpq copies the parameters into its buffer before returning. */
    return PQsendQueryPrepared(store->conn, stmt_claim_requests, CLAIM_PARAMS,
                               params, NULL, NULL, 0) == 1
               ? 0
               : -1;
}

static int send_claim_termination(struct store *store,
                                  const struct store_item *item)
{
    const struct mw_termination_request *t = item->termination;
    const char *values[TERMINATION_PARAMS] = {NULL};
    int lengths[TERMINATION_PARAMS] = {0};
    int formats[TERMINATION_PARAMS] = {0};
    char effective[24], occurred[24];

    values[TERMINATION_REQUEST_ID] = t->request_id;
    values[TERMINATION_PAYLOAD_HASH] = (const char *)item->payload_hash;
    lengths[TERMINATION_PAYLOAD_HASH] = (int)sizeof(item->payload_hash);
    formats[TERMINATION_PAYLOAD_HASH] = 1; /* binary */
    values[TERMINATION_MSP_ID] = t->msp_id;
    values[TERMINATION_CUSTOMER_ID] = t->customer_id;
    if (t->has_effective_at) {
        snprintf(effective, sizeof(effective), "%lld",
                 (long long)t->effective_at);
        values[TERMINATION_EFFECTIVE_AT] = effective;
    }
    snprintf(occurred, sizeof(occurred), "%lld", (long long)item->occurred_at);
    values[TERMINATION_OCCURRED_AT] = occurred;
    values[TERMINATION_TRACEPARENT] =
        store_safe_text(item->traceparent, MW_MAX_TRACEPARENT);
    return PQsendQueryPrepared(store->conn, stmt_claim_termination,
                               TERMINATION_PARAMS, values, lengths, formats,
                               0) == 1
               ? 0
               : -1;
}

/*
 * Sets the outcome of an item that is not sent to the database and
 * returns true: DLQ items, and items whose identifying text PostgreSQL
 * would refuse (rejected here, so that one bad message cannot fail every
 * batch it is retried in; the rules reject such requests anyway).
 */
static bool is_settled_locally(struct store_item *item)
{
    const char *request_id = item_request_id(item);

    if (item->kind == STORE_ITEM_DLQ) {
        item->outcome = STORE_DLQ;
        return true;
    }
    if (store_safe_text(request_id, MAX_KEY_BYTES) == NULL ||
        (item->kind == STORE_ITEM_TERMINATION &&
         (store_safe_text(item->termination->msp_id, MAX_KEY_BYTES) == NULL ||
          store_safe_text(item->termination->customer_id, MAX_KEY_BYTES) ==
              NULL)) ||
        (item->kind == STORE_ITEM_UPDATE &&
         (store_safe_text(item->update->msp_id, MAX_KEY_BYTES) == NULL ||
          store_safe_text(item->update->customer_id, MAX_KEY_BYTES) == NULL))) {
        item->outcome = STORE_REJECTED;
        item->termination_code = MW_REJ_INVALID_FIELD;
        return true;
    }
    return false;
}

/* Sets item's outcome from the database's word; 0, or -1 when unknown. */
static int set_outcome(struct store_item *item, const char *outcome)
{
    if (strcmp(outcome, "CREATED") == 0)
        item->outcome = STORE_CREATED;
    else if (strcmp(outcome, "REJECTED") == 0)
        item->outcome = STORE_REJECTED;
    else if (strcmp(outcome, "DUPLICATE") == 0)
        item->outcome = STORE_DUPLICATE;
    else if (strcmp(outcome, "CONFLICT") == 0)
        item->outcome = STORE_CONFLICT;
    else if (strcmp(outcome, "SCHEDULED") == 0)
        item->outcome = STORE_SCHEDULED;
    else
        return -1;
    return 0;
}

/*
 * Reads the rows of mw_claim_requests (one per item of run, numbered from
 * 1) into the items.  Returns 0, or -1 when the result is malformed or
 * memory ran out.
 */
static int read_requests(struct store_item *items, const size_t *run,
                         size_t count, const PGresult *res,
                         struct mw_arena *arena)
{
    if (PQntuples(res) != (int)count || PQnfields(res) != 3)
        return -1;
    for (int row = 0; row < (int)count; row++) {
        long no = strtol(PQgetvalue(res, row, 0), NULL, 10);
        struct store_item *item;

        if (no < 1 || no > (long)count || PQgetisnull(res, row, 1))
            return -1;
        item = &items[run[no - 1]];
        if (set_outcome(item, PQgetvalue(res, row, 1)) != 0)
            return -1;
        if (item->outcome == STORE_REJECTED && !PQgetisnull(res, row, 2) &&
            store_parse_text_array(arena, PQgetvalue(res, row, 2),
                                   &item->taken_domains,
                                   &item->taken_domains_count) != 0)
            return -1;
    }
    return 0;
}

/* Reads mw_claim_termination's row into item; 0, or -1 when malformed. */
static int read_termination(struct store_item *item, const PGresult *res)
{
    if (PQntuples(res) != 1 || PQgetisnull(res, 0, 0) ||
        set_outcome(item, PQgetvalue(res, 0, 0)) != 0)
        return -1;
    if (!PQgetisnull(res, 0, 1)) {
        item->termination_code = mw_enum_lookup(
            mw_rejection_code_names, MW_REJ_COUNT, PQgetvalue(res, 0, 1));
        if (item->termination_code < 0)
            return -1;
    }
    if (!PQgetisnull(res, 0, 2))
        item->effective_at = strtoll(PQgetvalue(res, 0, 2), NULL, 10);
    item->was_trial =
        !PQgetisnull(res, 0, 3) && PQgetvalue(res, 0, 3)[0] == 't';
    return 0;
}

static void reset_outputs(struct store_item *items, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        items[i].outcome = STORE_PENDING;
        items[i].taken_domains = NULL;
        items[i].taken_domains_count = 0;
        items[i].termination_code = 0;
        items[i].effective_at = 0;
        items[i].was_trial = false;
        items[i].is_bought = false;
    }
}

/*
 * One query of a batch: a run of consecutive requests (their indexes are
 * run[first .. first + count)), one termination or one update
 * (items[index]).  Requests are claimed a run at a time, terminations and
 * updates one by one, in the order of the batch, so that each sees
 * exactly the customers created and changed before it.  Updates are not
 * pipelined: the rules judge each between its two round trips.
 */
struct claim_query {
    bool is_run;
    bool is_update;
    size_t first, count;
    size_t index;
};

/*
 * Splits the items the database must see into queries.  Returns the
 * number of queries, or -1 when out of memory.
 */
static long plan_claims(struct store_item *items, size_t count,
                        struct mw_arena *arena, size_t **run,
                        struct claim_query **queries)
{
    size_t n = count > 0 ? count : 1, nrun = 0, nq = 0;

    *run = arena_alloc(arena, n * sizeof(**run));
    *queries = arena_alloc(arena, n * sizeof(**queries));
    if (*run == NULL || *queries == NULL)
        return -1;
    for (size_t i = 0; i < count; i++) {
        struct claim_query *q = nq > 0 ? &(*queries)[nq - 1] : NULL;

        if (is_settled_locally(&items[i]))
            continue;
        if (items[i].kind == STORE_ITEM_TERMINATION ||
            items[i].kind == STORE_ITEM_UPDATE) {
            (*queries)[nq++] = (struct claim_query){
                .is_update = items[i].kind == STORE_ITEM_UPDATE, .index = i};
            continue;
        }
        if (q == NULL || !q->is_run) {
            q = &(*queries)[nq++];
            *q = (struct claim_query){.is_run = true, .first = nrun};
        }
        (*run)[nrun++] = i;
        q->count++;
    }
    return (long)nq;
}

/*
 * Queues BEGIN (when is_first) and the queries [from, to) of the plan,
 * then the sync.  Returns 0 when sent, 1 when out of memory, -1 when
 * libpq failed.
 */
static int send_claims(struct store *store, const struct store_item *items,
                       const size_t *run, const struct claim_query *queries,
                       long from, long to, bool is_first,
                       struct mw_arena *arena)
{
    if (is_first && store_send_command(store, "BEGIN") != 0)
        return -1;
    for (long i = from; i < to; i++) {
        const struct claim_query *q = &queries[i];
        int sent = q->is_run ? send_claim_requests(store, items, run + q->first,
                                                   q->count, arena)
                             : send_claim_termination(store, &items[q->index]);

        if (sent != 0)
            return sent;
    }
    return PQpipelineSync(store->conn) == 1 ? 0 : -1;
}

/*
 * Reads the results of send_claims, in the order sent, into the items.
 * Sets *failed to the first error the server sent (the caller clears it).
 * Returns 0; 1 with err when a result was malformed; -1 when the
 * connection failed.
 */
static int read_claims(struct store *store, struct store_item *items,
                       const size_t *run, const struct claim_query *queries,
                       long from, long to, bool is_first,
                       struct mw_arena *arena, PGresult **failed,
                       struct mw_error *err)
{
    int rc = 0;

    for (long i = is_first ? from - 1 : from; i < to; i++) {
        const struct claim_query *q = i >= from ? &queries[i] : NULL;
        PGresult *res = store_pipeline_next(store);

        if (res == NULL)
            return -1;
        /* The first result is BEGIN's. */
        if (q != NULL && PQresultStatus(res) == PGRES_TUPLES_OK) {
            int read = q->is_run ? read_requests(items, run + q->first,
                                                 q->count, res, arena)
                                 : read_termination(&items[q->index], res);

            if (read != 0 && rc == 0) {
                const struct store_item *item =
                    &items[q->is_run ? run[q->first] : q->index];

                mw_error_set(err, MW_ERR_DATABASE, false,
                             "could not claim requests");
                mw_error_detail(err, "unexpected result for request \"%s\"",
                                item_request_id(item));
                rc = 1;
            }
            PQclear(res);
        } else if (*failed == NULL && PQresultStatus(res) != PGRES_COMMAND_OK &&
                   PQresultStatus(res) != PGRES_PIPELINE_ABORTED) {
            *failed = res;
        } else {
            PQclear(res);
        }
    }
    return rc;
}

/*
 * The queries [from, to) of the plan, with BEGIN first when is_first, in
 * one pipeline: one round trip.  Returns 0; 1 with err (and *is_retry
 * set on a serialization failure or deadlock) when the server refused a
 * query, the transaction then to be rolled back; -1 with err when the
 * connection was dropped.
 */
static int claim_stretch(struct store *store, struct store_item *items,
                         const size_t *run, const struct claim_query *queries,
                         long from, long to, bool is_first,
                         struct mw_arena *arena, bool *is_retry,
                         struct mw_error *err)
{
    static const char what[] = "could not claim requests";
    PGresult *failed = NULL; /* the first error, kept for its SQLSTATE */
    int rc;

    if (PQenterPipelineMode(store->conn) != 1) {
        store_set_error(store, err, what, NULL);
        return 1;
    }
    rc = send_claims(store, items, run, queries, from, to, is_first, arena);
    if (rc > 0) {
        /* Half a pipeline is sent: only a new connection is clean. */
        store_drop_connection(store);
        mw_error_set(err, MW_ERR_SYSTEM, true, "%s", what);
        mw_error_detail(err, "out of memory");
        return -1;
    }
    if (rc == 0)
        rc = read_claims(store, items, run, queries, from, to, is_first, arena,
                         &failed, err);
    if (rc < 0 || store_pipeline_end(store) != 0) {
        PQclear(failed);
        store_set_error(store, err, what, NULL);
        err->retriable = true;
        store_drop_connection(store);
        return -1;
    }
    if (failed != NULL) {
        *is_retry = store_is_serialization_state(
            PQresultErrorField(failed, PG_DIAG_SQLSTATE));
        store_set_error(store, err, what, failed);
        PQclear(failed);
        rc = 1;
    }
    return rc;
}

/*
 * One attempt at a batch: BEGIN and the claims in one pipeline, one round
 * trip, for each stretch of the plan between updates, and each update on
 * its own after the stretch before it.  Sets *is_retry when the failure
 * was a serialization failure or deadlock and the batch may simply run
 * again.
 */
static int claim_once(struct store *store, struct store_item *items,
                      size_t count, struct mw_arena *arena, bool *is_retry,
                      struct mw_error *err)
{
    size_t *run;
    struct claim_query *queries;
    long nq = plan_claims(items, count, arena, &run, &queries);
    long from = 0;
    int rc = 0;

    *is_retry = false;
    if (nq < 0) {
        mw_error_set(err, MW_ERR_SYSTEM, true, "could not claim requests");
        mw_error_detail(err, "out of memory");
        return -1;
    }
    if (store_ensure_connected(store, err) != 0 ||
        store_prepare_statements(store, err) != 0)
        return -1;
    if (nq == 1 && queries[0].is_run) {
        rc = store_copy_claim(store, items, run, queries[0].count, arena,
                              is_retry, err);
        if (rc == 0)
            store->in_batch = true;
        if (rc != 1)
            return rc == 0 ? 0 : -1;
        rc = 0;
    }
    for (bool is_first = true; rc == 0 && (is_first || from < nq);
         is_first = false) {
        long to = from;

        while (to < nq && !queries[to].is_update)
            to++;
        rc = claim_stretch(store, items, run, queries, from, to, is_first,
                           arena, is_retry, err);
        if (rc < 0)
            return -1;
        if (rc == 0 && to < nq)
            rc = store_update_claim(store, &items[queries[to].index], arena,
                                    is_retry, err) == 0
                     ? 0
                     : 1;
        from = to + 1;
    }
    if (rc != 0) {
        store_rollback(store);
        return -1;
    }
    store->in_batch = true;
    return 0;
}

/*
 * The batch transaction makes atomic: every request id claimed, the
 * domains and customers of the requests created, the terminations
 * scheduled (here), and their outbox rows (store_batch_finish).  A crash
 * before the commit leaves no trace, so the redelivered batch starts over.
 */
int store_batch_claim(struct store *store, struct store_item *items,
                      size_t count, struct mw_arena *arena,
                      struct mw_error *err)
{
    bool is_retry = false;

    if (store->in_batch)
        store_rollback(store);
    for (size_t i = 0; i < count; i++) {
        const struct store_item *item = &items[i];

        if ((item->kind == STORE_ITEM_REQUEST && item->request == NULL) ||
            (item->kind == STORE_ITEM_TERMINATION &&
             item->termination == NULL) ||
            (item->kind == STORE_ITEM_UPDATE &&
             (item->update == NULL || item->judge == NULL ||
              item->update_rejection == NULL || item->changes == NULL))) {
            mw_error_set(err, MW_ERR_INPUT, false, "could not claim requests");
            mw_error_detail(err, "Item %zu of the batch has no request.", i);
            return -1;
        }
    }
    for (int attempt = 1;; attempt++) {
        reset_outputs(items, count);
        if (claim_once(store, items, count, arena, &is_retry, err) == 0)
            return 0;
        if (!store_may_retry(store, attempt, is_retry, "batch", err))
            return -1;
    }
}

void store_claim_free(struct store *store)
{
    if (store->columns == NULL)
        return;
    for (int c = 0; c < CLAIM_PARAMS; c++)
        free(store->columns->params[c].buf);
    free(store->columns);
    store->columns = NULL;
}
