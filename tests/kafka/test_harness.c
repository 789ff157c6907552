/*
 * test_harness.c: proves the test harness itself against the real services: a 4-partition
 * topic round trip of 5,000 keyed messages (one of 2 MiB, some with headers, some on an
 * explicit partition), the committed-offsets helper, a Kafka kill -9 and restart, Redis
 * commands and a kill -9 / restart of redis-server that keeps an acknowledged key
 * (appendfsync always), and the process helpers. Every topic it creates is deleted.
 */
#include "testlib.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N_MSGS 5000
#define N_PARTS 4
#define BIG_INDEX 2500
#define BIG_LEN (2u * 1024 * 1024)

static unsigned char big_byte(size_t i) { return (unsigned char)((i * 131u + (i >> 11)) & 0xff); }

static void test_roundtrip(void) {
  char *topic = fpt_topic_name("harness-rt");
  const char *const cfg[] = {"max.message.bytes", "8388608", NULL};
  fpt_msg_t *msgs = calloc(N_MSGS, sizeof(*msgs));
  char (*keys)[32] = calloc(N_MSGS, sizeof(*keys));
  char (*vals)[48] = calloc(N_MSGS, sizeof(*vals));
  unsigned char *big = malloc(BIG_LEN);
  fpt_header_t hdr[2];
  fpt_records_t *recs = NULL;
  int *seen = calloc(N_MSGS, sizeof(*seen));
  size_t per_part[N_PARTS] = {0}, i;
  int64_t hw[N_PARTS], last_off[N_PARTS], sum = 0;
  int bad_content = 0, bad_order = 0, bad_part = 0, big_ok = 0, hdr_ok = 0, p;

  if (!FPT_CHECK(topic && msgs && keys && vals && big && seen, "allocation"))
    goto out;
  if (!FPT_CHECK(fpt_topic_create(topic, N_PARTS, cfg) == 0, "create %s", topic))
    goto out;
  FPT_CHECK_EQ_INT(fpt_topic_partitions(topic), N_PARTS);

  for (i = 0; i < BIG_LEN; i++)
    big[i] = big_byte(i);
  hdr[0].name = "trace";
  hdr[0].value = "abc";
  hdr[0].len = 3;
  hdr[1].name = "empty";
  hdr[1].value = NULL;
  hdr[1].len = 0;
  for (i = 0; i < N_MSGS; i++) {
    snprintf(keys[i], sizeof(keys[i]), "key-%05zu", i);
    snprintf(vals[i], sizeof(vals[i]), "value-%05zu-payload", i);
    msgs[i].partition = (i % 100 == 0) ? (int32_t)((i / 100) % N_PARTS) : -1;
    msgs[i].key = keys[i];
    msgs[i].key_len = strlen(keys[i]);
    msgs[i].value = vals[i];
    msgs[i].len = strlen(vals[i]);
    if (i % 10 == 7) {
      msgs[i].headers = hdr;
      msgs[i].nheaders = 2;
    }
  }
  msgs[BIG_INDEX].value = big;
  msgs[BIG_INDEX].len = BIG_LEN;
  FPT_CHECK_EQ_INT(fpt_produce(topic, msgs, N_MSGS), 0);

  if (fpt_high_watermarks(topic, N_PARTS, hw) == 0) {
    for (p = 0; p < N_PARTS; p++)
      sum += hw[p];
    FPT_CHECK_EQ_INT(sum, N_MSGS);
  }

  recs = fpt_consume_all(topic, FPT_READ_UNCOMMITTED, 60000);
  if (!FPT_CHECK(recs != NULL, "consume %s", topic))
    goto out;
  FPT_CHECK(recs->complete, "consume reached the end of every partition");
  FPT_CHECK_EQ_INT(recs->n, N_MSGS);
  for (p = 0; p < N_PARTS; p++)
    last_off[p] = -1;
  for (i = 0; i < recs->n; i++) {
    const fpt_record_t *r = &recs->recs[i];
    char *end;
    long idx;
    if (r->partition < 0 || r->partition >= N_PARTS || !r->key || r->key_len != 9) {
      bad_content++;
      continue;
    }
    per_part[r->partition]++;
    if (r->offset <= last_off[r->partition])
      bad_order++;
    last_off[r->partition] = r->offset;
    idx = strtol(r->key + 4, &end, 10);
    if (*end || idx < 0 || idx >= N_MSGS || seen[idx]++) {
      bad_content++;
      continue;
    }
    if (idx % 100 == 0 && r->partition != (int32_t)((idx / 100) % N_PARTS))
      bad_part++;
    if (idx == BIG_INDEX) {
      big_ok = r->len == BIG_LEN && memcmp(r->value, big, BIG_LEN) == 0;
    } else if (r->len != strlen(vals[idx]) || memcmp(r->value, vals[idx], r->len) != 0) {
      bad_content++;
    }
    if (idx % 10 == 7) {
      size_t hlen = 99;
      const char *v = fpt_record_header(r, "trace", &hlen);
      if (r->nheaders == 2 && v && hlen == 3 && memcmp(v, "abc", 3) == 0 &&
          fpt_record_header(r, "empty", &hlen) == NULL && hlen == 0)
        hdr_ok++;
    } else if (r->nheaders != 0) {
      bad_content++;
    }
  }
  FPT_CHECK_EQ_INT(bad_content, 0);
  FPT_CHECK_EQ_INT(bad_order, 0);
  FPT_CHECK_EQ_INT(bad_part, 0);
  FPT_CHECK(big_ok, "the 2 MiB message came back byte for byte");
  FPT_CHECK_EQ_INT(hdr_ok, N_MSGS / 10);
  for (p = 0; p < N_PARTS; p++)
    FPT_CHECK(per_part[p] > N_MSGS / N_PARTS / 2, "partition %d got %zu messages (spread)", p,
              per_part[p]);
  fpt_note("per partition: %zu %zu %zu %zu", per_part[0], per_part[1], per_part[2], per_part[3]);

out:
  fpt_records_free(recs);
  if (topic)
    FPT_CHECK(fpt_topic_delete(topic) == 0, "delete %s", topic);
  free(seen);
  free(big);
  free(vals);
  free(keys);
  free(msgs);
  free(topic);
}

