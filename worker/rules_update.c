/*
 * The rules of a change to an existing customer (SPEC §3a): first what an
 * update says on its own (rules_check_update), then what it does to the
 * customer the database holds (rules_apply_update), which yields either
 * the resulting state and the list of changes, or a rejection listing
 * every failing field.  Pure, as rules.c: no I/O, no clock, no state, so
 * every replica judges an update alike; the store loads the customer and
 * writes the result.  Every sentence an MSP reads about an update is
 * written here.
 *
 * Invariant: an update is judged against the state it leaves behind, so a
 * value is refused only when the resulting customer would break a
 * creation rule, never because the stored customer once did.  Known
 * limit: domain lists are compared pairwise, O(N^2) in at most 200 names.
 */
#include "rules_internal.h"

#include <stdio.h>
#include <string.h>

/* Whether req sets field, one of those a license sync may not set. */
static bool is_set_by_update(const struct mw_update_request *req,
                             const char *field)
{
    if (strcmp(field, "monitor_mode") == 0)
        return req->has_monitor_mode;
    if (strcmp(field, "two_factor_required") == 0)
        return req->has_two_factor_required;
    if (strcmp(field, "msp_management") == 0)
        return req->has_msp_management;
    if (strcmp(field, "apply_global_rules") == 0)
        return req->has_apply_global_rules;
    if (strcmp(field, "delivery_destination") == 0)
        return req->delivery_destination != NULL;
    if (strcmp(field, "policy_template_id") == 0)
        return req->policy_template_id != NULL;
    if (strcmp(field, "add_domains") == 0)
        return req->add_domains_count > 0;
    if (strcmp(field, "remove_domains") == 0)
        return req->remove_domains_count > 0;
    return req->has_account_type;
}

/* Reports each field a license sync sets besides licenses. */
static void check_sync_fields(struct check *c,
                              const struct mw_update_request *req)
{
    static const char *const fields[] = {
        "monitor_mode",       "two_factor_required",  "msp_management",
        "apply_global_rules", "delivery_destination", "policy_template_id",
        "add_domains",        "remove_domains",       "account_type"};

    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        if (is_set_by_update(req, fields[i]))
            rules_add_error(c->rej, fields[i], MW_REJ_INVALID_FIELD,
                            "A license sync (%s) may change only the "
                            "licenses, but this update also sets %s.",
                            mw_update_source_names[MW_SOURCE_M365_SYNC],
                            fields[i]);
    }
}

/* True when domain is one of list[0..count). */
static bool is_listed(const char *domain, const char *const *list, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        if (list[i] != NULL && strcmp(domain, list[i]) == 0)
            return true;
    }
    return false;
}

/* Reports the first of count domains that broke one rule, and how many. */
static void report_domains(struct check *c, const char *field, int code,
                           const char *first, size_t count)
{
    if (count == 1)
        rules_add_error(c->rej, field, code, "%s", first);
    else if (count > 1)
        rules_add_error(c->rej, field, code,
                        "%s In all, %zu domains of %s break this rule.", first,
                        count, field);
}

/*
 * A list of domains to add or remove: each a valid domain, none twice,
 * none in other (the list of the other direction, already normalised, or
 * NULL).  Returns the normalised list (empty lists too), or NULL when any
 * is invalid.
 */
