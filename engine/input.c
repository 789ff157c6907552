/*
 * input.c - owns the file readers of the offline tools (see input.h). One buffered line
 * reader under both formats: zlib's gzread when the build has zlib (it reads plain files
 * unchanged, so gzip needs no flag), stdio otherwise. JSON lines are handed out as they are,
 * unparsed (the pipeline's decoder is the one place that judges a mention). CSV follows
 * RFC 4180: a header row names the columns, fields may be quoted, "" is a quote inside a
 * quoted field, and a quoted field may span lines (the record keeps its first line number).
 * A row with more cells than the header is a bad record (FP_ERR_DECODE), not a failure of
 * the file.
 */
#include "input.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#ifdef FP_HAVE_ZLIB
#include <zlib.h>
#endif

#define RD_CHUNK (256 * 1024)

struct fp_reader_s {
#ifdef FP_HAVE_ZLIB
  gzFile gz;
#else
  FILE *fp;
#endif
  fp_format_t fmt;
  char *buf;
  size_t start, end;
  int eof;
  int64_t lineno;
  int64_t size; /* bytes on disk, -1 if unknown */
  fp_buf_t line, rec;
  char **cols;
  size_t ncols;
  json_t *row;
  int first;
};

static int ends_with(const char *s, const char *suffix) {
  size_t a = strlen(s), b = strlen(suffix);
  return a >= b && !strcmp(s + a - b, suffix);
}

