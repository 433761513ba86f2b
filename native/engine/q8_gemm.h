// A ggml backend of one kind of operation: matrix products of Q8_0 weights with batches
// of 8 or more activation columns (rollout decode steps, prompt prefill, scoring), on CPUs
// with AVX-512 VNNI. llama.cpp hands it those products by itself (an ACCEL device, as it
// does for BLAS); everything else stays on ggml's CPU backend.
//
// Opt-in (STILL_Q8_GEMM=1): its products equal ggml's to float rounding (about 1e-7
// relative), not bit for bit, and the next layer's Q8_0 activations round some values the
// other way, so logits move by about 1e-3 and greedy outputs need not match llama.cpp's.
#pragma once

#include <cstdint>
#include <string>

namespace still {

// Registers the backend with ggml when STILL_Q8_GEMM is "1" and this CPU can run it.
// Call once, after the CPU backend is loaded and before any model context is made.
void q8_gemm_register();

// Whether the backend is registered.
bool q8_gemm_active();

// What q8_gemm_register() did, or why it was not called.
std::string q8_gemm_status();

// Matrix products the backend has computed in this process.
uint64_t q8_gemm_products();

} // namespace still
