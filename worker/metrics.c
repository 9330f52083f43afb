/*
 * Process-wide counters and the latency histogram.  Relaxed atomics: a
 * scrape may see one counter a moment ahead of another, never a torn
 * value.
 */
#include "metrics.h"

struct mw_metrics mw_metrics;

const double metrics_latency_bounds[METRICS_LATENCY_BUCKETS] = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 1e300};

void metrics_observe_latency_us(int64_t us)
{
    double s = (double)us / 1e6;
    int i = 0;

    while (i < METRICS_LATENCY_BUCKETS - 1 && s > metrics_latency_bounds[i])
        i++;
    atomic_fetch_add_explicit(&mw_metrics.latency_buckets[i], 1,
                              memory_order_relaxed);
    atomic_fetch_add_explicit(&mw_metrics.latency_count, 1,
                              memory_order_relaxed);
    atomic_fetch_add_explicit(&mw_metrics.latency_sum_us, us,
                              memory_order_relaxed);
}
