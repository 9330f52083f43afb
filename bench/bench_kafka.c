/*
 * Kafka for the benchmark: the mock cluster in this process, the tests'
 * real broker, or the one MESH_WORKER_KAFKA_BOOTSTRAP_SERVERS names; the
 * topics of each phase, and the producers and readers the phases use.
 * Topics on a broker are deleted when their phase ends, so a broker that
 * outlives the run keeps nothing of it.
 */
#include "bench.h"

#include <stdlib.h>
#include <string.h>

static rd_kafka_conf_t *kafka_conf(const struct bench *b)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char errstr[256];

    if (rd_kafka_conf_set(conf, "bootstrap.servers", b->bootstrap, errstr,
                          sizeof(errstr)) != RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "log_level", "3", errstr, sizeof(errstr)) !=
            RD_KAFKA_CONF_OK) {
        say("could not configure a Kafka client: %s", errstr);
        exit(2);
    }
    return conf;
}

static void conf_set(rd_kafka_conf_t *conf, const char *name, const char *value)
{
    char errstr[256];

    if (rd_kafka_conf_set(conf, name, value, errstr, sizeof(errstr)) !=
        RD_KAFKA_CONF_OK) {
        say("invalid Kafka property %s=%s: %s", name, value, errstr);
        exit(2);
    }
}

static int mock_start(struct bench *b)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char errstr[256];

    rd_kafka_conf_set(conf, "log_level", "3", NULL, 0);
    b->mock_rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (b->mock_rk == NULL) {
        say("could not create a Kafka client: %s", errstr);
        return -1;
    }
    b->mc = rd_kafka_mock_cluster_new(b->mock_rk, 1);
    if (b->mc == NULL) {
        say("could not start the mock cluster");
        return -1;
    }
    b->bootstrap = strdup(rd_kafka_mock_cluster_bootstraps(b->mc));
    return b->bootstrap ? 0 : -1;
}

int kafka_start(struct bench *b)
{
    const char *given = getenv("MESH_WORKER_KAFKA_BOOTSTRAP_SERVERS");
    char errstr[256];
    int rc;

    b->is_mock = b->tier == TIER_MOCK;
    if (b->tier == TIER_MOCK)
        rc = mock_start(b);
    else if (b->tier == TIER_REAL)
        rc = broker_start(b);
    else
        rc = (b->bootstrap = strdup(given)) != NULL ? 0 : -1;
    if (rc < 0)
        return -1;
    b->admin =
        rd_kafka_new(RD_KAFKA_PRODUCER, kafka_conf(b), errstr, sizeof(errstr));
    if (b->admin == NULL) {
        say("could not create a Kafka client: %s", errstr);
        return -1;
    }
    return 0;
}

void kafka_stop(struct bench *b)
{
    if (b->admin)
        rd_kafka_destroy(b->admin);
    if (b->mc)
        rd_kafka_mock_cluster_destroy(b->mc);
    if (b->mock_rk)
        rd_kafka_destroy(b->mock_rk);
    broker_stop(b);
    free(b->bootstrap);
    b->admin = NULL;
    b->mc = NULL;
    b->mock_rk = NULL;
    b->bootstrap = NULL;
}

/*
 * Runs one admin request (CreateTopics or DeleteTopics, as is_create
 * says) for topic and waits for its result: 0, or -1 having said why.
 * The broker answers when the operation is done, within 60 s.
 */
