/*
 * Fuzz target: the form's rules on any request the codec decodes.  The
 * first byte chooses the record (modulo 3: CustomerRequested,
 * CustomerTerminationRequested, CustomerUpdateRequested); the rest is its
 * Avro body, to which the target adds the single-object header so that
 * the fuzzer works on content, not on the fingerprint.  Properties: a
 * rejection holds at least one error, each with a field, a code and a
 * message that is valid UTF-8 when the request's text is, and the
 * CustomerRejected event made of it survives a round trip; an accepted
 * request is normalised, so its normalised form passes again unchanged.
 * An update the rules pass on its own is then judged against a stored
 * customer (which one, and whether its first added domain is taken,
 * follows from the first byte): accepted, its CustomerUpdated survives a
 * round trip; refused, its rejection is checked as above.
 */
#include "fuzz.h"

#include "error.h"
#include "rules.h"

#include <stdbool.h>
#include <string.h>

#define MAX_VALUE (1024 * 1024)

static struct codec *codec;
static struct mw_arena *arena;
static unsigned char value[MAX_VALUE];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    codec = fuzz_codec_new();
    arena = fuzz_arena_new();
    return 0;
}

static bool is_utf8(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;

    if (s == NULL)
        return true;
    while (*p != '\0') {
        size_t n;
        uint32_t cp;

        if (*p < 0x80) {
            p++;
            continue;
        } else if ((*p & 0xe0) == 0xc0) {
            n = 1;
            cp = *p & 0x1f;
        } else if ((*p & 0xf0) == 0xe0) {
            n = 2;
            cp = *p & 0x0f;
        } else if ((*p & 0xf8) == 0xf0) {
            n = 3;
            cp = *p & 0x07;
        } else {
            return false;
        }
        for (size_t i = 1; i <= n; i++) {
            if ((p[i] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (p[i] & 0x3f);
        }
        if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) ||
            (n == 3 && cp < 0x10000) || cp > 0x10ffff ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        p += n + 1;
    }
    return true;
}

static bool request_is_utf8(const struct mw_request *r)
{
    bool ok = is_utf8(r->request_id) && is_utf8(r->requested_by) &&
              is_utf8(r->msp_id) && is_utf8(r->msp_domain) &&
              is_utf8(r->company_name) && is_utf8(r->primary_domain) &&
              is_utf8(r->delivery_destination) &&
              is_utf8(r->default_admin_email) && is_utf8(r->policy_template_id);

    for (size_t i = 0; ok && i < r->additional_domains_count; i++)
        ok = is_utf8(r->additional_domains[i]);
    return ok;
}

static bool termination_is_utf8(const struct mw_termination_request *t)
{
    return is_utf8(t->request_id) && is_utf8(t->requested_by) &&
           is_utf8(t->msp_id) && is_utf8(t->customer_id);
}

static bool update_is_utf8(const struct mw_update_request *u)
{
    bool ok = is_utf8(u->request_id) && is_utf8(u->requested_by) &&
              is_utf8(u->msp_id) && is_utf8(u->customer_id) &&
              is_utf8(u->delivery_destination) &&
              is_utf8(u->policy_template_id);

    for (size_t i = 0; ok && i < u->add_domains_count; i++)
        ok = is_utf8(u->add_domains[i]);
    for (size_t i = 0; ok && i < u->remove_domains_count; i++)
        ok = is_utf8(u->remove_domains[i]);
    return ok;
}

/* Checks a rejection as rules made it and as it would be published. */
static void check_rejection(const struct mw_rejection *rej, bool text_is_utf8,
                            const char *request_id, const char *msp_id,
                            const char *requested_by, int64_t requested_at)
{
    struct mw_record event;

    if (rej->count == 0 || rej->count > MW_MAX_REJECTION_ERRORS)
        fuzz_fail("a rejection with %zu errors", rej->count);
    for (size_t i = 0; i < rej->count; i++) {
        const struct mw_rejection_error *e = &rej->errors[i];

        if (e->field == NULL || e->code < 0 || e->code >= MW_REJ_COUNT ||
            e->message[0] == '\0' ||
            memchr(e->message, '\0', sizeof(e->message)) == NULL)
            fuzz_fail("rejection error %zu is incomplete", i);
        if (text_is_utf8 && !is_utf8(e->message))
            fuzz_fail("rejection error %zu is not UTF-8: %s", i, e->message);
    }
    memset(&event, 0, sizeof(event));
    event.type = MW_REC_CUSTOMER_REJECTED;
    event.u.rejected.event_id = "00000000-0000-4000-8000-000000000000";
    event.u.rejected.request_id = request_id;
    event.u.rejected.msp_id = msp_id;
    event.u.rejected.occurred_at = requested_at;
    event.u.rejected.requested_by = requested_by;
    event.u.rejected.rejection = rej;
    fuzz_check_round_trip(codec, arena, &event);
}

static void check_request(const struct mw_request *req)
{
    struct mw_request out, again;
    struct mw_rejection rej;
    int rc;

    memset(&rej, 0, sizeof(rej));
    rc = rules_check_request(req, arena, &out, &rej);
    if (rc == 1) {
        check_rejection(&rej, request_is_utf8(req), req->request_id,
                        req->msp_id, req->requested_by, req->requested_at);
        return;
    }
    if (rc != 0)
        fuzz_fail("rules_check_request returned %d", rc);
    memset(&rej, 0, sizeof(rej));
    rc = rules_check_request(&out, arena, &again, &rej);
    if (rc != 0)
        fuzz_fail("a normalised request is refused (%d): %s", rc,
                  rej.count > 0 ? rej.errors[0].message : "");
    if (strcmp(out.primary_domain, again.primary_domain) != 0 ||
        strcmp(out.msp_domain, again.msp_domain) != 0 ||
        out.additional_domains_count != again.additional_domains_count ||
        (out.delivery_destination == NULL) !=
            (again.delivery_destination == NULL) ||
        (out.delivery_destination != NULL &&
         strcmp(out.delivery_destination, again.delivery_destination) != 0))
        fuzz_fail("normalising a normalised request changes it");
    for (size_t i = 0; i < out.additional_domains_count; i++)
        if (strcmp(out.additional_domains[i], again.additional_domains[i]))
            fuzz_fail("normalising additional domain %zu changes it", i);
}

static void check_termination(const struct mw_termination_request *req)
{
    struct mw_rejection rej;
    int rc;

    memset(&rej, 0, sizeof(rej));
    rc = rules_check_termination(req, &rej);
    if (rc == 1)
        check_rejection(&rej, termination_is_utf8(req), req->request_id,
                        req->msp_id, req->requested_by, req->requested_at);
    else if (rc != 0)
        fuzz_fail("rules_check_termination returned %d", rc);
}

/* A stored customer to judge updates against; variant picks which. */
static void stored_customer(unsigned variant, const struct mw_update_request *u,
                            struct mw_customer_state *s)
{
    static const char *domains[] = {"b.example", "shop.msp.example"};

    memset(s, 0, sizeof(*s));
    s->customer_id = u->customer_id;
    /* Half the customers belong to the updating MSP. */
    s->msp_id = variant % 2 == 0 ? u->msp_id : "msp-other";
    s->msp_domain = "msp.example";
    s->service = (int)(variant / 2 % MW_SERVICE_COUNT);
    s->account_type = (int)(variant / 6 % MW_ACCOUNT_COUNT);
    s->is_trial = s->account_type == MW_ACCOUNT_TRIAL;
    s->billable = s->account_type == MW_ACCOUNT_BUY_NOW;
    s->licenses = 10;
    s->has_licenses_observed_at = variant % 4 == 0;
    s->licenses_observed_at = 1764000000000;
    s->delivery_destination = "mx.example.com";
    s->primary_domain = "msp.example";
    s->additional_domains = domains;
    s->additional_domains_count = 2;
    s->is_terminated = variant % 19 == 18;
}

static void check_update(const struct mw_update_request *req, unsigned variant)
{
    struct mw_update_request out, again;
    struct mw_customer_state before, after;
    struct mw_changes changes;
    struct mw_rejection rej;
    struct mw_record event;
    int rc;

    memset(&rej, 0, sizeof(rej));
    rc = rules_check_update(req, arena, &out, &rej);
    if (rc == 1) {
        check_rejection(&rej, update_is_utf8(req), req->request_id, req->msp_id,
                        req->requested_by, req->requested_at);
        return;
    }
    if (rc != 0)
        fuzz_fail("rules_check_update returned %d", rc);
    if (rules_check_update(&out, arena, &again, &rej) != 0)
        fuzz_fail("a normalised update is refused: %s",
                  rej.count > 0 ? rej.errors[0].message : "");
    stored_customer(variant, &out, &before);
    rc = rules_apply_update(&out, variant % 3 == 0 ? NULL : &before,
                            out.add_domains, variant % 5 == 0 ? 1 : 0, arena,
                            &after, &changes, &rej);
    if (rc == 1) {
        check_rejection(&rej, update_is_utf8(req), req->request_id, req->msp_id,
                        req->requested_by, req->requested_at);
        return;
    }
    if (rc != 0)
        fuzz_fail("rules_apply_update returned %d", rc);
    if (changes.count > MW_MAX_FIELD_CHANGES ||
        after.additional_domains_count > MW_MAX_ADDITIONAL_DOMAINS)
        fuzz_fail("an accepted update leaves %zu changes, %zu domains",
                  changes.count, after.additional_domains_count);
    memset(&event, 0, sizeof(event));
    event.type = MW_REC_CUSTOMER_UPDATED;
    event.u.updated = (struct mw_customer_updated){
        .event_id = "00000000-0000-4000-8000-000000000000",
        .customer_id = out.customer_id,
        .request_id = out.request_id,
        .msp_id = out.msp_id,
        .occurred_at = req->requested_at,
        .requested_by = out.requested_by,
        .source = out.source,
        .changes = &changes,
        .licenses = after.licenses,
        .account_type = after.account_type,
        .billable = after.billable,
        .monitor_mode = after.monitor_mode,
        .primary_domain = after.primary_domain,
        .additional_domains = after.additional_domains,
        .additional_domains_count = after.additional_domains_count};
    fuzz_check_round_trip(codec, arena, &event);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    enum mw_record_type type;
    struct mw_record rec;
    struct mw_error err;
    uint64_t fp;
    size_t len;

    if (size < 1 || size - 1 > MAX_VALUE - 10)
        return 0;
    type = data[0] % 3 == 0   ? MW_REC_CUSTOMER_REQUESTED
           : data[0] % 3 == 1 ? MW_REC_CUSTOMER_TERMINATION_REQUESTED
                              : MW_REC_CUSTOMER_UPDATE_REQUESTED;
    fp = codec_fingerprint(codec, type);
    value[0] = 0xc3;
    value[1] = 0x01;
    for (int i = 0; i < 8; i++)
        value[2 + i] = (unsigned char)(fp >> (8 * i));
    memcpy(value + 10, data + 1, size - 1);
    len = size - 1 + 10;
    arena_reset(arena);
    mw_error_clear(&err);
    if (codec_decode(codec, value, len, arena, &rec, &err) != CODEC_OK)
        return 0;
    if (rec.type != type)
        fuzz_fail("a %s body decodes as a %s", mw_record_names[type],
                  mw_record_names[rec.type]);
    if (type == MW_REC_CUSTOMER_REQUESTED)
        check_request(&rec.u.request);
    else if (type == MW_REC_CUSTOMER_TERMINATION_REQUESTED)
        check_termination(&rec.u.termination);
    else
        check_update(&rec.u.update, data[0] / 3u);
    return 0;
}
