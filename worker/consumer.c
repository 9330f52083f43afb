/*
 * The consumer group on customer.requests.
 *
 * One thread polls, cuts a batch (up to MESH_WORKER_BATCH_SIZE messages,
 * waiting at most MESH_WORKER_BATCH_WAIT once the first has arrived),
 * prepares it (decodes and validates, process_prepare) and hands it to
 * the committer, a thread of its own that claims and commits it
 * (process_commit); only when that returned 0 are the offsets stored and
 * committed.  While one batch is in the database the next is polled and
 * prepared: two slots, each with its own process buffers, take turns.
 * Batches are committed one at a time, in the order polled.  Rebalance
 * callbacks run inside poll: a revocation first waits for the batch in
 * the database, so a batch is always finished before its partitions are
 * given up.
 *
 * Offsets are stored after every batch and committed at most every
 * COMMIT_INTERVAL_MS (and at once when partitions are revoked or the
 * worker stops): a commit is a round trip to the group coordinator, and
 * one per batch delayed the next batch.  Offsets are only ever stored
 * after their batch's transaction committed, so a crash before the
 * commit means a redelivery, which is idempotent.
 *
 * When a batch fails, nothing of it is committed: every partition is
 * paused and rewound to the batch's first offset, and the batch is tried
 * again once the database answers.  Messages that arrive while paused are
 * rewound too.  So a message is never skipped, only delayed.
 */
#include "consumer.h"

#include "arena.h"
#include "job_thread.h"
#include "kafka.h"
#include "log.h"
#include "metrics.h"
#include "mw.h"
#include "store.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define POLL_MS 100
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define COMMIT_INTERVAL_MS 100

/* A batch: polled and prepared, then in the database, then done. */
struct slot {
    struct process *process; /* slot 0's is the caller's, slot 1's a twin */
    rd_kafka_message_t **batch;
    struct process_msg *msgs;
    struct mw_arena *arena; /* the msgs' headers and traceparents */
    size_t n;
    int64_t started;   /* monotonic ms when polled */
    int64_t committed; /* monotonic ms when process_commit returned */
    /* Written by the committer, read once it said done. */
    int rc;
    struct mw_error err;
    struct process_stats stats;
};

struct consumer {
    const struct mw_config *cfg;
    rd_kafka_t *rk;
    struct slot slots[2];
    int next;             /* the slot the next batch is polled into */
    int paused;           /* processing failed: every partition is held */
    int joined;           /* the group gave us an assignment (maybe empty) */
    int brokers_up;       /* the last statistics saw a broker up */
    int is_commit_due;    /* offsets stored since the last commit */
    int64_t committed_at; /* monotonic ms of the last commit */
    int64_t backoff;      /* before the next try of a failed batch */
    int64_t retry_at;
    /* Kafka refused our credentials before we ever joined: start-up
     * stops, with librdkafka's reason (which holds no secret). */
    int is_refused;
    char refusal[256];
    /* Runs process_commit for the slot in the database. */
    struct job_thread *committer;
    /* A batch that failed while a revocation waited for it: the poll
     * loop holds it once poll returns. */
    struct slot *failed;
};

static void update_kafka_ready(const struct consumer *c)
{
    atomic_store(&mw_metrics.kafka_ready, c->joined && c->brokers_up);
}

static void store_batch_offsets(struct consumer *c, const struct slot *s);
static void destroy_batch(struct slot *s);

/* The committer's job: claims, encodes and commits a prepared slot. */
static void commit_slot(void *arg)
{
    struct slot *s = arg;

    mw_error_clear(&s->err);
    s->rc = process_commit(s->process, s->msgs, s->n, &s->stats, &s->err);
    s->committed = mw_monotonic_ms();
}

/*
 * Waits for the batch in the database, if any.  A committed one has its
 * offsets stored and its messages freed; a failed one is left in
 * c->failed for the poll loop, nothing of it stored.
 */
