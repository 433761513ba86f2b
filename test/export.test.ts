// `still export`: a run's data in TRL's and LLaMA-Factory's documented layouts, checked
// against those layouts (schemas written from TRL's "Dataset formats" page and
// LLaMA-Factory's data/README.md), and read back by `still train` (TRL's layouts).
import fs from "node:fs";
import path from "node:path";
import {execa} from "execa";
import {beforeAll, describe, expect, it} from "vitest";
import {z} from "zod";
import {demoProblems, teacherResponse} from "../src/demo/demoTask.js";
import {parseRunConfig} from "../src/loop/config.js";
import {RunDir} from "../src/loop/RunDir.js";
import {rng} from "../src/loop/seeded.js";
import {testModel, tmpDir} from "./helpers/models.js";

const root = path.join(tmpDir, "export");
const cli = (args: string[]) => execa(process.execPath, ["dist/src/cli/main.js", ...args], {reject: false});
const rows = (file: string) => fs.readFileSync(file, "utf8").trim().split("\n").map((l) => JSON.parse(l) as Record<string, unknown>);

// TRL: conversational messages; conversational prompt-completion; conversational preference; prompt-only (extra columns go to reward functions)
const message = z.strictObject({role: z.enum(["system", "user", "assistant"]), content: z.string()});
const trl = {
    messages: z.strictObject({messages: z.array(message).min(2)}),
    promptCompletion: z.strictObject({prompt: z.array(message).min(1), completion: z.array(message).length(1)}),
    preference: z.strictObject({prompt: z.array(message).min(1), chosen: z.array(message).length(1), rejected: z.array(message).length(1)}),
    promptOnly: z.object({prompt: z.array(message).min(1)})
};
// LLaMA-Factory: dataset_info.json entries and the rows their columns and tags name
const infoEntry = z.strictObject({
    file_name: z.string(), formatting: z.enum(["alpaca", "sharegpt"]), ranking: z.boolean().optional(),
    columns: z.partialRecord(z.enum(["prompt", "query", "response", "history", "messages", "system", "tools", "chosen", "rejected"]), z.string()),
    tags: z.strictObject({role_tag: z.string(), content_tag: z.string(), user_tag: z.string(), assistant_tag: z.string()}).optional()
});

let model: string;
let run: string;
let pairs: number;
let selected: number;

beforeAll(async () => {
    model = await testModel("tiny");
    const problems = demoProblems(3, 20);
    const teacher = rng(2);
    fs.mkdirSync(root, {recursive: true});
    const data = (name: string, lines: object[]) => {
        fs.writeFileSync(path.join(root, name), lines.map((l) => JSON.stringify(l)).join("\n") + "\n");
        return path.join(root, name);
    };
    const config = parseRunConfig({
        name: "exported", runsDir: path.join(root, "runs"), model: {path: model}, prompt: {system: "Think, then answer."},
        data: {
            thoughts: data("thoughts.jsonl", problems.slice(0, 6).map((p) => ({question: p.question, response: teacherResponse(p, teacher)}))),
            problems: data("problems.jsonl", problems.slice(6).map((p) => ({id: p.id, problem: p.question, answer: p.answer})))
        }
    }, path.join(root, "run.json"));
    const dir = (await RunDir.start(config)).dir;
    run = dir;
    // a round's selection, as the loop writes it
    fs.mkdirSync(path.join(dir, "round-1"), {recursive: true});
    const sel = problems.slice(6, 10).map((p) => ({id: p.id, sample: 0, question: p.question, response: teacherResponse(p, teacher), perplexity: 2}));
    const pr = problems.slice(10, 13).map((p) => ({id: p.id, question: p.question, chosen: teacherResponse(p, teacher), rejected: "no idea",
        chosen_perplexity: 2, rejected_perplexity: 3}));
    fs.writeFileSync(path.join(dir, "round-1", "selected.jsonl"), sel.map((l) => JSON.stringify(l)).join("\n") + "\n");
    fs.writeFileSync(path.join(dir, "round-1", "pairs.jsonl"), pr.map((l) => JSON.stringify(l)).join("\n") + "\n");
    selected = 6 + sel.length;
    pairs = pr.length;
}, 60_000);

