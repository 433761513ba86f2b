// Turns training examples into the token ids and loss weights the trainer reads, with
// the model's own chat template and tokenizer. The prompt is rendered with the generation
// prompt and tokenized on its own, the answer is the rest of the rendered conversation:
// the same split the rollout engine and the scorer use, so the trained tokens are the
// tokens the model generates.
import type {ChatMessage, Model} from "../engine/Model.js";
import {thoughtSpans} from "../format/parseThought.js";

/** Which answer tokens carry loss: all of the answer, or only its thought. */
export type LossMask = "completion" | "thought";

export type TokenizedAnswer = {
    prompt: number[],
    completion: number[],
    /** 1 on every answer token up to and including the end-of-turn token, 0 after it. */
    completionWeights: number[],
    /** 1 from <|begin_of_thought|> to <|end_of_thought|> (or over <think> … </think>), inclusive; null without a thought. */
    thoughtWeights: number[] | null
};

export class TokenizeError extends Error {}

/** A conversation whose last message is the assistant's answer. */
export function tokenizeChat(model: Model, messages: readonly ChatMessage[]): TokenizedAnswer {
    const last = messages.at(-1);
    if (last == null || last.role !== "assistant") throw new TokenizeError("the last message must be the assistant's answer");
    const promptText = model.applyChatTemplate(messages.slice(0, -1), {addGenerationPrompt: true});
    const fullText = model.applyChatTemplate(messages, {addGenerationPrompt: false});
    if (!fullText.startsWith(promptText))
        throw new TokenizeError("the chat template does not render the conversation as its prompt followed by the answer");
    return tokenizeSplit(model, promptText, fullText.slice(promptText.length), true);
}

/** Raw text, no template: the prompt (BOS added as the model asks) and the completion. */
export function tokenizeRaw(model: Model, prompt: string, completion: string): TokenizedAnswer {
    return tokenizeSplit(model, prompt, completion, false);
}

/** Shares the prompt tokens of one conversation prefix between several answers (DPO). */
export function tokenizeAnswers(model: Model, prefix: readonly ChatMessage[] | string, answers: readonly string[]): TokenizedAnswer[] {
    if (typeof prefix === "string") return answers.map((a) => tokenizeRaw(model, prefix, a));
    return answers.map((a) => tokenizeChat(model, [...prefix, {role: "assistant", content: a}]));
}

function tokenizeSplit(model: Model, promptText: string, completionText: string, chat: boolean): TokenizedAnswer {
    // the prompt exactly as the rollout engine and the scorer tokenize it
    const prompt = model.tokenizePrompt(promptText);
    const completion = model.tokenize(completionText, {special: true, addSpecial: false});
    if (completion.length === 0) throw new TokenizeError("the answer is empty");
    const eog = new Set(model.facts.eog);

    // a chat answer ends with the end-of-turn token; what the template puts after it is not trained
    const completionWeights = completion.map(() => 1);
    if (chat) {
        const end = completion.findIndex((t) => eog.has(t));
        if (end >= 0) for (let i = end + 1; i < completion.length; i++) completionWeights[i] = 0;
    }
    return {prompt, completion, completionWeights, thoughtWeights: thoughtWeights(model, completion, completionText)};
}

/**
 * Marks the tokens that overlap the thought, found by byte offsets: each token's bytes
 * (special tokens as their text) laid end to end rebuild the answer's bytes.
 */
function thoughtWeights(model: Model, tokens: readonly number[], text: string): number[] | null {
    // the thought with its markers, in the answer's own form (STILL markers or think tags)
    const span = thoughtSpans(text).markedThought;
    if (span == null) return null;
    const startByte = Buffer.byteLength(text.slice(0, span[0]));
    const endByte = Buffer.byteLength(text.slice(0, span[1]));
    const weights: number[] = [];
    let offset = 0;
    for (const t of tokens) {
        const n = model.detokenizeBytes([t], {special: true}).length;
        weights.push(offset < endByte && offset + n > startByte ? 1 : 0);
        offset += n;
    }
    if (offset === Buffer.byteLength(text)) return weights;
    // tokenizers that add or drop spaces (SentencePiece): find the markers as tokens
    const {beginThought, endThought} = model.facts.markers;
    const b = beginThought == null ? -1 : tokens.indexOf(beginThought);
    const e = endThought == null || b < 0 ? -1 : tokens.indexOf(endThought, b);
    if (b < 0 || e < 0)
        throw new TokenizeError("the tokenizer does not rebuild the answer's text byte for byte and the thought markers are not single tokens, so the thought cannot be located");
    return tokens.map((_, i) => (i >= b && i <= e ? 1 : 0));
}