static void settle(struct consumer *c)
{
    struct slot *s = job_thread_wait(c->committer);

    if (s == NULL)
        return;
    if (s->rc != 0) {
        c->failed = s;
        return;
    }
    store_batch_offsets(c, s);
    destroy_batch(s);
    atomic_store(&mw_metrics.db_ready, 1);
    metrics_observe_latency_us((s->committed - s->started) * 1000);
    c->backoff = BACKOFF_MIN_MS;
    log_debug("consumer", "batch committed", LF_INT("messages", s->n),
              LF_INT("created", s->stats.created),
              LF_INT("updated", s->stats.updated),
              LF_INT("rejected", s->stats.rejected),
              LF_INT("dlq", s->stats.dlq));
    s->n = 0;
}

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    struct consumer *c = opaque;
    rd_kafka_error_t *error = NULL;

    atomic_fetch_add(&mw_metrics.rebalances, 1);
    c->joined = 1;
    c->brokers_up = 1;
    update_kafka_ready(c);
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        error = rd_kafka_incremental_assign(rk, parts);
        if (c->paused)
            rd_kafka_pause_partitions(rk, parts);
        log_info("consumer", "partitions assigned",
                 LF_INT("count", parts->cnt));
    } else if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
        /* The batch in the database is finished first; then its offsets
         * are made durable.  While paused, only batches that committed
         * have stored offsets. */
        settle(c);
        if (!c->paused || c->is_commit_due) {
            rd_kafka_commit(rk, NULL, 0);
            c->is_commit_due = 0;
        }
        error = rd_kafka_incremental_unassign(rk, parts);
        log_info("consumer", "partitions revoked", LF_INT("count", parts->cnt));
    }
    if (error != NULL) {
        log_error("consumer", "could not change the assignment",
                  LF_STR("error", rd_kafka_error_string(error)));
        rd_kafka_error_destroy(error);
    }
    {
        rd_kafka_topic_partition_list_t *assigned;

        if (rd_kafka_assignment(rk, &assigned) == 0) {
            atomic_store(&mw_metrics.assigned_partitions, assigned->cnt);
            rd_kafka_topic_partition_list_destroy(assigned);
        }
    }
}

static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    struct consumer *c = opaque;

    if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) {
        c->brokers_up = 0;
        update_kafka_ready(c);
    }
    if (err == RD_KAFKA_RESP_ERR__AUTHENTICATION && !c->joined) {
        c->is_refused = 1;
        snprintf(c->refusal, sizeof(c->refusal), "%s", reason);
    }
    log_warn("consumer", "kafka client error",
             LF_STR("error", rd_kafka_err2name(err)), LF_STR("detail", reason));
}

/*
 * librdkafka's statistics (every few seconds): whether any broker is up,
 * and the consumer lag summed over the assigned partitions.
 */
static int on_stats(rd_kafka_t *rk, char *json, size_t json_len, void *opaque)
{
    struct consumer *c = opaque;
    json_t *root = json_loadb(json, json_len, 0, NULL);
    json_t *brokers, *topics, *broker, *topic, *partition;
    const char *name;
    long long lag = 0;
    int up = 0;

    if (root == NULL)
        return 0;
    brokers = json_object_get(root, "brokers");
    json_object_foreach(brokers, name, broker) {
        if (json_integer_value(json_object_get(broker, "nodeid")) >= 0 &&
            strcmp(json_string_value(json_object_get(broker, "state"))
                       ? json_string_value(json_object_get(broker, "state"))
                       : "",
                   "UP") == 0)
            up = 1;
    }
    topics = json_object_get(root, "topics");
    json_object_foreach(topics, name, topic) {
        const char *id;

        json_object_foreach(json_object_get(topic, "partitions"), id,
                            partition) {
            json_int_t n =
                json_integer_value(json_object_get(partition, "consumer_lag"));

            if (strcmp(id, "-1") != 0 && n > 0)
                lag += n;
        }
    }
    json_decref(root);
    c->brokers_up = up;
    update_kafka_ready(c);
    atomic_store(&mw_metrics.consumer_lag, lag);
    return 0;
}

struct consumer *consumer_new(const struct mw_config *cfg,
                              const char *bootstrap, struct process *process,
                              struct mw_error *err)
{
    struct consumer *c = calloc(1, sizeof(*c));
    rd_kafka_conf_t *conf = NULL;
    rd_kafka_topic_partition_list_t *topics;
    rd_kafka_resp_err_t kerr;
    char errstr[512];

