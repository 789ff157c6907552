/*
 * kafka tier: Redis down for 10 s under load (kill -9, then a restart on the same data;
 * the test Redis runs with appendfsync always, so nothing it acknowledged is lost).
 *
 * The test produces 100,000 mentions (and 100 malformed messages) in paced chunks while one
 * engine (4 workers) consumes them. About a fifth of the way in, Redis is killed; the test
 * keeps producing for 10 s (by the clock: a fault duration), then starts Redis again and
 * produces the rest. While Redis is down the engine must pause: the committed offsets stop
 * moving once what was acknowledged before the kill is committed. It logs "state store
 * unavailable" at most once per worker for the outage, keeps running, resumes, and loses
 * nothing: committed = end, windows and incidents equal to a reference run (own group,
 * prefix and output topics, same input, no outage).
 */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "enginelib.h"

#define NMENTIONS 100000
#define NCHUNKS 50
#define CHUNK (NMENTIONS / NCHUNKS)
#define PACE_MS 400 /* between chunks: the stream lasts about 20 s */
#define KILL_AFTER_CHUNK 10
#define OUTAGE_MS 10000
#define NPARTS 8
#define NBRANDS 64
#define NWORKERS 4
#define T0 ((int64_t)1795600800000LL) /* 2026-11-25T10:00:00Z */
#define STEP_MS 100
/* no ALARM in the last 20,000 mentions (33 min of event time): every incident is due, and
 * resolved, long before the input ends, whatever the timing of the engine's last runs */
#define ALARM_UNTIL (NMENTIONS - 20000)

static const char *const settings[] = {"workers=4", "consumer.session.timeout.ms=6000",
                                       "consumer.heartbeat.interval.ms=500", NULL};

static void test_redis_outage(void) {
  fpe_env_t env, ref;
  fpe_gen_count_t sent = {0, 0, 0};
  int64_t end[NPARTS], total, outage_start = 0, committed_early = -1, committed_late = -1;
  fpt_proc_t *p = NULL;
  int c = 0, redis_down = 0;

  memset(&ref, 0, sizeof(ref));
  if (fpe_env_init(&env, "outage", "rules-core", NPARTS) != 0) goto out;
  p = fpe_engine_start(&env, settings, NULL);
  if (!FPT_CHECK(p != NULL, "engine started")) goto out;
  FPT_CHECK(fpe_wait_assigned(p, 30000), "engine got partitions");

  while (c < NCHUNKS || redis_down) {
    int64_t next = fpt_now_ms() + PACE_MS;
    if (c < NCHUNKS) {
      fpe_gen_t g = {c * CHUNK, CHUNK, NBRANDS, T0, STEP_MS, 1000, ALARM_UNTIL};
      if (!FPT_CHECK(fpe_produce(env.in, &g, &sent) == 0, "produce chunk %d", c)) goto out;
      c++;
    }
    if (c == KILL_AFTER_CHUNK && !outage_start) {
      FPT_CHECK_EQ_INT(fpt_services_cmd("kill-redis"), 0);
      outage_start = fpt_now_ms();
      redis_down = 1;
      fpt_note("Redis killed after %" PRId64 " mentions produced", sent.valid);
    }
    if (redis_down) {
      int64_t down_for = fpt_now_ms() - outage_start;
      /* 3 s in, what was acknowledged before the kill is committed; from then on, nothing */
      if (committed_early < 0 && down_for >= 3000) committed_early = fpe_committed(&env, NULL);
      if (down_for >= OUTAGE_MS) {
        committed_late = fpe_committed(&env, NULL);
        FPT_CHECK(fpt_proc_running(p), "engine still running at the end of the outage");
        FPT_CHECK_EQ_INT(fpt_services_cmd("start-redis"), 0);
        redis_down = 0;
        fpt_note("Redis started again after %" PRId64 " ms; %" PRId64 " mentions produced",
                 fpt_now_ms() - outage_start, sent.valid);
      }
    }
    while (fpt_now_ms() < next) usleep(10000); /* pacing the producer, not a correctness wait */
  }
  FPT_CHECK(committed_early >= 0 && committed_early == committed_late,
            "no offset committed while Redis was down (%" PRId64 " at 3 s, %" PRId64 " at 10 s)",
            committed_early, committed_late);

  total = fpe_end_offsets(&env, end);
  FPT_CHECK_EQ_INT(total, sent.valid + sent.bad);
  int caught_up = fpe_wait_committed(&env, end, p, 90000);
  FPT_CHECK(caught_up, "committed offsets reached the end of every partition after the outage");
  FPT_CHECK_EQ_INT(fpt_proc_signal(p, SIGTERM), 0);
  FPT_CHECK_EQ_INT(fpt_proc_wait(p, 10000), 0);
  {
    int unavailable = fpe_log_count(p, "state store unavailable");
    int healthy = fpe_log_count(p, "healthy again");
    FPT_CHECK(unavailable >= 1 && unavailable <= NWORKERS,
              "\"state store unavailable\" logged %d time(s) for one outage (1..%d)", unavailable, NWORKERS);
    FPT_CHECK(healthy >= 1, "the engine logged its recovery (%d lines)", healthy);
    fpt_note("log: %d \"state store unavailable\" line(s), %d recovery line(s)", unavailable, healthy);
    if (!caught_up || unavailable < 1 || unavailable > NWORKERS) fpt_proc_dump_log(p, 60);
  }

  if (fpe_env_init_sibling(&ref, &env, "outage-ref") != 0) goto out;
  if (fpe_run_to_end(&ref, settings, 90000) != 0) goto out;

  FPT_CHECK_EQ_INT(fpe_windows_sum(&env, "core.count"), sent.valid);
  fpe_windows_check_equal(&env, &ref, "core.count");
  fpe_windows_check_equal(&env, &ref, "core.alarm");
  fpe_windows_check_equal(&env, &ref, "core.resolve");
  {
    fpe_events_t *got = fpe_events_read(env.out), *want = fpe_events_read(ref.out);
    if (FPT_CHECK(got && want, "read both incident topics")) {
      fpe_events_check_equal(got, want);
      FPT_CHECK(want->n > 0, "the reference has incidents");
      FPT_CHECK(fpe_events_count_status(want, "resolved") > 0, "the reference has resolutions (%zu)",
                fpe_events_count_status(want, "resolved"));
      fpt_note("incidents: %zu distinct in %zu records; reference %zu", got->n, got->records, want->n);
    }
    fpe_events_free(got);
    fpe_events_free(want);
  }
  FPT_CHECK_EQ_INT(fpe_dlq_distinct(env.dlq, NULL), sent.bad);
out:
  if (redis_down) fpt_services_cmd("start-redis");
  fpt_proc_free(p);
  fpe_env_cleanup(&ref);
  fpe_env_cleanup(&env);
}

int main(void) {
  fpt_run("Redis down 10 s under load: pause, one log line, resume, nothing lost", test_redis_outage);
  return fpt_done();
}
