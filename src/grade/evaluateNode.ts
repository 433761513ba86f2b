// Evaluates a MathJSON tree (from parseLatex) in one of the number fields. Free symbols
// take values from `point`: a deterministic pseudo-random rational per symbol name, so
// both sides of a comparison see the same values. Unknown or unsupported forms give null.
import type {MathNode} from "./parseLatex.js";
import {exactField, q, qFromDecimal, TooLarge, type Field, type Q} from "./numberFields.js";

/** Raised when one evaluation exceeds its work or time budget. */
export class BudgetExceeded extends Error {
    override name = "BudgetExceeded";
}

export type Budget = {ops: number, deadline: number};

export function makeBudget(ms: number, ops = 200_000): Budget {
    return {ops, deadline: performance.now() + ms};
}

function spend(budget: Budget) {
    if (--budget.ops < 0 || ((budget.ops & 255) === 0 && performance.now() > budget.deadline)) throw new BudgetExceeded("evaluation budget exceeded");
}

const SYMBOL_CONSTANTS: Record<string, "pi" | "e" | "i"> = {
    Pi: "pi", pi: "pi", ExponentialE: "e", e: "e", ImaginaryUnit: "i", i: "i", I: "i"
};

const FUNCTIONS: Record<string, string> = {
    Exp: "exp", exp: "exp", Ln: "ln", ln: "ln", Lb: "log2", Lg: "log10",
    Sin: "sin", Cos: "cos", Tan: "tan", Sec: "sec", Csc: "csc", Cot: "cot",
    Arcsin: "arcsin", Arccos: "arccos", Arctan: "arctan", Arcsec: "arcsec", Arccsc: "arccsc", Arccot: "arccot",
    Sinh: "sinh", Cosh: "cosh", Tanh: "tanh",
    Abs: "abs", Floor: "floor", Ceil: "ceil", Ceiling: "ceil", Round: "round", Sign: "sign",
    Factorial: "factorial", Factorial2: "factorial2", Binomial: "binom", binom: "binom", Choose: "binom",
    GCD: "gcd", gcd: "gcd", LCM: "lcm", lcm: "lcm", Mod: "mod", Max: "max", Min: "min", max: "max", min: "min"
};

const INVERSE: Record<string, string> = {Sin: "arcsin", Cos: "arccos", Tan: "arctan", Sec: "arcsec", Csc: "arccsc", Cot: "arccot"};

/** One assignment of the free symbols: a seed and a range for the pseudo-random values (integers when `integer`). */
export type Point = {seed: number, lo: number, hi: number, integer?: boolean};

/** The value a free symbol (or indexed symbol such as `F_3`) takes at `point`: a rational p/97. */
export function symbolValue(key: string, point: Point): Q {
    let h = 2166136261 ^ point.seed;
    for (let k = 0; k < key.length; k++) h = Math.imul(h ^ key.charCodeAt(k), 16777619);
    h = Math.imul(h ^ (h >>> 15), 2246822507);
    h ^= h >>> 13;
    const u = (h >>> 0) / 2 ** 32;
    if (point.integer === true) return q(BigInt(Math.floor(point.lo + (point.hi - point.lo + 1) * u)));
    const den = 97;
    const num = Math.round((point.lo + (point.hi - point.lo) * u) * den);
    return q(BigInt(num === 0 ? 1 : num), BigInt(den));
}

/** Bound variables (of sums and products) in the current field and as exact values. */
type Scope = {point: Point, bound: Map<string, unknown>, exact: Map<string, Q>, budget: Budget};

/** Evaluates `node`; null when it is not a number in this field (or not computable). */
export function evaluateNode<T>(node: MathNode, field: Field<T>, point: Point, budget: Budget): T | null {
    return ev(node, field, {point, bound: new Map(), exact: new Map(), budget});
}

/** The node's exact rational value in scope `s` (bound variables included), or null. */
function exactIn(node: MathNode, s: Scope): Q | null {
    const bound = new Map<string, unknown>();
    for (const [k, v] of s.exact) bound.set(k, {re: v, im: {n: 0n, d: 1n}});
    const v = ev(node, exactField, {point: s.point, bound, exact: s.exact, budget: s.budget});
    return v != null && v.im.n === 0n ? v.re : null;
}

function symbolName(node: MathNode): string | null {
    if (typeof node === "string") return node.startsWith("'") ? null : node;
    if (!Array.isArray(node) && typeof node === "object" && "sym" in node) return node.sym;
    return null;
}

function numberText(node: MathNode): string | null {
    if (typeof node === "number") return Number.isFinite(node) ? String(node) : null;
    if (!Array.isArray(node) && typeof node === "object" && "num" in node) return node.num.replace(/n$/, "");
    return null;
}

