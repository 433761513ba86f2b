#include "scorer.h"

#include <algorithm>
#include <chrono>
#include <deque>
#include <map>
#include <thread>

#include "kv_slots.h"
#include "log.h"
#include "sampling.h"
#include "work_pool.h"

namespace still {

namespace {
using Clock = std::chrono::steady_clock;

double ms_between(Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double, std::milli>(b - a).count();
}

// The records that share one prompt.
struct Group {
    const std::vector<llama_token> * prompt = nullptr;
    std::vector<int32_t> records;
    size_t next = 0;                // records started so far
    bool ready = false;             // the prompt is decoded in some slot
    std::vector<float> last_logits; // at the last prompt position, for records started later
    float last_lse = 0;             // their log-sum-exp
};

struct Slot {
    bool active = false;
    int32_t group = -1;  // the group whose prompt the slot's cache holds (or is decoding)
    int32_t record = -1;
    size_t feed = 0;     // next position to decode
    size_t end = 0;      // positions up to here are decoded for this record
    std::vector<float> logprobs;
    size_t scored = 0;
};

// One output row of a batch: which slot, and which position it predicts from.
struct Row {
    int32_t slot;
    size_t pos;
    int32_t index; // in the batch
};
} // namespace

bool Scorer::abort_callback(void * scorer) {
    const auto * flag = static_cast<Scorer *>(scorer)->abort_;
    return flag != nullptr && flag->load(std::memory_order_relaxed);
}

Scorer::Scorer(std::shared_ptr<Model> model, const ScorerParams & params) : model_(std::move(model)), params_(params) {
    const int32_t max_seq = static_cast<int32_t>(llama_max_parallel_sequences());
    if (params_.n_parallel < 1 || params_.n_parallel > max_seq)
        throw EngineError("invalid_argument", "parallel must be between 1 and " + std::to_string(max_seq));
    if (params_.n_threads <= 0) params_.n_threads = std::max(1u, std::thread::hardware_concurrency());
    if (model_->params().vocab_only) throw EngineError("invalid_argument", "the model was loaded without weights (vocabOnly)");
}

Scorer::~Scorer() {
    if (ctx_ != nullptr) llama_free(ctx_);
}

void Scorer::set_adapters(std::vector<std::pair<std::shared_ptr<Adapter>, float>> adapters) {
    adapters_ = std::move(adapters);
}

void Scorer::ensure_context(uint32_t seq_cells) {
    if (ctx_ != nullptr && seq_cells <= ctx_seq_cells_) return;
    if (ctx_ != nullptr) {
        llama_free(ctx_);
        ctx_ = nullptr;
    }
    LogCapture capture;
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = seq_cells * static_cast<uint32_t>(params_.n_parallel);
    cp.n_batch = params_.n_batch;
    cp.n_ubatch = std::min(params_.n_ubatch, params_.n_batch);
    cp.n_seq_max = params_.n_parallel;
    cp.n_threads = params_.n_threads;
    cp.n_threads_batch = params_.n_threads;
    cp.kv_unified = false; // a token attends to its own sequence only
    cp.flash_attn_type = static_cast<llama_flash_attn_type>(params_.flash_attn);
    cp.no_perf = true;
    cp.abort_callback = abort_callback;
    cp.abort_callback_data = this;
    ctx_ = llama_init_from_model(model_->raw(), cp);
    if (ctx_ == nullptr) {
        std::string reason = capture.summary();
        throw EngineError("context_failed", "could not create a context of " + std::to_string(cp.n_ctx) + " KV cells" +
                                                (reason.empty() ? "" : ": " + reason));
    }
    ctx_seq_cells_ = llama_n_ctx(ctx_) / static_cast<uint32_t>(params_.n_parallel);
}

ScoreStats Scorer::run(const std::vector<ScoreRecord> & records,
                       const std::function<void(ScoreResult &&)> & on_result,
                       const std::function<void(const ScoreStats &)> & on_progress,
                       const std::atomic<bool> * abort) {
    const Clock::time_point t0 = Clock::now();
    ScoreStats stats;
    stats.records_total = static_cast<int64_t>(records.size());
    const int32_t n_vocab = llama_vocab_n_tokens(model_->vocab());
    const int32_t n_parallel = params_.n_parallel;

    // --- check the records, group them by prompt, size the context ---
    size_t longest = 0;
    for (size_t i = 0; i < records.size(); i++) {
        const ScoreRecord & r = records[i];
        if (r.prompt.empty()) throw EngineError("invalid_argument", "record " + std::to_string(i) + " has an empty prompt");
        for (const auto * part : {&r.prompt, &r.completion})
            for (llama_token t : *part)
                if (t < 0 || t >= n_vocab)
                    throw EngineError("invalid_argument", "record " + std::to_string(i) + " has token " + std::to_string(t) + " outside the vocabulary");
        longest = std::max(longest, r.prompt.size() + r.completion.size());
    }
    const uint32_t seq_cells = params_.seq_cells > 0 ? params_.seq_cells : static_cast<uint32_t>(longest + 1);
    for (size_t i = 0; i < records.size(); i++)
        if (records[i].prompt.size() + records[i].completion.size() > seq_cells)
            throw EngineError("invalid_argument", "record " + std::to_string(i) + " has " +
                                                      std::to_string(records[i].prompt.size() + records[i].completion.size()) +
                                                      " tokens, more than the " + std::to_string(seq_cells) + " a sequence holds");
    ensure_context(seq_cells);
    AbortScope abort_scope(abort_, abort);
    apply_adapters(ctx_, adapters_);

    llama_memory_t mem = llama_get_memory(ctx_);
    llama_memory_clear(mem, true);

    std::vector<Group> groups;
    std::deque<int32_t> queue; // groups not started, in order of first appearance
    {
        std::map<std::vector<llama_token>, int32_t> by_prompt;
        for (size_t i = 0; i < records.size(); i++) {
            if (records[i].completion.empty()) {
                stats.records_done++;
                on_result(ScoreResult{static_cast<int32_t>(i), {}});
                continue;
            }
            auto [it, added] = by_prompt.emplace(records[i].prompt, static_cast<int32_t>(groups.size()));
            if (added) {
                groups.emplace_back();
                groups.back().prompt = &records[i].prompt;
                queue.push_back(it->second);
            }
            groups[it->second].records.push_back(static_cast<int32_t>(i));
        }
    }
    std::vector<Slot> slots(n_parallel);

    // llama.cpp caps a context's batch at its size.
    const int32_t n_batch = static_cast<int32_t>(llama_n_batch(ctx_));
    // Most rows of logits one decode may produce (each row is n_vocab floats): 1 GiB.
    const int32_t max_outputs = std::max<int32_t>(1, std::min(n_batch, static_cast<int32_t>((1u << 30) / (n_vocab * sizeof(float)))));
    llama_batch batch = llama_batch_init(n_batch, 0, 1);
    struct BatchGuard {
        llama_batch & b;
        ~BatchGuard() { llama_batch_free(b); }
    } batch_guard{batch};

    std::unique_ptr<WorkPool> pool;
    if (params_.n_threads > 1) pool = std::make_unique<WorkPool>(params_.n_threads - 1);
    std::vector<Row> rows;
    std::vector<const float *> row_logits;
    std::vector<float> row_logprobs;

    auto emit = [&](int32_t s) {
        Slot & slot = slots[s];
        stats.records_done++;
        on_result(ScoreResult{slot.record, std::move(slot.logprobs)});
        slot.logprobs = {};
        slot.active = false;
        slot.record = -1;
    };

    // Starts group g's next record in slot s, whose cache holds the group's prompt (or,
    // when `decode_prompt`, is empty and decodes it first).
    auto start = [&](int32_t g, int32_t s, bool decode_prompt) {
        Group & group = groups[g];
        Slot & slot = slots[s];
        const int32_t r = group.records[group.next++];
        const ScoreRecord & rec = records[r];
        slot.active = true;
        slot.group = g;
        slot.record = r;
        slot.logprobs.assign(rec.completion.size(), 0.0f);
        slot.scored = 0;
        slot.feed = decode_prompt ? 0 : rec.prompt.size();
        // The last completion token predicts nothing we need (unless asked to decode it).
        slot.end = rec.prompt.size() + rec.completion.size() - (rec.decode_last ? 0 : 1);
        if (!decode_prompt) {
            // The first completion token's log-probability comes from the prompt's logits.
            slot.logprobs[0] = group.last_logits[rec.completion[0]] - group.last_lse;
            slot.scored = 1;
            if (slot.scored == rec.completion.size()) emit(s);
        }
    };

    while (true) {
        if (abort != nullptr && abort->load()) break;

        // 1. Idle slots: the next record of their own group (its prompt is there), else of
        //    the oldest started group (copying its prompt), else a new group's first record.
        for (int32_t s = 0; s < n_parallel; s++) {
            Slot & slot = slots[s];
            if (slot.active) continue;
            if (slot.group >= 0 && groups[slot.group].ready && groups[slot.group].next < groups[slot.group].records.size()) {
                keep_prefix(mem, s, groups[slot.group].prompt->size());
                start(slot.group, s, false);
                if (!slot.active) s--; // it finished at once; try the slot again
                continue;
            }
            bool served = false;
            for (int32_t g = 0; g < static_cast<int32_t>(groups.size()) && !served; g++) {
                Group & group = groups[g];
                if (!group.ready || group.next >= group.records.size()) continue;
                for (int32_t src = 0; src < n_parallel; src++) {
                    if (src == s || slots[src].group != g) continue;
                    copy_prefix(mem, false, src, s, group.prompt->size());
                    start(g, s, false);
                    served = true;
                    break;
                }
            }
            if (served) {
                if (!slot.active) s--;
                continue;
            }
            if (!queue.empty()) {
                const int32_t g = queue.front();
                queue.pop_front();
                llama_memory_seq_rm(mem, s, -1, -1);
                start(g, s, true);
                continue;
            }
        }
        // Groups whose records have all started need no saved logits.
        for (Group & group : groups)
            if (group.next >= group.records.size() && !group.last_logits.empty()) {
                group.last_logits.clear();
                group.last_logits.shrink_to_fit();
            }

        // 2. Build the batch: each active record's next tokens, logits where a completion
        //    token is predicted.
        batch.n_tokens = 0;
        rows.clear();
        for (int32_t s = 0; s < n_parallel && batch.n_tokens < n_batch; s++) {
            Slot & slot = slots[s];
            if (!slot.active) continue;
            const ScoreRecord & rec = records[slot.record];
            const size_t prompt = rec.prompt.size();
            while (slot.feed < slot.end && batch.n_tokens < n_batch) {
                const size_t p = slot.feed;
                const bool output = p + 1 >= prompt;
                if (output && static_cast<int32_t>(rows.size()) >= max_outputs) break;
                const int32_t i = batch.n_tokens++;
                batch.token[i] = p < prompt ? rec.prompt[p] : rec.completion[p - prompt];
                batch.pos[i] = static_cast<llama_pos>(p);
                batch.n_seq_id[i] = 1;
                batch.seq_id[i][0] = s;
                batch.logits[i] = output;
                if (output) rows.push_back({s, p, i});
                slot.feed++;
            }
        }
        if (batch.n_tokens == 0) break; // everything scored

        // 3. Decode.
        const Clock::time_point td = Clock::now();
        const int32_t rc = llama_decode(ctx_, batch);
        if (rc == 2 || (abort != nullptr && abort->load())) break;
        if (rc != 0)
            throw EngineError("decode_failed", rc == 1 ? "the KV cache is full" : "llama_decode failed with code " + std::to_string(rc));
        stats.decode_ms += ms_between(td, Clock::now());
        stats.decodes++;
        stats.tokens_decoded += batch.n_tokens;

        // 4. Log-softmax of every output row at its target token, over the CPU threads.
        const Clock::time_point tl = Clock::now();
        row_logprobs.resize(rows.size());
        // llama_get_logits_ith synchronizes and may reorder the output rows: not for
        // worker threads. Take every row's address here first.
        row_logits.resize(rows.size());
        for (size_t i = 0; i < rows.size(); i++) row_logits[i] = llama_get_logits_ith(ctx_, rows[i].index);
        const std::function<void(int32_t)> score_row = [&](int32_t i) {
            const Row & row = rows[i];
            const ScoreRecord & rec = records[slots[row.slot].record];
            if (row.pos + 1 - rec.prompt.size() >= rec.completion.size()) return; // the unused last row
            const float * logits = row_logits[i];
            const llama_token target = rec.completion[row.pos + 1 - rec.prompt.size()];
            int32_t unused = 0;
            row_logprobs[i] = logits[target] - log_sum_exp(logits, n_vocab, &unused);
        };
        if (pool != nullptr && rows.size() >= 8) pool->run(static_cast<int32_t>(rows.size()), score_row);
        else for (size_t i = 0; i < rows.size(); i++) score_row(static_cast<int32_t>(i));
        for (size_t i = 0; i < rows.size(); i++) {
            const Row & row = rows[i];
            Slot & slot = slots[row.slot];
            const ScoreRecord & rec = records[slot.record];
            Group & group = groups[slot.group];
            if (row.pos + 1 == rec.prompt.size()) {
                group.ready = true;
                // Records of this group started later need the prompt's last logits.
                if (group.next < group.records.size()) {
                    const float * logits = row_logits[i];
                    group.last_logits.assign(logits, logits + n_vocab);
                    int32_t unused = 0;
                    group.last_lse = log_sum_exp(logits, n_vocab, &unused);
                }
            }
            if (row.pos + 1 - rec.prompt.size() >= rec.completion.size()) continue;
            slot.logprobs[row.pos + 1 - rec.prompt.size()] = row_logprobs[i];
            slot.scored++;
            stats.tokens_scored++;
        }
        stats.softmax_ms += ms_between(tl, Clock::now());
        for (int32_t s = 0; s < n_parallel; s++)
            if (slots[s].active && slots[s].scored == records[slots[s].record].completion.size()) emit(s);
        stats.elapsed_ms = ms_between(t0, Clock::now());
        if (on_progress) on_progress(stats);
    }
    stats.elapsed_ms = ms_between(t0, Clock::now());
    return stats;
}

} // namespace still
