/*
 * The exactly-once relay.
 *
 * Every replica's relay uses one transactional.id.  The replica holding
 * the relay's advisory lock makes a new producer and calls
 * init_transactions, which aborts the transaction a dead or cut-off
 * leader left open and fences that leader: it can never commit again.
 * Only then it reads the recorded position (relay_position.h): the
 * offset and metadata committed for the group "<group id>.relay" on
 * partition 0 of the events topic.  Kafka keeps them as any consumer
 * offset, but they are written by TxnOffsetCommit inside the relay's
 * transactions, so they change exactly when a round's events become
 * visible; the offset is an outbox id, which Kafka does not check.
 *
 * A round: read up to MESH_WORKER_RELAY_BATCH_SIZE unpublished rows in id
 * order; the rows the position covers were published by a committed
 * transaction and only lack their mark.  The others are produced, events
 * and dead letters alike, in one transaction that also commits the new
 * position.  Rows are marked published only after the commit succeeded;
 * if marking fails, or the replica dies before it, the position keeps
 * the next leader from publishing them again.  A round starts only after
 * the one before it committed or aborted, so one publisher in id order
 * keeps the order of events per customer.
 *
 * Invariant: the position in memory is the committed one; a round's new
 * position replaces it only once commit_transaction returned success.
 *
 * Known limit: a row Kafka refuses for good (say larger than the topic's
 * max.message.bytes) aborts every round that carries it, so the rows
 * after it wait; the log names the row.
 */
#include "relay_txn.h"

#include "arena.h"
#include "kafka.h"
#include "log.h"
#include "metrics.h"
#include "mw.h"
#include "relay_lead.h"
#include "relay_position.h"
#include "store.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define IDLE_WAIT_MS 500
#define RETRY_WAIT_MS 1000
#define KAFKA_TIMEOUT_MS 30000
/* Longer than a commit can take; a dead leader's open transaction is
 * aborted by the next leader's init_transactions long before. */
#define TRANSACTION_TIMEOUT "60000"

/* Read only by the tests (README, "Tests"): widens the window between a
 * transaction's commit and the marking of its rows. */
#define TEST_PAUSE_VAR "MESH_WORKER_TEST_PAUSE_AFTER_COMMIT_MS"

struct relay_txn {
    const struct mw_config *cfg;
    char *conninfo;
    char *group_id;        /* the relay's: "<group id>.relay" */
    rd_kafka_conf_t *conf; /* duplicated for each new producer */
    rd_kafka_t *rk;        /* the producer; NULL until leading */
    rd_kafka_t *reader;    /* reads the recorded position */
    rd_kafka_consumer_group_metadata_t *group;
    struct relay_position pos;  /* committed */
    struct relay_position next; /* the round's, until it commits */
    int64_t *new_ids;           /* the round's rows to produce */
    int64_t *mark_ids;          /* the round's rows to mark */
    int64_t failed_id;          /* first row a delivery report failed */
    int64_t pause_after_commit_ms;
};

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *rkm,
                        void *opaque)
{
    struct relay_txn *t = opaque;
    int64_t id = (int64_t)(intptr_t)rkm->_private;

    (void)rk;
    if (rkm->err == RD_KAFKA_RESP_ERR_NO_ERROR || t->failed_id != 0)
        return;
    t->failed_id = id;
    log_warn("relay", "delivery failed; the transaction is aborted",
             LF_INT("outbox_id", id),
             LF_STR("topic", rd_kafka_topic_name(rkm->rkt)),
             LF_STR("error", rd_kafka_err2str(rkm->err)));
}

static int parse_test_pause(struct relay_txn *t, struct mw_error *err)
{
    const char *v = getenv(TEST_PAUSE_VAR);
    char *end;

    if (v == NULL || v[0] == '\0')
        return 0;
    t->pause_after_commit_ms = strtoll(v, &end, 10);
    if (*end != '\0' || t->pause_after_commit_ms < 0) {
        mw_error_set(err, MW_ERR_CONFIG, false, "invalid value for %s: \"%s\"",
                     TEST_PAUSE_VAR, v);
        mw_error_hint(err, "Use a number of milliseconds.");
        return -1;
    }
    return 0;
}

