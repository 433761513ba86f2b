#include "train.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "common.h"
#include "io.h"

namespace st {

static bool file_exists(const std::string & path) {
    FILE * f = fopen(path.c_str(), "rb");
    if (f) fclose(f);
    return f != nullptr;
}

static std::string fmt(double v) {
    char buf[40];
    snprintf(buf, sizeof(buf), "%.9g", v);
    return buf;
}

static std::string modules_string(const LoraConfig & lc) {
    std::string s;
    for (int m = 0; m < MOD_COUNT; m++) {
        if (!lc.modules[m]) continue;
        if (!s.empty()) s += ",";
        s += MODULE_NAMES[m];
    }
    return s;
}

// Learning rate before optimizer step `s` (0-based): linear warmup, then cosine decay.
static double lr_at(const TrainConfig & tc, int64_t s, int64_t total, int64_t warmup) {
    if (s < warmup) return tc.lr * (double) (s + 1) / (double) warmup;
    if (tc.constant_lr) return tc.lr;
    const double progress = (double) (s - warmup) / (double) std::max<int64_t>(1, total - warmup);
    return tc.min_lr + (tc.lr - tc.min_lr) * 0.5 * (1.0 + std::cos(M_PI * progress));
}

// The base model as a resumed run must find it again: architecture, name, shape, vocabulary.
static std::string model_signature(const BaseModel & m) {
    return m.hp.arch + "/" + m.hp.name + "/" + std::to_string(m.hp.n_layer) + "x" + std::to_string(m.hp.n_embd) + "/" + std::to_string(m.hp.n_vocab);
}

// The options a resumed run must share with the run that wrote the checkpoint.
static KeyValues run_identity(const Engine & e, const TrainConfig & tc, const Dataset & d, int64_t total, uint64_t init_fp) {
    const EngineOptions & eo = e.options();
    KeyValues kv = {
        {"task", task_name(tc.task)},
        {"model", model_signature(e.model())},
        {"data", std::to_string(d.fingerprint)},
        {"mode", eo.full ? "full" : "lora"},
        {"epochs", std::to_string(tc.epochs)},
        {"ctx", std::to_string(tc.ctx)},
        {"grad_accum", std::to_string(tc.grad_accum)},
        {"steps", std::to_string(total)},
        {"seed", std::to_string(tc.seed)},
        {"lr", fmt(tc.lr)},
        {"min_lr", fmt(tc.min_lr)},
        {"schedule", tc.constant_lr ? "constant" : "cosine"},
        {"warmup", tc.warmup_steps >= 0 ? std::to_string(tc.warmup_steps) : "ratio " + fmt(tc.warmup_ratio)},
        {"weight_decay", fmt(tc.weight_decay)},
        {"adam", fmt(tc.beta1) + "," + fmt(tc.beta2) + "," + fmt(tc.eps)},
        {"max_grad_norm", fmt(tc.max_grad_norm)},
    };
    if (!eo.full) {
        kv.push_back({"lora", "r=" + std::to_string(eo.lora.rank) + " alpha=" + fmt(eo.lora.alpha) + " modules=" + modules_string(eo.lora)});
        kv.push_back({"init", eo.init_adapter.empty() ? "seed " + std::to_string(eo.seed) : "adapter " + std::to_string(init_fp)});
    }
    if (tc.task == Task::DPO) {
        kv.push_back({"beta", fmt(tc.dpo.beta)});
        kv.push_back({"sft_alpha", fmt(tc.dpo.sft_alpha)});
        kv.push_back({"loss", dpo_loss_name(tc.dpo.loss)});
    }
    return kv;
}

// Reference log-probabilities of every pair under the initial parameters: one forward
// pass over the pairs, packed as in the first epoch. lp = −Σ weight · NLL.
static bool compute_refs(Engine & e, const Dataset & d, int64_t ctx, std::vector<double> & chosen, std::vector<double> & rejected) {
    chosen.assign(d.items.size(), 0.0);
    rejected.assign(d.items.size(), 0.0);
    const std::vector<Step> plan = make_plan(d, 1, ctx, 1, 0);
    LossSpec spec;  // SFT-shaped: only the per-term sums are read
    for (const Step & s : plan) {
        for (const Row & r : s.rows) {
            const Batch b = make_batch(d, r);
            BatchResult res;
            if (!e.eval(b, spec, false, res)) return false;
            for (const Batch::Pair & p : b.pairs) {
                chosen[(size_t) p.item] = -res.term_nll[(size_t) p.chosen];
                rejected[(size_t) p.item] = -res.term_nll[(size_t) p.rejected];
            }
        }
    }
    return true;
}

// The batches of one optimizer step and the loss spec that weighs them: SFT averages over
// the step's loss weight, DPO over its pairs.
static std::vector<Batch> step_batches(const Dataset & d, const Step & s, Task task, const DpoConfig & dpo,
                                       const std::vector<double> & ref_c, const std::vector<double> & ref_r, LossSpec & spec) {
    std::vector<Batch> batches;
    batches.reserve(s.rows.size());
    double weight = 0;
    int64_t pairs = 0;
    for (const Row & r : s.rows) {
        batches.push_back(make_batch(d, r));
        for (const Batch::Term & t : batches.back().terms) weight += t.weight_sum;
        pairs += (int64_t) batches.back().pairs.size();
    }
    spec.task = task;
    spec.dpo = dpo;
    spec.ref_chosen = &ref_c;
    spec.ref_rejected = &ref_r;
    spec.scale = task == Task::SFT ? (weight > 0 ? 1.0 / weight : 0.0) : 1.0 / (double) std::max<int64_t>(1, pairs);
    return batches;
}

static int64_t longest_row(const std::vector<Step> & plan) {
    int64_t longest = 0;
    for (const Step & s : plan)
        for (const Row & r : s.rows) longest = std::max(longest, r.tokens);
    return longest;
}

// Rows up to this long take the one-graph step in auto mode (measured on the qwen2.5-0.5b
// shape on a CPU: one graph 14% faster at 1,024 tokens, even at 2,048, 3× slower at 8,192 on tiny).
static const int64_t ONE_GRAPH_MAX_TOKENS = 2048;

static double gb(size_t bytes) {
    return (double) bytes / 1e9;
}

bool context_fits(const Engine & e, int64_t ctx) {
    const int64_t n_ctx = e.model().hp.n_ctx_train;
    if (n_ctx > 0 && ctx > n_ctx) {
        fprintf(stderr, "context_fits: error: --ctx %lld is longer than the model's context (%lld tokens); lower --ctx\n",
                (long long) ctx, (long long) n_ctx);
        return false;
    }
    return true;
}

// The one-graph step when asked or, in auto mode, when it fits; the chunked step otherwise.
bool plan_memory(Engine & e, int64_t tokens, Recompute mode, size_t budget, bool per_row) {
    const size_t avail = budget > 0 ? budget : e.free_memory();
    const size_t room = (size_t) ((double) avail * 0.9);
    const Engine::StepMemory whole = e.step_memory(tokens, false, per_row);
    const Engine::StepMemory chunked = e.step_memory(tokens, true, per_row);
    const bool whole_fits = whole.total() <= room, chunked_fits = chunked.total() <= room;
    // auto: one graph for short rows when it fits; beyond ONE_GRAPH_MAX_TOKENS the chunked step
    // is faster too (the one graph's rows² attention tensors cost more than the recomputation)
    const bool recompute = mode == Recompute::ON || (mode == Recompute::AUTO && (!whole_fits || tokens > ONE_GRAPH_MAX_TOKENS));
    const Engine::StepMemory & chosen = recompute ? chunked : whole;
    const size_t rss = current_rss_bytes();
    JsonLine().str("type", "plan").integer("tokens", tokens).boolean("recompute", recompute)
        .num("estimated_peak_mb", (double) (rss + chosen.total()) / 1048576.0).num("step_mb", (double) chosen.total() / 1048576.0)
        .num("activations_mb", (double) chosen.activations / 1048576.0).num("compute_mb", (double) chosen.compute / 1048576.0)
        .num("one_graph_mb", (double) whole.total() / 1048576.0).num("chunked_mb", (double) chunked.total() / 1048576.0)
        .num("available_mb", (double) avail / 1048576.0).print();
    if (recompute ? chunked_fits : whole_fits) {
        e.set_recompute(recompute);
        return true;
    }
    // the longest rows (in whole vector blocks) that the best allowed way fits
    const bool best = mode != Recompute::OFF;
    int64_t lo = 0, hi = tokens / 16;
    while (lo < hi) {
        const int64_t mid = (lo + hi + 1) / 2;
        if (mid > 0 && e.step_memory(mid * 16, best, per_row).total() <= room) lo = mid;
        else hi = mid - 1;
    }
    fprintf(stderr, "plan_memory: error: training rows of %lld tokens needs about %.1f GB more memory (%.1f GB kept between graphs, %.1f GB for "
            "the largest graph, %s) but %.1f GB are free; ",
            (long long) tokens, gb(chosen.total()), gb(chosen.activations), gb(chosen.compute + chosen.host),
            recompute ? "chunked with recomputation" : "in one graph", gb(avail));
    if (lo > 0) fprintf(stderr, "the longest rows that fit are %lld tokens (--ctx %lld)%s\n", (long long) (lo * 16), (long long) (lo * 16),
                        !best && chunked_fits ? ", or train with --recompute on" : "");
    else fprintf(stderr, "no row length fits; free memory or use a smaller model\n");
    return false;
}

namespace {

// One still-train run: set-up (data, plan, reference log-probs, resume), then steps, each
// logged, checkpointed and stoppable, then the adapter (or full model).
class TrainRun {
public:
    TrainRun(const TrainConfig & tc, const std::atomic<bool> & stop) : tc_(tc), stop_(stop) {}

