/*
 * The service: `mesh-worker run` (the worker) and `mesh-worker migrate`.
 * run starts health first, then Kafka and the database (waiting for
 * either while it is not reachable yet), then the relay, the scheduler
 * and the consumer, and stops them in the order that loses nothing: the
 * consumer commits its batch and leaves the group, fired timers are
 * committed, then the relay publishes what is committed within
 * MESH_WORKER_SHUTDOWN_TIMEOUT.  Only run installs signal handlers.
 */
#include "cli_internal.h"

#include "consumer.h"
#include "http.h"
#include "kafka.h"
#include "log.h"
#include "mw.h"
#include "process.h"
#include "relay.h"
#include "scheduler.h"
#include "store.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

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

/*
 * Connects, retrying while the server is not reachable yet (a replica may
 * start before its database) until a stop is requested or limit_ms passes.
 */
static struct store *connect_store(const char *conninfo, int64_t limit_ms,
                                   struct mw_error *err)
{
    int64_t deadline = mw_monotonic_ms() + limit_ms, backoff = 200;
    struct store *store;

    for (;;) {
        store = store_new(conninfo, err);
        if (store != NULL || !err->retriable || stop_requested ||
            mw_monotonic_ms() + backoff > deadline)
            return store;
        log_warn("cli", "database not reachable yet; retrying",
                 LF_STR("error", err->msg), LF_INT("backoff_ms", backoff));
        mw_sleep_ms(backoff);
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
                                      bool is_check_first, struct mw_error *err)
{
    int64_t deadline = mw_monotonic_ms() + wait_ms;
    bool is_waiting = false;

    for (;;) {
        struct store *store =
            connect_store(conninfo, deadline - mw_monotonic_ms(), err);
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
            if (stop_requested || mw_monotonic_ms() + 1000 > deadline)
                return NULL;
            if (!is_waiting)
                log_warn("cli",
                         "database schema is not up to date; waiting for "
                         "\"mesh-worker migrate\"",
                         LF_STR("detail", err->detail),
                         LF_INT("wait_ms", deadline - mw_monotonic_ms()));
            is_waiting = true;
            mw_sleep_ms(1000);
            continue;
        }
        if (rc == 1 && store_migrate(store, err) == 0)
            return store;
        store_destroy(store);
        if (!err->retriable || stop_requested ||
            mw_monotonic_ms() + 500 > deadline)
            return NULL;
        log_warn("cli", "could not apply migrations; retrying",
                 LF_STR("error", err->msg));
        mw_sleep_ms(500);
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
                 LF_STR("synchronous_standby_names", replication.standby_names),
                 LF_STR("synchronous_commit", replication.synchronous_commit));
}

int cli_migrate(int argc, char **argv)
{
    struct mw_config cfg;
    struct embedded_pg *pg = NULL;
    struct store *store;
    struct mw_error err;
    const char *conninfo;
    int rc;

    if (cli_wants_help(argc, argv)) {
        printf("Usage: mesh-worker migrate\n\n"
               "Applies every database migration not yet applied and exits. "
               "Safe to run\nfrom several replicas at once. Uses "
               "MESH_WORKER_DATABASE_URL, or the embedded\nPostgreSQL under "
               "MESH_WORKER_DATA_DIR when it is unset.\n");
        return CLI_EXIT_OK;
    }
    rc = cli_load_config(&cfg);
    if (rc != 0)
        return rc;
    mw_error_clear(&err);
    conninfo = cli_database(&cfg, &pg, &err);
    store = conninfo != NULL
                ? connect_migrated(conninfo, cfg.database_wait_ms, false, &err)
                : NULL;
    if (store != NULL) {
        store_destroy(store);
        log_info("cli", "migrations applied");
        rc = CLI_EXIT_OK;
    } else {
        rc = cli_fail(&err);
    }
    embedded_pg_stop(pg);
    config_free(&cfg);
    return rc;
}

/* Everything run starts, in the order it starts. */
struct service {
    struct http *http;
    struct embedded_kafka *ek;
    struct embedded_pg *pg;
    const char *bootstrap;
    const char *conninfo;
    struct store *store;
    struct codec *codec;
    struct registry *registry;
    struct process *process;
    struct relay *relay;
    struct registry *timer_registry;
    struct scheduler *scheduler;
    struct consumer *consumer;
};

/* Refuses a bad Kafka property before waiting for anything. */
static int check_kafka_properties(const struct mw_config *cfg,
                                  struct mw_error *err)
{
    static const enum config_kafka_client clients[] = {CONFIG_KAFKA_PRODUCER,
                                                       CONFIG_KAFKA_CONSUMER};

    for (size_t i = 0; i < sizeof(clients) / sizeof(clients[0]); i++) {
        rd_kafka_conf_t *probe =
            kafka_conf_new(cfg, "localhost:9092", clients[i], NULL, err);

        if (probe == NULL)
            return -1;
        rd_kafka_conf_destroy(probe);
    }
    return 0;
}

/*
 * Health first: /healthz answers (and /readyz says why not) while the
 * worker waits for its database.  Then Kafka (an embedded one when no
 * bootstrap is configured) and the database, migrated.
 */
