/*
 * Schema Registry client: HTTP with libcurl, a bounded cache of writer
 * schemas by id, registration of the topic unions, and Confluent error
 * bodies turned into messages.  It knows nothing of Avro beyond passing
 * schema text along; the codec parses and resolves what it returns.
 *
 * Invariant: a schema id never changes meaning in a registry, so a cached
 * schema never expires; it only leaves the cache (oldest first) to make
 * room.  Failure classes are decided here, where the answer is seen:
 * network errors, 5xx and 429 are retriable, 40403 for an id means the
 * message names a schema that does not exist, anything else is for an
 * operator to fix.
 */
#include "registry.h"

#include "codec.h"
#include "log.h"

#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_URLS 16
#define MAX_BODY (8 * 1024 * 1024) /* the largest answer read */
#define FETCH_ATTEMPTS 3           /* per schema id, while consuming */
#define STARTUP_ATTEMPTS 8         /* about 8 s of back-off at start */
#define BACKOFF_BASE_MS 100
#define BACKOFF_MAX_MS 2000
#define CONTENT_TYPE "application/vnd.schemaregistry.v1+json"

_Static_assert(REGISTRY_NOT_FOUND == CODEC_FETCH_NOT_FOUND,
               "registry_fetch_schema is a codec_fetch_fn");

struct cached_schema {
    uint32_t id;
    char *json; /* NULL: free slot */
};

struct registry {
    const struct mw_config *cfg;
    pthread_mutex_t lock;
    CURL *curl;
    struct curl_slist *headers;
    char *urls[MAX_URLS]; /* without a trailing slash */
    size_t url_count;
    size_t url_current; /* the last one that answered */
    struct cached_schema *cache;
    size_t cache_size;
    size_t cache_next; /* the slot filled (or evicted) next */
    unsigned int seed; /* back-off jitter */
};

/* An answer's body, bounded by MAX_BODY. */
struct body {
    char *buf;
    size_t len;
};

bool registry_status_is_retriable(long status)
{
    return status >= 500 || status == 429 || status == 408;
}

int64_t registry_backoff_ms(int attempt)
{
    int64_t ms = BACKOFF_BASE_MS;

    for (int i = 0; i < attempt && ms < BACKOFF_MAX_MS; i++)
        ms *= 2;
    return ms > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : ms;
}

/* Reads {"error_code", "message"}; *code 0 and message "" when absent. */
static void parse_error_body(const char *body, int *code, char *message,
                             size_t size)
{
    json_t *root = body ? json_loads(body, 0, NULL) : NULL;
    json_t *c = json_object_get(root, "error_code");
    json_t *m = json_object_get(root, "message");

    *code = json_is_integer(c) ? (int)json_integer_value(c) : 0;
    snprintf(message, size, "%s",
             json_is_string(m) ? json_string_value(m) : "");
    json_decref(root);
}

