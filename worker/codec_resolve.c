/*
 * Writer schemas from a Schema Registry: a Confluent-framed value names
 * the schema it was written with by id; this file fetches that schema
 * once (through the fetch function given, it does no I/O itself), checks
 * that it resolves against ours by the Avro rules, and reads values
 * through the resolution, filling fields the writer lacks from our
 * schema's defaults.  It does not frame or walk bytes (codec.c and
 * codec_walk.c do).
 *
 * Invariant: an id never changes meaning, so an entry is parsed and
 * resolved once and leaves the cache only to make room; and avro-c is
 * asked to resolve only what check_resolves() has passed, since avro-c
 * 1.11 crashes on some mismatches.
 */
#include "codec_internal.h"
#include "schema_check.h"

#include <assert.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * How one writer record reads as one of ours.  avro-c's resolved writer
 * cannot fill a reader field from its default, so the reader side is a
 * projection: our record cut down to the fields the writer has (map[i] is
 * the projection's index of our field i, -1 when the writer lacks it and
 * the default answers).  codec_value_take() reads the projection through
 * map.
 */
struct resolution {
    enum mw_record_type type;
    bool is_resolved;
    char reason[200]; /* why not, for dlq.error */
    avro_schema_t projection;
    avro_value_iface_t *projection_iface;
    avro_value_iface_t *resolver_iface;
    avro_value_t projection_value;
    avro_value_t resolver_value;
    bool has_values;
    int map[RECORD_MAX_FIELDS];
};

/*
 * A writer schema named by a registry id, parsed and resolved once: an id
 * never changes meaning, so an entry only leaves the cache to make room.
 * A record has one resolution; a union one per branch, so that a message
 * is dispatched by the full name of the branch it was written with.
 */
struct writer_entry {
    uint32_t id;
    bool is_used;
    avro_schema_t schema; /* NULL: unusable, reason says why */
    char reason[200];
    bool is_union;
    size_t count; /* resolutions */
    struct resolution *res;
};

static void resolution_clear(struct resolution *r)
{
    if (r->has_values) {
        avro_value_decref(&r->resolver_value);
        avro_value_decref(&r->projection_value);
    }
    if (r->resolver_iface != NULL)
        avro_value_iface_decref(r->resolver_iface);
    if (r->projection_iface != NULL)
        avro_value_iface_decref(r->projection_iface);
    if (r->projection != NULL)
        avro_schema_decref(r->projection);
    memset(r, 0, sizeof(*r));
}

static void writer_entry_clear(struct writer_entry *e)
{
    for (size_t i = 0; i < e->count; i++)
        resolution_clear(&e->res[i]);
    free(e->res);
    if (e->schema != NULL)
        avro_schema_decref(e->schema);
    memset(e, 0, sizeof(*e));
}

/* The type whose record has writer's full name, or MW_REC_COUNT. */
static enum mw_record_type type_of_record(avro_schema_t writer, char *full,
                                          size_t size)
{
    const char *space = avro_schema_namespace(writer);

    if (space != NULL && space[0] != '\0')
        snprintf(full, size, "%s.%s", space, avro_schema_name(writer));
    else
        snprintf(full, size, "%s", avro_schema_name(writer));
    for (int i = 0; i < MW_REC_COUNT; i++) {
        const char *name = mw_record_names[i];
        size_t n = strlen(CODEC_NAMESPACE);

        if (strncmp(full, CODEC_NAMESPACE, n) == 0 && full[n] == '.' &&
            strcmp(full + n + 1, name) == 0)
            return (enum mw_record_type)i;
    }
    return MW_REC_COUNT;
}

static avro_schema_t unlink(avro_schema_t schema)
{
    while (schema != NULL && avro_typeof(schema) == AVRO_LINK)
        schema = avro_schema_link_target(schema);
    return schema;
}

static bool same_name(avro_schema_t a, avro_schema_t b)
{
    const char *sa = avro_schema_namespace(a), *sb = avro_schema_namespace(b);

    return strcmp(avro_schema_name(a), avro_schema_name(b)) == 0 &&
           strcmp(sa ? sa : "", sb ? sb : "") == 0;
}

