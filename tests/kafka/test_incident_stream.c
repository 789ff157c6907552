/*
 * kafka tier: the incident stream as on-call sees it, on a real broker and Redis.
 *
 * 1. A scripted crisis on one partition: the events (opened sev4, escalated sev3, escalated
 *    sev2, resolved, postmortem) happen at the mentions a straightforward reference count
 *    says they must, and the post-mortem numbers (duration, time to detect, peak, mentions,
 *    reach) match the stream.
 * 2. The same crisis spread over four partitions and consumed by two engine instances in
 *    one group: exactly one incident.
 * 3. Every event of 1 and 2, and of the example rule pack over a generated stream with
 *    injected crises, validates against docs/incident.schema.json.
 */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "gen.h"
#include "testlib.h"

#define T0 ((int64_t)1795600800000LL) /* 2026-11-25T10:00:00Z */
#define MINUTE 60000LL
#define NMIN 70                       /* minutes of stream */
#define PER_MIN 12                    /* one mention every 5 s */
#define NMSG (NMIN * PER_MIN)

static FILE *all_events; /* every event seen, for the schema check */
static char all_events_path[256];

static int neg_per_min(int minute) {
  if (minute >= 5 && minute < 10) return 3;
  if (minute >= 10 && minute < 15) return 8;
  if (minute >= 15 && minute < 20) return 12;
  if (minute >= 20 && minute < 25) return 6;
  return 0;
}

static int is_negative(int i) { return (i % PER_MIN) < neg_per_min(i / PER_MIN); }
static int64_t ts_of(int i) { return T0 + (int64_t)i * (MINUTE / PER_MIN); }
static int64_t followers_of(int i) { return 100 + (i * 7919) % 5000; }

/* Produces the scripted stream; partition -1 spreads it round-robin over 4 partitions. */
static void produce_stream(const char *topic, int single) {
  fpt_msg_t *msgs = calloc(NMSG, sizeof(*msgs));
  char (*bufs)[320] = calloc(NMSG, sizeof(*bufs));
  for (int i = 0; i < NMSG; i++) {
    snprintf(bufs[i], sizeof(bufs[i]),
             "{\"id\":\"s-%d\",\"brand\":\"acme\",\"author\":{\"id\":\"u%d\",\"followers\":%" PRId64 "},"
             "\"text\":\"%s\",\"created_at\":%" PRId64 ",\"sentiment\":%s,\"url\":\"https://x.example/s-%d\"}",
             i, i % 50, followers_of(i), is_negative(i) ? "acme broke my phone" : "acme is fine",
             ts_of(i), is_negative(i) ? "-0.8" : "0.3", i);
    msgs[i].partition = single ? 0 : i % 4;
    msgs[i].key = "acme";
    msgs[i].value = bufs[i];
    msgs[i].len = strlen(bufs[i]);
  }
  FPT_CHECK_EQ_INT(fpt_produce(topic, msgs, NMSG), 0);
  free(msgs);
  free(bufs);
}

/* The reference: window counts in stream order, and where each severity is first reached. */
typedef struct {
  int open_at, sev3_at, sev2_at, last_signal_at, first_negative;
  int64_t mentions, reach;
  double peak;
} expect_t;

static void reference(expect_t *x) {
  int counts[NMIN] = {0}, sev_prev = 0;
  memset(x, 0, sizeof(*x));
  x->open_at = x->sev3_at = x->sev2_at = x->first_negative = -1;
  for (int i = 0; i < NMSG; i++) {
    int b = i / PER_MIN, v = 0, sev;
    if (!is_negative(i)) continue;
    if (x->first_negative < 0) x->first_negative = i;
    counts[b]++;
    for (int k = b - 9; k <= b; k++)
      if (k >= 0) v += counts[k];
    sev = v >= 100 ? 3 : v >= 60 ? 2 : v >= 25 ? 1 : 0;
    if (sev && x->open_at < 0) x->open_at = i;
    if (sev >= 2 && x->sev3_at < 0) x->sev3_at = i;
    if (sev >= 3 && x->sev2_at < 0) x->sev2_at = i;
    if (sev && x->open_at >= 0) {
      x->mentions++;
      x->reach += followers_of(i);
      x->last_signal_at = i;
      if (v > x->peak) x->peak = v;
    }
    sev_prev = sev;
  }
  (void)sev_prev;
}

