// npm run bench:rollout -- [--model M] [--parallel 1,8,32] [--threads N] [--runs 3] [--json]
//
// Aggregate generated and prompt tokens/s of still's rollout engine next to
// node-llama-cpp (at its defaults, and with UV_THREADPOOL_SIZE=1, its best setting on a
// small machine) and llama.cpp's llama-batched-bench (built from the bundled source,
// linked to the same libraries), with the same model, threads, sequences and token
// counts: P distinct 128-token prompts, 128 generated tokens each, temperature 1 and
// top-k 40 (batched-bench samples nothing). A last case puts one prompt under 32 samples
// (batched-bench -pps) to show prefix sharing. Each engine runs in its own process;
// figures are medians over --runs, with the peak RSS of each process. Also: still's remote
// client (still generate --endpoint's) driving one llama-server built from the same source,
// one slot per sequence, with and without log-probs asked for, over still's own engine.
// On CPUs with AVX-512 VNNI or AVX-VNNI, still also runs with ggml's products only
// (STILL_Q8_GEMM=0) and with its Q8_0 kernel for every product (STILL_Q8_GEMM=all) beside its
// default (the output layer's product on that kernel).
//
// --ggml-cpu V runs still and batched-bench on one of ggml's CPU backend variants (haswell,
// alderlake, …) instead of the best this CPU runs, to measure as a CPU of that kind would
// run (with STILL_Q8_ISA=avxvnni, still's kernel as on AVX-VNNI CPUs); node-llama-cpp and
// llama-server choose their own variant and are left out then.
//
// Also printed: the CPU, the ggml CPU backend each engine loaded (its ISA variant), where
// still's decode step goes (ggml decode, logits read, sampling with log-probs, taking the
// tokens: stop checks and bookkeeping, the rest), and a ceiling for each case: the step's
// FLOPs (2 × parameters per token, plus attention over the mean context) at the FLOP rate
// the same engine reached on prompt tokens in that run, and its bytes (every weight once,
// plus the KV cache read) at the memory bandwidth measured here by a large copy: the
// slower of the two bounds gives the tokens/s no engine can pass on these kernels.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import {fileURLToPath} from "node:url";
import {execa} from "execa";
import {z} from "zod";
import {parseArgv} from "../cli/cliOptions.js";
import {getBackend} from "../engine/binding.js";
import {loadModel} from "../engine/Model.js";
import {benchModel, cpuBackendFolder, cpuBackendIn, gpuLayersArgs, llamaTool, nodeLlamaCppField, nodeLlamaCppFlag, median as mid, runMeasured, toolCwd} from "./llamaTools.js";

type Split = {steps: number, decode_ms: number, logits_ms: number, sample_ms: number, accept_ms: number, other_ms: number};
type Figures = {gen_tps: number, prompt_tps: number, peak_rss_mb: number | null, cpu_backend?: string | null, split?: Split, server_peak_rss_mb?: number | null,
    q8_mode?: "off" | "output" | "all", q8_isa?: string};
type Row = {parallel: number, shared_prompt: boolean, still: Figures, node_llama_cpp: Figures | null, node_llama_cpp_uv1: Figures | null, llama_batched_bench: Figures,
    /** still with ggml's products only (STILL_Q8_GEMM=0: logits bit for bit llama.cpp's); null when not measured or the same as still's default. */
    still_ggml: Figures | null,
    /** still with its own Q8_0 kernel for every product (STILL_Q8_GEMM=all); null when not measured or this CPU cannot run it. */
    still_q8: Figures | null,
    /** still's remote client driving one llama-server on 127.0.0.1, and its generation speed over still's own engine's. */
    llama_server: Figures | null, llama_server_ratio: number | null,
    /** The same without asking for log-probs. */
    llama_server_no_logprobs: Figures | null, llama_server_no_logprobs_ratio: number | null, ceiling?: Ceiling};

