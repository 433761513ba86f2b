// Filters: exact and near-duplicate removal, loops and gibberish, token-length bounds.
import {describe, expect, it} from "vitest";
import {dedupe} from "../src/data/dedupe.js";
import {approximateTokenCount, filterByTokenLength} from "../src/data/filterByTokenLength.js";
import {textQuality} from "../src/data/textQuality.js";
import {readJsonlFixture} from "./helpers/fixtures.js";

const problems = readJsonlFixture<{problem: string, solution: string}>("data/math500.jsonl");

describe("dedupe", () => {
    it("removes exact duplicates up to case and spacing, keeping the first", () => {
        const items = ["What is 2+2?", "what is  2+2?", "What is 3+3?", "WHAT IS 2+2?\n"];
        const {kept, removed} = dedupe(items, {key: (s) => s});
        expect(kept).toEqual(["What is 2+2?", "What is 3+3?"]);
        expect(removed).toEqual([{index: 1, duplicateOf: 0, kind: "exact", similarity: 1}, {index: 3, duplicateOf: 0, kind: "exact", similarity: 1}]);
    });

    it("removes near duplicates (light edits) and keeps distinct problems", () => {
        const base = problems.slice(0, 200).map((p) => p.problem).filter((p) => p.split(/\s+/).length >= 30);
        // A light edit: the last plain word replaced by another.
        const edited = base.slice(0, 20).map((p) => {
            const words = p.split(" ");
            let k = words.length - 1;
            while (k > 0 && !/^[a-z]{3,8}$/.test(words[k]!)) k--;
            words[k] = words[k] === "quantity" ? "amount" : "quantity";
            return words.join(" ");
        });
        const items = [...base, ...edited];
        const {kept, removed} = dedupe(items, {key: (s) => s});
        const near = removed.filter((r) => r.kind === "near");
        expect(near.map((r) => r.index).sort((a, b) => a - b)).toEqual(edited.map((_, k) => base.length + k));
        for (const r of near) {
            expect(r.duplicateOf).toBe(r.index - base.length);
            expect(r.similarity).toBeGreaterThanOrEqual(0.8);
        }
        expect(kept).toHaveLength(base.length);
    });

    it("keeps everything when near matching is off", () => {
        const {kept} = dedupe(["a b c d e f g", "a b c d e f h"], {key: (s) => s, nearThreshold: 1});
        expect(kept).toHaveLength(2);
    });
});

describe("textQuality", () => {
    it("passes real solutions", () => {
        const flagged = problems.map((p) => p.solution).filter((s) => {
            const q = textQuality(s);
            return q.repetitive || q.gibberish;
        });
        expect(flagged.length / problems.length).toBeLessThan(0.01);
    });

    it("flags a response that ends in a loop", () => {
        const loop = "Let me compute the sum. " + "Wait, let me check that again. ".repeat(12);
        expect(textQuality(loop)).toMatchObject({repetitive: true});
        expect(textQuality(loop).reasons[0]).toMatch(/ends in a loop/);
        expect(textQuality("The answer is 5" + "5".repeat(60)).repetitive).toBe(true);
        expect(textQuality("so so so so so so so so so so").repetitive).toBe(true);
    });

    it("flags repeated lines and gibberish", () => {
        const lines = Array.from({length: 12}, (_, i) => (i % 4 !== 0 ? "We substitute x = 3 into the equation again." : `Step ${i}: something new happens here.`)).join("\n");
        expect(textQuality(lines).reasons.join()).toMatch(/lines repeat/);
        expect(textQuality("\uFFFD\uFFFD ok \uFFFD text \uFFFD\uFFFD").gibberish).toBe(true);
        expect(textQuality("#$%^&*()_+{}|:<>?~`-=[]\\;',./".repeat(3)).gibberish).toBe(true);
        expect(textQuality("normal words\u0007 with a bell").gibberish).toBe(true);
        expect(textQuality("A short, ordinary sentence about triangles.")).toEqual({repetitive: false, gibberish: false, reasons: []});
    });
});

describe("filterByTokenLength", () => {
    it("applies bounds with the counter it is given", () => {
        const words = (s: string) => s.split(/\s+/).filter(Boolean).length;
        const items = [{t: "one"}, {t: "one two three"}, {t: "one two three four five six"}];
        const {kept, removed} = filterByTokenLength(items, {text: (x) => x.t, countTokens: words, min: 2, max: 5});
        expect(kept).toEqual([{t: "one two three"}]);
        expect(removed).toEqual([{index: 0, tokens: 1}, {index: 2, tokens: 6}]);
    });

    it("has a rough counter for when no tokenizer is at hand", () => {
        expect(approximateTokenCount("abcdefgh")).toBe(2);
        expect(approximateTokenCount("数学题")).toBe(3);
    });
});
