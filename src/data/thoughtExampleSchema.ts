// A long-form thought example for imitation (SFT): a question and a response in the
// thought/solution format.
import {z} from "zod";

export const thoughtExampleSchema = z.object({
    question: z.string().min(1),
    response: z.string().min(1),
    domain: z.string().min(1).default("math"),
    source: z.string().optional()
});
export type ThoughtExample = z.infer<typeof thoughtExampleSchema>;
