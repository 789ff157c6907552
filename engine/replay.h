/*
 * replay.h - runs a rules directory over files of mentions, offline, through the same
 * pipeline as production (pipeline.h), and summarises what it would have emitted: the
 * incidents per rule and severity, time to detection, dead letters, and - given ground
 * truth (the generator's --truth file) - whether and how fast each injected crisis was
 * caught. Used by `flashpoint replay`, `flashpoint report` and the tests.
 */
#ifndef FP_REPLAY_H
#define FP_REPLAY_H

#include <jansson.h>
#include <stdio.h>

#include "flashpoint/flashpoint.h"
#include "incidents.h"
#include "mention.h"

/** Called for every input record after its run. All pointers are borrowed for the call;
 * @p m is NULL unless the record decoded (and was not late). */
typedef void (*fp_replay_mention_fn)(void *opaque, int64_t offset, const fp_mention_t *m,
                                     fp_err_t status, const char *reason);
/** Called for every incident event, in output order; @p doc is the parsed payload (borrowed). */
typedef void (*fp_replay_event_fn)(void *opaque, const fp_outrec_t *rec, json_t *doc);

typedef struct fp_replay_opts_s {
  const char *rules_dir;             /* required */
  const char *const *files;          /* required, nfiles >= 1; "-" is stdin */
  size_t nfiles;
  const char *redis;                 /* "HOST:PORT" for the Redis store (fresh key prefix); NULL: in-process */
  const char *mapping;               /* mapping file (mapping.h) or NULL */
  const char *truth;                 /* ground-truth file or NULL (default: FILE.truth.json if present) */
  const char *const *settings;       /* "key=value" configuration overrides, NULL-terminated, may be NULL */
  size_t batch;                      /* inputs per pipeline run (default 1000) */
  FILE *incidents;                   /* incident events as JSON lines, or NULL */
  FILE *log;                         /* human summary and throughput, or NULL */
  int progress;                      /* -1: when log is a terminal; 0 never; 1 always */
  fp_replay_mention_fn on_mention;   /* optional; forces decoding a second time for the observer */
  fp_replay_event_fn on_event;       /* optional */
  void *opaque;
} fp_replay_opts_t;

/**
 * Runs the replay.
 * @param summary_out receives the deterministic summary (owned JSON object, see
 *        docs/tools.md) on success; may be NULL.
 * @param rate_out receives mentions per second (wall clock), may be NULL.
 * @returns FP_OK; FP_ERR_CONFIG / FP_ERR_RULE_LOAD / FP_ERR_IO / FP_ERR_REDIS... with
 *          @p errstr.
 */
fp_err_t fp_replay_run(const fp_replay_opts_t *opts, json_t **summary_out, double *rate_out, char *errstr,
                       size_t errstr_size);

/** Prints @p summary as text (what `flashpoint replay` shows on stderr). */
void fp_replay_print_summary(FILE *out, json_t *summary);

/** Severity rank: "sev1" 4 .. "sev4" 1, anything else 0. */
int fp_replay_sev_rank(const char *sev);

#endif
