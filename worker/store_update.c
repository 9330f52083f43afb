/*
 * The claim of one update inside a batch's transaction: load and lock its
 * customer (mw_load_update of migrations/0008_customer_updates.sql), hand
 * it to the update's judge (the rules), and write what was accepted
 * (mw_apply_update).  It decides nothing the rules decide and nothing the
 * database decides; it carries values between them.
 *
 * Invariant: it runs between the pipelines of store_claim.c, in the order
 * of the batch, so an update sees every creation, termination and update
 * before it and none after; and it leaves the transaction open whatever
 * happens, for store_claim.c to end.  Known limit: two round trips an
 * update, where a creation run costs one for all its requests.
 */
#include "store_internal.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char sql_load_update[] =
    "SELECT * FROM mw_load_update($1, $2, $3, $4, $5, $6)";

/* The columns of mw_load_update, in order. */
enum load_column {
    LOAD_OUTCOME = 0,
    LOAD_IS_FOUND,
    LOAD_MSP_ID,
    LOAD_MSP_DOMAIN,
    LOAD_SERVICE,
    LOAD_ACCOUNT_TYPE,
    LOAD_STATUS,
    LOAD_BILLABLE,
    LOAD_LICENSES,
    LOAD_LICENSES_OBSERVED_AT,
    LOAD_MONITOR_MODE,
    LOAD_TWO_FACTOR_REQUIRED,
    LOAD_MSP_MANAGEMENT,
    LOAD_APPLY_GLOBAL_RULES,
    LOAD_DELIVERY_DESTINATION,
    LOAD_POLICY_TEMPLATE_ID,
    LOAD_PRIMARY_DOMAIN,
    LOAD_ADDITIONAL_DOMAINS,
    LOAD_CREATED_AT,
    LOAD_IS_TERMINATED,
    LOAD_TAKEN,
    LOAD_COLUMNS
};

static const char sql_apply_update[] =
    "SELECT mw_apply_update($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, "
    "$12, $13, $14, $15, $16, $17, $18, $19, $20)";

enum apply_param {
    APPLY_REQUEST_ID = 0,
    APPLY_CUSTOMER_ID,
    APPLY_SOURCE,
    APPLY_REQUESTED_BY,
    APPLY_LICENSES,
    APPLY_LICENSES_OBSERVED_AT,
    APPLY_MONITOR_MODE,
    APPLY_TWO_FACTOR_REQUIRED,
    APPLY_MSP_MANAGEMENT,
    APPLY_APPLY_GLOBAL_RULES,
    APPLY_DELIVERY_DESTINATION,
    APPLY_POLICY_TEMPLATE_ID,
    APPLY_ADDITIONAL_DOMAINS,
    APPLY_ADD_DOMAINS,
    APPLY_REMOVE_DOMAINS,
    APPLY_ACCOUNT_TYPE,
    APPLY_IS_BOUGHT,
    APPLY_OBSERVED_AT,
    APPLY_CHANGES,
    APPLY_NOW,
    APPLY_PARAMS
};

/* A column's text, or NULL for SQL null. */
static const char *column(const PGresult *res, int c)
{
    return PQgetisnull(res, 0, c) ? NULL : PQgetvalue(res, 0, c);
}

static bool column_is_true(const PGresult *res, int c)
{
    const char *v = column(res, c);

    return v != NULL && v[0] == 't';
}

/* An arena copy of a column, NULL for null; *is_oom set when it fails. */
static const char *column_copy(const PGresult *res, int c,
                               struct mw_arena *arena, bool *is_oom)
{
    const char *v = column(res, c);
    const char *copy;

    if (v == NULL)
        return NULL;
    copy = arena_strdup(arena, v);
    if (copy == NULL)
        *is_oom = true;
    return copy;
}

/*
 * Reads the customer of mw_load_update's row into s (strings and arrays
 * from arena).  Returns 0, or -1 when memory ran out or a value is not
 * one this worker knows.
 */
static int read_customer(const PGresult *res, const char *customer_id,
                         struct mw_arena *arena, struct mw_customer_state *s)
{
    bool is_oom = false;
    const char *observed = column(res, LOAD_LICENSES_OBSERVED_AT);

