// The bridge from the C benchmark interface (shim.h) to Google Benchmark's C++ API.
#include "shim.h"

#include <benchmark/benchmark.h>

#include <atomic>
#include <string>

struct dcb_state {
    benchmark::State *state;
};

namespace {

// Benchmarks that called dcb_skip_with_error, so that a smoke run can fail loudly. Atomic in
// case a benchmark is ever registered with several Google Benchmark threads.
std::atomic<int> error_count{0};

benchmark::TimeUnit to_unit(dcb_time_unit unit) {
    switch (unit) {
    case DCB_US:
        return benchmark::kMicrosecond;
    case DCB_MS:
        return benchmark::kMillisecond;
    case DCB_S:
        return benchmark::kSecond;
    case DCB_NS:
    default:
        return benchmark::kNanosecond;
    }
}

}  // namespace

extern "C" {

void dcb_initialize(int *argc, char **argv) { benchmark::Initialize(argc, argv); }

void dcb_add_context(const char *key, const char *value) {
    benchmark::AddCustomContext(key, value != nullptr ? value : "");
}

int dcb_register(const char *name, dcb_function fn, void *arg, const dcb_options *options) {
    if (name == nullptr || fn == nullptr) {
        return -1;
    }
    // C++ exceptions must not cross into C callers.
    try {
        benchmark::internal::Benchmark *b =
            benchmark::RegisterBenchmark(name, [fn, arg](benchmark::State &st) {
                dcb_state s{&st};
                fn(&s, arg);
            });
        if (b == nullptr) {
            return -1;
        }
        if (options != nullptr) {
            if (options->real_time) {
                b->UseRealTime();
            }
            b->Unit(to_unit(options->unit));
            if (options->min_time > 0.0) {
                b->MinTime(options->min_time);
            }
            if (options->iterations > 0) {
                b->Iterations(options->iterations);
            }
            if (options->process_cpu_time) {
                b->MeasureProcessCPUTime();
            }
        }
    } catch (...) {
        return -1;
    }
    return 0;
}

int dcb_run(void) {
    try {
        benchmark::RunSpecifiedBenchmarks();
        benchmark::Shutdown();
    } catch (...) {
        return -1;
    }
    return error_count.load();
}

int dcb_keep_running(dcb_state *state) { return state->state->KeepRunning() ? 1 : 0; }

void dcb_pause_timing(dcb_state *state) { state->state->PauseTiming(); }

void dcb_resume_timing(dcb_state *state) { state->state->ResumeTiming(); }

void dcb_counter(dcb_state *state, const char *name, double value, int flags) {
    benchmark::Counter::Flags f = benchmark::Counter::kDefaults;
    if (flags == DCB_RATE) {
        f = benchmark::Counter::kIsRate;
    } else if (flags == DCB_RATE_PER_ITERATION) {
        f = benchmark::Counter::kIsIterationInvariantRate;
    }
    state->state->counters[name] = benchmark::Counter(value, f);
}

void dcb_set_label(dcb_state *state, const char *label) { state->state->SetLabel(label); }

void dcb_skip_with_error(dcb_state *state, const char *message) {
    error_count.fetch_add(1);
    state->state->SkipWithError(message);
}

int64_t dcb_iterations(const dcb_state *state) {
    return static_cast<int64_t>(state->state->iterations());
}

}  // extern "C"
