/*
 * kafka tier: the same input gives the same incident events (docs/incident.md: "the same
 * input gives the same bytes"), also when incidents resolve by the passing of event time.
 *
 * 100,000 mentions over 8 partitions; the rule of rules-resolve/ opens incidents on bursts
 * of ALARM mentions of a few brands and resolves them after 2 quiet minutes of event time,
 * so resolutions are found both by the engine's sweeps and by the next signal. Two
 * uninterrupted runs (own groups, prefixes and output topics, 4 workers each) read the
 * same input topic; their incident events must be the same set with the same bytes, and
 * their windows identical. Whether the two runs differ depends on how far the partitions
 * drift apart in event time during a run, so this case can pass by luck.
 *
 * The second case makes that drift deterministic: brand-x's ALARM mentions on partition 0
 * never pause for 2 minutes (one every 6.4 s), so its incident must never resolve; but
 * partition 1 is driven 25 minutes of event time ahead of partition 0 in the middle of the
 * burst. An incident may resolve only when its own entity's event time has moved past the
 * due time; another partition's watermark says nothing about brand-x's next mention.
 */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "enginelib.h"

#define NMENTIONS 100000
#define NPARTS 8
#define NBRANDS 64
#define T0 ((int64_t)1795600800000LL) /* 2026-11-25T10:00:00Z */
#define STEP_MS 100

static const char *const settings[] = {"workers=4", NULL};

static void test_determinism(void) {
  fpe_env_t one, two;
  fpe_gen_t g = {0, NMENTIONS, NBRANDS, T0, STEP_MS, 0, 0};
  fpe_gen_count_t sent = {0, 0, 0};

  memset(&two, 0, sizeof(two));
  if (fpe_env_init(&one, "determ", "rules-resolve", NPARTS) != 0) goto out;
  if (fpe_env_init_sibling(&two, &one, "determ-2") != 0) goto out;
  if (!FPT_CHECK(fpe_produce(one.in, &g, &sent) == 0, "produce the input")) goto out;
  if (fpe_run_to_end(&one, settings, 90000) != 0) goto out;
  if (fpe_run_to_end(&two, settings, 90000) != 0) goto out;
  {
    size_t n1 = 0, n2 = 0;
    char **w1 = fpe_windows_dump(&one, "core.alarm", &n1), **w2 = fpe_windows_dump(&two, "core.alarm", &n2);
    if (w1 && w2) fpe_lines_check_equal(w2, n2, w1, n1, "core.alarm windows, run 2 vs run 1");
    fpe_lines_free(w1, n1);
    fpe_lines_free(w2, n2);
  }
  /* at quiescence, no incident may stay open that is due by every partition's watermark
   * (each partition's last mention is later than the bound below) */
  for (int r = 0; r < 2; r++) {
    const fpe_env_t *env = r ? &two : &one;
    int64_t bound = T0 + (int64_t)(NMENTIONS - 1000) * STEP_MS, stuck = 0;
    redisContext *c = fpt_redis_connect();
    redisReply *rep = c ? fpt_redis_cmd(c, "ZRANGE %s:lcz 0 -1 WITHSCORES", env->prefix) : NULL;
    for (size_t i = 0; rep && rep->type == REDIS_REPLY_ARRAY && i + 1 < rep->elements; i += 2) {
      int64_t due = strtoll(rep->element[i + 1]->str, NULL, 10);
      if (due >= 0 && due <= bound) {
        if (stuck++ < 3) fpt_note("run %d: %s still open, due %" PRId64 " <= %" PRId64, r + 1,
                                  rep->element[i]->str, due, bound);
      }
    }
    FPT_CHECK(rep && stuck == 0, "run %d: %" PRId64 " incident(s) left open although due by every "
              "partition's watermark when the input ended", r + 1, stuck);
    freeReplyObject(rep);
    if (c) redisFree(c);
  }
  {
    fpe_events_t *e1 = fpe_events_read(one.out), *e2 = fpe_events_read(two.out);
    if (FPT_CHECK(e1 && e2, "read both incident topics")) {
      size_t resolved = 0;
      for (size_t i = 0; i < e1->n; i++)
        if (strstr(e1->payloads[i], "\"status\":\"resolved\"")) resolved++;
      fpt_note("run 1: %zu events (%zu resolutions); run 2: %zu events", e1->n, resolved, e2->n);
      FPT_CHECK(resolved > 0, "incidents resolved in run 1");
      FPT_CHECK_EQ_INT(e1->records, e1->n);
      fpe_events_check_equal(e2, e1);
    }
    fpe_events_free(e1);
    fpe_events_free(e2);
  }
out:
  fpe_env_cleanup(&two);
  fpe_env_cleanup(&one);
}

