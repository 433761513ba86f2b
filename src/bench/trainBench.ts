// npm run bench:train -- [--presets tiny,qwen2.5-0.5b] [--types f16,q8_0] [--threads N] [--runs 3]
//                        [--ctx 256] [--steps 6] [--no-dpo] [--json]
//
// Training throughput of still-train (LoRA SFT, rank 8 on all seven modules, loss on every
// token) next to llama.cpp's llama-finetune (full fine-tuning, F32 only; built from the
// bundled source and linked to the same libraries) on the same model preset, both on rows
// of --ctx tokens, one row per optimizer step, the same threads. still-train runs on F16 and
// Q8_0 bases; llama-finetune on the F32 file of the same weights (it trains nothing else).
// Tokens/s leave out the first step (and llama-finetune's first datapoint); figures are
// medians over --runs, with each process's peak RSS (GNU time). A second table compares a
// DPO step with an SFT step on the same pairs (the same rows), and the reference pass.
// With --ctx-sweep L1,L2,… it trains rows of those lengths chunked and in one graph instead;
// --compare-kernels adds the same steps on ggml's matrix kernels (F32 and Q8_0) beside still's,
// --compare-bf16 the same steps with BF16 copies of the frozen weights (--backward-weights bf16).
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import {z} from "zod";
import {parseArgv} from "../cli/cliOptions.js";
import {makeModel, type ModelType, modelTypes} from "../models/makeModel.js";
import {type PresetName, presetNames} from "../models/presets.js";
import {getBackend, packageRoot} from "../engine/binding.js";
import {loadModel} from "../engine/Model.js";
import {type TrainerEvent, trainerBinary, trainerEventSchema} from "../train/runTrainer.js";
import {TrainingFile} from "../train/TrainingFile.js";
import {llamaTool, logSeconds, median, runMeasured, toolCwd} from "./llamaTools.js";

const optionsSchema = z.object({
    presets: z.array(z.enum(presetNames)).describe("Model presets").default(["tiny", "qwen2.5-0.5b"]),
    types: z.array(z.enum(modelTypes)).describe("Base types for still-train").default(["f16", "q8_0"]),
    // one core left to the system: on small machines ggml's thread hand-offs cost more than they give
    threads: z.number().int().min(1).describe("CPU threads for both trainers: all cores but one")
        .default(Math.max(1, os.availableParallelism() - 1)),
    runs: z.number().int().min(1).describe("Runs per configuration (medians are reported)").default(3),
    ctx: z.number().int().min(32).describe("Tokens per row (one row per step)").default(256),
    steps: z.number().int().min(2).describe("Measured steps per run (after one warm-up step)").default(6),
    dpo: z.boolean().describe("The DPO-versus-SFT comparison").default(true),
    ctxSweep: z.array(z.number().int().min(16)).optional()
        .describe("Instead: train rows of each of these lengths (one row per step, LoRA r 16 on all modules), chunked with recomputation " +
            "and in one graph where it fits, and report tokens/s, peak RSS and the memory plan's estimate (presets default to qwen2.5-0.5b, types to q8_0)"),
    compareKernels: z.boolean().describe("Sweep: each row's steps also with ggml's matrix kernels (--f32-products ggml --q8-products ggml) instead of still's, " +
        "in the same run").default(false),
    compareBf16: z.boolean().describe("Sweep: each row's steps also with BF16 copies of the frozen weights (--backward-weights bf16), in the same run").default(false),
    json: z.boolean().describe("Print one JSON object").default(false)
});
const options = parseArgv(optionsSchema, ["--presets <list>", "--types <list>", "--threads <n>", "--runs <n>", "--ctx <n>", "--steps <n>",
    {flags: "--no-dpo", help: "Skip the DPO-versus-SFT comparison"}, "--ctx-sweep <list>", "--compare-kernels", "--compare-bf16", "--json"]);

type Figures = {tokens_per_s: number | null, peak_rss_mb: number | null, error?: string};
type Result = {model: string, base_type: string, mode: "lora", still: Figures, llama_finetune: Figures & {base_type: "f32", mode: "full"}};
type DpoResult = {model: string, base_type: string, sft_s_per_step: number, dpo_s_per_step: number, reference_s: number,
    sft_peak_rss_mb: number | null, dpo_peak_rss_mb: number | null};

