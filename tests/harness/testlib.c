/*
 * testlib.c: checks and cases, service settings, and Kafka, Redis and process helpers for
 * the test tiers (see testlib.h for the contract of each function).
 *
 * State is process-global and owned here: the list of cases run so far, the current case's
 * check and failure counts, the parsed services env file and one shared Kafka producer
 * (created on first produce, destroyed by fpt_done()). Every helper that fails records
 * the failure against the current case through fpt_fail(), so a test cannot lose an error
 * by ignoring a return value; the return value only lets the case stop early.
 *
 * Invariant: only the main thread calls into this file (librdkafka callbacks run from
 * rd_kafka_poll()/flush() on the calling thread and only touch per-call state).
 */
#include "testlib.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* ------------------------------------------------------------------------------------ */
/* Checks and cases                                                                      */
/* ------------------------------------------------------------------------------------ */

typedef struct fpt_case_s {
  const char *name;
  long checks;
  long failures;
  int64_t ms;
} fpt_case_t;

static fpt_case_t *cases;
static size_t ncases, cases_cap;
static const char *cur_name;     /* NULL outside fpt_run() */
static long cur_checks, cur_failures;
static long outside_failures;    /* failures recorded outside any case */

static void services_reset(void);
static void kafka_cleanup(void);

int64_t fpt_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

FPT_PRINTF(3, 0)
static void vfail(const char *file, int line, const char *fmt, va_list ap) {
  if (cur_name)
    cur_failures++;
  else
    outside_failures++;
  fprintf(stderr, "%s:%d: %s: ", file, line, cur_name ? cur_name : "(no case)");
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  fflush(stderr);
}

void fpt_fail(const char *file, int line, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vfail(file, line, fmt, ap);
  va_end(ap);
}

int fpt_check_(int ok, const char *file, int line, const char *fmt, ...) {
  cur_checks++;
  if (!ok) {
    va_list ap;
    va_start(ap, fmt);
    vfail(file, line, fmt, ap);
    va_end(ap);
  }
  return ok;
}

int fpt_check_eq_int_(long long a, long long b, const char *ea, const char *eb,
                      const char *file, int line) {
  return fpt_check_(a == b, file, line, "expected %s == %s, got %lld vs %lld", ea, eb, a, b);
}

int fpt_check_eq_str_(const char *a, const char *b, const char *ea, const char *eb,
                      const char *file, int line) {
  int ok = (a == NULL || b == NULL) ? a == b : strcmp(a, b) == 0;
  return fpt_check_(ok, file, line, "expected %s == %s, got \"%s\" vs \"%s\"", ea, eb,
                    a ? a : "(null)", b ? b : "(null)");
}

int fpt_check_near_(double a, double b, double eps, const char *ea, const char *eb,
                    const char *file, int line) {
  return fpt_check_(fabs(a - b) <= eps, file, line, "expected %s ~= %s (eps %g), got %.17g vs %.17g",
                    ea, eb, eps, a, b);
}

void fpt_note(const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "# %s: ", cur_name ? cur_name : "-");
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  fflush(stderr);
}

void fpt_run(const char *name, void (*fn)(void)) {
  int64_t t0;
  fpt_case_t *c;

  if (ncases == cases_cap) {
    size_t cap = cases_cap ? cases_cap * 2 : 16;
    fpt_case_t *n = realloc(cases, cap * sizeof(*n));
    if (!n) {
      fprintf(stderr, "fpt_run: out of memory\n");
      abort();
    }
    cases = n;
    cases_cap = cap;
  }
  fprintf(stderr, "RUN  %s\n", name);
  fflush(stderr);
  cur_name = name;
  cur_checks = cur_failures = 0;
  t0 = fpt_now_ms();
  fn();
  c = &cases[ncases++];
  c->name = name;
  c->checks = cur_checks;
  c->failures = cur_failures;
  c->ms = fpt_now_ms() - t0;
  if (c->checks == 0) {
    fprintf(stderr, "%s: no checks executed (assertion-free tests count as failed)\n", name);
    c->failures++;
  }
  fprintf(stderr, "%s %s (%ld checks, %" PRId64 " ms)\n", c->failures ? "FAIL" : "PASS", name,
          c->checks, c->ms);
  fflush(stderr);
  cur_name = NULL;
}

int fpt_done(void) {
  size_t i, passed = 0, failed = 0;

  kafka_cleanup();
  services_reset();
  printf("\n");
  for (i = 0; i < ncases; i++) {
    const fpt_case_t *c = &cases[i];
    printf("%s %-40s %6ld checks %6ld failed %7" PRId64 " ms\n", c->failures ? "FAIL" : "ok  ",
           c->name, c->checks, c->failures, c->ms);
    if (c->failures)
      failed++;
    else
      passed++;
  }
  if (outside_failures) {
    printf("FAIL %ld failure(s) outside any case\n", outside_failures);
    failed++;
  }
  if (ncases == 0) {
    printf("FAIL no test cases ran\n");
    failed++;
  }
  printf("%zu passed, %zu failed\n", passed, failed);
  fflush(stdout);
  free(cases);
  cases = NULL;
  ncases = cases_cap = 0;
  return failed ? 1 : 0;
}

