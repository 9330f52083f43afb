/*
 * Unit tests of JSON conversion: times in both directions, requests from
 * JSON with their defaults and errors, and every record to JSON with
 * "type" first and the fields in schema order.
 */
#include "arena.h"
#include "convert.h"
#include "error.h"
#include "ids.h"
#include "mw.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int setup(void **state)
{
    *state = arena_new();
    return *state == NULL ? -1 : 0;
}

static int teardown(void **state)
{
    arena_destroy(*state);
    return 0;
}

static json_t *parse(const char *text)
{
    json_error_t jerr;
    json_t *v = json_loads(text, 0, &jerr);

    if (v == NULL)
        fail_msg("bad test JSON: %s: %s", jerr.text, text);
    return v;
}

/* Dumps with keys in insertion order, so that order is compared too. */
static void expect_json(const json_t *seen, const char *want)
{
    char *text = json_dumps(seen, JSON_COMPACT);
    json_t *parsed = parse(want);
    char *want_text = json_dumps(parsed, JSON_COMPACT);

    if (text == NULL || strcmp(text, want_text) != 0)
        fail_msg("expected %s\nseen     %s", want_text, text ? text : "(null)");
    free(text);
    free(want_text);
    json_decref(parsed);
}

/* ---- Times ------------------------------------------------------------ */

static const struct {
    int64_t ms;
    const char *text;
} time_vectors[] = {
    {0, "1970-01-01T00:00:00.000Z"},
    {1764050725123, "2025-11-25T06:05:25.123Z"},
    {-1, "1969-12-31T23:59:59.999Z"},
    {951825600000, "2000-02-29T12:00:00.000Z"},
    {253402300799999, "9999-12-31T23:59:59.999Z"},
    {-62135596800000, "0001-01-01T00:00:00.000Z"},
};

static void times_format_and_parse_back(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(time_vectors) / sizeof(time_vectors[0]);
         i++) {
        char text[32];
        int64_t ms = 0;

        convert_format_time(time_vectors[i].ms, text);
        if (strcmp(text, time_vectors[i].text) != 0)
            fail_msg("%" PRId64 ": expected %s, seen %s", time_vectors[i].ms,
                     time_vectors[i].text, text);
        assert_int_equal(convert_parse_time(text, &ms), 0);
        if (ms != time_vectors[i].ms)
            fail_msg("%s: expected %" PRId64 ", seen %" PRId64, text,
                     time_vectors[i].ms, ms);
    }
}

static void extreme_times_format_without_overflow(void **state)
{
    char text[32];

    (void)state;
    convert_format_time(INT64_MIN, text);
    assert_true(strlen(text) < 32 && text[strlen(text) - 1] == 'Z');
    convert_format_time(INT64_MAX, text);
    assert_true(strlen(text) < 32 && text[strlen(text) - 1] == 'Z');
}

static const struct {
    const char *text;
    int ok;
    int64_t ms;
} parse_vectors[] = {
    {"2026-11-25T06:05:25Z", 1, 1795586725000},
    {"2026-11-25T06:05:25.1Z", 1, 1795586725100},
    {"2026-11-25T06:05:25.123456789Z", 1, 1795586725123},
    {"2024-02-29T00:00:00Z", 1, 1709164800000},
    {"1764050725123", 1, 1764050725123},
    {"-1000", 1, -1000},
    {"", 0, 0},
    {"-", 0, 0},
    {"x", 0, 0},
    {"2026-11-25", 0, 0},
    {"2026-11-25T06:05:25", 0, 0},
    {"2026-11-25T06:05:25.Z", 0, 0},
    {"2026-11-25T06:05:25.1234567891Z", 0, 0},
    {"2026-11-25 06:05:25Z", 0, 0},
    {"2026-11-25T06:05:25+00:00", 0, 0},
    {"2026-11-25T06:05:25z", 0, 0},
    {"2026-11-25T24:00:00Z", 0, 0},
    {"2026-11-25T06:60:00Z", 0, 0},
    {"2026-11-25T06:05:60Z", 0, 0},
    {"2026-13-01T00:00:00Z", 0, 0},
    {"2026-00-01T00:00:00Z", 0, 0},
    {"2023-02-29T00:00:00Z", 0, 0},
    {"2026-04-31T00:00:00Z", 0, 0},
    {"2026-11-25T06:05:25ZZ", 0, 0},
    {"99999999999999999999", 0, 0},
    {" 1000", 0, 0},
    {"+1000", 0, 0},
};

