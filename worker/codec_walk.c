/*
 * The bounded walk: checks that bytes are exactly one Avro binary value
 * of a schema, reading every length and count against what is left and
 * allocating nothing.  It does not copy values out (codec_value.c does,
 * through avro-c) nor judge their content.
 *
 * Invariant: avro-c never sees bytes this walk has not passed first.
 * avro-c allocates a string's length before reading it and trusts array
 * block counts, so every value is first walked, driven by the writer's
 * schema, and must be consumed exactly; only then does avro_value_read()
 * run, and it can no longer run out of input or be asked for more memory
 * than the message holds.  Array and map items together are bounded by
 * the value's length, and nesting by CODEC_MAX_DEPTH.
 */
#include "codec_internal.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>

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

    if (depth > CODEC_MAX_DEPTH)
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

int codec_walk_value(avro_schema_t schema, const void *buf, size_t len,
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

int codec_walk_branch(const void *buf, size_t len, size_t branches,
                      size_t *branch, size_t *used, struct mw_error *err)
{
    struct walk w = {.start = buf,
                     .p = buf,
                     .end = (const unsigned char *)buf + len,
                     .err = err};
    int64_t n = 0;

    if (walk_long(&w, &n) != 0)
        return -1;
    if (n < 0 || (uint64_t)n >= branches)
        return walk_fail(&w,
                         "union branch %" PRId64 " is not one of the %zu "
                         "branches",
                         n, branches);
    *branch = (size_t)n;
    *used = (size_t)(w.p - w.start);
    return 0;
}
