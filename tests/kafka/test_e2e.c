/*
 * kafka tier: the walking skeleton end to end, on a real Kafka broker and a real Redis.
 *
 * 10,000 mentions over 4 partitions (keyed by brand), of which exactly 313 match the
 * fixture rule (rules-e2e/alarm.lua) for one brand, plus 31 malformed messages (20 not
 * JSON, 10 without an id, one of 2 MiB). The `flashpoint` binary consumes them; the test
 * then checks the exact incidents on the output topic, the exact dead-letter records, the
 * exact window buckets in Redis, and the committed offsets at the end of every partition,
 * and that SIGTERM stops the engine with exit code 0.
 */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "testlib.h"

#define NMENTIONS 10000
#define NPARTS 4
#define T0 ((int64_t)1795600800000LL) /* 2026-11-25T10:00:00Z */
#define STEP_MS 100

static char *in_topic, *out_topic, *dlq_topic, *group, prefix[64];
static int64_t alarm_times[NMENTIONS];
static int nalarm;

static int is_alarm(int i) { return i % 8 == 3 && (i / 8) % 4 == 0; }

static void produce_input(void) {
  fpt_msg_t *msgs = calloc(NMENTIONS + 31, sizeof(*msgs));
  char **bufs = calloc(NMENTIONS + 31, sizeof(*bufs));
  char **keys = calloc(NMENTIONS + 31, sizeof(*keys));
  size_t n = 0;

  for (int i = 0; i < NMENTIONS; i++) {
    int64_t t = T0 + (int64_t)i * STEP_MS;
    keys[n] = malloc(16);
    snprintf(keys[n], 16, "brand-%d", i % 8);
    bufs[n] = malloc(512);
    snprintf(bufs[n], 512,
             "{\"id\":\"e2e-%d\",\"platform\":\"x\",\"brand\":\"%s\",\"author\":{\"id\":\"u%d\","
             "\"followers\":%d},\"text\":\"%s mention %d\",\"lang\":\"en\",\"created_at\":%" PRId64 "}",
             i, keys[n], i % 97, (i * 37) % 10000, is_alarm(i) ? "ALARM: store on fire" : "ordinary", i, t);
    if (is_alarm(i)) alarm_times[nalarm++] = t;
    msgs[n].partition = RD_KAFKA_PARTITION_UA;
    msgs[n].key = keys[n];
    msgs[n].value = bufs[n];
    msgs[n].len = strlen(bufs[n]);
    n++;
    if (i % 500 == 250) { /* malformed input among the good: 20 not JSON, 10 without id */
      for (int b = 0; b < (i < 5000 ? 2 : 1); b++) {
        keys[n] = strdup("brand-bad");
        bufs[n] = malloc(160);
        if (b == 0) snprintf(bufs[n], 160, "{\"id\": \"broken-%zu\", \"text\": ", n);
        else snprintf(bufs[n], 160, "{\"brand\":\"b\",\"author\":{\"id\":\"u\"},\"text\":\"no id\",\"created_at\":%" PRId64 "}", T0);
        msgs[n].partition = RD_KAFKA_PARTITION_UA;
        msgs[n].key = keys[n];
        msgs[n].value = bufs[n];
        msgs[n].len = strlen(bufs[n]);
        n++;
      }
    }
  }
  {
    size_t big = 2u << 20;
    keys[n] = strdup("brand-big");
    bufs[n] = malloc(big);
    memset(bufs[n], 'x', big);
    bufs[n][0] = '{';
    msgs[n].partition = 0;
    msgs[n].key = keys[n];
    msgs[n].value = bufs[n];
    msgs[n].len = big;
    n++;
  }
  FPT_CHECK_EQ_INT(fpt_produce(in_topic, msgs, n), 0);
  fpt_note("produced %zu messages (%d ALARM mentions)", n, nalarm);
  for (size_t i = 0; i < n; i++) free(bufs[i]), free(keys[i]);
  free(bufs), free(keys), free(msgs);
}

typedef struct {
  int64_t hw[NPARTS];
} done_arg_t;

static int all_committed(void *arg) {
  done_arg_t *d = arg;
  int64_t c[NPARTS];
  if (fpt_committed_offsets(group, in_topic, NPARTS, c) != 0) return 0;
  for (int p = 0; p < NPARTS; p++)
    if (c[p] != d->hw[p]) return 0;
  return 1;
}