    if (c == NULL)
        goto oom;
    c->cfg = cfg;
    c->backoff = BACKOFF_MIN_MS;
    for (int i = 0; i < 2; i++) {
        struct slot *sl = &c->slots[i];

        sl->process = i == 0 ? process : process_new_twin(process, err);
        if (sl->process == NULL)
            goto fail;
        sl->arena = arena_new();
        sl->batch = calloc((size_t)cfg->batch_size, sizeof(*sl->batch));
        sl->msgs = calloc((size_t)cfg->batch_size, sizeof(*sl->msgs));
        if (sl->arena == NULL || sl->batch == NULL || sl->msgs == NULL)
            goto oom;
    }
    c->committer = job_thread_new(commit_slot, err);
    if (c->committer == NULL)
        goto fail;
    {
        /* A request waits at most fetch.wait.max.ms for its fetch; the
         * mock cluster answers an empty fetch only after the whole wait.
         * Prefetch a few batches, not librdkafka's 64 MB: a backlog would
         * otherwise sit in our memory.  The mock cluster ignores
         * fetch.max.bytes and answers with a whole producer batch of
         * each partition; a larger message than fetch.message.max.bytes
         * still comes: librdkafka grows this limit until it fits. */
        const char *const defaults[] = {"group.id",
                                        cfg->group_id,
                                        "partition.assignment.strategy",
                                        "cooperative-sticky",
                                        "enable.auto.commit",
                                        "false",
                                        "enable.auto.offset.store",
                                        "false",
                                        "auto.offset.reset",
                                        "earliest",
                                        "statistics.interval.ms",
                                        "2000",
                                        "fetch.wait.max.ms",
                                        "10",
                                        "queued.max.messages.kbytes",
                                        "4096",
                                        "fetch.max.bytes",
                                        "2097152",
                                        "fetch.message.max.bytes",
                                        "262144",
                                        NULL};

        conf = kafka_conf_new(cfg, bootstrap, CONFIG_KAFKA_CONSUMER, defaults,
                              err);
        if (conf == NULL)
            goto fail;
    }
    rd_kafka_conf_set_opaque(conf, c);
    rd_kafka_conf_set_stats_cb(conf, on_stats);
    rd_kafka_conf_set_rebalance_cb(conf, on_rebalance);
    rd_kafka_conf_set_error_cb(conf, on_error);
    c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (c->rk == NULL) {
        mw_error_set(err, MW_ERR_CONFIG, false,
                     "could not create the Kafka consumer");
        mw_error_detail(err, "%s", errstr);
        goto fail;
    }
    conf = NULL;
    rd_kafka_poll_set_consumer(c->rk);
    topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, cfg->topic_requests,
                                      RD_KAFKA_PARTITION_UA);
    kerr = rd_kafka_subscribe(c->rk, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (kerr != RD_KAFKA_RESP_ERR_NO_ERROR) {
        mw_error_set(err, MW_ERR_KAFKA, false, "could not subscribe to %s",
                     cfg->topic_requests);
        mw_error_detail(err, "%s", rd_kafka_err2str(kerr));
        goto fail;
    }
    return c;
oom:
    mw_error_no_memory(err);
fail:
    if (conf != NULL)
        rd_kafka_conf_destroy(conf);
    consumer_destroy(c);
    return NULL;
}

/*
 * Leaves the group before closing.  librdkafka 2.0 can hang in close when
 * a cooperative assignment arrives while it closes (librdkafka issue
 * 4527, fixed in 2.4); unsubscribing and serving the rebalance callbacks
 * until nothing is assigned avoids it.  Messages polled meanwhile are
 * dropped uncommitted: the next owner of their partition reads them.
 */
