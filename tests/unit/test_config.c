/*
 * Unit tests of the configuration: durations, booleans, integers and URLs
 * read from the environment into their fields, the error message of each
 * refusal naming its variable (for every documented variable), and the
 * redaction of passwords in connection strings, hostile values included.
 */
#include "config.h"
#include "error.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern char **environ;

/* Removes every MESH_WORKER_* variable, so each case starts from defaults. */
static void clear_mesh_worker_env(void)
{
    for (;;) {
        char name[256];
        size_t n;
        char **e = environ;

        while (*e != NULL && strncmp(*e, "MESH_WORKER_", 12) != 0)
            e++;
        if (*e == NULL)
            return;
        n = strcspn(*e, "=");
        assert_true(n < sizeof(name));
        memcpy(name, *e, n);
        name[n] = '\0';
        unsetenv(name);
    }
}

static void durations_parse_or_fail(void **state)
{
    static const struct {
        const char *text;
        int ok;
        int64_t ms;
    } cases[] = {
        {"0", 1, 0},       {"1ms", 1, 1},      {"10s", 1, 10000},
        {"5m", 1, 300000}, {"2h", 1, 7200000}, {"14d", 1, 1209600000},
        {"", 0, 0},        {"14", 0, 0},       {"14x", 0, 0},
        {"-1s", 0, 0},     {"s", 0, 0},        {"1.5s", 0, 0},
        {" 1s", 0, 0},     {"1s ", 0, 0},      {"99999999999999999999d", 0, 0},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t ms = -7;
        int rc = config_parse_duration(cases[i].text, &ms);

        if ((rc == 0) != cases[i].ok)
            fail_msg("duration \"%s\": expected %s, got rc %d", cases[i].text,
                     cases[i].ok ? "ok" : "error", rc);
        if (cases[i].ok && ms != cases[i].ms)
            fail_msg("duration \"%s\": expected %lld ms, got %lld",
                     cases[i].text, (long long)cases[i].ms, (long long)ms);
    }
}

static void bad_values_are_refused_naming_their_variable(void **state)
{
    static char long_scheme[1200];
    static const struct {
        const char *variable;
        const char *value;
    } cases[] = {
        {"MESH_WORKER_TRIAL_PERIOD", "14x"},
        {"MESH_WORKER_TRIAL_REMINDER", "soon"},
        {"MESH_WORKER_SHUTDOWN_TIMEOUT", "-1s"},
        {"MESH_WORKER_BATCH_WAIT", "1.5s"},
        {"MESH_WORKER_SCHEMA_REGISTRY_AUTO_REGISTER", "maybe"},
        {"MESH_WORKER_LOG_LEVEL", "chatty"},
        {"MESH_WORKER_BATCH_SIZE", "0"},
        {"MESH_WORKER_BATCH_SIZE", "12abc"},
        {"MESH_WORKER_BATCH_SIZE", " 12"},
        {"MESH_WORKER_BATCH_SIZE", "+12"},
        {"MESH_WORKER_BATCH_SIZE", "12 "},
        {"MESH_WORKER_BATCH_SIZE", "-"},
        {"MESH_WORKER_SCHEMA_REGISTRY_URL", "ftp://registry"},
        {"MESH_WORKER_SCHEMA_REGISTRY_URL", "password=x://"},
        {"MESH_WORKER_SCHEMA_REGISTRY_URL", long_scheme},
        {"MESH_WORKER_SCHEMA_REGISTRY_URL", "http://a:s3cret@b,password=x://"},
        {"MESH_WORKER_HTTP_ADDR", "9464"},
        {"MESH_WORKER_DELIVERY", "twice"},
        {"MESH_WORKER_SCHEMA_REGISTRY_AUTO_REGISTER", "TRUE"},
        {"MESH_WORKER_SCHEMA_REGISTRY_AUTO_REGISTER", "on"},
        {"MESH_WORKER_SCHEMA_REGISTRY_CACHE_SIZE", "0"},
        {"MESH_WORKER_SCHEMA_REGISTRY_CACHE_SIZE", "1000001"},
        {"MESH_WORKER_EMBEDDED_PARTITIONS", "-1"},
        {"MESH_WORKER_RELAY_BATCH_SIZE", "99999999999999999999"},
        {"MESH_WORKER_BATCH_SIZE", "10001"},
        {"MESH_WORKER_TRIAL_PERIOD", "500ms"},
        {"MESH_WORKER_SCHEDULER_INTERVAL", "1ms"},
        {"MESH_WORKER_DATABASE_WAIT", "5 s"},
        {"MESH_WORKER_SCHEMA_REGISTRY_URL", "http//registry"},
        {"MESH_WORKER_SCHEMA_REGISTRY_URL", "https://ok:8081,ftp://bad"},
        {"MESH_WORKER_SCHEMA_REGISTRY_URL", "registry:8081"},
        /* Without a bootstrap the embedded mock cluster cannot do it. */
        {"MESH_WORKER_DELIVERY", "exactly-once"},
    };

    (void)state;
    memset(long_scheme, 'a', 1100);
    memcpy(long_scheme + 1100, "://", 4);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct mw_config cfg;
        struct mw_error err;

        clear_mesh_worker_env();
        setenv(cases[i].variable, cases[i].value, 1);
        memset(&cfg, 0, sizeof(cfg));
        mw_error_clear(&err);
        if (config_load(&cfg, &err) == 0)
            fail_msg("%s=\"%.40s\" was accepted", cases[i].variable,
                     cases[i].value);
        if (strstr(err.msg, cases[i].variable) == NULL)
            fail_msg("%s=\"%.40s\": the message does not name it: %s",
                     cases[i].variable, cases[i].value, err.msg);
        if (strstr(err.msg, "s3cret") != NULL ||
            strstr(err.detail, "s3cret") != NULL)
            fail_msg("%s: the message shows a password: %s", cases[i].variable,
                     err.msg);
        assert_int_equal(err.code, MW_ERR_CONFIG);
        config_free(&cfg);
    }
    clear_mesh_worker_env();
}

