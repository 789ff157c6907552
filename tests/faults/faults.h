/*
 * faults.h: what the fault suite's files share (tests/faults/README.md says how to run it).
 *
 * One row of the table is one fault: how the stream is produced around it (fx_row_t), what
 * injects it, keeps it up and clears it (callbacks on an fx_ctx_t), and the same oracle for
 * every row (faults.c): every valid mention counted once in core.count (the generator's
 * model), every window hash and every incident event equal to a clean reference run's
 * (only byte-identical duplicates allowed), every malformed message dead-lettered, the
 * group's committed offsets at the end of every partition, and how long that took after the
 * fault cleared (at most FX_RECOVERY_MS).
 *
 * faults.c owns the row table, the scenario loop and the oracle; inject.c the injectors
 * (engine, Redis, Kafka, the mock cluster host); hostile.c the malformed and hostile inputs.
 * Everything runs on the test's main thread (testlib is not thread-safe).
 */
#ifndef FP_FAULTS_H
#define FP_FAULTS_H

#include <stdint.h>
#include <sys/types.h>

#include "enginelib.h"

/** The criterion: committed = end within this long after the fault clears. */
#define FX_RECOVERY_MS 30000

#define FX_NPARTS 4
#define FX_NBRANDS 32
#define FX_T0 ((int64_t)1795600800000LL) /* 2026-11-25T10:00:00Z */
#define FX_STEP_MS 400                   /* event time per mention: 10k mentions = 67 min */
/* no ALARM in the last 5,000 mentions (33 min of event time): every incident is due, and
 * resolved, well before the input ends, whatever the timing of the engine's sweeps */
#define FX_QUIET_TAIL 5000

typedef struct fx_ctx_s fx_ctx_t;

/** What a row exercises, which decides the input and the rules. */
typedef enum {
  FX_STREAM = 0, /**< good mentions (and a few malformed ones) while a fault is injected */
  FX_INPUT,      /**< hostile messages among good ones (hostile.c), no other fault */
  FX_RULES       /**< a runaway rule next to the counting rules, no other fault */
} fx_kind_t;

/** One row of the table. Volumes are for the full run; --ci uses the ci_* ones. */
typedef struct fx_row_s {
  const char *id;   /**< "K1", "E1", ... (the --only name) */
  const char *what; /**< the fault, for the table */
  fx_kind_t kind;
  int mock;          /**< Kafka is the mock cluster (mockhost) instead of the real broker */
  int ci;            /**< in the --ci subset */
  int n, ci_n;       /**< valid mentions */
  int nchunks;       /**< produced in this many chunks */
  int pace_ms;       /**< between chunks, while the fault has not cleared */
  int fault_chunk;   /**< the fault starts once this many chunks are produced */
  int hold_ms;       /**< the fault is cleared this long after it started (or when tick says) */
  int produce_during; /**< keep producing while the fault holds (else: after it clears) */
  int may_exit;      /**< the engine may exit while the fault holds (documented: exit 1 on a
                          fatal Redis error); the suite restarts it like a supervisor would */
  int no_dups;       /**< duplicates must be 0 (graceful stops) */
  int param, ci_param; /**< row-specific (kills for E1, the hostile kind, the bad rule) */
  void (*setup)(fx_ctx_t *);  /**< before the engine starts (mock topology); may be NULL */
  void (*inject)(fx_ctx_t *); /**< starts the fault; may be NULL */
  int (*tick)(fx_ctx_t *);    /**< every loop turn while the fault holds; non-zero: clear now */
  void (*clear)(fx_ctx_t *);  /**< ends the fault; may be NULL */
  const char *const *extra;   /**< more engine settings (NULL-terminated), or NULL */
  void (*check)(fx_ctx_t *);  /**< after recovery, the engine still running: the row's own
                                   checks (that the fault reached the path it is for); may be NULL */
} fx_row_t;

/** The state of the row being run. */
struct fx_ctx_s {
  const fx_row_t *row;
  int ci;               /**< --ci volumes */
  int n;                /**< valid mentions of this run (row->n or row->ci_n) */
  int nchunks;          /**< chunks of this run (--ci: fewer chunks of the same size) */
  int param;            /**< row->param or row->ci_param */
  fpe_env_t env;        /**< the faulted run */
  fpe_env_t ref;        /**< the clean reference run (same input topic) */
  const char *settings[48]; /**< engine settings (NULL-terminated) */
  char rules_dir[512];   /**< rules of this row (assembled under logdir) */
  char logdir[400];     /**< engine logs of this row */
  fpt_proc_t *engine;   /**< the engine of the faulted run (NULL while down) */
  int starts;           /**< engine processes started */
  int kills;            /**< SIGKILLs sent by the row */
  int stops;            /**< graceful stops by the row */
  int exits;            /**< exits the row did not cause (supervised restarts) */
  int64_t replayed;     /**< E1: offsets applied in Redis beyond the commit at the kills */
  int64_t restart_at;   /**< supervisor: restart the engine at this time (0: none due) */
  fpe_gen_count_t sent; /**< what was produced (model) */
  int64_t t_inject, t_clear, next_tick;
  unsigned rng;         /**< row randomness (seed printed) */
  /* mock cluster host */
  pid_t mock_pid;
  int mock_in, mock_out; /**< pipes to its stdin and from its stdout */
  char mock_bootstrap[512];
  char mock_envfile[1024];
  void *aux;            /**< row-specific (a pending Redis connection) */
  char note[512];       /**< free text for the table's last column */
};