static void check_incidents(void) {
  fpt_records_t *r = fpt_consume_all(out_topic, FPT_READ_COMMITTED, 30000);
  FPT_CHECK(r && r->complete, "read the whole output topic");
  if (!r) return;
  FPT_CHECK_EQ_INT(r->n, 2);
  for (size_t i = 0; i < r->n && i < 2; i++) {
    json_error_t jerr;
    json_t *ev = json_loadb(r->recs[i].value, r->recs[i].len, 0, &jerr);
    char when[40];
    int64_t t = alarm_times[i == 0 ? 49 : 199];
    FPT_CHECK(ev != NULL, "incident %zu is JSON", i);
    if (!ev) continue;
    FPT_CHECK_EQ_INT(json_integer_value(json_object_get(ev, "schema_version")), 1);
    FPT_CHECK_EQ_STR(json_string_value(json_object_get(ev, "status")), i == 0 ? "opened" : "escalated");
    FPT_CHECK_EQ_STR(json_string_value(json_object_get(ev, "severity")), i == 0 ? "sev3" : "sev2");
    FPT_CHECK_EQ_STR(json_string_value(json_object_get(ev, "entity")), "brand-3");
    FPT_CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(ev, "rule"), "id")), "test.alarm");
    /* mentions with a signal since the incident opened: the 50th to the 200th */
    FPT_CHECK_EQ_INT(json_integer_value(json_object_get(ev, "mentions")), i == 0 ? 1 : 151);
    FPT_CHECK_NEAR(json_number_value(json_object_get(json_object_get(json_object_get(ev, "signals"), "hits"), "value")),
                   i == 0 ? 50 : 200, 1e-9);
    snprintf(when, sizeof(when), "2026-11-25T10:%02d:%02d.%03dZ", (int)((t - T0) / 60000),
             (int)((t - T0) / 1000 % 60), (int)((t - T0) % 1000));
    FPT_CHECK_EQ_STR(json_string_value(json_object_get(ev, "event_time")), when);
    FPT_CHECK_EQ_STR(json_string_value(json_object_get(ev, "respond")), "page the brand owner");
    /* the message key is the incident id, the event id is "<incident>-<seq>" */
    const char *iid = json_string_value(json_object_get(ev, "incident_id"));
    char want[64];
    FPT_CHECK(r->recs[i].key && iid && strcmp(r->recs[i].key, iid) == 0, "key is the incident id");
    snprintf(want, sizeof(want), "%s-%zu", iid ? iid : "", i);
    FPT_CHECK_EQ_STR(json_string_value(json_object_get(ev, "event_id")), want);
    json_decref(ev);
  }
  fpt_records_free(r);
}

static void check_dead_letters(void) {
  fpt_records_t *r = fpt_consume_all(dlq_topic, FPT_READ_COMMITTED, 30000);
  int decode = 0, schema = 0, large = 0;
  FPT_CHECK(r && r->complete, "read the whole dead-letter topic");
  if (!r) return;
  FPT_CHECK_EQ_INT(r->n, 31);
  for (size_t i = 0; i < r->n; i++) {
    const char *code = fpt_record_header(&r->recs[i], "x-err-code", NULL);
    const char *msg = fpt_record_header(&r->recs[i], "x-err-message", NULL);
    const char *topic = fpt_record_header(&r->recs[i], "x-err-topic", NULL);
    const char *off = fpt_record_header(&r->recs[i], "x-err-offset", NULL);
    FPT_CHECK(code && msg && *msg && off, "dead letter %zu has code, message and offset", i);
    FPT_CHECK(topic && !strcmp(topic, in_topic), "x-err-topic names the input topic");
    if (!code) continue;
    if (!strcmp(code, "decode")) decode++;
    else if (!strcmp(code, "schema")) {
      schema++;
      FPT_CHECK(msg && strstr(msg, "field id"), "schema reason names the field: %s", msg ? msg : "");
    } else if (!strcmp(code, "too_large")) {
      large++;
      FPT_CHECK(fpt_record_header(&r->recs[i], "x-err-original-size", NULL) != NULL, "original size kept");
      FPT_CHECK(r->recs[i].len < (1u << 20), "oversized value truncated (%zu bytes)", r->recs[i].len);
    }
  }
  FPT_CHECK_EQ_INT(decode, 20);
  FPT_CHECK_EQ_INT(schema, 10);
  FPT_CHECK_EQ_INT(large, 1);
  fpt_records_free(r);
}

