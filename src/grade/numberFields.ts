// The number systems our evaluator computes in:
//  - exact: Gaussian rationals (BigInt numerator/denominator for the real and imaginary
//    parts); anything irrational returns null;
//  - decimal: real numbers with a chosen number of significant digits (decimal.js);
//  - complex: IEEE doubles with an imaginary part, the last resort for complex values.
import {createRequire} from "node:module";
import type {Decimal} from "decimal.js";

// decimal.js's ES module has only a default export while its types declare a named class;
// its CommonJS entry satisfies both.
const DecimalClass = createRequire(import.meta.url)("decimal.js") as typeof Decimal;

/** A rational number: d > 0, gcd(n, d) = 1. */
export type Q = {n: bigint, d: bigint};
/** A Gaussian rational re + im·i. */
export type QC = {re: Q, im: Q};
export type Complex = {re: number, im: number};

/** Largest exact integer (in bits) we build: beyond it a value is "not exactly computable". */
const MAX_BITS = 200_000;
export const MAX_FACTORIAL = 5000;

/**
 * Thrown by the exact field when a value is rational but too large to build. Such values
 * are not handed to the finite-precision fields, which could not tell them apart.
 */
export class TooLarge extends Error {
    override name = "TooLarge";
}

export interface Field<T> {
    readonly name: "exact" | "decimal" | "complex";
    fromQ(q: Q): T | null;
    add(a: T, b: T): T | null;
    mul(a: T, b: T): T | null;
    div(a: T, b: T): T | null;
    neg(a: T): T;
    /** `a^b`; `exact` is b as an exact rational when known (roots of negatives, integer powers). */
    pow(a: T, b: T, exact: Q | null): T | null;
    constant(name: "pi" | "e" | "i"): T | null;
    fn(name: string, args: T[]): T | null;
    /** The value as an exact integer, if it is one. */
    toInteger(a: T): bigint | null;
}

// ---- exact rationals ----

const Q0: Q = {n: 0n, d: 1n};
const Q1: Q = {n: 1n, d: 1n};

function gcd(a: bigint, b: bigint): bigint {
    if (a < 0n) a = -a;
    if (b < 0n) b = -b;
    while (b !== 0n) [a, b] = [b, a % b];
    return a;
}

function bits(n: bigint): number {
    return (n < 0n ? -n : n).toString(16).length * 4;
}

export function q(n: bigint, d: bigint = 1n): Q {
    if (d === 0n) throw new RangeError("zero denominator");
    if (d < 0n) {
        n = -n;
        d = -d;
    }
    const g = gcd(n, d);
    return g === 1n ? {n, d} : {n: n / g, d: d / g};
}

export const qAdd = (a: Q, b: Q): Q => (a.d === b.d ? q(a.n + b.n, a.d) : q(a.n * b.d + b.n * a.d, a.d * b.d));
export const qSub = (a: Q, b: Q): Q => qAdd(a, {n: -b.n, d: b.d});
export const qMul = (a: Q, b: Q): Q => q(a.n * b.n, a.d * b.d);
export const qEq = (a: Q, b: Q): boolean => a.n === b.n && a.d === b.d;

export function qDiv(a: Q, b: Q): Q | null {
    return b.n === 0n ? null : q(a.n * b.d, a.d * b.n);
}

/** A decimal literal ("-12.5e-3", ".5") as an exact rational. */
export function qFromDecimal(text: string): Q | null {
    const m = /^([+-]?)(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d+))?$/.exec(text.trim());
    if (m == null || (m[2] === "" && (m[3] ?? "") === "")) return null;
    const frac = m[3] ?? "";
    let n = BigInt((m[2] || "0") + frac);
    let d = 10n ** BigInt(frac.length);
    const e = Number(m[4] ?? 0);
    if (Math.abs(e) > 2000) return null;
    if (e > 0) n *= 10n ** BigInt(e);
    else if (e < 0) d *= 10n ** BigInt(-e);
    return q(m[1] === "-" ? -n : n, d);
}

export function qToNumber(a: Q): number {
    const v = Number(a.n) / Number(a.d);
    if (Number.isFinite(v) && (v !== 0 || a.n === 0n)) return v;
    // Very large or very small: keep 64 significant bits and scale by a power of two.
    const k = bits(a.n) - bits(a.d) - 64;
    const num = k < 0 ? a.n << BigInt(-k) : a.n;
    const den = k > 0 ? a.d << BigInt(k) : a.d;
    return Number(num / den) * 2 ** k;
}

