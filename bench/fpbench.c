/*
 * fpbench.c - the benchmark suite's one C tool (driven by bench/run.py). Subcommands:
 *
 *   topics  BOOTSTRAP NAME:PARTS[:lat]...      create topics (":lat": LogAppendTime stamps)
 *   produce BOOTSTRAP TOPIC [options]          generated mentions (engine/gen.h) into TOPIC:
 *           --n N                   preload N mentions as fast as possible, or
 *           --phases R:S[,R:S...]   paced: R mentions/s for S seconds, phase after phase
 *           --now                   created_at := wall clock at send (latency runs)
 *           --seed S
 *   watch   BOOTSTRAP GROUP TOPIC PARTS PID --target N --timeout S --csv FILE [--min-secs S]
 *           samples the group's committed offsets, the end offsets and the engine's
 *           /proc/PID (utime+stime, VmRSS, VmHWM) every 200 ms into FILE until the
 *           committed offsets reach N (and at least --min-secs passed), or the timeout
 *   latency BOOTSTRAP FROM_MS TOPIC...         incident latency: Kafka log-append time
 *           minus event_time, for events with event_time >= FROM_MS; JSON on stdout
 *   engine  [-s key=value]...                  the engine through the public API (same as
 *           `flashpoint run`), printing fp_engine_stats as JSON on stdout at exit
 *   stages  [--n N] [--redis HOST:PORT] [--rules DIR] [--trivial DIR]
 *           micro-benchmarks of each stage alone; one JSON object per line on stdout
 *
 * Everything prints machine-readable JSON; run.py turns it into RESULTS.md.
 */
#include <errno.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "flashpoint/flashpoint.h"
#include "gen.h"
#include "jarena.h"
#include "lifecycle.h"
#include "mention.h"
#include "rules.h"
#include "sandbox.h"
#include "stream.h"
#include "store.h"
#include "util.h"

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "fpbench: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  exit(1);
}

/* ---- the benchmark stream (stream.h) ----------------------------------------------------- */

static fp_gen_t *bench_gen(uint64_t seed) { return bench_stream_new(seed, "b"); }

/* Overwrites the 13 digits after "created_at": with @p ms (same width, in place). */
static void set_created_at(char *json, int64_t ms) {
  char *p = strstr(json, "\"created_at\":");
  char digits[24];
  if (!p) return;
  p += 13;
  snprintf(digits, sizeof(digits), "%013lld", (long long)ms);
  for (int i = 0; i < 13 && p[i] >= '0' && p[i] <= '9'; i++) p[i] = digits[i];
}

/* ---- Kafka helpers ----------------------------------------------------------------------- */

static rd_kafka_t *kafka_new(rd_kafka_type_t type, const char *bootstrap, const char *const *kv) {
  char err[512];
  rd_kafka_conf_t *c = rd_kafka_conf_new();
  if (rd_kafka_conf_set(c, "bootstrap.servers", bootstrap, err, sizeof(err)) != RD_KAFKA_CONF_OK)
    die("%s", err);
  for (; kv && kv[0]; kv += 2)
    if (rd_kafka_conf_set(c, kv[0], kv[1], err, sizeof(err)) != RD_KAFKA_CONF_OK) die("%s", err);
  rd_kafka_t *rk = rd_kafka_new(type, c, err, sizeof(err));
  if (!rk) die("%s", err);
  return rk;
}

static int cmd_topics(int argc, char **argv) {
  if (argc < 2) die("%s", "usage: topics BOOTSTRAP NAME:PARTS[:lat]...");
  rd_kafka_t *rk = kafka_new(RD_KAFKA_PRODUCER, argv[0], NULL);
  size_t n = (size_t)argc - 1;
  rd_kafka_NewTopic_t **nt = calloc(n, sizeof(*nt));
  char err[512];
  for (size_t i = 0; i < n; i++) {
    char name[256];
    int parts = 1, lat = 0;
    snprintf(name, sizeof(name), "%s", argv[i + 1]);
    char *c1 = strchr(name, ':');
    if (c1) {
      *c1 = '\0';
      parts = (int)strtol(c1 + 1, NULL, 10);
      lat = strstr(c1 + 1, ":lat") != NULL;
    }
    nt[i] = rd_kafka_NewTopic_new(name, parts, 1, err, sizeof(err));
    if (!nt[i]) die("%s", err);
    if (lat) rd_kafka_NewTopic_set_config(nt[i], "message.timestamp.type", "LogAppendTime");
  }
  rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
  rd_kafka_CreateTopics(rk, nt, n, NULL, q);
  rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 30000);
  int rc = 0;
  if (!ev) die("%s", "CreateTopics timed out");
  const rd_kafka_CreateTopics_result_t *res = rd_kafka_event_CreateTopics_result(ev);
  size_t cnt = 0;
  const rd_kafka_topic_result_t **tr = rd_kafka_CreateTopics_result_topics(res, &cnt);
  for (size_t i = 0; i < cnt; i++) {
    rd_kafka_resp_err_t e = rd_kafka_topic_result_error(tr[i]);
    if (e && e != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
      fprintf(stderr, "fpbench: topic %s: %s\n", rd_kafka_topic_result_name(tr[i]),
              rd_kafka_topic_result_error_string(tr[i]));
      rc = 1;
    }
  }
  rd_kafka_event_destroy(ev);
  for (size_t i = 0; i < n; i++) rd_kafka_NewTopic_destroy(nt[i]);
  free(nt);
  rd_kafka_queue_destroy(q);
  /* wait until the metadata shows every topic with leaders */
  for (int tries = 0; tries < 100; tries++) {
    const struct rd_kafka_metadata *md;
    int ok = 1;
    if (rd_kafka_metadata(rk, 1, NULL, &md, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR) {
      for (int a = 1; a < argc; a++) {
        char name[256];
        snprintf(name, sizeof(name), "%s", argv[a]);
        char *c1 = strchr(name, ':');
        if (c1) *c1 = '\0';
        int found = 0;
        for (int t = 0; t < md->topic_cnt; t++)
          if (!strcmp(md->topics[t].topic, name) && !md->topics[t].err && md->topics[t].partition_cnt > 0) {
            found = 1;
            for (int p = 0; p < md->topics[t].partition_cnt; p++)
              if (md->topics[t].partitions[p].leader < 0) found = 0;
          }
        if (!found) ok = 0;
      }
      rd_kafka_metadata_destroy(md);
      if (ok) break;
    }
    usleep(100000);
  }
  rd_kafka_destroy(rk);
  return rc;
}

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
  (void)rk;
  if (m->err) (*(long *)opaque)++;
}

