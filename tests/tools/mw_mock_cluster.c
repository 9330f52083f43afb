/*
 * A standalone librdkafka mock cluster for the integration tests, so that
 * worker replicas can be started, killed and restarted while the cluster
 * lives on.  Prints "bootstrap.servers=HOST:PORT" once ready, then reads
 * commands from standard input, one a line, answering "ok" or "error":
 *
 *   down BROKER / up BROKER         take a broker off or on line
 *   errors API COUNT ERR            push COUNT errors (codes) for an API key
 *   rtt BROKER MS                   add MS of latency to a broker
 *   quit                            stop (so does end of input)
 *
 * Usage: mw_mock_cluster [-b BROKERS] [-p PARTITIONS] TOPIC...
 */
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    int brokers = 1, partitions = 16, opt;
    char errstr[512], line[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_t *rk;
    rd_kafka_mock_cluster_t *mc;

    while ((opt = getopt(argc, argv, "b:p:")) != -1) {
        if (opt == 'b')
            brokers = atoi(optarg);
        else if (opt == 'p')
            partitions = atoi(optarg);
        else
            return 2;
    }
    rd_kafka_conf_set(conf, "log_level", "3", NULL, 0);
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (rk == NULL) {
        fprintf(stderr, "mw_mock_cluster: %s\n", errstr);
        return 1;
    }
    mc = rd_kafka_mock_cluster_new(rk, brokers);
    if (mc == NULL) {
        fprintf(stderr, "mw_mock_cluster: could not create the cluster\n");
        return 1;
    }
    for (int i = optind; i < argc; i++) {
        /* "name" or "name:partitions" */
        char name[256];
        const char *colon = strchr(argv[i], ':');
        int n = partitions;

        snprintf(name, sizeof(name), "%.*s",
                 colon ? (int)(colon - argv[i]) : (int)strlen(argv[i]),
                 argv[i]);
        if (colon)
            n = atoi(colon + 1);
        if (rd_kafka_mock_topic_create(mc, name, n, 1) != 0) {
            fprintf(stderr, "mw_mock_cluster: could not create %s\n", name);
            return 1;
        }
    }
    printf("bootstrap.servers=%s\n", rd_kafka_mock_cluster_bootstraps(mc));
    fflush(stdout);
    while (fgets(line, sizeof(line), stdin) != NULL) {
        int a = 0, b = 0, c = 0, ok = 1;

        if (sscanf(line, "down %d", &a) == 1)
            ok = rd_kafka_mock_broker_set_down(mc, a) == 0;
        else if (sscanf(line, "up %d", &a) == 1)
            ok = rd_kafka_mock_broker_set_up(mc, a) == 0;
        else if (sscanf(line, "rtt %d %d", &a, &b) == 2)
            ok = rd_kafka_mock_broker_set_rtt(mc, a, b) == 0;
        else if (sscanf(line, "errors %d %d %d", &a, &b, &c) == 3) {
            for (int i = 0; i < b; i++)
                rd_kafka_mock_push_request_errors(mc, (int16_t)a, 1,
                                                  (rd_kafka_resp_err_t)c);
        } else if (strncmp(line, "quit", 4) == 0)
            break;
        else
            ok = 0;
        printf("%s\n", ok ? "ok" : "error");
        fflush(stdout);
    }
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(rk);
    return 0;
}
