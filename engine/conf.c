/*
 * conf.c - owns the configuration table: every engine setting is one row (name, type,
 * default, range, description, field). Setting, printing, the config file and environment
 * overrides all walk this table, so there is one place to add a setting and the help text
 * can never disagree with the parser. Keys under kafka.*, consumer.* and producer.* are
 * kept verbatim and handed to librdkafka, which validates them when the clients are built.
 */
#include "conf.h"

#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "util.h"

typedef enum { T_STR, T_INT, T_SIZE, T_DURATION, T_BOOL, T_ENUM } fp_ctype_t;

typedef struct fp_confdef_s {
  const char *name;
  fp_ctype_t type;
  const char *def;
  int64_t min, max;
  const char *choices; /* T_ENUM: "a|b|c", index is the stored value */
  size_t field;
  int secret;
  const char *desc;
} fp_confdef_t;

#define F(x) offsetof(struct fp_conf_s, x)
#define I64MAX INT64_MAX

static const fp_confdef_t fp_confdefs[] = {
    {"input.topics", T_STR, "mentions", 0, 0, NULL, F(input_topics), 0,
     "Comma-separated input topics of JSON mentions."},
    {"input.mapping", T_STR, "", 0, 0, NULL, F(input_mapping), 0,
     "Schema mapping file (docs/tools.md): maps each input topic's documents to the mention "
     "model before decoding; empty: inputs are mentions already."},
    {"group.id", T_STR, "flashpoint", 0, 0, NULL, F(group_id), 0,
     "Kafka consumer group; run more instances with the same group to scale out."},
    {"input.max.bytes", T_SIZE, "1048576", 64, 64LL << 20, NULL, F(input_max_bytes), 0,
     "Messages larger than this are dead-lettered (too_large) without being parsed."},
    {"output.topic", T_STR, "incidents", 0, 0, NULL, F(output_topic), 0,
     "Default topic for incident events (rules may route severities elsewhere)."},
    {"dlq.topic", T_STR, "mentions.dlq", 0, 0, NULL, F(dlq_topic), 0,
     "Dead-letter topic: bad input, with the reason in x-err-* headers."},
    {"rules.dir", T_STR, "rules", 0, 0, NULL, F(rules_dir), 0,
     "Directory of rule files (*.lua); lib/ beside them is the rules' library."},
    {"rules.instructions", T_INT, "1000000", 1000, 1000000000, NULL, F(rules_instructions), 0,
     "Instruction budget of one rule function call."},
    {"rules.memory", T_SIZE, "67108864", 1 << 20, 4LL << 30, NULL, F(rules_memory), 0,
     "Memory cap of each worker's Lua state, in bytes."},
    {"rules.deadline.ms", T_INT, "250", 1, 60000, NULL, F(rules_deadline_ms), 0,
     "Wall-clock deadline of one rule function call."},
    {"rules.quarantine.after", T_INT, "5", 1, 1000000, NULL, F(rules_quarantine_after), 0,
     "Consecutive failures after which a rule is quarantined (skipped until reload)."},
    {"rules.watch", T_BOOL, "true", 0, 1, NULL, F(rules_watch), 0,
     "Reload the rules when a file in rules.dir (or lib/) changes."},
    {"rules.watchdog.ms", T_INT, "0", 0, 600000, NULL, F(rules_watchdog_ms), 0,
     "A rule call longer than this aborts the process (0: max(10 x rules.deadline.ms, 2000))."},
    {"rules.strikes.dir", T_STR, "", 0, 0, NULL, F(rules_strikes_dir), 0,
     "Where the watchdog records strikes (outside rules.dir; empty: none)."},
    {"rules.strikes.quarantine", T_INT, "3", 1, 1000, NULL, F(rules_strikes_quarantine), 0,
     "Watchdog strikes after which a rule loads quarantined."},
    {"workers", T_INT, "0", 0, 256, NULL, F(workers), 0,
     "Worker threads, each with its own Lua state and Redis connection; 0 = two per core (a "
     "worker waits on the store about as long as it computes)."},
    {"batch.size", T_INT, "8000", 1, 100000, NULL, F(batch_size), 0,
     "Mentions of one partition a worker evaluates per state-store round trip (at most). The "
     "store pays once per window a round trip touches, so larger runs cost less per mention "
     "under backlog (8000 against 4000: +15% at steady state, +30 MB of RSS a worker); at "
     "moderate rates runs are smaller anyway."},
    {"run.linger.ms", T_INT, "0", 0, 1000, NULL, F(linger_ms), 0,
     "How long a worker waits, after a mention arrives, for more before it runs them (0: not "
     "at all). Each run costs the state store a fixed amount per window it touches, so at "
     "moderate rates a short wait turns many small runs into fewer larger ones; under backlog "
     "runs are full and nobody waits."},
    {"queue.max", T_INT, "20000", 10, 10000000, NULL, F(queue_max), 0,
     "Mentions queued per worker before its partitions are paused (back-pressure)."},
    {"windows.lateness", T_DURATION, "5m", 0, 30LL * 86400 * 1000, NULL, F(lateness_ms), 0,
     "Allowed lateness: mentions older than the partition watermark minus this are counted "
     "as late and not windowed."},
    {"windows.distinct_exact", T_INT, "5000", 0, 10000000, NULL, F(distinct_exact), 0,
     "Members a DISTINCT window counts exactly (a Redis sorted set of its head's members, "
     "~110 bytes each) before it goes to a HyperLogLog (12 KB at most, ~0.8% error); 0: "
     "HyperLogLog only. Exact costs Redis the same per mention at any size, a sparse "
     "HyperLogLog's union the square of its size (docs/windows.md)."},
    {"delivery.mode", T_ENUM, "at-least-once", 0, 0, "at-least-once|exactly-once", F(delivery), 0,
     "at-least-once: offsets are stored only after every output is acknowledged; a replay "
     "after a crash re-emits byte-identical incidents. exactly-once (EXPERIMENTAL, see "
     "docs/delivery.md): outputs and input offsets commit in one Kafka transaction every "
     "commit.interval.ms."},
    {"commit.interval.ms", T_INT, "1000", 10, 600000, NULL, F(commit_interval_ms), 0,
     "How often stored offsets are committed (and, in exactly-once mode, transactions)."},
    {"store.rebuild", T_DURATION, "1h", 0, 30LL * 86400 * 1000, NULL, F(rebuild_ms), 0,
     "When Redis lost data (its fence is behind the committed offset), replay this much history "
     "(by Kafka timestamp) to rebuild the windows; mentions already committed emit nothing again."},
    {"store.backend", T_ENUM, "redis", 0, 0, "redis|memory", F(backend), 0,
     "Window and incident state: redis (shared by every instance) or memory (one process)."},
    {"redis.host", T_STR, "127.0.0.1", 0, 0, NULL, F(redis_host), 0, "Redis host."},
    {"redis.port", T_INT, "6379", 1, 65535, NULL, F(redis_port), 0, "Redis port."},
    {"redis.password", T_STR, "", 0, 0, NULL, F(redis_password), 1,
     "Redis AUTH password (never logged)."},
    {"redis.db", T_INT, "0", 0, 15, NULL, F(redis_db), 0, "Redis database number."},
    {"redis.prefix", T_STR, "fp", 0, 0, NULL, F(redis_prefix), 0,
     "Namespace of every key the engine writes."},
    {"redis.timeout.ms", T_INT, "2000", 10, 600000, NULL, F(redis_timeout_ms), 0,
     "Redis command timeout."},
    {"redis.connect.timeout.ms", T_INT, "1000", 10, 600000, NULL, F(redis_connect_timeout_ms), 0,
     "Redis connect timeout."},
    {"incident.hold", T_DURATION, "5m", 0, 7LL * 86400 * 1000, NULL, F(incident_hold_ms), 0,
     "Minimum time at a severity before de-escalating (hysteresis)."},
    {"incident.grace", T_DURATION, "30m", 0, 7LL * 86400 * 1000, NULL, F(incident_grace_ms), 0,
     "A crisis that flares up again within this time after resolving re-opens the same "
     "incident."},
    {"incident.samples", T_INT, "3", 0, 50, NULL, F(incident_samples), 0,
     "Sample mentions kept per incident (most reached, most negative)."},
    {"log.level", T_ENUM, "info", 0, 0, "debug|info|warn|error|off", F(log_level), 0,
     "Log threshold."},
    {"log.json", T_BOOL, "false", 0, 1, NULL, F(log_json), 0, "Log as JSON lines."},
    {"http.port", T_INT, "-1", -1, 65535, NULL, F(http_port), 0,
     "Port of /metrics, /healthz and /readyz; -1 = off, 0 = any free port."},
    {"http.addr", T_STR, "127.0.0.1", 0, 0, NULL, F(http_addr), 0, "Address the HTTP endpoint binds."},
    {"instance.id", T_STR, "", 0, 0, NULL, F(instance_id), 0,
     "Stable name of this instance (transactional.id suffix); default: host name and pid."},
};
#define FP_NCONF (sizeof(fp_confdefs) / sizeof(fp_confdefs[0]))

