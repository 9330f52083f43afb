/*
 * What the files of the rules module share and nothing outside it may
 * use: the state of one check and the field checks that both creation
 * (rules.c) and updates (rules_update.c) apply, so that a field is judged
 * and worded the same way whichever request carries it.  The interface
 * stays rules.h.
 */
#ifndef MW_RULES_INTERNAL_H
#define MW_RULES_INTERNAL_H

#include "rules.h"

#include <stdbool.h>

/* Longest part of a value quoted in a message, in bytes. */
#define SHOWN_MAX 80
#define SHOWN_BUF (SHOWN_MAX + 8)

/* What every check needs: where to report and where to copy results. */
struct check {
    struct mw_arena *arena;
    struct mw_rejection *rej;
    bool is_out_of_memory;
};

/* Result of the checks that may run out of memory. */
enum verdict { VALID = 0, INVALID = 1, NO_MEMORY = -1 };

/*
 * Writes value into buf fit to quote in a message: quotes, backslashes,
 * control characters and bytes that are not UTF-8 escaped, and cut after
 * SHOWN_MAX bytes with "...".  Returns buf.  Can't fail.
 */
const char *rules_show(char buf[SHOWN_BUF], const char *value);

/* Reports a required field that is NULL or empty; returns true if so. */
bool rules_is_missing(struct check *c, const char *field, const char *label,
                      const char *value);

/* Reports a text that is not 1 to max printable code points. */
void rules_check_text_field(struct check *c, const char *field,
                            const char *label, const char *value, size_t max);

/* Reports a missing value or one that is not a UUID. */
void rules_check_uuid_field(struct check *c, const char *field,
                            const char *label, const char *value);

/* Checks request_id, requested_by and msp_id, which every request has. */
void rules_check_origin(struct check *c, const char *request_id,
                        const char *requested_by, const char *msp_id);

/*
 * Normalises one domain into the arena.  Returns the copy, or NULL with
 * *why set to what is wrong (or NULL when memory ran out, which is
 * flagged in c).
 */
const char *rules_normalize(struct check *c, const char *value,
                            const char **why);

/*
 * Checks a delivery destination that was given (not empty) and returns
 * its normalised copy, or NULL after reporting what is wrong with it (or
 * flagging that memory ran out).
 */
const char *rules_check_destination_value(struct check *c, const char *value);

/* Reports an enum value outside its symbols; returns true when known. */
bool rules_check_enum(struct check *c, const char *field, const char *label,
                      int value, const char *const *names, int count);

/* Copies an optional string into the arena, flagging lack of memory. */
const char *rules_duplicate(struct check *c, const char *s);

#endif
