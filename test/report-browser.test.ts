// report.html in a real browser (Debian's chromium, headless): every section and chart
// renders, sample responses show thought and solution apart, nothing logs an error or
// reaches for the network, and the page fits a phone's width. The check itself fails on a
// page with a missing chart, a missing section or a console error.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import {afterAll, describe, expect, it} from "vitest";
import {renderReport} from "../src/loop/report.js";
import {type Metric, metricSchema} from "../src/loop/records.js";
import {findChromium, inspectPage, type PageCheck, pageProblems as problems, pngSize} from "./helpers/browser.js";

const chromium = findChromium();
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "still-report-"));
afterAll(() => { if (process.env.STILL_KEEP_REPORT !== "1") fs.rmSync(dir, {recursive: true, force: true}); });

const thought = "start at 47 with 28 to go.\n48 27\n49 26\n…\n15 00\nthe answer is 15.";
/** A run with every kind of metric: four evaluated phases, two trainings, a round's exploration and selection, a GRPO round. */
function fullRun(): Metric[] {
    const phases = ["base", "imitate", "round-1", "round-2"];
    const evals = phases.map((phase, k) => ({
        kind: "eval", phase, set: "held-out", problems: 100, accuracy: [0, 0.45, 0.7, 0.75][k], formatAdherence: [0, 1, 1, 1][k],
        meanTokens: 240, truncated: 0, lengths: Array.from({length: 100}, (_, i) => 200 + ((i * 37) % 90)),
        domains: [{domain: "math", problems: 50, accuracy: 0.5, formatAdherence: 1, meanTokens: 230, truncated: 0},
            {domain: "puzzle", problems: 50, accuracy: 0.4, formatAdherence: 1, meanTokens: 250, truncated: 0}],
        examples: [
            {id: "p1", question: "The minute display reads 47. What does it read 28 minutes later?", answer: "15", correct: true, extracted: "15",
                finish: "stop", tokens: 220, thought, solution: "the answer is \\boxed{15}.", text: null},
            ...(k === 0 ? [{id: "p2", question: "The minute display reads 03. What does it read 11 minutes later?", answer: "14", correct: false,
                extracted: "15", finish: "stop", tokens: 9, thought: null, solution: null, text: "the answer is 15."}]
                : [{id: "p2", question: "The minute display reads 03. What does it read 11 minutes later?", answer: "14", correct: false,
                    extracted: "15", finish: "length", tokens: 448, thought: "start at 03 with 11 to go.\n05 10", solution: "the answer is \\boxed{15}.", text: null}])
        ]
    }));
    const train = (phase: string, method: string) => ({
        kind: "train", phase, method, adapter: `${phase}/adapter.gguf`, records: 300, steps: 120, seconds: 60, firstLoss: 1.2, lastLoss: 0.2,
        losses: Array.from({length: 120}, (_, i) => 1.2 * Math.exp(-i / 30) + 0.2), tokensPerSecond: 2500
    });
    const grpo = Array.from({length: 10}, (_, step) => ({
        kind: "grpo", round: 1, step: step + 1, reward: 0.3 + step * 0.03, rewardStd: 0.2, accuracy: 0.3 + step * 0.03, unfinished: 0,
        meanLength: 12_000 - 150 * step, maxLength: 16_000, clippedRatio: 0, kl: 0.01, entropy: 0.5, seconds: 3
    }));
    return [
        evals[0], train("imitate", "sft"), evals[1],
        {kind: "explore", round: 1, problems: 240, samples: 960, correctShare: 0.5, solvedByAll: 40,
            domains: [{domain: "math", problems: 120, samples: 480, correctShare: 0.6}, {domain: "puzzle", problems: 120, samples: 480, correctShare: 0.4}]},
        {kind: "select", round: 1, selected: 200, pairs: 100, perplexities: Array.from({length: 200}, (_, i) => 1.05 + (i % 17) / 40)},
        train("round-1", "sft"), evals[2], train("round-2", "dpo"), evals[3], ...grpo
    ].map((m) => metricSchema.parse(m));
}

const EVERY_SECTION = ["accuracy", "domains", "responses", "loss", "rl", "lengths", "perplexity", "explore", "explore-domains", "training"];

async function open(html: string, name: string, width: number): Promise<PageCheck> {
    const file = path.join(dir, `${name}.html`);
    fs.writeFileSync(file, html);
    return inspectPage(chromium!, file, {width, screenshot: path.join(dir, `${name}.png`)});
}

describe.skipIf(chromium == null)("report.html in a browser", () => {
    const html = renderReport("still run demo", fullRun());

    it("renders every section and chart at a phone's width, with no error, no request and no sideways scrolling", async () => {
        const c = await open(html, "phone", 390);
        expect(problems(c, EVERY_SECTION)).toEqual([]);
        // accuracy, format, three loss curves, three RL curves, four length histograms, one perplexity histogram
        expect(c.figures).toHaveLength(2 + 3 + 3 + 4 + 1);
        for (const f of c.figures) expect(f.width).toBeLessThanOrEqual(390);
        // a correct and an incorrect response per phase; the base's has no markers
        expect(c.responses.map((r) => r.verdict)).toEqual(["correct", "incorrect", "correct", "incorrect", "correct", "incorrect", "correct", "incorrect"]);
        expect(c.responses.filter((r) => r.thought && r.solution)).toHaveLength(7);
        expect(c.responses.filter((r) => r.text && !r.thought)).toHaveLength(1);
        const shot = pngSize(c.screenshot!);
        expect(shot.width).toBe(390);
        expect(shot.height).toBeGreaterThan(2000);
    }, 120_000);

    it("renders the same at a desktop's width", async () => {
        const c = await open(html, "desktop", 1280);
        expect(problems(c, EVERY_SECTION)).toEqual([]);
        expect(pngSize(c.screenshot!).width).toBe(1280);
    }, 120_000);

    it("catches a chart that drew nothing or cut off a label, a missing section, a console error and a request", async () => {
        const broken = html
            .replace(/<polyline[^>]*\/>/, (l) => l.replace(/points="[^"]*"/, "points=\"\""))
            .replace(/<circle[^>]*\/>/g, "")
            .replace(/<section id="perplexity">[\s\S]*?<\/section>/, "")
            .replace(/<text x="[\d.]+" y="([\d.]+)" text-anchor="middle">base</, "<text x=\"636\" y=\"$1\" text-anchor=\"middle\">base<")
            .replace("</body>", "<script>console.error(\"broken\")</script><img src=\"http://127.0.0.1:9/x.png\"></body>");
        const c = await open(broken, "broken", 390);
        const found = problems(c, EVERY_SECTION);
        expect(found).toContain("section perplexity missing");
        expect(found.some((p) => /^chart "Accuracy" not drawn/.test(p))).toBe(true);
        expect(found).toContain("chart \"Accuracy\" cuts off its text \"base\"");
        expect(found).toContain("console: broken");
        expect(found.some((p) => p.startsWith("requested http://127.0.0.1:9/"))).toBe(true);
    }, 120_000);
});