function qPowInt(a: Q, k: bigint): Q | null {
    if (k === 0n) return Q1;
    if (k < 0n) {
        const inv = qDiv(Q1, a);
        return inv == null ? null : qPowInt(inv, -k);
    }
    if (a.n === 0n || (a.d === 1n && (a.n === 1n || a.n === -1n))) return a.n === -1n && k % 2n === 1n ? a : a.n === -1n ? Q1 : a;
    if (Number(k) * Math.max(bits(a.n), bits(a.d)) > MAX_BITS) throw new TooLarge("power too large");
    return {n: a.n ** k, d: a.d ** k};
}

/** Exact integer k-th root of a non-negative integer, or null when it is not a perfect power. */
function intRoot(n: bigint, k: bigint): bigint | null {
    if (n < 0n) return null;
    if (n < 2n) return n;
    const kk = Number(k);
    let x = BigInt(Math.round(Math.pow(Number(n), 1 / kk)));
    if (!Number.isFinite(Math.pow(Number(n), 1 / kk))) {
        // Newton's method for huge values.
        x = 1n << BigInt(Math.ceil(bits(n) / kk));
        for (;;) {
            const y = ((k - 1n) * x + n / x ** (k - 1n)) / k;
            if (y >= x) break;
            x = y;
        }
    }
    for (const c of [x - 1n, x, x + 1n]) if (c >= 0n && c ** k === n) return c;
    return null;
}

/** a^(p/r) exactly when the result is rational (real a). */
function qPowRational(a: Q, e: Q): Q | null {
    if (e.d === 1n) return qPowInt(a, e.n);
    if (e.d > 64n) return null;
    let sign = 1n;
    let base = a;
    if (a.n < 0n) {
        if (e.d % 2n === 0n) return null;
        sign = -1n;
        base = {n: -a.n, d: a.d};
    }
    const rn = intRoot(base.n, e.d);
    const rd = intRoot(base.d, e.d);
    if (rn == null || rd == null) return null;
    const root = {n: sign * rn, d: rd};
    return qPowInt(root, e.n);
}

// ---- exact Gaussian rationals ----

const qc = (re: Q, im: Q = Q0): QC => ({re, im});
export const qcIsReal = (a: QC): boolean => a.im.n === 0n;
export const qcEq = (a: QC, b: QC): boolean => qEq(a.re, b.re) && qEq(a.im, b.im);

function factorial(n: bigint): bigint {
    let r = 1n;
    for (let i = 2n; i <= n; i++) r *= i;
    return r;
}

