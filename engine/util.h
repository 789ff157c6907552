/*
 * util.h - small helpers shared by several modules: clocks, durations, timestamps, hashing,
 * a growable byte buffer. Nothing here allocates behind the caller's back except fp_buf_t.
 */
#ifndef FP_UTIL_H
#define FP_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "flashpoint/flashpoint.h"

/** Wall-clock milliseconds since the epoch. */
int64_t fp_now_ms(void);
/** Monotonic nanoseconds (for budgets and latency). */
int64_t fp_mono_ns(void);
/* CLOCK_MONOTONIC_COARSE (the last tick: no clock read, a few ns): at most its resolution,
 * written to @p res_ns when not NULL, behind fp_mono_ns(). */
int64_t fp_mono_coarse_ns(int64_t *res_ns);

/**
 * Parses a duration such as "500ms", "10s", "10m", "2h", "7d" or a bare number of
 * milliseconds. @returns FP_OK or FP_ERR_CONFIG.
 */
fp_err_t fp_duration_parse(const char *s, int64_t *ms_out);

/**
 * Parses an RFC 3339 timestamp ("2026-11-25T10:00:00Z", fractional seconds and +hh:mm
 * offsets accepted) into epoch milliseconds. @returns FP_OK or FP_ERR_SCHEMA.
 */
fp_err_t fp_time_parse_rfc3339(const char *s, int64_t *ms_out);
/** Days from 1970-01-01 to the date @p y - @p m - @p d (proleptic Gregorian). */
int64_t fp_days_from_civil(int64_t y, int m, int d);
/** Reads exactly @p n decimal digits at @p s into *out. @returns 0, or -1 on a non-digit. */
int fp_parse_digits(const char *s, int n, int *out);

/** Formats epoch milliseconds as "YYYY-MM-DDTHH:MM:SS.mmmZ" into @p buf (>= 25 bytes). */
void fp_time_format(int64_t ms, char *buf, size_t size);

/** 64-bit FNV-1a of @p len bytes, continuing from @p h (start with FP_FNV_INIT). */
#define FP_FNV_INIT 0xcbf29ce484222325ULL
uint64_t fp_fnv1a(uint64_t h, const void *data, size_t len);

/** Strict integer parse: the whole string must be a base-10 integer in [min, max]. */
fp_err_t fp_parse_i64(const char *s, int64_t min, int64_t max, int64_t *out);
/** Strict floating-point parse of the whole string. */
fp_err_t fp_parse_double(const char *s, double *out);

/** @returns 1 if @p len bytes at @p s are well-formed UTF-8 (no overlongs, no surrogates). */
int fp_utf8_valid(const char *s, size_t len);

/** a + b, saturating at INT64_MAX / INT64_MIN instead of overflowing. */
int64_t fp_add_sat(int64_t a, int64_t b);

/** Writes @p v in decimal at @p d (no NUL; at most 20 bytes) and returns the length. For hot
 *  paths where snprintf's format parsing costs more than the digits. */
size_t fp_fmt_u64(char *d, uint64_t v);

/** A growable byte buffer. Zero-initialise, append, then fp_buf_free(). */
typedef struct fp_buf_s {
  char *data; /* owned; always NUL-terminated when non-NULL */
  size_t len, cap;
} fp_buf_t;
fp_err_t fp_buf_append(fp_buf_t *b, const void *data, size_t len);
fp_err_t fp_buf_printf(fp_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void fp_buf_reset(fp_buf_t *b);
void fp_buf_free(fp_buf_t *b);

/** snprintf into errstr if it is non-NULL; @returns @p err for tail calls. */
fp_err_t fp_seterr(char *errstr, size_t size, fp_err_t err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