static int cmd_produce(int argc, char **argv) {
  if (argc < 2) die("%s", "usage: produce BOOTSTRAP TOPIC [--n N | --phases R:S,...] [--now]");
  const char *bootstrap = argv[0], *topic = argv[1];
  long long n = 0;
  int now = 0;
  uint64_t seed = 42;
  double rates[16], secs[16];
  int nphases = 0;
  for (int i = 2; i < argc; i++) {
    if (!strcmp(argv[i], "--n") && i + 1 < argc) n = strtoll(argv[++i], NULL, 10);
    else if (!strcmp(argv[i], "--now")) now = 1;
    else if (!strcmp(argv[i], "--seed") && i + 1 < argc) seed = strtoull(argv[++i], NULL, 10);
    else if (!strcmp(argv[i], "--phases") && i + 1 < argc) {
      char *s = argv[++i];
      while (*s && nphases < 16) {
        rates[nphases] = strtod(s, &s);
        if (*s == ':') s++;
        secs[nphases++] = strtod(s, &s);
        if (*s == ',') s++;
      }
    } else die("unknown produce option %s", argv[i]);
  }
  long failed = 0;
  const char *kv[] = {"linger.ms", nphases ? "5" : "50", "batch.size", "1000000",
                      "compression.type", "lz4", "acks", "all",
                      "queue.buffering.max.messages", "1000000", "queue.buffering.max.kbytes", "1048576",
                      NULL};
  char err[512];
  rd_kafka_conf_t *c = rd_kafka_conf_new();
  rd_kafka_conf_set(c, "bootstrap.servers", bootstrap, err, sizeof(err));
  for (const char *const *p = kv; p[0]; p += 2) rd_kafka_conf_set(c, p[0], p[1], err, sizeof(err));
  rd_kafka_conf_set_dr_msg_cb(c, dr_cb);
  rd_kafka_conf_set_opaque(c, &failed);
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, err, sizeof(err));
  if (!rk) die("%s", err);

  /* the topic's metadata before the clock starts: otherwise the first messages of a paced run
   * wait in this producer for it (hundreds of ms), and created_at (set at send) would charge
   * that wait to the engine's latency */
  rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
  const struct rd_kafka_metadata *tmd = NULL;
  if (rkt && rd_kafka_metadata(rk, 0, rkt, &tmd, 10000) == RD_KAFKA_RESP_ERR_NO_ERROR)
    rd_kafka_metadata_destroy(tmd);
  fp_gen_t *g = bench_gen(seed);
  fp_buf_t buf = {0};
  const char *key;
  int crisis;
  long long sent = 0;
  int64_t t0 = fp_mono_ns();

  if (!nphases) {
    for (; sent < n && fp_gen_next(g, &buf, &key, &crisis); sent++) {
      for (;;) {
        rd_kafka_resp_err_t e = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic),
                                                  RD_KAFKA_V_KEY(key, strlen(key)),
                                                  RD_KAFKA_V_VALUE(buf.data, buf.len),
                                                  RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
        if (!e) break;
        if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL) die("produce: %s", rd_kafka_err2str(e));
        rd_kafka_poll(rk, 10);
      }
      if ((sent & 1023) == 0) rd_kafka_poll(rk, 0);
    }
  } else {
    /* a pool of pre-generated mentions, cycled, so generation does not limit the pace */
    size_t pool_n = 100000, pool_i = 0;
    char **pool = calloc(pool_n, sizeof(*pool));
    int *pool_brand = calloc(pool_n, sizeof(*pool_brand));
    char (*keys)[32] = calloc(pool_n, sizeof(*keys));
    for (size_t i = 0; i < pool_n && fp_gen_next(g, &buf, &key, &crisis); i++) {
      pool[i] = strndup(buf.data, buf.len);
      snprintf(keys[i], sizeof(keys[i]), "%s", key);
      (void)pool_brand;
    }
    t0 = fp_mono_ns();
    /* Paced in ticks of 1 ms: each tick sends every message due by then, all stamped with
     * the wall clock read just before (so an event time is never later than its send).
     * Sleeping until each message's own due time (a wake-up per message, ~17,000 a second at
     * half the peak, a busy spin above 20,000) cost the sending thread 26% of a core at
     * 17,000/s (now 5%), taken from the engine, Redis and broker it measures on 2 cores. */
    double base_s = 0;
    for (int ph = 0; ph < nphases; ph++) {
      long long count = (long long)(rates[ph] * secs[ph]), j = 0;
      int64_t ph0 = t0 + (int64_t)(base_s * 1e9);
      while (j < count) {
        int64_t nw = fp_mono_ns();
        long long due = nw < ph0 ? 0 : (long long)((double)(nw - ph0) / 1e9 * rates[ph]) + 1;
        if (due > count) due = count;
        if (j >= due) {
          /* to the next tick, or to the next message's due time if that is later (at most
           * 100 ms: delivery reports are served in between) */
          int64_t next = ph0 + (int64_t)((double)j / rates[ph] * 1e9), d = next - nw;
          int64_t tick = nw < ph0 ? ph0 - nw : 1000000 - (nw - ph0) % 1000000;
          if (d < tick) d = tick;
          if (d > 100000000) d = 100000000;
          rd_kafka_poll(rk, 0);
          if (d > 0) {
            struct timespec ts = {0, (long)d};
            nanosleep(&ts, NULL);
          }
          continue;
        }
        int64_t stamp = now ? fp_now_ms() : 0;
        for (; j < due; j++) {
          char *js = pool[pool_i];
          if (now) set_created_at(js, stamp);
          for (;;) {
            rd_kafka_resp_err_t e = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic),
                                                      RD_KAFKA_V_KEY(keys[pool_i], strlen(keys[pool_i])),
                                                      RD_KAFKA_V_VALUE(js, strlen(js)),
                                                      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
            if (!e) break;
            if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL) die("produce: %s", rd_kafka_err2str(e));
            rd_kafka_poll(rk, 1);
          }
          pool_i = (pool_i + 1) % pool_n;
          sent++;
          if ((sent & 255) == 0) rd_kafka_poll(rk, 0);
        }
      }
      base_s += secs[ph];
    }
    for (size_t i = 0; i < pool_n; i++) free(pool[i]);
    free(pool);
    free(pool_brand);
    free(keys);
  }
  double gen_s = (double)(fp_mono_ns() - t0) / 1e9;
  rd_kafka_flush(rk, 120000);
  double total_s = (double)(fp_mono_ns() - t0) / 1e9;
  printf("{\"produced\":%lld,\"failed\":%ld,\"send_s\":%.3f,\"total_s\":%.3f,\"rate\":%.0f}\n", sent,
         failed, gen_s, total_s, (double)sent / total_s);
  fp_buf_free(&buf);
  fp_gen_destroy(g);
  if (rkt) rd_kafka_topic_destroy(rkt);
  rd_kafka_destroy(rk);
  return failed ? 1 : 0;
}

