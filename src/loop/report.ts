// report.html: one self-contained page (inline SVG, no scripts, no downloads) from a
// run's metrics.jsonl: accuracy and format adherence per phase and eval set, a correct and
// an incorrect response per phase, loss and reward curves, response length and perplexity
// distributions, throughput. It reads on a phone's width: charts scale, tables scroll.
import fs from "node:fs";
import path from "node:path";
import {readJsonlFile} from "../io/jsonl.js";
import {writeFileAtomic} from "../io/atomicFile.js";
import {type Metric, metricLineSchema} from "./records.js";
import type {EvalExample, EvalMetrics} from "../evaluate/evaluate.js";
import type {SetComparison} from "../evaluate/compare.js";

export async function writeReport(dir: string, title: string): Promise<string> {
    const file = path.join(dir, "metrics.jsonl");
    const metrics = fs.existsSync(file) ? await readJsonlFile(file, metricLineSchema) : [];
    const out = path.join(dir, "report.html");
    await writeFileAtomic(out, renderReport(title, metrics));
    return out;
}

type Of<K extends Metric["kind"]> = Extract<Metric, {kind: K}>;

export type ReportOptions = {
    /** Where the figures come from (said under the title). */
    source?: string,
    /** Two evaluations compared problem by problem: A's and B's labels (their phases), and the tests per set. */
    comparison?: {a: string, b: string, sets: readonly SetComparison[]}
};

