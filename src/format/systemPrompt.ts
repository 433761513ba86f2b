// The system prompt that asks a model for the long-form thought format.
import fs from "node:fs/promises";
import {DataError} from "../errors.js";
import {MARKERS} from "./markers.js";

export const DEFAULT_SYSTEM_PROMPT = [
    "You solve problems by thinking slowly and carefully before you answer.",
    `First write your reasoning between ${MARKERS.beginThought} and ${MARKERS.endThought}: explore the problem, try approaches, ` +
    "check each step, notice mistakes and correct them, and keep going until you are confident.",
    `Then write the final solution between ${MARKERS.beginSolution} and ${MARKERS.endSolution}: a clear, self-contained ` +
    "account of the steps that lead to the answer, with the final answer in \\boxed{}.",
    "Write nothing outside these two parts."
].join("\n");

/** Reads a system prompt from a UTF-8 text file (trimmed; an empty file is an error). */
export async function loadSystemPrompt(file: string): Promise<string> {
    let text: string;
    try {
        text = await fs.readFile(file, "utf8");
    } catch (err) {
        throw new DataError(file, `cannot read the system prompt: ${(err as Error).message}`, undefined, undefined, {cause: err});
    }
    text = text.replace(/^\uFEFF/, "").trim();
    if (text === "") throw new DataError(file, "the system prompt file is empty");
    return text;
}

/** The system prompt a run uses: `systemFile`'s text, else `system` (null: none), else the built-in one. */
export async function resolveSystemPrompt(o: {system?: string | null | undefined, systemFile?: string | undefined}): Promise<string | null> {
    if (o.systemFile != null) return loadSystemPrompt(o.systemFile);
    return o.system === undefined ? DEFAULT_SYSTEM_PROMPT : o.system;
}