/* Produces mentions k0..k1-1 of @p brand, one every @p gap_ms from T0, to @p partition. */
static int produce_brand(const char *topic, int32_t partition, const char *brand, int alarm,
                         int k0, int k1, int64_t gap_ms) {
  int n = k1 - k0, rc;
  fpt_msg_t *msgs = calloc((size_t)n, sizeof(*msgs));
  char (*vals)[256] = calloc((size_t)n, sizeof(*vals));
  if (!msgs || !vals) {
    free(msgs), free(vals);
    FPT_FAIL("out of memory");
    return -1;
  }
  for (int i = 0; i < n; i++) {
    int k = k0 + i;
    snprintf(vals[i], sizeof(vals[i]),
             "{\"id\":\"%s-%d\",\"brand\":\"%s\",\"author\":{\"id\":\"u%d\"},\"text\":\"%s %s %d\","
             "\"created_at\":%" PRId64 "}",
             brand, k, brand, k % 7, alarm ? "ALARM:" : "ordinary", brand, k, T0 + (int64_t)k * gap_ms);
    msgs[i].partition = partition;
    msgs[i].key = brand;
    msgs[i].value = vals[i];
    msgs[i].len = strlen(vals[i]);
  }
  rc = fpt_produce(topic, msgs, (size_t)n);
  free(msgs), free(vals);
  return rc == 0 ? 0 : -1;
}

static int caught_up(fpe_env_t *env, fpt_proc_t *p) {
  int64_t end[2];
  return fpe_end_offsets(env, end) >= 0 && fpe_wait_committed(env, end, p, 30000);
}

static void test_other_partition_ahead(void) {
  fpe_env_t env;
  fpt_proc_t *p = NULL;
  static const char *const one_worker[] = {"workers=2", NULL};
  const int64_t x_gap = 6400, y_gap = 6000; /* brand-x: ALARM every 6.4 s; brand-y: every 6 s */

  if (fpe_env_init(&env, "ahead", "rules-resolve", 2) != 0) goto out;
  p = fpe_engine_start(&env, one_worker, NULL);
  if (!FPT_CHECK(p != NULL, "engine started")) goto out;
  FPT_CHECK(fpe_wait_assigned(p, 30000), "engine got its partitions");

  /* 1. brand-x's burst begins on partition 0: 10:00:00 .. 10:02:33.6 (25 mentions, open) */
  FPT_CHECK_EQ_INT(produce_brand(env.in, 0, "brand-x", 1, 0, 25, x_gap), 0);
  FPT_CHECK(caught_up(&env, p), "first half of the burst processed");
  /* 2. partition 1 runs 25 minutes ahead (ordinary mentions of brand-y up to 10:30), in three
   * rounds more than a second apart so that the engine's once-a-second sweep runs */
  for (int r = 0; r < 3; r++) {
    int64_t next = fpt_now_ms() + 1200;
    FPT_CHECK_EQ_INT(produce_brand(env.in, 1, "brand-y", 0, r * 100, (r + 1) * 100 + (r == 2), y_gap), 0);
    FPT_CHECK(caught_up(&env, p), "partition 1 round %d processed", r);
    while (fpt_now_ms() < next) usleep(20000); /* lets the sweep timer elapse (a duration) */
  }
  /* 3. the rest of brand-x's burst: 10:02:40 .. 10:05:20, never 2 minutes apart */
  FPT_CHECK_EQ_INT(produce_brand(env.in, 0, "brand-x", 1, 25, 51, x_gap), 0);
  FPT_CHECK(caught_up(&env, p), "second half of the burst processed");
  FPT_CHECK_EQ_INT(fpt_proc_signal(p, SIGTERM), 0);
  FPT_CHECK_EQ_INT(fpt_proc_wait(p, 10000), 0);

  /* brand-x: window counts 1..51, thresholds 5/20/40: opened sev4, escalated sev3, sev2 */
  fpe_events_t *ev = fpe_events_read(env.out);
  if (FPT_CHECK(ev != NULL, "read the incidents")) {
    const char *want[] = {"opened", "escalated", "escalated"};
    size_t nx = 0;
    for (size_t i = 0; i < ev->n; i++) {
      json_error_t jerr;
      json_t *doc = json_loads(ev->payloads[i], 0, &jerr), *tl, *e;
      const char *entity = json_string_value(json_object_get(doc, "entity"));
      const char *status = json_string_value(json_object_get(doc, "status"));
      const char *prev = "";
      size_t j;
      if (!entity || strcmp(entity, "brand-x") != 0) {
        json_decref(doc);
        continue;
      }
      FPT_CHECK(nx < 3 && status && !strcmp(status, want[nx]), "brand-x event %zu is %s, got %s (%s)", nx,
                nx < 3 ? want[nx] : "(none)", status ? status : "?",
                json_string_value(json_object_get(doc, "event_time")));
      tl = json_object_get(doc, "timeline");
      json_array_foreach(tl, j, e) {
        const char *at = json_string_value(json_object_get(e, "at"));
        FPT_CHECK(at && strcmp(prev, at) <= 0, "brand-x timeline in time order: %s after %s (%s)",
                  at ? at : "?", prev, json_string_value(json_object_get(e, "status")));
        prev = at ? at : prev;
      }
      nx++;
      json_decref(doc);
    }
    FPT_CHECK_EQ_INT(nx, 3);
  }
  fpe_events_free(ev);
out:
  fpt_proc_free(p);
  fpe_env_cleanup(&env);
}

int main(void) {
  fpt_run("two uninterrupted runs of one input give the same incident events", test_determinism);
  fpt_run("a partition ahead in event time does not resolve another partition's incident",
          test_other_partition_ahead);
  return fpt_done();
}
