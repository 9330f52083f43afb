/*
 * Records to and from plain JSON for people and tools: `produce` builds a
 * request from JSON, `tail` prints any record as one JSON object.  Not on
 * the hot path, and not a validator: it checks JSON types, enum symbols
 * and times, and leaves lengths and syntax to the rules module, so that an
 * operator can produce a request the worker will reject.
 *
 * Invariant: a JSON object written here has "type" first and then the
 * fields in the order of the Avro schema, with the schema's names, so that
 * `tail` output reads like the contract in schemas/.
 */
#include "convert.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uuid/uuid.h>

#define MS_PER_DAY INT64_C(86400000)

/* ---- Times ------------------------------------------------------------ */

/* Floor division, which C's / is not for negative numbers. */
static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;

    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/*
 * Days since 1970-01-01 of a proleptic Gregorian date, and back (Howard
 * Hinnant's algorithms, exact for every int64 millisecond).
 */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    int64_t era, yoe, doy, doe;

    y -= m <= 2;
    era = floor_div(y, 400);
    yoe = y - era * 400;
    doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
    int64_t era, doe, yoe, doy, mp;

    z += 719468;
    era = floor_div(z, 146097);
    doe = z - era * 146097;
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

void convert_format_time(int64_t ms, char out[32])
{
    int64_t days = floor_div(ms, MS_PER_DAY);
    int64_t rest = ms % MS_PER_DAY; /* days * MS_PER_DAY may overflow */
    int64_t year;
    int month, day;

    if (rest < 0)
        rest += MS_PER_DAY;
    civil_from_days(days, &year, &month, &day);
    snprintf(out, 32, "%04" PRId64 "-%02d-%02dT%02d:%02d:%02d.%03dZ", year,
             month, day, (int)(rest / 3600000), (int)(rest / 60000 % 60),
             (int)(rest / 1000 % 60), (int)(rest % 1000));
}

/* Reads exactly n digits at *p; returns -1 if they are not there. */
static int read_digits(const char **p, int n, int *out)
{
    int v = 0;

    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)(*p)[i]))
            return -1;
        v = v * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *out = v;
    return 0;
}

static int expect_char(const char **p, char c)
{
    if (**p != c)
        return -1;
    (*p)++;
    return 0;
}

static bool is_leap(int year)
{
    return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
}

static int parse_epoch_ms(const char *s, int64_t *ms)
{
    char *end;
    long long v;

    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0')
        return -1;
    *ms = v;
    return 0;
}

int convert_parse_time(const char *s, int64_t *ms)
{
    static const int month_days[12] = {31, 28, 31, 30, 31, 30,
                                       31, 31, 30, 31, 30, 31};
    const char *p = s;
    int year, month, day, hour, minute, second, millis = 0;

    if (s == NULL || *s == '\0')
        return -1;
    if (strspn(s + (*s == '-'), "0123456789") == strlen(s + (*s == '-')))
        return parse_epoch_ms(s, ms);
    if (read_digits(&p, 4, &year) || expect_char(&p, '-') ||
        read_digits(&p, 2, &month) || expect_char(&p, '-') ||
        read_digits(&p, 2, &day) || expect_char(&p, 'T') ||
        read_digits(&p, 2, &hour) || expect_char(&p, ':') ||
        read_digits(&p, 2, &minute) || expect_char(&p, ':') ||
        read_digits(&p, 2, &second))
        return -1;
    if (*p == '.') {
        int digits = 0;

        /* Up to nanoseconds; what is below a millisecond is dropped. */
        for (p++; isdigit((unsigned char)*p) && digits < 9; p++, digits++) {
            if (digits < 3)
                millis = millis * 10 + (*p - '0');
        }
        if (digits == 0)
            return -1;
        for (; digits < 3; digits++)
            millis *= 10;
    }
    if (strcmp(p, "Z") != 0)
        return -1;
    if (month < 1 || month > 12 || day < 1 || hour > 23 || minute > 59 ||
        second > 59)
        return -1;
    if (day > month_days[month - 1] + (month == 2 && is_leap(year)))
        return -1;
    *ms = days_from_civil(year, month, day) * MS_PER_DAY +
          (int64_t)hour * 3600000 + minute * 60000 + second * 1000 + millis;
    return 0;
}

/* ---- JSON to record --------------------------------------------------- */

