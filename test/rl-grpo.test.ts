// Online RL from the TypeScript side: rewards (STILL-3's scheme, an unfinished response
// never correct, DAPO's over-length penalty, your own reward functions and their failures),
// options refused before any work, grpo() on a tiny model (steps, metrics, hand-over), and
// `still run` with a grpo round killed with SIGKILL mid-sampling and mid-update, then
// resumed: the same adapter and metrics (times aside) as an uninterrupted run.
import fs from "node:fs";
import path from "node:path";
import {execa} from "execa";
import {describe, expect, it} from "vitest";
import {problemSchema} from "../src/data/problemSchema.js";
import {readGgufHeader} from "../src/engine/readGguf.js";
import {loadModel} from "../src/engine/Model.js";
import {OptionError, StillError} from "../src/errors.js";
import {formatThought} from "../src/format/formatThought.js";
import {MARKERS} from "../src/format/markers.js";
import {checkGrpoConfig, grpo, grpoConfigSchema} from "../src/rl/grpo.js";
import {overlongPenalty, rewardSample, rewardSchemeSchema, unfinishedReason} from "../src/rl/rewards.js";
import {testModel, tmpDir} from "./helpers/models.js";

const problem = problemSchema.parse({id: "p1", question: "What is 6 times 7?", answer: "42"});
const scheme = rewardSchemeSchema.parse({});
const finished = (answer: string) => formatThought({thought: "6 sevens", solution: `the answer is \\boxed{${answer}}.`});

describe("rewards", () => {
    it("STILL-3's scheme: correct +1, wrong −1, unfinished −2", async () => {
        const r = (text: string, finish: "stop" | "length" = "stop") => rewardSample(problem, {sample: 0, text, completionTokens: 40, finish}, scheme, 64);
        expect((await r(finished("42"))).reward).toBe(1);
        expect((await r(finished("41"))).reward).toBe(-1);
        expect((await r(finished("42"), "length"))).toMatchObject({reward: -2, unfinished: true, correct: false});
        expect((await r("I think we should look at the question again,\nand then again, more slowly")).reward).toBe(-2); // no final answer
    });

    it("an unfinished response never counts as correct, whatever its last line holds", async () => {
        const open = `${MARKERS.beginThought}\n6 times 7 is \\boxed{42}`;
        expect(unfinishedReason(open, "stop", "42")).toBe("the thought never closed");
        const r = await rewardSample(problem, {sample: 2, text: open, completionTokens: 20, finish: "stop"}, scheme, 64);
        expect(r).toMatchObject({reward: -2, correct: false, unfinished: true});
        const cut = `${MARKERS.beginThought}\nx${MARKERS.endThought}\n${MARKERS.beginSolution}\nthe answer is \\boxed{42}`;
        expect((await rewardSample(problem, {sample: 3, text: cut, completionTokens: 20, finish: "stop"}, scheme, 64)).correct).toBe(false);
    });

    it("a format gate: a right answer outside the thought format is rewarded as wrong, its grade kept", async () => {
        const gate = rewardSchemeSchema.parse({requireFormat: true});
        // the thought closed and the answer boxed, but no solution block
        const loose = `${MARKERS.beginThought}\n6 sevens\n${MARKERS.endThought}\n\\boxed{42}.\n${MARKERS.endSolution}`;
        const r = (text: string, sch = gate) => rewardSample(problem, {sample: 0, text, completionTokens: 40, finish: "stop"}, sch, 64);
        expect(await r(loose, scheme)).toMatchObject({reward: 1, correct: true});
        expect(await r(loose)).toMatchObject({reward: -1, correct: true, unfinished: false});
        expect((await r(finished("42"))).reward).toBe(1);
        expect((await r(finished("41"))).reward).toBe(-1);
    });

    it("format bonus, DAPO's soft over-length penalty and your own functions add up, each part kept", async () => {
        expect([overlongPenalty(40, 64, {buffer: 16, penalty: 1}), overlongPenalty(56, 64, {buffer: 16, penalty: 1}),
            overlongPenalty(64, 64, {buffer: 16, penalty: 1})]).toEqual([0, -0.5, -1]);
        const s = rewardSchemeSchema.parse({format: 0.5, overlong: {buffer: 16}});
        const r = await rewardSample(problem, {sample: 1, text: finished("42"), completionTokens: 56, finish: "stop"}, s, 64, [
            {name: "brevity", fn: (x) => -x.completionTokens / 100},
            {name: "only-math", fn: async (x) => (x.problem.domain === "code" ? 1 : null), weight: 3}
        ]);
        expect(r.parts).toEqual({outcome: 1, format: 0.5, overlong: -0.5, brevity: -0.56, "only-math": null});
        expect(r.reward).toBeCloseTo(1 + 0.5 - 0.5 - 0.56, 12);
    });

    it("a reward function that throws or returns NaN names the sample", async () => {
        const text = finished("42");
        await expect(rewardSample(problem, {sample: 5, text, completionTokens: 9, finish: "stop"}, scheme, 64,
            [{name: "judge", fn: () => { throw new Error("judge offline"); }}])).rejects.toThrow("the reward function judge failed on problem p1, sample 5: judge offline");
        await expect(rewardSample(problem, {sample: 6, text, completionTokens: 9, finish: "stop"}, scheme, 64,
            [{name: "ratio", fn: () => Number.NaN}])).rejects.toThrow(StillError);
        await expect(rewardSample(problem, {sample: 6, text, completionTokens: 9, finish: "stop"}, scheme, 64,
            [{name: "ratio", fn: () => Number.NaN}])).rejects.toThrow("the reward function ratio returned NaN for problem p1, sample 6");
    });
});

