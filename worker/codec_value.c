/*
 * Records in and out of avro-c's generic values, driven by the field
 * tables of record.h: one function a kind of field, whatever the record,
 * so a new field needs no code here.  Encoding checks what the schema
 * cannot hold (null in a required string, an enum out of range, too many
 * nested items); decoding copies every string into the caller's arena
 * and refuses NUL bytes.  It does not frame, walk or resolve (codec.c,
 * codec_walk.c, codec_resolve.c do).
 *
 * Invariant: a value handed to codec_value_take() has been walked first
 * (codec_walk.c), and the rows of a table are its schema's fields in
 * order (codec_new() checks), so a field is addressed by its row index.
 * Known limit: avro-c mallocs each string it reads and each string item
 * it writes after an array is cleared.
 */
#include "codec_internal.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

/*
 * A row's value is at its offset from base, which is the struct
 * mw_record for a record's rows and the item's struct for a nested
 * record's.
 */

/* ---- Encoding --------------------------------------------------------- */

/* avro-c refused a value of field name: err says why; returns -1. */
static int put_refused(const char *name, int rc, struct mw_error *err)
{
    mw_error_set(err, rc == ENOMEM ? MW_ERR_SYSTEM : MW_ERR_INPUT, rc == ENOMEM,
                 "could not encode field \"%s\": %s", name, avro_strerror());
    return -1;
}

/* Sets a ["null", T] field to its null branch; on T returns 1 and branch. */
static int put_union(const char *name, avro_value_t *field, bool is_null,
                     avro_value_t *branch, struct mw_error *err)
{
    int rc = avro_value_set_branch(field, is_null ? 0 : 1, branch);

    if (rc == 0 && is_null)
        rc = avro_value_set_null(branch);
    if (rc != 0)
        return put_refused(name, rc, err);
    return is_null ? 0 : 1;
}

static int put_string(const char *name, avro_value_t *field, const char *s,
                      struct mw_error *err)
{
    int rc;

    if (s == NULL) {
        mw_error_set(err, MW_ERR_INPUT, false,
                     "cannot encode field \"%s\": it is null but required",
                     name);
        return -1;
    }
    rc = avro_value_set_string(field, s);
    return rc != 0 ? put_refused(name, rc, err) : 0;
}

static int put_enum(const struct record_field *f, avro_value_t *field, int v,
                    struct mw_error *err)
{
    int rc;

    if (v < 0 || v >= f->limit) {
        mw_error_set(err, MW_ERR_INPUT, false,
                     "cannot encode field \"%s\": enum value %d is out of "
                     "range",
                     f->name, v);
        mw_error_detail(err, "The enum has %d symbols.", f->limit);
        return -1;
    }
    rc = avro_value_set_enum(field, v);
    return rc != 0 ? put_refused(f->name, rc, err) : 0;
}

static int put_strings(const struct record_field *f, avro_value_t *field,
                       const void *base, struct mw_error *err)
{
    const char *const *items =
        *(const char *const *const *)record_at_const(base, f->offset);
    size_t count = *(const size_t *)record_at_const(base, f->aux_offset);
    avro_value_t item;
    int rc = avro_value_reset(field);

    if (rc != 0)
        return put_refused(f->name, rc, err);
    if (count > 0 && items == NULL) {
        mw_error_set(err, MW_ERR_INPUT, false,
                     "cannot encode field \"%s\": %zu items but no array",
                     f->name, count);
        return -1;
    }
    for (size_t i = 0; i < count; i++) {
        if (items[i] == NULL) {
            mw_error_set(err, MW_ERR_INPUT, false,
                         "cannot encode field \"%s\": item %zu is null",
                         f->name, i);
            return -1;
        }
        rc = avro_value_append(field, &item, NULL);
        if (rc == 0)
            rc = avro_value_set_string(&item, items[i]);
        if (rc != 0)
            return put_refused(f->name, rc, err);
    }
    return 0;
}

static int put_fields(const struct record_table *table, const void *base,
                      avro_value_t *record, struct mw_error *err);

