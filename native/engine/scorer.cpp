#include "scorer.h"

#include <algorithm>
#include <map>

#include "sampling.h"
#include "slots.h"
#include "work_pool.h"

namespace still {

Scorer::Scorer(std::shared_ptr<Model> model, const ScorerParams & params)
    : DecodeEngine(std::move(model), params, static_cast<int32_t>(llama_max_parallel_sequences())), params_(params) {
    params_.n_threads = resolve_threads(params_.n_threads);
}

namespace {

struct Slot {
    bool active = false;
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

// One call of Scorer::run: records grouped by prompt, the slots, and the decode loop.
class ScoreRun {
public:
    ScoreRun(const Model & model, llama_context * ctx, const ScorerParams & params, const std::vector<ScoreRecord> & records,
             const std::function<void(ScoreResult &&)> & on_result, const std::atomic<bool> * abort, ScoreStats & stats)
        : n_vocab_(llama_vocab_n_tokens(model.vocab())), ctx_(ctx), params_(params), records_(records), on_result_(on_result),
          abort_(abort), stats_(stats), t0_(Clock::now()), slots_(static_cast<size_t>(params.n_parallel)),
          prompts_(llama_get_memory(ctx), false, params.n_parallel),
          batch_(llama_batch_init(static_cast<int32_t>(llama_n_batch(ctx)), 0, 1)) {
        // records with the same prompt form a group, in order of first appearance
        std::map<std::vector<llama_token>, int32_t> by_prompt;
        std::vector<std::vector<int32_t>> members;
        for (size_t i = 0; i < records.size(); i++) {
            if (records[i].completion.empty()) {
                stats_.records_done++;
                on_result_(ScoreResult{static_cast<int32_t>(i), {}});
                continue;
            }
            auto [it, added] = by_prompt.emplace(records[i].prompt, static_cast<int32_t>(members.size()));
            if (added) members.emplace_back();
            members[static_cast<size_t>(it->second)].push_back(static_cast<int32_t>(i));
        }
        for (auto & m : members) {
            prompts_.add_group(records[static_cast<size_t>(m[0])].prompt.size(), m.size());
            group_records_.push_back(std::move(m));
        }
        group_lse_.assign(group_records_.size(), 0.0f);
        // most rows of logits one decode may produce (each row is n_vocab floats): 1 GiB
        max_outputs_ = std::max<int32_t>(1, std::min(static_cast<int32_t>(llama_n_batch(ctx)),
                                                     static_cast<int32_t>((1u << 30) / (static_cast<size_t>(n_vocab_) * sizeof(float)))));
        if (params.n_threads > 1) pool_ = std::make_unique<WorkPool>(params.n_threads - 1);
    }

    ~ScoreRun() { llama_batch_free(batch_); }
    ScoreRun(const ScoreRun &) = delete;
    ScoreRun & operator=(const ScoreRun &) = delete;

    void run(const std::function<void(const ScoreStats &)> & on_progress) {
        while (!aborted()) {
            prompts_.fill([&](int32_t s) { return !slot(s).active; },
                          [&](int32_t g, int32_t s, PromptSlots::Start how) { start(g, s, how == PromptSlots::Start::fresh); },
                          /*drop_idle=*/false);
            prompts_.release_started();
            build_batch();
            if (batch_.n_tokens == 0) break; // everything scored
            if (!decode()) break;
            score_rows();
            for (int32_t s = 0; s < params_.n_parallel; s++)
                if (slot(s).active && slot(s).scored == record_of(s).completion.size()) emit(s);
            stats_.elapsed_ms = ms_between(t0_, Clock::now());
            if (on_progress) on_progress(stats_);
        }
        stats_.elapsed_ms = ms_between(t0_, Clock::now());
    }

private:
    Slot & slot(int32_t s) { return slots_[static_cast<size_t>(s)]; }
    const ScoreRecord & record_of(int32_t s) { return records_[static_cast<size_t>(slot(s).record)]; }
    bool aborted() const { return abort_ != nullptr && abort_->load(); }

