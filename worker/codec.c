/*
 * Avro codec: records of customer.requests and customer.events to and from
 * framed Avro binary, against the schemas compiled in from schemas/.  This
 * file sets the codec up and frames: single-object encoding, Confluent
 * framing, and the dispatch of a value to the walk (codec_walk.c), avro-c
 * and the copy into our structs (codec_value.c), or to the registry's
 * writer schemas (codec_resolve.c).  Pure: no I/O, no logging, no clock.
 * It does not judge content (lengths in code points, syntax of domains
 * and addresses are the rules module's), only whether bytes are a
 * well-formed record of a known schema.
 *
 * Invariant: avro-c never sees bytes the walk has not passed first (see
 * codec_walk.c), and the field tables of record.h are the schemas' fields
 * in order, which codec_new() checks before anything is encoded.
 *
 * Generic values are made once per record type in codec_new() and reused
 * across messages, as is the writer's scratch buffer.  Known limit: avro-c
 * still mallocs each string it reads (and each string item it writes after
 * an array is cleared); the copies handed to callers come from the arena.
 */
#include "codec_internal.h"
#include "embedded_files.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SINGLE_OBJECT_HEADER 10 /* 0xC3 0x01 + 8-byte fingerprint */
#define SCRATCH_MIN 4096

static const char *const status_names[CODEC_STATUS_COUNT] = {
    "ok",
    "empty-value",
    "bad-magic",
    "unknown-schema",
    "schema-incompatible",
    "corrupt-avro",
    "wrong-record-type",
    "oversize",
};

const char *codec_status_name(enum codec_status status)
{
    if ((int)status < 0 || status >= CODEC_STATUS_COUNT)
        return "unknown";
    return status_names[status];
}

/* ---- Schema lookup ---------------------------------------------------- */

/* True when file is "<name>.avsc". */
static bool is_schema_file(const char *file, const char *name, size_t len)
{
    return strncmp(file, name, len) == 0 && strcmp(file + len, ".avsc") == 0;
}

const char *codec_schema_json(const char *name)
{
    const char *prefix = CODEC_NAMESPACE ".";
    size_t len;

    if (name == NULL)
        return NULL;
    if (strncmp(name, prefix, strlen(prefix)) == 0)
        name += strlen(prefix);
    len = strlen(name);
    if (len == 0)
        return NULL;
    for (const struct mw_embedded_file *f = mw_embedded_files; f->kind; f++) {
        if (strcmp(f->kind, "schema") == 0 &&
            is_schema_file(f->name, name, len))
            return f->text;
    }
    return NULL;
}

/* ---- Encoding --------------------------------------------------------- */

/* Fills the reusable value of rec's type from rec. */
static int put_record(struct codec *codec, const struct mw_record *rec,
                      struct mw_error *err)
{
    if ((int)rec->type < 0 || rec->type >= MW_REC_COUNT) {
        mw_error_set(err, MW_ERR_INPUT, false,
                     "cannot encode record type %d: no such type",
                     (int)rec->type);
        return -1;
    }
    return codec_value_put(rec, &codec->types[rec->type].value, err);
}

/*
 * Writes header[0..header_len) and the value of type t into the scratch
 * buffer, growing it until the value fits, then copies both into arena.
 */
