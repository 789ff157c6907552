/*
 * kafka tier: kill -9 of the engine mid-stream, three times, then a restart each time.
 *
 * 100,000 mentions (and 100 malformed messages) over 8 partitions. A reference run
 * (own group, Redis prefix and output topics, same input topic) goes through them without
 * interruption. The crash run is killed with SIGKILL once the group has committed about
 * 25%, 50% and 75% of the input, and restarted after each kill. The engine had applied
 * windows and lifecycle steps beyond the committed offsets (checked through the Redis
 * fences), so every restart replays: the fence and memo must make the replay exact.
 *
 * At the end: committed = end of every partition; the window hashes of every rule (bucket
 * fields of every key) identical to the reference's; incident events identical to the
 * reference's except byte-identical duplicates (same event_id, same bytes); every malformed
 * message dead-lettered (duplicates allowed).
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
#define T0 ((int64_t)1795600800000LL) /* 2026-11-25T10:00:00Z */
#define STEP_MS 100
/* (the generator's alarm_until: no ALARM in the last 20,000 mentions, 33 min of event time,
 * so every incident is due, and resolved, long before the input ends) */

/* A killed member keeps its partitions until its session times out: keep that short. Small
 * runs and frequent commits keep the engine mid-stream when a kill lands: with 4000-mention
 * runs and 1 s commits it went through the 100,000 mentions in about a second and had
 * committed everything it applied by the time the test saw 25% committed, so nothing was
 * left to replay. */
static const char *const settings[] = {"workers=4", "consumer.session.timeout.ms=6000",
                                       "consumer.heartbeat.interval.ms=500", "batch.size=100",
                                       "commit.interval.ms=200", NULL};

static void test_crash(void) {
  fpe_env_t env, ref;
  fpe_gen_t g = {0, NMENTIONS, NBRANDS, T0, STEP_MS, 1000, NMENTIONS - 20000};
  fpe_gen_count_t sent = {0, 0, 0};
  int64_t end[NPARTS], total, replayed_total = 0;
  static const double kill_at[] = {0.25, 0.50, 0.75};
  fpt_proc_t *p = NULL;
  int ref_ok = 0;

  memset(&ref, 0, sizeof(ref));
  if (fpe_env_init(&env, "crash", "rules-core", NPARTS) != 0) goto out;
  if (fpe_env_init_sibling(&ref, &env, "crash-ref") != 0) goto out;
  if (!FPT_CHECK(fpe_produce(env.in, &g, &sent) == 0, "produce the input")) goto out;
  total = fpe_end_offsets(&env, end);
  FPT_CHECK_EQ_INT(total, sent.valid + sent.bad);

  int64_t t0 = fpt_now_ms();
  ref_ok = fpe_run_to_end(&ref, settings, 90000) == 0;
  fpt_note("reference run: %" PRId64 " ms", fpt_now_ms() - t0);
  if (!ref_ok) goto out;

  for (size_t k = 0; k < sizeof(kill_at) / sizeof(kill_at[0]); k++) {
    int64_t target = (int64_t)(kill_at[k] * (double)total), replay = 0;
    p = fpe_engine_start(&env, settings, NULL);
    if (!FPT_CHECK(p != NULL, "engine %zu started", k)) goto out;
    int reached = fpe_wait_committed_sum(&env, target, p, 60000);
    FPT_CHECK(reached, "kill %zu: committed reached %" PRId64 " of %" PRId64, k, target, total);
    FPT_CHECK(fpt_proc_running(p), "engine %zu still running before the kill", k);
    if (!reached) fpt_proc_dump_log(p, 40);
    FPT_CHECK_EQ_INT(fpt_proc_kill(p), 128 + SIGKILL);
    fpt_proc_free(p);
    p = NULL;
    /* how far the dead engine got in Redis beyond what the group committed */
    if ((replay = fpe_applied_uncommitted(&env)) < 0) replay = 0;
    replayed_total += replay;
    fpt_note("kill %zu at committed >= %" PRId64 ": %" PRId64 " offsets applied in Redis beyond "
             "the committed ones (to be replayed)", k, target, replay);
  }
  FPT_CHECK(replayed_total > 0, "the kills left applied-but-uncommitted offsets to replay");

  p = fpe_engine_start(&env, settings, NULL);
  if (!FPT_CHECK(p != NULL, "final engine started")) goto out;
  FPT_CHECK(fpe_wait_assigned(p, 30000), "final engine joined the group"); /* before SIGTERM */
  int caught_up = fpe_wait_committed(&env, end, p, 90000);
  FPT_CHECK(caught_up, "after the restarts, committed reached the end of every partition");
  FPT_CHECK_EQ_INT(fpt_proc_signal(p, SIGTERM), 0);
  FPT_CHECK_EQ_INT(fpt_proc_wait(p, 10000), 0);
  if (!caught_up) fpt_proc_dump_log(p, 60);

  fpe_windows_check_equal(&env, &ref, "core.count");
  fpe_windows_check_equal(&env, &ref, "core.alarm");
  fpe_windows_check_equal(&env, &ref, "core.resolve");
  FPT_CHECK_EQ_INT(fpe_windows_sum(&env, "core.count"), sent.valid);
  {
    fpe_events_t *got = fpe_events_read(env.out), *want = fpe_events_read(ref.out);
    if (FPT_CHECK(got && want, "read both incident topics")) {
      fpe_events_check_equal(got, want);
      FPT_CHECK(want->n > 0, "the reference has incidents");
      FPT_CHECK(fpe_events_count_status(want, "resolved") > 0, "the reference has resolutions (%zu)",
                fpe_events_count_status(want, "resolved"));
      FPT_CHECK_EQ_INT(fpe_events_count_rule(got, "order.violation"), 0);
      fpt_note("incidents: %zu distinct, %zu records after the crashes (reference %zu)", got->n,
               got->records, want->n);
    }
    fpe_events_free(got);
    fpe_events_free(want);
  }
  {
    int64_t records = 0;
    FPT_CHECK_EQ_INT(fpe_dlq_distinct(env.dlq, &records), sent.bad);
    fpt_note("dead letters: %" PRId64 " records for %" PRId64 " malformed messages", records, sent.bad);
  }
out:
  fpt_proc_free(p);
  fpe_env_cleanup(&ref);
  fpe_env_cleanup(&env);
}

int main(void) {
  fpt_run("kill -9 at 25/50/75% and restart: windows and incidents as if uninterrupted", test_crash);
  return fpt_done();
}