const optionsSchema = z.object({
    model: z.string().optional().describe("GGUF model (default: the qwen2.5-0.5b preset at q8_0, made if missing)"),
    parallel: z.string().describe("Sequence counts").default("1,8,32"),
    threads: z.number().int().min(1).describe("Threads for every engine").default(os.availableParallelism()),
    runs: z.number().int().min(1).describe("Runs per configuration (medians are reported)").default(3),
    promptTokens: z.number().int().min(1).describe("Prompt tokens per sequence").default(128),
    genTokens: z.number().int().min(1).describe("Generated tokens per sequence").default(128),
    shared: z.number().int().min(0).describe("Samples of the one-prompt case (0 skips it)").default(32),
    nodeLlamaCpp: nodeLlamaCppField,
    llamaServer: z.boolean().describe("Measure still's remote client driving one llama-server too").default(true),
    q8Kernel: z.boolean().describe("Measure still with ggml's products only (STILL_Q8_GEMM=0) and with its Q8_0 kernel for every product (STILL_Q8_GEMM=all) too (VNNI CPUs, Q8_0 models)").default(true),
    ggmlCpu: z.string().regex(/^[\w.]+$/).optional().describe("Run still and batched-bench on this ggml CPU backend variant (haswell, alderlake, …; STILL_GGML_CPU) instead of the best this CPU runs"),
    json: z.boolean().describe("Print one JSON object").default(false)
});
const options = parseArgv(optionsSchema, ["--model <file>", "--parallel <list>", "--threads <n>", "--runs <n>", "--prompt-tokens <n>", "--gen-tokens <n>", "--shared <n>",
    nodeLlamaCppFlag, {flags: "--no-llama-server", help: "Skip still driving a llama-server"},
    {flags: "--no-q8-kernel", help: "Skip still with ggml's products only and with its Q8_0 kernel for every product"}, "--ggml-cpu <variant>", "--json"]);

const log = (line: string) => process.stderr.write(line + "\n");
const parallels = options.parallel.split(",").map((s) => Number.parseInt(s, 10)).filter((n) => n > 0);
const worker = path.join(path.dirname(fileURLToPath(import.meta.url)), "rolloutWorker.js");

const model = await benchModel(options.model, log);
const {variant, hasGpu} = getBackend();
const {binary: batchedBench, variant: benchVariant} = await llamaTool("llama-batched-bench", variant, log);
// --ggml-cpu: still's workers load that module alone; batched-bench finds backend modules in
// its working folder, so it runs in one that holds only that module.
const ggmlCpu = cpuBackendFolder(benchVariant, options.ggmlCpu);
if (ggmlCpu != null && (options.nodeLlamaCpp || options.llamaServer))
    log(`--ggml-cpu ${ggmlCpu.name}: node-llama-cpp and llama-server load their own CPU backend and are left out`);
const nodeLlamaCpp = options.nodeLlamaCpp && ggmlCpu == null;
const llamaServer = options.llamaServer && ggmlCpu == null;

// The same pseudo-random prompts for both Node engines: ordinary tokens, no special ones.
// (batched-bench draws its own random tokens; only the counts matter to the speed.)
const promptsFile = path.join(os.tmpdir(), `still-bench-prompts-${process.pid}.json`);
{
    const vocab = await loadModel(model, {vocabOnly: true});
    const special = new Set(vocab.facts.specialTokens.map((t) => t.id));
    const limit = Math.min(vocab.facts.vocabSize, 100_000);
    let seed = 12345;
    const next = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0);
    const count = Math.max(...parallels, 1);
    const prompts = Array.from({length: count}, () => {
        const out: number[] = [];
        while (out.length < options.promptTokens) {
            const t = next() % limit;
            if (!special.has(t)) out.push(t);
        }
        return out;
    });
    fs.writeFileSync(promptsFile, JSON.stringify(prompts));
    await vocab.dispose();
}
process.on("exit", () => fs.rmSync(promptsFile, {force: true}));

async function runWorker(engine: "still" | "node-llama-cpp" | "llama-server" | "llama-server-no-logprobs", parallel: number, shared: boolean, env: Record<string, string> = {}): Promise<Figures> {
    const res = await execa(process.execPath, [worker, engine, model!, String(parallel), String(options.promptTokens),
        String(options.genTokens), String(options.threads), shared ? "1" : "0", promptsFile],
    {env: {...env, STILL_VARIANT: variant.name, ...(ggmlCpu == null ? {} : {STILL_GGML_CPU: ggmlCpu.name})}, reject: false});
    if (res.exitCode !== 0) throw new Error(`${engine} run failed: ${res.stderr.split("\n").slice(-3).join(" ")}`);
    return JSON.parse(res.stdout.trim().split("\n").at(-1)!) as Figures;
}

