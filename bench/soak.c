/*
 * soak.c - the soak's C tool (driven by bench/soak.py, built by bench/soak.sh). Subcommands:
 *
 *   topics   BOOTSTRAP NAME:PARTS...        create topics (already existing ones are fine)
 *   produce  BOOTSTRAP TOPIC [options]      generated mentions (engine/gen.h, the benchmark
 *            stream) with unique ids "<prefix>-<seq>", never recycled:
 *            --n N                 preload N mentions as fast as possible (calibration), or
 *            --rate R --secs S     paced: R mentions/s for S seconds (until SIGTERM if S = 0)
 *            --prefix P --seed S   id prefix and generator seed
 *            While running, prints "P <wall_ms> <sent> <acked> <failed> <queued>" every second;
 *            at the end, after flushing, one JSON object. The producer is idempotent with a
 *            10-minute message timeout, so a broker restart delays deliveries but neither
 *            loses nor duplicates a mention.
 *   offsets  BOOTSTRAP GROUP TOPIC PARTS [PERIOD_MS]
 *            prints "O <wall_ms> <end> <committed>" (sums over the partitions; -1 when the
 *            broker did not answer) every PERIOD_MS (default 1000) until stdin closes or SIGTERM
 *   check    BOOTSTRAP GROUP TOPIC PARTS    per-partition committed and end offsets (JSON)
 *   count    HOST PORT MATCH                SCAN MATCH, then the sum of every numeric field of
 *            every hash found (the buckets of a count window): JSON {"keys":K,"sum":S}
 *
 * Invariant: every mention produced has a distinct id and a distinct position in the
 * generator's stream, so "nothing lost" can be checked by counting, never by sampling.
 */
#include <errno.h>
#include <hiredis/hiredis.h>
#include <librdkafka/rdkafka.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gen.h"
#include "stream.h"
#include "util.h"


static volatile sig_atomic_t g_stop;
static void on_signal(int sig) {
  (void)sig;
  g_stop = 1;
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "soak: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  exit(1);
}

static fp_gen_t *soak_gen(uint64_t seed, const char *prefix) { return bench_stream_new(seed, prefix); }

static rd_kafka_t *kafka_new(rd_kafka_type_t type, const char *bootstrap, const char *const *kv,
                             rd_kafka_conf_t *c) {
  char err[512];
  if (!c) c = rd_kafka_conf_new();
  if (rd_kafka_conf_set(c, "bootstrap.servers", bootstrap, err, sizeof(err)) != RD_KAFKA_CONF_OK)
    die("%s", err);
  for (; kv && kv[0]; kv += 2)
    if (rd_kafka_conf_set(c, kv[0], kv[1], err, sizeof(err)) != RD_KAFKA_CONF_OK) die("%s", err);
  rd_kafka_t *rk = rd_kafka_new(type, c, err, sizeof(err));
  if (!rk) die("%s", err);
  return rk;
}

/* ---- topics ------------------------------------------------------------------------------ */

static int cmd_topics(int argc, char **argv) {
  if (argc < 2) die("%s", "usage: topics BOOTSTRAP NAME:PARTS...");
  rd_kafka_t *rk = kafka_new(RD_KAFKA_PRODUCER, argv[0], NULL, NULL);
  size_t n = (size_t)argc - 1;
  rd_kafka_NewTopic_t **nt = calloc(n, sizeof(*nt));
  char err[512], names[64][256];
  if (n > 64) die("%s", "too many topics");
  for (size_t i = 0; i < n; i++) {
    snprintf(names[i], sizeof(names[i]), "%s", argv[i + 1]);
    char *colon = strchr(names[i], ':');
    int parts = 1;
    if (colon) {
      *colon = '\0';
      parts = (int)strtol(colon + 1, NULL, 10);
    }
    nt[i] = rd_kafka_NewTopic_new(names[i], parts, 1, err, sizeof(err));
    if (!nt[i]) die("%s", err);
  }
  rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
  rd_kafka_CreateTopics(rk, nt, n, NULL, q);
  rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 30000);
  if (!ev) die("%s", "CreateTopics timed out");
  int rc = 0;
  size_t cnt = 0;
  const rd_kafka_topic_result_t **tr =
      rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &cnt);
  for (size_t i = 0; i < cnt; i++) {
    rd_kafka_resp_err_t e = rd_kafka_topic_result_error(tr[i]);
    if (e && e != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
      fprintf(stderr, "soak: topic %s: %s\n", rd_kafka_topic_result_name(tr[i]),
              rd_kafka_topic_result_error_string(tr[i]));
      rc = 1;
    }
  }
  rd_kafka_event_destroy(ev);
  for (size_t i = 0; i < n; i++) rd_kafka_NewTopic_destroy(nt[i]);
  free(nt);
  rd_kafka_queue_destroy(q);
  /* wait until the metadata shows every topic with a leader for every partition */
  for (int tries = 0; tries < 100 && !rc; tries++) {
    const struct rd_kafka_metadata *md;
    size_t ok = 0;
    if (rd_kafka_metadata(rk, 1, NULL, &md, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR) {
      for (size_t i = 0; i < n; i++)
        for (int t = 0; t < md->topic_cnt; t++) {
          if (strcmp(md->topics[t].topic, names[i]) || md->topics[t].err || md->topics[t].partition_cnt < 1)
            continue;
          int led = 1;
          for (int p = 0; p < md->topics[t].partition_cnt; p++)
            if (md->topics[t].partitions[p].leader < 0) led = 0;
          ok += (size_t)led;
        }
      rd_kafka_metadata_destroy(md);
      if (ok == n) break;
    }
    usleep(100000);
  }
  rd_kafka_destroy(rk);
  return rc;
}

