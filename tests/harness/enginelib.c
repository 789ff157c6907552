/*
 * enginelib.c: scenarios for the kafka/ tests that run the real `flashpoint` binary (see
 * enginelib.h): unique topics/group/prefix, a deterministic mention generator, starting
 * the engine, waiting for committed == end, and reading windows and incidents back.
 *
 * Invariant: everything an env creates (topics it owns, Redis keys under its prefix) is
 * removed by fpe_env_cleanup(), so tests leave the shared services as they found them.
 */
#include "enginelib.h"

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <unistd.h>

#include <jansson.h>

static unsigned env_seq;

static int make_names(fpe_env_t *env, const char *name) {
  char tag[96];
  snprintf(tag, sizeof(tag), "%s-out", name);
  env->out = fpt_topic_name(tag);
  snprintf(tag, sizeof(tag), "%s-dlq", name);
  env->dlq = fpt_topic_name(tag);
  snprintf(tag, sizeof(tag), "%s-group", name);
  env->group = fpt_topic_name(tag);
  snprintf(env->prefix, sizeof(env->prefix), "fpt-%s-%d-%u", name, (int)getpid(), ++env_seq);
  if (!env->out || !env->dlq || !env->group) {
    FPT_FAIL("fpe_env_init: out of memory");
    return -1;
  }
  if (fpt_topic_create(env->out, 1, NULL) != 0 || fpt_topic_create(env->dlq, 1, NULL) != 0)
    return -1;
  return 0;
}

int fpe_env_init(fpe_env_t *env, const char *name, const char *rules_subdir, int nparts) {
  char tag[96];
  memset(env, 0, sizeof(*env));
  if (nparts < 1 || nparts > FPE_MAX_PARTS) {
    FPT_FAIL("fpe_env_init: %d partitions (1..%d)", nparts, FPE_MAX_PARTS);
    return -1;
  }
  env->nparts = nparts;
  snprintf(env->rules, sizeof(env->rules), "%s/tests/kafka/%s", FP_SOURCE_DIR, rules_subdir);
  snprintf(tag, sizeof(tag), "%s-in", name);
  env->in = fpt_topic_name(tag);
  env->own_in = 1;
  if (!env->in) {
    FPT_FAIL("fpe_env_init: out of memory");
    return -1;
  }
  if (fpt_topic_create(env->in, nparts, NULL) != 0) return -1;
  return make_names(env, name);
}

int fpe_env_init_sibling(fpe_env_t *env, const fpe_env_t *base, const char *name) {
  memset(env, 0, sizeof(*env));
  env->nparts = base->nparts;
  memcpy(env->rules, base->rules, sizeof(env->rules));
  env->in = base->in;
  env->own_in = 0;
  return make_names(env, name);
}

static void redis_delete_prefix(const char *prefix) {
  redisContext *c = fpt_redis_connect();
  char cursor[32] = "0";
  if (!c) return;
  do {
    redisReply *r = fpt_redis_cmd(c, "SCAN %s MATCH %s:* COUNT 1000", cursor, prefix);
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
      freeReplyObject(r);
      break;
    }
    snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
    for (size_t i = 0; i < r->element[1]->elements; i++) {
      redisReply *d = fpt_redis_cmd(c, "UNLINK %s", r->element[1]->element[i]->str);
      freeReplyObject(d);
    }
    freeReplyObject(r);
  } while (strcmp(cursor, "0") != 0);
  redisFree(c);
}

void fpe_env_cleanup(fpe_env_t *env) {
  if (env->own_in && env->in) fpt_topic_delete(env->in);
  if (env->out) fpt_topic_delete(env->out);
  if (env->dlq) fpt_topic_delete(env->dlq);
  if (env->prefix[0]) redis_delete_prefix(env->prefix);
  if (env->own_in) free(env->in);
  free(env->out), free(env->dlq), free(env->group);
  memset(env, 0, sizeof(*env));
}

/* ------------------------------------------------------------------------------------ */
/* Input                                                                                 */

int fpe_is_alarm(int seq, int brand) {
  /* 8 brands have ALARM bursts of 3000 sequence numbers, each in its own phase of 4 */
  return brand % 8 == 0 && (seq / 3000) % 4 == (brand / 8) % 4;
}

