/* The order of a network's nodes: Kahn's algorithm over their edges, and the name of one
 * cycle when there is no order (docs/file-format.md, "Order"). */
#include "net.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Names one cycle among the `stuck` nodes (those Kahn's algorithm never made ready): walking
 * back along inputs that are stuck too must come round to a node already seen. */
static dynconv_status report_cycle(const char *fn, const char *source, const net_node *nodes,
                                   size_t count, const size_t *waiting) {
    size_t *seen = malloc(count * sizeof *seen), *path = malloc((count + 1) * sizeof *path);
    if (seen == NULL || path == NULL) {
        free(seen);
        free(path);
        return BAD("the graph has a cycle");
    }
    for (size_t i = 0; i < count; ++i) {
        seen[i] = SIZE_MAX;
    }
    size_t at = 0, len = 0;
    while (waiting[at] == 0) {
        ++at;
    }
    while (seen[at] == SIZE_MAX) {
        seen[at] = len;
        path[len++] = at;
        const net_node *n = &nodes[at];
        for (size_t j = 0; j < n->num_inputs; ++j) {
            if (n->inputs[j] > 0 && waiting[n->inputs[j] - 1] > 0) {
                at = n->inputs[j] - 1;
                break;
            }
        }
    }
    char text[400];
    size_t used = 0;
    const size_t first = seen[at];
    path[len++] = at;
    for (size_t i = first; i < len && used < sizeof text; ++i) {
        if (i - first == 9 && len - first > 10) {
            used += (size_t)snprintf(text + used, sizeof text - used, " <- ...");
            i = len - 1;
        }
        used += (size_t)snprintf(text + used, sizeof text - used, "%s'%.60s'",
                                 i == first ? "" : " <- ", nodes[path[i]].name);
    }
    free(seen);
    free(path);
    return BAD("the graph has a cycle: %s (each node reads the next)", text);
}

/* Kahn's algorithm over file indices: the execution order, or the cycle. */
dynconv_status net_order_nodes(const char *fn, const char *source, net_node *nodes,
                                  size_t count, size_t *order) {
    /* Readers of each node in CSR form; an input listed twice by one node counts once. */
    size_t *waiting = calloc(count, sizeof *waiting), *start = calloc(count + 1, sizeof *start);
    size_t edges = 0;
    for (size_t i = 0; i < count; ++i) {
        edges += nodes[i].num_inputs;
    }
    size_t *readers = malloc((edges ? edges : 1) * sizeof *readers);
    dynconv_status st = DYNCONV_OK;
    if (waiting == NULL || start == NULL || readers == NULL) {
        st = dc_fail(DYNCONV_ERROR_OUT_OF_MEMORY, "%s: out of memory", fn);
        goto done;
    }
    for (int pass = 0; pass < 2; ++pass) {
        for (size_t i = 0; i < count; ++i) {
            const net_node *n = &nodes[i];
            for (size_t j = 0; j < n->num_inputs; ++j) {
                bool repeat = n->inputs[j] == 0;
                for (size_t q = 0; !repeat && q < j; ++q) {
                    repeat = n->inputs[q] == n->inputs[j];
                }
                if (repeat) {
                    continue;
                }
                const size_t from = n->inputs[j] - 1;
                if (pass == 0) {
                    ++start[from + 1];
                    ++waiting[i];
                } else {
                    readers[start[from] + waiting[from]++] = i;
                }
            }
        }
        if (pass == 0) {
            for (size_t i = 0; i < count; ++i) {
                start[i + 1] += start[i];
            }
            /* waiting is reused as the fill count of the second pass; keep the in-degrees. */
            for (size_t i = 0; i < count; ++i) {
                order[i] = waiting[i];
                waiting[i] = 0;
            }
        }
    }
    for (size_t i = 0; i < count; ++i) {
        waiting[i] = order[i];
    }
    size_t head = 0, tail = 0;
    for (size_t i = 0; i < count; ++i) {
        if (waiting[i] == 0) {
            order[tail++] = i;
        }
    }
    while (head < tail) {
        const size_t v = order[head++];
        for (size_t r = start[v]; r < start[v + 1]; ++r) {
            if (--waiting[readers[r]] == 0) {
                order[tail++] = readers[r];
            }
        }
    }
    if (tail != count) {
        st = report_cycle(fn, source, nodes, count, waiting);
    }
done:
    free(waiting);
    free(start);
    free(readers);
    return st;
}