int fpt_wait_until(int (*fn)(void *arg), void *arg, int deadline_ms) {
  int64_t end = fpt_now_ms() + deadline_ms;
  long delay_us = 1000;

  for (;;) {
    if (fn(arg))
      return 1;
    if (fpt_now_ms() >= end)
      return 0;
    usleep((useconds_t)delay_us);
    if (delay_us < 50000)
      delay_us *= 2;
  }
}

char *fpt_tmpdir(const char *prefix) {
  const char *tmp = getenv("TMPDIR");
  size_t sz;
  char *path;

  if (!tmp || !*tmp)
    tmp = "/tmp";
  sz = strlen(tmp) + strlen(prefix) + 16;
  path = malloc(sz);
  if (!path) {
    FPT_FAIL("fpt_tmpdir: out of memory");
    return NULL;
  }
  snprintf(path, sz, "%s/fpt-%s-XXXXXX", tmp, prefix);
  if (!mkdtemp(path)) {
    FPT_FAIL("mkdtemp %s: %s", path, strerror(errno));
    free(path);
    return NULL;
  }
  return path;
}

char *fpt_read_file(const char *path, size_t *lenp) {
  FILE *f = fopen(path, "rb");
  char *buf = NULL;
  size_t len = 0, cap = 0;

  if (!f)
    return NULL;
  for (;;) {
    size_t r;
    if (cap - len < 4096) {
      char *n = realloc(buf, cap ? cap * 2 : 8192);
      if (!n) {
        free(buf);
        fclose(f);
        return NULL;
      }
      buf = n;
      cap = cap ? cap * 2 : 8192;
    }
    r = fread(buf + len, 1, cap - len - 1, f);
    len += r;
    if (r == 0)
      break;
  }
  fclose(f);
  buf[len] = '\0';
  if (lenp)
    *lenp = len;
  return buf;
}

/* ------------------------------------------------------------------------------------ */
/* Services                                                                              */
/* ------------------------------------------------------------------------------------ */

typedef struct kv_s {
  char *key;
  char *value;
} kv_t;

static kv_t *svc;
static size_t nsvc;
static int svc_loaded;

static void services_reset(void) {
  size_t i;
  for (i = 0; i < nsvc; i++) {
    free(svc[i].key);
    free(svc[i].value);
  }
  free(svc);
  svc = NULL;
  nsvc = 0;
  svc_loaded = 0;
}

int fpt_services_load(void) {
  const char *path = getenv("FP_SERVICES_ENV");
  char *text, *line, *save = NULL;
  size_t cap = 0;

  services_reset();
  if (!path || !*path) {
    FPT_FAIL("FP_SERVICES_ENV is not set (run through ctest, or services.sh start ENVFILE "
             "and export FP_SERVICES_ENV=ENVFILE)");
    return -1;
  }
  text = fpt_read_file(path, NULL);
  if (!text) {
    FPT_FAIL("cannot read services env file %s: %s", path, strerror(errno));
    return -1;
  }
  for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
    char *eq = strchr(line, '=');
    if (line[0] == '#' || !eq || eq == line)
      continue;
    if (nsvc == cap) {
      size_t ncap = cap ? cap * 2 : 32;
      kv_t *n = realloc(svc, ncap * sizeof(*n));
      if (!n)
        break;
      svc = n;
      cap = ncap;
    }
    *eq = '\0';
    svc[nsvc].key = strdup(line);
    svc[nsvc].value = strdup(eq + 1);
    nsvc++;
  }
  free(text);
  svc_loaded = 1;
  return 0;
}

const char *fpt_services_get(const char *key) {
  size_t i;
  if (!svc_loaded && fpt_services_load() != 0)
    return NULL;
  for (i = 0; i < nsvc; i++)
    if (strcmp(svc[i].key, key) == 0)
      return svc[i].value;
  return NULL;
}

static const char *services_need(const char *key) {
  const char *v = fpt_services_get(key);
  if ((!v || !*v) && svc_loaded)
    FPT_FAIL("%s missing from the services env file", key);
  return v && *v ? v : NULL;
}

const char *fpt_kafka_bootstrap(void) { return services_need("FP_TEST_KAFKA"); }
const char *fpt_redis_host(void) { return services_need("FP_TEST_REDIS_HOST"); }

int fpt_redis_port(void) {
  const char *v = services_need("FP_TEST_REDIS_PORT");
  char *end;
  long port;

  if (!v)
    return -1;
  errno = 0;
  port = strtol(v, &end, 10);
  if (errno || *end || port <= 0 || port > 65535) {
    FPT_FAIL("bad FP_TEST_REDIS_PORT '%s'", v);
    return -1;
  }
  return (int)port;
}