static const char *const fp_kafka_prefixes[] = {"kafka.", "consumer.", "producer."};

static const fp_confdef_t *conf_find(const char *name) {
  for (size_t i = 0; i < FP_NCONF; i++)
    if (strcmp(fp_confdefs[i].name, name) == 0) return &fp_confdefs[i];
  return NULL;
}

static int is_kafka_key(const char *key) {
  for (size_t i = 0; i < 3; i++) {
    size_t n = strlen(fp_kafka_prefixes[i]);
    if (strncmp(key, fp_kafka_prefixes[i], n) == 0 && key[n]) return 1;
  }
  return 0;
}

static int enum_index(const char *choices, const char *v) {
  int idx = 0;
  size_t vl = strlen(v);
  for (const char *p = choices; *p; idx++) {
    const char *bar = strchr(p, '|');
    size_t n = bar ? (size_t)(bar - p) : strlen(p);
    if (n == vl && strncmp(p, v, n) == 0) return idx;
    if (!bar) break;
    p = bar + 1;
  }
  return -1;
}

static fp_err_t conf_set_def(fp_conf_t *c, const fp_confdef_t *d, const char *v, char *errstr,
                             size_t es) {
  char *base = (char *)c;
  int64_t iv = 0;

  switch (d->type) {
  case T_STR: {
    char *dup = strdup(v);
    if (!dup) return FP_ERR_NOMEM;
    char **slot = (char **)(void *)(base + d->field);
    free(*slot);
    *slot = dup;
    return FP_OK;
  }
  case T_INT:
  case T_SIZE:
    if (fp_parse_i64(v, d->min, d->max, &iv) != FP_OK)
      return fp_seterr(errstr, es, FP_ERR_CONFIG,
                       "%s: \"%s\" is not an integer in [%lld, %lld]", d->name, v,
                       (long long)d->min, (long long)d->max);
    break;
  case T_DURATION:
    if (fp_duration_parse(v, &iv) != FP_OK || iv < d->min || iv > d->max)
      return fp_seterr(errstr, es, FP_ERR_CONFIG,
                       "%s: \"%s\" is not a duration (e.g. 500ms, 10s, 5m, 2h, 7d) in range",
                       d->name, v);
    break;
  case T_BOOL:
    if (!strcmp(v, "true") || !strcmp(v, "1") || !strcmp(v, "yes")) iv = 1;
    else if (!strcmp(v, "false") || !strcmp(v, "0") || !strcmp(v, "no")) iv = 0;
    else
      return fp_seterr(errstr, es, FP_ERR_CONFIG, "%s: \"%s\" is not true or false", d->name, v);
    break;
  case T_ENUM:
    iv = enum_index(d->choices, v);
    if (iv < 0)
      return fp_seterr(errstr, es, FP_ERR_CONFIG, "%s: \"%s\" is not one of %s", d->name, v,
                       d->choices);
    break;
  }
  *(int64_t *)(void *)(base + d->field) = iv;
  return FP_OK;
}

