// still-train serve: the resident trainer of online RL. The model, the adapter and AdamW's
// moments stay in memory while the caller (still's TypeScript side) sends one command per
// line on stdin, a flat JSON object, and reads one JSON line back for each:
//
//   (on start)                                   {"type":"plan",...} then {"type":"ready","step":S,"policy_step":P,"resumed":bool,...}
//   {"cmd":"step","data":FILE,"lr":X,            one optimizer step per minibatch per iteration over the policy
//    "minibatches":M,"iterations":K}             samples in FILE (data.h, kind 3) → {"type":"policy_step",...metrics}
//   {"cmd":"save","out":FILE}                    the adapter (or full model) → {"type":"saved",...}
//   {"cmd":"checkpoint","step":P[,"path":FILE]}  parameters, moments and counters; P is the caller's step count,
//                                                given back by "ready" after a resume → {"type":"checkpoint",...}
//   {"cmd":"stop"}                               → {"type":"bye"}, exit 0 (so does the end of stdin)
//
// A command that fails before it changed anything (a bad file, a bad option) answers
// {"type":"error","cmd":C,"message":M,"fatal":false} and the trainer waits for the next.
// A failure after parameters changed answers with "fatal":true and exits 1: the caller
// restarts from its last checkpoint. SIGINT/SIGTERM stop a step between graphs
// ({"type":"stopped"}, exit 130); nothing is written then.
#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>

#include "common.h"
#include "io.h"
#include "nlohmann/json.hpp"
#include "train.h"

#if !defined(_WIN32)
#include <unistd.h>
#endif

namespace st {

namespace {

using json = nlohmann::json;

// Collects what the trainer's parts print on stderr while a command runs (they report
// errors there), so that the answer can carry the error line; passed on to stderr too.
class ErrorCapture {
public:
    ErrorCapture() {
#if !defined(_WIN32)
        fflush(stderr);
        file_ = tmpfile();
        saved_ = file_ ? dup(2) : -1;
        if (saved_ >= 0) dup2(fileno(file_), 2);
#endif
    }
    // The last "error: " line printed since the capture began (without the prefix).
    std::string finish() {
        std::string text;
#if !defined(_WIN32)
        if (saved_ < 0) return text;
        fflush(stderr);
        dup2(saved_, 2);
        close(saved_);
        saved_ = -1;
        rewind(file_);
        char buf[4096];
        size_t n;
        while ((n = fread(buf, 1, sizeof(buf), file_)) > 0) text.append(buf, n);
        fclose(file_);
        fwrite(text.data(), 1, text.size(), stderr);
#endif
        std::string last;
        size_t p = 0;
        while (p < text.size()) {
            const size_t q = std::min(text.find('\n', p), text.size());
            const std::string line = text.substr(p, q - p);
            const size_t at = line.find("error: ");
            if (at != std::string::npos) last = line.substr(at + 7);
            p = q + 1;
        }
        return last;
    }
    ~ErrorCapture() { finish(); }

private:
    FILE * file_ = nullptr;
    int saved_ = -1;
};

// The options a resumed trainer must share with the one that wrote the checkpoint.
KeyValues serve_identity(const Engine & e, const TrainConfig & tc, const PolicyConfig & pc, uint64_t init_fp) {
    const EngineOptions & eo = e.options();
    const BaseModel & m = e.model();
    char buf[256];
    snprintf(buf, sizeof(buf), "%s clip=%.9g,%.9g beta=%.9g tis=%.9g scale=%d L=%lld", policy_loss_name(pc.loss), pc.clip_low, pc.clip_high,
             pc.beta, pc.tis_cap, pc.scale_rewards ? 1 : 0, (long long) pc.max_completion);
    std::string policy = buf;
    if (pc.temperature != 1.0) {
        snprintf(buf, sizeof(buf), " T=%.9g", pc.temperature);
        policy += buf;
    }
    KeyValues kv = {
        {"task", "policy"},
        {"model", m.hp.arch + "/" + m.hp.name + "/" + std::to_string(m.hp.n_layer) + "x" + std::to_string(m.hp.n_embd) + "/" + std::to_string(m.hp.n_vocab)},
        {"mode", eo.full ? "full" : "lora"},
        {"policy", policy},
        {"seed", std::to_string(tc.seed)},
    };
    snprintf(buf, sizeof(buf), "%.9g,%.9g,%.9g wd=%.9g clip=%.9g", tc.beta1, tc.beta2, tc.eps, tc.weight_decay, tc.max_grad_norm);
    kv.push_back({"adam", buf});
    if (!eo.full) {
        snprintf(buf, sizeof(buf), "r=%lld alpha=%.9g", (long long) eo.lora.rank, eo.lora.alpha);
        std::string modules;
        for (int mod = 0; mod < MOD_COUNT; mod++)
            if (eo.lora.modules[mod]) modules += std::string(modules.empty() ? "" : ",") + MODULE_NAMES[mod];
        kv.push_back({"lora", std::string(buf) + " modules=" + modules});
        kv.push_back({"init", eo.init_adapter.empty() ? "seed " + std::to_string(eo.seed) : "adapter " + std::to_string(init_fp)});
    }
    return kv;
}

class PolicyTrainer {
public:
    PolicyTrainer(const TrainConfig & tc, const PolicyConfig & pc, const std::atomic<bool> & stop) : tc_(tc), pc_(pc), stop_(stop) {}

