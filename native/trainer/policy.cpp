#include "policy.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>

namespace st {

const char * policy_loss_name(PolicyLoss l) {
    return l == PolicyLoss::GRPO ? "grpo" : l == PolicyLoss::DR_GRPO ? "dr_grpo" : "dapo";
}

bool parse_policy_loss(const std::string & s, PolicyLoss & out) {
    if (s == "grpo") out = PolicyLoss::GRPO;
    else if (s == "dr_grpo") out = PolicyLoss::DR_GRPO;
    else if (s == "dapo") out = PolicyLoss::DAPO;
    else return false;
    return true;
}

bool check_policy_config(const PolicyConfig & pc) {
    const char * bad = nullptr;
    if (!(pc.clip_low >= 0 && pc.clip_low < 1)) bad = "--clip-low (ε_low) must be at least 0 and below 1";
    else if (!(pc.temperature > 0)) bad = "--temperature must be above 0 (the policy's log-probs are log softmax(logits / T))";
    else if (!(pc.clip_high >= 0)) bad = "--clip-high (ε_high) must be at least 0";
    else if (pc.clip_high < pc.clip_low) bad = "--clip-high (ε_high) is below --clip-low (ε_low); clip-higher needs ε_high >= ε_low";
    else if (!(pc.beta >= 0)) bad = "--kl-beta must be at least 0";
    else if (!(pc.tis_cap >= 0)) bad = "--tis-cap must be at least 0 (0: off)";
    else if (pc.max_completion < 0) bad = "--max-completion must be at least 0";
    if (bad) fprintf(stderr, "check_policy_config: error: %s\n", bad);
    return bad == nullptr;
}

bool policy_advantages(const PolicyConfig & pc, const std::vector<float> & rewards, const std::vector<uint32_t> & groups,
                       std::vector<double> & out, std::string & error) {
    struct Group { int64_t n = 0; double sum = 0, sq = 0; float lo = INFINITY, hi = -INFINITY; };
    std::map<uint32_t, Group> by;
    for (size_t i = 0; i < rewards.size(); i++) {
        Group & g = by[groups[i]];
        g.n++;
        g.sum += rewards[i];
        g.lo = std::min(g.lo, rewards[i]);
        g.hi = std::max(g.hi, rewards[i]);
    }
    for (size_t i = 0; i < rewards.size(); i++) {
        Group & g = by[groups[i]];
        const double d = rewards[i] - g.sum / (double) g.n;
        g.sq += d * d;
    }
    out.assign(rewards.size(), 0.0);
    for (size_t i = 0; i < rewards.size(); i++) {
        const Group & g = by[groups[i]];
        const double mean = g.sum / (double) g.n;
        // an all-equal group teaches nothing (and the mean's rounding must not either)
        double a = g.lo == g.hi ? 0.0 : rewards[i] - mean;
        if (pc.scale_rewards) {
            if (g.n < 2) {
                error = "group " + std::to_string(groups[i]) + " has one sample; scaling advantages by the group's reward std needs at least 2";
                return false;
            }
            a /= std::sqrt(g.sq / (double) (g.n - 1)) + 1e-4;
        }
        out[i] = a;
    }
    return true;
}

double policy_norm(const PolicyConfig & pc, int64_t samples, int64_t tokens, int64_t longest, int64_t n_i) {
    switch (pc.loss) {
        case PolicyLoss::GRPO: return 1.0 / ((double) samples * (double) n_i);
        case PolicyLoss::DAPO: return 1.0 / (double) tokens;
        case PolicyLoss::DR_GRPO: return 1.0 / ((double) samples * (double) (pc.max_completion > 0 ? pc.max_completion : longest));
    }
    return 0;
}

void PolicyStats::add(const PolicyStats & o) {
    tokens += o.tokens;
    loss += o.loss;
    kl += o.kl;
    clip_low += o.clip_low;
    clip_high += o.clip_high;
    tis += o.tis;
    sampler_diff += o.sampler_diff;
    sampler_tokens += o.sampler_tokens;
}

double policy_sample_loss(const PolicyConfig & pc, const PolicyTokens & s, float * coef, PolicyStats * stats) {
    const double A = s.advantage;
    double total = 0;
    for (int64_t t = 0; t < s.n; t++) {
        const double lp = s.lp[t], old = s.old[t];
        const double ratio = std::exp(lp - old);
        // truncated importance sampling weight of the sampler's draw
        double w = 1.0;
        const bool has_sampler = s.sampler && !std::isnan(s.sampler[t]);
        if (pc.tis_cap > 0 && has_sampler) w = std::min(std::exp(old - (double) s.sampler[t]), pc.tis_cap);
        // the clipped surrogate: −min(ρA, ρ̄A)
        const double clipped = std::min(std::max(ratio, 1.0 - pc.clip_low), 1.0 + pc.clip_high);
        const bool low = A < 0 && ratio < 1.0 - pc.clip_low;
        const bool high = A > 0 && ratio > 1.0 + pc.clip_high;
        const double pg = -std::min(ratio * A, clipped * A) * w;
        double dl_dlp = low || high ? 0.0 : -A * ratio * w;
        // the k3 estimate of KL(π_θ ‖ π_ref) and its slope
        double kl = 0;
        if (pc.beta > 0 && s.ref) {
            const double d = (double) s.ref[t] - lp;
            kl = std::exp(d) - d - 1.0;
            dl_dlp += pc.beta * (1.0 - std::exp(d));
        }
        total += s.norm * (pg + pc.beta * kl);
        if (coef) coef[t] = (float) (-s.norm * dl_dlp); // ∂loss/∂nll = −∂loss/∂lp
        if (stats) {
            stats->tokens++;
            stats->kl += kl;
            stats->clip_low += low;
            stats->clip_high += high;
            stats->tis += w;
            if (has_sampler) {
                stats->sampler_diff += std::fabs(old - (double) s.sampler[t]);
                stats->sampler_tokens++;
            }
        }
    }
    if (stats) stats->loss += total;
    return total;
}

} // namespace st
