/*
 * Records to and from JSON for people and tools: `mesh-worker produce`
 * reads requests as JSON, `tail` prints events as JSON lines.  The JSON is
 * plain (a null field is null, an enum is its symbol, a timestamp is an
 * ISO-8601 UTC string on output and either that or epoch milliseconds on
 * input), not Avro's JSON encoding with union wrappers.
 */
#ifndef MW_CONVERT_H
#define MW_CONVERT_H

#include "arena.h"
#include "error.h"
#include "mw.h"

#include <jansson.h>

/*
 * Builds a request from a JSON object.  "type" selects the record
 * ("CustomerRequested", the default, "CustomerTerminationRequested" or
 * "CustomerUpdateRequested");
 * missing optional fields take the schema defaults; a missing
 * request_id is generated, a missing requested_at is now.  Returns 0, or
 * -1 with err naming the field when a value has the wrong JSON type or an
 * unknown enum symbol.  Strings are allocated from arena.
 */
int convert_record_from_json(const json_t *obj, struct mw_arena *arena,
                             struct mw_record *rec,
                             struct mw_error *err) MW_MUSTCHECK;

/*
 * Returns a new JSON object for any record, with "type" set to the record
 * name first, or NULL when out of memory.  The caller owns the reference.
 */
json_t *convert_record_to_json(const struct mw_record *rec);

/* Formats epoch milliseconds as "2026-11-25T06:05:25.123Z". */
void convert_format_time(int64_t ms, char out[32]);

/* Parses that format (or a bare epoch-milliseconds number); 0 or -1. */
int convert_parse_time(const char *s, int64_t *ms);

#endif