export const exactField: Field<QC> = {
    name: "exact",
    fromQ: (x) => qc(x),
    add: (a, b) => qc(qAdd(a.re, b.re), qAdd(a.im, b.im)),
    mul: (a, b) => (qcIsReal(a) && qcIsReal(b) ? qc(qMul(a.re, b.re))
        : qc(qSub(qMul(a.re, b.re), qMul(a.im, b.im)), qAdd(qMul(a.re, b.im), qMul(a.im, b.re)))),
    div(a, b) {
        if (qcIsReal(b)) {
            const re = qDiv(a.re, b.re);
            const im = qDiv(a.im, b.re);
            return re == null || im == null ? null : qc(re, im);
        }
        const den = qAdd(qMul(b.re, b.re), qMul(b.im, b.im));
        const re = qDiv(qAdd(qMul(a.re, b.re), qMul(a.im, b.im)), den);
        const im = qDiv(qSub(qMul(a.im, b.re), qMul(a.re, b.im)), den);
        return re == null || im == null ? null : qc(re, im);
    },
    neg: (a) => qc({n: -a.re.n, d: a.re.d}, {n: -a.im.n, d: a.im.d}),
    pow(a, _b, e) {
        if (e == null) return null;
        if (qcIsReal(a)) {
            if (a.re.n < 0n && e.d === 2n) {
                // sqrt of a negative rational: i·sqrt(|a|)
                const r = qPowRational({n: -a.re.n, d: a.re.d}, {n: 1n, d: 2n});
                if (r == null) return null;
                const p = qPowInt(r, e.n);
                if (p == null) return null;
                const k = ((e.n % 4n) + 4n) % 4n; // i^n
                return k === 0n ? qc(p) : k === 1n ? qc(Q0, p) : k === 2n ? qc({n: -p.n, d: p.d}) : qc(Q0, {n: -p.n, d: p.d});
            }
            const r = qPowRational(a.re, e);
            return r == null ? null : qc(r);
        }
        if (e.d !== 1n || (e.n < 0n ? -e.n : e.n) > 4096n) return null;
        let k = e.n < 0n ? -e.n : e.n;
        let base: QC | null = a;
        let acc: QC = qc(Q1);
        while (k > 0n && base != null) {
            if (k & 1n) acc = exactField.mul(acc, base)!;
            base = exactField.mul(base, base);
            k >>= 1n;
        }
        return e.n < 0n ? exactField.div(qc(Q1), acc) : acc;
    },
    constant: (name) => (name === "i" ? qc(Q0, Q1) : null),
    toInteger: (a) => (qcIsReal(a) && a.re.d === 1n ? a.re.n : null),
    fn(name, args) {
        const [x, y] = args;
        if (x == null || !args.every(qcIsReal)) return null;
        const r = x.re;
        switch (name) {
            case "abs": return qc(r.n < 0n ? {n: -r.n, d: r.d} : r);
            case "floor": return qc(q(floorDiv(r.n, r.d)));
            case "ceil": return qc(q(-floorDiv(-r.n, r.d)));
            case "round": return qc(q(floorDiv(2n * r.n + r.d, 2n * r.d)));
            case "sign": return qc(q(r.n > 0n ? 1n : r.n < 0n ? -1n : 0n));
            case "factorial":
                if (r.d !== 1n || r.n < 0n) return null;
                if (r.n > BigInt(MAX_FACTORIAL)) throw new TooLarge("factorial too large");
                return qc(q(factorial(r.n)));
            case "factorial2": {
                if (r.d !== 1n || r.n < -1n) return null;
                if (r.n > BigInt(MAX_FACTORIAL)) throw new TooLarge("factorial too large");
                let p = 1n;
                for (let i = r.n; i > 1n; i -= 2n) p *= i;
                return qc(q(p));
            }
            case "binom": {
                if (y == null || y.re.d !== 1n || y.re.n < 0n || y.re.n > 5000n) return null;
                let p: Q = Q1;
                for (let i = 0n; i < y.re.n; i++) p = qMul(p, q(r.n - i * r.d, r.d * (i + 1n)));
                return qc(p);
            }
            case "gcd": case "lcm": {
                if (!args.every((a) => a.re.d === 1n)) return null;
                let acc = args[0]!.re.n;
                for (const a of args.slice(1)) acc = name === "gcd" ? gcd(acc, a.re.n) : (acc === 0n || a.re.n === 0n ? 0n : (acc * a.re.n < 0n ? -(acc * a.re.n) : acc * a.re.n) / gcd(acc, a.re.n));
                return qc(q(acc < 0n ? -acc : acc));
            }
            case "mod": {
                if (y == null || r.d !== 1n || y.re.d !== 1n || y.re.n === 0n) return null;
                const m = y.re.n < 0n ? -y.re.n : y.re.n;
                return qc(q(((r.n % m) + m) % m));
            }
            case "max": case "min": {
                let best = r;
                for (const a of args.slice(1)) {
                    const c = qSub(a.re, best).n;
                    if ((name === "max" && c > 0n) || (name === "min" && c < 0n)) best = a.re;
                }
                return qc(best);
            }
            default: return null;
        }
    }
};

function floorDiv(n: bigint, d: bigint): bigint {
    const f = n / d;
    return (n % d !== 0n && (n < 0n) !== (d < 0n)) ? f - 1n : f;
}

// ---- high-precision reals ----

const decimalConstructors = new Map<number, typeof Decimal>();

