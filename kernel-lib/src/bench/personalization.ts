/**
 * Personalization benchmark: `npm run bench:personalization [-- --quick]`. Does the planner learn
 * its user from feedback, through the product's own path?
 *
 * Each simulated user (a preference, and feedback texts in that user's own words) has a Lab of
 * its own (its store, its adapters). Per round: the planning stage runs on six training topics
 * (`lab.project(topic)` → `project.plan()`: retrieval, the planner on the embedded model under
 * its per-call grammar with the active adapter, the planner_calls row), the user gives feedback
 * on each (`stage.feedback(text)`), then `lab.train()` runs one SDPO round (the Python trainer,
 * the adapter registered and made active). Round r's held-out score is the planner's answers on
 * six other topics, with no feedback in context and memory and skill retrieval off, so only the
 * weights can carry the preference, scored by the user's check (written with the users, before
 * any result was seen). A control user gives feedback that asks for nothing: it should not move.
 *
 * The stage's own work is not what is measured (a real planning stage costs a minute of the 1.5B
 * model per call on 2 cores): the planning stage function is replaced by one that returns the
 * plan; everything around it is the product's. Beside the weights-only score it reports:
 * - the teacher's score: the check on the planner's answer WITH the feedback in context (the
 *   SDPO teacher's context, rendered by the trainer's own template): what SDPO can distil;
 * - memory on (feedback learned into memories by the embedded judge, then retrieved), with the
 *   base weights and with the final adapter: the levels alone and together.
 *
 * Writes personalization.json and personalization.png under --out and prints a table.
 */
import { execFile, execFileSync } from 'child_process';
import { promises as fs } from 'fs';
import * as os from 'os';
import * as path from 'path';
import { promisify } from 'util';
import type { PlannerOutput } from '@nanoresearch/schema';
import { Lab, type LabOptions } from '../lab';
import { findRepoRoot, llmConfigFromEnv } from '../llm';
import { ggufPathFor } from '../llm/embedded';
import { plannerMaxTokens, plannerSchemaFor, plannerUserText } from '../planner';
import type { StageFn } from '../stage-contract';
import { AdapterRejectedError, type AdapterRecord, type TrainProgress } from '../trainer';

/** A simulated researcher: what they want, in their own words, and how a plan is checked for it. */
interface SimulatedUser {
  id: string;
  preference: string;
  /** One feedback text per training topic, written as this user would say it. */
  feedback: string[];
  /** Whether a plan's prompt_plan does what this user wants. Fixed before any result was seen. */
  check: RegExp;
}