static void time_parsing_is_strict(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(parse_vectors) / sizeof(parse_vectors[0]);
         i++) {
        int64_t ms = 0;
        int rc = convert_parse_time(parse_vectors[i].text, &ms);

        if (parse_vectors[i].ok && (rc != 0 || ms != parse_vectors[i].ms))
            fail_msg("\"%s\": expected %" PRId64 ", seen rc %d ms %" PRId64,
                     parse_vectors[i].text, parse_vectors[i].ms, rc, ms);
        if (!parse_vectors[i].ok && rc != -1)
            fail_msg("\"%s\": accepted as %" PRId64, parse_vectors[i].text, ms);
    }
    assert_int_equal(convert_parse_time(NULL, &(int64_t){0}), -1);
}

/* ---- JSON to record and back ------------------------------------------ */

static const char full_request[] =
    "{\"type\":\"CustomerRequested\","
    "\"request_id\":\"0b6f7c1e-6a57-4f6e-9d43-3c8f0f0e4a11\","
    "\"requested_at\":\"2025-11-25T06:05:25.123Z\","
    "\"requested_by\":\"ops@msp.example\","
    "\"msp_id\":\"msp-0001\","
    "\"msp_domain\":\"msp.example\","
    "\"mail_platform\":\"MICROSOFT_365\","
    "\"service\":\"MESH_UNIFIED\","
    "\"company_name\":\"Société Générale — 東京 🚀\","
    "\"primary_domain\":\"customer.example\","
    "\"additional_domains\":[\"b.example\",\"xn--bcher-kva.example\"],"
    "\"delivery_destination\":\"mx.customer.example:25\","
    "\"licenses\":250,"
    "\"default_admin_email\":\"admin@customer.example\","
    "\"policy_template_id\":\"tpl-42\","
    "\"apply_global_rules\":false,"
    "\"msp_management\":false,"
    "\"two_factor_required\":true,"
    "\"monitor_mode\":true,"
    "\"account_type\":\"TRIAL\"}";

static void round_trip(struct mw_arena *arena, const char *in, const char *want)
{
    json_t *obj = parse(in);
    struct mw_record rec;
    struct mw_error err = {0};
    json_t *out;

    if (convert_record_from_json(obj, arena, &rec, &err) != 0)
        fail_msg("%s: %s", in, err.msg);
    out = convert_record_to_json(&rec);
    assert_non_null(out);
    expect_json(out, want);
    json_decref(out);
    json_decref(obj);
    arena_reset(arena);
}

static void a_full_request_survives_a_round_trip(void **state)
{
    round_trip(*state, full_request, full_request);
}

static void epoch_milliseconds_are_accepted_for_times(void **state)
{
    json_t *obj = parse(full_request);
    struct mw_record rec;
    struct mw_error err = {0};

    json_object_set_new(obj, "requested_at", json_integer(1764050725123));
    assert_int_equal(convert_record_from_json(obj, *state, &rec, &err), 0);
    assert_true(rec.u.request.requested_at == 1764050725123);
    json_decref(obj);
    arena_reset(*state);
}

