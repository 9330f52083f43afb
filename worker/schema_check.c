/*
 * Pre-parse checks of writer schemas: a walk over the schema's JSON that
 * computes every named type's full name as avro-c does and refuses a name
 * defined twice.  avro-c 1.11 builds a named type before it records the
 * name, and when recording fails it returns the error without freeing the
 * type, so such a schema from a registry would leak on every parse.  The
 * walk judges nothing else: text avro-c refuses cleanly is left to it.
 *
 * Invariant: the full names computed here are the ones avro-c records;
 * where they could differ, this module must see more duplicates, never
 * fewer.
 */
#include "schema_check.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

struct names {
    json_t *defined; /* full name -> true */
    struct mw_error *err;
};

static int check_node(struct names *n, json_t *node, const char *space);

/* Returns a malloc'ed "space.name" (or "name"), or NULL. */
static char *join(const char *space, const char *name)
{
    size_t space_len = space != NULL ? strlen(space) : 0;
    size_t name_len = strlen(name);
    char *out = malloc(space_len + 1 + name_len + 1);

    if (out == NULL)
        return NULL;
    if (space_len > 0) {
        memcpy(out, space, space_len);
        out[space_len] = '.';
        memcpy(out + space_len + 1, name, name_len + 1);
    } else {
        memcpy(out, name, name_len + 1);
    }
    return out;
}

static int no_memory(struct names *n)
{
    mw_error_no_memory(n->err);
    return -1;
}

/*
 * Records the full name of the named type node, defined where space is
 * the enclosing namespace, and sets *own_space to the malloc'ed namespace
 * its fields inherit (NULL for none).  Returns 0, or -1 with err and
 * *own_space NULL.
 */
static int define(struct names *n, json_t *node, const char *space,
                  char **own_space)
{
    const char *name = json_string_value(json_object_get(node, "name"));
    json_t *ns_attr = json_object_get(node, "namespace");
    const char *dot;
    char *full = NULL;
    int rc = -1;

    *own_space = NULL;
    if (name == NULL)
        return 0; /* avro-c refuses a named type without a name */
    dot = strrchr(name, '.');
    if (dot != NULL) {
        *own_space = strndup(name, (size_t)(dot - name));
        if (*own_space == NULL)
            goto no_memory;
        full = strdup(name);
    } else {
        if (json_is_string(ns_attr))
            space = json_string_value(ns_attr);
        if (space != NULL && space[0] != '\0') {
            *own_space = strdup(space);
            if (*own_space == NULL)
                goto no_memory;
        }
        full = join(*own_space, name);
    }
    if (full == NULL)
        goto no_memory;
    if (json_object_get(n->defined, full) != NULL) {
        mw_error_set(n->err, MW_ERR_DECODE, false,
                     "the schema defines the type %s twice", full);
        goto fail;
    }
    /* Names come from JSON strings, so they are UTF-8 already. */
    if (json_object_set_new_nocheck(n->defined, full, json_true()) != 0)
        goto no_memory;
    free(full);
    return 0;
no_memory:
    no_memory(n);
fail:
    free(full);
    free(*own_space);
    *own_space = NULL;
    return rc;
}

static int check_record_fields(struct names *n, json_t *fields,
                               const char *space)
{
    size_t i;
    json_t *field;

    json_array_foreach(fields, i, field) {
        if (check_node(n, json_object_get(field, "type"), space) != 0)
            return -1;
    }
    return 0;
}

static int check_object(struct names *n, json_t *node, const char *space)
{
    const char *type = json_string_value(json_object_get(node, "type"));
    char *own_space;
    int rc;

    if (type == NULL)
        return 0;
    if (strcmp(type, "array") == 0)
        return check_node(n, json_object_get(node, "items"), space);
    if (strcmp(type, "map") == 0)
        return check_node(n, json_object_get(node, "values"), space);
    if (strcmp(type, "record") != 0 && strcmp(type, "enum") != 0 &&
        strcmp(type, "fixed") != 0)
        return 0;
    if (define(n, node, space, &own_space) != 0)
        return -1;
    rc = 0;
    if (strcmp(type, "record") == 0)
        rc = check_record_fields(n, json_object_get(node, "fields"), own_space);
    free(own_space);
    return rc;
}

/* Walks node (NULL or any JSON) with space as the enclosing namespace. */
static int check_node(struct names *n, json_t *node, const char *space)
{
    size_t i;
    json_t *branch;

    if (json_is_object(node))
        return check_object(n, node, space);
    if (json_is_array(node)) {
        json_array_foreach(node, i, branch) {
            if (check_node(n, branch, space) != 0)
                return -1;
        }
    }
    return 0;
}

int schema_check_names(const char *schema_json, struct mw_error *err)
{
    json_t *root = json_loads(schema_json, JSON_DECODE_ANY, NULL);
    struct names n = {.defined = json_object(), .err = err};
    int rc;

    if (n.defined == NULL) {
        json_decref(root);
        return no_memory(&n);
    }
    rc = root != NULL ? check_node(&n, root, NULL) : 0;
    json_decref(n.defined);
    json_decref(root);
    return rc;
}
