#include "rollout.h"

#include <algorithm>

#include "slots.h"
#include "work_pool.h"

namespace still {

const char * finish_reason_name(FinishReason r) {
    switch (r) {
        case FinishReason::stop: return "stop";
        case FinishReason::length: return "length";
        default: return "aborted";
    }
}

RolloutEngine::RolloutEngine(std::shared_ptr<Model> model, const EngineParams & params)
    : DecodeEngine(std::move(model), params, static_cast<int32_t>(llama_max_parallel_sequences()) / 2), params_(params) {
    params_.n_threads = resolve_threads(params_.n_threads);
    // every running sample needs a row in each batch
    params_.n_batch = std::max(params_.n_batch, params_.n_parallel);
}

uint32_t RolloutEngine::required_cells(const std::vector<RolloutRequest> & requests) const {
    size_t longest = 0;
    for (const auto & r : requests) {
        if (r.samples.empty()) continue;
        longest = std::max(longest, r.prompt.size() + static_cast<size_t>(std::max(0, r.params.max_tokens)));
    }
    // Each slot holds one prompt and its own tokens (in a unified cache prompts are shared,
    // so this is an upper bound). One cell of slack per slot for the last decoded token.
    return static_cast<uint32_t>((longest + 1) * params_.n_parallel);
}

namespace {

struct Slot {
    bool active = false;       // a sample is running here
    bool prefill = false;      // a prompt is being decoded here
    std::unique_ptr<Sampler> sampler;
    RolloutResult result;
    size_t stop_scan = 0;      // text before this offset holds no stop string
    llama_token pending = -1;  // sampled, to be decoded in the next batch
    llama_pos pos = 0;         // position of `pending`
    int32_t out_row = -1;      // this batch's output row for the slot
};

// One call of RolloutEngine::run: the requests' state, the slots, and the token loop.
class RolloutRun {
public:
    RolloutRun(const Model & model, llama_context * ctx, const EngineParams & params, const std::vector<RolloutRequest> & requests,
               const std::function<void(RolloutResult &&)> & on_result, const std::atomic<bool> * abort, RolloutStats & stats)
        : model_(model), vocab_(model.vocab()), n_vocab_(llama_vocab_n_tokens(model.vocab())), ctx_(ctx), params_(params),
          requests_(requests), on_result_(on_result), abort_(abort), stats_(stats), t0_(Clock::now()),
          unified_(params.kv_unified > 0),
          seq_cells_(unified_ ? llama_n_ctx(ctx) : llama_n_ctx(ctx) / static_cast<uint32_t>(params.n_parallel)),
          slots_(static_cast<size_t>(params.n_parallel)),
          prompts_(llama_get_memory(ctx), unified_, params.n_parallel),
          batch_(llama_batch_init(static_cast<int32_t>(llama_n_batch(ctx)), 0, 1)) {
        for (size_t i = 0; i < requests.size(); i++) {
            if (requests[i].samples.empty()) continue;
            if (requests[i].prompt.size() + 1 > seq_cells_)
                throw EngineError("invalid_argument", "request " + std::to_string(i) + "'s prompt (" + std::to_string(requests[i].prompt.size()) +
                                                          " tokens) does not fit the context (" + std::to_string(seq_cells_) + " cells per sequence)");
            group_request_.push_back(static_cast<int32_t>(i));
            prompt_done_.push_back(0);
            prompts_.add_group(requests[i].prompt.size(), requests[i].samples.size());
        }
        if (params.n_threads > 1 && params.n_parallel >= 4) pool_ = std::make_unique<WorkPool>(params.n_threads - 1);
    }

    ~RolloutRun() { llama_batch_free(batch_); }
    RolloutRun(const RolloutRun &) = delete;
    RolloutRun & operator=(const RolloutRun &) = delete;

    void run(const std::function<void(const RolloutStats &)> & on_progress) {
        while (!aborted()) {
            fill_slots();
            std::vector<std::pair<int32_t, int32_t>> prompt_rows; // (group, output row) of prompts this batch completes
            int32_t n_gen = 0, n_prompt = 0;
            build_batch(prompt_rows, n_gen, n_prompt);
            if (batch_.n_tokens == 0) break; // nothing running, nothing waiting
            if (!decode(n_gen, n_prompt)) break;
            // prompts that completed: their last logits are kept for every sample to start
            // from; the slot that decoded the prompt starts the first sample, idle slots take
            // more of them at the next step
            for (const auto & [g, row] : prompt_rows) {
                const int32_t holder = prompts_.group(g).holder;
                prompts_.set_ready(g, llama_get_logits_ith(ctx_, row), n_vocab_);
                slots_[static_cast<size_t>(holder)].prefill = false;
                start_sample(g, holder);
            }
            sample_running();
            stats_.elapsed_ms = since_start();
            if (on_progress) on_progress(stats_);
        }
        // aborted: hand back what the unfinished samples had
        for (int32_t s = 0; s < params_.n_parallel; s++)
            if (slot(s).active) finish(s, FinishReason::aborted);
        stats_.elapsed_ms = since_start();
    }

private:
    Slot & slot(int32_t s) { return slots_[static_cast<size_t>(s)]; }
    const RolloutRequest & request_of(int32_t g) const { return requests_[static_cast<size_t>(group_request_[static_cast<size_t>(g)])]; }
    double since_start() const { return ms_between(t0_, Clock::now()); }
    bool aborted() const { return abort_ != nullptr && abort_->load(); }

