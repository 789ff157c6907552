/*
 * mapping.c - owns schema mappings (see mapping.h): parsing a mapping file into per-topic
 * field tables, and applying one table to a document.
 *
 * A mapping is a list of target fields (mention paths such as "author.followers"), each with
 * its sources (dotted paths into the input; the first one present wins), or a constant, an
 * optional default, and a type that comes from the mention model for known targets (string,
 * integer >= 0, number, boolean, timestamp -> epoch ms, array of strings) or from "type" for
 * extra fields. Applying builds a fresh object: targets are filled in table order, missing
 * optional fields are left out, and the decoder (mention.c) then validates the result as it
 * would any mention, so a mapped feed obeys exactly the same contract.
 *
 * Path lookup tries the longest literal key first at each level ("author.id" as one CSV
 * column name, then author -> id), and numeric components index arrays ("urls.0.url").
 */
#include "mapping.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "jdecode.h"

typedef enum { FT_ANY = 0, FT_STRING, FT_INT, FT_NUMBER, FT_BOOL, FT_TIME, FT_STRARRAY } ftype_t;

typedef struct field_s {
  char *target;
  char **from; /* alternatives, first present wins */
  size_t nfrom;
  json_t *cnst, *dflt; /* owned, may be NULL */
  ftype_t type;
  char *format; /* FT_TIME: auto, rfc3339, twitter, epoch_s, epoch_ms */
  char *split;  /* FT_STRARRAY from a string */
  char *each;   /* FT_STRARRAY from an array of objects: path inside each element */
  int required;
} field_t;

struct fp_mapping_s {
  char *name;
  field_t *f;
  size_t n;
  int keep; /* start from a copy of the input */
};

struct fp_mapping_set_s {
  fp_mapping_t *m;
  size_t n;
  int single; /* "fields" form: one mapping for everything */
};

static const struct {
  const char *target;
  ftype_t type;
  int required;
} known[] = {
    {"id", FT_STRING, 1},           {"platform", FT_STRING, 0},
    {"brand", FT_STRING, 0},        {"entities", FT_STRARRAY, 0},
    {"hashtags", FT_STRARRAY, 0},   {"author.id", FT_STRING, 1},
    {"author.followers", FT_INT, 0}, {"author.verified", FT_BOOL, 0},
    {"text", FT_STRING, 1},         {"lang", FT_STRING, 0},
    {"created_at", FT_TIME, 1},     {"reshare_of", FT_STRING, 0},
    {"engagement.likes", FT_INT, 0}, {"engagement.reshares", FT_INT, 0},
    {"engagement.replies", FT_INT, 0}, {"sentiment", FT_NUMBER, 0},
    {"url", FT_STRING, 0},
};

static const char *const type_names[] = {"any", "string", "integer", "number", "boolean", "time", "strings"};

static void field_free(field_t *f) {
  free(f->target);
  for (size_t i = 0; i < f->nfrom; i++) free(f->from[i]);
  free(f->from);
  json_decref(f->cnst);
  json_decref(f->dflt);
  free(f->format);
  free(f->split);
  free(f->each);
}

static void mapping_free(fp_mapping_t *m) {
  for (size_t i = 0; i < m->n; i++) field_free(&m->f[i]);
  free(m->f);
  free(m->name);
}

void fp_mapping_set_destroy(fp_mapping_set_t *set) {
  if (!set) return;
  for (size_t i = 0; i < set->n; i++) mapping_free(&set->m[i]);
  free(set->m);
  free(set);
}

const char *fp_mapping_name(const fp_mapping_t *m) { return m->name; }

/* ---- timestamps ---------------------------------------------------------------------- */