    void emit(int32_t s) {
        Slot & sl = slot(s);
        stats_.records_done++;
        on_result_(ScoreResult{sl.record, std::move(sl.logprobs)});
        sl.logprobs = {};
        sl.active = false;
        sl.record = -1;
    }

    // Starts group g's next record in slot s, whose cache holds the group's prompt (or,
    // when `decode_prompt`, is empty and decodes it first).
    void start(int32_t g, int32_t s, bool decode_prompt) {
        Slot & sl = slot(s);
        const int32_t r = group_records_[static_cast<size_t>(g)][prompts_.take(g)];
        const ScoreRecord & rec = records_[static_cast<size_t>(r)];
        sl.active = true;
        sl.record = r;
        sl.logprobs.assign(rec.completion.size(), 0.0f);
        sl.scored = 0;
        sl.feed = decode_prompt ? 0 : rec.prompt.size();
        // the last completion token predicts nothing we need (unless asked to decode it)
        sl.end = rec.prompt.size() + rec.completion.size() - (rec.decode_last ? 0 : 1);
        if (decode_prompt) return;
        // the first completion token's log-probability comes from the prompt's logits
        sl.logprobs[0] = prompts_.group(g).last_logits[static_cast<size_t>(rec.completion[0])] - group_lse_[static_cast<size_t>(g)];
        sl.scored = 1;
        if (sl.scored == rec.completion.size()) emit(s);
    }

    // Each active record's next tokens, logits where a completion token is predicted.
    void build_batch() {
        const int32_t n_batch = static_cast<int32_t>(llama_n_batch(ctx_)); // llama.cpp caps a context's batch at its size
        batch_.n_tokens = 0;
        rows_.clear();
        for (int32_t s = 0; s < params_.n_parallel && batch_.n_tokens < n_batch; s++) {
            Slot & sl = slot(s);
            if (!sl.active) continue;
            const ScoreRecord & rec = record_of(s);
            const size_t prompt = rec.prompt.size();
            while (sl.feed < sl.end && batch_.n_tokens < n_batch) {
                const size_t p = sl.feed;
                const bool output = p + 1 >= prompt;
                if (output && static_cast<int32_t>(rows_.size()) >= max_outputs_) break;
                const int32_t i = batch_.n_tokens++;
                batch_.token[i] = p < prompt ? rec.prompt[p] : rec.completion[p - prompt];
                batch_.pos[i] = static_cast<llama_pos>(p);
                batch_.n_seq_id[i] = 1;
                batch_.seq_id[i][0] = s;
                batch_.logits[i] = output;
                if (output) rows_.push_back({s, p, i});
                sl.feed++;
            }
        }
    }

    bool decode() {
        const Clock::time_point td = Clock::now();
        const int32_t rc = llama_decode(ctx_, batch_);
        if (rc == 2 || aborted()) return false;
        if (rc != 0) throw EngineError("decode_failed", rc == 1 ? "the KV cache is full" : "llama_decode failed with code " + std::to_string(rc));
        stats_.decode_ms += ms_between(td, Clock::now());
        stats_.decodes++;
        stats_.tokens_decoded += batch_.n_tokens;
        return true;
    }

