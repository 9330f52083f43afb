/*
 * Errors carried to the caller.
 *
 * Every fallible function returns 0 on success, or -1 after filling a
 * caller-owned struct mw_error.  Whether an error is worth retrying is
 * decided where it is made (retriable), never by reading its text.
 * Wording follows PostgreSQL's guide: msg is short and lower case with no
 * full stop, detail holds the facts, hint says what to do.
 */
#ifndef MW_ERROR_H
#define MW_ERROR_H

#include <stdbool.h>

/*
 * MW_MUSTCHECK marks a function whose result must be read: every function
 * that can fail (it fills a struct mw_error) and every constructor whose
 * result the caller must destroy.  A function that can't fail, or whose
 * result only adds information (registry_error_from_response), is not
 * marked.
 */
#if defined(__GNUC__)
#define MW_PRINTF(f, a) __attribute__((format(printf, f, a)))
#define MW_MUSTCHECK __attribute__((warn_unused_result))
#else
#define MW_PRINTF(f, a)
#define MW_MUSTCHECK
#endif

enum mw_error_code {
    MW_ERR_NONE = 0,
    MW_ERR_CONFIG,   /* bad configuration: stop start-up */
    MW_ERR_INPUT,    /* bad input: report, never crash */
    MW_ERR_DECODE,   /* bytes that do not decode */
    MW_ERR_DATABASE, /* PostgreSQL */
    MW_ERR_KAFKA,    /* Kafka */
    MW_ERR_REGISTRY, /* Schema Registry */
    MW_ERR_SYSTEM,   /* operating system, memory */
    MW_ERR_SHUTDOWN, /* interrupted by shutdown */
};

struct mw_error {
    enum mw_error_code code;
    bool retriable;
    char msg[256];
    char detail[512];
    char hint[256];
};

/* Sets code, retriable and msg; clears detail and hint. */
void mw_error_set(struct mw_error *err, enum mw_error_code code, bool retriable,
                  const char *fmt, ...) MW_PRINTF(4, 5);

/* Sets the detail line of an error already set. */
void mw_error_detail(struct mw_error *err, const char *fmt, ...)
    MW_PRINTF(2, 3);

/* Sets the hint line of an error already set. */
void mw_error_hint(struct mw_error *err, const char *fmt, ...) MW_PRINTF(2, 3);

/*
 * Out of memory is retriable, wherever it happens: the work that ran out
 * (a batch, a relay or timer round, a schema lookup) keeps nothing of
 * what it did and is tried again after a pause, so nothing is lost.
 * Were it permanent, a message that only met a full heap would be
 * dead-lettered or rejected, a writer's schema cached as unusable, and
 * the scheduler would drop its connection: for a state of this process,
 * not a fault of the input.  At start-up it makes no difference; the
 * command stops either way.  Sets MW_ERR_SYSTEM, retriable, "out of
 * memory"; a site with more to say uses mw_error_set with retriable true.
 */
void mw_error_no_memory(struct mw_error *err);

/* Clears the error. */
void mw_error_clear(struct mw_error *err);

/* Writes "error: msg\ndetail: ...\nhint: ...\n" to stderr for the CLI. */
void mw_error_print(const struct mw_error *err, const char *prefix);

#endif
