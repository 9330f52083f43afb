/*
 * Configuration from the environment.  Everything is read and checked here
 * once, before any connection is made, so that a typo stops start-up with
 * a message naming the variable instead of failing later.  After
 * config_load returns the struct is never written again.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern char **environ;

const struct config_var config_vars[] = {
    {"MESH_WORKER_KAFKA_BOOTSTRAP_SERVERS", "(embedded)",
     "Kafka brokers; unset starts librdkafka's mock cluster in-process"},
    {"MESH_WORKER_DATABASE_URL", "(embedded)",
     "PostgreSQL connection URL; unset runs a private cluster under the data "
     "directory (also _FILE)"},
    {"MESH_WORKER_SCHEMA_REGISTRY_URL", "(none)",
     "Confluent Schema Registry, one or several comma-separated URLs tried "
     "in turn; unset uses Avro single-object encoding"},
    {"MESH_WORKER_SCHEMA_REGISTRY_USER_INFO", "(none)",
     "basic auth for the registry as user:password (also _FILE)"},
    {"MESH_WORKER_SCHEMA_REGISTRY_BEARER_TOKEN", "(none)",
     "bearer token for the registry (also _FILE)"},
    {"MESH_WORKER_SCHEMA_REGISTRY_CA_FILE", "(system)",
     "CA certificates (PEM) that sign the registry's TLS certificate"},
    {"MESH_WORKER_SCHEMA_REGISTRY_CERT_FILE", "(none)",
     "client certificate (PEM) for TLS to the registry"},
    {"MESH_WORKER_SCHEMA_REGISTRY_KEY_FILE", "(none)",
     "private key (PEM) of the client certificate"},
    {"MESH_WORKER_SCHEMA_REGISTRY_TIMEOUT", "10s",
     "longest connect and request time of one registry request"},
    {"MESH_WORKER_SCHEMA_REGISTRY_AUTO_REGISTER", "true",
     "register the output schemas at start; false looks them up and "
     "refuses to start when they are not registered"},
    {"MESH_WORKER_SCHEMA_REGISTRY_CACHE_SIZE", "1000",
     "writer schemas kept in memory"},
    {"MESH_WORKER_DATA_DIR", "./mesh-worker-data",
     "where the embedded PostgreSQL keeps its cluster"},
    {"MESH_WORKER_TOPIC_REQUESTS", "customer.requests", "input topic"},
    {"MESH_WORKER_TOPIC_EVENTS", "customer.events", "output topic"},
    {"MESH_WORKER_TOPIC_DLQ", "customer.requests.dlq", "dead-letter topic"},
    {"MESH_WORKER_GROUP_ID", "mesh-worker", "Kafka consumer group"},
    {"MESH_WORKER_EVENTS_COMPRESSION", CONFIG_EVENTS_COMPRESSION,
     "codec of customer.events and the DLQ: none, gzip, snappy, lz4 or "
     "zstd"},
    {"MESH_WORKER_DELIVERY", "at-least-once",
     "at-least-once, or exactly-once: the relay publishes in Kafka "
     "transactions (needs a real broker; consumers read with "
     "isolation.level=read_committed)"},
    {"MESH_WORKER_RELAY_TRANSACTIONAL_ID", "<group id>.relay",
     "exactly-once: the relay's transactional.id, the same on every "
     "replica"},
    {"MESH_WORKER_HTTP_ADDR", "127.0.0.1:9464",
     "health and metrics listener; empty disables it"},
    {"MESH_WORKER_LOG_LEVEL", "info", "debug, info, warn or error"},
    {"MESH_WORKER_TRIAL_PERIOD", "14d", "length of a free trial"},
    {"MESH_WORKER_TRIAL_REMINDER", "3d",
     "TrialEnding this long before the trial ends; 0 disables it"},
    {"MESH_WORKER_SHUTDOWN_TIMEOUT", "10s",
     "longest graceful shutdown after SIGTERM or SIGINT"},
    {"MESH_WORKER_SCHEDULER_INTERVAL", "1s", "how often timers are polled"},
    {"MESH_WORKER_OUTBOX_RETENTION", "0",
     "how long published outbox rows are kept (0: deleted at once)"},
    {"MESH_WORKER_BATCH_SIZE", "500",
     "most requests handled in one database transaction"},
    {"MESH_WORKER_BATCH_WAIT", "1ms",
     "longest wait for a batch to fill once it has a message"},
    {"MESH_WORKER_RELAY_BATCH_SIZE", "2000",
     "most outbox rows published in one round"},
    {"MESH_WORKER_DATABASE_WAIT", "60s",
     "how long start-up waits for PostgreSQL to answer"},
    {"MESH_WORKER_EMBEDDED_PARTITIONS", "16",
     "partitions of each topic in the embedded Kafka"},
    {"MESH_WORKER_KAFKA_<PROPERTY>", "",
     "any librdkafka property, e.g. MESH_WORKER_KAFKA_SECURITY_PROTOCOL "
     "for security.protocol, given to the clients it applies to (also "
     "_FILE)"},
    {"MESH_WORKER_KAFKA_PRODUCER_<PROPERTY>", "",
     "a librdkafka property for the producers alone; wins over "
     "MESH_WORKER_KAFKA_<PROPERTY>"},
    {"MESH_WORKER_KAFKA_CONSUMER_<PROPERTY>", "",
     "a librdkafka property for the consumers alone; wins over "
     "MESH_WORKER_KAFKA_<PROPERTY>"},
    {NULL, NULL, NULL}};

static const char kafka_prefix[] = "MESH_WORKER_KAFKA_";
static const char producer_infix[] = "PRODUCER_";
static const char consumer_infix[] = "CONSUMER_";

/* Reads the first line of a file named by NAME_FILE into *out. */
static int read_secret_file(const char *var, const char *path, char **out,
                            struct mw_error *err)
{
    FILE *f = fopen(path, "r");
    char buf[4096];
    size_t n;

