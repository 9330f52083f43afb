/*
 * Avro encoding and decoding of the records of customer.requests and
 * customer.events.
 *
 * Framing (SPEC §3): without a Schema Registry, Avro single-object encoding
 * (0xC3 0x01, little-endian CRC-64-AVRO fingerprint of the record schema's
 * Parsing Canonical Form, then the Avro binary record).  With a registry,
 * Confluent framing (0x00, big-endian int32 schema id, Avro binary).  The
 * reader recognises both by the first byte; until a registry is attached
 * (codec_use_registry), a Confluent-framed value is CODEC_UNKNOWN_SCHEMA.
 * With one, the writer schema of each id is fetched once, cached, and
 * resolved against ours (schema evolution); the codec itself does no I/O,
 * the fetch function given to it does.
 *
 * Decoding never trusts the bytes: every length is checked against what is
 * left before anything is allocated, and trailing bytes are an error.  A
 * struct codec is not thread-safe: one per thread.
 */
#ifndef MW_CODEC_H
#define MW_CODEC_H

#include "arena.h"
#include "error.h"
#include "mw.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct codec;

/* Why a value did not decode; names are the dlq.reason values of SPEC §8. */
enum codec_status {
    CODEC_OK = 0,
    CODEC_EMPTY_VALUE,         /* "empty-value": null or zero-length */
    CODEC_BAD_MAGIC,           /* "bad-magic" */
    CODEC_UNKNOWN_SCHEMA,      /* "unknown-schema" */
    CODEC_SCHEMA_INCOMPATIBLE, /* "schema-incompatible" */
    CODEC_CORRUPT_AVRO,        /* "corrupt-avro", trailing bytes too */
    CODEC_WRONG_RECORD_TYPE,   /* "wrong-record-type" */
    CODEC_OVERSIZE,            /* "oversize": over MW_MAX_MESSAGE_BYTES */
    CODEC_STATUS_COUNT
};

/* Returns the dlq.reason text of a status ("bad-magic"). Can't fail. */
const char *codec_status_name(enum codec_status status);

/*
 * Parses the compiled-in schemas (see codec_schema_json) and prepares
 * writers and readers.  Returns NULL and fills err if a schema does not
 * parse (a build defect).
 */
struct codec *codec_new(struct mw_error *err) MW_MUSTCHECK;

/* Frees the codec; NULL does nothing. */
void codec_destroy(struct codec *codec);

/*
 * Decodes one framed value.  On CODEC_OK, rec is filled with strings
 * allocated from arena (valid until the arena is reset).  On any other
 * status, err->msg says what was wrong in a sentence fit for dlq.error.
 * Never crashes on any input.  Any of the nine records decodes; the
 * caller checks rec->type against the topic (CODEC_WRONG_RECORD_TYPE).
 * A string holding a NUL byte is CODEC_CORRUPT_AVRO, since it cannot be
 * a C string.  When err->retriable is set the value was not at fault
 * (out of memory): retry it rather than dead-letter it.
 */
enum codec_status codec_decode(struct codec *codec, const void *buf, size_t len,
                               struct mw_arena *arena, struct mw_record *rec,
                               struct mw_error *err) MW_MUSTCHECK;

/* What a codec_fetch_fn returns when the registry has no such id. */
#define CODEC_FETCH_NOT_FOUND 1

/*
 * Fetches the JSON text of writer schema id.  Returns 0 and sets *json to
 * a malloc'ed string the codec frees; CODEC_FETCH_NOT_FOUND when the
 * registry says there is no such id (err says what it answered); -1 with
 * err when it could not answer.
 */
typedef int (*codec_fetch_fn)(void *ctx, uint32_t id, char **json,
                              struct mw_error *err);

/* A Schema Registry as the codec sees it. */
struct codec_registry {
    codec_fetch_fn fetch;
    void *ctx; /* borrowed; passed to fetch */
    /*
     * Registry ids of the topic unions, written in the Confluent framing
     * of codec_encode; -1 when records of that topic are never encoded.
     */
    int64_t requests_id;
    int64_t events_id;
    size_t cache_size; /* writer schemas kept resolved, at least 1 */
};

/*
 * Attaches a registry: from now on codec_encode writes Confluent framing
 * and codec_decode reads it.  An id not cached is fetched (on the
 * caller's thread) and resolved once; a fetch that fails comes back as
 * CODEC_UNKNOWN_SCHEMA with err->retriable set (hold the message, do not
 * dead-letter it), an id the registry does not know as CODEC_UNKNOWN_SCHEMA,
 * a writer schema that does not resolve as CODEC_SCHEMA_INCOMPATIBLE
 * naming the field.  Call once, before decoding.  Returns 0, or -1 with
 * err.
 */
int codec_use_registry(struct codec *codec,
                       const struct codec_registry *registry,
                       struct mw_error *err) MW_MUSTCHECK;

/*
 * Reads the schema id of a Confluent-framed value into *id.  Returns 0, or
 * -1 when the value is not Confluent-framed.  Can't fail otherwise.
 */
int codec_confluent_id(const void *buf, size_t len, uint32_t *id);

/*
 * Encodes rec in single-object framing (Confluent framing with a
 * registry attached).  On success returns 0 and points
 * *out at *out_len bytes allocated from arena.  Returns -1 and fills err
 * when a value does not fit its schema (a caller's defect, e.g. an enum
 * out of range).
 */
int codec_encode(struct codec *codec, const struct mw_record *rec,
                 struct mw_arena *arena, const void **out, size_t *out_len,
                 struct mw_error *err) MW_MUSTCHECK;

/*
 * Writes the bytes that identify a request's content for idempotency: the
 * Avro binary of the request with requested_at set to 0 (SPEC §8:
 * "different content" is any field but requested_at).  The caller hashes
 * them.  Returns 0, or -1 with err filled.
 */
int codec_request_identity(struct codec *codec, const struct mw_record *rec,
                           struct mw_arena *arena, const void **out,
                           size_t *out_len, struct mw_error *err) MW_MUSTCHECK;

/*
 * Returns the JSON text of the schema of a record type, of a topic union
 * ("customer.requests", "customer.events") or of a named type
 * ("mesh.provisioning.RejectionCode"), or NULL if there is none.  The text
 * is static.
 */
const char *codec_schema_json(const char *name);

/*
 * Returns the branch of type in its topic's union (schemas/customer.*.avsc)
 * and sets *is_request when that is customer.requests; -1 for a type that
 * is no record.  Can't fail otherwise.
 */
int codec_union_branch(enum mw_record_type type, bool *is_request);

/* Returns the CRC-64-AVRO fingerprint of a record type's schema. */
uint64_t codec_fingerprint(const struct codec *codec, enum mw_record_type type);

/*
 * Computes the CRC-64-AVRO (Rabin) fingerprint of len bytes.  Can't fail.
 * Exposed for tests against the Avro specification's vectors.
 */
uint64_t codec_crc64_avro(const void *buf, size_t len);

/*
 * Writes the Parsing Canonical Form of a schema given as JSON text into a
 * malloc'ed string the caller frees.  Returns NULL and fills err on a
 * schema that does not parse.
 */
char *codec_canonical_form(const char *schema_json,
                           struct mw_error *err) MW_MUSTCHECK;

#endif
