// Renders a model's Jinja chat template, as Hugging Face's apply_chat_template does.
import {Template} from "@huggingface/jinja";

export type ChatTemplateContext = {
    addGenerationPrompt: boolean, bosToken: string, eosToken: string,
    /** More variables for the template, such as enable_thinking. */
    variables?: Record<string, unknown>
};

/** The template itself rejected the messages (raise_exception): not a renderer limitation. */
export class ChatTemplateRefusal extends Error {}

// The renderer's own raise_exception throws a plain Error, indistinguishable from its
// "unsupported feature" errors, and cannot be overridden; calls are routed to ours.
const refuse = "__still_raise_exception";

const compiled = new Map<string, Template>();

export function renderChatTemplate(template: string, messages: readonly {role: string, content: string}[], ctx: ChatTemplateContext): string {
    let t = compiled.get(template);
    if (t == null) {
        t = new Template(template.replace(/\braise_exception(\s*\()/g, `${refuse}$1`));
        compiled.set(template, t);
    }
    return t.render({
        ...ctx.variables,
        messages: messages.map((m) => ({role: m.role, content: m.content})),
        add_generation_prompt: ctx.addGenerationPrompt,
        bos_token: ctx.bosToken,
        eos_token: ctx.eosToken,
        [refuse]: (message: unknown) => {
            throw new ChatTemplateRefusal(`the chat template refused the messages: ${String(message)}`);
        }
    });
}