const USERS: SimulatedUser[] = [
  {
    id: 'cpu-frugal',
    preference: 'experiments that run on a laptop CPU in minutes',
    feedback: [
      'I only have my laptop. Plan something that finishes on the CPU in a few minutes, not a GPU job.',
      'Too heavy again: I need runs that take minutes on a CPU, with small models and a data subsample.',
      'Keep it laptop-sized. If it cannot run on my CPU over a coffee break, I cannot use it.',
      'No GPUs here. Scale the models and the data down until the whole thing runs on a CPU in minutes.',
      'Think laptop, not cluster: a CPU, a few minutes per run, small networks.',
      'Please budget for a CPU-only machine; every run should be done in minutes.'
    ],
    // Not a bare 'minutes': every planner prompt holds the profile's 'max minutes per experiment',
    // and plans that copy it said nothing of what this user asks for.
    check: /\b(cpu|laptop)\b|\bin (a few )?minutes\b/i
  },
  {
    id: 'data-auditor',
    preference: 'the data audited before any model: class balance, missing values, leakage',
    feedback: [
      'Before any model I want to see the data: class balance, missing values, and a leakage check.',
      'You jumped to models again. Audit the dataset first: label balance, missing entries, duplicates across splits.',
      'Start with the data. How balanced are the classes, what is missing, and is anything leaking from test into train?',
      'I do not trust a number until the data has been checked for leakage and missing values.',
      'First look at the dataset itself: class counts, missing values, leakage between the splits.',
      'Data audit first, please: balance of the classes, gaps in the data, leakage.'
    ],
    check: /\b(leak(age|s|ing)?|missing|class balance|imbalance|balanced|audit)\b/i
  },
  {
    id: 'statistician',
    preference: 'confidence intervals and significance tests on every comparison',
    feedback: [
      'A difference without a confidence interval means nothing to me. Add intervals and a significance test.',
      'Report confidence intervals for every metric and test whether the gain is significant.',
      'Which of these differences are statistically significant? I want a paired test and intervals.',
      'Bootstrap the results and give me confidence intervals; a single number is not evidence.',
      'Please add a significance test to each comparison, with confidence intervals.',
      'I need error bars: confidence intervals and a p-value for the main comparison.'
    ],
    check: /\b(confidence intervals?|significan(ce|t)|p-values?|bootstrap(ped)?|statistical(ly)? test)/i
  },
  {
    id: 'error-analyst',
    preference: 'an error analysis of the failure cases',
    feedback: [
      'Aggregate scores hide everything. Look at the examples the model gets wrong and group the failure cases.',
      'I want an error analysis: which inputs fail, and why.',
      'Show me the mistakes. Inspect the worst predictions by hand and say what they have in common.',
      'Please add a failure analysis: the misclassified cases, grouped by what went wrong.',
      'Where does it fail? An error analysis of the wrong predictions matters more to me than another decimal.',
      'Go through the errors: the failure cases tell me more than the average.'
    ],
    check: /\b(error analysis|failure (cases?|analysis|modes?)|misclassified|mistakes|wrong predictions|errors)\b/i
  },
  {
    id: 'prior-work',
    preference: 'positioning against the most recent prior work',
    feedback: [
      'How does this compare with what was published last year? Position it against the recent papers.',
      'Start from the prior work: the latest papers on this, and what exactly is new here.',
      'I need the related work first; compare with the most recent published methods.',
      'Which recent papers already tried this? Put the plan in the context of that literature.',
      'Please compare against the state of the art from the recent literature, not only a weak baseline.',
      'Ground the plan in the literature: what recent work did and where this differs.'
    ],
    check: /\b(prior work|related work|literature|recent (papers?|work|methods?)|state of the art|published)\b/i
  }
];

/** Feedback that asks for nothing a plan could do: the planner should not move. */
const CONTROL_FEEDBACK = [
  'Thanks, I read it on the train this morning.',
  'The office heating is broken again, so I am working from home.',
  'Nice. I will show this to my group on Thursday.',
  'My cat walked over the keyboard while this was running.',
  'Looks like the others. I am off to lunch now.',
  'Got it, thanks. The seminar is moved to room 3.'
];

const TRAIN_TOPICS = [
  'Graph neural networks for molecule property prediction',
  'Label noise in text classification',
  'Pruning convolutional networks for mobile devices',
  'Contrastive pretraining for time-series anomaly detection',
  'Tree ensembles versus neural networks on tabular data',
  'Data augmentation for speech command recognition'
];

const HELD_OUT_TOPICS = [
  'Reinforcement learning for robot grasping',
  'Transformers for short-term weather forecasting',
  'Active learning for medical image segmentation',
  'Knowledge distillation into small language models',
  'Recommender systems under popularity bias',
  'Uncertainty estimates for credit-risk models'
];

const STAGE = 'planning';
const execFileAsync = promisify(execFile);

interface Options {
  /** The simulated users' ids (--users N: the first N; --only a,b: those named). */
  users: string[];
  /** The training and held-out topics (6 of each; --topics N takes fewer, for a smoke run only). */
  trainTopics: string[];
  heldOutTopics: string[];
  rounds: number;
  steps: number;
  trainerArgs: string[];
  memoryArm: boolean;
  /** Only round 0 and the teacher's score: can this planner model follow feedback in its context at all? */
  teacherOnly: boolean;
  out: string;
  /** The planner's GGUF (trainer --base), when --planner names another model than the embedded planner. */
  base?: string;
}