static int topic_admin(struct bench *b, const char *name, int partitions,
                       bool is_create)
{
    rd_kafka_AdminOptions_t *options = rd_kafka_AdminOptions_new(
        b->admin, is_create ? RD_KAFKA_ADMIN_OP_CREATETOPICS
                            : RD_KAFKA_ADMIN_OP_DELETETOPICS);
    rd_kafka_queue_t *q = rd_kafka_queue_new(b->admin);
    rd_kafka_NewTopic_t *nt = NULL;
    rd_kafka_DeleteTopic_t *dt = NULL;
    const rd_kafka_topic_result_t **results = NULL;
    rd_kafka_event_t *ev;
    size_t count = 0;
    char errstr[256];
    int rc = -1;

    rd_kafka_AdminOptions_set_operation_timeout(options, 60000, errstr,
                                                sizeof(errstr));
    if (is_create) {
        nt = rd_kafka_NewTopic_new(name, partitions, 1, errstr, sizeof(errstr));
        if (nt != NULL)
            rd_kafka_CreateTopics(b->admin, &nt, 1, options, q);
    } else {
        dt = rd_kafka_DeleteTopic_new(name);
        rd_kafka_DeleteTopics(b->admin, &dt, 1, options, q);
    }
    ev = nt != NULL || dt != NULL ? rd_kafka_queue_poll(q, 90000) : NULL;
    if (ev != NULL && is_create && rd_kafka_event_CreateTopics_result(ev))
        results = rd_kafka_CreateTopics_result_topics(
            rd_kafka_event_CreateTopics_result(ev), &count);
    else if (ev != NULL && !is_create && rd_kafka_event_DeleteTopics_result(ev))
        results = rd_kafka_DeleteTopics_result_topics(
            rd_kafka_event_DeleteTopics_result(ev), &count);
    if (count == 1 &&
        rd_kafka_topic_result_error(results[0]) == RD_KAFKA_RESP_ERR_NO_ERROR)
        rc = 0;
    else
        say("could not %s topic %s: %s", is_create ? "create" : "delete", name,
            count == 1 ? rd_kafka_topic_result_error_string(results[0])
            : ev != NULL && rd_kafka_event_error(ev)
                ? rd_kafka_event_error_string(ev)
                : "no answer");
    if (ev)
        rd_kafka_event_destroy(ev);
    if (nt)
        rd_kafka_NewTopic_destroy(nt);
    if (dt)
        rd_kafka_DeleteTopic_destroy(dt);
    rd_kafka_queue_destroy(q);
    rd_kafka_AdminOptions_destroy(options);
    return rc;
}

/* True when the metadata shows partitions partitions, each with a leader. */
static bool has_leaders(const rd_kafka_metadata_t *md, int partitions)
{
    if (md->topic_cnt != 1 || md->topics[0].err != RD_KAFKA_RESP_ERR_NO_ERROR ||
        md->topics[0].partition_cnt != partitions)
        return false;
    for (int i = 0; i < partitions; i++) {
        if (md->topics[0].partitions[i].leader < 0)
            return false;
    }
    return true;
}

/*
 * Waits up to 30 s until every partition of a new topic has a leader, so
 * that no phase times a broker electing leaders.  0, or -1 having said so.
 */
static int topic_wait_ready(struct bench *b, const char *name, int partitions)
{
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(b->admin, name, NULL);
    int64_t deadline = mw_monotonic_ns() + 30LL * 1000000000LL;
    bool is_ready = false;

    while (rkt != NULL && !is_ready && mw_monotonic_ns() < deadline) {
        const rd_kafka_metadata_t *md = NULL;

        if (rd_kafka_metadata(b->admin, 0, rkt, &md, 5000) ==
            RD_KAFKA_RESP_ERR_NO_ERROR) {
            is_ready = has_leaders(md, partitions);
            rd_kafka_metadata_destroy(md);
        }
        if (!is_ready)
            mw_sleep_ms(100);
    }
    if (rkt != NULL)
        rd_kafka_topic_destroy(rkt);
    if (!is_ready)
        say("topic %s has no leader for every partition after 30 s", name);
    return is_ready ? 0 : -1;
}

int topic_create(struct bench *b, const char *name, int partitions)
{
    if (!b->is_mock)
        return topic_admin(b, name, partitions, true) < 0
                   ? -1
                   : topic_wait_ready(b, name, partitions);
    if (rd_kafka_mock_topic_create(b->mc, name, partitions, 1) !=
        RD_KAFKA_RESP_ERR_NO_ERROR) {
        say("could not create topic %s", name);
        return -1;
    }
    return 0;
}

/*
 * The mock cluster cannot delete a topic; it goes with the cluster at the
 * end of the run.
 */
void topic_drop(struct bench *b, const char *name)
{
    if (!b->is_mock)
        topic_admin(b, name, 0, false);
}

int topics_create(struct bench *b, const char *what, struct topics *t)
{
    snprintf(t->requests, sizeof(t->requests), "bench.%08x.%s.requests", b->tag,
             what);
    snprintf(t->events, sizeof(t->events), "bench.%08x.%s.events", b->tag,
             what);
    snprintf(t->dlq, sizeof(t->dlq), "bench.%08x.%s.dlq", b->tag, what);
    snprintf(t->group, sizeof(t->group), "bench-%08x-%s", b->tag, what);
    if (topic_create(b, t->requests, b->partitions) < 0 ||
        topic_create(b, t->events, b->partitions) < 0 ||
        topic_create(b, t->dlq, 1) < 0)
        return -1;
    return 0;
}

