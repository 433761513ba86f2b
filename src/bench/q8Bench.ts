// npm run bench:q8 -- [--shapes 151936x896,4864x896,896x4864] [--columns 1,8,32,128] [--threads N] [--repeats 10] [--ggml-cpu V] [--json]
//
// still's Q8_0 matrix-product kernel, each tile width this CPU runs (16 rows on AVX-512
// VNNI, 8 on AVX-VNNI), against ggml's own product of the same weights and activation
// columns, in one process (`still-train q8-bench`, native/trainer/q8_bench.cpp): the CPU
// backend still-train and the engine load, its thread pool, the given threads. Default
// shapes: the qwen2.5-0.5b preset's output layer (151,936 × 896), its MLP's up (4,864 × 896)
// and down (896 × 4,864) products. Columns: 1 (one sequence's decode step), 8 and 32 (decode
// steps of that many sequences), 128 (prefill, scoring). Best of --repeats rounds per
// kernel, the kernels interleaved; each figure also as multiply-adds per second, with the
// largest difference of still's results from ggml's over ggml's largest value.
// --ggml-cpu V runs ggml's CPU backend variant V (haswell, alderlake, …) for ggml's product.
import {execa} from "execa";
import {z} from "zod";
import os from "node:os";
import {parseArgv} from "../cli/cliOptions.js";
import {getBackend} from "../engine/binding.js";
import {trainerBinary} from "../train/runTrainer.js";
import {cpuBackendFolder, cpuBackendIn} from "./llamaTools.js";

const optionsSchema = z.object({
    shapes: z.string().regex(/^\d+x\d+(,\d+x\d+)*$/, "ROWSxK pairs, e.g. 151936x896,4864x896").default("151936x896,4864x896,896x4864"),
    columns: z.string().regex(/^\d+(,\d+)*$/, "whole numbers, e.g. 1,8,32").default("1,8,32,128"),
    threads: z.number().int().min(1).describe("Threads for every kernel").default(os.availableParallelism()),
    repeats: z.number().int().min(1).describe("Rounds per kernel (the best is reported)").default(10),
    ggmlCpu: z.string().regex(/^[\w.]+$/).optional().describe("ggml's CPU backend variant for ggml's product (haswell, alderlake, …) instead of the best this CPU runs"),
    json: z.boolean().describe("Print one JSON object").default(false)
});
const options = parseArgv(optionsSchema, ["--shapes <list>", "--columns <list>", "--threads <n>", "--repeats <n>", "--ggml-cpu <variant>", "--json"]);

const resultSchema = z.object({
    type: z.literal("q8_bench"), rows: z.number(), k: z.number(), columns: z.number(), kernel: z.string(), tile_rows: z.number(),
    threads: z.number(), ms: z.number(), gmacs: z.number(), max_rel_diff: z.number()
});
type Result = z.infer<typeof resultSchema>;

const backend = getBackend();
const {command, backendDir} = trainerBinary(backend);
const ggmlCpu = cpuBackendFolder(backend.variant, options.ggmlCpu);
const run = await execa(command, ["q8-bench", "--shapes", options.shapes, "--columns", options.columns, "--threads", String(options.threads),
    "--repeats", String(options.repeats), "--backend-dir", ggmlCpu?.dir ?? backendDir], {reject: false, env: {STILL_LOG: ""}});
if (run.exitCode !== 0) {
    process.stderr.write(`still-train q8-bench failed (exit ${run.exitCode}): ${run.stderr.split("\n").filter((l) => l.includes("error")).join(" ") || run.stderr.slice(-500)}\n`);
    process.exit(1);
}
const results: Result[] = run.stdout.split("\n").filter((l) => l.startsWith("{")).map((l) => resultSchema.parse(JSON.parse(l)));
// the ggml CPU backend module still-train loaded, from its log
const loaded = cpuBackendIn(run.stderr) ?? ggmlCpu?.name ?? null;
const cpu = os.cpus()[0]?.model ?? "unknown";

if (options.json) {
    process.stdout.write(JSON.stringify({cpu, threads: options.threads, ggml_cpu_backend: loaded, results}) + "\n");
} else {
    const ours = [...new Set(results.filter((r) => r.kernel !== "ggml").map((r) => `${r.kernel}|${r.tile_rows}`))].map((s) => s.split("|"));
    process.stdout.write(`CPU: ${cpu}, ${options.threads} threads; ggml's product on its ${loaded ?? "?"} CPU backend; best of ${options.repeats} rounds, ms (GMAC/s)\n\n`);
    if (ours.length === 0) process.stdout.write("This CPU has neither AVX-512 VNNI nor AVX-VNNI: still's kernel does not run here, so ggml's products are all there is.\n\n");
    process.stdout.write(`| rows × k | columns | ggml | ${ours.map(([name, rows]) => `still, ${rows}-row tiles (${name}) | speed-up`).join(" | ")} | largest difference |\n`);
    process.stdout.write(`|---|---|---|${ours.map(() => "---|---|").join("")}---|\n`);
    const cell = (r: Result) => `${r.ms.toFixed(3)} (${r.gmacs.toFixed(1)})`;
    for (const g of results.filter((r) => r.kernel === "ggml")) {
        const same = results.filter((r) => r.rows === g.rows && r.k === g.k && r.columns === g.columns && r.kernel !== "ggml");
        const cols = ours.map(([name]) => same.find((r) => r.kernel === name)).map((r) => r == null ? "- | -" : `${cell(r)} | ${(g.ms / r.ms).toFixed(2)}×`);
        const diff = Math.max(0, ...same.map((r) => r.max_rel_diff));
        process.stdout.write(`| ${g.rows} × ${g.k} | ${g.columns} | ${cell(g)} | ${cols.join(" | ")} | ${same.length === 0 ? "-" : diff.toExponential(1)} |\n`);
    }
}
