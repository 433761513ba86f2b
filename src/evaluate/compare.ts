// Two evaluations of the same sets side by side, paired by problem id: greedy pass@1 with
// McNemar's exact test on the problems where exactly one of the two is right, and mean@k
// with a paired bootstrap of the per-problem difference. "B beat A" becomes a claim with a
// p-value; problems present in only one evaluation are counted and left out of the test.
import {z} from "zod";
import {rng} from "../loop/seeded.js";
import type {EvalMetrics, ProblemOutcome} from "./evaluate.js";

export const setComparisonSchema = z.object({
    set: z.string(),
    /** Problems in both evaluations (the pairs tested). */
    paired: z.number().int(),
    /** Problems in only one of them. */
    unpaired: z.number().int(),
    greedy: z.object({
        a: z.number(), b: z.number(), difference: z.number(),
        /** Problems A got right and B wrong, and the other way round. */
        onlyA: z.number().int(), onlyB: z.number().int(),
        /** McNemar's exact (binomial) two-sided p-value. */
        p: z.number()
    }).nullable(),
    sampled: z.object({
        a: z.number(), b: z.number(), difference: z.number(),
        /** The 95% paired-bootstrap interval of the difference (B − A). */
        low: z.number(), high: z.number(),
        /** The paired bootstrap's two-sided p-value for no difference. */
        p: z.number(),
        resamples: z.number().int()
    }).nullable()
});
export type SetComparison = z.infer<typeof setComparisonSchema>;

/** log C(n, k) */
function logChoose(n: number, k: number): number {
    let s = 0;
    for (let i = 1; i <= k; i++) s += Math.log(n - k + i) - Math.log(i);
    return s;
}

/**
 * McNemar's exact test: `onlyA` and `onlyB` discordant pairs; the two-sided p-value of a
 * Binomial(onlyA + onlyB, ½) count as far from even as the smaller one (1 with no discordant pair).
 */
export function mcnemarExact(onlyA: number, onlyB: number): number {
    const n = onlyA + onlyB;
    if (n === 0) return 1;
    const k = Math.min(onlyA, onlyB);
    let tail = 0;
    for (let i = 0; i <= k; i++) tail += Math.exp(logChoose(n, i) - n * Math.LN2);
    return Math.min(1, 2 * tail);
}

/**
 * The paired bootstrap of the mean difference d = mean(b − a): resampling problems with
 * replacement, the 95% percentile interval, and the two-sided p-value of the resampled
 * differences centred on d lying at least |d| from it.
 */
export function pairedBootstrap(a: readonly number[], b: readonly number[], o: {resamples?: number, seed?: number} = {}) {
    if (a.length !== b.length) throw new Error("paired values need equal lengths");
    const n = a.length;
    const resamples = o.resamples ?? 10_000;
    const d = a.map((x, i) => b[i]! - x);
    const mean = n === 0 ? 0 : d.reduce((s, x) => s + x, 0) / n;
    if (n === 0) return {difference: 0, low: 0, high: 0, p: 1, resamples};
    const next = rng(o.seed ?? 0);
    const means = new Float64Array(resamples);
    let extreme = 0;
    for (let r = 0; r < resamples; r++) {
        let s = 0;
        for (let i = 0; i < n; i++) s += d[Math.floor(next() * n)]!;
        means[r] = s / n;
        if (Math.abs(means[r]! - mean) >= Math.abs(mean) - 1e-12) extreme++;
    }
    means.sort();
    const at = (q: number) => means[Math.min(resamples - 1, Math.max(0, Math.floor(q * resamples)))]!;
    return {difference: mean, low: at(0.025), high: at(0.975), p: mean === 0 ? 1 : (extreme + 1) / (resamples + 1), resamples};
}

/** Each set in both evaluations, compared problem by problem (A the earlier, B the newer). */
export function compareEvaluations(a: readonly EvalMetrics[], b: readonly EvalMetrics[], o: {resamples?: number, seed?: number} = {}): SetComparison[] {
    const out: SetComparison[] = [];
    for (const mb of b) {
        const ma = a.find((m) => m.set === mb.set);
        if (ma == null) continue;
        const byId = new Map(ma.outcomes.map((x) => [x.id, x]));
        const pairs: [ProblemOutcome, ProblemOutcome][] = mb.outcomes.flatMap((y) => {
            const x = byId.get(y.id);
            return x == null ? [] : [[x, y] as [ProblemOutcome, ProblemOutcome]];
        });
        const unpaired = ma.outcomes.length + mb.outcomes.length - 2 * pairs.length;
        const greedyPairs = pairs.filter(([x, y]) => x.greedy != null && y.greedy != null);
        let greedy: SetComparison["greedy"] = null;
        if (greedyPairs.length > 0) {
            const onlyA = greedyPairs.filter(([x, y]) => x.greedy! && !y.greedy!).length;
            const onlyB = greedyPairs.filter(([x, y]) => !x.greedy! && y.greedy!).length;
            const accA = greedyPairs.filter(([x]) => x.greedy!).length / greedyPairs.length;
            const accB = greedyPairs.filter(([, y]) => y.greedy!).length / greedyPairs.length;
            greedy = {a: accA, b: accB, difference: accB - accA, onlyA, onlyB, p: mcnemarExact(onlyA, onlyB)};
        }
        const sampledPairs = pairs.filter(([x, y]) => x.samples > 0 && y.samples > 0);
        let sampled: SetComparison["sampled"] = null;
        if (sampledPairs.length > 0) {
            const xs = sampledPairs.map(([x]) => x.correct / x.samples);
            const ys = sampledPairs.map(([, y]) => y.correct / y.samples);
            const boot = pairedBootstrap(xs, ys, o);
            const mean = (v: number[]) => v.reduce((s, t) => s + t, 0) / v.length;
            sampled = {a: mean(xs), b: mean(ys), ...boot};
        }
        out.push({set: mb.set, paired: pairs.length, unpaired, greedy, sampled});
    }
    return out;
}
