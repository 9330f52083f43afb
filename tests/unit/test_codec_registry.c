/*
 * Unit tests of the codec with a Schema Registry attached, through a fake
 * fetch function that serves schema text from a table and counts calls:
 * Confluent framing out and in, schema evolution (a writer that added a
 * field, dropped one the reader has a default for, wrote a single record
 * instead of the union, changed a type), the failure classes (unknown id,
 * registry away), the cache, and the decode rate with the cache warm.
 */
#include "arena.h"
#include "codec.h"
#include "error.h"
#include "mw.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum {
    ID_REQUESTS = 1,  /* customer.requests.avsc, the union */
    ID_RECORD,        /* CustomerRequested.avsc alone */
    ID_ADDED,         /* the record plus an optional field at the end */
    ID_DROPPED,       /* the record without monitor_mode (default false) */
    ID_DROPPED_RULES, /* without apply_global_rules (default true) */
    ID_TYPE_CHANGE,   /* account_type a string instead of the enum */
    ID_EVENTS,        /* customer.events.avsc */
    ID_NOT_AVRO,      /* text that is no schema */
    ID_MISSING,       /* without licenses, which has no default */
    ID_DUPLICATE,     /* a union defining the enum E twice */
    ID_COUNT
};

#define ID_UNKNOWN 4242
#define ID_UNREACHABLE 4343

struct fake {
    char *schemas[ID_COUNT];
    int fetches[ID_COUNT];
    int total;
};

static int fake_fetch(void *ctx, uint32_t id, char **json, struct mw_error *err)
{
    struct fake *f = ctx;

    f->total++;
    if (id == ID_UNREACHABLE) {
        mw_error_set(err, MW_ERR_REGISTRY, true,
                     "could not fetch schema id 4343: the Schema Registry "
                     "is not reachable");
        return -1;
    }
    if (id == 0 || id >= ID_COUNT) {
        mw_error_set(err, MW_ERR_REGISTRY, false, "no such schema");
        return CODEC_FETCH_NOT_FOUND;
    }
    f->fetches[id]++;
    *json = strdup(f->schemas[id]);
    return *json ? 0 : -1;
}

/* CustomerRequested.avsc with edit applied to its fields array. */
static char *variant(void (*edit)(json_t *fields))
{
    json_t *root = json_loads(codec_schema_json("CustomerRequested"), 0, NULL);
    char *text;

    assert_non_null(root);
    if (edit != NULL)
        edit(json_object_get(root, "fields"));
    text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    return text;
}

static void remove_field(json_t *fields, const char *name)
{
    for (size_t i = 0; i < json_array_size(fields); i++) {
        json_t *f = json_array_get(fields, i);

        if (strcmp(json_string_value(json_object_get(f, "name")), name) == 0) {
            json_array_remove(fields, i);
            return;
        }
    }
    fail_msg("no field %s", name);
}

static void add_sales_channel(json_t *fields)
{
    json_array_append_new(fields, json_pack("{s:s, s:[s,s], s:n}", "name",
                                            "sales_channel", "type", "null",
                                            "string", "default"));
}

static void drop_monitor_mode(json_t *fields)
{
    remove_field(fields, "monitor_mode");
}

static void drop_apply_global_rules(json_t *fields)
{
    remove_field(fields, "apply_global_rules");
}

static void drop_licenses(json_t *fields)
{
    remove_field(fields, "licenses");
}

static void account_type_as_string(json_t *fields)
{
    json_t *last = json_array_get(fields, json_array_size(fields) - 1);

    json_object_set_new(last, "type", json_string("string"));
}

struct fixture {
    struct fake fake;
    struct codec *codec; /* with the registry */
    struct codec *plain; /* without: single-object bodies to reuse */
    struct mw_arena *arena;
};