static void good_values_are_read(void **state)
{
    struct mw_config cfg;
    struct mw_error err;

    (void)state;
    clear_mesh_worker_env();
    setenv("MESH_WORKER_TRIAL_PERIOD", "30s", 1);
    setenv("MESH_WORKER_SCHEMA_REGISTRY_AUTO_REGISTER", "false", 1);
    setenv("MESH_WORKER_SCHEMA_REGISTRY_URL",
           "http://a:8081, https://user:pw@b:8081/x", 1);
    memset(&cfg, 0, sizeof(cfg));
    mw_error_clear(&err);
    if (config_load(&cfg, &err) != 0)
        fail_msg("refused: %s (%s)", err.msg, err.detail);
    assert_int_equal(cfg.trial_period_ms, 30000);
    assert_int_equal(cfg.schema_registry_auto_register, 0);
    assert_int_equal(cfg.trial_reminder_ms, 3 * 86400000LL);
    assert_false(cfg.is_exactly_once);
    assert_string_equal(cfg.relay_transactional_id, "mesh-worker.relay");
    config_free(&cfg);
    clear_mesh_worker_env();
}

/* What a good value reads into: the field at offset, of kind. */
enum field_kind { DURATION, INTEGER, BOOLEAN, STRING };

static void good_values_are_read_into_their_field(void **state)
{
    static const struct {
        const char *variable;
        const char *value;
        enum field_kind kind;
        size_t offset;
        int64_t number;     /* DURATION in ms, INTEGER, BOOLEAN */
        const char *string; /* STRING */
    } cases[] = {
#define AT(field) offsetof(struct mw_config, field)
        {"MESH_WORKER_TRIAL_PERIOD", "30s", DURATION, AT(trial_period_ms),
         30000, NULL},
        {"MESH_WORKER_TRIAL_PERIOD", "2h", DURATION, AT(trial_period_ms),
         7200000, NULL},
        {"MESH_WORKER_TRIAL_PERIOD", "", DURATION, AT(trial_period_ms),
         14 * 86400000LL, NULL},
        {"MESH_WORKER_TRIAL_REMINDER", "0", DURATION, AT(trial_reminder_ms), 0,
         NULL},
        {"MESH_WORKER_SHUTDOWN_TIMEOUT", "1m", DURATION,
         AT(shutdown_timeout_ms), 60000, NULL},
        {"MESH_WORKER_SCHEDULER_INTERVAL", "250ms", DURATION,
         AT(scheduler_interval_ms), 250, NULL},
        {"MESH_WORKER_OUTBOX_RETENTION", "7d", DURATION,
         AT(outbox_retention_ms), 7 * 86400000LL, NULL},
        {"MESH_WORKER_BATCH_WAIT", "0", DURATION, AT(batch_wait_ms), 0, NULL},
        {"MESH_WORKER_DATABASE_WAIT", "5s", DURATION, AT(database_wait_ms),
         5000, NULL},
        {"MESH_WORKER_SCHEMA_REGISTRY_TIMEOUT", "100ms", DURATION,
         AT(schema_registry_timeout_ms), 100, NULL},
        {"MESH_WORKER_SCHEMA_REGISTRY_AUTO_REGISTER", "true", BOOLEAN,
         AT(schema_registry_auto_register), 1, NULL},
        {"MESH_WORKER_SCHEMA_REGISTRY_AUTO_REGISTER", "yes", BOOLEAN,
         AT(schema_registry_auto_register), 1, NULL},
        {"MESH_WORKER_SCHEMA_REGISTRY_AUTO_REGISTER", "1", BOOLEAN,
         AT(schema_registry_auto_register), 1, NULL},
        {"MESH_WORKER_SCHEMA_REGISTRY_AUTO_REGISTER", "false", BOOLEAN,
         AT(schema_registry_auto_register), 0, NULL},
        {"MESH_WORKER_SCHEMA_REGISTRY_AUTO_REGISTER", "no", BOOLEAN,
         AT(schema_registry_auto_register), 0, NULL},
        {"MESH_WORKER_SCHEMA_REGISTRY_AUTO_REGISTER", "0", BOOLEAN,
         AT(schema_registry_auto_register), 0, NULL},
        {"MESH_WORKER_SCHEMA_REGISTRY_AUTO_REGISTER", "", BOOLEAN,
         AT(schema_registry_auto_register), 1, NULL},
        {"MESH_WORKER_BATCH_SIZE", "1", INTEGER, AT(batch_size), 1, NULL},
        {"MESH_WORKER_BATCH_SIZE", "10000", INTEGER, AT(batch_size), 10000,
         NULL},
        {"MESH_WORKER_RELAY_BATCH_SIZE", "100000", INTEGER,
         AT(relay_batch_size), 100000, NULL},
        {"MESH_WORKER_EMBEDDED_PARTITIONS", "3", INTEGER,
         AT(embedded_partitions), 3, NULL},
        {"MESH_WORKER_SCHEMA_REGISTRY_CACHE_SIZE", "1000000", INTEGER,
         AT(schema_registry_cache_size), 1000000, NULL},
        {"MESH_WORKER_SCHEMA_REGISTRY_URL", "https://registry:8081", STRING,
         AT(schema_registry_url), 0, "https://registry:8081"},
        {"MESH_WORKER_SCHEMA_REGISTRY_URL", "http://a:8081, https://b", STRING,
         AT(schema_registry_url), 0, "http://a:8081, https://b"},
        {"MESH_WORKER_DATABASE_URL", "postgresql://u@db:5432/mesh", STRING,
         AT(database_url), 0, "postgresql://u@db:5432/mesh"},
        {"MESH_WORKER_DATABASE_URL", "host=db dbname=mesh", STRING,
         AT(database_url), 0, "host=db dbname=mesh"},
        {"MESH_WORKER_TOPIC_EVENTS", "customer.events.v2", STRING,
         AT(topic_events), 0, "customer.events.v2"},
        {"MESH_WORKER_HTTP_ADDR", "", STRING, AT(http_addr), 0, ""},
#undef AT
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct mw_config cfg;
        struct mw_error err;
        const char *field;
        int64_t seen = 0;

        clear_mesh_worker_env();
        setenv(cases[i].variable, cases[i].value, 1);
        memset(&cfg, 0, sizeof(cfg));
        mw_error_clear(&err);
        if (config_load(&cfg, &err) != 0)
            fail_msg("%s=\"%s\" was refused: %s", cases[i].variable,
                     cases[i].value, err.msg);
        field = (const char *)&cfg + cases[i].offset;
        switch (cases[i].kind) {
        case DURATION:
            memcpy(&seen, field, sizeof(int64_t));
            break;
        case INTEGER:
        case BOOLEAN: {
            int n;

            memcpy(&n, field, sizeof(n));
            seen = n;
            break;
        }
        case STRING: {
            const char *text;

            memcpy(&text, field, sizeof(text));
            if (text == NULL || strcmp(text, cases[i].string) != 0)
                fail_msg("%s=\"%s\": expected \"%s\", got \"%s\"",
                         cases[i].variable, cases[i].value, cases[i].string,
                         text != NULL ? text : "(null)");
            break;
        }
        }
        if (cases[i].kind != STRING && seen != cases[i].number)
            fail_msg("%s=\"%s\": expected %lld, got %lld", cases[i].variable,
                     cases[i].value, (long long)cases[i].number,
                     (long long)seen);
        config_free(&cfg);
    }
    clear_mesh_worker_env();
}

