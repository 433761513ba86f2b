// Conformance with public verifier test suites (207 cases) and our policy for the cases
// where those verifiers disagree.
import fs from "node:fs";
import path from "node:path";
import {describe, expect, it} from "vitest";
import {grade} from "../src/grade/grade.js";
import {readJsonlFixture, repoRoot} from "./helpers/fixtures.js";

type Case = {pred: string, gold: string, equal: boolean, category: string, source: string};
type Disagreement = {pred: string, gold: string, verdicts: Record<string, boolean>};
type Policy = {pred: string, gold: string, verdict: boolean, why: string, source: string};

const cases = readJsonlFixture<Case>("grader-cases/cases.jsonl");
const disagreements = readJsonlFixture<Disagreement>("grader-cases/policy.jsonl");
const policy = fs.readFileSync(path.join(repoRoot, "src/grade/policy.jsonl"), "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l) as Policy);

describe("grader conformance", () => {
    it("agrees with at least 97% of the 207 verifier cases", () => {
        expect(cases).toHaveLength(207);
        const wrong = cases.filter((c) => grade(c.pred, c.gold).correct !== c.equal);
        const agreement = (cases.length - wrong.length) / cases.length;
        // Listing the disagreements makes a failure say which cases moved.
        expect(agreement, wrong.map((c) => `${c.source}: ${JSON.stringify(c.pred.slice(-80))} vs ${JSON.stringify(c.gold)} should be ${c.equal}`).join("\n"))
            .toBeGreaterThanOrEqual(0.97);
    });

    it("gets both verdicts right within every category (no category is sacrificed)", () => {
        const byCategory = new Map<string, {n: number, ok: number}>();
        for (const c of cases) {
            const s = byCategory.get(c.category) ?? {n: 0, ok: 0};
            s.n++;
            if (grade(c.pred, c.gold).correct === c.equal) s.ok++;
            byCategory.set(c.category, s);
        }
        for (const [category, s] of byCategory) expect(s.ok / s.n, category).toBeGreaterThanOrEqual(0.8);
    });

    it("has a house verdict, with a reason, for every disagreement case", () => {
        expect(disagreements).toHaveLength(24);
        expect(policy).toHaveLength(24);
        for (const d of disagreements) {
            const p = policy.find((x) => x.pred === d.pred && x.gold === d.gold);
            expect(p, `${d.pred} vs ${d.gold}`).toBeDefined();
            expect(p!.why.length).toBeGreaterThan(20);
        }
    });

    it("follows the house policy on each disagreement case", () => {
        for (const p of policy) expect(grade(p.pred, p.gold).correct, `${p.pred} vs ${p.gold}: ${p.why}`).toBe(p.verdict);
    });

    it("never throws on a case, in either direction", () => {
        for (const c of cases) {
            expect(() => grade(c.gold, c.pred)).not.toThrow();
            expect(() => grade(c.pred, c.gold, {type: "exact"})).not.toThrow();
            expect(() => grade(c.pred, c.gold, {type: "choice"})).not.toThrow();
        }
    });
});