function parseOptions(argv: string[]): Options {
  const value = (flag: string): string | undefined => {
    const at = argv.indexOf(flag);
    return at >= 0 ? argv[at + 1] : undefined;
  };
  const quick = argv.includes('--quick');
  const trainerArgs: string[] = [];
  for (const flag of ['--lr', '--rank', '--alpha', '--teacher', '--ema-rate', '--loss', '--topk', '--clip', '--batch', '--precision', '--threads']) {
    const v = value(flag);
    if (v !== undefined) trainerArgs.push(flag, v);
  }
  const planner = value('--planner');
  // The planner role's model for every Lab of this process, and the same weights as the trainer's base.
  if (planner) process.env.NANORESEARCH_MODEL_PLANNER = planner;
  return {
    base: planner ? ggufPathFor(planner, llmConfigFromEnv().modelsDir ?? repoPath('models')) : undefined,
    users: chosenUsers(value('--only'), Number(value('--users') ?? (quick ? 2 : USERS.length))),
    trainTopics: TRAIN_TOPICS.slice(0, Number(value('--topics') ?? TRAIN_TOPICS.length)),
    heldOutTopics: HELD_OUT_TOPICS.slice(0, Number(value('--topics') ?? HELD_OUT_TOPICS.length)),
    rounds: Number(value('--rounds') ?? (quick ? 2 : 3)),
    steps: Number(value('--steps') ?? 6),
    trainerArgs,
    memoryArm: argv.includes('--memory-arm') && !argv.includes('--teacher-only'),
    teacherOnly: argv.includes('--teacher-only'),
    out: path.resolve(value('--out') ?? path.join(os.tmpdir(), `nr-bench-personalization-${Date.now()}`))
  };
}

function chosenUsers(only: string | undefined, count: number): string[] {
  if (only === undefined) return USERS.slice(0, count).map(u => u.id);
  const ids = only.split(',');
  const unknown = ids.filter(id => !USERS.some(u => u.id === id));
  if (unknown.length) throw new Error(`--only: no simulated user ${unknown.join(', ')} (the users: ${USERS.map(u => u.id).join(', ')})`);
  return ids;
}

/** The planning stage's stand-in: the plan is the output; nothing else is spent. */
const planOnly: StageFn = async ctx => ({
  status: 'done',
  output: { plan: ctx.plan },
  summary: ctx.plan.prompt_plan,
  bundleOutputs: [],
  trajectory: `Planned the ${ctx.stage} stage: ${ctx.plan.prompt_plan}`,
  markdown: ctx.plan.prompt_plan
});

interface PlannerAnswer {
  topic: string;
  promptPlan: string;
  /** The model's own answer (not a fallback), schema-valid, with ids from the candidates. */
  valid: boolean;
  /** The check's score of this answer, 0–1 (the control's is the fraction of users' checks it passes). */
  score: number;
}

interface RoundRecord {
  round: number;
  /** Mean held-out score, 0–100. */
  score: number;
  validity: number;
  /** Fraction of held-out answers whose prompt_plan differs from round 0's. */
  changed: number;
  meanAdvantage: number | null;
  loss: number | null;
  /** lab.train() as a whole: the trainer process, then the check of the new adapter's plans. */
  trainS: number | null;
  /** The trainer's own optimiser loop (the adapter manifest's wall_s): the rest of trainS is start-up, saving and the check. */
  trainerLoopS: number | null;
  /** The planning stage with feedback on the training topics (round 1: with the teacher's answers), and on the held-out topics. */
  trainingPlansS: number | null;
  heldOutPlansS: number;
  /** Why lab.train() kept the planner as it was (its check of the new adapter's plans), or null. */
  rejected: string | null;
  wallS: number;
  answers: PlannerAnswer[];
}