static void fmt_time(int64_t ms, char *buf, size_t n) {
  int64_t d = ms - T0;
  snprintf(buf, n, "2026-11-25T%02d:%02d:%02d.%03dZ", (int)(10 + d / 3600000), (int)(d / 60000 % 60),
           (int)(d / 1000 % 60), (int)(d % 1000));
}

typedef struct {
  char group[128];
  const char *topic;
  int nparts;
} wait_arg_t;

static int caught_up(void *arg) {
  wait_arg_t *w = arg;
  int64_t hw[8], c[8];
  if (fpt_high_watermarks(w->topic, w->nparts, hw) || fpt_committed_offsets(w->group, w->topic, w->nparts, c))
    return 0;
  for (int i = 0; i < w->nparts; i++)
    if (c[i] != hw[i]) return 0;
  return 1;
}

static fpt_proc_t *start_engine(const char *rules, const char *in, const char *out, const char *group,
                                const char *prefix, const char *extra) {
  char bin[512], s_rules[512], s_in[256], s_out[256], s_dlq[256], s_group[256], s_kafka[256],
      s_port[64], s_prefix[128];
  snprintf(bin, sizeof(bin), "%s/flashpoint", FP_BINARY_DIR);
  snprintf(s_rules, sizeof(s_rules), "rules.dir=%s", rules);
  snprintf(s_in, sizeof(s_in), "input.topics=%s", in);
  snprintf(s_out, sizeof(s_out), "output.topic=%s", out);
  snprintf(s_dlq, sizeof(s_dlq), "dlq.topic=%s", out);
  snprintf(s_group, sizeof(s_group), "group.id=%s", group);
  snprintf(s_kafka, sizeof(s_kafka), "kafka.bootstrap.servers=%s", fpt_kafka_bootstrap());
  snprintf(s_port, sizeof(s_port), "redis.port=%d", fpt_redis_port());
  snprintf(s_prefix, sizeof(s_prefix), "redis.prefix=%s", prefix);
  const char *argv[] = {bin, "run", "-s", s_rules, "-s", s_in, "-s", s_out, "-s", s_dlq, "-s", s_group,
                        "-s", s_kafka, "-s", s_port, "-s", s_prefix, "-s", "workers=2", "-s",
                        "commit.interval.ms=200", "-s", "incident.hold=1h", "-s",
                        extra ? extra : "log.level=info", NULL};
  return fpt_proc_spawn(argv, NULL, NULL);
}

/* Reads every event of @p topic, appends them to all_events, returns them as a JSON array. */
static json_t *read_events(const char *topic) {
  fpt_records_t *r = fpt_consume_all(topic, FPT_READ_COMMITTED, 30000);
  json_t *a = json_array();
  FPT_CHECK(r && r->complete, "read all of %s", topic);
  for (size_t i = 0; r && i < r->n; i++) {
    json_error_t jerr;
    json_t *ev = json_loadb(r->recs[i].value, r->recs[i].len, 0, &jerr);
    FPT_CHECK(ev != NULL, "event is JSON");
    if (!ev) continue;
    fprintf(all_events, "%.*s\n", (int)r->recs[i].len, r->recs[i].value);
    json_array_append_new(a, ev);
  }
  fpt_records_free(r);
  return a;
}

static const char *sget(json_t *o, const char *k) { return json_string_value(json_object_get(o, k)); }