describe("grpo options", () => {
    it("refuses impossible options before any work", () => {
        const c = (raw: object) => grpoConfigSchema.parse(raw);
        expect(() => checkGrpoConfig(c({samplesPerPrompt: 1}), 10)).toThrow(/samplesPerPrompt 1 leaves each group one reward/);
        expect(() => checkGrpoConfig(c({samplesPerPrompt: 1, policy: {loss: "dr_grpo"}}), 10)).not.toThrow();
        expect(() => c({policy: {clipLow: 0.3, clipHigh: 0.2}})).toThrow(/clipHigh \(ε_high\) is below clipLow/);
        expect(() => checkGrpoConfig(c({promptsPerStep: 12}), 10)).toThrow(OptionError);
        expect(() => checkGrpoConfig(c({curation: {passRate: [0.6, 0.1]}}), 10)).toThrow(/is empty/);
        // servers' log-probs are at temperature 1, the trainer's at the sampling temperature
        expect(() => checkGrpoConfig(c({temperature: 0.6, policy: {tisCap: 2}}), 10, [], true)).toThrow(/tisCap weighs the trainer's log-probs at temperature 0.6/);
        expect(() => checkGrpoConfig(c({temperature: 0.6, policy: {tisCap: 2}}), 10)).not.toThrow();
        expect(() => checkGrpoConfig(c({temperature: 1, policy: {tisCap: 2}}), 10, [], true)).not.toThrow();
        expect(() => checkGrpoConfig(c({}), 10, [{name: "outcome", fn: () => 0}])).toThrow(/name "outcome" is taken/);
    });
});

/** Problems the tiny model is asked: answers it will not give, so rewards come from the functions. */
const problems = Array.from({length: 6}, (_, i) => problemSchema.parse({id: `q${i}`, question: `Count to ${i + 3}.`, answer: String(i + 3)}));

describe("grpo() on a tiny model", () => {
    it("samples, rewards, updates and hands the adapter over each step; metrics per step", async () => {
        const model = await loadModel(await testModel("tiny"));
        const dir = fs.mkdtempSync(path.join(tmpDir, "grpo-"));
        const events: string[] = [];
        try {
            const result = await grpo({
                model, problems, systemPrompt: null, dir, seed: 3, threads: 1,
                config: {steps: 2, promptsPerStep: 2, samplesPerPrompt: 3, maxTokens: 16, learningRate: 1e-2, parallel: 6, lora: {rank: 4, alpha: 8},
                    policy: {loss: "dapo", clipHigh: 0.28}, dropEqualGroups: false},
                // a reward that varies within every group: the share of vowels
                rewardFunctions: [{name: "vowels", fn: (x) => (x.text.match(/[aeiou]/g)?.length ?? 0) / Math.max(1, x.text.length)}],
                onEvent: (e) => events.push(e.type)
            });
            expect(result.steps.map((s) => s.step)).toEqual([1, 2]);
            const [first] = result.steps;
            expect(first).toMatchObject({samples: 6, skipped: false, "groups/dropped": 0});
            expect(Object.keys(first!.rewards).sort()).toEqual(["outcome", "vowels"]);
            expect(first!.trainer?.grad_norm).toBeGreaterThan(0);
            expect(first!.seconds.handover).toBeGreaterThan(0);
            expect(events).toContain("plan");
            const lines = fs.readFileSync(path.join(dir, "metrics.jsonl"), "utf8").trim().split("\n");
            expect(lines.length).toBe(2);
            expect((await readGgufHeader(result.adapter)).tensors.length).toBe(56);
            expect(fs.existsSync(path.join(dir, "steps", "step-00002", "rewards.jsonl"))).toBe(true);
        } finally {
            await model.dispose();
        }
    }, 120_000);
});

describe("still run with a grpo round", () => {
    const cli = (args: string[]) => execa(process.execPath, ["dist/src/cli/main.js", ...args], {reject: false});

    /** A run config: the tiny model, a grpo round of 3 steps; the over-length penalty varies the rewards of samples that stop early. */
    async function config(name: string) {
        const base = path.join(tmpDir, "grpo-cli");
        fs.mkdirSync(base, {recursive: true});
        const data = path.join(base, "problems.jsonl");
        fs.writeFileSync(data, problems.map((p) => JSON.stringify({id: p.id, question: p.question, answer: p.answer})).join("\n") + "\n");
        const file = path.join(base, `${name}.json`);
        fs.writeFileSync(file, JSON.stringify({
            name, runsDir: ".", seed: 5, model: {path: await testModel("tiny"), threads: 1}, prompt: {system: null},
            data: {problems: data}, evaluate: {greedy: true, maxTokens: 8},
            rounds: [{method: "grpo", grpo: {steps: 3, promptsPerStep: 2, samplesPerPrompt: 4, maxTokens: 48, temperature: 1.5, learningRate: 1e-2,
                chunk: 1, parallel: 4, lora: {rank: 4, alpha: 8}, rewards: {overlong: {buffer: 48}}, policy: {loss: "dr_grpo"}}}]
        }));
        return {file, dir: path.join(base, name)};
    }

    /** Starts `still run`, waits until `ready` says so, then kills it with SIGKILL. */
    async function killWhen(args: string[], ready: () => boolean) {
        const child = execa(process.execPath, ["dist/src/cli/main.js", ...args], {reject: false});
        const timer = setInterval(() => {
            if (ready()) child.kill("SIGKILL");
        }, 10);
        const r = await child;
        clearInterval(timer);
        return r;
    }

    const strip = (line: Record<string, unknown>): unknown => {
        const {seconds: _s, tokens_per_s: _t, trainer, ...rest} = line;
        if (trainer == null) return rest;
        const {seconds: _a, "seconds/old_logps": _b, "seconds/ref_logps": _c, "seconds/gradient": _d, tokens_per_s: _e, peak_rss_mb: _f, ...kept} = trainer as Record<string, unknown>;
        return {...rest, trainer: kept};
    };
    const metrics = (dir: string) => fs.readFileSync(path.join(dir, "round-1", "grpo", "metrics.jsonl"), "utf8").trim().split("\n")
        .map((l) => strip(JSON.parse(l) as Record<string, unknown>));

    it("killed mid-sampling and mid-update, --resume ends with the uninterrupted run's adapter and metrics", async () => {
        const a = await config("whole");
        const whole = await cli(["run", "--config", a.file, "--json"]);
        expect(whole.exitCode, whole.stderr).toBe(0);
        const m = metrics(a.dir);
        expect(m.length).toBe(3);
        // the run learnt something: an update with a gradient
        expect(m.some((x) => ((x as {trainer?: {grad_norm: number}}).trainer?.grad_norm ?? 0) > 0)).toBe(true);

        const b = await config("killed");
        const step = (k: number) => path.join(b.dir, "round-1", "grpo", "steps", `step-0000${k}`);
        // mid-sampling: the second step's first chunk of samples is written, the rest not yet
        const first = await killWhen(["run", "--config", b.file], () => fs.existsSync(path.join(step(2), "samples", "chunk-0000.jsonl")));
        expect(first.signal).toBe("SIGKILL");
        // mid-update: the third step's batch is written, its update under way
        const second = await killWhen(["run", "--resume", b.dir], () => fs.existsSync(path.join(step(3), "batch.bin")));
        expect(second.signal).toBe("SIGKILL");
        const last = await cli(["run", "--resume", b.dir, "--json"]);
        expect(last.exitCode, last.stderr).toBe(0);

        expect(metrics(b.dir)).toEqual(m);
        const bytes = async (f: string) => fs.readFileSync(f).subarray((await readGgufHeader(f)).dataOffset);
        const adapter = (dir: string) => path.join(dir, "round-1", "grpo", "adapter.gguf");
        expect((await bytes(adapter(b.dir))).equals(await bytes(adapter(a.dir)))).toBe(true);
        const summary = JSON.parse(fs.readFileSync(path.join(b.dir, "summary.json"), "utf8"));
        expect(summary.phases.map((p: {name: string}) => p.name)).toEqual(["base", "round-1"]);
        expect(fs.readFileSync(path.join(b.dir, "report.html"), "utf8")).toContain("Online RL (per step)");
    }, 300_000);
});
