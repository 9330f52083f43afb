/*
 * Checks on a writer schema's JSON text made before avro-c parses it, for
 * the defects avro-c does not survive cleanly.  Today one: a named type
 * (record, enum, fixed) defined twice under the same full name, which
 * avro-c refuses only after it has built the type and so leaks it on
 * every parse.
 */
#ifndef MW_SCHEMA_CHECK_H
#define MW_SCHEMA_CHECK_H

#include "error.h"

/*
 * Returns 0 when no named type of schema_json is defined twice, or when
 * the text is not JSON at all (avro-c says so itself).  Returns -1 with
 * err (MW_ERR_DECODE, not retriable) naming the first full name defined
 * again, or (retriable) when memory runs out.  Full names follow avro-c:
 * a dotted name is full; else the "namespace" attribute applies (empty:
 * none), else the enclosing record's namespace.
 */
int schema_check_names(const char *schema_json,
                       struct mw_error *err) MW_MUSTCHECK;

#endif
