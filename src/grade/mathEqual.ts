// Equivalence of two math answers: normalise both, parse their structure, and compare
// structure by structure. Lists and sets are unordered, tuples ordered; intervals keep
// their brackets; an inequality in one variable is the interval it describes; `x = v`
// is compared by its value v; equations and inequalities are equivalent when one is a
// constant multiple of the other (a positive one for inequalities).
import type {Decimal} from "decimal.js";
import {BudgetExceeded, evaluateNode, freeSymbols, makeBudget, type Budget} from "./evaluateNode.js";
import {normalizeAnswer} from "./normalizeAnswer.js";
import {decimalField, exactField, qDiv, qEq} from "./numberFields.js";
import {isNameLike, parseAnswer, type AnswerValue} from "./parseAnswer.js";
import {parseLatex} from "./parseLatex.js";
import {compact, POINTS, scalarEqual} from "./scalarEqual.js";

/** Default time allowed for one comparison; past it the answers count as different. */
export const COMPARE_TIMEOUT_MS = 250;
const MAX_ANSWER_LENGTH = 5000;

type Relation = {sides: string[], ops: string[]};
type Interval = {lo: string, hi: string, loClosed: boolean, hiClosed: boolean};

/** True when the two answers (raw extracted strings) are mathematically equivalent. */
export function mathEqual(pred: string, gold: string, options: {timeoutMs?: number} = {}): boolean {
    // No real answer is this long; compare such text as text rather than parse it.
    if (pred.length > MAX_ANSWER_LENGTH || gold.length > MAX_ANSWER_LENGTH) return compact(pred) === compact(gold);
    const p = normalizeAnswer(pred);
    const g = normalizeAnswer(gold);
    if (p === "" || g === "") return false;
    if (compact(p) === compact(g)) return true;
    const budget = makeBudget(options.timeoutMs ?? COMPARE_TIMEOUT_MS);
    try {
        const pv = parseAnswer(p);
        const gv = parseAnswer(g);
        if (valuesEqual(pv, gv, budget)) return true;
        // A written percent sign is either a unit (10% ~ 10, above) or a factor of 1/100 (10% ~ 0.1).
        if (PERCENT.test(pred) && pv.kind === "expr") return valuesEqual({kind: "expr", latex: `\\frac{${p}}{100}`}, gv, budget);
        if (PERCENT.test(gold) && gv.kind === "expr") return valuesEqual(pv, {kind: "expr", latex: `\\frac{${g}}{100}`}, budget);
        return false;
    } catch (err) {
        if (err instanceof BudgetExceeded) return false;
        throw err;
    }
}

const PERCENT = /%|\bpercent\b/i;