int fpe_produce(const char *topic, const fpe_gen_t *g, fpe_gen_count_t *count) {
  size_t cap = (size_t)g->n + (g->bad_every > 0 ? (size_t)(g->n / g->bad_every) + 1 : 0), n = 0;
  fpt_msg_t *msgs = calloc(cap ? cap : 1, sizeof(*msgs));
  char (*keys)[24] = calloc(cap ? cap : 1, sizeof(*keys));
  char (*vals)[384] = calloc(cap ? cap : 1, sizeof(*vals));
  int rc = 0;

  if (!msgs || !keys || !vals) {
    FPT_FAIL("fpe_produce: out of memory");
    rc = -1;
    goto out;
  }
  for (int s = g->first; s < g->first + g->n; s++) {
    int b = s % g->nbrands, alarm = fpe_is_alarm(s, b) && (g->alarm_until <= 0 || s < g->alarm_until);
    int64_t t = g->t0_ms + (int64_t)s * g->step_ms;
    snprintf(keys[n], sizeof(keys[n]), "brand-%02d", b);
    snprintf(vals[n], sizeof(vals[n]),
             "{\"id\":\"m-%d\",\"platform\":\"x\",\"brand\":\"%s\",\"author\":{\"id\":\"u%d\","
             "\"followers\":%d},\"text\":\"%s %s mention %d\",\"lang\":\"en\",\"created_at\":%" PRId64 "}",
             s, keys[n], s % 101, (s * 37) % 10007, alarm ? "ALARM:" : "ordinary", keys[n], s, t);
    msgs[n].partition = RD_KAFKA_PARTITION_UA;
    msgs[n].key = keys[n];
    msgs[n].value = vals[n];
    msgs[n].len = strlen(vals[n]);
    n++;
    count->valid++;
    if (alarm) count->alarm++;
    if (g->bad_every > 0 && s % g->bad_every == g->bad_every - 1) {
      snprintf(keys[n], sizeof(keys[n]), "brand-%02d", b);
      if ((s / g->bad_every) % 2 == 0) /* truncated JSON */
        snprintf(vals[n], sizeof(vals[n]), "{\"id\":\"bad-%d\",\"brand\":\"%s\",\"text\":", s, keys[n]);
      else /* valid JSON without an id */
        snprintf(vals[n], sizeof(vals[n]),
                 "{\"brand\":\"%s\",\"author\":{\"id\":\"u1\"},\"text\":\"no id\",\"created_at\":%" PRId64 "}",
                 keys[n], t);
      msgs[n].partition = RD_KAFKA_PARTITION_UA;
      msgs[n].key = keys[n];
      msgs[n].value = vals[n];
      msgs[n].len = strlen(vals[n]);
      n++;
      count->bad++;
    }
  }
  if (fpt_produce(topic, msgs, n) != 0) rc = -1;
out:
  free(msgs), free(keys), free(vals);
  return rc;
}

/* ------------------------------------------------------------------------------------ */
/* Engine                                                                                */

fpt_proc_t *fpe_engine_start(const fpe_env_t *env, const char *const *extra, const char *log_path) {
  enum { NFIXED = 10, NMAX = 64 };
  char fixed[NFIXED][600], bin[512];
  const char *argv[2 + 2 * NMAX + 1];
  size_t a = 0, nextra = 0;
  const char *bootstrap = fpt_kafka_bootstrap();
  int port = fpt_redis_port();

  if (!bootstrap || port < 0) return NULL;
  while (extra && extra[nextra]) nextra++;
  if (nextra > NMAX - NFIXED) {
    FPT_FAIL("fpe_engine_start: too many settings");
    return NULL;
  }
  snprintf(bin, sizeof(bin), "%s/flashpoint", FP_BINARY_DIR);
  snprintf(fixed[0], sizeof(fixed[0]), "rules.dir=%s", env->rules);
  snprintf(fixed[1], sizeof(fixed[1]), "input.topics=%s", env->in);
  snprintf(fixed[2], sizeof(fixed[2]), "output.topic=%s", env->out);
  snprintf(fixed[3], sizeof(fixed[3]), "dlq.topic=%s", env->dlq);
  snprintf(fixed[4], sizeof(fixed[4]), "group.id=%s", env->group);
  snprintf(fixed[5], sizeof(fixed[5]), "kafka.bootstrap.servers=%s", bootstrap);
  snprintf(fixed[6], sizeof(fixed[6]), "redis.host=%s", fpt_redis_host());
  snprintf(fixed[7], sizeof(fixed[7]), "redis.port=%d", port);
  snprintf(fixed[8], sizeof(fixed[8]), "redis.prefix=%s", env->prefix);
  snprintf(fixed[9], sizeof(fixed[9]), "commit.interval.ms=200");
  argv[a++] = bin;
  argv[a++] = "run";
  for (int i = 0; i < NFIXED; i++) argv[a++] = "-s", argv[a++] = fixed[i];
  for (size_t i = 0; i < nextra; i++) argv[a++] = "-s", argv[a++] = extra[i];
  argv[a] = NULL;
  return fpt_proc_spawn(argv, NULL, log_path);
}

