/*
 * Health and metrics over HTTP (libmicrohttpd): /healthz (the process
 * answers), /readyz (PostgreSQL and Kafka reachable; 503 with a JSON reason
 * otherwise) and /metrics (Prometheus text format).  Reads only the
 * process-wide counters in metrics.h; runs in libmicrohttpd's own thread.
 */
#ifndef MW_HTTP_H
#define MW_HTTP_H

#include "error.h"

struct http;

/*
 * Listens on addr ("HOST:PORT"; port 0 picks a free one).  Returns NULL
 * with err (MW_ERR_CONFIG naming MESH_WORKER_HTTP_ADDR) when the address
 * does not resolve or cannot be bound.
 */
struct http *http_start(const char *addr, struct mw_error *err) MW_MUSTCHECK;

/* The port actually bound. */
int http_port(const struct http *http);

/* Stops listening and frees; NULL does nothing. */
void http_stop(struct http *http);

#endif