/** Structural comparison of two parsed answers (pred first, gold second). */
export function valuesEqual(pred: AnswerValue, gold: AnswerValue, budget: Budget): boolean {
    switch (gold.kind) {
        case "assign": {
            if (finalValues(pred).some((v) => valuesEqual(v, gold.value, budget))) return true;
            const rel = relationOf(pred);
            return rel != null && relationEqual(rel, gold.relation, budget);
        }
        case "relation": {
            // A chain ending in a constant (`a + b = b + a = 101`) states that constant.
            if (gold.sides.length >= 3 && gold.ops.every((o) => o === "=") && isConstant(gold.sides[gold.sides.length - 1]!)) {
                const last = parseAnswer(gold.sides[gold.sides.length - 1]!);
                if (finalValues(pred).some((v) => valuesEqual(v, last, budget))) return true;
            }
            const rel = relationOf(pred);
            if (rel != null) return relationEqual(rel, gold, budget);
            const gi = relationInterval(gold);
            const pi = asInterval(pred);
            if (gi != null && pi != null) return intervalEqual(pi, gi, budget);
            if (gi != null && pred.kind === "union" && pred.parts.length === 1) return valuesEqual(pred.parts[0]!, gold, budget);
            return false;
        }
        case "tuple": {
            if (pred.kind === "tuple") {
                if (pred.items.length !== gold.items.length) return false;
                if (pred.items.length === 2 && (pred.open !== gold.open || pred.close !== gold.close)) return false;
                return ordered(pred.items, gold.items, budget);
            }
            if (pred.kind === "relation") {
                const pi = relationInterval(pred);
                const gi = asInterval(gold);
                return pi != null && gi != null && intervalEqual(pi, gi, budget);
            }
            if (pred.kind === "list" && pred.braces === "bare") return ordered(pred.items, gold.items, budget);
            if (pred.kind === "matrix") return ordered(vectorEntries(pred) ?? [], gold.items, budget);
            if (pred.kind === "assign") return finalValues(pred).some((v) => valuesEqual(v, gold, budget));
            if (pred.kind === "union" && pred.parts.length === 1) return valuesEqual(pred.parts[0]!, gold, budget);
            return false;
        }
        case "list": {
            if (pred.kind === "list") return unordered(pred.items, gold.items, budget);
            if (pred.kind === "tuple") return gold.braces === "bare" ? ordered(pred.items, gold.items, budget) : false;
            if (pred.kind === "assign") return finalValues(pred).some((v) => valuesEqual(v, gold, budget));
            if (pred.kind === "union") return unionEqual(pred, gold, budget);
            if (gold.items.length === 1) return valuesEqual(pred, gold.items[0]!, budget);
            return false;
        }
        case "union":
            if (pred.kind === "assign") return finalValues(pred).some((v) => valuesEqual(v, gold, budget));
            return unionEqual(pred, gold, budget);
        case "matrix": {
            if (pred.kind === "matrix") {
                if (pred.rows.length !== gold.rows.length) return false;
                return pred.rows.every((row, i) => row.length === gold.rows[i]!.length && ordered(row, gold.rows[i]!, budget));
            }
            const entries = vectorEntries(gold);
            if (entries != null && (pred.kind === "tuple" || (pred.kind === "list" && pred.braces === "bare"))) return ordered(pred.items, entries, budget);
            if (pred.kind === "assign") return finalValues(pred).some((v) => valuesEqual(v, gold, budget));
            return false;
        }
        case "ratio":
            if (pred.kind === "ratio") return ordered(pred.items, gold.items, budget);
            if (pred.kind === "assign") return finalValues(pred).some((v) => valuesEqual(v, gold, budget));
            return false;
        case "base":
            if (pred.kind === "base") return pred.base === gold.base && stripZeros(pred.digits) === stripZeros(gold.digits);
            if (pred.kind === "expr" && /^\d+$/.test(compact(pred.latex))) return stripZeros(compact(pred.latex)) === stripZeros(gold.digits);
            if (pred.kind === "assign") return finalValues(pred).some((v) => valuesEqual(v, gold, budget));
            return false;
        case "text":
            if (pred.kind === "text" || pred.kind === "expr") return textKey(pred.kind === "text" ? pred.text : pred.latex) === textKey(gold.text);
            if (pred.kind === "assign") return finalValues(pred).some((v) => valuesEqual(v, gold, budget));
            return false;
        case "expr": {
            if (pred.kind === "expr") return scalarEqual(pred.latex, gold.latex, budget);
            if (pred.kind === "text") return textKey(pred.text) === textKey(gold.latex);
            if (pred.kind === "base") return /^\d+$/.test(compact(gold.latex)) && stripZeros(pred.digits) === stripZeros(compact(gold.latex));
            // One value written several ways ("15\frac{39}{40}, or \frac{639}{40}") is still that value.
            if (pred.kind === "list" && pred.items.length > 0 && pred.braces !== "set") return pred.items.every((i) => valuesEqual(i, gold, budget));
            if (pred.kind === "tuple" || pred.kind === "list" || pred.kind === "union" || pred.kind === "matrix" || pred.kind === "ratio") return false;
            // (a relation that states no value, such as `a < b > c`, is only itself: no match)
            return finalValues(pred).some((v) => v !== pred && valuesEqual(v, gold, budget));
        }
    }
}

/** The values a prediction states: `x = v` gives v; a chain `a = b ≈ c` gives c (and b, before ≈). */
function finalValues(pred: AnswerValue): AnswerValue[] {
    if (pred.kind === "assign") return [pred.value, ...pred.also];
    if (pred.kind === "relation" && pred.ops.every((o) => o === "=" || o === "\\approx")) {
        const out = [parseAnswer(pred.sides[pred.sides.length - 1]!)];
        for (let k = 0; k < pred.ops.length; k++) if (pred.ops[k] === "\\approx") out.push(parseAnswer(pred.sides[k]!));
        return out;
    }
    return [pred];
}