static struct codec *registry_codec(struct fake *fake, size_t cache_size,
                                    int64_t requests_id, int64_t events_id)
{
    struct mw_error err = {0};
    struct codec *codec = codec_new(&err);
    struct codec_registry cr = {.fetch = fake_fetch,
                                .ctx = fake,
                                .requests_id = requests_id,
                                .events_id = events_id,
                                .cache_size = cache_size};

    assert_non_null(codec);
    if (codec_use_registry(codec, &cr, &err) != 0)
        fail_msg("codec_use_registry: %s", err.msg);
    return codec;
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    struct mw_error err = {0};

    f->fake.schemas[ID_REQUESTS] =
        strdup(codec_schema_json("customer.requests"));
    f->fake.schemas[ID_RECORD] = variant(NULL);
    f->fake.schemas[ID_ADDED] = variant(add_sales_channel);
    f->fake.schemas[ID_DROPPED] = variant(drop_monitor_mode);
    f->fake.schemas[ID_DROPPED_RULES] = variant(drop_apply_global_rules);
    f->fake.schemas[ID_TYPE_CHANGE] = variant(account_type_as_string);
    f->fake.schemas[ID_EVENTS] = strdup(codec_schema_json("customer.events"));
    f->fake.schemas[ID_NOT_AVRO] = strdup("{\"type\": \"nonsense\"}");
    f->fake.schemas[ID_MISSING] = variant(drop_licenses);
    f->fake.schemas[ID_DUPLICATE] =
        strdup("[\"null\", {\"type\": \"enum\", \"name\": \"E\", "
               "\"symbols\": [\"A\"]}, {\"type\": \"enum\", \"name\": "
               "\"E\", \"symbols\": [\"B\"]}]");
    f->codec = registry_codec(&f->fake, 16, ID_REQUESTS, ID_EVENTS);
    f->plain = codec_new(&err);
    f->arena = arena_new();
    *state = f;
    return f->plain && f->arena ? 0 : -1;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    for (int i = 0; i < ID_COUNT; i++)
        free(f->fake.schemas[i]);
    codec_destroy(f->codec);
    codec_destroy(f->plain);
    arena_destroy(f->arena);
    free(f);
    return 0;
}

static const char *domains[] = {"b.example", "c.example"};

static struct mw_record sample_request(void)
{
    struct mw_record rec;

    memset(&rec, 0, sizeof(rec));
    rec.type = MW_REC_CUSTOMER_REQUESTED;
    rec.u.request = (struct mw_request){
        .request_id = "6f1c1c3e-4a57-4c43-9d7c-0b0f0f1d8c11",
        .requested_at = 1764000000000,
        .requested_by = "user@msp.example",
        .msp_id = "msp-1",
        .msp_domain = "msp.example",
        .mail_platform = MW_PLATFORM_MICROSOFT_365,
        .service = MW_SERVICE_MESH_365,
        .company_name = "Customer",
        .primary_domain = "a.example",
        .additional_domains = domains,
        .additional_domains_count = 2,
        .delivery_destination = NULL,
        .licenses = 25,
        .default_admin_email = "admin@a.example",
        .policy_template_id = "tpl-1",
        .apply_global_rules = false,
        .msp_management = true,
        .two_factor_required = true,
        .monitor_mode = true,
        .account_type = MW_ACCOUNT_TRIAL,
    };
    return rec;
}

/* The Avro binary of rec (no framing), copied into buf; returns its length. */
static size_t record_body(struct fixture *f, const struct mw_record *rec,
                          unsigned char *buf, size_t size)
{
    struct mw_error err = {0};
    const void *out;
    size_t len;

    assert_int_equal(codec_encode(f->plain, rec, f->arena, &out, &len, &err),
                     0);
    assert_true(len - 10 <= size);
    memcpy(buf, (const unsigned char *)out + 10, len - 10);
    return len - 10;
}

/* 0x00, big-endian id, then body. */
static size_t frame(uint32_t id, const unsigned char *body, size_t len,
                    unsigned char *out)
{
    out[0] = 0;
    out[1] = (unsigned char)(id >> 24);
    out[2] = (unsigned char)(id >> 16);
    out[3] = (unsigned char)(id >> 8);
    out[4] = (unsigned char)id;
    memcpy(out + 5, body, len);
    return len + 5;
}

static enum codec_status decode(struct fixture *f, const unsigned char *buf,
                                size_t len, struct mw_record *rec,
                                struct mw_error *err)
{
    mw_error_clear(err);
    return codec_decode(f->codec, buf, len, f->arena, rec, err);
}

static void assert_same_request(const struct mw_request *a,
                                const struct mw_request *b)
{
    assert_string_equal(a->request_id, b->request_id);
    assert_string_equal(a->company_name, b->company_name);
    assert_int_equal(a->additional_domains_count, b->additional_domains_count);
    for (size_t i = 0; i < a->additional_domains_count; i++)
        assert_string_equal(a->additional_domains[i], b->additional_domains[i]);
    assert_int_equal(a->licenses, b->licenses);
    assert_string_equal(a->policy_template_id, b->policy_template_id);
    assert_int_equal(a->apply_global_rules, b->apply_global_rules);
    assert_int_equal(a->two_factor_required, b->two_factor_required);
    assert_int_equal(a->account_type, b->account_type);
}

