/*
 * The raw limits the worker is measured against, in the same run: COPY of
 * exactly the rows the worker writes (the PostgreSQL ceiling), and
 * librdkafka alone producing and consuming messages of a request's size
 * (the Kafka ceiling).
 */
#include "bench.h"
#include "kafka.h"

#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>

/* COPY data of one slice of the rows. */
struct slice {
    struct buf customers, domains, requests, outbox;
    const char *conninfo;
    int failed;
};

static void ceiling_rows(struct bench *b, struct slice *s, long index,
                         const char *ts)
{
    struct request_text t;
    struct mw_record rec;
    struct mw_customer_created *c = &rec.u.created;
    struct mw_request r;
    struct kafka_headers_buf hb;
    struct mw_error err;
    char event_id[IDS_UUID_LEN + 1];
    unsigned char hash[32];
    const void *payload;
    size_t payload_len;

    request_fill(b, PHASE_CEILING, index, false, &t, &r);
    ids_event_id("CustomerCreated", t.request_id, event_id);
    memset(&rec, 0, sizeof(rec));
    rec.type = MW_REC_CUSTOMER_CREATED;
    c->event_id = event_id;
    c->customer_id = t.customer_id;
    c->request_id = t.request_id;
    c->msp_id = r.msp_id;
    c->occurred_at = 1764000000000LL;
    c->requested_by = r.requested_by;
    c->company_name = r.company_name;
    c->primary_domain = r.primary_domain;
    c->additional_domains = r.additional_domains;
    c->additional_domains_count = r.additional_domains_count;
    c->mail_platform = r.mail_platform;
    c->service = r.service;
    c->account_type = r.account_type;
    c->licenses = r.licenses;
    c->billable = true;
    c->has_billing_starts_at = true;
    c->billing_starts_at = c->occurred_at;
    c->default_admin_email = r.default_admin_email;
    c->delivery_destination = r.delivery_destination;
    c->apply_global_rules = r.apply_global_rules;
    c->msp_management = r.msp_management;
    c->installation = MW_INSTALL_MX_RECORDS;
    if (codec_encode(b->codec, &rec, b->arena, &payload, &payload_len, &err) <
        0) {
        say("could not encode CustomerCreated: %s", err.msg);
        exit(1);
    }
    kafka_headers_init(&hb, b->arena);
    if (kafka_headers_add(&hb, "event_type", "CustomerCreated", 15) ||
        kafka_headers_add(&hb, "event_id", event_id, IDS_UUID_LEN) ||
        kafka_headers_add(&hb, "request_id", t.request_id, IDS_UUID_LEN)) {
        say("out of memory");
        exit(1);
    }
    SHA256((const unsigned char *)t.request_id, IDS_UUID_LEN, hash);

    buf_printf(&s->customers,
               "%s\t%s\t%s\t%s\t%s\t%s\t%s\t{\"%s\"}\t%s\t%s\t%s\t%d\t%s\t%s\t"
               "\\N\tt\tt\tf\tf\tt\tACTIVE\t%s\t%s\t\\N\t\\N\t\\N\n",
               t.customer_id, t.request_id, r.msp_id, r.msp_domain,
               r.requested_by, r.company_name, r.primary_domain, t.additional,
               mw_mail_platform_names[r.mail_platform],
               mw_service_names[r.service],
               mw_account_type_names[r.account_type], (int)r.licenses,
               r.default_admin_email, r.delivery_destination, ts, ts);
    buf_printf(&s->domains, "%s\t%s\tt\n%s\t%s\tf\n", t.primary, t.customer_id,
               t.additional, t.customer_id);
    buf_printf(&s->requests, "%s\tcustomer\t%s\t", t.request_id, r.msp_id);
    buf_bytea(&s->requests, hash, sizeof(hash));
    buf_printf(&s->requests, "\tCREATED\t%s\t%s\n", t.customer_id, ts);
    buf_printf(&s->outbox, "0\t%s\t", event_id);
    buf_bytea(&s->outbox, t.customer_id, IDS_UUID_LEN);
    buf_printf(&s->outbox, "\t");
    buf_bytea(&s->outbox, hb.buf, hb.len);
    buf_printf(&s->outbox, "\t");
    buf_bytea(&s->outbox, payload, payload_len);
    buf_printf(&s->outbox, "\n");
}