async function runBatchedBench(parallel: number, shared: boolean): Promise<Figures> {
    const cells = shared ? options.promptTokens + parallel * options.genTokens + 256 : parallel * (options.promptTokens + options.genTokens) + 256;
    const args = ["-m", model!, "-c", String(cells), "-b", "2048", "-ub", "512", "-npp", String(options.promptTokens),
        "-ntg", String(options.genTokens), "-npl", String(parallel), "-t", String(options.threads), "--output-format", "jsonl",
        ...(shared ? ["-pps"] : []), ...gpuLayersArgs(hasGpu)];
    const {res, peakRssMb} = await runMeasured(batchedBench, args, {cwd: ggmlCpu?.dir ?? toolCwd(benchVariant), all: true});
    if (res.exitCode !== 0) throw new Error(`llama-batched-bench failed: ${(res.all ?? "").split("\n").slice(-3).join(" ")}`);
    const line = res.stdout.split("\n").find((l) => l.startsWith("{") && l.includes("speed_tg"));
    if (line == null) throw new Error("llama-batched-bench printed no result");
    const r = JSON.parse(line) as {speed_tg: number, speed_pp: number};
    // (with --ggml-cpu its folder holds that module alone)
    return {gen_tps: r.speed_tg, prompt_tps: r.speed_pp, peak_rss_mb: peakRssMb, cpu_backend: cpuBackendIn(res.all ?? "") ?? ggmlCpu?.name ?? null};
}

/** Memory bandwidth in bytes/s: the best of a few copies of 256 MiB (each byte read once and written once). */
function copyBandwidth(): number {
    const n = 256 << 20;
    const a = Buffer.alloc(n, 1), b = Buffer.alloc(n);
    let best = Infinity;
    for (let i = 0; i < 5; i++) {
        const t0 = performance.now();
        a.copy(b);
        best = Math.min(best, performance.now() - t0);
    }
    return (2 * n) / (best / 1000);
}

function median(values: Figures[]): Figures | null {
    if (values.length === 0) return null;
    const rss = values.map((v) => v.peak_rss_mb).filter((v): v is number => v != null);
    // the split and the backend of the run whose generation speed is the median
    const at = [...values].sort((a, b) => a.gen_tps - b.gen_tps)[Math.floor((values.length - 1) / 2)]!;
    return {
        gen_tps: round(mid(values.map((v) => v.gen_tps))),
        prompt_tps: round(mid(values.map((v) => v.prompt_tps))),
        peak_rss_mb: rss.length === 0 ? null : Math.max(...rss),
        ...(at.cpu_backend === undefined ? {} : {cpu_backend: at.cpu_backend}),
        ...(at.split == null ? {} : {split: at.split}),
        ...(at.q8_mode === undefined ? {} : {q8_mode: at.q8_mode}),
        ...(at.q8_isa === undefined ? {} : {q8_isa: at.q8_isa}),
        ...(at.server_peak_rss_mb === undefined ? {} : {server_peak_rss_mb: Math.max(...values.map((v) => v.server_peak_rss_mb ?? 0))})
    };
}

