/*
 * The outcome collector: a thread that reads an events topic and counts,
 * per request index, the first event of the wanted type and when it came.
 * A figure is only reported when every index arrived exactly once.
 */
#include "bench.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

static int64_t wall_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* The latency phase's stamps of event m for request index. */
static void stamp_legs(struct collector *c, const rd_kafka_message_t *m,
                       long index)
{
    rd_kafka_timestamp_type_t type;
    struct mw_record rec;
    struct mw_error err;

    c->received_wall_us[index] = wall_us();
    c->relay_ms[index] = rd_kafka_message_timestamp(m, &type);
    arena_reset(c->arena);
    mw_error_clear(&err);
    if (codec_decode(c->codec, m->payload, m->len, c->arena, &rec, &err) ==
            CODEC_OK &&
        rec.type == MW_REC_CUSTOMER_CREATED)
        c->worker_ms[index] = rec.u.created.occurred_at;
}

static void collect_one(struct collector *c, const rd_kafka_message_t *m)
{
    rd_kafka_headers_t *hdrs = NULL;
    const void *type = NULL, *id = NULL;
    size_t type_len = 0, id_len = 0;
    long index;
    int64_t t = mw_monotonic_ns();

    if (rd_kafka_message_headers(m, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        rd_kafka_header_get_last(hdrs, "event_type", &type, &type_len) !=
            RD_KAFKA_RESP_ERR_NO_ERROR ||
        rd_kafka_header_get_last(hdrs, "request_id", &id, &id_len) !=
            RD_KAFKA_RESP_ERR_NO_ERROR ||
        type == NULL || id == NULL)
        return;
    index = index_of(c->b, c->phase, id, id_len);
    if (index < 0 || index >= c->n)
        return;
    if (type_len == strlen("CustomerRejected") &&
        memcmp(type, "CustomerRejected", type_len) == 0) {
        atomic_fetch_add(&c->rejected, 1);
        return;
    }
    if (type_len != strlen(c->want) || memcmp(type, c->want, type_len) != 0)
        return;
    if (c->seen[index]) {
        atomic_fetch_add(&c->duplicates, 1);
        return;
    }
    c->seen[index] = 1;
    c->received_ns[index] = t;
    if (c->relay_ms != NULL)
        stamp_legs(c, m, index);
    if (atomic_load(&c->first_ns) == 0)
        atomic_store(&c->first_ns, t);
    atomic_store(&c->last_ns, t);
    atomic_fetch_add(&c->distinct, 1);
}

static void *collector_main(void *arg)
{
    struct collector *c = arg;

    while (!atomic_load(&c->stop)) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c->rk, 100);

        if (m == NULL)
            continue;
        if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR)
            collect_one(c, m);
        rd_kafka_message_destroy(m);
    }
    return NULL;
}

struct collector *collector_start(const struct bench *b, enum phase phase,
                                  const char *topic, const char *want, long n)
{
    struct collector *c = xcalloc(1, sizeof(*c));

    c->b = b;
    c->phase = phase;
    c->topic = topic;
    c->want = want;
    c->n = n;
    c->seen = xcalloc((size_t)n, 1);
    c->received_ns = xcalloc((size_t)n, sizeof(*c->received_ns));
    if (phase == PHASE_LATENCY) {
        struct mw_error err;

        c->relay_ms = xcalloc((size_t)n, sizeof(*c->relay_ms));
        c->worker_ms = xcalloc((size_t)n, sizeof(*c->worker_ms));
        c->received_wall_us = xcalloc((size_t)n, sizeof(*c->received_wall_us));
        c->codec = codec_new(&err);
        c->arena = arena_new();
        if (c->codec == NULL || c->arena == NULL) {
            say("could not set up the collector's codec: %s", err.msg);
            exit(1);
        }
    }
    /*
     * The latency run measures arrival: a collector that fetches every
     * 10 ms from the mock would add up to 10 ms of its own to each
     * request.  A broker answers a waiting fetch as soon as data comes,
     * so there the collector waits long and costs the broker little.
     */
    c->rk = !b->is_mock              ? consumer_new_waiting(b, topic, "500")
            : phase == PHASE_LATENCY ? consumer_new_waiting(b, topic, "1")
                                     : consumer_new(b, topic);
    if (pthread_create(&c->thread, NULL, collector_main, c) != 0) {
        say("could not start a thread");
        exit(1);
    }
    return c;
}

void collector_stop(struct collector *c)
{
    if (c == NULL)
        return;
    atomic_store(&c->stop, 1);
    pthread_join(c->thread, NULL);
    rd_kafka_consumer_close(c->rk);
    rd_kafka_destroy(c->rk);
    free(c->seen);
    free(c->received_ns);
    free(c->relay_ms);
    free(c->worker_ms);
    free(c->received_wall_us);
    codec_destroy(c->codec);
    arena_destroy(c->arena);
    free(c);
}

/*
 * Waits until want distinct outcomes arrived, or none arrived for
 * STALL_NS.  Returns 0 when all did.
 */
int collector_wait(struct collector *c, long want)
{
    long last = -1;
    int64_t progress = mw_monotonic_ns();

    for (;;) {
        long got = atomic_load(&c->distinct);

        if (got >= want)
            return 0;
        if (got != last) {
            last = got;
            progress = mw_monotonic_ns();
        } else if (mw_monotonic_ns() - progress > STALL_NS) {
            say("stalled: %ld of %ld outcomes after %.0f s without progress",
                got, want, seconds(STALL_NS));
            return -1;
        }
        mw_sleep_ms(20);
    }
}