int64_t fpe_committed(const fpe_env_t *env, int64_t *out) {
  int64_t c[FPE_MAX_PARTS], sum = 0;
  if (fpt_committed_offsets(env->group, env->in, env->nparts, c) != 0) return -1;
  for (int i = 0; i < env->nparts; i++) {
    if (out) out[i] = c[i];
    if (c[i] >= 0) sum += c[i];
  }
  return sum;
}

int64_t fpe_end_offsets(const fpe_env_t *env, int64_t *out) {
  int64_t hw[FPE_MAX_PARTS], sum = 0;
  if (fpt_high_watermarks(env->in, env->nparts, hw) != 0) return -1;
  for (int i = 0; i < env->nparts; i++) {
    if (out) out[i] = hw[i];
    sum += hw[i];
  }
  return sum;
}

/* Polls the committed offsets every 200 ms (each poll is a fresh consumer: not cheap). */
static int wait_committed(const fpe_env_t *env, const int64_t *end, int64_t target,
                          fpt_proc_t *proc, int deadline_ms) {
  int64_t stop = fpt_now_ms() + deadline_ms;
  for (;;) {
    int64_t c[FPE_MAX_PARTS], sum = fpe_committed(env, c);
    int ok = sum >= 0;
    if (ok && end) {
      for (int i = 0; i < env->nparts; i++) /* nothing committed equals an empty partition */
        if ((c[i] < 0 ? 0 : c[i]) != end[i]) ok = 0;
    } else if (ok) {
      ok = sum >= target;
    }
    if (ok) return 1;
    if (fpt_now_ms() >= stop || (proc && !fpt_proc_running(proc))) return 0;
    usleep(200000);
  }
}

int fpe_wait_committed(const fpe_env_t *env, const int64_t *end, fpt_proc_t *proc, int deadline_ms) {
  return wait_committed(env, end, 0, proc, deadline_ms);
}

int fpe_wait_committed_sum(const fpe_env_t *env, int64_t target, fpt_proc_t *proc, int deadline_ms) {
  return wait_committed(env, NULL, target, proc, deadline_ms);
}

int fpe_run_to_end(const fpe_env_t *env, const char *const *extra, int deadline_ms) {
  int64_t end[FPE_MAX_PARTS];
  fpt_proc_t *p;
  int ok, rc;
  if (fpe_end_offsets(env, end) < 0) return -1;
  if (!(p = fpe_engine_start(env, extra, NULL))) return -1;
  ok = fpe_wait_committed(env, end, p, deadline_ms);
  FPT_CHECK(ok, "reference run (%s) committed to the end within %d ms", env->group, deadline_ms);
  fpt_proc_signal(p, SIGTERM);
  rc = fpt_proc_wait(p, 10000);
  FPT_CHECK(rc == 0, "reference engine exit code %d after SIGTERM", rc);
  if (!ok || rc != 0) fpt_proc_dump_log(p, 60);
  fpt_proc_free(p);
  return ok && rc == 0 ? 0 : -1;
}

int fpe_log_count(const fpt_proc_t *proc, const char *needle) {
  char *text = fpt_proc_output(proc, NULL), *line, *save = NULL;
  int n = 0;
  if (!text) return 0;
  for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
    if (strstr(line, needle)) n++;
  free(text);
  return n;
}