const log = (line: string) => process.stderr.write(line + "\n");
const sweeping = options.ctxSweep != null;
const presets = sweeping && !process.argv.includes("--presets") ? ["qwen2.5-0.5b" as const] : options.presets;
const types = sweeping && !process.argv.includes("--types") ? ["q8_0" as const] : options.types;
const variant = getBackend().variant;
const {command: trainBin, backendDir} = trainerBinary();
const {binary: finetuneBin, variant: ftVariant} = sweeping ? {binary: "", variant} : await llamaTool("llama-finetune", variant, log);
const work = fs.mkdtempSync(path.join(os.tmpdir(), "still-bench-train-"));
process.on("exit", () => fs.rmSync(work, {recursive: true, force: true}));

async function model(preset: PresetName, type: ModelType): Promise<string> {
    const file = path.join(packageRoot, "models", `${preset}-${type}.gguf`);
    if (!fs.existsSync(file)) {
        log(`making models/${path.basename(file)}…`);
        await makeModel({preset, type, out: file});
    }
    return file;
}

/** Ordinary English-like text from a fixed word list and a seeded generator. */
function corpus(words: number): string {
    const list = ("the of and to in is that for it as with was on be by this are from at or an have not which but all were when " +
        "there can more if will one about up out has what so into than them only some its two time could these may first then do " +
        "any like my now over such our man me even most made after also did many before must through back years where much your way " +
        "number sum prove value equal triangle angle circle line point square root find given let each integer prime answer").split(" ");
    let s = 7;
    const next = () => (s = (Math.imul(s, 1103515245) + 12345) >>> 0);
    return Array.from({length: words}, (_, i) => list[next() % list.length] + (i % 17 === 16 ? "." : "")).join(" ");
}


function events(stdout: string): TrainerEvent[] {
    return stdout.split("\n").filter((l) => l.startsWith("{")).map((l) => trainerEventSchema.parse(JSON.parse(l)));
}

/** Seconds per step and tokens/s over the steps after the first. */
function stepFigures(evs: TrainerEvent[]) {
    const steps = evs.filter((e): e is Extract<TrainerEvent, {type: "step"}> => e.type === "step");
    if (steps.length < 2) throw new Error("still-train reported fewer than two steps");
    const first = steps[0]!;
    const last = steps.at(-1)!;
    const tokens = steps.slice(1).reduce((n, e) => n + e.tokens, 0);
    return {secondsPerStep: (last.elapsed - first.elapsed) / (steps.length - 1), tokensPerS: tokens / (last.elapsed - first.elapsed)};
}

let runNo = 0;
async function runStill(task: "sft" | "dpo", modelPath: string, data: string, steps: number, ctx: number) {
    // a fresh run each time: no checkpoint or cached reference log-probs carried over
    const out = path.join(work, `${task}-${runNo++}-${path.basename(modelPath)}.gguf`);
    const {res, peakRssMb: rss} = await runMeasured(trainBin, [task, "--model", modelPath, "--data", data, "--out", out, "--ctx", String(ctx),
        "--max-steps", String(steps), "--threads", String(options.threads), "--lr", "1e-5", "--backend-dir", backendDir]);
    if (res.exitCode !== 0) throw new Error(`still-train ${task} failed: ${res.stderr.split("\n").slice(-3).join(" ")}`);
    return {evs: events(res.stdout), rss};
}

async function runFinetune(modelF32: string, text: string): Promise<Figures> {
    const textFile = path.join(work, "corpus.txt");
    fs.writeFileSync(textFile, text);
    const {res, peakRssMb: rss} = await runMeasured(finetuneBin, ["-m", modelF32, "-f", textFile, "-c", String(options.ctx), "-b", String(options.ctx),
        "-ub", String(options.ctx), "-t", String(options.threads), "--epochs", "1", "-o", path.join(work, "finetuned.gguf")], {cwd: toolCwd(ftVariant)});
    const output = res.stderr.replaceAll("\r", "\n");
    if (res.exitCode !== 0) {
        const reason = output.split("\n").find((l) => /GGML_ASSERT|error/i.test(l))?.replace(/^.*?(GGML_ASSERT)/, "$1") ?? `exit code ${res.exitCode}`;
        return {tokens_per_s: null, peak_rss_mb: rss, error: reason.trim()};
    }
    // one "epoch 0 lr=…" line per datapoint, each stamped min.sec.ms.us by llama.cpp's log
    const stamps = [...output.matchAll(/(\d+)\.(\d+)\.(\d+)\.(\d+) I epoch \d+ lr=/g)]
        .map(logSeconds);
    if (stamps.length < 3) return {tokens_per_s: null, peak_rss_mb: rss, error: "too few datapoints reported"};
    const seconds = stamps.at(-1)! - stamps[0]!;
    return {tokens_per_s: ((stamps.length - 1) * options.ctx) / seconds, peak_rss_mb: rss};
}

