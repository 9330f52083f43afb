/*
 * Kafka configuration and header blobs shared by the consumer, the relay
 * and the CLI.
 *
 * Configuration: each client gets the worker's settings for it, then the
 * MESH_WORKER_KAFKA_<PROPERTY> variables whose property applies to its
 * kind (librdkafka's own table says which: producer, consumer or both),
 * then the MESH_WORKER_KAFKA_PRODUCER_ or _CONSUMER_ ones for its kind.
 * A property the worker's guarantees rest on cannot be set to another
 * value than the worker's: it is refused, naming the variable, before
 * any client exists.
 *
 * Header blobs are the form in which a DLQ'd message's headers wait in
 * the outbox: they must come back byte for byte.
 */
#include "kafka.h"

#include "log.h"

#include <assert.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PROPERTIES 256
#define PROPERTY_NAME_MAX 64

/* One row of librdkafka's property table. */
struct property {
    char name[PROPERTY_NAME_MAX];
    char canonical[PROPERTY_NAME_MAX]; /* the name an alias stands for */
    char scope;                        /* 'P' producer, 'C' consumer, '*' */
};

/* Filled once from rd_kafka_conf_properties_show; read-only after. */
static struct property properties[MAX_PROPERTIES];
static size_t properties_count;
static pthread_once_t properties_once = PTHREAD_ONCE_INIT;

/*
 * A property whose value the worker's guarantees depend on.  value is the
 * only value accepted (compared as librdkafka reads it, so "-1" is "all");
 * NULL refuses every value, and instead names the variable to use.
 */
struct guard {
    const char *name; /* canonical name */
    const char *value;
    const char *instead;
    const char *why;
};

static const struct guard guards[] = {
    {"enable.auto.commit", "false", NULL,
     "The worker commits a batch's offsets after its database transaction "
     "commits; committing them earlier loses requests on a crash."},
    {"auto.commit.enable", "false", NULL,
     "The worker commits a batch's offsets after its database transaction "
     "commits; committing them earlier loses requests on a crash."},
    {"enable.auto.offset.store", "false", NULL,
     "The worker stores a batch's offsets after its database transaction "
     "commits; storing them earlier loses requests on a crash."},
    {"offset.store.method", "broker", NULL,
     "Offsets are committed to the group's coordinator, where every replica "
     "finds them."},
    {"isolation.level", "read_committed", NULL,
     "Requests of aborted transactions must not provision customers."},
    {"partition.assignment.strategy", "cooperative-sticky", NULL,
     "The consumer's rebalance handling is incremental; an eager assignor "
     "redelivers whole partitions on every rebalance."},
    {"auto.offset.reset", "earliest", NULL,
     "A new group, or an offset the topic no longer holds, must start at "
     "the oldest request, not skip the backlog."},
    {"group.id", NULL, "MESH_WORKER_GROUP_ID",
     "The consumer group has its own variable."},
    {"enable.idempotence", "true", NULL,
     "The relay relies on the idempotent producer for order and for no "
     "duplicates when it retries."},
    {"request.required.acks", "all", NULL,
     "An outbox row is marked published only once every in-sync replica "
     "has the event."},
    {"message.timeout.ms", "0", NULL,
     "The relay retries in order for as long as Kafka is away; a timeout "
     "would let later events overtake a failed one."},
    {"message.send.max.retries", "2147483647", NULL,
     "The relay retries in order for as long as Kafka is away; a retry "
     "limit would let later events overtake a failed one."},
    {"queuing.strategy", "fifo", NULL,
     "Events are published in the order their transactions committed."},
    {"partitioner", "murmur2_random", NULL,
     "A customer's events go to the partition Java clients pick for its "
     "key, so that they stay in order."},
    {"transactional.id", "", NULL,
     "The relay's producer is idempotent, not transactional."},
    {"compression.codec", NULL, "MESH_WORKER_EVENTS_COMPRESSION",
     "The events' codec is part of their contract."},
    {"metadata.broker.list", NULL, "MESH_WORKER_KAFKA_BOOTSTRAP_SERVERS",
     "Every client uses the same brokers."},
    {NULL, NULL, NULL, NULL}};

