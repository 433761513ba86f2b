#include "data.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <algorithm>
#include <set>

#include "common.h"

namespace st {

const char * task_name(Task t) {
    return t == Task::SFT ? "sft" : t == Task::DPO ? "dpo" : "policy";
}

namespace {

// Reads little-endian values from a file, remembering whether it ran short.
struct Reader {
    FILE * f;
    bool short_read = false;

    bool bytes(void * out, size_t n) {
        if (short_read) return false;
        if (n > 0 && fread(out, 1, n, f) != n) short_read = true;
        return !short_read;
    }
    bool u32(uint32_t & v) { return bytes(&v, 4); }
    bool u64(uint64_t & v) { return bytes(&v, 8); }
};

struct Checker {
    const std::string & path;
    int64_t record;
    int64_t vocab;

    bool tokens(const char * field, const std::vector<int32_t> & t) {
        for (size_t j = 0; j < t.size(); j++) {
            if (t[j] < 0 || t[j] >= vocab) {
                fprintf(stderr, "read_dataset: error: %s: record %lld: %s[%zu] = %d is not a token of the model (vocabulary of %lld)\n",
                        path.c_str(), (long long) record, field, j, t[j], (long long) vocab);
                return false;
            }
        }
        return true;
    }
    bool weights(const char * field, const std::vector<float> & w) {
        for (size_t j = 0; j < w.size(); j++) {
            if (!std::isfinite(w[j]) || w[j] < 0) {
                fprintf(stderr, "read_dataset: error: %s: record %lld: %s[%zu] = %g; weights must be finite and >= 0\n",
                        path.c_str(), (long long) record, field, j, w[j]);
                return false;
            }
        }
        return true;
    }
};

bool read_seq(Reader & r, uint32_t n, std::vector<int32_t> & tokens, std::vector<float> * weights) {
    tokens.resize(n);
    if (!r.bytes(tokens.data(), n * sizeof(int32_t))) return false;
    if (weights) {
        weights->resize(n);
        if (!r.bytes(weights->data(), n * sizeof(float))) return false;
    }
    return true;
}

} // namespace

bool read_dataset(const std::string & path, int64_t model_vocab, int64_t max_len, Dataset & out) {
    out.path = path;
    if (!file_fingerprint(path, out.fingerprint)) {
        fprintf(stderr, "%s: error: cannot read the data file %s\n", __func__, path.c_str());
        return false;
    }
    FILE * f = fopen(path.c_str(), "rb");
    if (!f) {
        fprintf(stderr, "%s: error: cannot open the data file %s\n", __func__, path.c_str());
        return false;
    }
    struct Guard { FILE * f; ~Guard() { fclose(f); } } guard{f};
    Reader r{f};

    char magic[8];
    uint32_t version = 0, kind = 0, n_vocab = 0, reserved = 0;
    uint64_t n_records = 0;
    if (!r.bytes(magic, 8) || memcmp(magic, "STILLTRN", 8) != 0) {
        fprintf(stderr, "%s: error: %s is not a still-train data file (bad magic)\n", __func__, path.c_str());
        return false;
    }
    if (!r.u32(version) || !r.u32(kind) || !r.u32(n_vocab) || !r.u32(reserved) || !r.u64(n_records)) {
        fprintf(stderr, "%s: error: %s: the header is truncated\n", __func__, path.c_str());
        return false;
    }
    if (version != 1) {
        fprintf(stderr, "%s: error: %s: data format version %u is not supported (expected 1)\n", __func__, path.c_str(), version);
        return false;
    }
    if (kind < 1 || kind > 3) {
        fprintf(stderr, "%s: error: %s: unknown record kind %u\n", __func__, path.c_str(), kind);
        return false;
    }
    if ((int64_t) n_vocab != model_vocab) {
        fprintf(stderr, "%s: error: %s was tokenized for a vocabulary of %u tokens, but the model has %lld\n",
                __func__, path.c_str(), n_vocab, (long long) model_vocab);
        return false;
    }
    if (n_records == 0) {
        fprintf(stderr, "%s: error: %s holds no records\n", __func__, path.c_str());
        return false;
    }
    out.task = (Task) kind;
    out.n_vocab = n_vocab;

    // a record count beyond what the file can hold is damage, not a reason to allocate
    if (fseek(f, 0, SEEK_END) != 0) return false;
    const uint64_t file_size = (uint64_t) ftell(f);
    if (fseek(f, 32, SEEK_SET) != 0) return false;
    if (n_records > file_size / 4) {
        fprintf(stderr, "%s: error: %s: header claims %llu records, more than the file can hold\n",
                __func__, path.c_str(), (unsigned long long) n_records);
        return false;
    }
    out.items.resize(n_records);

    for (uint64_t i = 0; i < n_records; i++) {
        Item & it = out.items[i];
        Checker ck{path, (int64_t) i, model_vocab};
        auto truncated = [&]() {
            fprintf(stderr, "%s: error: %s: record %llu is truncated (the file ends early)\n", __func__, path.c_str(), (unsigned long long) i);
            return false;
        };
        auto too_long = [&](uint64_t n) {
            fprintf(stderr, "%s: error: %s: record %llu has %llu tokens, more than the longest sequence allowed (%lld, --ctx)\n",
                    __func__, path.c_str(), (unsigned long long) i, (unsigned long long) n, (long long) max_len);
            return false;
        };
        if (out.task == Task::SFT) {
            uint32_t n = 0;
            if (!r.u32(n)) return truncated();
            if (n < 2) {
                fprintf(stderr, "%s: error: %s: record %llu has %u tokens; an example needs at least 2\n", __func__, path.c_str(), (unsigned long long) i, n);
                return false;
            }
            if ((int64_t) n > max_len) return too_long(n);
            if (!read_seq(r, n, it.a.tokens, &it.a.weights)) return truncated();
            if (!ck.tokens("tokens", it.a.tokens) || !ck.weights("weights", it.a.weights)) return false;
            if (it.a.weights[0] != 0) {
                fprintf(stderr, "%s: error: %s: record %llu: weights[0] must be 0 (nothing predicts the first token)\n",
                        __func__, path.c_str(), (unsigned long long) i);
                return false;
            }
        } else if (out.task == Task::POLICY) {
            uint32_t np = 0, nc = 0;
            if (!r.u32(np) || !r.u32(nc)) return truncated();
            if (np == 0 || nc == 0) {
                fprintf(stderr, "%s: error: %s: record %llu: a policy sample needs a prompt and a completion (%u and %u tokens)\n",
                        __func__, path.c_str(), (unsigned long long) i, np, nc);
                return false;
            }
            if ((int64_t) np + nc > max_len) return too_long((uint64_t) np + nc);
            if (!read_seq(r, np + nc, it.a.tokens, nullptr) || !r.bytes(&it.reward, 4) || !r.u32(it.group)) return truncated();
            it.sampler_logps.resize(nc);
            if (!r.bytes(it.sampler_logps.data(), nc * sizeof(float))) return truncated();
            if (!ck.tokens("tokens", it.a.tokens)) return false;
            if (!std::isfinite(it.reward)) {
                fprintf(stderr, "%s: error: %s: record %llu: reward = %g; a reward must be finite\n", __func__, path.c_str(), (unsigned long long) i, it.reward);
                return false;
            }
            for (size_t j = 0; j < it.sampler_logps.size(); j++) {
                const float lp = it.sampler_logps[j];
                if (!std::isnan(lp) && !(lp <= 0)) {
                    fprintf(stderr, "%s: error: %s: record %llu: sampler_logprobs[%zu] = %g; a log-probability is <= 0 (or NaN: unknown)\n",
                            __func__, path.c_str(), (unsigned long long) i, j, lp);
                    return false;
                }
            }
            it.n_prompt = np;
            it.a.weights.assign(np, 0.0f);
            it.a.weights.resize((size_t) np + nc, 1.0f);
        } else {
            uint32_t np = 0, nc = 0, nr = 0;
            if (!r.u32(np) || !r.u32(nc) || !r.u32(nr)) return truncated();
            if (nc == 0 || nr == 0) {
                fprintf(stderr, "%s: error: %s: record %llu: the chosen and rejected completions must not be empty\n",
                        __func__, path.c_str(), (unsigned long long) i);
                return false;
            }
            const uint64_t total = 2ull * np + nc + nr;
            if ((int64_t) total > max_len) return too_long(total);
            std::vector<int32_t> prompt, chosen, rejected;
            std::vector<float> cw, csw, rw;
            if (!read_seq(r, np, prompt, nullptr) || !read_seq(r, nc, chosen, &cw)) return truncated();
            csw.resize(nc);
            if (!r.bytes(csw.data(), nc * sizeof(float))) return truncated();
            if (!read_seq(r, nr, rejected, &rw)) return truncated();
            if (!ck.tokens("prompt", prompt) || !ck.tokens("chosen", chosen) || !ck.tokens("rejected", rejected) ||
                !ck.weights("chosen_weights", cw) || !ck.weights("chosen_sft_weights", csw) || !ck.weights("rejected_weights", rw)) {
                return false;
            }
            if (np == 0 && (cw[0] != 0 || csw[0] != 0 || rw[0] != 0)) {
                fprintf(stderr, "%s: error: %s: record %llu: with an empty prompt the first completion token cannot carry a weight\n",
                        __func__, path.c_str(), (unsigned long long) i);
                return false;
            }
            auto build = [&](Sequence & s, const std::vector<int32_t> & comp, const std::vector<float> & w, const std::vector<float> * sw) {
                s.tokens = prompt;
                s.tokens.insert(s.tokens.end(), comp.begin(), comp.end());
                s.weights.assign(np, 0.0f);
                s.weights.insert(s.weights.end(), w.begin(), w.end());
                if (sw) {
                    s.sft_weights.assign(np, 0.0f);
                    s.sft_weights.insert(s.sft_weights.end(), sw->begin(), sw->end());
                }
            };
            build(it.a, chosen, cw, &csw);
            build(it.b, rejected, rw, nullptr);
        }
    }
    // loss groups per item, for the packing
    for (uint64_t i = 0; i < n_records; i++) {
        Item & it = out.items[i];
        auto distinct = [](const std::vector<float> & w) {
            std::set<float> s;
            for (size_t j = 1; j < w.size(); j++) if (w[j] > 0) s.insert(w[j]);
            return std::vector<float>(s.begin(), s.end());
        };
        if (out.task == Task::SFT) {
            it.weights = distinct(it.a.weights);
            it.groups = (int) it.weights.size();
        } else if (out.task == Task::POLICY) {
            it.groups = 0; // policy rows score every completion token on its own
        } else {
            it.groups = (int) (distinct(it.a.weights).size() + distinct(it.b.weights).size() +
                               (it.a.sft_weights == it.a.weights ? 0 : distinct(it.a.sft_weights).size()));
        }
        if (it.groups > MAX_ROW_GROUPS) {
            fprintf(stderr, "%s: error: %s: record %llu has %d distinct loss weights; at most %d are supported\n",
                    __func__, path.c_str(), (unsigned long long) i, it.groups, MAX_ROW_GROUPS);
            return false;
        }
    }

    uint8_t extra;
    if (fread(&extra, 1, 1, f) == 1) {
        fprintf(stderr, "%s: error: %s has bytes after its last record (%llu records announced)\n",
                __func__, path.c_str(), (unsigned long long) n_records);
        return false;
    }
    return true;
}

std::vector<Row> pack_rows(const Dataset & data, const std::vector<int64_t> & items, int64_t max_len) {
    std::vector<Row> rows;
    Row cur;
    std::vector<float> weights; // SFT: the distinct weights in the current row
    int groups = 0;             // DPO: loss groups in the current row
    for (int64_t idx : items) {
        const Item & it = data.items[idx];
        const int64_t len = it.length();
        std::vector<float> merged;
        std::set_union(weights.begin(), weights.end(), it.weights.begin(), it.weights.end(), std::back_inserter(merged));
        const int row_groups = data.task == Task::SFT ? (int) merged.size() : groups + it.groups;
        if (cur.tokens > 0 && (cur.tokens + len > max_len || row_groups > MAX_ROW_GROUPS)) {
            rows.push_back(cur);
            cur = Row();
            merged = it.weights;
            groups = 0;
        }
        cur.items.push_back(idx);
        cur.tokens += len;
        weights = merged;
        groups += it.groups;
    }
    if (cur.tokens > 0) rows.push_back(cur);
    return rows;
}

std::vector<Step> make_plan(const Dataset & data, int64_t epochs, int64_t max_len, int64_t accum, uint64_t seed) {
    std::vector<Step> plan;
    for (int64_t e = 0; e < epochs; e++) {
        const std::vector<Row> rows = pack_rows(data, shuffled_indices((int64_t) data.items.size(), seed, (uint64_t) e), max_len);
        for (size_t r = 0; r < rows.size(); r += accum) {
            Step s;
            s.epoch = e;
            for (size_t k = r; k < rows.size() && k < r + (size_t) accum; k++) s.rows.push_back(rows[k]);
            plan.push_back(s);
        }
    }
    return plan;
}

} // namespace st