static int start_connections(struct service *svc, const struct mw_config *cfg,
                             struct mw_error *err)
{
    if (cfg->http_addr[0] != '\0') {
        svc->http = http_start(cfg->http_addr, err);
        if (svc->http == NULL)
            return -1;
        log_info("cli", "health and metrics listening",
                 LF_STR("addr", cfg->http_addr),
                 LF_INT("port", http_port(svc->http)));
    }
    svc->bootstrap = cfg->kafka_bootstrap_servers;
    if (svc->bootstrap == NULL) {
        svc->ek = embedded_kafka_start(cfg, err);
        if (svc->ek == NULL)
            return -1;
        svc->bootstrap = embedded_kafka_bootstraps(svc->ek);
        log_warn("cli",
                 "started an embedded Kafka (librdkafka mock cluster) for "
                 "development: it keeps about 5 MiB per partition and "
                 "nothing across restarts",
                 LF_STR("bootstrap_servers", svc->bootstrap));
        printf("bootstrap.servers=%s\n", svc->bootstrap);
        fflush(stdout);
    }
    svc->conninfo = cli_database(cfg, &svc->pg, err);
    if (svc->conninfo == NULL)
        return -1;
    svc->store =
        connect_migrated(svc->conninfo, cfg->database_wait_ms, true, err);
    if (svc->store == NULL)
        return -1;
    warn_async_replication(svc->store);
    return 0;
}

/* The relay, the scheduler and the consumer, each with what it needs. */
static int start_workers(struct service *svc, const struct mw_config *cfg,
                         struct mw_error *err)
{
    struct codec *timer_codec;

    if (cli_codec_new(cfg, NULL, cfg->topic_events, &svc->codec, &svc->registry,
                      err) < 0)
        return -1;
    svc->process = process_new(cfg, svc->codec, svc->store, err);
    if (svc->process == NULL ||
        process_use_second_session(svc->process, svc->conninfo, err) < 0)
        return -1;
    svc->relay = relay_new(cfg, svc->conninfo, svc->bootstrap, err);
    if (svc->relay == NULL || relay_start(svc->relay, err) < 0)
        return -1;
    /* The scheduler's thread encodes with a codec of its own. */
    if (cli_codec_new(cfg, NULL, cfg->topic_events, &timer_codec,
                      &svc->timer_registry, err) < 0)
        return -1;
    svc->scheduler = scheduler_new(cfg, svc->conninfo, timer_codec, err);
    if (svc->scheduler == NULL || scheduler_start(svc->scheduler, err) < 0)
        return -1;
    svc->consumer = consumer_new(cfg, svc->bootstrap, svc->process, err);
    if (svc->consumer == NULL)
        return -1;
    return 0;
}

/*
 * Stops what is still running, last started first.  With drain_until >= 0
 * (on the monotonic clock) the relay first publishes what is committed
 * until then; with -1 it stops at once.
 */
static void stop_service(struct service *svc, int64_t drain_until)
{
    consumer_destroy(svc->consumer);
    /* Timers fired so far are committed; the relay publishes them. */
    scheduler_destroy(svc->scheduler);
    registry_destroy(svc->timer_registry);
    if (svc->relay != NULL && drain_until >= 0) {
        int64_t left = drain_until - mw_monotonic_ms();

        relay_stop(svc->relay, left > 0 ? left : 0);
    }
    relay_destroy(svc->relay);
    process_destroy(svc->process);
    codec_destroy(svc->codec);
    registry_destroy(svc->registry);
    store_destroy(svc->store);
    http_stop(svc->http);
    embedded_pg_stop(svc->pg);
    embedded_kafka_stop(svc->ek);
    memset(svc, 0, sizeof(*svc));
}

int cli_run(int argc, char **argv)
{
    struct mw_config cfg;
    struct service svc = {0};
    struct mw_error err;
    int64_t stop_started;
    int rc;

    if (cli_wants_help(argc, argv)) {
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
    rc = cli_load_config(&cfg);
    if (rc != 0)
        return rc;
    install_signals();
    mw_error_clear(&err);
    if (check_kafka_properties(&cfg, &err) < 0 ||
        start_connections(&svc, &cfg, &err) < 0 ||
        start_workers(&svc, &cfg, &err) < 0)
        goto fail;
    log_info("cli", "worker started", LF_STR("group_id", cfg.group_id),
             LF_STR("topic", cfg.topic_requests));
    if (consumer_run(svc.consumer, &stop_requested, &err) < 0)
        goto fail;
    /* Stop: the consumer finished its batch and committed; leave the
     * group, then let the relay publish what is committed. */
    stop_started = mw_monotonic_ms();
    log_info("cli", "stopping");
    stop_service(&svc, stop_started + cfg.shutdown_timeout_ms);
    log_info("cli", "stopped",
             LF_INT("shutdown_ms", mw_monotonic_ms() - stop_started));
    config_free(&cfg);
    return CLI_EXIT_OK;
fail:
    rc = cli_fail(&err);
    log_error("cli", "worker stopped on an error", LF_STR("error", err.msg),
              LF_STR("detail", err.detail));
    stop_service(&svc, -1);
    config_free(&cfg);
    return rc;
}