/* ---- watch: committed offsets, end offsets and the engine's /proc ------------------------ */

static void proc_sample(int pid, long long *ticks, long long *rss_kb, long long *hwm_kb) {
  char path[64], line[4096];
  FILE *f;
  *ticks = *rss_kb = *hwm_kb = -1;
  snprintf(path, sizeof(path), "/proc/%d/stat", pid);
  if ((f = fopen(path, "r"))) {
    if (fgets(line, sizeof(line), f)) {
      char *p = strrchr(line, ')');
      unsigned long ut = 0, st = 0;
      /* after ") ": state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime(14) stime(15) */
      if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) == 2)
        *ticks = (long long)(ut + st);
    }
    fclose(f);
  }
  snprintf(path, sizeof(path), "/proc/%d/status", pid);
  if ((f = fopen(path, "r"))) {
    while (fgets(line, sizeof(line), f)) {
      if (!strncmp(line, "VmRSS:", 6)) *rss_kb = strtoll(line + 6, NULL, 10);
      if (!strncmp(line, "VmHWM:", 6)) *hwm_kb = strtoll(line + 6, NULL, 10);
    }
    fclose(f);
  }
}

static int cmd_watch(int argc, char **argv) {
  if (argc < 5) die("%s", "usage: watch BOOTSTRAP GROUP TOPIC PARTS PIDS --target N --timeout S --csv FILE");
  const char *bootstrap = argv[0], *group = argv[1], *topic = argv[2];
  int parts = atoi(argv[3]);
  int pids[8], npids = 0;
  for (char *s = argv[4]; *s && npids < 8;) {
    pids[npids++] = (int)strtol(s, &s, 10);
    if (*s == ',') s++;
  }
  long long target = -1;
  double timeout = 600, min_secs = 0;
  const char *csv = NULL;
  for (int i = 5; i < argc; i++) {
    if (!strcmp(argv[i], "--target") && i + 1 < argc) target = strtoll(argv[++i], NULL, 10);
    else if (!strcmp(argv[i], "--timeout") && i + 1 < argc) timeout = strtod(argv[++i], NULL);
    else if (!strcmp(argv[i], "--min-secs") && i + 1 < argc) min_secs = strtod(argv[++i], NULL);
    else if (!strcmp(argv[i], "--csv") && i + 1 < argc) csv = argv[++i];
  }
  const char *kv[] = {"group.id", group, "enable.auto.commit", "false", NULL};
  rd_kafka_t *rk = kafka_new(RD_KAFKA_CONSUMER, bootstrap, kv);
  FILE *out = csv ? fopen(csv, "w") : stdout;
  if (!out) die("cannot write %s", csv);
  fprintf(out, "t,end,committed,ticks,rss_kb,hwm_kb\n");
  int64_t t0 = fp_mono_ns();
  long long committed = 0, end = 0;
  int reached = 0;
  for (;;) {
    double t = (double)(fp_mono_ns() - t0) / 1e9;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(parts);
    for (int p = 0; p < parts; p++) rd_kafka_topic_partition_list_add(l, topic, p);
    long long c = 0, e = 0;
    if (rd_kafka_committed(rk, l, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR) {
      for (int p = 0; p < parts; p++)
        if (l->elems[p].offset >= 0) c += l->elems[p].offset;
      committed = c;
    }
    rd_kafka_topic_partition_list_destroy(l);
    for (int p = 0; p < parts; p++) {
      int64_t lo = 0, hi = 0;
      if (rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR) e += hi;
    }
    end = e;
    long long ticks = 0, rss = 0, hwm = 0;
    for (int i = 0; i < npids; i++) {
      long long a, b, d;
      proc_sample(pids[i], &a, &b, &d);
      ticks += a, rss += b, hwm += d;
    }
    fprintf(out, "%.3f,%lld,%lld,%lld,%lld,%lld\n", t, end, committed, ticks, rss, hwm);
    fflush(out);
    if (target >= 0 && committed >= target && t >= min_secs) {
      reached = 1;
      break;
    }
    if (t > timeout) break;
    usleep(200000);
  }
  if (csv) fclose(out);
  rd_kafka_destroy(rk);
  printf("{\"reached\":%d,\"committed\":%lld,\"end\":%lld}\n", reached, committed, end);
  return reached ? 0 : 2;
}

/* ---- latency: incident log-append time minus event_time ---------------------------------- */

static int64_t rfc3339_ms(const char *s) {
  struct tm tm = {0};
  int ms = 0;
  if (!s || sscanf(s, "%d-%d-%dT%d:%d:%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
                   &tm.tm_min, &tm.tm_sec) != 6)
    return -1;
  const char *dot = strchr(s, '.');
  if (dot) ms = (int)strtol(dot + 1, NULL, 10);
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  return (int64_t)timegm(&tm) * 1000 + ms;
}

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

static int cmd_latency(int argc, char **argv) {
  if (argc < 3) die("%s", "usage: latency BOOTSTRAP FROM_MS TOPIC...");
  const char *bootstrap = argv[0];
  int64_t from = strtoll(argv[1], NULL, 10);
  const char *kv[] = {"group.id", "fpbench-latency", "enable.auto.commit", "false",
                      "enable.partition.eof", "true", NULL};
  rd_kafka_t *rk = kafka_new(RD_KAFKA_CONSUMER, bootstrap, kv);
  rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(16);
  const struct rd_kafka_metadata *md;
  int nparts = 0;
  if (rd_kafka_metadata(rk, 1, NULL, &md, 10000) != RD_KAFKA_RESP_ERR_NO_ERROR) die("%s", "metadata");
  for (int a = 2; a < argc; a++)
    for (int t = 0; t < md->topic_cnt; t++)
      if (!strcmp(md->topics[t].topic, argv[a]))
        for (int p = 0; p < md->topics[t].partition_cnt; p++) {
          int64_t lo = 0, hi = 0;
          rd_kafka_query_watermark_offsets(rk, argv[a], p, &lo, &hi, 5000);
          if (hi > lo) {
            rd_kafka_topic_partition_list_add(l, argv[a], p)->offset = RD_KAFKA_OFFSET_BEGINNING;
            nparts++;
          }
        }
  rd_kafka_metadata_destroy(md);
  size_t n = 0, cap = 1024, events = 0;
  int64_t *lat = malloc(cap * sizeof(*lat));
  int eof = 0;
  if (nparts) {
    rd_kafka_assign(rk, l);
    int64_t deadline = fp_mono_ns() + 60000000000LL;
    while (eof < nparts && fp_mono_ns() < deadline) {
      rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 500);
      if (!m) continue;
      if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) eof++;
      else if (!m->err) {
        rd_kafka_timestamp_type_t tt;
        int64_t ts = rd_kafka_message_timestamp(m, &tt);
        json_t *j = json_loadb(m->payload, m->len, 0, NULL);
        const char *status = j ? json_string_value(json_object_get(j, "status")) : NULL;
        int64_t et = j ? rfc3339_ms(json_string_value(json_object_get(j, "event_time"))) : -1;
        events++;
        if (et >= from && status && strcmp(status, "resolved") && strcmp(status, "postmortem")) {
          if (n == cap) lat = realloc(lat, (cap *= 2) * sizeof(*lat));
          lat[n++] = ts - et;
          if (getenv("FPBENCH_LATENCY_DUMP")) /* one line per sample: seconds into the run, ms */
            fprintf(stderr, "latency %.3f %lld\n", (double)(et - from) / 1000.0, (long long)(ts - et));
        }
        json_decref(j);
      }
      rd_kafka_message_destroy(m);
    }
  }
  rd_kafka_topic_partition_list_destroy(l);
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
  qsort(lat, n, sizeof(*lat), cmp_i64);