/* True when a value written as writer's primitive reads as reader's. */
static bool is_promotion(avro_type_t writer, avro_type_t reader)
{
    switch (writer) {
    case AVRO_INT32:
        return reader == AVRO_INT64 || reader == AVRO_FLOAT ||
               reader == AVRO_DOUBLE;
    case AVRO_INT64:
        return reader == AVRO_FLOAT || reader == AVRO_DOUBLE;
    case AVRO_FLOAT:
        return reader == AVRO_DOUBLE;
    case AVRO_STRING:
        return reader == AVRO_BYTES;
    case AVRO_BYTES:
        return reader == AVRO_STRING;
    default:
        return false;
    }
}

/*
 * Checks that values of writer read as reader by the Avro resolution
 * rules, before avro-c is asked: avro-c 1.11 crashes on some mismatches
 * (a string written where an enum is read) and cannot fill defaults below
 * the top level, so nested records must carry every reader field.  field
 * is the innermost field's name, for the message.  Returns 0, or -1 with
 * reason filled.
 */
static int check_resolves(avro_schema_t writer, avro_schema_t reader,
                          const char *field, int depth, char *reason,
                          size_t size)
{
    avro_type_t wt, rt;

    writer = unlink(writer);
    reader = unlink(reader);
    wt = avro_typeof(writer);
    rt = avro_typeof(reader);
    if (depth > CODEC_MAX_DEPTH) {
        snprintf(reason, size, "field \"%s\" is nested too deeply", field);
        return -1;
    }
    if (wt == AVRO_UNION) {
        for (size_t i = 0; i < avro_schema_union_size(writer); i++) {
            if (check_resolves(avro_schema_union_branch(writer, (int)i), reader,
                               field, depth + 1, reason, size) != 0)
                return -1;
        }
        return 0;
    }
    if (rt == AVRO_UNION) {
        for (size_t i = 0; i < avro_schema_union_size(reader); i++) {
            if (check_resolves(writer, avro_schema_union_branch(reader, (int)i),
                               field, depth + 1, reason, size) == 0)
                return 0;
        }
        snprintf(reason, size,
                 "field \"%s\": no branch of the reader's union reads the "
                 "writer's %s",
                 field, avro_schema_type_name(writer));
        return -1;
    }
    if (wt != rt) {
        if (is_promotion(wt, rt))
            return 0;
        snprintf(reason, size,
                 "field \"%s\": the writer's %s cannot be read as a %s", field,
                 avro_schema_type_name(writer), avro_schema_type_name(reader));
        return -1;
    }
    switch (rt) {
    case AVRO_RECORD:
        if (!same_name(writer, reader))
            break;
        for (size_t i = 0; i < avro_schema_record_size(reader); i++) {
            const char *name = avro_schema_record_field_name(reader, (int)i);
            int at = avro_schema_record_field_get_index(writer, name);

            if (at < 0) {
                snprintf(reason, size,
                         "field \"%s.%s\" is missing from the writer's schema",
                         field, name);
                return -1;
            }
            if (check_resolves(
                    avro_schema_record_field_get_by_index(writer, at),
                    avro_schema_record_field_get_by_index(reader, (int)i), name,
                    depth + 1, reason, size) != 0)
                return -1;
        }
        return 0;
    case AVRO_ENUM:
        if (!same_name(writer, reader))
            break;
        for (int i = 0; i < avro_schema_enum_number_of_symbols(writer); i++) {
            const char *symbol = avro_schema_enum_get(writer, i);

            if (avro_schema_enum_get_by_name(reader, symbol) < 0) {
                snprintf(reason, size,
                         "field \"%s\": the reader's enum has no symbol %s",
                         field, symbol);
                return -1;
            }
        }
        return 0;
    case AVRO_FIXED:
        if (!same_name(writer, reader) ||
            avro_schema_fixed_size(writer) != avro_schema_fixed_size(reader))
            break;
        return 0;
    case AVRO_ARRAY:
        return check_resolves(avro_schema_array_items(writer),
                              avro_schema_array_items(reader), field, depth + 1,
                              reason, size);
    case AVRO_MAP:
        return check_resolves(avro_schema_map_values(writer),
                              avro_schema_map_values(reader), field, depth + 1,
                              reason, size);
    default:
        return 0;
    }
    snprintf(reason, size,
             "field \"%s\": the writer's %s %s is not the reader's %s", field,
             avro_schema_type_name(writer), avro_schema_name(writer),
             avro_schema_name(reader));
    return -1;
}

