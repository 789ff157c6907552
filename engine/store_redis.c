/*
 * store_redis.c - the Redis backend of the store: one hiredis connection per store (per
 * worker thread), scripts run with EVALSHA, one command per call.
 *
 * How it works: the connection is made (AUTH, SELECT) lazily before a call when there is
 * none. A script is sent with EVALSHA using the SHA1 that SCRIPT LOAD returned; -NOSCRIPT
 * (Redis restarted, SCRIPT FLUSH) loads it again and retries once. Every command sent
 * counts as a round trip.
 *
 * Errors: an I/O error or timeout leaves the outcome indeterminate (the script may have
 * run): the context is dropped (hiredis cannot reuse it) and FP_ERR_REDIS is returned; the
 * caller retries the same batch and the fence makes that safe. -NOAUTH, -WRONGPASS,
 * -NOPERM, -OOM, -READONLY, and script errors (a bug, or a key of the wrong type) are
 * FP_ERR_REDIS_FATAL: retrying cannot help. Other error replies (-LOADING, -BUSY, ...) are
 * retriable and keep the connection.
 *
 * Sent ahead (redis_send, for fp_store_apply_send): the command is written without
 * waiting, as much as the socket takes, and the rest is written when its reply is read
 * (redis_recv). Until then the command sits in r->resp; any other command first finishes it
 * and drops its reply (settle), so a connection never has two callers' replies in flight.
 *
 * Invariant: st->c is NULL or a context with no error; a reply is kept only until the next
 * call (fp_store_reply_t borrows from it).
 */
#include <errno.h>
#include <hiredis/hiredis.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "log.h"
#include "store_int.h"
#include "util.h"

#define FP_REDIS_MAX_SCRIPTS 4
#define FP_REDIS_HLL_SPARSE_ADVISED 12000 /* bytes: see advise_hll */

typedef struct fp_store_redis_s {
  fp_store_t base; /* first: the store is cast from and to this */
  redisContext *c;
  char *host, *password;
  int port, db;
  int connect_timeout_ms, command_timeout_ms;
  struct {
    const fp_store_script_t *script;
    char sha[41];
  } shas[FP_REDIS_MAX_SCRIPTS];
  redisReply *last;        /* the reply borrowed by the caller's fp_store_reply_t */
  const char **rstr;       /* reply element views */
  size_t *rlen, rcap;
  const char **cmdv;       /* "EVALSHA sha 0" + ARGV */
  size_t *cmdl, cmdcap;
  char *resp;              /* the command in RESP, built here rather than by hiredis's */
  size_t respcap;          /* printf-style formatter (a batch has thousands of arguments) */
  int pending;             /* a command was sent ahead and its reply is not read yet */
  size_t ahead_off, ahead_len; /* of it, r->resp[ahead_off..ahead_len) is not written yet */
  const fp_store_script_t *ahead_script; /* and which script it runs */
} fp_store_redis_t;

static void drop_conn(fp_store_redis_t *r) {
  if (r->c) redisFree(r->c);
  r->c = NULL;
  r->pending = 0;
}

static fp_err_t io_error(fp_store_redis_t *r, char *errstr, size_t errstr_size) {
  fp_err_t e = fp_seterr(errstr, errstr_size, FP_ERR_REDIS, "redis %s:%d: %s (%s)", r->host,
                         r->port, r->c->errstr[0] ? r->c->errstr : "I/O error",
                         r->c->err == REDIS_ERR_IO || !r->c->err ? "I/O or timeout; outcome unknown"
                                                                 : "closed");
  drop_conn(r);
  return e;
}

/* Finishes the command sent ahead: writes the rest of it (blocking, within the command
 * timeout the socket has) and reads its reply into *out (owned; may be an error reply). */
