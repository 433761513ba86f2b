// Training data: the pre-tokenized file the TypeScript side writes, and the plan that
// packs it into rows and steps.
//
// File layout (little-endian):
//   header, 32 bytes:
//     char[8] magic "STILLTRN"; u32 version = 1; u32 kind (1 = sft, 2 = dpo, 3 = policy);
//     u32 n_vocab (every token id must be below it); u32 reserved = 0; u64 n_records
//   sft record:
//     u32 n; i32 tokens[n]; f32 weights[n]
//       weights[j] weighs the loss of predicting tokens[j] from tokens[0..j-1]; weights[0] = 0
//   dpo record:
//     u32 n_prompt, n_chosen, n_rejected;
//     i32 prompt[n_prompt];
//     i32 chosen[n_chosen]; f32 chosen_weights[n_chosen]; f32 chosen_sft_weights[n_chosen];
//     i32 rejected[n_rejected]; f32 rejected_weights[n_rejected]
//       the *_weights select the tokens whose log-probabilities enter the DPO term (the
//       whole response or only the thought); chosen_sft_weights those of the SFT term.
//   policy record (online RL: one sampled completion of a prompt):
//     u32 n_prompt (>= 1), n_completion (>= 1); i32 tokens[n_prompt + n_completion];
//     f32 reward; u32 group (samples of one prompt share it);
//     f32 sampler_logprobs[n_completion] (the sampler's log p of each completion token; NaN: unknown)
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace st {

enum class Task { SFT = 1, DPO = 2, POLICY = 3 };
const char * task_name(Task t);

// One sequence as the model sees it: tokens and per-token loss weights.
struct Sequence {
    std::vector<int32_t> tokens;
    std::vector<float> weights;     // loss weight of predicting tokens[j]
    std::vector<float> sft_weights; // DPO chosen only: weights of the SFT term
};

// One training item: an SFT example (one sequence), a DPO pair (chosen, rejected), or a
// policy sample (prompt + completion, every completion token weighted 1).
struct Item {
    Sequence a; // example, prompt + chosen, or prompt + completion
    Sequence b; // prompt + rejected (DPO)
    // policy samples
    int64_t n_prompt = 0;
    float reward = 0;
    uint32_t group = 0;
    std::vector<float> sampler_logps; // per completion token
    std::vector<float> weights; // SFT: its distinct loss weights above 0, sorted
    int groups = 0;             // DPO: the loss groups it adds to a row (one per distinct weight of each term)
    int64_t length() const { return (int64_t) a.tokens.size() + (int64_t) b.tokens.size(); }
};

struct Dataset {
    Task task = Task::SFT;
    std::string path;
    uint64_t fingerprint = 0;
    int64_t n_vocab = 0;
    std::vector<Item> items;
};

// Reads and checks every record (token ids against `model_vocab`, weights finite and
// ≥ 0, each item at most `max_len` tokens). One error line naming the record on failure.
bool read_dataset(const std::string & path, int64_t model_vocab, int64_t max_len, Dataset & out);

// A packed row: items laid side by side, each attending only to itself.
struct Row {
    std::vector<int64_t> items;
    int64_t tokens = 0;
};

// Packs `items` in the order given into rows of at most `max_len` tokens and
// MAX_ROW_GROUPS loss groups.
std::vector<Row> pack_rows(const Dataset & data, const std::vector<int64_t> & items, int64_t max_len);

// One optimizer step: `accum` rows (the last step of an epoch may have fewer).
struct Step {
    int64_t epoch = 0;
    std::vector<Row> rows;
};

// Most loss groups (runs of rows with one weight, per term) in one packed row: ggml's graph
// allocator runs out of free blocks with many hundreds of small loss tensors.
const int MAX_ROW_GROUPS = 128;

// Every step of the run: per epoch the items in a seeded order, packed greedily into
// rows of at most `max_len` tokens and MAX_ROW_GROUPS loss groups, `accum` rows per step.
// Deterministic, so a resumed run rebuilds the same plan.
std::vector<Step> make_plan(const Dataset & data, int64_t epochs, int64_t max_len, int64_t accum, uint64_t seed);

} // namespace st
