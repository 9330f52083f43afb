/*
 * Records to and from plain JSON for people and tools: `produce` builds a
 * request from JSON, `tail` prints any record as one JSON object.  Not on
 * the hot path, and not a validator: it checks JSON types, enum symbols
 * and times, and leaves lengths and syntax to the rules module, so that an
 * operator can produce a request the worker will reject.
 *
 * Invariant: a JSON object written here has "type" first and then the
 * fields in the order of the Avro schema, with the schema's names, so that
 * `tail` output reads like the contract in schemas/.  Both directions walk
 * the field tables of record.h, so a new field needs no code here.
 */
#include "convert.h"
#include "record.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uuid/uuid.h>

#define MS_PER_DAY INT64_C(86400000)

/* ---- Times ------------------------------------------------------------ */

/* Floor division, which C's / is not for negative numbers. */
static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;

    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/*
 * Days since 1970-01-01 of a proleptic Gregorian date, and back (Howard
 * Hinnant's algorithms, exact for every int64 millisecond).
 */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    int64_t era, yoe, doy, doe;

    y -= m <= 2;
    era = floor_div(y, 400);
    yoe = y - era * 400;
    doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
    int64_t era, doe, yoe, doy, mp;

    z += 719468;
    era = floor_div(z, 146097);
    doe = z - era * 146097;
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

void convert_format_time(int64_t ms, char out[32])
{
    int64_t days = floor_div(ms, MS_PER_DAY);
    int64_t rest = ms % MS_PER_DAY; /* days * MS_PER_DAY may overflow */
    int64_t year;
    int month, day;

    if (rest < 0)
        rest += MS_PER_DAY;
    civil_from_days(days, &year, &month, &day);
    snprintf(out, 32, "%04" PRId64 "-%02d-%02dT%02d:%02d:%02d.%03dZ", year,
             month, day, (int)(rest / 3600000), (int)(rest / 60000 % 60),
             (int)(rest / 1000 % 60), (int)(rest % 1000));
}

/* Reads exactly n digits at *p; returns -1 if they are not there. */
static int read_digits(const char **p, int n, int *out)
{
    int v = 0;

    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)(*p)[i]))
            return -1;
        v = v * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *out = v;
    return 0;
}

static int expect_char(const char **p, char c)
{
    if (**p != c)
        return -1;
    (*p)++;
    return 0;
}

static bool is_leap(int year)
{
    return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
}

static int parse_epoch_ms(const char *s, int64_t *ms)
{
    char *end;
    long long v;

    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0')
        return -1;
    *ms = v;
    return 0;
}

int convert_parse_time(const char *s, int64_t *ms)
{
    static const int month_days[12] = {31, 28, 31, 30, 31, 30,
                                       31, 31, 30, 31, 30, 31};
    const char *p = s;
    int year, month, day, hour, minute, second, millis = 0;

    if (s == NULL || *s == '\0')
        return -1;
    if (strspn(s + (*s == '-'), "0123456789") == strlen(s + (*s == '-')))
        return parse_epoch_ms(s, ms);
    if (read_digits(&p, 4, &year) || expect_char(&p, '-') ||
        read_digits(&p, 2, &month) || expect_char(&p, '-') ||
        read_digits(&p, 2, &day) || expect_char(&p, 'T') ||
        read_digits(&p, 2, &hour) || expect_char(&p, ':') ||
        read_digits(&p, 2, &minute) || expect_char(&p, ':') ||
        read_digits(&p, 2, &second))
        return -1;
    if (*p == '.') {
        int digits = 0;

        /* Up to nanoseconds; what is below a millisecond is dropped. */
        for (p++; isdigit((unsigned char)*p) && digits < 9; p++, digits++) {
            if (digits < 3)
                millis = millis * 10 + (*p - '0');
        }
        if (digits == 0)
            return -1;
        for (; digits < 3; digits++)
            millis *= 10;
    }
    if (strcmp(p, "Z") != 0)
        return -1;
    if (month < 1 || month > 12 || day < 1 || hour > 23 || minute > 59 ||
        second > 59)
        return -1;
    if (day > month_days[month - 1] + (month == 2 && is_leap(year)))
        return -1;
    *ms = days_from_civil(year, month, day) * MS_PER_DAY +
          (int64_t)hour * 3600000 + minute * 60000 + second * 1000 + millis;
    return 0;
}

/* ---- JSON to record --------------------------------------------------- */

