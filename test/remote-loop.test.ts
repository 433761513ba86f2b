// The loop with exploration and evaluation on servers: a fake vLLM server on 127.0.0.1 that
// lists its models and loads adapters at run time. Each phase's adapter is exported in PEFT's
// layout and loaded there under a name that carries its hash; every request names the model
// of its phase (the base before imitation, then the adapter the phase samples with).
import fs from "node:fs";
import path from "node:path";
import {execa} from "execa";
import {afterAll, beforeAll, describe, expect, it} from "vitest";
import {writeDemoData} from "./helpers/demoData.js";
import {type FakeServer, fakeOpenAi} from "./helpers/fakeOpenAi.js";
import {testModel, tmpDir} from "./helpers/models.js";

const root = path.join(tmpDir, "remote-loop");
const cli = (args: string[]) => execa(process.execPath, ["dist/src/cli/main.js", ...args], {reject: false});
const train = {learningRate: 2e-3, epochs: 1, batchTokens: 512, context: 512, saveEvery: 2, lora: {rank: 4, alpha: 8}};
let model: string;
let server: FakeServer;

beforeAll(async () => {
    model = await testModel("tiny", "f32", 5);
    server = await fakeOpenAi({vllm: {model: "base"}});
    writeDemoData(path.join(root, "data"), {count: 30, heldout: 3, explore: 6});
}, 120_000);
afterAll(async () => {
    await server?.close();
});

