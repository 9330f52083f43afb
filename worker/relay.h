/*
 * The outbox relay: publishes committed outbox rows to customer.events and
 * the DLQ with the idempotent producer, in outbox order, and marks them
 * published once Kafka acknowledged them.  Runs in its own thread with its
 * own database connection; of all replicas, one leads at a time.
 */
#ifndef MW_RELAY_H
#define MW_RELAY_H

#include "config.h"
#include "error.h"

struct relay;

/*
 * Creates the producer (nothing runs yet).  conninfo and bootstrap are
 * copied.  Returns NULL with err on a configuration librdkafka refuses.
 */
struct relay *relay_new(const struct mw_config *cfg, const char *conninfo,
                        const char *bootstrap,
                        struct mw_error *err) MW_MUSTCHECK;

/* Starts the relay thread.  Returns 0, or -1 with err. */
int relay_start(struct relay *relay, struct mw_error *err) MW_MUSTCHECK;

/*
 * Asks the thread to publish what is committed and stop, and waits for it
 * at most timeout_ms (then stops it mid-way: unpublished rows stay in the
 * outbox for the next run).  Can't fail.
 */
void relay_stop(struct relay *relay, int64_t timeout_ms);

/* Stops if running, then frees; NULL does nothing. */
void relay_destroy(struct relay *relay);

#endif
