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
 * produce those not already in flight, then mark published the rows whose
 * delivery reports came, and wait for the next notification.  Rows stay
 * in flight across rounds: a round never waits for the reports of the one
 * before, so an event is not held up by the acknowledgements of others.
 * The producer is idempotent with no message timeout, so librdkafka keeps
 * the produce order per partition and retries in order for as long as
 * Kafka is away.  A row is marked only after its report said delivered; a
 * crash between delivery and marking re-publishes the same rows: same
 * event_id, same bytes (they were encoded when the outcome was committed).
 *
 * The window of rows in flight holds at most MESH_WORKER_RELAY_BATCH_SIZE
 * rows.  Once more than half of it is taken, or a delivery failed, the
 * relay waits for every report before it produces again, as a round did
 * before rows could stay in flight: a failed row is read again only after
 * the rows produced with it settled, and a slow broker costs re-reading
 * at most half a window a round.
 *
 * Known limit: one publisher for the whole cluster.  It moves well over
 * 10,000 rows a second on one core; lanes by key hash would lift it.
 */
#include "relay.h"

#include "arena.h"
#include "kafka.h"
#include "log.h"
#include "metrics.h"
#include "mw.h"
#include "relay_lead.h"
#include "relay_txn.h"
#include "store.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define IDLE_WAIT_MS 500
#define FLIGHT_WAIT_MS 10 /* longest wait with rows in flight */
#define SETTLE_POLL_MS 50
#define DENIED_WAIT_MS 1000 /* between rounds while an ACL is missing */

/* Where a produced row stands; its slot is free again once settled. */
enum flight_state {
    FLIGHT_FREE,
    FLIGHT_SENT,      /* produced, no report yet */
    FLIGHT_DELIVERED, /* acknowledged, not yet marked published */
    FLIGHT_FAILED     /* the report said failed: the row stays unpublished */
};

/* One outbox row, from its produce call until it is marked or given up. */
struct flight {
    int64_t id;
    enum flight_state state;
};

/*
 * The rows in flight.  Delivery reports point into slots, so the window
 * lives as long as the producer.  Only the relay thread touches it (the
 * reports are served by its rd_kafka_poll calls), or relay_destroy once
 * that thread is gone.
 */
struct window {
    struct flight *slots;
    size_t cap;
    size_t *free; /* stack of free slot indexes */
    size_t free_count;
    size_t sent_count;  /* slots in FLIGHT_SENT */
    bool is_failed;     /* a report said failed since the last settle */
    int64_t *taken_ids; /* ids of slots not free, sorted, for lookups */
    size_t taken_count;
    int64_t *mark_ids;  /* ids to mark published */
    size_t *mark_slots; /* and their slots */
};

struct relay {
    const struct mw_config *cfg;
    char *conninfo;
    rd_kafka_t *rk;
    struct relay_txn *txn; /* MESH_WORKER_DELIVERY=exactly-once, or NULL */
    struct window window;
    pthread_t thread;
    int started;
    atomic_int draining; /* publish what is committed, then stop */
    atomic_int stop_now; /* stop at once */
    atomic_int finished;
    pthread_mutex_t lock;
    pthread_cond_t done;
};

/* Allocates a window of cap free slots.  Returns 0, or -1 out of memory. */
static int window_init(struct window *w, size_t cap)
{
    memset(w, 0, sizeof(*w));
    w->cap = cap;
    w->slots = calloc(cap, sizeof(*w->slots));
    w->free = calloc(cap, sizeof(*w->free));
    w->taken_ids = calloc(cap, sizeof(*w->taken_ids));
    w->mark_ids = calloc(cap, sizeof(*w->mark_ids));
    w->mark_slots = calloc(cap, sizeof(*w->mark_slots));
    if (w->slots == NULL || w->free == NULL || w->taken_ids == NULL ||
        w->mark_ids == NULL || w->mark_slots == NULL)
        return -1;
    for (size_t i = 0; i < cap; i++)
        w->free[w->free_count++] = cap - 1 - i;
    return 0;
}

static void window_free(struct window *w)
{
    free(w->slots);
    free(w->free);
    free(w->taken_ids);
    free(w->mark_ids);
    free(w->mark_slots);
}