int fpt_services_cmd(const char *subcmd) {
  const char *envfile = getenv("FP_SERVICES_ENV");
  char script[4096];
  const char *argv[5];
  fpt_proc_t *p;
  int rc;

  if (!envfile || !*envfile) {
    FPT_FAIL("FP_SERVICES_ENV is not set");
    return -1;
  }
  snprintf(script, sizeof(script), "%s/tests/harness/services.sh", FP_SOURCE_DIR);
  argv[0] = "bash";
  argv[1] = script;
  argv[2] = subcmd;
  argv[3] = envfile;
  argv[4] = NULL;
  fpt_note("services.sh %s", subcmd);
  p = fpt_proc_spawn(argv, NULL, NULL);
  if (!p)
    return -1;
  rc = fpt_proc_wait(p, 180000);
  if (rc != 0) {
    fpt_proc_dump_log(p, 80);
    FPT_FAIL("services.sh %s failed (%d)", subcmd, rc);
  }
  unlink(fpt_proc_log(p));
  fpt_proc_free(p);
  fpt_services_load();
  return rc;
}

/* ------------------------------------------------------------------------------------ */
/* Kafka                                                                                 */
/* ------------------------------------------------------------------------------------ */

static rd_kafka_t *producer;   /* shared; created by get_producer(), freed by fpt_done() */
static unsigned topic_seq;

char *fpt_topic_name(const char *prefix) {
  size_t sz = strlen(prefix) + 64;
  char *name = malloc(sz);
  static int seeded;
  if (!seeded) {
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    seeded = 1;
  }
  if (name)
    snprintf(name, sz, "%s-%d-%u-%04x", prefix, (int)getpid(), ++topic_seq,
             (unsigned)rand() & 0xffff);
  return name;
}

static int conf_set(rd_kafka_conf_t *conf, const char *name, const char *value) {
  char errstr[256];
  if (rd_kafka_conf_set(conf, name, value, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK) {
    FPT_FAIL("rd_kafka_conf_set %s=%s: %s", name, value, errstr);
    return -1;
  }
  return 0;
}

rd_kafka_conf_t *fpt_kafka_conf(void) {
  const char *bootstrap = fpt_kafka_bootstrap();
  rd_kafka_conf_t *conf;

  if (!bootstrap)
    return NULL;
  conf = rd_kafka_conf_new();
  if (conf_set(conf, "bootstrap.servers", bootstrap) || conf_set(conf, "client.id", "fptest")) {
    rd_kafka_conf_destroy(conf);
    return NULL;
  }
  return conf;
}

static rd_kafka_t *kafka_new(rd_kafka_type_t type, rd_kafka_conf_t *conf) {
  char errstr[512];
  rd_kafka_t *rk = rd_kafka_new(type, conf, errstr, sizeof(errstr));
  if (!rk) {
    FPT_FAIL("rd_kafka_new: %s", errstr);
    rd_kafka_conf_destroy(conf);
  }
  return rk;
}

/* Per-call delivery tally, passed as each message's opaque. */
typedef struct dr_tally_s {
  size_t done;
  size_t failed;
  rd_kafka_resp_err_t first_err;
} dr_tally_t;

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
  dr_tally_t *t = m->_private;
  (void)rk;
  (void)opaque;
  if (!t)
    return;
  t->done++;
  if (m->err) {
    if (!t->failed)
      t->first_err = m->err;
    t->failed++;
  }
}

static rd_kafka_t *get_producer(void) {
  rd_kafka_conf_t *conf;
  if (producer)
    return producer;
  conf = fpt_kafka_conf();
  if (!conf)
    return NULL;
  if (conf_set(conf, "acks", "all") || conf_set(conf, "enable.idempotence", "true") ||
      conf_set(conf, "linger.ms", "5") || conf_set(conf, "message.max.bytes", "10000000") ||
      conf_set(conf, "message.timeout.ms", "110000")) {
    rd_kafka_conf_destroy(conf);
    return NULL;
  }
  rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
  producer = kafka_new(RD_KAFKA_PRODUCER, conf);
  return producer;
}

static void kafka_cleanup(void) {
  if (producer) {
    rd_kafka_flush(producer, 10000);
    rd_kafka_destroy(producer);
    producer = NULL;
  }
}

/* Waits for one admin result event of the given type. */
static rd_kafka_event_t *admin_wait(rd_kafka_queue_t *q, rd_kafka_event_type_t type, int ms) {
  int64_t end = fpt_now_ms() + ms;
  while (fpt_now_ms() < end) {
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 200);
    if (!ev)
      continue;
    if (rd_kafka_event_type(ev) == type)
      return ev;
    rd_kafka_event_destroy(ev);
  }
  return NULL;
}

typedef struct topic_ready_s {
  rd_kafka_t *rk;
  const char *topic;
  int partitions;
} topic_ready_t;

