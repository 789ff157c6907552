/*
 * test_mapping.c - schema mappings (engine/mapping.c) and the input readers (engine/input.c):
 * nested paths, type conversion, the timestamp formats, failures that name the field, CSV
 * (quotes, embedded newlines, bad rows) and gzip.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef FP_HAVE_ZLIB
#include <zlib.h>
#endif

#include "input.h"
#include "mapping.h"
#include "mention.h"
#include "testlib.h"

static const char *TWEETS =
    "{\"topics\": {\"tweets\": {\"id\": \"id_str\", \"text\": {\"from\": [\"full_text\", \"text\"]},"
    " \"author.id\": \"user.id_str\", \"author.followers\": \"user.followers_count\","
    " \"author.verified\": {\"from\": \"user.verified\", \"default\": false},"
    " \"created_at\": {\"from\": \"created_at\", \"format\": \"twitter\"},"
    " \"reshare_of\": \"retweeted_status.id_str\", \"brand\": {\"const\": \"acme\"},"
    " \"hashtags\": {\"from\": \"entities.hashtags\", \"each\": \"text\"},"
    " \"url\": \"entities.urls.0.expanded_url\"}}}";

static fp_mapping_set_t *load(const char *spec) {
  char err[512];
  json_t *j = json_loads(spec, 0, NULL);
  FPT_CHECK(j != NULL, "spec parses");
  fp_mapping_set_t *s = fp_mapping_set_from_json(j, err, sizeof err);
  json_decref(j);
  FPT_CHECK(s != NULL, "mapping loads: %s", s ? "" : err);
  return s;
}

static void t_tweet(void) {
  fp_mapping_set_t *set = load(TWEETS);
  const fp_mapping_t *m = fp_mapping_set_find(set, "tweets");
  const char *tw =
      "{\"id_str\":\"1050118621198921728\",\"full_text\":\"acme blender exploded #recall\","
      "\"user\":{\"id_str\":\"42\",\"followers_count\":\"12800\"},\"created_at\":\"Wed Oct 10 20:19:24 +0000 2018\","
      "\"retweeted_status\":{\"id_str\":\"99\"},\"entities\":{\"hashtags\":[{\"text\":\"recall\"}],"
      "\"urls\":[{\"expanded_url\":\"https://x.example/1\"}]}}";
  fp_buf_t out = {0};
  char err[512];
  fp_mention_t mm;
  if (!FPT_CHECK(m != NULL, "mapping for tweets")) goto out;
  FPT_CHECK_EQ_INT(fp_mapping_transform(m, tw, strlen(tw), &out, err, sizeof err), FP_OK);
  FPT_CHECK_EQ_INT(fp_mention_decode(out.data, out.len, 1 << 20, &mm, err, sizeof err), FP_OK);
  FPT_CHECK_EQ_STR(mm.id, "1050118621198921728");
  FPT_CHECK_EQ_STR(mm.author_id, "42");
  FPT_CHECK_EQ_INT(mm.followers, 12800);
  FPT_CHECK_EQ_STR(mm.brand, "acme");
  FPT_CHECK_EQ_STR(mm.reshare_of, "99");
  FPT_CHECK_EQ_STR(mm.url, "https://x.example/1");
  FPT_CHECK_EQ_INT(mm.created_at_ms, 1539202764000LL);
  FPT_CHECK_EQ_STR(json_string_value(json_array_get(json_object_get(mm.doc, "hashtags"), 0)), "recall");
  fp_mention_clear(&mm);
  /* a missing required field names the target and its source */
  const char *bad = "{\"id_str\":\"1\",\"full_text\":\"x\",\"created_at\":\"Wed Oct 10 20:19:24 +0000 2018\"}";
  FPT_CHECK_EQ_INT(fp_mapping_transform(m, bad, strlen(bad), &out, err, sizeof err), FP_ERR_SCHEMA);
  FPT_CHECK(strstr(err, "author.id") && strstr(err, "user.id_str"), "reason names field and source: %s", err);
  /* an unconvertible value */
  const char *bad2 = "{\"id_str\":\"1\",\"full_text\":\"x\",\"user\":{\"id_str\":\"2\",\"followers_count\":\"lots\"},"
                     "\"created_at\":\"Wed Oct 10 20:19:24 +0000 2018\"}";
  FPT_CHECK_EQ_INT(fp_mapping_transform(m, bad2, strlen(bad2), &out, err, sizeof err), FP_ERR_SCHEMA);
  FPT_CHECK(strstr(err, "author.followers") && strstr(err, "lots"), "reason: %s", err);
  /* a bad timestamp */
  const char *bad3 = "{\"id_str\":\"1\",\"full_text\":\"x\",\"user\":{\"id_str\":\"2\"},\"created_at\":\"yesterday\"}";
  FPT_CHECK_EQ_INT(fp_mapping_transform(m, bad3, strlen(bad3), &out, err, sizeof err), FP_ERR_SCHEMA);
  FPT_CHECK(strstr(err, "created_at") != NULL, "reason: %s", err);
  FPT_CHECK_EQ_INT(fp_mapping_transform(m, "{nope", 5, &out, err, sizeof err), FP_ERR_DECODE);
