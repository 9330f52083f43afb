/*
 * The lifecycle scheduler.
 *
 * Timers live in PostgreSQL because Kafka has no delayed delivery (table
 * timers, migrations/0003_lifecycle.sql, the pending ones only since
 * 0007_pending_timers.sql; mw_fire_due_timers as redefined there).  A
 * round claims up to BATCH_MAX due timers with FOR UPDATE SKIP LOCKED,
 * applies them, encodes the events of those that fired and writes them
 * to the outbox, all in one transaction: a timer is fired exactly once
 * however many replicas run, and a replica killed mid-round leaves its
 * timers pending for the next claimer.  What "due" means is decided by
 * mw_now_ms(), passed to the database, so MESH_WORKER_CLOCK_OFFSET_MS
 * moves time for tests on the same code path.
 *
 * Rounds follow each other without a pause while they find full batches,
 * so after downtime everything overdue fires, oldest first, in bounded
 * transactions.  During such a backlog a second lane (a thread with its
 * own connection, opened for the backlog and closed after it) runs
 * rounds too, so that one round is claimed while the other writes its
 * events and commits: a lane leaves PostgreSQL idle while it encodes,
 * sends and waits for the commit's flush, and SKIP LOCKED gives the two
 * lanes different timers, as it does two replicas.  Otherwise the first
 * lane sleeps until the earliest pending timer is due or
 * MESH_WORKER_SCHEDULER_INTERVAL passes, whichever is first, and wakes
 * early when a claim function writes a timer (LISTEN mw_timers), so an
 * immediate termination fires at once.
 *
 * The scheduler decides no business rule: the database function orders a
 * customer's timers and applies them.  It never publishes: the relay does.
 */
#include "scheduler.h"

#include "arena.h"
#include "events.h"
#include "log.h"
#include "metrics.h"
#include "mw.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/*
 * Most timers claimed in one transaction.  mw_fire_due_timers takes the
 * same three statements for one timer or a thousand, so a round costs
 * little more than its rows; past about a thousand, bigger rounds fired
 * no faster and would only hold their customers' locks longer.
 */
#define BATCH_MAX 1000
/* Longest single wait, so that a stop request is seen promptly. */
#define WAIT_SLICE_MS 200
/* Pause when timers are due but held by other replicas. */
#define HELD_WAIT_MS 50
#define BACKOFF_MAX_MS 5000

/* Lanes of one scheduler: the first always, the second during a backlog. */
#define LANES 2

struct scheduler;

/* A thread of the scheduler and what it alone uses. */
struct lane {
    struct scheduler *scheduler;
    int index;
    pthread_t thread;
    bool is_started;
};

struct scheduler {
    const struct mw_config *cfg;
    char *conninfo;
    struct codec *codec;
    /* The codec is one; encoding a round takes about a millisecond. */
    pthread_mutex_t codec_lock;
    /* Set by the first lane while rounds find full batches. */
    pthread_mutex_t backlog_lock;
    pthread_cond_t backlog_changed;
    bool is_backlog;
    uint64_t backlog_rounds; /* full rounds of the first lane so far */
    struct lane lanes[LANES];
    atomic_int stop;
};

/*
 * What one round did.  cancelled counts the claimed timers that no longer
 * applied and the pending ones a termination withdrew.
 */
struct round {
    size_t claimed;
    size_t fired;
    size_t cancelled;
    size_t deferred;
};

/*
 * One round: claim, encode, write and commit.  Returns 0 with out filled,
 * or -1 with err and nothing kept.
 */
static int fire_round(struct store *store, struct codec *codec,
                      pthread_mutex_t *codec_lock, struct mw_arena *arena,
                      int64_t now_ms, size_t max, struct round *out,
                      struct mw_error *err)
{
    struct store_timer *timers;
    struct store_outbox_row *rows;
    size_t count, nrows = 0;
    int rc = 0;

