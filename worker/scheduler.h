/*
 * The lifecycle scheduler: fires the timers kept in PostgreSQL (trial
 * reminder, trial conversion, termination) when they are due, writing
 * TrialEnding, TrialConverted and CustomerTerminated to the outbox in the
 * transaction that applies them.  Runs in its own thread with its own
 * database connection and codec, and during a backlog in a second one
 * with a second connection; every replica runs one, and the database
 * hands each due timer to exactly one of them.
 */
#ifndef MW_SCHEDULER_H
#define MW_SCHEDULER_H

#include "codec.h"
#include "config.h"
#include "error.h"
#include "store.h"

#include <stddef.h>
#include <stdint.h>

struct scheduler;

/*
 * Creates a scheduler (nothing runs yet).  conninfo is copied; codec is
 * taken over (the scheduler destroys it, also when this fails: the caller
 * sets its pointer to NULL either way) and used only from the scheduler's
 * threads, one at a time.  Returns NULL with err when out of memory.
 */
struct scheduler *scheduler_new(const struct mw_config *cfg,
                                const char *conninfo, struct codec *codec,
                                struct mw_error *err) MW_MUSTCHECK;

/* Starts the scheduler thread.  Returns 0, or -1 with err. */
int scheduler_start(struct scheduler *scheduler,
                    struct mw_error *err) MW_MUSTCHECK;

/*
 * Asks the thread to stop after the transaction in hand (committed or
 * rolled back, never half) and waits for it.  Can't fail.
 */
void scheduler_stop(struct scheduler *scheduler);

/* Stops if running, then frees; NULL does nothing. */
void scheduler_destroy(struct scheduler *scheduler);

/*
 * Fires every timer due at now_ms on store, in batches of at most max, and
 * returns how many fired (events written), or -1 with err.  For tests and
 * tools; the thread does the same.  codec and store are borrowed.
 */
int64_t scheduler_fire_due(struct store *store, struct codec *codec,
                           int64_t now_ms, size_t max,
                           struct mw_error *err) MW_MUSTCHECK;

#endif