static int write_value(struct codec *codec, struct codec_type *t,
                       const unsigned char *header, size_t header_len,
                       struct mw_arena *arena, const void **out,
                       size_t *out_len, struct mw_error *err)
{
    size_t len;
    char *buf;
    int rc;

    for (;;) {
        size_t size;

        if (codec->scratch_size > header_len) {
            avro_writer_memory_set_dest(
                codec->writer, codec->scratch + header_len,
                (int64_t)(codec->scratch_size - header_len));
            rc = avro_value_write(codec->writer, &t->value);
            if (rc == 0)
                break;
            if (rc != ENOSPC) {
                mw_error_set(err, MW_ERR_INPUT, false,
                             "could not encode a %s: %s",
                             mw_record_names[t->type], avro_strerror());
                return -1;
            }
        }
        size = codec->scratch_size < SCRATCH_MIN ? SCRATCH_MIN
                                                 : codec->scratch_size * 2;
        if (size > (size_t)64 * 1024 * 1024) {
            mw_error_set(err, MW_ERR_INPUT, false,
                         "cannot encode a %s: it is larger than 64 MiB",
                         mw_record_names[t->type]);
            return -1;
        }
        buf = realloc(codec->scratch, size);
        if (buf == NULL) {
            mw_error_set(err, MW_ERR_SYSTEM, true,
                         "out of memory encoding a %s",
                         mw_record_names[t->type]);
            return -1;
        }
        codec->scratch = buf;
        codec->scratch_size = size;
    }
    len = header_len + (size_t)avro_writer_tell(codec->writer);
    buf = arena_alloc(arena, len);
    if (buf == NULL) {
        mw_error_set(err, MW_ERR_SYSTEM, true, "out of memory encoding a %s",
                     mw_record_names[t->type]);
        return -1;
    }
    if (header_len > 0)
        memcpy(buf, header, header_len);
    memcpy(buf + header_len, codec->scratch + header_len, len - header_len);
    *out = buf;
    *out_len = len;
    return 0;
}

int codec_union_branch(enum mw_record_type type, bool *is_request)
{
    /* The topic unions grow at their ends: old readers keep their
     * branch numbers (schemas/customer.*.avsc). */
    static const struct {
        bool is_request;
        int branch;
    } branches[MW_REC_COUNT] = {
        [MW_REC_CUSTOMER_REQUESTED] = {true, 0},
        [MW_REC_CUSTOMER_TERMINATION_REQUESTED] = {true, 1},
        [MW_REC_CUSTOMER_UPDATE_REQUESTED] = {true, 2},
        [MW_REC_CUSTOMER_CREATED] = {false, 0},
        [MW_REC_CUSTOMER_REJECTED] = {false, 1},
        [MW_REC_TRIAL_ENDING] = {false, 2},
        [MW_REC_TRIAL_CONVERTED] = {false, 3},
        [MW_REC_CUSTOMER_TERMINATED] = {false, 4},
        [MW_REC_CUSTOMER_UPDATED] = {false, 5},
    };

    if ((int)type < 0 || type >= MW_REC_COUNT)
        return -1;
    *is_request = branches[type].is_request;
    return branches[type].branch;
}

/*
 * Confluent framing of a record of a topic union registered as one
 * schema: 0x00, the union's id, then the datum of the union, which is the
 * branch index (zig-zag, one byte for the few branches we have) and the
 * record.
 */
static int encode_confluent(struct codec *codec, const struct mw_record *rec,
                            struct mw_arena *arena, const void **out,
                            size_t *out_len, struct mw_error *err)
{
    bool is_request = false;
    int branch = codec_union_branch(rec->type, &is_request);
    int64_t id =
        is_request ? codec->registry.requests_id : codec->registry.events_id;
    unsigned char header[CODEC_CONFLUENT_HEADER + 1];

    if (id < 0 || id > INT32_MAX) {
        mw_error_set(err, MW_ERR_INPUT, false,
                     "cannot encode a %s: no registry schema id is known for "
                     "its topic",
                     mw_record_names[rec->type]);
        return -1;
    }
    header[0] = 0x00;
    header[1] = (unsigned char)(id >> 24);
    header[2] = (unsigned char)(id >> 16);
    header[3] = (unsigned char)(id >> 8);
    header[4] = (unsigned char)id;
    header[5] = (unsigned char)(branch * 2);
    return write_value(codec, &codec->types[rec->type], header, sizeof(header),
                       arena, out, out_len, err);
}

int codec_encode(struct codec *codec, const struct mw_record *rec,
                 struct mw_arena *arena, const void **out, size_t *out_len,
                 struct mw_error *err)
{
    unsigned char header[SINGLE_OBJECT_HEADER] = {0xc3, 0x01};
    struct codec_type *t;