static const char **check_domain_list(struct check *c, const char *field,
                                      const char *const *items, size_t n,
                                      const char *const *other,
                                      size_t other_count)
{
    char invalid_msg[320], repeated_msg[320], both_msg[320];
    char shown[SHOWN_BUF];
    size_t invalid = 0, repeated = 0, both = 0;
    const char **domains = arena_alloc(c->arena, (n + 1) * sizeof(*domains));

    if (domains == NULL) {
        c->is_out_of_memory = true;
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        const char *why = "it is empty";

        domains[i] =
            items[i] == NULL ? NULL : rules_normalize(c, items[i], &why);
        if (domains[i] == NULL) {
            if (why != NULL && invalid++ == 0)
                snprintf(invalid_msg, sizeof(invalid_msg),
                         "The domain \"%s\" in %s is not a valid domain "
                         "name: %s.",
                         rules_show(shown, items[i] ? items[i] : ""), field,
                         why);
            continue;
        }
        if (is_listed(domains[i], domains, i) && repeated++ == 0)
            snprintf(repeated_msg, sizeof(repeated_msg),
                     "The domain \"%s\" appears more than once in %s.",
                     rules_show(shown, domains[i]), field);
        if (other != NULL && is_listed(domains[i], other, other_count) &&
            both++ == 0)
            snprintf(both_msg, sizeof(both_msg),
                     "The domain \"%s\" is both added and removed; an "
                     "update may do only one of the two.",
                     rules_show(shown, domains[i]));
    }
    report_domains(c, field, MW_REJ_INVALID_FIELD, invalid_msg, invalid);
    report_domains(c, field, MW_REJ_INVALID_FIELD, repeated_msg, repeated);
    report_domains(c, field, MW_REJ_INVALID_FIELD, both_msg, both);
    return invalid + repeated + both == 0 ? domains : NULL;
}

/* The values of an update that a sync may not set, checked one by one. */
static void check_update_values(struct check *c,
                                const struct mw_update_request *req,
                                struct mw_update_request *out)
{
    if (req->delivery_destination != NULL &&
        req->delivery_destination[0] != '\0')
        out->delivery_destination =
            rules_check_destination_value(c, req->delivery_destination);
    if (req->policy_template_id != NULL && req->policy_template_id[0] != '\0')
        rules_check_text_field(c, "policy_template_id", "policy template id",
                               req->policy_template_id, MW_MAX_ID);
    if (req->add_domains_count > MW_MAX_ADDITIONAL_DOMAINS)
        rules_add_error(c->rej, "add_domains", MW_REJ_INVALID_FIELD,
                        "The update adds %zu domains; a customer may have at "
                        "most %d additional domains.",
                        req->add_domains_count, MW_MAX_ADDITIONAL_DOMAINS);
    else
        out->add_domains = check_domain_list(c, "add_domains", req->add_domains,
                                             req->add_domains_count, NULL, 0);
    out->remove_domains = check_domain_list(
        c, "remove_domains", req->remove_domains, req->remove_domains_count,
        out->add_domains, out->add_domains ? req->add_domains_count : 0);
    if (req->has_account_type &&
        rules_check_enum(c, "account_type", "account type", req->account_type,
                         mw_account_type_names, MW_ACCOUNT_COUNT) &&
        req->account_type != MW_ACCOUNT_BUY_NOW)
        rules_add_error(c->rej, "account_type", MW_REJ_INVALID_FIELD,
                        "The account type can only change from %s to %s "
                        "(buying a trial early), not to %s.",
                        mw_account_type_names[MW_ACCOUNT_TRIAL],
                        mw_account_type_names[MW_ACCOUNT_BUY_NOW],
                        mw_account_type_names[req->account_type]);
}

int rules_check_update(const struct mw_update_request *req,
                       struct mw_arena *arena, struct mw_update_request *out,
                       struct mw_rejection *rej)
{
    struct check c = {.arena = arena, .rej = rej};
    struct mw_update_request result = *req;
    bool is_sync = req->source == MW_SOURCE_M365_SYNC;

    rej->count = 0;
    result.add_domains = NULL;
    result.remove_domains = NULL;
    rules_check_origin(&c, req->request_id, req->requested_by, req->msp_id);
    rules_check_uuid_field(&c, "customer_id", "customer id", req->customer_id);
    rules_check_enum(&c, "source", "source", req->source,
                     mw_update_source_names, MW_SOURCE_COUNT);
    if (req->has_licenses &&
        (req->licenses < MW_MIN_LICENSES || req->licenses > MW_MAX_LICENSES))
        rules_add_error(rej, "licenses", MW_REJ_INVALID_FIELD,
                        "The number of licenses must be between %d and "
                        "1,000,000, but the update has %d.",
                        MW_MIN_LICENSES, (int)req->licenses);
    if (is_sync)
        check_sync_fields(&c, req);
    else
        check_update_values(&c, req, &result);
    if (c.is_out_of_memory)
        return -1;
    if (rej->count > 0)
        return 1;
    if (is_sync) {
        result.add_domains_count = 0;
        result.remove_domains_count = 0;
    }
    result.request_id = rules_duplicate(&c, req->request_id);
    result.requested_by = rules_duplicate(&c, req->requested_by);
    result.msp_id = rules_duplicate(&c, req->msp_id);
    result.customer_id = rules_duplicate(&c, req->customer_id);
    result.policy_template_id = rules_duplicate(&c, req->policy_template_id);
    if (c.is_out_of_memory)
        return -1;
    *out = result;
    return 0;
}

