/*
 * MANUAL CHECK, not part of the suite (see tests/CMakeLists.txt): exactly-once mode is
 * experimental. Run: FP_SERVICES_ENV=<env> build/tests/manual_check_exactly_once
 * Known failure (issue 3): in some runs, after the kill, incidents whose transaction was
 * aborted are not re-emitted identically by the restarted engine (no duplicate appears, but
 * events of one or two incidents are missing or carry other ids). Until that is found, the
 * mode stays experimental and this check stays out of CI.
 *
 * delivery.mode=exactly-once on the real broker. An engine is killed with
 * SIGKILL in the middle of a run and restarted; a read_committed consumer of the output
 * topic then sees every incident event of an uninterrupted reference run exactly once:
 * the same event ids, byte-identical, and no duplicate. Window counts in Redis are exact.
 */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "testlib.h"

#define N 20000
#define NPARTS 4
#define T0 ((int64_t)1795600800000LL)

static char *in_topic;

static void produce_input(void) {
  fpt_msg_t *msgs = calloc(N, sizeof(*msgs));
  char (*bufs)[256] = calloc(N, sizeof(*bufs));
  char (*keys)[16] = calloc(N, sizeof(*keys));
  for (int i = 0; i < N; i++) {
    int brand = i % 8;
    /* brand b raises ALARM in (b+1) of every 16 of its mentions: incidents at different times */
    int alarm = (i / 8) % 16 <= brand;
    snprintf(keys[i], sizeof(keys[i]), "brand-%d", brand);
    snprintf(bufs[i], sizeof(bufs[i]),
             "{\"id\":\"x-%d\",\"brand\":\"%s\",\"author\":{\"id\":\"u%d\"},\"text\":\"%s\",\"created_at\":%" PRId64 "}",
             i, keys[i], i % 13, alarm ? "ALARM here" : "fine", T0 + (int64_t)i * 50);
    msgs[i].partition = RD_KAFKA_PARTITION_UA;
    msgs[i].key = keys[i];
    msgs[i].value = bufs[i];
    msgs[i].len = strlen(bufs[i]);
  }
  FPT_CHECK_EQ_INT(fpt_produce(in_topic, msgs, N), 0);
  free(msgs), free(bufs), free(keys);
}

typedef struct {
  const char *group;
  int64_t target; /* committed total to wait for */
} wait_t;

static int64_t committed_total(const char *group) {
  int64_t c[NPARTS], t = 0;
  if (fpt_committed_offsets(group, in_topic, NPARTS, c)) return -1;
  for (int i = 0; i < NPARTS; i++) t += c[i] > 0 ? c[i] : 0;
  return t;
}

static int reached(void *arg) {
  wait_t *w = arg;
  return committed_total(w->group) >= w->target;
}

static fpt_proc_t *engine(const char *group, const char *out, const char *prefix, const char *mode,
                          const char *extra) {
  char bin[512], rules[512], s_in[256], s_out[256], s_group[256], s_kafka[256], s_port[64], s_prefix[128],
      s_mode[64];
  snprintf(bin, sizeof(bin), "%s/flashpoint", FP_BINARY_DIR);
  snprintf(rules, sizeof(rules), "rules.dir=%s/tests/kafka/rules-e2e", FP_SOURCE_DIR);
  snprintf(s_in, sizeof(s_in), "input.topics=%s", in_topic);
  snprintf(s_out, sizeof(s_out), "output.topic=%s", out);
  snprintf(s_group, sizeof(s_group), "group.id=%s", group);
  snprintf(s_kafka, sizeof(s_kafka), "kafka.bootstrap.servers=%s", fpt_kafka_bootstrap());
  snprintf(s_port, sizeof(s_port), "redis.port=%d", fpt_redis_port());
  snprintf(s_prefix, sizeof(s_prefix), "redis.prefix=%s", prefix);
  snprintf(s_mode, sizeof(s_mode), "delivery.mode=%s", mode);
  const char *argv[] = {bin, "run", "-s", rules, "-s", s_in, "-s", s_out, "-s", "dlq.topic=unused-dlq",
                        "-s", s_group, "-s", s_kafka, "-s", s_port, "-s", s_prefix, "-s", s_mode,
                        "-s", "workers=2", "-s", "batch.size=200", "-s", "commit.interval.ms=300",
                        "-s", "consumer.session.timeout.ms=6000", "-s", extra, NULL};
  return fpt_proc_spawn(argv, NULL, NULL);
}

/* event_id -> payload of every record; counts duplicates (same id) and conflicts (same id,
 * different bytes). */
static json_t *collect(const char *topic, int *dups, int *conflicts) {
  fpt_records_t *r = fpt_consume_all(topic, FPT_READ_COMMITTED, 30000);
  json_t *byid = json_object();
  *dups = *conflicts = 0;
  FPT_CHECK(r && r->complete, "read all of %s", topic);
  for (size_t i = 0; r && i < r->n; i++) {
    json_error_t jerr;
    json_t *ev = json_loadb(r->recs[i].value, r->recs[i].len, 0, &jerr), *prev;
    const char *id = json_string_value(json_object_get(ev, "event_id"));
    if (!id) {
      FPT_FAIL("event without id");
      json_decref(ev);
      continue;
    }
    if ((prev = json_object_get(byid, id))) {
      (*dups)++;
      if (strcmp(json_string_value(prev), r->recs[i].value)) (*conflicts)++;
    } else {
      json_object_set_new(byid, id, json_stringn(r->recs[i].value, r->recs[i].len));
    }
    json_decref(ev);
  }
  fpt_records_free(r);
  return byid;
}

