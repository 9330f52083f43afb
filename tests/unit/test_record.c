/*
 * Unit tests of the record field tables: every row agrees with its schema
 * in schemas/ (name, order, type, the default JSON input takes), and every
 * record type, filled row by row with values that differ from row to row,
 * comes back equal through the codec and, for requests, through JSON.
 */
#include "arena.h"
#include "codec.h"
#include "convert.h"
#include "error.h"
#include "mw.h"
#include "record.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SEEDS 3

/* ---- Rows against schemas --------------------------------------------- */

static bool is_string_type(const json_t *type)
{
    if (json_is_object(type))
        type = json_object_get(type, "type");
    return json_is_string(type) &&
           strcmp(json_string_value(type), "string") == 0;
}

static bool is_time_type(const json_t *type)
{
    const json_t *logical = json_object_get(type, "logicalType");

    return json_is_object(type) &&
           strcmp(json_string_value(json_object_get(type, "type")), "long") ==
               0 &&
           json_is_string(logical) &&
           strcmp(json_string_value(logical), "timestamp-millis") == 0;
}

/* For ["null", T]: T, else NULL. */
static const json_t *optional_branch(const json_t *type)
{
    if (!json_is_array(type) || json_array_size(type) != 2 ||
        !json_is_string(json_array_get(type, 0)) ||
        strcmp(json_string_value(json_array_get(type, 0)), "null") != 0)
        return NULL;
    return json_array_get(type, 1);
}

static bool is_named(const json_t *type, const char *avro_type)
{
    const json_t *t = json_object_get(type, "type");

    return json_is_string(t) && strcmp(json_string_value(t), avro_type) == 0;
}

static void check_fields(const struct record_table *table,
                         const json_t *schema);

static void check_enum(const char *where, const struct record_field *f,
                       const json_t *type)
{
    const json_t *symbols = json_object_get(type, "symbols");

    if (!is_named(type, "enum") || json_array_size(symbols) != (size_t)f->limit)
        fail_msg("%s: expected an enum of %d symbols", where, f->limit);
    for (int i = 0; i < f->limit; i++) {
        const char *seen = json_string_value(json_array_get(symbols, i));

        if (seen == NULL || strcmp(seen, f->symbols[i]) != 0)
            fail_msg("%s: symbol %d: expected %s, seen %s", where, i,
                     f->symbols[i], seen ? seen : "(none)");
    }
}

/* Fails unless the schema type of a field is what row f says. */
static void check_type(const char *where, const struct record_field *f,
                       const json_t *type)
{
    const json_t *items = json_object_get(type, "items");
    bool is_ok = false;

    switch (f->kind) {
    case RECORD_STRING:
    case RECORD_TEXT:
        is_ok = is_string_type(type);
        break;
    case RECORD_OPTIONAL_STRING:
        is_ok = is_string_type(optional_branch(type));
        break;
    case RECORD_BOOLEAN:
    case RECORD_INT:
        is_ok = json_is_string(type) &&
                strcmp(json_string_value(type),
                       f->kind == RECORD_INT ? "int" : "boolean") == 0;
        break;
    case RECORD_TIME:
        is_ok = is_time_type(type);
        break;
    case RECORD_OPTIONAL_TIME:
        is_ok = is_time_type(optional_branch(type));
        break;
    case RECORD_OPTIONAL_INT:
    case RECORD_OPTIONAL_BOOLEAN:
        is_ok = json_is_string(optional_branch(type)) &&
                strcmp(json_string_value(optional_branch(type)),
                       f->kind == RECORD_OPTIONAL_INT ? "int" : "boolean") == 0;
        break;
    case RECORD_OPTIONAL_ENUM:
        is_ok = optional_branch(type) != NULL;
        if (is_ok)
            check_enum(where, f, optional_branch(type));
        break;
    case RECORD_ENUM:
        check_enum(where, f, type);
        is_ok = true;
        break;
    case RECORD_STRINGS:
        is_ok = is_named(type, "array") && is_string_type(items);
        break;
    case RECORD_RECORDS:
        is_ok = is_named(type, "array") && is_named(items, "record") &&
                f->array != NULL;
        if (is_ok)
            check_fields(f->array->item, items);
        break;
    }
    if (!is_ok)
        fail_msg("%s: the schema's type is not what the row's kind %d says",
                 where, (int)f->kind);
}

/*
 * Fails unless a field's schema default is what JSON input assumes for
 * an absent field of the row: null for optionals, [] for string arrays,
 * the boolean the row names, none for a required field.
 */
