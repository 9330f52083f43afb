/*
 * Avro codec: records of customer.requests and customer.events to and from
 * framed Avro binary, against the schemas compiled in from schemas/.  Pure:
 * no I/O, no logging, no clock.  It does not judge content (lengths in code
 * points, syntax of domains and addresses are the rules module's), only
 * whether bytes are a well-formed record of a known schema.
 *
 * Invariant: avro-c never sees bytes this file has not walked first.  avro-c
 * allocates a string's length before reading it and trusts array block
 * counts, so every value is first checked by walk_value(), a bounded walk
 * driven by the writer's schema that must consume the value exactly; only
 * then does avro_value_read() run, and it can no longer run out of input or
 * be asked for more memory than the message holds.
 *
 * Generic values are made once per record type in codec_new() and reused
 * across messages, as is the writer's scratch buffer.  Known limit: avro-c
 * still mallocs each string it reads (and each string item it writes after
 * an array is cleared); the copies handed to callers come from the arena.
 */
#include "codec.h"
#include "embedded_files.h"
#include "schema_check.h"

#include <assert.h>
#include <avro.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CODEC_NAMESPACE "mesh.provisioning"
#define SINGLE_OBJECT_HEADER 10 /* 0xC3 0x01 + 8-byte fingerprint */
#define CONFLUENT_HEADER 5      /* 0x00 + big-endian int32 schema id */
#define CRC64_AVRO_EMPTY UINT64_C(0xc15d213aa4d7a795)
#define WALK_MAX_DEPTH 32
#define SCRATCH_MIN 4096

/*
 * Field positions of each record, in schema order (SPEC §3).  codec_new()
 * checks them against the compiled-in schemas, so the encoders and
 * decoders below can address fields by index.
 */
enum {
    REQ_REQUEST_ID,
    REQ_REQUESTED_AT,
    REQ_REQUESTED_BY,
    REQ_MSP_ID,
    REQ_MSP_DOMAIN,
    REQ_MAIL_PLATFORM,
    REQ_SERVICE,
    REQ_COMPANY_NAME,
    REQ_PRIMARY_DOMAIN,
    REQ_ADDITIONAL_DOMAINS,
    REQ_DELIVERY_DESTINATION,
    REQ_LICENSES,
    REQ_DEFAULT_ADMIN_EMAIL,
    REQ_POLICY_TEMPLATE_ID,
    REQ_APPLY_GLOBAL_RULES,
    REQ_MSP_MANAGEMENT,
    REQ_TWO_FACTOR_REQUIRED,
    REQ_MONITOR_MODE,
    REQ_ACCOUNT_TYPE,
    REQ_COUNT
};

static const char *const request_fields[REQ_COUNT] = {
    "request_id",
    "requested_at",
    "requested_by",
    "msp_id",
    "msp_domain",
    "mail_platform",
    "service",
    "company_name",
    "primary_domain",
    "additional_domains",
    "delivery_destination",
    "licenses",
    "default_admin_email",
    "policy_template_id",
    "apply_global_rules",
    "msp_management",
    "two_factor_required",
    "monitor_mode",
    "account_type",
};

enum {
    TERM_REQUEST_ID,
    TERM_REQUESTED_AT,
    TERM_REQUESTED_BY,
    TERM_MSP_ID,
    TERM_CUSTOMER_ID,
    TERM_EFFECTIVE_AT,
    TERM_COUNT
};

static const char *const termination_fields[TERM_COUNT] = {
    "request_id", "requested_at", "requested_by",
    "msp_id",     "customer_id",  "effective_at",
};

enum {
    CREATED_EVENT_ID,
    CREATED_CUSTOMER_ID,
    CREATED_REQUEST_ID,
    CREATED_MSP_ID,
    CREATED_OCCURRED_AT,
    CREATED_REQUESTED_BY,
    CREATED_COMPANY_NAME,
    CREATED_PRIMARY_DOMAIN,
    CREATED_ADDITIONAL_DOMAINS,
    CREATED_MAIL_PLATFORM,
    CREATED_SERVICE,
    CREATED_ACCOUNT_TYPE,
    CREATED_LICENSES,
    CREATED_BILLABLE,
    CREATED_BILLING_STARTS_AT,
    CREATED_TRIAL_ENDS_AT,
    CREATED_DEFAULT_ADMIN_EMAIL,
    CREATED_DELIVERY_DESTINATION,
    CREATED_POLICY_TEMPLATE_ID,
    CREATED_APPLY_GLOBAL_RULES,
    CREATED_MSP_MANAGEMENT,
    CREATED_TWO_FACTOR_REQUIRED,
    CREATED_MONITOR_MODE,
    CREATED_INSTALLATION,
    CREATED_COUNT
};

static const char *const created_fields[CREATED_COUNT] = {
    "event_id",
    "customer_id",
    "request_id",
    "msp_id",
    "occurred_at",
    "requested_by",
    "company_name",
    "primary_domain",
    "additional_domains",
    "mail_platform",
    "service",
    "account_type",
    "licenses",
    "billable",
    "billing_starts_at",
    "trial_ends_at",
    "default_admin_email",
    "delivery_destination",
    "policy_template_id",
    "apply_global_rules",
    "msp_management",
    "two_factor_required",
    "monitor_mode",
    "installation",
};

enum {
    REJECTED_EVENT_ID,
    REJECTED_REQUEST_ID,
    REJECTED_MSP_ID,
    REJECTED_OCCURRED_AT,
    REJECTED_REQUESTED_BY,
    REJECTED_ERRORS,
    REJECTED_COUNT
};

static const char *const rejected_fields[REJECTED_COUNT] = {
    "event_id", "request_id", "msp_id", "occurred_at", "requested_by", "errors",
};

enum { REJECTION_FIELD, REJECTION_CODE, REJECTION_MESSAGE, REJECTION_COUNT };

static const char *const rejection_error_fields[REJECTION_COUNT] = {
    "field",
    "code",
    "message",
};

enum {
    ENDING_EVENT_ID,
    ENDING_CUSTOMER_ID,
    ENDING_MSP_ID,
    ENDING_OCCURRED_AT,
    ENDING_TRIAL_ENDS_AT,
    ENDING_LICENSES,
    ENDING_REQUESTED_BY,
    ENDING_COUNT
};

static const char *const trial_ending_fields[ENDING_COUNT] = {
    "event_id",      "customer_id", "msp_id",       "occurred_at",
    "trial_ends_at", "licenses",    "requested_by",
};

enum {
    CONVERTED_EVENT_ID,
    CONVERTED_CUSTOMER_ID,
    CONVERTED_MSP_ID,
    CONVERTED_OCCURRED_AT,
    CONVERTED_TRIAL_STARTED_AT,
    CONVERTED_TRIAL_ENDED_AT,
    CONVERTED_LICENSES,
    CONVERTED_BILLING_STARTS_AT,
    CONVERTED_COUNT
};

static const char *const trial_converted_fields[CONVERTED_COUNT] = {
    "event_id",         "customer_id",    "msp_id",   "occurred_at",
    "trial_started_at", "trial_ended_at", "licenses", "billing_starts_at",
};

enum {
    TERMINATED_EVENT_ID,
    TERMINATED_CUSTOMER_ID,
    TERMINATED_MSP_ID,
    TERMINATED_OCCURRED_AT,
    TERMINATED_TERMINATED_AT,
    TERMINATED_WAS_TRIAL,
    TERMINATED_REQUEST_ID,
    TERMINATED_COUNT
};

static const char *const terminated_fields[TERMINATED_COUNT] = {
    "event_id",      "customer_id", "msp_id",     "occurred_at",
    "terminated_at", "was_trial",   "request_id",
};

/* The field table of each record type, indexed by mw_record_type. */
static const struct {
    const char *const *names;
    size_t count;
} record_fields[MW_REC_COUNT] = {
    {request_fields, REQ_COUNT},
    {termination_fields, TERM_COUNT},
    {created_fields, CREATED_COUNT},
    {rejected_fields, REJECTED_COUNT},
    {trial_ending_fields, ENDING_COUNT},
    {trial_converted_fields, CONVERTED_COUNT},
    {terminated_fields, TERMINATED_COUNT},
};

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
    bool has_default[CREATED_COUNT];
};

/*
 * How one writer record reads as one of ours.  avro-c's resolved writer
 * cannot fill a reader field from its default, so the reader side is a
 * projection: our record cut down to the fields the writer has (map[i] is
 * the projection's index of our field i, -1 when the writer lacks it and
 * the default answers).  take_record() reads the projection through map.
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
    int map[CREATED_COUNT]; /* CustomerCreated has the most fields */
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

