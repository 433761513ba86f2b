// Progress for long CLI work: a bar on a terminal, plain lines (at most every few
// seconds) otherwise, nothing with --json or --quiet. Always on stderr.
import cliProgress from "cli-progress";

export type ProgressMode = "auto" | "bar" | "lines" | "off";

export class Progress {
    private bar: cliProgress.SingleBar | undefined;
    private readonly started = Date.now();
    private lastLine = this.started;
    private printed = false;
    private readonly mode: Exclude<ProgressMode, "auto">;

    constructor(private readonly label: string, private readonly total: number, mode: ProgressMode = "auto",
                private readonly format: (value: number, total: number) => string = (v, t) => `${v}/${t}`) {
        this.mode = mode === "auto" ? (process.stderr.isTTY ? "bar" : "lines") : mode;
        if (this.mode === "bar") {
            this.bar = new cliProgress.SingleBar({
                format: `${label} [{bar}] {percentage}% | {detail} | {duration_formatted}`,
                hideCursor: true,
                clearOnComplete: false,
                stream: process.stderr
            }, cliProgress.Presets.shades_classic);
            this.bar.start(total, 0, {detail: format(0, total)});
        }
    }

    update(value: number, detail?: string) {
        const text = detail ?? this.format(value, this.total);
        if (this.mode === "bar") this.bar?.update(value, {detail: text});
        else if (this.mode === "lines") {
            // Quiet for quick work: the first line comes after 2 s, the last only if one came.
            const now = Date.now();
            if (now - this.lastLine >= 2000 || (value >= this.total && this.printed)) {
                this.lastLine = now;
                this.printed = value < this.total;
                const pct = this.total > 0 ? Math.floor((100 * value) / this.total) : 100;
                process.stderr.write(`${this.label}: ${pct}% ${text}\n`);
            }
        }
    }

    stop() {
        this.bar?.stop();
        this.bar = undefined;
    }
}

export function formatBytes(n: number) {
    if (n < 1024) return `${n} B`;
    const units = ["KiB", "MiB", "GiB", "TiB"];
    let v = n / 1024;
    let i = 0;
    while (v >= 1024 && i < units.length - 1) {
        v /= 1024;
        i++;
    }
    return `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}

export function formatCount(n: number) {
    if (n >= 1e9) return `${(n / 1e9).toFixed(2)} B`;
    if (n >= 1e6) return `${(n / 1e6).toFixed(2)} M`;
    if (n >= 1e3) return `${(n / 1e3).toFixed(1)} K`;
    return String(n);
}