static void check_default(const char *where, const struct record_field *f,
                          const json_t *field, bool is_request)
{
    const json_t *def = json_object_get(field, "default");

    switch (f->kind) {
    case RECORD_OPTIONAL_STRING:
    case RECORD_OPTIONAL_TIME:
    case RECORD_OPTIONAL_INT:
    case RECORD_OPTIONAL_BOOLEAN:
    case RECORD_OPTIONAL_ENUM:
        if (!json_is_null(def))
            fail_msg("%s: expected the default null", where);
        return;
    case RECORD_STRINGS:
        if (!json_is_array(def) || json_array_size(def) != 0)
            fail_msg("%s: expected the default []", where);
        return;
    case RECORD_BOOLEAN:
        if (def == NULL && f->fallback == RECORD_REQUIRED)
            return;
        if (!json_is_boolean(def) ||
            json_is_true(def) != (f->fallback == RECORD_DEFAULT_TRUE))
            fail_msg("%s: the row's default is not the schema's", where);
        return;
    default:
        if (def != NULL)
            fail_msg("%s: the schema has a default the row ignores", where);
        if (is_request && f->fallback != RECORD_REQUIRED &&
            f->kind != RECORD_STRING && f->kind != RECORD_TIME)
            fail_msg("%s: only strings and times are made up", where);
        return;
    }
}

static void check_fields(const struct record_table *table, const json_t *schema)
{
    const json_t *fields = json_object_get(schema, "fields");
    bool is_request = strcmp(table->name, "CustomerRequested") == 0 ||
                      strcmp(table->name, "CustomerTerminationRequested") == 0;

    assert_string_equal(json_string_value(json_object_get(schema, "name")),
                        table->name);
    if (json_array_size(fields) != table->count)
        fail_msg("%s: %zu rows, %zu fields in the schema", table->name,
                 table->count, json_array_size(fields));
    for (size_t i = 0; i < table->count; i++) {
        const struct record_field *f = &table->fields[i];
        const json_t *field = json_array_get(fields, i);
        const char *name = json_string_value(json_object_get(field, "name"));
        char where[128];

        snprintf(where, sizeof(where), "%s.%s", table->name, f->name);
        if (name == NULL || strcmp(name, f->name) != 0)
            fail_msg("%s: row %zu, the schema's field is %s", where, i,
                     name ? name : "(none)");
        check_type(where, f, json_object_get(field, "type"));
        check_default(where, f, field, is_request);
    }
}

static void every_row_is_its_schema_field(void **state)
{
    const struct record_table *rejected;

    (void)state;
    for (int i = 0; i < MW_REC_COUNT; i++) {
        const struct record_table *table = record_table(i);
        json_error_t jerr;
        json_t *schema;

        assert_non_null(table);
        assert_true(table->count <= RECORD_MAX_FIELDS);
        assert_string_equal(table->name, mw_record_names[i]);
        schema = json_loads(codec_schema_json(table->name), 0, &jerr);
        if (schema == NULL)
            fail_msg("%s: %s", table->name, jerr.text);
        check_fields(table, schema);
        json_decref(schema);
    }
    assert_null(record_table(MW_REC_COUNT));
    rejected = record_table(MW_REC_CUSTOMER_REJECTED);
    assert_ptr_equal(rejected->fields[rejected->count - 1].array->item,
                     record_rejection_error_table());
}

/* ---- Records filled row by row ---------------------------------------- */

static void fill(const struct record_table *table, void *base, int seed,
                 struct mw_arena *arena);

static void fill_records(const struct record_field *f, void *base, int seed,
                         struct mw_arena *arena)
{
    const struct record_array *a = f->array;
    void *container = record_at(base, f->aux_offset);
    size_t count = seed == 0 ? 0 : seed == 1 ? a->max_items : 2;
    char *items = record_at(container, a->items_offset);

    *(void **)record_at(base, f->offset) = container;
    *(size_t *)record_at(container, a->count_offset) = count;
    for (size_t i = 0; i < count; i++)
        fill(a->item, items + i * a->item_size, seed + (int)i, arena);
}