int fpe_log_assigned(const fpt_proc_t *proc) {
  char *text = fpt_proc_output(proc, NULL), *at;
  int found = 0;
  for (at = text; at && (at = strstr(at, "assigned ")) != NULL; at += 9) {
    long n = strtol(at + 9, NULL, 10);
    if (n > 0 && at > text && at[-1] == ' ') found = 1; /* not "unassigned" */
  }
  free(text);
  return found;
}

int fpe_wait_assigned(fpt_proc_t *proc, int deadline_ms) {
  int64_t stop = fpt_now_ms() + deadline_ms;
  for (;;) {
    if (fpe_log_assigned(proc)) return 1;
    if (fpt_now_ms() >= stop || !fpt_proc_running(proc)) return 0;
    usleep(50000);
  }
}

/* ------------------------------------------------------------------------------------ */
/* Results                                                                               */

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static int is_bucket_field(const char *f) {
  if (*f == '-') f++;
  if (!*f) return 0;
  for (; *f; f++)
    if (*f < '0' || *f > '9') return 0;
  return 1;
}

typedef struct {
  char **v;
  size_t n, cap;
} strvec_t;

static int strvec_add(strvec_t *s, char *str) {
  if (!str) return -1;
  if (s->n == s->cap) {
    size_t cap = s->cap ? s->cap * 2 : 256;
    char **v = realloc(s->v, cap * sizeof(*v));
    if (!v) {
      free(str);
      return -1;
    }
    s->v = v, s->cap = cap;
  }
  s->v[s->n++] = str;
  return 0;
}

char **fpe_windows_dump(const fpe_env_t *env, const char *rule_id, size_t *n) {
  redisContext *c = fpt_redis_connect();
  strvec_t keys = {0}, lines = {0};
  char cursor[32] = "0";
  int err = 0;

  *n = 0;
  if (!c) return NULL;
  do {
    redisReply *r = fpt_redis_cmd(c, "SCAN %s MATCH %s:w:%s|* COUNT 1000", cursor, env->prefix, rule_id);
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
      FPT_FAIL("SCAN of %s windows failed", rule_id);
      freeReplyObject(r);
      err = 1;
      break;
    }
    snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
    for (size_t i = 0; i < r->element[1]->elements && !err; i++)
      err = strvec_add(&keys, strdup(r->element[1]->element[i]->str)) != 0;
    freeReplyObject(r);
  } while (!err && strcmp(cursor, "0") != 0);
  for (size_t k = 0; k < keys.n && !err; k++) {
    redisReply *r = fpt_redis_cmd(c, "HGETALL %s", keys.v[k]);
    if (!r || r->type != REDIS_REPLY_ARRAY) {
      FPT_FAIL("HGETALL %s failed", keys.v[k]);
      freeReplyObject(r);
      err = 1;
      break;
    }
    /* the key without the prefix, so dumps of two prefixes compare */
    const char *shortkey = keys.v[k] + strlen(env->prefix);
    for (size_t i = 0; i + 1 < r->elements && !err; i += 2) {
      const char *f = r->element[i]->str, *v = r->element[i + 1]->str;
      size_t len;
      char *line;
      if (!is_bucket_field(f)) continue;
      len = strlen(shortkey) + strlen(f) + strlen(v) + 3;
      if ((line = malloc(len))) snprintf(line, len, "%s %s %s", shortkey, f, v);
      err = strvec_add(&lines, line) != 0;
    }
    freeReplyObject(r);
  }
  redisFree(c);
  fpe_lines_free(keys.v, keys.n);
  if (err) {
    fpe_lines_free(lines.v, lines.n);
    return NULL;
  }
  if (lines.n) qsort(lines.v, lines.n, sizeof(*lines.v), cmp_str);
  *n = lines.n;
  return lines.v ? lines.v : calloc(1, sizeof(char *));
}