/* Times no ISO string can hold print as milliseconds and read back. */
static void times_beyond_year_9999_print_as_milliseconds(void **state)
{
    static const int64_t extremes[] = {INT64_MIN, -62135596800001LL,
                                       253402300800000LL, INT64_MAX};

    for (size_t i = 0; i < sizeof(extremes) / sizeof(extremes[0]); i++) {
        json_t *obj = parse(full_request), *out;
        struct mw_record rec, back;
        struct mw_error err = {0};

        json_object_set_new(obj, "requested_at", json_integer(extremes[i]));
        assert_int_equal(convert_record_from_json(obj, *state, &rec, &err), 0);
        out = convert_record_to_json(&rec);
        assert_non_null(out);
        assert_true(json_is_integer(json_object_get(out, "requested_at")));
        assert_int_equal(convert_record_from_json(out, *state, &back, &err), 0);
        assert_true(back.u.request.requested_at == extremes[i]);
        json_decref(out);
        json_decref(obj);
        arena_reset(*state);
    }
}

static void missing_optional_fields_take_the_schema_defaults(void **state)
{
    json_t *obj =
        parse("{\"requested_by\":\"ops@msp.example\",\"msp_id\":\"m\","
              "\"msp_domain\":\"msp.example\",\"mail_platform\":\"OTHER\","
              "\"service\":\"MESH_GATEWAY\",\"company_name\":\"Co\","
              "\"primary_domain\":\"co.example\",\"licenses\":1,"
              "\"default_admin_email\":\"a@co.example\","
              "\"account_type\":\"BUY_NOW\"}");
    struct mw_record rec;
    struct mw_error err = {0};
    int64_t before = mw_now_ms(), after;
    const struct mw_request *r = &rec.u.request;

    assert_int_equal(convert_record_from_json(obj, *state, &rec, &err), 0);
    after = mw_now_ms();
    assert_int_equal(rec.type, MW_REC_CUSTOMER_REQUESTED);
    assert_true(ids_is_uuid(r->request_id));
    assert_int_equal(r->request_id[14], '4'); /* version 4: random */
    assert_true(r->requested_at >= before && r->requested_at <= after);
    assert_int_equal(r->additional_domains_count, 0);
    assert_null(r->delivery_destination);
    assert_null(r->policy_template_id);
    assert_true(r->apply_global_rules);
    assert_true(r->msp_management);
    assert_false(r->two_factor_required);
    assert_false(r->monitor_mode);
    json_decref(obj);
    arena_reset(*state);
}

static void explicit_nulls_are_null(void **state)
{
    json_t *obj = parse(full_request);
    struct mw_record rec;
    struct mw_error err = {0};

    json_object_set_new(obj, "delivery_destination", json_null());
    json_object_set_new(obj, "policy_template_id", json_null());
    json_object_set_new(obj, "additional_domains", json_array());
    assert_int_equal(convert_record_from_json(obj, *state, &rec, &err), 0);
    assert_null(rec.u.request.delivery_destination);
    assert_null(rec.u.request.policy_template_id);
    assert_int_equal(rec.u.request.additional_domains_count, 0);
    json_decref(obj);
    arena_reset(*state);
}

static void terminations_are_chosen_by_type(void **state)
{
    round_trip(*state,
               "{\"type\":\"CustomerTerminationRequested\","
               "\"request_id\":\"r1\",\"requested_at\":0,"
               "\"requested_by\":\"ops@msp.example\",\"msp_id\":\"m\","
               "\"customer_id\":\"c1\"}",
               "{\"type\":\"CustomerTerminationRequested\","
               "\"request_id\":\"r1\","
               "\"requested_at\":\"1970-01-01T00:00:00.000Z\","
               "\"requested_by\":\"ops@msp.example\",\"msp_id\":\"m\","
               "\"customer_id\":\"c1\",\"effective_at\":null}");
    round_trip(*state,
               "{\"type\":\"CustomerTerminationRequested\","
               "\"request_id\":\"r1\",\"requested_at\":0,"
               "\"requested_by\":\"ops@msp.example\",\"msp_id\":\"m\","
               "\"customer_id\":\"c1\","
               "\"effective_at\":\"2026-01-01T00:00:00Z\"}",
               "{\"type\":\"CustomerTerminationRequested\","
               "\"request_id\":\"r1\","
               "\"requested_at\":\"1970-01-01T00:00:00.000Z\","
               "\"requested_by\":\"ops@msp.example\",\"msp_id\":\"m\","
               "\"customer_id\":\"c1\","
               "\"effective_at\":\"2026-01-01T00:00:00.000Z\"}");
}