    if (f == NULL) {
        mw_error_set(err, MW_ERR_CONFIG, false, "could not read %s", var);
        mw_error_detail(err, "open(\"%s\"): %s", path, strerror(errno));
        return -1;
    }
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        buf[--n] = '\0';
    *out = strdup(buf);
    return *out ? 0 : -1;
}

/*
 * Looks up NAME, then NAME_FILE.  Sets *out to a malloc'ed value, or NULL
 * when neither is set (or the value is empty and !keep_empty).
 */
static int get_var(const char *name, int keep_empty, char **out,
                   struct mw_error *err)
{
    char file_var[256];
    const char *v = getenv(name);

    *out = NULL;
    if (v != NULL && (v[0] != '\0' || keep_empty)) {
        *out = strdup(v);
        return 0;
    }
    snprintf(file_var, sizeof(file_var), "%s_FILE", name);
    v = getenv(file_var);
    if (v != NULL && v[0] != '\0')
        return read_secret_file(file_var, v, out, err);
    return 0;
}

static int get_string(const char *name, const char *def, char **out,
                      struct mw_error *err)
{
    if (get_var(name, 0, out, err) < 0)
        return -1;
    if (*out == NULL && def != NULL)
        *out = strdup(def);
    return 0;
}

int config_parse_duration(const char *s, int64_t *ms)
{
    char *end;
    long long n;
    int64_t unit;

    if (s == NULL || !isdigit((unsigned char)s[0]))
        return -1;
    errno = 0;
    n = strtoll(s, &end, 10);
    if (errno != 0 || n < 0)
        return -1;
    if (strcmp(end, "ms") == 0)
        unit = 1;
    else if (strcmp(end, "s") == 0)
        unit = 1000;
    else if (strcmp(end, "m") == 0)
        unit = 60 * 1000;
    else if (strcmp(end, "h") == 0)
        unit = 3600 * 1000;
    else if (strcmp(end, "d") == 0)
        unit = 86400LL * 1000;
    else if (*end == '\0' && n == 0)
        unit = 1;
    else
        return -1;
    if (n > INT64_MAX / unit)
        return -1;
    *ms = (int64_t)n * unit;
    return 0;
}

