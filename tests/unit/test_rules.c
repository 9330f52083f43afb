/*
 * Unit tests of rules: the form's rules of SPEC §2 and §8, table-driven.
 * Each row of each table is its own cmocka test named after the behaviour
 * it proves; a request row starts from one valid request, changes what
 * the row says, and lists every error expected, in order, by field and
 * code.  A failing row prints what was expected and what was seen.
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

/* Long values for the length boundaries. */
#define S10 "abcdefghij"
#define S50 S10 S10 S10 S10 S10
#define S200 S50 S50 S50 S50
#define L63 S10 S10 S10 S10 S10 S10 "abc"
#define L64 L63 "d"

/* An edited string field set to null rather than left alone. */
static const char NONE[] = "(null)";

#define MAX_EXPECTED 10
#define MAX_EDIT_DOMAINS 4

/* What a row changes in the valid base request; zero means unchanged. */
struct edit {
    const char *request_id;
    const char *requested_by;
    const char *msp_id;
    const char *msp_domain;
    const char *company_name;
    const char *primary_domain;
    const char *additional[MAX_EDIT_DOMAINS];
    const char *delivery_destination;
    const char *default_admin_email;
    const char *policy_template_id;
    bool set_platform, set_service, set_account, set_licenses, set_monitor;
    int mail_platform, service, account_type;
    int32_t licenses;
    bool monitor_mode;
};

struct expected_error {
    const char *field; /* NULL ends the list */
    int code;
};

struct request_case {
    const char *name;
    struct edit edit;
    struct expected_error errors[MAX_EXPECTED]; /* none: valid */
    const char *message;                        /* of the first error */
    /* Normalised values expected on success (NULL: not checked). */
    const char *want_primary;
    const char *want_destination;
    const char *want_additional[MAX_EDIT_DOMAINS];
    bool want_no_destination;
};

#define PLATFORM(p) .set_platform = true, .mail_platform = MW_PLATFORM_##p
#define SERVICE(s) .set_service = true, .service = MW_SERVICE_##s
#define ACCOUNT(a) .set_account = true, .account_type = MW_ACCOUNT_##a
#define LICENSES(n) .set_licenses = true, .licenses = (n)
#define MONITOR(b) .set_monitor = true, .monitor_mode = (b)
/* A row that expects the request to be valid. */
#define NO_ERRORS                                                              \
    {                                                                          \
        {                                                                      \
            0                                                                  \
        }                                                                      \
    }
#define E(f, c)                                                                \
    {                                                                          \
#f, MW_REJ_##c                                                         \
    }

/* The valid request every row starts from. */
static struct mw_request base_request(void)
{
    struct mw_request req = {
        .request_id = "3f2b8c1e-4d5a-4b6c-8d7e-9f0a1b2c3d4e",
        .requested_at = 1700000000000,
        .requested_by = "tech@msp.net",
        .msp_id = "msp-42",
        .msp_domain = "msp.net",
        .mail_platform = MW_PLATFORM_MICROSOFT_365,
        .service = MW_SERVICE_MESH_GATEWAY,
        .company_name = "Example Widgets Ltd",
        .primary_domain = "customer.example",
        .additional_domains = NULL,
        .additional_domains_count = 0,
        .delivery_destination = "mail.customer.example",
        .licenses = 10,
        .default_admin_email = "admin@customer.example",
        .policy_template_id = NULL,
        .apply_global_rules = true,
        .msp_management = true,
        .two_factor_required = false,
        .monitor_mode = false,
        .account_type = MW_ACCOUNT_BUY_NOW,
    };
    return req;
}

static const char *edited(const char *base, const char *value)
{
    if (value == NONE)
        return NULL;
    return value != NULL ? value : base;
}

static void apply_edit(struct mw_request *req, const struct edit *e)
{
    req->request_id = edited(req->request_id, e->request_id);
    req->requested_by = edited(req->requested_by, e->requested_by);
    req->msp_id = edited(req->msp_id, e->msp_id);
    req->msp_domain = edited(req->msp_domain, e->msp_domain);
    req->company_name = edited(req->company_name, e->company_name);
    req->primary_domain = edited(req->primary_domain, e->primary_domain);
    req->delivery_destination =
        edited(req->delivery_destination, e->delivery_destination);
    req->default_admin_email =
        edited(req->default_admin_email, e->default_admin_email);
    req->policy_template_id =
        edited(req->policy_template_id, e->policy_template_id);
    if (e->additional[0] != NULL) {
        size_t n = 0;

        while (n < MAX_EDIT_DOMAINS && e->additional[n] != NULL)
            n++;
        req->additional_domains = (const char **)e->additional;
        req->additional_domains_count = n;
    }
    if (e->set_platform)
        req->mail_platform = e->mail_platform;
    if (e->set_service)
        req->service = e->service;
    if (e->set_account)
        req->account_type = e->account_type;
    if (e->set_licenses)
        req->licenses = e->licenses;
    if (e->set_monitor)
        req->monitor_mode = e->monitor_mode;
}

static bool is_valid_utf8(const char *s)
{
    const unsigned char *u = (const unsigned char *)s;

    while (*u != '\0') {
        int more = *u < 0x80                  ? 0
                   : *u >= 0xc2 && *u <= 0xdf ? 1
                   : *u >= 0xe0 && *u <= 0xef ? 2
                   : *u >= 0xf0 && *u <= 0xf4 ? 3
                                              : -1;

        if (more < 0)
            return false;
        u++;
        for (int k = 0; k < more; k++, u++) {
            if ((*u & 0xc0) != 0x80)
                return false;
        }
    }
    return true;
}

static void print_seen(const struct mw_rejection *rej)
{
    print_message("  seen %zu error(s):\n", rej->count);
    for (size_t i = 0; i < rej->count; i++)
        print_message("    %s %s: %s\n",
                      rej->errors[i].field ? rej->errors[i].field : "(null)",
                      mw_rejection_code_names[rej->errors[i].code],
                      rej->errors[i].message);
}

static void print_expected(const struct expected_error *want)
{
    print_message("  expected:\n");
    if (want[0].field == NULL)
        print_message("    no error (valid)\n");
    for (size_t i = 0; i < MAX_EXPECTED && want[i].field != NULL; i++)
        print_message("    %s %s\n", want[i].field,
                      mw_rejection_code_names[want[i].code]);
}

/*
 * Every message is a sentence for a person: a capital letter first, a full
 * stop last, valid UTF-8 whatever the request held.
 */
static void check_messages(const struct mw_rejection *rej)
{
    for (size_t i = 0; i < rej->count; i++) {
        const char *m = rej->errors[i].message;
        size_t len = strlen(m);

        if (len == 0 || m[0] < 'A' || m[0] > 'Z' || m[len - 1] != '.' ||
            !is_valid_utf8(m)) {
            print_message("  expected a sentence in valid UTF-8\n");
            print_seen(rej);
            fail();
        }
    }
}

static void check_rejection(const struct mw_rejection *rej,
                            const struct expected_error *want)
{
    size_t n = 0;

    while (n < MAX_EXPECTED && want[n].field != NULL)
        n++;
    check_messages(rej);
    if (rej->count != n)
        goto mismatch;
    for (size_t i = 0; i < n; i++) {
        if (rej->errors[i].field == NULL ||
            strcmp(rej->errors[i].field, want[i].field) != 0 ||
            rej->errors[i].code != want[i].code)
            goto mismatch;
    }
    return;
mismatch:
    print_expected(want);
    print_seen(rej);
    fail();
}

static void check_string(const char *what, const char *want, const char *seen)
{
    if (seen != NULL && strcmp(want, seen) == 0)
        return;
    print_message("  %s: expected \"%s\", seen \"%s\"\n", what, want,
                  seen ? seen : "(null)");
    fail();
}

