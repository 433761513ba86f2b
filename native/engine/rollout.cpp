#include "rollout.h"

#include <algorithm>
#include <cstring>
#include <deque>
#include <thread>

#include "kv_slots.h"
#include "log.h"
#include "work_pool.h"

namespace still {

const char * finish_reason_name(FinishReason r) {
    switch (r) {
        case FinishReason::stop: return "stop";
        case FinishReason::length: return "length";
        default: return "aborted";
    }
}

// --- adapters --------------------------------------------------------------------

std::shared_ptr<Adapter> Adapter::load(std::shared_ptr<Model> model, const std::string & path) {
    LogCapture capture;
    llama_adapter_lora * adapter = llama_adapter_lora_init(model->raw(), path.c_str());
    if (adapter == nullptr) {
        std::string reason = capture.summary();
        throw EngineError("load_failed", reason.empty() ? "llama.cpp could not load the adapter" : reason);
    }
    return std::shared_ptr<Adapter>(new Adapter(std::move(model), adapter));
}

Adapter::~Adapter() { llama_adapter_lora_free(adapter_); }

void apply_adapters(llama_context * ctx, const std::vector<std::pair<std::shared_ptr<Adapter>, float>> & adapters) {
    std::vector<llama_adapter_lora *> ptrs;
    std::vector<float> scales;
    for (const auto & a : adapters) {
        ptrs.push_back(a.first->raw());
        scales.push_back(a.second);
    }
    if (llama_set_adapters_lora(ctx, ptrs.data(), ptrs.size(), scales.data()) != 0)
        throw EngineError("invalid_argument", "llama.cpp refused the LoRA adapters for this model");
}

// --- engine ----------------------------------------------------------------------

namespace {
using Clock = std::chrono::steady_clock;

double ms_between(Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double, std::milli>(b - a).count();
}

struct RequestState {
    const RolloutRequest * req = nullptr;
    int32_t index = 0;
    llama_seq_id holder = -1; // the slot the prompt is decoded into
    size_t prompt_done = 0;   // prompt tokens decoded so far
    bool ready = false;       // prompt decoded, last logits saved
    std::vector<float> last_logits;
    size_t next_sample = 0;   // position in req->samples of the next sample to start
};

struct Slot {
    bool active = false;       // a sample is running here
    bool prefill = false;      // a prompt is being decoded here
    int32_t request = -1;      // the request whose prompt the slot's cache holds
    std::unique_ptr<Sampler> sampler;
    RolloutResult result;
    size_t stop_scan = 0;      // text before this offset holds no stop string
    llama_token pending = -1;  // sampled, to be decoded in the next batch
    llama_pos pos = 0;         // position of `pending`
    int32_t out_row = -1;      // this batch's output row for the slot
};
} // namespace

bool RolloutEngine::abort_callback(void * engine) {
    const auto * flag = static_cast<RolloutEngine *>(engine)->abort_;
    return flag != nullptr && flag->load(std::memory_order_relaxed);
}

RolloutEngine::RolloutEngine(std::shared_ptr<Model> model, const EngineParams & params) : model_(std::move(model)), params_(params) {
    const int32_t max_seq = static_cast<int32_t>(llama_max_parallel_sequences());
    if (params_.n_parallel < 1 || params_.n_parallel > max_seq / 2)
        throw EngineError("invalid_argument", "parallel must be between 1 and " + std::to_string(max_seq / 2));
    // Every sample needs a row in each batch.
    params_.n_batch = std::max(params_.n_batch, params_.n_parallel);
    if (params_.n_threads <= 0) params_.n_threads = std::max(1u, std::thread::hardware_concurrency());
    if (model_->params().vocab_only) throw EngineError("invalid_argument", "the model was loaded without weights (vocabOnly)");
}

RolloutEngine::~RolloutEngine() {
    if (ctx_ != nullptr) llama_free(ctx_);
}

void RolloutEngine::set_adapters(std::vector<std::pair<std::shared_ptr<Adapter>, float>> adapters) {
    adapters_ = std::move(adapters);
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

void RolloutEngine::ensure_context(uint32_t n_ctx, bool unified, int32_t n_seq_max) {
    if (ctx_ != nullptr && n_ctx <= ctx_cells_ && unified == ctx_unified_ && n_seq_max == ctx_seq_max_) return;
    if (ctx_ != nullptr) {
        llama_free(ctx_);
        ctx_ = nullptr;
    }
    LogCapture capture;
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = std::max<uint32_t>(n_ctx, 256);
    cp.n_batch = params_.n_batch;
    cp.n_ubatch = std::min(params_.n_ubatch, params_.n_batch);
    cp.n_seq_max = n_seq_max;
    cp.n_threads = params_.n_threads;
    cp.n_threads_batch = params_.n_threads;
    cp.kv_unified = unified;
    cp.flash_attn_type = static_cast<llama_flash_attn_type>(params_.flash_attn);
    cp.no_perf = true;
    cp.abort_callback = abort_callback;
    cp.abort_callback_data = this;
    ctx_ = llama_init_from_model(model_->raw(), cp);
    if (ctx_ == nullptr) {
        std::string reason = capture.summary();
        throw EngineError("context_failed", "could not create a context of " + std::to_string(cp.n_ctx) + " KV cells for " +
                                                std::to_string(n_seq_max) + " sequences" + (reason.empty() ? "" : ": " + reason));
    }
    ctx_cells_ = llama_n_ctx(ctx_);
    ctx_unified_ = unified;
    ctx_seq_max_ = n_seq_max;
}

RolloutStats RolloutEngine::run(const std::vector<RolloutRequest> & requests,
                                const std::function<void(RolloutResult &&)> & on_result,
                                const std::function<void(const RolloutStats &)> & on_progress,
                                const std::atomic<bool> * abort) {
    const Clock::time_point t0 = Clock::now();
    RolloutStats stats;
    const llama_vocab * vocab = model_->vocab();
    const int32_t n_vocab = llama_vocab_n_tokens(vocab);
    const int32_t n_parallel = params_.n_parallel;

    // --- check the requests and size the context ---
    for (size_t i = 0; i < requests.size(); i++) {
        const RolloutRequest & r = requests[i];
        if (r.samples.empty()) continue;
        if (r.prompt.empty()) throw EngineError("invalid_argument", "request " + std::to_string(i) + " has an empty prompt");
        for (llama_token t : r.prompt)
            if (t < 0 || t >= n_vocab)
                throw EngineError("invalid_argument", "request " + std::to_string(i) + " has token " + std::to_string(t) + " outside the vocabulary");
        if (r.params.max_tokens < 0) throw EngineError("invalid_argument", "request " + std::to_string(i) + " has negative max tokens");
        stats.samples_total += static_cast<int64_t>(r.samples.size());
    }
    // Separate per-sequence caches make attention cheaper (a token attends to its own
    // sequence only) and copying a prompt is a buffer copy; a unified cache shares prompt
    // cells between samples at the cost of attention over everyone's cells.
    const bool unified = params_.kv_unified > 0;
    const uint32_t needed = params_.n_ctx > 0 ? params_.n_ctx : required_cells(requests);
    ensure_context(needed, unified, n_parallel);
    AbortScope abort_scope(abort_, abort);
    apply_adapters(ctx_, adapters_);

    llama_memory_t mem = llama_get_memory(ctx_);
    llama_memory_clear(mem, true);
    const uint32_t seq_cells = unified ? ctx_cells_ : ctx_cells_ / static_cast<uint32_t>(n_parallel);

    std::vector<RequestState> states(requests.size());
    std::deque<int32_t> queue; // requests not yet started
    for (size_t i = 0; i < requests.size(); i++) {
        states[i].req = &requests[i];
        states[i].index = static_cast<int32_t>(i);
        if (requests[i].samples.empty()) continue;
        if (requests[i].prompt.size() + 1 > seq_cells)
            throw EngineError("invalid_argument", "request " + std::to_string(i) + "'s prompt (" + std::to_string(requests[i].prompt.size()) +
                                                      " tokens) does not fit the context (" + std::to_string(seq_cells) + " cells per sequence)");
        queue.push_back(static_cast<int32_t>(i));
    }
    std::vector<int32_t> started; // requests with a prompt decoded or decoding, oldest first, until all their samples started
    std::vector<Slot> slots(n_parallel);

    // llama.cpp caps a context's batch at its size.
    const int32_t n_batch = static_cast<int32_t>(llama_n_batch(ctx_));
    llama_batch batch = llama_batch_init(n_batch, 0, 1);
    struct BatchGuard {
        llama_batch & b;
        ~BatchGuard() { llama_batch_free(b); }
    } batch_guard{batch};

    auto since_start = [&] { return ms_between(t0, Clock::now()); };


    // --- a sample's life ---
    // Ends the sample in slot s; the slot's cache is cleared by whoever takes it next.
    auto finish = [&](int32_t s, FinishReason why) {
        Slot & slot = slots[s];
        slot.result.finish = why;
        slot.result.end_ms = since_start();
        // A length cut may end inside a UTF-8 sequence; JS strings cannot hold it.
        if (why != FinishReason::stop) {
            std::string & text = slot.result.text;
            size_t i = text.size(), cont = 0;
            while (i > 0 && cont < 4 && (static_cast<unsigned char>(text[i - 1]) & 0xC0) == 0x80) i--, cont++;
            if (i > 0) {
                const unsigned char lead = static_cast<unsigned char>(text[i - 1]);
                const size_t need = lead >= 0xF0 ? 3 : lead >= 0xE0 ? 2 : lead >= 0xC0 ? 1 : 0;
                if (need > cont) text.resize(i - 1);
            }
        }
        stats.samples_done++;
        on_result(std::move(slot.result));
        slot.result = RolloutResult();
        slot.sampler.reset();
        slot.active = false;
        slot.pending = -1;
    };

    // Takes a freshly sampled token; returns false when the sample has ended.
    auto accept = [&](int32_t s, llama_token token, float logprob) -> bool {
        Slot & slot = slots[s];
        RolloutResult & res = slot.result;
        const GenerationParams & gp = requests[res.request].params;
        if (res.tokens.empty()) res.first_token_ms = since_start();
        if (gp.stop_at_eog && llama_vocab_is_eog(vocab, token)) {
            res.stop = model_->detokenize({token}, false, true);
            finish(s, FinishReason::stop);
            return false;
        }
        res.tokens.push_back(token);
        res.logprobs.push_back(logprob);
        stats.generated_tokens++;
        char piece[256];
        int32_t n = llama_token_to_piece(vocab, token, piece, sizeof(piece), 0, false);
        if (n < 0) {
            std::string big(-n, '\0');
            n = llama_token_to_piece(vocab, token, big.data(), -n, 0, false);
            res.text.append(big.data(), std::max(0, n));
        } else {
            res.text.append(piece, n);
        }
        if (std::find(gp.stop_tokens.begin(), gp.stop_tokens.end(), token) != gp.stop_tokens.end()) {
            res.stop = model_->detokenize({token}, false, true);
            finish(s, FinishReason::stop);
            return false;
        }
        // Stop strings may span tokens (and split UTF-8): search the text from where a
        // match could still start.
        size_t longest = 0;
        for (const auto & st : gp.stop_strings) longest = std::max(longest, st.size());
        for (const auto & st : gp.keep_strings) longest = std::max(longest, st.size());
        if (longest > 0) {
            size_t best = std::string::npos;
            const std::string * which = nullptr;
            bool keep = false;
            auto scan = [&](const std::vector<std::string> & list, bool kept) {
                for (const auto & st : list) {
                    if (st.empty()) continue;
                    const size_t at = res.text.find(st, slot.stop_scan);
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
                res.stop = *which;
                res.text.resize(keep ? best + which->size() : best);
                finish(s, FinishReason::stop);
                return false;
            }
            slot.stop_scan = res.text.size() >= longest ? res.text.size() - longest + 1 : 0;
        }
        if (static_cast<int32_t>(res.tokens.size()) >= gp.max_tokens ||
            res.prompt_tokens + res.tokens.size() + 1 > seq_cells) {
            finish(s, FinishReason::length);
            return false;
        }
        slot.pending = token;
        slot.pos = static_cast<llama_pos>(res.prompt_tokens + res.tokens.size() - 1);
        return true;
    };

    // Starts the request's next sample in slot s, whose cache already holds the prompt:
    // its first token comes from the prompt's saved logits.
    auto start_sample = [&](RequestState & st, int32_t s) {
        const RolloutRequest & r = *st.req;
        const int32_t sample = r.samples[st.next_sample++];
        Slot & slot = slots[s];
        slot.active = true;
        slot.request = st.index;
        slot.stop_scan = 0;
        slot.result = RolloutResult();
        slot.result.request = st.index;
        slot.result.sample = sample;
        slot.result.prompt_tokens = static_cast<int32_t>(r.prompt.size());
        slot.result.start_ms = since_start();
        if (r.params.max_tokens == 0) {
            finish(s, FinishReason::length);
            return;
        }
        slot.sampler = std::make_unique<Sampler>(r.params.sampling, sample_seed(r.params.sampling.seed, sample), n_vocab);
        const Clock::time_point ts = Clock::now();
        float logprob = 0;
        const llama_token token = slot.sampler->sample(st.last_logits.data(), &logprob);
        const double dt = ms_between(ts, Clock::now());
        stats.generate_ms += dt;
        stats.sample_ms += dt;
        accept(s, token, logprob);
    };

    // The slot of a running sample of request i, to copy its prompt from; -1 if none.
    auto resident_slot = [&](int32_t i) {
        for (int32_t s = 0; s < n_parallel; s++)
            if (slots[s].request == i && (slots[s].active || s == states[i].holder)) return s;
        return -1;
    };

    std::unique_ptr<WorkPool> pool;
    if (params_.n_threads > 1 && n_parallel >= 4) pool = std::make_unique<WorkPool>(params_.n_threads - 1);
    std::vector<int32_t> sampling_slots;
    std::vector<const float *> sampling_logits;
    std::vector<std::pair<llama_token, float>> sampled;

    // --- the loop ---
    while (true) {
        if (abort != nullptr && abort->load()) break;

        // 1. Idle slots serve the oldest started request that still has samples to start
        //    (its prompt copied from a slot that holds it), else a new request's prompt.
        //    A slot whose sample just ended serves its own request first: its cache
        //    already holds the prompt.
        for (int32_t s = 0; s < n_parallel; s++) {
            Slot & slot = slots[s];
            if (slot.active || slot.prefill) continue;
            if (slot.request >= 0) {
                RequestState & own = states[slot.request];
                if (own.ready && own.next_sample < own.req->samples.size()) {
                    keep_prefix(mem, s, own.req->prompt.size());
                    start_sample(own, s);
                    continue;
                }
            }
            bool served = false;
            for (int32_t i : started) {
                RequestState & st = states[i];
                if (!st.ready || st.next_sample >= st.req->samples.size()) continue;
                const int32_t src = resident_slot(i);
                if (src < 0) continue;
                copy_prefix(mem, unified, src, s, st.req->prompt.size());
                slot.request = i;
                start_sample(st, s);
                served = true;
                break;
            }
            if (served) continue;
            if (!queue.empty()) {
                RequestState & st = states[queue.front()];
                queue.pop_front();
                llama_memory_seq_rm(mem, s, -1, -1);
                st.holder = s;
                slot.request = st.index;
                slot.prefill = true;
                started.push_back(st.index);
                continue;
            }
            if (slot.request >= 0) {
                llama_memory_seq_rm(mem, s, -1, -1);
                slot.request = -1;
            }
        }
        // Requests whose samples have all started need no saved logits any more.
        started.erase(std::remove_if(started.begin(), started.end(), [&](int32_t i) {
            RequestState & st = states[i];
            if (!st.ready || st.next_sample < st.req->samples.size()) return false;
            st.last_logits.clear();
            st.last_logits.shrink_to_fit();
            return true;
        }), started.end());

        // 2. Build the batch: one token per running sample, then prompt chunks.
        batch.n_tokens = 0;
        auto add = [&](llama_token t, llama_pos p, llama_seq_id seq, bool logits) {
            const int32_t i = batch.n_tokens++;
            batch.token[i] = t;
            batch.pos[i] = p;
            batch.n_seq_id[i] = 1;
            batch.seq_id[i][0] = seq;
            batch.logits[i] = logits;
            return i;
        };
        int32_t n_gen = 0;
        for (int32_t s = 0; s < n_parallel; s++) {
            Slot & slot = slots[s];
            slot.out_row = -1;
            if (!slot.active || slot.pending < 0) continue;
            slot.out_row = add(slot.pending, slot.pos, s, true);
            slot.pending = -1;
            n_gen++;
        }
        std::vector<std::pair<int32_t, int32_t>> prompt_rows; // (request, output row) for prompts completed by this batch
        int32_t n_prompt = 0;
        for (int32_t i : started) {
            RequestState & st = states[i];
            const auto & prompt = st.req->prompt;
            while (!st.ready && st.prompt_done < prompt.size() && batch.n_tokens < n_batch) {
                const size_t p = st.prompt_done++;
                const bool last = st.prompt_done == prompt.size();
                const int32_t row = add(prompt[p], static_cast<llama_pos>(p), st.holder, last);
                n_prompt++;
                if (last) prompt_rows.emplace_back(i, row);
            }
            if (batch.n_tokens >= n_batch) break;
        }
        if (batch.n_tokens == 0) break; // nothing running, nothing waiting

        // 3. Decode.
        const Clock::time_point td = Clock::now();
        const int32_t rc = llama_decode(ctx_, batch);
        if (rc == 2 || (abort != nullptr && abort->load())) break;
        if (rc != 0)
            throw EngineError("decode_failed", rc == 1 ? "the KV cache is full (" + std::to_string(ctx_cells_) + " cells); lower parallel or max tokens, or give a larger context"
                                                      : "llama_decode failed with code " + std::to_string(rc));
        const double dt = ms_between(td, Clock::now());
        stats.decodes++;
        stats.prompt_tokens += n_prompt;
        stats.prompt_ms += dt * n_prompt / (n_prompt + n_gen);
        stats.generate_ms += dt * n_gen / (n_prompt + n_gen);

        // 4. Prompts that completed: keep their last logits for every sample to start
        //    from; the slot that decoded the prompt starts the first sample, and idle
        //    slots take more of them at the next step.
        for (const auto & [i, row] : prompt_rows) {
            RequestState & st = states[i];
            const float * logits = llama_get_logits_ith(ctx_, row);
            st.last_logits.assign(logits, logits + n_vocab);
            st.ready = true;
            slots[st.holder].prefill = false;
            start_sample(st, st.holder);
        }

        // 5. Sample the next token of every running sample, spread over the CPU threads
        //    (each sampler reads only its own logits row), then take them in slot order.
        const Clock::time_point tsmp = Clock::now();
        sampling_slots.clear();
        for (int32_t s = 0; s < n_parallel; s++)
            if (slots[s].active && slots[s].out_row >= 0) sampling_slots.push_back(s);
        sampled.resize(sampling_slots.size());
        // llama_get_logits_ith synchronizes and may reorder the output rows: not for
        // worker threads. Take every row's address here first.
        sampling_logits.resize(sampling_slots.size());
        for (size_t i = 0; i < sampling_slots.size(); i++) sampling_logits[i] = llama_get_logits_ith(ctx_, slots[sampling_slots[i]].out_row);
        const std::function<void(int32_t)> sample_one = [&](int32_t i) {
            Slot & slot = slots[sampling_slots[i]];
            sampled[i].first = slot.sampler->sample(sampling_logits[i], &sampled[i].second);
        };
        if (pool != nullptr && sampling_slots.size() >= 4) pool->run(static_cast<int32_t>(sampling_slots.size()), sample_one);
        else for (size_t i = 0; i < sampling_slots.size(); i++) sample_one(static_cast<int32_t>(i));
        for (size_t i = 0; i < sampling_slots.size(); i++) accept(sampling_slots[i], sampled[i].first, sampled[i].second);
        const double sampling = ms_between(tsmp, Clock::now());
        stats.generate_ms += sampling;
        stats.sample_ms += sampling;
        stats.elapsed_ms = since_start();
        if (on_progress) on_progress(stats);
    }

    // Aborted: hand back what the unfinished samples had.
    for (int32_t s = 0; s < n_parallel; s++)
        if (slots[s].active) finish(s, FinishReason::aborted);
    stats.elapsed_ms = since_start();
    return stats;
}

} // namespace still