/*
 * Resolves one writer record against ours.  A writer that does not
 * resolve is no error here (r->reason says why, for the messages written
 * with it); returns -1 with err only when memory runs out.
 */
static int resolve_record(struct codec *codec, avro_schema_t writer,
                          struct resolution *r, struct mw_error *err)
{
    char full[256];
    enum mw_record_type type = type_of_record(writer, full, sizeof(full));
    struct codec_type *t;
    size_t count;
    int n = 0;

    if (type == MW_REC_COUNT) {
        snprintf(r->reason, sizeof(r->reason),
                 "the writer's record %.150s is not one this worker reads",
                 full);
        return 0;
    }
    t = &codec->types[type];
    r->type = type;
    count = record_table(type)->count;
    r->projection = avro_schema_record(mw_record_names[type], CODEC_NAMESPACE);
    if (r->projection == NULL)
        goto oom;
    for (size_t i = 0; i < count; i++) {
        const char *name = record_table(type)->fields[i].name;

        if (avro_schema_record_field_get_index(writer, name) < 0) {
            if (!t->has_default[i]) {
                snprintf(r->reason, sizeof(r->reason),
                         "field \"%s\" of %s is missing from the writer's "
                         "schema and has no default",
                         name, mw_record_names[type]);
                return 0;
            }
            r->map[i] = -1;
            continue;
        }
        if (check_resolves(
                avro_schema_record_field_get_by_index(
                    writer, avro_schema_record_field_get_index(writer, name)),
                avro_schema_record_field_get_by_index(t->schema, (int)i), name,
                0, r->reason, sizeof(r->reason)) != 0)
            return 0;
        if (avro_schema_record_field_append(
                r->projection, name,
                avro_schema_record_field_get_by_index(t->schema, (int)i)) != 0)
            goto oom;
        r->map[i] = n++;
    }
    r->resolver_iface = avro_resolved_writer_new(writer, r->projection);
    if (r->resolver_iface == NULL) {
        /* avro-c names the field: "Field licenses isn't compatible: ..." */
        snprintf(r->reason, sizeof(r->reason), "%s: %s", mw_record_names[type],
                 avro_strerror());
        return 0;
    }
    r->projection_iface = avro_generic_class_from_schema(r->projection);
    if (r->projection_iface == NULL ||
        avro_generic_value_new(r->projection_iface, &r->projection_value) != 0)
        goto oom;
    if (avro_resolved_writer_new_value(r->resolver_iface, &r->resolver_value) !=
        0) {
        avro_value_decref(&r->projection_value);
        goto oom;
    }
    r->has_values = true;
    avro_resolved_writer_set_dest(&r->resolver_value, &r->projection_value);
    r->is_resolved = true;
    return 0;
oom:
    mw_error_set(err, MW_ERR_SYSTEM, true,
                 "out of memory resolving a writer's schema for %s",
                 mw_record_names[type]);
    return -1;
}

