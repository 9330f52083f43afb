/*
 * What the files of the codec share and nothing outside it may use: the
 * struct codec itself and the functions one concern offers another.
 * codec.c frames and sets up, codec_value.c copies records in and out of
 * avro-c values, codec_walk.c checks bytes before avro-c reads them,
 * codec_resolve.c reads values written with a registry's schemas, and
 * codec_canonical.c computes Parsing Canonical Form and fingerprints.
 */
#ifndef MW_CODEC_INTERNAL_H
#define MW_CODEC_INTERNAL_H

#include "codec.h"
#include "record.h"

#include <avro.h>
#include <stdbool.h>

#define CODEC_NAMESPACE "mesh.provisioning"
#define CODEC_CONFLUENT_HEADER 5 /* 0x00 + big-endian int32 schema id */
/* Deepest nesting of a schema or a value that is walked. */
#define CODEC_MAX_DEPTH 32

/*
 * One record type as this codec reads and writes it: our schema, a value
 * of it reused across messages, and with a registry a value holding the
 * schema's field defaults (has_default says which fields have one).
 */
struct codec_type {
    enum mw_record_type type;
    avro_schema_t schema;
    avro_value_iface_t *iface;
    avro_value_t value;
    bool has_value;
    uint64_t fingerprint;
    avro_value_t defaults;
    bool has_defaults;
    bool has_default[RECORD_MAX_FIELDS];
};

/* A cached writer schema of a registry; see codec_resolve.c. */
struct writer_entry;

struct codec {
    struct codec_type types[MW_REC_COUNT];
    avro_writer_t writer;
    avro_reader_t reader;
    char *scratch; /* encoder output, reused */
    size_t scratch_size;
    /* Set by codec_use_registry(). */
    bool has_registry;
    struct codec_registry registry;
    struct writer_entry *writers; /* registry.cache_size slots */
    size_t writers_next;          /* filled (or evicted) next */
    size_t writers_last;          /* the last hit */
};

/*
 * Reads body[0..len) into value, a value of type (or a resolver of a
 * projection of it), once the walk has passed.  Returns CODEC_OK, or
 * CODEC_CORRUPT_AVRO with err (retriable when out of memory).
 */
enum codec_status codec_read_value(struct codec *codec, const void *body,
                                   size_t len, avro_value_t *value,
                                   enum mw_record_type type,
                                   struct mw_error *err) MW_MUSTCHECK;

/* ---- codec_value.c ---- */

/*
 * Fills value, a generic record of rec's type, from rec.  Returns 0, or
 * -1 with err when a value does not fit the schema.
 */
int codec_value_put(const struct mw_record *rec, avro_value_t *value,
                    struct mw_error *err) MW_MUSTCHECK;

/*
 * Fills rec from value, a decoded record of our schema for type; with map
 * and defaults, value is a projection of it onto a writer's fields: map[i]
 * is the projection's index of our field i, or -1 when the writer lacks
 * it and defaults (a value of our schema holding its defaults) answers.
 * Strings come from arena.  Returns CODEC_OK or CODEC_CORRUPT_AVRO with
 * err naming the field.
 */
enum codec_status
codec_value_take(enum mw_record_type type, avro_value_t *value, const int *map,
                 avro_value_t *defaults, struct mw_arena *arena,
                 struct mw_record *rec, struct mw_error *err) MW_MUSTCHECK;

/* ---- codec_walk.c ---- */

/*
 * Checks that buf[0..len) is exactly one value of schema.  Returns 0, or
 * -1 with err saying where and why.
 */
int codec_walk_value(avro_schema_t schema, const void *buf, size_t len,
                     struct mw_error *err) MW_MUSTCHECK;

/*
 * Reads the branch index that starts a union value of buf[0..len): sets
 * *branch and *used (its bytes).  Returns 0, or -1 with err when it is no
 * number or not one of branches.
 */
int codec_walk_branch(const void *buf, size_t len, size_t branches,
                      size_t *branch, size_t *used,
                      struct mw_error *err) MW_MUSTCHECK;

/* ---- codec_resolve.c ---- */

/*
 * Decodes body[0..len), the Avro part of a Confluent-framed value, with
 * writer schema id of the attached registry.  See codec_decode() and
 * codec_use_registry() for what comes back.
 */
enum codec_status codec_resolve_decode(struct codec *codec, uint32_t id,
                                       const unsigned char *body, size_t len,
                                       struct mw_arena *arena,
                                       struct mw_record *rec,
                                       struct mw_error *err) MW_MUSTCHECK;

/* Frees the cached writer schemas; a codec without a registry is fine. */
void codec_resolve_clear(struct codec *codec);

#endif
