// Equality of two scalar expressions (LaTeX), decided exactly where possible:
//  1. exact Gaussian-rational arithmetic (BigInt), with free symbols set to the same
//     random rationals on both sides (a rational function identity test);
//  2. otherwise real arithmetic at 40 and 70 significant digits: the change between the two
//     precisions bounds the rounding noise, and a difference must stay within that noise;
//  3. complex doubles as the last resort (complex intermediate values).
// A side written with a decimal point is an approximation: it matches a value given exactly
// when it agrees to a relative 5e-6 (about six significant figures). No absolute tolerance
// is ever used, so 1/2^98 and 1/2^99 differ.
import type {Decimal} from "decimal.js";
import {BudgetExceeded, evaluateNode, freeSymbols, type Budget, type Point} from "./evaluateNode.js";
import {complexField, decimalField, exactField, qcEq, qSub, qToNumber, TooLarge, type Complex, type QC} from "./numberFields.js";
import {parseLatex, type MathNode} from "./parseLatex.js";

/** Relative agreement required between a decimal approximation and an exact value. */
export const DECIMAL_TOLERANCE = 5e-6;

export const POINTS: readonly Point[] = [
    {seed: 11, lo: 0.3, hi: 1.9},
    {seed: 23, lo: 1.2, hi: 3.8},
    {seed: 37, lo: 2.4, hi: 6.2},
    {seed: 53, lo: 0.6, hi: 2.9}
];

/** For expressions only defined at integers (sums to n, n!, binomials): small whole numbers. */
export const INTEGER_POINTS: readonly Point[] = [
    {seed: 61, lo: 2, hi: 9, integer: true},
    {seed: 71, lo: 3, hi: 11, integer: true},
    {seed: 83, lo: 2, hi: 12, integer: true},
    {seed: 97, lo: 4, hi: 10, integer: true}
];

const LOW = decimalField(40);
const HIGH = decimalField(70);

type Verdict = "equal" | "different" | "unknown";

/** Spaces and empty groups removed: a cheap textual identity. */
export function compact(s: string): string {
    return s.replace(/\s+/g, "").replace(/\{\}/g, "");
}

export function hasDecimal(s: string): boolean {
    return /\d\.\d|(?<![\d.])\.\d|\d\.(?![\d.])/.test(s);
}

function infinity(s: string): 1 | -1 | null {
    const c = compact(s);
    if (/^\+?\\infty$/.test(c)) return 1;
    if (/^-\\infty$/.test(c)) return -1;
    return null;
}

/** True when the two expressions have the same value (for all values of their free symbols). */
export function scalarEqual(a: string, b: string, budget: Budget): boolean {
    if (compact(a) === compact(b)) return true;
    const ia = infinity(a);
    const ib = infinity(b);
    if (ia != null || ib != null) return ia === ib;
    const na = parseLatex(a);
    const nb = parseLatex(b);
    if (na == null || nb == null) return false;
    const da = hasDecimal(a);
    const db = hasDecimal(b);
    try {
        return nodesEqual(na, nb, {approx: da || db, bothDecimal: da && db}, budget);
    } catch (err) {
        if (err instanceof BudgetExceeded) return false;
        throw err;
    }
}

type Mode = {approx: boolean, bothDecimal: boolean};

function nodesEqual(na: MathNode, nb: MathNode, mode: Mode, budget: Budget): boolean {
    const free = freeSymbols(na, freeSymbols(nb));
    const sets = free.size === 0 ? [POINTS.slice(0, 1)] : [POINTS, INTEGER_POINTS];
    for (const points of sets) {
        let valid = 0;
        for (const point of points) {
            let verdict: Verdict;
            try {
                verdict = pointVerdict(na, nb, point, mode, budget);
            } catch (err) {
                // Exact values too large to build: only the written forms can be compared.
                if (err instanceof TooLarge) return structurallyEqual(na, nb);
                throw err;
            }
            if (verdict === "different") return false;
            if (verdict === "equal") valid++;
        }
        if (valid > 0) return true;
    }
    return structurallyEqual(na, nb);
}

function structurallyEqual(na: MathNode, nb: MathNode): boolean {
    return JSON.stringify(canonical(na)) === JSON.stringify(canonical(nb));
}