static const char *const request_fields[] = {
    "request_id",
    "requested_at",
    "requested_by",
    "msp_id",
    "msp_domain",
    "mail_platform",
    "service",
    "company_name",
    "primary_domain",
    "additional_domains",
    "delivery_destination",
    "licenses",
    "default_admin_email",
    "policy_template_id",
    "apply_global_rules",
    "msp_management",
    "two_factor_required",
    "monitor_mode",
    "account_type",
    NULL,
};

static const char *const termination_fields[] = {
    "request_id",  "requested_at", "requested_by", "msp_id",
    "customer_id", "effective_at", NULL,
};

/*
 * Reads the fields of one JSON object.  The first failure is kept in err
 * and makes later calls return defaults, so a record is read as a flat
 * list of calls checked once at the end.
 */
struct from {
    const json_t *obj;
    struct mw_arena *arena;
    struct mw_error *err;
    bool failed;
};

static void from_fail(struct from *f, const char *fmt, ...) MW_PRINTF(2, 3);

static void from_fail(struct from *f, const char *fmt, ...)
{
    char msg[sizeof(f->err->msg)];
    va_list ap;

    if (f->failed)
        return;
    f->failed = true;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    mw_error_set(f->err, MW_ERR_INPUT, false, "%s", msg);
}

static const char *json_type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a number with a fraction";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "unknown";
}

/* Returns the member name, or NULL when absent (or failed already). */
static const json_t *from_member(struct from *f, const char *name,
                                 bool is_required)
{
    const json_t *v;

    if (f->failed)
        return NULL;
    v = json_object_get(f->obj, name);
    if (v == NULL && is_required)
        from_fail(f, "missing required field \"%s\"", name);
    return v;
}

static void from_wrong_type(struct from *f, const char *name, const char *want,
                            const json_t *v)
{
    from_fail(f, "field \"%s\" must be %s, not %s", name, want,
              json_type_name(v));
}

/* An arena copy of a JSON string; "\u0000" inside is refused. */
static const char *copy_json_string(struct from *f, const char *name,
                                    const json_t *v)
{
    const char *s = json_string_value(v);
    size_t len = json_string_length(v);
    const char *copy;

    if (memchr(s, '\0', len) != NULL) {
        from_fail(f, "field \"%s\" contains a NUL character", name);
        return NULL;
    }
    copy = arena_strndup(f->arena, s, len);
    if (copy == NULL)
        from_fail(f, "out of memory reading field \"%s\"", name);
    return copy;
}

static const char *from_string(struct from *f, const char *name)
{
    const json_t *v = from_member(f, name, true);

    if (v == NULL)
        return NULL;
    if (!json_is_string(v)) {
        from_wrong_type(f, name, "a string", v);
        return NULL;
    }
    return copy_json_string(f, name, v);
}

/* A null|string field: absent and null are NULL. */
static const char *from_optional_string(struct from *f, const char *name)
{
    const json_t *v = from_member(f, name, false);

    if (v == NULL || json_is_null(v))
        return NULL;
    if (!json_is_string(v)) {
        from_wrong_type(f, name, "a string or null", v);
        return NULL;
    }
    return copy_json_string(f, name, v);
}

static int32_t from_int(struct from *f, const char *name)
{
    const json_t *v = from_member(f, name, true);
    json_int_t n;

    if (v == NULL)
        return 0;
    if (!json_is_integer(v)) {
        from_wrong_type(f, name, "an integer", v);
        return 0;
    }
    n = json_integer_value(v);
    if (n < INT32_MIN || n > INT32_MAX) {
        from_fail(f, "field \"%s\" is out of range: %" JSON_INTEGER_FORMAT,
                  name, n);
        return 0;
    }
    return (int32_t)n;
}

static bool from_boolean(struct from *f, const char *name, bool fallback)
{
    const json_t *v = from_member(f, name, false);

    if (v == NULL)
        return fallback;
    if (!json_is_boolean(v)) {
        from_wrong_type(f, name, "true or false", v);
        return fallback;
    }
    return json_is_true(v);
}