interface UserReport {
  user: string;
  preference: string;
  control: boolean;
  check: string;
  rounds: RoundRecord[];
  /** Round 0 on the training topics: the planner's answer with the feedback in context (the SDPO teacher) and without. */
  teacherScore: number | null;
  studentScore: number | null;
  /** Held-out score with memory and skill retrieval on: the base weights, then the final adapter. */
  memoryOnly: number | null;
  memoryAndWeights: number | null;
  /** Memories the memory arm's learning made from the feedback. */
  memoriesLearned: number | null;
  /**
   * How far the final adapter moved from the base where it answers: the mean per-token
   * log p_final(y) − log p_base(y) over its held-out answers y (the trainer's scoring). The
   * answers are greedy, not samples, so this estimates KL(final ‖ base) only roughly (it can be < 0).
   */
  logRatioToBase: number | null;
  /** logRatioToBase's trainer process. */
  scoringS: number | null;
}

/**
 * How a plan is scored: by the user's own check, or for the control by the users' (the fraction passed): the
 * users run, or all of them when the control runs alone (--users 0).
 */
function scorer(user: SimulatedUser | null, users: SimulatedUser[]): (promptPlan: string) => number {
  if (user) return promptPlan => (user.check.test(promptPlan) ? 1 : 0);
  const checks = users.length ? users : USERS;
  return promptPlan => checks.filter(u => u.check.test(promptPlan)).length / checks.length;
}

/** Memory off and the skill bank frozen: only the planner's weights can carry what the user said. */
const WEIGHTS_ONLY = { memory: false, skillDistillation: false };

function openLab(home: string, out: string, ablation: LabOptions['ablation'], learnInBackground = false): Promise<Lab> {
  return Lab.open({ home, workspaces: path.join(out, 'workspaces'), display: null, learnInBackground, ablation, stages: { [STAGE]: planOnly } });
}

interface PlannedTopic {
  answer: PlannerAnswer;
  x: string;
  y: string;
  candidateSkills: string[];
  candidateMemories: string[];
}

/** The planning stage on each topic through the Lab, the user's feedback on each when given; the planner's answers, scored. */
async function planTopics(lab: Lab, topics: string[], score: (promptPlan: string) => number, feedback?: (i: number) => string): Promise<PlannedTopic[]> {
  const planned: PlannedTopic[] = [];
  for (const [i, topic] of topics.entries()) {
    const project = await lab.project(topic);
    const stage = await project.plan();
    if (stage.status !== 'done') throw new Error(`the ${STAGE} stage on '${topic}' ended ${stage.status}: ${stage.error}`);
    const [call] = await lab.sql(
      `select x, y, fallback, parsed, candidate_skill_ids, candidate_memory_ids from planner_calls
        where stage_run_id = '${stage.id}' order by created_at desc limit 1`
    );
    const parsed = asJson<PlannerOutput>(call.parsed);
    planned.push({
      answer: { topic, promptPlan: parsed.prompt_plan, valid: call.fallback === null && String(call.y).length > 0, score: score(parsed.prompt_plan) },
      x: String(call.x),
      y: String(call.y),
      candidateSkills: asJson<string[] | null>(call.candidate_skill_ids) ?? [],
      candidateMemories: asJson<string[] | null>(call.candidate_memory_ids) ?? []
    });
    if (feedback) {
      const result = await stage.feedback(feedback(i), { author: 'simulated user' });
      if (result.notTrainedBecause) throw new Error(`feedback on '${topic}' will not train: ${result.notTrainedBecause}`);
    }
  }
  return planned;
}

function asJson<T>(value: unknown): T {
  return (typeof value === 'string' ? JSON.parse(value) : value) as T;
}