static void test_kill9_exactly_once(void) {
  char ref_group[128], eos_group[128], ref_prefix[64], eos_prefix[64];
  char *ref_out = fpt_topic_name("eos-ref-out"), *eos_out = fpt_topic_name("eos-out");
  fpt_proc_t *p;
  wait_t w;
  int dups, conflicts;
  json_t *ref, *got;

  in_topic = fpt_topic_name("eos-in");
  snprintf(ref_group, sizeof(ref_group), "ref-%s", in_topic);
  snprintf(eos_group, sizeof(eos_group), "eos-%s", in_topic);
  snprintf(ref_prefix, sizeof(ref_prefix), "eosref%d", (int)getpid());
  snprintf(eos_prefix, sizeof(eos_prefix), "eos%d", (int)getpid());
  FPT_CHECK_EQ_INT(fpt_topic_create(in_topic, NPARTS, NULL), 0);
  FPT_CHECK_EQ_INT(fpt_topic_create(ref_out, 1, NULL), 0);
  FPT_CHECK_EQ_INT(fpt_topic_create(eos_out, 1, NULL), 0);
  if (fpt_topic_partitions("unused-dlq") < 0) FPT_CHECK_EQ_INT(fpt_topic_create("unused-dlq", 1, NULL), 0);
  produce_input();

  /* the reference: uninterrupted, exactly-once too */
  w.group = ref_group;
  w.target = N;
  p = engine(ref_group, ref_out, ref_prefix, "exactly-once", "log.level=info");
  FPT_CHECK(fpt_wait_until(reached, &w, 180000), "reference run complete");
  fpt_proc_signal(p, SIGTERM);
  FPT_CHECK_EQ_INT(fpt_proc_wait(p, 20000), 0);
  fpt_proc_free(p);

  /* killed at about 40%, then restarted */
  w.group = eos_group;
  w.target = N * 2 / 5;
  p = engine(eos_group, eos_out, eos_prefix, "exactly-once", "log.level=info");
  FPT_CHECK(fpt_wait_until(reached, &w, 180000), "first run got to 40%%");
  fpt_proc_kill(p);
  fpt_note("killed at %lld committed of %d", (long long)committed_total(eos_group), N);
  fpt_proc_free(p);
  w.target = N;
  p = engine(eos_group, eos_out, eos_prefix, "exactly-once",
             getenv("FP_EOS_DEBUG") ? "kafka.debug=cgrp,eos,fetch" : "log.level=info");
  if (!FPT_CHECK(fpt_wait_until(reached, &w, 120000), "restarted run complete")) {
    int64_t c[NPARTS], hw[NPARTS];
    fpt_committed_offsets(eos_group, in_topic, NPARTS, c);
    fpt_high_watermarks(in_topic, NPARTS, hw);
    for (int i = 0; i < NPARTS; i++) fpt_note("partition %d: committed %lld of %lld", i, (long long)c[i], (long long)hw[i]);
    fpt_proc_dump_log(p, 60);
  }
  fpt_proc_signal(p, SIGTERM);
  FPT_CHECK_EQ_INT(fpt_proc_wait(p, 20000), 0);
  fpt_proc_free(p);

  ref = collect(ref_out, &dups, &conflicts);
  FPT_CHECK_EQ_INT(dups, 0);
  got = collect(eos_out, &dups, &conflicts);
  FPT_CHECK_EQ_INT(dups, 0);
  FPT_CHECK_EQ_INT(conflicts, 0);
  FPT_CHECK(json_object_size(ref) > 8, "the reference has incidents (%zu)", json_object_size(ref));
  FPT_CHECK_EQ_INT(json_object_size(got), json_object_size(ref));
  {
    const char *id;
    json_t *v;
    json_object_foreach(ref, id, v) {
      json_t *g = json_object_get(got, id);
      FPT_CHECK(g && !strcmp(json_string_value(g), json_string_value(v)), "event %s identical", id);
    }
  }
  /* windows exact: every brand counted its ALARM mentions once */
  {
    redisContext *c = fpt_redis_connect();
    for (int b = 0; c && b < 8; b++) {
      int64_t want = 0, total = 0;
      for (int i = b; i < N; i += 8) want += (i / 8) % 16 <= b;
      redisReply *r = fpt_redis_cmd(c, "HGETALL %s:w:test.alarm|brand-%d|hits", eos_prefix, b);
      for (size_t j = 0; r && r->type == REDIS_REPLY_ARRAY && j + 1 < r->elements; j += 2) {
        char *end;
        strtoll(r->element[j]->str, &end, 10);
        if (!*end) total += strtoll(r->element[j + 1]->str, NULL, 10);
      }
      freeReplyObject(r);
      /* the 1h window holds the last hour of the ~17 min stream: everything */
      FPT_CHECK_EQ_INT(total, want);
    }
    if (c) redisFree(c);
  }
  json_decref(ref);
  json_decref(got);
  fpt_topic_delete(in_topic);
  fpt_topic_delete(ref_out);
  fpt_topic_delete(eos_out);
  free(in_topic), free(ref_out), free(eos_out);
}

int main(void) {
  fpt_run("kill -9 in exactly-once mode: no duplicate, nothing lost", test_kill9_exactly_once);
  return fpt_done();
}
