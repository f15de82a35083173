// Next-token probabilities of the base GGUF with and without LoRA adapter GGUFs, through node-llama-cpp.
// Usage: node gguf_adapter_check.mjs request.json  (request: {model, tokens, adapters: {name: path|null}, ids})
import { readFileSync } from 'fs';
import { getLlama } from 'node-llama-cpp';

const request = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const llama = await getLlama({ gpu: false, build: 'never' });
const model = await llama.loadModel({ modelPath: request.model });
const result = {};
for (const [name, adapter] of Object.entries(request.adapters)) {
  const context = await model.createContext({
    contextSize: 512,
    ...(adapter ? { lora: { adapters: [{ filePath: adapter }] } } : {})
  });
  const sequence = context.getSequence();
  const iterator = sequence.evaluateWithMetadata(request.tokens, { probabilities: true }, { temperature: 0 });
  const first = (await iterator.next()).value;
  await iterator.return();
  result[name] = request.ids.map(id => first.probabilities.get(id) ?? 0);
  await context.dispose();
}
console.log(JSON.stringify(result));
await model.dispose();