    memset(out, 0, sizeof(*out));
    arena_reset(arena);
    if (store_timers_claim(store, now_ms, max, arena, &timers, &count, err) < 0)
        return -1;
    rows = arena_alloc(arena, sizeof(*rows) * (count > 0 ? count : 1));
    if (rows == NULL) {
        store_batch_abort(store);
        mw_error_no_memory(err);
        return -1;
    }
    if (codec_lock != NULL)
        pthread_mutex_lock(codec_lock);
    for (size_t i = 0; i < count; i++) {
        const struct store_timer *t = &timers[i];

        if (t->action == STORE_TIMER_WITHDRAWN) {
            out->cancelled++;
            continue;
        }
        out->claimed++;
        if (t->action == STORE_TIMER_CANCELLED) {
            out->cancelled++;
            continue;
        }
        if (t->action == STORE_TIMER_DEFERRED) {
            out->deferred++;
            continue;
        }
        rc = events_timer_row(codec, arena, t, now_ms, &rows[nrows], err);
        if (rc < 0)
            break;
        nrows++;
        log_debug("scheduler", "timer fired", LF_INT("timer_id", t->id),
                  LF_STR("customer_id", t->customer_id),
                  LF_STR("event_id", rows[nrows - 1].event_id));
    }
    if (codec_lock != NULL)
        pthread_mutex_unlock(codec_lock);
    if (rc < 0) {
        store_batch_abort(store);
        return -1;
    }
    if (count == 0) {
        /* Nothing claimed: end the empty transaction. */
        store_batch_abort(store);
    } else if (store_batch_finish(store, rows, nrows, err) < 0) {
        return -1;
    }
    out->fired = nrows;
    atomic_fetch_add(&mw_metrics.timers_fired, (long long)nrows);
    return 0;
}

/* A round made progress and found a full batch: more may be due. */
static bool is_more_due(const struct round *r, size_t max)
{
    return r->claimed >= max && r->fired + r->cancelled > 0;
}

int64_t scheduler_fire_due(struct store *store, struct codec *codec,
                           int64_t now_ms, size_t max, struct mw_error *err)
{
    struct mw_arena *arena = arena_new();
    struct round r;
    int64_t fired = 0;

    if (arena == NULL) {
        mw_error_no_memory(err);
        return -1;
    }
    if (max == 0)
        max = BATCH_MAX;
    do {
        if (fire_round(store, codec, NULL, arena, now_ms, max, &r, err) < 0) {
            arena_destroy(arena);
            return -1;
        }
        fired += (int64_t)r.fired;
    } while (is_more_due(&r, max));
    arena_destroy(arena);
    return fired;
}

/*
 * How long to sleep: until the earliest pending timer is due, at most the
 * interval; briefly when timers are due but were held by other replicas.
 * Updates the due_timers gauge.  Returns -1 on a database error.
 */
static int64_t next_wait_ms(struct scheduler *s, struct store *store,
                            struct mw_error *err)
{
    int64_t now = mw_now_ms(), due_count, next_due;
    int64_t wait = s->cfg->scheduler_interval_ms;

    if (store_timers_pending(store, now, &due_count, &next_due, err) < 0)
        return -1;
    atomic_store(&mw_metrics.due_timers, due_count);
    if (next_due < 0)
        return wait;
    if (next_due <= now)
        return wait < HELD_WAIT_MS ? wait : HELD_WAIT_MS;
    return next_due - now < wait ? next_due - now : wait;
}

/* Sleeps up to wait_ms, waking on a new timer or a stop request. */
static int sleep_until_due(struct scheduler *s, struct store *store,
                           int64_t wait_ms, struct mw_error *err)
{
    int64_t deadline = mw_monotonic_ms() + wait_ms;

    while (!atomic_load(&s->stop)) {
        int64_t left = deadline - mw_monotonic_ms();
        int rc;

        if (left <= 0)
            return 0;
        rc = store_timers_wait(
            store, (int)(left < WAIT_SLICE_MS ? left : WAIT_SLICE_MS), err);
        if (rc != 0)
            return rc < 0 ? -1 : 0;
    }
    return 0;
}

/* The first lane tells the second whether rounds find full batches. */
static void backlog_set(struct scheduler *s, bool is_backlog)
{
    pthread_mutex_lock(&s->backlog_lock);
    if (is_backlog)
        s->backlog_rounds++;
    s->is_backlog = is_backlog;
    pthread_cond_broadcast(&s->backlog_changed);
    pthread_mutex_unlock(&s->backlog_lock);
}

/*
 * The second lane waits for a full round of the first one that it has
 * not answered yet, so that it never spins on rounds that find nothing.
 * Returns false when a stop is requested.
 */
static bool backlog_wait(struct scheduler *s, uint64_t *seen)
{
    bool is_running;

    pthread_mutex_lock(&s->backlog_lock);
    while (!atomic_load(&s->stop) &&
           !(s->is_backlog && s->backlog_rounds != *seen))
        pthread_cond_wait(&s->backlog_changed, &s->backlog_lock);
    *seen = s->backlog_rounds;
    is_running = !atomic_load(&s->stop);
    pthread_mutex_unlock(&s->backlog_lock);
    return is_running;
}