/* Copies a table cell without its surrounding spaces. */
static void copy_cell(const char *cell, size_t len, char *out, size_t out_len)
{
    while (len > 0 && *cell == ' ') {
        cell++;
        len--;
    }
    while (len > 0 && cell[len - 1] == ' ')
        len--;
    if (len >= out_len)
        len = out_len - 1;
    memcpy(out, cell, len);
    out[len] = '\0';
}

/*
 * Reads one row, "name | C/P | range | default | importance | description",
 * into p.  Returns 0, or -1 for a line that is not a property row.
 */
static int parse_row(const char *line, struct property *p)
{
    const char *bar1 = strchr(line, '|'), *bar2, *alias;
    char scope[8];

    if (bar1 == NULL)
        return -1;
    bar2 = strchr(bar1 + 1, '|');
    if (bar2 == NULL)
        return -1;
    copy_cell(line, (size_t)(bar1 - line), p->name, sizeof(p->name));
    copy_cell(bar1 + 1, (size_t)(bar2 - bar1 - 1), scope, sizeof(scope));
    if (strlen(scope) != 1 || strchr("PC*", scope[0]) == NULL)
        return -1; /* the heading or the rule under it */
    p->scope = scope[0];
    snprintf(p->canonical, sizeof(p->canonical), "%s", p->name);
    alias = strstr(bar2, "| Alias for `");
    if (alias != NULL) {
        alias += strlen("| Alias for `");
        copy_cell(alias, strcspn(alias, "`"), p->canonical,
                  sizeof(p->canonical));
    }
    return 0;
}

/*
 * Loads librdkafka's property table.  A name listed twice (global and
 * topic level) keeps its first, global row, which rd_kafka_conf_set
 * prefers too.  Known limit: the table is the text librdkafka prints for
 * CONFIGURATION.md; were its layout to change, every property would be
 * unknown and start-up would stop at the first MESH_WORKER_KAFKA_*
 * variable, never pass one to the wrong client.
 */
static void load_properties(void)
{
    char *text = NULL, *line, *save = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);

    if (f == NULL)
        return;
    rd_kafka_conf_properties_show(f);
    fclose(f);
    for (line = strtok_r(text, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        struct property p;
        size_t i;

        if (properties_count == MAX_PROPERTIES || parse_row(line, &p) < 0)
            continue;
        for (i = 0; i < properties_count; i++) {
            if (strcmp(properties[i].name, p.name) == 0)
                break;
        }
        if (i == properties_count)
            properties[properties_count++] = p;
    }
    free(text);
}

static const struct property *find_property(const char *name)
{
    for (size_t i = 0; i < properties_count; i++) {
        if (strcmp(properties[i].name, name) == 0)
            return &properties[i];
    }
    return NULL;
}

/* Writes name with every dot an underscore (log.level is log_level). */
static void underscore(const char *name, char *out, size_t out_len)
{
    size_t i;

    for (i = 0; name[i] != '\0' && i + 1 < out_len; i++)
        out[i] = name[i] == '.' ? '_' : name[i];
    out[i] = '\0';
}

/*
 * Finds a property as the variable spells it, with dots, or failing that
 * with underscores.  NULL when librdkafka does not know it.
 */
static const struct property *lookup_property(const char *name)
{
    const struct property *p;
    char underscored[PROPERTY_NAME_MAX];

    pthread_once(&properties_once, load_properties);
    p = find_property(name);
    if (p == NULL && strlen(name) < sizeof(underscored)) {
        underscore(name, underscored, sizeof(underscored));
        p = find_property(underscored);
    }
    return p;
}

int kafka_conf_set(rd_kafka_conf_t *conf, const char *name, const char *value,
                   struct mw_error *err)
{
    char errstr[512], underscored[256];
    rd_kafka_conf_res_t res;