export function renderReport(title: string, metrics: readonly Metric[], options: ReportOptions = {}): string {
    const of = <K extends Metric["kind"]>(kind: K) => metrics.filter((m): m is Of<K> => m.kind === kind);
    const evals = of("eval");
    const phases = unique(evals.map((m) => m.phase));
    const sets = unique(evals.map((m) => m.set));
    const last = (phase: string, set: string) => evals.filter((e) => e.phase === phase && e.set === set).at(-1);
    const value = (phase: string, set: string, key: "accuracy" | "formatAdherence" | "meanTokens") => last(phase, set)?.[key] ?? null;
    const sections: {id: string, title: string, body: string}[] = [];
    const section = (id: string, heading: string, body: string) => sections.push({id, title: heading, body});

    if (evals.length > 0) {
        const rows = phases.map((p) => `<tr><th>${esc(p)}</th>${sets.map((s) => {
            const acc = value(p, s, "accuracy");
            const fmt = value(p, s, "formatAdherence");
            const len = value(p, s, "meanTokens");
            return `<td>${pct(acc)}</td><td>${pct(fmt)}</td><td>${len == null ? "–" : len.toFixed(0)}</td>`;
        }).join("")}</tr>`).join("\n");
        section("accuracy", "Accuracy per phase", `${table(`<tr><th rowspan="2">phase</th>${sets.map((s) => `<th colspan="3">${esc(s)}</th>`).join("")}</tr>
<tr>${sets.map(() => "<th>accuracy</th><th>format</th><th>mean tokens</th>").join("")}</tr>
${rows}`)}
${lineChart("Accuracy", phases, sets.map((s) => ({name: s, values: phases.map((p) => value(p, s, "accuracy"))})))}
${lineChart("Format adherence", phases, sets.map((s) => ({name: s, values: phases.map((p) => value(p, s, "formatAdherence"))})))}`);
        section("figures", "Figures with standard errors", `<p>± one standard error over problems; lengths in tokens.</p>
${table(`<tr><th>phase</th><th>set</th><th>problems</th><th>pass@1</th><th>truncated</th><th>median length</th><th>90th percentile</th><th>longest</th></tr>
${evals.map((m) => `<tr><td>${esc(m.phase)}</td><td>${esc(m.set)}</td><td>${m.problems}</td><td>${pctSe(m.accuracy, m.stderr)}</td><td>${pct(m.truncated)}</td>` +
    `<td>${quantile(m.lengths, 0.5)}</td><td>${quantile(m.lengths, 0.9)}</td><td>${quantile(m.lengths, 1)}</td></tr>`).join("\n")}`)}`);
        const extra = evals.filter((m) => m.majAtK != null);
        if (extra.length > 0)
            section("sampled", "Sampled evaluation", table(`<tr><th>phase</th><th>set</th><th>k</th><th>mean@k</th><th>maj@k</th><th>pass@k</th></tr>
${extra.map((m) => `<tr><td>${esc(m.phase)}</td><td>${esc(m.set)}</td><td>${m.k}</td><td>${pctSe(m.meanAtK, m.meanAtKStderr)}</td>` +
    `<td>${pctSe(m.majAtK, m.majAtKStderr)}</td><td>${pctSe(m.passAtK, m.passAtKStderr)}</td></tr>`).join("\n")}`));
    }

    if (options.comparison != null && options.comparison.sets.length > 0) {
        const c = options.comparison;
        const p = (v: number) => (v < 1e-4 ? v.toExponential(1) : v.toPrecision(2));
        section("comparison", `${c.b} against ${c.a}`, `<p>Paired by problem: greedy pass@1 by McNemar's exact test (the problems only one of the two solved);
mean@k by a paired bootstrap of the per-problem difference (95% interval). A small p says the difference is unlikely to be chance.</p>
${table(`<tr><th>set</th><th>paired</th><th>pass@1 ${esc(c.a)}</th><th>pass@1 ${esc(c.b)}</th><th>difference</th><th>only ${esc(c.a)}</th><th>only ${esc(c.b)}</th><th>p</th>` +
    `<th>mean@k ${esc(c.a)}</th><th>mean@k ${esc(c.b)}</th><th>difference (95%)</th><th>p</th></tr>
${c.sets.map((s) => `<tr><td>${esc(s.set)}</td><td>${s.paired}</td>` +
    (s.greedy == null ? "<td>–</td>".repeat(6) : `<td>${pct(s.greedy.a)}</td><td>${pct(s.greedy.b)}</td><td>${points(s.greedy.difference)}</td><td>${s.greedy.onlyA}</td><td>${s.greedy.onlyB}</td><td>${p(s.greedy.p)}</td>`) +
    (s.sampled == null ? "<td>–</td>".repeat(4) : `<td>${pct(s.sampled.a)}</td><td>${pct(s.sampled.b)}</td><td>${points(s.sampled.difference)} (${points(s.sampled.low)} to ${points(s.sampled.high)})</td><td>${p(s.sampled.p)}</td>`) +
    "</tr>").join("\n")}`)}`);
    }

    const grouped = evals.filter((m) => m.subjects.length > 1 || m.levels.length > 1);
    if (grouped.length > 0)
        section("groups", "Accuracy per subject and level", grouped.map((m) => `<h3>${esc(m.phase)} · ${esc(m.set)}</h3>
${table(`<tr><th>subject / level</th><th>problems</th><th>accuracy</th><th>format</th><th>mean tokens</th><th>truncated</th></tr>
${[...m.subjects, ...m.levels.map((l) => ({...l, group: `level ${l.group}`}))].map((g) =>
    `<tr><td>${esc(g.group)}</td><td>${g.problems}</td><td>${pctSe(g.accuracy, g.stderr)}</td><td>${pct(g.formatAdherence)}</td><td>${g.meanTokens.toFixed(0)}</td><td>${pct(g.truncated)}</td></tr>`).join("\n")}`)}`).join("\n"));

    // per domain, where a set mixes several (math, code, science, …)
    const mixed = evals.filter((m) => m.domains.length > 1);
    if (mixed.length > 0)
        section("domains", "Accuracy per domain", table(`<tr><th>phase</th><th>set</th><th>domain</th><th>problems</th><th>accuracy</th><th>format</th><th>mean tokens</th><th>truncated</th></tr>
${mixed.flatMap((m) => m.domains.map((d) => `<tr><td>${esc(m.phase)}</td><td>${esc(m.set)}</td><td>${esc(d.domain)}</td><td>${d.problems}</td><td>${pct(d.accuracy)}</td><td>${pct(d.formatAdherence)}</td><td>${d.meanTokens.toFixed(0)}</td><td>${pct(d.truncated)}</td></tr>`)).join("\n")}`));

    const shown = phases.flatMap((p) => sets.map((s) => last(p, s)).filter((m): m is Of<"eval"> => m != null && m.examples.length > 0));
    if (shown.length > 0)
        section("responses", "Sample responses per phase", `<p>The first correct and the first incorrect response of each phase, in problem order; the thought and the solution apart.</p>
${shown.map((m) => `<h3>${esc(m.phase)} · ${esc(m.set)}</h3>\n${m.examples.map(exampleBlock).join("\n")}`).join("\n")}`);

    const trains = of("train");
    const curves = trains.filter((m) => m.losses.length > 1);
    if (curves.length > 0)
        section("loss", "Training loss", curves.map((m) =>
            lineChart(`${m.phase} (${m.method}, ${m.steps} steps)`, m.losses.map((_, i) => String(Math.round(((i + 1) * m.steps) / m.losses.length))),
                [{name: "loss", values: m.losses}], {scale: "auto", xTitle: "step"})).join("\n"));

    const rl = of("grpo");
    if (rl.length > 0) {
        const rounds = unique(rl.map((m) => String(m.round)));
        const steps = unique(rl.map((m) => String(m.step))).sort((a, b) => Number(a) - Number(b));
        const curve = (key: "reward" | "accuracy" | "meanLength") => rounds.map((r) => ({
            name: `round ${r}`, values: steps.map((k) => rl.find((m) => String(m.round) === r && String(m.step) === k)?.[key] ?? null)
        }));
        section("rl", "Online RL (per step)", `${lineChart("Reward (mean over the step's samples)", steps, curve("reward"), {scale: "auto", xTitle: "step"})}
${lineChart("Accuracy of the step's samples", steps, curve("accuracy"), {xTitle: "step"})}
${lineChart("Mean completion length (tokens)", steps, curve("meanLength"), {scale: "auto", xTitle: "step"})}`);
    }

    const lengths = evals.filter((m) => m.lengths.length > 0);
    if (lengths.length > 0)
        section("lengths", "Response length (tokens)", lengths.map((m) => histogram(`${m.phase} · ${m.set}`, m.lengths)).join("\n"));

    const selects = of("select");
    const scored = selects.filter((m) => m.perplexities.length > 0);
    if (scored.length > 0)
        section("perplexity", "Perplexity of correct trajectories", scored.map((m) =>
            histogram(`round ${m.round} (${m.selected} kept, ${m.pairs} pairs)`, m.perplexities, true)).join("\n"));

    const explores = of("explore");
    if (explores.length > 0)
        section("explore", "Exploration", table(`<tr><th>round</th><th>problems</th><th>samples</th><th>correct</th><th>solved by all</th></tr>
${explores.map((m) => `<tr><td>${m.round}</td><td>${m.problems}</td><td>${m.samples}</td><td>${pct(m.correctShare)}</td><td>${m.solvedByAll}</td></tr>`).join("\n")}`));
    const exploreDomains = explores.filter((m) => m.domains.length > 1);
    if (exploreDomains.length > 0)
        section("explore-domains", "Exploration yield per domain", table(`<tr><th>round</th><th>domain</th><th>problems</th><th>samples</th><th>correct</th></tr>
${exploreDomains.flatMap((m) => m.domains.map((d) => `<tr><td>${m.round}</td><td>${esc(d.domain)}</td><td>${d.problems}</td><td>${d.samples}</td><td>${pct(d.correctShare)}</td></tr>`)).join("\n")}`));

    if (trains.length > 0)
        section("training", "Training", table(`<tr><th>phase</th><th>method</th><th>records</th><th>steps</th><th>first loss</th><th>last loss</th><th>tokens/s</th><th>seconds</th></tr>
${trains.map((m) => `<tr><td>${esc(m.phase)}</td><td>${esc(m.method)}</td><td>${m.records}</td><td>${m.steps}</td><td>${num(m.firstLoss)}</td><td>${num(m.lastLoss)}</td><td>${num(m.tokensPerSecond)}</td><td>${num(m.seconds)}</td></tr>`).join("\n")}`));

    return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(title)}</title>
