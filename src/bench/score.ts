// npm run bench:score -- [--model M] [--text FILE] [--ctx 512] [--chunks 16] [--threads N] [--runs 3] [--json]
//
// Perplexity throughput on the same text and model, same threads and the same protocol
// (llama-perplexity's: chunks of ctx tokens, the second half scored, batch / ctx chunks
// per decode): still's scorer, llama.cpp's llama-perplexity (built on first use from the
// bundled source, linked to the same libraries) and node-llama-cpp's per-token
// evaluation. tokens/s counts every chunk token decoded; the scored half is also shown.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import {fileURLToPath} from "node:url";
import {execa} from "execa";
import {z} from "zod";
import {parseArgv} from "../cli/cliOptions.js";
import {getBackend, packageRoot} from "../engine/binding.js";
import {benchModel, gpuLayersArgs, llamaTool, nodeLlamaCppField, nodeLlamaCppFlag, logSeconds, median as mid, runMeasured, toolCwd} from "./llamaTools.js";

type Figures = {tokens_per_s: number, scored_tokens_per_s: number, ppl: number, peak_rss_mb: number | null};

const optionsSchema = z.object({
    model: z.string().optional().describe("GGUF model (default: the qwen2.5-0.5b preset at q8_0, made if missing)"),
    text: z.string().optional().describe("Text to score (default: MATH500 problems and solutions from the test fixtures)"),
    ctx: z.number().int().min(4).describe("Chunk size").default(512),
    batchSize: z.number().int().min(1).describe("Tokens per decode").default(2048),
    chunks: z.number().int().min(1).describe("Chunks scored").default(16),
    threads: z.number().int().min(1).describe("Threads for every engine").default(os.availableParallelism()),
    runs: z.number().int().min(1).describe("Runs per engine (medians are reported)").default(3),
    nodeLlamaCpp: nodeLlamaCppField,
    json: z.boolean().describe("Print one JSON object").default(false)
});
const options = parseArgv(optionsSchema, ["--model <file>", "--text <file>", "--ctx <n>", "--batch-size <n>", "--chunks <n>", "--threads <n>", "--runs <n>", nodeLlamaCppFlag, "--json"]);

const log = (line: string) => process.stderr.write(line + "\n");
const worker = path.join(path.dirname(fileURLToPath(import.meta.url)), "scoreWorker.js");

const model = await benchModel(options.model, log);
let textFile = options.text;
if (textFile == null) {
    textFile = path.join(os.tmpdir(), `still-bench-text-${process.pid}.txt`);
    const rows = fs.readFileSync(path.join(packageRoot, "test", "fixtures", "data", "math500.jsonl"), "utf8").trim().split("\n");
    fs.writeFileSync(textFile, rows.map((l) => {
        const r = JSON.parse(l) as {problem: string, solution: string};
        return `${r.problem}\n${r.solution}`;
    }).join("\n\n"));
    process.on("exit", () => fs.rmSync(textFile!, {force: true}));
}
const {variant, hasGpu} = getBackend();
const perplexityTool = await llamaTool("llama-perplexity", variant, log);

async function runWorker(engine: "still" | "node-llama-cpp"): Promise<Figures> {
    const res = await execa(process.execPath, [worker, engine, model!, textFile!, String(options.ctx), String(options.batchSize),
        String(options.chunks), String(options.threads)], {env: {STILL_VARIANT: variant.name}, reject: false});
    if (res.exitCode !== 0) throw new Error(`${engine} run failed: ${res.stderr.split("\n").slice(-3).join(" ")}`);
    return JSON.parse(res.stdout.trim().split("\n").at(-1)!) as Figures;
}

/** llama-perplexity's own log: "m.ss.mmm.uuu" timestamps from start to the final estimate. */
async function runLlamaPerplexity(): Promise<Figures> {
    const args = ["-m", model!, "-f", textFile!, "-c", String(options.ctx), "-b", String(options.batchSize),
        "-t", String(options.threads), "--chunks", String(options.chunks), "--load-mode", "none", ...gpuLayersArgs(hasGpu)];
    const {res, peakRssMb} = await runMeasured(perplexityTool.binary, args, {cwd: toolCwd(perplexityTool.variant), all: true});
    const all = res.all ?? "";
    if (res.exitCode !== 0) throw new Error(`llama-perplexity failed: ${all.split("\n").slice(-3).join(" ")}`);
    const stamp = (re: RegExp) => {
        const m = new RegExp(`(\\d+)\\.(\\d+)\\.(\\d+)\\.(\\d+) . [^\\n]*${re.source}`).exec(all);
        if (m == null) throw new Error(`llama-perplexity printed no ${re.source}`);
        return logSeconds(m);
    };
    const seconds = stamp(/Final estimate/) - stamp(/calculating perplexity over/);
    const chunks = Number(/calculating perplexity over (\d+) chunks/.exec(all)?.[1]);
    const ppl = Number(/Final estimate: PPL = ([\d.]+)/.exec(all)?.[1]);
    const scored = chunks * (options.ctx - Math.floor(options.ctx / 2) - 1);
    return {tokens_per_s: (chunks * options.ctx) / seconds, scored_tokens_per_s: scored / seconds, ppl, peak_rss_mb: peakRssMb};
}

function median(values: Figures[]): Figures | null {
    if (values.length === 0) return null;
    const rss = values.map((v) => v.peak_rss_mb).filter((v): v is number => v != null);
    return {
        tokens_per_s: Math.round(mid(values.map((v) => v.tokens_per_s)) * 10) / 10,
        scored_tokens_per_s: Math.round(mid(values.map((v) => v.scored_tokens_per_s)) * 10) / 10,
        ppl: Math.round(mid(values.map((v) => v.ppl)) * 1e4) / 1e4,
        peak_rss_mb: rss.length === 0 ? null : Math.max(...rss)
    };
}

const samples: Record<"still" | "llama_perplexity" | "node_llama_cpp", Figures[]> = {still: [], llama_perplexity: [], node_llama_cpp: []};
for (let run = 1; run <= options.runs; run++) {
    log(`run ${run}/${options.runs}`);
    samples.still.push(await runWorker("still"));
    samples.llama_perplexity.push(await runLlamaPerplexity());
    if (options.nodeLlamaCpp) samples.node_llama_cpp.push(await runWorker("node-llama-cpp"));
}
const result = {
    model: path.basename(model),
    threads: options.threads,
    variant: variant.name,
    ctx: options.ctx,
    chunks: options.chunks,
    runs: options.runs,
    still: median(samples.still)!,
    llama_perplexity: median(samples.llama_perplexity)!,
    node_llama_cpp: median(samples.node_llama_cpp)
};
if (options.json) {
    process.stdout.write(JSON.stringify(result) + "\n");
} else {
    const r = (a: number, b: number) => (a / b).toFixed(2) + "×";
    process.stdout.write(`${result.model}, ${options.threads} threads, ${options.chunks} chunks of ${options.ctx} tokens, llama.cpp ${variant.name} libraries; medians of ${options.runs}\n\n`);
    process.stdout.write("| engine | tokens/s | scored tokens/s | PPL | peak RSS MB | still / engine |\n|---|---|---|---|---|---|\n");
    for (const [name, f] of [["still", result.still], ["llama-perplexity", result.llama_perplexity], ["node-llama-cpp", result.node_llama_cpp]] as const)
        if (f != null) process.stdout.write(`| ${name} | ${f.tokens_per_s} | ${f.scored_tokens_per_s} | ${f.ppl} | ${f.peak_rss_mb ?? "-"} | ${r(result.still.tokens_per_s, f.tokens_per_s)} |\n`);
}
