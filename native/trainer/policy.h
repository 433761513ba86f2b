// Online RL with verifiable rewards (the GRPO family), in one flat place: advantages from
// rewards, the per-token objective and its normalisation per loss variant, and the
// gradient coefficients the trainer's passes weigh each token's NLL with.
//
// A step samples G completions o_i for each of B prompts (a group per prompt), each with
// a reward r_i. Per completion token t of sample i, with lp = log π_θ(o_it | ...):
//
//   lp is the policy's log-prob at the sampling temperature T: log softmax(z / T) of the
//   logits z (TRL scores so too), so the ratio, the KL term and the entropy are those of the
//   distribution the samples were drawn from (before any top-k or top-p cut).
//
//   advantage      A_i   = r_i − mean(r of i's group), divided by std(r of i's group) + 1e-4
//                          (sample std, as torch.std) when rewards are scaled (grpo, dapo; not dr_grpo)
//   ratio          ρ_it  = exp(lp − lp_old), lp_old from the policy that sampled, before any update
//   clipped ratio  ρ̄_it  = clip(ρ_it, 1 − ε_low, 1 + ε_high)
//   policy term    pg_it = −min(ρ A, ρ̄ A) · w_it
//                          w_it = min(exp(lp_old − lp_sampler), cap): truncated importance
//                          sampling against the sampling engine's own log-probs (off: w = 1)
//   KL term        kl_it = exp(lp_ref − lp) − (lp_ref − lp) − 1   (k3, Schulman), lp_ref from the starting policy
//   per token      ℓ_it  = pg_it + β · kl_it
//
//   loss (one optimizer step over N samples, n_i tokens each):
//     grpo     Σ_i (1 / (N n_i)) Σ_t ℓ_it          per-sequence mean, then mean over samples
//     dapo     Σ_i Σ_t ℓ_it / Σ_i n_i             token-level mean (long answers weigh by their length)
//     dr_grpo  Σ_i Σ_t ℓ_it / (N L)               L a constant (the longest completion allowed): no length bias
//
// ∂ℓ/∂lp: the min picks the clipped branch (gradient 0) exactly when the ratio left its band
// on the side the advantage pushes it (A > 0 and ρ > 1 + ε_high, or A < 0 and ρ < 1 − ε_low);
// otherwise −A ρ w. The KL term adds β (1 − exp(lp_ref − lp)). Since NLL = −lp, the trainer
// weighs each token's NLL with coef = −norm_i · ∂ℓ/∂lp, which may be negative.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace st {

enum class PolicyLoss { GRPO, DR_GRPO, DAPO };
const char * policy_loss_name(PolicyLoss l);
bool parse_policy_loss(const std::string & s, PolicyLoss & out);

struct PolicyConfig {
    PolicyLoss loss = PolicyLoss::GRPO;
    bool scale_rewards = true;     // divide advantages by the group's reward std (dr_grpo: false)
    double clip_low = 0.2;         // ε_low
    double clip_high = 0.2;        // ε_high (DAPO's clip-higher: 0.28)
    double beta = 0.0;             // weight of the KL term (0: none, and no reference pass)
    double tis_cap = 0.0;          // truncated importance sampling cap (0: off)
    int64_t max_completion = 0;    // dr_grpo's L (0: the longest completion of the step)
    double temperature = 1.0;      // T: the logits are divided by it before the log-softmax
};

// Checks the options against each other; one error line naming the option when they clash.
bool check_policy_config(const PolicyConfig & pc);

// Advantages of samples from their rewards and group ids. With scaled rewards a group of
// one sample has no std: refused (error set). A group whose rewards are all equal gets 0.
bool policy_advantages(const PolicyConfig & pc, const std::vector<float> & rewards, const std::vector<uint32_t> & groups,
                       std::vector<double> & out, std::string & error);

// The normalisation norm_i of sample i's tokens in a step of `samples` samples holding
// `tokens` completion tokens, the longest `longest` long.
double policy_norm(const PolicyConfig & pc, int64_t samples, int64_t tokens, int64_t longest, int64_t n_i);

// One sample's tokens as the loss reads them (n values each; ref null when β = 0, sampler
// null or NaN entries when unknown).
struct PolicyTokens {
    double advantage = 0;
    double norm = 0;
    int64_t n = 0;
    const float * lp = nullptr;
    const float * old = nullptr;
    const float * ref = nullptr;
    const float * sampler = nullptr;
};

// Sums over tokens, for the step's metrics.
struct PolicyStats {
    int64_t tokens = 0;
    double loss = 0;               // Σ norm · ℓ
    double kl = 0;                 // Σ kl_it
    double clip_low = 0;           // tokens clipped below (A < 0, ρ < 1 − ε_low)
    double clip_high = 0;          // tokens clipped above (A > 0, ρ > 1 + ε_high)
    double tis = 0;                // Σ w_it (with truncated importance sampling)
    double sampler_diff = 0;       // Σ |lp_old − lp_sampler| over tokens with a sampler log-prob
    int64_t sampler_tokens = 0;
    void add(const PolicyStats & o);
};

// Sample i's share of the loss, Σ_t norm_i ℓ_it; with `coef` (n entries) also
// coef_t = ∂loss/∂nll_t. Adds to `stats` when given.
double policy_sample_loss(const PolicyConfig & pc, const PolicyTokens & s, float * coef, PolicyStats * stats);

} // namespace st
