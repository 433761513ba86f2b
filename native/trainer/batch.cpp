// A packed row as the graphs take it: tokens, positions, where each token's sequence
// starts (the packing mask), and the loss rows grouped by term and weight.
#include <algorithm>
#include <cmath>

#include "engine.h"

namespace st {

// Rows are padded to a multiple of this many tokens: the backward pass contracts over the
// tokens, and the CPU's fast matrix kernels need that dimension in whole vector blocks.
static const int64_t ROW_PAD = 16;

Batch make_batch(const Dataset & data, const Row & row) {
    Batch b;
    const int64_t T = (row.tokens + ROW_PAD - 1) / ROW_PAD * ROW_PAD;
    b.n_tokens = T;
    b.real_tokens = row.tokens;
    b.tokens.reserve(T);
    b.pos.reserve(T);
    b.seq_start.reserve(T);

    // lays out one sequence; returns its offset in the row
    auto place = [&](const Sequence & s) {
        const int64_t off = (int64_t) b.tokens.size();
        const int64_t n = (int64_t) s.tokens.size();
        for (int64_t j = 0; j < n; j++) {
            b.tokens.push_back(s.tokens[j]);
            b.pos.push_back((int32_t) j);
            b.seq_start.push_back(off);
        }
        return off;
    };
    // appends a term: every weighted prediction of the given sequences, grouped by weight
    struct Pick { int32_t row; int32_t label; float w; };
    auto add_term = [&](std::vector<Pick> picks) {
        std::stable_sort(picks.begin(), picks.end(), [](const Pick & x, const Pick & y) { return x.w < y.w; });
        Batch::Term term;
        for (size_t i = 0; i < picks.size(); i++) {
            if (i == 0 || picks[i].w != picks[i - 1].w) term.groups.push_back({(int64_t) b.rows.size(), 0, picks[i].w});
            term.groups.back().count++;
            term.weight_sum += picks[i].w;
            b.rows.push_back(picks[i].row);
            b.labels.push_back(picks[i].label);
        }
        b.terms.push_back(term);
        return (int) b.terms.size() - 1;
    };
    auto picks_of = [](const Sequence & s, const std::vector<float> & w, int64_t off, std::vector<Pick> & out) {
        for (size_t j = 1; j < s.tokens.size(); j++) {
            if (w[j] > 0) out.push_back({(int32_t) (off + (int64_t) j - 1), s.tokens[j], w[j]});
        }
    };

    if (data.task == Task::SFT) {
        std::vector<Pick> picks;
        for (int64_t idx : row.items) {
            const Sequence & s = data.items[idx].a;
            picks_of(s, s.weights, place(s), picks);
        }
        add_term(picks);
    } else if (data.task == Task::POLICY) {
        // every completion token is a loss row of its own; no terms
        for (int64_t idx : row.items) {
            const Item & it = data.items[idx];
            const int64_t off = place(it.a);
            const int64_t first = (int64_t) b.rows.size();
            for (size_t j = (size_t) it.n_prompt; j < it.a.tokens.size(); j++) {
                b.rows.push_back((int32_t) (off + (int64_t) j - 1));
                b.labels.push_back(it.a.tokens[j]);
            }
            b.spans.push_back({idx, first, (int64_t) b.rows.size() - first});
        }
    } else {
        for (int64_t idx : row.items) {
            const Item & it = data.items[idx];
            const int64_t off_c = place(it.a);
            const int64_t off_r = place(it.b);
            std::vector<Pick> pc, pr, ps;
            picks_of(it.a, it.a.weights, off_c, pc);
            picks_of(it.b, it.b.weights, off_r, pr);
            Batch::Pair p;
            p.item = idx;
            p.chosen = add_term(pc);
            p.rejected = add_term(pr);
            if (it.a.sft_weights == it.a.weights) {
                p.sft = p.chosen;
            } else {
                picks_of(it.a, it.a.sft_weights, off_c, ps);
                p.sft = add_term(ps);
            }
            b.pairs.push_back(p);
        }
    }
    // padding: token 0 at position 0, seeing only itself, never scored
    for (int64_t i = (int64_t) b.tokens.size(); i < T; i++) {
        b.tokens.push_back(0);
        b.pos.push_back(0);
        b.seq_start.push_back(i);
    }
    b.loss_tokens = (int64_t) b.rows.size();
    return b;
}

void Batch::mask(int64_t q0, int64_t nq, int64_t k0, int64_t nk, float * out) const {
    for (int64_t i = 0; i < nq; i++) {
        const int64_t q = q0 + i;
        float * row = out + (size_t) i * (size_t) nk;
        for (int64_t j = 0; j < nk; j++) {
            const int64_t k = k0 + j;
            row[j] = k >= seq_start[(size_t) q] && k <= q ? 0.0f : -INFINITY;
        }
    }
}

int64_t Batch::first_key(int64_t q0, int64_t q1) const {
    int64_t k0 = q0;
    for (int64_t q = q0; q < q1; q++) k0 = std::min<int64_t>(k0, seq_start[(size_t) q]);
    return k0;
}

} // namespace st
