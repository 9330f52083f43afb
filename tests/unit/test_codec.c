/*
 * Unit tests of the Avro codec: the compiled-in schemas, Parsing Canonical
 * Form and CRC-64-AVRO against the Avro specification's vectors, round
 * trips of every record type, and decoding of hostile bytes (truncated,
 * mutated, oversize, wrong framing), which must fail with the right status
 * and never crash.
 */
#include "arena.h"
#include "codec.h"
#include "embedded_files.h"
#include "error.h"
#include "mw.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <avro.h>
#include <cmocka.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct fixture {
    struct codec *codec;
    struct mw_arena *arena;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    struct mw_error err = {0};

    if (f == NULL)
        return -1;
    f->codec = codec_new(&err);
    f->arena = arena_new();
    if (f->codec == NULL || f->arena == NULL) {
        fprintf(stderr, "codec_new: %s (%s)\n", err.msg, err.detail);
        codec_destroy(f->codec);
        arena_destroy(f->arena);
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    codec_destroy(f->codec);
    arena_destroy(f->arena);
    free(f);
    return 0;
}

/* ---- Sample records --------------------------------------------------- */

static const char *three_domains[] = {"b.example", "xn--bcher-kva.example",
                                      "c.example"};
static const char *one_domain[] = {"only.example"};

static const struct mw_rejection two_errors = {
    .count = 2,
    .errors = {{.field = "licenses",
                .code = MW_REJ_NFR_LICENSE_LIMIT_EXCEEDED,
                .message = "An NFR account has at most 50 licenses."},
               {.field = NULL,
                .code = MW_REJ_ALREADY_TERMINATED,
                .message = "Le client est déjà résilié — 顧客は解約済み."}}};

static const struct mw_rejection no_errors = {.count = 0};

static const char *added[] = {"new.example", "xn--caf-dma.example"};

static const struct mw_changes two_changes = {
    .count = 2,
    .changes = {{.field = "licenses", .old_value = "10", .new_value = "25"},
                {.field = "delivery_destination",
                 .old_value = "mx.example:25",
                 .new_value = NULL}}};

static const struct mw_changes no_changes = {.count = 0};

static struct mw_rejection all_errors; /* filled by main() */

static const struct mw_record samples[] = {
    {.type = MW_REC_CUSTOMER_REQUESTED,
     .u.request = {.request_id = "0b6f7c1e-6a57-4f6e-9d43-3c8f0f0e4a11",
                   .requested_at = 1764050725123,
                   .requested_by = "ops@msp.example",
                   .msp_id = "msp-0001",
                   .msp_domain = "msp.example",
                   .mail_platform = MW_PLATFORM_MICROSOFT_365,
                   .service = MW_SERVICE_MESH_UNIFIED,
                   .company_name = "Société Générale — 東京支社 🚀",
                   .primary_domain = "customer.example",
                   .additional_domains = three_domains,
                   .additional_domains_count = 3,
                   .delivery_destination = "[2001:db8::1]:2525",
                   .licenses = 250,
                   .default_admin_email = "admin@customer.example",
                   .policy_template_id = "tpl-42",
                   .apply_global_rules = false,
                   .msp_management = true,
                   .two_factor_required = true,
                   .monitor_mode = true,
                   .account_type = MW_ACCOUNT_TRIAL}},
    {.type = MW_REC_CUSTOMER_REQUESTED,
     .u.request = {.request_id = "",
                   .requested_at = INT64_MIN,
                   .requested_by = "",
                   .msp_id = "",
                   .msp_domain = "",
                   .mail_platform = MW_PLATFORM_OTHER,
                   .service = MW_SERVICE_MESH_365,
                   .company_name = "",
                   .primary_domain = "",
                   .additional_domains = NULL,
                   .additional_domains_count = 0,
                   .delivery_destination = NULL,
                   .licenses = INT32_MIN,
                   .default_admin_email = "",
                   .policy_template_id = NULL,
                   .apply_global_rules = true,
                   .msp_management = false,
                   .two_factor_required = false,
                   .monitor_mode = false,
                   .account_type = MW_ACCOUNT_NFR}},
    {.type = MW_REC_CUSTOMER_TERMINATION_REQUESTED,
     .u.termination = {.request_id = "5d1c2f0a-3b7e-4e58-8a51-8f2b0f9c7d20",
                       .requested_at = INT64_MAX,
                       .requested_by = "ops@msp.example",
                       .msp_id = "msp-0001",
                       .customer_id = "9e0a1b2c-3d4e-5f60-8172-839405162738",
                       .has_effective_at = false}},
    {.type = MW_REC_CUSTOMER_TERMINATION_REQUESTED,
     .u.termination = {.request_id = "r",
                       .requested_at = -1,
                       .requested_by = "ops@msp.example",
                       .msp_id = "msp-0001",
                       .customer_id = "c",
                       .has_effective_at = true,
                       .effective_at = 1767225600000}},
    {.type = MW_REC_CUSTOMER_CREATED,
     .u.created = {.event_id = "e1",
                   .customer_id = "c1",
                   .request_id = "r1",
                   .msp_id = "msp-0001",
                   .occurred_at = 1764050725123,
                   .requested_by = "ops@msp.example",
                   .company_name = "Customer Ltd",
                   .primary_domain = "customer.example",
                   .additional_domains = one_domain,
                   .additional_domains_count = 1,
                   .mail_platform = MW_PLATFORM_GOOGLE_WORKSPACE,
                   .service = MW_SERVICE_MESH_GATEWAY,
                   .account_type = MW_ACCOUNT_TRIAL,
                   .licenses = INT32_MAX,
                   .billable = true,
                   .has_billing_starts_at = true,
                   .billing_starts_at = 1765260325123,
                   .has_trial_ends_at = true,
                   .trial_ends_at = 1765260325123,
                   .default_admin_email = "admin@customer.example",
                   .delivery_destination = "mx.customer.example:25",
                   .policy_template_id = "tpl-1",
                   .apply_global_rules = true,
                   .msp_management = true,
                   .two_factor_required = false,
                   .monitor_mode = false,
                   .installation = MW_INSTALL_MX_RECORDS}},
    {.type = MW_REC_CUSTOMER_CREATED,
     .u.created = {.event_id = "e2",
                   .customer_id = "c2",
                   .request_id = "r2",
                   .msp_id = "msp-0002",
                   .occurred_at = 0,
                   .requested_by = "ops@msp.example",
                   .company_name = "Ünïcödé GmbH",
                   .primary_domain = "sub.msp.example",
                   .additional_domains = NULL,
                   .additional_domains_count = 0,
                   .mail_platform = MW_PLATFORM_EXCHANGE_ON_PREMISES,
                   .service = MW_SERVICE_MESH_365,
                   .account_type = MW_ACCOUNT_NFR,
                   .licenses = 50,
                   .billable = false,
                   .has_billing_starts_at = false,
                   .has_trial_ends_at = false,
                   .default_admin_email = "admin@sub.msp.example",
                   .delivery_destination = NULL,
                   .policy_template_id = NULL,
                   .apply_global_rules = false,
                   .msp_management = false,
                   .two_factor_required = true,
                   .monitor_mode = true,
                   .installation = MW_INSTALL_MX_RECORDS_AND_M365_API_CONSENT}},
    {.type = MW_REC_CUSTOMER_REJECTED,
     .u.rejected = {.event_id = "e3",
                    .request_id = "r3",
                    .msp_id = "msp-0003",
                    .occurred_at = 1764050725000,
                    .requested_by = "ops@msp.example",
                    .rejection = &two_errors}},
    {.type = MW_REC_CUSTOMER_REJECTED,
     .u.rejected = {.event_id = "e4",
                    .request_id = "r4",
                    .msp_id = "msp-0004",
                    .occurred_at = 1,
                    .requested_by = NULL,
                    .rejection = &no_errors}},
    {.type = MW_REC_CUSTOMER_REJECTED,
     .u.rejected = {.event_id = "e5",
                    .request_id = "r5",
                    .msp_id = "msp-0005",
                    .occurred_at = 2,
                    .requested_by = "x@y.example",
                    .rejection = &all_errors}},
    {.type = MW_REC_TRIAL_ENDING,
     .u.trial_ending = {.event_id = "e6",
                        .customer_id = "c6",
                        .msp_id = "msp-0006",
                        .occurred_at = 1765001125123,
                        .trial_ends_at = 1765260325123,
                        .licenses = 10,
                        .requested_by = "ops@msp.example"}},
    {.type = MW_REC_TRIAL_CONVERTED,
     .u.trial_converted = {.event_id = "e7",
                           .customer_id = "c7",
                           .msp_id = "msp-0007",
                           .occurred_at = 1765260325999,
                           .trial_started_at = 1764050725123,
                           .trial_ended_at = 1765260325123,
                           .licenses = 1,
                           .billing_starts_at = 1765260325123}},
    {.type = MW_REC_CUSTOMER_TERMINATED,
     .u.terminated = {.event_id = "e8",
                      .customer_id = "c8",
                      .msp_id = "msp-0008",
                      .occurred_at = 1765260325123,
                      .terminated_at = 1765260325000,
                      .was_trial = true,
                      .request_id = "r8"}},
    {.type = MW_REC_CUSTOMER_UPDATE_REQUESTED,
     .u.update = {.request_id = "r9",
                  .requested_at = 1765001125123,
                  .requested_by = "ops@msp.example",
                  .msp_id = "msp-0009",
                  .customer_id = "c9",
                  .source = MW_SOURCE_MSP,
                  .observed_at = 1765001125000,
                  .has_licenses = true,
                  .licenses = 25,
                  .has_monitor_mode = true,
                  .monitor_mode = false,
                  .has_msp_management = true,
                  .msp_management = true,
                  .delivery_destination = "",
                  .add_domains = added,
                  .add_domains_count = 2,
                  .remove_domains = one_domain,
                  .remove_domains_count = 1,
                  .has_account_type = true,
                  .account_type = MW_ACCOUNT_BUY_NOW}},
    {.type = MW_REC_CUSTOMER_UPDATE_REQUESTED,
     .u.update = {.request_id = "r10",
                  .requested_at = 1,
                  .requested_by = "sync@msp.example",
                  .msp_id = "msp-0010",
                  .customer_id = "c10",
                  .source = MW_SOURCE_M365_SYNC,
                  .observed_at = 2,
                  .has_licenses = true,
                  .licenses = 7}},
    {.type = MW_REC_CUSTOMER_UPDATED,
     .u.updated = {.event_id = "e11",
                   .customer_id = "c11",
                   .request_id = "r11",
                   .msp_id = "msp-0011",
                   .occurred_at = 1765001125999,
                   .requested_by = "ops@msp.example",
                   .source = MW_SOURCE_MSP,
                   .changes = &two_changes,
                   .licenses = 25,
                   .account_type = MW_ACCOUNT_TRIAL,
                   .billable = false,
                   .monitor_mode = true,
                   .primary_domain = "a.example",
                   .additional_domains = three_domains,
                   .additional_domains_count = 3}},
    /* Nothing changed: an empty list, the defaults elsewhere. */
    {.type = MW_REC_CUSTOMER_UPDATED,
     .u.updated = {"e12", "c12", "r12", "msp-0012", 3, "sync@msp.example",
                   MW_SOURCE_M365_SYNC, &no_changes, 1, MW_ACCOUNT_BUY_NOW,
                   true, false, "b.example", NULL, 0}},
};