/* An array of nested records, from the container the row points to. */
static int put_records(const struct record_field *f, avro_value_t *field,
                       const void *base, struct mw_error *err)
{
    const struct record_array *a = f->array;
    const void *container =
        *(const void *const *)record_at_const(base, f->offset);
    const char *items;
    size_t count = 0;
    avro_value_t item;
    int rc = avro_value_reset(field);

    if (rc != 0)
        return put_refused(f->name, rc, err);
    if (container != NULL)
        count = *(const size_t *)record_at_const(container, a->count_offset);
    if (container == NULL || count > a->max_items) {
        mw_error_set(err, MW_ERR_INPUT, false,
                     "cannot encode field \"%s\": no valid %s", f->name,
                     a->noun);
        return -1;
    }
    items = record_at_const(container, a->items_offset);
    for (size_t i = 0; i < count; i++) {
        rc = avro_value_append(field, &item, NULL);
        if (rc != 0)
            return put_refused(f->name, rc, err);
        if (put_fields(a->item, items + i * a->item_size, &item, err) != 0)
            return -1;
    }
    return 0;
}

/* Writes a scalar of kind (the row's, or what its union holds). */
static int put_scalar(const struct record_field *f, enum record_kind kind,
                      avro_value_t *field, const void *at, struct mw_error *err)
{
    int rc = 0;

    switch (kind) {
    case RECORD_BOOLEAN:
        rc = avro_value_set_boolean(field, *(const bool *)at ? 1 : 0);
        break;
    case RECORD_INT:
        rc = avro_value_set_int(field, *(const int32_t *)at);
        break;
    case RECORD_TIME:
        rc = avro_value_set_long(field, *(const int64_t *)at);
        break;
    case RECORD_ENUM:
        return put_enum(f, field, *(const int *)at, err);
    default:
        mw_error_set(err, MW_ERR_INPUT, false,
                     "cannot encode field \"%s\": it is not a scalar", f->name);
        return -1;
    }
    return rc != 0 ? put_refused(f->name, rc, err) : 0;
}

/* Writes the value of row f, read from base, into field. */
static int put_value(const struct record_field *f, avro_value_t *field,
                     const void *base, struct mw_error *err)
{
    const void *at = record_at_const(base, f->offset);
    enum record_kind scalar;
    avro_value_t branch;
    int rc = 0;

    if (record_is_optional_scalar(f->kind, &scalar)) {
        rc = put_union(f->name, field,
                       !*(const bool *)record_at_const(base, f->aux_offset),
                       &branch, err);
        return rc <= 0 ? rc : put_scalar(f, scalar, &branch, at, err);
    }
    switch (f->kind) {
    case RECORD_STRING:
        return put_string(f->name, field, *(const char *const *)at, err);
    case RECORD_TEXT:
        return put_string(f->name, field, at, err);
    case RECORD_OPTIONAL_STRING:
        rc = put_union(f->name, field, *(const char *const *)at == NULL,
                       &branch, err);
        return rc <= 0 ? rc
                       : put_string(f->name, &branch, *(const char *const *)at,
                                    err);
    case RECORD_STRINGS:
        return put_strings(f, field, base, err);
    case RECORD_RECORDS:
        return put_records(f, field, base, err);
    default:
        return put_scalar(f, f->kind, field, at, err);
    }
}

/* Fills the generic record from the rows of table read from base. */
static int put_fields(const struct record_table *table, const void *base,
                      avro_value_t *record, struct mw_error *err)
{
    avro_value_t field;
    int rc;

    for (size_t i = 0; i < table->count; i++) {
        const struct record_field *f = &table->fields[i];

        rc = avro_value_get_by_index(record, i, &field, NULL);
        if (rc != 0)
            return put_refused(f->name, rc, err);
        if (put_value(f, &field, base, err) != 0)
            return -1;
    }
    return 0;
}

int codec_value_put(const struct mw_record *rec, avro_value_t *value,
                    struct mw_error *err)
{
    return put_fields(record_table(rec->type), rec, value, err);
}

/* ---- Decoding --------------------------------------------------------- */

/*
 * Copies a decoded generic record into the domain structs, row by row.
 * The first failure is the verdict: it fills err and stops the copy.
 */
struct take {
    struct mw_arena *arena;
    struct mw_error *err;
};

static enum codec_status take_fail(struct take *t, const char *name,
                                   const char *reason)
{
    mw_error_set(t->err, MW_ERR_DECODE, false,
                 "could not decode field \"%s\": %s", name, reason);
    return CODEC_CORRUPT_AVRO;
}

