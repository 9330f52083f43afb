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
 *
 * With a second session (process_use_second_session), a batch of enough
 * creations is split (split.h) and its halves claimed and committed on
 * the two sessions at once; the batch counts as done when both
 * committed.  A half committed before the other failed is redelivered
 * with the rest and finds its requests recorded: nothing is published
 * twice.
 */
#include "process.h"

#include "arena.h"
#include "events.h"
#include "ids.h"
#include "kafka.h"
#include "log.h"
#include "metrics.h"
#include "offload.h"
#include "rules.h"
#include "split.h"

#include <openssl/sha.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What a process and its twin share. */
struct process_shared {
    const struct mw_config *cfg;
    struct codec *codec;
    /* The codec is one thread's at a time: a twin's prepare on the
     * consumer's thread may overlap its sibling's commit on another. */
    pthread_mutex_t codec_lock;
    struct store *store;
    struct offload *offload; /* the second session; NULL without one */
};

struct process {
    struct process_shared *sh;
    bool is_twin; /* sh is its sibling's */
    struct mw_arena *arena;
    /* Per-batch arrays, grown to the largest batch seen. */
    size_t cap;
    struct store_item *items;
    struct mw_record *records;
    struct store_outbox_row *rows;
    const char **dlq_reasons;
    const char **dlq_errors;
    /* With the second session: which half each item goes to, the items
     * by half, and the halves' items as claimed. */
    unsigned char *half;
    size_t *order;
    struct store_item *split_items;
};

/* A process with its own batch buffers and sh; NULL when out of memory. */
static struct process *process_alloc(struct process_shared *sh,
                                     struct mw_error *err)
{
    struct process *p = calloc(1, sizeof(*p));

    if (p != NULL)
        p->arena = arena_new();
    if (p == NULL || p->arena == NULL) {
        free(p);
        mw_error_no_memory(err);
        return NULL;
    }
    p->sh = sh;
    return p;
}

struct process *process_new(const struct mw_config *cfg, struct codec *codec,
                            struct store *store, struct mw_error *err)
{
    struct process_shared *sh = calloc(1, sizeof(*sh));
    struct process *p;

    if (sh == NULL) {
        mw_error_no_memory(err);
        return NULL;
    }
    p = process_alloc(sh, err);
    if (p == NULL) {
        free(sh);
        return NULL;
    }
    pthread_mutex_init(&sh->codec_lock, NULL);
    sh->cfg = cfg;
    sh->codec = codec;
    sh->store = store;
    return p;
}

struct process *process_new_twin(const struct process *sibling,
                                 struct mw_error *err)
{
    struct process *p = process_alloc(sibling->sh, err);

    if (p != NULL)
        p->is_twin = true;
    return p;
}

void process_destroy(struct process *process)
{
    if (process == NULL)
        return;
    if (!process->is_twin) {
        offload_destroy(process->sh->offload);
        pthread_mutex_destroy(&process->sh->codec_lock);
        free(process->sh);
    }
    arena_destroy(process->arena);
    free(process->half);
    free(process->order);
    free(process->split_items);
    free(process->items);
    free(process->records);
    free(process->rows);
    free(process->dlq_reasons);
    free(process->dlq_errors);
    free(process);
}

/*
 * Returns old grown to count elements of size bytes, or old as it was
 * with *is_oom set when that fails or *is_oom is set already.
 */
static void *resize(void *old, size_t count, size_t size, bool *is_oom)
{
    void *grown = *is_oom ? NULL : realloc(old, count * size);

    if (grown == NULL) {
        *is_oom = true;
        return old;
    }
    return grown;
}

static int grow(struct process *p, size_t count)
{
    bool is_oom = false;

    if (count <= p->cap)
        return 0;
    p->items = resize(p->items, count, sizeof(*p->items), &is_oom);
    p->records = resize(p->records, count, sizeof(*p->records), &is_oom);
    /* An item makes at most two outbox rows (a trial bought early). */
    p->rows = resize(p->rows, 2 * count, sizeof(*p->rows), &is_oom);
    p->dlq_reasons =
        resize(p->dlq_reasons, count, sizeof(*p->dlq_reasons), &is_oom);
    p->dlq_errors =
        resize(p->dlq_errors, count, sizeof(*p->dlq_errors), &is_oom);
    p->half = resize(p->half, count, sizeof(*p->half), &is_oom);
    p->order = resize(p->order, count, sizeof(*p->order), &is_oom);
    p->split_items =
        resize(p->split_items, count, sizeof(*p->split_items), &is_oom);
    if (is_oom)
        return -1;
    p->cap = count;
    return 0;
}

