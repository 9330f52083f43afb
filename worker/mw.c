/*
 * Shared tables and helpers of the domain model: enum symbol names, the
 * clocks, hex text and deterministic identifiers.  Everything here is
 * pure but the clocks; the wall clock reads MESH_WORKER_CLOCK_OFFSET once
 * so that tests can move time forward without another code path.
 */
#include "mw.h"
#include "ids.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uuid/uuid.h>

const char *const mw_mail_platform_names[MW_PLATFORM_COUNT] = {
    "MICROSOFT_365", "GOOGLE_WORKSPACE", "EXCHANGE_ON_PREMISES", "OTHER"};
const char *const mw_service_names[MW_SERVICE_COUNT] = {
    "MESH_GATEWAY", "MESH_365", "MESH_UNIFIED"};
const char *const mw_account_type_names[MW_ACCOUNT_COUNT] = {"BUY_NOW", "TRIAL",
                                                             "NFR"};
const char *const mw_installation_names[MW_INSTALL_COUNT] = {
    "MX_RECORDS", "M365_API_CONSENT", "MX_RECORDS_AND_M365_API_CONSENT"};
const char *const mw_rejection_code_names[MW_REJ_COUNT] = {
    "INVALID_FIELD",
    "REQUIRED_FIELD_MISSING",
    "DELIVERY_DESTINATION_REQUIRED",
    "SERVICE_NOT_SUPPORTED_ON_PLATFORM",
    "MONITOR_MODE_NOT_SUPPORTED",
    "NFR_DOMAIN_NOT_MSP_DOMAIN",
    "NFR_LICENSE_LIMIT_EXCEEDED",
    "DOMAIN_ALREADY_PROVISIONED",
    "REQUEST_ID_CONFLICT",
    "UNKNOWN_CUSTOMER",
    "NOT_CUSTOMER_OWNER",
    "ALREADY_TERMINATED",
    "STALE_UPDATE"};
const char *const mw_update_source_names[MW_SOURCE_COUNT] = {"MSP",
                                                             "M365_SYNC"};
const char *const mw_record_names[MW_REC_COUNT] = {
    "CustomerRequested",  "CustomerTerminationRequested",
    "CustomerCreated",    "CustomerRejected",
    "TrialEnding",        "TrialConverted",
    "CustomerTerminated", "CustomerUpdateRequested",
    "CustomerUpdated"};

int mw_enum_lookup(const char *const *names, int count, const char *name)
{
    for (int i = 0; i < count; i++) {
        if (strcmp(names[i], name) == 0)
            return i;
    }
    return -1;
}

static int64_t clock_offset_ms(void)
{
    static int loaded;
    static int64_t offset;

    /* Read once; a data race here would only repeat the same read. */
    if (!loaded) {
        const char *s = getenv("MESH_WORKER_CLOCK_OFFSET_MS");

        offset = s ? strtoll(s, NULL, 10) : 0;
        loaded = 1;
    }
    return offset;
}

int64_t mw_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + clock_offset_ms();
}

int64_t mw_monotonic_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t mw_monotonic_ms(void)
{
    return mw_monotonic_ns() / 1000000;
}

void mw_sleep_ms(int64_t ms)
{
    struct timespec ts;

    if (ms <= 0)
        return;
    ts.tv_sec = (time_t)(ms / 1000);
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    nanosleep(&ts, NULL);
}

void mw_sleep_ms_unless(int64_t ms, atomic_int *stop)
{
    int64_t deadline = mw_monotonic_ms() + ms;

    while (!atomic_load(stop)) {
        int64_t left = deadline - mw_monotonic_ms();

        if (left <= 0)
            return;
        mw_sleep_ms(left < MW_SLEEP_SLICE_MS ? left : MW_SLEEP_SLICE_MS);
    }
}

void mw_hex_encode(const void *buf, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";
    const unsigned char *in = buf;

    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * len] = '\0';
}

uint64_t mw_hash_text(const char *s)
{
    uint64_t h = 14695981039346656037ULL;

    for (; *s != '\0'; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

/* Namespace of every event id and customer id (documented in README). */
static const char *const ids_namespace = IDS_NAMESPACE;

void ids_uuid_v5(const char *name, size_t len, char out[IDS_UUID_LEN + 1])
{
    uuid_t ns, id;

    uuid_parse(ids_namespace, ns);
    uuid_generate_sha1(id, ns, name, len);
    uuid_unparse_lower(id, out);
}

void ids_event_id(const char *event_type, const char *source_id,
                  char out[IDS_UUID_LEN + 1])
{
    char name[512];
    int n = snprintf(name, sizeof(name), "%s:%s", event_type, source_id);

    if (n < 0 || (size_t)n >= sizeof(name))
        n = (int)sizeof(name) - 1;
    ids_uuid_v5(name, (size_t)n, out);
}

void ids_customer_id(const char *request_id, char out[IDS_UUID_LEN + 1])
{
    ids_event_id("customer", request_id, out);
}

bool ids_is_uuid(const char *s)
{
    uuid_t id;

    return strlen(s) == IDS_UUID_LEN && uuid_parse(s, id) == 0;
}