    int run(const EngineOptions & eo) {
        t_start_ = now_seconds();
        e_.set_abort_flag(&stop_);
        if (!e_.init(eo) || !context_fits(e_, tc_.ctx) || !read_data() || !make_schedule()) return EXIT_ERROR;
        if (!plan_memory(e_, longest_row(plan_), tc_.recompute, tc_.memory_budget)) return EXIT_ERROR;
        if (tc_.plan_only) return EXIT_OK;
        uint64_t init_fp = 0;
        if (!e_.options().init_adapter.empty() && !file_fingerprint(e_.options().init_adapter, init_fp)) {
            fprintf(stderr, "run_train: error: cannot read %s\n", e_.options().init_adapter.c_str());
            return EXIT_ERROR;
        }
        identity_ = run_identity(e_, tc_, d_, total_, init_fp);
        ckpt_ = tc_.checkpoint.empty() ? tc_.out + ".ckpt.gguf" : tc_.checkpoint;
        // DPO: reference log-probs, with the initial parameters (before any checkpoint is loaded)
        if (tc_.task == Task::DPO) {
            const int rc = reference_logps(init_fp);
            if (rc != EXIT_OK) return rc;
        }
        if (!resume()) return EXIT_ERROR;
        announce();
        t_loop_ = now_seconds();
        win_.t0 = t_loop_;
        for (int64_t step = cs_.step; step < total_; step++) {
            const int rc = train_step(step);
            if (rc != EXIT_OK) return rc;
        }
        return finish();
    }

private:
    bool read_data() {
        if (!read_dataset(tc_.data, e_.model().hp.n_vocab, tc_.ctx, d_)) return false;
        if (d_.task != tc_.task) {
            fprintf(stderr, "run_train: error: %s holds %s records, but this is a %s run%s\n", tc_.data.c_str(), task_name(d_.task),
                    task_name(tc_.task), d_.task == Task::POLICY ? " (policy samples train through still-train serve)" : "");
            return false;
        }
        int64_t weighted = 0;
        for (const Item & it : d_.items) {
            epoch_tokens_ += it.length();
            for (float w : it.a.weights) weighted += w > 0;
            for (float w : it.b.weights) weighted += w > 0;
        }
        if (weighted == 0) {
            fprintf(stderr, "run_train: error: %s has no token with a loss weight above 0; nothing to train on\n", tc_.data.c_str());
            return false;
        }
        return true;
    }