const medianFigures = (fs_: Figures[]): Figures => {
    const tps = fs_.map((f) => f.tokens_per_s).filter((v): v is number => v != null);
    const rss = fs_.map((f) => f.peak_rss_mb).filter((v): v is number => v != null);
    const error = fs_.find((f) => f.error != null)?.error;
    return {tokens_per_s: tps.length === 0 ? null : Math.round(median(tps) * 10) / 10, peak_rss_mb: rss.length === 0 ? null : Math.max(...rss),
        ...(error == null || tps.length > 0 ? {} : {error})};
};

// --- the ctx sweep ------------------------------------------------------------------------

type SweepFigures = {tokens_per_s: number | null, peak_rss_mb: number | null, estimated_peak_mb: number | null, error?: string};
type SweepRow = {model: string, base_type: string, ctx: number, chunked: SweepFigures, one_graph: SweepFigures,
    ggml_kernel?: {chunked: SweepFigures, one_graph: SweepFigures}, bf16_copies?: {chunked: SweepFigures, one_graph: SweepFigures}};

// The sweep's optional second and third ways of taking each row's steps, beside still's defaults.
const comparisons = [
    // ratio: the default's speed over the comparison's (defaultOver), or the comparison's over the default's
    {key: "ggml_kernel", on: options.compareKernels, what: "ggml's kernels", args: ["--f32-products", "ggml", "--q8-products", "ggml"],
        ratio: "still's / ggml's", defaultOver: true,
        title: "The same steps with ggml's matrix kernels (--f32-products ggml --q8-products ggml)"},
    {key: "bf16_copies", on: options.compareBf16, what: "BF16 copies", args: ["--backward-weights", "bf16"], ratio: "BF16 / F32 copies", defaultOver: false,
        title: "The same steps with BF16 copies of the frozen weights in the backward products (--backward-weights bf16)"}
] as const;

/** One still-train run over `rows` rows of `ctx` tokens taken one way: the memory plan's estimate, tokens/s after the first step, peak RSS. */
async function sweepRun(modelPath: string, data: string, ctx: number, recompute: "on" | "off", steps: number,
                        extra: readonly string[] = []): Promise<SweepFigures> {
    const out = path.join(work, `sweep-${runNo++}.gguf`);
    const {res, peakRssMb} = await runMeasured(trainBin, ["sft", "--model", modelPath, "--data", data, "--out", out, "--ctx", String(ctx),
        "--max-steps", String(steps), "--threads", String(options.threads), "--lr", "1e-5", "--rank", "16", "--alpha", "32",
        "--recompute", recompute, ...extra, "--backend-dir", backendDir]);
    const evs = events(res.stdout);
    const plan = evs.find((e) => e.type === "plan");
    const estimated = plan?.type === "plan" ? Math.round(plan.estimated_peak_mb) : null;
    if (res.exitCode !== 0) {
        const reason = res.stderr.split("\n").reverse().find((l) => /error: /.test(l))?.replace(/^.*?error: /, "") ?? `exit code ${res.exitCode}`;
        return {tokens_per_s: null, peak_rss_mb: null, estimated_peak_mb: estimated, error: reason};
    }
    return {tokens_per_s: Math.round(stepFigures(evs).tokensPerS * 100) / 100, peak_rss_mb: peakRssMb == null ? null : Math.round(peakRssMb),
        estimated_peak_mb: estimated};
}