static void test_scripted_crisis(void) {
  char *in = fpt_topic_name("inc-in"), *out = fpt_topic_name("inc-out"), prefix[64], rules[512], want[40];
  wait_arg_t w;
  expect_t x;
  fpt_proc_t *p;
  json_t *ev;

  reference(&x);
  FPT_CHECK(x.open_at > 0 && x.sev3_at > x.open_at && x.sev2_at > x.sev3_at, "reference sees a crisis");
  snprintf(prefix, sizeof(prefix), "inc1-%d", (int)getpid());
  snprintf(rules, sizeof(rules), "%s/tests/kafka/rules-incidents", FP_SOURCE_DIR);
  FPT_CHECK_EQ_INT(fpt_topic_create(in, 1, NULL), 0);
  FPT_CHECK_EQ_INT(fpt_topic_create(out, 1, NULL), 0);
  produce_stream(in, 1);
  snprintf(w.group, sizeof(w.group), "g-%s", in);
  w.topic = in;
  w.nparts = 1;
  p = start_engine(rules, in, out, w.group, prefix, NULL);
  FPT_CHECK(fpt_wait_until(caught_up, &w, 120000), "engine caught up");
  FPT_CHECK_EQ_INT(fpt_proc_signal(p, SIGTERM), 0);
  FPT_CHECK_EQ_INT(fpt_proc_wait(p, 15000), 0);
  ev = read_events(out);
  FPT_CHECK_EQ_INT(json_array_size(ev), 5);
  if (json_array_size(ev) == 5) {
    static const char *const status[] = {"opened", "escalated", "escalated", "resolved", "postmortem"};
    static const char *const sev[] = {"sev4", "sev3", "sev2", "sev2", "sev2"};
    int at[3] = {x.open_at, x.sev3_at, x.sev2_at};
    const char *iid = sget(json_array_get(ev, 0), "incident_id");
    for (int i = 0; i < 5; i++) {
      json_t *e = json_array_get(ev, (size_t)i);
      FPT_CHECK_EQ_STR(sget(e, "status"), status[i]);
      FPT_CHECK_EQ_STR(sget(e, "severity"), sev[i]);
      FPT_CHECK_EQ_STR(sget(e, "incident_id"), iid);
      FPT_CHECK_EQ_STR(sget(e, "entity"), "acme");
      if (i < 3) {
        fmt_time(ts_of(at[i]), want, sizeof(want));
        FPT_CHECK_EQ_STR(sget(e, "event_time"), want);
      }
    }
    /* resolution: 10 minutes after the last signal, dated at that moment */
    fmt_time(ts_of(x.last_signal_at) + 10 * MINUTE, want, sizeof(want));
    FPT_CHECK_EQ_STR(sget(json_array_get(ev, 3), "event_time"), want);
    json_t *pm = json_array_get(ev, 4), *sum = json_object_get(pm, "summary");
    FPT_CHECK_EQ_INT(json_integer_value(json_object_get(sum, "duration_ms")),
                     ts_of(x.last_signal_at) + 10 * MINUTE - ts_of(x.open_at));
    FPT_CHECK_EQ_INT(json_integer_value(json_object_get(sum, "time_to_detect_ms")),
                     ts_of(x.open_at) - ts_of(x.first_negative));
    FPT_CHECK_EQ_STR(sget(sum, "peak_severity"), "sev2");
    FPT_CHECK_NEAR(json_number_value(json_object_get(sum, "peak_rate")), x.peak, 1e-9);
    FPT_CHECK_EQ_INT(json_integer_value(json_object_get(sum, "mentions")), x.mentions);
    FPT_CHECK_EQ_INT(json_integer_value(json_object_get(sum, "reach")), x.reach);
    fmt_time(ts_of(x.first_negative), want, sizeof(want));
    FPT_CHECK_EQ_STR(sget(pm, "first_mention_at"), want);
    FPT_CHECK_EQ_INT(json_array_size(json_object_get(pm, "timeline")), 4);
    FPT_CHECK(json_array_size(json_object_get(pm, "samples")) > 0, "samples kept");
    FPT_CHECK_EQ_STR(sget(json_array_get(ev, 0), "respond"), "acknowledge and gather facts");
  }
  json_decref(ev);
  fpt_proc_free(p);
  fpt_topic_delete(in);
  fpt_topic_delete(out);
  free(in), free(out);
}