static void run_request_case(void **state)
{
    const struct request_case *row = *state;
    struct mw_request req = base_request(), out;
    struct mw_rejection rej;
    struct mw_arena *arena = arena_new();
    bool want_valid = row->errors[0].field == NULL;
    int rc;

    assert_non_null(arena);
    apply_edit(&req, &row->edit);
    memset(&out, 0, sizeof(out));
    rc = rules_check_request(&req, arena, &out, &rej);
    if (rc != (want_valid ? 0 : 1)) {
        print_message("  return: expected %d, seen %d\n", want_valid ? 0 : 1,
                      rc);
        print_expected(row->errors);
        print_seen(&rej);
        fail();
    }
    check_rejection(&rej, row->errors);
    if (row->message != NULL)
        check_string("first message", row->message, rej.errors[0].message);
    if (want_valid) {
        if (row->want_primary != NULL)
            check_string("primary_domain", row->want_primary,
                         out.primary_domain);
        if (row->want_destination != NULL)
            check_string("delivery_destination", row->want_destination,
                         out.delivery_destination);
        if (row->want_no_destination && out.delivery_destination != NULL) {
            print_message("  delivery_destination: expected null, seen "
                          "\"%s\"\n",
                          out.delivery_destination);
            fail();
        }
        for (size_t i = 0;
             i < MAX_EDIT_DOMAINS && row->want_additional[i] != NULL; i++) {
            assert_true(i < out.additional_domains_count);
            check_string("additional_domains[i]", row->want_additional[i],
                         out.additional_domains[i]);
        }
    }
    arena_destroy(arena);
}