    // 1. Idle slots get work (see PromptSlots): a new request's prompt goes to prefill.
    void fill_slots() {
        prompts_.fill([&](int32_t s) { return !slot(s).active && !slot(s).prefill; },
            [&](int32_t g, int32_t s, PromptSlots::Start how) {
                if (how == PromptSlots::Start::fresh) slot(s).prefill = true;
                else start_sample(g, s);
            }, /*drop_idle=*/true);
        prompts_.release_started();
    }

    // Starts group g's next sample in slot s, whose cache holds the prompt: its first
    // token comes from the prompt's saved logits.
    void start_sample(int32_t g, int32_t s) {
        const RolloutRequest & r = request_of(g);
        const int32_t sample = r.samples[prompts_.take(g)];
        Slot & sl = slot(s);
        sl.active = true;
        sl.stop_scan = 0;
        sl.result = RolloutResult();
        sl.result.request = group_request_[static_cast<size_t>(g)];
        sl.result.sample = sample;
        sl.result.prompt_tokens = static_cast<int32_t>(r.prompt.size());
        sl.result.start_ms = since_start();
        if (r.params.max_tokens == 0) {
            finish(s, FinishReason::length);
            return;
        }
        sl.sampler = std::make_unique<Sampler>(r.params.sampling, sample_seed(r.params.sampling.seed, sample), n_vocab_);
        const Clock::time_point ts = Clock::now();
        float logprob = 0;
        const llama_token token = sl.sampler->sample(prompts_.group(g).last_logits.data(), &logprob);
        const double dt = ms_between(ts, Clock::now());
        stats_.generate_ms += dt;
        stats_.sample_ms += dt;
        accept(s, token, logprob);
    }

    // Ends the sample in slot s; the slot's cache is cleared by whoever takes it next.
    void finish(int32_t s, FinishReason why) {
        Slot & sl = slot(s);
        sl.result.finish = why;
        sl.result.end_ms = since_start();
        if (why != FinishReason::stop) drop_partial_utf8(sl.result.text);
        stats_.samples_done++;
        on_result_(std::move(sl.result));
        sl.result = RolloutResult();
        sl.sampler.reset();
        sl.active = false;
        sl.pending = -1;
    }

    // A length cut may end inside a UTF-8 sequence; JS strings cannot hold it.
    static void drop_partial_utf8(std::string & text) {
        size_t i = text.size(), cont = 0;
        while (i > 0 && cont < 4 && (static_cast<unsigned char>(text[i - 1]) & 0xC0) == 0x80) i--, cont++;
        if (i == 0) return;
        const unsigned char lead = static_cast<unsigned char>(text[i - 1]);
        const size_t need = lead >= 0xF0 ? 3 : lead >= 0xE0 ? 2 : lead >= 0xC0 ? 1 : 0;
        if (need > cont) text.resize(i - 1);
    }

    // Takes a freshly sampled token; returns false when the sample has ended.
    bool accept(int32_t s, llama_token token, float logprob) {
        Slot & sl = slot(s);
        RolloutResult & res = sl.result;
        const GenerationParams & gp = requests_[static_cast<size_t>(res.request)].params;
        if (res.tokens.empty()) res.first_token_ms = since_start();
        if (gp.stop_at_eog && llama_vocab_is_eog(vocab_, token)) {
            res.stop = model_.detokenize({token}, false, true);
            finish(s, FinishReason::stop);
            return false;
        }
        res.tokens.push_back(token);
        res.logprobs.push_back(logprob);
        stats_.generated_tokens++;
        append_piece(res.text, token);
        if (std::find(gp.stop_tokens.begin(), gp.stop_tokens.end(), token) != gp.stop_tokens.end()) {
            res.stop = model_.detokenize({token}, false, true);
            finish(s, FinishReason::stop);
            return false;
        }
        if (stop_string_found(sl, gp)) {
            finish(s, FinishReason::stop);
            return false;
        }
        if (static_cast<int32_t>(res.tokens.size()) >= gp.max_tokens || res.prompt_tokens + res.tokens.size() + 1 > seq_cells_) {
            finish(s, FinishReason::length);
            return false;
        }
        sl.pending = token;
        sl.pos = static_cast<llama_pos>(res.prompt_tokens + res.tokens.size() - 1);
        return true;
    }