/* ---- against the customer ---- */

/* The additional domains a customer holds after an update. */
struct domain_plan {
    const char **domains; /* additional domains after the update */
    size_t count;
};

/* Is domain the customer's, primary or additional? */
static bool is_owned(const struct mw_customer_state *s, const char *domain)
{
    return strcmp(domain, s->primary_domain) == 0 ||
           is_listed(domain, s->additional_domains,
                     s->additional_domains_count);
}

/* The added domains: not the customer's yet, free, NFR-compatible. */
static void judge_added(struct check *c, const struct mw_update_request *req,
                        const struct mw_customer_state *before,
                        const char *const *taken, size_t taken_count)
{
    char shown[SHOWN_BUF], shown_msp[SHOWN_BUF];
    bool is_nfr = before->account_type == MW_ACCOUNT_NFR;

    for (size_t i = 0; i < req->add_domains_count; i++) {
        const char *d = req->add_domains[i];

        if (is_owned(before, d))
            rules_add_error(c->rej, "add_domains", MW_REJ_INVALID_FIELD,
                            "The domain \"%s\" is already one of this "
                            "customer's domains.",
                            rules_show(shown, d));
        else if (is_listed(d, taken, taken_count))
            rules_add_error(c->rej, "add_domains",
                            MW_REJ_DOMAIN_ALREADY_PROVISIONED,
                            "The domain \"%s\" is already provisioned for "
                            "another customer.",
                            rules_show(shown, d));
        if (is_nfr && !rules_domain_is_under(d, before->msp_domain))
            rules_add_error(c->rej, "add_domains",
                            MW_REJ_NFR_DOMAIN_NOT_MSP_DOMAIN,
                            "The domain \"%s\" is neither the MSP domain "
                            "\"%s\" nor below it; an NFR account is only for "
                            "the MSP's own domains.",
                            rules_show(shown, d),
                            rules_show(shown_msp, before->msp_domain));
    }
}

/* The removed domains: the customer's, and not its primary domain. */
static void judge_removed(struct check *c, const struct mw_update_request *req,
                          const struct mw_customer_state *before)
{
    char shown[SHOWN_BUF];

    for (size_t i = 0; i < req->remove_domains_count; i++) {
        const char *d = req->remove_domains[i];

        if (strcmp(d, before->primary_domain) == 0)
            rules_add_error(c->rej, "remove_domains", MW_REJ_INVALID_FIELD,
                            "The domain \"%s\" is the customer's primary "
                            "domain, which cannot be removed.",
                            rules_show(shown, d));
        else if (!is_owned(before, d))
            rules_add_error(c->rej, "remove_domains", MW_REJ_INVALID_FIELD,
                            "The domain \"%s\" is not one of this customer's "
                            "domains.",
                            rules_show(shown, d));
    }
}

/* The additional domains after the update: kept ones, then added ones. */
static int plan_domains(struct check *c, const struct mw_update_request *req,
                        const struct mw_customer_state *before,
                        struct domain_plan *plan)
{
    size_t max = before->additional_domains_count + req->add_domains_count;

    plan->count = 0;
    plan->domains = arena_alloc(c->arena, (max + 1) * sizeof(*plan->domains));
    if (plan->domains == NULL) {
        c->is_out_of_memory = true;
        return -1;
    }
    for (size_t i = 0; i < before->additional_domains_count; i++) {
        const char *d = before->additional_domains[i];

        if (!is_listed(d, req->remove_domains, req->remove_domains_count))
            plan->domains[plan->count++] = d;
    }
    for (size_t i = 0; i < req->add_domains_count; i++)
        plan->domains[plan->count++] = req->add_domains[i];
    if (plan->count > MW_MAX_ADDITIONAL_DOMAINS)
        rules_add_error(c->rej, "add_domains", MW_REJ_INVALID_FIELD,
                        "After this update the customer would have %zu "
                        "additional domains; at most %d are allowed.",
                        plan->count, MW_MAX_ADDITIONAL_DOMAINS);
    return 0;
}