static const struct request_case request_cases[] = {
    /* The base request itself. */
    {.name = "base_gateway_request_is_valid",
     .edit = {0},
     .errors = NO_ERRORS,
     .want_primary = "customer.example",
     .want_destination = "mail.customer.example"},

    /* Licenses: 1 to 1,000,000. */
    {.name = "licenses_of_0_are_invalid",
     .edit = {LICENSES(0)},
     .errors = {E(licenses, INVALID_FIELD)}},
    {.name = "licenses_of_minus_1_are_invalid",
     .edit = {LICENSES(-1)},
     .errors = {E(licenses, INVALID_FIELD)}},
    {.name = "licenses_of_1_are_valid",
     .edit = {LICENSES(1)},
     .errors = NO_ERRORS},
    {.name = "licenses_of_1000000_are_valid",
     .edit = {LICENSES(1000000)},
     .errors = NO_ERRORS},
    {.name = "licenses_of_1000001_are_invalid",
     .edit = {LICENSES(1000001)},
     .errors = {E(licenses, INVALID_FIELD)},
     .message = "The number of licenses must be between 1 and 1,000,000, "
                "but the request has 1000001."},

    /* NFR: at most 50 licenses, only the MSP's own domains. */
    {.name = "nfr_with_50_licenses_is_valid",
     .edit = {ACCOUNT(NFR), LICENSES(50), .primary_domain = "msp.net"},
     .errors = NO_ERRORS},
    {.name = "nfr_with_51_licenses_is_rejected",
     .edit = {ACCOUNT(NFR), LICENSES(51), .primary_domain = "msp.net"},
     .errors = {E(licenses, NFR_LICENSE_LIMIT_EXCEEDED)}},
    {.name = "nfr_with_0_licenses_is_only_invalid",
     .edit = {ACCOUNT(NFR), LICENSES(0), .primary_domain = "msp.net"},
     .errors = {E(licenses, INVALID_FIELD)}},
    {.name = "buy_now_with_51_licenses_is_valid",
     .edit = {LICENSES(51)},
     .errors = NO_ERRORS},
    {.name = "nfr_on_the_msp_domain_is_valid",
     .edit = {ACCOUNT(NFR), .primary_domain = "msp.net"},
     .errors = NO_ERRORS},
    {.name = "nfr_on_a_subdomain_of_the_msp_domain_is_valid",
     .edit = {ACCOUNT(NFR), .primary_domain = "lab.msp.net",
              .additional = {"Deep.Lab.MSP.net."}},
     .errors = NO_ERRORS,
     .want_additional = {"deep.lab.msp.net"}},
    {.name = "nfr_on_a_foreign_domain_is_rejected",
     .edit = {ACCOUNT(NFR), .primary_domain = "customer.example"},
     .errors = {E(primary_domain, NFR_DOMAIN_NOT_MSP_DOMAIN)}},
    {.name = "nfr_on_notmsp_net_is_not_under_msp_net",
     .edit = {ACCOUNT(NFR), .primary_domain = "notmsp.net"},
     .errors = {E(primary_domain, NFR_DOMAIN_NOT_MSP_DOMAIN)},
     .message = "The primary domain \"notmsp.net\" is neither the MSP domain "
                "\"msp.net\" nor below it; an NFR account is only for the "
                "MSP's own domains."},
    {.name = "nfr_compares_normalised_msp_domain",
     .edit = {ACCOUNT(NFR), .msp_domain = "MSP.Net.",
              .primary_domain = "a.msp.net"},
     .errors = NO_ERRORS},
    {.name = "nfr_with_a_foreign_additional_domain_is_rejected",
     .edit = {ACCOUNT(NFR), .primary_domain = "msp.net",
              .additional = {"mail.msp.net", "other.example", "msp.net.evil"}},
     .errors = {E(additional_domains, NFR_DOMAIN_NOT_MSP_DOMAIN)}},
    {.name = "nfr_reports_domains_and_licenses_together",
     .edit = {ACCOUNT(NFR), LICENSES(51), .primary_domain = "customer.example",
              .additional = {"other.example"}},
     .errors = {E(primary_domain, NFR_DOMAIN_NOT_MSP_DOMAIN),
                E(additional_domains, NFR_DOMAIN_NOT_MSP_DOMAIN),
                E(licenses, NFR_LICENSE_LIMIT_EXCEEDED)}},
    {.name = "trial_on_a_foreign_domain_is_valid",
     .edit = {ACCOUNT(TRIAL), .primary_domain = "customer.example"},
     .errors = NO_ERRORS},

    /* Monitor mode: MESH_365 only. */
    {.name = "monitor_mode_with_mesh_365_is_valid",
     .edit = {SERVICE(MESH_365), MONITOR(true)},
     .errors = NO_ERRORS},
    {.name = "monitor_mode_with_mesh_gateway_is_rejected",
     .edit = {SERVICE(MESH_GATEWAY), MONITOR(true)},
     .errors = {E(monitor_mode, MONITOR_MODE_NOT_SUPPORTED)}},
    {.name = "monitor_mode_with_mesh_unified_is_rejected",
     .edit = {SERVICE(MESH_UNIFIED), MONITOR(true)},
     .errors = {E(monitor_mode, MONITOR_MODE_NOT_SUPPORTED)}},
    {.name = "monitor_mode_off_with_mesh_gateway_is_valid",
     .edit = {SERVICE(MESH_GATEWAY), MONITOR(false)},
     .errors = NO_ERRORS},

    /* Service against platform. */
    {.name = "mesh_365_on_microsoft_365_is_valid",
     .edit = {SERVICE(MESH_365), PLATFORM(MICROSOFT_365)},
     .errors = NO_ERRORS},
    {.name = "mesh_365_on_google_workspace_is_rejected",
     .edit = {SERVICE(MESH_365), PLATFORM(GOOGLE_WORKSPACE)},
     .errors = {E(service, SERVICE_NOT_SUPPORTED_ON_PLATFORM)},
     .message = "The service MESH_365 needs the mail platform MICROSOFT_365, "
                "but the request has GOOGLE_WORKSPACE."},
    {.name = "mesh_365_on_exchange_on_premises_is_rejected",
     .edit = {SERVICE(MESH_365), PLATFORM(EXCHANGE_ON_PREMISES)},
     .errors = {E(service, SERVICE_NOT_SUPPORTED_ON_PLATFORM)}},
    {.name = "mesh_365_on_other_is_rejected",
     .edit = {SERVICE(MESH_365), PLATFORM(OTHER)},
     .errors = {E(service, SERVICE_NOT_SUPPORTED_ON_PLATFORM)}},
    {.name = "mesh_unified_on_microsoft_365_is_valid",
     .edit = {SERVICE(MESH_UNIFIED), PLATFORM(MICROSOFT_365)},
     .errors = NO_ERRORS},
    {.name = "mesh_unified_on_google_workspace_is_rejected",
     .edit = {SERVICE(MESH_UNIFIED), PLATFORM(GOOGLE_WORKSPACE)},
     .errors = {E(service, SERVICE_NOT_SUPPORTED_ON_PLATFORM)}},
    {.name = "mesh_unified_on_exchange_on_premises_is_rejected",
     .edit = {SERVICE(MESH_UNIFIED), PLATFORM(EXCHANGE_ON_PREMISES)},
     .errors = {E(service, SERVICE_NOT_SUPPORTED_ON_PLATFORM)}},
    {.name = "mesh_unified_on_other_is_rejected",
     .edit = {SERVICE(MESH_UNIFIED), PLATFORM(OTHER)},
     .errors = {E(service, SERVICE_NOT_SUPPORTED_ON_PLATFORM)}},
    {.name = "mesh_gateway_on_google_workspace_is_valid",
     .edit = {SERVICE(MESH_GATEWAY), PLATFORM(GOOGLE_WORKSPACE)},
     .errors = NO_ERRORS},
    {.name = "mesh_gateway_on_exchange_on_premises_is_valid",
     .edit = {SERVICE(MESH_GATEWAY), PLATFORM(EXCHANGE_ON_PREMISES)},
     .errors = NO_ERRORS},
    {.name = "mesh_gateway_on_other_is_valid",
     .edit = {SERVICE(MESH_GATEWAY), PLATFORM(OTHER)},
     .errors = NO_ERRORS},

    /* Enums out of range. */
    {.name = "mail_platform_out_of_range_is_invalid",
     .edit = {.set_platform = true, .mail_platform = MW_PLATFORM_COUNT},
     .errors = {E(mail_platform, INVALID_FIELD)}},
    {.name = "service_out_of_range_is_invalid",
     .edit = {.set_service = true, .service = -1},
     .errors = {E(service, INVALID_FIELD)}},
    {.name = "account_type_out_of_range_is_invalid",
     .edit = {.set_account = true, .account_type = MW_ACCOUNT_COUNT},
     .errors = {E(account_type, INVALID_FIELD)}},

    /* Delivery destination: required for MX-based services. */
    {.name = "gateway_without_destination_is_rejected",
     .edit = {.delivery_destination = NONE},
     .errors = {E(delivery_destination, DELIVERY_DESTINATION_REQUIRED)}},
    {.name = "gateway_with_empty_destination_is_rejected",
     .edit = {.delivery_destination = ""},
     .errors = {E(delivery_destination, DELIVERY_DESTINATION_REQUIRED)}},
    {.name = "unified_without_destination_is_rejected",
     .edit = {SERVICE(MESH_UNIFIED), .delivery_destination = NONE},
     .errors = {E(delivery_destination, DELIVERY_DESTINATION_REQUIRED)}},
    {.name = "mesh_365_without_destination_is_valid",
     .edit = {SERVICE(MESH_365), .delivery_destination = NONE},
     .errors = NO_ERRORS,
     .want_no_destination = true},
    {.name = "mesh_365_with_a_destination_stores_it_lower_case",
     .edit = {SERVICE(MESH_365), .delivery_destination = "MX.Customer.Example"},
     .errors = NO_ERRORS,
     .want_destination = "mx.customer.example"},
    {.name = "mesh_365_with_a_typod_destination_is_rejected",
     .edit = {SERVICE(MESH_365),
              .delivery_destination = "mx..customer.example"},
     .errors = {E(delivery_destination, INVALID_FIELD)}},

    /* Delivery destinations that can be a mail host. */
    {.name = "destination_host_name_is_valid",
     .edit = {.delivery_destination = "mail.example.com"},
     .errors = NO_ERRORS,
     .want_destination = "mail.example.com"},
    {.name = "destination_upper_case_is_lowered",
     .edit = {.delivery_destination = "MAIL.Example.COM"},
     .errors = NO_ERRORS,
     .want_destination = "mail.example.com"},
    {.name = "destination_with_port_25_is_valid",
     .edit = {.delivery_destination = "mail.example.com:25"},
     .errors = NO_ERRORS,
     .want_destination = "mail.example.com:25"},
    {.name = "destination_with_port_1_is_valid",
     .edit = {.delivery_destination = "mail.example.com:1"},
     .errors = NO_ERRORS,
     .want_destination = "mail.example.com:1"},
    {.name = "destination_with_port_65535_is_valid",
     .edit = {.delivery_destination = "mail.example.com:65535"},
     .errors = NO_ERRORS,
     .want_destination = "mail.example.com:65535"},
    {.name = "destination_trailing_dot_is_stripped",
     .edit = {.delivery_destination = "mail.example.com."},
     .errors = NO_ERRORS,
     .want_destination = "mail.example.com"},
    {.name = "destination_ipv4_is_valid",
     .edit = {.delivery_destination = "192.0.2.10"},
     .errors = NO_ERRORS,
     .want_destination = "192.0.2.10"},
    {.name = "destination_private_ipv4_with_port_is_valid",
     .edit = {.delivery_destination = "10.0.0.5:2525"},
     .errors = NO_ERRORS,
     .want_destination = "10.0.0.5:2525"},
    {.name = "destination_bracketed_ipv6_is_valid",
     .edit = {.delivery_destination = "[2001:db8::25]"},
     .errors = NO_ERRORS,
     .want_destination = "[2001:db8::25]"},
    {.name = "destination_bracketed_ipv6_with_port_is_lowered",
     .edit = {.delivery_destination = "[2001:DB8::25]:587"},
     .errors = NO_ERRORS,
     .want_destination = "[2001:db8::25]:587"},
    {.name = "destination_idn_becomes_a_labels",
     .edit = {.delivery_destination = "Smtp.Bücher.example"},
     .errors = NO_ERRORS,
     .want_destination = "smtp.xn--bcher-kva.example"},
    {.name = "destination_label_of_63_is_valid",
     .edit = {.delivery_destination = L63 ".example.com"},
     .errors = NO_ERRORS},

    /* Delivery destinations with typos. */
    {.name = "destination_with_a_space_is_invalid",
     .edit = {.delivery_destination = "mail .example.com"},
     .errors = {E(delivery_destination, INVALID_FIELD)},
     .message = "The delivery destination \"mail .example.com\" is not a "
                "valid host name: it contains a space."},
    {.name = "destination_with_an_empty_label_is_invalid",
     .edit = {.delivery_destination = "mail..example.com"},
     .errors = {E(delivery_destination, INVALID_FIELD)}},
    {.name = "destination_with_a_leading_dot_is_invalid",
     .edit = {.delivery_destination = ".mail.example.com"},
     .errors = {E(delivery_destination, INVALID_FIELD)}},
    {.name = "destination_single_label_is_invalid",
     .edit = {.delivery_destination = "mailserver"},
     .errors = {E(delivery_destination, INVALID_FIELD)}},
    {.name = "destination_localhost_is_invalid",
     .edit = {.delivery_destination = "localhost:25"},
     .errors = {E(delivery_destination, INVALID_FIELD)}},
    {.name = "destination_numeric_tld_is_invalid",
     .edit = {.delivery_destination = "mail.example.123"},
     .errors = {E(delivery_destination, INVALID_FIELD)}},
    {.name = "destination_with_an_underscore_is_invalid",
     .edit = {.delivery_destination = "mail_1.example.com"},
     .errors = {E(delivery_destination, INVALID_FIELD)}},
    {.name = "destination_with_a_slash_is_invalid",
     .edit = {.delivery_destination = "mail.example.com/"},
     .errors = {E(delivery_destination, INVALID_FIELD)}},
    {.name = "destination_with_an_at_sign_is_invalid",
     .edit = {.delivery_destination = "postmaster@example.com"},
     .errors = {E(delivery_destination, INVALID_FIELD)}},
    {.name = "destination_with_a_leading_hyphen_is_invalid",
     .edit = {.delivery_destination = "-mail.example.com"},
     .errors = {E(delivery_destination, INVALID_FIELD)}},
    {.name = "destination_label_of_64_is_invalid",
     .edit = {.delivery_destination = L64 ".example.com"},
     .errors = {E(delivery_destination, INVALID_FIELD)}},
    {.name = "destination_name_of_259_is_invalid",
     .edit = {.delivery_destination = L63 "." L63 "." L63 "." L63 ".com"},
     .errors = {E(delivery_destination, INVALID_FIELD)}},
    {.name = "destination_of_261_characters_is_invalid",
     .edit = {.delivery_destination = S200 S50 S10 "a"},
     .errors = {E(delivery_destination, INVALID_FIELD)}},
    {.name = "destination_with_port_0_is_invalid",
     .edit = {.delivery_destination = "mail.example.com:0"},
     .errors = {E(delivery_destination, INVALID_FIELD)}},
    {.name = "destination_with_port_65536_is_invalid",
     .edit = {.delivery_destination = "mail.example.com:65536"},
     .errors = {E(delivery_destination, INVALID_FIELD)},
     .message = "The delivery destination \"mail.example.com:65536\" is not "
                "valid: the port must be between 1 and 65535."},
    {.name = "destination_with_a_trailing_colon_is_invalid",
     .edit = {.delivery_destination = "mail.example.com:"},
     .errors = {E(delivery_destination, INVALID_FIELD)}},
    {.name = "destination_with_a_named_port_is_invalid",
     .edit = {.delivery_destination = "mail.example.com:smtp"},
     .errors = {E(delivery_destination, INVALID_FIELD)}},
    {.name = "destination_with_a_url_scheme_is_invalid",
     .edit = {.delivery_destination = "smtp://mail.example.com"},
     .errors = {E(delivery_destination, INVALID_FIELD)},
     .message = "The delivery destination \"smtp://mail.example.com\" is "
                "not valid: it is a URL; give only the host name, such as "
                "mail.example.com."},
    {.name = "destination_with_only_a_port_is_invalid",
     .edit = {.delivery_destination = ":25"},
     .errors = {E(delivery_destination, INVALID_FIELD)}},
    {.name = "destination_unbracketed_ipv6_is_invalid",
     .edit = {.delivery_destination = "2001:db8::25"},
     .errors = {E(delivery_destination, INVALID_FIELD)}},
    {.name = "destination_ipv6_without_closing_bracket_is_invalid",
     .edit = {.delivery_destination = "[2001:db8::25"},
     .errors = {E(delivery_destination, INVALID_FIELD)}},
    {.name = "destination_bad_ipv6_is_invalid",
     .edit = {.delivery_destination = "[2001:db8::zz]"},
     .errors = {E(delivery_destination, INVALID_FIELD)}},
    {.name = "destination_ipv6_loopback_is_invalid",
     .edit = {.delivery_destination = "[::1]"},
     .errors = {E(delivery_destination, INVALID_FIELD)}},
    {.name = "destination_ipv4_above_255_is_invalid",
     .edit = {.delivery_destination = "256.1.1.1"},
     .errors = {E(delivery_destination, INVALID_FIELD)}},
    {.name = "destination_ipv4_with_three_numbers_is_invalid",
     .edit = {.delivery_destination = "192.168.1"},
     .errors = {E(delivery_destination, INVALID_FIELD)}},
    {.name = "destination_ipv4_with_a_leading_zero_is_invalid",
     .edit = {.delivery_destination = "192.168.01.1"},
     .errors = {E(delivery_destination, INVALID_FIELD)}},
    {.name = "destination_ipv4_unspecified_is_invalid",
     .edit = {.delivery_destination = "0.0.0.0"},
     .errors = {E(delivery_destination, INVALID_FIELD)}},
    {.name = "destination_ipv4_loopback_is_invalid",
     .edit = {.delivery_destination = "127.0.0.1:25"},
     .errors = {E(delivery_destination, INVALID_FIELD)}},
    {.name = "destination_with_a_tab_is_invalid",
     .edit = {.delivery_destination = "mail.example.com\t"},
     .errors = {E(delivery_destination, INVALID_FIELD)}},
    {.name = "destination_not_utf8_is_invalid",
     .edit = {.delivery_destination = "mail.ex\xff"
                                      "ample.com"},
     .errors = {E(delivery_destination, INVALID_FIELD)}},

    /* Domains: normalised, no duplicates. */
    {.name = "primary_idn_becomes_a_labels",
     .edit = {.primary_domain = "Bücher.example"},
     .errors = NO_ERRORS,
     .want_primary = "xn--bcher-kva.example"},
    {.name = "primary_upper_case_and_trailing_dot_are_normalised",
     .edit = {.primary_domain = "Customer.EXAMPLE."},
     .errors = NO_ERRORS,
     .want_primary = "customer.example"},
    {.name = "additional_domains_are_normalised",
     .edit = {.additional = {"WWW.Customer.Example.", "straße.example"}},
     .errors = NO_ERRORS,
     .want_additional = {"www.customer.example", "xn--strae-oqa.example"}},
    {.name = "primary_repeated_in_additional_is_invalid",
     .edit = {.additional = {"other.example", "CUSTOMER.example."}},
     .errors = {E(additional_domains, INVALID_FIELD)}},
    {.name = "additional_domain_listed_twice_is_invalid",
     .edit = {.additional = {"a.example", "b.example", "A.Example"}},
     .errors = {E(additional_domains, INVALID_FIELD)},
     .message = "The additional domain \"A.Example\" repeats an earlier "
                "additional domain (a.example); a domain may appear only "
                "once in a request."},
    {.name = "idn_and_its_a_label_are_duplicates",
     .edit = {.primary_domain = "bücher.example",
              .additional = {"xn--bcher-kva.example"}},
     .errors = {E(additional_domains, INVALID_FIELD)}},
    {.name = "invalid_and_duplicate_additional_domains_are_both_reported",
     .edit = {.additional = {"a.example", "bad_one.example", "a.example", "x"}},
     .errors = {E(additional_domains, INVALID_FIELD),
                E(additional_domains, INVALID_FIELD)}},
    {.name = "empty_additional_domain_is_invalid",
     .edit = {.additional = {"a.example", ""}},
     .errors = {E(additional_domains, INVALID_FIELD)}},
    {.name = "primary_single_label_is_invalid",
     .edit = {.primary_domain = "customer"},
     .errors = {E(primary_domain, INVALID_FIELD)},
     .message = "The primary domain \"customer\" is not a valid domain name: "
                "it is a single label; a domain needs at least two, such as "
                "example.com."},
    {.name = "primary_with_underscore_is_invalid",
     .edit = {.primary_domain = "my_company.example"},
     .errors = {E(primary_domain, INVALID_FIELD)}},
    {.name = "primary_with_numeric_tld_is_invalid",
     .edit = {.primary_domain = "customer.42"},
     .errors = {E(primary_domain, INVALID_FIELD)}},
    {.name = "primary_ip_address_is_invalid",
     .edit = {.primary_domain = "192.0.2.1"},
     .errors = {E(primary_domain, INVALID_FIELD)}},
    {.name = "primary_missing_is_required",
     .edit = {.primary_domain = ""},
     .errors = {E(primary_domain, REQUIRED_FIELD_MISSING)}},
    {.name = "primary_with_a_bad_a_label_is_invalid",
     .edit = {.primary_domain = "xn--zz.example"},
     .errors = {E(primary_domain, INVALID_FIELD)}},
    {.name = "primary_with_a_disallowed_symbol_is_invalid",
     .edit = {.primary_domain = "\xe2\x98\x83.example"},
     .errors = {E(primary_domain, INVALID_FIELD)}},
    {.name = "msp_domain_invalid_is_reported_and_skips_nfr",
     .edit = {ACCOUNT(NFR), .msp_domain = "msp"},
     .errors = {E(msp_domain, INVALID_FIELD)}},

    /* E-mail addresses. */
    {.name = "admin_email_plain_is_valid",
     .edit = {.default_admin_email = "first.last+tag@sub.example.co.uk"},
     .errors = NO_ERRORS},
    {.name = "admin_email_upper_case_is_valid",
     .edit = {.default_admin_email = "ADMIN@CUSTOMER.EXAMPLE"},
     .errors = NO_ERRORS},
    {.name = "admin_email_with_idn_domain_is_valid",
     .edit = {.default_admin_email = "admin@bücher.example"},
     .errors = NO_ERRORS},
    {.name = "admin_email_with_unicode_local_part_is_valid",
     .edit = {.default_admin_email = "jürgen@customer.example"},
     .errors = NO_ERRORS},
    {.name = "admin_email_local_part_of_64_is_valid",
     .edit = {.default_admin_email = L64 "@customer.example"},
     .errors = NO_ERRORS},
    {.name = "admin_email_missing_is_required",
     .edit = {.default_admin_email = NONE},
     .errors = {E(default_admin_email, REQUIRED_FIELD_MISSING)}},
    {.name = "admin_email_empty_is_required",
     .edit = {.default_admin_email = ""},
     .errors = {E(default_admin_email, REQUIRED_FIELD_MISSING)}},
    {.name = "admin_email_without_at_is_invalid",
     .edit = {.default_admin_email = "admin.customer.example"},
     .errors = {E(default_admin_email, INVALID_FIELD)}},
    {.name = "admin_email_with_two_ats_is_invalid",
     .edit = {.default_admin_email = "admin@@customer.example"},
     .errors = {E(default_admin_email, INVALID_FIELD)}},
    {.name = "admin_email_with_empty_local_part_is_invalid",
     .edit = {.default_admin_email = "@customer.example"},
     .errors = {E(default_admin_email, INVALID_FIELD)}},
    {.name = "admin_email_with_space_is_invalid",
     .edit = {.default_admin_email = "ad min@customer.example"},
     .errors = {E(default_admin_email, INVALID_FIELD)},
     .message = "The default admin e-mail address \"ad min@customer.example\" "
                "is not valid: the part before the @ contains a space."},
    {.name = "admin_email_with_single_label_domain_is_invalid",
     .edit = {.default_admin_email = "admin@localhost"},
     .errors = {E(default_admin_email, INVALID_FIELD)},
     .message = "The default admin e-mail address \"admin@localhost\" has an "
                "invalid domain after the @: it is a single label; a domain "
                "needs at least two, such as example.com."},
    {.name = "admin_email_with_empty_domain_is_invalid",
     .edit = {.default_admin_email = "admin@"},
     .errors = {E(default_admin_email, INVALID_FIELD)}},
    {.name = "admin_email_with_underscore_in_domain_is_invalid",
     .edit = {.default_admin_email = "admin@cust_omer.example"},
     .errors = {E(default_admin_email, INVALID_FIELD)}},
    {.name = "admin_email_local_part_of_65_is_invalid",
     .edit = {.default_admin_email = L64 "e@customer.example"},
     .errors = {E(default_admin_email, INVALID_FIELD)}},
    {.name = "admin_email_of_254_characters_is_valid",
     .edit = {.default_admin_email = S50 S10 "ab@" L63 "." L63 "." L63},
     .errors = NO_ERRORS},
    {.name = "admin_email_of_255_characters_is_invalid",
     .edit = {.default_admin_email = L63 "@" L63 "." L63 "." L63},
     .errors = {E(default_admin_email, INVALID_FIELD)}},
    {.name = "admin_email_with_a_comma_is_invalid",
     .edit = {.default_admin_email = "a,b@customer.example"},
     .errors = {E(default_admin_email, INVALID_FIELD)}},
    {.name = "admin_email_with_double_dot_is_invalid",
     .edit = {.default_admin_email = "first..last@customer.example"},
     .errors = {E(default_admin_email, INVALID_FIELD)}},
    {.name = "requested_by_not_an_email_is_invalid",
     .edit = {.requested_by = "tech"},
     .errors = {E(requested_by, INVALID_FIELD)}},
    {.name = "requested_by_missing_is_required",
     .edit = {.requested_by = ""},
     .errors = {E(requested_by, REQUIRED_FIELD_MISSING)}},

    /* Ids, names and texts. */
    {.name = "request_id_not_a_uuid_is_invalid",
     .edit = {.request_id = "req-1"},
     .errors = {E(request_id, INVALID_FIELD)}},
    {.name = "request_id_missing_is_required",
     .edit = {.request_id = NONE},
     .errors = {E(request_id, REQUIRED_FIELD_MISSING)}},
    {.name = "msp_id_of_64_is_valid",
     .edit = {.msp_id = L64},
     .errors = NO_ERRORS},
    {.name = "msp_id_of_65_is_invalid",
     .edit = {.msp_id = L64 "e"},
     .errors = {E(msp_id, INVALID_FIELD)}},
    {.name = "msp_id_empty_is_required",
     .edit = {.msp_id = ""},
     .errors = {E(msp_id, REQUIRED_FIELD_MISSING)}},
    {.name = "company_name_of_200_is_valid",
     .edit = {.company_name = S200},
     .errors = NO_ERRORS},
    {.name = "company_name_of_201_is_invalid",
     .edit = {.company_name = S200 "x"},
     .errors = {E(company_name, INVALID_FIELD)}},
    {.name = "company_name_of_200_code_points_in_any_script_is_valid",
     .edit = {.company_name =
                  "\xe6\xa0\xaa" /* 株 */ S50 S50 S50 S10 S10 S10 S10
                  "abcdefghi"},
     .errors = NO_ERRORS},
    {.name = "company_name_with_a_newline_is_invalid",
     .edit = {.company_name = "Example\nWidgets"},
     .errors = {E(company_name, INVALID_FIELD)}},
    {.name = "company_name_not_utf8_is_invalid",
     .edit = {.company_name = "Caf\xe9"},
     .errors = {E(company_name, INVALID_FIELD)},
     .message = "The company name \"Caf\\xE9\" is not valid UTF-8 text."},
    {.name = "company_name_with_a_c1_control_is_invalid",
     .edit = {.company_name = "Example\xc2\x85Widgets"},
     .errors = {E(company_name, INVALID_FIELD)}},
    {.name = "company_name_with_a_right_to_left_override_is_invalid",
     .edit = {.company_name = "Evil\xe2\x80\xae"
                              "Corp"},
     .errors = {E(company_name, INVALID_FIELD)},
     .message = "The company name \"Evil\\u202ECorp\" contains an invisible "
                "formatting character (U+202E) that changes how the text is "
                "shown; only printable characters are allowed."},
    {.name = "company_name_with_a_first_strong_isolate_is_invalid",
     .edit = {.company_name = "Evil\xe2\x81\xa8"
                              "Corp"},
     .errors = {E(company_name, INVALID_FIELD)}},
    {.name = "company_name_with_a_zero_width_space_is_invalid",
     .edit = {.company_name = "Evil\xe2\x80\x8b"},
     .errors = {E(company_name, INVALID_FIELD)}},
    {.name = "company_name_with_a_tag_character_is_invalid",
     .edit = {.company_name = "Evil\xf3\xa0\x81\x81"},
     .errors = {E(company_name, INVALID_FIELD)}},
    {.name = "company_name_with_a_zero_width_non_joiner_is_valid",
     .edit = {.company_name = "\xd9\x85\xdb\x8c\xe2\x80\x8c\xd8\xae"},
     .errors = NO_ERRORS},
    {.name = "policy_template_id_with_a_bidi_embedding_is_invalid",
     .edit = {.policy_template_id = "tpl\xe2\x80\xaa"
                                    "1"},
     .errors = {E(policy_template_id, INVALID_FIELD)}},
    {.name = "default_admin_email_with_a_bidi_override_is_invalid",
     .edit = {.default_admin_email = "admin@customer.example\xe2\x80\xae"},
     .errors = {E(default_admin_email, INVALID_FIELD)}},
    {.name = "company_name_empty_is_required",
     .edit = {.company_name = ""},
     .errors = {E(company_name, REQUIRED_FIELD_MISSING)}},
    {.name = "policy_template_id_of_64_is_valid",
     .edit = {.policy_template_id = L64},
     .errors = NO_ERRORS},
    {.name = "policy_template_id_of_65_is_invalid",
     .edit = {.policy_template_id = L64 "e"},
     .errors = {E(policy_template_id, INVALID_FIELD)}},
    {.name = "policy_template_id_empty_is_invalid",
     .edit = {.policy_template_id = ""},
     .errors = {E(policy_template_id, INVALID_FIELD)},
     .message = "The policy template id is empty; give 1 to 64 characters or "
                "leave it out."},

    /* Every failing field at once, in schema order. */
    {.name = "request_with_many_errors_reports_all_in_field_order",
     .edit = {.request_id = "nope",
              .company_name = "",
              .primary_domain = "bad_domain.example",
              .additional = {"ok.example", "ok.example"},
              PLATFORM(GOOGLE_WORKSPACE),
              SERVICE(MESH_UNIFIED),
              .delivery_destination = NONE,
              LICENSES(0),
              .default_admin_email = "admin",
              .policy_template_id = "",
              MONITOR(true)},
     .errors = {E(request_id, INVALID_FIELD),
                E(service, SERVICE_NOT_SUPPORTED_ON_PLATFORM),
                E(company_name, REQUIRED_FIELD_MISSING),
                E(primary_domain, INVALID_FIELD),
                E(additional_domains, INVALID_FIELD),
                E(delivery_destination, DELIVERY_DESTINATION_REQUIRED),
                E(licenses, INVALID_FIELD),
                E(default_admin_email, INVALID_FIELD),
                E(policy_template_id, INVALID_FIELD),
                E(monitor_mode, MONITOR_MODE_NOT_SUPPORTED)}},
    {.name = "request_with_every_header_field_wrong_reports_each",
     .edit = {.request_id = "",
              .requested_by = "a@b",
              .msp_id = "",
              .msp_domain = "msp..net",
              .set_platform = true,
              .mail_platform = 9,
              .set_service = true,
              .service = 9,
              .set_account = true,
              .account_type = 9},
     .errors = {E(request_id, REQUIRED_FIELD_MISSING),
                E(requested_by, INVALID_FIELD),
                E(msp_id, REQUIRED_FIELD_MISSING), E(msp_domain, INVALID_FIELD),
                E(mail_platform, INVALID_FIELD), E(service, INVALID_FIELD),
                E(account_type, INVALID_FIELD)}},
};

