/*
 * Unit tests of the update rules (SPEC §3a), table-driven: each row is an
 * update of one of a few stored customers, with every error expected in
 * order (field and code) or, when accepted, every change expected in
 * order (field, old and new value as text).  Rows run through both
 * rules_check_update() and rules_apply_update(), as process does.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "arena.h"
#include "mw.h"
#include "rules.h"

#define CUSTOMER "9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d"
#define MAX_EXPECTED 6

/* The stored customers a row may update. */
enum customer {
    GATEWAY_BUY_NOW = 0, /* with delivery destination, two domains */
    M365_TRIAL,          /* monitor mode on, licenses observed at 2000 */
    NFR_UNIFIED,         /* below msp.example */
    CONVERTED_TRIAL,     /* a trial that converted */
    FULL_GATEWAY,        /* 100 additional domains */
    TERMINATED_GATEWAY,
    NO_CUSTOMER,
};

struct expected_error {
    const char *field; /* NULL ends the list */
    int code;
};

struct expected_change {
    const char *field; /* NULL ends the list */
    const char *old_value, *new_value;
};

struct update_case {
    const char *name;
    enum customer customer;
    struct mw_update_request update; /* ids and source filled when unset */
    struct expected_error errors[MAX_EXPECTED];
    struct expected_change changes[MAX_EXPECTED];
    const char *message; /* expected in the first error, when given */
};

static const char *two_domains[] = {"b.example", "c.example"};
static const char *taken[] = {"taken.example"};
static const char *full[MW_MAX_ADDITIONAL_DOMAINS];
static char full_names[MW_MAX_ADDITIONAL_DOMAINS][24];

#define DOMAINS(...)                                                           \
    .add_domains = (const char *[]){__VA_ARGS__},                              \
    .add_domains_count =                                                       \
        sizeof((const char *[]){__VA_ARGS__}) / sizeof(const char *)
#define REMOVE(...)                                                            \
    .remove_domains = (const char *[]){__VA_ARGS__},                           \
    .remove_domains_count =                                                    \
        sizeof((const char *[]){__VA_ARGS__}) / sizeof(const char *)
#define SYNC .source = MW_SOURCE_M365_SYNC
#define LICENSES(n) .has_licenses = true, .licenses = (n)
#define MONITOR(b) .has_monitor_mode = true, .monitor_mode = (b)
#define BUY .has_account_type = true, .account_type = MW_ACCOUNT_BUY_NOW

