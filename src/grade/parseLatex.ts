// LaTeX -> MathJSON through @cortex-js/compute-engine, as a plain tree. We take only the
// parser's non-canonical output: the engine's canonical forms and its numeric equality
// are not exact (it folds 1/2^98 to 0 and compares with an absolute tolerance), so values
// are computed by our own evaluator (evaluateNode.ts).
import {ComputeEngine} from "@cortex-js/compute-engine";

export type MathNode = number | string | {num: string} | {sym: string} | {str: string} | MathNode[];

/** Inputs longer than this are not parsed (compared as text only): one answer cannot stall grading. */
export const MAX_PARSE_LENGTH = 1500;
const MAX_NESTING = 60;
const CACHE_SIZE = 4000;

let engine: ComputeEngine | undefined;
const cache = new Map<string, MathNode | null>();

/** The one engine, made on first use (its construction costs tens of milliseconds). */
function getEngine(): ComputeEngine {
    engine ??= new ComputeEngine();
    return engine;
}

/** Parses `latex` to a MathJSON tree; null when it is too long, too deep, or does not parse cleanly. */
export function parseLatex(latex: string): MathNode | null {
    const hit = cache.get(latex);
    if (hit !== undefined) {
        cache.delete(latex);
        cache.set(latex, hit);
        return hit;
    }
    const node = parseUncached(latex);
    cache.set(latex, node);
    if (cache.size > CACHE_SIZE) cache.delete(cache.keys().next().value!);
    return node;
}

function parseUncached(latex: string): MathNode | null {
    if (latex.trim() === "" || latex.length > MAX_PARSE_LENGTH || nesting(latex) > MAX_NESTING) return null;
    let json: unknown;
    try {
        json = getEngine().parse(latex, {canonical: false}).json;
    } catch {
        return null;
    }
    const node = json as MathNode;
    return hasError(node) ? null : node;
}

function nesting(s: string): number {
    let depth = 0;
    let max = 0;
    for (const c of s) {
        if (c === "{" || c === "(" || c === "[") max = Math.max(max, ++depth);
        else if (c === "}" || c === ")" || c === "]") depth--;
    }
    return max;
}

function hasError(node: MathNode): boolean {
    if (!Array.isArray(node)) return node === "Nothing";
    if (node[0] === "Error") return true;
    return node.some((n) => hasError(n));
}

/** Warms the engine (for benchmarks that report the cold start apart). */
export function warmParser(): void {
    parseLatex("\\frac{1}{2}+x");
}
