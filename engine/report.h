/*
 * report.h - `flashpoint report`: one self-contained HTML page for a replay (inline CSS,
 * SVG and a little JS; no external resource): per entity, the mention rate, the negative
 * rate and a trailing baseline over time, with incidents and escalations marked, the ground
 * truth shaded when known, and the sample mentions of every incident.
 */
#ifndef FP_REPORT_H
#define FP_REPORT_H

#include "replay.h"

typedef struct fp_report_opts_s {
  fp_replay_opts_t replay;  /* what to replay; on_mention/on_event/opaque are the report's */
  const char *out_path;     /* required: the HTML file */
  const char *title;        /* page title, or NULL */
  int max_entities;         /* charts at most (entities with incidents first); 0: 24 */
} fp_report_opts_t;

/** Replays and writes the page. @returns FP_OK or the replay's error, FP_ERR_IO for the file. */
fp_err_t fp_report_run(const fp_report_opts_t *opts, char *errstr, size_t errstr_size);

#endif