int64_t fpe_windows_sum(const fpe_env_t *env, const char *rule_id) {
  size_t n;
  char **lines = fpe_windows_dump(env, rule_id, &n);
  int64_t sum = 0;
  if (!lines) return -1;
  for (size_t i = 0; i < n; i++) {
    const char *v = strrchr(lines[i], ' ');
    sum += v ? strtoll(v + 1, NULL, 10) : 0;
  }
  fpe_lines_free(lines, n);
  return sum;
}

void fpe_lines_free(char **lines, size_t n) {
  if (!lines) return;
  for (size_t i = 0; i < n; i++) free(lines[i]);
  free(lines);
}

int fpe_lines_check_equal(char **a, size_t na, char **b, size_t nb, const char *what) {
  size_t i = 0, j = 0, shown = 0, diffs = 0;
  while (i < na || j < nb) {
    int c = i == na ? 1 : j == nb ? -1 : strcmp(a[i], b[j]);
    if (c == 0) {
      i++, j++;
      continue;
    }
    diffs++;
    if (shown++ < 8) fprintf(stderr, "  %s: only in %s: %s\n", what, c < 0 ? "got" : "want", c < 0 ? a[i] : b[j]);
    if (c < 0) i++;
    else j++;
  }
  return FPT_CHECK(diffs == 0, "%s: %zu line(s) differ (got %zu, want %zu)", what, diffs, na, nb);
}

typedef struct {
  char *id, *payload;
  size_t len;
} evrec_t;

static int cmp_evrec(const void *a, const void *b) {
  const evrec_t *x = a, *y = b;
  return strcmp(x->id, y->id);
}

fpe_events_t *fpe_events_read(const char *topic) {
  fpt_records_t *r = fpt_consume_all(topic, FPT_READ_COMMITTED, 60000);
  fpe_events_t *ev = calloc(1, sizeof(*ev));
  evrec_t *recs = NULL;
  size_t nrecs = 0;

  if (!r || !ev) {
    fpt_records_free(r);
    free(ev);
    if (r) FPT_FAIL("fpe_events_read: out of memory");
    return NULL;
  }
  ev->complete = r->complete;
  ev->records = r->n;
  recs = calloc(r->n ? r->n : 1, sizeof(*recs));
  ev->ids = calloc(r->n ? r->n : 1, sizeof(char *));
  ev->payloads = calloc(r->n ? r->n : 1, sizeof(char *));
  if (!recs || !ev->ids || !ev->payloads) {
    FPT_FAIL("fpe_events_read: out of memory");
    goto out;
  }
  for (size_t i = 0; i < r->n; i++) {
    json_error_t jerr;
    json_t *doc = r->recs[i].value ? json_loadb(r->recs[i].value, r->recs[i].len, 0, &jerr) : NULL;
    const char *id = json_string_value(json_object_get(doc, "event_id"));
    if (!id) {
      ev->bad++;
    } else {
      recs[nrecs].id = strdup(id);
      recs[nrecs].payload = r->recs[i].value;
      recs[nrecs].len = r->recs[i].len;
      nrecs++;
    }
    json_decref(doc);
  }
  /* stable order of copies does not matter: any two copies must be byte-identical */
  qsort(recs, nrecs, sizeof(*recs), cmp_evrec);
  for (size_t i = 0; i < nrecs; i++) {
    if (ev->n > 0 && strcmp(ev->ids[ev->n - 1], recs[i].id) == 0) {
      if (strcmp(ev->payloads[ev->n - 1], recs[i].payload) != 0) {
        if (ev->conflicts++ < 3)
          fprintf(stderr, "  event %s has two different payloads:\n    %s\n    %s\n", recs[i].id,
                  ev->payloads[ev->n - 1], recs[i].payload);
      }
      free(recs[i].id);
      continue;
    }
    ev->ids[ev->n] = recs[i].id;
    ev->payloads[ev->n] = strdup(recs[i].payload);
    ev->n++;
  }
out:
  free(recs);
  fpt_records_free(r);
  return ev;
}

void fpe_events_free(fpe_events_t *ev) {
  if (!ev) return;
  for (size_t i = 0; i < ev->n; i++) free(ev->ids[i]), free(ev->payloads[i]);
  free(ev->ids), free(ev->payloads);
  free(ev);
}