static const struct update_case cases[] = {
    {"licenses_from_the_sync_are_applied",
     M365_TRIAL,
     {SYNC, LICENSES(30), .observed_at = 3000},
     .changes = {{"licenses", "10", "30"}}},
    {"an_update_that_changes_nothing_is_accepted_with_no_changes",
     GATEWAY_BUY_NOW,
     {.observed_at = 1},
     .changes = {{NULL}}},
    {"the_same_licenses_again_change_nothing",
     GATEWAY_BUY_NOW,
     {LICENSES(10), .observed_at = 5},
     .changes = {{NULL}}},
    {"a_sync_observed_before_the_last_one_is_stale",
     M365_TRIAL,
     {SYNC, LICENSES(12), .observed_at = 1999},
     .errors = {{"licenses", MW_REJ_STALE_UPDATE}},
     .message = "observed before"},
    {"a_sync_observed_at_the_same_instant_is_applied",
     M365_TRIAL,
     {SYNC, LICENSES(12), .observed_at = 2000},
     .changes = {{"licenses", "10", "12"}}},
    {"the_first_licenses_are_never_stale",
     GATEWAY_BUY_NOW,
     {SYNC, LICENSES(11), .observed_at = 1},
     .changes = {{"licenses", "10", "11"}}},
    {"a_sync_may_change_only_licenses",
     M365_TRIAL,
     {SYNC, LICENSES(11), MONITOR(false), DOMAINS("d.example")},
     .errors = {{"monitor_mode", MW_REJ_INVALID_FIELD},
                {"add_domains", MW_REJ_INVALID_FIELD}},
     .message = "only the licenses"},
    {"zero_licenses_are_invalid",
     GATEWAY_BUY_NOW,
     {LICENSES(0)},
     .errors = {{"licenses", MW_REJ_INVALID_FIELD}}},
    {"nfr_with_51_licenses_is_rejected",
     NFR_UNIFIED,
     {LICENSES(51)},
     .errors = {{"licenses", MW_REJ_NFR_LICENSE_LIMIT_EXCEEDED}}},
    {"monitor_mode_off_on_mesh_365_is_applied",
     M365_TRIAL,
     {MONITOR(false)},
     .changes = {{"monitor_mode", "true", "false"}}},
    {"monitor_mode_on_a_gateway_is_rejected",
     GATEWAY_BUY_NOW,
     {MONITOR(true)},
     .errors = {{"monitor_mode", MW_REJ_MONITOR_MODE_NOT_SUPPORTED}}},
    {"settings_change_in_schema_order",
     GATEWAY_BUY_NOW,
     {.has_apply_global_rules = true,
      .apply_global_rules = false,
      .has_two_factor_required = true,
      .two_factor_required = true,
      .policy_template_id = "strict"},
     .changes = {{"two_factor_required", "false", "true"},
                 {"apply_global_rules", "true", "false"},
                 {"policy_template_id", NULL, "strict"}}},
    {"a_new_delivery_destination_is_normalised",
     GATEWAY_BUY_NOW,
     {.delivery_destination = "MX2.Example.COM:2525"},
     .changes = {{"delivery_destination", "mx.example.com",
                  "mx2.example.com:2525"}}},
    {"a_delivery_destination_typo_is_invalid",
     GATEWAY_BUY_NOW,
     {.delivery_destination = "mx..example.com"},
     .errors = {{"delivery_destination", MW_REJ_INVALID_FIELD}}},
    {"removing_the_delivery_destination_of_a_gateway_is_refused",
     GATEWAY_BUY_NOW,
     {.delivery_destination = ""},
     .errors = {{"delivery_destination",
                 MW_REJ_DELIVERY_DESTINATION_REQUIRED}}},
    {"removing_the_delivery_destination_of_mesh_365_is_applied",
     M365_TRIAL,
     {.delivery_destination = ""},
     .changes = {{"delivery_destination", "mx.example.com", NULL}}},
    {"an_added_domain_is_normalised_and_appended",
     GATEWAY_BUY_NOW,
     {DOMAINS("Bücher.Example.")},
     .changes = {{"additional_domains", "[\"b.example\",\"c.example\"]",
                  "[\"b.example\",\"c.example\",\"xn--bcher-kva.example\"]"}}},
    {"a_removed_domain_leaves_the_list",
     GATEWAY_BUY_NOW,
     {REMOVE("B.example")},
     .changes = {{"additional_domains", "[\"b.example\",\"c.example\"]",
                  "[\"c.example\"]"}}},
    {"a_taken_domain_is_rejected",
     GATEWAY_BUY_NOW,
     {DOMAINS("taken.example", "free.example")},
     .errors = {{"add_domains", MW_REJ_DOMAIN_ALREADY_PROVISIONED}},
     .message = "taken.example"},
    {"adding_a_domain_the_customer_has_is_invalid",
     GATEWAY_BUY_NOW,
     {DOMAINS("a.example")},
     .errors = {{"add_domains", MW_REJ_INVALID_FIELD}}},
    {"a_domain_given_twice_is_invalid",
     GATEWAY_BUY_NOW,
     {DOMAINS("d.example", "D.example")},
     .errors = {{"add_domains", MW_REJ_INVALID_FIELD}}},
    {"a_domain_added_and_removed_is_invalid",
     GATEWAY_BUY_NOW,
     {DOMAINS("d.example"), REMOVE("d.example")},
     .errors = {{"remove_domains", MW_REJ_INVALID_FIELD}}},
    {"an_invalid_domain_is_invalid",
     GATEWAY_BUY_NOW,
     {DOMAINS("no_underscore.example")},
     .errors = {{"add_domains", MW_REJ_INVALID_FIELD}}},
    {"the_primary_domain_cannot_be_removed",
     GATEWAY_BUY_NOW,
     {REMOVE("a.example")},
     .errors = {{"remove_domains", MW_REJ_INVALID_FIELD}},
     .message = "primary"},
    {"a_domain_not_the_customers_cannot_be_removed",
     GATEWAY_BUY_NOW,
     {REMOVE("z.example")},
     .errors = {{"remove_domains", MW_REJ_INVALID_FIELD}}},
    {"nfr_domains_stay_below_the_msp_domain",
     NFR_UNIFIED,
     {DOMAINS("shop.msp.example", "notmsp.example")},
     .errors = {{"add_domains", MW_REJ_NFR_DOMAIN_NOT_MSP_DOMAIN}}},
    {"more_than_100_additional_domains_is_invalid",
     FULL_GATEWAY,
     {DOMAINS("one-more.example")},
     .errors = {{"add_domains", MW_REJ_INVALID_FIELD}}},
    {"a_full_customer_may_swap_a_domain",
     FULL_GATEWAY,
     {DOMAINS("one-more.example"), REMOVE("d0.example")},
     .changes = {{"additional_domains", NULL, NULL}}},
    {"buying_a_trial_early_makes_it_billable",
     M365_TRIAL,
     {BUY},
     .changes = {{"account_type", "TRIAL", "BUY_NOW"}}},
    {"buying_a_converted_trial_is_invalid",
     CONVERTED_TRIAL,
     {BUY},
     .errors = {{"account_type", MW_REJ_INVALID_FIELD}},
     .message = "already converted"},
    {"buying_a_buy_now_account_is_invalid",
     GATEWAY_BUY_NOW,
     {BUY},
     .errors = {{"account_type", MW_REJ_INVALID_FIELD}}},
    {"changing_to_a_trial_is_invalid",
     GATEWAY_BUY_NOW,
     {.has_account_type = true, .account_type = MW_ACCOUNT_TRIAL},
     .errors = {{"account_type", MW_REJ_INVALID_FIELD}}},
    {"an_unknown_customer_is_rejected",
     NO_CUSTOMER,
     {LICENSES(5)},
     .errors = {{"customer_id", MW_REJ_UNKNOWN_CUSTOMER}}},
    {"another_msps_customer_is_rejected",
     GATEWAY_BUY_NOW,
     {.msp_id = "msp-other", LICENSES(5)},
     .errors = {{"customer_id", MW_REJ_NOT_CUSTOMER_OWNER}}},
    {"a_terminated_customer_is_rejected",
     TERMINATED_GATEWAY,
     {LICENSES(5)},
     .errors = {{"customer_id", MW_REJ_ALREADY_TERMINATED}}},
    {"a_customer_id_that_is_no_uuid_is_invalid",
     GATEWAY_BUY_NOW,
     {.customer_id = "not-a-uuid"},
     .errors = {{"customer_id", MW_REJ_INVALID_FIELD}}},
    {"every_failing_field_is_reported_in_order",
     M365_TRIAL,
     {LICENSES(11), .observed_at = 1, DOMAINS("taken.example"),
      REMOVE("a.example"), .delivery_destination = "mx2.example.com"},
     .errors = {{"licenses", MW_REJ_STALE_UPDATE},
                {"add_domains", MW_REJ_DOMAIN_ALREADY_PROVISIONED},
                {"remove_domains", MW_REJ_INVALID_FIELD}}},
};