out:
  fp_buf_free(&out);
  fp_mapping_set_destroy(set);
}

static void t_times(void) {
  int64_t ms;
  json_t *v;
  struct {
    const char *json, *fmt;
    long long want;
  } ok[] = {{"1539202764", "auto", 1539202764000LL},   {"1539202764123", "auto", 1539202764123LL},
            {"\"1539202764\"", "auto", 1539202764000LL}, {"\"2018-10-10T20:19:24Z\"", "auto", 1539202764000LL},
            {"\"2018-10-10T22:19:24+02:00\"", "rfc3339", 1539202764000LL},
            {"\"Wed Oct 10 20:19:24 +0000 2018\"", "auto", 1539202764000LL},
            {"\"Wed Oct 10 22:19:24 +0200 2018\"", "twitter", 1539202764000LL}, {"1539202764", "epoch_s", 1539202764000LL},
            {"1539202764000", "epoch_ms", 1539202764000LL}};
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
    v = json_loads(ok[i].json, JSON_DECODE_ANY, NULL);
    FPT_CHECK(fp_mapping_parse_time(v, ok[i].fmt, &ms) == FP_OK && ms == ok[i].want, "%s as %s -> %lld", ok[i].json,
              ok[i].fmt, (long long)ms);
    json_decref(v);
  }
  v = json_string("Wed Oct 10 20:19:24 +0000 2018");
  FPT_CHECK_EQ_INT(fp_mapping_parse_time(v, "rfc3339", &ms), FP_ERR_SCHEMA);
  json_decref(v);
}

static void t_bad_specs(void) {
  const char *bad[] = {"{\"topics\": {\"t\": {\"id\": 5}}}", "{\"topics\": {\"t\": {\"id\": {\"form\": \"x\"}}}}",
                       "{\"topics\": {\"t\": {\"created_at\": {\"from\": \"t\", \"format\": \"unix\"}}}}",
                       "{\"tropics\": {}}", "{\"topics\": {\"t\": {\"author.followers\": {\"from\": \"f\", \"type\": \"string\"}}}}"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char err[512] = "";
    json_t *j = json_loads(bad[i], 0, NULL);
    fp_mapping_set_t *s = fp_mapping_set_from_json(j, err, sizeof err);
    FPT_CHECK(s == NULL && err[0], "refused: %s (%s)", bad[i], err);
    fp_mapping_set_destroy(s);
    json_decref(j);
  }
  /* find: by topic, by file base name, by "*" */
  fp_mapping_set_t *s = load("{\"files\": {\"tweets\": {\"id\": \"a\"}, \"*\": {\"id\": \"b\"}}}");
  FPT_CHECK_EQ_STR(fp_mapping_name(fp_mapping_set_find(s, "/data/tweets.jsonl.gz")), "tweets");
  FPT_CHECK_EQ_STR(fp_mapping_name(fp_mapping_set_find(s, "other.csv")), "*");
  fp_mapping_set_destroy(s);
}