int registry_error_from_response(long status, const char *body,
                                 const char *action, struct mw_error *err)
{
    char message[256];
    int code;
    bool retriable = registry_status_is_retriable(status);

    parse_error_body(body, &code, message, sizeof(message));
    if (code == 0)
        code = (int)status;
    if (status == 401) {
        mw_error_set(err, MW_ERR_REGISTRY, false,
                     "could not %s: the Schema Registry refused the "
                     "credentials",
                     action);
        mw_error_hint(err, "Set MESH_WORKER_SCHEMA_REGISTRY_USER_INFO "
                           "(user:password) or "
                           "MESH_WORKER_SCHEMA_REGISTRY_BEARER_TOKEN, or "
                           "their _FILE forms, to credentials the registry "
                           "accepts.");
    } else if (status == 403) {
        mw_error_set(err, MW_ERR_REGISTRY, false,
                     "could not %s: the Schema Registry does not allow it "
                     "for these credentials",
                     action);
        mw_error_hint(err, "Grant the worker's principal read access to "
                           "schemas and write access to its subjects, or "
                           "register the schemas beforehand and set "
                           "MESH_WORKER_SCHEMA_REGISTRY_AUTO_REGISTER=false.");
    } else if (code == 40401) {
        mw_error_set(err, MW_ERR_REGISTRY, false,
                     "could not %s: the subject is not registered", action);
        mw_error_hint(err, "Register the topic's schema, or set "
                           "MESH_WORKER_SCHEMA_REGISTRY_AUTO_REGISTER=true.");
    } else if (code == 40402) {
        mw_error_set(err, MW_ERR_REGISTRY, false,
                     "could not %s: no such version of the subject", action);
    } else if (code == 40403) {
        mw_error_set(err, MW_ERR_REGISTRY, false,
                     "could not %s: the Schema Registry has no such schema",
                     action);
    } else if (status == 409 || code == 409) {
        mw_error_set(err, MW_ERR_REGISTRY, false,
                     "could not %s: the schema is incompatible with the "
                     "versions already registered",
                     action);
        mw_error_hint(err, "Schemas evolve compatibly: add fields only as "
                           "optional with a default. Otherwise the "
                           "subject's compatibility level has to change.");
    } else if (code == 42201) {
        mw_error_set(err, MW_ERR_REGISTRY, false,
                     "could not %s: the Schema Registry refused the schema "
                     "as invalid",
                     action);
    } else if (code == 42202 || code == 42203) {
        mw_error_set(err, MW_ERR_REGISTRY, false,
                     "could not %s: the Schema Registry refused the request "
                     "as invalid",
                     action);
    } else if (status == 404) {
        mw_error_set(err, MW_ERR_REGISTRY, false,
                     "could not %s: the URL does not lead to a Schema "
                     "Registry API",
                     action);
        mw_error_hint(err, "MESH_WORKER_SCHEMA_REGISTRY_URL is the "
                           "registry's base URL, for example "
                           "http://schema-registry:8081.");
    } else if (retriable) {
        mw_error_set(err, MW_ERR_REGISTRY, true,
                     "could not %s: the Schema Registry is unavailable",
                     action);
    } else {
        mw_error_set(err, MW_ERR_REGISTRY, false,
                     "could not %s: the Schema Registry refused the request",
                     action);
    }
    if (message[0] != '\0')
        mw_error_detail(err, "HTTP %ld, error code %d: %s", status, code,
                        message);
    else
        mw_error_detail(err, "HTTP %ld with no Confluent error body.", status);
    return code;
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct body *b = userdata;
    size_t n = size * nmemb;
    char *buf;

    if (n > MAX_BODY - b->len)
        return 0; /* CURLE_WRITE_ERROR */
    buf = realloc(b->buf, b->len + n + 1);
    if (buf == NULL)
        return 0;
    memcpy(buf + b->len, ptr, n);
    b->len += n;
    buf[b->len] = '\0';
    b->buf = buf;
    return n;
}

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/*
 * One HTTP exchange with one URL.  0 with *status, or -1 (network).
 *
 * Each exchange runs on a copy of r->curl, freed afterwards: libcurl
 * before 8.1.0 (Debian 12 has 7.88) keeps a pointer to the last header
 * of the previous response on a handle, and an answer whose first header
 * line is folded (starts with a space) then makes it read freed memory.
 * The cost is a new connection per request, which the cache makes rare.
 */
static int exchange(struct registry *r, const char *url, const char *method,
                    const char *payload, long *status, struct body *b,
                    char *errbuf)
{
    CURL *c = curl_easy_duphandle(r->curl);
    CURLcode rc;

    free(b->buf);
    b->buf = NULL;
    b->len = 0;
    if (c == NULL) {
        snprintf(errbuf, CURL_ERROR_SIZE, "out of memory");
        return -1;
    }
    errbuf[0] = '\0';
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, b);
    if (payload != NULL) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, payload);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(payload));
    } else {
        curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    }
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    rc = curl_easy_perform(c);
    if (rc != CURLE_OK) {
        if (errbuf[0] == '\0')
            snprintf(errbuf, CURL_ERROR_SIZE, "%s", curl_easy_strerror(rc));
        curl_easy_cleanup(c);
        return -1;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    curl_easy_cleanup(c);
    return 0;
}

/*
 * Sends method path (with payload, a JSON text, for POST) to each URL in
 * turn, and again after a back-off while every URL failed on the network
 * or answered something retriable, attempts times in all.  Returns 0 with
 * the last *status and body, which the caller frees and judges (non-2xx),
 * or -1 with err (retriable) and no body when no URL answered.  Called
 * with the lock held.
 */