/* The stored customer of a row, or NULL for NO_CUSTOMER. */
static const struct mw_customer_state *stored(enum customer which,
                                              struct mw_customer_state *s)
{
    memset(s, 0, sizeof(*s));
    s->customer_id = CUSTOMER;
    s->msp_id = "msp-0001";
    s->msp_domain = "msp.example";
    s->service = MW_SERVICE_MESH_GATEWAY;
    s->account_type = MW_ACCOUNT_BUY_NOW;
    s->billable = true;
    s->licenses = 10;
    s->msp_management = true;
    s->apply_global_rules = true;
    s->delivery_destination = "mx.example.com";
    s->primary_domain = "a.example";
    s->additional_domains = two_domains;
    s->additional_domains_count = 2;
    switch (which) {
    case M365_TRIAL:
        s->service = MW_SERVICE_MESH_365;
        s->account_type = MW_ACCOUNT_TRIAL;
        s->is_trial = true;
        s->billable = false;
        s->monitor_mode = true;
        s->has_licenses_observed_at = true;
        s->licenses_observed_at = 2000;
        break;
    case NFR_UNIFIED:
        s->service = MW_SERVICE_MESH_UNIFIED;
        s->account_type = MW_ACCOUNT_NFR;
        s->billable = false;
        s->primary_domain = "msp.example";
        s->additional_domains_count = 0;
        break;
    case CONVERTED_TRIAL:
        s->account_type = MW_ACCOUNT_TRIAL;
        break;
    case FULL_GATEWAY:
        s->additional_domains = full;
        s->additional_domains_count = MW_MAX_ADDITIONAL_DOMAINS;
        break;
    case TERMINATED_GATEWAY:
        s->is_terminated = true;
        break;
    case NO_CUSTOMER:
        return NULL;
    case GATEWAY_BUY_NOW:
        break;
    }
    return s;
}