/* Not the value's fault: retriable, see codec_decode(). */
static enum codec_status take_no_memory(struct take *t, const char *name)
{
    mw_error_set(t->err, MW_ERR_SYSTEM, true,
                 "out of memory decoding field \"%s\"", name);
    return CODEC_CORRUPT_AVRO;
}

/* An arena copy of a string value into *out; NUL bytes are refused. */
static enum codec_status take_string(struct take *t, const char *name,
                                     avro_value_t *v, const char **out)
{
    const char *s = NULL;
    size_t size = 0;

    if (avro_value_get_string(v, &s, &size) != 0)
        return take_fail(t, name, avro_strerror());
    /* size counts avro-c's terminating NUL, when there is a buffer. */
    if (size > 0)
        size--;
    if (size > 0 && memchr(s, '\0', size) != NULL)
        return take_fail(t, name, "the string contains a NUL byte");
    *out = arena_strndup(t->arena, size > 0 ? s : "", size);
    return *out == NULL ? take_no_memory(t, name) : CODEC_OK;
}

/* For a ["null", T] field: *is_set false for null, else true and branch. */
static enum codec_status take_union(struct take *t, const char *name,
                                    avro_value_t *field, avro_value_t *branch,
                                    bool *is_set)
{
    int discriminant;

    if (avro_value_get_discriminant(field, &discriminant) != 0 ||
        avro_value_get_current_branch(field, branch) != 0)
        return take_fail(t, name, avro_strerror());
    *is_set = discriminant == 1;
    return CODEC_OK;
}

/*
 * Copies s into a buffer of size bytes, cutting at a UTF-8 boundary.
 * Known limit: a peer's message longer than 255 bytes is shortened, since
 * struct mw_rejection_error holds no more.
 */
static void copy_text(char *out, size_t size, const char *s)
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

static enum codec_status take_strings(struct take *t,
                                      const struct record_field *f,
                                      avro_value_t *field, void *base)
{
    const char ***out = record_at(base, f->offset);
    size_t *count = record_at(base, f->aux_offset);
    avro_value_t item;
    const char **items;
    size_t n = 0;

    *count = 0;
    *out = NULL;
    if (avro_value_get_size(field, &n) != 0)
        return take_fail(t, f->name, avro_strerror());
    /* n is bounded by the message size: each item took a byte or more. */
    items = arena_alloc(t->arena, (n > 0 ? n : 1) * sizeof(*items));
    if (items == NULL)
        return take_no_memory(t, f->name);
    for (size_t i = 0; i < n; i++) {
        if (avro_value_get_by_index(field, i, &item, NULL) != 0)
            return take_fail(t, f->name, avro_strerror());
        if (take_string(t, f->name, &item, &items[i]) != CODEC_OK)
            return CODEC_CORRUPT_AVRO;
    }
    *out = items;
    *count = n;
    return CODEC_OK;
}

static enum codec_status take_fields(struct take *t,
                                     const struct record_table *table,
                                     avro_value_t *record, const int *map,
                                     avro_value_t *defaults, void *base);

/* An array of nested records, into the storage at the row's aux_offset. */
static enum codec_status take_records(struct take *t,
                                      const struct record_field *f,
                                      avro_value_t *field, void *base)
{
    const struct record_array *a = f->array;
    void *container = record_at(base, f->aux_offset);
    size_t *count = record_at(container, a->count_offset);
    char *items = record_at(container, a->items_offset);
    char reason[80];
    avro_value_t item;
    size_t n = 0;

    *count = 0;
    *(void **)record_at(base, f->offset) = container;
    if (avro_value_get_size(field, &n) != 0)
        return take_fail(t, f->name, avro_strerror());
    if (n > a->max_items) {
        snprintf(reason, sizeof(reason), "more items than the %zu a %s holds",
                 a->max_items, a->noun);
        return take_fail(t, f->name, reason);
    }
    for (size_t i = 0; i < n; i++) {
        if (avro_value_get_by_index(field, i, &item, NULL) != 0)
            return take_fail(t, f->name, avro_strerror());
        if (take_fields(t, a->item, &item, NULL, NULL,
                        items + i * a->item_size) != CODEC_OK)
            return CODEC_CORRUPT_AVRO;
        *count = i + 1;
    }
    return CODEC_OK;
}

