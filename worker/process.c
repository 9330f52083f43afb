/*
 * One batch of consumed messages, from bytes to a committed transaction.
 *
 * The order of work is fixed: decode and validate everything first (no
 * I/O), claim every request in the database in one round trip, then build
 * the outcome events from what the database decided and write them to the
 * outbox in the same transaction.  So an outcome and its event are
 * durable together or not at all, and offsets may be committed as soon as
 * process_batch returns 0.  Events are encoded once, here: the relay
 * publishes the stored bytes, so a re-publication is byte-identical.
 */
#include "process.h"

#include "arena.h"
#include "ids.h"
#include "kafka.h"
#include "log.h"
#include "metrics.h"
#include "rules.h"

#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct process {
    const struct mw_config *cfg;
    struct codec *codec;
    struct store *store;
    struct mw_arena *arena;
    /* Per-batch arrays, grown to the largest batch seen. */
    size_t cap;
    struct store_item *items;
    struct mw_record *records;
    struct store_outbox_row *rows;
    const char **dlq_reasons;
    const char **dlq_errors;
};

struct process *process_new(const struct mw_config *cfg, struct codec *codec,
                            struct store *store, struct mw_error *err)
{
    struct process *p = calloc(1, sizeof(*p));

    if (p == NULL || (p->arena = arena_new()) == NULL) {
        free(p);
        mw_error_set(err, MW_ERR_SYSTEM, false, "out of memory");
        return NULL;
    }
    p->cfg = cfg;
    p->codec = codec;
    p->store = store;
    return p;
}

void process_destroy(struct process *process)
{
    if (process == NULL)
        return;
    arena_destroy(process->arena);
    free(process->items);
    free(process->records);
    free(process->rows);
    free(process->dlq_reasons);
    free(process->dlq_errors);
    free(process);
}

static int grow(struct process *p, size_t count)
{
    void *a, *b, *c, *d, *e;

    if (count <= p->cap)
        return 0;
    a = realloc(p->items, count * sizeof(*p->items));
    if (a)
        p->items = a;
    b = realloc(p->records, count * sizeof(*p->records));
    if (b)
        p->records = b;
    /* An item makes at most one outbox row. */
    c = realloc(p->rows, count * sizeof(*p->rows));
    if (c)
        p->rows = c;
    d = realloc(p->dlq_reasons, count * sizeof(*p->dlq_reasons));
    if (d)
        p->dlq_reasons = d;
    e = realloc(p->dlq_errors, count * sizeof(*p->dlq_errors));
    if (e)
        p->dlq_errors = e;
    if (!a || !b || !c || !d || !e)
        return -1;
    p->cap = count;
    return 0;
}

static enum mw_installation installation_of(int service)
{
    switch (service) {
    case MW_SERVICE_MESH_365:
        return MW_INSTALL_M365_API_CONSENT;
    case MW_SERVICE_MESH_UNIFIED:
        return MW_INSTALL_MX_RECORDS_AND_M365_API_CONSENT;
    default:
        return MW_INSTALL_MX_RECORDS;
    }
}

static void hex(const unsigned char *in, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";

    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * len] = '\0';
}

int process_event_row(struct codec *codec, struct mw_arena *arena,
                      const struct mw_record *rec, const char *event_id,
                      const char *key, const char *request_id,
                      const char *traceparent, struct store_outbox_row *row,
                      struct mw_error *err)
{
    struct kafka_headers_buf hb;
    const char *type = mw_record_names[rec->type];
    const void *payload;
    size_t payload_len;

    if (codec_encode(codec, rec, arena, &payload, &payload_len, err) < 0)
        return -1;
    kafka_headers_init(&hb, arena);
    if (kafka_headers_add(&hb, "event_type", type, (ssize_t)strlen(type)) ||
        kafka_headers_add(&hb, "event_id", event_id,
                          (ssize_t)strlen(event_id)) ||
        (request_id && kafka_headers_add(&hb, "request_id", request_id,
                                         (ssize_t)strlen(request_id))) ||
        (traceparent && kafka_headers_add(&hb, "traceparent", traceparent,
                                          (ssize_t)strlen(traceparent)))) {
        mw_error_set(err, MW_ERR_SYSTEM, true, "out of memory");
        return -1;
    }
    row->stream = STORE_STREAM_EVENTS;
    row->event_id = event_id;
    row->key = key;
    row->key_len = strlen(key);
    row->headers = hb.buf;
    row->headers_len = hb.len;
    row->payload = payload;
    row->payload_len = payload_len;
    return 0;
}

