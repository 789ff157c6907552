/*
 * input.h - readers for the offline tools: files of mentions as JSON lines (plain or gzip)
 * and CSV with a header row (plain or gzip), one record at a time, with the line number of
 * each record (the replay's offsets) and the progress through the file.
 */
#ifndef FP_INPUT_H
#define FP_INPUT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "flashpoint/flashpoint.h"
#include "util.h"

typedef enum { FP_FORMAT_AUTO = 0, FP_FORMAT_JSONL, FP_FORMAT_CSV } fp_format_t;

typedef struct fp_reader_s fp_reader_t;

/** One record. Everything is borrowed from the reader until the next fp_reader_next(). */
typedef struct fp_record_s {
  int64_t line;      /* 1-based line where the record starts */
  const char *data;  /* JSONL: the line (no newline); NULL for CSV */
  size_t len;
  json_t *row;       /* CSV: {"column": "value", ...} (empty cells left out); NULL for JSONL */
  fp_err_t status;   /* FP_OK, or FP_ERR_DECODE for a CSV row that cannot be read */
  char reason[256];
} fp_record_t;

/**
 * Opens @p path ("-" for stdin). gzip is detected from the content (zlib reads plain files
 * too); @p format AUTO means CSV when the name ends in .csv or .csv.gz, else JSON lines.
 * @returns the reader (owned: fp_reader_close) or NULL with the reason in @p errstr.
 */
fp_reader_t *fp_reader_open(const char *path, fp_format_t format, char *errstr, size_t errstr_size);

/**
 * Reads the next record, skipping blank lines. @returns 1 with a record (check its status),
 * 0 at the end, -1 on a read error (reason in @p errstr).
 */
int fp_reader_next(fp_reader_t *r, fp_record_t *rec, char *errstr, size_t errstr_size);

/** The CSV header (borrowed), or NULL for JSON lines. */
const char *const *fp_reader_columns(const fp_reader_t *r, size_t *n);

fp_format_t fp_reader_format(const fp_reader_t *r);

/** Fraction of the file read so far, in [0, 1] (compressed bytes for gzip); -1 if unknown. */
double fp_reader_progress(const fp_reader_t *r);

void fp_reader_close(fp_reader_t *r);

#endif