/* rules_normalize_domain on its own: input, result, words of the reason. */
struct domain_case {
    const char *name;
    const char *input;
    const char *want;   /* NULL: invalid */
    const char *reason; /* part of the reason when invalid */
};

static const struct domain_case domain_cases[] = {
    {"domain_idn_becomes_a_labels", "Bücher.example", "xn--bcher-kva.example",
     NULL},
    {"domain_upper_case_unicode_is_mapped", "BÜCHER.EXAMPLE",
     "xn--bcher-kva.example", NULL},
    {"domain_eszett_is_kept_nontransitional", "straße.de", "xn--strae-oqa.de",
     NULL},
    {"domain_ideographic_dot_separates_labels",
     "\xe4\xbe\x8b\xe3\x81\x88\xe3\x80\x82\xe3\x83\x86\xe3\x82\xb9\xe3\x83\x88",
     "xn--r8jz45g.xn--zckzah", NULL},
    {"domain_fullwidth_letters_are_mapped", "\xef\xbc\xa5\xef\xbc\xb8.com",
     "ex.com", NULL},
    {"domain_trailing_dot_is_stripped", "example.com.", "example.com", NULL},
    {"domain_upper_case_is_lowered", "EXAMPLE.Com", "example.com", NULL},
    {"domain_valid_a_label_is_kept", "XN--BCHER-KVA.example",
     "xn--bcher-kva.example", NULL},
    {"domain_double_hyphen_ascii_label_is_valid", "ab--cd.example",
     "ab--cd.example", NULL},
    {"domain_two_trailing_dots_are_invalid", "example.com..", NULL,
     "empty label"},
    {"domain_single_dot_is_invalid", ".", NULL, "empty label"},
    {"domain_empty_is_invalid", "", NULL, "empty"},
    {"domain_single_label_is_invalid", "example", NULL, "single label"},
    {"domain_numeric_tld_is_invalid", "example.123", NULL, "all digits"},
    {"domain_underscore_is_invalid", "_dmarc.example.com", NULL, "underscore"},
    {"domain_fullwidth_underscore_is_invalid",
     "a\xef\xbc\xbf"
     "b.com",
     NULL, "underscore"},
    {"domain_underscore_beside_unicode_is_invalid", "ä_b.com", NULL,
     "underscore"},
    {"domain_space_beside_unicode_is_invalid", "ä b.com", NULL, "space"},
    {"domain_ideographic_space_is_invalid",
     "a\xe3\x80\x80"
     "b.com",
     NULL, "space"},
    {"domain_label_of_64_is_invalid", L64 ".com", NULL, "63"},
    {"domain_unicode_label_too_long_is_invalid", "ü" L63 ".com", NULL, "63"},
    {"domain_of_254_octets_is_invalid", L63 "." L63 "." L63 "." S50 S10 "ab",
     NULL, "253"},
    {"domain_of_253_octets_is_valid", L63 "." L63 "." L63 "." S50 S10 "a",
     L63 "." L63 "." L63 "." S50 S10 "a", NULL},
    {"domain_trailing_hyphen_is_invalid", "example-.com", NULL, "hyphen"},
    {"domain_bad_a_label_is_invalid", "xn--zz.com", NULL, "A-label"},
    {"domain_zero_width_joiner_is_invalid",
     "a\xe2\x80\x8d"
     "b.com",
     NULL, "joiner"},
    {"domain_emoji_is_invalid", "\xf0\x9f\x92\xa9.la", NULL, "not allowed"},
    {"domain_not_utf8_is_invalid", "caf\xe9.com", NULL, "UTF-8"},
    {"domain_url_is_invalid", "https://example.com", NULL,
     "other than letters"},
};