static int request(struct registry *r, const char *method, const char *path,
                   const char *payload, int attempts, const char *action,
                   long *status, struct body *b, struct mw_error *err)
{
    char errbuf[CURL_ERROR_SIZE], url[2048], shown[1024];

    for (int attempt = 0; attempt < attempts; attempt++) {
        for (size_t k = 0; k < r->url_count; k++) {
            size_t i = (r->url_current + k) % r->url_count;

            snprintf(url, sizeof(url), "%s%s", r->urls[i], path);
            config_redact_url(r->urls[i], shown, sizeof(shown));
            if (exchange(r, url, method, payload, status, b, errbuf) != 0) {
                mw_error_set(err, MW_ERR_REGISTRY, true,
                             "could not %s: the Schema Registry is not "
                             "reachable",
                             action);
                mw_error_detail(err, "%s: %s", shown, errbuf);
                mw_error_hint(err, "Check MESH_WORKER_SCHEMA_REGISTRY_URL "
                                   "and that the registry is running.");
                continue;
            }
            if (registry_status_is_retriable(*status)) {
                registry_error_from_response(*status, b->buf, action, err);
                continue;
            }
            r->url_current = i;
            return 0;
        }
        if (attempt + 1 < attempts) {
            int64_t most = registry_backoff_ms(attempt);
            int64_t wait = most / 2 + rand_r(&r->seed) % (most / 2 + 1);

            log_warn("registry", "Schema Registry request failed; retrying",
                     LF_STR("error", err->msg), LF_STR("detail", err->detail),
                     LF_INT("backoff_ms", wait));
            sleep_ms(wait);
        }
    }
    free(b->buf);
    b->buf = NULL;
    b->len = 0;
    err->retriable = true;
    return -1;
}

/* Splits the comma-separated URL list into r->urls. */
static int parse_urls(struct registry *r, const char *list,
                      struct mw_error *err)
{
    const char *p = list;

    while (*p != '\0') {
        size_t len = strcspn(p, ",");
        const char *start = p;

        p += len;
        if (*p == ',')
            p++;
        while (len > 0 && (*start == ' ' || *start == '\t')) {
            start++;
            len--;
        }
        while (len > 0 && (start[len - 1] == ' ' || start[len - 1] == '/' ||
                           start[len - 1] == '\t'))
            len--;
        if (len == 0)
            continue;
        if (r->url_count == MAX_URLS) {
            mw_error_set(err, MW_ERR_CONFIG, false,
                         "too many URLs in MESH_WORKER_SCHEMA_REGISTRY_URL");
            mw_error_hint(err, "Give at most %d.", MAX_URLS);
            return -1;
        }
        r->urls[r->url_count] = strndup(start, len);
        if (r->urls[r->url_count] == NULL) {
            mw_error_no_memory(err);
            return -1;
        }
        r->url_count++;
    }
    if (r->url_count == 0) {
        mw_error_set(err, MW_ERR_CONFIG, false,
                     "MESH_WORKER_SCHEMA_REGISTRY_URL holds no URL");
        return -1;
    }
    return 0;
}

/* Sets the options every request shares. */
static int set_options(struct registry *r, struct mw_error *err)
{
    const struct mw_config *cfg = r->cfg;
    CURL *c = r->curl;
    char bearer[4200];
    int rc = 0;

    r->headers = curl_slist_append(NULL, "Accept: " CONTENT_TYPE
                                         ", application/vnd.schemaregistry"
                                         "+json, application/json");
    if (r->headers != NULL)
        r->headers =
            curl_slist_append(r->headers, "Content-Type: " CONTENT_TYPE);
    if (r->headers != NULL && cfg->schema_registry_bearer_token != NULL) {
        snprintf(bearer, sizeof(bearer), "Authorization: Bearer %s",
                 cfg->schema_registry_bearer_token);
        r->headers = curl_slist_append(r->headers, bearer);
        memset(bearer, 0, sizeof(bearer));
    }
    if (r->headers == NULL) {
        mw_error_no_memory(err);
        return -1;
    }
    rc |= (int)curl_easy_setopt(c, CURLOPT_HTTPHEADER, r->headers);
    rc |= (int)curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    rc |= (int)curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    rc |= (int)curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    rc |= (int)curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    rc |= (int)curl_easy_setopt(c, CURLOPT_TIMEOUT_MS,
                                (long)cfg->schema_registry_timeout_ms);
    rc |= (int)curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS,
                                (long)cfg->schema_registry_timeout_ms);
    if (cfg->schema_registry_user_info != NULL) {
        rc |= (int)curl_easy_setopt(c, CURLOPT_HTTPAUTH, CURLAUTH_BASIC);
        rc |= (int)curl_easy_setopt(c, CURLOPT_USERPWD,
                                    cfg->schema_registry_user_info);
    }
    if (cfg->schema_registry_ca_file != NULL)
        rc |= (int)curl_easy_setopt(c, CURLOPT_CAINFO,
                                    cfg->schema_registry_ca_file);
    if (cfg->schema_registry_cert_file != NULL)
        rc |= (int)curl_easy_setopt(c, CURLOPT_SSLCERT,
                                    cfg->schema_registry_cert_file);
    if (cfg->schema_registry_key_file != NULL)
        rc |= (int)curl_easy_setopt(c, CURLOPT_SSLKEY,
                                    cfg->schema_registry_key_file);
    if (rc != 0) {
        mw_error_set(err, MW_ERR_CONFIG, false,
                     "this libcurl does not support a Schema Registry "
                     "option");
        mw_error_hint(err, "libcurl 7.85 or later with TLS is needed.");
        return -1;
    }
    return 0;
}