function meanScore(answers: PlannerAnswer[]): number {
  return (100 * answers.reduce((sum, a) => sum + a.score, 0)) / Math.max(1, answers.length);
}

/**
 * The SDPO teacher's answer: the planner asked the same x with the feedback block inserted where
 * the trainer inserts it (the end of the user message; data.FEEDBACK_TEMPLATE, read from the
 * trainer so there is one template), under the same grammar.
 */
async function teacherAnswers(
  lab: Lab,
  planned: PlannedTopic[],
  feedback: (i: number) => string,
  score: (promptPlan: string) => number
): Promise<PlannerAnswer[]> {
  const template = feedbackTemplate();
  const answers: PlannerAnswer[] = [];
  for (const [i, p] of planned.entries()) {
    const candidates = { skills: p.candidateSkills.map(id => ({ id })), memories: p.candidateMemories.map(id => ({ id })) } as Parameters<
      typeof plannerSchemaFor
    >[0];
    const schema = plannerSchemaFor(candidates);
    const userText = await plannerUserText(lab.llm, p.x, schema);
    if (userText === null) throw new Error(`the stored x of '${p.answer.topic}' is not the planner model's rendering`);
    const response = await lab.llm.complete({
      role: 'planner',
      messages: [{ role: 'user', content: userText + template.replace('{feedback}', feedback(i).trim()) }],
      jsonSchema: schema,
      schemaName: 'planner_output',
      temperature: 0,
      maxTokens: plannerMaxTokens(schema)
    });
    const promptPlan = asJson<PlannerOutput>(response.text).prompt_plan;
    answers.push({ topic: p.answer.topic, promptPlan, valid: true, score: score(promptPlan) });
  }
  return answers;
}

/** The model the planner role runs on, as every Lab here configures it (from the environment). */
function plannerModel(): string {
  const config = llmConfigFromEnv();
  return config.models.planner ?? config.models.default;
}

function repoPath(...parts: string[]): string {
  const repo = findRepoRoot(__dirname);
  if (!repo) throw new Error('run from the repository (models/ not found): npm run bench:personalization');
  return path.join(repo, ...parts);
}

function feedbackTemplate(): string {
  const code = 'from nanoresearch_trainer.data import FEEDBACK_TEMPLATE; print(FEEDBACK_TEMPLATE, end="")';
  return execFileSync(repoPath('.venv', 'bin', 'python'), ['-c', code], { encoding: 'utf8' });
}

/** Mean per-token log-ratio of the adapter against the base on the given (x, y), by the trainer's own scoring (one process, both weights). */
async function logRatioToBase(out: string, user: string, planned: PlannedTopic[], adapterPath: string, baseModel: string | undefined): Promise<number> {
  const file = path.join(out, `${user}-final-answers.jsonl`);
  await fs.writeFile(file, planned.map((p, i) => JSON.stringify({ id: `${user}-${i}`, x: p.x, y: p.y, feedback: '' })).join('\n') + '\n');
  // Asynchronous: the trainer takes a minute, and a blocked event loop would hold the store's lease meanwhile.
  const { stdout } = await execFileAsync(
    repoPath('.venv', 'bin', 'nanoresearch-trainer'),
    ['score', '--data', file, ...(baseModel ? ['--base', baseModel] : []), '--adapter-in', adapterPath, '--with-base'],
    { encoding: 'utf8', maxBuffer: 64 << 20 }
  );
  const rows = stdout
    .split('\n')
    .filter(line => line.startsWith('{'))
    .map(line => JSON.parse(line) as { event: string; logprobs?: number[]; base_logprobs?: number[] })
    .filter(event => event.event === 'row');
  let sum = 0;
  let count = 0;
  rows.forEach(row => row.logprobs!.forEach((lp, j) => ((sum += lp - row.base_logprobs![j]), count++)));
  return sum / Math.max(1, count);
}