/* A time is epoch milliseconds or an ISO-8601 UTC string. */
static int64_t time_value(struct from *f, const char *name, const json_t *v)
{
    int64_t ms = 0;

    if (json_is_integer(v))
        return json_integer_value(v);
    if (!json_is_string(v)) {
        from_wrong_type(f, name, "a time (a string or epoch milliseconds)", v);
        return 0;
    }
    if (convert_parse_time(json_string_value(v), &ms) != 0) {
        from_fail(f, "invalid time for field \"%s\": \"%s\"", name,
                  json_string_value(v));
        mw_error_hint(f->err, "Use an ISO-8601 UTC time such as "
                              "\"2026-11-25T06:05:25.123Z\" or epoch "
                              "milliseconds.");
    }
    return ms;
}

static int64_t from_time(struct from *f, const char *name, int64_t fallback)
{
    const json_t *v = from_member(f, name, false);

    return v == NULL ? fallback : time_value(f, name, v);
}

/* A null|time field: returns false for absent or null. */
static bool from_optional_time(struct from *f, const char *name, int64_t *ms)
{
    const json_t *v = from_member(f, name, false);

    *ms = 0;
    if (v == NULL || json_is_null(v))
        return false;
    *ms = time_value(f, name, v);
    return !f->failed;
}

static int from_enum(struct from *f, const char *name, const char *const *names,
                     int count)
{
    const json_t *v = from_member(f, name, true);
    char allowed[256] = "";
    size_t used = 0;
    int index;

    if (v == NULL)
        return 0;
    if (!json_is_string(v)) {
        from_wrong_type(f, name, "a string", v);
        return 0;
    }
    index = mw_enum_lookup(names, count, json_string_value(v));
    if (index >= 0)
        return index;
    for (int i = 0; i < count && used < sizeof(allowed); i++) {
        int n = snprintf(allowed + used, sizeof(allowed) - used, "%s%s",
                         i > 0 ? ", " : "", names[i]);

        if (n < 0)
            break;
        used += (size_t)n;
    }
    from_fail(f, "unknown symbol \"%s\" for field \"%s\"", json_string_value(v),
              name);
    mw_error_detail(f->err, "Allowed symbols: %s.", allowed);
    return 0;
}

static const char **from_string_array(struct from *f, const char *name,
                                      size_t *count)
{
    const json_t *v = from_member(f, name, false);
    const char **items;
    size_t n;

    *count = 0;
    if (v == NULL)
        return NULL;
    if (!json_is_array(v)) {
        from_wrong_type(f, name, "an array of strings", v);
        return NULL;
    }
    n = json_array_size(v);
    items = arena_alloc(f->arena, (n > 0 ? n : 1) * sizeof(*items));
    if (items == NULL) {
        from_fail(f, "out of memory reading field \"%s\"", name);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        const json_t *item = json_array_get(v, i);

        if (!json_is_string(item)) {
            from_fail(f, "item %zu of field \"%s\" must be a string, not %s", i,
                      name, json_type_name(item));
            return NULL;
        }
        items[i] = copy_json_string(f, name, item);
    }
    *count = n;
    return items;
}

/* request_id, or a new random UUID when it is absent. */
static const char *from_request_id(struct from *f)
{
    char text[37];
    uuid_t id;
    const char *copy;

    if (f->failed || json_object_get(f->obj, "request_id") != NULL)
        return from_string(f, "request_id");
    uuid_generate_random(id);
    uuid_unparse_lower(id, text);
    copy = arena_strdup(f->arena, text);
    if (copy == NULL)
        from_fail(f, "out of memory reading field \"request_id\"");
    return copy;
}

/* Fails on a member that is not "type" or one of fields. */
static void check_members(struct from *f, const char *record,
                          const char *const *fields)
{
    const char *key;
    json_t *value;

    json_object_foreach((json_t *)f->obj, key, value)
    {
        bool is_known = strcmp(key, "type") == 0;

        (void)value;
        for (size_t i = 0; !is_known && fields[i] != NULL; i++)
            is_known = strcmp(key, fields[i]) == 0;
        if (!is_known) {
            from_fail(f, "unknown field \"%s\" in a %s", key, record);
            mw_error_hint(f->err,
                          "Field names are those of "
                          "schemas/%s.avsc.",
                          record);
            return;
        }
    }
}