static int get_duration(const char *name, const char *def, int64_t min_ms,
                        int64_t *ms, struct mw_error *err)
{
    const char *v = getenv(name);

    if (v == NULL || v[0] == '\0')
        v = def;
    if (config_parse_duration(v, ms) < 0) {
        mw_error_set(err, MW_ERR_CONFIG, false,
                     "invalid duration for %s: \"%s\"", name, v);
        mw_error_hint(err, "Use a whole number followed by ms, s, m, h or d, "
                           "for example 14d or 500ms.");
        return -1;
    }
    if (*ms < min_ms) {
        mw_error_set(err, MW_ERR_CONFIG, false, "%s is too short: \"%s\"", name,
                     v);
        mw_error_hint(err, "Use at least %lld ms.", (long long)min_ms);
        return -1;
    }
    return 0;
}

static int get_int(const char *name, int def, int min, int max, int *out,
                   struct mw_error *err)
{
    const char *v = getenv(name);
    char *end;
    long n = 0;
    bool ok;

    if (v == NULL || v[0] == '\0') {
        *out = def;
        return 0;
    }
    /* strtol alone would also take leading blanks and a '+'. */
    ok = isdigit((unsigned char)v[v[0] == '-']) != 0;
    if (ok) {
        errno = 0;
        n = strtol(v, &end, 10);
        ok = errno == 0 && *end == '\0' && n >= min && n <= max;
    }
    if (!ok) {
        mw_error_set(err, MW_ERR_CONFIG, false, "invalid value for %s: \"%s\"",
                     name, v);
        mw_error_hint(err, "Use a whole number from %d to %d.", min, max);
        return -1;
    }
    *out = (int)n;
    return 0;
}

/* Turns MESH_WORKER_KAFKA_SECURITY_PROTOCOL into security.protocol. */
static void kafka_property_name(const char *suffix, size_t len, char *out,
                                size_t out_len)
{
    size_t i;

    for (i = 0; i < len && i + 1 < out_len; i++)
        out[i] =
            suffix[i] == '_' ? '.' : (char)tolower((unsigned char)suffix[i]);
    out[i] = '\0';
}

static int is_secret_property(const char *name)
{
    return strstr(name, "password") || strstr(name, "secret") ||
           strstr(name, "token") || strstr(name, "key");
}

/*
 * Reads every MESH_WORKER_KAFKA_[PRODUCER_|CONSUMER_]<PROPERTY>[_FILE]
 * variable.  Whether librdkafka knows the property and whether the worker
 * lets it be set is checked in kafka.c, which knows librdkafka.
 */
static int load_kafka_props(struct mw_config *cfg, struct mw_error *err)
{
    for (char **e = environ; *e != NULL; e++) {
        const char *entry = *e, *eq = strchr(entry, '=');
        const char *suffix;
        char var[256], prop[256];
        size_t name_len, suffix_len;
        int from_file = 0;
        enum config_kafka_client client = CONFIG_KAFKA_EVERY;
        char *value = NULL;
        struct config_kafka_prop *p;

        if (eq == NULL || strncmp(entry, kafka_prefix, strlen(kafka_prefix)))
            continue;
        name_len = (size_t)(eq - entry);
        if (name_len >= sizeof(var))
            continue;
        memcpy(var, entry, name_len);
        var[name_len] = '\0';
        suffix = var + strlen(kafka_prefix);
        /* No librdkafka property starts with "producer." or "consumer.". */
        if (strncmp(suffix, producer_infix, strlen(producer_infix)) == 0) {
            client = CONFIG_KAFKA_PRODUCER;
            suffix += strlen(producer_infix);
        } else if (strncmp(suffix, consumer_infix, strlen(consumer_infix)) ==
                   0) {
            client = CONFIG_KAFKA_CONSUMER;
            suffix += strlen(consumer_infix);
        }
        suffix_len = strlen(suffix);
        if (suffix_len > 5 && strcmp(suffix + suffix_len - 5, "_FILE") == 0) {
            suffix_len -= 5;
            from_file = 1;
        }
        if (suffix_len == 0)
            continue;
        kafka_property_name(suffix, suffix_len, prop, sizeof(prop));
        if (client == CONFIG_KAFKA_EVERY &&
            strcmp(prop, "bootstrap.servers") == 0)
            continue; /* kafka_bootstrap_servers */
        if (cfg->kafka_props_count == CONFIG_MAX_KAFKA_PROPS) {
            mw_error_set(err, MW_ERR_CONFIG, false,
                         "too many MESH_WORKER_KAFKA_* variables");
            mw_error_detail(err, "At most %d are read; %s is one too many.",
                            CONFIG_MAX_KAFKA_PROPS, var);
            return -1;
        }
        if (from_file) {
            if (read_secret_file(var, eq + 1, &value, err) < 0)
                return -1;
        } else {
            value = strdup(eq + 1);
        }
        p = &cfg->kafka_props[cfg->kafka_props_count++];
        p->var = strdup(var);
        p->name = strdup(prop);
        p->value = value;
        p->is_secret = from_file || is_secret_property(prop);
        p->client = client;
        if (p->var == NULL || p->name == NULL || p->value == NULL) {
            mw_error_no_memory(err);
            return -1;
        }
    }
    return 0;
}