/* "Wed Oct 10 20:19:24 +0000 2018" */
static fp_err_t parse_twitter(const char *s, int64_t *ms) {
  static const char *const mons[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  int mo = -1, d, h, mi, sec, oh, om, y, sign;
  if (strlen(s) != 30 || s[3] != ' ' || s[7] != ' ' || s[10] != ' ' || s[13] != ':' ||
      s[16] != ':' || s[19] != ' ' || (s[20] != '+' && s[20] != '-') || s[25] != ' ')
    return FP_ERR_SCHEMA;
  for (int i = 0; i < 12; i++)
    if (!strncmp(s + 4, mons[i], 3)) mo = i + 1;
  if (mo < 0 || fp_parse_digits(s + 8, 2, &d) || fp_parse_digits(s + 11, 2, &h) || fp_parse_digits(s + 14, 2, &mi) ||
      fp_parse_digits(s + 17, 2, &sec) || fp_parse_digits(s + 21, 2, &oh) || fp_parse_digits(s + 23, 2, &om) ||
      fp_parse_digits(s + 26, 4, &y))
    return FP_ERR_SCHEMA;
  if (d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60 || oh > 23 || om > 59) return FP_ERR_SCHEMA;
  sign = s[20] == '-' ? -1 : 1;
  *ms = (fp_days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - sign * (oh * 60 + om) * 60) * 1000;
  return FP_OK;
}

static fp_err_t parse_epoch_text(const char *s, double *out) {
  const char *p = s;
  if (*p == '-') p++;
  if (!isdigit((unsigned char)*p)) return FP_ERR_SCHEMA;
  return fp_parse_double(s, out);
}

fp_err_t fp_mapping_parse_time(json_t *v, const char *format, int64_t *ms_out) {
  const char *fmt = format ? format : "auto";
  double num;
  int have_num = 0;
  if (json_is_number(v)) {
    num = json_number_value(v);
    have_num = 1;
  } else if (json_is_string(v)) {
    const char *s = json_string_value(v);
    if (!strcmp(fmt, "twitter")) return parse_twitter(s, ms_out);
    if (!strcmp(fmt, "rfc3339")) return fp_time_parse_rfc3339(s, ms_out);
    if (parse_epoch_text(s, &num) == FP_OK) have_num = 1;
    else if (!strcmp(fmt, "auto"))
      return fp_time_parse_rfc3339(s, ms_out) == FP_OK ? FP_OK : parse_twitter(s, ms_out);
    else return FP_ERR_SCHEMA;
  } else {
    return FP_ERR_SCHEMA;
  }
  if (!have_num || !isfinite(num) || num < 0 || num > 9.0e15) return FP_ERR_SCHEMA;
  if (!strcmp(fmt, "epoch_s") || (!strcmp(fmt, "auto") && num < 1e11)) num *= 1000;
  else if (strcmp(fmt, "epoch_ms") && strcmp(fmt, "auto")) return FP_ERR_SCHEMA;
  *ms_out = (int64_t)llround(num);
  return FP_OK;
}

/* ---- loading ------------------------------------------------------------------------- */

static int known_index(const char *target) {
  for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
    if (!strcmp(known[i].target, target)) return (int)i;
  return -1;
}

static char *xstrdup(const char *s) { return s ? strdup(s) : NULL; }

static fp_err_t add_from(field_t *f, const char *path) {
  char **q = realloc(f->from, (f->nfrom + 1) * sizeof(*q));
  if (!q) return FP_ERR_NOMEM;
  f->from = q;
  if (!(f->from[f->nfrom] = strdup(path))) return FP_ERR_NOMEM;
  f->nfrom++;
  return FP_OK;
}

static int valid_path(const char *p) {
  if (!*p || *p == '.' || p[strlen(p) - 1] == '.') return 0;
  return strstr(p, "..") == NULL;
}

static fp_err_t parse_field(field_t *f, const char *mname, const char *target, json_t *spec,
                            char *errstr, size_t es) {
  int k = known_index(target);
  const char *key;
  json_t *v;
  f->type = k >= 0 ? known[k].type : FT_ANY;
  f->required = k >= 0 ? known[k].required : 0;
  if (!(f->target = strdup(target))) return fp_seterr(errstr, es, FP_ERR_NOMEM, "out of memory");
  if (!valid_path(target))
    return fp_seterr(errstr, es, FP_ERR_CONFIG, "mapping %s: bad target field \"%s\"", mname, target);
  if (json_is_string(spec)) {
    if (!valid_path(json_string_value(spec)))
      return fp_seterr(errstr, es, FP_ERR_CONFIG, "mapping %s: field %s: bad source path \"%s\"", mname,
                       target, json_string_value(spec));
    return add_from(f, json_string_value(spec)) == FP_OK ? FP_OK
                                                        : fp_seterr(errstr, es, FP_ERR_NOMEM, "out of memory");
  }
  if (!json_is_object(spec))
    return fp_seterr(errstr, es, FP_ERR_CONFIG,
                     "mapping %s: field %s: expected a source path or an object {\"from\": ...}", mname, target);
  json_object_foreach(spec, key, v) {
    if (!strcmp(key, "from")) {
      if (json_is_string(v)) {
        if (!valid_path(json_string_value(v)) || add_from(f, json_string_value(v)) != FP_OK) goto bad;
      } else if (json_is_array(v) && json_array_size(v) > 0) {
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e) {
          if (!json_is_string(e) || !valid_path(json_string_value(e)) || add_from(f, json_string_value(e)) != FP_OK)
            goto bad;
        }
      } else {
        goto bad;
      }
    } else if (!strcmp(key, "const")) {
      f->cnst = json_incref(v);
    } else if (!strcmp(key, "default")) {
      f->dflt = json_incref(v);
    } else if (!strcmp(key, "required")) {
      if (!json_is_boolean(v)) goto bad;
      f->required = json_is_true(v);
    } else if (!strcmp(key, "format")) {
      const char *s = json_string_value(v);
      if (!s || (strcmp(s, "auto") && strcmp(s, "rfc3339") && strcmp(s, "twitter") && strcmp(s, "epoch_s") &&
                 strcmp(s, "epoch_ms")))
        return fp_seterr(errstr, es, FP_ERR_CONFIG,
                         "mapping %s: field %s: format must be auto, rfc3339, twitter, epoch_s or epoch_ms",
                         mname, target);
      f->format = xstrdup(s);
    } else if (!strcmp(key, "type")) {
      const char *s = json_string_value(v);
      int t = -1;
      for (int i = 0; s && i < (int)(sizeof(type_names) / sizeof(type_names[0])); i++)
        if (!strcmp(s, type_names[i])) t = i;
      if (t < 0)
        return fp_seterr(errstr, es, FP_ERR_CONFIG,
                         "mapping %s: field %s: type must be any, string, integer, number, boolean, time or strings",
                         mname, target);
      if (k >= 0 && (ftype_t)t != known[k].type)
        return fp_seterr(errstr, es, FP_ERR_CONFIG, "mapping %s: field %s is a %s in the mention model",
                         mname, target, type_names[known[k].type]);
      f->type = (ftype_t)t;
    } else if (!strcmp(key, "split")) {
      if (!json_is_string(v) || !*json_string_value(v)) goto bad;
      f->split = xstrdup(json_string_value(v));
    } else if (!strcmp(key, "each")) {
      if (!json_is_string(v) || !valid_path(json_string_value(v))) goto bad;
      f->each = xstrdup(json_string_value(v));
    } else {
      return fp_seterr(errstr, es, FP_ERR_CONFIG,
                       "mapping %s: field %s: unknown option \"%s\" (from, const, default, required, "
                       "format, type, split, each)", mname, target, key);
    }
    continue;
  bad:
    return fp_seterr(errstr, es, FP_ERR_CONFIG, "mapping %s: field %s: bad value for \"%s\"", mname, target, key);
  }
  if (!f->nfrom && !f->cnst)
    return fp_seterr(errstr, es, FP_ERR_CONFIG, "mapping %s: field %s: needs \"from\" or \"const\"", mname, target);
  if ((f->split || f->each) && f->type != FT_STRARRAY)
    return fp_seterr(errstr, es, FP_ERR_CONFIG, "mapping %s: field %s: split/each only apply to string arrays",
                     mname, target);
  if (f->format && f->type != FT_TIME)
    return fp_seterr(errstr, es, FP_ERR_CONFIG, "mapping %s: field %s: format only applies to timestamps",
                     mname, target);
  return FP_OK;
}