// The ceiling of one case (see the head of this file).
const facts = await (async () => {
    const m = await loadModel(model, {vocabOnly: true});
    const f = m.facts;
    // a head's size: the file's key_length where it has one (Qwen3's heads are not n_embd / n_head)
    const keyLength = m.gguf.metadata[`${m.gguf.architecture}.attention.key_length`];
    const head = typeof keyLength === "number" ? keyLength : f.headCount > 0 ? f.embeddingLength / f.headCount : 0;
    await m.dispose();
    return {params: f.parameterCount, bytes: f.sizeBytes, layers: f.layerCount, q: head * f.headCount, kv: head * f.headCountKv};
})();
const bandwidth = copyBandwidth();
type Ceiling = {step_gflop: number, step_mb: number, prefill_gflops: number, bandwidth_gbs: number, bound: "compute" | "memory", ceiling_tps: number, share: number};
function ceiling(parallel: number, shared: boolean, still: Figures): Ceiling {
    const context = options.promptTokens + options.genTokens / 2; // mean context of a generated token
    // QKᵀ and the product with V: 2 × 2 × context × (heads × head size) per layer
    const flopsPerToken = 2 * facts.params + 4 * context * facts.q * facts.layers;
    const stepFlops = parallel * flopsPerToken;
    // the KV cache (F16 keys and values) each sequence reads; one shared prompt is read once per step
    const kvBytes = (n: number) => n * facts.layers * 2 * facts.kv * 2;
    const stepBytes = facts.bytes + (shared ? kvBytes(options.promptTokens) + parallel * kvBytes(options.genTokens / 2) : parallel * kvBytes(context));
    const prefillFlops = still.prompt_tps * (2 * facts.params + 4 * (options.promptTokens / 2) * facts.q * facts.layers);
    const tCompute = stepFlops / prefillFlops, tMemory = stepBytes / bandwidth;
    const ceilingTps = parallel / Math.max(tCompute, tMemory);
    return {
        step_gflop: round(stepFlops / 1e9), step_mb: round(stepBytes / 1e6), prefill_gflops: round(prefillFlops / 1e9), bandwidth_gbs: round(bandwidth / 1e9),
        bound: tCompute >= tMemory ? "compute" : "memory", ceiling_tps: round(ceilingTps), share: Math.round(1000 * still.gen_tps / ceilingTps) / 1000
    };
}
const splitText = (label: string, s: Split) => {
    const total = s.decode_ms + s.logits_ms + s.sample_ms + s.accept_ms + s.other_ms;
    const part = (ms: number) => `${ms.toFixed(2)} ms (${(100 * ms / total).toFixed(1)}%)`;
    return `| ${label} | ${s.steps} | ${total.toFixed(2)} | ${part(s.decode_ms)} | ${part(s.logits_ms)} | ${part(s.sample_ms)} | ${part(s.accept_ms)} | ${part(s.other_ms)} |\n`;
};

const round = (x: number) => Math.round(x * 10) / 10;