static void from_request(struct from *f, struct mw_request *r)
{
    check_members(f, "CustomerRequested", request_fields);
    r->request_id = from_request_id(f);
    r->requested_at = from_time(f, "requested_at", mw_now_ms());
    r->requested_by = from_string(f, "requested_by");
    r->msp_id = from_string(f, "msp_id");
    r->msp_domain = from_string(f, "msp_domain");
    r->mail_platform = from_enum(f, "mail_platform", mw_mail_platform_names,
                                 MW_PLATFORM_COUNT);
    r->service = from_enum(f, "service", mw_service_names, MW_SERVICE_COUNT);
    r->company_name = from_string(f, "company_name");
    r->primary_domain = from_string(f, "primary_domain");
    r->additional_domains = from_string_array(f, "additional_domains",
                                              &r->additional_domains_count);
    r->delivery_destination = from_optional_string(f, "delivery_destination");
    r->licenses = from_int(f, "licenses");
    r->default_admin_email = from_string(f, "default_admin_email");
    r->policy_template_id = from_optional_string(f, "policy_template_id");
    r->apply_global_rules = from_boolean(f, "apply_global_rules", true);
    r->msp_management = from_boolean(f, "msp_management", true);
    r->two_factor_required = from_boolean(f, "two_factor_required", false);
    r->monitor_mode = from_boolean(f, "monitor_mode", false);
    r->account_type =
        from_enum(f, "account_type", mw_account_type_names, MW_ACCOUNT_COUNT);
}

static void from_termination(struct from *f, struct mw_termination_request *t)
{
    check_members(f, "CustomerTerminationRequested", termination_fields);
    t->request_id = from_request_id(f);
    t->requested_at = from_time(f, "requested_at", mw_now_ms());
    t->requested_by = from_string(f, "requested_by");
    t->msp_id = from_string(f, "msp_id");
    t->customer_id = from_string(f, "customer_id");
    t->has_effective_at =
        from_optional_time(f, "effective_at", &t->effective_at);
}

int convert_record_from_json(const json_t *obj, struct mw_arena *arena,
                             struct mw_record *rec, struct mw_error *err)
{
    struct from f = {.obj = obj, .arena = arena, .err = err};
    const json_t *type;
    const char *name = mw_record_names[MW_REC_CUSTOMER_REQUESTED];

    if (!json_is_object(obj)) {
        mw_error_set(err, MW_ERR_INPUT, false,
                     "a request must be a JSON object, not %s",
                     obj ? json_type_name(obj) : "nothing");
        return -1;
    }
    type = json_object_get(obj, "type");
    if (type != NULL && !json_is_string(type)) {
        from_wrong_type(&f, "type", "a string", type);
        return -1;
    }
    if (type != NULL)
        name = json_string_value(type);
    memset(&rec->u, 0, sizeof(rec->u));
    if (strcmp(name, mw_record_names[MW_REC_CUSTOMER_REQUESTED]) == 0) {
        rec->type = MW_REC_CUSTOMER_REQUESTED;
        from_request(&f, &rec->u.request);
    } else if (strcmp(name,
                      mw_record_names[MW_REC_CUSTOMER_TERMINATION_REQUESTED]) ==
               0) {
        rec->type = MW_REC_CUSTOMER_TERMINATION_REQUESTED;
        from_termination(&f, &rec->u.termination);
    } else {
        mw_error_set(err, MW_ERR_INPUT, false,
                     "cannot produce a record of type \"%s\"", name);
        mw_error_hint(err, "Use \"CustomerRequested\" (the default) or "
                           "\"CustomerTerminationRequested\".");
        return -1;
    }
    return f.failed ? -1 : 0;
}

/* ---- Record to JSON --------------------------------------------------- */

/* Appends members to an object; the first failure makes the rest no-ops. */
struct to {
    json_t *obj;
    bool failed;
};

static void to_add(struct to *t, const char *name, json_t *v)
{
    /* json_object_set_new() takes v, also when it fails. */
    if (t->failed || v == NULL || json_object_set_new(t->obj, name, v) != 0) {
        if (t->failed)
            json_decref(v);
        t->failed = true;
    }
}

static void to_string(struct to *t, const char *name, const char *s)
{
    to_add(t, name, s != NULL ? json_string(s) : json_null());
}

static json_t *time_json(int64_t ms)
{
    char text[32];

    convert_format_time(ms, text);
    return json_string(text);
}

static void to_time(struct to *t, const char *name, int64_t ms)
{
    to_add(t, name, time_json(ms));
}

