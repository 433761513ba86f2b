// Evaluation metrics over graded samples: accuracy, unbiased pass@k (Chen et al., 2021),
// maj@k (majority vote), mean@k, and format adherence.
import {OptionError} from "../errors.js";
import {parseThought, type ThoughtFormat} from "../format/parseThought.js";

/** Share of true values (0 for an empty list). */
export function accuracy(correct: readonly boolean[]): number {
    return correct.length === 0 ? 0 : correct.filter(Boolean).length / correct.length;
}

/**
 * The unbiased estimator of pass@k from n samples of which c are correct:
 * 1 - C(n-c, k) / C(n, k), computed as a product to stay exact in floating point.
 */
export function passAtK(n: number, c: number, k: number): number {
    if (!Number.isInteger(n) || !Number.isInteger(c) || !Number.isInteger(k) || n < 0 || c < 0 || c > n || k < 1)
        throw new OptionError(`pass@k needs integers 0 ≤ c ≤ n and k ≥ 1 (got n=${n}, c=${c}, k=${k})`);
    if (k > n) throw new OptionError(`pass@${k} needs at least ${k} samples per problem (got ${n})`);
    if (n - c < k) return 1;
    let fail = 1;
    for (let i = n - c + 1; i <= n; i++) fail *= 1 - k / i;
    return 1 - fail;
}

/** Mean pass@k over problems, each given as its per-sample correctness. */
export function meanPassAtK(samples: readonly (readonly boolean[])[], k: number): number {
    if (samples.length === 0) return 0;
    return samples.reduce((sum, s) => sum + passAtK(s.length, s.filter(Boolean).length, k), 0) / samples.length;
}

/** Mean over problems of the accuracy of their first k samples. */
export function meanAtK(samples: readonly (readonly boolean[])[], k: number): number {
    if (samples.length === 0) return 0;
    return samples.reduce((sum, s) => {
        if (s.length < k) throw new OptionError(`mean@${k} needs at least ${k} samples per problem (got ${s.length})`);
        return sum + accuracy(s.slice(0, k));
    }, 0) / samples.length;
}

export type GradedSample = {extracted: string | null, correct: boolean};

/**
 * Majority vote over the first k samples of one problem: the most frequent extracted answer
 * (samples without one do not vote; ties go to the answer seen first). `same` groups answers
 * (default: identical text once spaces are removed; pass an equivalence such as mathEqual).
 * True when the winning answer is correct.
 */
export function majorityCorrect(samples: readonly GradedSample[], k: number, same: (a: string, b: string) => boolean = sameText): boolean {
    if (samples.length < k) throw new OptionError(`maj@${k} needs at least ${k} samples per problem (got ${samples.length})`);
    const groups: {answer: string, count: number, correct: boolean}[] = [];
    for (const s of samples.slice(0, k)) {
        if (s.extracted == null) continue;
        const g = groups.find((x) => same(x.answer, s.extracted!));
        if (g == null) groups.push({answer: s.extracted, count: 1, correct: s.correct});
        else {
            g.count++;
            g.correct ||= s.correct;
        }
    }
    let best: (typeof groups)[number] | undefined;
    for (const g of groups) if (best == null || g.count > best.count) best = g;
    return best?.correct ?? false;
}

/** Share of problems whose majority answer over k samples is correct. */
export function majAtK(samples: readonly (readonly GradedSample[])[], k: number, same?: (a: string, b: string) => boolean): number {
    if (samples.length === 0) return 0;
    return samples.filter((s) => majorityCorrect(s, k, same)).length / samples.length;
}

/** Share of responses well formed in `format` (default: STILL's long-form thought format; think: <think>…</think>). */
export function formatAdherence(responses: readonly string[], format: ThoughtFormat | "auto" = "still"): number {
    return responses.length === 0 ? 0 : responses.filter((r) => parseThought(r, format).wellFormed).length / responses.length;
}

function sameText(a: string, b: string): boolean {
    return a.replace(/\s+/g, "") === b.replace(/\s+/g, "");
}