async function runUser(user: SimulatedUser | null, options: Options, users: SimulatedUser[]): Promise<UserReport> {
  const id = user?.id ?? 'control';
  const home = path.join(options.out, 'homes', id);
  const score = scorer(user, users);
  const feedbackTexts = user?.feedback ?? CONTROL_FEEDBACK;
  const lab = await openLab(home, options.out, WEIGHTS_ONLY);
  let finalAdapter: AdapterRecord | null = null;
  const report: UserReport = {
    user: id,
    preference: user?.preference ?? 'none (feedback that asks for nothing)',
    control: !user,
    check: user ? String(user.check) : 'the fraction of the users’ checks a plan passes',
    rounds: [],
    teacherScore: null,
    studentScore: null,
    memoryOnly: null,
    memoryAndWeights: null,
    memoriesLearned: null,
    logRatioToBase: null,
    scoringS: null
  };
  try {
    let started = Date.now();
    const secondsSince = (t: number) => (Date.now() - t) / 1000;
    let heldOut = await planTopics(lab, options.heldOutTopics, score);
    const baseline = heldOut.map(p => p.answer.promptPlan);
    type Training = Pick<RoundRecord, 'meanAdvantage' | 'loss' | 'trainS' | 'trainerLoopS' | 'trainingPlansS' | 'heldOutPlansS' | 'rejected'>;
    const record = (round: number, train: Training): void => {
      const answers = heldOut.map(p => p.answer);
      report.rounds.push({
        round,
        score: meanScore(answers),
        validity: answers.filter(a => a.valid).length / answers.length,
        changed: answers.filter((a, i) => a.promptPlan !== baseline[i]).length / answers.length,
        ...train,
        wallS: (Date.now() - started) / 1000,
        answers
      });
      log(`${id} round ${round}: held-out score ${meanScore(answers).toFixed(0)}, ${JSON.stringify(train)}`);
    };
    const untrained = { meanAdvantage: null, loss: null, trainS: null, trainerLoopS: null, trainingPlansS: null, rejected: null };
    record(0, { ...untrained, heldOutPlansS: secondsSince(started) });
    for (let round = 1; round <= options.rounds; round++) {
      started = Date.now();
      const feedback = (i: number) => feedbackTexts[(i + round - 1) % feedbackTexts.length];
      const training = await planTopics(lab, options.trainTopics, score, feedback);
      if (round === 1) {
        report.studentScore = meanScore(training.map(p => p.answer));
        report.teacherScore = meanScore(await teacherAnswers(lab, training, feedback, score));
        if (options.teacherOnly) break;
      }
      const trainingPlansS = secondsSince(started);
      const steps: TrainProgress[] = [];
      const trainStarted = Date.now();
      let rejected: string | null = null;
      try {
        await lab.train({ steps: options.steps, base: options.base, trainerArgs: options.trainerArgs, onProgress: p => steps.push(p), display: null });
      } catch (error) {
        if (!(error instanceof AdapterRejectedError)) throw error;
        rejected = error.message; // the round's adapter is kept from the planner: the held-out plans are the previous adapter's
      }
      const last = steps[steps.length - 1];
      const trainS = secondsSince(trainStarted);
      const trained = (await lab.adapters()).at(-1);
      const heldOutStarted = Date.now();
      heldOut = await planTopics(lab, options.heldOutTopics, score);
      record(round, {
        meanAdvantage: mean(steps.map(s => s.meanAdvantage)),
        loss: last?.loss ?? null,
        trainS,
        trainerLoopS: trained?.manifest.wall_s ?? null,
        trainingPlansS,
        heldOutPlansS: secondsSince(heldOutStarted),
        rejected
      });
    }
    finalAdapter = (await lab.adapters()).find(a => a.active) ?? null;
    if (finalAdapter) {
      const scoringStarted = Date.now();
      report.logRatioToBase = await logRatioToBase(options.out, id, heldOut, finalAdapter.path, options.base);
      report.scoringS = secondsSince(scoringStarted);
    }
  } finally {
    await lab.close();
  }
  if (options.memoryArm) await memoryArm(report, user, options, score, finalAdapter);
  return report;
}