    int run(const EngineOptions & eo) {
        e_.set_abort_flag(&stop_);
        if (!check_policy_config(pc_) || !e_.init(eo) || !context_fits(e_, tc_.ctx)) return EXIT_ERROR;
        if (!plan_memory(e_, tc_.ctx, tc_.recompute, tc_.memory_budget, true)) return EXIT_ERROR;
        if (tc_.plan_only) return EXIT_OK;
        uint64_t init_fp = 0;
        if (!eo.init_adapter.empty() && !file_fingerprint(eo.init_adapter, init_fp)) {
            fprintf(stderr, "run_serve: error: cannot read %s\n", eo.init_adapter.c_str());
            return EXIT_ERROR;
        }
        // the reference policy is the starting one, kept before a checkpoint replaces it
        if (pc_.beta > 0 && !copy_params(ref_params_)) return EXIT_ERROR;
        cs_.config = serve_identity(e_, tc_, pc_, init_fp);
        bool resumed = false;
        if (tc_.resume && !tc_.checkpoint.empty()) {
            FILE * f = fopen(tc_.checkpoint.c_str(), "rb");
            if (f) {
                fclose(f);
                if (!read_checkpoint(e_, tc_.checkpoint, cs_.config, cs_)) return EXIT_ERROR;
                resumed = true;
            }
        }
        JsonLine().str("type", "ready").integer("step", cs_.step).integer("policy_step", cs_.steps).boolean("resumed", resumed)
            .str("mode", eo.full ? "full" : "lora").integer("trainable_params", e_.trainable_count())
            .str("loss", policy_loss_name(pc_.loss)).str("checkpoint", tc_.checkpoint).print();

        std::string line;
        while (std::getline(std::cin, line)) {
            if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
            const int rc = command(line);
            if (rc != EXIT_OK) return rc;
            if (done_) break;
        }
        return EXIT_OK;
    }

private:
    // Runs one command line; EXIT_OK to go on (also after a harmless error).
    int command(const std::string & line) {
        std::string cmd = "?";
        ErrorCapture capture;
        bool fatal = false;
        std::string message;
        try {
            const json j = json::parse(line);
            if (!j.is_object()) throw std::runtime_error("a command is a JSON object");
            cmd = j.value("cmd", std::string("?"));
            bool ok = false;
            if (cmd == "step") ok = step(j, fatal);
            else if (cmd == "save") ok = save(j);
            else if (cmd == "checkpoint") ok = checkpoint(j);
            else if (cmd == "stop") {
                done_ = true;
                capture.finish();
                JsonLine().str("type", "bye").print();
                return EXIT_OK;
            }
            else message = "unknown command '" + cmd + "' (step, save, checkpoint, stop)";
            if (ok) return EXIT_OK;
        } catch (const std::exception & ex) {
            message = ex.what();
        }
        if (e_.aborted() || stop_.load()) {
            capture.finish();
            JsonLine().str("type", "stopped").str("cmd", cmd).print();
            return EXIT_STOPPED;
        }
        const std::string printed = capture.finish();
        if (message.empty()) message = printed.empty() ? "the command failed (see stderr)" : printed;
        JsonLine().str("type", "error").str("cmd", cmd).str("message", message).boolean("fatal", fatal).print();
        return fatal ? EXIT_ERROR : EXIT_OK;
    }

