/*
 * The worker measured: throughput on a preloaded backlog, latency at a
 * fixed request rate, and trials converting at once.  Each phase has its
 * own database, topics and group, and is void when an outcome is lost or
 * doubled.
 */
#include "bench.h"

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

/* When each request of the latency run was sent and acknowledged. */
struct sends {
    int64_t *sent_ns, *acked_ns; /* monotonic */
    int64_t *sent_wall_us;       /* epoch µs, against the worker's stamps */
};

static int64_t wall_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/*
 * Waits for the slot at next, serving delivery reports meanwhile so that
 * an acknowledgement is stamped when it comes, not at the next send.
 */
static void wait_slot(rd_kafka_t *rk, const struct timespec *next)
{
    for (;;) {
        struct timespec now, nap = {0, 200000};
        int64_t left;

        rd_kafka_poll(rk, 0);
        clock_gettime(CLOCK_MONOTONIC, &now);
        left = (int64_t)(next->tv_sec - now.tv_sec) * 1000000000LL +
               (next->tv_nsec - now.tv_nsec);
        if (left <= 0)
            return;
        if (left < nap.tv_nsec)
            nap.tv_nsec = (long)left;
        nanosleep(&nap, NULL);
    }
}

/*
 * Sends the warm-up request (index 0) and waits for its answer, then
 * requests 1..n-1 at b->opt.rate, each at its slot; s->sent_ns[i] is when
 * request i was handed to librdkafka.  0, or -1 having said why.
 */
static int latency_send(struct bench *b, const struct topics *t,
                        struct collector *c, long n, const struct sends *s,
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
        wait_slot(rk, &next);
        s->sent_ns[i] = mw_monotonic_ns();
        s->sent_wall_us[i] = wall_us();
        rc = produce_acked(rk, t->requests, rt.msp_id, strlen(rt.msp_id), value,
                           len, &s->acked_ns[i]);
        out->sent += rc == 0;
    }
    out->achieved_rate = (double)out->sent / seconds(mw_monotonic_ns() - t0);
    if (rc == 0 && (flush_all(rk) < 0 || collector_wait(c, n) < 0))
        rc = -1;
    rd_kafka_destroy(rk);
    return rc;
}

/* The quantile q of the count sorted values in v. */
static double quantile(const double *v, long count, double q)
{
    return v[(size_t)((double)(count - 1) * q)];
}

/* p50 and p99 of the count values in v (sorted here). */
static struct leg leg_of(double *v, long count)
{
    struct leg leg = {0, 0};

    if (count > 0) {
        qsort(v, (size_t)count, sizeof(double), cmp_double);
        leg.p50 = quantile(v, count, 0.50);
        leg.p99 = quantile(v, count, 0.99);
    }
    return leg;
}

/*
 * The legs of the way of each request answered, ms: the worker's and the
 * relay's stamps are epoch milliseconds, so those legs are exact to 1 ms.
 */
static void latency_legs(const struct collector *c, long n,
                         const struct sends *s, struct latency *out)
{
    double *v[4];
    long count[4] = {0, 0, 0, 0};

    for (int k = 0; k < 4; k++)
        v[k] = xcalloc((size_t)n, sizeof(double));
    for (long i = 1; i < n; i++) {
        if (!c->seen[i] || s->sent_ns[i] == 0)
            continue;
        if (s->acked_ns[i] != 0)
            v[0][count[0]++] = (double)(s->acked_ns[i] - s->sent_ns[i]) / 1e6;
        if (c->worker_ms[i] == 0 || c->relay_ms[i] <= 0)
            continue;
        v[1][count[1]++] =
            (double)c->worker_ms[i] - (double)s->sent_wall_us[i] / 1e3;
        v[2][count[2]++] = (double)(c->relay_ms[i] - c->worker_ms[i]);
        v[3][count[3]++] =
            (double)c->received_wall_us[i] / 1e3 - (double)c->relay_ms[i];
    }
    out->acked = leg_of(v[0], count[0]);
    out->to_worker = leg_of(v[1], count[1]);
    out->in_worker = leg_of(v[2], count[2]);
    out->to_consumer = leg_of(v[3], count[3]);
    for (int k = 0; k < 4; k++)
        free(v[k]);
}

/* The percentiles of the requests answered, from send to arrival. */
static void latency_figures(const struct collector *c, long n,
                            const struct sends *s, struct latency *out)
{
    double *lat = xcalloc((size_t)n, sizeof(double));

    for (long i = 1; i < n; i++) {
        if (c->seen[i] && s->sent_ns[i] != 0)
            lat[out->received++] =
                (double)(c->received_ns[i] - s->sent_ns[i]) / 1e6;
    }
    if (out->received > 0) {
        qsort(lat, (size_t)out->received, sizeof(double), cmp_double);
        out->p50 = quantile(lat, out->received, 0.50);
        out->p95 = quantile(lat, out->received, 0.95);
        out->p99 = quantile(lat, out->received, 0.99);
        out->max = lat[out->received - 1];
    }
    free(lat);
    latency_legs(c, n, s, out);
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
    struct sends s;
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
    s.sent_ns = xcalloc((size_t)n, sizeof(int64_t));
    s.acked_ns = xcalloc((size_t)n, sizeof(int64_t));
    s.sent_wall_us = xcalloc((size_t)n, sizeof(int64_t));
    rc = latency_send(b, &t, c, n, &s, out);
    workers_stop(&ws);
    out->peak_mb = workers_peak_mb(&ws);
    latency_figures(c, n, &s, out);
    say("  %ld sent, %ld answered: p50 %.1f ms, p95 %.1f ms, p99 %.1f ms, "
        "max %.1f ms",
        out->sent, out->received, out->p50, out->p95, out->p99, out->max);
    say("  legs p50/p99 ms: acknowledged %.1f/%.1f, to the worker %.1f/%.1f, "
        "in the worker %.1f/%.1f, to the consumer %.1f/%.1f",
        out->acked.p50, out->acked.p99, out->to_worker.p50, out->to_worker.p99,
        out->in_worker.p50, out->in_worker.p99, out->to_consumer.p50,
        out->to_consumer.p99);
    if (rc == 0 && (out->received != total || c->duplicates || c->rejected)) {
        say("  not every request was answered exactly once: void");
        rc = -1;
    }
    b->is_void |= rc != 0;
    free(s.sent_ns);
    free(s.acked_ns);
    free(s.sent_wall_us);
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
