/*
 * The consumer's second database session (offload.h): a thread that
 * waits for a job, runs it on its own connection and reports back.  The
 * job's items and rows are handed over under the mutex, so the caller
 * sees what the thread wrote once offload_wait returned.
 */
#include "offload.h"

#include "arena.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

enum job { JOB_NONE, JOB_CLAIM, JOB_FINISH, JOB_STOP };

struct offload {
    char *conninfo;
    struct store *store;    /* NULL until the first job connects */
    struct mw_arena *arena; /* the claim's outputs, until the next claim */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    enum job job; /* the job to run; JOB_NONE once done */
    bool is_done; /* the last job finished */
    int rc;       /* and its result */
    struct mw_error err;
    struct store_item *items;
    const struct store_outbox_row *rows;
    size_t count;
};

/* Runs one job on the thread, outside the mutex. */
static int run_job(struct offload *o, enum job job, struct mw_error *err)
{
    if (o->store == NULL) {
        o->store = store_new(o->conninfo, err);
        if (o->store == NULL)
            return -1;
    }
    if (job == JOB_CLAIM) {
        arena_reset(o->arena);
        return store_batch_claim(o->store, o->items, o->count, o->arena, err);
    }
    return store_batch_finish(o->store, o->rows, o->count, err);
}

static void *offload_main(void *arg)
{
    struct offload *o = arg;

    pthread_mutex_lock(&o->mu);
    for (;;) {
        enum job job;
        struct mw_error err;
        int rc;

        while (o->job == JOB_NONE)
            pthread_cond_wait(&o->cond, &o->mu);
        job = o->job;
        if (job == JOB_STOP)
            break;
        pthread_mutex_unlock(&o->mu);
        mw_error_clear(&err);
        rc = run_job(o, job, &err);
        pthread_mutex_lock(&o->mu);
        o->rc = rc;
        o->err = err;
        o->job = JOB_NONE;
        o->is_done = true;
        pthread_cond_broadcast(&o->cond);
    }
    pthread_mutex_unlock(&o->mu);
    return NULL;
}

struct offload *offload_new(const char *conninfo, struct mw_error *err)
{
    struct offload *o = calloc(1, sizeof(*o));

    if (o == NULL)
        goto oom;
    o->conninfo = strdup(conninfo);
    o->arena = arena_new();
    if (o->conninfo == NULL || o->arena == NULL) {
        free(o->conninfo);
        arena_destroy(o->arena);
        free(o);
        goto oom;
    }
    o->is_done = true;
    pthread_mutex_init(&o->mu, NULL);
    pthread_cond_init(&o->cond, NULL);
    if (pthread_create(&o->thread, NULL, offload_main, o) != 0) {
        pthread_mutex_destroy(&o->mu);
        pthread_cond_destroy(&o->cond);
        free(o->conninfo);
        arena_destroy(o->arena);
        free(o);
        mw_error_set(err, MW_ERR_SYSTEM, true,
                     "could not start the second database session's thread");
        return NULL;
    }
    return o;
oom:
    mw_error_no_memory(err);
    return NULL;
}

/* Hands job over once the one before it is done. */
static void post(struct offload *o, enum job job, struct store_item *items,
                 const struct store_outbox_row *rows, size_t count)
{
    pthread_mutex_lock(&o->mu);
    while (!o->is_done)
        pthread_cond_wait(&o->cond, &o->mu);
    o->items = items;
    o->rows = rows;
    o->count = count;
    o->job = job;
    o->is_done = false;
    pthread_cond_broadcast(&o->cond);
    pthread_mutex_unlock(&o->mu);
}

void offload_destroy(struct offload *o)
{
    if (o == NULL)
        return;
    post(o, JOB_STOP, NULL, NULL, 0);
    pthread_join(o->thread, NULL);
    pthread_mutex_destroy(&o->mu);
    pthread_cond_destroy(&o->cond);
    store_destroy(o->store);
    arena_destroy(o->arena);
    free(o->conninfo);
    free(o);
}

void offload_claim(struct offload *o, struct store_item *items, size_t count)
{
    post(o, JOB_CLAIM, items, NULL, count);
}

void offload_finish(struct offload *o, const struct store_outbox_row *rows,
                    size_t count)
{
    post(o, JOB_FINISH, NULL, rows, count);
}

int offload_wait(struct offload *o, struct mw_error *err)
{
    int rc;

    pthread_mutex_lock(&o->mu);
    while (!o->is_done)
        pthread_cond_wait(&o->cond, &o->mu);
    rc = o->rc;
    if (rc < 0)
        *err = o->err;
    pthread_mutex_unlock(&o->mu);
    return rc;
}

void offload_abort(struct offload *o)
{
    if (o->store != NULL)
        store_batch_abort(o->store);
}
