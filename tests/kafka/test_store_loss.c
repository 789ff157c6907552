/*
 * kafka tier: Redis loses its data (every key of the engine's prefix deleted while the engine
 * is down). On restart the engine notices that the store's fence is behind the committed
 * offsets, seeks back by store.rebuild of Kafka time and replays: the windows are rebuilt
 * exactly, and nothing that was already emitted is emitted again, except the byte-identical
 * resolved/postmortem events of a sweep that docs/delivery.md allows.
 */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "testlib.h"

#define NPARTS 2

static char *in_topic, *out_topic, group[160], prefix[64];
static int64_t t0;
static int produced, alarms[8];

static void produce(int n) {
  fpt_msg_t *msgs = calloc((size_t)n, sizeof(*msgs));
  char (*bufs)[256] = calloc((size_t)n, sizeof(*bufs));
  char (*keys)[16] = calloc((size_t)n, sizeof(*keys));
  for (int j = 0; j < n; j++) {
    int i = produced + j, b = i % 8, alarm = (i / 8) % 4 == 0;
    alarms[b] += alarm;
    snprintf(keys[j], sizeof(keys[j]), "brand-%d", b);
    snprintf(bufs[j], sizeof(bufs[j]),
             "{\"id\":\"l-%d\",\"brand\":\"%s\",\"author\":{\"id\":\"u%d\"},\"text\":\"%s\",\"created_at\":%" PRId64 "}",
             i, keys[j], i % 11, alarm ? "ALARM now" : "calm", t0 + (int64_t)i * 100);
    msgs[j].partition = RD_KAFKA_PARTITION_UA;
    msgs[j].key = keys[j];
    msgs[j].value = bufs[j];
    msgs[j].len = strlen(bufs[j]);
  }
  FPT_CHECK_EQ_INT(fpt_produce(in_topic, msgs, (size_t)n), 0);
  produced += n;
  free(msgs), free(bufs), free(keys);
}

static int caught_up(void *arg) {
  int64_t c[NPARTS], hw[NPARTS];
  (void)arg;
  if (fpt_committed_offsets(group, in_topic, NPARTS, c) || fpt_high_watermarks(in_topic, NPARTS, hw)) return 0;
  for (int i = 0; i < NPARTS; i++)
    if (c[i] != hw[i]) return 0;
  return 1;
}

static fpt_proc_t *engine(void) {
  static char bin[512], rules[512], s_in[256], s_out[256], s_group[256], s_kafka[256], s_port[64], s_prefix[128];
  snprintf(bin, sizeof(bin), "%s/flashpoint", FP_BINARY_DIR);
  snprintf(rules, sizeof(rules), "rules.dir=%s/tests/kafka/rules-e2e", FP_SOURCE_DIR);
  snprintf(s_in, sizeof(s_in), "input.topics=%s", in_topic);
  snprintf(s_out, sizeof(s_out), "output.topic=%s", out_topic);
  snprintf(s_group, sizeof(s_group), "group.id=%s", group);
  snprintf(s_kafka, sizeof(s_kafka), "kafka.bootstrap.servers=%s", fpt_kafka_bootstrap());
  snprintf(s_port, sizeof(s_port), "redis.port=%d", fpt_redis_port());
  snprintf(s_prefix, sizeof(s_prefix), "redis.prefix=%s", prefix);
  const char *argv[] = {bin, "run", "-s", rules, "-s", s_in, "-s", s_out, "-s", "dlq.topic=unused-dlq", "-s", s_group,
                        "-s", s_kafka, "-s", s_port, "-s", s_prefix, "-s", "workers=2",
                        "-s", "commit.interval.ms=200", "-s", "store.rebuild=1h", NULL};
  return fpt_proc_spawn(argv, NULL, NULL);
}

static void delete_prefix(redisContext *c) {
  redisReply *r = fpt_redis_cmd(c, "KEYS %s:*", prefix);
  for (size_t i = 0; r && r->type == REDIS_REPLY_ARRAY && i < r->elements; i++)
    freeReplyObject(fpt_redis_cmd(c, "DEL %s", r->element[i]->str));
  freeReplyObject(r);
}

static int64_t window_total(redisContext *c, int b) {
  int64_t total = 0;
  redisReply *r = fpt_redis_cmd(c, "HGETALL %s:w:test.alarm|brand-%d|hits", prefix, b);
  for (size_t j = 0; r && r->type == REDIS_REPLY_ARRAY && j + 1 < r->elements; j += 2) {
    char *end;
    strtoll(r->element[j]->str, &end, 10);
    if (!*end) total += strtoll(r->element[j + 1]->str, NULL, 10);
  }
  freeReplyObject(r);
  return total;
}

