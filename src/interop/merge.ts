// `still merge`: a base model plus LoRA adapters written as one GGUF, for servers and apps
// that take a single file (llama-server, Ollama, LM Studio). Each adapted weight becomes
// W + Σ scale · (alpha / rank) · B·A, as llama.cpp applies an adapter at run time; the
// merged weight keeps the base tensor's type (F32, F16, BF16 or Q8_0, re-quantized) and
// place, so the file is the base file with those tensors rewritten. Optionally the result is
// then converted by llama.cpp's own quantizer.
import fs from "node:fs";
import fsp from "node:fs/promises";
import path from "node:path";
import {z} from "zod";
import {getBackend} from "../engine/binding.js";
import {defaultThreads} from "../engine/decodeOptions.js";
import {GgufFormatError, type GgufHeader, readGgufHeader} from "../engine/readGguf.js";
import {AbortError, DataError, OptionError, parseOptions} from "../errors.js";
import {decodeTensor, encodeTensor, isSupportedType, tensorBytes} from "./tensorData.js";

/** Output types: the base's own, or a conversion by llama.cpp's quantizer (its llama_ftype values). */
export const mergeOutputTypes = {keep: null, f16: 1, q8_0: 7, q4_k_m: 15, q5_k_m: 17, q6_k: 18} as const;

export const mergeOptionsSchema = z.object({
    model: z.string().min(1).describe("The base model GGUF"),
    adapters: z.array(z.object({path: z.string().min(1), scale: z.number().default(1)})).min(1, "needs at least one adapter")
        .describe("LoRA adapters merged in, each with its scale"),
    out: z.string().min(1).describe("The merged GGUF to write"),
    type: z.enum(Object.keys(mergeOutputTypes) as [keyof typeof mergeOutputTypes, ...(keyof typeof mergeOutputTypes)[]])
        .describe("keep: each tensor's type in the base; else converted by llama.cpp's quantizer after merging").default("keep"),
    threads: z.number().int().min(1).optional().describe("Threads for the quantizer; default all")
});
export type MergeOptions = z.input<typeof mergeOptionsSchema>;
export type MergeResult = {out: string, architecture: string, tensors: number, adapters: number, type: string, bytes: number, seconds: number};

type Header = {h: GgufHeader, value: (key: string) => unknown};

async function header(file: string, what: string): Promise<Header> {
    if (!fs.existsSync(file)) throw new DataError(file, `does not exist (the ${what})`);
    let h: GgufHeader;
    try {
        h = await readGgufHeader(file);
    } catch (err) {
        throw new DataError(file, `cannot be read as the ${what}: ${err instanceof GgufFormatError ? err.message : (err as Error).message}`);
    }
    return {h, value: (key) => {
        const kv = h.kv.get(key);
        return kv != null && "value" in kv ? kv.value : undefined;
    }};
}

type Delta = {a: {offset: number, bytes: number, type: number}, b: {offset: number, bytes: number, type: number}, rank: number, factor: number, file: string};

