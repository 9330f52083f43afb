/*
 * The subcommands: run (the worker), migrate, produce and tail (for demos
 * and operators).  Each reads the configuration once, says plainly what
 * is wrong when it cannot start, and returns an exit status from enum
 * cli_exit; none of them calls exit().
 */
#include "cli.h"

#include "codec.h"
#include "config.h"
#include "consumer.h"
#include "convert.h"
#include "embedded.h"
#include "kafka.h"
#include "log.h"
#include "http.h"
#include "process.h"
#include "registry.h"
#include "relay.h"
#include "scheduler.h"
#include "store.h"

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uuid/uuid.h>

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static void install_signals(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

static int64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void cli_usage(void)
{
    printf("Usage: mesh-worker COMMAND [OPTIONS]\n"
           "\n"
           "Provisions MSP customers from CustomerRequested events, exactly "
           "once.\n"
           "\n"
           "Commands:\n"
           "  run       consume customer.requests and publish "
           "customer.events\n"
           "  migrate   apply the database migrations and exit\n"
           "  produce   publish requests read as JSON (for demos and "
           "operators)\n"
           "  tail      print customer.events (or the DLQ) as JSON lines\n"
           "  dlq       list or replay the dead-letter topic\n"
           "  customers show ID|DOMAIN  print a customer's state and "
           "timers as JSON\n"
           "\n"
           "Run \"mesh-worker COMMAND --help\" for a command's options.\n"
           "Configuration comes from MESH_WORKER_* environment variables:\n");
    for (const struct config_var *v = config_vars; v->name; v++)
        printf("  %-36s %s%s%s\n", v->name, v->meaning,
               v->default_value[0] ? "; default " : "", v->default_value);
    printf("\nExit status: 0 success, 1 runtime failure, 2 bad usage or "
           "configuration,\n3 bad input (produce).\n");
}

/* Loads the configuration or prints why not; 0 or CLI_EXIT_USAGE. */
static int load_config(struct mw_config *cfg)
{
    struct mw_error err;

    mw_error_clear(&err);
    if (config_load(cfg, &err) < 0) {
        mw_error_print(&err, "mesh-worker: configuration error");
        config_free(cfg);
        return CLI_EXIT_USAGE;
    }
    log_set_level(cfg->log_level);
    return 0;
}

static int wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return 1;
    }
    return 0;
}

/*
 * With MESH_WORKER_SCHEMA_REGISTRY_URL set, attaches a Schema Registry to
 * codec; the union of requests_topic and of events_topic, when given, is
 * registered (or looked up) so that codec_encode can frame records of it.
 * Returns the registry, which the caller destroys after the codec, NULL
 * when none is configured, or NULL with err->code set on failure.
 */
static struct registry *use_registry(const struct mw_config *cfg,
                                     struct codec *codec,
                                     const char *requests_topic,
                                     const char *events_topic,
                                     struct mw_error *err)
{
    struct codec_registry cr = {
        .fetch = registry_fetch_schema,
        .requests_id = -1,
        .events_id = -1,
        .cache_size = (size_t)cfg->schema_registry_cache_size};
    struct registry *registry;

    if (cfg->schema_registry_url == NULL)
        return NULL;
    registry = registry_new(cfg, err);
    if (registry == NULL)
        return NULL;
    cr.ctx = registry;
    if ((requests_topic != NULL &&
         registry_subject_id(registry, requests_topic,
                             codec_schema_json("customer.requests"),
                             &cr.requests_id, err) < 0) ||
        (events_topic != NULL &&
         registry_subject_id(registry, events_topic,
                             codec_schema_json("customer.events"),
                             &cr.events_id, err) < 0) ||
        codec_use_registry(codec, &cr, err) < 0) {
        registry_destroy(registry);
        return NULL;
    }
    return registry;
}

/*
 * Connects, retrying while the server is not reachable yet (a replica may
 * start before its database) until a stop is requested or limit_ms passes.
 */
static struct store *connect_store(const char *conninfo, int64_t limit_ms,
                                   struct mw_error *err)
{
    int64_t deadline = mono_ms() + limit_ms, backoff = 200;
    struct store *store;

    for (;;) {
        store = store_new(conninfo, err);
        if (store != NULL || !err->retriable || stop_requested ||
            mono_ms() + backoff > deadline)
            return store;
        log_warn("cli", "database not reachable yet; retrying",
                 LF_STR("error", err->msg), LF_INT("backoff_ms", backoff));
        struct timespec ts = {backoff / 1000, (long)(backoff % 1000) * 1000000};
        nanosleep(&ts, NULL);
        backoff = backoff * 2 > 5000 ? 5000 : backoff * 2;
    }
}

