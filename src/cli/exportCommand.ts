// `still export`: a run's training data for other trainers (TRL, LLaMA-Factory).
import type {Command} from "commander";
import {z} from "zod";
import {exportRun, exportTargets} from "../interop/exportData.js";
import {addOptions, commonFields, parseCli} from "./cliOptions.js";

const schema = z.object({
    run: z.string().min(1).describe("A run folder (runs/<name>)"),
    out: z.string().min(1).describe("Folder to write: trl/ and llamafactory/ (with its dataset_info.json)"),
    to: z.array(z.enum(exportTargets)).min(1).describe(`Which layouts: ${exportTargets.join(", ")}`).default([...exportTargets]),
    json: commonFields.json
});
const flags = ["--run <dir>", "--out <dir>", "--to <list>", "--json"];

export function exportCommand(program: Command, signal: AbortSignal) {
    addOptions(program.command("export")
        .description("Write a run's data (SFT examples, DPO pairs, RL prompts with answers) in TRL's and LLaMA-Factory's layouts"), schema, flags)
        .action(async (raw: Record<string, unknown>) => {
            const o = parseCli(schema, raw, flags);
            const r = await exportRun(o.run, o.out, {targets: o.to, signal});
            process.stdout.write(o.json ? JSON.stringify(r) + "\n"
                : `wrote ${o.out}:\n${Object.entries(r.files).map(([f, n]) => `  ${f}: ${n} ${f.endsWith(".json") ? "datasets" : "records"}`).join("\n")}\n`);
        });
}
