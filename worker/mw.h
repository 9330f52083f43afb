/*
 * The domain model shared by every module: requests as decoded from
 * customer.requests, the events written to customer.events, and the limits
 * of SPEC §2 and §8.  Plain data only; strings are NUL-terminated UTF-8 and
 * owned by whoever built the struct (usually a batch arena).  Enum values
 * follow the order of the Avro symbols, so an enum index read from Avro is
 * the C value.
 */
#ifndef MW_H
#define MW_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Maximum lengths in Unicode code points (SPEC §8, README). */
#define MW_MAX_ID 64
#define MW_MAX_EMAIL 254
#define MW_MAX_DOMAIN 253
#define MW_MAX_DESTINATION 260
#define MW_MAX_NAME 200
#define MW_MAX_ADDITIONAL_DOMAINS 100
#define MW_MIN_LICENSES 1
#define MW_MAX_LICENSES 1000000
#define MW_MAX_NFR_LICENSES 50
/* Largest message value accepted from customer.requests. */
#define MW_MAX_MESSAGE_BYTES (1024 * 1024)
/* Longest traceparent header copied through. */
#define MW_MAX_TRACEPARENT 256

enum mw_mail_platform {
    MW_PLATFORM_MICROSOFT_365 = 0,
    MW_PLATFORM_GOOGLE_WORKSPACE,
    MW_PLATFORM_EXCHANGE_ON_PREMISES,
    MW_PLATFORM_OTHER,
    MW_PLATFORM_COUNT
};

enum mw_service {
    MW_SERVICE_MESH_GATEWAY = 0,
    MW_SERVICE_MESH_365,
    MW_SERVICE_MESH_UNIFIED,
    MW_SERVICE_COUNT
};

enum mw_account_type {
    MW_ACCOUNT_BUY_NOW = 0,
    MW_ACCOUNT_TRIAL,
    MW_ACCOUNT_NFR,
    MW_ACCOUNT_COUNT
};

enum mw_installation {
    MW_INSTALL_MX_RECORDS = 0,
    MW_INSTALL_M365_API_CONSENT,
    MW_INSTALL_MX_RECORDS_AND_M365_API_CONSENT,
    MW_INSTALL_COUNT
};

enum mw_rejection_code {
    MW_REJ_INVALID_FIELD = 0,
    MW_REJ_REQUIRED_FIELD_MISSING,
    MW_REJ_DELIVERY_DESTINATION_REQUIRED,
    MW_REJ_SERVICE_NOT_SUPPORTED_ON_PLATFORM,
    MW_REJ_MONITOR_MODE_NOT_SUPPORTED,
    MW_REJ_NFR_DOMAIN_NOT_MSP_DOMAIN,
    MW_REJ_NFR_LICENSE_LIMIT_EXCEEDED,
    MW_REJ_DOMAIN_ALREADY_PROVISIONED,
    MW_REJ_REQUEST_ID_CONFLICT,
    MW_REJ_UNKNOWN_CUSTOMER,
    MW_REJ_NOT_CUSTOMER_OWNER,
    MW_REJ_ALREADY_TERMINATED,
    MW_REJ_STALE_UPDATE,
    MW_REJ_COUNT
};

/* Who sent a CustomerUpdateRequested. */
enum mw_update_source {
    MW_SOURCE_MSP = 0,   /* the MSP, in the portal */
    MW_SOURCE_M365_SYNC, /* the Microsoft 365 license sync */
    MW_SOURCE_COUNT
};

/* Symbol names, indexed by the enums above. */
extern const char *const mw_mail_platform_names[MW_PLATFORM_COUNT];
extern const char *const mw_service_names[MW_SERVICE_COUNT];
extern const char *const mw_account_type_names[MW_ACCOUNT_COUNT];
extern const char *const mw_installation_names[MW_INSTALL_COUNT];
extern const char *const mw_rejection_code_names[MW_REJ_COUNT];
extern const char *const mw_update_source_names[MW_SOURCE_COUNT];

/* Returns the index of name in names[0..count), or -1. */
int mw_enum_lookup(const char *const *names, int count, const char *name);

/*
 * Kinds of record on the two topics.  Records added after the first
 * release come last, as they come last in the topic unions; see
 * codec_union_branch() for each record's branch.
 */