static fp_err_t parse_mapping(fp_mapping_t *m, const char *name, json_t *fields, char *errstr, size_t es) {
  const char *target;
  json_t *spec;
  if (!(m->name = strdup(name))) return fp_seterr(errstr, es, FP_ERR_NOMEM, "out of memory");
  if (!json_is_object(fields))
    return fp_seterr(errstr, es, FP_ERR_CONFIG, "mapping %s: expected an object of target fields", name);
  if (!(m->f = calloc(json_object_size(fields) + 1, sizeof(*m->f))))
    return fp_seterr(errstr, es, FP_ERR_NOMEM, "out of memory");
  json_object_foreach(fields, target, spec) {
    if (!strcmp(target, "$keep")) {
      if (!json_is_boolean(spec))
        return fp_seterr(errstr, es, FP_ERR_CONFIG, "mapping %s: $keep must be true or false", name);
      m->keep = json_is_true(spec);
      continue;
    }
    if (target[0] == '$')
      return fp_seterr(errstr, es, FP_ERR_CONFIG, "mapping %s: unknown option \"%s\" ($keep)", name, target);
    fp_err_t err = parse_field(&m->f[m->n++], name, target, spec, errstr, es);
    if (err != FP_OK) return err;
  }
  return FP_OK;
}

static fp_err_t add_group(fp_mapping_set_t *set, json_t *group, const char *gname, char *errstr, size_t es) {
  const char *name;
  json_t *fields;
  if (!json_is_object(group))
    return fp_seterr(errstr, es, FP_ERR_CONFIG, "mapping: \"%s\" must be an object of names to mappings", gname);
  json_object_foreach(group, name, fields) {
    fp_mapping_t *q = realloc(set->m, (set->n + 1) * sizeof(*q));
    if (!q) return fp_seterr(errstr, es, FP_ERR_NOMEM, "out of memory");
    set->m = q;
    memset(&set->m[set->n], 0, sizeof(set->m[0]));
    set->n++;
    fp_err_t err = parse_mapping(&set->m[set->n - 1], name, fields, errstr, es);
    if (err != FP_OK) return err;
  }
  return FP_OK;
}