/* Reads a scalar of kind (the row's, or what its union holds) into at. */
static enum codec_status take_scalar(struct take *t,
                                     const struct record_field *f,
                                     enum record_kind kind, avro_value_t *field,
                                     void *at)
{
    int32_t i32 = 0;
    int v = 0;

    switch (kind) {
    case RECORD_BOOLEAN:
        if (avro_value_get_boolean(field, &v) != 0)
            break;
        *(bool *)at = v != 0;
        return CODEC_OK;
    case RECORD_INT:
        if (avro_value_get_int(field, &i32) != 0)
            break;
        *(int32_t *)at = i32;
        return CODEC_OK;
    case RECORD_TIME:
        if (avro_value_get_long(field, (int64_t *)at) != 0)
            break;
        return CODEC_OK;
    case RECORD_ENUM:
        if (avro_value_get_enum(field, &v) != 0)
            break;
        if (v < 0 || v >= f->limit)
            return take_fail(t, f->name, "enum index out of range");
        *(int *)at = v;
        return CODEC_OK;
    default:
        return take_fail(t, f->name, "the field is not a scalar");
    }
    return take_fail(t, f->name, avro_strerror());
}

/* Reads a ["null", T] scalar: its is-set flag, and T when set. */
static enum codec_status take_optional_scalar(struct take *t,
                                              const struct record_field *f,
                                              enum record_kind scalar,
                                              avro_value_t *field, void *base)
{
    void *at = record_at(base, f->offset);
    bool *is_set = record_at(base, f->aux_offset);
    avro_value_t branch;
    enum codec_status status;

    *is_set = false;
    status = take_union(t, f->name, field, &branch, is_set);
    if (status != CODEC_OK || !*is_set)
        return status;
    return take_scalar(t, f, scalar, &branch, at);
}

/* Reads the value of row f from field into base. */
static enum codec_status take_value(struct take *t,
                                    const struct record_field *f,
                                    avro_value_t *field, void *base)
{
    void *at = record_at(base, f->offset);
    const char *s = NULL;
    avro_value_t branch;
    bool is_set = false;
    enum record_kind scalar;
    enum codec_status status;

    if (record_is_optional_scalar(f->kind, &scalar))
        return take_optional_scalar(t, f, scalar, field, base);
    switch (f->kind) {
    case RECORD_STRING:
        return take_string(t, f->name, field, at);
    case RECORD_OPTIONAL_STRING:
        *(const char **)at = NULL;
        status = take_union(t, f->name, field, &branch, &is_set);
        if (status != CODEC_OK || !is_set)
            return status;
        return take_string(t, f->name, &branch, at);
    case RECORD_TEXT:
        status = take_string(t, f->name, field, &s);
        if (status == CODEC_OK)
            copy_text(at, (size_t)f->limit, s);
        return status;
    case RECORD_STRINGS:
        return take_strings(t, f, field, base);
    case RECORD_RECORDS:
        return take_records(t, f, field, base);
    default:
        return take_scalar(t, f, f->kind, field, at);
    }
}

/*
 * Copies the rows of table from record into base.  With map, record is
 * a projection of our record onto a writer's fields: map[i] is the
 * projection's index of our field i, or -1 when the writer lacks it and
 * defaults (a value of our schema holding the schema's defaults) answers
 * instead.
 */
static enum codec_status take_fields(struct take *t,
                                     const struct record_table *table,
                                     avro_value_t *record, const int *map,
                                     avro_value_t *defaults, void *base)
{
    avro_value_t field;

    for (size_t i = 0; i < table->count; i++) {
        avro_value_t *from = record;
        size_t at = i;

        if (map != NULL && map[i] >= 0)
            at = (size_t)map[i];
        else if (map != NULL)
            from = defaults;
        if (avro_value_get_by_index(from, at, &field, NULL) != 0)
            return take_fail(t, table->fields[i].name, avro_strerror());
        if (take_value(t, &table->fields[i], &field, base) != CODEC_OK)
            return CODEC_CORRUPT_AVRO;
    }
    return CODEC_OK;
}

enum codec_status codec_value_take(enum mw_record_type type,
                                   avro_value_t *value, const int *map,
                                   avro_value_t *defaults,
                                   struct mw_arena *arena,
                                   struct mw_record *rec, struct mw_error *err)
{
    struct take t = {.arena = arena, .err = err};

    memset(&rec->u, 0, sizeof(rec->u));
    rec->type = type;
    return take_fields(&t, record_table(type), value, map, defaults, rec);
}
