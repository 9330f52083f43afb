/*
 * `mesh-worker tail` (and `dlq list`): prints a topic from the beginning
 * as JSON lines, with the value decoded when it decodes and in hex when
 * not.  It reads without a committed position (every run starts at the
 * beginning), so it never moves the worker's consumer group.
 */
#include "cli_internal.h"

#include "arena.h"
#include "convert.h"
#include "mw.h"

#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Adds the message's headers to obj as strings (invalid UTF-8 as hex). */
static void headers_to_json(const rd_kafka_message_t *rkm, json_t *obj)
{
    rd_kafka_headers_t *hdrs;
    const char *name;
    const void *value;
    size_t len;
    json_t *h = json_object();

    if (rd_kafka_message_headers(rkm, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        for (size_t i = 0;
             rd_kafka_header_get_all(hdrs, i, &name, &value, &len) == 0; i++) {
            json_object_set_new(h, name,
                                value ? json_stringn(value, len) : json_null());
        }
    }
    json_object_set_new(obj, "headers", h);
}

static json_t *bytes_to_hex(const void *buf, size_t len)
{
    char *s = malloc(len * 2 + 1);
    json_t *j;

    if (s == NULL)
        return json_null();
    mw_hex_encode(buf, len, s);
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

/* When tail stops; see its help. */
struct tail_limits {
    bool is_dlq;
    bool is_follow;
    long max;
    int64_t timeout_ms;
    int partitions;
};

/* Prints messages until a limit is reached; returns the exit status. */
static int print_messages(rd_kafka_t *rk, struct codec *codec,
                          struct mw_arena *arena,
                          const struct tail_limits *limits)
{
    int64_t deadline = limits->timeout_ms >= 0
                           ? mw_monotonic_ms() + limits->timeout_ms
                           : INT64_MAX;
    long seen = 0;
    int eof_count = 0;

    while (limits->max < 0 || seen < limits->max) {
        rd_kafka_message_t *m;

        if (mw_monotonic_ms() > deadline)
            return limits->max >= 0 ? CLI_EXIT_FAILURE : CLI_EXIT_OK;
        m = rd_kafka_consumer_poll(rk, 200);
        if (m == NULL)
            continue;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            rd_kafka_message_destroy(m);
            eof_count++;
            if (!limits->is_follow && limits->max < 0 &&
                eof_count >= limits->partitions)
                break;
            continue;
        }
        if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            fprintf(stderr, "mesh-worker: %s\n", rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            continue;
        }
        print_message(m, codec, arena, limits->is_dlq);
        rd_kafka_message_destroy(m);
        seen++;
    }
    return CLI_EXIT_OK;
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
    /* Reads from the beginning every time and commits nothing. */
    static const char *const forced[] = {
        "enable.partition.eof", "true",  "group.id", "mesh-worker-tail",
        "enable.auto.commit",   "false", NULL};
    struct mw_config cfg;
    struct tail_limits limits = {.max = -1, .timeout_ms = -1};
    const char *bootstrap_opt = NULL, *topic = NULL, *bootstrap;
    long long number;
    int rc, opt;
    struct codec *codec = NULL;
    struct registry *registry = NULL;
    struct mw_arena *arena = NULL;
    rd_kafka_t *rk = NULL;
    rd_kafka_conf_t *conf;
    struct mw_error err;

    optind = 1;
    while ((opt = getopt_long(argc, argv, "b:dfn:T:t:h", options, NULL)) !=
           -1) {
        switch (opt) {
        case 'b':
            bootstrap_opt = optarg;
            break;
        case 'd':
            limits.is_dlq = true;
            break;
        case 'f':
            limits.is_follow = true;
            break;
        case 'n':
            if (cli_parse_integer("--max", optarg, 0, LONG_MAX, &number) != 0)
                return CLI_EXIT_USAGE;
            limits.max = (long)number;
            break;
        case 'T':
            if (config_parse_duration(optarg, &limits.timeout_ms) < 0) {
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
    rc = cli_load_tool_config(&cfg, bootstrap_opt, &bootstrap);
    if (rc != 0)
        return rc;
    if (topic == NULL)
        topic = limits.is_dlq ? cfg.topic_dlq : cfg.topic_events;
    mw_error_clear(&err);
    if (cli_codec_new(&cfg, NULL, NULL, &codec, &registry, &err) < 0) {
        rc = cli_fail(&err);
        goto done;
    }
    arena = arena_new();
    conf = cli_kafka_conf(&cfg, bootstrap, CONFIG_KAFKA_CONSUMER, forced);
    if (arena == NULL || conf == NULL) {
        if (conf != NULL)
            rd_kafka_conf_destroy(conf);
        rc = arena == NULL ? CLI_EXIT_FAILURE : CLI_EXIT_USAGE;
        goto done;
    }
    rk = cli_kafka_new(RD_KAFKA_CONSUMER, conf);
    if (rk == NULL) {
        rc = CLI_EXIT_USAGE;
        goto done;
    }
    limits.partitions = cli_assign_topic(rk, topic, RD_KAFKA_OFFSET_BEGINNING);
    if (limits.partitions < 0) {
        rc = CLI_EXIT_FAILURE;
        goto done;
    }
    rc = print_messages(rk, codec, arena, &limits);
done:
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