int fpe_events_check_equal(const fpe_events_t *got, const fpe_events_t *want) {
  size_t i = 0, j = 0, missing = 0, extra = 0, differ = 0, shown = 0;
  int ok = 1;
  ok &= FPT_CHECK(got->complete && want->complete, "both output topics read to the end");
  ok &= FPT_CHECK(got->conflicts == 0, "%zu event id(s) with two different payloads", got->conflicts);
  ok &= FPT_CHECK(got->bad == 0, "%zu output record(s) without an event_id", got->bad);
  while (i < got->n || j < want->n) {
    int c = i == got->n ? 1 : j == want->n ? -1 : strcmp(got->ids[i], want->ids[j]);
    if (c == 0) {
      if (strcmp(got->payloads[i], want->payloads[j]) != 0) {
        differ++;
        if (shown++ < 4)
          fprintf(stderr, "  event %s differs from the reference:\n    got  %s\n    want %s\n",
                  got->ids[i], got->payloads[i], want->payloads[j]);
      }
      i++, j++;
    } else if (c < 0) {
      extra++;
      if (shown++ < 8) fprintf(stderr, "  extra event %s: %s\n", got->ids[i], got->payloads[i]);
      i++;
    } else {
      missing++;
      if (shown++ < 8) fprintf(stderr, "  missing event %s: %s\n", want->ids[j], want->payloads[j]);
      j++;
    }
  }
  ok &= FPT_CHECK(missing == 0 && extra == 0 && differ == 0,
                  "incident events vs reference: %zu missing, %zu extra, %zu with other bytes "
                  "(got %zu distinct of %zu records, want %zu)",
                  missing, extra, differ, got->n, got->records, want->n);
  return ok;
}

int64_t fpe_topic_count(const char *topic) {
  fpt_records_t *r = fpt_consume_all(topic, FPT_READ_COMMITTED, 60000);
  int64_t n;
  if (!r) return -1;
  if (!r->complete) FPT_FAIL("topic %s not read to the end", topic);
  n = r->complete ? (int64_t)r->n : -1;
  fpt_records_free(r);
  return n;
}

size_t fpe_events_count_rule(const fpe_events_t *ev, const char *rule_id) {
  size_t n = 0;
  char needle[160];
  snprintf(needle, sizeof(needle), "\"id\":\"%s\"", rule_id);
  for (size_t i = 0; ev && i < ev->n; i++)
    if (strstr(ev->payloads[i], needle)) n++;
  return n;
}

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

int64_t fpe_dlq_distinct(const char *topic, int64_t *records) {
  fpt_records_t *r = fpt_consume_all(topic, FPT_READ_COMMITTED, 60000);
  int64_t *keys, n = 0;
  if (!r) return -1;
  if (!r->complete) FPT_FAIL("dead-letter topic %s not read to the end", topic);
  if (records) *records = (int64_t)r->n;
  keys = calloc(r->n ? r->n : 1, sizeof(*keys));
  if (!keys) {
    fpt_records_free(r);
    return -1;
  }
  for (size_t i = 0; i < r->n; i++) {
    const char *part = fpt_record_header(&r->recs[i], "x-err-partition", NULL);
    const char *off = fpt_record_header(&r->recs[i], "x-err-offset", NULL);
    if (!part || !off) {
      FPT_FAIL("dead letter %zu without x-err-partition/x-err-offset", i);
      continue;
    }
    keys[n++] = strtoll(part, NULL, 10) * 1000000000LL + strtoll(off, NULL, 10);
  }
  qsort(keys, (size_t)n, sizeof(*keys), cmp_i64);
  int64_t distinct = 0;
  for (int64_t i = 0; i < n; i++)
    if (i == 0 || keys[i] != keys[i - 1]) distinct++;
  free(keys);
  fpt_records_free(r);
  return distinct;
}

int fpe_fences(const fpe_env_t *env, int lifecycle, int64_t *out) {
  redisContext *c = fpt_redis_connect();
  int rc = 0;
  if (!c) return -1;
  for (int i = 0; i < env->nparts; i++) {
    redisReply *r = fpt_redis_cmd(c, "GET %s:%s:%s:%d", env->prefix, lifecycle ? "lcf" : "fence", env->in, i);
    if (!r || (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_NIL)) {
      FPT_FAIL("reading the fence of partition %d failed", i);
      rc = -1;
    } else {
      out[i] = r->type == REDIS_REPLY_STRING ? strtoll(r->str, NULL, 10) : -1;
    }
    freeReplyObject(r);
  }
  redisFree(c);
  return rc;
}