    void append_piece(std::string & text, llama_token token) const {
        char piece[256];
        int32_t n = llama_token_to_piece(vocab_, token, piece, sizeof(piece), 0, false);
        if (n >= 0) {
            text.append(piece, static_cast<size_t>(n));
            return;
        }
        std::string big(static_cast<size_t>(-n), '\0');
        n = llama_token_to_piece(vocab_, token, big.data(), -n, 0, false);
        text.append(big.data(), static_cast<size_t>(std::max(0, n)));
    }

    // Stop strings may span tokens (and split UTF-8): the text is searched from where a
    // match could still start. On a match the text is cut (or kept up to the string's end).
    static bool stop_string_found(Slot & sl, const GenerationParams & gp) {
        size_t longest = 0;
        for (const auto & st : gp.stop_strings) longest = std::max(longest, st.size());
        for (const auto & st : gp.keep_strings) longest = std::max(longest, st.size());
        if (longest == 0) return false;
        std::string & text = sl.result.text;
        size_t best = std::string::npos;
        const std::string * which = nullptr;
        bool keep = false;
        auto scan = [&](const std::vector<std::string> & list, bool kept) {
            for (const auto & st : list) {
                if (st.empty()) continue;
                const size_t at = text.find(st, sl.stop_scan);
                if (at != std::string::npos && at < best) {
                    best = at;
                    which = &st;
                    keep = kept;
                }
            }
        };
        scan(gp.stop_strings, false);
        scan(gp.keep_strings, true);
        if (which != nullptr) {
            sl.result.stop = *which;
            text.resize(keep ? best + which->size() : best);
            return true;
        }
        sl.stop_scan = text.size() >= longest ? text.size() - longest + 1 : 0;
        return false;
    }

    // 2. The batch: one token per running sample, then prompt chunks.
    void build_batch(std::vector<std::pair<int32_t, int32_t>> & prompt_rows, int32_t & n_gen, int32_t & n_prompt) {
        const int32_t n_batch = static_cast<int32_t>(llama_n_batch(ctx_)); // llama.cpp caps a context's batch at its size
        batch_.n_tokens = 0;
        auto add = [&](llama_token t, llama_pos p, llama_seq_id seq, bool logits) {
            const int32_t i = batch_.n_tokens++;
            batch_.token[i] = t;
            batch_.pos[i] = p;
            batch_.n_seq_id[i] = 1;
            batch_.seq_id[i][0] = seq;
            batch_.logits[i] = logits;
            return i;
        };
        for (int32_t s = 0; s < params_.n_parallel; s++) {
            Slot & sl = slot(s);
            sl.out_row = -1;
            if (!sl.active || sl.pending < 0) continue;
            sl.out_row = add(sl.pending, sl.pos, s, true);
            sl.pending = -1;
            n_gen++;
        }
        for (int32_t g : prompts_.started()) {
            if (batch_.n_tokens >= n_batch) break;
            const auto & prompt = request_of(g).prompt;
            size_t & done = prompt_done_[static_cast<size_t>(g)];
            while (!prompts_.group(g).ready && done < prompt.size() && batch_.n_tokens < n_batch) {
                const size_t p = done++;
                const bool last = done == prompt.size();
                const int32_t row = add(prompt[p], static_cast<llama_pos>(p), prompts_.group(g).holder, last);
                n_prompt++;
                if (last) prompt_rows.emplace_back(g, row);
            }
        }
    }

    // 3. Decode; false when the run is to stop (aborted).
    bool decode(int32_t n_gen, int32_t n_prompt) {
        const Clock::time_point td = Clock::now();
        const int32_t rc = llama_decode(ctx_, batch_);
        if (rc == 2 || aborted()) return false;
        if (rc != 0)
            throw EngineError("decode_failed", rc == 1 ? "the KV cache is full (" + std::to_string(llama_n_ctx(ctx_)) + " cells); lower parallel or max tokens, or give a larger context"
                                                      : "llama_decode failed with code " + std::to_string(rc));
        const double dt = ms_between(td, Clock::now());
        stats_.decode_ms += dt;
        stats_.decodes++;
        stats_.prompt_tokens += n_prompt;
        stats_.prompt_ms += dt * n_prompt / (n_prompt + n_gen);
        stats_.generate_ms += dt * n_gen / (n_prompt + n_gen);
        return true;
    }