/* Every rule of the resulting state, in schema field order. */
static void judge_values(struct check *c, const struct mw_update_request *req,
                         const struct mw_customer_state *before)
{
    bool is_nfr = before->account_type == MW_ACCOUNT_NFR;

    if (req->has_licenses && before->has_licenses_observed_at &&
        req->observed_at < before->licenses_observed_at)
        rules_add_error(c->rej, "licenses", MW_REJ_STALE_UPDATE,
                        "These licenses were observed before the licenses "
                        "last applied to the customer; the newer value "
                        "stands.");
    if (req->has_licenses && is_nfr && req->licenses > MW_MAX_NFR_LICENSES)
        rules_add_error(c->rej, "licenses", MW_REJ_NFR_LICENSE_LIMIT_EXCEEDED,
                        "An NFR account can have at most %d licenses, but "
                        "the update asks for %d.",
                        MW_MAX_NFR_LICENSES, (int)req->licenses);
    if (req->has_monitor_mode && req->monitor_mode &&
        before->service != MW_SERVICE_MESH_365)
        rules_add_error(c->rej, "monitor_mode",
                        MW_REJ_MONITOR_MODE_NOT_SUPPORTED,
                        "Monitor mode is only available with %s, but the "
                        "customer has %s.",
                        mw_service_names[MW_SERVICE_MESH_365],
                        mw_service_names[before->service]);
    if (req->delivery_destination != NULL &&
        req->delivery_destination[0] == '\0' &&
        before->service != MW_SERVICE_MESH_365)
        rules_add_error(c->rej, "delivery_destination",
                        MW_REJ_DELIVERY_DESTINATION_REQUIRED,
                        "The delivery destination cannot be removed: %s "
                        "needs one for clean email.",
                        mw_service_names[before->service]);
}

/* Buying early: only while on trial. */
static void judge_account_type(struct check *c,
                               const struct mw_update_request *req,
                               const struct mw_customer_state *before)
{
    if (!req->has_account_type || before->is_trial)
        return;
    if (before->account_type == MW_ACCOUNT_TRIAL)
        rules_add_error(c->rej, "account_type", MW_REJ_INVALID_FIELD,
                        "The customer's trial has already converted to a "
                        "billable account; only a customer still on trial "
                        "can be bought early.");
    else
        rules_add_error(c->rej, "account_type", MW_REJ_INVALID_FIELD,
                        "Only a customer on trial can be bought early, but "
                        "this customer's account type is %s.",
                        mw_account_type_names[before->account_type]);
}

/* Appends a change when old and new text differ (NULL is none). */
static void add_change(struct mw_changes *changes, const char *field,
                       const char *old_value, const char *new_value)
{
    bool is_same = (old_value == NULL && new_value == NULL) ||
                   (old_value != NULL && new_value != NULL &&
                    strcmp(old_value, new_value) == 0);

    if (is_same || changes->count >= MW_MAX_FIELD_CHANGES)
        return;
    changes->changes[changes->count++] = (struct mw_field_change){
        .field = field, .old_value = old_value, .new_value = new_value};
}

static const char *bool_text(bool b)
{
    return b ? "true" : "false";
}

/* A domain list as a compact JSON array of A-labels, from arena. */
static const char *domains_text(struct check *c, const char *const *domains,
                                size_t count)
{
    size_t len = 3;
    char *text, *p;

    for (size_t i = 0; i < count; i++)
        len += strlen(domains[i]) + 3;
    text = arena_alloc(c->arena, len);
    if (text == NULL) {
        c->is_out_of_memory = true;
        return NULL;
    }
    p = text;
    *p++ = '[';
    for (size_t i = 0; i < count; i++)
        p += sprintf(p, "%s\"%s\"", i > 0 ? "," : "", domains[i]);
    *p++ = ']';
    *p = '\0';
    return text;
}