/* Partition count with leaders, from fresh metadata; -1 if the topic is unknown. */
static int topic_leaders(rd_kafka_t *rk, const char *topic, int *nparts) {
  const struct rd_kafka_metadata *md = NULL;
  rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
  int leaders = -1, i;

  *nparts = -1;
  if (!rkt)
    return -1;
  if (rd_kafka_metadata(rk, 0, rkt, &md, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR && md &&
      md->topic_cnt == 1 && md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR) {
    leaders = 0;
    *nparts = md->topics[0].partition_cnt;
    for (i = 0; i < md->topics[0].partition_cnt; i++)
      if (md->topics[0].partitions[i].leader >= 0 &&
          md->topics[0].partitions[i].err == RD_KAFKA_RESP_ERR_NO_ERROR)
        leaders++;
  }
  if (md)
    rd_kafka_metadata_destroy(md);
  rd_kafka_topic_destroy(rkt);
  return leaders;
}

static int topic_ready(void *arg) {
  topic_ready_t *t = arg;
  int nparts;
  return topic_leaders(t->rk, t->topic, &nparts) == t->partitions && nparts == t->partitions;
}

int fpt_topic_create(const char *topic, int partitions, const char *const *config) {
  rd_kafka_t *rk = get_producer();
  rd_kafka_NewTopic_t *nt;
  rd_kafka_queue_t *q;
  rd_kafka_event_t *ev;
  char errstr[512];
  int rc = -1;
  topic_ready_t tr;

  if (!rk)
    return -1;
  nt = rd_kafka_NewTopic_new(topic, partitions, 1, errstr, sizeof(errstr));
  if (!nt) {
    FPT_FAIL("NewTopic %s: %s", topic, errstr);
    return -1;
  }
  for (; config && config[0] && config[1]; config += 2) {
    if (rd_kafka_NewTopic_set_config(nt, config[0], config[1])) {
      FPT_FAIL("NewTopic %s: bad config %s", topic, config[0]);
      rd_kafka_NewTopic_destroy(nt);
      return -1;
    }
  }
  q = rd_kafka_queue_new(rk);
  rd_kafka_CreateTopics(rk, &nt, 1, NULL, q);
  ev = admin_wait(q, RD_KAFKA_EVENT_CREATETOPICS_RESULT, 60000);
  if (!ev) {
    FPT_FAIL("CreateTopics %s: no result within 60 s", topic);
  } else if (rd_kafka_event_error(ev)) {
    FPT_FAIL("CreateTopics %s: %s", topic, rd_kafka_event_error_string(ev));
  } else {
    size_t cnt;
    const rd_kafka_topic_result_t **res =
        rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &cnt);
    if (cnt != 1 || rd_kafka_topic_result_error(res[0]))
      FPT_FAIL("CreateTopics %s: %s", topic,
               cnt == 1 ? rd_kafka_topic_result_error_string(res[0]) : "no result");
    else
      rc = 0;
  }
  if (ev)
    rd_kafka_event_destroy(ev);
  rd_kafka_queue_destroy(q);
  rd_kafka_NewTopic_destroy(nt);
  if (rc == 0) {
    tr.rk = rk;
    tr.topic = topic;
    tr.partitions = partitions;
    if (!fpt_wait_until(topic_ready, &tr, 30000)) {
      FPT_FAIL("topic %s: partitions without leaders after 30 s", topic);
      rc = -1;
    }
  }
  return rc;
}