/**
 * Memory on, in a home of its own (the learning also distils skills from the feedback, which must
 * not reach the weights-only arm): the planning stage on the training topics with the first
 * round's feedback, learned in the background by the embedded judge into memories (and skills),
 * then the held-out topics planned with memory and skill retrieval on: with the base weights
 * (memory alone) and with the weights arm's final adapter (the levels together).
 */
async function memoryArm(
  report: UserReport,
  user: SimulatedUser | null,
  options: Options,
  score: (promptPlan: string) => number,
  finalAdapter: AdapterRecord | null
): Promise<void> {
  const home = path.join(options.out, 'homes', `${report.user}-memory`);
  const feedbackTexts = user?.feedback ?? CONTROL_FEEDBACK;
  const frozen = { memory: true, skills: true, skillDistillation: false };
  const learner = await openLab(home, options.out, frozen, true);
  try {
    await planTopics(learner, options.trainTopics, score, i => feedbackTexts[i % feedbackTexts.length]);
    await learner.learningIdle();
    report.memoriesLearned = Number((await learner.sql(`select count(*) as n from memories where source = 'feedback'`))[0].n);
    report.memoryOnly = meanScore((await planTopics(learner, options.heldOutTopics, score)).map(p => p.answer));
  } finally {
    await learner.close();
  }
  if (!finalAdapter) return;
  const lab = await openLab(home, options.out, frozen);
  try {
    // The weights arm's adapter, registered in this store as lab.train() registers a round.
    await lab.store.write(q =>
      q.run('insert into adapters (version, manifest, path, active, created_at) values ($version, $manifest, $path, false, $created_at)', {
        version: finalAdapter.version,
        manifest: finalAdapter.manifest,
        path: finalAdapter.path,
        created_at: finalAdapter.created_at
      })
    );
    await lab.useAdapter(finalAdapter.version);
    report.memoryAndWeights = meanScore((await planTopics(lab, options.heldOutTopics, score)).map(p => p.answer));
  } finally {
    await lab.close();
  }
}

function mean(values: number[]): number | null {
  return values.length ? values.reduce((a, b) => a + b, 0) / values.length : null;
}

/** Where a run's time went, in seconds summed over the users: what the wall time is made of. */
function timeSpent(reports: UserReport[]): { planning: number; train: number; trainerLoops: number; scoring: number } {
  const rounds = reports.flatMap(r => r.rounds);
  const sum = (values: (number | null)[]) => values.reduce<number>((total, v) => total + (v ?? 0), 0);
  return {
    planning: sum(rounds.map(r => r.heldOutPlansS)) + sum(rounds.map(r => r.trainingPlansS)),
    train: sum(rounds.map(r => r.trainS)),
    trainerLoops: sum(rounds.map(r => r.trainerLoopS)),
    scoring: sum(reports.map(r => r.scoringS))
  };
}

function log(line: string): void {
  console.log(`[${new Date().toISOString().slice(11, 19)}] ${line}`);
}

