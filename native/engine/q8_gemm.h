// A ggml backend of one kind of operation: matrix products of Q8_0 weights with batches
// of 8 or more activation columns, on CPUs with AVX-512 VNNI or AVX-VNNI (STILL_Q8_ISA,
// "avx512vnni" or "avxvnni", picks one; the widest by default). llama.cpp hands it those
// products by itself (an ACCEL device, as it does for BLAS); everything else stays on
// ggml's CPU backend.
//
// STILL_Q8_GEMM chooses which products it takes:
// - "output" (the default): the output layer's only (logits of decode steps of 8 or more
//   sequences, scoring). Nothing is computed from that product but logits, so they equal
//   ggml's to float rounding (about 1e-7 of their scale), and every hidden state is ggml's
//   bit for bit: greedy outputs, seeded samples and log-probs are llama.cpp's.
// - "all" (or "1"): every Q8_0 product (prefill, every layer). Products equal ggml's to
//   rounding, but the next layer's Q8_0 activations round some values the other way, so
//   logits move by about 1e-3 and greedy outputs need not match llama.cpp's.
// - "0" (or "off"): none.
#pragma once

#include <cstdint>
#include <string>

namespace still {

// Registers the backend with ggml unless STILL_Q8_GEMM is "0", where this CPU can run it.
// Call once, after the CPU backend is loaded and before any model context is made.
void q8_gemm_register();

// Whether the backend is registered.
bool q8_gemm_active();

// The products it takes: "off", "output" or "all".
std::string q8_gemm_mode();

// What q8_gemm_register() did, or why it was not called.
std::string q8_gemm_status();

// The kernel's instruction set: "AVX-512 VNNI", "AVX-VNNI", or "none" where it is off.
std::string q8_gemm_isa();

// Matrix products the backend has computed in this process.
uint64_t q8_gemm_products();

} // namespace still
