/* A thread running one job at a time (job_thread.h). */
#include "job_thread.h"

#include <pthread.h>
#include <stdlib.h>

struct job_thread {
    job_thread_fn run;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    void *job;    /* posted and not yet taken back; NULL: none */
    bool is_done; /* job has run */
    bool is_stopping;
};

static void *thread_main(void *arg)
{
    struct job_thread *t = arg;

    pthread_mutex_lock(&t->mu);
    for (;;) {
        void *job;

        while (!t->is_stopping && (t->job == NULL || t->is_done))
            pthread_cond_wait(&t->cond, &t->mu);
        if (t->is_stopping)
            break;
        job = t->job;
        pthread_mutex_unlock(&t->mu);
        t->run(job);
        pthread_mutex_lock(&t->mu);
        t->is_done = true;
        pthread_cond_broadcast(&t->cond);
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

struct job_thread *job_thread_new(job_thread_fn run, struct mw_error *err)
{
    struct job_thread *t = calloc(1, sizeof(*t));

    if (t == NULL) {
        mw_error_no_memory(err);
        return NULL;
    }
    t->run = run;
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cond, NULL);
    if (pthread_create(&t->thread, NULL, thread_main, t) != 0) {
        pthread_mutex_destroy(&t->mu);
        pthread_cond_destroy(&t->cond);
        free(t);
        mw_error_set(err, MW_ERR_SYSTEM, true, "could not start a thread");
        return NULL;
    }
    return t;
}

/* Waits, holding the mutex, until the job in hand has run. */
static void wait_done(struct job_thread *t)
{
    while (t->job != NULL && !t->is_done)
        pthread_cond_wait(&t->cond, &t->mu);
}

void job_thread_destroy(struct job_thread *t)
{
    if (t == NULL)
        return;
    pthread_mutex_lock(&t->mu);
    wait_done(t);
    t->is_stopping = true;
    pthread_cond_broadcast(&t->cond);
    pthread_mutex_unlock(&t->mu);
    pthread_join(t->thread, NULL);
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cond);
    free(t);
}

void job_thread_post(struct job_thread *t, void *job)
{
    pthread_mutex_lock(&t->mu);
    wait_done(t);
    t->job = job;
    t->is_done = false;
    pthread_cond_broadcast(&t->cond);
    pthread_mutex_unlock(&t->mu);
}

void *job_thread_wait(struct job_thread *t)
{
    void *job;

    pthread_mutex_lock(&t->mu);
    wait_done(t);
    job = t->job;
    t->job = NULL;
    t->is_done = false;
    pthread_mutex_unlock(&t->mu);
    return job;
}

bool job_thread_is_idle(struct job_thread *t)
{
    bool idle;

    pthread_mutex_lock(&t->mu);
    idle = t->job == NULL || t->is_done;
    pthread_mutex_unlock(&t->mu);
    return idle;
}
