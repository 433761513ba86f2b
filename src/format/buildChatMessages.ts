// Prompt assembly as chat messages for a model's chat template.
import {codeInstruction} from "../code/codeSpec.js";
import type {Problem} from "../data/problemSchema.js";
import type {ChatMessage} from "./chatMessage.js";
import {DEFAULT_SYSTEM_PROMPT} from "./systemPrompt.js";

export type PromptOptions = {
    /** The system prompt; default DEFAULT_SYSTEM_PROMPT; null for none. */
    systemPrompt?: string | null,
    /** Multiple-choice options, listed after the question as (A) …, (B) … */
    choices?: readonly string[]
};

/** The user's turn: the question, then the options when there are any. */
export function formatQuestion(question: string, choices?: readonly string[]): string {
    const q = question.trim();
    if (choices == null || choices.length === 0) return q;
    const lines = choices.map((c, i) => `(${String.fromCharCode(65 + i)}) ${c.trim()}`);
    return `${q}\n\n${lines.join("\n")}`;
}

/** [system?, user] for generation. */
export function buildChatMessages(question: string, options: PromptOptions = {}): ChatMessage[] {
    const system = options.systemPrompt === undefined ? DEFAULT_SYSTEM_PROMPT : options.systemPrompt;
    const messages: ChatMessage[] = [];
    if (system != null && system.trim() !== "") messages.push({role: "system", content: system});
    messages.push({role: "user", content: formatQuestion(question, options.choices)});
    return messages;
}

/** A problem's question as the model is asked it: for code, with the language and shape asked for. */
export function problemQuestion(problem: Problem): string {
    return problem.code == null ? problem.question : `${problem.question.trim()}\n\n${codeInstruction(problem.code)}`;
}

/** [system?, user] for a problem: its question (problemQuestion) and its options. */
export function problemMessages(problem: Problem, systemPrompt?: string | null): ChatMessage[] {
    return buildChatMessages(problemQuestion(problem), {...(systemPrompt === undefined ? {} : {systemPrompt}), ...(problem.choices == null ? {} : {choices: problem.choices})});
}

/** [system?, user, assistant] for training on a long-form thought example. */
export function buildTrainingMessages(example: {question: string, response: string}, options: PromptOptions = {}): ChatMessage[] {
    return [...buildChatMessages(example.question, options), {role: "assistant", content: example.response}];
}