    // Every step of every epoch, rebuilt identically on resume; warmup; fractional epochs for the progress lines.
    bool make_schedule() {
        plan_ = make_plan(d_, tc_.epochs, tc_.ctx, tc_.grad_accum, tc_.seed);
        total_ = tc_.max_steps > 0 ? std::min<int64_t>(tc_.max_steps, (int64_t) plan_.size()) : (int64_t) plan_.size();
        warmup_ = std::min<int64_t>(total_, tc_.warmup_steps >= 0 ? tc_.warmup_steps : (int64_t) std::llround(tc_.warmup_ratio * total_));
        epoch_first_.assign(tc_.epochs + 1, total_);
        epoch_steps_.assign(tc_.epochs, 0);
        for (int64_t i = (int64_t) plan_.size() - 1; i >= 0; i--) {
            epoch_first_[plan_[i].epoch] = std::min<int64_t>(epoch_first_[plan_[i].epoch], i);
            epoch_steps_[plan_[i].epoch]++;
        }
        return true;
    }

    int reference_logps(uint64_t init_fp) {
        const std::string ref_path = tc_.ref_logps.empty() ? ckpt_ + ".ref" : tc_.ref_logps;
        const std::string model = model_signature(e_.model());
        uint64_t ref_fp = fnv1a64(&d_.fingerprint, sizeof(d_.fingerprint));
        ref_fp = fnv1a64(&init_fp, sizeof(init_fp), ref_fp);
        ref_fp = fnv1a64(model.data(), model.size(), ref_fp);
        const EngineOptions & eo = e_.options();
        if (eo.init_adapter.empty() && !eo.full) ref_fp = fnv1a64(&eo.seed, sizeof(eo.seed), ref_fp);
        bool missing = false;
        const double t0 = now_seconds();
        if (read_ref_logps(ref_path, ref_fp, d_.items.size(), ref_c_, ref_r_, &missing)) {
            JsonLine().str("type", "reference").integer("pairs", (int64_t) d_.items.size()).boolean("cached", true).str("path", ref_path).print();
            return EXIT_OK;
        }
        if (!missing) return EXIT_ERROR;
        if (!compute_refs(e_, d_, tc_.ctx, ref_c_, ref_r_)) {
            if (!e_.aborted()) return EXIT_ERROR;
            JsonLine().str("type", "stopped").integer("step", 0).str("checkpoint", "").print();
            return EXIT_STOPPED;
        }
        if (!write_ref_logps(ref_path, ref_fp, ref_c_, ref_r_)) return EXIT_ERROR;
        JsonLine().str("type", "reference").integer("pairs", (int64_t) d_.items.size()).boolean("cached", false)
            .str("path", ref_path).num("seconds", now_seconds() - t0).print();
        return EXIT_OK;
    }

