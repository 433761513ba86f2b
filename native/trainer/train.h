// The training loop (SFT and DPO), the gradient check and the logits dump: the callable
// work behind each still-train command. main() only parses arguments into these configs.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "engine.h"
#include "policy.h"

namespace st {

// Every field with its default; the command line names are in main.cpp.
struct TrainConfig {
    Task task = Task::SFT;
    std::string data;             // pre-tokenized data file (see data.h)
    std::string out;              // adapter GGUF, or the full model in full mode
    std::string checkpoint;       // checkpoint GGUF (default: <out>.ckpt.gguf)
    bool resume = false;          // continue from the checkpoint when it exists

    // schedule
    int64_t epochs = 1;
    int64_t ctx = 1024;           // longest packed row, in tokens
    int64_t grad_accum = 1;       // rows per optimizer step
    int64_t max_steps = 0;        // stop the run after this many steps (0: all epochs)
    uint64_t seed = 0;            // data order (and LoRA init)

    // AdamW, warmup then cosine decay to min_lr
    float lr = 1e-4f;
    float min_lr = 0.0f;
    bool constant_lr = false;     // no cosine decay after the warmup
    int64_t warmup_steps = -1;    // -1: warmup_ratio of the steps
    float warmup_ratio = 0.0f;
    float weight_decay = 0.0f;
    float beta1 = 0.9f;
    float beta2 = 0.999f;
    float eps = 1e-8f;
    float max_grad_norm = 1.0f;   // clip the global gradient norm (0: off)

    // output
    int64_t save_every = 0;       // checkpoint every N steps (0: only when stopped and at the end)
    int64_t log_every = 1;        // progress line every N steps

    // memory
    Recompute recompute = Recompute::AUTO; // chunked steps with recomputation: when the one-graph step does not fit
    size_t memory_budget = 0;     // bytes a step may use (0: the free memory of the machine or GPU)
    bool plan_only = false;       // print the memory plan and stop

    // DPO
    DpoConfig dpo;
    std::string ref_logps;        // cache of the reference log-probs (default: <checkpoint>.ref)
};

// Exit codes of the commands.
enum { EXIT_OK = 0, EXIT_ERROR = 1, EXIT_STOPPED = 130 };

// false, with an error line, when rows of `ctx` tokens are longer than the model's context.
bool context_fits(const Engine & e, int64_t ctx);

// Chooses how steps over rows of up to `tokens` tokens are taken (one graph or chunked, per
// `mode` and the memory plan), prints the plan (one "plan" line) and returns false, with one
// error line naming the longest rows that fit, when the chosen way does not fit.
// `per_row`: policy rows (every completion token scored on its own).
bool plan_memory(Engine & e, int64_t tokens, Recompute mode, size_t budget, bool per_row = false);

// Trains per `tc`; `stop` (set by SIGINT/SIGTERM) makes it checkpoint and return EXIT_STOPPED.
int run_train(const EngineOptions & eo, const TrainConfig & tc, const std::atomic<bool> & stop);

// --- policy samples (online RL) -------------------------------------------------------------

// Per dataset item, one value per completion token (empty for items not computed).
using TokenValues = std::vector<std::vector<float>>;

// What a policy pass compares against.
struct PolicyPass {
    const PolicyConfig * config = nullptr;
    const std::vector<double> * advantages = nullptr; // per dataset item
    const TokenValues * old = nullptr;  // the old policy's log-probs (null: the current policy's, ratio 1)
    const TokenValues * ref = nullptr;  // the reference policy's (with β > 0)
    bool entropy = false;               // also sum the entropy of every completion token
};

// Forward passes over `items` (packed in order into rows of up to `ctx` tokens): every
// completion token's log-prob, and its entropy when asked.
// `temperature` divides the logits (the policy's sampling temperature, PolicyConfig::temperature).
bool policy_logps(Engine & e, const Dataset & d, const std::vector<int64_t> & items, int64_t ctx, double temperature, TokenValues & lp,
                  TokenValues * entropy);

// The loss of one optimizer step over `items` at the current parameters (forward only).
bool policy_objective(Engine & e, const Dataset & d, const std::vector<int64_t> & items, int64_t ctx, const PolicyPass & p, double & loss);

// The gradient of that loss, accumulated into the engine's gradients; the loss, the
// metrics' sums and the entropy's sum at the current parameters.
bool policy_gradient(Engine & e, const Dataset & d, const std::vector<int64_t> & items, int64_t ctx, const PolicyPass & p,
                     PolicyStats & stats, double & entropy_sum, double & loss);

// The resident trainer for online RL: loads the model once, then takes commands on stdin
// (one JSON object per line) and answers each with one JSON line on stdout; see serve.cpp.
// Uses tc's schedule-free fields (ctx, checkpoint, resume, AdamW's betas, ε, weight decay,
// gradient clipping, memory) and `pc` for the loss.
int run_serve(const EngineOptions & eo, const TrainConfig & tc, const PolicyConfig & pc, const std::atomic<bool> & stop);

// Evaluates the policy loss of numbers given as JSON (one object on stdin: the loss's
// options and samples with their rewards, groups and per-token log-probs) and prints the
// advantages, the loss and every coefficient: the loss function alone, for checks by hand.
int run_policy_loss(const PolicyConfig & pc);

struct GradCheckConfig {
    std::string data;
    int64_t ctx = 1024;
    int64_t entries = 4;          // entries per tensor, those with the largest gradients
    double step = 1e-3;           // finite-difference step: the relative change of the loss it aims for
    DpoConfig dpo;
    Recompute recompute = Recompute::OFF;
    std::string dump_grads;       // write every gradient (F32, in trainable order) to this file
    double ref_shift = 0.5;       // DPO: reference log-probs moved off the policy's, so d ≠ 0;
                                  // policy: old and reference log-probs moved off by up to this, so ratios leave their band
    PolicyConfig policy;
    bool finite_differences = true; // false: report the loss and gradient norms only
};

// Compares ggml's gradients of every trainable tensor with central finite differences of
// the loss over the whole data file as one step. Prints one line per entry and a summary.
int run_grad_check(const EngineOptions & eo, const GradCheckConfig & gc);

// Writes the logits of `tokens` (rows of n_vocab F32) to `out`.
int run_logits(const EngineOptions & eo, const std::vector<int32_t> & tokens, const std::string & out);

// q8-bench (q8_bench.cpp): still's Q8_0 kernel against ggml's product, per shape (rows, k)
// and column count; JSON lines.
int run_q8_bench(const EngineOptions & eo, const std::vector<std::pair<int64_t, int64_t>> & shapes, const std::vector<int64_t> & columns, int repeats);

} // namespace st