/* The codecs librdkafka and every Kafka broker know. */
static int check_compression(const char *codec, struct mw_error *err)
{
    static const char *const codecs[] = {"none", "gzip", "snappy",
                                         "lz4",  "zstd", NULL};

    for (size_t i = 0; codecs[i] != NULL; i++) {
        if (strcmp(codec, codecs[i]) == 0)
            return 0;
    }
    mw_error_set(err, MW_ERR_CONFIG, false,
                 "invalid value for MESH_WORKER_EVENTS_COMPRESSION: \"%s\"",
                 codec);
    mw_error_hint(err, "Use none, gzip, snappy, lz4 or zstd.");
    return -1;
}

static int get_bool(const char *name, int def, int *out, struct mw_error *err)
{
    const char *v = getenv(name);

    if (v == NULL || v[0] == '\0')
        *out = def;
    else if (strcmp(v, "true") == 0 || strcmp(v, "1") == 0 ||
             strcmp(v, "yes") == 0)
        *out = 1;
    else if (strcmp(v, "false") == 0 || strcmp(v, "0") == 0 ||
             strcmp(v, "no") == 0)
        *out = 0;
    else {
        mw_error_set(err, MW_ERR_CONFIG, false, "invalid value for %s: \"%s\"",
                     name, v);
        mw_error_hint(err, "Use true or false.");
        return -1;
    }
    return 0;
}

/* Reads and checks the MESH_WORKER_SCHEMA_REGISTRY_* settings. */
static int load_registry(struct mw_config *cfg, struct mw_error *err)
{
    char shown[512];

    if (get_string("MESH_WORKER_SCHEMA_REGISTRY_USER_INFO", NULL,
                   &cfg->schema_registry_user_info, err) < 0 ||
        get_string("MESH_WORKER_SCHEMA_REGISTRY_BEARER_TOKEN", NULL,
                   &cfg->schema_registry_bearer_token, err) < 0 ||
        get_string("MESH_WORKER_SCHEMA_REGISTRY_CA_FILE", NULL,
                   &cfg->schema_registry_ca_file, err) < 0 ||
        get_string("MESH_WORKER_SCHEMA_REGISTRY_CERT_FILE", NULL,
                   &cfg->schema_registry_cert_file, err) < 0 ||
        get_string("MESH_WORKER_SCHEMA_REGISTRY_KEY_FILE", NULL,
                   &cfg->schema_registry_key_file, err) < 0 ||
        get_duration("MESH_WORKER_SCHEMA_REGISTRY_TIMEOUT", "10s", 100,
                     &cfg->schema_registry_timeout_ms, err) < 0 ||
        get_bool("MESH_WORKER_SCHEMA_REGISTRY_AUTO_REGISTER", 1,
                 &cfg->schema_registry_auto_register, err) < 0 ||
        get_int("MESH_WORKER_SCHEMA_REGISTRY_CACHE_SIZE", 1000, 1, 1000000,
                &cfg->schema_registry_cache_size, err) < 0)
        return -1;
    if (cfg->schema_registry_url != NULL) {
        /* Every comma-separated URL is http:// or https://. */
        for (const char *p = cfg->schema_registry_url; *p != '\0';) {
            size_t len = strcspn(p, ",");
            const char *u = p + strspn(p, " \t");

            if (u < p + len && strncmp(u, "http://", 7) != 0 &&
                strncmp(u, "https://", 8) != 0) {
                /* Only the offending URL, as the others may hold secrets. */
                char *bad = strndup(u, (size_t)(p + len - u));

                config_redact_url(bad != NULL ? bad : "", shown, sizeof(shown));
                free(bad);
                mw_error_set(err, MW_ERR_CONFIG, false,
                             "invalid value for "
                             "MESH_WORKER_SCHEMA_REGISTRY_URL: \"%s\"",
                             shown);
                mw_error_hint(err, "Use http:// or https:// URLs, separated "
                                   "by commas.");
                return -1;
            }
            p += len;
            if (*p == ',')
                p++;
        }
    }
    if (cfg->schema_registry_user_info != NULL &&
        strchr(cfg->schema_registry_user_info, ':') == NULL) {
        mw_error_set(err, MW_ERR_CONFIG, false,
                     "invalid value for MESH_WORKER_SCHEMA_REGISTRY_USER_INFO");
        mw_error_hint(err, "Use user:password (the value is not shown).");
        return -1;
    }
    if (cfg->schema_registry_user_info != NULL &&
        cfg->schema_registry_bearer_token != NULL) {
        mw_error_set(err, MW_ERR_CONFIG, false,
                     "MESH_WORKER_SCHEMA_REGISTRY_USER_INFO and "
                     "MESH_WORKER_SCHEMA_REGISTRY_BEARER_TOKEN are both set");
        mw_error_hint(err, "Set one of them.");
        return -1;
    }
    return 0;
}