static fp_err_t settle(fp_store_redis_t *r, redisReply **out, char *errstr, size_t errstr_size) {
  *out = NULL;
  while (r->ahead_off < r->ahead_len) {
    ssize_t w = write(r->c->fd, r->resp + r->ahead_off, r->ahead_len - r->ahead_off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      snprintf(r->c->errstr, sizeof(r->c->errstr), "write: %s", w < 0 ? strerror(errno) : "closed");
      return io_error(r, errstr, errstr_size);
    }
    r->ahead_off += (size_t)w;
  }
  r->pending = 0;
  if (redisGetReply(r->c, (void **)out) != REDIS_OK || !*out) {
    *out = NULL;
    return io_error(r, errstr, errstr_size);
  }
  return FP_OK;
}

/* Finishes a command sent ahead that nobody took, and drops its reply. */
static fp_err_t drain(fp_store_redis_t *r, char *errstr, size_t errstr_size) {
  redisReply *rep = NULL;
  fp_err_t e = r->pending ? settle(r, &rep, errstr, errstr_size) : FP_OK;
  if (rep) freeReplyObject(rep);
  return e;
}

static struct timeval tv_ms(int ms) {
  struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
  return tv;
}

/* Classifies an error reply. */
static fp_err_t classify(const char *msg) {
  static const char *const fatal[] = {"NOAUTH", "WRONGPASS", "NOPERM", "OOM", "READONLY",
                                      "WRONGTYPE", "ERR user_script", "ERR Error running script",
                                      "ERR Error compiling script", "ERR flashpoint"};
  if (strncmp(msg, "FPLOST", 6) == 0) return FP_ERR_STORE_LOST;
  for (size_t i = 0; i < sizeof(fatal) / sizeof(fatal[0]); i++)
    if (strncmp(msg, fatal[i], strlen(fatal[i])) == 0) return FP_ERR_REDIS_FATAL;
  if (strstr(msg, "OOM command not allowed") || strstr(msg, "-READONLY")) return FP_ERR_REDIS_FATAL;
  return FP_ERR_REDIS;
}

/* Writes the command as a RESP array into r->resp; returns its length, 0 when out of memory. */
static size_t format_resp(fp_store_redis_t *r, int argc, const char **argv, const size_t *lens) {
  size_t need = 16;
  for (int i = 0; i < argc; i++) need += lens[i] + 26;
  if (need > r->respcap) {
    size_t cap = r->respcap ? r->respcap : 4096;
    while (cap < need) cap *= 2;
    char *p = realloc(r->resp, cap);
    if (!p) return 0;
    r->resp = p;
    r->respcap = cap;
  }
  char *d = r->resp;
  *d++ = '*';
  d += fp_fmt_u64(d, (uint64_t)argc);
  *d++ = '\r';
  *d++ = '\n';
  for (int i = 0; i < argc; i++) {
    *d++ = '$';
    d += fp_fmt_u64(d, lens[i]);
    *d++ = '\r';
    *d++ = '\n';
    memcpy(d, argv[i], lens[i]);
    d += lens[i];
    *d++ = '\r';
    *d++ = '\n';
  }
  return (size_t)(d - r->resp);
}

/* Sends one command; on I/O failure drops the connection. *out is an owned non-error reply. */
static fp_err_t command(fp_store_redis_t *r, int argc, const char **argv, const size_t *lens,
                        redisReply **out, char *errstr, size_t errstr_size) {
  *out = NULL;
  redisReply *rep = NULL;
  size_t len;
  fp_err_t e = drain(r, errstr, errstr_size);
  if (e) return e;
  r->base.roundtrips++;
  if (!(len = format_resp(r, argc, argv, lens)))
    return fp_seterr(errstr, errstr_size, FP_ERR_NOMEM, "redis: out of memory formatting a command");
  if (redisAppendFormattedCommand(r->c, r->resp, len) != REDIS_OK ||
      redisGetReply(r->c, (void **)&rep) != REDIS_OK)
    rep = NULL;
  if (!rep) return io_error(r, errstr, errstr_size);
  if (rep->type == REDIS_REPLY_ERROR) {
    e = classify(rep->str);
    fp_seterr(errstr, errstr_size, e, "redis %s:%d: %s", r->host, r->port, rep->str);
    *out = rep; /* the caller looks at NOSCRIPT, then frees */
    return e;
  }
  *out = rep;
  return FP_OK;
}

