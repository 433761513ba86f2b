// `still run`, `still demo`, `still schema`: the loop from a config file, resumed from a
// run folder, or on the built-in offline demo.
import type {Command} from "commander";
import {z} from "zod";
import {OptionError} from "../errors.js";
import {loadRunConfig, runConfigJsonSchema} from "../loop/config.js";
import {demoOptionsSchema, runDemo} from "../demo/demo.js";
import {RunDir} from "../loop/RunDir.js";
import {type LoopEvent, type LoopSummary, runLoop} from "../loop/runLoop.js";
import {addOptions, commonFields, parseCli} from "./cliOptions.js";
import {Progress} from "./Progress.js";

const runSchema = z.object({
    config: z.string().optional().describe("Run configuration (JSON; see `still schema`)"),
    resume: z.string().optional().describe("A run folder to continue (runs/<name>)"),
    json: commonFields.json
});
const runFlags = ["--config <file>", "--resume <dir>", "--json"];

const demoSchema = demoOptionsSchema.extend({json: commonFields.json});
const demoFlags = ["--out <dir>", "--seed <n>", "--threads <n>", "--rl", "--json"];

export function runCommand(program: Command, signal: AbortSignal) {
    addOptions(program.command("run")
        .description("Run the loop (imitate, explore, select, improve, evaluate) from a config file, or resume a run folder"), runSchema, runFlags)
        .action(async (raw: Record<string, unknown>) => {
            const o = parseCli(runSchema, raw, runFlags);
            if ((o.config == null) === (o.resume == null)) throw new OptionError("run needs exactly one of --config and --resume.");
            const config = o.config != null ? await loadRunConfig(o.config) : (await RunDir.open(o.resume!)).config;
            const summary = await runLoop(config, {signal, onEvent: reporter(o.json)});
            print(summary, o.json, signal);
        });

    addOptions(program.command("demo")
        .description("The whole recipe offline: the built-in tiny model learns to count on a clock's minute display from a scripted teacher's long-form thoughts"),
    demoSchema, demoFlags)
        .action(async (raw: Record<string, unknown>) => {
            const {json, ...o} = parseCli(demoSchema, raw, demoFlags);
            const summary = await runDemo({...o, signal, onEvent: reporter(json)});
            print(summary, json, signal);
        });

    program.command("schema")
        .description("Print the run configuration's JSON Schema")
        .action(() => {
            process.stdout.write(JSON.stringify(runConfigJsonSchema(), null, 2) + "\n");
        });
}

/** Steps as lines, each step's progress as a bar (or plain lines off a terminal). */
function reporter(quiet: boolean) {
    let bar: {step: string, progress: Progress} | undefined;
    const stop = () => {
        bar?.progress.stop();
        bar = undefined;
    };
    return (e: LoopEvent) => {
        if (quiet) return;
        if (e.type === "step") {
            stop();
            if (e.status === "start") process.stderr.write(`→ ${e.step}${e.message ? `: ${e.message}` : ""}\n`);
            else if (e.status === "skip") process.stderr.write(e.message ? `– ${e.step} skipped: ${e.message}\n` : `✓ ${e.step} (done before)\n`);
            else if (e.message) process.stderr.write(`✓ ${e.step}: ${e.message}\n`);
        } else if (e.type === "log") {
            process.stderr.write(`still: ${e.message}\n`);
        } else {
            if (bar?.step !== e.step) {
                stop();
                bar = {step: e.step, progress: new Progress(e.step, e.total, "auto")};
            }
            // a step under way counts as a fraction (GRPO's sampling, training) for the bar; the text shows steps done
            const done = `${Math.floor(e.done)}/${e.total}`;
            bar.progress.update(e.done, e.detail == null ? done : `${done} ${e.detail}`);
        }
    };
}

function print(summary: LoopSummary, json: boolean, signal: AbortSignal) {
    if (json) {
        process.stdout.write(JSON.stringify(summary) + "\n");
        return;
    }
    const pct = (v: number) => `${(v * 100).toFixed(1)}%`.padStart(8);
    process.stdout.write(`\n${"phase".padEnd(10)} ${"accuracy".padStart(8)} ${"format".padStart(8)} ${"tokens".padStart(7)}\n`);
    for (const p of summary.phases)
        process.stdout.write(`${p.name.padEnd(10)} ${pct(p.accuracy)} ${pct(p.format_adherence)} ${p.mean_tokens.toFixed(0).padStart(7)}\n`);
    process.stdout.write(`\n${signal.aborted ? "stopped; `still run --resume " + summary.dir + "` continues" : "done"} in ${summary.seconds.toFixed(0)} s: ` +
        `${summary.dir}/summary.json, ${summary.dir}/report.html\n`);
}
