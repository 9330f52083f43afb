/*
 * One batch of consumed messages, from bytes to a committed transaction:
 * decode (codec), validate (rules), provision and write the outcome events
 * and DLQ entries to the outbox (store), all in one PostgreSQL transaction.
 * Knows nothing of Kafka clients: the consumer hands it plain messages.
 */
#ifndef MW_PROCESS_H
#define MW_PROCESS_H

#include "codec.h"
#include "config.h"
#include "error.h"
#include "store.h"

#include <stddef.h>
#include <stdint.h>

struct process;

/* A consumed message; every pointer is borrowed for the call. */
struct process_msg {
    const char *topic;
    int32_t partition;
    int64_t offset;
    int64_t timestamp; /* epoch ms, -1 when unknown */
    const void *key;   /* NULL = null key */
    size_t key_len;
    const void *value; /* NULL = tombstone */
    size_t value_len;
    const void *headers; /* kafka_headers blob of the message's headers */
    size_t headers_len;
    const char *traceparent; /* NUL-terminated copy, or NULL */
};

/* What a batch did, for metrics and tests. */
struct process_stats {
    size_t created;
    size_t updated;
    size_t rejected;
    size_t duplicates;
    size_t conflicts;
    size_t dlq;
    size_t scheduled;
};

/*
 * Returns a processor that uses codec and store (both borrowed, both used
 * only from the calling thread), or NULL with err.
 */
struct process *process_new(const struct mw_config *cfg, struct codec *codec,
                            struct store *store,
                            struct mw_error *err) MW_MUSTCHECK;

/* Frees the processor; NULL does nothing. */
void process_destroy(struct process *process);

/*
 * Gives process a second database session, on conninfo, for batches that
 * can be split over two (split.h).  Returns 0, or -1 with err.
 */
int process_use_second_session(struct process *process, const char *conninfo,
                               struct mw_error *err) MW_MUSTCHECK;

/*
 * A process for a second batch in flight: it shares the configuration,
 * codec, database sessions and second session of sibling and has
 * batch buffers of its own, so that one batch can be prepared while the
 * sibling's is committed on another thread.  The sibling outlives it.
 */
struct process *process_new_twin(const struct process *sibling,
                                 struct mw_error *err) MW_MUSTCHECK;

/*
 * The first half of process_batch, without I/O: decodes and validates
 * count messages into the process's buffers.  msgs must stay valid until
 * process_commit.  Returns 0, or -1 with err (out of memory).
 */
int process_prepare(struct process *process, const struct process_msg *msgs,
                    size_t count, struct mw_error *err) MW_MUSTCHECK;

/*
 * The second half: claims, encodes and commits the batch process_prepare
 * prepared, as process_batch does.
 */
int process_commit(struct process *process, const struct process_msg *msgs,
                   size_t count, struct process_stats *stats,
                   struct mw_error *err) MW_MUSTCHECK;

/*
 * Handles count messages in one transaction.  Returns 0 once the outcome
 * of every message is durable (only then may offsets be committed), or -1
 * with err (err->retriable tells whether the same batch may succeed
 * later); on -1 nothing of the batch was kept.
 */
int process_batch(struct process *process, const struct process_msg *msgs,
                  size_t count, struct process_stats *stats,
                  struct mw_error *err) MW_MUSTCHECK;

#endif