static void leave_group(struct consumer *c)
{
    int64_t deadline = mw_monotonic_ms() + 10000;

    if (rd_kafka_unsubscribe(c->rk) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return;
    while (mw_monotonic_ms() < deadline) {
        rd_kafka_topic_partition_list_t *assigned = NULL;
        rd_kafka_message_t *m;
        int count = 0;

        if (rd_kafka_assignment(c->rk, &assigned) == 0) {
            count = assigned->cnt;
            rd_kafka_topic_partition_list_destroy(assigned);
        }
        if (count == 0 && c->joined)
            return;
        m = rd_kafka_consumer_poll(c->rk, 100);
        if (m != NULL)
            rd_kafka_message_destroy(m);
        if (count == 0 && !c->joined && mw_monotonic_ms() + 9000 > deadline)
            return; /* never joined: nothing to wait for */
    }
}

void consumer_destroy(struct consumer *c)
{
    if (c == NULL)
        return;
    if (c->rk != NULL) {
        leave_group(c);
        rd_kafka_consumer_close(c->rk);
        rd_kafka_destroy(c->rk);
    }
    job_thread_destroy(c->committer);
    for (int i = 0; i < 2; i++) {
        struct slot *sl = &c->slots[i];

        if (i == 1)
            process_destroy(sl->process);
        arena_destroy(sl->arena);
        free(sl->batch);
        free(sl->msgs);
    }
    free(c);
}

/* Rewinds and pauses the partition of rkm so that it is read again. */
static void rewind_message(struct consumer *c, const rd_kafka_message_t *rkm)
{
    rd_kafka_topic_partition_list_t *one = rd_kafka_topic_partition_list_new(1);
    rd_kafka_error_t *error;

    rd_kafka_topic_partition_list_add(one, rd_kafka_topic_name(rkm->rkt),
                                      rkm->partition)
        ->offset = rkm->offset;
    rd_kafka_pause_partitions(c->rk, one);
    error = rd_kafka_seek_partitions(c->rk, one, 5000);
    if (error != NULL) {
        log_warn("consumer", "could not rewind a partition",
                 LF_INT("partition", rkm->partition),
                 LF_INT("offset", rkm->offset),
                 LF_STR("error", rd_kafka_error_string(error)));
        rd_kafka_error_destroy(error);
    }
    rd_kafka_topic_partition_list_destroy(one);
}

/* Pauses everything and rewinds each partition to its first batch offset. */
static void hold_batch(struct consumer *c, const struct slot *s)
{
    size_t count = s->n;
    rd_kafka_topic_partition_list_t *assigned = NULL, *seek;
    rd_kafka_error_t *error;

    c->paused = 1;
    if (rd_kafka_assignment(c->rk, &assigned) == 0) {
        rd_kafka_pause_partitions(c->rk, assigned);
        rd_kafka_topic_partition_list_destroy(assigned);
    }
    seek = rd_kafka_topic_partition_list_new((int)count);
    for (size_t i = 0; i < count; i++) {
        const rd_kafka_message_t *m = s->batch[i];
        const char *topic = rd_kafka_topic_name(m->rkt);

        if (rd_kafka_topic_partition_list_find(seek, topic, m->partition))
            continue; /* the first message of a partition has the least */
        rd_kafka_topic_partition_list_add(seek, topic, m->partition)->offset =
            m->offset;
    }
    if (seek->cnt > 0) {
        error = rd_kafka_seek_partitions(c->rk, seek, 5000);
        if (error != NULL) {
            log_warn("consumer", "could not rewind partitions",
                     LF_STR("error", rd_kafka_error_string(error)));
            rd_kafka_error_destroy(error);
        }
    }
    rd_kafka_topic_partition_list_destroy(seek);
}

static void resume_all(struct consumer *c)
{
    rd_kafka_topic_partition_list_t *assigned = NULL;

    c->paused = 0;
    if (rd_kafka_assignment(c->rk, &assigned) == 0) {
        rd_kafka_resume_partitions(c->rk, assigned);
        rd_kafka_topic_partition_list_destroy(assigned);
    }
}

/*
 * Commits the stored offsets when some are new and the last commit is
 * COMMIT_INTERVAL_MS old.  Asynchronous: a lost commit only means a
 * redelivery, which is idempotent; a revocation commits synchronously.
 */
static void commit_due(struct consumer *c)
{
    int64_t now = mw_monotonic_ms();

    if (!c->is_commit_due || now - c->committed_at < COMMIT_INTERVAL_MS)
        return;
    rd_kafka_commit(c->rk, NULL, 1);
    c->is_commit_due = 0;
    c->committed_at = now;
}

/* Stores offset+1 of the last message of each partition of the batch. */
static void store_batch_offsets(struct consumer *c, const struct slot *s)
{
    rd_kafka_topic_partition_list_t *offsets =
        rd_kafka_topic_partition_list_new((int)s->n);
    rd_kafka_resp_err_t kerr;

    for (size_t i = 0; i < s->n; i++) {
        const rd_kafka_message_t *m = s->batch[i];
        const char *topic = rd_kafka_topic_name(m->rkt);
        rd_kafka_topic_partition_t *p =
            rd_kafka_topic_partition_list_find(offsets, topic, m->partition);

        if (p == NULL)
            p = rd_kafka_topic_partition_list_add(offsets, topic, m->partition);
        if (m->offset + 1 > p->offset)
            p->offset = m->offset + 1;
    }
    kerr = rd_kafka_offsets_store(c->rk, offsets);
    if (kerr != RD_KAFKA_RESP_ERR_NO_ERROR)
        log_warn("consumer", "could not store offsets",
                 LF_STR("error", rd_kafka_err2str(kerr)));
    else
        c->is_commit_due = 1;
    rd_kafka_topic_partition_list_destroy(offsets);
}

/* Turns the polled messages into process_msg entries. */
static int prepare_msgs(struct slot *s)
{
    arena_reset(s->arena);
    for (size_t i = 0; i < s->n; i++) {
        const rd_kafka_message_t *m = s->batch[i];
        struct process_msg *pm = &s->msgs[i];
        rd_kafka_headers_t *hdrs = NULL;
        struct kafka_headers_buf hb;
        rd_kafka_timestamp_type_t tstype;
        const void *tp;
        size_t tp_len;

        memset(pm, 0, sizeof(*pm));
        pm->topic = rd_kafka_topic_name(m->rkt);
        pm->partition = m->partition;
        pm->offset = m->offset;
        pm->timestamp = rd_kafka_message_timestamp(m, &tstype);
        pm->key = m->key;
        pm->key_len = m->key_len;
        pm->value = m->payload;
        pm->value_len = m->len;
        kafka_headers_init(&hb, s->arena);
        if (rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR &&
            kafka_headers_add_all(&hb, hdrs) < 0)
            return -1;
        pm->headers = hb.buf;
        pm->headers_len = hb.len;
        if (kafka_header_get(m, "traceparent", &tp, &tp_len) == 0 && tp &&
            tp_len <= MW_MAX_TRACEPARENT) {
            pm->traceparent = arena_strndup(s->arena, tp, tp_len);
            if (pm->traceparent == NULL)
                return -1;
        }
    }
    return 0;
}

static void destroy_batch(struct slot *s)
{
    for (size_t i = 0; i < s->n; i++)
        rd_kafka_message_destroy(s->batch[i]);
    s->n = 0;
}

/* Polls one batch; returns the number of messages in s->batch. */
static size_t poll_batch(struct consumer *c, struct slot *s)
{
    size_t n = 0;
    int64_t deadline = 0;

    while (n < (size_t)c->cfg->batch_size) {
        int timeout = POLL_MS;
        rd_kafka_message_t *m;

        if (n > 0) {
            int64_t left = deadline - mw_monotonic_ms();

            timeout = left > 0 ? (int)left : 0;
        }
        m = rd_kafka_consumer_poll(c->rk, timeout);
        if (m == NULL) {
            if (n > 0 && timeout > 0)
                continue; /* woken early: keep filling until the deadline */
            break;
        }
        if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                log_warn("consumer", "consume error",
                         LF_STR("error", rd_kafka_message_errstr(m)),
                         LF_INT("partition", m->partition));
            rd_kafka_message_destroy(m);
            if (n == 0)
                break;
            continue;
        }
        atomic_store(&mw_metrics.kafka_ready, 1);
        if (c->paused) {
            /* Fetched before the pause took effect: read it again later. */
            rewind_message(c, m);
            rd_kafka_message_destroy(m);
            continue;
        }
        if (n == 0)
            deadline = mw_monotonic_ms() + c->cfg->batch_wait_ms;
        s->batch[n++] = m;
    }
    return n;
}