fp_reader_t *fp_reader_open(const char *path, fp_format_t format, char *errstr, size_t es) {
  fp_reader_t *r = calloc(1, sizeof(*r));
  struct stat st;
  int is_stdin = !strcmp(path, "-");
  if (!r || !(r->buf = malloc(RD_CHUNK))) {
    free(r);
    fp_seterr(errstr, es, FP_ERR_NOMEM, "out of memory");
    return NULL;
  }
  r->first = 1;
  r->fmt = format;
  if (format == FP_FORMAT_AUTO)
    r->fmt = ends_with(path, ".csv") || ends_with(path, ".csv.gz") ? FP_FORMAT_CSV : FP_FORMAT_JSONL;
  r->size = !is_stdin && stat(path, &st) == 0 && S_ISREG(st.st_mode) ? (int64_t)st.st_size : -1;
#ifdef FP_HAVE_ZLIB
  r->gz = is_stdin ? gzdopen(0, "rb") : gzopen(path, "rb");
  if (!r->gz) {
#else
  r->fp = is_stdin ? stdin : fopen(path, "rb");
  if (!r->fp) {
#endif
    fp_seterr(errstr, es, FP_ERR_IO, "%s: %s", path, strerror(errno ? errno : ENOENT));
    fp_reader_close(r);
    return NULL;
  }
#ifdef FP_HAVE_ZLIB
  gzbuffer(r->gz, RD_CHUNK);
#endif
  return r;
}

void fp_reader_close(fp_reader_t *r) {
  if (!r) return;
#ifdef FP_HAVE_ZLIB
  if (r->gz) gzclose(r->gz);
#else
  if (r->fp && r->fp != stdin) fclose(r->fp);
#endif
  for (size_t i = 0; i < r->ncols; i++) free(r->cols[i]);
  free(r->cols);
  json_decref(r->row);
  fp_buf_free(&r->line);
  fp_buf_free(&r->rec);
  free(r->buf);
  free(r);
}

fp_format_t fp_reader_format(const fp_reader_t *r) { return r->fmt; }

const char *const *fp_reader_columns(const fp_reader_t *r, size_t *n) {
  *n = r->ncols;
  return r->fmt == FP_FORMAT_CSV ? (const char *const *)r->cols : NULL;
}

double fp_reader_progress(const fp_reader_t *r) {
  int64_t pos;
  if (r->size <= 0) return -1;
#ifdef FP_HAVE_ZLIB
  pos = (int64_t)gzoffset(r->gz);
#else
  pos = (int64_t)ftell(r->fp);
#endif
  if (pos < 0) return -1;
  return pos >= r->size ? 1.0 : (double)pos / (double)r->size;
}

/* Refills the buffer. @returns bytes read, 0 at the end, -1 on error. */
static long fill(fp_reader_t *r, char *errstr, size_t es) {
#ifdef FP_HAVE_ZLIB
  int n = gzread(r->gz, r->buf, RD_CHUNK);
  if (n < 0) {
    int zerr;
    const char *msg = gzerror(r->gz, &zerr);
    fp_seterr(errstr, es, FP_ERR_IO, "read failed: %s", msg ? msg : "error");
    return -1;
  }
#else
  size_t n = fread(r->buf, 1, RD_CHUNK, r->fp);
  if (n == 0 && ferror(r->fp)) {
    fp_seterr(errstr, es, FP_ERR_IO, "read failed: %s", strerror(errno));
    return -1;
  }
#endif
  r->start = 0;
  r->end = (size_t)n;
  return (long)n;
}

/* Reads one physical line into r->line (no newline, no trailing CR). @returns 1, 0, -1. */
static int read_line(fp_reader_t *r, char *errstr, size_t es) {
  fp_buf_reset(&r->line);
  for (;;) {
    if (r->start >= r->end) {
      long n;
      if (r->eof) break;
      if ((n = fill(r, errstr, es)) < 0) return -1;
      if (n == 0) {
        r->eof = 1;
        break;
      }
    }
    char *nl = memchr(r->buf + r->start, '\n', r->end - r->start);
    size_t take = nl ? (size_t)(nl - (r->buf + r->start)) : r->end - r->start;
    if (fp_buf_append(&r->line, r->buf + r->start, take) != FP_OK) {
      fp_seterr(errstr, es, FP_ERR_NOMEM, "out of memory");
      return -1;
    }
    r->start += take;
    if (nl) {
      r->start++;
      r->lineno++;
      goto got;
    }
  }
  if (r->line.len == 0) return 0;
  r->lineno++; /* a last line without a newline */
got:
  if (r->line.len && r->line.data[r->line.len - 1] == '\r') r->line.data[--r->line.len] = '\0';
  if (r->first) {
    r->first = 0;
    if (r->line.len >= 3 && !memcmp(r->line.data, "\xEF\xBB\xBF", 3)) { /* UTF-8 BOM */
      memmove(r->line.data, r->line.data + 3, r->line.len - 2);
      r->line.len -= 3;
    }
  }
  if (!r->line.data) fp_buf_append(&r->line, "", 0);
  return 1;
}

static int blank(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (s[i] != ' ' && s[i] != '\t') return 0;
  return 1;
}

static size_t count_quotes(const char *s, size_t n) {
  size_t q = 0;
  for (size_t i = 0; i < n; i++) q += s[i] == '"';
  return q;
}

/*
 * Reads one CSV record (possibly several lines) into r->rec and splits it into cells,
 * calling @p cell for each. @returns 1, 0 at the end, -1 on error.
 */
typedef int (*cell_fn)(fp_reader_t *r, size_t idx, const char *s, size_t n, void *opaque);

static int split_record(fp_reader_t *r, cell_fn cell, void *opaque) {
  const char *s = r->rec.data, *end = s + r->rec.len;
  fp_buf_t tmp = {0};
  size_t idx = 0;
  int rc = 0;
  for (;;) {
    fp_buf_reset(&tmp);
    if (s < end && *s == '"') {
      s++;
      for (;;) {
        const char *q = memchr(s, '"', (size_t)(end - s));
        if (!q) { /* unterminated: take the rest */
          fp_buf_append(&tmp, s, (size_t)(end - s));
          s = end;
          break;
        }
        fp_buf_append(&tmp, s, (size_t)(q - s));
        if (q + 1 < end && q[1] == '"') {
          fp_buf_append(&tmp, "\"", 1);
          s = q + 2;
          continue;
        }
        s = q + 1;
        break;
      }
      const char *c = memchr(s, ',', (size_t)(end - s));
      s = c ? c : end; /* anything between the closing quote and the comma is dropped */
    } else {
      const char *c = memchr(s, ',', (size_t)(end - s));
      const char *e = c ? c : end;
      fp_buf_append(&tmp, s, (size_t)(e - s));
      s = e;
    }
    if ((rc = cell(r, idx++, tmp.data ? tmp.data : "", tmp.len, opaque)) != 0) break;
    if (s >= end) break;
    s++; /* the comma */
  }
  fp_buf_free(&tmp);
  return rc;
}

static int read_csv_record(fp_reader_t *r, int64_t *first_line, char *errstr, size_t es) {
  int rc;
  do {
    if ((rc = read_line(r, errstr, es)) <= 0) return rc;
  } while (blank(r->line.data, r->line.len));
  *first_line = r->lineno;
  fp_buf_reset(&r->rec);
  fp_buf_append(&r->rec, r->line.data, r->line.len);
  while (count_quotes(r->rec.data, r->rec.len) % 2) { /* a quoted field goes on */
    if ((rc = read_line(r, errstr, es)) < 0) return -1;
    if (rc == 0) break;
    fp_buf_append(&r->rec, "\n", 1);
    fp_buf_append(&r->rec, r->line.data, r->line.len);
  }
  if (!r->rec.data) fp_buf_append(&r->rec, "", 0);
  return 1;
}

static int header_cell(fp_reader_t *r, size_t idx, const char *s, size_t n, void *opaque) {
  (void)opaque;
  char **q = realloc(r->cols, (idx + 1) * sizeof(*q));
  if (!q) return -1;
  r->cols = q;
  while (n && (*s == ' ')) s++, n--;
  while (n && s[n - 1] == ' ') n--;
  if (!(r->cols[idx] = strndup(s, n))) return -1;
  r->ncols = idx + 1;
  return 0;
}

typedef struct {
  fp_record_t *rec;
} row_ctx_t;

static int row_cell(fp_reader_t *r, size_t idx, const char *s, size_t n, void *opaque) {
  row_ctx_t *c = opaque;
  if (idx >= r->ncols) {
    c->rec->status = FP_ERR_DECODE;
    snprintf(c->rec->reason, sizeof(c->rec->reason), "csv line %lld: more cells than the %zu header columns",
             (long long)c->rec->line, r->ncols);
    return 1;
  }
  if (n == 0 || !r->cols[idx][0]) return 0;
  json_t *v = json_stringn(s, n);
  if (!v) {
    c->rec->status = FP_ERR_DECODE;
    snprintf(c->rec->reason, sizeof(c->rec->reason), "csv line %lld: column %s: invalid UTF-8",
             (long long)c->rec->line, r->cols[idx]);
    return 1;
  }
  json_object_set_new(r->row, r->cols[idx], v);
  return 0;
}

int fp_reader_next(fp_reader_t *r, fp_record_t *rec, char *errstr, size_t es) {
  int rc;
  memset(rec, 0, sizeof(*rec));
  if (r->fmt == FP_FORMAT_JSONL) {
    do {
      if ((rc = read_line(r, errstr, es)) <= 0) return rc;
    } while (blank(r->line.data, r->line.len));
    rec->line = r->lineno;
    rec->data = r->line.data;
    rec->len = r->line.len;
    return 1;
  }
  if (!r->cols) {
    int64_t l;
    if ((rc = read_csv_record(r, &l, errstr, es)) <= 0) return rc;
    if (split_record(r, header_cell, NULL) != 0) {
      fp_seterr(errstr, es, FP_ERR_NOMEM, "out of memory");
      return -1;
    }
  }
  if ((rc = read_csv_record(r, &rec->line, errstr, es)) <= 0) return rc;
  json_decref(r->row);
  if (!(r->row = json_object())) {
    fp_seterr(errstr, es, FP_ERR_NOMEM, "out of memory");
    return -1;
  }
  row_ctx_t c = {rec};
  if (split_record(r, row_cell, &c) < 0) {
    fp_seterr(errstr, es, FP_ERR_NOMEM, "out of memory");
    return -1;
  }
  rec->row = r->row;
  return 1;
}