#define PCT(q) (n ? lat[(size_t)((double)(n - 1) * (q))] : -1)
  printf("{\"events\":%zu,\"samples\":%zu,\"p50_ms\":%lld,\"p90_ms\":%lld,\"p99_ms\":%lld,\"max_ms\":%lld}\n",
         events, n, (long long)PCT(0.5), (long long)PCT(0.9), (long long)PCT(0.99), (long long)PCT(1.0));
  free(lat);
  return 0;
}

/* ---- engine: the public API, with the counters printed at exit --------------------------- */

static fp_engine_t *g_engine;
static void on_signal(int sig) {
  (void)sig;
  if (g_engine) fp_engine_stop(g_engine);
}

static int cmd_engine(int argc, char **argv) {
  char err[512];
  fp_conf_t *conf = fp_conf_new();
  for (int i = 0; i < argc; i++) {
    if (!strcmp(argv[i], "-s") && i + 1 < argc) {
      char *kv = strdup(argv[++i]), *eq = strchr(kv, '=');
      if (!eq) die("bad -s %s", kv);
      *eq = '\0';
      if (fp_conf_set(conf, kv, eq + 1, err, sizeof(err)) != FP_OK) die("%s", err);
      free(kv);
    }
  }
  g_engine = fp_engine_new(conf, err, sizeof(err));
  if (!g_engine) die("%s", err);
  signal(SIGTERM, on_signal);
  signal(SIGINT, on_signal);
  fp_err_t rc = fp_engine_run(g_engine);
  fp_stats_t st;
  fp_engine_stats(g_engine, &st);
  printf("{\"mentions_in\":%llu,\"mentions_decoded\":%llu,\"dead_lettered\":%llu,\"late\":%llu,"
         "\"rule_evals\":%llu,\"rule_errors\":%llu,\"incidents\":%llu,\"offsets_stored\":%llu,"
         "\"redis_roundtrips\":%llu,\"redis_errors\":%llu}\n",
         (unsigned long long)st.mentions_in, (unsigned long long)st.mentions_decoded,
         (unsigned long long)st.dead_lettered, (unsigned long long)st.late,
         (unsigned long long)st.rule_evals, (unsigned long long)st.rule_errors,
         (unsigned long long)st.incidents, (unsigned long long)st.offsets_stored,
         (unsigned long long)st.redis_roundtrips, (unsigned long long)st.redis_errors);
  fflush(stdout);
  fp_engine_destroy(g_engine);
  fp_conf_destroy(conf);
  return rc == FP_OK ? 0 : 1;
}

