/*
 * The field table of each record type: one row a field, in the order of
 * the Avro schema, saying what the field is called, what kind of value it
 * holds and where that value lives in the C struct of mw.h.  The codec
 * (Avro) and convert (JSON) walk these rows instead of naming each field,
 * so that a new optional field is one row here, its member in mw.h and
 * its column in the store.
 *
 * Offsets of a record's rows are taken from struct mw_record (so that
 * rows may name storage outside the union); offsets of a nested record's
 * rows from that record's own struct.
 */
#ifndef MW_RECORD_H
#define MW_RECORD_H

#include "mw.h"

#include <stdbool.h>
#include <stddef.h>

/* Most fields of one record; CustomerCreated has 24. */
#define RECORD_MAX_FIELDS 32

/* What a row holds, and how it is written in Avro and in JSON. */
enum record_kind {
    RECORD_STRING,           /* const char *; Avro string */
    RECORD_OPTIONAL_STRING,  /* const char *, NULL = null; ["null", string] */
    RECORD_TEXT,             /* char[limit] in place; Avro string */
    RECORD_BOOLEAN,          /* bool */
    RECORD_INT,              /* int32_t */
    RECORD_TIME,             /* int64_t epoch ms; long timestamp-millis */
    RECORD_OPTIONAL_TIME,    /* int64_t, bool at aux_offset: set or null */
    RECORD_ENUM,             /* int; index into symbols[0..limit) */
    RECORD_OPTIONAL_INT,     /* int32_t, bool at aux_offset; ["null", int] */
    RECORD_OPTIONAL_BOOLEAN, /* bool, bool at aux_offset; ["null", boolean] */
    RECORD_OPTIONAL_ENUM,    /* int, bool at aux_offset; ["null", enum] */
    RECORD_STRINGS,          /* const char **, size_t count at aux_offset */
    RECORD_RECORDS,          /* const container *; see struct record_array */
};

/*
 * What JSON input (convert) does when a field is absent.  Optional kinds
 * are null and arrays empty when absent, whatever this says.
 */
enum record_default {
    RECORD_REQUIRED = 0, /* absent is an error */
    RECORD_DEFAULT_FALSE,
    RECORD_DEFAULT_TRUE,
    RECORD_DEFAULT_NOW,    /* a time: the current time */
    RECORD_DEFAULT_NEW_ID, /* a string: a new random UUID */
};

struct record_table;

/*
 * An array of nested records, held in a container struct: a count at
 * count_offset and up to max_items items of item_size bytes from
 * items_offset.  The record row points to the container; a decoded
 * container is the storage at the row's aux_offset in struct mw_record.
 */
struct record_array {
    const struct record_table *item;
    const char *noun; /* the container in messages: "a rejection" */
    size_t count_offset;
    size_t items_offset;
    size_t item_size;
    size_t max_items;
};

/* One field. */
struct record_field {
    const char *name; /* the schema's name */
    enum record_kind kind;
    size_t offset;     /* of the value */
    size_t aux_offset; /* the count, the is-set flag or the storage */
    /* RECORD_ENUM: symbol count; RECORD_TEXT: size of the buffer. */
    int limit;
    const char *const *symbols;       /* RECORD_ENUM */
    const struct record_array *array; /* RECORD_RECORDS */
    enum record_default fallback;     /* JSON input only */
};

/* A record: its short schema name and its rows in schema order. */
struct record_table {
    const char *name;
    const struct record_field *fields;
    size_t count;
};

/*
 * Returns the table of a record type, or NULL for a value that is not
 * one.  The tables are static.
 */
const struct record_table *record_table(enum mw_record_type type);

/* Returns the table of RejectionError, the items of CustomerRejected. */
const struct record_table *record_rejection_error_table(void);

/* Returns the table of FieldChange, the items of CustomerUpdated. */
const struct record_table *record_field_change_table(void);

/*
 * True for the kinds held in a ["null", T] union whose is-set flag is at
 * aux_offset; *scalar is then the kind of T.  Can't fail.
 */
bool record_is_optional_scalar(enum record_kind kind, enum record_kind *scalar);

/* The address of the member at offset bytes into base. */
static inline void *record_at(void *base, size_t offset)
{
    return (char *)base + offset;
}

static inline const void *record_at_const(const void *base, size_t offset)
{
    return (const char *)base + offset;
}

#endif