    static std::string need_string(const json & j, const char * key) {
        if (!j.contains(key) || !j[key].is_string() || j[key].get<std::string>().empty())
            throw std::runtime_error(std::string("the command needs \"") + key + "\" (a file name)");
        return j[key].get<std::string>();
    }

    static int64_t int_field(const json & j, const char * key, int64_t def, int64_t lo) {
        if (!j.contains(key)) return def;
        if (!j[key].is_number_integer() || j[key].get<int64_t>() < lo)
            throw std::runtime_error(std::string("\"") + key + "\" must be a whole number of at least " + std::to_string(lo));
        return j[key].get<int64_t>();
    }

    bool copy_params(std::vector<std::vector<float>> & out) {
        out.resize(e_.trainables().size());
        for (size_t i = 0; i < out.size(); i++)
            if (!e_.get(e_.trainables()[i].param, out[i])) return false;
        return true;
    }

    bool set_params(const std::vector<std::vector<float>> & in) {
        for (size_t i = 0; i < in.size(); i++)
            if (!e_.set(e_.trainables()[i].param, in[i])) return false;
        return true;
    }

    // One "step": reads and checks the samples, then old and reference log-probs when the
    // loss needs them, then the optimizer steps. `fatal` once parameters have changed.
    bool step(const json & j, bool & fatal) {
        const double t0 = now_seconds();
        const std::string path = need_string(j, "data");
        if (!j.contains("lr") || !j["lr"].is_number() || !(j["lr"].get<double>() > 0))
            throw std::runtime_error("\"lr\" must be a number above 0");
        const double lr = j["lr"].get<double>();
        const int64_t minibatches = int_field(j, "minibatches", 1, 1);
        const int64_t iterations = int_field(j, "iterations", 1, 1);

        Dataset d;
        if (!read_dataset(path, e_.model().hp.n_vocab, tc_.ctx, d)) return false;
        if (d.task != Task::POLICY) {
            fprintf(stderr, "run_serve: error: %s holds %s records; a step takes policy samples\n", path.c_str(), task_name(d.task));
            return false;
        }
        if (minibatches > (int64_t) d.items.size()) {
            fprintf(stderr, "run_serve: error: %lld minibatches of %zu samples: at most one per sample\n", (long long) minibatches, d.items.size());
            return false;
        }
        std::vector<float> rewards;
        std::vector<uint32_t> groups;
        for (const Item & it : d.items) {
            rewards.push_back(it.reward);
            groups.push_back(it.group);
        }
        std::vector<double> adv;
        std::string error;
        if (!policy_advantages(pc_, rewards, groups, adv, error)) {
            fprintf(stderr, "run_serve: error: %s: %s\n", path.c_str(), error.c_str());
            return false;
        }
        std::vector<int64_t> all(d.items.size());
        for (size_t i = 0; i < all.size(); i++) all[i] = (int64_t) i;

        // the old policy's log-probs, before any update, when more than one update follows
        TokenValues old, ref;
        const bool need_old = minibatches > 1 || iterations > 1;
        const double t_old = now_seconds();
        if (need_old && !policy_logps(e_, d, all, tc_.ctx, pc_.temperature, old, nullptr)) return false;
        const double t_ref = now_seconds();
        if (pc_.beta > 0) {
            std::vector<std::vector<float>> current;
            if (!copy_params(current) || !set_params(ref_params_)) return false;
            const bool ok = policy_logps(e_, d, all, tc_.ctx, pc_.temperature, ref, nullptr);
            if (!set_params(current) || !ok) {
                fatal = true;
                return false;
            }
        }
        const double t_grad = now_seconds();

        PolicyPass pass{&pc_, &adv, need_old ? &old : nullptr, pc_.beta > 0 ? &ref : nullptr, true};
        PolicyStats stats;
        double entropy = 0, loss_sum = 0, gnorm_sum = 0;
        int64_t updates = 0, tokens = 0;
        for (const Item & it : d.items) tokens += (int64_t) it.a.tokens.size();
        for (int64_t k = 0; k < iterations; k++) {
            for (int64_t mb = 0; mb < minibatches; mb++) {
                const size_t lo = all.size() * (size_t) mb / (size_t) minibatches, hi = all.size() * (size_t) (mb + 1) / (size_t) minibatches;
                const std::vector<int64_t> items(all.begin() + (long) lo, all.begin() + (long) hi);
                PolicyStats s;
                double ent = 0, loss = 0, gnorm = 0;
                e_.zero_grads();
                fatal = updates > 0;
                if (!policy_gradient(e_, d, items, tc_.ctx, pass, s, ent, loss) || !e_.grad_norm(gnorm)) return false;
                fatal = true;
                if (!std::isfinite(gnorm) || !std::isfinite(loss)) {
                    fprintf(stderr, "run_serve: error: the loss or the gradient is not finite (loss %g, gradient norm %g); lower the learning rate\n", loss, gnorm);
                    return false;
                }
                const float clip = tc_.max_grad_norm > 0 && gnorm > tc_.max_grad_norm ? (float) (tc_.max_grad_norm / gnorm) : 1.0f;
                Engine::Adam adam = {(float) lr, tc_.beta1, tc_.beta2, tc_.eps, tc_.weight_decay, cs_.step + 1};
                if (!e_.opt_step(adam, clip)) return false;
                cs_.step++;
                updates++;
                loss_sum += loss;
                gnorm_sum += gnorm;
                if (k == 0) {
                    stats.add(s);
                    entropy += ent;
                }
            }
        }
        cs_.tokens += tokens * iterations;
        const double t_end = now_seconds();
        cs_.elapsed += t_end - t0;
        const double n = (double) std::max<int64_t>(1, stats.tokens);
        JsonLine out;
        out.str("type", "policy_step").integer("step", cs_.step).integer("updates", updates)
            .integer("samples", (int64_t) d.items.size()).integer("completion_tokens", stats.tokens).integer("tokens", tokens)
            .num("loss", loss_sum / (double) updates).num("grad_norm", gnorm_sum / (double) updates).num("learning_rate", lr)
            .num("entropy", entropy / n).num("kl", stats.kl / n)
            .num("clip_ratio/low_mean", stats.clip_low / n).num("clip_ratio/high_mean", stats.clip_high / n)
            .num("clip_ratio/region_mean", (stats.clip_low + stats.clip_high) / n)
            .num("sampler/logp_diff", stats.sampler_tokens > 0 ? stats.sampler_diff / (double) stats.sampler_tokens : NAN);
        if (pc_.tis_cap > 0) out.num("tis/mean", stats.tis / n);
        out.num("seconds", t_end - t0).num("seconds/old_logps", t_ref - t_old).num("seconds/ref_logps", t_grad - t_ref)
            .num("seconds/gradient", t_end - t_grad).num("tokens_per_s", (double) (tokens * iterations) / std::max(1e-9, t_end - t_grad))
            .num("peak_rss_mb", peak_rss_mb()).print();
        fatal = false;
        return true;
    }

