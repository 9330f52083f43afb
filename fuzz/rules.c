/*
 * Fuzz target: the form's rules on any request the codec decodes.  The
 * first byte chooses the record (even: CustomerRequested, odd:
 * CustomerTerminationRequested); the rest is its Avro body, to which the
 * target adds the single-object header so that the fuzzer works on
 * content, not on the fingerprint.  Properties: a rejection holds at
 * least one error, each with a field, a code and a message that is valid
 * UTF-8 when the request's text is, and the CustomerRejected event made
 * of it survives a round trip; an accepted request is normalised, so its
 * normalised form passes again unchanged.
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    enum mw_record_type type;
    struct mw_record rec;
    struct mw_error err;
    uint64_t fp;
    size_t len;

    if (size < 1 || size - 1 > MAX_VALUE - 10)
        return 0;
    type = data[0] % 2 == 0 ? MW_REC_CUSTOMER_REQUESTED
                            : MW_REC_CUSTOMER_TERMINATION_REQUESTED;
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
    else
        check_termination(&rec.u.termination);
    return 0;
}