static void window_release(struct window *w, size_t slot)
{
    w->slots[slot].state = FLIGHT_FREE;
    w->free[w->free_count++] = slot;
}

/* Frees the slots of failed rows: the next read returns them again. */
static void window_release_failed(struct window *w)
{
    for (size_t i = 0; i < w->cap; i++) {
        if (w->slots[i].state == FLIGHT_FAILED)
            window_release(w, i);
    }
    w->is_failed = false;
}

static int compare_ids(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return (x > y) - (x < y);
}

/* Collects the ids of every slot not free, sorted, for window_has. */
static void window_index(struct window *w)
{
    w->taken_count = 0;
    for (size_t i = 0; i < w->cap; i++) {
        if (w->slots[i].state != FLIGHT_FREE)
            w->taken_ids[w->taken_count++] = w->slots[i].id;
    }
    qsort(w->taken_ids, w->taken_count, sizeof(*w->taken_ids), compare_ids);
}

/* Whether row id is in flight or waits for its mark (as of window_index). */
static bool window_has(const struct window *w, int64_t id)
{
    return bsearch(&id, w->taken_ids, w->taken_count, sizeof(id),
                   compare_ids) != NULL;
}

/*
 * Kafka refused a write to topic for want of an ACL: said once (until a
 * write to it succeeds again) and shown by /readyz; the rows stay in the
 * outbox.  The relay only ever writes, so the operation is Write.
 */
static void note_denied(const char *topic)
{
    if (atomic_exchange(&mw_metrics.write_denied_topic, topic) != topic)
        log_error("relay",
                  "Kafka denies this worker Write on a topic; its events "
                  "stay in the outbox until an ACL allows it",
                  LF_STR("topic", topic), LF_STR("operation", "Write"),
                  LF_STR("error", "TOPIC_AUTHORIZATION_FAILED"));
}

static void note_written(const char *topic)
{
    const char *denied = topic;

    if (atomic_compare_exchange_strong(&mw_metrics.write_denied_topic, &denied,
                                       NULL))
        log_info("relay", "Kafka accepts writes to the topic again",
                 LF_STR("topic", topic));
}

/* The configured name (a pointer into the config) of a report's topic. */
static const char *report_topic(const struct relay *r,
                                const rd_kafka_message_t *rkm)
{
    return strcmp(rd_kafka_topic_name(rkm->rkt), r->cfg->topic_dlq) == 0
               ? r->cfg->topic_dlq
               : r->cfg->topic_events;
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *rkm,
                        void *opaque)
{
    struct relay *r = opaque;
    struct flight *f = rkm->_private;

    if (f == NULL || f->state != FLIGHT_SENT)
        return;
    r->window.sent_count--;
    if (rkm->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        f->state = FLIGHT_DELIVERED;
        if (atomic_load(&mw_metrics.write_denied_topic) != NULL)
            note_written(report_topic(r, rkm));
        return;
    }
    f->state = FLIGHT_FAILED;
    r->window.is_failed = true;
    if (rkm->err == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED) {
        note_denied(report_topic(r, rkm));
        return;
    }
    log_warn("relay", "delivery failed; the row stays in the outbox",
             LF_INT("outbox_id", f->id),
             LF_STR("error", rd_kafka_err2str(rkm->err)));
}