/*
 * Reads the fields of one JSON object.  The first failure is kept in err
 * and makes later calls return defaults, so a record is read as a flat
 * list of calls checked once at the end.
 */
struct from {
    const json_t *obj;
    struct mw_arena *arena;
    struct mw_error *err;
    bool failed;
};

static void from_fail(struct from *f, const char *fmt, ...) MW_PRINTF(2, 3);

static void from_fail(struct from *f, const char *fmt, ...)
{
    char msg[sizeof(f->err->msg)];
    va_list ap;

    if (f->failed)
        return;
    f->failed = true;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    mw_error_set(f->err, MW_ERR_INPUT, false, "%s", msg);
}

/* Out of memory: not the input's fault (see mw_error_no_memory). */
static void from_no_memory(struct from *f, const char *name)
{
    if (f->failed)
        return;
    f->failed = true;
    mw_error_set(f->err, MW_ERR_SYSTEM, true,
                 "out of memory reading field \"%s\"", name);
}

static const char *json_type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a number with a fraction";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "unknown";
}

/* Returns the member name, or NULL when absent (or failed already). */
static const json_t *from_member(struct from *f, const char *name,
                                 bool is_required)
{
    const json_t *v;

    if (f->failed)
        return NULL;
    v = json_object_get(f->obj, name);
    if (v == NULL && is_required)
        from_fail(f, "missing required field \"%s\"", name);
    return v;
}

static void from_wrong_type(struct from *f, const char *name, const char *want,
                            const json_t *v)
{
    from_fail(f, "field \"%s\" must be %s, not %s", name, want,
              json_type_name(v));
}

/* An arena copy of a JSON string; "\u0000" inside is refused. */
static const char *copy_json_string(struct from *f, const char *name,
                                    const json_t *v)
{
    const char *s = json_string_value(v);
    size_t len = json_string_length(v);
    const char *copy;

    if (memchr(s, '\0', len) != NULL) {
        from_fail(f, "field \"%s\" contains a NUL character", name);
        return NULL;
    }
    copy = arena_strndup(f->arena, s, len);
    if (copy == NULL)
        from_no_memory(f, name);
    return copy;
}

static const char *from_string(struct from *f, const char *name)
{
    const json_t *v = from_member(f, name, true);

    if (v == NULL)
        return NULL;
    if (!json_is_string(v)) {
        from_wrong_type(f, name, "a string", v);
        return NULL;
    }
    return copy_json_string(f, name, v);
}

/* A null|string field: absent and null are NULL. */
static const char *from_optional_string(struct from *f, const char *name)
{
    const json_t *v = from_member(f, name, false);

    if (v == NULL || json_is_null(v))
        return NULL;
    if (!json_is_string(v)) {
        from_wrong_type(f, name, "a string or null", v);
        return NULL;
    }
    return copy_json_string(f, name, v);
}

static int32_t from_int(struct from *f, const char *name)
{
    const json_t *v = from_member(f, name, true);
    json_int_t n;

    if (v == NULL)
        return 0;
    if (!json_is_integer(v)) {
        from_wrong_type(f, name, "an integer", v);
        return 0;
    }
    n = json_integer_value(v);
    if (n < INT32_MIN || n > INT32_MAX) {
        from_fail(f, "field \"%s\" is out of range: %" JSON_INTEGER_FORMAT,
                  name, n);
        return 0;
    }
    return (int32_t)n;
}

/* A boolean field: absent is its default (an error when required). */
static bool from_boolean(struct from *f, const char *name,
                         enum record_default fallback)
{
    const json_t *v = from_member(f, name, fallback == RECORD_REQUIRED);
    bool is_true = fallback == RECORD_DEFAULT_TRUE;

    if (v == NULL)
        return is_true;
    if (!json_is_boolean(v)) {
        from_wrong_type(f, name, "true or false", v);
        return is_true;
    }
    return json_is_true(v);
}

/* A time is epoch milliseconds or an ISO-8601 UTC string. */
static int64_t time_value(struct from *f, const char *name, const json_t *v)
{
    int64_t ms = 0;

    if (json_is_integer(v))
        return json_integer_value(v);
    if (!json_is_string(v)) {
        from_wrong_type(f, name, "a time (a string or epoch milliseconds)", v);
        return 0;
    }
    if (convert_parse_time(json_string_value(v), &ms) != 0) {
        from_fail(f, "invalid time for field \"%s\": \"%s\"", name,
                  json_string_value(v));
        mw_error_hint(f->err, "Use an ISO-8601 UTC time such as "
                              "\"2026-11-25T06:05:25.123Z\" or epoch "
                              "milliseconds.");
    }
    return ms;
}

