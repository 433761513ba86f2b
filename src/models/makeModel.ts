// The tiny-model maker: writes a preset as a deterministic F32 GGUF, then converts it
// to F16 or Q8_0 with llama.cpp's own quantizer.
import {z} from "zod";
import fs from "node:fs/promises";
import path from "node:path";
import {getBackend} from "../engine/binding.js";
import {defaultThreads} from "../engine/decodeOptions.js";
import {AbortError, OptionError} from "../errors.js";
import {GgufWriter, type TensorFill} from "./GgufWriter.js";
import {type Preset, type PresetName, headDim, presetNames, presetTensors, presets} from "./presets.js";
import {realVocab} from "./realTokenizers.js";
import {type Vocab, charVocab, qwenLikeVocab} from "./vocab.js";

export const modelTypes = ["f32", "f16", "q8_0"] as const;
export type ModelType = (typeof modelTypes)[number];
// llama_ftype values for llama_model_quantize.
const ftypes: Record<Exclude<ModelType, "f32">, number> = {f16: 1, q8_0: 7};

export const chatMlTemplate =
    "{%- for message in messages %}" +
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}" +
    "{%- endfor %}" +
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}";

/** The model maker's choices that the command line shares. */
export const makeModelFields = {
    type: z.enum(modelTypes).describe(`Tensor type: ${modelTypes.join(", ")} (f16 and q8_0 converted from F32 by llama.cpp's quantizer)`).default("f32"),
    seed: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).describe("Seed of the random weights").default(0)
};

export type MakeModelOptions = {
    preset: PresetName | Preset,
    out: string,
    type?: ModelType,
    seed?: number,
    threads?: number,
    signal?: AbortSignal,
    /** Phase "write" reports bytes of tensor data; "quantize" starts and ends (llama.cpp reports nothing between). */
    onProgress?: (phase: "write" | "quantize", done: number, total: number) => void
};

export type MadeModel = {path: string, preset: string, type: ModelType, seed: number, parameterCount: number, bytes: number, seconds: number};

export async function makeModel(options: MakeModelOptions): Promise<MadeModel> {
    const started = performance.now();
    const preset = typeof options.preset === "string" ? presets[options.preset] as Preset | undefined : options.preset;
    if (preset == null) throw new OptionError(`unknown preset '${String(options.preset)}'; choose one of: ${presetNames.join(", ")}.`);
    const type = options.type ?? makeModelFields.type.parse(undefined);
    if (!modelTypes.includes(type)) throw new OptionError(`unknown model type '${type}'; choose one of: ${modelTypes.join(", ")}.`);
    const seed = options.seed ?? makeModelFields.seed.parse(undefined);
    if (!Number.isSafeInteger(seed) || seed < 0) throw new OptionError(`seed must be a whole number ≥ 0, got ${seed}.`);

    const out = path.resolve(options.out);
    await fs.mkdir(path.dirname(out), {recursive: true});
    const tmp = `${out}.tmp-${process.pid}`;
    const f32Path = type === "f32" ? tmp : `${out}.f32-${process.pid}`;
    try {
        const writer = buildWriter(preset, seed);
        await writer.write(f32Path, {
            signal: options.signal,
            onProgress: (done, total) => options.onProgress?.("write", done, total)
        });
        if (type !== "f32") {
            options.signal?.throwIfAborted();
            options.onProgress?.("quantize", 0, 1);
            await getBackend().binding.quantize(f32Path, tmp, ftypes[type], options.threads ?? defaultThreads());
            options.onProgress?.("quantize", 1, 1);
        }
        await fs.rename(tmp, out);
        const {size} = await fs.stat(out);
        return {path: out, preset: preset.name, type, seed, parameterCount: writer.parameterCount, bytes: size, seconds: (performance.now() - started) / 1000};
    } catch (err) {
        await fs.rm(tmp, {force: true});
        if (options.signal?.aborted) throw new AbortError("making the model was cancelled");
        throw err;
    } finally {
        if (f32Path !== tmp) await fs.rm(f32Path, {force: true});
    }
}

