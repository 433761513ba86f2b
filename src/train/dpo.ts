// Direct preference optimisation (STILL-2's self-improve step): pairs of answers to one
// prompt, chosen (e.g. correct) and rejected (incorrect), aligning the whole answer or
// only its thought, with an optional SFT term on the chosen answer. The reference model
// is the starting policy: its log-probabilities are computed once by the trainer and
// cached in the run directory (or given by the caller), so no second model is held.
import fs from "node:fs/promises";
import path from "node:path";
import {z} from "zod";
import {readRecords} from "../io/jsonl.js";
import type {ChatMessage, Model} from "../engine/Model.js";
import {DataError, OptionError, parseOptions} from "../errors.js";
import {assistantMessage, chatMessageSchema} from "../format/chatMessage.js";
import {buildChatMessages} from "../format/buildChatMessages.js";
import {type RunHooks, type TrainResult, type WrittenData, fitLengths, runTraining} from "./runTraining.js";
import {TokenizeError, type TokenizedAnswer, tokenizeAnswers} from "./tokenizeForTraining.js";
import type {TrainingFile} from "./TrainingFile.js";
import {trainingOptionsSchema} from "./trainingOptions.js";

const NO_TEXT_PROMPT = {question: undefined as string | undefined, prompt: undefined as string | undefined};
const answerList = z.array(assistantMessage).length(1, "one assistant message");
const conversation = z.array(chatMessageSchema).min(2);
const samePrompt = (a: readonly ChatMessage[], b: readonly ChatMessage[]) => JSON.stringify(a.slice(0, -1)) === JSON.stringify(b.slice(0, -1));

/**
 * A pair: one prompt (a question, chat messages, or raw text) and two answers to it; or
 * TRL's conversational preference layouts: prompt messages with chosen and rejected as one
 * assistant message each, or (implicit prompt) two whole conversations that differ only in
 * their last, assistant, message.
 */
export const dpoPairSchema = z.union([
    z.object({
        question: z.string().min(1).optional(),
        messages: z.array(chatMessageSchema).min(1).optional(),
        prompt: z.string().optional(),
        chosen: z.string().min(1),
        rejected: z.string().min(1)
    }).refine((p) => [p.question, p.messages, p.prompt].filter((x) => x != null).length === 1,
        {message: "a pair needs exactly one of question, messages and prompt"}),
    z.object({prompt: z.array(chatMessageSchema).min(1), chosen: answerList, rejected: answerList})
        .transform((p) => ({...NO_TEXT_PROMPT, messages: p.prompt, chosen: p.chosen[0]!.content, rejected: p.rejected[0]!.content})),
    z.object({chosen: conversation, rejected: conversation})
        .refine((p) => p.chosen.at(-1)!.role === "assistant" && p.rejected.at(-1)!.role === "assistant" && samePrompt(p.chosen, p.rejected),
            {message: "chosen and rejected conversations must share every message but their last, an assistant's"})
        .transform((p) => ({...NO_TEXT_PROMPT, messages: p.chosen.slice(0, -1), chosen: p.chosen.at(-1)!.content, rejected: p.rejected.at(-1)!.content}))
]);
export type DpoPair = z.input<typeof dpoPairSchema>;

export const dpoOptionsSchema = trainingOptionsSchema.extend({
    beta: z.number().positive().describe("Temperature of the implicit reward β · (log π − log π_ref)").default(0.1),
    alpha: z.number().min(0).describe("Weight of the SFT term (mean NLL of the chosen answer) added to the DPO loss").default(0),
    align: z.enum(["response", "thought"]).describe("Tokens whose log-probabilities enter the DPO term: the whole answer or only its thought")
        .default("response"),
    loss: z.enum(["sigmoid", "ipo", "hinge"]).describe("sigmoid (DPO), ipo, or hinge").default("sigmoid"),
    referenceLogps: z.array(z.object({chosen: z.number(), rejected: z.number()})).optional()
        .describe("Reference log-probabilities per pair (summed over the aligned tokens), instead of the trainer's forward pass over the starting policy")
});
export type DpoOptions = z.input<typeof dpoOptionsSchema> & RunHooks & {
    /** A JSONL file of pairs, or the pairs. */
    pairs: string | Iterable<DpoPair> | AsyncIterable<DpoPair>
};