/* A time field: absent is now or, when required, an error. */
static int64_t from_time(struct from *f, const char *name,
                         enum record_default fallback)
{
    const json_t *v = from_member(f, name, fallback != RECORD_DEFAULT_NOW);

    if (v == NULL)
        return fallback == RECORD_DEFAULT_NOW ? mw_now_ms() : 0;
    return time_value(f, name, v);
}

/* A null|int field: returns false for absent or null. */
static bool from_optional_int(struct from *f, const char *name, int32_t *n)
{
    const json_t *v = from_member(f, name, false);

    *n = 0;
    if (v == NULL || json_is_null(v))
        return false;
    *n = from_int(f, name);
    return !f->failed;
}

/* A null|boolean field: returns false for absent or null. */
static bool from_optional_boolean(struct from *f, const char *name, bool *b)
{
    const json_t *v = from_member(f, name, false);

    *b = false;
    if (v == NULL || json_is_null(v))
        return false;
    *b = from_boolean(f, name, RECORD_REQUIRED);
    return !f->failed;
}

/* A null|time field: returns false for absent or null. */
static bool from_optional_time(struct from *f, const char *name, int64_t *ms)
{
    const json_t *v = from_member(f, name, false);

    *ms = 0;
    if (v == NULL || json_is_null(v))
        return false;
    *ms = time_value(f, name, v);
    return !f->failed;
}

static int from_enum(struct from *f, const char *name, const char *const *names,
                     int count)
{
    const json_t *v = from_member(f, name, true);
    char allowed[256] = "";
    size_t used = 0;
    int index;

    if (v == NULL)
        return 0;
    if (!json_is_string(v)) {
        from_wrong_type(f, name, "a string", v);
        return 0;
    }
    index = mw_enum_lookup(names, count, json_string_value(v));
    if (index >= 0)
        return index;
    for (int i = 0; i < count && used < sizeof(allowed); i++) {
        int n = snprintf(allowed + used, sizeof(allowed) - used, "%s%s",
                         i > 0 ? ", " : "", names[i]);

        if (n < 0)
            break;
        used += (size_t)n;
    }
    from_fail(f, "unknown symbol \"%s\" for field \"%s\"", json_string_value(v),
              name);
    mw_error_detail(f->err, "Allowed symbols: %s.", allowed);
    return 0;
}

/* A null|enum field: returns false for absent or null. */
static bool from_optional_enum(struct from *f, const struct record_field *field,
                               int *value)
{
    const json_t *v = from_member(f, field->name, false);

    *value = 0;
    if (v == NULL || json_is_null(v))
        return false;
    *value = from_enum(f, field->name, field->symbols, field->limit);
    return !f->failed;
}

static const char **from_string_array(struct from *f, const char *name,
                                      size_t *count)
{
    const json_t *v = from_member(f, name, false);
    const char **items;
    size_t n;

    *count = 0;
    if (v == NULL)
        return NULL;
    if (!json_is_array(v)) {
        from_wrong_type(f, name, "an array of strings", v);
        return NULL;
    }
    n = json_array_size(v);
    items = arena_alloc(f->arena, (n > 0 ? n : 1) * sizeof(*items));
    if (items == NULL) {
        from_no_memory(f, name);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        const json_t *item = json_array_get(v, i);

        if (!json_is_string(item)) {
            from_fail(f, "item %zu of field \"%s\" must be a string, not %s", i,
                      name, json_type_name(item));
            return NULL;
        }
        items[i] = copy_json_string(f, name, item);
    }
    *count = n;
    return items;
}

/* A string field, or with RECORD_DEFAULT_NEW_ID a new UUID when absent. */
static const char *from_id_or_string(struct from *f,
                                     const struct record_field *field)
{
    char text[37];
    uuid_t id;
    const char *copy;

    if (field->fallback != RECORD_DEFAULT_NEW_ID || f->failed ||
        json_object_get(f->obj, field->name) != NULL)
        return from_string(f, field->name);
    uuid_generate_random(id);
    uuid_unparse_lower(id, text);
    copy = arena_strdup(f->arena, text);
    if (copy == NULL)
        from_no_memory(f, field->name);
    return copy;
}