fp_mapping_set_t *fp_mapping_set_from_json(json_t *spec, char *errstr, size_t es) {
  fp_mapping_set_t *set = calloc(1, sizeof(*set));
  const char *key;
  json_t *v;
  if (!set) {
    fp_seterr(errstr, es, FP_ERR_NOMEM, "out of memory");
    return NULL;
  }
  if (!json_is_object(spec)) {
    fp_seterr(errstr, es, FP_ERR_CONFIG, "mapping: expected a JSON object");
    goto err;
  }
  json_object_foreach(spec, key, v) {
    if (!strcmp(key, "topics") || !strcmp(key, "files")) {
      if (add_group(set, v, key, errstr, es) != FP_OK) goto err;
    } else if (!strcmp(key, "fields")) {
      json_t *one = json_pack("{sO}", "*", v);
      fp_err_t err = one ? add_group(set, one, key, errstr, es) : FP_ERR_NOMEM;
      json_decref(one);
      if (err != FP_OK) goto err;
      set->single = 1;
    } else if (strcmp(key, "description") && strcmp(key, "$comment")) {
      fp_seterr(errstr, es, FP_ERR_CONFIG, "mapping: unknown key \"%s\" (topics, files, fields, description)", key);
      goto err;
    }
  }
  if (set->n == 0) {
    fp_seterr(errstr, es, FP_ERR_CONFIG, "mapping: no mapping declared (topics, files or fields)");
    goto err;
  }
  return set;
err:
  fp_mapping_set_destroy(set);
  return NULL;
}

