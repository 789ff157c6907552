/*
 * kafka tier: SIGTERM under load is a clean stop that commits exactly what was done.
 *
 * 100,000 mentions (and 100 malformed messages) over 8 partitions are waiting when the
 * engine (4 workers) starts. Once about 30% is committed, SIGTERM: the engine must exit 0
 * within 10 s. Then:
 *   1. what was committed is exactly what was done: for every partition, the Redis fences
 *      (window and lifecycle) are below the committed offset, and the core.count windows
 *      hold exactly the valid mentions below the committed offsets, bucket by bucket;
 *   2. a restart with the same group finishes the input; after a graceful stop there is
 *      nothing to replay, so the output topic has no duplicate at all and the windows are
 *      exact for the whole input; SIGTERM again exits 0;
 *   3. "restarting replays nothing": a third start with the same group and no new input
 *      gets its partitions and runs 3 s while the test watches Redis (MONITOR): no window
 *      update and no lifecycle load for its prefix (it evaluated nothing); the windows and
 *      the output topic are unchanged. Then one new mention is produced: the monitor must see
 *      its window update (the observation can see work), it is committed and counted once,
 *      and SIGTERM exits 0.
 */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "enginelib.h"

#define NMENTIONS 100000
#define NPARTS 8
#define NBRANDS 64
#define T0 ((int64_t)1795600800000LL) /* 2026-11-25T10:00:00Z */
#define STEP_MS 100
#define HOUR_MS 3600000LL

/* a small queue keeps the drain at stop short and the stop well before the end */
static const char *const settings[] = {"workers=4", "queue.max=5000", NULL};

