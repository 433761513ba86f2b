#include "loss.h"

#include <cmath>
#include <cstdio>

#include "engine.h"

namespace st {

const char * dpo_loss_name(DpoLoss l) {
    return l == DpoLoss::SIGMOID ? "sigmoid" : l == DpoLoss::IPO ? "ipo" : "hinge";
}

namespace {
double ref_margin(const LossSpec & spec, int64_t item) {
    return (*spec.ref_chosen)[(size_t) item] - (*spec.ref_rejected)[(size_t) item];
}
} // namespace

ggml_tensor * loss_graph(ggml_context * ctx, const Batch & b, const LossSpec & spec, const std::vector<ggml_tensor *> & nll) {
    ggml_tensor * loss = nullptr;
    auto add = [&](ggml_tensor * t) { loss = loss ? ggml_add(ctx, loss, t) : t; };
    if (spec.task == Task::SFT) {
        for (ggml_tensor * t : nll) if (t) add(t);
    } else {
        const float beta = spec.dpo.beta;
        for (const Batch::Pair & p : b.pairs) {
            ggml_tensor * nc = nll[(size_t) p.chosen];
            ggml_tensor * nr = nll[(size_t) p.rejected];
            if (!nc || !nr) {
                fprintf(stderr, "%s: error: pair %lld has no weighted tokens in its chosen or rejected completion\n", __func__, (long long) p.item);
                return nullptr;
            }
            const double m = ref_margin(spec, p.item);
            ggml_tensor * margin = ggml_sub(ctx, nr, nc); // lp_c − lp_r; d = margin − m
            switch (spec.dpo.loss) {
                case DpoLoss::SIGMOID: add(ggml_softplus(ctx, ggml_scale_bias(ctx, margin, -beta, (float) (beta * m)))); break;
                case DpoLoss::IPO: add(ggml_sqr(ctx, ggml_scale_bias(ctx, margin, 1.0f, (float) (-m - 1.0 / (2.0 * beta))))); break;
                case DpoLoss::HINGE: add(ggml_relu(ctx, ggml_scale_bias(ctx, margin, -beta, (float) (1.0 + beta * m)))); break;
            }
            if (spec.dpo.sft_alpha > 0 && nll[(size_t) p.sft])
                add(ggml_scale(ctx, nll[(size_t) p.sft], (float) (spec.dpo.sft_alpha / b.terms[(size_t) p.sft].weight_sum)));
        }
    }
    return loss ? ggml_scale(ctx, loss, (float) spec.scale) : nullptr;
}

double loss_value(const Batch & b, const LossSpec & spec, const std::vector<double> & nll, std::vector<double> * dnll) {
    if (dnll) dnll->assign(nll.size(), 0.0);
    double loss = 0;
    if (spec.task == Task::SFT) {
        for (size_t t = 0; t < nll.size(); t++) {
            loss += nll[t];
            if (dnll) (*dnll)[t] = spec.scale;
        }
        return spec.scale * loss;
    }
    const double beta = spec.dpo.beta;
    for (const Batch::Pair & p : b.pairs) {
        const double d = (nll[(size_t) p.rejected] - nll[(size_t) p.chosen]) - ref_margin(spec, p.item);
        double l = 0, dl_dd = 0;
        switch (spec.dpo.loss) {
            case DpoLoss::SIGMOID: {
                const double x = -beta * d; // softplus(x), its slope σ(x)
                l = x > 0 ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x));
                dl_dd = -beta / (1.0 + std::exp(-x));
                break;
            }
            case DpoLoss::IPO: {
                const double u = d - 1.0 / (2.0 * beta);
                l = u * u;
                dl_dd = 2.0 * u;
                break;
            }
            case DpoLoss::HINGE: {
                const double u = 1.0 - beta * d;
                l = u > 0 ? u : 0.0;
                dl_dd = u > 0 ? -beta : 0.0;
                break;
            }
        }
        loss += l;
        if (dnll) {
            // d = nll_r − nll_c − m
            (*dnll)[(size_t) p.chosen] -= spec.scale * dl_dd;
            (*dnll)[(size_t) p.rejected] += spec.scale * dl_dd;
        }
        if (spec.dpo.sft_alpha > 0) {
            const double w = spec.dpo.sft_alpha / b.terms[(size_t) p.sft].weight_sum;
            loss += w * nll[(size_t) p.sft];
            if (dnll) (*dnll)[(size_t) p.sft] += spec.scale * w;
        }
    }
    return spec.scale * loss;
}

} // namespace st