#define SAMPLE_COUNT (sizeof(samples) / sizeof(samples[0]))

/* ---- Comparison ------------------------------------------------------- */

static void check_string(const char *field, const char *want, const char *seen)
{
    if (want == NULL && seen == NULL)
        return;
    if (want == NULL || seen == NULL || strcmp(want, seen) != 0)
        fail_msg("field %s: expected \"%s\", seen \"%s\"", field,
                 want ? want : "(null)", seen ? seen : "(null)");
}

static void check_strings(const char *field, const char **want,
                          size_t want_count, const char **seen,
                          size_t seen_count)
{
    if (want_count != seen_count)
        fail_msg("field %s: expected %zu items, seen %zu", field, want_count,
                 seen_count);
    for (size_t i = 0; i < want_count; i++)
        check_string(field, want[i], seen[i]);
}

static void check_long(const char *field, int64_t want, int64_t seen)
{
    if (want != seen)
        fail_msg("field %s: expected %" PRId64 ", seen %" PRId64, field, want,
                 seen);
}

#define CHECK_STR(f) check_string(#f, a->f, b->f)
#define CHECK_NUM(f) check_long(#f, (int64_t)a->f, (int64_t)b->f)
#define CHECK_LIST(f) check_strings(#f, a->f, a->f##_count, b->f, b->f##_count)

static void check_request(const struct mw_request *a,
                          const struct mw_request *b)
{
    CHECK_STR(request_id);
    CHECK_NUM(requested_at);
    CHECK_STR(requested_by);
    CHECK_STR(msp_id);
    CHECK_STR(msp_domain);
    CHECK_NUM(mail_platform);
    CHECK_NUM(service);
    CHECK_STR(company_name);
    CHECK_STR(primary_domain);
    CHECK_LIST(additional_domains);
    CHECK_STR(delivery_destination);
    CHECK_NUM(licenses);
    CHECK_STR(default_admin_email);
    CHECK_STR(policy_template_id);
    CHECK_NUM(apply_global_rules);
    CHECK_NUM(msp_management);
    CHECK_NUM(two_factor_required);
    CHECK_NUM(monitor_mode);
    CHECK_NUM(account_type);
}

static void check_termination(const struct mw_termination_request *a,
                              const struct mw_termination_request *b)
{
    CHECK_STR(request_id);
    CHECK_NUM(requested_at);
    CHECK_STR(requested_by);
    CHECK_STR(msp_id);
    CHECK_STR(customer_id);
    CHECK_NUM(has_effective_at);
    if (a->has_effective_at)
        CHECK_NUM(effective_at);
}

static void check_created(const struct mw_customer_created *a,
                          const struct mw_customer_created *b)
{
    CHECK_STR(event_id);
    CHECK_STR(customer_id);
    CHECK_STR(request_id);
    CHECK_STR(msp_id);
    CHECK_NUM(occurred_at);
    CHECK_STR(requested_by);
    CHECK_STR(company_name);
    CHECK_STR(primary_domain);
    CHECK_LIST(additional_domains);
    CHECK_NUM(mail_platform);
    CHECK_NUM(service);
    CHECK_NUM(account_type);
    CHECK_NUM(licenses);
    CHECK_NUM(billable);
    CHECK_NUM(has_billing_starts_at);
    if (a->has_billing_starts_at)
        CHECK_NUM(billing_starts_at);
    CHECK_NUM(has_trial_ends_at);
    if (a->has_trial_ends_at)
        CHECK_NUM(trial_ends_at);
    CHECK_STR(default_admin_email);
    CHECK_STR(delivery_destination);
    CHECK_STR(policy_template_id);
    CHECK_NUM(apply_global_rules);
    CHECK_NUM(msp_management);
    CHECK_NUM(two_factor_required);
    CHECK_NUM(monitor_mode);
    CHECK_NUM(installation);
}