fp_mapping_set_t *fp_mapping_set_load(const char *path, char *errstr, size_t es) {
  json_error_t jerr;
  json_t *spec = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
  fp_mapping_set_t *set;
  char inner[512];
  if (!spec) {
    fp_seterr(errstr, es, FP_ERR_CONFIG, "%s:%d: %s", path, jerr.line, jerr.text);
    return NULL;
  }
  set = fp_mapping_set_from_json(spec, inner, sizeof(inner));
  json_decref(spec);
  if (!set) fp_seterr(errstr, es, FP_ERR_CONFIG, "%s: %s", path, inner);
  return set;
}

fp_mapping_set_t *fp_mapping_set_csv_identity(const char *const *names, size_t n, char *errstr, size_t es) {
  json_t *fields = json_object(), *spec;
  fp_mapping_set_t *set;
  if (!fields) return NULL;
  for (size_t i = 0; i < n; i++) {
    if (!names[i] || !*names[i] || names[i][0] == '$' || !valid_path(names[i])) continue;
    json_object_set_new(fields, names[i], json_string(names[i]));
  }
  spec = json_pack("{so}", "fields", fields);
  set = spec ? fp_mapping_set_from_json(spec, errstr, es) : NULL;
  json_decref(spec);
  return set;
}

const fp_mapping_t *fp_mapping_set_find(const fp_mapping_set_t *set, const char *name) {
  char base[256];
  const char *slash;
  if (!set) return NULL;
  if (name) {
    for (size_t i = 0; i < set->n; i++)
      if (!strcmp(set->m[i].name, name)) return &set->m[i];
    slash = strrchr(name, '/');
    snprintf(base, sizeof(base), "%s", slash ? slash + 1 : name);
    for (int pass = 0; pass < 4; pass++) {
      for (size_t i = 0; i < set->n; i++)
        if (!strcmp(set->m[i].name, base)) return &set->m[i];
      char *dot = strrchr(base, '.');
      if (!dot || dot == base) break;
      *dot = '\0';
    }
  }
  for (size_t i = 0; i < set->n; i++)
    if (!strcmp(set->m[i].name, "*")) return &set->m[i];
  return set->n == 1 ? &set->m[0] : NULL;
}

/* ---- applying ------------------------------------------------------------------------ */

static json_t *lookup(json_t *v, const char *path) {
  json_t *x;
  const char *dot;
  if (!v) return NULL;
  if (json_is_object(v) && (x = json_object_get(v, path))) return x;
  for (dot = strchr(path, '.');; dot = strchr(dot + 1, '.')) {
    size_t len = dot ? (size_t)(dot - path) : strlen(path);
    json_t *child = NULL;
    if (json_is_object(v)) {
      if (dot) child = json_object_getn(v, path, len);
    } else if (json_is_array(v) && len > 0 && len < 10) {
      char idx[12];
      int64_t i;
      memcpy(idx, path, len);
      idx[len] = '\0';
      if (fp_parse_i64(idx, 0, 1000000000, &i) == FP_OK) child = json_array_get(v, (size_t)i);
      if (child && !dot) return child;
    }
    if (!dot) return NULL;
    if (child && (x = lookup(child, dot + 1))) return x;
  }
}

/* Sets @p val (taken over) at a dotted path of @p obj, creating objects on the way. */
static int set_path(json_t *obj, const char *path, json_t *val) {
  const char *dot = strchr(path, '.');
  if (!dot) return json_object_set_new(obj, path, val);
  char key[128];
  size_t len = (size_t)(dot - path);
  if (len >= sizeof(key)) {
    json_decref(val);
    return -1;
  }
  memcpy(key, path, len);
  key[len] = '\0';
  json_t *child = json_object_get(obj, key);
  if (!json_is_object(child)) {
    child = json_object();
    if (json_object_set_new(obj, key, child)) {
      json_decref(val);
      return -1;
    }
  }
  return set_path(child, dot + 1, val);
}

static int is_missing(json_t *v) {
  return !v || json_is_null(v) || (json_is_string(v) && json_string_length(v) == 0);
}