/* A change to full_request, and what the error must say. */
static const struct {
    const char *key;
    const char *value; /* JSON; NULL deletes the key */
    const char *msg;
    const char *detail;
} error_cases[] = {
    {"licenses", "\"10\"", "field \"licenses\" must be an integer", NULL},
    {"licenses", "2147483648", "field \"licenses\" is out of range", NULL},
    {"licenses", "1.5", "field \"licenses\" must be an integer", NULL},
    {"licenses", NULL, "missing required field \"licenses\"", NULL},
    {"company_name", "42", "field \"company_name\" must be a string", NULL},
    {"company_name", "null", "field \"company_name\" must be a string", NULL},
    {"company_name", "\"a\\u0000b\"", "\"company_name\" contains a NUL", NULL},
    {"msp_id", NULL, "missing required field \"msp_id\"", NULL},
    {"service", "\"MESH_EVERYTHING\"",
     "unknown symbol \"MESH_EVERYTHING\" for field \"service\"",
     "Allowed symbols: MESH_GATEWAY, MESH_365, MESH_UNIFIED."},
    {"account_type", "1", "field \"account_type\" must be a string", NULL},
    {"mail_platform", "\"microsoft_365\"",
     "unknown symbol \"microsoft_365\" for field \"mail_platform\"",
     "Allowed symbols: MICROSOFT_365, GOOGLE_WORKSPACE, "
     "EXCHANGE_ON_PREMISES, OTHER."},
    {"monitor_mode", "\"yes\"", "field \"monitor_mode\" must be true or false",
     NULL},
    {"additional_domains", "\"a.example\"",
     "field \"additional_domains\" must be an array of strings", NULL},
    {"additional_domains", "[\"a.example\", 7]",
     "item 1 of field \"additional_domains\" must be a string", NULL},
    {"delivery_destination", "25",
     "field \"delivery_destination\" must be a string or null", NULL},
    {"requested_at", "\"yesterday\"", "invalid time for field \"requested_at\"",
     NULL},
    {"requested_at", "true", "field \"requested_at\" must be a time", NULL},
    {"request_id", "null", "field \"request_id\" must be a string", NULL},
    {"licences", "10", "unknown field \"licences\" in a CustomerRequested",
     NULL},
    {"type", "\"CustomerCreated\"",
     "cannot produce a record of type \"CustomerCreated\"", NULL},
    {"type", "7", "field \"type\" must be a string", NULL},
};

static void bad_values_are_refused_naming_the_field(void **state)
{
    for (size_t i = 0; i < sizeof(error_cases) / sizeof(error_cases[0]); i++) {
        json_t *obj = parse(full_request);
        struct mw_record rec;
        struct mw_error err = {0};

        if (error_cases[i].value == NULL) {
            json_object_del(obj, error_cases[i].key);
        } else {
            json_t *v = json_loads(error_cases[i].value,
                                   JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);

            assert_non_null(v);
            json_object_set_new(obj, error_cases[i].key, v);
        }
        if (convert_record_from_json(obj, *state, &rec, &err) != -1)
            fail_msg("case %zu (%s) was accepted", i, error_cases[i].key);
        if (strstr(err.msg, error_cases[i].msg) == NULL)
            fail_msg("case %zu: expected \"%s\", seen \"%s\"", i,
                     error_cases[i].msg, err.msg);
        if (error_cases[i].detail != NULL &&
            strcmp(err.detail, error_cases[i].detail) != 0)
            fail_msg("case %zu: expected detail \"%s\", seen \"%s\"", i,
                     error_cases[i].detail, err.detail);
        assert_int_equal(err.code, MW_ERR_INPUT);
        json_decref(obj);
        arena_reset(*state);
    }
}

