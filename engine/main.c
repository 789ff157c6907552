/*
 * main.c - the `flashpoint` command: argument parsing, signals, exit codes. Everything else
 * lives in the engine library.
 *
 * Exit codes: 0 clean stop; 1 runtime failure (fatal Kafka or Redis error); 2 usage or
 * configuration error (including rules that fail to load); 3 `check` found invalid rules.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "demo.h"
#include "flashpoint/flashpoint.h"

extern char **environ;

static fp_engine_t *volatile the_engine;
static volatile sig_atomic_t stop_signals;

static void on_stop(int sig) {
  (void)sig;
  if (++stop_signals > 1) _exit(130); /* a second signal: leave at once */
  if (the_engine) fp_engine_stop(the_engine);
}

static void on_hup(int sig) {
  (void)sig;
  if (the_engine) fp_engine_reload(the_engine);
}

static void usage(FILE *out) {
  fprintf(out,
          "Flashpoint %s - catches social-media crises while they are still small.\n"
          "\n"
          "Usage:\n"
          "  flashpoint [run] [-c FILE] [-r RULES_DIR] [-s key=value]...\n"
          "                               consume mentions from Kafka, emit incidents\n"
          "  flashpoint demo [--memory]   the whole engine on embedded defaults: an in-process\n"
          "                               Kafka mock cluster, a private redis-server, generated\n"
          "                               mentions with injected crises\n"
          "  flashpoint check RULES_DIR   validate every rule file (exit 3 if any is invalid)\n"
          "  flashpoint --help-config     list every configuration key\n"
          "  flashpoint --version\n"
          "\n"
          "Configuration: -c FILE (key = value lines), then FLASHPOINT_* environment variables,\n"
          "then -s key=value, each overriding the one before.\n"
          "Signals: SIGTERM/SIGINT stop gracefully (a second one exits at once); SIGHUP reloads\n"
          "the rules.\n"
          "Exit codes: 0 clean stop, 1 runtime failure, 2 usage or configuration error,\n"
          "3 invalid rules (check).\n",
          FP_VERSION_STR);
}

static int cmd_run(int argc, char **argv) {
  char errstr[1024];
  const char *file = NULL;
  fp_conf_t *conf = fp_conf_new();
  fp_engine_t *e;
  fp_err_t err;
  struct sigaction sa;

  if (!conf) return 1;
  for (int i = 0; i < argc; i++)
    if ((!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config")) && i + 1 < argc) file = argv[i + 1];
  if (!file) file = getenv("FLASHPOINT_CONFIG_FILE");
  if (file && fp_conf_load_file(conf, file, errstr, sizeof(errstr)) != FP_OK) goto conf_err;
  if (fp_conf_load_env(conf, environ, errstr, sizeof(errstr)) != FP_OK) goto conf_err;
  for (int i = 0; i < argc; i++) {
    if ((!strcmp(argv[i], "-c") || !strcmp(argv[i], "--config")) && i + 1 < argc) {
      i++;
    } else if ((!strcmp(argv[i], "-r") || !strcmp(argv[i], "--rules")) && i + 1 < argc) {
      if (fp_conf_set(conf, "rules.dir", argv[++i], errstr, sizeof(errstr)) != FP_OK) goto conf_err;
    } else if ((!strcmp(argv[i], "-s") || !strcmp(argv[i], "--set")) && i + 1 < argc) {
      char *kv = argv[++i], *eq = strchr(kv, '=');
      if (!eq) {
        fprintf(stderr, "flashpoint: -s expects key=value, got \"%s\"\n", kv);
        fp_conf_destroy(conf);
        return 2;
      }
      *eq = '\0';
      err = fp_conf_set(conf, kv, eq + 1, errstr, sizeof(errstr));
      *eq = '=';
      if (err != FP_OK) goto conf_err;
    } else {
      fprintf(stderr, "flashpoint: unknown argument \"%s\" (see --help)\n", argv[i]);
      fp_conf_destroy(conf);
      return 2;
    }
  }

  e = fp_engine_new(conf, errstr, sizeof(errstr));
  fp_conf_destroy(conf);
  if (!e) {
    fprintf(stderr, "flashpoint: %s\n", errstr);
    return 2;
  }
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_stop;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  sa.sa_handler = on_hup;
  sigaction(SIGHUP, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  the_engine = e;
  err = fp_engine_run(e);
  the_engine = NULL;
  fp_engine_destroy(e);
  return err == FP_OK ? 0 : 1;

conf_err:
  fprintf(stderr, "flashpoint: %s\n", errstr);
  fp_conf_destroy(conf);
  return 2;
}

int main(int argc, char **argv) {
  char errstr[1024];
  if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help"))) {
    usage(stdout);
    return 0;
  }
  if (argc >= 2 && (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V"))) {
    printf("flashpoint %s (incident schema v%d)\n", FP_VERSION_STR, FP_INCIDENT_SCHEMA_VERSION);
    return 0;
  }
  if (argc >= 2 && !strcmp(argv[1], "--help-config")) {
    fp_conf_print_help(stdout, argc >= 3 && !strcmp(argv[2], "--markdown"));
    return 0;
  }
  if (argc >= 2 && !strcmp(argv[1], "demo")) return fp_demo_main(argc - 2, argv + 2);
  if (argc >= 2 && !strcmp(argv[1], "check")) {
    if (argc != 3) {
      fprintf(stderr, "usage: flashpoint check RULES_DIR\n");
      return 2;
    }
    if (fp_rules_check_dir(argv[2], stdout, errstr, sizeof(errstr)) != FP_OK) {
      fprintf(stderr, "flashpoint check: %s\n", errstr);
      return 3;
    }
    return 0;
  }
  if (argc >= 2 && !strcmp(argv[1], "run")) return cmd_run(argc - 2, argv + 2);
  if (argc >= 2 && argv[1][0] != '-') {
    fprintf(stderr, "flashpoint: unknown command \"%s\" (see --help)\n", argv[1]);
    return 2;
  }
  return cmd_run(argc - 1, argv + 1);
}