/* The DLQ copy of a message: its key, headers and bytes plus dlq.*. */
static int dlq_row(struct process *p, const struct process_msg *m,
                   const char *reason, const char *error,
                   struct store_outbox_row *row, struct mw_error *err)
{
    struct kafka_headers_buf hb;
    char partition[16], offset[24], timestamp[24];
    const char *group = p->sh->cfg->group_id;
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
    rc = rc ? rc : kafka_headers_add(&hb, name, value, (ssize_t)strlen(value))
    ADD("dlq.reason", reason);
    ADD("dlq.error", error);
    ADD("dlq.original.topic", m->topic);
    ADD("dlq.original.partition", partition);
    ADD("dlq.original.offset", offset);
    ADD("dlq.original.timestamp", timestamp);
    ADD("dlq.consumer.group", group);
#undef ADD
    if (rc < 0) {
        mw_error_no_memory(err);
        return -1;
    }
    /* A deterministic id per consumed position: a batch re-read after a
     * crash adds no second DLQ copy (the outbox skips a known id). */
    {
        char *id = arena_alloc(p->arena, IDS_UUID_LEN + 1);
        char *source = arena_printf(p->arena, "%s:%d:%lld", m->topic,
                                    (int)m->partition, (long long)m->offset);

        if (id == NULL || source == NULL) {
            mw_error_no_memory(err);
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

/* Sets item->payload_hash from the identity of the request in rec. */
static int hash_identity(struct process *p, const struct mw_record *rec,
                         struct store_item *item, struct mw_error *err)
{
    const void *id_bytes;
    size_t id_len;

    if (codec_request_identity(p->sh->codec, rec, p->arena, &id_bytes, &id_len,
                               err) < 0)
        return -1;
    SHA256(id_bytes, id_len, item->payload_hash);
    return 0;
}

/*
 * Decodes m into rec; a message that is not a request or a termination
 * becomes a DLQ item with its reason and error.  Returns 0 (with
 * item->kind STORE_ITEM_DLQ when undecodable), or -1 with err when memory
 * ran out, which is not the message's fault.
 */
static int decode(struct process *p, const struct process_msg *m,
                  struct mw_record *rec, struct store_item *item,
                  const char **dlq_reason, const char **dlq_error,
                  struct mw_error *err)
{
    struct mw_error derr;
    enum codec_status status;

    mw_error_clear(&derr);
    status = codec_decode(p->sh->codec, m->value, m->value ? m->value_len : 0,
                          p->arena, rec, &derr);
    if (status == CODEC_OK && rec->type != MW_REC_CUSTOMER_REQUESTED &&
        rec->type != MW_REC_CUSTOMER_TERMINATION_REQUESTED &&
        rec->type != MW_REC_CUSTOMER_UPDATE_REQUESTED) {
        status = CODEC_WRONG_RECORD_TYPE;
        snprintf(derr.msg, sizeof(derr.msg),
                 "a %s record does not belong on the requests topic",
                 mw_record_names[rec->type]);
    }
    if (status == CODEC_OK)
        return 0;
    if (derr.retriable) {
        *err = derr;
        return -1;
    }
    item->kind = STORE_ITEM_DLQ;
    *dlq_reason = codec_status_name(status);
    *dlq_error = arena_strdup(p->arena, derr.msg);
    log_warn("process", "message sent to the dead-letter queue",
             LF_STR("topic", m->topic), LF_INT("partition", m->partition),
             LF_INT("offset", m->offset), LF_STR("reason", *dlq_reason),
             LF_STR("error", derr.msg));
    if (*dlq_error == NULL) {
        mw_error_no_memory(err);
        return -1;
    }
    return 0;
}

/*
 * Makes item an invalid request carrying only the identifiers of a
 * termination or update the rules rejected on its own: claimed like an
 * invalid request, its id is recorded as rejected, so a redelivery
 * publishes nothing new.  Returns 0, or -1 when out of memory.
 */
static int shim_rejected(struct process *p, struct store_item *item,
                         const char *request_id, const char *msp_id,
                         const char *requested_by)
{
    struct mw_request *shim = arena_alloc(p->arena, sizeof(*shim));

    if (shim == NULL)
        return -1;
    memset(shim, 0, sizeof(*shim));
    shim->request_id = request_id;
    shim->msp_id = msp_id;
    shim->requested_by = requested_by;
    item->kind = STORE_ITEM_REQUEST;
    item->request = shim;
    item->termination = NULL;
    item->update = NULL;
    item->is_valid = false;
    return 0;
}

/*
 * Ends the preparation of a termination or update the rules checked (rc
 * as they returned it): a rejected one becomes an invalid request
 * (shim_rejected), then its identity is hashed.  0, or -1 with err.
 */
static int settle_checked(struct process *p, struct mw_record *rec,
                          struct store_item *item, int rc,
                          const char *request_id, const char *msp_id,
                          const char *requested_by, struct mw_error *err)
{
    if (rc == 0) {
        item->is_valid = true;
    } else if (rc < 0 ||
               shim_rejected(p, item, request_id, msp_id, requested_by) != 0) {
        mw_error_no_memory(err);
        return -1;
    }
    return hash_identity(p, rec, item, err);
}

/* Validates a decoded termination into item.  0, or -1 with err. */
static int prepare_termination(struct process *p, struct mw_record *rec,
                               struct store_item *item, struct mw_error *err)
{
    const struct mw_termination_request *t = &rec->u.termination;

    item->kind = STORE_ITEM_TERMINATION;
    item->termination = t;
    return settle_checked(p, rec, item,
                          rules_check_termination(t, &rec->rejection_storage),
                          t->request_id, t->msp_id, t->requested_by, err);
}

/*
 * Validates a decoded update into item: what needs no database now, the
 * rest (rules_apply_update, its judge) when the claim has loaded its
 * customer.  0, or -1 with err.
 */
static int prepare_update(struct process *p, struct mw_record *rec,
                          struct store_item *item, struct mw_error *err)
{
    const struct mw_update_request *u = &rec->u.update;
    struct mw_update_request *normalized =
        arena_alloc(p->arena, sizeof(*normalized));
    int rc = -1;

    item->kind = STORE_ITEM_UPDATE;
    if (normalized != NULL)
        rc = rules_check_update(u, p->arena, normalized,
                                &rec->rejection_storage);
    if (rc == 0) {
        item->update = normalized;
        item->judge = rules_apply_update;
        item->update_rejection = &rec->rejection_storage;
        item->changes = &rec->changes_storage;
    }
    return settle_checked(p, rec, item, rc, u->request_id, u->msp_id,
                          u->requested_by, err);
}

/*
 * Validates a decoded request into item: normalised when valid, its
 * customer id, and a trial's end and reminder.  0, or -1 with err.
 */
static int prepare_request(struct process *p, struct mw_record *rec,
                           struct store_item *item, int64_t now,
                           struct mw_error *err)
{
    struct mw_request *normalized = arena_alloc(p->arena, sizeof(*normalized));
    char *cid = arena_alloc(p->arena, IDS_UUID_LEN + 1);
    int rc;

    item->kind = STORE_ITEM_REQUEST;
    if (hash_identity(p, rec, item, err) < 0)
        return -1;
    if (normalized == NULL || cid == NULL)
        goto oom;
    rc = rules_check_request(&rec->u.request, p->arena, normalized,
                             &rec->rejection_storage);
    if (rc < 0)
        goto oom;
    item->is_valid = rc == 0;
    item->request = item->is_valid ? normalized : &rec->u.request;
    ids_customer_id(rec->u.request.request_id, cid);
    item->customer_id = cid;
    if (rec->u.request.account_type == MW_ACCOUNT_TRIAL) {
        item->trial_ends_at = now + p->sh->cfg->trial_period_ms;
        /* No reminder when disabled or not after the creation. */
        if (p->sh->cfg->trial_reminder_ms > 0 &&
            item->trial_ends_at - p->sh->cfg->trial_reminder_ms > now)
            item->trial_reminder_at =
                item->trial_ends_at - p->sh->cfg->trial_reminder_ms;
    }
    return 0;
oom:
    mw_error_no_memory(err);
    return -1;
}

/* Decodes and validates one message into item; never fails on input. */
static int prepare(struct process *p, const struct process_msg *m,
                   struct mw_record *rec, struct store_item *item,
                   const char **dlq_reason, const char **dlq_error, int64_t now,
                   struct mw_error *err)
{
    memset(item, 0, sizeof(*item));
    item->traceparent = m->traceparent;
    item->occurred_at = now;
    if (decode(p, m, rec, item, dlq_reason, dlq_error, err) < 0)
        return -1;
    rec->rejection_storage.count = 0;
    if (item->kind == STORE_ITEM_DLQ)
        return 0;
    if (rec->type == MW_REC_CUSTOMER_TERMINATION_REQUESTED)
        return prepare_termination(p, rec, item, err);
    if (rec->type == MW_REC_CUSTOMER_UPDATE_REQUESTED)
        return prepare_update(p, rec, item, err);
    return prepare_request(p, rec, item, now, err);
}

/* The request id of a request, termination or update item. */
static const char *item_request_id(const struct store_item *item)
{
    if (item->kind == STORE_ITEM_UPDATE)
        return item->update->request_id;
    return item->kind == STORE_ITEM_TERMINATION ? item->termination->request_id
                                                : item->request->request_id;
}

/* The MSP id of a request, termination or update item, for the log. */
static const char *item_msp_id(const struct store_item *item)
{
    if (item->kind == STORE_ITEM_UPDATE)
        return item->update->msp_id;
    return item->kind == STORE_ITEM_TERMINATION ? item->termination->msp_id
                                                : item->request->msp_id;
}

/*
 * The rows of an applied update: its CustomerUpdated and, for a trial
 * bought early, the TrialConverted after it (same key, so in order).
 * Sets *count to how many.  Returns 0, or -1 with err.
 */
static int updated_rows(struct process *p, const struct store_item *item,
                        struct store_outbox_row *rows, int *count,
                        struct mw_error *err)
{
    log_debug("process", "customer updated",
              LF_STR("request_id", item->update->request_id),
              LF_STR("customer_id", item->update->customer_id),
              LF_STR("msp_id", item->update->msp_id),
              LF_INT("changes", (int64_t)item->changes->count));
    *count = item->is_bought ? 2 : 1;
    if (events_updated_row(p->sh->codec, p->arena, item, &rows[0], err) < 0)
        return -1;
    return item->is_bought
               ? events_bought_row(p->sh->codec, p->arena, item, &rows[1], err)
               : 0;
}

/*
 * Builds the outbox rows of one claimed item: its events, or its DLQ copy.
 * Sets *has_row to how many (at most two).  Returns 0, or -1 with err.
 */
static int outcome_row(struct process *p, const struct process_msg *m,
                       struct mw_record *rec, struct store_item *item,
                       const char *dlq_reason, const char *dlq_error,
                       struct store_outbox_row *row, int *has_row,
                       struct process_stats *stats, struct mw_error *err)
{
    struct mw_rejection *rej = &rec->rejection_storage;

    *has_row = 0;
    if (item->kind == STORE_ITEM_DLQ) {
        stats->dlq++;
        *has_row = 1;
        return dlq_row(p, m, dlq_reason, dlq_error, row, err);
    }
    switch (item->outcome) {
    case STORE_CREATED:
        stats->created++;
        *has_row = 1;
        log_debug("process", "customer provisioned",
                  LF_STR("request_id", item_request_id(item)),
                  LF_STR("customer_id", item->customer_id),
                  LF_STR("msp_id", item->request->msp_id));
        return events_created_row(p->sh->codec, p->arena, item, row, err);
    case STORE_UPDATED:
        stats->updated++;
        return updated_rows(p, item, row, has_row, err);
    case STORE_REJECTED:
        stats->rejected++;
        /* Invalid items and judged updates carry the rules' errors. */
        if ((item->kind == STORE_ITEM_TERMINATION && item->is_valid) ||
            (item->kind == STORE_ITEM_UPDATE && rej->count == 0))
            rules_reject_termination(item->termination_code, rej);
        else if (item->kind == STORE_ITEM_REQUEST && item->is_valid)
            rules_reject_taken_domains(item->request->primary_domain,
                                       item->taken_domains,
                                       item->taken_domains_count, rej);
        *has_row = 1;
        log_debug("process", "request rejected",
                  LF_STR("request_id", item_request_id(item)),
                  LF_STR("msp_id", item_msp_id(item)),
                  LF_INT("errors", (int64_t)rej->count));
        return events_rejected_row(p->sh->codec, p->arena, item, rej, row, err);
    case STORE_CONFLICT:
        stats->conflicts++;
        rules_reject_conflict(item_request_id(item), rej);
        *has_row = 1;
        return events_rejected_row(p->sh->codec, p->arena, item, rej, row, err);
    case STORE_DUPLICATE:
        stats->duplicates++;
        return 0;
    case STORE_SCHEDULED:
        stats->scheduled++;
        return 0;
    default:
        mw_error_set(err, MW_ERR_DATABASE, false,
                     "request %s has no outcome after its claim",
                     item_request_id(item));
        return -1;
    }
}

/*
 * Builds the outbox rows of the items order[0..n), in that order, into
 * p->rows from *nrows on.  Returns 0, or -1 with err.
 */
static int rows_of(struct process *p, const struct process_msg *msgs,
                   const size_t *order, size_t n, size_t *nrows,
                   struct process_stats *local, struct mw_error *err)
{
    int rc = 0;

    pthread_mutex_lock(&p->sh->codec_lock);
    for (size_t k = 0; k < n && rc == 0; k++) {
        size_t i = order[k];
        int has_row;

        rc = outcome_row(p, &msgs[i], &p->records[i], &p->items[i],
                         p->dlq_reasons[i], p->dlq_errors[i], &p->rows[*nrows],
                         &has_row, local, err);
        *nrows += (size_t)has_row;
    }
    pthread_mutex_unlock(&p->sh->codec_lock);
    return rc < 0 ? -1 : 0;
}

/* Claims the whole batch on the consumer's session and commits it. */
static int claim_on_one_session(struct process *p,
                                const struct process_msg *msgs, size_t count,
                                struct process_stats *local,
                                struct mw_error *err)
{
    size_t nrows = 0;

    if (store_batch_claim(p->sh->store, p->items, count, p->arena, err) < 0)
        return -1;
    for (size_t i = 0; i < count; i++)
        p->order[i] = i;
    if (rows_of(p, msgs, p->order, count, &nrows, local, err) < 0) {
        store_batch_abort(p->sh->store);
        return -1;
    }
    return store_batch_finish(p->sh->store, p->rows, nrows, err);
}

/* ---- The second session ------------------------------------------------ */

int process_use_second_session(struct process *p, const char *conninfo,
                               struct mw_error *err)
{
    p->sh->offload = offload_new(conninfo, err);
    return p->sh->offload == NULL ? -1 : 0;
}

/*
 * Rolls back both halves (whichever is still open) after one failed and
 * returns -1 with the failure in err: the first half's when it failed
 * (is_a_failed), else the second's, berr.
 */
static int abandon_halves(struct process *p, bool is_a_failed,
                          const struct mw_error *berr, struct mw_error *err)
{
    store_batch_abort(p->sh->store);
    offload_abort(p->sh->offload);
    if (!is_a_failed)
        *err = *berr;
    return -1;
}

/* Lists the items of the first half, then the second's, in p->order. */
static size_t order_halves(struct process *p, size_t count)
{
    size_t na = 0, k;

    for (size_t i = 0; i < count; i++) {
        if (p->half[i] == 0)
            p->order[na++] = i;
    }
    k = na;
    for (size_t i = 0; i < count; i++) {
        if (p->half[i] == 1)
            p->order[k++] = i;
    }
    return na;
}

/* Copies the claimed items order[from..to) back to their batch places. */
static void claimed_back(struct process *p, size_t from, size_t to)
{
    for (size_t k = from; k < to; k++)
        p->items[p->order[k]] = p->split_items[k];
}

/*
 * Claims the two halves of the batch (p->half) at once, the first on the
 * consumer's session and the second on the other, then writes each
 * half's outbox rows in its own transaction and commits both.  The first
 * half's events are encoded while the second half is still claimed.
 */
static int claim_on_two_sessions(struct process *p,
                                 const struct process_msg *msgs, size_t count,
                                 struct process_stats *local,
                                 struct mw_error *err)
{
    struct mw_error berr;
    size_t na = order_halves(p, count), nrows = 0, rows_a;
    int rc_a, rc_b;

    for (size_t k = 0; k < count; k++)
        p->split_items[k] = p->items[p->order[k]];
    log_debug("process", "batch split over two database sessions",
              LF_INT("first", (int64_t)na),
              LF_INT("second", (int64_t)(count - na)));
    mw_error_clear(&berr);
    offload_claim(p->sh->offload, p->split_items + na, count - na);
    rc_a = store_batch_claim(p->sh->store, p->split_items, na, p->arena, err);
    if (rc_a == 0) {
        claimed_back(p, 0, na);
        rc_a = rows_of(p, msgs, p->order, na, &nrows, local, err);
    }
    rc_b = offload_wait(p->sh->offload, &berr);
    if (rc_a < 0 || rc_b < 0)
        return abandon_halves(p, rc_a < 0, &berr, err);
    claimed_back(p, na, count);
    rows_a = nrows;
    if (rows_of(p, msgs, p->order + na, count - na, &nrows, local, err) < 0)
        return abandon_halves(p, true, &berr, err);
    offload_finish(p->sh->offload, p->rows + rows_a, nrows - rows_a);
    rc_a = store_batch_finish(p->sh->store, p->rows, rows_a, err);
    rc_b = offload_wait(p->sh->offload, &berr);
    if (rc_a == 0 && rc_b < 0)
        *err = berr;
    return rc_a < 0 || rc_b < 0 ? -1 : 0;
}

int process_prepare(struct process *p, const struct process_msg *msgs,
                    size_t count, struct mw_error *err)
{
    const int64_t now = mw_now_ms();
    int rc = 0;

    if (count == 0)
        return 0;
    if (grow(p, count) < 0) {
        mw_error_no_memory(err);
        return -1;
    }
    arena_reset(p->arena);
    pthread_mutex_lock(&p->sh->codec_lock);
    for (size_t i = 0; i < count && rc == 0; i++) {
        p->dlq_reasons[i] = NULL;
        p->dlq_errors[i] = NULL;
        rc = prepare(p, &msgs[i], &p->records[i], &p->items[i],
                     &p->dlq_reasons[i], &p->dlq_errors[i], now, err);
    }
    pthread_mutex_unlock(&p->sh->codec_lock);
    return rc < 0 ? -1 : 0;
}

int process_commit(struct process *p, const struct process_msg *msgs,
                   size_t count, struct process_stats *stats,
                   struct mw_error *err)
{
    struct process_stats local = {0};

    if (count == 0)
        return 0;
    if (p->sh->offload != NULL &&
        split_batch(p->items, p->records, count, SPLIT_MIN_CREATIONS, p->arena,
                    p->half) == 2) {
        if (claim_on_two_sessions(p, msgs, count, &local, err) < 0)
            return -1;
    } else if (claim_on_one_session(p, msgs, count, &local, err) < 0) {
        return -1;
    }
    if (stats)
        *stats = local;
    atomic_fetch_add(&mw_metrics.provisioned, (long long)local.created);
    atomic_fetch_add(&mw_metrics.updated, (long long)local.updated);
    atomic_fetch_add(&mw_metrics.rejected,
                     (long long)(local.rejected + local.conflicts));
    atomic_fetch_add(&mw_metrics.conflicts, (long long)local.conflicts);
    atomic_fetch_add(&mw_metrics.duplicates, (long long)local.duplicates);
    atomic_fetch_add(&mw_metrics.dlq, (long long)local.dlq);
    atomic_fetch_add(&mw_metrics.batches, 1);
    return 0;
}

int process_batch(struct process *p, const struct process_msg *msgs,
                  size_t count, struct process_stats *stats,
                  struct mw_error *err)
{
    if (process_prepare(p, msgs, count, err) < 0)
        return -1;
    return process_commit(p, msgs, count, stats, err);
}