/* ---- produce ----------------------------------------------------------------------------- */

typedef struct {
  long long acked, failed;
  char first_err[256];
} dr_state_t;

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
  dr_state_t *s = opaque;
  (void)rk;
  if (m->err) {
    if (!s->failed) snprintf(s->first_err, sizeof(s->first_err), "%s", rd_kafka_err2str(m->err));
    s->failed++;
  } else {
    s->acked++;
  }
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
  (void)opaque;
  if (err == RD_KAFKA_RESP_ERR__FATAL) {
    char buf[512];
    rd_kafka_fatal_error(rk, buf, sizeof(buf));
    fprintf(stderr, "soak produce: FATAL %s\n", buf);
  }
  (void)reason;
}

static int cmd_produce(int argc, char **argv) {
  if (argc < 2) die("%s", "usage: produce BOOTSTRAP TOPIC [--n N | --rate R --secs S] [--prefix P] [--seed S]");
  const char *bootstrap = argv[0], *topic = argv[1], *prefix = "s";
  long long n = -1;
  double rate = 0, secs = 0;
  uint64_t seed = 42;
  for (int i = 2; i < argc; i++) {
    if (!strcmp(argv[i], "--n") && i + 1 < argc) n = strtoll(argv[++i], NULL, 10);
    else if (!strcmp(argv[i], "--rate") && i + 1 < argc) rate = strtod(argv[++i], NULL);
    else if (!strcmp(argv[i], "--secs") && i + 1 < argc) secs = strtod(argv[++i], NULL);
    else if (!strcmp(argv[i], "--prefix") && i + 1 < argc) prefix = argv[++i];
    else if (!strcmp(argv[i], "--seed") && i + 1 < argc) seed = strtoull(argv[++i], NULL, 10);
    else die("unknown produce option %s", argv[i]);
  }
  if (n < 0 && rate <= 0) die("%s", "produce: --n or --rate");
  signal(SIGTERM, on_signal);
  signal(SIGINT, on_signal);

  dr_state_t dr = {0};
  rd_kafka_conf_t *c = rd_kafka_conf_new();
  rd_kafka_conf_set_dr_msg_cb(c, dr_cb);
  rd_kafka_conf_set_error_cb(c, error_cb);
  rd_kafka_conf_set_opaque(c, &dr);
  const char *kv[] = {"linger.ms", n >= 0 ? "50" : "5", "batch.size", "1000000", "compression.type", "lz4",
                      "enable.idempotence", "true", "acks", "all", "message.timeout.ms", "600000",
                      "queue.buffering.max.messages", "2000000", "queue.buffering.max.kbytes", "2097152",
                      "reconnect.backoff.max.ms", "1000", NULL};
  rd_kafka_t *rk = kafka_new(RD_KAFKA_PRODUCER, bootstrap, kv, c);

  fp_gen_t *g = soak_gen(seed, prefix);
  fp_buf_t buf = {0};
  const char *key;
  int crisis;
  long long sent = 0;
  int64_t t0 = fp_mono_ns(), next_status = t0;
  for (;;) {
    if (g_stop) break;
    if (n >= 0 && sent >= n) break;
    int64_t now = fp_mono_ns();
    if (n < 0) {
      if (secs > 0 && now - t0 >= (int64_t)(secs * 1e9)) break;
      int64_t due = t0 + (int64_t)((double)sent / rate * 1e9);
      if (now < due) {
        int64_t d = due - now;
        if (d > 2000000) d = 2000000;
        rd_kafka_poll(rk, 0);
        struct timespec ts = {0, (long)d};
        nanosleep(&ts, NULL);
        goto status;
      }
    }
    if (!fp_gen_next(g, &buf, &key, &crisis)) break;
    for (;;) {
      rd_kafka_resp_err_t e = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, strlen(key)),
                                                RD_KAFKA_V_VALUE(buf.data, buf.len),
                                                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
      if (!e) break;
      if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL) die("produce: %s", rd_kafka_err2str(e));
      rd_kafka_poll(rk, 10);
    }
    sent++;
    if ((sent & 255) == 0) rd_kafka_poll(rk, 0);
  status:
    if (fp_mono_ns() >= next_status) {
      rd_kafka_poll(rk, 0);
      printf("P %lld %lld %lld %lld %d\n", (long long)fp_now_ms(), sent, dr.acked, dr.failed, rd_kafka_outq_len(rk));
      fflush(stdout);
      next_status += 1000000000LL;
    }
  }
  double send_s = (double)(fp_mono_ns() - t0) / 1e9;
  /* flush: deliveries may wait for a broker that is restarting */
  int64_t flush_end = fp_mono_ns() + 300000000000LL;
  while (rd_kafka_outq_len(rk) > 0 && fp_mono_ns() < flush_end) {
    rd_kafka_flush(rk, 1000);
    printf("P %lld %lld %lld %lld %d\n", (long long)fp_now_ms(), sent, dr.acked, dr.failed, rd_kafka_outq_len(rk));
    fflush(stdout);
  }
  double total_s = (double)(fp_mono_ns() - t0) / 1e9;
  char fatal[512] = "";
  rd_kafka_fatal_error(rk, fatal, sizeof(fatal));
  printf("{\"produced\":%lld,\"acked\":%lld,\"failed\":%lld,\"unflushed\":%d,\"send_s\":%.3f,\"total_s\":%.3f,"
         "\"rate\":%.1f,\"first_error\":\"%s\",\"fatal\":\"%s\"}\n",
         sent, dr.acked, dr.failed, rd_kafka_outq_len(rk), send_s, total_s, send_s > 0 ? (double)sent / send_s : 0,
         dr.first_err, fatal);
  fflush(stdout);
  int rc = dr.failed || rd_kafka_outq_len(rk) > 0 || fatal[0] ? 1 : 0;
  fp_buf_free(&buf);
  fp_gen_destroy(g);
  rd_kafka_destroy(rk);
  return rc;
}

