// Text-level normalisation of one extracted answer, before its structure is parsed: math
// delimiters, spacing and sizing commands, \text units, degrees, percent, dollars,
// thousands separators, fraction and root shorthand, Unicode and plain-text math.
import {readArgument, replaceCommandGroups} from "./latexScan.js";

const UNICODE: [RegExp, string][] = [
    [/[\u2212\u2013\u2014\uFE63\uFF0D]/g, "-"],
    [/\u00D7/g, "\\times "],
    [/\u00F7/g, "\\div "],
    [/[\u00B7\u22C5]/g, "\\cdot "],
    [/\u03C0/g, "\\pi "],
    [/\u221E/g, "\\infty "],
    [/\u2264/g, "\\le "],
    [/\u2265/g, "\\ge "],
    [/\u2260/g, "\\ne "],
    [/\u00B1/g, "\\pm "],
    [/\u2213/g, "\\mp "],
    [/\u222A/g, "\\cup "],
    [/\u2229/g, "\\cap "],
    [/\u2208/g, "\\in "],
    [/\u2205/g, "\\emptyset "],
    [/\u2248/g, "\\approx "],
    [/\u221A\s*\(/g, "\\sqrt("],
    [/\u221A\s*(\d+|[a-zA-Z])/g, "\\sqrt{$1}"],
    [/\u00B0/g, "^\\circ "],
    [/\u00B2/g, "^2"],
    [/\u00B3/g, "^3"],
    [/\u00BD/g, "\\frac{1}{2}"],
    [/\u00BC/g, "\\frac{1}{4}"],
    [/\u00BE/g, "\\frac{3}{4}"],
    [/[\u20AC\u00A3\u00A5]/g, ""],
    [/[\u00A0\u2009\u202F\u2007]/g, " "],
    [/[\uFF08]/g, "("],
    [/[\uFF09]/g, ")"],
    [/[\uFF0C]/g, ","],
    [/\u3002/g, "."]
];

const TEXT_COMMANDS = ["text", "textbf", "textit", "textrm", "textnormal", "textsf", "texttt", "mbox", "hbox", "mathrm", "mathbf", "mathit", "mathsf", "mathtt", "mathnormal", "boldsymbol", "bm", "emph"];
const CONJUNCTION = /^\s*(?:,\s*)?(?:and|or)\s*$/i;
const WORDY = /^[\sA-Za-z.'-]*[A-Za-z]{2,}[\sA-Za-z.'-]*$/;

// Unit words dropped after a number. Short ones (m, g, s, …) only right after a digit.
const UNIT_WORDS = [
    "units?", "square units?", "sq units?", "cubic units?", "miles?", "meters?", "metres?", "kilometers?", "centimeters?", "millimeters?",
    "inches", "inch", "feet", "foot", "yards?", "degrees?", "cents?", "dollars?", "yuan", "euros?", "hours?", "minutes?", "seconds?",
    "days?", "weeks?", "months?", "years?", "grams?", "kilograms?", "pounds?", "ounces?", "liters?", "litres?", "mph", "km/h", "percent",
    "people", "students", "points?", "ways", "times", "steps?", "coins?", "marbles?", "apples?", "books?", "rows?", "sq\\.? ?(?:ft|in|cm|m)"
];
const UNIT_AFTER_WORD = new RegExp(`(?<=[\\d}\\s)])\\s*(?:${UNIT_WORDS.join("|")})(?![A-Za-z])(?:\\s*\\^\\s*\\{?[23]\\}?)?`, "gi");
const UNIT_SHORT = /(?<=\d)\s*(?:km|cm|mm|m|kg|mg|ml|ft|in|yd|lb|lbs|oz|hr|hrs|min)(?![A-Za-z])(?:\s*\^\s*\{?[23]\}?)?(?=\s*$|\s*[,;)\]])/g;

/** Known command names kept as they are, so a plain word such as `pi` is not mistaken for one. */
const PLAIN_FUNCTIONS = ["sqrt", "exp", "sin", "cos", "tan", "sec", "csc", "cot", "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh", "ln", "log"];

