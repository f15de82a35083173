/**
 * The scripted LLM of the UI tests: every JSON request is answered with a value built from the
 * request's own response_format schema (so each role gets schema-valid JSON), with readable
 * text chosen by property name; plain requests get a short text answer.
 */
const TEXT = {
  statement: [
    'Feature-wise dropout improves small MLPs on tables with under 10k rows more than weight decay.',
    'Batch size matters more than width for MLPs trained on small tabular datasets.',
    'Quantile-normalised inputs close most of the gap between MLPs and gradient-boosted trees.'
  ],
  rationale: ['Regularising whole features matches how tabular noise is structured.'],
  queries: ['mlp tabular regularisation', 'feature dropout small data', 'tabular deep learning baselines'],
  gaps: ['No controlled comparison of feature dropout and weight decay below 10k rows.'],
  finding: ['Tuned MLPs are competitive baselines on tabular benchmarks.'],
  reason: ['No closest work compares the two regularisers on small tables.'],
  prompt_plan: ['Start from a linear baseline, keep experiments under 15 CPU minutes, report variance over seeds.'],
  default: ['A short, concrete answer.']
};

let counter = 0;

function text(key, minLength) {
  const options = TEXT[key] || TEXT.default;
  let value = options[counter++ % options.length];
  while (minLength && value.length < minLength) value += ' (detail)';
  return value;
}

function valueFor(schema, key) {
  if (!schema || typeof schema !== 'object') return null;
  if (schema.const !== undefined) return schema.const;
  if (Array.isArray(schema.enum)) return schema.enum[0];
  if (schema.anyOf || schema.oneOf) return valueFor((schema.anyOf || schema.oneOf)[0], key);
  const type = Array.isArray(schema.type) ? schema.type.find(t => t !== 'null') : schema.type;
  switch (type) {
    case 'object': {
      const properties = schema.properties || {};
      const out = {};
      for (const name of Object.keys(properties)) {
        const required = (schema.required || []).includes(name);
        if (required || ['rationale', 'closest_keys'].includes(name)) out[name] = valueFor(properties[name], name);
      }
      return out;
    }
    case 'array': {
      const count = Math.max(schema.minItems || 0, key === 'hypotheses' || key === 'queries' ? 2 : 0);
      const max = schema.maxItems === undefined ? count : Math.min(count, schema.maxItems);
      return Array.from({ length: max }, () => valueFor(schema.items, key));
    }
    case 'string':
      return text(key, schema.minLength);
    case 'integer':
      return Math.max(schema.minimum ?? 0, Math.min(schema.maximum ?? 7, 7));
    case 'number':
      return Math.max(schema.minimum ?? 0, Math.min(schema.maximum ?? 7.5, 7.5));
    case 'boolean':
      return false;
    default:
      return null;
  }
}

/** Learning from feedback quotes the feedback (memory extraction, skill distillation); a stage's own Update does not. */
const LEARNING_DELAY_MS = 3000;
/** Feedback with this marker fails its first memory extraction (HTTP 400), so Retry has something to retry. */
const FAIL_ONCE = 'FAIL-ONCE';
let failedOnce = false;

module.exports = function script(req) {
  const schema = req.response_format && req.response_format.json_schema && req.response_format.json_schema.schema;
  const text = (req.messages || []).map(m => String(m.content)).join('\n');
  const learning = /<<<UNTRUSTED feedback/.test(text);
  const value = schema ? valueFor(schema, '') : null;
  if (learning && value && Array.isArray(value.memories)) {
    if (text.includes(FAIL_ONCE) && !failedOnce) {
      failedOnce = true;
      return { status: 400, body: { error: { message: 'scripted failure: the prompt is too long for this model', type: 'invalid_request_error' } } };
    }
    // One memory per feedback, so the learned state links something.
    value.memories = [{ ...valueFor(schema.properties.memories.items, 'memory'), kind: 'user_constraint', content: 'Always include a linear baseline.' }];
  }
  const content = value ? JSON.stringify(value) : 'A short, concrete answer.';
  // Learning takes a while (as with a real model), so the UI shows it queued and learning.
  return { content, usage: { prompt_tokens: 420, completion_tokens: 96 }, ...(learning && { delayMs: LEARNING_DELAY_MS }) };
};
