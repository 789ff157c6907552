/*
 * kafka tier: the operations endpoint of a real `flashpoint run`, on a real broker and Redis.
 *
 * The engine runs with http.port=0 (any free port; the test reads the port from the
 * "listening on" log line) and log.json=true. A known stream goes in: 2,000 mentions over 2
 * partitions of which the 250 of brand-3 say ALARM (the fixture rule rules-e2e/alarm.lua
 * opens a sev3 incident at the 50th and escalates to sev2 at the 200th), 10 malformed
 * messages and one mention an hour late. The test then scrapes /metrics and checks every
 * counter against what was produced and against what is on the output and dead-letter
 * topics, the consumer lag per partition, /healthz and /readyz; that the log is JSON lines
 * only (librdkafka's lines included), not one line per mention, and that a configured secret
 * shows up neither in the log nor in /metrics. Then it kills Redis while mentions flow,
 * waits for /readyz to turn 503 naming the store and the blocked worker (while /healthz stays
 * 200), restarts Redis, waits for 200, and checks the counters are exact after the recovery.
 */
#include <arpa/inet.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <jansson.h>

#include "testlib.h"

#define NPARTS 2
#define NMENTIONS 2000
#define NBAD 10
#define NALARM (NMENTIONS / 8) /* brand-3 */
#define NMORE 300              /* produced while Redis is down */
#define T0 ((int64_t)1795600800000LL)
#define STEP_MS 100
#define SECRET "fpt-secret-d0n7-l0g-m3"

static char *in_topic, *out_topic, *dlq_topic, *group;
static fpt_proc_t *proc;
static int port = -1;

/* ---- a minimal HTTP/1.0 client ---------------------------------------------------------- */

/* GETs @p path; @returns the status (and the body in *body, caller frees), or -1. */
static int http_get(const char *path, char **body) {
  struct sockaddr_in sa;
  struct timeval tv = {10, 0};
  char req[256], *buf = NULL, *sep;
  size_t len = 0, cap = 0;
  int fd, status = -1;

  if (body) *body = NULL;
  if (port <= 0 || (fd = socket(AF_INET, SOCK_STREAM, 0)) < 0) return -1;
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  memset(&sa, 0, sizeof(sa));
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) goto out;
  snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", path);
  if (write(fd, req, strlen(req)) != (ssize_t)strlen(req)) goto out;
  for (;;) {
    ssize_t n;
    if (len + 4096 + 1 > cap) {
      char *nb = realloc(buf, cap = cap ? cap * 2 : 16384);
      if (!nb) goto out;
      buf = nb;
    }
    n = read(fd, buf + len, cap - len - 1);
    if (n <= 0) break;
    len += (size_t)n;
  }
  if (!buf) goto out;
  buf[len] = '\0';
  if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1) status = -1;
  if (body && (sep = strstr(buf, "\r\n\r\n"))) *body = strdup(sep + 4);
out:
  free(buf);
  close(fd);
  return status;
}

/* @returns the value of the sample whose name and labels are exactly @p series, or NAN. */
static double metric(const char *text, const char *series) {
  size_t n = strlen(series);
  for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
    if (!strncmp(l, series, n) && l[n] == ' ') return strtod(l + n + 1, NULL);
  return NAN;
}

static char *scrape(void) {
  char *body = NULL;
  int st = http_get("/metrics", &body);
  if (st != 200) {
    free(body);
    return NULL;
  }
  return body;
}

/* ---- waiting ---------------------------------------------------------------------------- */

static int port_logged(void *arg) {
  char *log = fpt_proc_output(proc, NULL), *at;
  (void)arg;
  if (log && (at = strstr(log, "listening on 127.0.0.1:"))) port = (int)strtol(at + 23, NULL, 10);
  free(log);
  return port > 0;
}

typedef struct {
  int64_t hw[NPARTS];
  double mentions; /* the mentions counter must reach this too */
} caught_up_t;

static int caught_up(void *arg) {
  caught_up_t *d = arg;
  int64_t c[NPARTS];
  char *m;
  int ok;
  if (fpt_committed_offsets(group, in_topic, NPARTS, c) != 0) return 0;
  for (int p = 0; p < NPARTS; p++)
    if (c[p] != d->hw[p]) return 0;
  if (!(m = scrape())) return 0;
  ok = metric(m, "flashpoint_mentions_total") >= d->mentions;
  free(m);
  return ok;
}

