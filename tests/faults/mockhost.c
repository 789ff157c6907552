/*
 * mockhost.c: hosts a librdkafka mock cluster (rdkafka_mock.h) in a process of its own, so
 * that the fault suite can kill the engine with SIGKILL while the "broker" lives on, and
 * inject broker faults from outside the engine.
 *
 *     faults_mockhost [BROKERS]        (default 3 brokers)
 *
 * It creates the cluster on a dedicated producer handle (the pattern of librdkafka's
 * tests/test.c test_mock_cluster_new), prints one line "bootstrap HOST:PORT,..." on stdout,
 * then reads commands on stdin, one per line, and answers each with one line, "ok" or
 * "error <why>":
 *
 *     topic NAME NPARTS              create a topic (the mock has no CreateTopics API)
 *     leader TOPIC PARTITION BROKER  move a partition's leader (-1: leaderless)
 *     down BROKER | up BROKER        broker down (disconnects, refuses connections) / up; -1 = all
 *     rtt BROKER MS                  round-trip delay of a broker's responses; -1 = all
 *     err APIKEY CODE CNT            the next CNT requests of APIKEY fail with CODE (numeric
 *                                    rd_kafka_resp_err_t; -195 = _TRANSPORT: disconnect)
 *     clear APIKEY                   drops the errors still pushed for APIKEY (cluster-wide ones)
 *     berr BROKER APIKEY CODE CNT    tops BROKER's own error stack for APIKEY up to CNT errors of
 *                                    CODE: its next requests of APIKEY fail, the other brokers' and
 *                                    its other requests do not (sent every tick, it keeps a broker
 *                                    failing for a time, with at most CNT errors left at the end)
 *     coord group|transaction KEY BROKER   sets the coordinator of a group or transactional id
 *     quit                           destroys the cluster and exits 0 (so does EOF on stdin)
 *
 * The cluster's data is in memory only: when this process ends, the cluster is gone.
 * Invariant: every command line gets exactly one answer line, flushed, so the caller can
 * write a command and read its answer without a protocol of its own.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

/* One answer line per command: "ok" when why is NULL, else "error <why>". */
static void answer(const char *why) {
  if (why) printf("error %s\n", why);
  else printf("ok\n");
  fflush(stdout);
}

/* Parses a whole decimal integer; 0 on success. */
static int parse_long(const char *s, long *out) {
  char *end;
  if (!s || !*s) return -1;
  *out = strtol(s, &end, 10);
  return *end ? -1 : 0;
}

/* Runs one command line against mc; returns 1 on quit. */
static int command(rd_kafka_mock_cluster_t *mc, char *line) {
  char *save = NULL, *verb = strtok_r(line, " \t\r\n", &save);
  char *a1 = strtok_r(NULL, " \t\r\n", &save), *a2 = strtok_r(NULL, " \t\r\n", &save);
  char *a3 = strtok_r(NULL, " \t\r\n", &save), *a4 = strtok_r(NULL, " \t\r\n", &save);
  long n1 = 0, n2 = 0, n3 = 0, n4 = 0;
  rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;

  if (!verb) {
    answer("empty command");
    return 0;
  }
  if (strcmp(verb, "quit") == 0) {
    answer(NULL);
    return 1;
  } else if (strcmp(verb, "topic") == 0 && a1 && parse_long(a2, &n2) == 0) {
    err = rd_kafka_mock_topic_create(mc, a1, (int)n2, 1);
  } else if (strcmp(verb, "leader") == 0 && a1 && parse_long(a2, &n2) == 0 && parse_long(a3, &n3) == 0) {
    err = rd_kafka_mock_partition_set_leader(mc, a1, (int32_t)n2, (int32_t)n3);
  } else if (strcmp(verb, "down") == 0 && parse_long(a1, &n1) == 0) {
    err = rd_kafka_mock_broker_set_down(mc, (int32_t)n1);
  } else if (strcmp(verb, "up") == 0 && parse_long(a1, &n1) == 0) {
    err = rd_kafka_mock_broker_set_up(mc, (int32_t)n1);
  } else if (strcmp(verb, "rtt") == 0 && parse_long(a1, &n1) == 0 && parse_long(a2, &n2) == 0) {
    err = rd_kafka_mock_broker_set_rtt(mc, (int32_t)n1, (int)n2);
  } else if (strcmp(verb, "err") == 0 && parse_long(a1, &n1) == 0 && parse_long(a2, &n2) == 0 &&
             parse_long(a3, &n3) == 0 && n3 > 0 && n3 <= 10000) {
    rd_kafka_resp_err_t *codes = malloc((size_t)n3 * sizeof(*codes));
    if (!codes) {
      answer("out of memory");
      return 0;
    }
    for (long i = 0; i < n3; i++) codes[i] = (rd_kafka_resp_err_t)n2;
    rd_kafka_mock_push_request_errors_array(mc, (int16_t)n1, (size_t)n3, codes);
    free(codes);
  } else if (strcmp(verb, "berr") == 0 && parse_long(a1, &n1) == 0 && parse_long(a2, &n2) == 0 &&
             parse_long(a3, &n3) == 0 && parse_long(a4, &n4) == 0 && n4 > 0 && n4 <= 10000) {
    size_t have = 0;
    err = rd_kafka_mock_broker_error_stack_cnt(mc, (int32_t)n1, (int16_t)n2, &have);
    for (; !err && (long)have < n4; have++) /* one (code, rtt 0) pair per call */
      err = rd_kafka_mock_broker_push_request_error_rtts(mc, (int32_t)n1, (int16_t)n2, 1,
                                                         (rd_kafka_resp_err_t)n3, 0);
  } else if (strcmp(verb, "clear") == 0 && parse_long(a1, &n1) == 0) {
    rd_kafka_mock_clear_request_errors(mc, (int16_t)n1);
  } else if (strcmp(verb, "coord") == 0 && a1 && a2 && parse_long(a3, &n3) == 0) {
    err = rd_kafka_mock_coordinator_set(mc, a1, a2, (int32_t)n3);
  } else {
    answer("unknown command or bad arguments");
    return 0;
  }
  answer(err ? rd_kafka_err2str(err) : NULL);
  return 0;
}

int main(int argc, char **argv) {
  char errstr[256], line[1024];
  long brokers = 3;
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  rd_kafka_t *rk;
  rd_kafka_mock_cluster_t *mc;

  if (argc > 1 && (parse_long(argv[1], &brokers) != 0 || brokers < 1 || brokers > 16)) {
    fprintf(stderr, "usage: %s [BROKERS 1..16]\n", argv[0]);
    return 2;
  }
  /* the hosting handle never talks to a broker: keep its own logging quiet */
  rd_kafka_conf_set(conf, "log_level", "3", errstr, sizeof(errstr));
  rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
  if (!rk) {
    fprintf(stderr, "mockhost: rd_kafka_new: %s\n", errstr);
    rd_kafka_conf_destroy(conf);
    return 1;
  }
  mc = rd_kafka_mock_cluster_new(rk, (int)brokers);
  if (!mc) {
    fprintf(stderr, "mockhost: rd_kafka_mock_cluster_new failed\n");
    rd_kafka_destroy(rk);
    return 1;
  }
  printf("bootstrap %s\n", rd_kafka_mock_cluster_bootstraps(mc));
  fflush(stdout);
  while (fgets(line, sizeof(line), stdin))
    if (command(mc, line)) break;
  rd_kafka_mock_cluster_destroy(mc);
  rd_kafka_destroy(rk);
  return 0;
}