void topics_drop(struct bench *b, const struct topics *t)
{
    topic_drop(b, t->requests);
    topic_drop(b, t->events);
    topic_drop(b, t->dlq);
}

static atomic_long delivery_failures;

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *rkm,
                        void *opaque)
{
    if (rkm->err != RD_KAFKA_RESP_ERR_NO_ERROR)
        atomic_fetch_add(&delivery_failures, 1);
    else if (rkm->_private != NULL)
        *(int64_t *)rkm->_private = mw_monotonic_ns();
}

rd_kafka_t *producer_new(const struct bench *b, const char *linger)
{
    rd_kafka_conf_t *conf = kafka_conf(b);
    rd_kafka_t *rk;
    char errstr[256];

    conf_set(conf, "linger.ms", linger);
    /* Batches of at most 64 KB, not librdkafka's 1 MB: the mock cluster
     * answers a fetch with a whole batch of each partition, whatever the
     * consumer's fetch limits, so 1 MB batches on 64 partitions would hand
     * a worker 64 MB at once.  A portal sending one request per form
     * makes far smaller batches; a broker honours the limits anyway. */
    conf_set(conf, "batch.size", "65536");
    conf_set(conf, "queue.buffering.max.messages", "1000000");
    conf_set(conf, "queue.buffering.max.kbytes", "1048576");
    conf_set(conf, "enable.idempotence", "true");
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (rk == NULL) {
        say("could not create a producer: %s", errstr);
        exit(1);
    }
    return rk;
}

int produce(rd_kafka_t *rk, const char *topic, const void *key, size_t key_len,
            const void *value, size_t len)
{
    return produce_acked(rk, topic, key, key_len, value, len, NULL);
}

int produce_acked(rd_kafka_t *rk, const char *topic, const void *key,
                  size_t key_len, const void *value, size_t len,
                  int64_t *acked_ns)
{
    rd_kafka_resp_err_t kerr;

    for (;;) {
        kerr = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic),
                                 RD_KAFKA_V_KEY(key, key_len),
                                 RD_KAFKA_V_VALUE((void *)value, len),
                                 RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                 RD_KAFKA_V_OPAQUE(acked_ns), RD_KAFKA_V_END);
        if (kerr != RD_KAFKA_RESP_ERR__QUEUE_FULL)
            break;
        rd_kafka_poll(rk, 10);
    }
    if (kerr != RD_KAFKA_RESP_ERR_NO_ERROR) {
        say("could not produce to %s: %s", topic, rd_kafka_err2str(kerr));
        return -1;
    }
    rd_kafka_poll(rk, 0);
    return 0;
}

int flush_all(rd_kafka_t *rk)
{
    if (rd_kafka_flush(rk, 120000) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        atomic_load(&delivery_failures) != 0) {
        say("not every message was delivered (%ld failed)",
            atomic_load(&delivery_failures));
        return -1;
    }
    return 0;
}

/*
 * A consumer of every partition of topic from the start: assigned, not
 * subscribed, so there is no group join to wait for.  fetch_wait is its
 * fetch.wait.max.ms: the mock cluster answers a fetch that finds nothing
 * only after that long, even when a message arrives meanwhile.
 */
rd_kafka_t *consumer_new_waiting(const struct bench *b, const char *topic,
                                 const char *fetch_wait)
{
    rd_kafka_conf_t *conf = kafka_conf(b);
    rd_kafka_topic_partition_list_t *parts;
    rd_kafka_t *rk;
    char errstr[256], group[160];

    snprintf(group, sizeof(group), "bench-reader-%08x", b->tag);
    conf_set(conf, "group.id", group);
    conf_set(conf, "enable.auto.commit", "false");
    conf_set(conf, "fetch.wait.max.ms", fetch_wait);
    rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (rk == NULL) {
        say("could not create a consumer: %s", errstr);
        exit(1);
    }
    rd_kafka_poll_set_consumer(rk);
    parts = rd_kafka_topic_partition_list_new(b->partitions);
    for (int p = 0; p < b->partitions; p++)
        rd_kafka_topic_partition_list_add(parts, topic, p)->offset =
            RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_assign(rk, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    return rk;
}

rd_kafka_t *consumer_new(const struct bench *b, const char *topic)
{
    return consumer_new_waiting(b, topic, b->is_mock ? "10" : "500");
}
