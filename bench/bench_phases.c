/*
 * The worker measured: throughput on a preloaded backlog, latency at a
 * fixed request rate, and trials converting at once.  Each phase has its
 * own database, topics and group, and is void when an outcome is lost or
 * doubled.
 */
#include "bench.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int phase_throughput(struct bench *b, enum phase phase, int replicas,
                     struct throughput *out)
{
    const char *what = phase == PHASE_ONE ? "one" : "many";
    char name[64];
    char *conninfo;
    struct topics t;
    struct env env;
    struct worker_set ws;
    struct collector *c;
    int64_t start;
    long n = b->opt.n;
    int rc;

    say("throughput: %ld preloaded requests, %d worker(s)", n, replicas);
    db_name(b, what, name, sizeof(name));
    conninfo = db_create(b, name);
    if (conninfo == NULL || topics_create(b, what, &t) < 0 ||
        preload(b, phase, t.requests, 0, n, false) < 0) {
        free(conninfo);
        topics_drop(b, &t);
        return -1;
    }
    worker_env(b, &env, conninfo, &t);
    c = collector_start(b, phase, t.events, "CustomerCreated", n);
    start = mw_monotonic_ns();
    if (workers_start(b, &ws, replicas, &env, what) < 0)
        return -1;
    rc = collector_wait(c, n);
    workers_stop(&ws);
    /* Late duplicates would show now. */
    mw_sleep_ms(500);
    memset(out, 0, sizeof(*out));
    out->outcomes = atomic_load(&c->distinct);
    out->duplicates = atomic_load(&c->duplicates);
    out->rejected = atomic_load(&c->rejected);
    if (rc == 0) {
        int64_t first = atomic_load(&c->first_ns);
        int64_t last = atomic_load(&c->last_ns);

        out->seconds = seconds(last - start);
        out->rps = (double)n / seconds(last - first);
        out->wall_rps = (double)n / seconds(last - start);
    }
    out->workers = replicas;
    for (int i = 0; i < replicas; i++)
        out->mem[i] = worker_memory(&ws, i);
    say("  %ld outcomes (%ld duplicates, %ld rejected): %.0f requests/s "
        "(%.0f with start-up)",
        out->outcomes, out->duplicates, out->rejected, out->rps, out->wall_rps);
    if (out->outcomes != n || out->duplicates != 0 || out->rejected != 0) {
        say("  outcome count %ld is not %ld (or duplicates/rejections): "
            "the run is void; logs in %s",
            out->outcomes, n, b->tmpdir);
        b->is_void = true;
        rc = -1;
    }
    collector_stop(c);
    workers_free(&ws);
    free(conninfo);
    db_drop(b, name);
    topics_drop(b, &t);
    return rc;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

/*
 * Sends the warm-up request (index 0) and waits for its answer, then
 * requests 1..n-1 at b->opt.rate, each at its slot; sent_ns[i] is when
 * request i was handed to librdkafka.  0, or -1 having said why.
 */
static int latency_send(struct bench *b, const struct topics *t,
                        struct collector *c, long n, int64_t *sent_ns,
                        struct latency *out)
{
    /* The portal's producer: no linger, so produce time is send time. */
    rd_kafka_t *rk = producer_new(b, "0");
    int64_t period_ns = 1000000000LL / b->opt.rate, t0;
    struct request_text rt;
    const void *value;
    size_t len;
    struct timespec next;
    int rc = 0;

    arena_reset(b->arena);
    if (request_encode(b, PHASE_LATENCY, 0, false, &value, &len, &rt) < 0 ||
        produce(rk, t->requests, rt.msp_id, strlen(rt.msp_id), value, len) <
            0 ||
        collector_wait(c, 1) < 0) {
        say("  the worker never answered the warm-up request");
        rd_kafka_destroy(rk);
        return -1;
    }
    clock_gettime(CLOCK_MONOTONIC, &next);
    t0 = mw_monotonic_ns();
    for (long i = 1; i < n && rc == 0; i++) {
        if (i % 1000 == 0)
            arena_reset(b->arena);
        /* Encode first, then wait for the slot, so the time is the send. */
        rc = request_encode(b, PHASE_LATENCY, i, false, &value, &len, &rt);
        if (rc < 0)
            break;
        next.tv_nsec += period_ns;
        while (next.tv_nsec >= 1000000000L) {
            next.tv_nsec -= 1000000000L;
            next.tv_sec++;
        }
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) ==
               EINTR)
            ;
        sent_ns[i] = mw_monotonic_ns();
        rc = produce(rk, t->requests, rt.msp_id, strlen(rt.msp_id), value, len);
        out->sent += rc == 0;
    }
    out->achieved_rate = (double)out->sent / seconds(mw_monotonic_ns() - t0);
    if (rc == 0 && (flush_all(rk) < 0 || collector_wait(c, n) < 0))
        rc = -1;
    rd_kafka_destroy(rk);
    return rc;
}