static void to_optional_time(struct to *t, const char *name, bool is_set,
                             int64_t ms)
{
    to_add(t, name, is_set ? time_json(ms) : json_null());
}

static void to_int(struct to *t, const char *name, int64_t v)
{
    to_add(t, name, json_integer(v));
}

static void to_boolean(struct to *t, const char *name, bool v)
{
    to_add(t, name, json_boolean(v));
}

/* An enum by symbol; a value out of range shows as its number. */
static void to_enum(struct to *t, const char *name, const char *const *names,
                    int count, int v)
{
    to_add(t, name,
           v >= 0 && v < count ? json_string(names[v]) : json_integer(v));
}

static void to_strings(struct to *t, const char *name, const char *const *items,
                       size_t count)
{
    json_t *list = json_array();

    for (size_t i = 0; list != NULL && i < count; i++) {
        if (json_array_append_new(list,
                                  json_string(items[i] ? items[i] : "")) != 0) {
            json_decref(list);
            list = NULL;
        }
    }
    to_add(t, name, list);
}

static void to_request(struct to *t, const struct mw_request *r)
{
    to_string(t, "request_id", r->request_id);
    to_time(t, "requested_at", r->requested_at);
    to_string(t, "requested_by", r->requested_by);
    to_string(t, "msp_id", r->msp_id);
    to_string(t, "msp_domain", r->msp_domain);
    to_enum(t, "mail_platform", mw_mail_platform_names, MW_PLATFORM_COUNT,
            r->mail_platform);
    to_enum(t, "service", mw_service_names, MW_SERVICE_COUNT, r->service);
    to_string(t, "company_name", r->company_name);
    to_string(t, "primary_domain", r->primary_domain);
    to_strings(t, "additional_domains", r->additional_domains,
               r->additional_domains_count);
    to_string(t, "delivery_destination", r->delivery_destination);
    to_int(t, "licenses", r->licenses);
    to_string(t, "default_admin_email", r->default_admin_email);
    to_string(t, "policy_template_id", r->policy_template_id);
    to_boolean(t, "apply_global_rules", r->apply_global_rules);
    to_boolean(t, "msp_management", r->msp_management);
    to_boolean(t, "two_factor_required", r->two_factor_required);
    to_boolean(t, "monitor_mode", r->monitor_mode);
    to_enum(t, "account_type", mw_account_type_names, MW_ACCOUNT_COUNT,
            r->account_type);
}

static void to_termination(struct to *t, const struct mw_termination_request *r)
{
    to_string(t, "request_id", r->request_id);
    to_time(t, "requested_at", r->requested_at);
    to_string(t, "requested_by", r->requested_by);
    to_string(t, "msp_id", r->msp_id);
    to_string(t, "customer_id", r->customer_id);
    to_optional_time(t, "effective_at", r->has_effective_at, r->effective_at);
}

static void to_created(struct to *t, const struct mw_customer_created *c)
{
    to_string(t, "event_id", c->event_id);
    to_string(t, "customer_id", c->customer_id);
    to_string(t, "request_id", c->request_id);
    to_string(t, "msp_id", c->msp_id);
    to_time(t, "occurred_at", c->occurred_at);
    to_string(t, "requested_by", c->requested_by);
    to_string(t, "company_name", c->company_name);
    to_string(t, "primary_domain", c->primary_domain);
    to_strings(t, "additional_domains", c->additional_domains,
               c->additional_domains_count);
    to_enum(t, "mail_platform", mw_mail_platform_names, MW_PLATFORM_COUNT,
            c->mail_platform);
    to_enum(t, "service", mw_service_names, MW_SERVICE_COUNT, c->service);
    to_enum(t, "account_type", mw_account_type_names, MW_ACCOUNT_COUNT,
            c->account_type);
    to_int(t, "licenses", c->licenses);
    to_boolean(t, "billable", c->billable);
    to_optional_time(t, "billing_starts_at", c->has_billing_starts_at,
                     c->billing_starts_at);
    to_optional_time(t, "trial_ends_at", c->has_trial_ends_at,
                     c->trial_ends_at);
    to_string(t, "default_admin_email", c->default_admin_email);
    to_string(t, "delivery_destination", c->delivery_destination);
    to_string(t, "policy_template_id", c->policy_template_id);
    to_boolean(t, "apply_global_rules", c->apply_global_rules);
    to_boolean(t, "msp_management", c->msp_management);
    to_boolean(t, "two_factor_required", c->two_factor_required);
    to_boolean(t, "monitor_mode", c->monitor_mode);
    to_enum(t, "installation", mw_installation_names, MW_INSTALL_COUNT,
            c->installation);
}