const SUPERSCRIPTS = "⁰¹²³⁴⁵⁶⁷⁸⁹";

/** Normalises one extracted answer (LaTeX or plain text) to a canonical LaTeX-ish string. */
export function normalizeAnswer(raw: string): string {
    let s = raw.replace(/[⁻]?[⁰¹²³⁴⁵⁶⁷⁸⁹]+/g, (m) => `^{${[...m].map((c) => (c === "⁻" ? "-" : String(SUPERSCRIPTS.indexOf(c)))).join("")}}`);
    for (const [re, rep] of UNICODE) s = s.replace(re, rep);
    s = s.replace(/(^|[\s(:])\*\*(\S[^*]*?\S|\S)\*\*(?=$|[\s.,;:!?)])/g, "$1$2").replace(/(^|\s)__(\S[^_]*?)__(?=\s|$)/g, "$1$2").replace(/`/g, "");
    // Upstream data sometimes doubles the backslash of a command (`\\frac`).
    s = s.replace(/(?<!\\)\\\\(?=(?:[dtc]?frac|sqrt|pi|boxed|text|left|right|cdot|times|infty|circ)(?![a-zA-Z]))/g, "\\");
    s = unbox(s);
    s = stripMathDelimiters(s);
    s = s.replace(/\\(?:left|right)\s*\.(?!\d)/g, "").replace(/\\(?:left|right|bigl|bigr|Bigl|Bigr|biggl|biggr|Biggl|Biggr|big|Big|bigg|Bigg)(?![a-zA-Z])/g, "");
    s = s.replace(/\\(?:displaystyle|textstyle|scriptstyle|limits|nolimits)(?![a-zA-Z])/g, "");
    s = replaceCommandGroups(s, ["hspace", "vspace", "phantom", "hphantom", "vphantom"], () => " ");
    s = s.replace(/\\pmod\s*\{[^{}]*\}/g, "").replace(/\\(?:bmod|mod)(?![a-zA-Z])/g, "\\bmod ");
    s = s.replace(/(\d)\s*,\\!\s*(?=\d{3}(?!\d))/g, "$1").replace(/(\d)\{,\}(?=\d{3}(?!\d))/g, "$1");
    s = s.replace(/\\qquad|\\quad/g, " ").replace(/\\\\|\\[!,:; >]/g, (m) => (m === "\\\\" ? m : " ")).replace(/~/g, " ");
    s = s.replace(/\\[dtc]frac(?![a-zA-Z])/g, "\\frac").replace(/\\[dt]binom(?![a-zA-Z])/g, "\\binom");
    s = s.replace(/\\(?:leqslant|leq)(?![a-zA-Z])/g, "\\le").replace(/\\(?:geqslant|geq)(?![a-zA-Z])/g, "\\ge")
        .replace(/\\neq(?![a-zA-Z])/g, "\\ne").replace(/\\lt(?![a-zA-Z])/g, "<").replace(/\\gt(?![a-zA-Z])/g, ">")
        .replace(/>=/g, "\\ge ").replace(/<=/g, "\\le ").replace(/!=/g, "\\ne ").replace(/&lt;/g, "<").replace(/&gt;/g, ">")
        .replace(/\\(?:varnothing)(?![a-zA-Z])/g, "\\emptyset").replace(/\\langle(?![a-zA-Z])|\u27E8/g, "(").replace(/\\rangle(?![a-zA-Z])|\u27E9/g, ")").replace(/\\(?:dots|ldots|cdots)(?![a-zA-Z])/g, "\\ldots");
    s = normalizeText(s);
    s = s.replace(/\\degree(?![a-zA-Z])/g, "^\\circ");
    if (!/\\(?:sin|cos|tan|sec|csc|cot)(?![a-zA-Z])/.test(s)) s = s.replace(/\^\s*\{?\s*\\circ\s*\}?/g, "").replace(/\\circ(?![a-zA-Z])/g, "");
    s = s.replace(/\\%|%/g, "").replace(/\\\$/g, "").replace(/\$/g, "");
    s = s.replace(UNIT_AFTER_WORD, "").replace(UNIT_SHORT, "");
    s = plainMath(s);
    s = braceArguments(s);
    s = s.replace(/\\binom\s*\{([^{}]*)\}\s*\{([^{}]*)\}/g, "\\operatorname{binom}($1,$2)");
    s = s.replace(/\\(gcd|lcm)(?![a-zA-Z])/g, "\\operatorname{$1}");
    s = s.replace(/(^|[^\d.])\.(\d)/g, "$10.$2");
    s = mixedNumbers(s);
    // Single-character subscripts braced, so `F_k F_{n-k}` is two factors.
    s = s.replace(/_\s*([A-Za-z0-9])/g, "_{$1}");
    s = s.replace(/\s+/g, " ").trim();
    s = s.replace(/^(?:[a-zA-Z]|\\[a-zA-Z]+)\s*\\in(?![a-zA-Z])\s*/, "").replace(/^(?:=|\\approx|\\sim|\\simeq)\s*/, "");
    s = trailingWords(s);
    s = s.replace(/^[:\s]+/, "").replace(/[\s.,;:]+$/, "").replace(/\\\s*$/, "").trim();
    s = thousands(s);
    s = s.replace(/^\+(?=\s*\d)/, "").replace(/(^|[([,]\s*)\+\s*\\infty/g, "$1\\infty");
    return s;
}

/** Replaces `\boxed{X}` and `\fbox{X}` by X (and `\boxed X` by X). */
export function unbox(s: string): string {
    let out = replaceCommandGroups(s, ["boxed", "fbox", "framebox"], (c) => unbox(c));
    out = out.replace(/\\boxed\s+([^\s$]+)/g, "$1");
    return out;
}

/** Removes `$`, `$$`, `\(`, `\)`, `\[`, `\]` (but not the escaped dollar `\$`). */
export function stripMathDelimiters(s: string): string {
    return s.replace(/\\\(|\\\)|\\\[|\\\]/g, " ").replace(/(?<!\\)\$/g, " ");
}

/** `\text{…}` and friends: conjunctions become commas, units go when there is math beside them, words stay. */
function normalizeText(s: string): string {
    const groups: string[] = [];
    const marked = replaceCommandGroups(s, TEXT_COMMANDS, (content) => {
        groups.push(normalizeText(content));
        return `\u0000${groups.length - 1}\u0000`;
    });
    if (groups.length === 0) return s;
    const rest = marked.replace(/\u0000\d+\u0000(?:\s*\^\s*\{?\s*[23]\s*\}?)?/g, "").replace(/[\s.,;:]/g, "");
    const hasMath = rest.length > 0;
    return marked.replace(/\u0000(\d+)\u0000(\s*\^\s*\{?\s*[23]\s*\}?)?/g, (_m, k: string, power: string | undefined) => {
        const content = groups[Number(k)] ?? "";
        if (CONJUNCTION.test(content)) return ",";
        if (hasMath && WORDY.test(content)) return " ";
        return ` ${content.trim()}${power ?? ""} `;
    });
}

/** Plain-text math as models write it (`pi/2`, `sqrt(2)`, `exp(16)`, `x**2`, `3*x`) in LaTeX. */
function plainMath(s: string): string {
    let out = s.replace(/(?<![\\a-zA-Z])(?:pi)(?![a-zA-Z])/g, "\\pi ")
        .replace(/(?<![\\a-zA-Z])(?:infinity|inf|oo)(?![a-zA-Z])/g, "\\infty ");
    for (const name of PLAIN_FUNCTIONS) out = out.replace(new RegExp(`(?<![\\\\a-zA-Z])${name}(?=\\s*\\()`, "g"), `\\${name}`);
    out = out.replace(/(?<=[\w)}])\s*\*\*\s*(?=[\w({\\-])/g, "^").replace(/(?<=[\w)}.])\s*\*\s*(?=[\w({\\.-])/g, " \\cdot ");
    // `\sqrt(x)` -> `\sqrt{x}`
    out = out.replace(/\\sqrt\s+\(/g, "\\sqrt(");
    let k = out.indexOf("\\sqrt(");
    while (k >= 0) {
        const open = k + 5;
        let depth = 0;
        let close = -1;
        for (let i = open; i < out.length; i++) {
            if (out[i] === "(") depth++;
            else if (out[i] === ")" && --depth === 0) {
                close = i;
                break;
            }
        }
        if (close < 0) break;
        out = `${out.slice(0, open)}{${out.slice(open + 1, close)}}${out.slice(close + 1)}`;
        k = out.indexOf("\\sqrt(", open);
    }
    return out;
}

/** `\frac12`, `\fracab`, `\frac1{72}`, `\sqrt3`, `\sqrta` -> fully braced forms. */
function braceArguments(s: string): string {
    let out = s.replace(/\\(frac|sqrt)([a-zA-Z0-9])/g, "\\$1 $2");
    const re = /\\(frac|sqrt)(?![a-zA-Z])/g;
    let result = "";
    let last = 0;
    for (let m = re.exec(out); m != null; m = re.exec(out)) {
        let i = m.index + m[0].length;
        let head = `\\${m[1]}`;
        if (m[1] === "sqrt") {
            while (out[i] === " ") i++;
            if (out[i] === "[") {
                const close = out.indexOf("]", i);
                if (close < 0) continue;
                head += out.slice(i, close + 1);
                i = close + 1;
            }
        }
        const count = m[1] === "frac" ? 2 : 1;
        const args: string[] = [];
        let end = i;
        for (let a = 0; a < count; a++) {
            const r = readArgument(out, end);
            if (r == null) break;
            args.push(r.arg);
            end = r.end;
        }
        if (args.length !== count) continue;
        result += out.slice(last, m.index) + head + args.map((a) => `{${a}}`).join("");
        last = end;
        re.lastIndex = end;
    }
    out = result + out.slice(last);
    return out;
}

/** Thousands separators in a whole-answer number: `7,425,000`, `1 000`, `1,000.99`. */
function thousands(s: string): string {
    if (/^[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$/.test(s)) return s.replace(/,/g, "");
    if (/^[-+]?\d{1,3}(?: \d{3})+(?:\.\d+)?$/.test(s)) return s.replace(/ /g, "");
    return s;
}

/** Mixed numbers: `1\frac{1}{2}`, `-3 \frac{1}{2}`, `7 3/4` (a proper fraction after a whole number). */
function mixedNumbers(s: string): string {
    const mixed = (sign: string, whole: string, num: string, den: string, m: string) => {
        const n = BigInt(num);
        const d = BigInt(den);
        if (d === 0n || n >= d) return m;
        return `${sign}\\frac{${BigInt(whole) * d + n}}{${d}}`;
    };
    return s
        .replace(/(?<=^|[\s(,=])(-?)(\d+)\s*\\frac\{(\d+)\}\{(\d+)\}(?=$|[\s),;])/g, (m, sign: string, w: string, n: string, d: string) => mixed(sign, w, n, d, m))
        .replace(/(?<=^|[\s(,=])(-?)(\d+)\s+(\d+)\/(\d+)(?=$|[\s),;])/g, (m, sign: string, w: string, n: string, d: string) => mixed(sign, w, n, d, m));
}

const MATH_WORDS = new Set(["and", "or", "sin", "cos", "tan", "sec", "csc", "cot", "log", "ln", "exp", "sqrt", "pi", "mod", "max", "min", "gcd", "lcm", "det"]);

/** Words after a number at the end (`12 eggs`, `5 square meters`) are a unit or a noun: dropped. */
function trailingWords(s: string): string {
    const m = /^(.*[\d})])\s+((?:[A-Za-z]{2,}[\s-]*){1,3})$/.exec(s);
    if (m == null || !/\d/.test(m[1]!)) return s;
    const words = m[2]!.trim().split(/[\s-]+/);
    if (words.some((w) => MATH_WORDS.has(w.toLowerCase()))) return s;
    return m[1]!.trim();
}
