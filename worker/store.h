/*
 * Everything the worker keeps in PostgreSQL, and the only module that
 * speaks SQL: migrations, the per-batch provisioning transaction, the
 * outbox read by the relay.
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
struct store *store_new(const char *conninfo, struct mw_error *err);

/* Closes the connection; NULL does nothing. */
void store_destroy(struct store *store);

/*
 * Applies every compiled-in migration not yet applied, in order, each in
 * its own transaction, under an advisory lock so that replicas starting
 * together apply each once.  Returns 0, or -1 with err filled.
 */
int store_migrate(struct store *store, struct mw_error *err);

/* Returns 0 when the server answers a trivial query, or -1 with err. */
int store_ping(struct store *store, struct mw_error *err);

/* What became of one consumed message. */
enum store_outcome {
    STORE_PENDING = 0,
    STORE_CREATED,      /* customer provisioned now */
    STORE_REJECTED,     /* rejected now (rules or a taken domain) */
    STORE_DUPLICATE,    /* same request_id, same content: nothing new */
    STORE_CONFLICT,     /* same request_id, other content */
    STORE_DLQ,          /* undecodable, sent to the DLQ */
    STORE_SCHEDULED,    /* termination accepted (lifecycle) */
};

enum store_item_kind {
    STORE_ITEM_REQUEST = 0,
    STORE_ITEM_TERMINATION,
    STORE_ITEM_DLQ,
};

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
    const char *traceparent;          /* NULL when absent */
    /* inputs for STORE_ITEM_TERMINATION */
    const struct mw_termination_request *termination;
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
};

/* Where an outbox row goes. */
enum store_stream {
    STORE_STREAM_EVENTS = 0, /* MESH_WORKER_TOPIC_EVENTS */
    STORE_STREAM_DLQ = 1,    /* MESH_WORKER_TOPIC_DLQ */
};

/* One message to publish, written in the batch's transaction. */
struct store_outbox_row {
    enum store_stream stream;
    const char *event_id; /* NULL for DLQ rows; unique otherwise */
    const void *key;      /* NULL = null key */
    size_t key_len;
    const void *headers; /* headers_pack() blob, may be NULL */
    size_t headers_len;
    const void *payload; /* NULL = null value (a DLQ'd tombstone) */
    size_t payload_len;
};

/*
 * Opens the batch transaction and claims every request item, in order, in
 * one round trip (pipeline mode): records the request id with its
 * payload hash, and for valid new requests claims the domains and inserts
 * the customer.  Sets each item's outcome.  A domain already held by a
 * live customer makes the item STORE_REJECTED with taken_domains set and
 * nothing of it kept.  DLQ items get STORE_DLQ.  An item whose request id
 * (or a termination's msp_id or customer_id) is not UTF-8 or is longer
 * than 256 bytes is STORE_REJECTED without SQL and not recorded
 * (termination_code MW_REJ_INVALID_FIELD), so that it cannot fail the
 * batch; the rules reject such requests anyway.  Returns 0 with the
 * transaction still open, or -1 with err filled and the transaction rolled
 * back.
 */
int store_batch_claim(struct store *store, struct store_item *items,
                      size_t count, struct mw_arena *arena,
                      struct mw_error *err);

/*
 * Writes the outbox rows (an event_id already present is skipped, so a
 * re-processed batch adds nothing twice), signals the relays and commits.
 * Without store_batch_claim before it, it runs in a transaction of its
 * own.  Returns 0 once the commit is durable, or -1 with err filled and the
 * transaction rolled back.
 */
int store_batch_finish(struct store *store,
                       const struct store_outbox_row *rows, size_t count,
                       struct mw_error *err);

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
                     struct mw_error *err);

/*
 * Reads up to max unpublished outbox rows, oldest first, into an array
 * allocated from arena.  Returns 0, or -1 with err.
 */
int store_outbox_fetch(struct store *store, size_t max,
                       struct mw_arena *arena, struct store_outbox_msg **msgs,
                       size_t *count, struct mw_error *err);

/* Marks rows published.  Returns 0, or -1 with err. */
int store_outbox_mark_published(struct store *store, const int64_t *ids,
                                size_t count, struct mw_error *err);

/*
 * Deletes published rows older than retention_ms.  Returns the number
 * deleted, or -1 with err.
 */
int64_t store_outbox_purge(struct store *store, int64_t retention_ms,
                           struct mw_error *err);

/* Counts unpublished rows and the age of the oldest in ms (0 if none). */
int store_outbox_backlog(struct store *store, int64_t *count,
                         int64_t *oldest_age_ms, struct mw_error *err);

/*
 * Subscribes this connection to outbox notifications (LISTEN), then waits
 * up to timeout_ms for one.  Returns 1 when notified, 0 on timeout, -1
 * with err.
 */
int store_outbox_wait(struct store *store, int timeout_ms,
                      struct mw_error *err);

#endif
