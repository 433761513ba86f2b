// DeepSeek-R1 / QwQ responses (`<think>` thought `</think>` answer) in the long-form
// thought format. R1's chat template opens the `<think>` itself, so generated text often
// starts inside the thought: an opening tag is optional, the closing one is not.
import {formatThought} from "./formatThought.js";
import {MARKERS} from "./markers.js";

export type ThinkConversion =
    | {ok: true, thought: string, solution: string, response: string}
    | {ok: false, reason: string};

/** Converts a `<think>…</think>answer` response; says why when it cannot. */
export function convertThinkTags(text: string): ThinkConversion {
    const close = text.indexOf("</think>");
    if (close < 0) return {ok: false, reason: "no </think>: the thought never ends (truncated?)"};
    if (text.indexOf("</think>", close + 1) >= 0) return {ok: false, reason: "</think> appears more than once"};
    const before = text.slice(0, close);
    const open = before.indexOf("<think>");
    if (open >= 0 && before.slice(0, open).trim() !== "") return {ok: false, reason: "text before <think>"};
    if (before.indexOf("<think>", open + 1) > open && open >= 0) return {ok: false, reason: "<think> appears more than once"};
    const thought = (open >= 0 ? before.slice(open + "<think>".length) : before).trim();
    const solution = text.slice(close + "</think>".length).trim();
    if (thought === "") return {ok: false, reason: "the thought is empty"};
    if (solution === "") return {ok: false, reason: "no answer after </think>"};
    if (Object.values(MARKERS).some((m) => text.includes(m))) return {ok: false, reason: "the text already contains thought/solution markers"};
    return {ok: true, thought, solution, response: formatThought({thought, solution})};
}
