/*
 * A client of a Confluent Schema Registry (libcurl): writer schemas by id,
 * fetched once and cached; the topic unions registered (or looked up) at
 * start under TopicNameStrategy subjects; Confluent error bodies turned
 * into sentences an operator understands.  The API subset used:
 *
 *   GET  /schemas/ids/{id}                 a writer schema
 *   POST /subjects/{subject}/versions      register (auto-registration on)
 *   POST /subjects/{subject}               look up (auto-registration off)
 *   GET  /subjects/{subject}/versions/latest   what is there instead
 *
 * Each request goes to the configured URLs in turn and is retried with
 * back-off on network errors, HTTP 5xx and 429.  Thread-safe: one mutex
 * guards the connection and the cache.  Secrets (user info, token) and
 * passwords inside URLs are never logged.
 */
#ifndef MW_REGISTRY_H
#define MW_REGISTRY_H

#include "config.h"
#include "error.h"

#include <stdbool.h>
#include <stdint.h>

struct registry;

/* What registry_fetch_schema returns for an id the registry does not know. */
#define REGISTRY_NOT_FOUND 1

/*
 * Returns a client for cfg's MESH_WORKER_SCHEMA_REGISTRY_* settings (cfg
 * is borrowed and must outlive it), or NULL with err.  Makes no request.
 */
struct registry *registry_new(const struct mw_config *cfg,
                              struct mw_error *err) MW_MUSTCHECK;

/* Frees the client; NULL does nothing. */
void registry_destroy(struct registry *registry);

/*
 * A codec_fetch_fn (ctx is the struct registry): the JSON text of writer
 * schema id, from the cache or else GET /schemas/ids/{id}.  Returns 0 and
 * sets *json to a malloc'ed copy the caller frees; REGISTRY_NOT_FOUND when
 * the registry answers 40403 (err says so); -1 with err otherwise,
 * err->retriable when the registry could not be reached, timed out or
 * answered 5xx or 429 after every retry.
 */
int registry_fetch_schema(void *ctx, uint32_t id, char **json,
                          struct mw_error *err) MW_MUSTCHECK;

/*
 * The registry id of schema_json under subject "<topic>-value"
 * (TopicNameStrategy): registered there when auto-registration is on,
 * else looked up, which fails when that exact schema is not registered.
 * Returns 0 and sets *id, or -1 with err: code MW_ERR_CONFIG for what an
 * operator must fix (credentials, an unregistered or incompatible
 * schema), MW_ERR_REGISTRY with retriable set when the registry could not
 * be reached.
 */
int registry_subject_id(struct registry *registry, const char *topic,
                        const char *schema_json, int64_t *id,
                        struct mw_error *err) MW_MUSTCHECK;

/*
 * Fills err from a registry's answer other than 2xx: HTTP status and the
 * Confluent error body {"error_code", "message"} (anything else is read
 * as no body).  action says what was tried ("fetch schema id 7").  Sets
 * err->retriable for 5xx and 429.  Returns the error_code of the body, or
 * status when it has none.  Can't fail.
 */
int registry_error_from_response(long status, const char *body,
                                 const char *action, struct mw_error *err);

/* True when a request answered with HTTP status may succeed if retried. */
bool registry_status_is_retriable(long status);

/*
 * The longest back-off before retry number attempt (0 = the first retry):
 * 100 ms doubling to at most 2 s.  The caller waits a random time between
 * half of it and all of it.  Can't fail.
 */
int64_t registry_backoff_ms(int attempt);

#endif