struct relay *relay_new(const struct mw_config *cfg, const char *conninfo,
                        const char *bootstrap, struct mw_error *err)
{
    struct relay *r = calloc(1, sizeof(*r));
    rd_kafka_conf_t *conf = NULL;
    char errstr[512];

    if (r == NULL) {
        mw_error_no_memory(err);
        return NULL;
    }
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->done, NULL);
    r->cfg = cfg;
    r->conninfo = strdup(conninfo);
    if (r->conninfo == NULL ||
        window_init(&r->window, (size_t)cfg->relay_batch_size) < 0) {
        mw_error_no_memory(err);
        goto fail;
    }
    {
        /* A round is produced at once: waiting for more rows to come
         * only delays the first ones.  Without Nagle's algorithm a
         * request does not wait for the broker to acknowledge the one
         * before it.  The codec is part of the events' contract.  gzip
         * at level 1 cost 3.0 microseconds an event more than none, at
         * its default level 6 8.0, for 143 and 133 bytes an event
         * against 475 (bench/events_codec.py).  A dead letter is the
         * consumed value unchanged, and the consumer reads values up to
         * its receive.message.max.bytes (100 MB), so the producer must
         * not refuse what the consumer accepted: the broker's
         * max.message.bytes of the DLQ topic is the limit. */
        bool is_gzip = strcmp(cfg->events_compression, "gzip") == 0;
        const char *const defaults[] = {"enable.idempotence",
                                        "true",
                                        "acks",
                                        "all",
                                        "linger.ms",
                                        "0",
                                        "socket.nagle.disable",
                                        "true",
                                        "message.timeout.ms",
                                        "0",
                                        "partitioner",
                                        "murmur2_random",
                                        "compression.codec",
                                        cfg->events_compression,
                                        "compression.level",
                                        is_gzip ? "1" : "-1",
                                        "message.max.bytes",
                                        "100000000",
                                        "client.id",
                                        "mesh-worker-relay",
                                        NULL};

        conf = kafka_conf_new(cfg, bootstrap, CONFIG_KAFKA_PRODUCER, defaults,
                              err);
        if (conf == NULL)
            goto fail;
    }
    if (cfg->is_exactly_once) {
        /* The transactional relay (relay_txn.c) takes the producer's
         * configuration over. */
        r->txn = relay_txn_new(cfg, conninfo, bootstrap, conf, err);
        conf = NULL;
        if (r->txn == NULL)
            goto fail;
        return r;
    }
    rd_kafka_conf_set_opaque(conf, r);
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

/* Produces one row into a free slot; a refused row is failed at once. */
static void produce_row(struct relay *r, const struct store_outbox_msg *m)
{
    struct window *w = &r->window;
    size_t slot = w->free[--w->free_count];
    struct flight *f = &w->slots[slot];
    const char *topic = m->stream == STORE_STREAM_DLQ ? r->cfg->topic_dlq
                                                      : r->cfg->topic_events;
    rd_kafka_headers_t *hdrs = kafka_headers_unpack(m->headers, m->headers_len);
    rd_kafka_resp_err_t kerr;

    f->id = m->id;
    f->state = FLIGHT_SENT;
    w->sent_count++;
    kerr = kafka_produce(r->rk, topic, m->key, m->key_len, m->payload,
                         m->payload_len, hdrs, f);
    if (kerr != RD_KAFKA_RESP_ERR_NO_ERROR) {
        w->sent_count--;
        f->state = FLIGHT_FAILED;
        w->is_failed = true;
        if (kerr == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED) {
            note_denied(topic);
            return;
        }
        log_warn("relay", "could not produce an outbox row",
                 LF_INT("outbox_id", m->id),
                 LF_STR("error", rd_kafka_err2str(kerr)));
    }
}

/*
 * Produces the rows of msgs that are not in the window yet, in their
 * order, while slots are free.  Returns how many were new; *left says how
 * many of them found no free slot.
 */
static size_t publish(struct relay *r, const struct store_outbox_msg *msgs,
                      size_t count, size_t *left)
{
    struct window *w = &r->window;
    size_t fresh = 0;

    *left = 0;
    window_index(w);
    for (size_t i = 0; i < count; i++) {
        if (window_has(w, msgs[i].id))
            continue;
        fresh++;
        if (w->free_count > 0)
            produce_row(r, &msgs[i]);
        else
            (*left)++;
    }
    return fresh;
}

/* Marks the delivered rows published and frees their slots; 0, or -1. */
static int mark_delivered(struct relay *r, struct store *store,
                          struct mw_error *err)
{
    struct window *w = &r->window;
    size_t count = 0;

    for (size_t i = 0; i < w->cap; i++) {
        if (w->slots[i].state == FLIGHT_DELIVERED) {
            w->mark_ids[count] = w->slots[i].id;
            w->mark_slots[count++] = i;
        }
    }
    if (count == 0)
        return 0;
    if (store_outbox_mark_published(store, w->mark_ids, count,
                                    r->cfg->outbox_retention_ms > 0, err) < 0)
        return -1;
    for (size_t i = 0; i < count; i++)
        window_release(w, w->mark_slots[i]);
    atomic_fetch_add(&mw_metrics.published, (long long)count);
    return 0;
}