    if (put_record(codec, rec, err) != 0)
        return -1;
    if (codec->has_registry)
        return encode_confluent(codec, rec, arena, out, out_len, err);
    t = &codec->types[rec->type];
    for (int i = 0; i < 8; i++)
        header[2 + i] = (unsigned char)(t->fingerprint >> (8 * i));
    return write_value(codec, t, header, sizeof(header), arena, out, out_len,
                       err);
}

int codec_request_identity(struct codec *codec, const struct mw_record *rec,
                           struct mw_arena *arena, const void **out,
                           size_t *out_len, struct mw_error *err)
{
    /* Only the request member is copied, not the rejection storage. */
    struct mw_record copy;

    copy.type = rec->type;
    if (rec->type == MW_REC_CUSTOMER_REQUESTED) {
        copy.u.request = rec->u.request;
        copy.u.request.requested_at = 0;
    } else if (rec->type == MW_REC_CUSTOMER_TERMINATION_REQUESTED) {
        copy.u.termination = rec->u.termination;
        copy.u.termination.requested_at = 0;
    } else if (rec->type == MW_REC_CUSTOMER_UPDATE_REQUESTED) {
        copy.u.update = rec->u.update;
        copy.u.update.requested_at = 0;
    } else {
        mw_error_set(err, MW_ERR_INPUT, false,
                     "cannot compute the identity of record type %d: it is "
                     "not a request",
                     (int)rec->type);
        return -1;
    }
    if (put_record(codec, &copy, err) != 0)
        return -1;
    return write_value(codec, &codec->types[rec->type], NULL, 0, arena, out,
                       out_len, err);
}

/* ---- Decoding --------------------------------------------------------- */

enum codec_status codec_read_value(struct codec *codec, const void *body,
                                   size_t len, avro_value_t *value,
                                   enum mw_record_type type,
                                   struct mw_error *err)
{
    int rc;

    avro_reader_memory_set_source(codec->reader, body, (int64_t)len);
    rc = avro_value_read(codec->reader, value);
    if (rc != 0) {
        mw_error_set(err, rc == ENOMEM ? MW_ERR_SYSTEM : MW_ERR_DECODE,
                     rc == ENOMEM, "could not decode a %s: %s",
                     mw_record_names[type], avro_strerror());
        return CODEC_CORRUPT_AVRO;
    }
    return CODEC_OK;
}

/*
 * Decodes the Avro binary body of a record of type t: the walk first
 * (see codec_walk.c), then avro-c, then the copy.
 */
static enum codec_status decode_body(struct codec *codec, struct codec_type *t,
                                     const void *body, size_t len,
                                     struct mw_arena *arena,
                                     struct mw_record *rec,
                                     struct mw_error *err)
{
    enum codec_status status;

    if (codec_walk_value(t->schema, body, len, err) != 0)
        return CODEC_CORRUPT_AVRO;
    status = codec_read_value(codec, body, len, &t->value, t->type, err);
    if (status != CODEC_OK)
        return status;
    return codec_value_take(t->type, &t->value, NULL, NULL, arena, rec, err);
}

/* A value shorter than its framing header: err says so. */
static enum codec_status header_truncated(const char *framing, size_t len,
                                          int header_len, struct mw_error *err)
{
    mw_error_set(err, MW_ERR_DECODE, false,
                 "corrupt Avro: the %s header is truncated", framing);
    mw_error_detail(err, "The value is %zu bytes; the header alone is %d.", len,
                    header_len);
    return CODEC_CORRUPT_AVRO;
}

static enum codec_status
decode_single_object(struct codec *codec, const unsigned char *buf, size_t len,
                     struct mw_arena *arena, struct mw_record *rec,
                     struct mw_error *err)
{
    uint64_t fingerprint = 0;