static int cmp_line(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/*
 * The core.count dump expected when exactly the messages below committed[p] of every
 * partition p were evaluated: reads the input topic back to learn where each mention landed.
 */
static char **expected_counts(const fpe_env_t *env, const int64_t *committed, size_t *n) {
  enum { MAXH = 8 };
  int64_t counts[NBRANDS][MAXH], b0 = T0 / HOUR_MS;
  fpt_records_t *in = fpt_consume_all(env->in, FPT_READ_COMMITTED, 60000);
  char **lines = calloc((size_t)NBRANDS * MAXH, sizeof(*lines));
  size_t k = 0;

  memset(counts, 0, sizeof(counts));
  *n = 0;
  if (!in || !lines || !in->complete) {
    FPT_FAIL("reading the input back failed");
    fpt_records_free(in);
    free(lines);
    return NULL;
  }
  for (size_t i = 0; i < in->n; i++) {
    const fpt_record_t *r = &in->recs[i];
    json_error_t jerr;
    json_t *doc;
    int brand;
    if (r->offset >= committed[r->partition]) continue;
    if (!(doc = json_loadb(r->value, r->len, 0, &jerr))) continue; /* truncated: dead letter */
    json_t *id = json_object_get(doc, "id"), *at = json_object_get(doc, "created_at");
    const char *b = json_string_value(json_object_get(doc, "brand"));
    if (id && b && json_is_integer(at) && sscanf(b, "brand-%d", &brand) == 1 && brand >= 0 && brand < NBRANDS) {
      int64_t h = json_integer_value(at) / HOUR_MS - b0;
      if (h >= 0 && h < MAXH) counts[brand][h]++;
    }
    json_decref(doc);
  }
  fpt_records_free(in);
  for (int b = 0; b < NBRANDS; b++)
    for (int h = 0; h < MAXH; h++) {
      if (!counts[b][h]) continue;
      lines[k] = malloc(96);
      snprintf(lines[k], 96, ":w:core.count|brand-%02d|all %" PRId64 " %" PRId64, b, b0 + h, counts[b][h]);
      k++;
    }
  qsort(lines, k, sizeof(*lines), cmp_line);
  *n = k;
  return lines;
}

static void check_counts(const fpe_env_t *env, const int64_t *committed, const char *what) {
  size_t ngot = 0, nwant = 0;
  char **got = fpe_windows_dump(env, "core.count", &ngot), **want = expected_counts(env, committed, &nwant);
  if (got && want) fpe_lines_check_equal(got, ngot, want, nwant, what);
  fpe_lines_free(got, ngot);
  fpe_lines_free(want, nwant);
}

/* Sends SIGTERM and checks a clean exit within 10 s. */
static void stop_clean(fpt_proc_t *p, const char *which) {
  int64_t t = fpt_now_ms();
  int rc;
  FPT_CHECK_EQ_INT(fpt_proc_signal(p, SIGTERM), 0);
  rc = fpt_proc_wait(p, 10000);
  FPT_CHECK(rc == 0, "%s: exit code %d after SIGTERM (want 0 within 10 s)", which, rc);
  fpt_note("%s: exited %d, %" PRId64 " ms after SIGTERM", which, rc, fpt_now_ms() - t);
  if (rc != 0) fpt_proc_dump_log(p, 40);
}

static void test_sigterm(void) {
  fpe_env_t env;
  fpe_gen_t g = {0, NMENTIONS, NBRANDS, T0, STEP_MS, 1000, 0};
  fpe_gen_count_t sent = {0, 0, 0};
  int64_t end[NPARTS], c[NPARTS], f[NPARTS], lf[NPARTS], total, sum;
  fpt_proc_t *p = NULL;

  if (fpe_env_init(&env, "sigterm", "rules-core", NPARTS) != 0) goto out;
  if (!FPT_CHECK(fpe_produce(env.in, &g, &sent) == 0, "produce the input")) goto out;
  total = fpe_end_offsets(&env, end);
  FPT_CHECK_EQ_INT(total, sent.valid + sent.bad);

  /* 1. stop under load */
  p = fpe_engine_start(&env, settings, NULL);
  if (!FPT_CHECK(p != NULL, "engine started")) goto out;
  FPT_CHECK(fpe_wait_committed_sum(&env, total * 3 / 10, p, 60000), "30%% committed");
  stop_clean(p, "engine 1 (under load)");
  fpt_proc_free(p);
  p = NULL;
  sum = fpe_committed(&env, c);
  FPT_CHECK(sum < total, "stopped before the end of the input (%" PRId64 " of %" PRId64 ")", sum, total);
  fpt_note("committed at the stop: %" PRId64 " of %" PRId64, sum, total);
  if (fpe_fences(&env, 0, f) == 0 && fpe_fences(&env, 1, lf) == 0)
    for (int i = 0; i < NPARTS; i++) {
      int64_t from = c[i] < 0 ? 0 : c[i];
      FPT_CHECK(f[i] < from && lf[i] < from,
                "partition %d: nothing applied beyond the committed offset %" PRId64
                " (window fence %" PRId64 ", lifecycle fence %" PRId64 ")", i, from, f[i], lf[i]);
    }
  for (int i = 0; i < NPARTS; i++)
    if (c[i] < 0) c[i] = 0;
  check_counts(&env, c, "core.count after the stop vs the committed prefix");

  /* 2. restart and finish: nothing to replay, so no duplicate incident */
  p = fpe_engine_start(&env, settings, NULL);
  if (!FPT_CHECK(p != NULL, "engine 2 started")) goto out;
  int caught_up = fpe_wait_committed(&env, end, p, 90000);
  FPT_CHECK(caught_up, "restart: committed reached the end of every partition");
  if (!caught_up) fpt_proc_dump_log(p, 40);
  stop_clean(p, "engine 2");
  fpt_proc_free(p);
  p = NULL;
  check_counts(&env, end, "core.count after the restart vs the whole input");
  FPT_CHECK_EQ_INT(fpe_windows_sum(&env, "core.count"), sent.valid);

  fpe_events_t *ev = fpe_events_read(env.out);
  size_t nwin = 0;
  char **win = fpe_windows_dump(&env, "core.alarm", &nwin);
  int64_t out_records = ev ? (int64_t)ev->records : -1;
  if (FPT_CHECK(ev != NULL, "read the incidents")) {
    FPT_CHECK(ev->n > 0, "there are incidents");
    FPT_CHECK(ev->records == ev->n, "no duplicate after a graceful stop and restart (%zu records, "
              "%zu distinct events)", ev->records, ev->n);
    FPT_CHECK_EQ_INT(ev->conflicts, 0);
  }
  FPT_CHECK_EQ_INT(fpe_dlq_distinct(env.dlq, NULL), sent.bad);

  /* 3. restart with no new input: nothing is evaluated again. Watch Redis: a replay would
   * run the window script ("apply") or load the lifecycle state ("load") for our prefix */
  redisContext *mon = fpe_monitor_start();
  p = fpe_engine_start(&env, settings, NULL);
  if (!FPT_CHECK(p != NULL && mon != NULL, "engine 3 and the Redis monitor started")) {
    fpe_monitor_stop(mon);
    goto out3;
  }
  FPT_CHECK(fpe_wait_assigned(p, 30000), "engine 3 got its partitions");
  {
    const char *const applies[] = {"\"EVALSHA\"", "\"apply\"", env.prefix, NULL};
    const char *const loads[] = {"\"EVALSHA\"", "\"load\"", env.prefix, NULL};
    int64_t napply = fpe_monitor_count(mon, 3000, applies); /* an observation period */
    int64_t nload = fpe_monitor_count(mon, 100, loads);
    FPT_CHECK(napply == 0, "restart with nothing new applied windows %" PRId64 " time(s)", napply);
    FPT_CHECK(nload == 0, "restart with nothing new loaded lifecycle state %" PRId64 " time(s)", nload);
    FPT_CHECK_EQ_INT(fpe_committed(&env, c), total);
    {
      size_t n2 = 0;
      char **win2 = fpe_windows_dump(&env, "core.alarm", &n2);
      if (win && win2) fpe_lines_check_equal(win2, n2, win, nwin, "core.alarm windows after a restart with nothing new");
      fpe_lines_free(win2, n2);
      FPT_CHECK_EQ_INT(fpe_windows_sum(&env, "core.count"), sent.valid);
      FPT_CHECK_EQ_INT(fpe_topic_count(env.out), out_records);
    }
    /* positive control: one new mention is seen by the monitor (and counted once) */
    fpe_gen_t one = {NMENTIONS, 1, NBRANDS, T0, STEP_MS, 0, 0};
    FPT_CHECK_EQ_INT(fpe_produce(env.in, &one, &sent), 0);
    int64_t seen = fpe_monitor_count(mon, 4000, applies);
    FPT_CHECK(seen >= 1, "the monitor saw the new mention's window update (%" PRId64 ")", seen);
    fpe_end_offsets(&env, end);
    FPT_CHECK(fpe_wait_committed(&env, end, p, 30000), "the new mention was committed");
  }
  fpe_monitor_stop(mon);
  FPT_CHECK(fpt_proc_running(p), "engine 3 kept running");
  stop_clean(p, "engine 3");
  FPT_CHECK_EQ_INT(fpe_windows_sum(&env, "core.count"), sent.valid);
out3:
  fpe_lines_free(win, nwin);
  fpe_events_free(ev);
out:
  fpt_proc_free(p);
  fpe_env_cleanup(&env);
}

int main(void) {
  fpt_run("SIGTERM under load: exit 0, commit what was done, restarting replays nothing", test_sigterm);
  return fpt_done();
}