/*
 * Waits for the report of every row in flight (a stop waits no longer),
 * gives the failed rows back to the outbox and marks the delivered ones.
 * After a failure it pauses, so that a row Kafka keeps refusing is not
 * tried again in a tight loop.  Returns 0, or -1 with err.
 */
static int settle(struct relay *r, struct store *store, struct mw_error *err)
{
    struct window *w = &r->window;
    bool is_failed;

    while (w->sent_count > 0 && !atomic_load(&r->stop_now))
        rd_kafka_poll(r->rk, SETTLE_POLL_MS);
    is_failed = w->is_failed;
    window_release_failed(w);
    if (mark_delivered(r, store, err) < 0)
        return -1;
    if (is_failed)
        rd_kafka_poll(r->rk, atomic_load(&mw_metrics.write_denied_topic)
                                 ? DENIED_WAIT_MS
                                 : SETTLE_POLL_MS);
    return 0;
}

static void publish_at_least_once(struct relay *r)
{
    struct window *w = &r->window;
    struct relay_lead lead;
    struct mw_arena *arena = arena_new();
    size_t cap = w->cap;
    int64_t fetched_at = 0;
    bool is_due = true;
    struct mw_error err;

    relay_lead_init(&lead, r->cfg, r->conninfo, &r->draining, &r->stop_now);
    while (!atomic_load(&r->stop_now)) {
        struct store_outbox_msg *msgs;
        size_t count, fresh, left;
        bool is_fetched;
        int wait_ms, notified;

        switch (relay_lead_step(&lead)) {
        case RELAY_LEAD_STOP:
            goto stop;
        case RELAY_LEAD_WAITED:
            continue;
        case RELAY_LEAD_TAKEN:
            log_info("relay", "this replica now publishes the outbox");
            is_due = true;
            break;
        case RELAY_LEAD_HELD:
            break;
        }
        rd_kafka_poll(r->rk, 0);
        if (w->is_failed || w->free_count < cap - cap / 2) {
            if (settle(r, lead.store, &err) < 0)
                goto db_error;
            if (atomic_load(&r->stop_now))
                break;
            is_due = true;
        }
        /* Without a notification, a wake-up with rows in flight is for
         * their reports: reading the outbox would find nothing new. */
        is_fetched = is_due || atomic_load(&r->draining);
        count = fresh = left = 0;
        if (is_fetched) {
            arena_reset(arena);
            if (store_outbox_fetch(lead.store, cap, arena, &msgs, &count,
                                   &err) < 0)
                goto db_error;
            atomic_store(&mw_metrics.db_ready, 1);
            fetched_at = mw_monotonic_ms();
            fresh = publish(r, msgs, count, &left);
        }
        /* Marking waits for the round's rows, not they for marking. */
        if (mark_delivered(r, lead.store, &err) < 0)
            goto db_error;
        if (is_fetched && fresh == 0 && w->free_count == cap &&
            atomic_load(&r->draining))
            break;
        if (is_fetched && (left > 0 || (count == cap && fresh > 0)))
            continue; /* more rows are waiting */
        wait_ms = w->free_count < cap ? FLIGHT_WAIT_MS : IDLE_WAIT_MS;
        notified = store_outbox_wait(lead.store, wait_ms, &err);
        if (notified < 0)
            goto db_error;
        is_due =
            notified == 1 || mw_monotonic_ms() - fetched_at >= IDLE_WAIT_MS;
        continue;
    db_error:
        relay_lead_lost(&lead, &err);
    }
stop:
    /* Rows still in flight stay in the outbox for the next leader. */
    rd_kafka_purge(r->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_flush(r->rk, 1000);
    relay_lead_release(&lead);
    arena_destroy(arena);
}

static void *relay_main(void *arg)
{
    struct relay *r = arg;

    if (r->txn != NULL)
        relay_txn_run(r->txn, &r->draining, &r->stop_now);
    else
        publish_at_least_once(r);
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
    relay_txn_destroy(r->txn);
    if (r->rk != NULL) {
        rd_kafka_purge(r->rk,
                       RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_flush(r->rk, 1000);
        rd_kafka_destroy(r->rk);
    }
    /* After the producer: a late report would point into the window. */
    window_free(&r->window);
    pthread_mutex_destroy(&r->lock);
    pthread_cond_destroy(&r->done);
    free(r->conninfo);
    free(r);
}
