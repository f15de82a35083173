import Ajv2020, { type ErrorObject, type ValidateFunction } from 'ajv/dist/2020';
import { schemas as projectSchemas } from '@nanoresearch/schema';
import type { JsonSchema } from './types';

/** Compiled validators by schema text, most recently used last. */
const validators = new Map<string, ValidateFunction>();
/**
 * Validators kept. Planner schemas differ per call (their enums list the call's candidates),
 * so the cache is bounded; a schema seen again after eviction is compiled again.
 */
const VALIDATORS_KEPT = 64;

/**
 * The Ajv that knows the project's schemas, shared by every schema without a `$id` of its own.
 * Adding the project schemas costs ~40 ms (Ajv compiles its meta-schema for each new instance),
 * which a fresh instance per planner call paid on every stage.
 */
let shared: Ajv2020 | null = null;

function ajvWithProjectSchemas(except?: string): Ajv2020 {
  const ajv = new Ajv2020({ allErrors: true, strict: false });
  for (const known of Object.values(projectSchemas) as JsonSchema[]) {
    if (known.$id !== except) ajv.addSchema(known);
  }
  return ajv;
}

/**
 * Validates `value` against `schema` (JSON Schema 2020-12). The project's schemas are known to
 * the validator, so a schema may `$ref` them by file name (e.g. `planner-output.schema.json`).
 * Returns readable error lines; empty when valid.
 */
export function validateAgainst(schema: JsonSchema, value: unknown): string[] {
  const split = splitEnums(schema);
  const validate = validatorFor(split ? split.shape : schema);
  const errors = validate(value) ? [] : (validate.errors ?? []).map(describeError);
  return split ? [...errors, ...enumErrors(split.enums, value)] : errors;
}

/** Where a schema lists allowed values: a path of property names, '*' for every item of an array. */
interface EnumAt {
  path: string[];
  values: unknown[];
}

/**
 * The schema without its enums, and the enums, when every enum is reached through `properties`
 * and `items` alone. Planner schemas differ per call only in their enums (the call's candidate
 * ids), and compiling a validator costs ~9 ms here: the shape is compiled once and the enums
 * are checked by walking the value. Null when the schema has no enum, or one under anything else.
 */
function splitEnums(schema: JsonSchema): { shape: JsonSchema; enums: EnumAt[] } | null {
  const enums: EnumAt[] = [];
  let elsewhere = false;
  const strip = (node: unknown, at: string[]): unknown => {
    if (Array.isArray(node)) return node.map(item => strip(item, unreachable));
    if (!node || typeof node !== 'object') return node;
    const out: Record<string, unknown> = {};
    for (const [key, child] of Object.entries(node)) {
      if (key === 'enum' && Array.isArray(child) && reachable(at)) enums.push({ path: at.slice(1), values: child });
      else if (key === 'enum') elsewhere = true;
      else if (key === 'properties' && child && typeof child === 'object' && reachable(at))
        out[key] = Object.fromEntries(Object.entries(child).map(([name, sub]) => [name, strip(sub, [...at, name])]));
      else if (key === 'items' && reachable(at)) out[key] = strip(child, [...at, '*']);
      else out[key] = strip(child, unreachable);
    }
    return out;
  };
  const shape = strip(schema, ['']) as JsonSchema;
  return enums.length && !elsewhere ? { shape, enums } : null;
}

/** A path marker for schema parts an enum there would not be checked through (combinators, $defs, ...). */
const unreachable: string[] = [];
function reachable(at: string[]): boolean {
  return at !== unreachable && at.length > 0;
}

/** Enum violations of `value`, in describeError's words. */
function enumErrors(enums: readonly EnumAt[], value: unknown): string[] {
  const errors: string[] = [];
  const visit = (node: unknown, path: readonly string[], at: string, allowed: unknown[]): void => {
    if (path.length === 0) {
      if (!allowed.some(v => v === node || JSON.stringify(v) === JSON.stringify(node)))
        errors.push(`${at || '(root)'}: must be one of ${JSON.stringify(allowed)}`);
      return;
    }
    const [step, ...rest] = path;
    if (step === '*') {
      if (Array.isArray(node)) node.forEach((item, i) => visit(item, rest, `${at}/${i}`, allowed));
    } else if (node && typeof node === 'object' && !Array.isArray(node) && step in node) {
      visit((node as Record<string, unknown>)[step], rest, `${at}/${step}`, allowed);
    }
  };
  for (const { path, values } of enums) visit(value, path, '', values);
  return errors;
}

function validatorFor(schema: JsonSchema): ValidateFunction {
  const key = JSON.stringify(schema);
  let validate = validators.get(key);
  if (validate) validators.delete(key);
  else if (typeof schema.$id === 'string') {
    // A schema with its own $id gets its own Ajv: it may reuse a project schema's $id (an edited copy).
    validate = ajvWithProjectSchemas(schema.$id).compile(schema);
  } else {
    shared ??= ajvWithProjectSchemas();
    validate = shared.compile(schema);
    // The compiled function stands alone; Ajv's own cache of the schema would only grow.
    shared.removeSchema(schema);
  }
  validators.set(key, validate);
  if (validators.size > VALIDATORS_KEPT) validators.delete(validators.keys().next().value as string);
  return validate;
}

function describeError(e: ErrorObject): string {
  const at = e.instancePath || '(root)';
  if (e.keyword === 'additionalProperties') {
    return `${at}: unexpected property "${(e.params as { additionalProperty: string }).additionalProperty}"`;
  }
  if (e.keyword === 'enum') {
    return `${at}: must be one of ${JSON.stringify((e.params as { allowedValues: unknown[] }).allowedValues)}`;
  }
  return `${at}: ${e.message ?? e.keyword}`;
}

/** The name a schema is sent and reported under: explicit, else its title, else `response`. */
export function schemaNameOf(schema: JsonSchema, explicit?: string): string {
  const raw = explicit ?? (typeof schema.title === 'string' ? schema.title : 'response');
  return raw.replace(/[^a-zA-Z0-9_-]/g, '_').slice(0, 64) || 'response';
}

/** The instruction that carries a schema inside the prompt (json_object / none / local). */
export function schemaInstruction(schema: JsonSchema, name: string): string {
  return `Answer with one JSON object only, no prose and no code fence. ` + `It must match this JSON Schema ("${name}"):\n${JSON.stringify(schema)}`;
}
