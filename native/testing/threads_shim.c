// Preloaded into llama.cpp's reference programs by the tests (LD_PRELOAD): sets the
// thread count of llama_context_default_params() from STILL_REFERENCE_THREADS, for
// programs that, like examples/simple, have no option for it. Their default (4 threads)
// oversubscribes a 2-core machine, where ggml's spinning barriers then cost ~0.4 s per
// token on a 3M-parameter model.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>

#include "llama.h"

struct llama_context_params llama_context_default_params(void) {
    typedef struct llama_context_params (*fn_t)(void);
    static fn_t real = NULL;
    if (real == NULL) real = (fn_t) dlsym(RTLD_NEXT, "llama_context_default_params");
    struct llama_context_params params = real();
    const char * threads = getenv("STILL_REFERENCE_THREADS");
    if (threads != NULL && atoi(threads) > 0) params.n_threads = params.n_threads_batch = atoi(threads);
    return params;
}
