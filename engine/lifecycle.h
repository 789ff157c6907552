/*
 * lifecycle.h - the incident lifecycle of one (rule, entity): a pure state machine.
 *
 * fp_lc_step() takes the state and one signal (a severity at an event time, with the
 * evidence that produced it) and returns the new state and at most two events (a status
 * change, and on resolution a post-mortem summary). It never reads a clock and never does
 * I/O, so the same signals give the same events byte for byte: that is what makes replays
 * after a crash produce identical incidents. Persistence and atomicity are the store's job.
 */
#ifndef FP_LIFECYCLE_H
#define FP_LIFECYCLE_H

#include <jansson.h>
#include <stdint.h>

#include "flashpoint/flashpoint.h"
#include "mention.h"
#include "rules.h"

#define FP_LC_TIMELINE_MAX 32
#define FP_LC_SAMPLES_MAX 8

typedef struct fp_lc_sample_s {
  char id[96], url[160], author[64], text[200], reason[16];
  int64_t followers;
  double sentiment;
  int has_sentiment;
  int64_t at_ms;
} fp_lc_sample_t;

typedef struct fp_lc_state_s {
  int open;
  char incident_id[24];     /* 16 hex digits, stable for the whole incident */
  fp_sev_t severity, peak;
  int64_t first_ms;         /* event time of the first mention of the crisis (see seen_*) */
  int64_t seen_first_ms;    /* while closed: the last time a mention found the rule's first
                               window empty, i.e. where the current streak began */
  int64_t opened_ms, last_signal_ms, sev_since_ms, lower_since_ms, resolved_ms, last_ms;
  fp_sev_t lower_sev;
  uint32_t seq;             /* events emitted so far for this incident */
  int64_t mentions;         /* mentions with a signal during the incident */
  int64_t reach;            /* sum of their authors' followers */
  double peak_value;        /* highest value of the rule's first window */
  size_t ntimeline;
  struct { int64_t at_ms; char status[16]; fp_sev_t sev; } timeline[FP_LC_TIMELINE_MAX];
  size_t nsamples;
  fp_lc_sample_t samples[FP_LC_SAMPLES_MAX];
} fp_lc_state_t;

typedef struct fp_lc_params_s {
  int64_t resolve_after_ms, hold_ms, grace_ms;
  size_t samples;           /* samples kept per reason */
} fp_lc_params_t;

/** The evidence of one signal. Borrowed for the duration of the call. */
typedef struct fp_lc_signal_s {
  fp_sev_t sev;                   /* FP_SEV_NONE: no signal (may resolve) */
  int64_t at_ms;                  /* event time */
  const fp_mention_t *mention;    /* NULL for a sweep (time passing, no mention) */
  const fp_rule_info_t *rule;
  const char *entity;
  const fp_win_op_t *values;      /* the rule's window ops, in declaration order; may be NULL */
  size_t nvalues;
  int window_was_empty;           /* the rule's first window held nothing before this mention */
  const fp_topk_entry_t *top;     /* top terms, may be NULL */
  size_t ntop;
} fp_lc_signal_t;

/**
 * Advances @p st by one signal. Appends 0..2 event documents (owned references, JSON
 * objects following docs/incident.md) to @p events_out (a JSON array).
 * @returns the number of events appended.
 */
int fp_lc_step(fp_lc_state_t *st, const fp_lc_params_t *p, const fp_lc_signal_t *sig,
               json_t *events_out);

/** Serialises @p st (owned reference returned) / reads it back (FP_ERR_SCHEMA if malformed). */
json_t *fp_lc_state_to_json(const fp_lc_state_t *st);
fp_err_t fp_lc_state_from_json(json_t *j, fp_lc_state_t *st);

/** The topic an event goes to: the rule's route for the severity, else @p def. */
const char *fp_lc_route(const fp_rule_info_t *rule, fp_sev_t sev, const char *def);

#endif