static int copy_in(PGconn *conn, const char *sql, const struct buf *data)
{
    PGresult *res = PQexec(conn, sql);
    size_t off = 0;

    if (PQresultStatus(res) != PGRES_COPY_IN) {
        say("%s: %s", sql, PQerrorMessage(conn));
        PQclear(res);
        return -1;
    }
    PQclear(res);
    while (off < data->len) {
        size_t chunk = data->len - off > 1 << 20 ? 1 << 20 : data->len - off;

        if (PQputCopyData(conn, data->p + off, (int)chunk) != 1) {
            say("COPY failed: %s", PQerrorMessage(conn));
            return -1;
        }
        off += chunk;
    }
    if (PQputCopyEnd(conn, NULL) != 1) {
        say("COPY failed: %s", PQerrorMessage(conn));
        return -1;
    }
    res = PQgetResult(conn);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        say("%s: %s", sql, PQerrorMessage(conn));
        PQclear(res);
        return -1;
    }
    PQclear(res);
    while ((res = PQgetResult(conn)) != NULL)
        PQclear(res);
    return 0;
}

/* One connection's share: all four tables in one transaction. */
static int copy_slices(PGconn *conn, struct slice *slices, int count)
{
    static const char copy_customers[] =
        "COPY customers (customer_id, request_id, msp_id, msp_domain, "
        "requested_by, company_name, primary_domain, additional_domains, "
        "mail_platform, service, account_type, licenses, "
        "default_admin_email, delivery_destination, policy_template_id, "
        "apply_global_rules, msp_management, two_factor_required, "
        "monitor_mode, billable, status, created_at, billing_starts_at, "
        "trial_ends_at, terminated_at, traceparent) FROM STDIN";
    static const char copy_domains[] =
        "COPY customer_domains (domain, customer_id, is_primary) FROM STDIN";
    static const char copy_requests[] =
        "COPY requests (request_id, kind, msp_id, payload_hash, outcome, "
        "customer_id, processed_at) FROM STDIN";
    static const char copy_outbox[] =
        "COPY outbox (stream, event_id, key, headers, payload) FROM STDIN";

    if (pg_exec(conn, "BEGIN") < 0)
        return -1;
    for (int i = 0; i < count; i++) {
        if (copy_in(conn, copy_requests, &slices[i].requests) < 0 ||
            copy_in(conn, copy_domains, &slices[i].domains) < 0 ||
            copy_in(conn, copy_customers, &slices[i].customers) < 0 ||
            copy_in(conn, copy_outbox, &slices[i].outbox) < 0)
            return -1;
    }
    return pg_exec(conn, "COMMIT");
}

struct copy_job {
    PGconn *conn;
    struct slice *slices;
    int count;
    int rc;
};

static void *copy_thread(void *arg)
{
    struct copy_job *job = arg;

    job->rc = copy_slices(job->conn, job->slices, job->count);
    return NULL;
}

/* Rows/s of one attempt with conns connections, or -1. */
static double ceiling_attempt(const char *conninfo, struct slice *slices,
                              int nslices, int conns, long n)
{
    struct copy_job jobs[8];
    pthread_t threads[8];
    PGconn *setup = pg_connect(conninfo);
    int64_t start, elapsed;
    int rc = 0;

    if (setup == NULL ||
        pg_exec(setup, "TRUNCATE customers, customer_domains, requests, "
                       "outbox CASCADE") < 0 ||
        pg_exec(setup, "CHECKPOINT") < 0) {
        PQfinish(setup);
        return -1;
    }
    PQfinish(setup);
    for (int i = 0; i < conns; i++) {
        jobs[i].conn = pg_connect(conninfo);
        if (jobs[i].conn == NULL)
            return -1;
        jobs[i].slices = slices + i * (nslices / conns);
        jobs[i].count = nslices / conns;
    }
    start = mw_monotonic_ns();
    for (int i = 0; i < conns; i++)
        pthread_create(&threads[i], NULL, copy_thread, &jobs[i]);
    for (int i = 0; i < conns; i++) {
        pthread_join(threads[i], NULL);
        rc |= jobs[i].rc;
    }
    elapsed = mw_monotonic_ns() - start;
    for (int i = 0; i < conns; i++)
        PQfinish(jobs[i].conn);
    return rc == 0 ? (double)n / seconds(elapsed) : -1;
}