describe("still export", () => {
    it("writes TRL's and LLaMA-Factory's layouts, which still train reads back", async () => {
        const out = path.join(root, "out");
        const r = await cli(["export", "--run", run, "--out", out, "--json"]);
        expect(r.exitCode, r.stderr).toBe(0);
        const {files} = JSON.parse(r.stdout) as {files: Record<string, number>};
        expect(files).toMatchObject({
            "trl/sft_messages.jsonl": selected, "trl/sft_prompt_completion.jsonl": selected, "trl/dpo.jsonl": pairs, "trl/grpo_prompts.jsonl": 14,
            "llamafactory/still_sft_sharegpt.jsonl": selected, "llamafactory/still_sft_alpaca.jsonl": selected,
            "llamafactory/still_dpo_sharegpt.jsonl": pairs, "llamafactory/still_dpo_alpaca.jsonl": pairs, "llamafactory/dataset_info.json": 4
        });

        for (const l of rows(path.join(out, "trl/sft_messages.jsonl"))) {
            const m = trl.messages.parse(l).messages;
            expect(m.map((x) => x.role)).toEqual(["system", "user", "assistant"]);
            expect(m[0]!.content).toBe("Think, then answer.");
        }
        rows(path.join(out, "trl/sft_prompt_completion.jsonl")).forEach((l) => trl.promptCompletion.parse(l));
        rows(path.join(out, "trl/dpo.jsonl")).forEach((l) => trl.preference.parse(l));
        for (const l of rows(path.join(out, "trl/grpo_prompts.jsonl"))) {
            trl.promptOnly.parse(l);
            expect(l).toMatchObject({answer: expect.any(String), id: expect.any(String)});
        }

        const info = z.record(z.string(), infoEntry).parse(JSON.parse(fs.readFileSync(path.join(out, "llamafactory/dataset_info.json"), "utf8")));
        for (const [name, e] of Object.entries(info)) {
            const lines = rows(path.join(out, "llamafactory", e.file_name));
            expect(lines.length, name).toBeGreaterThan(0);
            for (const l of lines) {
                for (const column of Object.values(e.columns)) expect(l, `${name}: ${column}`).toHaveProperty(column);
                if (e.formatting === "sharegpt") {
                    const turns = l[e.columns.messages!] as Record<string, string>[];
                    // human first, then alternating; a ranking row ends with the human turn and holds two answers
                    turns.forEach((t, i) => expect(t[e.tags!.role_tag]).toBe(i % 2 === 0 ? e.tags!.user_tag : e.tags!.assistant_tag));
                    expect(turns.length % 2).toBe(e.ranking === true ? 1 : 0);
                    if (e.ranking === true) for (const k of ["chosen", "rejected"]) expect((l[k] as Record<string, string>)[e.tags!.role_tag]).toBe(e.tags!.assistant_tag);
                } else if (e.ranking === true) {
                    expect(typeof l.chosen === "string" && typeof l.rejected === "string").toBe(true);
                }
            }
        }

        // round trip: still train reads TRL's layouts
        const train = ["--model", model, "--max-steps", "1", "--ctx", "1024", "--rank", "2", "--json"];
        for (const f of ["sft_messages", "sft_prompt_completion"]) {
            const t = await cli(["train", "sft", "--data", path.join(out, "trl", `${f}.jsonl`), "--out", path.join(root, `${f}.gguf`), ...train]);
            expect(t.exitCode, t.stderr).toBe(0);
            expect(JSON.parse(t.stdout.trim().split("\n").at(-1)!)).toMatchObject({records: selected, steps: 1});
        }
        const d = await cli(["train", "dpo", "--pairs", path.join(out, "trl", "dpo.jsonl"), "--out", path.join(root, "dpo.gguf"), ...train]);
        expect(d.exitCode, d.stderr).toBe(0);
        expect(JSON.parse(d.stdout.trim().split("\n").at(-1)!)).toMatchObject({records: pairs});
        // TRL's implicit-prompt preference layout: two conversations that differ in their last message
        const implicit = path.join(root, "implicit.jsonl");
        fs.writeFileSync(implicit, rows(path.join(out, "trl/dpo.jsonl")).map((l) => JSON.stringify({
            chosen: [...(l.prompt as object[]), ...(l.chosen as object[])], rejected: [...(l.prompt as object[]), ...(l.rejected as object[])]
        })).join("\n") + "\n");
        const di = await cli(["train", "dpo", "--pairs", implicit, "--out", path.join(root, "dpo-implicit.gguf"), ...train]);
        expect(di.exitCode, di.stderr).toBe(0);
        const bad = path.join(root, "implicit-bad.jsonl");
        fs.writeFileSync(bad, JSON.stringify({chosen: [{role: "user", content: "a"}, {role: "assistant", content: "x"}],
            rejected: [{role: "user", content: "b"}, {role: "assistant", content: "y"}]}) + "\n");
        const refused = await cli(["train", "dpo", "--pairs", bad, "--out", path.join(root, "dpo-bad.gguf"), ...train]);
        expect(refused.exitCode).toBe(1);
        expect(refused.stderr).toMatch(/implicit-bad\.jsonl:1/);
    }, 240_000);

    it("refuses a folder that is not a run", async () => {
        const r = await cli(["export", "--run", root, "--out", path.join(root, "nothing")]);
        expect(r.exitCode).toBe(1);
        expect(r.stderr).toMatch(/config\.json: cannot be read .*is .* a run folder\?/);
        expect(fs.existsSync(path.join(root, "nothing"))).toBe(false);
    });
});
