// Builds a response in the long-form thought format from its two parts.
import {OptionError} from "../errors.js";
import {MARKERS} from "./markers.js";

const ALL_MARKERS = Object.values(MARKERS);

/** `<|begin_of_thought|>\n\n…\n\n<|end_of_thought|>\n\n<|begin_of_solution|>\n\n…\n\n<|end_of_solution|>` */
export function formatThought(parts: {thought: string, solution: string}): string {
    const thought = parts.thought.trim();
    const solution = parts.solution.trim();
    if (thought === "") throw new OptionError("formatThought needs a non-empty thought.");
    if (solution === "") throw new OptionError("formatThought needs a non-empty solution.");
    for (const [name, text] of [["thought", thought], ["solution", solution]] as const) {
        const marker = ALL_MARKERS.find((m) => text.includes(m));
        if (marker != null) throw new OptionError(`the ${name} contains the marker ${marker}; remove it first.`);
    }
    return `${MARKERS.beginThought}\n\n${thought}\n\n${MARKERS.endThought}\n\n${MARKERS.beginSolution}\n\n${solution}\n\n${MARKERS.endSolution}`;
}
