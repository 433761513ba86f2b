// The loop on a model with a real tokenizer and chat template (Qwen3's): imitate → explore →
// SFT → eval, once teaching the STILL markers (thinking switched off in the template) and
// once in the model's own <think> tags (thinking on); then `still eval` on the adapter.
import fs from "node:fs";
import path from "node:path";
import {execa} from "execa";
import {beforeAll, describe, expect, it} from "vitest";
import {demoProblems, teacherResponse} from "../src/demo/demoTask.js";
import {loadModel} from "../src/engine/Model.js";
import {parseThought} from "../src/format/parseThought.js";
import {rng} from "../src/loop/seeded.js";
import {testModel, tmpDir} from "./helpers/models.js";

const root = path.join(tmpDir, "loop-qwen3");
const cli = (args: string[]) => execa(process.execPath, ["dist/src/cli/main.js", ...args], {reject: false});
const train = {learningRate: 2e-3, epochs: 1, batchTokens: 512, context: 512, saveEvery: 0, lora: {rank: 4, alpha: 8}};
let model: string;

/** The teacher's STILL-format response in the <think> form. */
function asThink(response: string): string {
    const p = parseThought(response, "still");
    return `<think>\n${p.thought}\n</think>\n\n${p.solution}`;
}

beforeAll(async () => {
    model = await testModel("tiny-qwen3-tokenizer", "f32", 2);
    const problems = demoProblems(7, 28);
    const teacher = rng(4);
    const line = (p: (typeof problems)[number]) => JSON.stringify({id: p.id, problem: p.question, answer: p.answer});
    fs.mkdirSync(root, {recursive: true});
    fs.writeFileSync(path.join(root, "heldout.jsonl"), problems.slice(0, 4).map(line).join("\n") + "\n");
    fs.writeFileSync(path.join(root, "problems.jsonl"), problems.slice(4, 12).map(line).join("\n") + "\n");
    const thoughts = problems.slice(12).map((p) => ({question: p.question, response: teacherResponse(p, teacher), domain: "math"}));
    fs.writeFileSync(path.join(root, "thoughts-still.jsonl"), thoughts.map((t) => JSON.stringify(t)).join("\n") + "\n");
    fs.writeFileSync(path.join(root, "thoughts-think.jsonl"), thoughts.map((t) => JSON.stringify({...t, response: asThink(t.response)})).join("\n") + "\n");
}, 120_000);

describe.each(["still", "think"] as const)("the loop on the Qwen3-tokenizer preset, format %s", (format) => {
    it("imitates, explores, trains and evaluates; still eval reads the adapter", async () => {
        const config = {
            name: `qwen3-${format}`, runsDir: "runs", seed: 1, model: {path: model},
            prompt: {format},
            data: {thoughts: path.join(root, `thoughts-${format}.jsonl`), problems: path.join(root, "problems.jsonl"),
                eval: [{name: "held-out", path: path.join(root, "heldout.jsonl")}]},
            imitate: {train},
            explore: {samples: 2, temperature: 1, topK: 20, maxTokens: 40, parallel: 4, chunk: 4},
            rounds: [{method: "sft", train}],
            evaluate: {greedy: true, maxTokens: 40, parallel: 4}
        };
        const file = path.join(root, `${format}.json`);
        fs.writeFileSync(file, JSON.stringify(config));
        const done = await cli(["run", "--config", file, "--json"]);
        expect(done.exitCode, done.stderr).toBe(0);
        const dir = path.join(root, "runs", config.name);
        const summary = JSON.parse(fs.readFileSync(path.join(dir, "summary.json"), "utf8"));
        expect(summary.phases.map((p: {name: string}) => p.name)).toEqual(["base", "imitate", "round-1"]);
        const metrics = fs.readFileSync(path.join(dir, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
        const imitate = metrics.find((m) => m.kind === "train" && m.phase === "imitate");
        expect(imitate.steps).toBeGreaterThan(2);
        expect(imitate.lastLoss).toBeLessThan(imitate.firstLoss);

        // the prompts the run sampled with: thinking off in the template for STILL markers, on for <think>
        const m = await loadModel(model);
        try {
            m.setChatTemplateVariables({enable_thinking: format === "think"});
            const prompt = m.applyChatTemplate([{role: "user", content: "q"}]);
            expect(prompt.endsWith("<think>\n\n</think>\n\n")).toBe(format === "still");
        } finally {
            await m.dispose();
        }

        // explore's samples are graded; the response text is the model's, markers or tags as written
        const explore = path.join(dir, "round-1", "explore");
        const samples = fs.readdirSync(explore).flatMap((f) => fs.readFileSync(path.join(explore, f), "utf8").trim().split("\n").map((l) => JSON.parse(l)));
        expect(samples).toHaveLength(16);
        for (const s of samples) expect(s.wellFormed).toBe(parseThought(s.text, format).wellFormed);

        const out = path.join(root, `eval-${format}`);
        const evaluated = await cli(["eval", "--model", model, "--adapter", path.join(dir, "round-1", "adapter.gguf"), "--set", `held-out=${path.join(root, "heldout.jsonl")}`,
            "--format", format, "--max-tokens", "40", "--parallel", "4", "--out", out, "--json"]);
        expect(evaluated.exitCode, evaluated.stderr).toBe(0);
        const record = JSON.parse(evaluated.stdout.trim().split("\n").at(-1)!);
        expect(record.settings).toMatchObject({format, templateVariables: {enable_thinking: format === "think"}});
        // the same model, adapter, prompts and greedy decoding as the run's last evaluation
        const last = summary.phases.at(-1).sets[0];
        expect(record.sets[0]).toMatchObject({accuracy: last.accuracy, meanTokens: last.mean_tokens, formatAdherence: last.format_adherence,
            truncated: last.truncated});
    }, 300_000);
});