static void check_window(void) {
  redisContext *c = fpt_redis_connect();
  redisReply *rep;
  int64_t expect[64] = {0}, total = 0;
  if (!c) return;
  for (int i = 0; i < nalarm; i++) expect[(alarm_times[i] / 60000) - T0 / 60000]++;
  rep = fpt_redis_cmd(c, "HGETALL %s:w:test.alarm|brand-3|hits", prefix);
  FPT_CHECK(rep && rep->type == REDIS_REPLY_ARRAY && rep->elements > 0, "window hash exists");
  for (size_t i = 0; rep && rep->type == REDIS_REPLY_ARRAY && i + 1 < rep->elements; i += 2) {
    const char *f = rep->element[i]->str;
    char *end;
    long long b = strtoll(f, &end, 10);
    if (*end) continue; /* bookkeeping fields (head, totals) */
    long long v = strtoll(rep->element[i + 1]->str, NULL, 10);
    FPT_CHECK_EQ_INT(v, expect[b - T0 / 60000]);
    total += v;
  }
  FPT_CHECK_EQ_INT(total, 313);
  freeReplyObject(rep);
  rep = fpt_redis_cmd(c, "PTTL %s:w:test.alarm|brand-3|hits", prefix);
  FPT_CHECK(rep && rep->type == REDIS_REPLY_INTEGER && rep->integer > 0, "window key expires");
  freeReplyObject(rep);
  redisFree(c);
}

static void test_e2e(void) {
  char bin[512], rules[512], set_in[256], set_out[256], set_dlq[256], set_group[256],
      set_kafka[256], set_port[64], set_prefix[96];
  done_arg_t d;
  fpt_proc_t *p;
  static const char *const big[] = {"max.message.bytes", "4194304", NULL};

  in_topic = fpt_topic_name("e2e-in");
  out_topic = fpt_topic_name("e2e-out");
  dlq_topic = fpt_topic_name("e2e-dlq");
  group = fpt_topic_name("e2e-group");
  snprintf(prefix, sizeof(prefix), "e2e%d", (int)getpid());
  FPT_CHECK_EQ_INT(fpt_topic_create(in_topic, NPARTS, big), 0);
  FPT_CHECK_EQ_INT(fpt_topic_create(out_topic, 1, NULL), 0);
  FPT_CHECK_EQ_INT(fpt_topic_create(dlq_topic, 1, big), 0);
  produce_input();
  FPT_CHECK_EQ_INT(fpt_high_watermarks(in_topic, NPARTS, d.hw), 0);

  snprintf(bin, sizeof(bin), "%s/flashpoint", FP_BINARY_DIR);
  snprintf(rules, sizeof(rules), "rules.dir=%s/tests/kafka/rules-e2e", FP_SOURCE_DIR);
  snprintf(set_in, sizeof(set_in), "input.topics=%s", in_topic);
  snprintf(set_out, sizeof(set_out), "output.topic=%s", out_topic);
  snprintf(set_dlq, sizeof(set_dlq), "dlq.topic=%s", dlq_topic);
  snprintf(set_group, sizeof(set_group), "group.id=%s", group);
  snprintf(set_kafka, sizeof(set_kafka), "kafka.bootstrap.servers=%s", fpt_kafka_bootstrap());
  snprintf(set_port, sizeof(set_port), "redis.port=%d", fpt_redis_port());
  snprintf(set_prefix, sizeof(set_prefix), "redis.prefix=%s", prefix);
  const char *argv[] = {bin, "run", "-s", rules, "-s", set_in, "-s", set_out, "-s", set_dlq,
                        "-s", set_group, "-s", set_kafka, "-s", set_port, "-s", set_prefix,
                        "-s", "workers=2", "-s", "commit.interval.ms=200",
                        "-s", "consumer.fetch.message.max.bytes=4194304", NULL};
  p = fpt_proc_spawn(argv, NULL, NULL);
  FPT_CHECK(p != NULL, "engine started");
  if (!p) return;
  int caught_up = fpt_wait_until(all_committed, &d, 120000);
  FPT_CHECK(caught_up, "offsets committed to the end of every partition");
  FPT_CHECK_EQ_INT(fpt_proc_signal(p, SIGTERM), 0);
  FPT_CHECK_EQ_INT(fpt_proc_wait(p, 10000), 0);
  {
    int64_t c[NPARTS];
    FPT_CHECK_EQ_INT(fpt_committed_offsets(group, in_topic, NPARTS, c), 0);
    for (int i = 0; i < NPARTS; i++) FPT_CHECK_EQ_INT(c[i], d.hw[i]);
  }
  check_incidents();
  check_dead_letters();
  check_window();
  if (!caught_up) fpt_proc_dump_log(p, 80);
  fpt_proc_free(p);
  fpt_topic_delete(in_topic);
  fpt_topic_delete(out_topic);
  fpt_topic_delete(dlq_topic);
  free(in_topic), free(out_topic), free(dlq_topic), free(group);
}

int main(void) {
  fpt_run("one mention stream in, exact incidents, dead letters, windows and offsets out", test_e2e);
  return fpt_done();
}