    bool resume() {
        cs_.steps = total_;
        cs_.config = identity_;
        if (tc_.resume && file_exists(ckpt_)) {
            if (!read_checkpoint(e_, ckpt_, identity_, cs_)) return false;
            resumed_ = true;
        }
        elapsed_before_ = cs_.elapsed;
        tokens_before_ = cs_.tokens;
        start_step_ = cs_.step;
        return true;
    }

    void announce() const {
        const EngineOptions & eo = e_.options();
        JsonLine().str("type", "start")
            .str("task", task_name(tc_.task))
            .str("mode", eo.full ? "full" : "lora")
            .str("architecture", e_.model().hp.arch)
            .integer("layers", e_.model().hp.n_layer)
            .integer("trainable_params", e_.trainable_count())
            .integer("rank", eo.full ? 0 : eo.lora.rank)
            .num("alpha", eo.full ? 0 : eo.lora.alpha)
            .str("modules", eo.full ? "all" : modules_string(eo.lora))
            .integer(tc_.task == Task::SFT ? "examples" : "pairs", (int64_t) d_.items.size())
            .integer("tokens_per_epoch", epoch_tokens_)
            .integer("epochs", tc_.epochs)
            .integer("steps", total_)
            .integer("warmup_steps", warmup_)
            .integer("step", start_step_)
            .boolean("resumed", resumed_)
            .str("checkpoint", ckpt_)
            .print();
    }