/* Parses and resolves the writer schema json into e.  0, or -1 (memory). */
static int load_writer(struct codec *codec, struct writer_entry *e, uint32_t id,
                       const char *json, struct mw_error *err)
{
    avro_schema_t schema;
    struct mw_error check;

    e->id = id;
    e->is_used = true;
    /* avro-c leaks a schema defining a name twice: refuse it first. */
    mw_error_clear(&check);
    if (schema_check_names(json, &check) != 0) {
        if (check.retriable) {
            *err = check;
            return -1;
        }
        snprintf(e->reason, sizeof(e->reason), "%.150s", check.msg);
        return 0;
    }
    if (avro_schema_from_json_length(json, strlen(json), &schema) != 0) {
        snprintf(e->reason, sizeof(e->reason),
                 "the registry's schema does not parse: %s", avro_strerror());
        return 0;
    }
    e->schema = schema;
    if (avro_typeof(schema) == AVRO_RECORD) {
        e->count = 1;
    } else if (avro_typeof(schema) == AVRO_UNION) {
        e->is_union = true;
        e->count = avro_schema_union_size(schema);
    } else {
        snprintf(e->reason, sizeof(e->reason),
                 "the writer's schema is a %s, not a record or a union of "
                 "records",
                 avro_schema_type_name(schema));
        return 0;
    }
    e->res = calloc(e->count > 0 ? e->count : 1, sizeof(*e->res));
    if (e->res == NULL) {
        e->count = 0;
        mw_error_no_memory(err);
        return -1;
    }
    for (size_t i = 0; i < e->count; i++) {
        avro_schema_t record =
            e->is_union ? avro_schema_union_branch(schema, (int)i) : schema;

        if (avro_typeof(record) == AVRO_LINK)
            record = avro_schema_link_target(record);
        if (avro_typeof(record) != AVRO_RECORD) {
            snprintf(e->res[i].reason, sizeof(e->res[i].reason),
                     "branch %zu of the writer's union is a %s, not a record",
                     i, avro_schema_type_name(record));
            continue;
        }
        if (resolve_record(codec, record, &e->res[i], err) != 0)
            return -1;
    }
    return 0;
}

/*
 * The cached entry of id.  Known limit: a miss of the last-hit slot scans
 * the whole cache, O(MESH_WORKER_SCHEMA_REGISTRY_CACHE_SIZE); a topic is
 * written with a handful of ids, so the last hit almost always answers.
 */
static struct writer_entry *find_writer(struct codec *codec, uint32_t id)
{
    struct writer_entry *e = &codec->writers[codec->writers_last];

    if (e->is_used && e->id == id)
        return e;
    for (size_t i = 0; i < codec->registry.cache_size; i++) {
        e = &codec->writers[i];
        if (e->is_used && e->id == id) {
            codec->writers_last = i;
            return e;
        }
    }
    return NULL;
}

/*
 * Fetches writer schema id from the registry into the next cache slot,
 * evicting the oldest entry when the cache is full.
 */
static enum codec_status fetch_writer(struct codec *codec, uint32_t id,
                                      struct writer_entry **out,
                                      struct mw_error *err)
{
    struct writer_entry *e;
    struct mw_error ferr;
    char *json = NULL;
    int rc;

    mw_error_clear(&ferr);
    rc = codec->registry.fetch(codec->registry.ctx, id, &json, &ferr);
    if (rc == CODEC_FETCH_NOT_FOUND) {
        mw_error_set(err, MW_ERR_DECODE, false,
                     "unknown schema id %" PRIu32 ": the Schema Registry has "
                     "no schema with this id",
                     id);
        mw_error_detail(err, "%s", ferr.msg);
        return CODEC_UNKNOWN_SCHEMA;
    }
    if (rc != 0 || json == NULL) {
        /* Not the message's fault, whatever the registry said: hold it. */
        mw_error_set(err, MW_ERR_REGISTRY, true,
                     "could not fetch schema id %" PRIu32 " from the Schema "
                     "Registry: %s",
                     id, ferr.msg);
        mw_error_detail(err, "%s", ferr.detail);
        mw_error_hint(err, "%s", ferr.hint);
        free(json);
        return CODEC_UNKNOWN_SCHEMA;
    }
    e = &codec->writers[codec->writers_next];
    writer_entry_clear(e);
    rc = load_writer(codec, e, id, json, err);
    free(json);
    if (rc != 0) {
        writer_entry_clear(e);
        return CODEC_UNKNOWN_SCHEMA;
    }
    codec->writers_last = codec->writers_next;
    codec->writers_next =
        (codec->writers_next + 1) % codec->registry.cache_size;
    *out = e;
    return CODEC_OK;
}

