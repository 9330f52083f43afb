/*
 * Process-wide counters and gauges, updated lock-free by the consumer, the
 * relay and the scheduler and read by the HTTP /metrics handler.  The one
 * global besides the config and the logger, because every thread counts.
 */
#ifndef MW_METRICS_H
#define MW_METRICS_H

#include <stdatomic.h>
#include <stdint.h>

#define METRICS_LATENCY_BUCKETS 12

struct mw_metrics {
    atomic_llong consumed;       /* messages read from customer.requests */
    atomic_llong provisioned;    /* customers created */
    atomic_llong updated;        /* customer updates applied */
    atomic_llong rejected;       /* CustomerRejected written */
    atomic_llong duplicates;     /* redeliveries that changed nothing */
    atomic_llong conflicts;      /* REQUEST_ID_CONFLICT */
    atomic_llong dlq;            /* messages sent to the DLQ */
    atomic_llong batches;        /* database transactions committed */
    atomic_llong batch_failures; /* batches rolled back and retried */
    atomic_llong published;      /* outbox rows delivered to Kafka */
    atomic_llong rebalances;     /* assignments and revocations */
    atomic_llong timers_fired;   /* lifecycle timers handled */
    atomic_llong outbox_backlog; /* unpublished rows (gauge) */
    atomic_llong outbox_oldest_age_ms; /* age of the oldest (gauge) */
    atomic_llong consumer_lag;        /* sum over assigned partitions (gauge) */
    atomic_llong due_timers;          /* timers due and not yet fired (gauge) */
    atomic_llong assigned_partitions; /* gauge */
    atomic_int db_ready;              /* 1 when the last database call worked */
    atomic_int kafka_ready;           /* 1 when the consumer sees its brokers */
    /* The topic Kafka last refused the relay's writes to (ACLs), until a
     * write to it succeeds; NULL when none.  Points into the config. */
    const char *_Atomic write_denied_topic;
    /* Processing latency (consume to commit) histogram, seconds. */
    atomic_llong latency_buckets[METRICS_LATENCY_BUCKETS];
    atomic_llong latency_count;
    atomic_llong latency_sum_us;
};

extern struct mw_metrics mw_metrics;

/* Upper bounds of the latency buckets in seconds (the last is +Inf). */
extern const double metrics_latency_bounds[METRICS_LATENCY_BUCKETS];

/* Records one processing latency in microseconds.  Can't fail. */
void metrics_observe_latency_us(int64_t us);

#endif
