// still-train: LoRA (or full) fine-tuning of llama-family GGUF models on ggml, with SFT,
// DPO and policy-gradient (GRPO family) losses. main() only parses arguments; the work is
// in train.cpp and serve.cpp.
//
//   still-train sft  --model M --data D --out A.gguf [options]
//   still-train dpo  --model M --data D --out A.gguf [--beta B] [--sft-alpha A] [--loss sigmoid|ipo|hinge] [options]
//   still-train serve --model M --checkpoint C [--policy-loss grpo|dr_grpo|dapo] [options]   (commands on stdin)
//   still-train grad-check --model M --data D [options]
//   still-train policy-loss [policy options] < samples.json
//   still-train logits --model M --tokens 1,2,3 --out logits.f32
//
// Progress: one JSON object per line on stdout. Errors: stderr, exit code 1.
// SIGINT/SIGTERM: checkpoint, then exit 130; rerun with --resume to continue.

#include <atomic>
#include <cerrno>
#include <csignal>
#include <exception>
#include <initializer_list>
#include <new>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "train.h"

using namespace st;

static std::atomic<bool> g_stop{false};

static void on_signal(int) {
    g_stop.store(true);
}

static void install_signal_handlers() {
#if defined(_WIN32)
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
#else
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
#endif
}

static void usage(const char * argv0) {
    fprintf(stderr,
        "usage: %s sft|dpo --model M --data D --out OUT [options]\n"
        "       %s serve --model M --checkpoint FILE [options]   (the resident trainer of online RL; see serve.cpp)\n"
        "       %s grad-check --model M --data D [options]\n"
        "       %s policy-loss [policy options] < samples.json\n"
        "       %s logits --model M --tokens 1,2,3 --out FILE\n"
        "       %s q8-bench [--shapes 151936x896,4864x896] [--columns 1,8,32,128] [--repeats 10] [--threads N]\n"
        "                (still's Q8_0 kernel against ggml's product; JSON lines; see q8_bench.cpp)\n"
        "\n"
        "model and adapter:\n"
        "  --model FILE          base GGUF (llama, qwen2, qwen3)\n"
        "  --full                train every weight in F32 and write a full model (small models)\n"
        "  --rank R              LoRA rank (8)\n"
        "  --alpha A             LoRA alpha; the update is scaled by alpha/rank (16)\n"
        "  --modules LIST        adapted modules among q,k,v,o,gate,up,down (all)\n"
        "  --adapter FILE        start from this LoRA adapter (its rank, alpha and modules)\n"
        "  --init-random-b       LoRA B random instead of 0 (gradient checks)\n"
        "data and schedule:\n"
        "  --data FILE           pre-tokenized data (see native/trainer/data.h)\n"
        "  --ctx N               longest packed row in tokens, up to the model's context (1024)\n"
        "  --epochs N            passes over the data (1)\n"
        "  --grad-accum N        rows per optimizer step (1)\n"
        "  --max-steps N         stop after N steps (0: all)\n"
        "  --seed N              data order and LoRA init (0)\n"
        "optimizer (AdamW, warmup then cosine):\n"
        "  --lr X (1e-4)  --min-lr X (0)  --constant-lr  --warmup-steps N  --warmup-ratio X (0)\n"
        "  --weight-decay X (0)  --adam-beta1 X (0.9)  --adam-beta2 X (0.999)  --adam-eps X (1e-8)\n"
        "  --max-grad-norm X     clip the gradient norm (1; 0: off)\n"
        "DPO:\n"
        "  --beta X (0.1)  --sft-alpha X (0)  --loss sigmoid|ipo|hinge  --ref-logps FILE\n"
        "policy (serve, grad-check and policy-loss on policy samples):\n"
        "  --policy-loss L       grpo (default), dr_grpo or dapo (see policy.h)\n"
        "  --scale-rewards S     group: advantages divided by the group's reward std (grpo, dapo); none (dr_grpo)\n"
        "  --clip-low X (0.2)  --clip-high X (0.2; DAPO 0.28)   the ratio's band [1 - low, 1 + high]\n"
        "  --kl-beta X (0)       weight of the KL term to the starting policy\n"
        "  --tis-cap X (0)       truncated importance sampling against the sampler's log-probs (0: off)\n"
        "  --temperature T (1)   the sampling temperature: log-probs are log softmax(logits / T)\n"
        "  --max-completion N    dr_grpo's length normaliser (0: the longest completion of the step)\n"
        "output:\n"
        "  --out FILE            adapter GGUF (or full model with --full)\n"
        "  --checkpoint FILE     checkpoint (OUT.ckpt.gguf)\n"
        "  --resume              continue from the checkpoint when it exists\n"
        "  --save-every N        checkpoint every N steps (0)\n"
        "  --log-every N         progress line every N steps (1)\n"
        "gradient check:\n"
        "  --entries N (4)  --fd-step X (1e-3, relative loss change)  --ref-shift X (0.5)\n"
        "  --no-finite-differences  only the loss and the gradient norms\n"
        "runtime:\n"
        "  --threads N           CPU threads (STILL_THREADS or all cores)\n"
        "  --poll N              threads busy-wait between tasks, 0 (sleep) to 100 (spin) (50)\n"
        "  --backend-dir DIR     folder of the ggml backend modules (STILL_BACKEND_DIR)\n"
        "  --no-gpu              stay on the CPU\n"
        "memory (long rows):\n"
        "  --recompute M         auto (default: one graph for rows up to 2048 tokens when it fits, else chunked with recomputation), on, off\n"
        "  --block-tokens N      chunked steps: queries per attention chunk, tokens per chunk (0: sized by --chunk-mb)\n"
        "  --loss-rows N         chunked steps: loss rows per chunk (0: sized by --chunk-mb)\n"
        "  --chunk-mb N          chunked steps: compute memory one chunk's graph aims for (256)\n"
        "  --memory-budget MB    memory a step may use (default: what is free)\n"
        "  --plan-only           print the memory plan (one JSON line) and stop\n"
        "  --dump-grads FILE     grad-check: write every gradient (F32, trainable order) to FILE\n"
        "  --backward-products K mul_mat (default) or out_prod: the kernel of the backward pass's products\n"
        "  --backward-weights T  f32 (default) or bf16: frozen weights in the backward products (bf16:\n"
        "                        half the memory, faster where the CPU has AVX-512 BF16, less exact)\n"
        "  --f32-products K      still (default) or ggml: the kernel of the F32 matrix products\n"
        "  --q8-products K       still (default where the CPU has AVX-512 VNNI or AVX-VNNI) or ggml: the kernel of\n"
        "                        the forward products of Q8_0 weights\n",
        argv0, argv0, argv0, argv0, argv0, argv0);
}