/*
 * The entry of writer schema id: cached, or fetched and resolved now.
 * Returns CODEC_OK and *out, or what codec_decode() returns for it.
 */
static enum codec_status get_writer(struct codec *codec, uint32_t id,
                                    struct writer_entry **out,
                                    struct mw_error *err)
{
    enum codec_status status;

    *out = find_writer(codec, id);
    if (*out == NULL) {
        status = fetch_writer(codec, id, out, err);
        if (status != CODEC_OK)
            return status;
    }
    if ((*out)->schema == NULL || (*out)->res == NULL) {
        mw_error_set(err, MW_ERR_DECODE, false,
                     "schema id %" PRIu32 " cannot be read: %s", id,
                     (*out)->reason);
        return CODEC_SCHEMA_INCOMPATIBLE;
    }
    return CODEC_OK;
}

/*
 * The value is walked with the writer's schema (the invariant of
 * codec_walk.c), then read through the resolution of the record it was
 * written with.
 */
enum codec_status codec_resolve_decode(struct codec *codec, uint32_t id,
                                       const unsigned char *body, size_t len,
                                       struct mw_arena *arena,
                                       struct mw_record *rec,
                                       struct mw_error *err)
{
    struct writer_entry *e;
    struct resolution *r;
    enum codec_status status;
    size_t branch = 0, skip = 0;

    status = get_writer(codec, id, &e, err);
    if (status != CODEC_OK)
        return status;
    if (e->is_union &&
        codec_walk_branch(body, len, e->count, &branch, &skip, err) != 0)
        return CODEC_CORRUPT_AVRO;
    r = &e->res[branch];
    /* A writer that does not resolve is the verdict, whatever the bytes. */
    if (!r->is_resolved) {
        mw_error_set(err, MW_ERR_DECODE, false,
                     "schema id %" PRIu32 " does not resolve to this "
                     "worker's schema: %s",
                     id, r->reason);
        return CODEC_SCHEMA_INCOMPATIBLE;
    }
    if (codec_walk_value(e->schema, body, len, err) != 0)
        return CODEC_CORRUPT_AVRO;
    status = codec_read_value(codec, body + skip, len - skip,
                              &r->resolver_value, r->type, err);
    if (status != CODEC_OK)
        return status;
    return codec_value_take(r->type, &r->projection_value, r->map,
                            &codec->types[r->type].defaults, arena, rec, err);
}

void codec_resolve_clear(struct codec *codec)
{
    if (codec->writers == NULL)
        return;
    for (size_t i = 0; i < codec->registry.cache_size; i++)
        writer_entry_clear(&codec->writers[i]);
    free(codec->writers);
    codec->writers = NULL;
}

/* ---- Field defaults --------------------------------------------------- */

/*
 * Sets v to the JSON default def of its schema.  0, or -1 if it does not
 * fit.
 */