/* An empty string given for a removable text is its removal. */
static const char *new_text(const char *given, const char *old)
{
    if (given == NULL)
        return old;
    return given[0] == '\0' ? NULL : given;
}

/* Fills after and the change list from before and an accepted update. */
static void apply(struct check *c, const struct mw_update_request *req,
                  const struct mw_customer_state *before,
                  const struct domain_plan *plan,
                  struct mw_customer_state *after, struct mw_changes *changes)
{
    const char *old_licenses, *new_licenses;

    *after = *before;
    changes->count = 0;
    if (req->has_licenses) {
        after->licenses = req->licenses;
        after->has_licenses_observed_at = true;
        after->licenses_observed_at = req->observed_at;
    }
    if (req->has_monitor_mode)
        after->monitor_mode = req->monitor_mode;
    if (req->has_two_factor_required)
        after->two_factor_required = req->two_factor_required;
    if (req->has_msp_management)
        after->msp_management = req->msp_management;
    if (req->has_apply_global_rules)
        after->apply_global_rules = req->apply_global_rules;
    after->delivery_destination =
        new_text(req->delivery_destination, before->delivery_destination);
    after->policy_template_id =
        new_text(req->policy_template_id, before->policy_template_id);
    after->additional_domains = plan->domains;
    after->additional_domains_count = plan->count;
    if (req->has_account_type) {
        after->account_type = MW_ACCOUNT_BUY_NOW;
        after->is_trial = false;
        after->billable = true;
    }

    old_licenses = arena_printf(c->arena, "%d", (int)before->licenses);
    new_licenses = arena_printf(c->arena, "%d", (int)after->licenses);
    if (old_licenses == NULL || new_licenses == NULL)
        c->is_out_of_memory = true;
    else
        add_change(changes, "licenses", old_licenses, new_licenses);
#define CHANGE(member)                                                         \
    add_change(changes, #member, bool_text(before->member),                    \
               bool_text(after->member))
    CHANGE(monitor_mode);
    CHANGE(two_factor_required);
    CHANGE(msp_management);
    CHANGE(apply_global_rules);
#undef CHANGE
    add_change(changes, "delivery_destination", before->delivery_destination,
               after->delivery_destination);
    add_change(changes, "policy_template_id", before->policy_template_id,
               after->policy_template_id);
    if (req->add_domains_count + req->remove_domains_count > 0) {
        const char *old_domains = domains_text(
            c, before->additional_domains, before->additional_domains_count);
        const char *new_domains = domains_text(c, plan->domains, plan->count);

        if (old_domains != NULL && new_domains != NULL)
            add_change(changes, "additional_domains", old_domains, new_domains);
    }
    add_change(changes, "account_type",
               mw_account_type_names[before->account_type],
               mw_account_type_names[after->account_type]);
}

int rules_apply_update(const struct mw_update_request *req,
                       const struct mw_customer_state *before,
                       const char *const *taken, size_t taken_count,
                       struct mw_arena *arena, struct mw_customer_state *after,
                       struct mw_changes *changes, struct mw_rejection *rej)
{
    struct check c = {.arena = arena, .rej = rej};
    struct domain_plan plan;

    rej->count = 0;
    if (before == NULL) {
        rules_add_error(rej, "customer_id", MW_REJ_UNKNOWN_CUSTOMER,
                        "There is no customer with this id.");
        return 1;
    }
    if (strcmp(before->msp_id, req->msp_id) != 0) {
        rules_add_error(rej, "customer_id", MW_REJ_NOT_CUSTOMER_OWNER,
                        "The customer belongs to another MSP.");
        return 1;
    }
    if (before->is_terminated) {
        rules_add_error(rej, "customer_id", MW_REJ_ALREADY_TERMINATED,
                        "The customer is terminated and can no longer be "
                        "changed.");
        return 1;
    }
    judge_values(&c, req, before);
    judge_added(&c, req, before, taken, taken_count);
    judge_removed(&c, req, before);
    if (plan_domains(&c, req, before, &plan) != 0)
        return -1;
    judge_account_type(&c, req, before);
    if (rej->count > 0)
        return 1;
    apply(&c, req, before, &plan, after, changes);
    return c.is_out_of_memory ? -1 : 0;
}