static void *lane_main(void *arg)
{
    struct lane *lane = arg;
    struct scheduler *s = lane->scheduler;
    bool is_first = lane->index == 0;
    struct mw_arena *arena = arena_new();
    struct store *store = NULL;
    int64_t backoff = 100;
    uint64_t seen = 0;
    struct mw_error err;

    while (arena != NULL && !atomic_load(&s->stop)) {
        struct round r;
        int64_t wait;

        mw_error_clear(&err);
        if (!is_first && !backlog_wait(s, &seen))
            break;
        if (store == NULL) {
            store = store_new(s->conninfo, &err);
            if (store == NULL) {
                log_warn("scheduler", "could not connect to PostgreSQL",
                         LF_STR("error", err.msg),
                         LF_STR("detail", err.detail));
                mw_sleep_ms_unless(backoff, &s->stop);
                backoff =
                    backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
                continue;
            }
            backoff = 100;
        }
        do {
            if (fire_round(store, s->codec, &s->codec_lock, arena, mw_now_ms(),
                           BATCH_MAX, &r, &err) < 0)
                goto db_error;
            if (r.fired + r.cancelled > 0)
                log_info("scheduler", "timers fired",
                         LF_INT("fired", (int64_t)r.fired),
                         LF_INT("cancelled", (int64_t)r.cancelled),
                         LF_INT("deferred", (int64_t)r.deferred));
            if (is_first)
                backlog_set(s, is_more_due(&r, BATCH_MAX));
        } while (is_more_due(&r, BATCH_MAX) && !atomic_load(&s->stop));
        if (!is_first) {
            /* The backlog is over for now: the connection goes until
             * the next one. */
            store_destroy(store);
            store = NULL;
            continue;
        }
        wait = next_wait_ms(s, store, &err);
        if (wait < 0 || sleep_until_due(s, store, wait, &err) < 0)
            goto db_error;
        continue;
    db_error:
        log_warn("scheduler", "database error; retrying",
                 LF_STR("error", err.msg), LF_STR("detail", err.detail),
                 LF_STR("retriable", err.retriable ? "true" : "false"));
        if (is_first)
            backlog_set(s, false);
        if (!err.retriable) {
            /* A permanent error may be one row's fault: do not spin. */
            store_destroy(store);
            store = NULL;
        }
        mw_sleep_ms_unless(backoff, &s->stop);
        backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
    }
    store_destroy(store);
    arena_destroy(arena);
    return NULL;
}

struct scheduler *scheduler_new(const struct mw_config *cfg,
                                const char *conninfo, struct codec *codec,
                                struct mw_error *err)
{
    struct scheduler *s = calloc(1, sizeof(*s));

    if (s != NULL)
        s->conninfo = strdup(conninfo);
    if (s == NULL || s->conninfo == NULL) {
        free(s);
        codec_destroy(codec);
        mw_error_no_memory(err);
        return NULL;
    }
    s->cfg = cfg;
    s->codec = codec;
    pthread_mutex_init(&s->codec_lock, NULL);
    pthread_mutex_init(&s->backlog_lock, NULL);
    pthread_cond_init(&s->backlog_changed, NULL);
    for (int i = 0; i < LANES; i++) {
        s->lanes[i].scheduler = s;
        s->lanes[i].index = i;
    }
    return s;
}

int scheduler_start(struct scheduler *s, struct mw_error *err)
{
    for (int i = 0; i < LANES; i++) {
        struct lane *lane = &s->lanes[i];

        if (pthread_create(&lane->thread, NULL, lane_main, lane) != 0) {
            scheduler_stop(s);
            mw_error_set(err, MW_ERR_SYSTEM, false,
                         "could not start the scheduler thread");
            return -1;
        }
        lane->is_started = true;
    }
    return 0;
}

void scheduler_stop(struct scheduler *s)
{
    if (s == NULL)
        return;
    atomic_store(&s->stop, 1);
    pthread_mutex_lock(&s->backlog_lock);
    pthread_cond_broadcast(&s->backlog_changed);
    pthread_mutex_unlock(&s->backlog_lock);
    for (int i = 0; i < LANES; i++) {
        if (s->lanes[i].is_started)
            pthread_join(s->lanes[i].thread, NULL);
        s->lanes[i].is_started = false;
    }
}

void scheduler_destroy(struct scheduler *s)
{
    if (s == NULL)
        return;
    scheduler_stop(s);
    codec_destroy(s->codec);
    pthread_cond_destroy(&s->backlog_changed);
    pthread_mutex_destroy(&s->backlog_lock);
    pthread_mutex_destroy(&s->codec_lock);
    free(s->conninfo);
    free(s);
}