static void t_csv_reader(void) {
  char *dir = fpt_tmpdir("mapping"), path[512], err[512];
  fp_record_t rec;
  FILE *f;
  if (!dir) return;
  snprintf(path, sizeof path, "%s/in.csv", dir);
  f = fopen(path, "w");
  fputs("\xEF\xBB\xBFid,text,author.id,author.followers,created_at,brand\r\n"
        "1,\"hello, \"\"world\"\"\",u1,10,2026-01-05T00:00:00Z,acme\r\n"
        "\n"
        "2,\"two\nlines\",u2,,1767571200,acme\n"
        "3,x,u3,5,2026-01-05T00:00:01Z,acme,extra\n"
        "4,y,u4,notanumber,2026-01-05T00:00:02Z,acme\n", f);
  fclose(f);
  fp_reader_t *r = fp_reader_open(path, FP_FORMAT_AUTO, err, sizeof err);
  if (!FPT_CHECK(r != NULL, "open: %s", err)) return;
  FPT_CHECK_EQ_INT(fp_reader_format(r), FP_FORMAT_CSV);
  FPT_CHECK_EQ_INT(fp_reader_next(r, &rec, err, sizeof err), 1);
  FPT_CHECK_EQ_INT(rec.line, 2);
  FPT_CHECK_EQ_STR(json_string_value(json_object_get(rec.row, "text")), "hello, \"world\"");
  size_t nc;
  const char *const *cols = fp_reader_columns(r, &nc);
  FPT_CHECK_EQ_INT(nc, 6);
  FPT_CHECK_EQ_STR(cols[0], "id");
  fp_mapping_set_t *id = fp_mapping_set_csv_identity(cols, nc, err, sizeof err);
  const fp_mapping_t *m = fp_mapping_set_find(id, NULL);
  json_t *doc = NULL;
  FPT_CHECK_EQ_INT(fp_mapping_apply(m, rec.row, &doc, err, sizeof err), FP_OK);
  FPT_CHECK_EQ_INT(json_integer_value(json_object_get(json_object_get(doc, "author"), "followers")), 10);
  json_decref(doc);
  FPT_CHECK_EQ_INT(fp_reader_next(r, &rec, err, sizeof err), 1);
  FPT_CHECK_EQ_INT(rec.line, 4);
  FPT_CHECK_EQ_STR(json_string_value(json_object_get(rec.row, "text")), "two\nlines");
  FPT_CHECK(json_object_get(rec.row, "author.followers") == NULL, "empty cell left out");
  FPT_CHECK_EQ_INT(fp_mapping_apply(m, rec.row, &doc, err, sizeof err), FP_OK);
  FPT_CHECK_EQ_INT(json_integer_value(json_object_get(doc, "created_at")), 1767571200000LL);
  json_decref(doc);
  FPT_CHECK_EQ_INT(fp_reader_next(r, &rec, err, sizeof err), 1);
  FPT_CHECK_EQ_INT(rec.status, FP_ERR_DECODE);
  FPT_CHECK(strstr(rec.reason, "more cells") != NULL, "bad row: %s", rec.reason);
  FPT_CHECK_EQ_INT(fp_reader_next(r, &rec, err, sizeof err), 1);
  FPT_CHECK_EQ_INT(fp_mapping_apply(m, rec.row, &doc, err, sizeof err), FP_ERR_SCHEMA);
  FPT_CHECK(strstr(err, "author.followers") != NULL, "reason: %s", err);
  FPT_CHECK_EQ_INT(fp_reader_next(r, &rec, err, sizeof err), 0);
  fp_mapping_set_destroy(id);
  fp_reader_close(r);
  free(dir);
}

static void t_gzip_lines(void) {
#ifdef FP_HAVE_ZLIB
  char *dir = fpt_tmpdir("mapping"), path[512], err[512];
  fp_record_t rec;
  if (!dir) return;
  snprintf(path, sizeof path, "%s/in.jsonl.gz", dir);
  gzFile gz = gzopen(path, "wb");
  for (int i = 0; i < 3000; i++) gzprintf(gz, "{\"n\":%d}\n", i);
  gzclose(gz);
  fp_reader_t *r = fp_reader_open(path, FP_FORMAT_AUTO, err, sizeof err);
  int n = 0, ok = 1;
  while (r && fp_reader_next(r, &rec, err, sizeof err) == 1) {
    char want[32];
    snprintf(want, sizeof want, "{\"n\":%d}", n);
    ok &= rec.line == n + 1 && rec.len == strlen(want) && !memcmp(rec.data, want, rec.len);
    n++;
  }
  FPT_CHECK_EQ_INT(n, 3000);
  FPT_CHECK(ok, "every gzip line read back with its line number");
  FPT_CHECK(fp_reader_progress(r) > 0.99, "progress at the end");
  fp_reader_close(r);
  free(dir);
#else
  FPT_CHECK(1, "built without zlib");
#endif
}

int main(void) {
  fpt_run("tweet mapping", t_tweet);
  fpt_run("timestamp formats", t_times);
  fpt_run("bad mapping specs and lookup", t_bad_specs);
  fpt_run("csv reader and identity mapping", t_csv_reader);
  fpt_run("gzip json lines", t_gzip_lines);
  return fpt_done();
}