const cases = [...parallels.map((p) => ({parallel: p, shared: false})), ...(options.shared > 0 ? [{parallel: options.shared, shared: true}] : [])];
const ratio = (a: number, b: number) => (b > 0 ? (a / b).toFixed(2) + "×" : "-");
const labelOf = (r: Row) => r.shared_prompt ? `1 prompt × ${r.parallel}` : String(r.parallel);
const rowText = (r: Row) => {
    const nlc = r.node_llama_cpp, uv1 = r.node_llama_cpp_uv1;
    return `| ${labelOf(r)} | ${r.still.gen_tps} | ${r.llama_batched_bench.gen_tps} | ${nlc?.gen_tps ?? "-"} | ${uv1?.gen_tps ?? "-"} | ` +
        `${ratio(r.still.gen_tps, r.llama_batched_bench.gen_tps)} | ${nlc == null ? "-" : ratio(r.still.gen_tps, nlc.gen_tps)} | ${uv1 == null ? "-" : ratio(r.still.gen_tps, uv1.gen_tps)} | ` +
        `${r.still.prompt_tps} | ${r.llama_batched_bench.prompt_tps} | ${r.still.peak_rss_mb ?? "-"} / ${r.llama_batched_bench.peak_rss_mb ?? "-"} / ${nlc?.peak_rss_mb ?? "-"} |\n`;
};
if (!options.json) {
    process.stdout.write(`${path.basename(model)}, ${options.threads} threads, llama.cpp ${variant.name} libraries` +
        `${ggmlCpu == null ? "" : ` with ggml's ${ggmlCpu.name} CPU backend (--ggml-cpu)`}; ${options.promptTokens} prompt + ` +
        `${options.genTokens} generated tokens per sequence, temperature 1, top-k 40 (batched-bench: no sampling); medians of ${options.runs}\n\n`);
    process.stdout.write("| sequences | still gen t/s | batched-bench | node-llama-cpp | n-l-c UV=1 | still/bb | still/nlc | still/nlc UV=1 | still prompt t/s | bb prompt | peak RSS MB still / bb / nlc |\n");
    process.stdout.write("|---|---|---|---|---|---|---|---|---|---|---|\n");
}
const rows: Row[] = [];
for (const c of cases) {
    const samples: Record<keyof Omit<Row, "parallel" | "shared_prompt" | "ceiling" | "llama_server_ratio" | "llama_server_no_logprobs_ratio">, Figures[]> =
        {still: [], still_ggml: [], still_q8: [], node_llama_cpp: [], node_llama_cpp_uv1: [], llama_batched_bench: [], llama_server: [], llama_server_no_logprobs: []};
    for (let run = 1; run <= options.runs; run++) {
        log(`parallel ${c.parallel}${c.shared ? " (one shared prompt)" : ""}, run ${run}/${options.runs}`);
        // Interleaved, so drifts in machine load hit every engine alike.
        samples.still.push(await runWorker("still", c.parallel, c.shared));
        if (options.q8Kernel && !hasGpu && samples.still.at(-1)!.q8_mode === "output") {
            samples.still_ggml.push(await runWorker("still", c.parallel, c.shared, {STILL_Q8_GEMM: "0"}));
            samples.still_q8.push(await runWorker("still", c.parallel, c.shared, {STILL_Q8_GEMM: "all"}));
        }
        samples.llama_batched_bench.push(await runBatchedBench(c.parallel, c.shared));
        if (llamaServer) {
            samples.llama_server.push(await runWorker("llama-server", c.parallel, c.shared));
            samples.llama_server_no_logprobs.push(await runWorker("llama-server-no-logprobs", c.parallel, c.shared));
        }
        if (!nodeLlamaCpp) continue;
        samples.node_llama_cpp.push(await runWorker("node-llama-cpp", c.parallel, c.shared));
        samples.node_llama_cpp_uv1.push(await runWorker("node-llama-cpp", c.parallel, c.shared, {UV_THREADPOOL_SIZE: "1"}));
    }
    const row: Row = {
        parallel: c.parallel,
        shared_prompt: c.shared,
        still: median(samples.still)!,
        still_ggml: median(samples.still_ggml),
        still_q8: median(samples.still_q8),
        node_llama_cpp: median(samples.node_llama_cpp),
        node_llama_cpp_uv1: median(samples.node_llama_cpp_uv1),
        llama_batched_bench: median(samples.llama_batched_bench)!,
        llama_server: median(samples.llama_server),
        llama_server_ratio: null,
        llama_server_no_logprobs: median(samples.llama_server_no_logprobs),
        llama_server_no_logprobs_ratio: null
    };
    const over = (f: Figures | null) => f == null ? null : Math.round(100 * f.gen_tps / row.still.gen_tps) / 100;
    row.llama_server_ratio = over(row.llama_server);
    row.llama_server_no_logprobs_ratio = over(row.llama_server_no_logprobs);
    row.ceiling = ceiling(c.parallel, c.shared, row.still);
    rows.push(row);
    // Each row as soon as it is measured: a long run that is stopped keeps what it has.
    if (!options.json) process.stdout.write(rowText(row));
}

