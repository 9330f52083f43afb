/*
 * What the files of the store share and nothing outside them may use: the
 * connection (struct store), how libpq errors become a struct mw_error,
 * the transaction and pipeline helpers, and the named statements each
 * file prepares.  store.c owns the connection; store_claim.c,
 * store_update.c, store_outbox.c and store_timers.c only borrow it.  The
 * interface stays store.h.
 */
#ifndef MW_STORE_INTERNAL_H
#define MW_STORE_INTERNAL_H

#include "store.h"

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

/*
 * Advisory lock keys (classid, objid): 'mw' and a number per purpose.
 * Other modules' keys belong here too, so that they never collide.
 */
#define STORE_LOCK_CLASS "28023"
#define STORE_LOCK_MIGRATIONS "1"
#define STORE_LOCK_RELAY "2"

/* Attempts of a transaction that fails with 40001 or 40P01. */
#define STORE_MAX_ATTEMPTS 5

/* Parameter buffers of the batch claim, kept from batch to batch. */
struct claim_columns;
/* COPY data of the claim by COPY (store_copy.c), kept likewise. */
struct store_copy;

/* Runs of at least this many requests may be claimed by COPY. */
#define STORE_COPY_MIN_RUN 32

struct store {
    PGconn *conn; /* NULL after a drop: reconnect on the next call */
    char *conninfo;
    bool is_prepared;              /* the named statements exist on conn */
    bool is_listening;             /* LISTEN mw_outbox done on conn */
    bool is_listening_timers;      /* LISTEN mw_timers done on conn */
    bool is_leader;                /* the relay lock is held by conn */
    bool in_batch;                 /* a batch transaction is open on conn */
    bool is_fetch_set;             /* the relay's fetch plan is set on conn */
    unsigned int seed;             /* retry jitter */
    struct claim_columns *columns; /* store_claim.c's; NULL until needed */
    struct store_copy *copy;       /* store_copy.c's; NULL until needed */
    size_t copy_min_run;           /* shorter runs: mw_claim_requests */
    long copied_runs;              /* runs claimed by COPY */
};

/* A statement prepared once per connection. */
struct store_statement {
    const char *name;
    const char *sql;
    int nparams;
};

/* Those of the batch claim (store_claim.c) and of the outbox. */
extern const struct store_statement store_claim_statements[];
extern const size_t store_claim_statement_count;
extern const struct store_statement store_outbox_statements[];
extern const size_t store_outbox_statement_count;

/*
 * Writes a text[] literal of strs, every element quoted, into arena.
 * Returns NULL when out of memory.  (store_claim.c)
 */
char *store_text_array_literal(struct mw_arena *arena, const char *const *strs,
                               size_t count);

/*
 * Parses a text[] in PostgreSQL's output format into an arena array.
 * NULL elements are skipped.  Returns 0, or -1 when out of memory or
 * malformed.  (store_claim.c)
 */
int store_parse_text_array(struct mw_arena *arena, const char *text,
                           const char ***strs, size_t *count);

/*
 * Claims one update in the open batch transaction, outside pipeline mode
 * (store_update.c): sets item->outcome (UPDATED, REJECTED, DUPLICATE or
 * CONFLICT).  Returns 0, or -1 with err and *is_retry set when the
 * transaction failed on a serialization failure or deadlock; the caller
 * then rolls back.
 */
int store_update_claim(struct store *store, struct store_item *item,
                       struct mw_arena *arena, bool *is_retry,
                       struct mw_error *err) MW_MUSTCHECK;

/*
 * Makes room for more bytes after the len used of *buf (*cap bytes; the
 * first allocation is at least first, then the size doubles).  False,
 * with *is_oom set, when memory ran out or *is_oom was set already.
 */
bool store_reserve(char **buf, size_t *cap, size_t len, size_t more,
                   size_t first, bool *is_oom);

/*
 * Claims the count requests of items whose indexes are in run with COPY
 * (store_copy.c), opening the batch's transaction.  Returns 0 when
 * claimed (outcomes set, the transaction open); 1 when the run is for
 * mw_claim_requests (nothing is open); 2 with err (and *is_retry set on a
 * serialization failure or deadlock) when the server refused it, rolled
 * back; -1 with err when the connection was dropped or memory ran out.
 */
int store_copy_claim(struct store *store, struct store_item *items,
                     const size_t *run, size_t count, struct mw_arena *arena,
                     bool *is_retry, struct mw_error *err) MW_MUSTCHECK;

/* Frees the COPY data (store_copy.c).  Can't fail. */
void store_copy_free(struct store *store);

/* Frees the claim's parameter buffers (store_claim.c).  Can't fail. */
void store_claim_free(struct store *store);

/* Forgets the connection; the server rolls back what was open. */
void store_drop_connection(struct store *store);

/*
 * Fills err with what (the primary message) and the server's SQLSTATE and
 * message from res, or the connection's message when res has none.  A
 * lost connection is retriable and is dropped.
 */
void store_set_error(struct store *store, struct mw_error *err,
                     const char *what, const PGresult *res);

/* True for 40001 and 40P01: the transaction may simply run again. */
bool store_is_serialization_state(const char *sqlstate);

/* Reconnects when the last call lost the connection; 0, or -1 with err. */
int store_ensure_connected(struct store *store,
                           struct mw_error *err) MW_MUSTCHECK;

/*
 * Runs one statement with text parameters and discards its result.
 * Returns 0, or -1 with err (primary message what).
 */
int store_exec(struct store *store, const char *sql, int nparams,
               const char *const *values, const char *what,
               struct mw_error *err) MW_MUSTCHECK;

/*
 * Prepares every named statement once per connection.  Needs the schema,
 * so it runs at the first batch rather than at connect.  0, or -1 with err.
 */
int store_prepare_statements(struct store *store,
                             struct mw_error *err) MW_MUSTCHECK;

/*
 * Reads the result of the next query of a pipeline, and the NULL that ends
 * it.  Returns NULL when the connection failed; the caller then drops it.
 */
PGresult *store_pipeline_next(struct store *store);

/* Queues a statement without parameters in the pipeline; 0 or -1. */
int store_send_command(struct store *store, const char *sql);

/* Reads the sync that ends a pipeline and leaves pipeline mode; 0 or -1. */
int store_pipeline_end(struct store *store);

/*
 * A text parameter that must not fail a statement: s, or NULL when it is
 * NULL, longer than max_bytes or not UTF-8 (PostgreSQL refuses that).
 */
const char *store_safe_text(const char *s, size_t max_bytes);

/* Rolls back the open transaction; a failure drops the connection. */
void store_rollback(struct store *store);

/*
 * After failed attempt number attempt of a transaction (what: "batch",
 * "claim"): when it failed on a deadlock or serialization failure
 * (is_retry) and attempts remain, sleeps a few milliseconds, more after
 * each attempt, and returns true; otherwise returns false, with a hint in
 * err when the attempts ran out.
 */
bool store_may_retry(struct store *store, int attempt, bool is_retry,
                     const char *what, struct mw_error *err) MW_MUSTCHECK;

/*
 * LISTENs with sql_listen once per connection (*is_listening), then waits
 * up to timeout_ms for a notification.  Returns 1 when notified, 0 on
 * timeout, or -1 with err (primary message what).
 */
int store_wait_notify(struct store *store, const char *sql_listen,
                      bool *is_listening, int timeout_ms, const char *what,
                      struct mw_error *err) MW_MUSTCHECK;

#endif
