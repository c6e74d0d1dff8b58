#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#include "threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

/* How long a worker waiting for the next task, and a caller waiting for its workers, poll
 * before they sleep on their condition variable. A wake-up through the kernel costs 20 to 50
 * microseconds in a virtual machine (the sleeping vCPU is halted and must be sent an
 * interrupt), two of them per run: a dynamic layer at batch 1 runs the pool three or four
 * times, and a network runs it for every layer. Polling for a short while lets back-to-back
 * runs find the other side awake; past the window both sleep, so an idle pool costs nothing. */
#define DC_POOL_SPIN_NS 200000L

struct dc_pool {
    size_t size;                /* pool size, caller included */
    pthread_t *workers;         /* size - 1 */
    size_t started;             /* workers actually running */
    pthread_mutex_t run_lock;   /* held by the caller of a run for its whole duration */
    pthread_mutex_t lock;       /* guards everything below */
    pthread_cond_t wake, done;
    /* Written under `lock`; atomic so that the polling in spin_until reads them without it. */
    atomic_ulong generation;    /* bumped for every task, so a worker runs each task once */
    size_t team;                /* members of the current task, caller included */
    atomic_size_t pending;      /* workers still running the current task */
    atomic_bool quit;
    dc_pool_task fn;
    void *ctx;
};

static long elapsed_ns(const struct timespec *t0) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long)(t.tv_sec - t0->tv_sec) * 1000000000L + (t.tv_nsec - t0->tv_nsec);
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Polls, without the lock, until the pool's generation differs from `seen` or quit is set
 * (worker: seen = the last task it ran) or, with seen == NULL, until no worker is pending
 * (caller), for at most DC_POOL_SPIN_NS. Only a hint: the callers check again under the
 * lock before they sleep. */
static void spin_until(dc_pool *pool, const unsigned long *seen) {
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (unsigned i = 1;; ++i) {
        if (seen != NULL ? atomic_load(&pool->generation) != *seen || atomic_load(&pool->quit)
                         : atomic_load(&pool->pending) == 0) {
            return;
        }
        cpu_relax();
        if (i % 64 == 0 && elapsed_ns(&t0) > DC_POOL_SPIN_NS) {
            return;
        }
    }
}

typedef struct worker_arg {
    dc_pool *pool;
    size_t index;
} worker_arg;

static void *worker_main(void *p) {
    /* dc_pool_create allocated the argument for this worker alone. */
    worker_arg *arg = p;
    dc_pool *pool = arg->pool;
    const size_t index = arg->index;
    free(arg);
    unsigned long seen = 0;
    pthread_mutex_lock(&pool->lock);
    for (;;) {
        if (!pool->quit && pool->generation == seen) {
            pthread_mutex_unlock(&pool->lock);
            spin_until(pool, &seen);
            pthread_mutex_lock(&pool->lock);
        }
        while (!pool->quit && pool->generation == seen) {
            pthread_cond_wait(&pool->wake, &pool->lock);
        }
        if (pool->quit) {
            break;
        }
        seen = pool->generation;
        if (index >= pool->team) {
            continue; /* not a member of this task */
        }
        const dc_pool_task fn = pool->fn;
        void *ctx = pool->ctx;
        const size_t team = pool->team;
        pthread_mutex_unlock(&pool->lock);
        fn(ctx, index, team);
        pthread_mutex_lock(&pool->lock);
        if (--pool->pending == 0) {
            pthread_cond_signal(&pool->done);
        }
    }
    pthread_mutex_unlock(&pool->lock);
    return NULL;
}

dc_pool *dc_pool_create(size_t threads) {
    if (threads == 0) {
        return NULL;
    }
    dc_pool *pool = calloc(1, sizeof *pool);
    if (pool == NULL) {
        return NULL;
    }
    pool->size = threads;
    atomic_init(&pool->generation, 0);
    atomic_init(&pool->pending, 0);
    atomic_init(&pool->quit, false);
    if (threads == 1) {
        return pool;
    }
    pool->workers = calloc(threads - 1, sizeof *pool->workers);
    if (pool->workers == NULL || pthread_mutex_init(&pool->run_lock, NULL) != 0) {
        free(pool->workers);
        free(pool);
        return NULL;
    }
    if (pthread_mutex_init(&pool->lock, NULL) != 0) {
        pthread_mutex_destroy(&pool->run_lock);
        free(pool->workers);
        free(pool);
        return NULL;
    }
    if (pthread_cond_init(&pool->wake, NULL) != 0) {
        pthread_mutex_destroy(&pool->lock);
        pthread_mutex_destroy(&pool->run_lock);
        free(pool->workers);
        free(pool);
        return NULL;
    }
    if (pthread_cond_init(&pool->done, NULL) != 0) {
        pthread_cond_destroy(&pool->wake);
        pthread_mutex_destroy(&pool->lock);
        pthread_mutex_destroy(&pool->run_lock);
        free(pool->workers);
        free(pool);
        return NULL;
    }
    for (size_t i = 0; i + 1 < threads; ++i) {
        worker_arg *arg = malloc(sizeof *arg);
        if (arg == NULL) {
            break;
        }
        arg->pool = pool;
        arg->index = i + 1;
        if (pthread_create(&pool->workers[i], NULL, worker_main, arg) != 0) {
            free(arg);
            break;
        }
        pool->started++;
    }
    if (pool->started + 1 != threads) {
        dc_pool_destroy(pool);
        return NULL;
    }
    return pool;
}

void dc_pool_destroy(dc_pool *pool) {
    if (pool == NULL) {
        return;
    }
    if (pool->size > 1) {
        pthread_mutex_lock(&pool->lock);
        pool->quit = true;
        pthread_cond_broadcast(&pool->wake);
        pthread_mutex_unlock(&pool->lock);
        for (size_t i = 0; i < pool->started; ++i) {
            pthread_join(pool->workers[i], NULL);
        }
        pthread_cond_destroy(&pool->done);
        pthread_cond_destroy(&pool->wake);
        pthread_mutex_destroy(&pool->lock);
        pthread_mutex_destroy(&pool->run_lock);
    }
    free(pool->workers);
    free(pool);
}

size_t dc_pool_size(const dc_pool *pool) { return pool->size; }

void dc_pool_run(dc_pool *pool, size_t team, dc_pool_task fn, void *ctx) {
    if (team <= 1 || pool->size == 1) {
        /* The caller alone: no worker is involved, so no other run is waited for. */
        fn(ctx, 0, 1);
        return;
    }
    if (team > pool->size) {
        team = pool->size;
    }
    /* One task at a time: a second caller waits here until the workers are free, so two
     * handles sharing the pool never run more threads than the pool has. */
    pthread_mutex_lock(&pool->run_lock);
    pthread_mutex_lock(&pool->lock);
    pool->fn = fn;
    pool->ctx = ctx;
    pool->team = team;
    pool->pending = team - 1;
    pool->generation++;
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->lock);

    fn(ctx, 0, team);

    spin_until(pool, NULL);
    pthread_mutex_lock(&pool->lock);
    while (pool->pending > 0) {
        pthread_cond_wait(&pool->done, &pool->lock);
    }
    pthread_mutex_unlock(&pool->lock);
    pthread_mutex_unlock(&pool->run_lock);
}

size_t dc_available_cpus(void) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        const int n = CPU_COUNT(&set);
        if (n > 0) {
            return (size_t)n;
        }
    }
    const long online = sysconf(_SC_NPROCESSORS_ONLN);
    return online > 0 ? (size_t)online : 1;
}
