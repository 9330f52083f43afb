/*
 * What the consumer, the relay and the CLI share about Kafka: client
 * configuration from struct mw_config, and a compact byte form of message
 * headers so that they can be kept in the outbox and replayed unchanged.
 */
#ifndef MW_KAFKA_H
#define MW_KAFKA_H

#include "arena.h"
#include "config.h"
#include "error.h"

#include <librdkafka/rdkafka.h>
#include <stddef.h>

/*
 * Returns a new librdkafka configuration for a client of kind client
 * (CONFIG_KAFKA_PRODUCER or CONFIG_KAFKA_CONSUMER): bootstrap.servers,
 * the worker's reconnect back-off and client.id, then defaults (name,
 * value, name, value, ..., NULL; may be NULL), then every
 * MESH_WORKER_KAFKA_<PROPERTY> whose property applies to this kind of
 * client, then the MESH_WORKER_KAFKA_PRODUCER_ or _CONSUMER_ ones of this
 * kind.  Checks the variables first (kafka_check_properties).  Returns
 * NULL with err naming the variable; the caller owns the result.
 */
rd_kafka_conf_t *kafka_conf_new(const struct mw_config *cfg,
                                const char *bootstrap,
                                enum config_kafka_client client,
                                const char *const *defaults,
                                struct mw_error *err) MW_MUSTCHECK;

/*
 * Checks every MESH_WORKER_KAFKA_* variable: librdkafka knows the
 * property and accepts the value, a _PRODUCER_ or _CONSUMER_ variable
 * names a property of that kind of client, and a property the worker's
 * guarantees depend on keeps the worker's value (the README lists them).
 * Returns 0, or -1 with err (MW_ERR_CONFIG) naming the variable.
 */
int kafka_check_properties(const struct mw_config *cfg,
                           struct mw_error *err) MW_MUSTCHECK;

/*
 * librdkafka's log callback: writes its lines through log.c as JSON with
 * module "librdkafka".  Set on every client the worker creates.
 */
void kafka_log(const rd_kafka_t *rk, int level, const char *facility,
               const char *line);

/*
 * Sets one property; returns 0, or -1 with err filled (MW_ERR_CONFIG).
 */
int kafka_conf_set(rd_kafka_conf_t *conf, const char *name, const char *value,
                   struct mw_error *err) MW_MUSTCHECK;

/*
 * Header blobs: for each header, a 2-byte big-endian name length, the
 * name, a 4-byte big-endian value length (0xffffffff for a null value) and
 * the value.
 */
struct kafka_headers_buf {
    unsigned char *buf;
    size_t len;
    size_t cap;
    struct mw_arena *arena;
};

/* Starts an empty blob whose bytes come from arena. */
void kafka_headers_init(struct kafka_headers_buf *hb, struct mw_arena *arena);

/* Appends a header; value NULL is a null value.  0, or -1 out of memory. */
int kafka_headers_add(struct kafka_headers_buf *hb, const char *name,
                      const void *value, ssize_t value_len);

/* Appends every header of a consumed message.  0, or -1. */
int kafka_headers_add_all(struct kafka_headers_buf *hb,
                          const rd_kafka_headers_t *hdrs);

/*
 * Returns new librdkafka headers from a blob (NULL when the blob is empty
 * or malformed).  The caller owns them (or hands them to producev).
 */
rd_kafka_headers_t *kafka_headers_unpack(const void *blob, size_t len);

/*
 * Produces a copy of key and value (either may be NULL) to topic, with
 * hdrs (may be NULL), polling rk while librdkafka's queue is full; opaque
 * goes to the delivery report.  On success hdrs belong to librdkafka, on
 * failure they are destroyed.  Returns the produce error.
 */
rd_kafka_resp_err_t kafka_produce(rd_kafka_t *rk, const char *topic,
                                  const void *key, size_t key_len,
                                  const void *value, size_t value_len,
                                  rd_kafka_headers_t *hdrs, void *opaque);

/*
 * Finds a header's last value in a consumed message.  Returns 0 and sets
 * *value and *len, or -1 when absent.
 */
int kafka_header_get(const rd_kafka_message_t *rkm, const char *name,
                     const void **value, size_t *len);

#endif
