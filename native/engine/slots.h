// Sharing prompts between the slots (sequences) of one context: the scheduler that the
// rollout engine and the scorer both use.
//
// Work comes in groups that share a prompt (a request's samples; the records with one
// prompt). A group's prompt is decoded once, into one slot (its holder); its other items
// start from copies of those cells and from the prompt's saved last logits. An idle slot
// takes, in this order:
//   1. its own group's next item: its cells already hold the prompt;
//   2. the next item of the oldest started group with items left, the prompt's cells
//      copied from a slot that holds them;
//   3. the next group from the queue, whose prompt it decodes itself;
// else it stays idle (optionally dropping what its cells held).
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <vector>

#include "llama.h"

namespace still {

class PromptSlots {
public:
    struct Group {
        size_t prompt_len = 0;
        size_t items = 0;
        size_t next = 0;                // items taken so far (take())
        bool ready = false;             // the prompt is decoded, its last logits saved
        int32_t holder = -1;            // the slot the prompt is decoded into
        std::vector<float> last_logits; // at the last prompt position, for items started later
        bool has_items() const { return next < items; }
    };
    enum class Start { own, copied, fresh };

    PromptSlots(llama_memory_t mem, bool unified, int32_t n_slots);

    // Queues a group; groups start in the order they are added.
    int32_t add_group(size_t prompt_len, size_t items);
    Group & group(int32_t g) { return groups_[static_cast<size_t>(g)]; }
    // The group whose prompt slot s's cells hold (or are decoding); -1 for none.
    int32_t group_of(int32_t s) const { return slot_group_[static_cast<size_t>(s)]; }
    // The index of group g's next item, counted as started.
    size_t take(int32_t g) { return group(g).next++; }

    // Groups with a prompt decoded or decoding, oldest first, until all their items started.
    const std::vector<int32_t> & started() const { return started_; }

    // Gives every idle slot work, in slot order. `idle(s)` says whether slot s is free;
    // `start(g, s, how)` begins group g's next item in slot s (for Start::fresh the cells
    // are empty and the prompt is to be decoded). A slot that is still idle after a start
    // (its item ended at once) is served again. `drop_idle`: a slot left without work
    // forgets its cells.
    void fill(const std::function<bool(int32_t)> & idle, const std::function<void(int32_t, int32_t, Start)> & start, bool drop_idle);

    // Group g's prompt is decoded; `logits` (n_vocab floats) are kept while items are left to start.
    void set_ready(int32_t g, const float * logits, int32_t n_vocab);

    // Frees the saved logits of groups whose items have all started.
    void release_started();

private:
    int32_t holding_slot(int32_t g, int32_t except) const;

    llama_memory_t mem_;
    bool unified_;
    std::vector<Group> groups_;
    std::vector<int32_t> slot_group_;
    std::deque<int32_t> queue_;   // groups not started
    std::vector<int32_t> started_; // groups with a prompt decoded or decoding, oldest first, until all their items started
};

} // namespace still