/* The consumer that reads the position; it never joins the group. */
static rd_kafka_t *reader_new(const struct mw_config *cfg,
                              const char *bootstrap, const char *group_id,
                              struct mw_error *err)
{
    rd_kafka_conf_t *conf =
        kafka_conf_new(cfg, bootstrap, CONFIG_KAFKA_CONSUMER, NULL, err);
    rd_kafka_t *rk;
    char errstr[512];

    if (conf == NULL)
        return NULL;
    if (kafka_conf_set(conf, "group.id", group_id, err) < 0 ||
        kafka_conf_set(conf, "enable.auto.commit", "false", err) < 0 ||
        kafka_conf_set(conf, "isolation.level", "read_committed", err) < 0 ||
        kafka_conf_set(conf, "client.id", "mesh-worker-relay-position", err) <
            0) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (rk == NULL) {
        rd_kafka_conf_destroy(conf);
        mw_error_set(err, MW_ERR_CONFIG, false,
                     "could not create the Kafka consumer");
        mw_error_detail(err, "%s", errstr);
    }
    return rk;
}

struct relay_txn *relay_txn_new(const struct mw_config *cfg,
                                const char *conninfo, const char *bootstrap,
                                rd_kafka_conf_t *conf, struct mw_error *err)
{
    struct relay_txn *t = calloc(1, sizeof(*t));
    size_t cap = (size_t)cfg->relay_batch_size;

    if (t == NULL) {
        rd_kafka_conf_destroy(conf);
        mw_error_no_memory(err);
        return NULL;
    }
    t->cfg = cfg;
    t->conf = conf;
    relay_position_init(&t->pos);
    relay_position_init(&t->next);
    t->conninfo = strdup(conninfo);
    t->group_id = malloc(strlen(cfg->group_id) + sizeof(".relay"));
    t->new_ids = calloc(cap, sizeof(*t->new_ids));
    t->mark_ids = calloc(cap, sizeof(*t->mark_ids));
    if (t->conninfo == NULL || t->group_id == NULL || t->new_ids == NULL ||
        t->mark_ids == NULL) {
        mw_error_no_memory(err);
        goto fail;
    }
    strcpy(t->group_id, cfg->group_id);
    strcat(t->group_id, ".relay");
    /*
     * A transaction's messages may not outlive it: librdkafka wants
     * message.timeout.ms within transaction.timeout.ms, where the
     * at-least-once relay waits for ever.
     */
    if (kafka_conf_set(conf, "transactional.id", cfg->relay_transactional_id,
                       err) < 0 ||
        kafka_conf_set(conf, "transaction.timeout.ms", TRANSACTION_TIMEOUT,
                       err) < 0 ||
        kafka_conf_set(conf, "message.timeout.ms", TRANSACTION_TIMEOUT, err) <
            0 ||
        parse_test_pause(t, err) < 0)
        goto fail;
    rd_kafka_conf_set_opaque(conf, t);
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    t->reader = reader_new(cfg, bootstrap, t->group_id, err);
    if (t->reader == NULL)
        goto fail;
    t->group = rd_kafka_consumer_group_metadata_new(t->group_id);
    if (t->group == NULL) {
        mw_error_no_memory(err);
        goto fail;
    }
    return t;
fail:
    relay_txn_destroy(t);
    return NULL;
}

/* Logs a librdkafka error object and destroys it. */
static void log_kafka_error(const char *msg, rd_kafka_error_t *error)
{
    log_warn("relay", msg, LF_STR("error", rd_kafka_error_name(error)),
             LF_STR("detail", rd_kafka_error_string(error)),
             LF_INT("fatal", rd_kafka_error_is_fatal(error)));
    rd_kafka_error_destroy(error);
}