static void check_rejected(const struct mw_customer_rejected *a,
                           const struct mw_customer_rejected *b)
{
    CHECK_STR(event_id);
    CHECK_STR(request_id);
    CHECK_STR(msp_id);
    CHECK_NUM(occurred_at);
    CHECK_STR(requested_by);
    assert_non_null(b->rejection);
    check_long("errors.count", (int64_t)a->rejection->count,
               (int64_t)b->rejection->count);
    for (size_t i = 0; i < a->rejection->count; i++) {
        const struct mw_rejection_error *x = &a->rejection->errors[i];
        const struct mw_rejection_error *y = &b->rejection->errors[i];

        check_string("errors.field", x->field, y->field);
        check_long("errors.code", x->code, y->code);
        check_string("errors.message", x->message, y->message);
    }
}

static void check_trial_ending(const struct mw_trial_ending *a,
                               const struct mw_trial_ending *b)
{
    CHECK_STR(event_id);
    CHECK_STR(customer_id);
    CHECK_STR(msp_id);
    CHECK_NUM(occurred_at);
    CHECK_NUM(trial_ends_at);
    CHECK_NUM(licenses);
    CHECK_STR(requested_by);
}

static void check_trial_converted(const struct mw_trial_converted *a,
                                  const struct mw_trial_converted *b)
{
    CHECK_STR(event_id);
    CHECK_STR(customer_id);
    CHECK_STR(msp_id);
    CHECK_NUM(occurred_at);
    CHECK_NUM(trial_started_at);
    CHECK_NUM(trial_ended_at);
    CHECK_NUM(licenses);
    CHECK_NUM(billing_starts_at);
}

static void check_terminated(const struct mw_customer_terminated *a,
                             const struct mw_customer_terminated *b)
{
    CHECK_STR(event_id);
    CHECK_STR(customer_id);
    CHECK_STR(msp_id);
    CHECK_NUM(occurred_at);
    CHECK_NUM(terminated_at);
    CHECK_NUM(was_trial);
    CHECK_STR(request_id);
}

static void check_update(const struct mw_update_request *a,
                         const struct mw_update_request *b)
{
    CHECK_STR(request_id);
    CHECK_NUM(requested_at);
    CHECK_STR(requested_by);
    CHECK_STR(msp_id);
    CHECK_STR(customer_id);
    CHECK_NUM(source);
    CHECK_NUM(observed_at);
    CHECK_NUM(has_licenses);
    CHECK_NUM(licenses);
    CHECK_NUM(has_monitor_mode);
    CHECK_NUM(monitor_mode);
    CHECK_NUM(has_two_factor_required);
    CHECK_NUM(two_factor_required);
    CHECK_NUM(has_msp_management);
    CHECK_NUM(msp_management);
    CHECK_NUM(has_apply_global_rules);
    CHECK_NUM(apply_global_rules);
    CHECK_STR(delivery_destination);
    CHECK_STR(policy_template_id);
    CHECK_LIST(add_domains);
    CHECK_LIST(remove_domains);
    CHECK_NUM(has_account_type);
    CHECK_NUM(account_type);
}

/* The change lists of two CustomerUpdated, item by item. */
static void check_changes(const struct mw_changes *want,
                          const struct mw_changes *seen)
{
    assert_non_null(seen);
    check_long("changes.count", (int64_t)want->count, (int64_t)seen->count);
    for (size_t i = 0; i < want->count; i++) {
        const struct mw_field_change *change = &want->changes[i];

        check_string("changes.field", change->field, seen->changes[i].field);
        check_string("changes.old_value", change->old_value,
                     seen->changes[i].old_value);
        check_string("changes.new_value", change->new_value,
                     seen->changes[i].new_value);
    }
}

static void check_updated(const struct mw_customer_updated *a,
                          const struct mw_customer_updated *b)
{
    CHECK_STR(event_id);
    CHECK_STR(customer_id);
    CHECK_STR(request_id);
    CHECK_STR(msp_id);
    CHECK_NUM(occurred_at);
    CHECK_STR(requested_by);
    CHECK_NUM(source);
    check_changes(a->changes, b->changes);
    CHECK_NUM(licenses);
    CHECK_NUM(account_type);
    CHECK_NUM(billable);
    CHECK_NUM(monitor_mode);
    CHECK_STR(primary_domain);
    CHECK_LIST(additional_domains);
}

static void check_record(const struct mw_record *a, const struct mw_record *b)
{
    check_long("type", a->type, b->type);
    switch (a->type) {
    case MW_REC_CUSTOMER_REQUESTED:
        check_request(&a->u.request, &b->u.request);
        break;
    case MW_REC_CUSTOMER_TERMINATION_REQUESTED:
        check_termination(&a->u.termination, &b->u.termination);
        break;
    case MW_REC_CUSTOMER_CREATED:
        check_created(&a->u.created, &b->u.created);
        break;
    case MW_REC_CUSTOMER_REJECTED:
        check_rejected(&a->u.rejected, &b->u.rejected);
        break;
    case MW_REC_TRIAL_ENDING:
        check_trial_ending(&a->u.trial_ending, &b->u.trial_ending);
        break;
    case MW_REC_TRIAL_CONVERTED:
        check_trial_converted(&a->u.trial_converted, &b->u.trial_converted);
        break;
    case MW_REC_CUSTOMER_TERMINATED:
        check_terminated(&a->u.terminated, &b->u.terminated);
        break;
    case MW_REC_CUSTOMER_UPDATE_REQUESTED:
        check_update(&a->u.update, &b->u.update);
        break;
    case MW_REC_CUSTOMER_UPDATED:
        check_updated(&a->u.updated, &b->u.updated);
        break;
    case MW_REC_COUNT:
        fail_msg("bad sample type");
    }
}

/* Encodes samples[i] into a malloc'ed copy. */
static unsigned char *encode_sample(struct fixture *f, size_t i, size_t *len)
{
    struct mw_error err = {0};
    const void *out = NULL;
    unsigned char *copy;

    if (codec_encode(f->codec, &samples[i], f->arena, &out, len, &err) != 0)
        fail_msg("sample %zu: codec_encode: %s", i, err.msg);
    copy = malloc(*len);
    assert_non_null(copy);
    memcpy(copy, out, *len);
    return copy;
}

static void expect_status(struct fixture *f, const void *buf, size_t len,
                          enum codec_status want, const char *needle)
{
    struct mw_record rec;
    struct mw_error err = {0};
    enum codec_status seen;

    seen = codec_decode(f->codec, buf, len, f->arena, &rec, &err);
    if (seen != want)
        fail_msg("expected %s, seen %s (%s)", codec_status_name(want),
                 codec_status_name(seen), err.msg);
    if (needle != NULL && strstr(err.msg, needle) == NULL)
        fail_msg("expected \"%s\" in the error, seen \"%s\"", needle, err.msg);
    arena_reset(f->arena);
}

/* ---- Schemas ---------------------------------------------------------- */

static const char *const schema_files[] = {
    "AccountType.avsc",
    "CustomerCreated.avsc",
    "CustomerRejected.avsc",
    "CustomerRequested.avsc",
    "CustomerTerminated.avsc",
    "CustomerTerminationRequested.avsc",
    "CustomerUpdateRequested.avsc",
    "CustomerUpdated.avsc",
    "FieldChange.avsc",
    "Installation.avsc",
    "MailPlatform.avsc",
    "RejectionCode.avsc",
    "RejectionError.avsc",
    "Service.avsc",
    "TrialConverted.avsc",
    "TrialEnding.avsc",
    "UpdateSource.avsc",
    "customer.events.avsc",
    "customer.requests.avsc",
};

#define SCHEMA_FILE_COUNT (sizeof(schema_files) / sizeof(schema_files[0]))

static void every_schema_file_parses_with_avro_c(void **state)
{
    size_t count = 0;

    (void)state;
    for (const struct mw_embedded_file *e = mw_embedded_files; e->kind; e++) {
        avro_schema_t schema;
        bool listed = false;

        if (strcmp(e->kind, "schema") != 0)
            continue;
        count++;
        for (size_t i = 0; i < SCHEMA_FILE_COUNT; i++)
            listed = listed || strcmp(schema_files[i], e->name) == 0;
        if (!listed)
            fail_msg("unexpected schema file %s", e->name);
        if (avro_schema_from_json_length(e->text, strlen(e->text), &schema))
            fail_msg("%s: %s", e->name, avro_strerror());
        avro_schema_decref(schema);
    }
    check_long("schema files", SCHEMA_FILE_COUNT, count);
}