/*
 * Holds a failed batch and the one polled after it (later, may be
 * NULL): every partition is paused and rewound to the first offset
 * either holds, both are dropped, and they are read again after the
 * backoff.  Nothing of them was stored.
 */
static void hold_failed(struct consumer *c, struct slot *failed,
                        struct slot *later)
{
    const struct mw_error *perr = &failed->err;

    atomic_fetch_add(&mw_metrics.batch_failures, 1);
    if (perr->code == MW_ERR_DATABASE)
        atomic_store(&mw_metrics.db_ready, 0);
    log_error("consumer", "could not process a batch; will retry",
              LF_STR("error", perr->msg), LF_STR("detail", perr->detail),
              LF_INT("retriable", perr->retriable),
              LF_INT("messages", (int64_t)failed->n),
              LF_INT("backoff_ms", c->backoff));
    /* The earlier batch's offsets are sought last: they win. */
    if (later != NULL && later->n > 0) {
        hold_batch(c, later);
        destroy_batch(later);
    }
    hold_batch(c, failed);
    destroy_batch(failed);
    c->retry_at = mw_monotonic_ms() + c->backoff;
    c->backoff =
        c->backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : c->backoff * 2;
}

/* Holds the batch c->failed names, with later; true when there was one. */
static bool hold_any_failed(struct consumer *c, struct slot *later)
{
    struct slot *failed = c->failed;

    if (failed == NULL)
        return false;
    c->failed = NULL;
    hold_failed(c, failed, later);
    return true;
}

