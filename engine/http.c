/*
 * http.c - owns the operations endpoint: a libmicrohttpd daemon with one internal thread,
 * three read-only routes, and the composition of /metrics.
 *
 *   GET /metrics   Prometheus text format 0.0.4: the engine counters (e->stats), the metric
 *                  registry (per-rule series, incidents, store latency and errors, consumer
 *                  lag), and gauges read at scrape time (producer queue, brokers up, worker
 *                  queues, assigned partitions, readiness).
 *   GET /healthz   200 while the run loop turns, 503 once it has stalled (health.c).
 *   GET /readyz    200 when every readiness check passes, else 503 naming the failed checks.
 *
 * Handlers only read atomics and take short mutexes (parts, worker queues, the registry, the
 * probe's result); they never touch a worker's Lua state or hiredis context and never wait
 * on Kafka or Redis, so a scrape cannot slow the pipeline and a stuck pipeline cannot hang a
 * scrape. Nothing configured as secret (redis.password, kafka.*password*) is ever rendered:
 * only counters, rule ids, topic names and the Redis host and port appear. Requests are not
 * logged above debug.
 *
 * Invariant: the engine outlives the server; fp_engine_destroy() calls fp_http_stop() before
 * it frees anything a handler reads.
 */
#include "http.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"
#include "health.h"
#include "log.h"

#ifdef FP_HAVE_MHD
#include <microhttpd.h>
#include <netdb.h>
#include <sys/socket.h>
#endif

struct fp_http_s {
  fp_engine_t *e;      /* borrowed */
  fp_probe_t *probe;   /* owned */
  int port;
#ifdef FP_HAVE_MHD
  struct MHD_Daemon *d; /* owned */
#endif
};

/* ------------------------------------------------------------------------------------------ */
/* /metrics                                                                                     */

static void counter(fp_buf_t *out, const char *name, const char *help, uint64_t v) {
  fp_buf_printf(out, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", name, help, name, name,
                (unsigned long long)v);
}

static void gauge_head(fp_buf_t *out, const char *name, const char *help) {
  fp_buf_printf(out, "# HELP %s %s\n# TYPE %s gauge\n", name, help, name);
}

