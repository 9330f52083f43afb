/*
 * `mesh-worker dlq list|replay`: the operator's view of the dead-letter
 * topic.  list prints it as JSON lines (as `tail --dlq`); replay sends
 * messages back to the topic they came from, with their key, bytes and
 * original headers (the dlq.* ones dropped, dlq.replayed.from added), so
 * that a fixed worker or registry can take them again.  Replay keeps no
 * state: --from-offset resumes a partial replay.
 */
#include "cli_internal.h"

#include "config.h"
#include "kafka.h"
#include "log.h"

#include <getopt.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(void)
{
    printf("Usage: mesh-worker dlq list [tail options]\n"
           "       mesh-worker dlq replay [--reason REASON] [--from-offset N] "
           "[--max N]\n"
           "                              [--dry-run] [--bootstrap "
           "HOST:PORT]\n\n"
           "list prints MESH_WORKER_TOPIC_DLQ as JSON lines (see \"mesh-worker "
           "tail --help\").\n"
           "replay reads the dead-letter topic from the beginning (or from "
           "offset N of\nevery partition) to its end and produces each "
           "message (only those whose\ndlq.reason is REASON, when given) "
           "back to its dlq.original.topic with its\nkey, bytes and original "
           "headers, dropping the dlq.* headers and adding\n"
           "dlq.replayed.from. A message that still does not decode comes "
           "back to the\ndead-letter topic; a valid request is provisioned "
           "once however often it is\nreplayed. --dry-run only prints what "
           "would be replayed.\n\nExit status: 0 done, 1 Kafka failed, 2 bad "
           "usage.\n");
}

/* Copies the non-dlq.* headers and notes where the message came from. */
static rd_kafka_headers_t *replay_headers(const rd_kafka_message_t *m,
                                          const char *from)
{
    rd_kafka_headers_t *in, *out = rd_kafka_headers_new(8);
    const char *name;
    const void *value;
    size_t len;

    if (rd_kafka_message_headers(m, &in) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        for (size_t i = 0;
             rd_kafka_header_get_all(in, i, &name, &value, &len) == 0; i++) {
            if (strncmp(name, "dlq.", 4) != 0)
                rd_kafka_header_add(out, name, -1, value,
                                    value ? (ssize_t)len : 0);
        }
    }
    rd_kafka_header_add(out, "dlq.replayed.from", -1, from, -1);
    return out;
}

/* What `dlq replay` was asked to do. */
struct replay_request {
    const char *bootstrap;
    const char *reason; /* only messages with this dlq.reason, or NULL */
    long long from;     /* first offset of every partition */
    long max;           /* at most this many messages, or -1 */
    int dry_run;
};

/* Parses replay's options; returns -1 to go on, or the exit status. */
static int replay_options(int argc, char **argv, struct replay_request *req)
{
    static const struct option options[] = {
        {"bootstrap", required_argument, NULL, 'b'},
        {"reason", required_argument, NULL, 'r'},
        {"from-offset", required_argument, NULL, 'o'},
        {"max", required_argument, NULL, 'n'},
        {"dry-run", no_argument, NULL, 'd'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    long long number;
    int opt;

    *req =
        (struct replay_request){.from = RD_KAFKA_OFFSET_BEGINNING, .max = -1};
    optind = 1;
    while ((opt = getopt_long(argc, argv, "b:r:o:n:dh", options, NULL)) != -1) {
        switch (opt) {
        case 'b':
            req->bootstrap = optarg;
            break;
        case 'r':
            req->reason = optarg;
            break;
        case 'o':
            if (cli_parse_integer("--from-offset", optarg, 0, INT64_MAX,
                                  &req->from) != 0)
                return CLI_EXIT_USAGE;
            break;
        case 'n':
            if (cli_parse_integer("--max", optarg, 0, LONG_MAX, &number) != 0)
                return CLI_EXIT_USAGE;
            req->max = (long)number;
            break;
        case 'd':
            req->dry_run = 1;
            break;
        case 'h':
            usage();
            return CLI_EXIT_OK;
        default:
            return CLI_EXIT_USAGE;
        }
    }
    return -1;
}

/* Replays one dead letter to the topic it came from (or the requests
 * topic) and prints a line for it.  Returns 1 when the message is not
 * one to replay, 0 when it was replayed, -1 when producing it failed. */
static int replay_one(rd_kafka_t *producer, const struct mw_config *cfg,
                      const struct replay_request *req,
                      const rd_kafka_message_t *m)
{
    const void *value;
    size_t len;
    char from_text[300], target[256];
    int rc = 0;

    if (req->reason != NULL &&
        (kafka_header_get(m, "dlq.reason", &value, &len) < 0 ||
         len != strlen(req->reason) || memcmp(value, req->reason, len) != 0))
        return 1;
    snprintf(target, sizeof(target), "%s", cfg->topic_requests);
    if (kafka_header_get(m, "dlq.original.topic", &value, &len) == 0 && value &&
        len > 0 && len < sizeof(target))
        snprintf(target, sizeof(target), "%.*s", (int)len, (const char *)value);
    snprintf(from_text, sizeof(from_text), "%s:%d:%lld", cfg->topic_dlq,
             (int)m->partition, (long long)m->offset);
    if (!req->dry_run) {
        rd_kafka_resp_err_t kerr = rd_kafka_producev(
            producer, RD_KAFKA_V_TOPIC(target),
            RD_KAFKA_V_KEY(m->key, m->key_len),
            RD_KAFKA_V_VALUE(m->payload, m->len),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_HEADERS(replay_headers(m, from_text)), RD_KAFKA_V_END);

        if (kerr) {
            fprintf(stderr, "mesh-worker: could not replay %s: %s\n", from_text,
                    rd_kafka_err2str(kerr));
            rc = -1;
        }
    }
    printf("{\"replayed_from\":\"%s\",\"to\":\"%s\",\"dry_run\":%s}\n",
           from_text, target, req->dry_run ? "true" : "false");
    return rc;
}

/* Reads the DLQ to the end of every partition (or --max messages) and
 * replays each message asked for.  Returns the exit status. */
static int replay_all(rd_kafka_t *consumer, rd_kafka_t *producer,
                      const struct mw_config *cfg,
                      const struct replay_request *req, int partitions)
{
    long replayed = 0;
    int eof = 0, rc = CLI_EXIT_OK;

    while (eof < partitions && (req->max < 0 || replayed < req->max)) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(consumer, 1000);
        int one;

        if (m == NULL)
            continue;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            eof++;
        } else if (m->err) {
            fprintf(stderr, "mesh-worker: %s\n", rd_kafka_message_errstr(m));
        } else {
            one = replay_one(producer, cfg, req, m);
            if (one <= 0)
                replayed++;
            if (one < 0)
                rc = CLI_EXIT_FAILURE;
        }
        rd_kafka_message_destroy(m);
    }
    if (rd_kafka_flush(producer, 30000) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        fprintf(stderr, "mesh-worker: could not deliver every replayed "
                        "message within 30 s\n");
        rc = CLI_EXIT_FAILURE;
    }
    fprintf(stderr, "mesh-worker: %ld message(s) %s\n", replayed,
            req->dry_run ? "would be replayed" : "replayed");
    return rc;
}

