/*
 * Unit tests of Kafka property routing on real librdkafka configuration
 * objects: each MESH_WORKER_KAFKA_* variable reaches the kinds of client
 * its property applies to, a _PRODUCER_ or _CONSUMER_ variable wins for
 * its kind, the operator wins over the worker's other settings, and a
 * property the guarantees depend on is refused naming its variable.
 */
#include "config.h"
#include "error.h"
#include "kafka.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern char **environ;

/* Removes every MESH_WORKER_* variable, so that tests start alike. */
static int clean_environment(void **state)
{
    (void)state;
    for (;;) {
        char name[256];
        size_t i;

        for (i = 0; environ[i] != NULL; i++) {
            if (strncmp(environ[i], "MESH_WORKER_", 12) == 0)
                break;
        }
        if (environ[i] == NULL)
            return 0;
        snprintf(name, sizeof(name), "%.*s", (int)strcspn(environ[i], "="),
                 environ[i]);
        unsetenv(name);
    }
}

/* The value of name in conf, in a static buffer. */
static const char *get(const rd_kafka_conf_t *conf, const char *name)
{
    static char value[512];
    size_t len = sizeof(value);

    if (rd_kafka_conf_get(conf, name, value, &len) != RD_KAFKA_CONF_OK)
        fail_msg("librdkafka does not know %s", name);
    return value;
}

/* Builds a client configuration of kind client; fails the test on error. */
static rd_kafka_conf_t *conf_for(const struct mw_config *cfg,
                                 enum config_kafka_client client,
                                 const char *const *defaults)
{
    struct mw_error err;
    rd_kafka_conf_t *conf;

    mw_error_clear(&err);
    conf = kafka_conf_new(cfg, "127.0.0.1:9092", client, defaults, &err);
    if (conf == NULL)
        fail_msg("kafka_conf_new: %s (%s)", err.msg, err.detail);
    return conf;
}

static void load(struct mw_config *cfg)
{
    struct mw_error err;

    mw_error_clear(&err);
    if (config_load(cfg, &err) < 0)
        fail_msg("config_load: %s", err.msg);
}

static void each_property_reaches_only_the_clients_it_applies_to(void **state)
{
    struct mw_config cfg;
    rd_kafka_conf_t *producer, *consumer, *fresh = rd_kafka_conf_new();
    char linger[512], session[512];

    (void)state;
    snprintf(linger, sizeof(linger), "%s", get(fresh, "linger.ms"));
    snprintf(session, sizeof(session), "%s", get(fresh, "session.timeout.ms"));
    setenv("MESH_WORKER_KAFKA_LINGER_MS", "7", 1);
    setenv("MESH_WORKER_KAFKA_SESSION_TIMEOUT_MS", "7000", 1);
    load(&cfg);
    producer = conf_for(&cfg, CONFIG_KAFKA_PRODUCER, NULL);
    consumer = conf_for(&cfg, CONFIG_KAFKA_CONSUMER, NULL);
    assert_string_equal(get(producer, "linger.ms"), "7");
    assert_string_equal(get(producer, "session.timeout.ms"), session);
    assert_string_equal(get(consumer, "session.timeout.ms"), "7000");
    assert_string_equal(get(consumer, "linger.ms"), linger);
    rd_kafka_conf_destroy(producer);
    rd_kafka_conf_destroy(consumer);
    rd_kafka_conf_destroy(fresh);
    config_free(&cfg);
}

static void
a_value_for_one_kind_wins_over_the_value_for_every_kind(void **state)
{
    struct mw_config cfg;
    rd_kafka_conf_t *producer, *consumer;

    (void)state;
    /* Set in this order so that the environment's order cannot help. */
    setenv("MESH_WORKER_KAFKA_CONSUMER_SOCKET_TIMEOUT_MS", "40000", 1);
    setenv("MESH_WORKER_KAFKA_SOCKET_TIMEOUT_MS", "30000", 1);
    setenv("MESH_WORKER_KAFKA_PRODUCER_LOG_LEVEL", "3", 1);
    load(&cfg);
    producer = conf_for(&cfg, CONFIG_KAFKA_PRODUCER, NULL);
    consumer = conf_for(&cfg, CONFIG_KAFKA_CONSUMER, NULL);
    assert_string_equal(get(producer, "socket.timeout.ms"), "30000");
    assert_string_equal(get(consumer, "socket.timeout.ms"), "40000");
    assert_string_equal(get(producer, "log_level"), "3");
    assert_string_equal(get(consumer, "log_level"), "6");
    rd_kafka_conf_destroy(producer);
    rd_kafka_conf_destroy(consumer);
    config_free(&cfg);
}

static void the_operator_wins_over_the_workers_other_settings(void **state)
{
    static const char *const defaults[] = {"linger.ms", "0", "acks", "all",
                                           NULL};
    struct mw_config cfg;
    rd_kafka_conf_t *producer;

    (void)state;
    setenv("MESH_WORKER_KAFKA_PRODUCER_LINGER_MS", "2", 1);
    setenv("MESH_WORKER_KAFKA_ACKS", "-1", 1); /* the worker's own value */
    load(&cfg);
    producer = conf_for(&cfg, CONFIG_KAFKA_PRODUCER, defaults);
    assert_string_equal(get(producer, "linger.ms"), "2");
    assert_string_equal(get(producer, "acks"), "-1");
    rd_kafka_conf_destroy(producer);
    config_free(&cfg);
}

static void guarded_properties_are_refused_naming_the_variable(void **state)
{
    static const char *const cases[][2] = {
        {"MESH_WORKER_KAFKA_ENABLE_AUTO_COMMIT", "true"},
        {"MESH_WORKER_KAFKA_CONSUMER_ENABLE_AUTO_OFFSET_STORE", "true"},
        {"MESH_WORKER_KAFKA_ISOLATION_LEVEL", "read_uncommitted"},
        {"MESH_WORKER_KAFKA_ACKS", "1"},
        {"MESH_WORKER_KAFKA_PRODUCER_DELIVERY_TIMEOUT_MS", "1000"},
        {"MESH_WORKER_KAFKA_COMPRESSION_TYPE", "gzip"},
        {"MESH_WORKER_KAFKA_PRODUCER_SESSION_TIMEOUT_MS", "7000"},
        {"MESH_WORKER_KAFKA_NO_SUCH_THING", "1"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct mw_config cfg;
        struct mw_error err;
        rd_kafka_conf_t *conf;

        clean_environment(NULL);
        setenv(cases[i][0], cases[i][1], 1);
        load(&cfg);
        mw_error_clear(&err);
        conf = kafka_conf_new(&cfg, "127.0.0.1:9092", CONFIG_KAFKA_PRODUCER,
                              NULL, &err);
        if (conf != NULL || err.code != MW_ERR_CONFIG ||
            strstr(err.msg, cases[i][0]) == NULL)
            fail_msg("%s=%s: expected a configuration error naming it, "
                     "seen \"%s\"",
                     cases[i][0], cases[i][1], err.msg);
        config_free(&cfg);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(
            each_property_reaches_only_the_clients_it_applies_to,
            clean_environment),
        cmocka_unit_test_setup(
            a_value_for_one_kind_wins_over_the_value_for_every_kind,
            clean_environment),
        cmocka_unit_test_setup(
            the_operator_wins_over_the_workers_other_settings,
            clean_environment),
        cmocka_unit_test_setup(
            guarded_properties_are_refused_naming_the_variable,
            clean_environment),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
