/**
 * The deterministic review gate in front of the skill bank. A candidate skill (distilled by
 * an LLM or imported) is compared with the active skills by cosine similarity of term
 * vectors over name + description + when-to-use + instructions, then added, merged into the
 * most similar skill, used to revise it, or discarded. Every decision has a reason.
 */
import type { Skill } from '@nanoresearch/schema';
import { skillText } from '../retrieval/terms';
import { termFrequencies, tokenize } from '../retrieval/tokenize';

/** A proposed skill, before it has an id, a version or counts. */
export interface SkillCandidate {
  name: string;
  description: string;
  when_to_use?: string;
  instructions: string[];
  stages?: Skill['stages'];
  tags?: string[];
}

export type ReviewDecision = 'add' | 'merge' | 'revise' | 'discard';

export interface ReviewVerdict {
  decision: ReviewDecision;
  reason: string;
  /** The most similar active skill, if any. */
  target?: Skill;
  similarity: number;
}

/**
 * At or above this similarity the candidate is the same skill restated: merge its new
 * instructions (or discard it when it has none). Measured on our built-ins: the eight distinct
 * skills sit at most ~0.37 from each other (test/skills.test.ts checks they stay below this),
 * while a restatement with one added step scores above 0.6.
 */
export const SAME_SKILL_SIMILARITY = 0.55;
/**
 * Between this and SAME_SKILL_SIMILARITY the candidate is about the same procedure; it
 * revises the skill when it contradicts or refines its steps, else it is added as its own skill.
 */
export const RELATED_SKILL_SIMILARITY = 0.3;
/** Two instructions at or above this similarity say the same thing (dedup on merge). */
export const SAME_INSTRUCTION_SIMILARITY = 0.7;
/** Two instructions at or above this similarity are about the same step (contradiction / refinement check). */
export const RELATED_INSTRUCTION_SIMILARITY = 0.4;
/** Fewer content words than this across all instructions is too thin to be a procedure. */
export const MIN_INSTRUCTION_WORDS = 8;
/** A generic instruction ("be careful", "double-check everything") teaches nothing; a candidate made only of them is discarded. */
const GENERIC_INSTRUCTION =
  /^(be (careful|thorough|rigorous|clear)|double[- ]check( everything| your work)?|do (your )?best|follow best practices|make sure (it|everything) (works|is correct)|think step by step)\.?$/i;