fp_err_t fp_http_render_metrics(fp_engine_t *e, fp_http_t *h, fp_buf_t *out) {
  fp_stats_t s;
  size_t assigned = 0;
  int64_t hb;

  fp_engine_stats(e, &s);
  gauge_head(out, "flashpoint_build_info", "Version of this build (value is always 1).");
  fp_buf_printf(out, "flashpoint_build_info{version=\"%s\",incident_schema=\"%d\"} 1\n",
                FP_VERSION_STR, FP_INCIDENT_SCHEMA_VERSION);
  counter(out, "flashpoint_mentions_total", "Input messages processed (their outputs acknowledged).",
          s.mentions_in);
  counter(out, "flashpoint_mentions_decoded_total", "Input messages that decoded into a valid mention.",
          s.mentions_decoded);
  counter(out, "flashpoint_dead_letters_total",
          "Records acknowledged on the dead-letter topic (bad input and late mentions).",
          s.dead_lettered);
  counter(out, "flashpoint_mentions_late_total",
          "Mentions later than the allowed lateness (dead-lettered, not windowed).", s.late);
  counter(out, "flashpoint_duplicates_fenced_total",
          "Replayed mentions whose window update the store had already applied.", s.duplicates_fenced);
  counter(out, "flashpoint_consumer_redelivered_total",
          "Messages the Kafka consumer delivered a second time within one assignment (dropped).",
          s.redelivered);
  counter(out, "flashpoint_incidents_total", "Incident events acknowledged by Kafka (all statuses).",
          s.incidents);
  counter(out, "flashpoint_offsets_stored_total", "Input offsets handed to the consumer for commit.",
          s.offsets_stored);
  counter(out, "flashpoint_redis_roundtrips_total", "Round trips to the state store.",
          s.redis_roundtrips);
  counter(out, "flashpoint_redis_errors_total", "Failed state-store round trips (each retried).",
          s.redis_errors);
  counter(out, "flashpoint_output_failures_total",
          "Incident events and dead letters Kafka did not acknowledge (the run was emitted again).",
          s.outputs_failed);

  if (fp_metrics_render(e->metrics, out) != FP_OK) return FP_ERR_NOMEM;

  gauge_head(out, "flashpoint_producer_queue_messages",
             "Messages and requests waiting in the producer (rd_kafka_outq_len).");
  fp_buf_printf(out, "flashpoint_producer_queue_messages %d\n", e->producer ? rd_kafka_outq_len(e->producer) : 0);
  gauge_head(out, "flashpoint_kafka_brokers_up",
             "Brokers in state UP at the client's last statistics (-1: no statistics yet).");
  fp_buf_printf(out, "flashpoint_kafka_brokers_up{client=\"consumer\"} %d\n"
                     "flashpoint_kafka_brokers_up{client=\"producer\"} %d\n",
                atomic_load(&e->kafka_brokers_up[0]), atomic_load(&e->kafka_brokers_up[1]));
  gauge_head(out, "flashpoint_kafka_all_brokers_down",
             "1 while every broker of the client is down (librdkafka ALL_BROKERS_DOWN).");
  fp_buf_printf(out, "flashpoint_kafka_all_brokers_down{client=\"consumer\"} %d\n"
                     "flashpoint_kafka_all_brokers_down{client=\"producer\"} %d\n",
                atomic_load(&e->kafka_down[0]), atomic_load(&e->kafka_down[1]));
  pthread_mutex_lock(&e->parts_mu);
  for (fp_part_t *p = e->parts; p; p = p->next) assigned += !atomic_load(&p->revoked);
  pthread_mutex_unlock(&e->parts_mu);
  gauge_head(out, "flashpoint_assigned_partitions", "Input partitions assigned to this instance.");
  fp_buf_printf(out, "flashpoint_assigned_partitions %zu\n", assigned);
  gauge_head(out, "flashpoint_worker_queue_messages", "Messages queued for each worker.");
  for (size_t i = 0; i < e->nworkers; i++)
    fp_buf_printf(out, "flashpoint_worker_queue_messages{worker=\"%zu\"} %zu\n", i,
                  fp_worker_qlen(&e->workers[i]));
  gauge_head(out, "flashpoint_worker_blocked",
             "1 while the worker retries a failing state store or output (its partitions paused).");
  for (size_t i = 0; i < e->nworkers; i++)
    fp_buf_printf(out, "flashpoint_worker_blocked{worker=\"%zu\"} %d\n", i,
                  atomic_load(&e->workers[i].blocked) ? 1 : 0);
  if (h && h->probe) {
    gauge_head(out, "flashpoint_redis_up", "1 if the state store answered the last health PING.");
    fp_buf_printf(out, "flashpoint_redis_up %d\n", fp_probe_state(h->probe, NULL, 0) == 1);
  }
  hb = atomic_load(&e->heartbeat_ns);
  gauge_head(out, "flashpoint_run_loop_age_seconds", "Time since the run loop last turned.");
  fp_buf_printf(out, "flashpoint_run_loop_age_seconds %.3f\n", hb ? (double)(fp_mono_ns() - hb) / 1e9 : 0.0);
  gauge_head(out, "flashpoint_ready", "1 when /readyz answers 200.");
  fp_buf_printf(out, "flashpoint_ready %d\n", fp_health_ready(e, h ? h->probe : NULL, NULL) == 200);
  return out->data ? FP_OK : FP_ERR_NOMEM;
}

/* ------------------------------------------------------------------------------------------ */
/* server                                                                                       */

int fp_http_port(const fp_http_t *h) { return h ? h->port : -1; }

#ifdef FP_HAVE_MHD

