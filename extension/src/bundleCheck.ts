/**
 * Checks a stage bundle against schema/stage-bundle.schema.json before the card draws it.
 *
 * A bundle from another version of the kernel library, a hand-edited notebook or a truncated
 * output must show as "not a valid stage card" with the reason, never as a JavaScript error in
 * the output area. Validation uses Ajv, already a dependency; the schema files are bundled at
 * build time (JSON imports), so nothing is fetched. Formats (date-time) are not checked: the
 * card only displays them.
 */
import Ajv2020, { ErrorObject, ValidateFunction } from 'ajv/dist/2020';
import type { StageBundle } from '@nanoresearch/schema';
import experimentBlueprint from '@nanoresearch/schema/experiment-blueprint.schema.json';
import ideationOutput from '@nanoresearch/schema/ideation-output.schema.json';
import sectionReview from '@nanoresearch/schema/section-review.schema.json';
import stageBundle from '@nanoresearch/schema/stage-bundle.schema.json';
import stageRun from '@nanoresearch/schema/stage-run.schema.json';
import stageName from '@nanoresearch/schema/stage.schema.json';

let validate: ValidateFunction | undefined;

/** Compiled on first use: most notebooks open without a stage card to check. */
function validator(): ValidateFunction {
  if (!validate) {
    const ajv = new Ajv2020({ strict: false, validateFormats: false });
    for (const schema of [experimentBlueprint, ideationOutput, sectionReview, stageName, stageRun]) {
      ajv.addSchema(schema as object);
    }
    validate = ajv.compile(stageBundle as object);
  }
  return validate;
}

/** One schema error in words, e.g. "/status must be equal to one of the allowed values (running, done, failed)". */
function describe(error: ErrorObject): string {
  const where = error.instancePath || 'the bundle';
  const params = error.params as Record<string, unknown>;
  const detail = Array.isArray(params.allowedValues)
    ? ` (${params.allowedValues.join(', ')})`
    : typeof params.additionalProperty === 'string'
      ? `: '${params.additionalProperty}'`
      : '';
  return `${where} ${error.message ?? 'is invalid'}${detail}`;
}

/** The bundle, or why it cannot be shown as a stage card. */
export function readStageBundle(raw: unknown): { bundle: StageBundle } | { problem: string } {
  let value = raw;
  if (typeof raw === 'string') {
    try {
      value = JSON.parse(raw);
    } catch (reason) {
      return { problem: `it is not JSON: ${reason instanceof Error ? reason.message : String(reason)}` };
    }
  }
  const check = validator();
  if (!check(value)) {
    const errors = (check.errors ?? []).slice(0, 3).map(describe);
    return { problem: `it does not match the stage-bundle schema: ${errors.join('; ') || 'unknown reason'}` };
  }
  return { bundle: value as StageBundle };
}