    // Log-softmax of every output row at its target token, over the CPU threads.
    void score_rows() {
        const Clock::time_point tl = Clock::now();
        row_logprobs_.resize(rows_.size());
        // llama_get_logits_ith synchronizes and may reorder the output rows: not for worker
        // threads. Every row's address is taken here first.
        row_logits_.resize(rows_.size());
        for (size_t i = 0; i < rows_.size(); i++) row_logits_[i] = llama_get_logits_ith(ctx_, rows_[i].index);
        const std::function<void(int32_t)> score_row = [&](int32_t i) {
            const Row & row = rows_[static_cast<size_t>(i)];
            const ScoreRecord & rec = records_[static_cast<size_t>(slots_[static_cast<size_t>(row.slot)].record)];
            if (row.pos + 1 - rec.prompt.size() >= rec.completion.size()) return; // the unused last row
            const float * logits = row_logits_[static_cast<size_t>(i)];
            const llama_token target = rec.completion[row.pos + 1 - rec.prompt.size()];
            int32_t unused = 0;
            row_logprobs_[static_cast<size_t>(i)] = logits[target] - log_sum_exp(logits, n_vocab_, &unused);
        };
        if (pool_ != nullptr && rows_.size() >= 8) pool_->run(static_cast<int32_t>(rows_.size()), score_row);
        else for (size_t i = 0; i < rows_.size(); i++) score_row(static_cast<int32_t>(i));
        for (size_t i = 0; i < rows_.size(); i++) {
            const Row & row = rows_[i];
            Slot & sl = slot(row.slot);
            const ScoreRecord & rec = records_[static_cast<size_t>(sl.record)];
            if (row.pos + 1 == rec.prompt.size()) {
                // records of this group started later need the prompt's last logits
                const int32_t g = prompts_.group_of(row.slot);
                prompts_.set_ready(g, row_logits_[i], n_vocab_);
                if (prompts_.group(g).has_items()) {
                    int32_t unused = 0;
                    group_lse_[static_cast<size_t>(g)] = log_sum_exp(row_logits_[i], n_vocab_, &unused);
                }
            }
            if (row.pos + 1 - rec.prompt.size() >= rec.completion.size()) continue;
            sl.logprobs[row.pos + 1 - rec.prompt.size()] = row_logprobs_[i];
            sl.scored++;
            stats_.tokens_scored++;
        }
        stats_.softmax_ms += ms_between(tl, Clock::now());
    }

    const int32_t n_vocab_;
    llama_context * ctx_;
    const ScorerParams & params_;
    const std::vector<ScoreRecord> & records_;
    const std::function<void(ScoreResult &&)> & on_result_;
    const std::atomic<bool> * abort_;
    ScoreStats & stats_;
    const Clock::time_point t0_;
    std::vector<Slot> slots_;
    PromptSlots prompts_;
    std::vector<std::vector<int32_t>> group_records_;
    std::vector<float> group_lse_;
    int32_t max_outputs_ = 1;
    llama_batch batch_;
    std::unique_ptr<WorkPool> pool_;
    std::vector<Row> rows_;
    std::vector<const float *> row_logits_;
    std::vector<float> row_logprobs_;
};

} // namespace

ScoreStats Scorer::run(const std::vector<ScoreRecord> & records,
                       const std::function<void(ScoreResult &&)> & on_result,
                       const std::function<void(const ScoreStats &)> & on_progress,
                       const std::atomic<bool> * abort) {
    ScoreStats stats;
    stats.records_total = static_cast<int64_t>(records.size());
    const int32_t n_vocab = llama_vocab_n_tokens(model_->vocab());
    size_t longest = 0;
    for (size_t i = 0; i < records.size(); i++) {
        const ScoreRecord & r = records[i];
        if (r.prompt.empty()) throw EngineError("invalid_argument", "record " + std::to_string(i) + " has an empty prompt");
        check_tokens(r.prompt.data(), r.prompt.size(), n_vocab, "record " + std::to_string(i) + "'s prompt");
        check_tokens(r.completion.data(), r.completion.size(), n_vocab, "record " + std::to_string(i) + "'s completion");
        longest = std::max(longest, r.prompt.size() + r.completion.size());
    }
    const uint32_t seq_cells = params_.seq_cells > 0 ? params_.seq_cells : static_cast<uint32_t>(longest + 1);
    for (size_t i = 0; i < records.size(); i++)
        if (records[i].prompt.size() + records[i].completion.size() > seq_cells)
            throw EngineError("invalid_argument", "record " + std::to_string(i) + " has " +
                                                      std::to_string(records[i].prompt.size() + records[i].completion.size()) +
                                                      " tokens, more than the " + std::to_string(seq_cells) + " a sequence holds");
    // separate caches: a token attends to its own sequence only
    llama_context * ctx = begin_run(params_, seq_cells * static_cast<uint32_t>(params_.n_parallel), false);
    AbortSlot::Scope abort_scope(abort_, abort);
    ScoreRun(*model_, ctx, params_, records, on_result, abort, stats).run(on_progress);
    return stats;
}

} // namespace still