    bool save(const json & j) {
        const double t0 = now_seconds();
        const std::string out = need_string(j, "out");
        KeyValues info = {{"task", "policy"}, {"steps", std::to_string(cs_.step)}};
        if (!(e_.options().full ? write_full_model(e_, out, info) : write_adapter(e_, out, info))) return false;
        JsonLine().str("type", "saved").str("out", out).integer("step", cs_.step).num("seconds", now_seconds() - t0).print();
        return true;
    }

    bool checkpoint(const json & j) {
        const double t0 = now_seconds();
        const std::string path = j.contains("path") ? need_string(j, "path") : tc_.checkpoint;
        if (path.empty()) throw std::runtime_error("no checkpoint file: give \"path\" or start the trainer with --checkpoint");
        cs_.steps = int_field(j, "step", cs_.steps, 0);
        if (!write_checkpoint(e_, path, cs_)) return false;
        JsonLine().str("type", "checkpoint").integer("step", cs_.step).integer("policy_step", cs_.steps).str("path", path)
            .num("seconds", now_seconds() - t0).print();
        return true;
    }

    const TrainConfig & tc_;
    const PolicyConfig & pc_;
    const std::atomic<bool> & stop_;
    Engine e_;
    CheckpointState cs_;   // step: optimizer steps done; steps: the caller's policy steps at the last checkpoint
    std::vector<std::vector<float>> ref_params_;
    bool done_ = false;
};

} // namespace

int run_serve(const EngineOptions & eo, const TrainConfig & tc, const PolicyConfig & pc, const std::atomic<bool> & stop) {
    return PolicyTrainer(tc, pc, stop).run(eo);
}

// --- the loss alone -----------------------------------------------------------------------

int run_policy_loss(const PolicyConfig & base) {
    json in;
    try {
        in = json::parse(std::cin);
    } catch (const std::exception & ex) {
        fprintf(stderr, "run_policy_loss: error: stdin is not one JSON object (%s)\n", ex.what());
        return EXIT_ERROR;
    }
    PolicyConfig pc = base;
    std::vector<float> rewards;
    std::vector<uint32_t> groups;
    std::vector<std::vector<float>> lp, old, ref, sampler;
    try {
        for (const json & s : in.at("samples")) {
            rewards.push_back(s.at("reward").get<float>());
            groups.push_back(s.at("group").get<uint32_t>());
            lp.push_back(s.at("lp").get<std::vector<float>>());
            old.push_back(s.value("old", lp.back()));
            ref.push_back(s.value("ref", lp.back()));
            std::vector<float> sm(lp.back().size(), NAN);
            if (s.contains("sampler")) sm = s.at("sampler").get<std::vector<float>>();
            sampler.push_back(sm);
            if (old.back().size() != lp.back().size() || ref.back().size() != lp.back().size() || sampler.back().size() != lp.back().size())
                throw std::runtime_error("sample " + std::to_string(lp.size() - 1) + ": lp, old, ref and sampler differ in length");
        }
    } catch (const std::exception & ex) {
        fprintf(stderr, "run_policy_loss: error: %s\n", ex.what());
        return EXIT_ERROR;
    }
    if (!check_policy_config(pc)) return EXIT_ERROR;
    std::vector<double> adv;
    std::string error;
    if (!policy_advantages(pc, rewards, groups, adv, error)) {
        fprintf(stderr, "run_policy_loss: error: %s\n", error.c_str());
        return EXIT_ERROR;
    }
    int64_t tokens = 0, longest = 0;
    for (const auto & l : lp) {
        tokens += (int64_t) l.size();
        longest = std::max<int64_t>(longest, (int64_t) l.size());
    }
    PolicyStats stats;
    double loss = 0;
    json coef = json::array();
    for (size_t i = 0; i < lp.size(); i++) {
        PolicyTokens t;
        t.advantage = adv[i];
        t.n = (int64_t) lp[i].size();
        t.norm = policy_norm(pc, (int64_t) lp.size(), tokens, longest, t.n);
        t.lp = lp[i].data();
        t.old = old[i].data();
        t.ref = ref[i].data();
        t.sampler = sampler[i].data();
        std::vector<float> c((size_t) t.n);
        loss += policy_sample_loss(pc, t, c.data(), &stats);
        coef.push_back(c);
    }
    json out = {{"type", "policy_loss"}, {"loss", loss}, {"advantages", adv}, {"coef", coef}, {"kl", stats.kl / std::max<int64_t>(1, stats.tokens)},
                {"clip_low", stats.clip_low}, {"clip_high", stats.clip_high}, {"tokens", stats.tokens}};
    printf("%s\n", out.dump().c_str());
    return EXIT_OK;
}

} // namespace st