    // 4. The next token of every running sample, spread over the CPU threads (each sampler
    //    reads only its own logits row), then taken in slot order.
    void sample_running() {
        const Clock::time_point tsmp = Clock::now();
        sampling_slots_.clear();
        for (int32_t s = 0; s < params_.n_parallel; s++)
            if (slot(s).active && slot(s).out_row >= 0) sampling_slots_.push_back(s);
        sampled_.resize(sampling_slots_.size());
        // llama_get_logits_ith synchronizes and may reorder the output rows: not for worker
        // threads. Every row's address is taken here first.
        sampling_logits_.resize(sampling_slots_.size());
        for (size_t i = 0; i < sampling_slots_.size(); i++) sampling_logits_[i] = llama_get_logits_ith(ctx_, slot(sampling_slots_[i]).out_row);
        const Clock::time_point tdraw = Clock::now();
        const std::function<void(int32_t)> sample_one = [&](int32_t i) {
            Slot & sl = slot(sampling_slots_[static_cast<size_t>(i)]);
            sampled_[static_cast<size_t>(i)].first = sl.sampler->sample(sampling_logits_[static_cast<size_t>(i)], &sampled_[static_cast<size_t>(i)].second);
        };
        if (pool_ != nullptr && sampling_slots_.size() >= 4) pool_->run(static_cast<int32_t>(sampling_slots_.size()), sample_one);
        else for (size_t i = 0; i < sampling_slots_.size(); i++) sample_one(static_cast<int32_t>(i));
        const Clock::time_point taccept = Clock::now();
        for (size_t i = 0; i < sampling_slots_.size(); i++) accept(sampling_slots_[i], sampled_[i].first, sampled_[i].second);
        const Clock::time_point tend = Clock::now();
        stats_.generate_ms += ms_between(tsmp, tend);
        stats_.logits_ms += ms_between(tsmp, tdraw);
        stats_.sample_ms += ms_between(tdraw, taccept);
        stats_.accept_ms += ms_between(taccept, tend);
    }

    const Model & model_;
    const llama_vocab * vocab_;
    const int32_t n_vocab_;
    llama_context * ctx_;
    const EngineParams & params_;
    const std::vector<RolloutRequest> & requests_;
    const std::function<void(RolloutResult &&)> & on_result_;
    const std::atomic<bool> * abort_;
    RolloutStats & stats_;
    const Clock::time_point t0_;
    const bool unified_;
    const uint32_t seq_cells_;
    std::vector<Slot> slots_;
    PromptSlots prompts_;
    std::vector<int32_t> group_request_; // group -> request index
    std::vector<size_t> prompt_done_;    // group -> prompt tokens decoded so far
    llama_batch batch_;
    std::unique_ptr<WorkPool> pool_;
    std::vector<int32_t> sampling_slots_;
    std::vector<const float *> sampling_logits_;
    std::vector<std::pair<llama_token, float>> sampled_;
};

} // namespace

RolloutStats RolloutEngine::run(const std::vector<RolloutRequest> & requests,
                                const std::function<void(RolloutResult &&)> & on_result,
                                const std::function<void(const RolloutStats &)> & on_progress,
                                const std::atomic<bool> * abort) {
    RolloutStats stats;
    const int32_t n_vocab = llama_vocab_n_tokens(model_->vocab());
    for (size_t i = 0; i < requests.size(); i++) {
        const RolloutRequest & r = requests[i];
        if (r.samples.empty()) continue;
        if (r.prompt.empty()) throw EngineError("invalid_argument", "request " + std::to_string(i) + " has an empty prompt");
        check_tokens(r.prompt.data(), r.prompt.size(), n_vocab, "request " + std::to_string(i));
        if (r.params.max_tokens < 0) throw EngineError("invalid_argument", "request " + std::to_string(i) + " has negative max tokens");
        stats.samples_total += static_cast<int64_t>(r.samples.size());
    }
    // Separate per-sequence caches make attention cheaper (a token attends to its own
    // sequence only) and copying a prompt is a buffer copy; a unified cache shares prompt
    // cells between samples at the cost of attention over everyone's cells.
    const uint32_t cells = std::max<uint32_t>(params_.n_ctx > 0 ? params_.n_ctx : required_cells(requests), 256);
    llama_context * ctx = begin_run(params_, cells, params_.kv_unified > 0);
    AbortSlot::Scope abort_scope(abort_, abort);
    RolloutRun(*model_, ctx, params_, requests, on_result, abort, stats).run(on_progress);
    return stats;
}

} // namespace still