async function sweep(): Promise<SweepRow[]> {
    const rows: SweepRow[] = [];
    for (const preset of presets) {
        const f32 = await model(preset, "f32");
        const vocab = await loadModel(f32, {vocabOnly: true});
        const steps = Math.max(2, options.steps);
        let words = 400;
        let tokens = vocab.tokenize(corpus(words));
        const longest = Math.max(...options.ctxSweep!);
        while (tokens.length < steps * longest) tokens = vocab.tokenize(corpus((words *= 2)));
        const files = new Map<number, string>();
        for (const ctx of options.ctxSweep!) {
            const file = path.join(work, `${preset}-sweep-${ctx}.bin`);
            const f = await TrainingFile.create(file, "sft", vocab.facts.vocabSize);
            for (let r = 0; r < steps; r++) {
                const t = tokens.slice(r * ctx, (r + 1) * ctx);
                await f.addSft({tokens: t, weights: t.map((_, i) => (i === 0 ? 0 : 1))});
            }
            await f.close();
            files.set(ctx, file);
        }
        await vocab.dispose();
        for (const type of types) {
            const modelPath = type === "f32" ? f32 : await model(preset, type);
            for (const ctx of options.ctxSweep!) {
                log(`${preset} ${type}, rows of ${ctx} tokens: chunked`);
                const chunked = await sweepRun(modelPath, files.get(ctx)!, ctx, "on", steps);
                log(`${preset} ${type}, rows of ${ctx} tokens: one graph`);
                const oneGraph = await sweepRun(modelPath, files.get(ctx)!, ctx, "off", steps);
                const row: SweepRow = {model: preset, base_type: type, ctx, chunked, one_graph: oneGraph};
                log(`  chunked ${chunked.tokens_per_s ?? chunked.error} tokens/s, ${chunked.peak_rss_mb} MB; one graph ${oneGraph.tokens_per_s ?? oneGraph.error}`);
                for (const c of comparisons.filter((x) => x.on)) {
                    log(`${preset} ${type}, rows of ${ctx} tokens: chunked and one graph with ${c.what}`);
                    const figures = {chunked: await sweepRun(modelPath, files.get(ctx)!, ctx, "on", steps, c.args),
                        one_graph: await sweepRun(modelPath, files.get(ctx)!, ctx, "off", steps, c.args)};
                    row[c.key] = figures;
                    log(`  chunked ${figures.chunked.tokens_per_s ?? figures.chunked.error} tokens/s; one graph ${figures.one_graph.tokens_per_s ?? figures.one_graph.error}`);
                }
                rows.push(row);
            }
        }
    }
    return rows;
}

function printSweep(rows: SweepRow[]) {
    const mb = (v: number | null) => (v == null ? "-" : (v / 1024).toFixed(2));
    const tps = (f: SweepFigures) => f.tokens_per_s ?? (f.error != null ? `not run: ${f.error.length > 60 ? f.error.slice(0, 60) + "…" : f.error}` : "-");
    const est = (f: SweepFigures) => (f.estimated_peak_mb == null || f.peak_rss_mb == null ? "-" : `${(f.estimated_peak_mb / f.peak_rss_mb).toFixed(2)}`);
    process.stdout.write(`still-train LoRA SFT (r 16, all seven modules), one row per step, ${options.threads} threads, llama.cpp ${variant.name} libraries; ` +
        `tokens/s after the first step\n\n`);
    process.stdout.write("| model | ctx | chunked tokens/s | ×first ctx | peak RSS GB | plan estimate / peak | one graph tokens/s | peak RSS GB | estimate / peak |\n" +
        "|---|---|---|---|---|---|---|---|---|\n");
    for (const r of rows) {
        const first = rows.find((x) => x.model === r.model && x.base_type === r.base_type)!;
        const ratio = r.chunked.tokens_per_s != null && first.chunked.tokens_per_s != null ? (r.chunked.tokens_per_s / first.chunked.tokens_per_s).toFixed(2) : "-";
        process.stdout.write(`| ${r.model} ${r.base_type} | ${r.ctx} | ${tps(r.chunked)} | ${ratio} | ${mb(r.chunked.peak_rss_mb)} | ${est(r.chunked)} | ` +
            `${tps(r.one_graph)} | ${mb(r.one_graph.peak_rss_mb)} | ${est(r.one_graph)} |\n`);
    }
    const times = (a: SweepFigures, b: SweepFigures) => (a.tokens_per_s != null && b.tokens_per_s != null ? `${(a.tokens_per_s / b.tokens_per_s).toFixed(2)}×` : "-");
    for (const c of comparisons) {
        if (!rows.some((r) => r[c.key] != null)) continue;
        process.stdout.write(`\n${c.title}, measured in this run:\n\n` +
            `| model | ctx | chunked tokens/s, ${c.what} | ${c.ratio} | one graph tokens/s, ${c.what} | ${c.ratio} |\n|---|---|---|---|---|---|\n`);
        const ratio = (ours: SweepFigures, theirs: SweepFigures) => (c.defaultOver ? times(ours, theirs) : times(theirs, ours));
        for (const r of rows) {
            const f = r[c.key];
            if (f == null) continue;
            process.stdout.write(`| ${r.model} ${r.base_type} | ${r.ctx} | ${tps(f.chunked)} | ${ratio(r.chunked, f.chunked)} | ` +
                `${tps(f.one_graph)} | ${ratio(r.one_graph, f.one_graph)} |\n`);
        }
    }
    // linear memory: the growth of the peak from 8k to 32k tokens against 4k to 8k (6 when linear, 20 when quadratic)
    for (const m of new Set(rows.map((r) => `${r.model} ${r.base_type}`))) {
        const at = (ctx: number) => rows.find((r) => `${r.model} ${r.base_type}` === m && r.ctx === ctx)?.chunked.peak_rss_mb;
        const [a, b, c] = [at(4096), at(8192), at(32768)];
        if (a != null && b != null && c != null && b > a)
            process.stdout.write(`\n${m}: (peak(32k) − peak(8k)) / (peak(8k) − peak(4k)) = ${((c - b) / (b - a)).toFixed(2)} (linear: 6, quadratic: 20)\n`);
    }
}