static void mhd_log(void *cls, const char *fmt, va_list ap) {
  char msg[512];
  size_t n;
  (void)cls;
  vsnprintf(msg, sizeof(msg), fmt, ap);
  n = strlen(msg);
  while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = '\0';
  fp_log(FP_LOG_WARN, "http", "%s", msg);
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *type, fp_buf_t *body) {
  struct MHD_Response *r;
  enum MHD_Result ret;
  if (body->data) {
    r = MHD_create_response_from_buffer(body->len, body->data, MHD_RESPMEM_MUST_FREE);
    if (r) body->data = NULL; /* MHD took it over */
  } else {
    r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
  }
  fp_buf_free(body);
  if (!r) return MHD_NO;
  MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
  MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
  ret = MHD_queue_response(c, status, r);
  MHD_destroy_response(r);
  return ret;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
                              const char *method, const char *version, const char *upload,
                              size_t *upload_size, void **req) {
  fp_http_t *h = cls;
  fp_buf_t body = {0};
  (void)version, (void)upload, (void)req;

  if (*upload_size) { /* we take no request bodies: drop them */
    *upload_size = 0;
    return MHD_YES;
  }
  fp_log(FP_LOG_DEBUG, "http", "%s %s", method, url);
  if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
    fp_buf_printf(&body, "only GET and HEAD\n");
    return reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain; charset=utf-8", &body);
  }
  if (!strcmp(url, "/metrics")) {
    if (fp_http_render_metrics(h->e, h, &body) != FP_OK) {
      fp_buf_free(&body);
      fp_buf_printf(&body, "out of memory\n");
      return reply(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "text/plain; charset=utf-8", &body);
    }
    return reply(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", &body);
  }
  if (!strcmp(url, "/healthz")) {
    int status = fp_health_live(h->e, &body);
    return reply(c, (unsigned)status, "application/json", &body);
  }
  if (!strcmp(url, "/readyz")) {
    int status = fp_health_ready(h->e, h->probe, &body);
    return reply(c, (unsigned)status, "application/json", &body);
  }
  fp_buf_printf(&body, "not found; try /metrics, /healthz or /readyz\n");
  return reply(c, MHD_HTTP_NOT_FOUND, "text/plain; charset=utf-8", &body);
}

fp_http_t *fp_http_start(fp_engine_t *e, char *errstr, size_t es) {
  fp_http_t *h = calloc(1, sizeof(*h));
  struct addrinfo hints, *ai = NULL;
  char port[16];
  const union MHD_DaemonInfo *info;
  unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG;
  int rc;

  if (!h) {
    fp_seterr(errstr, es, FP_ERR_NOMEM, "out of memory");
    return NULL;
  }
  h->e = e;
  memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  snprintf(port, sizeof(port), "%d", (int)e->conf->http_port);
  if ((rc = getaddrinfo(e->conf->http_addr, port, &hints, &ai)) != 0 || !ai) {
    fp_seterr(errstr, es, FP_ERR_CONFIG, "http.addr \"%s\": %s", e->conf->http_addr, gai_strerror(rc));
    goto err;
  }
  if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
  if (!(h->probe = fp_probe_start(e, errstr, es))) goto err;
  h->d = MHD_start_daemon(flags, 0, NULL, NULL, handle, h,
                          MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, /* first: all its lines */
                          MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                          MHD_OPTION_CONNECTION_LIMIT, (unsigned)32,
                          MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10,
                          MHD_OPTION_END);
  if (!h->d) {
    fp_seterr(errstr, es, FP_ERR_IO, "http: cannot listen on %s:%s (address in use or not local?)",
              e->conf->http_addr, port);
    goto err;
  }
  info = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
  h->port = info ? (int)info->port : (int)e->conf->http_port;
  freeaddrinfo(ai);
  fp_log(FP_LOG_INFO, "http", "listening on %s%s%s:%d (/metrics, /healthz, /readyz)",
         strchr(e->conf->http_addr, ':') ? "[" : "", e->conf->http_addr,
         strchr(e->conf->http_addr, ':') ? "]" : "", h->port);
  return h;
err:
  if (ai) freeaddrinfo(ai);
  fp_http_stop(h);
  return NULL;
}

void fp_http_stop(fp_http_t *h) {
  if (!h) return;
  if (h->d) MHD_stop_daemon(h->d);
  fp_probe_stop(h->probe);
  free(h);
}

#else /* !FP_HAVE_MHD */

fp_http_t *fp_http_start(fp_engine_t *e, char *errstr, size_t es) {
  (void)e;
  fp_seterr(errstr, es, FP_ERR_CONFIG,
            "http.port is set but this build has no libmicrohttpd (install libmicrohttpd-dev "
            "and rebuild, or set http.port=-1)");
  return NULL;
}

void fp_http_stop(fp_http_t *h) {
  if (!h) return;
  fp_probe_stop(h->probe);
  free(h);
}

#endif
