// The engine's passes for policy samples: log-probs of completions (the old policy's, the
// reference's), the loss alone (finite differences), and one optimizer step's gradient.
#include <algorithm>
#include <cstdio>

#include "train.h"

namespace st {

namespace {

// The samples of one step and the constants their loss is normalised by.
struct StepShape {
    int64_t samples = 0, tokens = 0, longest = 0;
    StepShape(const Dataset & d, const std::vector<int64_t> & items) {
        samples = (int64_t) items.size();
        for (int64_t idx : items) {
            const Item & it = d.items[(size_t) idx];
            const int64_t n = (int64_t) it.a.tokens.size() - it.n_prompt;
            tokens += n;
            longest = std::max(longest, n);
        }
    }
};

// One sample's completion tokens in a batch's row values: log-probs from the NLLs.
void span_logps(const Batch::Span & s, const std::vector<float> & row_nll, std::vector<float> & out) {
    out.resize((size_t) s.count);
    for (int64_t t = 0; t < s.count; t++) out[(size_t) t] = -row_nll[(size_t) (s.first + t)];
}

void span_values(const Batch::Span & s, const std::vector<float> & rows, std::vector<float> & out) {
    out.assign(rows.begin() + s.first, rows.begin() + s.first + s.count);
}

PolicyTokens tokens_of(const PolicyPass & p, const Item & it, int64_t idx, const float * lp, const float * old, int64_t n) {
    PolicyTokens t;
    t.advantage = (*p.advantages)[(size_t) idx];
    t.n = n;
    t.lp = lp;
    t.old = old;
    t.ref = p.ref && p.config->beta > 0 ? (*p.ref)[(size_t) idx].data() : nullptr;
    t.sampler = it.sampler_logps.data();
    return t;
}

} // namespace

bool policy_logps(Engine & e, const Dataset & d, const std::vector<int64_t> & items, int64_t ctx, double temperature, TokenValues & lp,
                  TokenValues * entropy) {
    lp.resize(d.items.size());
    if (entropy) entropy->resize(d.items.size());
    LossSpec spec;
    spec.task = Task::POLICY;
    spec.entropy = entropy != nullptr;
    spec.logit_scale = (float) (1.0 / temperature);
    for (const Row & r : pack_rows(d, items, ctx)) {
        const Batch b = make_batch(d, r);
        BatchResult res;
        if (!e.eval(b, spec, false, res)) return false;
        for (const Batch::Span & s : b.spans) {
            span_logps(s, res.row_nll, lp[(size_t) s.item]);
            if (entropy) span_values(s, res.row_entropy, (*entropy)[(size_t) s.item]);
        }
    }
    return true;
}

bool policy_objective(Engine & e, const Dataset & d, const std::vector<int64_t> & items, int64_t ctx, const PolicyPass & p, double & loss) {
    TokenValues lp;
    if (!policy_logps(e, d, items, ctx, p.config->temperature, lp, nullptr)) return false;
    const StepShape shape(d, items);
    loss = 0;
    for (int64_t idx : items) {
        const Item & it = d.items[(size_t) idx];
        const std::vector<float> & l = lp[(size_t) idx];
        const float * old = p.old ? (*p.old)[(size_t) idx].data() : l.data();
        PolicyTokens t = tokens_of(p, it, idx, l.data(), old, (int64_t) l.size());
        t.norm = policy_norm(*p.config, shape.samples, shape.tokens, shape.longest, t.n);
        loss += policy_sample_loss(*p.config, t, nullptr, nullptr);
    }
    return true;
}

bool policy_gradient(Engine & e, const Dataset & d, const std::vector<int64_t> & items, int64_t ctx, const PolicyPass & p,
                     PolicyStats & stats, double & entropy_sum, double & loss) {
    const PolicyConfig & pc = *p.config;
    const StepShape shape(d, items);
    // one pass when no coefficient depends on this pass's log-probs: the old policy is the
    // current one (ratio 1), no KL term and no importance weights (which compare with lp_old)
    const bool one_pass = !p.old && pc.beta == 0 && pc.tis_cap == 0;
    loss = 0;
    entropy_sum = 0;
    std::vector<float> lp, zeros;
    for (const Row & r : pack_rows(d, items, ctx)) {
        const Batch b = make_batch(d, r);
        LossSpec spec;
        spec.task = Task::POLICY;
        spec.entropy = p.entropy;
        spec.logit_scale = (float) (1.0 / pc.temperature);
        BatchResult first;
        if (!one_pass && !e.eval(b, spec, false, first)) return false;
        // the coefficients of every loss row
        std::vector<float> coef(b.rows.size());
        for (const Batch::Span & s : b.spans) {
            const Item & it = d.items[(size_t) s.item];
            const float * old = nullptr;
            if (one_pass) {
                zeros.assign((size_t) s.count, 0.0f);
                lp = zeros;
                old = zeros.data();
            } else {
                span_logps(s, first.row_nll, lp);
                old = p.old ? (*p.old)[(size_t) s.item].data() : lp.data();
            }
            PolicyTokens t = tokens_of(p, it, s.item, lp.data(), old, s.count);
            t.norm = policy_norm(pc, shape.samples, shape.tokens, shape.longest, s.count);
            policy_sample_loss(pc, t, coef.data() + s.first, nullptr);
        }
        spec.row_coef = &coef;
        spec.entropy = p.entropy && one_pass;
        BatchResult res;
        if (!e.eval(b, spec, true, res)) return false;
        // the loss and the metrics at the parameters of this step (before its update)
        const BatchResult & at = one_pass ? res : first;
        for (const Batch::Span & s : b.spans) {
            const Item & it = d.items[(size_t) s.item];
            span_logps(s, at.row_nll, lp);
            const float * old = p.old ? (*p.old)[(size_t) s.item].data() : lp.data();
            PolicyTokens t = tokens_of(p, it, s.item, lp.data(), old, s.count);
            t.norm = policy_norm(pc, shape.samples, shape.tokens, shape.longest, s.count);
            loss += policy_sample_loss(pc, t, nullptr, &stats);
            if (p.entropy)
                for (int64_t k = 0; k < s.count; k++) entropy_sum += at.row_entropy[(size_t) (s.first + k)];
        }
    }
    return true;
}

} // namespace st