/* DISTINCT windows count after every add (store_windows.lua). On a HyperLogLog of a few
 * thousand members Redis's dense form costs two to four times the sparse one per count
 * (PFCOUNT rebuilds its register histogram), and Redis turns a key dense past
 * hll-sparse-max-bytes, 3000 by default: say so, once per process. Advice only: a server
 * that refuses CONFIG (managed services often rename it) is left alone. @returns an error
 * only if the connection failed. */
static fp_err_t advise_hll(fp_store_redis_t *r, char *errstr, size_t errstr_size) {
  const char *av[3] = {"CONFIG", "GET", "hll-sparse-max-bytes"};
  size_t al[3] = {6, 3, 20};
  redisReply *rep = NULL;
  fp_err_t err = command(r, 3, av, al, &rep, errstr, errstr_size);
  if (!rep) return err; /* I/O: the connection is gone */
  if (!err && rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
      rep->element[1]->type == REDIS_REPLY_STRING) {
    long v = strtol(rep->element[1]->str, NULL, 10);
    if (v < FP_REDIS_HLL_SPARSE_ADVISED)
      fp_log_once(FP_LOG_INFO, "store",
                  "redis %s:%d has hll-sparse-max-bytes %ld: %d makes DISTINCT windows of "
                  "thousands of members cheaper for Redis (docs/operations.md)",
                  r->host, r->port, v, FP_REDIS_HLL_SPARSE_ADVISED);
  }
  freeReplyObject(rep);
  return FP_OK;
}

/* Sends a command whose reply only has to be a non-error one, and frees that reply. */
static fp_err_t simple(fp_store_redis_t *r, int argc, const char **argv, const size_t *lens,
                       char *errstr, size_t errstr_size) {
  redisReply *rep = NULL;
  fp_err_t err = command(r, argc, argv, lens, &rep, errstr, errstr_size);
  freeReplyObject(rep);
  return err;
}

static fp_err_t connect_now(fp_store_redis_t *r, char *errstr, size_t errstr_size) {
  fp_err_t err;

  r->c = redisConnectWithTimeout(r->host, r->port, tv_ms(r->connect_timeout_ms));
  if (!r->c || r->c->err) {
    err = fp_seterr(errstr, errstr_size, FP_ERR_REDIS, "redis %s:%d: connect: %s", r->host,
                    r->port, r->c ? r->c->errstr : "out of memory");
    drop_conn(r);
    return err;
  }
  r->base.roundtrips++; /* the connection itself */
  redisSetTimeout(r->c, tv_ms(r->command_timeout_ms));
  redisEnableKeepAlive(r->c);
  if (r->password && *r->password) {
    const char *av[2] = {"AUTH", r->password};
    size_t al[2] = {4, strlen(r->password)};
    if ((err = simple(r, 2, av, al, errstr, errstr_size))) goto err;
  } else {
    /* a server that wants a password says NOAUTH here; otherwise the first thing it would
     * refuse is our script (over 16 KiB), with "unauthenticated bulk length" */
    const char *av[1] = {"PING"};
    size_t al[1] = {4};
    if ((err = simple(r, 1, av, al, errstr, errstr_size))) goto err;
  }
  if (r->db) {
    char db[16];
    snprintf(db, sizeof(db), "%d", r->db);
    const char *av[2] = {"SELECT", db};
    size_t al[2] = {6, strlen(db)};
    if ((err = simple(r, 2, av, al, errstr, errstr_size))) goto err;
  }
  if ((err = advise_hll(r, errstr, errstr_size))) goto err;
  return FP_OK;
err:
  /* every reply is freed where it was read: a reply pointer kept for this label once freed
   * the PING reply a second time when CONFIG GET timed out */
  if (err == FP_ERR_REDIS) fp_log(FP_LOG_WARN, "store", "%s", errstr ? errstr : "redis error");
  drop_conn(r);
  return err;
}