/* Encodes rec and fills an outbox row for customer.events. */
static int event_row(struct process *p, const struct mw_record *rec,
                     const char *event_id, const char *key,
                     const char *request_id, const char *traceparent,
                     struct store_outbox_row *row, struct mw_error *err)
{
    return process_event_row(p->codec, p->arena, rec, event_id, key,
                             request_id, traceparent, row, err);
}

static int rejected_row(struct process *p, const char *request_id,
                        const char *msp_id, const char *requested_by,
                        int64_t occurred_at, const char *source_id,
                        const struct mw_rejection *rej,
                        const char *traceparent, struct store_outbox_row *row,
                        struct mw_error *err)
{
    struct mw_record rec;
    char *event_id = arena_alloc(p->arena, IDS_UUID_LEN + 1);

    if (event_id == NULL) {
        mw_error_set(err, MW_ERR_SYSTEM, false, "out of memory");
        return -1;
    }
    ids_event_id("CustomerRejected", source_id, event_id);
    memset(&rec, 0, sizeof(rec));
    rec.type = MW_REC_CUSTOMER_REJECTED;
    rec.u.rejected.event_id = event_id;
    rec.u.rejected.request_id = request_id;
    rec.u.rejected.msp_id = msp_id;
    rec.u.rejected.occurred_at = occurred_at;
    rec.u.rejected.requested_by = requested_by;
    rec.u.rejected.rejection = rej;
    return event_row(p, &rec, event_id, request_id, request_id, traceparent,
                     row, err);
}

static int created_row(struct process *p, const struct store_item *item,
                       struct store_outbox_row *row, struct mw_error *err)
{
    const struct mw_request *r = item->request;
    struct mw_record rec;
    struct mw_customer_created *c = &rec.u.created;
    char *event_id = arena_alloc(p->arena, IDS_UUID_LEN + 1);

    if (event_id == NULL) {
        mw_error_set(err, MW_ERR_SYSTEM, false, "out of memory");
        return -1;
    }
    ids_event_id("CustomerCreated", r->request_id, event_id);
    memset(&rec, 0, sizeof(rec));
    rec.type = MW_REC_CUSTOMER_CREATED;
    c->event_id = event_id;
    c->customer_id = item->customer_id;
    c->request_id = r->request_id;
    c->msp_id = r->msp_id;
    c->occurred_at = item->occurred_at;
    c->requested_by = r->requested_by;
    c->company_name = r->company_name;
    c->primary_domain = r->primary_domain;
    c->additional_domains = r->additional_domains;
    c->additional_domains_count = r->additional_domains_count;
    c->mail_platform = r->mail_platform;
    c->service = r->service;
    c->account_type = r->account_type;
    c->licenses = r->licenses;
    c->billable = r->account_type == MW_ACCOUNT_BUY_NOW;
    if (r->account_type == MW_ACCOUNT_BUY_NOW) {
        c->has_billing_starts_at = true;
        c->billing_starts_at = item->occurred_at;
    } else if (r->account_type == MW_ACCOUNT_TRIAL) {
        c->has_billing_starts_at = true;
        c->billing_starts_at = item->trial_ends_at;
        c->has_trial_ends_at = true;
        c->trial_ends_at = item->trial_ends_at;
    }
    c->default_admin_email = r->default_admin_email;
    c->delivery_destination = r->delivery_destination;
    c->policy_template_id = r->policy_template_id;
    c->apply_global_rules = r->apply_global_rules;
    c->msp_management = r->msp_management;
    c->two_factor_required = r->two_factor_required;
    c->monitor_mode = r->monitor_mode;
    c->installation = installation_of(r->service);
    return event_row(p, &rec, event_id, item->customer_id, r->request_id,
                     item->traceparent, row, err);
}

/* The DLQ copy of a message: its key, headers and bytes plus dlq.*. */
static int dlq_row(struct process *p, const struct process_msg *m,
                   const char *reason, const char *error,
                   struct store_outbox_row *row, struct mw_error *err)
{
    struct kafka_headers_buf hb;
    char partition[16], offset[24], timestamp[24];
    const char *group = p->cfg->group_id;
    int rc = 0;