fp_conf_t *fp_conf_new(void) {
  fp_conf_t *c = calloc(1, sizeof(*c));
  if (!c) return NULL;
  for (size_t i = 0; i < FP_NCONF; i++) {
    if (conf_set_def(c, &fp_confdefs[i], fp_confdefs[i].def, NULL, 0) != FP_OK) {
      fp_conf_destroy(c);
      return NULL;
    }
  }
  return c;
}

void fp_conf_destroy(fp_conf_t *c) {
  if (!c) return;
  for (size_t i = 0; i < FP_NCONF; i++)
    if (fp_confdefs[i].type == T_STR) free(*(char **)(void *)((char *)c + fp_confdefs[i].field));
  for (size_t i = 0; i < c->nkv; i++) {
    free(c->kv[i].key);
    free(c->kv[i].value);
  }
  free(c->kv);
  free(c);
}

fp_conf_t *fp_conf_dup(const fp_conf_t *src) {
  fp_conf_t *c = fp_conf_new();
  char buf[4096];
  if (!c) return NULL;
  for (size_t i = 0; i < FP_NCONF; i++) {
    const fp_confdef_t *d = &fp_confdefs[i];
    if (d->type == T_STR) {
      if (conf_set_def(c, d, *(char *const *)(const void *)((const char *)src + d->field), NULL,
                       0) != FP_OK)
        goto err;
    } else {
      *(int64_t *)(void *)((char *)c + d->field) =
          *(const int64_t *)(const void *)((const char *)src + d->field);
    }
  }
  for (size_t i = 0; i < src->nkv; i++)
    if (fp_conf_set(c, src->kv[i].key, src->kv[i].value, buf, sizeof(buf)) != FP_OK) goto err;
  return c;
err:
  fp_conf_destroy(c);
  return NULL;
}

