#include "slots.h"

#include <algorithm>

namespace still {

namespace {
// Slot `seq` keeps its first `n` positions and drops whatever followed.
void keep_prefix(llama_memory_t mem, llama_seq_id seq, size_t n) {
    llama_memory_seq_rm(mem, seq, static_cast<llama_pos>(n), -1);
}

// Gives slot `dst` the first `n` positions of slot `src`: in a unified cache by sharing
// the cells (metadata only); with per-sequence caches by copying the whole buffer (done
// by llama.cpp at the next decode) and dropping what lies past `n`.
void copy_prefix(llama_memory_t mem, bool unified, llama_seq_id src, llama_seq_id dst, size_t n) {
    llama_memory_seq_rm(mem, dst, -1, -1);
    if (unified) {
        llama_memory_seq_cp(mem, src, dst, 0, static_cast<llama_pos>(n));
    } else {
        llama_memory_seq_cp(mem, src, dst, -1, -1);
        keep_prefix(mem, dst, n);
    }
}
} // namespace

PromptSlots::PromptSlots(llama_memory_t mem, bool unified, int32_t n_slots)
    : mem_(mem), unified_(unified), slot_group_(static_cast<size_t>(n_slots), -1) {}

int32_t PromptSlots::add_group(size_t prompt_len, size_t items) {
    Group g;
    g.prompt_len = prompt_len;
    g.items = items;
    groups_.push_back(std::move(g));
    const int32_t index = static_cast<int32_t>(groups_.size() - 1);
    queue_.push_back(index);
    return index;
}

int32_t PromptSlots::holding_slot(int32_t g, int32_t except) const {
    for (size_t s = 0; s < slot_group_.size(); s++)
        if (slot_group_[s] == g && static_cast<int32_t>(s) != except) return static_cast<int32_t>(s);
    return -1;
}

void PromptSlots::fill(const std::function<bool(int32_t)> & idle, const std::function<void(int32_t, int32_t, Start)> & start, bool drop_idle) {
    for (int32_t s = 0; s < static_cast<int32_t>(slot_group_.size()); s++) {
        while (idle(s)) {
            const int32_t own = slot_group_[static_cast<size_t>(s)];
            if (own >= 0 && group(own).ready && group(own).has_items()) {
                keep_prefix(mem_, s, group(own).prompt_len);
                start(own, s, Start::own);
                continue;
            }
            int32_t from = -1, src = -1;
            for (int32_t g : started_) {
                if (!group(g).ready || !group(g).has_items()) continue;
                src = holding_slot(g, s);
                if (src >= 0) {
                    from = g;
                    break;
                }
            }
            if (from >= 0) {
                copy_prefix(mem_, unified_, src, s, group(from).prompt_len);
                slot_group_[static_cast<size_t>(s)] = from;
                start(from, s, Start::copied);
                continue;
            }
            if (!queue_.empty()) {
                const int32_t g = queue_.front();
                queue_.pop_front();
                llama_memory_seq_rm(mem_, s, -1, -1);
                slot_group_[static_cast<size_t>(s)] = g;
                group(g).holder = s;
                started_.push_back(g);
                start(g, s, Start::fresh);
                continue;
            }
            if (drop_idle && own >= 0) {
                llama_memory_seq_rm(mem_, s, -1, -1);
                slot_group_[static_cast<size_t>(s)] = -1;
            }
            break;
        }
    }
}

void PromptSlots::set_ready(int32_t g, const float * logits, int32_t n_vocab) {
    Group & group = this->group(g);
    group.ready = true;
    if (group.has_items()) group.last_logits.assign(logits, logits + n_vocab);
}

void PromptSlots::release_started() {
    started_.erase(std::remove_if(started_.begin(), started_.end(), [&](int32_t g) {
        Group & group = this->group(g);
        if (!group.ready || group.has_items()) return false;
        group.last_logits.clear();
        group.last_logits.shrink_to_fit();
        return true;
    }), started_.end());
}

} // namespace still