/*
 * Every documented variable, set to values that are wrong for most of
 * them: whatever is refused is refused as a configuration error whose
 * message names the variable, and never crashes.
 */
static void every_refusal_names_its_variable(void **state)
{
    static const char *const values[] = {
        "x",    "-1",      "0",       "1.5", "99999999999999999999",
        "TRUE", "ftp://x", "http//x", "a b", "1s1",
        ",",
    };
    int refused = 0;

    (void)state;
    for (const struct config_var *v = config_vars; v->name != NULL; v++) {
        if (strchr(v->name, '<') != NULL)
            continue; /* a family (MESH_WORKER_KAFKA_<PROPERTY>) */
        for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
            struct mw_config cfg;
            struct mw_error err;

            clear_mesh_worker_env();
            setenv(v->name, values[i], 1);
            memset(&cfg, 0, sizeof(cfg));
            mw_error_clear(&err);
            if (config_load(&cfg, &err) != 0) {
                refused++;
                if (strstr(err.msg, v->name) == NULL)
                    fail_msg("%s=\"%s\": the message does not name it: %s",
                             v->name, values[i], err.msg);
                if (err.code != MW_ERR_CONFIG)
                    fail_msg("%s=\"%s\": code %d, not a configuration "
                             "error",
                             v->name, values[i], (int)err.code);
            }
            config_free(&cfg);
        }
    }
    /* The table above is wrong for most variables: it must find some. */
    if (refused < 40)
        fail_msg("only %d values were refused", refused);
    clear_mesh_worker_env();
}

