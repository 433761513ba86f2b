// A run's training data in the layouts other trainers read, for when a model outgrows one
// machine: TRL (conversational `messages`, prompt/completion, preference prompt/chosen/
// rejected, prompts with answers for GRPO) and LLaMA-Factory (sharegpt and alpaca, SFT and
// ranking, with the dataset_info.json that names them). The data: the imitation thoughts,
// every round's selected trajectories and DPO pairs, and the problems with their answers,
// each asked with the run's own system prompt and question wording.
import fs from "node:fs";
import fsp from "node:fs/promises";
import path from "node:path";
import {z} from "zod";
import {loadLongFormThoughts} from "../data/loadLongFormThoughts.js";
import {loadProblems} from "../data/loadMathProblems.js";
import {DataError} from "../errors.js";
import {problemMessages} from "../format/buildChatMessages.js";
import type {ChatMessage} from "../format/chatMessage.js";
import {resolveSystemPrompt} from "../format/systemPrompt.js";
import {readJsonlFile, writeJsonAtomic, writeJsonlAtomic} from "../io/jsonl.js";
import {RunDir} from "../loop/RunDir.js";

export const exportTargets = ["trl", "llamafactory"] as const;
export type ExportTarget = (typeof exportTargets)[number];

export type ExportResult = {
    /** Files written, by name relative to the output folder, with their record counts. */
    files: Record<string, number>,
    out: string
};

type Sft = {system: string | null, question: string, response: string};
type Pair = {system: string | null, question: string, chosen: string, rejected: string};

const selectedRowSchema = z.object({question: z.string(), response: z.string()});
const pairRowSchema = z.object({question: z.string(), chosen: z.string(), rejected: z.string()});

/** Exports the data of the run in `runDir` into `out` (subfolders trl/ and llamafactory/). */
export async function exportRun(runDir: string, out: string, o: {targets?: readonly ExportTarget[], signal?: AbortSignal} = {}): Promise<ExportResult> {
    const run = await RunDir.open(runDir);
    const config = run.config;
    const p = config.prompt;
    const system = await resolveSystemPrompt({system: p.system === undefined && p.format === "think" ? null : p.system, systemFile: p.systemFile});
    const strict = {policy: "strict" as const, ...(o.signal == null ? {} : {signal: o.signal})};

    const sft: Sft[] = [];
    if (config.data.thoughts != null && fs.existsSync(config.data.thoughts))
        for (const t of (await loadLongFormThoughts(config.data.thoughts, strict)).items) sft.push({system, question: t.question, response: t.response});
    const pairs: Pair[] = [];
    for (let k = 1; fs.existsSync(run.path(`round-${k}`)); k++) {
        const selected = run.path(`round-${k}`, "selected.jsonl");
        if (fs.existsSync(selected)) for (const s of await readJsonlFile(selected, selectedRowSchema)) sft.push({system, ...s});
        const pairFile = run.path(`round-${k}`, "pairs.jsonl");
        if (fs.existsSync(pairFile)) for (const x of await readJsonlFile(pairFile, pairRowSchema)) pairs.push({system, ...x});
    }
    const problems = fs.existsSync(config.data.problems) ? (await loadProblems(config.data.problems, strict)).items.filter((x) => x.type !== "code") : [];
    if (sft.length === 0 && pairs.length === 0 && problems.length === 0)
        throw new DataError(runDir, "holds no training data to export (no thoughts, selected trajectories, pairs or problems)");

    const targets = o.targets ?? exportTargets;
    const files: Record<string, number> = {};
    const write = async (name: string, rows: readonly unknown[]) => {
        if (rows.length === 0) return;
        const file = path.join(out, name);
        await fsp.mkdir(path.dirname(file), {recursive: true});
        await writeJsonlAtomic(file, rows);
        files[name] = rows.length;
    };
    const prompt = (x: {system: string | null, question: string}): ChatMessage[] =>
        [...(x.system == null || x.system.trim() === "" ? [] : [{role: "system", content: x.system}]), {role: "user", content: x.question}];
    const assistant = (content: string): ChatMessage[] => [{role: "assistant", content}];

    if (targets.includes("trl")) {
        await write("trl/sft_messages.jsonl", sft.map((x) => ({messages: [...prompt(x), ...assistant(x.response)]})));
        await write("trl/sft_prompt_completion.jsonl", sft.map((x) => ({prompt: prompt(x), completion: assistant(x.response)})));
        await write("trl/dpo.jsonl", pairs.map((x) => ({prompt: prompt(x), chosen: assistant(x.chosen), rejected: assistant(x.rejected)})));
        await write("trl/grpo_prompts.jsonl", problems.map((x) => ({
            prompt: problemMessages(x, system), answer: x.answer, ...(x.alternatives == null ? {} : {answers: [x.answer, ...x.alternatives]}),
            id: x.id, type: x.type, domain: x.domain
        })));
    }
    if (targets.includes("llamafactory")) {
        const sharegpt = (x: {system: string | null, question: string}) => ({
            conversations: [{from: "human", value: x.question}], ...(x.system == null ? {} : {system: x.system})
        });
        await write("llamafactory/still_sft_sharegpt.jsonl", sft.map((x) => {
            const s = sharegpt(x);
            return {...s, conversations: [...s.conversations, {from: "gpt", value: x.response}]};
        }));
        await write("llamafactory/still_sft_alpaca.jsonl", sft.map((x) => ({instruction: x.question, input: "", output: x.response, ...(x.system == null ? {} : {system: x.system})})));
        await write("llamafactory/still_dpo_sharegpt.jsonl", pairs.map((x) => ({...sharegpt(x), chosen: {from: "gpt", value: x.chosen}, rejected: {from: "gpt", value: x.rejected}})));
        await write("llamafactory/still_dpo_alpaca.jsonl", pairs.map((x) => ({instruction: x.question, input: "", chosen: x.chosen, rejected: x.rejected,
            ...(x.system == null ? {} : {system: x.system})})));
        const info: Record<string, unknown> = {};
        const tags = {role_tag: "from", content_tag: "value", user_tag: "human", assistant_tag: "gpt"};
        const entry = (name: string, e: Record<string, unknown>) => {
            if (files[`llamafactory/${name}.jsonl`] != null) info[name] = {file_name: `${name}.jsonl`, ...e};
        };
        entry("still_sft_sharegpt", {formatting: "sharegpt", columns: {messages: "conversations", system: "system"}, tags});
        entry("still_sft_alpaca", {formatting: "alpaca", columns: {prompt: "instruction", query: "input", response: "output", system: "system"}});
        entry("still_dpo_sharegpt", {formatting: "sharegpt", ranking: true, columns: {messages: "conversations", chosen: "chosen", rejected: "rejected", system: "system"}, tags});
        entry("still_dpo_alpaca", {formatting: "alpaca", ranking: true, columns: {prompt: "instruction", query: "input", chosen: "chosen", rejected: "rejected", system: "system"}});
        if (Object.keys(info).length > 0) {
            await writeJsonAtomic(path.join(out, "llamafactory", "dataset_info.json"), info);
            files["llamafactory/dataset_info.json"] = Object.keys(info).length;
        }
    }
    return {files, out};
}
