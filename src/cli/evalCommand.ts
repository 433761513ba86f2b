// `still eval`: a model (plus adapters) on evaluation sets: greedy pass@1, mean@k / maj@k /
// pass@k with standard errors, breakdowns, response files and a report; --compare puts an
// earlier evaluation beside it with a paired test.
import path from "node:path";
import type {Command} from "commander";
import {z} from "zod";
import {OptionError} from "../errors.js";

import {type EvaluationRecord, evaluationOptionsSchema, runEvaluation} from "../evaluate/runEvaluation.js";
import {type CliOption, addOptions, commonFields, parseCli, systemFlags} from "./cliOptions.js";
import {endpointFields, endpointFlags, endpointOptionsFrom} from "./endpointOptions.js";
import {Progress} from "./Progress.js";

const e = evaluationOptionsSchema.shape;
const optionsSchema = z.object({
    model: e.model,
    adapter: z.array(z.string().min(1)).describe("LoRA adapter GGUF (repeat the option for several, applied together)").default([]),
    adapterScale: z.array(z.number()).describe("Scale of each adapter, in order (one value: all of them)").default([]),
    set: z.array(z.string().min(1)).min(1).describe("An evaluation set as NAME=FILE (or FILE: named after the file): JSONL or Parquet problems, or a GPQA CSV; repeat for several"),
    limit: z.number().int().min(1).optional().describe("Only the first N problems of each set"),
    greedy: e.greedy,
    samples: e.samples,
    temperature: e.temperature,
    topK: e.topK,
    topP: e.topP,
    maxTokens: e.maxTokens,
    seed: e.seed,
    parallel: e.parallel,
    format: e.format,
    thinking: e.thinking,
    systemPrompt: e.systemPrompt,
    systemFile: e.systemFile,
    gpuLayers: e.gpuLayers,
    threads: e.threads,
    out: e.out,
    resume: e.resume,
    compare: e.compare,
    label: e.label,
    unsafeRunWithoutSandbox: e.unsafeRunWithoutSandbox,
    ...endpointFields,
    json: commonFields.json
});
const flags: (string | CliOption)[] = [
    "--model <file>", "--adapter <file...>", "--adapter-scale <s...>", "--set <name=file...>", "--limit <n>",
    {flags: "--no-greedy", field: "greedy", help: "No greedy pass@1 (needs --samples)"}, "--samples <k>", "--temperature <t>", "--top-k <k>", "--top-p <p>",
    "--max-tokens <n>", "--seed <n>", "--parallel <n>", "--format <form>", "--thinking",
    {flags: "--no-thinking", field: "thinking", help: "enable_thinking off in the chat template"}, ...systemFlags, "--gpu-layers <n>", "--threads <n>", "--out <dir>", "--resume",
    "--compare <dir>", "--label <text>", "--unsafe-run-without-sandbox", ...endpointFlags, "--json"
];

/** NAME=FILE, or FILE named after the file. */
export function parseSetArgument(arg: string): {name: string, path: string} {
    const m = /^([A-Za-z0-9][A-Za-z0-9._-]*)=(.+)$/.exec(arg);
    if (m != null) return {name: m[1]!, path: m[2]!};
    const name = path.basename(arg, path.extname(arg)).replace(/[^A-Za-z0-9._-]/g, "_").replace(/^[^A-Za-z0-9]+/, "");
    if (name === "") throw new OptionError(`--set ${arg}: give the set a name, as NAME=FILE.`);
    return {name, path: arg};
}

