/*
 * kafka tier: delivery.mode=exactly-once survives kill -9: a read_committed consumer of the
 * outputs sees every incident event and dead letter of an uninterrupted run exactly once.
 *
 * 100,000 mentions (and 100 malformed messages) over 4 partitions; the rule of rules-resolve/
 * opens, escalates and resolves incidents (resolutions found by sweeps and by the next
 * signal), so every kind of lifecycle step and both kinds of output are in transactions. A
 * reference run (own group, prefix and output topics, same input, exactly-once too) goes
 * through the input without interruption. The crash run is killed with SIGKILL twice, once
 * the group has committed about 30% and 65% of the input and an output transaction is open
 * with records in it, and restarted after each kill. Every run uses the same instance.id, as
 * a deployment must (docs/delivery.md): the restarted producer has the dead one's
 * transactional.id, so initialising it aborts the dead one's open transaction at once
 * (otherwise it would hold back the outputs' last stable offset, and with it every later
 * output, until the broker times it out). The dead engine had applied windows and lifecycle
 * steps in Redis beyond the committed offsets and its outputs were aborted: the replay must
 * produce them again from the memo, byte for byte.
 *
 * At the end: no transaction left open on either output topic (each dead transaction was
 * fenced and aborted by the next instance, the last one committed by a clean stop); incident
 * events identical to the reference's, with no duplicate record at all (read_committed);
 * every malformed message dead-lettered exactly once; window hashes identical.
 */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "enginelib.h"

#define NMENTIONS 100000
#define NPARTS 4
#define NBRANDS 64
#define T0 ((int64_t)1795600800000LL) /* 2026-11-25T10:00:00Z */
#define STEP_MS 100                    /* 100,000 mentions: 167 min of event time */

static char instance[64];
/* A killed member keeps its partitions until its session times out: keep that short.
 * Runs of 50 mentions and transactions of 200 ms: with the defaults the engine took the
 * whole input in about a second, a transaction could cover all of it before the test saw
 * 30% committed, and both kills landed on an idle engine with nothing to replay (seen in CI,
 * also with 100,000 mentions). Small runs keep it busy for several seconds, with a little
 * applied but not yet committed at every moment. */
static const char *settings[] = {"delivery.mode=exactly-once", "workers=2",
                                 "consumer.session.timeout.ms=6000",
                                 "consumer.heartbeat.interval.ms=500", "commit.interval.ms=200", "batch.size=50",
                                 instance, NULL};

/* The end offset of partition 0 of @p topic as a consumer with @p isolation sees it: the
 * last stable offset for read_committed, the high watermark for read_uncommitted. -1 on
 * failure (recorded). */
static int64_t end_offset(const char *topic, const char *isolation) {
  rd_kafka_conf_t *conf = fpt_kafka_conf();
  rd_kafka_t *rk;
  char err[256];
  int64_t lo = -1, hi = -1;
  rd_kafka_resp_err_t kerr;
  if (!conf) return -1;
  if (rd_kafka_conf_set(conf, "isolation.level", isolation, err, sizeof(err)) != RD_KAFKA_CONF_OK ||
      rd_kafka_conf_set(conf, "group.id", "fptest-eos-probe", err, sizeof(err)) != RD_KAFKA_CONF_OK ||
      !(rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err)))) {
    FPT_FAIL("probe consumer: %s", err);
    return -1;
  }
  if ((kerr = rd_kafka_query_watermark_offsets(rk, topic, 0, &lo, &hi, 10000))) {
    FPT_FAIL("end offsets of %s: %s", topic, rd_kafka_err2str(kerr));
    hi = -1;
  }
  rd_kafka_destroy(rk);
  return hi;
}

/* Records (and markers) of @p topic that an open transaction holds back from read_committed
 * consumers. */
static int64_t held_back(const char *topic) {
  int64_t lso = end_offset(topic, "read_committed"), hw = end_offset(topic, "read_uncommitted");
  return lso < 0 || hw < 0 ? -1 : hw - lso;
}

static int txn_open_with_records(void *arg) {
  const fpe_env_t *env = arg;
  return held_back(env->out) > 0 || held_back(env->dlq) > 0;
}

static int applied_uncommitted(void *arg) { return fpe_applied_uncommitted(arg) > 0; }

