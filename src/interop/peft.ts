// LoRA adapters between llama.cpp's adapter GGUF (what still trains and its engine loads)
// and PEFT's folder (adapter_config.json + adapter_model.safetensors), which vLLM, TRL and
// transformers load.
//
// The tensors are the same numbers in the same memory order: GGUF's lora_a, ne [n_in, r], is
// PEFT's lora_A.weight, shape [r, n_in]; lora_b, ne [r, n_out], is lora_B.weight, shape
// [n_out, r]. One exception: llama.cpp stores the query and key projections of the `llama`
// architecture with each head's rows interleaved for its rope (the converter's permute), so
// the rows of their lora_b are reordered on the way (qwen2 and qwen3 use the other rope and
// are stored as Hugging Face stores them). The GGUF's metadata travels in the safetensors
// header's __metadata__, so GGUF → PEFT → GGUF gives the same file.
import fs from "node:fs/promises";
import path from "node:path";
import {z} from "zod";
import {DataError, OptionError} from "../errors.js";
import {GgufType, type GgufHeader, type GgufKv, readGgufHeader} from "../engine/readGguf.js";
import {GgufWriter} from "../models/GgufWriter.js";
import {type SafeTensor, readSafetensors, writeSafetensors} from "./safetensors.js";
import {f32, halfToF32} from "./tensorData.js";

export const PEFT_CONFIG = "adapter_config.json";
export const PEFT_WEIGHTS = "adapter_model.safetensors";
const METADATA_KEY = "still.gguf_kv";
const ARCHITECTURES = ["llama", "qwen2", "qwen3"] as const;

// llama.cpp's tensor names of the seven LoRA modules, and Hugging Face's module paths
const MODULES = {
    attn_q: "self_attn.q_proj", attn_k: "self_attn.k_proj", attn_v: "self_attn.v_proj", attn_output: "self_attn.o_proj",
    ffn_gate: "mlp.gate_proj", ffn_up: "mlp.up_proj", ffn_down: "mlp.down_proj"
} as const;
type GgufModule = keyof typeof MODULES;
const ggufName = /^blk\.(\d+)\.(attn_q|attn_k|attn_v|attn_output|ffn_gate|ffn_up|ffn_down)\.weight\.lora_(a|b)$/;
const peftName = /^(?:base_model\.model\.)?model\.layers\.(\d+)\.(self_attn|mlp)\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)\.lora_(A|B)(?:\.default)?\.weight$/;

/** The base model's facts an adapter's conversion needs (its architecture and head counts). */
type BaseFacts = {architecture: string, heads: number, kvHeads: number, tensors: Map<string, number[]>};

/** The header of a GGUF file (`what` names it in the error), and its scalar metadata by key. */
async function readHeader(file: string, what: string) {
    let h: GgufHeader;
    try {
        h = await readGgufHeader(file);
    } catch (err) {
        throw new DataError(file, `cannot read the ${what}: ${(err as Error).message}`);
    }
    const value = (key: string) => {
        const kv = h.kv.get(key);
        return kv != null && "value" in kv ? kv.value : undefined;
    };
    return {h, value};
}

async function baseFacts(model: string): Promise<BaseFacts> {
    const {h, value} = await readHeader(model, "base model");
    const architecture = String(value("general.architecture") ?? "");
    return {
        architecture,
        heads: Number(value(`${architecture}.attention.head_count`) ?? 0),
        kvHeads: Number(value(`${architecture}.attention.head_count_kv`) ?? value(`${architecture}.attention.head_count`) ?? 0),
        tensors: new Map(h.tensors.map((t) => [t.name, t.dims]))
    };
}

/**
 * Rows of a [rows, cols] F32 matrix, as llama.cpp's converter reorders a llama query or key
 * projection for `heads` heads (toGguf), or back (from GGUF to Hugging Face's order).
 */
export function permuteRows(data: Float32Array, rows: number, cols: number, heads: number, toGguf: boolean): Float32Array {
    if (heads <= 0 || rows % (2 * heads) !== 0) throw new Error(`cannot split ${rows} rows into ${heads} heads of rope pairs`);
    const half = rows / heads / 2;
    const out = new Float32Array(data.length);
    for (let h = 0; h < heads; h++)
        for (let p = 0; p < 2; p++)
            for (let i = 0; i < half; i++) {
                const hf = h * 2 * half + p * half + i; // Hugging Face: [head, pair half, i]
                const gg = h * 2 * half + i * 2 + p;    // GGUF: [head, i, pair half]
                const [from, to] = toGguf ? [hf, gg] : [gg, hf];
                out.set(data.subarray(from * cols, (from + 1) * cols), to * cols);
            }
    return out;
}