export function decimalField(digits: number): Field<Decimal> {
    let D = decimalConstructors.get(digits);
    if (D == null) {
        D = DecimalClass.clone({precision: digits, rounding: DecimalClass.ROUND_HALF_EVEN, toExpNeg: -9e15, toExpPos: 9e15, minE: -9e15, maxE: 9e15});
        decimalConstructors.set(digits, D);
    }
    const Dec = D;
    const finite = (x: Decimal): Decimal | null => (x.isFinite() ? x : null);
    let pi: Decimal | undefined;
    let e: Decimal | undefined;
    const unary: Record<string, (x: Decimal) => Decimal | null> = {
        exp: (x) => Dec.exp(x),
        ln: (x) => (x.gt(0) ? Dec.ln(x) : null),
        log10: (x) => (x.gt(0) ? Dec.log10(x) : null),
        log2: (x) => (x.gt(0) ? Dec.log2(x) : null),
        sin: (x) => Dec.sin(x), cos: (x) => Dec.cos(x), tan: (x) => Dec.tan(x),
        sec: (x) => safeInv(Dec.cos(x)), csc: (x) => safeInv(Dec.sin(x)), cot: (x) => safeInv(Dec.tan(x)),
        arcsin: (x) => (x.abs().lte(1) ? Dec.asin(x) : null), arccos: (x) => (x.abs().lte(1) ? Dec.acos(x) : null),
        arctan: (x) => Dec.atan(x),
        arcsec: (x) => (x.abs().gte(1) ? Dec.acos(new Dec(1).div(x)) : null), arccsc: (x) => (x.abs().gte(1) ? Dec.asin(new Dec(1).div(x)) : null),
        arccot: (x) => (x.isZero() ? Dec.acos(0) : Dec.atan(new Dec(1).div(x))),
        sinh: (x) => Dec.sinh(x), cosh: (x) => Dec.cosh(x), tanh: (x) => Dec.tanh(x),
        abs: (x) => x.abs(), floor: (x) => x.floor(), ceil: (x) => x.ceil(), round: (x) => x.round(),
        sign: (x) => new Dec(x.isZero() ? 0 : x.isNegative() ? -1 : 1)
    };
    function safeInv(x: Decimal): Decimal | null {
        return x.isZero() ? null : new Dec(1).div(x);
    }
    const field: Field<Decimal> = {
        name: "decimal",
        fromQ: (x) => new Dec(x.n.toString()).div(x.d.toString()),
        add: (a, b) => finite(a.add(b)),
        mul: (a, b) => finite(a.mul(b)),
        div: (a, b) => (b.isZero() ? null : finite(a.div(b))),
        neg: (a) => a.neg(),
        pow(a, b, ex) {
            if (ex != null && ex.d === 1n) {
                if (a.isZero() && ex.n < 0n) return null;
                return finite(a.pow(b));
            }
            if (a.isNegative()) {
                if (ex == null || ex.d % 2n === 0n) return null;
                const mag = finite(a.neg().pow(b));
                return mag == null ? null : (ex.n % 2n === 0n ? mag : mag.neg());
            }
            if (a.isZero()) return b.gt(0) ? new Dec(0) : null;
            return finite(a.pow(b));
        },
        constant(name) {
            if (name === "pi") return (pi ??= Dec.acos(-1));
            if (name === "e") return (e ??= Dec.exp(1));
            return null;
        },
        toInteger: (a) => (a.isInteger() && a.abs().lt("1e30") ? BigInt(a.toFixed(0)) : null),
        fn(name, args) {
            const [x, y] = args;
            if (x == null) return null;
            const f = unary[name];
            if (f != null && args.length === 1) {
                const r = f(x);
                return r == null ? null : finite(r);
            }
            switch (name) {
                case "factorial": {
                    if (!x.isInteger() || x.isNegative() || x.gt(MAX_FACTORIAL)) return null;
                    let p = new Dec(1);
                    for (let i = 2; i <= x.toNumber(); i++) p = p.mul(i);
                    return p;
                }
                case "binom": {
                    if (y == null || !y.isInteger() || y.isNegative() || y.gt(5000)) return null;
                    let p = new Dec(1);
                    for (let i = 0; i < y.toNumber(); i++) p = p.mul(x.sub(i)).div(i + 1);
                    return p;
                }
                case "max": return Dec.max(...args);
                case "min": return Dec.min(...args);
                case "mod": return y == null || y.isZero() ? null : x.mod(y).add(y).mod(y);
                default: return null;
            }
        }
    };
    return field;
}

// ---- doubles with an imaginary part ----

const c = (re: number, im = 0): Complex => ({re, im});
const cFinite = (a: Complex): Complex | null => (Number.isFinite(a.re) && Number.isFinite(a.im) ? a : null);
const cMul = (a: Complex, b: Complex): Complex => c(a.re * b.re - a.im * b.im, a.re * b.im + a.im * b.re);
const cExp = (a: Complex): Complex => c(Math.exp(a.re) * Math.cos(a.im), Math.exp(a.re) * Math.sin(a.im));
const cLog = (a: Complex): Complex | null => (a.re === 0 && a.im === 0 ? null : c(Math.log(Math.hypot(a.re, a.im)), Math.atan2(a.im, a.re)));
function cDiv(a: Complex, b: Complex): Complex | null {
    const den = b.re * b.re + b.im * b.im;
    if (den === 0) return null;
    return c((a.re * b.re + a.im * b.im) / den, (a.im * b.re - a.re * b.im) / den);
}
function cSin(a: Complex): Complex {
    return c(Math.sin(a.re) * Math.cosh(a.im), Math.cos(a.re) * Math.sinh(a.im));
}
function cCos(a: Complex): Complex {
    return c(Math.cos(a.re) * Math.cosh(a.im), -Math.sin(a.re) * Math.sinh(a.im));
}

