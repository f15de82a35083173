// The kernel of slurm.test.ts's restart test: runs project.run() through the Lab of kernel-lib's
// build (dist/), as a notebook kernel would, with the Slurm executor (NANORESEARCH_EXECUTOR and
// SLURM_CONF come from the parent). Prints {"progress": step} for each step of the stage card,
// then {"stages": [[stage, status, id, error, output], ...]} when the run ends. The parent
// SIGKILLs it while its Slurm job runs.
// Args: <kernel-lib dist> <home> <topic> <llm config JSON> <'restart' | 'resume'> <last stage>.
const fs = require('fs');
const path = require('path');
const [dist, home, topic, llmJson, mode, to] = process.argv.slice(2);
const { Lab } = require(path.join(dist, 'lab'));

(async () => {
  const lab = await Lab.open({ home, workspaces: path.join(home, 'projects'), llm: JSON.parse(llmJson), display: null });
  const project = await lab.project(topic, { profile: 'resource-constrained' });
  fs.mkdirSync(path.join(project.workspace, 'data'), { recursive: true });
  fs.copyFileSync(path.join(__dirname, 'fixtures', 'e2e', 'flowers.csv'), path.join(project.workspace, 'data', 'flowers.csv'));
  const stages = await project.run({
    restart: mode === 'restart',
    to,
    onProgress: bundle => bundle.progress && process.stdout.write(JSON.stringify({ progress: bundle.progress.step }) + '\n')
  });
  await lab.close();
  process.stdout.write(JSON.stringify({ stages: stages.map(s => [s.stage, s.status, s.id, s.error, s.output]) }) + '\n');
})().catch(error => {
  process.stderr.write(`${error.stack || error}\n`);
  process.exit(1);
});
