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

static const char * loss_name(DpoLoss l) {
    return l == DpoLoss::SIGMOID ? "sigmoid" : l == DpoLoss::IPO ? "ipo" : "hinge";
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

// The options a resumed run must share with the run that wrote the checkpoint.
static KeyValues run_identity(const Engine & e, const TrainConfig & tc, const Dataset & d, int64_t total, uint64_t init_fp) {
    const EngineOptions & eo = e.options();
    const BaseModel & m = e.model();
    KeyValues kv = {
        {"task", tc.task == Task::SFT ? "sft" : "dpo"},
        {"model", m.hp.arch + "/" + m.hp.name + "/" + std::to_string(m.hp.n_layer) + "x" + std::to_string(m.hp.n_embd) +
                  "/" + std::to_string(m.hp.n_vocab)},
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
        kv.push_back({"beta", fmt(tc.beta)});
        kv.push_back({"sft_alpha", fmt(tc.sft_alpha)});
        kv.push_back({"loss", loss_name(tc.dpo_loss)});
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
    spec.task = Task::SFT;
    for (const Step & s : plan) {
        for (const Row & r : s.rows) {
            const Batch b = make_batch(d, r);
            BatchResult res;
            if (!e.eval(b, spec, false, res)) return false;
            for (const Batch::Pair & p : b.pairs) {
                chosen[p.item] = -res.term_nll[p.chosen];
                rejected[p.item] = -res.term_nll[p.rejected];
            }
        }
    }
    return true;
}

int run_train(const EngineOptions & eo_in, const TrainConfig & tc, const std::atomic<bool> & stop) {
    const double t_start = now_seconds();
    Engine e;
    e.set_abort_flag(&stop);
    if (!e.init(eo_in)) return EXIT_ERROR;
    const EngineOptions & eo = e.options();

    Dataset d;
    if (!read_dataset(tc.data, e.model().hp.n_vocab, tc.ctx, d)) return EXIT_ERROR;
    if (d.task != tc.task) {
        fprintf(stderr, "run_train: error: %s holds %s records, but this is a %s run\n", tc.data.c_str(),
                d.task == Task::SFT ? "SFT" : "DPO", tc.task == Task::SFT ? "SFT" : "DPO");
        return EXIT_ERROR;
    }

    // the plan: every step of every epoch, rebuilt identically on resume
    const std::vector<Step> plan = make_plan(d, tc.epochs, tc.ctx, tc.grad_accum, tc.seed);
    const int64_t total = tc.max_steps > 0 ? std::min<int64_t>(tc.max_steps, (int64_t) plan.size()) : (int64_t) plan.size();
    const int64_t warmup = std::min<int64_t>(total, tc.warmup_steps >= 0 ? tc.warmup_steps : (int64_t) std::llround(tc.warmup_ratio * total));
    int64_t weighted = 0, epoch_tokens = 0;
    for (const Item & it : d.items) {
        epoch_tokens += it.length();
        for (float w : it.a.weights) weighted += w > 0;
        for (float w : it.b.weights) weighted += w > 0;
    }
    if (weighted == 0) {
        fprintf(stderr, "run_train: error: %s has no token with a loss weight above 0; nothing to train on\n", tc.data.c_str());
        return EXIT_ERROR;
    }

    uint64_t init_fp = 0;
    if (!eo.init_adapter.empty() && !file_fingerprint(eo.init_adapter, init_fp)) {
        fprintf(stderr, "run_train: error: cannot read %s\n", eo.init_adapter.c_str());
        return EXIT_ERROR;
    }
    const KeyValues identity = run_identity(e, tc, d, total, init_fp);
    const std::string ckpt = tc.checkpoint.empty() ? tc.out + ".ckpt.gguf" : tc.checkpoint;

    // DPO: reference log-probs, with the initial parameters (before any checkpoint is loaded)
    std::vector<double> ref_c, ref_r;
    if (tc.task == Task::DPO) {
        const std::string ref_path = tc.ref_logps.empty() ? ckpt + ".ref" : tc.ref_logps;
        uint64_t ref_fp = fnv1a64(&d.fingerprint, sizeof(d.fingerprint));
        ref_fp = fnv1a64(&init_fp, sizeof(init_fp), ref_fp);
        ref_fp = fnv1a64(identity[1].second.data(), identity[1].second.size(), ref_fp);
        if (eo.init_adapter.empty() && !eo.full) ref_fp = fnv1a64(&eo.seed, sizeof(eo.seed), ref_fp);
        bool missing = false;
        const double t0 = now_seconds();
        if (read_ref_logps(ref_path, ref_fp, d.items.size(), ref_c, ref_r, &missing)) {
            JsonLine().str("type", "reference").integer("pairs", (int64_t) d.items.size()).boolean("cached", true).str("path", ref_path).print();
        } else if (!missing) {
            return EXIT_ERROR;
        } else {
            if (!compute_refs(e, d, tc.ctx, ref_c, ref_r)) {
                if (e.aborted()) {
                    JsonLine().str("type", "stopped").integer("step", 0).str("checkpoint", "").print();
                    return EXIT_STOPPED;
                }
                return EXIT_ERROR;
            }
            if (!write_ref_logps(ref_path, ref_fp, ref_c, ref_r)) return EXIT_ERROR;
            JsonLine().str("type", "reference").integer("pairs", (int64_t) d.items.size()).boolean("cached", false)
                .str("path", ref_path).num("seconds", now_seconds() - t0).print();
        }
    }

    // resume
    CheckpointState cs;
    cs.steps = total;
    cs.config = identity;
    bool resumed = false;
    if (tc.resume && file_exists(ckpt)) {
        if (!read_checkpoint(e, ckpt, identity, cs)) return EXIT_ERROR;
        resumed = true;
    }
    const int64_t start_step = cs.step;

    JsonLine().str("type", "start")
        .str("task", tc.task == Task::SFT ? "sft" : "dpo")
        .str("mode", eo.full ? "full" : "lora")
        .str("architecture", e.model().hp.arch)
        .integer("layers", e.model().hp.n_layer)
        .integer("trainable_params", e.trainable_count())
        .integer("rank", eo.full ? 0 : eo.lora.rank)
        .num("alpha", eo.full ? 0 : eo.lora.alpha)
        .str("modules", eo.full ? "all" : modules_string(eo.lora))
        .integer(tc.task == Task::SFT ? "examples" : "pairs", (int64_t) d.items.size())
        .integer("tokens_per_epoch", epoch_tokens)
        .integer("epochs", tc.epochs)
        .integer("steps", total)
        .integer("warmup_steps", warmup)
        .integer("step", start_step)
        .boolean("resumed", resumed)
        .str("checkpoint", ckpt)
        .print();

    const double t_loop = now_seconds();
    const double elapsed_before = cs.elapsed;
    const int64_t tokens_before = cs.tokens;
    int64_t tokens_here = 0;
    int64_t step = start_step;

    auto save = [&](int64_t at) {
        cs.step = at;
        cs.elapsed = elapsed_before + (now_seconds() - t_loop);
        cs.tokens = tokens_before + tokens_here;
        if (!write_checkpoint(e, ckpt, cs)) return false;
        JsonLine().str("type", "checkpoint").integer("step", at).str("path", ckpt).print();
        return true;
    };

    // fractional epochs for the progress lines
    std::vector<int64_t> epoch_first(tc.epochs + 1, total), epoch_steps(tc.epochs, 0);
    for (int64_t i = (int64_t) plan.size() - 1; i >= 0; i--) {
        epoch_first[plan[i].epoch] = std::min<int64_t>(epoch_first[plan[i].epoch], i);
        epoch_steps[plan[i].epoch]++;
    }

    // window for averaged progress lines
    struct Window {
        int64_t steps = 0, tokens = 0, pairs = 0;
        double loss = 0, grad_norm = 0, rc = 0, rr = 0, acc = 0, lpc = 0, lpr = 0, nll = 0;
        double t0 = 0;
    } win;
    win.t0 = now_seconds();

    for (; step < total; step++) {
        const Step & s = plan[step];
        std::vector<Batch> batches;
        batches.reserve(s.rows.size());
        double step_weight = 0;
        int64_t step_pairs = 0;
        for (const Row & r : s.rows) {
            batches.push_back(make_batch(d, r));
            for (const Batch::Term & t : batches.back().terms) step_weight += t.weight_sum;
            step_pairs += (int64_t) batches.back().pairs.size();
        }
        LossSpec spec;
        spec.task = tc.task;
        spec.beta = tc.beta;
        spec.sft_alpha = tc.sft_alpha;
        spec.dpo_loss = tc.dpo_loss;
        spec.ref_chosen = &ref_c;
        spec.ref_rejected = &ref_r;
        spec.scale = tc.task == Task::SFT ? (step_weight > 0 ? 1.0 / step_weight : 0.0) : 1.0 / (double) std::max<int64_t>(1, step_pairs);

        double step_loss = 0;
        bool failed = false;
        for (const Batch & b : batches) {
            BatchResult res;
            if (!e.eval(b, spec, true, res)) {
                failed = true;
                break;
            }
            step_loss += res.loss;
            tokens_here += b.real_tokens;
            win.tokens += b.real_tokens;
            for (const Batch::Pair & p : b.pairs) {
                const double lpc = -res.term_nll[p.chosen], lpr = -res.term_nll[p.rejected];
                const double rc = tc.beta * (lpc - ref_c[p.item]), rr = tc.beta * (lpr - ref_r[p.item]);
                win.rc += rc;
                win.rr += rr;
                win.acc += rc > rr ? 1.0 : 0.0;
                win.lpc += lpc;
                win.lpr += lpr;
                win.nll += res.term_nll[p.sft] / std::max(1e-12, b.terms[p.sft].weight_sum);
                win.pairs++;
            }
            if (stop.load()) break;
        }
        if (failed && !e.aborted()) return EXIT_ERROR;
        if (failed || stop.load()) {
            // the step did not finish: its gradients are dropped and the checkpoint holds
            // the parameters after the last whole step
            e.zero_grads();
            if (!save(step)) return EXIT_ERROR;
            JsonLine().str("type", "stopped").integer("step", step).str("checkpoint", ckpt).print();
            return EXIT_STOPPED;
        }

        double gnorm = 0;
        if (!e.grad_norm(gnorm)) return EXIT_ERROR;
        if (!std::isfinite(gnorm) || !std::isfinite(step_loss)) {
            fprintf(stderr, "run_train: error: the loss or the gradient is not finite at step %lld (loss %g, gradient norm %g); "
                    "lower the learning rate\n", (long long) step + 1, step_loss, gnorm);
            return EXIT_ERROR;
        }
        const float clip = tc.max_grad_norm > 0 && gnorm > tc.max_grad_norm ? (float) (tc.max_grad_norm / gnorm) : 1.0f;
        const double lr = lr_at(tc, step, total, warmup);
        Engine::Adam adam = {(float) lr, tc.beta1, tc.beta2, tc.eps, tc.weight_decay, step + 1};
        if (!e.opt_step(adam, clip)) return EXIT_ERROR;

        win.steps++;
        win.loss += step_loss;
        win.grad_norm += gnorm;
        const int64_t done = step + 1;
        if (done % tc.log_every == 0 || done == total) {
            const double now = now_seconds();
            const double elapsed_here = now - t_loop;
            const double per_step = elapsed_here / (double) (done - start_step);
            JsonLine j;
            j.str("type", "step")
                .integer("step", done)
                .integer("steps", total)
                .num("epoch", (double) s.epoch + (double) (done - epoch_first[s.epoch]) / (double) epoch_steps[s.epoch])
                .num("loss", win.loss / win.steps)
                .num("learning_rate", lr)
                .num("grad_norm", win.grad_norm / win.steps)
                .integer("tokens", win.tokens)
                .num("tokens_per_s", win.tokens / std::max(1e-9, now - win.t0))
                .num("elapsed", elapsed_before + elapsed_here)
                .num("eta", per_step * (double) (total - done));
            if (tc.task == Task::DPO && win.pairs > 0) {
                const double n = (double) win.pairs;
                j.num("rewards/chosen", win.rc / n)
                    .num("rewards/rejected", win.rr / n)
                    .num("rewards/margins", (win.rc - win.rr) / n)
                    .num("rewards/accuracies", win.acc / n)
                    .num("logps/chosen", win.lpc / n)
                    .num("logps/rejected", win.lpr / n)
                    .num("nll", win.nll / n);
            }
            j.print();
            win = Window();
            win.t0 = now_seconds();
        }
        if (tc.save_every > 0 && done % tc.save_every == 0 && done < total) {
            if (!save(done)) return EXIT_ERROR;
        }
        if (stop.load()) {
            if (!save(done)) return EXIT_ERROR;
            JsonLine().str("type", "stopped").integer("step", done).str("checkpoint", ckpt).print();
            return EXIT_STOPPED;
        }
    }

    // the result, then a final checkpoint so that a resume of a finished run only rewrites it
    KeyValues info = {{"task", identity[0].second}, {"steps", std::to_string(total)}};
    const bool ok = eo.full ? write_full_model(e, tc.out, info) : write_adapter(e, tc.out, info);
    if (!ok || !save(total)) return EXIT_ERROR;
    JsonLine().str("type", "done")
        .integer("step", total)
        .str("out", tc.out)
        .num("seconds", now_seconds() - t_start)
        .integer("tokens", cs.tokens)
        .num("peak_rss_mb", peak_rss_mb())
        .print();
    return EXIT_OK;
}

// --- gradient check ------------------------------------------------------------------------

int run_grad_check(const EngineOptions & eo, const GradCheckConfig & gc) {
    Engine e;
    if (!e.init(eo)) return EXIT_ERROR;
    Dataset d;
    if (!read_dataset(gc.data, e.model().hp.n_vocab, gc.ctx, d)) return EXIT_ERROR;

    // the whole file as one step
    const std::vector<Step> plan = make_plan(d, 1, gc.ctx, 1 << 30, 0);
    std::vector<Batch> batches;
    double weight = 0;
    int64_t pairs = 0;
    for (const Row & r : plan[0].rows) {
        batches.push_back(make_batch(d, r));
        for (const Batch::Term & t : batches.back().terms) weight += t.weight_sum;
        pairs += (int64_t) batches.back().pairs.size();
    }
    std::vector<double> ref_c, ref_r;
    if (d.task == Task::DPO) {
        if (!compute_refs(e, d, gc.ctx, ref_c, ref_r)) return EXIT_ERROR;
        for (double & r : ref_c) r += gc.ref_shift;
    }
    LossSpec spec;
    spec.task = d.task;
    spec.beta = gc.beta;
    spec.sft_alpha = gc.sft_alpha;
    spec.dpo_loss = gc.dpo_loss;
    spec.ref_chosen = &ref_c;
    spec.ref_rejected = &ref_r;
    spec.scale = d.task == Task::SFT ? 1.0 / weight : 1.0 / (double) pairs;

    auto total_loss = [&](bool backward, double & out) {
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
        .integer("entries", checked).num("worst_rel_error", worst).str("worst_tensor", worst_tensor).print();
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