/* ---- CRC-64-AVRO and Parsing Canonical Form --------------------------- */

/*
 * The Rabin fingerprint of the Avro specification, computed bit by bit:
 * this runs a few times at start-up and in tests only, so a table is not
 * worth its global state.
 */
uint64_t codec_crc64_avro(const void *buf, size_t len)
{
    const unsigned char *p = buf;
    uint64_t fp = CRC64_AVRO_EMPTY;

    for (size_t i = 0; i < len; i++) {
        fp ^= p[i];
        for (int bit = 0; bit < 8; bit++)
            fp = (fp >> 1) ^ (CRC64_AVRO_EMPTY & (0 - (fp & 1)));
    }
    return fp;
}

static bool is_primitive(const char *name)
{
    static const char *const primitives[] = {
        "null", "boolean", "int", "long", "float", "double", "bytes", "string",
    };

    for (size_t i = 0; i < sizeof(primitives) / sizeof(primitives[0]); i++) {
        if (strcmp(name, primitives[i]) == 0)
            return true;
    }
    return false;
}

/* State of one canonicalisation: the full names defined so far. */
struct canon {
    json_t *defined;
    struct mw_error *err;
};

static json_t *canon_fail(struct canon *c, const char *what, const char *seen)
{
    mw_error_set(c->err, MW_ERR_INPUT, false, "invalid Avro schema: %s", what);
    if (seen != NULL)
        mw_error_detail(c->err, "Value seen: \"%s\".", seen);
    return NULL;
}

static json_t *canon_node(struct canon *c, json_t *node, const char *space,
                          int depth);

/*
 * Writes the full name of a name given in a scope: a dotted name is
 * already full; otherwise the namespace attribute, else the enclosing one,
 * applies.  Sets *new_space to the namespace that the type's own children
 * inherit.  Returns 0, or -1 when the result does not fit.
 */
static int full_name(const char *name, const json_t *ns_attr, const char *space,
                     char *out, size_t size, char *new_space, size_t space_size)
{
    const char *dot = strrchr(name, '.');
    const char *ns = space;
    int n;

    if (dot != NULL) {
        n = snprintf(out, size, "%s", name);
        if (n < 0 || (size_t)n >= size)
            return -1;
        n = snprintf(new_space, space_size, "%.*s", (int)(dot - name), name);
        return n < 0 || (size_t)n >= space_size ? -1 : 0;
    }
    if (json_is_string(ns_attr))
        ns = json_string_value(ns_attr);
    if (ns[0] != '\0')
        n = snprintf(out, size, "%s.%s", ns, name);
    else
        n = snprintf(out, size, "%s", name);
    if (n < 0 || (size_t)n >= size)
        return -1;
    n = snprintf(new_space, space_size, "%s", ns);
    return n < 0 || (size_t)n >= space_size ? -1 : 0;
}

/* A reference by name: its full name, which must be defined already. */
static json_t *canon_reference(struct canon *c, const char *name,
                               const char *space)
{
    char full[512];
    int n;

    if (strchr(name, '.') == NULL && space[0] != '\0') {
        n = snprintf(full, sizeof(full), "%s.%s", space, name);
        if (n > 0 && (size_t)n < sizeof(full) &&
            json_object_get(c->defined, full) != NULL)
            return json_string(full);
    }
    if (json_object_get(c->defined, name) != NULL)
        return json_string(name);
    return canon_fail(c, "reference to an undefined type", name);
}

/* Starts a named type's output: {"name": full, "type": type}. */
static json_t *canon_named(struct canon *c, json_t *node, const char *type,
                           char *space, size_t space_size)
{
    json_t *name = json_object_get(node, "name");
    json_t *out;
    char full[512];

    if (!json_is_string(name) || json_string_length(name) == 0)
        return canon_fail(c, "a named type has no name", type);
    if (full_name(json_string_value(name), json_object_get(node, "namespace"),
                  space, full, sizeof(full), space, space_size) != 0)
        return canon_fail(c, "name too long", json_string_value(name));
    if (json_object_get(c->defined, full) != NULL)
        return canon_fail(c, "a type is defined twice", full);
    if (json_object_set_new(c->defined, full, json_true()) != 0)
        return NULL;
    out = json_pack("{s:s, s:s}", "name", full, "type", type);
    if (out == NULL)
        mw_error_set(c->err, MW_ERR_SYSTEM, false, "out of memory");
    return out;
}

static json_t *canon_record(struct canon *c, json_t *node, const char *type,
                            const char *space, int depth)
{
    char inner[512];
    json_t *fields = json_object_get(node, "fields");
    json_t *out, *list;
    size_t i;

    snprintf(inner, sizeof(inner), "%s", space);
    out = canon_named(c, node, type, inner, sizeof(inner));
    if (out == NULL)
        return NULL;
    if (!json_is_array(fields)) {
        json_decref(out);
        return canon_fail(c, "a record has no fields array", NULL);
    }
    list = json_array();
    if (json_object_set_new(out, "fields", list) != 0) {
        json_decref(out);
        return NULL;
    }
    for (i = 0; i < json_array_size(fields); i++) {
        json_t *field = json_array_get(fields, i);

        json_t *name = json_object_get(field, "name");
        json_t *ftype = json_object_get(field, "type");
        json_t *canon_type;

        if (!json_is_string(name) || ftype == NULL) {
            json_decref(out);
            return canon_fail(c, "a field has no name or type", NULL);
        }
        canon_type = canon_node(c, ftype, inner, depth + 1);
        /* "o" hands canon_type over, also when json_pack fails. */
        if (canon_type == NULL ||
            json_array_append_new(list, json_pack("{s:O, s:o}", "name", name,
                                                  "type", canon_type)) != 0) {
            json_decref(out);
            return NULL;
        }
    }
    return out;
}

static json_t *canon_enum(struct canon *c, json_t *node, const char *space)
{
    char inner[512];
    json_t *symbols = json_object_get(node, "symbols");
    json_t *out, *copy;
    size_t i;

    if (!json_is_array(symbols))
        return canon_fail(c, "an enum has no symbols array", NULL);
    for (i = 0; i < json_array_size(symbols); i++) {
        json_t *symbol = json_array_get(symbols, i);

        if (!json_is_string(symbol))
            return canon_fail(c, "an enum symbol is not a string", NULL);
    }
    snprintf(inner, sizeof(inner), "%s", space);
    out = canon_named(c, node, "enum", inner, sizeof(inner));
    if (out == NULL)
        return NULL;
    copy = json_deep_copy(symbols);
    if (copy == NULL || json_object_set_new(out, "symbols", copy) != 0) {
        json_decref(out);
        return NULL;
    }
    return out;
}

static json_t *canon_fixed(struct canon *c, json_t *node, const char *space)
{
    char inner[512];
    json_t *size = json_object_get(node, "size");
    json_t *out;

    if (!json_is_integer(size) || json_integer_value(size) < 0)
        return canon_fail(c, "a fixed type has no valid size", NULL);
    snprintf(inner, sizeof(inner), "%s", space);
    out = canon_named(c, node, "fixed", inner, sizeof(inner));
    if (out == NULL)
        return NULL;
    if (json_object_set_new(out, "size",
                            json_integer(json_integer_value(size))) != 0) {
        json_decref(out);
        return NULL;
    }
    return out;
}

/* {"type": "array"|"map", key: canonical child}. */
static json_t *canon_container(struct canon *c, json_t *node, const char *type,
                               const char *key, const char *space, int depth)
{
    json_t *child = json_object_get(node, key);
    json_t *canon_child, *out;

    if (child == NULL)
        return canon_fail(c, "a container has no item type", type);
    canon_child = canon_node(c, child, space, depth + 1);
    if (canon_child == NULL)
        return NULL;
    out = json_pack("{s:s, s:o}", "type", type, key, canon_child);
    if (out == NULL)
        mw_error_set(c->err, MW_ERR_SYSTEM, false, "out of memory");
    return out;
}

static json_t *canon_object(struct canon *c, json_t *node, const char *space,
                            int depth)
{
    json_t *type = json_object_get(node, "type");
    const char *name;

    if (type == NULL)
        return canon_fail(c, "an object has no type", NULL);
    if (!json_is_string(type))
        return canon_node(c, type, space, depth + 1);
    name = json_string_value(type);
    /*
     * A logical type is its primitive: logicalType is not in the list that
     * STRIP keeps.  Java's reference does the same; python-avro 1.11 keeps
     * {"type":"long"} and so disagrees on every schema with logical types.
     */
    if (is_primitive(name))
        return json_string(name);
    if (strcmp(name, "record") == 0 || strcmp(name, "error") == 0)
        return canon_record(c, node, name, space, depth);
    if (strcmp(name, "enum") == 0)
        return canon_enum(c, node, space);
    if (strcmp(name, "fixed") == 0)
        return canon_fixed(c, node, space);
    if (strcmp(name, "array") == 0)
        return canon_container(c, node, "array", "items", space, depth);
    if (strcmp(name, "map") == 0)
        return canon_container(c, node, "map", "values", space, depth);
    return canon_reference(c, name, space);
}