struct registry *registry_new(const struct mw_config *cfg, struct mw_error *err)
{
    struct registry *r = calloc(1, sizeof(*r));

    if (r == NULL) {
        mw_error_no_memory(err);
        return NULL;
    }
    r->cfg = cfg;
    r->seed = (unsigned int)time(NULL) ^ (unsigned int)(uintptr_t)r;
    pthread_mutex_init(&r->lock, NULL);
    if (parse_urls(r, cfg->schema_registry_url, err) != 0)
        goto fail;
    r->cache_size = (size_t)cfg->schema_registry_cache_size;
    r->cache = calloc(r->cache_size, sizeof(*r->cache));
    if (r->cache != NULL && curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK)
        r->curl = curl_easy_init();
    if (r->curl == NULL) {
        mw_error_set(err, MW_ERR_SYSTEM, false,
                     "could not prepare the Schema Registry client");
        goto fail;
    }
    if (set_options(r, err) != 0)
        goto fail;
    return r;
fail:
    registry_destroy(r);
    return NULL;
}

void registry_destroy(struct registry *r)
{
    if (r == NULL)
        return;
    if (r->curl != NULL) {
        curl_easy_cleanup(r->curl);
        curl_global_cleanup();
    }
    curl_slist_free_all(r->headers);
    for (size_t i = 0; i < r->url_count; i++)
        free(r->urls[i]);
    for (size_t i = 0; r->cache != NULL && i < r->cache_size; i++)
        free(r->cache[i].json);
    free(r->cache);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

static const char *cache_find(struct registry *r, uint32_t id)
{
    for (size_t i = 0; i < r->cache_size; i++) {
        if (r->cache[i].json != NULL && r->cache[i].id == id)
            return r->cache[i].json;
    }
    return NULL;
}

/* Keeps a copy of json under id, evicting the oldest entry if full. */
static void cache_put(struct registry *r, uint32_t id, const char *json)
{
    struct cached_schema *slot = &r->cache[r->cache_next];
    char *copy = strdup(json);

    if (copy == NULL)
        return; /* not cached: fetched again next time */
    free(slot->json);
    slot->id = id;
    slot->json = copy;
    r->cache_next = (r->cache_next + 1) % r->cache_size;
}

/* Reads {"schema": "..."} into a malloc'ed string, or NULL. */
static char *schema_of(const char *body)
{
    json_t *root = body ? json_loads(body, 0, NULL) : NULL;
    json_t *schema = json_object_get(root, "schema");
    char *out =
        json_is_string(schema) ? strdup(json_string_value(schema)) : NULL;

    json_decref(root);
    return out;
}

static int fetch_locked(struct registry *r, uint32_t id, char **json,
                        struct mw_error *err)
{
    const char *cached = cache_find(r, id);
    char path[64], action[64];
    struct body b = {0};
    long status = 0;
    int code;

    if (cached != NULL) {
        *json = strdup(cached);
        if (*json == NULL) {
            mw_error_no_memory(err);
            return -1;
        }
        return 0;
    }
    snprintf(path, sizeof(path), "/schemas/ids/%" PRIu32, id);
    snprintf(action, sizeof(action), "fetch schema id %" PRIu32, id);
    if (request(r, "GET", path, NULL, FETCH_ATTEMPTS, action, &status, &b,
                err) != 0)
        return -1;
    if (status != 200) {
        code = registry_error_from_response(status, b.buf, action, err);
        free(b.buf);
        return code == 40403 ? REGISTRY_NOT_FOUND : -1;
    }
    *json = schema_of(b.buf);
    free(b.buf);
    if (*json == NULL) {
        mw_error_set(err, MW_ERR_REGISTRY, true,
                     "could not %s: the answer holds no schema", action);
        return -1;
    }
    cache_put(r, id, *json);
    log_info("registry", "writer schema fetched", LF_INT("schema_id", id));
    return 0;
}

int registry_fetch_schema(void *ctx, uint32_t id, char **json,
                          struct mw_error *err)
{
    struct registry *r = ctx;
    int rc;

    *json = NULL;
    pthread_mutex_lock(&r->lock);
    rc = fetch_locked(r, id, json, err);
    pthread_mutex_unlock(&r->lock);
    return rc;
}

/* Reads an integer member of a JSON answer; -1 when absent. */
static int64_t integer_of(const char *body, const char *name)
{
    json_t *root = body ? json_loads(body, 0, NULL) : NULL;
    json_t *v = json_object_get(root, name);
    int64_t out = json_is_integer(v) ? (int64_t)json_integer_value(v) : -1;

    json_decref(root);
    return out;
}

/*
 * After a failed look-up, says in err's detail what the subject holds
 * instead, so that the operator sees which version is registered.
 */
static void describe_latest(struct registry *r, const char *escaped,
                            struct mw_error *err)
{
    char path[512];
    struct body b = {0};
    struct mw_error ignored;
    long status = 0;
    int64_t version, id;

    snprintf(path, sizeof(path), "/subjects/%s/versions/latest", escaped);
    if (request(r, "GET", path, NULL, 1, "look up the latest version", &status,
                &b, &ignored) == 0 &&
        status == 200) {
        version = integer_of(b.buf, "version");
        id = integer_of(b.buf, "id");
        mw_error_detail(err,
                        "The subject's latest version is %" PRId64
                        " (schema id %" PRId64 "), which is not the schema "
                        "compiled into this worker.",
                        version, id);
    }
    free(b.buf);
}

static int subject_locked(struct registry *r, const char *subject,
                          const char *schema_json, int64_t *id,
                          struct mw_error *err)
{
    bool is_register = r->cfg->schema_registry_auto_register != 0;
    char *escaped = curl_easy_escape(r->curl, subject, 0);
    char path[512], action[400];
    json_t *doc = json_pack("{s:s}", "schema", schema_json);
    char *payload = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    struct body b = {0};
    long status = 0;
    int code, rc = -1;

    json_decref(doc);
    if (escaped == NULL || payload == NULL) {
        mw_error_no_memory(err);
        goto done;
    }
    snprintf(path, sizeof(path),
             is_register ? "/subjects/%s/versions" : "/subjects/%s", escaped);
    snprintf(action, sizeof(action), "%s the schema of subject %s",
             is_register ? "register" : "look up", subject);
    if (request(r, "POST", path, payload, STARTUP_ATTEMPTS, action, &status, &b,
                err) != 0)
        goto done;
    if (status != 200) {
        code = registry_error_from_response(status, b.buf, action, err);
        if (!is_register && (code == 40401 || code == 40403)) {
            mw_error_set(err, MW_ERR_CONFIG, false,
                         "cannot start: the schema compiled into this worker "
                         "is not registered under subject %s",
                         subject);
            if (code == 40401)
                mw_error_detail(err, "The subject does not exist.");
            else
                describe_latest(r, escaped, err);
            mw_error_hint(err, "Register schemas/ under the subject, or set "
                               "MESH_WORKER_SCHEMA_REGISTRY_AUTO_REGISTER="
                               "true.");
        }
        err->code = MW_ERR_CONFIG;
        goto done;
    }
    *id = integer_of(b.buf, "id");
    if (*id < 0 || *id > INT32_MAX) {
        mw_error_set(err, MW_ERR_REGISTRY, false,
                     "could not %s: the answer holds no schema id", action);
        goto done;
    }
    log_info("registry",
             is_register ? "schema registered" : "registered schema found",
             LF_STR("subject", subject), LF_INT("schema_id", *id));
    rc = 0;
done:
    free(b.buf);
    free(payload);
    curl_free(escaped);
    return rc;
}

int registry_subject_id(struct registry *r, const char *topic,
                        const char *schema_json, int64_t *id,
                        struct mw_error *err)
{
    char subject[300];
    int rc;

    snprintf(subject, sizeof(subject), "%s-value", topic);
    pthread_mutex_lock(&r->lock);
    rc = subject_locked(r, subject, schema_json, id, err);
    pthread_mutex_unlock(&r->lock);
    return rc;
}