export async function mergeAdapters(options: MergeOptions, hooks: {signal?: AbortSignal, onProgress?: (done: number, total: number) => void} = {}): Promise<MergeResult> {
    const o = parseOptions(mergeOptionsSchema, options, "merge options");
    const started = performance.now();
    const base = await header(o.model, "base model");
    const architecture = String(base.value("general.architecture") ?? "");
    if (base.value("general.type") === "adapter") throw new DataError(o.model, "is a LoRA adapter, not a base model");
    const byName = new Map(base.h.tensors.map((t) => [t.name, t]));

    // every adapter checked before anything is written
    const deltas = new Map<string, Delta[]>();
    for (const a of o.adapters) {
        const ad = await header(a.path, "adapter");
        if (ad.value("general.type") !== "adapter" || ad.value("adapter.type") !== "lora")
            throw new DataError(a.path, "is not a LoRA adapter (general.type must be 'adapter' and adapter.type 'lora')");
        const arch = String(ad.value("general.architecture") ?? "");
        if (arch !== architecture) throw new OptionError(`${a.path} is an adapter for ${arch} models, but ${o.model} is ${architecture}.`);
        const alpha = Number(ad.value("adapter.lora.alpha") ?? 0);
        const tensors = new Map(ad.h.tensors.map((t) => [t.name, t]));
        for (const t of ad.h.tensors) {
            const m = /^(.+)\.lora_a$/.exec(t.name);
            if (m == null) {
                if (!/\.lora_b$/.test(t.name)) throw new DataError(a.path, `tensor ${t.name} is not a LoRA tensor (…lora_a / …lora_b)`);
                continue;
            }
            const target = m[1]!;
            const tb = tensors.get(`${target}.lora_b`);
            const w = byName.get(target);
            if (tb == null) throw new DataError(a.path, `tensor ${t.name} has no ${target}.lora_b`);
            if (w == null) throw new DataError(a.path, `adapts ${target}, which ${o.model} does not have`);
            const [inA, rank] = t.dims as [number, number];
            const [rankB, out] = tb.dims as [number, number];
            if (t.dims.length !== 2 || tb.dims.length !== 2 || rank !== rankB || w.dims[0] !== inA || w.dims[1] !== out || w.dims.length !== 2)
                throw new DataError(a.path, `the shapes of ${target}'s LoRA pair [${t.dims}] × [${tb.dims}] do not fit its weight [${w.dims}] in ${o.model}`);
            for (const x of [t, tb]) if (!isSupportedType(x.type)) throw new DataError(a.path, `tensor ${x.name} has type ${x.type}; F32, F16 or BF16 are read`);
            if (!isSupportedType(w.type))
                throw new DataError(o.model, `${target} is stored as ggml type ${w.type}, which the merge does not rewrite (F32, F16, BF16, Q8_0 are): ` +
                    "merge into an F16 or F32 copy of the model and quantize the result (--type)");
            const loc = (x: typeof t) => ({offset: ad.h.dataOffset + Number(x.offset), bytes: tensorBytes(x.type, x.dims.reduce((p, d) => p * d, 1)), type: x.type});
            const list = deltas.get(target) ?? [];
            list.push({a: loc(t), b: loc(tb), rank, factor: a.scale * (alpha !== 0 ? alpha / rank : 1), file: a.path});
            deltas.set(target, list);
        }
    }
    if (deltas.size === 0) throw new DataError(o.adapters[0]!.path, "holds no LoRA pairs to merge");
    const outDir = path.dirname(path.resolve(o.out));
    if (fs.existsSync(o.out) && fs.statSync(o.out).isDirectory()) throw new OptionError(`${o.out} is a folder; give the merged model's file name.`);
    await fsp.mkdir(outDir, {recursive: true});

    const tmp = `${o.out}.merging-${process.pid}`;
    const quantizeFrom = mergeOutputTypes[o.type] == null ? null : `${o.out}.f-${process.pid}`;
    const merged = quantizeFrom ?? tmp;
    const handles = new Map<string, fsp.FileHandle>();
    try {
        await fsp.copyFile(o.model, merged);
        const outFile = await fsp.open(merged, "r+");
        handles.set(merged, outFile);
        const read = async (file: string, offset: number, bytes: number) => {
            let h = handles.get(file);
            if (h == null) handles.set(file, h = await fsp.open(file, "r"));
            const buf = Buffer.alloc(bytes);
            const {bytesRead} = await h.read(buf, 0, bytes, offset);
            if (bytesRead !== bytes) throw new DataError(file, `ends inside a tensor's data (at byte ${offset + bytesRead})`);
            return buf;
        };
        let done = 0;
        for (const [target, list] of deltas) {
            if (hooks.signal?.aborted) throw new AbortError("the merge was cancelled");
            const w = byName.get(target)!;
            const [cols, rows] = w.dims as [number, number];
            const offset = base.h.dataOffset + Number(w.offset);
            const bytes = tensorBytes(w.type, cols * rows);
            const weight = decodeTensor(w.type, await read(o.model, offset, bytes), cols * rows);
            for (const d of list) {
                const A = decodeTensor(d.a.type, await read(d.file, d.a.offset, d.a.bytes), cols * d.rank);
                const B = decodeTensor(d.b.type, await read(d.file, d.b.offset, d.b.bytes), d.rank * rows);
                // W[row][col] += factor · Σ_k B[row][k] · A[k][col]   (ggml rows: ne0 varies fastest)
                for (let r = 0; r < rows; r++) {
                    const wRow = r * cols;
                    for (let k = 0; k < d.rank; k++) {
                        const b = d.factor * B[r * d.rank + k]!;
                        if (b === 0) continue;
                        const aRow = k * cols;
                        for (let c = 0; c < cols; c++) weight[wRow + c]! += b * A[aRow + c]!;
                    }
                }
            }
            await outFile.write(encodeTensor(w.type, weight), 0, bytes, offset);
            hooks.onProgress?.(++done, deltas.size);
        }
        await outFile.close();
        handles.delete(merged);
        if (quantizeFrom != null) {
            await getBackend().binding.quantize(quantizeFrom, tmp, mergeOutputTypes[o.type]!, o.threads ?? defaultThreads());
        }
        await fsp.rename(tmp, o.out);
        const {size} = await fsp.stat(o.out);
        return {out: o.out, architecture, tensors: deltas.size, adapters: o.adapters.length, type: o.type, bytes: size, seconds: (performance.now() - started) / 1000};
    } finally {
        for (const h of handles.values()) await h.close().catch(() => {});
        await fsp.rm(tmp, {force: true});
        if (quantizeFrom != null) await fsp.rm(quantizeFrom, {force: true});
    }
}