static void to_errors(struct to *t, const struct mw_rejection *r)
{
    json_t *list = json_array();
    size_t count = r != NULL ? r->count : 0;

    for (size_t i = 0; list != NULL && i < count; i++) {
        const struct mw_rejection_error *e = &r->errors[i];
        struct to item = {.obj = json_object()};

        item.failed = item.obj == NULL;
        to_string(&item, "field", e->field);
        to_enum(&item, "code", mw_rejection_code_names, MW_REJ_COUNT, e->code);
        to_string(&item, "message", e->message);
        if (item.failed || json_array_append_new(list, item.obj) != 0) {
            if (item.failed)
                json_decref(item.obj);
            json_decref(list);
            list = NULL;
        }
    }
    to_add(t, "errors", list);
}

static void to_rejected(struct to *t, const struct mw_customer_rejected *r)
{
    to_string(t, "event_id", r->event_id);
    to_string(t, "request_id", r->request_id);
    to_string(t, "msp_id", r->msp_id);
    to_time(t, "occurred_at", r->occurred_at);
    to_string(t, "requested_by", r->requested_by);
    to_errors(t, r->rejection);
}

static void to_trial_ending(struct to *t, const struct mw_trial_ending *e)
{
    to_string(t, "event_id", e->event_id);
    to_string(t, "customer_id", e->customer_id);
    to_string(t, "msp_id", e->msp_id);
    to_time(t, "occurred_at", e->occurred_at);
    to_time(t, "trial_ends_at", e->trial_ends_at);
    to_int(t, "licenses", e->licenses);
    to_string(t, "requested_by", e->requested_by);
}

static void to_trial_converted(struct to *t, const struct mw_trial_converted *c)
{
    to_string(t, "event_id", c->event_id);
    to_string(t, "customer_id", c->customer_id);
    to_string(t, "msp_id", c->msp_id);
    to_time(t, "occurred_at", c->occurred_at);
    to_time(t, "trial_started_at", c->trial_started_at);
    to_time(t, "trial_ended_at", c->trial_ended_at);
    to_int(t, "licenses", c->licenses);
    to_time(t, "billing_starts_at", c->billing_starts_at);
}

static void to_terminated(struct to *t, const struct mw_customer_terminated *c)
{
    to_string(t, "event_id", c->event_id);
    to_string(t, "customer_id", c->customer_id);
    to_string(t, "msp_id", c->msp_id);
    to_time(t, "occurred_at", c->occurred_at);
    to_time(t, "terminated_at", c->terminated_at);
    to_boolean(t, "was_trial", c->was_trial);
    to_string(t, "request_id", c->request_id);
}

json_t *convert_record_to_json(const struct mw_record *rec)
{
    struct to t = {.obj = json_object()};

    if (t.obj == NULL || (int)rec->type < 0 || rec->type >= MW_REC_COUNT) {
        json_decref(t.obj);
        return NULL;
    }
    to_string(&t, "type", mw_record_names[rec->type]);
    switch (rec->type) {
    case MW_REC_CUSTOMER_REQUESTED:
        to_request(&t, &rec->u.request);
        break;
    case MW_REC_CUSTOMER_TERMINATION_REQUESTED:
        to_termination(&t, &rec->u.termination);
        break;
    case MW_REC_CUSTOMER_CREATED:
        to_created(&t, &rec->u.created);
        break;
    case MW_REC_CUSTOMER_REJECTED:
        to_rejected(&t, &rec->u.rejected);
        break;
    case MW_REC_TRIAL_ENDING:
        to_trial_ending(&t, &rec->u.trial_ending);
        break;
    case MW_REC_TRIAL_CONVERTED:
        to_trial_converted(&t, &rec->u.trial_converted);
        break;
    case MW_REC_CUSTOMER_TERMINATED:
        to_terminated(&t, &rec->u.terminated);
        break;
    case MW_REC_COUNT:
        break;
    }
    if (t.failed) {
        json_decref(t.obj);
        return NULL;
    }
    return t.obj;
}
