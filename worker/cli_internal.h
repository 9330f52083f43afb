/*
 * What the subcommands share, private to cli*.c: reading the
 * configuration, finding the database and Kafka, attaching the Schema
 * Registry, and turning an error into an exit status.  Every function
 * that fails prints why to stderr, in the same words for every command,
 * so that a command only chooses its exit status.
 */
#ifndef MW_CLI_INTERNAL_H
#define MW_CLI_INTERNAL_H

#include "cli.h"

#include "codec.h"
#include "config.h"
#include "embedded.h"
#include "error.h"
#include "registry.h"

#include <librdkafka/rdkafka.h>
#include <stdbool.h>

/*
 * Loads the configuration into cfg and sets the log level.  Returns 0, or
 * CLI_EXIT_USAGE after printing why (cfg is then already freed).
 */
int cli_load_config(struct mw_config *cfg);

/* True when an argument after the command's name asks for its help. */
bool cli_wants_help(int argc, char **argv);

/*
 * Reads text, the value of option ("--max"), as a whole decimal number
 * in [min, max] into *out.  Returns 0, or CLI_EXIT_USAGE after printing
 * why.
 */
int cli_parse_integer(const char *option, const char *text, long long min,
                      long long max, long long *out);

/* Prints err and returns the exit status it stands for. */
int cli_fail(const struct mw_error *err);

/*
 * The database to use: MESH_WORKER_DATABASE_URL, or else a private
 * PostgreSQL started under MESH_WORKER_DATA_DIR, which *pg then holds
 * (stop it with embedded_pg_stop after the last use of the result).
 * Returns the connection string, or NULL with err.
 */
const char *cli_database(const struct mw_config *cfg, struct embedded_pg **pg,
                         struct mw_error *err) MW_MUSTCHECK;

/*
 * A codec for cfg in *codec and, with MESH_WORKER_SCHEMA_REGISTRY_URL
 * set, the Schema Registry attached to it in *registry (else NULL).  The
 * union of requests_topic and of events_topic, when given, is registered
 * (or looked up) so that codec_encode can frame records of it.  Returns
 * 0, or -1 with err and both NULL.  The caller destroys the codec before
 * the registry.
 */
int cli_codec_new(const struct mw_config *cfg, const char *requests_topic,
                  const char *events_topic, struct codec **codec,
                  struct registry **registry,
                  struct mw_error *err) MW_MUSTCHECK;

/*
 * cli_load_config for an operator tool that talks to Kafka, and its
 * bootstrap in *bootstrap: option (--bootstrap) when given, else
 * MESH_WORKER_KAFKA_BOOTSTRAP_SERVERS.  Returns 0, or CLI_EXIT_USAGE
 * after printing why (with a hint when neither is set; cfg is then
 * already freed).
 */
int cli_load_tool_config(struct mw_config *cfg, const char *option,
                         const char **bootstrap);

/*
 * The Kafka configuration of an operator tool: kafka_conf_new for client,
 * then the name, value, ..., NULL pairs of forced (may be NULL), which no
 * variable overrides.  Returns it (the caller owns it), or NULL after
 * printing why.
 */
rd_kafka_conf_t *cli_kafka_conf(const struct mw_config *cfg,
                                const char *bootstrap,
                                enum config_kafka_client client,
                                const char *const *forced);

/*
 * rd_kafka_new of type with conf, which it takes in every case.  Returns
 * the client, or NULL after printing why.
 */
rd_kafka_t *cli_kafka_new(rd_kafka_type_t type,
                          rd_kafka_conf_t *conf) MW_MUSTCHECK;

/*
 * Assigns every partition of topic to the consumer rk from offset.
 * Returns the number of partitions assigned, or -1 after printing why.
 */
int cli_assign_topic(rd_kafka_t *rk, const char *topic, int64_t offset);

#endif