static void test_two_instances_one_incident(void) {
  char *in = fpt_topic_name("inc2-in"), *out = fpt_topic_name("inc2-out"), prefix[64], rules[512];
  wait_arg_t w;
  fpt_proc_t *a, *b;
  json_t *ev;
  int opened = 0, resolved = 0, post = 0;

  snprintf(prefix, sizeof(prefix), "inc2-%d", (int)getpid());
  snprintf(rules, sizeof(rules), "%s/tests/kafka/rules-incidents", FP_SOURCE_DIR);
  FPT_CHECK_EQ_INT(fpt_topic_create(in, 4, NULL), 0);
  FPT_CHECK_EQ_INT(fpt_topic_create(out, 1, NULL), 0);
  snprintf(w.group, sizeof(w.group), "g-%s", in);
  w.topic = in;
  w.nparts = 4;
  /* both instances join before the input arrives, so both work on it */
  /* small batches: partitions advance in step, as they do under a steady stream */
  a = start_engine(rules, in, out, w.group, prefix, "batch.size=10");
  b = start_engine(rules, in, out, w.group, prefix, "batch.size=10");
  produce_stream(in, 0);
  FPT_CHECK(fpt_wait_until(caught_up, &w, 120000), "both instances caught up");
  fpt_proc_signal(a, SIGTERM);
  fpt_proc_signal(b, SIGTERM);
  FPT_CHECK_EQ_INT(fpt_proc_wait(a, 15000), 0);
  FPT_CHECK_EQ_INT(fpt_proc_wait(b, 15000), 0);
  ev = read_events(out);
  {
    size_t i;
    json_t *e;
    const char *iid = json_array_size(ev) ? sget(json_array_get(ev, 0), "incident_id") : NULL;
    json_array_foreach(ev, i, e) {
      const char *st = sget(e, "status");
      fpt_note("%s %s at %s", st, sget(e, "severity"), sget(e, "event_time"));
      FPT_CHECK(iid && !strcmp(sget(e, "incident_id"), iid), "one incident id");
      opened += !strcmp(st, "opened");
      resolved += !strcmp(st, "resolved");
      post += !strcmp(st, "postmortem");
      FPT_CHECK(strcmp(st, "reopened") && strcmp(st, "deescalated"), "no flapping: %s", st);
    }
  }
  FPT_CHECK_EQ_INT(opened, 1);
  FPT_CHECK_EQ_INT(resolved, 1);
  FPT_CHECK_EQ_INT(post, 1);
  json_decref(ev);
  fpt_proc_free(a);
  fpt_proc_free(b);
  fpt_topic_delete(in);
  fpt_topic_delete(out);
  free(in), free(out);
}