int fpt_topic_delete(const char *topic) {
  rd_kafka_t *rk = get_producer();
  rd_kafka_DeleteTopic_t *dt;
  rd_kafka_queue_t *q;
  rd_kafka_event_t *ev;
  int rc = -1;

  if (!rk)
    return -1;
  dt = rd_kafka_DeleteTopic_new(topic);
  q = rd_kafka_queue_new(rk);
  rd_kafka_DeleteTopics(rk, &dt, 1, NULL, q);
  ev = admin_wait(q, RD_KAFKA_EVENT_DELETETOPICS_RESULT, 60000);
  if (!ev) {
    FPT_FAIL("DeleteTopics %s: no result within 60 s", topic);
  } else if (rd_kafka_event_error(ev)) {
    FPT_FAIL("DeleteTopics %s: %s", topic, rd_kafka_event_error_string(ev));
  } else {
    size_t cnt;
    const rd_kafka_topic_result_t **res =
        rd_kafka_DeleteTopics_result_topics(rd_kafka_event_DeleteTopics_result(ev), &cnt);
    rd_kafka_resp_err_t err = cnt == 1 ? rd_kafka_topic_result_error(res[0])
                                       : RD_KAFKA_RESP_ERR__FAIL;
    if (err && err != RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
      FPT_FAIL("DeleteTopics %s: %s", topic, rd_kafka_err2str(err));
    else
      rc = 0;
  }
  if (ev)
    rd_kafka_event_destroy(ev);
  rd_kafka_queue_destroy(q);
  rd_kafka_DeleteTopic_destroy(dt);
  return rc;
}

int fpt_topic_partitions(const char *topic) {
  rd_kafka_t *rk = get_producer();
  int nparts;
  if (!rk)
    return -1;
  topic_leaders(rk, topic, &nparts);
  return nparts;
}

int fpt_produce(const char *topic, const fpt_msg_t *msgs, size_t n) {
  rd_kafka_t *rk = get_producer();
  dr_tally_t tally = {0, 0, RD_KAFKA_RESP_ERR_NO_ERROR};
  size_t i, enqueued = 0, undelivered;
  int64_t end = fpt_now_ms() + 120000;

  if (!rk)
    return (int)n;
  for (i = 0; i < n; i++) {
    const fpt_msg_t *m = &msgs[i];
    rd_kafka_headers_t *hdrs = NULL;
    rd_kafka_resp_err_t err;
    size_t h, klen = m->key && m->key_len == 0 ? strlen(m->key) : m->key_len;

    if (m->nheaders) {
      hdrs = rd_kafka_headers_new(m->nheaders);
      for (h = 0; h < m->nheaders; h++)
        rd_kafka_header_add(hdrs, m->headers[h].name, -1, m->headers[h].value,
                            m->headers[h].value ? (ssize_t)m->headers[h].len : 0);
    }
    for (;;) {
      err = rd_kafka_producev(
          rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(m->partition),
          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
          RD_KAFKA_V_KEY(m->key, klen), RD_KAFKA_V_VALUE((void *)m->value, m->len),
          RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_OPAQUE(&tally), RD_KAFKA_V_END);
      if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL || fpt_now_ms() > end)
        break;
      rd_kafka_poll(rk, 10);
    }
    if (err) {
      FPT_FAIL("produce to %s (message %zu): %s", topic, i, rd_kafka_err2str(err));
      if (hdrs)
        rd_kafka_headers_destroy(hdrs); /* not taken over on failure */
      continue;
    }
    enqueued++;
    rd_kafka_poll(rk, 0);
  }
  while (tally.done < enqueued && fpt_now_ms() < end)
    rd_kafka_poll(rk, 50);
  if (tally.done < enqueued) {
    FPT_FAIL("produce to %s: %zu of %zu delivery reports missing after 120 s", topic,
             enqueued - tally.done, enqueued);
    /* The tally lives on this stack frame: purge and drain so no report outlives it. */
    rd_kafka_purge(rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_flush(rk, 5000);
    producer = NULL;
    rd_kafka_destroy(rk);
  }
  if (tally.failed)
    FPT_FAIL("produce to %s: %zu of %zu messages failed, first error: %s", topic, tally.failed,
             n, rd_kafka_err2str(tally.first_err));
  undelivered = n - (tally.done - tally.failed);
  return (int)undelivered;
}

int fpt_produce1(const char *topic, int32_t partition, const char *key, const void *value,
                 size_t len) {
  fpt_msg_t m;
  memset(&m, 0, sizeof(m));
  m.partition = partition;
  m.key = key;
  m.key_len = key ? strlen(key) : 0;
  m.value = value;
  m.len = len;
  return fpt_produce(topic, &m, 1);
}

static rd_kafka_t *new_consumer(const char *group, fpt_isolation_t iso) {
  rd_kafka_conf_t *conf = fpt_kafka_conf();
  char gid[128];
  if (!conf)
    return NULL;
  if (!group) {
    snprintf(gid, sizeof(gid), "fptest-reader-%d-%u", (int)getpid(), ++topic_seq);
    group = gid;
  }
  if (conf_set(conf, "group.id", group) || conf_set(conf, "enable.auto.commit", "false") ||
      conf_set(conf, "enable.auto.offset.store", "false") ||
      conf_set(conf, "enable.partition.eof", "true") ||
      conf_set(conf, "auto.offset.reset", "earliest") ||
      conf_set(conf, "max.partition.fetch.bytes", "10000000") ||
      conf_set(conf, "receive.message.max.bytes", "100000000") ||
      conf_set(conf, "isolation.level",
               iso == FPT_READ_COMMITTED ? "read_committed" : "read_uncommitted")) {
    rd_kafka_conf_destroy(conf);
    return NULL;
  }
  return kafka_new(RD_KAFKA_CONSUMER, conf);
}

static char *dup_bytes(const void *p, size_t len) {
  char *d = malloc(len + 1);
  if (!d)
    return NULL;
  if (len)
    memcpy(d, p, len);
  d[len] = '\0';
  return d;
}

static int record_fill(fpt_record_t *r, const rd_kafka_message_t *m) {
  rd_kafka_headers_t *hdrs = NULL;
  memset(r, 0, sizeof(*r));
  r->partition = m->partition;
  r->offset = m->offset;
  r->timestamp = rd_kafka_message_timestamp(m, NULL);
  if (m->key) {
    r->key = dup_bytes(m->key, m->key_len);
    r->key_len = m->key_len;
    if (!r->key)
      return -1;
  }
  if (m->payload) {
    r->value = dup_bytes(m->payload, m->len);
    r->len = m->len;
    if (!r->value)
      return -1;
  }
  if (rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR && hdrs) {
    size_t cnt = rd_kafka_header_cnt(hdrs), i;
    r->headers = calloc(cnt ? cnt : 1, sizeof(*r->headers));
    if (!r->headers)
      return -1;
    for (i = 0; i < cnt; i++) {
      const char *name;
      const void *val;
      size_t vlen;
      if (rd_kafka_header_get_all(hdrs, i, &name, &val, &vlen))
        break;
      r->headers[i].name = strdup(name);
      r->headers[i].value = val ? dup_bytes(val, vlen) : NULL;
      r->headers[i].len = val ? vlen : 0;
      r->nheaders++;
    }
  }
  return 0;
}

static void record_clear(fpt_record_t *r) {
  size_t i;
  free(r->key);
  free(r->value);
  for (i = 0; i < r->nheaders; i++) {
    free(r->headers[i].name);
    free(r->headers[i].value);
  }
  free(r->headers);
}

void fpt_records_free(fpt_records_t *recs) {
  size_t i;
  if (!recs)
    return;
  for (i = 0; i < recs->n; i++)
    record_clear(&recs->recs[i]);
  free(recs->recs);
  free(recs);
}

const char *fpt_record_header(const fpt_record_t *rec, const char *name, size_t *lenp) {
  size_t i;
  const char *found = NULL;
  for (i = 0; i < rec->nheaders; i++) {
    if (strcmp(rec->headers[i].name, name) == 0) {
      found = rec->headers[i].value;
      if (lenp)
        *lenp = rec->headers[i].len;
    }
  }
  return found;
}

fpt_records_t *fpt_consume_all(const char *topic, fpt_isolation_t iso, int timeout_ms) {
  rd_kafka_t *rk;
  rd_kafka_topic_partition_list_t *parts = NULL;
  fpt_records_t *out;
  int64_t *end_off = NULL, *pos = NULL;
  int nparts = -1, i, remaining;
  size_t cap = 0;
  int64_t deadline = fpt_now_ms() + timeout_ms;
  rd_kafka_resp_err_t err;

  out = calloc(1, sizeof(*out));
  if (!out) {
    FPT_FAIL("fpt_consume_all: out of memory");
    return NULL;
  }
  rk = new_consumer(NULL, iso);
  if (!rk)
    goto err;
  topic_leaders(rk, topic, &nparts);
  if (nparts <= 0) {
    FPT_FAIL("fpt_consume_all: topic %s not found", topic);
    goto err;
  }
  end_off = calloc((size_t)nparts, sizeof(*end_off));
  pos = calloc((size_t)nparts, sizeof(*pos));
  if (!end_off || !pos)
    goto err;
  parts = rd_kafka_topic_partition_list_new(nparts);
  remaining = 0;
  for (i = 0; i < nparts; i++) {
    int64_t lo = 0, hi = 0;
    /* ListOffsets honours the consumer's isolation.level: LSO when read_committed. */
    err = rd_kafka_query_watermark_offsets(rk, topic, i, &lo, &hi, 10000);
    if (err) {
      FPT_FAIL("watermarks of %s[%d]: %s", topic, i, rd_kafka_err2str(err));
      goto err;
    }
    end_off[i] = hi;
    pos[i] = lo;
    if (hi > lo)
      remaining++;
    rd_kafka_topic_partition_list_add(parts, topic, i)->offset = RD_KAFKA_OFFSET_BEGINNING;
  }
  err = rd_kafka_assign(rk, parts);
  if (err) {
    FPT_FAIL("assign %s: %s", topic, rd_kafka_err2str(err));
    goto err;
  }
  while (remaining > 0 && fpt_now_ms() < deadline) {
    rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
    int p;
    if (!m)
      continue;
    p = m->partition;
    if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      if (p >= 0 && p < nparts && pos[p] < end_off[p] && m->offset >= end_off[p]) {
        pos[p] = m->offset;
        remaining--;
      }
    } else if (m->err) {
      /* Transient errors (broker restart) are retried by librdkafka; note them only. */
      fpt_note("consume %s: %s", topic, rd_kafka_message_errstr(m));
    } else if (p >= 0 && p < nparts) {
      if (out->n == cap) {
        size_t ncap = cap ? cap * 2 : 1024;
        fpt_record_t *n = realloc(out->recs, ncap * sizeof(*n));
        if (!n) {
          rd_kafka_message_destroy(m);
          FPT_FAIL("fpt_consume_all: out of memory");
          goto err;
        }
        out->recs = n;
        cap = ncap;
      }
      if (record_fill(&out->recs[out->n], m) != 0) {
        record_clear(&out->recs[out->n]);
        rd_kafka_message_destroy(m);
        FPT_FAIL("fpt_consume_all: out of memory");
        goto err;
      }
      out->n++;
      if (pos[p] < end_off[p] && m->offset + 1 >= end_off[p]) {
        pos[p] = m->offset + 1;
        remaining--;
      } else if (pos[p] < end_off[p]) {
        pos[p] = m->offset + 1;
      }
    }
    rd_kafka_message_destroy(m);
  }
  out->complete = remaining == 0;
  rd_kafka_topic_partition_list_destroy(parts);
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
  free(end_off);
  free(pos);
  return out;

err:
  if (parts)
    rd_kafka_topic_partition_list_destroy(parts);
  if (rk) {
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
  }
  free(end_off);
  free(pos);
  fpt_records_free(out);
  return NULL;
}