    snprintf(partition, sizeof(partition), "%d", (int)m->partition);
    snprintf(offset, sizeof(offset), "%lld", (long long)m->offset);
    snprintf(timestamp, sizeof(timestamp), "%lld", (long long)m->timestamp);
    kafka_headers_init(&hb, p->arena);
    if (m->headers_len > 0) {
        hb.buf = arena_alloc(p->arena, m->headers_len);
        if (hb.buf == NULL)
            rc = -1;
        else
            memcpy(hb.buf, m->headers, m->headers_len);
        hb.len = hb.cap = m->headers_len;
    }
#define ADD(name, value)                                                       \
    rc = rc ? rc                                                               \
            : kafka_headers_add(&hb, name, value, (ssize_t)strlen(value))
    ADD("dlq.reason", reason);
    ADD("dlq.error", error);
    ADD("dlq.original.topic", m->topic);
    ADD("dlq.original.partition", partition);
    ADD("dlq.original.offset", offset);
    ADD("dlq.original.timestamp", timestamp);
    ADD("dlq.consumer.group", group);
#undef ADD
    if (rc < 0) {
        mw_error_set(err, MW_ERR_SYSTEM, false, "out of memory");
        return -1;
    }
    /* A deterministic id per consumed position: a batch re-read after a
     * crash adds no second DLQ copy (the outbox skips a known id). */
    {
        char *id = arena_alloc(p->arena, IDS_UUID_LEN + 1);
        char *source = arena_printf(p->arena, "%s:%d:%lld", m->topic,
                                    (int)m->partition, (long long)m->offset);

        if (id == NULL || source == NULL) {
            mw_error_set(err, MW_ERR_SYSTEM, false, "out of memory");
            return -1;
        }
        ids_event_id("DeadLetter", source, id);
        row->event_id = id;
    }
    row->stream = STORE_STREAM_DLQ;
    row->key = m->key;
    row->key_len = m->key_len;
    row->headers = hb.buf;
    row->headers_len = hb.len;
    row->payload = m->value;
    row->payload_len = m->value_len;
    return 0;
}