export async function dpo(options: DpoOptions): Promise<TrainResult> {
    const {pairs, signal, onProgress, ...rest} = options;
    const o = parseOptions(dpoOptionsSchema, rest, "DPO options");
    const extra = ["--beta", String(o.beta), "--sft-alpha", String(o.alpha), "--loss", o.loss];
    let written: WrittenData | undefined;
    return runTraining("dpo", o, extra, {...(signal == null ? {} : {signal}), ...(onProgress == null ? {} : {onProgress})},
        async (model, file) => (written = await writeDpoData(model, file, pairs, o.align, o.ctx, o.overflow, o.systemPrompt, signal)),
        async (workDir) => {
            const ref = path.join(workDir, "checkpoint.gguf.ref");
            if (o.referenceLogps != null) {
                if (o.referenceLogps.length !== written?.records)
                    throw new OptionError(`referenceLogps has ${o.referenceLogps.length} entries for ${written?.records} pairs.`);
                await writeReferenceLogps(ref, o.referenceLogps);
            } else if (!o.resume) {
                await fs.rm(ref, {force: true});
            }
        });
}

/** The trainer's reference log-prob file (native/trainer/io.h), without a data fingerprint. */
async function writeReferenceLogps(file: string, refs: readonly {chosen: number, rejected: number}[]) {
    const buf = Buffer.alloc(32 + 16 * refs.length);
    buf.write("STILLREF", 0, "latin1");
    buf.writeUInt32LE(1, 8);
    buf.writeBigUInt64LE(BigInt(refs.length), 16);
    buf.writeBigUInt64LE(0n, 24);
    refs.forEach((r, i) => {
        buf.writeDoubleLE(r.chosen, 32 + 16 * i);
        buf.writeDoubleLE(r.rejected, 40 + 16 * i);
    });
    await fs.writeFile(file, buf);
}

/** @internal Tokenizes the pairs into the trainer's input file. */
export async function writeDpoData(model: Model, file: TrainingFile, pairs: DpoOptions["pairs"], align: "response" | "thought", ctx: number,
                            overflow: "error" | "truncate", systemPrompt: string | null | undefined, signal?: AbortSignal): Promise<WrittenData> {
    const out: WrittenData = {records: 0, truncated: 0, sources: []};
    for await (const {where, value, fail} of readRecords(pairs, dpoPairSchema, {item: "pair", items: "pairs"}, signal)) {
        const prefix: readonly ChatMessage[] | string = value.prompt ?? value.messages
            ?? buildChatMessages(value.question!, systemPrompt === undefined ? {} : {systemPrompt});
        let c: TokenizedAnswer, r: TokenizedAnswer;
        try {
            [c, r] = tokenizeAnswers(model, prefix, [value.chosen, value.rejected]) as [TokenizedAnswer, TokenizedAnswer];
        } catch (err) {
            if (err instanceof TokenizeError) throw fail(err.message);
            throw err;
        }
        const alignWeights = (t: TokenizedAnswer, which: string) => {
            const w = align === "thought" ? t.thoughtWeights : t.completionWeights;
            if (w == null) throw fail(`the ${which} answer has no <|begin_of_thought|> … <|end_of_thought|> part, which align "thought" needs`);
            return w;
        };
        const cw = alignWeights(c, "chosen");
        const rw = alignWeights(r, "rejected");
        const fit = fitLengths(c.prompt.length, [c.completion.length, r.completion.length], ctx, overflow);
        if (typeof fit === "string") throw fail(fit);
        const [nc, nr] = fit ?? [c.completion.length, r.completion.length];
        if (fit != null) out.truncated++;
        const chosenWeights = cw.slice(0, nc);
        const rejectedWeights = rw.slice(0, nr);
        if (!chosenWeights.some((x) => x > 0) || !rejectedWeights.some((x) => x > 0))
            throw fail("after truncation an answer has no aligned token left; raise ctx");
        await file.addDpo({
            prompt: c.prompt,
            chosen: c.completion.slice(0, nc!), chosenWeights, chosenSftWeights: c.completionWeights.slice(0, nc),
            rejected: r.completion.slice(0, nr!), rejectedWeights
        });
        out.records++;
        out.sources.push(where);
    }
    if (out.records === 0) throw new DataError(typeof pairs === "string" ? pairs : "pairs", "no preference pairs.");
    return out;
}