/* Sets every row of table in base to a value that depends on seed. */
static void fill(const struct record_table *table, void *base, int seed,
                 struct mw_arena *arena)
{
    for (size_t i = 0; i < table->count; i++) {
        const struct record_field *f = &table->fields[i];
        void *at = record_at(base, f->offset);
        bool is_odd = (i + (size_t)seed) % 2 == 1;
        const char **items;

        switch (f->kind) {
        case RECORD_STRING:
            *(const char **)at = arena_printf(arena, "%s %d é", f->name, seed);
            break;
        case RECORD_OPTIONAL_STRING:
            *(const char **)at =
                is_odd ? arena_printf(arena, "%s", f->name) : NULL;
            break;
        case RECORD_TEXT:
            snprintf(at, (size_t)f->limit, "%s %d", f->name, seed);
            break;
        case RECORD_BOOLEAN:
            *(bool *)at = is_odd;
            break;
        case RECORD_INT:
            *(int32_t *)at = seed * 1000 + (int32_t)i;
            break;
        case RECORD_OPTIONAL_TIME:
            /* Null reads back as 0. */
            *(bool *)record_at(base, f->aux_offset) = is_odd;
            *(int64_t *)at = is_odd ? INT64_C(1764000000000) + seed : 0;
            break;
        case RECORD_OPTIONAL_INT:
            *(bool *)record_at(base, f->aux_offset) = is_odd;
            *(int32_t *)at = is_odd ? seed * 1000 + (int32_t)i : 0;
            break;
        case RECORD_OPTIONAL_BOOLEAN:
            *(bool *)record_at(base, f->aux_offset) = is_odd;
            *(bool *)at = is_odd && seed % 2 == 0;
            break;
        case RECORD_OPTIONAL_ENUM:
            *(bool *)record_at(base, f->aux_offset) = is_odd;
            *(int *)at =
                is_odd ? (int)((i + (size_t)seed) % (size_t)f->limit) : 0;
            break;
        case RECORD_TIME:
            *(int64_t *)at = INT64_C(1764000000000) + (int64_t)i * 1001 + seed;
            break;
        case RECORD_ENUM:
            *(int *)at = (int)((i + (size_t)seed) % (size_t)f->limit);
            break;
        case RECORD_STRINGS:
            items = arena_alloc(arena, 3 * sizeof(*items));
            for (int k = 0; k < 3; k++)
                items[k] = arena_printf(arena, "%d.example", seed + k);
            *(const char ***)at = items;
            *(size_t *)record_at(base, f->aux_offset) = (size_t)seed;
            break;
        case RECORD_RECORDS:
            fill_records(f, base, seed, arena);
            break;
        }
    }
}

static void check_same_string(const char *where, const char *want,
                              const char *seen)
{
    if (want == NULL && seen == NULL)
        return;
    if (want == NULL || seen == NULL || strcmp(want, seen) != 0)
        fail_msg("%s: expected \"%s\", seen \"%s\"", where,
                 want ? want : "(null)", seen ? seen : "(null)");
}

static void check_same(const char *record, const struct record_table *table,
                       const void *want, const void *seen);

static void check_same_records(const char *where, const struct record_field *f,
                               const void *want, const void *seen)
{
    const struct record_array *a = f->array;
    const char *w = *(const char *const *)record_at_const(want, f->offset);
    const char *s = *(const char *const *)record_at_const(seen, f->offset);
    size_t count = *(const size_t *)record_at_const(w, a->count_offset);

    assert_non_null(s);
    if (*(const size_t *)record_at_const(s, a->count_offset) != count)
        fail_msg("%s: item counts differ", where);
    for (size_t k = 0; k < count; k++) {
        size_t at = a->items_offset + k * a->item_size;

        check_same(where, a->item, w + at, s + at);
    }
}

/* Fails naming the first row whose value differs between want and seen. */
static void check_same(const char *record, const struct record_table *table,
                       const void *want, const void *seen)
{
    for (size_t i = 0; i < table->count; i++) {
        const struct record_field *f = &table->fields[i];
        const void *w = record_at_const(want, f->offset);
        const void *s = record_at_const(seen, f->offset);
        enum record_kind kind = f->kind;
        size_t n;

        if (!record_is_optional_scalar(f->kind, &kind))
            kind = f->kind;
        n = kind == RECORD_BOOLEAN ? sizeof(bool)
            : kind == RECORD_INT   ? sizeof(int32_t)
            : kind == RECORD_ENUM  ? sizeof(int)
                                   : sizeof(int64_t);
        char where[160];

        snprintf(where, sizeof(where), "%s.%s", record, f->name);
        switch (f->kind) {
        case RECORD_STRING:
        case RECORD_OPTIONAL_STRING:
            check_same_string(where, *(const char *const *)w,
                              *(const char *const *)s);
            break;
        case RECORD_TEXT:
            check_same_string(where, w, s);
            break;
        case RECORD_OPTIONAL_TIME:
        case RECORD_OPTIONAL_INT:
        case RECORD_OPTIONAL_BOOLEAN:
        case RECORD_OPTIONAL_ENUM:
            if (*(const bool *)record_at_const(want, f->aux_offset) !=
                *(const bool *)record_at_const(seen, f->aux_offset))
                fail_msg("%s: set in one record only", where);
            /* fall through */
        case RECORD_BOOLEAN:
        case RECORD_INT:
        case RECORD_TIME:
        case RECORD_ENUM:
            if (memcmp(w, s, n) != 0)
                fail_msg("%s: the values differ", where);
            break;
        case RECORD_STRINGS:
            n = *(const size_t *)record_at_const(want, f->aux_offset);
            if (*(const size_t *)record_at_const(seen, f->aux_offset) != n)
                fail_msg("%s: item counts differ", where);
            for (size_t k = 0; k < n; k++)
                check_same_string(where, (*(const char *const *const *)w)[k],
                                  (*(const char *const *const *)s)[k]);
            break;
        case RECORD_RECORDS:
            check_same_records(where, f, want, seen);
            break;
        }
    }
}

