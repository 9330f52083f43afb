/*
 * Everything the worker keeps in PostgreSQL, and the only module that
 * speaks SQL: migrations (store.c), the per-batch provisioning
 * transaction (store_claim.c, and store_update.c for the updates in it),
 * the outbox written with it and read by the
 * relay (store_outbox.c), the lifecycle timers and the customer
 * description for operators (store_timers.c).
 *
 * A struct store is one connection, used by one thread.  Errors from libpq
 * are classified where they are seen: SQLSTATE class 08 and 57P0x (and a
 * lost connection) are retriable, 40001/40P01 are retried inside the call,
 * anything else is permanent.  After a retriable error the next call
 * reconnects by itself.
 */
#ifndef MW_STORE_H
#define MW_STORE_H

#include "arena.h"
#include "error.h"
#include "mw.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct store;

/*
 * Connects to conninfo (a libpq URL or key=value string).  Returns NULL
 * with err filled (retriable when the server could not be reached).  The
 * conninfo is copied.
 */
struct store *store_new(const char *conninfo,
                        struct mw_error *err) MW_MUSTCHECK;

/* Closes the connection; NULL does nothing. */
void store_destroy(struct store *store);

/*
 * Claims runs of at least count new requests with COPY instead of
 * mw_claim_requests (STORE_COPY_MIN_RUN unless set; SIZE_MAX never).  The
 * outcomes are the same either way; the tests run both.  Can't fail.
 */
void store_set_copy_min_run(struct store *store, size_t count);

/* The runs of requests claimed by COPY since store_new.  Can't fail. */
long store_copied_runs(const struct store *store);

/*
 * Applies every compiled-in migration not yet applied, in order, each in
 * its own transaction, under an advisory lock so that replicas starting
 * together apply each once.  Returns 0, or -1 with err filled.
 */
int store_migrate(struct store *store, struct mw_error *err) MW_MUSTCHECK;

/*
 * Compares the migrations recorded in the database with those compiled
 * in, without changing anything, so that a login holding only the
 * mesh_worker role can run it.  Returns 0 when every one is applied; 1
 * when some are not, with err filled (not retriable) naming the first and
 * *may_migrate set when this login owns the schema and could apply them;
 * -1 with err on a database error.
 */
int store_schema_check(struct store *store, bool *may_migrate,
                       struct mw_error *err) MW_MUSTCHECK;

/* The server's replication, as the worker's session sees it. */
struct store_replication {
    int64_t standbys;            /* rows of pg_stat_replication */
    bool is_synchronous;         /* a commit waits for a standby */
    char standby_names[128];     /* synchronous_standby_names */
    char synchronous_commit[16]; /* of this session */
};

/*
 * Reads the server's replication: how many standbys stream from it and
 * whether this session's commits wait for one.  Cannot see replication
 * that a managed service does below PostgreSQL.  Returns 0, or -1 with
 * err.
 */
int store_replication_check(struct store *store,
                            struct store_replication *replication,
                            struct mw_error *err) MW_MUSTCHECK;

/* Returns 0 when the server answers a trivial query, or -1 with err. */
int store_ping(struct store *store, struct mw_error *err) MW_MUSTCHECK;

/* What became of one consumed message. */
enum store_outcome {
    STORE_PENDING = 0,
    STORE_CREATED,   /* customer provisioned now */
    STORE_REJECTED,  /* rejected now (rules or a taken domain) */
    STORE_DUPLICATE, /* same request_id, same content: nothing new */
    STORE_CONFLICT,  /* same request_id, other content */
    STORE_DLQ,       /* undecodable, sent to the DLQ */
    STORE_SCHEDULED, /* termination accepted (lifecycle) */
    STORE_UPDATED,   /* update accepted and applied */
};

enum store_item_kind {
    STORE_ITEM_REQUEST = 0,
    STORE_ITEM_TERMINATION,
    STORE_ITEM_DLQ,
    STORE_ITEM_UPDATE,
};

/*
 * Judges an update against its customer as loaded in the batch (before,
 * NULL when there is none) and the added domains other live customers
 * hold: rules_apply_update() of rules.h, handed in by the caller so that
 * the store decides nothing a rule decides.  Returns 0 (accepted: after
 * and changes filled), 1 (rejected: rej filled) or -1 (out of memory).
 */
typedef int (*store_update_judge)(const struct mw_update_request *req,
                                  const struct mw_customer_state *before,
                                  const char *const *taken, size_t taken_count,
                                  struct mw_arena *arena,
                                  struct mw_customer_state *after,
                                  struct mw_changes *changes,
                                  struct mw_rejection *rej);

/*
 * One consumed message in a batch.  The caller fills the inputs; claim
 * fills the outputs.  Pointers are borrowed for the duration of the batch.
 */