static void producer_destroy(struct relay_txn *t)
{
    if (t->rk == NULL)
        return;
    /* An open transaction is aborted by the next init_transactions. */
    rd_kafka_purge(t->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_destroy(t->rk);
    t->rk = NULL;
}

/*
 * Reads the committed position into t->pos (none yet: nothing was
 * published).  Returns 0, or -1 with err.
 */
static int read_position(struct relay_txn *t, struct mw_error *err)
{
    rd_kafka_topic_partition_list_t *parts =
        rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_t *tp;
    rd_kafka_resp_err_t kerr;
    char *text = NULL;
    int rc = -1;

    tp = rd_kafka_topic_partition_list_add(parts, t->cfg->topic_events, 0);
    kerr = rd_kafka_committed(t->reader, parts, KAFKA_TIMEOUT_MS);
    if (kerr == RD_KAFKA_RESP_ERR_NO_ERROR)
        kerr = tp->err;
    if (kerr != RD_KAFKA_RESP_ERR_NO_ERROR) {
        mw_error_set(err, MW_ERR_KAFKA, true,
                     "could not read the relay's recorded position");
        mw_error_detail(err, "group %s, topic %s partition 0: %s", t->group_id,
                        t->cfg->topic_events, rd_kafka_err2str(kerr));
        goto done;
    }
    text = calloc(1, tp->metadata_size + 1);
    if (text == NULL) {
        mw_error_no_memory(err);
        goto done;
    }
    if (tp->metadata_size > 0)
        memcpy(text, tp->metadata, tp->metadata_size);
    if (relay_position_parse(&t->pos, tp->offset < 0 ? 1 : tp->offset, text,
                             err) < 0)
        goto done;
    log_info("relay", "read the recorded position",
             LF_STR("group", t->group_id),
             LF_INT("next_outbox_id", t->pos.next),
             LF_INT("holes", (long long)t->pos.count));
    rc = 0;
done:
    free(text);
    rd_kafka_topic_partition_list_destroy(parts);
    return rc;
}

/*
 * Makes a new producer, fences every earlier one and reads the position.
 * Returns 0, or -1 with err.
 */
static int prepare(struct relay_txn *t, struct mw_error *err)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_dup(t->conf);
    rd_kafka_error_t *error;
    char errstr[512];

    producer_destroy(t);
    t->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (t->rk == NULL) {
        rd_kafka_conf_destroy(conf);
        mw_error_set(err, MW_ERR_KAFKA, true,
                     "could not create the Kafka producer");
        mw_error_detail(err, "%s", errstr);
        return -1;
    }
    error = rd_kafka_init_transactions(t->rk, KAFKA_TIMEOUT_MS);
    if (error != NULL) {
        mw_error_set(err, MW_ERR_KAFKA, true,
                     "could not initialise Kafka transactions");
        mw_error_detail(err, "transactional.id %s: %s",
                        t->cfg->relay_transactional_id,
                        rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
        producer_destroy(t);
        return -1;
    }
    if (read_position(t, err) < 0) {
        producer_destroy(t);
        return -1;
    }
    return 0;
}

/* Produces one row; blocks while librdkafka's queue is full. */
static rd_kafka_resp_err_t produce_row(struct relay_txn *t,
                                       const struct store_outbox_msg *m)
{
    const char *topic = m->stream == STORE_STREAM_DLQ ? t->cfg->topic_dlq
                                                      : t->cfg->topic_events;
    rd_kafka_headers_t *hdrs = kafka_headers_unpack(m->headers, m->headers_len);
    rd_kafka_resp_err_t kerr =
        kafka_produce(t->rk, topic, m->key, m->key_len, m->payload,
                      m->payload_len, hdrs, (void *)(intptr_t)m->id);

    if (kerr != RD_KAFKA_RESP_ERR_NO_ERROR) {
        log_warn("relay", "could not produce an outbox row",
                 LF_INT("outbox_id", m->id), LF_STR("topic", topic),
                 LF_STR("error", rd_kafka_err2str(kerr)));
    }
    return kerr;
}

/* The round's position as the transaction's offset commit. */
static rd_kafka_error_t *send_position(struct relay_txn *t, int64_t now_s)
{
    rd_kafka_topic_partition_list_t *parts =
        rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_t *tp;
    rd_kafka_error_t *error;
    char text[RELAY_POSITION_TEXT_MAX + 1];
    size_t forgotten =
        relay_position_format(&t->next, now_s, text, sizeof(text));

    if (forgotten > 0)
        log_warn("relay",
                 "forgot outbox ids never seen; rows arriving with "
                 "them would not be published",
                 LF_INT("holes", (long long)forgotten));
    tp = rd_kafka_topic_partition_list_add(parts, t->cfg->topic_events, 0);
    tp->offset = t->next.next;
    tp->metadata = strdup(text);
    tp->metadata_size = tp->metadata != NULL ? strlen(text) : 0;
    error = rd_kafka_send_offsets_to_transaction(t->rk, parts, t->group,
                                                 KAFKA_TIMEOUT_MS);
    rd_kafka_topic_partition_list_destroy(parts);
    return error;
}

/* Commits, retrying what librdkafka says may be retried. */
static rd_kafka_error_t *commit(struct relay_txn *t, atomic_int *stop_now)
{
    rd_kafka_error_t *error;

    for (;;) {
        error = rd_kafka_commit_transaction(t->rk, KAFKA_TIMEOUT_MS);
        if (error == NULL || !rd_kafka_error_is_retriable(error) ||
            atomic_load(stop_now))
            return error;
        log_kafka_error("could not commit the relay's transaction; "
                        "retrying",
                        error);
    }
}

/*
 * Publishes the rows not covered (t->new_ids, count of them) in one
 * transaction.  Returns 0 once committed (t->pos is the new position);
 * -1 when the transaction was aborted or its fate is left to the next
 * init_transactions: then t->rk is NULL if the producer is unusable,
 * and *is_fenced says whether another producer took over.
 */
static int publish(struct relay_txn *t, const struct store_outbox_msg *msgs,
                   size_t count, size_t fresh, atomic_int *stop_now,
                   bool *is_fenced)
{
    rd_kafka_error_t *error;
    int64_t now_s = (int64_t)time(NULL);

    *is_fenced = false;
    t->failed_id = 0;
    if (relay_position_copy(&t->next, &t->pos) < 0 ||
        relay_position_advance(&t->next, t->new_ids, fresh, now_s) < 0) {
        log_error("relay", "out of memory");
        return -1;
    }
    error = rd_kafka_begin_transaction(t->rk);
    if (error != NULL)
        goto fail;
    for (size_t i = 0; i < count; i++) {
        if (relay_position_covers(&t->pos, msgs[i].id))
            continue;
        if (produce_row(t, &msgs[i]) != RD_KAFKA_RESP_ERR_NO_ERROR) {
            error = rd_kafka_abort_transaction(t->rk, KAFKA_TIMEOUT_MS);
            if (error != NULL)
                goto fail;
            return -1;
        }
    }
    error = send_position(t, now_s);
    if (error == NULL)
        error = commit(t, stop_now);
    if (error != NULL)
        goto fail;
    /* The round is visible: its position is the committed one now. */
    relay_position_free(&t->pos);
    t->pos = t->next;
    relay_position_init(&t->next);
    atomic_fetch_add(&mw_metrics.published, (long long)fresh);
    return 0;
fail:
    *is_fenced = rd_kafka_error_is_fatal(error);
    if (rd_kafka_error_txn_requires_abort(error)) {
        log_kafka_error("the relay's transaction failed; aborting it", error);
        error = rd_kafka_abort_transaction(t->rk, KAFKA_TIMEOUT_MS);
        if (error == NULL)
            return -1;
    }
    /*
     * Fenced, fatal, or an outcome not known: this producer is done.  The
     * next init_transactions completes or aborts what it left open, and
     * the position read after it says which.
     */
    log_kafka_error(*is_fenced ? "another relay took over the transactional "
                                 "id; this one stops publishing"
                               : "the relay's producer is reset",
                    error);
    producer_destroy(t);
    return -1;
}

/*
 * One round (file comment).  Sets *fetched to the rows read.  Returns 0;
 * -1 with err on a database error; -2 when Kafka failed the round (the
 * rows stay in the outbox; t->rk is NULL if the producer must be made
 * again, and *is_fenced says to give up leadership).
 */
static int run_round(struct relay_txn *t, struct store *store,
                     struct mw_arena *arena, atomic_int *stop_now,
                     size_t *fetched, bool *is_fenced, struct mw_error *err)
{
    struct store_outbox_msg *msgs;
    size_t count, fresh = 0, covered = 0;

    *is_fenced = false;
    arena_reset(arena);
    if (store_outbox_fetch(store, (size_t)t->cfg->relay_batch_size, arena,
                           &msgs, &count, err) < 0)
        return -1;
    *fetched = count;
    for (size_t i = 0; i < count; i++) {
        if (relay_position_covers(&t->pos, msgs[i].id))
            covered++;
        else
            t->new_ids[fresh++] = msgs[i].id;
        t->mark_ids[i] = msgs[i].id;
    }
    if (covered > 0)
        log_info("relay", "marking rows a committed transaction published",
                 LF_INT("rows", (long long)covered));
    if (fresh > 0) {
        if (publish(t, msgs, count, fresh, stop_now, is_fenced) < 0)
            return -2;
        log_debug("relay", "transaction committed",
                  LF_INT("rows", (long long)fresh),
                  LF_INT("first_outbox_id", t->new_ids[0]),
                  LF_INT("last_outbox_id", t->new_ids[fresh - 1]));
        mw_sleep_ms_unless(t->pause_after_commit_ms, stop_now);
    }
    if (count > 0 &&
        store_outbox_mark_published(store, t->mark_ids, count,
                                    t->cfg->outbox_retention_ms > 0, err) < 0)
        return -1;
    return 0;
}

void relay_txn_run(struct relay_txn *t, atomic_int *draining,
                   atomic_int *stop_now)
{
    struct relay_lead lead;
    struct mw_arena *arena = arena_new();
    struct mw_error err;

    relay_lead_init(&lead, t->cfg, t->conninfo, draining, stop_now);
    while (!atomic_load(stop_now)) {
        size_t fetched = 0;
        bool is_fenced = false;
        int rc;

        switch (relay_lead_step(&lead)) {
        case RELAY_LEAD_STOP:
            goto stop;
        case RELAY_LEAD_WAITED:
            continue;
        case RELAY_LEAD_TAKEN:
            log_info(
                "relay", "this replica now publishes the outbox",
                LF_STR("delivery", "exactly-once"),
                LF_STR("transactional_id", t->cfg->relay_transactional_id));
            /* Whoever led before may have committed since: start over. */
            producer_destroy(t);
            break;
        case RELAY_LEAD_HELD:
            break;
        }
        if (t->rk == NULL && prepare(t, &err) < 0) {
            log_warn("relay", "could not start publishing",
                     LF_STR("error", err.msg), LF_STR("detail", err.detail));
            if (atomic_load(draining))
                break;
            mw_sleep_ms_unless(RETRY_WAIT_MS, stop_now);
            continue;
        }
        rc = run_round(t, lead.store, arena, stop_now, &fetched, &is_fenced,
                       &err);
        if (rc == -1) {
            relay_lead_lost(&lead, &err);
            continue;
        }
        atomic_store(&mw_metrics.db_ready, 1);
        if (rc == -2) {
            if (is_fenced) /* let go of the lock: whoever fenced us leads */
                relay_lead_release(&lead);
            if (atomic_load(draining))
                break;
            mw_sleep_ms_unless(RETRY_WAIT_MS, stop_now);
            continue;
        }
        if (fetched == 0 && atomic_load(draining))
            break;
        if (fetched == (size_t)t->cfg->relay_batch_size)
            continue; /* more rows are waiting */
        if (store_outbox_wait(lead.store, IDLE_WAIT_MS, &err) < 0)
            relay_lead_lost(&lead, &err);
    }
stop:
    producer_destroy(t);
    relay_lead_release(&lead);
    arena_destroy(arena);
}

void relay_txn_destroy(struct relay_txn *t)
{
    if (t == NULL)
        return;
    producer_destroy(t);
    if (t->reader != NULL)
        rd_kafka_destroy(t->reader);
    if (t->group != NULL)
        rd_kafka_consumer_group_metadata_destroy(t->group);
    if (t->conf != NULL)
        rd_kafka_conf_destroy(t->conf);
    relay_position_free(&t->pos);
    relay_position_free(&t->next);
    free(t->new_ids);
    free(t->mark_ids);
    free(t->group_id);
    free(t->conninfo);
    free(t);
}
