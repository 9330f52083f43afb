/*
 * Unit tests of the Schema Registry client's pure parts: Confluent error
 * bodies turned into messages and failure classes, which statuses are
 * retried, and the back-off.  The HTTP side is tested against
 * tests/registry/registry.py by tests/integration/test_registry.py.
 */
#include "error.h"
#include "registry.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <string.h>

static const struct {
    long status;
    const char *body;
    int code; /* returned */
    bool retriable;
    const char *msg;   /* in err.msg */
    const char *other; /* in detail or hint */
} answers[] = {
    {404, "{\"error_code\":40403,\"message\":\"Schema not found\"}", 40403,
     false, "has no such schema", "error code 40403: Schema not found"},
    {404, "{\"error_code\":40401,\"message\":\"Subject 'x' not found.\"}",
     40401, false, "subject is not registered", "AUTO_REGISTER=true"},
    {404, "{\"error_code\":40402,\"message\":\"Version not found.\"}", 40402,
     false, "no such version", "40402"},
    {409,
     "{\"error_code\":409,\"message\":\"Schema being registered is "
     "incompatible\"}",
     409, false, "incompatible with the versions already registered",
     "optional with a default"},
    {422, "{\"error_code\":42201,\"message\":\"Invalid schema\"}", 42201, false,
     "refused the schema as invalid", "42201"},
    {422, "{\"error_code\":42203,\"message\":\"Invalid compatibility\"}", 42203,
     false, "refused the request as invalid", "42203"},
    {401, "{\"error_code\":401,\"message\":\"Unauthorized\"}", 401, false,
     "refused the credentials", "MESH_WORKER_SCHEMA_REGISTRY_USER_INFO"},
    {403, "{\"error_code\":40301,\"message\":\"User is denied\"}", 40301, false,
     "does not allow it", "AUTO_REGISTER=false"},
    {500, "{\"error_code\":50001,\"message\":\"Error in the backend\"}", 50001,
     true, "unavailable", "50001"},
    {503, "<html>Service Unavailable</html>", 503, true, "unavailable",
     "no Confluent error body"},
    {429, NULL, 429, true, "unavailable", "HTTP 429"},
    {404, "<html>Not Found</html>", 404, false,
     "does not lead to a Schema Registry API", "base URL"},
    {400, "{\"error_code\":\"x\"}", 400, false, "refused the request",
     "HTTP 400"},
};

static void confluent_error_bodies_become_operator_messages(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(answers) / sizeof(answers[0]); i++) {
        struct mw_error err;
        int code;

        mw_error_clear(&err);
        code = registry_error_from_response(answers[i].status, answers[i].body,
                                            "fetch schema id 7", &err);
        if (code != answers[i].code || err.retriable != answers[i].retriable ||
            strstr(err.msg, answers[i].msg) == NULL ||
            strstr(err.msg, "fetch schema id 7") == NULL ||
            (strstr(err.detail, answers[i].other) == NULL &&
             strstr(err.hint, answers[i].other) == NULL))
            fail_msg("answer %zu (HTTP %ld): expected code %d, retriable %d, "
                     "\"%s\" and \"%s\"; seen code %d, retriable %d, msg "
                     "\"%s\", detail \"%s\", hint \"%s\"",
                     i, answers[i].status, answers[i].code,
                     answers[i].retriable, answers[i].msg, answers[i].other,
                     code, err.retriable, err.msg, err.detail, err.hint);
        assert_int_equal(err.code, MW_ERR_REGISTRY);
    }
}

static void only_server_errors_and_throttling_are_retried(void **state)
{
    static const struct {
        long status;
        bool retriable;
    } statuses[] = {{200, false}, {400, false}, {401, false}, {403, false},
                    {404, false}, {408, true},  {409, false}, {422, false},
                    {429, true},  {500, true},  {502, true},  {503, true},
                    {504, true}};

    (void)state;
    for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++) {
        if (registry_status_is_retriable(statuses[i].status) !=
            statuses[i].retriable)
            fail_msg("HTTP %ld: expected retriable %d", statuses[i].status,
                     statuses[i].retriable);
    }
}

static void backoff_doubles_from_100_ms_to_2_s(void **state)
{
    static const int64_t expected[] = {100, 200, 400, 800, 1600, 2000, 2000};

    (void)state;
    for (int i = 0; i < 7; i++) {
        if (registry_backoff_ms(i) != expected[i])
            fail_msg("attempt %d: expected %lld ms, seen %lld", i,
                     (long long)expected[i], (long long)registry_backoff_ms(i));
    }
    assert_int_equal(registry_backoff_ms(1000), 2000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(confluent_error_bodies_become_operator_messages),
        cmocka_unit_test(only_server_errors_and_throttling_are_retried),
        cmocka_unit_test(backoff_doubles_from_100_ms_to_2_s),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
