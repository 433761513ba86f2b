// The structure of a normalised answer: lists, sets, tuples and intervals, unions,
// relations and assignments (`x = 3`), matrices, ratios, base-n numerals, text, and
// plain expressions (compared by scalarEqual).
import {isWrapped, splitAtTokens, splitTopLevel} from "./latexScan.js";

export type AnswerValue =
    | {kind: "expr", latex: string}
    | {kind: "text", text: string}
    | {kind: "base", digits: string, base: number}
    /** `(a, b)`, `[a, b)`, …: a tuple, or an interval when compared with one. */
    | {kind: "tuple", items: AnswerValue[], open: string, close: string, sides?: string[]}
    /** `bare`: a comma list or `{…}` group; `set`: `\{…\}`; `pm`: the two values of `a \pm b`. */
    | {kind: "list", items: AnswerValue[], braces: "bare" | "set" | "pm"}
    | {kind: "union", parts: AnswerValue[]}
    | {kind: "relation", sides: string[], ops: string[]}
    /** `name = value` (also `name ≈ value`); `also` holds values before a `≈` in a chain. */
    | {kind: "assign", name: string, value: AnswerValue, also: AnswerValue[], relation: {sides: string[], ops: string[]}}
    | {kind: "matrix", rows: AnswerValue[][]}
    | {kind: "ratio", items: AnswerValue[]};

const RELATIONS = ["=", "<", ">", "\\le", "\\ge", "\\ne", "\\approx", "\\equiv", "\\simeq", "\\cong"];
const MATRIX_ENV = /^\\begin\{(p|b|B|v|V|small)?matrix\}([\s\S]*)\\end\{\1?matrix\}$|^\\begin\{array\}(?:\{[^{}]*\})?([\s\S]*)\\end\{array\}$/;
const FUNCTION_WORDS = new Set(["sin", "cos", "tan", "sec", "csc", "cot", "log", "ln", "exp", "sqrt", "lim", "max", "min", "gcd", "lcm", "mod", "det", "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh", "frac", "pi"]);

const MAX_DEPTH = 12;

/** Parses a normalised answer string into its structure. */
export function parseAnswer(s: string, depth = 0): AnswerValue {
    s = s.trim();
    if (depth > MAX_DEPTH) return {kind: "expr", latex: s};
    if (/^(?:\\emptyset|\\\{\s*\\\}|\{\s*\})$/.test(s)) return {kind: "list", items: [], braces: "set"};

    // Conjunction words between math (`1 and 2`, `(7,11) or (11,7)`) separate items.
    if (/[\d\\]/.test(s)) s = s.replace(/(?<![A-Za-z\\])(?:and|or)(?![A-Za-z])/g, ",");

    const semi = splitAtTokens(s, [";"]).parts.map((p) => p.trim()).filter((p) => p !== "");
    if (semi.length > 1) return {kind: "list", items: flatten(semi.map((p) => parseAnswer(p, depth + 1))), braces: "bare"};

    const commas = splitAtTokens(s, [","]).parts.map((p) => p.trim()).filter((p) => p !== "");
    if (commas.length > 1) return listOf(commas.map((p) => parseItem(p, depth + 1)));
    return parseItem(commas[0] ?? s, depth);
}

/** A comma list: assignments to distinct names form a tuple (`p=5, q=2` is (5, 2)). */
function listOf(items: AnswerValue[]): AnswerValue {
    const first = items[0];
    const assigns = items.filter((i) => i.kind === "assign");
    if (first?.kind === "assign" && assigns.length === 1)
        return {...first, value: {kind: "list", items: flatten([first.value, ...items.slice(1)]), braces: "bare"}};
    if (assigns.length === items.length && items.length > 1) {
        const names = new Set(assigns.map((a) => a.kind === "assign" ? a.name : ""));
        const values = assigns.map((a) => (a.kind === "assign" ? a.value : a));
        if (names.size === items.length) return {kind: "tuple", items: values, open: "(", close: ")"};
        return {kind: "list", items: flatten(values), braces: "bare"};
    }
    return {kind: "list", items: flatten(items), braces: "bare"};
}