/*
 * Connects and brings the schema up to date, trying again while the
 * failure is retriable (the server restarting, a connection cut
 * mid-migration) and wait_ms has not passed.  With is_check_first (run)
 * nothing is applied when the schema is up to date, and a login that may
 * not apply what is missing waits for "mesh-worker migrate" (started
 * alongside, as a deployment job) until wait_ms, so that a login holding
 * only mesh_worker starts, or says plainly why not.  Returns the
 * connection, or NULL with err.
 */
static struct store *connect_migrated(const char *conninfo, int64_t wait_ms,
                                      bool is_check_first,
                                      struct mw_error *err)
{
    int64_t deadline = mono_ms() + wait_ms;
    bool is_waiting = false;

    for (;;) {
        struct store *store =
            connect_store(conninfo, deadline - mono_ms(), err);
        bool may_migrate = true;
        int rc = 1;

        if (store == NULL)
            return NULL;
        if (is_check_first)
            rc = store_schema_check(store, &may_migrate, err);
        if (rc == 0)
            return store;
        if (rc == 1 && !may_migrate) {
            store_destroy(store);
            if (stop_requested || mono_ms() + 1000 > deadline)
                return NULL;
            if (!is_waiting)
                log_warn("cli",
                         "database schema is not up to date; waiting for "
                         "\"mesh-worker migrate\"",
                         LF_STR("detail", err->detail),
                         LF_INT("wait_ms", deadline - mono_ms()));
            is_waiting = true;
            struct timespec ts = {1, 0};
            nanosleep(&ts, NULL);
            continue;
        }
        if (rc == 1 && store_migrate(store, err) == 0)
            return store;
        store_destroy(store);
        if (!err->retriable || stop_requested || mono_ms() + 500 > deadline)
            return NULL;
        log_warn("cli", "could not apply migrations; retrying",
                 LF_STR("error", err->msg));
        struct timespec ts = {0, 500 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

/*
 * A standby that commits do not wait for can be promoted without the last
 * batches, whose offsets are committed in Kafka: they are lost.  Says so
 * at start; the worker cannot fix it, and cannot see replication that a
 * managed service does below PostgreSQL.
 */
static void warn_async_replication(struct store *store)
{
    struct store_replication replication;
    struct mw_error err;

    mw_error_clear(&err);
    if (store_replication_check(store, &replication, &err) < 0) {
        log_warn("cli", "could not read the replication settings",
                 LF_STR("error", err.msg), LF_STR("detail", err.detail));
        return;
    }
    if (replication.standbys > 0 && !replication.is_synchronous)
        log_warn("cli",
                 "PostgreSQL replicates asynchronously: a failover can lose "
                 "committed batches whose offsets Kafka keeps; set "
                 "synchronous_standby_names and synchronous_commit=on",
                 LF_INT("standbys", replication.standbys),
                 LF_STR("synchronous_standby_names",
                        replication.standby_names),
                 LF_STR("synchronous_commit",
                        replication.synchronous_commit));
}

static int migrate_with(const char *conninfo, int64_t wait_ms,
                        struct mw_error *err)
{
    struct store *store = connect_migrated(conninfo, wait_ms, false, err);

    if (store == NULL)
        return -1;
    store_destroy(store);
    return 0;
}

int cli_migrate(int argc, char **argv)
{
    struct mw_config cfg;
    struct embedded_pg *pg = NULL;
    struct mw_error err;
    const char *conninfo;
    int rc;

    if (wants_help(argc, argv)) {
        printf("Usage: mesh-worker migrate\n\n"
               "Applies every database migration not yet applied and exits. "
               "Safe to run\nfrom several replicas at once. Uses "
               "MESH_WORKER_DATABASE_URL, or the embedded\nPostgreSQL under "
               "MESH_WORKER_DATA_DIR when it is unset.\n");
        return CLI_EXIT_OK;
    }
    if ((rc = load_config(&cfg)) != 0)
        return rc;
    mw_error_clear(&err);
    conninfo = cfg.database_url;
    if (conninfo == NULL) {
        pg = embedded_pg_start(cfg.data_dir, &err);
        if (pg == NULL)
            goto fail;
        conninfo = embedded_pg_conninfo(pg);
    }
    if (migrate_with(conninfo, cfg.database_wait_ms, &err) < 0)
        goto fail;
    log_info("cli", "migrations applied");
    embedded_pg_stop(pg);
    config_free(&cfg);
    return CLI_EXIT_OK;
fail:
    mw_error_print(&err, "mesh-worker: error");
    embedded_pg_stop(pg);
    config_free(&cfg);
    return err.code == MW_ERR_CONFIG ? CLI_EXIT_USAGE : CLI_EXIT_FAILURE;
}

int cli_run(int argc, char **argv)
{
    struct mw_config cfg;
    struct embedded_kafka *ek = NULL;
    struct embedded_pg *pg = NULL;
    struct store *store = NULL;
    struct codec *codec = NULL;
    struct process *process = NULL;
    struct relay *relay = NULL;
    struct scheduler *scheduler = NULL;
    struct registry *timer_registry = NULL;
    struct consumer *consumer = NULL;
    struct registry *registry = NULL;
    struct http *http = NULL;
    const char *bootstrap, *conninfo;
    struct mw_error err;
    int rc;
    int64_t stop_started;

    if (wants_help(argc, argv)) {
        printf("Usage: mesh-worker run\n\n"
               "Consumes customer.requests in a consumer group, provisions "
               "customers in\nPostgreSQL exactly once and publishes "
               "customer.events. Runs until SIGTERM or\nSIGINT, then stops "
               "gracefully within MESH_WORKER_SHUTDOWN_TIMEOUT.\n\n"
               "With no MESH_WORKER_KAFKA_BOOTSTRAP_SERVERS it starts an "
               "in-process Kafka\n(librdkafka's mock cluster, for "
               "development) and prints its address as\n"
               "\"bootstrap.servers=HOST:PORT\". With no "
               "MESH_WORKER_DATABASE_URL it runs a\nprivate PostgreSQL under "
               "MESH_WORKER_DATA_DIR.\n\nRun \"mesh-worker --help\" for every "
               "variable.\n");
        return CLI_EXIT_OK;
    }
    if ((rc = load_config(&cfg)) != 0)
        return rc;
    install_signals();
    mw_error_clear(&err);
    {
        /* Refuse a bad Kafka property before waiting for anything. */
        rd_kafka_conf_t *probe = kafka_conf_new(
            &cfg, "localhost:9092", CONFIG_KAFKA_PRODUCER, NULL, &err);

        if (probe == NULL)
            goto fail;
        rd_kafka_conf_destroy(probe);
        probe = kafka_conf_new(&cfg, "localhost:9092", CONFIG_KAFKA_CONSUMER,
                               NULL, &err);
        if (probe == NULL)
            goto fail;
        rd_kafka_conf_destroy(probe);
    }
    /* Health first: /healthz answers (and /readyz says why not) while
     * the worker waits for its database. */
    if (cfg.http_addr[0] != '\0') {
        http = http_start(cfg.http_addr, &err);
        if (http == NULL)
            goto fail;
        log_info("cli", "health and metrics listening",
                 LF_STR("addr", cfg.http_addr),
                 LF_INT("port", http_port(http)));
    }
    bootstrap = cfg.kafka_bootstrap_servers;
    if (bootstrap == NULL) {
        ek = embedded_kafka_start(&cfg, &err);
        if (ek == NULL)
            goto fail;
        bootstrap = embedded_kafka_bootstraps(ek);
        log_warn("cli",
                 "started an embedded Kafka (librdkafka mock cluster) for "
                 "development: it keeps about 5 MiB per partition and "
                 "nothing across restarts",
                 LF_STR("bootstrap_servers", bootstrap));
        printf("bootstrap.servers=%s\n", bootstrap);
        fflush(stdout);
    }
    conninfo = cfg.database_url;
    if (conninfo == NULL) {
        pg = embedded_pg_start(cfg.data_dir, &err);
        if (pg == NULL)
            goto fail;
        conninfo = embedded_pg_conninfo(pg);
    }
    store = connect_migrated(conninfo, cfg.database_wait_ms, true, &err);
    if (store == NULL)
        goto fail;
    warn_async_replication(store);
    codec = codec_new(&err);
    if (codec == NULL)
        goto fail;
    mw_error_clear(&err);
    registry = use_registry(&cfg, codec, NULL, cfg.topic_events, &err);
    if (registry == NULL && err.code != MW_ERR_NONE)
        goto fail;
    process = process_new(&cfg, codec, store, &err);
    if (process == NULL)
        goto fail;
    relay = relay_new(&cfg, conninfo, bootstrap, &err);
    if (relay == NULL || relay_start(relay, &err) < 0)
        goto fail;
    {
        /* The scheduler's thread encodes with a codec of its own. */
        struct codec *timer_codec = codec_new(&err);

        if (timer_codec == NULL)
            goto fail;
        mw_error_clear(&err);
        timer_registry =
            use_registry(&cfg, timer_codec, NULL, cfg.topic_events, &err);
        if (timer_registry == NULL && err.code != MW_ERR_NONE) {
            codec_destroy(timer_codec);
            goto fail;
        }
        scheduler = scheduler_new(&cfg, conninfo, timer_codec, &err);
    }
    if (scheduler == NULL || scheduler_start(scheduler, &err) < 0)
        goto fail;
    consumer = consumer_new(&cfg, bootstrap, process, &err);
    if (consumer == NULL)
        goto fail;
    log_info("cli", "worker started", LF_STR("group_id", cfg.group_id),
             LF_STR("topic", cfg.topic_requests));
    if (consumer_run(consumer, &stop_requested, &err) < 0)
        goto fail;
    /* Stop: the consumer finished its batch and committed; leave the
     * group, then let the relay publish what is committed. */
    stop_started = mono_ms();
    log_info("cli", "stopping");
    consumer_destroy(consumer);
    consumer = NULL;
    /* Timers fired so far are committed; the relay publishes them. */
    scheduler_destroy(scheduler);
    scheduler = NULL;
    registry_destroy(timer_registry);
    timer_registry = NULL;
    {
        int64_t left = cfg.shutdown_timeout_ms - (mono_ms() - stop_started);

        relay_stop(relay, left > 0 ? left : 0);
    }
    relay_destroy(relay);
    process_destroy(process);
    codec_destroy(codec);
    registry_destroy(registry);
    store_destroy(store);
    http_stop(http);
    embedded_pg_stop(pg);
    embedded_kafka_stop(ek);
    log_info("cli", "stopped",
             LF_INT("shutdown_ms", mono_ms() - stop_started));
    config_free(&cfg);
    return CLI_EXIT_OK;
fail:
    mw_error_print(&err, "mesh-worker: error");
    log_error("cli", "worker stopped on an error", LF_STR("error", err.msg),
              LF_STR("detail", err.detail));
    consumer_destroy(consumer);
    scheduler_destroy(scheduler);
    registry_destroy(timer_registry);
    relay_destroy(relay);
    process_destroy(process);
    codec_destroy(codec);
    registry_destroy(registry);
    store_destroy(store);
    http_stop(http);
    embedded_pg_stop(pg);
    embedded_kafka_stop(ek);
    config_free(&cfg);
    return err.code == MW_ERR_CONFIG ? CLI_EXIT_USAGE : CLI_EXIT_FAILURE;
}

/* The bootstrap of produce and tail: --bootstrap or the variable. */
static const char *client_bootstrap(const struct mw_config *cfg,
                                    const char *option)
{
    if (option != NULL)
        return option;
    if (cfg->kafka_bootstrap_servers != NULL)
        return cfg->kafka_bootstrap_servers;
    fprintf(stderr,
            "mesh-worker: error: MESH_WORKER_KAFKA_BOOTSTRAP_SERVERS is not "
            "set\nhint: Use the address \"mesh-worker run\" printed "
            "(bootstrap.servers=...), or --bootstrap.\n");
    return NULL;
}

static char *read_all(FILE *f, size_t *len)
{
    size_t cap = 65536, n = 0, got;
    char *buf = malloc(cap);

    while (buf != NULL && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            char *bigger = realloc(buf, cap * 2);

            if (bigger == NULL) {
                free(buf);
                return NULL;
            }
            buf = bigger;
            cap *= 2;
        }
    }
    *len = n;
    return buf;
}

/* A W3C traceparent for a request that starts a trace. */
static void new_traceparent(char out[56])
{
    uuid_t a, b;
    char hex[33], span[17];
    static const char digits[] = "0123456789abcdef";

    uuid_generate_random(a);
    uuid_generate_random(b);
    for (int i = 0; i < 16; i++) {
        hex[2 * i] = digits[a[i] >> 4];
        hex[2 * i + 1] = digits[a[i] & 15];
    }
    hex[32] = '\0';
    for (int i = 0; i < 8; i++) {
        span[2 * i] = digits[b[i] >> 4];
        span[2 * i + 1] = digits[b[i] & 15];
    }
    span[16] = '\0';
    snprintf(out, 56, "00-%s-%s-01", hex, span);
}

struct producer_ctx {
    rd_kafka_t *rk;
    const char *topic;
    struct codec *codec;
    struct registry *registry;
    struct mw_arena *arena;
    long produced;
    long failed;
};

static void on_produced(rd_kafka_t *rk, const rd_kafka_message_t *rkm,
                        void *opaque)
{
    struct producer_ctx *ctx = opaque;

    if (rkm->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        ctx->failed++;
        fprintf(stderr, "mesh-worker: could not produce a request: %s\n",
                rd_kafka_err2str(rkm->err));
        return;
    }
    printf("{\"topic\":\"%s\",\"partition\":%d,\"offset\":%lld,"
           "\"key\":\"%.*s\"}\n",
           ctx->topic, (int)rkm->partition, (long long)rkm->offset,
           (int)rkm->key_len, (const char *)rkm->key);
}

/* Encodes and produces one JSON object; 0, or CLI_EXIT_INPUT. */
static int produce_object(struct producer_ctx *ctx, const json_t *obj,
                          const char *source)
{
    struct mw_record rec;
    struct mw_error err;
    const void *bytes;
    size_t len;
    const char *key;
    char traceparent[56];
    rd_kafka_resp_err_t kerr;

    arena_reset(ctx->arena);
    mw_error_clear(&err);
    if (convert_record_from_json(obj, ctx->arena, &rec, &err) < 0 ||
        codec_encode(ctx->codec, &rec, ctx->arena, &bytes, &len, &err) < 0) {
        fprintf(stderr, "mesh-worker: %s: %s\n", source, err.msg);
        if (err.detail[0])
            fprintf(stderr, "detail: %s\n", err.detail);
        return CLI_EXIT_INPUT;
    }
    key = rec.type == MW_REC_CUSTOMER_TERMINATION_REQUESTED
              ? rec.u.termination.msp_id
              : rec.u.request.msp_id;
    new_traceparent(traceparent);
    do {
        kerr = rd_kafka_producev(
            ctx->rk, RD_KAFKA_V_TOPIC(ctx->topic),
            RD_KAFKA_V_KEY(key, strlen(key)),
            RD_KAFKA_V_VALUE((void *)bytes, len),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_HEADER("traceparent", traceparent, -1),
            RD_KAFKA_V_END);
        if (kerr == RD_KAFKA_RESP_ERR__QUEUE_FULL)
            rd_kafka_poll(ctx->rk, 50);
    } while (kerr == RD_KAFKA_RESP_ERR__QUEUE_FULL);
    if (kerr != RD_KAFKA_RESP_ERR_NO_ERROR) {
        fprintf(stderr, "mesh-worker: could not produce: %s\n",
                rd_kafka_err2str(kerr));
        ctx->failed++;
        return CLI_EXIT_FAILURE;
    }
    ctx->produced++;
    rd_kafka_poll(ctx->rk, 0);
    return 0;
}

/* Produces every JSON value of a text: objects, arrays of them, lines. */
static int produce_text(struct producer_ctx *ctx, const char *text,
                        size_t len, const char *source)
{
    size_t pos = 0;
    int rc = 0;

    while (pos < len) {
        json_error_t jerr;
        json_t *value;

        while (pos < len && strchr(" \t\r\n", text[pos]) != NULL)
            pos++;
        if (pos == len)
            break;
        value = json_loadb(text + pos, len - pos,
                           JSON_DISABLE_EOF_CHECK | JSON_REJECT_DUPLICATES,
                           &jerr);
        if (value == NULL) {
            fprintf(stderr, "mesh-worker: %s: invalid JSON at line %d: %s\n",
                    source, jerr.line, jerr.text);
            return CLI_EXIT_INPUT;
        }
        pos += (size_t)jerr.position;
        if (json_is_array(value)) {
            size_t i;
            json_t *item;

            json_array_foreach(value, i, item) {
                if (rc == 0)
                    rc = produce_object(ctx, item, source);
            }
        } else {
            rc = produce_object(ctx, value, source);
        }
        json_decref(value);
        if (rc != 0)
            return rc;
    }
    return rc;
}

int cli_produce(int argc, char **argv)
{
    static const struct option options[] = {
        {"bootstrap", required_argument, NULL, 'b'},
        {"topic", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    struct mw_config cfg;
    struct producer_ctx ctx = {0};
    const char *bootstrap_opt = NULL, *topic_opt = NULL, *bootstrap;
    struct mw_error err;
    rd_kafka_conf_t *conf;
    char errstr[512];
    int rc, opt;

    optind = 1;
    while ((opt = getopt_long(argc, argv, "b:t:h", options, NULL)) != -1) {
        switch (opt) {
        case 'b':
            bootstrap_opt = optarg;
            break;
        case 't':
            topic_opt = optarg;
            break;
        case 'h':
            printf("Usage: mesh-worker produce [--bootstrap HOST:PORT] "
                   "[--topic TOPIC] [FILE...]\n\n"
                   "Reads requests as JSON from each FILE (or standard input): "
                   "one object, an\narray of objects or one object a line. "
                   "Fields are those of the Avro record;\n\"type\": "
                   "\"CustomerTerminationRequested\" selects a termination. "
                   "Each is published\nAvro-encoded to "
                   "MESH_WORKER_TOPIC_REQUESTS with key = msp_id and a new\n"
                   "traceparent header; one JSON line per request is printed "
                   "once Kafka has it.\n\nExit status: 0 all published, 1 "
                   "Kafka failed, 2 bad usage, 3 bad input.\n");
            return CLI_EXIT_OK;
        default:
            return CLI_EXIT_USAGE;
        }
    }
    if ((rc = load_config(&cfg)) != 0)
        return rc;
    bootstrap = client_bootstrap(&cfg, bootstrap_opt);
    if (bootstrap == NULL) {
        config_free(&cfg);
        return CLI_EXIT_USAGE;
    }
    mw_error_clear(&err);
    ctx.topic = topic_opt ? topic_opt : cfg.topic_requests;
    ctx.codec = codec_new(&err);
    ctx.arena = arena_new();
    if (ctx.codec != NULL) {
        ctx.registry = use_registry(&cfg, ctx.codec, ctx.topic, NULL, &err);
        if (ctx.registry == NULL && err.code != MW_ERR_NONE) {
            mw_error_print(&err, "mesh-worker: error");
            rc = err.code == MW_ERR_CONFIG ? CLI_EXIT_USAGE : CLI_EXIT_FAILURE;
            goto done;
        }
    }
    conf = ctx.codec ? kafka_conf_new(&cfg, bootstrap, CONFIG_KAFKA_PRODUCER,
                                      NULL, &err)
                     : NULL;
    if (conf == NULL ||
        kafka_conf_set(conf, "enable.idempotence", "true", &err) < 0 ||
        kafka_conf_set(conf, "partitioner", "murmur2_random", &err) < 0) {
        mw_error_print(&err, "mesh-worker: error");
        if (conf != NULL)
            rd_kafka_conf_destroy(conf);
        rc = CLI_EXIT_USAGE;
        goto done;
    }
    rd_kafka_conf_set_opaque(conf, &ctx);
    rd_kafka_conf_set_dr_msg_cb(conf, on_produced);
    ctx.rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (ctx.rk == NULL) {
        fprintf(stderr, "mesh-worker: error: %s\n", errstr);
        rd_kafka_conf_destroy(conf);
        rc = CLI_EXIT_USAGE;
        goto done;
    }
    if (optind >= argc) {
        size_t len;
        char *text = read_all(stdin, &len);

        rc = text ? produce_text(&ctx, text, len, "stdin") : CLI_EXIT_INPUT;
        free(text);
    }
    for (int i = optind; i < argc && rc == 0; i++) {
        FILE *f = fopen(argv[i], "r");
        size_t len;
        char *text;

        if (f == NULL) {
            fprintf(stderr, "mesh-worker: could not open \"%s\": %s\n",
                    argv[i], strerror(errno));
            rc = CLI_EXIT_INPUT;
            break;
        }
        text = read_all(f, &len);
        fclose(f);
        rc = text ? produce_text(&ctx, text, len, argv[i]) : CLI_EXIT_INPUT;
        free(text);
    }
    if (rd_kafka_flush(ctx.rk, 30000) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        fprintf(stderr, "mesh-worker: could not deliver every request within "
                        "30 s\n");
        if (rc == 0)
            rc = CLI_EXIT_FAILURE;
    }
    if (rc == 0 && ctx.failed > 0)
        rc = CLI_EXIT_FAILURE;
done:
    if (ctx.rk != NULL)
        rd_kafka_destroy(ctx.rk);
    codec_destroy(ctx.codec);
    registry_destroy(ctx.registry);
    arena_destroy(ctx.arena);
    config_free(&cfg);
    return rc;
}

/* Adds the message's headers to obj as strings (invalid UTF-8 as hex). */
static void headers_to_json(const rd_kafka_message_t *rkm, json_t *obj)
{
    rd_kafka_headers_t *hdrs;
    const char *name;
    const void *value;
    size_t len;
    json_t *h = json_object();

    if (rd_kafka_message_headers(rkm, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        for (size_t i = 0; rd_kafka_header_get_all(hdrs, i, &name, &value,
                                                   &len) == 0;
             i++) {
            json_object_set_new(h, name,
                                value ? json_stringn(value, len)
                                      : json_null());
        }
    }
    json_object_set_new(obj, "headers", h);
}

static json_t *bytes_to_hex(const void *buf, size_t len)
{
    static const char digits[] = "0123456789abcdef";
    char *s = malloc(len * 2 + 1);
    const unsigned char *p = buf;
    json_t *j;

    if (s == NULL)
        return json_null();
    for (size_t i = 0; i < len; i++) {
        s[2 * i] = digits[p[i] >> 4];
        s[2 * i + 1] = digits[p[i] & 15];
    }
    s[2 * len] = '\0';
    j = json_string(s);
    free(s);
    return j;
}

/* Prints one consumed message as a JSON line. */
static void print_message(const rd_kafka_message_t *rkm, struct codec *codec,
                          struct mw_arena *arena, int raw)
{
    json_t *line = json_object();
    struct mw_record rec;
    struct mw_error err;
    uint32_t schema_id;
    char *text;

    json_object_set_new(line, "topic",
                        json_string(rd_kafka_topic_name(rkm->rkt)));
    json_object_set_new(line, "partition", json_integer(rkm->partition));
    json_object_set_new(line, "offset", json_integer(rkm->offset));
    json_object_set_new(line, "key",
                        rkm->key ? json_stringn(rkm->key, rkm->key_len)
                                 : json_null());
    headers_to_json(rkm, line);
    if (codec_confluent_id(rkm->payload, rkm->len, &schema_id) == 0)
        json_object_set_new(line, "schema_id", json_integer(schema_id));
    arena_reset(arena);
    if (!raw && rkm->payload &&
        codec_decode(codec, rkm->payload, rkm->len, arena, &rec, &err) ==
            CODEC_OK) {
        json_object_set_new(line, "value", convert_record_to_json(&rec));
    } else {
        json_object_set_new(line, "value_hex",
                            rkm->payload ? bytes_to_hex(rkm->payload, rkm->len)
                                         : json_null());
    }
    text = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (text != NULL) {
        puts(text);
        free(text);
    }
    fflush(stdout);
    json_decref(line);
}

int cli_tail(int argc, char **argv)
{
    static const struct option options[] = {
        {"bootstrap", required_argument, NULL, 'b'},
        {"dlq", no_argument, NULL, 'd'},
        {"follow", no_argument, NULL, 'f'},
        {"max", required_argument, NULL, 'n'},
        {"timeout", required_argument, NULL, 'T'},
        {"topic", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    struct mw_config cfg;
    const char *bootstrap_opt = NULL, *topic = NULL, *bootstrap;
    int dlq = 0, follow = 0, rc, opt, eof_count = 0;
    long max = -1, seen = 0;
    int64_t timeout_ms = -1, deadline;
    struct codec *codec = NULL;
    struct registry *registry = NULL;
    struct mw_arena *arena = NULL;
    rd_kafka_t *rk = NULL;
    rd_kafka_conf_t *conf;
    const rd_kafka_metadata_t *md = NULL;
    rd_kafka_topic_partition_list_t *parts = NULL;
    struct mw_error err;
    char errstr[512];

    optind = 1;
    while ((opt = getopt_long(argc, argv, "b:dfn:T:t:h", options, NULL)) !=
           -1) {
        switch (opt) {
        case 'b':
            bootstrap_opt = optarg;
            break;
        case 'd':
            dlq = 1;
            break;
        case 'f':
            follow = 1;
            break;
        case 'n':
            max = strtol(optarg, NULL, 10);
            break;
        case 'T':
            if (config_parse_duration(optarg, &timeout_ms) < 0) {
                fprintf(stderr, "mesh-worker: invalid --timeout \"%s\"\n",
                        optarg);
                return CLI_EXIT_USAGE;
            }
            break;
        case 't':
            topic = optarg;
            break;
        case 'h':
            printf("Usage: mesh-worker tail [--dlq] [--follow] [--max N] "
                   "[--timeout DURATION]\n"
                   "                        [--bootstrap HOST:PORT] "
                   "[--topic TOPIC]\n\n"
                   "Prints every message of MESH_WORKER_TOPIC_EVENTS (with "
                   "--dlq, of\nMESH_WORKER_TOPIC_DLQ) from the beginning as "
                   "JSON lines: topic, partition,\noffset, key, headers and "
                   "the decoded value (value_hex when it does not\ndecode, "
                   "and always for the DLQ). Without --follow it stops at the "
                   "end of\nevery partition; --max stops after N messages, "
                   "--timeout after a duration\n(e.g. 30s).\n\nExit status: "
                   "0 done, 1 Kafka failed or --timeout passed before --max "
                   "messages,\n2 bad usage.\n");
            return CLI_EXIT_OK;
        default:
            return CLI_EXIT_USAGE;
        }
    }
    if ((rc = load_config(&cfg)) != 0)
        return rc;
    bootstrap = client_bootstrap(&cfg, bootstrap_opt);
    if (bootstrap == NULL) {
        config_free(&cfg);
        return CLI_EXIT_USAGE;
    }
    if (topic == NULL)
        topic = dlq ? cfg.topic_dlq : cfg.topic_events;
    mw_error_clear(&err);
    codec = codec_new(&err);
    arena = arena_new();
    if (codec != NULL) {
        registry = use_registry(&cfg, codec, NULL, NULL, &err);
        if (registry == NULL && err.code != MW_ERR_NONE) {
            mw_error_print(&err, "mesh-worker: error");
            rc = err.code == MW_ERR_CONFIG ? CLI_EXIT_USAGE : CLI_EXIT_FAILURE;
            goto done;
        }
    }
    conf = codec ? kafka_conf_new(&cfg, bootstrap, CONFIG_KAFKA_CONSUMER, NULL,
                                  &err)
                 : NULL;
    if (conf == NULL ||
        kafka_conf_set(conf, "enable.partition.eof", "true", &err) < 0 ||
        kafka_conf_set(conf, "group.id", "mesh-worker-tail", &err) < 0 ||
        kafka_conf_set(conf, "enable.auto.commit", "false", &err) < 0) {
        mw_error_print(&err, "mesh-worker: error");
        if (conf)
            rd_kafka_conf_destroy(conf);
        rc = CLI_EXIT_USAGE;
        goto done;
    }
    rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (rk == NULL) {
        fprintf(stderr, "mesh-worker: error: %s\n", errstr);
        rd_kafka_conf_destroy(conf);
        rc = CLI_EXIT_USAGE;
        goto done;
    }
    {
        rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
        rd_kafka_resp_err_t kerr =
            rd_kafka_metadata(rk, 0, rkt, &md, 10000);

        rd_kafka_topic_destroy(rkt);
        if (kerr != RD_KAFKA_RESP_ERR_NO_ERROR || md->topic_cnt != 1 ||
            md->topics[0].err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            fprintf(stderr,
                    "mesh-worker: could not read the partitions of %s: %s\n",
                    topic,
                    rd_kafka_err2str(kerr ? kerr : md->topics[0].err));
            rc = CLI_EXIT_FAILURE;
            goto done;
        }
    }
    parts = rd_kafka_topic_partition_list_new(md->topics[0].partition_cnt);
    for (int i = 0; i < md->topics[0].partition_cnt; i++)
        rd_kafka_topic_partition_list_add(parts, topic,
                                          md->topics[0].partitions[i].id)
            ->offset = RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_assign(rk, parts);
    deadline = timeout_ms >= 0 ? mono_ms() + timeout_ms : INT64_MAX;
    rc = CLI_EXIT_OK;
    while (max < 0 || seen < max) {
        rd_kafka_message_t *m;

        if (mono_ms() > deadline) {
            if (max >= 0)
                rc = CLI_EXIT_FAILURE;
            break;
        }
        m = rd_kafka_consumer_poll(rk, 200);
        if (m == NULL)
            continue;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            rd_kafka_message_destroy(m);
            if (!follow && max < 0 && ++eof_count >= parts->cnt)
                break;
            continue;
        }
        if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            fprintf(stderr, "mesh-worker: %s\n", rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            continue;
        }
        print_message(m, codec, arena, dlq);
        rd_kafka_message_destroy(m);
        seen++;
    }
done:
    if (parts != NULL)
        rd_kafka_topic_partition_list_destroy(parts);
    if (md != NULL)
        rd_kafka_metadata_destroy(md);
    if (rk != NULL) {
        rd_kafka_consumer_close(rk);
        rd_kafka_destroy(rk);
    }
    codec_destroy(codec);
    registry_destroy(registry);
    arena_destroy(arena);
    config_free(&cfg);
    return rc;
}

int cli_customers(int argc, char **argv)
{
    struct mw_config cfg;
    struct embedded_pg *pg = NULL;
    struct store *store = NULL;
    struct mw_error err;
    const char *conninfo;
    char *json = NULL;
    int rc, found;

    if (wants_help(argc, argv) || argc != 3 || strcmp(argv[1], "show") != 0) {
        FILE *out = wants_help(argc, argv) ? stdout : stderr;

        fprintf(out,
                "Usage: mesh-worker customers show CUSTOMER_ID|DOMAIN\n\n"
                "Prints a customer's state as JSON: the customer row, its "
                "domains, its\ntermination and its pending lifecycle timers "
                "(times in UTC). A domain\nfinds its live holder, else the "
                "customer that held it last.\n\nExit status: 0 found, 1 not "
                "found or database failure, 2 bad usage.\n");
        return out == stdout ? CLI_EXIT_OK : CLI_EXIT_USAGE;
    }
    if ((rc = load_config(&cfg)) != 0)
        return rc;
    mw_error_clear(&err);
    conninfo = cfg.database_url;
    if (conninfo == NULL) {
        pg = embedded_pg_start(cfg.data_dir, &err);
        if (pg == NULL)
            goto fail;
        conninfo = embedded_pg_conninfo(pg);
    }
    store = store_new(conninfo, &err);
    if (store == NULL)
        goto fail;
    found = store_customer_describe(store, argv[2], &json, &err);
    if (found < 0)
        goto fail;
    if (found == 0) {
        fprintf(stderr, "mesh-worker: no customer with id or domain \"%s\"\n",
                argv[2]);
        rc = CLI_EXIT_FAILURE;
    } else {
        printf("%s\n", json);
        rc = CLI_EXIT_OK;
    }
    free(json);
    store_destroy(store);
    embedded_pg_stop(pg);
    config_free(&cfg);
    return rc;
fail:
    mw_error_print(&err, "mesh-worker: error");
    store_destroy(store);
    embedded_pg_stop(pg);
    config_free(&cfg);
    return err.code == MW_ERR_CONFIG ? CLI_EXIT_USAGE : CLI_EXIT_FAILURE;
}
