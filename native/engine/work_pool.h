// A small pool that runs a loop's iterations on the CPU threads a decode just left idle.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace still {

class WorkPool {
public:
    explicit WorkPool(int32_t workers) {
        for (int32_t i = 0; i < workers; i++) threads_.emplace_back([this] { loop(); });
    }

    ~WorkPool() {
        {
            std::lock_guard<std::mutex> lock(mu_);
            stop_ = true;
        }
        wake_.notify_all();
        for (auto & t : threads_) t.join();
    }

    int32_t workers() const { return static_cast<int32_t>(threads_.size()); }

    // fn(i) for every i in [0, n), on the workers and the calling thread.
    void run(int32_t n, const std::function<void(int32_t)> & fn) {
        {
            std::lock_guard<std::mutex> lock(mu_);
            fn_ = &fn;
            n_ = n;
            next_.store(0);
            busy_ = static_cast<int32_t>(threads_.size());
            generation_++;
        }
        wake_.notify_all();
        work();
        std::unique_lock<std::mutex> lock(mu_);
        idle_.wait(lock, [this] { return busy_ == 0; });
        fn_ = nullptr;
    }

private:
    void work() {
        for (int32_t i = next_.fetch_add(1); i < n_; i = next_.fetch_add(1)) (*fn_)(i);
    }

    void loop() {
        uint64_t seen = 0;
        while (true) {
            {
                std::unique_lock<std::mutex> lock(mu_);
                wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
                if (stop_) return;
                seen = generation_;
            }
            work();
            {
                std::lock_guard<std::mutex> lock(mu_);
                busy_--;
            }
            idle_.notify_one();
        }
    }

    std::vector<std::thread> threads_;
    std::mutex mu_;
    std::condition_variable wake_, idle_;
    const std::function<void(int32_t)> * fn_ = nullptr;
    int32_t n_ = 0;
    std::atomic<int32_t> next_{0};
    int32_t busy_ = 0;
    uint64_t generation_ = 0;
    bool stop_ = false;
};

} // namespace still