/* Decodes and validates one message into item; never fails on input. */
static int prepare(struct process *p, const struct process_msg *m,
                   struct mw_record *rec, struct store_item *item,
                   const char **dlq_reason, const char **dlq_error,
                   int64_t now, struct mw_error *err)
{
    struct mw_error derr;
    enum codec_status status;

    memset(item, 0, sizeof(*item));
    item->traceparent = m->traceparent;
    item->occurred_at = now;
    mw_error_clear(&derr);
    status = codec_decode(p->codec, m->value, m->value ? m->value_len : 0,
                          p->arena, rec, &derr);
    if (status == CODEC_OK && rec->type != MW_REC_CUSTOMER_REQUESTED &&
        rec->type != MW_REC_CUSTOMER_TERMINATION_REQUESTED) {
        status = CODEC_WRONG_RECORD_TYPE;
        snprintf(derr.msg, sizeof(derr.msg),
                 "a %s record does not belong on the requests topic",
                 mw_record_names[rec->type]);
    }
    if (status != CODEC_OK && derr.retriable) {
        /* Out of memory while decoding is not the message's fault. */
        *err = derr;
        return -1;
    }
    if (status != CODEC_OK) {
        item->kind = STORE_ITEM_DLQ;
        *dlq_reason = codec_status_name(status);
        *dlq_error = arena_strdup(p->arena, derr.msg);
        log_warn("process", "message sent to the dead-letter queue",
                 LF_STR("topic", m->topic), LF_INT("partition", m->partition),
                 LF_INT("offset", m->offset), LF_STR("reason", *dlq_reason),
                 LF_STR("error", derr.msg));
        return *dlq_error ? 0 : -1;
    }
    if (rec->type == MW_REC_CUSTOMER_TERMINATION_REQUESTED) {
        struct mw_rejection *rej = &rec->rejection_storage;

        item->kind = STORE_ITEM_TERMINATION;
        item->termination = &rec->u.termination;
        rej->count = 0;
        switch (rules_check_termination(&rec->u.termination, rej)) {
        case 0:
            item->is_valid = true;
            break;
        case 1: {
            /* Claimed like an invalid request: its id is recorded as
             * rejected, so a redelivery publishes nothing new. */
            struct mw_request *shim = arena_alloc(p->arena, sizeof(*shim));

            if (shim == NULL)
                goto oom;
            memset(shim, 0, sizeof(*shim));
            shim->request_id = rec->u.termination.request_id;
            shim->msp_id = rec->u.termination.msp_id;
            shim->requested_by = rec->u.termination.requested_by;
            item->kind = STORE_ITEM_REQUEST;
            item->request = shim;
            item->termination = NULL;
            item->is_valid = false;
            break;
        }
        default:
            goto oom;
        }
        {
            const void *id_bytes;
            size_t id_len;

            if (codec_request_identity(p->codec, rec, p->arena, &id_bytes,
                                       &id_len, err) < 0)
                return -1;
            SHA256(id_bytes, id_len, item->payload_hash);
        }
        return 0;
    }
    {
        const void *id_bytes;
        size_t id_len;
        struct mw_request *normalized;
        struct mw_rejection *rej = &rec->rejection_storage;
        int rc;

        item->kind = STORE_ITEM_REQUEST;
        if (codec_request_identity(p->codec, rec, p->arena, &id_bytes, &id_len,
                                   err) < 0)
            return -1;
        SHA256(id_bytes, id_len, item->payload_hash);
        normalized = arena_alloc(p->arena, sizeof(*normalized));
        if (normalized == NULL)
            goto oom;
        rej->count = 0;
        rc = rules_check_request(&rec->u.request, p->arena, normalized, rej);
        if (rc < 0)
            goto oom;
        item->is_valid = rc == 0;
        item->request = item->is_valid ? normalized : &rec->u.request;
        {
            char *cid = arena_alloc(p->arena, IDS_UUID_LEN + 1);

            if (cid == NULL)
                goto oom;
            ids_customer_id(rec->u.request.request_id, cid);
            item->customer_id = cid;
        }
        if (rec->u.request.account_type == MW_ACCOUNT_TRIAL) {
            item->trial_ends_at = now + p->cfg->trial_period_ms;
            /* No reminder when disabled or not after the creation. */
            if (p->cfg->trial_reminder_ms > 0 &&
                item->trial_ends_at - p->cfg->trial_reminder_ms > now)
                item->trial_reminder_at =
                    item->trial_ends_at - p->cfg->trial_reminder_ms;
        }
        return 0;
    }
oom:
    mw_error_set(err, MW_ERR_SYSTEM, false, "out of memory");
    return -1;
}

/* Fills rej with one DOMAIN_ALREADY_PROVISIONED error per field. */
static void taken_rejection(const struct store_item *item,
                            struct mw_rejection *rej)
{
    const struct mw_request *r = item->request;

    rej->count = 0;
    for (size_t i = 0; i < item->taken_domains_count; i++) {
        const char *d = item->taken_domains[i];
        const char *field = strcmp(d, r->primary_domain) == 0
                                ? "primary_domain"
                                : "additional_domains";

        rules_add_error(rej, field, MW_REJ_DOMAIN_ALREADY_PROVISIONED,
                        "The domain \"%s\" is already provisioned for another "
                        "customer.",
                        d);
    }
    if (rej->count == 0)
        rules_add_error(rej, "primary_domain",
                        MW_REJ_DOMAIN_ALREADY_PROVISIONED,
                        "A domain of this request is already provisioned for "
                        "another customer.");
}

/* Builds the outbox row of one claimed item; *has_row says if there is one. */
static int outcome_row(struct process *p, const struct process_msg *m,
                       struct mw_record *rec, struct store_item *item,
                       const char *dlq_reason, const char *dlq_error,
                       struct store_outbox_row *row, int *has_row,
                       struct process_stats *stats, struct mw_error *err)
{
    struct mw_rejection *rej = &rec->rejection_storage;
    const char *request_id, *msp_id, *requested_by;
    char source[256], hash[65];