static char *canonical_or_fail(const char *json)
{
    struct mw_error err = {0};
    char *canonical = codec_canonical_form(json, &err);

    if (canonical == NULL)
        fail_msg("codec_canonical_form: %s (%s)", err.msg, err.detail);
    return canonical;
}

/*
 * Replaces, in a copy of type, each name of a type defined earlier in the
 * union (a branch may only name what an earlier branch defines) with that
 * definition, so that the branch reads on its own.  defined maps full
 * names to definitions.
 */
static json_t *inline_references(const json_t *type, json_t *defined)
{
    json_t *copy;

    if (json_is_string(type)) {
        const json_t *def = json_object_get(defined, json_string_value(type));

        return def != NULL ? json_deep_copy(def) : json_deep_copy(type);
    }
    copy = json_deep_copy(type);
    if (json_is_array(copy)) {
        for (size_t i = 0; i < json_array_size(copy); i++)
            json_array_set_new(
                copy, i, inline_references(json_array_get(type, i), defined));
    } else if (json_is_object(copy)) {
        const char *key;
        json_t *value;

        json_object_foreach((json_t *)type, key, value) {
            if (strcmp(key, "type") == 0 || strcmp(key, "items") == 0 ||
                strcmp(key, "fields") == 0)
                json_object_set_new(copy, key,
                                    inline_references(value, defined));
        }
    }
    return copy;
}

/* Records in defined every named type that type defines. */
static void collect_definitions(const json_t *type, json_t *defined)
{
    const char *key;
    json_t *value;
    size_t i;

    if (json_is_array(type)) {
        json_array_foreach(type, i, value)
            collect_definitions(value, defined);
        return;
    }
    if (!json_is_object(type))
        return;
    if (json_is_string(json_object_get(type, "name")) &&
        json_is_string(json_object_get(type, "namespace"))) {
        char full[256];

        snprintf(full, sizeof(full), "%s.%s",
                 json_string_value(json_object_get(type, "namespace")),
                 json_string_value(json_object_get(type, "name")));
        json_object_set(defined, full, (json_t *)type);
    }
    json_object_foreach((json_t *)type, key, value)
        collect_definitions(value, defined);
}

/* Each branch of a topic union is the record of its own file, exactly. */
static void check_union(const char *topic, bool is_request, size_t count)
{
    json_t *root = json_loads(codec_schema_json(topic), 0, NULL);
    json_t *defined = json_object();
    avro_schema_t schema;

    assert_true(json_is_array(root));
    check_long("union branches", (int64_t)count,
               (int64_t)json_array_size(root));
    assert_int_equal(
        avro_schema_from_json_length(codec_schema_json(topic),
                                     strlen(codec_schema_json(topic)), &schema),
        0);
    for (int type = 0; type < MW_REC_COUNT; type++) {
        bool is_request_type = false;
        int i = codec_union_branch((enum mw_record_type)type, &is_request_type);
        const char *name = mw_record_names[type];
        json_t *branch;
        char *text, *from_union, *from_file;

        if (is_request_type != is_request)
            continue;
        branch = inline_references(json_array_get(root, (size_t)i), defined);
        text = json_dumps(branch, 0);
        from_union = canonical_or_fail(text);
        from_file = canonical_or_fail(codec_schema_json(name));
        check_string(topic, name,
                     avro_schema_name(avro_schema_union_branch(schema, i)));
        check_string(name, from_file, from_union);
        collect_definitions(json_array_get(root, (size_t)i), defined);
        json_decref(branch);
        free(text);
        free(from_union);
        free(from_file);
    }
    avro_schema_decref(schema);
    json_decref(defined);
    json_decref(root);
}

static void topic_unions_hold_every_record_in_order(void **state)
{
    (void)state;
    check_union("customer.requests", true, 3);
    check_union("customer.events", false, 6);
}

static void check_enum(const char *name, const char *const *symbols, int count)
{
    json_t *root = json_loads(codec_schema_json(name), 0, NULL);
    json_t *list = json_object_get(root, "symbols");

    check_long(name, count, (int64_t)json_array_size(list));
    for (int i = 0; i < count; i++)
        check_string(name, symbols[i],
                     json_string_value(json_array_get(list, (size_t)i)));
    json_decref(root);
}

static void enum_files_follow_the_order_of_mw_h(void **state)
{
    (void)state;
    check_enum("MailPlatform", mw_mail_platform_names, MW_PLATFORM_COUNT);
    check_enum("Service", mw_service_names, MW_SERVICE_COUNT);
    check_enum("AccountType", mw_account_type_names, MW_ACCOUNT_COUNT);
    check_enum("Installation", mw_installation_names, MW_INSTALL_COUNT);
    check_enum("RejectionCode", mw_rejection_code_names, MW_REJ_COUNT);
}

static void schema_json_is_found_by_short_full_and_topic_name(void **state)
{
    (void)state;
    assert_non_null(codec_schema_json("CustomerCreated"));
    assert_ptr_equal(codec_schema_json("CustomerCreated"),
                     codec_schema_json("mesh.provisioning.CustomerCreated"));
    assert_non_null(codec_schema_json("mesh.provisioning.RejectionCode"));
    assert_non_null(codec_schema_json("customer.requests"));
    assert_non_null(codec_schema_json("customer.events"));
    assert_null(codec_schema_json("Customer"));
    assert_null(codec_schema_json("CustomerCreated.avsc"));
    assert_null(codec_schema_json(""));
    assert_null(codec_schema_json(NULL));
}

/* ---- Canonical form and fingerprints ---------------------------------- */