fp_err_t fp_conf_set(fp_conf_t *c, const char *key, const char *value, char *errstr,
                     size_t es) {
  const fp_confdef_t *d;
  if (!c || !key || !value) return fp_seterr(errstr, es, FP_ERR_INVALID_ARG, "NULL argument");
  if ((d = conf_find(key))) return conf_set_def(c, d, value, errstr, es);
  if (!is_kafka_key(key))
    return fp_seterr(errstr, es, FP_ERR_UNKNOWN_KEY,
                     "%s: unknown configuration key (see flashpoint --help-config)", key);
  for (size_t i = 0; i < c->nkv; i++) {
    if (strcmp(c->kv[i].key, key) == 0) {
      char *v = strdup(value);
      if (!v) return FP_ERR_NOMEM;
      free(c->kv[i].value);
      c->kv[i].value = v;
      return FP_OK;
    }
  }
  fp_kv_t *kv = realloc(c->kv, (c->nkv + 1) * sizeof(*kv));
  if (!kv) return FP_ERR_NOMEM;
  c->kv = kv;
  kv[c->nkv].key = strdup(key);
  kv[c->nkv].value = strdup(value);
  if (!kv[c->nkv].key || !kv[c->nkv].value) {
    free(kv[c->nkv].key);
    free(kv[c->nkv].value);
    return FP_ERR_NOMEM;
  }
  c->nkv++;
  return FP_OK;
}

static char *trim(char *s) {
  char *e;
  while (isspace((unsigned char)*s)) s++;
  e = s + strlen(s);
  while (e > s && isspace((unsigned char)e[-1])) *--e = '\0';
  return s;
}

fp_err_t fp_conf_load_file(fp_conf_t *c, const char *path, char *errstr, size_t es) {
  FILE *f = fopen(path, "r");
  char line[8192], sub[1024];
  int lineno = 0;
  fp_err_t err = FP_OK;

  if (!f) return fp_seterr(errstr, es, FP_ERR_IO, "%s: %s", path, strerror(errno));
  while (fgets(line, sizeof(line), f)) {
    char *p, *eq, *key, *val;
    lineno++;
    if (!strchr(line, '\n') && !feof(f)) {
      err = fp_seterr(errstr, es, FP_ERR_CONFIG, "%s:%d: line too long", path, lineno);
      break;
    }
    p = trim(line);
    if (!*p || *p == '#') continue;
    if (!(eq = strchr(p, '='))) {
      err = fp_seterr(errstr, es, FP_ERR_CONFIG, "%s:%d: expected key = value", path, lineno);
      break;
    }
    *eq = '\0';
    key = trim(p);
    val = trim(eq + 1);
    if ((err = fp_conf_set(c, key, val, sub, sizeof(sub))) != FP_OK) {
      fp_seterr(errstr, es, err, "%s:%d: %s", path, lineno, sub);
      break;
    }
  }
  fclose(f);
  return err;
}

fp_err_t fp_conf_load_env(fp_conf_t *c, char *const *envp, char *errstr, size_t es) {
  static const char pfx[] = "FLASHPOINT_";
  char key[256], sub[1024];
  fp_err_t err;

  for (; envp && *envp; envp++) {
    const char *e = *envp, *eq = strchr(e, '=');
    size_t k = 0;
    if (strncmp(e, pfx, sizeof(pfx) - 1) != 0 || !eq) continue;
    for (const char *p = e + sizeof(pfx) - 1; p < eq && k < sizeof(key) - 1; p++) {
      if (p[0] == '_' && p[1] == '_') {
        key[k++] = '.';
        p++;
      } else if (*p == '_') {
        key[k++] = '.';
      } else {
        key[k++] = (char)tolower((unsigned char)*p);
      }
    }
    key[k] = '\0';
    if (!strcmp(key, "config.file")) continue; /* FLASHPOINT_CONFIG_FILE names the file itself */
    /* FLASHPOINT_REDIS__HOST and FLASHPOINT_REDIS_HOST both mean redis.host; a key whose
     * own name has an underscore cannot be set from the environment (none has). */
    if ((err = fp_conf_set(c, key, eq + 1, sub, sizeof(sub))) != FP_OK)
      return fp_seterr(errstr, es, err, "environment %.*s: %s", (int)(eq - e), e, sub);
  }
  return FP_OK;
}