int consumer_run(struct consumer *c, volatile sig_atomic_t *stop,
                 struct mw_error *err)
{
    while (!*stop) {
        struct slot *s = &c->slots[c->next];
        int prepared = -1;

        if (c->is_refused) {
            /* A wrong password never starts working by itself: say so
             * instead of retrying for ever. */
            mw_error_set(err, MW_ERR_CONFIG, false,
                         "Kafka refused the worker's credentials");
            mw_error_detail(err, "%s", c->refusal);
            mw_error_hint(err, "Check MESH_WORKER_KAFKA_SASL_USERNAME, "
                               "MESH_WORKER_KAFKA_SASL_PASSWORD and "
                               "MESH_WORKER_KAFKA_SASL_MECHANISM (or the "
                               "client certificate); the password is not "
                               "shown.");
            return -1; /* never joined: no batch was polled */
        }

        commit_due(c);
        if (c->paused) {
            /* Nothing is in the database while paused. */
            rd_kafka_message_t *m = rd_kafka_consumer_poll(c->rk, POLL_MS);

            if (m != NULL) {
                if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR)
                    rewind_message(c, m);
                rd_kafka_message_destroy(m);
            }
            if (mw_monotonic_ms() < c->retry_at)
                continue;
            resume_all(c);
            log_info("consumer", "resuming after a failed batch");
        }
        s->n = poll_batch(c, s);
        /* A revocation inside the poll may have found the batch in the
         * database failed. */
        if (hold_any_failed(c, s))
            continue;
        if (s->n == 0) {
            if (job_thread_is_idle(c->committer)) {
                settle(c);
                hold_any_failed(c, NULL);
            }
            continue;
        }
        s->started = mw_monotonic_ms();
        atomic_fetch_add(&mw_metrics.consumed, (long long)s->n);
        mw_error_clear(&s->err);
        if (prepare_msgs(s) < 0)
            mw_error_no_memory(&s->err);
        else
            prepared = process_prepare(s->process, s->msgs, s->n, &s->err);
        /* Batches are committed in the order polled: the one before
         * first. */
        settle(c);
        if (hold_any_failed(c, s))
            continue;
        if (prepared < 0) {
            hold_failed(c, s, NULL);
            continue;
        }
        job_thread_post(c->committer, s);
        c->next = 1 - c->next;
    }
    settle(c);
    if (c->failed != NULL) {
        /* Nothing of it was stored: the next owner reads it again. */
        destroy_batch(c->failed);
        c->failed = NULL;
    }
    /* Graceful stop: the last batch is done; make its offsets durable. */
    if (!c->paused || c->is_commit_due) {
        rd_kafka_resp_err_t kerr = rd_kafka_commit(c->rk, NULL, 0);

        if (kerr != RD_KAFKA_RESP_ERR_NO_ERROR &&
            kerr != RD_KAFKA_RESP_ERR__NO_OFFSET)
            log_warn("consumer", "could not commit offsets at shutdown",
                     LF_STR("error", rd_kafka_err2str(kerr)));
    }
    return 0;
}