static int replay(int argc, char **argv)
{
    /* Reads from where it is told, commits nothing, and writes each
     * message once, partitioned by key as the worker's producers do. */
    static const char *const consumer_forced[] = {
        "group.id", "mesh-worker-dlq-replay", "enable.partition.eof",
        "true",     "enable.auto.commit",     "false",
        NULL};
    static const char *const producer_forced[] = {
        "enable.idempotence", "true", "partitioner", "murmur2_random", NULL};
    struct replay_request req;
    struct mw_config cfg;
    const char *bootstrap;
    int rc, partitions;
    rd_kafka_conf_t *cconf, *pconf;
    rd_kafka_t *consumer = NULL, *producer = NULL;

    rc = replay_options(argc, argv, &req);
    if (rc >= 0)
        return rc;
    rc = cli_load_tool_config(&cfg, req.bootstrap, &bootstrap);
    if (rc != 0)
        return rc;
    cconf =
        cli_kafka_conf(&cfg, bootstrap, CONFIG_KAFKA_CONSUMER, consumer_forced);
    pconf =
        cli_kafka_conf(&cfg, bootstrap, CONFIG_KAFKA_PRODUCER, producer_forced);
    if (cconf == NULL || pconf == NULL) {
        if (cconf != NULL)
            rd_kafka_conf_destroy(cconf);
        if (pconf != NULL)
            rd_kafka_conf_destroy(pconf);
        config_free(&cfg);
        return CLI_EXIT_USAGE;
    }
    rc = CLI_EXIT_FAILURE;
    consumer = cli_kafka_new(RD_KAFKA_CONSUMER, cconf);
    if (consumer == NULL) {
        rd_kafka_conf_destroy(pconf);
        goto done;
    }
    producer = cli_kafka_new(RD_KAFKA_PRODUCER, pconf);
    if (producer == NULL)
        goto done;
    partitions = cli_assign_topic(consumer, cfg.topic_dlq, req.from);
    if (partitions >= 0)
        rc = replay_all(consumer, producer, &cfg, &req, partitions);
done:
    if (consumer != NULL) {
        rd_kafka_consumer_close(consumer);
        rd_kafka_destroy(consumer);
    }
    if (producer != NULL)
        rd_kafka_destroy(producer);
    config_free(&cfg);
    return rc;
}

int cli_dlq(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "-h") == 0) {
        usage();
        return argc < 2 ? CLI_EXIT_USAGE : CLI_EXIT_OK;
    }
    if (strcmp(argv[1], "list") == 0) {
        /* tail --dlq with the caller's options */
        char **args = calloc((size_t)argc + 2, sizeof(*args));
        int rc;

        if (args == NULL)
            return CLI_EXIT_FAILURE;
        args[0] = "tail";
        args[1] = "--dlq";
        for (int i = 2; i < argc; i++)
            args[i] = argv[i];
        rc = cli_tail(argc, args);
        free(args);
        return rc;
    }
    if (strcmp(argv[1], "replay") == 0)
        return replay(argc - 1, argv + 1);
    fprintf(stderr, "mesh-worker: unknown dlq command \"%s\"\n", argv[1]);
    return CLI_EXIT_USAGE;
}