int64_t fpe_applied_uncommitted(const fpe_env_t *env) {
  int64_t c[FPE_MAX_PARTS], f[FPE_MAX_PARTS], lf[FPE_MAX_PARTS], n = 0;
  fpe_committed(env, c);
  if (fpe_fences(env, 0, f) != 0 || fpe_fences(env, 1, lf) != 0) return -1;
  for (int i = 0; i < env->nparts; i++) {
    int64_t from = c[i] < 0 ? 0 : c[i], upto = f[i] > lf[i] ? f[i] : lf[i];
    if (upto + 1 > from) n += upto + 1 - from;
  }
  return n;
}

int64_t fpe_redis_evalsha_calls(void) {
  redisContext *c = fpt_redis_connect();
  redisReply *r;
  int64_t calls = -1;
  if (!c) return -1;
  r = fpt_redis_cmd(c, "INFO commandstats");
  if (r && r->type == REDIS_REPLY_STRING) {
    const char *at = strstr(r->str, "cmdstat_evalsha:calls=");
    calls = at ? strtoll(at + strlen("cmdstat_evalsha:calls="), NULL, 10) : 0;
  }
  freeReplyObject(r);
  redisFree(c);
  return calls;
}

size_t fpe_events_count_status(const fpe_events_t *ev, const char *status) {
  size_t n = 0;
  char needle[96];
  snprintf(needle, sizeof(needle), "\"status\":\"%s\"", status);
  for (size_t i = 0; ev && i < ev->n; i++)
    if (strstr(ev->payloads[i], needle)) n++;
  return n;
}

redisContext *fpe_monitor_start(void) {
  redisContext *c = fpt_redis_connect();
  redisReply *r;
  if (!c) return NULL;
  r = fpt_redis_cmd(c, "MONITOR");
  if (!r || r->type != REDIS_REPLY_STATUS) {
    FPT_FAIL("MONITOR refused");
    freeReplyObject(r);
    redisFree(c);
    return NULL;
  }
  freeReplyObject(r);
  return c;
}

int64_t fpe_monitor_count(redisContext *c, int duration_ms, const char *const *needles) {
  int64_t stop = fpt_now_ms() + duration_ms, n = 0;
  if (!c) return -1;
  for (;;) {
    void *reply = NULL;
    /* drain what the reader already holds, then wait for more on the socket */
    while (redisGetReplyFromReader(c, &reply) == REDIS_OK && reply) {
      redisReply *r = reply;
      int match = r->type == REDIS_REPLY_STATUS && r->str;
      for (size_t i = 0; match && needles[i]; i++)
        if (!strstr(r->str, needles[i])) match = 0;
      if (match && n++ < 3) fpt_note("monitor: %.200s", r->str);
      freeReplyObject(r);
      reply = NULL;
    }
    int64_t left = stop - fpt_now_ms();
    if (left <= 0) return n;
    struct pollfd pfd = {c->fd, POLLIN, 0};
    int pr = poll(&pfd, 1, (int)left);
    if (pr < 0) return -1;
    if (pr > 0 && redisBufferRead(c) != REDIS_OK) {
      FPT_FAIL("MONITOR connection: %s", c->errstr);
      return -1;
    }
  }
}

void fpe_monitor_stop(redisContext *c) {
  if (c) redisFree(c);
}

void fpe_windows_check_equal(const fpe_env_t *got, const fpe_env_t *want, const char *rule_id) {
  size_t ng = 0, nw = 0;
  char **g = fpe_windows_dump(got, rule_id, &ng), **w = fpe_windows_dump(want, rule_id, &nw);
  char what[96];
  snprintf(what, sizeof(what), "%s windows vs reference", rule_id);
  if (g && w) {
    FPT_CHECK(nw > 0, "reference has %s windows", rule_id);
    fpe_lines_check_equal(g, ng, w, nw, what);
  }
  fpe_lines_free(g, ng);
  fpe_lines_free(w, nw);
}