static void test_committed_offsets(void) {
  char *topic = fpt_topic_name("harness-commit");
  char *group = fpt_topic_name("harness-group");
  char *other = fpt_topic_name("harness-nogroup");
  rd_kafka_conf_t *conf = NULL;
  rd_kafka_t *rk = NULL;
  rd_kafka_topic_partition_list_t *list = NULL;
  int64_t got[2] = {0, 0};
  char errstr[256];
  int i;

  if (!FPT_CHECK(fpt_topic_create(topic, 2, NULL) == 0, "create %s", topic))
    goto out;
  for (i = 0; i < 10; i++)
    FPT_CHECK_EQ_INT(fpt_produce1(topic, i % 2, "k", "v", 1), 0);

  conf = fpt_kafka_conf();
  if (!FPT_CHECK(conf != NULL, "conf"))
    goto out;
  rd_kafka_conf_set(conf, "group.id", group, errstr, sizeof(errstr));
  rd_kafka_conf_set(conf, "enable.auto.commit", "false", errstr, sizeof(errstr));
  rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
  if (!FPT_CHECK(rk != NULL, "consumer: %s", errstr)) {
    rd_kafka_conf_destroy(conf);
    goto out;
  }
  list = rd_kafka_topic_partition_list_new(2);
  rd_kafka_topic_partition_list_add(list, topic, 0)->offset = 3;
  rd_kafka_topic_partition_list_add(list, topic, 1)->offset = 5;
  {
    rd_kafka_resp_err_t err;
    int64_t end = fpt_now_ms() + 60000;
    do { /* the group coordinator may still be loading on a fresh broker */
      err = rd_kafka_commit(rk, list, 0);
    } while (err && fpt_now_ms() < end);
    FPT_CHECK(err == RD_KAFKA_RESP_ERR_NO_ERROR, "commit: %s", rd_kafka_err2str(err));
  }
  if (FPT_CHECK(fpt_committed_offsets(group, topic, 2, got) == 0, "committed offsets")) {
    FPT_CHECK_EQ_INT(got[0], 3);
    FPT_CHECK_EQ_INT(got[1], 5);
  }
  if (FPT_CHECK(fpt_committed_offsets(other, topic, 2, got) == 0, "offsets of unused group")) {
    FPT_CHECK_EQ_INT(got[0], RD_KAFKA_OFFSET_INVALID);
    FPT_CHECK_EQ_INT(got[1], RD_KAFKA_OFFSET_INVALID);
  }

out:
  if (list)
    rd_kafka_topic_partition_list_destroy(list);
  if (rk) {
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
  }
  FPT_CHECK(fpt_topic_delete(topic) == 0, "delete %s", topic);
  free(topic);
  free(group);
  free(other);
}

static void test_kafka_restart(void) {
  char *topic = fpt_topic_name("harness-restart");
  fpt_records_t *recs;
  const char *pid_before;
  char *pid_copy = NULL;
  int i;

  if (!FPT_CHECK(fpt_topic_create(topic, 1, NULL) == 0, "create %s", topic))
    goto out;
  for (i = 0; i < 3; i++)
    FPT_CHECK_EQ_INT(fpt_produce1(topic, 0, "before", "x", 1), 0);
  pid_before = fpt_services_get("FP_TEST_KAFKA_PID");
  pid_copy = pid_before ? strdup(pid_before) : NULL;
  FPT_CHECK_EQ_INT(fpt_services_cmd("restart-kafka"), 0);
  FPT_CHECK(pid_copy && fpt_services_get("FP_TEST_KAFKA_PID") &&
                strcmp(pid_copy, fpt_services_get("FP_TEST_KAFKA_PID")) != 0,
            "broker pid changed after restart");
  FPT_CHECK_EQ_INT(fpt_produce1(topic, 0, "after", "y", 1), 0);
  recs = fpt_consume_all(topic, FPT_READ_COMMITTED, 60000);
  if (FPT_CHECK(recs != NULL, "consume after restart")) {
    FPT_CHECK(recs->complete, "complete");
    FPT_CHECK_EQ_INT(recs->n, 4);
    if (recs->n == 4)
      FPT_CHECK_EQ_STR(recs->recs[3].key, "after");
  }
  fpt_records_free(recs);
out:
  FPT_CHECK(fpt_topic_delete(topic) == 0, "delete %s", topic);
  free(topic);
  free(pid_copy);
}

