test('dbg', async () => {
  let t = Date.now();
  const lib = await import('node-llama-cpp');
  console.log('import', Date.now() - t); t = Date.now();
  const llama = await lib.getLlama({ gpu: false, build: 'never' });
  console.log('getLlama', Date.now() - t); t = Date.now();
  const model = await llama.loadModel({ modelPath: '/work/main/models/SmolLM2-135M-Instruct.Q4_1.gguf' });
  console.log('load', Date.now() - t); t = Date.now();
  const ctx = await model.createContext({ contextSize: 2048, threads: 2 });
  const s = new lib.LlamaChatSession({ contextSequence: ctx.getSequence() });
  const out = await s.prompt('Say hello in 5 words.', { maxTokens: 30, temperature: 0 });
  console.log('prompt', Date.now() - t, out);
}, 300000);