function ev<T>(node: MathNode, f: Field<T>, s: Scope): T | null {
    spend(s.budget);
    const text = numberText(node);
    if (text != null) {
        const value = qFromDecimal(text);
        return value == null ? null : f.fromQ(value);
    }
    const name = symbolName(node);
    if (name != null) {
        if (s.bound.has(name)) return s.bound.get(name) as T;
        const constant = SYMBOL_CONSTANTS[name];
        if (constant != null) return f.constant(constant);
        if (/^(?:PositiveInfinity|NegativeInfinity|ComplexInfinity|NaN|Nothing|Half)$/.test(name)) return name === "Half" ? f.fromQ(q(1n, 2n)) : null;
        return f.fromQ(symbolValue(name, s.point));
    }
    if (!Array.isArray(node) || node.length === 0) return null;
    const head = node[0];
    const args = node.slice(1);
    if (typeof head !== "string") return null;
    const all = (): T[] | null => {
        const out: T[] = [];
        for (const a of args) {
            const v = ev(a, f, s);
            if (v == null) return null;
            out.push(v);
        }
        return out;
    };
    switch (head) {
        case "Add": return fold(all(), (a, b) => f.add(a, b));
        case "Subtract": {
            const v = all();
            if (v == null || v.length === 0) return null;
            return v.length === 1 ? f.neg(v[0]!) : fold(v, (a, b) => f.add(a, f.neg(b)));
        }
        case "Negate": {
            const v = args[0] == null ? null : ev(args[0], f, s);
            return v == null ? null : f.neg(v);
        }
        case "Multiply": return fold(all(), (a, b) => f.mul(a, b));
        case "InvisibleOperator": return invisible(args, f, s);
        case "Divide": case "Rational": {
            const v = all();
            if (v == null || v.length !== 2) return null;
            return f.div(v[0]!, v[1]!);
        }
        case "Power": return power(args[0], args[1], f, s);
        case "Sqrt": return args[0] == null ? null : root(args[0], q(2n), f, s);
        case "Root": {
            if (args[0] == null || args[1] == null) return null;
            const n = exactIn(args[1], s);
            return n == null || n.d !== 1n || n.n < 1n ? null : root(args[0], n, f, s);
        }
        case "Log": {
            const v = all();
            if (v == null || v.length === 0) return null;
            if (v.length === 1) return f.fn("log10", v);
            const num = f.fn("ln", [v[0]!]);
            const den = f.fn("ln", [v[1]!]);
            return num == null || den == null ? null : f.div(num, den);
        }
        case "Degrees": {
            const v = args[0] == null ? null : ev(args[0], f, s);
            const pi = f.constant("pi");
            if (v == null || pi == null) return null;
            const r = f.mul(v, pi);
            return r == null ? null : f.div(r, f.fromQ(q(180n))!);
        }
        case "Delimiter": case "Sequence": {
            const inner = head === "Delimiter" ? args.filter((a) => !(typeof a === "string" && a.startsWith("'"))) : args;
            if (inner.length !== 1) return null;
            const first = inner[0]!;
            if (Array.isArray(first) && first[0] === "Sequence" && first.length !== 2) return null;
            return ev(first, f, s);
        }
        case "Complex": {
            const v = all();
            const i = f.constant("i");
            if (v == null || v.length !== 2 || i == null) return null;
            const im = f.mul(v[1]!, i);
            return im == null ? null : f.add(v[0]!, im);
        }
        case "Sum": case "Product": return bigOperator(head, args, f, s);
        case "At": case "Subscript": return indexed(args, f, s);
        case "Apply": {
            const fn = args[0];
            if (Array.isArray(fn) && fn[0] === "InverseFunction" && typeof fn[1] === "string" && INVERSE[fn[1]] != null && args[1] != null) {
                const v = ev(args[1], f, s);
                return v == null ? null : f.fn(INVERSE[fn[1]]!, [v]);
            }
            return null;
        }
        default: {
            const fn = FUNCTIONS[head];
            if (fn == null) return null;
            const v = all();
            return v == null ? null : f.fn(fn, v);
        }
    }
}

function fold<T>(values: T[] | null, op: (a: T, b: T) => T | null): T | null {
    if (values == null || values.length === 0) return null;
    let acc: T | null = values[0]!;
    for (let k = 1; k < values.length && acc != null; k++) acc = op(acc, values[k]!);
    return acc;
}

/** Juxtaposition: a product, except `f(x)`-style application of a known function. */
function invisible<T>(args: MathNode[], f: Field<T>, s: Scope): T | null {
    const values: T[] = [];
    for (let k = 0; k < args.length; k++) {
        const a = args[k]!;
        if (Array.isArray(a) && a[0] === "HorizontalSpacing") continue;
        const name = symbolName(a);
        const fn = name == null ? undefined : FUNCTIONS[name];
        const next = args[k + 1];
        if (fn != null && next != null) {
            const inner = Array.isArray(next) && next[0] === "Delimiter" ? next[1] : next;
            const parts = Array.isArray(inner) && inner[0] === "Sequence" ? inner.slice(1) : [inner!];
            const vs: T[] = [];
            for (const p of parts) {
                const v = ev(p, f, s);
                if (v == null) return null;
                vs.push(v);
            }
            const r = f.fn(fn, vs);
            if (r == null) return null;
            values.push(r);
            k++;
            continue;
        }
        const v = ev(a, f, s);
        if (v == null) return null;
        values.push(v);
    }
    return fold(values, (a, b) => f.mul(a, b));
}

