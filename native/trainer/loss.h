// The losses, in one flat place. A batch holds terms, each summing weight · NLL over its
// tokens (NLL = −log p of the token); the loss is a function of those sums.
//
//   SFT:  scale · Σ_terms nll_t                          (scale = 1 / the step's weight)
//   DPO:  scale · Σ_pairs [ ℓ(d) + α · nll_sft / w_sft ] (scale = 1 / the step's pairs)
//         with lp = −nll and d = (lp_c − lp_r) − (ref_c − ref_r):
//           sigmoid (Rafailov et al.):  ℓ = −log σ(β d) = softplus(−β d)
//           ipo (Azar et al.):          ℓ = (d − 1/(2β))²
//           hinge (SLiC):               ℓ = max(0, 1 − β d)
//         α · the chosen completion's mean NLL is the optional SFT term.
//
//   policy (online RL): Σ_rows coef · nll, with coef = ∂loss/∂nll of each completion token
//         computed on the host by policy_loss (policy.h) from the rows' log-probs.
//
// The one-graph path builds this in ggml (loss_graph) and lets autodiff differentiate it;
// the chunked path computes it on the host from the terms' sums (loss_value) with ∂loss/∂nll
// of every term, which then weight the tokens of a second, linear pass: the same gradient.
#pragma once

#include <vector>

#include "data.h"
#include "ggml.h"

namespace st {

struct Batch;

enum class DpoLoss { SIGMOID, IPO, HINGE };
const char * dpo_loss_name(DpoLoss l);

struct DpoConfig {
    float beta = 0.1f;                 // temperature of the implicit reward
    float sft_alpha = 0.0f;            // weight of the SFT term on the chosen completion
    DpoLoss loss = DpoLoss::SIGMOID;
};

// How a batch's terms become the scalar that is minimised.
struct LossSpec {
    Task task = Task::SFT;
    double scale = 1.0;
    DpoConfig dpo;
    const std::vector<double> * ref_chosen = nullptr;   // DPO: reference log-probs per item
    const std::vector<double> * ref_rejected = nullptr;
    const std::vector<float> * row_coef = nullptr;      // policy: ∂loss/∂nll per loss row (null: forward only)
    bool entropy = false;                               // policy: also the entropy at every loss row
    float logit_scale = 1.0f;                           // policy: logits × this (1 / T) before the softmax
};

// The loss as a graph node, from the terms' NLL nodes (null for a term without tokens).
// Null (with an error line) when a DPO pair has no weighted tokens on one side.
ggml_tensor * loss_graph(ggml_context * ctx, const Batch & b, const LossSpec & spec, const std::vector<ggml_tensor *> & nll);

// The loss from the terms' NLL sums, and (when `dnll` is given) ∂loss/∂nll of every term.
double loss_value(const Batch & b, const LossSpec & spec, const std::vector<double> & nll, std::vector<double> * dnll);

} // namespace st