/* faults.c */
/** Appends to ctx->note ("; "-separated). */
void fx_note(fx_ctx_t *ctx, const char *fmt, ...) FPT_PRINTF(2, 3);
/** Starts a new engine process for ctx->env (its log under logdir). @returns 0 or -1. */
int fx_engine_start(fx_ctx_t *ctx);
/** A pseudo-random number in [lo, hi]. */
int fx_rand(fx_ctx_t *ctx, int lo, int hi);

/* inject.c: the row callbacks */
void fx_e1_inject(fx_ctx_t *ctx);
int fx_e1_tick(fx_ctx_t *ctx);
void fx_e2_inject(fx_ctx_t *ctx);
int fx_e2_tick(fx_ctx_t *ctx);
void fx_k12_inject(fx_ctx_t *ctx);
void fx_k12_clear(fx_ctx_t *ctx);
void fx_r1_inject(fx_ctx_t *ctx);
void fx_r1_clear(fx_ctx_t *ctx);
void fx_r2_inject(fx_ctx_t *ctx);
void fx_r2hot_inject(fx_ctx_t *ctx);
void fx_r3_inject(fx_ctx_t *ctx);
void fx_r3_clear(fx_ctx_t *ctx);
int fx_r4_tick(fx_ctx_t *ctx);
void fx_r4_clear(fx_ctx_t *ctx);
int fx_r5_tick(fx_ctx_t *ctx);
void fx_r6_inject(fx_ctx_t *ctx);
void fx_r6_clear(fx_ctx_t *ctx);
void fx_r7_inject(fx_ctx_t *ctx);
void fx_r7_clear(fx_ctx_t *ctx);
void fx_k1_inject(fx_ctx_t *ctx);
void fx_k1_clear(fx_ctx_t *ctx);
void fx_k2_inject(fx_ctx_t *ctx);
void fx_k2_clear(fx_ctx_t *ctx);
int fx_k3_tick(fx_ctx_t *ctx);
void fx_k3_clear(fx_ctx_t *ctx);
int fx_k4_tick(fx_ctx_t *ctx);
void fx_k4_clear(fx_ctx_t *ctx);
int fx_k5_tick(fx_ctx_t *ctx);
void fx_k5_clear(fx_ctx_t *ctx);
int fx_k6_tick(fx_ctx_t *ctx);
void fx_k6_clear(fx_ctx_t *ctx);
void fx_k7_setup(fx_ctx_t *ctx);
void fx_k7_inject(fx_ctx_t *ctx);
void fx_k7_clear(fx_ctx_t *ctx);
int fx_k8_tick(fx_ctx_t *ctx);
void fx_k8_clear(fx_ctx_t *ctx);
void fx_k9_setup(fx_ctx_t *ctx);
int fx_k9_tick(fx_ctx_t *ctx);

/* inject.c: the mock cluster host */
/** Starts faults_mockhost, reads its bootstrap servers. @returns 0 or -1 (recorded). */
int fx_mock_start(fx_ctx_t *ctx);
/** Sends one command line; @returns 0 if it answered "ok" (else recorded). */
int fx_mock_cmd(fx_ctx_t *ctx, const char *fmt, ...) FPT_PRINTF(2, 3);
/** Ends the mock host (quit, then SIGKILL if it lingers). */
void fx_mock_stop(fx_ctx_t *ctx);

/* hostile.c */
/** Number of hostile kinds (I1..I10). */
#define FX_HOSTILE_KINDS 10
/**
 * Produces the hostile messages of kind @p kind (1..10) for position @p at of the stream
 * (keys of brands, values malformed or hostile) and adds them to ctx->sent: .bad for every
 * message that must be dead-lettered, .valid for those the engine must count (I9's
 * out-of-order but in-time mention, I10's upstream duplicate). @returns 0 or -1.
 */
int fx_hostile_produce(fx_ctx_t *ctx, int kind, int at);
/** The input topic's max.message.bytes a kind needs (I5: 4 MiB), NULL for the broker's default. */
const char *fx_hostile_topic_config(int kind);

#endif /* FP_FAULTS_H */
