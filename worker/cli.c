/*
 * The set-up every subcommand shares (cli_internal.h) and the top-level
 * help.  The subcommands themselves live apart: the service (run,
 * migrate) in cli_service.c, the operator tools in cli_produce.c,
 * cli_tail.c, cli_customers.c and cli_dlq.c.  Each reads the
 * configuration once, says plainly what is wrong when it cannot start,
 * and returns an exit status from enum cli_exit; none of them calls
 * exit().
 */
#include "cli_internal.h"

#include "kafka.h"
#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
           "  customers show ID|DOMAIN  print a customer's state, timers "
           "and changes as JSON\n"
           "\n"
           "Run \"mesh-worker COMMAND --help\" for a command's options.\n"
           "Configuration comes from MESH_WORKER_* environment variables:\n");
    for (const struct config_var *v = config_vars; v->name; v++)
        printf("  %-36s %s%s%s\n", v->name, v->meaning,
               v->default_value[0] ? "; default " : "", v->default_value);
    printf("\nExit status: 0 success, 1 runtime failure, 2 bad usage or "
           "configuration,\n3 bad input (produce).\n");
}

int cli_load_config(struct mw_config *cfg)
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

bool cli_wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return true;
    }
    return false;
}

int cli_parse_integer(const char *option, const char *text, long long min,
                      long long max, long long *out)
{
    char *end;
    long long value;

    errno = 0;
    value = strtoll(text, &end, 10);
    if (end == text || *end != '\0' || errno == ERANGE || value < min ||
        value > max) {
        fprintf(stderr, "mesh-worker: invalid %s \"%s\"\n", option, text);
        fprintf(stderr, "hint: Use a whole number from %lld to %lld.\n", min,
                max);
        return CLI_EXIT_USAGE;
    }
    *out = value;
    return 0;
}

int cli_fail(const struct mw_error *err)
{
    mw_error_print(err, "mesh-worker: error");
    return err->code == MW_ERR_CONFIG ? CLI_EXIT_USAGE : CLI_EXIT_FAILURE;
}

const char *cli_database(const struct mw_config *cfg, struct embedded_pg **pg,
                         struct mw_error *err)
{
    *pg = NULL;
    if (cfg->database_url != NULL)
        return cfg->database_url;
    *pg = embedded_pg_start(cfg->data_dir, err);
    if (*pg == NULL)
        return NULL;
    return embedded_pg_conninfo(*pg);
}

/*
 * Attaches a Schema Registry to codec when one is configured; see
 * cli_codec_new.  Returns the registry, NULL when none is configured, or
 * NULL with err->code set on failure.
 */
static struct registry *use_registry(const struct mw_config *cfg,
                                     struct codec *codec,
                                     const char *requests_topic,
                                     const char *events_topic,
                                     struct mw_error *err)
{
    struct codec_registry cr = {.fetch = registry_fetch_schema,
                                .requests_id = -1,
                                .events_id = -1,
                                .cache_size =
                                    (size_t)cfg->schema_registry_cache_size};
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

int cli_codec_new(const struct mw_config *cfg, const char *requests_topic,
                  const char *events_topic, struct codec **codec,
                  struct registry **registry, struct mw_error *err)
{
    *registry = NULL;
    *codec = codec_new(err);
    if (*codec == NULL)
        return -1;
    mw_error_clear(err);
    *registry = use_registry(cfg, *codec, requests_topic, events_topic, err);
    if (*registry == NULL && err->code != MW_ERR_NONE) {
        codec_destroy(*codec);
        *codec = NULL;
        return -1;
    }
    return 0;
}

int cli_load_tool_config(struct mw_config *cfg, const char *option,
                         const char **bootstrap)
{
    int rc = cli_load_config(cfg);

    if (rc != 0)
        return rc;
    *bootstrap = option != NULL ? option : cfg->kafka_bootstrap_servers;
    if (*bootstrap != NULL)
        return 0;
    fprintf(stderr,
            "mesh-worker: error: MESH_WORKER_KAFKA_BOOTSTRAP_SERVERS is not "
            "set\nhint: Use the address \"mesh-worker run\" printed "
            "(bootstrap.servers=...), or --bootstrap.\n");
    config_free(cfg);
    return CLI_EXIT_USAGE;
}

rd_kafka_conf_t *cli_kafka_conf(const struct mw_config *cfg,
                                const char *bootstrap,
                                enum config_kafka_client client,
                                const char *const *forced)
{
    struct mw_error err;
    rd_kafka_conf_t *conf;

    mw_error_clear(&err);
    conf = kafka_conf_new(cfg, bootstrap, client, NULL, &err);
    if (conf == NULL)
        goto fail;
    for (size_t i = 0; forced != NULL && forced[i] != NULL; i += 2) {
        if (kafka_conf_set(conf, forced[i], forced[i + 1], &err) < 0)
            goto fail;
    }
    return conf;
fail:
    mw_error_print(&err, "mesh-worker: error");
    if (conf != NULL)
        rd_kafka_conf_destroy(conf);
    return NULL;
}

rd_kafka_t *cli_kafka_new(rd_kafka_type_t type, rd_kafka_conf_t *conf)
{
    char errstr[512];
    rd_kafka_t *rk = rd_kafka_new(type, conf, errstr, sizeof(errstr));

    if (rk == NULL) {
        fprintf(stderr, "mesh-worker: error: %s\n", errstr);
        rd_kafka_conf_destroy(conf);
    }
    return rk;
}

int cli_assign_topic(rd_kafka_t *rk, const char *topic, int64_t offset)
{
    const rd_kafka_metadata_t *md = NULL;
    rd_kafka_topic_partition_list_t *parts;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    rd_kafka_resp_err_t kerr = rd_kafka_metadata(rk, 0, rkt, &md, 10000);
    int count;

    rd_kafka_topic_destroy(rkt);
    if (kerr == RD_KAFKA_RESP_ERR_NO_ERROR)
        kerr = md->topic_cnt == 1 ? md->topics[0].err
                                  : RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC;
    if (kerr != RD_KAFKA_RESP_ERR_NO_ERROR) {
        fprintf(stderr,
                "mesh-worker: could not read the partitions of %s: %s\n", topic,
                rd_kafka_err2str(kerr));
        if (md != NULL)
            rd_kafka_metadata_destroy(md);
        return -1;
    }
    count = md->topics[0].partition_cnt;
    parts = rd_kafka_topic_partition_list_new(count);
    for (int i = 0; i < count; i++)
        rd_kafka_topic_partition_list_add(parts, topic,
                                          md->topics[0].partitions[i].id)
            ->offset = offset;
    rd_kafka_metadata_destroy(md);
    kerr = rd_kafka_assign(rk, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    if (kerr != RD_KAFKA_RESP_ERR_NO_ERROR) {
        fprintf(stderr,
                "mesh-worker: could not assign the partitions of "
                "%s: %s\n",
                topic, rd_kafka_err2str(kerr));
        return -1;
    }
    return count;
}