static void union_and_single_record_writers_decode(void **state)
{
    struct fixture *f = *state;
    struct mw_record want = sample_request(), got;
    struct mw_error err;
    unsigned char body[4096], buf[4200];
    size_t n = record_body(f, &want, body + 1, sizeof(body) - 1), len;

    body[0] = 0; /* union branch 0: CustomerRequested */
    len = frame(ID_REQUESTS, body, n + 1, buf);
    assert_int_equal(decode(f, buf, len, &got, &err), CODEC_OK);
    assert_int_equal(got.type, MW_REC_CUSTOMER_REQUESTED);
    assert_same_request(&got.u.request, &want.u.request);
    assert_true(got.u.request.monitor_mode);

    len = frame(ID_RECORD, body + 1, n, buf);
    assert_int_equal(decode(f, buf, len, &got, &err), CODEC_OK);
    assert_same_request(&got.u.request, &want.u.request);
}

static void a_writer_with_an_added_optional_field_decodes(void **state)
{
    struct fixture *f = *state;
    struct mw_record want = sample_request(), got;
    struct mw_error err;
    unsigned char body[4096], buf[4200];
    size_t n = record_body(f, &want, body, sizeof(body) - 3), len;

    body[n] = 2; /* sales_channel: branch 1 (string) */
    body[n + 1] = 2;
    body[n + 2] = 'x';
    len = frame(ID_ADDED, body, n + 3, buf);
    assert_int_equal(decode(f, buf, len, &got, &err), CODEC_OK);
    assert_same_request(&got.u.request, &want.u.request);
}

static void a_writer_without_a_defaulted_field_gets_the_default(void **state)
{
    struct fixture *f = *state;
    struct mw_record want = sample_request(), got;
    struct mw_error err;
    unsigned char body[4096], buf[4200];
    size_t n = record_body(f, &want, body, sizeof(body)), len;

    /* The last two bytes are monitor_mode (true) and account_type. */
    assert_int_equal(body[n - 2], 1);
    body[n - 2] = body[n - 1];
    len = frame(ID_DROPPED, body, n - 1, buf);
    assert_int_equal(decode(f, buf, len, &got, &err), CODEC_OK);
    assert_same_request(&got.u.request, &want.u.request);
    assert_false(got.u.request.monitor_mode); /* the schema's default */

    /* A default of true, and the values of the last message do not leak. */
    n = record_body(f, &want, body, sizeof(body));
    /* apply_global_rules (false) is the fifth byte from the end. */
    assert_int_equal(body[n - 5], 0);
    memmove(body + n - 5, body + n - 4, 4);
    len = frame(ID_DROPPED_RULES, body, n - 1, buf);
    assert_int_equal(decode(f, buf, len, &got, &err), CODEC_OK);
    assert_true(got.u.request.apply_global_rules);
    assert_true(got.u.request.monitor_mode);
}

static void a_type_change_is_schema_incompatible_naming_the_field(void **state)
{
    struct fixture *f = *state;
    struct mw_record want = sample_request(), got;
    struct mw_error err;
    unsigned char body[4096], buf[4200];
    size_t n = record_body(f, &want, body, sizeof(body) - 8), len;

    /* account_type written as the string "TRIAL". */
    memcpy(body + n - 1, "\x0aTRIAL", 6);
    len = frame(ID_TYPE_CHANGE, body, n + 5, buf);
    assert_int_equal(decode(f, buf, len, &got, &err),
                     CODEC_SCHEMA_INCOMPATIBLE);
    assert_false(err.retriable);
    if (strstr(err.msg, "account_type") == NULL)
        fail_msg("expected the field in \"%s\"", err.msg);

    /* A field without a default that the writer lacks. */
    n = record_body(f, &want, body, sizeof(body));
    len = frame(ID_MISSING, body, n, buf);
    assert_int_equal(decode(f, buf, len, &got, &err),
                     CODEC_SCHEMA_INCOMPATIBLE);
    if (strstr(err.msg, "licenses") == NULL)
        fail_msg("expected the field in \"%s\"", err.msg);

    len = frame(ID_NOT_AVRO, body, n, buf);
    assert_int_equal(decode(f, buf, len, &got, &err),
                     CODEC_SCHEMA_INCOMPATIBLE);
}

/*
 * avro-c leaks a schema that defines a named type twice on every parse:
 * the codec refuses it before avro-c sees it, once, and says why.
 */
