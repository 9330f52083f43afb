/*
 * A thread that runs one job at a time for another thread: post a job,
 * go on with other work, then wait for it.  The consumer's committer and
 * its second database session are each one.  What the job wrote is the
 * poster's again once job_thread_wait returned it (the handover is under
 * the thread's mutex).
 */
#ifndef MW_JOB_THREAD_H
#define MW_JOB_THREAD_H

#include "error.h"
#include "mw.h"

#include <stdbool.h>

struct job_thread;

/* Runs one job on the thread, outside the mutex. */
typedef void (*job_thread_fn)(void *job);

/* Starts the thread.  NULL with err when memory or threads ran out. */
struct job_thread *job_thread_new(job_thread_fn run,
                                  struct mw_error *err) MW_MUSTCHECK;

/* Waits for the job in hand, if any, then stops the thread; NULL is fine. */
void job_thread_destroy(struct job_thread *thread);

/* Hands job over once the one before it has run. */
void job_thread_post(struct job_thread *thread, void *job);

/* Waits for the job posted last and returns it, or NULL when none is. */
void *job_thread_wait(struct job_thread *thread);

/* True unless a posted job is still running or waiting to run. */
bool job_thread_is_idle(struct job_thread *thread);

#endif