if (sweeping) {
    const rows = await sweep();
    if (options.json) process.stdout.write(JSON.stringify({variant: variant.name, threads: options.threads, sweep: rows}) + "\n");
    else printSweep(rows);
    process.exit(0);
}

const results: Result[] = [];
const dpoResults: DpoResult[] = [];
for (const preset of presets) {
    const f32 = await model(preset, "f32");
    const vocab = await loadModel(f32, {vocabOnly: true});
    const rows = options.steps + 1;
    // enough text for `rows` rows of ctx tokens for still-train, and for llama-finetune's
    // overlapping datapoints (stride ctx/2, 5% held out for validation)
    let words = 400;
    let tokens = vocab.tokenize(corpus(words));
    while (tokens.length < 2 * (rows + 2) * options.ctx) tokens = vocab.tokenize(corpus((words *= 2)));
    const sftFile = path.join(work, `${preset}-sft.bin`);
    {
        const f = await TrainingFile.create(sftFile, "sft", vocab.facts.vocabSize);
        for (let r = 0; r < rows; r++) {
            const t = tokens.slice(r * options.ctx, (r + 1) * options.ctx);
            await f.addSft({tokens: t, weights: t.map((_, i) => (i === 0 ? 0 : 1))});
        }
        await f.close();
    }
    const ftText = vocab.detokenize(tokens.slice(0, Math.ceil(((rows + 1) / 0.95) * options.ctx / 2) + options.ctx));
    // DPO pairs from the same tokens: prompt 1/8 of a row, two answers filling the rest
    const dpoFile = path.join(work, `${preset}-dpo.bin`);
    const pairSftFile = path.join(work, `${preset}-pair-sft.bin`);
    {
        const np = options.ctx / 8, na = (options.ctx - 2 * np) / 2;
        const d = await TrainingFile.create(dpoFile, "dpo", vocab.facts.vocabSize);
        const s = await TrainingFile.create(pairSftFile, "sft", vocab.facts.vocabSize);
        for (let r = 0; r < rows; r++) {
            const at = r * options.ctx;
            const prompt = tokens.slice(at, at + np), chosen = tokens.slice(at + np, at + np + na), rejected = tokens.slice(at + np + na, at + np + 2 * na);
            const ones = (a: number[]) => a.map(() => 1);
            await d.addDpo({prompt, chosen, chosenWeights: ones(chosen), chosenSftWeights: ones(chosen), rejected, rejectedWeights: ones(rejected)});
            for (const answer of [chosen, rejected])
                await s.addSft({tokens: [...prompt, ...answer], weights: [...prompt.map(() => 0), ...ones(answer)]});
        }
        await d.close();
        await s.close();
    }
    await vocab.dispose();

    for (const type of types) {
        const modelPath = type === "f32" ? f32 : await model(preset, type);
        const still: Figures[] = [];
        const ft: Figures[] = [];
        const sftSteps: number[] = [], dpoSteps: number[] = [], refs: number[] = [];
        let sftRss: number | null = null, dpoRss: number | null = null;
        for (let run = 1; run <= options.runs; run++) {
            log(`${preset} ${type}, run ${run}/${options.runs}`);
            // interleaved, so drifts in machine load hit both trainers alike
            const s = await runStill("sft", modelPath, sftFile, rows, options.ctx);
            still.push({tokens_per_s: stepFigures(s.evs).tokensPerS, peak_rss_mb: s.rss});
            ft.push(await runFinetune(f32, ftText));
            if (options.dpo) {
                const a = await runStill("sft", modelPath, pairSftFile, rows, options.ctx);
                const b = await runStill("dpo", modelPath, dpoFile, rows, options.ctx);
                sftSteps.push(stepFigures(a.evs).secondsPerStep);
                dpoSteps.push(stepFigures(b.evs).secondsPerStep);
                const ref = b.evs.find((e) => e.type === "reference");
                refs.push(ref?.type === "reference" ? ref.seconds ?? 0 : 0);
                sftRss = Math.max(sftRss ?? 0, a.rss ?? 0);
                dpoRss = Math.max(dpoRss ?? 0, b.rss ?? 0);
            }
        }
        results.push({model: preset, base_type: type, mode: "lora", still: medianFigures(still),
            llama_finetune: {...medianFigures(ft), base_type: "f32", mode: "full"}});
        if (options.dpo) {
            const r3 = (x: number) => Math.round(x * 1000) / 1000;
            dpoResults.push({model: preset, base_type: type, sft_s_per_step: r3(median(sftSteps)), dpo_s_per_step: r3(median(dpoSteps)),
                reference_s: r3(median(refs)), sft_peak_rss_mb: sftRss, dpo_peak_rss_mb: dpoRss});
        }
    }
}