static void a_writer_defining_a_name_twice_is_refused(void **state)
{
    struct fixture *f = *state;
    struct mw_record got;
    struct mw_error err;
    unsigned char buf[16];
    size_t len = frame(ID_DUPLICATE, (const unsigned char *)"\2\0", 2, buf);

    for (int i = 0; i < 2; i++) {
        assert_int_equal(decode(f, buf, len, &got, &err),
                         CODEC_SCHEMA_INCOMPATIBLE);
        assert_false(err.retriable);
        if (strstr(err.msg, "defines the type E twice") == NULL)
            fail_msg("expected the name in \"%s\"", err.msg);
    }
    assert_int_equal(f->fake.fetches[ID_DUPLICATE], 1);
}

static void unknown_ids_are_poison_and_an_absent_registry_is_not(void **state)
{
    struct fixture *f = *state;
    struct mw_record got;
    struct mw_error err;
    unsigned char buf[16] = {0};
    size_t len = frame(ID_UNKNOWN, (const unsigned char *)"\0", 1, buf);

    assert_int_equal(decode(f, buf, len, &got, &err), CODEC_UNKNOWN_SCHEMA);
    assert_false(err.retriable);
    assert_non_null(strstr(err.msg, "4242"));

    len = frame(ID_UNREACHABLE, (const unsigned char *)"\0", 1, buf);
    assert_int_equal(decode(f, buf, len, &got, &err), CODEC_UNKNOWN_SCHEMA);
    assert_true(err.retriable);

    /* A truncated header never reaches the registry. */
    f->fake.total = 0;
    assert_int_equal(decode(f, buf, 3, &got, &err), CODEC_CORRUPT_AVRO);
    assert_int_equal(f->fake.total, 0);
}

static void corrupt_bodies_are_walked_with_the_writer_schema(void **state)
{
    struct fixture *f = *state;
    struct mw_record want = sample_request(), got;
    struct mw_error err;
    unsigned char body[4096], buf[4200];
    size_t n = record_body(f, &want, body + 1, sizeof(body) - 1), len;

    body[0] = 0;
    for (size_t cut = 0; cut < n + 1; cut++) {
        len = frame(ID_REQUESTS, body, cut, buf);
        assert_int_equal(decode(f, buf, len, &got, &err), CODEC_CORRUPT_AVRO);
    }
    body[0] = 8; /* branch 4 of a two-branch union */
    len = frame(ID_REQUESTS, body, n + 1, buf);
    assert_int_equal(decode(f, buf, len, &got, &err), CODEC_CORRUPT_AVRO);
}

static void encoding_frames_the_topic_union_and_decodes_back(void **state)
{
    struct fixture *f = *state;
    struct mw_record want = sample_request(), got;
    struct mw_rejection rej = {.count = 1};
    struct mw_error err = {0};
    const void *out;
    size_t len;
    const unsigned char *p;

    assert_int_equal(codec_encode(f->codec, &want, f->arena, &out, &len, &err),
                     0);
    p = out;
    assert_memory_equal(p, "\0\0\0\0\x01\x00", 6);
    assert_int_equal(decode(f, p, len, &got, &err), CODEC_OK);
    assert_same_request(&got.u.request, &want.u.request);

    rej.errors[0].field = "licenses";
    rej.errors[0].code = MW_REJ_INVALID_FIELD;
    strcpy(rej.errors[0].message, "Too many.");
    memset(&want, 0, sizeof(want));
    want.type = MW_REC_CUSTOMER_REJECTED;
    want.u.rejected = (struct mw_customer_rejected){.event_id = "e",
                                                    .request_id = "r",
                                                    .msp_id = "m",
                                                    .occurred_at = 5,
                                                    .requested_by = NULL,
                                                    .rejection = &rej};
    assert_int_equal(codec_encode(f->codec, &want, f->arena, &out, &len, &err),
                     0);
    p = out;
    /* Id 7 (customer.events), branch 1 (CustomerRejected). */
    assert_memory_equal(p, "\0\0\0\0\x07\x02", 6);
    assert_int_equal(decode(f, p, len, &got, &err), CODEC_OK);
    assert_int_equal(got.type, MW_REC_CUSTOMER_REJECTED);
    assert_int_equal(got.u.rejected.rejection->count, 1);
    assert_string_equal(got.u.rejected.rejection->errors[0].field, "licenses");
    assert_string_equal(got.u.rejected.rejection->errors[0].message,
                        "Too many.");
}

static void encoding_without_an_id_for_the_topic_fails(void **state)
{
    struct fixture *f = *state;
    struct codec *codec = registry_codec(&f->fake, 4, -1, ID_EVENTS);
    struct mw_record rec = sample_request();
    struct mw_error err = {0};
    const void *out;
    size_t len;

    assert_int_equal(codec_encode(codec, &rec, f->arena, &out, &len, &err), -1);
    assert_non_null(strstr(err.msg, "no registry schema id"));
    codec_destroy(codec);
}

