// How a run asks for and reads thinking: `format` says which form responses take (STILL's
// four markers, or the model's own <think>…</think> tags), `thinking` sets the chat
// template's enable_thinking switch (Qwen3's and others'; templates without it ignore it).
// Each format brings its own defaults: the system prompt (STILL's asks for the markers;
// a thinking model needs none), the stop strings and the switch.
import {z} from "zod";
import {MARKERS} from "./markers.js";
import {thoughtFormats, type ThoughtFormat} from "./parseThought.js";

export const thinkingFields = {
    format: z.enum(thoughtFormats)
        .describe("Responses in STILL's thought markers (still), or in the model's own <think>…</think> tags (think)").default("still"),
    thinking: z.boolean().optional()
        .describe("The chat template's enable_thinking switch (Qwen3 and others); default on for format think, off for still")
};

/** What every chat template rendering of a run is given. */
export function templateVariables(format: ThoughtFormat, thinking?: boolean | undefined): Record<string, unknown> {
    return {enable_thinking: thinking ?? format === "think"};
}

/** Strings that end a response of this format (after them, nothing more is asked for); end-of-turn tokens stop every format. */
export function formatStops(format: ThoughtFormat): string[] {
    return format === "still" ? [MARKERS.endSolution] : [];
}