    memset(s, 0, sizeof(*s));
    s->customer_id = customer_id;
    s->msp_id = column_copy(res, LOAD_MSP_ID, arena, &is_oom);
    s->msp_domain = column_copy(res, LOAD_MSP_DOMAIN, arena, &is_oom);
    s->service = mw_enum_lookup(mw_service_names, MW_SERVICE_COUNT,
                                PQgetvalue(res, 0, LOAD_SERVICE));
    s->account_type = mw_enum_lookup(mw_account_type_names, MW_ACCOUNT_COUNT,
                                     PQgetvalue(res, 0, LOAD_ACCOUNT_TYPE));
    s->is_trial = strcmp(PQgetvalue(res, 0, LOAD_STATUS), "TRIAL") == 0;
    s->is_terminated = column_is_true(res, LOAD_IS_TERMINATED);
    s->billable = column_is_true(res, LOAD_BILLABLE);
    s->licenses = (int32_t)strtol(PQgetvalue(res, 0, LOAD_LICENSES), NULL, 10);
    s->has_licenses_observed_at = observed != NULL;
    s->licenses_observed_at = observed ? strtoll(observed, NULL, 10) : 0;
    s->monitor_mode = column_is_true(res, LOAD_MONITOR_MODE);
    s->two_factor_required = column_is_true(res, LOAD_TWO_FACTOR_REQUIRED);
    s->msp_management = column_is_true(res, LOAD_MSP_MANAGEMENT);
    s->apply_global_rules = column_is_true(res, LOAD_APPLY_GLOBAL_RULES);
    s->delivery_destination =
        column_copy(res, LOAD_DELIVERY_DESTINATION, arena, &is_oom);
    s->policy_template_id =
        column_copy(res, LOAD_POLICY_TEMPLATE_ID, arena, &is_oom);
    s->primary_domain = column_copy(res, LOAD_PRIMARY_DOMAIN, arena, &is_oom);
    s->created_at = strtoll(PQgetvalue(res, 0, LOAD_CREATED_AT), NULL, 10);
    if (is_oom || s->service < 0 || s->account_type < 0 || s->msp_id == NULL ||
        s->primary_domain == NULL)
        return -1;
    return store_parse_text_array(
        arena, PQgetvalue(res, 0, LOAD_ADDITIONAL_DOMAINS),
        &s->additional_domains, &s->additional_domains_count);
}

/* Fails err with what and res's error; a serialization failure may retry. */
static int update_failed(struct store *store, const char *what,
                         const PGresult *res, bool *is_retry,
                         struct mw_error *err)
{
    if (res != NULL)
        *is_retry = store_is_serialization_state(
            PQresultErrorField(res, PG_DIAG_SQLSTATE));
    store_set_error(store, err, what, res);
    return -1;
}

/* A malformed answer or no memory: err says so for request_id. */
static int update_broken(const char *what, const char *request_id,
                         const char *why, struct mw_error *err)
{
    mw_error_set(err, MW_ERR_DATABASE, true, "%s", what);
    mw_error_detail(err, "%s for update \"%s\"", why, request_id);
    return -1;
}

/*
 * Loads the customer of item and lets its judge decide.  Sets
 * item->outcome to DUPLICATE, CONFLICT or REJECTED, or leaves it PENDING
 * with item->updated filled when accepted.  Returns 0, or -1 with err.
 */
static int load_and_judge(struct store *store, struct store_item *item,
                          struct mw_arena *arena, bool *is_retry,
                          struct mw_error *err)
{
    static const char what[] = "could not load the customer of an update";
    const struct mw_update_request *u = item->update;
    const char *values[6] = {NULL};
    int lengths[6] = {0}, formats[6] = {0};
    char now[24];
    struct mw_customer_state before;
    const char **taken = NULL;
    size_t taken_count = 0;
    bool is_found;
    PGresult *res;
    int rc;

    snprintf(now, sizeof(now), "%lld", (long long)item->occurred_at);
    values[0] = u->request_id;
    values[1] = (const char *)item->payload_hash;
    lengths[1] = (int)sizeof(item->payload_hash);
    formats[1] = 1; /* binary */
    values[2] = u->msp_id;
    values[3] = u->customer_id;
    values[4] =
        store_text_array_literal(arena, u->add_domains, u->add_domains_count);
    values[5] = now;
    if (values[4] == NULL)
        return update_broken(what, u->request_id, "out of memory", err);
    res = PQexecParams(store->conn, sql_load_update, 6, NULL, values, lengths,
                       formats, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = update_failed(store, what, res, is_retry, err);
        PQclear(res);
        return rc;
    }
    if (PQntuples(res) != 1 || PQnfields(res) != LOAD_COLUMNS) {
        PQclear(res);
        return update_broken(what, u->request_id, "unexpected result", err);
    }
    if (strcmp(PQgetvalue(res, 0, LOAD_OUTCOME), "NEW") != 0) {
        item->outcome =
            strcmp(PQgetvalue(res, 0, LOAD_OUTCOME), "CONFLICT") == 0
                ? STORE_CONFLICT
                : STORE_DUPLICATE;
        PQclear(res);
        return 0;
    }
    is_found = column_is_true(res, LOAD_IS_FOUND);
    rc = is_found ? read_customer(res, u->customer_id, arena, &before) : 0;
    if (rc == 0 && is_found)
        rc = store_parse_text_array(arena, PQgetvalue(res, 0, LOAD_TAKEN),
                                    &taken, &taken_count);
    PQclear(res);
    if (rc != 0)
        return update_broken(what, u->request_id, "unreadable customer", err);
    rc = item->judge(u, is_found ? &before : NULL, taken, taken_count, arena,
                     &item->updated, item->changes, item->update_rejection);
    if (rc < 0)
        return update_broken(what, u->request_id, "out of memory", err);
    if (rc == 1)
        item->outcome = STORE_REJECTED;
    return 0;
}