int fpt_high_watermarks(const char *topic, int nparts, int64_t *out) {
  rd_kafka_t *rk = get_producer();
  int i;
  if (!rk)
    return -1;
  for (i = 0; i < nparts; i++) {
    int64_t lo, hi;
    rd_kafka_resp_err_t err = rd_kafka_query_watermark_offsets(rk, topic, i, &lo, &hi, 10000);
    if (err) {
      FPT_FAIL("watermarks of %s[%d]: %s", topic, i, rd_kafka_err2str(err));
      return -1;
    }
    out[i] = hi;
  }
  return 0;
}

int fpt_committed_offsets(const char *group, const char *topic, int nparts, int64_t *out) {
  rd_kafka_t *rk = new_consumer(group, FPT_READ_UNCOMMITTED);
  rd_kafka_topic_partition_list_t *parts;
  rd_kafka_resp_err_t err;
  int i, rc = 0;

  if (!rk)
    return -1;
  parts = rd_kafka_topic_partition_list_new(nparts);
  for (i = 0; i < nparts; i++)
    rd_kafka_topic_partition_list_add(parts, topic, i);
  /* The coordinator may still be loading (fresh broker, restart): retry for a while. */
  {
    int64_t end = fpt_now_ms() + 60000;
    do {
      err = rd_kafka_committed(rk, parts, 10000);
    } while (err && fpt_now_ms() < end);
  }
  if (err) {
    FPT_FAIL("committed offsets of group %s: %s", group, rd_kafka_err2str(err));
    rc = -1;
  } else {
    for (i = 0; i < nparts; i++) {
      rd_kafka_topic_partition_t *tp = &parts->elems[i];
      if (tp->err) {
        FPT_FAIL("committed offset of %s[%d]: %s", topic, i, rd_kafka_err2str(tp->err));
        rc = -1;
      }
      out[i] = tp->offset;
    }
  }
  rd_kafka_topic_partition_list_destroy(parts);
  rd_kafka_destroy(rk); /* never subscribed: nothing to close */
  return rc;
}