export const complexField: Field<Complex> = {
    name: "complex",
    fromQ: (x) => c(qToNumber(x)),
    add: (a, b) => cFinite(c(a.re + b.re, a.im + b.im)),
    mul: (a, b) => cFinite(cMul(a, b)),
    div: (a, b) => {
        const r = cDiv(a, b);
        return r == null ? null : cFinite(r);
    },
    neg: (a) => c(-a.re, -a.im),
    pow(a, b, ex) {
        if (a.im === 0 && b.im === 0) {
            if (a.re < 0 && ex != null && ex.d % 2n === 1n) {
                const mag = Math.pow(-a.re, b.re);
                return cFinite(c(ex.n % 2n === 0n ? mag : -mag));
            }
            if (a.re >= 0 || Number.isInteger(b.re)) return cFinite(c(Math.pow(a.re, b.re)));
        }
        if (a.re === 0 && a.im === 0) return b.re > 0 ? c(0) : null;
        const l = cLog(a);
        return l == null ? null : cFinite(cExp(cMul(b, l)));
    },
    constant: (name) => (name === "pi" ? c(Math.PI) : name === "e" ? c(Math.E) : c(0, 1)),
    toInteger: (a) => (a.im === 0 && Number.isSafeInteger(a.re) ? BigInt(a.re) : null),
    fn(name, args) {
        const [x, y] = args;
        if (x == null) return null;
        const real = x.im === 0 ? x.re : null;
        let r: Complex | null = null;
        switch (name) {
            case "exp": r = cExp(x); break;
            case "ln": r = cLog(x); break;
            case "log10": { const l = cLog(x); r = l && c(l.re / Math.LN10, l.im / Math.LN10); break; }
            case "log2": { const l = cLog(x); r = l && c(l.re / Math.LN2, l.im / Math.LN2); break; }
            case "sin": r = cSin(x); break;
            case "cos": r = cCos(x); break;
            case "tan": r = cDiv(cSin(x), cCos(x)); break;
            case "sec": r = cDiv(c(1), cCos(x)); break;
            case "csc": r = cDiv(c(1), cSin(x)); break;
            case "cot": r = cDiv(cCos(x), cSin(x)); break;
            case "sinh": r = c(Math.sinh(x.re) * Math.cos(x.im), Math.cosh(x.re) * Math.sin(x.im)); break;
            case "cosh": r = c(Math.cosh(x.re) * Math.cos(x.im), Math.sinh(x.re) * Math.sin(x.im)); break;
            case "tanh": r = real == null ? null : c(Math.tanh(real)); break;
            case "arcsin": r = real != null && Math.abs(real) <= 1 ? c(Math.asin(real)) : null; break;
            case "arccos": r = real != null && Math.abs(real) <= 1 ? c(Math.acos(real)) : null; break;
            case "arctan": r = real == null ? null : c(Math.atan(real)); break;
            case "abs": r = c(Math.hypot(x.re, x.im)); break;
            case "floor": r = real == null ? null : c(Math.floor(real)); break;
            case "ceil": r = real == null ? null : c(Math.ceil(real)); break;
            case "round": r = real == null ? null : c(Math.round(real)); break;
            case "sign": r = real == null ? null : c(Math.sign(real)); break;
            case "factorial": {
                if (real == null || !Number.isInteger(real) || real < 0 || real > 170) return null;
                let p = 1;
                for (let i = 2; i <= real; i++) p *= i;
                r = c(p);
                break;
            }
            case "binom": {
                if (y == null || y.im !== 0 || !Number.isInteger(y.re) || y.re < 0 || y.re > 5000) return null;
                let p: Complex = c(1);
                for (let i = 0; i < y.re; i++) p = cMul(p, c((x.re - i) / (i + 1), x.im / (i + 1)));
                r = p;
                break;
            }
            default: return null;
        }
        return r == null ? null : cFinite(r);
    }
};