    res = rd_kafka_conf_set(conf, name, value, errstr, sizeof(errstr));
    if (res == RD_KAFKA_CONF_UNKNOWN && strlen(name) < sizeof(underscored)) {
        /* A few properties (log_level, for one) are
         * spelled with underscores: MESH_WORKER_KAFKA_LOG_LEVEL means
         * log_level. */
        underscore(name, underscored, sizeof(underscored));
        res =
            rd_kafka_conf_set(conf, underscored, value, errstr, sizeof(errstr));
    }
    if (res != RD_KAFKA_CONF_OK) {
        mw_error_set(err, MW_ERR_CONFIG, false, "invalid Kafka property \"%s\"",
                     name);
        mw_error_detail(err, "%s", errstr);
        mw_error_hint(err, "Check the MESH_WORKER_KAFKA_* variable that sets "
                           "it; names follow librdkafka's CONFIGURATION.md "
                           "with dots written as underscores.");
        return -1;
    }
    return 0;
}

/*
 * Writes value as librdkafka reads it back (e.g. "all" for "-1") into
 * out, "" for no value.  Returns 0, or -1 when librdkafka refuses it.
 */
static int read_back(const char *name, const char *value, char *out,
                     size_t out_len, char *errstr, size_t errstr_len)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    size_t len = out_len;
    int rc = 0;

    out[0] = '\0';
    if (rd_kafka_conf_set(conf, name, value, errstr, errstr_len) !=
        RD_KAFKA_CONF_OK)
        rc = -1;
    else if (rd_kafka_conf_get(conf, name, out, &len) != RD_KAFKA_CONF_OK)
        out[0] = '\0';
    rd_kafka_conf_destroy(conf);
    return rc;
}

static const struct guard *find_guard(const char *canonical)
{
    for (const struct guard *g = guards; g->name != NULL; g++) {
        if (strcmp(g->name, canonical) == 0)
            return g;
    }
    return NULL;
}

/* Checks one variable; see kafka_check_properties. */
static int check_property(const struct config_kafka_prop *kp,
                          struct mw_error *err)
{
    const struct property *p = lookup_property(kp->name);
    const struct guard *g;
    char seen[256], wanted[256], errstr[512];

    if (p == NULL) {
        mw_error_set(err, MW_ERR_CONFIG, false,
                     "unknown Kafka property in %s: \"%s\"", kp->var, kp->name);
        mw_error_hint(err, "Names follow librdkafka's CONFIGURATION.md, "
                           "in upper case with dots written as "
                           "underscores.");
        return -1;
    }
    if ((kp->client == CONFIG_KAFKA_PRODUCER && p->scope == 'C') ||
        (kp->client == CONFIG_KAFKA_CONSUMER && p->scope == 'P')) {
        mw_error_set(
            err, MW_ERR_CONFIG, false, "%s sets %s, a %s property, for the %ss",
            kp->var, p->name, p->scope == 'C' ? "consumer" : "producer",
            kp->client == CONFIG_KAFKA_PRODUCER ? "producer" : "consumer");
        mw_error_hint(err, "Use MESH_WORKER_KAFKA_<PROPERTY>: it reaches "
                           "exactly the clients a property applies to.");
        return -1;
    }
    if (read_back(p->name, kp->value, seen, sizeof(seen), errstr,
                  sizeof(errstr)) < 0) {
        mw_error_set(err, MW_ERR_CONFIG, false,
                     "invalid value for %s: librdkafka refuses it for %s",
                     kp->var, p->name);
        if (!kp->is_secret)
            mw_error_detail(err, "%s", errstr);
        return -1;
    }
    g = find_guard(p->canonical);
    if (g == NULL)
        return 0;
    if (g->value == NULL) {
        mw_error_set(err, MW_ERR_CONFIG, false, "%s cannot be set", kp->var);
        mw_error_detail(err, "%s", g->why);
        mw_error_hint(err, "Set %s instead.", g->instead);
        return -1;
    }
    if (read_back(p->name, g->value, wanted, sizeof(wanted), errstr,
                  sizeof(errstr)) < 0 ||
        strcmp(seen, wanted) != 0) {
        mw_error_set(err, MW_ERR_CONFIG, false,
                     "%s cannot be \"%s\": the worker needs %s=%s", kp->var,
                     kp->is_secret ? "(not shown)" : kp->value, g->name,
                     g->value[0] ? g->value : "(unset)");
        mw_error_detail(err, "%s", g->why);
        mw_error_hint(err, "Unset %s.", kp->var);
        return -1;
    }
    return 0;
}