static void run_domain_case(void **state)
{
    const struct domain_case *row = *state;
    struct mw_arena *arena = arena_new();
    const char *why = NULL;
    const char *seen;

    assert_non_null(arena);
    seen = rules_normalize_domain(row->input, arena, &why);
    if (row->want != NULL) {
        if (seen == NULL)
            print_message("  refused: %s\n", why);
        check_string("normalised domain", row->want, seen);
        assert_null(why);
    } else if (seen != NULL || why == NULL ||
               strstr(why, row->reason) == NULL) {
        print_message("  expected invalid because of \"%s\", seen \"%s\" "
                      "(why: %s)\n",
                      row->reason, seen ? seen : "(null)",
                      why ? why : "(null)");
        fail();
    }
    arena_destroy(arena);
}

struct under_case {
    const char *name;
    const char *domain;
    const char *parent;
    bool want;
};

static const struct under_case under_cases[] = {
    {"domain_equal_to_parent_is_under", "msp.net", "msp.net", true},
    {"subdomain_is_under_parent", "mail.msp.net", "msp.net", true},
    {"deep_subdomain_is_under_parent", "a.b.c.msp.net", "msp.net", true},
    {"notmsp_net_is_not_under_msp_net", "notmsp.net", "msp.net", false},
    {"parent_is_not_under_its_subdomain", "msp.net", "mail.msp.net", false},
    {"foreign_domain_is_not_under", "customer.example", "msp.net", false},
    {"suffix_without_dot_is_not_under", "xmsp.net", "msp.net", false},
    {"msp_net_evil_is_not_under_msp_net", "msp.net.evil", "msp.net", false},
};