/* Fails on a member that is not "type" or a field of table. */
static void check_members(struct from *f, const struct record_table *table)
{
    const char *key;
    json_t *value;

    json_object_foreach((json_t *)f->obj, key, value) {
        bool is_known = strcmp(key, "type") == 0;

        (void)value;
        for (size_t i = 0; !is_known && i < table->count; i++)
            is_known = strcmp(key, table->fields[i].name) == 0;
        if (!is_known) {
            from_fail(f, "unknown field \"%s\" in a %s", key, table->name);
            mw_error_hint(f->err,
                          "Field names are those of "
                          "schemas/%s.avsc.",
                          table->name);
            return;
        }
    }
}

/* Reads the value of row field into base. */
static void from_value(struct from *f, const struct record_field *field,
                       void *base)
{
    const char *name = field->name;
    void *at = record_at(base, field->offset);

    switch (field->kind) {
    case RECORD_STRING:
        *(const char **)at = from_id_or_string(f, field);
        return;
    case RECORD_OPTIONAL_STRING:
        *(const char **)at = from_optional_string(f, name);
        return;
    case RECORD_BOOLEAN:
        *(bool *)at = from_boolean(f, name, field->fallback);
        return;
    case RECORD_INT:
        *(int32_t *)at = from_int(f, name);
        return;
    case RECORD_TIME:
        *(int64_t *)at = from_time(f, name, field->fallback);
        return;
    case RECORD_OPTIONAL_TIME:
        *(bool *)record_at(base, field->aux_offset) =
            from_optional_time(f, name, at);
        return;
    case RECORD_ENUM:
        *(int *)at = from_enum(f, name, field->symbols, field->limit);
        return;
    case RECORD_OPTIONAL_INT:
        *(bool *)record_at(base, field->aux_offset) =
            from_optional_int(f, name, at);
        return;
    case RECORD_OPTIONAL_BOOLEAN:
        *(bool *)record_at(base, field->aux_offset) =
            from_optional_boolean(f, name, at);
        return;
    case RECORD_OPTIONAL_ENUM:
        *(bool *)record_at(base, field->aux_offset) =
            from_optional_enum(f, field, at);
        return;
    case RECORD_STRINGS:
        *(const char ***)at =
            from_string_array(f, name, record_at(base, field->aux_offset));
        return;
    case RECORD_TEXT:
    case RECORD_RECORDS:
        /* Only requests are read, and they hold no nested records. */
        from_fail(f, "field \"%s\" cannot be read from JSON", name);
        return;
    }
}

/* The type named by "type" that JSON may build, or MW_REC_COUNT. */
static enum mw_record_type request_type(const char *name)
{
    static const enum mw_record_type requests[] = {
        MW_REC_CUSTOMER_REQUESTED,
        MW_REC_CUSTOMER_TERMINATION_REQUESTED,
        MW_REC_CUSTOMER_UPDATE_REQUESTED,
    };

    for (size_t i = 0; i < sizeof(requests) / sizeof(requests[0]); i++) {
        if (strcmp(name, mw_record_names[requests[i]]) == 0)
            return requests[i];
    }
    return MW_REC_COUNT;
}

int convert_record_from_json(const json_t *obj, struct mw_arena *arena,
                             struct mw_record *rec, struct mw_error *err)
{
    struct from f = {.obj = obj, .arena = arena, .err = err};
    const struct record_table *table;
    const json_t *type;
    const char *name = mw_record_names[MW_REC_CUSTOMER_REQUESTED];

    if (!json_is_object(obj)) {
        mw_error_set(err, MW_ERR_INPUT, false,
                     "a request must be a JSON object, not %s",
                     obj ? json_type_name(obj) : "nothing");
        return -1;
    }
    type = json_object_get(obj, "type");
    if (type != NULL && !json_is_string(type)) {
        from_wrong_type(&f, "type", "a string", type);
        return -1;
    }
    if (type != NULL)
        name = json_string_value(type);
    memset(&rec->u, 0, sizeof(rec->u));
    rec->type = request_type(name);
    if (rec->type == MW_REC_COUNT) {
        mw_error_set(err, MW_ERR_INPUT, false,
                     "cannot produce a record of type \"%s\"", name);
        mw_error_hint(err, "Use \"CustomerRequested\" (the default), "
                           "\"CustomerTerminationRequested\" or "
                           "\"CustomerUpdateRequested\".");
        return -1;
    }
    table = record_table(rec->type);
    check_members(&f, table);
    for (size_t i = 0; i < table->count; i++)
        from_value(&f, &table->fields[i], rec);
    return f.failed ? -1 : 0;
}

/* ---- Record to JSON --------------------------------------------------- */