static json_t *to_string(json_t *v) {
  char buf[64];
  if (json_is_string(v)) return json_stringn(json_string_value(v), json_string_length(v));
  if (json_is_integer(v)) {
    snprintf(buf, sizeof(buf), "%lld", (long long)json_integer_value(v));
    return json_string(buf);
  }
  if (json_is_real(v)) {
    snprintf(buf, sizeof(buf), "%.17g", json_real_value(v));
    return json_string(buf);
  }
  if (json_is_boolean(v)) return json_string(json_is_true(v) ? "true" : "false");
  return NULL;
}

/* Converts @p v to the field's type. @returns a new reference, or NULL with @p why set. */
static json_t *convert(const field_t *f, json_t *v, const char **why) {
  switch (f->type) {
  case FT_ANY: return json_deep_copy(v);
  case FT_STRING:
    *why = "expected a string or a number";
    return to_string(v);
  case FT_INT:
    *why = "expected a non-negative integer";
    if (json_is_integer(v)) return json_integer_value(v) >= 0 ? json_integer(json_integer_value(v)) : NULL;
    if (json_is_real(v)) {
      double d = json_real_value(v);
      return isfinite(d) && d >= 0 && d < 9.0e18 ? json_integer((json_int_t)d) : NULL;
    }
    if (json_is_string(v)) {
      int64_t i;
      double d;
      if (fp_parse_i64(json_string_value(v), 0, INT64_MAX, &i) == FP_OK) return json_integer(i);
      if (fp_parse_double(json_string_value(v), &d) == FP_OK && isfinite(d) && d >= 0 && d < 9.0e18)
        return json_integer((json_int_t)d);
    }
    if (json_is_boolean(v)) return json_integer(json_is_true(v));
    return NULL;
  case FT_NUMBER:
    *why = "expected a number";
    if (json_is_number(v)) return json_real(json_number_value(v));
    if (json_is_string(v)) {
      double d;
      if (fp_parse_double(json_string_value(v), &d) == FP_OK && isfinite(d)) return json_real(d);
    }
    return NULL;
  case FT_BOOL:
    *why = "expected a boolean (true/false, 1/0, yes/no)";
    if (json_is_boolean(v)) return json_boolean(json_is_true(v));
    if (json_is_integer(v) && (json_integer_value(v) == 0 || json_integer_value(v) == 1))
      return json_boolean(json_integer_value(v));
    if (json_is_string(v)) {
      const char *s = json_string_value(v);
      if (!strcasecmp(s, "true") || !strcmp(s, "1") || !strcasecmp(s, "yes") || !strcasecmp(s, "t"))
        return json_true();
      if (!strcasecmp(s, "false") || !strcmp(s, "0") || !strcasecmp(s, "no") || !strcasecmp(s, "f"))
        return json_false();
    }
    return NULL;
  case FT_TIME: {
    int64_t ms;
    *why = f->format && strcmp(f->format, "auto") ? "not a timestamp in the declared format"
                                                  : "not an RFC 3339, Twitter or epoch timestamp";
    return fp_mapping_parse_time(v, f->format, &ms) == FP_OK ? json_integer(ms) : NULL;
  }
  case FT_STRARRAY: {
    json_t *arr = json_array();
    *why = "expected a string or an array of strings";
    if (!arr) return NULL;
    if (json_is_array(v)) {
      size_t i;
      json_t *e;
      json_array_foreach(v, i, e) {
        json_t *x = f->each ? lookup(e, f->each) : e, *s;
        if (is_missing(x)) continue;
        if (!(s = to_string(x))) {
          json_decref(arr);
          return NULL;
        }
        json_array_append_new(arr, s);
      }
      return arr;
    }
    if (json_is_string(v) && f->split) {
      const char *s = json_string_value(v), *end = s + json_string_length(v);
      size_t sl = strlen(f->split);
      while (s <= end) {
        const char *hit = strstr(s, f->split);
        const char *e = hit ? hit : end, *b = s;
        while (b < e && isspace((unsigned char)*b)) b++;
        while (e > b && isspace((unsigned char)e[-1])) e--;
        if (e > b) json_array_append_new(arr, json_stringn(b, (size_t)(e - b)));
        if (!hit) break;
        s = hit + sl;
      }
      return arr;
    }
    json_t *s = to_string(v);
    if (!s) {
      json_decref(arr);
      return NULL;
    }
    json_array_append_new(arr, s);
    return arr;
  }
  }
  return NULL;
}