static void run_under_case(void **state)
{
    const struct under_case *row = *state;
    bool seen = rules_domain_is_under(row->domain, row->parent);

    if (seen != row->want) {
        print_message("  is \"%s\" under \"%s\": expected %s, seen %s\n",
                      row->domain, row->parent, row->want ? "yes" : "no",
                      seen ? "yes" : "no");
        fail();
    }
}

struct termination_case {
    const char *name;
    struct mw_termination_request req;
    struct expected_error errors[MAX_EXPECTED];
};

#define REQ_ID "3f2b8c1e-4d5a-4b6c-8d7e-9f0a1b2c3d4e"
#define CUST_ID "0c9b2a1d-7e6f-4a5b-9c8d-1e2f3a4b5c6d"

static const struct termination_case termination_cases[] = {
    {"termination_valid_is_accepted",
     {REQ_ID, 1, "tech@msp.net", "msp-42", CUST_ID, false, 0},
     NO_ERRORS},
    {"termination_with_future_effective_time_is_accepted",
     {REQ_ID, 1, "tech@msp.net", "msp-42", CUST_ID, true, 4102444800000},
     NO_ERRORS},
    {"termination_customer_id_not_a_uuid_is_invalid",
     {REQ_ID, 1, "tech@msp.net", "msp-42", "customer-1", false, 0},
     {E(customer_id, INVALID_FIELD)}},
    {"termination_missing_customer_id_is_required",
     {REQ_ID, 1, "tech@msp.net", "msp-42", NULL, false, 0},
     {E(customer_id, REQUIRED_FIELD_MISSING)}},
    {"termination_with_every_field_wrong_reports_each",
     {"x", 1, "tech at msp.net", L64 "e", "", false, 0},
     {E(request_id, INVALID_FIELD), E(requested_by, INVALID_FIELD),
      E(msp_id, INVALID_FIELD), E(customer_id, REQUIRED_FIELD_MISSING)}},
};

