/*
 * The embedded defaults for one machine: librdkafka's mock cluster in this
 * process when no Kafka is configured, and a private PostgreSQL cluster
 * under the data directory when no database is.  For development and
 * demos: the mock cluster keeps about 5 MiB per partition and nothing
 * across restarts.
 */
#ifndef MW_EMBEDDED_H
#define MW_EMBEDDED_H

#include "config.h"
#include "error.h"

struct embedded_kafka;
struct embedded_pg;

/*
 * Starts a one-broker mock cluster with the three topics
 * (cfg->embedded_partitions partitions each, one for the DLQ).  Returns
 * NULL with err on failure.
 */
struct embedded_kafka *embedded_kafka_start(const struct mw_config *cfg,
                                            struct mw_error *err) MW_MUSTCHECK;

/* The bootstrap address other clients use ("127.0.0.1:PORT"). */
const char *embedded_kafka_bootstraps(const struct embedded_kafka *ek);

/* Stops the mock cluster; NULL does nothing. */
void embedded_kafka_stop(struct embedded_kafka *ek);

/*
 * Starts (initialising on first use) a PostgreSQL cluster under
 * data_dir/postgresql, listening only on a Unix socket in data_dir/run.
 * Reuses a server already running there.  As root, runs it as the
 * "postgres" user.  Returns NULL with err on failure (the hint names the
 * log file).
 */
struct embedded_pg *embedded_pg_start(const char *data_dir,
                                      struct mw_error *err) MW_MUSTCHECK;

/* A libpq connection string for the private cluster. */
const char *embedded_pg_conninfo(const struct embedded_pg *pg);

/* Stops the server if this process started it, then frees; NULL is fine. */
void embedded_pg_stop(struct embedded_pg *pg);

#endif