/** A preset's vocabulary, with the tokenizer facts the GGUF records. */
function presetVocab(p: Preset): Vocab & {pre: string, addBos: boolean, chatTemplate: string, source?: string} {
    if (p.vocab === "qwen3" || p.vocab === "llama3") return realVocab(p.vocab);
    return {...(p.vocab === "char" ? charVocab() : qwenLikeVocab()), pre: "qwen2", addBos: false, chatTemplate: chatMlTemplate};
}

function buildWriter(p: Preset, seed: number): GgufWriter {
    const vocab = presetVocab(p);
    const arch = p.architecture;
    const hd = headDim(p);
    const w = new GgufWriter()
        .string("general.architecture", arch)
        .string("general.type", "model")
        .string("general.name", `still ${p.name}`)
        .string("general.description", `${p.description}; random weights, seed ${seed}`)
        .u32("general.file_type", 0) // all F32
        .u32(`${arch}.context_length`, p.contextLength)
        .u32(`${arch}.embedding_length`, p.embedding)
        .u32(`${arch}.block_count`, p.layers)
        .u32(`${arch}.feed_forward_length`, p.feedForward)
        .u32(`${arch}.attention.head_count`, p.heads)
        .u32(`${arch}.attention.head_count_kv`, p.kvHeads)
        .u32(`${arch}.attention.key_length`, hd)
        .u32(`${arch}.attention.value_length`, hd)
        .u32(`${arch}.rope.dimension_count`, hd)
        .f32(`${arch}.rope.freq_base`, p.ropeFreqBase)
        .f32(`${arch}.attention.layer_norm_rms_epsilon`, p.rmsEps)
        .u32(`${arch}.vocab_size`, vocab.tokens.length)
        .string("tokenizer.ggml.model", "gpt2")
        .string("tokenizer.ggml.pre", vocab.pre)
        .strings("tokenizer.ggml.tokens", vocab.tokens)
        .i32s("tokenizer.ggml.token_type", vocab.types)
        .strings("tokenizer.ggml.merges", vocab.merges)
        .u32("tokenizer.ggml.bos_token_id", vocab.bos)
        .u32("tokenizer.ggml.eos_token_id", vocab.eos)
        .u32("tokenizer.ggml.padding_token_id", vocab.pad)
        .bool("tokenizer.ggml.add_bos_token", vocab.addBos)
        .string("tokenizer.chat_template", vocab.chatTemplate)
        .string("still.preset", p.name)
        .u32("still.seed", seed);
    if (vocab.source != null) w.string("still.tokenizer", vocab.source);

    for (const [name, dims] of presetTensors(p, vocab.tokens.length)) {
        const isNorm = name.endsWith("norm.weight");
        w.tensor(name, dims, isNorm ? constant(1) : uniform(seed, name, 0.02));
    }
    return w;
}

function constant(value: number): TensorFill {
    return (_start, out) => out.fill(value);
}

/**
 * Uniform noise with standard deviation `std`. Each element is a hash of (seed, tensor
 * name, index), so the values do not depend on how the writer chunks the tensor.
 */
function uniform(seed: number, name: string, std: number): TensorFill {
    const key = mix32(fnv1a(name) ^ mix32(seed >>> 0) ^ Math.floor(seed / 2 ** 32));
    const scale = (std * Math.sqrt(3) * 2) / 2 ** 32;
    const shift = std * Math.sqrt(3);
    return (start, out) => {
        for (let i = 0; i < out.length; i++) out[i] = mix32(key ^ mix32(start + i)) * scale - shift;
    };
}

function mix32(x: number): number {
    x = (x ^ (x >>> 16)) >>> 0;
    x = Math.imul(x, 0x7feb352d);
    x = (x ^ (x >>> 15)) >>> 0;
    x = Math.imul(x, 0x846ca68b);
    return (x ^ (x >>> 16)) >>> 0;
}

function fnv1a(s: string): number {
    let h = 0x811c9dc5;
    for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
    return h >>> 0;
}