static void check_errors(const struct update_case *c,
                         const struct mw_rejection *rej)
{
    size_t want = 0;

    while (want < MAX_EXPECTED && c->errors[want].field != NULL)
        want++;
    for (size_t i = 0; i < rej->count || i < want; i++) {
        const char *seen = i < rej->count ? rej->errors[i].field : "(none)";
        const char *expected = i < want ? c->errors[i].field : "(none)";
        int seen_code = i < rej->count ? rej->errors[i].code : -1;
        int expected_code = i < want ? c->errors[i].code : -1;

        if (seen == NULL || strcmp(seen, expected) != 0 ||
            seen_code != expected_code)
            fail_msg("%s: error %zu: expected %s %d, seen %s %d (%s)", c->name,
                     i, expected, expected_code, seen ? seen : "(null)",
                     seen_code, i < rej->count ? rej->errors[i].message : "");
    }
    if (c->message != NULL && strstr(rej->errors[0].message, c->message) == 0)
        fail_msg("%s: expected \"%s\" in \"%s\"", c->name, c->message,
                 rej->errors[0].message);
}

static bool same_text(const char *want, const char *seen)
{
    return want == NULL ? seen == NULL
                        : seen != NULL && strcmp(want, seen) == 0;
}

static void check_changes(const struct update_case *c,
                          const struct mw_changes *changes)
{
    size_t want = 0;

    while (want < MAX_EXPECTED && c->changes[want].field != NULL)
        want++;
    if (changes->count != want)
        fail_msg("%s: expected %zu changes, seen %zu", c->name, want,
                 changes->count);
    for (size_t i = 0; i < want; i++) {
        const struct expected_change *e = &c->changes[i];
        const struct mw_field_change *s = &changes->changes[i];
        /* An expected change without values checks the field only. */
        bool is_field_only = e->old_value == NULL && e->new_value == NULL &&
                             strcmp(e->field, "additional_domains") == 0;

        if (strcmp(e->field, s->field) != 0 ||
            (!is_field_only && (!same_text(e->old_value, s->old_value) ||
                                !same_text(e->new_value, s->new_value))))
            fail_msg("%s: change %zu: expected %s %s -> %s, seen %s %s -> %s",
                     c->name, i, e->field, e->old_value, e->new_value, s->field,
                     s->old_value ? s->old_value : "(none)",
                     s->new_value ? s->new_value : "(none)");
    }
}