static json_t *canon_node(struct canon *c, json_t *node, const char *space,
                          int depth)
{
    if (depth > WALK_MAX_DEPTH)
        return canon_fail(c, "nested too deeply", NULL);
    if (json_is_string(node)) {
        const char *name = json_string_value(node);

        if (is_primitive(name))
            return json_string(name);
        return canon_reference(c, name, space);
    }
    if (json_is_object(node))
        return canon_object(c, node, space, depth);
    if (json_is_array(node)) {
        json_t *out = json_array();

        if (out == NULL)
            return NULL;
        for (size_t i = 0; i < json_array_size(node); i++) {
            json_t *canon_branch =
                canon_node(c, json_array_get(node, i), space, depth + 1);

            if (canon_branch == NULL ||
                json_array_append_new(out, canon_branch) != 0) {
                json_decref(out);
                return NULL;
            }
        }
        return out;
    }
    return canon_fail(c, "a schema is neither a name, an object nor a union",
                      NULL);
}

char *codec_canonical_form(const char *schema_json, struct mw_error *err)
{
    struct canon c = {.defined = json_object(), .err = err};
    json_error_t jerr;
    json_t *root = NULL, *canonical = NULL;
    char *text = NULL;

    mw_error_set(err, MW_ERR_SYSTEM, false, "out of memory");
    if (c.defined == NULL)
        goto done;
    root = json_loads(schema_json, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES,
                      &jerr);
    if (root == NULL) {
        mw_error_set(err, MW_ERR_INPUT, false, "invalid Avro schema: %s",
                     jerr.text);
        mw_error_detail(err, "At line %d, column %d.", jerr.line, jerr.column);
        goto done;
    }
    canonical = canon_node(&c, root, "", 0);
    if (canonical == NULL)
        goto done;
    /* Compact, UTF-8 unescaped, keys in insertion order: STRINGS etc. */
    text = json_dumps(canonical, JSON_COMPACT | JSON_ENCODE_ANY);
    if (text != NULL)
        mw_error_clear(err);
done:
    json_decref(canonical);
    json_decref(root);
    json_decref(c.defined);
    return text;
}

/* ---- Validation walk -------------------------------------------------- */

/* A bounded reader over one Avro binary value. */
struct walk {
    const unsigned char *start;
    const unsigned char *p;
    const unsigned char *end;
    const char *field; /* innermost record field being read */
    size_t budget;     /* array and map items still allowed */
    struct mw_error *err;
};

static int walk_fail(struct walk *w, const char *fmt, ...) MW_PRINTF(2, 3);

static int walk_fail(struct walk *w, const char *fmt, ...)
{
    char reason[160];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    if (w->field != NULL)
        mw_error_set(w->err, MW_ERR_DECODE, false,
                     "corrupt Avro in field \"%s\": %s", w->field, reason);
    else
        mw_error_set(w->err, MW_ERR_DECODE, false, "corrupt Avro: %s", reason);
    mw_error_detail(w->err, "At byte %zu of the %zu-byte record.",
                    (size_t)(w->p - w->start), (size_t)(w->end - w->start));
    return -1;
}

static size_t walk_left(const struct walk *w)
{
    return (size_t)(w->end - w->p);
}

/*
 * Reads a zig-zag varint of at most max_bytes; for 10 bytes (a long) the
 * last may only carry bit 63.
 */
static int walk_varint(struct walk *w, int max_bytes, int64_t *out)
{
    uint64_t value = 0;
    int i;

    for (i = 0; i < max_bytes; i++) {
        unsigned char b;

        if (w->p == w->end)
            return walk_fail(w, "the data ends inside a number");
        b = *w->p++;
        if (i == 9 && b > 1)
            return walk_fail(w, "a long is longer than 64 bits");
        value |= (uint64_t)(b & 0x7f) << (7 * i);
        if ((b & 0x80) == 0)
            break;
    }
    if (i == max_bytes)
        return walk_fail(w, "a number is longer than %d bytes", max_bytes);
    /* Zig-zag without signed overflow. */
    *out = (value & 1) ? -(int64_t)(value >> 1) - 1 : (int64_t)(value >> 1);
    return 0;
}

static int walk_long(struct walk *w, int64_t *out)
{
    return walk_varint(w, 10, out);
}

static int walk_int(struct walk *w, int64_t *out)
{
    if (walk_varint(w, 5, out) != 0)
        return -1;
    if (*out < INT32_MIN || *out > INT32_MAX)
        return walk_fail(w, "int %" PRId64 " is out of range", *out);
    return 0;
}

static int walk_skip(struct walk *w, size_t len, const char *what)
{
    if (len > walk_left(w))
        return walk_fail(w, "%s needs %zu bytes but %zu are left", what, len,
                         walk_left(w));
    w->p += len;
    return 0;
}

/* A length-prefixed string or bytes value. */
static int walk_bytes(struct walk *w, const char *what)
{
    int64_t len;

    if (walk_long(w, &len) != 0)
        return -1;
    if (len < 0)
        return walk_fail(w, "%s has negative length %" PRId64, what, len);
    if ((uint64_t)len > walk_left(w))
        return walk_fail(w,
                         "%s length %" PRId64 " is more than the %zu "
                         "bytes left",
                         what, len, walk_left(w));
    w->p += len;
    return 0;
}

static int walk_value(struct walk *w, avro_schema_t schema, int depth);

/* The blocks of an array (items) or a map (values, keyed by strings). */
static int walk_blocks(struct walk *w, avro_schema_t child, bool is_map,
                       int depth)
{
    for (;;) {
        int64_t count, size = -1;
        const unsigned char *block;

        if (walk_long(w, &count) != 0)
            return -1;
        if (count == 0)
            return 0;
        if (count < 0) {
            if (count == INT64_MIN)
                return walk_fail(w, "block count is out of range");
            count = -count;
            if (walk_long(w, &size) != 0)
                return -1;
            if (size < 0 || (uint64_t)size > walk_left(w))
                return walk_fail(w,
                                 "block size %" PRId64 " does not fit "
                                 "the %zu bytes left",
                                 size, walk_left(w));
        }
        if ((uint64_t)count > walk_left(w) || (uint64_t)count > w->budget)
            return walk_fail(w,
                             "block count %" PRId64 " is more than the "
                             "%zu bytes left",
                             count, walk_left(w));
        w->budget -= (size_t)count;
        block = w->p;
        for (int64_t i = 0; i < count; i++) {
            if (is_map && walk_bytes(w, "a map key") != 0)
                return -1;
            if (walk_value(w, child, depth + 1) != 0)
                return -1;
        }
        if (size >= 0 && w->p - block != size)
            return walk_fail(w,
                             "block size %" PRId64 " does not match its "
                             "%zu bytes of items",
                             size, (size_t)(w->p - block));
    }
}

static int walk_record(struct walk *w, avro_schema_t schema, int depth)
{
    size_t count = avro_schema_record_size(schema);
    const char *outer = w->field;

    for (size_t i = 0; i < count; i++) {
        avro_schema_t field =
            avro_schema_record_field_get_by_index(schema, (int)i);

        if (field == NULL)
            return walk_fail(w, "the schema has no field %zu", i);
        w->field = avro_schema_record_field_name(schema, (int)i);
        if (walk_value(w, field, depth + 1) != 0)
            return -1;
    }
    w->field = outer;
    return 0;
}