function table(reports: UserReport[], rounds: number): string {
  const head = [
    'user'.padEnd(14),
    ...Array.from({ length: rounds + 1 }, (_, r) => `r${r}`.padStart(5)),
    'Δ'.padStart(5),
    'valid'.padStart(6),
    'changed'.padStart(8),
    'rejected'.padStart(9),
    'teacher'.padStart(8),
    'student'.padStart(8),
    'mem'.padStart(5),
    'mem+w'.padStart(6),
    'log p/p0'.padStart(9)
  ];
  const lines = [head.join(' ')];
  const fmt = (v: number | null, width: number, digits = 0) => (v === null ? '—' : v.toFixed(digits)).padStart(width);
  for (const r of reports) {
    const scores = r.rounds.map(x => x.score);
    lines.push(
      [
        r.user.padEnd(14),
        ...scores.map(s => fmt(s, 5)),
        fmt(scores[scores.length - 1] - scores[0], 5),
        fmt(mean(r.rounds.map(x => x.validity))! * 100, 5) + '%',
        fmt(r.rounds[r.rounds.length - 1].changed * 100, 7) + '%',
        fmt(r.rounds.filter(x => x.rejected).length, 9),
        fmt(r.teacherScore, 8),
        fmt(r.studentScore, 8),
        fmt(r.memoryOnly, 5),
        fmt(r.memoryAndWeights, 6),
        fmt(r.logRatioToBase, 9, 4)
      ].join(' ')
    );
  }
  return lines.join('\n');
}

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2));
  const users = USERS.filter(u => options.users.includes(u.id));
  await fs.mkdir(options.out, { recursive: true });
  const started = Date.now();
  log(
    `${users.length} users + control, ${options.rounds} rounds of ${options.trainTopics.length} feedback, ${options.steps} trainer steps each, ${options.heldOutTopics.length} held-out topics; out: ${options.out}`
  );
  const reports: UserReport[] = [];
  const jsonFile = path.join(options.out, 'personalization.json');
  const report = (complete: boolean) => {
    const real = reports.filter(r => !r.control);
    const control = reports.find(r => r.control);
    const rise = (r: UserReport) => r.rounds[r.rounds.length - 1].score - r.rounds[0].score;
    const summary = {
      meanRise: mean(real.map(rise)),
      controlRise: control ? rise(control) : null,
      validity: mean(reports.flatMap(r => r.rounds.map(x => x.validity))),
      teacherMinusStudent: mean(real.map(r => (r.teacherScore ?? 0) - (r.studentScore ?? 0))),
      wallS: (Date.now() - started) / 1000,
      timeS: timeSpent(reports)
    };
    return { benchmark: 'personalization', complete, planner: plannerModel(), cores: os.cpus().length, options, summary, users: reports };
  };
  // A run takes hours on a CPU: the report is rewritten after each user, so a stopped run keeps the users it finished.
  for (const user of [...users, null]) {
    reports.push(await runUser(user, options, users));
    await fs.writeFile(jsonFile, JSON.stringify(report(user === null), null, 2));
  }
  const { summary, planner, cores } = report(true);
  const pngFile = path.join(options.out, 'personalization.png');
  execFileSync(repoPath('.venv-experiment', 'bin', 'python'), [repoPath('scripts', 'plot-personalization.py'), jsonFile, pngFile], { stdio: 'inherit' });

  console.log(`\nheld-out score (0–100) by round, memory and skill retrieval off; planner ${planner}\n`);
  console.log(table(reports, reports[0].rounds.length - 1));
  console.log(
    `\nmean rise over the users: ${summary.meanRise?.toFixed(1) ?? '—'} points; control: ${summary.controlRise?.toFixed(1)}; ` +
      `schema-valid: ${((summary.validity ?? 0) * 100).toFixed(0)}%; teacher − student (feedback in context, round 1): ${summary.teacherMinusStudent?.toFixed(1) ?? '—'} points`
  );
  const minutes = (seconds: number) => `${(seconds / 60).toFixed(1)} min`;
  const spent = summary.timeS;
  console.log(
    `wall: ${minutes(summary.wallS)} on ${cores} cores: planning stages ${minutes(spent.planning)}, lab.train() ${minutes(spent.train)} ` +
      `(the trainer's optimiser loops ${minutes(spent.trainerLoops)}), final scoring ${minutes(spent.scoring)}\nreport: ${jsonFile}\nplot: ${pngFile}`
  );
}

if (require.main === module) {
  main().catch(error => {
    console.error(error instanceof Error ? error.stack : error);
    process.exit(1);
  });
}