/* ------------------------------------------------------------------------------------ */
/* Redis                                                                                 */
/* ------------------------------------------------------------------------------------ */

redisContext *fpt_redis_connect(void) {
  const char *host = fpt_redis_host();
  int port = fpt_redis_port();
  struct timeval tv = {5, 0};
  redisContext *c;

  if (!host || port < 0)
    return NULL;
  c = redisConnectWithTimeout(host, port, tv);
  if (!c) {
    FPT_FAIL("redis connect %s:%d: out of memory", host, port);
    return NULL;
  }
  if (c->err) {
    FPT_FAIL("redis connect %s:%d: %s", host, port, c->errstr);
    redisFree(c);
    return NULL;
  }
  redisSetTimeout(c, tv);
  return c;
}

redisReply *fpt_redis_cmd(redisContext *c, const char *fmt, ...) {
  va_list ap;
  redisReply *r;
  if (!c) {
    FPT_FAIL("fpt_redis_cmd: no connection");
    return NULL;
  }
  va_start(ap, fmt);
  r = redisvCommand(c, fmt, ap);
  va_end(ap);
  if (!r)
    FPT_FAIL("redis command '%s': %s", fmt, c->errstr[0] ? c->errstr : "no reply");
  return r;
}

/* ------------------------------------------------------------------------------------ */
/* Processes                                                                             */
/* ------------------------------------------------------------------------------------ */

struct fpt_proc_s {
  pid_t pid;
  int reaped;
  int result;   /* fpt_proc_wait() value once reaped */
  char *log;
  int own_log;  /* created by the library: deleted by fpt_proc_free() unless the case failed */
};

static int env_key_eq(const char *a, const char *b) {
  while (*a && *a != '=' && *a == *b) {
    a++;
    b++;
  }
  return (*a == '=' || !*a) && (*b == '=' || !*b);
}