static int lag_zero(void *arg) {
  char series[2][300], *m = scrape();
  int ok;
  (void)arg;
  if (!m) return 0;
  for (int p = 0; p < NPARTS; p++)
    snprintf(series[p], sizeof(series[p]), "flashpoint_consumer_lag_messages{topic=\"%s\",partition=\"%d\"}",
             in_topic, p);
  ok = metric(m, series[0]) == 0 && metric(m, series[1]) == 0;
  free(m);
  return ok;
}

/* Waits for /readyz == want; with want 503 also for the failed checks to name "store" and
 * "workers" (the probe and a worker blocked on the store both see the outage). */
typedef struct {
  int want;
  char *body;
} ready_arg_t;

static int failed_has(const char *body, const char *check) {
  json_t *j = body ? json_loads(body, 0, NULL) : NULL, *v;
  size_t i;
  int found = 0;
  json_array_foreach(json_object_get(j, "failed"), i, v) found |= !strcmp(json_string_value(v), check);
  json_decref(j);
  return found;
}

static int ready_is(void *arg) {
  ready_arg_t *r = arg;
  char *body = NULL;
  int st = http_get("/readyz", &body);
  if (st != r->want || (r->want == 503 && (!failed_has(body, "store") || !failed_has(body, "workers")))) {
    free(body);
    return 0;
  }
  free(r->body);
  r->body = body;
  return 1;
}

static int trouble; /* a wait timed out: show the engine's log at the end */
static int waited(int ok) {
  trouble |= !ok;
  return ok;
}

/* ---- input ------------------------------------------------------------------------------ */

/* Produces mentions first..first+n-1 (brand i % 8, on partition brand % 2), nbad malformed
 * among them, and with late one late mention. @returns the number of ALARM mentions. */
static int produce(int first, int n, int nbad, int late, int alarm_brand, int max_alarms) {
  fpt_msg_t *msgs = calloc((size_t)(n + nbad + 1), sizeof(*msgs));
  char **bufs = calloc((size_t)(n + nbad + 1), sizeof(*bufs));
  char keys[8][16];
  size_t k = 0;
  int alarms = 0, bad = 0;

  for (int b = 0; b < 8; b++) snprintf(keys[b], sizeof(keys[b]), "brand-%d", b);
  for (int i = first; i < first + n; i++) {
    int b = i % 8, alarm = b == alarm_brand && alarms < max_alarms;
    alarms += alarm;
    bufs[k] = malloc(512);
    snprintf(bufs[k], 512,
             "{\"id\":\"met-%d\",\"platform\":\"x\",\"brand\":\"%s\",\"author\":{\"id\":\"u%d\","
             "\"followers\":%d},\"text\":\"%s %d\",\"lang\":\"en\",\"created_at\":%" PRId64 "}",
             i, keys[b], i % 97, (i * 37) % 10000, alarm ? "ALARM: store on fire" : "ordinary", i,
             T0 + (int64_t)i * STEP_MS);
    msgs[k].partition = b % NPARTS;
    msgs[k].key = keys[b];
    msgs[k].value = bufs[k];
    msgs[k].len = strlen(bufs[k]);
    k++;
    if (nbad && (i - first) % (n / nbad) == n / nbad / 2) { /* malformed among the good */
      bufs[k] = malloc(160);
      if (bad++ % 3 == 2) /* 3 without an id, 7 not JSON */ snprintf(bufs[k], 160, "{\"brand\":\"b\",\"author\":{\"id\":\"u\"},\"text\":\"no id\",\"created_at\":%" PRId64 "}", T0);
      else snprintf(bufs[k], 160, "{\"id\": \"broken-%d\", \"text\": ", i);
      msgs[k].partition = 0;
      msgs[k].value = bufs[k];
      msgs[k].len = strlen(bufs[k]);
      k++;
    }
  }
  if (late) { /* an hour behind partition 0's watermark: counted late and dead-lettered */
    bufs[k] = malloc(256);
    snprintf(bufs[k], 256, "{\"id\":\"met-late\",\"brand\":\"brand-0\",\"author\":{\"id\":\"u\"},"
             "\"text\":\"old news\",\"created_at\":%" PRId64 "}", T0 - 3600000);
    msgs[k].partition = 0;
    msgs[k].key = keys[0];
    msgs[k].value = bufs[k];
    msgs[k].len = strlen(bufs[k]);
    k++;
  }
  FPT_CHECK_EQ_INT(k, (size_t)(n + nbad + late));
  FPT_CHECK_EQ_INT(fpt_produce(in_topic, msgs, k), 0);
  for (size_t i = 0; i < k; i++) free(bufs[i]);
  free(bufs), free(msgs);
  return alarms;
}

