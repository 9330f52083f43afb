/*
 * Kafka configuration and header blobs shared by the consumer, the relay
 * and the CLI.  Header blobs are the form in which a DLQ'd message's
 * headers wait in the outbox: they must come back byte for byte.
 */
#include "kafka.h"

#include "log.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

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
        size_t i;

        for (i = 0; name[i]; i++)
            underscored[i] = name[i] == '.' ? '_' : name[i];
        underscored[i] = '\0';
        res = rd_kafka_conf_set(conf, underscored, value, errstr,
                                sizeof(errstr));
    }
    if (res != RD_KAFKA_CONF_OK) {
        mw_error_set(err, MW_ERR_CONFIG, false,
                     "invalid Kafka property \"%s\"", name);
        mw_error_detail(err, "%s", errstr);
        mw_error_hint(err, "Check the MESH_WORKER_KAFKA_* variable that sets "
                           "it; names follow librdkafka's CONFIGURATION.md "
                           "with dots written as underscores.");
        return -1;
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
                                const char *bootstrap, struct mw_error *err)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();

    rd_kafka_conf_set_log_cb(conf, kafka_log);
    if (kafka_conf_set(conf, "bootstrap.servers", bootstrap, err) < 0 ||
        kafka_conf_set(conf, "reconnect.backoff.max.ms", "1000", err) < 0 ||
        kafka_conf_set(conf, "client.id", "mesh-worker", err) < 0)
        goto fail;
    for (size_t i = 0; i < cfg->kafka_props_count; i++) {
        const struct config_kafka_prop *p = &cfg->kafka_props[i];

        if (kafka_conf_set(conf, p->name, p->value, err) < 0) {
            char var[300];
            size_t n = (size_t)snprintf(var, sizeof(var),
                                        "MESH_WORKER_KAFKA_%s", p->name);

            for (size_t j = strlen("MESH_WORKER_KAFKA_"); j < n; j++)
                var[j] = var[j] == '.' ? '_' : (char)toupper(
                                                   (unsigned char)var[j]);
            mw_error_set(err, MW_ERR_CONFIG, false,
                         "invalid value for %s: librdkafka refuses \"%s\"",
                         var, p->name);
            goto fail;
        }
    }
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
    for (size_t i = 0;
         rd_kafka_header_get_all(hdrs, i, &name, &value, &len) ==
         RD_KAFKA_RESP_ERR_NO_ERROR;
         i++) {
        if (kafka_headers_add(hb, name, value, value ? (ssize_t)len : -1) < 0)
            return -1;
    }
    return 0;
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
