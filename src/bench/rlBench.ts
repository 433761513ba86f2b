// npm run bench:rl -- [--presets tiny,qwen2.5-0.5b] [--steps 3] [--prompts 4] [--samples 4] [--max-tokens 64]
//                     [--context N] [--threads N] [--json]
//
// Online RL steps (grpo(), LoRA r 16 on all modules) with the resident trainer against the
// per-step-process baseline (a new trainer process for every update, resumed from the
// step before's checkpoint), the same problems, seeds and sampling in one run. Per step:
// sampling, rewards (grading), old and reference log-probs, gradient and the adapter
// hand-over (write, load, swap), in seconds; steps per minute over the measured steps (the
// first step, whose trainer start both pay once, left out); the hand-over's share of a step.
// With --json the last line is {results: [{preset, steps_per_min, baseline_steps_per_min,
// handover_share, ...}]}.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import {z} from "zod";
import {parseArgv} from "../cli/cliOptions.js";
import {problemSchema} from "../data/problemSchema.js";
import {packageRoot} from "../engine/binding.js";
import {loadModel} from "../engine/Model.js";
import {makeModel} from "../models/makeModel.js";
import {type PresetName, presetNames} from "../models/presets.js";
import {type GrpoStepMetrics, grpo} from "../rl/grpo.js";

const optionsSchema = z.object({
    presets: z.array(z.enum(presetNames)).describe("Model presets (tiny: F32; others: Q8_0)").default(["tiny", "qwen2.5-0.5b"]),
    steps: z.number().int().min(2).describe("Steps per run; the first is left out of the rates").default(3),
    prompts: z.number().int().min(1).describe("Prompts per step").default(4),
    samples: z.number().int().min(2).describe("Samples per prompt").default(4),
    maxTokens: z.number().int().min(1).describe("Most tokens per sample").default(64),
    context: z.number().int().min(16).optional().describe("The trainer's row length in tokens (default: grpo's)"),
    threads: z.number().int().min(1).describe("CPU threads of the engine and the trainer").default(Math.max(1, os.availableParallelism() - 1)),
    json: z.boolean().describe("Print one JSON object last").default(false)
});
const options = parseArgv(optionsSchema, ["--presets <list>", "--steps <n>", "--prompts <n>", "--samples <n>", "--max-tokens <n>", "--context <n>", "--threads <n>", "--json"]);
const log = (line: string) => process.stderr.write(line + "\n");
const work = fs.mkdtempSync(path.join(os.tmpdir(), "still-bench-rl-"));
process.on("exit", () => fs.rmSync(work, {recursive: true, force: true}));

async function modelFile(preset: PresetName): Promise<string> {
    const type = preset === "tiny" ? "f32" : "q8_0";
    const file = path.join(packageRoot, "models", `${preset}-${type}.gguf`);
    if (!fs.existsSync(file)) {
        log(`making models/${path.basename(file)}…`);
        await makeModel({preset, type, out: file});
    }
    return file;
}

const problems = Array.from({length: 64}, (_, i) => problemSchema.parse({
    id: `b${i}`, question: `Add ${i} and ${2 * i + 1}, then explain the sum in a sentence.`, answer: String(3 * i + 1)
}));

type Split = {sampling: number, rewards: number, old_logps: number, ref_logps: number, gradient: number, handover: number, step: number};

async function measure(preset: PresetName, perStep: boolean): Promise<{steps: GrpoStepMetrics[], startSeconds: number}> {
    const model = await loadModel(await modelFile(preset));
    const dir = fs.mkdtempSync(path.join(work, `${preset}-${perStep ? "per-step" : "resident"}-`));
    const t0 = performance.now();
    let firstStepAt = 0;
    try {
        const r = await grpo({
            model, problems, systemPrompt: null, dir, seed: 1, threads: options.threads, trainerPerStep: perStep,
            config: {
                steps: options.steps, promptsPerStep: options.prompts, samplesPerPrompt: options.samples, maxTokens: options.maxTokens,
                ...(options.context == null ? {} : {context: options.context}),
                temperature: 1, learningRate: 1e-5, parallel: options.prompts * options.samples, lora: {rank: 16, alpha: 32},
                // rewards that differ within groups, so every update has a gradient
                dropEqualGroups: false
            },
            rewardFunctions: [{name: "length", fn: (x) => x.completionTokens / options.maxTokens}],
            onEvent: (e) => {
                if (e.type === "plan" && firstStepAt === 0) firstStepAt = performance.now();
                if (e.type === "step") log(`  ${perStep ? "per-step process" : "resident"} step ${e.metrics.step}: ${e.metrics.seconds.step.toFixed(2)} s`);
            }
        });
        return {steps: r.steps, startSeconds: (firstStepAt - t0) / 1000};
    } finally {
        await model.dispose();
    }
}

const sum = (steps: GrpoStepMetrics[], key: keyof Split) => steps.reduce((a, s) => a + s.seconds[key], 0);
const fmt = (v: number) => v.toFixed(v < 10 ? 2 : 1);

const results = [];
for (const preset of options.presets) {
    log(`${preset}: ${options.steps} steps of ${options.prompts} prompts × ${options.samples} samples, up to ${options.maxTokens} tokens`);
    const resident = await measure(preset, false);
    const baseline = await measure(preset, true);
    const measured = (s: GrpoStepMetrics[]) => s.slice(1);
    const rate = (s: GrpoStepMetrics[]) => 60 * measured(s).length / sum(measured(s), "step");
    const r = measured(resident.steps);
    const split = Object.fromEntries((["sampling", "rewards", "old_logps", "ref_logps", "gradient", "handover", "step"] as const)
        .map((k) => [k, sum(r, k) / r.length])) as Split;
    const b = measured(baseline.steps);
    results.push({
        preset, steps_per_min: rate(resident.steps), baseline_steps_per_min: rate(baseline.steps),
        speedup: rate(resident.steps) / rate(baseline.steps), handover_share: split.handover / split.step,
        seconds_per_step: split, baseline_seconds_per_step: sum(b, "step") / b.length,
        training_tokens_per_s: r.reduce((a, s) => a + s.tokens_per_s.training, 0) / r.length,
        sampling_tokens_per_s: r.reduce((a, s) => a + s.tokens_per_s.sampling, 0) / r.length,
        peak_rss_mb: Math.max(...r.map((s) => s.trainer?.peak_rss_mb ?? 0))
    });
}

const cpu = os.cpus()[0]?.model ?? "unknown CPU";
console.log(`\nOnline RL steps, resident trainer vs a trainer process per step (${cpu}, ${options.threads} threads)`);
console.log("preset          steps/min  baseline  speedup  sampling  rewards  old lp  ref lp  gradient  hand-over (share)  step s");
for (const x of results) {
    const s = x.seconds_per_step;
    console.log(`${x.preset.padEnd(15)} ${fmt(x.steps_per_min).padStart(9)} ${fmt(x.baseline_steps_per_min).padStart(9)} ${(x.speedup.toFixed(2) + "×").padStart(8)} ` +
        `${fmt(s.sampling).padStart(9)} ${fmt(s.rewards).padStart(8)} ${fmt(s.old_logps).padStart(7)} ${fmt(s.ref_logps).padStart(7)} ${fmt(s.gradient).padStart(9)} ` +
        `${(fmt(s.handover) + " (" + (100 * x.handover_share).toFixed(1) + "%)").padStart(18)} ${fmt(s.step).padStart(7)}`);
}
if (options.json) console.log(JSON.stringify({cpu, threads: options.threads, steps: options.steps, prompts: options.prompts, samples: options.samples,
    max_tokens: options.maxTokens, results}));