type KvRecord = {key: string, type: "string" | "u32" | "i32" | "f32" | "bool", value: string | number | boolean};

function kvRecords(kv: Map<string, GgufKv>): KvRecord[] {
    const out: KvRecord[] = [];
    for (const [key, v] of kv) {
        if (!("value" in v)) continue; // arrays: an adapter has none that matter
        if (v.type === GgufType.STRING) out.push({key, type: "string", value: String(v.value)});
        else if (v.type === GgufType.UINT32) out.push({key, type: "u32", value: Number(v.value)});
        else if (v.type === GgufType.INT32) out.push({key, type: "i32", value: Number(v.value)});
        else if (v.type === GgufType.FLOAT32) out.push({key, type: "f32", value: Number(v.value)});
        else if (v.type === GgufType.BOOL) out.push({key, type: "bool", value: Boolean(v.value)});
    }
    return out;
}

export type PeftExportResult = {dir: string, architecture: string, rank: number, alpha: number, tensors: number, targetModules: string[]};

/**
 * Writes `adapter` (llama.cpp's LoRA GGUF) as a PEFT folder `outDir`. The base model is
 * needed for the `llama` architecture (its head counts) and checked against when given.
 */
export async function exportPeft(adapter: string, outDir: string, options: {model?: string, baseModelName?: string} = {}): Promise<PeftExportResult> {
    const {h, value: str} = await readHeader(adapter, "adapter");
    if (str("general.type") !== "adapter" || str("adapter.type") !== "lora")
        throw new DataError(adapter, "not a LoRA adapter (general.type must be 'adapter' and adapter.type 'lora')");
    const architecture = String(str("general.architecture") ?? "");
    if (!(ARCHITECTURES as readonly string[]).includes(architecture))
        throw new DataError(adapter, `architecture '${architecture}' has no PEFT names here (${ARCHITECTURES.join(", ")} do)`, undefined, "general.architecture");
    const alpha = Number(str("adapter.lora.alpha"));
    if (!Number.isFinite(alpha)) throw new DataError(adapter, "adapter.lora.alpha is missing", undefined, "adapter.lora.alpha");
    const base = options.model == null ? null : await baseFacts(options.model);
    if (base != null && base.architecture !== architecture)
        throw new OptionError(`the adapter ${adapter} is for ${architecture}, the model ${options.model} is ${base.architecture}.`);
    if (architecture === "llama" && base == null)
        throw new OptionError("a llama adapter's query and key rows are stored in llama.cpp's rope order: give its base model (--model) for the head counts.");

    const file = await fs.open(adapter, "r");
    const tensors: SafeTensor[] = [];
    const modules = new Set<string>();
    let rank = 0;
    try {
        for (const t of h.tensors) {
            const m = ggufName.exec(t.name);
            if (m == null) throw new DataError(adapter, `tensor ${t.name} is not a LoRA tensor of the seven projections`);
            const [, layer, mod, ab] = m as unknown as [string, string, GgufModule, "a" | "b"];
            if (t.dims.length !== 2) throw new DataError(adapter, `tensor ${t.name} has ${t.dims.length} dimensions, not 2`);
            const [ne0, ne1] = t.dims as [number, number];
            const size = t.type === 0 ? 4 : t.type === 1 ? 2 : 0;
            if (size === 0) throw new DataError(adapter, `tensor ${t.name} is of ggml type ${t.type}; F32 and F16 convert`);
            const bytes = ne0 * ne1 * size;
            const at = h.dataOffset + Number(t.offset);
            if (at + bytes > h.fileSize) throw new DataError(adapter, `tensor ${t.name}'s data runs past the end of the file: truncated?`);
            let data: Buffer = Buffer.alloc(bytes);
            await file.read(data, 0, bytes, at);
            rank = ab === "a" ? ne1 : ne0;
            if (base != null) {
                const dims = base.tensors.get(`blk.${layer}.${mod}.weight`);
                const fits = dims != null && (ab === "a" ? dims[0] === ne0 : dims[1] === ne1);
                if (!fits) throw new OptionError(`the adapter ${adapter} does not fit the model ${options.model}: ${t.name} is [${ne0}, ${ne1}], ` +
                    `the model's blk.${layer}.${mod}.weight is [${dims?.join(", ") ?? "missing"}].`);
            }
            if (architecture === "llama" && ab === "b" && (mod === "attn_q" || mod === "attn_k")) {
                if (size !== 4) throw new DataError(adapter, `tensor ${t.name}: a llama query/key lora_b converts from F32 only`);
                const heads = mod === "attn_q" ? base!.heads : base!.kvHeads;
                const p = permuteRows(f32(data), ne1, ne0, heads, false);
                data = Buffer.from(p.buffer, p.byteOffset, p.byteLength);
            }
            const hfPath = MODULES[mod];
            modules.add(hfPath.split(".")[1]!);
            tensors.push({
                name: `base_model.model.model.layers.${layer}.${hfPath}.lora_${ab === "a" ? "A" : "B"}.weight`,
                dtype: size === 4 ? "F32" : "F16",
                shape: [ne1, ne0],
                data
            });
        }
    } finally {
        await file.close();
    }
    if (tensors.length === 0) throw new DataError(adapter, "the adapter holds no tensors");
    const targetModules = [...modules].sort();
    await fs.mkdir(outDir, {recursive: true});
    const config = {
        alpha_pattern: {}, base_model_name_or_path: options.baseModelName ?? null, bias: "none", fan_in_fan_out: false, inference_mode: true,
        init_lora_weights: true, layers_pattern: null, layers_to_transform: null, lora_alpha: alpha, lora_dropout: 0.0, modules_to_save: null,
        peft_type: "LORA", r: rank, rank_pattern: {}, revision: null, target_modules: targetModules, task_type: "CAUSAL_LM", use_dora: false,
        use_rslora: false
    };
    await writeSafetensors(path.join(outDir, PEFT_WEIGHTS), tensors, {format: "pt", [METADATA_KEY]: JSON.stringify(kvRecords(h.kv))});
    await fs.writeFile(path.join(outDir, PEFT_CONFIG), JSON.stringify(config, null, 2) + "\n");
    return {dir: outDir, architecture, rank, alpha, tensors: tensors.length, targetModules};
}