static int walk_value(struct walk *w, avro_schema_t schema, int depth)
{
    int64_t n;

    if (depth > WALK_MAX_DEPTH)
        return walk_fail(w, "values are nested too deeply");
    switch (avro_typeof(schema)) {
    case AVRO_NULL:
        return 0;
    case AVRO_BOOLEAN:
        if (w->p == w->end)
            return walk_fail(w, "the data ends inside a boolean");
        if (*w->p > 1)
            return walk_fail(w, "boolean byte 0x%02x is neither 0 nor 1",
                             *w->p);
        w->p++;
        return 0;
    case AVRO_INT32:
        return walk_int(w, &n);
    case AVRO_INT64:
        return walk_long(w, &n);
    case AVRO_FLOAT:
        return walk_skip(w, 4, "a float");
    case AVRO_DOUBLE:
        return walk_skip(w, 8, "a double");
    case AVRO_STRING:
        return walk_bytes(w, "string");
    case AVRO_BYTES:
        return walk_bytes(w, "bytes");
    case AVRO_FIXED:
        return walk_skip(w, (size_t)avro_schema_fixed_size(schema),
                         "a fixed value");
    case AVRO_ENUM:
        if (walk_int(w, &n) != 0)
            return -1;
        if (n < 0 || n >= avro_schema_enum_number_of_symbols(schema))
            return walk_fail(w,
                             "enum index %" PRId64 " is not one of the %d "
                             "symbols",
                             n, avro_schema_enum_number_of_symbols(schema));
        return 0;
    case AVRO_UNION:
        if (walk_long(w, &n) != 0)
            return -1;
        if (n < 0 || (uint64_t)n >= avro_schema_union_size(schema))
            return walk_fail(w,
                             "union branch %" PRId64 " is not one of the "
                             "%zu branches",
                             n, avro_schema_union_size(schema));
        return walk_value(w, avro_schema_union_branch(schema, (int)n),
                          depth + 1);
    case AVRO_ARRAY:
        return walk_blocks(w, avro_schema_array_items(schema), false, depth);
    case AVRO_MAP:
        return walk_blocks(w, avro_schema_map_values(schema), true, depth);
    case AVRO_RECORD:
        return walk_record(w, schema, depth);
    case AVRO_LINK:
        return walk_value(w, avro_schema_link_target(schema), depth + 1);
    }
    return walk_fail(w, "the schema has a type this reader does not know");
}

/*
 * Checks that buf[0..len) is exactly one value of schema.  Returns 0, or
 * -1 with err saying where and why.
 */
static int validate(avro_schema_t schema, const void *buf, size_t len,
                    struct mw_error *err)
{
    struct walk w = {.start = buf,
                     .p = buf,
                     .end = (const unsigned char *)buf + len,
                     .budget = len,
                     .err = err};

    if (walk_value(&w, schema, 0) != 0)
        return -1;
    if (w.p != w.end) {
        w.field = NULL;
        return walk_fail(&w, "%zu trailing bytes after the record",
                         walk_left(&w));
    }
    return 0;
}

/* ---- Encoding --------------------------------------------------------- */

/*
 * Fills the fields of one generic record.  The first failure is kept in
 * err and makes every later call do nothing, so a record is written as a
 * flat list of calls checked once at the end.
 */
struct put {
    avro_value_t *record;
    const char *const *names;
    struct mw_error *err;
    bool failed;
};

static bool put_field(struct put *p, int index, avro_value_t *field)
{
    if (p->failed)
        return false;
    if (avro_value_get_by_index(p->record, (size_t)index, field, NULL) != 0) {
        mw_error_set(p->err, MW_ERR_INPUT, false,
                     "could not encode field \"%s\": %s", p->names[index],
                     avro_strerror());
        p->failed = true;
        return false;
    }
    return true;
}

static void put_check(struct put *p, int index, int rc)
{
    if (rc != 0 && !p->failed) {
        mw_error_set(p->err, rc == ENOMEM ? MW_ERR_SYSTEM : MW_ERR_INPUT,
                     rc == ENOMEM, "could not encode field \"%s\": %s",
                     p->names[index], avro_strerror());
        p->failed = true;
    }
}

static void put_string(struct put *p, int index, const char *s)
{
    avro_value_t field;

    if (!put_field(p, index, &field))
        return;
    if (s == NULL) {
        mw_error_set(p->err, MW_ERR_INPUT, false,
                     "cannot encode field \"%s\": it is null but required",
                     p->names[index]);
        p->failed = true;
        return;
    }
    put_check(p, index, avro_value_set_string(&field, s));
}

static void put_long(struct put *p, int index, int64_t v)
{
    avro_value_t field;

    if (put_field(p, index, &field))
        put_check(p, index, avro_value_set_long(&field, v));
}

static void put_int(struct put *p, int index, int32_t v)
{
    avro_value_t field;

    if (put_field(p, index, &field))
        put_check(p, index, avro_value_set_int(&field, v));
}

static void put_boolean(struct put *p, int index, bool v)
{
    avro_value_t field;

    if (put_field(p, index, &field))
        put_check(p, index, avro_value_set_boolean(&field, v ? 1 : 0));
}

static void put_enum(struct put *p, int index, int v, int count)
{
    avro_value_t field;

    if (!put_field(p, index, &field))
        return;
    if (v < 0 || v >= count) {
        mw_error_set(p->err, MW_ERR_INPUT, false,
                     "cannot encode field \"%s\": enum value %d is out of "
                     "range",
                     p->names[index], v);
        mw_error_detail(p->err, "The enum has %d symbols.", count);
        p->failed = true;
        return;
    }
    put_check(p, index, avro_value_set_enum(&field, v));
}

/* Sets a ["null", T] field to its null branch; on T returns the branch. */
static bool put_union(struct put *p, int index, bool is_null,
                      avro_value_t *branch)
{
    avro_value_t field;

    if (!put_field(p, index, &field))
        return false;
    put_check(p, index, avro_value_set_branch(&field, is_null ? 0 : 1, branch));
    if (!p->failed && is_null)
        put_check(p, index, avro_value_set_null(branch));
    return !p->failed && !is_null;
}

static void put_optional_string(struct put *p, int index, const char *s)
{
    avro_value_t branch;

    if (put_union(p, index, s == NULL, &branch))
        put_check(p, index, avro_value_set_string(&branch, s));
}

static void put_optional_long(struct put *p, int index, bool is_set, int64_t v)
{
    avro_value_t branch;

    if (put_union(p, index, !is_set, &branch))
        put_check(p, index, avro_value_set_long(&branch, v));
}

static void put_string_array(struct put *p, int index, const char *const *items,
                             size_t count)
{
    avro_value_t field, item;

    if (!put_field(p, index, &field))
        return;
    put_check(p, index, avro_value_reset(&field));
    if (count > 0 && items == NULL) {
        mw_error_set(p->err, MW_ERR_INPUT, false,
                     "cannot encode field \"%s\": %zu items but no array",
                     p->names[index], count);
        p->failed = true;
        return;
    }
    for (size_t i = 0; i < count && !p->failed; i++) {
        if (items[i] == NULL) {
            mw_error_set(p->err, MW_ERR_INPUT, false,
                         "cannot encode field \"%s\": item %zu is null",
                         p->names[index], i);
            p->failed = true;
            return;
        }
        put_check(p, index, avro_value_append(&field, &item, NULL));
        if (!p->failed)
            put_check(p, index, avro_value_set_string(&item, items[i]));
    }
}

static void put_request(struct put *p, const struct mw_request *r)
{
    put_string(p, REQ_REQUEST_ID, r->request_id);
    put_long(p, REQ_REQUESTED_AT, r->requested_at);
    put_string(p, REQ_REQUESTED_BY, r->requested_by);
    put_string(p, REQ_MSP_ID, r->msp_id);
    put_string(p, REQ_MSP_DOMAIN, r->msp_domain);
    put_enum(p, REQ_MAIL_PLATFORM, r->mail_platform, MW_PLATFORM_COUNT);
    put_enum(p, REQ_SERVICE, r->service, MW_SERVICE_COUNT);
    put_string(p, REQ_COMPANY_NAME, r->company_name);
    put_string(p, REQ_PRIMARY_DOMAIN, r->primary_domain);
    put_string_array(p, REQ_ADDITIONAL_DOMAINS, r->additional_domains,
                     r->additional_domains_count);
    put_optional_string(p, REQ_DELIVERY_DESTINATION, r->delivery_destination);
    put_int(p, REQ_LICENSES, r->licenses);
    put_string(p, REQ_DEFAULT_ADMIN_EMAIL, r->default_admin_email);
    put_optional_string(p, REQ_POLICY_TEMPLATE_ID, r->policy_template_id);
    put_boolean(p, REQ_APPLY_GLOBAL_RULES, r->apply_global_rules);
    put_boolean(p, REQ_MSP_MANAGEMENT, r->msp_management);
    put_boolean(p, REQ_TWO_FACTOR_REQUIRED, r->two_factor_required);
    put_boolean(p, REQ_MONITOR_MODE, r->monitor_mode);
    put_enum(p, REQ_ACCOUNT_TYPE, r->account_type, MW_ACCOUNT_COUNT);
}

