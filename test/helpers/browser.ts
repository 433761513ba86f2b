// A real browser for the report's tests: Debian's chromium (apt), driven headless through
// puppeteer-core (which downloads nothing). Without chromium the tests skip, unless
// STILL_REQUIRE_BROWSER=1 (set by .ci/run, which installs it) makes its absence a failure.
import fs from "node:fs";
import path from "node:path";
import {pathToFileURL} from "node:url";

const CANDIDATES = ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome", "/usr/bin/google-chrome-stable"];

/** The browser to test with: STILL_CHROMIUM, else the first installed of CANDIDATES; null when none. */
export function findChromium(): string | null {
    const named = process.env.STILL_CHROMIUM;
    if (named != null && named !== "") {
        if (!fs.existsSync(named)) throw new Error(`STILL_CHROMIUM names ${named}, which does not exist`);
        return named;
    }
    const found = CANDIDATES.find((c) => fs.existsSync(c)) ?? null;
    if (found == null && process.env.STILL_REQUIRE_BROWSER === "1")
        throw new Error(`STILL_REQUIRE_BROWSER=1 and no browser at ${CANDIDATES.join(", ")}: install Debian's chromium (apt-get install chromium)`);
    return found;
}

export type FigureCheck = {caption: string, width: number, height: number, marks: number, /** Texts that reach outside their chart's box (cut off). */ clipped: string[]};
export type PageCheck = {
    /** Console errors and uncaught exceptions, in order. */
    errors: string[],
    /** Requests other than the page itself (a self-contained page makes none). */
    requests: string[],
    sections: {id: string, title: string}[],
    figures: FigureCheck[],
    responses: {verdict: string, thought: boolean, solution: boolean, text: boolean}[],
    /** The page is wider than the window (a phone would scroll sideways). */
    overflows: boolean,
    screenshot: string | null
};

/** Opens `file` in chromium at `width` CSS pixels and reports what rendered; a full-page screenshot goes to `screenshot`. */
export async function inspectPage(browserPath: string, file: string, o: {width: number, height?: number, screenshot?: string}): Promise<PageCheck> {
    const {default: puppeteer} = await import("puppeteer-core");
    const browser = await puppeteer.launch({
        executablePath: browserPath, headless: true,
        // root in a container: no setuid sandbox; no GPU, no first-run work, nothing from the network
        args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions", "--disable-background-networking", "--proxy-server=127.0.0.1:9"],
        timeout: 60_000
    });
    try {
        const page = await browser.newPage();
        await page.setViewport({width: o.width, height: o.height ?? 800, deviceScaleFactor: 1});
        const errors: string[] = [];
        const requests: string[] = [];
        const url = pathToFileURL(path.resolve(file)).href;
        page.on("console", (m) => { if (m.type() === "error") errors.push(`console: ${m.text()}`); });
        page.on("pageerror", (e) => errors.push(`page: ${e instanceof Error ? e.message : String(e)}`));
        page.on("request", (r) => { if (r.url() !== url) requests.push(r.url()); });
        await page.goto(url, {waitUntil: "load", timeout: 60_000});
        const found = await page.evaluate(() => {
            const sections = [...document.querySelectorAll("section")].map((s) => ({id: s.id, title: s.querySelector("h2")?.textContent ?? ""}));
            const figures = [...document.querySelectorAll("figure")].map((f) => {
                const svg = f.querySelector("svg");
                const box = svg?.getBoundingClientRect();
                // drawn marks: a line with points, a dot, a bar of some height
                const marks = svg == null ? 0 : [...svg.querySelectorAll("polyline, circle, rect")].filter((el) => {
                    if (el.tagName === "polyline") return (el.getAttribute("points") ?? "").trim().split(/\s+/).filter(Boolean).length >= 1;
                    const b = (el as SVGGraphicsElement).getBBox();
                    return el.tagName === "circle" ? b.width > 0 : b.height > 0 && b.width > 0;
                }).length;
                // labels and ticks drawn past the chart's own box are cut off on screen
                const view = svg?.viewBox.baseVal;
                const clipped = svg == null || view == null || view.width === 0 ? [] : [...svg.querySelectorAll("text")].filter((t) => {
                    const b = t.getBBox();
                    return b.x < view.x - 0.5 || b.y < view.y - 0.5 || b.x + b.width > view.x + view.width + 0.5 || b.y + b.height > view.y + view.height + 0.5;
                }).map((t) => t.textContent ?? "");
                return {caption: f.querySelector("figcaption")?.textContent ?? "", width: box?.width ?? 0, height: box?.height ?? 0, marks, clipped};
            });
            const responses = [...document.querySelectorAll(".response")].map((r) => ({
                verdict: r.querySelector(".verdict")?.textContent ?? "",
                thought: (r.querySelector("pre.thought")?.textContent ?? "").length > 0,
                solution: (r.querySelector("pre.solution")?.textContent ?? "").length > 0,
                text: (r.querySelector("pre.text")?.textContent ?? "").length > 0
            }));
            return {sections, figures, responses, overflows: document.documentElement.scrollWidth > window.innerWidth + 1};
        });
        let screenshot: string | null = null;
        if (o.screenshot != null) {
            await page.screenshot({path: o.screenshot as `${string}.png`, fullPage: true});
            screenshot = o.screenshot;
        }
        return {errors, requests, ...found, screenshot};
    } finally {
        await browser.close();
    }
}

/** What is wrong with a checked page, as sentences (none for a good one): errors, requests, sections missing of `sections`, charts that drew nothing or cut off a label, sideways scrolling. */
export function pageProblems(c: PageCheck, sections: readonly string[]): string[] {
    const out = [...c.errors, ...c.requests.map((r) => `requested ${r}`)];
    for (const id of sections) if (!c.sections.some((s) => s.id === id)) out.push(`section ${id} missing`);
    for (const f of c.figures) if (f.marks === 0 || f.width < 100 || f.height < 40) out.push(`chart "${f.caption}" not drawn (${f.width}×${f.height}, ${f.marks} marks)`);
    for (const f of c.figures) for (const t of f.clipped) out.push(`chart "${f.caption}" cuts off its text "${t}"`);
    if (c.overflows) out.push("wider than the window");
    return out;
}

/** Width and height of a PNG file, from its header. */
export function pngSize(file: string): {width: number, height: number} {
    const b = fs.readFileSync(file);
    if (b.length < 24 || b.toString("latin1", 1, 4) !== "PNG") throw new Error(`${file} is not a PNG`);
    return {width: b.readUInt32BE(16), height: b.readUInt32BE(20)};
}