    if (len >= 2 && buf[1] != 0x01) {
        mw_error_set(err, MW_ERR_DECODE, false,
                     "bad magic bytes 0xc3 0x%02x: not Avro single-object "
                     "encoding",
                     buf[1]);
        mw_error_detail(err, "Single-object encoding starts 0xc3 0x01.");
        return CODEC_BAD_MAGIC;
    }
    if (len < SINGLE_OBJECT_HEADER)
        return header_truncated("single-object", len, SINGLE_OBJECT_HEADER,
                                err);
    for (int i = 0; i < 8; i++)
        fingerprint |= (uint64_t)buf[2 + i] << (8 * i);
    for (int i = 0; i < MW_REC_COUNT; i++) {
        if (codec->types[i].fingerprint == fingerprint)
            return decode_body(codec, &codec->types[i],
                               buf + SINGLE_OBJECT_HEADER,
                               len - SINGLE_OBJECT_HEADER, arena, rec, err);
    }
    mw_error_set(err, MW_ERR_DECODE, false,
                 "unknown schema fingerprint 0x%016" PRIx64, fingerprint);
    mw_error_detail(err, "No schema compiled into this worker has this "
                         "CRC-64-AVRO fingerprint.");
    mw_error_hint(err, "Encode with the schemas published in schemas/.");
    return CODEC_UNKNOWN_SCHEMA;
}

/*
 * Confluent framing: the writer schema is registry id buf[1..5), read
 * through the registry attached (codec_resolve.c).
 */
static enum codec_status decode_confluent(struct codec *codec,
                                          const unsigned char *buf, size_t len,
                                          struct mw_arena *arena,
                                          struct mw_record *rec,
                                          struct mw_error *err)
{
    uint32_t id;

    if (codec_confluent_id(buf, len, &id) != 0)
        return header_truncated("Confluent", len, CODEC_CONFLUENT_HEADER, err);
    if (!codec->has_registry) {
        mw_error_set(err, MW_ERR_DECODE, false,
                     "unknown schema id %" PRIu32 ": no Schema Registry is "
                     "configured",
                     id);
        mw_error_hint(err, "Set MESH_WORKER_SCHEMA_REGISTRY_URL to read "
                           "Confluent-framed values.");
        return CODEC_UNKNOWN_SCHEMA;
    }
    return codec_resolve_decode(codec, id, buf + CODEC_CONFLUENT_HEADER,
                                len - CODEC_CONFLUENT_HEADER, arena, rec, err);
}