const peftConfigSchema = z.object({
    peft_type: z.literal("LORA"),
    r: z.number().int().min(1),
    lora_alpha: z.number().positive(),
    use_rslora: z.boolean().default(false),
    use_dora: z.literal(false).optional(),
    fan_in_fan_out: z.literal(false).optional(),
    bias: z.literal("none").optional(),
    rank_pattern: z.record(z.string(), z.unknown()).refine((r) => Object.keys(r).length === 0, "per-module ranks have no place in one adapter GGUF").optional(),
    alpha_pattern: z.record(z.string(), z.unknown()).refine((r) => Object.keys(r).length === 0, "per-module alphas have no place in one adapter GGUF").optional(),
    modules_to_save: z.array(z.string()).max(0, "full modules saved beside the adapter cannot be carried").nullable().optional()
}).passthrough();

export type PeftImportResult = {out: string, architecture: string, rank: number, alpha: number, tensors: number};

/** Writes the PEFT folder `dir` as llama.cpp's LoRA GGUF `out`, for the base model `model`. */
export async function importPeft(dir: string, out: string, options: {model: string}): Promise<PeftImportResult> {
    const configFile = path.join(dir, PEFT_CONFIG);
    let raw: unknown;
    try {
        raw = JSON.parse(await fs.readFile(configFile, "utf8"));
    } catch (err) {
        throw new DataError(configFile, `cannot read it as JSON (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
    }
    const parsed = peftConfigSchema.safeParse(raw);
    if (!parsed.success) {
        const issue = parsed.error.issues[0]!;
        throw new DataError(configFile, issue.message, undefined, issue.path.join(".") || undefined);
    }
    const config = parsed.data;
    const base = await baseFacts(options.model);
    if (!(ARCHITECTURES as readonly string[]).includes(base.architecture))
        throw new OptionError(`the model ${options.model} is ${base.architecture}; adapters convert for ${ARCHITECTURES.join(", ")}.`);
    const weightsFile = path.join(dir, PEFT_WEIGHTS);
    const {tensors, metadata} = await readSafetensors(weightsFile);
    // rsLoRA scales by alpha / √r, llama.cpp by alpha / r: the same scale with alpha · √r
    const alpha = config.use_rslora ? config.lora_alpha * Math.sqrt(config.r) : config.lora_alpha;
    const byModule = new Map<string, SafeTensor>();
    const writer = new GgufWriter();
    let stored: KvRecord[] | null = null;
    if (metadata[METADATA_KEY] != null) {
        try {
            stored = JSON.parse(metadata[METADATA_KEY]) as KvRecord[];
        } catch {
            throw new DataError(weightsFile, `${METADATA_KEY} in __metadata__ is not JSON`, undefined, "__metadata__");
        }
    }
    const storedArch = stored?.find((k) => k.key === "general.architecture")?.value;
    if (storedArch != null && storedArch !== base.architecture)
        throw new OptionError(`the adapter in ${dir} was made for ${String(storedArch)}, the model ${options.model} is ${base.architecture}.`);
    const storedAlpha = stored?.find((k) => k.key === "adapter.lora.alpha")?.value;
    if (stored != null && storedAlpha === Math.fround(alpha)) {
        for (const k of stored) {
            if (k.type === "string") writer.string(k.key, String(k.value));
            else if (k.type === "u32") writer.u32(k.key, Number(k.value));
            else if (k.type === "i32") writer.i32(k.key, Number(k.value));
            else if (k.type === "f32") writer.f32(k.key, Number(k.value));
            else writer.bool(k.key, Boolean(k.value));
        }
    } else {
        writer.string("general.architecture", base.architecture).string("general.type", "adapter")
            .string("general.name", `LoRA from ${path.basename(path.resolve(dir))}`).string("adapter.type", "lora")
            .f32("adapter.lora.alpha", alpha).u32("still.lora.rank", config.r);
    }
    const reverse = Object.fromEntries(Object.entries(MODULES).map(([g, hf]) => [hf, g])) as Record<string, GgufModule>;
    for (const t of tensors) {
        const m = peftName.exec(t.name);
        if (m == null) throw new DataError(weightsFile, "not a LoRA tensor of the seven projections of a llama/qwen layer", undefined, t.name);
        const [, layer, group, proj, ab] = m as unknown as [string, string, string, string, "A" | "B"];
        const mod = reverse[`${group}.${proj}`]!;
        if (t.shape.length !== 2) throw new DataError(weightsFile, `has ${t.shape.length} dimensions, not 2`, undefined, t.name);
        const [rows, cols] = t.shape as [number, number];
        if ((ab === "A" ? rows : cols) !== config.r)
            throw new DataError(weightsFile, `shape [${rows}, ${cols}] does not have rank ${config.r} (adapter_config.json's r)`, undefined, t.name);
        const name = `blk.${layer}.${mod}.weight.lora_${ab.toLowerCase()}`;
        const dims = base.tensors.get(`blk.${layer}.${mod}.weight`);
        if (dims == null || (ab === "A" ? dims[0] !== cols : dims[1] !== rows))
            throw new OptionError(`the adapter in ${dir} does not fit the model ${options.model}: ${t.name} is [${rows}, ${cols}], ` +
                `the model's blk.${layer}.${mod}.weight is [${dims?.join(", ") ?? "missing"}].`);
        if (byModule.has(name)) throw new DataError(weightsFile, "appears twice (with and without an adapter name?)", undefined, t.name);
        byModule.set(name, t);
        let values = t.dtype === "F32" ? f32(t.data) : halfToF32(t.data, t.dtype === "BF16");
        if (base.architecture === "llama" && ab === "B" && (mod === "attn_q" || mod === "attn_k"))
            values = permuteRows(values, rows, cols, mod === "attn_q" ? base.heads : base.kvHeads, true);
        writer.tensor(name, [cols, rows], (start, outArr) => outArr.set(values.subarray(start, start + outArr.length)));
    }
    for (const name of byModule.keys()) {
        const other = name.endsWith("_a") ? name.replace(/_a$/, "_b") : name.replace(/_b$/, "_a");
        if (!byModule.has(other)) throw new DataError(weightsFile, `has ${byModule.get(name)!.name} without its lora_${other.endsWith("_a") ? "A" : "B"}`);
    }
    if (byModule.size === 0) throw new DataError(weightsFile, "holds no LoRA tensors");
    await fs.mkdir(path.dirname(path.resolve(out)), {recursive: true});
    const tmp = `${out}.tmp-${process.pid}`;
    await writer.write(tmp);
    await fs.rename(tmp, out);
    return {out, architecture: base.architecture, rank: config.r, alpha, tensors: byModule.size};
}