static void run_termination_case(void **state)
{
    const struct termination_case *row = *state;
    struct mw_rejection rej;
    bool want_valid = row->errors[0].field == NULL;
    int rc = rules_check_termination(&row->req, &rej);

    if (rc != (want_valid ? 0 : 1)) {
        print_message("  return: expected %d, seen %d\n", want_valid ? 0 : 1,
                      rc);
        print_seen(&rej);
        fail();
    }
    check_rejection(&rej, row->errors);
}

/* ---- rejections decided after the claim ---- */

enum after_claim { TAKEN, TERMINATION, CONFLICT };

struct after_claim_case {
    const char *name;
    enum after_claim kind;
    const char *taken[3];   /* TAKEN: the domains held, NULL-ended */
    int code;               /* TERMINATION: the database's code */
    const char *request_id; /* CONFLICT */
    struct expected_error errors[MAX_EXPECTED];
    const char *message; /* of the first error */
};

static const struct after_claim_case after_claim_cases[] = {
    {"taken_primary_domain_is_named_on_primary_domain",
     TAKEN,
     {"contoso.com"},
     0,
     NULL,
     {E(primary_domain, DOMAIN_ALREADY_PROVISIONED)},
     "The domain \"contoso.com\" is already provisioned for another "
     "customer."},
    {"each_taken_domain_is_named_on_its_own_field",
     TAKEN,
     {"contoso.com", "fabrikam.com"},
     0,
     NULL,
     {E(primary_domain, DOMAIN_ALREADY_PROVISIONED),
      E(additional_domains, DOMAIN_ALREADY_PROVISIONED)},
     NULL},
    {"taken_without_a_domain_named_still_rejects_the_request",
     TAKEN,
     {NULL},
     0,
     NULL,
     {E(primary_domain, DOMAIN_ALREADY_PROVISIONED)},
     "A domain of this request is already provisioned for another "
     "customer."},
    {"termination_of_an_unknown_customer_says_there_is_none",
     TERMINATION,
     {NULL},
     MW_REJ_UNKNOWN_CUSTOMER,
     NULL,
     {E(customer_id, UNKNOWN_CUSTOMER)},
     "There is no customer with this id."},
    {"termination_by_another_msp_says_the_customer_is_not_theirs",
     TERMINATION,
     {NULL},
     MW_REJ_NOT_CUSTOMER_OWNER,
     NULL,
     {E(customer_id, NOT_CUSTOMER_OWNER)},
     "The customer belongs to another MSP."},
    {"second_termination_says_the_customer_is_already_terminated",
     TERMINATION,
     {NULL},
     MW_REJ_ALREADY_TERMINATED,
     NULL,
     {E(customer_id, ALREADY_TERMINATED)},
     "The customer is already terminated or has a termination scheduled."},
    {"termination_with_ids_that_cannot_be_stored_is_invalid",
     TERMINATION,
     {NULL},
     MW_REJ_INVALID_FIELD,
     NULL,
     {E(request_id, INVALID_FIELD)},
     NULL},
    {"conflicting_request_id_is_named_in_the_message",
     CONFLICT,
     {NULL},
     0,
     REQ_ID,
     {E(request_id, REQUEST_ID_CONFLICT)},
     "The request id \"" REQ_ID "\" was already used for a request with "
     "other content; the first request stands."},
    {"conflicting_hostile_request_id_is_quoted_safely",
     CONFLICT,
     {NULL},
     0,
     "a\"b\x01",
     {E(request_id, REQUEST_ID_CONFLICT)},
     "The request id \"a\\\"b\\x01\" was already used for a request "
     "with other content; the first request stands."},
};

static void run_after_claim_case(void **state)
{
    const struct after_claim_case *row = *state;
    struct mw_rejection rej;
    size_t count = 0;

    /* Whatever rej held before is replaced. */
    rej.count = 0;
    rules_add_error(&rej, "msp_id", MW_REJ_INVALID_FIELD, "Left over.");
    while (count < 3 && row->taken[count] != NULL)
        count++;
    switch (row->kind) {
    case TAKEN:
        rules_reject_taken_domains("contoso.com", row->taken, count, &rej);
        break;
    case TERMINATION:
        rules_reject_termination(row->code, &rej);
        break;
    case CONFLICT:
        rules_reject_conflict(row->request_id, &rej);
        break;
    }
    check_rejection(&rej, row->errors);
    if (row->message != NULL)
        check_string("message", row->message, rej.errors[0].message);
}