static int redis_down(void *arg) {
  struct timeval tv = {0, 200000};
  redisContext *c = redisConnectWithTimeout(fpt_redis_host(), fpt_redis_port(), tv);
  int down = !c || c->err;
  (void)arg;
  if (c)
    redisFree(c);
  return down;
}

static void test_redis(void) {
  redisContext *c = fpt_redis_connect();
  redisReply *r;

  if (!FPT_CHECK(c != NULL, "connect"))
    return;
  r = fpt_redis_cmd(c, "PING");
  FPT_CHECK(r && r->type == REDIS_REPLY_STATUS && strcmp(r->str, "PONG") == 0, "PING");
  freeReplyObject(r);
  r = fpt_redis_cmd(c, "CONFIG GET appendfsync");
  FPT_CHECK(r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
                strcmp(r->element[1]->str, "always") == 0,
            "appendfsync always");
  freeReplyObject(r);
  r = fpt_redis_cmd(c, "DEBUG SLEEP 0");
  FPT_CHECK(r && r->type == REDIS_REPLY_STATUS, "DEBUG is enabled for local clients");
  freeReplyObject(r);
  r = fpt_redis_cmd(c, "SET %s %b", "fpt:harness", "kept\0value", (size_t)10);
  FPT_CHECK(r && r->type == REDIS_REPLY_STATUS && strcmp(r->str, "OK") == 0, "SET");
  freeReplyObject(r);
  redisFree(c);

  FPT_CHECK_EQ_INT(fpt_services_cmd("kill-redis"), 0);
  FPT_CHECK(fpt_wait_until(redis_down, NULL, 5000), "redis refuses connections when killed");
  FPT_CHECK_EQ_INT(fpt_services_cmd("start-redis"), 0);

  c = fpt_redis_connect();
  if (!FPT_CHECK(c != NULL, "reconnect"))
    return;
  r = fpt_redis_cmd(c, "GET fpt:harness");
  FPT_CHECK(r && r->type == REDIS_REPLY_STRING && r->len == 10 &&
                memcmp(r->str, "kept\0value", 10) == 0,
            "key survived kill -9 (appendfsync always)");
  freeReplyObject(r);
  r = fpt_redis_cmd(c, "DEL fpt:harness");
  FPT_CHECK(r && r->type == REDIS_REPLY_INTEGER && r->integer == 1, "DEL");
  freeReplyObject(r);
  redisFree(c);
}

static void test_processes(void) {
  const char *const echo_argv[] = {"sh", "-c", "echo hello $FPT_X; echo oops >&2; exit 3", NULL};
  const char *const echo_env[] = {"FPT_X=world", NULL};
  const char *const sleep_argv[] = {"sleep", "30", NULL};
  fpt_proc_t *p;
  char *out;

  p = fpt_proc_spawn(echo_argv, echo_env, NULL);
  if (FPT_CHECK(p != NULL, "spawn sh")) {
    FPT_CHECK_EQ_INT(fpt_proc_wait(p, 10000), 3);
    out = fpt_proc_output(p, NULL);
    FPT_CHECK(out && strstr(out, "hello world\n") && strstr(out, "oops\n"),
              "stdout and stderr captured with the extra env: %s", out ? out : "(none)");
    free(out);
    remove(fpt_proc_log(p));
    fpt_proc_free(p);
  }
  p = fpt_proc_spawn(sleep_argv, NULL, NULL);
  if (FPT_CHECK(p != NULL, "spawn sleep")) {
    FPT_CHECK_EQ_INT(fpt_proc_wait(p, 50), -1);
    FPT_CHECK(fpt_proc_running(p), "still running");
    FPT_CHECK_EQ_INT(fpt_proc_signal(p, SIGTERM), 0);
    FPT_CHECK_EQ_INT(fpt_proc_wait(p, 10000), 128 + SIGTERM);
    FPT_CHECK_EQ_INT(fpt_proc_signal(p, SIGTERM), -1);
    remove(fpt_proc_log(p));
    fpt_proc_free(p);
  }
}

int main(void) {
  fpt_run("processes", test_processes);
  fpt_run("redis_kill_start_keeps_key", test_redis);
  fpt_run("kafka_roundtrip_5000_with_2MiB", test_roundtrip);
  fpt_run("kafka_committed_offsets", test_committed_offsets);
  fpt_run("kafka_restart_keeps_data", test_kafka_restart);
  return fpt_done();
}