/* ---- stages ------------------------------------------------------------------------------ */

typedef struct {
  char **json;
  size_t *len;
  size_t n;
} corpus_t;

static corpus_t corpus_make(size_t n) {
  corpus_t c = {calloc(n, sizeof(char *)), calloc(n, sizeof(size_t)), 0};
  fp_gen_t *g = bench_gen(7);
  fp_buf_t b = {0};
  const char *key;
  int crisis;
  while (c.n < n && fp_gen_next(g, &b, &key, &crisis)) {
    c.json[c.n] = strndup(b.data, b.len);
    c.len[c.n++] = b.len;
  }
  fp_buf_free(&b);
  fp_gen_destroy(g);
  return c;
}

static void emit(const char *stage, const char *variant, double ns_per, const char *unit, double extra,
                 const char *extra_name) {
  printf("{\"stage\":\"%s\",\"variant\":\"%s\",\"ns_per\":%.1f,\"unit\":\"%s\",\"per_s\":%.0f", stage,
         variant, ns_per, unit, ns_per > 0 ? 1e9 / ns_per : 0);
  if (extra_name) printf(",\"%s\":%.4f", extra_name, extra);
  printf("}\n");
  fflush(stdout);
}

/* Decode as the pipeline does it: a run of up to 4,000 mentions decoded, then all released;
 * on the heap (malloc and free per value) and in an arena rewound after each run. */
static void stage_decode(const corpus_t *c, int reps) {
  enum { RUN = 4000 };
  char err[256];
  fp_mention_t *ms = calloc(RUN, sizeof(*ms));
  fp_jarena_t *arena = fp_jarena_new();
  if (!ms || !arena) die("out of memory");
  for (int v = 0; v < 2; v++) {
    size_t bytes = 0;
    int64_t t0 = fp_mono_ns();
    for (int r = 0; r < reps; r++)
      for (size_t base = 0; base < c->n; base += RUN) {
        size_t k = c->n - base < RUN ? c->n - base : RUN;
        for (size_t i = 0; i < k; i++) {
          fp_jarena_t *prev = fp_jarena_enter(v ? arena : NULL);
          fp_err_t e = fp_mention_decode(c->json[base + i], c->len[base + i], 1 << 20, &ms[i], err, sizeof(err));
          fp_jarena_leave(prev);
          if (e != FP_OK) die("decode: %s", err);
          bytes += c->len[base + i];
        }
        for (size_t i = 0; i < k; i++) fp_mention_clear(&ms[i]);
        if (v) fp_jarena_reset(arena);
      }
    double ns = (double)(fp_mono_ns() - t0) / ((double)c->n * reps);
    emit("decode", v ? "fp_mention_decode, arena (runs of 4000)" : "fp_mention_decode, heap (runs of 4000)", ns,
         "mention", (double)bytes / (double)(c->n * (size_t)reps), "bytes_per_mention");
  }
  fp_jarena_destroy(arena);
  free(ms);
}