enum mw_record_type {
    MW_REC_CUSTOMER_REQUESTED = 0,
    MW_REC_CUSTOMER_TERMINATION_REQUESTED,
    MW_REC_CUSTOMER_CREATED,
    MW_REC_CUSTOMER_REJECTED,
    MW_REC_TRIAL_ENDING,
    MW_REC_TRIAL_CONVERTED,
    MW_REC_CUSTOMER_TERMINATED,
    MW_REC_CUSTOMER_UPDATE_REQUESTED,
    MW_REC_CUSTOMER_UPDATED,
    MW_REC_COUNT
};

/* Short record names ("CustomerCreated"), indexed by mw_record_type. */
extern const char *const mw_record_names[MW_REC_COUNT];

/* CustomerRequested.  Optional strings are NULL when null. */
struct mw_request {
    const char *request_id;
    int64_t requested_at; /* epoch milliseconds, UTC */
    const char *requested_by;
    const char *msp_id;
    const char *msp_domain;
    int mail_platform; /* enum mw_mail_platform */
    int service;       /* enum mw_service */
    const char *company_name;
    const char *primary_domain;
    const char **additional_domains;
    size_t additional_domains_count;
    const char *delivery_destination; /* NULL = null */
    int32_t licenses;
    const char *default_admin_email;
    const char *policy_template_id; /* NULL = null */
    bool apply_global_rules;
    bool msp_management;
    bool two_factor_required;
    bool monitor_mode;
    int account_type; /* enum mw_account_type */
};

/* CustomerTerminationRequested. */
struct mw_termination_request {
    const char *request_id;
    int64_t requested_at;
    const char *requested_by;
    const char *msp_id;
    const char *customer_id;
    bool has_effective_at; /* false = null = now */
    int64_t effective_at;
};

/*
 * CustomerUpdateRequested.  A field whose has_ flag is false (or whose
 * string is NULL) was null: it stays as it is.  An empty
 * delivery_destination or policy_template_id removes the value.
 */
struct mw_update_request {
    const char *request_id;
    int64_t requested_at;
    const char *requested_by;
    const char *msp_id;
    const char *customer_id;
    int source;          /* enum mw_update_source */
    int64_t observed_at; /* epoch ms, when the source saw the values */
    bool has_licenses;
    int32_t licenses;
    bool has_monitor_mode;
    bool monitor_mode;
    bool has_two_factor_required;
    bool two_factor_required;
    bool has_msp_management;
    bool msp_management;
    bool has_apply_global_rules;
    bool apply_global_rules;
    const char *delivery_destination; /* NULL = unchanged, "" = remove */
    const char *policy_template_id;   /* NULL = unchanged, "" = remove */
    const char **add_domains;
    size_t add_domains_count;
    const char **remove_domains;
    size_t remove_domains_count;
    bool has_account_type;
    int account_type; /* enum mw_account_type */
};

/* One item of CustomerUpdated.changes (record FieldChange). */
struct mw_field_change {
    const char *field;
    const char *old_value; /* NULL = none */
    const char *new_value; /* NULL = none */
};

/* Fields an update may change, and so the most changes one reports. */
#define MW_MAX_FIELD_CHANGES 16

/* What an update changed, in the order of the update's fields. */
struct mw_changes {
    size_t count;
    struct mw_field_change changes[MW_MAX_FIELD_CHANGES];
};

/* One item of CustomerRejected.errors (record RejectionError). */
struct mw_rejection_error {
    const char *field; /* top-level field name, or NULL */
    int code;          /* enum mw_rejection_code */
    char message[256]; /* a sentence for a person */
};

#define MW_MAX_REJECTION_ERRORS 32

/* Every reason a request is refused, in field order. */
struct mw_rejection {
    size_t count;
    struct mw_rejection_error errors[MW_MAX_REJECTION_ERRORS];
};

/* CustomerCreated. */
struct mw_customer_created {
    const char *event_id;
    const char *customer_id;
    const char *request_id;
    const char *msp_id;
    int64_t occurred_at;
    const char *requested_by;
    const char *company_name;
    const char *primary_domain;
    const char **additional_domains;
    size_t additional_domains_count;
    int mail_platform;
    int service;
    int account_type;
    int32_t licenses;
    bool billable;
    bool has_billing_starts_at;
    int64_t billing_starts_at;
    bool has_trial_ends_at;
    int64_t trial_ends_at;
    const char *default_admin_email;
    const char *delivery_destination; /* NULL = null */
    const char *policy_template_id;   /* NULL = null */
    bool apply_global_rules;
    bool msp_management;
    bool two_factor_required;
    bool monitor_mode;
    int installation; /* enum mw_installation */
};