int phase_ceiling(struct bench *b, double *ceiling)
{
    enum { SLICES = 2 };
    struct slice slices[SLICES];
    char name[64], log[PATH_MAX + 32];
    char *conninfo;
    struct env env;
    double best = 0;
    long n = b->opt.n;
    int rc = -1;

    say("PostgreSQL ceiling: COPY of the rows of %ld requests", n);
    db_name(b, "ceiling", name, sizeof(name));
    conninfo = db_create(b, name);
    if (conninfo == NULL)
        return -1;
    env_init(&env);
    env_set(&env, "MESH_WORKER_DATABASE_URL", conninfo);
    snprintf(log, sizeof(log), "%s/migrate.log", b->tmpdir);
    {
        char *argv[] = {b->worker, "migrate", NULL};

        if (run_wait(argv, NULL, log, env.v) != 0) {
            say("mesh-worker migrate failed; see %s", log);
            goto done;
        }
    }
    memset(slices, 0, sizeof(slices));
    for (long i = 0; i < n; i++) {
        if (i % 1000 == 0)
            arena_reset(b->arena);
        ceiling_rows(b, &slices[i % SLICES], i, "2025-11-24 16:00:00+00");
    }
    put_int(b, "pg_ceiling_bytes",
            (long long)(slices[0].customers.len + slices[0].domains.len +
                        slices[0].requests.len + slices[0].outbox.len) *
                SLICES);
    for (int conns = 1; conns <= SLICES; conns *= 2) {
        double rate = ceiling_attempt(conninfo, slices, SLICES, conns, n);
        char key[64];

        if (rate < 0)
            goto done;
        say("  %d connection(s): %.0f requests/s", conns, rate);
        snprintf(key, sizeof(key), "pg_ceiling_%dconn_rps", conns);
        put_num(b, key, rate);
        if (rate > best)
            best = rate;
    }
    *ceiling = best;
    put_num(b, "pg_ceiling_rps", best);
    rc = 0;
done:
    for (int i = 0; i < SLICES; i++) {
        free(slices[i].customers.p);
        free(slices[i].domains.p);
        free(slices[i].requests.p);
        free(slices[i].outbox.p);
    }
    free(conninfo);
    db_drop(b, name);
    return rc;
}

/*
 * Produces one message, then n copies of payload to topic; the time the n
 * took, or -1.  The first one waits for what a producer does once (its
 * producer id, the topic's leaders), which a worker's figure excludes too.
 */
static int64_t produce_all(struct bench *b, const char *topic,
                           const void *payload, size_t len, long n)
{
    rd_kafka_t *rk = producer_new(b, "5");
    int64_t start;
    int rc;

    rc = produce(rk, topic, "warm-up", 7, payload, len);
    if (rc == 0)
        rc = flush_all(rk);
    start = mw_monotonic_ns();

    for (long i = 0; i < n && rc == 0; i++) {
        char key[32];
        int klen = snprintf(key, sizeof(key), "msp-%ld", i % MSP_COUNT);

        rc = produce(rk, topic, key, (size_t)klen, payload, len);
    }
    if (rc == 0)
        rc = flush_all(rk);
    rd_kafka_destroy(rk);
    return rc == 0 ? mw_monotonic_ns() - start : -1;
}

/*
 * Reads topic from the start until n messages came, or none came for
 * STALL_NS; the time from the first message to the last, as the worker
 * is measured, or -1 (void) when fewer than n came.  n includes the
 * warm-up message, which only starts the clock.
 */
static int64_t consume_all(struct bench *b, const char *topic, long n)
{
    rd_kafka_t *rk = consumer_new(b, topic);
    int64_t start = 0, waited = mw_monotonic_ns(), end;
    long got = 0;

    while (got < n && mw_monotonic_ns() - waited < STALL_NS) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);

        if (m == NULL)
            continue;
        if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            if (got++ == 0)
                start = mw_monotonic_ns();
            waited = mw_monotonic_ns();
        }
        rd_kafka_message_destroy(m);
    }
    end = mw_monotonic_ns();
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    if (got != n) {
        say("the Kafka ceiling read %ld of %ld messages: void", got, n);
        b->is_void = true;
        return -1;
    }
    return end - start;
}

int phase_kafka(struct bench *b, struct kafka_ceiling *out)
{
    char topic[128];
    struct request_text t;
    const void *value;
    size_t len;
    char *payload;
    int64_t produce_ns, consume_ns = -1;
    long n = b->opt.n;

    say("Kafka ceiling: %ld messages of %zu bytes", n, b->request_size);
    snprintf(topic, sizeof(topic), "bench.%08x.kafka", b->tag);
    arena_reset(b->arena);
    if (request_encode(b, PHASE_KAFKA, 0, false, &value, &len, &t) < 0 ||
        topic_create(b, topic, b->partitions) < 0)
        return -1;
    payload = xcalloc(len, 1);
    memcpy(payload, value, len);
    produce_ns = produce_all(b, topic, payload, len, n);
    free(payload);
    if (produce_ns >= 0)
        consume_ns = consume_all(b, topic, n + 1);
    topic_drop(b, topic);
    if (consume_ns < 0)
        return -1;
    out->produce_rps = (double)n / seconds(produce_ns);
    out->consume_rps = (double)n / seconds(consume_ns);
    /* A message is produced once and consumed once, as a request is. */
    out->ceiling = (double)n / seconds(produce_ns + consume_ns);
    say("  produce %.0f msgs/s, consume %.0f msgs/s, together %.0f msgs/s",
        out->produce_rps, out->consume_rps, out->ceiling);
    put_num(b, "kafka_produce_mps", out->produce_rps);
    put_num(b, "kafka_consume_mps", out->consume_rps);
    put_num(b, "kafka_ceiling_mps", out->ceiling);
    return 0;
}