static int set_default(avro_value_t *v, json_t *def, int depth)
{
    avro_schema_t schema = avro_value_get_schema(v);
    avro_value_t child;
    const char *key;
    json_t *item;
    size_t i;
    int index;

    if (depth > CODEC_MAX_DEPTH)
        return -1;
    switch (avro_value_get_type(v)) {
    case AVRO_NULL:
        return json_is_null(def) ? avro_value_set_null(v) : -1;
    case AVRO_BOOLEAN:
        return json_is_boolean(def)
                   ? avro_value_set_boolean(v, json_is_true(def) ? 1 : 0)
                   : -1;
    case AVRO_INT32:
        return json_is_integer(def)
                   ? avro_value_set_int(v, (int32_t)json_integer_value(def))
                   : -1;
    case AVRO_INT64:
        return json_is_integer(def)
                   ? avro_value_set_long(v, (int64_t)json_integer_value(def))
                   : -1;
    case AVRO_FLOAT:
        return json_is_number(def)
                   ? avro_value_set_float(v, (float)json_number_value(def))
                   : -1;
    case AVRO_DOUBLE:
        return json_is_number(def)
                   ? avro_value_set_double(v, json_number_value(def))
                   : -1;
    case AVRO_STRING:
        /* The size avro-c takes counts the terminating NUL. */
        return json_is_string(def)
                   ? avro_value_set_string_len(v, json_string_value(def),
                                               json_string_length(def) + 1)
                   : -1;
    case AVRO_ENUM:
        if (!json_is_string(def))
            return -1;
        index = avro_schema_enum_get_by_name(schema, json_string_value(def));
        return index < 0 ? -1 : avro_value_set_enum(v, index);
    case AVRO_ARRAY:
        if (!json_is_array(def) || avro_value_reset(v) != 0)
            return -1;
        json_array_foreach(def, i, item) {
            if (avro_value_append(v, &child, NULL) != 0 ||
                set_default(&child, item, depth + 1) != 0)
                return -1;
        }
        return 0;
    case AVRO_MAP:
        if (!json_is_object(def) || avro_value_reset(v) != 0)
            return -1;
        json_object_foreach(def, key, item) {
            if (avro_value_add(v, key, &child, NULL, NULL) != 0 ||
                set_default(&child, item, depth + 1) != 0)
                return -1;
        }
        return 0;
    case AVRO_UNION:
        /* A union's default is of its first branch. */
        if (avro_value_set_branch(v, 0, &child) != 0)
            return -1;
        return set_default(&child, def, depth + 1);
    case AVRO_RECORD:
        if (!json_is_object(def))
            return -1;
        for (i = 0; i < avro_schema_record_size(schema); i++) {
            item = json_object_get(
                def, avro_schema_record_field_name(schema, (int)i));
            if (item == NULL ||
                avro_value_get_by_index(v, i, &child, NULL) != 0 ||
                set_default(&child, item, depth + 1) != 0)
                return -1;
        }
        return 0;
    default:
        return -1;
    }
}

/*
 * Fills t->defaults from the "default" of each field of our schema's JSON
 * text, for the fields a writer may lack.
 */
static int load_defaults(struct codec_type *t, struct mw_error *err)
{
    const char *name = mw_record_names[t->type];
    json_t *root = json_loads(codec_schema_json(name), 0, NULL);
    json_t *fields = json_object_get(root, "fields");
    int rc = -1;

    if (avro_generic_value_new(t->iface, &t->defaults) != 0) {
        mw_error_set(err, MW_ERR_SYSTEM, false,
                     "could not prepare the defaults of %s", name);
        goto done;
    }
    t->has_defaults = true;
    for (size_t i = 0; i < record_table(t->type)->count; i++) {
        json_t *def = json_object_get(json_array_get(fields, i), "default");
        avro_value_t field;

        if (def == NULL)
            continue;
        if (avro_value_get_by_index(&t->defaults, i, &field, NULL) != 0 ||
            set_default(&field, def, 0) != 0) {
            mw_error_set(err, MW_ERR_CONFIG, false,
                         "the default of field \"%s\" of %s does not fit its "
                         "type",
                         record_table(t->type)->fields[i].name, name);
            goto done;
        }
        t->has_default[i] = true;
    }
    rc = 0;
done:
    json_decref(root);
    return rc;
}

int codec_use_registry(struct codec *codec,
                       const struct codec_registry *registry,
                       struct mw_error *err)
{
    assert(!codec->has_registry);
    if (registry->fetch == NULL || registry->cache_size == 0) {
        mw_error_set(err, MW_ERR_CONFIG, false,
                     "a Schema Registry needs a fetch function and a cache "
                     "of at least one schema");
        return -1;
    }
    for (int i = 0; i < MW_REC_COUNT; i++) {
        if (load_defaults(&codec->types[i], err) != 0)
            return -1;
    }
    codec->writers = calloc(registry->cache_size, sizeof(*codec->writers));
    if (codec->writers == NULL) {
        mw_error_no_memory(err);
        return -1;
    }
    codec->registry = *registry;
    codec->writers_next = 0;
    codec->writers_last = 0;
    codec->has_registry = true;
    return 0;
}
