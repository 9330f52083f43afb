/*
 * The events of customer.events as outbox rows.  Every event the worker
 * publishes is built here, whether a batch (process) or a timer
 * (scheduler) caused it, so that each is encoded once, keyed by its
 * customer or request and labelled with the headers of SPEC §3 in one
 * way; the relay later publishes the stored bytes as they are.  It writes
 * nothing itself: the rows go to the outbox in the caller's transaction.
 *
 * Invariant: an event id is derived from what the event reports (ids.h),
 * never drawn at random, so an event written again after a crash has the
 * id it had and the outbox keeps it once.
 */
#include "events.h"

#include "ids.h"
#include "kafka.h"
#include "mw.h"

#include <stdio.h>
#include <string.h>

/* What the MSP must set up for the service, told in CustomerCreated. */
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

int events_row(struct codec *codec, struct mw_arena *arena,
               const struct mw_record *rec, const char *event_id,
               const char *key, const char *request_id, const char *traceparent,
               struct store_outbox_row *row, struct mw_error *err)
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
        mw_error_no_memory(err);
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

/* ---- the outcome of a request ---- */

int events_created_row(struct codec *codec, struct mw_arena *arena,
                       const struct store_item *item,
                       struct store_outbox_row *row, struct mw_error *err)
{
    const struct mw_request *r = item->request;
    struct mw_record rec;
    struct mw_customer_created *c = &rec.u.created;
    char *event_id = arena_alloc(arena, IDS_UUID_LEN + 1);

    if (event_id == NULL) {
        mw_error_no_memory(err);
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
    return events_row(codec, arena, &rec, event_id, item->customer_id,
                      r->request_id, item->traceparent, row, err);
}

/* The request id, MSP id and requester of a request, termination or
 * update item. */
static void item_origin(const struct store_item *item, const char **request_id,
                        const char **msp_id, const char **requested_by)
{
    if (item->kind == STORE_ITEM_UPDATE) {
        *request_id = item->update->request_id;
        *msp_id = item->update->msp_id;
        *requested_by = item->update->requested_by;
    } else if (item->kind == STORE_ITEM_TERMINATION) {
        *request_id = item->termination->request_id;
        *msp_id = item->termination->msp_id;
        *requested_by = item->termination->requested_by;
    } else {
        *request_id = item->request->request_id;
        *msp_id = item->request->msp_id;
        *requested_by = item->request->requested_by;
    }
}

int events_rejected_row(struct codec *codec, struct mw_arena *arena,
                        const struct store_item *item,
                        const struct mw_rejection *rej,
                        struct store_outbox_row *row, struct mw_error *err)
{
    struct mw_record rec;
    const char *request_id, *msp_id, *requested_by, *source;
    char *event_id = arena_alloc(arena, IDS_UUID_LEN + 1);
    char hash[2 * sizeof(item->payload_hash) + 1];

    item_origin(item, &request_id, &msp_id, &requested_by);
    source = request_id;
    if (item->outcome == STORE_CONFLICT) {
        mw_hex_encode(item->payload_hash, sizeof(item->payload_hash), hash);
        source = arena_printf(arena, "%s:conflict:%s", request_id, hash);
    }
    if (event_id == NULL || source == NULL) {
        mw_error_no_memory(err);
        return -1;
    }
    ids_event_id("CustomerRejected", source, event_id);
    memset(&rec, 0, sizeof(rec));
    rec.type = MW_REC_CUSTOMER_REJECTED;
    rec.u.rejected.event_id = event_id;
    rec.u.rejected.request_id = request_id;
    rec.u.rejected.msp_id = msp_id;
    rec.u.rejected.occurred_at = item->occurred_at;
    rec.u.rejected.requested_by = requested_by;
    rec.u.rejected.rejection = rej;
    return events_row(codec, arena, &rec, event_id, request_id, request_id,
                      item->traceparent, row, err);
}

/* ---- the outcome of an update ---- */

int events_updated_row(struct codec *codec, struct mw_arena *arena,
                       const struct store_item *item,
                       struct store_outbox_row *row, struct mw_error *err)
{
    const struct mw_update_request *u = item->update;
    const struct mw_customer_state *s = &item->updated;
    char *event_id = arena_alloc(arena, IDS_UUID_LEN + 1);
    struct mw_record rec;