if (options.json) {
    process.stdout.write(JSON.stringify({variant: variant.name, threads: options.threads, ctx: options.ctx, steps: options.steps, runs: options.runs,
        results, ...(options.dpo ? {dpo: dpoResults} : {})}) + "\n");
} else {
    const ratio = (a: number | null, b: number | null) => (a != null && b != null && b > 0 ? (a / b).toFixed(2) + "×" : "-");
    process.stdout.write(`still-train LoRA SFT (r 8, all modules, loss on every token) vs llama-finetune (full, F32), ${options.threads} threads, ` +
        `rows of ${options.ctx} tokens, one per step, ${options.steps} measured steps; medians of ${options.runs}; llama.cpp ${variant.name} libraries\n\n`);
    process.stdout.write("| model | still base | still tokens/s | llama-finetune tokens/s | ratio | peak RSS MB still / llama-finetune |\n|---|---|---|---|---|---|\n");
    for (const r of results) {
        const ft = r.llama_finetune.tokens_per_s ?? `failed: ${r.llama_finetune.error ?? "?"}`;
        process.stdout.write(`| ${r.model} | ${r.base_type} | ${r.still.tokens_per_s ?? "-"} | ${ft} | ${ratio(r.still.tokens_per_s, r.llama_finetune.tokens_per_s)} | ` +
            `${r.still.peak_rss_mb ?? "-"} / ${r.llama_finetune.peak_rss_mb ?? "-"} |\n`);
    }
    if (options.dpo) {
        process.stdout.write("\nDPO step vs SFT step on the same pairs (both answers of a pair in one row)\n\n");
        process.stdout.write("| model | base | SFT s/step | DPO s/step | DPO/SFT | reference pass s | peak RSS MB SFT / DPO |\n|---|---|---|---|---|---|---|\n");
        for (const d of dpoResults)
            process.stdout.write(`| ${d.model} | ${d.base_type} | ${d.sft_s_per_step} | ${d.dpo_s_per_step} | ${ratio(d.dpo_s_per_step, d.sft_s_per_step)} | ` +
                `${d.reference_s} | ${d.sft_peak_rss_mb ?? "-"} / ${d.dpo_peak_rss_mb ?? "-"} |\n`);
    }
}