struct store_item {
    enum store_item_kind kind;
    /* inputs for STORE_ITEM_REQUEST */
    const struct mw_request *request; /* normalised when valid */
    bool is_valid;                    /* false: rules rejected it */
    unsigned char payload_hash[32];   /* SHA-256 of codec_request_identity */
    const char *customer_id;          /* ids_customer_id(request_id) */
    int64_t occurred_at;              /* processing time, epoch ms */
    int64_t trial_ends_at;            /* TRIAL only */
    int64_t trial_reminder_at;        /* TRIAL only; 0 = no reminder */
    const char *traceparent;          /* NULL when absent */
    /* inputs for STORE_ITEM_TERMINATION */
    const struct mw_termination_request *termination;
    /* inputs for STORE_ITEM_UPDATE: the update (checked and normalised),
     * its judge, and where the judge writes a rejection and the change
     * list (caller-owned, valid for the batch) */
    const struct mw_update_request *update;
    store_update_judge judge;
    struct mw_rejection *update_rejection;
    struct mw_changes *changes;
    /* outputs */
    enum store_outcome outcome;
    /* DOMAIN_ALREADY_PROVISIONED: the normalised domains already taken,
     * from the arena given to store_batch_claim. */
    const char **taken_domains;
    size_t taken_domains_count;
    /* STORE_REJECTED termination: MW_REJ_UNKNOWN_CUSTOMER,
     * MW_REJ_NOT_CUSTOMER_OWNER or MW_REJ_ALREADY_TERMINATED. */
    int termination_code;
    /* STORE_SCHEDULED: the effective time recorded (now when null or in
     * the past) and whether the customer was on trial. */
    int64_t effective_at;
    bool was_trial;
    /* STORE_UPDATED: the customer as the update left it (strings from the
     * arena), and whether a trial was bought early (trial_ends_at is then
     * occurred_at) */
    struct mw_customer_state updated;
    bool is_bought;
    /* STORE_REJECTED update: update_rejection holds every error */
};

/* Where an outbox row goes. */
enum store_stream {
    STORE_STREAM_EVENTS = 0, /* MESH_WORKER_TOPIC_EVENTS */
    STORE_STREAM_DLQ = 1,    /* MESH_WORKER_TOPIC_DLQ */
};

/* One message to publish, written in the batch's transaction. */
struct store_outbox_row {
    enum store_stream stream;
    const char *event_id; /* unique; DLQ rows: one per consumed offset */
    const void *key;      /* NULL = null key */
    size_t key_len;
    const void *headers; /* headers_pack() blob, may be NULL */
    size_t headers_len;
    const void *payload; /* NULL = null value (a DLQ'd tombstone) */
    size_t payload_len;
};

/*
 * Opens the batch transaction and claims every request item, in order, in
 * one round trip (pipeline mode) for each stretch between updates: records
 * the request id with its payload hash, and for valid new requests claims
 * the domains and inserts the customer.  An update is claimed where it
 * stands in the batch, after everything before it: its customer is loaded
 * and locked, judged by its judge, and when accepted written with its
 * domains and change history (two more round trips).  Sets each item's outcome.
 * A domain already held by a live customer makes the item STORE_REJECTED with
 * taken_domains set and nothing of it kept.  DLQ items get STORE_DLQ.  An item
 * whose request id (or a termination's msp_id or customer_id) is not UTF-8 or
 * is longer than 256 bytes is STORE_REJECTED without SQL and not recorded
 * (termination_code MW_REJ_INVALID_FIELD), so that it cannot fail the
 * batch; the rules reject such requests anyway.  Returns 0 with the
 * transaction still open, or -1 with err filled and the transaction rolled
 * back.
 */
int store_batch_claim(struct store *store, struct store_item *items,
                      size_t count, struct mw_arena *arena,
                      struct mw_error *err) MW_MUSTCHECK;

/*
 * Writes the outbox rows (an event_id already present is skipped, so a
 * re-processed batch adds nothing twice), signals the relays and commits.
 * Without store_batch_claim before it, it runs in a transaction of its
 * own.  Returns 0 once the commit is durable, or -1 with err filled and the
 * transaction rolled back.
 */
int store_batch_finish(struct store *store, const struct store_outbox_row *rows,
                       size_t count, struct mw_error *err) MW_MUSTCHECK;

/* Rolls back an open batch transaction, if any.  Can't fail. */
void store_batch_abort(struct store *store);

/* An outbox row read back by the relay. */
struct store_outbox_msg {
    int64_t id;
    enum store_stream stream;
    const void *key;
    size_t key_len;
    const void *headers;
    size_t headers_len;
    const void *payload;
    size_t payload_len;
};

/*
 * Tries to become the relay leader (a session advisory lock, released when
 * the connection ends).  Sets *is_leader.  Returns 0, or -1 with err.
 */
int store_relay_lead(struct store *store, bool *is_leader,
                     struct mw_error *err) MW_MUSTCHECK;

/*
 * Reads up to max unpublished outbox rows, oldest first, into an array
 * allocated from arena.  Returns 0, or -1 with err.
 */
int store_outbox_fetch(struct store *store, size_t max, struct mw_arena *arena,
                       struct store_outbox_msg **msgs, size_t *count,
                       struct mw_error *err) MW_MUSTCHECK;

/*
 * Marks rows published: deletes them, or with keep sets their published_at
 * so that store_outbox_purge deletes them after the retention.  Returns 0,
 * or -1 with err.
 */
