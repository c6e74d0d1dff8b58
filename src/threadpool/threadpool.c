#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#include "threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

struct dc_pool {
    size_t size;                /* pool size, caller included */
    pthread_t *workers;         /* size - 1 */
    size_t started;             /* workers actually running */
    pthread_mutex_t run_lock;   /* held by the caller of a run for its whole duration */
    pthread_mutex_t lock;       /* guards everything below */
    pthread_cond_t wake, done;
    unsigned long generation;   /* bumped for every task, so a worker runs each task once */
    size_t team;                /* members of the current task, caller included */
    size_t pending;             /* workers still running the current task */
    bool quit;
    dc_pool_task fn;
    void *ctx;
};

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