static void test_example_pack_events_validate(void) {
  char *in = fpt_topic_name("inc3-in"), *out = fpt_topic_name("inc3-out"), prefix[64], rules[512],
       cmd[1024], pager_route[300];
  wait_arg_t w;
  fpt_proc_t *p;
  fp_gen_crisis_t crises[3] = {
      {FP_CRISIS_SLOW_BURN, 1, T0 + 60 * MINUTE, 40 * MINUTE, 80},
      {FP_CRISIS_FLASH_VIRAL, 2, T0 + 90 * MINUTE, 20 * MINUTE, 120},
      {FP_CRISIS_BOT_BURST, 3, T0 + 120 * MINUTE, 15 * MINUTE, 60},
  };
  fp_gen_conf_t gc = {7, 6, T0, 180 * MINUTE, 10, 3000, 0.0, 3, crises, "gen"};
  fp_gen_t *g = fp_gen_new(&gc);
  fp_buf_t line = {0};
  const char *key;
  int crisis;
  size_t n = 0, cap = 0;
  fpt_msg_t *msgs = NULL;
  char **vals = NULL, **keys = NULL;
  json_t *ev, *pg;

  snprintf(prefix, sizeof(prefix), "inc3-%d", (int)getpid());
  snprintf(rules, sizeof(rules), "%s/rules", FP_SOURCE_DIR);
  FPT_CHECK_EQ_INT(fpt_topic_create(in, 4, NULL), 0);
  FPT_CHECK_EQ_INT(fpt_topic_create(out, 1, NULL), 0);
  /* the example pack routes to fixed topics: incidents, and incidents.pager for sev1/sev2 */
  if (fpt_topic_partitions("incidents") < 0) FPT_CHECK_EQ_INT(fpt_topic_create("incidents", 1, NULL), 0);
  if (fpt_topic_partitions("incidents.pager") < 0) FPT_CHECK_EQ_INT(fpt_topic_create("incidents.pager", 1, NULL), 0);
  while (g && fp_gen_next(g, &line, &key, &crisis)) {
    if (n == cap) {
      cap = cap ? cap * 2 : 4096;
      msgs = realloc(msgs, cap * sizeof(*msgs));
      vals = realloc(vals, cap * sizeof(*vals));
      keys = realloc(keys, cap * sizeof(*keys));
    }
    vals[n] = strdup(line.data);
    keys[n] = strdup(key);
    memset(&msgs[n], 0, sizeof(msgs[n]));
    msgs[n].partition = -1;
    msgs[n].key = keys[n];
    msgs[n].value = vals[n];
    msgs[n].len = strlen(vals[n]);
    n++;
  }
  fpt_note("generated %zu mentions", n);
  FPT_CHECK_EQ_INT(fpt_produce(in, msgs, n), 0);
  snprintf(w.group, sizeof(w.group), "g-%s", in);
  w.topic = in;
  w.nparts = 4;
  (void)pager_route;
  p = start_engine(rules, in, out, w.group, prefix, NULL);
  FPT_CHECK(fpt_wait_until(caught_up, &w, 180000), "engine caught up on the generated stream");
  fpt_proc_signal(p, SIGTERM);
  FPT_CHECK_EQ_INT(fpt_proc_wait(p, 15000), 0);
  ev = read_events("incidents");
  pg = read_events("incidents.pager");
  FPT_CHECK(json_array_size(ev) + json_array_size(pg) > 0, "the example pack raised incidents (%zu)",
            json_array_size(ev) + json_array_size(pg));
  fpt_note("example pack: %zu events on the incident topic, %zu on the pager topic",
           json_array_size(ev), json_array_size(pg));
  json_decref(ev);
  json_decref(pg);
  fflush(all_events);
  snprintf(cmd, sizeof(cmd), "/usr/bin/python3 %s/tests/harness/validate_incidents.py %s/docs/incident.schema.json %s",
           FP_SOURCE_DIR, FP_SOURCE_DIR, all_events_path);
  FPT_CHECK_EQ_INT(system(cmd), 0);
  for (size_t i = 0; i < n; i++) free(vals[i]), free(keys[i]);
  free(vals), free(keys), free(msgs);
  fp_buf_free(&line);
  fp_gen_destroy(g);
  fpt_proc_free(p);
  fpt_topic_delete(in);
  fpt_topic_delete(out);
  free(in), free(out);
}

int main(void) {
  snprintf(all_events_path, sizeof(all_events_path), "%s/incident-events-%d.jsonl", FP_BINARY_DIR, (int)getpid());
  all_events = fopen(all_events_path, "w");
  fpt_run("a scripted crisis: events where the reference says, post-mortem numbers", test_scripted_crisis);
  fpt_run("two instances in one group: one incident", test_two_instances_one_incident);
  fpt_run("every event validates against the published schema", test_example_pack_events_validate);
  fclose(all_events);
  unlink(all_events_path);
  return fpt_done();
}