/* CustomerRejected. */
struct mw_customer_rejected {
    const char *event_id;
    const char *request_id;
    const char *msp_id;
    int64_t occurred_at;
    const char *requested_by; /* NULL = null */
    const struct mw_rejection *rejection;
};

/* TrialEnding. */
struct mw_trial_ending {
    const char *event_id;
    const char *customer_id;
    const char *msp_id;
    int64_t occurred_at;
    int64_t trial_ends_at;
    int32_t licenses;
    const char *requested_by;
};

/* TrialConverted. */
struct mw_trial_converted {
    const char *event_id;
    const char *customer_id;
    const char *msp_id;
    int64_t occurred_at;
    int64_t trial_started_at;
    int64_t trial_ended_at;
    int32_t licenses;
    int64_t billing_starts_at;
};

/* CustomerTerminated. */
struct mw_customer_terminated {
    const char *event_id;
    const char *customer_id;
    const char *msp_id;
    int64_t occurred_at;
    int64_t terminated_at;
    bool was_trial;
    const char *request_id;
};

/* CustomerUpdated. */
struct mw_customer_updated {
    const char *event_id;
    const char *customer_id;
    const char *request_id;
    const char *msp_id;
    int64_t occurred_at;
    const char *requested_by;
    int source; /* enum mw_update_source */
    const struct mw_changes *changes;
    int32_t licenses;
    int account_type;
    bool billable;
    bool monitor_mode;
    const char *primary_domain;
    const char **additional_domains;
    size_t additional_domains_count;
};

/*
 * A customer as an update sees it and leaves it: what the rules check an
 * update against and what CustomerUpdated reports.  Strings are borrowed.
 */
struct mw_customer_state {
    const char *customer_id;
    const char *msp_id;
    const char *msp_domain;
    int service;        /* enum mw_service */
    int account_type;   /* enum mw_account_type */
    bool is_trial;      /* a trial not yet converted */
    bool is_terminated; /* terminated, or its termination is due */
    bool billable;
    int32_t licenses;
    bool has_licenses_observed_at; /* false until an update set licenses */
    int64_t licenses_observed_at;
    bool monitor_mode;
    bool two_factor_required;
    bool msp_management;
    bool apply_global_rules;
    const char *delivery_destination; /* NULL = none */
    const char *policy_template_id;   /* NULL = none */
    const char *primary_domain;
    const char **additional_domains;
    size_t additional_domains_count;
    int64_t created_at;
};

/* Any record of either topic, tagged by type. */
struct mw_record {
    enum mw_record_type type;
    union {
        struct mw_request request;
        struct mw_termination_request termination;
        struct mw_customer_created created;
        struct mw_customer_rejected rejected;
        struct mw_trial_ending trial_ending;
        struct mw_trial_converted trial_converted;
        struct mw_customer_terminated terminated;
        struct mw_update_request update;
        struct mw_customer_updated updated;
    } u;
    /* Storage for rejected.rejection when decoded. */
    struct mw_rejection rejection_storage;
    /* Storage for updated.changes when decoded. */
    struct mw_changes changes_storage;
};

/* Current time in epoch milliseconds, UTC (honours the test clock). */
int64_t mw_now_ms(void);

/*
 * The monotonic clock, for deadlines and durations: it never jumps with
 * the wall clock and ignores the test clock.  Its origin is arbitrary;
 * only differences mean anything.  These functions can't fail.
 */
int64_t mw_monotonic_ns(void);
int64_t mw_monotonic_ms(void);

/* Sleeps ms milliseconds, or less when a signal arrives.  Can't fail. */
void mw_sleep_ms(int64_t ms);

/*
 * Sleeps ms milliseconds in slices of at most MW_SLEEP_SLICE_MS, returning
 * early once *stop is set (by another thread).  Can't fail.
 */
#define MW_SLEEP_SLICE_MS 100
void mw_sleep_ms_unless(int64_t ms, atomic_int *stop);

/*
 * Writes len bytes of buf as 2 * len lower-case hex digits and a NUL to
 * out, which holds 2 * len + 1 bytes.  This function can't fail.
 */
void mw_hex_encode(const void *buf, size_t len, char *out);

/* The 64-bit FNV-1a hash of a string, for open-addressing tables. */
uint64_t mw_hash_text(const char *s);

#endif