int kafka_check_properties(const struct mw_config *cfg, struct mw_error *err)
{
    for (size_t i = 0; i < cfg->kafka_props_count; i++) {
        if (check_property(&cfg->kafka_props[i], err) < 0)
            return -1;
    }
    return 0;
}

/* Whether librdkafka uses property name in a client of this kind. */
static bool applies(const char *name, enum config_kafka_client client)
{
    const struct property *p = lookup_property(name);

    if (p == NULL)
        return false;
    return p->scope == '*' ||
           (p->scope == 'P' && client == CONFIG_KAFKA_PRODUCER) ||
           (p->scope == 'C' && client == CONFIG_KAFKA_CONSUMER);
}

/* Applies the variables of one form (every client, or this one's). */
static int apply_props(rd_kafka_conf_t *conf, const struct mw_config *cfg,
                       enum config_kafka_client client,
                       enum config_kafka_client form, struct mw_error *err)
{
    for (size_t i = 0; i < cfg->kafka_props_count; i++) {
        const struct config_kafka_prop *p = &cfg->kafka_props[i];

        if (p->client != form || !applies(p->name, client))
            continue;
        if (kafka_conf_set(conf, p->name, p->value, err) < 0) {
            mw_error_set(err, MW_ERR_CONFIG, false,
                         "invalid value for %s: librdkafka refuses \"%s\"",
                         p->var, p->name);
            return -1;
        }
    }
    return 0;
}

void kafka_log(const rd_kafka_t *rk, int level, const char *facility,
               const char *line)
{
    /* syslog levels: 0-3 errors, 4 warning, 5-6 notice and info, 7 debug */
    enum log_level ours = level <= 3   ? LOG_ERROR
                          : level == 4 ? LOG_WARN
                          : level <= 6 ? LOG_INFO
                                       : LOG_DEBUG;

    MW_LOG(ours, "librdkafka", "client log", LF_STR("facility", facility),
           LF_STR("client", rk ? rd_kafka_name(rk) : NULL),
           LF_STR("detail", line));
}

rd_kafka_conf_t *kafka_conf_new(const struct mw_config *cfg,
                                const char *bootstrap,
                                enum config_kafka_client client,
                                const char *const *defaults,
                                struct mw_error *err)
{
    rd_kafka_conf_t *conf;

    assert(client == CONFIG_KAFKA_PRODUCER || client == CONFIG_KAFKA_CONSUMER);
    if (kafka_check_properties(cfg, err) < 0)
        return NULL;
    conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, kafka_log);
    if (kafka_conf_set(conf, "bootstrap.servers", bootstrap, err) < 0 ||
        kafka_conf_set(conf, "reconnect.backoff.max.ms", "1000", err) < 0 ||
        kafka_conf_set(conf, "client.id", "mesh-worker", err) < 0)
        goto fail;
    for (size_t i = 0; defaults != NULL && defaults[i] != NULL; i += 2) {
        if (kafka_conf_set(conf, defaults[i], defaults[i + 1], err) < 0)
            goto fail;
    }
    if (apply_props(conf, cfg, client, CONFIG_KAFKA_EVERY, err) < 0 ||
        apply_props(conf, cfg, client, client, err) < 0)
        goto fail;
    return conf;
fail:
    rd_kafka_conf_destroy(conf);
    return NULL;
}

void kafka_headers_init(struct kafka_headers_buf *hb, struct mw_arena *arena)
{
    memset(hb, 0, sizeof(*hb));
    hb->arena = arena;
}

static int reserve(struct kafka_headers_buf *hb, size_t more)
{
    unsigned char *p;
    size_t cap;

    if (hb->len + more <= hb->cap)
        return 0;
    cap = hb->cap ? hb->cap * 2 : 256;
    while (cap < hb->len + more)
        cap *= 2;
    p = arena_alloc(hb->arena, cap);
    if (p == NULL)
        return -1;
    if (hb->len)
        memcpy(p, hb->buf, hb->len);
    hb->buf = p;
    hb->cap = cap;
    return 0;
}