static json_t *string_json(const char *s)
{
    return s != NULL ? json_string(s) : json_null();
}

/* 0001-01-01 and 10000-01-01, in epoch milliseconds. */
#define FIRST_ISO_MS (-62135596800000LL)
#define END_ISO_MS 253402300800000LL

/*
 * A time as an ISO-8601 UTC string; one outside years 1 to 9999, which
 * such a string cannot hold, as epoch milliseconds (both read back).
 */
static json_t *time_json(int64_t ms)
{
    char text[32];

    if (ms < FIRST_ISO_MS || ms >= END_ISO_MS)
        return json_integer(ms);
    convert_format_time(ms, text);
    return json_string(text);
}

static json_t *strings_json(const char *const *items, size_t count)
{
    json_t *list = json_array();

    for (size_t i = 0; list != NULL && i < count; i++) {
        if (json_array_append_new(list,
                                  json_string(items[i] ? items[i] : "")) != 0) {
            json_decref(list);
            list = NULL;
        }
    }
    return list;
}

static int add_fields(json_t *obj, const struct record_table *table,
                      const void *base);

/* Nested records as an array of objects; no container is no items. */
static json_t *records_json(const struct record_field *field, const void *base)
{
    const struct record_array *a = field->array;
    const void *container =
        *(const void *const *)record_at_const(base, field->offset);
    json_t *list = json_array();
    const char *items;
    size_t count = 0;

    if (container != NULL)
        count = *(const size_t *)record_at_const(container, a->count_offset);
    items = container ? record_at_const(container, a->items_offset) : NULL;
    for (size_t i = 0; list != NULL && i < count; i++) {
        json_t *item = json_object();

        if (item != NULL &&
            add_fields(item, a->item, items + i * a->item_size) != 0) {
            json_decref(item);
            item = NULL;
        }
        /* json_array_append_new() takes item, also when it fails. */
        if (item == NULL || json_array_append_new(list, item) != 0) {
            json_decref(list);
            list = NULL;
        }
    }
    return list;
}

/* The JSON of a scalar of kind at at; an enum out of range is its number. */
static json_t *scalar_json(const struct record_field *field,
                           enum record_kind kind, const void *at)
{
    int v;

    switch (kind) {
    case RECORD_BOOLEAN:
        return json_boolean(*(const bool *)at);
    case RECORD_INT:
        return json_integer(*(const int32_t *)at);
    case RECORD_TIME:
        return time_json(*(const int64_t *)at);
    case RECORD_ENUM:
        v = *(const int *)at;
        return v >= 0 && v < field->limit ? json_string(field->symbols[v])
                                          : json_integer(v);
    default:
        return NULL;
    }
}

/* The JSON of row field read from base, or NULL when out of memory. */
static json_t *value_json(const struct record_field *field, const void *base)
{
    const void *at = record_at_const(base, field->offset);
    enum record_kind scalar;

    if (record_is_optional_scalar(field->kind, &scalar)) {
        if (!*(const bool *)record_at_const(base, field->aux_offset))
            return json_null();
        return scalar_json(field, scalar, at);
    }
    switch (field->kind) {
    case RECORD_STRING:
    case RECORD_OPTIONAL_STRING:
        return string_json(*(const char *const *)at);
    case RECORD_TEXT:
        return json_string(at);
    case RECORD_STRINGS:
        return strings_json(
            *(const char *const *const *)at,
            *(const size_t *)record_at_const(base, field->aux_offset));
    case RECORD_RECORDS:
        return records_json(field, base);
    default:
        return scalar_json(field, field->kind, at);
    }
}

/* Adds the rows of table read from base to obj.  0, or -1 (memory). */
static int add_fields(json_t *obj, const struct record_table *table,
                      const void *base)
{
    for (size_t i = 0; i < table->count; i++) {
        json_t *v = value_json(&table->fields[i], base);

        /* json_object_set_new() takes v, also when it fails. */
        if (v == NULL ||
            json_object_set_new(obj, table->fields[i].name, v) != 0)
            return -1;
    }
    return 0;
}

json_t *convert_record_to_json(const struct mw_record *rec)
{
    const struct record_table *table = record_table(rec->type);
    json_t *obj = json_object();

    if (obj == NULL || table == NULL ||
        json_object_set_new(obj, "type",
                            json_string(mw_record_names[rec->type])) != 0 ||
        add_fields(obj, table, rec) != 0) {
        json_decref(obj);
        return NULL;
    }
    return obj;
}