static void a_full_cache_evicts_and_fetches_again(void **state)
{
    struct fixture *f = *state;
    struct codec *codec = registry_codec(&f->fake, 1, -1, -1);
    struct mw_record want = sample_request(), got;
    struct mw_error err;
    unsigned char body[4096], a[4200], b[4200];
    size_t n = record_body(f, &want, body + 1, sizeof(body) - 1);
    size_t a_len, b_len;

    body[0] = 0;
    a_len = frame(ID_REQUESTS, body, n + 1, a);
    b_len = frame(ID_RECORD, body + 1, n, b);
    memset(f->fake.fetches, 0, sizeof(f->fake.fetches));
    for (int i = 0; i < 3; i++) {
        assert_int_equal(codec_decode(codec, a, a_len, f->arena, &got, &err),
                         CODEC_OK);
        assert_int_equal(codec_decode(codec, b, b_len, f->arena, &got, &err),
                         CODEC_OK);
    }
    assert_int_equal(f->fake.fetches[ID_REQUESTS], 3);
    assert_int_equal(f->fake.fetches[ID_RECORD], 3);
    codec_destroy(codec);
}

static double seconds_since(int64_t start_ns)
{
    return (double)(mw_monotonic_ns() - start_ns) / 1e9;
}

/*
 * 10,000 messages of one id fetch it once.  Prints the decode rate with
 * the cache warm beside the single-object rate of the same record (no
 * timing assertion: machines differ).
 */
static void one_id_is_fetched_once_and_decodes_fast(void **state)
{
    struct fixture *f = *state;
    struct codec *codec = registry_codec(&f->fake, 1000, -1, -1);
    struct mw_record want = sample_request(), got;
    struct mw_error err;
    unsigned char body[4096], buf[4200];
    size_t n = record_body(f, &want, body + 1, sizeof(body) - 1), len;
    const void *single;
    size_t single_len;
    int64_t start;
    const int count = 10000, rounds = 20;
    double confluent_s, single_s;

    body[0] = 0;
    len = frame(ID_REQUESTS, body, n + 1, buf);
    memset(f->fake.fetches, 0, sizeof(f->fake.fetches));
    for (int i = 0; i < count; i++) {
        arena_reset(f->arena);
        assert_int_equal(codec_decode(codec, buf, len, f->arena, &got, &err),
                         CODEC_OK);
    }
    assert_int_equal(f->fake.fetches[ID_REQUESTS], 1);

    start = mw_monotonic_ns();
    for (int i = 0; i < count * rounds; i++) {
        arena_reset(f->arena);
        if (codec_decode(codec, buf, len, f->arena, &got, &err) != CODEC_OK)
            fail_msg("decode: %s", err.msg);
    }
    confluent_s = seconds_since(start);

    assert_int_equal(
        codec_encode(f->plain, &want, f->arena, &single, &single_len, &err), 0);
    memcpy(body, single, single_len);
    start = mw_monotonic_ns();
    for (int i = 0; i < count * rounds; i++) {
        arena_reset(f->arena);
        if (codec_decode(f->plain, body, single_len, f->arena, &got, &err) !=
            CODEC_OK)
            fail_msg("decode: %s", err.msg);
    }
    single_s = seconds_since(start);
    printf("decode rate, cache warm: %.0f CustomerRequested/s with Confluent "
           "framing and resolution, %.0f/s single-object (%zu-byte record, "
           "%d messages)\n",
           count * rounds / confluent_s, count * rounds / single_s, n,
           count * rounds);
    codec_destroy(codec);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(union_and_single_record_writers_decode),
        cmocka_unit_test(a_writer_with_an_added_optional_field_decodes),
        cmocka_unit_test(a_writer_without_a_defaulted_field_gets_the_default),
        cmocka_unit_test(a_type_change_is_schema_incompatible_naming_the_field),
        cmocka_unit_test(a_writer_defining_a_name_twice_is_refused),
        cmocka_unit_test(unknown_ids_are_poison_and_an_absent_registry_is_not),
        cmocka_unit_test(corrupt_bodies_are_walked_with_the_writer_schema),
        cmocka_unit_test(encoding_frames_the_topic_union_and_decodes_back),
        cmocka_unit_test(encoding_without_an_id_for_the_topic_fails),
        cmocka_unit_test(a_full_cache_evicts_and_fetches_again),
        cmocka_unit_test(one_id_is_fetched_once_and_decodes_fast),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
