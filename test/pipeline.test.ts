// The loop (imitate → explore → select → improve → evaluate) on a miniature: the tiny
// model, a dozen problems of the demo task (clock counting), one SFT round. Run through the CLI
// as a user runs it, killed with SIGKILL in the middle of explore and of training, and
// resumed; bad configs and data files stop it before any work.
import {createHash} from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import {execa, type ResultPromise} from "execa";
import {beforeAll, describe, expect, it} from "vitest";
import {writeDemoData} from "./helpers/demoData.js";
import {testModel, tmpDir} from "./helpers/models.js";

const root = path.join(tmpDir, "pipeline");
const cli = (args: string[]) => execa(process.execPath, ["dist/src/cli/main.js", ...args], {reject: false});

const train = {learningRate: 2e-3, epochs: 1, batchTokens: 512, context: 512, saveEvery: 2, lora: {rank: 4, alpha: 8}};

/** Writes the data files and a config named `name`; returns the config's path. */
function writeConfig(name: string, model: string, edit: (c: Record<string, any>) => void = () => {}): string {
    const data = path.join(root, "data");
    const config: Record<string, any> = {
        name, runsDir: "runs", seed: 3,
        model: {path: model},
        prompt: {system: "Think, then answer."},
        data: {
            thoughts: path.join(data, "thoughts.jsonl"),
            problems: path.join(data, "problems.jsonl"),
            eval: [{name: "held-out", path: path.join(data, "heldout.jsonl")}]
        },
        imitate: {train},
        explore: {samples: 2, temperature: 1, topK: 20, maxTokens: 48, parallel: 4, chunk: 2},
        rounds: [{method: "sft", train}],
        evaluate: {greedy: true, maxTokens: 48, parallel: 4}
    };
    edit(config);
    const file = path.join(root, `${name}.json`);
    fs.writeFileSync(file, JSON.stringify(config, null, 2));
    return file;
}

const runDir = (name: string) => path.join(root, "runs", name);
const readJson = (file: string) => JSON.parse(fs.readFileSync(file, "utf8"));
const sha = (file: string) => createHash("sha256").update(fs.readFileSync(file)).digest("hex");
/** metrics.jsonl without its time stamps and the run's own paths. */
const metrics = (name: string) => fs.readFileSync(path.join(runDir(name), "metrics.jsonl"), "utf8").trim().split("\n").map((l) => {
    const {at, adapter, seconds, tokensPerSecond, ...rest} = JSON.parse(l);
    return rest;
});

/** Starts `still run`, kills it with SIGKILL once `ready` holds, and waits for it to die. */
async function killWhen(child: ResultPromise, ready: () => boolean) {
    for (;;) {
        if (child.exitCode != null) throw new Error(`the run ended before the kill point: ${(await child).stderr}`);
        if (ready()) break;
        await new Promise((r) => setTimeout(r, 20));
    }
    child.kill("SIGKILL");
    const result = await child;
    expect(result.signal).toBe("SIGKILL");
}

let model: string;

beforeAll(async () => {
    model = await testModel("tiny", "f32", 5);
    writeDemoData(path.join(root, "data"), {count: 36, heldout: 4, explore: 12});
});

