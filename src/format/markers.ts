// The STILL-2 long-form thought format: a response is
//   <|begin_of_thought|> thought steps <|end_of_thought|>
//   <|begin_of_solution|> final solution <|end_of_solution|>

export const MARKERS = {
    beginThought: "<|begin_of_thought|>",
    endThought: "<|end_of_thought|>",
    beginSolution: "<|begin_of_solution|>",
    endSolution: "<|end_of_solution|>"
} as const;

export type MarkerName = keyof typeof MARKERS;
