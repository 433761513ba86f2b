// `still make-model`: generate a built-in model (random weights) as GGUF.
import type {Command} from "commander";
import {z} from "zod";
import {makeModel, modelTypes} from "../models/makeModel.js";
import {presetNames, presets} from "../models/presets.js";
import {OptionError} from "../errors.js";
import {Progress, formatBytes, formatCount} from "./Progress.js";

const optionsSchema = z.object({
    preset: z.enum(presetNames as [string, ...string[]]).optional(),
    out: z.string().min(1).optional(),
    type: z.enum(modelTypes).default("f32"),
    seed: z.coerce.number().int().min(0).default(0),
    json: z.boolean().default(false),
    list: z.boolean().default(false)
});

export function makeModelCommand(program: Command, signal: AbortSignal) {
    program.command("make-model")
        .description("Generate a built-in model as GGUF (deterministic random weights, byte-level vocabulary with the STILL markers)")
        .option("--preset <name>", `one of: ${presetNames.join(", ")}`)
        .option("--out <file>", "where to write the .gguf")
        .option("--type <type>", `tensor type: ${modelTypes.join(", ")}`, "f32")
        .option("--seed <n>", "random seed", "0")
        .option("--json", "print the result as one JSON object")
        .option("--list", "list the presets and exit")
        .action(async (raw: unknown) => {
            const parsed = optionsSchema.safeParse(raw);
            if (!parsed.success) throw new OptionError(`invalid options: ${z.prettifyError(parsed.error)}`);
            const opts = parsed.data;
            if (opts.list) {
                for (const name of presetNames) process.stdout.write(`${name.padEnd(14)} ${presets[name].description}\n`);
                return;
            }
            if (opts.preset == null || opts.out == null) throw new OptionError("make-model needs --preset and --out (see --list for presets).");

            let bar: Progress | undefined;
            try {
                const made = await makeModel({
                    preset: opts.preset as keyof typeof presets,
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
