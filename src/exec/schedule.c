/* Scheduling shared by the forward and the backward: how many threads a pass uses and how
 * work is cut between them. */
#include "plan.h"

/* Below this much work per pass (multiply-adds of the convolution plus a weight for every
 * float read or written), waking a worker costs more than it saves, and on a busy machine it may
 * wait for a core for milliseconds: such passes run in the calling thread alone. */
#define DC_MIN_PARALLEL_WORK 1e6

/* Threads a pass over the current shape really uses: the handle's count, or 1 for small work.
 * Depends on the shape, never on timing, so a given shape always splits the same way. */
size_t dc_exec_team(const dc_layer *l, size_t batch, size_t threads) {
    const dc_conv_shape *s = &l->shape;
    const double n = (double)batch;
    const double macs = n * (double)s->out_channels * (double)(s->in_channels / s->groups) *
                        (double)(s->kernel_h * s->kernel_w) * (double)(s->out_h * s->out_w);
    const double floats = n * ((double)s->in_channels * (double)(s->height * s->width) +
                               (double)s->out_channels * (double)(s->out_h * s->out_w));
    return macs + 8.0 * floats < DC_MIN_PARALLEL_WORK ? 1 : threads;
}

/* Runs a task on the first `team` threads of the pool, or on the calling thread alone (which
 * then never waits for another handle's use of the pool). */
void dc_exec_run(dc_pool *pool, size_t team, dc_pool_task fn, void *ctx) {
    if (team == 1) {
        fn(ctx, 0, 1);
    } else {
        dc_pool_run(pool, team, fn, ctx);
    }
}

/* [begin, end) of `total` items for member `index` of a team of `count`: contiguous, sizes
 * differing by at most one. */
void dc_exec_share(size_t total, size_t index, size_t count, size_t *begin, size_t *end) {
    *begin = total / count * index + (index < total % count ? index : total % count);
    *end = *begin + total / count + (index < total % count ? 1 : 0);
}