static bool parse_int(const char * s, int64_t & out) {
    char * end = nullptr;
    errno = 0;
    const long long v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0') return false;
    out = v;
    return true;
}

static bool parse_float(const char * s, double & out) {
    char * end = nullptr;
    errno = 0;
    const double v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !(v == v)) return false;
    out = v;
    return true;
}

static int run(int argc, char ** argv);

// A list of whole numbers from lo to hi ("1,8,32"), or of pairs ("151936x896,4864x896").
static bool parse_list(const std::string & text, int64_t lo, int64_t hi, std::vector<int64_t> & out) {
    size_t p = 0;
    while (p <= text.size()) {
        const size_t q = std::min(text.find(',', p), text.size());
        int64_t v = 0;
        if (!parse_int(text.substr(p, q - p).c_str(), v) || v < lo || v > hi) return false;
        out.push_back(v);
        p = q + 1;
    }
    return !out.empty();
}

// still-train q8-bench [--shapes RxK,...] [--columns N,...] [--repeats N] [--threads N] [--backend-dir D]
static int q8_bench_command(int argc, char ** argv) {
    EngineOptions eo;
    if (const char * env = getenv("STILL_BACKEND_DIR")) eo.backend_dir = env;
    eo.threads = (int) std::max(1u, std::thread::hardware_concurrency());
    std::vector<std::pair<int64_t, int64_t>> shapes = {{151936, 896}, {4864, 896}, {896, 4864}};
    std::vector<int64_t> columns = {1, 8, 32, 128};
    int64_t repeats = 10;
    for (int i = 2; i < argc; i++) {
        const std::string a = argv[i];
        if (i + 1 >= argc) {
            fprintf(stderr, "main: error: %s needs a value\n", a.c_str());
            return EXIT_ERROR;
        }
        const std::string v = argv[++i];
        std::vector<int64_t> list;
        if (a == "--shapes") {
            shapes.clear();
            size_t p = 0;
            while (p <= v.size()) {
                const size_t q = std::min(v.find(',', p), v.size());
                const std::string one = v.substr(p, q - p);
                const size_t x = one.find('x');
                std::vector<int64_t> r, k;
                if (x == std::string::npos || !parse_list(one.substr(0, x), 1, 1 << 24, r) || r.size() != 1 ||
                    !parse_list(one.substr(x + 1), 32, 1 << 20, k) || k.size() != 1 || k[0] % 32 != 0) {
                    fprintf(stderr, "main: error: --shapes takes ROWSxK pairs (K a multiple of 32), e.g. 151936x896,4864x896; got '%s'\n", one.c_str());
                    return EXIT_ERROR;
                }
                shapes.emplace_back(r[0], k[0]);
                p = q + 1;
            }
        } else if (a == "--columns") {
            if (!parse_list(v, 1, 65536, list)) {
                fprintf(stderr, "main: error: --columns takes whole numbers from 1 to 65536, e.g. 1,8,32; got '%s'\n", v.c_str());
                return EXIT_ERROR;
            }
            columns = list;
        } else if (a == "--repeats" || a == "--threads") {
            if (!parse_list(v, 1, a == "--threads" ? 1024 : 100000, list) || list.size() != 1) {
                fprintf(stderr, "main: error: %s takes a whole number of at least 1; got '%s'\n", a.c_str(), v.c_str());
                return EXIT_ERROR;
            }
            if (a == "--repeats") repeats = list[0];
            else eo.threads = (int) list[0];
        } else if (a == "--backend-dir") {
            eo.backend_dir = v;
        } else {
            fprintf(stderr, "main: error: unknown option '%s' for q8-bench (--shapes, --columns, --repeats, --threads, --backend-dir)\n", a.c_str());
            return EXIT_ERROR;
        }
    }
    return run_q8_bench(eo, shapes, columns, (int) repeats);
}