fp_err_t fp_conf_get(const fp_conf_t *c, const char *key, char *buf, size_t size) {
  const fp_confdef_t *d = conf_find(key);
  if (!d) {
    for (size_t i = 0; i < c->nkv; i++) {
      if (strcmp(c->kv[i].key, key) == 0) {
        int secret = strstr(key, "password") || strstr(key, "secret") || strstr(key, "key");
        snprintf(buf, size, "%s", secret ? "[redacted]" : c->kv[i].value);
        return FP_OK;
      }
    }
    return FP_ERR_UNKNOWN_KEY;
  }
  const char *base = (const char *)c;
  if (d->secret) {
    snprintf(buf, size, "[redacted]");
  } else if (d->type == T_STR) {
    snprintf(buf, size, "%s", *(char *const *)(const void *)(base + d->field));
  } else if (d->type == T_ENUM) {
    int64_t idx = *(const int64_t *)(const void *)(base + d->field);
    const char *p = d->choices;
    for (int64_t i = 0; i < idx && p; i++) {
      p = strchr(p, '|');
      if (p) p++;
    }
    const char *bar = p ? strchr(p, '|') : NULL;
    snprintf(buf, size, "%.*s", p ? (int)(bar ? bar - p : (long)strlen(p)) : 0, p ? p : "");
  } else if (d->type == T_BOOL) {
    snprintf(buf, size, "%s", *(const int64_t *)(const void *)(base + d->field) ? "true" : "false");
  } else {
    snprintf(buf, size, "%lld", (long long)*(const int64_t *)(const void *)(base + d->field));
  }
  return FP_OK;
}

void fp_conf_print_help(FILE *out, int md) {
  static const char *const tn[] = {"string", "integer", "bytes", "duration", "bool", "enum"};
  if (md) fprintf(out, "| key | type | default | range | description |\n|---|---|---|---|---|\n");
  for (size_t i = 0; i < FP_NCONF; i++) {
    const fp_confdef_t *d = &fp_confdefs[i];
    char range[96] = "";
    if (d->type == T_ENUM) snprintf(range, sizeof(range), "%s", d->choices);
    else if (d->type == T_INT || d->type == T_SIZE)
      snprintf(range, sizeof(range), "%lld .. %lld", (long long)d->min, (long long)d->max);
    else if (d->type == T_DURATION) snprintf(range, sizeof(range), "0 .. %llds", (long long)(d->max / 1000));
    if (md)
      fprintf(out, "| `%s` | %s | `%s` | %s | %s |\n", d->name, tn[d->type], d->def, range, d->desc);
    else
      fprintf(out, "%-26s %-8s default %-16s %s\n%26s %s\n", d->name, tn[d->type], d->def[0] ? d->def : "\"\"",
              range, "", d->desc);
  }
  const char *kafka_help =
      "Any librdkafka property (see librdkafka CONFIGURATION.md) with the prefix kafka. "
      "(both clients), consumer. or producer. (one client), e.g. kafka.bootstrap.servers.";
  if (md) fprintf(out, "| `kafka.*`, `consumer.*`, `producer.*` | string | | | %s |\n", kafka_help);
  else fprintf(out, "%-26s %-8s\n%26s %s\n", "kafka.* consumer.* producer.*", "string", "", kafka_help);
  if (!md)
    fprintf(out, "\nEnvironment: FLASHPOINT_<KEY> with dots as _ or __, e.g. "
                 "FLASHPOINT_REDIS_HOST=redis, FLASHPOINT_KAFKA__BOOTSTRAP__SERVERS=kafka:9092.\n");
}

size_t fp_conf_workers(const fp_conf_t *c, long cores) {
  if (c->workers > 0) return (size_t)c->workers;
  return cores > 0 ? 2 * (size_t)cores : 1;
}

fp_err_t fp_conf_each_kafka(const fp_conf_t *c, const char *which, fp_conf_kv_fn fn,
                            void *opaque, char *errstr, size_t es) {
  char own[32];
  snprintf(own, sizeof(own), "%s.", which);
  /* kafka.* first, then the client's own prefix so it can override. */
  for (int pass = 0; pass < 2; pass++) {
    const char *pfx = pass == 0 ? "kafka." : own;
    size_t n = strlen(pfx);
    for (size_t i = 0; i < c->nkv; i++) {
      if (strncmp(c->kv[i].key, pfx, n) != 0) continue;
      fp_err_t err = fn(opaque, c->kv[i].key + n, c->kv[i].value, errstr, es);
      if (err != FP_OK) return err;
    }
  }
  return FP_OK;
}