fpt_proc_t *fpt_proc_spawn(const char *const *argv, const char *const *env,
                           const char *log_path) {
  fpt_proc_t *p = calloc(1, sizeof(*p));
  char **envp = NULL;
  size_t n_environ = 0, n_extra = 0, i, j, k = 0;
  int fd = -1;

  if (!p)
    goto err;
  if (log_path) {
    p->log = strdup(log_path);
  } else {
    const char *tmp = getenv("TMPDIR");
    size_t sz;
    if (!tmp || !*tmp)
      tmp = "/tmp";
    sz = strlen(tmp) + 32;
    p->log = malloc(sz);
    p->own_log = 1;
    if (p->log) {
      snprintf(p->log, sz, "%s/fpt-proc-XXXXXX", tmp);
      fd = mkstemp(p->log);
    }
  }
  if (!p->log)
    goto err;
  if (fd < 0)
    fd = open(p->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) {
    FPT_FAIL("fpt_proc_spawn: open %s: %s", p->log, strerror(errno));
    goto err;
  }
  /* Build the environment before fork: the child of a threaded parent may not malloc. */
  while (environ[n_environ])
    n_environ++;
  while (env && env[n_extra])
    n_extra++;
  envp = calloc(n_environ + n_extra + 1, sizeof(*envp));
  if (!envp)
    goto err;
  for (i = 0; i < n_environ; i++) {
    int overridden = 0;
    for (j = 0; j < n_extra; j++)
      if (env_key_eq(environ[i], env[j]))
        overridden = 1;
    if (!overridden)
      envp[k++] = environ[i];
  }
  for (j = 0; j < n_extra; j++)
    envp[k++] = (char *)env[j];
  envp[k] = NULL;

  fflush(stdout);
  fflush(stderr);
  p->pid = fork();
  if (p->pid < 0) {
    FPT_FAIL("fork: %s", strerror(errno));
    goto err;
  }
  if (p->pid == 0) {
    int nul = open("/dev/null", O_RDONLY);
    setpgid(0, 0);
    if (nul >= 0)
      dup2(nul, 0);
    dup2(fd, 1);
    dup2(fd, 2);
    execvpe(argv[0], (char *const *)argv, envp);
    _exit(127);
  }
  close(fd);
  free(envp);
  return p;

err:
  if (!p || !p->log)
    FPT_FAIL("fpt_proc_spawn %s: out of memory", argv[0]);
  if (fd >= 0)
    close(fd);
  free(envp);
  if (p)
    free(p->log);
  free(p);
  return NULL;
}

pid_t fpt_proc_pid(const fpt_proc_t *p) { return p->pid; }
const char *fpt_proc_log(const fpt_proc_t *p) { return p->log; }

static int proc_reap(fpt_proc_t *p, int flags) {
  int status;
  pid_t r;
  if (p->reaped)
    return 1;
  do {
    r = waitpid(p->pid, &status, flags);
  } while (r < 0 && errno == EINTR);
  if (r == 0)
    return 0;
  p->reaped = 1;
  if (r < 0)
    p->result = 255; /* already reaped elsewhere: unknown status */
  else if (WIFEXITED(status))
    p->result = WEXITSTATUS(status);
  else if (WIFSIGNALED(status))
    p->result = 128 + WTERMSIG(status);
  else
    p->result = 255;
  return 1;
}

int fpt_proc_running(fpt_proc_t *p) { return !proc_reap(p, WNOHANG); }

int fpt_proc_signal(fpt_proc_t *p, int sig) {
  if (!fpt_proc_running(p))
    return -1;
  return kill(p->pid, sig);
}

int fpt_proc_wait(fpt_proc_t *p, int timeout_ms) {
  int64_t end = fpt_now_ms() + timeout_ms;
  long delay_us = 500;
  for (;;) {
    if (proc_reap(p, WNOHANG))
      return p->result;
    if (fpt_now_ms() >= end)
      return -1;
    usleep((useconds_t)delay_us);
    if (delay_us < 20000)
      delay_us *= 2;
  }
}

int fpt_proc_kill(fpt_proc_t *p) {
  if (fpt_proc_running(p))
    kill(p->pid, SIGKILL);
  proc_reap(p, 0);
  return p->result;
}

char *fpt_proc_output(const fpt_proc_t *p, size_t *lenp) { return fpt_read_file(p->log, lenp); }

long fpt_failed_checks(void) { return cur_failures; }

void fpt_proc_dump_log(const fpt_proc_t *p, int max_lines) {
  size_t len, start;
  int lines = 0;
  char *text = fpt_read_file(p->log, &len);
  if (!text)
    return;
  start = len;
  while (start > 0) {
    if (text[start - 1] == '\n' && start != len && ++lines >= max_lines)
      break;
    start--;
  }
  fprintf(stderr, "---- %s (pid %d), last %d lines ----\n%s", p->log, (int)p->pid, max_lines,
          text + start);
  if (len && text[len - 1] != '\n')
    fputc('\n', stderr);
  fprintf(stderr, "---- end of %s ----\n", p->log);
  free(text);
}

void fpt_proc_free(fpt_proc_t *p) {
  if (!p)
    return;
  fpt_proc_kill(p);
  if (p->own_log && p->log) {
    if (cur_failures == 0 && !getenv("FPT_KEEP_LOGS"))
      unlink(p->log);
    else
      fpt_note("log of pid %d kept: %s", (int)p->pid, p->log);
  }
  free(p->log);
  free(p);
}