/* share/test/data/schema-tests.txt of the Avro specification. */
static const struct {
    const char *input;
    const char *canonical;
    int64_t fingerprint; /* 0: none given */
} spec_vectors[] = {
    {"\"null\"", "\"null\"", 7195948357588979594},
    {"{\"type\":\"null\"}", "\"null\"", 0},
    {"\"boolean\"", "\"boolean\"", -6970731678124411036},
    {"{\"type\":\"boolean\"}", "\"boolean\"", 0},
    {"\"int\"", "\"int\"", 8247732601305521295},
    {"{\"type\":\"int\"}", "\"int\"", 0},
    {"\"long\"", "\"long\"", -3434872931120570953},
    {"{\"type\":\"long\"}", "\"long\"", 0},
    {"\"float\"", "\"float\"", 5583340709985441680},
    {"{\"type\":\"float\"}", "\"float\"", 0},
    {"\"double\"", "\"double\"", -8181574048448539266},
    {"{\"type\":\"double\"}", "\"double\"", 0},
    {"\"bytes\"", "\"bytes\"", 5746618253357095269},
    {"{\"type\":\"bytes\"}", "\"bytes\"", 0},
    {"\"string\"", "\"string\"", -8142146995180207161},
    {"{\"type\":\"string\"}", "\"string\"", 0},
    {"[  ]", "[]", -1241056759729112623},
    {"[ \"int\"  ]", "[\"int\"]", -5232228896498058493},
    {"[ \"int\" , {\"type\":\"boolean\"} ]", "[\"int\",\"boolean\"]",
     5392556393470105090},
    {"{\"fields\":[], \"type\":\"record\", \"name\":\"foo\"}",
     "{\"name\":\"foo\",\"type\":\"record\",\"fields\":[]}",
     -4824392279771201922},
    {"{\"fields\":[], \"type\":\"record\", \"name\":\"foo\", "
     "\"namespace\":\"x.y\"}",
     "{\"name\":\"x.y.foo\",\"type\":\"record\",\"fields\":[]}",
     5916914534497305771},
    {"{\"fields\":[], \"type\":\"record\", \"name\":\"a.b.foo\", "
     "\"namespace\":\"x.y\"}",
     "{\"name\":\"a.b.foo\",\"type\":\"record\",\"fields\":[]}",
     -4616218487480524110},
    {"{\"fields\":[], \"type\":\"record\", \"name\":\"foo\", "
     "\"doc\":\"Useful info\"}",
     "{\"name\":\"foo\",\"type\":\"record\",\"fields\":[]}",
     -4824392279771201922},
    {"{\"fields\":[], \"type\":\"record\", \"name\":\"foo\", "
     "\"aliases\":[\"foo\",\"bar\"]}",
     "{\"name\":\"foo\",\"type\":\"record\",\"fields\":[]}",
     -4824392279771201922},
    {"{\"fields\":[], \"type\":\"record\", \"name\":\"foo\", \"doc\":\"foo\", "
     "\"aliases\":[\"foo\",\"bar\"]}",
     "{\"name\":\"foo\",\"type\":\"record\",\"fields\":[]}",
     -4824392279771201922},
    {"{\"fields\":[{\"type\":{\"type\":\"boolean\"}, \"name\":\"f1\"}], "
     "\"type\":\"record\", \"name\":\"foo\"}",
     "{\"name\":\"foo\",\"type\":\"record\",\"fields\":[{\"name\":\"f1\","
     "\"type\":\"boolean\"}]}",
     7843277075252814651},
    {"{ \"fields\":[{\"type\":\"boolean\", \"aliases\":[], \"name\":\"f1\", "
     "\"default\":\"true\"},\n"
     "{\"order\":\"descending\",\"name\":\"f2\",\"doc\":\"Hello\","
     "\"type\":\"int\"}],\n"
     "\"type\":\"record\", \"name\":\"foo\"\n}",
     "{\"name\":\"foo\",\"type\":\"record\",\"fields\":[{\"name\":\"f1\","
     "\"type\":\"boolean\"},{\"name\":\"f2\",\"type\":\"int\"}]}",
     -4860222112080293046},
    {"{\"type\":\"enum\", \"name\":\"foo\", \"symbols\":[\"A1\"]}",
     "{\"name\":\"foo\",\"type\":\"enum\",\"symbols\":[\"A1\"]}",
     -6342190197741309591},
    {"{\"namespace\":\"x.y.z\", \"type\":\"enum\", \"name\":\"foo\", "
     "\"doc\":\"foo bar\", \"symbols\":[\"A1\", \"A2\"]}",
     "{\"name\":\"x.y.z.foo\",\"type\":\"enum\",\"symbols\":[\"A1\","
     "\"A2\"]}",
     -4448647247586288245},
    {"{\"name\":\"foo\",\"type\":\"fixed\",\"size\":15}",
     "{\"name\":\"foo\",\"type\":\"fixed\",\"size\":15}", 1756455273707447556},
    {"{\"namespace\":\"x.y.z\", \"type\":\"fixed\", \"name\":\"foo\", "
     "\"doc\":\"foo bar\", \"size\":32}",
     "{\"name\":\"x.y.z.foo\",\"type\":\"fixed\",\"size\":32}",
     -3064184465700546786},
    {"{ \"items\":{\"type\":\"null\"}, \"type\":\"array\"}",
     "{\"type\":\"array\",\"items\":\"null\"}", -589620603366471059},
    {"{ \"values\":\"string\", \"type\":\"map\"}",
     "{\"type\":\"map\",\"values\":\"string\"}", -8732877298790414990},
    {"{\"name\":\"PigValue\",\"type\":\"record\",\n"
     "\"fields\":[{\"name\":\"value\", \"type\":[\"null\", \"int\", "
     "\"long\", \"PigValue\"]}]}",
     "{\"name\":\"PigValue\",\"type\":\"record\",\"fields\":[{\"name\":"
     "\"value\",\"type\":[\"null\",\"int\",\"long\",\"PigValue\"]}]}",
     -1759257747318642341},
    /* Beyond the file: references take the enclosing namespace. */
    {"{\"type\":\"record\",\"name\":\"r\",\"namespace\":\"n\",\"fields\":["
     "{\"name\":\"a\",\"type\":{\"type\":\"enum\",\"name\":\"E\","
     "\"symbols\":[\"X\"]}},{\"name\":\"b\",\"type\":\"E\"},"
     "{\"name\":\"c\",\"type\":{\"type\":\"string\","
     "\"logicalType\":\"uuid\"}}]}",
     "{\"name\":\"n.r\",\"type\":\"record\",\"fields\":[{\"name\":\"a\","
     "\"type\":{\"name\":\"n.E\",\"type\":\"enum\",\"symbols\":[\"X\"]}},"
     "{\"name\":\"b\",\"type\":\"n.E\"},{\"name\":\"c\",\"type\":"
     "\"string\"}]}",
     0},
};

static void canonical_form_and_fingerprint_match_spec_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(spec_vectors) / sizeof(spec_vectors[0]);
         i++) {
        char *canonical = canonical_or_fail(spec_vectors[i].input);
        uint64_t fp = codec_crc64_avro(canonical, strlen(canonical));

        if (strcmp(canonical, spec_vectors[i].canonical) != 0)
            fail_msg("vector %zu: expected %s, seen %s", i,
                     spec_vectors[i].canonical, canonical);
        if (spec_vectors[i].fingerprint != 0 &&
            fp != (uint64_t)spec_vectors[i].fingerprint)
            fail_msg("vector %zu: expected fingerprint %" PRId64
                     ", seen %" PRId64,
                     i, spec_vectors[i].fingerprint, (int64_t)fp);
        free(canonical);
    }
}

static void crc64_avro_of_nothing_is_the_empty_value(void **state)
{
    (void)state;
    assert_true(codec_crc64_avro("", 0) == UINT64_C(0xc15d213aa4d7a795));
    assert_true(codec_crc64_avro(NULL, 0) == UINT64_C(0xc15d213aa4d7a795));
}

static void canonical_form_refuses_broken_schemas(void **state)
{
    static const char *const broken[] = {
        "",
        "{",
        "42",
        "\"Undefined\"",
        "{\"type\":\"record\",\"fields\":[]}",
        "{\"type\":\"record\",\"name\":\"r\"}",
        "{\"type\":\"record\",\"name\":\"r\",\"fields\":[{\"name\":\"a\"}]}",
        "{\"type\":\"enum\",\"name\":\"e\"}",
        "{\"type\":\"enum\",\"name\":\"e\",\"symbols\":[1]}",
        "{\"type\":\"fixed\",\"name\":\"f\"}",
        "{\"type\":\"array\"}",
        "{\"name\":\"x\"}",
        "[\"int\", {\"type\":\"enum\",\"name\":\"e\",\"symbols\":[]},"
        " {\"type\":\"enum\",\"name\":\"e\",\"symbols\":[]}]",
    };

    (void)state;
    for (size_t i = 0; i < sizeof(broken) / sizeof(broken[0]); i++) {
        struct mw_error err = {0};
        char *canonical = codec_canonical_form(broken[i], &err);

        if (canonical != NULL)
            fail_msg("schema %s was accepted as %s", broken[i], canonical);
        assert_true(err.msg[0] != '\0');
    }
}

/*
 * The published fingerprints.  Peers encode with schemas/, so a change
 * here is a change of the contract: make it on purpose, compatibly.
 */