function relationOf(v: AnswerValue): Relation | null {
    if (v.kind === "relation") return v;
    if (v.kind === "assign") return v.relation;
    return null;
}

function ordered(a: AnswerValue[], b: AnswerValue[], budget: Budget): boolean {
    return a.length === b.length && a.every((x, i) => valuesEqual(x, b[i]!, budget));
}

/** Set equality: every item of each side matches some item of the other (duplicates collapse). */
function unordered(a: AnswerValue[], b: AnswerValue[], budget: Budget): boolean {
    if (a.length === 0 || b.length === 0) return a.length === b.length;
    return a.every((x) => b.some((y) => valuesEqual(x, y, budget))) && b.every((y) => a.some((x) => valuesEqual(x, y, budget)));
}

function vectorEntries(m: AnswerValue): AnswerValue[] | null {
    if (m.kind !== "matrix") return null;
    if (m.rows.every((r) => r.length === 1)) return m.rows.map((r) => r[0]!);
    if (m.rows.length === 1) return m.rows[0]!;
    return null;
}

function stripZeros(digits: string): string {
    return digits.replace(/^0+(?=.)/, "");
}

function textKey(s: string): string {
    return s.normalize("NFKC").toLowerCase().replace(/\\text\{([^{}]*)\}/g, "$1").replace(/[^\p{L}\p{N}]+/gu, "");
}

function isConstant(latex: string): boolean {
    const node = parseLatex(latex);
    return node != null && freeSymbols(node).size === 0;
}

// ---- intervals ----

function asInterval(v: AnswerValue): Interval | null {
    if (v.kind === "tuple" && v.items.length === 2 && v.sides != null)
        return {lo: v.sides[0]!, hi: v.sides[1]!, loClosed: v.open === "[", hiClosed: v.close === "]"};
    if (v.kind === "relation") return relationInterval(v);
    if (v.kind === "assign" && v.value.kind === "tuple") return asInterval(v.value);
    return null;
}

/** `a < x ≤ b`, `x ≥ 5`, `5 > x`: the interval of x, when one side is a name and the others constants. */
function relationInterval(rel: Relation): Interval | null {
    const {sides, ops} = rel;
    const less = (o: string) => o === "<" || o === "\\le";
    const greater = (o: string) => o === ">" || o === "\\ge";
    const closed = (o: string) => o === "\\le" || o === "\\ge";
    if (sides.length === 3 && isNameLike(sides[1]!) && isConstant(sides[0]!) && isConstant(sides[2]!)) {
        if (less(ops[0]!) && less(ops[1]!)) return {lo: sides[0]!, hi: sides[2]!, loClosed: closed(ops[0]!), hiClosed: closed(ops[1]!)};
        if (greater(ops[0]!) && greater(ops[1]!)) return {lo: sides[2]!, hi: sides[0]!, loClosed: closed(ops[1]!), hiClosed: closed(ops[0]!)};
        return null;
    }
    if (sides.length !== 2) return null;
    const op = ops[0]!;
    if (!less(op) && !greater(op)) return null;
    let [name, bound] = sides as [string, string];
    let nameLess = less(op); // name < bound
    if (!isNameLike(name) || !isConstant(bound)) {
        if (!isNameLike(bound) || !isConstant(name)) return null;
        [name, bound] = [bound, name];
        nameLess = !nameLess;
    }
    return nameLess ? {lo: "-\\infty", hi: bound, loClosed: false, hiClosed: closed(op)}
        : {lo: bound, hi: "\\infty", loClosed: closed(op), hiClosed: false};
}

function intervalEqual(a: Interval, b: Interval, budget: Budget): boolean {
    return a.loClosed === b.loClosed && a.hiClosed === b.hiClosed && scalarEqual(a.lo, b.lo, budget) && scalarEqual(a.hi, b.hi, budget);
}

/** A union of intervals and finite sets, as its intervals (unordered) and its points. */
function unionParts(v: AnswerValue): {intervals: Interval[], points: AnswerValue[]} | null {
    const parts = v.kind === "union" ? v.parts : [v];
    const intervals: Interval[] = [];
    const points: AnswerValue[] = [];
    for (const p of parts) {
        if (p.kind === "list") {
            // `x < 1 or x > 2` lists relations: those are intervals.
            for (const item of p.items) {
                const i = item.kind === "relation" ? relationInterval(item) : null;
                if (i != null) intervals.push(i);
                else points.push(item);
            }
        } else {
            const i = asInterval(p);
            if (i == null) return null;
            intervals.push(i);
        }
    }
    return {intervals, points};
}