/* The percentiles of the requests answered, from send to arrival. */
static void latency_figures(const struct collector *c, long n,
                            const int64_t *sent_ns, struct latency *out)
{
    double *lat = xcalloc((size_t)n, sizeof(double));

    for (long i = 1; i < n; i++) {
        if (c->seen[i] && sent_ns[i] != 0)
            lat[out->received++] =
                (double)(c->received_ns[i] - sent_ns[i]) / 1e6;
    }
    if (out->received > 0) {
        qsort(lat, (size_t)out->received, sizeof(double), cmp_double);
        out->p50 = lat[(size_t)((double)(out->received - 1) * 0.50)];
        out->p95 = lat[(size_t)((double)(out->received - 1) * 0.95)];
        out->p99 = lat[(size_t)((double)(out->received - 1) * 0.99)];
        out->max = lat[out->received - 1];
    }
    free(lat);
}

int phase_latency(struct bench *b, struct latency *out)
{
    char name[64];
    char *conninfo;
    struct topics t;
    struct env env;
    struct worker_set ws;
    struct collector *c;
    long total = (long)b->opt.rate * b->opt.latency_seconds;
    long n = total + 1; /* index 0 is the warm-up request */
    int64_t *sent_ns;
    int rc;

    say("latency: %d requests/s for %d s", b->opt.rate, b->opt.latency_seconds);
    memset(out, 0, sizeof(*out));
    db_name(b, "latency", name, sizeof(name));
    conninfo = db_create(b, name);
    if (conninfo == NULL || topics_create(b, "latency", &t) < 0) {
        free(conninfo);
        return -1;
    }
    worker_env(b, &env, conninfo, &t);
    c = collector_start(b, PHASE_LATENCY, t.events, "CustomerCreated", n);
    if (workers_start(b, &ws, 1, &env, "latency") < 0)
        return -1;
    sent_ns = xcalloc((size_t)n, sizeof(int64_t));
    rc = latency_send(b, &t, c, n, sent_ns, out);
    workers_stop(&ws);
    out->peak_mb = workers_peak_mb(&ws);
    latency_figures(c, n, sent_ns, out);
    say("  %ld sent, %ld answered: p50 %.1f ms, p95 %.1f ms, p99 %.1f ms, "
        "max %.1f ms",
        out->sent, out->received, out->p50, out->p95, out->p99, out->max);
    if (rc == 0 && (out->received != total || c->duplicates || c->rejected)) {
        say("  not every request was answered exactly once: void");
        rc = -1;
    }
    b->is_void |= rc != 0;
    free(sent_ns);
    collector_stop(c);
    workers_free(&ws);
    free(conninfo);
    db_drop(b, name);
    topics_drop(b, &t);
    return rc;
}

int phase_timers(struct bench *b, struct timers *out)
{
    char name[64];
    char *conninfo;
    struct topics t;
    struct env env;
    struct worker_set ws;
    struct collector *c;
    long n = b->opt.timers;
    int64_t start;
    int rc;

    memset(out, 0, sizeof(*out));
    say("timers: %ld trials converting at once", n);
    db_name(b, "timers", name, sizeof(name));
    conninfo = db_create(b, name);
    if (conninfo == NULL || topics_create(b, "timers", &t) < 0 ||
        preload(b, PHASE_TIMERS, t.requests, 0, n, true) < 0) {
        free(conninfo);
        topics_drop(b, &t);
        return -1;
    }
    /* First the trials, created by the worker itself. */
    worker_env(b, &env, conninfo, &t);
    env_set(&env, "MESH_WORKER_TRIAL_PERIOD", "14d");
    env_set(&env, "MESH_WORKER_TRIAL_REMINDER", "0");
    c = collector_start(b, PHASE_TIMERS, t.events, "CustomerCreated", n);
    if (workers_start(b, &ws, 1, &env, "timers-create") < 0)
        return -1;
    rc = collector_wait(c, n);
    workers_stop(&ws);
    out->peak_mb = workers_peak_mb(&ws);
    workers_free(&ws);
    collector_stop(c);
    if (rc < 0) {
        say("  the trials were not all created: void");
        b->is_void = true;
        goto done;
    }
    /* Then a worker whose clock is past every trial's end. */
    env_set(&env, "MESH_WORKER_CLOCK_OFFSET_MS", "1296000000");
    c = collector_start(b, PHASE_TIMERS, t.events, "TrialConverted", n);
    start = mw_monotonic_ns();
    if (workers_start(b, &ws, 1, &env, "timers-fire") < 0)
        return -1;
    rc = collector_wait(c, n);
    workers_stop(&ws);
    if (workers_peak_mb(&ws) > out->peak_mb)
        out->peak_mb = workers_peak_mb(&ws);
    workers_free(&ws);
    out->fired = atomic_load(&c->distinct);
    if (rc == 0) {
        out->seconds = seconds(atomic_load(&c->last_ns) - start);
        out->fire_seconds =
            seconds(atomic_load(&c->last_ns) - atomic_load(&c->first_ns));
    }
    say("  %ld TrialConverted (%ld duplicates) in %.2f s from start "
        "(%.2f s first to last)",
        out->fired, atomic_load(&c->duplicates), out->seconds,
        out->fire_seconds);
    if (out->fired != n || atomic_load(&c->duplicates) != 0) {
        b->is_void = true;
        rc = -1;
    }
    collector_stop(c);
done:
    free(conninfo);
    db_drop(b, name);
    topics_drop(b, &t);
    return rc;
}