static const uint64_t published_fingerprints[MW_REC_COUNT] = {
    UINT64_C(0x32cccd60a987c083), /* CustomerRequested */
    UINT64_C(0xeeff2f5f130a0caa), /* CustomerTerminationRequested */
    UINT64_C(0xcf13bc4a6f438df1), /* CustomerCreated */
    /* With STALE_UPDATE in RejectionCode; 0x8e3fd63632919282 before. */
    UINT64_C(0xc9b5f70bb929b30f), /* CustomerRejected */
    UINT64_C(0x843ab10717c3ef74), /* TrialEnding */
    UINT64_C(0xd7f6d134e67750aa), /* TrialConverted */
    UINT64_C(0x698f50d4aa39b2dc), /* CustomerTerminated */
    UINT64_C(0x7ba91f0f74fccbf0), /* CustomerUpdateRequested */
    UINT64_C(0xcdce0c9a5548b9a6), /* CustomerUpdated */
};

static void record_fingerprints_are_the_published_ones(void **state)
{
    struct fixture *f = *state;

    for (int i = 0; i < MW_REC_COUNT; i++) {
        char *canonical =
            canonical_or_fail(codec_schema_json(mw_record_names[i]));
        uint64_t fp = codec_fingerprint(f->codec, (enum mw_record_type)i);

        assert_true(fp == codec_crc64_avro(canonical, strlen(canonical)));
        if (fp != published_fingerprints[i])
            fail_msg("%s: expected fingerprint 0x%016" PRIx64
                     ", seen 0x%016" PRIx64,
                     mw_record_names[i], published_fingerprints[i], fp);
        free(canonical);
    }
}

/* ---- Round trips ------------------------------------------------------ */

static void every_sample_survives_a_round_trip(void **state)
{
    struct fixture *f = *state;

    for (size_t i = 0; i < SAMPLE_COUNT; i++) {
        struct mw_record rec;
        struct mw_error err = {0};
        size_t len, len2;
        unsigned char *buf = encode_sample(f, i, &len);
        const void *again;
        enum codec_status status;

        status = codec_decode(f->codec, buf, len, f->arena, &rec, &err);
        if (status != CODEC_OK)
            fail_msg("sample %zu: %s: %s", i, codec_status_name(status),
                     err.msg);
        check_record(&samples[i], &rec);
        /* Decoding and encoding again gives the same bytes. */
        assert_int_equal(
            codec_encode(f->codec, &rec, f->arena, &again, &len2, &err), 0);
        assert_int_equal(len, len2);
        assert_memory_equal(buf, again, len);
        free(buf);
        arena_reset(f->arena);
    }
}

static void single_object_header_carries_the_fingerprint(void **state)
{
    struct fixture *f = *state;

    for (size_t i = 0; i < SAMPLE_COUNT; i++) {
        size_t len;
        unsigned char *buf = encode_sample(f, i, &len);
        uint64_t fp = codec_fingerprint(f->codec, samples[i].type);

        assert_true(len > 10);
        assert_int_equal(buf[0], 0xc3);
        assert_int_equal(buf[1], 0x01);
        for (int b = 0; b < 8; b++)
            assert_int_equal(buf[2 + b], (unsigned char)(fp >> (8 * b)));
        free(buf);
    }
    arena_reset(f->arena);
}

static void request_identity_ignores_requested_at_only(void **state)
{
    struct fixture *f = *state;
    struct mw_error err = {0};
    struct mw_record a = samples[0], b = samples[0], c = samples[0];
    const void *ia, *ib, *ic, *framed;
    size_t la, lb, lc, lf;

    b.u.request.requested_at = 42;
    c.u.request.licenses = 251;
    assert_int_equal(
        codec_request_identity(f->codec, &a, f->arena, &ia, &la, &err), 0);
    assert_int_equal(
        codec_request_identity(f->codec, &b, f->arena, &ib, &lb, &err), 0);
    assert_int_equal(
        codec_request_identity(f->codec, &c, f->arena, &ic, &lc, &err), 0);
    assert_int_equal(la, lb);
    assert_memory_equal(ia, ib, la);
    assert_true(la != lc || memcmp(ia, ic, la) != 0);
    /* It is the unframed record binary with requested_at = 0. */
    a.u.request.requested_at = 0;
    assert_int_equal(codec_encode(f->codec, &a, f->arena, &framed, &lf, &err),
                     0);
    assert_int_equal(lf, la + 10);
    assert_memory_equal((const unsigned char *)framed + 10, ia, la);

    c = samples[3];
    assert_int_equal(
        codec_request_identity(f->codec, &c, f->arena, &ic, &lc, &err), 0);
    c = samples[4];
    assert_int_equal(
        codec_request_identity(f->codec, &c, f->arena, &ic, &lc, &err), -1);
    arena_reset(f->arena);
}

static void encoding_refuses_values_outside_the_schema(void **state)
{
    struct fixture *f = *state;
    struct mw_record rec = samples[0];
    struct mw_rejection too_many = {.count = MW_MAX_REJECTION_ERRORS + 1};
    struct mw_error err = {0};
    const void *out;
    size_t len;

    rec.u.request.service = MW_SERVICE_COUNT;
    assert_int_equal(codec_encode(f->codec, &rec, f->arena, &out, &len, &err),
                     -1);
    assert_non_null(strstr(err.msg, "\"service\""));

    rec = samples[0];
    rec.u.request.company_name = NULL;
    assert_int_equal(codec_encode(f->codec, &rec, f->arena, &out, &len, &err),
                     -1);
    assert_non_null(strstr(err.msg, "\"company_name\""));

    rec = samples[6];
    rec.u.rejected.rejection = &too_many;
    assert_int_equal(codec_encode(f->codec, &rec, f->arena, &out, &len, &err),
                     -1);

    rec.type = MW_REC_COUNT;
    assert_int_equal(codec_encode(f->codec, &rec, f->arena, &out, &len, &err),
                     -1);

    /* A failed encoding leaves the codec usable. */
    rec = samples[0];
    assert_int_equal(codec_encode(f->codec, &rec, f->arena, &out, &len, &err),
                     0);
    arena_reset(f->arena);
}

static void decoding_reuses_the_arena_without_growing(void **state)
{
    struct fixture *f = *state;
    size_t len, capacity = 0;
    unsigned char *buf = encode_sample(f, 0, &len);

    for (int round = 0; round < 1000; round++) {
        struct mw_record rec;
        struct mw_error err = {0};

        arena_reset(f->arena);
        assert_int_equal(codec_decode(f->codec, buf, len, f->arena, &rec, &err),
                         CODEC_OK);
        if (round == 1)
            capacity = arena_capacity(f->arena);
        else if (round > 1)
            assert_int_equal(arena_capacity(f->arena), capacity);
    }
    free(buf);
    arena_reset(f->arena);
}

/* ---- Hostile input ---------------------------------------------------- */

static void empty_values_are_empty(void **state)
{
    struct fixture *f = *state;

    expect_status(f, NULL, 0, CODEC_EMPTY_VALUE, NULL);
    expect_status(f, "", 0, CODEC_EMPTY_VALUE, NULL);
    expect_status(f, NULL, 10, CODEC_EMPTY_VALUE, NULL);
}

static void oversize_values_are_refused_before_reading(void **state)
{
    struct fixture *f = *state;
    unsigned char *big = calloc(1, MW_MAX_MESSAGE_BYTES + 1);

    assert_non_null(big);
    big[0] = 0xc3;
    big[1] = 0x01;
    expect_status(f, big, MW_MAX_MESSAGE_BYTES + 1, CODEC_OVERSIZE, NULL);
    free(big);
}

static void wrong_magic_bytes_are_bad_magic(void **state)
{
    static const struct {
        const char *bytes;
        size_t len;
    } cases[] = {
        {"\x01", 1},
        {"{\"request_id\":1}", 16},
        {"\xc3\x02\x00\x00\x00\x00\x00\x00\x00\x00\x00", 11},
        {"\xc3\x00", 2},
        {"\xff\xff", 2},
    };
    struct fixture *f = *state;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        expect_status(f, cases[i].bytes, cases[i].len, CODEC_BAD_MAGIC,
                      "magic");
}