/* The change list as a JSON array for the history, or NULL (memory). */
static char *changes_json(const struct mw_changes *changes)
{
    json_t *list = json_array();
    char *text;

    for (size_t i = 0; list != NULL && i < changes->count; i++) {
        const struct mw_field_change *c = &changes->changes[i];
        json_t *item = json_pack(
            "{s:s, s:o, s:o}", "field", c->field, "old_value",
            c->old_value ? json_string(c->old_value) : json_null(), "new_value",
            c->new_value ? json_string(c->new_value) : json_null());

        if (item == NULL || json_array_append_new(list, item) != 0) {
            json_decref(list);
            list = NULL;
        }
    }
    text = list ? json_dumps(list, JSON_COMPACT) : NULL;
    json_decref(list);
    return text;
}

/* Text of the numbers of mw_apply_update's parameters. */
struct apply_scratch {
    char licenses[16], licenses_observed_at[24], observed_at[24], now[24];
};

/*
 * The parameters of mw_apply_update for an accepted item.  Returns 0, or
 * -1 when out of memory.
 */
static int apply_values(const struct store_item *item, struct mw_arena *arena,
                        const char *changes, struct apply_scratch *scratch,
                        const char *values[APPLY_PARAMS])
{
    const struct mw_update_request *u = item->update;
    const struct mw_customer_state *s = &item->updated;

    snprintf(scratch->licenses, sizeof(scratch->licenses), "%d",
             (int)s->licenses);
    snprintf(scratch->licenses_observed_at,
             sizeof(scratch->licenses_observed_at), "%lld",
             (long long)s->licenses_observed_at);
    snprintf(scratch->observed_at, sizeof(scratch->observed_at), "%lld",
             (long long)u->observed_at);
    snprintf(scratch->now, sizeof(scratch->now), "%lld",
             (long long)item->occurred_at);
    values[APPLY_REQUEST_ID] = u->request_id;
    values[APPLY_CUSTOMER_ID] = u->customer_id;
    values[APPLY_SOURCE] = mw_update_source_names[u->source];
    values[APPLY_REQUESTED_BY] = u->requested_by;
    values[APPLY_LICENSES] = scratch->licenses;
    values[APPLY_LICENSES_OBSERVED_AT] =
        s->has_licenses_observed_at ? scratch->licenses_observed_at : NULL;
    values[APPLY_MONITOR_MODE] = s->monitor_mode ? "t" : "f";
    values[APPLY_TWO_FACTOR_REQUIRED] = s->two_factor_required ? "t" : "f";
    values[APPLY_MSP_MANAGEMENT] = s->msp_management ? "t" : "f";
    values[APPLY_APPLY_GLOBAL_RULES] = s->apply_global_rules ? "t" : "f";
    values[APPLY_DELIVERY_DESTINATION] = s->delivery_destination;
    values[APPLY_POLICY_TEMPLATE_ID] = s->policy_template_id;
    values[APPLY_ADDITIONAL_DOMAINS] = store_text_array_literal(
        arena, s->additional_domains, s->additional_domains_count);
    values[APPLY_ADD_DOMAINS] =
        store_text_array_literal(arena, u->add_domains, u->add_domains_count);
    values[APPLY_REMOVE_DOMAINS] = store_text_array_literal(
        arena, u->remove_domains, u->remove_domains_count);
    values[APPLY_ACCOUNT_TYPE] = mw_account_type_names[s->account_type];
    values[APPLY_IS_BOUGHT] = item->is_bought ? "t" : "f";
    values[APPLY_OBSERVED_AT] = scratch->observed_at;
    values[APPLY_CHANGES] = changes;
    values[APPLY_NOW] = scratch->now;
    return values[APPLY_ADDITIONAL_DOMAINS] && values[APPLY_ADD_DOMAINS] &&
                   values[APPLY_REMOVE_DOMAINS]
               ? 0
               : -1;
}

/* Writes an accepted update (mw_apply_update).  Returns 0, or -1 with err. */
static int apply_update(struct store *store, struct store_item *item,
                        struct mw_arena *arena, bool *is_retry,
                        struct mw_error *err)
{
    static const char what[] = "could not apply an update";
    const char *values[APPLY_PARAMS] = {NULL};
    struct apply_scratch scratch;
    char *changes = changes_json(item->changes);
    PGresult *res;
    int rc = 0;

    if (changes == NULL ||
        apply_values(item, arena, changes, &scratch, values) != 0) {
        free(changes);
        return update_broken(what, item->update->request_id, "out of memory",
                             err);
    }
    res = PQexecParams(store->conn, sql_apply_update, APPLY_PARAMS, NULL,
                       values, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        rc = update_failed(store, what, res, is_retry, err);
    PQclear(res);
    free(changes);
    return rc;
}

int store_update_claim(struct store *store, struct store_item *item,
                       struct mw_arena *arena, bool *is_retry,
                       struct mw_error *err)
{
    item->outcome = STORE_PENDING;
    item->is_bought = false;
    if (load_and_judge(store, item, arena, is_retry, err) != 0)
        return -1;
    if (item->outcome != STORE_PENDING)
        return 0;
    item->is_bought = item->update->has_account_type;
    if (apply_update(store, item, arena, is_retry, err) != 0)
        return -1;
    item->outcome = STORE_UPDATED;
    return 0;
}
