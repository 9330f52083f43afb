/*
 * The consumer's second database session (offload.h): a job thread
 * (job_thread.h) that runs the claim or the finish of one half on its
 * own connection.
 */
#include "offload.h"

#include "arena.h"
#include "job_thread.h"

#include <stdlib.h>
#include <string.h>

enum job { JOB_CLAIM, JOB_FINISH };

struct offload {
    char *conninfo;
    struct store *store;    /* NULL until the first job connects */
    struct mw_arena *arena; /* the claim's outputs, until the next claim */
    struct job_thread *thread;
    /* The job and, once it ran, its result. */
    enum job job;
    struct store_item *items;
    const struct store_outbox_row *rows;
    size_t count;
    int rc;
    struct mw_error err;
};

/* Runs the job on the thread. */
static void run(void *arg)
{
    struct offload *o = arg;

    mw_error_clear(&o->err);
    if (o->store == NULL) {
        o->store = store_new(o->conninfo, &o->err);
        if (o->store == NULL) {
            o->rc = -1;
            return;
        }
    }
    if (o->job == JOB_CLAIM) {
        arena_reset(o->arena);
        o->rc =
            store_batch_claim(o->store, o->items, o->count, o->arena, &o->err);
    } else {
        o->rc = store_batch_finish(o->store, o->rows, o->count, &o->err);
    }
}

struct offload *offload_new(const char *conninfo, struct mw_error *err)
{
    struct offload *o = calloc(1, sizeof(*o));

    if (o == NULL) {
        mw_error_no_memory(err);
        return NULL;
    }
    o->conninfo = strdup(conninfo);
    o->arena = arena_new();
    if (o->conninfo == NULL || o->arena == NULL) {
        mw_error_no_memory(err);
        offload_destroy(o);
        return NULL;
    }
    o->thread = job_thread_new(run, err);
    if (o->thread == NULL) {
        offload_destroy(o);
        return NULL;
    }
    return o;
}

void offload_destroy(struct offload *o)
{
    if (o == NULL)
        return;
    job_thread_destroy(o->thread);
    store_destroy(o->store);
    arena_destroy(o->arena);
    free(o->conninfo);
    free(o);
}

/* Hands the job over once the one before it was waited for. */
static void post(struct offload *o, enum job job, struct store_item *items,
                 const struct store_outbox_row *rows, size_t count)
{
    (void)job_thread_wait(o->thread);
    o->job = job;
    o->items = items;
    o->rows = rows;
    o->count = count;
    job_thread_post(o->thread, o);
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
    (void)job_thread_wait(o->thread);
    if (o->rc < 0)
        *err = o->err;
    return o->rc;
}

void offload_abort(struct offload *o)
{
    if (o->store != NULL)
        store_batch_abort(o->store);
}
