/*
 * http.h - the operations endpoint: GET /metrics (Prometheus text), /healthz and /readyz
 * (JSON), served by libmicrohttpd from a thread of its own while the engine runs.
 */
#ifndef FP_HTTP_H
#define FP_HTTP_H

#include "util.h"

struct fp_engine_s;
typedef struct fp_http_s fp_http_t;

/**
 * Binds http.addr:http.port (0: any free port), starts the server thread and the state-store
 * health probe, and logs "listening on ADDR:PORT" at info.
 * @param e borrowed; must outlive the server (fp_engine_destroy stops it first).
 * @returns the server (owned by the caller: fp_http_stop()), or NULL with the reason in
 * @p errstr (port in use, bad address, built without libmicrohttpd).
 */
fp_http_t *fp_http_start(struct fp_engine_s *e, char *errstr, size_t errstr_size);

/** Stops the server (waits for requests in progress) and the probe, frees @p h; accepts NULL. */
void fp_http_stop(fp_http_t *h);

/** @returns the bound port. */
int fp_http_port(const fp_http_t *h);

/** Renders the /metrics body: engine counters, the metric registry, Kafka and worker gauges.
 * @p h may be NULL (no probe: no flashpoint_redis_up). Thread-safe. */
fp_err_t fp_http_render_metrics(struct fp_engine_s *e, fp_http_t *h, fp_buf_t *out);

#endif