int main(int argc, char ** argv) {
    try {
        return run(argc, argv);
    } catch (const std::bad_alloc &) {
        fprintf(stderr, "main: error: out of memory; try a smaller --ctx, fewer --grad-accum rows or a smaller model\n");
    } catch (const std::exception & e) {
        fprintf(stderr, "main: error: %s\n", e.what());
    }
    return EXIT_ERROR;
}

static int run(int argc, char ** argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argv[0]);
        return argc < 2 ? EXIT_ERROR : EXIT_OK;
    }
    const std::string cmd = argv[1];
    if (cmd != "sft" && cmd != "dpo" && cmd != "serve" && cmd != "grad-check" && cmd != "policy-loss" && cmd != "logits" && cmd != "q8-bench") {
        fprintf(stderr, "main: error: unknown command '%s' (sft, dpo, serve, grad-check, policy-loss, logits, q8-bench)\n", cmd.c_str());
        return EXIT_ERROR;
    }
    if (cmd == "q8-bench") return q8_bench_command(argc, argv);

    EngineOptions eo;
    TrainConfig tc;
    GradCheckConfig gc;
    PolicyConfig pc;
    std::string scale_rewards;
    std::string tokens_arg;
    tc.task = cmd == "dpo" ? Task::DPO : cmd == "serve" ? Task::POLICY : Task::SFT;
    if (const char * env = getenv("STILL_BACKEND_DIR")) eo.backend_dir = env;
    eo.threads = (int) std::max(1u, std::thread::hardware_concurrency());
    if (const char * env = getenv("STILL_THREADS")) {
        int64_t n = 0;
        if (parse_int(env, n) && n > 0) eo.threads = (int) n;
    }

    for (int i = 2; i < argc; i++) {
        const std::string a = argv[i];
        auto value = [&]() -> const char * {
            if (i + 1 >= argc) {
                fprintf(stderr, "main: error: %s needs a value\n", a.c_str());
                exit(EXIT_ERROR);
            }
            return argv[++i];
        };
        auto int_in = [&](int64_t lo, int64_t hi) {
            const char * v = value();
            int64_t n = 0;
            if (!parse_int(v, n) || n < lo || n > hi) {
                fprintf(stderr, "main: error: %s must be a whole number from %lld to %lld, got '%s'\n", a.c_str(), (long long) lo, (long long) hi, v);
                exit(EXIT_ERROR);
            }
            return n;
        };
        auto float_in = [&](double lo, double hi) {
            const char * v = value();
            double x = 0;
            if (!parse_float(v, x) || x < lo || x > hi) {
                fprintf(stderr, "main: error: %s must be a number from %g to %g, got '%s'\n", a.c_str(), lo, hi, v);
                exit(EXIT_ERROR);
            }
            return x;
        };
        // the value, which must be one of the names given
        auto one_of = [&](std::initializer_list<const char *> names) -> std::string {
            const std::string v = value();
            std::string list;
            size_t k = 0;
            for (const char * n : names) {
                if (v == n) return v;
                if (k > 0) list += k + 1 == names.size() ? " or " : ", ";
                list += n;
                k++;
            }
            fprintf(stderr, "main: error: %s must be %s, got '%s'\n", a.c_str(), list.c_str(), v.c_str());
            exit(EXIT_ERROR);
        };
        const int64_t BIG = (int64_t) 1 << 40;

        if (a == "--model") eo.model_path = value();
        else if (a == "--data") tc.data = gc.data = value();
        else if (a == "--out") tc.out = value();
        else if (a == "--checkpoint") tc.checkpoint = value();
        else if (a == "--resume") tc.resume = true;
        else if (a == "--full") eo.full = true;
        else if (a == "--rank") eo.lora.rank = int_in(1, 4096);
        else if (a == "--alpha") eo.lora.alpha = (float) float_in(1e-6, 1e6);
        else if (a == "--modules") {
            for (bool & b : eo.lora.modules) b = false;
            std::string list = value();
            size_t p = 0;
            while (p <= list.size()) {
                const size_t q = std::min(list.find(',', p), list.size());
                const std::string name = list.substr(p, q - p);
                int found = -1;
                for (int m = 0; m < MOD_COUNT; m++) if (name == MODULE_NAMES[m]) found = m;
                if (found < 0) {
                    fprintf(stderr, "main: error: unknown module '%s' in --modules (q, k, v, o, gate, up, down)\n", name.c_str());
                    return EXIT_ERROR;
                }
                eo.lora.modules[found] = true;
                p = q + 1;
            }
        }
        else if (a == "--adapter") eo.init_adapter = value();
        else if (a == "--init-random-b") eo.init_random_b = true;
        else if (a == "--ctx") tc.ctx = gc.ctx = int_in(2, 1 << 17);
        else if (a == "--epochs") tc.epochs = int_in(1, 1 << 20);
        else if (a == "--grad-accum") tc.grad_accum = int_in(1, 1 << 20);
        else if (a == "--max-steps") tc.max_steps = int_in(0, BIG);
        else if (a == "--seed") { tc.seed = (uint64_t) int_in(0, BIG); eo.seed = tc.seed; }
        else if (a == "--lr") tc.lr = (float) float_in(1e-12, 10);
        else if (a == "--min-lr") tc.min_lr = (float) float_in(0, 10);
        else if (a == "--constant-lr") tc.constant_lr = true;
        else if (a == "--warmup-steps") tc.warmup_steps = int_in(0, BIG);
        else if (a == "--warmup-ratio") tc.warmup_ratio = (float) float_in(0, 1);
        else if (a == "--weight-decay") tc.weight_decay = (float) float_in(0, 1);
        else if (a == "--adam-beta1") tc.beta1 = (float) float_in(0, 0.999999);
        else if (a == "--adam-beta2") tc.beta2 = (float) float_in(0, 0.999999999);
        else if (a == "--adam-eps") tc.eps = (float) float_in(0, 1);
        else if (a == "--max-grad-norm") tc.max_grad_norm = (float) float_in(0, 1e12);
        else if (a == "--save-every") tc.save_every = int_in(0, BIG);
        else if (a == "--log-every") tc.log_every = int_in(1, BIG);
        else if (a == "--beta") tc.dpo.beta = gc.dpo.beta = (float) float_in(1e-6, 1e6);
        else if (a == "--sft-alpha") tc.dpo.sft_alpha = gc.dpo.sft_alpha = (float) float_in(0, 1e6);
        else if (a == "--loss") {
            const std::string l = value();
            DpoLoss v;
            if (l == "sigmoid") v = DpoLoss::SIGMOID;
            else if (l == "ipo") v = DpoLoss::IPO;
            else if (l == "hinge") v = DpoLoss::HINGE;
            else {
                fprintf(stderr, "main: error: --loss must be sigmoid, ipo or hinge, got '%s'\n", l.c_str());
                return EXIT_ERROR;
            }
            tc.dpo.loss = gc.dpo.loss = v;
        }
        else if (a == "--ref-logps") tc.ref_logps = value();
        else if (a == "--policy-loss") {
            const std::string l = value();
            if (!parse_policy_loss(l, pc.loss)) {
                fprintf(stderr, "main: error: --policy-loss must be grpo, dr_grpo or dapo, got '%s'\n", l.c_str());
                return EXIT_ERROR;
            }
        }
        else if (a == "--scale-rewards") {
            scale_rewards = value();
            if (scale_rewards != "group" && scale_rewards != "none") {
                fprintf(stderr, "main: error: --scale-rewards must be group or none, got '%s'\n", scale_rewards.c_str());
                return EXIT_ERROR;
            }
        }
        else if (a == "--clip-low") pc.clip_low = float_in(0, 0.999999);
        else if (a == "--clip-high") pc.clip_high = float_in(0, 1e6);
        else if (a == "--kl-beta") pc.beta = float_in(0, 1e6);
        else if (a == "--tis-cap") pc.tis_cap = float_in(0, 1e6);
        else if (a == "--temperature") pc.temperature = float_in(1e-6, 100);
        else if (a == "--max-completion") pc.max_completion = int_in(0, BIG);
        else if (a == "--entries") gc.entries = int_in(1, 1 << 20);
        else if (a == "--fd-step") gc.step = float_in(1e-9, 1);
        else if (a == "--ref-shift") gc.ref_shift = float_in(-1e6, 1e6);
        else if (a == "--no-finite-differences") gc.finite_differences = false;
        else if (a == "--tokens") tokens_arg = value();
        else if (a == "--threads") eo.threads = (int) int_in(1, 1024);
        else if (a == "--poll") eo.poll = (int) int_in(0, 100);
        else if (a == "--backend-dir") eo.backend_dir = value();
        else if (a == "--no-gpu") eo.use_gpu = false;
        else if (a == "--recompute") {
            const std::string m = one_of({"auto", "on", "off"});
            if (m == "auto") tc.recompute = Recompute::AUTO;
            else tc.recompute = gc.recompute = m == "on" ? Recompute::ON : Recompute::OFF;
        }
        else if (a == "--block-tokens") eo.block_tokens = int_in(0, 1 << 17);
        else if (a == "--loss-rows") eo.loss_rows = int_in(0, 1 << 17);
        else if (a == "--chunk-mb") eo.chunk_bytes = (size_t) int_in(1, 1 << 20) << 20;
        else if (a == "--memory-budget") tc.memory_budget = (size_t) int_in(1, (int64_t) 1 << 30) << 20;
        else if (a == "--plan-only") tc.plan_only = true;
        else if (a == "--dump-grads") gc.dump_grads = value();
        else if (a == "--backward-products") eo.out_prod_as_mul_mat = one_of({"mul_mat", "out_prod"}) == "mul_mat";
        else if (a == "--backward-weights") eo.frozen_bf16 = one_of({"f32", "bf16"}) == "bf16";
        else if (a == "--f32-products") eo.f32_kernel = one_of({"still", "ggml"}) == "still";
        else if (a == "--q8-products") eo.q8_kernel = one_of({"still", "ggml"}) == "still";
        else if (a == "--help" || a == "-h") { usage(argv[0]); return EXIT_OK; }
        else {
            fprintf(stderr, "main: error: unknown option '%s' (see --help)\n", a.c_str());
            return EXIT_ERROR;
        }
    }

    pc.scale_rewards = scale_rewards.empty() ? pc.loss != PolicyLoss::DR_GRPO : scale_rewards == "group";
    gc.policy = pc;
    if (cmd == "policy-loss") return run_policy_loss(pc);

    if (eo.model_path.empty()) {
        fprintf(stderr, "main: error: --model is required\n");
        return EXIT_ERROR;
    }
    if (eo.full && !eo.init_adapter.empty()) {
        fprintf(stderr, "main: error: --full trains every weight; it cannot start from a LoRA --adapter\n");
        return EXIT_ERROR;
    }
    if (tc.min_lr > tc.lr) {
        fprintf(stderr, "main: error: --min-lr (%g) is above --lr (%g)\n", tc.min_lr, tc.lr);
        return EXIT_ERROR;
    }

    if (cmd == "logits") {
        if (tokens_arg.empty() || tc.out.empty()) {
            fprintf(stderr, "main: error: logits needs --tokens and --out\n");
            return EXIT_ERROR;
        }
        std::vector<int32_t> tokens;
        size_t p = 0;
        while (p <= tokens_arg.size()) {
            const size_t q = std::min(tokens_arg.find(',', p), tokens_arg.size());
            int64_t t = 0;
            if (!parse_int(tokens_arg.substr(p, q - p).c_str(), t) || t < 0 || t > INT32_MAX) {
                fprintf(stderr, "main: error: --tokens must be a comma-separated list of token ids\n");
                return EXIT_ERROR;
            }
            tokens.push_back((int32_t) t);
            p = q + 1;
        }
        return run_logits(eo, tokens, tc.out);
    }
    if (cmd == "serve") {
        install_signal_handlers();
        return run_serve(eo, tc, pc, g_stop);
    }
    if (tc.data.empty()) {
        fprintf(stderr, "main: error: --data is required\n");
        return EXIT_ERROR;
    }
    if (cmd == "grad-check") return run_grad_check(eo, gc);
    if (tc.out.empty()) {
        fprintf(stderr, "main: error: --out is required\n");
        return EXIT_ERROR;
    }
    install_signal_handlers();
    return run_train(eo, tc, g_stop);
}