/* ---- checks ----------------------------------------------------------------------------- */

static void check_log(void) {
  char *log = fpt_proc_output(proc, NULL);
  int lines = 0, json_ok = 0, loud = 0, kafka = 0;
  if (!FPT_CHECK(log != NULL, "engine log readable")) return;
  FPT_CHECK(strstr(log, SECRET) == NULL, "the configured secret never appears in the log");
  for (char *l = log, *nl; l && *l; l = nl ? nl + 1 : NULL) {
    json_t *j;
    nl = strchr(l, '\n');
    if (nl) *nl = '\0';
    if (!*l) continue;
    lines++;
    if ((j = json_loads(l, 0, NULL)) && json_is_string(json_object_get(j, "ts")) &&
        json_is_string(json_object_get(j, "level")) && json_is_string(json_object_get(j, "facility")) &&
        json_is_string(json_object_get(j, "msg"))) {
      const char *lv = json_string_value(json_object_get(j, "level"));
      json_ok++;
      if (strcmp(lv, "debug") != 0) loud++;
      if (!strcmp(json_string_value(json_object_get(j, "facility")), "kafka")) kafka++;
    } else {
      fpt_note("not a JSON log line: %.200s", l);
    }
    json_decref(j);
  }
  FPT_CHECK(lines > 0 && json_ok == lines, "every log line is a JSON object with ts, level, facility, "
            "msg (%d of %d)", json_ok, lines);
  /* 2,011 messages in, 11 of them bad: per-mention logging would show hundreds of lines */
  FPT_CHECK(loud < (NMENTIONS + NBAD + 1) / 10, "info and above is not per mention (%d lines)", loud);
  FPT_CHECK(kafka > 0, "librdkafka's log lines go through fp_log (facility kafka)");
  fpt_note("log: %d lines, %d from librdkafka", lines, kafka);
  free(log);
}

static void check_topics(double incidents, double dead) {
  fpt_records_t *r = fpt_consume_all(out_topic, FPT_READ_COMMITTED, 30000);
  FPT_CHECK(r && r->complete, "read the output topic");
  if (r) FPT_CHECK_EQ_INT(r->n, (long long)incidents);
  fpt_records_free(r);
  r = fpt_consume_all(dlq_topic, FPT_READ_COMMITTED, 30000);
  FPT_CHECK(r && r->complete, "read the dead-letter topic");
  if (r) {
    int late = 0;
    FPT_CHECK_EQ_INT(r->n, (long long)dead);
    for (size_t i = 0; i < r->n; i++) {
      const char *code = fpt_record_header(&r->recs[i], "x-err-code", NULL);
      late += code && !strcmp(code, "late");
    }
    FPT_CHECK_EQ_INT(late, 1);
  }
  fpt_records_free(r);
}

static void check_counters(const char *m, int more) {
  FPT_CHECK_EQ_INT(metric(m, "flashpoint_mentions_total"), NMENTIONS + NBAD + 1 + more);
  FPT_CHECK_EQ_INT(metric(m, "flashpoint_mentions_decoded_total"), NMENTIONS + 1 + more);
  FPT_CHECK_EQ_INT(metric(m, "flashpoint_dead_letters_total"), NBAD + 1);
  FPT_CHECK_EQ_INT(metric(m, "flashpoint_mentions_late_total"), 1);
  FPT_CHECK_EQ_INT(metric(m, "flashpoint_incidents_total"), 2);
  FPT_CHECK_EQ_INT(metric(m, "flashpoint_incident_events_total{status=\"opened\",severity=\"sev3\"}"), 1);
  FPT_CHECK_EQ_INT(metric(m, "flashpoint_incident_events_total{status=\"escalated\",severity=\"sev2\"}"), 1);
  FPT_CHECK_EQ_INT(metric(m, "flashpoint_rule_errors_total{rule=\"test.alarm\"}"), 0);
  FPT_CHECK_EQ_INT(metric(m, "flashpoint_rule_quarantines_total{rule=\"test.alarm\"}"), 0);
  FPT_CHECK_EQ_INT(metric(m, "flashpoint_rule_quarantined{rule=\"test.alarm\"}"), 0);
}

