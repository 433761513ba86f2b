// A chat message as chat templates take it.
import {z} from "zod";

export const chatMessageSchema = z.object({role: z.string().min(1), content: z.string()});
export type ChatMessage = z.infer<typeof chatMessageSchema>;

/** An answer as TRL's conversational layouts hold it: one assistant message. */
export const assistantMessage = chatMessageSchema.extend({role: z.literal("assistant")});
