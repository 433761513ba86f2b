// `still info MODEL`: what a GGUF model is and how this machine runs it.
import path from "node:path";
import type {Command} from "commander";
import {z} from "zod";
import {getBackend} from "../engine/binding.js";
import {loadModel, loadModelOptionsSchema, type Model} from "../engine/Model.js";
import {addOptions, parseCli} from "./cliOptions.js";
import {MARKERS, type MarkerName} from "../format/markers.js";
import {Progress, formatBytes, formatCount} from "./Progress.js";

const optionsSchema = loadModelOptionsSchema.pick({gpuLayers: true, variant: true, vocabOnly: true}).extend({
    json: z.boolean().describe("Print one JSON object").default(false)
});
const flags = ["--json", "--gpu-layers <n>", "--variant <name>", "--vocab-only"];

export function infoCommand(program: Command, signal: AbortSignal) {
    const cmd = program.command("info")
        .description("Show a GGUF model's facts: architecture, size, context, vocabulary, special tokens, STILL markers, chat template")
        .argument("<model>", "path to a .gguf file");
    addOptions(cmd, optionsSchema, flags)
        .action(async (modelPath: string, raw: Record<string, unknown>) => {
            const opts = parseCli(optionsSchema, raw, flags);
            const progress = opts.json ? undefined : new Progress("loading", 100, "auto", (v) => `${v}%`);
            let model: Model;
            try {
                model = await loadModel(modelPath, {
                    gpuLayers: opts.gpuLayers,
                    vocabOnly: opts.vocabOnly,
                    ...(opts.variant == null ? {} : {variant: opts.variant}),
                    signal,
                    onProgress: (f) => progress?.update(Math.round(f * 100))
                });
            } finally {
                progress?.stop();
            }
            try {
                if (opts.json) printJson(model);
                else printHuman(model);
            } finally {
                await model.dispose();
            }
        });
}

function printJson(model: Model) {
    const {facts, gguf} = model;
    process.stdout.write(JSON.stringify({
        path: path.resolve(model.path),
        ...facts,
        gguf: {version: gguf.version, fileSize: gguf.fileSize, tensorCount: gguf.tensorCount, splitParts: gguf.splitParts, metadata: gguf.metadata}
    }, null, 2) + "\n");
}

function printHuman(model: Model) {
    const f = model.facts;
    const tokenText = (id: number | null) => (id == null ? "none" : `${id} ${JSON.stringify(model.detokenize([id], {special: true}))}`);
    const markers = (Object.keys(MARKERS) as MarkerName[])
        .map((k) => `${MARKERS[k]} ${f.markers[k] ?? "(not one token)"}`);
    const specials = f.specialTokens.slice(0, 12).map((t) => `${t.id} ${JSON.stringify(t.text)}`).join(", ") +
        (f.specialTokens.length > 12 ? `, … (${f.specialTokens.length} in all)` : "");
    const template = f.chatTemplate == null ? "none" : `${f.chatTemplate.length} characters` +
        (f.chatTemplate.includes("<|im_start|>") ? " (ChatML)" : "");
    const rows: [string, string][] = [
        ["model", path.resolve(model.path)],
        ["name", f.name || "(none)"],
        ["architecture", f.architecture],
        ["parameters", `${formatCount(f.parameterCount)} (${f.parameterCount.toLocaleString("en-US")})`],
        ["file type", `${f.fileType}, ${formatBytes(model.gguf.fileSize)} on disk`],
        ["context", `${f.contextLength.toLocaleString("en-US")} tokens (training)`],
        ["shape", `${f.layerCount} layers × ${f.embeddingLength}, ${f.headCount} heads (${f.headCountKv} KV)`],
        ["vocabulary", `${f.vocabSize.toLocaleString("en-US")} tokens (${f.vocabType})`],
        ["bos / eos / eot", `${tokenText(f.tokens.bos)} / ${tokenText(f.tokens.eos)} / ${tokenText(f.tokens.eot)}`],
        ["end of generation", f.eog.join(", ") || "none"],
        ["special tokens", specials || "none"],
        ["STILL markers", markers.join("\n" + " ".repeat(20))],
        ["chat template", template],
        ["backend", `${f.backend.variant} (llama.cpp ${f.backend.llamaRelease}), GPU layers ${f.gpuLayers < 0 ? "all" : f.gpuLayers}`],
        ["devices", f.backend.devices.map((d) => `${d.name} (${d.type}, ${d.description})`).join("; ")],
        ["Q8_0 kernel", getBackend().binding.q8Kernel().status]
    ];
    if (f.backend.warning) rows.push(["warning", f.backend.warning]);
    for (const [k, v] of rows) process.stdout.write(`${k.padEnd(19)} ${v}\n`);
}
