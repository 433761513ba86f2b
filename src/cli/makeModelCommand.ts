// `still make-model`: generate a built-in model (random weights) as GGUF.
import type {Command} from "commander";
import {z} from "zod";
import {makeModel, makeModelFields} from "../models/makeModel.js";
import {presetNames, presets} from "../models/presets.js";
import {OptionError} from "../errors.js";
import {addOptions, parseCli} from "./cliOptions.js";
import {Progress, formatBytes, formatCount} from "./Progress.js";

const optionsSchema = z.object({
    preset: z.enum(presetNames).optional().describe(`One of: ${presetNames.join(", ")}`),
    out: z.string().min(1).optional().describe("Where to write the .gguf"),
    ...makeModelFields,
    json: z.boolean().describe("Print the result as one JSON object").default(false),
    list: z.boolean().describe("List the presets and exit").default(false)
});
const flags = ["--preset <name>", "--out <file>", "--type <type>", "--seed <n>", "--json", "--list"];

export function makeModelCommand(program: Command, signal: AbortSignal) {
    addOptions(program.command("make-model")
        .description("Generate a built-in model as GGUF (deterministic random weights, byte-level vocabulary with the STILL markers)"),
    optionsSchema, flags)
        .action(async (raw: Record<string, unknown>) => {
            const opts = parseCli(optionsSchema, raw, flags);
            if (opts.list) {
                for (const name of presetNames) process.stdout.write(`${name.padEnd(14)} ${presets[name].description}\n`);
                return;
            }
            if (opts.preset == null || opts.out == null) throw new OptionError("make-model needs --preset and --out (see --list for presets).");

            let bar: Progress | undefined;
            try {
                const made = await makeModel({
                    preset: opts.preset,
                    out: opts.out,
                    type: opts.type,
                    seed: opts.seed,
                    signal,
                    onProgress: (phase, done, total) => {
                        if (opts.json) return;
                        if (phase === "write") {
                            bar ??= new Progress("writing", total, "auto", (v, t) => `${formatBytes(v)} / ${formatBytes(t)}`);
                            bar.update(done);
                        } else if (done === 0) {
                            bar?.stop();
                            bar = undefined;
                            process.stderr.write(`quantizing to ${opts.type} with llama.cpp…\n`);
                        }
                    }
                });
                bar?.stop();
                if (opts.json) process.stdout.write(JSON.stringify(made) + "\n");
                else process.stdout.write(`wrote ${made.path}: ${made.preset}, ${made.type}, ${formatCount(made.parameterCount)} parameters, ` +
                    `${formatBytes(made.bytes)}, seed ${made.seed}, ${made.seconds.toFixed(1)} s\n`);
            } finally {
                bar?.stop();
            }
        });
}