/* ---- offsets and check ------------------------------------------------------------------- */

/* Committed and end offsets of every partition; -2 where the broker did not answer. */
static void offsets(rd_kafka_t *rk, const char *topic, int parts, long long *committed, long long *end) {
  rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(parts);
  for (int p = 0; p < parts; p++) {
    rd_kafka_topic_partition_list_add(l, topic, p);
    committed[p] = end[p] = -2;
  }
  if (rd_kafka_committed(rk, l, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR)
    for (int p = 0; p < parts; p++)
      if (!l->elems[p].err) committed[p] = l->elems[p].offset;
  rd_kafka_topic_partition_list_destroy(l);
  for (int p = 0; p < parts; p++) {
    int64_t lo = 0, hi = 0;
    if (rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR) end[p] = hi;
  }
}

static rd_kafka_t *offsets_client(const char *bootstrap, const char *group) {
  const char *kv[] = {"group.id", group, "enable.auto.commit", "false", "reconnect.backoff.max.ms", "1000", NULL};
  return kafka_new(RD_KAFKA_CONSUMER, bootstrap, kv, NULL);
}

static int cmd_offsets(int argc, char **argv) {
  if (argc < 4) die("%s", "usage: offsets BOOTSTRAP GROUP TOPIC PARTS [PERIOD_MS]");
  int parts = (int)strtol(argv[3], NULL, 10);
  int period_ms = argc > 4 ? (int)strtol(argv[4], NULL, 10) : 1000;
  if (parts < 1 || parts > 256) die("%s", "bad PARTS");
  if (period_ms < 10 || period_ms > 60000) die("%s", "bad PERIOD_MS");
  signal(SIGTERM, on_signal);
  signal(SIGINT, on_signal);
  rd_kafka_t *rk = offsets_client(argv[0], argv[1]);
  long long committed[256], end[256];
  while (!g_stop) {
    int64_t t = fp_mono_ns();
    offsets(rk, argv[2], parts, committed, end);
    long long cs = 0, es = 0;
    for (int p = 0; p < parts; p++) {
      if (cs >= 0) cs = committed[p] == -2 ? -1 : cs + (committed[p] > 0 ? committed[p] : 0);
      if (es >= 0) es = end[p] == -2 ? -1 : es + end[p];
    }
    printf("O %lld %lld %lld\n", (long long)fp_now_ms(), es, cs);
    if (fflush(stdout) != 0) break;
    /* one line a period (a second by default); stdin closing (the driver went away) ends it too */
    int64_t left_ms = period_ms - (fp_mono_ns() - t) / 1000000;
    if (left_ms > 0) {
      struct pollfd pfd = {0, POLLIN, 0};
      if (poll(&pfd, 1, (int)left_ms) > 0) {
        char b[64];
        if (read(0, b, sizeof(b)) <= 0) break;
      }
    }
  }
  rd_kafka_destroy(rk);
  return 0;
}

static int cmd_check(int argc, char **argv) {
  if (argc < 4) die("%s", "usage: check BOOTSTRAP GROUP TOPIC PARTS");
  int parts = (int)strtol(argv[3], NULL, 10);
  if (parts < 1 || parts > 256) die("%s", "bad PARTS");
  rd_kafka_t *rk = offsets_client(argv[0], argv[1]);
  long long committed[256], end[256];
  offsets(rk, argv[2], parts, committed, end);
  printf("{\"committed\":[");
  for (int p = 0; p < parts; p++) printf("%s%lld", p ? "," : "", committed[p]);
  printf("],\"end\":[");
  for (int p = 0; p < parts; p++) printf("%s%lld", p ? "," : "", end[p]);
  printf("]}\n");
  rd_kafka_destroy(rk);
  return 0;
}

/* ---- count ------------------------------------------------------------------------------- */

static int numeric(const char *f) {
  if (*f == '-') f++;
  if (!*f) return 0;
  for (; *f; f++)
    if (*f < '0' || *f > '9') return 0;
  return 1;
}

static int cmd_count(int argc, char **argv) {
  if (argc < 3) die("%s", "usage: count HOST PORT MATCH");
  struct timeval tv = {10, 0};
  redisContext *c = redisConnectWithTimeout(argv[0], (int)strtol(argv[1], NULL, 10), tv);
  if (!c || c->err) die("redis: %s", c ? c->errstr : "out of memory");
  redisSetTimeout(c, tv);
  char cursor[32] = "0";
  long long keys = 0, sum = 0;
  do {
    redisReply *r = redisCommand(c, "SCAN %s MATCH %s COUNT 1000", cursor, argv[2]);
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2) die("%s", "SCAN failed");
    snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
    for (size_t i = 0; i < r->element[1]->elements; i++) {
      redisReply *h = redisCommand(c, "HGETALL %s", r->element[1]->element[i]->str);
      if (!h || h->type != REDIS_REPLY_ARRAY) die("HGETALL %s failed", r->element[1]->element[i]->str);
      keys++;
      for (size_t j = 0; j + 1 < h->elements; j += 2)
        if (numeric(h->element[j]->str)) sum += strtoll(h->element[j + 1]->str, NULL, 10);
      freeReplyObject(h);
    }
    freeReplyObject(r);
  } while (strcmp(cursor, "0") != 0);
  redisFree(c);
  printf("{\"keys\":%lld,\"sum\":%lld}\n", keys, sum);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: soak topics|produce|offsets|check|count ...\n");
    return 2;
  }
  const char *cmd = argv[1];
  argc -= 2, argv += 2;
  if (!strcmp(cmd, "topics")) return cmd_topics(argc, argv);
  if (!strcmp(cmd, "produce")) return cmd_produce(argc, argv);
  if (!strcmp(cmd, "offsets")) return cmd_offsets(argc, argv);
  if (!strcmp(cmd, "check")) return cmd_check(argc, argv);
  if (!strcmp(cmd, "count")) return cmd_count(argc, argv);
  fprintf(stderr, "soak: unknown command %s\n", cmd);
  return 2;
}