static void test_metrics(void) {
  char bin[512], rules[512], set_in[256], set_out[256], set_dlq[256], set_group[256],
      set_kafka[256], set_port[64], set_prefix[96], *m, *body = NULL;
  caught_up_t d;
  ready_arg_t ra = {0, NULL};
  int redis_killed = 0, more_alarms = 0;

  in_topic = fpt_topic_name("met-in");
  out_topic = fpt_topic_name("met-out");
  dlq_topic = fpt_topic_name("met-dlq");
  group = fpt_topic_name("met-group");
  FPT_CHECK_EQ_INT(fpt_topic_create(in_topic, NPARTS, NULL), 0);
  FPT_CHECK_EQ_INT(fpt_topic_create(out_topic, 1, NULL), 0);
  FPT_CHECK_EQ_INT(fpt_topic_create(dlq_topic, 1, NULL), 0);
  FPT_CHECK_EQ_INT(produce(0, NMENTIONS, NBAD, 1, 3, NALARM), NALARM);
  FPT_CHECK_EQ_INT(fpt_high_watermarks(in_topic, NPARTS, d.hw), 0);
  d.mentions = NMENTIONS + NBAD + 1;

  snprintf(bin, sizeof(bin), "%s/flashpoint", FP_BINARY_DIR);
  snprintf(rules, sizeof(rules), "rules.dir=%s/tests/kafka/rules-e2e", FP_SOURCE_DIR);
  snprintf(set_in, sizeof(set_in), "input.topics=%s", in_topic);
  snprintf(set_out, sizeof(set_out), "output.topic=%s", out_topic);
  snprintf(set_dlq, sizeof(set_dlq), "dlq.topic=%s", dlq_topic);
  snprintf(set_group, sizeof(set_group), "group.id=%s", group);
  snprintf(set_kafka, sizeof(set_kafka), "kafka.bootstrap.servers=%s", fpt_kafka_bootstrap());
  snprintf(set_port, sizeof(set_port), "redis.port=%d", fpt_redis_port());
  snprintf(set_prefix, sizeof(set_prefix), "redis.prefix=met%d", (int)getpid());
  const char *argv[] = {bin, "run", "-s", rules, "-s", set_in, "-s", set_out, "-s", set_dlq,
                        "-s", set_group, "-s", set_kafka, "-s", set_port, "-s", set_prefix,
                        "-s", "workers=2", "-s", "commit.interval.ms=200",
                        "-s", "http.port=0", "-s", "log.json=true",
                        "-s", "kafka.statistics.interval.ms=1000",
                        "-s", "kafka.sasl.password=" SECRET,
                        /* a producer property for both clients: the consumer's librdkafka
                         * warns (CONFWARN), which must reach the log as a JSON line */
                        "-s", "kafka.linger.ms=7", NULL};
  proc = fpt_proc_spawn(argv, NULL, NULL);
  if (!FPT_CHECK(proc != NULL, "engine started")) return;
  if (!FPT_CHECK(waited(fpt_wait_until(port_logged, NULL, 30000)), "the engine logs its HTTP port")) goto out;
  fpt_note("http port %d", port);

  /* ---- the known stream: exact counters ---- */
  FPT_CHECK(waited(fpt_wait_until(caught_up, &d, 120000)), "offsets committed and counted to the end");
  m = scrape();
  if (FPT_CHECK(m != NULL, "/metrics answers 200")) {
    check_counters(m, 0);
    FPT_CHECK_EQ_INT(metric(m, "flashpoint_rule_evaluations_total{rule=\"test.alarm\"}"), NALARM);
    /* severity from the 50th ALARM on: 250 - 49 */
    FPT_CHECK_EQ_INT(metric(m, "flashpoint_rule_fires_total{rule=\"test.alarm\"}"), NALARM - 49);
    FPT_CHECK_EQ_INT(metric(m, "flashpoint_rule_eval_seconds_count{rule=\"test.alarm\"}"), NALARM);
    FPT_CHECK_EQ_INT(metric(m, "flashpoint_offsets_stored_total"), NMENTIONS + NBAD + 1);
    FPT_CHECK_EQ_INT(metric(m, "flashpoint_store_errors_total"), 0);
    FPT_CHECK(metric(m, "flashpoint_store_seconds_count") > 0, "store latency observed");
    FPT_CHECK(metric(m, "flashpoint_producer_queue_messages") >= 0, "producer queue gauge present");
    FPT_CHECK_EQ_INT(metric(m, "flashpoint_redis_up"), 1);
    FPT_CHECK_EQ_INT(metric(m, "flashpoint_ready"), 1);
    FPT_CHECK_EQ_INT(metric(m, "flashpoint_assigned_partitions"), NPARTS);
    FPT_CHECK(strstr(m, "# TYPE flashpoint_mentions_total counter") != NULL, "TYPE lines present");
    FPT_CHECK(strstr(m, SECRET) == NULL, "the configured secret never appears in /metrics");
    check_topics(metric(m, "flashpoint_incidents_total"), metric(m, "flashpoint_dead_letters_total"));
  }
  free(m);
  FPT_CHECK(waited(fpt_wait_until(lag_zero, NULL, 30000)), "consumer lag 0 on both partitions");
  FPT_CHECK_EQ_INT(http_get("/healthz", NULL), 200);
  ra.want = 200;
  FPT_CHECK(ready_is(&ra), "/readyz 200 when caught up");
  FPT_CHECK(ra.body && strstr(ra.body, "\"ready\":true"), "readyz body: %s", ra.body ? ra.body : "");
  FPT_CHECK_EQ_INT(http_get("/nope", NULL), 404);
  check_log();

  /* ---- Redis goes away while mentions flow: unready, still alive; back: ready, exact ---- */
  redis_killed = 1;
  if (fpt_services_cmd("kill-redis") != 0) goto out;
  more_alarms = produce(NMENTIONS, NMORE, 0, 0, 5, 40); /* brand-5: below the incident threshold */
  FPT_CHECK_EQ_INT(fpt_high_watermarks(in_topic, NPARTS, d.hw), 0);
  d.mentions = NMENTIONS + NBAD + 1 + NMORE;
  ra.want = 503;
  FPT_CHECK(waited(fpt_wait_until(ready_is, &ra, 60000)), "/readyz turns 503 naming store and workers");
  fpt_note("unready: %s", ra.body ? ra.body : "(none)");
  FPT_CHECK(ra.body && strstr(ra.body, "\"ready\":false"), "readyz body says not ready");
  FPT_CHECK_EQ_INT(http_get("/healthz", &body), 200);
  free(body), body = NULL;
  m = scrape();
  if (FPT_CHECK(m != NULL, "/metrics answers while Redis is down")) {
    FPT_CHECK_EQ_INT(metric(m, "flashpoint_redis_up"), 0);
    FPT_CHECK_EQ_INT(metric(m, "flashpoint_ready"), 0);
    FPT_CHECK(metric(m, "flashpoint_store_errors_total") > 0, "store errors counted");
  }
  free(m);
  redis_killed = 0;
  if (fpt_services_cmd("start-redis") != 0) goto out;
  ra.want = 200;
  FPT_CHECK(waited(fpt_wait_until(ready_is, &ra, 60000)), "/readyz back to 200 after Redis returns");
  FPT_CHECK(waited(fpt_wait_until(caught_up, &d, 120000)), "the mentions of the outage processed");
  m = scrape();
  if (FPT_CHECK(m != NULL, "/metrics answers")) {
    check_counters(m, NMORE);
    FPT_CHECK_EQ_INT(metric(m, "flashpoint_rule_evaluations_total{rule=\"test.alarm\"}"), NALARM + more_alarms);
    FPT_CHECK_EQ_INT(metric(m, "flashpoint_offsets_stored_total"), NMENTIONS + NBAD + 1 + NMORE);
    FPT_CHECK(metric(m, "flashpoint_redis_errors_total") > 0, "failed round trips counted");
    check_topics(metric(m, "flashpoint_incidents_total"), metric(m, "flashpoint_dead_letters_total"));
  }
  free(m);

  FPT_CHECK_EQ_INT(fpt_proc_signal(proc, SIGTERM), 0);
  FPT_CHECK_EQ_INT(fpt_proc_wait(proc, 30000), 0);
out:
  if (redis_killed) fpt_services_cmd("start-redis"); /* leave Redis up for the next test */
  free(ra.body);
  if (trouble) fpt_proc_dump_log(proc, 60);
  fpt_proc_free(proc);
  fpt_topic_delete(in_topic);
  fpt_topic_delete(out_topic);
  fpt_topic_delete(dlq_topic);
  free(in_topic), free(out_topic), free(dlq_topic), free(group);
}

int main(void) {
  fpt_run("metrics, health and readiness of a running engine, through a Redis outage", test_metrics);
  return fpt_done();
}
