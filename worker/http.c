/*
 * Health and metrics over HTTP.  Handlers only read atomics from
 * metrics.h, so a scrape never takes a lock the worker holds and never
 * touches PostgreSQL or Kafka itself: readiness reflects what the
 * consumer, relay and scheduler saw on their last call.
 */
#include "http.h"

#include "metrics.h"

#include <microhttpd.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

struct http {
    struct MHD_Daemon *daemon;
    int port;
};

struct text {
    char *buf;
    size_t len;
    size_t cap;
};

static void append(struct text *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void append(struct text *t, const char *fmt, ...)
{
    va_list ap;
    int n;

    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
        va_end(ap);
        if (n < 0)
            return;
        if ((size_t)n < t->cap - t->len) {
            t->len += (size_t)n;
            return;
        }
        char *bigger = realloc(t->buf, t->cap * 2 + (size_t)n);

        if (bigger == NULL)
            return;
        t->buf = bigger;
        t->cap = t->cap * 2 + (size_t)n;
    }
}

static long long get(atomic_llong *v)
{
    return atomic_load_explicit(v, memory_order_relaxed);
}

static void counter(struct text *t, const char *name, const char *help,
                    atomic_llong *v)
{
    append(t, "# HELP %s %s\n# TYPE %s counter\n%s %lld\n", name, help, name,
           name, get(v));
}

static void gauge(struct text *t, const char *name, const char *help,
                  double value)
{
    append(t, "# HELP %s %s\n# TYPE %s gauge\n%s %.17g\n", name, help, name,
           name, value);
}

/* Fills reason (a JSON-safe sentence) when not ready; topic names are
 * letters, digits, '.', '_' and '-' only (config.c checks them). */
static int is_ready(char *reason, size_t size)
{
    const char *denied = atomic_load(&mw_metrics.write_denied_topic);

    if (!atomic_load(&mw_metrics.db_ready)) {
        snprintf(reason, size, "PostgreSQL is not reachable");
        return 0;
    }
    if (!atomic_load(&mw_metrics.kafka_ready)) {
        snprintf(reason, size,
                 "Kafka is not reachable or the consumer has "
                 "not joined its group");
        return 0;
    }
    if (denied != NULL) {
        snprintf(reason, size,
                 "Kafka denies Write on topic %s "
                 "(TOPIC_AUTHORIZATION_FAILED); the outbox "
                 "keeps its events",
                 denied);
        return 0;
    }
    reason[0] = '\0';
    return 1;
}

