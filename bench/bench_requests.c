/*
 * The requests the benchmark sends: valid, distinct CustomerRequested
 * records whose request id encodes the run, the phase and an index, so
 * the collector can count every outcome by index.
 */
#include "bench.h"

#include <stdlib.h>
#include <string.h>

/* The request id of (phase, index): a UUID the collector can parse. */
static void request_id_of(const struct bench *b, enum phase phase, long index,
                          char out[IDS_UUID_LEN + 1])
{
    snprintf(out, IDS_UUID_LEN + 1, "%08x-0000-4000-8%03x-%012lx", b->tag,
             (unsigned)phase, (unsigned long)index);
}

/* The index of a request id of this run and phase, or -1. */
long index_of(const struct bench *b, enum phase phase, const char *id,
              size_t len)
{
    char prefix[32];

    if (len != IDS_UUID_LEN)
        return -1;
    snprintf(prefix, sizeof(prefix), "%08x-0000-4000-8%03x-", b->tag,
             (unsigned)phase);
    if (memcmp(id, prefix, 24) != 0)
        return -1;
    {
        char digits[13];

        memcpy(digits, id + 24, 12);
        digits[12] = '\0';
        return strtol(digits, NULL, 16);
    }
}

/* A valid, distinct CustomerRequested; BUY_NOW unless is_trial. */
void request_fill(const struct bench *b, enum phase phase, long index,
                  bool is_trial, struct request_text *t, struct mw_request *r)
{
    long msp = index % MSP_COUNT;

    request_id_of(b, phase, index, t->request_id);
    ids_customer_id(t->request_id, t->customer_id);
    snprintf(t->requested_by, sizeof(t->requested_by), "user@msp-%ld.example",
             msp);
    snprintf(t->msp_id, sizeof(t->msp_id), "msp-%ld", msp);
    snprintf(t->msp_domain, sizeof(t->msp_domain), "msp-%ld.example", msp);
    snprintf(t->company, sizeof(t->company), "Customer %ld of run %08x", index,
             b->tag);
    snprintf(t->primary, sizeof(t->primary), "c%ld-p%d-%08x.example.com", index,
             (int)phase, b->tag);
    snprintf(t->additional, sizeof(t->additional),
             "mail-c%ld-p%d-%08x.example.com", index, (int)phase, b->tag);
    snprintf(t->destination, sizeof(t->destination), "mx.%s:25", t->primary);
    snprintf(t->admin, sizeof(t->admin), "admin@%s", t->primary);
    t->additional_list[0] = t->additional;
    memset(r, 0, sizeof(*r));
    r->request_id = t->request_id;
    r->requested_at = 1764000000000LL;
    r->requested_by = t->requested_by;
    r->msp_id = t->msp_id;
    r->msp_domain = t->msp_domain;
    r->mail_platform = MW_PLATFORM_MICROSOFT_365;
    r->service = MW_SERVICE_MESH_GATEWAY;
    r->company_name = t->company;
    r->primary_domain = t->primary;
    r->additional_domains = t->additional_list;
    r->additional_domains_count = 1;
    r->delivery_destination = t->destination;
    r->licenses = 25;
    r->default_admin_email = t->admin;
    r->policy_template_id = NULL;
    r->apply_global_rules = true;
    r->msp_management = true;
    r->two_factor_required = false;
    r->monitor_mode = false;
    r->account_type = is_trial ? MW_ACCOUNT_TRIAL : MW_ACCOUNT_BUY_NOW;
}

/* Encodes request index of phase into arena; 0 or -1. */
int request_encode(struct bench *b, enum phase phase, long index, bool is_trial,
                   const void **out, size_t *len, struct request_text *t)
{
    struct mw_record rec;
    struct mw_error err;

    memset(&rec, 0, sizeof(rec));
    rec.type = MW_REC_CUSTOMER_REQUESTED;
    request_fill(b, phase, index, is_trial, t, &rec.u.request);
    if (codec_encode(b->codec, &rec, b->arena, out, len, &err) < 0) {
        say("could not encode a request: %s", err.msg);
        return -1;
    }
    return 0;
}

/* Produces requests [from, to) of phase to topic. */
int preload(struct bench *b, enum phase phase, const char *topic, long from,
            long to, bool is_trial)
{
    rd_kafka_t *rk = producer_new(b, "5");
    struct request_text t;
    int rc = 0;

    for (long i = from; i < to && rc == 0; i++) {
        const void *value;
        size_t len;

        if ((i - from) % 1000 == 0)
            arena_reset(b->arena);
        rc = request_encode(b, phase, i, is_trial, &value, &len, &t);
        if (rc == 0)
            rc = produce(rk, topic, t.msp_id, strlen(t.msp_id), value, len);
    }
    if (rc == 0)
        rc = flush_all(rk);
    rd_kafka_destroy(rk);
    return rc;
}
