// Supervised fine-tuning (STILL-2's imitate step): LoRA (or full) training on chat
// examples with the loss on the whole answer or only on its thought.
import {z} from "zod";
import {readRecords} from "../io/jsonl.js";
import type {ChatMessage, Model} from "../engine/Model.js";
import {DataError, parseOptions} from "../errors.js";
import {assistantMessage, chatMessageSchema} from "../format/chatMessage.js";
import {buildTrainingMessages} from "../format/buildChatMessages.js";
import {type RunHooks, type TrainResult, type WrittenData, fitLengths, runTraining} from "./runTraining.js";
import {type LossMask, TokenizeError, type TokenizedAnswer, tokenizeChat, tokenizeRaw} from "./tokenizeForTraining.js";
import type {TrainingFile} from "./TrainingFile.js";
import {trainingOptionsSchema} from "./trainingOptions.js";

/**
 * One example: a conversation ending with the assistant's answer; a question with its
 * long-form answer (put after the system prompt); raw prompt and completion text; or TRL's
 * layouts (`messages`, and prompt/completion as message lists).
 */
export const sftExampleSchema = z.union([
    z.object({messages: z.array(chatMessageSchema).min(2)}),
    z.object({question: z.string().min(1), response: z.string().min(1)}),
    z.object({prompt: z.string(), completion: z.string().min(1)}),
    // TRL's conversational prompt-completion layout: the prompt's messages, then the answer as one assistant message
    z.object({prompt: z.array(chatMessageSchema).min(1), completion: z.array(assistantMessage).length(1, "one assistant message")})
        .transform((e) => ({messages: [...e.prompt, ...e.completion]}))
]);
export type SftExample = z.input<typeof sftExampleSchema>;

export const sftOptionsSchema = trainingOptionsSchema.extend({
    mask: z.enum(["completion", "thought"]).describe("Tokens with loss: every answer token (completion) or only the thought's").default("completion")
});
export type SftOptions = z.input<typeof sftOptionsSchema> & RunHooks & {
    /** A JSONL file of examples, or the examples. */
    data: string | Iterable<SftExample> | AsyncIterable<SftExample>
};

export async function sft(options: SftOptions): Promise<TrainResult> {
    const {data, signal, onProgress, ...rest} = options;
    const o = parseOptions(sftOptionsSchema, rest, "training options");
    return runTraining("sft", o, [], {...(signal == null ? {} : {signal}), ...(onProgress == null ? {} : {onProgress})},
        (model, file) => writeSftData(model, file, data, o.mask, o.ctx, o.overflow, o.systemPrompt, signal));
}

/** @internal Tokenizes the examples into the trainer's input file. */
export async function writeSftData(model: Model, file: TrainingFile, data: SftOptions["data"], mask: LossMask, ctx: number,
                            overflow: "error" | "truncate", systemPrompt: string | null | undefined, signal?: AbortSignal): Promise<WrittenData> {
    const out: WrittenData = {records: 0, truncated: 0, sources: []};
    for await (const {where, value, fail} of readRecords(data, sftExampleSchema, {item: "example", items: "examples"}, signal)) {
        let t: TokenizedAnswer;
        try {
            t = "messages" in value ? tokenizeChat(model, value.messages as ChatMessage[])
                : "question" in value ? tokenizeChat(model, buildTrainingMessages(value, systemPrompt === undefined ? {} : {systemPrompt}))
                : tokenizeRaw(model, value.prompt, value.completion);
        } catch (err) {
            if (err instanceof TokenizeError) throw fail(err.message);
            throw err;
        }
        const answerWeights = mask === "thought" ? t.thoughtWeights : t.completionWeights;
        if (answerWeights == null)
            throw fail(`the answer has no ${"<|begin_of_thought|> … <|end_of_thought|>"} part, which mask "thought" trains on`);
        const fit = fitLengths(t.prompt.length, [t.completion.length], ctx, overflow);
        if (typeof fit === "string") throw fail(fit);
        const n = fit == null ? t.completion.length : fit[0]!;
        if (fit != null) out.truncated++;
        const tokens = [...t.prompt, ...t.completion.slice(0, n)];
        const weights = [...t.prompt.map(() => 0), ...answerWeights.slice(0, n)];
        weights[0] = 0;
        await file.addSft({tokens, weights});
        out.records++;
        out.sources.push(where);
    }
    if (out.records === 0) throw new DataError(typeof data === "string" ? data : "examples", "no training examples.");
    return out;
}