static void put_termination(struct put *p,
                            const struct mw_termination_request *t)
{
    put_string(p, TERM_REQUEST_ID, t->request_id);
    put_long(p, TERM_REQUESTED_AT, t->requested_at);
    put_string(p, TERM_REQUESTED_BY, t->requested_by);
    put_string(p, TERM_MSP_ID, t->msp_id);
    put_string(p, TERM_CUSTOMER_ID, t->customer_id);
    put_optional_long(p, TERM_EFFECTIVE_AT, t->has_effective_at,
                      t->effective_at);
}

static void put_created(struct put *p, const struct mw_customer_created *c)
{
    put_string(p, CREATED_EVENT_ID, c->event_id);
    put_string(p, CREATED_CUSTOMER_ID, c->customer_id);
    put_string(p, CREATED_REQUEST_ID, c->request_id);
    put_string(p, CREATED_MSP_ID, c->msp_id);
    put_long(p, CREATED_OCCURRED_AT, c->occurred_at);
    put_string(p, CREATED_REQUESTED_BY, c->requested_by);
    put_string(p, CREATED_COMPANY_NAME, c->company_name);
    put_string(p, CREATED_PRIMARY_DOMAIN, c->primary_domain);
    put_string_array(p, CREATED_ADDITIONAL_DOMAINS, c->additional_domains,
                     c->additional_domains_count);
    put_enum(p, CREATED_MAIL_PLATFORM, c->mail_platform, MW_PLATFORM_COUNT);
    put_enum(p, CREATED_SERVICE, c->service, MW_SERVICE_COUNT);
    put_enum(p, CREATED_ACCOUNT_TYPE, c->account_type, MW_ACCOUNT_COUNT);
    put_int(p, CREATED_LICENSES, c->licenses);
    put_boolean(p, CREATED_BILLABLE, c->billable);
    put_optional_long(p, CREATED_BILLING_STARTS_AT, c->has_billing_starts_at,
                      c->billing_starts_at);
    put_optional_long(p, CREATED_TRIAL_ENDS_AT, c->has_trial_ends_at,
                      c->trial_ends_at);
    put_string(p, CREATED_DEFAULT_ADMIN_EMAIL, c->default_admin_email);
    put_optional_string(p, CREATED_DELIVERY_DESTINATION,
                        c->delivery_destination);
    put_optional_string(p, CREATED_POLICY_TEMPLATE_ID, c->policy_template_id);
    put_boolean(p, CREATED_APPLY_GLOBAL_RULES, c->apply_global_rules);
    put_boolean(p, CREATED_MSP_MANAGEMENT, c->msp_management);
    put_boolean(p, CREATED_TWO_FACTOR_REQUIRED, c->two_factor_required);
    put_boolean(p, CREATED_MONITOR_MODE, c->monitor_mode);
    put_enum(p, CREATED_INSTALLATION, c->installation, MW_INSTALL_COUNT);
}

static void put_rejection_errors(struct put *p, const struct mw_rejection *r)
{
    avro_value_t field, item;
    struct put q = {.names = rejection_error_fields, .err = p->err};

    if (!put_field(p, REJECTED_ERRORS, &field))
        return;
    put_check(p, REJECTED_ERRORS, avro_value_reset(&field));
    if (r == NULL || r->count > MW_MAX_REJECTION_ERRORS) {
        mw_error_set(p->err, MW_ERR_INPUT, false,
                     "cannot encode field \"errors\": no valid rejection");
        p->failed = true;
        return;
    }
    for (size_t i = 0; i < r->count && !p->failed; i++) {
        put_check(p, REJECTED_ERRORS, avro_value_append(&field, &item, NULL));
        if (p->failed)
            return;
        q.record = &item;
        put_optional_string(&q, REJECTION_FIELD, r->errors[i].field);
        put_enum(&q, REJECTION_CODE, r->errors[i].code, MW_REJ_COUNT);
        put_string(&q, REJECTION_MESSAGE, r->errors[i].message);
        p->failed = q.failed;
    }
}

static void put_rejected(struct put *p, const struct mw_customer_rejected *r)
{
    put_string(p, REJECTED_EVENT_ID, r->event_id);
    put_string(p, REJECTED_REQUEST_ID, r->request_id);
    put_string(p, REJECTED_MSP_ID, r->msp_id);
    put_long(p, REJECTED_OCCURRED_AT, r->occurred_at);
    put_optional_string(p, REJECTED_REQUESTED_BY, r->requested_by);
    put_rejection_errors(p, r->rejection);
}

static void put_trial_ending(struct put *p, const struct mw_trial_ending *t)
{
    put_string(p, ENDING_EVENT_ID, t->event_id);
    put_string(p, ENDING_CUSTOMER_ID, t->customer_id);
    put_string(p, ENDING_MSP_ID, t->msp_id);
    put_long(p, ENDING_OCCURRED_AT, t->occurred_at);
    put_long(p, ENDING_TRIAL_ENDS_AT, t->trial_ends_at);
    put_int(p, ENDING_LICENSES, t->licenses);
    put_string(p, ENDING_REQUESTED_BY, t->requested_by);
}

static void put_trial_converted(struct put *p,
                                const struct mw_trial_converted *t)
{
    put_string(p, CONVERTED_EVENT_ID, t->event_id);
    put_string(p, CONVERTED_CUSTOMER_ID, t->customer_id);
    put_string(p, CONVERTED_MSP_ID, t->msp_id);
    put_long(p, CONVERTED_OCCURRED_AT, t->occurred_at);
    put_long(p, CONVERTED_TRIAL_STARTED_AT, t->trial_started_at);
    put_long(p, CONVERTED_TRIAL_ENDED_AT, t->trial_ended_at);
    put_int(p, CONVERTED_LICENSES, t->licenses);
    put_long(p, CONVERTED_BILLING_STARTS_AT, t->billing_starts_at);
}

static void put_terminated(struct put *p,
                           const struct mw_customer_terminated *t)
{
    put_string(p, TERMINATED_EVENT_ID, t->event_id);
    put_string(p, TERMINATED_CUSTOMER_ID, t->customer_id);
    put_string(p, TERMINATED_MSP_ID, t->msp_id);
    put_long(p, TERMINATED_OCCURRED_AT, t->occurred_at);
    put_long(p, TERMINATED_TERMINATED_AT, t->terminated_at);
    put_boolean(p, TERMINATED_WAS_TRIAL, t->was_trial);
    put_string(p, TERMINATED_REQUEST_ID, t->request_id);
}

/* Fills the reusable value of rec's type from rec. */
static int put_record(struct codec *codec, const struct mw_record *rec,
                      struct mw_error *err)
{
    struct codec_type *t;
    struct put p = {.err = err};