/** `\pm` lists inside a list contribute their two values. */
function flatten(items: AnswerValue[]): AnswerValue[] {
    return items.flatMap((i) => (i.kind === "list" && i.braces === "pm" ? i.items : [i]));
}

function parseItem(s: string, depth: number): AnswerValue {
    s = s.trim();
    if (depth > MAX_DEPTH) return {kind: "expr", latex: s};

    const pm = topLevelToken(s, ["\\pm", "\\mp"]);
    if (pm != null) {
        const plus = pm.text === "\\pm" ? "+" : "-";
        const minus = pm.text === "\\pm" ? "-" : "+";
        const a = s.slice(0, pm.start) + plus + s.slice(pm.end);
        const b = s.slice(0, pm.start) + minus + s.slice(pm.end);
        return {kind: "list", items: flatten([parseItem(a, depth + 1), parseItem(b, depth + 1)]), braces: "pm"};
    }

    const rel = splitAtTokens(s, RELATIONS);
    if (rel.parts.length > 1 && rel.parts.every((p) => p.trim() !== "")) {
        const sides = rel.parts.map((p) => p.trim());
        const ops = rel.seps;
        if (ops.every((o) => o === "=" || o === "\\approx") && isNameLike(sides[0]!)) {
            const also: AnswerValue[] = [];
            for (let k = 1; k < sides.length - 1; k++) if (ops[k] === "\\approx") also.push(parseItem(sides[k]!, depth + 1));
            return {kind: "assign", name: sides[0]!, value: parseAnswer(sides[sides.length - 1]!, depth + 1), also, relation: {sides, ops}};
        }
        return {kind: "relation", sides, ops};
    }

    const union = splitAtTokens(s, ["\\cup"]);
    if (union.parts.length > 1) return {kind: "union", parts: union.parts.map((p) => parseAnswer(p, depth + 1))};

    const matrices = matrixSum(s, depth);
    if (matrices != null) return matrices;
    const matrix = parseMatrix(s, depth);
    if (matrix != null) return matrix;

    if (isWrapped(s, "\\{", "\\}")) {
        const inner = s.slice(2, -2).trim();
        if (inner === "") return {kind: "list", items: [], braces: "set"};
        const items = splitAtTokens(inner, [",", ";"]).parts.map((p) => p.trim()).filter((p) => p !== "");
        return {kind: "list", items: flatten(items.map((p) => parseItem(p, depth + 1))), braces: "set"};
    }
    if (isWrapped(s, "{", "}")) return parseAnswer(s.slice(1, -1), depth + 1);
    const open = s[0];
    const close = s[s.length - 1];
    if ((open === "(" || open === "[") && (close === ")" || close === "]") && isWrapped(s, open, close)) {
        const inner = s.slice(1, -1);
        const parts = splitAtTokens(inner, [","]).parts.map((p) => p.trim());
        if (parts.length > 1 && parts.every((p) => p !== ""))
            return {kind: "tuple", items: parts.map((p) => parseItem(p, depth + 1)), open, close, sides: parts};
        if (open === "(" && close === ")") return parseItem(inner, depth + 1);
    }

    const ratio = splitAtTokens(s, [":"]);
    if (ratio.parts.length > 1 && ratio.parts.every((p) => p.trim() !== ""))
        return {kind: "ratio", items: ratio.parts.map((p) => parseItem(p, depth + 1))};

    const base = /^(\d+)\s*_\s*\{?\s*(\d+)\s*\}?$/.exec(s);
    if (base != null && Number(base[2]) >= 2 && Number(base[2]) <= 36) return {kind: "base", digits: base[1]!, base: Number(base[2])};

    if (isText(s)) return {kind: "text", text: s};
    return {kind: "expr", latex: s};
}

/** The first top-level occurrence of one of `names`. */
function topLevelToken(s: string, names: string[]): {text: string, start: number, end: number} | null {
    let found: {text: string, start: number, end: number} | null = null;
    splitTopLevel(s, (tokens, k) => {
        if (found == null && names.includes(tokens[k]!.text)) found = tokens[k]!;
        return 0;
    });
    return found;
}