static void run_case(void **state)
{
    const struct update_case *c = *state;
    struct mw_update_request req = c->update, normalized;
    struct mw_customer_state before_storage, after;
    const struct mw_customer_state *before;
    struct mw_rejection rej;
    struct mw_changes changes = {0};
    struct mw_arena *arena = arena_new();
    int rc;

    assert_non_null(arena);
    if (req.request_id == NULL)
        req.request_id = "4b2f6c1e-8d3a-4f5b-9c7d-1e2f3a4b5c6d";
    if (req.requested_by == NULL)
        req.requested_by = "ops@msp.example";
    if (req.msp_id == NULL)
        req.msp_id = "msp-0001";
    if (req.customer_id == NULL)
        req.customer_id = CUSTOMER;
    before = stored(c->customer, &before_storage);
    rc = rules_check_update(&req, arena, &normalized, &rej);
    assert_int_not_equal(rc, -1);
    if (rc == 0)
        rc = rules_apply_update(&normalized, before, taken, 1, arena, &after,
                                &changes, &rej);
    assert_int_not_equal(rc, -1);
    if (c->errors[0].field != NULL) {
        if (rc != 1)
            fail_msg("%s: expected a rejection, the update was accepted",
                     c->name);
        check_errors(c, &rej);
    } else {
        if (rc != 0)
            fail_msg("%s: expected acceptance, seen %s: %s", c->name,
                     rej.errors[0].field, rej.errors[0].message);
        check_changes(c, &changes);
    }
    arena_destroy(arena);
}

/* Buying early leaves a billable BUY_NOW account; licenses stay. */
static void buying_early_sets_the_resulting_state(void **state)
{
    struct mw_update_request req = {.request_id =
                                        "4b2f6c1e-8d3a-4f5b-9c7d-1e2f3a4b5c6d",
                                    .requested_by = "ops@msp.example",
                                    .msp_id = "msp-0001",
                                    .customer_id = CUSTOMER,
                                    BUY,
                                    LICENSES(40),
                                    .observed_at = 2500};
    struct mw_customer_state before_storage, after;
    struct mw_rejection rej;
    struct mw_changes changes;
    struct mw_arena *arena = arena_new();

    (void)state;
    assert_int_equal(rules_check_update(&req, arena, &req, &rej), 0);
    assert_int_equal(rules_apply_update(&req,
                                        stored(M365_TRIAL, &before_storage),
                                        NULL, 0, arena, &after, &changes, &rej),
                     0);
    assert_int_equal(after.account_type, MW_ACCOUNT_BUY_NOW);
    assert_true(after.billable);
    assert_false(after.is_trial);
    assert_int_equal(after.licenses, 40);
    assert_true(after.has_licenses_observed_at);
    assert_int_equal(after.licenses_observed_at, 2500);
    assert_int_equal(changes.count, 2);
    arena_destroy(arena);
}

int main(void)
{
    struct CMUnitTest tests[sizeof(cases) / sizeof(cases[0]) + 1];
    size_t n = 0;

    for (int i = 0; i < MW_MAX_ADDITIONAL_DOMAINS; i++) {
        snprintf(full_names[i], sizeof(full_names[i]), "d%d.example", i);
        full[i] = full_names[i];
    }
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        tests[n] = (struct CMUnitTest){.name = cases[i].name,
                                       .test_func = run_case,
                                       .initial_state = (void *)&cases[i]};
        n++;
    }
    tests[n++] = (struct CMUnitTest)cmocka_unit_test(
        buying_early_sets_the_resulting_state);
    return _cmocka_run_group_tests("rules_update", tests, n, NULL, NULL);
}