static void passwords_are_redacted_from_any_value(void **state)
{
    static char long_scheme[1200];
    static char long_url[1200];
    static const struct {
        const char *in;
        const char *out; /* NULL: only checked for the secret and a crash */
    } cases[] = {
        {"postgresql://u:s3cret@h:5432/db", "postgresql://u:****@h:5432/db"},
        {"postgresql://u@h/db", "postgresql://u@h/db"},
        {"postgresql://h/db?user=u&password=s3cret&sslmode=verify-full",
         "postgresql://h/db?user=u&password=****&sslmode=verify-full"},
        {"postgresql://u:s3cret@h/db?password=s3cret",
         "postgresql://u:****@h/db?password=****"},
        {"host=h password=s3cret dbname=d", "host=h password=**** dbname=d"},
        {"host=h password=s3cret password=s3cret",
         "host=h password=**** password=****"},
        {"password=s3cret://", "password=****"},
        /* key=value text before a URL with user info in a later value */
        {"password=s3cret host=db application_name=https://u:p@x",
         "password=**** host=db application_name=https://u:****@x"},
        {"http://h:8081/p@th:x", "http://h:8081/p@th:x"},
        {"://", "://"},
        {"", ""},
        {long_scheme, NULL},
        {long_url, NULL},
    };

    (void)state;
    memset(long_scheme, 'a', 1100);
    memcpy(long_scheme + 1100, "://", 4);
    memcpy(long_url, "http://u:s3cret@", 16);
    memset(long_url + 16, 'h', 1100);
    long_url[1116] = '\0';
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[512];
        char tiny[8];

        config_redact_url(cases[i].in, out, sizeof(out));
        if (strstr(out, "s3cret") != NULL)
            fail_msg("\"%.60s\": the password is shown: %.80s", cases[i].in,
                     out);
        if (cases[i].out != NULL && strcmp(out, cases[i].out) != 0)
            fail_msg("\"%s\": expected \"%s\", got \"%s\"", cases[i].in,
                     cases[i].out, out);
        config_redact_url(cases[i].in, tiny, sizeof(tiny));
        assert_true(strlen(tiny) < sizeof(tiny));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(durations_parse_or_fail),
        cmocka_unit_test(bad_values_are_refused_naming_their_variable),
        cmocka_unit_test(good_values_are_read),
        cmocka_unit_test(good_values_are_read_into_their_field),
        cmocka_unit_test(every_refusal_names_its_variable),
        cmocka_unit_test(passwords_are_redacted_from_any_value),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
