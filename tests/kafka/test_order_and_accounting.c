/*
 * kafka tier: ordering and exact accounting at volume, on a real broker and Redis.
 *
 * 100,000 mentions over 8 partitions, keyed by 64 brands, with 100 malformed messages among
 * them, consumed by one `flashpoint` with 4 workers and the rules of rules-core/:
 *   - order.violation fires whenever a brand's mention is evaluated with an input offset not
 *     greater than the last one that worker saw for the brand: there must be no such incident
 *     (a partition's mentions are evaluated in offset order, by one worker);
 *   - core.count counts every mention per brand in a 1-day window of 1-hour buckets: the
 *     buckets in Redis must equal, bucket by bucket, what the generator sent (each mention
 *     evaluated exactly once), so their sum is the number of valid mentions;
 *   - core.alarm and core.resolve (ALARM bursts) only make incidents happen alongside;
 *   - dead letters + counted mentions = messages produced, and the group's committed offsets
 *     are the end offsets of all 8 partitions; SIGTERM then exits 0.
 */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "enginelib.h"

#define NMENTIONS 100000
#define NPARTS 8
#define NBRANDS 64
#define BAD_EVERY 1000
#define T0 ((int64_t)1795600800000LL) /* 2026-11-25T10:00:00Z */
#define STEP_MS 100                    /* 100,000 mentions span 2.8 hours of event time */
#define HOUR_MS 3600000LL

/* The expected dump of core.count: "<:w:core.count|brand|all> <hour bucket> <count>". */
static char **expected_counts(size_t *n) {
  enum { MAXB = 8 };
  int64_t counts[NBRANDS][MAXB] = {{0}}, b0 = T0 / HOUR_MS;
  char **lines = calloc((size_t)NBRANDS * MAXB, sizeof(*lines));
  size_t k = 0;
  if (!lines) return NULL;
  for (int s = 0; s < NMENTIONS; s++) counts[s % NBRANDS][(T0 + (int64_t)s * STEP_MS) / HOUR_MS - b0]++;
  for (int b = 0; b < NBRANDS; b++)
    for (int h = 0; h < MAXB; h++) {
      if (!counts[b][h]) continue;
      lines[k] = malloc(96);
      snprintf(lines[k], 96, ":w:core.count|brand-%02d|all %" PRId64 " %" PRId64, b, b0 + h, counts[b][h]);
      k++;
    }
  *n = k;
  return lines;
}

static int cmp_line(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void test_order_and_accounting(void) {
  fpe_env_t env;
  fpe_gen_t g = {0, NMENTIONS, NBRANDS, T0, STEP_MS, BAD_EVERY, 0};
  fpe_gen_count_t sent = {0, 0, 0};
  int64_t end[NPARTS], committed[NPARTS], total, t0;
  fpt_proc_t *p = NULL;
  static const char *const settings[] = {"workers=4", NULL};

  if (fpe_env_init(&env, "order", "rules-core", NPARTS) != 0) goto out;
  t0 = fpt_now_ms();
  if (!FPT_CHECK(fpe_produce(env.in, &g, &sent) == 0, "produce the input")) goto out;
  total = fpe_end_offsets(&env, end);
  fpt_note("produced %" PRId64 " mentions and %" PRId64 " malformed messages in %" PRId64 " ms",
           sent.valid, sent.bad, fpt_now_ms() - t0);
  FPT_CHECK_EQ_INT(total, sent.valid + sent.bad);

  t0 = fpt_now_ms();
  p = fpe_engine_start(&env, settings, NULL);
  if (!FPT_CHECK(p != NULL, "engine started")) goto out;
  int caught_up = fpe_wait_committed(&env, end, p, 100000);
  FPT_CHECK(caught_up, "committed offsets reached the end of all %d partitions", NPARTS);
  fpt_note("engine caught up in %" PRId64 " ms", fpt_now_ms() - t0);
  FPT_CHECK_EQ_INT(fpt_proc_signal(p, SIGTERM), 0);
  FPT_CHECK_EQ_INT(fpt_proc_wait(p, 10000), 0);
  if (!caught_up) fpt_proc_dump_log(p, 60);

  /* committed offsets are the end offsets, also after the stop */
  FPT_CHECK_EQ_INT(fpe_committed(&env, committed), total);
  for (int i = 0; i < NPARTS; i++) FPT_CHECK_EQ_INT(committed[i], end[i]);

  /* no mention evaluated out of order */
  fpe_events_t *ev = fpe_events_read(env.out);
  if (FPT_CHECK(ev != NULL, "read the incidents")) {
    FPT_CHECK(ev->complete, "incident topic read to the end");
    FPT_CHECK_EQ_INT(fpe_events_count_rule(ev, "order.violation"), 0);
    FPT_CHECK_EQ_INT(ev->conflicts, 0);
    FPT_CHECK(fpe_events_count_rule(ev, "core.alarm") > 0, "the alarm rule produced incidents");
    fpt_note("%zu incident events (%zu records)", ev->n, ev->records);
  }
  fpe_events_free(ev);

  /* every valid mention counted exactly once, in its brand and hour */
  {
    size_t ngot = 0, nwant = 0;
    char **got = fpe_windows_dump(&env, "core.count", &ngot), **want = expected_counts(&nwant);
    int64_t sum = 0;
    if (got && want) {
      qsort(want, nwant, sizeof(*want), cmp_line);
      fpe_lines_check_equal(got, ngot, want, nwant, "core.count buckets");
      for (size_t i = 0; i < ngot; i++) sum += strtoll(strrchr(got[i], ' ') + 1, NULL, 10);
      FPT_CHECK_EQ_INT(sum, sent.valid);
    } else {
      FPT_FAIL("window dump or model unavailable");
    }
    fpe_lines_free(got, ngot);
    fpe_lines_free(want, nwant);

    int64_t dead = fpe_topic_count(env.dlq);
    FPT_CHECK_EQ_INT(dead, sent.bad);
    FPT_CHECK_EQ_INT(dead + sum, total);
  }
out:
  fpt_proc_free(p);
  fpe_env_cleanup(&env);
}

int main(void) {
  fpt_run("100k mentions, 8 partitions, 4 workers: in order, each counted once, all committed",
          test_order_and_accounting);
  return fpt_done();
}