const backends = (r: Row) => `still ${r.still.cpu_backend ?? "?"}, batched-bench ${r.llama_batched_bench.cpu_backend ?? "(not in its log; the same library folder)"}, node-llama-cpp ${r.node_llama_cpp == null ? "(not run)" : r.node_llama_cpp.cpu_backend ?? "?"}`;
if (!options.json && rows.length > 0) {
    process.stdout.write(`\nCPU: ${os.cpus()[0]?.model ?? "unknown"} (${os.availableParallelism()} CPUs), ${options.threads} threads for every engine; ggml CPU backend loaded: ${backends(rows[0]!)}\n`);
    if (rows.some((r) => r.llama_server != null)) {
        process.stdout.write("\nstill's remote client driving one llama-server on 127.0.0.1 (one slot per sequence; same model, threads and libraries), " +
            "next to still's own engine; with log-probs (as still generate asks by default) and without:\n\n" +
            "| sequences | still gen t/s | still → llama-server gen t/s | ratio | without log-probs | ratio | still prompt t/s | llama-server prompt t/s | peak RSS MB server / client |\n|---|---|---|---|---|---|---|---|---|\n");
        for (const r of rows) {
            if (r.llama_server == null) continue;
            const nolp = r.llama_server_no_logprobs!;
            process.stdout.write(`| ${labelOf(r)} | ${r.still.gen_tps} | ${r.llama_server.gen_tps} | ${r.llama_server_ratio!.toFixed(2)}× | ${nolp.gen_tps} | ` +
                `${r.llama_server_no_logprobs_ratio!.toFixed(2)}× | ${r.still.prompt_tps} | ` +
                `${r.llama_server.prompt_tps} | ${r.llama_server.server_peak_rss_mb ?? "-"} / ${r.llama_server.peak_rss_mb ?? "-"} |\n`);
        }
    }
    if (rows.some((r) => r.still_ggml != null || r.still_q8 != null)) {
        // (measured only where still's default put the output layer's products on the kernel)
        process.stdout.write(`\nstill's Q8_0 kernel (${rows.find((r) => r.still.q8_isa != null)?.still.q8_isa ?? "VNNI"}; still's default above: the output layer's product on it), ` +
            "next to still with ggml's products only (STILL_Q8_GEMM=0: logits bit for bit llama.cpp's) and with the kernel for every Q8_0 product " +
            "(STILL_Q8_GEMM=all: logits llama.cpp's to about 1e-3), in the same run:\n\n" +
            "| sequences | products | gen t/s | / still default | / batched-bench | / node-llama-cpp | / n-l-c UV=1 | prompt t/s | ggml decode ms/step | peak RSS MB |\n|---|---|---|---|---|---|---|---|---|---|\n");
        for (const r of rows) {
            const nlc = r.node_llama_cpp, uv1 = r.node_llama_cpp_uv1;
            for (const [label, q] of [["ggml's only", r.still_ggml], ["default", r.still], ["all on the kernel", r.still_q8]] as const) {
                if (q == null) continue;
                process.stdout.write(`| ${labelOf(r)} | ${label} | ${q.gen_tps} | ${ratio(q.gen_tps, r.still.gen_tps)} | ${ratio(q.gen_tps, r.llama_batched_bench.gen_tps)} | ` +
                    `${nlc == null ? "-" : ratio(q.gen_tps, nlc.gen_tps)} | ${uv1 == null ? "-" : ratio(q.gen_tps, uv1.gen_tps)} | ${q.prompt_tps} | ` +
                    `${q.split == null ? "-" : q.split.decode_ms.toFixed(2)} | ${q.peak_rss_mb ?? "-"} |\n`);
            }
        }
    }
    process.stdout.write("\nstill's decode steps (the median run; ms per step, every step of the run):\n\n");
    process.stdout.write("| sequences | steps | ms/step | ggml decode | logits read | sampling + log-probs | stop checks, bookkeeping | the rest |\n|---|---|---|---|---|---|---|---|\n");
    for (const r of rows) if (r.still.split != null) process.stdout.write(splitText(labelOf(r), r.still.split));
    process.stdout.write("\nCeiling (see the head of src/bench/rollout.ts):\n\n");
    process.stdout.write("| sequences | GFLOP/step | MB/step | prefill GFLOP/s | copy GB/s | bound | ceiling gen t/s | still / ceiling | batched-bench / ceiling |\n|---|---|---|---|---|---|---|---|---|\n");
    for (const r of rows) {
        const c = r.ceiling!;
        process.stdout.write(`| ${labelOf(r)} | ${c.step_gflop} | ${c.step_mb} | ${c.prefill_gflops} | ${c.bandwidth_gbs} | ${c.bound} | ${c.ceiling_tps} | ` +
            `${c.share.toFixed(2)} | ${(r.llama_batched_bench.gen_tps / c.ceiling_tps).toFixed(2)} |\n`);
    }
}
if (options.json) {
    process.stdout.write(JSON.stringify({
        model: path.basename(model),
        cpu: os.cpus()[0]?.model ?? null,
        threads: options.threads,
        variant: variant.name,
        ggml_cpu: ggmlCpu?.name ?? null,
        prompt_tokens: options.promptTokens,
        gen_tokens: options.genTokens,
        runs: options.runs,
        results: rows
    }) + "\n");
}
