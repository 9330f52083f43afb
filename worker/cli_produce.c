/*
 * `mesh-worker produce`: publishes requests read as JSON (one object, an
 * array of them, or one a line) Avro-encoded to the requests topic, keyed
 * by msp_id, each with a new traceparent.  For demos and operators: it
 * stops at the first input that is not a request, and says which.  A
 * request is printed once Kafka has it, never before.
 */
#include "cli_internal.h"

#include "arena.h"
#include "convert.h"
#include "kafka.h"
#include "mw.h"

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uuid/uuid.h>

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
    uuid_t trace, span;
    char trace_hex[2 * sizeof(trace) + 1], span_hex[17];

    uuid_generate_random(trace);
    uuid_generate_random(span);
    mw_hex_encode(trace, sizeof(trace), trace_hex);
    mw_hex_encode(span, 8, span_hex);
    snprintf(out, 56, "00-%s-%s-01", trace_hex, span_hex);
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
          : rec.type == MW_REC_CUSTOMER_UPDATE_REQUESTED ? rec.u.update.msp_id
                                                         : rec.u.request.msp_id;
    new_traceparent(traceparent);
    do {
        kerr = rd_kafka_producev(
            ctx->rk, RD_KAFKA_V_TOPIC(ctx->topic),
            RD_KAFKA_V_KEY(key, strlen(key)),
            RD_KAFKA_V_VALUE((void *)bytes, len),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_HEADER("traceparent", traceparent, -1), RD_KAFKA_V_END);
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
static int produce_text(struct producer_ctx *ctx, const char *text, size_t len,
                        const char *source)
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
        value =
            json_loadb(text + pos, len - pos,
                       JSON_DISABLE_EOF_CHECK | JSON_REJECT_DUPLICATES, &jerr);
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
    /* Each request once, and spread over partitions as the Java
     * producer does, whatever the variables say. */
    static const char *const forced[] = {"enable.idempotence", "true",
                                         "partitioner", "murmur2_random", NULL};
    struct mw_config cfg;
    struct producer_ctx ctx = {0};
    const char *bootstrap_opt = NULL, *topic_opt = NULL, *bootstrap;
    struct mw_error err;
    rd_kafka_conf_t *conf;
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
                   "\"CustomerTerminationRequested\" selects a termination, "
                   "\"CustomerUpdateRequested\"\nan update. "
                   "Each is published Avro-encoded to "
                   "MESH_WORKER_TOPIC_REQUESTS with key = msp_id and a new\n"
                   "traceparent header; one JSON line per request is printed "
                   "once Kafka has it.\n\nExit status: 0 all published, 1 "
                   "Kafka failed, 2 bad usage, 3 bad input.\n");
            return CLI_EXIT_OK;
        default:
            return CLI_EXIT_USAGE;
        }
    }
    rc = cli_load_tool_config(&cfg, bootstrap_opt, &bootstrap);
    if (rc != 0)
        return rc;
    mw_error_clear(&err);
    ctx.topic = topic_opt ? topic_opt : cfg.topic_requests;
    if (cli_codec_new(&cfg, ctx.topic, NULL, &ctx.codec, &ctx.registry, &err) <
        0) {
        rc = cli_fail(&err);
        goto done;
    }
    ctx.arena = arena_new();
    conf = cli_kafka_conf(&cfg, bootstrap, CONFIG_KAFKA_PRODUCER, forced);
    if (ctx.arena == NULL || conf == NULL) {
        if (conf != NULL)
            rd_kafka_conf_destroy(conf);
        rc = ctx.arena == NULL ? CLI_EXIT_FAILURE : CLI_EXIT_USAGE;
        goto done;
    }
    rd_kafka_conf_set_opaque(conf, &ctx);
    rd_kafka_conf_set_dr_msg_cb(conf, on_produced);
    ctx.rk = cli_kafka_new(RD_KAFKA_PRODUCER, conf);
    if (ctx.rk == NULL) {
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
            fprintf(stderr, "mesh-worker: could not open \"%s\": %s\n", argv[i],
                    strerror(errno));
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