    if (event_id == NULL) {
        mw_error_no_memory(err);
        return -1;
    }
    ids_event_id("CustomerUpdated", u->request_id, event_id);
    memset(&rec, 0, sizeof(rec));
    rec.type = MW_REC_CUSTOMER_UPDATED;
    rec.u.updated = (struct mw_customer_updated){
        .event_id = event_id,
        .customer_id = u->customer_id,
        .request_id = u->request_id,
        .msp_id = u->msp_id,
        .occurred_at = item->occurred_at,
        .requested_by = u->requested_by,
        .source = u->source,
        .changes = item->changes,
        .licenses = s->licenses,
        .account_type = s->account_type,
        .billable = s->billable,
        .monitor_mode = s->monitor_mode,
        .primary_domain = s->primary_domain,
        .additional_domains = s->additional_domains,
        .additional_domains_count = s->additional_domains_count};
    return events_row(codec, arena, &rec, event_id, u->customer_id,
                      u->request_id, item->traceparent, row, err);
}

int events_bought_row(struct codec *codec, struct mw_arena *arena,
                      const struct store_item *item,
                      struct store_outbox_row *row, struct mw_error *err)
{
    const struct mw_update_request *u = item->update;
    char *event_id = arena_alloc(arena, IDS_UUID_LEN + 1);
    struct mw_record rec;

    if (event_id == NULL) {
        mw_error_no_memory(err);
        return -1;
    }
    /* The id the automatic conversion would have had: billing sees one
     * conversion whichever way it came. */
    ids_event_id("TrialConverted", u->customer_id, event_id);
    memset(&rec, 0, sizeof(rec));
    rec.type = MW_REC_TRIAL_CONVERTED;
    rec.u.trial_converted = (struct mw_trial_converted){
        .event_id = event_id,
        .customer_id = u->customer_id,
        .msp_id = u->msp_id,
        .occurred_at = item->occurred_at,
        .trial_started_at = item->updated.created_at,
        .trial_ended_at = item->occurred_at,
        .licenses = item->updated.licenses,
        .billing_starts_at = item->occurred_at};
    return events_row(codec, arena, &rec, event_id, u->customer_id,
                      u->request_id, item->traceparent, row, err);
}

/* ---- the event of a fired timer ---- */

/* Fills rec with the event of a fired timer; event_id is its storage. */
static void timer_record(const struct store_timer *t, int64_t now_ms,
                         char event_id[IDS_UUID_LEN + 1], struct mw_record *rec)
{
    memset(rec, 0, sizeof(*rec));
    switch (t->kind) {
    case STORE_TIMER_TRIAL_ENDING:
        ids_event_id("TrialEnding", t->customer_id, event_id);
        rec->type = MW_REC_TRIAL_ENDING;
        rec->u.trial_ending =
            (struct mw_trial_ending){.event_id = event_id,
                                     .customer_id = t->customer_id,
                                     .msp_id = t->msp_id,
                                     .occurred_at = now_ms,
                                     .trial_ends_at = t->trial_ends_at,
                                     .licenses = t->licenses,
                                     .requested_by = t->requested_by};
        break;
    case STORE_TIMER_TRIAL_CONVERSION:
        ids_event_id("TrialConverted", t->customer_id, event_id);
        rec->type = MW_REC_TRIAL_CONVERTED;
        /* Billing starts at the trial end, not when it was noticed. */
        rec->u.trial_converted =
            (struct mw_trial_converted){.event_id = event_id,
                                        .customer_id = t->customer_id,
                                        .msp_id = t->msp_id,
                                        .occurred_at = now_ms,
                                        .trial_started_at = t->created_at,
                                        .trial_ended_at = t->trial_ends_at,
                                        .licenses = t->licenses,
                                        .billing_starts_at = t->trial_ends_at};
        break;
    case STORE_TIMER_TERMINATION:
        ids_event_id("CustomerTerminated", t->request_id, event_id);
        rec->type = MW_REC_CUSTOMER_TERMINATED;
        rec->u.terminated =
            (struct mw_customer_terminated){.event_id = event_id,
                                            .customer_id = t->customer_id,
                                            .msp_id = t->msp_id,
                                            .occurred_at = now_ms,
                                            .terminated_at = t->due_at,
                                            .was_trial = t->was_trial,
                                            .request_id = t->request_id};
        break;
    }
}

int events_timer_row(struct codec *codec, struct mw_arena *arena,
                     const struct store_timer *t, int64_t now_ms,
                     struct store_outbox_row *row, struct mw_error *err)
{
    char *event_id = arena_alloc(arena, IDS_UUID_LEN + 1);
    const char *request_id = t->kind == STORE_TIMER_TERMINATION
                                 ? t->request_id
                                 : t->customer_request_id;
    struct mw_record rec;

    if (event_id == NULL)
        goto oom;
    if (t->kind == STORE_TIMER_TERMINATION && t->request_id == NULL) {
        mw_error_set(err, MW_ERR_DATABASE, false,
                     "termination timer %lld has no request id",
                     (long long)t->id);
        return -1;
    }
    timer_record(t, now_ms, event_id, &rec);
    return events_row(codec, arena, &rec, event_id, t->customer_id, request_id,
                      t->traceparent, row, err);
oom:
    mw_error_no_memory(err);
    return -1;
}