static void confluent_framing_is_an_unknown_schema_for_now(void **state)
{
    struct fixture *f = *state;

    expect_status(f, "\x00\x00\x00\x00\x07\x02\x61", 7, CODEC_UNKNOWN_SCHEMA,
                  "schema id 7");
    expect_status(f, "\x00\x00\x01", 3, CODEC_CORRUPT_AVRO, "truncated");
}

static void unknown_fingerprints_are_unknown_schemas(void **state)
{
    struct fixture *f = *state;
    size_t len;
    unsigned char *buf = encode_sample(f, 0, &len);

    buf[5] ^= 0x40;
    expect_status(f, buf, len, CODEC_UNKNOWN_SCHEMA, "fingerprint");
    free(buf);
}

static void truncation_at_every_length_is_corrupt(void **state)
{
    struct fixture *f = *state;

    for (size_t i = 0; i < SAMPLE_COUNT; i++) {
        size_t len;
        unsigned char *buf = encode_sample(f, i, &len);

        for (size_t cut = 1; cut < len; cut++) {
            /* A copy of exactly cut bytes, so that ASan sees overreads. */
            unsigned char *part = malloc(cut);

            assert_non_null(part);
            memcpy(part, buf, cut);
            expect_status(f, part, cut, CODEC_CORRUPT_AVRO, NULL);
            free(part);
        }
        free(buf);
    }
}

static void trailing_bytes_are_corrupt(void **state)
{
    struct fixture *f = *state;

    for (size_t i = 0; i < SAMPLE_COUNT; i++) {
        size_t len;
        unsigned char *buf = encode_sample(f, i, &len);
        unsigned char *longer = malloc(len + 3);

        assert_non_null(longer);
        memcpy(longer, buf, len);
        memset(longer + len, 0, 3);
        expect_status(f, longer, len + 1, CODEC_CORRUPT_AVRO, "trailing");
        expect_status(f, longer, len + 3, CODEC_CORRUPT_AVRO, "trailing");
        free(longer);
        free(buf);
    }
}

/* A hand-written Avro body, to say what no encoder would. */
struct bytes {
    unsigned char b[512];
    size_t n;
};

static void put_raw(struct bytes *o, const void *p, size_t len)
{
    assert_true(o->n + len <= sizeof(o->b));
    memcpy(o->b + o->n, p, len);
    o->n += len;
}

static void put_varint(struct bytes *o, uint64_t u)
{
    do {
        unsigned char byte = u & 0x7f;

        u >>= 7;
        if (u != 0)
            byte |= 0x80;
        put_raw(o, &byte, 1);
    } while (u != 0);
}

static void put_long(struct bytes *o, int64_t v)
{
    put_varint(o, ((uint64_t)v << 1) ^ (uint64_t)(v >> 63));
}

static void put_str(struct bytes *o, const char *s)
{
    put_long(o, (int64_t)strlen(s));
    put_raw(o, s, strlen(s));
}

/* The fields of a CustomerTerminationRequested up to effective_at. */
static void put_termination_head(struct bytes *o, struct fixture *f)
{
    uint64_t fp =
        codec_fingerprint(f->codec, MW_REC_CUSTOMER_TERMINATION_REQUESTED);

    put_raw(o, "\xc3\x01", 2);
    for (int i = 0; i < 8; i++) {
        unsigned char byte = (unsigned char)(fp >> (8 * i));

        put_raw(o, &byte, 1);
    }
    put_str(o, "r");
    put_long(o, 5);
    put_str(o, "by");
    put_str(o, "msp");
    put_str(o, "c");
}

/* A CustomerRequested up to additional_domains. */
static void put_request_head(struct bytes *o, struct fixture *f,
                             const char *company)
{
    uint64_t fp = codec_fingerprint(f->codec, MW_REC_CUSTOMER_REQUESTED);

    put_raw(o, "\xc3\x01", 2);
    for (int i = 0; i < 8; i++) {
        unsigned char byte = (unsigned char)(fp >> (8 * i));

        put_raw(o, &byte, 1);
    }
    put_str(o, "r");
    put_long(o, 5);
    put_str(o, "by");
    put_str(o, "msp");
    put_str(o, "msp.example");
    put_long(o, 0); /* mail_platform */
    put_long(o, 0); /* service */
    put_str(o, company);
    put_str(o, "customer.example");
}

/* The fields of a CustomerRequested after additional_domains. */
static void put_request_tail(struct bytes *o)
{
    put_long(o, 0);      /* delivery_destination: null */
    put_long(o, 10);     /* licenses */
    put_str(o, "a@b.c"); /* default_admin_email */
    put_long(o, 0);      /* policy_template_id: null */
    put_raw(o, "\x01\x01\x00\x00", 4);
    put_long(o, 2); /* account_type */
}