    // One optimizer step: every row's gradients, clipping, AdamW; then the progress line
    // and checkpoints. Stopped in the middle, the step's gradients are dropped and the
    // checkpoint holds the parameters after the last whole step.
    int train_step(int64_t step) {
        const Step & s = plan_[(size_t) step];
        LossSpec spec;
        const std::vector<Batch> batches = step_batches(d_, s, tc_.task, tc_.dpo, ref_c_, ref_r_, spec);
        double step_loss = 0;
        bool failed = false;
        for (const Batch & b : batches) {
            BatchResult res;
            if (!e_.eval(b, spec, true, res)) {
                failed = true;
                break;
            }
            step_loss += res.loss;
            tokens_here_ += b.real_tokens;
            win_.tokens += b.real_tokens;
            if (tc_.task == Task::DPO) add_rewards(b, res);
            if (stop_.load()) break;
        }
        if (failed && !e_.aborted()) return EXIT_ERROR;
        if (failed || stop_.load()) {
            e_.zero_grads();
            return stopped(step);
        }

        double gnorm = 0;
        if (!e_.grad_norm(gnorm)) return EXIT_ERROR;
        if (!std::isfinite(gnorm) || !std::isfinite(step_loss)) {
            fprintf(stderr, "run_train: error: the loss or the gradient is not finite at step %lld (loss %g, gradient norm %g); "
                    "lower the learning rate\n", (long long) step + 1, step_loss, gnorm);
            return EXIT_ERROR;
        }
        const float clip = tc_.max_grad_norm > 0 && gnorm > tc_.max_grad_norm ? (float) (tc_.max_grad_norm / gnorm) : 1.0f;
        const double lr = lr_at(tc_, step, total_, warmup_);
        Engine::Adam adam = {(float) lr, tc_.beta1, tc_.beta2, tc_.eps, tc_.weight_decay, step + 1};
        if (!e_.opt_step(adam, clip)) return EXIT_ERROR;

        win_.steps++;
        win_.loss += step_loss;
        win_.grad_norm += gnorm;
        const int64_t done = step + 1;
        if (done % tc_.log_every == 0 || done == total_) log_step(s, done, lr);
        if (tc_.save_every > 0 && done % tc_.save_every == 0 && done < total_ && !save(done)) return EXIT_ERROR;
        if (stop_.load()) return stopped(done);
        return EXIT_OK;
    }

    // DPO metrics of one batch, for the averaged progress line.
    void add_rewards(const Batch & b, const BatchResult & res) {
        for (const Batch::Pair & p : b.pairs) {
            const double lpc = -res.term_nll[(size_t) p.chosen], lpr = -res.term_nll[(size_t) p.rejected];
            const double rc = tc_.dpo.beta * (lpc - ref_c_[(size_t) p.item]), rr = tc_.dpo.beta * (lpr - ref_r_[(size_t) p.item]);
            win_.rc += rc;
            win_.rr += rr;
            win_.acc += rc > rr ? 1.0 : 0.0;
            win_.lpc += lpc;
            win_.lpr += lpr;
            win_.nll += res.term_nll[(size_t) p.sft] / std::max(1e-12, b.terms[(size_t) p.sft].weight_sum);
            win_.pairs++;
        }
    }

    void log_step(const Step & s, int64_t done, double lr) {
        const double now = now_seconds();
        const double elapsed_here = now - t_loop_;
        const double per_step = elapsed_here / (double) (done - start_step_);
        JsonLine j;
        j.str("type", "step")
            .integer("step", done)
            .integer("steps", total_)
            .num("epoch", (double) s.epoch + (double) (done - epoch_first_[s.epoch]) / (double) epoch_steps_[s.epoch])
            .num("loss", win_.loss / win_.steps)
            .num("learning_rate", lr)
            .num("grad_norm", win_.grad_norm / win_.steps)
            .integer("tokens", win_.tokens)
            .num("tokens_per_s", win_.tokens / std::max(1e-9, now - win_.t0))
            .num("elapsed", elapsed_before_ + elapsed_here)
            .num("eta", per_step * (double) (total_ - done));
        if (tc_.task == Task::DPO && win_.pairs > 0) {
            const double n = (double) win_.pairs;
            j.num("rewards/chosen", win_.rc / n)
                .num("rewards/rejected", win_.rr / n)
                .num("rewards/margins", (win_.rc - win_.rr) / n)
                .num("rewards/accuracies", win_.acc / n)
                .num("logps/chosen", win_.lpc / n)
                .num("logps/rejected", win_.lpr / n)
                .num("nll", win_.nll / n);
        }
        j.print();
        win_ = Window();
        win_.t0 = now_seconds();
    }

    bool save(int64_t at) {
        cs_.step = at;
        cs_.elapsed = elapsed_before_ + (now_seconds() - t_loop_);
        cs_.tokens = tokens_before_ + tokens_here_;
        if (!write_checkpoint(e_, ckpt_, cs_)) return false;
        JsonLine().str("type", "checkpoint").integer("step", at).str("path", ckpt_).print();
        return true;
    }