function pointVerdict(na: MathNode, nb: MathNode, point: Point, mode: Mode, budget: Budget): Verdict {
    const ea = evaluateNode(na, exactField, point, budget);
    const eb = ea == null ? null : evaluateNode(nb, exactField, point, budget);
    if (ea != null && eb != null) {
        if (qcEq(ea, eb)) return "equal";
        if (mode.approx && !mode.bothDecimal) return closeExact(ea, eb) ? "equal" : "different";
        return "different";
    }
    const verdict = decimalVerdict(na, nb, point, mode, budget);
    if (verdict !== "unknown") return verdict;
    return complexVerdict(na, nb, point, mode, budget);
}

function closeExact(a: QC, b: QC): boolean {
    const diff = Math.hypot(qToNumber(qSub(a.re, b.re)), qToNumber(qSub(a.im, b.im)));
    const scale = Math.max(Math.hypot(qToNumber(a.re), qToNumber(a.im)), Math.hypot(qToNumber(b.re), qToNumber(b.im)));
    return scale > 0 && diff <= DECIMAL_TOLERANCE * scale;
}

function decimalVerdict(na: MathNode, nb: MathNode, point: Point, mode: Mode, budget: Budget): Verdict {
    const a70 = evaluateNode<Decimal>(na, HIGH, point, budget);
    const b70 = a70 == null ? null : evaluateNode<Decimal>(nb, HIGH, point, budget);
    if (a70 == null || b70 == null) return "unknown";
    const a40 = evaluateNode<Decimal>(na, LOW, point, budget);
    const b40 = evaluateNode<Decimal>(nb, LOW, point, budget);
    if (a40 == null || b40 == null) return "unknown";
    const noise = a70.sub(a40).abs().add(b70.sub(b40).abs());
    const scale = a70.abs().gt(b70.abs()) ? a70.abs() : b70.abs();
    const diff = a70.sub(b70).abs();
    if (scale.isZero()) return "equal";
    // Near a singularity (tan(pi/2)) the two precisions disagree wildly: no verdict here.
    if (noise.gt(scale.gt(1) ? scale.mul("1e-25") : "1e-25")) return "unknown";
    const allowed = mode.approx ? scale.mul(DECIMAL_TOLERANCE).add(noise) : noise.mul(10).add(scale.mul("1e-60"));
    return diff.lte(allowed) ? "equal" : "different";
}

function complexVerdict(na: MathNode, nb: MathNode, point: Point, mode: Mode, budget: Budget): Verdict {
    const a = evaluateNode<Complex>(na, complexField, point, budget);
    const b = a == null ? null : evaluateNode<Complex>(nb, complexField, point, budget);
    if (a == null || b == null) return "unknown";
    const scale = Math.max(Math.hypot(a.re, a.im), Math.hypot(b.re, b.im));
    if (scale === 0) return "equal";
    const diff = Math.hypot(a.re - b.re, a.im - b.im);
    return diff <= (mode.approx ? DECIMAL_TOLERANCE : 1e-9) * scale ? "equal" : "different";
}

/** A canonical form for structural comparison: juxtaposition is a product, sums and products are sorted. */
export function canonical(node: MathNode): MathNode {
    if (!Array.isArray(node)) return typeof node === "object" && "num" in node ? node.num : node;
    let [head, ...args] = node;
    if (head === "InvisibleOperator") head = "Multiply";
    if (head === "Delimiter" && args.length >= 1 && !(Array.isArray(args[0]) && args[0][0] === "Sequence")) return canonical(args[0]!);
    if (head === "Subtract" && args.length === 2) return canonical(["Add", args[0]!, ["Negate", args[1]!]]);
    let cargs = args.map(canonical);
    if (head === "Add" || head === "Multiply") {
        cargs = cargs.flatMap((a) => (Array.isArray(a) && a[0] === head ? a.slice(1) : [a]));
        cargs.sort((x, y) => (JSON.stringify(x) < JSON.stringify(y) ? -1 : 1));
    }
    if (head === "Negate" && Array.isArray(cargs[0]) && cargs[0][0] === "Negate") return cargs[0][1]!;
    return [head as MathNode, ...cargs];
}
