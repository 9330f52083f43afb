/*
 * The outbox relay.
 *
 * Leadership: a session advisory lock in PostgreSQL makes one replica's
 * relay the publisher; the others wait and take over within a second of
 * its connection closing (a crash closes it).  One publisher reading the
 * outbox in id order keeps the order of events per customer, which is the
 * order their transactions committed in.
 *
 * A round: read up to MESH_WORKER_RELAY_BATCH_SIZE unpublished rows,
 * produce them all, wait for every delivery report, mark the delivered
 * ones published.  The producer is idempotent with no message timeout, so
 * librdkafka retries in order for as long as Kafka is away.  A crash
 * between delivery and marking re-publishes the same rows: same event_id,
 * same bytes (they were encoded when the outcome was committed).
 *
 * Known limit: one publisher for the whole cluster.  It moves well over
 * 10,000 rows a second on one core; lanes by key hash would lift it.
 */
#include "relay.h"

#include "arena.h"
#include "kafka.h"
#include "log.h"
#include "metrics.h"
#include "store.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define IDLE_WAIT_MS 500
#define FOLLOWER_WAIT_MS 1000
#define MAINTENANCE_EVERY_MS 5000

struct relay {
    const struct mw_config *cfg;
    char *conninfo;
    rd_kafka_t *rk;
    pthread_t thread;
    int started;
    atomic_int draining;   /* publish what is committed, then stop */
    atomic_int stop_now;   /* stop at once */
    atomic_int finished;
    pthread_mutex_t lock;
    pthread_cond_t done;
};

/* Delivery status of one produced row: 0 pending, 1 delivered, -1 failed. */
struct delivery {
    int status;
};

static int64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *rkm,
                        void *opaque)
{
    struct delivery *d = rkm->_private;

    if (d == NULL)
        return;
    d->status = rkm->err == RD_KAFKA_RESP_ERR_NO_ERROR ? 1 : -1;
    if (rkm->err != RD_KAFKA_RESP_ERR_NO_ERROR)
        log_warn("relay", "delivery failed; the row stays in the outbox",
                 LF_STR("error", rd_kafka_err2str(rkm->err)));
}