function power<T>(baseNode: MathNode | undefined, expNode: MathNode | undefined, f: Field<T>, s: Scope): T | null {
    if (baseNode == null || expNode == null) return null;
    const exact = exactIn(expNode, s);
    if (f.name === "exact") {
        if (exact == null) return null;
        const base = ev(baseNode, f, s);
        return base == null ? null : f.pow(base, f.fromQ(exact)!, exact);
    }
    const base = ev(baseNode, f, s);
    const e = ev(expNode, f, s);
    if (base == null || e == null) return null;
    // e^x through the field's exp, which is accurate for any x.
    if (symbolName(baseNode) === "ExponentialE" || symbolName(baseNode) === "e") return f.fn("exp", [e]);
    return f.pow(base, e, exact);
}

function root<T>(xNode: MathNode, n: Q, f: Field<T>, s: Scope): T | null {
    const x = ev(xNode, f, s);
    if (x == null) return null;
    const e = q(1n, n.n);
    const ev_ = f.fromQ(e);
    return ev_ == null ? null : f.pow(x, ev_, e);
}

const MAX_TERMS = 2000;

function bigOperator<T>(head: "Sum" | "Product", args: MathNode[], f: Field<T>, s: Scope): T | null {
    const [body, limits] = args;
    if (body == null || !Array.isArray(limits) || limits.length !== 4) return null;
    const variable = symbolName(limits[1]!);
    if (variable == null) return null;
    const lo = exactIn(limits[2]!, s);
    const hi = exactIn(limits[3]!, s);
    if (lo == null || hi == null || lo.d !== 1n || hi.d !== 1n) return null;
    if (hi.n - lo.n > BigInt(MAX_TERMS)) {
        if (f.name === "exact") throw new TooLarge("too many terms");
        return null;
    }
    let acc = f.fromQ(q(head === "Sum" ? 0n : 1n));
    const saved = s.bound.get(variable);
    const had = s.bound.has(variable);
    const savedExact = s.exact.get(variable);
    try {
        for (let k = lo.n; k <= hi.n && acc != null; k++) {
            s.bound.set(variable, f.fromQ(q(k)));
            s.exact.set(variable, q(k));
            const v = ev(body, f, s);
            if (v == null) return null;
            acc = head === "Sum" ? f.add(acc, v) : f.mul(acc, v);
        }
    } finally {
        if (had) s.bound.set(variable, saved);
        else s.bound.delete(variable);
        if (savedExact != null) s.exact.set(variable, savedExact);
        else s.exact.delete(variable);
    }
    return acc;
}

/** `x_1`, `F_{n-1}`: a free value keyed by the name and the index's exact value. */
function indexed<T>(args: MathNode[], f: Field<T>, s: Scope): T | null {
    const [base, ...index] = args;
    const name = base == null ? null : symbolName(base);
    if (name == null || index.length === 0) return null;
    const keys: string[] = [];
    for (const i of index) {
        const v = exactIn(i, s);
        keys.push(v != null ? `${v.n}/${v.d}` : JSON.stringify(i));
    }
    // Bound variables inside the index (F_k in a sum over k) make the key exact above.
    const key = `${name}_[${keys.join(",")}]`;
    return f.fromQ(symbolValue(key, s.point));
}

/** Names of the free symbols in `node` (indexed symbols by their base name). */
export function freeSymbols(node: MathNode, out = new Set<string>(), bound = new Set<string>()): Set<string> {
    const name = symbolName(node);
    if (name != null) {
        if (!bound.has(name) && SYMBOL_CONSTANTS[name] == null && !/^(?:PositiveInfinity|NegativeInfinity|ComplexInfinity|NaN|Nothing|Half)$/.test(name)) out.add(name);
        return out;
    }
    if (!Array.isArray(node) || node.length === 0) return out;
    const head = node[0];
    if (head === "Sum" || head === "Product") {
        const limits = node[2];
        const variable = Array.isArray(limits) && limits[1] != null ? symbolName(limits[1]) : null;
        const inner = new Set(bound);
        if (variable != null) inner.add(variable);
        if (node[1] != null) freeSymbols(node[1], out, inner);
        if (Array.isArray(limits)) for (const l of limits.slice(2)) freeSymbols(l, out, bound);
        return out;
    }
    const args = node.slice(1);
    for (let k = 0; k < args.length; k++) {
        const a = args[k]!;
        const n = symbolName(a);
        if (n != null && FUNCTIONS[n] != null && head === "InvisibleOperator") continue;
        freeSymbols(a, out, bound);
    }
    return out;
}