describe("still run", () => {
    it("runs a miniature loop and leaves every artifact in its run folder", async () => {
        const done = await cli(["run", "--config", writeConfig("whole", model), "--json"]);
        expect(done.exitCode, done.stderr).toBe(0);
        const dir = runDir("whole");
        const summary = readJson(path.join(dir, "summary.json"));
        expect(summary.phases.map((p: {name: string}) => p.name)).toEqual(["base", "imitate", "round-1"]);
        for (const p of summary.phases) {
            expect(p.accuracy).toBeGreaterThanOrEqual(0);
            expect(p.accuracy).toBeLessThanOrEqual(1);
            expect(p.format_adherence).toBeGreaterThanOrEqual(0);
            expect(p.sets[0]).toMatchObject({set: "held-out", problems: 4});
        }
        expect(JSON.parse(done.stdout).phases).toEqual(summary.phases);

        const state = readJson(path.join(dir, "state.json"));
        expect(Object.keys(state.steps)).toEqual(expect.arrayContaining(
            ["eval/base", "imitate/train", "eval/imitate", "round-1/explore", "round-1/select", "round-1/train", "eval/round-1"]));
        // 12 problems × 2 samples in chunks of 2 problems
        const chunks = fs.readdirSync(path.join(dir, "round-1", "explore")).sort();
        expect(chunks).toEqual(["chunk-0000.jsonl", "chunk-0001.jsonl", "chunk-0002.jsonl", "chunk-0003.jsonl", "chunk-0004.jsonl", "chunk-0005.jsonl"]);
        const samples = chunks.flatMap((c) => fs.readFileSync(path.join(dir, "round-1", "explore", c), "utf8").trim().split("\n").map((l) => JSON.parse(l)));
        expect(samples).toHaveLength(24);
        for (const s of samples) expect(s).toMatchObject({correct: expect.any(Boolean), finish: expect.stringMatching(/^(stop|length)$/)});
        expect(fs.existsSync(path.join(dir, "round-1", "selected.jsonl"))).toBe(true);
        expect(fs.existsSync(path.join(dir, "round-1", "pairs.jsonl"))).toBe(true);
        expect(fs.existsSync(path.join(dir, "config.json"))).toBe(true);

        // imitate learned from the thoughts; round 1 continued its adapter
        const m = metrics("whole");
        const imitate = m.find((r) => r.kind === "train" && r.phase === "imitate");
        expect(imitate.steps).toBeGreaterThan(4);
        expect(imitate.lastLoss).toBeLessThan(imitate.firstLoss);
        expect(m.filter((r) => r.kind === "eval").map((r) => r.phase)).toEqual(["base", "imitate", "round-1"]);
        for (const f of ["imitate/adapter.gguf", "round-1/adapter.gguf"]) expect(fs.statSync(path.join(dir, f)).size).toBeGreaterThan(1000);
        expect(sha(path.join(dir, "round-1/adapter.gguf"))).not.toBe(sha(path.join(dir, "imitate/adapter.gguf")));

        const report = fs.readFileSync(path.join(dir, "report.html"), "utf8");
        expect(report).toContain("round-1");
        expect(report).not.toMatch(/<script[^>]+src=|<link[^>]+href=/); // self-contained

        // rerunning a finished run redoes nothing and says so
        const again = await cli(["run", "--resume", dir]);
        expect(again.exitCode, again.stderr).toBe(0);
        expect(again.stderr).not.toContain("→");
        expect(again.stderr).toContain("✓ round-1/train (done before)");
    }, 240_000);

    it("resumes a run killed in the middle of explore, with the same results as an uninterrupted run", async () => {
        const explore = path.join(runDir("killed-explore"), "round-1", "explore");
        await killWhen(execa(process.execPath, ["dist/src/cli/main.js", "run", "--config", writeConfig("killed-explore", model)], {reject: false}),
            () => fs.existsSync(path.join(explore, "chunk-0001.jsonl")));
        const state = readJson(path.join(runDir("killed-explore"), "state.json"));
        expect(state.steps["imitate/train"]).toBeDefined();
        expect(state.steps["round-1/explore"]).toBeUndefined();
        const kept = fs.readdirSync(explore).filter((f) => f.endsWith(".jsonl"));
        expect(kept.length).toBeLessThan(6);

        const resumed = await cli(["run", "--resume", runDir("killed-explore")]);
        expect(resumed.exitCode, resumed.stderr).toBe(0);
        expect(resumed.stderr).toContain("✓ imitate/train (done before)");
        expect(resumed.stderr).toContain("→ round-1/explore");
        expectSameRun("killed-explore");
    }, 240_000);

    it("resumes a run killed in the middle of training, with the same results as an uninterrupted run", async () => {
        const trainDir = path.join(runDir("killed-train"), "round-1", "train");
        await killWhen(execa(process.execPath, ["dist/src/cli/main.js", "run", "--config", writeConfig("killed-train", model)], {reject: false}),
            () => fs.existsSync(path.join(trainDir, "checkpoint.gguf")) && fs.existsSync(path.join(trainDir, "metrics.jsonl")) &&
                fs.readFileSync(path.join(trainDir, "metrics.jsonl"), "utf8").split("\n").length > 4);
        const state = readJson(path.join(runDir("killed-train"), "state.json"));
        expect(state.steps["round-1/select"]).toBeDefined();
        expect(state.steps["round-1/train"]).toBeUndefined();

        const resumed = await cli(["run", "--resume", runDir("killed-train")]);
        expect(resumed.exitCode, resumed.stderr).toBe(0);
        expect(resumed.stderr).toContain("✓ round-1/explore (done before)");
        // it went on from the checkpoint rather than from step 0
        const trained = readJson(path.join(trainDir, "summary.json"));
        expect(trained.startStep).toBeGreaterThan(0);
        expectSameRun("killed-train");
    }, 240_000);

    it("refuses a resume with another config, and bad configs and data before any work", async () => {
        const typo = await cli(["run", "--config", writeConfig("typo", model, (c) => { c.explore.sample = 3; })]);
        expect(typo.exitCode).toBe(1);
        expect(typo.stderr.trim().split("\n")).toHaveLength(1);
        expect(typo.stderr).toMatch(/typo\.json.*explore.*unknown key sample/);

        const range = await cli(["run", "--config", writeConfig("range", model, (c) => { c.explore.temperature = -1; })]);
        expect(range.exitCode).toBe(1);
        expect(range.stderr).toMatch(/range\.json.*explore\.temperature/);

        const badLine = path.join(root, "bad-problems.jsonl");
        fs.writeFileSync(badLine, '{"id": "a", "problem": "1 + 1?", "answer": "2"}\n{"id": "b", "problem": "2 + 2?"}\n');
        const data = await cli(["run", "--config", writeConfig("bad-data", model, (c) => { c.data.problems = badLine; })]);
        expect(data.exitCode).toBe(1);
        expect(data.stderr).toMatch(/bad-problems\.jsonl:2.*answer/);

        const notGguf = path.join(root, "not-a-model.gguf");
        fs.writeFileSync(notGguf, "hello\n");
        const badModel = await cli(["run", "--config", writeConfig("bad-model", model, (c) => { c.model.path = notGguf; })]);
        expect(badModel.exitCode).toBe(1);
        expect(badModel.stderr).toMatch(/not-a-model\.gguf/);

        for (const name of ["typo", "range", "bad-data", "bad-model"]) expect(fs.existsSync(runDir(name))).toBe(false);

        // the "whole" run's folder with a changed config
        const changed = await cli(["run", "--config", writeConfig("whole", model, (c) => { c.seed = 4; })]);
        expect(changed.exitCode).toBe(1);
        expect(changed.stderr).toMatch(/another configuration/);
        writeConfig("whole", model); // as it was

        const schema = await cli(["schema"]);
        expect(JSON.parse(schema.stdout).properties).toHaveProperty("explore");
    }, 120_000);
});

