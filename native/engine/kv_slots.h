// Sharing a prompt's KV cells between the sequences (slots) of one context.
#pragma once

#include <cstddef>

#include "llama.h"

namespace still {

// Slot `seq` keeps its first `n` positions and drops whatever followed.
inline void keep_prefix(llama_memory_t mem, llama_seq_id seq, size_t n) {
    llama_memory_seq_rm(mem, seq, static_cast<llama_pos>(n), -1);
}

// Gives slot `dst` the first `n` positions of slot `src`: in a unified cache by sharing
// the cells (metadata only); with per-sequence caches by copying the whole buffer (done
// by llama.cpp at the next decode) and dropping what lies past `n`.
inline void copy_prefix(llama_memory_t mem, bool unified, llama_seq_id src, llama_seq_id dst, size_t n) {
    llama_memory_seq_rm(mem, dst, -1, -1);
    if (unified) {
        llama_memory_seq_cp(mem, src, dst, 0, static_cast<llama_pos>(n));
    } else {
        llama_memory_seq_cp(mem, src, dst, -1, -1);
        keep_prefix(mem, dst, n);
    }
}

} // namespace still