static void test_exactly_once(void) {
  fpe_env_t env, ref;
  fpe_gen_t g = {0, NMENTIONS, NBRANDS, T0, STEP_MS, 1000, NMENTIONS - 4000};
  fpe_gen_count_t sent = {0, 0, 0};
  int64_t end[NPARTS], total, replayed_total = 0;
  static const double kill_at[] = {0.30, 0.65};
  fpt_proc_t *p = NULL;
  int held = 0;

  snprintf(instance, sizeof(instance), "instance.id=eos-%d", (int)getpid());
  memset(&ref, 0, sizeof(ref));
  if (fpe_env_init(&env, "eos", "rules-resolve", NPARTS) != 0) goto out;
  if (fpe_env_init_sibling(&ref, &env, "eos-ref") != 0) goto out;
  if (!FPT_CHECK(fpe_produce(env.in, &g, &sent) == 0, "produce the input")) goto out;
  total = fpe_end_offsets(&env, end);
  FPT_CHECK_EQ_INT(total, sent.valid + sent.bad);
  if (fpe_run_to_end(&ref, settings, 60000) != 0) goto out;

  for (size_t k = 0; k < sizeof(kill_at) / sizeof(kill_at[0]); k++) {
    int64_t target = (int64_t)(kill_at[k] * (double)total), replay = 0;
    p = fpe_engine_start(&env, settings, NULL);
    if (!FPT_CHECK(p != NULL, "engine %zu started", k)) goto out;
    int reached = fpe_wait_committed_sum(&env, target, p, 60000);
    FPT_CHECK(reached, "kill %zu: committed reached %" PRId64 " of %" PRId64, k, target, total);
    if (!reached) fpt_proc_dump_log(p, 40);
    /* kill while a transaction holds outputs, so that the restart must fence and replay it
     * (most transactions do), else at least while Redis holds offsets applied beyond the
     * committed ones. Not waiting long for the first: the engine drains the rest of the input
     * in a few seconds, and a kill once it is idle leaves nothing to replay (a CI run once
     * had both kills land there after a 5 s wait). If neither shows up the kill is still a
     * valid one. */
    if (!fpt_wait_until(txn_open_with_records, &env, 1000))
      fpt_wait_until(applied_uncommitted, &env, 4000);
    FPT_CHECK(fpt_proc_running(p), "engine %zu still running before the kill", k);
    FPT_CHECK_EQ_INT(fpt_proc_kill(p), 128 + SIGKILL);
    fpt_proc_free(p);
    p = NULL;
    if (txn_open_with_records(&env)) held++;
    /* how far the dead engine got in Redis beyond what the group committed */
    if ((replay = fpe_applied_uncommitted(&env)) < 0) replay = 0;
    replayed_total += replay;
    fpt_note("kill %zu at committed >= %" PRId64 ": %" PRId64 " offsets applied in Redis beyond the "
             "committed ones; output records held back by the dead transaction: %" PRId64 " + %" PRId64,
             k, target, replay, held_back(env.out), held_back(env.dlq));
  }
  FPT_CHECK(replayed_total > 0, "the kills left applied-but-uncommitted offsets to replay");
  fpt_note("%d of 2 kills left an open transaction with records", held);

  p = fpe_engine_start(&env, settings, NULL);
  if (!FPT_CHECK(p != NULL, "final engine started")) goto out;
  /* the killed engines may have finished the input already: committed is then at the end at
   * once, so wait for this one to be up before stopping it */
  FPT_CHECK(fpe_wait_assigned(p, 30000), "final engine joined the group");
  int caught_up = fpe_wait_committed(&env, end, p, 60000);
  FPT_CHECK(caught_up, "after the restarts, committed reached the end of every partition");
  FPT_CHECK_EQ_INT(fpt_proc_signal(p, SIGTERM), 0);
  FPT_CHECK_EQ_INT(fpt_proc_wait(p, 10000), 0);
  if (!caught_up) fpt_proc_dump_log(p, 60);

  /* the restarts fenced the dead transactions: nothing is held back from read_committed */
  FPT_CHECK_EQ_INT(held_back(env.out), 0);
  FPT_CHECK_EQ_INT(held_back(env.dlq), 0);
  {
    fpe_events_t *got = fpe_events_read(env.out), *want = fpe_events_read(ref.out);
    if (FPT_CHECK(got && want, "read both incident topics")) {
      fpe_events_check_equal(got, want);
      FPT_CHECK(got->records == got->n, "no duplicate: %zu records for %zu events", got->records, got->n);
      FPT_CHECK(want->n > 0, "the reference has incidents");
      FPT_CHECK(fpe_events_count_status(want, "resolved") > 0, "the reference has resolutions (%zu)",
                fpe_events_count_status(want, "resolved"));
      fpt_note("incidents: %zu events (reference %zu)", got->n, want->n);
    }
    fpe_events_free(got);
    fpe_events_free(want);
  }
  {
    int64_t records = 0;
    FPT_CHECK_EQ_INT(fpe_dlq_distinct(env.dlq, &records), sent.bad);
    FPT_CHECK_EQ_INT(records, sent.bad);
  }
  fpe_windows_check_equal(&env, &ref, "core.alarm");
out:
  fpt_proc_free(p);
  fpe_env_cleanup(&ref);
  fpe_env_cleanup(&env);
}

int main(void) {
  fpt_run("exactly-once: kill -9 twice, restart: every output once, as if uninterrupted",
          test_exactly_once);
  return fpt_done();
}