static char *render_metrics(size_t *len)
{
    struct text t = {malloc(8192), 0, 8192};
    char reason[400];
    long long cumulative = 0;

    if (t.buf == NULL)
        return NULL;
    t.buf[0] = '\0';
    counter(&t, "mesh_worker_requests_consumed_total",
            "Messages read from the requests topic.", &mw_metrics.consumed);
    counter(&t, "mesh_worker_customers_provisioned_total", "Customers created.",
            &mw_metrics.provisioned);
    counter(&t, "mesh_worker_customers_updated_total",
            "Customer updates applied.", &mw_metrics.updated);
    counter(&t, "mesh_worker_requests_rejected_total",
            "CustomerRejected events written (rules, taken domains, "
            "conflicts, terminations).",
            &mw_metrics.rejected);
    counter(&t, "mesh_worker_requests_duplicate_total",
            "Redelivered requests that changed nothing.",
            &mw_metrics.duplicates);
    counter(&t, "mesh_worker_request_id_conflicts_total",
            "Requests reusing a request id with other content.",
            &mw_metrics.conflicts);
    counter(&t, "mesh_worker_dlq_messages_total",
            "Messages sent to the dead-letter topic.", &mw_metrics.dlq);
    counter(&t, "mesh_worker_batches_total", "Batches committed to PostgreSQL.",
            &mw_metrics.batches);
    counter(&t, "mesh_worker_batch_failures_total",
            "Batches rolled back and retried.", &mw_metrics.batch_failures);
    counter(&t, "mesh_worker_events_published_total",
            "Outbox rows acknowledged by Kafka.", &mw_metrics.published);
    counter(&t, "mesh_worker_rebalances_total",
            "Partition assignments and revocations.", &mw_metrics.rebalances);
    counter(&t, "mesh_worker_timers_fired_total",
            "Lifecycle timers fired by this replica.",
            &mw_metrics.timers_fired);
    gauge(&t, "mesh_worker_outbox_backlog_rows",
          "Outbox rows not yet published.",
          (double)get(&mw_metrics.outbox_backlog));
    gauge(&t, "mesh_worker_outbox_oldest_age_seconds",
          "Age of the oldest unpublished outbox row.",
          (double)get(&mw_metrics.outbox_oldest_age_ms) / 1000.0);
    gauge(&t, "mesh_worker_consumer_lag_messages",
          "Messages behind the end of the assigned partitions.",
          (double)get(&mw_metrics.consumer_lag));
    gauge(&t, "mesh_worker_due_timers",
          "Lifecycle timers due and not yet fired.",
          (double)get(&mw_metrics.due_timers));
    gauge(&t, "mesh_worker_assigned_partitions",
          "Partitions of the requests topic assigned to this replica.",
          (double)get(&mw_metrics.assigned_partitions));
    gauge(&t, "mesh_worker_ready", "1 when /readyz answers 200.",
          is_ready(reason, sizeof(reason)));
    append(&t, "# HELP mesh_worker_batch_duration_seconds Time from a "
               "batch's first message to its commit.\n"
               "# TYPE mesh_worker_batch_duration_seconds histogram\n");
    for (int i = 0; i < METRICS_LATENCY_BUCKETS; i++) {
        cumulative += get(&mw_metrics.latency_buckets[i]);
        if (i == METRICS_LATENCY_BUCKETS - 1)
            append(&t,
                   "mesh_worker_batch_duration_seconds_bucket"
                   "{le=\"+Inf\"} %lld\n",
                   cumulative);
        else
            append(&t,
                   "mesh_worker_batch_duration_seconds_bucket"
                   "{le=\"%g\"} %lld\n",
                   metrics_latency_bounds[i], cumulative);
    }
    append(&t, "mesh_worker_batch_duration_seconds_sum %.6f\n",
           (double)get(&mw_metrics.latency_sum_us) / 1e6);
    append(&t, "mesh_worker_batch_duration_seconds_count %lld\n",
           get(&mw_metrics.latency_count));
    *len = t.len;
    return t.buf;
}

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status,
                             const char *type, char *body, size_t len,
                             enum MHD_ResponseMemoryMode mode)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, body, mode);
    enum MHD_Result rc;

    if (resp == NULL)
        return MHD_NO;
    MHD_add_response_header(resp, "Content-Type", type);
    rc = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return rc;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn,
                              const char *url, const char *method,
                              const char *version, const char *upload,
                              size_t *upload_len, void **state)
{
    static char ok[] = "{\"status\":\"ok\"}\n";
    static char not_found[] = "{\"error\":\"not found\"}\n";
    static char bad_method[] = "{\"error\":\"method not allowed\"}\n";
    const char *json = "application/json";

    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, json, bad_method,
                     strlen(bad_method), MHD_RESPMEM_PERSISTENT);
    if (strcmp(url, "/healthz") == 0)
        return reply(conn, MHD_HTTP_OK, json, ok, strlen(ok),
                     MHD_RESPMEM_PERSISTENT);
    if (strcmp(url, "/readyz") == 0) {
        char reason[400], body[512];
        int n;

        if (is_ready(reason, sizeof(reason)))
            return reply(conn, MHD_HTTP_OK, json, ok, strlen(ok),
                         MHD_RESPMEM_PERSISTENT);
        n = snprintf(body, sizeof(body),
                     "{\"status\":\"not ready\",\"reason\":\"%s\"}\n", reason);
        return reply(conn, MHD_HTTP_SERVICE_UNAVAILABLE, json, body, (size_t)n,
                     MHD_RESPMEM_MUST_COPY);
    }
    if (strcmp(url, "/metrics") == 0) {
        size_t len;
        char *text = render_metrics(&len);

        if (text == NULL)
            return MHD_NO;
        return reply(conn, MHD_HTTP_OK, "text/plain; version=0.0.4", text, len,
                     MHD_RESPMEM_MUST_FREE);
    }
    return reply(conn, MHD_HTTP_NOT_FOUND, json, not_found, strlen(not_found),
                 MHD_RESPMEM_PERSISTENT);
}

struct http *http_start(const char *addr, struct mw_error *err)
{
    struct http *h = calloc(1, sizeof(*h));
    const char *colon = strrchr(addr, ':');
    char host[256];
    struct addrinfo hints, *ai = NULL;
    const union MHD_DaemonInfo *info;
    int rc;

    if (h == NULL) {
        mw_error_no_memory(err);
        return NULL;
    }
    if (colon == NULL || (size_t)(colon - addr) >= sizeof(host)) {
        mw_error_set(err, MW_ERR_CONFIG, false,
                     "invalid value for MESH_WORKER_HTTP_ADDR: \"%s\"", addr);
        goto fail;
    }
    snprintf(host, sizeof(host), "%.*s", (int)(colon - addr), addr);
    /* [::1]:9464 */
    if (host[0] == '[' && host[strlen(host) - 1] == ']') {
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = '\0';
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    rc = getaddrinfo(host[0] ? host : NULL, colon + 1, &hints, &ai);
    if (rc != 0) {
        mw_error_set(err, MW_ERR_CONFIG, false,
                     "invalid value for MESH_WORKER_HTTP_ADDR: \"%s\"", addr);
        mw_error_detail(err, "%s", gai_strerror(rc));
        goto fail;
    }
    h->daemon = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG |
            (ai->ai_family == AF_INET6 ? MHD_USE_IPv6 : 0),
        0, NULL, NULL, handle, NULL, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)10,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned int)64, MHD_OPTION_END);
    freeaddrinfo(ai);
    if (h->daemon == NULL) {
        mw_error_set(err, MW_ERR_CONFIG, false,
                     "could not listen on MESH_WORKER_HTTP_ADDR \"%s\"", addr);
        mw_error_hint(err, "Is another process using the port? An empty "
                           "value disables the listener.");
        goto fail;
    }
    info = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
    h->port = info ? info->port : 0;
    return h;
fail:
    free(h);
    return NULL;
}

int http_port(const struct http *http)
{
    return http->port;
}

void http_stop(struct http *http)
{
    if (http == NULL)
        return;
    MHD_stop_daemon(http->daemon);
    free(http);
}
