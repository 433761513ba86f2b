// `still adapter export-peft | import-peft`: LoRA adapters to and from PEFT's folder, so
// vLLM, transformers or TRL use what still trained, and still continues what they trained.
import type {Command} from "commander";
import {z} from "zod";
import {OptionError} from "../errors.js";
import {mergeAdapters, mergeOptionsSchema} from "../interop/merge.js";
import {exportPeft, importPeft} from "../interop/peft.js";
import {addOptions, parseCli} from "./cliOptions.js";

const exportSchema = z.object({
    adapter: z.string().min(1).describe("still's LoRA adapter (llama.cpp's adapter GGUF)"),
    out: z.string().min(1).describe("The PEFT folder to write (adapter_config.json, adapter_model.safetensors)"),
    model: z.string().min(1).optional().describe("Its base model GGUF: checked against, and needed for llama (its head counts)"),
    baseName: z.string().min(1).optional().describe("base_model_name_or_path in adapter_config.json (a Hugging Face id or path)"),
    json: z.boolean().describe("Print the result as one JSON object").default(false)
});
const exportFlags = ["--adapter <file>", "--out <dir>", "--model <file>", "--base-name <id>", "--json"];

const importSchema = z.object({
    peft: z.string().min(1).describe("A PEFT LoRA folder (adapter_config.json, adapter_model.safetensors)"),
    out: z.string().min(1).describe("The adapter GGUF to write"),
    model: z.string().min(1).describe("The base model GGUF it is for (architecture, shapes, head counts)"),
    json: z.boolean().describe("Print the result as one JSON object").default(false)
});
const importFlags = ["--peft <dir>", "--out <file>", "--model <file>", "--json"];

const m = mergeOptionsSchema.shape;
const mergeSchema = z.object({
    model: m.model,
    adapter: z.array(z.string().min(1)).min(1).describe("LoRA adapter GGUF (repeat for several, merged together)"),
    adapterScale: z.array(z.number()).describe("Scale of each adapter, in order (one value: all of them)").default([]),
    out: m.out,
    type: m.type,
    threads: m.threads,
    json: z.boolean().describe("Print the result as one JSON object").default(false)
});
const mergeFlags = ["--model <file>", "--adapter <file...>", "--adapter-scale <s...>", "--out <file>", "--type <type>", "--threads <n>", "--json"];

export function adapterCommand(program: Command, signal: AbortSignal) {
    addOptions(program.command("merge")
        .description("Write a base model plus LoRA adapters as one GGUF (for llama-server, Ollama, LM Studio), optionally quantized"), mergeSchema, mergeFlags)
        .action(async (raw: Record<string, unknown>) => {
            const o = parseCli(mergeSchema, raw, mergeFlags);
            if (o.adapterScale.length > 1 && o.adapterScale.length !== o.adapter.length)
                throw new OptionError(`--adapter-scale gives ${o.adapterScale.length} scales for ${o.adapter.length} adapters: give one for each, or one for all.`);
            const adapters = o.adapter.map((p, i) => ({path: p, scale: o.adapterScale[o.adapterScale.length === 1 ? 0 : i] ?? 1}));
            const r = await mergeAdapters({model: o.model, adapters, out: o.out, type: o.type, ...(o.threads == null ? {} : {threads: o.threads})}, {signal});
            process.stdout.write(o.json ? JSON.stringify(r) + "\n"
                : `wrote ${r.out}: ${r.tensors} ${r.architecture} weights merged from ${r.adapters} adapter${r.adapters === 1 ? "" : "s"}` +
                  `${r.type === "keep" ? "" : `, quantized to ${r.type}`}, ${(r.bytes / 2 ** 20).toFixed(1)} MiB in ${r.seconds.toFixed(1)} s\n`);
        });

    const adapter = program.command("adapter").description("Convert LoRA adapters between still (llama.cpp's GGUF) and PEFT");
    addOptions(adapter.command("export-peft").description("Write a LoRA adapter GGUF as a PEFT folder (for vLLM --enable-lora, transformers, TRL)"),
        exportSchema, exportFlags)
        .action(async (raw: Record<string, unknown>) => {
            const o = parseCli(exportSchema, raw, exportFlags);
            const r = await exportPeft(o.adapter, o.out, {
                ...(o.model == null ? {} : {model: o.model}),
                ...(o.baseName == null ? {} : {baseModelName: o.baseName})
            });
            process.stdout.write(o.json ? JSON.stringify(r) + "\n"
                : `wrote ${r.dir}: ${r.architecture} LoRA, rank ${r.rank}, alpha ${r.alpha}, ${r.tensors} tensors on ${r.targetModules.join(", ")}\n`);
        });
    addOptions(adapter.command("import-peft").description("Write a PEFT LoRA folder as an adapter GGUF that still and llama.cpp load"),
        importSchema, importFlags)
        .action(async (raw: Record<string, unknown>) => {
            const o = parseCli(importSchema, raw, importFlags);
            const r = await importPeft(o.peft, o.out, {model: o.model});
            process.stdout.write(o.json ? JSON.stringify(r) + "\n" : `wrote ${r.out}: ${r.architecture} LoRA, rank ${r.rank}, alpha ${r.alpha}, ${r.tensors} tensors\n`);
        });
}