static void describe_sources(const field_t *f, char *buf, size_t size) {
  size_t o = 0;
  buf[0] = '\0';
  if (f->cnst) {
    snprintf(buf, size, "const");
    return;
  }
  for (size_t i = 0; i < f->nfrom && o + 1 < size; i++) {
    int w = snprintf(buf + o, size - o, "%s%s", i ? "|" : "", f->from[i]);
    if (w < 0) break;
    o += (size_t)w;
  }
}

fp_err_t fp_mapping_apply(const fp_mapping_t *m, json_t *doc_in, json_t **doc_out, char *errstr, size_t es) {
  json_t *out;
  char src[256];
  *doc_out = NULL;
  if (!json_is_object(doc_in))
    return fp_seterr(errstr, es, FP_ERR_SCHEMA, "mapping %s: the input is not a JSON object", m->name);
  out = m->keep ? json_deep_copy(doc_in) : json_object();
  if (!out) return fp_seterr(errstr, es, FP_ERR_NOMEM, "out of memory");
  for (size_t i = 0; i < m->n; i++) {
    const field_t *f = &m->f[i];
    json_t *v = f->cnst, *conv;
    const char *why = "unconvertible value";
    for (size_t k = 0; !v && k < f->nfrom; k++) {
      v = lookup(doc_in, f->from[k]);
      if (is_missing(v)) v = NULL;
    }
    if (!v) v = f->dflt;
    if (!v) {
      if (f->required) {
        describe_sources(f, src, sizeof(src));
        json_decref(out);
        return fp_seterr(errstr, es, FP_ERR_SCHEMA, "mapping %s: field %s (from %s): missing", m->name,
                         f->target, src);
      }
      continue;
    }
    if (!(conv = convert(f, v, &why))) {
      char shown[64] = "";
      json_t *sv = to_string(v);
      if (sv) {
        snprintf(shown, sizeof(shown), ", got \"%.40s\"", json_string_value(sv));
        json_decref(sv);
      }
      describe_sources(f, src, sizeof(src));
      json_decref(out);
      return fp_seterr(errstr, es, FP_ERR_SCHEMA, "mapping %s: field %s (from %s): %s%s", m->name, f->target,
                       src, why, shown);
    }
    if (set_path(out, f->target, conv) != 0) {
      json_decref(out);
      return fp_seterr(errstr, es, FP_ERR_SCHEMA, "mapping %s: field %s: cannot be set", m->name, f->target);
    }
  }
  *doc_out = out;
  return FP_OK;
}

fp_err_t fp_mapping_transform(const fp_mapping_t *m, const void *buf, size_t len, fp_buf_t *out, char *errstr,
                              size_t es) {
  char jerr[160];
  json_t *in = fp_json_decode(buf, len, jerr, sizeof(jerr)), *doc = NULL;
  fp_err_t err;
  char *s;
  fp_buf_reset(out);
  if (!in) return fp_seterr(errstr, es, FP_ERR_DECODE, "invalid JSON %s", jerr);
  if (!json_is_object(in)) {
    json_decref(in);
    return fp_seterr(errstr, es, FP_ERR_DECODE, "the message is not a JSON object");
  }
  err = fp_mapping_apply(m, in, &doc, errstr, es);
  json_decref(in);
  if (err != FP_OK) return err;
  s = json_dumps(doc, JSON_COMPACT);
  json_decref(doc);
  if (!s || fp_buf_append(out, s, strlen(s)) != FP_OK) {
    free(s);
    return fp_seterr(errstr, es, FP_ERR_NOMEM, "out of memory");
  }
  free(s);
  return FP_OK;
}