static void non_objects_are_refused(void **state)
{
    json_t *list = json_array();
    struct mw_record rec;
    struct mw_error err = {0};

    assert_int_equal(convert_record_from_json(list, *state, &rec, &err), -1);
    assert_non_null(strstr(err.msg, "must be a JSON object, not an array"));
    assert_int_equal(convert_record_from_json(NULL, *state, &rec, &err), -1);
    json_decref(list);
}

/* ---- Events to JSON --------------------------------------------------- */

static void events_print_in_schema_order(void **state)
{
    static const char *domains[] = {"b.example"};
    static const struct mw_rejection rejection = {
        .count = 2,
        .errors = {{.field = "licenses",
                    .code = MW_REJ_NFR_LICENSE_LIMIT_EXCEEDED,
                    .message = "At most 50."},
                   {.field = NULL,
                    .code = MW_REJ_REQUEST_ID_CONFLICT,
                    .message = "Conflict."}}};
    static const struct {
        struct mw_record rec;
        const char *json;
    } cases[] = {
        {{.type = MW_REC_CUSTOMER_CREATED,
          .u.created = {.event_id = "e",
                        .customer_id = "c",
                        .request_id = "r",
                        .msp_id = "m",
                        .occurred_at = 1000,
                        .requested_by = "ops@msp.example",
                        .company_name = "Co",
                        .primary_domain = "co.example",
                        .additional_domains = domains,
                        .additional_domains_count = 1,
                        .mail_platform = MW_PLATFORM_MICROSOFT_365,
                        .service = MW_SERVICE_MESH_365,
                        .account_type = MW_ACCOUNT_NFR,
                        .licenses = 5,
                        .billable = false,
                        .has_billing_starts_at = false,
                        .has_trial_ends_at = false,
                        .default_admin_email = "a@co.example",
                        .delivery_destination = NULL,
                        .policy_template_id = NULL,
                        .apply_global_rules = true,
                        .msp_management = true,
                        .two_factor_required = false,
                        .monitor_mode = true,
                        .installation = MW_INSTALL_M365_API_CONSENT}},
         "{\"type\":\"CustomerCreated\",\"event_id\":\"e\","
         "\"customer_id\":\"c\",\"request_id\":\"r\",\"msp_id\":\"m\","
         "\"occurred_at\":\"1970-01-01T00:00:01.000Z\","
         "\"requested_by\":\"ops@msp.example\",\"company_name\":\"Co\","
         "\"primary_domain\":\"co.example\","
         "\"additional_domains\":[\"b.example\"],"
         "\"mail_platform\":\"MICROSOFT_365\",\"service\":\"MESH_365\","
         "\"account_type\":\"NFR\",\"licenses\":5,\"billable\":false,"
         "\"billing_starts_at\":null,\"trial_ends_at\":null,"
         "\"default_admin_email\":\"a@co.example\","
         "\"delivery_destination\":null,\"policy_template_id\":null,"
         "\"apply_global_rules\":true,\"msp_management\":true,"
         "\"two_factor_required\":false,\"monitor_mode\":true,"
         "\"installation\":\"M365_API_CONSENT\"}"},
        {{.type = MW_REC_CUSTOMER_REJECTED,
          .u.rejected = {.event_id = "e",
                         .request_id = "r",
                         .msp_id = "m",
                         .occurred_at = 0,
                         .requested_by = NULL,
                         .rejection = &rejection}},
         "{\"type\":\"CustomerRejected\",\"event_id\":\"e\","
         "\"request_id\":\"r\",\"msp_id\":\"m\","
         "\"occurred_at\":\"1970-01-01T00:00:00.000Z\","
         "\"requested_by\":null,\"errors\":["
         "{\"field\":\"licenses\",\"code\":\"NFR_LICENSE_LIMIT_EXCEEDED\","
         "\"message\":\"At most 50.\"},"
         "{\"field\":null,\"code\":\"REQUEST_ID_CONFLICT\","
         "\"message\":\"Conflict.\"}]}"},
        {{.type = MW_REC_TRIAL_ENDING,
          .u.trial_ending = {.event_id = "e",
                             .customer_id = "c",
                             .msp_id = "m",
                             .occurred_at = 0,
                             .trial_ends_at = 86400000,
                             .licenses = 3,
                             .requested_by = "ops@msp.example"}},
         "{\"type\":\"TrialEnding\",\"event_id\":\"e\",\"customer_id\":\"c\","
         "\"msp_id\":\"m\",\"occurred_at\":\"1970-01-01T00:00:00.000Z\","
         "\"trial_ends_at\":\"1970-01-02T00:00:00.000Z\",\"licenses\":3,"
         "\"requested_by\":\"ops@msp.example\"}"},
        {{.type = MW_REC_TRIAL_CONVERTED,
          .u.trial_converted = {.event_id = "e",
                                .customer_id = "c",
                                .msp_id = "m",
                                .occurred_at = 3,
                                .trial_started_at = 0,
                                .trial_ended_at = 1,
                                .licenses = 7,
                                .billing_starts_at = 2}},
         "{\"type\":\"TrialConverted\",\"event_id\":\"e\","
         "\"customer_id\":\"c\",\"msp_id\":\"m\","
         "\"occurred_at\":\"1970-01-01T00:00:00.003Z\","
         "\"trial_started_at\":\"1970-01-01T00:00:00.000Z\","
         "\"trial_ended_at\":\"1970-01-01T00:00:00.001Z\",\"licenses\":7,"
         "\"billing_starts_at\":\"1970-01-01T00:00:00.002Z\"}"},
        {{.type = MW_REC_CUSTOMER_TERMINATED,
          .u.terminated = {.event_id = "e",
                           .customer_id = "c",
                           .msp_id = "m",
                           .occurred_at = 0,
                           .terminated_at = 0,
                           .was_trial = true,
                           .request_id = "r"}},
         "{\"type\":\"CustomerTerminated\",\"event_id\":\"e\","
         "\"customer_id\":\"c\",\"msp_id\":\"m\","
         "\"occurred_at\":\"1970-01-01T00:00:00.000Z\","
         "\"terminated_at\":\"1970-01-01T00:00:00.000Z\","
         "\"was_trial\":true,\"request_id\":\"r\"}"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *out = convert_record_to_json(&cases[i].rec);

        assert_non_null(out);
        expect_json(out, cases[i].json);
        json_decref(out);
    }
}

static void unknown_record_types_give_null(void **state)
{
    struct mw_record rec = {.type = MW_REC_COUNT};

    (void)state;
    assert_null(convert_record_to_json(&rec));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(times_format_and_parse_back),
        cmocka_unit_test(extreme_times_format_without_overflow),
        cmocka_unit_test(time_parsing_is_strict),
        cmocka_unit_test(a_full_request_survives_a_round_trip),
        cmocka_unit_test(epoch_milliseconds_are_accepted_for_times),
        cmocka_unit_test(times_beyond_year_9999_print_as_milliseconds),
        cmocka_unit_test(missing_optional_fields_take_the_schema_defaults),
        cmocka_unit_test(explicit_nulls_are_null),
        cmocka_unit_test(terminations_are_chosen_by_type),
        cmocka_unit_test(bad_values_are_refused_naming_the_field),
        cmocka_unit_test(non_objects_are_refused),
        cmocka_unit_test(events_print_in_schema_order),
        cmocka_unit_test(unknown_record_types_give_null),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
