/*
 * jarena.c - owns jansson's allocator pair and the bump arenas behind it (jarena.h).
 *
 * Why: decoding and freeing a mention's document was a third of a worker's CPU, much of it
 * in malloc and free of small blocks. Why this shape: jansson has one allocator for the
 * whole process, and a value may be freed on any thread, so the free function must know
 * from the pointer alone where a block came from. Heap blocks are at least 16 bytes
 * (malloc then returns them 16-aligned); arena blocks are handed out at addresses that are
 * 8 mod 16, which malloc never returns. The free of an arena block does nothing: the arena
 * is rewound as a whole by its owner.
 *
 * Under AddressSanitizer the arena is checked rather than fast: every block is a chunk of
 * its own, and every reset frees them all, so a document used after its run (the rule in
 * jarena.h) is a heap-use-after-free that ASan reports, and an overrun past a block's 16-byte
 * rounding hits a redzone.
 */
#include "jarena.h"

#include <stdint.h>
#include <stdlib.h>

#include <jansson.h>

#if defined(__SANITIZE_ADDRESS__)
#define FP_JARENA_CHECKED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FP_JARENA_CHECKED 1
#endif
#endif

#define CHUNK_SIZE (256u * 1024)   /* a run of 4,000 small mentions takes ~40 chunks */
#define BIG_BLOCK (CHUNK_SIZE / 8) /* larger blocks get a chunk of their own */
#ifdef FP_JARENA_CHECKED
#define OWN_CHUNK(need) 1          /* every block is a chunk of its own */
#define KEEP_BYTES 0u              /* and none outlives a reset */
#else
#define OWN_CHUNK(need) ((need) > BIG_BLOCK)
#define KEEP_BYTES (16u << 20)     /* chunks kept across a reset */
#endif

typedef struct chunk_s {
  struct chunk_s *next;
  size_t size; /* bytes of data[] */
  size_t off;  /* next free byte of data[]; data + off is 8 mod 16 */
  _Alignas(16) unsigned char data[];
} chunk_t;

struct fp_jarena_s {
  chunk_t *head, *cur; /* CHUNK_SIZE chunks in order; cur is the one being filled */
  chunk_t *big;        /* blocks over BIG_BLOCK, one chunk each, freed by every reset */
  size_t used;
};

static _Thread_local fp_jarena_t *tl_arena;

/* ---- the allocator pair ----------------------------------------------------------------- */

/* A chunk with @p size bytes of data; data is 16-aligned (malloc under a sanitizer may
 * align to 8 only, and the 8 mod 16 of arena blocks depends on it). */
static chunk_t *chunk_new(size_t size) {
  void *c;
  return posix_memalign(&c, 16, sizeof(chunk_t) + size) == 0 ? c : NULL;
}

static void *arena_alloc(fp_jarena_t *a, size_t n) {
  size_t need = (n + 15) & ~(size_t)15;
  chunk_t *c = a->cur;
  if (need < n || need > SIZE_MAX - sizeof(*c) - 8) return NULL;
  if (OWN_CHUNK(need)) {
    if (!(c = chunk_new(need + 8))) return NULL;
    c->size = c->off = need + 8;
    c->next = a->big;
    a->big = c;
    a->used += need;
    return c->data + 8;
  }
  while (c && c->off + need > c->size) { /* this one is full: the next kept one, rewound */
    c = c->next;
    if (c) c->off = 8;
  }
  if (!c) {
    chunk_t **at = a->cur ? &a->cur->next : &a->head;
    if (!(c = chunk_new(CHUNK_SIZE))) return NULL;
    c->size = CHUNK_SIZE;
    c->off = 8;
    c->next = NULL; /* the chunks after cur, if any, were all passed over above */
    *at = c;
  }
  a->cur = c;
  void *p = c->data + c->off;
  c->off += need;
  a->used += need;
  return p;
}

static void free_list(chunk_t *c) {
  for (chunk_t *n; c; c = n) {
    n = c->next;
    free(c);
  }
}

static void *j_malloc(size_t n) {
  fp_jarena_t *a = tl_arena;
  void *p;
  if (a) return arena_alloc(a, n);
  p = malloc(n < 16 ? 16 : n);
  if (p && ((uintptr_t)p & 15)) { /* not the malloc this was written for: align it */
    free(p);
    if (posix_memalign(&p, 16, n < 16 ? 16 : n) != 0) p = NULL;
  }
  return p;
}

static void j_free(void *p) {
  if (fp_jarena_owns(p)) return; /* freed by fp_jarena_reset */
  free(p);
}

int fp_jarena_owns(const void *p) { return ((uintptr_t)p & 15) == 8; }

__attribute__((constructor)) static void jarena_install(void) { json_set_alloc_funcs(j_malloc, j_free); }

/* ---- arenas ---------------------------------------------------------------------------- */

fp_jarena_t *fp_jarena_new(void) { return calloc(1, sizeof(fp_jarena_t)); }

void fp_jarena_destroy(fp_jarena_t *a) {
  if (!a) return;
  if (tl_arena == a) tl_arena = NULL;
  free_list(a->head);
  free_list(a->big);
  free(a);
}

fp_jarena_t *fp_jarena_enter(fp_jarena_t *a) {
  fp_jarena_t *prev = tl_arena;
  tl_arena = a;
  return prev;
}

void fp_jarena_leave(fp_jarena_t *prev) { tl_arena = prev; }

void fp_jarena_reset(fp_jarena_t *a) {
  size_t kept = 0;
  chunk_t **at = &a->head;
  while (*at && kept + CHUNK_SIZE <= KEEP_BYTES) { /* keep what a normal run needs */
    kept += CHUNK_SIZE;
    at = &(*at)->next;
  }
  free_list(*at);
  *at = NULL;
  free_list(a->big);
  a->big = NULL;
  a->cur = a->head;
  if (a->cur) a->cur->off = 8;
  a->used = 0;
}

size_t fp_jarena_used(const fp_jarena_t *a) { return a->used; }

size_t fp_jarena_held(const fp_jarena_t *a) {
  size_t n = 0;
  for (const chunk_t *c = a->head; c; c = c->next) n += c->size;
  for (const chunk_t *c = a->big; c; c = c->next) n += c->size;
  return n;
}

int fp_jarena_checked(void) {
#ifdef FP_JARENA_CHECKED
  return 1;
#else
  return 0;
#endif
}
