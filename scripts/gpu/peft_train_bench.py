"""Training throughput of PyTorch + peft, the peer of still-train in the GPU check.

    python3 scripts/gpu/peft_train_bench.py --shape SHAPE.json --ctx 1024,4096 [--steps 4] [--rank 16] [--alpha 32]

SHAPE.json is a still model preset (src/models/presets.ts: embedding, layers, heads, kvHeads,
feedForward, ...), written by scripts/gpu-check.mjs. The model is transformers' Qwen2 of that
shape in bf16 with random weights (speed does not depend on their values), LoRA on all seven
modules, one row of ctx tokens per optimizer step (AdamW), the loss on every token, as
still-train's ctx sweep trains. Prints one JSON line per ctx: tokens/s after the first step and
the peak device memory (torch.cuda.max_memory_allocated).
"""
import argparse
import json
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", required=True)
    ap.add_argument("--ctx", default="1024,4096")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--alpha", type=float, default=32)
    ap.add_argument("--lr", type=float, default=1e-5)
    args = ap.parse_args()

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2Config, Qwen2ForCausalLM

    if not torch.cuda.is_available():
        print(json.dumps({"error": "no CUDA device visible to PyTorch"}))
        return 1
    with open(args.shape) as f:
        p = json.load(f)
    config = Qwen2Config(
        vocab_size=int(p["vocabSize"]),
        hidden_size=int(p["embedding"]),
        intermediate_size=int(p["feedForward"]),
        num_hidden_layers=int(p["layers"]),
        num_attention_heads=int(p["heads"]),
        num_key_value_heads=int(p["kvHeads"]),
        max_position_embeddings=int(p["contextLength"]),
        rope_theta=float(p["ropeFreqBase"]),
        rms_norm_eps=float(p["rmsEps"]),
        tie_word_embeddings=bool(p["tiedEmbeddings"]),
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).to(device="cuda", dtype=torch.bfloat16)
    model = get_peft_model(model, LoraConfig(r=args.rank, lora_alpha=args.alpha, lora_dropout=0.0, target_modules=[
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=args.lr)
    gen = torch.Generator(device="cpu").manual_seed(1)
    for ctx in [int(c) for c in args.ctx.split(",") if c]:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        times = []
        try:
            for _ in range(args.steps + 1):
                ids = torch.randint(0, config.vocab_size, (1, ctx), generator=gen).cuda()
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                loss = model(input_ids=ids, labels=ids).loss
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
        except torch.cuda.OutOfMemoryError as e:
            print(json.dumps({"ctx": ctx, "error": "out of device memory: " + str(e).split("\n")[0]}))
            continue
        measured = times[1:]
        print(json.dumps({
            "ctx": ctx,
            "tokens_per_s": round(ctx * len(measured) / sum(measured), 2),
            "peak_device_mb": round(torch.cuda.max_memory_allocated() / 2**20),
            "loss": round(float(loss.item()), 4),
            "torch": torch.__version__,
            "device": torch.cuda.get_device_name(0),
        }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