    int stopped(int64_t at) {
        if (!save(at)) return EXIT_ERROR;
        JsonLine().str("type", "stopped").integer("step", at).str("checkpoint", ckpt_).print();
        return EXIT_STOPPED;
    }

    // The result, then a final checkpoint so that a resume of a finished run only rewrites it.
    int finish() {
        KeyValues info = {{"task", task_name(tc_.task)}, {"steps", std::to_string(total_)}};
        const bool ok = e_.options().full ? write_full_model(e_, tc_.out, info) : write_adapter(e_, tc_.out, info);
        if (!ok || !save(total_)) return EXIT_ERROR;
        JsonLine().str("type", "done")
            .integer("step", total_)
            .str("out", tc_.out)
            .num("seconds", now_seconds() - t_start_)
            .integer("tokens", cs_.tokens)
            .num("peak_rss_mb", peak_rss_mb())
            .print();
        return EXIT_OK;
    }

    const TrainConfig & tc_;
    const std::atomic<bool> & stop_;
    Engine e_;
    Dataset d_;
    std::vector<Step> plan_;
    int64_t total_ = 0, warmup_ = 0, epoch_tokens_ = 0;
    std::vector<int64_t> epoch_first_, epoch_steps_;
    KeyValues identity_;
    std::string ckpt_;
    std::vector<double> ref_c_, ref_r_;
    CheckpointState cs_;
    bool resumed_ = false;
    int64_t start_step_ = 0, tokens_before_ = 0, tokens_here_ = 0;
    double t_start_ = 0, t_loop_ = 0, elapsed_before_ = 0;
    // a window of steps whose metrics one progress line averages
    struct Window {
        int64_t steps = 0, tokens = 0, pairs = 0;
        double loss = 0, grad_norm = 0, rc = 0, rr = 0, acc = 0, lpc = 0, lpr = 0, nll = 0;
        double t0 = 0;
    } win_;
};

} // namespace

int run_train(const EngineOptions & eo, const TrainConfig & tc, const std::atomic<bool> & stop) {
    return TrainRun(tc, stop).run(eo);
}

// --- gradient check ------------------------------------------------------------------------

// Every trainable's gradient, F32, one after the other in trainable order (for comparing two
// ways of computing them).
static bool dump_gradients(Engine & e, const std::string & path) {
    FILE * f = fopen(path.c_str(), "wb");
    if (!f) {
        fprintf(stderr, "dump_gradients: error: cannot create %s\n", path.c_str());
        return false;
    }
    bool ok = true;
    std::vector<float> grad;
    for (const Trainable & t : e.trainables()) {
        ok = ok && e.get(t.grad, grad) && fwrite(grad.data(), sizeof(float), grad.size(), f) == grad.size();
    }
    ok = (fclose(f) == 0) && ok;
    if (!ok) fprintf(stderr, "dump_gradients: error: could not write %s\n", path.c_str());
    return ok;
}

int run_grad_check(const EngineOptions & eo, const GradCheckConfig & gc) {
    Engine e;
    if (!e.init(eo)) return EXIT_ERROR;
    e.set_recompute(gc.recompute == Recompute::ON);
    Dataset d;
    if (!read_dataset(gc.data, e.model().hp.n_vocab, gc.ctx, d)) return EXIT_ERROR;

    std::vector<double> ref_c, ref_r;
    if (d.task == Task::DPO) {
        if (!compute_refs(e, d, gc.ctx, ref_c, ref_r)) return EXIT_ERROR;
        for (double & r : ref_c) r += gc.ref_shift;
    }
    // the whole file as one step
    const std::vector<Step> plan = make_plan(d, 1, gc.ctx, 1 << 30, 0);
    LossSpec spec;
    const std::vector<Batch> batches = step_batches(d, plan[0], d.task, gc.dpo, ref_c, ref_r, spec);

    // policy samples: advantages from the file; old and reference log-probs moved off the
    // current ones by up to ref_shift per token (0: the old policy is the current one)
    std::vector<int64_t> items(d.items.size());
    for (size_t i = 0; i < items.size(); i++) items[i] = (int64_t) i;
    std::vector<double> adv;
    TokenValues old, ref;
    PolicyPass pp_loss, pp_grad;
    if (d.task == Task::POLICY) {
        if (!check_policy_config(gc.policy)) return EXIT_ERROR;
        std::vector<float> rewards;
        std::vector<uint32_t> groups;
        for (const Item & it : d.items) {
            rewards.push_back(it.reward);
            groups.push_back(it.group);
        }
        std::string error;
        if (!policy_advantages(gc.policy, rewards, groups, adv, error)) {
            fprintf(stderr, "run_grad_check: error: %s: %s\n", gc.data.c_str(), error.c_str());
            return EXIT_ERROR;
        }
        TokenValues lp;
        if (!policy_logps(e, d, items, gc.ctx, gc.policy.temperature, lp, nullptr)) return EXIT_ERROR;
        Rng shift(0x01d);
        old = ref = lp;
        for (size_t i = 0; i < lp.size(); i++) {
            for (size_t t = 0; t < lp[i].size(); t++) {
                old[i][t] = (float) std::min(0.0, lp[i][t] + gc.ref_shift * (2 * shift.uniform() - 1));
                ref[i][t] = (float) std::min(0.0, lp[i][t] + gc.ref_shift * (2 * shift.uniform() - 1));
            }
        }
        // with no shift the gradient pass takes the one-pass way (the old policy is the current
        // one: ratio 1 by construction) while the loss holds the old log-probs fixed at the start
        pp_loss = {&gc.policy, &adv, &old, &ref, false};
        pp_grad = {&gc.policy, &adv, gc.ref_shift != 0 ? &old : nullptr, &ref, false};
    }

    auto total_loss = [&](bool backward, double & out) {
        if (d.task == Task::POLICY) {
            PolicyStats stats;
            double entropy = 0;
            return backward ? policy_gradient(e, d, items, gc.ctx, pp_grad, stats, entropy, out) : policy_objective(e, d, items, gc.ctx, pp_loss, out);
        }
        out = 0;
        for (const Batch & b : batches) {
            BatchResult res;
            if (!e.eval(b, spec, backward, res)) return false;
            out += res.loss;
        }
        return true;
    };

    e.zero_grads();
    double loss0 = 0;
    if (!total_loss(true, loss0)) return EXIT_ERROR;
    if (!gc.dump_grads.empty() && !dump_gradients(e, gc.dump_grads)) return EXIT_ERROR;

    // Per tensor, the directional derivative along two unit directions u, against g·u:
    // the gradient's own direction (the strongest signal: |g| when g is right) and that
    // direction mixed with a random one. Single entries are too weak a signal on a small
    // model with an F32 loss, so they are reported (largest gradients first) but the
    // directions are the check.
    Rng rng(0x5eed);
    double worst = 0;
    std::string worst_tensor;
    int64_t checked = 0;
    std::vector<float> grad, param, base;
    auto loss_at = [&](Trainable & t, const std::vector<double> & u, double h, double & out) {
        param = base;
        for (size_t i = 0; i < param.size(); i++) param[i] = (float) (base[i] + h * u[i]);
        e.set(t.param, param);
        return total_loss(false, out);
    };
    // The step is sized so that the loss moves by about gc.step of its value: large enough
    // to stand above the F32 rounding of the loss, small enough to keep the curvature out;
    // Richardson extrapolation over h and h/2 cancels the h² term of the central difference.
    auto directional = [&](Trainable & t, const std::vector<double> & u, double analytic, double & numeric) {
        const double target = gc.step * std::max(std::fabs(loss0), 1e-3);
        const double h = std::min(1.0, std::max(1e-5, target / std::max(std::fabs(analytic), 1e-12)));
        double d[2];
        for (int k = 0; k < 2; k++) {
            const double hk = k == 0 ? h : h / 2;
            double lp = 0, lm = 0;
            if (!loss_at(t, u, hk, lp) || !loss_at(t, u, -hk, lm)) return false;
            d[k] = (lp - lm) / (2.0 * hk);
        }
        numeric = (4.0 * d[1] - d[0]) / 3.0;
        return true;
    };
    auto rel_error = [](double numeric, double analytic) {
        const double denom = std::max(std::fabs(numeric), std::fabs(analytic));
        return denom > 0 ? std::fabs(numeric - analytic) / denom : 0.0;
    };
    for (Trainable & t : e.trainables()) {
        if (!e.get(t.grad, grad) || !e.get(t.param, base)) {
            fprintf(stderr, "run_grad_check: error: cannot read %s\n", t.name.c_str());
            return EXIT_ERROR;
        }
        const size_t n = grad.size();
        double gnorm = 0;
        for (float g : grad) gnorm += (double) g * g;
        gnorm = std::sqrt(gnorm);
        if (!gc.finite_differences) {
            JsonLine().str("type", "grad").str("tensor", t.name).num("grad_norm", gnorm).num("rel_error", 0)
                .num("rel_error_gradient_direction", 0).num("rel_error_mixed_direction", 0).integer("entries", 0).num("rel_error_entries", 0).print();
            continue;
        }
        std::vector<double> dirs[2];
        dirs[0].resize(n);
        dirs[1].resize(n);
        double rnorm = 0;
        for (size_t i = 0; i < n; i++) {
            dirs[0][i] = gnorm > 0 ? grad[i] / gnorm : 0.0;
            dirs[1][i] = rng.uniform() * 2 - 1;
            rnorm += dirs[1][i] * dirs[1][i];
        }
        double mnorm = 0;
        for (size_t i = 0; i < n; i++) {
            dirs[1][i] = dirs[0][i] + dirs[1][i] / std::sqrt(rnorm);
            mnorm += dirs[1][i] * dirs[1][i];
        }
        for (size_t i = 0; i < n; i++) dirs[1][i] /= std::sqrt(mnorm);

        double rel[2] = {0, 0};
        for (int k = 0; k < 2; k++) {
            double analytic = 0, numeric = 0;
            for (size_t i = 0; i < n; i++) analytic += grad[i] * dirs[k][i];
            if (!directional(t, dirs[k], analytic, numeric)) return EXIT_ERROR;
            rel[k] = rel_error(numeric, analytic);
            checked++;
        }

        // single entries with the largest gradients
        std::vector<int64_t> idx(n);
        for (size_t i = 0; i < n; i++) idx[i] = (int64_t) i;
        const int64_t k = std::min<int64_t>(gc.entries, (int64_t) n);
        std::partial_sort(idx.begin(), idx.begin() + k, idx.end(),
                          [&](int64_t a, int64_t b) { return std::fabs(grad[a]) > std::fabs(grad[b]); });
        double entry_worst = 0;
        std::vector<double> unit(n, 0.0);
        for (int64_t j = 0; j < k; j++) {
            const int64_t i = idx[j];
            unit[i] = 1.0;
            double numeric = 0;
            if (!directional(t, unit, grad[i], numeric)) return EXIT_ERROR;
            unit[i] = 0.0;
            entry_worst = std::max(entry_worst, rel_error(numeric, grad[i]));
        }
        e.set(t.param, base);

        JsonLine().str("type", "grad").str("tensor", t.name).num("grad_norm", gnorm)
            .num("rel_error", std::max(rel[0], rel[1])).num("rel_error_gradient_direction", rel[0]).num("rel_error_mixed_direction", rel[1])
            .integer("entries", k).num("rel_error_entries", entry_worst).print();
        const double r = std::max(rel[0], rel[1]);
        if (r >= worst) {
            worst = r;
            worst_tensor = t.name;
        }
    }
    JsonLine().str("type", "grad_check").num("loss", loss0).integer("tensors", (int64_t) e.trainables().size())
        .integer("entries", checked).num("worst_rel_error", worst).str("worst_tensor", worst_tensor)
        .integer("f32_products", e.f32_products()).integer("q8_products", e.q8_products()).print();
    return EXIT_OK;
}

// --- logits ---------------------------------------------------------------------------------

int run_logits(const EngineOptions & eo, const std::vector<int32_t> & tokens, const std::string & out) {
    Engine e;
    if (!e.init(eo)) return EXIT_ERROR;
    std::vector<float> logits;
    if (!e.logits(tokens, logits)) return EXIT_ERROR;
    FILE * f = fopen(out.c_str(), "wb");
    if (!f) {
        fprintf(stderr, "run_logits: error: cannot create %s\n", out.c_str());
        return EXIT_ERROR;
    }
    const bool ok = fwrite(logits.data(), sizeof(float), logits.size(), f) == logits.size();
    if (fclose(f) != 0 || !ok) {
        fprintf(stderr, "run_logits: error: could not write %s\n", out.c_str());
        return EXIT_ERROR;
    }
    JsonLine().str("type", "logits").integer("tokens", (int64_t) tokens.size()).integer("vocab", e.model().hp.n_vocab).str("out", out).print();
    return EXIT_OK;
}

} // namespace st