    if ((int)rec->type < 0 || rec->type >= MW_REC_COUNT) {
        mw_error_set(err, MW_ERR_INPUT, false,
                     "cannot encode record type %d: no such type",
                     (int)rec->type);
        return -1;
    }
    t = &codec->types[rec->type];
    p.record = &t->value;
    p.names = record_fields[rec->type].names;
    switch (rec->type) {
    case MW_REC_CUSTOMER_REQUESTED:
        put_request(&p, &rec->u.request);
        break;
    case MW_REC_CUSTOMER_TERMINATION_REQUESTED:
        put_termination(&p, &rec->u.termination);
        break;
    case MW_REC_CUSTOMER_CREATED:
        put_created(&p, &rec->u.created);
        break;
    case MW_REC_CUSTOMER_REJECTED:
        put_rejected(&p, &rec->u.rejected);
        break;
    case MW_REC_TRIAL_ENDING:
        put_trial_ending(&p, &rec->u.trial_ending);
        break;
    case MW_REC_TRIAL_CONVERTED:
        put_trial_converted(&p, &rec->u.trial_converted);
        break;
    case MW_REC_CUSTOMER_TERMINATED:
        put_terminated(&p, &rec->u.terminated);
        break;
    case MW_REC_COUNT:
        break;
    }
    return p.failed ? -1 : 0;
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

/*
 * Confluent framing of a record of a topic union registered as one
 * schema: 0x00, the union's id, then the datum of the union, which is the
 * branch index (zig-zag, one byte for the few branches we have) and the
 * record.  The topic unions list their records in mw_record_type order.
 */
static int encode_confluent(struct codec *codec, const struct mw_record *rec,
                            struct mw_arena *arena, const void **out,
                            size_t *out_len, struct mw_error *err)
{
    bool is_request = rec->type == MW_REC_CUSTOMER_REQUESTED ||
                      rec->type == MW_REC_CUSTOMER_TERMINATION_REQUESTED;
    int64_t id =
        is_request ? codec->registry.requests_id : codec->registry.events_id;
    int branch =
        is_request ? (int)rec->type : (int)rec->type - MW_REC_CUSTOMER_CREATED;
    unsigned char header[CONFLUENT_HEADER + 1];

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

/*
 * Copies the fields of one decoded generic record into the domain structs,
 * with the same sticky-failure style as struct put.
 */
struct take {
    avro_value_t *record;
    const char *const *names;
    /*
     * Set when record is a projection of our record onto a writer's
     * fields: map[i] is the projection's index of our field i, or -1 when
     * the writer lacks it and defaults (a value of our schema holding the
     * schema's defaults) answers instead.
     */
    const int *map;
    avro_value_t *defaults;
    struct mw_arena *arena;
    struct mw_error *err;
    enum codec_status status;
};

static void take_fail(struct take *t, int index, const char *reason)
{
    if (t->status != CODEC_OK)
        return;
    t->status = CODEC_CORRUPT_AVRO;
    mw_error_set(t->err, MW_ERR_DECODE, false,
                 "could not decode field \"%s\": %s", t->names[index], reason);
}

/* Not the value's fault: retriable, see codec_decode(). */
static void take_no_memory(struct take *t, int index)
{
    if (t->status != CODEC_OK)
        return;
    t->status = CODEC_CORRUPT_AVRO;
    mw_error_set(t->err, MW_ERR_SYSTEM, true,
                 "out of memory decoding field \"%s\"", t->names[index]);
}

static bool take_field(struct take *t, int index, avro_value_t *field)
{
    avro_value_t *record = t->record;
    int at = index;

    if (t->status != CODEC_OK)
        return false;
    if (t->map != NULL) {
        at = t->map[index];
        if (at < 0) {
            record = t->defaults;
            at = index;
        }
    }
    if (avro_value_get_by_index(record, (size_t)at, field, NULL) != 0) {
        take_fail(t, index, avro_strerror());
        return false;
    }
    return true;
}

/* An arena copy of a string value; NUL bytes inside are refused. */
static const char *copy_string(struct take *t, int index, avro_value_t *v)
{
    const char *s = NULL;
    size_t size = 0;
    char *copy;

    if (avro_value_get_string(v, &s, &size) != 0) {
        take_fail(t, index, avro_strerror());
        return NULL;
    }
    /* size counts avro-c's terminating NUL, when there is a buffer. */
    if (size > 0)
        size--;
    if (size > 0 && memchr(s, '\0', size) != NULL) {
        take_fail(t, index, "the string contains a NUL byte");
        return NULL;
    }
    copy = arena_strndup(t->arena, size > 0 ? s : "", size);
    if (copy == NULL)
        take_no_memory(t, index);
    return copy;
}

static const char *take_string(struct take *t, int index)
{
    avro_value_t field;

    if (!take_field(t, index, &field))
        return NULL;
    return copy_string(t, index, &field);
}

/* For a ["null", T] field: false for null, else true and *branch. */
static bool take_union(struct take *t, int index, avro_value_t *branch)
{
    avro_value_t field;
    int discriminant;

    if (!take_field(t, index, &field))
        return false;
    if (avro_value_get_discriminant(&field, &discriminant) != 0 ||
        avro_value_get_current_branch(&field, branch) != 0) {
        take_fail(t, index, avro_strerror());
        return false;
    }
    return discriminant == 1;
}

static const char *take_optional_string(struct take *t, int index)
{
    avro_value_t branch;

    if (!take_union(t, index, &branch))
        return NULL;
    return copy_string(t, index, &branch);
}

static int64_t take_long(struct take *t, int index)
{
    avro_value_t field;
    int64_t v = 0;

    if (take_field(t, index, &field) && avro_value_get_long(&field, &v) != 0)
        take_fail(t, index, avro_strerror());
    return v;
}

static bool take_optional_long(struct take *t, int index, int64_t *out)
{
    avro_value_t branch;

    *out = 0;
    if (!take_union(t, index, &branch))
        return false;
    if (avro_value_get_long(&branch, out) != 0) {
        take_fail(t, index, avro_strerror());
        return false;
    }
    return true;
}

static int32_t take_int(struct take *t, int index)
{
    avro_value_t field;
    int32_t v = 0;

    if (take_field(t, index, &field) && avro_value_get_int(&field, &v) != 0)
        take_fail(t, index, avro_strerror());
    return v;
}

static bool take_boolean(struct take *t, int index)
{
    avro_value_t field;
    int v = 0;

    if (take_field(t, index, &field) && avro_value_get_boolean(&field, &v) != 0)
        take_fail(t, index, avro_strerror());
    return v != 0;
}

static int take_enum(struct take *t, int index, int count)
{
    avro_value_t field;
    int v = 0;

    if (!take_field(t, index, &field))
        return 0;
    if (avro_value_get_enum(&field, &v) != 0) {
        take_fail(t, index, avro_strerror());
        return 0;
    }
    if (v < 0 || v >= count) {
        take_fail(t, index, "enum index out of range");
        return 0;
    }
    return v;
}

static const char **take_string_array(struct take *t, int index, size_t *count)
{
    avro_value_t field, item;
    const char **items;
    size_t n = 0;

    *count = 0;
    if (!take_field(t, index, &field))
        return NULL;
    if (avro_value_get_size(&field, &n) != 0) {
        take_fail(t, index, avro_strerror());
        return NULL;
    }
    /* n is bounded by the message size: each item took a byte or more. */
    items = arena_alloc(t->arena, (n > 0 ? n : 1) * sizeof(*items));
    if (items == NULL) {
        take_no_memory(t, index);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        if (avro_value_get_by_index(&field, i, &item, NULL) != 0) {
            take_fail(t, index, avro_strerror());
            return NULL;
        }
        items[i] = copy_string(t, index, &item);
        if (items[i] == NULL)
            return NULL;
    }
    *count = n;
    return items;
}

static void take_request(struct take *t, struct mw_request *r)
{
    r->request_id = take_string(t, REQ_REQUEST_ID);
    r->requested_at = take_long(t, REQ_REQUESTED_AT);
    r->requested_by = take_string(t, REQ_REQUESTED_BY);
    r->msp_id = take_string(t, REQ_MSP_ID);
    r->msp_domain = take_string(t, REQ_MSP_DOMAIN);
    r->mail_platform = take_enum(t, REQ_MAIL_PLATFORM, MW_PLATFORM_COUNT);
    r->service = take_enum(t, REQ_SERVICE, MW_SERVICE_COUNT);
    r->company_name = take_string(t, REQ_COMPANY_NAME);
    r->primary_domain = take_string(t, REQ_PRIMARY_DOMAIN);
    r->additional_domains = take_string_array(t, REQ_ADDITIONAL_DOMAINS,
                                              &r->additional_domains_count);
    r->delivery_destination = take_optional_string(t, REQ_DELIVERY_DESTINATION);
    r->licenses = take_int(t, REQ_LICENSES);
    r->default_admin_email = take_string(t, REQ_DEFAULT_ADMIN_EMAIL);
    r->policy_template_id = take_optional_string(t, REQ_POLICY_TEMPLATE_ID);
    r->apply_global_rules = take_boolean(t, REQ_APPLY_GLOBAL_RULES);
    r->msp_management = take_boolean(t, REQ_MSP_MANAGEMENT);
    r->two_factor_required = take_boolean(t, REQ_TWO_FACTOR_REQUIRED);
    r->monitor_mode = take_boolean(t, REQ_MONITOR_MODE);
    r->account_type = take_enum(t, REQ_ACCOUNT_TYPE, MW_ACCOUNT_COUNT);
}

static void take_termination(struct take *t, struct mw_termination_request *r)
{
    r->request_id = take_string(t, TERM_REQUEST_ID);
    r->requested_at = take_long(t, TERM_REQUESTED_AT);
    r->requested_by = take_string(t, TERM_REQUESTED_BY);
    r->msp_id = take_string(t, TERM_MSP_ID);
    r->customer_id = take_string(t, TERM_CUSTOMER_ID);
    r->has_effective_at =
        take_optional_long(t, TERM_EFFECTIVE_AT, &r->effective_at);
}

static void take_created(struct take *t, struct mw_customer_created *c)
{
    c->event_id = take_string(t, CREATED_EVENT_ID);
    c->customer_id = take_string(t, CREATED_CUSTOMER_ID);
    c->request_id = take_string(t, CREATED_REQUEST_ID);
    c->msp_id = take_string(t, CREATED_MSP_ID);
    c->occurred_at = take_long(t, CREATED_OCCURRED_AT);
    c->requested_by = take_string(t, CREATED_REQUESTED_BY);
    c->company_name = take_string(t, CREATED_COMPANY_NAME);
    c->primary_domain = take_string(t, CREATED_PRIMARY_DOMAIN);
    c->additional_domains = take_string_array(t, CREATED_ADDITIONAL_DOMAINS,
                                              &c->additional_domains_count);
    c->mail_platform = take_enum(t, CREATED_MAIL_PLATFORM, MW_PLATFORM_COUNT);
    c->service = take_enum(t, CREATED_SERVICE, MW_SERVICE_COUNT);
    c->account_type = take_enum(t, CREATED_ACCOUNT_TYPE, MW_ACCOUNT_COUNT);
    c->licenses = take_int(t, CREATED_LICENSES);
    c->billable = take_boolean(t, CREATED_BILLABLE);
    c->has_billing_starts_at =
        take_optional_long(t, CREATED_BILLING_STARTS_AT, &c->billing_starts_at);
    c->has_trial_ends_at =
        take_optional_long(t, CREATED_TRIAL_ENDS_AT, &c->trial_ends_at);
    c->default_admin_email = take_string(t, CREATED_DEFAULT_ADMIN_EMAIL);
    c->delivery_destination =
        take_optional_string(t, CREATED_DELIVERY_DESTINATION);
    c->policy_template_id = take_optional_string(t, CREATED_POLICY_TEMPLATE_ID);
    c->apply_global_rules = take_boolean(t, CREATED_APPLY_GLOBAL_RULES);
    c->msp_management = take_boolean(t, CREATED_MSP_MANAGEMENT);
    c->two_factor_required = take_boolean(t, CREATED_TWO_FACTOR_REQUIRED);
    c->monitor_mode = take_boolean(t, CREATED_MONITOR_MODE);
    c->installation = take_enum(t, CREATED_INSTALLATION, MW_INSTALL_COUNT);
}

/*
 * Copies message into a fixed buffer, cutting at a UTF-8 boundary.  Known
 * limit: a peer's message longer than 255 bytes is shortened, since
 * struct mw_rejection_error holds no more.
 */
static void copy_message(char *out, size_t size, const char *s)
{
    size_t len = strlen(s);

    if (len >= size) {
        len = size - 1;
        while (len > 0 && ((unsigned char)s[len] & 0xc0) == 0x80)
            len--;
    }
    memcpy(out, s, len);
    out[len] = '\0';
}

static void take_rejection_errors(struct take *t, struct mw_rejection *r)
{
    avro_value_t field, item;
    struct take q = {
        .names = rejection_error_fields, .arena = t->arena, .err = t->err};
    size_t n = 0;

    r->count = 0;
    if (!take_field(t, REJECTED_ERRORS, &field))
        return;
    if (avro_value_get_size(&field, &n) != 0) {
        take_fail(t, REJECTED_ERRORS, avro_strerror());
        return;
    }
    if (n > MW_MAX_REJECTION_ERRORS) {
        take_fail(t, REJECTED_ERRORS,
                  "more items than the 32 a rejection holds");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const char *message;

        if (avro_value_get_by_index(&field, i, &item, NULL) != 0) {
            take_fail(t, REJECTED_ERRORS, avro_strerror());
            return;
        }
        q.record = &item;
        r->errors[i].field = take_optional_string(&q, REJECTION_FIELD);
        r->errors[i].code = take_enum(&q, REJECTION_CODE, MW_REJ_COUNT);
        message = take_string(&q, REJECTION_MESSAGE);
        if (q.status != CODEC_OK) {
            t->status = q.status;
            return;
        }
        copy_message(r->errors[i].message, sizeof(r->errors[i].message),
                     message);
        r->count = i + 1;
    }
}

static void take_rejected(struct take *t, struct mw_customer_rejected *r,
                          struct mw_rejection *storage)
{
    r->event_id = take_string(t, REJECTED_EVENT_ID);
    r->request_id = take_string(t, REJECTED_REQUEST_ID);
    r->msp_id = take_string(t, REJECTED_MSP_ID);
    r->occurred_at = take_long(t, REJECTED_OCCURRED_AT);
    r->requested_by = take_optional_string(t, REJECTED_REQUESTED_BY);
    take_rejection_errors(t, storage);
    r->rejection = storage;
}

static void take_trial_ending(struct take *t, struct mw_trial_ending *e)
{
    e->event_id = take_string(t, ENDING_EVENT_ID);
    e->customer_id = take_string(t, ENDING_CUSTOMER_ID);
    e->msp_id = take_string(t, ENDING_MSP_ID);
    e->occurred_at = take_long(t, ENDING_OCCURRED_AT);
    e->trial_ends_at = take_long(t, ENDING_TRIAL_ENDS_AT);
    e->licenses = take_int(t, ENDING_LICENSES);
    e->requested_by = take_string(t, ENDING_REQUESTED_BY);
}

static void take_trial_converted(struct take *t, struct mw_trial_converted *c)
{
    c->event_id = take_string(t, CONVERTED_EVENT_ID);
    c->customer_id = take_string(t, CONVERTED_CUSTOMER_ID);
    c->msp_id = take_string(t, CONVERTED_MSP_ID);
    c->occurred_at = take_long(t, CONVERTED_OCCURRED_AT);
    c->trial_started_at = take_long(t, CONVERTED_TRIAL_STARTED_AT);
    c->trial_ended_at = take_long(t, CONVERTED_TRIAL_ENDED_AT);
    c->licenses = take_int(t, CONVERTED_LICENSES);
    c->billing_starts_at = take_long(t, CONVERTED_BILLING_STARTS_AT);
}

static void take_terminated(struct take *t, struct mw_customer_terminated *c)
{
    c->event_id = take_string(t, TERMINATED_EVENT_ID);
    c->customer_id = take_string(t, TERMINATED_CUSTOMER_ID);
    c->msp_id = take_string(t, TERMINATED_MSP_ID);
    c->occurred_at = take_long(t, TERMINATED_OCCURRED_AT);
    c->terminated_at = take_long(t, TERMINATED_TERMINATED_AT);
    c->was_trial = take_boolean(t, TERMINATED_WAS_TRIAL);
    c->request_id = take_string(t, TERMINATED_REQUEST_ID);
}

/*
 * Fills rec from value, a decoded record of our schema for type, or with
 * map and defaults a projection of it (see struct take).
 */
static enum codec_status
take_record(enum mw_record_type type, avro_value_t *value, const int *map,
            avro_value_t *defaults, struct mw_arena *arena,
            struct mw_record *rec, struct mw_error *err)
{
    struct take t = {.record = value,
                     .names = record_fields[type].names,
                     .map = map,
                     .defaults = defaults,
                     .arena = arena,
                     .err = err,
                     .status = CODEC_OK};

    memset(&rec->u, 0, sizeof(rec->u));
    rec->type = type;
    switch (type) {
    case MW_REC_CUSTOMER_REQUESTED:
        take_request(&t, &rec->u.request);
        break;
    case MW_REC_CUSTOMER_TERMINATION_REQUESTED:
        take_termination(&t, &rec->u.termination);
        break;
    case MW_REC_CUSTOMER_CREATED:
        take_created(&t, &rec->u.created);
        break;
    case MW_REC_CUSTOMER_REJECTED:
        take_rejected(&t, &rec->u.rejected, &rec->rejection_storage);
        break;
    case MW_REC_TRIAL_ENDING:
        take_trial_ending(&t, &rec->u.trial_ending);
        break;
    case MW_REC_TRIAL_CONVERTED:
        take_trial_converted(&t, &rec->u.trial_converted);
        break;
    case MW_REC_CUSTOMER_TERMINATED:
        take_terminated(&t, &rec->u.terminated);
        break;
    case MW_REC_COUNT:
        break;
    }
    return t.status;
}

/*
 * Decodes the Avro binary body of a record of type t: validation walk
 * first (see the invariant at the top), then avro-c, then the copy.
 */
static enum codec_status decode_body(struct codec *codec, struct codec_type *t,
                                     const void *body, size_t len,
                                     struct mw_arena *arena,
                                     struct mw_record *rec,
                                     struct mw_error *err)
{
    int rc;

    if (validate(t->schema, body, len, err) != 0)
        return CODEC_CORRUPT_AVRO;
    avro_reader_memory_set_source(codec->reader, body, (int64_t)len);
    rc = avro_value_read(codec->reader, &t->value);
    if (rc != 0) {
        mw_error_set(err, rc == ENOMEM ? MW_ERR_SYSTEM : MW_ERR_DECODE,
                     rc == ENOMEM, "could not decode a %s: %s",
                     mw_record_names[t->type], avro_strerror());
        return CODEC_CORRUPT_AVRO;
    }
    return take_record(t->type, &t->value, NULL, NULL, arena, rec, err);
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
    if (len < SINGLE_OBJECT_HEADER) {
        mw_error_set(err, MW_ERR_DECODE, false,
                     "corrupt Avro: the single-object header is truncated");
        mw_error_detail(err, "The value is %zu bytes; the header alone is %d.",
                        len, SINGLE_OBJECT_HEADER);
        return CODEC_CORRUPT_AVRO;
    }
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

/* ---- Writer schemas from a Schema Registry ---------------------------- */

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
    if (depth > WALK_MAX_DEPTH) {
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
    count = record_fields[type].count;
    r->projection = avro_schema_record(mw_record_names[type], CODEC_NAMESPACE);
    if (r->projection == NULL)
        goto oom;
    for (size_t i = 0; i < count; i++) {
        const char *name = record_fields[type].names[i];

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
        mw_error_set(err, MW_ERR_SYSTEM, true, "out of memory");
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
 * Confluent framing: the writer schema is registry id buf[1..5).  The
 * value is walked with the writer's schema (the invariant at the top),
 * then read through the resolution of the record it was written with.
 */
static enum codec_status decode_confluent(struct codec *codec,
                                          const unsigned char *buf, size_t len,
                                          struct mw_arena *arena,
                                          struct mw_record *rec,
                                          struct mw_error *err)
{
    const unsigned char *body = buf + CONFLUENT_HEADER;
    size_t body_len = len - CONFLUENT_HEADER;
    struct writer_entry *e;
    struct resolution *r;
    enum codec_status status;
    uint32_t id;
    int rc;

    if (len < CONFLUENT_HEADER) {
        mw_error_set(err, MW_ERR_DECODE, false,
                     "corrupt Avro: the Confluent header is truncated");
        mw_error_detail(err, "The value is %zu bytes; the header alone is %d.",
                        len, CONFLUENT_HEADER);
        return CODEC_CORRUPT_AVRO;
    }
    id = (uint32_t)buf[1] << 24 | (uint32_t)buf[2] << 16 |
         (uint32_t)buf[3] << 8 | (uint32_t)buf[4];
    if (!codec->has_registry) {
        mw_error_set(err, MW_ERR_DECODE, false,
                     "unknown schema id %" PRIu32 ": no Schema Registry is "
                     "configured",
                     id);
        mw_error_hint(err, "Set MESH_WORKER_SCHEMA_REGISTRY_URL to read "
                           "Confluent-framed values.");
        return CODEC_UNKNOWN_SCHEMA;
    }
    e = find_writer(codec, id);
    if (e == NULL) {
        status = fetch_writer(codec, id, &e, err);
        if (status != CODEC_OK)
            return status;
    }
    if (e->schema == NULL || e->res == NULL) {
        mw_error_set(err, MW_ERR_DECODE, false,
                     "schema id %" PRIu32 " cannot be read: %s", id, e->reason);
        return CODEC_SCHEMA_INCOMPATIBLE;
    }
    r = &e->res[0];
    if (e->is_union) {
        struct walk w = {
            .start = body, .p = body, .end = body + body_len, .err = err};
        int64_t branch = 0;

        if (walk_long(&w, &branch) != 0)
            return CODEC_CORRUPT_AVRO;
        if (branch < 0 || (uint64_t)branch >= e->count) {
            walk_fail(&w,
                      "union branch %" PRId64 " is not one of the %zu "
                      "branches",
                      branch, e->count);
            return CODEC_CORRUPT_AVRO;
        }
        r = &e->res[branch];
    }
    /* A writer that does not resolve is the verdict, whatever the bytes. */
    if (!r->is_resolved) {
        mw_error_set(err, MW_ERR_DECODE, false,
                     "schema id %" PRIu32 " does not resolve to this "
                     "worker's schema: %s",
                     id, r->reason);
        return CODEC_SCHEMA_INCOMPATIBLE;
    }
    if (validate(e->schema, body, body_len, err) != 0)
        return CODEC_CORRUPT_AVRO;
    if (e->is_union) {
        /* The walk passed: the branch index is a varint of at most 10. */
        size_t skip = 1;

        while (skip < body_len && (body[skip - 1] & 0x80) != 0)
            skip++;
        body += skip;
        body_len -= skip;
    }
    avro_reader_memory_set_source(codec->reader, (const char *)body,
                                  (int64_t)body_len);
    rc = avro_value_read(codec->reader, &r->resolver_value);
    if (rc != 0) {
        mw_error_set(err, rc == ENOMEM ? MW_ERR_SYSTEM : MW_ERR_DECODE,
                     rc == ENOMEM, "could not decode a %s: %s",
                     mw_record_names[r->type], avro_strerror());
        return CODEC_CORRUPT_AVRO;
    }
    return take_record(r->type, &r->projection_value, r->map,
                       &codec->types[r->type].defaults, arena, rec, err);
}

int codec_confluent_id(const void *buf, size_t len, uint32_t *id)
{
    const unsigned char *p = buf;

    if (buf == NULL || len < CONFLUENT_HEADER || p[0] != 0x00)
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

/* Checks that a record schema's fields are names[0..count), in order. */
static int check_fields(avro_schema_t schema, const char *record,
                        const char *const *names, size_t count,
                        struct mw_error *err)
{
    if (avro_typeof(schema) != AVRO_RECORD ||
        avro_schema_record_size(schema) != count) {
        mw_error_set(err, MW_ERR_CONFIG, false,
                     "schema %s does not match this build", record);
        mw_error_detail(err, "Expected a record of %zu fields.", count);
        return -1;
    }
    for (size_t i = 0; i < count; i++) {
        const char *name = avro_schema_record_field_name(schema, (int)i);

        if (name == NULL || strcmp(name, names[i]) != 0) {
            mw_error_set(err, MW_ERR_CONFIG, false,
                         "schema %s does not match this build", record);
            mw_error_detail(err, "Field %zu is \"%s\", expected \"%s\".", i,
                            name ? name : "", names[i]);
            return -1;
        }
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
    if (check_fields(t->schema, name, record_fields[type].names,
                     record_fields[type].count, err) != 0)
        return -1;
    if (type == MW_REC_CUSTOMER_REJECTED) {
        avro_schema_t errors =
            avro_schema_record_field_get_by_index(t->schema, REJECTED_ERRORS);

        if (avro_typeof(errors) != AVRO_ARRAY ||
            check_fields(avro_schema_array_items(errors), "RejectionError",
                         rejection_error_fields, REJECTION_COUNT, err) != 0)
            return -1;
    }
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
        mw_error_set(err, MW_ERR_SYSTEM, false, "out of memory");
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
        mw_error_set(err, MW_ERR_SYSTEM, false, "out of memory");
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
    if (codec->writers != NULL) {
        for (size_t i = 0; i < codec->registry.cache_size; i++)
            writer_entry_clear(&codec->writers[i]);
        free(codec->writers);
    }
    if (codec->writer != NULL)
        avro_writer_free(codec->writer);
    if (codec->reader != NULL)
        avro_reader_free(codec->reader);
    free(codec->scratch);
    free(codec);
}

/* Sets v to the JSON default def of its schema.  0, or -1 if it does not fit.
 */
static int set_default(avro_value_t *v, json_t *def, int depth)
{
    avro_schema_t schema = avro_value_get_schema(v);
    avro_value_t child;
    const char *key;
    json_t *item;
    size_t i;
    int index;

    if (depth > WALK_MAX_DEPTH)
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
        json_array_foreach(def, i, item)
        {
            if (avro_value_append(v, &child, NULL) != 0 ||
                set_default(&child, item, depth + 1) != 0)
                return -1;
        }
        return 0;
    case AVRO_MAP:
        if (!json_is_object(def) || avro_value_reset(v) != 0)
            return -1;
        json_object_foreach(def, key, item)
        {
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
    for (size_t i = 0; i < record_fields[t->type].count; i++) {
        json_t *def = json_object_get(json_array_get(fields, i), "default");
        avro_value_t field;

        if (def == NULL)
            continue;
        if (avro_value_get_by_index(&t->defaults, i, &field, NULL) != 0 ||
            set_default(&field, def, 0) != 0) {
            mw_error_set(err, MW_ERR_CONFIG, false,
                         "the default of field \"%s\" of %s does not fit its "
                         "type",
                         record_fields[t->type].names[i], name);
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
        mw_error_set(err, MW_ERR_SYSTEM, false, "out of memory");
        return -1;
    }
    codec->registry = *registry;
    codec->writers_next = 0;
    codec->writers_last = 0;
    codec->has_registry = true;
    return 0;
}

uint64_t codec_fingerprint(const struct codec *codec, enum mw_record_type type)
{
    if ((int)type < 0 || type >= MW_REC_COUNT)
        return 0;
    return codec->types[type].fingerprint;
}