static char *sha_slot(fp_store_redis_t *r, const fp_store_script_t *s) {
  for (int i = 0; i < FP_REDIS_MAX_SCRIPTS; i++) {
    if (r->shas[i].script == s) return r->shas[i].sha;
    if (!r->shas[i].script) {
      r->shas[i].script = s;
      r->shas[i].sha[0] = '\0';
      return r->shas[i].sha;
    }
  }
  return NULL;
}

static fp_err_t load_script(fp_store_redis_t *r, const fp_store_script_t *s, char *sha,
                            char *errstr, size_t errstr_size) {
  redisReply *rep;
  const char *av[3] = {"SCRIPT", "LOAD", s->text};
  size_t al[3] = {6, 4, s->len};
  fp_err_t err = command(r, 3, av, al, &rep, errstr, errstr_size);
  if (err) {
    if (rep) freeReplyObject(rep);
    return err;
  }
  if (rep->type != REDIS_REPLY_STRING || rep->len != 40) {
    freeReplyObject(rep);
    return fp_seterr(errstr, errstr_size, FP_ERR_REDIS_FATAL, "redis: SCRIPT LOAD %s: bad reply",
                     s->name);
  }
  memcpy(sha, rep->str, 41);
  freeReplyObject(rep);
  return FP_OK;
}

/* Grows two parallel arrays to at least @p need elements. */
static fp_err_t grow2(void *ap, void *bp, size_t *cap, size_t need, size_t ea, size_t eb) {
  if (need <= *cap) return FP_OK;
  size_t c = *cap ? *cap : 64;
  while (c < need) c *= 2;
  void *a = realloc(*(void **)ap, c * ea);
  if (!a) return FP_ERR_NOMEM;
  *(void **)ap = a;
  void *b = realloc(*(void **)bp, c * eb);
  if (!b) return FP_ERR_NOMEM;
  *(void **)bp = b;
  *cap = c;
  return FP_OK;
}

/* Starts a script call: frees the reply the caller borrowed, finds the script's SHA slot
 * (*sha, empty until loaded) and builds r->cmdv/cmdl = EVALSHA <sha> 0 ARGV... (the SHA is
 * set by the caller). */
static fp_err_t begin_call(fp_store_redis_t *r, const fp_store_script_t *script, size_t argc,
                           const char **argv, const size_t *argvlen, char **sha, char *errstr,
                           size_t errstr_size) {
  if (r->last) {
    freeReplyObject(r->last);
    r->last = NULL;
  }
  if (!(*sha = sha_slot(r, script)))
    return fp_seterr(errstr, errstr_size, FP_ERR_FATAL, "store: too many scripts");
  if (grow2(&r->cmdv, &r->cmdl, &r->cmdcap, argc + 3, sizeof(*r->cmdv), sizeof(*r->cmdl)))
    return fp_seterr(errstr, errstr_size, FP_ERR_NOMEM, "store: out of memory");
  memcpy(r->cmdv + 3, argv, argc * sizeof(*argv));
  memcpy(r->cmdl + 3, argvlen, argc * sizeof(*argvlen));
  r->cmdv[0] = "EVALSHA";
  r->cmdl[0] = 7;
  r->cmdv[2] = "0";
  r->cmdl[2] = 1;
  return FP_OK;
}