/* Rule stages on the corpus: select (stage 1) and severity (stage 2), values from an
 * in-process store applied in batches of 1000 (not timed). */
static void stage_rules(const corpus_t *c, const char *dir, const char *variant, uint64_t instr) {
  char err[512];
  fp_rules_limits_t lim = {0};
  lim.mem_bytes = 64 << 20;
  lim.instructions = instr;
  lim.deadline_ms = 250;
  lim.quarantine_after = 5;
  fp_rules_t *rules = fp_rules_new(dir, &lim, err, sizeof(err));
  if (!rules) die("rules: %s", err);
  fp_store_t *st = fp_store_mem_new(err, sizeof(err));
  fp_store_set_lateness(st, 300000);
  size_t B = 1000, nr = fp_rules_count(rules);
  fp_mention_t *ms = calloc(B, sizeof(*ms));
  int *mref = calloc(B, sizeof(*mref));
  fp_rule_hit_t *hits = calloc(B * nr, sizeof(*hits));
  size_t *hit_msg = calloc(B * nr, sizeof(*hit_msg));
  fp_opvec_t ops = {0};
  int64_t t_sel = 0, t_sev = 0;
  size_t nhits_total = 0, nops_total = 0, fires = 0;
  unsigned nerr = 0;
  for (size_t base = 0; base < c->n; base += B) {
    size_t k = c->n - base < B ? c->n - base : B, nh = 0;
    for (size_t i = 0; i < k; i++)
      if (fp_mention_decode(c->json[base + i], c->len[base + i], 1 << 20, &ms[i], err, sizeof(err)) != FP_OK)
        die("decode: %s", err);
    fp_opvec_reset(&ops);
    int64_t t0 = fp_mono_ns();
    for (size_t i = 0; i < k; i++) {
      size_t got = 0;
      fp_rules_select(rules, &ms[i], (int64_t)(base + i), hits + nh, B * nr - nh, &got, &ops, &mref[i], &nerr);
      for (size_t h = 0; h < got; h++) hit_msg[nh + h] = i;
      nh += got;
    }
    t_sel += fp_mono_ns() - t0;
    if (ops.n && fp_store_apply(st, "bench:0", ops.ops, ops.n, 0, NULL, err, sizeof(err)) != FP_OK)
      die("apply: %s", err);
    t0 = fp_mono_ns();
    for (size_t h = 0; h < nh; h++) {
      fp_sev_t sev = FP_SEV_NONE;
      if (fp_rules_severity(rules, mref[hit_msg[h]], &hits[h], ops.ops, &sev, err, sizeof(err)) == FP_OK &&
          sev != FP_SEV_NONE)
        fires++;
    }
    t_sev += fp_mono_ns() - t0;
    nhits_total += nh;
    nops_total += ops.n;
    for (size_t i = 0; i < k; i++) {
      if (mref[i]) fp_rules_release(rules, mref[i]);
      mref[i] = 0;
      fp_mention_clear(&ms[i]);
    }
  }
  char v[128];
  snprintf(v, sizeof(v), "%s select (stage 1)", variant);
  emit("rules", v, (double)t_sel / (double)c->n, "mention", (double)nhits_total / (double)c->n, "hits_per_mention");
  snprintf(v, sizeof(v), "%s severity (stage 2)", variant);
  emit("rules", v, (double)t_sev / (double)c->n, "mention", nhits_total ? (double)t_sev / (double)nhits_total : 0,
       "ns_per_hit");
  snprintf(v, sizeof(v), "%s select+severity", variant);
  emit("rules", v, (double)(t_sel + t_sev) / (double)c->n, "mention", (double)nops_total / (double)c->n,
       "window_ops_per_mention");
  fprintf(stderr, "rules %s: errors %u fires %zu\n", variant, nerr, fires);
  fp_opvec_free(&ops);
  free(ms), free(mref), free(hits), free(hit_msg);
  fp_store_destroy(st);
  fp_rules_destroy(rules);
}

/* The sandbox's own cost: the same Lua function called through fp_sandbox_pcall (budget
 * hook every FP_SANDBOX_HOOK_EVERY instructions, deadline, traceback handler) and through a
 * bare lua_pcall on a plain state without any hook. */
static const char *const sb_fns[][2] = {
    {"trivial", "return function(x) return x end"},
    {"loop100", "return function(x) local s = 0 for i = 1, 100 do s = s + i * x end return s end"},
};