/** The killed-and-resumed run ended as the uninterrupted "whole" run did. */
function expectSameRun(name: string) {
    const [a, b] = [readJson(path.join(runDir("whole"), "summary.json")), readJson(path.join(runDir(name), "summary.json"))];
    expect(b.phases).toEqual(a.phases);
    expect(metrics(name)).toEqual(metrics("whole"));
    for (const f of ["round-1/selected.jsonl", "round-1/pairs.jsonl", "imitate/adapter.gguf", "round-1/adapter.gguf"])
        expect(sha(path.join(runDir(name), f)), f).toBe(sha(path.join(runDir("whole"), f)));
}

describe("run config", () => {
    it("accepts the README's example and documents every key in the JSON Schema", async () => {
        const {parseRunConfig, runConfigJsonSchema} = await import("../src/loop/config.js");
        const readme = fs.readFileSync(path.resolve(import.meta.dirname, "../README.md"), "utf8");
        const loop = readme.slice(readme.indexOf("## The loop"));
        const json = loop.slice(loop.indexOf("```json\n") + 8, loop.indexOf("```", loop.indexOf("```json\n") + 8));
        const config = parseRunConfig(JSON.parse(json), path.join(root, "run.json"));
        expect(config.rounds.map((r) => r.method)).toEqual(["sft", "dpo"]);
        expect(config.model.path).toBe(path.join(root, "models", "qwen2.5-1.5b-instruct-q8_0.gguf"));
        const schema = runConfigJsonSchema() as {properties: Record<string, unknown>, additionalProperties?: boolean};
        expect(Object.keys(schema.properties)).toEqual(expect.arrayContaining(["model", "data", "imitate", "explore", "select", "rounds", "evaluate"]));
        expect(schema.additionalProperties).toBe(false);
        expect(() => parseRunConfig({...JSON.parse(json), rounds: [{method: "ppo"}]}, "x.json")).toThrow(/x\.json.*rounds\.0\.method/);
    });
});