export function evalCommand(program: Command, signal: AbortSignal) {
    addOptions(program.command("eval")
        .description("Evaluate a model (plus adapters) on problem sets: pass@1, mean@k, maj@k, pass@k with standard errors, a report; --compare with an earlier evaluation"),
    optionsSchema, flags)
        .action(async (raw: Record<string, unknown>) => {
            const {json, adapter, adapterScale, set, limit, endpoint, endpointModel, endpointConcurrency, apiKeyEnv, requestTimeout, endpointPrompt, endpointLogprobs, samplesPerRequest,
                ...o} = parseCli(optionsSchema, raw, flags);
            const remote = endpointOptionsFrom({endpoint, endpointModel, endpointConcurrency, apiKeyEnv, requestTimeout, endpointPrompt, endpointLogprobs, samplesPerRequest});
            if (adapterScale.length > 1 && adapterScale.length !== adapter.length)
                throw new OptionError(`--adapter-scale gives ${adapterScale.length} scales for ${adapter.length} adapters: give one for each, or one for all.`);
            const adapters = adapter.map((p, i) => ({path: p, scale: adapterScale[adapterScale.length === 1 ? 0 : i] ?? 1}));
            const sets = set.map(parseSetArgument).map((s) => ({...s, ...(limit == null ? {} : {limit})}));
            let bar: {set: string, progress: Progress} | undefined;
            const record = await runEvaluation({...o, adapters, sets, ...(remote == null ? {} : {remote})}, {
                signal,
                onLog: (line) => process.stderr.write(`still: ${line}\n`),
                onPlan: (p) => {
                    if (!json) process.stderr.write(`KV cache: ${p.parallel} parallel × ${p.tokensPerSample} tokens = ${(p.bytes / 2 ** 30).toFixed(2)} GiB ` +
                        `of ${(p.free / 2 ** 30).toFixed(1)} GiB free (up to ${p.fits} samples of that length fit at once)\n`);
                },
                onProgress: (p) => {
                    if (json) return;
                    if (bar?.set !== p.set) {
                        bar?.progress.stop();
                        bar = {set: p.set, progress: new Progress(p.set, p.total)};
                    }
                    bar.progress.update(p.done);
                }
            }).finally(() => bar?.progress.stop());
            process.stdout.write(json ? JSON.stringify(record) + "\n" : summary(record, o.out));
        });
}

const pct = (v: number) => `${(v * 100).toFixed(1)}%`;
const se = (v: number | undefined) => (v == null ? "" : ` ± ${(v * 100).toFixed(1)}`);

/** The evaluation in a few lines: each set's figures, then the comparison. */
export function summary(r: EvaluationRecord, out: string): string {
    const lines = [`${r.label}: ${r.sets.length} set${r.sets.length === 1 ? "" : "s"} in ${r.seconds.toFixed(0)} s`];
    for (const m of r.sets) {
        let line = `  ${m.set}: ${m.problems} problems, pass@1 ${pct(m.accuracy)}${se(m.stderr)}, format ${pct(m.formatAdherence)}, ` +
            `truncated ${pct(m.truncated)}, mean ${Math.round(m.meanTokens)} tokens`;
        if (m.k != null) line += `; mean@${m.k} ${pct(m.meanAtK!)}${se(m.meanAtKStderr)}, maj@${m.k} ${pct(m.majAtK!)}, pass@${m.k} ${pct(m.passAtK!)}`;
        lines.push(line);
    }
    if (r.compare != null) {
        lines.push(`against ${r.compare.label} (${r.compare.against}), paired by problem:`);
        for (const c of r.compare.sets) {
            const parts = [];
            if (c.greedy != null) parts.push(`pass@1 ${pct(c.greedy.a)} → ${pct(c.greedy.b)} (${c.greedy.onlyA} only before, ${c.greedy.onlyB} only now; McNemar p = ${c.greedy.p.toPrecision(2)})`);
            if (c.sampled != null) parts.push(`mean@k ${pct(c.sampled.a)} → ${pct(c.sampled.b)} (95% ${pct(c.sampled.low)} to ${pct(c.sampled.high)}; bootstrap p = ${c.sampled.p.toPrecision(2)})`);
            lines.push(`  ${c.set}: ${c.paired} problems, ${parts.join("; ") || "nothing to pair"}${c.unpaired > 0 ? `; ${c.unpaired} in only one evaluation` : ""}`);
        }
    }
    lines.push(`report: ${path.join(out, "report.html")}; responses: ${path.join(out, "responses")}`);
    return lines.join("\n") + "\n";
}