int kafka_headers_add(struct kafka_headers_buf *hb, const char *name,
                      const void *value, ssize_t value_len)
{
    size_t name_len = strlen(name);
    uint32_t vlen = value ? (uint32_t)value_len : 0xffffffffu;

    if (name_len > 0xffff ||
        reserve(hb, 6 + name_len + (value ? (size_t)value_len : 0)) < 0)
        return -1;
    hb->buf[hb->len++] = (unsigned char)(name_len >> 8);
    hb->buf[hb->len++] = (unsigned char)name_len;
    memcpy(hb->buf + hb->len, name, name_len);
    hb->len += name_len;
    for (int shift = 24; shift >= 0; shift -= 8)
        hb->buf[hb->len++] = (unsigned char)(vlen >> shift);
    if (value && value_len > 0) {
        memcpy(hb->buf + hb->len, value, (size_t)value_len);
        hb->len += (size_t)value_len;
    }
    return 0;
}

int kafka_headers_add_all(struct kafka_headers_buf *hb,
                          const rd_kafka_headers_t *hdrs)
{
    const char *name;
    const void *value;
    size_t len;

    if (hdrs == NULL)
        return 0;
    for (size_t i = 0; rd_kafka_header_get_all(hdrs, i, &name, &value, &len) ==
                       RD_KAFKA_RESP_ERR_NO_ERROR;
         i++) {
        if (kafka_headers_add(hb, name, value, value ? (ssize_t)len : -1) < 0)
            return -1;
    }
    return 0;
}

rd_kafka_resp_err_t kafka_produce(rd_kafka_t *rk, const char *topic,
                                  const void *key, size_t key_len,
                                  const void *value, size_t value_len,
                                  rd_kafka_headers_t *hdrs, void *opaque)
{
    rd_kafka_resp_err_t kerr;

    for (;;) {
        kerr = rd_kafka_producev(
            rk, RD_KAFKA_V_TOPIC(topic),
            RD_KAFKA_V_KEY((void *)key, (key != NULL ? key_len : 0)),
            RD_KAFKA_V_VALUE((void *)value, (value != NULL ? value_len : 0)),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(hdrs),
            RD_KAFKA_V_OPAQUE(opaque), RD_KAFKA_V_END);
        if (kerr != RD_KAFKA_RESP_ERR__QUEUE_FULL)
            break;
        rd_kafka_poll(rk, 10);
    }
    /* Headers are only taken on success. */
    if (kerr != RD_KAFKA_RESP_ERR_NO_ERROR && hdrs != NULL)
        rd_kafka_headers_destroy(hdrs);
    return kerr;
}

rd_kafka_headers_t *kafka_headers_unpack(const void *blob, size_t len)
{
    const unsigned char *p = blob, *end = p + len;
    rd_kafka_headers_t *hdrs;
    char name[1024];

    if (blob == NULL || len == 0)
        return NULL;
    hdrs = rd_kafka_headers_new(8);
    while (p < end) {
        size_t name_len;
        uint32_t vlen;

        if (end - p < 2)
            goto bad;
        name_len = ((size_t)p[0] << 8) | p[1];
        p += 2;
        if ((size_t)(end - p) < name_len + 4 || name_len >= sizeof(name))
            goto bad;
        memcpy(name, p, name_len);
        name[name_len] = '\0';
        p += name_len;
        vlen = ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
               ((uint32_t)p[2] << 8) | p[3];
        p += 4;
        if (vlen == 0xffffffffu) {
            rd_kafka_header_add(hdrs, name, (ssize_t)name_len, NULL, 0);
            continue;
        }
        if ((size_t)(end - p) < vlen)
            goto bad;
        rd_kafka_header_add(hdrs, name, (ssize_t)name_len, p, (ssize_t)vlen);
        p += vlen;
    }
    return hdrs;
bad:
    rd_kafka_headers_destroy(hdrs);
    return NULL;
}

int kafka_header_get(const rd_kafka_message_t *rkm, const char *name,
                     const void **value, size_t *len)
{
    rd_kafka_headers_t *hdrs;

    if (rd_kafka_message_headers(rkm, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return -1;
    if (rd_kafka_header_get_last(hdrs, name, value, len) !=
        RD_KAFKA_RESP_ERR_NO_ERROR)
        return -1;
    return 0;
}
