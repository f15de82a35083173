import type { ChatMessage, JsonSchema, LlmAdapter, TokenUsage } from '../types';

/** One generation, after role → model resolution; what a provider needs and nothing more. */
export interface ProviderCall {
  model: string;
  messages: ChatMessage[];
  temperature?: number;
  maxTokens?: number;
  jsonSchema?: JsonSchema;
  /** Sanitised schema name (`[a-zA-Z0-9_-]`). */
  schemaName: string;
  adapter?: LlmAdapter | null;
  /** Fields added to the request body as they are (an OpenAI-compatible server's own extensions). */
  extraBody?: Record<string, unknown>;
  seed?: number;
  /** Epoch ms by which this attempt must have ended: the whole call's deadline. */
  deadlineAt?: number;
  /**
   * Called with each piece of the answer as it is generated (about one token), by a provider
   * that generates incrementally; never by one that gets the answer in one piece. Live displays only.
   */
  onText?: (piece: string) => void;
}

export interface ProviderResult {
  /** The raw answer (think blocks not yet removed). */
  text: string;
  /** The model that answered, as the provider names it. */
  model: string;
  usage: TokenUsage;
  /** The token limit cut the answer off. */
  truncated: boolean;
}

export interface Provider {
  readonly name: 'openai' | 'local';
  /** One attempt; a transient failure is thrown as a retryable `ProviderFailure`. */
  generate(call: ProviderCall): Promise<ProviderResult>;
}

/** `messages` with `instruction` appended to the (first) system message, or prepended as one. */
export function withSystemInstruction(messages: ChatMessage[], instruction: string): ChatMessage[] {
  const first = messages.findIndex(m => m.role === 'system');
  if (first < 0) return [{ role: 'system', content: instruction }, ...messages];
  return messages.map((m, i) => (i === first ? { ...m, content: `${m.content}\n\n${instruction}` } : m));
}
