/*
 * The field tables of the nine records, of RejectionError and of
 * FieldChange: the one
 * place that says which fields a record has.  Data only; the code that
 * walks the rows is the codec's (Avro) and convert's (JSON).  It does not
 * judge values (lengths and syntax are the rules module's).
 *
 * Invariant: the rows of a table are the fields of its schema in
 * schemas/, in order and by name (codec_new() refuses to start
 * otherwise), and a row's member is named as its field.
 */
#include "record.h"

/* One field a line, in schema order: clang-format would pack the tables
 * and brace each macro. */
/* clang-format off */
#define AT(rec, member) offsetof(struct mw_record, u.rec.member)

#define STRING(rec, m) {.name = #m, .kind = RECORD_STRING, .offset = AT(rec, m)}
#define NEW_ID(rec, m)                                                         \
    {.name = #m,                                                               \
     .kind = RECORD_STRING,                                                    \
     .offset = AT(rec, m),                                                     \
     .fallback = RECORD_DEFAULT_NEW_ID}
#define OPTIONAL_STRING(rec, m)                                                \
    {.name = #m, .kind = RECORD_OPTIONAL_STRING, .offset = AT(rec, m)}
#define BOOLEAN(rec, m, fallback_value)                                        \
    {.name = #m,                                                               \
     .kind = RECORD_BOOLEAN,                                                   \
     .offset = AT(rec, m),                                                     \
     .fallback = fallback_value}
#define INT(rec, m) {.name = #m, .kind = RECORD_INT, .offset = AT(rec, m)}
#define TIME(rec, m) {.name = #m, .kind = RECORD_TIME, .offset = AT(rec, m)}
#define TIME_NOW(rec, m)                                                       \
    {.name = #m,                                                               \
     .kind = RECORD_TIME,                                                      \
     .offset = AT(rec, m),                                                     \
     .fallback = RECORD_DEFAULT_NOW}
#define OPTIONAL_TIME(rec, m)                                                  \
    {.name = #m,                                                               \
     .kind = RECORD_OPTIONAL_TIME,                                             \
     .offset = AT(rec, m),                                                     \
     .aux_offset = AT(rec, has_##m)}
#define ENUM(rec, m, names, count)                                             \
    {.name = #m,                                                               \
     .kind = RECORD_ENUM,                                                      \
     .offset = AT(rec, m),                                                     \
     .limit = count,                                                           \
     .symbols = names}
#define STRINGS(rec, m)                                                        \
    {.name = #m,                                                               \
     .kind = RECORD_STRINGS,                                                   \
     .offset = AT(rec, m),                                                     \
     .aux_offset = AT(rec, m##_count)}

/* A ["null", T] field whose is-set flag is has_<member>. */
#define OPTIONAL(rec, m, k)                                                    \
    {.name = #m,                                                               \
     .kind = k,                                                                \
     .offset = AT(rec, m),                                                     \
     .aux_offset = AT(rec, has_##m)}

#define MAIL_PLATFORM(rec)                                                     \
    ENUM(rec, mail_platform, mw_mail_platform_names, MW_PLATFORM_COUNT)
#define SERVICE(rec) ENUM(rec, service, mw_service_names, MW_SERVICE_COUNT)
#define ACCOUNT_TYPE(rec)                                                      \
    ENUM(rec, account_type, mw_account_type_names, MW_ACCOUNT_COUNT)

/* The settings a request carries to the customer, in schema order. */
#define SETTINGS(rec)                                                          \
    BOOLEAN(rec, apply_global_rules, RECORD_DEFAULT_TRUE),                     \
        BOOLEAN(rec, msp_management, RECORD_DEFAULT_TRUE),                     \
        BOOLEAN(rec, two_factor_required, RECORD_DEFAULT_FALSE),               \
        BOOLEAN(rec, monitor_mode, RECORD_DEFAULT_FALSE)

#define TABLE(record, rows)                                                    \
    {.name = record, .fields = rows, .count = sizeof(rows) / sizeof(rows[0])}

static const struct record_field request_fields[] = {
    NEW_ID(request, request_id),
    TIME_NOW(request, requested_at),
    STRING(request, requested_by),
    STRING(request, msp_id),
    STRING(request, msp_domain),
    MAIL_PLATFORM(request),
    SERVICE(request),
    STRING(request, company_name),
    STRING(request, primary_domain),
    STRINGS(request, additional_domains),
    OPTIONAL_STRING(request, delivery_destination),
    INT(request, licenses),
    STRING(request, default_admin_email),
    OPTIONAL_STRING(request, policy_template_id),
    SETTINGS(request),
    ACCOUNT_TYPE(request),
};

static const struct record_field termination_fields[] = {
    NEW_ID(termination, request_id),
    TIME_NOW(termination, requested_at),
    STRING(termination, requested_by),
    STRING(termination, msp_id),
    STRING(termination, customer_id),
    OPTIONAL_TIME(termination, effective_at),
};

static const struct record_field created_fields[] = {
    STRING(created, event_id),
    STRING(created, customer_id),
    STRING(created, request_id),
    STRING(created, msp_id),
    TIME(created, occurred_at),
    STRING(created, requested_by),
    STRING(created, company_name),
    STRING(created, primary_domain),
    STRINGS(created, additional_domains),
    MAIL_PLATFORM(created),
    SERVICE(created),
    ACCOUNT_TYPE(created),
    INT(created, licenses),
    BOOLEAN(created, billable, RECORD_REQUIRED),
    OPTIONAL_TIME(created, billing_starts_at),
    OPTIONAL_TIME(created, trial_ends_at),
    STRING(created, default_admin_email),
    OPTIONAL_STRING(created, delivery_destination),
    OPTIONAL_STRING(created, policy_template_id),
    SETTINGS(created),
    ENUM(created, installation, mw_installation_names, MW_INSTALL_COUNT),
};

static const struct record_field update_fields[] = {
    NEW_ID(update, request_id),
    TIME_NOW(update, requested_at),
    STRING(update, requested_by),
    STRING(update, msp_id),
    STRING(update, customer_id),
    ENUM(update, source, mw_update_source_names, MW_SOURCE_COUNT),
    TIME_NOW(update, observed_at),
    OPTIONAL(update, licenses, RECORD_OPTIONAL_INT),
    OPTIONAL(update, monitor_mode, RECORD_OPTIONAL_BOOLEAN),
    OPTIONAL(update, two_factor_required, RECORD_OPTIONAL_BOOLEAN),
    OPTIONAL(update, msp_management, RECORD_OPTIONAL_BOOLEAN),
    OPTIONAL(update, apply_global_rules, RECORD_OPTIONAL_BOOLEAN),
    OPTIONAL_STRING(update, delivery_destination),
    OPTIONAL_STRING(update, policy_template_id),
    STRINGS(update, add_domains),
    STRINGS(update, remove_domains),
    {.name = "account_type",
     .kind = RECORD_OPTIONAL_ENUM,
     .offset = AT(update, account_type),
     .aux_offset = AT(update, has_account_type),
     .limit = MW_ACCOUNT_COUNT,
     .symbols = mw_account_type_names},
};

/* RejectionError: offsets into struct mw_rejection_error. */
static const struct record_field rejection_error_fields[] = {
    {.name = "field",
     .kind = RECORD_OPTIONAL_STRING,
     .offset = offsetof(struct mw_rejection_error, field)},
    {.name = "code",
     .kind = RECORD_ENUM,
     .offset = offsetof(struct mw_rejection_error, code),
     .limit = MW_REJ_COUNT,
     .symbols = mw_rejection_code_names},
    {.name = "message",
     .kind = RECORD_TEXT,
     .offset = offsetof(struct mw_rejection_error, message),
     .limit = (int)sizeof(((struct mw_rejection_error *)0)->message)},
};

static const struct record_table rejection_error_table =
    TABLE("RejectionError", rejection_error_fields);

static const struct record_array rejection_errors = {
    .item = &rejection_error_table,
    .noun = "rejection",
    .count_offset = offsetof(struct mw_rejection, count),
    .items_offset = offsetof(struct mw_rejection, errors),
    .item_size = sizeof(struct mw_rejection_error),
    .max_items = MW_MAX_REJECTION_ERRORS,
};

static const struct record_field rejected_fields[] = {
    STRING(rejected, event_id),
    STRING(rejected, request_id),
    STRING(rejected, msp_id),
    TIME(rejected, occurred_at),
    OPTIONAL_STRING(rejected, requested_by),
    {.name = "errors",
     .kind = RECORD_RECORDS,
     .offset = AT(rejected, rejection),
     .aux_offset = offsetof(struct mw_record, rejection_storage),
     .array = &rejection_errors},
};

/* FieldChange: offsets into struct mw_field_change. */
#define CHANGE_AT(member) offsetof(struct mw_field_change, member)
static const struct record_field field_change_fields[] = {
    {.name = "field", .kind = RECORD_STRING, .offset = CHANGE_AT(field)},
    {.name = "old_value",
     .kind = RECORD_OPTIONAL_STRING,
     .offset = CHANGE_AT(old_value)},
    {.name = "new_value",
     .kind = RECORD_OPTIONAL_STRING,
     .offset = CHANGE_AT(new_value)},
};

static const struct record_table field_change_table =
    TABLE("FieldChange", field_change_fields);

static const struct record_array field_changes = {
    .item = &field_change_table,
    .noun = "change list",
    .count_offset = offsetof(struct mw_changes, count),
    .items_offset = offsetof(struct mw_changes, changes),
    .item_size = sizeof(struct mw_field_change),
    .max_items = MW_MAX_FIELD_CHANGES,
};

static const struct record_field updated_fields[] = {
    STRING(updated, event_id),
    STRING(updated, customer_id),
    STRING(updated, request_id),
    STRING(updated, msp_id),
    TIME(updated, occurred_at),
    STRING(updated, requested_by),
    ENUM(updated, source, mw_update_source_names, MW_SOURCE_COUNT),
    {.name = "changes",
     .kind = RECORD_RECORDS,
     .offset = AT(updated, changes),
     .aux_offset = offsetof(struct mw_record, changes_storage),
     .array = &field_changes},
    INT(updated, licenses),
    ACCOUNT_TYPE(updated),
    BOOLEAN(updated, billable, RECORD_REQUIRED),
    BOOLEAN(updated, monitor_mode, RECORD_REQUIRED),
    STRING(updated, primary_domain),
    STRINGS(updated, additional_domains),
};

static const struct record_field trial_ending_fields[] = {
    STRING(trial_ending, event_id),
    STRING(trial_ending, customer_id),
    STRING(trial_ending, msp_id),
    TIME(trial_ending, occurred_at),
    TIME(trial_ending, trial_ends_at),
    INT(trial_ending, licenses),
    STRING(trial_ending, requested_by),
};

static const struct record_field trial_converted_fields[] = {
    STRING(trial_converted, event_id),
    STRING(trial_converted, customer_id),
    STRING(trial_converted, msp_id),
    TIME(trial_converted, occurred_at),
    TIME(trial_converted, trial_started_at),
    TIME(trial_converted, trial_ended_at),
    INT(trial_converted, licenses),
    TIME(trial_converted, billing_starts_at),
};

static const struct record_field terminated_fields[] = {
    STRING(terminated, event_id),
    STRING(terminated, customer_id),
    STRING(terminated, msp_id),
    TIME(terminated, occurred_at),
    TIME(terminated, terminated_at),
    BOOLEAN(terminated, was_trial, RECORD_REQUIRED),
    STRING(terminated, request_id),
};

/* Indexed by mw_record_type; names as mw_record_names. */
static const struct record_table tables[MW_REC_COUNT] = {
    TABLE("CustomerRequested", request_fields),
    TABLE("CustomerTerminationRequested", termination_fields),
    TABLE("CustomerCreated", created_fields),
    TABLE("CustomerRejected", rejected_fields),
    TABLE("TrialEnding", trial_ending_fields),
    TABLE("TrialConverted", trial_converted_fields),
    TABLE("CustomerTerminated", terminated_fields),
    TABLE("CustomerUpdateRequested", update_fields),
    TABLE("CustomerUpdated", updated_fields),
};
/* clang-format on */

const struct record_table *record_table(enum mw_record_type type)
{
    if ((int)type < 0 || type >= MW_REC_COUNT)
        return NULL;
    return &tables[type];
}

const struct record_table *record_rejection_error_table(void)
{
    return &rejection_error_table;
}

const struct record_table *record_field_change_table(void)
{
    return &field_change_table;
}

bool record_is_optional_scalar(enum record_kind kind, enum record_kind *scalar)
{
    switch (kind) {
    case RECORD_OPTIONAL_TIME:
        *scalar = RECORD_TIME;
        return true;
    case RECORD_OPTIONAL_INT:
        *scalar = RECORD_INT;
        return true;
    case RECORD_OPTIONAL_BOOLEAN:
        *scalar = RECORD_BOOLEAN;
        return true;
    case RECORD_OPTIONAL_ENUM:
        *scalar = RECORD_ENUM;
        return true;
    default:
        return false;
    }
}
