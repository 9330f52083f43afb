/*
 * Parsing Canonical Form and CRC-64-AVRO, as the Avro specification
 * defines them: a schema's JSON text cut down to what decides how bytes
 * are read (full names, types, fields, symbols, sizes, items, values),
 * and the 64-bit Rabin fingerprint of that text, which single-object
 * encoding carries.  It does not parse schemas for avro-c nor check that
 * they resolve (codec_resolve.c does).
 *
 * Invariant: a named type is written with its full name once, where it
 * is defined, and referred to by that full name afterwards; logical types
 * are their primitive, so that our fingerprints agree with the Java
 * reference implementation.
 */
#include "codec_internal.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

#define CRC64_AVRO_EMPTY UINT64_C(0xc15d213aa4d7a795)

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
        mw_error_no_memory(c->err);
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

/*
 * A named type's output with one more member, key: value.  Takes value,
 * also on failure (NULL is out of memory).
 */
static json_t *canon_named_with(struct canon *c, json_t *node, const char *type,
                                const char *space, const char *key,
                                json_t *value)
{
    char inner[512];
    json_t *out;

    snprintf(inner, sizeof(inner), "%s", space);
    out = canon_named(c, node, type, inner, sizeof(inner));
    if (out == NULL || value == NULL ||
        json_object_set_new(out, key, value) != 0) {
        if (out == NULL)
            json_decref(value);
        json_decref(out);
        return NULL;
    }
    return out;
}

static json_t *canon_enum(struct canon *c, json_t *node, const char *space)
{
    json_t *symbols = json_object_get(node, "symbols");

    if (!json_is_array(symbols))
        return canon_fail(c, "an enum has no symbols array", NULL);
    for (size_t i = 0; i < json_array_size(symbols); i++) {
        if (!json_is_string(json_array_get(symbols, i)))
            return canon_fail(c, "an enum symbol is not a string", NULL);
    }
    return canon_named_with(c, node, "enum", space, "symbols",
                            json_deep_copy(symbols));
}

static json_t *canon_fixed(struct canon *c, json_t *node, const char *space)
{
    json_t *size = json_object_get(node, "size");

    if (!json_is_integer(size) || json_integer_value(size) < 0)
        return canon_fail(c, "a fixed type has no valid size", NULL);
    return canon_named_with(c, node, "fixed", space, "size",
                            json_integer(json_integer_value(size)));
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
        mw_error_no_memory(c->err);
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
    if (depth > CODEC_MAX_DEPTH)
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

    mw_error_no_memory(err);
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