describe("the loop on servers", () => {
    it("explores and evaluates on a vLLM-like server, each phase's adapter loaded there by its hash", async () => {
        const data = path.join(root, "data");
        const config = {
            name: "fleet", runsDir: "runs", seed: 3, model: {path: model}, prompt: {system: "Think, then answer."},
            data: {thoughts: path.join(data, "thoughts.jsonl"), problems: path.join(data, "problems.jsonl"), eval: [{name: "held-out", path: path.join(data, "heldout.jsonl")}]},
            imitate: {train},
            explore: {samples: 2, temperature: 1, maxTokens: 32, chunk: 2},
            rounds: [{method: "sft", train}],
            evaluate: {greedy: true, maxTokens: 32},
            servers: {urls: [server.url], model: "base", concurrency: 4, phases: ["explore", "select", "evaluate"]}
        };
        const file = path.join(root, "fleet.json");
        fs.writeFileSync(file, JSON.stringify(config));
        const r = await cli(["run", "--config", file]);
        expect(r.exitCode, r.stderr).toBe(0);
        const dir = path.join(root, "runs", "fleet");
        // the imitation and round-1 adapters, loaded once each, from their PEFT folders
        expect(server.loaded.map((l) => l.name.replace(/-[0-9a-f]{10}$/, ""))).toEqual(["fleet-imitate", "fleet-round-1"]);
        for (const l of server.loaded) {
            expect(path.dirname(l.path)).toBe(path.join(dir, l.name.startsWith("fleet-imitate") ? "imitate" : "round-1"));
            expect(JSON.parse(fs.readFileSync(path.join(l.path, "adapter_config.json"), "utf8"))).toMatchObject({peft_type: "LORA", r: 4});
        }
        expect(r.stderr).toMatch(/serves the adapter adapter\.gguf as fleet-imitate-/);
        // requests by model: 3 held-out greedy answers per evaluation, 6 problems × 2 samples of exploration
        const byModel = new Map<string, number>();
        for (const s of server.served) if (!s.promptLogprobs) byModel.set(s.model!, (byModel.get(s.model!) ?? 0) + 1);
        const [imitate, round] = server.loaded.map((l) => l.name);
        expect(Object.fromEntries(byModel)).toEqual({base: 3, [imitate!]: 3 + 12, [round!]: 3});
        // the explored samples are the server's answers, graded
        const explore = path.join(dir, "round-1", "explore");
        const samples = fs.readdirSync(explore).filter((f) => f.endsWith(".jsonl"))
            .flatMap((f) => fs.readFileSync(path.join(explore, f), "utf8").trim().split("\n").map((l) => JSON.parse(l) as {text: string, correct: boolean}));
        expect(samples).toHaveLength(12);
        for (const s of samples) expect(s.text).toMatch(/^The answer is \$\\boxed\{\d+\}\$\.$/);
        // selection scored every complete candidate on the server, under the imitation adapter
        const scoring = server.served.filter((s) => s.promptLogprobs);
        // (the candidates: complete and wrong, or right and well-formed; the fake's answers are never well-formed)
        expect(scoring.length).toBe(samples.filter((s) => !s.correct).length);
        expect(scoring.length).toBeGreaterThan(0);
        for (const s of scoring) expect(s.model).toBe(imitate);

        // a rerun of the finished run samples nothing and loads nothing again
        const before = server.served.length;
        const again = await cli(["run", "--resume", dir]);
        expect(again.exitCode, again.stderr).toBe(0);
        expect(server.served.length).toBe(before);
        expect(server.loaded).toHaveLength(2);
    }, 600_000);

    it("a grpo round samples every step on the servers with that step's adapter, the one before unloaded", async () => {
        const data = path.join(root, "data");
        const config = {
            name: "fleet-rl", runsDir: "runs", seed: 3, model: {path: model}, prompt: {system: "Think, then answer."},
            data: {problems: path.join(data, "problems.jsonl")},
            rounds: [{method: "grpo", grpo: {steps: 2, promptsPerStep: 2, samplesPerPrompt: 2, maxTokens: 48, chunk: 2, lora: {rank: 4, alpha: 8}, policy: {loss: "dr_grpo"}}}],
            servers: {urls: [server.url], model: "base", phases: ["grpo"]}
        };
        const file = path.join(root, "fleet-rl.json");
        fs.writeFileSync(file, JSON.stringify(config));
        const before = server.served.length;
        const r = await cli(["run", "--config", file]);
        expect(r.exitCode, r.stderr).toBe(0);
        const requests = server.served.slice(before);
        // 2 steps × 2 prompts × 2 samples, each naming a grpo adapter the server was given
        expect(requests).toHaveLength(8);
        const given = new Set([...server.loaded.map((l) => l.name), ...server.unloaded]);
        for (const q of requests) {
            expect(q.model).toMatch(/^fleet-rl-grpo-[0-9a-f]{10}$/);
            expect(given.has(q.model!)).toBe(true);
        }
        // one grpo adapter stays loaded: each step's replaced the one before, whose PEFT folder went too
        expect(server.loaded.filter((l) => l.name.startsWith("fleet-rl-grpo-"))).toHaveLength(1);
        const used = new Set(requests.map((q) => q.model));
        expect(server.unloaded.filter((n) => n.startsWith("fleet-rl-grpo-"))).toHaveLength(used.size - 1);
        const grpo = path.join(root, "runs", "fleet-rl", "round-1", "grpo");
        expect(fs.readdirSync(grpo).filter((f) => f.startsWith("peft-"))).toEqual([`peft-${server.loaded.at(-1)!.name.slice(-10)}`]);
        const metrics = fs.readFileSync(path.join(root, "runs", "fleet-rl", "round-1", "grpo", "metrics.jsonl"), "utf8").trim().split("\n");
        expect(metrics).toHaveLength(2);
    }, 600_000);

    it("an adapter the servers cannot load stops the run with one sentence naming the endpoint", async () => {
        const plain = await fakeOpenAi(); // not vLLM: no run-time adapters
        try {
            const data = path.join(root, "data");
            const config = {
                name: "no-lora", runsDir: "runs", seed: 3, model: {path: model}, prompt: {system: "Think, then answer."},
                data: {thoughts: path.join(data, "thoughts.jsonl"), problems: path.join(data, "problems.jsonl")},
                imitate: {train}, explore: {samples: 1, maxTokens: 16, chunk: 6}, rounds: [{method: "sft", train}],
                servers: {urls: [plain.url], model: "base", phases: ["explore"]}
            };
            const file = path.join(root, "no-lora.json");
            fs.writeFileSync(file, JSON.stringify(config));
            const r = await cli(["run", "--config", file]);
            expect(r.exitCode).toBe(1);
            const errors = r.stderr.split("\n").filter((l) => l.startsWith("still: error:"));
            expect(errors).toHaveLength(1);
            expect(errors[0]).toMatch(new RegExp(`the endpoint ${plain.url} did not load the adapter no-lora-imitate-[0-9a-f]{10} from .*--enable-lora`));
        } finally {
            await plain.close();
        }
    }, 600_000);
});