function parseMatrix(s: string, depth: number): AnswerValue | null {
    let body = s.trim();
    if ((isWrapped(body, "[", "]") || isWrapped(body, "(", ")")) && /^[[(]\s*\\begin\{/.test(body)) body = body.slice(1, -1).trim();
    const m = MATRIX_ENV.exec(body);
    if (m == null) return null;
    const content = (m[2] ?? m[3] ?? "").trim();
    const rows = splitAtTokens(content, ["\\\\", "\\cr"]).parts.map((r) => r.trim()).filter((r) => r !== "" && !/^\\hline$/.test(r));
    if (rows.length === 0) return null;
    return {kind: "matrix", rows: rows.map((r) => splitAtTokens(r.replace(/\\hline/g, ""), ["&"]).parts.map((c) => parseAnswer(c, depth + 1)))};
}

/** `A + B` for two or more matrices of the same shape: entrywise, unevaluated. */
function matrixSum(s: string, depth: number): AnswerValue | null {
    if ((s.match(/\\begin\{/g) ?? []).length < 2) return null;
    const split = splitAtTokens(s, ["+", "-"]);
    if (split.parts.length < 2 || split.parts[0]!.trim() === "") return null;
    const mats = split.parts.map((p) => parseMatrix(p, depth));
    if (mats.some((m) => m == null || m.kind !== "matrix")) return null;
    const ms = mats as Extract<AnswerValue, {kind: "matrix"}>[];
    const shape = (m: typeof ms[number]) => m.rows.map((r) => r.length).join("x");
    if (ms.some((m) => shape(m) !== shape(ms[0]!))) return null;
    const rows = ms[0]!.rows.map((row, i) => row.map((_, j) => {
        const terms = ms.map((m, k) => {
            const cell = m.rows[i]![j]!;
            const latex = cell.kind === "expr" ? cell.latex : null;
            return latex == null ? null : `${k === 0 ? "" : split.seps[k - 1]}(${latex})`;
        });
        return terms.some((t) => t == null) ? {kind: "text", text: "?"} as AnswerValue : {kind: "expr", latex: terms.join("")} as AnswerValue;
    }));
    return {kind: "matrix", rows};
}

/** A name on the left of `=`: `x`, `x_1`, `f(x)`, `|AB|`, `(p,q)`, `S_{ABC}:S`, `\theta`, `m\angle A`. */
export function isNameLike(s: string): boolean {
    let t = s.replace(/\s+/g, "");
    t = t.replace(/_\{[^{}]*\}|_\\?[A-Za-z0-9]/g, "").replace(/\^\{?\\prime\}?|'/g, "");
    t = t.replace(/\\(?:overline|mathrm|mathit|mathbf|vec|hat|bar|widehat|overrightarrow)\{([^{}]*)\}/g, "$1").replace(/\\(?:angle|triangle|measuredangle)/g, "");
    if (t === "" || /\d/.test(t)) return false;
    if (!/^(?:[A-Za-z]|\\[A-Za-z]+|[|(),:])+$/.test(t)) return false;
    if (/^\\(?:pi|infty|emptyset)$/.test(t) || t === "e" || t === "i") return false;
    const words = t.match(/\\[A-Za-z]+/g) ?? [];
    return words.every((w) => !/^\\(?:sin|cos|tan|sec|csc|cot|log|ln|exp|sqrt|frac|infty|pi|cdot|times)$/.test(w));
}

/** Words rather than math: `Evelyn`, `odd`, `no solution`. */
function isText(s: string): boolean {
    if (/[\d\\^_=+*/<>]/.test(s)) return false;
    const words = s.match(/[A-Za-z]+/g) ?? [];
    if (words.length === 0) return false;
    if (!/^[\sA-Za-z.,'()!?-]+$/.test(s)) return false;
    return words.some((w) => (w.length >= 3 && !FUNCTION_WORDS.has(w.toLowerCase())) || /^(?:no|yes)$/i.test(w));
}
