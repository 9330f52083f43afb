/*
 * Configuration from MESH_WORKER_* environment variables (12-factor),
 * validated once at start; read-only afterwards.  A variable ending in
 * _FILE names a file holding the value (for secrets).  Every error names
 * the variable and the value seen (secrets excepted).
 */
#ifndef MW_CONFIG_H
#define MW_CONFIG_H

#include "error.h"
#include "log.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CONFIG_MAX_KAFKA_PROPS 64

/*
 * The default codec of customer.events and the DLQ: one every mainstream
 * client reads without a plugin (kafkajs reads only none and gzip).
 */
#define CONFIG_EVENTS_COMPRESSION "gzip"

/* Which clients a MESH_WORKER_KAFKA_* variable is for. */
enum config_kafka_client {
    CONFIG_KAFKA_EVERY,    /* MESH_WORKER_KAFKA_<PROPERTY> */
    CONFIG_KAFKA_PRODUCER, /* MESH_WORKER_KAFKA_PRODUCER_<PROPERTY> */
    CONFIG_KAFKA_CONSUMER  /* MESH_WORKER_KAFKA_CONSUMER_<PROPERTY> */
};

struct config_kafka_prop {
    char *var;   /* the variable, e.g. "MESH_WORKER_KAFKA_ACKS_FILE" */
    char *name;  /* librdkafka property, e.g. "security.protocol" */
    char *value; /* may be a secret: never log it */
    int is_secret;
    enum config_kafka_client client;
};

struct mw_config {
    char *kafka_bootstrap_servers; /* NULL: embedded mock cluster */
    char *database_url;            /* NULL: embedded PostgreSQL */
    char *schema_registry_url;     /* NULL: single-object encoding */
    char *data_dir;
    char *topic_requests;
    char *topic_events;
    char *topic_dlq;
    char *group_id;
    char *events_compression;     /* compression.codec of the relay */
    bool is_exactly_once;         /* MESH_WORKER_DELIVERY=exactly-once */
    char *relay_transactional_id; /* exactly-once: the relay's producer */
    char *http_addr;              /* "" disables the HTTP server */
    enum log_level log_level;
    int64_t trial_period_ms;
    int64_t trial_reminder_ms;
    int64_t shutdown_timeout_ms;
    int64_t scheduler_interval_ms;
    int64_t outbox_retention_ms;
    int batch_size;
    int64_t batch_wait_ms;
    int relay_batch_size;
    int embedded_partitions;
    int64_t database_wait_ms; /* how long start-up waits for PostgreSQL */
    size_t kafka_props_count;
    struct config_kafka_prop kafka_props[CONFIG_MAX_KAFKA_PROPS];
    /* Schema Registry (used only with schema_registry_url). */
    char *schema_registry_user_info;    /* "user:password"; never log it */
    char *schema_registry_bearer_token; /* never log it */
    char *schema_registry_ca_file;
    char *schema_registry_cert_file;
    char *schema_registry_key_file;
    int64_t schema_registry_timeout_ms;
    int schema_registry_auto_register;
    int schema_registry_cache_size;
};

/* One documented variable, for --help and the README. */
struct config_var {
    const char *name;
    const char *default_value;
    const char *meaning;
};

/* The documented variables, ending with a NULL name. */
extern const struct config_var config_vars[];

/*
 * Reads the environment into cfg.  Returns 0, or -1 with err naming the
 * variable (code MW_ERR_CONFIG).  On error cfg may be partly filled;
 * config_free() it either way.
 */
int config_load(struct mw_config *cfg, struct mw_error *err) MW_MUSTCHECK;

/* Frees what config_load allocated.  Can't fail. */
void config_free(struct mw_config *cfg);

/*
 * Parses a duration: a whole number followed by ms, s, m, h or d, or "0".
 * Returns 0 and sets *ms, or -1.
 */
int config_parse_duration(const char *s, int64_t *ms);

/*
 * Writes conninfo with any password replaced by "****" into out (size
 * len), for logs and error messages.
 */
void config_redact_url(const char *conninfo, char *out, size_t len);

#endif