static int check_topic(const char *var, const char *topic, struct mw_error *err)
{
    size_t n = strlen(topic);

    if (n == 0 || n > 249 ||
        strspn(topic, "abcdefghijklmnopqrstuvwxyz"
                      "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                      "0123456789._-") != n) {
        mw_error_set(err, MW_ERR_CONFIG, false,
                     "invalid topic name for %s: \"%s\"", var, topic);
        mw_error_hint(err, "A topic name has 1 to 249 letters, digits, "
                           "dots, underscores or hyphens.");
        return -1;
    }
    return 0;
}

/*
 * MESH_WORKER_DELIVERY and the relay's transactional.id.  The embedded
 * mock cluster lets transactions succeed but shows aborted ones to
 * read_committed consumers, so exactly-once needs a real broker.
 */
static int load_delivery(struct mw_config *cfg, struct mw_error *err)
{
    char *delivery = NULL;
    int rc = -1;

    if (get_string("MESH_WORKER_DELIVERY", "at-least-once", &delivery, err) <
            0 ||
        get_string("MESH_WORKER_RELAY_TRANSACTIONAL_ID", NULL,
                   &cfg->relay_transactional_id, err) < 0)
        goto done;
    if (strcmp(delivery, "exactly-once") == 0) {
        cfg->is_exactly_once = true;
    } else if (strcmp(delivery, "at-least-once") != 0) {
        mw_error_set(err, MW_ERR_CONFIG, false,
                     "invalid value for MESH_WORKER_DELIVERY: \"%s\"",
                     delivery);
        mw_error_hint(err, "Use at-least-once or exactly-once.");
        goto done;
    }
    if (cfg->is_exactly_once && cfg->kafka_bootstrap_servers == NULL) {
        mw_error_set(err, MW_ERR_CONFIG, false,
                     "MESH_WORKER_DELIVERY=exactly-once needs "
                     "MESH_WORKER_KAFKA_BOOTSTRAP_SERVERS");
        mw_error_detail(err, "The embedded Kafka (librdkafka's mock cluster) "
                             "shows aborted transactions to read_committed "
                             "consumers.");
        mw_error_hint(err, "Point MESH_WORKER_KAFKA_BOOTSTRAP_SERVERS at a "
                           "real broker, or use at-least-once.");
        goto done;
    }
    if (cfg->relay_transactional_id == NULL) {
        size_t len = strlen(cfg->group_id) + sizeof(".relay");

        cfg->relay_transactional_id = malloc(len);
        if (cfg->relay_transactional_id == NULL) {
            mw_error_no_memory(err);
            goto done;
        }
        snprintf(cfg->relay_transactional_id, len, "%s.relay", cfg->group_id);
    }
    rc = 0;
done:
    free(delivery);
    return rc;
}

int config_load(struct mw_config *cfg, struct mw_error *err)
{
    char *level = NULL;
    int rc = -1;

    memset(cfg, 0, sizeof(*cfg));
    if (get_string("MESH_WORKER_KAFKA_BOOTSTRAP_SERVERS", NULL,
                   &cfg->kafka_bootstrap_servers, err) < 0 ||
        get_string("MESH_WORKER_DATABASE_URL", NULL, &cfg->database_url, err) <
            0 ||
        get_string("MESH_WORKER_SCHEMA_REGISTRY_URL", NULL,
                   &cfg->schema_registry_url, err) < 0 ||
        get_string("MESH_WORKER_DATA_DIR", "./mesh-worker-data", &cfg->data_dir,
                   err) < 0 ||
        get_string("MESH_WORKER_TOPIC_REQUESTS", "customer.requests",
                   &cfg->topic_requests, err) < 0 ||
        get_string("MESH_WORKER_TOPIC_EVENTS", "customer.events",
                   &cfg->topic_events, err) < 0 ||
        get_string("MESH_WORKER_TOPIC_DLQ", "customer.requests.dlq",
                   &cfg->topic_dlq, err) < 0 ||
        get_string("MESH_WORKER_GROUP_ID", "mesh-worker", &cfg->group_id, err) <
            0 ||
        get_string("MESH_WORKER_EVENTS_COMPRESSION", CONFIG_EVENTS_COMPRESSION,
                   &cfg->events_compression, err) < 0 ||
        get_string("MESH_WORKER_LOG_LEVEL", "info", &level, err) < 0)
        goto done;
    if (getenv("MESH_WORKER_HTTP_ADDR") != NULL)
        cfg->http_addr = strdup(getenv("MESH_WORKER_HTTP_ADDR"));
    else
        cfg->http_addr = strdup("127.0.0.1:9464");
    if (check_topic("MESH_WORKER_TOPIC_REQUESTS", cfg->topic_requests, err) ||
        check_topic("MESH_WORKER_TOPIC_EVENTS", cfg->topic_events, err) ||
        check_topic("MESH_WORKER_TOPIC_DLQ", cfg->topic_dlq, err) ||
        check_compression(cfg->events_compression, err) < 0)
        goto done;
    if (cfg->group_id[0] == '\0') {
        mw_error_set(err, MW_ERR_CONFIG, false,
                     "MESH_WORKER_GROUP_ID must not be empty");
        goto done;
    }
    if (load_delivery(cfg, err) < 0)
        goto done;
    if (log_parse_level(level, &cfg->log_level) < 0) {
        mw_error_set(err, MW_ERR_CONFIG, false,
                     "invalid value for MESH_WORKER_LOG_LEVEL: \"%s\"", level);
        mw_error_hint(err, "Use debug, info, warn or error.");
        goto done;
    }
    if (cfg->http_addr[0] != '\0' && strrchr(cfg->http_addr, ':') == NULL) {
        mw_error_set(err, MW_ERR_CONFIG, false,
                     "invalid value for MESH_WORKER_HTTP_ADDR: \"%s\"",
                     cfg->http_addr);
        mw_error_hint(err, "Use HOST:PORT, for example 127.0.0.1:9464, or an "
                           "empty value to disable the listener.");
        goto done;
    }
    if (get_duration("MESH_WORKER_TRIAL_PERIOD", "14d", 1000,
                     &cfg->trial_period_ms, err) < 0 ||
        get_duration("MESH_WORKER_TRIAL_REMINDER", "3d", 0,
                     &cfg->trial_reminder_ms, err) < 0 ||
        get_duration("MESH_WORKER_SHUTDOWN_TIMEOUT", "10s", 0,
                     &cfg->shutdown_timeout_ms, err) < 0 ||
        get_duration("MESH_WORKER_SCHEDULER_INTERVAL", "1s", 10,
                     &cfg->scheduler_interval_ms, err) < 0 ||
        get_duration("MESH_WORKER_OUTBOX_RETENTION", "0", 0,
                     &cfg->outbox_retention_ms, err) < 0 ||
        get_duration("MESH_WORKER_BATCH_WAIT", "1ms", 0, &cfg->batch_wait_ms,
                     err) < 0 ||
        get_duration("MESH_WORKER_DATABASE_WAIT", "60s", 0,
                     &cfg->database_wait_ms, err) < 0 ||
        get_int("MESH_WORKER_BATCH_SIZE", 500, 1, 10000, &cfg->batch_size,
                err) < 0 ||
        get_int("MESH_WORKER_RELAY_BATCH_SIZE", 2000, 1, 100000,
                &cfg->relay_batch_size, err) < 0 ||
        get_int("MESH_WORKER_EMBEDDED_PARTITIONS", 16, 1, 1024,
                &cfg->embedded_partitions, err) < 0)
        goto done;
    if (load_kafka_props(cfg, err) < 0 || load_registry(cfg, err) < 0)
        goto done;
    rc = 0;
done:
    free(level);
    return rc;
}

void config_free(struct mw_config *cfg)
{
    free(cfg->kafka_bootstrap_servers);
    free(cfg->database_url);
    free(cfg->schema_registry_url);
    free(cfg->data_dir);
    free(cfg->topic_requests);
    free(cfg->topic_events);
    free(cfg->topic_dlq);
    free(cfg->group_id);
    free(cfg->events_compression);
    free(cfg->relay_transactional_id);
    free(cfg->http_addr);
    for (size_t i = 0; i < cfg->kafka_props_count; i++) {
        free(cfg->kafka_props[i].var);
        free(cfg->kafka_props[i].name);
        free(cfg->kafka_props[i].value);
    }
    free(cfg->schema_registry_user_info);
    free(cfg->schema_registry_bearer_token);
    free(cfg->schema_registry_ca_file);
    free(cfg->schema_registry_cert_file);
    free(cfg->schema_registry_key_file);
    memset(cfg, 0, sizeof(*cfg));
}

/* Appends n bytes of s to out (of size len, filled to *pos), truncating. */
static void append(char *out, size_t len, size_t *pos, const char *s, size_t n)
{
    size_t room = len - 1 - *pos;

    if (n > room)
        n = room;
    memcpy(out + *pos, s, n);
    *pos += n;
    out[*pos] = '\0';
}

/*
 * Appends the n bytes of s to out with every value after "password="
 * hidden up to the next character of stops (or the end of the n bytes).
 */
static void append_hiding_passwords(char *out, size_t len, size_t *pos,
                                    const char *s, size_t n, const char *stops)
{
    static const char key[] = "password=";
    const char *end = s + n;
    const char *pw;

    while ((pw = memmem(s, (size_t)(end - s), key, strlen(key))) != NULL) {
        pw += strlen(key);
        append(out, len, pos, s, (size_t)(pw - s));
        append(out, len, pos, "****", 4);
        s = pw;
        while (s < end && strchr(stops, *s) == NULL)
            s++;
    }
    append(out, len, pos, s, (size_t)(end - s));
}

void config_redact_url(const char *conninfo, char *out, size_t len)
{
    const char *scheme = strstr(conninfo, "://");
    const char *rest = conninfo;
    size_t pos = 0;

    if (len == 0)
        return;
    out[0] = '\0';
    if (scheme == NULL) {
        /* key=value form */
        append_hiding_passwords(out, len, &pos, conninfo, strlen(conninfo),
                                " ");
        return;
    }
    /* scheme://user:password@host/db?password=... */
    {
        const char *host = scheme + 3;
        size_t authority = strcspn(host, "/?#");
        const char *at = memrchr(host, '@', authority);
        const char *colon =
            at != NULL ? memchr(host, ':', (size_t)(at - host)) : NULL;

        if (colon != NULL) {
            /* What precedes the scheme may be key=value text. */
            append_hiding_passwords(out, len, &pos, conninfo,
                                    (size_t)(colon + 1 - conninfo), " &");
            append(out, len, &pos, "****", 4);
            rest = at;
        }
    }
    append_hiding_passwords(out, len, &pos, rest, strlen(rest), "&");
}