<style>
body{font:15px/1.5 system-ui,sans-serif;margin:0 auto;padding:1em;max-width:960px;color:#222;background:#fff}
h1{font-size:1.5em;margin:.5em 0}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}h3{font-size:1em;margin:1.5em 0 .5em}
nav{font-size:.9em}nav a{margin-right:.8em;white-space:nowrap}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}th{background:#f4f4f4}
figure{margin:1em 0}figcaption{font-weight:600}figure svg{width:100%;height:auto;max-width:640px;display:block}
svg text{font:13px system-ui,sans-serif}
.response{border:1px solid #ddd;border-left:4px solid #999;border-radius:4px;padding:.5em .8em;margin:.8em 0}
.response.correct{border-left-color:#2ca02c}.response.incorrect{border-left-color:#d62728}
.verdict{font-weight:600}.correct .verdict{color:#2ca02c}.incorrect .verdict{color:#d62728}
.label{font-size:.85em;color:#555;margin:.6em 0 .2em;text-transform:uppercase;letter-spacing:.04em}
pre{white-space:pre-wrap;overflow-wrap:anywhere;background:#f7f7f7;padding:.5em;margin:0;max-height:24em;overflow-y:auto;font-size:13px}
pre.solution{background:#eef6ee}
</style></head><body>
<h1>${esc(title)}</h1>
<p>Generated ${esc(new Date().toISOString())} from ${esc(options.source ?? "metrics.jsonl")}.</p>
${sections.length === 0 ? "<p>No metrics yet.</p>" : `<nav>${sections.map((s) => `<a href="#${s.id}">${esc(s.title)}</a>`).join(" ")}</nav>
${sections.map((s) => `<section id="${s.id}"><h2>${esc(s.title)}</h2>\n${s.body}</section>`).join("\n")}`}
</body></html>
`;
}

function table(rows: string): string {
    return `<div class="scroll"><table>${rows}</table></div>`;
}

/** A response: the problem, the verdict, and the thought and the solution apart (the whole text when it has no markers). */
function exampleBlock(e: EvalExample): string {
    const verdict = e.correct ? "correct" : "incorrect";
    const how = `${e.tokens} tokens${e.finish === "length" ? ", cut at the length limit" : ""}; answered ${e.extracted == null ? "nothing" : esc(e.extracted)}, gold ${esc(e.answer)}`;
    const body = e.thought != null && e.solution != null
        ? `<div class="label">thought</div><pre class="thought">${esc(e.thought)}</pre><div class="label">solution</div><pre class="solution">${esc(e.solution)}</pre>`
        : `<div class="label">response (not in the thought format)</div><pre class="text">${esc(e.text ?? "")}</pre>`;
    return `<div class="response ${verdict}"><div><span class="verdict">${verdict}</span> · ${esc(e.id)} · ${how}</div>
<div class="label">problem</div><pre class="question">${esc(e.question)}</pre>
${body}</div>`;
}

const palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];

/** Lines over labelled points; y in [0, 1] shown as percentages, or (scale auto) over the values' own range. */
function lineChart(title: string, labels: readonly string[], series: {name: string, values: (number | null)[]}[],
                   options: {scale?: "share" | "auto", xTitle?: string} = {}): string {
    // margins that hold the tick labels (13px) whole: "0.811" to the left, the top tick's ascent above
    const w = 640, h = 220, left = 48, bottom = 40, top = 14;
    const all = series.flatMap((s) => s.values).filter((v): v is number => v != null && Number.isFinite(v));
    const auto = options.scale === "auto" && all.length > 0;
    let lo = auto ? Math.min(...all) : 0, hi = auto ? Math.max(...all) : 1;
    if (hi - lo < 1e-9) [lo, hi] = [lo - 1, hi + 1];
    // room on the right for the last label, centred on its point
    const x = (i: number) => left + (labels.length <= 1 ? (w - left) / 2 : (i * (w - left - 40)) / (labels.length - 1));
    const y = (v: number) => top + (1 - (v - lo) / (hi - lo)) * (h - top - bottom);
    // "12.3k", not "1.23e+4": long thoughts' lengths run to thousands of tokens
    const tick = (v: number) => !auto ? `${(v * 100).toFixed(0)}%` : Math.abs(v) >= 1000 ? `${Number((v / 1000).toPrecision(3))}k` : v.toPrecision(3);
    const grid = [0, 0.25, 0.5, 0.75, 1].map((f) => lo + f * (hi - lo)).map((v) =>
        `<line x1="${left}" x2="${w}" y1="${y(v)}" y2="${y(v)}" stroke="#eee"/><text x="${left - 6}" y="${y(v) + 4}" text-anchor="end">${tick(v)}</text>`).join("");
    // at most ~10 x labels: the chart scales down to a phone's width
    const every = Math.max(1, Math.ceil(labels.length / 10));
    const xs = labels.map((l, i) => i % every === 0 ? `<text x="${x(i)}" y="${h - bottom + 16}" text-anchor="middle">${esc(l)}</text>` : "").join("");
    const lines = series.map((s, k) => {
        const pts = s.values.map((v, i) => (v == null ? null : `${x(i)},${y(v)}`)).filter((p) => p != null);
        const color = palette[k % palette.length];
        return `<polyline fill="none" stroke="${color}" stroke-width="2" points="${pts.join(" ")}"/>` +
            (s.values.length > 40 ? "" : s.values.map((v, i) => (v == null ? "" : `<circle cx="${x(i)}" cy="${y(v)}" r="3" fill="${color}"/>`)).join("")) +
            `<text x="${left + 8 + k * 120}" y="${h - 6}" fill="${color}">■ ${esc(s.name)}</text>`;
    }).join("");
    const xTitle = options.xTitle == null ? "" : `<text x="${w - 4}" y="${h - bottom + 30}" text-anchor="end">${esc(options.xTitle)}</text>`;
    return `<figure><figcaption>${esc(title)}</figcaption><svg viewBox="0 0 ${w} ${h}" width="${w}" height="${h}" role="img" aria-label="${esc(title)}">${grid}${xs}${xTitle}${lines}</svg></figure>`;
}

function histogram(title: string, values: readonly number[], logScale = false): string {
    const w = 640, h = 160, bins = 20, bottom = 30;
    const xs = values.filter(Number.isFinite).map((v) => (logScale ? Math.log10(Math.max(v, 1e-9)) : v));
    if (xs.length === 0) return "";
    const lo = Math.min(...xs), hi = Math.max(...xs);
    const width = hi > lo ? (hi - lo) / bins : 1;
    const counts = new Array<number>(bins).fill(0);
    for (const v of xs) counts[Math.min(bins - 1, Math.floor((v - lo) / width))]!++;
    const max = Math.max(...counts);
    const bw = (w - 20) / bins;
    const bars = counts.map((c, i) => `<rect x="${10 + i * bw}" y="${h - bottom - (c / max) * (h - bottom - 10)}" width="${bw - 2}" height="${(c / max) * (h - bottom - 10)}" fill="#1f77b4"><title>${c}</title></rect>`).join("");
    const label = (v: number) => (logScale ? 10 ** v : v).toPrecision(3);
    return `<figure><figcaption>${esc(title)} — ${values.length} values${logScale ? " (log scale)" : ""}</figcaption><svg viewBox="0 0 ${w} ${h}" width="${w}" height="${h}" role="img" aria-label="${esc(title)}">${bars}` +
        `<text x="10" y="${h - 10}">${label(lo)}</text><text x="${w - 10}" y="${h - 10}" text-anchor="end">${label(hi)}</text></svg></figure>`;
}

function unique(xs: readonly string[]) {
    return [...new Set(xs)];
}

function pct(v: number | null | undefined) {
    return v == null ? "–" : `${(v * 100).toFixed(1)}%`;
}

function pctSe(v: number | null | undefined, se: number | null | undefined) {
    return v == null ? "–" : `${pct(v)}${se == null ? "" : ` ± ${(se * 100).toFixed(1)}`}`;
}

function points(v: number) {
    return `${v >= 0 ? "+" : "−"}${Math.abs(v * 100).toFixed(1)}`;
}

/** The q-quantile of `values` (nearest rank); "–" for none. */
function quantile(values: EvalMetrics["lengths"], q: number): string {
    if (values.length === 0) return "–";
    const sorted = [...values].sort((a, b) => a - b);
    return String(sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]);
}

function num(v: unknown) {
    return typeof v === "number" ? (Math.abs(v) >= 100 ? v.toFixed(0) : v.toPrecision(3)) : "–";
}

function esc(s: string) {
    return s.replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;"})[c]!);
}