/* 100 additional domains are allowed, 101 are not. */
static void additional_domains_limit_is_100(void **state)
{
    static char names[MW_MAX_ADDITIONAL_DOMAINS + 1][32];
    static const char *list[MW_MAX_ADDITIONAL_DOMAINS + 1];
    struct mw_request req = base_request(), out;
    struct mw_rejection rej;
    struct mw_arena *arena = arena_new();
    static const struct expected_error too_many[] = {
        E(additional_domains, INVALID_FIELD), {0}};
    int rc;

    (void)state;
    assert_non_null(arena);
    for (int i = 0; i <= MW_MAX_ADDITIONAL_DOMAINS; i++) {
        snprintf(names[i], sizeof(names[i]), "d%d.customer.example", i);
        list[i] = names[i];
    }
    req.additional_domains = list;
    req.additional_domains_count = MW_MAX_ADDITIONAL_DOMAINS;
    rc = rules_check_request(&req, arena, &out, &rej);
    if (rc != 0) {
        print_message("  100 additional domains: expected valid\n");
        print_seen(&rej);
        fail();
    }
    assert_int_equal(out.additional_domains_count, MW_MAX_ADDITIONAL_DOMAINS);
    check_string("last additional domain", "d99.customer.example",
                 out.additional_domains[99]);
    req.additional_domains_count = MW_MAX_ADDITIONAL_DOMAINS + 1;
    rc = rules_check_request(&req, arena, &out, &rej);
    assert_int_equal(rc, 1);
    check_rejection(&rej, too_many);
    arena_destroy(arena);
}

/* The normalised copy owns its strings and keeps every other field. */
static void normalised_copy_lives_in_the_arena(void **state)
{
    char company[] = "Example Widgets Ltd";
    struct mw_request req = base_request(), out;
    struct mw_rejection rej;
    struct mw_arena *arena = arena_new();

    (void)state;
    assert_non_null(arena);
    req.company_name = company;
    req.policy_template_id = "tpl-7";
    req.two_factor_required = true;
    req.apply_global_rules = false;
    assert_int_equal(rules_check_request(&req, arena, &out, &rej), 0);
    assert_int_equal(rej.count, 0);
    company[0] = 'X';
    check_string("company_name", "Example Widgets Ltd", out.company_name);
    check_string("policy_template_id", "tpl-7", out.policy_template_id);
    check_string("request_id", req.request_id, out.request_id);
    assert_ptr_not_equal(out.request_id, req.request_id);
    assert_true(out.two_factor_required);
    assert_false(out.apply_global_rules);
    assert_true(out.msp_management);
    assert_int_equal(out.licenses, req.licenses);
    assert_int_equal(out.requested_at, req.requested_at);
    assert_int_equal(out.additional_domains_count, 0);
    arena_destroy(arena);
}

/* A long hostile value still gives a whole, valid UTF-8 message. */
static void long_hostile_value_gives_a_valid_message(void **state)
{
    char name[1200];
    struct mw_request req = base_request(), out;
    struct mw_rejection rej;
    struct mw_arena *arena = arena_new();
    size_t len = 0;

    (void)state;
    assert_non_null(arena);
    while (len + 3 < sizeof(name) - 2) {
        memcpy(name + len, "\xc3\xa9\x01", 3); /* é and a control */
        len += 3;
    }
    name[len++] = '\xff';
    name[len] = '\0';
    req.company_name = name;
    req.primary_domain = name;
    req.delivery_destination = name;
    req.default_admin_email = name;
    assert_int_equal(rules_check_request(&req, arena, &out, &rej), 1);
    assert_int_equal(rej.count, 4);
    check_messages(&rej);
    for (size_t i = 0; i < rej.count; i++)
        assert_true(strlen(rej.errors[i].message) <
                    sizeof(rej.errors[i].message));
    arena_destroy(arena);
}

/* Errors past MW_MAX_REJECTION_ERRORS are dropped, never overflowed. */
static void rejection_list_stops_at_its_capacity(void **state)
{
    struct mw_rejection rej = {0};

    (void)state;
    for (int i = 0; i < MW_MAX_REJECTION_ERRORS + 5; i++)
        rules_add_error(&rej, "licenses", MW_REJ_INVALID_FIELD,
                        "Error number %d.", i);
    assert_int_equal(rej.count, MW_MAX_REJECTION_ERRORS);
    check_string("last message", "Error number 31.",
                 rej.errors[MW_MAX_REJECTION_ERRORS - 1].message);
}

/* A message cut to its buffer ends on a whole character. */
static void long_message_is_cut_between_characters(void **state)
{
    char text[400] = "";
    struct mw_rejection rej = {0};
    size_t len;

    (void)state;
    for (int i = 0; i < 150; i++)
        strcat(text, "\xc3\xa9"); /* 300 bytes of é */
    rules_add_error(&rej, "company_name", MW_REJ_INVALID_FIELD, "%s", text);
    len = strlen(rej.errors[0].message);
    if (len != 254 || !is_valid_utf8(rej.errors[0].message)) {
        print_message(
            "  expected 254 bytes of valid UTF-8, seen %zu bytes "
            "(%s)\n",
            len, is_valid_utf8(rej.errors[0].message) ? "valid" : "invalid");
        fail();
    }
}

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

int main(void)
{
    static const struct CMUnitTest fixed[] = {
        cmocka_unit_test(additional_domains_limit_is_100),
        cmocka_unit_test(normalised_copy_lives_in_the_arena),
        cmocka_unit_test(long_hostile_value_gives_a_valid_message),
        cmocka_unit_test(rejection_list_stops_at_its_capacity),
        cmocka_unit_test(long_message_is_cut_between_characters),
    };
    static struct CMUnitTest tests[COUNT(request_cases) + COUNT(domain_cases) +
                                   COUNT(under_cases) +
                                   COUNT(termination_cases) +
                                   COUNT(after_claim_cases) + COUNT(fixed)];
    size_t n = 0;

    /* One test per row, named after the behaviour the row proves. */
    for (size_t i = 0; i < COUNT(request_cases); i++)
        tests[n++] =
            (struct CMUnitTest){.name = request_cases[i].name,
                                .test_func = run_request_case,
                                .initial_state = (void *)&request_cases[i]};
    for (size_t i = 0; i < COUNT(domain_cases); i++)
        tests[n++] =
            (struct CMUnitTest){.name = domain_cases[i].name,
                                .test_func = run_domain_case,
                                .initial_state = (void *)&domain_cases[i]};
    for (size_t i = 0; i < COUNT(under_cases); i++)
        tests[n++] =
            (struct CMUnitTest){.name = under_cases[i].name,
                                .test_func = run_under_case,
                                .initial_state = (void *)&under_cases[i]};
    for (size_t i = 0; i < COUNT(termination_cases); i++)
        tests[n++] =
            (struct CMUnitTest){.name = termination_cases[i].name,
                                .test_func = run_termination_case,
                                .initial_state = (void *)&termination_cases[i]};
    for (size_t i = 0; i < COUNT(after_claim_cases); i++)
        tests[n++] =
            (struct CMUnitTest){.name = after_claim_cases[i].name,
                                .test_func = run_after_claim_case,
                                .initial_state = (void *)&after_claim_cases[i]};
    for (size_t i = 0; i < COUNT(fixed); i++)
        tests[n++] = fixed[i];
    return _cmocka_run_group_tests("rules", tests, n, NULL, NULL);
}