/* Hands a script's array reply (owned, taken over) to the caller as *out. */
static fp_err_t take_reply(fp_store_redis_t *r, redisReply *rep, const fp_store_script_t *script,
                           fp_store_reply_t *out, char *errstr, size_t errstr_size) {
  if (rep->type != REDIS_REPLY_ARRAY) {
    freeReplyObject(rep);
    return fp_seterr(errstr, errstr_size, FP_ERR_REDIS_FATAL, "redis: %s: reply is not an array",
                     script->name);
  }
  if (grow2(&r->rstr, &r->rlen, &r->rcap, rep->elements, sizeof(*r->rstr), sizeof(*r->rlen))) {
    freeReplyObject(rep);
    return fp_seterr(errstr, errstr_size, FP_ERR_NOMEM, "store: out of memory");
  }
  for (size_t i = 0; i < rep->elements; i++) {
    const redisReply *e = rep->element[i];
    if (e->type == REDIS_REPLY_STRING || e->type == REDIS_REPLY_STATUS) {
      r->rstr[i] = e->str;
      r->rlen[i] = e->len;
    } else {
      r->rstr[i] = NULL;
      r->rlen[i] = 0;
    }
  }
  r->last = rep;
  out->n = rep->elements;
  out->str = r->rstr;
  out->len = r->rlen;
  return FP_OK;
}

static void log_noscript(fp_store_redis_t *r, const fp_store_script_t *script) {
  fp_log(FP_LOG_INFO, "store", "redis %s:%d lost script %s (restart or SCRIPT FLUSH); "
         "loading it again", r->host, r->port, script->name);
}

static fp_err_t redis_eval(fp_store_t *st, const fp_store_script_t *script, size_t argc,
                           const char **argv, const size_t *argvlen, fp_store_reply_t *out,
                           char *errstr, size_t errstr_size) {
  fp_store_redis_t *r = (fp_store_redis_t *)st;
  redisReply *rep = NULL;
  fp_err_t err;
  char *sha;

  if ((err = begin_call(r, script, argc, argv, argvlen, &sha, errstr, errstr_size))) return err;

  if (!r->c && (err = connect_now(r, errstr, errstr_size))) return err;
  for (int attempt = 0; attempt < 2; attempt++) {
    if (!sha[0] && (err = load_script(r, script, sha, errstr, errstr_size))) return err;
    r->cmdv[1] = sha;
    r->cmdl[1] = 40;
    err = command(r, (int)(argc + 3), r->cmdv, r->cmdl, &rep, errstr, errstr_size);
    if (err && rep && strncmp(rep->str, "NOSCRIPT", 8) == 0) {
      freeReplyObject(rep);
      rep = NULL;
      sha[0] = '\0';
      log_noscript(r, script);
      continue;
    }
    break;
  }
  if (err) {
    if (rep) freeReplyObject(rep);
    return err;
  }
  return take_reply(r, rep, script, out, errstr, errstr_size);
}

static fp_err_t redis_send(fp_store_t *st, const fp_store_script_t *script, size_t argc,
                           const char **argv, const size_t *argvlen, char *errstr,
                           size_t errstr_size) {
  fp_store_redis_t *r = (fp_store_redis_t *)st;
  fp_err_t err;
  size_t len;
  char *sha;

  if ((err = begin_call(r, script, argc, argv, argvlen, &sha, errstr, errstr_size)) ||
      (err = drain(r, errstr, errstr_size)))
    return err;
  if (!r->c && (err = connect_now(r, errstr, errstr_size))) return err;
  if (!sha[0] && (err = load_script(r, script, sha, errstr, errstr_size))) return err;
  r->cmdv[1] = sha;
  r->cmdl[1] = 40;
  if (!(len = format_resp(r, (int)(argc + 3), r->cmdv, r->cmdl)))
    return fp_seterr(errstr, errstr_size, FP_ERR_NOMEM, "redis: out of memory formatting a command");
  r->base.roundtrips++;
  ssize_t w = send(r->c->fd, r->resp, len, MSG_DONTWAIT | MSG_NOSIGNAL);
  if (w < 0) {
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      snprintf(r->c->errstr, sizeof(r->c->errstr), "write: %s", strerror(errno));
      return io_error(r, errstr, errstr_size);
    }
    w = 0;
  }
  r->ahead_off = (size_t)w;
  r->ahead_len = len;
  r->ahead_script = script;
  r->pending = 1;
  return FP_OK;
}