struct relay *relay_new(const struct mw_config *cfg, const char *conninfo,
                        const char *bootstrap, struct mw_error *err)
{
    struct relay *r = calloc(1, sizeof(*r));
    rd_kafka_conf_t *conf = NULL;
    char errstr[512];

    if (r == NULL) {
        mw_error_set(err, MW_ERR_SYSTEM, false, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->done, NULL);
    r->cfg = cfg;
    r->conninfo = strdup(conninfo);
    conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, kafka_log);
    if (kafka_conf_set(conf, "bootstrap.servers", bootstrap, err) < 0 ||
        kafka_conf_set(conf, "enable.idempotence", "true", err) < 0 ||
        kafka_conf_set(conf, "acks", "all", err) < 0 ||
        kafka_conf_set(conf, "linger.ms", "2", err) < 0 ||
        kafka_conf_set(conf, "message.timeout.ms", "0", err) < 0 ||
        kafka_conf_set(conf, "partitioner", "murmur2_random", err) < 0 ||
        kafka_conf_set(conf, "compression.type", "lz4", err) < 0 ||
        kafka_conf_set(conf, "reconnect.backoff.max.ms", "1000", err) < 0 ||
        kafka_conf_set(conf, "client.id", "mesh-worker-relay", err) < 0)
        goto fail;
    for (size_t i = 0; i < cfg->kafka_props_count; i++) {
        if (kafka_conf_set(conf, cfg->kafka_props[i].name,
                           cfg->kafka_props[i].value, err) < 0)
            goto fail;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    r->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (r->rk == NULL) {
        mw_error_set(err, MW_ERR_CONFIG, false,
                     "could not create the Kafka producer");
        mw_error_detail(err, "%s", errstr);
        goto fail;
    }
    return r;
fail:
    if (conf != NULL && r->rk == NULL)
        rd_kafka_conf_destroy(conf);
    relay_destroy(r);
    return NULL;
}

/* Produces every row and waits for their reports; returns rows delivered. */
static size_t publish(struct relay *r, struct store_outbox_msg *msgs,
                      size_t count, struct delivery *dr, int64_t *ids)
{
    size_t delivered = 0, pending;

    for (size_t i = 0; i < count; i++) {
        const struct store_outbox_msg *m = &msgs[i];
        const char *topic = m->stream == STORE_STREAM_DLQ
                                ? r->cfg->topic_dlq
                                : r->cfg->topic_events;
        rd_kafka_headers_t *hdrs =
            kafka_headers_unpack(m->headers, m->headers_len);
        rd_kafka_resp_err_t kerr;

        dr[i].status = 0;
        for (;;) {
            kerr = rd_kafka_producev(
                r->rk, RD_KAFKA_V_TOPIC(topic),
                RD_KAFKA_V_KEY(m->key, m->key ? m->key_len : 0),
                RD_KAFKA_V_VALUE((void *)m->payload,
                                 m->payload ? m->payload_len : 0),
                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_OPAQUE(&dr[i]),
                RD_KAFKA_V_END);
            if (kerr != RD_KAFKA_RESP_ERR__QUEUE_FULL)
                break;
            rd_kafka_poll(r->rk, 10);
        }
        if (kerr != RD_KAFKA_RESP_ERR_NO_ERROR) {
            /* Headers are only taken on success. */
            if (hdrs != NULL)
                rd_kafka_headers_destroy(hdrs);
            dr[i].status = -1;
            log_warn("relay", "could not produce an outbox row",
                     LF_INT("outbox_id", m->id),
                     LF_STR("error", rd_kafka_err2str(kerr)));
        }
    }
    /* Wait for every report; a stop request waits no longer. */
    do {
        rd_kafka_poll(r->rk, 50);
        pending = 0;
        for (size_t i = 0; i < count; i++)
            pending += dr[i].status == 0;
    } while (pending > 0 && !atomic_load(&r->stop_now));
    for (size_t i = 0; i < count; i++) {
        if (dr[i].status == 1)
            ids[delivered++] = msgs[i].id;
    }
    return delivered;
}

static void maintenance(struct relay *r, struct store *store)
{
    struct mw_error err;
    int64_t count, age;

    if (store_outbox_backlog(store, &count, &age, &err) == 0) {
        atomic_store(&mw_metrics.outbox_backlog, count);
        atomic_store(&mw_metrics.outbox_oldest_age_ms, age);
    }
    if (store_outbox_purge(store, r->cfg->outbox_retention_ms, &err) < 0)
        log_warn("relay", "could not purge the outbox",
                 LF_STR("error", err.msg));
}

static void *relay_main(void *arg)
{
    struct relay *r = arg;
    struct store *store = NULL;
    struct mw_arena *arena = arena_new();
    size_t cap = (size_t)r->cfg->relay_batch_size;
    struct delivery *dr = calloc(cap, sizeof(*dr));
    int64_t *ids = calloc(cap, sizeof(*ids));
    int64_t next_maintenance = 0, backoff = 100;
    bool leader = false;
    struct mw_error err;

    while (!atomic_load(&r->stop_now)) {
        struct store_outbox_msg *msgs;
        size_t count, delivered;

        if (store == NULL) {
            store = store_new(r->conninfo, &err);
            if (store == NULL) {
                atomic_store(&mw_metrics.db_ready, 0);
                if (atomic_load(&r->draining))
                    break;
                log_warn("relay", "could not connect to PostgreSQL",
                         LF_STR("error", err.msg));
                struct timespec ts = {0, (long)backoff * 1000000};
                nanosleep(&ts, NULL);
                backoff = backoff * 2 > 5000 ? 5000 : backoff * 2;
                continue;
            }
            backoff = 100;
            leader = false;
        }
        if (!leader) {
            if (store_relay_lead(store, &leader, &err) < 0)
                goto db_error;
            atomic_store(&mw_metrics.db_ready, 1);
            if (!leader) {
                if (atomic_load(&r->draining))
                    break;
                struct timespec ts = {FOLLOWER_WAIT_MS / 1000, 0};
                nanosleep(&ts, NULL);
                continue;
            }
            log_info("relay", "this replica now publishes the outbox");
        }
        if (mono_ms() >= next_maintenance) {
            maintenance(r, store);
            next_maintenance = mono_ms() + MAINTENANCE_EVERY_MS;
        }
        arena_reset(arena);
        if (store_outbox_fetch(store, cap, arena, &msgs, &count, &err) < 0)
            goto db_error;
        atomic_store(&mw_metrics.db_ready, 1);
        if (count == 0) {
            if (atomic_load(&r->draining))
                break;
            if (store_outbox_wait(store, IDLE_WAIT_MS, &err) < 0)
                goto db_error;
            continue;
        }
        delivered = publish(r, msgs, count, dr, ids);
        if (delivered > 0 &&
            store_outbox_mark_published(store, ids, delivered,
                                        r->cfg->outbox_retention_ms > 0,
                                        &err) < 0)
            goto db_error;
        atomic_fetch_add(&mw_metrics.published, (long long)delivered);
        continue;
    db_error:
        atomic_store(&mw_metrics.db_ready, 0);
        log_warn("relay", "database error; reconnecting",
                 LF_STR("error", err.msg), LF_STR("detail", err.detail));
        store_destroy(store);
        store = NULL;
        leader = false;
    }
    /* Reports of rows still in flight point into dr: settle them first. */
    rd_kafka_purge(r->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_flush(r->rk, 1000);
    store_destroy(store);
    arena_destroy(arena);
    free(dr);
    free(ids);
    pthread_mutex_lock(&r->lock);
    atomic_store(&r->finished, 1);
    pthread_cond_broadcast(&r->done);
    pthread_mutex_unlock(&r->lock);
    return NULL;
}

int relay_start(struct relay *r, struct mw_error *err)
{
    if (pthread_create(&r->thread, NULL, relay_main, r) != 0) {
        mw_error_set(err, MW_ERR_SYSTEM, false,
                     "could not start the relay thread");
        return -1;
    }
    r->started = 1;
    return 0;
}

void relay_stop(struct relay *r, int64_t timeout_ms)
{
    struct timespec deadline;

    if (r == NULL || !r->started)
        return;
    atomic_store(&r->draining, 1);
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (timeout_ms % 1000) * 1000000;
    if (deadline.tv_nsec >= 1000000000) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&r->lock);
    while (!atomic_load(&r->finished)) {
        if (pthread_cond_timedwait(&r->done, &r->lock, &deadline) != 0)
            break;
    }
    pthread_mutex_unlock(&r->lock);
    atomic_store(&r->stop_now, 1);
    pthread_join(r->thread, NULL);
    r->started = 0;
}

void relay_destroy(struct relay *r)
{
    if (r == NULL)
        return;
    relay_stop(r, 0);
    if (r->rk != NULL) {
        rd_kafka_purge(r->rk, RD_KAFKA_PURGE_F_QUEUE |
                                  RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_flush(r->rk, 1000);
        rd_kafka_destroy(r->rk);
    }
    pthread_mutex_destroy(&r->lock);
    pthread_cond_destroy(&r->done);
    free(r->conninfo);
    free(r);
}