/** Words that flip an instruction's polarity. */
const NEGATION = /\b(never|not|no|avoid|don't|do not|without|instead of|stop)\b/i;

/** Cosine similarity of two texts' term-frequency vectors (0 when either has no terms). */
export function textSimilarity(a: string, b: string): number {
  const va = termFrequencies(tokenize(a));
  const vb = termFrequencies(tokenize(b));
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (const [t, x] of va) {
    na += x * x;
    const y = vb.get(t);
    if (y) dot += x * y;
  }
  for (const y of vb.values()) nb += y * y;
  return na && nb ? dot / Math.sqrt(na * nb) : 0;
}

/** Normalised instruction text for exact-duplicate checks. */
function normaliseInstruction(s: string): string {
  return s
    .toLowerCase()
    .replace(/\s+/g, ' ')
    .replace(/[.;:!]+$/, '')
    .trim();
}

/** Instructions of `b` that say nothing `a` does not already say. */
export function newInstructions(existing: readonly string[], candidate: readonly string[]): string[] {
  return candidate.filter(c => !existing.some(e => normaliseInstruction(e) === normaliseInstruction(c) || textSimilarity(e, c) >= SAME_INSTRUCTION_SIMILARITY));
}

/** Existing instructions union candidate ones, duplicates (exact or near) dropped, order kept. */
export function unionInstructions(existing: readonly string[], candidate: readonly string[]): string[] {
  const out = [...existing];
  for (const c of candidate) if (newInstructions(out, [c]).length) out.push(c);
  return out;
}

/** Pairs (existing, candidate) about the same step with opposite polarity. */
function contradictions(existing: readonly string[], candidate: readonly string[]): Array<[string, string]> {
  const pairs: Array<[string, string]> = [];
  for (const c of candidate) {
    for (const e of existing) {
      if (textSimilarity(e, c) >= RELATED_INSTRUCTION_SIMILARITY && NEGATION.test(e) !== NEGATION.test(c)) pairs.push([e, c]);
    }
  }
  return pairs;
}

/** Candidate instructions that restate an existing step with more specifics (related, not the same, longer). */
function refinements(existing: readonly string[], candidate: readonly string[]): string[] {
  return candidate.filter(c =>
    existing.some(e => {
      const sim = textSimilarity(e, c);
      return sim >= RELATED_INSTRUCTION_SIMILARITY && sim < SAME_INSTRUCTION_SIMILARITY && tokenize(c).length > tokenize(e).length;
    })
  );
}

/** Why a candidate is unusable on its own, or undefined when it is usable. */
export function candidateDefect(candidate: SkillCandidate): string | undefined {
  if (!candidate.name?.trim() || !candidate.description?.trim()) return 'the candidate has no name or no description';
  const instructions = (candidate.instructions ?? []).map(s => s.trim()).filter(Boolean);
  if (instructions.length === 0) return 'the candidate has no instructions';
  const words = instructions.reduce((n, s) => n + tokenize(s).length, 0);
  if (words < MIN_INSTRUCTION_WORDS) return `the instructions are too short (${words} content words, at least ${MIN_INSTRUCTION_WORDS} needed)`;
  if (instructions.every(s => GENERIC_INSTRUCTION.test(s.trim()))) return 'every instruction is generic advice with no procedure in it';
  return undefined;
}

/** Decides what to do with a candidate given the active skills. Pure: the bank applies it. */
export function reviewCandidate(candidate: SkillCandidate, active: readonly Skill[]): ReviewVerdict {
  const defect = candidateDefect(candidate);
  if (defect) return { decision: 'discard', reason: defect, similarity: 0 };
  const text = skillText({ ...candidate, when_to_use: candidate.when_to_use });
  let target: Skill | undefined;
  let similarity = 0;
  for (const skill of active) {
    const sim = textSimilarity(text, skillText(skill));
    if (sim > similarity) {
      similarity = sim;
      target = skill;
    }
  }
  if (!target || similarity < RELATED_SKILL_SIMILARITY) {
    return { decision: 'add', reason: `no active skill is similar (best ${similarity.toFixed(2)} < ${RELATED_SKILL_SIMILARITY})`, target, similarity };
  }
  const conflicts = contradictions(target.instructions, candidate.instructions);
  if (conflicts.length) {
    const [e, c] = conflicts[0];
    return {
      decision: 'revise',
      reason: `contradicts "${target.id}": "${c}" against "${e}"; the candidate's instructions replace the old ones`,
      target,
      similarity
    };
  }
  const added = newInstructions(target.instructions, candidate.instructions);
  if (similarity >= SAME_SKILL_SIMILARITY) {
    if (added.length === 0)
      return {
        decision: 'discard',
        reason: `near-duplicate of "${target.id}" (similarity ${similarity.toFixed(2)}) with no new instruction`,
        target,
        similarity
      };
    return {
      decision: 'merge',
      reason: `same skill as "${target.id}" (similarity ${similarity.toFixed(2)}); adds ${added.length} instruction(s)`,
      target,
      similarity
    };
  }
  const refined = refinements(target.instructions, candidate.instructions);
  if (refined.length) {
    return { decision: 'revise', reason: `refines "${target.id}" (similarity ${similarity.toFixed(2)}): "${refined[0]}"`, target, similarity };
  }
  return { decision: 'add', reason: `related to "${target.id}" (similarity ${similarity.toFixed(2)}) but neither restates nor refines it`, target, similarity };
}