static fp_err_t redis_recv(fp_store_t *st, fp_store_reply_t *out, char *errstr, size_t errstr_size) {
  fp_store_redis_t *r = (fp_store_redis_t *)st;
  const fp_store_script_t *script = r->ahead_script;
  redisReply *rep;
  fp_err_t err;
  if (!r->pending) return fp_seterr(errstr, errstr_size, FP_ERR_INVALID_ARG, "store: nothing sent");
  if ((err = settle(r, &rep, errstr, errstr_size))) return err;
  if (rep->type == REDIS_REPLY_ERROR) {
    if (strncmp(rep->str, "NOSCRIPT", 8) == 0) { /* the caller calls again with eval, which loads it */
      freeReplyObject(rep);
      char *sha = sha_slot(r, script);
      if (sha) sha[0] = '\0';
      log_noscript(r, script);
      return fp_seterr(errstr, errstr_size, FP_ERR_INVALID_ARG, "store: script not loaded");
    }
    err = classify(rep->str);
    fp_seterr(errstr, errstr_size, err, "redis %s:%d: %s", r->host, r->port, rep->str);
    freeReplyObject(rep);
    return err;
  }
  return take_reply(r, rep, script, out, errstr, errstr_size);
}

static void redis_destroy(fp_store_t *st) {
  fp_store_redis_t *r = (fp_store_redis_t *)st;
  if (r->last) freeReplyObject(r->last);
  drop_conn(r);
  free(r->host);
  free(r->password);
  free(r->rstr);
  free(r->rlen);
  free(r->cmdv);
  free(r->cmdl);
  free(r->resp);
  free(r);
}

static const fp_store_backend_t redis_backend = {"redis", redis_eval, redis_destroy, redis_send,
                                                 redis_recv};

fp_store_t *fp_store_redis_new(const fp_store_redis_conf_t *conf, char *errstr,
                               size_t errstr_size) {
  fp_store_redis_t *r = NULL;
  fp_err_t err;

  if (!conf || !conf->host || conf->port <= 0 || conf->port > 65535 || conf->db < 0) {
    fp_seterr(errstr, errstr_size, FP_ERR_INVALID_ARG, "store: redis host/port/db missing or invalid");
    return NULL;
  }
  if (!(r = calloc(1, sizeof(*r)))) goto nomem;
  if (fp_store_init_common(&r->base, &redis_backend, conf->prefix)) goto nomem;
  if (conf->memo_ttl_ms > 0) r->base.memo_ttl_ms = conf->memo_ttl_ms;
  if (conf->fence_ttl_ms > 0) r->base.fence_ttl_ms = conf->fence_ttl_ms;
  if (conf->lateness_ms > 0) r->base.lateness_ms = conf->lateness_ms;
  r->host = strdup(conf->host);
  r->password = conf->password && *conf->password ? strdup(conf->password) : NULL;
  if (!r->host || (conf->password && *conf->password && !r->password)) goto nomem;
  r->port = conf->port;
  r->db = conf->db;
  r->connect_timeout_ms = conf->connect_timeout_ms > 0 ? conf->connect_timeout_ms : 1000;
  r->command_timeout_ms = conf->command_timeout_ms > 0 ? conf->command_timeout_ms : 2000;

  if ((err = connect_now(r, errstr, errstr_size))) goto err;
  char *sha = sha_slot(r, &fp_store_windows_script);
  if ((err = load_script(r, &fp_store_windows_script, sha, errstr, errstr_size))) goto err;
  return &r->base;
nomem:
  fp_seterr(errstr, errstr_size, FP_ERR_NOMEM, "store: out of memory");
err:
  if (r) fp_store_destroy(&r->base);
  return NULL;
}
