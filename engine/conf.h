/*
 * conf.h - the engine's configuration as a struct. fp_conf_t (public, opaque) is this struct;
 * every field comes from one declarative table in conf.c that also drives
 * `flashpoint --help-config` and docs/configuration.md.
 */
#ifndef FP_CONF_H
#define FP_CONF_H

#include <stddef.h>
#include <stdint.h>

#include "flashpoint/flashpoint.h"

typedef enum { FP_DELIVERY_ALO = 0, FP_DELIVERY_EOS = 1 } fp_delivery_t;
typedef enum { FP_BACKEND_REDIS = 0, FP_BACKEND_MEMORY = 1 } fp_backend_t;

typedef struct fp_kv_s {
  char *key, *value; /* owned */
} fp_kv_t;

struct fp_conf_s {
  /* input */
  char *input_topics;      /* comma-separated */
  char *input_mapping;     /* schema mapping file, "" for none */
  char *group_id;
  int64_t input_max_bytes;
  /* output */
  char *output_topic;
  char *dlq_topic;
  /* rules */
  char *rules_dir;
  int64_t rules_instructions, rules_memory, rules_deadline_ms, rules_quarantine_after;
  int64_t rules_watch, rules_watchdog_ms, rules_strikes_quarantine;
  char *rules_strikes_dir;
  /* processing */
  int64_t workers;         /* 0: two per core */
  int64_t batch_size;
  int64_t queue_max;       /* messages queued per worker before partitions are paused */
  int64_t linger_ms;       /* how long a worker waits for a fuller run when few are queued */
  int64_t lateness_ms;
  int64_t distinct_exact;  /* windows.distinct_exact: members counted exactly per DISTINCT window */
  int64_t rebuild_ms;      /* history replayed to rebuild windows after Redis lost data */
  int64_t delivery;        /* fp_delivery_t */
  int64_t commit_interval_ms;
  /* state store */
  int64_t backend;         /* fp_backend_t */
  char *redis_host;
  int64_t redis_port;
  char *redis_password;    /* secret */
  int64_t redis_db;
  char *redis_prefix;
  int64_t redis_timeout_ms, redis_connect_timeout_ms;
  /* incidents */
  int64_t incident_hold_ms, incident_grace_ms, incident_samples;
  /* operations */
  int64_t log_level;
  int64_t log_json;
  int64_t http_port;       /* -1: off */
  char *http_addr;
  char *instance_id;
  /* passthrough to librdkafka: kafka.* (both), consumer.*, producer.* */
  fp_kv_t *kv;
  size_t nkv;
};

/** The number of worker threads @p conf asks for: `workers`, or when it is 0 two per online
 * core (@p cores; a worker waits on the store about as long as it computes, see engine.c). */
size_t fp_conf_workers(const fp_conf_t *conf, long cores);

/** The librdkafka settings for one client. @p which is "consumer" or "producer". Each
 * matching kv is passed with its prefix stripped, through @p fn. */
typedef fp_err_t (*fp_conf_kv_fn)(void *opaque, const char *key, const char *value,
                                  char *errstr, size_t errstr_size);
fp_err_t fp_conf_each_kafka(const fp_conf_t *conf, const char *which, fp_conf_kv_fn fn,
                            void *opaque, char *errstr, size_t errstr_size);

#endif
