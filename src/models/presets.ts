// Recipes for the built-in models. They are generated, never downloaded: random
// weights from a seed, and either a byte-level vocabulary with the STILL markers and a
// ChatML template, or a real model's tokenizer and chat template (Qwen3's, Llama 3's:
// realTokenizers.ts), where the STILL markers are several tokens each.

export type Architecture = "llama" | "qwen2" | "qwen3";

export type Preset = {
    name: string,
    description: string,
    architecture: Architecture,
    /** char: 256 bytes + specials; qwen: Qwen2.5-sized made-up BPE; qwen3, llama3: those models' real tokenizers. */
    vocab: "char" | "qwen" | "qwen3" | "llama3",
    embedding: number,
    layers: number,
    heads: number,
    kvHeads: number,
    /** Per-head size; defaults to embedding / heads. */
    headDim?: number,
    feedForward: number,
    contextLength: number,
    ropeFreqBase: number,
    rmsEps: number,
    /** Output projection shares the token embedding (no output.weight). */
    tiedEmbeddings: boolean,
    /** Q, K and V projections carry biases (Qwen2). */
    qkvBias: boolean,
    /** RMS norm on each head's Q and K (Qwen3). */
    qkNorm: boolean
};

export const presets = {
    "tiny": {
        name: "tiny",
        description: "llama architecture, 4 layers × 256, character-level vocabulary (~3.3M parameters)",
        architecture: "llama",
        vocab: "char",
        embedding: 256,
        layers: 4,
        heads: 8,
        kvHeads: 4,
        feedForward: 768,
        contextLength: 131_072,
        ropeFreqBase: 10_000,
        rmsEps: 1e-5,
        tiedEmbeddings: false,
        qkvBias: false,
        qkNorm: false
    },
    "tiny-2l": {
        name: "tiny-2l",
        description: "llama architecture, 2 layers × 256, character-level vocabulary (~1.3M parameters; the demo's model)",
        architecture: "llama",
        vocab: "char",
        embedding: 256,
        layers: 2,
        heads: 8,
        kvHeads: 4,
        feedForward: 512,
        contextLength: 131_072,
        ropeFreqBase: 10_000,
        rmsEps: 1e-5,
        tiedEmbeddings: false,
        qkvBias: false,
        qkNorm: false
    },
    "tiny-qwen2": {
        name: "tiny-qwen2",
        description: "qwen2 architecture (QKV bias, tied embeddings), 2 layers × 128, character-level vocabulary",
        architecture: "qwen2",
        vocab: "char",
        embedding: 128,
        layers: 2,
        heads: 4,
        kvHeads: 2,
        feedForward: 384,
        contextLength: 131_072,
        ropeFreqBase: 1_000_000,
        rmsEps: 1e-6,
        tiedEmbeddings: true,
        qkvBias: true,
        qkNorm: false
    },
    "tiny-qwen3": {
        name: "tiny-qwen3",
        description: "qwen3 architecture (Q/K norm, head size 64 ≠ 128/4), 2 layers × 128, character-level vocabulary",
        architecture: "qwen3",
        vocab: "char",
        embedding: 128,
        layers: 2,
        heads: 4,
        kvHeads: 2,
        headDim: 64,
        feedForward: 384,
        contextLength: 131_072,
        ropeFreqBase: 1_000_000,
        rmsEps: 1e-6,
        tiedEmbeddings: true,
        qkvBias: false,
        qkNorm: true
    },
    "tiny-qwen3-tokenizer": {
        name: "tiny-qwen3-tokenizer",
        description: "qwen3 architecture, 2 layers × 64, Qwen3's real tokenizer and chat template (<think> handling; 151,669 tokens)",
        architecture: "qwen3",
        vocab: "qwen3",
        embedding: 64,
        layers: 2,
        heads: 4,
        kvHeads: 2,
        headDim: 32,
        feedForward: 192,
        contextLength: 40_960,
        ropeFreqBase: 1_000_000,
        rmsEps: 1e-6,
        tiedEmbeddings: true,
        qkvBias: false,
        qkNorm: true
    },
    "tiny-llama3-tokenizer": {
        name: "tiny-llama3-tokenizer",
        description: "llama architecture, 2 layers × 64, Llama 3's real tokenizer and chat template (128,256 tokens; BOS added)",
        architecture: "llama",
        vocab: "llama3",
        embedding: 64,
        layers: 2,
        heads: 4,
        kvHeads: 2,
        feedForward: 192,
        contextLength: 131_072,
        ropeFreqBase: 500_000,
        rmsEps: 1e-5,
        tiedEmbeddings: true,
        qkvBias: false,
        qkNorm: false
    },
    "qwen2.5-0.5b": {
        name: "qwen2.5-0.5b",
        description: "the shape of Qwen2.5-0.5B (24 layers × 896, 151,936-token vocabulary) with random weights, for benchmarks",
        architecture: "qwen2",
        vocab: "qwen",
        embedding: 896,
        layers: 24,
        heads: 14,
        kvHeads: 2,
        feedForward: 4864,
        contextLength: 32_768,
        ropeFreqBase: 1_000_000,
        rmsEps: 1e-6,
        tiedEmbeddings: true,
        qkvBias: true,
        qkNorm: false
    }
} as const satisfies Record<string, Preset>;

export type PresetName = keyof typeof presets;
export const presetNames = Object.keys(presets) as PresetName[];

export function headDim(p: Preset) {
    return p.headDim ?? p.embedding / p.heads;
}

/** Tensors of a preset in ggml order (name, dims); shared by the maker and by tests. */
export function presetTensors(p: Preset, vocabSize: number): [string, number[]][] {
    const hd = headDim(p);
    const q = p.heads * hd;
    const kv = p.kvHeads * hd;
    const out: [string, number[]][] = [["token_embd.weight", [p.embedding, vocabSize]]];
    for (let i = 0; i < p.layers; i++) {
        const b = `blk.${i}.`;
        out.push([b + "attn_norm.weight", [p.embedding]]);
        out.push([b + "attn_q.weight", [p.embedding, q]]);
        out.push([b + "attn_k.weight", [p.embedding, kv]]);
        out.push([b + "attn_v.weight", [p.embedding, kv]]);
        if (p.qkvBias) {
            out.push([b + "attn_q.bias", [q]]);
            out.push([b + "attn_k.bias", [kv]]);
            out.push([b + "attn_v.bias", [kv]]);
        }
        if (p.qkNorm) {
            out.push([b + "attn_q_norm.weight", [hd]]);
            out.push([b + "attn_k_norm.weight", [hd]]);
        }
        out.push([b + "attn_output.weight", [q, p.embedding]]);
        out.push([b + "ffn_norm.weight", [p.embedding]]);
        out.push([b + "ffn_gate.weight", [p.embedding, p.feedForward]]);
        out.push([b + "ffn_up.weight", [p.embedding, p.feedForward]]);
        out.push([b + "ffn_down.weight", [p.feedForward, p.embedding]]);
    }
    out.push(["output_norm.weight", [p.embedding]]);
    if (!p.tiedEmbeddings) out.push(["output.weight", [p.embedding, vocabSize]]);
    return out;
}