int store_outbox_mark_published(struct store *store, const int64_t *ids,
                                size_t count, bool keep,
                                struct mw_error *err) MW_MUSTCHECK;

/*
 * Deletes published rows older than retention_ms.  Returns the number
 * deleted, or -1 with err.
 */
int64_t store_outbox_purge(struct store *store, int64_t retention_ms,
                           struct mw_error *err) MW_MUSTCHECK;

/* Counts unpublished rows and the age of the oldest in ms (0 if none). */
int store_outbox_backlog(struct store *store, int64_t *count,
                         int64_t *oldest_age_ms,
                         struct mw_error *err) MW_MUSTCHECK;

/*
 * Subscribes this connection to outbox notifications (LISTEN), then waits
 * up to timeout_ms for one.  Returns 1 when notified, 0 on timeout, -1
 * with err.
 */
int store_outbox_wait(struct store *store, int timeout_ms,
                      struct mw_error *err) MW_MUSTCHECK;

/* ---- the lifecycle scheduler ---- */

enum store_timer_kind {
    STORE_TIMER_TRIAL_ENDING = 0, /* TrialEnding */
    STORE_TIMER_TRIAL_CONVERSION, /* TrialConverted */
    STORE_TIMER_TERMINATION,      /* CustomerTerminated */
};

/* What store_timers_claim did with one claimed timer. */
enum store_timer_action {
    STORE_TIMER_FIRED = 0, /* applied: write its event in this transaction */
    STORE_TIMER_CANCELLED, /* no longer applies: no event */
    STORE_TIMER_DEFERRED,  /* an earlier timer of its customer is pending */
    STORE_TIMER_WITHDRAWN, /* not claimed, but cancelled by its customer's
                            * termination fired in this claim: no event */
};

/*
 * A claimed timer and what its event needs.  Times are epoch ms; strings
 * live in the arena given to store_timers_claim.
 */
struct store_timer {
    int64_t id;
    enum store_timer_action action;
    enum store_timer_kind kind;
    const char *customer_id;
    const char *customer_request_id; /* the request that created it */
    const char *msp_id;
    const char *requested_by;
    int32_t licenses;
    int64_t created_at;
    int64_t trial_ends_at;   /* 0 when the customer never was on trial */
    int64_t due_at;          /* the effective time of a termination */
    const char *request_id;  /* TERMINATION: its request id, else NULL */
    const char *traceparent; /* of the creating or terminating request */
    bool was_trial;          /* on trial when the timer was applied */
};

/*
 * Opens a transaction and claims up to max timers due at now_ms (the
 * worker's clock), oldest first, skipping those another transaction
 * holds, and applies them (see mw_fire_due_timers in
 * migrations/0007_pending_timers.sql).  Returns 0 with the transaction
 * open, to be ended by store_batch_finish with the events of the FIRED
 * timers (or store_batch_abort), and *timers (from arena) set to *count
 * timers in (due_at, id) order: those claimed (at most max) and the
 * WITHDRAWN ones; or -1 with err and the transaction rolled back.
 * Deadlocks and serialization failures are retried inside.
 */
int store_timers_claim(struct store *store, int64_t now_ms, size_t max,
                       struct mw_arena *arena, struct store_timer **timers,
                       size_t *count, struct mw_error *err) MW_MUSTCHECK;

/*
 * Counts the timers due at now_ms and not fired, and sets *next_due_ms to
 * the due time of the earliest pending timer (or -1 when there is none).
 * Returns 0, or -1 with err.
 */
int store_timers_pending(struct store *store, int64_t now_ms,
                         int64_t *due_count, int64_t *next_due_ms,
                         struct mw_error *err) MW_MUSTCHECK;

/*
 * Cancels the pending timers of customer_id (the trial reminder and
 * conversion only when is_trial_only, else every kind, the termination
 * included): they move to timer_history as cancelled at now_ms, with no
 * event, and *cancelled is set to how many.  Runs in the batch
 * transaction when one is open (store_batch_claim), so that the
 * cancellation commits with the change that caused it; the caller should
 * hold the customer's row lock there.  Returns 0, or -1 with err (the
 * open transaction is then aborted by PostgreSQL).
 */
int store_timers_cancel(struct store *store, const char *customer_id,
                        bool is_trial_only, int64_t now_ms, int64_t *cancelled,
                        struct mw_error *err);

/*
 * Subscribes this connection to new-timer notifications (LISTEN), then
 * waits up to timeout_ms for one.  Returns 1 when notified, 0 on timeout,
 * -1 with err.
 */
int store_timers_wait(struct store *store, int timeout_ms,
                      struct mw_error *err) MW_MUSTCHECK;

/*
 * Describes a customer for operators, found by customer id or by domain
 * (the live holder first, else the last one released): the customer row,
 * its domains, its termination, its pending timers and its change
 * history (every update applied, oldest first), as indented JSON
 * with UTC times.  Returns 1 and sets *json (malloc'ed, the caller frees)
 * when found, 0 when not, -1 with err.
 */
int store_customer_describe(struct store *store, const char *key, char **json,
                            struct mw_error *err) MW_MUSTCHECK;

#endif