static void stage_sandbox(void) {
  char err[512];
  for (size_t f = 0; f < 2; f++) {
    const int N = 300000;
    fp_sandbox_t *sb = fp_sandbox_new(NULL, NULL, err, sizeof(err));
    if (!sb) die("sandbox: %s", err);
    lua_State *L = fp_sandbox_lua(sb);
    fp_sandbox_push_env(sb);
    if (fp_sandbox_load(sb, sb_fns[f][1], strlen(sb_fns[f][1]), "=bench", err, sizeof(err)) != FP_OK) die("%s", err);
    if (fp_sandbox_pcall(sb, 0, 1, err, sizeof(err)) != FP_OK) die("%s", err);
    int ref = luaL_ref(L, LUA_REGISTRYINDEX);
    int64_t t0 = fp_mono_ns();
    for (int i = 0; i < N; i++) {
      lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
      lua_pushinteger(L, i);
      if (fp_sandbox_pcall(sb, 1, 1, err, sizeof(err)) != FP_OK) die("%s", err);
      lua_pop(L, 1);
    }
    double ns_sb = (double)(fp_mono_ns() - t0) / N;
    fp_sandbox_destroy(sb);

    lua_State *P = luaL_newstate();
    luaL_openlibs(P);
    if (luaL_loadstring(P, sb_fns[f][1]) || lua_pcall(P, 0, 1, 0)) die("%s", lua_tostring(P, -1));
    ref = luaL_ref(P, LUA_REGISTRYINDEX);
    t0 = fp_mono_ns();
    for (int i = 0; i < N; i++) {
      lua_rawgeti(P, LUA_REGISTRYINDEX, ref);
      lua_pushinteger(P, i);
      if (lua_pcall(P, 1, 1, 0)) die("%s", lua_tostring(P, -1));
      lua_pop(P, 1);
    }
    double ns_raw = (double)(fp_mono_ns() - t0) / N;
    lua_close(P);
    char v[96];
    snprintf(v, sizeof(v), "%s: fp_sandbox_pcall", sb_fns[f][0]);
    emit("sandbox", v, ns_sb, "call", ns_sb - ns_raw, "overhead_ns");
    snprintf(v, sizeof(v), "%s: bare lua_pcall, no hook", sb_fns[f][0]);
    emit("sandbox", v, ns_raw, "call", 0, NULL);
  }
}

/* Window updates: the example pack's real ops (from stage 1 on the corpus), applied per
 * batch of 1, 100 and 1000 mentions. */
static void stage_store(const corpus_t *c, const char *dir, const char *redis_hp) {
  char err[512];
  fp_rules_t *rules = fp_rules_new(dir, NULL, err, sizeof(err));
  if (!rules) die("rules: %s", err);
  size_t nr = fp_rules_count(rules);
  fp_opvec_t all = {0};
  size_t *first = calloc(c->n + 1, sizeof(*first));
  fp_rule_hit_t *hits = calloc(nr, sizeof(*hits));
  unsigned nerr = 0;
  for (size_t i = 0; i < c->n; i++) {
    fp_mention_t m;
    size_t got = 0;
    int mref = 0;
    first[i] = all.n;
    if (fp_mention_decode(c->json[i], c->len[i], 1 << 20, &m, err, sizeof(err)) != FP_OK) die("%s", err);
    fp_rules_select(rules, &m, (int64_t)i, hits, nr, &got, &all, &mref, &nerr);
    if (mref) fp_rules_release(rules, mref);
    fp_mention_clear(&m);
  }
  first[c->n] = all.n;
  static const size_t batches[] = {1, 100, 1000};
  for (int backend = 0; backend < 2; backend++) {
    if (backend == 1 && !redis_hp) break;
    for (size_t bi = 0; bi < 3; bi++) {
      fp_store_t *st;
      char prefix[64], host[128] = "127.0.0.1";
      int port = 6379;
      snprintf(prefix, sizeof(prefix), "stb%d-%zu", (int)getpid(), bi);
      if (backend == 0) {
        st = fp_store_mem_new(err, sizeof(err));
        if (st) fp_store_set_lateness(st, 300000);
      } else {
        const char *colon = strrchr(redis_hp, ':');
        snprintf(host, sizeof(host), "%.*s", (int)(colon - redis_hp), redis_hp);
        port = atoi(colon + 1);
        fp_store_redis_conf_t rc = {.host = host, .port = port, .prefix = prefix, .connect_timeout_ms = 1000,
                                    .command_timeout_ms = 30000, .memo_ttl_ms = 3600000, .lateness_ms = 300000};
        st = fp_store_redis_new(&rc, err, sizeof(err));
      }
      if (!st) die("store: %s", err);
      size_t B = batches[bi], mentions = c->n;
      if (backend == 1 && B == 1 && mentions > 5000) mentions = 5000;
      uint64_t rt0 = fp_store_roundtrips(st);
      int64_t t0 = fp_mono_ns();
      for (size_t i = 0; i < mentions; i += B) {
        size_t j = i + B < mentions ? i + B : mentions;
        size_t a = first[i], z = first[j];
        if (z > a && fp_store_apply(st, "bench:0", all.ops + a, z - a, (int64_t)i, NULL, err, sizeof(err)) != FP_OK)
          die("apply: %s", err);
      }
      double ns = (double)(fp_mono_ns() - t0) / (double)mentions;
      char v[64];
      snprintf(v, sizeof(v), "%s batch %zu", backend ? "redis" : "memory", B);
      emit("store", v, ns, "mention", (double)(fp_store_roundtrips(st) - rt0) / (double)mentions,
           "roundtrips_per_mention");
      fp_store_destroy(st);
    }
  }
  fprintf(stderr, "store: %.2f window ops per mention\n", (double)all.n / (double)c->n);
  fp_opvec_free(&all);
  free(first);
  free(hits);
  fp_rules_destroy(rules);
}

/* Incident encoding: fp_lc_step over escalating signals for many entities, then json_dumps
 * of every event. */
