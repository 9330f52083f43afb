/*
 * The exactly-once relay (MESH_WORKER_DELIVERY=exactly-once): publishes
 * the outbox in Kafka transactions and records in each how far it has
 * published, so that read_committed consumers see every event once.  The
 * relay module runs it in its thread instead of the at-least-once loop.
 */
#ifndef MW_RELAY_TXN_H
#define MW_RELAY_TXN_H

#include "config.h"
#include "error.h"

#include <librdkafka/rdkafka.h>
#include <stdatomic.h>

struct relay_txn;

/*
 * Prepares the relay (no connection is made yet).  conf is the relay's
 * producer configuration: ownership moves here, also on error (the
 * caller sets its pointer to NULL).  conninfo and bootstrap are copied.
 * Returns NULL with err on a configuration librdkafka refuses.
 */
struct relay_txn *relay_txn_new(const struct mw_config *cfg,
                                const char *conninfo, const char *bootstrap,
                                rd_kafka_conf_t *conf,
                                struct mw_error *err) MW_MUSTCHECK;

/*
 * Publishes until *stop_now, or until *draining and nothing committed is
 * left to publish.  Errors are logged and retried.  Can't fail.
 */
void relay_txn_run(struct relay_txn *txn, atomic_int *draining,
                   atomic_int *stop_now);

/* Frees; NULL does nothing.  Not while relay_txn_run runs. */
void relay_txn_destroy(struct relay_txn *txn);

#endif
