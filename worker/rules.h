/*
 * The form's rules (SPEC §2 and §8) as pure functions: no I/O, no clock,
 * no global state.  A request is either valid, and then normalised
 * (domains lower-case A-labels without trailing dot, delivery destination
 * lower-case), or rejected with every failing field at once.
 */
#ifndef MW_RULES_H
#define MW_RULES_H

#include "arena.h"
#include "mw.h"

/*
 * Checks req.  Returns 0 when valid, with *out a normalised copy whose
 * strings come from arena.  Returns 1 when rejected, with rej holding one
 * error per failing rule in field order (a field may have several: the
 * additional domains report bad syntax, repeats and NFR separately, each
 * naming the first offender and counting the rest).  Returns -1 only when
 * memory runs out (arena or libidn2); then rej is incomplete.  An empty
 * delivery_destination counts as not given, as a blank form field does.
 * Scratch strings of a rejected request stay in arena until its reset.
 */
int rules_check_request(const struct mw_request *req, struct mw_arena *arena,
                        struct mw_request *out, struct mw_rejection *rej);

/*
 * Checks the fields of a termination request that need no database
 * (request_id, msp_id, customer_id syntax, requested_by).  Returns 0 or 1
 * as above, or -1 when libidn2 runs out of memory.  effective_at is not
 * checked: whether it lies in the future needs the clock.
 */
int rules_check_termination(const struct mw_termination_request *req,
                            struct mw_rejection *rej);

/*
 * Checks the fields of an update that need no database: the identifiers,
 * the source (a license sync may change only licenses), each value given
 * (licenses 1 to 1,000,000, a delivery destination's syntax, a policy
 * template id's length, the domains' syntax, no domain given twice or
 * both added and removed, at most MW_MAX_ADDITIONAL_DOMAINS added) and the
 * account type (only BUY_NOW may be asked for).  Returns 0 when valid,
 * with *out a copy whose domains are normalised and whose delivery
 * destination is lower-case (an empty string, a removal, stays empty);
 * 1 when rejected, with every failing field in rej; -1 when memory ran
 * out.  Strings of *out come from arena.
 */
int rules_check_update(const struct mw_update_request *req,
                       struct mw_arena *arena, struct mw_update_request *out,
                       struct mw_rejection *rej);

/*
 * Judges an update rules_check_update() passed against its customer as
 * the database holds it (before; NULL when there is no such customer) and
 * the added domains that other live customers hold (taken).  The customer
 * must belong to the MSP and not be terminated; every value must obey the
 * creation rules in the state that results (NFR licenses and domains,
 * monitor mode only with MESH_365, a delivery destination kept for the
 * MX-based services, added domains free and not already the customer's,
 * removed domains the customer's and not the primary, at most
 * MW_MAX_ADDITIONAL_DOMAINS in all, BUY_NOW only while on trial); a
 * licenses value observed before the last one applied is STALE_UPDATE.
 * Returns 0 when accepted, with *after the resulting state (strings
 * borrowed from req, before or arena) and changes the fields that
 * differ, in schema order, values as text; 1 when rejected, with every
 * failing field in rej; -1 when memory ran out.
 */
int rules_apply_update(const struct mw_update_request *req,
                       const struct mw_customer_state *before,
                       const char *const *taken, size_t taken_count,
                       struct mw_arena *arena, struct mw_customer_state *after,
                       struct mw_changes *changes, struct mw_rejection *rej);

/*
 * Normalises a domain name: lower case, trailing dot removed, Unicode
 * converted to A-labels (IDNA2008 with UTS #46 mapping), host-name rules
 * checked.  Returns the normalised name from arena, or NULL when the name
 * is not a valid domain; then *why (if not NULL) points at a static
 * sentence fragment saying what is wrong ("it contains a space") or that
 * memory ran out.
 */
const char *rules_normalize_domain(const char *name, struct mw_arena *arena,
                                   const char **why);

/*
 * True when domain equals parent or lies below it on a label boundary
 * (notmsp.net is not below msp.net).  Both are normalised names; ASCII
 * case is ignored.
 */
bool rules_domain_is_under(const char *domain, const char *parent);

/*
 * The rejections decided once the database has answered.  Each empties rej
 * and fills it with full sentences naming the field, as the checks above
 * do, and can't fail.
 */

/*
 * A valid request some of whose domains live customers hold: one
 * DOMAIN_ALREADY_PROVISIONED error per taken domain (normalised names, in
 * the order of the request), on primary_domain when it is the primary,
 * else on additional_domains; one error for the request when count is 0.
 */
void rules_reject_taken_domains(const char *primary_domain,
                                const char *const *taken, size_t count,
                                struct mw_rejection *rej);

/*
 * A termination the database refused, with code as mw_claim_termination
 * returns it (UNKNOWN_CUSTOMER, NOT_CUSTOMER_OWNER, ALREADY_TERMINATED),
 * or INVALID_FIELD for identifiers PostgreSQL cannot store.
 */
void rules_reject_termination(int code, struct mw_rejection *rej);

/* A request id used before for a request with other content. */
void rules_reject_conflict(const char *request_id, struct mw_rejection *rej);

/*
 * Appends an error to rej (ignored once MW_MAX_REJECTION_ERRORS are held).
 * The message is formatted into the error's buffer; text that does not fit
 * is cut at a character boundary, so valid UTF-8 stays valid.
 */
void rules_add_error(struct mw_rejection *rej, const char *field, int code,
                     const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