describe("still demo", () => {
    it("runs the whole demo on a miniature plan: pre-training, imitate, an SFT and a DPO round, a summary with four phases; with rl one GRPO round", async () => {
        const {demoPlan, runDemo} = await import("../src/demo/demo.js");
        const {basePaths, PRETRAIN_RECIPE} = await import("../src/demo/pretrain.js");
        const out = path.join(root, "demo");
        const steps: string[] = [];
        const plan = {
            pretrain: {workedPerStage: 40, directPerStage: 20, directProblems: 20, maxStages: 2, probeProblems: 4, probePass: 1},
            thoughtProblems: 10, explorePool: 4, heldOut: 4, maxTokens: 48, samples: 2, rounds: ["sft" as const, "dpo" as const]
        };
        const summary = await runDemo({
            out, seed: 2, threads: 1,
            plan,
            onEvent: (e) => { if (e.type === "step" && e.status !== "done") steps.push(`${e.status} ${e.step}`); }
        });
        expect(summary.phases.map((p) => p.name)).toEqual(["base", "imitate", "round-1", "round-2"]);
        const written = readJson(path.join(out, "demo", "summary.json"));
        expect(written.phases).toEqual(summary.phases);
        for (const p of written.phases) expect(p).toMatchObject({accuracy: expect.any(Number), format_adherence: expect.any(Number)});
        expect(steps.slice(0, 3)).toEqual(["start pretrain", "start eval/base", "start imitate/train"]);
        // held-out, explore pool and thought problems are disjoint
        const ids = (f: string) => fs.readFileSync(path.join(out, "data", f), "utf8").trim().split("\n").map((l) => JSON.parse(l).problem ?? JSON.parse(l).question);
        const [held, pool, thoughts] = [ids("heldout.jsonl"), ids("problems.jsonl"), ids("thoughts.jsonl")];
        expect(new Set([...held, ...pool, ...thoughts]).size).toBe(held.length + pool.length + thoughts.length);
        expect(fs.existsSync(path.join(out, "demo", "report.html"))).toBe(true);

        // the base is kept by seed and recipe, with its stages' probes
        const base = basePaths(path.join(out, "models"), 2, demoPlan.pretrain.preset);
        const record = readJson(base.record);
        expect(record).toMatchObject({seed: 2, recipe: PRETRAIN_RECIPE, probePass: 1});
        expect(record.stages.length).toBeGreaterThanOrEqual(1);
        expect(record.stages.length).toBeLessThanOrEqual(2);
        for (const st of record.stages) expect(st.probe).toBeGreaterThanOrEqual(0);
        expect(record.passed).toBe(record.stages.at(-1).exact >= 1);

        // a second call resumes: nothing is redone, and it says the base is reused
        const again: string[] = [];
        const skipped: string[] = [];
        await runDemo({out, seed: 2, threads: 1, plan,
            onEvent: (e) => {
                if (e.type === "step" && e.status === "start") again.push(e.step);
                if (e.type === "step" && e.status === "skip" && e.step === "pretrain") skipped.push(e.message ?? "");
            }});
        expect(again).toEqual([]);
        expect(skipped).toHaveLength(1);
        expect(skipped[0]).toMatch(/^reusing the base pre-trained before for seed 2, recipe \d+ /);

        // a run folder removed is run again on the same base, without pre-training
        fs.rmSync(path.join(out, "demo"), {recursive: true});
        const third: string[] = [];
        await runDemo({out, seed: 2, threads: 1, plan: {...plan, rounds: []},
            onEvent: (e) => { if (e.type === "step" && e.status === "start") third.push(e.step); }});
        expect(third[0]).toBe("eval/base");
        expect(third).not.toContain("pretrain");

        // --rl: a teacher that forgets to wrap at the hour, then one GRPO round with the
        // demo's settings (here 1 step); the other run's thoughts are left as they were
        const thoughtsBefore = fs.readFileSync(path.join(out, "data", "thoughts.jsonl"), "utf8");
        const {rounds: _rounds, ...sizes} = plan;
        const rl = await runDemo({out, seed: 2, threads: 1, rl: true, plan: {...sizes, thoughtProblems: 40, grpo: {steps: 1, promptsPerStep: 2, samplesPerPrompt: 2}}});
        expect(rl.phases.map((p) => p.name)).toEqual(["base", "imitate", "round-1"]);
        const config = readJson(path.join(out, "demo.config.json"));
        expect(config.name).toBe("demo-rl");
        expect(config.imitate.train.epochs).toBe(demoPlan.imitateEpochs);
        expect(fs.readFileSync(path.join(out, "data", "thoughts.jsonl"), "utf8")).toBe(thoughtsBefore);
        expect(path.basename(config.data.thoughts)).toBe(`thoughts-hour-slips-${demoPlan.rlTeacher.hourSlipRate}.jsonl`);
        const rlThoughts = fs.readFileSync(config.data.thoughts, "utf8").trim().split("\n").map((l) => JSON.parse(l));
        expect(rlThoughts).toHaveLength(40);
        let unwrapped = 0;
        for (const t of rlThoughts) {
            const [steps, start] = /(\d\d) minutes after (\d\d)\?$/.exec(t.question)!.slice(1).map(Number);
            const boxed = Number(/\\boxed\{(\d+)\}/.exec(t.response)![1]);
            // a thought is right, or passes the hour and boxes the minute past 59 it counted to
            if (boxed !== (start + steps) % 60) {
                expect(start + steps).toBeGreaterThanOrEqual(60);
                expect(boxed).toBe(start + steps);
                unwrapped++;
            }
        }
        expect(unwrapped).toBeGreaterThan(0);
        expect(config.rounds).toEqual([{method: "grpo", grpo: {...demoPlan.grpo, maxTokens: plan.maxTokens, parallel: 16, steps: 1, promptsPerStep: 2, samplesPerPrompt: 2}}]);
        const grpoSteps = fs.readFileSync(path.join(out, "demo-rl", "round-1", "grpo", "metrics.jsonl"), "utf8").trim().split("\n");
        expect(grpoSteps).toHaveLength(1);
    }, 300_000);
});
