// report.html: one self-contained page (inline SVG, no scripts, no downloads) from a
// run's metrics.jsonl: accuracy and format adherence per phase and eval set, response
// length and perplexity distributions, throughput.
import fs from "node:fs";
import path from "node:path";
import {readJsonlFile} from "../io/jsonl.js";
import {writeFileAtomic} from "../io/atomicFile.js";
import {type Metric, metricLineSchema} from "./records.js";

export async function writeReport(dir: string, title: string): Promise<string> {
    const file = path.join(dir, "metrics.jsonl");
    const metrics = fs.existsSync(file) ? await readJsonlFile(file, metricLineSchema) : [];
    const out = path.join(dir, "report.html");
    await writeFileAtomic(out, renderReport(title, metrics));
    return out;
}

type Of<K extends Metric["kind"]> = Extract<Metric, {kind: K}>;

export function renderReport(title: string, metrics: readonly Metric[]): string {
    const of = <K extends Metric["kind"]>(kind: K) => metrics.filter((m): m is Of<K> => m.kind === kind);
    const evals = of("eval");
    const phases = unique(evals.map((m) => m.phase));
    const sets = unique(evals.map((m) => m.set));
    const value = (phase: string, set: string, key: "accuracy" | "formatAdherence" | "meanTokens") =>
        evals.filter((e) => e.phase === phase && e.set === set).at(-1)?.[key] ?? null;
    const sections: string[] = [];

    if (evals.length > 0) {
        const rows = phases.map((p) => `<tr><th>${esc(p)}</th>${sets.map((s) => {
            const acc = value(p, s, "accuracy");
            const fmt = value(p, s, "formatAdherence");
            const len = value(p, s, "meanTokens");
            return `<td>${pct(acc)}</td><td>${pct(fmt)}</td><td>${len == null ? "–" : len.toFixed(0)}</td>`;
        }).join("")}</tr>`).join("\n");
        sections.push(`<h2>Accuracy per phase</h2>
<table><tr><th rowspan="2">phase</th>${sets.map((s) => `<th colspan="3">${esc(s)}</th>`).join("")}</tr>
<tr>${sets.map(() => "<th>accuracy</th><th>format</th><th>mean tokens</th>").join("")}</tr>
${rows}</table>
${lineChart("Accuracy (held-out)", phases, sets.map((s) => ({name: s, values: phases.map((p) => value(p, s, "accuracy"))})))}
${lineChart("Format adherence", phases, sets.map((s) => ({name: s, values: phases.map((p) => value(p, s, "formatAdherence"))})))}`);
        const extra = evals.filter((m) => m.majAtK != null);
        if (extra.length > 0)
            sections.push(`<h2>Sampled evaluation</h2><table><tr><th>phase</th><th>set</th><th>k</th><th>maj@k</th><th>pass@k</th></tr>
${extra.map((m) => `<tr><td>${esc(m.phase)}</td><td>${esc(m.set)}</td><td>${m.k}</td><td>${pct(m.majAtK)}</td><td>${pct(m.passAtK)}</td></tr>`).join("\n")}</table>`);
    }

    // per domain, where a set mixes several (math, code, science, …)
    const mixed = evals.filter((m) => m.domains.length > 1);
    if (mixed.length > 0)
        sections.push(`<h2>Accuracy per domain</h2><table><tr><th>phase</th><th>set</th><th>domain</th><th>problems</th><th>accuracy</th><th>format</th><th>mean tokens</th><th>truncated</th></tr>
${mixed.flatMap((m) => m.domains.map((d) => `<tr><td>${esc(m.phase)}</td><td>${esc(m.set)}</td><td>${esc(d.domain)}</td><td>${d.problems}</td><td>${pct(d.accuracy)}</td><td>${pct(d.formatAdherence)}</td><td>${d.meanTokens.toFixed(0)}</td><td>${pct(d.truncated)}</td></tr>`)).join("\n")}</table>`);

    const lengths = evals.filter((m) => m.lengths.length > 0);
    if (lengths.length > 0)
        sections.push(`<h2>Response length (tokens, greedy, held-out)</h2>${lengths.map((m) =>
            histogram(`${m.phase} · ${m.set}`, m.lengths)).join("\n")}`);

    const selects = of("select");
    if (selects.length > 0)
        sections.push(`<h2>Perplexity of correct trajectories</h2>${selects.map((m) =>
            histogram(`round ${m.round} (${m.selected} kept, ${m.pairs} pairs)`, m.perplexities, true)).join("\n")}`);

    const explores = of("explore");
    if (explores.length > 0)
        sections.push(`<h2>Exploration</h2><table><tr><th>round</th><th>problems</th><th>samples</th><th>correct</th><th>solved by all</th></tr>
${explores.map((m) => `<tr><td>${m.round}</td><td>${m.problems}</td><td>${m.samples}</td><td>${pct(m.correctShare)}</td><td>${m.solvedByAll}</td></tr>`).join("\n")}</table>`);
    const exploreDomains = explores.filter((m) => m.domains.length > 1);
    if (exploreDomains.length > 0)
        sections.push(`<h2>Exploration yield per domain</h2><table><tr><th>round</th><th>domain</th><th>problems</th><th>samples</th><th>correct</th></tr>
${exploreDomains.flatMap((m) => m.domains.map((d) => `<tr><td>${m.round}</td><td>${esc(d.domain)}</td><td>${d.problems}</td><td>${d.samples}</td><td>${pct(d.correctShare)}</td></tr>`)).join("\n")}</table>`);

    const trains = of("train");
    if (trains.length > 0)
        sections.push(`<h2>Training</h2><table><tr><th>phase</th><th>method</th><th>records</th><th>steps</th><th>first loss</th><th>last loss</th><th>tokens/s</th><th>seconds</th></tr>
${trains.map((m) => `<tr><td>${esc(m.phase)}</td><td>${esc(m.method)}</td><td>${m.records}</td><td>${m.steps}</td><td>${num(m.firstLoss)}</td><td>${num(m.lastLoss)}</td><td>${num(m.tokensPerSecond)}</td><td>${num(m.seconds)}</td></tr>`).join("\n")}</table>`);

    const rl = of("grpo");
    if (rl.length > 0) {
        const rounds = unique(rl.map((m) => String(m.round)));
        const steps = unique(rl.map((m) => String(m.step))).sort((a, b) => Number(a) - Number(b));
        const curve = (key: "reward" | "accuracy" | "meanLength") => rounds.map((r) => ({
            name: `round ${r}`, values: steps.map((k) => rl.find((m) => String(m.round) === r && String(m.step) === k)?.[key] ?? null)
        }));
        sections.push(`<h2>Online RL (per step)</h2>
${lineChart("Reward (mean over the step's samples)", steps, curve("reward"), {scale: "auto"})}
${lineChart("Accuracy of the step's samples", steps, curve("accuracy"))}
${lineChart("Mean completion length (tokens)", steps, curve("meanLength"), {scale: "auto"})}`);
    }

    return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${esc(title)}</title>
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:960px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}th{background:#f4f4f4}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em}figure{margin:1em 0}figcaption{font-weight:600}
svg text{font:11px system-ui,sans-serif}
</style></head><body>
<h1>${esc(title)}</h1>
<p>Generated ${esc(new Date().toISOString())} from metrics.jsonl.</p>
${sections.join("\n") || "<p>No metrics yet.</p>"}
</body></html>
`;
}

const palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];

/** Lines over labelled points; y in [0, 1] shown as percentages, or (scale auto) over the values' own range. */
function lineChart(title: string, labels: readonly string[], series: {name: string, values: (number | null)[]}[],
                   options: {scale?: "share" | "auto"} = {}): string {
    const w = 640, h = 220, left = 40, bottom = 40, top = 10;
    const all = series.flatMap((s) => s.values).filter((v): v is number => v != null && Number.isFinite(v));
    const auto = options.scale === "auto" && all.length > 0;
    let lo = auto ? Math.min(...all) : 0, hi = auto ? Math.max(...all) : 1;
    if (hi - lo < 1e-9) [lo, hi] = [lo - 1, hi + 1];
    const x = (i: number) => left + (labels.length <= 1 ? (w - left) / 2 : (i * (w - left - 20)) / (labels.length - 1));
    const y = (v: number) => top + (1 - (v - lo) / (hi - lo)) * (h - top - bottom);
    const tick = (v: number) => auto ? v.toPrecision(3) : `${(v * 100).toFixed(0)}%`;
    const grid = [0, 0.25, 0.5, 0.75, 1].map((f) => lo + f * (hi - lo)).map((v) =>
        `<line x1="${left}" x2="${w}" y1="${y(v)}" y2="${y(v)}" stroke="#eee"/><text x="${left - 6}" y="${y(v) + 4}" text-anchor="end">${tick(v)}</text>`).join("");
    // at most ~16 x labels
    const every = Math.max(1, Math.ceil(labels.length / 16));
    const xs = labels.map((l, i) => i % every === 0 ? `<text x="${x(i)}" y="${h - bottom + 16}" text-anchor="middle">${esc(l)}</text>` : "").join("");
    const lines = series.map((s, k) => {
        const pts = s.values.map((v, i) => (v == null ? null : `${x(i)},${y(v)}`)).filter((p) => p != null);
        const color = palette[k % palette.length];
        return `<polyline fill="none" stroke="${color}" stroke-width="2" points="${pts.join(" ")}"/>` +
            s.values.map((v, i) => (v == null ? "" : `<circle cx="${x(i)}" cy="${y(v)}" r="3" fill="${color}"/>`)).join("") +
            `<text x="${left + 8 + k * 120}" y="${h - 6}" fill="${color}">■ ${esc(s.name)}</text>`;
    }).join("");
    return `<figure><figcaption>${esc(title)}</figcaption><svg width="${w}" height="${h}" role="img">${grid}${xs}${lines}</svg></figure>`;
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
    return `<figure><figcaption>${esc(title)} — ${values.length} values${logScale ? " (log scale)" : ""}</figcaption><svg width="${w}" height="${h}" role="img">${bars}` +
        `<text x="10" y="${h - 10}">${label(lo)}</text><text x="${w - 10}" y="${h - 10}" text-anchor="end">${label(hi)}</text></svg></figure>`;
}

function unique(xs: readonly string[]) {
    return [...new Set(xs)];
}

function pct(v: number | null | undefined) {
    return v == null ? "–" : `${(v * 100).toFixed(1)}%`;
}

function num(v: unknown) {
    return typeof v === "number" ? (Math.abs(v) >= 100 ? v.toFixed(0) : v.toPrecision(3)) : "–";
}

function esc(s: string) {
    return s.replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;"})[c]!);
}