static void hand_written_values_decode_or_fail_as_they_should(void **state)
{
    struct fixture *f = *state;
    struct bytes o;
    struct mw_record rec;
    struct mw_error err = {0};

    /* Baseline: a termination with effective_at = null. */
    o = (struct bytes){.n = 0};
    put_termination_head(&o, f);
    put_long(&o, 0);
    expect_status(f, o.b, o.n, CODEC_OK, NULL);

    /* A string length far past the end. */
    o = (struct bytes){.n = 0};
    put_termination_head(&o, f);
    o.n -= 2; /* drop customer_id */
    put_long(&o, INT64_C(1) << 62);
    expect_status(f, o.b, o.n, CODEC_CORRUPT_AVRO, "\"customer_id\"");

    /* A negative string length. */
    o = (struct bytes){.n = 0};
    put_termination_head(&o, f);
    o.n -= 2;
    put_long(&o, -5);
    put_raw(&o, "xxxxxx", 6);
    expect_status(f, o.b, o.n, CODEC_CORRUPT_AVRO, "negative");

    /* A union branch that does not exist. */
    o = (struct bytes){.n = 0};
    put_termination_head(&o, f);
    put_long(&o, 2);
    expect_status(f, o.b, o.n, CODEC_CORRUPT_AVRO, "union branch");
    o.n--;
    put_long(&o, -1);
    expect_status(f, o.b, o.n, CODEC_CORRUPT_AVRO, "union branch");

    /* A varint of 11 bytes, and one whose tenth byte overflows. */
    o = (struct bytes){.n = 0};
    put_termination_head(&o, f);
    put_long(&o, 1);
    put_raw(&o, "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 11);
    expect_status(f, o.b, o.n, CODEC_CORRUPT_AVRO, "effective_at");
    o.n -= 2;
    put_raw(&o, "\x02", 1);
    expect_status(f, o.b, o.n, CODEC_CORRUPT_AVRO, "64 bits");
    /* The longest valid long: INT64_MIN. */
    o.n -= 1;
    put_raw(&o, "\x01", 1);
    assert_int_equal(codec_decode(f->codec, o.b, o.n, f->arena, &rec, &err),
                     CODEC_OK);
    assert_true(rec.u.termination.has_effective_at);
    assert_true(rec.u.termination.effective_at == INT64_MIN);

    /* Enum index out of range, and negative. */
    o = (struct bytes){.n = 0};
    put_request_head(&o, f, "Co");
    put_long(&o, 0);
    put_request_tail(&o);
    expect_status(f, o.b, o.n, CODEC_OK, NULL);
    o.n--;
    put_long(&o, 3);
    expect_status(f, o.b, o.n, CODEC_CORRUPT_AVRO, "enum index 3");
    o.n--;
    put_long(&o, -1);
    expect_status(f, o.b, o.n, CODEC_CORRUPT_AVRO, "enum index -1");

    /* A boolean that is neither 0 nor 1. */
    o = (struct bytes){.n = 0};
    put_request_head(&o, f, "Co");
    put_long(&o, 0);
    put_request_tail(&o);
    o.b[o.n - 2] = 2;
    expect_status(f, o.b, o.n, CODEC_CORRUPT_AVRO, "\"monitor_mode\"");

    /* licenses out of the int range. */
    o = (struct bytes){.n = 0};
    put_request_head(&o, f, "Co");
    put_long(&o, 0);
    put_long(&o, 0);
    put_long(&o, INT64_C(1) << 31);
    expect_status(f, o.b, o.n, CODEC_CORRUPT_AVRO, "\"licenses\"");

    /* An array block count far beyond the bytes left. */
    o = (struct bytes){.n = 0};
    put_request_head(&o, f, "Co");
    put_long(&o, INT64_C(1) << 40);
    put_request_tail(&o);
    expect_status(f, o.b, o.n, CODEC_CORRUPT_AVRO, "block count");
    o = (struct bytes){.n = 0};
    put_request_head(&o, f, "Co");
    put_long(&o, INT64_MIN);
    put_request_tail(&o);
    expect_status(f, o.b, o.n, CODEC_CORRUPT_AVRO, "block count");

    /* Blocks with byte sizes (negative counts) are valid Avro... */
    o = (struct bytes){.n = 0};
    put_request_head(&o, f, "Co");
    put_long(&o, -2);
    put_long(&o, 6);
    put_str(&o, "a.b");
    put_str(&o, "c");
    put_long(&o, 1);
    put_str(&o, "d.e");
    put_long(&o, 0);
    put_request_tail(&o);
    assert_int_equal(codec_decode(f->codec, o.b, o.n, f->arena, &rec, &err),
                     CODEC_OK);
    assert_int_equal(rec.u.request.additional_domains_count, 3);
    assert_string_equal(rec.u.request.additional_domains[0], "a.b");
    assert_string_equal(rec.u.request.additional_domains[1], "c");
    assert_string_equal(rec.u.request.additional_domains[2], "d.e");
    assert_int_equal(rec.u.request.account_type, MW_ACCOUNT_NFR);

    /* ...but a byte size that does not match its items is not. */
    o = (struct bytes){.n = 0};
    put_request_head(&o, f, "Co");
    put_long(&o, -2);
    put_long(&o, 5);
    put_str(&o, "a.b");
    put_str(&o, "c");
    put_long(&o, 0);
    put_request_tail(&o);
    expect_status(f, o.b, o.n, CODEC_CORRUPT_AVRO, "block size");

    /* A NUL byte inside a string cannot become a C string. */
    o = (struct bytes){.n = 0};
    put_request_head(&o, f, "Co");
    o.n -= strlen("customer.example") + 1 + 3;
    put_long(&o, 3);
    put_raw(&o, "C\0o", 3);
    put_str(&o, "customer.example");
    put_long(&o, 0);
    put_request_tail(&o);
    expect_status(f, o.b, o.n, CODEC_CORRUPT_AVRO, "NUL");
    arena_reset(f->arena);
}

/* xorshift64*: a fixed seed keeps failures reproducible. */
static uint64_t next_random(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * UINT64_C(2685821657736338717);
}

static void random_mutations_never_crash(void **state)
{
    struct fixture *f = *state;
    uint64_t seed = UINT64_C(0x6d6573682d776b72);
    int counts[CODEC_STATUS_COUNT] = {0};

    for (int round = 0; round < 6000; round++) {
        size_t i = next_random(&seed) % SAMPLE_COUNT;
        size_t len;
        unsigned char *buf = encode_sample(f, i, &len);
        int edits = 1 + (int)(next_random(&seed) % 4);
        struct mw_record rec;
        struct mw_error err = {0};
        enum codec_status status;

        for (int e = 0; e < edits; e++) {
            /* Mostly the body: the header only picks the schema. */
            uint64_t r = next_random(&seed);
            size_t at = r % len;

            if (r % 8 != 0 && len > 10)
                at = 10 + next_random(&seed) % (len - 10);
            switch ((r >> 8) % 4) {
            case 0:
                buf[at] ^= (unsigned char)(1u << ((r >> 16) % 8));
                break;
            case 1:
                buf[at] = (unsigned char)(r >> 24);
                break;
            case 2:
                buf[at] = 0xff;
                break;
            default:
                len = at + 1; /* cut */
                break;
            }
        }
        status = codec_decode(f->codec, buf, len, f->arena, &rec, &err);
        assert_true(status >= CODEC_OK && status < CODEC_STATUS_COUNT);
        counts[status]++;
        if (status == CODEC_OK) {
            /* Whatever decoded is a record the encoder accepts. */
            const void *out;
            size_t out_len;

            if (codec_encode(f->codec, &rec, f->arena, &out, &out_len, &err) !=
                0)
                fail_msg("round %d: decoded record does not encode: %s", round,
                         err.msg);
        } else {
            assert_true(err.msg[0] != '\0');
        }
        free(buf);
        arena_reset(f->arena);
    }
    assert_true(counts[CODEC_CORRUPT_AVRO] > 0);
    assert_true(counts[CODEC_OK] > 0);
}

static void status_names_are_the_dlq_reasons(void **state)
{
    static const char *const names[CODEC_STATUS_COUNT] = {"ok",
                                                          "empty-value",
                                                          "bad-magic",
                                                          "unknown-schema",
                                                          "schema-incompatible",
                                                          "corrupt-avro",
                                                          "wrong-record-type",
                                                          "oversize"};

    (void)state;
    for (int i = 0; i < CODEC_STATUS_COUNT; i++)
        assert_string_equal(codec_status_name((enum codec_status)i), names[i]);
    assert_string_equal(codec_status_name(CODEC_STATUS_COUNT), "unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_schema_file_parses_with_avro_c),
        cmocka_unit_test(topic_unions_hold_every_record_in_order),
        cmocka_unit_test(enum_files_follow_the_order_of_mw_h),
        cmocka_unit_test(schema_json_is_found_by_short_full_and_topic_name),
        cmocka_unit_test(canonical_form_and_fingerprint_match_spec_vectors),
        cmocka_unit_test(crc64_avro_of_nothing_is_the_empty_value),
        cmocka_unit_test(canonical_form_refuses_broken_schemas),
        cmocka_unit_test(record_fingerprints_are_the_published_ones),
        cmocka_unit_test(every_sample_survives_a_round_trip),
        cmocka_unit_test(single_object_header_carries_the_fingerprint),
        cmocka_unit_test(request_identity_ignores_requested_at_only),
        cmocka_unit_test(encoding_refuses_values_outside_the_schema),
        cmocka_unit_test(decoding_reuses_the_arena_without_growing),
        cmocka_unit_test(empty_values_are_empty),
        cmocka_unit_test(oversize_values_are_refused_before_reading),
        cmocka_unit_test(wrong_magic_bytes_are_bad_magic),
        cmocka_unit_test(confluent_framing_is_an_unknown_schema_for_now),
        cmocka_unit_test(unknown_fingerprints_are_unknown_schemas),
        cmocka_unit_test(truncation_at_every_length_is_corrupt),
        cmocka_unit_test(trailing_bytes_are_corrupt),
        cmocka_unit_test(hand_written_values_decode_or_fail_as_they_should),
        cmocka_unit_test(random_mutations_never_crash),
        cmocka_unit_test(status_names_are_the_dlq_reasons),
    };

    all_errors.count = MW_MAX_REJECTION_ERRORS;
    for (int i = 0; i < MW_MAX_REJECTION_ERRORS; i++) {
        all_errors.errors[i].field = i % 3 ? "field" : NULL;
        all_errors.errors[i].code = i % MW_REJ_COUNT;
        snprintf(all_errors.errors[i].message,
                 sizeof(all_errors.errors[i].message), "Reason %d.", i);
    }
    return cmocka_run_group_tests(tests, setup, teardown);
}
