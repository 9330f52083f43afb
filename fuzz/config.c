/*
 * Fuzz target: configuration values.  An input is lines NAME=VALUE; the
 * target sets MESH_WORKER_NAME to VALUE in an otherwise empty environment
 * (a NAME ending in _FILE gets a file holding VALUE), runs config_load(),
 * and with what loads builds the Schema Registry client (which splits the
 * URL list) and the librdkafka configuration (which applies every
 * MESH_WORKER_KAFKA_* property).  Each VALUE also goes through
 * config_parse_duration() and config_redact_url() directly.
 *
 * Secrets: every value that config.c or kafka.c treats as a secret gets a
 * canary appended; no error message, detail or hint may show it, nor may
 * a redacted URL that had it as its password.
 */
#include "fuzz.h"

#include "config.h"
#include "error.h"
#include "kafka.h"
#include "registry.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_VARS 80
#define CANARY "Zq9canaryX"

static char dir[] = "/tmp/mw-fuzz-config-XXXXXX";
static int files;

static void remove_files(void)
{
    char path[64];

    for (int i = 0; i < files; i++) {
        snprintf(path, sizeof(path), "%s/%d", dir, i);
        unlink(path);
    }
    rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (mkdtemp(dir) == NULL)
        fuzz_fail("mkdtemp: cannot make %s", dir);
    atexit(remove_files);
    log_set_level(LOG_ERROR);
    return 0;
}

/* Whether config.c or kafka.c keeps the value of MESH_WORKER_name secret. */
static bool is_secret(const char *name)
{
    if (strcmp(name, "SCHEMA_REGISTRY_USER_INFO") == 0 ||
        strcmp(name, "SCHEMA_REGISTRY_BEARER_TOKEN") == 0)
        return true;
    if (strncmp(name, "KAFKA_", 6) != 0)
        return false;
    /* kafka property names are matched in lower case */
    for (const char *p = name; *p != '\0'; p++) {
        static const char *const words[] = {"PASSWORD", "SECRET", "TOKEN",
                                            "KEY"};

        for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
            if (strncmp(p, words[i], strlen(words[i])) == 0)
                return true;
    }
    return false;
}

static void check_hidden(const struct mw_error *err, const char *where)
{
    if (strstr(err->msg, CANARY) || strstr(err->detail, CANARY) ||
        strstr(err->hint, CANARY))
        fuzz_fail("%s shows a secret: %s / %s / %s", where, err->msg,
                  err->detail, err->hint);
}

static void check_value(const char *value)
{
    static const size_t sizes[] = {1, 2, 7, 64, 4096};
    char out[4096], url[4096];
    int64_t ms;

    if (config_parse_duration(value, &ms) == 0 && ms < 0)
        fuzz_fail("duration \"%s\" parses as %lld ms", value, (long long)ms);
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        memset(out, 'x', sizeof(out));
        config_redact_url(value, out, sizes[i]);
        if (memchr(out, '\0', sizes[i]) == NULL)
            fuzz_fail("config_redact_url overruns %zu bytes", sizes[i]);
    }
    if (strstr(value, CANARY) != NULL)
        return;
    /* A password in either form, with the value around it. */
    snprintf(url, sizeof(url), "postgresql://user:" CANARY "@%s", value);
    config_redact_url(url, out, sizeof(out));
    if (strstr(out, CANARY) != NULL)
        fuzz_fail("config_redact_url shows the password of %s: %s", url, out);
    snprintf(url, sizeof(url), "host=db password=" CANARY " %s", value);
    config_redact_url(url, out, sizeof(out));
    if (strstr(out, CANARY) != NULL)
        fuzz_fail("config_redact_url shows the password of %s: %s", url, out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = strndup((const char *)data, size);
    char *values[MAX_VARS];
    size_t count = 0;
    bool canary_elsewhere = false;
    struct mw_config cfg;
    struct mw_error err;
    char *line, *save = NULL;

    if (text == NULL)
        fuzz_fail("out of memory");
    clearenv();
    /* clearenv() leaves environ NULL, which no started process sees. */
    setenv("MW_FUZZ", "1", 1);
    for (line = strtok_r(text, "\n", &save); line != NULL && count < MAX_VARS;
         line = strtok_r(NULL, "\n", &save)) {
        char *eq = strchr(line, '='), name[300], path[64];
        size_t len;
        bool is_file;
        FILE *f;

        if (eq == NULL || eq == line || (size_t)(eq - line) > 200)
            continue;
        *eq = '\0';
        snprintf(name, sizeof(name), "MESH_WORKER_%s", line);
        /* librdkafka would dlopen() a plugin path. */
        if (strstr(line, "PLUGIN") != NULL)
            continue;
        values[count] = malloc(strlen(eq + 1) + sizeof(CANARY));
        if (values[count] == NULL)
            fuzz_fail("out of memory");
        strcpy(values[count], eq + 1);
        /* Messages name the variable: a canary there is no secret. */
        if (strstr(values[count], CANARY) != NULL ||
            strstr(line, CANARY) != NULL)
            canary_elsewhere = true;
        check_value(values[count]);
        len = strlen(line);
        is_file = len > 5 && strcmp(line + len - 5, "_FILE") == 0;
        if (is_file)
            line[len - 5] = '\0';
        if (is_secret(line))
            strcat(values[count], CANARY);
        if (is_file) {
            snprintf(path, sizeof(path), "%s/%zu", dir, count);
            f = fopen(path, "w");
            if (f == NULL)
                fuzz_fail("cannot write %s", path);
            fputs(values[count], f);
            fclose(f);
            if ((int)count >= files)
                files = (int)count + 1;
            setenv(name, path, 1);
        } else {
            setenv(name, values[count], 1);
        }
        count++;
    }
    for (size_t i = 0; i < count; i++)
        free(values[i]);
    free(text);

    mw_error_clear(&err);
    if (config_load(&cfg, &err) != 0) {
        if (err.code != MW_ERR_CONFIG || err.msg[0] == '\0')
            fuzz_fail("config_load failed without a configuration error");
        if (!canary_elsewhere)
            check_hidden(&err, "config_load");
        config_free(&cfg);
        return 0;
    }
    if (cfg.schema_registry_url != NULL) {
        struct registry *registry = registry_new(&cfg, &err);

        if (registry == NULL && !canary_elsewhere)
            check_hidden(&err, "registry_new");
        registry_destroy(registry);
    }
    {
        static const enum config_kafka_client clients[] = {
            CONFIG_KAFKA_PRODUCER, CONFIG_KAFKA_CONSUMER};

        for (size_t i = 0; i < sizeof clients / sizeof clients[0]; i++) {
            rd_kafka_conf_t *conf =
                kafka_conf_new(&cfg, "localhost:9092", clients[i], NULL, &err);

            if (conf == NULL && !canary_elsewhere)
                check_hidden(&err, "kafka_conf_new");
            if (conf != NULL)
                rd_kafka_conf_destroy(conf);
        }
    }
    config_free(&cfg);
    return 0;
}