    *has_row = 0;
    if (item->kind == STORE_ITEM_DLQ) {
        stats->dlq++;
        *has_row = 1;
        return dlq_row(p, m, dlq_reason, dlq_error, row, err);
    }
    if (item->kind == STORE_ITEM_TERMINATION) {
        request_id = item->termination->request_id;
        msp_id = item->termination->msp_id;
        requested_by = item->termination->requested_by;
    } else {
        request_id = item->request->request_id;
        msp_id = item->request->msp_id;
        requested_by = item->request->requested_by;
    }
    switch (item->outcome) {
    case STORE_CREATED:
        stats->created++;
        *has_row = 1;
        log_debug("process", "customer provisioned",
                  LF_STR("request_id", request_id),
                  LF_STR("customer_id", item->customer_id),
                  LF_STR("msp_id", msp_id));
        return created_row(p, item, row, err);
    case STORE_REJECTED:
        stats->rejected++;
        if (item->kind == STORE_ITEM_TERMINATION && item->is_valid) {
            rej->count = 0;
            rules_add_error(rej, "customer_id", item->termination_code,
                            item->termination_code == MW_REJ_UNKNOWN_CUSTOMER
                                ? "There is no customer with this id."
                            : item->termination_code ==
                                    MW_REJ_NOT_CUSTOMER_OWNER
                                ? "The customer belongs to another MSP."
                                : "The customer is already terminated or "
                                  "has a termination scheduled.");
        } else if (item->kind == STORE_ITEM_REQUEST && item->is_valid) {
            taken_rejection(item, rej);
        }
        *has_row = 1;
        log_debug("process", "request rejected",
                  LF_STR("request_id", request_id), LF_STR("msp_id", msp_id),
                  LF_INT("errors", (int64_t)rej->count));
        return rejected_row(p, request_id, msp_id, requested_by,
                            item->occurred_at, request_id, rej,
                            item->traceparent, row, err);
    case STORE_CONFLICT:
        stats->conflicts++;
        hex(item->payload_hash, sizeof(item->payload_hash), hash);
        snprintf(source, sizeof(source), "%s:conflict:%s", request_id, hash);
        rej->count = 0;
        rules_add_error(rej, "request_id", MW_REJ_REQUEST_ID_CONFLICT,
                        "The request id \"%s\" was already used for a request "
                        "with other content; the first request stands.",
                        request_id);
        *has_row = 1;
        return rejected_row(p, request_id, msp_id, requested_by,
                            item->occurred_at, source, rej, item->traceparent,
                            row, err);
    case STORE_DUPLICATE:
        stats->duplicates++;
        return 0;
    case STORE_SCHEDULED:
        stats->scheduled++;
        return 0;
    default:
        mw_error_set(err, MW_ERR_DATABASE, false,
                     "request %s has no outcome after its claim", request_id);
        return -1;
    }
}

int process_batch(struct process *p, const struct process_msg *msgs,
                  size_t count, struct process_stats *stats,
                  struct mw_error *err)
{
    const int64_t now = mw_now_ms();
    size_t nrows = 0;
    struct process_stats local = {0};

    if (count == 0)
        return 0;
    if (grow(p, count) < 0) {
        mw_error_set(err, MW_ERR_SYSTEM, true, "out of memory");
        return -1;
    }
    arena_reset(p->arena);
    for (size_t i = 0; i < count; i++) {
        p->dlq_reasons[i] = NULL;
        p->dlq_errors[i] = NULL;
        if (prepare(p, &msgs[i], &p->records[i], &p->items[i],
                    &p->dlq_reasons[i], &p->dlq_errors[i], now, err) < 0)
            return -1;
    }
    if (store_batch_claim(p->store, p->items, count, p->arena, err) < 0)
        return -1;
    for (size_t i = 0; i < count; i++) {
        int has_row;

        if (outcome_row(p, &msgs[i], &p->records[i], &p->items[i],
                        p->dlq_reasons[i], p->dlq_errors[i], &p->rows[nrows],
                        &has_row, &local, err) < 0) {
            store_batch_abort(p->store);
            return -1;
        }
        nrows += (size_t)has_row;
    }
    if (store_batch_finish(p->store, p->rows, nrows, err) < 0)
        return -1;
    if (stats)
        *stats = local;
    atomic_fetch_add(&mw_metrics.provisioned, (long long)local.created);
    atomic_fetch_add(&mw_metrics.rejected,
                     (long long)(local.rejected + local.conflicts));
    atomic_fetch_add(&mw_metrics.conflicts, (long long)local.conflicts);
    atomic_fetch_add(&mw_metrics.duplicates, (long long)local.duplicates);
    atomic_fetch_add(&mw_metrics.dlq, (long long)local.dlq);
    atomic_fetch_add(&mw_metrics.batches, 1);
    return 0;
}