static void stage_lifecycle(const corpus_t *c, const char *dir) {
  char err[512];
  fp_rules_t *rules = fp_rules_new(dir, NULL, err, sizeof(err));
  if (!rules) die("rules: %s", err);
  const fp_rule_info_t *ri = fp_rules_info(rules, 0);
  fp_lc_params_t p = {ri->resolve_after_ms, 300000, 1800000, 3};
  size_t nm = c->n < 5000 ? c->n : 5000;
  fp_mention_t *ms = calloc(nm, sizeof(*ms));
  for (size_t i = 0; i < nm; i++)
    if (fp_mention_decode(c->json[i], c->len[i], 1 << 20, &ms[i], err, sizeof(err)) != FP_OK) die("%s", err);
  fp_win_op_t vals[FP_RULE_MAX_WINDOWS];
  memset(vals, 0, sizeof(vals));
  for (size_t w = 0; w < ri->nwindows; w++) vals[w].out.value = 42, vals[w].out.mean = 3, vals[w].out.stddev = 1.5;
  size_t nst = 200, steps = 0, events = 0, bytes = 0;
  fp_lc_state_t *sts = calloc(nst, sizeof(*sts));
  char ent[nst][16];
  int64_t t_step = 0, t_dump = 0;
  for (size_t s = 0; s < nst; s++) snprintf(ent[s], sizeof(ent[s]), "brand-%02zu", s);
  for (int round = 0; round < 10; round++) {
    for (size_t i = 0; i < nm; i++) {
      size_t s = i % nst;
      fp_lc_signal_t sig = {0};
      sig.sev = (fp_sev_t)(1 + (int)((i / nst + (size_t)round) % 4));
      sig.at_ms = BENCH_T0_MS + (int64_t)round * 3600000 + (int64_t)i * 100;
      sig.mention = &ms[i];
      sig.rule = ri;
      sig.entity = ent[s];
      sig.values = vals;
      sig.nvalues = ri->nwindows;
      json_t *evs = json_array();
      int64_t t0 = fp_mono_ns();
      fp_lc_step(&sts[s], &p, &sig, evs);
      int64_t t1 = fp_mono_ns();
      for (size_t e = 0; e < json_array_size(evs); e++) {
        char *d = json_dumps(json_array_get(evs, e), JSON_COMPACT | JSON_SORT_KEYS);
        bytes += strlen(d);
        free(d);
        events++;
      }
      t_dump += fp_mono_ns() - t1;
      t_step += t1 - t0;
      steps++;
      json_decref(evs);
    }
  }
  emit("lifecycle", "fp_lc_step", (double)t_step / (double)steps, "signal", (double)events / (double)steps,
       "events_per_signal");
  emit("lifecycle", "json_dumps of an incident event", events ? (double)t_dump / (double)events : 0, "event",
       events ? (double)bytes / (double)events : 0, "bytes_per_event");
  for (size_t i = 0; i < nm; i++) fp_mention_clear(&ms[i]);
  free(ms);
  free(sts);
  fp_rules_destroy(rules);
}

static int cmd_stages(int argc, char **argv) {
  size_t n = 20000;
  const char *redis = NULL, *dir = FP_SOURCE_DIR "/rules", *trivial = FP_SOURCE_DIR "/bench/rules-trivial";
  const char *only = NULL;
  for (int i = 0; i < argc; i++) {
    if (!strcmp(argv[i], "--n") && i + 1 < argc) n = strtoul(argv[++i], NULL, 10);
    else if (!strcmp(argv[i], "--redis") && i + 1 < argc) redis = argv[++i];
    else if (!strcmp(argv[i], "--rules") && i + 1 < argc) dir = argv[++i];
    else if (!strcmp(argv[i], "--trivial") && i + 1 < argc) trivial = argv[++i];
    else if (!strcmp(argv[i], "--only") && i + 1 < argc) only = argv[++i];
  }
  corpus_t c = corpus_make(n);
#define WANT(s) (!only || strstr(only, s))
  if (WANT("decode")) stage_decode(&c, 3);
  if (WANT("rules")) {
    stage_rules(&c, dir, "example pack, default budget (1e6)", 1000000);
    stage_rules(&c, dir, "example pack, huge budget (1e9)", 1000000000);
    stage_rules(&c, trivial, "trivial rule", 1000000);
  }
  if (WANT("sandbox")) stage_sandbox();
  if (WANT("store")) stage_store(&c, dir, redis);
  if (WANT("lifecycle")) stage_lifecycle(&c, dir);
  for (size_t i = 0; i < c.n; i++) free(c.json[i]);
  free(c.json);
  free(c.len);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: fpbench topics|produce|watch|latency|engine|stages ...\n");
    return 2;
  }
  const char *cmd = argv[1];
  argc -= 2, argv += 2;
  if (!strcmp(cmd, "topics")) return cmd_topics(argc, argv);
  if (!strcmp(cmd, "produce")) return cmd_produce(argc, argv);
  if (!strcmp(cmd, "watch")) return cmd_watch(argc, argv);
  if (!strcmp(cmd, "latency")) return cmd_latency(argc, argv);
  if (!strcmp(cmd, "engine")) return cmd_engine(argc, argv);
  if (!strcmp(cmd, "stages")) return cmd_stages(argc, argv);
  fprintf(stderr, "fpbench: unknown command %s\n", cmd);
  return 2;
}
