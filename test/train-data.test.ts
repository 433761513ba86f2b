// The trainer's input as sft()/dpo() write it: token splits and loss masks from the chat
// template, lengths, and one clear error for bad data, options and models.
import fs from "node:fs";
import path from "node:path";
import {afterAll, beforeAll, describe, expect, it} from "vitest";
import {loadModel, type Model} from "../src/engine/Model.js";
import {DataError, ModelError, OptionError} from "../src/errors.js";
import {formatThought} from "../src/format/formatThought.js";
import {MARKERS} from "../src/format/markers.js";
import {dpo} from "../src/train/dpo.js";
import {fitLengths} from "../src/train/runTraining.js";
import {sft} from "../src/train/sft.js";
import {tokenizeChat} from "../src/train/tokenizeForTraining.js";
import {testModel, tmpDir, tmpFile} from "./helpers/models.js";

const response = formatThought({thought: "Two and two make four.", solution: "The answer is 4."});

describe("training input", () => {
    let modelPath: string;
    let model: Model;
    beforeAll(async () => {
        modelPath = await testModel("tiny");
        model = await loadModel(modelPath, {vocabOnly: true});
    });
    afterAll(() => model?.dispose());

    it("splits a conversation into the generation prompt and the answer, with completion and thought masks", () => {
        const t = tokenizeChat(model, [{role: "user", content: "What is 2+2?"}, {role: "assistant", content: response}]);
        expect(model.detokenize(t.prompt, {special: true})).toBe(model.applyChatTemplate([{role: "user", content: "What is 2+2?"}]));
        const text = (ids: number[]) => model.detokenize(ids, {special: true});
        // completion: the answer and its end-of-turn token, not the newline the template adds after it
        const trained = t.completion.filter((_, i) => t.completionWeights[i] === 1);
        expect(text(trained)).toBe(`${response}<|im_end|>`);
        expect(text(t.completion)).toBe(`${response}<|im_end|>\n`);
        // thought: the markers and what is between them
        const thought = t.completion.filter((_, i) => t.thoughtWeights![i] === 1);
        expect(text(thought)).toBe(`${MARKERS.beginThought}\n\nTwo and two make four.\n\n${MARKERS.endThought}`);
        const noThought = tokenizeChat(model, [{role: "user", content: "Hi"}, {role: "assistant", content: "Hello."}]);
        expect(noThought.thoughtWeights).toBeNull();
    });

    it("fits answers into ctx or says why not", () => {
        expect(fitLengths(10, [20], 64, "error")).toBeNull();
        expect(fitLengths(10, [60], 64, "error")).toMatch(/take 70 tokens, more than ctx = 64/);
        expect(fitLengths(10, [60], 64, "truncate")).toEqual([54]);
        expect(fitLengths(10, [40, 20], 64, "truncate")).toEqual([24, 20]);
        expect(fitLengths(40, [10, 10], 64, "truncate")).toMatch(/prompt alone takes 40 tokens/);
    });

    it("names the file and line of a bad example", async () => {
        const data = tmpFile("bad.jsonl", [
            JSON.stringify({question: "Q1", response}),
            JSON.stringify({question: "Q2"}),
            ""
        ].join("\n"));
        const err = await sft({model: modelPath, data, out: path.join(tmpDir, "bad.gguf"), systemPrompt: null}).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(DataError);
        expect((err as DataError).message).toMatch(/^.*bad\.jsonl:2: /);
        expect((err as DataError).line).toBe(2);
    });

    it("refuses an answer without a thought when only the thought is trained, naming the line", async () => {
        const data = tmpFile("nothought.jsonl", [JSON.stringify({question: "Q1", response}), JSON.stringify({question: "Q2", response: "Just 4."})].join("\n"));
        await expect(sft({model: modelPath, data, out: path.join(tmpDir, "nt.gguf"), systemPrompt: null, mask: "thought"}))
            .rejects.toThrow(/nothought\.jsonl:2: the answer has no <\|begin_of_thought\|>/);
    });

    it("refuses examples longer than ctx unless told to truncate them", async () => {
        const long = [{question: "Q", response: formatThought({thought: "x".repeat(300), solution: "4"})}];
        await expect(sft({model: modelPath, data: long, out: path.join(tmpDir, "long.gguf"), systemPrompt: null, ctx: 128}))
            .rejects.toThrow(/examples: example 0: prompt and answer take \d+ tokens, more than ctx = 128/);
        const r = await sft({model: modelPath, data: long, out: path.join(tmpDir, "long.gguf"), systemPrompt: null, ctx: 128,
            overflow: "truncate", maxSteps: 1, threads: 1});
        expect(r.truncated).toBe(1);
        expect(fs.existsSync(r.out)).toBe(true);
    });

    it("checks pairs: exactly one prompt field, a thought when aligning the thought", async () => {
        const out = path.join(tmpDir, "pairs.gguf");
        await expect(dpo({model: modelPath, out, pairs: [{question: "Q", prompt: "P", chosen: "a", rejected: "b"}]}))
            .rejects.toThrow(/pair 0: .*exactly one of question, messages and prompt/);
        await expect(dpo({model: modelPath, out, align: "thought", systemPrompt: null,
            pairs: [{question: "Q", chosen: response, rejected: "no thought here"}]}))
            .rejects.toThrow(/pair 0: the rejected answer has no <\|begin_of_thought\|>/);
    });

    it("refuses impossible options before starting anything", async () => {
        await expect(sft({model: modelPath, data: [], out: "x.gguf", lora: {rank: 0}})).rejects.toBeInstanceOf(OptionError);
        await expect(sft({model: modelPath, data: [], out: "x.gguf", optimizer: {lr: -1}})).rejects.toThrow(/invalid training options/);
        await expect(dpo({model: modelPath, pairs: [], out: "x.gguf", full: true, adapter: "a.gguf"})).rejects.toThrow(/cannot continue a LoRA adapter/);
        await expect(sft({model: modelPath, data: [], out: path.join(tmpDir, "empty.gguf")})).rejects.toThrow(/no training examples/);
    });

    it("refuses a model file that is not a usable base model", async () => {
        const truncated = path.join(tmpDir, "cut-model.gguf");
        const bytes = fs.readFileSync(modelPath);
        fs.writeFileSync(truncated, bytes.subarray(0, bytes.length - 4096));
        await expect(sft({model: truncated, data: [{question: "Q", response}], out: path.join(tmpDir, "m.gguf")})).rejects.toBeInstanceOf(ModelError);
    });
});