int codec_confluent_id(const void *buf, size_t len, uint32_t *id)
{
    const unsigned char *p = buf;

    if (buf == NULL || len < CODEC_CONFLUENT_HEADER || p[0] != 0x00)
        return -1;
    *id = (uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 |
          (uint32_t)p[4];
    return 0;
}

enum codec_status codec_decode(struct codec *codec, const void *buf, size_t len,
                               struct mw_arena *arena, struct mw_record *rec,
                               struct mw_error *err)
{
    const unsigned char *p = buf;

    if (buf == NULL || len == 0) {
        mw_error_set(err, MW_ERR_DECODE, false, "the value is empty");
        return CODEC_EMPTY_VALUE;
    }
    if (len > MW_MAX_MESSAGE_BYTES) {
        mw_error_set(err, MW_ERR_DECODE, false,
                     "the value is %zu bytes, more than the %d allowed", len,
                     MW_MAX_MESSAGE_BYTES);
        return CODEC_OVERSIZE;
    }
    if (p[0] == 0xc3)
        return decode_single_object(codec, p, len, arena, rec, err);
    if (p[0] == 0x00)
        return decode_confluent(codec, p, len, arena, rec, err);
    mw_error_set(err, MW_ERR_DECODE, false,
                 "bad magic byte 0x%02x: neither Avro single-object "
                 "encoding nor Confluent framing",
                 p[0]);
    mw_error_detail(err, "Expected 0xc3 0x01 or 0x00 as the first bytes.");
    return CODEC_BAD_MAGIC;
}

/* ---- Set-up ----------------------------------------------------------- */

/*
 * Checks that a record schema's fields are the rows of table, in order,
 * and so are those of the nested records it holds.
 */
static int check_fields(avro_schema_t schema, const struct record_table *table,
                        struct mw_error *err)
{
    if (avro_typeof(schema) != AVRO_RECORD ||
        avro_schema_record_size(schema) != table->count ||
        table->count > RECORD_MAX_FIELDS) {
        mw_error_set(err, MW_ERR_CONFIG, false,
                     "schema %s does not match this build", table->name);
        mw_error_detail(err, "Expected a record of %zu fields.", table->count);
        return -1;
    }
    for (size_t i = 0; i < table->count; i++) {
        const struct record_field *f = &table->fields[i];
        const char *name = avro_schema_record_field_name(schema, (int)i);
        avro_schema_t items;

        if (name == NULL || strcmp(name, f->name) != 0) {
            mw_error_set(err, MW_ERR_CONFIG, false,
                         "schema %s does not match this build", table->name);
            mw_error_detail(err, "Field %zu is \"%s\", expected \"%s\".", i,
                            name ? name : "", f->name);
            return -1;
        }
        if (f->kind != RECORD_RECORDS)
            continue;
        items = avro_schema_record_field_get_by_index(schema, (int)i);
        if (avro_typeof(items) != AVRO_ARRAY ||
            check_fields(avro_schema_array_items(items), f->array->item, err) !=
                0)
            return -1;
    }
    return 0;
}

static int load_type(struct codec_type *t, enum mw_record_type type,
                     struct mw_error *err)
{
    const char *name = mw_record_names[type];
    const char *json = codec_schema_json(name);
    char *canonical;

    t->type = type;
    if (json == NULL) {
        mw_error_set(err, MW_ERR_CONFIG, false,
                     "schema %s.avsc is not compiled in", name);
        return -1;
    }
    if (avro_schema_from_json_length(json, strlen(json), &t->schema) != 0) {
        t->schema = NULL;
        mw_error_set(err, MW_ERR_CONFIG, false,
                     "could not parse schema %s.avsc", name);
        mw_error_detail(err, "%s", avro_strerror());
        return -1;
    }
    if (check_fields(t->schema, record_table(type), err) != 0)
        return -1;
    canonical = codec_canonical_form(json, err);
    if (canonical == NULL)
        return -1;
    t->fingerprint = codec_crc64_avro(canonical, strlen(canonical));
    free(canonical);
    t->iface = avro_generic_class_from_schema(t->schema);
    if (t->iface == NULL || avro_generic_value_new(t->iface, &t->value) != 0) {
        mw_error_set(err, MW_ERR_SYSTEM, false,
                     "could not prepare Avro values for %s", name);
        mw_error_detail(err, "%s", avro_strerror());
        return -1;
    }
    t->has_value = true;
    return 0;
}

struct codec *codec_new(struct mw_error *err)
{
    struct codec *codec = calloc(1, sizeof(*codec));

    if (codec == NULL) {
        mw_error_no_memory(err);
        return NULL;
    }
    for (int i = 0; i < MW_REC_COUNT; i++) {
        if (load_type(&codec->types[i], (enum mw_record_type)i, err) != 0)
            goto fail;
    }
    codec->scratch = malloc(SCRATCH_MIN);
    codec->writer = avro_writer_memory("", 0);
    codec->reader = avro_reader_memory("", 0);
    if (codec->scratch == NULL || codec->writer == NULL ||
        codec->reader == NULL) {
        mw_error_no_memory(err);
        goto fail;
    }
    codec->scratch_size = SCRATCH_MIN;
    return codec;
fail:
    codec_destroy(codec);
    return NULL;
}

void codec_destroy(struct codec *codec)
{
    if (codec == NULL)
        return;
    for (int i = 0; i < MW_REC_COUNT; i++) {
        struct codec_type *t = &codec->types[i];

        if (t->has_value)
            avro_value_decref(&t->value);
        if (t->has_defaults)
            avro_value_decref(&t->defaults);
        if (t->iface != NULL)
            avro_value_iface_decref(t->iface);
        if (t->schema != NULL)
            avro_schema_decref(t->schema);
    }
    codec_resolve_clear(codec);
    if (codec->writer != NULL)
        avro_writer_free(codec->writer);
    if (codec->reader != NULL)
        avro_reader_free(codec->reader);
    free(codec->scratch);
    free(codec);
}

uint64_t codec_fingerprint(const struct codec *codec, enum mw_record_type type)
{
    if ((int)type < 0 || type >= MW_REC_COUNT)
        return 0;
    return codec->types[type].fingerprint;
}