static void every_record_type_survives_the_codec(void **state)
{
    struct mw_error err = {0};
    struct codec *codec = codec_new(&err);
    struct mw_arena *arena = arena_new();

    (void)state;
    assert_non_null(codec);
    assert_non_null(arena);
    for (int type = 0; type < MW_REC_COUNT; type++) {
        for (int seed = 0; seed < SEEDS; seed++) {
            static struct mw_record rec, back;
            const void *buf, *again;
            size_t len, len2;
            enum codec_status status;

            memset(&rec, 0, sizeof(rec));
            rec.type = (enum mw_record_type)type;
            fill(record_table(rec.type), &rec, seed, arena);
            if (codec_encode(codec, &rec, arena, &buf, &len, &err) != 0)
                fail_msg("%s seed %d: %s", mw_record_names[type], seed,
                         err.msg);
            status = codec_decode(codec, buf, len, arena, &back, &err);
            if (status != CODEC_OK)
                fail_msg("%s seed %d: %s", mw_record_names[type], seed,
                         err.msg);
            assert_int_equal(back.type, type);
            check_same(mw_record_names[type], record_table(rec.type), &rec,
                       &back);
            assert_int_equal(
                codec_encode(codec, &back, arena, &again, &len2, &err), 0);
            assert_int_equal(len, len2);
            assert_memory_equal(buf, again, len);
            arena_reset(arena);
        }
    }
    arena_destroy(arena);
    codec_destroy(codec);
}

/* The members of obj are "type" and then the rows of table, in order. */
static void check_members_in_order(const json_t *obj,
                                   const struct record_table *table)
{
    void *iter = json_object_iter((json_t *)obj);
    size_t i = 0;

    assert_non_null(iter);
    assert_string_equal(json_object_iter_key(iter), "type");
    assert_string_equal(json_string_value(json_object_iter_value(iter)),
                        table->name);
    for (iter = json_object_iter_next((json_t *)obj, iter); iter != NULL;
         iter = json_object_iter_next((json_t *)obj, iter), i++) {
        if (i >= table->count ||
            strcmp(json_object_iter_key(iter), table->fields[i].name) != 0)
            fail_msg("%s: member %zu is %s", table->name, i + 1,
                     json_object_iter_key(iter));
    }
    assert_int_equal(i, table->count);
}

static void every_record_type_prints_and_requests_read_back(void **state)
{
    struct mw_arena *arena = arena_new();
    struct mw_error err = {0};

    (void)state;
    assert_non_null(arena);
    for (int type = 0; type < MW_REC_COUNT; type++) {
        for (int seed = 0; seed < SEEDS; seed++) {
            static struct mw_record rec, back;
            const struct record_table *table = record_table(type);
            json_t *obj;

            memset(&rec, 0, sizeof(rec));
            rec.type = (enum mw_record_type)type;
            fill(table, &rec, seed, arena);
            obj = convert_record_to_json(&rec);
            assert_non_null(obj);
            check_members_in_order(obj, table);
            if (type == MW_REC_CUSTOMER_REQUESTED ||
                type == MW_REC_CUSTOMER_TERMINATION_REQUESTED ||
                type == MW_REC_CUSTOMER_UPDATE_REQUESTED) {
                if (convert_record_from_json(obj, arena, &back, &err) != 0)
                    fail_msg("%s seed %d: %s", table->name, seed, err.msg);
                assert_int_equal(back.type, type);
                check_same(table->name, table, &rec, &back);
            }
            json_decref(obj);
            arena_reset(arena);
        }
    }
    arena_destroy(arena);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_row_is_its_schema_field),
        cmocka_unit_test(every_record_type_survives_the_codec),
        cmocka_unit_test(every_record_type_prints_and_requests_read_back),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