static void test_rebuild_after_loss(void) {
  fpt_proc_t *p;
  redisContext *c = fpt_redis_connect();
  fpt_records_t *out;
  char *log;
  if (!c) return;
  in_topic = fpt_topic_name("loss-in");
  out_topic = fpt_topic_name("loss-out");
  snprintf(group, sizeof(group), "g-%s", in_topic);
  snprintf(prefix, sizeof(prefix), "loss%d", (int)getpid());
  t0 = (int64_t)time(NULL) * 1000 - 20 * 60 * 1000; /* event time: the last 20 minutes */
  FPT_CHECK_EQ_INT(fpt_topic_create(in_topic, NPARTS, NULL), 0);
  FPT_CHECK_EQ_INT(fpt_topic_create(out_topic, 1, NULL), 0);
  if (fpt_topic_partitions("unused-dlq") < 0) fpt_topic_create("unused-dlq", 1, NULL);

  produce(4000);
  p = engine();
  FPT_CHECK(fpt_wait_until(caught_up, NULL, 120000), "first run caught up");
  fpt_proc_signal(p, SIGTERM);
  FPT_CHECK_EQ_INT(fpt_proc_wait(p, 15000), 0);
  fpt_proc_free(p);
  out = fpt_consume_all(out_topic, FPT_READ_COMMITTED, 30000);
  size_t before = out ? out->n : 0;
  fpt_records_free(out);
  FPT_CHECK(before > 0, "incidents before the loss (%zu)", before);

  delete_prefix(c); /* Redis loses everything of ours */
  FPT_CHECK_EQ_INT(window_total(c, 1), 0);
  produce(400);
  p = engine();
  FPT_CHECK(fpt_wait_until(caught_up, NULL, 120000), "second run caught up");
  fpt_proc_signal(p, SIGTERM);
  FPT_CHECK_EQ_INT(fpt_proc_wait(p, 15000), 0);
  log = fpt_proc_output(p, NULL);
  FPT_CHECK(log && strstr(log, "the state store lost data") && strstr(log, "rebuilding windows from offset 0"),
            "the engine noticed and rebuilt from the start");
  free(log);
  fpt_proc_free(p);

  /* windows exact again: every ALARM counted once (the 1h window holds the whole stream) */
  for (int b = 0; b < 8; b++) FPT_CHECK_EQ_INT(window_total(c, b), alarms[b]);
  /* nothing emitted twice, but what docs/delivery.md allows: an incident a sweep had resolved
   * may have its resolved/postmortem events produced again, byte-identical (a sweep's events
   * belong to the run that found them due, which in the replay can end past the committed
   * offset). Any other repeat, or a repeat that differs, fails. */
  out = fpt_consume_all(out_topic, FPT_READ_COMMITTED, 30000);
  {
    json_t *seen = json_object(); /* event id -> its first record's bytes */
    int dups = 0, allowed = 0;
    for (size_t i = 0; out && i < out->n; i++) {
      json_error_t jerr;
      json_t *ev = json_loadb(out->recs[i].value, out->recs[i].len, 0, &jerr), *first;
      const char *id = json_string_value(json_object_get(ev, "event_id"));
      const char *status = json_string_value(json_object_get(ev, "status"));
      if (id && (first = json_object_get(seen, id))) {
        int same = json_string_length(first) == out->recs[i].len &&
                   memcmp(json_string_value(first), out->recs[i].value, out->recs[i].len) == 0;
        int swept = status && (strcmp(status, "resolved") == 0 || strcmp(status, "postmortem") == 0);
        if (same && swept) {
          allowed++;
        } else if (dups++ < 5) { /* say which, for the post-mortem of a failure */
          fprintf(stderr, "duplicate event %s (status %s, %s) at output offset %" PRId64 "\n", id,
                  status ? status : "?", same ? "byte-identical" : "differs", out->recs[i].offset);
        }
      } else if (id) {
        json_object_set_new(seen, id, json_stringn(out->recs[i].value, out->recs[i].len));
      }
      json_decref(ev);
    }
    FPT_CHECK_EQ_INT(dups, 0);
    if (allowed) fprintf(stderr, "note: %d swept resolved/postmortem event(s) produced again, byte-identical\n", allowed);
    FPT_CHECK(out && out->n >= before, "events after the rebuild (%zu, %zu before)", out ? out->n : 0, before);
    json_decref(seen);
  }
  fpt_records_free(out);
  delete_prefix(c);
  redisFree(c);
  fpt_topic_delete(in_topic);
  fpt_topic_delete(out_topic);
  free(in_topic), free(out_topic);
}

int main(void) {
  fpt_run("Redis loses its data: windows rebuilt, nothing emitted twice", test_rebuild_after_loss);
  return fpt_done();
}