function unionEqual(pred: AnswerValue, gold: AnswerValue, budget: Budget): boolean {
    const a = unionParts(pred);
    const b = unionParts(gold);
    if (a == null || b == null || a.intervals.length !== b.intervals.length) return false;
    if (!unordered(a.points, b.points, budget)) return false;
    const used = new Set<number>();
    return a.intervals.every((x) => {
        const k = b.intervals.findIndex((y, j) => !used.has(j) && intervalEqual(x, y, budget));
        if (k < 0) return false;
        used.add(k);
        return true;
    });
}

// ---- equations and inequalities ----

type Normal = {kind: "=" | "<" | "\\le" | "\\ne", f: string};

/** `L op R` as `f kind 0`, with f = L - R (or R - L for > and ≥). */
function normalForm(rel: Relation): Normal | null {
    if (rel.sides.length !== 2) return null;
    const [l, r] = rel.sides as [string, string];
    const op = rel.ops[0]!;
    const diff = (a: string, b: string) => `(${a})-(${b})`;
    switch (op) {
        case "=": case "\\approx": return {kind: "=", f: diff(l, r)};
        case "\\ne": return {kind: "\\ne", f: diff(l, r)};
        case "<": case "\\le": return {kind: op, f: diff(l, r)};
        case ">": return {kind: "<", f: diff(r, l)};
        case "\\ge": return {kind: "\\le", f: diff(r, l)};
        default: return null;
    }
}

function relationEqual(pred: Relation, gold: Relation, budget: Budget): boolean {
    const pi = relationInterval(pred);
    const gi = relationInterval(gold);
    if (pi != null && gi != null) return intervalEqual(pi, gi, budget);
    const pn = normalForm(pred);
    const gn = normalForm(gold);
    if (pn != null && gn != null) {
        if (pn.kind !== gn.kind) return false;
        const ratio = constantRatio(pn.f, gn.f, budget);
        if (ratio != null) return pn.kind === "=" || pn.kind === "\\ne" ? ratio !== 0 : ratio > 0;
    }
    if (pred.ops.length !== gold.ops.length || pred.ops.some((o, i) => o !== gold.ops[i])) return false;
    return pred.sides.every((s, i) => scalarEqual(s, gold.sides[i]!, budget));
}

/**
 * When f/g is the same constant at every sample point, its sign (+1/-1); 0 when it is not
 * constant; null when it cannot be told (no free symbols, or not computable).
 */
function constantRatio(f: string, g: string, budget: Budget): number | null {
    const nf = parseLatex(f);
    const ng = parseLatex(g);
    if (nf == null || ng == null) return null;
    if (freeSymbols(nf).size === 0 && freeSymbols(ng).size === 0) return null;
    const D = decimalField(50);
    let first: {exact: ReturnType<typeof qDiv>, approx: Decimal | null} | null = null;
    let valid = 0;
    for (const point of POINTS) {
        const ef = evaluateNode(nf, exactField, point, budget);
        const eg = evaluateNode(ng, exactField, point, budget);
        if (ef != null && eg != null && ef.im.n === 0n && eg.im.n === 0n) {
            if (eg.re.n === 0n) {
                if (ef.re.n !== 0n) return 0;
                continue;
            }
            const r = qDiv(ef.re, eg.re)!;
            if (first == null) first = {exact: r, approx: null};
            else if (first.exact == null || !qEq(first.exact, r)) return 0;
            valid++;
            continue;
        }
        const df = evaluateNode<Decimal>(nf, D, point, budget);
        const dg = evaluateNode<Decimal>(ng, D, point, budget);
        if (df == null || dg == null || dg.isZero()) continue;
        const r = df.div(dg);
        if (first == null) first = {exact: null, approx: r};
        else {
            const ref = first.approx ?? D.fromQ(first.exact!)!;
            if (r.sub(ref).abs().gt(ref.abs().mul("1e-30"))) return 0;
        }
        valid++;
    }
    if (first == null || valid < 2) return null;
    const sign = first.exact != null ? Number(first.exact.n > 0n) - Number(first.exact.n < 0n) : first.approx!.s;
    return sign;
}
